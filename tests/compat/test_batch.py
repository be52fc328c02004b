"""Batch operations (StartBatchOperation, DescribeBatchOperation, ListBatchOperations,
StopBatchOperation) through the Python SDK's raw service client and the `temporal` CLI:
terminate, cancel and signal by visibility query or by a list of executions, the checks of a
bad request, stopping a job, and `temporal workflow terminate --query` / `temporal batch`.

A namespace runs one batch job at a time (Temporal's default), so every test waits for its job
to end before the next starts."""

import asyncio
import json
import os
import time
import uuid

import pytest
from temporalio.api.batch.v1 import BatchOperationCancellation, BatchOperationSignal, BatchOperationTermination
from temporalio.api.common.v1 import Execution, WorkflowExecution
from temporalio.api.enums.v1 import (BatchOperationState, BatchOperationType, EventType, ExecutionType,
                                     WorkflowExecutionStatus, WorkflowTaskFailedCause)
from temporalio.api.workflowservice.v1 import (CountWorkflowExecutionsRequest, DescribeBatchOperationRequest,
                                               GetWorkflowExecutionHistoryRequest, ListBatchOperationsRequest,
                                               StartBatchOperationRequest, StopBatchOperationRequest)
from temporalio.client import Client
from temporalio.converter import default as default_converter
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Worker

import workflows as wf
from conftest import IS_CHRONICLE, new_id
from test_cli import cli, cli_json

NAMESPACE = "default"


async def eventually(check, timeout=30.0, interval=0.2):
    """Polls `check` (async, returns a truthy value when done) until it holds."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(interval)


async def start_waiting(client: Client, task_queue: str, count: int, prefix: str):
    handles = []
    for i in range(count):
        handles.append(await client.start_workflow(
            wf.WaitForeverWorkflow.run, id=new_id(f"{prefix}-{i}"), task_queue=task_queue))
    query = f"TaskQueue = '{task_queue}'"

    async def all_visible():
        answer = await client.workflow_service.count_workflow_executions(
            CountWorkflowExecutionsRequest(namespace=NAMESPACE, query=query))
        return answer.count == count
    await eventually(all_visible)
    return handles, query


async def describe(client: Client, job_id: str):
    return await client.workflow_service.describe_batch_operation(
        DescribeBatchOperationRequest(namespace=NAMESPACE, job_id=job_id))


async def wait_finished(client: Client, job_id: str):
    async def finished():
        answer = await describe(client, job_id)
        return answer if answer.state != BatchOperationState.BATCH_OPERATION_STATE_RUNNING else None
    return await eventually(finished, timeout=60)


async def wait_no_running_batch(client: Client):
    """The namespace's one batch slot is free (jobs of earlier tests have ended)."""
    async def free():
        answer = await client.workflow_service.list_batch_operations(
            ListBatchOperationsRequest(namespace=NAMESPACE))
        return all(o.state != BatchOperationState.BATCH_OPERATION_STATE_RUNNING for o in answer.operation_info)
    await eventually(free, timeout=60)


async def events_of(client: Client, workflow_id: str):
    answer = await client.workflow_service.get_workflow_execution_history(GetWorkflowExecutionHistoryRequest(
        namespace=NAMESPACE, execution=WorkflowExecution(workflow_id=workflow_id)))
    return list(answer.history.events)


