"""The cluster's failure behaviour under load, each scenario on its own
`chronicle server start-local-cluster --restart` (three history nodes, two matching nodes, two
frontends; the client starts workflows through the first frontend, the worker polls through the
second). Workflows keep being started while the fault happens; afterwards every acknowledged
start must complete with the right result, and the invariant checker (`invariants.py`) must hold:
exactly one close per run, contiguous event IDs, no activity completed twice, one run per ID,
and identical replicas at the same log index.

Bounded for CI (COMPAT_FAULT_SECONDS of load per scenario); a longer soak is the same test with
a larger value. Skip with COMPAT_SKIP_DURABILITY=1."""

import asyncio
import json
import os
import shutil
import subprocess
import signal
import time
import urllib.request
from datetime import timedelta
from typing import Awaitable, Callable, Dict, List, Optional

import pytest
from temporalio.client import Client

import workflows as wf
from conftest import IS_CHRONICLE, SERVER_KIND, SplitServer, chronicle_bin, new_id
from invariants import check_histories, check_replicas_agree
from test_durability import SupervisedWorker

# A task lost with a crashed node is handed out again after this. Long enough that a worker on a
# loaded machine (CI beside other builds) completes each attempt before it times out: with 3 s
# the attempts timed out one after another and the workflows never moved.
WORKFLOW_TASK_TIMEOUT = timedelta(seconds=10)

LOAD_SECONDS = float(os.environ.get("COMPAT_FAULT_SECONDS", "6"))

pytestmark = [
    pytest.mark.durability,
    pytest.mark.deadline(240),
    pytest.mark.skipif(SERVER_KIND == "chronicle-split",
                       reason="starts its own cluster: runs once, in the `chronicle` pass"),
    pytest.mark.skipif(not IS_CHRONICLE, reason="a Chronicle cluster"),
    pytest.mark.skipif(os.environ.get("COMPAT_SKIP_DURABILITY") == "1", reason="COMPAT_SKIP_DURABILITY=1"),
]


def ready(metrics_addr: str) -> bool:
    try:
        return urllib.request.urlopen(f"http://{metrics_addr}/health/ready", timeout=2).status == 200
    except Exception:
        return False


async def restarted(cluster: SplitServer, name: str, since: int, timeout: float = 60) -> None:
    """Waits for the supervisor to start `name` again (a `name pid=...` line after the first
    `since` lines) and for the new process to be ready."""
    def new_incarnation() -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in cluster.lines[since:]:
                if line.startswith(f"{name} pid="):
                    return line
            time.sleep(0.05)
        raise AssertionError(f"{name} was not restarted (supervisor exit status {cluster.proc.poll()}):\n"
                             + "\n".join(cluster.lines[since:]))

    line = await asyncio.to_thread(new_incarnation)
    metrics = dict(f.split("=", 1) for f in line.split()[1:])["metrics"]
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(ready, metrics):
        assert time.monotonic() < deadline, f"{name} not ready after its restart"
        await asyncio.sleep(0.2)


def replica_ids(cluster: SplitServer) -> set:
    """The voters of every group, which must be the same three nodes everywhere."""
    nodes = ",".join(n.fields["internal"] for n in cluster.histories)
    out = subprocess.run([chronicle_bin(), "cluster", "describe", "--json", "--nodes", nodes],
                         capture_output=True, timeout=30)
    voter_sets = {tuple(sorted(g["voters"])) for n in json.loads(out.stdout)["nodes"]
                  for g in n.get("groups", []) if g["state"] == "Leader"}
    assert len(voter_sets) == 1, f"groups disagree on their voters: {voter_sets}"
    return set(voter_sets.pop())


async def bounce(cluster: SplitServer, name: str, sig: int) -> None:
    """Sends `sig` to the node and waits until the supervisor restarted it and it is ready."""
    since = len(cluster.lines)
    os.kill(cluster.node(name).pid, sig)
    await restarted(cluster, name, since)


