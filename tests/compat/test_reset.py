"""ResetWorkflowExecution, "reset after a bad deploy": an order workflow runs activities and
takes signals on a buggy build; after the reset, the fixed build completes it. Signals received
after the reset point are reapplied (and not, with reapply type NONE or signals excluded); the
replaced run is terminated; the `temporal workflow reset` CLI picks the event itself for each
--type.

Each test runs in-process workers on its own task queue with uuid workflow IDs."""

import asyncio
import uuid

import pytest
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import (
    EventType,
    PendingWorkflowTaskState,
    ResetReapplyExcludeType,
    ResetReapplyType,
    UpdateAdmittedEventOrigin,
    WorkflowExecutionStatus,
    WorkflowTaskFailedCause,
)
from temporalio.api.workflowservice.v1 import ResetWorkflowExecutionRequest
from temporalio.client import WorkflowExecutionStatus as Status
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Worker

import reset_workflows as rw
from conftest import IS_CHRONICLE, new_id
from test_cli import cli, cli_json

TIMEOUT = 30


def buggy_worker(client, task_queue):
    return Worker(client, task_queue=task_queue, workflows=[rw.BuggyOrder], activities=[rw.price])


def fixed_worker(client, task_queue):
    return Worker(client, task_queue=task_queue, workflows=[rw.FixedOrder, rw.ChainOrder],
                  activities=[rw.price])


async def events_of(handle):
    return [e async for e in handle.fetch_history_events()]


def first_of(events, event_type):
    return next(e for e in events if e.event_type == event_type)


def signal_names(events):
    return [e.workflow_execution_signaled_event_attributes.signal_name
            for e in events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED]


async def buggy_run(client, task_queue, items=("a", "b"), checkout=True):
    """An order the buggy build took: its handle (its result, if checked out, is wrong)."""
    handle = await client.start_workflow("ResetOrder", id=new_id("order"), task_queue=task_queue)
    async with buggy_worker(client, task_queue):
        # The first workflow task completes before the signals: they come after the reset point
        # of a reset to the first workflow task.
        await wait_for_event(handle, EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED)
        for item in items:
            await handle.signal("add_item", item)
        if checkout:
            await handle.signal("checkout")
            result = await asyncio.wait_for(handle.result(), TIMEOUT)
            assert result == {"items": list(items), "total": 10 * (len(items) - 1), "build": "buggy"}
        else:
            await wait_for_signals(handle, len(items))
    return handle


async def wait_for_event(handle, event_type):
    for _ in range(TIMEOUT * 10):
        if any(e.event_type == event_type for e in await events_of(handle)):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"no {event_type} in {handle.id}")


async def wait_for_signals(handle, n):
    for _ in range(TIMEOUT * 10):
        if len(signal_names(await events_of(handle))) >= n:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{handle.id} did not get {n} signals")


async def reset(client, handle, event_id, **kwargs):
    response = await client.workflow_service.reset_workflow_execution(ResetWorkflowExecutionRequest(
        namespace=client.namespace,
        workflow_execution=WorkflowExecution(workflow_id=handle.id, run_id=kwargs.pop("run_id", "")),
        reason="bad deploy",
        workflow_task_finish_event_id=event_id,
        request_id=kwargs.pop("request_id", str(uuid.uuid4())),
        **kwargs,
    ))
    return response.run_id


