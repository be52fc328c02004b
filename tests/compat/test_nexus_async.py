"""Asynchronous Nexus operations against the server under test: a workflow calls a
workflow-run operation (the handler starts a workflow with a completion callback), which
records NexusOperationStarted and stays pending until the handler's workflow closes; the
outcome arrives through the callback (completed, failed, terminated, continued-as-new first);
the caller cancels an operation (NexusOperationCancelRequested, the handler's answer, then
NexusOperationCanceled); and a schedule-to-close timeout ends an operation whose workflow is
still running."""

import asyncio
from datetime import timedelta

import nexusrpc
from temporalio import workflow
from temporalio.api.enums.v1 import CallbackState, EventType, PendingNexusOperationState
from temporalio.api.nexus.v1 import EndpointSpec, EndpointTarget
from temporalio.api.operatorservice.v1 import CreateNexusEndpointRequest
from temporalio.client import WorkflowExecutionStatus
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError, NexusOperationError
from temporalio.nexus import WorkflowHandle, WorkflowRunOperationContext, workflow_run_operation
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from conftest import new_id
from test_cli import eventually


@workflow.defn(sandboxed=False)
class BackingWorkflow:
    """The handler's workflow: waits for a `finish` signal, then returns, fails or continues
    as new as the signal says; cancellation cancels it."""

    def __init__(self) -> None:
        self.outcome: str | None = None

    @workflow.signal
    def finish(self, outcome: str) -> None:
        self.outcome = outcome

    @workflow.run
    async def run(self, args: dict) -> str:
        if args.get("continued"):
            return f"done after continue-as-new: {args['text']}"
        await workflow.wait_condition(lambda: self.outcome is not None)
        if self.outcome == "fail":
            raise ApplicationError(f"boom {args['text']}", type="Boom", non_retryable=True)
        if self.outcome == "continue":
            workflow.continue_as_new({**args, "continued": True})
        return f"done {args['text']}"


@nexusrpc.handler.service_handler(name="CompatRuns")
class RunHandler:
    @workflow_run_operation
    async def run_workflow(self, ctx: WorkflowRunOperationContext, args: dict) -> WorkflowHandle[str]:
        conflict = (WorkflowIDConflictPolicy.USE_EXISTING if args.get("use_existing")
                    else WorkflowIDConflictPolicy.UNSPECIFIED)
        return await ctx.start_workflow(BackingWorkflow.run, args, id=args["id"],
                                        id_conflict_policy=conflict)


@workflow.defn(sandboxed=False)
class AsyncCallerWorkflow:
    """Starts a CompatRuns operation, cancels it when signalled to, and reports its outcome."""

    def __init__(self) -> None:
        self.cancel = False

    @workflow.signal
    def cancel_operation(self) -> None:
        self.cancel = True

    @workflow.run
    async def run(self, endpoint: str, args: dict) -> dict:
        nexus = workflow.create_nexus_client(service=RunHandler, endpoint=endpoint)
        try:
            op = await nexus.start_operation(
                RunHandler.run_workflow, args,
                schedule_to_close_timeout=timedelta(seconds=args.get("timeout", 60)))
            if args.get("cancel"):
                await workflow.wait_condition(lambda: self.cancel)
                op.cancel()
            result = await op
            return {"result": result, "token": op.operation_token}
        except NexusOperationError as e:
            cause = e.__cause__
            return {"error": str(e), "service": e.service, "operation": e.operation,
                    "cause_type": type(cause).__name__, "cause": str(cause),
                    "cause_cause": str(cause.__cause__) if cause and cause.__cause__ else None}


@workflow.defn(sandboxed=False)
class SharedBackingCallerWorkflow:
    """Starts several CompatRuns operations backed by one workflow (USE_EXISTING)."""

    @workflow.run
    async def run(self, endpoint: str, args: dict, count: int) -> list:
        nexus = workflow.create_nexus_client(service=RunHandler, endpoint=endpoint)
        handles = [await nexus.start_operation(RunHandler.run_workflow, {**args, "use_existing": True},
                                               schedule_to_close_timeout=timedelta(seconds=60))
                   for _ in range(count)]
        return list(await asyncio.gather(*handles))


