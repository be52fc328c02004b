//! Nexus operations a workflow calls (docs/nexus.md): a ScheduleNexusOperation command writes
//! NexusOperationScheduled and an outbox row that offers the start request to the endpoint's
//! handler queue; the handler worker's answer closes the operation with Completed or Failed (a
//! retryable handler error leaves it pending and its request is offered again); the
//! schedule-to-close timer closes it with TimedOut.

use chronicle_proto::chronicle::history::v1::{self as cmd, command_result, respond_nexus_task};
use chronicle_proto::chronicle::persistence::v1 as pb;
use chronicle_proto::temporal::api::command::v1::ScheduleNexusOperationCommandAttributes;
use chronicle_proto::temporal::api::enums::v1::{
    EventType, NexusHandlerErrorRetryBehavior, TimeoutType, WorkflowTaskFailedCause,
};
use chronicle_proto::temporal::api::failure::v1::{
    ApplicationFailureInfo, Failure, NexusHandlerFailureInfo, NexusOperationFailureInfo,
    TimeoutFailureInfo, failure::FailureInfo,
};
use chronicle_proto::temporal::api::history::v1 as h;
use chronicle_proto::temporal::api::history::v1::history_event::Attributes;
use chronicle_proto::temporal::api::nexus::v1 as nexus;
use chronicle_proto::wkt::Timestamp;
use chronicle_storage::ShardBatch;
use chronicle_types::ApiError;
use chronicle_types::time::opt_duration_millis;

use super::workflow_task::{CommandContext, Rejection, reject};
use super::{ApplyResult, load_token_run};
use crate::mutable_state::MutableState;

/// Temporal's default limit of operations a run may have pending at once
/// (`component.nexusoperations.limit.operation.concurrency`).
pub const MAX_PENDING_NEXUS_OPERATIONS: usize = 30;

/// Temporal's default limit of an operation token's length
/// (`component.nexusoperations.limit.operation.token.length`).
pub const MAX_OPERATION_TOKEN_LENGTH: usize = 4096;

/// What the leader resolved for a completion's ScheduleNexusOperation commands.
pub(super) struct Resolved<'a> {
    /// Endpoints found by name (a name absent here was not found).
    pub endpoints: &'a [pb::NexusEndpointRecord],
    /// Request IDs, one per ScheduleNexusOperation command in order.
    pub request_ids: &'a [String],
    /// How many ScheduleNexusOperation commands were applied so far.
    pub used: usize,
}

/// Temporal names the cause at the start of this failure's message.
fn bad(message: impl std::fmt::Display) -> Rejection {
    reject(
        WorkflowTaskFailedCause::BadScheduleNexusOperationAttributes,
        format!("BadScheduleNexusOperationAttributes: {message}"),
    )
}

