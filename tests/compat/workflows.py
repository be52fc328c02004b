"""Workflows and activities of the compatibility suite.

Imported by the tests (in-process workers) and by worker_main.py (workers in their own process).
Activities record what they did in ``activities_state`` (process-local) or in files (across
processes), so tests can assert on what really ran, how often and when.
"""

import asyncio
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import List, Optional

from temporalio import activity, workflow
from temporalio.common import Priority, RetryPolicy, SearchAttributeKey
from temporalio.exceptions import ActivityError, ApplicationError, ChildWorkflowError, WorkflowAlreadyStartedError

with workflow.unsafe.imports_passed_through():
    import activities_state

FAST_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=100), backoff_coefficient=1.0)


# --- order: three sequential activities ----------------------------------------------------

@dataclass
class Order:
    order_id: str
    quantity: int
    unit_price_cents: int


@activity.defn
async def reserve_stock(order: Order) -> str:
    return f"reserved {order.quantity} for {order.order_id}"


@activity.defn
async def charge_payment(order: Order) -> int:
    return order.quantity * order.unit_price_cents


@activity.defn
async def ship_order(order: Order) -> str:
    return f"tracking-{order.order_id}"


@dataclass
class OrderResult:
    reservation: str
    charged_cents: int
    tracking: str


@workflow.defn
class OrderWorkflow:
    @workflow.run
    async def run(self, order: Order) -> OrderResult:
        opts = dict(start_to_close_timeout=timedelta(seconds=10), retry_policy=FAST_RETRY)
        reservation = await workflow.execute_activity(reserve_stock, order, **opts)
        charged = await workflow.execute_activity(charge_payment, order, **opts)
        tracking = await workflow.execute_activity(ship_order, order, **opts)
        return OrderResult(reservation, charged, tracking)


# --- saga with compensations in reverse order ---------------------------------------------------

@activity.defn
async def saga_step(key: str, step: str) -> str:
    activities_state.record(key, step)
    if step == "ship":
        raise ApplicationError("carrier refused the parcel", type="ShipmentRefused", non_retryable=True)
    return step


@workflow.defn
class SagaWorkflow:
    @workflow.run
    async def run(self, key: str) -> List[str]:
        opts = dict(start_to_close_timeout=timedelta(seconds=10), retry_policy=FAST_RETRY)
        compensations: List[str] = []
        done: List[str] = []
        try:
            for step, undo in (("reserve", "release"), ("charge", "refund"), ("ship", "recall")):
                done.append(await workflow.execute_activity(saga_step, args=[key, step], **opts))
                compensations.append(undo)
        except ActivityError as err:
            cause_type = err.cause.type if isinstance(err.cause, ApplicationError) else repr(err.cause)
            for undo in reversed(compensations):
                done.append(await workflow.execute_activity(saga_step, args=[key, undo], **opts))
            raise ApplicationError("order failed and was compensated", done, cause_type,
                                   type="SagaCompensated", non_retryable=True)
        return done


# --- retries --------------------------------------------------------------------------------

@activity.defn
async def fails_twice(key: str) -> int:
    attempt = activity.info().attempt
    activities_state.record(key, attempt)
    if attempt < 3:
        raise ApplicationError(f"attempt {attempt} failed", type="Transient")
    return attempt


@workflow.defn
class RetryWorkflow:
    @workflow.run
    async def run(self, key: str) -> int:
        return await workflow.execute_activity(
            fails_twice, key, start_to_close_timeout=timedelta(seconds=10),
            retry_policy=RetryPolicy(initial_interval=timedelta(seconds=1), backoff_coefficient=2.0,
                                     maximum_interval=timedelta(seconds=10), maximum_attempts=5))


@activity.defn
async def rejects_input(key: str) -> str:
    activities_state.record(key, activity.info().attempt)
    # Not marked non-retryable here: the retry policy's non_retryable_error_types must stop it.
    raise ApplicationError("the input is wrong", type="BadInput")


