"""Cron workflows (cron_schedule on start) through the official Python SDK and the CLI."""

import asyncio
import json
import subprocess
import time

import pytest
from temporalio.api.enums.v1 import ContinueAsNewInitiator, EventType, WorkflowExecutionStatus
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Worker

import schedule_workflows as sw
from conftest import new_id, temporal_cli


async def first_event(client: Client, workflow_id: str, run_id: str):
    handle = client.get_workflow_handle(workflow_id, run_id=run_id)
    async for e in handle.fetch_history_events():
        return e


async def close_event(client: Client, workflow_id: str, run_id: str, timeout: float = 20):
    """Waits for the run's close event."""
    handle = client.get_workflow_handle(workflow_id, run_id=run_id)
    deadline = time.monotonic() + timeout
    while True:
        events = [e async for e in handle.fetch_history_events(wait_new_event=False)]
        if events and events[-1].event_type in (
                EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED,
                EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED):
            return events[-1]
        assert time.monotonic() < deadline, f"run {run_id} did not close"
        await asyncio.sleep(0.2)


def next_run(event) -> str:
    for attrs in (event.workflow_execution_completed_event_attributes,
                  event.workflow_execution_failed_event_attributes):
        if attrs.new_execution_run_id:
            return attrs.new_execution_run_id
    return ""


async def test_cron_runs_chain_with_last_result_and_failure(client, task_queue):
    workflow_id = new_id("cron")
    async with Worker(client, task_queue=task_queue, workflows=sw.ALL):
        started_at = time.time()
        handle = await client.start_workflow(sw.CronCounter.run, 2, id=workflow_id, task_queue=task_queue,
                                             cron_schedule="@every 2s")
        first = handle.first_execution_run_id
        e1 = await first_event(client, workflow_id, first)
        a1 = e1.workflow_execution_started_event_attributes
        assert a1.cron_schedule == "@every 2s"
        assert a1.initiator == ContinueAsNewInitiator.CONTINUE_AS_NEW_INITIATOR_CRON_SCHEDULE
        backoff = a1.first_workflow_task_backoff.ToTimedelta().total_seconds()
        assert 0 < backoff <= 2.0
        desc = await handle.describe()
        assert desc.status.name == "RUNNING"
        assert desc.raw_description.workflow_execution_info.execution_time.ToSeconds() > \
               desc.raw_description.workflow_execution_info.start_time.ToSeconds()

        # Run 1 completes with 1; run 2 fails; run 3 sees run 1's result and run 2's failure.
        c1 = await close_event(client, workflow_id, first)
        assert c1.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED
        assert time.time() - started_at >= backoff - 0.1
        second = next_run(c1)
        assert second
        a2 = (await first_event(client, workflow_id, second)).workflow_execution_started_event_attributes
        assert a2.initiator == ContinueAsNewInitiator.CONTINUE_AS_NEW_INITIATOR_CRON_SCHEDULE
        assert a2.continued_execution_run_id == first
        assert a2.first_execution_run_id == first
        assert a2.cron_schedule == "@every 2s"
        assert a2.attempt == 1
        assert a2.last_completion_result.payloads[0].data == b"1"
        assert 0 < a2.first_workflow_task_backoff.ToTimedelta().total_seconds() <= 2.0

        c2 = await close_event(client, workflow_id, second)
        assert c2.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED
        third = next_run(c2)
        assert third
        a3 = (await first_event(client, workflow_id, third)).workflow_execution_started_event_attributes
        assert a3.initiator == ContinueAsNewInitiator.CONTINUE_AS_NEW_INITIATOR_CRON_SCHEDULE
        assert a3.continued_failure.message == "failing run 2"
        assert a3.last_completion_result.payloads[0].data == b"1"

        c3 = await close_event(client, workflow_id, third)
        assert c3.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED
        fourth = next_run(c3)
        assert fourth

        # Terminating ends the chain: no next run.
        await client.get_workflow_handle(workflow_id).terminate("enough")
        desc = await client.get_workflow_handle(workflow_id).describe()
        assert desc.run_id == fourth
        assert desc.status.name == "TERMINATED"
        await asyncio.sleep(2.5)
        desc = await client.get_workflow_handle(workflow_id).describe()
        assert desc.run_id == fourth


async def test_cron_schedule_is_checked(client, task_queue):
    with pytest.raises(RPCError) as err:
        await client.start_workflow(sw.CronCounter.run, 0, id=new_id("cron"), task_queue=task_queue,
                                    cron_schedule="every day at noon")
    assert err.value.status == RPCStatusCode.INVALID_ARGUMENT
    assert "invalid CronSchedule" in err.value.message
    with pytest.raises(RPCError) as err:
        await client.start_workflow(sw.CronCounter.run, 0, id=new_id("cron"), task_queue=task_queue,
                                    cron_schedule="0 0 30 2 *")
    assert err.value.status == RPCStatusCode.INVALID_ARGUMENT
    from datetime import timedelta
    with pytest.raises(RPCError) as err:
        await client.start_workflow(sw.CronCounter.run, 0, id=new_id("cron"), task_queue=task_queue,
                                    cron_schedule="* * * * *", start_delay=timedelta(seconds=1))
    assert err.value.status == RPCStatusCode.INVALID_ARGUMENT
    assert err.value.message == "CronSchedule and WorkflowStartDelay may not be used together."
    # Signal-with-start of a cron workflow waits for the first cron time too.
    wid = new_id("cron-sws")
    handle = await client.start_workflow(sw.CronCounter.run, 0, id=wid, task_queue=task_queue,
                                         cron_schedule="@hourly", start_signal="wake")
    started = (await first_event(client, wid, handle.result_run_id)).workflow_execution_started_event_attributes
    assert started.cron_schedule == "@hourly"
    assert started.first_workflow_task_backoff.ToTimedelta().total_seconds() > 0
    await handle.terminate("done")
    # Standard fields, descriptors and time zones are accepted.
    for spec in ["*/5 9-17 * * mon-fri", "@daily", "CRON_TZ=America/New_York 0 9 * * *", "@every 1h30m"]:
        wid = new_id("cron")
        handle = await client.start_workflow(sw.CronCounter.run, 0, id=wid, task_queue=task_queue,
                                             cron_schedule=spec)
        await handle.terminate("done")


async def test_cli_starts_and_describes_a_cron_workflow(server_address, task_queue):
    workflow_id = new_id("cron-cli")
    cli = temporal_cli()
    out = subprocess.run([cli, "workflow", "start", "--address", server_address, "--task-queue", task_queue,
                          "--type", "CronCounter", "--workflow-id", workflow_id, "--cron", "@hourly",
                          "--input", "0", "-o", "json"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    out = subprocess.run([cli, "workflow", "describe", "--address", server_address, "--workflow-id", workflow_id,
                          "-o", "json"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    desc = json.loads(out.stdout)
    info = desc["workflowExecutionInfo"]
    assert info["status"] == "WORKFLOW_EXECUTION_STATUS_RUNNING"
    # The first run waits for the next full hour.
    start = info["startTime"]
    execution = info["executionTime"]
    assert execution > start
    out = subprocess.run([cli, "workflow", "show", "--address", server_address, "--workflow-id", workflow_id,
                          "-o", "json"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    events = json.loads(out.stdout)["events"]
    assert events[0]["workflowExecutionStartedEventAttributes"]["cronSchedule"] == "@hourly"
    subprocess.run([cli, "workflow", "terminate", "--address", server_address, "--workflow-id", workflow_id],
                   capture_output=True, text=True, timeout=30)


async def test_cron_child_workflow(client, task_queue):
    child_id = new_id("cron-child")
    async with Worker(client, task_queue=task_queue, workflows=sw.ALL):
        parent = await client.start_workflow(sw.CronParent.run, child_id, id=new_id("cron-parent"),
                                             task_queue=task_queue)
        first = await asyncio.wait_for(parent.result(), 20)
        a1 = (await first_event(client, child_id, first)).workflow_execution_started_event_attributes
        assert a1.cron_schedule == "@every 1s"
        assert a1.parent_workflow_execution.workflow_id == parent.id
        assert a1.first_workflow_task_backoff.ToTimedelta().total_seconds() > 0
        c1 = await close_event(client, child_id, first)
        assert c1.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED
        second = next_run(c1)
        assert second
        a2 = (await first_event(client, child_id, second)).workflow_execution_started_event_attributes
        assert a2.initiator == ContinueAsNewInitiator.CONTINUE_AS_NEW_INITIATOR_CRON_SCHEDULE
        assert a2.parent_workflow_execution.workflow_id == parent.id
        assert a2.last_completion_result.payloads[0].data == b"1"
        await client.get_workflow_handle(child_id).terminate("enough")
