"""UpdateActivityExecutionOptions and ResetActivityExecution of a standalone activity (named by
its activity ID, no workflow ID), as Temporal 1.32's dev server answers them: options are
updated, described and restored; a closed activity refuses both; the old workflow-activity
forms (UpdateActivityOptions, ResetActivity) need a workflow ID."""

import uuid
from datetime import timedelta

import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask
from temporalio.api.activity.v1 import ActivityOptions
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
from test_standalone_activity import TIMEOUT, double, new_activity_id


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
    if IS_CHRONICLE:
        # Not built: Temporal resets an open standalone activity (and defers the reset of a
        # running attempt), see docs/compatibility.md.
        assert (await refused(ws.reset_activity_execution(reset)))[0] == RPCStatusCode.UNIMPLEMENTED
    else:
        await ws.reset_activity_execution(reset)
    async with Worker(client, task_queue=task_queue, activities=[double]):
        assert await handle.result() == 6
    assert await refused(ws.reset_activity_execution(reset)) == (
        RPCStatusCode.FAILED_PRECONDITION, "activity execution is not running")