@workflow.defn
class NonRetryableWorkflow:
    @workflow.run
    async def run(self, key: str) -> str:
        return await workflow.execute_activity(
            rejects_input, key, start_to_close_timeout=timedelta(seconds=10),
            retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=100), maximum_attempts=0,
                                     non_retryable_error_types=["BadInput"]))


# --- timeouts -------------------------------------------------------------------------------

@activity.defn
async def slow_first_attempt(key: str) -> int:
    attempt = activity.info().attempt
    activities_state.record(key, attempt)
    if attempt == 1:
        await asyncio.sleep(30)  # far past start_to_close; the server times this attempt out
    return attempt


@workflow.defn
class StartToCloseWorkflow:
    @workflow.run
    async def run(self, key: str) -> int:
        return await workflow.execute_activity(
            slow_first_attempt, key, start_to_close_timeout=timedelta(seconds=1),
            retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=100), maximum_attempts=3))


HEARTBEAT_STALL_AT = 4


@activity.defn
async def resumable_count(key: str) -> int:
    """Counts 0..9, heartbeating progress; attempt 1 stalls (no more heartbeats) at HEARTBEAT_STALL_AT.

    A retry resumes from the last heartbeat the server recorded and returns where it resumed."""
    info = activity.info()
    resumed = info.heartbeat_details[0] if info.heartbeat_details else 0
    activities_state.record(key, (info.attempt, resumed))
    for i in range(resumed, 10):
        activity.heartbeat(i)
        if info.attempt == 1 and i == HEARTBEAT_STALL_AT:
            await asyncio.sleep(60)  # hangs: the heartbeat timeout fires
        await asyncio.sleep(0.05)
    return resumed


@workflow.defn
class HeartbeatWorkflow:
    @workflow.run
    async def run(self, key: str) -> int:
        return await workflow.execute_activity(
            resumable_count, key, start_to_close_timeout=timedelta(seconds=30), heartbeat_timeout=timedelta(seconds=1),
            retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=100), maximum_attempts=3))


# --- signals, queries, conditions, timers ----------------------------------------------------

@dataclass
class Approval:
    approver: str


@workflow.defn
class ExpenseWorkflow:
    def __init__(self) -> None:
        self.approver: Optional[str] = None
        self.state = "waiting"

    @workflow.run
    async def run(self, timeout_seconds: float) -> str:
        try:
            await workflow.wait_condition(lambda: self.approver is not None,
                                          timeout=timedelta(seconds=timeout_seconds))
            self.state = f"approved by {self.approver}"
        except asyncio.TimeoutError:
            self.state = "expired"
        return self.state

    @workflow.signal
    def approve(self, approval: Approval) -> None:
        self.approver = approval.approver

    @workflow.query
    def status(self) -> str:
        return self.state


@workflow.defn
class TimerWorkflow:
    @workflow.run
    async def run(self, seconds: float) -> str:
        await workflow.sleep(seconds)
        return "woke"


@workflow.defn
class WaitForeverWorkflow:
    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: False)


# --- a workflow whose worker process is killed -------------------------------------------------

@activity.defn
async def journal_step(journal: str, step: str) -> str:
    """Appends ``step`` to the journal file; step "two" blocks forever on its first attempt."""
    with open(journal, "a") as f:
        f.write(f"{step} attempt={activity.info().attempt}\n")
    if step == "two" and activity.info().attempt == 1:
        await asyncio.sleep(3600)
    return f"{step} done"


@workflow.defn
class JournalWorkflow:
    @workflow.run
    async def run(self, journal: str) -> List[str]:
        out = []
        for step in ("one", "two", "three"):
            out.append(await workflow.execute_activity(
                journal_step, args=[journal, step], start_to_close_timeout=timedelta(seconds=3),
                retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=200), backoff_coefficient=1.0)))
        return out


# --- durability: timers and activities across a server crash -------------------------------------

def _bump_counter(directory: str, workflow_id: str, step: str) -> int:
    """Counts executions of one activity of one workflow in a file (os.O_APPEND, one line each)."""
    path = os.path.join(directory, f"{workflow_id}.{step}")
    with open(path, "a") as f:
        f.write("x\n")
    with open(path) as f:
        return len(f.read().split())


