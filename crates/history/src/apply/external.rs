//! RequestCancelExternalWorkflowExecution and SignalExternalWorkflowExecution: the command adds
//! its Initiated event, a pending request and a transfer task; the transfer executor delivers
//! the request on the target's shard (a cancellation request or a signal, de-duplicated by the
//! request's ID) and records the outcome in the source workflow (`RecordExternalOutcome`).

use chronicle_proto::chronicle::history::v1::{self as cmd, command_result};
use chronicle_proto::chronicle::persistence::v1 as pb;
use chronicle_proto::temporal::api::command::v1::{
    RequestCancelExternalWorkflowExecutionCommandAttributes,
    SignalExternalWorkflowExecutionCommandAttributes,
};
use chronicle_proto::temporal::api::common::v1::WorkflowExecution;
use chronicle_proto::temporal::api::enums::v1::{
    CancelExternalWorkflowExecutionFailedCause, EventType,
    SignalExternalWorkflowExecutionFailedCause, WorkflowTaskFailedCause,
};
use chronicle_proto::temporal::api::history::v1 as h;
use chronicle_proto::temporal::api::history::v1::history_event::Attributes;
use chronicle_proto::wkt::Timestamp;
use chronicle_storage::ShardBatch;
use chronicle_types::limits::{
    MAX_ID_LENGTH, MAX_PENDING_EXTERNAL_SIGNALS, MAX_PENDING_REQUEST_CANCELS,
};

use super::workflow_task::{CommandContext, Rejection, reject};
use super::{ApplyError, ApplyResult, load_run};
use crate::mutable_state::MutableState;

/// The request ID a delivery carries: the same for every retry of the transfer task.
pub(crate) fn request_id(run_id: &str, kind: &str, initiated_event_id: i64) -> String {
    format!("{run_id}:{kind}:{initiated_event_id}")
}

/// Checks shared by both commands: target workflow ID and run ID, namespace.
fn check_target(
    ctx: &CommandContext,
    command: &str,
    namespace: &str,
    workflow_id: &str,
    run_id: &str,
) -> Result<(), String> {
    if workflow_id.is_empty() {
        return Err(format!(
            "WorkflowId is not set on {command}. Namespace={namespace} RunId={run_id}"
        ));
    }
    if namespace.len() > MAX_ID_LENGTH {
        return Err(format!("Namespace on {command} exceeds length limit."));
    }
    if workflow_id.len() > MAX_ID_LENGTH {
        return Err(format!("WorkflowId on {command} exceeds length limit."));
    }
    if !run_id.is_empty() && uuid::Uuid::parse_str(run_id).is_err() {
        return Err(format!(
            "Invalid RunId set on {command}. WorkflowId={workflow_id} RunId={run_id} Namespace={namespace}"
        ));
    }
    if !namespace.is_empty() && namespace != ctx.namespace {
        return Err(format!(
            "Chronicle does not support {command} across namespaces: the workflow runs in {:?}, the target is in {namespace:?}.",
            ctx.namespace
        ));
    }
    Ok(())
}

