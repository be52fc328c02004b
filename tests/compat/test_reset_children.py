"""Reset to a point between a child's initiation and its start: the new run reconnects to the
child the base run started (Temporal's start-child task looks the child up and adopts it when
its parent is the base run) and the child's result reaches the new run.

The parent's workflow tasks are driven by hand over the gRPC API so that the reset point is
deterministic: a signal that arrives while the task which starts the child is running makes the
completion schedule a new workflow task in the same write, before the child's start is
recorded."""

import asyncio
import uuid

import pytest

from temporalio.api.command.v1 import Command, StartChildWorkflowExecutionCommandAttributes
from temporalio.api.common.v1 import WorkflowExecution, WorkflowType
from temporalio.api.enums.v1 import CommandType, EventType, WorkflowExecutionStatus
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import (
    PollWorkflowTaskQueueRequest,
    ResetWorkflowExecutionRequest,
    RespondWorkflowTaskCompletedRequest,
)
from temporalio.client import WorkflowExecutionStatus as Status
from temporalio.converter import DataConverter
from temporalio.worker import Worker

import reset_workflows as rw
from conftest import new_id

TIMEOUT = 30


async def events_of(handle):
    return [e async for e in handle.fetch_history_events()]


async def poll_task(client, task_queue):
    """The next workflow task of `task_queue` (polls until one comes)."""
    for _ in range(TIMEOUT):
        task = await client.workflow_service.poll_workflow_task_queue(PollWorkflowTaskQueueRequest(
            namespace=client.namespace, task_queue=TaskQueue(name=task_queue), identity="by-hand"))
        if task.task_token:
            return task
    raise AssertionError(f"no workflow task on {task_queue}")


async def complete_task(client, task, commands=()):
    await client.workflow_service.respond_workflow_task_completed(RespondWorkflowTaskCompletedRequest(
        namespace=client.namespace, task_token=task.task_token, commands=list(commands),
        identity="by-hand"))


async def wait_for(handle, event_type, count=1):
    for _ in range(TIMEOUT * 10):
        events = await events_of(handle)
        found = [e for e in events if e.event_type == event_type]
        if len(found) >= count:
            return found[count - 1], events
        await asyncio.sleep(0.1)
    raise AssertionError(f"no {event_type} in {handle.id}")


def start_child_command(child_id, child_queue):
    return Command(
        command_type=CommandType.COMMAND_TYPE_START_CHILD_WORKFLOW_EXECUTION,
        start_child_workflow_execution_command_attributes=StartChildWorkflowExecutionCommandAttributes(
            namespace="", workflow_id=child_id, workflow_type=WorkflowType(name="ResetChild"),
            task_queue=TaskQueue(name=child_queue),
            input=None,
        ),
    )


@pytest.mark.parametrize("continued", [False, True], ids=["running", "continued_as_new"])
async def test_reset_between_child_initiation_and_start_reconnects_to_the_child(
        client, task_queue, continued):
    child_queue = task_queue + "-child"
    child_id = new_id("child")
    parent = await client.start_workflow("ManualParent", id=new_id("parent"), task_queue=task_queue)
    base_run = parent.result_run_id
    first = await poll_task(client, task_queue)
    # Arrives while the task runs: buffered, it makes the completion schedule a new task.
    await parent.signal("poke")
    command = start_child_command(child_id, child_queue)
    command.start_child_workflow_execution_command_attributes.input.CopyFrom(
        await DataConverter.default.encode_wrapper(["x"]))
    await complete_task(client, first, [command])

    async with Worker(client, task_queue=child_queue, workflows=[rw.WaitingChild]):
        started, events = await wait_for(parent, EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_STARTED)
        initiated = next(e for e in events if e.event_type
                         == EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED)
        scheduled = [e for e in events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED
                     and e.event_id > initiated.event_id][0]
        assert initiated.event_id < scheduled.event_id < started.event_id, [
            (e.event_id, EventType.Name(e.event_type)) for e in events]
        child_run = started.child_workflow_execution_started_event_attributes.workflow_execution.run_id
        child = client.get_workflow_handle(child_id)
        current_child_run = child_run
        if continued:
            # The child's chain moves on to a second run, which the base run's start did not create.
            await child.signal("again")
            for _ in range(TIMEOUT * 10):
                current_child_run = (await child.describe()).run_id
                if current_child_run != child_run:
                    break
                await asyncio.sleep(0.1)
            assert current_child_run != child_run

        # Reset to the event after the second task's Scheduled event: the child's initiation is
        # in the new run's history, its start is not.
        response = await client.workflow_service.reset_workflow_execution(ResetWorkflowExecutionRequest(
            namespace=client.namespace,
            workflow_execution=WorkflowExecution(workflow_id=parent.id, run_id=base_run),
            reason="reset between initiation and start",
            workflow_task_finish_event_id=scheduled.event_id + 1,
            request_id=str(uuid.uuid4()),
        ))
        new_run = response.run_id
        assert new_run and new_run != base_run
        new_parent = client.get_workflow_handle(parent.id, run_id=new_run)

        # The new run records the child's start: the chain the base run started (named by its first
        # run, as a child's Started event is), not a new one.
        restarted, new_events = await wait_for(
            new_parent, EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_STARTED)
        assert [e.event_id for e in new_events[:scheduled.event_id]] == list(range(1, scheduled.event_id + 1))
        attrs = restarted.child_workflow_execution_started_event_attributes
        assert attrs.initiated_event_id == initiated.event_id
        assert attrs.workflow_execution.workflow_id == child_id
        assert attrs.workflow_execution.run_id == child_run
        assert not any(e.event_type == EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_FAILED
                       for e in new_events)
        description = await child.describe()
        assert description.run_id == current_child_run
        assert description.status == Status.RUNNING
        base = client.get_workflow_handle(parent.id, run_id=base_run)
        assert (await base.describe()).status == Status.TERMINATED

        # The child finishes: its result reaches the new run (its parent of record is the base run).
        await child.signal("finish")
        tag = "x+" if continued else "x"
        assert await asyncio.wait_for(child.result(), TIMEOUT) == f"child {tag} done"
        completed, _ = await wait_for(new_parent, EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_COMPLETED)
    result = completed.child_workflow_execution_completed_event_attributes
    assert result.initiated_event_id == initiated.event_id
    # The close names the run that closed the chain.
    assert result.workflow_execution.run_id == current_child_run
    assert await DataConverter.default.decode_wrapper(result.result) == [f"child {tag} done"]
    assert (await new_parent.describe()).status == Status.RUNNING
    await new_parent.terminate("done")
