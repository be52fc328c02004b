"""A short, varied load for the deploy checks' scrape: every kind of workflow close, activities,
timers, signals, queries, a duplicate start and a describe of a missing workflow, so that the
families the dashboards and alerts read have samples. Usage: load.py HOST:PORT [ROUNDS]."""

import asyncio
import os
import sys
import uuid
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.client import Client, WorkflowFailureError
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError
from temporalio.worker import Worker

QUEUE = "deploy-check"
# A queue whose worker starts after its first workflow: the task waits in matching's backlog.
LATE_QUEUE = "deploy-check-late"


@activity.defn
async def greet(name: str) -> str:
    return f"hello {name}"


@workflow.defn
class Echo:
    @workflow.run
    async def run(self, name: str) -> str:
        await workflow.sleep(0.05)
        return await workflow.execute_activity(
            greet, name, start_to_close_timeout=timedelta(seconds=10)
        )


@workflow.defn
class Fails:
    @workflow.run
    async def run(self) -> None:
        raise ApplicationError("planned failure", non_retryable=True)


@workflow.defn
class Waits:
    def __init__(self) -> None:
        self.signals = 0

    @workflow.run
    async def run(self) -> int:
        await workflow.wait_condition(lambda: self.signals >= 1000)
        return self.signals

    @workflow.signal
    def poke(self) -> None:
        self.signals += 1

    @workflow.query
    def count(self) -> int:
        return self.signals


@workflow.defn
class Parent:
    @workflow.run
    async def run(self, name: str) -> str:
        return await workflow.execute_child_workflow(
            Echo.run, name, id=f"{workflow.info().workflow_id}-child"
        )


@workflow.defn
class Continues:
    @workflow.run
    async def run(self, left: int) -> int:
        if left > 0:
            workflow.continue_as_new(left - 1)
        return left


async def main(target: str, rounds: int) -> None:
    client = await Client.connect(target, namespace="default")
    late = await client.start_workflow(
        Echo.run, "late", id=f"late-{uuid.uuid4().hex[:8]}", task_queue=LATE_QUEUE
    )
    await asyncio.sleep(0.5)
    async with Worker(client, task_queue=LATE_QUEUE, workflows=[Echo], activities=[greet]):
        assert await late.result() == "hello late"
    async with Worker(
        client,
        task_queue=QUEUE,
        workflows=[Echo, Fails, Waits, Continues, Parent],
        activities=[greet],
    ):
        for r in range(rounds):
            tag = f"{r}-{uuid.uuid4().hex[:8]}"
            assert await client.execute_workflow(
                Echo.run, "chronicle", id=f"echo-{tag}", task_queue=QUEUE
            ) == "hello chronicle"
            try:
                await client.execute_workflow(
                    Fails.run,
                    id=f"fails-{tag}",
                    task_queue=QUEUE,
                    retry_policy=RetryPolicy(maximum_attempts=1),
                )
                raise AssertionError("Fails completed")
            except WorkflowFailureError:
                pass
            assert await client.execute_workflow(
                Parent.run, "child", id=f"parent-{tag}", task_queue=QUEUE
            ) == "hello child"
            assert await client.execute_workflow(
                Continues.run, 1, id=f"can-{tag}", task_queue=QUEUE
            ) == 0
            waiting = await client.start_workflow(Waits.run, id=f"term-{tag}", task_queue=QUEUE)
            await waiting.signal(Waits.poke)
            assert await waiting.query(Waits.count) == 1
            try:  # a duplicate start: WorkflowExecutionAlreadyStarted
                await client.start_workflow(Waits.run, id=f"term-{tag}", task_queue=QUEUE)
            except Exception:
                pass
            await waiting.terminate("deploy check")
            canceled = await client.start_workflow(Waits.run, id=f"cancel-{tag}", task_queue=QUEUE)
            await canceled.cancel()
            timed = await client.start_workflow(
                Waits.run,
                id=f"timeout-{tag}",
                task_queue=QUEUE,
                execution_timeout=timedelta(seconds=1),
            )
            try:
                await client.get_workflow_handle(f"missing-{tag}").describe()
            except RPCError:
                pass
            try:
                await timed.result()
            except WorkflowFailureError:
                pass
            try:
                await canceled.result()
            except WorkflowFailureError:
                pass
    print(f"load: a backlogged workflow, then {rounds} rounds of echo, child, fail, "
          "continue-as-new, signal, query, terminate, cancel and timeout")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 3))
    # Leave without finalizing the interpreter: the SDK's core threads can abort it there
    # ("PyGILState_Release ... must be current") after the work succeeded.
    sys.stdout.flush()
    os._exit(0)
