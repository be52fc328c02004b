"""Reading a long history end to end: Chronicle start-dev against `temporal server start-dev`,
side by side in one run, with the official Python SDK as the client.

    python benches/long_history.py --chronicle target/release/chronicle --events 51200

Each server gets one workflow whose history holds about EVENTS events, Temporal's default
history count limit: a workflow that upserts its memo in batches of 1,000 per workflow task
(one event each), with a short timer between batches, then waits for a signal that never comes
(signalling one run 51,200 times takes Temporal's dev server about eight minutes). Then the whole history is read with GetWorkflowExecutionHistory page by
page (the SDK's `fetch_history_events`, pages of the server's default size) and again with
GetWorkflowExecutionHistoryReverse; each read is repeated and the median reported. The figures
are ratios for docs/benchmarks.md, never a pass/fail.
"""

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import timedelta

from temporalio import workflow
from temporalio.worker import Worker
from temporalio.api.workflowservice.v1 import GetWorkflowExecutionHistoryReverseRequest
from temporalio.api.common.v1 import WorkflowExecution

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cpu_per_workflow import connect, cpu_seconds, start_server  # noqa: E402


BATCH = 1000


@workflow.defn
class LongHistory:
    def __init__(self) -> None:
        self.done = False

    @workflow.run
    async def run(self, events: int) -> None:
        # Events so far: started, and the first task's scheduled, started and completed (the
        # completed lands with the commands). Each batch adds BATCH upserts and a timer (started,
        # fired) followed by a workflow task (scheduled, started, completed): BATCH + 5.
        written = 4
        i = 0
        while written + BATCH + 5 <= events:
            for _ in range(BATCH):
                workflow.upsert_memo({"i": i})
                i += 1
            await workflow.sleep(timedelta(milliseconds=1))
            written += BATCH + 5
        await workflow.wait_condition(lambda: self.done)

    @workflow.signal
    def finish(self) -> None:
        self.done = True


async def fill(client, events: int) -> tuple:
    """Starts the workflow and waits until its history has stopped growing."""
    task_queue = f"long-{uuid.uuid4()}"
    async with Worker(client, task_queue=task_queue, workflows=[LongHistory],
                      max_cached_workflows=10):
        started = time.monotonic()
        handle = await client.start_workflow(
            LongHistory.run, events, id=f"long-{uuid.uuid4()}", task_queue=task_queue,
            run_timeout=timedelta(hours=1),
        )
        expected = 4 + ((events - 4) // (BATCH + 5)) * (BATCH + 5)
        while True:
            desc = await handle.describe()
            if desc.raw_description.workflow_execution_info.history_length >= expected:
                break
            await asyncio.sleep(0.2)
        return handle.id, handle.result_run_id, time.monotonic() - started


async def read_forward(client, workflow_id: str, run_id: str) -> int:
    handle = client.get_workflow_handle(workflow_id, run_id=run_id)
    count = 0
    async for _ in handle.fetch_history_events():
        count += 1
    return count


async def read_reverse(client, workflow_id: str, run_id: str) -> int:
    count, token = 0, b""
    while True:
        page = await client.workflow_service.get_workflow_execution_history_reverse(
            GetWorkflowExecutionHistoryReverseRequest(
                namespace=client.namespace,
                execution=WorkflowExecution(workflow_id=workflow_id, run_id=run_id),
                next_page_token=token,
            )
        )
        count += len(page.history.events)
        token = page.next_page_token
        if not token:
            return count


async def measure(kind: str, chronicle_bin: str, events: int, repeat: int) -> dict:
    data_dir = tempfile.mkdtemp(prefix=f"bench-long-{kind}-")
    proc, address = start_server(kind, chronicle_bin, data_dir)
    try:
        client = await connect(address)
        workflow_id, run_id, fill_s = await fill(client, events)
        forward, reverse, cpu = [], [], []
        count = rcount = 0
        for _ in range(repeat):
            before = cpu_seconds(proc.pid)
            started = time.monotonic()
            count = await read_forward(client, workflow_id, run_id)
            forward.append(time.monotonic() - started)
            cpu.append(cpu_seconds(proc.pid) - before)
            started = time.monotonic()
            rcount = await read_reverse(client, workflow_id, run_id)
            reverse.append(time.monotonic() - started)
        return {
            "server": kind,
            "events": count,
            "reverse_events": rcount,
            "fill_events_per_s": count / fill_s,
            "forward_ms": statistics.median(forward) * 1000,
            "reverse_ms": statistics.median(reverse) * 1000,
            "server_cpu_ms_forward": statistics.median(cpu) * 1000,
        }
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except Exception:
            proc.kill()
        shutil.rmtree(data_dir, ignore_errors=True)


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--chronicle", default=os.environ.get("CHRONICLE_BIN", "target/release/chronicle"))
    parser.add_argument("--events", type=int, default=51200)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    results = [
        await measure(kind, args.chronicle, args.events, args.repeat)
        for kind in ("chronicle", "temporal")
    ]
    print(f"{'server':<10} {'events':>7} {'read ms':>8} {'reverse ms':>11} {'server CPU ms':>14} {'filled ev/s':>12}")
    for r in results:
        print(f"{r['server']:<10} {r['events']:>7} {r['forward_ms']:>8.0f} {r['reverse_ms']:>11.0f} "
              f"{r['server_cpu_ms_forward']:>14.0f} {r['fill_events_per_s']:>12.0f}")
    c, t = results
    print(f"ratio chronicle/temporal: read time {c['forward_ms'] / t['forward_ms']:.2f}x, "
          f"reverse {c['reverse_ms'] / t['reverse_ms']:.2f}x, "
          f"server CPU per read {c['server_cpu_ms_forward'] / t['server_cpu_ms_forward']:.2f}x")


if __name__ == "__main__":
    asyncio.run(main())