/// Applies a ScheduleNexusOperation command.
pub(super) fn schedule(
    batch: &mut ShardBatch,
    ms: &mut MutableState,
    a: &ScheduleNexusOperationCommandAttributes,
    ctx: &mut CommandContext,
) -> Result<(), Rejection> {
    let request_id = ctx
        .nexus
        .request_ids
        .get(ctx.nexus.used)
        .cloned()
        .unwrap_or_default();
    ctx.nexus.used += 1;
    if a.endpoint.is_empty() {
        return Err(bad("endpoint name is empty"));
    }
    if a.service.is_empty() {
        return Err(bad(
            "ScheduleNexusOperationCommandAttributes.Service is not set",
        ));
    }
    if a.operation.is_empty() {
        return Err(bad(
            "ScheduleNexusOperationCommandAttributes.Operation is not set",
        ));
    }
    let Some(endpoint) = ctx
        .nexus
        .endpoints
        .iter()
        .find(|e| e.spec.as_ref().is_some_and(|s| s.name == a.endpoint))
    else {
        return Err(bad(format!("endpoint \"{}\" not found", a.endpoint)));
    };
    let task_queue = endpoint
        .spec
        .as_ref()
        .and_then(|s| s.target.as_ref())
        .and_then(|t| t.variant.as_ref())
        .and_then(|v| match v {
            nexus::endpoint_target::Variant::Worker(w) => Some(w.task_queue.clone()),
            nexus::endpoint_target::Variant::External(_) => None,
        });
    let Some(task_queue) = task_queue else {
        // Chronicle makes no outbound HTTP calls (docs/nexus.md).
        return Err(reject(
            WorkflowTaskFailedCause::FeatureDisabled,
            format!(
                "endpoint \"{}\" has an external target, which Chronicle does not call",
                a.endpoint
            ),
        ));
    };
    if request_id.is_empty() {
        return Err(bad("no request ID was chosen for the operation"));
    }
    if ms.state.nexus_operations.len() >= MAX_PENDING_NEXUS_OPERATIONS {
        return Err(reject(
            WorkflowTaskFailedCause::PendingNexusOperationsLimitExceeded,
            format!(
                "workflow has reached the pending nexus operation limit of {MAX_PENDING_NEXUS_OPERATIONS} for this namespace"
            ),
        ));
    }
    let mut to_close = opt_duration_millis(a.schedule_to_close_timeout.as_ref()).max(0);
    // As Temporal, the operation cannot outlive the run.
    let run_ms = opt_duration_millis(ms.state.workflow_run_timeout.as_ref());
    if run_ms > 0 && (to_close == 0 || to_close > run_ms) {
        to_close = run_ms;
    }
    let scheduled_id = ms.add_event(
        EventType::NexusOperationScheduled,
        Attributes::NexusOperationScheduledEventAttributes(
            h::NexusOperationScheduledEventAttributes {
                endpoint: a.endpoint.clone(),
                service: a.service.clone(),
                operation: a.operation.clone(),
                input: a.input.clone(),
                schedule_to_close_timeout: duration(to_close),
                nexus_header: a.nexus_header.clone(),
                workflow_task_completed_event_id: ctx.completed_id,
                request_id: request_id.clone(),
                endpoint_id: endpoint.id.clone(),
                ..Default::default()
            },
        ),
    );
    let outbox = batch
        .put_outbox(&pb::OutboxTask {
            kind: pb::outbox_task::Kind::NexusTask as i32,
            namespace_id: ms.state.namespace_id.clone(),
            workflow_id: ms.state.workflow_id.clone(),
            run_id: ms.state.run_id.clone(),
            task_queue: task_queue.clone(),
            scheduled_event_id: scheduled_id,
            attempt: 1,
            target_namespace_id: endpoint.target_namespace_id.clone(),
            ..Default::default()
        })
        .map_err(Rejection::Storage)?;
    let timeout_timer_key = if to_close > 0 {
        batch
            .put_timer(
                ms.now_ms().saturating_add(to_close),
                &pb::TimerTask {
                    kind: pb::timer_task::Kind::NexusOperationTimeout as i32,
                    namespace_id: ms.state.namespace_id.clone(),
                    workflow_id: ms.state.workflow_id.clone(),
                    run_id: ms.state.run_id.clone(),
                    event_id: scheduled_id,
                    attempt: 0,
                    timeout_type: TimeoutType::ScheduleToClose as i32,
                    timer_id: String::new(),
                },
            )
            .map_err(Rejection::Storage)?
    } else {
        Vec::new()
    };
    ms.state.nexus_operations.insert(
        scheduled_id,
        pb::NexusOperationInfo {
            scheduled_event_id: scheduled_id,
            endpoint: a.endpoint.clone(),
            endpoint_id: endpoint.id.clone(),
            service: a.service.clone(),
            operation: a.operation.clone(),
            input: a.input.clone(),
            // Sorted, so every replica stores the same bytes.
            nexus_header: a.nexus_header.clone().into_iter().collect(),
            request_id,
            schedule_to_close_timeout: duration(to_close),
            scheduled_time: Some(ms.now),
            target_namespace_id: endpoint.target_namespace_id.clone(),
            task_queue,
            outbox_task_id: outbox,
            timeout_timer_key,
            attempt: 1,
            ..Default::default()
        },
    );
    Ok(())
}

fn duration(ms: i64) -> Option<chronicle_proto::wkt::Duration> {
    (ms > 0).then(|| chronicle_proto::wkt::Duration {
        seconds: ms / 1000,
        nanos: i32::try_from((ms % 1000) * 1_000_000).unwrap_or(0),
    })
}

