"""A worker in a process of its own, for tests that kill workers.

    python worker_main.py ADDRESS TASK_QUEUE [READY_FILE]

Registers every workflow and activity of workflows.py, writes READY_FILE (if given) once the
worker runs, and polls until the process is killed."""

import asyncio
import os
import sys
from datetime import timedelta

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from temporalio.client import Client  # noqa: E402
from temporalio.worker import Worker  # noqa: E402

import workflows  # noqa: E402


async def main(address: str, task_queue: str, ready_file: str = "") -> None:
    client = await Client.connect(address)
    worker = Worker(client, task_queue=task_queue, workflows=workflows.ALL_WORKFLOWS,
                    activities=workflows.ALL_ACTIVITIES, max_concurrent_activities=100,
                    # a killed worker's sticky queue falls back to the normal queue after this long
                    sticky_queue_schedule_to_start_timeout=timedelta(seconds=2))
    async with worker:
        if ready_file:
            with open(ready_file, "w") as f:
                f.write(f"{os.getpid()}\n")
        print(f"worker {os.getpid()} polling {task_queue} on {address}", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    asyncio.run(main(*sys.argv[1:]))
