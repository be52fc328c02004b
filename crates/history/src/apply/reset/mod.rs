//! ResetWorkflowExecution, as Temporal's workflow resetter does it: a new run of the workflow ID
//! whose history is the base run's up to the reset point, followed by
//!
//! 1. WorkflowTaskStarted (if the pending task had not started) and WorkflowTaskFailed with
//!    cause RESET_WORKFLOW, the reason, the base and new run IDs (identity history-service);
//! 2. ActivityTaskFailed (reset failure, non-retryable) for activities started in the prefix;
//! 3. the signals (and updates) received after the reset point, reapplied as the request asks;
//! 4. a new WorkflowTaskScheduled.
//!
//! The current run, if running, is terminated with the reset's reason by history-resetter; the
//! new run becomes the current run. Base and new run share the workflow ID, hence the shard, so
//! this is one command: every write lands in the same apply or none does.

mod reapply;
mod rebuild;
#[cfg(test)]
mod tests;

use chronicle_proto::chronicle::history::v1::{self as cmd, command_result};
use chronicle_proto::chronicle::persistence::v1 as pb;
use chronicle_proto::temporal::api::enums::v1::{
    EventType, RetryState, TimeoutType, WorkflowExecutionStatus, WorkflowTaskFailedCause,
};
use chronicle_proto::temporal::api::failure::v1::{
    Failure, ResetWorkflowFailureInfo, failure::FailureInfo,
};
use chronicle_proto::temporal::api::history::v1 as h;
use chronicle_proto::temporal::api::history::v1::HistoryEvent;
use chronicle_proto::temporal::api::history::v1::history_event::Attributes;
use chronicle_proto::wkt::Timestamp;
use chronicle_storage::ShardBatch;
use chronicle_types::ApiError;
use chronicle_types::time::{from_millis, millis, opt_duration_millis};

use super::activity::timeout_fire_ms;
use super::{ApplyResult, load_run, signal};
use crate::mutable_state::MutableState;

pub use rebuild::rebuild;

/// Who terminates the run a reset replaces, and who fails the reset's workflow task.
const IDENTITY_RESETTER: &str = "history-resetter";
const IDENTITY_HISTORY_SERVICE: &str = "history-service";

fn answer(run_id: String) -> command_result::Result {
    command_result::Result::ResetWorkflow(cmd::ResetWorkflowResult { run_id })
}

/// Temporal's failure for what a reset cut short (the workflow task, started activities).
fn reset_failure(
    reason: &str,
    details: Option<chronicle_proto::temporal::api::common::v1::Payloads>,
) -> Failure {
    Failure {
        message: reason.to_string(),
        failure_info: Some(FailureInfo::ResetWorkflowFailureInfo(
            ResetWorkflowFailureInfo {
                last_heartbeat_details: details,
            },
        )),
        ..Default::default()
    }
}

