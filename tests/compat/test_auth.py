"""JWT authorization (``--jwks``) as the official clients use it: the Python SDK's ``api_key=`` and
``rpc_metadata``, and the ``temporal`` CLI's ``--api-key``, which all send
``authorization: Bearer <token>``.

Chronicle only: Temporal's dev server has no JWT authorizer configured by default (its default
authorizer is the allow-all no-op one, and ``temporal server start-dev`` offers no flag to set a
key set), so these expectations cannot be checked against the reference server.

Keys are made per test with the ``openssl`` tool and tokens signed RS256 with it, so the suite
needs no extra Python package."""

import asyncio
import base64
import json
import os
import socket
import subprocess
import threading
import time
import uuid
from datetime import timedelta

import pytest
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Worker

import workflows as wf
from conftest import IS_CHRONICLE, chronicle_bin, new_id, temporal_cli

pytestmark = [
    pytest.mark.skipif(not IS_CHRONICLE, reason="Temporal's dev server has no JWT authorizer to configure"),
    pytest.mark.deadline(120),
]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class RsaKey:
    def __init__(self, directory: str, kid: str):
        self.kid = kid
        self.path = os.path.join(directory, f"{kid}.pem")
        subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                        "-out", self.path], check=True, capture_output=True)
        modulus = subprocess.run(["openssl", "rsa", "-in", self.path, "-noout", "-modulus"], check=True,
                                 capture_output=True, text=True).stdout.strip().split("=", 1)[1]
        self.jwk = {"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
                    "n": b64url(bytes.fromhex(modulus)), "e": "AQAB"}

    def sign(self, claims: dict) -> str:
        header = b64url(json.dumps({"alg": "RS256", "typ": "JWT", "kid": self.kid}).encode())
        payload = b64url(json.dumps(claims).encode())
        signing_input = f"{header}.{payload}".encode()
        signature = subprocess.run(["openssl", "dgst", "-sha256", "-sign", self.path], input=signing_input,
                                   check=True, capture_output=True).stdout
        return f"{header}.{payload}.{b64url(signature)}"

    def token(self, *permissions: str, ttl: int = 600) -> str:
        now = int(time.time())
        return self.sign({"sub": f"compat-{uuid.uuid4().hex[:8]}", "iat": now, "exp": now + ttl,
                          "permissions": list(permissions)})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def auth_server(tmp_path):
    """A start-dev server with JWT authorization on; yields (address, key, log path)."""
    key = RsaKey(str(tmp_path), "compat-key")
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [key.jwk]}))
    port = free_port()
    address = f"127.0.0.1:{port}"
    log_path = str(tmp_path / "server.log")
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [chronicle_bin(), "server", "start-dev", "--headless", "--ephemeral", "--ip", "127.0.0.1",
             "-p", str(port), "--log-level", "info", "--jwks", str(jwks)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        admin = key.token("default:admin")

        async def ready():
            deadline = time.monotonic() + 30
            while True:
                assert proc.poll() is None, f"server exited with {proc.returncode}"
                try:
                    client = await Client.connect(address, api_key=admin, tls=False)
                    await client.workflow_service.describe_namespace(DescribeNamespaceRequest(namespace="default"))
                    return
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.2)

        errors = []

        def run():
            try:
                asyncio.run(ready())
            except BaseException as e:
                errors.append(e)

        # A thread of its own: the test's event loop is already running.
        t = threading.Thread(target=run)
        t.start()
        t.join()
        if errors:
            raise errors[0]
        yield address, key, log_path
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


async def test_sdk_api_key_runs_a_workflow_with_a_worker_token(auth_server, task_queue):
    address, key, log_path = auth_server
    # The worker holds only worker rights; the starter write rights.
    worker_client = await Client.connect(address, api_key=key.token("default:worker"), tls=False)
    starter = await Client.connect(address, api_key=key.token("default:write"), tls=False)
    async with Worker(worker_client, task_queue=task_queue, workflows=[wf.OrderWorkflow],
                      activities=[wf.reserve_stock, wf.charge_payment, wf.ship_order]):
        result = await starter.execute_workflow(
            wf.OrderWorkflow.run, wf.Order("auth-1", 2, 150), id=new_id(), task_queue=task_queue,
            execution_timeout=timedelta(seconds=30))
    assert result.charged_cents == 300


async def test_sdk_without_or_with_insufficient_token_is_refused(auth_server, task_queue):
    address, key, log_path = auth_server
    # Connecting works (GetSystemInfo is open); the first real call does not.
    anonymous = await Client.connect(address, tls=False)
    with pytest.raises(RPCError) as err:
        await anonymous.workflow_service.describe_namespace(DescribeNamespaceRequest(namespace="default"))
    assert err.value.status == RPCStatusCode.UNAUTHENTICATED

    expired = await Client.connect(address, api_key=key.token("default:admin", ttl=-60), tls=False)
    with pytest.raises(RPCError) as err:
        await expired.workflow_service.describe_namespace(DescribeNamespaceRequest(namespace="default"))
    assert err.value.status == RPCStatusCode.UNAUTHENTICATED

    reader_token = key.token("default:read")
    reader = await Client.connect(address, api_key=reader_token, tls=False)
    await reader.workflow_service.describe_namespace(DescribeNamespaceRequest(namespace="default"))
    workflow_id = new_id()
    with pytest.raises(RPCError) as err:
        await reader.start_workflow(wf.OrderWorkflow.run, wf.Order("x", 1, 1), id=workflow_id,
                                    task_queue=task_queue)
    assert err.value.status == RPCStatusCode.PERMISSION_DENIED

    # The same token as plain rpc_metadata, as older SDK setups send it.
    admin_md = await Client.connect(address, tls=False,
                                    rpc_metadata={"authorization": f"Bearer {key.token('default:admin')}"})
    with pytest.raises(RPCError) as err:
        await admin_md.get_workflow_handle(workflow_id).describe()
    assert err.value.status == RPCStatusCode.NOT_FOUND, "the refused start left nothing behind"

    # Refusals are audited, tokens never logged.
    await asyncio.sleep(0.2)
    with open(log_path, errors="replace") as f:
        log = f.read()
    assert "chronicle::audit" in log and "StartWorkflowExecution" in log
    assert reader_token not in log and reader_token.split(".")[2] not in log


async def run_cli(address: str, *args: str):
    proc = await asyncio.create_subprocess_exec(
        temporal_cli(), *args, "--address", address, "--tls=false",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode, out.decode(), err.decode()


async def test_cli_api_key(auth_server):
    address, key, _ = auth_server
    code, out, err = await run_cli(address, "operator", "namespace", "describe", "-n", "default",
                                   "-o", "json", "--api-key", key.token("default:read"))
    assert code == 0, err
    assert json.loads(out)["namespaceInfo"]["name"] == "default"

    code, out, err = await run_cli(address, "operator", "namespace", "describe", "-n", "default", "-o", "json")
    assert code != 0
    assert "unauthenticated" in (out + err).lower(), out + err

    name = new_id("auth-ns")
    code, out, err = await run_cli(address, "operator", "namespace", "create", "-n", name,
                                   "--api-key", key.token(f"{name}:write"))
    assert code != 0 and "unauthorized" in (out + err).lower(), out + err
    code, out, err = await run_cli(address, "operator", "namespace", "create", "-n", name,
                                   "--api-key", key.token(f"{name}:admin"))
    assert code == 0, out + err
