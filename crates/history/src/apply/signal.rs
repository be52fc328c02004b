//! Requests from outside the run: signals, termination, cancellation requests.

use chronicle_proto::chronicle::history::v1::{self as cmd, command_result};
use chronicle_proto::temporal::api::common::v1::Payloads;
use chronicle_proto::temporal::api::enums::v1::{EventType, WorkflowExecutionStatus};
use chronicle_proto::temporal::api::history::v1 as h;
use chronicle_proto::temporal::api::history::v1::history_event::Attributes;
use chronicle_proto::wkt::Timestamp;
use chronicle_storage::ShardBatch;
use chronicle_types::ApiError;

use super::{ApplyResult, close_run, load_run};
use crate::mutable_state::MutableState;

/// Signals remembered per run for request-ID de-duplication.
const MAX_REMEMBERED_SIGNAL_REQUESTS: usize = 100;

fn closed_error() -> ApiError {
    ApiError::not_found("workflow execution already completed")
}

pub fn signal(
    batch: &mut ShardBatch,
    now: Timestamp,
    c: cmd::SignalWorkflow,
) -> ApplyResult<command_result::Result> {
    let request = c.request.unwrap_or_default();
    let execution = request.workflow_execution.clone().unwrap_or_default();
    let mut ms = load_run(
        batch,
        now,
        &c.namespace_id,
        &execution.workflow_id,
        &execution.run_id,
    )?;
    if !ms.is_running() {
        return Err(closed_error().into());
    }
    check_child_only(&ms, c.external.as_ref())?;
    if !request.request_id.is_empty() {
        if ms.state.signal_request_ids.contains(&request.request_id) {
            return Ok(super::ok());
        }
        ms.state.signal_request_ids.push(request.request_id.clone());
        if ms.state.signal_request_ids.len() > MAX_REMEMBERED_SIGNAL_REQUESTS {
            ms.state.signal_request_ids.remove(0);
        }
    }
    // The request's links (a Nexus caller's event, say) go on the event, as in Temporal.
    super::nexus_async::add_with_links(
        &mut ms,
        EventType::WorkflowExecutionSignaled,
        Attributes::WorkflowExecutionSignaledEventAttributes(
            h::WorkflowExecutionSignaledEventAttributes {
                signal_name: request.signal_name.clone(),
                input: request.input.clone(),
                identity: request.identity.clone(),
                header: request.header.clone(),
                external_workflow_execution: c.external.as_ref().and_then(|e| e.execution.clone()),
                ..Default::default()
            },
        ),
        request.links.clone(),
        false,
    );
    ms.schedule_workflow_task_if_needed(batch)?;
    ms.persist(batch);
    Ok(super::ok())
}

/// A request another workflow sends to its child only: refused unless the target is that
/// workflow's child (Temporal's "Workflow parent does not match.").
fn check_child_only(ms: &MutableState, external: Option<&cmd::ExternalSource>) -> ApplyResult<()> {
    let Some(external) = external.filter(|e| e.child_workflow_only) else {
        return Ok(());
    };
    let source = external.execution.clone().unwrap_or_default();
    let is_child = ms.state.parent.as_ref().is_some_and(|p| {
        p.execution.as_ref().is_some_and(|e| {
            e.workflow_id == source.workflow_id
                && (source.run_id.is_empty() || e.run_id == source.run_id)
        })
    });
    if is_child {
        Ok(())
    } else {
        Err(ApiError::not_found("Workflow parent does not match.").into())
    }
}

pub fn terminate(
    batch: &mut ShardBatch,
    now: Timestamp,
    c: cmd::TerminateWorkflow,
) -> ApplyResult<command_result::Result> {
    let request = c.request.unwrap_or_default();
    let execution = request.workflow_execution.clone().unwrap_or_default();
    let mut ms = load_run(
        batch,
        now,
        &c.namespace_id,
        &execution.workflow_id,
        &execution.run_id,
    )?;
    if !ms.is_running() {
        return Err(closed_error().into());
    }
    terminate_run(
        batch,
        &mut ms,
        &request.reason,
        &request.identity,
        request.details.clone(),
    )?;
    ms.persist(batch);
    Ok(super::ok())
}

/// Terminates a running run: a running workflow task is failed first so that the history stays
/// a valid sequence, then the Terminated event closes the run.
pub fn terminate_run(
    batch: &mut ShardBatch,
    ms: &mut MutableState,
    reason: &str,
    identity: &str,
    details: Option<Payloads>,
) -> ApplyResult<()> {
    if let Some(task) = ms
        .state
        .workflow_task
        .clone()
        .filter(|t| t.started_event_id > 0 && !t.transient)
    {
        ms.add_event(
            EventType::WorkflowTaskFailed,
            Attributes::WorkflowTaskFailedEventAttributes(h::WorkflowTaskFailedEventAttributes {
                scheduled_event_id: task.scheduled_event_id,
                started_event_id: task.started_event_id,
                cause: chronicle_proto::temporal::api::enums::v1::WorkflowTaskFailedCause::ForceCloseCommand as i32,
                identity: identity.to_string(),
                ..Default::default()
            }),
        );
        ms.state.workflow_task = None;
    }
    ms.flush_buffered_events();
    let id = ms.add_event(
        EventType::WorkflowExecutionTerminated,
        Attributes::WorkflowExecutionTerminatedEventAttributes(
            h::WorkflowExecutionTerminatedEventAttributes {
                reason: reason.to_string(),
                details,
                identity: identity.to_string(),
            },
        ),
    );
    close_run(batch, ms, WorkflowExecutionStatus::Terminated, id)
}

pub fn request_cancel(
    batch: &mut ShardBatch,
    now: Timestamp,
    c: cmd::RequestCancelWorkflow,
) -> ApplyResult<command_result::Result> {
    let request = c.request.unwrap_or_default();
    let execution = request.workflow_execution.clone().unwrap_or_default();
    let mut ms = load_run(
        batch,
        now,
        &c.namespace_id,
        &execution.workflow_id,
        &execution.run_id,
    )?;
    if !ms.is_running() {
        // As in Temporal, asking to cancel a run that already closed succeeds and changes
        // nothing (a workflow asking records ExternalWorkflowExecutionCancelRequested).
        return Ok(super::ok());
    }
    check_child_only(&ms, c.external.as_ref())?;
    let external = c.external.unwrap_or_default();
    if add_cancel_request(
        batch,
        &mut ms,
        request.reason,
        request.identity,
        external.initiated_event_id,
        external.execution,
    )? {
        ms.persist(batch);
    }
    Ok(super::ok())
}

/// Records a cancellation request on a running run and schedules a workflow task for it. As in
/// Temporal, cancellation is idempotent: once requested, later requests change nothing
/// (returns false).
pub fn add_cancel_request(
    batch: &mut ShardBatch,
    ms: &mut MutableState,
    cause: String,
    identity: String,
    external_initiated_event_id: i64,
    external_workflow_execution: Option<
        chronicle_proto::temporal::api::common::v1::WorkflowExecution,
    >,
) -> ApplyResult<bool> {
    if ms.state.cancel_requested {
        return Ok(false);
    }
    ms.state.cancel_requested = true;
    ms.add_or_buffer_event(
        EventType::WorkflowExecutionCancelRequested,
        Attributes::WorkflowExecutionCancelRequestedEventAttributes(
            h::WorkflowExecutionCancelRequestedEventAttributes {
                cause,
                identity,
                external_initiated_event_id,
                external_workflow_execution,
            },
        ),
    );
    ms.schedule_workflow_task_if_needed(batch)?;
    Ok(true)
}