pub fn reset_workflow(
    batch: &mut ShardBatch,
    now: Timestamp,
    c: cmd::ResetWorkflow,
) -> ApplyResult<command_result::Result> {
    let request = c
        .request
        .ok_or_else(|| ApiError::invalid_argument("reset request missing"))?;
    let execution = request.workflow_execution.clone().unwrap_or_default();
    let ns = c.namespace_id.as_str();
    let workflow_id = execution.workflow_id.as_str();
    let base = if execution.run_id.is_empty() {
        load_run(batch, now, ns, workflow_id, "")?.state
    } else {
        // Temporal names both IDs when the run asked for does not exist.
        batch
            .execution(ns, workflow_id, &execution.run_id)?
            .ok_or_else(|| {
                ApiError::not_found(format!(
                    "workflow execution not found for workflow ID \"{workflow_id}\" and run ID \"{}\"",
                    execution.run_id
                ))
            })?
    };
    let finish = request.workflow_task_finish_event_id;
    if finish <= 1 || finish >= base.next_event_id {
        return Err(ApiError::invalid_argument(
            "Workflow task finish ID must be > 1 && <= workflow last event ID.",
        )
        .into());
    }
    let current = batch.current(ns, workflow_id)?;
    // A retried request finds the run it created still current: answer it again.
    if let Some(current) = &current
        && !request.request_id.is_empty()
        && batch
            .execution(ns, workflow_id, &current.run_id)?
            .is_some_and(|s| s.reset_request_id == request.request_id)
    {
        return Ok(answer(current.run_id.clone()));
    }
    let base_events = batch.full_history(ns, workflow_id, &base.run_id)?;
    let prefix: Vec<HistoryEvent> = base_events
        .iter()
        .filter(|e| e.event_id < finish)
        .cloned()
        .collect();
    if prefix.len() as i64 != finish - 1 {
        return Err(ApiError::internal(format!(
            "history of run {} is missing events before {finish}",
            base.run_id
        ))
        .into());
    }
    let state = rebuild(&base, &prefix, &c.new_run_id);
    let Some(task) = state.workflow_task.clone() else {
        return Err(ApiError::invalid_argument(format!(
            "Can only reset workflow to event ID in range [WorkflowTaskScheduled +1, WorkflowTaskStarted + 1]: {finish}"
        ))
        .into());
    };

    // The base run learns which run replaced it; a running current run is terminated. A reset
    // run's children stay (their closes are forwarded to the new run through `reset_run_id`),
    // so the termination applies no parent close policy to a base run's children.
    let mut base_ms = load_run(batch, now, ns, workflow_id, &base.run_id)?;
    base_ms.state.reset_run_id = c.new_run_id.clone();
    base_ms.persist(batch);
    if let Some(current) = current.filter(|c| c.status == WorkflowExecutionStatus::Running as i32) {
        let mut current_ms = load_run(batch, now, ns, workflow_id, &current.run_id)?;
        signal::terminate_run(
            batch,
            &mut current_ms,
            &request.reason,
            IDENTITY_RESETTER,
            None,
        )?;
        current_ms.persist(batch);
    }
    // Read after the termination: a signal it flushed from the buffer is reapplied too.
    let base_events = batch.full_history(ns, workflow_id, &base.run_id)?;
    let after = reapply::events_after_reset_point(
        batch,
        ns,
        workflow_id,
        &base.run_id,
        &base_events,
        finish,
    )?;

    let mut ms = MutableState::new(state, now);
    ms.new_events = prefix.clone();
    prepare_new_run(&mut ms, &request.request_id);
    fail_reset_task(
        &mut ms,
        &task,
        &request.reason,
        &base.run_id,
        &request.request_id,
    );
    fail_started_activities(&mut ms, &prefix, &request.reason);
    // The deprecated include type still counts, as in Temporal.
    #[allow(deprecated)]
    let excluded = reapply::excluded(
        request.reset_reapply_type,
        &request.reset_reapply_exclude_types,
    );
    reapply::reapply(&mut ms, &after, excluded);
    arm_pending_work(batch, &mut ms)?;
    ms.schedule_workflow_task(batch, 1)?;
    arm_run_timeout(batch, &ms)?;
    batch.put_current(
        ns,
        workflow_id,
        &pb::CurrentExecution {
            run_id: ms.state.run_id.clone(),
            status: WorkflowExecutionStatus::Running as i32,
            create_request_id: ms.state.create_request_id.clone(),
            start_time: ms.state.start_time,
        },
    );
    let run_id = ms.state.run_id.clone();
    ms.persist(batch);
    Ok(answer(run_id))
}

/// The new run starts now (its expiration counts from the reset, as Temporal refreshes it) and
/// remembers the reset that created it.
fn prepare_new_run(ms: &mut MutableState, request_id: &str) {
    let now_ms = ms.now_ms();
    ms.state.start_time = Some(ms.now);
    ms.state.execution_time = Some(ms.now);
    let execution_ms = opt_duration_millis(ms.state.workflow_execution_timeout.as_ref());
    ms.state.execution_expiration_time =
        (execution_ms > 0).then(|| from_millis(now_ms.saturating_add(execution_ms)));
    ms.state.reset_request_id = request_id.to_string();
    ms.state.last_reset_time = Some(ms.now);
}

