"""The `chronicle server start-dev` process as an operator sees it: the start-up line, the
data-directory lock, a clean exit on SIGTERM and SIGINT, and recovery of in-flight work after it.

Chronicle only: the reference server keeps its state differently (SQLite file, no lock)."""

import asyncio
import os
import signal
import socket
import subprocess
import time
from datetime import timedelta

import pytest
from temporalio.client import Client
from temporalio.worker import Worker

import workflows as wf
from conftest import IS_CHRONICLE, chronicle_bin, new_id

pytestmark = [
    pytest.mark.skipif(not IS_CHRONICLE, reason="Chronicle's process behaviour"),
    pytest.mark.deadline(120),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(data_dir: str, port: int, log_path: str) -> subprocess.Popen:
    log = open(log_path, "ab")
    return subprocess.Popen(
        [chronicle_bin(), "server", "start-dev", "--headless", "--ip", "127.0.0.1", "-p", str(port),
         "--data-dir", data_dir, "--log-level", "info"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


async def connect(address: str, proc: subprocess.Popen) -> Client:
    deadline = time.monotonic() + 30
    while True:
        assert proc.poll() is None, f"server exited with {proc.returncode}"
        try:
            return await asyncio.wait_for(Client.connect(address), 5)
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


def read(path: str) -> str:
    with open(path, errors="replace") as f:
        return f.read()


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_lock_clean_shutdown_and_recovery(tmp_path, stop_signal):
    data_dir = str(tmp_path / "data")
    port = free_port()
    address = f"127.0.0.1:{port}"
    log_path = str(tmp_path / "server.log")
    proc = start(data_dir, port, log_path)
    try:
        client = await connect(address, proc)
        # One start-up line says where it listens and where its data is, in plain text.
        log = read(log_path)
        assert address in log and data_dir in log, log
        assert "\x1b[" not in log, "no colour codes in a log file"

        # A second server on the same data directory refuses to start, with a clear message.
        second_log = str(tmp_path / "second.log")
        second = start(data_dir, free_port(), second_log)
        assert second.wait(30) != 0
        message = read(second_log)
        assert "in use" in message or "lock" in message, message

        # A workflow waiting on a timer and one waiting for a signal, in flight at shutdown.
        task_queue = new_id("tq")
        timer_id, signal_id = new_id("timer"), new_id("expense")
        async with Worker(client, task_queue=task_queue, workflows=[wf.TimerWorkflow, wf.ExpenseWorkflow]):
            timer = await client.start_workflow(wf.TimerWorkflow.run, 3.0, id=timer_id, task_queue=task_queue)
            waiting = await client.start_workflow(wf.ExpenseWorkflow.run, 600.0, id=signal_id,
                                                  task_queue=task_queue)
            await asyncio.sleep(1.0)
        proc.send_signal(stop_signal)
        assert proc.wait(30) == 0, read(log_path)

        # Restarted on the same directory, both finish: the timer fires, the signal is taken.
        proc = start(data_dir, port, log_path)
        client = await connect(address, proc)
        async with Worker(client, task_queue=task_queue, workflows=[wf.TimerWorkflow, wf.ExpenseWorkflow]):
            await client.get_workflow_handle(signal_id).signal(wf.ExpenseWorkflow.approve, wf.Approval("dana"))
            assert await asyncio.wait_for(client.get_workflow_handle(timer_id).result(), 30) == "woke"
            assert await asyncio.wait_for(client.get_workflow_handle(signal_id).result(), 30) == "approved by dana"
        assert timer.id == timer_id and waiting.id == signal_id
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
