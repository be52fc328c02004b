//! The shard state machine's logic: one function per command kind. Each reads the run through
//! the batch, validates, then writes. A command that is rejected leaves nothing behind: its
//! writes are rolled back to a savepoint before the error is returned to the caller.

mod activity;
mod activity_ops;
#[cfg(test)]
mod activity_ops_tests;
pub(crate) mod attach_callbacks;
pub mod child;
#[cfg(test)]
mod child_tests;
pub mod cluster_members;
pub(crate) mod delete;
mod eager_start;
mod external;
pub(crate) mod namespace;
mod new_run;
pub(crate) mod nexus_async;
#[cfg(test)]
mod nexus_async_tests;
#[cfg(test)]
mod nexus_callbacks_tests;
pub(crate) mod nexus_endpoint;
#[cfg(test)]
mod nexus_endpoint_tests;
pub(crate) mod nexus_operation;
#[cfg(test)]
mod nexus_operation_tests;
pub mod reset;
#[cfg(test)]
mod safety_tests;
mod signal;
pub(crate) mod standalone_activity;
mod start;
mod timer;
pub mod update;
#[cfg(test)]
mod update_tests;
#[cfg(test)]
mod worker_commands_tests;
pub(crate) mod workflow_options;
#[cfg(test)]
mod workflow_options_tests;
mod workflow_task;

use chronicle_proto::chronicle::history::v1::{self as cmd, command_result, shard_command};
use chronicle_proto::chronicle::persistence::v1 as pb;
use chronicle_proto::wkt::Timestamp;
use chronicle_raft::Applier;
use chronicle_storage::{ShardBatch, StorageError};
use chronicle_types::ApiError;
use prost::Message;

use crate::metric_defs;
use crate::mutable_state::MutableState;
use crate::notify::ShardNotifier;

pub use activity::{next_retry_delay_ms, retry_state_for};
pub use activity_ops::options_of as activity_options_of;
pub use workflow_options::described_override;

pub enum ApplyError {
    /// Refuse the command; undo its writes.
    Rejected(ApiError),
    /// Refuse the command but keep what it wrote (e.g. a workflow task failed for a bad command).
    RejectedKeepWrites(ApiError),
    Storage(StorageError),
}

impl From<StorageError> for ApplyError {
    fn from(e: StorageError) -> Self {
        ApplyError::Storage(e)
    }
}

impl From<ApiError> for ApplyError {
    fn from(e: ApiError) -> Self {
        ApplyError::Rejected(e)
    }
}

pub type ApplyResult<T> = Result<T, ApplyError>;

/// The history engine's side of the Raft state machine.
pub struct HistoryApplier {
    pub notifier: ShardNotifier,
    /// Names for metric labels (without: namespace IDs).
    pub namespace_names: Option<std::sync::Arc<crate::namespace_names::NamespaceNames>>,
}

impl HistoryApplier {
    /// Records the metrics of the command applied last (workflow closes, state transitions), on
    /// the group's leader only: every replica applies the command, one counts it.
    fn record_metrics(&self, group: u32) {
        let observations = metric_defs::take_observations();
        if !self.notifier.records_metrics(group) {
            return;
        }
        metric_defs::record(observations, |id| {
            match self.namespace_names.as_ref().map(|names| names.name(id)) {
                Some(name) if !name.is_empty() => name,
                _ => id.to_string(),
            }
        });
    }
}

impl Applier for HistoryApplier {
    fn apply(
        &self,
        batch: &mut ShardBatch,
        _log_index: u64,
        command: &[u8],
    ) -> Result<Vec<u8>, StorageError> {
        let decoded = cmd::ShardCommand::decode(command);
        if let Ok(command) = &decoded {
            let stamped = command
                .now
                .iter()
                .chain(command.batch.iter().filter_map(|c| c.now.as_ref()))
                // Saturating: `now` is whatever the entry holds (fuzzing found the overflow).
                .map(|t| {
                    t.seconds
                        .saturating_mul(1_000_000)
                        .saturating_add(i64::from(t.nanos) / 1_000)
                })
                .max();
            if let Some(micros) = stamped {
                self.notifier.observe_now(batch.tables().shard(), micros);
            }
        }
        let result = match decoded {
            Err(e) => cmd::CommandResult {
                result: Some(command_result::Result::Error(error_result(
                    &ApiError::internal(format!("undecodable command: {e}")),
                ))),
                ..Default::default()
            },
            Ok(command) if !command.batch.is_empty() => {
                let mut results = Vec::with_capacity(command.batch.len());
                for one in command.batch {
                    results.push(apply_one(batch, one)?);
                    self.record_metrics(batch.tables().shard());
                }
                cmd::CommandResult {
                    result: None,
                    batch: results,
                }
            }
            Ok(command) => {
                let result = apply_one(batch, command)?;
                self.record_metrics(batch.tables().shard());
                result
            }
        };
        Ok(result.encode_to_vec())
    }

