"""Temporal's metric families of the calls between roles, the shard controller and matching's
physical queues, scraped from the server's /metrics after a workflow ran: the same names, types,
label names and label values on Temporal's dev server (``COMPAT_SERVER=temporal``, the naming
oracle), Chronicle's start-dev and the split cluster (every node's /metrics summed)."""

import asyncio
import re
import time
import urllib.request
from typing import Dict, List, Tuple

import pytest
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.worker import Worker

import workflows as wf
from conftest import SplitServer, new_id

Series = Tuple[str, Dict[str, str], float]

CLIENT_LABELS = {"service_name", "service_role", "operation", "namespace"}
POLL_LABELS = {"service_name", "operation", "namespace", "namespace_state", "taskqueue", "task_type",
               "partition", "worker_build_id", "worker_deployment_name", "worker_version"}


def metrics_addresses(server) -> List[str]:
    if isinstance(server, SplitServer):
        return [n.fields["metrics"] for n in server.nodes if "metrics" in n.fields]
    return [f"127.0.0.1:{server.metrics_port}"]


def scrape(addresses: List[str]) -> Tuple[Dict[str, str], List[Series]]:
    """(# TYPE of each family, every sample) over the nodes."""
    types, samples = {}, []
    for addr in addresses:
        text = urllib.request.urlopen(f"http://{addr}/metrics", timeout=5).read().decode()
        for line in text.splitlines():
            if line.startswith("# TYPE "):
                _, _, name, kind = line.split(" ", 3)
                types[name] = kind
            elif line and not line.startswith("#"):
                series, value = line.rsplit(" ", 1)
                name, _, body = series.partition("{")
                samples.append((name, dict(re.findall(r'(\w+)="([^"]*)"', body)), float(value)))
    return types, samples


def matching(samples: List[Series], name: str, **want: str) -> List[Series]:
    return [s for s in samples if s[0] == name and all(s[1].get(k) == v for k, v in want.items())]


def total(samples: List[Series], name: str, **want: str) -> float:
    return sum(s[2] for s in matching(samples, name, **want))


async def test_internal_client_shard_controller_and_poll_families(server, client: Client, task_queue: str):
    workflow_id = new_id("metrics")
    async with Worker(client, task_queue=task_queue, workflows=[wf.TimerWorkflow]):
        handle = await client.start_workflow(wf.TimerWorkflow.run, 0.2, id=workflow_id, task_queue=task_queue)
        with pytest.raises(WorkflowAlreadyStartedError):
            await client.start_workflow(wf.TimerWorkflow.run, 0.2, id=workflow_id, task_queue=task_queue)
        assert await handle.result() == "woke"
    queue_label = re.sub(r"[^A-Za-z0-9_]", "_", task_queue)

    # Calls between roles: counted by the caller, under the called role and Temporal's RPC name.
    wanted = [("frontend", "history", "HistoryClientStartWorkflowExecution"),
              ("frontend", "history", "HistoryClientRespondWorkflowTaskCompleted"),
              ("frontend", "matching", "MatchingClientPollWorkflowTaskQueue"),
              ("history", "matching", "MatchingClientAddWorkflowTask"),
              ("matching", "history", "HistoryClientRecordWorkflowTaskStarted")]
    deadline = time.monotonic() + 20
    while True:
        types, samples = scrape(metrics_addresses(server))
        found = {w: total(samples, "client_latency_count", service_name=w[0], service_role=w[1], operation=w[2],
                          namespace="default") for w in wanted}
        # Temporal's reporter publishes its counters about once a second: wait for this run's.
        settled = (total(samples, "client_requests", operation="HistoryClientRespondWorkflowTaskCompleted") >= 2
                   and matching(samples, "client_errors", error_type="serviceerror_WorkflowExecutionAlreadyStarted"))
        if (all(found.values()) and settled) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    assert types.get("client_requests") == "counter" and types.get("client_errors") == "counter"
    assert types.get("client_latency") == "histogram"
    for (caller, role, operation), ended in found.items():
        series = matching(samples, "client_requests", service_name=caller, service_role=role, operation=operation,
                          namespace="default")
        assert series, f"client_requests of {caller} {operation}"
        assert all(set(s[1]) == CLIENT_LABELS for s in series), series
        assert ended >= 1, f"client_latency of {caller} {operation}"
    # Two starts and two completed workflow tasks at least (the session's other tests add more).
    assert total(samples, "client_requests", operation="HistoryClientStartWorkflowExecution") >= 2
    assert total(samples, "client_requests", operation="HistoryClientRespondWorkflowTaskCompleted") >= 2
    duplicate = matching(samples, "client_errors", service_name="frontend", service_role="history",
                         operation="HistoryClientStartWorkflowExecution", namespace="default",
                         error_type="serviceerror_WorkflowExecutionAlreadyStarted")
    assert duplicate and all(set(s[1]) == CLIENT_LABELS | {"error_type"} for s in duplicate), duplicate

    # The shard controller: shards taken up, and the ring each history node joined.
    controller = {"service_name": "history", "operation": "ShardController"}
    assert types.get("acquire_shards_count") == "counter"
    assert types.get("acquire_shards_latency") == "histogram"
    assert types.get("membership_changed_count") == "counter"
    for name in ("acquire_shards_count", "acquire_shards_latency_count", "membership_changed_count"):
        series = matching(samples, name, **controller)
        assert series and all(set(s[1]) == set(controller) for s in series), (name, series)
        assert sum(s[2] for s in series) >= 1, name

    # Matching's physical queues: the polls waiting (none once the worker left) and how long
    # each poll waited, by result; the queue's two workflow tasks were dispatched to polls.
    assert types.get("pending_polls") == "gauge"
    pending = matching(samples, "pending_polls", taskqueue=queue_label, task_type="Workflow",
                       operation="TaskQueueMgr", namespace_state="active", worker_version="__unversioned__")
    assert pending and all(set(s[1]) == POLL_LABELS for s in pending), pending
    assert sum(s[2] for s in pending) == 0, "the worker left: no poll waits"
    assert types.get("poll_latency") == "histogram"
    dispatched = matching(samples, "poll_latency_count", taskqueue=queue_label, task_type="Workflow",
                          poll_result="dispatch", task_priority="", operation="TaskQueueMgr")
    assert all(set(s[1]) == POLL_LABELS | {"forwarded", "task_priority", "poll_result"} for s in dispatched)
    assert sum(s[2] for s in dispatched) >= 2, dispatched


