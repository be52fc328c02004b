"""`chronicle server start-local-cluster`, `chronicle cluster describe` and `server start
--config`, as an operator uses them: a supervisor that reports a dead child and keeps the rest
serving, stops every child on Ctrl-C, comes back on the same addresses from the same directory,
and a describe that shows every shard's leader and the node that is down.

Chronicle only: Temporal has no such commands."""

import asyncio
import json
import os
import signal
import subprocess
import time
from datetime import timedelta

import pytest
from temporalio.api.operatorservice.v1 import ListClustersRequest
from temporalio.api.workflowservice.v1 import GetClusterInfoRequest
from temporalio.client import Client
from temporalio.worker import Worker

import workflows as wf
from conftest import IS_CHRONICLE, SERVER_KIND, SplitServer, chronicle_bin, free_port, new_id

pytestmark = [
    pytest.mark.skipif(SERVER_KIND == "chronicle-split",
                       reason="starts its own cluster: runs once, in the `chronicle` pass"),
    pytest.mark.skipif(not IS_CHRONICLE, reason="Chronicle's cluster commands"),
    pytest.mark.deadline(150),
]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped) is not alive either.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


def describe(cluster: SplitServer) -> str:
    nodes = ",".join(n.fields["internal"] for n in cluster.histories)
    out = subprocess.run([chronicle_bin(), "cluster", "describe", "--nodes", nodes],
                         capture_output=True, timeout=30)
    return out.stdout.decode()


def wait_for_line(cluster: SplitServer, needle: str, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(cluster.log_path, errors="replace") as f:
            for line in f:
                if needle in line:
                    return line
        time.sleep(0.1)
    raise AssertionError(f"{needle!r} not in the supervisor's output:\n{open(cluster.log_path).read()}")


async def run_timer_workflow(client: Client, worker_client: Client) -> str:
    task_queue = new_id("tq-local")
    async with Worker(worker_client, task_queue=task_queue, workflows=[wf.TimerWorkflow]):
        return await client.execute_workflow(wf.TimerWorkflow.run, 0.2, id=new_id("local"),
                                             task_queue=task_queue,
                                             execution_timeout=timedelta(seconds=60))


async def test_a_dead_child_is_reported_the_rest_serve_and_ctrl_c_stops_all(tmp_path):
    cluster = SplitServer(str(tmp_path), history_count=3, frontend_count=2)
    await asyncio.to_thread(cluster.start)
    try:
        assert [n.name for n in cluster.nodes] == [
            "history-1", "history-2", "history-3", "matching-1", "matching-2", "frontend-1", "frontend-2"]
        assert len(set(cluster.frontends)) == 2
        client = await Client.connect(cluster.frontends[0])
        worker_client = await Client.connect(cluster.frontends[1])
        assert await run_timer_workflow(client, worker_client)

        table = describe(cluster)
        # `cluster init` minted one random cluster ID, which every node stored.
        cluster_line = table.splitlines()[0].split()
        assert cluster_line[0] == "CLUSTER" and len(cluster_line) == 2, table
        assert len(cluster_line[1]) == 36 and cluster_line[1].count("-") == 4, table
        # Every frontend reports it (GetClusterInfo, ListClusters), as the nodes stored it.
        for c in (client, worker_client):
            info = await c.workflow_service.get_cluster_info(GetClusterInfoRequest())
            assert info.cluster_id == cluster_line[1], info
            listed = await c.operator_service.list_clusters(ListClustersRequest())
            assert [m.cluster_id for m in listed.clusters] == [cluster_line[1]]
        groups = [line.split() for line in table.splitlines() if line[:1].isdigit() or line.startswith("meta")]
        assert len(groups) == SplitServer.NUM_SHARDS + 1, table
        assert all(g[1] in ("n1", "n2", "n3") for g in groups), f"a group without a leader:\n{table}"
        assert all(g[3] == "n1,n2,n3" for g in groups), f"a group without three voters:\n{table}"

        # `cluster init` again is harmless (an init Job may run on every upgrade).
        nodes = ",".join(n.fields["internal"] for n in cluster.histories)
        again = subprocess.run([chronicle_bin(), "cluster", "init", "--nodes", nodes, "--num-shards",
                                str(SplitServer.NUM_SHARDS)], capture_output=True, timeout=60)
        assert again.returncode == 0 and b"already initialised" in again.stdout, again
        assert describe(cluster).count("n1,n2,n3") == SplitServer.NUM_SHARDS + 1

        victim = cluster.histories[1]
        victim.kill()
        line = wait_for_line(cluster, f"{victim.name} (pid {victim.pid}) exited (signal 9)")
        assert "keep serving" in line
        # The others still serve (any shard the victim led fails over), through either frontend.
        assert await run_timer_workflow(worker_client, client)
        table = describe(cluster)
        assert "n2    ?" in table and "unreachable" in table, table
        assert not alive(victim.pid), "the supervisor restarted a child without --restart"

        others = [n for n in cluster.nodes if n is not victim]
        assert all(alive(n.pid) for n in others)
        cluster.stop()  # SIGINT, as Ctrl-C in a terminal
        assert cluster.proc.returncode == 0
        wait_for_line(cluster, "stopped")
        deadline = time.monotonic() + 5
        while any(alive(n.pid) for n in others) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [n.name for n in others if alive(n.pid)], "children outlived the supervisor"

        # The same directory brings the same cluster back on the same addresses.
        first_addresses = [n.fields.get("internal") or n.fields.get("frontend") for n in cluster.nodes]
        again = SplitServer(str(tmp_path), history_count=3, frontend_count=2)
        await asyncio.to_thread(again.start)
        try:
            assert [n.fields.get("internal") or n.fields.get("frontend") for n in again.nodes] == first_addresses
            assert "cluster initialised" not in open(again.log_path).read().split("ready ")[-2], \
                "an existing cluster was initialised again"
            client = await Client.connect(again.frontends[0])
            assert await run_timer_workflow(client, client)
        finally:
            again.kill()
    finally:
        cluster.kill()


def test_other_counts_on_an_existing_directory_are_refused(tmp_path):
    data_dir = tmp_path / "cluster"
    data_dir.mkdir()
    (data_dir / "local-cluster.json").write_text(
        '{"num_shards": 4, "nodes": [{"name": "history-1", "role": "history", "frontend": null,'
        ' "internal": "127.0.0.11:1", "metrics": "127.0.0.11:2"}]}')
    out = subprocess.run([chronicle_bin(), "server", "start-local-cluster", "--data-dir", str(data_dir),
                          "--history", "3", "--num-shards", "4"], capture_output=True, timeout=30)
    assert out.returncode == 1
    assert b"holds a cluster of 1 history" in out.stderr, out.stderr


def test_start_reads_a_toml_config_that_flags_override(tmp_path):
    port, metrics = free_port(), free_port()
    config = tmp_path / "chronicle.toml"
    config.write_text(f"""
role = ["history", "matching", "frontend"]
frontend_addr = "127.0.0.1:1"
data_dir = "{tmp_path / 'data'}"
metrics_port = {metrics}
namespaces = ["orders"]
""")
    log = open(tmp_path / "node.log", "wb")
    proc = subprocess.Popen([chronicle_bin(), "server", "start", "--config", str(config),
                             "--frontend-addr", f"127.0.0.1:{port}"],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        async def check() -> None:
            deadline = time.monotonic() + 30
            while True:
                try:
                    client = await Client.connect(f"127.0.0.1:{port}")
                    break
                except Exception:
                    assert proc.poll() is None, open(tmp_path / "node.log").read()
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.2)
            # The namespace named in the file exists: the file was read, the flag won the port.
            from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
            deadline = time.monotonic() + 10
            while True:
                try:
                    await client.workflow_service.describe_namespace(DescribeNamespaceRequest(namespace="orders"))
                    return
                except Exception:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.2)

        asyncio.run(check())
        import urllib.request
        assert urllib.request.urlopen(f"http://127.0.0.1:{metrics}/health/live", timeout=5).status == 200
        assert (tmp_path / "data").is_dir()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)

    bad = tmp_path / "bad.toml"
    bad.write_text('frontend_adress = "127.0.0.1:7233"\n')
    out = subprocess.run([chronicle_bin(), "server", "start", "--config", str(bad)], capture_output=True, timeout=30)
    assert out.returncode == 2
    assert b"frontend_adress" in out.stderr, out.stderr