async def test_reset_to_first_workflow_task_reapplies_signals_and_fixed_build_completes(client, task_queue):
    handle = await buggy_run(client, task_queue)
    base_events = await events_of(handle)
    base_run = base_events[0].workflow_execution_started_event_attributes.original_execution_run_id
    first_completed = first_of(base_events, EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED).event_id

    request_id = str(uuid.uuid4())
    new_run = await reset(client, handle, first_completed, request_id=request_id)
    assert new_run and new_run != base_run
    if IS_CHRONICLE:
        # A retried request answers the same run. (Temporal's server means to de-duplicate by
        # request ID too, but 1.32 compares it with the reset run's start request ID, which it
        # copies from the base run, so a retry resets again there.)
        assert await reset(client, handle, first_completed, request_id=request_id) == new_run

    async with fixed_worker(client, task_queue):
        result = await asyncio.wait_for(client.get_workflow_handle(handle.id).result(), TIMEOUT)
    assert result == {"items": ["a", "b"], "total": 20, "build": "fixed"}

    new_handle = client.get_workflow_handle(handle.id, run_id=new_run)
    events = await events_of(new_handle)
    # The prefix is the base run's; then the reset's failed task, the reapplied signals.
    assert [e.event_id for e in events[:first_completed - 1]] == list(range(1, first_completed))
    for mine, theirs in zip(events[:first_completed - 1], base_events):
        assert mine.event_type == theirs.event_type
    failed = events[first_completed - 1]
    assert failed.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
    attrs = failed.workflow_task_failed_event_attributes
    assert attrs.cause == WorkflowTaskFailedCause.WORKFLOW_TASK_FAILED_CAUSE_RESET_WORKFLOW
    assert (attrs.base_run_id, attrs.new_run_id) == (base_run, new_run)
    assert attrs.identity == "history-service"
    assert attrs.failure.message == "bad deploy"
    assert attrs.failure.HasField("reset_workflow_failure_info")
    assert signal_names(events) == ["add_item", "add_item", "checkout"]
    # The completed base run stays completed; the new run is the current one.
    assert (await handle.describe()).status == Status.COMPLETED
    assert (await client.get_workflow_handle(handle.id).describe()).run_id == new_run


@pytest.mark.parametrize("how", ["reapply_none", "exclude_signal"])
async def test_reset_without_reapplying_signals(client, task_queue, how):
    handle = await buggy_run(client, task_queue)
    first_completed = first_of(await events_of(handle), EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED).event_id
    if how == "reapply_none":
        options = {"reset_reapply_type": ResetReapplyType.RESET_REAPPLY_TYPE_NONE}
    else:
        options = {"reset_reapply_exclude_types": [ResetReapplyExcludeType.RESET_REAPPLY_EXCLUDE_TYPE_SIGNAL]}
    new_run = await reset(client, handle, first_completed, **options)
    current = client.get_workflow_handle(handle.id)
    async with fixed_worker(client, task_queue):
        await wait_for_event(client.get_workflow_handle(handle.id, run_id=new_run),
                             EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED)
        described = await current.describe()
        assert (described.run_id, described.status) == (new_run, Status.RUNNING)
        assert signal_names(await events_of(current)) == []
        await current.signal("add_item", "c")
        await current.signal("checkout")
        result = await asyncio.wait_for(current.result(), TIMEOUT)
    assert result == {"items": ["c"], "total": 10, "build": "fixed"}


async def test_reset_of_a_running_workflow_terminates_it(client, task_queue):
    handle = await buggy_run(client, task_queue, items=("a",), checkout=False)
    base_run = (await handle.describe()).run_id
    first_completed = first_of(await events_of(handle), EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED).event_id
    new_run = await reset(client, handle, first_completed)

    old = client.get_workflow_handle(handle.id, run_id=base_run)
    old_described = await old.describe()
    assert old_described.status == Status.TERMINATED
    # Describe links the runs: the replaced run names its replacement; the new run started at
    # the reset, its history (and original start) is the base run's.
    assert old_described.raw_description.workflow_extended_info.reset_run_id == new_run
    new_described = await client.get_workflow_handle(handle.id, run_id=new_run).describe()
    extended = new_described.raw_description.workflow_extended_info
    assert extended.original_start_time.ToDatetime() == old_described.raw_description.workflow_execution_info.start_time.ToDatetime()
    assert extended.HasField("last_reset_time")
    assert new_described.start_time >= old_described.start_time
    terminated = (await events_of(old))[-1]
    assert terminated.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED
    assert terminated.workflow_execution_terminated_event_attributes.reason == "bad deploy"
    assert terminated.workflow_execution_terminated_event_attributes.identity == "history-resetter"

    # Visibility: both runs, each with its own row.
    async def rows():
        found = {}
        async for w in client.list_workflows(f"WorkflowId = '{handle.id}'"):
            found[w.run_id] = w.status
        assert found == {base_run: Status.TERMINATED, new_run: Status.RUNNING}, found
    for _ in range(50):
        try:
            await rows()
            break
        except AssertionError:
            await asyncio.sleep(0.2)
    await rows()

    async with fixed_worker(client, task_queue):
        await client.get_workflow_handle(handle.id).signal("checkout")
        result = await asyncio.wait_for(client.get_workflow_handle(handle.id).result(), TIMEOUT)
    assert result == {"items": ["a"], "total": 10, "build": "fixed"}


