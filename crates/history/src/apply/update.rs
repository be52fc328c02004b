//! Workflow updates at apply: admission (UpdateWorkflowExecution and update-with-start), the
//! worker's protocol messages in a workflow task completion (Acceptance, Rejection, Response),
//! and what a run's close does to updates in flight.
//!
//! Temporal keeps admitted updates in the leader's memory and only accepted ones in mutable
//! state; Chronicle keeps every update in the run's replicated state (`UpdateInfo`), so an
//! update ID is de-duplicated across leader changes and a new leader still delivers an update
//! admitted under the old one. Waiters are not state: they re-read the run on every change
//! (`crate::update`).

use chronicle_proto::chronicle::history::v1::{self as cmd, command_result};
use chronicle_proto::chronicle::persistence::v1 as pb;
use chronicle_proto::temporal::api::enums::v1::{
    EventType, WorkflowExecutionStatus, WorkflowTaskFailedCause,
};
use chronicle_proto::temporal::api::failure::v1::{Failure, failure::FailureInfo};
use chronicle_proto::temporal::api::history::v1 as h;
use chronicle_proto::temporal::api::history::v1::history_event::Attributes;
use chronicle_proto::temporal::api::protocol::v1::{Message, message::SequencingId};
use chronicle_proto::temporal::api::update::v1 as upd;
use chronicle_proto::wkt::Timestamp;
use chronicle_storage::ShardBatch;
use chronicle_types::ApiError;
use prost::Message as _;

use super::workflow_task::{Rejection, reject};
use super::{ApplyResult, load_run};
use crate::mutable_state::MutableState;

use pb::update_info::Stage;

/// Temporal's default limits (history.maxInFlightUpdates, history.maxTotalUpdates).
pub const MAX_IN_FLIGHT_UPDATES: usize = 10;
pub const MAX_TOTAL_UPDATES: usize = 2000;
/// Temporal's history.maxInFlightUpdatePayloads.
pub const MAX_IN_FLIGHT_UPDATE_BYTES: usize = 20 * 1024 * 1024;
/// Rejected updates are kept only for their waiters; past this many per run, the oldest go.
const MAX_KEPT_REJECTIONS: usize = 50;
/// Temporal fails updates fast while the workflow task keeps failing (attempt >= 3).
const FAIL_UPDATE_WORKFLOW_TASK_ATTEMPT: i32 = 3;

/// Temporal's history.discardSpeculativeWorkflowTaskMaximumEventsCount.
const DISCARD_SPECULATIVE_MAX_EVENTS: i64 = 10;

const TYPE_URL_PREFIX: &str = "type.googleapis.com/";

/// The error of an update to a run that closed (no update with the ID there).
pub fn workflow_completed_error() -> ApiError {
    ApiError::not_found("workflow execution already completed")
}

/// Temporal's `AcceptedUpdateCompletedWorkflowFailure`: the run closed after accepting the
/// update and before completing it.
pub fn accepted_update_completed_workflow_failure() -> Failure {
    server_failure(
        "Workflow Update failed because the Workflow completed before the Update completed.",
        "AcceptedUpdateCompletedWorkflow",
    )
}

/// Temporal's `unprocessedUpdateFailure`: the worker completed the task that carried the
/// update without accepting or rejecting it (an SDK without update support).
fn unprocessed_update_failure() -> Failure {
    server_failure(
        "Workflow Update is rejected because it wasn't processed by worker. Probably, Workflow Update is not supported by the worker.",
        "UnprocessedUpdate",
    )
}

fn server_failure(message: &str, failure_type: &str) -> Failure {
    Failure {
        message: message.to_string(),
        source: "Server".to_string(),
        failure_info: Some(FailureInfo::ApplicationFailureInfo(
            chronicle_proto::temporal::api::failure::v1::ApplicationFailureInfo {
                r#type: failure_type.to_string(),
                non_retryable: true,
                ..Default::default()
            },
        )),
        ..Default::default()
    }
}

fn failure_outcome(failure: Failure) -> upd::Outcome {
    upd::Outcome {
        value: Some(upd::outcome::Value::Failure(failure)),
    }
}

