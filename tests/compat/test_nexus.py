"""Nexus against the server under test: the endpoint registry (OperatorService's
Create/Get/Update/Delete/ListNexusEndpoints) through the ``temporal operator nexus endpoint``
commands and raw gRPC calls, with Temporal's validation, errors, versions and paging; a
worker hosting Nexus service handlers, which polls its Nexus task queue; and workflows calling
synchronous operations of such a worker (success, handler and operation errors, an unknown
endpoint)."""

import asyncio
import uuid
from datetime import timedelta

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.api.nexus.v1 import EndpointSpec, EndpointTarget
from temporalio.api.operatorservice.v1 import (
    CreateNexusEndpointRequest,
    DeleteNexusEndpointRequest,
    GetNexusEndpointRequest,
    ListNexusEndpointsRequest,
    UpdateNexusEndpointRequest,
)
import nexusrpc
from nexusrpc.handler import StartOperationContext, service_handler, sync_operation
from temporalio import workflow
from temporalio.api.enums.v1 import EventType, WorkflowTaskFailedCause
from temporalio.exceptions import ApplicationError, NexusOperationError
from temporalio.worker import UnsandboxedWorkflowRunner
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Worker

import workflows as wf
from conftest import IS_CHRONICLE, new_id
from test_cli import cli, cli_json, eventually


def endpoint_name(prefix: str = "ep") -> str:
    # Endpoint names allow letters, digits and dashes only.
    return new_id(prefix).replace("_", "-")


def worker_spec(name: str, task_queue: str, namespace: str = "default", description: str = "") -> EndpointSpec:
    spec = EndpointSpec(name=name, target=EndpointTarget(
        worker=EndpointTarget.Worker(namespace=namespace, task_queue=task_queue)))
    if description:
        spec.description.CopyFrom(Payload(metadata={"encoding": b"json/plain"}, data=description.encode()))
    return spec


async def refused(call, code: RPCStatusCode) -> str:
    with pytest.raises(RPCError) as info:
        await call
    assert info.value.status == code, (info.value.status, info.value.message)
    return info.value.message


async def test_endpoint_create_get_update_delete(client):
    ops = client.operator_service
    name = endpoint_name()
    created = (await ops.create_nexus_endpoint(CreateNexusEndpointRequest(
        spec=worker_spec(name, "nexus-tq", description='"first"')))).endpoint
    uuid.UUID(created.id)
    assert created.version == 1
    assert created.url_prefix == f"/nexus/endpoints/{created.id}/services"
    assert created.spec.name == name
    assert created.spec.target.worker.namespace == "default"
    assert created.spec.target.worker.task_queue == "nexus-tq"
    assert created.spec.description.data == b'"first"'
    assert created.HasField("created_time")
    assert not created.HasField("last_modified_time")

    got = (await ops.get_nexus_endpoint(GetNexusEndpointRequest(id=created.id))).endpoint
    assert got == created

    updated = (await ops.update_nexus_endpoint(UpdateNexusEndpointRequest(
        id=created.id, version=1, spec=worker_spec(name, "other-tq")))).endpoint
    assert updated.version == 2
    assert updated.id == created.id
    if IS_CHRONICLE:
        # Temporal 1.32 drops the creation time at an update (its update writes a record
        # without it); Chronicle keeps it (docs/compatibility.md).
        assert updated.created_time == created.created_time
    assert updated.HasField("last_modified_time")
    assert updated.spec.target.worker.task_queue == "other-tq"
    assert not updated.spec.HasField("description")

    # Stale version: FailedPrecondition naming both versions; nothing changes.
    message = await refused(ops.update_nexus_endpoint(UpdateNexusEndpointRequest(
        id=created.id, version=1, spec=worker_spec(name, "third-tq"))), RPCStatusCode.FAILED_PRECONDITION)
    assert "version mismatch" in message and "received: 1 expected 2" in message, message
    got = (await ops.get_nexus_endpoint(GetNexusEndpointRequest(id=created.id))).endpoint
    assert got.version == 2 and got.spec.target.worker.task_queue == "other-tq"

    await ops.delete_nexus_endpoint(DeleteNexusEndpointRequest(id=created.id, version=2))
    message = await refused(ops.get_nexus_endpoint(GetNexusEndpointRequest(id=created.id)),
                            RPCStatusCode.NOT_FOUND)
    assert created.id in message, message
    await refused(ops.delete_nexus_endpoint(DeleteNexusEndpointRequest(id=created.id, version=2)),
                  RPCStatusCode.NOT_FOUND)
    await refused(ops.update_nexus_endpoint(UpdateNexusEndpointRequest(
        id=created.id, version=2, spec=worker_spec(name, "x"))), RPCStatusCode.NOT_FOUND)
    # The name is free again.
    again = (await ops.create_nexus_endpoint(CreateNexusEndpointRequest(spec=worker_spec(name, "tq")))).endpoint
    assert again.id != created.id and again.version == 1
    await ops.delete_nexus_endpoint(DeleteNexusEndpointRequest(id=again.id, version=1))


