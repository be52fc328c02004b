//! Rebuilds a run's mutable state from a prefix of its history, as Temporal's state rebuilder
//! does for a reset: the run-level settings come from the base run, everything that events
//! change (pending workflow task, activities, timers, children, external requests, updates,
//! memo and search attributes, cancellation) is replayed event by event.
//!
//! The result names no storage: pending activities and timers have no outbox rows or timer
//! keys yet (the caller arms them for the new run), so this module is pure and tested alone.

use chronicle_proto::chronicle::persistence::v1 as pb;
use chronicle_proto::chronicle::persistence::v1::update_info::Stage;
use chronicle_proto::temporal::api::enums::v1::WorkflowExecutionStatus;
use chronicle_proto::temporal::api::history::v1::HistoryEvent;
use chronicle_proto::temporal::api::history::v1::history_event::Attributes;
use chronicle_types::time::{from_millis, millis, opt_duration_millis};
use prost::Message;

use super::super::child::child_request_id;
use super::super::external::request_id;
use super::super::workflow_task::merge_payloads;

/// The state of a new run `new_run_id` whose history is `prefix` (events 1..=N of the base
/// run, in order). `base` is the base run's state: its run-level settings carry over, and its
/// run ID keeps the request IDs of pending children and external requests (so a delivery the
/// base run already made is recognised as the same one).
pub fn rebuild(
    base: &pb::WorkflowExecutionState,
    prefix: &[HistoryEvent],
    new_run_id: &str,
) -> pb::WorkflowExecutionState {
    let mut state = pb::WorkflowExecutionState {
        namespace_id: base.namespace_id.clone(),
        workflow_id: base.workflow_id.clone(),
        run_id: new_run_id.to_string(),
        workflow_type: base.workflow_type.clone(),
        task_queue: base.task_queue.clone(),
        status: WorkflowExecutionStatus::Running as i32,
        next_event_id: 1,
        start_time: base.start_time,
        original_start_time: prefix.first().and_then(|e| e.event_time),
        execution_time: base.execution_time,
        workflow_execution_timeout: base.workflow_execution_timeout,
        workflow_run_timeout: base.workflow_run_timeout,
        workflow_task_timeout: base.workflow_task_timeout,
        first_run_id: base.first_run_id.clone(),
        create_request_id: base.create_request_id.clone(),
        retry_policy: base.retry_policy.clone(),
        attempt: base.attempt,
        execution_expiration_time: base.execution_expiration_time,
        identity: base.identity.clone(),
        parent: base.parent.clone(),
        root_execution: base.root_execution.clone(),
        priority: base.priority.clone(),
        user_metadata: base.user_metadata.clone(),
        cron_schedule: base.cron_schedule.clone(),
        scheduled_by: base.scheduled_by.clone(),
        // The operations the chain backs are completed by the run that replaces it.
        completion_callbacks: base.completion_callbacks.clone(),
        attached_request_ids: base.attached_request_ids.clone(),
        ..Default::default()
    };
    let base_run = base.run_id.as_str();
    for event in prefix {
        apply_event(&mut state, base_run, event);
        state.next_event_id = event.event_id + 1;
        state.history_size_bytes += event.encoded_len() as i64;
    }
    state
}

fn event_millis(event: &HistoryEvent) -> i64 {
    event.event_time.as_ref().map(millis).unwrap_or_default()
}

