//! Runs that follow a run: continue-as-new and workflow retries. The closing run's last event
//! names the new run; the new run's first event names where it came from.

use chronicle_proto::temporal::api::command::v1::ContinueAsNewWorkflowExecutionCommandAttributes;
use chronicle_proto::temporal::api::enums::v1::{ContinueAsNewInitiator, RetryState};
use chronicle_proto::temporal::api::failure::v1::{Failure, failure::FailureInfo};
use chronicle_proto::temporal::api::workflowservice::v1::StartWorkflowExecutionRequest;
use chronicle_storage::ShardBatch;
use chronicle_types::time::{duration_from_millis, millis};

use super::start::{Lineage, create_run};
use super::workflow_task::default_activity_retry_policy;
use super::{ApplyResult, activity};
use crate::mutable_state::MutableState;

/// The start request a following run is created from: the closing run's settings.
fn next_request(ms: &MutableState) -> StartWorkflowExecutionRequest {
    StartWorkflowExecutionRequest {
        workflow_id: ms.state.workflow_id.clone(),
        workflow_type: ms.state.workflow_type.clone(),
        task_queue: Some(chronicle_proto::temporal::api::taskqueue::v1::TaskQueue {
            name: ms.state.task_queue.clone(),
            kind: 1,
            normal_name: String::new(),
        }),
        workflow_execution_timeout: ms.state.workflow_execution_timeout,
        workflow_run_timeout: ms.state.workflow_run_timeout,
        workflow_task_timeout: ms.state.workflow_task_timeout,
        retry_policy: ms.state.retry_policy.clone(),
        memo: ms.state.memo.clone(),
        search_attributes: ms.state.search_attributes.clone(),
        priority: ms.state.priority.clone(),
        cron_schedule: ms.state.cron_schedule.clone(),
        // The chain's completion callbacks go with it: its last run delivers them.
        completion_callbacks: ms.state.completion_callbacks.clone(),
        ..Default::default()
    }
}

/// Temporal's cron backoff for a closing run: from its execution time (when its first workflow
/// task was due) to the next cron time not before now, in whole seconds. `None`: not a cron
/// workflow, or no next time.
pub fn cron_delay(ms: &MutableState) -> Option<i64> {
    if ms.state.cron_schedule.is_empty() {
        return None;
    }
    let scheduled = ms
        .state
        .execution_time
        .as_ref()
        .map(millis)
        .unwrap_or_else(|| ms.now_ms());
    chronicle_cron::backoff_ms(&ms.state.cron_schedule, scheduled, ms.now_ms())
}

/// The failure a run timeout hands to the next cron run, as Temporal words it.
pub fn run_timeout_failure() -> Failure {
    Failure {
        message: "workflow timeout".to_string(),
        failure_info: Some(FailureInfo::TimeoutFailureInfo(
            chronicle_proto::temporal::api::failure::v1::TimeoutFailureInfo {
                timeout_type: chronicle_proto::temporal::api::enums::v1::TimeoutType::StartToClose
                    as i32,
                last_heartbeat_details: None,
            },
        )),
        ..Default::default()
    }
}

/// The closing run's first event: its input, header and last completion result.
fn started_attributes(
    batch: &ShardBatch,
    ms: &MutableState,
) -> ApplyResult<
    Option<chronicle_proto::temporal::api::history::v1::WorkflowExecutionStartedEventAttributes>,
> {
    let first = batch
        .tables()
        .history(
            &ms.state.namespace_id,
            &ms.state.workflow_id,
            &ms.state.run_id,
            1,
            1,
        )?
        .into_iter()
        .next();
    Ok(match first.and_then(|e| e.attributes) {
        Some(chronicle_proto::temporal::api::history::v1::history_event::Attributes::WorkflowExecutionStartedEventAttributes(started)) => Some(started),
        _ => None,
    })
}

/// Creates the next cron run of `ms` (already closed by the caller): the same input, attempt 1,
/// initiator CRON_SCHEDULE, the completion result (or, after a failure or timeout, the last
/// one the closing run had) and the failure carried over, first workflow task after `delay_ms`.
pub fn start_cron(
    batch: &mut ShardBatch,
    ms: &MutableState,
    new_run_id: &str,
    result: Option<chronicle_proto::temporal::api::common::v1::Payloads>,
    failure: Option<Failure>,
    delay_ms: i64,
) -> ApplyResult<()> {
    let mut request = next_request(ms);
    request.workflow_start_delay = Some(duration_from_millis(delay_ms));
    let started = started_attributes(batch, ms)?;
    let mut last_completion_result = result;
    if let Some(started) = started {
        request.input = started.input;
        request.header = started.header;
        if failure.is_some() {
            last_completion_result = started.last_completion_result;
        }
    }
    let lineage = Lineage {
        attempt: 1,
        first_run_id: ms.state.first_run_id.clone(),
        continued_execution_run_id: ms.state.run_id.clone(),
        initiator: ContinueAsNewInitiator::CronSchedule,
        continued_failure: failure,
        last_completion_result,
        execution_expiration_ms: ms.state.execution_expiration_time.as_ref().map(millis),
        parent: ms.state.parent.clone(),
        root_execution: ms
            .state
            .parent
            .as_ref()
            .and(ms.state.root_execution.clone()),
        scheduled_by: ms.state.scheduled_by.clone(),
    };
    create_run(
        batch,
        ms.now,
        &ms.state.namespace_id,
        new_run_id,
        &request,
        lineage,
        None,
    )
}

