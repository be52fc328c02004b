"""Workflow Update through the official Python SDK and the `temporal` CLI: an approval workflow
whose update has a validator, rejections that leave no trace in history, de-duplication by
update ID, updates to closed runs, update-with-start, and updates interleaved with signals and
queries.

Each test runs an in-process worker on its own task queue with uuid workflow IDs."""

import asyncio
import json
import time

import pytest
from temporalio.api.enums.v1 import EventType, WorkflowTaskFailedCause
from temporalio.client import (
    WithStartWorkflowOperation,
    WorkflowUpdateFailedError,
    WorkflowUpdateStage,
)
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Worker

import update_workflows as uw
from conftest import new_id
from test_cli import cli

TIMEOUT = 30  # seconds: every awaited update or result is bounded


def worker(client, task_queue):
    return Worker(client, task_queue=task_queue, workflows=uw.ALL_UPDATE_WORKFLOWS)


def bounded(awaitable, timeout=TIMEOUT):
    return asyncio.wait_for(awaitable, timeout)


async def history_events(handle):
    return [e async for e in handle.fetch_history_events()]


def of_type(events, event_type):
    return [e for e in events if e.event_type == event_type]


async def settled_history(handle, quiet=0.3):
    """The history once it stopped growing (the worker finished what it was doing)."""
    events = await history_events(handle)
    while True:
        await asyncio.sleep(quiet)
        again = await history_events(handle)
        if len(again) == len(events):
            return again
        events = again


async def test_approval_workflow_updates_with_validator(client, task_queue):
    async with worker(client, task_queue):
        handle = await client.start_workflow(uw.ApprovalWorkflow.run, 3, id=new_id("approval"),
                                             task_queue=task_queue)
        assert await bounded(handle.execute_update(uw.ApprovalWorkflow.approve, "alice", id="u-alice")) == 1
        assert await bounded(handle.execute_update(uw.ApprovalWorkflow.approve, "bob", id="u-bob")) == 2
        before = await settled_history(handle)

        # Rejected by the validator: the caller gets the validator's failure...
        with pytest.raises(WorkflowUpdateFailedError) as rejected:
            await bounded(handle.execute_update(uw.ApprovalWorkflow.approve, "alice", id="u-alice-again"))
        assert isinstance(rejected.value.cause, ApplicationError)
        assert "alice already approved" in rejected.value.cause.message
        with pytest.raises(WorkflowUpdateFailedError) as rejected:
            await bounded(handle.execute_update(uw.ApprovalWorkflow.approve, "intruder-1"))
        assert rejected.value.cause.type == "NotAllowed"
        # ... and the history does not change at all: the workflow task created for the update
        # was speculative and is dropped with the rejection.
        after = await settled_history(handle)
        assert [e.event_id for e in after] == [e.event_id for e in before]

        assert await bounded(handle.execute_update(uw.ApprovalWorkflow.approve, "carol", id="u-carol")) == 3
        assert await bounded(handle.result()) == ["alice", "bob", "carol"]

    events = await history_events(handle)
    accepted = of_type(events, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED)
    completed = of_type(events, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED)
    assert [e.workflow_execution_update_accepted_event_attributes.protocol_instance_id for e in accepted] == \
        ["u-alice", "u-bob", "u-carol"]
    first = accepted[0].workflow_execution_update_accepted_event_attributes
    assert first.accepted_request_message_id == "u-alice/request"
    assert first.accepted_request.meta.update_id == "u-alice"
    assert first.accepted_request.input.name == "approve"
    assert json.loads(first.accepted_request.input.args.payloads[0].data) == "alice"
    # The request was sequenced after the event before its workflow task's Started event.
    started_ids = [e.event_id for e in of_type(events, EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED)]
    assert first.accepted_request_sequencing_event_id + 1 in started_ids
    by_accepted_id = {e.event_id: e for e in accepted}
    for c in completed:
        attrs = c.workflow_execution_update_completed_event_attributes
        assert attrs.accepted_event_id in by_accepted_id
        assert attrs.meta.update_id == \
            by_accepted_id[attrs.accepted_event_id].workflow_execution_update_accepted_event_attributes.protocol_instance_id
        assert attrs.outcome.HasField("success")


