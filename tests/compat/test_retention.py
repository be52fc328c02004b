"""Namespace lifecycle: retention (closed runs vanish once the namespace's retention has passed
after their close; a retention is kept exactly, one below the cluster's minimum refused),
DeprecateNamespace (new starts refused with Temporal's error, the rest still served) and
OperatorService.DeleteNamespace (renamed, marked deleted, its runs deleted, the name free again).

Servers of this suite run with the minimum retention lowered to 1s (and Temporal's retention
timer jitter to 1s, see conftest.RETENTION_FLAGS). Deletion is asynchronous: checks poll."""

import asyncio
import time
from datetime import timedelta

import pytest
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import NamespaceState
from temporalio.api.namespace.v1 import NamespaceConfig
from temporalio.api.operatorservice.v1 import DeleteNamespaceRequest
from temporalio.api.workflowservice.v1 import (DeprecateNamespaceRequest, DescribeNamespaceRequest,
                                               DescribeWorkflowExecutionRequest,
                                               ListWorkflowExecutionsRequest, RegisterNamespaceRequest,
                                               UpdateNamespaceRequest)
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Worker

import workflows as wf
from conftest import new_id
from test_cli import cli, cli_json

DEADLINE = 90.0


async def register(client: Client, retention: timedelta) -> Client:
    name = new_id("retns")
    await client.workflow_service.register_namespace(RegisterNamespaceRequest(
        namespace=name, workflow_execution_retention_period=retention))
    deadline = time.monotonic() + DEADLINE
    while True:
        try:
            await client.workflow_service.describe_namespace(DescribeNamespaceRequest(namespace=name))
            break
        except RPCError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
    return await Client.connect(client.service_client.config.target_host, namespace=name)


async def exists(client: Client, workflow_id: str, run_id: str) -> bool:
    try:
        await client.workflow_service.describe_workflow_execution(DescribeWorkflowExecutionRequest(
            namespace=client.namespace, execution=WorkflowExecution(workflow_id=workflow_id, run_id=run_id)))
        return True
    except RPCError as e:
        assert e.status == RPCStatusCode.NOT_FOUND, e
        return False


async def test_closed_runs_expire_after_retention(client, task_queue):
    ns_client = await register(client, timedelta(seconds=2))
    described = await client.workflow_service.describe_namespace(
        DescribeNamespaceRequest(namespace=ns_client.namespace))
    # Kept exactly: not rounded to days.
    assert described.config.workflow_execution_retention_ttl.ToTimedelta() == timedelta(seconds=2)
    async with Worker(ns_client, task_queue=task_queue, workflows=[wf.TimerWorkflow]):
        handles = [await ns_client.start_workflow(wf.TimerWorkflow.run, 0.0, id=new_id("ret"), task_queue=task_queue)
                   for _ in range(3)]
        for h in handles:
            await h.result()
        closed_at = time.monotonic()
        # Right after the close the runs are still there (retention 2s).
        assert await exists(ns_client, handles[0].id, handles[0].result_run_id)
        deadline = time.monotonic() + DEADLINE
        remaining = list(handles)
        while remaining and time.monotonic() < deadline:
            remaining = [h for h in remaining if await exists(ns_client, h.id, h.result_run_id)]
            if remaining:
                await asyncio.sleep(0.25)
        assert not remaining, f"still present {time.monotonic() - closed_at:.1f}s after close"
        assert time.monotonic() - closed_at >= 1.5
        listed = await ns_client.workflow_service.list_workflow_executions(
            ListWorkflowExecutionsRequest(namespace=ns_client.namespace))
        deadline = time.monotonic() + DEADLINE
        while listed.executions and time.monotonic() < deadline:
            await asyncio.sleep(0.25)
            listed = await ns_client.workflow_service.list_workflow_executions(
                ListWorkflowExecutionsRequest(namespace=ns_client.namespace))
        assert not listed.executions
        # The expired run's ID starts again.
        again = await ns_client.start_workflow(wf.TimerWorkflow.run, 0.0, id=handles[0].id, task_queue=task_queue)
        assert await again.result() == "woke"


async def test_open_runs_are_not_expired(client, task_queue):
    ns_client = await register(client, timedelta(seconds=1))
    async with Worker(ns_client, task_queue=task_queue, workflows=[wf.WaitForeverWorkflow]):
        handle = await ns_client.start_workflow(wf.WaitForeverWorkflow.run, id=new_id("open"), task_queue=task_queue)
        await asyncio.sleep(4)
        assert await exists(ns_client, handle.id, handle.result_run_id)
        await handle.terminate("done")