def assert_no_panics(cluster: SplitServer) -> None:
    """No process of the cluster panicked. A panic inside a Raft core (openraft stops a leader
    whose follower's log went back) is caught by its runtime and the node exits to restart: the
    workflows may still finish, so the invariants alone would not show it."""
    logs = os.path.join(cluster.log_dir, "cluster", "logs")
    for name in sorted(os.listdir(logs)):
        with open(os.path.join(logs, name), errors="replace") as f:
            for line in f:
                assert "panicked at" not in line, f"{name}: {line.strip()}"


async def under_load(tmp_path, fault: Callable[[SplitServer], Awaitable[None]],
                     restart: bool = True, history_count: int = 3,
                     extra_args: Optional[List[str]] = None) -> Dict[str, float]:
    effects = str(tmp_path / "effects")
    os.makedirs(effects)
    cluster = SplitServer(str(tmp_path / "cluster"), history_count=history_count, frontend_count=2,
                          restart=restart, extra_args=extra_args)
    os.makedirs(cluster.log_dir)
    await asyncio.to_thread(cluster.start)
    try:
        client = await Client.connect(cluster.frontends[0])
        worker_client = await Client.connect(cluster.frontends[-1])
        task_queue = new_id("tq-fault")
        worker = SupervisedWorker(worker_client, task_queue)
        amounts: Dict[str, int] = {}
        handles = []
        start_errors = []
        stop_load = asyncio.Event()

        async def load() -> None:
            i = 0
            while not stop_load.is_set():
                wid = new_id("fault")
                inp = wf.DurableInput(directory=effects, amount=100 + i, timer_ms=300 + 50 * (i % 7))
                try:
                    handles.append(await client.start_workflow(
                        wf.DurableWorkflow.run, inp, id=wid, task_queue=task_queue,
                        task_timeout=WORKFLOW_TASK_TIMEOUT))
                    amounts[wid] = inp.amount
                except Exception as e:  # not acknowledged: not owed a completion, but counted
                    start_errors.append(repr(e))
                i += 1
                await asyncio.sleep(0.05)

        try:
            loader = asyncio.create_task(load())
            await asyncio.sleep(1)
            began = time.monotonic()
            await fault(cluster)
            fault_seconds = time.monotonic() - began
            await asyncio.sleep(max(0.0, LOAD_SECONDS - fault_seconds))
            stop_load.set()
            await loader
            results = await asyncio.wait_for(
                asyncio.gather(*(h.result() for h in handles), return_exceptions=True), 120)
        finally:
            await worker.close()

        assert not start_errors, f"{len(start_errors)} starts failed, e.g. {start_errors[0]}"
        failures = {h.id: r for h, r in zip(handles, results) if isinstance(r, BaseException)}
        assert not failures, f"{len(failures)} of {len(handles)} workflows failed, e.g. {next(iter(failures.items()))}"
        for h, r in zip(handles, results):
            assert r == wf.durable_expected(amounts[h.id]), h.id
        await check_histories(client, {h.id: h.result_run_id for h in handles})
        await asyncio.to_thread(check_replicas_agree, cluster)
        assert_no_panics(cluster)
        print(f"\n{len(handles)} workflows started under the fault, all completed; replicas agree")
        return {"workflows": len(handles)}
    finally:
        cluster.kill()


async def test_follower_killed_and_restarted(tmp_path):
    async def fault(cluster: SplitServer) -> None:
        await bounce(cluster, "history-3", signal.SIGKILL)

    await under_load(tmp_path, fault)


async def test_matching_and_frontend_killed(tmp_path):
    async def fault(cluster: SplitServer) -> None:
        await bounce(cluster, "matching-1", signal.SIGKILL)
        # The worker's frontend: its polls fail until it is back on the same address.
        await bounce(cluster, "frontend-2", signal.SIGKILL)

    await under_load(tmp_path, fault)