async def test_update_id_is_deduplicated_also_after_completion(client, task_queue):
    async with worker(client, task_queue):
        handle = await client.start_workflow(uw.ApprovalWorkflow.run, 2, id=new_id("dedup"), task_queue=task_queue)
        assert await bounded(handle.execute_update(uw.ApprovalWorkflow.approve, "alice", id="same")) == 1
        # Same ID again: the first outcome, not a second run of the handler (which the validator
        # would reject as a duplicate approver).
        assert await bounded(handle.execute_update(uw.ApprovalWorkflow.approve, "alice", id="same")) == 1
        assert await bounded(handle.execute_update(uw.ApprovalWorkflow.approve_calls_so_far)) == 1
        # Concurrent requests with one ID share one update.
        results = await bounded(asyncio.gather(*[
            handle.execute_update(uw.ApprovalWorkflow.approve, "bob", id="same-bob") for _ in range(3)]))
        assert results == [2, 2, 2]
        assert await bounded(handle.result()) == ["alice", "bob"]
        # The run is closed: the completed update is still found by its ID.
        assert await bounded(handle.execute_update(uw.ApprovalWorkflow.approve, "alice", id="same")) == 1
        assert await bounded(handle.get_update_handle("same-bob").result()) == 2
    events = await history_events(handle)
    accepted = of_type(events, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED)
    assert len(accepted) == 3  # "same", "same-bob", approve_calls_so_far


async def test_update_to_completed_workflow_fails(client, task_queue):
    async with worker(client, task_queue):
        handle = await client.start_workflow(uw.CounterWorkflow.run, 1, id=new_id("closed"), task_queue=task_queue)
        assert await bounded(handle.execute_update(uw.CounterWorkflow.increment, 2)) == 3
        await handle.signal(uw.CounterWorkflow.stop)
        assert await bounded(handle.result()) == 3
        with pytest.raises(RPCError) as err:
            await bounded(handle.execute_update(uw.CounterWorkflow.increment, 1))
        assert err.value.status == RPCStatusCode.NOT_FOUND
        assert "workflow execution already completed" in err.value.message
        with pytest.raises(RPCError) as err:
            await bounded(handle.get_update_handle("no-such-update").result())
        assert err.value.status == RPCStatusCode.NOT_FOUND


async def test_update_handler_failure_is_the_update_outcome(client, task_queue):
    async with worker(client, task_queue):
        handle = await client.start_workflow(uw.ApprovalWorkflow.run, 1, id=new_id("fails"), task_queue=task_queue)
        with pytest.raises(WorkflowUpdateFailedError) as failed:
            await bounded(handle.execute_update(uw.ApprovalWorkflow.fail_update, "no way", id="bad"))
        assert failed.value.cause.type == "UpdateFailed"
        assert failed.value.cause.message == "no way"
        # Accepted, so it is in history, with the failure as its outcome.
        events = await settled_history(handle)
        completed = of_type(events, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED)
        assert len(completed) == 1
        assert completed[0].workflow_execution_update_completed_event_attributes.outcome.failure.message == "no way"
        await bounded(handle.execute_update(uw.ApprovalWorkflow.approve, "dave"))
        assert await bounded(handle.result()) == ["dave"]


async def test_wait_for_accepted_then_poll_for_the_result(client, task_queue):
    async with worker(client, task_queue):
        handle = await client.start_workflow(uw.CounterWorkflow.run, 0, id=new_id("stages"), task_queue=task_queue)
        update = await bounded(handle.start_update(uw.CounterWorkflow.wait_for_release, id="waiting",
                                                   wait_for_stage=WorkflowUpdateStage.ACCEPTED))
        assert update.id == "waiting"
        # Accepted but not completed: a poll with a short RPC timeout comes back without it.
        result = asyncio.ensure_future(handle.get_update_handle("waiting").result())
        await asyncio.sleep(0.5)
        assert not result.done()
        # Release it through another update's side effect: a signal wakes the workflow, which
        # stays open; finishing the run instead would fail the accepted update (next test).
        assert await bounded(handle.execute_update(uw.CounterWorkflow.increment, 1)) == 1
        assert not result.done()
        result.cancel()
        await asyncio.gather(result, return_exceptions=True)
        await handle.signal(uw.CounterWorkflow.stop)
        with pytest.raises(WorkflowUpdateFailedError) as failed:
            await bounded(update.result())
        assert failed.value.cause.type == "AcceptedUpdateCompletedWorkflow"


