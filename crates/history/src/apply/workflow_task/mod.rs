//! Workflow tasks: started by a poller, completed with commands, failed, or timed out. The
//! commands of a completion are applied in `completion` and the modules of their kinds.

mod activity_commands;
mod close_commands;
mod completion;
mod property_commands;
mod timer_commands;

use chronicle_proto::chronicle::history::v1::{self as cmd, command_result};
use chronicle_proto::chronicle::persistence::v1 as pb;
use chronicle_proto::temporal::api::enums::v1::{EventType, TimeoutType, WorkflowTaskFailedCause};
use chronicle_proto::temporal::api::failure::v1::Failure;
use chronicle_proto::temporal::api::history::v1 as h;
use chronicle_proto::temporal::api::history::v1::history_event::Attributes;
use chronicle_proto::wkt::Timestamp;
use chronicle_storage::ShardBatch;
use chronicle_types::ApiError;
use chronicle_types::time::{millis, opt_duration_millis};

use super::{ApplyError, ApplyResult, load_run, load_token_run};
use crate::mutable_state::MutableState;

use super::child::HISTORY_SERVICE_IDENTITY;

use completion::apply_completion;

pub use activity_commands::default_activity_retry_policy;
pub(crate) use property_commands::merge_payloads;

fn stale_started() -> command_result::Result {
    command_result::Result::WorkflowTaskStarted(cmd::RecordWorkflowTaskStartedResult {
        stale: true,
        ..Default::default()
    })
}

pub fn record_started(
    batch: &mut ShardBatch,
    now: Timestamp,
    c: cmd::RecordWorkflowTaskStarted,
) -> ApplyResult<command_result::Result> {
    let mut ms = match load_run(batch, now, &c.namespace_id, &c.workflow_id, &c.run_id) {
        Ok(ms) => ms,
        Err(ApplyError::Rejected(_)) => {
            batch.delete_outbox(c.outbox_id as u64);
            return Ok(stale_started());
        }
        Err(e) => return Err(e),
    };
    let Some(task) = ms
        .state
        .workflow_task
        .clone()
        .filter(|t| t.scheduled_event_id == c.scheduled_event_id && ms.is_running())
    else {
        batch.delete_outbox(c.outbox_id as u64);
        return Ok(stale_started());
    };
    if task.started_event_id > 0 {
        // The same poll retried gets the same answer; anyone else gets nothing.
        if task.started_request_id == c.request_id {
            return Ok(started_result(&ms, &task));
        }
        return Ok(stale_started());
    }
    let suggest_continue_as_new = ms.suggest_continue_as_new(
        c.suggest_continue_as_new_events,
        c.suggest_continue_as_new_bytes,
    );
    let started_event_id = if task.transient {
        // Written with the Scheduled event if this attempt completes.
        task.scheduled_event_id + 1
    } else {
        ms.add_event(
            EventType::WorkflowTaskStarted,
            Attributes::WorkflowTaskStartedEventAttributes(h::WorkflowTaskStartedEventAttributes {
                scheduled_event_id: task.scheduled_event_id,
                identity: c.identity.clone(),
                request_id: c.request_id.clone(),
                history_size_bytes: ms.state.history_size_bytes,
                suggest_continue_as_new,
                ..Default::default()
            }),
        )
    };
    batch.delete_outbox(task.outbox_task_id as u64);
    super::update::mark_sent(&mut ms, started_event_id);
    let timeout_ms = opt_duration_millis(task.start_to_close_timeout.as_ref()).max(1000);
    let timeout_timer = batch.put_timer(
        millis(&now).saturating_add(timeout_ms),
        &pb::TimerTask {
            kind: pb::timer_task::Kind::WorkflowTaskTimeout as i32,
            namespace_id: ms.state.namespace_id.clone(),
            workflow_id: ms.state.workflow_id.clone(),
            run_id: ms.state.run_id.clone(),
            event_id: task.scheduled_event_id,
            attempt: task.attempt,
            timeout_type: TimeoutType::StartToClose as i32,
            ..Default::default()
        },
    )?;
    let task = pb::WorkflowTaskInfo {
        started_event_id,
        started_time: Some(now),
        started_request_id: c.request_id,
        started_identity: c.identity,
        suggest_continue_as_new,
        outbox_task_id: 0,
        // The start-to-close timeout replaces a sticky schedule-to-start timer: the task started.
        timer_keys: vec![timeout_timer],
        ..task
    };
    ms.state.workflow_task = Some(task.clone());
    let result = started_result(&ms, &task);
    ms.persist(batch);
    Ok(result)
}

