"""Activity operations (`temporal activity pause|unpause|reset|update-options` and the
WorkflowService calls behind them), user metadata, eager workflow start and the small RPCs SDKs
and the CLI call, through the Python SDK's raw `workflow_service` / `operator_service` and the
`temporal` CLI.

Each test runs an in-process worker on its own task queue with uuid workflow IDs."""

import asyncio
import json
import time
import uuid

import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask
from temporalio.api.activity.v1 import ActivityOptions
from temporalio.api.command.v1 import Command, CompleteWorkflowExecutionCommandAttributes
from temporalio.api.common.v1 import RetryPolicy, WorkflowExecution, WorkflowType
from temporalio.api.batch.v1 import BatchOperationUnpauseActivities
from temporalio.api.enums.v1 import (
    BatchOperationState,
    CommandType,
    EventType,
    PendingActivityState,
    TaskQueueType,
)
from temporalio.api.operatorservice.v1 import ListClustersRequest
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import (
    DescribeBatchOperationRequest,
    DescribeNamespaceRequest,
    DescribeTaskQueueRequest,
    DescribeWorkflowExecutionRequest,
    GetClusterInfoRequest,
    ListWorkflowExecutionsRequest,
    ListTaskQueuePartitionsRequest,
    PauseActivityRequest,
    ResetActivityRequest,
    ResetStickyTaskQueueRequest,
    StartBatchOperationRequest,
    RespondWorkflowTaskCompletedRequest,
    StartWorkflowExecutionRequest,
    UnpauseActivityRequest,
    UpdateActivityOptionsRequest,
)
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Worker

import activities_state
import activity_ops_workflows as aw
from conftest import new_id
from test_batch import wait_no_running_batch
from test_cli import cli, eventually

TIMEOUT = 30


def worker(client, task_queue, **kwargs):
    return Worker(client, task_queue=task_queue, workflows=aw.ALL, activities=aw.ACTIVITIES, **kwargs)


async def describe(client, workflow_id):
    return await client.workflow_service.describe_workflow_execution(DescribeWorkflowExecutionRequest(
        namespace="default", execution=WorkflowExecution(workflow_id=workflow_id)))


async def pending(client, workflow_id, activity_id):
    d = await describe(client, workflow_id)
    found = [a for a in d.pending_activities if a.activity_id == activity_id]
    assert found, f"no pending activity {activity_id}: {d.pending_activities}"
    return found[0]


async def wait_pending(client, workflow_id, activity_id, check, timeout=15.0):
    """The pending activity once ``check`` holds for it."""
    deadline = time.monotonic() + timeout
    a = None
    while True:
        d = await describe(client, workflow_id)
        found = [a for a in d.pending_activities if a.activity_id == activity_id]
        a = found[0] if found else None
        if a is not None and check(a):
            return a
        if time.monotonic() > deadline:
            raise AssertionError(f"pending activity {activity_id} never matched: {a}")
        await asyncio.sleep(0.1)


async def wait_attempts(key, at_least, timeout=15.0):
    await eventually(lambda: _ready(len(activities_state.values(key)) >= at_least), timeout)


async def _ready(ok):
    assert ok
    return ok


def execution(workflow_id):
    return WorkflowExecution(workflow_id=workflow_id)


async def rpc_error(call):
    with pytest.raises(RPCError) as e:
        await call
    return e.value


async def test_pause_withholds_attempts_until_unpaused(client, task_queue):
    key = new_id("pause")
    async with worker(client, task_queue):
        handle = await client.start_workflow(aw.FlakyActivityWorkflow.run, key, id=key, task_queue=task_queue)
        await wait_attempts(key, 2)
        await client.workflow_service.pause_activity(PauseActivityRequest(
            namespace="default", execution=execution(key), id="flaky", identity="tester",
            reason="looking into it", request_id="pause-1"))
        a = await wait_pending(client, key, "flaky", lambda a: a.state == PendingActivityState.PENDING_ACTIVITY_STATE_PAUSED)
        assert a.paused
        assert a.pause_info.manual.identity == "tester"
        assert a.pause_info.manual.reason == "looking into it"
        assert not a.HasField("next_attempt_schedule_time")
        ran = len(activities_state.values(key))
        await asyncio.sleep(2.5)  # attempts come every second when not paused
        assert len(activities_state.values(key)) == ran
        # The same pause again is fine; another one is refused.
        await client.workflow_service.pause_activity(PauseActivityRequest(
            namespace="default", execution=execution(key), id="flaky", request_id="pause-1"))
        err = await rpc_error(client.workflow_service.pause_activity(PauseActivityRequest(
            namespace="default", execution=execution(key), id="flaky", request_id="pause-2")))
        assert err.status == RPCStatusCode.FAILED_PRECONDITION
        assert err.message == "activity is already paused"
        aw.RELEASED.add(key)
        await client.workflow_service.unpause_activity(UnpauseActivityRequest(
            namespace="default", execution=execution(key), id="flaky", reset_attempts=True))
        assert await asyncio.wait_for(handle.result(), TIMEOUT) == 1