async def quiet_last_event_id(handle) -> int:
    """The run's last event ID once nothing is in flight: no workflow task started (the stopped
    worker's last completion may still be on its way), and the same last event over half a
    second."""
    previous = None
    for _ in range(TIMEOUT * 4):
        last = (await events_of(handle))[-1].event_id
        described = (await handle.describe()).raw_description
        started = (described.HasField("pending_workflow_task")
                   and described.pending_workflow_task.state == PendingWorkflowTaskState.PENDING_WORKFLOW_TASK_STATE_STARTED)
        if last == previous and not started:
            return last
        previous = last
        await asyncio.sleep(0.5)
    raise AssertionError(f"{handle.id} kept changing")


async def test_reset_refusals(client, task_queue):
    handle = await buggy_run(client, task_queue, items=("a",), checkout=False)
    last = await quiet_last_event_id(handle)
    for bad in (1, last + 1):
        with pytest.raises(RPCError) as e:
            await reset(client, handle, bad)
        assert e.value.status == RPCStatusCode.INVALID_ARGUMENT
        assert e.value.message == "Workflow task finish ID must be > 1 && <= workflow last event ID."
    missing_run = str(uuid.uuid4())
    with pytest.raises(RPCError) as e:
        await reset(client, handle, 4, run_id=missing_run)
    assert e.value.status == RPCStatusCode.NOT_FOUND
    assert e.value.message == (
        f'workflow execution not found for workflow ID "{handle.id}" and run ID "{missing_run}"')
    missing_id = new_id("missing")
    with pytest.raises(RPCError) as e:
        await reset(client, client.get_workflow_handle(missing_id), 4)
    assert e.value.status == RPCStatusCode.NOT_FOUND
    assert e.value.message == f"workflow not found for ID: {missing_id}"
    with pytest.raises(RPCError) as e:
        await reset(client, handle, 4, request_id="")
    assert e.value.status == RPCStatusCode.INVALID_ARGUMENT
    assert e.value.message == "RequestId is not set on request."
    # Nothing changed: the run is still running and current.
    assert (await handle.describe()).status == Status.RUNNING


async def test_cli_reset_types(client, server_address, task_queue):
    handle = await buggy_run(client, task_queue)
    # LastWorkflowTask: the fixed build replays the buggy one's activities and completes.
    await cli(server_address, "workflow", "reset", "--workflow-id", handle.id,
              "--type", "LastWorkflowTask", "--reason", "fix total")
    current = client.get_workflow_handle(handle.id)
    async with fixed_worker(client, task_queue):
        assert await asyncio.wait_for(current.result(), TIMEOUT) == {
            "items": ["a", "b"], "total": 20, "build": "fixed"}
        last_run = (await current.describe()).run_id
        events = await events_of(current)
        failed = [e for e in events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED]
        assert failed[-1].workflow_task_failed_event_attributes.failure.message.endswith(": fix total")
        # The activities ran on the buggy build: the new run has their results, not new tasks.
        scheduled = [e for e in events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED]
        assert len(scheduled) == 2

        # FirstWorkflowTask: everything after the first task runs again on the fixed build.
        await cli(server_address, "workflow", "reset", "--workflow-id", handle.id,
                  "--type", "FirstWorkflowTask", "--reason", "rerun")
        assert (await current.describe()).run_id != last_run
        assert await asyncio.wait_for(current.result(), TIMEOUT) == {
            "items": ["a", "b"], "total": 20, "build": "fixed"}

        # --event-id: the first Started event (the task is started and failed by the reset).
        out = await cli_json(server_address, "workflow", "reset", "--workflow-id", handle.id,
                             "--event-id", "3", "--reason", "by id")
        assert (await current.describe()).run_id == out["runId"]
        assert await asyncio.wait_for(current.result(), TIMEOUT) == {
            "items": ["a", "b"], "total": 20, "build": "fixed"}
        assert [e.event_type for e in (await events_of(current))[2:4]] == [
            EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED, EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED]