async def test_accepted_update_fails_when_the_run_continues_as_new(client, task_queue):
    async with worker(client, task_queue):
        handle = await client.start_workflow(uw.CounterWorkflow.run, 5, id=new_id("can"), task_queue=task_queue)
        update = await bounded(handle.start_update(uw.CounterWorkflow.wait_for_release,
                                                   wait_for_stage=WorkflowUpdateStage.ACCEPTED))
        first_run = handle.result_run_id
        await handle.signal(uw.CounterWorkflow.roll_over)
        with pytest.raises(WorkflowUpdateFailedError) as failed:
            await bounded(update.result())
        assert failed.value.cause.type == "AcceptedUpdateCompletedWorkflow"
        assert "completed before the Update completed" in failed.value.cause.message
        # An update naming no run goes to the new run, which kept the count.
        latest = client.get_workflow_handle(handle.id)
        assert await bounded(latest.execute_update(uw.CounterWorkflow.increment, 1)) == 6
        assert (await latest.describe()).run_id != first_run
        await latest.signal(uw.CounterWorkflow.stop)
        assert await bounded(latest.result()) == 6


async def test_update_with_start(client, task_queue):
    workflow_id = new_id("uws")

    def start_op(policy):
        return WithStartWorkflowOperation(uw.CounterWorkflow.run, 10, id=workflow_id, task_queue=task_queue,
                                          id_conflict_policy=policy)

    async with worker(client, task_queue):
        op = start_op(WorkflowIDConflictPolicy.USE_EXISTING)
        assert await bounded(client.execute_update_with_start_workflow(
            uw.CounterWorkflow.increment, 5, start_workflow_operation=op)) == 15
        first = await op.workflow_handle()
        # The update came with the run's first workflow task.
        events = await history_events(first)
        assert [EventType.Name(e.event_type) for e in events[:6]] == [
            "EVENT_TYPE_WORKFLOW_EXECUTION_STARTED", "EVENT_TYPE_WORKFLOW_TASK_SCHEDULED",
            "EVENT_TYPE_WORKFLOW_TASK_STARTED", "EVENT_TYPE_WORKFLOW_TASK_COMPLETED",
            "EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED", "EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED"]

        # USE_EXISTING on a running workflow: the update goes to that run.
        op = start_op(WorkflowIDConflictPolicy.USE_EXISTING)
        assert await bounded(client.execute_update_with_start_workflow(
            uw.CounterWorkflow.increment, 5, start_workflow_operation=op)) == 20
        assert (await op.workflow_handle()).result_run_id == first.result_run_id

        # FAIL on a running workflow: the start fails and the update is not applied.
        op = start_op(WorkflowIDConflictPolicy.FAIL)
        with pytest.raises(WorkflowAlreadyStartedError):
            await bounded(client.execute_update_with_start_workflow(
                uw.CounterWorkflow.increment, 100, start_workflow_operation=op))
        assert await first.query(uw.CounterWorkflow.value) == 20

        await first.signal(uw.CounterWorkflow.stop)
        assert await bounded(first.result()) == 20

        # The workflow closed: USE_EXISTING starts a new run for the update.
        op = start_op(WorkflowIDConflictPolicy.USE_EXISTING)
        assert await bounded(client.execute_update_with_start_workflow(
            uw.CounterWorkflow.increment, 1, start_workflow_operation=op)) == 11
        second = await op.workflow_handle()
        assert second.result_run_id != first.result_run_id
        await second.signal(uw.CounterWorkflow.stop)
        assert await bounded(second.result()) == 11


