//! Asynchronous Nexus operations on the caller's run (docs/nexus.md): a start answered with an
//! operation token records NexusOperationStarted and the operation stays pending until its
//! completion callback arrives (`CompleteNexusOperation`, delivered when the handler's run
//! closes); RequestCancelNexusOperation records NexusOperationCancelRequested and, once the
//! operation started, offers a cancel request to the handler, whose answer is recorded as
//! NexusOperationCancelRequestCompleted or ...Failed.

use chronicle_proto::chronicle::history::v1::{
    self as cmd, command_result, complete_nexus_operation, respond_nexus_task,
};
use chronicle_proto::chronicle::persistence::v1 as pb;
use chronicle_proto::temporal::api::command::v1::RequestCancelNexusOperationCommandAttributes;
use chronicle_proto::temporal::api::common::v1::{Link, link};
use chronicle_proto::temporal::api::enums::v1::{EventType, WorkflowTaskFailedCause};
use chronicle_proto::temporal::api::failure::v1::{
    CanceledFailureInfo, Failure, failure::FailureInfo,
};
use chronicle_proto::temporal::api::history::v1 as h;
use chronicle_proto::temporal::api::history::v1::history_event::Attributes;
use chronicle_proto::temporal::api::nexus::v1 as nexus;
use chronicle_proto::wkt::Timestamp;
use chronicle_storage::ShardBatch;
use chronicle_types::ApiError;

use super::nexus_operation::{Outcome, close, handler_failure, operation_failure};
use super::workflow_task::{CommandContext, Rejection, reject};
use super::{ApplyError, ApplyResult};
use crate::mutable_state::MutableState;

/// Adds (or buffers) an event carrying links.
pub(super) fn add_with_links(
    ms: &mut MutableState,
    event_type: EventType,
    attributes: Attributes,
    links: Vec<Link>,
    worker_may_ignore: bool,
) {
    let appended = ms.add_or_buffer_event(event_type, attributes).is_some();
    let event = if appended {
        ms.new_events.last_mut()
    } else {
        ms.state.buffered_events.last_mut()
    };
    if let Some(event) = event {
        if appended {
            // The event's size was counted before its links were set.
            let extra: usize = links.iter().map(prost::Message::encoded_len).sum();
            ms.state.history_size_bytes += extra as i64;
        }
        event.links = links;
        event.worker_may_ignore = worker_may_ignore;
    }
}

/// The operation started asynchronously: NexusOperationStarted (with the handler's links), the
/// start request is no longer offered, and a cancel requested meanwhile is sent now.
pub(super) fn record_started(
    batch: &mut ShardBatch,
    ms: &mut MutableState,
    op: &pb::NexusOperationInfo,
    operation_token: String,
    links: Vec<Link>,
    start_time: Option<Timestamp>,
) -> ApplyResult<()> {
    add_with_links(
        ms,
        EventType::NexusOperationStarted,
        Attributes::NexusOperationStartedEventAttributes(
            #[allow(deprecated)]
            h::NexusOperationStartedEventAttributes {
                scheduled_event_id: op.scheduled_event_id,
                operation_id: operation_token.clone(),
                request_id: op.request_id.clone(),
                operation_token: operation_token.clone(),
            },
        ),
        links,
        false,
    );
    if op.outbox_task_id != 0 {
        batch.delete_outbox(op.outbox_task_id);
    }
    let now = ms.now;
    let entry = ms
        .state
        .nexus_operations
        .get_mut(&op.scheduled_event_id)
        .ok_or_else(|| ApplyError::Rejected(super::nexus_operation::operation_not_found()))?;
    entry.outbox_task_id = 0;
    // An empty token (a completion that came before the start answer) still marks it started.
    entry.operation_token = operation_token;
    entry.started_time = Some(start_time.unwrap_or(now));
    entry.last_attempt_failure = None;
    if entry.cancel_state == pb::NexusCancelationState::Pending as i32 {
        let entry = entry.clone();
        schedule_cancel(batch, ms, &entry)?;
    }
    ms.schedule_workflow_task_if_needed(batch)?;
    Ok(())
}

