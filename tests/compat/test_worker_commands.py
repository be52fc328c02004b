"""Worker commands: the server pushes an activity cancellation to the worker process running
the attempt (namespace capability `worker_commands`; SDK core polls its control queue
`temporal-sys/worker-commands/<namespace>/<key>` and names it in its activity polls).

The activity never heartbeats and has a start-to-close timeout of minutes, so without the push
nothing could tell it to stop within a test's time: a workflow's cancel request or the run's end
reaches it only through the worker-commands queue. As in Temporal (1.32, with
`system.enableCancelActivityWorkerCommand`), an activity's own timeout sends nothing: the SDK
cancels an attempt that outlived its timeout by itself, a few seconds later, as timed out.

Reference run: Temporal's dev server started with the two dynamic config values in conftest
(`WORKER_COMMANDS_FLAGS`)."""

import asyncio
from datetime import timedelta

import pytest
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.client import Client, WorkflowFailureError
from temporalio.worker import Worker

import worker_commands_raw as raw
import worker_commands_workflows as wc
from conftest import ServerProcess, new_id

# Long enough for a loaded machine, far below the activity's five-minute timeout (the SDK's own
# fallback would come after that plus its buffer).
PUSH_WAIT = 30


def worker(client: Client, task_queue: str) -> Worker:
    return Worker(client, task_queue=task_queue, workflows=wc.WORKFLOWS, activities=wc.ACTIVITIES)


async def wait_for(event, seconds: float, what: str) -> None:
    try:
        await asyncio.wait_for(event.wait(), seconds)
    except asyncio.TimeoutError:
        pytest.fail(f"{what} within {seconds} s")


async def test_namespace_advertises_worker_commands(client: Client):
    described = await client.workflow_service.describe_namespace(
        DescribeNamespaceRequest(namespace=client.namespace))
    capabilities = described.namespace_info.capabilities
    # SDK core polls its control queue only where both are advertised.
    assert capabilities.worker_heartbeats
    assert capabilities.worker_commands


async def test_the_capability_follows_frontend_worker_commands_enabled(tmp_path):
    """`frontend.WorkerCommandsEnabled=false` (Temporal's default) withdraws the capability, and
    with it SDK core's control queue."""
    srv = ServerProcess(str(tmp_path), worker_commands=False)
    srv.start()
    try:
        client = await Client.connect(srv.address)
        described = await client.workflow_service.describe_namespace(
            DescribeNamespaceRequest(namespace=client.namespace))
        assert described.namespace_info.capabilities.worker_heartbeats
        assert not described.namespace_info.capabilities.worker_commands
    finally:
        srv.stop()


async def test_cancel_request_reaches_a_running_activity_that_never_heartbeats(client: Client, task_queue: str):
    workflow_id = new_id("wc-cancel")
    attempt = wc.ATTEMPTS[workflow_id] = wc.Attempt()
    async with worker(client, task_queue):
        handle = await client.start_workflow(
            wc.CancelsItsActivity.run, id=workflow_id, task_queue=task_queue,
            execution_timeout=timedelta(minutes=2))
        await wait_for(attempt.started, PUSH_WAIT, "the activity did not start")
        await handle.signal(wc.CancelsItsActivity.cancel_activity)
        await wait_for(attempt.cancelled, PUSH_WAIT, "the worker was not told of the cancel request")
        assert attempt.details is not None and attempt.details.cancel_requested
        assert not attempt.details.timed_out
        # The workflow waited for the activity's own answer: its cancellation.
        assert await handle.result() == "CancelledError"


async def test_terminating_the_run_cancels_its_running_activity(client: Client, task_queue: str):
    workflow_id = new_id("wc-terminate")
    attempt = wc.ATTEMPTS[workflow_id] = wc.Attempt()
    async with worker(client, task_queue):
        handle = await client.start_workflow(
            wc.WaitsOnItsActivity.run, id=workflow_id, task_queue=task_queue)
        await wait_for(attempt.started, PUSH_WAIT, "the activity did not start")
        await handle.terminate("test")
        await wait_for(attempt.cancelled, PUSH_WAIT, "the worker was not told the run closed")
        assert attempt.details is not None and attempt.details.cancel_requested


