"""A worker speaking the worker-commands protocol over raw gRPC, as SDK core does: an activity
poll naming a control queue, and the control queue's Nexus poll and answer. Shared by
test_worker_commands.py and test_worker_commands_cluster.py."""

import uuid
from datetime import timedelta

from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import TaskQueueKind
from temporalio.api.nexus.v1 import Response, StartOperationResponse
from temporalio.api.nexusservices.workerservice.v1 import ExecuteCommandsRequest, ExecuteCommandsResponse
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.worker.v1 import CancelActivityResult, WorkerCommandResult
from temporalio.api.workflowservice.v1 import (
    PollActivityTaskQueueRequest,
    PollNexusTaskQueueRequest,
    RespondNexusTaskCompletedRequest,
)
from temporalio.client import Client

SERVICE = "temporal.api.nexusservices.workerservice.v1.WorkerService"


def control_queue(namespace: str) -> str:
    """A fresh worker process's control queue, named as SDK core names it."""
    return f"temporal-sys/worker-commands/{namespace}/{uuid.uuid4()}"


async def poll_activity(client: Client, task_queue: str, control: str) -> bytes:
    """Takes the next activity task of `task_queue`, naming `control`; its task token."""
    while True:
        task = await client.workflow_service.poll_activity_task_queue(PollActivityTaskQueueRequest(
            namespace=client.namespace, task_queue=TaskQueue(name=task_queue), identity="raw-worker",
            worker_control_task_queue=control))
        if task.task_token:
            return task.task_token


async def poll_commands(client: Client, control: str, timeout: timedelta):
    """One poll of the control queue: (task token, ExecuteCommandsRequest), or None when it
    answered empty or its deadline passed."""
    try:
        task = await client.workflow_service.poll_nexus_task_queue(PollNexusTaskQueueRequest(
            namespace=client.namespace, identity="raw-worker",
            task_queue=TaskQueue(name=control, kind=TaskQueueKind.TASK_QUEUE_KIND_WORKER_COMMANDS)),
            timeout=timeout)
    except Exception as err:  # the deadline of an idle poll
        if "DEADLINE" in str(err).upper() or "timeout" in str(err).lower():
            return None
        raise
    if not task.task_token:
        return None
    start = task.request.start_operation
    assert (start.service, start.operation) == (SERVICE, "ExecuteCommands"), task.request
    assert start.payload.metadata["encoding"] == b"binary/protobuf"
    request = ExecuteCommandsRequest()
    request.ParseFromString(start.payload.data)
    return task.task_token, request


async def answer_commands(client: Client, token: bytes, count: int) -> None:
    """Answers a commands task as SDK core does: a sync success carrying one result each."""
    results = ExecuteCommandsResponse(
        results=[WorkerCommandResult(cancel_activity=CancelActivityResult()) for _ in range(count)])
    await client.workflow_service.respond_nexus_task_completed(RespondNexusTaskCompletedRequest(
        namespace=client.namespace, identity="raw-worker", task_token=token,
        response=Response(start_operation=StartOperationResponse(
            sync_success=StartOperationResponse.Sync(payload=Payload(data=results.SerializeToString()))))))
