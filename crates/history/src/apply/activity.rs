//! Activities: started by a poller, completed, failed (retried out of history, as Temporal
//! does: one Started event, written when the activity finally closes, carrying the attempt and
//! the last failure), canceled, heartbeats and the four timeouts.

use chronicle_proto::chronicle::history::v1::{self as cmd, command_result, respond_activity};
use chronicle_proto::chronicle::persistence::v1 as pb;
use chronicle_proto::temporal::api::common::v1::{Payloads, RetryPolicy};
use chronicle_proto::temporal::api::enums::v1::{EventType, RetryState, TimeoutType};
use chronicle_proto::temporal::api::failure::v1::{
    Failure, TimeoutFailureInfo, failure::FailureInfo,
};
use chronicle_proto::temporal::api::history::v1 as h;
use chronicle_proto::temporal::api::history::v1::history_event::Attributes;
use chronicle_proto::wkt::Timestamp;
use chronicle_storage::ShardBatch;
use chronicle_types::ApiError;
use chronicle_types::time::{duration_millis, from_millis, millis, opt_duration_millis};

use super::{ApplyError, ApplyResult, load_run, load_token_run};
use crate::mutable_state::{BUFFERED_ID, MutableState};

/// The soonest an activity timeout fires after it is armed.
///
/// Temporal fires a timer due less than about a second ahead late, at the end of the window its
/// timer queue has already read. Measured on its dev server (1.32): start-to-close,
/// schedule-to-start and heartbeat timeouts of 200-700 ms fired 0.45-0.99 s after they were
/// armed; 1.2 s and longer fired on time. So an activity that returns 300 ms into a 200 ms
/// start-to-close timeout completes on Temporal. Firing on time here would time it out instead,
/// on code that works there; with this floor, whatever completes before Temporal's timer fires
/// completes here too. A timeout is a failure detector: firing it later breaks no promise. User
/// timers and retry backoffs are delays a workflow asked for, and fire on time.
pub(crate) const MIN_TIMEOUT_DELAY_MS: i64 = 1_000;

/// When an activity timeout due at `deadline_ms` and armed at `now_ms` fires: no sooner than
/// [`MIN_TIMEOUT_DELAY_MS`] after arming it, unless it is already due (a timeout re-armed after
/// an unpause or an options change whose deadline passed meanwhile fires at once).
pub(crate) fn timeout_fire_ms(now_ms: i64, deadline_ms: i64) -> i64 {
    if deadline_ms <= now_ms {
        return deadline_ms;
    }
    deadline_ms.max(now_ms.saturating_add(MIN_TIMEOUT_DELAY_MS))
}

fn stale() -> command_result::Result {
    command_result::Result::ActivityTaskStarted(cmd::RecordActivityTaskStartedResult {
        stale: true,
        ..Default::default()
    })
}

fn not_found() -> ApplyError {
    ApiError::not_found("Activity task not found.").into()
}

pub fn record_started(
    batch: &mut ShardBatch,
    now: Timestamp,
    c: cmd::RecordActivityTaskStarted,
) -> ApplyResult<command_result::Result> {
    let mut ms = match load_run(batch, now, &c.namespace_id, &c.workflow_id, &c.run_id) {
        Ok(ms) => ms,
        Err(ApplyError::Rejected(_)) => {
            batch.delete_outbox(c.outbox_id as u64);
            return Ok(stale());
        }
        Err(e) => return Err(e),
    };
    let Some(activity) = ms
        .state
        .activities
        .get(&c.scheduled_event_id)
        .cloned()
        .filter(|a| a.attempt == c.attempt && ms.is_running() && !a.paused)
    else {
        // (A paused activity's task is withdrawn: the unpause dispatches it again.)
        batch.delete_outbox(c.outbox_id as u64);
        return Ok(stale());
    };
    if activity.started {
        if activity.started_request_id == c.request_id {
            return Ok(started_result(&ms, &activity));
        }
        return Ok(stale());
    }
    batch.delete_outbox(activity.outbox_task_id as u64);
    let activity = start_attempt(
        batch,
        &mut ms,
        activity,
        c.identity,
        c.request_id,
        c.worker_control_task_queue,
    )?;
    let result = started_result(&ms, &activity);
    ms.persist(batch);
    Ok(result)
}