async def test_batch_terminate_by_query(client: Client, task_queue):
    await wait_no_running_batch(client)
    handles, query = await start_waiting(client, task_queue, 3, "batch-term")
    other, _ = await start_waiting(client, new_id("tq-other"), 1, "batch-keep")
    job_id = new_id("job-terminate")
    await client.workflow_service.start_batch_operation(StartBatchOperationRequest(
        namespace=NAMESPACE, job_id=job_id, reason="clean up", visibility_query=query,
        termination_operation=BatchOperationTermination(identity="batch-tester")))

    done = await wait_finished(client, job_id)
    assert done.state == BatchOperationState.BATCH_OPERATION_STATE_COMPLETED
    assert done.job_id == job_id
    assert done.operation_type in (BatchOperationType.BATCH_OPERATION_TYPE_TERMINATE,
                                   BatchOperationType.BATCH_OPERATION_TYPE_TERMINATE_WORKFLOW)
    assert (done.total_operation_count, done.complete_operation_count, done.failure_operation_count) == (3, 3, 0)
    assert done.reason == "clean up"
    assert done.identity == "batch-tester"
    assert done.query == query
    assert done.HasField("start_time") and done.HasField("close_time")
    assert done.close_time.ToDatetime() >= done.start_time.ToDatetime()

    for handle in handles:
        desc = await handle.describe()
        assert desc.status.name == "TERMINATED"
        last = (await events_of(client, handle.id))[-1]
        assert last.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED
        assert last.workflow_execution_terminated_event_attributes.reason == "clean up"
    assert (await other[0].describe()).status.name == "RUNNING"
    await other[0].terminate("test over")

    listed = await client.workflow_service.list_batch_operations(ListBatchOperationsRequest(namespace=NAMESPACE))
    mine = [o for o in listed.operation_info if o.job_id == job_id]
    assert len(mine) == 1
    assert mine[0].state == BatchOperationState.BATCH_OPERATION_STATE_COMPLETED
    assert mine[0].operation_type == done.operation_type
    # (visibility keeps start times to the microsecond)
    assert abs(mine[0].start_time.ToMicroseconds() - done.start_time.ToMicroseconds()) <= 1

    # The job ID is taken for good.
    with pytest.raises(RPCError) as err:
        await client.workflow_service.start_batch_operation(StartBatchOperationRequest(
            namespace=NAMESPACE, job_id=job_id, reason="again", visibility_query=query,
            termination_operation=BatchOperationTermination()))
    assert err.value.status == RPCStatusCode.ALREADY_EXISTS


async def test_batch_signal_by_executions(client: Client, task_queue):
    await wait_no_running_batch(client)
    handles, _ = await start_waiting(client, task_queue, 3, "batch-signal")
    missing = new_id("batch-signal-missing")
    targets = [Execution(type=ExecutionType.EXECUTION_TYPE_WORKFLOW, business_id=h.id) for h in handles]
    targets.append(Execution(type=ExecutionType.EXECUTION_TYPE_WORKFLOW, business_id=missing))
    job_id = new_id("job-signal")
    payloads = await default_converter().encode(["hello", 7])
    from temporalio.api.common.v1 import Payloads
    await client.workflow_service.start_batch_operation(StartBatchOperationRequest(
        namespace=NAMESPACE, job_id=job_id, reason="poke", target_executions=targets,
        signal_operation=BatchOperationSignal(signal="bump", input=Payloads(payloads=payloads),
                                              identity="signaller")))

    done = await wait_finished(client, job_id)
    assert done.state == BatchOperationState.BATCH_OPERATION_STATE_COMPLETED
    # A workflow that does not exist counts as done, as in Temporal's batcher.
    assert (done.total_operation_count, done.complete_operation_count, done.failure_operation_count) == (4, 4, 0)
    assert done.query == ""
    assert [e.business_id for e in done.executions] == [t.business_id for t in targets]
    for handle in handles:
        signals = [e for e in await events_of(client, handle.id)
                   if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED]
        assert len(signals) == 1, signals
        attrs = signals[0].workflow_execution_signaled_event_attributes
        assert attrs.signal_name == "bump"
        assert await default_converter().decode(attrs.input.payloads) == ["hello", 7]
        assert (await handle.describe()).status.name == "RUNNING"
        await handle.terminate("test over")


