"""TLS: a local cluster with mutual TLS between its nodes and TLS with client certificates on
its frontends. The official SDK with a client certificate runs a workflow; without one, or in
plaintext, it cannot connect. The internal API answers node certificates only: `cluster
describe` with no certificate, or with a client certificate of the public API's CA, is refused.

Certificates are made with the `openssl` CLI for each run. Chronicle only (Temporal's dev server
has no TLS flags); skipped in the chronicle-split pass, since it starts its own cluster."""

import asyncio
import os
import shutil
import subprocess
from datetime import timedelta
from typing import List

import pytest
from temporalio.client import Client, TLSConfig
from temporalio.worker import Worker

import workflows as wf
from conftest import IS_CHRONICLE, SERVER_KIND, NodeHandle, _die_with_parent, chronicle_bin, new_id

pytestmark = [
    pytest.mark.skipif(SERVER_KIND == "chronicle-split",
                       reason="starts its own cluster: runs once, in the `chronicle` pass"),
    pytest.mark.skipif(not IS_CHRONICLE, reason="Chronicle's TLS flags"),
    pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI"),
    pytest.mark.deadline(150),
]

SANS = ",".join(["DNS:localhost", "IP:127.0.0.1"] + [f"IP:127.0.0.{i}" for i in (11, 12, 13, 21, 32, 33)])


def openssl(*args: str, cwd: str) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(d: str, name: str) -> None:
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2", "-subj", f"/CN={name}", cwd=d)


def make_cert(d: str, name: str, ca: str, usage: str) -> None:
    with open(os.path.join(d, f"{name}.ext"), "w") as f:
        f.write(f"subjectAltName={SANS}\nextendedKeyUsage={usage}\nbasicConstraints=CA:FALSE\n"
                "keyUsage=digitalSignature\n")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout",
            f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=d)


def internode(d: str, cert: str, ca: str) -> List[str]:
    return ["--internode-tls-cert", f"{d}/{cert}.pem", "--internode-tls-key", f"{d}/{cert}.key",
            "--internode-tls-ca", f"{d}/{ca}.pem"]


def read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


async def test_mutual_tls_between_nodes_and_client_certificates_on_frontends(tmp_path):
    d = str(tmp_path / "pki")
    os.makedirs(d)
    make_ca(d, "node-ca")      # signs the nodes' certificates (internal API)
    make_ca(d, "client-ca")    # signs the applications' client certificates (public API)
    make_cert(d, "node", "node-ca", "serverAuth,clientAuth")
    make_cert(d, "app", "client-ca", "clientAuth")
    make_cert(d, "frontend", "node-ca", "serverAuth")

    log = open(tmp_path / "supervisor.log", "wb")
    cmd = [chronicle_bin(), "server", "start-local-cluster", "--data-dir", str(tmp_path / "cluster"), "--port", "0",
           "--num-shards", "2", "--history", "3", "--frontend", "2", "--log-level", "warn",
           *internode(d, "node", "node-ca"),
           "--tls-cert", f"{d}/frontend.pem", "--tls-key", f"{d}/frontend.key", "--tls-client-ca", f"{d}/client-ca.pem"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL,
                            preexec_fn=_die_with_parent)
    lines: List[str] = []
    try:
        def until_ready() -> None:
            for raw in proc.stdout:
                lines.append(raw.decode().strip())
                if lines[-1].startswith("ready "):
                    return
            raise AssertionError("the cluster did not start:\n" + "\n".join(lines) + read(str(tmp_path / "supervisor.log")).decode())

        await asyncio.wait_for(asyncio.to_thread(until_ready), 90)
        frontends = dict(f.split("=", 1) for f in lines[-1].split()[1:])["frontends"].split(",")
        histories = ",".join(NodeHandle(l).fields["internal"] for l in lines if l.startswith("history-"))

        tls = TLSConfig(server_root_ca_cert=read(f"{d}/node-ca.pem"), client_cert=read(f"{d}/app.pem"),
                        client_private_key=read(f"{d}/app.key"))
        client = await Client.connect(frontends[0], tls=tls)
        worker_client = await Client.connect(frontends[1], tls=tls)
        task_queue = new_id("tq-tls")
        async with Worker(worker_client, task_queue=task_queue, workflows=[wf.TimerWorkflow]):
            result = await client.execute_workflow(wf.TimerWorkflow.run, 0.1, id=new_id("tls"),
                                                   task_queue=task_queue, execution_timeout=timedelta(seconds=30))
        assert result

        # No client certificate, or plaintext: no connection.
        for bad in (TLSConfig(server_root_ca_cert=read(f"{d}/node-ca.pem")), False):
            with pytest.raises(Exception):
                c = await asyncio.wait_for(Client.connect(frontends[0], tls=bad), 15)
                await c.count_workflows()

        def describe(*extra: str) -> subprocess.CompletedProcess:
            return subprocess.run([chronicle_bin(), "cluster", "describe", "--nodes", histories, *extra],
                                  capture_output=True, timeout=60)

        ok = describe(*internode(d, "node", "node-ca"))
        assert ok.returncode == 0 and ok.stdout.count(b"up, leads") == 3, ok
        plaintext = describe()
        assert plaintext.returncode == 1 and plaintext.stdout.count(b"unreachable") == 3, plaintext
        # A valid certificate of the public API's CA is not a node certificate.
        app = describe("--internode-tls-cert", f"{d}/app.pem", "--internode-tls-key", f"{d}/app.key",
                       "--internode-tls-ca", f"{d}/node-ca.pem")
        assert app.returncode == 1 and app.stdout.count(b"unreachable") == 3, app
    finally:
        proc.send_signal(2)
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