/// How a handler's answer closes (or keeps) its operation.
pub(super) enum Outcome {
    /// The handler started the operation asynchronously: its token and links.
    Started(String, Vec<nexus::Link>),
    /// A result, and the handler's links (recorded on the Completed event).
    Completed(
        Option<chronicle_proto::temporal::api::common::v1::Payload>,
        Vec<nexus::Link>,
    ),
    /// The operation failed (an operation error, or a non-retryable handler error): the cause.
    Failed(Failure),
    Canceled(Failure),
    /// A retryable handler error: the request is offered again.
    Retry(Failure),
}

/// The nexus-level failure a handler sent in the deprecated shapes, as a Temporal failure.
fn from_nexus_failure(f: Option<&nexus::Failure>, info: FailureInfo) -> Failure {
    let f = f.cloned().unwrap_or_default();
    Failure {
        message: f.message,
        stack_trace: f.stack_trace,
        failure_info: Some(info),
        ..Default::default()
    }
}

/// Nexus's default: these handler error types are retried, the others are not.
fn retryable_by_type(error_type: &str) -> bool {
    matches!(
        error_type,
        "INTERNAL" | "UNAVAILABLE" | "UPSTREAM_TIMEOUT" | "RESOURCE_EXHAUSTED"
    )
}

// The deprecated shapes are what SDKs that do not take Temporal failures still send.
#[allow(deprecated)]
fn outcome_of(answer: respond_nexus_task::Outcome) -> Outcome {
    use nexus::start_operation_response::Variant as Start;
    match answer {
        respond_nexus_task::Outcome::Completed(r) => {
            let start = match r.response.and_then(|r| r.variant) {
                Some(nexus::response::Variant::StartOperation(s)) => s.variant,
                _ => None,
            };
            match start {
                Some(Start::SyncSuccess(sync)) => Outcome::Completed(sync.payload, sync.links),
                Some(Start::Failure(f)) => {
                    if matches!(f.failure_info, Some(FailureInfo::CanceledFailureInfo(_))) {
                        Outcome::Canceled(f)
                    } else {
                        Outcome::Failed(f)
                    }
                }
                Some(Start::OperationError(e)) => {
                    let info = FailureInfo::ApplicationFailureInfo(ApplicationFailureInfo {
                        non_retryable: true,
                        ..Default::default()
                    });
                    let failure = from_nexus_failure(e.failure.as_ref(), info);
                    if e.operation_state == "canceled" {
                        Outcome::Canceled(failure)
                    } else {
                        Outcome::Failed(failure)
                    }
                }
                // The outcome comes later, by the completion callback (docs/nexus.md).
                Some(Start::AsyncSuccess(a)) => {
                    let token = if a.operation_token.is_empty() {
                        a.operation_id
                    } else {
                        a.operation_token
                    };
                    Outcome::Started(token, a.links)
                }
                None => Outcome::Retry(Failure {
                    message: "the handler's response has no start operation result".into(),
                    ..Default::default()
                }),
            }
        }
        failed @ respond_nexus_task::Outcome::Failed(_) => handler_failure(failed),
    }
}

