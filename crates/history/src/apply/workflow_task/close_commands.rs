//! The commands of a workflow task completion that close the run: CompleteWorkflowExecution,
//! FailWorkflowExecution (with retries and cron), ContinueAsNewWorkflowExecution and
//! CancelWorkflowExecution.

use chronicle_proto::temporal::api::command::v1::{
    CancelWorkflowExecutionCommandAttributes, CompleteWorkflowExecutionCommandAttributes,
    ContinueAsNewWorkflowExecutionCommandAttributes, FailWorkflowExecutionCommandAttributes,
};
use chronicle_proto::temporal::api::enums::v1::{EventType, WorkflowExecutionStatus};
use chronicle_proto::temporal::api::history::v1 as h;
use chronicle_proto::temporal::api::history::v1::history_event::Attributes;
use chronicle_proto::temporal::api::taskqueue::v1::TaskQueue;
use chronicle_storage::ShardBatch;

use super::{Rejection, storage_rejection};
use crate::apply::close_run;
use crate::mutable_state::MutableState;

/// CompleteWorkflowExecution: closes the run (a cron workflow's next run starts).
pub(super) fn complete_workflow(
    batch: &mut ShardBatch,
    ms: &mut MutableState,
    a: &CompleteWorkflowExecutionCommandAttributes,
    completed_id: i64,
    new_run_id: &str,
) -> Result<bool, Rejection> {
    // A cron workflow's next run starts at the next cron time.
    let cron = crate::apply::new_run::cron_delay(ms);
    let id = ms.add_event(
        EventType::WorkflowExecutionCompleted,
        Attributes::WorkflowExecutionCompletedEventAttributes(
            h::WorkflowExecutionCompletedEventAttributes {
                result: a.result.clone(),
                workflow_task_completed_event_id: completed_id,
                new_execution_run_id: if cron.is_some() {
                    new_run_id.to_string()
                } else {
                    String::new()
                },
            },
        ),
    );
    close_run(batch, ms, WorkflowExecutionStatus::Completed, id).map_err(storage_rejection)?;
    if let Some(delay) = cron {
        crate::apply::new_run::start_cron(batch, ms, new_run_id, a.result.clone(), None, delay)
            .map_err(storage_rejection)?;
    }
    Ok(true)
}

/// FailWorkflowExecution: closes the run, then retries it or starts the next cron run.
pub(super) fn fail_workflow(
    batch: &mut ShardBatch,
    ms: &mut MutableState,
    a: &FailWorkflowExecutionCommandAttributes,
    completed_id: i64,
    new_run_id: &str,
) -> Result<bool, Rejection> {
    // A run with a retry policy is retried as a new run, as in Temporal.
    let retry = crate::apply::new_run::workflow_retry_delay(ms, a.failure.as_ref());
    let retry_state = match retry {
        Ok(_) => chronicle_proto::temporal::api::enums::v1::RetryState::InProgress,
        Err(state) => state,
    };
    // Without a retry, a cron workflow's next run starts at the next cron time.
    let cron = match retry {
        Ok(_) => None,
        Err(_) => crate::apply::new_run::cron_delay(ms),
    };
    let id = ms.add_event(
        EventType::WorkflowExecutionFailed,
        Attributes::WorkflowExecutionFailedEventAttributes(
            h::WorkflowExecutionFailedEventAttributes {
                failure: a.failure.clone(),
                retry_state: retry_state as i32,
                workflow_task_completed_event_id: completed_id,
                new_execution_run_id: if retry.is_ok() || cron.is_some() {
                    new_run_id.to_string()
                } else {
                    String::new()
                },
            },
        ),
    );
    close_run(batch, ms, WorkflowExecutionStatus::Failed, id).map_err(storage_rejection)?;
    if let Ok(delay) = retry {
        crate::apply::new_run::start_retry(batch, ms, new_run_id, a.failure.clone(), delay)
            .map_err(storage_rejection)?;
    } else if let Some(delay) = cron {
        crate::apply::new_run::start_cron(batch, ms, new_run_id, None, a.failure.clone(), delay)
            .map_err(storage_rejection)?;
    }
    Ok(true)
}

/// ContinueAsNewWorkflowExecution: closes the run and starts its new run.
pub(super) fn continue_as_new(
    batch: &mut ShardBatch,
    ms: &mut MutableState,
    a: &ContinueAsNewWorkflowExecutionCommandAttributes,
    completed_id: i64,
    new_run_id: &str,
) -> Result<bool, Rejection> {
    let id = ms.add_event(
        EventType::WorkflowExecutionContinuedAsNew,
        Attributes::WorkflowExecutionContinuedAsNewEventAttributes(
            h::WorkflowExecutionContinuedAsNewEventAttributes {
                new_execution_run_id: new_run_id.to_string(),
                workflow_type: a
                    .workflow_type
                    .clone()
                    .or_else(|| ms.state.workflow_type.clone()),
                task_queue: a
                    .task_queue
                    .clone()
                    .filter(|t| !t.name.is_empty())
                    .or_else(|| {
                        Some(TaskQueue {
                            name: ms.state.task_queue.clone(),
                            kind: 1,
                            normal_name: String::new(),
                        })
                    }),
                input: a.input.clone(),
                workflow_run_timeout: a.workflow_run_timeout.or(ms.state.workflow_run_timeout),
                workflow_task_timeout: a.workflow_task_timeout.or(ms.state.workflow_task_timeout),
                workflow_task_completed_event_id: completed_id,
                backoff_start_interval: a.backoff_start_interval,
                initiator: a.initiator,
                last_completion_result: a.last_completion_result.clone(),
                header: a.header.clone(),
                memo: a.memo.clone(),
                search_attributes: a.search_attributes.clone(),
                ..Default::default()
            },
        ),
    );
    close_run(batch, ms, WorkflowExecutionStatus::ContinuedAsNew, id).map_err(storage_rejection)?;
    crate::apply::new_run::continue_as_new(batch, ms, a, new_run_id).map_err(storage_rejection)?;
    Ok(true)
}

/// CancelWorkflowExecution: closes the run as canceled.
pub(super) fn cancel_workflow(
    batch: &mut ShardBatch,
    ms: &mut MutableState,
    a: &CancelWorkflowExecutionCommandAttributes,
    completed_id: i64,
) -> Result<bool, Rejection> {
    let id = ms.add_event(
        EventType::WorkflowExecutionCanceled,
        Attributes::WorkflowExecutionCanceledEventAttributes(
            h::WorkflowExecutionCanceledEventAttributes {
                workflow_task_completed_event_id: completed_id,
                details: a.details.clone(),
            },
        ),
    );
    close_run(batch, ms, WorkflowExecutionStatus::Canceled, id).map_err(storage_rejection)?;
    Ok(true)
}
