"""A replicated history cluster loses a node: `chronicle server start-local-cluster` with three
history nodes, one matching node and two frontends, each its own process; the client and the
worker use different frontends. The node that founded the
cluster is killed with SIGKILL while workflows are mid-flight; the other two elect new leaders
and every workflow still completes exactly once.

Canaries measure the failover: CANARIES parked workflows (enough IDs to land on every shard) are
signalled in a loop through the whole test, and each canary's longest wait for an acknowledged
signal across the kill is its shard's unavailability as a client sees it (the SDK retries
through the election). The test prints their p50/p99/max (a measurement: only a canary that
never resumes fails it).

Skip with COMPAT_SKIP_DURABILITY=1."""

import asyncio
import os
import time
from collections import Counter
from datetime import timedelta

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

import workflows as wf
from conftest import IS_CHRONICLE, SERVER_KIND, SplitServer, new_id
from test_durability import SupervisedWorker

WORKFLOWS = int(os.environ.get("COMPAT_CLUSTER_WORKFLOWS", "40"))
CANARIES = int(os.environ.get("COMPAT_CLUSTER_CANARIES", "48"))


async def canary(client: Client, workflow_id: str, acks: list, stop: asyncio.Event) -> None:
    """Signals `workflow_id` back to back until `stop`, recording when each signal was acked."""
    handle = client.get_workflow_handle(workflow_id)
    while not stop.is_set():
        try:
            await handle.signal("poke")
            acks.append(time.monotonic())
        except Exception:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.02)


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

pytestmark = [
    pytest.mark.durability,
    pytest.mark.deadline(180),
    pytest.mark.skipif(SERVER_KIND == "chronicle-split",
                       reason="starts its own cluster: runs once, in the `chronicle` pass"),
    pytest.mark.skipif(not IS_CHRONICLE, reason="a Chronicle cluster"),
    pytest.mark.skipif(os.environ.get("COMPAT_SKIP_DURABILITY") == "1", reason="COMPAT_SKIP_DURABILITY=1"),
]


async def test_killing_the_leading_history_node_loses_nothing(tmp_path):
    effects = str(tmp_path / "effects")
    os.makedirs(effects)
    cluster = SplitServer(str(tmp_path / "cluster"), history_count=3)
    os.makedirs(cluster.log_dir)
    await asyncio.to_thread(cluster.start)
    try:
        client = await Client.connect(cluster.address)
        task_queue = new_id("tq-cluster")
        inputs = {new_id("cluster"): wf.DurableInput(directory=effects, amount=100 + i, timer_ms=1500 + 100 * (i % 7))
                  for i in range(WORKFLOWS)}
        # The worker polls through another frontend than the one the client starts workflows on.
        worker_client = await Client.connect(cluster.frontends[-1])
        worker = SupervisedWorker(worker_client, task_queue)
        # Canaries park on a queue no worker polls: a signal is a write on the canary's shard.
        canary_queue = new_id("tq-canary")
        canary_ids = [new_id(f"canary-{i}") for i in range(CANARIES)]
        await asyncio.gather(*(client.start_workflow(wf.WaitForeverWorkflow.run, id=cid, task_queue=canary_queue)
                               for cid in canary_ids))
        acks = {cid: [] for cid in canary_ids}
        stop_canaries = asyncio.Event()
        canaries = [asyncio.create_task(canary(client, cid, acks[cid], stop_canaries)) for cid in canary_ids]
        try:
            handles = await asyncio.wait_for(asyncio.gather(*(
                client.start_workflow(wf.DurableWorkflow.run, inp, id=wid, task_queue=task_queue,
                                      task_timeout=timedelta(seconds=3))
                for wid, inp in inputs.items())), 60)
            run_ids = {h.id: h.result_run_id for h in handles}
            await asyncio.sleep(0.5)
            cluster.histories[0].kill()
            killed_at = time.monotonic()
            results = await asyncio.wait_for(
                asyncio.gather(*(h.result() for h in handles), return_exceptions=True), 90)
            recovery = time.monotonic() - killed_at
            # Every canary must be acknowledged again after the kill.
            deadline = time.monotonic() + 60
            while any(not a or a[-1] <= killed_at for a in acks.values()) and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
        finally:
            stop_canaries.set()
            await asyncio.gather(*canaries, return_exceptions=True)
            await worker.close()

        stuck = [cid for cid, a in acks.items() if not a or a[-1] <= killed_at]
        assert not stuck, f"{len(stuck)} canaries never acknowledged after the kill, e.g. {stuck[0]}"
        # A canary's failover: its longest wait for an ack that spans the kill.
        gaps = []
        for a in acks.values():
            before = [t for t in a if t <= killed_at]
            after = [t for t in a if t > killed_at]
            since = before[-1] if before else killed_at
            gaps.append(after[0] - since)
        print(f"\ncluster: failover seen by {len(gaps)} canaries: p50 {percentile(gaps, 0.5):.2f}s "
              f"p99 {percentile(gaps, 0.99):.2f}s max {max(gaps):.2f}s")

        failures = {h.id: r for h, r in zip(handles, results) if isinstance(r, BaseException)}
        assert not failures, f"{len(failures)} workflows failed, e.g. {next(iter(failures.items()))}"
        for h, r in zip(handles, results):
            assert r == wf.durable_expected(inputs[h.id].amount), h.id

        for wid in inputs:
            events = [e async for e in client.get_workflow_handle(wid, run_id=run_ids[wid]).fetch_history_events()]
            assert [e.event_id for e in events] == list(range(1, len(events) + 1)), wid
            types = Counter(e.event_type for e in events)
            assert types[EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED] == 1, wid
            assert types[EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED] == 2, (wid, types)
            assert types[EventType.EVENT_TYPE_TIMER_FIRED] == 1, (wid, types)
            assert events[-1].event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED, wid
            times = [e.event_time.ToDatetime() for e in events]
            assert times == sorted(times), f"{wid}: event times go backwards across the failover"
        print(f"\ncluster: {WORKFLOWS} workflows completed {recovery:.1f}s after the leading history node was killed")
    finally:
        cluster.kill()