async def test_paused_heartbeating_activity_is_told_and_waits(client, task_queue):
    key = new_id("beat")
    async with worker(client, task_queue):
        handle = await client.start_workflow(aw.HeartbeatingActivityWorkflow.run, key, id=key, task_queue=task_queue)
        await wait_attempts(key, 1)
        await wait_pending(client, key, "beat", lambda a: a.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED)
        await client.workflow_service.pause_activity(PauseActivityRequest(
            namespace="default", execution=execution(key), type="heartbeating"))
        # The next heartbeat tells the worker, which stops the attempt; the next one waits.
        await eventually(lambda: _ready(("cancelled", True, False) in activities_state.values(key)), TIMEOUT)
        a = await wait_pending(client, key, "beat", lambda a: a.state == PendingActivityState.PENDING_ACTIVITY_STATE_PAUSED)
        assert a.attempt == 2
        assert a.paused
        await asyncio.sleep(1.5)
        assert [v for v in activities_state.values(key) if v[0] == "attempt"] == [("attempt", 1)]
        aw.RELEASED.add(key)
        await client.workflow_service.unpause_activity(UnpauseActivityRequest(
            namespace="default", execution=execution(key), unpause_all=True))
        assert await asyncio.wait_for(handle.result(), TIMEOUT) == 2


async def test_reset_activity_starts_over_at_attempt_one(client, task_queue):
    key = new_id("reset")
    async with worker(client, task_queue):
        handle = await client.start_workflow(aw.FlakyActivityWorkflow.run, key, id=key, task_queue=task_queue)
        await wait_attempts(key, 3)
        await client.workflow_service.reset_activity(ResetActivityRequest(
            namespace="default", execution=execution(key), id="flaky"))
        # Attempt 1 runs again at once, after the attempts before the reset.
        await eventually(lambda: _ready(activities_state.values(key).index(1) == 0
                                        and 1 in activities_state.values(key)[3:]), TIMEOUT)
        aw.RELEASED.add(key)
        assert await asyncio.wait_for(handle.result(), TIMEOUT) <= 3


async def test_reset_keeping_pause_then_unpause(client, task_queue):
    key = new_id("reset-paused")
    async with worker(client, task_queue):
        handle = await client.start_workflow(aw.FlakyActivityWorkflow.run, key, id=key, task_queue=task_queue)
        await wait_attempts(key, 2)
        await client.workflow_service.pause_activity(PauseActivityRequest(
            namespace="default", execution=execution(key), id="flaky"))
        await wait_pending(client, key, "flaky", lambda a: a.state == PendingActivityState.PENDING_ACTIVITY_STATE_PAUSED)
        await client.workflow_service.reset_activity(ResetActivityRequest(
            namespace="default", execution=execution(key), id="flaky", keep_paused=True))
        a = await pending(client, key, "flaky")
        assert a.paused and a.attempt == 1
        ran = len(activities_state.values(key))
        await asyncio.sleep(1.5)
        assert len(activities_state.values(key)) == ran
        aw.RELEASED.add(key)
        await client.workflow_service.unpause_activity(UnpauseActivityRequest(
            namespace="default", execution=execution(key), id="flaky"))
        assert await asyncio.wait_for(handle.result(), TIMEOUT) == 1