async def test_endpoint_validation(client):
    ops = client.operator_service
    name = endpoint_name()

    async def create_refused(spec: EndpointSpec, code=RPCStatusCode.INVALID_ARGUMENT) -> str:
        return await refused(ops.create_nexus_endpoint(CreateNexusEndpointRequest(spec=spec)), code)

    assert "endpoint name not set" in await create_refused(worker_spec("", "tq"))
    for bad in ("1abc", "a_b", "ab-", "x"):
        message = await create_refused(worker_spec(bad, "tq"))
        assert "endpoint name must match the regex" in message, (bad, message)
    assert "endpoint name exceeds length limit of 200" in await create_refused(worker_spec("a" * 201, "tq"))
    assert "empty target variant" in await create_refused(EndpointSpec(name=name))
    assert "target namespace not set" in await create_refused(worker_spec(name, "tq", namespace=""))
    message = await create_refused(worker_spec(name, ""))
    assert "invalid target task queue" in message, message
    message = await create_refused(worker_spec(name, "tq", namespace="no-such-namespace-" + name),
                                   RPCStatusCode.FAILED_PRECONDITION)
    assert "could not verify namespace referenced by target exists" in message, message
    message = await create_refused(worker_spec(name, "tq", description="x" * 20_001))
    assert "description size exceeds limit of 20000" in message, message
    # Several problems are reported together.
    message = await create_refused(worker_spec("1", ""))
    assert "endpoint name must match the regex" in message and "invalid target task queue" in message, message

    message = await refused(ops.get_nexus_endpoint(GetNexusEndpointRequest(id="")),
                            RPCStatusCode.INVALID_ARGUMENT)
    assert "endpoint ID not set" in message, message
    message = await refused(ops.get_nexus_endpoint(GetNexusEndpointRequest(id="not-a-uuid")),
                            RPCStatusCode.INVALID_ARGUMENT)
    assert "malformed endpoint ID" in message, message
    message = await refused(ops.delete_nexus_endpoint(DeleteNexusEndpointRequest(id=str(uuid.uuid4()), version=0)),
                            RPCStatusCode.INVALID_ARGUMENT)
    assert "endpoint version is non-positive" in message, message
    message = await refused(ops.list_nexus_endpoints(ListNexusEndpointsRequest(page_size=-1)),
                            RPCStatusCode.INVALID_ARGUMENT)
    assert "page_size is negative" in message, message
    message = await refused(ops.list_nexus_endpoints(ListNexusEndpointsRequest(page_size=1001)),
                            RPCStatusCode.INVALID_ARGUMENT)
    assert "page_size exceeds limit of 1000" in message, message

    # A duplicate name is AlreadyExists, and leaves the first endpoint as it was.
    first = (await ops.create_nexus_endpoint(CreateNexusEndpointRequest(spec=worker_spec(name, "tq")))).endpoint
    message = await create_refused(worker_spec(name, "other"), RPCStatusCode.ALREADY_EXISTS)
    assert name in message, message
    got = (await ops.get_nexus_endpoint(GetNexusEndpointRequest(id=first.id))).endpoint
    assert got == first
    await ops.delete_nexus_endpoint(DeleteNexusEndpointRequest(id=first.id, version=1))