// `control` is deprecated in the API but still carried, as the commands that wrote it do.
#[allow(deprecated)]
fn apply_event(state: &mut pb::WorkflowExecutionState, base_run: &str, event: &HistoryEvent) {
    let id = event.event_id;
    let Some(attributes) = event.attributes.as_ref() else {
        return;
    };
    match attributes {
        Attributes::WorkflowExecutionStartedEventAttributes(a) => {
            state.memo = a.memo.clone();
            state.search_attributes = a.search_attributes.clone();
        }
        Attributes::WorkflowTaskScheduledEventAttributes(a) => {
            state.workflow_task = Some(pb::WorkflowTaskInfo {
                scheduled_event_id: id,
                attempt: a.attempt.max(1),
                task_queue: state.task_queue.clone(),
                task_queue_kind: 1,
                scheduled_time: event.event_time,
                start_to_close_timeout: a.start_to_close_timeout,
                ..Default::default()
            });
        }
        Attributes::WorkflowTaskStartedEventAttributes(a) => {
            if let Some(task) = state
                .workflow_task
                .as_mut()
                .filter(|t| t.scheduled_event_id == a.scheduled_event_id)
            {
                task.started_event_id = id;
                task.started_time = event.event_time;
                task.started_request_id = a.request_id.clone();
                task.started_identity = a.identity.clone();
            }
        }
        Attributes::WorkflowTaskCompletedEventAttributes(a) => {
            state.workflow_task = None;
            state.last_completed_workflow_task_started_event_id = a.started_event_id;
        }
        Attributes::WorkflowTaskFailedEventAttributes(_)
        | Attributes::WorkflowTaskTimedOutEventAttributes(_) => {
            state.workflow_task = None;
        }
        Attributes::ActivityTaskScheduledEventAttributes(a) => {
            state.activities.insert(
                id,
                pb::ActivityInfo {
                    scheduled_event_id: id,
                    activity_id: a.activity_id.clone(),
                    activity_type: a.activity_type.clone(),
                    task_queue: a.task_queue.clone(),
                    header: a.header.clone(),
                    input: a.input.clone(),
                    schedule_to_close_timeout: a.schedule_to_close_timeout,
                    schedule_to_start_timeout: a.schedule_to_start_timeout,
                    start_to_close_timeout: a.start_to_close_timeout,
                    heartbeat_timeout: a.heartbeat_timeout,
                    retry_policy: a.retry_policy.clone(),
                    attempt: 1,
                    first_scheduled_time: event.event_time,
                    scheduled_time: event.event_time,
                    workflow_task_completed_event_id: a.workflow_task_completed_event_id,
                    priority: a.priority.clone(),
                    ..Default::default()
                },
            );
        }
        Attributes::ActivityTaskStartedEventAttributes(a) => {
            if let Some(activity) = state.activities.get_mut(&a.scheduled_event_id) {
                activity.started = true;
                activity.started_time = event.event_time;
                activity.attempt = a.attempt.max(1);
                activity.started_identity = a.identity.clone();
                activity.started_request_id = a.request_id.clone();
                activity.last_worker_identity = a.identity.clone();
                activity.last_failure = a.last_failure.clone();
            }
        }
        Attributes::ActivityTaskCompletedEventAttributes(a) => {
            state.activities.remove(&a.scheduled_event_id);
        }
        Attributes::ActivityTaskFailedEventAttributes(a) => {
            state.activities.remove(&a.scheduled_event_id);
        }
        Attributes::ActivityTaskTimedOutEventAttributes(a) => {
            state.activities.remove(&a.scheduled_event_id);
        }
        Attributes::ActivityTaskCanceledEventAttributes(a) => {
            state.activities.remove(&a.scheduled_event_id);
        }
        Attributes::ActivityTaskCancelRequestedEventAttributes(a) => {
            if let Some(activity) = state.activities.get_mut(&a.scheduled_event_id) {
                activity.cancel_requested = true;
                activity.cancel_requested_event_id = id;
            }
        }
        Attributes::TimerStartedEventAttributes(a) => {
            let fire_ms = opt_duration_millis(a.start_to_fire_timeout.as_ref()).max(0);
            state.timers.insert(
                a.timer_id.clone(),
                pb::TimerInfo {
                    timer_id: a.timer_id.clone(),
                    started_event_id: id,
                    expiry_time: Some(from_millis(event_millis(event).saturating_add(fire_ms))),
                },
            );
        }
        Attributes::TimerFiredEventAttributes(a) => {
            state.timers.remove(&a.timer_id);
        }
        Attributes::TimerCanceledEventAttributes(a) => {
            state.timers.remove(&a.timer_id);
        }
        Attributes::StartChildWorkflowExecutionInitiatedEventAttributes(a) => {
            state.children.insert(
                id,
                pb::ChildExecutionInfo {
                    initiated_event_id: id,
                    namespace: a.namespace.clone(),
                    namespace_id: a.namespace_id.clone(),
                    workflow_id: a.workflow_id.clone(),
                    workflow_type: a.workflow_type.clone(),
                    parent_close_policy: a.parent_close_policy,
                    create_request_id: child_request_id(base_run, id),
                    workflow_task_completed_event_id: a.workflow_task_completed_event_id,
                    control: a.control.clone(),
                    ..Default::default()
                },
            );
        }
        Attributes::ChildWorkflowExecutionStartedEventAttributes(a) => {
            if let Some(child) = state.children.get_mut(&a.initiated_event_id) {
                child.started = true;
                child.started_event_id = id;
                child.started_run_id = a
                    .workflow_execution
                    .as_ref()
                    .map(|e| e.run_id.clone())
                    .unwrap_or_default();
            }
        }
        Attributes::StartChildWorkflowExecutionFailedEventAttributes(a) => {
            state.children.remove(&a.initiated_event_id);
        }
        Attributes::ChildWorkflowExecutionCompletedEventAttributes(a) => {
            state.children.remove(&a.initiated_event_id);
        }
        Attributes::ChildWorkflowExecutionFailedEventAttributes(a) => {
            state.children.remove(&a.initiated_event_id);
        }
        Attributes::ChildWorkflowExecutionCanceledEventAttributes(a) => {
            state.children.remove(&a.initiated_event_id);
        }
        Attributes::ChildWorkflowExecutionTimedOutEventAttributes(a) => {
            state.children.remove(&a.initiated_event_id);
        }
        Attributes::ChildWorkflowExecutionTerminatedEventAttributes(a) => {
            state.children.remove(&a.initiated_event_id);
        }
        Attributes::RequestCancelExternalWorkflowExecutionInitiatedEventAttributes(a) => {
            let request = pb::ExternalRequestInfo {
                namespace: a.namespace.clone(),
                namespace_id: a.namespace_id.clone(),
                execution: a.workflow_execution.clone(),
                child_workflow_only: a.child_workflow_only,
                workflow_task_completed_event_id: a.workflow_task_completed_event_id,
                control: a.control.clone(),
                ..Default::default()
            };
            state
                .request_cancels
                .insert(id, pending_external(request, base_run, "cancel", id));
        }
        Attributes::ExternalWorkflowExecutionCancelRequestedEventAttributes(a) => {
            state.request_cancels.remove(&a.initiated_event_id);
        }
        Attributes::RequestCancelExternalWorkflowExecutionFailedEventAttributes(a) => {
            state.request_cancels.remove(&a.initiated_event_id);
        }
        Attributes::SignalExternalWorkflowExecutionInitiatedEventAttributes(a) => {
            let request = pb::ExternalRequestInfo {
                namespace: a.namespace.clone(),
                namespace_id: a.namespace_id.clone(),
                execution: a.workflow_execution.clone(),
                child_workflow_only: a.child_workflow_only,
                workflow_task_completed_event_id: a.workflow_task_completed_event_id,
                control: a.control.clone(),
                ..Default::default()
            };
            state
                .external_signals
                .insert(id, pending_external(request, base_run, "signal", id));
        }
        Attributes::ExternalWorkflowExecutionSignaledEventAttributes(a) => {
            state.external_signals.remove(&a.initiated_event_id);
        }
        Attributes::SignalExternalWorkflowExecutionFailedEventAttributes(a) => {
            state.external_signals.remove(&a.initiated_event_id);
        }
        Attributes::WorkflowExecutionCancelRequestedEventAttributes(_) => {
            state.cancel_requested = true;
        }
        Attributes::UpsertWorkflowSearchAttributesEventAttributes(a) => {
            if let Some(upsert) = &a.search_attributes {
                let merged = state.search_attributes.get_or_insert_with(Default::default);
                merge_payloads(&mut merged.indexed_fields, &upsert.indexed_fields);
            }
        }
        Attributes::WorkflowPropertiesModifiedEventAttributes(a) => {
            if let Some(upsert) = &a.upserted_memo {
                let memo = state.memo.get_or_insert_with(Default::default);
                merge_payloads(&mut memo.fields, &upsert.fields);
            }
        }
        Attributes::WorkflowExecutionOptionsUpdatedEventAttributes(a) => {
            // The new run keeps the options its history's prefix set, as Temporal's replay does.
            crate::apply::workflow_options::apply_event(state, a);
        }
        Attributes::WorkflowExecutionUpdateAdmittedEventAttributes(a) => {
            // Admitted by this event and not (yet, in the prefix) accepted: the new run's
            // worker reads it from history, as the base run's did.
            let update_id = a
                .request
                .as_ref()
                .and_then(|r| r.meta.as_ref())
                .map(|m| m.update_id.clone())
                .unwrap_or_default();
            let sequence = state.next_update_sequence;
            state.next_update_sequence += 1;
            state.updates.insert(
                update_id.clone(),
                pb::UpdateInfo {
                    update_id,
                    stage: Stage::Admitted as i32,
                    admitted_event_id: id,
                    sequence,
                    ..Default::default()
                },
            );
        }
        Attributes::WorkflowExecutionUpdateAcceptedEventAttributes(a) => {
            let sequence = state.next_update_sequence;
            state.next_update_sequence += 1;
            state.updates.insert(
                a.protocol_instance_id.clone(),
                pb::UpdateInfo {
                    update_id: a.protocol_instance_id.clone(),
                    stage: Stage::Accepted as i32,
                    accepted_event_id: id,
                    sequence,
                    ..Default::default()
                },
            );
        }
        Attributes::WorkflowExecutionUpdateCompletedEventAttributes(a) => {
            let update_id = a
                .meta
                .as_ref()
                .map(|m| m.update_id.clone())
                .unwrap_or_default();
            if let Some(update) = state.updates.get_mut(&update_id) {
                update.stage = Stage::Completed as i32;
                update.completed_event_id = id;
                update.outcome = a.outcome.clone();
            }
        }
        _ => {}
    }
}

/// A pending external cancel or signal of the prefix: initiated at `id`, with the request ID the
/// new run sends it under.
fn pending_external(
    mut request: pb::ExternalRequestInfo,
    base_run: &str,
    what: &str,
    id: i64,
) -> pb::ExternalRequestInfo {
    request.initiated_event_id = id;
    request.request_id = request_id(base_run, what, id);
    request
}
