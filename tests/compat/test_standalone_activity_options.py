"""UpdateActivityExecutionOptions and ResetActivityExecution of a standalone activity (named by
its activity ID, no workflow ID), as Temporal 1.32's dev server answers them: options are
updated, described and restored; a closed activity refuses both; the old workflow-activity
forms (UpdateActivityOptions, ResetActivity) need a workflow ID."""

import asyncio
import uuid
from datetime import timedelta

import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask
from temporalio.api.activity.v1 import ActivityOptions
from temporalio import activity
from temporalio.api.enums.v1 import PendingActivityState
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError
from temporalio.api.workflowservice.v1 import (
    DescribeActivityExecutionRequest,
    ResetActivityExecutionRequest,
    ResetActivityRequest,
    UpdateActivityExecutionOptionsRequest,
    UpdateActivityOptionsRequest,
)
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Worker

from conftest import IS_CHRONICLE
from test_standalone_activity import TIMEOUT, double, eventually, new_activity_id


def options(**seconds):
    return ActivityOptions(**{name: Duration(seconds=s) for name, s in seconds.items()})


async def refused(call):
    with pytest.raises(RPCError) as rpc:
        await call
    return rpc.value.status, rpc.value.message


async def test_update_options_of_a_standalone_activity(client, task_queue):
    activity_id = new_activity_id()
    handle = await client.start_activity(
        double, 3, id=activity_id, task_queue=task_queue,
        start_to_close_timeout=timedelta(seconds=10),
    )
    ws, ns = client.workflow_service, client.namespace

    def update(**kwargs):
        return ws.update_activity_execution_options(UpdateActivityExecutionOptionsRequest(
            namespace=ns, activity_id=activity_id, identity="ops", **kwargs))

    updated = await update(
        activity_options=options(start_to_close_timeout=20, heartbeat_timeout=3),
        update_mask=FieldMask(paths=["start_to_close_timeout", "heartbeat_timeout"]))
    assert updated.activity_options.start_to_close_timeout.seconds == 20
    assert updated.activity_options.heartbeat_timeout.seconds == 3
    assert updated.activity_options.task_queue.name == task_queue
    described = await ws.describe_activity_execution(
        DescribeActivityExecutionRequest(namespace=ns, activity_id=activity_id))
    assert described.info.start_to_close_timeout.seconds == 20
    assert described.info.heartbeat_timeout.seconds == 3

    restored = await update(restore_original=True)
    assert restored.activity_options.start_to_close_timeout.seconds == 10
    assert restored.activity_options.heartbeat_timeout.seconds == 0

    assert await refused(update(activity_options=options(start_to_close_timeout=20))) == (
        RPCStatusCode.INVALID_ARGUMENT, "UpdateMask is not provided")
    assert await refused(update(update_mask=FieldMask(paths=["start_to_close_timeout"]))) == (
        RPCStatusCode.INVALID_ARGUMENT, "ActivityOptions are not provided")
    missing = new_activity_id()
    assert await refused(ws.update_activity_execution_options(UpdateActivityExecutionOptionsRequest(
        namespace=ns, activity_id=missing, activity_options=options(start_to_close_timeout=20),
        update_mask=FieldMask(paths=["start_to_close_timeout"])))) == (
        RPCStatusCode.NOT_FOUND, f"activity not found for ID: {missing}")
    # The workflow-activity form needs the workflow.
    assert await refused(ws.update_activity_options(UpdateActivityOptionsRequest(
        namespace=ns, id=activity_id, activity_options=options(start_to_close_timeout=20),
        update_mask=FieldMask(paths=["start_to_close_timeout"])))) == (
        RPCStatusCode.INVALID_ARGUMENT, "WorkflowId is not set on request.")

    async with Worker(client, task_queue=task_queue, activities=[double]):
        assert await handle.result() == 6
    assert await refused(update(activity_options=options(start_to_close_timeout=20),
                                update_mask=FieldMask(paths=["start_to_close_timeout"]))) == (
        RPCStatusCode.FAILED_PRECONDITION, "Cannot update options for activity in state Completed")