/// Records an attempt of a scheduled activity as started by `identity` (a poll, or the worker
/// that completed the workflow task for an eager activity) and arms the attempt's start-to-close
/// and heartbeat timers, which replace its schedule-to-start timer. `worker_control_task_queue`
/// is where that worker process takes worker commands (empty: nowhere).
pub(super) fn start_attempt(
    batch: &mut ShardBatch,
    ms: &mut MutableState,
    activity: pb::ActivityInfo,
    identity: String,
    request_id: String,
    worker_control_task_queue: String,
) -> ApplyResult<pb::ActivityInfo> {
    let now = ms.now;
    let now_ms = millis(&now);
    let timer = |kind: TimeoutType| pb::TimerTask {
        kind: pb::timer_task::Kind::ActivityTimeout as i32,
        namespace_id: ms.state.namespace_id.clone(),
        workflow_id: ms.state.workflow_id.clone(),
        run_id: ms.state.run_id.clone(),
        event_id: activity.scheduled_event_id,
        attempt: activity.attempt,
        timeout_type: kind as i32,
        timer_id: String::new(),
    };
    let mut attempt_timer_keys = Vec::new();
    let start_to_close = opt_duration_millis(activity.start_to_close_timeout.as_ref());
    if start_to_close > 0 {
        attempt_timer_keys.push(batch.put_timer(
            timeout_fire_ms(now_ms, now_ms.saturating_add(start_to_close)),
            &timer(TimeoutType::StartToClose),
        )?);
    }
    let heartbeat = opt_duration_millis(activity.heartbeat_timeout.as_ref());
    if heartbeat > 0 {
        attempt_timer_keys.push(batch.put_timer(
            timeout_fire_ms(now_ms, now_ms.saturating_add(heartbeat)),
            &timer(TimeoutType::Heartbeat),
        )?);
    }
    let activity = pb::ActivityInfo {
        started: true,
        started_time: Some(now),
        started_identity: identity.clone(),
        started_request_id: request_id,
        last_worker_identity: identity,
        outbox_task_id: 0,
        attempt_timer_keys,
        worker_control_task_queue,
        ..activity
    };
    ms.state
        .activities
        .insert(activity.scheduled_event_id, activity.clone());
    Ok(activity)
}

/// What `RecordActivityTaskStarted` answers for a started attempt (also an eager activity's
/// entry in a workflow task completion's result).
pub(super) fn started_attempt(
    ms: &MutableState,
    activity: &pb::ActivityInfo,
) -> cmd::RecordActivityTaskStartedResult {
    cmd::RecordActivityTaskStartedResult {
        activity: Some(activity.clone()),
        workflow_type: ms.state.workflow_type.clone(),
        stale: false,
    }
}

/// A polled activity task carries the run's priority where the activity's sets none, as in
/// Temporal (an eager one, [`started_attempt`] alone, carries the activity's own).
fn started_result(ms: &MutableState, activity: &pb::ActivityInfo) -> command_result::Result {
    let mut started = started_attempt(ms, activity);
    if let Some(a) = started.activity.as_mut() {
        a.priority = chronicle_types::priority::merge(
            ms.state.priority.as_ref(),
            activity.priority.as_ref(),
        );
    }
    command_result::Result::ActivityTaskStarted(started)
}

/// Finds the activity a token (or a by-ID request: `scheduled_event_id` 0) names.
fn token_activity(ms: &MutableState, token: &pb::TaskToken) -> ApplyResult<pb::ActivityInfo> {
    if !ms.is_running() {
        return Err(ApiError::not_found("workflow execution already completed").into());
    }
    if token.scheduled_event_id == 0 {
        return ms
            .state
            .activities
            .values()
            .find(|a| a.activity_id == token.activity_id)
            .cloned()
            .ok_or_else(not_found);
    }
    match ms.state.activities.get(&token.scheduled_event_id) {
        Some(a) if a.attempt == token.attempt && a.started => Ok(a.clone()),
        _ => Err(not_found()),
    }
}

