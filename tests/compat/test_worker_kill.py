"""A worker process SIGKILLed mid-workflow; a fresh worker process finishes the workflow and
completed activities are not run again."""

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter

from temporalio.api.enums.v1 import EventType

import workflows as wf
from conftest import _die_with_parent, new_id

HERE = os.path.dirname(os.path.abspath(__file__))


class WorkerProcess:
    def __init__(self, address: str, task_queue: str, directory: str, name: str):
        self.ready_file = os.path.join(directory, f"{name}.ready")
        self.log_path = os.path.join(directory, f"{name}.log")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, os.path.join(HERE, "worker_main.py"), address, task_queue,
                                          self.ready_file], cwd=HERE, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)

    async def wait_ready(self, timeout: float = 30.0) -> None:
        for _ in range(int(timeout * 10)):
            if os.path.exists(self.ready_file):
                return
            if self.proc.poll() is not None:
                break
            await asyncio.sleep(0.1)
        raise AssertionError(f"worker not ready:\n{self.log()}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()[-4000:]


def journal_lines(path: str):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return f.read().splitlines()


async def wait_for_journal(path: str, predicate, timeout: float = 30.0):
    for _ in range(int(timeout * 10)):
        lines = journal_lines(path)
        if predicate(lines):
            return lines
        await asyncio.sleep(0.1)
    raise AssertionError(f"journal never got there: {journal_lines(path)}")


async def test_worker_killed_mid_workflow(client, server_address, task_queue, tmp_path):
    journal = str(tmp_path / "journal.txt")
    first = WorkerProcess(server_address, task_queue, str(tmp_path), "worker1")
    second = None
    try:
        await first.wait_ready()
        handle = await client.start_workflow(wf.JournalWorkflow.run, journal, id=new_id("killed"),
                                             task_queue=task_queue)
        # Activity one completed and activity two is running (blocked forever) on the first worker.
        lines = await wait_for_journal(journal, lambda ls: any(x.startswith("two") for x in ls))
        assert lines == ["one attempt=1", "two attempt=1"], lines
        first.kill()

        second = WorkerProcess(server_address, task_queue, str(tmp_path), "worker2")
        await second.wait_ready()
        result = await asyncio.wait_for(handle.result(), 60)
    finally:
        first.kill()
        if second is not None:
            second.kill()

    assert result == ["one done", "two done", "three done"]
    lines = journal_lines(journal)
    per_step = Counter(line.split()[0] for line in lines)
    # one completed before the kill and is not run again; the orphaned attempt of two timed out
    # (start_to_close 3 s) and attempt 2 ran on the new worker; three ran once.
    assert per_step == {"one": 1, "two": 2, "three": 1}, lines
    assert lines == ["one attempt=1", "two attempt=1", "two attempt=2", "three attempt=1"], lines

    events = [e async for e in handle.fetch_history_events()]
    types = [e.event_type for e in events]
    assert types.count(EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED) == 3
    assert types.count(EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED) == 3
    assert EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT not in types  # the timed-out attempt was retried
    identities = {e.activity_task_started_event_attributes.identity for e in events
                  if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED}
    assert len(identities) == 2, identities  # "one" on the killed worker, "two" and "three" on the new one
    assert events[-1].event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED
