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
from conftest import IS_CHRONICLE, SERVER_KIND, SplitServer, chronicle_bin, free_port, new_id
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
        # 12 replicas over 4 nodes: some node lacks some shard (and answers for it with a hint).
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


def cluster_nodes(cluster: SplitServer) -> str:
    return ",".join(n.fields["internal"] for n in cluster.histories)


async def steady_load(client: Client, worker_client: Client, stop: asyncio.Event) -> dict:
    """Starts a few workflows a second until `stop`, then waits for every result."""
    effects = os.path.join(os.environ.get("TMPDIR", "/tmp"), new_id("effects"))
    os.makedirs(effects)
    task_queue = new_id("tq-steady")
    worker = SupervisedWorker(worker_client, task_queue)
    handles, inputs = [], {}
    try:
        while not stop.is_set():
            wid = new_id("steady")
            inputs[wid] = wf.DurableInput(directory=effects, amount=len(inputs) + 1, timer_ms=500)
            handles.append(await client.start_workflow(
                wf.DurableWorkflow.run, inputs[wid], id=wid, task_queue=task_queue,
                task_timeout=timedelta(seconds=3)))
            await asyncio.sleep(0.25)
        results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), 120)
    finally:
        await worker.close()
    for h, r in zip(handles, results):
        assert r == wf.durable_expected(inputs[h.id].amount), h.id
    return {h.id: h.result_run_id for h in handles}


def check_three_replicas(report: dict, allowed: set) -> dict:
    """Every shard has exactly three voters, on distinct nodes among `allowed`; returns how many
    shards each node holds."""
    groups = replicas_by_group(report)
    hosting: dict = {}
    for shard in range(SplitServer.NUM_SHARDS):
        holders = groups.get(str(shard), {})
        assert len(holders) == 3 and set(holders) <= allowed, (shard, holders.keys(), allowed)
        for g in holders.values():
            assert set(g["voters"]) == set(holders) and not g["learners"], (shard, g)
        for n in holders:
            hosting[n] = hosting.get(n, 0) + 1
    return hosting


async def test_draining_a_node_under_load_moves_its_replicas_and_loses_nothing(tmp_path):
    cluster = SplitServer(str(tmp_path / "cluster"), history_count=4)
    os.makedirs(cluster.log_dir)
    await asyncio.to_thread(cluster.start)
    try:
        report = describe_json(cluster)
        ids = [n["node_id"] for n in report["nodes"]]
        assert [m["state"] for m in report["members"]] == ["active"] * 4, report["members"]
        victim = ids[1]
        victim_before = next(n for n in report["nodes"] if n["node_id"] == victim)
        held_before = {g["group"] for g in victim_before["groups"]}
        assert "meta" in held_before and held_before <= set(victim_before["groups_with_data"]), victim_before
        client = await Client.connect(cluster.frontends[0])
        worker_client = await Client.connect(cluster.frontends[-1])
        stop = asyncio.Event()
        load = asyncio.create_task(steady_load(client, worker_client, stop))
        await asyncio.sleep(1.5)
        drain = await asyncio.to_thread(
            subprocess.run, [chronicle_bin(), "cluster", "drain", "--nodes", cluster_nodes(cluster),
                             str(victim), "--wait-secs", "150"], capture_output=True, timeout=170)
        assert drain.returncode == 0, drain
        assert b"is drained" in drain.stdout, drain
        await asyncio.sleep(1.5)
        stop.set()
        run_ids = await load
        assert len(run_ids) >= 5, len(run_ids)

        report = describe_json(cluster)
        states = {m["node_id"]: m["state"] for m in report["members"]}
        assert states[victim] == "drained" and sum(s == "active" for s in states.values()) == 3, states
        drained = next(n for n in report["nodes"] if n["node_id"] == victim)
        assert drained.get("groups") == [], f"the drained node still holds {drained.get('groups')}"
        # Its replicas' data is deleted as they are dropped, without a restart.
        left = held_before & set(drained["groups_with_data"])
        assert not left, f"the drained node still stores data of the groups it held: {left}"
        check_three_replicas(report, set(ids) - {victim})
        meta = replicas_by_group(report)["meta"]
        assert victim not in meta and len(meta) == 3, meta.keys()

        # Three active nodes are the least: another drain is refused, and says why.
        again = subprocess.run([chronicle_bin(), "cluster", "drain", "--nodes", cluster_nodes(cluster),
                                str(ids[0])], capture_output=True, timeout=60)
        assert again.returncode != 0 and b"would leave 2 active history nodes" in again.stderr, again

        await invariants.check_histories(client, run_ids)
        invariants.check_replicas_agree(cluster)
    finally:
        cluster.kill()