async def test_endpoint_list_paging_and_name_filter(client):
    ops = client.operator_service
    prefix = endpoint_name("page")
    created = []
    for i in range(5):
        created.append((await ops.create_nexus_endpoint(CreateNexusEndpointRequest(
            spec=worker_spec(f"{prefix}-{i}", "tq")))).endpoint)
    ids = {e.id for e in created}

    seen, token, pages = [], b"", 0
    while True:
        page = await ops.list_nexus_endpoints(ListNexusEndpointsRequest(page_size=2, next_page_token=token))
        assert len(page.endpoints) <= 2
        seen.extend(page.endpoints)
        pages += 1
        token = page.next_page_token
        if not token:
            break
    listed = [e.id for e in seen]
    assert len(listed) == len(set(listed)), "an endpoint was listed twice"
    assert ids <= set(listed)
    assert pages >= 3

    by_name = await ops.list_nexus_endpoints(ListNexusEndpointsRequest(name=f"{prefix}-3", page_size=1))
    assert [e.id for e in by_name.endpoints] == [created[3].id]
    assert not by_name.next_page_token
    none = await ops.list_nexus_endpoints(ListNexusEndpointsRequest(name=f"{prefix}-missing"))
    assert list(none.endpoints) == []

    for e in created:
        await ops.delete_nexus_endpoint(DeleteNexusEndpointRequest(id=e.id, version=e.version))


async def test_cli_nexus_endpoint_commands(server_address):
    name = endpoint_name("cli")
    await cli(server_address, "operator", "nexus", "endpoint", "create", "--name", name,
              "--target-namespace", "default", "--target-task-queue", "cli-tq",
              "--description", "Handles *orders*")

    got = await cli_json(server_address, "operator", "nexus", "endpoint", "get", "--name", name)
    assert got["spec"]["name"] == name
    assert got["spec"]["target"]["worker"] == {"namespace": "default", "taskQueue": "cli-tq"}
    assert got["version"] == "1"
    # The CLI shows the description payload as the text it holds.
    assert got["spec"]["description"] == "Handles *orders*"
    assert got["urlPrefix"] == f"/nexus/endpoints/{got['id']}/services"

    listed = await cli(server_address, "operator", "nexus", "endpoint", "list", "-o", "json")
    assert name in listed.stdout

    await cli(server_address, "operator", "nexus", "endpoint", "update", "--name", name,
              "--target-task-queue", "cli-tq-2", "--unset-description")
    got = await cli_json(server_address, "operator", "nexus", "endpoint", "get", "--name", name)
    assert got["spec"]["target"]["worker"]["taskQueue"] == "cli-tq-2"
    assert got["version"] == "2"
    assert "description" not in got["spec"]
    assert got.get("lastModifiedTime")

    dup = await cli(server_address, "operator", "nexus", "endpoint", "create", "--name", name,
                    "--target-namespace", "default", "--target-task-queue", "x", check=False)
    assert dup.returncode != 0 and "already registered" in dup.stderr, dup

    await cli(server_address, "operator", "nexus", "endpoint", "delete", "--name", name)
    missing = await cli(server_address, "operator", "nexus", "endpoint", "get", "--name", name, check=False)
    assert missing.returncode != 0, missing