async def create_endpoint(client, task_queue: str) -> str:
    name = new_id("runs").replace("_", "-")
    await client.operator_service.create_nexus_endpoint(CreateNexusEndpointRequest(
        spec=EndpointSpec(name=name, target=EndpointTarget(
            worker=EndpointTarget.Worker(namespace="default", task_queue=task_queue)))))
    return name


def worker(client, task_queue):
    return Worker(client, task_queue=task_queue,
                  workflows=[AsyncCallerWorkflow, BackingWorkflow, SharedBackingCallerWorkflow],
                  nexus_service_handlers=[RunHandler()],
                  workflow_runner=UnsandboxedWorkflowRunner())


async def events_of(handle) -> list:
    return [e async for e in handle.fetch_history_events()]


def of_type(events, event_type) -> list:
    return [e for e in events if e.event_type == event_type]


async def started_operation(caller):
    """Waits until the caller's operation is pending in the Started state; returns it."""
    async def started():
        ops = (await caller.describe()).raw_description.pending_nexus_operations
        assert len(ops) == 1, ops
        assert ops[0].state == PendingNexusOperationState.PENDING_NEXUS_OPERATION_STATE_STARTED, ops
        return ops[0]
    return await eventually(started)


async def test_workflow_run_operation_completes_through_its_callback(client, task_queue):
    """The handler's start answer is asynchronous: NexusOperationStarted (token, a link to the
    handler's workflow) and the operation pending as Started; the handler's workflow carries
    the completion callback and a link back to the caller's Scheduled event; its result
    completes the operation. A chain that continues as new delivers from its last run."""
    endpoint = await create_endpoint(client, task_queue)
    async with worker(client, task_queue):
        backing_id = new_id("backing")
        caller = await client.start_workflow(
            AsyncCallerWorkflow.run, args=[endpoint, {"id": backing_id, "text": "a"}],
            id=new_id("async-caller"), task_queue=task_queue)
        pending = await started_operation(caller)
        assert (pending.endpoint, pending.service, pending.operation) == (endpoint, "CompatRuns", "run_workflow")
        assert pending.operation_token

        backing = client.get_workflow_handle(backing_id)
        first = (await events_of(backing))[0]
        callbacks = first.workflow_execution_started_event_attributes.completion_callbacks
        assert len(callbacks) == 1 and callbacks[0].nexus.url, callbacks
        scheduled = of_type(await events_of(caller), EventType.EVENT_TYPE_NEXUS_OPERATION_SCHEDULED)[0]
        # The link back to the caller's Scheduled event rides on the callback (the request's
        # copy of it is dropped as a duplicate).
        assert not first.links, first.links
        back_links = [l.workflow_event for l in callbacks[0].links if l.HasField("workflow_event")]
        assert [(l.workflow_id, l.event_ref.event_id, l.event_ref.event_type) for l in back_links] == [
            (caller.id, scheduled.event_id, EventType.EVENT_TYPE_NEXUS_OPERATION_SCHEDULED)], callbacks[0].links

        # DescribeWorkflowExecution lists the callback, waiting for the close.
        described = (await backing.describe()).raw_description.callbacks
        assert len(described) == 1, described
        assert described[0].state == CallbackState.CALLBACK_STATE_STANDBY, described
        assert described[0].trigger.HasField("workflow_closed"), described
        assert described[0].callback == callbacks[0]

        await backing.signal(BackingWorkflow.finish, "complete")
        outcome = await caller.result()
        assert outcome == {"result": "done a", "token": pending.operation_token}, outcome

        async def delivered():
            cbs = (await backing.describe()).raw_description.callbacks
            assert [c.state for c in cbs] == [CallbackState.CALLBACK_STATE_SUCCEEDED], cbs
        await eventually(delivered)

        events = await events_of(caller)
        started = of_type(events, EventType.EVENT_TYPE_NEXUS_OPERATION_STARTED)
        completed = of_type(events, EventType.EVENT_TYPE_NEXUS_OPERATION_COMPLETED)
        assert len(started) == 1 and len(completed) == 1
        s = started[0].nexus_operation_started_event_attributes
        assert s.scheduled_event_id == scheduled.event_id
        assert s.operation_token == pending.operation_token
        assert s.request_id == scheduled.nexus_operation_scheduled_event_attributes.request_id
        handler_links = [l.workflow_event for l in started[0].links if l.HasField("workflow_event")]
        assert [(l.workflow_id, l.event_ref.event_type) for l in handler_links] == [
            (backing_id, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED)], started[0].links
        c = completed[0].nexus_operation_completed_event_attributes
        assert c.scheduled_event_id == scheduled.event_id
        assert c.result.data == b'"done a"'
        assert not (await caller.describe()).raw_description.pending_nexus_operations

        # Continue-as-new: the chain's last run delivers the callback.
        chained_id = new_id("backing")
        chained_caller = await client.start_workflow(
            AsyncCallerWorkflow.run, args=[endpoint, {"id": chained_id, "text": "b"}],
            id=new_id("async-caller"), task_queue=task_queue)
        await started_operation(chained_caller)
        await client.get_workflow_handle(chained_id).signal(BackingWorkflow.finish, "continue")
        chained = await chained_caller.result()
        assert chained["result"] == "done after continue-as-new: b", chained