/// Update-with-start attaches to an update with its ID that the workflow's current run already
/// has, whatever the start's conflict and reuse policies say (as Temporal): on a running run any
/// update not rejected, on a closed run only one the workflow completed (its outcome is final;
/// one the close cut short is not attached to, and the start's policies decide).
fn run_with_update(
    batch: &ShardBatch,
    namespace_id: &str,
    workflow_id: &str,
    update_id: &str,
) -> ApplyResult<Option<String>> {
    let Some(current) = batch.current(namespace_id, workflow_id)? else {
        return Ok(None);
    };
    let Some(state) = batch.execution(namespace_id, workflow_id, &current.run_id)? else {
        return Ok(None);
    };
    let Some(update) = state.updates.get(update_id) else {
        return Ok(None);
    };
    let running = current.status == WorkflowExecutionStatus::Running as i32;
    let attach = if running {
        update.stage != Stage::Rejected as i32
    } else {
        // Completed by the workflow (an UpdateCompleted event), not failed by the close.
        update.stage == Stage::Completed as i32 && update.completed_event_id != 0
    };
    Ok(attach.then_some(current.run_id))
}

/// UpdateWorkflow: starts the workflow first for update-with-start, then admits the update on
/// the run (or finds the update with the same ID).
pub fn admit(
    batch: &mut ShardBatch,
    now: Timestamp,
    c: cmd::UpdateWorkflow,
) -> ApplyResult<command_result::Result> {
    let request = c
        .request
        .ok_or_else(|| ApiError::invalid_argument("update request missing"))?;
    let update = request.request.clone().unwrap_or_default();
    let update_id = update
        .meta
        .as_ref()
        .map(|m| m.update_id.clone())
        .unwrap_or_default();
    if update_id.is_empty() {
        return Err(ApiError::invalid_argument("Update ID is not set on request.").into());
    }
    let execution = request.workflow_execution.clone().unwrap_or_default();
    if c.start.is_some()
        && let Some(run_id) =
            run_with_update(batch, &c.namespace_id, &execution.workflow_id, &update_id)?
    {
        return Ok(command_result::Result::UpdateWorkflow(
            cmd::UpdateWorkflowResult {
                run_id,
                started: false,
            },
        ));
    }
    let (run_id, started) = match c.start {
        Some(start) => match super::start::start_workflow(batch, now, start)? {
            command_result::Result::StartWorkflow(s) => (s.run_id, s.started),
            _ => return Err(ApiError::internal("unexpected start result").into()),
        },
        None => (execution.run_id.clone(), false),
    };
    let mut ms = load_run(batch, now, &c.namespace_id, &execution.workflow_id, &run_id)?;
    let result = |ms: &MutableState| {
        command_result::Result::UpdateWorkflow(cmd::UpdateWorkflowResult {
            run_id: ms.state.run_id.clone(),
            started,
        })
    };
    if !request.first_execution_run_id.is_empty()
        && ms.state.first_run_id != request.first_execution_run_id
    {
        return Err(ApiError::not_found("workflow execution not found").into());
    }
    let existing = ms.state.updates.get(&update_id).cloned();
    // A request with the ID of an update that was not rejected gets that update (a rejected
    // one is admitted again, as Temporal forgets rejections).
    if let Some(existing) = &existing
        && existing.stage != Stage::Rejected as i32
    {
        return Ok(result(&ms));
    }
    if !ms.is_running() {
        return Err(workflow_completed_error().into());
    }
    let attempt = ms
        .state
        .workflow_task
        .as_ref()
        .map(|t| t.attempt)
        .unwrap_or(0)
        .max(ms.state.workflow_task_attempt);
    if attempt >= FAIL_UPDATE_WORKFLOW_TASK_ATTEMPT {
        return Err(workflow_not_ready(
            "Unable to perform workflow execution update due to Workflow Task in failed state.",
        )
        .into());
    }
    let in_flight = ms
        .state
        .updates
        .values()
        .filter(|u| u.stage == Stage::Admitted as i32 || u.stage == Stage::Accepted as i32)
        .count();
    if in_flight >= MAX_IN_FLIGHT_UPDATES {
        return Err(ApiError::resource_exhausted(format!(
            "limit on number of concurrent in-flight updates has been reached ({MAX_IN_FLIGHT_UPDATES})"
        ))
        .into());
    }
    let total = ms
        .state
        .updates
        .values()
        .filter(|u| u.stage != Stage::Rejected as i32)
        .count();
    if total >= MAX_TOTAL_UPDATES {
        return Err(ApiError::failed_precondition(format!(
            "The limit on the total number of distinct updates in this workflow has been reached ({MAX_TOTAL_UPDATES}). \
             Make sure any duplicate updates share an Update ID so the server can deduplicate them, and consider rejecting updates that you aren't going to process. \
             You can also Continue-as-New to avoid this; we recommend you check Continue-as-New Suggested in your Workflow."
        ))
        .into());
    }
    let in_flight_bytes: usize = ms
        .state
        .updates
        .values()
        .filter_map(|u| u.request.as_ref())
        .map(|r| r.encoded_len())
        .sum();
    if in_flight_bytes.saturating_add(update.encoded_len()) >= MAX_IN_FLIGHT_UPDATE_BYTES {
        return Err(ApiError::resource_exhausted(format!(
            "limit on total payload size of in-flight updates has been reached ({MAX_IN_FLIGHT_UPDATE_BYTES} bytes)"
        ))
        .into());
    }
    let sequence = ms.state.next_update_sequence;
    ms.state.next_update_sequence = sequence.saturating_add(1);
    ms.state.updates.insert(
        update_id.clone(),
        pb::UpdateInfo {
            update_id,
            stage: Stage::Admitted as i32,
            request: Some(update),
            sequence,
            ..Default::default()
        },
    );
    // A task scheduled or running delivers the update (a running one through the task that
    // follows it); otherwise a speculative task is created for it alone, unless the run has
    // not had its first task yet (a delayed start): that task will carry it.
    let first_task_pending = ms.state.last_completed_workflow_task_started_event_id == 0;
    if ms.state.workflow_task.is_none() && !first_task_pending {
        ms.schedule_speculative_workflow_task(batch)?;
    }
    let answer = result(&ms);
    ms.persist(batch);
    Ok(answer)
}