async def test_endpoints_survive_a_restart(server_factory, tmp_path):
    """The registry is durable: a crash (SIGKILL) and restart on the same data keeps every
    acknowledged create, update and delete."""
    from temporalio.client import Client

    srv = server_factory(str(tmp_path / "data"))
    ops = (await Client.connect(srv.address)).operator_service
    name = endpoint_name("durable")
    kept = (await ops.create_nexus_endpoint(CreateNexusEndpointRequest(spec=worker_spec(name, "tq")))).endpoint
    kept = (await ops.update_nexus_endpoint(UpdateNexusEndpointRequest(
        id=kept.id, version=1, spec=worker_spec(name, "tq-2")))).endpoint
    gone = (await ops.create_nexus_endpoint(CreateNexusEndpointRequest(
        spec=worker_spec(name + "-gone", "tq")))).endpoint
    await ops.delete_nexus_endpoint(DeleteNexusEndpointRequest(id=gone.id, version=1))

    srv.kill()
    await asyncio.to_thread(srv.start)
    ops = (await Client.connect(srv.address)).operator_service
    got = (await ops.get_nexus_endpoint(GetNexusEndpointRequest(id=kept.id))).endpoint
    assert got == kept
    await refused(ops.get_nexus_endpoint(GetNexusEndpointRequest(id=gone.id)), RPCStatusCode.NOT_FOUND)
    listed = await ops.list_nexus_endpoints(ListNexusEndpointsRequest(name=name))
    assert [e.id for e in listed.endpoints] == [kept.id]


@service_handler(name="CompatEcho")
class EchoHandler:
    @sync_operation
    async def echo(self, ctx: StartOperationContext, text: str) -> str:
        return text


async def test_worker_with_nexus_handlers_polls_and_keeps_running(client, task_queue):
    """A worker hosting Nexus service handlers polls the queue's Nexus task queue (listed among
    its Nexus pollers) and keeps serving its workflows past several poll intervals' worth of
    activity (an error answer to the Nexus poll makes the SDK shut the whole worker down)."""
    async with Worker(client, task_queue=task_queue, workflows=[wf.TimerWorkflow],
                      nexus_service_handlers=[EchoHandler()]):
        first = await client.execute_workflow(wf.TimerWorkflow.run, 0.1, id=new_id("nexus-worker"),
                                              task_queue=task_queue)
        assert first == "woke"

        async def nexus_poller_listed():
            described = await client.workflow_service.describe_task_queue(DescribeTaskQueueRequest(
                namespace="default", task_queue=TaskQueue(name=task_queue),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_NEXUS))
            assert [p.identity for p in described.pollers] == [client.identity], described

        await eventually(nexus_poller_listed)
        await asyncio.sleep(3)
        second = await client.execute_workflow(wf.TimerWorkflow.run, 0.1, id=new_id("nexus-worker"),
                                               task_queue=task_queue)
        assert second == "woke"


@service_handler(name="CompatCalc")
class CalcHandler:
    @sync_operation
    async def double(self, ctx: StartOperationContext, n: int) -> int:
        return n * 2

    @sync_operation
    async def refuse(self, ctx: StartOperationContext, text: str) -> str:
        raise nexusrpc.HandlerError(f"refused {text}", type=nexusrpc.HandlerErrorType.BAD_REQUEST)

    @sync_operation
    async def fail(self, ctx: StartOperationContext, text: str) -> str:
        raise nexusrpc.OperationError(f"failed {text}", state=nexusrpc.OperationErrorState.FAILED)

    attempts: dict = {}
    release: dict = {}

    @sync_operation
    async def slow(self, ctx: StartOperationContext, key: str) -> str:
        """Answers once the test releases it (at most 5 s later)."""
        event = CalcHandler.release.setdefault(key, asyncio.Event())
        await asyncio.wait_for(event.wait(), 5)
        return "released"

    @sync_operation
    async def flaky(self, ctx: StartOperationContext, key: str) -> str:
        """Fails its first attempt with a retryable handler error (same request ID each time)."""
        CalcHandler.attempts.setdefault(key, []).append(ctx.request_id)
        if len(CalcHandler.attempts[key]) == 1:
            raise nexusrpc.HandlerError("try again", type=nexusrpc.HandlerErrorType.INTERNAL)
        return f"ok after {len(CalcHandler.attempts[key])}"


