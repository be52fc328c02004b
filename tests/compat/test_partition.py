"""A network partition isolates one history node under load. Each history node runs in its own
network namespace, joined to the others by a bridge (veth pairs); taking the isolated node's link
down cuts it off from everyone, in both directions, as a switch failure would. The matching node
and the frontend stay outside.

While cut off, the isolated node must commit nothing (the applied index of each of its groups,
read from inside its namespace, stays put) while the majority keeps starting and completing
workflows; after the link comes back the node catches up, and the invariant checker holds for
every workflow and every replica (equal state digests at equal applied index).

Needs root (network namespaces and a bridge); skipped otherwise. Skip with
COMPAT_SKIP_DURABILITY=1."""

import asyncio
import json
import os
import random
import shutil
import subprocess
import time
from datetime import timedelta
from typing import Dict, List

import pytest
from temporalio.client import Client

import workflows as wf
from conftest import IS_CHRONICLE, SERVER_KIND, NodeHandle, _die_with_parent, chronicle_bin, free_port, new_id
from invariants import check_histories, check_replicas_agree
from test_durability import SupervisedWorker

LOAD_SECONDS = float(os.environ.get("COMPAT_FAULT_SECONDS", "6"))


def can_make_namespaces() -> bool:
    return os.geteuid() == 0 and shutil.which("ip") is not None


pytestmark = [
    pytest.mark.durability,
    pytest.mark.deadline(240),
    pytest.mark.skipif(SERVER_KIND == "chronicle-split",
                       reason="starts its own cluster: runs once, in the `chronicle` pass"),
    pytest.mark.skipif(not IS_CHRONICLE, reason="a Chronicle cluster"),
    pytest.mark.skipif(not can_make_namespaces(), reason="needs root and iproute2 for network namespaces"),
    pytest.mark.skipif(os.environ.get("COMPAT_SKIP_DURABILITY") == "1", reason="COMPAT_SKIP_DURABILITY=1"),
]


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


class NetnsCluster:
    """Three history nodes in namespaces `<tag>h1..3` on bridge `<tag>br` (10.231.N.0/24), a
    matching node on the bridge's host address and a frontend on loopback."""

    def __init__(self, work: str):
        self.work = work
        self.tag = f"chr{random.randrange(16**4):04x}"
        self.subnet = random.randrange(100, 250)
        self.host_ip = f"10.231.{self.subnet}.1"
        self.procs: List[subprocess.Popen] = []
        self.histories: List[NodeHandle] = []
        self.namespaces = [f"{self.tag}h{i}" for i in (1, 2, 3)]

    def node_ip(self, i: int) -> str:
        return f"10.231.{self.subnet}.{10 + i}"

    def link(self, i: int) -> str:
        return f"{self.tag}v{i}"

    def _network(self) -> None:
        bridge = f"{self.tag}br"
        ip("link", "add", bridge, "type", "bridge")
        ip("addr", "add", f"{self.host_ip}/24", "dev", bridge)
        ip("link", "set", bridge, "up")
        for i, ns in enumerate(self.namespaces, start=1):
            ip("netns", "add", ns)
            ip("link", "add", self.link(i), "type", "veth", "peer", "name", "eth0", "netns", ns)
            ip("link", "set", self.link(i), "master", bridge, "up")
            ip("-n", ns, "addr", "add", f"{self.node_ip(i)}/24", "dev", "eth0")
            ip("-n", ns, "link", "set", "eth0", "up")
            ip("-n", ns, "link", "set", "lo", "up")

    def _spawn(self, name: str, cmd: List[str]) -> subprocess.Popen:
        log = open(os.path.join(self.work, f"{name}.log"), "ab")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                preexec_fn=_die_with_parent)
        self.procs.append(proc)
        return proc

    def start(self) -> None:
        self._network()
        matching = f"{self.host_ip}:{free_port()}"
        histories = [f"{self.node_ip(i)}:7234" for i in (1, 2, 3)]
        for i, ns in enumerate(self.namespaces, start=1):
            proc = self._spawn(f"history-{i}", [
                "ip", "netns", "exec", ns, chronicle_bin(), "server", "start", "--role", "history",
                "--replicated", "--num-shards", "4", "--internal-addr", histories[i - 1],
                "--metrics-port", "7235", "--data-dir", os.path.join(self.work, f"h{i}"),
                "--matching-addr", matching, "--log-level", "warn"])
            self.histories.append(NodeHandle(
                f"history-{i} pid={proc.pid} internal={histories[i - 1]} "
                f"log={os.path.join(self.work, f'history-{i}.log')}"))
        self._spawn("matching", [chronicle_bin(), "server", "start", "--role", "matching", "--internal-addr",
                                 matching, "--history-addr", ",".join(histories), "--log-level", "warn"])
        init = subprocess.run([chronicle_bin(), "cluster", "init", "--nodes", ",".join(histories),
                               "--num-shards", "4"], capture_output=True, timeout=60)
        assert init.returncode == 0, init.stderr.decode()
        self.frontend = f"127.0.0.1:{free_port()}"
        self._spawn("frontend", [chronicle_bin(), "server", "start", "--role", "frontend", "--frontend-addr",
                                 self.frontend, "--history-addr", ",".join(histories), "--matching-addr",
                                 matching, "--log-level", "warn"])

    def view_from_inside(self, i: int) -> Dict[str, dict]:
        """Node i's own view of its groups, asked from inside its namespace (it may be cut off)."""
        out = subprocess.run(["ip", "netns", "exec", self.namespaces[i - 1], chronicle_bin(), "cluster",
                              "describe", "--json", "--nodes", f"{self.node_ip(i)}:7234"],
                             capture_output=True, timeout=30)
        node = json.loads(out.stdout)["nodes"][0]
        return {g["group"]: g for g in node["groups"]}

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for ns in self.namespaces:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", f"{self.tag}br"], capture_output=True)


