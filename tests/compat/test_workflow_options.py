"""UpdateWorkflowExecutionOptions (`temporal workflow update-options`): the options a run keeps
(versioning override, priority), the WorkflowExecutionOptionsUpdated events, what describe and
visibility show, Temporal's validation errors, and the batch form (`--query`).

The workflows are started with no worker on their task queue: the options of a running run are
what is under test, not what a worker does with them."""

import asyncio
import uuid

import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from temporalio.api.common.v1 import Priority, WorkflowExecution, WorkflowType
from temporalio.api.deployment.v1 import WorkerDeploymentVersion
from temporalio.api.enums.v1 import EventType, VersioningBehavior
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflow.v1 import VersioningOverride, WorkflowExecutionOptions
from temporalio.api.workflowservice.v1 import (
    DescribeWorkflowExecutionRequest,
    GetWorkflowExecutionHistoryRequest,
    ListWorkflowExecutionsRequest,
    StartWorkflowExecutionRequest,
    TerminateWorkflowExecutionRequest,
    UpdateWorkflowExecutionOptionsRequest,
)
from temporalio.service import RPCError, RPCStatusCode

from conftest import new_id
from test_batch import wait_no_running_batch
from test_cli import cli, eventually

PINNED = VersioningOverride.PinnedOverrideBehavior.PINNED_OVERRIDE_BEHAVIOR_PINNED


async def start(client, workflow_id, task_queue, priority=None):
    await client.workflow_service.start_workflow_execution(StartWorkflowExecutionRequest(
        namespace="default", workflow_id=workflow_id, workflow_type=WorkflowType(name="Idle"),
        task_queue=TaskQueue(name=task_queue), request_id=str(uuid.uuid4()), priority=priority))


def update(client, workflow_id, options, paths, identity="", run_id=""):
    return client.workflow_service.update_workflow_execution_options(UpdateWorkflowExecutionOptionsRequest(
        namespace="default", workflow_execution=WorkflowExecution(workflow_id=workflow_id, run_id=run_id),
        workflow_execution_options=options, update_mask=FieldMask(paths=paths), identity=identity))


async def describe(client, workflow_id):
    return await client.workflow_service.describe_workflow_execution(DescribeWorkflowExecutionRequest(
        namespace="default", execution=WorkflowExecution(workflow_id=workflow_id)))


async def option_events(client, workflow_id):
    h = await client.workflow_service.get_workflow_execution_history(GetWorkflowExecutionHistoryRequest(
        namespace="default", execution=WorkflowExecution(workflow_id=workflow_id)))
    return [e for e in h.history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_OPTIONS_UPDATED]


async def rpc_error(call):
    with pytest.raises(RPCError) as e:
        await call
    return e.value


async def listed(client, query):
    r = await client.workflow_service.list_workflow_executions(ListWorkflowExecutionsRequest(
        namespace="default", query=query))
    return [e.execution.workflow_id for e in r.executions]


async def test_priority_updates_write_events_and_show_in_describe(client, task_queue):
    wid = new_id("options")
    await start(client, wid, task_queue)
    r = await update(client, wid, WorkflowExecutionOptions(priority=Priority(priority_key=3, fairness_key="tenant")),
                     ["priority"], identity="operator")
    assert r.workflow_execution_options.priority.priority_key == 3
    assert r.workflow_execution_options.priority.fairness_key == "tenant"
    # The same options again change nothing: no second event.
    await update(client, wid, WorkflowExecutionOptions(priority=Priority(priority_key=3, fairness_key="tenant")),
                 ["priority"])
    # A sub-field merges into the run's priority.
    r = await update(client, wid, WorkflowExecutionOptions(priority=Priority(priority_key=4)),
                     ["priority.priority_key"])
    assert r.workflow_execution_options.priority == Priority(priority_key=4, fairness_key="tenant")
    d = await describe(client, wid)
    assert d.workflow_execution_info.priority == Priority(priority_key=4, fairness_key="tenant")
    assert not d.workflow_execution_info.HasField("versioning_info")
    events = await option_events(client, wid)
    assert len(events) == 2
    first, second = [e.workflow_execution_options_updated_event_attributes for e in events]
    assert all(e.worker_may_ignore for e in events)
    assert first.identity == "operator" and first.priority.priority_key == 3
    assert first.unset_versioning_override and not first.HasField("versioning_override")
    assert second.priority == Priority(priority_key=4, fairness_key="tenant")
    # An empty mask changes nothing and answers the run's options.
    r = await update(client, wid, WorkflowExecutionOptions(), [])
    assert r.workflow_execution_options.priority.priority_key == 4
    assert len(await option_events(client, wid)) == 2


