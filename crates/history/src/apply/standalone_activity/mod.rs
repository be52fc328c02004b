//! Standalone activity executions (StartActivityExecution and its siblings): an execution record
//! in the shard's tables, keyed by the activity ID behind
//! `chronicle_types::standalone_activity::KEY_PREFIX`, whose one activity (`activities[1]`)
//! lives through the same code as a workflow's: dispatch through the outbox, started by a poll,
//! heartbeats, retries and the four timeouts on the timer queue. What differs is the end: where
//! a workflow's activity writes its close event and schedules a workflow task, a standalone one
//! closes its record with the outcome ([`close`]), as Temporal's CHASM activity does. It writes
//! no history events.

pub mod control;
pub mod start;

use chronicle_proto::chronicle::persistence::v1 as pb;
use chronicle_proto::temporal::api::common::v1::{Payload, Payloads};
use chronicle_proto::temporal::api::enums::v1::{ActivityExecutionStatus, WorkflowExecutionStatus};
use chronicle_proto::temporal::api::failure::v1::{
    CanceledFailureInfo, Failure, failure::FailureInfo,
};
use chronicle_proto::temporal::api::history::v1::history_event::Attributes;
use chronicle_proto::wkt::Timestamp;
use chronicle_storage::ShardBatch;
use chronicle_types::ApiError;

use super::{ApplyError, ApplyResult};
use crate::mutable_state::MutableState;

/// The key of a standalone activity's one entry in `activities`.
pub const ACTIVITY_KEY: i64 = 1;

pub fn is_standalone(ms: &MutableState) -> bool {
    ms.state.standalone_activity.is_some()
}

/// Loads a standalone activity execution: `run_id` empty means the activity ID's current one.
pub fn load(
    batch: &ShardBatch,
    now: Timestamp,
    namespace_id: &str,
    activity_id: &str,
    run_id: &str,
) -> ApplyResult<MutableState> {
    let key = chronicle_types::standalone_activity::key(activity_id);
    let run_id = if run_id.is_empty() {
        match batch.current(namespace_id, &key)? {
            Some(current) => current.run_id,
            None => return Err(not_found(activity_id, run_id)),
        }
    } else {
        run_id.to_string()
    };
    match batch.execution(namespace_id, &key, &run_id)? {
        Some(state) if state.standalone_activity.is_some() => Ok(MutableState::new(state, now)),
        _ => Err(not_found(activity_id, &run_id)),
    }
}

pub fn not_found(activity_id: &str, run_id: &str) -> ApplyError {
    let _ = run_id;
    ApiError::not_found(format!("activity execution not found: {activity_id}")).into()
}

/// What a worker's outcome or heartbeat for a closed standalone activity gets, as Temporal
/// answers: by ID, a completion is a refused transition and anything else finds no activity; by
/// task token, no task.
pub fn closed_refusal(
    ms: &MutableState,
    token: &pb::TaskToken,
    completing: bool,
) -> Option<ApplyError> {
    if !is_standalone(ms) || ms.is_running() {
        return None;
    }
    let by_id = token.scheduled_event_id == 0;
    Some(if by_id && completing {
        ApiError::failed_precondition(format!(
            "invalid transition from {}",
            status_word(ms.state.status)
        ))
        .into()
    } else if by_id {
        ApiError::not_found(format!("activity not found for ID: {}", token.activity_id)).into()
    } else {
        ApiError::not_found("activity task not found").into()
    })
}

/// Pause, unpause and options updates of a standalone activity, with Temporal's transitions and
/// messages (the operation itself is the workflow activity's); a reset is refused (a closed
/// activity's as Temporal refuses it; an open one's is not built).
pub fn check_operation(
    ms: &MutableState,
    operation: Option<&chronicle_proto::chronicle::history::v1::run_operation::Operation>,
) -> ApplyResult<()> {
    use chronicle_proto::chronicle::history::v1::run_operation::Operation;
    if !is_standalone(ms) {
        return Ok(());
    }
    let activity = ms.state.activities.get(&ACTIVITY_KEY);
    let word = match activity {
        Some(a) if a.paused => "Paused",
        Some(a) if a.cancel_requested => "CancelRequested",
        Some(a) if a.started => "Started",
        Some(_) => "Scheduled",
        None => status_word(ms.state.status),
    };
    let refuse = |message: String| Err(ApiError::failed_precondition(message).into());
    match operation {
        Some(Operation::PauseActivity(r)) => match activity {
            Some(a) if a.paused && a.pause_request_id == r.request_id => Ok(()),
            Some(a) if !a.paused && !a.cancel_requested => Ok(()),
            _ => refuse(format!("activity is in non-pausable state {word}")),
        },
        Some(Operation::UnpauseActivity(_)) => match activity {
            None => refuse(format!("activity is in terminal state {word}")),
            Some(a) if a.paused => Ok(()),
            Some(_) => refuse(format!("activity is in non-unpausable state {word}")),
        },
        Some(Operation::UpdateActivityOptions(_)) => match activity {
            // As Temporal: not while a reset waits for the running attempt.
            Some(a) if a.reset_requested => {
                refuse("Cannot update options for activity in state ResetRequested".to_string())
            }
            Some(_) => Ok(()),
            None => refuse(format!(
                "Cannot update options for activity in state {word}"
            )),
        },
        // Temporal's refusal of a closed activity; an open one's reset is checked where it is
        // applied (`activity_ops::standalone_reset`).
        Some(Operation::ResetActivity(_)) => match activity {
            None => refuse("activity execution is not running".to_string()),
            Some(_) => Ok(()),
        },
        _ => Err(ApiError::new(
            tonic::Code::Unimplemented,
            "Standalone activity is disabled",
        )
        .into()),
    }
}

