//! Transfer tasks: outbox rows the shard leader carries out itself instead of handing them to
//! matching. They reach other workflows, which may live on other shards: starting a child,
//! reporting a child's close to its parent, a parent close policy, and the cancellation
//! requests and signals of RequestCancelExternal / SignalExternal commands.
//!
//! Each task proposes a command on the target's shard, then a command on its own shard that
//! records the outcome and deletes the row. A task that fails part-way (no leader, shutdown,
//! crash) keeps its row and runs again from the start; every command it proposes is checked at
//! apply, so running it twice changes nothing more than running it once.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use chronicle_proto::chronicle::history::v1::{
    self as cmd, command_result, record_child_start_outcome::Outcome, shard_command::Kind,
};
use chronicle_proto::chronicle::persistence::v1::{self as pb, outbox_task::Kind as TaskKind};
use chronicle_proto::temporal::api::common::v1::WorkflowExecution;
use chronicle_proto::temporal::api::enums::v1::StartChildWorkflowExecutionFailedCause;
use chronicle_proto::temporal::api::history::v1::HistoryEvent;
use chronicle_proto::temporal::api::history::v1::history_event::Attributes;
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use chronicle_types::{ApiError, ApiResult};

use crate::apply::child::{HISTORY_SERVICE_IDENTITY, initiated_before_reset, original_run_id};
use crate::engine::{HistoryEngine, Shard};
use crate::read::{execution_of, is_closed, storage};

/// Whether an outbox row is a transfer task (not a task for matching).
pub(crate) fn is_transfer(kind: i32) -> bool {
    matches!(
        TaskKind::try_from(kind),
        Ok(TaskKind::StartChild
            | TaskKind::ChildClosed
            | TaskKind::ParentClosePolicy
            | TaskKind::CancelExternal
            | TaskKind::SignalExternal
            | TaskKind::ScheduleStart
            | TaskKind::ScheduleWorkflowClosed
            | TaskKind::ScheduleStopWorkflow
            | TaskKind::NexusCallbacks)
    )
}

/// The transfer tasks of one shard leader that are running, or done but possibly still in an
/// outbox read taken before their row was deleted.
#[derive(Default)]
pub(crate) struct TransferTracker {
    /// Outbox ID -> done.
    tasks: Mutex<HashMap<u64, bool>>,
}

impl TransferTracker {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, bool>> {
        self.tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Claims a task; false if it is running or done.
    pub fn begin(&self, outbox_id: u64) -> bool {
        let mut tasks = self.lock();
        if tasks.contains_key(&outbox_id) {
            return false;
        }
        tasks.insert(outbox_id, false);
        true
    }

    /// A failed task is forgotten, so the next sweep of the outbox runs it again.
    pub fn finish(&self, outbox_id: u64, succeeded: bool) {
        let mut tasks = self.lock();
        if succeeded {
            tasks.insert(outbox_id, true);
        } else {
            tasks.remove(&outbox_id);
        }
    }

    /// After a complete sweep: done tasks whose rows are gone need no remembering.
    pub fn forget_absent(&self, present: &HashSet<u64>) {
        self.lock()
            .retain(|id, done| !*done || present.contains(id));
    }