async def test_update_options_moves_activity_and_changes_retries(client, task_queue):
    key = new_id("options")
    aw.RELEASED.add(key)
    async with worker(client, task_queue):
        handle = await client.start_workflow(aw.OtherQueueActivityWorkflow.run, key, id=key, task_queue=task_queue)
        a = await wait_pending(client, key, "elsewhere", lambda a: True)
        assert a.activity_options.task_queue.name == f"{key}-nobody"
        assert a.activity_options.start_to_close_timeout.seconds == 10
        r = await client.workflow_service.update_activity_options(UpdateActivityOptionsRequest(
            namespace="default", execution=execution(key), id="elsewhere",
            activity_options=ActivityOptions(retry_policy=RetryPolicy(maximum_attempts=5)),
            update_mask=FieldMask(paths=["retry_policy.maximum_attempts"])))
        assert r.activity_options.retry_policy.maximum_attempts == 5
        assert r.activity_options.task_queue.name == f"{key}-nobody"
        a = await pending(client, key, "elsewhere")
        assert a.maximum_attempts == 5
        assert a.activity_options.retry_policy.maximum_attempts == 5
        r = await client.workflow_service.update_activity_options(UpdateActivityOptionsRequest(
            namespace="default", execution=execution(key), id="elsewhere",
            activity_options=ActivityOptions(task_queue=TaskQueue(name=task_queue)),
            update_mask=FieldMask(paths=["task_queue.name"])))
        assert r.activity_options.task_queue.name == task_queue
        assert await asyncio.wait_for(handle.result(), TIMEOUT) == 1


async def test_activity_operation_errors(client, task_queue):
    key = new_id("errors")
    async with worker(client, task_queue):
        await client.start_workflow(aw.OtherQueueActivityWorkflow.run, key, id=key, task_queue=task_queue)
        await wait_pending(client, key, "elsewhere", lambda a: True)
        ws = client.workflow_service
        err = await rpc_error(ws.pause_activity(PauseActivityRequest(namespace="default", execution=execution(key))))
        assert err.status == RPCStatusCode.INVALID_ARGUMENT
        assert err.message == "Either Activity.Id or Activity.Type should be set on request."
        err = await rpc_error(ws.pause_activity(PauseActivityRequest(namespace="default", id="elsewhere")))
        assert err.status == RPCStatusCode.INVALID_ARGUMENT
        assert err.message == "WorkflowId is not set on request."
        for call in [
            ws.pause_activity(PauseActivityRequest(namespace="default", execution=execution(key), id="nope")),
            ws.unpause_activity(UnpauseActivityRequest(namespace="default", execution=execution(key), id="nope")),
            ws.reset_activity(ResetActivityRequest(namespace="default", execution=execution(key), type="nope")),
        ]:
            err = await rpc_error(call)
            assert err.status == RPCStatusCode.NOT_FOUND, err
        err = await rpc_error(ws.update_activity_options(UpdateActivityOptionsRequest(
            namespace="default", execution=execution(key), id="elsewhere",
            activity_options=ActivityOptions(heartbeat_timeout=Duration(seconds=1)))))
        assert err.status == RPCStatusCode.INVALID_ARGUMENT
        assert err.message == "UpdateMask is not provided"
        err = await rpc_error(ws.update_activity_options(UpdateActivityOptionsRequest(
            namespace="default", execution=execution(key), id="elsewhere", restore_original=True,
            update_mask=FieldMask(paths=["heartbeat_timeout"]))))
        assert err.status == RPCStatusCode.INVALID_ARGUMENT
        assert err.message == "Both UpdateMask and RestoreOriginal are provided"
        err = await rpc_error(ws.update_activity_options(UpdateActivityOptionsRequest(
            namespace="default", execution=execution(key), id="elsewhere",
            activity_options=ActivityOptions(retry_policy=RetryPolicy(maximum_attempts=-1)),
            update_mask=FieldMask(paths=["retry_policy.maximum_attempts"]))))
        assert err.status == RPCStatusCode.INVALID_ARGUMENT
        assert err.message == "MaximumAttempts cannot be negative on retry policy."
        # Nothing changed.
        a = await pending(client, key, "elsewhere")
        assert not a.paused and a.attempt == 1
        assert a.activity_options.heartbeat_timeout.seconds == 0