async def test_update_with_start_attaches_to_an_existing_update_whatever_the_policies(client, task_queue):
    """An update-with-start naming an update ID the current run already has attaches to that
    update, even with conflict policy FAIL or reuse policy REJECT_DUPLICATE; on a closed run only
    an update the workflow completed is attached to (one the close cut short is not)."""
    from temporalio.common import WorkflowIDReusePolicy

    def start_op(workflow_id, conflict, reuse=WorkflowIDReusePolicy.ALLOW_DUPLICATE):
        return WithStartWorkflowOperation(uw.CounterWorkflow.run, 10, id=workflow_id, task_queue=task_queue,
                                          id_conflict_policy=conflict, id_reuse_policy=reuse)

    async with worker(client, task_queue):
        # Running, update completed: FAIL still attaches (same run, same result, no second increment).
        workflow_id = new_id("uws-attach")
        update_id = new_id("increment")
        op = start_op(workflow_id, WorkflowIDConflictPolicy.FAIL)
        assert await bounded(client.execute_update_with_start_workflow(
            uw.CounterWorkflow.increment, 5, id=update_id, start_workflow_operation=op)) == 15
        first = await op.workflow_handle()
        op = start_op(workflow_id, WorkflowIDConflictPolicy.FAIL)
        assert await bounded(client.execute_update_with_start_workflow(
            uw.CounterWorkflow.increment, 5, id=update_id, start_workflow_operation=op)) == 15
        assert (await op.workflow_handle()).first_execution_run_id == first.first_execution_run_id
        assert await first.query(uw.CounterWorkflow.value) == 15

        # Running, update accepted and not finished: FAIL attaches to it too.
        waiting_id = new_id("wait")
        handle = await bounded(client.start_update_with_start_workflow(
            uw.CounterWorkflow.wait_for_release, id=waiting_id, wait_for_stage=WorkflowUpdateStage.ACCEPTED,
            start_workflow_operation=start_op(workflow_id, WorkflowIDConflictPolicy.USE_EXISTING)))
        again = await bounded(client.start_update_with_start_workflow(
            uw.CounterWorkflow.wait_for_release, id=waiting_id, wait_for_stage=WorkflowUpdateStage.ACCEPTED,
            start_workflow_operation=start_op(workflow_id, WorkflowIDConflictPolicy.FAIL)))
        assert again.id == handle.id == waiting_id

        # Closed with the update completed: REJECT_DUPLICATE attaches to the closed run's update.
        await first.signal(uw.CounterWorkflow.stop)
        assert await bounded(first.result()) == 15
        op = start_op(workflow_id, WorkflowIDConflictPolicy.USE_EXISTING, WorkflowIDReusePolicy.REJECT_DUPLICATE)
        assert await bounded(client.execute_update_with_start_workflow(
            uw.CounterWorkflow.increment, 5, id=update_id, start_workflow_operation=op)) == 15
        assert (await op.workflow_handle()).first_execution_run_id == first.first_execution_run_id

        # Closed with the update cut short by the close: not attached; REJECT_DUPLICATE refuses.
        op = start_op(workflow_id, WorkflowIDConflictPolicy.USE_EXISTING, WorkflowIDReusePolicy.REJECT_DUPLICATE)
        with pytest.raises(WorkflowAlreadyStartedError):
            await bounded(client.execute_update_with_start_workflow(
                uw.CounterWorkflow.wait_for_release, id=waiting_id, start_workflow_operation=op))


async def test_updates_interleaved_with_signals_and_queries(client, task_queue):
    async with worker(client, task_queue):
        handle = await client.start_workflow(uw.ApprovalWorkflow.run, 6, id=new_id("mixed"), task_queue=task_queue)
        # In sequence: each step sees the ones before it.
        await handle.signal(uw.ApprovalWorkflow.comment, "c1")
        assert await bounded(handle.execute_update(uw.ApprovalWorkflow.approve, "a1")) == 1
        state = await handle.query(uw.ApprovalWorkflow.status)
        assert state.journal == ["comment:c1", "approve:a1"]
        await handle.signal(uw.ApprovalWorkflow.comment, "c2")
        assert await bounded(handle.execute_update(uw.ApprovalWorkflow.approve, "a2")) == 2
        state = await handle.query(uw.ApprovalWorkflow.status)
        assert state.journal == ["comment:c1", "approve:a1", "comment:c2", "approve:a2"]

        # All at once: every update, signal and query is handled exactly once.
        async def query_loop():
            seen = []
            for _ in range(5):
                seen.append(len((await handle.query(uw.ApprovalWorkflow.status)).journal))
                await asyncio.sleep(0.02)
            return seen

        outcomes = await bounded(asyncio.gather(
            *[handle.execute_update(uw.ApprovalWorkflow.approve, f"b{i}") for i in range(4)],
            *[handle.signal(uw.ApprovalWorkflow.comment, f"d{i}") for i in range(4)],
            query_loop(),
        ))
        assert sorted(outcomes[:4]) == [3, 4, 5, 6]
        seen = outcomes[-1]
        assert seen == sorted(seen)  # queries never see the state go back
        result = await bounded(handle.result())
        assert sorted(result) == sorted(["a1", "a2", "b0", "b1", "b2", "b3"])
        state = await handle.query(uw.ApprovalWorkflow.status)
        assert sorted(state.comments) == ["c1", "c2", "d0", "d1", "d2", "d3"]
        assert len(state.journal) == 12


