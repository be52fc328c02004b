//! Worker commands (docs/worker-commands.md): the server tells a worker process to cancel an
//! activity attempt it is running, without waiting for the activity's next heartbeat.
//!
//! A worker whose namespace advertises the `worker_commands` capability polls its own control
//! queue (`temporal-sys/worker-commands/<namespace>/<process key>`, kind WORKER_COMMANDS) for
//! Nexus tasks, and names that queue in its activity polls. The attempt remembers it
//! (`ActivityInfo.worker_control_task_queue`). When a workflow task requests the cancellation
//! of a started attempt, or the run closes while attempts run, apply writes one outbox row per
//! control queue with a CancelActivity command per attempt (the attempt's own task token, which
//! the worker looks its running activities up by). The outbox offers the row to matching as a
//! Nexus task on that queue; the poll that takes it deletes the row through Raft
//! (`TakeWorkerCommands`) before answering, so the commands reach the worker at most once, and a
//! row nobody took within [`DELIVERY_WINDOW_MS`] is dropped: the commands are best effort, the
//! activity's own timeouts still hold. As in Temporal, an activity's timeout sends nothing: the
//! worker's SDK cancels an attempt it outlived by itself.

use std::collections::BTreeMap;

use chronicle_proto::chronicle::history::v1::{self as cmd, command_result, shard_command::Kind};
use chronicle_proto::chronicle::persistence::v1 as pb;
use chronicle_proto::temporal::api::common::v1::Payload;
use chronicle_proto::temporal::api::enums::v1::TaskQueueKind;
use chronicle_proto::temporal::api::nexus::v1 as nexus;
use chronicle_proto::temporal::api::nexusservices::workerservice::v1::ExecuteCommandsRequest;
use chronicle_proto::temporal::api::worker::v1::{
    CancelActivityCommand, WorkerCommand, worker_command,
};
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use chronicle_proto::wkt::Timestamp;
use chronicle_storage::{ShardBatch, StorageResult};
use chronicle_types::{ApiError, ApiResult};
use prost::Message;

use crate::apply::{ApplyError, ApplyResult};
use crate::engine::HistoryEngine;
use crate::metric_defs;
use crate::read::storage;
use crate::tokens;

/// The Nexus service and operation SDK core handles worker commands as (Temporal's names).
pub(crate) const SERVICE: &str = "temporal.api.nexusservices.workerservice.v1.WorkerService";
pub(crate) const OPERATION: &str = "ExecuteCommands";

/// How long a worker-commands row waits for its worker's poll: Temporal tries a dispatch 3
/// times, waiting 10 s for a poller each time, then drops the commands.
pub(crate) const DELIVERY_WINDOW_MS: i64 = 30_000;

/// Apply: queues a CancelActivity command for each of `activities` whose attempt is running on
/// a worker that takes worker commands, one outbox row per control queue. `now` is the
/// command's time: the rows' delivery window counts from it.
pub(crate) fn cancel_running<'a>(
    batch: &mut ShardBatch,
    state: &pb::WorkflowExecutionState,
    now: Timestamp,
    activities: impl IntoIterator<Item = &'a pb::ActivityInfo>,
) -> StorageResult<()> {
    // Ordered, so that every replica writes the same rows in the same order.
    let mut by_queue: BTreeMap<&str, Vec<WorkerCommand>> = BTreeMap::new();
    for activity in activities {
        if !activity.started || activity.worker_control_task_queue.is_empty() {
            continue;
        }
        by_queue
            .entry(activity.worker_control_task_queue.as_str())
            .or_default()
            .push(cancel_command(state, activity));
    }
    for (queue, commands) in by_queue {
        batch.put_outbox(&pb::OutboxTask {
            kind: pb::outbox_task::Kind::WorkerCommands as i32,
            namespace_id: state.namespace_id.clone(),
            workflow_id: state.workflow_id.clone(),
            run_id: state.run_id.clone(),
            task_queue: queue.to_string(),
            task_queue_kind: TaskQueueKind::WorkerCommands as i32,
            worker_commands: commands,
            visibility_time: Some(now),
            ..Default::default()
        })?;
    }
    Ok(())
}