async def test_cli_auto_upgrade_override_then_removed(client, server_address, task_queue):
    wid = new_id("override")
    await start(client, wid, task_queue)
    out = await cli(server_address, "workflow", "update-options", "-w", wid,
                    "--versioning-override-behavior", "auto_upgrade")
    assert "Update workflow options succeeded" in out.stdout
    info = (await describe(client, wid)).workflow_execution_info
    override = info.versioning_info.versioning_override
    assert override.auto_upgrade
    assert override.behavior == VersioningBehavior.VERSIONING_BEHAVIOR_AUTO_UPGRADE
    assert info.search_attributes.indexed_fields["TemporalWorkflowVersioningBehavior"].data == b'"AutoUpgrade"'
    described = await cli(server_address, "workflow", "describe", "-w", wid)
    assert "OverrideBehavior  AutoUpgrade" in described.stdout

    async def visible():
        assert await listed(client, f"WorkflowId='{wid}' AND TemporalWorkflowVersioningBehavior='AutoUpgrade'") == [wid]
    await eventually(visible)

    await cli(server_address, "workflow", "update-options", "-w", wid, "--versioning-override-behavior", "unspecified")
    info = (await describe(client, wid)).workflow_execution_info
    assert info.HasField("versioning_info") and not info.versioning_info.HasField("versioning_override")
    assert "TemporalWorkflowVersioningBehavior" not in info.search_attributes.indexed_fields
    attrs = [e.workflow_execution_options_updated_event_attributes for e in await option_events(client, wid)]
    assert len(attrs) == 2
    assert attrs[0].versioning_override.auto_upgrade and not attrs[0].unset_versioning_override
    assert attrs[1].unset_versioning_override and not attrs[1].HasField("versioning_override")

    # Pinning needs a worker deployment version the task queue has.
    failed = await cli(server_address, "workflow", "update-options", "-w", wid, "--versioning-override-behavior",
                       "pinned", "--versioning-override-deployment-name", "d", "--versioning-override-build-id", "b",
                       check=False)
    assert failed.returncode != 0
    assert f"Pinned version 'd:b' is not present in task queue '{task_queue}' of type 'Workflow'" in failed.stderr


