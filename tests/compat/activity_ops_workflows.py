"""Workflows and activities of test_activity_ops.py: activities that keep failing until the test
releases them, that heartbeat until told to stop (recording why they were stopped), and a
workflow with a timer and an activity carrying user metadata.

Activities are process-local (the tests run their worker in-process): ``RELEASED`` holds the keys
whose activity may succeed, and ``activities_state`` records each attempt."""

import asyncio
from datetime import timedelta
from typing import Set

from temporalio import activity, workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    import activities_state

# Keys (workflow IDs) whose activities may now succeed.
RELEASED: Set[str] = set()

EVERY_SECOND = RetryPolicy(initial_interval=timedelta(seconds=1), backoff_coefficient=1.0)


@activity.defn
async def flaky(key: str) -> int:
    """Fails until ``key`` is released; answers the attempt that succeeded."""
    info = activity.info()
    activities_state.record(key, info.attempt)
    if key not in RELEASED:
        raise RuntimeError(f"not yet (attempt {info.attempt})")
    return info.attempt


@activity.defn
async def heartbeating(key: str) -> int:
    """Heartbeats until released; records how a cancellation (a pause, a reset) reached it."""
    info = activity.info()
    activities_state.record(key, ("attempt", info.attempt))
    while key not in RELEASED:
        try:
            activity.heartbeat(info.attempt)
            await asyncio.sleep(0.2)
        except asyncio.CancelledError:
            details = activity.cancellation_details()
            activities_state.record(key, ("cancelled", bool(details and details.paused),
                                          bool(details and details.reset)))
            raise
    return info.attempt


@workflow.defn
class FlakyActivityWorkflow:
    @workflow.run
    async def run(self, key: str) -> int:
        return await workflow.execute_activity(
            flaky, key, activity_id="flaky", start_to_close_timeout=timedelta(seconds=10),
            retry_policy=EVERY_SECOND)


@workflow.defn
class HeartbeatingActivityWorkflow:
    @workflow.run
    async def run(self, key: str) -> int:
        return await workflow.execute_activity(
            heartbeating, key, activity_id="beat", start_to_close_timeout=timedelta(seconds=30),
            heartbeat_timeout=timedelta(seconds=1), retry_policy=EVERY_SECOND)


@workflow.defn
class OtherQueueActivityWorkflow:
    """Its activity goes to a queue nobody polls, until its options move it."""

    @workflow.run
    async def run(self, key: str) -> int:
        return await workflow.execute_activity(
            flaky, key, activity_id="elsewhere", task_queue=f"{key}-nobody",
            start_to_close_timeout=timedelta(seconds=10), retry_policy=EVERY_SECOND)


@workflow.defn
class MetadataWorkflow:
    """A timer and an activity, each with a summary (the commands' user metadata)."""

    @workflow.run
    async def run(self, key: str) -> int:
        await workflow.sleep(timedelta(milliseconds=10), summary="short nap")
        return await workflow.execute_activity(
            flaky, key, activity_id="with-summary", start_to_close_timeout=timedelta(seconds=10),
            summary="the flaky one")


@workflow.defn
class ShortDeadlineWorkflow:
    """An activity that keeps failing under a 3 s schedule-to-close timeout."""

    @workflow.run
    async def run(self, key: str) -> int:
        return await workflow.execute_activity(
            flaky, key, activity_id="short", schedule_to_close_timeout=timedelta(seconds=3),
            retry_policy=EVERY_SECOND)


ALL = [ShortDeadlineWorkflow, FlakyActivityWorkflow, HeartbeatingActivityWorkflow, OtherQueueActivityWorkflow, MetadataWorkflow]
ACTIVITIES = [flaky, heartbeating]