/// Offers the operation's cancel request to its handler (an outbox row).
fn schedule_cancel(
    batch: &mut ShardBatch,
    ms: &mut MutableState,
    op: &pb::NexusOperationInfo,
) -> Result<(), chronicle_storage::StorageError> {
    let id = batch.put_outbox(&pb::OutboxTask {
        kind: pb::outbox_task::Kind::NexusCancel as i32,
        namespace_id: ms.state.namespace_id.clone(),
        workflow_id: ms.state.workflow_id.clone(),
        run_id: ms.state.run_id.clone(),
        task_queue: op.task_queue.clone(),
        scheduled_event_id: op.scheduled_event_id,
        attempt: 1,
        target_namespace_id: op.target_namespace_id.clone(),
        ..Default::default()
    })?;
    if let Some(entry) = ms.state.nexus_operations.get_mut(&op.scheduled_event_id) {
        entry.cancel_outbox_task_id = id;
        entry.cancel_attempt = 1;
        entry.cancel_state = pb::NexusCancelationState::Scheduled as i32;
    }
    Ok(())
}

fn bad_cancel(message: String) -> Rejection {
    reject(
        WorkflowTaskFailedCause::BadRequestCancelNexusOperationAttributes,
        message,
    )
}

/// Whether a close event of the operation is buffered (it closed while this task ran).
fn close_buffered(ms: &MutableState, scheduled_event_id: i64) -> bool {
    ms.state.buffered_events.iter().any(|e| {
        matches!(
            &e.attributes,
            Some(Attributes::NexusOperationCompletedEventAttributes(a)) if a.scheduled_event_id == scheduled_event_id
        ) || matches!(
            &e.attributes,
            Some(Attributes::NexusOperationFailedEventAttributes(a)) if a.scheduled_event_id == scheduled_event_id
        ) || matches!(
            &e.attributes,
            Some(Attributes::NexusOperationCanceledEventAttributes(a)) if a.scheduled_event_id == scheduled_event_id
        ) || matches!(
            &e.attributes,
            Some(Attributes::NexusOperationTimedOutEventAttributes(a)) if a.scheduled_event_id == scheduled_event_id
        )
    })
}

/// Applies a RequestCancelNexusOperation command.
pub(super) fn request_cancel(
    batch: &mut ShardBatch,
    ms: &mut MutableState,
    a: &RequestCancelNexusOperationCommandAttributes,
    ctx: &mut CommandContext,
) -> Result<(), Rejection> {
    let id = a.scheduled_event_id;
    let op = ms.state.nexus_operations.get(&id).cloned();
    match &op {
        None if !close_buffered(ms, id) => {
            return Err(bad_cancel(format!(
                "requested cancelation for a non-existing or already completed operation with scheduled event ID of {id}"
            )));
        }
        Some(op) if op.cancel_requested_event_id != 0 => {
            return Err(bad_cancel(format!(
                "cancelation was already requested for an operation with scheduled event ID {id}"
            )));
        }
        _ => {}
    }
    // Written even when the operation's close is buffered (the worker could not know): the
    // close follows it in the history.
    let requested_id = ms.add_event(
        EventType::NexusOperationCancelRequested,
        Attributes::NexusOperationCancelRequestedEventAttributes(
            h::NexusOperationCancelRequestedEventAttributes {
                scheduled_event_id: id,
                workflow_task_completed_event_id: ctx.completed_id,
            },
        ),
    );
    let Some(op) = op else {
        return Ok(());
    };
    let now = ms.now;
    if let Some(entry) = ms.state.nexus_operations.get_mut(&id) {
        entry.cancel_requested_event_id = requested_id;
        entry.cancel_requested_time = Some(now);
        entry.cancel_state = pb::NexusCancelationState::Pending as i32;
    }
    // Sent once the operation started: before, the handler has no operation to cancel.
    if op.started_time.is_some() {
        schedule_cancel(batch, ms, &op).map_err(Rejection::Storage)?;
    }
    Ok(())
}