pub fn respond(
    batch: &mut ShardBatch,
    now: Timestamp,
    c: cmd::RespondActivity,
) -> ApplyResult<command_result::Result> {
    let (token, mut ms) = load_token_run(batch, now, &c.token)?;
    let completing = matches!(c.outcome, Some(respond_activity::Outcome::Completed(_)));
    if let Some(refusal) = super::standalone_activity::closed_refusal(&ms, &token, completing) {
        return Err(refusal);
    }
    let activity = token_activity(&ms, &token)?;
    // As Temporal's standalone activity: a cancellation is reported only after one was asked.
    if super::standalone_activity::is_standalone(&ms)
        && matches!(c.outcome, Some(respond_activity::Outcome::Canceled(_)))
        && !activity.cancel_requested
    {
        return Err(ApiError::invalid_argument(
            "unable to mark activity as canceled without activity being request canceled first",
        )
        .into());
    }
    match c.outcome {
        Some(respond_activity::Outcome::Completed(r)) => {
            finish(batch, &mut ms, &activity, true, |started_event_id| {
                (
                    EventType::ActivityTaskCompleted,
                    Attributes::ActivityTaskCompletedEventAttributes(
                        h::ActivityTaskCompletedEventAttributes {
                            result: r.result.clone(),
                            scheduled_event_id: activity.scheduled_event_id,
                            started_event_id,
                            identity: r.identity.clone(),
                            ..Default::default()
                        },
                    ),
                )
            })?;
        }
        Some(respond_activity::Outcome::Failed(r)) => {
            let failure = r.failure.clone().unwrap_or_default();
            let mut activity = activity;
            if r.last_heartbeat_details.is_some() {
                activity.heartbeat_details = r.last_heartbeat_details.clone();
            }
            // A standalone activity reset while this attempt ran starts over at attempt 1,
            // at once, whatever the failure and the retry policy say (as Temporal).
            let decision = if activity.reset_requested {
                Ok(0)
            } else {
                retry_decision(&activity, &failure, millis(&now))
            };
            match decision {
                // As Temporal: a paused activity's retryable failure only moves it to its next
                // attempt, which waits for the unpause (no backoff, no attempt limit yet).
                Ok(_) | Err(RetryState::MaximumAttemptsReached | RetryState::Timeout)
                    if activity.paused =>
                {
                    schedule_paused_retry(&mut ms, activity, failure)
                }
                Ok(delay_ms) => schedule_retry(batch, &mut ms, activity, failure, delay_ms)?,
                Err(retry_state) => {
                    finish(batch, &mut ms, &activity, true, |started_event_id| {
                        (
                            EventType::ActivityTaskFailed,
                            Attributes::ActivityTaskFailedEventAttributes(
                                h::ActivityTaskFailedEventAttributes {
                                    failure: Some(failure.clone()),
                                    scheduled_event_id: activity.scheduled_event_id,
                                    started_event_id,
                                    identity: r.identity.clone(),
                                    retry_state: retry_state as i32,
                                    ..Default::default()
                                },
                            ),
                        )
                    })?;
                }
            }
        }
        Some(respond_activity::Outcome::Canceled(r)) => {
            finish(batch, &mut ms, &activity, true, |started_event_id| {
                (
                    EventType::ActivityTaskCanceled,
                    Attributes::ActivityTaskCanceledEventAttributes(
                        h::ActivityTaskCanceledEventAttributes {
                            details: r.details.clone(),
                            latest_cancel_requested_event_id: activity.cancel_requested_event_id,
                            scheduled_event_id: activity.scheduled_event_id,
                            started_event_id,
                            identity: r.identity.clone(),
                            ..Default::default()
                        },
                    ),
                )
            })?;
        }
        None => return Err(ApiError::invalid_argument("activity outcome missing").into()),
    }
    ms.persist(batch);
    Ok(super::ok())
}

