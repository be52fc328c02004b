"""Standalone activity executions (activities a client starts, not a workflow) through the Python
SDK's `Client.start_activity` family and the raw WorkflowService calls behind it: result, retries
and failure, timeouts, cancellation, termination, deletion, ID conflict/reuse policies, describe
(with its long poll), list and count.

Each test runs an in-process worker on its own task queue with uuid activity IDs."""

import asyncio
import uuid
from datetime import timedelta

import pytest
from temporalio import activity
from google.protobuf.duration_pb2 import Duration
from temporalio.api.common.v1 import ActivityType
from temporalio.api.enums.v1 import RetryState
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import (
    DeleteActivityExecutionRequest,
    DescribeActivityExecutionRequest,
    ListWorkflowExecutionsRequest,
    PollActivityExecutionRequest,
    RequestCancelActivityExecutionRequest,
    StartActivityExecutionRequest,
    TerminateActivityExecutionRequest,
)
from temporalio.client import (
    ActivityExecutionStatus,
    ActivityFailureError,
    PendingActivityState,
)
from temporalio.common import ActivityIDReusePolicy, RetryPolicy
from temporalio.exceptions import (
    ActivityAlreadyStartedError,
    ApplicationError,
    CancelledError,
    TerminatedError,
    TimeoutError as TemporalTimeoutError,
)
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Worker

TIMEOUT = 30

attempts_seen: dict = {}


@activity.defn
async def double(x: int) -> int:
    return x * 2


@activity.defn
async def flaky(key: str) -> str:
    """Fails twice, then answers with its attempt."""
    attempts_seen[key] = activity.info().attempt
    if activity.info().attempt < 3:
        raise ApplicationError(f"attempt {activity.info().attempt} failed")
    return f"done on {activity.info().attempt}"


@activity.defn
async def broken(_: str) -> str:
    raise ApplicationError("bad input", "detail", non_retryable=True, type="BadInput")