@workflow.defn(sandboxed=False)
class NexusCallerWorkflow:
    """Calls one CompatCalc operation; reports the result or how the call failed."""

    @workflow.run
    async def run(self, endpoint: str, operation: str, arg) -> dict:
        nexus = workflow.create_nexus_client(service=CalcHandler, endpoint=endpoint)
        op = {"double": CalcHandler.double, "refuse": CalcHandler.refuse,
              "fail": CalcHandler.fail, "flaky": CalcHandler.flaky,
              "slow": CalcHandler.slow}[operation]
        try:
            result = await nexus.execute_operation(op, arg, schedule_to_close_timeout=timedelta(seconds=60))
            return {"result": result}
        except NexusOperationError as e:
            cause = e.__cause__
            return {
                "error": str(e), "service": e.service, "operation": e.operation,
                "cause_type": type(cause).__name__, "cause": str(cause),
                "handler_type": getattr(getattr(cause, "type", None), "name", None),
                "retryable": getattr(cause, "retryable", None),
                "non_retryable": getattr(cause, "non_retryable", None),
            }


async def create_worker_endpoint(client, task_queue: str) -> str:
    name = endpoint_name("calc")
    await client.operator_service.create_nexus_endpoint(CreateNexusEndpointRequest(
        spec=worker_spec(name, task_queue)))
    return name


async def event_types(handle) -> list:
    return [e.event_type async for e in handle.fetch_history_events()]


async def test_workflow_calls_sync_operations(client, task_queue):
    """A workflow's sync Nexus operation completes with the handler's result; a handler error
    that is not retryable, and an operation error, fail the operation (NexusOperationFailed)
    with the handler's failure as the cause."""
    endpoint = await create_worker_endpoint(client, task_queue)
    async with Worker(client, task_queue=task_queue, workflows=[NexusCallerWorkflow],
                      nexus_service_handlers=[CalcHandler()],
                      workflow_runner=UnsandboxedWorkflowRunner()):
        handle = await client.start_workflow(NexusCallerWorkflow.run, args=[endpoint, "double", 21],
                                             id=new_id("nexus-call"), task_queue=task_queue)
        assert await handle.result() == {"result": 42}
        events = [e async for e in handle.fetch_history_events()]
        scheduled = [e for e in events if e.event_type == EventType.EVENT_TYPE_NEXUS_OPERATION_SCHEDULED]
        completed = [e for e in events if e.event_type == EventType.EVENT_TYPE_NEXUS_OPERATION_COMPLETED]
        assert len(scheduled) == 1 and len(completed) == 1
        attrs = scheduled[0].nexus_operation_scheduled_event_attributes
        assert (attrs.endpoint, attrs.service, attrs.operation) == (endpoint, "CompatCalc", "double")
        assert attrs.request_id and attrs.endpoint_id
        assert attrs.schedule_to_close_timeout.ToTimedelta() == timedelta(seconds=60)
        done = completed[0].nexus_operation_completed_event_attributes
        assert done.scheduled_event_id == scheduled[0].event_id
        assert done.request_id == attrs.request_id
        assert done.result.data == b"42"
        # No Started event for a sync operation.
        assert EventType.EVENT_TYPE_NEXUS_OPERATION_STARTED not in [e.event_type for e in events]

        refused = await client.execute_workflow(NexusCallerWorkflow.run, args=[endpoint, "refuse", "x"],
                                                id=new_id("nexus-call"), task_queue=task_queue)
        assert refused["error"] == "nexus operation completed unsuccessfully", refused
        assert (refused["service"], refused["operation"]) == ("CompatCalc", "refuse")
        assert refused["cause_type"] == "HandlerError", refused
        assert refused["handler_type"] == "BAD_REQUEST", refused
        assert "refused x" in refused["cause"], refused

        failed_handle = await client.start_workflow(NexusCallerWorkflow.run, args=[endpoint, "fail", "y"],
                                                    id=new_id("nexus-call"), task_queue=task_queue)
        failed = await failed_handle.result()
        assert failed["error"] == "nexus operation completed unsuccessfully", failed
        assert failed["cause_type"] == "ApplicationError", failed
        assert "failed y" in failed["cause"], failed
        types = await event_types(failed_handle)
        assert EventType.EVENT_TYPE_NEXUS_OPERATION_FAILED in types
        assert EventType.EVENT_TYPE_NEXUS_OPERATION_COMPLETED not in types