async def test_batch_cancel_by_query(client: Client, task_queue):
    await wait_no_running_batch(client)
    async with Worker(client, task_queue=task_queue, workflows=[wf.WaitForeverWorkflow]):
        handles, query = await start_waiting(client, task_queue, 2, "batch-cancel")
        job_id = new_id("job-cancel")
        await client.workflow_service.start_batch_operation(StartBatchOperationRequest(
            namespace=NAMESPACE, job_id=job_id, reason="shutting down", visibility_query=query,
            cancellation_operation=BatchOperationCancellation(identity="canceller")))
        done = await wait_finished(client, job_id)
        assert done.state == BatchOperationState.BATCH_OPERATION_STATE_COMPLETED
        assert done.operation_type in (BatchOperationType.BATCH_OPERATION_TYPE_CANCEL,
                                       BatchOperationType.BATCH_OPERATION_TYPE_CANCEL_WORKFLOW)
        assert (done.complete_operation_count, done.failure_operation_count) == (2, 0)

        async def all_canceled():
            statuses = [(await h.describe()).status.name for h in handles]
            return all(s == "CANCELED" for s in statuses)
        await eventually(all_canceled)
        for handle in handles:
            requested = [e for e in await events_of(client, handle.id)
                         if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED]
            assert len(requested) == 1


async def test_cli_batch_reset_and_delete_by_query(client: Client, server_address, task_queue):
    """`temporal workflow reset --query --type FirstWorkflowTask` resets each matching run to its
    first workflow task (a new run each, the old one terminated), and `temporal workflow delete
    --query` deletes them (Temporal deletes asynchronously, so the test waits)."""
    await wait_no_running_batch(client)
    async with Worker(client, task_queue=task_queue, workflows=[wf.WaitForeverWorkflow]):
        handles, query = await start_waiting(client, task_queue, 2, "batch-reset")

        async def first_task_done():
            for handle in handles:
                types = [e.event_type for e in await events_of(client, handle.id)]
                if EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED not in types:
                    return False
            return True
        await eventually(first_task_done)
        first_runs = [(await h.describe()).run_id for h in handles]
        await cli(server_address, "workflow", "reset", "--query", f"{query} AND ExecutionStatus='Running'",
                  "--type", "FirstWorkflowTask", "--reason", "bad deploy", "--yes", "--namespace", NAMESPACE)

        async def all_reset():
            for handle, old_run in zip(handles, first_runs):
                if (await handle.describe()).run_id == old_run:
                    return False
            return True
        await eventually(all_reset)
        for handle, old_run in zip(handles, first_runs):
            old = await client.get_workflow_handle(handle.id, run_id=old_run).describe()
            assert old.status.name == "TERMINATED"
            new_events = await events_of(client, handle.id)
            failed = [e for e in new_events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED]
            assert failed[0].workflow_task_failed_event_attributes.cause == \
                WorkflowTaskFailedCause.WORKFLOW_TASK_FAILED_CAUSE_RESET_WORKFLOW
            assert failed[0].workflow_task_failed_event_attributes.base_run_id == old_run
        await wait_no_running_batch(client)

    await cli(server_address, "workflow", "delete", "--query", query, "--reason", "gone", "--yes",
              "--namespace", NAMESPACE)

    async def all_deleted():
        answer = await client.workflow_service.count_workflow_executions(
            CountWorkflowExecutionsRequest(namespace=NAMESPACE, query=query))
        return answer.count == 0
    await eventually(all_deleted, timeout=90)
    for handle in handles:
        with pytest.raises(RPCError) as err:
            await handle.describe()
        assert err.value.status == RPCStatusCode.NOT_FOUND
    await wait_no_running_batch(client)


