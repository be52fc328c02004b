//! Answers built from a shard's tables: poll responses, history pages, describe, list.

use chronicle_proto::chronicle::persistence::v1 as pb;
use chronicle_proto::temporal::api::common::v1::{WorkflowExecution, WorkflowType};
use chronicle_proto::temporal::api::enums::v1::{
    PendingActivityState, PendingWorkflowTaskState, TaskQueueKind, WorkflowExecutionStatus,
};
use chronicle_proto::temporal::api::history::v1::{History, HistoryEvent};
use chronicle_proto::temporal::api::taskqueue::v1::TaskQueue;
use chronicle_proto::temporal::api::workflow::v1 as wf;
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use chronicle_types::{ApiError, ApiResult};

use crate::engine::Shard;
use crate::tokens::PageToken;

/// Largest history page returned in one response.
pub const MAX_PAGE_EVENTS: usize = 1000;

pub fn storage(e: chronicle_storage::StorageError) -> ApiError {
    ApiError::internal(format!("storage: {e}"))
}

/// The run an execution names (the current run when `run_id` is empty).
pub fn load_state(
    shard: &Shard,
    namespace_id: &str,
    execution: &Option<WorkflowExecution>,
) -> ApiResult<pb::WorkflowExecutionState> {
    let execution = execution.clone().unwrap_or_default();
    if execution.workflow_id.is_empty() {
        return Err(ApiError::invalid_argument(
            "WorkflowId is not set on request.",
        ));
    }
    let run_id = if execution.run_id.is_empty() {
        match shard
            .tables
            .current(namespace_id, &execution.workflow_id)
            .map_err(storage)?
        {
            Some(c) => c.run_id,
            None => return Err(ApiError::workflow_not_found_for(&execution.workflow_id, "")),
        }
    } else {
        execution.run_id.clone()
    };
    shard
        .tables
        .execution(namespace_id, &execution.workflow_id, &run_id)
        .map_err(storage)?
        .ok_or_else(|| ApiError::workflow_not_found_for(&execution.workflow_id, &run_id))
}

/// Events `[from, to]` (to = 0: to the end), at most `page_size`; plus the token of the rest.
pub fn history_page(
    shard: &Shard,
    state: &pb::WorkflowExecutionState,
    from: i64,
    to: i64,
    page_size: usize,
) -> ApiResult<(Vec<HistoryEvent>, Vec<u8>)> {
    let page_size = page_size.clamp(1, MAX_PAGE_EVENTS);
    let Some((from, last, wanted)) =
        crate::tokens::forward_span(from, to, state.next_event_id, page_size)
    else {
        return Ok((Vec::new(), Vec::new()));
    };
    let events = shard
        .tables
        .history(
            &state.namespace_id,
            &state.workflow_id,
            &state.run_id,
            from,
            wanted,
        )
        .map_err(storage)?;
    let next = events
        .last()
        .map(|e| e.event_id.saturating_add(1))
        .unwrap_or(from);
    let token = if next <= last {
        PageToken {
            next_event_id: next,
            last_event_id: to,
            run_id: state.run_id.clone(),
        }
        .encode()
    } else {
        Vec::new()
    };
    Ok((events, token))
}

pub fn execution_of(state: &pb::WorkflowExecutionState) -> WorkflowExecution {
    WorkflowExecution {
        workflow_id: state.workflow_id.clone(),
        run_id: state.run_id.clone(),
    }
}

