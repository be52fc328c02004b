"""The invariant checker the fault tests run after every scenario (issue: the cluster's failure
behaviour): every acknowledged start reached exactly one close, event IDs are contiguous, no
activity completion was accepted twice, no workflow ID has more than one run or a run still
open, every side effect ran at most as often as retries allow, and every replica of every shard
holds the same state at the same applied log index (`chronicle cluster describe --digests`)."""

import asyncio
import json
import subprocess
import time
from collections import Counter
from typing import Dict, List

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from conftest import SplitServer, chronicle_bin


async def check_histories(client: Client, run_ids: Dict[str, str]) -> None:
    async def one(wid: str, run_id: str) -> None:
        events = [e async for e in client.get_workflow_handle(wid, run_id=run_id).fetch_history_events()]
        assert [e.event_id for e in events] == list(range(1, len(events) + 1)), f"{wid}: event IDs not contiguous"
        types = Counter(e.event_type for e in events)
        assert types[EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED] == 1, wid
        closes = [e for e in events if e.event_type in (
            EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED,
            EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED,
            EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW)]
        assert len(closes) == 1 and closes[0] is events[-1], f"{wid}: {len(closes)} close events"
        completed = Counter(e.activity_task_completed_event_attributes.scheduled_event_id for e in events
                            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED)
        assert all(n == 1 for n in completed.values()), f"{wid}: an activity completed twice: {completed}"
        # One run per workflow ID (the tests start each ID once and never continue as new).
        runs = [r async for r in client.list_workflows(f"WorkflowId = '{wid}'")]
        assert len(runs) == 1, f"{wid}: {len(runs)} runs"

    # Bounded concurrency: the cluster is small and these are reads.
    sem = asyncio.Semaphore(20)

    async def bounded(wid: str, run_id: str) -> None:
        async with sem:
            await one(wid, run_id)

    await asyncio.gather(*(bounded(w, r) for w, r in run_ids.items()))


def replica_digests(cluster: SplitServer) -> dict:
    nodes = ",".join(n.fields["internal"] for n in cluster.histories)
    out = subprocess.run([chronicle_bin(), "cluster", "describe", "--json", "--digests", "--nodes", nodes],
                         capture_output=True, timeout=120)
    return json.loads(out.stdout)


def check_replicas_agree(cluster: SplitServer, timeout: float = 60) -> None:
    """Waits until every reachable replica of each group applied the same index, then requires
    equal digests. A group still applying (a sweep, a timer) is asked again."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        report = replica_digests(cluster)
        by_group: Dict[str, List[dict]] = {}
        for node in report["nodes"]:
            for d in node.get("digests", []) if isinstance(node.get("digests"), list) else []:
                by_group.setdefault(d["group"], []).append(dict(d, node=node["address"]))
        pinned = {g: ds for g, ds in by_group.items()
                  if len({d["applied_index"] for d in ds}) == 1 and ds[0]["applied_index"] > 0}
        for group, ds in pinned.items():
            assert len({d["digest"] for d in ds}) == 1, f"group {group} diverged at index {ds[0]['applied_index']}: {ds}"
        if by_group and len(pinned) == len(by_group):
            return
        last = report
        assert time.monotonic() < deadline, f"replicas never reached the same index: {json.dumps(last)[:2000]}"
        time.sleep(0.5)
