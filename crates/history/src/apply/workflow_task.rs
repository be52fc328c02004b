//! Workflow tasks: started by a poller, completed with commands, failed, or timed out.

use chronicle_proto::chronicle::history::v1::{self as cmd, command_result};
use chronicle_proto::chronicle::persistence::v1 as pb;
use chronicle_proto::temporal::api::command::v1::{
    Command, command::Attributes as CommandAttributes,
};
use chronicle_proto::temporal::api::common::v1::{RetryPolicy, SearchAttributes};
use chronicle_proto::temporal::api::enums::v1::{
    EventType, TimeoutType, WorkflowExecutionStatus, WorkflowTaskFailedCause,
};
use chronicle_proto::temporal::api::failure::v1::Failure;
use chronicle_proto::temporal::api::history::v1 as h;
use chronicle_proto::temporal::api::history::v1::history_event::Attributes;
use chronicle_proto::temporal::api::taskqueue::v1::TaskQueue;
use chronicle_proto::wkt::Timestamp;
use chronicle_storage::ShardBatch;
use chronicle_types::ApiError;
use chronicle_types::time::{duration_from_millis, millis, opt_duration_millis};

use super::{ApplyError, ApplyResult, close_run, load_run, load_token_run};
use crate::mutable_state::MutableState;

use super::child::HISTORY_SERVICE_IDENTITY;

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
                && let Some(reason) = ms.history_limit_exceeded()
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

