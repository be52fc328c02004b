//! The activity commands of a workflow task completion: ScheduleActivityTask (with Temporal's
//! timeout and retry policy defaults) and RequestCancelActivityTask.

use chronicle_proto::chronicle::persistence::v1 as pb;
use chronicle_proto::temporal::api::command::v1::RequestCancelActivityTaskCommandAttributes;
use chronicle_proto::temporal::api::common::v1::RetryPolicy;
use chronicle_proto::temporal::api::enums::v1::{
    EventType, TimeoutType, WorkflowTaskFailedCause, WorkflowTaskFailedCause as Cause,
};
use chronicle_proto::temporal::api::history::v1 as h;
use chronicle_proto::temporal::api::history::v1::history_event::Attributes;
use chronicle_proto::temporal::api::taskqueue::v1::TaskQueue;
use chronicle_storage::ShardBatch;
use chronicle_types::time::{duration_from_millis, opt_duration_millis};

use super::{CommandContext, Rejection, reject};
use crate::apply::activity::timeout_fire_ms;
use crate::mutable_state::MutableState;

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

/// ScheduleActivityTask: validates the command, applies Temporal's timeout defaults and bounds,
/// and records the activity (with its task for matching unless it starts eagerly); returns the
/// Scheduled event's ID.
pub(super) fn schedule_activity(
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
            timeout_fire_ms(now_ms, now_ms.saturating_add(to_start)),
            &timer(TimeoutType::ScheduleToStart),
        )?);
    }
    if to_close > 0 {
        schedule_timer_keys.push(batch.put_timer(
            timeout_fire_ms(now_ms, now_ms.saturating_add(to_close)),
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

/// RequestCancelActivityTask: a started attempt is asked to stop; one not started yet is
/// canceled at once.
pub(super) fn request_cancel_activity(
    batch: &mut ShardBatch,
    ms: &mut MutableState,
    a: &RequestCancelActivityTaskCommandAttributes,
    completed_id: i64,
    ctx: &mut CommandContext,
) -> Result<bool, Rejection> {
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