    pub fn clear(&self) {
        self.lock().clear();
    }
}

/// Runs one transfer task to its end (its row deleted) or to the first error.
pub(crate) async fn execute(
    engine: &HistoryEngine,
    shard: &Shard,
    outbox_id: u64,
    task: &pb::OutboxTask,
) -> ApiResult<()> {
    chronicle_storage::failpoint::check(
        chronicle_storage::failpoint::names::TRANSFER_EXECUTE,
        shard.tables.db().path(),
    )
    .map_err(ApiError::unavailable)?;
    match TaskKind::try_from(task.kind) {
        Ok(TaskKind::StartChild) => start_child(engine, shard, outbox_id, task).await,
        Ok(TaskKind::ChildClosed) => report_child_closed(engine, shard, outbox_id, task).await,
        Ok(TaskKind::ParentClosePolicy) => {
            apply_parent_close_policy(engine, shard, outbox_id, task).await
        }
        Ok(TaskKind::CancelExternal) => {
            deliver_external(engine, shard, outbox_id, task, false).await
        }
        Ok(TaskKind::SignalExternal) => {
            deliver_external(engine, shard, outbox_id, task, true).await
        }
        Ok(TaskKind::ScheduleStart) => {
            crate::schedule::transfer::start(engine, shard, outbox_id, task).await
        }
        Ok(TaskKind::ScheduleWorkflowClosed) => {
            crate::schedule::transfer::report_closed(engine, shard, outbox_id, task).await
        }
        Ok(TaskKind::ScheduleStopWorkflow) => {
            crate::schedule::transfer::stop_workflow(engine, shard, outbox_id, task).await
        }
        Ok(TaskKind::NexusCallbacks) => {
            crate::nexus_callbacks::deliver(engine, shard, outbox_id, task).await?;
            complete(engine, shard, outbox_id).await
        }
        _ => Ok(()),
    }
}

pub(crate) fn load(
    shard: &Shard,
    task: &pb::OutboxTask,
) -> ApiResult<Option<pb::WorkflowExecutionState>> {
    shard
        .tables
        .execution(&task.namespace_id, &task.workflow_id, &task.run_id)
        .map_err(storage)
}

/// One event of a run's history.
pub(crate) fn read_event(
    shard: &Shard,
    state: &pb::WorkflowExecutionState,
    event_id: i64,
) -> ApiResult<HistoryEvent> {
    shard
        .tables
        .history(
            &state.namespace_id,
            &state.workflow_id,
            &state.run_id,
            event_id,
            1,
        )
        .map_err(storage)?
        .into_iter()
        .next()
        .filter(|e| e.event_id == event_id)
        .ok_or_else(|| {
            ApiError::internal(format!(
                "event {event_id} of {}/{} is missing",
                state.workflow_id, state.run_id
            ))
        })
}

pub(crate) async fn complete(
    engine: &HistoryEngine,
    shard: &Shard,
    outbox_id: u64,
) -> ApiResult<()> {
    engine
        .propose(
            shard,
            Kind::CompleteTransferTask(cmd::CompleteTransferTask {
                outbox_id: outbox_id as i64,
            }),
        )
        .await?;
    Ok(())
}

/// Starts a child on its shard and records the outcome in the parent (this shard).
async fn start_child(
    engine: &HistoryEngine,
    shard: &Shard,
    outbox_id: u64,
    task: &pb::OutboxTask,
) -> ApiResult<()> {
    let initiated_event_id = task.scheduled_event_id;
    let record = |outcome: Outcome, header| {
        Kind::RecordChildStartOutcome(cmd::RecordChildStartOutcome {
            namespace_id: task.namespace_id.clone(),
            workflow_id: task.workflow_id.clone(),
            run_id: task.run_id.clone(),
            initiated_event_id,
            outbox_id: outbox_id as i64,
            outcome: Some(outcome),
            header,
        })
    };
    let parent = load(shard, task)?;
    let pending = parent.as_ref().and_then(|p| {
        p.children
            .get(&initiated_event_id)
            .filter(|c| !c.started && !is_closed(p))
            .map(|c| (p, c))
    });
    // A closed parent starts no child (its record command applies the close policy to one an
    // earlier attempt may have started); a child already recorded needs nothing more.
    let Some((parent, child)) = pending else {
        engine
            .propose(shard, record(Outcome::NotAttempted(cmd::Empty {}), None))
            .await?;
        return Ok(());
    };
    let event = read_event(shard, parent, initiated_event_id)?;
    let Some(Attributes::StartChildWorkflowExecutionInitiatedEventAttributes(a)) = event.attributes
    else {
        return Err(ApiError::internal(format!(
            "event {initiated_event_id} of {} is not a child's initiated event",
            parent.workflow_id
        )));
    };
    let request = ws::StartWorkflowExecutionRequest {
        namespace: a.namespace.clone(),
        workflow_id: a.workflow_id.clone(),
        workflow_type: a.workflow_type.clone(),
        task_queue: a.task_queue.clone(),
        input: a.input.clone(),
        workflow_execution_timeout: a.workflow_execution_timeout,
        workflow_run_timeout: a.workflow_run_timeout,
        workflow_task_timeout: a.workflow_task_timeout,
        request_id: child.create_request_id.clone(),
        workflow_id_reuse_policy: a.workflow_id_reuse_policy,
        retry_policy: a.retry_policy.clone(),
        cron_schedule: a.cron_schedule.clone(),
        memo: a.memo.clone(),
        search_attributes: a.search_attributes.clone(),
        header: a.header.clone(),
        user_metadata: event.user_metadata.clone(),
        // The child inherits the parent's priority where the command sets none.
        priority: chronicle_types::priority::merge(parent.priority.as_ref(), a.priority.as_ref()),
        ..Default::default()
    };
    let parent_info = pb::ParentExecutionInfo {
        namespace_id: parent.namespace_id.clone(),
        namespace: engine.namespace_name(&parent.namespace_id),
        execution: Some(execution_of(parent)),
        initiated_event_id,
        original_run_id: original_run_id(parent, &read_event(shard, parent, 1)?),
    };
    let root = parent
        .root_execution
        .clone()
        .or_else(|| Some(execution_of(parent)));
    let child_shard = &engine.shard_of(&child.namespace_id, &child.workflow_id);
    let started = engine
        .propose_anywhere(
            child_shard,
            Kind::StartChildWorkflow(cmd::StartChildWorkflow {
                namespace_id: child.namespace_id.clone(),
                request: Some(request),
                run_id: chronicle_types::new_run_id(),
                parent: Some(parent_info),
                root_execution: root,
                reconnect_after_reset: initiated_before_reset(parent, child),
            }),
        )
        .await;
    let outcome = match started {
        Ok(command_result::Result::StartWorkflow(r)) => Outcome::StartedRunId(r.run_id),
        Ok(_) => return Err(ApiError::internal("unexpected child start result")),
        // The workflow ID is in use (running, or closed and the reuse policy refuses it).
        Err(e) if e.is_already_exists() => {
            Outcome::Failed(StartChildWorkflowExecutionFailedCause::WorkflowAlreadyExists as i32)
        }
        Err(e) => return Err(e),
    };
    engine.propose(shard, record(outcome, a.header)).await?;
    Ok(())
}

/// A child's chain closed (this run is its last): the parent records the close.
async fn report_child_closed(
    engine: &HistoryEngine,
    shard: &Shard,
    outbox_id: u64,
    task: &pb::OutboxTask,
) -> ApiResult<()> {
    let Some(state) = load(shard, task)? else {
        return complete(engine, shard, outbox_id).await;
    };
    let Some(parent) = state.parent.clone() else {
        return complete(engine, shard, outbox_id).await;
    };
    let close_event = read_event(shard, &state, state.completion_event_id)?;
    let parent_workflow_id = parent
        .execution
        .as_ref()
        .map(|e| e.workflow_id.clone())
        .unwrap_or_default();
    let parent_shard = &engine.shard_of(&parent.namespace_id, &parent_workflow_id);
    engine
        .propose_anywhere(
            parent_shard,
            Kind::RecordChildClosed(cmd::RecordChildClosed {
                parent: Some(parent),
                child_execution: Some(execution_of(&state)),
                child_first_run_id: state.first_run_id.clone(),
                close_event: Some(close_event),
            }),
        )
        .await?;
    complete(engine, shard, outbox_id).await
}

/// A closed parent's policy for one of its children, applied on the child's shard.
async fn apply_parent_close_policy(
    engine: &HistoryEngine,
    shard: &Shard,
    outbox_id: u64,
    task: &pb::OutboxTask,
) -> ApiResult<()> {
    let parent = pb::ParentExecutionInfo {
        namespace_id: task.namespace_id.clone(),
        namespace: String::new(),
        execution: Some(WorkflowExecution {
            workflow_id: task.workflow_id.clone(),
            run_id: task.run_id.clone(),
        }),
        initiated_event_id: task.scheduled_event_id,
        original_run_id: String::new(),
    };
    let child_shard = &engine.shard_of(&task.target_namespace_id, &task.target_workflow_id);
    engine
        .propose_anywhere(
            child_shard,
            Kind::ApplyParentClosePolicy(cmd::ApplyParentClosePolicy {
                namespace_id: task.target_namespace_id.clone(),
                workflow_id: task.target_workflow_id.clone(),
                parent: Some(parent),
                policy: task.parent_close_policy,
            }),
        )
        .await?;
    complete(engine, shard, outbox_id).await
}

/// Delivers a RequestCancelExternal (or SignalExternal) command to its target and records the
/// outcome in the source workflow (this shard).
async fn deliver_external(
    engine: &HistoryEngine,
    shard: &Shard,
    outbox_id: u64,
    task: &pb::OutboxTask,
    signal: bool,
) -> ApiResult<()> {
    let initiated_event_id = task.scheduled_event_id;
    let record = |failed: bool, not_attempted: bool| {
        Kind::RecordExternalOutcome(cmd::RecordExternalOutcome {
            namespace_id: task.namespace_id.clone(),
            workflow_id: task.workflow_id.clone(),
            run_id: task.run_id.clone(),
            initiated_event_id,
            outbox_id: outbox_id as i64,
            signal,
            failed,
            not_attempted,
        })
    };
    let source = load(shard, task)?;
    let pending = source.as_ref().filter(|s| !is_closed(s)).and_then(|s| {
        let requests = if signal {
            &s.external_signals
        } else {
            &s.request_cancels
        };
        requests.get(&initiated_event_id).map(|info| (s, info))
    });
    // A closed source sends nothing, as in Temporal.
    let Some((source, info)) = pending else {
        engine.propose(shard, record(false, true)).await?;
        return Ok(());
    };
    let target = info.execution.clone().unwrap_or_default();
    let failed =
        if info.namespace_id == source.namespace_id && target.workflow_id == source.workflow_id {
            // A workflow does not signal or cancel itself this way (Temporal: not found).
            true
        } else {
            let external = cmd::ExternalSource {
                execution: Some(execution_of(source)),
                initiated_event_id,
                child_workflow_only: info.child_workflow_only,
            };
            let event = read_event(shard, source, initiated_event_id)?;
            let kind = match event.attributes {
                Some(Attributes::SignalExternalWorkflowExecutionInitiatedEventAttributes(a))
                    if signal =>
                {
                    #[allow(deprecated)]
                    let request = ws::SignalWorkflowExecutionRequest {
                        namespace: info.namespace.clone(),
                        workflow_execution: Some(target.clone()),
                        signal_name: a.signal_name,
                        input: a.input,
                        identity: HISTORY_SERVICE_IDENTITY.into(),
                        request_id: info.request_id.clone(),
                        control: a.control,
                        header: a.header,
                        ..Default::default()
                    };
                    Kind::SignalWorkflow(cmd::SignalWorkflow {
                        namespace_id: info.namespace_id.clone(),
                        request: Some(request),
                        external: Some(external),
                    })
                }
                Some(
                    Attributes::RequestCancelExternalWorkflowExecutionInitiatedEventAttributes(a),
                ) if !signal => Kind::RequestCancelWorkflow(cmd::RequestCancelWorkflow {
                    namespace_id: info.namespace_id.clone(),
                    request: Some(ws::RequestCancelWorkflowExecutionRequest {
                        namespace: info.namespace.clone(),
                        workflow_execution: Some(target.clone()),
                        identity: HISTORY_SERVICE_IDENTITY.into(),
                        request_id: info.request_id.clone(),
                        reason: a.reason,
                        ..Default::default()
                    }),
                    external: Some(external),
                }),
                _ => {
                    return Err(ApiError::internal(format!(
                        "event {initiated_event_id} of {} is not the request's initiated event",
                        source.workflow_id
                    )));
                }
            };
            let target_shard = &engine.shard_of(&info.namespace_id, &target.workflow_id);
            match engine.propose_anywhere(target_shard, kind).await {
                Ok(_) => false,
                // No such workflow, closed, or not this workflow's child.
                Err(e) if e.is_not_found() => true,
                Err(e) => return Err(e),
            }
        };
    engine.propose(shard, record(failed, false)).await?;
    Ok(())
}