pub fn workflow_not_ready(message: &str) -> ApiError {
    ApiError::failed_precondition(message)
        .with_detail(&chronicle_proto::temporal::api::errordetails::v1::WorkflowNotReadyFailure {})
}

/// Marks the admitted updates as sent with the workflow task that starts now (every one still
/// admitted, including those a failed attempt carried: they are delivered again).
pub fn mark_sent(ms: &mut MutableState, started_event_id: i64) {
    for update in ms.state.updates.values_mut() {
        if update.stage == Stage::Admitted as i32 {
            update.sent_started_event_id = started_event_id;
        }
    }
}

/// The request messages of the updates sent with the workflow task started as
/// `started_event_id`, in admission order.
pub fn request_messages(state: &pb::WorkflowExecutionState, started_event_id: i64) -> Vec<Message> {
    let mut sent: Vec<&pb::UpdateInfo> = state
        .updates
        .values()
        .filter(|u| {
            u.stage == Stage::Admitted as i32
                && u.sent_started_event_id == started_event_id
                // (an update admitted by an event reaches the worker in its history)
                && u.admitted_event_id == 0
        })
        .collect();
    sent.sort_by_key(|u| u.sequence);
    sent.into_iter()
        .map(|u| Message {
            id: format!("{}/request", u.update_id),
            protocol_instance_id: u.update_id.clone(),
            // As Temporal: the event before the task's Started event, after which SDKs apply
            // the update.
            sequencing_id: Some(SequencingId::EventId(started_event_id - 1)),
            body: Some(chronicle_proto::wkt::Any {
                type_url: format!("{TYPE_URL_PREFIX}temporal.api.update.v1.Request"),
                value: u.request.clone().unwrap_or_default().encode_to_vec(),
            }),
        })
        .collect()
}

/// The worker's messages of one completion, taken as commands reference them.
pub struct Messages<'a> {
    messages: &'a [Message],
    taken: Vec<bool>,
}

impl<'a> Messages<'a> {
    pub fn new(messages: &'a [Message]) -> Self {
        Self {
            messages,
            taken: vec![false; messages.len()],
        }
    }

    /// The message a ProtocolMessage command names, once.
    pub fn take(&mut self, id: &str) -> Option<&'a Message> {
        let index = self
            .messages
            .iter()
            .enumerate()
            .position(|(i, m)| !self.taken[i] && m.id == id)?;
        self.taken[index] = true;
        Some(&self.messages[index])
    }

    /// Messages no command referenced, in order (Temporal processes them after the commands).
    pub fn take_remaining(&mut self) -> Vec<&'a Message> {
        let mut rest = Vec::new();
        for (i, m) in self.messages.iter().enumerate() {
            if !self.taken[i] {
                self.taken[i] = true;
                rest.push(m);
            }
        }
        rest
    }

    /// Whether every message is a rejection (a speculative task that only rejected leaves
    /// nothing behind).
    pub fn only_rejections(&self) -> bool {
        self.messages
            .iter()
            .all(|m| body_type(m) == Some("temporal.api.update.v1.Rejection"))
    }
}

