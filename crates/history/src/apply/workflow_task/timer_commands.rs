//! The timer commands of a workflow task completion: StartTimer and CancelTimer.

use chronicle_proto::chronicle::persistence::v1 as pb;
use chronicle_proto::temporal::api::command::v1::{
    CancelTimerCommandAttributes, StartTimerCommandAttributes,
};
use chronicle_proto::temporal::api::enums::v1::{EventType, WorkflowTaskFailedCause as Cause};
use chronicle_proto::temporal::api::history::v1 as h;
use chronicle_proto::temporal::api::history::v1::history_event::Attributes;
use chronicle_storage::ShardBatch;

use super::{Rejection, reject};
use crate::mutable_state::MutableState;

/// StartTimer: a TimerStarted event and the timer task that fires it.
pub(super) fn start_timer(
    batch: &mut ShardBatch,
    ms: &mut MutableState,
    a: &StartTimerCommandAttributes,
    completed_id: i64,
) -> Result<bool, Rejection> {
    if a.timer_id.is_empty() || ms.state.timers.contains_key(&a.timer_id) {
        return Err(reject(
            Cause::BadStartTimerAttributes,
            format!("invalid or duplicate timer ID {:?}", a.timer_id),
        ));
    }
    if a.timer_id.len() > chronicle_types::limits::MAX_ID_LENGTH {
        return Err(reject(
            Cause::BadStartTimerAttributes,
            "TimerId on StartTimerCommand exceeds length limit.",
        ));
    }
    // As in Temporal, a zero (or absent) StartToFireTimeout is valid: the timer fires at
    // once. Only a negative one is refused.
    let fire_ms = chronicle_types::time::checked_duration_millis(a.start_to_fire_timeout.as_ref())
        .map_err(|e| {
            reject(
                Cause::BadStartTimerAttributes,
                format!(
                    "An invalid StartToFireTimeout is set on StartTimerCommand: {e}. TimerId={}",
                    a.timer_id
                ),
            )
        })?;
    let started_id = ms.add_event(
        EventType::TimerStarted,
        Attributes::TimerStartedEventAttributes(h::TimerStartedEventAttributes {
            timer_id: a.timer_id.clone(),
            start_to_fire_timeout: a.start_to_fire_timeout,
            workflow_task_completed_event_id: completed_id,
        }),
    );
    let expiry = ms.now_ms().saturating_add(fire_ms);
    ms.state.timers.insert(
        a.timer_id.clone(),
        pb::TimerInfo {
            timer_id: a.timer_id.clone(),
            started_event_id: started_id,
            expiry_time: Some(chronicle_types::time::from_millis(expiry)),
        },
    );
    batch.put_timer(
        expiry,
        &pb::TimerTask {
            kind: pb::timer_task::Kind::UserTimer as i32,
            namespace_id: ms.state.namespace_id.clone(),
            workflow_id: ms.state.workflow_id.clone(),
            run_id: ms.state.run_id.clone(),
            event_id: started_id,
            timer_id: a.timer_id.clone(),
            ..Default::default()
        },
    )?;
    Ok(false)
}

/// CancelTimer: a TimerCanceled event for a pending timer.
pub(super) fn cancel_timer(
    ms: &mut MutableState,
    a: &CancelTimerCommandAttributes,
    completed_id: i64,
) -> Result<bool, Rejection> {
    let Some(timer) = ms.state.timers.remove(&a.timer_id) else {
        return Err(reject(
            Cause::BadCancelTimerAttributes,
            format!("no pending timer with ID {:?}", a.timer_id),
        ));
    };
    ms.add_event(
        EventType::TimerCanceled,
        Attributes::TimerCanceledEventAttributes(h::TimerCanceledEventAttributes {
            timer_id: a.timer_id.clone(),
            started_event_id: timer.started_event_id,
            workflow_task_completed_event_id: completed_id,
            identity: String::new(),
        }),
    );
    Ok(false)
}
