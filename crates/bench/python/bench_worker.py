"""chronicle-bench's end-to-end worker: the benchmark scenarios as Temporal Python SDK workflows.

`chronicle-bench --workers python` embeds this file, writes it to a temporary directory and
starts it once per worker process. Every workflow type, input, activity, signal, query, timer,
child workflow and continue-as-new here mirrors the harness's built-in workers (`decide` in
crates/bench/src/scenario.rs), so the driver verifies the results the same way in both modes.
Keep the two in step: a change to one scenario's logic needs the same change in both places.

Protocol with the harness:
- exit status 3, with a message on stderr, when the `temporalio` SDK cannot be imported;
- one line `READY temporalio=<version> python=<version>` on stdout once the worker has passed
  the SDK's namespace check and is polling;
- a graceful shutdown when stdin reaches end of file (the harness closed it, or the harness died:
  that way no worker outlives it) and on SIGTERM or SIGINT.
"""

import argparse
import asyncio
import os
import signal
import sys
import threading
from datetime import timedelta

# The harness maps this status to "temporalio is not installed for this Python".
MISSING_SDK_EXIT_STATUS = 3

try:
    import temporalio
    from temporalio import activity, workflow
    from temporalio.client import Client, TLSConfig
    from temporalio.worker import PollerBehaviorSimpleMaximum, Worker
except ImportError as error:
    print(
        f"chronicle-bench python worker: cannot import the Temporal Python SDK with "
        f"{sys.executable}: {error}",
        file=sys.stderr,
    )
    sys.exit(MISSING_SDK_EXIT_STATUS)

# Names and settings shared with the built-in workers (crates/bench/src/scenario.rs).
INCREMENT_ACTIVITY = "bench-increment"
SIGNAL_NAME = "bench-signal"
QUERY_ORIGIN = "origin"
ACTIVITY_START_TO_CLOSE = timedelta(seconds=30)
WORKFLOW_TASK_TIMEOUT = timedelta(seconds=10)
# The SDK's default number of concurrent polls per task queue; never more than the task slots.
SDK_DEFAULT_POLLS = 5
# How long a graceful shutdown may take before the process just exits (the run is over by then).
SHUTDOWN_GRACE_SECONDS = 1.5


@activity.defn(name=INCREMENT_ACTIVITY)
async def increment(value: int) -> int:
    """The one activity of every scenario: its integer input plus one."""
    return value + 1


async def run_increment(index: int, value: int) -> int:
    # Activity IDs `a0`, `a1`, ... as the built-in workers give them.
    return await workflow.execute_activity(
        INCREMENT_ACTIVITY,
        value,
        activity_id=f"a{index}",
        start_to_close_timeout=ACTIVITY_START_TO_CLOSE,
        result_type=int,
    )


async def increments_in_a_row(seed: int, count: int) -> int:
    """`count` activities one after another, each on the previous result."""
    value = seed
    for index in range(count):
        value = await run_increment(index, value)
    return value


class BenchWorkflow:
    """What every bench workflow has, as with the built-in workers: its input (the JSON object
    {seed, origin, count, timer_ms, generation}), the signals received so far, and the `origin`
    query, which answers with the seed the continue-as-new chain started from."""

    # The input is taken in __init__ so a query arriving before the run method has started
    # can still answer.
    @workflow.init
    def __init__(self, input: dict) -> None:
        self.input = input
        self.signals: list[int] = []

    @workflow.signal(name=SIGNAL_NAME)
    def on_signal(self, value: int) -> None:
        self.signals.append(value)

    @workflow.query(name=QUERY_ORIGIN)
    def origin(self) -> int:
        return self.input["origin"]


@workflow.defn(name="bench-echo")
class Echo(BenchWorkflow):
    @workflow.run
    async def run(self, input: dict) -> dict:
        return input


@workflow.defn(name="bench-sequential")
class Sequential(BenchWorkflow):
    @workflow.run
    async def run(self, input: dict) -> int:
        return await increments_in_a_row(input["seed"], input["count"])


@workflow.defn(name="bench-fanout")
class Fanout(BenchWorkflow):
    @workflow.run
    async def run(self, input: dict) -> int:
        # All scheduled before the first await returns: one workflow task schedules them all.
        results = await asyncio.gather(
            *(run_increment(i, input["seed"] + i) for i in range(input["count"]))
        )
        return sum(results)


@workflow.defn(name="bench-timer")
class Timer(BenchWorkflow):
    @workflow.run
    async def run(self, input: dict) -> int:
        await workflow.sleep(timedelta(milliseconds=max(input["timer_ms"], 1)))
        return input["seed"]


@workflow.defn(name="bench-signal")
class Signal(BenchWorkflow):
    @workflow.run
    async def run(self, input: dict) -> int:
        count = input["count"]
        await workflow.wait_condition(lambda: len(self.signals) >= count)
        return input["seed"] + sum(self.signals[:count])


