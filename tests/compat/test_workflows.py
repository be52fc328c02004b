"""Workflow behaviour through the official Python SDK, written the way users write it.

Each test runs an in-process worker on its own task queue with uuid workflow IDs."""

import asyncio
import time
from datetime import timedelta

import pytest
from temporalio.api.enums.v1 import EventType, TimeoutType, WorkflowExecutionStatus
from temporalio.client import WorkflowFailureError
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError, RetryState, TerminatedError, \
    WorkflowAlreadyStartedError
from temporalio.service import RPCError
from temporalio.worker import Worker

import activities_state
import workflows as wf
from conftest import new_id

RESULT_TIMEOUT = 30  # seconds: every awaited workflow result is bounded


def worker(client, task_queue):
    return Worker(client, task_queue=task_queue, workflows=wf.ALL_WORKFLOWS, activities=wf.ALL_ACTIVITIES)


async def result_of(handle, timeout=RESULT_TIMEOUT):
    return await asyncio.wait_for(handle.result(), timeout)


async def history_events(handle):
    return [e async for e in handle.fetch_history_events()]


def types_of(events):
    return [EventType.Name(e.event_type) for e in events]


async def query_when_ready(handle, query, timeout=10.0):
    """Queries need the first workflow task to have completed; retry until then."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await handle.query(query)
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def test_order_with_three_sequential_activities(client, task_queue):
    order = wf.Order(order_id=new_id("order"), quantity=3, unit_price_cents=1250)
    async with worker(client, task_queue):
        handle = await client.start_workflow(wf.OrderWorkflow.run, order, id=new_id("order"), task_queue=task_queue)
        result = await result_of(handle)
    assert result == wf.OrderResult(reservation=f"reserved 3 for {order.order_id}", charged_cents=3750,
                                    tracking=f"tracking-{order.order_id}")
    events = await history_events(handle)
    scheduled = [e.activity_task_scheduled_event_attributes.activity_type.name for e in events
                 if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED]
    assert scheduled == ["reserve_stock", "charge_payment", "ship_order"]
    description = await handle.describe()
    assert description.status == WorkflowExecutionStatus.WORKFLOW_EXECUTION_STATUS_COMPLETED
    assert description.workflow_type == "OrderWorkflow"
    assert description.task_queue == task_queue


async def test_saga_compensates_in_reverse_order(client, task_queue):
    key = new_id("saga")
    async with worker(client, task_queue):
        handle = await client.start_workflow(wf.SagaWorkflow.run, key, id=new_id("saga"), task_queue=task_queue)
        with pytest.raises(WorkflowFailureError) as failure:
            await result_of(handle)
    cause = failure.value.cause
    assert isinstance(cause, ApplicationError), cause
    assert cause.type == "SagaCompensated"
    assert cause.non_retryable
    done, activity_failure_type = cause.details
    # ship failed (its compensation "recall" is never registered), then refund and release in reverse
    assert done == ["reserve", "charge", "refund", "release"]
    assert activity_failure_type == "ShipmentRefused"
    # what the worker really executed: ship exactly once (non-retryable), compensations in reverse order
    assert activities_state.values(key) == ["reserve", "charge", "ship", "refund", "release"]
    description = await handle.describe()
    assert description.status == WorkflowExecutionStatus.WORKFLOW_EXECUTION_STATUS_FAILED
    events = await history_events(handle)
    assert types_of(events).count("EVENT_TYPE_ACTIVITY_TASK_FAILED") == 1
    assert events[-1].event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED


async def test_retry_with_backoff(client, task_queue):
    key = new_id("retry")
    async with worker(client, task_queue):
        handle = await client.start_workflow(wf.RetryWorkflow.run, key, id=new_id("retry"), task_queue=task_queue)
        assert await result_of(handle) == 3
    assert activities_state.values(key) == [1, 2, 3]
    t = activities_state.times(key)
    first_gap, second_gap = t[1] - t[0], t[2] - t[1]
    # initial_interval 1 s, backoff 2.0: about 1 s then about 2 s between attempts
    assert 0.8 <= first_gap < 4.0, (first_gap, second_gap)
    assert 1.8 <= second_gap < 6.0, (first_gap, second_gap)
    events = await history_events(handle)
    types = types_of(events)
    # retries happen inside the server: one scheduled/started/completed, the started event carries attempt 3
    assert types.count("EVENT_TYPE_ACTIVITY_TASK_SCHEDULED") == 1
    assert types.count("EVENT_TYPE_ACTIVITY_TASK_STARTED") == 1
    assert "EVENT_TYPE_ACTIVITY_TASK_FAILED" not in types
    started = next(e for e in events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED)
    assert started.activity_task_started_event_attributes.attempt == 3
    assert started.activity_task_started_event_attributes.last_failure.message == "attempt 2 failed"


async def test_non_retryable_error_type_is_not_retried(client, task_queue):
    key = new_id("nonretry")
    async with worker(client, task_queue):
        handle = await client.start_workflow(wf.NonRetryableWorkflow.run, key, id=new_id("nonretry"),
                                             task_queue=task_queue)
        with pytest.raises(WorkflowFailureError) as failure:
            await result_of(handle)
    activity_error = failure.value.cause
    assert isinstance(activity_error, ActivityError), activity_error
    assert activity_error.activity_type == "rejects_input"
    assert activity_error.retry_state == RetryState.NON_RETRYABLE_FAILURE
    assert isinstance(activity_error.cause, ApplicationError)
    assert activity_error.cause.type == "BadInput"
    assert activity_error.cause.message == "the input is wrong"
    assert activities_state.values(key) == [1]
    events = await history_events(handle)
    failed = [e for e in events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED]
    assert len(failed) == 1
    assert failed[0].activity_task_failed_event_attributes.failure.application_failure_info.type == "BadInput"


async def test_start_to_close_timeout_retries(client, task_queue):
    key = new_id("s2c")
    async with worker(client, task_queue):
        handle = await client.start_workflow(wf.StartToCloseWorkflow.run, key, id=new_id("s2c"), task_queue=task_queue)
        assert await result_of(handle) == 2
    assert activities_state.values(key) == [1, 2]
    t = activities_state.times(key)
    assert 0.8 <= t[1] - t[0] < 10, t  # attempt 1 was timed out after start_to_close (1 s)
    events = await history_events(handle)
    started = next(e for e in events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED)
    attrs = started.activity_task_started_event_attributes
    assert attrs.attempt == 2
    assert attrs.last_failure.timeout_failure_info.timeout_type == TimeoutType.TIMEOUT_TYPE_START_TO_CLOSE


async def test_heartbeat_timeout_resumes_from_details(client, task_queue):
    key = new_id("hb")
    async with worker(client, task_queue):
        handle = await client.start_workflow(wf.HeartbeatWorkflow.run, key, id=new_id("hb"), task_queue=task_queue)
        resumed = await result_of(handle)
    calls = activities_state.values(key)
    assert calls[0] == (1, 0)
    # the retry starts from the last heartbeat detail the server recorded for attempt 1
    assert calls[1] == (2, wf.HEARTBEAT_STALL_AT), calls
    assert resumed == wf.HEARTBEAT_STALL_AT
    assert len(calls) == 2
    events = await history_events(handle)
    started = next(e for e in events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED)
    last_failure = started.activity_task_started_event_attributes.last_failure
    assert last_failure.timeout_failure_info.timeout_type == TimeoutType.TIMEOUT_TYPE_HEARTBEAT


async def test_expense_approved_by_signal(client, task_queue):
    async with worker(client, task_queue):
        handle = await client.start_workflow(wf.ExpenseWorkflow.run, 60.0, id=new_id("expense"),
                                             task_queue=task_queue)
        assert await query_when_ready(handle, wf.ExpenseWorkflow.status) == "waiting"
        await handle.signal(wf.ExpenseWorkflow.approve, wf.Approval("carol"))
        assert await result_of(handle) == "approved by carol"
        # queries still answer once the workflow is closed
        assert await handle.query(wf.ExpenseWorkflow.status) == "approved by carol"
    events = await history_events(handle)
    signaled = [e for e in events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED]
    assert len(signaled) == 1
    assert signaled[0].workflow_execution_signaled_event_attributes.signal_name == "approve"
    types = types_of(events)
    # the wait_condition timer was started and then cancelled by the completing workflow task
    assert "EVENT_TYPE_TIMER_STARTED" in types and "EVENT_TYPE_TIMER_CANCELED" in types
    assert "EVENT_TYPE_TIMER_FIRED" not in types
    assert types.index("EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED") < types.index("EVENT_TYPE_TIMER_CANCELED")


async def test_expense_times_out_without_signal(client, task_queue):
    async with worker(client, task_queue):
        started = time.monotonic()
        handle = await client.start_workflow(wf.ExpenseWorkflow.run, 1.0, id=new_id("expense"),
                                             task_queue=task_queue)
        assert await query_when_ready(handle, wf.ExpenseWorkflow.status) == "waiting"
        assert await result_of(handle) == "expired"
        elapsed = time.monotonic() - started
        assert await handle.query(wf.ExpenseWorkflow.status) == "expired"
    assert 0.8 <= elapsed < 10, elapsed
    types = types_of(await history_events(handle))
    assert "EVENT_TYPE_TIMER_FIRED" in types
    assert "EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED" not in types


async def test_durable_timer(client, task_queue):
    async with worker(client, task_queue):
        started = time.monotonic()
        handle = await client.start_workflow(wf.TimerWorkflow.run, 2.0, id=new_id("timer"), task_queue=task_queue)
        assert await result_of(handle) == "woke"
        elapsed = time.monotonic() - started
    assert 2.0 <= elapsed < 8, elapsed
    events = await history_events(handle)
    timer_started = [e for e in events if e.event_type == EventType.EVENT_TYPE_TIMER_STARTED]
    timer_fired = [e for e in events if e.event_type == EventType.EVENT_TYPE_TIMER_FIRED]
    assert len(timer_started) == 1 and len(timer_fired) == 1
    started_attrs = timer_started[0].timer_started_event_attributes
    fired_attrs = timer_fired[0].timer_fired_event_attributes
    assert started_attrs.start_to_fire_timeout.ToTimedelta() == timedelta(seconds=2)
    assert fired_attrs.timer_id == started_attrs.timer_id
    assert fired_attrs.started_event_id == timer_started[0].event_id
    fired_after = timer_fired[0].event_time.ToDatetime() - timer_started[0].event_time.ToDatetime()
    assert fired_after >= timedelta(seconds=1.9), fired_after


async def test_terminate(client, task_queue):
    async with worker(client, task_queue):
        handle = await client.start_workflow(wf.WaitForeverWorkflow.run, id=new_id("term"), task_queue=task_queue)
        await asyncio.sleep(0.3)
        await handle.terminate("detail-1", reason="no longer needed")
        with pytest.raises(WorkflowFailureError) as failure:
            await result_of(handle)
    assert isinstance(failure.value.cause, TerminatedError), failure.value.cause
    assert failure.value.cause.message == "no longer needed"
    description = await handle.describe()
    assert description.status == WorkflowExecutionStatus.WORKFLOW_EXECUTION_STATUS_TERMINATED
    assert description.close_time is not None
    events = await history_events(handle)
    assert events[-1].event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED
    terminated = events[-1].workflow_execution_terminated_event_attributes
    assert terminated.reason == "no longer needed"
    assert [p.data for p in terminated.details.payloads] == [b'"detail-1"']


async def test_workflow_id_conflict(client, task_queue):
    workflow_id = new_id("dup")
    first = await client.start_workflow(wf.WaitForeverWorkflow.run, id=workflow_id, task_queue=task_queue)
    with pytest.raises(WorkflowAlreadyStartedError) as conflict:
        await client.start_workflow(wf.WaitForeverWorkflow.run, id=workflow_id, task_queue=task_queue)
    assert conflict.value.workflow_id == workflow_id
    assert conflict.value.run_id == first.first_execution_run_id
    await first.terminate("make room")
    # Once closed, the default reuse policy (allow duplicate) admits a new run under the same ID ...
    second = await client.start_workflow(wf.WaitForeverWorkflow.run, id=workflow_id, task_queue=task_queue)
    assert second.first_execution_run_id != first.first_execution_run_id
    await second.terminate("cleanup")
    # ... and REJECT_DUPLICATE refuses it.
    with pytest.raises(WorkflowAlreadyStartedError):
        await client.start_workflow(wf.WaitForeverWorkflow.run, id=workflow_id, task_queue=task_queue,
                                    id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE)


async def test_history_event_ids_are_contiguous(client, task_queue):
    order = wf.Order(order_id="o-1", quantity=1, unit_price_cents=1)
    async with worker(client, task_queue):
        handle = await client.start_workflow(wf.OrderWorkflow.run, order, id=new_id("ids"), task_queue=task_queue)
        await result_of(handle)
    events = await history_events(handle)
    assert [e.event_id for e in events] == list(range(1, len(events) + 1))
    assert events[0].event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED
    assert events[-1].event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED
    workflow_task = ["EVENT_TYPE_WORKFLOW_TASK_SCHEDULED", "EVENT_TYPE_WORKFLOW_TASK_STARTED",
                     "EVENT_TYPE_WORKFLOW_TASK_COMPLETED"]
    activity_task = ["EVENT_TYPE_ACTIVITY_TASK_SCHEDULED", "EVENT_TYPE_ACTIVITY_TASK_STARTED",
                     "EVENT_TYPE_ACTIVITY_TASK_COMPLETED"]
    expected = (["EVENT_TYPE_WORKFLOW_EXECUTION_STARTED"] + (workflow_task + activity_task) * 3 + workflow_task
                + ["EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED"])
    assert types_of(events) == expected
    # cross references between events point at the right event IDs
    by_id = {e.event_id: e for e in events}
    for e in events:
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            a = e.activity_task_completed_event_attributes
            assert by_id[a.scheduled_event_id].event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
            assert by_id[a.started_event_id].event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
            assert by_id[a.started_event_id].activity_task_started_event_attributes.scheduled_event_id == \
                a.scheduled_event_id
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            a = e.workflow_task_completed_event_attributes
            assert (a.scheduled_event_id, a.started_event_id) == (e.event_id - 2, e.event_id - 1)
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            a = e.activity_task_scheduled_event_attributes
            assert by_id[a.workflow_task_completed_event_id].event_type == \
                EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
            assert a.task_queue.name == task_queue
    completed = events[-1].workflow_execution_completed_event_attributes
    assert completed.workflow_task_completed_event_id == events[-2].event_id


async def test_cancel_reaches_the_running_activity_and_cleanup_runs(client, task_queue):
    key = new_id("cancel")
    async with worker(client, task_queue):
        handle = await client.start_workflow(wf.CancellableWorkflow.run, key, id=new_id("cancel"),
                                             task_queue=task_queue)
        deadline = time.monotonic() + 10
        while "started" not in activities_state.values(key):
            assert time.monotonic() < deadline, "activity never started"
            await asyncio.sleep(0.05)
        await handle.cancel()
        with pytest.raises(WorkflowFailureError) as failure:
            await result_of(handle)
    assert isinstance(failure.value.cause, CancelledError), failure.value.cause
    assert activities_state.values(key) == ["started", "activity cancelled", "cleanup"]
    description = await handle.describe()
    assert description.status == WorkflowExecutionStatus.WORKFLOW_EXECUTION_STATUS_CANCELED
    types = types_of(await history_events(handle))
    for expected in ["EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED", "EVENT_TYPE_ACTIVITY_TASK_CANCEL_REQUESTED",
                     "EVENT_TYPE_ACTIVITY_TASK_CANCELED", "EVENT_TYPE_ACTIVITY_TASK_COMPLETED"]:
        assert expected in types, types
    assert types.index("EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED") < \
        types.index("EVENT_TYPE_ACTIVITY_TASK_CANCEL_REQUESTED") < types.index("EVENT_TYPE_ACTIVITY_TASK_CANCELED")
    assert types[-1] == "EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED"


async def test_activity_timeouts_that_end_the_activity(client, task_queue):
    key = new_id("timeouts")
    async with worker(client, task_queue):
        handle = await client.start_workflow(wf.ActivityTimeoutsWorkflow.run, args=[key, new_id("unpolled")],
                                             id=new_id("timeouts"), task_queue=task_queue)
        summaries = await result_of(handle)
    # schedule-to-start: never retried
    assert summaries[0] == ["TIMEOUT", "TimeoutError", "SCHEDULE_TO_START", ""], summaries
    # schedule-to-close ends the retries with retry state TIMEOUT. Which event ends it depends on
    # timing, in Temporal's server as in Chronicle: a failure whose next retry would start after
    # the deadline is final (ActivityTaskFailed, the application error); if the schedule-to-close
    # timer fires first (Temporal's dev server fires timers up to ~1 s late, so there it usually
    # does) it is ActivityTaskTimedOut with the last failure as cause.
    assert summaries[1] in (["TIMEOUT", "TimeoutError", "SCHEDULE_TO_CLOSE", "ApplicationError"],
                            ["TIMEOUT", "ApplicationError", "", ""]), summaries
    attempts = activities_state.values(key)
    # (Temporal's dev server fires retry timers up to ~1 s late, so only a few attempts fit there)
    assert len(attempts) >= 2 and attempts == list(range(1, len(attempts) + 1)), attempts


async def test_sub_second_activity_timeouts_fire_a_second_after_they_are_armed(client, task_queue):
    """Temporal fires timers due less than about a second ahead late, at the end of the window its
    timer queue has already read (200-700 ms timeouts fired 0.45-0.99 s after they were armed on
    its dev server). So an activity that returns 300 ms into a 200 ms start-to-close timeout
    completes there. Chronicle fires activity timeouts no sooner than a second after arming them,
    so that what completes on Temporal completes here too."""
    async with worker(client, task_queue):
        handle = await client.start_workflow(wf.SubSecondTimeoutsWorkflow.run, new_id("unpolled"),
                                             id=new_id("subsecond"), task_queue=task_queue)
        outcomes = await result_of(handle)
    assert outcomes == ["slept 0.3", "START_TO_CLOSE", "HEARTBEAT", "SCHEDULE_TO_START"], outcomes
    events = await history_events(handle)
    by_id = {e.event_id: e for e in events}
    delays = {}
    for e in events:
        if e.event_type != EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT:
            continue
        attrs = e.activity_task_timed_out_event_attributes
        # A timeout is armed when the attempt starts, schedule-to-start when it is scheduled.
        armed = by_id[attrs.started_event_id or attrs.scheduled_event_id]
        kind = TimeoutType.Name(attrs.failure.timeout_failure_info.timeout_type)
        delays[kind] = (e.event_time.ToDatetime() - armed.event_time.ToDatetime()).total_seconds()
    assert set(delays) == {"TIMEOUT_TYPE_START_TO_CLOSE", "TIMEOUT_TYPE_HEARTBEAT",
                           "TIMEOUT_TYPE_SCHEDULE_TO_START"}, delays
    for kind, delay in delays.items():
        assert 0.3 <= delay < 3.0, (kind, delay, delays)


async def test_search_attributes_and_memo_upserts(client, task_queue):
    async with worker(client, task_queue):
        handle = await client.start_workflow(wf.TaggingWorkflow.run, id=new_id("tagging"), task_queue=task_queue)
        deadline = time.monotonic() + 10
        while True:
            description = await handle.describe()
            if description.typed_search_attributes.get(wf.ORDER_REGION) is not None:
                break
            assert time.monotonic() < deadline, "search attributes never appeared"
            await asyncio.sleep(0.1)
        assert description.typed_search_attributes.get(wf.ORDER_REGION) == "eu-west"
        assert description.typed_search_attributes.get(wf.ORDER_TOTAL) == 42
        assert await description.memo_value("note") == "priority"
        await handle.signal(wf.TaggingWorkflow.finish)
        assert await result_of(handle) == "tagged"
    types = types_of(await history_events(handle))
    assert "EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES" in types
    assert "EVENT_TYPE_WORKFLOW_PROPERTIES_MODIFIED" in types


# --- child workflows -----------------------------------------------------------------------------

async def wait_for_status(client, workflow_id, status, timeout=15.0):
    deadline = time.monotonic() + timeout
    while True:
        description = await client.get_workflow_handle(workflow_id).describe()
        if description.status == status:
            return description
        assert time.monotonic() < deadline, (workflow_id, description.status, status)
        await asyncio.sleep(0.1)


async def test_child_workflows_run_and_report_to_the_parent(client, task_queue):
    parent_id = new_id("family")
    child_ids = [f"{parent_id}-child-{i}" for i in range(4)]
    async with worker(client, task_queue):
        handle = await client.start_workflow(wf.FamilyWorkflow.run, child_ids, id=parent_id, task_queue=task_queue)
        assert await result_of(handle) == 2 * (1 + 2 + 3 + 4)
    events = await history_events(handle)
    types = types_of(events)
    assert types.count("EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED") == 4
    assert types.count("EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_STARTED") == 4
    assert types.count("EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_COMPLETED") == 4
    by_id = {e.event_id: e for e in events}
    for e in events:
        if e.event_type == EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED:
            a = e.start_child_workflow_execution_initiated_event_attributes
            assert a.namespace == "default"
            assert a.task_queue.name == task_queue  # inherited from the parent
            assert a.parent_close_policy == 1  # TERMINATE, the default
            assert by_id[a.workflow_task_completed_event_id].event_type == \
                EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
        if e.event_type == EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_COMPLETED:
            a = e.child_workflow_execution_completed_event_attributes
            started = by_id[a.started_event_id]
            assert started.event_type == EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_STARTED
            assert started.child_workflow_execution_started_event_attributes.initiated_event_id == \
                a.initiated_event_id
            assert by_id[a.initiated_event_id].event_type == \
                EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED
            assert a.workflow_type.name == "DoublerChild"
    # the first child is awaited before the others start
    assert types.index("EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_COMPLETED") < \
        [i for i, t in enumerate(types) if t == "EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED"][1]
    # a top-level workflow is its own root; its children have it as root
    root = (await handle.describe()).raw_description.workflow_execution_info.root_execution
    assert (root.workflow_id, root.run_id) == (parent_id, handle.result_run_id)
    for child_id in child_ids:
        child = client.get_workflow_handle(child_id)
        description = await child.describe()
        assert description.status == WorkflowExecutionStatus.WORKFLOW_EXECUTION_STATUS_COMPLETED
        assert description.parent_id == parent_id
        assert description.parent_run_id == handle.result_run_id
        root = description.raw_description.workflow_execution_info.root_execution
        assert (root.workflow_id, root.run_id) == (parent_id, handle.result_run_id)
        first = (await history_events(child))[0].workflow_execution_started_event_attributes
        assert first.parent_workflow_execution.workflow_id == parent_id
        assert first.parent_workflow_namespace == "default"
        assert first.parent_initiated_event_id > 0
        assert first.root_workflow_execution.workflow_id == parent_id


async def test_child_failure_and_child_id_in_use(client, task_queue):
    parent_id = new_id("failing-family")
    taken_id = new_id("taken")
    async with worker(client, task_queue):
        taken = await client.start_workflow(wf.WaitingChild.run, id=taken_id, task_queue=task_queue)
        handle = await client.start_workflow(wf.FailingFamilyWorkflow.run, args=[f"{parent_id}-child", taken_id],
                                             id=parent_id, task_queue=task_queue)
        out = await result_of(handle)
        await taken.terminate("cleanup")
    assert out == ["ApplicationError|ChildBroke|child broke|RETRY_POLICY_NOT_SET",
                   f"already started: {taken_id}"], out
    events = await history_events(handle)
    failed = [e.child_workflow_execution_failed_event_attributes for e in events
              if e.event_type == EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_FAILED]
    assert len(failed) == 1
    assert failed[0].failure.message == "child broke"
    assert failed[0].failure.application_failure_info.type == "ChildBroke"
    start_failed = [e.start_child_workflow_execution_failed_event_attributes for e in events
                    if e.event_type == EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_FAILED]
    assert len(start_failed) == 1
    assert start_failed[0].workflow_id == taken_id
    assert start_failed[0].cause == 1  # WORKFLOW_ALREADY_EXISTS


async def test_parent_close_policies(client, task_queue):
    parent_id = new_id("policies")
    children = {policy: f"{parent_id}-{policy.lower()}" for policy in ("TERMINATE", "ABANDON", "REQUEST_CANCEL")}
    async with worker(client, task_queue):
        handle = await client.start_workflow(wf.PolicyFamilyWorkflow.run,
                                             [[child_id, policy] for policy, child_id in children.items()],
                                             id=parent_id, task_queue=task_queue)
        deadline = time.monotonic() + 15
        while True:
            pending = (await handle.describe()).raw_description.pending_children
            if len(pending) == 3 and all(p.run_id for p in pending):
                break
            assert time.monotonic() < deadline, pending
            await asyncio.sleep(0.1)
        assert sorted(p.parent_close_policy for p in pending) == [1, 2, 3]
        await handle.terminate("parent done")
        await wait_for_status(client, children["TERMINATE"],
                              WorkflowExecutionStatus.WORKFLOW_EXECUTION_STATUS_TERMINATED)
        await wait_for_status(client, children["REQUEST_CANCEL"],
                              WorkflowExecutionStatus.WORKFLOW_EXECUTION_STATUS_CANCELED)
        await asyncio.sleep(0.5)
        abandoned = client.get_workflow_handle(children["ABANDON"])
        assert (await abandoned.describe()).status == WorkflowExecutionStatus.WORKFLOW_EXECUTION_STATUS_RUNNING
        await abandoned.terminate("cleanup")
    terminated = (await history_events(client.get_workflow_handle(children["TERMINATE"])))[-1]
    assert terminated.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED
    assert terminated.workflow_execution_terminated_event_attributes.reason == "by parent close policy"
    cancelled = await history_events(client.get_workflow_handle(children["REQUEST_CANCEL"]))
    requested = [e.workflow_execution_cancel_requested_event_attributes for e in cancelled
                 if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED]
    assert len(requested) == 1
    assert requested[0].external_workflow_execution.workflow_id == parent_id
    # the terminated parent records nothing after its termination
    assert (await history_events(handle))[-1].event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED


async def test_parent_cancels_its_child(client, task_queue):
    parent_id = new_id("canceller")
    child_id = f"{parent_id}-child"
    async with worker(client, task_queue):
        handle = await client.start_workflow(wf.CancelChildWorkflow.run, child_id, id=parent_id,
                                             task_queue=task_queue)
        assert await result_of(handle) == "CancelledError"
    description = await client.get_workflow_handle(child_id).describe()
    assert description.status == WorkflowExecutionStatus.WORKFLOW_EXECUTION_STATUS_CANCELED
    types = types_of(await history_events(handle))
    for expected in ["EVENT_TYPE_REQUEST_CANCEL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED",
                     "EVENT_TYPE_EXTERNAL_WORKFLOW_EXECUTION_CANCEL_REQUESTED",
                     "EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_CANCELED"]:
        assert types.count(expected) == 1, types
    assert types.index("EVENT_TYPE_REQUEST_CANCEL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED") < \
        types.index("EVENT_TYPE_EXTERNAL_WORKFLOW_EXECUTION_CANCEL_REQUESTED")


async def test_signal_and_cancel_external_workflows(client, task_queue):
    target_id, missing_id = new_id("target"), new_id("missing")
    async with worker(client, task_queue):
        target = await client.start_workflow(wf.WaitingChild.run, id=target_id, task_queue=task_queue)
        handle = await client.start_workflow(wf.SignallerWorkflow.run, args=[target_id, missing_id],
                                             id=new_id("signaller"), task_queue=task_queue)
        out = await result_of(handle)
        with pytest.raises(WorkflowFailureError) as failure:
            await result_of(target)
    assert out[0] == "signalled" and out[2] == "cancel requested", out
    assert out[1].startswith("ApplicationError: ExternalWorkflowExecutionNotFound"), out
    assert out[3].startswith("ApplicationError: ExternalWorkflowExecutionNotFound"), out
    assert isinstance(failure.value.cause, CancelledError), failure.value.cause
    types = types_of(await history_events(handle))
    for expected in ["EVENT_TYPE_SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED",
                     "EVENT_TYPE_REQUEST_CANCEL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED"]:
        assert types.count(expected) == 2, types
    for expected in ["EVENT_TYPE_EXTERNAL_WORKFLOW_EXECUTION_SIGNALED",
                     "EVENT_TYPE_SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_FAILED",
                     "EVENT_TYPE_EXTERNAL_WORKFLOW_EXECUTION_CANCEL_REQUESTED",
                     "EVENT_TYPE_REQUEST_CANCEL_EXTERNAL_WORKFLOW_EXECUTION_FAILED"]:
        assert types.count(expected) == 1, types
    target_events = await history_events(target)
    signaled = [e.workflow_execution_signaled_event_attributes for e in target_events
                if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED]
    assert len(signaled) == 1 and signaled[0].signal_name == "poke"
    assert signaled[0].external_workflow_execution.workflow_id == handle.id
    requested = [e.workflow_execution_cancel_requested_event_attributes for e in target_events
                 if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED]
    assert len(requested) == 1 and requested[0].external_workflow_execution.workflow_id == handle.id


# --- details the SDKs' own test suites rely on -----------------------------------------------------

async def test_zero_timers_memo_removal_and_priorities(client, task_queue):
    from temporalio.common import Priority

    activity_queue = task_queue + "-activities"
    async with worker(client, task_queue), worker(client, activity_queue):
        handle = await client.start_workflow(
            wf.SdkDetailsWorkflow.run,
            activity_queue,
            id=new_id("details"),
            task_queue=task_queue,
            memo={"kept": "kept", "changed": "old", "removed": "removed"},
            priority=Priority(priority_key=2, fairness_key="tenant-run", fairness_weight=1.5),
        )
        own, activity_priority = await result_of(handle)
    # The run sees its priority; the polled activity task inherits the run's key and weight and
    # overrides the fairness key (an eagerly started one carries only its own, as in Temporal).
    assert own == [2, "tenant-run", 1.5]
    assert activity_priority == [2, "tenant-activity", 1.5]
    events = await history_events(handle)
    assert types_of(events).count("EVENT_TYPE_TIMER_FIRED") == 2
    started = events[0].workflow_execution_started_event_attributes
    assert (started.priority.priority_key, started.priority.fairness_key) == (2, "tenant-run")
    scheduled = [e.activity_task_scheduled_event_attributes for e in events
                 if e.HasField("activity_task_scheduled_event_attributes")]
    assert [(s.priority.priority_key, s.priority.fairness_key) for s in scheduled] == [(0, "tenant-activity")]
    description = await handle.describe()
    assert await description.memo() == {"kept": "kept", "changed": "new", "added": "added"}
    assert description.raw_description.workflow_execution_info.priority.fairness_key == "tenant-run"
    run_id = description.run_id
    assert uuid_version(run_id) == 7, run_id


def uuid_version(text):
    import uuid
    return uuid.UUID(text).version


async def test_health_check_and_list_pages(client, task_queue):
    assert await client.service_client.check_health()
    workflow_id = new_id("listed")
    async with worker(client, task_queue):
        for _ in range(3):
            await result_of(await client.start_workflow(wf.TimerWorkflow.run, 0, id=workflow_id, task_queue=task_queue))
    query = f"WorkflowId = '{workflow_id}'"
    deadline = time.monotonic() + 10
    while len([w async for w in client.list_workflows(query)]) < 3:
        assert time.monotonic() < deadline, "runs never listed"
        await asyncio.sleep(0.2)
    assert len([w async for w in client.list_workflows(query, page_size=2, limit=3)]) == 3
    assert len([w async for w in client.list_workflows(query, page_size=1)]) == 3
    counted = await client.count_workflows(f"{query} GROUP BY ExecutionStatus")
    assert counted.count == 3
    assert [(g.group_values, g.count) for g in counted.groups] == [(["Completed"], 3)]


async def test_cancel_after_the_result_succeeds_terminate_does_not(client, task_queue):
    async with worker(client, task_queue):
        handle = await client.start_workflow(wf.TimerWorkflow.run, 0, id=new_id("closed"), task_queue=task_queue)
        assert await result_of(handle) == "woke"
    await handle.cancel()
    with pytest.raises(RPCError):
        await handle.terminate()
    description = await handle.describe()
    assert description.status == WorkflowExecutionStatus.WORKFLOW_EXECUTION_STATUS_COMPLETED