async def test_batch_bad_requests(client: Client):
    async def refused(request: StartBatchOperationRequest) -> str:
        with pytest.raises(RPCError) as err:
            await client.workflow_service.start_batch_operation(request)
        assert err.value.status == RPCStatusCode.INVALID_ARGUMENT, err.value
        return err.value.message

    query = "WorkflowType = 'Nothing'"
    message = await refused(StartBatchOperationRequest(
        namespace=NAMESPACE, job_id=new_id("job"), visibility_query=query,
        termination_operation=BatchOperationTermination()))
    assert message.startswith("must provide required parameters")
    assert await refused(StartBatchOperationRequest(
        namespace=NAMESPACE, reason="r", visibility_query=query,
        termination_operation=BatchOperationTermination())) == "JobId is not set on request."
    assert await refused(StartBatchOperationRequest(
        namespace=NAMESPACE, job_id=new_id("job"), reason="r", visibility_query=query,
        target_executions=[Execution(type=ExecutionType.EXECUTION_TYPE_WORKFLOW, business_id="x")],
        termination_operation=BatchOperationTermination())) == \
        "visibility query, executions, and target executions are mutually exclusive"
    assert await refused(StartBatchOperationRequest(
        namespace=NAMESPACE, job_id=new_id("job"), reason="r", visibility_query=query,
        signal_operation=BatchOperationSignal())) == "must provide signal name"
    message = await refused(StartBatchOperationRequest(
        namespace=NAMESPACE, job_id=new_id("job"), reason="r", visibility_query="WorkflowType = ",
        termination_operation=BatchOperationTermination()))
    assert "invalid" in message.lower()

    with pytest.raises(RPCError) as err:
        await describe(client, new_id("job-never-started"))
    assert err.value.status == RPCStatusCode.NOT_FOUND
    with pytest.raises(RPCError) as err:
        await client.workflow_service.describe_batch_operation(DescribeBatchOperationRequest(namespace=NAMESPACE))
    assert err.value.status == RPCStatusCode.INVALID_ARGUMENT
    assert err.value.message == "JobId is not set on request."
    with pytest.raises(RPCError) as err:
        await client.workflow_service.stop_batch_operation(
            StopBatchOperationRequest(namespace=NAMESPACE, job_id=new_id("job")))
    assert err.value.status == RPCStatusCode.INVALID_ARGUMENT
    assert err.value.message == "Reason is not set on request."
    with pytest.raises(RPCError) as err:
        await client.workflow_service.stop_batch_operation(
            StopBatchOperationRequest(namespace=NAMESPACE, job_id=new_id("job-never-started"), reason="r"))
    assert err.value.status == RPCStatusCode.NOT_FOUND


async def test_batch_stop_and_one_job_at_a_time(client: Client, task_queue):
    await wait_no_running_batch(client)
    count = 150
    handles, query = await start_waiting(client, task_queue, count, "batch-stop")
    job_id = new_id("job-stop")
    await client.workflow_service.start_batch_operation(StartBatchOperationRequest(
        namespace=NAMESPACE, job_id=job_id, reason="slowly", visibility_query=query,
        signal_operation=BatchOperationSignal(signal="bump")))
    # A second job while the first runs (and is listed: Temporal counts jobs in visibility):
    # the namespace's limit is one.
    async def listed_running():
        answer = await client.workflow_service.list_batch_operations(
            ListBatchOperationsRequest(namespace=NAMESPACE))
        return any(o.job_id == job_id and o.state == BatchOperationState.BATCH_OPERATION_STATE_RUNNING
                   for o in answer.operation_info)
    await eventually(listed_running, interval=0.05)
    with pytest.raises(RPCError) as err:
        await client.workflow_service.start_batch_operation(StartBatchOperationRequest(
            namespace=NAMESPACE, job_id=new_id("job-second"), reason="too many", visibility_query=query,
            termination_operation=BatchOperationTermination()))
    assert err.value.status == RPCStatusCode.RESOURCE_EXHAUSTED
    assert err.value.message == "Max concurrent batch operations is reached"

    await client.workflow_service.stop_batch_operation(
        StopBatchOperationRequest(namespace=NAMESPACE, job_id=job_id, reason="changed my mind", identity="me"))
    stopped = await describe(client, job_id)
    assert stopped.state == BatchOperationState.BATCH_OPERATION_STATE_FAILED
    assert stopped.HasField("close_time")
    # Stopping a job that has ended is refused.
    with pytest.raises(RPCError) as err:
        await client.workflow_service.stop_batch_operation(
            StopBatchOperationRequest(namespace=NAMESPACE, job_id=job_id, reason="again"))
    assert err.value.status == RPCStatusCode.NOT_FOUND

    # Chronicle's job does nothing more once stopped: signal counts stay where they were.
    # (Temporal's batch activity outlives its terminated workflow until its next heartbeat and
    # goes on signalling meanwhile.)
    async def signalled():
        n = 0
        for h in handles:
            n += sum(1 for e in await events_of(client, h.id)
                     if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED)
        return n
    if IS_CHRONICLE:
        first = await signalled()
        await asyncio.sleep(2)
        assert await signalled() == first
        assert first < count
    for h in handles:
        await h.terminate("test over")