fn started_result(ms: &MutableState, task: &pb::WorkflowTaskInfo) -> command_result::Result {
    command_result::Result::WorkflowTaskStarted(cmd::RecordWorkflowTaskStartedResult {
        scheduled_event_id: task.scheduled_event_id,
        started_event_id: task.started_event_id,
        attempt: task.attempt,
        scheduled_time: task.scheduled_time,
        started_time: task.started_time,
        previous_started_event_id: ms.state.last_completed_workflow_task_started_event_id,
        workflow_type: ms.state.workflow_type.clone(),
        transient_events: Vec::new(),
        next_event_id: ms.state.next_event_id,
        stale: false,
    })
}

/// The workflow task a token names, if it is the one running now.
fn running_task(ms: &MutableState, token: &pb::TaskToken) -> ApplyResult<pb::WorkflowTaskInfo> {
    if !ms.is_running() {
        return Err(ApiError::not_found("Workflow task not found.").into());
    }
    match &ms.state.workflow_task {
        Some(t)
            if t.scheduled_event_id == token.scheduled_event_id
                && t.started_event_id > 0
                && t.started_event_id == token.started_event_id
                // A speculative task's IDs repeat once one is discarded (see TaskToken).
                && !(t.speculative
                    && !token.started_request_id.is_empty()
                    && token.started_request_id != t.started_request_id) =>
        {
            Ok(t.clone())
        }
        _ => Err(ApiError::not_found("Workflow task not found.").into()),
    }
}