async def test_cli_reset_last_continued_as_new(client, server_address, task_queue):
    async with fixed_worker(client, task_queue):
        handle = await client.start_workflow("ResetChain", False, id=new_id("chain"), task_queue=task_queue)
        first_run = handle.first_execution_run_id or handle.result_run_id
        await handle.signal("checkout")
        current = client.get_workflow_handle(handle.id)
        second_run = first_run
        for _ in range(TIMEOUT * 10):
            second_run = (await current.describe()).run_id
            if second_run != first_run:
                break
            await asyncio.sleep(0.1)
        assert second_run != first_run

        # The CLI resets the run that continued (the first) to its last workflow task.
        out = await cli_json(server_address, "workflow", "reset", "--workflow-id", handle.id,
                             "--type", "LastContinuedAsNew", "--reason", "again")
        reset_run = out["runId"]
        assert reset_run not in (first_run, second_run)
        old = client.get_workflow_handle(handle.id, run_id=second_run)
        assert (await old.describe()).status == Status.TERMINATED
        reset_events = await events_of(client.get_workflow_handle(handle.id, run_id=reset_run))
        assert reset_events[0].workflow_execution_started_event_attributes.continued_execution_run_id == ""
        failed = first_of(reset_events, EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED)
        assert failed.workflow_task_failed_event_attributes.base_run_id == first_run
        # The reset run continues as new again (checkout is in its prefix); the next run
        # completes on checkout.
        next_run = reset_run
        for _ in range(TIMEOUT * 10):
            next_run = (await current.describe()).run_id
            if next_run != reset_run:
                break
            await asyncio.sleep(0.1)
        assert next_run != reset_run
        await current.signal("checkout")
        result = await asyncio.wait_for(current.result(), TIMEOUT)
        assert result == {"items": [], "total": 0, "build": "chain"}


@pytest.mark.parametrize("exclude_updates", [False, True])
async def test_reset_reapplies_updates(client, task_queue, exclude_updates):
    async with Worker(client, task_queue=task_queue, workflows=[rw.Counter]):
        handle = await client.start_workflow("ResetCounter", id=new_id("counter"), task_queue=task_queue)
        await wait_for_event(handle, EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED)
        assert await handle.execute_update("add", 5) == 5
        first_completed = first_of(await events_of(handle), EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED).event_id
        options = {}
        if exclude_updates:
            options["reset_reapply_exclude_types"] = [ResetReapplyExcludeType.RESET_REAPPLY_EXCLUDE_TYPE_UPDATE]
        new_run = await reset(client, handle, first_completed, **options)
        current = client.get_workflow_handle(handle.id, run_id=new_run)
        # The reapplied update runs again in the new run (its handler adds 5 once more).
        expected = 0 if exclude_updates else 5
        if not exclude_updates:
            for _ in range(TIMEOUT * 10):
                events = await events_of(current)
                if any(e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED for e in events):
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("the reapplied update did not complete in the new run")
            # As Temporal writes it: the update is admitted in the new run's history (origin
            # REAPPLY, with the request), and its acceptance then carries no second copy.
            events = await events_of(current)
            admitted = [e for e in events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ADMITTED]
            assert len(admitted) == 1
            attrs = admitted[0].workflow_execution_update_admitted_event_attributes
            assert attrs.origin == UpdateAdmittedEventOrigin.UPDATE_ADMITTED_EVENT_ORIGIN_REAPPLY
            assert attrs.request.input.name == "add"
            accepted = [e for e in events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED]
            assert len(accepted) == 1 and accepted[0].event_id > admitted[0].event_id
            acceptance = accepted[0].workflow_execution_update_accepted_event_attributes
            assert acceptance.protocol_instance_id == attrs.request.meta.update_id
            assert not acceptance.HasField("accepted_request")
        await current.signal("finish")
        assert await asyncio.wait_for(current.result(), TIMEOUT) == expected