async def test_cli_workflow_terminate_query_and_batch_list(client: Client, server_address, task_queue):
    await wait_no_running_batch(client)
    handles, query = await start_waiting(client, task_queue, 2, "batch-cli")
    out = await cli(server_address, "workflow", "terminate", "--query", query, "--reason", "cli says so",
                    "--yes", "--namespace", NAMESPACE)
    async def all_terminated():
        statuses = [(await h.describe()).status.name for h in handles]
        return all(s == "TERMINATED" for s in statuses)
    await eventually(all_terminated)
    listed = await cli_json(server_address, "batch", "list", "--namespace", NAMESPACE)
    assert isinstance(listed, list) and listed, listed
    job_ids = [j["jobId"] for j in listed]
    started = [j for j in job_ids if j in out.stdout]
    assert len(started) == 1, (out.stdout, job_ids)
    job_id = started[0]
    await wait_finished(client, job_id)
    described = await cli_json(server_address, "batch", "describe", "--job-id", job_id, "--namespace", NAMESPACE)
    assert described["jobId"] == job_id
    assert described["state"] in ("BATCH_OPERATION_STATE_COMPLETED", "Completed")
    assert described["reason"] == "cli says so"
    assert int(described["completeOperationCount"]) == 2


async def test_cli_workflow_signal_query_and_batch_terminate(client: Client, server_address, task_queue):
    await wait_no_running_batch(client)
    count = 150
    handles, query = await start_waiting(client, task_queue, count, "batch-cli-signal")
    out = await cli(server_address, "workflow", "signal", "--query", query, "--name", "bump",
                    "--input", '{"n": 1}', "--reason", "cli pokes", "--yes", "--namespace", NAMESPACE)
    listed = await client.workflow_service.list_batch_operations(ListBatchOperationsRequest(namespace=NAMESPACE))
    started = [o for o in listed.operation_info if o.job_id in out.stdout]
    assert len(started) == 1, (out.stdout, [o.job_id for o in listed.operation_info])
    job_id = started[0].job_id
    await cli(server_address, "batch", "terminate", "--job-id", job_id, "--reason", "enough",
              "--namespace", NAMESPACE)
    described = await cli_json(server_address, "batch", "describe", "--job-id", job_id, "--namespace", NAMESPACE)
    assert described["state"] in ("BATCH_OPERATION_STATE_FAILED", "Failed"), described
    assert described["reason"] == "cli pokes"
    stopped = await describe(client, job_id)
    assert stopped.operation_type in (BatchOperationType.BATCH_OPERATION_TYPE_SIGNAL,
                                      BatchOperationType.BATCH_OPERATION_TYPE_SIGNAL_WORKFLOW)
    # Terminating it again: the job has ended.
    again = await cli(server_address, "batch", "terminate", "--job-id", job_id, "--reason", "again",
                      "--namespace", NAMESPACE, check=False)
    assert again.returncode != 0
    for h in handles:
        await h.terminate("test over")