/// The poll answer for a workflow task that was just recorded as started.
pub fn workflow_task_response(
    shard: &Shard,
    state: &pb::WorkflowExecutionState,
    started: &chronicle_proto::chronicle::history::v1::RecordWorkflowTaskStartedResult,
    task_token: Vec<u8>,
) -> ApiResult<ws::PollWorkflowTaskQueueResponse> {
    // A sticky worker has the run cached: it gets only the events after its last task.
    let sticky = state.workflow_task.as_ref().is_some_and(|t| {
        t.task_queue_kind == TaskQueueKind::Sticky as i32
            && t.started_event_id == started.started_event_id
    });
    let from = if sticky && started.previous_started_event_id > 0 {
        started.previous_started_event_id + 1
    } else {
        1
    };
    let transient = state
        .workflow_task
        .as_ref()
        .filter(|t| t.transient && t.started_event_id == started.started_event_id);
    let (events, next_page_token) = match transient {
        None => history_page(
            shard,
            state,
            from,
            started.started_event_id,
            MAX_PAGE_EVENTS,
        )?,
        Some(task) => {
            // The attempt's own events are not stored yet; they end the history the worker gets.
            // Sent in one page, since a later page request cannot know about them.
            let mut events = shard
                .tables
                .history(
                    &state.namespace_id,
                    &state.workflow_id,
                    &state.run_id,
                    from,
                    (task.scheduled_event_id - from).max(0) as usize,
                )
                .map_err(storage)?;
            let ms = crate::mutable_state::MutableState::new(
                state.clone(),
                started.started_time.unwrap_or_default(),
            );
            events.extend(ms.transient_events(task));
            (events, Vec::new())
        }
    };
    Ok(ws::PollWorkflowTaskQueueResponse {
        task_token,
        workflow_execution: Some(execution_of(state)),
        workflow_type: started
            .workflow_type
            .clone()
            .or_else(|| state.workflow_type.clone()),
        previous_started_event_id: started.previous_started_event_id,
        started_event_id: started.started_event_id,
        attempt: started.attempt,
        backlog_count_hint: 0,
        history: Some(History { events }),
        next_page_token,
        workflow_execution_task_queue: Some(TaskQueue {
            name: state.task_queue.clone(),
            kind: TaskQueueKind::Normal as i32,
            normal_name: String::new(),
        }),
        scheduled_time: started.scheduled_time,
        started_time: started.started_time,
        ..Default::default()
    })
}

pub fn execution_info(state: &pb::WorkflowExecutionState) -> wf::WorkflowExecutionInfo {
    let duration = match (&state.close_time, &state.execution_time) {
        (Some(close), Some(exec)) => Some(chronicle_types::time::duration_from_millis(
            chronicle_types::time::millis(close)
                .saturating_sub(chronicle_types::time::millis(exec)),
        )),
        _ => None,
    };
    wf::WorkflowExecutionInfo {
        execution: Some(execution_of(state)),
        r#type: state
            .workflow_type
            .clone()
            .or(Some(WorkflowType::default())),
        start_time: state.start_time,
        close_time: state.close_time,
        status: state.status,
        history_length: state.next_event_id - 1,
        execution_time: state.execution_time,
        memo: state.memo.clone(),
        search_attributes: state.search_attributes.clone(),
        task_queue: state.task_queue.clone(),
        state_transition_count: state.state_transition_count,
        history_size_bytes: state.history_size_bytes,
        execution_duration: duration,
        first_run_id: state.first_run_id.clone(),
        parent_namespace_id: state
            .parent
            .as_ref()
            .map(|p| p.namespace_id.clone())
            .unwrap_or_default(),
        parent_execution: state.parent.as_ref().and_then(|p| p.execution.clone()),
        root_execution: state
            .root_execution
            .clone()
            .or_else(|| Some(execution_of(state))),
        priority: state.priority.clone(),
        versioning_info: state.versioning_info.as_ref().map(|info| {
            let mut info = info.clone();
            info.versioning_override = info
                .versioning_override
                .as_ref()
                .map(crate::apply::described_override);
            info
        }),
        ..Default::default()
    }
}

