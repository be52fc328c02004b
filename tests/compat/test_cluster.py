"""A replicated history cluster loses a node: `chronicle server start-local-cluster` with three
history nodes, one matching node and two frontends, each its own process; the client and the
worker use different frontends. The node that founded the
cluster (and so first leads every group) is killed with SIGKILL while workflows are mid-flight;
the other two elect new leaders and every workflow still completes exactly once.

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
        finally:
            await worker.close()

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