async def test_rolling_restart_of_every_node(tmp_path):
    async def fault(cluster: SplitServer) -> None:
        for name in ["history-1", "history-2", "history-3", "matching-1", "frontend-1", "frontend-2"]:
            await bounce(cluster, name, signal.SIGTERM)
            # Let elections settle before the next node goes: never two history nodes down.
            await asyncio.sleep(0.5)

    await under_load(tmp_path, fault)


async def test_wiped_node_rejoins_as_a_new_node(tmp_path):
    async def fault(cluster: SplitServer) -> None:
        victim = cluster.node("history-3")
        old = replica_ids(cluster)
        since = len(cluster.lines)
        # Lose the disk: the supervisor restarts the node on an empty directory; it comes back
        # with a new node ID and takes the lost node's place in every group.
        # The supervisor is stopped meanwhile, so it cannot start the node again on the old
        # data before the directory is gone.
        os.kill(cluster.proc.pid, signal.SIGSTOP)
        try:
            victim.kill()
            await asyncio.sleep(0.5)  # dead (a zombie until the supervisor reaps it)
            shutil.rmtree(os.path.join(cluster.log_dir, "cluster", "history-3"))
        finally:
            os.kill(cluster.proc.pid, signal.SIGCONT)
        await restarted(cluster, "history-3", since, timeout=120)
        line = await asyncio.to_thread(cluster.wait_for_line, lambda l: "replaces lost node" in l, 60)
        assert "fresh data directory" in line
        # The groups change one after another; the supervisor says when the last one has.
        await asyncio.to_thread(
            cluster.wait_for_line, lambda l: "place in every group" in l, 180)
        new = replica_ids(cluster)
        assert len(new) == 3 and len(new & old) == 2, f"voters before {old}, after {new}"

    await under_load(tmp_path, fault)


def describe(cluster: SplitServer) -> dict:
    nodes = ",".join(n.fields["internal"] for n in cluster.histories)
    out = subprocess.run([chronicle_bin(), "cluster", "describe", "--json", "--nodes", nodes],
                         capture_output=True, timeout=60)
    assert out.returncode == 0, out
    return json.loads(out.stdout)


def placement_problems(report: dict, dead: int) -> list:
    """Why the groups are not yet all on live nodes: each group (shards and the metadata group)
    must have three voters, none of them `dead`, every live holder agreeing on them, and `dead`
    must be recorded DEAD in the member list."""
    problems = []
    states = {m["node_id"]: m["state"] for m in report["members"]}
    if states.get(dead) != "dead":
        problems.append(f"node {dead} is {states.get(dead)}, not dead")
    groups: dict = {}
    for node in report["nodes"]:
        for g in node.get("groups", []):
            groups.setdefault(g["group"], {})[node["node_id"]] = g
    for name in [str(s) for s in range(SplitServer.NUM_SHARDS)] + ["meta"]:
        holders = groups.get(name, {})
        leaders = [g for g in holders.values() if g["state"] == "Leader"]
        if len(leaders) != 1:
            problems.append(f"group {name}: {len(leaders)} leaders")
            continue
        voters = set(leaders[0]["voters"])
        members = voters | set(leaders[0]["learners"])
        if len(voters) != 3 or dead in members:
            problems.append(f"group {name}: voters {sorted(voters)}, learners {leaders[0]['learners']}")
        # A shard's replicas are its voters; the metadata group also has every other active node
        # as a learner (here none: three live nodes, three voters).
        if set(holders) != voters:
            problems.append(f"group {name}: held by {sorted(holders)}, voters {sorted(voters)}")
    return problems