fn apply_completion(
    batch: &mut ShardBatch,
    ms: &mut MutableState,
    task: &pb::WorkflowTaskInfo,
    request: &chronicle_proto::temporal::api::workflowservice::v1::RespondWorkflowTaskCompletedRequest,
    new_run_id: &str,
    eager_activities: bool,
    nexus: super::nexus_operation::Resolved<'_>,
) -> Result<Vec<cmd::RecordActivityTaskStartedResult>, Rejection> {
    if task.transient {
        ms.write_transient_events(task);
    }
    let completed_id = ms.add_event(
        EventType::WorkflowTaskCompleted,
        Attributes::WorkflowTaskCompletedEventAttributes(h::WorkflowTaskCompletedEventAttributes {
            scheduled_event_id: task.scheduled_event_id,
            started_event_id: task.started_event_id,
            identity: request.identity.clone(),
            sdk_metadata: request.sdk_metadata.clone(),
            metering_metadata: request.metering_metadata,
            versioning_behavior: request.versioning_behavior,
            ..Default::default()
        }),
    );
    ms.state.workflow_task = None;
    ms.state.last_completed_workflow_task_started_event_id = task.started_event_id;
    match request.sticky_attributes.as_ref().and_then(|a| {
        a.worker_task_queue
            .as_ref()
            .map(|q| (q.name.clone(), a.schedule_to_start_timeout))
    }) {
        Some((name, timeout)) if !name.is_empty() => {
            ms.state.sticky_task_queue = name;
            ms.state.sticky_schedule_to_start_timeout = timeout;
        }
        _ => ms.clear_sticky(),
    }
    let has_new_events = !ms.state.buffered_events.is_empty();
    let mut closed = false;
    let mut ctx = CommandContext {
        completed_id,
        namespace: &request.namespace,
        initiated_children: Default::default(),
        eager_activities,
        eager_scheduled: Vec::new(),
        cancel_requested: Vec::new(),
        messages: super::update::Messages::new(&request.messages),
        identity: &request.identity,
        nexus,
    };
    for command in &request.commands {
        if closed {
            return Err(reject(
                WorkflowTaskFailedCause::BadCompleteWorkflowExecutionAttributes,
                "commands follow a command that closed the workflow",
            ));
        }
        let first_event_id = ms.state.next_event_id;
        closed = apply_command(batch, ms, command, &mut ctx, has_new_events, new_run_id)?;
        // The command's summary and details (user metadata) go on the event it created, as in
        // Temporal (a timer's summary, an activity's, a child's...).
        if let Some(metadata) = &command.user_metadata
            && let Some(event) = ms
                .new_events
                .iter_mut()
                .find(|e| e.event_id == first_event_id)
        {
            event.user_metadata = Some(metadata.clone());
        }
    }
    if closed {
        // Updates still in flight were aborted with the close; messages no command referenced
        // have nothing left to act on. (The close told running attempts to stop.)
        return Ok(Vec::new());
    }
    // Started attempts whose cancellation the task requested: their workers are told at once
    // (one row per worker process for the whole task, as Temporal batches them).
    let cancel_requested: Vec<pb::ActivityInfo> = ctx
        .cancel_requested
        .iter()
        .filter_map(|id| ms.state.activities.get(id).cloned())
        .collect();
    crate::worker_commands::cancel_running(batch, &ms.state, ms.now, &cancel_requested)
        .map_err(Rejection::Storage)?;
    super::update::after_commands(ms, &mut ctx, task, request)?;
    ms.flush_buffered_events();
    if has_new_events || request.force_create_new_workflow_task || ms.force_new_workflow_task {
        ms.schedule_workflow_task(batch, 1)?;
    } else if super::update::has_undelivered(ms) {
        // Updates admitted while the task ran: a task of their own, as Temporal does.
        ms.schedule_speculative_workflow_task(batch)?;
    }
    // Eager activities start once every command applied, as in Temporal: one canceled by a
    // later command of the same task is gone and gets no task.
    let mut started = Vec::with_capacity(ctx.eager_scheduled.len());
    for scheduled_id in std::mem::take(&mut ctx.eager_scheduled) {
        let Some(activity) = ms
            .state
            .activities
            .get(&scheduled_id)
            .filter(|a| !a.started)
            .cloned()
        else {
            continue;
        };
        let request_id = format!("{}:eager:{scheduled_id}", ms.state.run_id);
        let activity = super::activity::start_attempt(
            batch,
            ms,
            activity,
            request.identity.clone(),
            request_id,
            request.worker_control_task_queue.clone(),
        )
        .map_err(storage_rejection)?;
        started.push(super::activity::started_attempt(ms, &activity));
    }
    Ok(started)
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

/// Applies one command; returns whether it closed the workflow.
fn apply_command(
    batch: &mut ShardBatch,
    ms: &mut MutableState,
    command: &Command,
    ctx: &mut CommandContext,
    has_new_events: bool,
    new_run_id: &str,
) -> Result<bool, Rejection> {
    use WorkflowTaskFailedCause as Cause;
    let completed_id = ctx.completed_id;
    let Some(attributes) = &command.attributes else {
        return Err(reject(Cause::BadBinary, "command has no attributes"));
    };
    let is_close = matches!(
        attributes,
        CommandAttributes::CompleteWorkflowExecutionCommandAttributes(_)
            | CommandAttributes::FailWorkflowExecutionCommandAttributes(_)
            | CommandAttributes::CancelWorkflowExecutionCommandAttributes(_)
            | CommandAttributes::ContinueAsNewWorkflowExecutionCommandAttributes(_)
    );
    if is_close && has_new_events {
        // New events arrived while the worker decided to close: it must see them first.
        return Err(reject(
            Cause::UnhandledCommand,
            "UnhandledCommand: new events arrived while the workflow task was running",
        ));
    }
    match attributes {
        CommandAttributes::ScheduleActivityTaskCommandAttributes(a) => {
            // Eager only on the run's own (normal) task queue, where the completing worker polls.
            let eager = ctx.eager_activities
                && a.request_eager_execution
                && a.task_queue
                    .as_ref()
                    .is_none_or(|q| q.name.is_empty() || q.name == ms.state.task_queue);
            let scheduled_id = schedule_activity(batch, ms, a, completed_id, eager)?;
            if eager {
                ctx.eager_scheduled.push(scheduled_id);
            }
            Ok(false)
        }
        CommandAttributes::RequestCancelActivityTaskCommandAttributes(a) => {
            let Some(activity) = ms.state.activities.get(&a.scheduled_event_id).cloned() else {
                return Err(reject(
                    Cause::BadRequestCancelActivityAttributes,
                    format!(
                        "no pending activity with scheduled event ID {}",
                        a.scheduled_event_id
                    ),
                ));
            };
            let requested_id = ms.add_event(
                EventType::ActivityTaskCancelRequested,
                Attributes::ActivityTaskCancelRequestedEventAttributes(
                    h::ActivityTaskCancelRequestedEventAttributes {
                        scheduled_event_id: a.scheduled_event_id,
                        workflow_task_completed_event_id: completed_id,
                    },
                ),
            );
            if activity.started {
                let entry = ms
                    .state
                    .activities
                    .get_mut(&a.scheduled_event_id)
                    .expect("present");
                entry.cancel_requested = true;
                entry.cancel_requested_event_id = requested_id;
                ctx.cancel_requested.push(a.scheduled_event_id);
            } else {
                ms.state.activities.remove(&a.scheduled_event_id);
                if activity.outbox_task_id != 0 {
                    // (An eager activity of this same task has no row.)
                    batch.delete_outbox(activity.outbox_task_id as u64);
                }
                ms.add_event(
                    EventType::ActivityTaskCanceled,
                    Attributes::ActivityTaskCanceledEventAttributes(
                        h::ActivityTaskCanceledEventAttributes {
                            latest_cancel_requested_event_id: requested_id,
                            scheduled_event_id: a.scheduled_event_id,
                            started_event_id: 0,
                            ..Default::default()
                        },
                    ),
                );
                // The worker learns of the cancellation from a new workflow task.
                ms.force_new_workflow_task = true;
            }
            Ok(false)
        }
        CommandAttributes::StartTimerCommandAttributes(a) => {
            if a.timer_id.is_empty() || ms.state.timers.contains_key(&a.timer_id) {
                return Err(reject(
                    Cause::BadStartTimerAttributes,
                    format!("invalid or duplicate timer ID {:?}", a.timer_id),
                ));
            }
            if a.timer_id.len() > chronicle_types::limits::MAX_ID_LENGTH {
                return Err(reject(
                    Cause::BadStartTimerAttributes,
                    "TimerId on StartTimerCommand exceeds length limit.",
                ));
            }
            // As in Temporal, a zero (or absent) StartToFireTimeout is valid: the timer fires at
            // once. Only a negative one is refused.
            let fire_ms = chronicle_types::time::checked_duration_millis(
                a.start_to_fire_timeout.as_ref(),
            )
            .map_err(|e| {
                reject(
                    Cause::BadStartTimerAttributes,
                    format!(
                        "An invalid StartToFireTimeout is set on StartTimerCommand: {e}. TimerId={}",
                        a.timer_id
                    ),
                )
            })?;
            let started_id = ms.add_event(
                EventType::TimerStarted,
                Attributes::TimerStartedEventAttributes(h::TimerStartedEventAttributes {
                    timer_id: a.timer_id.clone(),
                    start_to_fire_timeout: a.start_to_fire_timeout,
                    workflow_task_completed_event_id: completed_id,
                }),
            );
            let expiry = ms.now_ms().saturating_add(fire_ms);
            ms.state.timers.insert(
                a.timer_id.clone(),
                pb::TimerInfo {
                    timer_id: a.timer_id.clone(),
                    started_event_id: started_id,
                    expiry_time: Some(chronicle_types::time::from_millis(expiry)),
                },
            );
            batch.put_timer(
                expiry,
                &pb::TimerTask {
                    kind: pb::timer_task::Kind::UserTimer as i32,
                    namespace_id: ms.state.namespace_id.clone(),
                    workflow_id: ms.state.workflow_id.clone(),
                    run_id: ms.state.run_id.clone(),
                    event_id: started_id,
                    timer_id: a.timer_id.clone(),
                    ..Default::default()
                },
            )?;
            Ok(false)
        }
        CommandAttributes::CancelTimerCommandAttributes(a) => {
            let Some(timer) = ms.state.timers.remove(&a.timer_id) else {
                return Err(reject(
                    Cause::BadCancelTimerAttributes,
                    format!("no pending timer with ID {:?}", a.timer_id),
                ));
            };
            ms.add_event(
                EventType::TimerCanceled,
                Attributes::TimerCanceledEventAttributes(h::TimerCanceledEventAttributes {
                    timer_id: a.timer_id.clone(),
                    started_event_id: timer.started_event_id,
                    workflow_task_completed_event_id: completed_id,
                    identity: String::new(),
                }),
            );
            Ok(false)
        }
        CommandAttributes::CompleteWorkflowExecutionCommandAttributes(a) => {
            // A cron workflow's next run starts at the next cron time.
            let cron = super::new_run::cron_delay(ms);
            let id = ms.add_event(
                EventType::WorkflowExecutionCompleted,
                Attributes::WorkflowExecutionCompletedEventAttributes(
                    h::WorkflowExecutionCompletedEventAttributes {
                        result: a.result.clone(),
                        workflow_task_completed_event_id: completed_id,
                        new_execution_run_id: if cron.is_some() {
                            new_run_id.to_string()
                        } else {
                            String::new()
                        },
                    },
                ),
            );
            close_run(batch, ms, WorkflowExecutionStatus::Completed, id)
                .map_err(storage_rejection)?;
            if let Some(delay) = cron {
                super::new_run::start_cron(batch, ms, new_run_id, a.result.clone(), None, delay)
                    .map_err(storage_rejection)?;
            }
            Ok(true)
        }
        CommandAttributes::FailWorkflowExecutionCommandAttributes(a) => {
            // A run with a retry policy is retried as a new run, as in Temporal.
            let retry = super::new_run::workflow_retry_delay(ms, a.failure.as_ref());
            let retry_state = match retry {
                Ok(_) => chronicle_proto::temporal::api::enums::v1::RetryState::InProgress,
                Err(state) => state,
            };
            // Without a retry, a cron workflow's next run starts at the next cron time.
            let cron = match retry {
                Ok(_) => None,
                Err(_) => super::new_run::cron_delay(ms),
            };
            let id = ms.add_event(
                EventType::WorkflowExecutionFailed,
                Attributes::WorkflowExecutionFailedEventAttributes(
                    h::WorkflowExecutionFailedEventAttributes {
                        failure: a.failure.clone(),
                        retry_state: retry_state as i32,
                        workflow_task_completed_event_id: completed_id,
                        new_execution_run_id: if retry.is_ok() || cron.is_some() {
                            new_run_id.to_string()
                        } else {
                            String::new()
                        },
                    },
                ),
            );
            close_run(batch, ms, WorkflowExecutionStatus::Failed, id).map_err(storage_rejection)?;
            if let Ok(delay) = retry {
                super::new_run::start_retry(batch, ms, new_run_id, a.failure.clone(), delay)
                    .map_err(storage_rejection)?;
            } else if let Some(delay) = cron {
                super::new_run::start_cron(batch, ms, new_run_id, None, a.failure.clone(), delay)
                    .map_err(storage_rejection)?;
            }
            Ok(true)
        }
        CommandAttributes::ContinueAsNewWorkflowExecutionCommandAttributes(a) => {
            let id = ms.add_event(
                EventType::WorkflowExecutionContinuedAsNew,
                Attributes::WorkflowExecutionContinuedAsNewEventAttributes(
                    h::WorkflowExecutionContinuedAsNewEventAttributes {
                        new_execution_run_id: new_run_id.to_string(),
                        workflow_type: a
                            .workflow_type
                            .clone()
                            .or_else(|| ms.state.workflow_type.clone()),
                        task_queue: a.task_queue.clone().filter(|t| !t.name.is_empty()).or_else(
                            || {
                                Some(TaskQueue {
                                    name: ms.state.task_queue.clone(),
                                    kind: 1,
                                    normal_name: String::new(),
                                })
                            },
                        ),
                        input: a.input.clone(),
                        workflow_run_timeout: a
                            .workflow_run_timeout
                            .or(ms.state.workflow_run_timeout),
                        workflow_task_timeout: a
                            .workflow_task_timeout
                            .or(ms.state.workflow_task_timeout),
                        workflow_task_completed_event_id: completed_id,
                        backoff_start_interval: a.backoff_start_interval,
                        initiator: a.initiator,
                        last_completion_result: a.last_completion_result.clone(),
                        header: a.header.clone(),
                        memo: a.memo.clone(),
                        search_attributes: a.search_attributes.clone(),
                        ..Default::default()
                    },
                ),
            );
            close_run(batch, ms, WorkflowExecutionStatus::ContinuedAsNew, id)
                .map_err(storage_rejection)?;
            super::new_run::continue_as_new(batch, ms, a, new_run_id).map_err(storage_rejection)?;
            Ok(true)
        }
        CommandAttributes::CancelWorkflowExecutionCommandAttributes(a) => {
            let id = ms.add_event(
                EventType::WorkflowExecutionCanceled,
                Attributes::WorkflowExecutionCanceledEventAttributes(
                    h::WorkflowExecutionCanceledEventAttributes {
                        workflow_task_completed_event_id: completed_id,
                        details: a.details.clone(),
                    },
                ),
            );
            close_run(batch, ms, WorkflowExecutionStatus::Canceled, id)
                .map_err(storage_rejection)?;
            Ok(true)
        }
        CommandAttributes::RecordMarkerCommandAttributes(a) => {
            ms.add_event(
                EventType::MarkerRecorded,
                Attributes::MarkerRecordedEventAttributes(h::MarkerRecordedEventAttributes {
                    marker_name: a.marker_name.clone(),
                    details: a.details.clone(),
                    workflow_task_completed_event_id: completed_id,
                    header: a.header.clone(),
                    failure: a.failure.clone(),
                }),
            );
            Ok(false)
        }
        CommandAttributes::UpsertWorkflowSearchAttributesCommandAttributes(a) => {
            let upsert = a.search_attributes.clone().unwrap_or_default();
            let merged = ms
                .state
                .search_attributes
                .get_or_insert_with(SearchAttributes::default);
            merge_payloads(&mut merged.indexed_fields, &upsert.indexed_fields);
            ms.add_event(
                EventType::UpsertWorkflowSearchAttributes,
                Attributes::UpsertWorkflowSearchAttributesEventAttributes(
                    h::UpsertWorkflowSearchAttributesEventAttributes {
                        workflow_task_completed_event_id: completed_id,
                        search_attributes: Some(upsert),
                    },
                ),
            );
            Ok(false)
        }
        CommandAttributes::ModifyWorkflowPropertiesCommandAttributes(a) => {
            if let Some(upsert) = &a.upserted_memo {
                let memo = ms.state.memo.get_or_insert_with(Default::default);
                merge_payloads(&mut memo.fields, &upsert.fields);
            }
            ms.add_event(
                EventType::WorkflowPropertiesModified,
                Attributes::WorkflowPropertiesModifiedEventAttributes(
                    h::WorkflowPropertiesModifiedEventAttributes {
                        workflow_task_completed_event_id: completed_id,
                        upserted_memo: a.upserted_memo.clone(),
                    },
                ),
            );
            Ok(false)
        }
        CommandAttributes::StartChildWorkflowExecutionCommandAttributes(a) => {
            super::child::initiate(batch, ms, a, ctx)?;
            Ok(false)
        }
        CommandAttributes::RequestCancelExternalWorkflowExecutionCommandAttributes(a) => {
            super::external::initiate_cancel(batch, ms, a, ctx)?;
            Ok(false)
        }
        CommandAttributes::SignalExternalWorkflowExecutionCommandAttributes(a) => {
            super::external::initiate_signal(batch, ms, a, ctx)?;
            Ok(false)
        }
        CommandAttributes::ProtocolMessageCommandAttributes(a) => {
            super::update::protocol_message_command(ms, ctx, &a.message_id)?;
            Ok(false)
        }
        CommandAttributes::ScheduleNexusOperationCommandAttributes(a) => {
            super::nexus_operation::schedule(batch, ms, a, ctx)?;
            Ok(false)
        }
        CommandAttributes::RequestCancelNexusOperationCommandAttributes(a) => {
            super::nexus_async::request_cancel(batch, ms, a, ctx)?;
            Ok(false)
        }
    }
}

/// Whether a payload stands for "no value" (Temporal's nil payload: no data, a JSON `null` or
/// an empty list): upserting one removes the key.
fn is_nil_payload(p: &chronicle_proto::temporal::api::common::v1::Payload) -> bool {
    p.data.is_empty() || p.data == b"null" || p.data == b"[]"
}

/// Merges upserted memo fields or search attributes into the run's, as Temporal does: a nil
/// value removes its key, any other replaces it.
pub(crate) fn merge_payloads(
    into: &mut std::collections::HashMap<
        String,
        chronicle_proto::temporal::api::common::v1::Payload,
    >,
    upsert: &std::collections::HashMap<String, chronicle_proto::temporal::api::common::v1::Payload>,
) {
    for (k, v) in upsert {
        if is_nil_payload(v) {
            into.remove(k);
        } else {
            into.insert(k.clone(), v.clone());
        }
    }
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

/// Temporal's defaults for an activity retry policy.
pub fn default_activity_retry_policy(given: Option<&RetryPolicy>) -> RetryPolicy {
    let mut p = given.cloned().unwrap_or_default();
    if opt_duration_millis(p.initial_interval.as_ref()) <= 0 {
        p.initial_interval = Some(duration_from_millis(1000));
    }
    if p.backoff_coefficient < 1.0 {
        p.backoff_coefficient = 2.0;
    }
    if opt_duration_millis(p.maximum_interval.as_ref()) <= 0 {
        p.maximum_interval = Some(duration_from_millis(
            opt_duration_millis(p.initial_interval.as_ref()).saturating_mul(100),
        ));
    }
    p
}

fn schedule_activity(
    batch: &mut ShardBatch,
    ms: &mut MutableState,
    a: &chronicle_proto::temporal::api::command::v1::ScheduleActivityTaskCommandAttributes,
    completed_id: i64,
    eager: bool,
) -> Result<i64, Rejection> {
    use WorkflowTaskFailedCause as Cause;
    let bad = |m: &str| reject(Cause::BadScheduleActivityAttributes, m.to_string());
    if a.activity_id.is_empty() {
        return Err(bad("ActivityId is not set on ScheduleActivityTaskCommand."));
    }
    if a.activity_id.len() > chronicle_types::limits::MAX_ID_LENGTH {
        return Err(bad("ActivityId exceeds length limit."));
    }
    if a.activity_type.as_ref().is_none_or(|t| t.name.is_empty()) {
        return Err(bad(
            "ActivityType is not set on ScheduleActivityTaskCommand.",
        ));
    }
    if ms
        .state
        .activities
        .values()
        .any(|x| x.activity_id == a.activity_id)
    {
        return Err(bad(&format!(
            "Activity with ID {} is already pending.",
            a.activity_id
        )));
    }
    chronicle_types::priority::validate(a.priority.as_ref())
        .map_err(|e| bad(&format!("invalid priorities: {e}")))?;
    if ms.state.activities.len() >= chronicle_types::limits::MAX_PENDING_ACTIVITIES {
        return Err(reject(
            Cause::PendingActivitiesLimitExceeded,
            "the number of pending activities exceeds the limit",
        ));
    }
    let run_ms = opt_duration_millis(ms.state.workflow_run_timeout.as_ref());
    // Negative timeouts are refused, as in Temporal; zero (or absent) means "not set".
    let timeout = |d: Option<&chronicle_proto::wkt::Duration>, name: &str| {
        chronicle_types::time::checked_duration_millis(d)
            .map_err(|e| bad(&format!("invalid {name}: {e}")))
    };
    let mut to_close = timeout(
        a.schedule_to_close_timeout.as_ref(),
        "ScheduleToCloseTimeout",
    )?;
    let mut to_start = timeout(
        a.schedule_to_start_timeout.as_ref(),
        "ScheduleToStartTimeout",
    )?;
    let mut start_to_close = timeout(a.start_to_close_timeout.as_ref(), "StartToCloseTimeout")?;
    let heartbeat = timeout(a.heartbeat_timeout.as_ref(), "HeartbeatTimeout")?;
    if to_close > 0 {
        to_start = if to_start > 0 {
            to_start.min(to_close)
        } else {
            to_close
        };
        start_to_close = if start_to_close > 0 {
            start_to_close.min(to_close)
        } else {
            to_close
        };
    } else if start_to_close > 0 {
        to_close = run_ms;
        if to_start == 0 {
            to_start = run_ms;
        }
    } else {
        return Err(bad(
            "A valid StartToClose or ScheduleToCloseTimeout is not set on ScheduleActivityTaskCommand.",
        ));
    }
    // No timeout exceeds the run's, as in Temporal.
    if run_ms > 0 {
        to_close = to_close.min(run_ms);
        to_start = to_start.min(run_ms);
        start_to_close = start_to_close.min(run_ms);
    }
    let heartbeat = heartbeat.min(start_to_close);
    let opt = |ms: i64| (ms > 0).then(|| duration_from_millis(ms));
    let task_queue = match &a.task_queue {
        Some(tq) if !tq.name.is_empty() => tq.clone(),
        _ => TaskQueue {
            name: ms.state.task_queue.clone(),
            kind: 1,
            normal_name: String::new(),
        },
    };
    let retry_policy = default_activity_retry_policy(a.retry_policy.as_ref());
    let scheduled_id = ms.add_event(
        EventType::ActivityTaskScheduled,
        Attributes::ActivityTaskScheduledEventAttributes(h::ActivityTaskScheduledEventAttributes {
            activity_id: a.activity_id.clone(),
            activity_type: a.activity_type.clone(),
            task_queue: Some(task_queue.clone()),
            header: a.header.clone(),
            input: a.input.clone(),
            schedule_to_close_timeout: opt(to_close),
            schedule_to_start_timeout: opt(to_start),
            start_to_close_timeout: opt(start_to_close),
            heartbeat_timeout: opt(heartbeat),
            workflow_task_completed_event_id: completed_id,
            retry_policy: Some(retry_policy.clone()),
            priority: a.priority.clone(),
            ..Default::default()
        }),
    );
    let now = ms.now;
    let now_ms = ms.now_ms();
    // An eager activity is started in this same apply: no task for matching, and no
    // schedule-to-start timeout.
    let outbox = if eager {
        0
    } else {
        batch.put_outbox(&pb::OutboxTask {
            kind: pb::outbox_task::Kind::ActivityTask as i32,
            namespace_id: ms.state.namespace_id.clone(),
            workflow_id: ms.state.workflow_id.clone(),
            run_id: ms.state.run_id.clone(),
            task_queue: task_queue.name.clone(),
            task_queue_kind: task_queue.kind,
            scheduled_event_id: scheduled_id,
            attempt: 1,
            ..Default::default()
        })?
    };
    let timer = |kind: TimeoutType| pb::TimerTask {
        kind: pb::timer_task::Kind::ActivityTimeout as i32,
        namespace_id: ms.state.namespace_id.clone(),
        workflow_id: ms.state.workflow_id.clone(),
        run_id: ms.state.run_id.clone(),
        event_id: scheduled_id,
        attempt: 1,
        timeout_type: kind as i32,
        timer_id: String::new(),
    };
    let mut attempt_timer_keys = Vec::new();
    let mut schedule_timer_keys = Vec::new();
    if to_start > 0 && !eager {
        attempt_timer_keys.push(batch.put_timer(
            now_ms.saturating_add(to_start),
            &timer(TimeoutType::ScheduleToStart),
        )?);
    }
    if to_close > 0 {
        schedule_timer_keys.push(batch.put_timer(
            now_ms.saturating_add(to_close),
            &timer(TimeoutType::ScheduleToClose),
        )?);
    }
    ms.state.activities.insert(
        scheduled_id,
        pb::ActivityInfo {
            scheduled_event_id: scheduled_id,
            activity_id: a.activity_id.clone(),
            activity_type: a.activity_type.clone(),
            task_queue: Some(task_queue),
            header: a.header.clone(),
            input: a.input.clone(),
            schedule_to_close_timeout: opt(to_close),
            schedule_to_start_timeout: opt(to_start),
            start_to_close_timeout: opt(start_to_close),
            heartbeat_timeout: opt(heartbeat),
            retry_policy: Some(retry_policy),
            attempt: 1,
            first_scheduled_time: Some(now),
            scheduled_time: Some(now),
            outbox_task_id: outbox as i64,
            workflow_task_completed_event_id: completed_id,
            schedule_timer_keys,
            attempt_timer_keys,
            priority: a.priority.clone(),
            ..Default::default()
        },
    );
    Ok(scheduled_id)
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
