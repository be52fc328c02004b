"""Workflows driven by updates (test_update.py), written the way users write them."""

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta
from typing import List

from temporalio import workflow
from temporalio.exceptions import ApplicationError


@dataclass
class ApprovalState:
    approvers: List[str] = field(default_factory=list)
    comments: List[str] = field(default_factory=list)
    # Every update and signal handled, in the order the workflow saw them.
    journal: List[str] = field(default_factory=list)


@workflow.defn
class ApprovalWorkflow:
    """Collects approvals through an update with a validator until `required` approved."""

    def __init__(self) -> None:
        self.state = ApprovalState()
        self.approve_calls = 0

    @workflow.run
    async def run(self, required: int) -> List[str]:
        await workflow.wait_condition(lambda: len(self.state.approvers) >= required)
        # Let handlers that are still running finish before the run completes.
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self.state.approvers

    @workflow.update
    async def approve(self, approver: str) -> int:
        self.approve_calls += 1
        # A timer inside the handler: the update is accepted in one task, completed in another.
        await asyncio.sleep(0.05)
        self.state.approvers.append(approver)
        self.state.journal.append(f"approve:{approver}")
        return len(self.state.approvers)

    @approve.validator
    def validate_approve(self, approver: str) -> None:
        if not approver:
            raise ValueError("approver must be named")
        if approver in self.state.approvers:
            raise ValueError(f"{approver} already approved")
        if approver.startswith("intruder"):
            raise ApplicationError("not allowed to approve", type="NotAllowed", non_retryable=True)

    @workflow.update
    def approve_calls_so_far(self) -> int:
        return self.approve_calls

    @workflow.update
    async def fail_update(self, reason: str) -> None:
        raise ApplicationError(reason, type="UpdateFailed", non_retryable=True)

    @workflow.signal
    def comment(self, text: str) -> None:
        self.state.comments.append(text)
        self.state.journal.append(f"comment:{text}")

    @workflow.query
    def status(self) -> ApprovalState:
        return self.state


@workflow.defn
class CounterWorkflow:
    """A counter changed by updates; finishes (or continues as new) on a signal, possibly with an
    update still waiting inside its handler."""

    @workflow.init
    def __init__(self, start: int) -> None:
        # Set here, not in run: an update in the first workflow task runs before run's body.
        self.count = start
        self.finish = False
        self.continue_as_new = False
        self.release = False

    @workflow.run
    async def run(self, start: int) -> int:
        await workflow.wait_condition(lambda: self.finish or self.continue_as_new)
        if self.continue_as_new:
            workflow.continue_as_new(self.count)
        return self.count

    @workflow.update
    def increment(self, by: int) -> int:
        self.count += by
        return self.count

    @workflow.update(unfinished_policy=workflow.HandlerUnfinishedPolicy.ABANDON)
    async def wait_for_release(self) -> str:
        await workflow.wait_condition(lambda: self.release)
        return "released"

    @workflow.signal
    def stop(self) -> None:
        self.finish = True

    @workflow.signal
    def roll_over(self) -> None:
        self.continue_as_new = True

    @workflow.query
    def value(self) -> int:
        return self.count


@workflow.defn
class NexusCallerWorkflow:
    """Calls a Nexus operation: a command a server may not serve (Chronicle does not)."""

    @workflow.run
    async def run(self) -> str:
        client = workflow.create_nexus_client(service="no-such-service", endpoint="no-such-endpoint")
        return await client.execute_operation("no-such-operation", "input", output_type=str)


ALL_UPDATE_WORKFLOWS = [ApprovalWorkflow, CounterWorkflow, NexusCallerWorkflow]
