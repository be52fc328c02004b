"""DeleteWorkflowExecution: a closed run, a running one (terminated first), the current run by
workflow ID, an unknown workflow, and the ``temporal workflow delete`` CLI. Afterwards the run
answers NotFound as a workflow that never existed does, leaves list, and its workflow ID can be
used again. Temporal deletes asynchronously, so every check after a delete polls."""

import asyncio
import time

import pytest
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import EventType, WorkflowIdReusePolicy
from temporalio.api.workflowservice.v1 import (DeleteWorkflowExecutionRequest,
                                               DescribeWorkflowExecutionRequest,
                                               GetWorkflowExecutionHistoryRequest,
                                               ListWorkflowExecutionsRequest)
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Worker

import workflows as wf
from conftest import new_id
from test_cli import cli

DEADLINE = 90.0


async def describe_error(client, workflow_id: str, run_id: str = "") -> RPCError:
    """The error describe answers (fails the test if describe succeeds)."""
    try:
        await client.workflow_service.describe_workflow_execution(DescribeWorkflowExecutionRequest(
            namespace=client.namespace, execution=WorkflowExecution(workflow_id=workflow_id, run_id=run_id)))
    except RPCError as e:
        return e
    raise AssertionError(f"{workflow_id} still exists")


async def wait_deleted(client, workflow_id: str, run_id: str = "") -> RPCError:
    deadline = time.monotonic() + DEADLINE
    while True:
        try:
            return await describe_error(client, workflow_id, run_id)
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def delete(client, workflow_id: str, run_id: str = "") -> None:
    await client.workflow_service.delete_workflow_execution(DeleteWorkflowExecutionRequest(
        namespace=client.namespace, workflow_execution=WorkflowExecution(workflow_id=workflow_id, run_id=run_id)))


async def assert_gone(client, workflow_id: str, run_id: str) -> None:
    """NotFound from describe and get-history, the same answers as for an ID never used."""
    deleted = await wait_deleted(client, workflow_id, run_id)
    never_id = new_id("never")
    never = await describe_error(client, never_id, run_id)
    assert deleted.status == never.status == RPCStatusCode.NOT_FOUND, (deleted, never)
    assert deleted.message.replace(workflow_id, "<id>") == never.message.replace(never_id, "<id>"), \
        (deleted.message, never.message)
    with pytest.raises(RPCError) as e:
        await client.workflow_service.get_workflow_execution_history(GetWorkflowExecutionHistoryRequest(
            namespace=client.namespace, execution=WorkflowExecution(workflow_id=workflow_id, run_id=run_id)))
    assert e.value.status == RPCStatusCode.NOT_FOUND
    listed = await client.workflow_service.list_workflow_executions(ListWorkflowExecutionsRequest(
        namespace=client.namespace, query=f"WorkflowId = '{workflow_id}'"))
    deadline = time.monotonic() + DEADLINE
    while listed.executions and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        listed = await client.workflow_service.list_workflow_executions(ListWorkflowExecutionsRequest(
            namespace=client.namespace, query=f"WorkflowId = '{workflow_id}'"))
    assert not listed.executions, listed


async def test_delete_closed_run_then_reuse_its_id(client, task_queue):
    workflow_id = new_id("del-closed")
    async with Worker(client, task_queue=task_queue, workflows=[wf.TimerWorkflow]):
        handle = await client.start_workflow(wf.TimerWorkflow.run, 0.0, id=workflow_id, task_queue=task_queue)
        assert await handle.result() == "woke"
        await delete(client, workflow_id, handle.result_run_id)
        await assert_gone(client, workflow_id, handle.result_run_id)
        # The ID is free even for a policy that refuses any earlier run.
        again = await client.start_workflow(
            wf.TimerWorkflow.run, 0.0, id=workflow_id, task_queue=task_queue,
            id_reuse_policy=WorkflowIdReusePolicy.WORKFLOW_ID_REUSE_POLICY_REJECT_DUPLICATE)
        assert await again.result() == "woke"
        assert again.result_run_id != handle.result_run_id


async def test_delete_running_run_terminates_it_first(client, task_queue):
    workflow_id = new_id("del-running")
    async with Worker(client, task_queue=task_queue, workflows=[wf.WaitForeverWorkflow]):
        handle = await client.start_workflow(wf.WaitForeverWorkflow.run, id=workflow_id, task_queue=task_queue)
        await handle.describe()
        # No run ID: the workflow ID's current run.
        await delete(client, workflow_id)
        await assert_gone(client, workflow_id, handle.result_run_id)
        again = await client.start_workflow(wf.WaitForeverWorkflow.run, id=workflow_id, task_queue=task_queue)
        await again.terminate("done")


async def test_delete_unknown_workflow_is_not_found(client):
    with pytest.raises(RPCError) as e:
        await delete(client, new_id("del-unknown"))
    assert e.value.status == RPCStatusCode.NOT_FOUND
    with pytest.raises(RPCError) as e:
        await client.workflow_service.delete_workflow_execution(DeleteWorkflowExecutionRequest(
            namespace=client.namespace, workflow_execution=WorkflowExecution(workflow_id="")))
    assert e.value.status == RPCStatusCode.INVALID_ARGUMENT


async def test_cli_workflow_delete(client, server_address, task_queue):
    workflow_id = new_id("del-cli")
    async with Worker(client, task_queue=task_queue, workflows=[wf.TimerWorkflow]):
        handle = await client.start_workflow(wf.TimerWorkflow.run, 0.0, id=workflow_id, task_queue=task_queue)
        await handle.result()
    await cli(server_address, "workflow", "delete", "--workflow-id", workflow_id, "--yes")
    await assert_gone(client, workflow_id, handle.result_run_id)