async def test_cli_activity_commands(client, server_address, task_queue):
    key = new_id("cli")
    async with worker(client, task_queue):
        handle = await client.start_workflow(aw.FlakyActivityWorkflow.run, key, id=key, task_queue=task_queue)
        await wait_attempts(key, 2)
        await cli(server_address, "activity", "pause", "--workflow-id", key, "--activity-id", "flaky",
                  "--reason", "from the cli")
        a = await wait_pending(client, key, "flaky", lambda a: a.state == PendingActivityState.PENDING_ACTIVITY_STATE_PAUSED)
        assert a.pause_info.manual.reason == "from the cli"
        await cli(server_address, "activity", "update-options", "--workflow-id", key, "--activity-id", "flaky",
                  "--retry-maximum-attempts", "50")
        a = await pending(client, key, "flaky")
        assert a.maximum_attempts == 50 and a.paused
        await cli(server_address, "activity", "reset", "--workflow-id", key, "--activity-id", "flaky", "--keep-paused")
        a = await pending(client, key, "flaky")
        assert a.attempt == 1 and a.paused
        aw.RELEASED.add(key)
        await cli(server_address, "activity", "unpause", "--workflow-id", key, "--activity-id", "flaky")
        assert await asyncio.wait_for(handle.result(), TIMEOUT) == 1


async def test_user_metadata_in_describe_and_history(client, task_queue):
    key = new_id("meta")
    aw.RELEASED.add(key)
    async with worker(client, task_queue):
        handle = await client.start_workflow(aw.MetadataWorkflow.run, key, id=key, task_queue=task_queue,
                                             static_summary="a summary", static_details="some **details**")
        assert await asyncio.wait_for(handle.result(), TIMEOUT) == 1
        d = await describe(client, key)
        conv = client.data_converter
        md = d.execution_config.user_metadata
        assert (await conv.decode([md.summary]))[0] == "a summary"
        assert (await conv.decode([md.details]))[0] == "some **details**"
        events = [e async for e in handle.fetch_history_events()]
        started = events[0]
        assert (await conv.decode([started.user_metadata.summary]))[0] == "a summary"
        timer = [e for e in events if e.event_type == EventType.EVENT_TYPE_TIMER_STARTED][0]
        assert (await conv.decode([timer.user_metadata.summary]))[0] == "short nap"
        scheduled = [e for e in events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED][0]
        assert (await conv.decode([scheduled.user_metadata.summary]))[0] == "the flaky one"


async def test_eager_workflow_start(client, task_queue):
    ns = await client.workflow_service.describe_namespace(DescribeNamespaceRequest(namespace="default"))
    assert ns.namespace_info.capabilities.eager_workflow_start
    workflow_id = new_id("eager")
    request = StartWorkflowExecutionRequest(
        namespace="default", workflow_id=workflow_id, workflow_type=WorkflowType(name="EagerWorkflow"),
        task_queue=TaskQueue(name=task_queue), identity="eager-worker", request_id=str(uuid.uuid4()),
        request_eager_execution=True)
    r = await client.workflow_service.start_workflow_execution(request)
    task = r.eager_workflow_task
    assert r.HasField("eager_workflow_task")
    assert task.started_event_id == 3 and task.attempt == 1
    assert task.workflow_execution.run_id == r.run_id
    assert task.workflow_type.name == "EagerWorkflow"
    assert [e.event_type for e in task.history.events] == [
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED, EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED,
        EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED]
    assert task.history.events[2].workflow_task_started_event_attributes.identity == "eager-worker"
    # The same start retried gets the same task again.
    again = await client.workflow_service.start_workflow_execution(request)
    assert again.run_id == r.run_id
    assert again.eager_workflow_task.started_event_id == 3
    d = await describe(client, workflow_id)
    assert d.pending_workflow_task.state == 2  # STARTED: it never went through matching
    await client.workflow_service.respond_workflow_task_completed(RespondWorkflowTaskCompletedRequest(
        namespace="default", task_token=task.task_token, identity="eager-worker",
        commands=[Command(command_type=CommandType.COMMAND_TYPE_COMPLETE_WORKFLOW_EXECUTION,
                          complete_workflow_execution_command_attributes=CompleteWorkflowExecutionCommandAttributes())]))
    handle = client.get_workflow_handle(workflow_id)
    await asyncio.wait_for(handle.result(), TIMEOUT)
    # Without the request, or with a start delay, the task goes through matching as usual.
    delayed = await client.workflow_service.start_workflow_execution(StartWorkflowExecutionRequest(
        namespace="default", workflow_id=new_id("eager"), workflow_type=WorkflowType(name="EagerWorkflow"),
        task_queue=TaskQueue(name=task_queue), request_id=str(uuid.uuid4()), request_eager_execution=True,
        workflow_start_delay=Duration(seconds=5)))
    assert not delayed.HasField("eager_workflow_task")