pub fn complete(
    batch: &mut ShardBatch,
    now: Timestamp,
    c: cmd::CompleteWorkflowTask,
) -> ApplyResult<command_result::Result> {
    let request = c.request.unwrap_or_default();
    let (token, ms) = load_token_run(batch, now, &c.token)?;
    let task = running_task(&ms, &token)?;
    let savepoint = batch.savepoint();
    let original = ms.state.clone();
    let mut ms = ms;
    if super::update::can_discard_speculative(&ms, &task, &request) {
        let discard = batch.savepoint();
        match super::update::discard_speculative(batch, &mut ms, &task, &request) {
            Ok(result) => {
                ms.persist(batch);
                return Ok(result);
            }
            Err(Rejection::Storage(e)) => return Err(ApplyError::Storage(e)),
            // A bad message: handled below like any bad completion.
            Err(Rejection::Command { .. }) => {
                batch.rollback(discard);
                ms = MutableState::new(original.clone(), now);
            }
        }
    }
    match apply_completion(
        batch,
        &mut ms,
        &task,
        &request,
        &c.new_run_id,
        c.eager_activities,
        super::nexus_operation::Resolved {
            endpoints: &c.nexus_endpoints,
            request_ids: &c.nexus_request_ids,
            used: 0,
        },
    ) {
        Ok(eager_activities) => {
            // Temporal's hard history limits: a run that reached one is terminated rather than
            // allowed to grow a history no worker could replay.
            if ms.is_running()
                && let Some(reason) =
                    ms.history_limit_exceeded(c.max_history_events, c.max_history_bytes)
            {
                super::signal::terminate_run(
                    batch,
                    &mut ms,
                    reason,
                    HISTORY_SERVICE_IDENTITY,
                    None,
                )?;
            }
            // A run closed by this completion hands out no activity tasks.
            let eager_activities = if ms.is_running() {
                eager_activities
            } else {
                Vec::new()
            };
            ms.persist(batch);
            Ok(command_result::Result::CompleteWorkflowTask(
                cmd::CompleteWorkflowTaskResult {
                    eager_activities,
                    reset_history_event_id: 0,
                },
            ))
        }
        Err(Rejection::Storage(e)) => Err(ApplyError::Storage(e)),
        Err(Rejection::Command { cause, message }) => {
            // Temporal's behaviour for a bad command: nothing of the completion is kept, the task
            // is failed with the cause, a new one is scheduled, and the worker gets the error.
            batch.rollback(savepoint);
            if task.attempt > 1
                && matches!(
                    cause,
                    WorkflowTaskFailedCause::FeatureDisabled
                        | WorkflowTaskFailedCause::BadScheduleNexusOperationAttributes
                        | WorkflowTaskFailedCause::BadRequestCancelNexusOperationAttributes
                )
            {
                // A retry that fails the same way again is not failed again (Temporal does this
                // for every cause but UnhandledCommand; here for commands Chronicle does not
                // serve, for Nexus operations on endpoints not found and for cancels of
                // operations that are not pending): the task stays started
                // until it times out and is retried then, so a worker that keeps sending such a command is paced by the
                // task timeout instead of spinning through attempts as fast as it can answer.
                return Err(ApplyError::Rejected(ApiError::invalid_argument(message)));
            }
            let mut ms = MutableState::new(original, now);
            super::update::on_task_failed_in_completion(&mut ms, task.started_event_id);
            let failure = Failure {
                message: message.clone(),
                ..Default::default()
            };
            fail_task(
                batch,
                &mut ms,
                &task,
                cause,
                Some(failure),
                &request.identity,
            )?;
            ms.persist(batch);
            Err(ApplyError::RejectedKeepWrites(ApiError::invalid_argument(
                message,
            )))
        }
    }
}

/// Why a completion's commands were not applied.
pub enum Rejection {
    /// A bad command: the task fails with this cause and a new one is scheduled (history).
    Command {
        cause: WorkflowTaskFailedCause,
        message: String,
    },
    /// This node's storage failed: a local fault, not a property of the command, so it must
    /// never become history (other replicas would record something else). It stops the group.
    Storage(chronicle_storage::StorageError),
}

pub fn reject(cause: WorkflowTaskFailedCause, message: impl Into<String>) -> Rejection {
    Rejection::Command {
        cause,
        message: message.into(),
    }
}

impl From<chronicle_storage::StorageError> for Rejection {
    fn from(e: chronicle_storage::StorageError) -> Self {
        Rejection::Storage(e)
    }
}

/// What the commands of one workflow task completion share.
pub(super) struct CommandContext<'a> {
    /// ID of the task's WorkflowTaskCompleted event.
    pub completed_id: i64,
    /// The run's namespace (name), as the worker's request named it.
    pub namespace: &'a str,
    /// Workflow IDs of the children this task starts: cancelling one of them in the same task
    /// is refused, as in Temporal.
    pub initiated_children: std::collections::HashSet<String>,
    /// This server starts activities that request eager execution ([`cmd::CompleteWorkflowTask`]).
    pub eager_activities: bool,
    /// Scheduled event IDs of the activities to start for the completing worker once every
    /// command applied.
    pub eager_scheduled: Vec<i64>,
    /// Scheduled event IDs of the started activities whose cancellation the task requested.
    pub cancel_requested: Vec<i64>,
    /// The completion's protocol messages (updates), taken as ProtocolMessage commands name them.
    pub messages: super::update::Messages<'a>,
    /// The completing worker's identity.
    pub identity: &'a str,
    /// What the leader resolved for the ScheduleNexusOperation commands.
    pub nexus: super::nexus_operation::Resolved<'a>,
}

