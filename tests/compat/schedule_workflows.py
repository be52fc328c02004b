"""Workflows of the cron and Schedules tests (test_cron.py, test_schedules.py)."""

from typing import Optional

from temporalio import workflow
from temporalio.exceptions import ApplicationError


@workflow.defn
class CronCounter:
    """Counts its runs through the last completion result; the second run fails once."""

    @workflow.run
    async def run(self, fail_at: int) -> int:
        last: Optional[int] = None
        if workflow.has_last_completion_result():
            last = workflow.get_last_completion_result(int)
        count = (last or 0) + 1
        if count == fail_at and workflow.get_last_failure() is None:
            raise ApplicationError(f"failing run {count}", non_retryable=True)
        return count


@workflow.defn
class DailyReport:
    """What a schedule starts: a report for the day it is given, a moment of work."""

    @workflow.run
    async def run(self, day: str) -> str:
        await workflow.sleep(0.1)
        return f"report for {day}"


@workflow.defn
class SlowReport:
    """A scheduled workflow that outlasts its schedule's interval (for overlap policies)."""

    @workflow.run
    async def run(self, seconds: float) -> str:
        await workflow.sleep(seconds)
        return "done"


@workflow.defn
class CronParent:
    """Starts a cron child it does not wait for, and returns the child's first run ID."""

    @workflow.run
    async def run(self, child_id: str) -> str:
        child = await workflow.start_child_workflow(
            CronCounter.run, 0, id=child_id, cron_schedule="@every 1s",
            parent_close_policy=workflow.ParentClosePolicy.ABANDON)
        return child.first_execution_run_id or ""


ALL = [CronCounter, DailyReport, SlowReport, CronParent]