async def test_update_options_errors(client, task_queue):
    wid = new_id("options-errors")
    await start(client, wid, task_queue)
    ws = client.workflow_service
    ex = WorkflowExecution(workflow_id=wid)
    auto = WorkflowExecutionOptions(versioning_override=VersioningOverride(auto_upgrade=True))
    version = WorkerDeploymentVersion(deployment_name="d", build_id="b")
    cases = [
        (ws.update_workflow_execution_options(UpdateWorkflowExecutionOptionsRequest(
            namespace="default", workflow_execution=ex, workflow_execution_options=auto)),
         RPCStatusCode.INVALID_ARGUMENT, "UpdateMask is required"),
        (ws.update_workflow_execution_options(UpdateWorkflowExecutionOptionsRequest(
            namespace="default", workflow_execution=ex, update_mask=FieldMask(paths=["priority"]))),
         RPCStatusCode.INVALID_ARGUMENT, "WorkflowExecutionOptions is required"),
        (update(client, "", auto, ["priority"]), RPCStatusCode.INVALID_ARGUMENT, "WorkflowId is not set on request."),
        (update(client, wid, auto, ["priority.priorityKey"]), RPCStatusCode.INVALID_ARGUMENT,
         'error parsing UpdateMask: proto:\xa0invalid path "priority.priorityKey" for message '
         '"temporal.api.workflow.v1.WorkflowExecutionOptions"'),
        (update(client, wid, WorkflowExecutionOptions(priority=Priority(priority_key=-1)), ["priority"]),
         RPCStatusCode.INVALID_ARGUMENT, "priority key can't be negative"),
        (update(client, wid, auto, ["priority"], run_id="not-a-uuid"), RPCStatusCode.INVALID_ARGUMENT,
         "RunId is not valid UUID."),
        (update(client, wid, WorkflowExecutionOptions(versioning_override=VersioningOverride(auto_upgrade=False)),
                ["versioning_override"]), RPCStatusCode.INVALID_ARGUMENT, "auto-upgrade override must be true"),
        (update(client, wid, auto, ["versioning_override.auto_upgrade"]), RPCStatusCode.INVALID_ARGUMENT,
         "error applying update_options: versioning_override doesn't support partial updates"),
        (update(client, wid, WorkflowExecutionOptions(versioning_override=VersioningOverride(
            pinned=VersioningOverride.PinnedOverride(behavior=PINNED))), ["versioning_override"]),
         RPCStatusCode.FAILED_PRECONDITION,
         f"must specify a specific pinned override version because workflow with id {wid} has behavior "
         "Unspecified and is not yet pinned to any version"),
        (update(client, wid, WorkflowExecutionOptions(versioning_override=VersioningOverride(
            pinned=VersioningOverride.PinnedOverride(version=version))), ["versioning_override"]),
         RPCStatusCode.INVALID_ARGUMENT, "must specify pinned override behavior if override is pinned."),
        (update(client, wid, WorkflowExecutionOptions(versioning_override=VersioningOverride(
            pinned=VersioningOverride.PinnedOverride(behavior=PINNED, version=version))), ["versioning_override"]),
         RPCStatusCode.FAILED_PRECONDITION,
         f"Pinned version 'd:b' is not present in task queue '{task_queue}' of type 'Workflow'"),
        (update(client, new_id("nobody"), auto, ["versioning_override"]), RPCStatusCode.NOT_FOUND, None),
    ]
    for call, status, message in cases:
        err = await rpc_error(call)
        assert err.status == status, (err.status, err.message)
        if message is not None:
            assert err.message == message
    # Nothing was written.
    assert await option_events(client, wid) == []
    await ws.terminate_workflow_execution(TerminateWorkflowExecutionRequest(
        namespace="default", workflow_execution=ex))
    err = await rpc_error(update(client, wid, auto, ["versioning_override"]))
    assert err.status == RPCStatusCode.NOT_FOUND
    assert err.message == "workflow execution already completed"


async def test_cli_batch_update_options(client, server_address, task_queue):
    marker = new_id("batch-options")
    ids = [f"{marker}-{i}" for i in range(2)]
    for wid in ids:
        await start(client, wid, task_queue)
    query = f"TaskQueue='{task_queue}'"

    async def all_listed():
        assert sorted(await listed(client, query)) == sorted(ids)
    await eventually(all_listed)
    await wait_no_running_batch(client)
    await cli(server_address, "workflow", "update-options", "--query", query,
              "--versioning-override-behavior", "auto_upgrade", "--yes", "--reason", "compat")

    async def all_overridden():
        for wid in ids:
            info = (await describe(client, wid)).workflow_execution_info
            assert info.versioning_info.versioning_override.auto_upgrade, wid
    await eventually(all_overridden, timeout=30)
    for wid in ids:
        attrs = [e.workflow_execution_options_updated_event_attributes for e in await option_events(client, wid)]
        assert len(attrs) == 1 and attrs[0].versioning_override.auto_upgrade