/// The handler's answer to a cancel request: accepted (CancelRequestCompleted), refused for
/// good (CancelRequestFailed), or retried. The operation's outcome still comes by callback.
pub(super) fn record_cancel_answer(
    batch: &mut ShardBatch,
    ms: &mut MutableState,
    op: &pb::NexusOperationInfo,
    answer: respond_nexus_task::Outcome,
) -> ApplyResult<()> {
    let accepted = matches!(
        &answer,
        respond_nexus_task::Outcome::Completed(r)
            if matches!(
                r.response.as_ref().and_then(|r| r.variant.as_ref()),
                Some(nexus::response::Variant::CancelOperation(_))
            )
    );
    let outcome = if accepted {
        None
    } else {
        Some(handler_failure(answer))
    };
    let entry = ms
        .state
        .nexus_operations
        .get_mut(&op.scheduled_event_id)
        .ok_or_else(|| ApplyError::Rejected(super::nexus_operation::operation_not_found()))?;
    match outcome {
        Some(Outcome::Retry(failure)) => {
            entry.cancel_attempt = entry.cancel_attempt.saturating_add(1);
            entry.cancel_last_failure = Some(failure);
            return Ok(());
        }
        None => {
            entry.cancel_state = pb::NexusCancelationState::Succeeded as i32;
            entry.cancel_outbox_task_id = 0;
            entry.cancel_last_failure = None;
            add_with_links(
                ms,
                EventType::NexusOperationCancelRequestCompleted,
                Attributes::NexusOperationCancelRequestCompletedEventAttributes(
                    h::NexusOperationCancelRequestCompletedEventAttributes {
                        requested_event_id: op.cancel_requested_event_id,
                        workflow_task_completed_event_id: 0,
                        scheduled_event_id: op.scheduled_event_id,
                    },
                ),
                Vec::new(),
                true,
            );
        }
        Some(other) => {
            let failure = match other {
                Outcome::Failed(f) | Outcome::Canceled(f) => f,
                _ => Failure {
                    message: "the handler refused the cancel request".into(),
                    ..Default::default()
                },
            };
            entry.cancel_state = pb::NexusCancelationState::Failed as i32;
            entry.cancel_outbox_task_id = 0;
            entry.cancel_last_failure = Some(failure.clone());
            add_with_links(
                ms,
                EventType::NexusOperationCancelRequestFailed,
                Attributes::NexusOperationCancelRequestFailedEventAttributes(
                    h::NexusOperationCancelRequestFailedEventAttributes {
                        requested_event_id: op.cancel_requested_event_id,
                        workflow_task_completed_event_id: 0,
                        failure: Some(failure),
                        scheduled_event_id: op.scheduled_event_id,
                    },
                ),
                Vec::new(),
                true,
            );
        }
    }
    if op.cancel_outbox_task_id != 0 {
        batch.delete_outbox(op.cancel_outbox_task_id);
    }
    ms.schedule_workflow_task_if_needed(batch)?;
    Ok(())
}