/// The pending workflow task of the prefix fails with RESET_WORKFLOW (started first if it had
/// not started), as Temporal's resetter writes it.
fn fail_reset_task(
    ms: &mut MutableState,
    task: &pb::WorkflowTaskInfo,
    reason: &str,
    base_run_id: &str,
    request_id: &str,
) {
    let started_event_id = if task.started_event_id > 0 {
        task.started_event_id
    } else {
        ms.add_event(
            EventType::WorkflowTaskStarted,
            Attributes::WorkflowTaskStartedEventAttributes(h::WorkflowTaskStartedEventAttributes {
                scheduled_event_id: task.scheduled_event_id,
                identity: IDENTITY_HISTORY_SERVICE.to_string(),
                request_id: request_id.to_string(),
                history_size_bytes: ms.state.history_size_bytes,
                ..Default::default()
            }),
        )
    };
    let new_run_id = ms.state.run_id.clone();
    ms.add_event(
        EventType::WorkflowTaskFailed,
        Attributes::WorkflowTaskFailedEventAttributes(h::WorkflowTaskFailedEventAttributes {
            scheduled_event_id: task.scheduled_event_id,
            started_event_id,
            cause: WorkflowTaskFailedCause::ResetWorkflow as i32,
            failure: Some(reset_failure(reason, None)),
            identity: IDENTITY_HISTORY_SERVICE.to_string(),
            base_run_id: base_run_id.to_string(),
            new_run_id,
            ..Default::default()
        }),
    );
    ms.state.workflow_task = None;
}

/// An activity whose Started event is in the prefix (its result is not) fails for good; one that
/// had not started is scheduled again from now.
fn fail_started_activities(ms: &mut MutableState, prefix: &[HistoryEvent], reason: &str) {
    let mut started: Vec<pb::ActivityInfo> = ms
        .state
        .activities
        .values()
        .filter(|a| a.started)
        .cloned()
        .collect();
    started.sort_by_key(|a| a.scheduled_event_id);
    for activity in started {
        let started_event_id = prefix
            .iter()
            .rev()
            .find_map(|e| match e.attributes.as_ref() {
                Some(Attributes::ActivityTaskStartedEventAttributes(a))
                    if a.scheduled_event_id == activity.scheduled_event_id =>
                {
                    Some(e.event_id)
                }
                _ => None,
            })
            .unwrap_or_default();
        ms.add_event(
            EventType::ActivityTaskFailed,
            Attributes::ActivityTaskFailedEventAttributes(h::ActivityTaskFailedEventAttributes {
                failure: Some(reset_failure(reason, activity.heartbeat_details.clone())),
                scheduled_event_id: activity.scheduled_event_id,
                started_event_id,
                identity: activity.started_identity.clone(),
                retry_state: RetryState::NonRetryableFailure as i32,
                ..Default::default()
            }),
        );
        ms.state.activities.remove(&activity.scheduled_event_id);
    }
    let now = ms.now;
    for activity in ms.state.activities.values_mut() {
        activity.scheduled_time = Some(now);
        activity.first_scheduled_time = Some(now);
    }
}

