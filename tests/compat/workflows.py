"""Workflows and activities of the compatibility suite (imported by tests and worker processes)."""

import asyncio
from dataclasses import dataclass
from datetime import timedelta
from typing import List, Optional

from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    import activities_state  # noqa: F401  (shared, process-local call records)


# --- order: three sequential activities -----------------------------------------------------

@activity.defn
async def reserve_stock(order: str) -> str:
    return f"{order}:reserved"


@activity.defn
async def charge_card(step: str) -> str:
    return f"{step}:charged"


@activity.defn
async def ship_order(step: str) -> str:
    return f"{step}:shipped"


@workflow.defn
class OrderWorkflow:
    @workflow.run
    async def run(self, order: str) -> str:
        opts = dict(start_to_close_timeout=timedelta(seconds=10))
        step = await workflow.execute_activity(reserve_stock, order, **opts)
        step = await workflow.execute_activity(charge_card, step, **opts)
        return await workflow.execute_activity(ship_order, step, **opts)


# --- saga with compensations ------------------------------------------------------------------

@activity.defn(name="saga_step")
async def saga_step(name: str) -> str:
    activities_state.record("saga", name)
    if name == "ship":
        raise ApplicationError("carrier refused the parcel", type="ShipmentRefused", non_retryable=True)
    return name


@workflow.defn
class SagaWorkflow:
    @workflow.run
    async def run(self) -> List[str]:
        opts = dict(start_to_close_timeout=timedelta(seconds=10))
        compensations: List[str] = []
        done: List[str] = []
        try:
            for step, undo in (("reserve", "release"), ("charge", "refund"), ("ship", None)):
                done.append(await workflow.execute_activity(saga_step, step, **opts))
                if undo:
                    compensations.append(undo)
        except ActivityError:
            for undo in reversed(compensations):
                done.append(await workflow.execute_activity(saga_step, undo, **opts))
            raise ApplicationError("order failed and was compensated", done, non_retryable=True)
        return done


# --- retries ----------------------------------------------------------------------------------

@activity.defn
async def fails_twice(key: str) -> int:
    activities_state.record(key, activity.info().attempt)
    if activity.info().attempt < 3:
        raise ApplicationError(f"attempt {activity.info().attempt} failed", type="Transient")
    return activity.info().attempt


@workflow.defn
class RetryWorkflow:
    @workflow.run
    async def run(self, key: str) -> int:
        return await workflow.execute_activity(
            fails_twice, key, start_to_close_timeout=timedelta(seconds=10),
            retry_policy=RetryPolicy(initial_interval=timedelta(seconds=1), backoff_coefficient=2.0, maximum_attempts=5))


@activity.defn
async def bad_input(key: str) -> str:
    activities_state.record(key, activity.info().attempt)
    raise ApplicationError("the input is wrong", type="BadInput")


@workflow.defn
class NonRetryableWorkflow:
    @workflow.run
    async def run(self, key: str) -> str:
        return await workflow.execute_activity(
            bad_input, key, start_to_close_timeout=timedelta(seconds=10),
            retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=100), non_retryable_error_types=["BadInput"]))


# --- timeouts ---------------------------------------------------------------------------------

@activity.defn
async def slow_first_attempt(key: str) -> int:
    activities_state.record(key, activity.info().attempt)
    if activity.info().attempt == 1:
        await asyncio.sleep(3)
    return activity.info().attempt


@workflow.defn
class StartToCloseWorkflow:
    @workflow.run
    async def run(self, key: str) -> int:
        return await workflow.execute_activity(
            slow_first_attempt, key, start_to_close_timeout=timedelta(seconds=1),
            retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=100)))


@activity.defn
async def resumable_count(key: str) -> int:
    """Counts to 10, heartbeating progress; the first attempt stops heartbeating at 4."""
    start = activity.info().heartbeat_details[0] if activity.info().heartbeat_details else 0
    activities_state.record(key, (activity.info().attempt, start))
    for i in range(start, 10):
        activity.heartbeat(i)
        if activity.info().attempt == 1 and i == 4:
            await asyncio.sleep(5)  # hangs without heartbeats: the heartbeat timeout fires
        await asyncio.sleep(0.05)
    return start


@workflow.defn
class HeartbeatWorkflow:
    @workflow.run
    async def run(self, key: str) -> int:
        return await workflow.execute_activity(
            resumable_count, key, start_to_close_timeout=timedelta(seconds=30), heartbeat_timeout=timedelta(seconds=1),
            retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=100)))


# --- signals, queries, conditions, timers -----------------------------------------------------

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
            await workflow.wait_condition(lambda: self.approver is not None, timeout=timedelta(seconds=timeout_seconds))
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


# --- a workflow whose worker is killed ----------------------------------------------------------

@activity.defn
async def journal_step(args: List[str]) -> str:
    """Appends to a journal file; step 'two' blocks on the first worker until it is killed."""
    journal, step = args
    with open(journal, "a") as f:
        f.write(f"{step}\n")
    if step == "two" and activity.info().attempt == 1:
        await asyncio.sleep(3600)
    return step


@workflow.defn
class JournalWorkflow:
    @workflow.run
    async def run(self, journal: str) -> List[str]:
        out = []
        for step in ("one", "two", "three"):
            out.append(await workflow.execute_activity(
                journal_step, [journal, step], start_to_close_timeout=timedelta(seconds=3),
                retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=100))))
        return out


# --- durability -----------------------------------------------------------------------------

@activity.defn
async def double(x: int) -> int:
    return x * 2


@workflow.defn
class DurableWorkflow:
    @workflow.run
    async def run(self, args: List[int]) -> int:
        x, sleep_ms = args
        x = await workflow.execute_activity(double, x, start_to_close_timeout=timedelta(seconds=5),
                                            retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=200)))
        await workflow.sleep(timedelta(milliseconds=sleep_ms))
        return await workflow.execute_activity(double, x, start_to_close_timeout=timedelta(seconds=5),
                                               retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=200)))


ALL_WORKFLOWS = [OrderWorkflow, SagaWorkflow, RetryWorkflow, NonRetryableWorkflow, StartToCloseWorkflow,
                 HeartbeatWorkflow, ExpenseWorkflow, TimerWorkflow, WaitForeverWorkflow, JournalWorkflow, DurableWorkflow]
ALL_ACTIVITIES = [reserve_stock, charge_card, ship_order, saga_step, fails_twice, bad_input, slow_first_attempt,
                  resumable_count, journal_step, double]