    fn applied(
        &self,
        group: u32,
        last_index: u64,
        earliest_new_timer: Option<i64>,
        changed_workflows: &[(String, String)],
    ) {
        // The timer floor is lowered before the wake-up, so the woken timer loop sees it.
        if let Some(fire_ms) = earliest_new_timer {
            self.notifier.timer_added(group, fire_ms);
        }
        self.notifier.notify(group, last_index);
        self.notifier.workflows_changed(group, changed_workflows);
    }

    fn state_replaced(&self, group: u32) {
        self.notifier.timer_added(group, i64::MIN);
        self.notifier.notify(group, 0);
        self.notifier.all_workflows_changed(group);
    }
}

/// Applies one command: a refused command leaves nothing behind (rolled back to a savepoint);
/// only a storage failure is an `Err`, and stops the group.
fn apply_one(
    batch: &mut ShardBatch,
    command: cmd::ShardCommand,
) -> Result<cmd::CommandResult, StorageError> {
    drop(metric_defs::take_observations());
    batch.set_command_time(command.now);
    let savepoint = batch.savepoint();
    let retention = command.retention;
    let result = match delete::with_retention(retention, || apply_command(batch, command)) {
        Ok(result) => result,
        Err(ApplyError::Rejected(e)) => {
            batch.rollback(savepoint);
            drop(metric_defs::take_observations());
            command_result::Result::Error(error_result(&e))
        }
        Err(ApplyError::RejectedKeepWrites(e)) => command_result::Result::Error(error_result(&e)),
        Err(ApplyError::Storage(e)) => {
            drop(metric_defs::take_observations());
            return Err(e);
        }
    };
    Ok(cmd::CommandResult {
        result: Some(result),
        ..Default::default()
    })
}

fn error_result(e: &ApiError) -> cmd::CommandError {
    cmd::CommandError {
        code: e.code as i32,
        message: e.message.clone(),
        details: e.details_bytes(),
    }
}

pub(crate) fn ok() -> command_result::Result {
    command_result::Result::Ok(cmd::Empty {})
}

fn apply_command(
    batch: &mut ShardBatch,
    command: cmd::ShardCommand,
) -> ApplyResult<command_result::Result> {
    let now = command.now.unwrap_or_default();
    let Some(kind) = command.kind else {
        return Err(ApiError::invalid_argument("empty command").into());
    };
    match kind {
        shard_command::Kind::StartWorkflow(c) => start::start_workflow(batch, now, c),
        shard_command::Kind::SignalWithStart(c) => start::signal_with_start(batch, now, c),
        shard_command::Kind::RecordWorkflowTaskStarted(c) => {
            workflow_task::record_started(batch, now, c)
        }
        shard_command::Kind::CompleteWorkflowTask(c) => workflow_task::complete(batch, now, c),
        shard_command::Kind::FailWorkflowTask(c) => workflow_task::fail(batch, now, c),
        shard_command::Kind::RecordActivityTaskStarted(c) => {
            activity::record_started(batch, now, c)
        }
        shard_command::Kind::RespondActivity(c) => activity::respond(batch, now, c),
        shard_command::Kind::RespondNexusTask(c) => nexus_operation::respond(batch, now, c),
        shard_command::Kind::CompleteNexusOperation(c) => nexus_async::complete(batch, now, c),
        shard_command::Kind::RecordActivityHeartbeat(c) => activity::heartbeat(batch, now, c),
        shard_command::Kind::SignalWorkflow(c) => signal::signal(batch, now, c),
        shard_command::Kind::TerminateWorkflow(c) => signal::terminate(batch, now, c),
        shard_command::Kind::RequestCancelWorkflow(c) => signal::request_cancel(batch, now, c),
        shard_command::Kind::FireTimer(c) => timer::fire(batch, now, c),
        shard_command::Kind::StickyWorkerUnavailable(c) => {
            workflow_task::sticky_worker_unavailable(batch, now, c)
        }
        shard_command::Kind::UpsertNamespace(c) => namespace::upsert(batch, c),
        shard_command::Kind::StartChildWorkflow(c) => start::start_child(batch, now, c),
        shard_command::Kind::RecordChildStartOutcome(c) => {
            child::record_start_outcome(batch, now, c)
        }
        shard_command::Kind::RecordChildClosed(c) => child::record_child_closed(batch, now, c),
        shard_command::Kind::ApplyParentClosePolicy(c) => {
            child::apply_parent_close_policy(batch, now, c)
        }
        shard_command::Kind::RecordExternalOutcome(c) => external::record_outcome(batch, now, c),
        shard_command::Kind::CompleteTransferTask(c) => external::complete_transfer_task(batch, c),
        shard_command::Kind::TakeWorkerCommands(c) => {
            crate::worker_commands::take(batch, c.outbox_id)
        }
        shard_command::Kind::UpdateWorkflow(c) => update::admit(batch, now, c),
        shard_command::Kind::Schedule(c) => crate::schedule::apply::command(batch, now, c),
        shard_command::Kind::RecordScheduleStartOutcome(c) => {
            crate::schedule::apply::record_start_outcome(batch, now, c)
        }
        shard_command::Kind::RecordScheduleWorkflowClosed(c) => {
            crate::schedule::apply::record_workflow_closed(batch, now, c)
        }
        shard_command::Kind::ResetWorkflow(c) => reset::reset_workflow(batch, now, c),
        shard_command::Kind::DeleteWorkflowExecution(c) => {
            delete::delete_workflow_execution(batch, now, c)
        }
        shard_command::Kind::DeleteNamespace(c) => namespace::delete(batch, c),
        shard_command::Kind::RunOperation(c) => activity_ops::run_operation(batch, now, c),
        shard_command::Kind::BatchJob(c) => crate::batch::apply::command(batch, now, c),
        shard_command::Kind::StartActivityExecution(c) => {
            standalone_activity::start::start(batch, now, c)
        }
        shard_command::Kind::CancelActivityExecution(c) => {
            standalone_activity::control::cancel(batch, now, c)
        }
        shard_command::Kind::TerminateActivityExecution(c) => {
            standalone_activity::control::terminate(batch, now, c)
        }
        shard_command::Kind::DeleteActivityExecution(c) => {
            standalone_activity::control::delete(batch, now, c)
        }
        shard_command::Kind::UpdateClusterMember(c) => cluster_members::update(batch, c),
        shard_command::Kind::NexusEndpoint(c) => nexus_endpoint::command(batch, now, c),
    }
}