async def test_small_rpcs(client, task_queue):
    ws = client.workflow_service
    key = new_id("small")
    # Activity pollers only: DescribeTaskQueue answers per type.
    async with Worker(client, task_queue=task_queue, activities=aw.ACTIVITIES):
        async def activity_pollers():
            r = await ws.describe_task_queue(DescribeTaskQueueRequest(
                namespace="default", task_queue=TaskQueue(name=task_queue),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY))
            assert r.pollers
            return r
        await eventually(activity_pollers, TIMEOUT)
        r = await ws.describe_task_queue(DescribeTaskQueueRequest(
            namespace="default", task_queue=TaskQueue(name=task_queue)))
        assert not r.pollers
    parts = await ws.list_task_queue_partitions(ListTaskQueuePartitionsRequest(
        namespace="default", task_queue=TaskQueue(name=task_queue)))
    assert task_queue in [p.key for p in parts.workflow_task_queue_partitions]
    assert task_queue in [p.key for p in parts.activity_task_queue_partitions]
    # ResetStickyTaskQueue: a running workflow's stickiness, or NotFound.
    async with worker(client, task_queue):
        await client.start_workflow(aw.OtherQueueActivityWorkflow.run, key, id=key, task_queue=task_queue)
        await wait_pending(client, key, "elsewhere", lambda a: True)
        await ws.reset_sticky_task_queue(ResetStickyTaskQueueRequest(namespace="default", execution=execution(key)))
    err = await rpc_error(ws.reset_sticky_task_queue(ResetStickyTaskQueueRequest(
        namespace="default", execution=execution(new_id("missing")))))
    assert err.status == RPCStatusCode.NOT_FOUND
    info = await ws.get_cluster_info(GetClusterInfoRequest())
    assert info.cluster_name and info.history_shard_count >= 1
    uuid.UUID(info.cluster_id)  # a random ID, as Temporal mints at its first start
    assert info.supported_clients["temporal-cli"] == "<2.0.0"
    clusters = await client.operator_service.list_clusters(ListClustersRequest())
    assert [c.cluster_name for c in clusters.clusters] == [info.cluster_name]
    assert clusters.clusters[0].cluster_id == info.cluster_id
    assert clusters.clusters[0].history_shard_count == info.history_shard_count


async def test_paused_activity_does_not_time_out(client, task_queue):
    """Schedule-to-close passes while the activity is paused: it stays pending (Temporal arms no
    timeout for a paused activity), and times out once unpaused."""
    key = new_id("s2c")
    async with worker(client, task_queue):
        handle = await client.start_workflow(aw.ShortDeadlineWorkflow.run, key, id=key, task_queue=task_queue)
        await wait_attempts(key, 1)
        await client.workflow_service.pause_activity(PauseActivityRequest(
            namespace="default", execution=execution(key), id="short"))
        await wait_pending(client, key, "short", lambda a: a.state == PendingActivityState.PENDING_ACTIVITY_STATE_PAUSED)
        await asyncio.sleep(4)  # past the 3 s schedule-to-close
        a = await pending(client, key, "short")
        assert a.paused
        await client.workflow_service.unpause_activity(UnpauseActivityRequest(
            namespace="default", execution=execution(key), id="short"))
        with pytest.raises(Exception):
            await asyncio.wait_for(handle.result(), TIMEOUT)
        events = [e async for e in handle.fetch_history_events()]
        assert any(e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT for e in events)


def pause_info(info):
    """The run's TemporalPauseInfo values (None when absent)."""
    payload = info.search_attributes.indexed_fields.get("TemporalPauseInfo")
    return None if payload is None else json.loads(payload.data)


async def listed_ids(client, query):
    r = await client.workflow_service.list_workflow_executions(ListWorkflowExecutionsRequest(
        namespace="default", query=query))
    return sorted(e.execution.workflow_id for e in r.executions)