pub fn describe(state: &pb::WorkflowExecutionState) -> ws::DescribeWorkflowExecutionResponse {
    let pending_activities = state
        .activities
        .values()
        .map(|a| {
            // A paused activity shows PAUSED while no attempt runs, PAUSE_REQUESTED while one
            // still does (a cancellation request shows first), as in Temporal.
            let activity_state = if a.cancel_requested {
                PendingActivityState::CancelRequested
            } else if a.started && a.paused {
                PendingActivityState::PauseRequested
            } else if a.started {
                PendingActivityState::Started
            } else if a.paused {
                PendingActivityState::Paused
            } else {
                PendingActivityState::Scheduled
            };
            let to_close =
                chronicle_types::time::opt_duration_millis(a.schedule_to_close_timeout.as_ref());
            wf::PendingActivityInfo {
                activity_id: a.activity_id.clone(),
                activity_type: a.activity_type.clone(),
                state: activity_state as i32,
                heartbeat_details: a.heartbeat_details.clone(),
                last_heartbeat_time: a.last_heartbeat_time,
                last_started_time: a.started_time,
                attempt: a.attempt,
                maximum_attempts: a
                    .retry_policy
                    .as_ref()
                    .map(|p| p.maximum_attempts)
                    .unwrap_or(0),
                scheduled_time: a.scheduled_time,
                expiration_time: (to_close > 0).then(|| {
                    chronicle_types::time::from_millis(
                        a.first_scheduled_time
                            .as_ref()
                            .map(chronicle_types::time::millis)
                            .unwrap_or(0)
                            .saturating_add(to_close),
                    )
                }),
                last_failure: a.last_failure.clone(),
                last_worker_identity: a.last_worker_identity.clone(),
                next_attempt_schedule_time: if a.started || a.paused {
                    None
                } else {
                    a.next_attempt_schedule_time
                },
                paused: a.paused,
                pause_info: a.pause_info.clone().filter(|_| a.paused),
                activity_options: Some(activity_options(a)),
                priority: a.priority.clone(),
                ..Default::default()
            }
        })
        .collect();
    let pending_workflow_task = state
        .workflow_task
        .as_ref()
        .map(|t| wf::PendingWorkflowTaskInfo {
            state: if t.started_event_id > 0 {
                PendingWorkflowTaskState::Started
            } else {
                PendingWorkflowTaskState::Scheduled
            } as i32,
            scheduled_time: t.scheduled_time,
            original_scheduled_time: t.scheduled_time,
            started_time: t.started_time,
            attempt: t.attempt,
        });
    let mut children: Vec<&pb::ChildExecutionInfo> = state.children.values().collect();
    children.sort_by_key(|c| c.initiated_event_id);
    let pending_children = children
        .into_iter()
        .map(|c| wf::PendingChildExecutionInfo {
            workflow_id: c.workflow_id.clone(),
            run_id: c.started_run_id.clone(),
            workflow_type_name: c
                .workflow_type
                .as_ref()
                .map(|t| t.name.clone())
                .unwrap_or_default(),
            initiated_id: c.initiated_event_id,
            parent_close_policy: c.parent_close_policy,
        })
        .collect();
    ws::DescribeWorkflowExecutionResponse {
        pending_children,
        execution_config: Some(wf::WorkflowExecutionConfig {
            task_queue: Some(TaskQueue {
                name: state.task_queue.clone(),
                kind: TaskQueueKind::Normal as i32,
                normal_name: String::new(),
            }),
            workflow_execution_timeout: state.workflow_execution_timeout,
            workflow_run_timeout: state.workflow_run_timeout,
            default_workflow_task_timeout: state.workflow_task_timeout,
            user_metadata: state.user_metadata.clone(),
        }),
        workflow_execution_info: Some(execution_info(state)),
        pending_activities,
        pending_workflow_task,
        pending_nexus_operations: crate::nexus_tasks::pending_operations(state),
        workflow_extended_info: Some(crate::reset::extended_info(state)),
        ..Default::default()
    }
}

/// A pending activity's options as describe shows them (the queue's normal name repeated).
fn activity_options(
    a: &pb::ActivityInfo,
) -> chronicle_proto::temporal::api::activity::v1::ActivityOptions {
    let mut options = crate::apply::activity_options_of(a);
    if let Some(tq) = options.task_queue.as_mut() {
        tq.normal_name = tq.name.clone();
    }
    options
}

pub fn is_closed(state: &pb::WorkflowExecutionState) -> bool {
    state.status != WorkflowExecutionStatus::Running as i32
}