async def test_history_counts_its_calls_for_children(server, client: Client, task_queue: str):
    """A parent's transfer tasks: history starts each child and reports each close to the
    parent, as calls of history to history."""
    children = [new_id("child"), new_id("child")]
    async with Worker(client, task_queue=task_queue, workflows=[wf.FamilyWorkflow, wf.DoublerChild]):
        total_doubled = await client.execute_workflow(wf.FamilyWorkflow.run, children, id=new_id("family"),
                                                      task_queue=task_queue)
    assert total_doubled == 2 + 4
    wanted = {"HistoryClientStartWorkflowExecution": 2, "HistoryClientRecordChildExecutionCompleted": 2}
    deadline = time.monotonic() + 20
    while True:
        _, samples = scrape(metrics_addresses(server))
        counts = {op: total(samples, "client_latency_count", service_name="history", service_role="history",
                            operation=op, namespace="default") for op in wanted}
        if all(counts[op] >= n for op, n in wanted.items()) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    assert all(counts[op] >= n for op, n in wanted.items()), counts
    for op in wanted:
        series = matching(samples, "client_requests", service_name="history", service_role="history", operation=op)
        assert series and all(set(s[1]) == CLIENT_LABELS for s in series), series


async def test_schedule_families(server, client: Client, task_queue: str):
    """A schedule every second whose workflow never finishes (no worker polls its queue): the
    first time starts it, the next ones are skipped by the SKIP overlap policy."""
    from temporalio.client import (Schedule, ScheduleActionStartWorkflow, ScheduleIntervalSpec,
                                   ScheduleOverlapPolicy, SchedulePolicy, ScheduleSpec)
    from datetime import timedelta
    schedule_id = new_id("metrics-schedule")
    handle = await client.create_schedule(schedule_id, Schedule(
        action=ScheduleActionStartWorkflow("NeverPolled", id=new_id("scheduled"), task_queue=task_queue),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(seconds=1))]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP)))
    try:
        deadline = time.monotonic() + 20
        while True:
            types, samples = scrape(metrics_addresses(server))
            started = total(samples, "schedule_action_success", namespace="default", schedule_action="start_workflow")
            skipped = total(samples, "schedule_overlap_skipped", namespace="default", schedule_overlap_policy="Skip")
            delays = total(samples, "schedule_action_delay_count", namespace="default")
            if (started >= 1 and skipped >= 1 and delays >= 1) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        assert started >= 1 and delays >= 1, "no schedule_action_success / schedule_action_delay"
        assert skipped >= 1, "no schedule_overlap_skipped{schedule_overlap_policy=\"Skip\"}"
        assert types["schedule_action_success"] == "counter"
        assert types["schedule_overlap_skipped"] == "counter"
        assert types["schedule_action_delay"] == "histogram"
    finally:
        await handle.delete()