/// The completion callback of an operation arrived (its handler's run closed): the operation
/// closes with its outcome, after a Started event if the start answer has not come yet.
pub fn complete(
    batch: &mut ShardBatch,
    now: Timestamp,
    c: cmd::CompleteNexusOperation,
) -> ApplyResult<command_result::Result> {
    let not_found = || ApplyError::Rejected(super::nexus_operation::operation_not_found());
    let target = c
        .target
        .ok_or_else(|| ApiError::invalid_argument("the callback names no operation"))?;
    let mut ms = match super::load_run(
        batch,
        now,
        &target.namespace_id,
        &target.workflow_id,
        &target.run_id,
    ) {
        Ok(ms) => ms,
        Err(ApplyError::Rejected(_)) => return Err(not_found()),
        Err(e) => return Err(e),
    };
    if !ms.is_running() {
        return Err(not_found());
    }
    let Some(mut op) = ms
        .state
        .nexus_operations
        .get(&target.scheduled_event_id)
        .cloned()
    else {
        return Err(not_found());
    };
    if op.request_id != target.request_id {
        return Err(not_found());
    }
    let outcome = c.outcome;
    if outcome.is_none() && !c.succeeded {
        return Err(ApiError::invalid_argument("the callback carries no outcome").into());
    }
    if op.started_time.is_none() {
        record_started(
            batch,
            &mut ms,
            &op,
            c.operation_token,
            c.links,
            c.start_time,
        )?;
        op = ms
            .state
            .nexus_operations
            .get(&target.scheduled_event_id)
            .cloned()
            .ok_or_else(not_found)?;
    }
    let failed_message = "nexus operation completed unsuccessfully";
    let (event_type, attributes) = match outcome {
        None | Some(complete_nexus_operation::Outcome::Result(_)) => {
            let result = match outcome {
                Some(complete_nexus_operation::Outcome::Result(p)) => Some(p),
                _ => None,
            };
            (
                EventType::NexusOperationCompleted,
                Attributes::NexusOperationCompletedEventAttributes(
                    h::NexusOperationCompletedEventAttributes {
                        scheduled_event_id: op.scheduled_event_id,
                        result,
                        request_id: op.request_id.clone(),
                    },
                ),
            )
        }
        Some(complete_nexus_operation::Outcome::Failure(cause)) => (
            EventType::NexusOperationFailed,
            Attributes::NexusOperationFailedEventAttributes(
                h::NexusOperationFailedEventAttributes {
                    scheduled_event_id: op.scheduled_event_id,
                    failure: Some(operation_failure(&op, failed_message, cause)),
                    request_id: op.request_id.clone(),
                },
            ),
        ),
        Some(complete_nexus_operation::Outcome::Canceled(cause)) => {
            // As Temporal: a canceled outcome's cause is a canceled failure.
            let cause = if matches!(
                cause.failure_info,
                Some(FailureInfo::CanceledFailureInfo(_))
            ) {
                cause
            } else {
                Failure {
                    message: cause.message,
                    stack_trace: cause.stack_trace,
                    failure_info: Some(FailureInfo::CanceledFailureInfo(
                        CanceledFailureInfo::default(),
                    )),
                    cause: cause.cause,
                    ..Default::default()
                }
            };
            (
                EventType::NexusOperationCanceled,
                Attributes::NexusOperationCanceledEventAttributes(
                    h::NexusOperationCanceledEventAttributes {
                        scheduled_event_id: op.scheduled_event_id,
                        failure: Some(operation_failure(&op, failed_message, cause)),
                        request_id: op.request_id.clone(),
                    },
                ),
            )
        }
    };
    close(batch, &mut ms, &op, event_type, attributes)?;
    ms.persist(batch);
    Ok(super::ok())
}

/// Temporal's link to an event of a workflow run.
pub fn workflow_event_link(
    namespace: &str,
    workflow_id: &str,
    run_id: &str,
    event_id: i64,
    event_type: EventType,
) -> Link {
    Link {
        variant: Some(link::Variant::WorkflowEvent(link::WorkflowEvent {
            namespace: namespace.to_string(),
            workflow_id: workflow_id.to_string(),
            run_id: run_id.to_string(),
            reference: Some(link::workflow_event::Reference::EventRef(
                link::workflow_event::EventReference {
                    event_id,
                    event_type: event_type as i32,
                },
            )),
        })),
    }
}

/// Temporal's link to the event a request made in a workflow run, by the request's ID.
pub fn request_id_link(
    namespace: &str,
    workflow_id: &str,
    run_id: &str,
    request_id: &str,
    event_type: EventType,
) -> Link {
    Link {
        variant: Some(link::Variant::WorkflowEvent(link::WorkflowEvent {
            namespace: namespace.to_string(),
            workflow_id: workflow_id.to_string(),
            run_id: run_id.to_string(),
            reference: Some(link::workflow_event::Reference::RequestIdRef(
                link::workflow_event::RequestIdReference {
                    request_id: request_id.to_string(),
                    event_type: event_type as i32,
                },
            )),
        })),
    }
}

/// The Temporal links among a handler's Nexus links (those naming workflow events; others are
/// dropped, as Temporal drops links it cannot convert).
pub(super) fn links_from_nexus(links: &[nexus::Link]) -> Vec<Link> {
    links
        .iter()
        .filter_map(crate::nexus_links::parse_workflow_event)
        .collect()
}
