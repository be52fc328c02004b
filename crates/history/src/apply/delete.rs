//! Deleting runs: DeleteWorkflowExecution, and the retention timer armed when a run closes.
//!
//! A deletion removes, in one write batch: the run's `executions` row (its visibility rows go
//! with it at commit), its whole history (one range tombstone over the run's history prefix),
//! the timers its state still names (the retention timer among them) and the current-run record
//! if that names this run, so the workflow ID is free for any reuse policy. A running run is
//! terminated first, as Temporal does ("Delete workflow execution", identity history-service).
//!
//! A closed run may still have outbox rows that read its state and close event: the report of a
//! child's close to its parent, of a scheduled workflow's close to its schedule. Deleting it
//! before they ran would leave the parent waiting for its child, or the schedule counting a
//! workflow as running, forever. Such a run gets a `KIND_DELETE_RUN` timer instead, which looks
//! again a little later; every other outbox row of a deleted run copes with its absence.

use std::cell::Cell;

use chronicle_proto::chronicle::history::v1::{self as cmd, command_result};
use chronicle_proto::chronicle::persistence::v1 as pb;
use chronicle_proto::wkt::{Duration, Timestamp};
use chronicle_storage::ShardBatch;
use chronicle_types::ApiError;

use super::child::HISTORY_SERVICE_IDENTITY;
use super::{ApplyResult, load_run};
use crate::mutable_state::MutableState;

/// How long a deletion waits before looking again at close reports not yet delivered.
const DELETE_RETRY_MS: i64 = 1_000;
/// Temporal's termination reason for a running run that is deleted.
pub const DELETE_TERMINATE_REASON: &str = "Delete workflow execution";

thread_local! {
    /// The retention the command being applied carries (`ShardCommand.retention`): set by the
    /// applier around each command, read where a run closes. Apply is synchronous, so the value
    /// belongs to exactly one command.
    static CLOSE_RETENTION: Cell<Option<(i64, i32)>> = const { Cell::new(None) };
}

/// Runs `apply` with the command's retention available to [`arm_retention`].
pub(crate) fn with_retention<T>(retention: Option<Duration>, apply: impl FnOnce() -> T) -> T {
    CLOSE_RETENTION.with(|r| r.set(retention.map(|d| (d.seconds, d.nanos))));
    let result = apply();
    CLOSE_RETENTION.with(|r| r.set(None));
    result
}

/// At close: the timer that deletes the run once the namespace's retention has passed. Commands
/// without a retention (written before retention existed) arm none.
pub(crate) fn arm_retention(batch: &mut ShardBatch, ms: &mut MutableState) -> ApplyResult<()> {
    let Some((seconds, nanos)) = CLOSE_RETENTION.with(Cell::get) else {
        return Ok(());
    };
    let retention_ms = seconds
        .saturating_mul(1_000)
        .saturating_add(i64::from(nanos) / 1_000_000)
        .max(0);
    let fire_ms = millis(&ms.now).saturating_add(retention_ms);
    if !ms.state.retention_timer_key.is_empty() {
        batch.delete_timer(&ms.state.retention_timer_key);
    }
    ms.state.retention_timer_key = batch.put_timer(fire_ms, &delete_timer_task(&ms.state))?;
    Ok(())
}

fn delete_timer_task(state: &pb::WorkflowExecutionState) -> pb::TimerTask {
    pb::TimerTask {
        kind: pb::timer_task::Kind::DeleteRun as i32,
        namespace_id: state.namespace_id.clone(),
        workflow_id: state.workflow_id.clone(),
        run_id: state.run_id.clone(),
        ..Default::default()
    }
}

fn millis(t: &Timestamp) -> i64 {
    t.seconds
        .saturating_mul(1_000)
        .saturating_add(i64::from(t.nanos) / 1_000_000)
}

/// DeleteWorkflowExecution: terminate a running run, then delete it (now, or once its close
/// reports are delivered).
pub fn delete_workflow_execution(
    batch: &mut ShardBatch,
    now: Timestamp,
    c: cmd::DeleteWorkflowExecution,
) -> ApplyResult<command_result::Result> {
    let execution = c.execution.unwrap_or_default();
    if execution.workflow_id.is_empty() {
        return Err(ApiError::invalid_argument("WorkflowId is not set on request.").into());
    }
    let mut ms = load_run(
        batch,
        now,
        &c.namespace_id,
        &execution.workflow_id,
        &execution.run_id,
    )?;
    let now_ms = millis(&ms.now);
    if ms.is_running() {
        if c.closed_only {
            return Ok(super::ok());
        }
        super::signal::terminate_run(
            batch,
            &mut ms,
            DELETE_TERMINATE_REASON,
            HISTORY_SERVICE_IDENTITY,
            None,
        )?;
        let state = ms.state.clone();
        ms.persist(batch);
        delete_when_reported(batch, &state, now_ms)?;
    } else {
        delete_when_reported(batch, &ms.state, now_ms)?;
    }
    Ok(super::ok())
}

/// A `KIND_DELETE_RUN` timer fired (retention passed, or a deletion waiting for close reports).
pub fn fire(batch: &mut ShardBatch, now: Timestamp, task: &pb::TimerTask) -> ApplyResult<()> {
    let Some(state) = batch.execution(&task.namespace_id, &task.workflow_id, &task.run_id)? else {
        return Ok(());
    };
    // Only closed runs are deleted by a timer (a run never reopens; this is a safeguard).
    if MutableState::new(state.clone(), now).is_running() {
        return Ok(());
    }
    delete_when_reported(batch, &state, millis(&now))
}

/// Deletes the closed run now if nothing still needs its state, else looks again later.
pub(crate) fn delete_when_reported(
    batch: &mut ShardBatch,
    state: &pb::WorkflowExecutionState,
    now_ms: i64,
) -> ApplyResult<()> {
    let mut pending = false;
    for id in &state.close_report_task_ids {
        if batch.outbox_exists(u64::try_from(*id).unwrap_or(0))? {
            pending = true;
            break;
        }
    }
    if pending {
        batch.put_timer(
            now_ms.saturating_add(DELETE_RETRY_MS),
            &delete_timer_task(state),
        )?;
        return Ok(());
    }
    delete_run(batch, state)
}

/// Removes every row of a closed run.
fn delete_run(batch: &mut ShardBatch, state: &pb::WorkflowExecutionState) -> ApplyResult<()> {
    if !state.retention_timer_key.is_empty() {
        batch.delete_timer(&state.retention_timer_key);
    }
    // A closed run holds no workflow task or activities; any timer still named goes too.
    for key in state
        .workflow_task
        .iter()
        .flat_map(|t| t.timer_keys.iter())
        .chain(state.activities.values().flat_map(|a| {
            a.schedule_timer_keys
                .iter()
                .chain(a.attempt_timer_keys.iter())
        }))
    {
        batch.delete_timer(key);
    }
    if let Some(current) = batch.current(&state.namespace_id, &state.workflow_id)?
        && current.run_id == state.run_id
    {
        batch.delete_current(&state.namespace_id, &state.workflow_id);
    }
    batch.delete_run(&state.namespace_id, &state.workflow_id, &state.run_id)?;
    Ok(())
}