pub fn heartbeat(
    batch: &mut ShardBatch,
    now: Timestamp,
    c: cmd::RecordActivityHeartbeat,
) -> ApplyResult<command_result::Result> {
    let (token, mut ms) = load_token_run(batch, now, &c.token)?;
    if let Some(refusal) = super::standalone_activity::closed_refusal(&ms, &token, false) {
        return Err(refusal);
    }
    let activity = token_activity(&ms, &token)?;
    let entry = ms
        .state
        .activities
        .get_mut(&activity.scheduled_event_id)
        .expect("found above");
    entry.heartbeat_details = c.details;
    entry.last_heartbeat_time = Some(now);
    if let Some(record) = ms.state.standalone_activity.as_mut() {
        record.total_heartbeat_count = record.total_heartbeat_count.saturating_add(1);
    }
    if !c.identity.is_empty() {
        entry.last_worker_identity = c.identity;
    }
    let result = cmd::HeartbeatResult {
        cancel_requested: entry.cancel_requested,
        activity_paused: entry.paused,
        activity_reset: entry.reset_while_running,
    };
    ms.persist(batch);
    Ok(command_result::Result::Heartbeat(result))
}

/// Closes an activity: its Started event (only now, with the final attempt) and `result`.
fn finish(
    batch: &mut ShardBatch,
    ms: &mut MutableState,
    activity: &pb::ActivityInfo,
    write_started: bool,
    result: impl Fn(i64) -> (EventType, Attributes),
) -> ApplyResult<()> {
    if super::standalone_activity::is_standalone(ms) {
        // No events: the standalone activity's record closes with the outcome.
        let (_, attributes) = result(0);
        return super::standalone_activity::close_from_event(batch, ms, activity, attributes);
    }
    let buffered = ms.buffers_events();
    // Completing by ID an attempt no worker polled still records a Started event, as Temporal does.
    let started_event_id = if write_started {
        let started =
            Attributes::ActivityTaskStartedEventAttributes(h::ActivityTaskStartedEventAttributes {
                scheduled_event_id: activity.scheduled_event_id,
                identity: activity.started_identity.clone(),
                request_id: activity.started_request_id.clone(),
                attempt: activity.attempt,
                last_failure: activity.last_failure.clone(),
                ..Default::default()
            });
        let id = ms
            .add_or_buffer_event(EventType::ActivityTaskStarted, started)
            .unwrap_or(BUFFERED_ID);
        // Written only now, but dated when the attempt started, as in Temporal.
        if activity.started_time.is_some() {
            let event = if buffered {
                ms.state.buffered_events.last_mut()
            } else {
                ms.new_events.last_mut()
            };
            if let Some(event) = event {
                event.event_time = activity.started_time;
            }
        }
        id
    } else {
        0
    };
    let (event_type, attributes) = result(if buffered && started_event_id != 0 {
        BUFFERED_ID
    } else {
        started_event_id
    });
    ms.add_or_buffer_event(event_type, attributes);
    ms.state.activities.remove(&activity.scheduled_event_id);
    batch.delete_outbox(activity.outbox_task_id as u64);
    ms.schedule_workflow_task_if_needed(batch)?;
    Ok(())
}

/// `Ok(delay)` when the attempt is retried after `delay` ms; `Err(state)` when it is final.
fn retry_decision(
    activity: &pb::ActivityInfo,
    failure: &Failure,
    now_ms: i64,
) -> Result<i64, RetryState> {
    let policy = activity.retry_policy.clone().unwrap_or_default();
    if policy.maximum_attempts > 0 && activity.attempt >= policy.maximum_attempts {
        return Err(RetryState::MaximumAttemptsReached);
    }
    let mut explicit_delay = None;
    if let Some(FailureInfo::ApplicationFailureInfo(info)) = &failure.failure_info {
        if info.non_retryable || policy.non_retryable_error_types.contains(&info.r#type) {
            return Err(RetryState::NonRetryableFailure);
        }
        explicit_delay = info
            .next_retry_delay
            .as_ref()
            .map(duration_millis)
            .filter(|d| *d > 0);
    }
    if let Some(FailureInfo::TimeoutFailureInfo(info)) = &failure.failure_info {
        let name = match TimeoutType::try_from(info.timeout_type).unwrap_or_default() {
            TimeoutType::StartToClose => "TemporalTimeout:StartToClose",
            TimeoutType::Heartbeat => "TemporalTimeout:Heartbeat",
            TimeoutType::ScheduleToStart => "TemporalTimeout:ScheduleToStart",
            _ => "TemporalTimeout:ScheduleToClose",
        };
        if policy.non_retryable_error_types.iter().any(|t| t == name) {
            return Err(RetryState::NonRetryableFailure);
        }
    }
    let delay = explicit_delay.unwrap_or_else(|| next_retry_delay_ms(&policy, activity.attempt));
    let to_close = opt_duration_millis(activity.schedule_to_close_timeout.as_ref());
    if to_close > 0 {
        let expiration = activity
            .first_scheduled_time
            .as_ref()
            .map(millis)
            .unwrap_or(now_ms)
            .saturating_add(to_close);
        if now_ms.saturating_add(delay) >= expiration {
            return Err(RetryState::Timeout);
        }
    }
    Ok(delay)
}