fn body_type(m: &Message) -> Option<&str> {
    let url = &m.body.as_ref()?.type_url;
    Some(url.rsplit('/').next().unwrap_or(url))
}

fn bad_message(message: impl Into<String>) -> Rejection {
    reject(
        WorkflowTaskFailedCause::BadUpdateWorkflowExecutionMessage,
        message,
    )
}

/// Applies one protocol message of a completion: an Acceptance writes
/// WorkflowExecutionUpdateAccepted, a Response WorkflowExecutionUpdateCompleted, a Rejection
/// nothing (the update completes with the rejection's failure).
pub fn handle_message(
    ms: &mut MutableState,
    message: &Message,
    identity: &str,
) -> Result<(), Rejection> {
    let Some(body) = &message.body else {
        return Err(bad_message(format!(
            "BadUpdateWorkflowExecutionMessage: message {} has no body",
            message.id
        )));
    };
    let update_id = message.protocol_instance_id.clone();
    let Some(mut info) = ms.state.updates.get(&update_id).cloned() else {
        // An update the run no longer has (aborted when the run closed): nothing to record.
        return Ok(());
    };
    let stage = Stage::try_from(info.stage).unwrap_or(Stage::Unspecified);
    let decode_error = |e: prost::DecodeError| {
        bad_message(format!(
            "BadUpdateWorkflowExecutionMessage: undecodable message {}: {e}",
            message.id
        ))
    };
    let invalid_transition = |what: &str| {
        bad_message(format!(
            "BadUpdateWorkflowExecutionMessage: invalid state transition attempted for Update {update_id}: received {what} message while in state {stage:?}"
        ))
    };
    match body_type(message).unwrap_or_default() {
        "temporal.api.update.v1.Acceptance" => {
            let acceptance =
                upd::Acceptance::decode(body.value.as_slice()).map_err(decode_error)?;
            if stage != Stage::Admitted {
                return Err(invalid_transition("Acceptance"));
            }
            // An update admitted by an event has its request there already (Temporal then
            // writes the acceptance without one).
            let accepted_request = if info.admitted_event_id > 0 {
                None
            } else {
                info.request.take().or(acceptance.accepted_request)
            };
            let event_id = ms.add_event(
                EventType::WorkflowExecutionUpdateAccepted,
                Attributes::WorkflowExecutionUpdateAcceptedEventAttributes(
                    h::WorkflowExecutionUpdateAcceptedEventAttributes {
                        protocol_instance_id: update_id.clone(),
                        accepted_request_message_id: format!("{update_id}/request"),
                        accepted_request_sequencing_event_id: acceptance
                            .accepted_request_sequencing_event_id,
                        accepted_request,
                    },
                ),
            );
            info.stage = Stage::Accepted as i32;
            info.accepted_event_id = event_id;
        }
        "temporal.api.update.v1.Rejection" => {
            let rejection = upd::Rejection::decode(body.value.as_slice()).map_err(decode_error)?;
            if stage != Stage::Admitted {
                return Err(invalid_transition("Rejection"));
            }
            info.stage = Stage::Rejected as i32;
            info.request = None;
            info.outcome = Some(failure_outcome(rejection.failure.unwrap_or_default()));
        }
        "temporal.api.update.v1.Response" => {
            let response = upd::Response::decode(body.value.as_slice()).map_err(decode_error)?;
            if stage != Stage::Accepted {
                return Err(invalid_transition("Response"));
            }
            let outcome = response.outcome.unwrap_or_default();
            let event_id = ms.add_event(
                EventType::WorkflowExecutionUpdateCompleted,
                Attributes::WorkflowExecutionUpdateCompletedEventAttributes(
                    h::WorkflowExecutionUpdateCompletedEventAttributes {
                        meta: Some(upd::Meta {
                            update_id: update_id.clone(),
                            identity: response
                                .meta
                                .map(|m| m.identity)
                                .filter(|i| !i.is_empty())
                                .unwrap_or_else(|| identity.to_string()),
                        }),
                        accepted_event_id: info.accepted_event_id,
                        outcome: Some(outcome.clone()),
                    },
                ),
            );
            info.stage = Stage::Completed as i32;
            info.completed_event_id = event_id;
            info.outcome = Some(outcome);
        }
        other => {
            return Err(bad_message(format!(
                "BadUpdateWorkflowExecutionMessage: unsupported message type {other:?}"
            )));
        }
    }
    ms.state.updates.insert(update_id, info);
    Ok(())
}

