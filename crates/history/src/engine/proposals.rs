//! Group commit: the queue between a shard's callers and its Raft log.

use super::*;

/// A command on its way into the shard's log, and who waits for its result.
pub(super) struct PendingCommand {
    pub(super) command: cmd::ShardCommand,
    pub(super) reply: oneshot::Sender<ApiResult<cmd::CommandResult>>,
}

/// Most commands in one log entry.
const MAX_COMMANDS_PER_ENTRY: usize = 256;
/// Log entries of one shard being committed at once.
const ENTRIES_IN_FLIGHT: usize = 2;

/// Group commit. openraft turns every `client_write` into its own log append, and each append
/// waits for its fsync, so a shard proposing commands one by one commits about one command per
/// fsync however many callers wait. Here the commands that queue up while earlier entries are
/// being committed go into the next entry together: one append, one fsync, one apply batch for
/// all of them, and the batch grows with the load.
pub(super) async fn proposal_loop(
    raft: ShardRaft,
    group: ShardId,
    mut queue: mpsc::Receiver<PendingCommand>,
) {
    let in_flight = Arc::new(Semaphore::new(ENTRIES_IN_FLIGHT));
    while let Some(first) = queue.recv().await {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let mut pending = vec![first];
        while pending.len() < MAX_COMMANDS_PER_ENTRY {
            match queue.try_recv() {
                Ok(next) => pending.push(next),
                Err(_) => break,
            }
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            propose_entry(&raft, group, pending).await;
            drop(permit);
        });
    }
}

async fn propose_entry(raft: &ShardRaft, group: ShardId, pending: Vec<PendingCommand>) {
    metrics::histogram!(metric_defs::SHARD_COMMAND_BATCH_SIZE).record(pending.len() as f64);
    let (commands, replies): (Vec<_>, Vec<_>) =
        pending.into_iter().map(|p| (p.command, p.reply)).unzip();
    let batched = commands.len() > 1;
    let entry = if batched {
        cmd::ShardCommand {
            batch: commands,
            ..Default::default()
        }
    } else {
        commands.into_iter().next().unwrap_or_default()
    };
    let outcome = chronicle_raft::propose(raft, group, entry.encode_to_vec())
        .await
        .map_err(|e| match e {
            // The entry may have reached the log before leadership moved (P11): the caller may
            // resend it only if it is idempotent at apply.
            RaftError::NotLeader { leader, .. } => {
                let addr = leader.and_then(|l| {
                    raft.metrics()
                        .borrow()
                        .membership_config
                        .membership()
                        .get_node(&l)
                        .map(|n| n.addr.clone())
                });
                ApiError::not_leader(group, leader, addr, true)
            }
            other => ApiError::unavailable(format!("shard {group} is unavailable: {other}")),
        })
        .and_then(|bytes| {
            cmd::CommandResult::decode(bytes.as_slice())
                .map_err(|e| ApiError::internal(format!("undecodable command result: {e}")))
        });
    match outcome {
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
        Ok(result) if !batched => {
            if let Some(reply) = replies.into_iter().next() {
                let _ = reply.send(Ok(result));
            }
        }
        Ok(result) => {
            let mut results = result.batch.into_iter();
            for reply in replies {
                let _ = reply.send(
                    results
                        .next()
                        .ok_or_else(|| ApiError::internal("a batched command got no result")),
                );
            }
        }
    }
}

pub(super) fn command_label(kind: &shard_command::Kind) -> &'static str {
    use shard_command::Kind::*;
    match kind {
        StartWorkflow(_) => "start_workflow",
        RecordWorkflowTaskStarted(_) => "record_workflow_task_started",
        CompleteWorkflowTask(_) => "complete_workflow_task",
        FailWorkflowTask(_) => "fail_workflow_task",
        RecordActivityTaskStarted(_) => "record_activity_task_started",
        RespondActivity(_) => "respond_activity",
        RespondNexusTask(_) => "respond_nexus_task",
        CompleteNexusOperation(_) => "complete_nexus_operation",
        RecordActivityHeartbeat(_) => "record_activity_heartbeat",
        SignalWorkflow(_) => "signal_workflow",
        TerminateWorkflow(_) => "terminate_workflow",
        FireTimer(_) => "fire_timer",
        UpsertNamespace(_) => "upsert_namespace",
        RequestCancelWorkflow(_) => "request_cancel_workflow",
        StickyWorkerUnavailable(_) => "sticky_worker_unavailable",
        SignalWithStart(_) => "signal_with_start",
        StartChildWorkflow(_) => "start_child_workflow",
        RecordChildStartOutcome(_) => "record_child_start_outcome",
        RecordChildClosed(_) => "record_child_closed",
        ApplyParentClosePolicy(_) => "apply_parent_close_policy",
        RecordExternalOutcome(_) => "record_external_outcome",
        CompleteTransferTask(_) => "complete_transfer_task",
        TakeWorkerCommands(_) => "take_worker_commands",
        UpdateWorkflow(_) => "update_workflow",
        Schedule(_) => "schedule",
        RecordScheduleStartOutcome(_) => "record_schedule_start_outcome",
        RecordScheduleWorkflowClosed(_) => "record_schedule_workflow_closed",
        ResetWorkflow(_) => "reset_workflow",
        DeleteWorkflowExecution(_) => "delete_workflow_execution",
        DeleteNamespace(_) => "delete_namespace",
        RunOperation(_) => "run_operation",
        BatchJob(_) => "batch_job",
        StartActivityExecution(_) => "start_activity_execution",
        CancelActivityExecution(_) => "cancel_activity_execution",
        TerminateActivityExecution(_) => "terminate_activity_execution",
        DeleteActivityExecution(_) => "delete_activity_execution",
        UpdateClusterMember(_) => "update_cluster_member",
        NexusEndpoint(_) => "nexus_endpoint",
    }
}