#[allow(deprecated)] // `namespace` and `control`: still sent by SDKs
pub(super) fn initiate_cancel(
    batch: &mut ShardBatch,
    ms: &mut MutableState,
    a: &RequestCancelExternalWorkflowExecutionCommandAttributes,
    ctx: &mut CommandContext,
) -> Result<(), Rejection> {
    let cause = WorkflowTaskFailedCause::BadRequestCancelExternalWorkflowExecutionAttributes;
    let command = "RequestCancelExternalWorkflowExecutionCommand";
    check_target(ctx, command, &a.namespace, &a.workflow_id, &a.run_id)
        .map_err(|m| reject(cause, m))?;
    if ctx.initiated_children.contains(&a.workflow_id) {
        return Err(reject(
            cause,
            format!(
                "Start and RequestCancel for child workflow is not allowed in same workflow task. WorkflowId={} RunId={} Namespace={}",
                a.workflow_id, a.run_id, a.namespace
            ),
        ));
    }
    if ms.state.request_cancels.len() >= MAX_PENDING_REQUEST_CANCELS {
        return Err(reject(
            WorkflowTaskFailedCause::PendingRequestCancelLimitExceeded,
            format!(
                "the number of pending requests to cancel external workflows, {}, has reached the per-workflow limit of {MAX_PENDING_REQUEST_CANCELS}",
                ms.state.request_cancels.len()
            ),
        ));
    }
    let execution = WorkflowExecution {
        workflow_id: a.workflow_id.clone(),
        run_id: a.run_id.clone(),
    };
    let initiated_id = ms.add_event(
        EventType::RequestCancelExternalWorkflowExecutionInitiated,
        Attributes::RequestCancelExternalWorkflowExecutionInitiatedEventAttributes(
            h::RequestCancelExternalWorkflowExecutionInitiatedEventAttributes {
                workflow_task_completed_event_id: ctx.completed_id,
                namespace: ctx.namespace.to_string(),
                namespace_id: ms.state.namespace_id.clone(),
                workflow_execution: Some(execution.clone()),
                control: a.control.clone(),
                child_workflow_only: a.child_workflow_only,
                reason: a.reason.clone(),
            },
        ),
    );
    let info = pb::ExternalRequestInfo {
        initiated_event_id: initiated_id,
        namespace: ctx.namespace.to_string(),
        namespace_id: ms.state.namespace_id.clone(),
        execution: Some(execution),
        child_workflow_only: a.child_workflow_only,
        request_id: request_id(&ms.state.run_id, "cancel", initiated_id),
        workflow_task_completed_event_id: ctx.completed_id,
        control: a.control.clone(),
    };
    ms.state.request_cancels.insert(initiated_id, info);
    put_task(
        batch,
        ms,
        pb::outbox_task::Kind::CancelExternal,
        initiated_id,
    )
}

#[allow(deprecated)] // `namespace` and `control`: still sent by SDKs
pub(super) fn initiate_signal(
    batch: &mut ShardBatch,
    ms: &mut MutableState,
    a: &SignalExternalWorkflowExecutionCommandAttributes,
    ctx: &mut CommandContext,
) -> Result<(), Rejection> {
    let cause = WorkflowTaskFailedCause::BadSignalWorkflowExecutionAttributes;
    let command = "SignalExternalWorkflowExecutionCommand";
    let Some(execution) = a.execution.clone() else {
        return Err(reject(
            cause,
            "Execution is not set on SignalExternalWorkflowExecutionCommand.",
        ));
    };
    check_target(
        ctx,
        command,
        &a.namespace,
        &execution.workflow_id,
        &execution.run_id,
    )
    .map_err(|m| reject(cause, m))?;
    if a.signal_name.is_empty() {
        return Err(reject(
            cause,
            format!(
                "SignalName is not set on SignalExternalWorkflowExecutionCommand. WorkflowId={} Namespace={} RunId={}",
                execution.workflow_id, a.namespace, execution.run_id
            ),
        ));
    }
    if ms.state.external_signals.len() >= MAX_PENDING_EXTERNAL_SIGNALS {
        return Err(reject(
            WorkflowTaskFailedCause::PendingSignalsLimitExceeded,
            format!(
                "the number of pending signals to external workflows, {}, has reached the per-workflow limit of {MAX_PENDING_EXTERNAL_SIGNALS}",
                ms.state.external_signals.len()
            ),
        ));
    }
    let initiated_id = ms.add_event(
        EventType::SignalExternalWorkflowExecutionInitiated,
        Attributes::SignalExternalWorkflowExecutionInitiatedEventAttributes(
            h::SignalExternalWorkflowExecutionInitiatedEventAttributes {
                workflow_task_completed_event_id: ctx.completed_id,
                namespace: ctx.namespace.to_string(),
                namespace_id: ms.state.namespace_id.clone(),
                workflow_execution: Some(execution.clone()),
                signal_name: a.signal_name.clone(),
                input: a.input.clone(),
                control: a.control.clone(),
                child_workflow_only: a.child_workflow_only,
                header: a.header.clone(),
            },
        ),
    );
    let info = pb::ExternalRequestInfo {
        initiated_event_id: initiated_id,
        namespace: ctx.namespace.to_string(),
        namespace_id: ms.state.namespace_id.clone(),
        execution: Some(execution),
        child_workflow_only: a.child_workflow_only,
        request_id: request_id(&ms.state.run_id, "signal", initiated_id),
        workflow_task_completed_event_id: ctx.completed_id,
        control: a.control.clone(),
    };
    ms.state.external_signals.insert(initiated_id, info);
    put_task(
        batch,
        ms,
        pb::outbox_task::Kind::SignalExternal,
        initiated_id,
    )
}

