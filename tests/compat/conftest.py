"""Fixtures of the compatibility suite: a real server process on free ports.

COMPAT_SERVER=chronicle (default) runs $CHRONICLE_BIN; COMPAT_SERVER=temporal runs the reference
`temporal server start-dev`, so every test can be checked against Temporal's own server.
"""

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid

import pytest
import pytest_asyncio
from temporalio.client import Client

SERVER_KIND = os.environ.get("COMPAT_SERVER", "chronicle")
VENV_BIN = os.path.dirname(sys.executable)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def temporal_cli() -> str:
    return os.environ.get("TEMPORAL_CLI") or shutil.which("temporal") or os.path.join(VENV_BIN, "temporal")


class ServerProcess:
    """A server on a data directory; `kill()` is kill -9, `start()` restarts on the same port."""

    def __init__(self, data_dir: str, durable: bool):
        self.data_dir = data_dir
        self.durable = durable
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.log_path = os.path.join(data_dir, "server.log")
        self.proc = None

    def command(self):
        if SERVER_KIND == "temporal":
            cmd = [temporal_cli(), "server", "start-dev", "--headless", "--ip", "127.0.0.1", "--port", str(self.port),
                   "--http-port", str(free_port()), "--metrics-port", str(free_port()), "--ui-port", str(free_port()),
                   "--log-level", "error"]
            if self.durable:
                cmd += ["--db-filename", os.path.join(self.data_dir, "temporal.db")]
            return cmd
        binary = os.environ.get("CHRONICLE_BIN", "chronicle")
        cmd = [binary, "server", "start-dev", "--ip", "127.0.0.1", "-p", str(self.port), "--log-level", "warn"]
        cmd += ["--data-dir", os.path.join(self.data_dir, "data")] if self.durable else ["--ephemeral"]
        return cmd

    def start(self):
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=log)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited at start:\n{self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    break
            except OSError:
                time.sleep(0.05)
        else:
            raise RuntimeError("server did not listen in time")

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log_tail(self, lines: int = 40) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return b"\n".join(f.read().splitlines()[-lines:]).decode(errors="replace")
        except OSError:
            return ""


async def connect(address: str) -> Client:
    deadline = time.monotonic() + 60
    while True:
        try:
            return await Client.connect(address)
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


@pytest.fixture(scope="session")
def server():
    data_dir = tempfile.mkdtemp(prefix="compat-")
    srv = ServerProcess(data_dir, durable=False)
    srv.start()
    yield srv
    srv.stop()
    shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
def durable_server(tmp_path):
    srv = ServerProcess(str(tmp_path), durable=True)
    srv.start()
    yield srv
    srv.stop()


@pytest_asyncio.fixture
async def client(server):
    return await connect(server.address)


@pytest.fixture
def task_queue():
    return f"tq-{uuid.uuid4()}"


def new_id(prefix: str = "wf") -> str:
    return f"{prefix}-{uuid.uuid4()}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        for name in ("server", "durable_server"):
            srv = item.funcargs.get(name)
            if srv is not None:
                report.sections.append((f"{name} log tail", srv.log_tail()))