/// Gives the new run's pending work its tasks: activities go to matching again (with their
/// schedule timeouts from now), timers fire when they would have, children whose start was not
/// recorded are started, and external signals and cancellations are delivered (with the base
/// run's request IDs, so a target that already has one takes it once).
fn arm_pending_work(batch: &mut ShardBatch, ms: &mut MutableState) -> ApplyResult<()> {
    let now_ms = ms.now_ms();
    let (ns, wf, run) = (
        ms.state.namespace_id.clone(),
        ms.state.workflow_id.clone(),
        ms.state.run_id.clone(),
    );
    let outbox = |kind: pb::outbox_task::Kind, event_id: i64| pb::OutboxTask {
        kind: kind as i32,
        namespace_id: ns.clone(),
        workflow_id: wf.clone(),
        run_id: run.clone(),
        scheduled_event_id: event_id,
        ..Default::default()
    };
    for activity in ms.state.activities.values_mut() {
        let queue = activity.task_queue.clone().unwrap_or_default();
        activity.outbox_task_id = batch.put_outbox(&pb::OutboxTask {
            task_queue: queue.name,
            task_queue_kind: queue.kind,
            attempt: activity.attempt,
            ..outbox(
                pb::outbox_task::Kind::ActivityTask,
                activity.scheduled_event_id,
            )
        })? as i64;
        let timer = |kind: TimeoutType| pb::TimerTask {
            kind: pb::timer_task::Kind::ActivityTimeout as i32,
            namespace_id: ns.clone(),
            workflow_id: wf.clone(),
            run_id: run.clone(),
            event_id: activity.scheduled_event_id,
            attempt: activity.attempt,
            timeout_type: kind as i32,
            timer_id: String::new(),
        };
        let to_start = opt_duration_millis(activity.schedule_to_start_timeout.as_ref());
        if to_start > 0 {
            activity.attempt_timer_keys = vec![batch.put_timer(
                timeout_fire_ms(now_ms, now_ms.saturating_add(to_start)),
                &timer(TimeoutType::ScheduleToStart),
            )?];
        }
        let to_close = opt_duration_millis(activity.schedule_to_close_timeout.as_ref());
        if to_close > 0 {
            activity.schedule_timer_keys = vec![batch.put_timer(
                timeout_fire_ms(now_ms, now_ms.saturating_add(to_close)),
                &timer(TimeoutType::ScheduleToClose),
            )?];
        }
    }
    for timer in ms.state.timers.values() {
        let expiry = timer.expiry_time.as_ref().map(millis).unwrap_or(now_ms);
        batch.put_timer(
            expiry,
            &pb::TimerTask {
                kind: pb::timer_task::Kind::UserTimer as i32,
                namespace_id: ns.clone(),
                workflow_id: wf.clone(),
                run_id: run.clone(),
                event_id: timer.started_event_id,
                timer_id: timer.timer_id.clone(),
                ..Default::default()
            },
        )?;
    }
    for child in ms.state.children.values().filter(|c| !c.started) {
        batch.put_outbox(&outbox(
            pb::outbox_task::Kind::StartChild,
            child.initiated_event_id,
        ))?;
    }
    for id in ms.state.request_cancels.keys() {
        batch.put_outbox(&outbox(pb::outbox_task::Kind::CancelExternal, *id))?;
    }
    for id in ms.state.external_signals.keys() {
        batch.put_outbox(&outbox(pb::outbox_task::Kind::SignalExternal, *id))?;
    }
    Ok(())
}

/// The new run's run timeout counts from the reset.
fn arm_run_timeout(batch: &mut ShardBatch, ms: &MutableState) -> ApplyResult<()> {
    let run_ms = opt_duration_millis(ms.state.workflow_run_timeout.as_ref());
    if run_ms > 0 {
        let mut fire = ms.now_ms().saturating_add(run_ms);
        if let Some(expiration) = ms.state.execution_expiration_time.as_ref() {
            fire = fire.min(millis(expiration));
        }
        batch.put_timer(
            fire,
            &pb::TimerTask {
                kind: pb::timer_task::Kind::WorkflowRunTimeout as i32,
                namespace_id: ms.state.namespace_id.clone(),
                workflow_id: ms.state.workflow_id.clone(),
                run_id: ms.state.run_id.clone(),
                ..Default::default()
            },
        )?;
    }
    Ok(())
}