async def test_pause_info_search_attribute_and_batch_unpause_by_type(client, task_queue):
    paused, running = new_id("pause-info"), new_id("pause-info")
    async with worker(client, task_queue):
        handles = [await client.start_workflow(aw.FlakyActivityWorkflow.run, key, id=key, task_queue=task_queue)
                   for key in (paused, running)]
        for key in (paused, running):
            await wait_attempts(key, 1)
        await client.workflow_service.pause_activity(PauseActivityRequest(
            namespace="default", execution=execution(paused), id="flaky", reason="investigating"))
        info = (await describe(client, paused)).workflow_execution_info
        assert pause_info(info) == ["property:activityType=flaky"]
        assert pause_info((await describe(client, running)).workflow_execution_info) is None
        mine = f"TaskQueue='{task_queue}'"

        async def paused_listed():
            assert await listed_ids(client, f"{mine} AND TemporalPauseInfo = 'property:activityType=flaky'") == [paused]
            assert await listed_ids(client, f"{mine} AND TemporalPauseInfo IS NOT NULL") == [paused]
        await eventually(paused_listed)

        # Unpausing removes the attribute.
        await client.workflow_service.unpause_activity(UnpauseActivityRequest(
            namespace="default", execution=execution(paused), id="flaky"))
        assert pause_info((await describe(client, paused)).workflow_execution_info) is None

        async def none_listed():
            assert await listed_ids(client, f"{mine} AND TemporalPauseInfo IS NOT NULL") == []
        await eventually(none_listed)

        # A batch unpause by type reaches only the runs whose TemporalPauseInfo names the type.
        await client.workflow_service.pause_activity(PauseActivityRequest(
            namespace="default", execution=execution(paused), id="flaky"))
        await eventually(paused_listed)
        await wait_no_running_batch(client)
        job_id = new_id("unpause-by-type")
        await client.workflow_service.start_batch_operation(StartBatchOperationRequest(
            namespace="default", job_id=job_id, reason="resume", visibility_query=mine,
            unpause_activities_operation=BatchOperationUnpauseActivities(type="flaky")))

        async def finished():
            d = await client.workflow_service.describe_batch_operation(DescribeBatchOperationRequest(
                namespace="default", job_id=job_id))
            assert d.state == BatchOperationState.BATCH_OPERATION_STATE_COMPLETED, d
            return d
        done = await eventually(finished, timeout=60)
        assert done.total_operation_count == 1
        assert done.complete_operation_count == 1
        a = await wait_pending(client, paused, "flaky", lambda a: not a.paused)
        assert not a.paused
        for key in (paused, running):
            aw.RELEASED.add(key)
        for handle in handles:
            await asyncio.wait_for(handle.result(), TIMEOUT)


async def test_a_dev_servers_cluster_id_stays_across_restarts(tmp_path, server_factory):
    """start-dev mints its cluster ID once and keeps it with the data directory."""
    srv = server_factory(str(tmp_path / "data"))
    first = await (await Client.connect(srv.address)).workflow_service.get_cluster_info(GetClusterInfoRequest())
    uuid.UUID(first.cluster_id)
    srv.stop()
    srv.start()
    again = await (await Client.connect(srv.address)).workflow_service.get_cluster_info(GetClusterInfoRequest())
    assert again.cluster_id == first.cluster_id
    other = server_factory(str(tmp_path / "other"))
    elsewhere = await (await Client.connect(other.address)).workflow_service.get_cluster_info(GetClusterInfoRequest())
    assert elsewhere.cluster_id != first.cluster_id


async def test_legacy_task_queue_status_and_the_cli_legacy_describe(client, server_address, task_queue):
    """The legacy status comes only when asked for (the CLI's `--legacy-mode` reads it), with the
    queue's backlog: a workflow task nobody polls yet."""
    await client.start_workflow("LegacyStatusNoWorker", id=new_id("legacy"), task_queue=task_queue)
    ws = client.workflow_service
    def request(with_status):
        return DescribeTaskQueueRequest(namespace="default", task_queue=TaskQueue(name=task_queue),
                                        task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
                                        include_task_queue_status=with_status)
    plain = await ws.describe_task_queue(request(False))
    assert not plain.HasField("task_queue_status")
    described = await ws.describe_task_queue(request(True))
    assert described.HasField("task_queue_status")
    assert described.task_queue_status.rate_per_second > 0
    shown = await cli(server_address, "task-queue", "describe", "--task-queue", task_queue, "--legacy-mode")
    assert shown.returncode == 0, shown.stderr