/// After a completion's commands and messages: updates delivered with this task that the
/// worker neither accepted nor rejected are rejected, as Temporal does (an SDK without update
/// support would otherwise get them again and again). A heartbeat (force-create) keeps them.
pub fn reject_unprocessed(ms: &mut MutableState, started_event_id: i64, heartbeat: bool) {
    if heartbeat {
        return;
    }
    for update in ms.state.updates.values_mut() {
        if update.stage == Stage::Admitted as i32
            && update.sent_started_event_id == started_event_id
        {
            update.stage = Stage::Rejected as i32;
            update.request = None;
            update.outcome = Some(failure_outcome(unprocessed_update_failure()));
        }
    }
    forget_old_rejections(ms);
}

/// Updates admitted and not yet delivered: they need a workflow task.
pub fn has_undelivered(ms: &MutableState) -> bool {
    ms.state
        .updates
        .values()
        .any(|u| u.stage == Stage::Admitted as i32)
}

/// A completion that failed (a bad command or message): the updates this task carried are
/// dropped, and their waiters get Temporal's "unexpected workflow task failure" error (the
/// update is gone from a running run). Updates that arrived meanwhile stay admitted.
pub fn on_task_failed_in_completion(ms: &mut MutableState, started_event_id: i64) {
    ms.state.updates.retain(|_, u| {
        !(u.stage == Stage::Admitted as i32 && u.sent_started_event_id == started_event_id)
    });
}

/// The run closed: admitted updates are dropped (their waiters answer by the close: a retryable
/// error for continue-as-new, so the SDK retries on the new run, else Temporal's
/// "aborted by closing workflow"), and accepted ones complete with Temporal's failure.
pub fn on_close(ms: &mut MutableState) {
    // Callers add the close event first: it names the next run, if any.
    ms.state.closed_into_next_run = ms.new_events.last().is_some_and(|e| {
        matches!(
            &e.attributes,
            Some(Attributes::WorkflowExecutionContinuedAsNewEventAttributes(_))
        ) || matches!(
            &e.attributes,
            Some(Attributes::WorkflowExecutionFailedEventAttributes(a)) if !a.new_execution_run_id.is_empty()
        ) || matches!(
            &e.attributes,
            Some(Attributes::WorkflowExecutionTimedOutEventAttributes(a)) if !a.new_execution_run_id.is_empty()
        ) || matches!(
            &e.attributes,
            Some(Attributes::WorkflowExecutionCompletedEventAttributes(a)) if !a.new_execution_run_id.is_empty()
        )
    });
    ms.state
        .updates
        .retain(|_, u| u.stage != Stage::Admitted as i32);
    for update in ms.state.updates.values_mut() {
        if update.stage == Stage::Accepted as i32 {
            update.stage = Stage::Completed as i32;
            update.outcome = Some(failure_outcome(accepted_update_completed_workflow_failure()));
        }
    }
}

/// The error for an update that the run dropped, by how the run ended.
pub fn dropped_update_error(state: &pb::WorkflowExecutionState) -> ApiError {
    if state.status == WorkflowExecutionStatus::Running as i32 {
        workflow_not_ready(
            "Unable to perform workflow execution update due to unexpected workflow task failure.",
        )
    } else if state.status == WorkflowExecutionStatus::ContinuedAsNew as i32
        || state.closed_into_next_run
    {
        // Temporal's ErrWorkflowClosing: retryable, the SDK sends the update again (to the
        // new run when it named no run).
        ApiError::resource_exhausted(
            "workflow operation can not be applied because workflow is closing",
        )
        .with_detail(
            &chronicle_proto::temporal::api::errordetails::v1::ResourceExhaustedFailure {
                cause:
                    chronicle_proto::temporal::api::enums::v1::ResourceExhaustedCause::BusyWorkflow
                        as i32,
                scope: chronicle_proto::temporal::api::enums::v1::ResourceExhaustedScope::Namespace
                    as i32,
            },
        )
    } else {
        ApiError::not_found("workflow update was aborted by closing workflow")
    }
}