/// Whether a failed (or timed-out) run is retried under its retry policy: `Ok(delay)` or the
/// final retry state.
pub fn workflow_retry_delay(
    ms: &MutableState,
    failure: Option<&Failure>,
) -> Result<i64, RetryState> {
    let Some(given) = ms.state.retry_policy.as_ref() else {
        return Err(RetryState::RetryPolicyNotSet);
    };
    let policy = default_activity_retry_policy(Some(given));
    if policy.maximum_attempts > 0 && ms.state.attempt >= policy.maximum_attempts {
        return Err(RetryState::MaximumAttemptsReached);
    }
    if let Some(FailureInfo::ApplicationFailureInfo(info)) =
        failure.and_then(|f| f.failure_info.as_ref())
        && (info.non_retryable || policy.non_retryable_error_types.contains(&info.r#type))
    {
        return Err(RetryState::NonRetryableFailure);
    }
    let delay = activity::next_retry_delay_ms(&policy, ms.state.attempt);
    if let Some(expiration) = ms.state.execution_expiration_time.as_ref().map(millis)
        && ms.now_ms().saturating_add(delay) >= expiration
    {
        return Err(RetryState::Timeout);
    }
    Ok(delay)
}

/// Creates the retry run of `ms` (already closed by the caller).
pub fn start_retry(
    batch: &mut ShardBatch,
    ms: &MutableState,
    new_run_id: &str,
    failure: Option<Failure>,
    delay_ms: i64,
) -> ApplyResult<()> {
    let mut request = next_request(ms);
    request.workflow_start_delay = Some(duration_from_millis(delay_ms));
    // A retry runs the workflow again with the same input and header, as in Temporal: they are
    // on the closing run's WorkflowExecutionStarted event.
    let first = batch
        .tables()
        .history(
            &ms.state.namespace_id,
            &ms.state.workflow_id,
            &ms.state.run_id,
            1,
            1,
        )?
        .into_iter()
        .next();
    if let Some(chronicle_proto::temporal::api::history::v1::history_event::Attributes::WorkflowExecutionStartedEventAttributes(started)) =
        first.and_then(|e| e.attributes)
    {
        request.input = started.input;
        request.header = started.header;
    }
    let lineage = Lineage {
        attempt: ms.state.attempt + 1,
        first_run_id: ms.state.first_run_id.clone(),
        continued_execution_run_id: ms.state.run_id.clone(),
        initiator: ContinueAsNewInitiator::Retry,
        continued_failure: failure,
        last_completion_result: None,
        execution_expiration_ms: ms.state.execution_expiration_time.as_ref().map(millis),
        // A child's chain keeps its parent: the chain's last run reports to it.
        parent: ms.state.parent.clone(),
        root_execution: ms
            .state
            .parent
            .as_ref()
            .and(ms.state.root_execution.clone()),
        scheduled_by: ms.state.scheduled_by.clone(),
    };
    create_run(
        batch,
        ms.now,
        &ms.state.namespace_id,
        new_run_id,
        &request,
        lineage,
        None,
    )
}

/// Creates the run a continue-as-new command asks for (the caller closed the current one).
pub fn continue_as_new(
    batch: &mut ShardBatch,
    ms: &MutableState,
    attrs: &ContinueAsNewWorkflowExecutionCommandAttributes,
    new_run_id: &str,
) -> ApplyResult<()> {
    let mut request = next_request(ms);
    if attrs
        .workflow_type
        .as_ref()
        .is_some_and(|t| !t.name.is_empty())
    {
        request.workflow_type = attrs.workflow_type.clone();
    }
    if let Some(tq) = attrs.task_queue.as_ref().filter(|t| !t.name.is_empty()) {
        request.task_queue = Some(tq.clone());
    }
    request.input = attrs.input.clone();
    if attrs.workflow_run_timeout.is_some() {
        request.workflow_run_timeout = attrs.workflow_run_timeout;
    }
    if attrs.workflow_task_timeout.is_some() {
        request.workflow_task_timeout = attrs.workflow_task_timeout;
    }
    if attrs.retry_policy.is_some() {
        request.retry_policy = attrs.retry_policy.clone();
    }
    if attrs.memo.is_some() {
        request.memo = attrs.memo.clone();
    }
    if attrs.search_attributes.is_some() {
        request.search_attributes = attrs.search_attributes.clone();
    }
    request.header = attrs.header.clone();
    request.cron_schedule = attrs.cron_schedule.clone();
    request.workflow_start_delay = attrs.backoff_start_interval;
    let initiator = ContinueAsNewInitiator::try_from(attrs.initiator)
        .unwrap_or(ContinueAsNewInitiator::Workflow);
    let lineage = Lineage {
        // A retry-initiated continuation counts attempts; any other starts over.
        attempt: if initiator == ContinueAsNewInitiator::Retry {
            ms.state.attempt + 1
        } else {
            1
        },
        first_run_id: ms.state.first_run_id.clone(),
        continued_execution_run_id: ms.state.run_id.clone(),
        initiator: if initiator == ContinueAsNewInitiator::Unspecified {
            ContinueAsNewInitiator::Workflow
        } else {
            initiator
        },
        continued_failure: attrs.failure.clone(),
        last_completion_result: attrs.last_completion_result.clone(),
        execution_expiration_ms: ms.state.execution_expiration_time.as_ref().map(millis),
        // A child's chain keeps its parent: the chain's last run reports to it.
        parent: ms.state.parent.clone(),
        root_execution: ms
            .state
            .parent
            .as_ref()
            .and(ms.state.root_execution.clone()),
        scheduled_by: ms.state.scheduled_by.clone(),
    };
    create_run(
        batch,
        ms.now,
        &ms.state.namespace_id,
        new_run_id,
        &request,
        lineage,
        None,
    )
}