/// A refusal from a step of a command fails the task; a storage failure stays one.
fn storage_rejection(e: ApplyError) -> Rejection {
    match e {
        ApplyError::Rejected(e) | ApplyError::RejectedKeepWrites(e) => {
            reject(WorkflowTaskFailedCause::Unspecified, e.message)
        }
        ApplyError::Storage(e) => Rejection::Storage(e),
    }
}

pub fn fail(
    batch: &mut ShardBatch,
    now: Timestamp,
    c: cmd::FailWorkflowTask,
) -> ApplyResult<command_result::Result> {
    let request = c.request.unwrap_or_default();
    let (token, mut ms) = load_token_run(batch, now, &c.token)?;
    let task = running_task(&ms, &token)?;
    let cause = WorkflowTaskFailedCause::try_from(request.cause)
        .unwrap_or(WorkflowTaskFailedCause::Unspecified);
    fail_task(
        batch,
        &mut ms,
        &task,
        cause,
        request.failure.clone(),
        &request.identity,
    )?;
    ms.persist(batch);
    Ok(super::ok())
}

/// Records a failed (or timed-out) attempt and schedules the next one.
pub fn fail_task(
    batch: &mut ShardBatch,
    ms: &mut MutableState,
    task: &pb::WorkflowTaskInfo,
    cause: WorkflowTaskFailedCause,
    failure: Option<Failure>,
    identity: &str,
) -> ApplyResult<()> {
    let task = &written_if_speculative(ms, task);
    if !task.transient {
        ms.add_event(
            EventType::WorkflowTaskFailed,
            Attributes::WorkflowTaskFailedEventAttributes(h::WorkflowTaskFailedEventAttributes {
                scheduled_event_id: task.scheduled_event_id,
                started_event_id: task.started_event_id,
                cause: cause as i32,
                failure,
                identity: identity.to_string(),
                ..Default::default()
            }),
        );
    }
    ms.state.workflow_task = None;
    // The worker's cached state is suspect: the retry goes to the normal queue, full history.
    ms.clear_sticky();
    ms.flush_buffered_events();
    ms.schedule_workflow_task(batch, task.attempt + 1)?;
    Ok(())
}

/// A workflow task's start-to-close timer fired.
pub fn timed_out(
    batch: &mut ShardBatch,
    ms: &mut MutableState,
    scheduled_event_id: i64,
    attempt: i32,
) -> ApplyResult<bool> {
    let Some(task) = ms.state.workflow_task.clone() else {
        return Ok(false);
    };
    if task.scheduled_event_id != scheduled_event_id
        || task.attempt != attempt
        || task.started_event_id == 0
        || !ms.is_running()
    {
        return Ok(false);
    }
    let task = written_if_speculative(ms, &task);
    if !task.transient {
        ms.add_event(
            EventType::WorkflowTaskTimedOut,
            Attributes::WorkflowTaskTimedOutEventAttributes(
                h::WorkflowTaskTimedOutEventAttributes {
                    scheduled_event_id: task.scheduled_event_id,
                    started_event_id: task.started_event_id,
                    timeout_type: TimeoutType::StartToClose as i32,
                },
            ),
        );
    }
    ms.state.workflow_task = None;
    ms.clear_sticky();
    ms.flush_buffered_events();
    ms.schedule_workflow_task(batch, task.attempt + 1)?;
    Ok(true)
}

/// A speculative task (created for updates) that fails or times out becomes a normal one, as in
/// Temporal: its Scheduled and Started events are written before the failure.
fn written_if_speculative(
    ms: &mut MutableState,
    task: &pb::WorkflowTaskInfo,
) -> pb::WorkflowTaskInfo {
    if !task.speculative {
        return task.clone();
    }
    ms.write_transient_events(task);
    pb::WorkflowTaskInfo {
        transient: false,
        speculative: false,
        ..task.clone()
    }
}