async def test_workflow_run_operation_fails_or_is_terminated(client, task_queue):
    """The handler's workflow failing fails the operation (NexusOperationFailed, the workflow's
    failure as the cause); a terminated workflow fails it with "operation terminated"."""
    endpoint = await create_endpoint(client, task_queue)
    async with worker(client, task_queue):
        backing_id = new_id("backing")
        caller = await client.start_workflow(
            AsyncCallerWorkflow.run, args=[endpoint, {"id": backing_id, "text": "x"}],
            id=new_id("async-caller"), task_queue=task_queue)
        await started_operation(caller)
        await client.get_workflow_handle(backing_id).signal(BackingWorkflow.finish, "fail")
        failed = await caller.result()
        assert failed["error"] == "nexus operation completed unsuccessfully", failed
        assert (failed["service"], failed["operation"]) == ("CompatRuns", "run_workflow")
        assert failed["cause_type"] == "ApplicationError", failed
        assert "boom x" in failed["cause"], failed
        events = await events_of(caller)
        failures = of_type(events, EventType.EVENT_TYPE_NEXUS_OPERATION_FAILED)
        assert len(failures) == 1
        failure = failures[0].nexus_operation_failed_event_attributes.failure
        assert failure.message == "nexus operation completed unsuccessfully"
        assert failure.nexus_operation_execution_failure_info.operation_token
        assert failure.cause.message == "boom x"
        assert failure.cause.application_failure_info.type == "Boom"

        terminated_id = new_id("backing")
        terminated_caller = await client.start_workflow(
            AsyncCallerWorkflow.run, args=[endpoint, {"id": terminated_id, "text": "y"}],
            id=new_id("async-caller"), task_queue=task_queue)
        await started_operation(terminated_caller)
        await client.get_workflow_handle(terminated_id).terminate("a reason nobody else sees")
        terminated = await terminated_caller.result()
        assert terminated["cause_type"] == "TerminatedError", terminated
        assert terminated["cause"] == "operation terminated", terminated