async def test_cancelling_the_run_cancels_its_running_activity(client: Client, task_queue: str):
    """A workflow cancellation the workflow accepts closes the run as canceled (TRY_CANCEL:
    the workflow does not wait for its activity); the close reaches the attempt."""
    workflow_id = new_id("wc-wfcancel")
    attempt = wc.ATTEMPTS[workflow_id] = wc.Attempt()
    async with worker(client, task_queue):
        handle = await client.start_workflow(
            wc.WaitsOnItsActivity.run, id=workflow_id, task_queue=task_queue)
        await wait_for(attempt.started, PUSH_WAIT, "the activity did not start")
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await handle.result()
        await wait_for(attempt.cancelled, PUSH_WAIT, "the worker was not told of the cancellation")
        assert attempt.details is not None and attempt.details.cancel_requested


async def test_an_activity_timeout_is_left_to_the_worker(client: Client, task_queue: str):
    """No command on a start-to-close timeout (Temporal sends none): the SDK cancels the attempt
    it outlived by itself, as timed out rather than as a cancel request."""
    workflow_id = new_id("wc-timeout")
    attempt = wc.ATTEMPTS[workflow_id] = wc.Attempt()
    async with worker(client, task_queue):
        handle = await client.start_workflow(
            wc.OutlivesItsActivity.run, id=workflow_id, task_queue=task_queue)
        await wait_for(attempt.cancelled, PUSH_WAIT, "the SDK did not cancel the timed-out attempt")
        assert attempt.details is not None
        assert attempt.details.timed_out
        assert not attempt.details.cancel_requested
        await handle.signal(wc.OutlivesItsActivity.finish)
        assert await handle.result() == "TimeoutError"


async def test_the_commands_reach_only_the_control_queue_the_poll_named(client: Client, task_queue: str):
    """On the wire: the cancel request reaches the control queue named by the activity poll that
    started the attempt, once, as an ExecuteCommands Nexus start request carrying that poll's
    task token; the worker's answer is accepted and nothing more comes."""
    control = raw.control_queue(client.namespace)
    activity_queue = new_id("raw-tq")
    async with worker(client, task_queue):
        handle = await client.start_workflow(
            wc.CancelsActivityElsewhere.run, activity_queue, id=new_id("wc-raw"), task_queue=task_queue)
        token = await raw.poll_activity(client, activity_queue, control)
        # Another process's control queue gets nothing.
        assert await raw.poll_commands(client, raw.control_queue(client.namespace), timedelta(seconds=2)) is None
        await handle.signal(wc.CancelsActivityElsewhere.cancel_activity)
        task = await raw.poll_commands(client, control, timedelta(seconds=PUSH_WAIT))
        assert task is not None, "no commands on the control queue"
        commands_token, request = task
        assert [c.cancel_activity.task_token for c in request.commands] == [token]
        await raw.answer_commands(client, commands_token, len(request.commands))
        assert await raw.poll_commands(client, control, timedelta(seconds=3)) is None
        await handle.signal(wc.CancelsActivityElsewhere.finish)
        assert await handle.result() == "done"


@pytest.mark.deadline(180)
async def test_commands_nobody_takes_are_dropped(client: Client, task_queue: str):
    """Best effort: a control queue nobody polls (its worker process is gone) does not keep its
    commands. Temporal tries a dispatch 3 times, 10 s each; Chronicle keeps the row 30 s. A poll
    a minute later finds nothing, though the activity still runs as far as history knows."""
    control = raw.control_queue(client.namespace)
    activity_queue = new_id("raw-tq")
    async with worker(client, task_queue):
        handle = await client.start_workflow(
            wc.CancelsActivityElsewhere.run, activity_queue, id=new_id("wc-drop"), task_queue=task_queue)
        await raw.poll_activity(client, activity_queue, control)
        await handle.signal(wc.CancelsActivityElsewhere.cancel_activity)
        await asyncio.sleep(60)
        assert await raw.poll_commands(client, control, timedelta(seconds=5)) is None
        description = await handle.describe()
        assert description.raw_description.pending_activities, "the attempt is still pending"
        await handle.signal(wc.CancelsActivityElsewhere.finish)
        assert await handle.result() == "done"