@activity.defn
async def add_tax(directory: str, workflow_id: str, amount: int) -> int:
    _bump_counter(directory, workflow_id, "add_tax")
    return amount + amount // 10


@activity.defn
async def add_shipping(directory: str, workflow_id: str, amount: int) -> int:
    _bump_counter(directory, workflow_id, "add_shipping")
    return amount + 500


@dataclass
class DurableInput:
    directory: str
    amount: int
    timer_ms: int


def durable_expected(amount: int) -> int:
    return amount + amount // 10 + 500


@workflow.defn
class DurableWorkflow:
    @workflow.run
    async def run(self, inp: DurableInput) -> int:
        wid = workflow.info().workflow_id
        opts = dict(start_to_close_timeout=timedelta(seconds=5),
                    retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=200), backoff_coefficient=1.5,
                                             maximum_interval=timedelta(seconds=2)))
        taxed = await workflow.execute_activity(add_tax, args=[inp.directory, wid, inp.amount], **opts)
        await workflow.sleep(timedelta(milliseconds=inp.timer_ms))
        return await workflow.execute_activity(add_shipping, args=[inp.directory, wid, taxed], **opts)


# --- cancellation: a workflow cancelled while its heartbeating activity runs -----------------

@activity.defn
async def heartbeat_until_cancelled(key: str) -> str:
    activities_state.record(key, "started")
    try:
        while True:
            activity.heartbeat("alive")
            await asyncio.sleep(0.1)
    except asyncio.CancelledError:
        activities_state.record(key, "activity cancelled")
        raise


@activity.defn
async def release_hold(key: str) -> str:
    activities_state.record(key, "cleanup")
    return "released"


@workflow.defn
class CancellableWorkflow:
    @workflow.run
    async def run(self, key: str) -> str:
        try:
            await workflow.execute_activity(
                heartbeat_until_cancelled, key, start_to_close_timeout=timedelta(seconds=60),
                heartbeat_timeout=timedelta(seconds=1),
                cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED)
            return "not cancelled"
        except ActivityError:
            # the activity's cancellation surfaces as an ActivityError once the workflow is cancelled;
            # clean-up still runs activities, then the workflow reports itself cancelled
            await workflow.execute_activity(release_hold, key, start_to_close_timeout=timedelta(seconds=10))
            raise asyncio.CancelledError()


# --- activity timeouts that end an activity for good; search attributes and memo ------------

ORDER_REGION = SearchAttributeKey.for_keyword("OrderRegion")
ORDER_TOTAL = SearchAttributeKey.for_int("OrderTotal")


@activity.defn
async def always_fails(key: str) -> str:
    activities_state.record(key, activity.info().attempt)
    raise ApplicationError("still broken")


def _timeout_summary(error: ActivityError) -> List[str]:
    cause = error.cause
    return [error.retry_state.name if error.retry_state is not None else "",
            type(cause).__name__, getattr(cause, "type", None).name if getattr(cause, "type", None) else "",
            type(cause.cause).__name__ if cause.cause is not None else ""]


@workflow.defn
class ActivityTimeoutsWorkflow:
    @workflow.run
    async def run(self, key: str, unpolled_queue: str) -> List[List[str]]:
        summaries = []
        try:
            await workflow.execute_activity("never_polled", key, task_queue=unpolled_queue,
                                            schedule_to_start_timeout=timedelta(seconds=1),
                                            start_to_close_timeout=timedelta(seconds=10))
        except ActivityError as e:
            summaries.append(_timeout_summary(e))
        try:
            await workflow.execute_activity(always_fails, key, schedule_to_close_timeout=timedelta(seconds=2),
                                            retry_policy=FAST_RETRY)
        except ActivityError as e:
            summaries.append(_timeout_summary(e))
        return summaries


@workflow.defn
class TaggingWorkflow:
    def __init__(self) -> None:
        self.done = False

    @workflow.run
    async def run(self) -> str:
        workflow.upsert_search_attributes([ORDER_REGION.value_set("eu-west"), ORDER_TOTAL.value_set(42)])
        workflow.upsert_memo({"note": "priority"})
        await workflow.wait_condition(lambda: self.done)
        return "tagged"

    @workflow.signal
    def finish(self) -> None:
        self.done = True