/// A workflow task waited on a sticky queue too long (the worker is gone): Temporal's
/// ScheduleToStart timeout, then the task is scheduled again on the normal queue.
pub fn sticky_timed_out(
    batch: &mut ShardBatch,
    ms: &mut MutableState,
    scheduled_event_id: i64,
    attempt: i32,
) -> ApplyResult<bool> {
    let Some(task) = ms.state.workflow_task.clone() else {
        return Ok(false);
    };
    if task.scheduled_event_id != scheduled_event_id
        || task.attempt != attempt
        || task.started_event_id != 0
        || task.task_queue_kind
            != chronicle_proto::temporal::api::enums::v1::TaskQueueKind::Sticky as i32
        || !ms.is_running()
    {
        return Ok(false);
    }
    batch.delete_outbox(task.outbox_task_id as u64);
    ms.state.workflow_task = None;
    ms.clear_sticky();
    if task.speculative {
        // Nothing of a speculative task is in history: it just moves to the normal queue.
        ms.schedule_speculative_workflow_task(batch)?;
        return Ok(true);
    }
    ms.add_event(
        EventType::WorkflowTaskTimedOut,
        Attributes::WorkflowTaskTimedOutEventAttributes(h::WorkflowTaskTimedOutEventAttributes {
            scheduled_event_id: task.scheduled_event_id,
            started_event_id: 0,
            timeout_type: TimeoutType::ScheduleToStart as i32,
        }),
    );
    ms.schedule_workflow_task(batch, task.attempt)?;
    Ok(true)
}

/// Moves a workflow task waiting on a sticky queue whose worker is gone to the run's normal
/// queue, as Temporal does when matching reports the sticky worker unavailable: no event is
/// added (the Scheduled event keeps naming the sticky queue), the task is dispatched again on
/// the normal queue, and stickiness is cleared so the next poller gets the full history.
pub fn sticky_worker_unavailable(
    batch: &mut ShardBatch,
    now: Timestamp,
    c: cmd::StickyWorkerUnavailable,
) -> ApplyResult<command_result::Result> {
    let mut ms = super::load_run(batch, now, &c.namespace_id, &c.workflow_id, &c.run_id)?;
    let Some(task) = ms.state.workflow_task.clone() else {
        return Ok(super::ok());
    };
    if !ms.is_running()
        || task.scheduled_event_id != c.scheduled_event_id
        || task.started_event_id != 0
        || task.task_queue_kind
            != chronicle_proto::temporal::api::enums::v1::TaskQueueKind::Sticky as i32
    {
        return Ok(super::ok());
    }
    batch.delete_outbox(task.outbox_task_id as u64);
    ms.clear_sticky();
    let normal = ms.state.task_queue.clone();
    let outbox_task_id = batch.put_outbox(&pb::OutboxTask {
        kind: pb::outbox_task::Kind::WorkflowTask as i32,
        namespace_id: ms.state.namespace_id.clone(),
        workflow_id: ms.state.workflow_id.clone(),
        run_id: ms.state.run_id.clone(),
        task_queue: normal.clone(),
        task_queue_kind: chronicle_proto::temporal::api::enums::v1::TaskQueueKind::Normal as i32,
        scheduled_event_id: task.scheduled_event_id,
        attempt: task.attempt,
        normal_task_queue: normal.clone(),
        ..Default::default()
    })?;
    ms.state.workflow_task = Some(pb::WorkflowTaskInfo {
        task_queue: normal,
        task_queue_kind: chronicle_proto::temporal::api::enums::v1::TaskQueueKind::Normal as i32,
        outbox_task_id: outbox_task_id as i64,
        // The sticky schedule-to-start timer has nothing left to do.
        timer_keys: Vec::new(),
        ..task
    });
    ms.persist(batch);
    Ok(super::ok())
}