async def test_a_cluster_recorded_with_one_matching_node_starts_again_as_it_was(tmp_path):
    """Clusters made before the matching ring have one matching node in their layout; started
    again without --matching they keep it (and serve), rather than refusing the directory."""
    first = SplitServer(str(tmp_path), history_count=1, frontend_count=1, matching_count=1)
    await asyncio.to_thread(first.start)
    try:
        assert [n.name for n in first.nodes if n.name.startswith("matching")] == ["matching-1"]
    finally:
        await asyncio.to_thread(first.stop)
    again = SplitServer(str(tmp_path), history_count=1, frontend_count=1)
    again.matching_count = None
    await asyncio.to_thread(again.start)
    try:
        assert [n.name for n in again.nodes if n.name.startswith("matching")] == ["matching-1"]
        client = await Client.connect(again.frontends[0])
        assert await run_timer_workflow(client, client)
    finally:
        again.kill()


async def test_json_logs_name_their_node_on_every_line_of_every_role(tmp_path):
    """Operators grep one stream holding every node's lines: with --log-format json, each line of
    each child is a JSON object whose `node` is the child's name, on every role; and no workflow
    payload reaches a log."""
    cluster = SplitServer(str(tmp_path), history_count=3, frontend_count=1,
                          extra_args=["--log-format", "json", "--log-level", "info"])
    await asyncio.to_thread(cluster.start)
    marker = new_id("payload-never-logged")
    try:
        client = await Client.connect(cluster.frontends[0])
        task_queue = new_id("tq-logs")
        async with Worker(client, task_queue=task_queue, workflows=[wf.OrderWorkflow],
                          activities=[wf.reserve_stock, wf.charge_payment, wf.ship_order]):
            result = await client.execute_workflow(
                wf.OrderWorkflow.run, wf.Order(marker, 2, 150), id=new_id("logs"),
                task_queue=task_queue, execution_timeout=timedelta(seconds=60))
        assert result.tracking == f"tracking-{marker}"
    finally:
        await asyncio.to_thread(cluster.stop)
    roles = set()
    for node in cluster.nodes:
        with open(node.log_path, errors="replace") as f:
            lines = [line for line in f if line.strip()]
        assert lines, f"{node.name} wrote no log line"
        for line in lines:
            parsed = json.loads(line)
            assert parsed.get("node") == node.name, f"{node.name}: {line}"
            assert "level" in parsed and "fields" in parsed, line
            assert marker not in line, f"{node.name} logged a payload: {line}"
        roles.add(node.name.split("-")[0])
    assert roles == {"history", "matching", "frontend"}