fn put_task(
    batch: &mut ShardBatch,
    ms: &MutableState,
    kind: pb::outbox_task::Kind,
    initiated_id: i64,
) -> Result<(), Rejection> {
    batch.put_outbox(&pb::OutboxTask {
        kind: kind as i32,
        namespace_id: ms.state.namespace_id.clone(),
        workflow_id: ms.state.workflow_id.clone(),
        run_id: ms.state.run_id.clone(),
        scheduled_event_id: initiated_id,
        ..Default::default()
    })?;
    Ok(())
}

/// The source workflow learns whether its cancellation request or signal was delivered; the
/// transfer task's row goes.
pub fn record_outcome(
    batch: &mut ShardBatch,
    now: Timestamp,
    c: cmd::RecordExternalOutcome,
) -> ApplyResult<command_result::Result> {
    batch.delete_outbox(c.outbox_id as u64);
    if c.not_attempted {
        return Ok(super::ok());
    }
    let mut ms = match load_run(batch, now, &c.namespace_id, &c.workflow_id, &c.run_id) {
        Ok(ms) => ms,
        Err(ApplyError::Rejected(_)) => return Ok(super::ok()),
        Err(e) => return Err(e),
    };
    if !ms.is_running() {
        return Ok(super::ok());
    }
    let pending = if c.signal {
        ms.state.external_signals.remove(&c.initiated_event_id)
    } else {
        ms.state.request_cancels.remove(&c.initiated_event_id)
    };
    let Some(info) = pending else {
        return Ok(super::ok());
    };
    #[allow(deprecated)]
    let (event_type, attributes) = match (c.signal, c.failed) {
        (false, false) => (
            EventType::ExternalWorkflowExecutionCancelRequested,
            Attributes::ExternalWorkflowExecutionCancelRequestedEventAttributes(
                h::ExternalWorkflowExecutionCancelRequestedEventAttributes {
                    initiated_event_id: info.initiated_event_id,
                    namespace: info.namespace,
                    namespace_id: info.namespace_id,
                    workflow_execution: info.execution,
                },
            ),
        ),
        (false, true) => (
            EventType::RequestCancelExternalWorkflowExecutionFailed,
            Attributes::RequestCancelExternalWorkflowExecutionFailedEventAttributes(
                h::RequestCancelExternalWorkflowExecutionFailedEventAttributes {
                    cause: CancelExternalWorkflowExecutionFailedCause::ExternalWorkflowExecutionNotFound
                        as i32,
                    // Left unset, as Temporal's server does.
                    workflow_task_completed_event_id: 0,
                    namespace: info.namespace,
                    namespace_id: info.namespace_id,
                    workflow_execution: info.execution,
                    initiated_event_id: info.initiated_event_id,
                    control: info.control,
                },
            ),
        ),
        (true, false) => (
            EventType::ExternalWorkflowExecutionSignaled,
            Attributes::ExternalWorkflowExecutionSignaledEventAttributes(
                h::ExternalWorkflowExecutionSignaledEventAttributes {
                    initiated_event_id: info.initiated_event_id,
                    namespace: info.namespace,
                    namespace_id: info.namespace_id,
                    workflow_execution: info.execution,
                    control: info.control,
                },
            ),
        ),
        (true, true) => (
            EventType::SignalExternalWorkflowExecutionFailed,
            Attributes::SignalExternalWorkflowExecutionFailedEventAttributes(
                h::SignalExternalWorkflowExecutionFailedEventAttributes {
                    cause: SignalExternalWorkflowExecutionFailedCause::ExternalWorkflowExecutionNotFound
                        as i32,
                    // Left unset, as Temporal's server does.
                    workflow_task_completed_event_id: 0,
                    namespace: info.namespace,
                    namespace_id: info.namespace_id,
                    workflow_execution: info.execution,
                    initiated_event_id: info.initiated_event_id,
                    control: info.control,
                },
            ),
        ),
    };
    ms.add_or_buffer_event(event_type, attributes);
    ms.schedule_workflow_task_if_needed(batch)?;
    ms.persist(batch);
    Ok(super::ok())
}

/// Deletes the row of a transfer task that is done.
pub fn complete_transfer_task(
    batch: &mut ShardBatch,
    c: cmd::CompleteTransferTask,
) -> ApplyResult<command_result::Result> {
    batch.delete_outbox(c.outbox_id as u64);
    Ok(super::ok())
}