/// Backoff before attempt `attempt + 1`: initial × coefficient^(attempt−1), capped.
pub fn next_retry_delay_ms(policy: &RetryPolicy, attempt: i32) -> i64 {
    let initial = opt_duration_millis(policy.initial_interval.as_ref()).max(1) as f64;
    let coefficient = if policy.backoff_coefficient < 1.0 {
        2.0
    } else {
        policy.backoff_coefficient
    };
    let max = opt_duration_millis(policy.maximum_interval.as_ref());
    let exponent = u32::try_from(attempt.saturating_sub(1)).unwrap_or(0);
    let delay = initial * deterministic_powi(coefficient, exponent);
    let delay = if max > 0 {
        delay.min(max as f64)
    } else {
        delay
    };
    // (A NaN or infinite product from an absurd coefficient clamps too.)
    chronicle_types::time::millis_from_f64(delay.min(i64::MAX as f64 / 2.0)).max(0)
}

/// `base^exponent` by squaring: a fixed sequence of IEEE multiplications, so every replica (any
/// platform, build or Rust version) computes the same bits. `f64::powi`'s precision is not
/// specified and may differ between platforms and builds, and the result decides a retry's fire
/// time, which is replicated state.
fn deterministic_powi(base: f64, mut exponent: u32) -> f64 {
    let (mut result, mut square) = (1.0f64, base);
    while exponent > 0 {
        if exponent & 1 == 1 {
            result *= square;
        }
        square *= square;
        exponent >>= 1;
    }
    result
}

pub fn retry_state_for(final_attempt: bool) -> RetryState {
    if final_attempt {
        RetryState::MaximumAttemptsReached
    } else {
        RetryState::InProgress
    }
}

/// The next attempt's state once an attempt ended: not started, the failure kept, and what a
/// reset asked for applied (the reset flag ends with the attempt; heartbeat details go if the
/// reset said so).
fn next_attempt(
    ms: &MutableState,
    activity: pb::ActivityInfo,
    failure: Failure,
) -> pb::ActivityInfo {
    let reset_heartbeats = activity.reset_heartbeats;
    // A standalone activity's reset that waited for this attempt (see
    // `activity_ops::standalone_reset`) takes effect now.
    let reset = activity.reset_requested;
    let restore_options = activity.reset_restore_options;
    let mut next = pb::ActivityInfo {
        attempt: if reset { 1 } else { activity.attempt + 1 },
        started: false,
        started_time: None,
        started_request_id: String::new(),
        started_identity: String::new(),
        last_failure: Some(failure),
        outbox_task_id: 0,
        attempt_timer_keys: Vec::new(),
        last_attempt_complete_time: Some(ms.now),
        reset_while_running: false,
        reset_heartbeats: false,
        reset_requested: false,
        reset_restore_options: false,
        ..activity
    };
    if reset_heartbeats {
        next.heartbeat_details = None;
        next.last_heartbeat_time = None;
    }
    if restore_options {
        super::activity_ops::restore_original(&mut next);
    }
    next
}