async def test_caller_cancels_a_workflow_run_operation(client, task_queue):
    """RequestCancelNexusOperation: NexusOperationCancelRequested, the cancel request reaches the
    handler (which cancels its workflow), NexusOperationCancelRequestCompleted records its
    answer, and the canceled workflow's callback cancels the operation."""
    endpoint = await create_endpoint(client, task_queue)
    async with worker(client, task_queue):
        backing_id = new_id("backing")
        caller = await client.start_workflow(
            AsyncCallerWorkflow.run, args=[endpoint, {"id": backing_id, "text": "c", "cancel": True}],
            id=new_id("async-caller"), task_queue=task_queue)
        await started_operation(caller)
        await caller.signal(AsyncCallerWorkflow.cancel_operation)
        outcome = await caller.result()
        assert outcome["error"] == "nexus operation completed unsuccessfully", outcome
        assert outcome["cause_type"] == "CancelledError", outcome
        backing = await client.get_workflow_handle(backing_id).describe()
        assert backing.status == WorkflowExecutionStatus.CANCELED

        events = await events_of(caller)
        types = [e.event_type for e in events]
        scheduled = of_type(events, EventType.EVENT_TYPE_NEXUS_OPERATION_SCHEDULED)[0]
        requested = of_type(events, EventType.EVENT_TYPE_NEXUS_OPERATION_CANCEL_REQUESTED)
        assert len(requested) == 1
        assert requested[0].nexus_operation_cancel_requested_event_attributes.scheduled_event_id == scheduled.event_id
        answered = of_type(events, EventType.EVENT_TYPE_NEXUS_OPERATION_CANCEL_REQUEST_COMPLETED)
        assert len(answered) == 1, types
        a = answered[0].nexus_operation_cancel_request_completed_event_attributes
        assert (a.scheduled_event_id, a.requested_event_id) == (scheduled.event_id, requested[0].event_id)
        canceled = of_type(events, EventType.EVENT_TYPE_NEXUS_OPERATION_CANCELED)
        assert len(canceled) == 1, types
        failure = canceled[0].nexus_operation_canceled_event_attributes.failure
        assert failure.message == "nexus operation completed unsuccessfully"
        assert failure.cause.HasField("canceled_failure_info"), failure
        assert EventType.EVENT_TYPE_NEXUS_OPERATION_FAILED not in types


async def test_workflow_run_operation_times_out(client, task_queue):
    """An async operation's schedule-to-close timeout ends it (NexusOperationTimedOut) while the
    handler's workflow still runs; that workflow's later close changes nothing for the caller."""
    endpoint = await create_endpoint(client, task_queue)
    async with worker(client, task_queue):
        backing_id = new_id("backing")
        caller = await client.start_workflow(
            AsyncCallerWorkflow.run, args=[endpoint, {"id": backing_id, "text": "t", "timeout": 4}],
            id=new_id("async-caller"), task_queue=task_queue)
        await started_operation(caller)
        outcome = await caller.result()
        assert outcome["error"] == "nexus operation completed unsuccessfully", outcome
        assert outcome["cause_type"] == "TimeoutError", outcome
        events = await events_of(caller)
        timed_out = of_type(events, EventType.EVENT_TYPE_NEXUS_OPERATION_TIMED_OUT)
        assert len(timed_out) == 1
        assert of_type(events, EventType.EVENT_TYPE_NEXUS_OPERATION_STARTED)
        backing = client.get_workflow_handle(backing_id)
        assert (await backing.describe()).status == WorkflowExecutionStatus.RUNNING
        await backing.signal(BackingWorkflow.finish, "complete")
        assert await backing.result() == "done t"
        await asyncio.sleep(1)
        assert len(await events_of(caller)) == len(events)


async def test_operations_attach_to_a_running_backing_workflow(client, task_queue):
    """A workflow-run operation whose workflow is already running (USE_EXISTING, the SDK's
    on_conflict_options) attaches its callback to that run (WorkflowExecutionOptionsUpdated with
    the callback and request ID); the run's close completes every operation attached."""
    endpoint = await create_endpoint(client, task_queue)
    async with worker(client, task_queue):
        backing_id = new_id("backing")
        caller = await client.start_workflow(
            SharedBackingCallerWorkflow.run, args=[endpoint, {"id": backing_id, "text": "s"}, 3],
            id=new_id("shared-caller"), task_queue=task_queue)

        async def all_started():
            ops = (await caller.describe()).raw_description.pending_nexus_operations
            assert len(ops) == 3, ops
            assert all(o.state == PendingNexusOperationState.PENDING_NEXUS_OPERATION_STATE_STARTED
                       for o in ops), ops
        await eventually(all_started)
        backing = client.get_workflow_handle(backing_id)
        described = (await backing.describe()).raw_description.callbacks
        assert len(described) == 3, described
        events = await events_of(backing)
        updates = of_type(events, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_OPTIONS_UPDATED)
        assert len(updates) == 2, [EventType.Name(e.event_type) for e in events]
        for update in updates:
            attrs = update.workflow_execution_options_updated_event_attributes
            assert attrs.attached_request_id, attrs
            assert len(attrs.attached_completion_callbacks) == 1, attrs
        await backing.signal(BackingWorkflow.finish, "complete")
        assert await caller.result() == ["done s"] * 3