async def test_cli_workflow_update_execute(client, task_queue, server_address):
    async with worker(client, task_queue):
        handle = await client.start_workflow(uw.CounterWorkflow.run, 40, id=new_id("cli"), task_queue=task_queue)
        out = await cli(server_address, "workflow", "update", "execute", "--workflow-id", handle.id,
                        "--name", "increment", "--input", "2", "--update-id", "cli-1", "-o", "json")
        assert json.loads(out.stdout)["result"] == 42
        # The same update ID again: the same result, the handler did not run twice.
        out = await cli(server_address, "workflow", "update", "execute", "--workflow-id", handle.id,
                        "--name", "increment", "--input", "2", "--update-id", "cli-1", "-o", "json")
        assert json.loads(out.stdout)["result"] == 42
        assert await handle.query(uw.CounterWorkflow.value) == 42
        # Start (wait for acceptance), then wait for the result, then describe it.
        await cli(server_address, "workflow", "update", "start", "--workflow-id", handle.id,
                  "--name", "increment", "--input", "3", "--update-id", "cli-2",
                  "--wait-for-stage", "accepted")
        out = await cli(server_address, "workflow", "update", "result", "--workflow-id", handle.id,
                        "--update-id", "cli-2", "-o", "json")
        assert json.loads(out.stdout)["result"] == 45
        out = await cli(server_address, "workflow", "update", "describe", "--workflow-id", handle.id,
                        "--update-id", "cli-2", "-o", "json")
        described = json.loads(out.stdout)
        assert (described["updateId"], described["stage"], described["result"]) == ("cli-2", "Completed", 45)
        await handle.signal(uw.CounterWorkflow.stop)
        assert await bounded(handle.result()) == 45


async def test_unsupported_command_fails_the_task_without_spinning(client, task_queue):
    """A command the server cannot serve fails the workflow task with a cause that says so,
    and the worker's retries are paced by the task timeout rather than spinning."""
    async with worker(client, task_queue):
        handle = await client.start_workflow(uw.NexusCallerWorkflow.run, id=new_id("nexus"), task_queue=task_queue)
        await asyncio.sleep(4)
        events = await history_events(handle)
        failed = of_type(events, EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED)
        # Chronicle: no Nexus at all; Temporal: the endpoint does not exist.
        assert len(failed) == 1, [EventType.Name(e.event_type) for e in events]
        attrs = failed[0].workflow_task_failed_event_attributes
        assert attrs.cause in (WorkflowTaskFailedCause.WORKFLOW_TASK_FAILED_CAUSE_FEATURE_DISABLED,
                               WorkflowTaskFailedCause.WORKFLOW_TASK_FAILED_CAUSE_BAD_SCHEDULE_NEXUS_OPERATION_ATTRIBUTES)
        assert "nexus" in attrs.failure.message.lower(), attrs.failure.message
        # The retry that sends the command again is not failed again: it waits for its timeout.
        description = await handle.describe()
        assert description.raw_description.pending_workflow_task.attempt == 2
        await handle.terminate("done")


async def test_update_with_start_checks_the_start_search_attributes(client, task_queue):
    """The start of an update-with-start gets the same search-attribute checks as a plain start:
    a value of the wrong type (OrderTotal is an Int) is refused and nothing starts."""
    from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes

    workflow_id = new_id("uws-sa")
    wrong = TypedSearchAttributes([SearchAttributePair(SearchAttributeKey.for_keyword("OrderTotal"), "many")])
    op = WithStartWorkflowOperation(uw.CounterWorkflow.run, 10, id=workflow_id, task_queue=task_queue,
                                    id_conflict_policy=WorkflowIDConflictPolicy.FAIL, search_attributes=wrong)
    async with worker(client, task_queue):
        with pytest.raises(RPCError) as refused:
            await bounded(client.execute_update_with_start_workflow(
                uw.CounterWorkflow.increment, 5, start_workflow_operation=op))
    assert refused.value.status == RPCStatusCode.INVALID_ARGUMENT, refused.value
    assert [w async for w in client.list_workflows(f"WorkflowId = '{workflow_id}'")] == []