/// A paused activity's attempt failed: the next attempt waits, undispatched, for the unpause.
fn schedule_paused_retry(ms: &mut MutableState, activity: pb::ActivityInfo, failure: Failure) {
    let next = pb::ActivityInfo {
        next_attempt_schedule_time: None,
        ..next_attempt(ms, activity, failure)
    };
    ms.state.activities.insert(next.scheduled_event_id, next);
}

fn schedule_retry(
    batch: &mut ShardBatch,
    ms: &mut MutableState,
    activity: pb::ActivityInfo,
    failure: Failure,
    delay_ms: i64,
) -> ApplyResult<()> {
    let fire = ms.now_ms().saturating_add(delay_ms);
    let activity = next_attempt(ms, activity, failure);
    let next = pb::ActivityInfo {
        scheduled_time: Some(from_millis(fire)),
        next_attempt_schedule_time: Some(from_millis(fire)),
        ..activity
    };
    batch.put_timer(
        fire,
        &pb::TimerTask {
            kind: pb::timer_task::Kind::ActivityRetry as i32,
            namespace_id: ms.state.namespace_id.clone(),
            workflow_id: ms.state.workflow_id.clone(),
            run_id: ms.state.run_id.clone(),
            event_id: next.scheduled_event_id,
            attempt: next.attempt,
            ..Default::default()
        },
    )?;
    ms.state.activities.insert(next.scheduled_event_id, next);
    Ok(())
}

/// The retry backoff of an attempt elapsed: hand the attempt to matching.
pub fn retry_due(
    batch: &mut ShardBatch,
    ms: &mut MutableState,
    scheduled_event_id: i64,
    attempt: i32,
) -> ApplyResult<bool> {
    let Some(activity) = ms.state.activities.get(&scheduled_event_id).cloned() else {
        return Ok(false);
    };
    // A paused activity waits for its unpause; one already dispatched (an unpause or reset
    // dispatched it before this older timer fired) is not dispatched twice.
    if activity.attempt != attempt
        || activity.started
        || activity.paused
        || activity.outbox_task_id != 0
        || !ms.is_running()
    {
        return Ok(false);
    }
    let task_queue = activity.task_queue.clone().unwrap_or_default();
    let outbox = batch.put_outbox(&pb::OutboxTask {
        kind: pb::outbox_task::Kind::ActivityTask as i32,
        namespace_id: ms.state.namespace_id.clone(),
        workflow_id: ms.state.workflow_id.clone(),
        run_id: ms.state.run_id.clone(),
        task_queue: task_queue.name,
        task_queue_kind: task_queue.kind,
        scheduled_event_id,
        attempt,
        ..Default::default()
    })?;
    let to_start = opt_duration_millis(activity.schedule_to_start_timeout.as_ref());
    let mut attempt_timer_keys = Vec::new();
    if to_start > 0 {
        let now_ms = ms.now_ms();
        let key = batch.put_timer(
            timeout_fire_ms(now_ms, now_ms.saturating_add(to_start)),
            &pb::TimerTask {
                kind: pb::timer_task::Kind::ActivityTimeout as i32,
                namespace_id: ms.state.namespace_id.clone(),
                workflow_id: ms.state.workflow_id.clone(),
                run_id: ms.state.run_id.clone(),
                event_id: scheduled_event_id,
                attempt,
                timeout_type: TimeoutType::ScheduleToStart as i32,
                timer_id: String::new(),
            },
        )?;
        attempt_timer_keys.push(key);
    }
    let entry = ms
        .state
        .activities
        .get_mut(&scheduled_event_id)
        .expect("present");
    entry.outbox_task_id = outbox as i64;
    entry.attempt_timer_keys = attempt_timer_keys;
    entry.next_attempt_schedule_time = None;
    Ok(true)
}

fn timeout_failure(kind: TimeoutType, details: Option<Payloads>) -> Failure {
    let name = match kind {
        TimeoutType::StartToClose => "StartToClose",
        TimeoutType::ScheduleToStart => "ScheduleToStart",
        TimeoutType::ScheduleToClose => "ScheduleToClose",
        TimeoutType::Heartbeat => "Heartbeat",
        TimeoutType::Unspecified => "Unspecified",
    };
    Failure {
        message: format!("activity {name} timeout"),
        source: "Server".into(),
        failure_info: Some(FailureInfo::TimeoutFailureInfo(TimeoutFailureInfo {
            timeout_type: kind as i32,
            last_heartbeat_details: details,
        })),
        ..Default::default()
    }
}

