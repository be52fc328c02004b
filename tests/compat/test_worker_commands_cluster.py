"""Worker commands across a leader change: a cancel request's commands, written to the
outbox and not yet taken by any poll, are still delivered, once, after every history and
matching node of a `start-local-cluster --restart` was killed with SIGKILL and restarted: every
shard elected a new leader, and the only copy left was the outbox row, which the new leader
handed to matching again.

Chronicle only: Temporal has no such cluster here, and the behaviour on one server is covered
by test_worker_commands.py, checked against Temporal."""

import asyncio
import os
import signal
import time
from datetime import timedelta

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.worker import Worker

import worker_commands_raw as raw
import worker_commands_workflows as wc
from conftest import IS_CHRONICLE, SERVER_KIND, SplitServer, new_id
from test_faults import restarted

pytestmark = [
    pytest.mark.durability,
    pytest.mark.deadline(240),
    pytest.mark.skipif(SERVER_KIND == "chronicle-split",
                       reason="starts its own cluster: runs once, in the `chronicle` pass"),
    pytest.mark.skipif(not IS_CHRONICLE, reason="a Chronicle cluster"),
    pytest.mark.skipif(os.environ.get("COMPAT_SKIP_DURABILITY") == "1", reason="COMPAT_SKIP_DURABILITY=1"),
]


async def cancel_requested(handle) -> bool:
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_CANCEL_REQUESTED:
            return True
    return False


async def test_commands_not_yet_taken_survive_a_restart_of_every_history_and_matching_node(tmp_path):
    cluster = SplitServer(str(tmp_path / "cluster"), history_count=3, frontend_count=1, restart=True)
    os.makedirs(cluster.log_dir)
    await asyncio.to_thread(cluster.start)
    try:
        client = await Client.connect(cluster.frontends[0])
        task_queue, activity_queue = new_id("tq-wc"), new_id("raw-tq")
        control = raw.control_queue(client.namespace)
        async with Worker(client, task_queue=task_queue, workflows=wc.WORKFLOWS, activities=wc.ACTIVITIES):
            handle = await client.start_workflow(
                wc.CancelsActivityElsewhere.run, activity_queue, id=new_id("wc-restart"),
                task_queue=task_queue)
            token = await raw.poll_activity(client, activity_queue, control)
            await handle.signal(wc.CancelsActivityElsewhere.cancel_activity)
            deadline = time.monotonic() + 30
            while not await cancel_requested(handle):
                assert time.monotonic() < deadline, "the cancel request was not recorded"
                await asyncio.sleep(0.2)
            # Nobody polled the control queue yet: the commands wait in the outbox (and in
            # matching, whose copy dies with it).
            since = len(cluster.lines)
            victims = [n for n in cluster.nodes if n.name.startswith(("history-", "matching-"))]
            for node in victims:
                os.kill(node.pid, signal.SIGKILL)
            for node in victims:
                await restarted(cluster, node.name, since)
            task = None
            deadline = time.monotonic() + 30
            while task is None and time.monotonic() < deadline:
                task = await raw.poll_commands(client, control, timedelta(seconds=5))
            assert task is not None, "the commands were lost with the old leaders"
            commands_token, request = task
            assert [c.cancel_activity.task_token for c in request.commands] == [token]
            await raw.answer_commands(client, commands_token, len(request.commands))
            assert await raw.poll_commands(client, control, timedelta(seconds=3)) is None
            await handle.signal(wc.CancelsActivityElsewhere.finish)
            assert await handle.result() == "done"
    finally:
        cluster.kill()
