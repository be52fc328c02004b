"""Placement of history replicas over more nodes than a group has voters: `chronicle server
start-local-cluster --history 4` founds a cluster where each shard is a Raft group of exactly
three voters on distinct nodes (placed by a consistent-hash ring over the members), the
metadata group has three voters and the fourth node as a learner, and frontends, which know
every history node only as a seed, still reach each shard's leader: a node that does not hold a
shard names the nodes that do.

Skip with COMPAT_SKIP_DURABILITY=1."""

import asyncio
import json
import os
import subprocess
from datetime import timedelta

import pytest
from temporalio.client import Client

import invariants
import workflows as wf
from conftest import IS_CHRONICLE, SERVER_KIND, SplitServer, chronicle_bin, new_id
from test_durability import SupervisedWorker

WORKFLOWS = int(os.environ.get("COMPAT_PLACEMENT_WORKFLOWS", "16"))

pytestmark = [
    pytest.mark.durability,
    pytest.mark.deadline(240),
    pytest.mark.skipif(SERVER_KIND == "chronicle-split",
                       reason="starts its own cluster: runs once, in the `chronicle` pass"),
    pytest.mark.skipif(not IS_CHRONICLE, reason="a Chronicle cluster"),
    pytest.mark.skipif(os.environ.get("COMPAT_SKIP_DURABILITY") == "1", reason="COMPAT_SKIP_DURABILITY=1"),
]


def describe_json(cluster: SplitServer) -> dict:
    nodes = ",".join(n.fields["internal"] for n in cluster.histories)
    out = subprocess.run([chronicle_bin(), "cluster", "describe", "--json", "--nodes", nodes],
                         capture_output=True, timeout=60)
    assert out.returncode == 0, out
    return json.loads(out.stdout)


def replicas_by_group(report: dict) -> dict:
    """Group name -> {node ID: the group's status on that node}, from the nodes that hold it."""
    groups: dict = {}
    for node in report["nodes"]:
        for g in node.get("groups", []):
            groups.setdefault(g["group"], {})[node["node_id"]] = g
    return groups


async def run_workflows(client: Client, worker_client: Client, count: int) -> dict:
    """Starts `count` workflows (activities and a timer) and waits for each result."""
    effects = os.path.join(os.environ.get("TMPDIR", "/tmp"), new_id("effects"))
    os.makedirs(effects)
    task_queue = new_id("tq-placement")
    inputs = {new_id("placement"): wf.DurableInput(directory=effects, amount=100 + i, timer_ms=300 + 50 * (i % 5))
              for i in range(count)}
    worker = SupervisedWorker(worker_client, task_queue)
    try:
        handles = await asyncio.wait_for(asyncio.gather(*(
            client.start_workflow(wf.DurableWorkflow.run, inp, id=wid, task_queue=task_queue,
                                  task_timeout=timedelta(seconds=3))
            for wid, inp in inputs.items())), 60)
        results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), 120)
    finally:
        await worker.close()
    for h, r in zip(handles, results):
        assert r == wf.durable_expected(inputs[h.id].amount), h.id
    return {h.id: h.result_run_id for h in handles}


async def test_four_history_nodes_hold_three_replicas_of_each_shard(tmp_path):
    cluster = SplitServer(str(tmp_path / "cluster"), history_count=4)
    os.makedirs(cluster.log_dir)
    await asyncio.to_thread(cluster.start)
    try:
        report = describe_json(cluster)
        node_ids = [n["node_id"] for n in report["nodes"]]
        assert len(set(node_ids)) == 4, report
        assert len({n["cluster_id"] for n in report["nodes"]}) == 1, "one cluster ID on every node"
        groups = replicas_by_group(report)
        shards = [str(s) for s in range(SplitServer.NUM_SHARDS)]
        assert sorted(groups) == sorted(shards + ["meta"]), groups.keys()
        hosting = {n: 0 for n in node_ids}
        for shard in shards:
            holders = groups[shard]
            # Exactly three replicas, on distinct nodes, and they agree on the three voters.
            assert len(holders) == 3, (shard, holders.keys())
            voters = {tuple(sorted(g["voters"])) for g in holders.values()}
            assert voters == {tuple(sorted(holders))}, (shard, voters)
            assert all(not g["learners"] for g in holders.values()), shard
            for n in holders:
                hosting[n] += 1
        # 4 shards x 3 replicas over 4 nodes: no node holds every shard, none holds none... is
        # what an even ring gives; what must hold is that some node lacks some shard.
        assert min(hosting.values()) < SplitServer.NUM_SHARDS, hosting
        meta = groups["meta"]
        assert len(meta) == 4, "every node holds the metadata group"
        meta_voters = {tuple(sorted(g["voters"])) for g in meta.values()}
        assert len(meta_voters) == 1 and len(next(iter(meta_voters))) == 3, meta_voters
        learners = {tuple(g["learners"]) for g in meta.values()}
        assert len(learners) == 1 and len(next(iter(learners))) == 1, learners

        # Workflows on every shard run to completion through either frontend.
        client = await Client.connect(cluster.frontends[0])
        worker_client = await Client.connect(cluster.frontends[-1])
        run_ids = await run_workflows(client, worker_client, WORKFLOWS)
        await invariants.check_histories(client, run_ids)
        invariants.check_replicas_agree(cluster)
    finally:
        cluster.kill()