@activity.defn
async def sleepy(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "woke"


@activity.defn
async def heartbeating(_: str) -> str:
    """Heartbeats until canceled; reports the cancellation."""
    while True:
        activity.heartbeat("alive")
        await asyncio.sleep(0.2)


@activity.defn
async def completes_later(_: str) -> str:
    activity.raise_complete_async()


def new_activity_id() -> str:
    return f"act-{uuid.uuid4()}"


async def eventually(check, timeout: float = 10.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            return await check()
        except AssertionError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.2)


async def test_start_result_and_describe(client, task_queue):
    activity_id = new_activity_id()
    handle = await client.start_activity(
        double, 21, id=activity_id, task_queue=task_queue,
        start_to_close_timeout=timedelta(seconds=10),
    )
    assert handle.run_id
    desc = await handle.describe()
    assert desc.status == ActivityExecutionStatus.RUNNING
    assert desc.run_state == PendingActivityState.SCHEDULED
    assert desc.activity_type == "double"
    assert desc.task_queue == task_queue
    assert desc.attempt == 1
    async with Worker(client, task_queue=task_queue, activities=[double]):
        assert await asyncio.wait_for(handle.result(), TIMEOUT) == 42
    desc = await handle.describe()
    assert desc.status == ActivityExecutionStatus.COMPLETED
    assert desc.close_time is not None and desc.last_started_time is not None
    assert desc.execution_duration is not None
    assert desc.start_to_close_timeout == timedelta(seconds=10)
    # The raw outcome is a result, without a retry state.
    raw = await client.workflow_service.describe_activity_execution(
        DescribeActivityExecutionRequest(
            namespace=client.namespace, activity_id=activity_id, include_outcome=True,
            include_input=True,
        ))
    assert raw.outcome.HasField("result") and raw.input.payloads
    # A standalone activity is no workflow.
    listed = await client.workflow_service.list_workflow_executions(
        ListWorkflowExecutionsRequest(namespace=client.namespace, query=f"WorkflowId = '{activity_id}'"))
    assert list(listed.executions) == []


async def test_retries_then_success_and_non_retryable_failure(client, task_queue):
    key = str(uuid.uuid4())
    retry = RetryPolicy(initial_interval=timedelta(milliseconds=100), backoff_coefficient=1.0)
    async with Worker(client, task_queue=task_queue, activities=[flaky, broken]):
        handle = await client.start_activity(
            flaky, key, id=new_activity_id(), task_queue=task_queue,
            start_to_close_timeout=timedelta(seconds=10), retry_policy=retry,
        )
        assert await asyncio.wait_for(handle.result(), TIMEOUT) == "done on 3"
        desc = await handle.describe()
        assert desc.attempt == 3 and desc.status == ActivityExecutionStatus.COMPLETED

        failing = await client.start_activity(
            broken, "x", id=new_activity_id(), task_queue=task_queue,
            start_to_close_timeout=timedelta(seconds=10), retry_policy=retry,
        )
        with pytest.raises(ActivityFailureError) as err:
            await asyncio.wait_for(failing.result(), TIMEOUT)
        cause = err.value.cause
        assert isinstance(cause, ApplicationError)
        assert cause.message == "bad input" and cause.type == "BadInput" and cause.non_retryable
    desc = await failing.describe()
    assert desc.status == ActivityExecutionStatus.FAILED and desc.attempt == 1
    raw = await client.workflow_service.describe_activity_execution(
        DescribeActivityExecutionRequest(
            namespace=client.namespace, activity_id=failing.id, include_outcome=True,
            include_last_failure=True))
    assert raw.outcome.failure.message == "bad input"
    assert raw.outcome.retry_state == RetryState.RETRY_STATE_NON_RETRYABLE_FAILURE
    assert raw.info.last_failure.message == "bad input"


async def test_start_to_close_timeout_with_attempts_exhausted(client, task_queue):
    async with Worker(client, task_queue=task_queue, activities=[sleepy]):
        handle = await client.start_activity(
            sleepy, 5.0, id=new_activity_id(), task_queue=task_queue,
            start_to_close_timeout=timedelta(seconds=1),
            retry_policy=RetryPolicy(maximum_attempts=2, initial_interval=timedelta(milliseconds=100)),
        )
        with pytest.raises(ActivityFailureError) as err:
            await asyncio.wait_for(handle.result(), TIMEOUT)
        assert isinstance(err.value.cause, TemporalTimeoutError)
    desc = await handle.describe()
    assert desc.status == ActivityExecutionStatus.TIMED_OUT and desc.attempt == 2


async def test_cancel_before_and_after_a_worker_starts_it(client, task_queue):
    # No worker: the cancellation closes it at once, the reason as details.
    idle = await client.start_activity(
        double, 1, id=new_activity_id(), task_queue=task_queue,
        start_to_close_timeout=timedelta(seconds=10),
    )
    await idle.cancel(reason="not needed")
    with pytest.raises(ActivityFailureError) as err:
        await asyncio.wait_for(idle.result(), TIMEOUT)
    assert isinstance(err.value.cause, CancelledError)
    assert list(err.value.cause.details) == ["not needed"]
    desc = await idle.describe()
    assert desc.status == ActivityExecutionStatus.CANCELED and desc.canceled_reason == "not needed"
    # A closed activity refuses a new cancellation.
    with pytest.raises(RPCError) as rpc:
        await client.workflow_service.request_cancel_activity_execution(
            RequestCancelActivityExecutionRequest(
                namespace=client.namespace, activity_id=idle.id, request_id=str(uuid.uuid4())))
    assert rpc.value.status == RPCStatusCode.FAILED_PRECONDITION
    assert "activity is in terminal state" in rpc.value.message

    # A running one learns of it in its heartbeat answer and reports the cancellation.
    async with Worker(client, task_queue=task_queue, activities=[heartbeating]):
        busy = await client.start_activity(
            heartbeating, "x", id=new_activity_id(), task_queue=task_queue,
            start_to_close_timeout=timedelta(seconds=20), heartbeat_timeout=timedelta(seconds=5),
        )

        async def started():
            desc = await busy.describe()
            assert desc.run_state == PendingActivityState.STARTED
        await eventually(started)
        await busy.cancel(reason="stop now")
        desc = await busy.describe()
        assert desc.run_state == PendingActivityState.CANCEL_REQUESTED
        with pytest.raises(ActivityFailureError) as err:
            await asyncio.wait_for(busy.result(), TIMEOUT)
        assert isinstance(err.value.cause, CancelledError)
    desc = await busy.describe()
    assert desc.status == ActivityExecutionStatus.CANCELED
    assert desc.total_heartbeat_count >= 1


async def test_terminate_and_delete(client, task_queue):
    handle = await client.start_activity(
        double, 1, id=new_activity_id(), task_queue=task_queue,
        start_to_close_timeout=timedelta(seconds=10),
    )
    request_id = str(uuid.uuid4())
    terminate = TerminateActivityExecutionRequest(
        namespace=client.namespace, activity_id=handle.id, reason="by test", request_id=request_id)
    await client.workflow_service.terminate_activity_execution(terminate)
    # The same request again is answered as the first; another is refused.
    await client.workflow_service.terminate_activity_execution(terminate)
    with pytest.raises(RPCError) as rpc:
        await client.workflow_service.terminate_activity_execution(TerminateActivityExecutionRequest(
            namespace=client.namespace, activity_id=handle.id, request_id=str(uuid.uuid4())))
    assert rpc.value.status == RPCStatusCode.FAILED_PRECONDITION
    assert rpc.value.message == f"already terminated with request ID {request_id}"
    with pytest.raises(ActivityFailureError) as err:
        await asyncio.wait_for(handle.result(), TIMEOUT)
    assert isinstance(err.value.cause, TerminatedError)
    assert err.value.cause.message == "by test"
    desc = await handle.describe()
    assert desc.status == ActivityExecutionStatus.TERMINATED

    await client.workflow_service.delete_activity_execution(
        DeleteActivityExecutionRequest(namespace=client.namespace, activity_id=handle.id))

    async def gone():
        with pytest.raises(RPCError) as rpc:
            await handle.describe()
        assert rpc.value.status == RPCStatusCode.NOT_FOUND
    # (Temporal deletes in the background.)
    await eventually(gone, timeout=TIMEOUT)


async def test_reuse_policy_failed_only(client, task_queue):
    activity_id = new_activity_id()
    async with Worker(client, task_queue=task_queue, activities=[double, broken]):
        first = await client.start_activity(
            double, 1, id=activity_id, task_queue=task_queue,
            start_to_close_timeout=timedelta(seconds=10),
            id_reuse_policy=ActivityIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
        )
        await asyncio.wait_for(first.result(), TIMEOUT)
        # Completed: ALLOW_DUPLICATE_FAILED_ONLY refuses the ID.
        with pytest.raises(ActivityAlreadyStartedError) as err:
            await client.start_activity(
                double, 1, id=activity_id, task_queue=task_queue,
                start_to_close_timeout=timedelta(seconds=10),
                id_reuse_policy=ActivityIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
            )
        assert err.value.activity_id == activity_id
        other_id = new_activity_id()
        failed = await client.start_activity(
            broken, "x", id=other_id, task_queue=task_queue,
            start_to_close_timeout=timedelta(seconds=10),
        )
        with pytest.raises(ActivityFailureError):
            await asyncio.wait_for(failed.result(), TIMEOUT)
        # Failed: the ID may be used again.
        again = await client.start_activity(
            double, 2, id=other_id, task_queue=task_queue,
            start_to_close_timeout=timedelta(seconds=10),
            id_reuse_policy=ActivityIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
        )
        assert again.run_id != failed.run_id
        assert await asyncio.wait_for(again.result(), TIMEOUT) == 4


async def test_list_and_count(client, task_queue):
    ids = [new_activity_id() for _ in range(3)]
    for activity_id in ids:
        await client.start_activity(
            double, 1, id=activity_id, task_queue=task_queue,
            schedule_to_close_timeout=timedelta(seconds=60),
        )
    await client.get_activity_handle(ids[0]).terminate(reason="one closed")
    pinned = " OR ".join(f"ActivityId = '{i}'" for i in ids)

    async def listed():
        found = [a async for a in client.list_activities(f"TaskQueue = '{task_queue}'")]
        assert sorted(a.activity_id for a in found) == sorted(ids)
        assert all(a.activity_type == "double" for a in found)
        statuses = {a.activity_id: a.status for a in found}
        assert statuses[ids[0]] == ActivityExecutionStatus.TERMINATED
        assert statuses[ids[1]] == ActivityExecutionStatus.RUNNING
        running = [a async for a in client.list_activities(
            f"ActivityType = 'double' AND ExecutionStatus = 'Running' AND TaskQueue = '{task_queue}'")]
        assert sorted(a.activity_id for a in running) == sorted(ids[1:])
        count = await client.count_activities(f"({pinned}) GROUP BY ExecutionStatus")
        assert count.count == 3
        groups = {tuple(g.group_values): g.count for g in count.groups}
        assert groups == {("Running",): 2, ("Terminated",): 1}
    await eventually(listed)

    # Workflows are not listed among activities.
    workflows = [a async for a in client.list_activities(f"WorkflowType = 'anything' AND TaskQueue = '{task_queue}'")]
    assert workflows == []
    with pytest.raises(RPCError) as rpc:
        await client.count_activities("NoSuchAttribute = 'x'")
    assert rpc.value.status == RPCStatusCode.INVALID_ARGUMENT


async def test_describe_long_poll_and_outcome_poll(client, task_queue):
    handle = await client.start_activity(
        double, 5, id=new_activity_id(), task_queue=task_queue,
        start_to_close_timeout=timedelta(seconds=10),
    )
    first = await client.workflow_service.describe_activity_execution(
        DescribeActivityExecutionRequest(namespace=client.namespace, activity_id=handle.id))
    assert first.long_poll_token
    waiting = asyncio.ensure_future(client.workflow_service.describe_activity_execution(
        DescribeActivityExecutionRequest(
            namespace=client.namespace, activity_id=handle.id, run_id=first.run_id,
            long_poll_token=first.long_poll_token, include_outcome=True)))
    await asyncio.sleep(1.0)
    assert not waiting.done(), "nothing changed: the long poll waits"
    async with Worker(client, task_queue=task_queue, activities=[double]):
        changed = await asyncio.wait_for(waiting, TIMEOUT)
        assert changed.info.status != 0
        assert changed.long_poll_token != first.long_poll_token
        polled = await asyncio.wait_for(client.workflow_service.poll_activity_execution(
            PollActivityExecutionRequest(namespace=client.namespace, activity_id=handle.id)), TIMEOUT)
        assert polled.run_id == handle.run_id and polled.outcome.HasField("result")
    # Run IDs are UUIDs; an unknown activity is NotFound.
    with pytest.raises(RPCError) as rpc:
        await client.workflow_service.describe_activity_execution(
            DescribeActivityExecutionRequest(namespace=client.namespace, activity_id=handle.id,
                                             run_id="not-a-uuid"))
    assert rpc.value.status == RPCStatusCode.INVALID_ARGUMENT
    with pytest.raises(RPCError) as rpc:
        await client.workflow_service.describe_activity_execution(
            DescribeActivityExecutionRequest(namespace=client.namespace, activity_id=new_activity_id()))
    assert rpc.value.status == RPCStatusCode.NOT_FOUND


async def test_start_checks(client, task_queue):
    activity_id = new_activity_id()

    def request(**fields):
        base = dict(namespace=client.namespace, activity_id=activity_id,
                    activity_type=ActivityType(name="double"),
                    task_queue=TaskQueue(name=task_queue), request_id=str(uuid.uuid4()),
                    start_to_close_timeout=Duration(seconds=10))
        base.update(fields)
        return StartActivityExecutionRequest(**base)

    async def refused(req) -> str:
        with pytest.raises(RPCError) as rpc:
            await client.workflow_service.start_activity_execution(req)
        assert rpc.value.status == RPCStatusCode.INVALID_ARGUMENT
        return rpc.value.message

    assert (await refused(request(start_to_close_timeout=None))).startswith(
        "a valid StartToCloseTimeout or ScheduleToCloseTimeout must be set on the activity.")
    assert await refused(request(activity_id="")) == "activityId is not set"
    assert await refused(request(activity_type=None)) == "activityType is not set"
    # A good start answers the run it created, and started; the same request again, the same run.
    req = request()
    first = await client.workflow_service.start_activity_execution(req)
    again = await client.workflow_service.start_activity_execution(req)
    assert first.started and first.run_id == again.run_id
    assert first.link.activity.activity_id == activity_id
    await client.get_activity_handle(activity_id).terminate(reason="done")


async def test_async_completion_by_activity_id(client, task_queue):
    """A worker hands the activity to someone else, who heartbeats and completes it by its
    activity ID and run ID (no workflow ID), or fails it."""
    async with Worker(client, task_queue=task_queue, activities=[completes_later]):
        for outcome in ("complete", "fail"):
            handle = await client.start_activity(
                completes_later, "x", id=new_activity_id(), task_queue=task_queue,
                start_to_close_timeout=timedelta(seconds=20),
                retry_policy=RetryPolicy(maximum_attempts=1),
            )

            async def started():
                desc = await handle.describe()
                assert desc.run_state == PendingActivityState.STARTED
            await eventually(started)
            by_id = client.get_async_activity_handle(activity_id=handle.id, run_id=handle.run_id)
            await by_id.heartbeat("halfway")
            desc = await handle.describe()
            assert desc.last_heartbeat_time is not None and desc.total_heartbeat_count == 1
            if outcome == "complete":
                await by_id.complete("finished elsewhere")
                assert await asyncio.wait_for(handle.result(), TIMEOUT) == "finished elsewhere"
            else:
                await by_id.fail(ApplicationError("gave up", non_retryable=True))
                with pytest.raises(ActivityFailureError) as err:
                    await asyncio.wait_for(handle.result(), TIMEOUT)
                assert err.value.cause.message == "gave up"
            # The activity is closed: another outcome is refused.
            closed_as = "Completed" if outcome == "complete" else "Failed"
            with pytest.raises(RPCError) as rpc:
                await by_id.complete("again")
            assert rpc.value.status == RPCStatusCode.FAILED_PRECONDITION
            assert rpc.value.message == f"invalid transition from {closed_as}"
            # Anything else finds no activity.
            for late in (by_id.fail(ApplicationError("again")), by_id.report_cancellation("late"),
                         by_id.heartbeat("late")):
                with pytest.raises(RPCError) as rpc:
                    await late
                assert rpc.value.status == RPCStatusCode.NOT_FOUND
                assert rpc.value.message == f"activity not found for ID: {handle.id}"


async def test_pause_and_unpause(client, task_queue):
    handle = await client.start_activity(
        double, 3, id=new_activity_id(), task_queue=task_queue,
        start_to_close_timeout=timedelta(seconds=10),
    )
    await handle.pause(reason="hold")
    desc = await handle.describe()
    assert desc.status == ActivityExecutionStatus.PAUSED
    assert desc.run_state == PendingActivityState.PAUSED
    async with Worker(client, task_queue=task_queue, activities=[double]):
        await asyncio.sleep(1.5)
        desc = await handle.describe()
        assert desc.status == ActivityExecutionStatus.PAUSED and desc.last_started_time is None
        with pytest.raises(RPCError) as rpc:
            await handle.pause(reason="again")
        assert rpc.value.status == RPCStatusCode.FAILED_PRECONDITION
        assert rpc.value.message == "activity is in non-pausable state Paused"
        await handle.unpause()
        assert await asyncio.wait_for(handle.result(), TIMEOUT) == 6
    with pytest.raises(RPCError) as rpc:
        await handle.pause()
    assert rpc.value.message == "activity is in non-pausable state Completed"
    with pytest.raises(RPCError) as rpc:
        await handle.unpause()
    assert rpc.value.status == RPCStatusCode.FAILED_PRECONDITION
    assert rpc.value.message == "activity is in terminal state Completed"