# --- zero-duration timers, memo removal, priorities -------------------------------------------------

@activity.defn
async def report_priority() -> List:
    p = activity.info().priority
    return [p.priority_key, p.fairness_key, p.fairness_weight]


@workflow.defn
class SdkDetailsWorkflow:
    """Zero-length sleeps (a timer of 0 s, and one below a millisecond), a memo upsert that
    changes, adds and removes keys, and an activity with its own priority (on another task queue,
    so it is polled rather than started eagerly)."""

    @workflow.run
    async def run(self, activity_task_queue: str) -> List:
        await workflow.sleep(0)
        await workflow.sleep(timedelta(microseconds=200))
        workflow.upsert_memo({"changed": "new", "added": "added", "removed": None})
        own = workflow.info().priority
        activity_priority = await workflow.execute_activity(
            report_priority,
            task_queue=activity_task_queue,
            start_to_close_timeout=timedelta(seconds=10),
            priority=Priority(fairness_key="tenant-activity"),
        )
        return [[own.priority_key, own.fairness_key, own.fairness_weight], activity_priority]


# --- child workflows -----------------------------------------------------------------------------

@workflow.defn
class DoublerChild:
    @workflow.run
    async def run(self, x: int) -> int:
        await workflow.sleep(0.1)
        return 2 * x


@workflow.defn
class FailingChild:
    @workflow.run
    async def run(self, message: str) -> None:
        raise ApplicationError(message, type="ChildBroke", non_retryable=True)


@workflow.defn
class WaitingChild:
    """Runs until cancelled (then reports itself cancelled) or terminated."""

    @workflow.run
    async def run(self) -> str:
        await workflow.wait_condition(lambda: False)
        return "never"


@workflow.defn
class FamilyWorkflow:
    """One child through execute_child_workflow, the others started together, results summed."""

    @workflow.run
    async def run(self, child_ids: List[str]) -> int:
        total = await workflow.execute_child_workflow(DoublerChild.run, 1, id=child_ids[0])
        handles = [await workflow.start_child_workflow(DoublerChild.run, i + 2, id=child_id)
                   for i, child_id in enumerate(child_ids[1:])]
        for handle in handles:
            total += await handle
        return total


@workflow.defn
class FailingFamilyWorkflow:
    """Reports how a failing child and a child whose workflow ID is taken surfaced."""

    @workflow.run
    async def run(self, failing_id: str, taken_id: str) -> List[str]:
        out = []
        try:
            await workflow.execute_child_workflow(FailingChild.run, "child broke", id=failing_id)
            out.append("no failure")
        except ChildWorkflowError as err:
            cause = err.cause
            out.append(f"{type(cause).__name__}|{getattr(cause, 'type', '')}|{cause.message}|"
                       f"{err.retry_state.name if err.retry_state is not None else ''}")
        try:
            await workflow.start_child_workflow(WaitingChild.run, id=taken_id)
            out.append("started")
        except WorkflowAlreadyStartedError as err:
            out.append(f"already started: {err.workflow_id}")
        return out


@workflow.defn
class PolicyFamilyWorkflow:
    """Starts a WaitingChild per (id, policy name), then waits until cancelled or terminated."""

    @workflow.run
    async def run(self, children: List[List[str]]) -> None:
        for child_id, policy in children:
            await workflow.start_child_workflow(WaitingChild.run, id=child_id,
                                                parent_close_policy=workflow.ParentClosePolicy[policy])
        await workflow.wait_condition(lambda: False)


@workflow.defn
class CancelChildWorkflow:
    """Starts a WaitingChild, cancels it, and reports how the child ended."""

    @workflow.run
    async def run(self, child_id: str) -> str:
        handle = await workflow.start_child_workflow(WaitingChild.run, id=child_id)
        await workflow.sleep(0.2)
        handle.cancel()
        try:
            await handle
            return "completed"
        except ChildWorkflowError as err:
            return type(err.cause).__name__