/// The API status of a record's workflow-style status (the two enums share their names).
pub fn api_status(status: i32) -> ActivityExecutionStatus {
    match WorkflowExecutionStatus::try_from(status).unwrap_or_default() {
        WorkflowExecutionStatus::Running => ActivityExecutionStatus::Running,
        WorkflowExecutionStatus::Completed => ActivityExecutionStatus::Completed,
        WorkflowExecutionStatus::Failed => ActivityExecutionStatus::Failed,
        WorkflowExecutionStatus::Canceled => ActivityExecutionStatus::Canceled,
        WorkflowExecutionStatus::Terminated => ActivityExecutionStatus::Terminated,
        WorkflowExecutionStatus::TimedOut => ActivityExecutionStatus::TimedOut,
        _ => ActivityExecutionStatus::Unspecified,
    }
}

/// Temporal's name of a closed status in its transition errors ("invalid transition from
/// Completed").
pub fn status_word(status: i32) -> &'static str {
    match api_status(status) {
        ActivityExecutionStatus::Running => "Started",
        ActivityExecutionStatus::Completed => "Completed",
        ActivityExecutionStatus::Failed => "Failed",
        ActivityExecutionStatus::Canceled => "Canceled",
        ActivityExecutionStatus::Terminated => "Terminated",
        ActivityExecutionStatus::TimedOut => "TimedOut",
        _ => "Unspecified",
    }
}

/// A JSON string payload (`json/plain`), as Temporal encodes a cancellation's reason.
pub fn json_string_payload(value: &str) -> Payloads {
    Payloads {
        payloads: vec![Payload {
            metadata: [("encoding".to_string(), b"json/plain".to_vec())]
                .into_iter()
                .collect(),
            data: serde_json::to_vec(value).unwrap_or_default(),
            ..Default::default()
        }],
    }
}

pub fn canceled_failure(details: Option<Payloads>, identity: &str) -> Failure {
    Failure {
        message: "Activity canceled".into(),
        failure_info: Some(FailureInfo::CanceledFailureInfo(CanceledFailureInfo {
            details,
            identity: identity.to_string(),
        })),
        ..Default::default()
    }
}

/// The activity's attempt ended for good (the hook of `activity::finish`): the record closes
/// with the outcome the event would have carried.
pub fn close_from_event(
    batch: &mut ShardBatch,
    ms: &mut MutableState,
    activity: &pb::ActivityInfo,
    attributes: Attributes,
) -> ApplyResult<()> {
    let retry_state = match &attributes {
        Attributes::ActivityTaskFailedEventAttributes(a) => a.retry_state,
        Attributes::ActivityTaskTimedOutEventAttributes(a) => a.retry_state,
        _ => 0,
    };
    ms.state
        .standalone_activity
        .get_or_insert_default()
        .retry_state = retry_state;
    let (status, result, failure) = match attributes {
        Attributes::ActivityTaskCompletedEventAttributes(a) => {
            (WorkflowExecutionStatus::Completed, a.result, None)
        }
        Attributes::ActivityTaskFailedEventAttributes(a) => (
            WorkflowExecutionStatus::Failed,
            None,
            Some(a.failure.unwrap_or_else(|| Failure {
                message: "activity task failed without failure details".into(),
                ..Default::default()
            })),
        ),
        Attributes::ActivityTaskCanceledEventAttributes(a) => {
            let identity = ms
                .state
                .standalone_activity
                .as_ref()
                .map(|s| s.cancel_identity.clone())
                .unwrap_or_default();
            (
                WorkflowExecutionStatus::Canceled,
                None,
                Some(canceled_failure(a.details, &identity)),
            )
        }
        Attributes::ActivityTaskTimedOutEventAttributes(a) => {
            (WorkflowExecutionStatus::TimedOut, None, a.failure)
        }
        _ => return Err(ApiError::internal("unexpected activity outcome").into()),
    };
    close(batch, ms, activity, status, result, failure)
}

/// Closes the record: the activity as it ended is kept for describe, the outcome for pollers,
/// then the run closes as any run does (outbox rows and timers go, current record, retention).
pub fn close(
    batch: &mut ShardBatch,
    ms: &mut MutableState,
    activity: &pb::ActivityInfo,
    status: WorkflowExecutionStatus,
    result: Option<Payloads>,
    failure: Option<Failure>,
) -> ApplyResult<()> {
    let now = ms.now;
    let mut closed = activity.clone();
    closed.outbox_task_id = 0;
    closed.schedule_timer_keys.clear();
    closed.attempt_timer_keys.clear();
    closed.next_attempt_schedule_time = None;
    if activity.started {
        closed.last_attempt_complete_time = Some(now);
    }
    if matches!(
        status,
        WorkflowExecutionStatus::Failed | WorkflowExecutionStatus::TimedOut
    ) && failure.is_some()
    {
        closed.last_failure = failure.clone();
    }
    let record = ms.state.standalone_activity.get_or_insert_default();
    record.closed_activity = Some(closed);
    record.result = result;
    record.failure = failure;
    batch.delete_outbox(activity.outbox_task_id as u64);
    super::close_run(batch, ms, status, 0)
}

#[cfg(test)]
mod tests;
