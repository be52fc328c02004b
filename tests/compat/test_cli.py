"""The official ``temporal`` CLI against the server under test (``--address host:port``, ``-o json``).

The CLI runs as an asyncio subprocess so the in-process worker keeps serving the same event loop
(a blocking subprocess call would starve it, e.g. while the CLI waits for a query answer)."""

import asyncio
import base64
import json
import time
from dataclasses import dataclass

from temporalio.worker import Worker

import workflows as wf
from conftest import new_id, temporal_cli

CLI_TIMEOUT = 30


@dataclass
class CliResult:
    args: tuple
    returncode: int
    stdout: str
    stderr: str

    def json(self):
        try:
            return json.loads(self.stdout)
        except json.JSONDecodeError as e:
            raise AssertionError(f"temporal {' '.join(self.args)}: not JSON ({e}):\n{self.stdout}\n{self.stderr}")


def decode_payloads(payloads):
    """JSON-encoded payloads of `-o json` history output (``{"payloads": [{"metadata":…, "data": b64}]}``)."""
    out = []
    for p in payloads["payloads"]:
        assert base64.b64decode(p["metadata"]["encoding"]) == b"json/plain", p
        out.append(json.loads(base64.b64decode(p["data"])))
    return out


async def cli(address: str, *args: str, check: bool = True) -> CliResult:
    proc = await asyncio.create_subprocess_exec(temporal_cli(), *args, "--address", address,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                                                stdin=asyncio.subprocess.DEVNULL)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), CLI_TIMEOUT)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"temporal {' '.join(args)} did not finish in {CLI_TIMEOUT}s")
    result = CliResult(args, proc.returncode, out.decode(), err.decode())
    if check and result.returncode != 0:
        raise AssertionError(f"temporal {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


async def cli_json(address: str, *args: str):
    return (await cli(address, *args, "-o", "json")).json()


async def eventually(fn, timeout: float = 15.0, interval: float = 0.2):
    """Retries ``fn`` (an async callable) until it returns without AssertionError."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await fn()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(interval)


async def test_operator_namespace_create_list_describe(server_address):
    name = new_id("ns")
    await cli(server_address, "operator", "namespace", "create", "-n", name, "--retention", "48h",
              "--description", "compat suite namespace")

    described = await cli_json(server_address, "operator", "namespace", "describe", "-n", name)
    assert described["namespaceInfo"]["name"] == name
    assert described["namespaceInfo"]["state"] == "NAMESPACE_STATE_REGISTERED"
    assert described["namespaceInfo"]["description"] == "compat suite namespace"
    assert described["namespaceInfo"]["id"]
    assert described["config"]["workflowExecutionRetentionTtl"] == "172800s"

    listed = await cli_json(server_address, "operator", "namespace", "list")
    assert isinstance(listed, list)
    by_name = {ns["namespaceInfo"]["name"]: ns for ns in listed}
    assert "default" in by_name and name in by_name
    assert by_name[name]["namespaceInfo"]["id"] == described["namespaceInfo"]["id"]

    again = await cli(server_address, "operator", "namespace", "create", "-n", name, check=False)
    assert again.returncode != 0
    assert "already exists" in again.stderr.lower(), again.stderr

    missing = await cli(server_address, "operator", "namespace", "describe", "-n", new_id("no-such-ns"), check=False)
    assert missing.returncode != 0


async def test_workflow_start_list_describe_query_signal_show(client, server_address, task_queue):
    workflow_id = new_id("cli")
    async with Worker(client, task_queue=task_queue, workflows=wf.ALL_WORKFLOWS, activities=wf.ALL_ACTIVITIES):
        started = await cli_json(server_address, "workflow", "start", "--type", "ExpenseWorkflow",
                                 "--task-queue", task_queue, "--workflow-id", workflow_id, "--input", "60")
        assert started["workflowId"] == workflow_id
        run_id = started["runId"]
        assert run_id

        async def query_waiting():
            result = await cli(server_address, "workflow", "query", "--workflow-id", workflow_id,
                               "--type", "status", "-o", "json", check=False)
            assert result.returncode == 0, result.stderr
            return result.json()

        assert (await eventually(query_waiting))["queryResult"] == ["waiting"]

        described = await cli_json(server_address, "workflow", "describe", "--workflow-id", workflow_id)
        info = described["workflowExecutionInfo"]
        assert info["execution"] == {"workflowId": workflow_id, "runId": run_id}
        assert info["type"]["name"] == "ExpenseWorkflow"
        assert info["status"] == "WORKFLOW_EXECUTION_STATUS_RUNNING"
        assert info["taskQueue"] == task_queue
        assert described["executionConfig"]["taskQueue"]["name"] == task_queue

        async def listed_by_query():
            rows = await cli_json(server_address, "workflow", "list", "--query", f"WorkflowId = '{workflow_id}'")
            assert [r["execution"]["workflowId"] for r in rows] == [workflow_id], rows
            return rows[0]

        row = await eventually(listed_by_query)
        assert row["execution"]["runId"] == run_id
        assert row["type"]["name"] == "ExpenseWorkflow"
        assert row["status"] == "WORKFLOW_EXECUTION_STATUS_RUNNING"

        async def listed_plain():
            rows = await cli_json(server_address, "workflow", "list")
            assert workflow_id in {r["execution"]["workflowId"] for r in rows}

        await eventually(listed_plain)

        await cli(server_address, "workflow", "signal", "--workflow-id", workflow_id, "--name", "approve",
                  "--input", '{"approver": "dan"}')
        handle = client.get_workflow_handle(workflow_id)
        assert await asyncio.wait_for(handle.result(), 30) == "approved by dan"

        queried = await cli_json(server_address, "workflow", "query", "--workflow-id", workflow_id, "--type", "status")
        assert queried["queryResult"] == ["approved by dan"]

    shown = await cli_json(server_address, "workflow", "show", "--workflow-id", workflow_id)
    events = shown["events"]
    assert [int(e["eventId"]) for e in events] == list(range(1, len(events) + 1))
    types = [e["eventType"] for e in events]
    assert types[0] == "EVENT_TYPE_WORKFLOW_EXECUTION_STARTED"
    assert types[-1] == "EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED"
    signaled = [e for e in events if e["eventType"] == "EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED"]
    assert len(signaled) == 1
    assert signaled[0]["workflowExecutionSignaledEventAttributes"]["signalName"] == "approve"
    start_attrs = events[0]["workflowExecutionStartedEventAttributes"]
    assert start_attrs["workflowType"]["name"] == "ExpenseWorkflow"
    assert start_attrs["taskQueue"]["name"] == task_queue
    assert start_attrs["identity"].startswith("temporal-cli")
    assert decode_payloads(events[-1]["workflowExecutionCompletedEventAttributes"]["result"]) == ["approved by dan"]
    assert decode_payloads(signaled[0]["workflowExecutionSignaledEventAttributes"]["input"]) == [{"approver": "dan"}]
    assert decode_payloads(start_attrs["input"]) == [60]

    described = await cli_json(server_address, "workflow", "describe", "--workflow-id", workflow_id)
    assert described["workflowExecutionInfo"]["status"] == "WORKFLOW_EXECUTION_STATUS_COMPLETED"

    async def listed_completed():
        rows = await cli_json(server_address, "workflow", "list", "--query", f"WorkflowId = '{workflow_id}'")
        assert [r["status"] for r in rows] == ["WORKFLOW_EXECUTION_STATUS_COMPLETED"], rows

    await eventually(listed_completed)


async def test_workflow_terminate(client, server_address, task_queue):
    workflow_id = new_id("cli-term")
    async with Worker(client, task_queue=task_queue, workflows=wf.ALL_WORKFLOWS, activities=wf.ALL_ACTIVITIES):
        await cli(server_address, "workflow", "start", "--type", "WaitForeverWorkflow", "--task-queue", task_queue,
                  "--workflow-id", workflow_id)
        await cli(server_address, "workflow", "terminate", "--workflow-id", workflow_id, "--reason", "cli test")

    described = await cli_json(server_address, "workflow", "describe", "--workflow-id", workflow_id)
    assert described["workflowExecutionInfo"]["status"] == "WORKFLOW_EXECUTION_STATUS_TERMINATED"
    events = (await cli_json(server_address, "workflow", "show", "--workflow-id", workflow_id))["events"]
    assert events[-1]["eventType"] == "EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED"
    assert events[-1]["workflowExecutionTerminatedEventAttributes"]["reason"] == "cli test"

    # a closed workflow cannot be terminated again
    again = await cli(server_address, "workflow", "terminate", "--workflow-id", workflow_id, "--reason", "twice",
                      check=False)
    assert again.returncode != 0
