"""Workflow behaviour with the official Python SDK, as users write it."""

import asyncio
import time
from datetime import timedelta

import pytest
from temporalio.api.enums.v1 import EventType, WorkflowExecutionStatus
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ActivityError, ApplicationError, TerminatedError, TimeoutError as TemporalTimeoutError
from temporalio.worker import Worker
from temporalio.exceptions import WorkflowAlreadyStartedError

import activities_state
import workflows as wf
from conftest import new_id


def worker(client, task_queue):
    return Worker(client, task_queue=task_queue, workflows=wf.ALL_WORKFLOWS, activities=wf.ALL_ACTIVITIES)


async def event_types(handle):
    return [e.event_type async for e in handle.fetch_history_events()]


async def test_order_with_three_sequential_activities(client, task_queue):
    async with worker(client, task_queue):
        result = await client.execute_workflow(wf.OrderWorkflow.run, "order-7", id=new_id("order"), task_queue=task_queue)
    assert result == "order-7:reserved:charged:shipped"


async def test_saga_compensates_in_reverse_order(client, task_queue):
    async with worker(client, task_queue):
        handle = await client.start_workflow(wf.SagaWorkflow.run, id=new_id("saga"), task_queue=task_queue)
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
    cause = failure.value.cause
    assert isinstance(cause, ApplicationError)
    assert cause.details == (["reserve", "charge", "refund", "release"],)
    # ship ran once (non-retryable), then the compensations in reverse order
    assert activities_state.values("saga")[-4:] == ["charge", "ship", "refund", "release"]


async def test_retry_with_backoff(client, task_queue):
    key = new_id("retry")
    async with worker(client, task_queue):
        handle = await client.start_workflow(wf.RetryWorkflow.run, key, id=new_id("retry"), task_queue=task_queue)
        assert await handle.result() == 3
    attempts = activities_state.values(key)
    times = activities_state.times(key)
    assert attempts == [1, 2, 3]
    # initial interval 1 s, coefficient 2: gaps of about 1 s and 2 s
    assert times[1] - times[0] >= 0.8, times
    assert times[2] - times[1] >= 1.8, times
    assert times[2] - times[0] < 8, times
    types = await event_types(handle)
    assert types.count(EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED) == 1, "retries stay out of history"


async def test_non_retryable_error_type_is_not_retried(client, task_queue):
    key = new_id("nonretry")
    async with worker(client, task_queue):
        handle = await client.start_workflow(wf.NonRetryableWorkflow.run, key, id=new_id("nonretry"), task_queue=task_queue)
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
    assert isinstance(failure.value.cause, ActivityError)
    assert isinstance(failure.value.cause.cause, ApplicationError)
    assert failure.value.cause.cause.type == "BadInput"
    assert activities_state.values(key) == [1]


async def test_start_to_close_timeout_retries(client, task_queue):
    key = new_id("s2c")
    async with worker(client, task_queue):
        result = await client.execute_workflow(wf.StartToCloseWorkflow.run, key, id=new_id("s2c"), task_queue=task_queue)
    assert result == 2
    assert activities_state.values(key) == [1, 2]


async def test_heartbeat_timeout_resumes_from_details(client, task_queue):
    key = new_id("hb")
    async with worker(client, task_queue):
        result = await client.execute_workflow(wf.HeartbeatWorkflow.run, key, id=new_id("hb"), task_queue=task_queue)
    calls = activities_state.values(key)
    assert calls[0] == (1, 0)
    # the retry starts from the last heartbeat the server recorded (progress 3 or 4)
    assert calls[1][0] == 2 and calls[1][1] in (3, 4), calls
    assert result == calls[1][1]


async def test_expense_approval_signal_and_query(client, task_queue):
    async with worker(client, task_queue):
        handle = await client.start_workflow(wf.ExpenseWorkflow.run, 30.0, id=new_id("expense"), task_queue=task_queue)
        for _ in range(50):
            try:
                assert await handle.query(wf.ExpenseWorkflow.status) == "waiting"
                break
            except Exception:  # the first workflow task may not have completed yet
                await asyncio.sleep(0.1)
        await handle.signal(wf.ExpenseWorkflow.approve, wf.Approval("carol"))
        assert await handle.result() == "approved by carol"
        assert await handle.query(wf.ExpenseWorkflow.status) == "approved by carol"  # closed workflow


async def test_expense_approval_times_out(client, task_queue):
    async with worker(client, task_queue):
        started = time.monotonic()
        result = await client.execute_workflow(wf.ExpenseWorkflow.run, 1.0, id=new_id("expense"), task_queue=task_queue)
    assert result == "expired"
    assert time.monotonic() - started >= 0.9


async def test_durable_timer(client, task_queue):
    async with worker(client, task_queue):
        started = time.monotonic()
        handle = await client.start_workflow(wf.TimerWorkflow.run, 2.0, id=new_id("timer"), task_queue=task_queue)
        assert await handle.result() == "woke"
        elapsed = time.monotonic() - started
    assert 2.0 <= elapsed < 6, elapsed
    types = await event_types(handle)
    assert EventType.EVENT_TYPE_TIMER_STARTED in types and EventType.EVENT_TYPE_TIMER_FIRED in types


async def test_terminate(client, task_queue):
    async with worker(client, task_queue):
        handle = await client.start_workflow(wf.WaitForeverWorkflow.run, id=new_id("term"), task_queue=task_queue)
        await asyncio.sleep(0.3)
        await handle.terminate("no longer needed")
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
    assert isinstance(failure.value.cause, TerminatedError)
    description = await handle.describe()
    assert description.status == WorkflowExecutionStatus.WORKFLOW_EXECUTION_STATUS_TERMINATED


async def test_workflow_id_conflict(client, task_queue):
    workflow_id = new_id("dup")
    handle = await client.start_workflow(wf.WaitForeverWorkflow.run, id=workflow_id, task_queue=task_queue)
    with pytest.raises(WorkflowAlreadyStartedError):
        await client.start_workflow(wf.WaitForeverWorkflow.run, id=workflow_id, task_queue=task_queue)
    await handle.terminate("cleanup")


async def test_history_event_ids_are_contiguous(client, task_queue):
    async with worker(client, task_queue):
        handle = await client.start_workflow(wf.OrderWorkflow.run, "o", id=new_id("ids"), task_queue=task_queue)
        await handle.result()
    events = [e async for e in handle.fetch_history_events()]
    assert [e.event_id for e in events] == list(range(1, len(events) + 1))
    assert events[0].event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED
    assert events[-1].event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED
