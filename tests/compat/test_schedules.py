"""Schedules through the official Python SDK and the `temporal` CLI: create, describe, list,
pause/unpause, trigger, backfill, update, delete, overlap policies and started workflows'
IDs and search attributes. Intervals are seconds long so that each test takes a few seconds."""

import asyncio
import json
import subprocess
import time
from datetime import datetime, timedelta, timezone

import pytest
from temporalio.api.workflowservice.v1 import ListScheduleMatchingTimesRequest
from temporalio.client import (Client, Schedule, ScheduleActionStartWorkflow, ScheduleBackfill,
                               ScheduleCalendarSpec, ScheduleIntervalSpec, ScheduleOverlapPolicy,
                               SchedulePolicy, ScheduleRange, ScheduleSpec, ScheduleState,
                               ScheduleUpdate, ScheduleAlreadyRunningError)
from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Worker

import schedule_workflows as sw
from conftest import new_id, temporal_cli


REGION = SearchAttributeKey.for_keyword("OrderRegion")


def worker(client, task_queue):
    return Worker(client, task_queue=task_queue, workflows=sw.ALL)


async def eventually(check, timeout=15.0, interval=0.2):
    """Polls `check` (async, returns a truthy value when done) until it holds."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(interval)


async def result_when_started(handle, timeout=15.0):
    """The result of a workflow a schedule starts asynchronously (not found until then)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await asyncio.wait_for(handle.result(), timeout)
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


def report_action(task_queue, workflow_id, day="today", workflow=sw.DailyReport.run):
    return ScheduleActionStartWorkflow(workflow, day, id=workflow_id, task_queue=task_queue)


async def test_daily_report_schedule_pause_trigger_backfill(client: Client, task_queue):
    schedule_id = new_id("daily-report")
    workflow_id = new_id("report")
    async with worker(client, task_queue):
        handle = await client.create_schedule(
            schedule_id,
            Schedule(action=report_action(task_queue, workflow_id, day="2024-01-01"),
                     spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(seconds=2))]),
                     policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.ALLOW_ALL)),
            memo={"team": "reports"})
        desc = await handle.describe()
        assert desc.id == schedule_id
        assert desc.schedule.spec.intervals == [ScheduleIntervalSpec(every=timedelta(seconds=2))]
        assert desc.schedule.policy.overlap == ScheduleOverlapPolicy.ALLOW_ALL
        assert not desc.schedule.state.paused
        assert await desc.memo_value("team") == "reports"
        future = desc.info.next_action_times
        assert len(future) == 10
        assert all((b - a) == timedelta(seconds=2) for a, b in zip(future, future[1:]))
        assert all(t.second % 2 == 0 and t.microsecond == 0 for t in future)

        # Two scheduled actions, each a workflow named after its schedule time.
        async def two_actions():
            d = await handle.describe()
            return d if d.info.num_actions >= 2 else None
        desc = await eventually(two_actions, timeout=10)
        recent = desc.info.recent_actions
        assert len(recent) >= 2
        first = recent[0]
        started_id = first.action.workflow_id
        assert started_id == f"{workflow_id}-{first.scheduled_at.astimezone(timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')}"
        assert first.started_at >= first.scheduled_at - timedelta(seconds=1)
        wf = client.get_workflow_handle(started_id, run_id=first.action.first_execution_run_id)
        assert await asyncio.wait_for(wf.result(), 15) == "report for 2024-01-01"
        wf_desc = await wf.describe()
        sa = wf_desc.search_attributes
        assert sa["TemporalScheduledById"] == [schedule_id]
        scheduled_start = sa["TemporalScheduledStartTime"][0]
        assert scheduled_start.replace(tzinfo=timezone.utc) == first.scheduled_at.astimezone(timezone.utc)

        # Paused: no scheduled actions, but a trigger still runs.
        await handle.pause(note="maintenance window")
        desc = await handle.describe()
        assert desc.schedule.state.paused
        assert desc.schedule.state.note == "maintenance window"
        paused_count = desc.info.num_actions
        await asyncio.sleep(2.5)
        # (an action whose start was already under way when the pause landed may still count)
        assert (await handle.describe()).info.num_actions <= paused_count + 1
        paused_count = (await handle.describe()).info.num_actions
        await asyncio.sleep(2.2)
        assert (await handle.describe()).info.num_actions == paused_count
        await handle.trigger()

        async def triggered():
            d = await handle.describe()
            return d if d.info.num_actions == paused_count + 1 else None
        await eventually(triggered, timeout=10)

        # Backfill three past times (inclusive start): each starts a workflow named for it.
        start = datetime(2024, 1, 1, 0, 0, 0, tzinfo=timezone.utc)
        await handle.backfill(ScheduleBackfill(start_at=start, end_at=start + timedelta(seconds=5),
                                               overlap=ScheduleOverlapPolicy.ALLOW_ALL))
        for second in (0, 2, 4):
            backfilled = client.get_workflow_handle(f"{workflow_id}-2024-01-01T00:00:{second:02d}Z")
            assert await result_when_started(backfilled) == "report for 2024-01-01"

        await handle.unpause(note="back to work")
        desc = await handle.describe()
        assert not desc.schedule.state.paused
        assert desc.schedule.state.note == "back to work"
        resumed = desc.info.num_actions

        async def resumed_actions():
            d = await handle.describe()
            return d if d.info.num_actions > resumed else None
        await eventually(resumed_actions, timeout=10)

        await handle.delete()
        with pytest.raises(RPCError) as err:
            await handle.describe()
        assert err.value.status == RPCStatusCode.NOT_FOUND


async def test_overlap_skip_buffer_one_and_allow_all(client: Client, task_queue):
    """Three triggers 1.1 s apart (distinct start seconds, so distinct workflow IDs) while a
    4 s workflow runs; the three policies run side by side."""

    async def run(policy):
        handle = await client.create_schedule(
            new_id(f"overlap-{policy.name.lower()}"),
            Schedule(action=ScheduleActionStartWorkflow(sw.SlowReport.run, 4.0, id=new_id("slow"),
                                                        task_queue=task_queue),
                     spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(hours=1))]),
                     policy=SchedulePolicy(overlap=policy)))
        for i in range(3):
            if i:
                await asyncio.sleep(1.1)
            await handle.trigger()
        await asyncio.sleep(0.5)
        running = (await handle.describe()).info

        async def settled():
            d = await handle.describe()
            return d if d.info.num_actions >= 1 and not d.info.running_actions and \
                d.raw_description.info.buffer_size == 0 else None
        done = await eventually(settled, timeout=20)
        await handle.delete()
        return running, done

    async with worker(client, task_queue):
        policies = (ScheduleOverlapPolicy.SKIP, ScheduleOverlapPolicy.BUFFER_ONE, ScheduleOverlapPolicy.ALLOW_ALL,
                    ScheduleOverlapPolicy.TERMINATE_OTHER, ScheduleOverlapPolicy.CANCEL_OTHER)
        results = dict(zip(policies, await asyncio.gather(*(run(p) for p in policies))))
    running, done = results[ScheduleOverlapPolicy.SKIP]
    assert done.info.num_actions == 1
    assert done.info.num_actions_skipped_overlap == 2
    assert len(running.running_actions) == 1
    running, done = results[ScheduleOverlapPolicy.BUFFER_ONE]
    assert len(running.running_actions) == 1
    assert done.info.num_actions == 2
    assert done.info.num_actions_skipped_overlap == 1
    running, done = results[ScheduleOverlapPolicy.ALLOW_ALL]
    assert running.num_actions == 3
    assert done.info.num_actions == 3
    assert done.info.num_actions_skipped_overlap == 0
    # ALLOW_ALL runs are not tracked as the schedule's running workflows.
    assert running.running_actions == []
    # TERMINATE_OTHER / CANCEL_OTHER: each trigger stops the running workflow, then starts.
    for policy, stopped in ((ScheduleOverlapPolicy.TERMINATE_OTHER, "TERMINATED"),
                            (ScheduleOverlapPolicy.CANCEL_OTHER, "CANCELED")):
        running, done = results[policy]
        assert done.info.num_actions == 3, policy
        assert done.info.num_actions_skipped_overlap == 0
        statuses = [client.get_workflow_handle(a.action.workflow_id, run_id=a.action.first_execution_run_id)
                    for a in done.info.recent_actions]
        got = [(await h.describe()).status.name for h in statuses]
        assert got == [stopped, stopped, "COMPLETED"], (policy, got)


async def test_calendar_spec_update_list_and_matching_times(client: Client, task_queue):
    schedule_id = new_id("weekday-report")
    handle = await client.create_schedule(
        schedule_id,
        Schedule(action=report_action(task_queue, new_id("report")),
                 spec=ScheduleSpec(cron_expressions=["30 9 * * MON-FRI"], time_zone_name="America/New_York",
                                   jitter=timedelta(seconds=0)),
                 state=ScheduleState(paused=True, note="created paused", limited_actions=True,
                                     remaining_actions=3)),
        search_attributes=TypedSearchAttributes([SearchAttributePair(REGION, "eu-west")]))
    desc = await handle.describe()
    spec = desc.schedule.spec
    # Cron strings come back as structured calendars, as Temporal stores them.
    assert spec.cron_expressions == []
    assert spec.time_zone_name == "America/New_York"
    assert len(spec.calendars) == 1
    cal = spec.calendars[0]
    assert list(cal.hour) == [ScheduleRange(9, 9)]
    assert list(cal.minute) == [ScheduleRange(30, 30)]
    assert list(cal.day_of_week) == [ScheduleRange(1, 5)]
    assert desc.schedule.state.paused and desc.schedule.state.note == "created paused"
    assert desc.typed_search_attributes.get(REGION) == "eu-west"
    assert desc.schedule.state.limited_actions and desc.schedule.state.remaining_actions == 3
    # Future times honour the remaining actions and fall at 09:30 New York time on weekdays.
    times = desc.info.next_action_times
    assert len(times) == 3
    for t in times:
        local = t.astimezone(timezone(timedelta(hours=-5))) if t.month in (1, 2, 12) else None
        assert t.minute == 30 and t.weekday() < 5
        if local is not None:
            assert local.hour == 9

    start = datetime(2024, 1, 5, 0, 0, tzinfo=timezone.utc)
    resp = await client.workflow_service.list_schedule_matching_times(ListScheduleMatchingTimesRequest(
        namespace=client.namespace, schedule_id=schedule_id,
        start_time=start, end_time=start + timedelta(days=4)))
    got = [t.ToDatetime().strftime("%Y-%m-%dT%H:%M:%SZ") for t in resp.start_time]
    assert got == ["2024-01-05T14:30:00Z", "2024-01-08T14:30:00Z"]

    def to_noon(input):
        input.description.schedule.spec = ScheduleSpec(
            calendars=[ScheduleCalendarSpec(hour=[ScheduleRange(12)], day_of_week=[ScheduleRange(0, 6)])])
        return ScheduleUpdate(schedule=input.description.schedule)
    await handle.update(to_noon)
    desc = await handle.describe()
    assert list(desc.schedule.spec.calendars[0].hour) == [ScheduleRange(12, 12)]
    assert all(t.hour == 12 and t.minute == 0 for t in desc.info.next_action_times)

    async def listed():
        return [s async for s in await client.list_schedules() if s.id == schedule_id]
    entries = await eventually(listed, timeout=20, interval=0.5)
    assert entries[0].typed_search_attributes.get(REGION) == "eu-west"
    assert entries[0].schedule.state.paused
    assert entries[0].schedule.state.note == "created paused"
    await handle.delete()

    with pytest.raises(RPCError) as err:
        await client.create_schedule(
            new_id("bad"), Schedule(action=report_action(task_queue, new_id("report")),
                                    spec=ScheduleSpec(cron_expressions=["61 * * * *"])))
    assert err.value.status == RPCStatusCode.INVALID_ARGUMENT


def cli(server_address, *args):
    out = subprocess.run([temporal_cli(), *args, "--address", server_address], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout


async def test_cli_schedule_lifecycle(client: Client, server_address, task_queue):
    schedule_id = new_id("cli-report")
    workflow_id = new_id("cli-report-wf")
    async with worker(client, task_queue):
        cli(server_address, "schedule", "create", "--schedule-id", schedule_id, "--interval", "1h",
            "--workflow-id", workflow_id, "--task-queue", task_queue, "--type", "DailyReport",
            "--input", '"cli"', "--overlap-policy", "AllowAll")
        desc = json.loads(cli(server_address, "schedule", "describe", "--schedule-id", schedule_id, "-o", "json"))
        assert desc["schedule"]["spec"]["interval"][0]["interval"] == "3600s"

        cli(server_address, "schedule", "toggle", "--schedule-id", schedule_id, "--pause", "--reason", "quiet")
        desc = json.loads(cli(server_address, "schedule", "describe", "--schedule-id", schedule_id, "-o", "json"))
        assert desc["schedule"]["state"]["paused"] is True
        assert desc["schedule"]["state"]["notes"] == "quiet"

        cli(server_address, "schedule", "trigger", "--schedule-id", schedule_id)
        cli(server_address, "schedule", "backfill", "--schedule-id", schedule_id,
            "--start-time", "2024-01-01T00:00:00Z", "--end-time", "2024-01-01T01:30:00Z",
            "--overlap-policy", "AllowAll")
        backfilled = client.get_workflow_handle(f"{workflow_id}-2024-01-01T01:00:00Z")
        assert await result_when_started(backfilled) == "report for cli"

        async def three_actions():
            d = await client.get_schedule_handle(schedule_id).describe()
            return d if d.info.num_actions >= 3 else None
        await eventually(three_actions, timeout=15)

        async def listed():
            out = cli(server_address, "schedule", "list", "-o", "json")
            return [s for s in json.loads(out or "[]") if s.get("scheduleId") == schedule_id]
        await eventually(listed, timeout=20, interval=0.5)

        cli(server_address, "schedule", "toggle", "--schedule-id", schedule_id, "--unpause", "--reason", "go")
        cli(server_address, "schedule", "delete", "--schedule-id", schedule_id)
        out = subprocess.run([temporal_cli(), "schedule", "describe", "--schedule-id", schedule_id,
                              "--address", server_address], capture_output=True, text=True, timeout=30)
        assert out.returncode != 0


async def test_trigger_immediately_shows_in_describe_at_once_and_action_attributes_are_typed(
        client: Client, task_queue):
    """A paused schedule created with trigger_immediately has taken that action when describe
    answers right after the create; search attributes given to the action untyped (a one-element
    list, as SDKs send them) come back typed by the registry."""
    action = report_action(task_queue, new_id("triggered"))
    action.untyped_search_attributes = {REGION.name: ["emea"]}
    async with worker(client, task_queue):
        handle = await client.create_schedule(
            new_id("trigger-at-create"),
            Schedule(action=action, spec=ScheduleSpec(), state=ScheduleState(paused=True)),
            trigger_immediately=True)
        try:
            description = await handle.describe()
            assert description.info.num_actions == 1
            assert len(description.info.recent_actions) == 1
            typed = description.schedule.action.typed_search_attributes
            assert typed[REGION] == "emea"
            # A list of more than one value is refused for a Keyword, as Temporal refuses it.
            bad = report_action(task_queue, new_id("bad"))
            bad.untyped_search_attributes = {REGION.name: ["emea", "apac"]}
            with pytest.raises(RPCError) as err:
                await client.create_schedule(new_id("bad-attrs"), Schedule(action=bad, spec=ScheduleSpec()))
            assert err.value.status == RPCStatusCode.INVALID_ARGUMENT
        finally:
            await handle.delete()


async def test_creating_a_schedule_id_twice_raises_schedule_already_running(client: Client, task_queue):
    """The SDK raises ScheduleAlreadyRunningError on Temporal's WorkflowExecutionAlreadyStarted
    detail; a bare AlreadyExists status would reach the user as a generic RPCError."""
    schedule_id = new_id("dup-schedule")
    schedule = Schedule(action=report_action(task_queue, new_id("dup-report")),
                        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(hours=1))]),
                        state=ScheduleState(paused=True))
    handle = await client.create_schedule(schedule_id, schedule)
    try:
        with pytest.raises(ScheduleAlreadyRunningError):
            await client.create_schedule(schedule_id, schedule)
        assert (await handle.describe()).schedule.state.paused
    finally:
        await handle.delete()