@pytest.mark.durability
@pytest.mark.deadline(240)
@pytest.mark.skipif(os.environ.get("COMPAT_SKIP_DURABILITY") == "1", reason="COMPAT_SKIP_DURABILITY=1")
async def test_batch_signal_survives_a_server_crash_without_doubling(server_factory, tmp_path):
    """kill -9 the server in the middle of a signal job; after the restart the job finishes and
    every target holds exactly one signal from it."""
    srv = server_factory(str(tmp_path / "data"))
    client = await Client.connect(srv.address)
    count = 200
    task_queue = new_id("tq-batch-crash")
    handles, query = await start_waiting(client, task_queue, count, "batch-crash")
    job_id = new_id("job-crash")
    await client.workflow_service.start_batch_operation(StartBatchOperationRequest(
        namespace=NAMESPACE, job_id=job_id, reason="poke", visibility_query=query,
        signal_operation=BatchOperationSignal(signal="bump")))

    async def signalled(handle):
        return sum(1 for e in await events_of(client, handle.id)
                   if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED)

    # The job works newest first (list order): watch the last started.
    async def some_signalled():
        return sum([await signalled(h) for h in handles[-20:]]) >= 5
    await eventually(some_signalled, timeout=30, interval=0.05)
    # The crash must hit the job in flight, or this test proves nothing.
    assert (await describe(client, job_id)).state == BatchOperationState.BATCH_OPERATION_STATE_RUNNING
    srv.kill()
    await asyncio.to_thread(srv.start)  # same data dir, same port
    client = await Client.connect(srv.address)

    done = await wait_finished(client, job_id)
    assert done.state == BatchOperationState.BATCH_OPERATION_STATE_COMPLETED
    counts = [await signalled(h) for h in handles]
    assert counts == [1] * count, [(h.id, c) for h, c in zip(handles, counts) if c != 1][:5]
    assert done.complete_operation_count == count
    assert done.failure_operation_count == 0


async def test_batch_update_activity_options_by_query(client: Client, task_queue):
    """UpdateActivityOptions as a batch: every matching run's pending activity gets the options
    (here: moved from a queue nobody polls to the worker's), as `temporal activity
    update-options --query` does."""
    import activity_ops_workflows as aw
    from google.protobuf.field_mask_pb2 import FieldMask
    from temporalio.api.activity.v1 import ActivityOptions
    from temporalio.api.batch.v1 import BatchOperationUpdateActivityOptions
    from temporalio.api.taskqueue.v1 import TaskQueue
    from temporalio.api.workflowservice.v1 import DescribeWorkflowExecutionRequest

    await wait_no_running_batch(client)
    keys = [new_id(f"batch-act-{i}") for i in range(2)]
    for key in keys:
        aw.RELEASED.add(key)
    async with Worker(client, task_queue=task_queue, workflows=aw.ALL, activities=aw.ACTIVITIES):
        handles = [await client.start_workflow(aw.OtherQueueActivityWorkflow.run, key, id=key,
                                               task_queue=task_queue) for key in keys]

        async def all_pending():
            for key in keys:
                d = await client.workflow_service.describe_workflow_execution(DescribeWorkflowExecutionRequest(
                    namespace=NAMESPACE, execution=WorkflowExecution(workflow_id=key)))
                if not d.pending_activities:
                    return False
            answer = await client.workflow_service.count_workflow_executions(
                CountWorkflowExecutionsRequest(namespace=NAMESPACE, query=f"TaskQueue = '{task_queue}'"))
            return answer.count == len(keys)
        await eventually(all_pending)
        job_id = new_id("batch-act-job")
        await client.workflow_service.start_batch_operation(StartBatchOperationRequest(
            namespace=NAMESPACE, job_id=job_id, reason="move them",
            visibility_query=f"TaskQueue = '{task_queue}'",
            update_activity_options_operation=BatchOperationUpdateActivityOptions(
                identity="batcher", match_all=True,
                activity_options=ActivityOptions(task_queue=TaskQueue(name=task_queue)),
                update_mask=FieldMask(paths=["task_queue.name"]))))
        done = await wait_finished(client, job_id)
        assert done.state == BatchOperationState.BATCH_OPERATION_STATE_COMPLETED
        assert done.operation_type == BatchOperationType.BATCH_OPERATION_TYPE_UPDATE_ACTIVITY_OPTIONS
        assert done.complete_operation_count == len(keys)
        assert done.failure_operation_count == 0
        for handle in handles:
            assert await asyncio.wait_for(handle.result(), 30) == 1