@workflow.defn
class SignallerWorkflow:
    """Signals a workflow by ID and one that does not exist, then asks for the cancellation of
    both; reports the four outcomes."""

    @workflow.run
    async def run(self, target_id: str, missing_id: str) -> List[str]:
        out = []
        for workflow_id in (target_id, missing_id):
            try:
                await workflow.get_external_workflow_handle(workflow_id).signal("poke", "hello")
                out.append("signalled")
            except Exception as err:
                out.append(f"{type(err).__name__}: {err}")
        for workflow_id in (target_id, missing_id):
            try:
                await workflow.get_external_workflow_handle(workflow_id).cancel()
                out.append("cancel requested")
            except Exception as err:
                out.append(f"{type(err).__name__}: {err}")
        return out


@activity.defn
async def sleeps_for(seconds: float) -> str:
    """Takes ``seconds`` without heartbeating (cancelled by the SDK when it gives up on it)."""
    await asyncio.sleep(seconds)
    return f"slept {seconds}"


ONE_ATTEMPT = RetryPolicy(maximum_attempts=1)
SUB_SECOND = timedelta(milliseconds=200)


@workflow.defn
class SubSecondTimeoutsWorkflow:
    """Activities with 200 ms timeouts: one that returns after 300 ms, then one timing out on each
    of start-to-close, heartbeat and schedule-to-start. Returns how each one ended."""

    @workflow.run
    async def run(self, unpolled_queue: str) -> List[str]:
        outcomes = []
        calls = [
            dict(args=[0.3], start_to_close_timeout=SUB_SECOND),
            dict(args=[5.0], start_to_close_timeout=SUB_SECOND),
            dict(args=[5.0], start_to_close_timeout=timedelta(seconds=30), heartbeat_timeout=SUB_SECOND),
            dict(args=[0.0], task_queue=unpolled_queue, schedule_to_start_timeout=SUB_SECOND,
                 start_to_close_timeout=timedelta(seconds=30)),
        ]
        for call in calls:
            try:
                outcomes.append(await workflow.execute_activity(sleeps_for, retry_policy=ONE_ATTEMPT, **call))
            except ActivityError as e:
                outcomes.append(_timeout_summary(e)[2])
        return outcomes


ALL_WORKFLOWS = [OrderWorkflow, SagaWorkflow, RetryWorkflow, NonRetryableWorkflow, StartToCloseWorkflow,
                 HeartbeatWorkflow, ExpenseWorkflow, TimerWorkflow, WaitForeverWorkflow, JournalWorkflow,
                 DurableWorkflow, CancellableWorkflow,
                 ActivityTimeoutsWorkflow, TaggingWorkflow, DoublerChild, FailingChild, WaitingChild,
                 FamilyWorkflow, FailingFamilyWorkflow, PolicyFamilyWorkflow, CancelChildWorkflow,
                 SignallerWorkflow, SdkDetailsWorkflow, SubSecondTimeoutsWorkflow]
ALL_ACTIVITIES = [reserve_stock, charge_payment, ship_order, saga_step, fails_twice, rejects_input,
                  slow_first_attempt, resumable_count, journal_step, add_tax, add_shipping,
                  heartbeat_until_cancelled, release_hold, always_fails, report_priority, sleeps_for]


# --- visibility: upserts checked against the namespace's search attributes -----------------------

VIS_KEYWORD = SearchAttributeKey.for_keyword("VisKeyword")
UNREGISTERED = SearchAttributeKey.for_keyword("VisNeverRegistered")


@workflow.defn
class VisUpsertWorkflow:
    """Upserts VisKeyword (or, with ``bad``, an attribute nobody registered), then waits."""

    def __init__(self) -> None:
        self.done = False

    @workflow.run
    async def run(self, value: str, bad: bool) -> str:
        if bad:
            workflow.upsert_search_attributes([UNREGISTERED.value_set(value)])
        else:
            workflow.upsert_search_attributes([VIS_KEYWORD.value_set(value)])
        await workflow.wait_condition(lambda: self.done)
        return value

    @workflow.signal
    def finish(self) -> None:
        self.done = True