/// Keeps at most `MAX_KEPT_REJECTIONS` rejected updates (the oldest admitted go first): they
/// only serve waiters that have had every change since.
fn forget_old_rejections(ms: &mut MutableState) {
    let mut rejected: Vec<(i64, String)> = ms
        .state
        .updates
        .values()
        .filter(|u| u.stage == Stage::Rejected as i32)
        .map(|u| (u.sequence, u.update_id.clone()))
        .collect();
    if rejected.len() <= MAX_KEPT_REJECTIONS {
        return;
    }
    rejected.sort();
    let excess = rejected.len() - MAX_KEPT_REJECTIONS;
    for (_, id) in rejected.into_iter().take(excess) {
        ms.state.updates.remove(&id);
    }
}

/// Whether a speculative task's completion can leave no trace, as Temporal's
/// `skipWorkflowTaskCompletedEvent`: no commands, not a heartbeat, only rejections, and no
/// events after the previous task that this one carried.
pub fn can_discard_speculative(
    ms: &MutableState,
    task: &pb::WorkflowTaskInfo,
    request: &chronicle_proto::temporal::api::workflowservice::v1::RespondWorkflowTaskCompletedRequest,
) -> bool {
    // Events after the previous task's Completed event that this task shipped to the worker.
    let shipped = ms.state.next_event_id.saturating_sub(
        ms.state
            .last_completed_workflow_task_started_event_id
            .saturating_add(2),
    );
    // Only SDKs that take the same events again may lose a task that shipped some, and never
    // more than Temporal's history.discardSpeculativeWorkflowTaskMaximumEventsCount of them.
    let events_allow = if request
        .capabilities
        .as_ref()
        .is_some_and(|c| c.discard_speculative_workflow_task_with_events)
    {
        shipped <= DISCARD_SPECULATIVE_MAX_EVENTS
    } else {
        shipped <= 0
    };
    task.speculative
        && request.commands.is_empty()
        && !request.force_create_new_workflow_task
        && Messages::new(&request.messages).only_rejections()
        && events_allow
}

/// A ProtocolMessage command: the message it names is applied here, in command order.
pub(super) fn protocol_message_command(
    ms: &mut MutableState,
    ctx: &mut super::workflow_task::CommandContext,
    message_id: &str,
) -> Result<(), Rejection> {
    let Some(message) = ctx.messages.take(message_id) else {
        return Err(reject(
            WorkflowTaskFailedCause::BadUpdateWorkflowExecutionMessage,
            format!("ProtocolMessageCommand referenced absent message ID {message_id:?}"),
        ));
    };
    handle_message(ms, message, ctx.identity)
}

/// After a completion's commands (the run still open): the messages no command referenced, then
/// the rejection of updates the worker ignored.
pub(super) fn after_commands(
    ms: &mut MutableState,
    ctx: &mut super::workflow_task::CommandContext,
    task: &pb::WorkflowTaskInfo,
    request: &chronicle_proto::temporal::api::workflowservice::v1::RespondWorkflowTaskCompletedRequest,
) -> Result<(), Rejection> {
    for message in ctx.messages.take_remaining() {
        handle_message(ms, message, ctx.identity)?;
    }
    reject_unprocessed(
        ms,
        task.started_event_id,
        request.force_create_new_workflow_task,
    );
    Ok(())
}

/// Completes a speculative task that only rejected updates without a trace in history: no
/// Scheduled, Started or Completed event; the worker is told to roll its history back to the
/// last completed task (`reset_history_event_id`). Events buffered meanwhile are written now and
/// get a task; updates still undelivered get a new speculative one.
pub fn discard_speculative(
    batch: &mut ShardBatch,
    ms: &mut MutableState,
    task: &pb::WorkflowTaskInfo,
    request: &chronicle_proto::temporal::api::workflowservice::v1::RespondWorkflowTaskCompletedRequest,
) -> Result<command_result::Result, Rejection> {
    let mut messages = Messages::new(&request.messages);
    for message in messages.take_remaining() {
        handle_message(ms, message, &request.identity)?;
    }
    reject_unprocessed(ms, task.started_event_id, false);
    ms.state.workflow_task = None;
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
    let had_buffered = !ms.state.buffered_events.is_empty();
    ms.flush_buffered_events();
    if had_buffered {
        ms.schedule_workflow_task(batch, 1)?;
    } else if has_undelivered(ms) {
        ms.schedule_speculative_workflow_task(batch)?;
    }
    Ok(command_result::Result::CompleteWorkflowTask(
        cmd::CompleteWorkflowTaskResult {
            eager_activities: Vec::new(),
            reset_history_event_id: ms.state.last_completed_workflow_task_started_event_id,
        },
    ))
}