/// Loads a run; an empty `run_id` means the current run of the workflow ID.
pub fn load_run(
    batch: &ShardBatch,
    now: Timestamp,
    namespace_id: &str,
    workflow_id: &str,
    run_id: &str,
) -> ApplyResult<MutableState> {
    let run_id = if run_id.is_empty() {
        match batch.current(namespace_id, workflow_id)? {
            Some(current) => current.run_id,
            None => return Err(ApiError::workflow_not_found_for(workflow_id, "").into()),
        }
    } else {
        run_id.to_string()
    };
    match batch.execution(namespace_id, workflow_id, &run_id)? {
        Some(state) => Ok(MutableState::new(state, now)),
        None => Err(ApiError::workflow_not_found_for(workflow_id, &run_id).into()),
    }
}

/// Loads the run a task token names.
pub fn load_token_run(
    batch: &ShardBatch,
    now: Timestamp,
    token: &Option<pb::TaskToken>,
) -> ApplyResult<(pb::TaskToken, MutableState)> {
    let token = token
        .clone()
        .ok_or_else(|| ApiError::invalid_argument("task token is missing"))?;
    let ms = load_run(
        batch,
        now,
        &token.namespace_id,
        &token.workflow_id,
        &token.run_id,
    )?;
    Ok((token, ms))
}

/// Updates the current-run record after a run closed.
pub fn record_close(batch: &mut ShardBatch, ms: &MutableState) -> ApplyResult<()> {
    if let Some(mut current) = batch.current(&ms.state.namespace_id, &ms.state.workflow_id)?
        && current.run_id == ms.state.run_id
    {
        current.status = ms.state.status;
        batch.put_current(&ms.state.namespace_id, &ms.state.workflow_id, &current);
    }
    Ok(())
}

/// Marks a run closed: status, close time, and its pending tasks leave the outbox. A child's
/// chain that ends reports to its parent, and the run's started children get their parent
/// close policy (both through transfer tasks). Callers add the close event first.
pub fn close_run(
    batch: &mut ShardBatch,
    ms: &mut MutableState,
    status: chronicle_proto::temporal::api::enums::v1::WorkflowExecutionStatus,
    completion_event_id: i64,
) -> ApplyResult<()> {
    ms.state.status = status as i32;
    ms.state.close_time = Some(ms.now);
    // (A standalone activity's close is no workflow's close.)
    if ms.state.standalone_activity.is_none() {
        metric_defs::observe_close(&ms.state, status);
    }
    ms.state.completion_event_id = completion_event_id;
    if let Some(task) = ms.state.workflow_task.take() {
        batch.delete_outbox(task.outbox_task_id as u64);
    }
    for activity in ms.state.activities.values() {
        batch.delete_outbox(activity.outbox_task_id as u64);
    }
    // Attempts still running are told to stop (Temporal cancels them at any workflow close).
    if ms.state.standalone_activity.is_none() {
        crate::worker_commands::cancel_running(
            batch,
            &ms.state,
            ms.now,
            ms.state.activities.values(),
        )?;
    }
    ms.state.activities.clear();
    nexus_operation::on_close(batch, ms);
    ms.state.timers.clear();
    ms.state.buffered_events.clear();
    update::on_close(ms);
    record_close(batch, ms)?;
    let schedule_report = crate::schedule::apply::on_close(batch, ms, child::continues(ms))?;
    let parent_report = child::on_close(batch, ms)?;
    let callbacks_report = attach_callbacks::callbacks_on_close(batch, ms)?;
    // The reports read the run's state and close event: a deletion waits for them.
    ms.state.close_report_task_ids = schedule_report
        .into_iter()
        .chain(parent_report)
        .chain(callbacks_report)
        .map(|id| id as i64)
        .collect();
    delete::arm_retention(batch, ms)
}
