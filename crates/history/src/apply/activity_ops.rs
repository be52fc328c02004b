//! Operations on a run that write no history event (`RunOperation`): the activity operations
//! behind `temporal activity pause|unpause|reset|update-options` (PauseActivity,
//! UnpauseActivity, ResetActivity, UpdateActivityOptions) and ResetStickyTaskQueue.
//!
//! As in Temporal, a paused activity gets no new attempt and none of its timeouts fire: an
//! attempt that is running may still complete, fail (the next attempt then waits for the
//! unpause) or be canceled, and its heartbeats answer `activity_paused`. Unpausing re-arms the
//! timeouts from the activity's own times (first schedule, attempt start, last heartbeat) and
//! dispatches a waiting attempt at once, or within the request's jitter. Temporal invalidates
//! stale dispatches with an activity "stamp"; here the dispatch's outbox row is deleted and
//! re-created, the attempt-keyed timers re-armed, and `retry_due` refuses an activity that is
//! already dispatched.

use chronicle_proto::chronicle::history::v1::{self as cmd, command_result, run_operation};
use chronicle_proto::chronicle::persistence::v1 as pb;
use chronicle_proto::temporal::api::activity::v1::ActivityOptions;
use chronicle_proto::temporal::api::enums::v1::TimeoutType;
use chronicle_proto::temporal::api::taskqueue::v1::TaskQueue;
use chronicle_proto::temporal::api::workflow::v1::pending_activity_info::{PauseInfo, pause_info};
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use chronicle_proto::wkt::Timestamp;
use chronicle_storage::ShardBatch;
use chronicle_types::ApiError;
use chronicle_types::time::{from_millis, millis, opt_duration_millis};

use super::activity::{next_retry_delay_ms, retry_due, timeout_fire_ms};
use super::{ApplyError, ApplyResult, load_run};
use crate::mutable_state::MutableState;

mod options;
pub(crate) mod pause_attribute;
mod standalone_reset;

pub(crate) use standalone_reset::restore_original;

pub(crate) use options::camel as camel_path;
pub use options::merge_options;

/// Temporal's `ErrActivityNotFound`.
fn activity_not_found() -> ApiError {
    ApiError::not_found(
        "Can't find pending activity with such ID. Invalid activityID or activity already completed",
    )
}

fn workflow_completed() -> ApiError {
    ApiError::not_found("workflow execution already completed")
}

