"""Workflows and activities of test_worker_commands.py: an activity that never heartbeats and
runs until it is cancelled, recording when and why (``ATTEMPTS``, keyed by the workflow ID), and
workflows that cancel it, wait on it, or let it time out.

Activities are process-local: the tests run their worker in-process."""

import asyncio
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Dict, Optional

from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError
from temporalio.workflow import ActivityCancellationType

ONCE = RetryPolicy(maximum_attempts=1)


@dataclass
class Attempt:
    started: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    started_at: float = 0.0
    cancelled_at: float = 0.0
    details: Optional[activity.ActivityCancellationDetails] = None


# Workflow ID -> its activity's attempt (created by the test before the workflow starts).
ATTEMPTS: Dict[str, Attempt] = {}


@activity.defn
async def runs_until_cancelled(key: str) -> str:
    """Never heartbeats: only a cancellation the worker is told of (or its own timeout) ends it."""
    attempt = ATTEMPTS[key]
    attempt.started_at = time.monotonic()
    attempt.started.set()
    try:
        await asyncio.sleep(600)
        return "finished"
    except asyncio.CancelledError:
        attempt.cancelled_at = time.monotonic()
        attempt.details = activity.cancellation_details()
        attempt.cancelled.set()
        raise


def _start(start_to_close: timedelta, cancellation_type=ActivityCancellationType.TRY_CANCEL):
    return workflow.start_activity(
        runs_until_cancelled,
        workflow.info().workflow_id,
        start_to_close_timeout=start_to_close,
        retry_policy=ONCE,
        cancellation_type=cancellation_type,
    )


@workflow.defn
class CancelsItsActivity:
    """Starts the activity, cancels it when signalled, and waits for the activity's answer."""

    def __init__(self) -> None:
        self.cancel = False

    @workflow.signal
    def cancel_activity(self) -> None:
        self.cancel = True

    @workflow.run
    async def run(self) -> str:
        handle = _start(timedelta(minutes=5), ActivityCancellationType.WAIT_CANCELLATION_COMPLETED)
        await workflow.wait_condition(lambda: self.cancel)
        handle.cancel()
        try:
            await handle
        except ActivityError as err:
            return type(err.cause).__name__
        return "not cancelled"


@workflow.defn
class WaitsOnItsActivity:
    """Waits on a long activity (the test ends the run from outside)."""

    @workflow.run
    async def run(self) -> str:
        return await _start(timedelta(minutes=5))


@workflow.defn
class OutlivesItsActivity:
    """Its activity times out after a second; the workflow then waits for a signal."""

    def __init__(self) -> None:
        self.done = False

    @workflow.signal
    def finish(self) -> None:
        self.done = True

    @workflow.run
    async def run(self) -> str:
        try:
            await _start(timedelta(seconds=1))
        except ActivityError as err:
            outcome = type(err.cause).__name__
        else:
            outcome = "completed"
        await workflow.wait_condition(lambda: self.done)
        return outcome


@workflow.defn
class CancelsActivityElsewhere:
    """Schedules activity `raw_work` on `task_queue` (a raw gRPC worker polls it), requests its
    cancellation when signalled (TRY_CANCEL: the run does not wait) and waits for `finish`."""

    def __init__(self) -> None:
        self.cancel = False
        self.done = False

    @workflow.signal
    def cancel_activity(self) -> None:
        self.cancel = True

    @workflow.signal
    def finish(self) -> None:
        self.done = True

    @workflow.run
    async def run(self, task_queue: str) -> str:
        handle = workflow.start_activity(
            "raw_work", task_queue=task_queue, start_to_close_timeout=timedelta(minutes=5),
            retry_policy=ONCE, cancellation_type=ActivityCancellationType.TRY_CANCEL)
        await workflow.wait_condition(lambda: self.cancel)
        handle.cancel()
        await workflow.wait_condition(lambda: self.done)
        return "done"


WORKFLOWS = [CancelsItsActivity, WaitsOnItsActivity, OutlivesItsActivity, CancelsActivityElsewhere]
ACTIVITIES = [runs_until_cancelled]
