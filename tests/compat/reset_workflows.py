"""Workflows of the reset tests: the same order workflow in a buggy and a fixed build.

Both builds register the workflow type ``ResetOrder`` and issue the same commands (wait for
checkout, one ``price`` activity per item, complete), so the fixed build can replay a history
the buggy one wrote; only the total they return differs (the buggy build drops the last item).
"""

from datetime import timedelta
from typing import List

from temporalio import activity, workflow


@activity.defn(name="price")
async def price(item: str) -> int:
    return 10


class _Order:
    def __init__(self) -> None:
        self.items: List[str] = []
        self.checked_out = False

    @workflow.signal
    def add_item(self, item: str) -> None:
        self.items.append(item)

    @workflow.signal
    def checkout(self) -> None:
        self.checked_out = True

    async def prices(self) -> List[int]:
        await workflow.wait_condition(lambda: self.checked_out)
        out = []
        for item in list(self.items):
            out.append(await workflow.execute_activity(
                price, item, start_to_close_timeout=timedelta(seconds=10)))
        return out


@workflow.defn(name="ResetOrder")
class BuggyOrder(_Order):
    @workflow.run
    async def run(self) -> dict:
        prices = await self.prices()
        # The bug: the last item is not charged.
        return {"items": self.items, "total": sum(prices[:-1]), "build": "buggy"}


@workflow.defn(name="ResetOrder")
class FixedOrder(_Order):
    @workflow.run
    async def run(self) -> dict:
        prices = await self.prices()
        return {"items": self.items, "total": sum(prices), "build": "fixed"}


@workflow.defn(name="ResetChain")
class ChainOrder(_Order):
    """Continues as new once, then behaves like the fixed order (for --type LastContinuedAsNew)."""

    @workflow.run
    async def run(self, continued: bool) -> dict:
        if not continued:
            await workflow.wait_condition(lambda: self.checked_out)
            workflow.continue_as_new(True)
        prices = await self.prices()
        return {"items": self.items, "total": sum(prices), "build": "chain"}


@workflow.defn(name="ResetCounter")
class Counter:
    """Counts what its ``add`` updates add until ``finish`` (updates are reapplied by a reset)."""

    def __init__(self) -> None:
        self.total = 0
        self.finished = False

    @workflow.update
    def add(self, n: int) -> int:
        self.total += n
        return self.total

    @workflow.signal
    def finish(self) -> None:
        self.finished = True

    @workflow.run
    async def run(self) -> int:
        await workflow.wait_condition(lambda: self.finished)
        return self.total


@workflow.defn(name="ResetChild")
class WaitingChild:
    """A child that runs until its ``finish`` signal, then returns what it was started with; its
    ``again`` signal makes it continue as new first."""

    def __init__(self) -> None:
        self.finished = False
        self.again = False

    @workflow.signal
    def finish(self) -> None:
        self.finished = True

    @workflow.signal(name="again")
    def continue_again(self) -> None:
        self.again = True

    @workflow.run
    async def run(self, tag: str) -> str:
        await workflow.wait_condition(lambda: self.finished or self.again)
        if self.again:
            workflow.continue_as_new(tag + "+")
        return f"child {tag} done"
