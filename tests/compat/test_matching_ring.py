"""Several matching nodes: task-queue partitions spread over them (the matching ring), and a
matching node lost under load.

The first test uses the shared `chronicle-split` cluster (two matching nodes, two frontends): a
task queue whose partitions are owned by both nodes, the client on one frontend and the worker on
the other, every workflow completing, and both nodes serving its polls (their metrics). The
second starts its own cluster (like `test_faults.py`), kills one matching node with kill -9 while
workflows keep being started, and checks that every workflow completes and the dead node's
partitions moved to the live one. Both are Chronicle-only: Temporal's dev server has one
matching service and does not say who owns a partition."""

import asyncio
import re
import time
import urllib.request
import uuid

import pytest
from temporalio.api.enums.v1 import TaskQueueKind
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import ListTaskQueuePartitionsRequest
from temporalio.client import Client
from temporalio.worker import Worker

import workflows as wf
from conftest import IS_CHRONICLE, SERVER_KIND, SplitServer, new_id
from test_faults import under_load


async def partition_owners(client: Client, task_queue: str) -> dict:
    """Partition key -> owner address, for the workflow and the activity queue of the name."""
    response = await client.workflow_service.list_task_queue_partitions(ListTaskQueuePartitionsRequest(
        namespace=client.namespace, task_queue=TaskQueue(name=task_queue, kind=TaskQueueKind.TASK_QUEUE_KIND_NORMAL)))
    owners = {}
    for kind, partitions in (("workflow", response.workflow_task_queue_partitions),
                             ("activity", response.activity_task_queue_partitions)):
        for p in partitions:
            owners[(kind, p.key)] = p.owner_host_name
    return owners


def polls_served(metrics_addr: str, task_queue: str) -> dict:
    """(task_type, partition) -> successful polls of `task_queue` served by one matching node."""
    text = urllib.request.urlopen(f"http://{metrics_addr}/metrics", timeout=5).read().decode()
    served = {}
    for line in text.splitlines():
        if not line.startswith("poll_success{") or f'taskqueue="{task_queue}"' not in line:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        served[(labels["task_type"], labels["partition"])] = float(line.rsplit(" ", 1)[1])
    return served


@pytest.mark.skipif(SERVER_KIND != "chronicle-split", reason="the shared cluster with two matching nodes")
async def test_partitions_on_both_matching_nodes_serve_a_worker_on_another_frontend(server, tmp_path):
    matching = {n.fields["internal"]: n for n in server.nodes if n.name.startswith("matching-")}
    assert len(matching) == 2, server.nodes
    client = await Client.connect(server.frontends[0])
    worker_client = await Client.connect(server.frontends[-1])

    # A queue whose workflow and activity partitions both land on the two nodes (placement is
    # by hash of the name: most names qualify).
    for _ in range(50):
        # Underscores only: the metrics exporter writes other characters as `_`.
        task_queue = f"tq_ring_{uuid.uuid4().hex}"
        owners = await partition_owners(client, task_queue)
        by_kind = {kind: {o for (k, _), o in owners.items() if k == kind} for kind in ("workflow", "activity")}
        if all(found == set(matching) for found in by_kind.values()):
            break
    else:
        pytest.fail(f"no queue name among 50 had partitions on both nodes: {owners}")
    assert len(owners) == 8, owners
    assert ("workflow", task_queue) in owners and ("workflow", f"/_sys/{task_queue}/3") in owners

    async with Worker(worker_client, task_queue=task_queue, workflows=[wf.DurableWorkflow],
                      activities=[wf.add_tax, wf.add_shipping]):
        effects = str(tmp_path)
        handles = [await client.start_workflow(
            wf.DurableWorkflow.run, wf.DurableInput(directory=effects, amount=100 + i, timer_ms=50),
            id=new_id("ring"), task_queue=task_queue) for i in range(30)]
        results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), 120)
    assert results == [wf.durable_expected(100 + i) for i in range(30)]

    served = {addr: polls_served(node.fields["metrics"], task_queue) for addr, node in matching.items()}
    for addr, polls in served.items():
        assert sum(polls.values()) > 0, f"matching node {addr} served no poll of the queue: {served}"
    partitions = {partition for polls in served.values() for (_, partition) in polls}
    assert len(partitions) >= 2, served


@pytest.mark.durability
@pytest.mark.deadline(240)
@pytest.mark.skipif(SERVER_KIND == "chronicle-split", reason="starts its own cluster: runs once, in the `chronicle` pass")
@pytest.mark.skipif(not IS_CHRONICLE, reason="a Chronicle cluster")
async def test_a_matching_node_killed_under_load_loses_no_workflow(tmp_path):
    async def fault(cluster: SplitServer) -> None:
        survivor = cluster.node("matching-1").fields["internal"]
        cluster.node("matching-2").kill()
        # Not restarted (no --restart): its partitions move to the survivor.
        client = await Client.connect(cluster.frontends[0])
        deadline = time.monotonic() + 30
        while True:
            owners = set((await partition_owners(client, "any-queue")).values())
            if owners == {survivor}:
                break
            assert time.monotonic() < deadline, f"partitions still on {owners}"
            await asyncio.sleep(0.2)

    outcome = await under_load(tmp_path, fault, restart=False)
    assert outcome["workflows"] > 10, outcome


async def test_a_partition_name_is_refused_as_a_task_queue(client):
    """`/_sys/...` names a partition: Temporal refuses it as a task queue name, and so does Chronicle."""
    from temporalio.service import RPCError, RPCStatusCode
    with pytest.raises(RPCError) as refused:
        await client.start_workflow("AnyWorkflow", id=new_id("reserved"), task_queue="/_sys/orders/1")
    assert refused.value.status == RPCStatusCode.INVALID_ARGUMENT
    assert "reserved prefix /_sys/" in refused.value.message, refused.value.message