/// A handler's RespondNexusTaskFailed: retried or final, as its handler error says.
#[allow(deprecated)]
pub(super) fn handler_failure(answer: respond_nexus_task::Outcome) -> Outcome {
    match answer {
        respond_nexus_task::Outcome::Completed(_) => Outcome::Retry(Failure {
            message: "the handler's response is no failure".into(),
            ..Default::default()
        }),
        respond_nexus_task::Outcome::Failed(r) => {
            let failure = match (r.failure, r.error.as_ref()) {
                (Some(f), _) => f,
                (None, Some(e)) => from_nexus_failure(
                    e.failure.as_ref(),
                    FailureInfo::NexusHandlerFailureInfo(NexusHandlerFailureInfo {
                        r#type: e.error_type.clone(),
                        retry_behavior: e.retry_behavior,
                    }),
                ),
                (None, None) => Failure {
                    message: "handler error".into(),
                    ..Default::default()
                },
            };
            let retryable = match &failure.failure_info {
                Some(FailureInfo::NexusHandlerFailureInfo(info)) => {
                    match NexusHandlerErrorRetryBehavior::try_from(info.retry_behavior) {
                        Ok(NexusHandlerErrorRetryBehavior::Retryable) => true,
                        Ok(NexusHandlerErrorRetryBehavior::NonRetryable) => false,
                        _ => retryable_by_type(&info.r#type),
                    }
                }
                _ => true,
            };
            if retryable {
                Outcome::Retry(failure)
            } else {
                Outcome::Failed(failure)
            }
        }
    }
}

/// The failure an operation closes with: Temporal's wrapper naming the operation, around the
/// handler's cause.
pub(super) fn operation_failure(
    op: &pb::NexusOperationInfo,
    message: &str,
    cause: Failure,
) -> Failure {
    Failure {
        message: message.into(),
        failure_info: Some(FailureInfo::NexusOperationExecutionFailureInfo(
            NexusOperationFailureInfo {
                scheduled_event_id: op.scheduled_event_id,
                endpoint: op.endpoint.clone(),
                service: op.service.clone(),
                operation: op.operation.clone(),
                operation_token: op.operation_token.clone(),
                ..Default::default()
            },
        )),
        cause: Some(Box::new(cause)),
        ..Default::default()
    }
}

pub(super) fn operation_not_found() -> ApiError {
    ApiError::not_found("Nexus operation not found")
}

/// Records a handler worker's answer (RespondNexusTaskCompleted/Failed).
pub fn respond(
    batch: &mut ShardBatch,
    now: Timestamp,
    c: cmd::RespondNexusTask,
) -> ApplyResult<command_result::Result> {
    let (token, mut ms) = load_token_run(batch, now, &c.token)?;
    if !ms.is_running() {
        return Err(ApiError::not_found("workflow execution already completed").into());
    }
    let Some(op) = ms
        .state
        .nexus_operations
        .get(&token.scheduled_event_id)
        .cloned()
    else {
        return Err(operation_not_found().into());
    };
    if op.target_namespace_id != c.handler_namespace_id {
        return Err(ApiError::invalid_argument(
            "Task token does not belong to the request's namespace.",
        )
        .into());
    }
    let Some(answer) = c.outcome else {
        return Err(ApiError::invalid_argument("the Nexus task's answer is missing").into());
    };
    if token.is_nexus_cancel {
        if !token.is_nexus
            || op.cancel_state != pb::NexusCancelationState::Scheduled as i32
            || token.attempt != op.cancel_attempt
        {
            return Err(operation_not_found().into());
        }
        super::nexus_async::record_cancel_answer(batch, &mut ms, &op, answer)?;
        ms.persist(batch);
        return Ok(super::ok());
    }
    // A start answer counts only while the start request is out (not once started).
    if !token.is_nexus || token.attempt != op.attempt || op.started_time.is_some() {
        return Err(operation_not_found().into());
    }
    match outcome_of(answer) {
        Outcome::Started(operation_token, _)
            if operation_token.len() > MAX_OPERATION_TOKEN_LENGTH =>
        {
            // As Temporal: a token over the limit fails the operation for good.
            let cause = Failure {
                message: format!(
                    "invalid operation token: length exceeds allowed limit ({}/{MAX_OPERATION_TOKEN_LENGTH})",
                    operation_token.len()
                ),
                failure_info: Some(FailureInfo::ApplicationFailureInfo(
                    ApplicationFailureInfo {
                        non_retryable: true,
                        ..Default::default()
                    },
                )),
                ..Default::default()
            };
            close(
                batch,
                &mut ms,
                &op,
                EventType::NexusOperationFailed,
                Attributes::NexusOperationFailedEventAttributes(
                    h::NexusOperationFailedEventAttributes {
                        scheduled_event_id: op.scheduled_event_id,
                        failure: Some(operation_failure(
                            &op,
                            "nexus operation completed unsuccessfully",
                            cause,
                        )),
                        request_id: op.request_id.clone(),
                    },
                ),
            )?
        }
        Outcome::Started(operation_token, links) => {
            let links = super::nexus_async::links_from_nexus(&links);
            super::nexus_async::record_started(batch, &mut ms, &op, operation_token, links, None)?;
        }
        Outcome::Retry(failure) => {
            // The row stays: the processor offers the request again (attempt + 1).
            let entry = ms
                .state
                .nexus_operations
                .get_mut(&op.scheduled_event_id)
                .expect("found above");
            entry.attempt = entry.attempt.saturating_add(1);
            entry.last_attempt_failure = Some(failure);
        }
        Outcome::Completed(result, links) => close_with_links(
            batch,
            &mut ms,
            &op,
            super::nexus_async::links_from_nexus(&links),
            EventType::NexusOperationCompleted,
            Attributes::NexusOperationCompletedEventAttributes(
                h::NexusOperationCompletedEventAttributes {
                    scheduled_event_id: op.scheduled_event_id,
                    result,
                    request_id: op.request_id.clone(),
                },
            ),
        )?,
        Outcome::Failed(cause) => close(
            batch,
            &mut ms,
            &op,
            EventType::NexusOperationFailed,
            Attributes::NexusOperationFailedEventAttributes(
                h::NexusOperationFailedEventAttributes {
                    scheduled_event_id: op.scheduled_event_id,
                    failure: Some(operation_failure(
                        &op,
                        "nexus operation completed unsuccessfully",
                        cause,
                    )),
                    request_id: op.request_id.clone(),
                },
            ),
        )?,
        Outcome::Canceled(cause) => close(
            batch,
            &mut ms,
            &op,
            EventType::NexusOperationCanceled,
            Attributes::NexusOperationCanceledEventAttributes(
                h::NexusOperationCanceledEventAttributes {
                    scheduled_event_id: op.scheduled_event_id,
                    failure: Some(operation_failure(
                        &op,
                        "nexus operation completed unsuccessfully",
                        cause,
                    )),
                    request_id: op.request_id.clone(),
                },
            ),
        )?,
    }
    ms.persist(batch);
    Ok(super::ok())
}

/// Closes an operation with its event and wakes the workflow.
pub(super) fn close(
    batch: &mut ShardBatch,
    ms: &mut MutableState,
    op: &pb::NexusOperationInfo,
    event_type: EventType,
    attributes: Attributes,
) -> ApplyResult<()> {
    close_with_links(batch, ms, op, Vec::new(), event_type, attributes)
}

/// Closes an operation with its event (carrying these links) and wakes the workflow.
pub(super) fn close_with_links(
    batch: &mut ShardBatch,
    ms: &mut MutableState,
    op: &pb::NexusOperationInfo,
    links: Vec<chronicle_proto::temporal::api::common::v1::Link>,
    event_type: EventType,
    attributes: Attributes,
) -> ApplyResult<()> {
    super::nexus_async::add_with_links(ms, event_type, attributes, links, false);
    ms.state.nexus_operations.remove(&op.scheduled_event_id);
    if op.outbox_task_id != 0 {
        batch.delete_outbox(op.outbox_task_id);
    }
    if op.cancel_outbox_task_id != 0 {
        batch.delete_outbox(op.cancel_outbox_task_id);
    }
    if !op.timeout_timer_key.is_empty() {
        batch.delete_timer(&op.timeout_timer_key);
    }
    ms.schedule_workflow_task_if_needed(batch)?;
    Ok(())
}

/// The schedule-to-close timer fired: the operation times out if it is still pending.
pub fn timed_out(
    batch: &mut ShardBatch,
    ms: &mut MutableState,
    task: &pb::TimerTask,
) -> ApplyResult<bool> {
    let Some(mut op) = ms.state.nexus_operations.get(&task.event_id).cloned() else {
        return Ok(false);
    };
    // The timer is being deleted by its firing.
    op.timeout_timer_key.clear();
    let cause = Failure {
        message: "operation timed out".into(),
        failure_info: Some(FailureInfo::TimeoutFailureInfo(TimeoutFailureInfo {
            timeout_type: TimeoutType::ScheduleToClose as i32,
            ..Default::default()
        })),
        ..Default::default()
    };
    close(
        batch,
        ms,
        &op,
        EventType::NexusOperationTimedOut,
        Attributes::NexusOperationTimedOutEventAttributes(
            h::NexusOperationTimedOutEventAttributes {
                scheduled_event_id: op.scheduled_event_id,
                failure: Some(operation_failure(
                    &op,
                    "nexus operation completed unsuccessfully",
                    cause,
                )),
                request_id: op.request_id.clone(),
            },
        ),
    )?;
    Ok(true)
}

/// The run closed: its pending operations' requests are no longer offered.
pub fn on_close(batch: &mut ShardBatch, ms: &mut MutableState) {
    for op in ms.state.nexus_operations.values() {
        if op.outbox_task_id != 0 {
            batch.delete_outbox(op.outbox_task_id);
        }
        if op.cancel_outbox_task_id != 0 {
            batch.delete_outbox(op.cancel_outbox_task_id);
        }
    }
    ms.state.nexus_operations.clear();
}