async def test_reset_of_a_standalone_activity(client, task_queue):
    activity_id = new_activity_id()
    handle = await client.start_activity(
        double, 3, id=activity_id, task_queue=task_queue,
        start_to_close_timeout=timedelta(seconds=10),
    )
    ws, ns = client.workflow_service, client.namespace
    reset = ResetActivityExecutionRequest(namespace=ns, activity_id=activity_id, identity="ops")
    assert await refused(ws.reset_activity(ResetActivityRequest(namespace=ns, id=activity_id))) == (
        RPCStatusCode.INVALID_ARGUMENT, "WorkflowId is not set on request.")
    assert await refused(ws.reset_activity_execution(ResetActivityExecutionRequest(namespace=ns))) == (
        RPCStatusCode.INVALID_ARGUMENT, "activity ID is required")
    missing = new_activity_id()
    assert await refused(ws.reset_activity_execution(ResetActivityExecutionRequest(
        namespace=ns, activity_id=missing))) == (
        RPCStatusCode.NOT_FOUND, f"activity not found for ID: {missing}")
    await ws.reset_activity_execution(reset)
    async with Worker(client, task_queue=task_queue, activities=[double]):
        assert await handle.result() == 6
    assert await refused(ws.reset_activity_execution(reset)) == (
        RPCStatusCode.FAILED_PRECONDITION, "activity execution is not running")


runs: dict = {}


@activity.defn
async def fails_twice_then_runs_until_reset(key: str) -> str:
    """Attempts 1 and 2 fail; the third heartbeats until the reset reaches it (the SDK cancels
    it, and fails the attempt); whatever runs after that answers with its attempt."""
    info = activity.info()
    runs.setdefault(key, []).append((info.attempt, list(info.heartbeat_details)))
    if len(runs[key]) <= 2:
        raise ApplicationError(f"run {len(runs[key])} fails")
    if len(runs[key]) == 3:
        while True:
            activity.heartbeat("progress")
            await asyncio.sleep(0.2)
    return f"attempt {info.attempt}"


@activity.defn
async def fails_once(key: str) -> str:
    info = activity.info()
    runs.setdefault(key, []).append((info.attempt, list(info.heartbeat_details)))
    if len(runs[key]) == 1:
        raise ApplicationError("first run fails")
    return f"attempt {info.attempt}"


async def describe_attempt(client, activity_id):
    d = await client.workflow_service.describe_activity_execution(
        DescribeActivityExecutionRequest(namespace=client.namespace, activity_id=activity_id))
    return d.info.attempt, d.info.run_state


async def test_reset_of_a_running_standalone_activity_waits_for_its_attempt(client, task_queue):
    """As Temporal: the attempt that runs is left alone (describe still shows it), its heartbeats
    tell the worker, a second reset is refused while the first waits (the same request ID
    again is not), and once that attempt fails the next one is attempt 1, at once, without the
    heartbeat details."""
    activity_id = new_activity_id()
    handle = await client.start_activity(
        fails_twice_then_runs_until_reset, activity_id, id=activity_id, task_queue=task_queue,
        start_to_close_timeout=timedelta(seconds=30), heartbeat_timeout=timedelta(seconds=2),
        retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=100), backoff_coefficient=1.0))
    ws, ns = client.workflow_service, client.namespace

    def reset(request_id):
        return ws.reset_activity_execution(ResetActivityExecutionRequest(
            namespace=ns, activity_id=activity_id, identity="ops", request_id=request_id,
            reset_heartbeat=True))

    async with Worker(client, task_queue=task_queue, activities=[fails_twice_then_runs_until_reset]):
        async def third_attempt_runs():
            assert len(runs.get(activity_id, [])) == 3
            assert await describe_attempt(client, activity_id) == (3, PendingActivityState.PENDING_ACTIVITY_STATE_STARTED)
        await eventually(third_attempt_runs)
        await reset("first")
        assert (await describe_attempt(client, activity_id))[0] == 3
        await reset("first")
        assert await refused(reset("second")) == (
            RPCStatusCode.FAILED_PRECONDITION, "cannot reset an activity with a pending reset")
        assert await asyncio.wait_for(handle.result(), TIMEOUT) == "attempt 1"
    assert [attempt for attempt, _ in runs[activity_id]] == [1, 2, 3, 1]
    assert runs[activity_id][3][1] == []


async def test_reset_of_a_standalone_activity_waiting_for_a_retry_dispatches_attempt_1(client, task_queue):
    activity_id = new_activity_id()
    handle = await client.start_activity(
        fails_once, activity_id, id=activity_id, task_queue=task_queue,
        start_to_close_timeout=timedelta(seconds=30),
        retry_policy=RetryPolicy(initial_interval=timedelta(hours=1)))
    async with Worker(client, task_queue=task_queue, activities=[fails_once]):
        async def backing_off():
            assert len(runs.get(activity_id, [])) == 1
            assert await describe_attempt(client, activity_id) == (2, PendingActivityState.PENDING_ACTIVITY_STATE_SCHEDULED)
        await eventually(backing_off)
        await client.workflow_service.reset_activity_execution(ResetActivityExecutionRequest(
            namespace=client.namespace, activity_id=activity_id, identity="ops"))
        # Without the reset the retry would wait an hour.
        assert await asyncio.wait_for(handle.result(), TIMEOUT) == "attempt 1"
