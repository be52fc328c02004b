"""Server CPU per 3-activity workflow: Chronicle start-dev against `temporal server start-dev`,
side by side in one run, with the same Python SDK worker and client.

    python benches/cpu_per_workflow.py --chronicle target/release/chronicle --workflows 500

Server CPU is read from /proc/<pid>/stat (user + system) around the measured batch; the worker
and client run in this process and are not counted. The figure is a ratio, never a pass/fail.
"""

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import Worker


@activity.defn
async def step(x: int) -> int:
    return x + 1


@workflow.defn
class ThreeSteps:
    @workflow.run
    async def run(self, x: int) -> int:
        for _ in range(3):
            x = await workflow.execute_activity(step, x, start_to_close_timeout=timedelta(seconds=30))
        return x


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its reaped children, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = sum(int(v) for v in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def start_server(kind: str, chronicle_bin: str, data_dir: str):
    port = free_port()
    if kind == "chronicle":
        cmd = [chronicle_bin, "server", "start-dev", "--ip", "127.0.0.1", "-p", str(port), "--data-dir", data_dir, "--log-level", "warn"]
    else:
        temporal = shutil.which("temporal") or os.path.join(os.path.dirname(sys.executable), "temporal")
        cmd = [temporal, "server", "start-dev", "--headless", "--ip", "127.0.0.1", "--port", str(port),
               "--http-port", str(free_port()), "--metrics-port", str(free_port()), "--ui-port", str(free_port()),
               "--db-filename", os.path.join(data_dir, "temporal.db"), "--log-level", "error"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, f"127.0.0.1:{port}"


async def connect(address: str) -> Client:
    deadline = time.monotonic() + 60
    while True:
        try:
            return await Client.connect(address)
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def measure(kind: str, chronicle_bin: str, workflows: int, concurrency: int) -> dict:
    data_dir = tempfile.mkdtemp(prefix=f"bench-{kind}-")
    proc, address = start_server(kind, chronicle_bin, data_dir)
    try:
        client = await connect(address)
        task_queue = f"bench-{uuid.uuid4()}"
        async with Worker(client, task_queue=task_queue, workflows=[ThreeSteps], activities=[step],
                          max_concurrent_workflow_tasks=concurrency, max_concurrent_activities=concurrency):
            async def run_batch(n: int):
                sem = asyncio.Semaphore(concurrency)

                async def one(i: int):
                    async with sem:
                        r = await client.execute_workflow(ThreeSteps.run, i, id=f"wf-{uuid.uuid4()}", task_queue=task_queue)
                        assert r == i + 3

                await asyncio.gather(*(one(i) for i in range(n)))

            await run_batch(20)  # warm-up: connections, caches, JIT-free but page cache warm
            cpu_before = cpu_seconds(proc.pid)
            started = time.monotonic()
            await run_batch(workflows)
            wall = time.monotonic() - started
            cpu_after = cpu_seconds(proc.pid)
            return {
                "server": kind,
                "cpu_ms_per_workflow": (cpu_after - cpu_before) * 1000 / workflows,
                "workflows_per_s": workflows / wall,
                "rss_mib": rss_mib(proc.pid),
            }
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(data_dir, ignore_errors=True)


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--chronicle", default=os.environ.get("CHRONICLE_BIN", "target/release/chronicle"))
    parser.add_argument("--workflows", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=20)
    args = parser.parse_args()
    results = [await measure(kind, args.chronicle, args.workflows, args.concurrency) for kind in ("chronicle", "temporal")]
    print(f"{'server':<10} {'CPU ms/workflow':>16} {'workflows/s':>12} {'RSS MiB':>8}")
    for r in results:
        print(f"{r['server']:<10} {r['cpu_ms_per_workflow']:>16.2f} {r['workflows_per_s']:>12.1f} {r['rss_mib']:>8.0f}")
    c, t = results
    print(f"ratio chronicle/temporal: CPU per workflow {c['cpu_ms_per_workflow'] / t['cpu_ms_per_workflow']:.2f}x, "
          f"throughput {c['workflows_per_s'] / t['workflows_per_s']:.2f}x, RSS {c['rss_mib'] / t['rss_mib']:.2f}x")


if __name__ == "__main__":
    asyncio.run(main())