async def wait_ready(address: str) -> Client:
    deadline = time.monotonic() + 60
    while True:
        try:
            client = await Client.connect(address)
            await client.count_workflows()
            return client
        except Exception:
            assert time.monotonic() < deadline, "the cluster did not get ready"
            await asyncio.sleep(0.3)


async def test_partitioned_history_node_commits_nothing_and_catches_up(tmp_path):
    cluster = NetnsCluster(str(tmp_path))
    try:
        await asyncio.to_thread(cluster.start)
        client = await wait_ready(cluster.frontend)
        effects = str(tmp_path / "effects")
        os.makedirs(effects)
        task_queue = new_id("tq-partition")
        worker = SupervisedWorker(client, task_queue)
        handles, amounts = [], {}
        stop_load = asyncio.Event()

        async def load() -> None:
            i = 0
            while not stop_load.is_set():
                wid = new_id("part")
                inp = wf.DurableInput(directory=effects, amount=100 + i, timer_ms=300 + 50 * (i % 7))
                handles.append(await client.start_workflow(wf.DurableWorkflow.run, inp, id=wid,
                                                           task_queue=task_queue,
                                                           task_timeout=timedelta(seconds=3)))
                amounts[wid] = inp.amount
                i += 1
                await asyncio.sleep(0.05)

        try:
            loader = asyncio.create_task(load())
            await asyncio.sleep(1.5)
            before = await asyncio.to_thread(cluster.view_from_inside, 3)
            assert any(g["state"] == "Leader" for g in before.values()), \
                f"node 3 leads nothing, the partition would not test failover: {before}"
            ip("link", "set", cluster.link(3), "down")
            cut_at = time.monotonic()
            started_before_cut = len(handles)
            await asyncio.sleep(max(LOAD_SECONDS, 4))
            # The minority committed nothing since it was cut off (anything applied after the
            # cut is what was already committed before it; give it a moment to settle first).
            during = await asyncio.to_thread(cluster.view_from_inside, 3)
            await asyncio.sleep(2)
            later = await asyncio.to_thread(cluster.view_from_inside, 3)
            for group, g in later.items():
                assert g["last_applied_index"] == during[group]["last_applied_index"], \
                    f"group {group} applied entries on the isolated node: {during[group]} -> {g}"
            assert len(handles) > started_before_cut + 10, "the majority stopped taking starts"
            ip("link", "set", cluster.link(3), "up")
            healed_at = time.monotonic()
            stop_load.set()
            await loader
            results = await asyncio.wait_for(
                asyncio.gather(*(h.result() for h in handles), return_exceptions=True), 120)
        finally:
            await worker.close()
        failures = {h.id: r for h, r in zip(handles, results) if isinstance(r, BaseException)}
        assert not failures, f"{len(failures)} of {len(handles)} failed, e.g. {next(iter(failures.items()))}"
        for h, r in zip(handles, results):
            assert r == wf.durable_expected(amounts[h.id]), h.id
        await check_histories(client, {h.id: h.result_run_id for h in handles})
        # The healed node catches up: all three replicas reach the same index and state.
        await asyncio.to_thread(check_replicas_agree, cluster)
        print(f"\n{len(handles)} workflows; partitioned {healed_at - cut_at:.1f}s; replicas agree after healing")
    finally:
        await asyncio.to_thread(cluster.stop)