async def test_retryable_handler_error_is_retried(client, task_queue):
    """A retryable handler error (INTERNAL) does not fail the operation: the start request is
    sent again, with the same request ID, and the second attempt's result completes it."""
    endpoint = await create_worker_endpoint(client, task_queue)
    key = new_id("flaky")
    async with Worker(client, task_queue=task_queue, workflows=[NexusCallerWorkflow],
                      nexus_service_handlers=[CalcHandler()],
                      workflow_runner=UnsandboxedWorkflowRunner()):
        handle = await client.start_workflow(NexusCallerWorkflow.run, args=[endpoint, "flaky", key],
                                             id=new_id("nexus-call"), task_queue=task_queue)
        assert await handle.result() == {"result": "ok after 2"}
        request_ids = CalcHandler.attempts[key]
        assert len(request_ids) == 2 and request_ids[0] == request_ids[1], request_ids
        assert not (await handle.describe()).raw_description.pending_nexus_operations
        types = await event_types(handle)
        assert EventType.EVENT_TYPE_NEXUS_OPERATION_COMPLETED in types
        assert EventType.EVENT_TYPE_NEXUS_OPERATION_FAILED not in types


async def test_describe_lists_a_pending_operation(client, task_queue):
    """While the handler works on the start request, DescribeWorkflowExecution lists the
    operation as pending (Scheduled, no attempt finished yet); once it completed, nothing is pending."""
    from temporalio.api.enums.v1 import PendingNexusOperationState
    endpoint = await create_worker_endpoint(client, task_queue)
    key = new_id("slow")
    async with Worker(client, task_queue=task_queue, workflows=[NexusCallerWorkflow],
                      nexus_service_handlers=[CalcHandler()],
                      workflow_runner=UnsandboxedWorkflowRunner()):
        handle = await client.start_workflow(NexusCallerWorkflow.run, args=[endpoint, "slow", key],
                                             id=new_id("nexus-call"), task_queue=task_queue)

        async def pending():
            assert key in CalcHandler.release, "the handler has not started yet"
            ops = (await handle.describe()).raw_description.pending_nexus_operations
            assert len(ops) == 1, ops
            return ops[0]

        op = await eventually(pending)
        assert (op.endpoint, op.service, op.operation) == (endpoint, "CompatCalc", "slow")
        assert op.state == PendingNexusOperationState.PENDING_NEXUS_OPERATION_STATE_SCHEDULED
        assert op.attempt == 0  # attempts made so far: none finished
        assert op.schedule_to_close_timeout.ToTimedelta() == timedelta(seconds=60)
        scheduled = [e async for e in handle.fetch_history_events()
                     if e.event_type == EventType.EVENT_TYPE_NEXUS_OPERATION_SCHEDULED]
        assert op.scheduled_event_id == scheduled[0].event_id
        CalcHandler.release[key].set()
        assert await handle.result() == {"result": "released"}
        assert not (await handle.describe()).raw_description.pending_nexus_operations


async def test_unknown_endpoint_fails_the_workflow_task(client, task_queue):
    """Scheduling an operation on an endpoint that does not exist fails the workflow task with
    BAD_SCHEDULE_NEXUS_OPERATION_ATTRIBUTES, as Temporal does."""
    missing = endpoint_name("missing")
    async with Worker(client, task_queue=task_queue, workflows=[NexusCallerWorkflow],
                      workflow_runner=UnsandboxedWorkflowRunner()):
        handle = await client.start_workflow(NexusCallerWorkflow.run, args=[missing, "double", 1],
                                             id=new_id("nexus-call"), task_queue=task_queue)

        async def task_failed():
            failed = [e async for e in handle.fetch_history_events()
                      if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED]
            assert failed, "no failed workflow task yet"
            attrs = failed[0].workflow_task_failed_event_attributes
            assert attrs.cause == WorkflowTaskFailedCause.WORKFLOW_TASK_FAILED_CAUSE_BAD_SCHEDULE_NEXUS_OPERATION_ATTRIBUTES
            assert attrs.failure.message == (
                f'BadScheduleNexusOperationAttributes: endpoint "{missing}" not found'), attrs.failure.message

        await eventually(task_failed)
        await handle.terminate()
