//! Eager workflow start: a StartWorkflowExecution with `request_eager_execution` gets the run's
//! first workflow task in its answer, recorded as started (by the caller's identity, under the
//! start's request ID) in the same apply, so it never goes through matching. As in Temporal,
//! only a run whose first task is due at once (no start delay, no cron backoff) is started
//! eagerly, and a retried start with the same request ID gets the task again while it is still
//! that first attempt started for it.

use chronicle_proto::chronicle::history::v1::{self as cmd, command_result};
use chronicle_proto::temporal::api::workflowservice::v1::StartWorkflowExecutionRequest;
use chronicle_proto::wkt::Timestamp;
use chronicle_storage::ShardBatch;

use super::{ApplyResult, load_run, workflow_task};

/// The first workflow task of the run `result` names, started for the caller; `None` when it
/// cannot be handed out eagerly.
pub fn first_task(
    batch: &mut ShardBatch,
    now: Timestamp,
    namespace_id: &str,
    request: &StartWorkflowExecutionRequest,
    result: &cmd::StartWorkflowResult,
) -> ApplyResult<Option<cmd::RecordWorkflowTaskStartedResult>> {
    let ms = load_run(
        batch,
        now,
        namespace_id,
        &request.workflow_id,
        &result.run_id,
    )?;
    let Some(task) = ms.state.workflow_task.as_ref() else {
        // A delayed first task (start delay, cron) is dispatched when it is due.
        return Ok(None);
    };
    let first_attempt = task.scheduled_event_id == 2 && task.attempt == 1 && !task.transient;
    let ours = if result.started {
        task.started_event_id == 0
    } else {
        // A retried start: only the task this request already started is handed out again.
        task.started_event_id > 0 && task.started_request_id == request.request_id
    };
    if !first_attempt || !ours || ms.state.workflow_task.is_none() {
        return Ok(None);
    }
    let scheduled_event_id = task.scheduled_event_id;
    let started = workflow_task::record_started(
        batch,
        now,
        cmd::RecordWorkflowTaskStarted {
            namespace_id: namespace_id.to_string(),
            workflow_id: request.workflow_id.clone(),
            run_id: result.run_id.clone(),
            scheduled_event_id,
            request_id: request.request_id.clone(),
            identity: request.identity.clone(),
            outbox_id: 0,
            suggest_continue_as_new_events: 0,
            suggest_continue_as_new_bytes: 0,
        },
    )?;
    Ok(match started {
        command_result::Result::WorkflowTaskStarted(s) if !s.stale => Some(s),
        _ => None,
    })
}