/// An activity timer fired. Returns whether anything changed.
pub fn timed_out(
    batch: &mut ShardBatch,
    ms: &mut MutableState,
    task: &pb::TimerTask,
) -> ApplyResult<bool> {
    let Some(activity) = ms.state.activities.get(&task.event_id).cloned() else {
        return Ok(false);
    };
    let kind = TimeoutType::try_from(task.timeout_type).unwrap_or_default();
    // No timeout fires while the activity is paused (its unpause arms them again).
    if activity.paused {
        return Ok(false);
    }
    if !ms.is_running()
        || (kind != TimeoutType::ScheduleToClose && activity.attempt != task.attempt)
    {
        return Ok(false);
    }
    let now_ms = ms.now_ms();
    let retryable = match kind {
        TimeoutType::ScheduleToStart => {
            if activity.started {
                return Ok(false);
            }
            false
        }
        TimeoutType::StartToClose => {
            if !activity.started {
                return Ok(false);
            }
            true
        }
        TimeoutType::Heartbeat => {
            if !activity.started {
                return Ok(false);
            }
            // Heartbeats of an earlier attempt do not count for this one.
            let started = activity.started_time.as_ref().map(millis).unwrap_or(now_ms);
            let last = activity
                .last_heartbeat_time
                .as_ref()
                .map(millis)
                .unwrap_or(0)
                .max(started);
            let deadline =
                last.saturating_add(opt_duration_millis(activity.heartbeat_timeout.as_ref()));
            if deadline > now_ms {
                // Heartbeats arrived since this timer was set: check again at the new deadline.
                batch.put_timer(timeout_fire_ms(now_ms, deadline), task)?;
                return Ok(false);
            }
            true
        }
        _ => false,
    };
    let failure = timeout_failure(kind, activity.heartbeat_details.clone());
    let decision = if retryable && activity.reset_requested {
        Ok(0)
    } else if retryable {
        retry_decision(&activity, &failure, now_ms)
    } else {
        Err(RetryState::Timeout)
    };
    match decision {
        Ok(delay) => schedule_retry(batch, ms, activity, failure, delay)?,
        Err(retry_state) => {
            let retry_state = if retryable {
                retry_state
            } else {
                RetryState::Timeout
            };
            // As Temporal: the final timeout carries the last attempt's failure as its cause
            // (a schedule-to-close deadline that ends the retries says what was failing).
            let mut failure = failure;
            if failure.cause.is_none() {
                failure.cause = activity.last_failure.clone().map(Box::new);
            }
            finish(batch, ms, &activity, activity.started, |started_event_id| {
                (
                    EventType::ActivityTaskTimedOut,
                    Attributes::ActivityTaskTimedOutEventAttributes(
                        h::ActivityTaskTimedOutEventAttributes {
                            failure: Some(failure.clone()),
                            scheduled_event_id: activity.scheduled_event_id,
                            started_event_id,
                            retry_state: retry_state as i32,
                        },
                    ),
                )
            })?;
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::{MIN_TIMEOUT_DELAY_MS, timeout_fire_ms};

    #[test]
    fn a_timeout_not_yet_due_fires_no_sooner_than_the_floor_and_one_past_due_at_once() {
        let now = 1_000_000;
        // 200 ms: at the floor, a second after arming.
        assert_eq!(timeout_fire_ms(now, now + 200), now + MIN_TIMEOUT_DELAY_MS);
        // Longer than the floor: on time.
        assert_eq!(timeout_fire_ms(now, now + 1_300), now + 1_300);
        // Already due (re-armed after an unpause): at once, not a second later.
        assert_eq!(timeout_fire_ms(now, now - 5), now - 5);
        assert_eq!(timeout_fire_ms(now, now), now);
        // No overflow near the end of time.
        assert_eq!(timeout_fire_ms(i64::MAX - 10, i64::MAX - 5), i64::MAX);
    }
}