async def test_dead_node_replicas_move_to_the_live_nodes(tmp_path):
    """Four history nodes; the metadata group's leader is killed for good (kill -9, never
    restarted). After the dead-node timeout the new metadata leader declares it dead and moves
    every replica it held to the three live nodes, one group at a time, while workflows keep
    being started; then the invariant checker."""
    async def fault(cluster: SplitServer) -> None:
        report = await asyncio.to_thread(describe, cluster)
        assert [m["state"] for m in report["members"]] == ["active"] * 4, report["members"]
        meta_leader = next(n for n in report["nodes"]
                           if any(g["group"] == "meta" and g["state"] == "Leader" for g in n.get("groups", [])))
        victim_id = meta_leader["node_id"]
        held = [g["group"] for g in meta_leader["groups"] if g["group"] != "meta"]
        victim = next(n for n in cluster.histories if n.fields["internal"] == meta_leader["address"])
        victim.kill()
        killed = time.monotonic()
        # Not before the timeout: a node back within it would be left alone.
        await asyncio.sleep(1.5)
        early = await asyncio.to_thread(describe, cluster)
        assert {m["node_id"]: m["state"] for m in early["members"]}[victim_id] == "active", early["members"]
        problems = ["not looked yet"]
        while problems:
            assert time.monotonic() - killed < 75, f"replicas of dead node {victim_id} not moved: {problems}"
            await asyncio.sleep(1)
            problems = placement_problems(await asyncio.to_thread(describe, cluster), victim_id)
        logs = os.path.join(cluster.log_dir, "cluster", "logs")
        text = "".join(open(os.path.join(logs, f), errors="replace").read() for f in os.listdir(logs))
        assert "history node declared dead" in text and str(victim_id) in text
        print(f"\nnode {victim_id} (held shards {held}) declared dead; its replicas moved in "
              f"{time.monotonic() - killed:.1f} s after kill -9")

    await under_load(tmp_path, fault, restart=False, history_count=4,
                     extra_args=["--dead-node-timeout", "4s"])


async def test_a_wiped_node_back_after_it_was_declared_dead_joins_as_a_new_node(tmp_path):
    """Four history nodes; one loses its disk and stays away past the dead-node timeout, so its
    replicas are rebuilt on the three others. When it comes back on an empty directory there is
    no lost member left for it to replace: it joins as a new node, and the placement moves some
    replicas to it."""
    async def fault(cluster: SplitServer) -> None:
        victim = cluster.node("history-4")
        report = await asyncio.to_thread(describe, cluster)
        victim_id = next(n["node_id"] for n in report["nodes"] if n["address"] == victim.fields["internal"])
        since = len(cluster.lines)
        # The supervisor would start the node again at once: it is stopped until the node was
        # declared dead and its disk is gone.
        os.kill(cluster.proc.pid, signal.SIGSTOP)
        try:
            victim.kill()
            await asyncio.sleep(0.5)
            shutil.rmtree(os.path.join(cluster.log_dir, "cluster", "history-4"))
            problems = ["not looked yet"]
            deadline = time.monotonic() + 75
            while problems:
                assert time.monotonic() < deadline, f"replicas of dead node {victim_id} not moved: {problems}"
                await asyncio.sleep(1)
                problems = placement_problems(await asyncio.to_thread(describe, cluster), victim_id)
        finally:
            os.kill(cluster.proc.pid, signal.SIGCONT)
        await restarted(cluster, "history-4", since, timeout=120)
        line = await asyncio.to_thread(cluster.wait_for_line, lambda l: "joined the cluster as a new node" in l, 90)
        new_id = int(line.split("node ")[1].split()[0])
        assert new_id != victim_id, line
        # The new node is an active member, and the placement gives it replicas.
        deadline = time.monotonic() + 90
        while True:
            report = await asyncio.to_thread(describe, cluster)
            states = {m["node_id"]: m["state"] for m in report["members"]}
            held = next((n.get("groups", []) for n in report["nodes"] if n["node_id"] == new_id), [])
            if states.get(new_id) == "active" and any(g["group"] != "meta" for g in held):
                break
            assert time.monotonic() < deadline, f"new node {new_id}: {states}, holds {held}"
            await asyncio.sleep(1)
        assert states[victim_id] == "dead", states

    await under_load(tmp_path, fault, history_count=4, extra_args=["--dead-node-timeout", "4s"])