async def test_retention_below_the_minimum_is_refused(client):
    with pytest.raises(RPCError) as e:
        await client.workflow_service.register_namespace(RegisterNamespaceRequest(
            namespace=new_id("retns"), workflow_execution_retention_period=timedelta(milliseconds=500)))
    assert (e.value.status, e.value.message) == (RPCStatusCode.INVALID_ARGUMENT,
                                                 "A valid retention period is not set on request.")
    ns_client = await register(client, timedelta(hours=5))
    with pytest.raises(RPCError) as e:
        await client.workflow_service.update_namespace(UpdateNamespaceRequest(
            namespace=ns_client.namespace,
            config=NamespaceConfig(workflow_execution_retention_ttl=timedelta(milliseconds=10))))
    assert (e.value.status, e.value.message) == (RPCStatusCode.INVALID_ARGUMENT,
                                                 "A valid retention period is not set on request.")
    described = await client.workflow_service.describe_namespace(
        DescribeNamespaceRequest(namespace=ns_client.namespace))
    assert described.config.workflow_execution_retention_ttl.ToTimedelta() == timedelta(hours=5)


async def test_deprecated_namespace_refuses_new_starts(client, task_queue):
    ns_client = await register(client, timedelta(days=1))
    running = await ns_client.start_workflow(wf.WaitForeverWorkflow.run, id=new_id("dep"), task_queue=task_queue)
    await client.workflow_service.deprecate_namespace(DeprecateNamespaceRequest(namespace=ns_client.namespace))
    described = await client.workflow_service.describe_namespace(
        DescribeNamespaceRequest(namespace=ns_client.namespace))
    assert described.namespace_info.state == NamespaceState.NAMESPACE_STATE_DEPRECATED
    deadline = time.monotonic() + DEADLINE
    while True:
        try:
            h = await ns_client.start_workflow(wf.WaitForeverWorkflow.run, id=new_id("dep"), task_queue=task_queue)
            await h.terminate("cleanup")
        except RPCError as refused:
            e = refused
            break
        assert time.monotonic() < deadline, "starts still accepted in a deprecated namespace"
        await asyncio.sleep(0.5)
    assert (e.status, e.message) == (RPCStatusCode.FAILED_PRECONDITION,
                                     "Namespace has invalid state: Deprecated. Must be Registered.")
    # Everything else is still served.
    await running.signal("anything")
    await running.describe()
    await running.terminate("done")


async def test_delete_namespace(client, server_address, task_queue):
    ns_client = await register(client, timedelta(days=1))
    name = ns_client.namespace
    info = (await client.workflow_service.describe_namespace(DescribeNamespaceRequest(namespace=name))).namespace_info
    handle = await ns_client.start_workflow(wf.WaitForeverWorkflow.run, id=new_id("delns"), task_queue=task_queue)
    answer = await client.operator_service.delete_namespace(DeleteNamespaceRequest(namespace=name))
    assert answer.deleted_namespace == f"{name}-deleted-{info.id[:5]}"
    with pytest.raises(RPCError) as e:
        await client.workflow_service.describe_namespace(DescribeNamespaceRequest(namespace=name))
    assert e.value.status == RPCStatusCode.NOT_FOUND
    # The old name is free at once.
    await client.workflow_service.register_namespace(RegisterNamespaceRequest(
        namespace=name, workflow_execution_retention_period=timedelta(days=1)))
    # The deleted namespace's runs go, then its record.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            renamed = await client.workflow_service.describe_namespace(
                DescribeNamespaceRequest(namespace=answer.deleted_namespace))
            assert renamed.namespace_info.state == NamespaceState.NAMESPACE_STATE_DELETED
            assert renamed.namespace_info.id == info.id
        except RPCError as gone:
            assert gone.status == RPCStatusCode.NOT_FOUND
            break
        await asyncio.sleep(0.5)
    else:
        raise AssertionError("the deleted namespace's record was never removed")
    with pytest.raises(RPCError) as e:
        await client.operator_service.delete_namespace(DeleteNamespaceRequest(namespace=new_id("nope")))
    assert e.value.status == RPCStatusCode.NOT_FOUND
    del handle


async def test_cli_namespace_delete(client, server_address):
    ns_client = await register(client, timedelta(days=1))
    await cli(server_address, "operator", "namespace", "delete", "--namespace", ns_client.namespace, "--yes")
    with pytest.raises(RPCError) as e:
        await client.workflow_service.describe_namespace(DescribeNamespaceRequest(namespace=ns_client.namespace))
    assert e.value.status == RPCStatusCode.NOT_FOUND