@workflow.defn(name="bench-child-parent")
class ChildParent(BenchWorkflow):
    @workflow.run
    async def run(self, input: dict) -> int:
        parent_id = workflow.info().workflow_id
        # Started together (one workflow task), each with the parent's input but its own seed.
        handles = await asyncio.gather(
            *(
                workflow.start_child_workflow(
                    "bench-child-leaf",
                    {**input, "seed": input["seed"] + i, "count": 0},
                    id=f"{parent_id}-child-{i}",
                    task_timeout=WORKFLOW_TASK_TIMEOUT,
                    result_type=int,
                )
                for i in range(input["count"])
            )
        )
        return sum(await asyncio.gather(*handles))


@workflow.defn(name="bench-child-leaf")
class ChildLeaf(BenchWorkflow):
    @workflow.run
    async def run(self, input: dict) -> int:
        return input["seed"] + 1


@workflow.defn(name="bench-mixed")
class Mixed(BenchWorkflow):
    @workflow.run
    async def run(self, input: dict) -> int:
        if input["generation"] > 0:
            # The continued run: one more activity, then done.
            return await increments_in_a_row(input["seed"], 1)
        value = await increments_in_a_row(input["seed"], input["count"])
        # Then one child, from the activities' result; it answers that plus one.
        value = await workflow.execute_child_workflow(
            "bench-child-leaf",
            {**input, "seed": value, "count": 0},
            id=f"{workflow.info().workflow_id}-child-0",
            task_timeout=WORKFLOW_TASK_TIMEOUT,
            result_type=int,
        )
        await workflow.sleep(timedelta(milliseconds=max(input["timer_ms"], 1)))
        await workflow.wait_condition(lambda: len(self.signals) > 0)
        workflow.continue_as_new(
            {**input, "seed": value + self.signals[0], "generation": input["generation"] + 1},
            task_timeout=WORKFLOW_TASK_TIMEOUT,
        )


WORKFLOWS = [Echo, Sequential, Fanout, Timer, Signal, ChildParent, ChildLeaf, Mixed]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="chronicle-bench Python SDK worker")
    parser.add_argument("--address", required=True, help="host:port of the server frontend")
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--task-queue", required=True)
    parser.add_argument("--identity", default=None)
    parser.add_argument("--tls", action="store_true")
    parser.add_argument("--tls-ca-path")
    parser.add_argument("--tls-cert-path")
    parser.add_argument("--tls-key-path")
    parser.add_argument("--tls-server-name")
    parser.add_argument("--max-concurrent-workflow-tasks", type=int, required=True)
    parser.add_argument("--max-concurrent-activities", type=int, required=True)
    parser.add_argument(
        "--no-eager-activities",
        action="store_true",
        help="do not request eager activity execution (the SDK's default is to request it)",
    )
    return parser.parse_args()


def tls_config(args: argparse.Namespace):
    if not (args.tls or args.tls_ca_path or args.tls_cert_path or args.tls_server_name):
        return False

    def read(path):
        if path is None:
            return None
        with open(path, "rb") as f:
            return f.read()

    return TLSConfig(
        server_root_ca_cert=read(args.tls_ca_path),
        domain=args.tls_server_name,
        client_cert=read(args.tls_cert_path),
        client_private_key=read(args.tls_key_path),
    )


def stop_on_stdin_eof(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """Sets `stop` when stdin closes: the harness closes it to stop the worker, and the kernel
    closes it when the harness dies, however it dies."""

    def wait_for_eof() -> None:
        try:
            while sys.stdin.buffer.read(4096):
                pass
        except (OSError, ValueError):
            pass
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=wait_for_eof, name="stdin-eof", daemon=True).start()


async def main() -> None:
    args = parse_args()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    stop_on_stdin_eof(loop, stop)

    client = await Client.connect(
        args.address,
        namespace=args.namespace,
        tls=tls_config(args),
        identity=args.identity,
    )
    workflow_slots = max(args.max_concurrent_workflow_tasks, 1)
    activity_slots = max(args.max_concurrent_activities, 1)
    worker = Worker(
        client,
        task_queue=args.task_queue,
        workflows=WORKFLOWS,
        activities=[increment],
        identity=args.identity,
        max_concurrent_workflow_tasks=workflow_slots,
        max_concurrent_activities=activity_slots,
        disable_eager_activity_execution=args.no_eager_activities,
        workflow_task_poller_behavior=PollerBehaviorSimpleMaximum(
            min(SDK_DEFAULT_POLLS, workflow_slots)
        ),
        activity_task_poller_behavior=PollerBehaviorSimpleMaximum(
            min(SDK_DEFAULT_POLLS, activity_slots)
        ),
    )

    running = asyncio.create_task(worker.run())
    # `is_running` turns true once the SDK has checked the namespace and started its pollers; a
    # failed check ends `running` with the error instead.
    while not worker.is_running:
        if running.done():
            running.result()
            raise RuntimeError("the worker stopped before it started polling")
        await asyncio.sleep(0.01)
    python = ".".join(str(part) for part in sys.version_info[:3])
    print(f"READY temporalio={temporalio.__version__} python={python}", flush=True)

    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if running.done():
        running.result()
        raise RuntimeError("the worker stopped on its own")
    try:
        await asyncio.wait_for(worker.shutdown(), SHUTDOWN_GRACE_SECONDS)
    except asyncio.TimeoutError:
        pass


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    # Skip interpreter teardown: SDK threads still finishing a shutdown must not delay the exit.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
