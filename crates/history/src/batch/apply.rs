//! Applying `BatchCommand`s. Every step after the start names the cursor it continues from, so
//! a step reported by an executor that lost its leadership (or a step proposed twice) is refused
//! and the counts never go wrong.

use chronicle_proto::chronicle::history::v1::{self as cmd, batch_command::Op, command_result};
use chronicle_proto::chronicle::persistence::v1 as pb;
use chronicle_proto::temporal::api::enums::v1::BatchOperationState;
use chronicle_proto::wkt::Timestamp;
use chronicle_storage::ShardBatch;
use chronicle_types::ApiError;

use super::operation::BatchOperation;
use crate::apply::ApplyResult;

/// Temporal's answer for a job ID that was never used (DescribeWorkflowExecution's).
pub fn not_found(job_id: &str) -> ApiError {
    ApiError::workflow_not_found_for(job_id, "")
}

fn result(state: pb::BatchJobState) -> command_result::Result {
    command_result::Result::BatchJob(cmd::BatchCommandResult { state: Some(state) })
}

fn stale_cursor() -> ApiError {
    ApiError::failed_precondition("batch job progress does not continue from the recorded cursor")
}

pub fn is_running(state: &pb::BatchJobState) -> bool {
    state.state == BatchOperationState::Running as i32
}

/// Closes the job as completed once its last page is done.
fn complete_if_done(state: &mut pb::BatchJobState, now: Timestamp) {
    if !state.more_pages && state.page_index >= state.page.len() as i64 {
        state.state = BatchOperationState::Completed as i32;
        state.close_time = Some(now);
        state.page.clear();
        state.page_index = 0;
    }
}

pub fn command(
    batch: &mut ShardBatch,
    now: Timestamp,
    c: cmd::BatchCommand,
) -> ApplyResult<command_result::Result> {
    let existing = batch.batch_job(&c.namespace_id, &c.job_id)?;
    let Some(op) = c.op else {
        return Err(ApiError::invalid_argument("batch command without an operation").into());
    };
    let mut state = match (op, existing) {
        (Op::Start(start), Some(existing)) => {
            let _ = start;
            // The job ID is a workflow ID started with REJECT_DUPLICATE in Temporal.
            let message = if is_running(&existing) {
                format!(
                    "Workflow execution is already running. WorkflowId: {}.",
                    c.job_id
                )
            } else {
                format!(
                    "Workflow execution already finished and WorkflowIdReusePolicy is \
                     RejectDuplicate. WorkflowId: {}.",
                    c.job_id
                )
            };
            return Err(ApiError::already_started(message, "", "").into());
        }
        (Op::Start(start), None) => {
            let request = start.request.unwrap_or_default();
            let operation = BatchOperation::of(&request)?;
            let explicit = super::operation::listed_executions(&request);
            let by_query = explicit.is_empty();
            pb::BatchJobState {
                namespace_id: c.namespace_id.clone(),
                job_id: c.job_id.clone(),
                query: start.query,
                search_attribute_types: start.search_attribute_types,
                operation_type: operation.operation_type() as i32,
                state: BatchOperationState::Running as i32,
                start_time: Some(now),
                close_time: None,
                total_estimate: start.total_estimate,
                complete_count: 0,
                failure_count: 0,
                page_index: 0,
                next_page_token: Vec::new(),
                more_pages: by_query,
                pages_loaded: if by_query { 0 } else { 1 },
                page: explicit,
                max_operations_per_second: start.max_operations_per_second,
                stop_reason: String::new(),
                stop_identity: String::new(),
                request: Some(request),
            }
        }
        (_, None) => return Err(not_found(&c.job_id).into()),
        (Op::Stop(stop), Some(mut state)) => {
            if !is_running(&state) {
                return Err(ApiError::already_completed().into());
            }
            // Temporal terminates the job's workflow: the job reads as FAILED from then on.
            state.state = BatchOperationState::Failed as i32;
            state.close_time = Some(now);
            state.stop_reason = stop.reason;
            state.stop_identity = stop.identity;
            state.page.clear();
            state.page_index = 0;
            state
        }
        (Op::Page(page), Some(mut state)) => {
            if !is_running(&state)
                || page.pages_loaded != state.pages_loaded
                || state.page_index < state.page.len() as i64
                || !state.more_pages
            {
                return Err(stale_cursor().into());
            }
            state.page = page.executions;
            state.page_index = 0;
            state.next_page_token = page.next_page_token;
            state.more_pages = page.more;
            state.pages_loaded += 1;
            complete_if_done(&mut state, now);
            state
        }
        (Op::Progress(progress), Some(mut state)) => {
            let end = progress.page_index.saturating_add(progress.applied);
            if !is_running(&state)
                || progress.pages_loaded != state.pages_loaded
                || progress.page_index != state.page_index
                || progress.applied <= 0
                || progress.failed < 0
                || progress.failed > progress.applied
                || end > state.page.len() as i64
            {
                return Err(stale_cursor().into());
            }
            state.page_index = end;
            state.failure_count += progress.failed;
            state.complete_count += progress.applied - progress.failed;
            complete_if_done(&mut state, now);
            state
        }
    };
    if state.total_estimate < state.complete_count + state.failure_count {
        // The query's count when the job started is an estimate; never show fewer than done.
        state.total_estimate = state.complete_count + state.failure_count;
    }
    batch.put_batch_job(&state);
    state.page.clear();
    Ok(result(state))
}
