"""A worker in its own process: `python worker_main.py ADDRESS TASK_QUEUE`. Runs until killed."""

import asyncio
import sys

from temporalio.client import Client
from temporalio.worker import Worker

import workflows


async def main(address: str, task_queue: str) -> None:
    client = await Client.connect(address)
    worker = Worker(client, task_queue=task_queue, workflows=workflows.ALL_WORKFLOWS, activities=workflows.ALL_ACTIVITIES,
                    max_concurrent_activities=200)
    print("worker ready", flush=True)
    await worker.run()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