async def test_adding_a_node_to_three_moves_some_replicas_to_it(tmp_path):
    cluster = SplitServer(str(tmp_path / "cluster"), history_count=3)
    os.makedirs(cluster.log_dir)
    await asyncio.to_thread(cluster.start)
    extra = None
    try:
        # Every matching node, as the cluster's own history nodes know them: a shorter list gives
        # this node another view of the ring (its tasks are then passed on by matching).
        matching = ",".join(n.fields["internal"] for n in cluster.nodes if n.name.startswith("matching"))
        addr = f"127.0.0.1:{free_port()}"
        log = open(os.path.join(cluster.log_dir, "history-extra.log"), "wb")
        extra = subprocess.Popen(
            [chronicle_bin(), "server", "start", "--role", "history", "--replicated",
             "--num-shards", str(SplitServer.NUM_SHARDS), "--internal-addr", addr,
             "--data-dir", str(tmp_path / "extra"), "--matching-addr", matching],
            stdout=log, stderr=log)
        added = subprocess.run([chronicle_bin(), "cluster", "add-node", "--nodes", cluster_nodes(cluster),
                                "--add", addr], capture_output=True, timeout=90)
        assert added.returncode == 0, added
        nodes = cluster_nodes(cluster) + "," + addr

        def describe_all() -> dict:
            out = subprocess.run([chronicle_bin(), "cluster", "describe", "--json", "--nodes", nodes],
                                 capture_output=True, timeout=60)
            return json.loads(out.stdout)

        deadline = asyncio.get_running_loop().time() + 120
        while True:
            report = await asyncio.to_thread(describe_all)
            new_id_ = next(n["node_id"] for n in report["nodes"] if n["address"] == addr)
            try:
                hosting = check_three_replicas(report, {n["node_id"] for n in report["nodes"]})
                meta = replicas_by_group(report)["meta"]
                if hosting.get(new_id_, 0) > 0 and new_id_ in meta and all(
                        len(holders) == 3 for holders in [h for g, h in replicas_by_group(report).items()
                                                          if g != "meta"]):
                    break
            except AssertionError:
                pass
            assert asyncio.get_running_loop().time() < deadline, json.dumps(report)[:3000]
            await asyncio.sleep(1)
        # Replicas moved: the new node holds some, the total stays three per shard, so the three
        # founders gave up as many as it took.
        assert hosting[new_id_] > 0 and sum(hosting.values()) == 3 * SplitServer.NUM_SHARDS, hosting
        assert len(hosting) == 4, hosting
        assert {m["node_id"]: m["state"] for m in report["members"]}[new_id_] == "active"

        client = await Client.connect(cluster.frontends[0])
        worker_client = await Client.connect(cluster.frontends[-1])
        run_ids = await run_workflows(client, worker_client, WORKFLOWS)
        await invariants.check_histories(client, run_ids)

        # Drained again, the new node gives its groups back to the founders, which dropped their
        # replicas of those groups when it arrived: each opens its group anew and catches up,
        # without a restart.
        def dropped_by_founders(report: dict) -> set:
            return {(n["node_id"], g) for n in report["nodes"] if n["node_id"] != new_id_
                    for g in n.get("dropped_groups", [])}
        deadline = asyncio.get_running_loop().time() + 60
        while not dropped_by_founders(report := await asyncio.to_thread(describe_all)):
            assert asyncio.get_running_loop().time() < deadline, json.dumps(report)[:3000]
            await asyncio.sleep(1)
        drain = await asyncio.to_thread(
            subprocess.run, [chronicle_bin(), "cluster", "drain", "--nodes", nodes, str(new_id_),
                             "--wait-secs", "150"], capture_output=True, timeout=170)
        assert drain.returncode == 0 and b"is drained" in drain.stdout, drain
        report = await asyncio.to_thread(describe_all)
        check_three_replicas(report, {n["node_id"] for n in report["nodes"]} - {new_id_})
        assert not dropped_by_founders(report), dropped_by_founders(report)
        more = await run_workflows(client, worker_client, WORKFLOWS)
        await invariants.check_histories(client, {**run_ids, **more})
        invariants.check_replicas_agree(cluster)
    finally:
        if extra is not None:
            extra.kill()
        cluster.kill()
