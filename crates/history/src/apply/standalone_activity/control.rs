//! RequestCancelActivityExecution, TerminateActivityExecution and DeleteActivityExecution at
//! apply, with Temporal's transitions: a cancellation of an activity no worker runs cancels it
//! at once (the reason as details); one a worker runs is recorded and reaches the worker in its
//! heartbeat answers, and the worker's RespondActivityTaskCanceled closes it. Request IDs make
//! retried cancellations and terminations answer as the first did.

use chronicle_proto::chronicle::history::v1::{self as cmd, command_result};
use chronicle_proto::temporal::api::enums::v1::WorkflowExecutionStatus;
use chronicle_proto::temporal::api::failure::v1::{
    Failure, TerminatedFailureInfo, failure::FailureInfo,
};
use chronicle_proto::wkt::Timestamp;
use chronicle_storage::ShardBatch;
use chronicle_types::ApiError;

use super::{ACTIVITY_KEY, close, load, status_word};
use crate::apply::ApplyResult;

pub fn cancel(
    batch: &mut ShardBatch,
    now: Timestamp,
    c: cmd::CancelActivityExecution,
) -> ApplyResult<command_result::Result> {
    let r = c.request.unwrap_or_default();
    let mut ms = load(batch, now, &c.namespace_id, &r.activity_id, &r.run_id)?;
    let record = ms.state.standalone_activity.clone().unwrap_or_default();
    // De-duplicated first: a retry may come after the cancellation closed the activity.
    if !r.request_id.is_empty() && record.cancel_request_id == r.request_id {
        return Ok(crate::apply::ok());
    }
    if !ms.is_running() {
        return Err(ApiError::failed_precondition(format!(
            "activity is in terminal state {}",
            super::api_status(ms.state.status).as_str_name()
        ))
        .into());
    }
    let Some(activity) = ms.state.activities.get(&ACTIVITY_KEY).cloned() else {
        return Err(ApiError::internal("standalone activity without its activity").into());
    };
    if activity.cancel_requested {
        return Err(ApiError::failed_precondition(format!(
            "cancellation already requested with request ID {}",
            record.cancel_request_id
        ))
        .into());
    }
    let entry = ms.state.standalone_activity.get_or_insert_default();
    entry.cancel_request_id = r.request_id.clone();
    entry.cancel_reason = r.reason.clone();
    entry.cancel_identity = r.identity.clone();
    if activity.started {
        if let Some(a) = ms.state.activities.get_mut(&ACTIVITY_KEY) {
            a.cancel_requested = true;
        }
    } else {
        let mut activity = activity;
        activity.cancel_requested = true;
        let failure =
            super::canceled_failure(Some(super::json_string_payload(&r.reason)), &r.identity);
        close(
            batch,
            &mut ms,
            &activity,
            WorkflowExecutionStatus::Canceled,
            None,
            Some(failure),
        )?;
    }
    ms.persist(batch);
    Ok(crate::apply::ok())
}

pub fn terminate(
    batch: &mut ShardBatch,
    now: Timestamp,
    c: cmd::TerminateActivityExecution,
) -> ApplyResult<command_result::Result> {
    let r = c.request.unwrap_or_default();
    let mut ms = load(batch, now, &c.namespace_id, &r.activity_id, &r.run_id)?;
    terminate_record(batch, &mut ms, &r.request_id, &r.reason, &r.identity)?;
    ms.persist(batch);
    Ok(crate::apply::ok())
}

fn terminate_record(
    batch: &mut ShardBatch,
    ms: &mut crate::mutable_state::MutableState,
    request_id: &str,
    reason: &str,
    identity: &str,
) -> ApplyResult<()> {
    let record = ms.state.standalone_activity.clone().unwrap_or_default();
    if ms.state.status == WorkflowExecutionStatus::Terminated as i32 {
        if record.terminate_request_id == request_id {
            return Ok(());
        }
        return Err(ApiError::failed_precondition(format!(
            "already terminated with request ID {}",
            record.terminate_request_id
        ))
        .into());
    }
    if !ms.is_running() {
        return Err(ApiError::failed_precondition(format!(
            "invalid transition from {}",
            status_word(ms.state.status)
        ))
        .into());
    }
    let Some(activity) = ms.state.activities.get(&ACTIVITY_KEY).cloned() else {
        return Err(ApiError::internal("standalone activity without its activity").into());
    };
    ms.state
        .standalone_activity
        .get_or_insert_default()
        .terminate_request_id = request_id.to_string();
    let failure = Failure {
        message: reason.to_string(),
        failure_info: Some(FailureInfo::TerminatedFailureInfo(TerminatedFailureInfo {
            identity: identity.to_string(),
        })),
        ..Default::default()
    };
    close(
        batch,
        ms,
        &activity,
        WorkflowExecutionStatus::Terminated,
        None,
        Some(failure),
    )
}

/// Terminates a running activity ("Delete activity execution"), then deletes the record.
pub fn delete(
    batch: &mut ShardBatch,
    now: Timestamp,
    c: cmd::DeleteActivityExecution,
) -> ApplyResult<command_result::Result> {
    let r = c.request.unwrap_or_default();
    let mut ms = load(batch, now, &c.namespace_id, &r.activity_id, &r.run_id)?;
    let now_ms = ms.now_ms();
    if ms.is_running() {
        terminate_record(
            batch,
            &mut ms,
            "",
            "Delete activity execution",
            crate::apply::child::HISTORY_SERVICE_IDENTITY,
        )?;
        let state = ms.state.clone();
        ms.persist(batch);
        crate::apply::delete::delete_when_reported(batch, &state, now_ms)?;
    } else {
        crate::apply::delete::delete_when_reported(batch, &ms.state, now_ms)?;
    }
    Ok(crate::apply::ok())
}