/// Which pending activities a request names.
enum Selector<'a> {
    Id(&'a str),
    Type(&'a str),
    All,
}

/// The scheduled event IDs of the activities `selector` names (by ID: the one with that ID, or
/// none), in scheduled order.
fn select(ms: &MutableState, selector: &Selector<'_>) -> Vec<i64> {
    ms.state
        .activities
        .values()
        .filter(|a| match selector {
            Selector::Id(id) => a.activity_id == *id,
            Selector::Type(name) => a.activity_type.as_ref().is_some_and(|t| t.name == *name),
            Selector::All => true,
        })
        .map(|a| a.scheduled_event_id)
        .collect()
}

pub fn run_operation(
    batch: &mut ShardBatch,
    now: Timestamp,
    c: cmd::RunOperation,
) -> ApplyResult<command_result::Result> {
    let mut ms = match load_run(batch, now, &c.namespace_id, &c.workflow_id, &c.run_id) {
        // A standalone activity's key names the activity, as Temporal's message does.
        Err(ApplyError::Rejected(e)) if e.is_not_found() => {
            return Err(
                match chronicle_types::standalone_activity::activity_id(&c.workflow_id) {
                    Some(id) => ApiError::not_found(format!("activity not found for ID: {id}")),
                    None => e,
                }
                .into(),
            );
        }
        loaded => loaded?,
    };
    super::standalone_activity::check_operation(&ms, c.operation.as_ref())?;

    let jitter = Jitter(c.jitter_seed);
    let mut result = cmd::RunOperationResult::default();
    match c.operation {
        Some(run_operation::Operation::PauseActivity(r)) => {
            pause(batch, &mut ms, &r)?;
            pause_attribute::refresh(&mut ms);
        }
        Some(run_operation::Operation::UnpauseActivity(r)) => {
            unpause(batch, &mut ms, &r, jitter)?;
            pause_attribute::refresh(&mut ms);
        }
        Some(run_operation::Operation::ResetActivity(r))
            if super::standalone_activity::is_standalone(&ms) =>
        {
            standalone_reset::reset(batch, &mut ms, &r, &c.request_id, jitter)?;
        }
        Some(run_operation::Operation::ResetActivity(r)) => {
            reset(batch, &mut ms, &r, jitter)?;
            pause_attribute::refresh(&mut ms);
        }
        Some(run_operation::Operation::UpdateActivityOptions(r)) => {
            result.activity_options = Some(update_options(batch, &mut ms, &r)?);
        }
        Some(run_operation::Operation::ResetStickyTaskQueue(_)) => {
            // As Temporal: only a running workflow's stickiness is cleared; a task already on
            // the sticky queue moves on at its schedule-to-start timeout.
            if !ms.is_running() {
                return Err(workflow_completed().into());
            }
            ms.clear_sticky();
        }
        Some(run_operation::Operation::UpdateWorkflowExecutionOptions(r)) => {
            // Writes an event, and nothing at all when the options do not change.
            return super::workflow_options::update(batch, ms, &r)
                .map(command_result::Result::RunOperation);
        }
        None => return Err(ApiError::invalid_argument("run operation missing").into()),
    }
    ms.persist(batch);
    Ok(command_result::Result::RunOperation(result))
}

fn pause(
    batch: &mut ShardBatch,
    ms: &mut MutableState,
    r: &ws::PauseActivityRequest,
) -> ApplyResult<()> {
    use ws::pause_activity_request::Activity;
    let selector = match &r.activity {
        Some(Activity::Id(id)) => Selector::Id(id),
        Some(Activity::Type(t)) => Selector::Type(t),
        None => return Err(activity_id_or_type_not_set().into()),
    };
    let ids = select(ms, &selector);
    if ids.is_empty() {
        return Err(activity_not_found().into());
    }
    if !ms.is_running() {
        return Err(workflow_completed().into());
    }
    let now = ms.now;
    for id in ids {
        let a = ms.state.activities.get_mut(&id).expect("selected");
        if a.paused {
            if a.pause_request_id == r.request_id {
                continue;
            }
            return Err(ApiError::failed_precondition("activity is already paused").into());
        }
        a.paused = true;
        a.pause_request_id = r.request_id.clone();
        a.pause_info = Some(PauseInfo {
            pause_time: Some(now),
            paused_by: Some(pause_info::PausedBy::Manual(pause_info::Manual {
                identity: r.identity.clone(),
                reason: r.reason.clone(),
            })),
        });
        // No timeout fires while paused (persist deletes the timers no longer held), and an
        // attempt waiting in a queue is withdrawn; a running attempt is left to finish.
        a.schedule_timer_keys.clear();
        a.attempt_timer_keys.clear();
        if !a.started {
            withdraw_dispatch(batch, a);
        }
    }
    Ok(())
}

fn unpause(
    batch: &mut ShardBatch,
    ms: &mut MutableState,
    r: &ws::UnpauseActivityRequest,
    jitter: Jitter,
) -> ApplyResult<()> {
    use ws::unpause_activity_request::Activity;
    if !ms.is_running() {
        return Err(workflow_completed().into());
    }
    let selector = match &r.activity {
        Some(Activity::Id(id)) => Selector::Id(id),
        Some(Activity::Type(t)) => Selector::Type(t),
        Some(Activity::UnpauseAll(_)) => Selector::All,
        None => return Err(activity_id_or_type_not_set().into()),
    };
    let ids = select(ms, &selector);
    if ids.is_empty() {
        return Err(activity_not_found().into());
    }
    let jitter_ms = opt_duration_millis(r.jitter.as_ref());
    for id in ids {
        let mut a = ms.state.activities[&id].clone();
        if !a.paused {
            continue;
        }
        clear_pause(&mut a);
        if r.reset_attempts {
            a.attempt = 1;
        }
        if r.reset_heartbeat {
            a.heartbeat_details = None;
            a.last_heartbeat_time = None;
        }
        rearm_timers(batch, ms, &mut a)?;
        let fire = ms.now_ms().saturating_add(jitter.offset(id, jitter_ms));
        ms.state.activities.insert(id, a);
        if !ms.state.activities[&id].started {
            dispatch_at(batch, ms, id, fire)?;
        }
    }
    Ok(())
}

fn reset(
    batch: &mut ShardBatch,
    ms: &mut MutableState,
    r: &ws::ResetActivityRequest,
    jitter: Jitter,
) -> ApplyResult<()> {
    use ws::reset_activity_request::Activity;
    let selector = match &r.activity {
        Some(Activity::Id(id)) => Selector::Id(id),
        Some(Activity::Type(t)) => Selector::Type(t),
        Some(Activity::MatchAll(_)) => Selector::All,
        None => return Err(activity_id_or_type_not_set().into()),
    };
    let ids = select(ms, &selector);
    if ids.is_empty() {
        return Err(activity_not_found().into());
    }
    if !ms.is_running() {
        return Err(workflow_completed().into());
    }
    let jitter_ms = opt_duration_millis(r.jitter.as_ref());
    for id in ids {
        let mut a = ms.state.activities[&id].clone();
        let was_paused = a.paused;
        a.attempt = 1;
        // Heartbeats of the attempt running now say it was reset (until the next attempt).
        a.reset_while_running = true;
        if r.reset_heartbeat {
            a.reset_heartbeats = true;
        }
        if r.restore_original_options
            && let Some(original) = a.original_options.clone()
        {
            set_options(&mut a, &original);
        }
        if was_paused && !r.keep_paused {
            clear_pause(&mut a);
        }
        if !a.paused {
            // The attempt number changed, and the timers of a running attempt carry it.
            rearm_timers(batch, ms, &mut a)?;
        }
        let dispatch = !a.started && !a.paused;
        if dispatch && r.reset_heartbeat {
            a.heartbeat_details = None;
            a.last_heartbeat_time = None;
        }
        let fire = ms.now_ms().saturating_add(jitter.offset(id, jitter_ms));
        ms.state.activities.insert(id, a);
        if dispatch {
            let a = ms.state.activities.get_mut(&id).expect("present");
            withdraw_dispatch(batch, a);
            dispatch_at(batch, ms, id, fire)?;
        }
    }
    Ok(())
}

fn update_options(
    batch: &mut ShardBatch,
    ms: &mut MutableState,
    r: &ws::UpdateActivityOptionsRequest,
) -> ApplyResult<ActivityOptions> {
    use ws::update_activity_options_request::Activity;
    let paths: Vec<&str> = r
        .update_mask
        .as_ref()
        .map(|m| m.paths.iter().map(String::as_str).collect())
        .unwrap_or_default();
    if r.restore_original && !paths.is_empty() {
        return Err(
            ApiError::invalid_argument("Both UpdateMask and RestoreOriginal are provided").into(),
        );
    }
    let selector = match &r.activity {
        Some(Activity::Id(id)) => Selector::Id(id),
        Some(Activity::Type(t)) => Selector::Type(t),
        Some(Activity::MatchAll(_)) => Selector::All,
        None => return Err(activity_id_or_type_not_set().into()),
    };
    if !r.restore_original {
        if !ms.is_running() {
            return Err(workflow_completed().into());
        }
        if r.activity_options.is_none() {
            return Err(ApiError::invalid_argument("ActivityOptions are not provided").into());
        }
    }
    let ids = select(ms, &selector);
    if ids.is_empty() {
        return Err(activity_not_found().into());
    }
    if !r.restore_original && r.update_mask.is_none() {
        return Err(ApiError::invalid_argument("UpdateMask is not provided").into());
    }
    let mut last = ActivityOptions::default();
    for id in ids {
        let mut a = ms.state.activities[&id].clone();
        let current = options_of(&a);
        let new = if r.restore_original {
            let mut original = a
                .original_options
                .clone()
                .unwrap_or_else(|| current.clone());
            if let Some(tq) = original.task_queue.as_mut() {
                tq.normal_name.clear();
                tq.kind = 0;
            }
            original
        } else {
            let merged = merge_options(
                current.clone(),
                r.activity_options.as_ref().expect("checked"),
                &paths,
            )?;
            let activity_type = a.activity_type.as_ref().map(|t| t.name.as_str());
            options::normalize(
                merged,
                &ms.state.task_queue,
                &a.activity_id,
                activity_type.unwrap_or_default(),
            )?
        };
        if a.original_options.is_none() {
            a.original_options = Some(current);
        }
        set_options(&mut a, &new);
        if !a.paused {
            rearm_timers(batch, ms, &mut a)?;
        }
        let next_time = next_scheduled_time(&a, ms.now_ms());
        let waiting = !a.started;
        ms.state.activities.insert(id, a);
        if waiting {
            // A new task queue or timeouts: the attempt waiting in a queue (or backing off) is
            // dispatched again under the new options.
            let a = ms.state.activities.get_mut(&id).expect("present");
            withdraw_dispatch(batch, a);
            if !a.paused {
                dispatch_at(batch, ms, id, next_time)?;
            }
        }
        last = new;
    }
    Ok(last)
}

fn activity_id_or_type_not_set() -> ApiError {
    ApiError::invalid_argument("Either Activity.Id or Activity.Type should be set on request.")
}

fn clear_pause(a: &mut pb::ActivityInfo) {
    a.paused = false;
    a.pause_info = None;
    a.pause_request_id.clear();
}

/// Withdraws a waiting attempt's dispatch: its outbox row (a copy already in matching finds,
/// when polled, that the activity is not waiting under that row) and its schedule-to-start timer.
fn withdraw_dispatch(batch: &mut ShardBatch, a: &mut pb::ActivityInfo) {
    if a.outbox_task_id != 0 {
        batch.delete_outbox(a.outbox_task_id as u64);
    }
    a.outbox_task_id = 0;
    a.attempt_timer_keys.clear();
    a.next_attempt_schedule_time = None;
}

/// Dispatches the waiting attempt of activity `id` at `fire_ms`: at once (an outbox row and its
/// schedule-to-start timer) or through a retry timer.
fn dispatch_at(
    batch: &mut ShardBatch,
    ms: &mut MutableState,
    id: i64,
    fire_ms: i64,
) -> ApplyResult<()> {
    let now_ms = ms.now_ms();
    let a = ms.state.activities.get_mut(&id).expect("present");
    a.scheduled_time = Some(from_millis(fire_ms.max(now_ms)));
    let attempt = a.attempt;
    if fire_ms <= now_ms {
        retry_due(batch, ms, id, attempt)?;
        return Ok(());
    }
    a.next_attempt_schedule_time = Some(from_millis(fire_ms));
    batch.put_timer(
        fire_ms,
        &pb::TimerTask {
            kind: pb::timer_task::Kind::ActivityRetry as i32,
            namespace_id: ms.state.namespace_id.clone(),
            workflow_id: ms.state.workflow_id.clone(),
            run_id: ms.state.run_id.clone(),
            event_id: id,
            attempt,
            ..Default::default()
        },
    )?;
    Ok(())
}

/// Arms the activity's timeouts again from its own times, as Temporal re-creates them after an
/// unpause or an options change: schedule-to-close from the first schedule, and for a running
/// attempt start-to-close from its start and heartbeat from the last heartbeat. (A waiting
/// attempt's schedule-to-start is armed when it is dispatched.) Deadlines already past fire at
/// once; the others no sooner than a new timeout may ([`timeout_fire_ms`]).
fn rearm_timers(
    batch: &mut ShardBatch,
    ms: &MutableState,
    a: &mut pb::ActivityInfo,
) -> ApplyResult<()> {
    let timer = |kind: TimeoutType| pb::TimerTask {
        kind: pb::timer_task::Kind::ActivityTimeout as i32,
        namespace_id: ms.state.namespace_id.clone(),
        workflow_id: ms.state.workflow_id.clone(),
        run_id: ms.state.run_id.clone(),
        event_id: a.scheduled_event_id,
        attempt: a.attempt,
        timeout_type: kind as i32,
        timer_id: String::new(),
    };
    let now_ms = ms.now_ms();
    let at = |t: &Option<Timestamp>| t.as_ref().map(millis).unwrap_or(now_ms);
    let mut schedule_keys = Vec::new();
    let to_close = opt_duration_millis(a.schedule_to_close_timeout.as_ref());
    if to_close > 0 {
        let fire = timeout_fire_ms(now_ms, at(&a.first_scheduled_time).saturating_add(to_close));
        schedule_keys.push(batch.put_timer(fire, &timer(TimeoutType::ScheduleToClose))?);
    }
    if a.started {
        let mut attempt_keys = Vec::new();
        let started = at(&a.started_time);
        let start_to_close = opt_duration_millis(a.start_to_close_timeout.as_ref());
        if start_to_close > 0 {
            let fire = timeout_fire_ms(now_ms, started.saturating_add(start_to_close));
            attempt_keys.push(batch.put_timer(fire, &timer(TimeoutType::StartToClose))?);
        }
        let heartbeat = opt_duration_millis(a.heartbeat_timeout.as_ref());
        if heartbeat > 0 {
            let last = a.last_heartbeat_time.as_ref().map(millis).unwrap_or(0);
            let fire = timeout_fire_ms(now_ms, started.max(last).saturating_add(heartbeat));
            attempt_keys.push(batch.put_timer(fire, &timer(TimeoutType::Heartbeat))?);
        }
        a.attempt_timer_keys = attempt_keys;
    }
    a.schedule_timer_keys = schedule_keys;
    Ok(())
}

/// When a waiting attempt should be dispatched after its options changed (Temporal's
/// GetNextScheduledTime): the first attempt at once; a retry at the new policy's backoff for
/// this attempt, counted from the end of the previous attempt.
fn next_scheduled_time(a: &pb::ActivityInfo, now_ms: i64) -> i64 {
    match &a.last_attempt_complete_time {
        Some(ended) if a.attempt > 1 => {
            let policy = a.retry_policy.clone().unwrap_or_default();
            millis(ended).saturating_add(next_retry_delay_ms(&policy, a.attempt))
        }
        _ => now_ms,
    }
}

/// The activity's options as Temporal shows and merges them.
pub fn options_of(a: &pb::ActivityInfo) -> ActivityOptions {
    let policy = a.retry_policy.clone().unwrap_or_default();
    ActivityOptions {
        task_queue: Some(TaskQueue {
            name: a
                .task_queue
                .as_ref()
                .map(|t| t.name.clone())
                .unwrap_or_default(),
            kind: 0,
            normal_name: String::new(),
        }),
        schedule_to_close_timeout: a.schedule_to_close_timeout,
        schedule_to_start_timeout: a.schedule_to_start_timeout,
        start_to_close_timeout: a.start_to_close_timeout,
        heartbeat_timeout: a.heartbeat_timeout,
        retry_policy: Some(chronicle_proto::temporal::api::common::v1::RetryPolicy {
            initial_interval: policy.initial_interval,
            backoff_coefficient: policy.backoff_coefficient,
            maximum_interval: policy.maximum_interval,
            maximum_attempts: policy.maximum_attempts,
            non_retryable_error_types: Vec::new(),
        }),
        priority: a.priority.clone(),
        ..Default::default()
    }
}

/// Sets an activity's options (the non-retryable error types stay those it was scheduled
/// with, as in Temporal).
fn set_options(a: &mut pb::ActivityInfo, o: &ActivityOptions) {
    if let Some(tq) = &o.task_queue {
        let kind = a.task_queue.as_ref().map(|t| t.kind).unwrap_or(1);
        a.task_queue = Some(TaskQueue {
            name: tq.name.clone(),
            kind,
            normal_name: String::new(),
        });
    }
    a.schedule_to_close_timeout = o.schedule_to_close_timeout;
    a.schedule_to_start_timeout = o.schedule_to_start_timeout;
    a.start_to_close_timeout = o.start_to_close_timeout;
    a.heartbeat_timeout = o.heartbeat_timeout;
    a.priority = o.priority.clone();
    let mut policy = a.retry_policy.clone().unwrap_or_default();
    let new = o.retry_policy.clone().unwrap_or_default();
    policy.initial_interval = new.initial_interval;
    policy.backoff_coefficient = new.backoff_coefficient;
    policy.maximum_interval = new.maximum_interval;
    policy.maximum_attempts = new.maximum_attempts;
    a.retry_policy = Some(policy);
}

/// Offsets within a request's jitter, derived from the seed the leader chose and the activity
/// (SplitMix64), so replicas agree and activities of one request spread apart.
#[derive(Clone, Copy)]
struct Jitter(u64);

impl Jitter {
    fn offset(self, scheduled_event_id: i64, jitter_ms: i64) -> i64 {
        if jitter_ms <= 0 {
            return 0;
        }
        let mut z = self
            .0
            .wrapping_add((scheduled_event_id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z % jitter_ms as u64) as i64
    }
}