/// The command that cancels `activity`'s running attempt: it names the attempt by the task
/// token its worker got (the same bytes as the poll's answer, which SDK core compares).
fn cancel_command(
    state: &pb::WorkflowExecutionState,
    activity: &pb::ActivityInfo,
) -> WorkerCommand {
    let token = pb::TaskToken {
        namespace_id: state.namespace_id.clone(),
        workflow_id: state.workflow_id.clone(),
        run_id: state.run_id.clone(),
        scheduled_event_id: activity.scheduled_event_id,
        attempt: activity.attempt,
        is_activity: true,
        activity_id: activity.activity_id.clone(),
        ..Default::default()
    };
    WorkerCommand {
        r#type: Some(worker_command::Type::CancelActivity(
            CancelActivityCommand {
                task_token: tokens::encode(&token),
            },
        )),
    }
}

/// Apply of `TakeWorkerCommands`: the row leaves the outbox, once.
pub(crate) fn take(batch: &mut ShardBatch, outbox_id: i64) -> ApplyResult<command_result::Result> {
    if !batch.outbox_exists(outbox_id as u64)? {
        return Err(ApplyError::Rejected(ApiError::not_found(
            "worker commands already delivered or expired",
        )));
    }
    batch.delete_outbox(outbox_id as u64);
    Ok(crate::apply::ok())
}

/// When the row `task` stops being offered (milliseconds since the epoch).
pub(crate) fn expires_at_ms(task: &pb::OutboxTask) -> i64 {
    let visible = task
        .visibility_time
        .as_ref()
        .map_or(0, chronicle_types::time::millis);
    visible.saturating_add(DELIVERY_WINDOW_MS)
}

impl HistoryEngine {
    /// A control-queue poll takes the worker-commands row `task` names: read on the run's shard
    /// leader, deleted through Raft, then answered as an ExecuteCommands Nexus start request.
    /// NotFound when the row is gone or expired (matching drops the task).
    pub(crate) async fn worker_commands_started(
        &self,
        task: &cmd::TaskRef,
    ) -> ApiResult<ws::PollNexusTaskQueueResponse> {
        let shard = self.shard_of(&task.namespace_id, &task.workflow_id);
        self.check_leader(&shard)?;
        let gone = || ApiError::not_found("worker commands already delivered or expired");
        let row = shard
            .tables
            .outbox_from(task.outbox_id, 1)
            .map_err(storage)?
            .into_iter()
            .next()
            .map(|(_, row)| row)
            .filter(|row| {
                row.kind == pb::outbox_task::Kind::WorkerCommands as i32
                    && row.workflow_id == task.workflow_id
                    && row.run_id == task.run_id
            })
            .ok_or_else(gone)?;
        if expires_at_ms(&row) <= chronicle_types::time::now_millis() {
            return Err(gone());
        }
        self.propose(
            &shard,
            Kind::TakeWorkerCommands(cmd::TakeWorkerCommands {
                outbox_id: task.outbox_id as i64,
            }),
        )
        .await?;
        record_sent(self, &row, "success");
        Ok(commands_task(task, row.worker_commands))
    }
}

/// Counts the commands of `row` under `outcome` ([`metric_defs::WORKER_COMMANDS_SENT`]).
pub(crate) fn record_sent(engine: &HistoryEngine, row: &pb::OutboxTask, outcome: &'static str) {
    metrics::counter!(
        metric_defs::WORKER_COMMANDS_SENT,
        "namespace" => engine.namespace_name(&row.namespace_id),
        "outcome" => outcome,
        "command_type" => "cancel_activity"
    )
    .increment(row.worker_commands.len() as u64);
}

/// The Nexus task a worker's control queue poll answers: ExecuteCommands with the commands as
/// binary protobuf (SDK core decodes it itself, without the language SDK's converters).
fn commands_task(
    task: &cmd::TaskRef,
    commands: Vec<WorkerCommand>,
) -> ws::PollNexusTaskQueueResponse {
    let token = pb::TaskToken {
        namespace_id: task.namespace_id.clone(),
        workflow_id: task.workflow_id.clone(),
        run_id: task.run_id.clone(),
        scheduled_event_id: task.outbox_id as i64,
        is_nexus: true,
        is_worker_commands: true,
        ..Default::default()
    };
    let request = ExecuteCommandsRequest { commands };
    ws::PollNexusTaskQueueResponse {
        task_token: tokens::encode(&token),
        request: Some(nexus::Request {
            variant: Some(nexus::request::Variant::StartOperation(
                nexus::StartOperationRequest {
                    service: SERVICE.to_string(),
                    operation: OPERATION.to_string(),
                    payload: Some(Payload {
                        metadata: [("encoding".to_string(), b"binary/protobuf".to_vec())]
                            .into_iter()
                            .collect(),
                        data: request.encode_to_vec(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            )),
            ..Default::default()
        }),
        ..Default::default()
    }
}
