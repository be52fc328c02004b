//! Child workflows, as Temporal runs them. The parent's StartChildWorkflowExecution command adds
//! `StartChildWorkflowExecutionInitiated`, a pending-child entry and a transfer task; the shard
//! leader's transfer executor (`crate::transfer`) then starts the child on the child's shard
//! (`StartChildWorkflow`) and records the outcome in the parent (`RecordChildStartOutcome`).
//! When the child's chain closes, a transfer task on the child's shard reports the close event
//! to the parent (`RecordChildClosed`). When the parent closes, each started child gets its
//! parent close policy through a transfer task (`ApplyParentClosePolicy`).
//!
//! Every step is a command checked at apply, so a step retried after a failure or a leader
//! change does nothing twice: a child's start is recognised by its parent (run and initiated
//! event), and the parent records an outcome only while the child is pending.

use chronicle_proto::chronicle::history::v1::{self as cmd, command_result};
use chronicle_proto::chronicle::persistence::v1 as pb;
use chronicle_proto::temporal::api::command::v1::StartChildWorkflowExecutionCommandAttributes;
use chronicle_proto::temporal::api::common::v1::{Header, WorkflowExecution};
use chronicle_proto::temporal::api::enums::v1::{
    EventType, ParentClosePolicy, StartChildWorkflowExecutionFailedCause, WorkflowIdReusePolicy,
    WorkflowTaskFailedCause,
};
use chronicle_proto::temporal::api::history::v1 as h;
use chronicle_proto::temporal::api::history::v1::history_event::Attributes;
use chronicle_proto::temporal::api::taskqueue::v1::TaskQueue;
use chronicle_proto::wkt::Timestamp;
use chronicle_storage::ShardBatch;
use chronicle_types::limits::{MAX_ID_LENGTH, MAX_PENDING_CHILDREN};
use chronicle_types::time::{duration_from_millis, opt_duration_millis};

use super::workflow_task::{CommandContext, Rejection, reject};
use super::{ApplyError, ApplyResult, load_run};
use crate::mutable_state::{BUFFERED_ID, MutableState};

/// The identity Temporal's server puts on what it does on its own (parent close policies,
/// signals and cancellations sent for a workflow's commands).
pub const HISTORY_SERVICE_IDENTITY: &str = "history-service";
/// Reason of a termination by parent close policy (Temporal's wording).
pub const PARENT_CLOSE_POLICY_REASON: &str = "by parent close policy";

const DEFAULT_WORKFLOW_TASK_TIMEOUT_MS: i64 = 10_000;
const MAX_WORKFLOW_TASK_TIMEOUT_MS: i64 = 120_000;

/// Whether two parent records name the same parent run and initiated event.
pub fn same_parent(a: &pb::ParentExecutionInfo, b: &pb::ParentExecutionInfo) -> bool {
    let run = |p: &pb::ParentExecutionInfo| {
        p.execution
            .as_ref()
            .map(|e| (e.workflow_id.clone(), e.run_id.clone()))
    };
    a.namespace_id == b.namespace_id
        && a.initiated_event_id == b.initiated_event_id
        && run(a) == run(b)
}

/// Whether a child's run whose parent of record is `recorded` belongs to the reset lineage of
/// `parent` (a reset run asking to start the child again): a run of the same workflow sharing
/// its original execution run ID, as Temporal's start-child task checks before it starts a child
/// for a reset run.
pub fn same_reset_lineage(
    recorded: &pb::ParentExecutionInfo,
    parent: &pb::ParentExecutionInfo,
) -> bool {
    let workflow_id =
        |p: &pb::ParentExecutionInfo| p.execution.as_ref().map(|e| e.workflow_id.clone());
    let recorded_run = recorded
        .execution
        .as_ref()
        .map(|e| e.run_id.as_str())
        .unwrap_or_default();
    !parent.original_run_id.is_empty()
        && recorded.namespace_id == parent.namespace_id
        && workflow_id(recorded) == workflow_id(parent)
        && (recorded_run == parent.original_run_id
            || recorded.original_run_id == parent.original_run_id)
}

/// A run's original execution run ID, from its first event (a reset run's is its base run's).
pub(crate) fn original_run_id(
    state: &pb::WorkflowExecutionState,
    first_event: &h::HistoryEvent,
) -> String {
    match first_event.attributes.as_ref() {
        Some(Attributes::WorkflowExecutionStartedEventAttributes(a))
            if !a.original_execution_run_id.is_empty() =>
        {
            a.original_execution_run_id.clone()
        }
        _ => state.run_id.clone(),
    }
}

/// Whether `child` was initiated in the history a reset run took from its base run: its start
/// request ID is the base run's, not one this run made.
pub(crate) fn initiated_before_reset(
    parent: &pb::WorkflowExecutionState,
    child: &pb::ChildExecutionInfo,
) -> bool {
    child.create_request_id != child_request_id(&parent.run_id, child.initiated_event_id)
}

/// How many resets a child's close follows from the parent run it names (a bound, so a cycle of
/// reset links cannot loop).
const MAX_RESET_FORWARDS: usize = 16;

/// The request ID a child's start carries: the same for every retry of the start.
pub(crate) fn child_request_id(parent_run_id: &str, initiated_event_id: i64) -> String {
    format!("{parent_run_id}:child:{initiated_event_id}")
}

fn opt_duration(ms: i64) -> Option<chronicle_proto::wkt::Duration> {
    Some(duration_from_millis(ms.max(0)))
}

/// Handles a StartChildWorkflowExecution command: validation and defaults as Temporal's
/// command checker, the Initiated event, the pending child and its start task.
#[allow(deprecated)] // `namespace` and `control`: still sent by SDKs
pub(super) fn initiate(
    batch: &mut ShardBatch,
    ms: &mut MutableState,
    a: &StartChildWorkflowExecutionCommandAttributes,
    ctx: &mut CommandContext,
) -> Result<(), Rejection> {
    let bad = |m: String| reject(WorkflowTaskFailedCause::BadStartChildExecutionAttributes, m);
    let workflow_type = a
        .workflow_type
        .as_ref()
        .map(|t| t.name.clone())
        .unwrap_or_default();
    let namespace = if a.namespace.is_empty() {
        ctx.namespace.to_string()
    } else {
        a.namespace.clone()
    };
    if a.workflow_id.is_empty() {
        return Err(bad(format!(
            "Required field WorkflowId is not set on StartChildWorkflowExecutionCommand. WorkflowType={workflow_type} Namespace={namespace}"
        )));
    }
    if workflow_type.is_empty() {
        return Err(bad(format!(
            "Required field WorkflowType is not set on StartChildWorkflowExecutionCommand. WorkflowId={} Namespace={namespace}",
            a.workflow_id
        )));
    }
    if namespace.len() > MAX_ID_LENGTH {
        return Err(bad(
            "Namespace on StartChildWorkflowExecutionCommand exceeds length limit.".into(),
        ));
    }
    if a.workflow_id.len() > MAX_ID_LENGTH {
        return Err(bad(
            "WorkflowId on StartChildWorkflowExecutionCommand exceeds length limit.".into(),
        ));
    }
    if workflow_type.len() > MAX_ID_LENGTH {
        return Err(bad(
            "WorkflowType on StartChildWorkflowExecutionCommand exceeds length limit.".into(),
        ));
    }
    // As Temporal's command checks (with the command's time, not the clock).
    if let Err(e) = chronicle_cron::validate(&a.cron_schedule, ms.now_ms()) {
        return Err(bad(format!(
            "invalid CronSchedule on StartChildWorkflowExecutionCommand: {e}. WorkflowId={} WorkflowType={workflow_type} Namespace={namespace}",
            a.workflow_id
        )));
    }
    if namespace != ctx.namespace {
        // Temporal allows children in other namespaces (a deprecated feature); Chronicle keeps
        // a child in its parent's namespace.
        return Err(bad(format!(
            "Chronicle does not support child workflows in another namespace: the parent runs in {:?}, the child asks for {namespace:?}.",
            ctx.namespace
        )));
    }
    chronicle_types::priority::validate(a.priority.as_ref())
        .map_err(|e| bad(format!("invalid priorities: {e}")))?;
    let execution_ms = opt_duration_millis(a.workflow_execution_timeout.as_ref());
    let run_ms = opt_duration_millis(a.workflow_run_timeout.as_ref());
    let task_ms = opt_duration_millis(a.workflow_task_timeout.as_ref());
    for (value, name) in [
        (execution_ms, "WorkflowExecutionTimeout"),
        (run_ms, "WorkflowRunTimeout"),
        (task_ms, "WorkflowTaskTimeout"),
    ] {
        if value < 0 {
            return Err(bad(format!(
                "Invalid {name} on StartChildWorkflowExecutionCommand: negative duration. WorkflowId={} WorkflowType={workflow_type} Namespace={namespace}",
                a.workflow_id
            )));
        }
    }
    let retry_policy = match &a.retry_policy {
        // Without a policy a child is not retried, as in Temporal.
        None => None,
        // One attempt means no retries: Temporal checks nothing else of such a policy.
        Some(p) if p.maximum_attempts == 1 => {
            Some(super::workflow_task::default_activity_retry_policy(Some(p)))
        }
        Some(p) => {
            if p.maximum_attempts < 0
                || (p.backoff_coefficient != 0.0 && p.backoff_coefficient < 1.0)
                || opt_duration_millis(p.initial_interval.as_ref()) < 0
                || opt_duration_millis(p.maximum_interval.as_ref()) < 0
            {
                return Err(bad(format!(
                    "invalid WorkflowRetryPolicy on StartChildWorkflowExecutionCommand. WorkflowId={} WorkflowType={workflow_type} Namespace={namespace}",
                    a.workflow_id
                )));
            }
            let p = super::workflow_task::default_activity_retry_policy(Some(p));
            let (initial, maximum) = (
                opt_duration_millis(p.initial_interval.as_ref()),
                opt_duration_millis(p.maximum_interval.as_ref()),
            );
            if maximum < initial {
                return Err(bad(format!(
                    "invalid WorkflowRetryPolicy on StartChildWorkflowExecutionCommand: MaximumInterval cannot be less than InitialInterval. WorkflowId={}",
                    a.workflow_id
                )));
            }
            Some(p)
        }
    };
    // The task queue defaults to the parent's.
    let task_queue = match &a.task_queue {
        Some(q) if !q.name.is_empty() => q.name.clone(),
        _ => ms.state.task_queue.clone(),
    };
    if task_queue.len() > MAX_ID_LENGTH {
        return Err(bad(
            "TaskQueue on StartChildWorkflowExecutionCommand exceeds length limit.".into(),
        ));
    }
    if ms.state.children.len() >= MAX_PENDING_CHILDREN {
        return Err(reject(
            WorkflowTaskFailedCause::PendingChildWorkflowsLimitExceeded,
            format!(
                "the number of pending child workflow executions, {}, has reached the per-workflow limit of {MAX_PENDING_CHILDREN}",
                ms.state.children.len()
            ),
        ));
    }
    // Timeouts as Temporal normalises them: the execution timeout is left as is (0: none), the
    // run timeout never exceeds it, the task timeout defaults to 10 s and is capped at 120 s and
    // at the run timeout.
    let run_ms = match (run_ms, execution_ms) {
        (0, e) => e,
        (r, 0) => r,
        (r, e) => r.min(e),
    };
    let mut task_ms = if task_ms == 0 {
        DEFAULT_WORKFLOW_TASK_TIMEOUT_MS
    } else {
        task_ms
    };
    task_ms = task_ms.min(MAX_WORKFLOW_TASK_TIMEOUT_MS);
    if run_ms > 0 {
        task_ms = task_ms.min(run_ms);
    }
    let parent_close_policy = match ParentClosePolicy::try_from(a.parent_close_policy) {
        Ok(ParentClosePolicy::Unspecified) | Err(_) => ParentClosePolicy::Terminate,
        Ok(p) => p,
    };
    let reuse_policy = match WorkflowIdReusePolicy::try_from(a.workflow_id_reuse_policy) {
        Ok(WorkflowIdReusePolicy::Unspecified) | Err(_) => WorkflowIdReusePolicy::AllowDuplicate,
        Ok(p) => p,
    };
    let initiated_id = ms.add_event(
        EventType::StartChildWorkflowExecutionInitiated,
        Attributes::StartChildWorkflowExecutionInitiatedEventAttributes(
            h::StartChildWorkflowExecutionInitiatedEventAttributes {
                namespace: namespace.clone(),
                namespace_id: ms.state.namespace_id.clone(),
                workflow_id: a.workflow_id.clone(),
                workflow_type: a.workflow_type.clone(),
                task_queue: Some(TaskQueue {
                    name: task_queue,
                    kind: chronicle_proto::temporal::api::enums::v1::TaskQueueKind::Normal as i32,
                    normal_name: String::new(),
                }),
                input: a.input.clone(),
                // Left as given (none: no limit); the run and task timeouts are normalised.
                workflow_execution_timeout: a.workflow_execution_timeout,
                workflow_run_timeout: opt_duration(run_ms),
                workflow_task_timeout: opt_duration(task_ms),
                parent_close_policy: parent_close_policy as i32,
                control: a.control.clone(),
                workflow_task_completed_event_id: ctx.completed_id,
                workflow_id_reuse_policy: reuse_policy as i32,
                retry_policy,
                cron_schedule: a.cron_schedule.clone(),
                header: a.header.clone(),
                memo: a.memo.clone().filter(|m| !m.fields.is_empty()),
                search_attributes: a.search_attributes.clone(),
                inherit_build_id: a.inherit_build_id,
                priority: a.priority.clone(),
                ..Default::default()
            },
        ),
    );
    ms.state.children.insert(
        initiated_id,
        pb::ChildExecutionInfo {
            initiated_event_id: initiated_id,
            namespace,
            namespace_id: ms.state.namespace_id.clone(),
            workflow_id: a.workflow_id.clone(),
            workflow_type: a.workflow_type.clone(),
            parent_close_policy: parent_close_policy as i32,
            create_request_id: child_request_id(&ms.state.run_id, initiated_id),
            started: false,
            started_event_id: 0,
            started_run_id: String::new(),
            workflow_task_completed_event_id: ctx.completed_id,
            control: a.control.clone(),
        },
    );
    batch.put_outbox(&pb::OutboxTask {
        kind: pb::outbox_task::Kind::StartChild as i32,
        namespace_id: ms.state.namespace_id.clone(),
        workflow_id: ms.state.workflow_id.clone(),
        run_id: ms.state.run_id.clone(),
        scheduled_event_id: initiated_id,
        ..Default::default()
    })?;
    ctx.initiated_children.insert(a.workflow_id.clone());
    Ok(())
}

/// Adds `ChildWorkflowExecutionStarted` (buffered while a workflow task runs) and marks the
/// child started.
fn record_started(
    ms: &mut MutableState,
    child: &pb::ChildExecutionInfo,
    run_id: &str,
    header: Option<Header>,
) -> i64 {
    let id = ms
        .add_or_buffer_event(
            EventType::ChildWorkflowExecutionStarted,
            Attributes::ChildWorkflowExecutionStartedEventAttributes(
                h::ChildWorkflowExecutionStartedEventAttributes {
                    namespace: child.namespace.clone(),
                    namespace_id: child.namespace_id.clone(),
                    initiated_event_id: child.initiated_event_id,
                    workflow_execution: Some(WorkflowExecution {
                        workflow_id: child.workflow_id.clone(),
                        run_id: run_id.to_string(),
                    }),
                    workflow_type: child.workflow_type.clone(),
                    header,
                },
            ),
        )
        .unwrap_or(BUFFERED_ID);
    if let Some(entry) = ms.state.children.get_mut(&child.initiated_event_id) {
        entry.started = true;
        entry.started_event_id = id;
        entry.started_run_id = run_id.to_string();
    }
    id
}

/// A parent-close-policy task for one child of a closed parent.
fn put_policy_task(
    batch: &mut ShardBatch,
    parent: &pb::WorkflowExecutionState,
    child: &pb::ChildExecutionInfo,
) -> ApplyResult<()> {
    batch.put_outbox(&pb::OutboxTask {
        kind: pb::outbox_task::Kind::ParentClosePolicy as i32,
        namespace_id: parent.namespace_id.clone(),
        workflow_id: parent.workflow_id.clone(),
        run_id: parent.run_id.clone(),
        scheduled_event_id: child.initiated_event_id,
        target_namespace_id: child.namespace_id.clone(),
        target_workflow_id: child.workflow_id.clone(),
        parent_close_policy: child.parent_close_policy,
        ..Default::default()
    })?;
    Ok(())
}

fn applies_policy(child: &pb::ChildExecutionInfo) -> bool {
    matches!(
        ParentClosePolicy::try_from(child.parent_close_policy),
        Ok(ParentClosePolicy::Terminate | ParentClosePolicy::RequestCancel)
    )
}

/// What a closing run owes others: a child's chain reports its close to the parent (unless a
/// new run continues the chain), and a parent's started children get their close policy.
/// Children whose start is not recorded yet are covered by their start task, which finds the
/// parent closed.
/// Returns the ID of the row reporting the close to the parent, if one was written.
pub(super) fn on_close(batch: &mut ShardBatch, ms: &MutableState) -> ApplyResult<Option<u64>> {
    let mut report = None;
    if ms.state.parent.is_some() && !continues(ms) {
        report = Some(batch.put_outbox(&pb::OutboxTask {
            kind: pb::outbox_task::Kind::ChildClosed as i32,
            namespace_id: ms.state.namespace_id.clone(),
            workflow_id: ms.state.workflow_id.clone(),
            run_id: ms.state.run_id.clone(),
            scheduled_event_id: ms.state.completion_event_id,
            ..Default::default()
        })?);
    }
    // A run a reset replaced keeps its children: the new run has them pending, and their
    // closes are forwarded to it (Temporal skips the policy for a run terminated by a reset).
    if !ms.state.reset_run_id.is_empty() {
        return Ok(report);
    }
    let mut children: Vec<&pb::ChildExecutionInfo> = ms
        .state
        .children
        .values()
        .filter(|c| c.started && applies_policy(c))
        .collect();
    children.sort_by_key(|c| c.initiated_event_id);
    for child in children {
        put_policy_task(batch, &ms.state, child)?;
    }
    Ok(report)
}

/// Whether the run's close event names a run that continues its chain (continue-as-new, a
/// workflow retry): the chain's last run reports to the parent, not this one.
pub(crate) fn continues(ms: &MutableState) -> bool {
    let id = ms.state.completion_event_id;
    ms.new_events
        .iter()
        .find(|e| e.event_id == id)
        .and_then(|e| e.attributes.as_ref())
        .is_some_and(|a| match a {
            Attributes::WorkflowExecutionContinuedAsNewEventAttributes(_) => true,
            Attributes::WorkflowExecutionFailedEventAttributes(a) => {
                !a.new_execution_run_id.is_empty()
            }
            Attributes::WorkflowExecutionTimedOutEventAttributes(a) => {
                !a.new_execution_run_id.is_empty()
            }
            Attributes::WorkflowExecutionCompletedEventAttributes(a) => {
                !a.new_execution_run_id.is_empty()
            }
            _ => false,
        })
}

/// Loads a run for a transfer task's outcome; `None` when it no longer exists.
fn load_existing(
    batch: &ShardBatch,
    now: Timestamp,
    namespace_id: &str,
    workflow_id: &str,
    run_id: &str,
) -> ApplyResult<Option<MutableState>> {
    match load_run(batch, now, namespace_id, workflow_id, run_id) {
        Ok(ms) => Ok(Some(ms)),
        Err(ApplyError::Rejected(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The parent learns what became of a child's start; the start task's row goes.
pub fn record_start_outcome(
    batch: &mut ShardBatch,
    now: Timestamp,
    c: cmd::RecordChildStartOutcome,
) -> ApplyResult<command_result::Result> {
    use cmd::record_child_start_outcome::Outcome;
    batch.delete_outbox(c.outbox_id as u64);
    let Some(mut ms) = load_existing(batch, now, &c.namespace_id, &c.workflow_id, &c.run_id)?
    else {
        return Ok(super::ok());
    };
    let Some(child) = ms.state.children.get(&c.initiated_event_id).cloned() else {
        return Ok(super::ok());
    };
    if child.started {
        return Ok(super::ok());
    }
    if !ms.is_running() {
        // The parent closed before the start was recorded: if the child may have started (now,
        // or by an earlier attempt of this task), its close policy still applies.
        if applies_policy(&child) && !matches!(c.outcome, Some(Outcome::Failed(_))) {
            put_policy_task(batch, &ms.state, &child)?;
        }
        return Ok(super::ok());
    }
    match c.outcome {
        Some(Outcome::StartedRunId(run_id)) => {
            record_started(&mut ms, &child, &run_id, c.header);
        }
        Some(Outcome::Failed(cause)) => {
            let cause = StartChildWorkflowExecutionFailedCause::try_from(cause)
                .unwrap_or(StartChildWorkflowExecutionFailedCause::WorkflowAlreadyExists);
            ms.state.children.remove(&child.initiated_event_id);
            #[allow(deprecated)]
            ms.add_or_buffer_event(
                EventType::StartChildWorkflowExecutionFailed,
                Attributes::StartChildWorkflowExecutionFailedEventAttributes(
                    h::StartChildWorkflowExecutionFailedEventAttributes {
                        namespace: child.namespace.clone(),
                        namespace_id: child.namespace_id.clone(),
                        workflow_id: child.workflow_id.clone(),
                        workflow_type: child.workflow_type.clone(),
                        cause: cause as i32,
                        control: child.control.clone(),
                        initiated_event_id: child.initiated_event_id,
                        // Left unset, as Temporal's server does.
                        workflow_task_completed_event_id: 0,
                    },
                ),
            );
        }
        Some(Outcome::NotAttempted(_)) | None => return Ok(super::ok()),
    }
    ms.schedule_workflow_task_if_needed(batch)?;
    ms.persist(batch);
    Ok(super::ok())
}

/// A child's chain closed: the parent records the close event's outcome, if the parent run is
/// open and the child still pending (recording its Started event first if its start's outcome
/// has not been recorded yet).
pub fn record_child_closed(
    batch: &mut ShardBatch,
    now: Timestamp,
    c: cmd::RecordChildClosed,
) -> ApplyResult<command_result::Result> {
    let parent = c.parent.unwrap_or_default();
    let parent_execution = parent.execution.clone().unwrap_or_default();
    let Some(mut ms) = load_existing(
        batch,
        now,
        &parent.namespace_id,
        &parent_execution.workflow_id,
        &parent_execution.run_id,
    )?
    else {
        return Ok(super::ok());
    };
    // A parent run replaced by a reset passes the close on to the run that replaced it (which
    // rebuilt the pending child from the shared history), as Temporal forwards it.
    for _ in 0..MAX_RESET_FORWARDS {
        if ms.is_running() || ms.state.reset_run_id.is_empty() {
            break;
        }
        let next = ms.state.reset_run_id.clone();
        match load_existing(
            batch,
            now,
            &parent.namespace_id,
            &parent_execution.workflow_id,
            &next,
        )? {
            Some(reset_run) => ms = reset_run,
            None => break,
        }
    }
    if !ms.is_running() {
        return Ok(super::ok());
    }
    let child_execution = c.child_execution.unwrap_or_default();
    let Some(child) = ms
        .state
        .children
        .get(&parent.initiated_event_id)
        .cloned()
        .filter(|child| child.workflow_id == child_execution.workflow_id)
    else {
        return Ok(super::ok());
    };
    let Some(close) = c.close_event.and_then(|e| e.attributes) else {
        return Ok(super::ok());
    };
    let started_event_id = if child.started {
        child.started_event_id
    } else {
        record_started(&mut ms, &child, &c.child_first_run_id, None)
    };
    let namespace = child.namespace.clone();
    let namespace_id = child.namespace_id.clone();
    let workflow_execution = Some(child_execution);
    let workflow_type = child.workflow_type.clone();
    let initiated_event_id = child.initiated_event_id;
    let (event_type, attributes) = match close {
        Attributes::WorkflowExecutionCompletedEventAttributes(a) => (
            EventType::ChildWorkflowExecutionCompleted,
            Attributes::ChildWorkflowExecutionCompletedEventAttributes(
                h::ChildWorkflowExecutionCompletedEventAttributes {
                    result: a.result,
                    namespace,
                    namespace_id,
                    workflow_execution,
                    workflow_type,
                    initiated_event_id,
                    started_event_id,
                },
            ),
        ),
        Attributes::WorkflowExecutionFailedEventAttributes(a) => (
            EventType::ChildWorkflowExecutionFailed,
            Attributes::ChildWorkflowExecutionFailedEventAttributes(
                h::ChildWorkflowExecutionFailedEventAttributes {
                    failure: a.failure,
                    namespace,
                    namespace_id,
                    workflow_execution,
                    workflow_type,
                    initiated_event_id,
                    started_event_id,
                    retry_state: a.retry_state,
                },
            ),
        ),
        Attributes::WorkflowExecutionCanceledEventAttributes(a) => (
            EventType::ChildWorkflowExecutionCanceled,
            Attributes::ChildWorkflowExecutionCanceledEventAttributes(
                h::ChildWorkflowExecutionCanceledEventAttributes {
                    details: a.details,
                    namespace,
                    namespace_id,
                    workflow_execution,
                    workflow_type,
                    initiated_event_id,
                    started_event_id,
                },
            ),
        ),
        Attributes::WorkflowExecutionTerminatedEventAttributes(_) => (
            EventType::ChildWorkflowExecutionTerminated,
            Attributes::ChildWorkflowExecutionTerminatedEventAttributes(
                h::ChildWorkflowExecutionTerminatedEventAttributes {
                    namespace,
                    namespace_id,
                    workflow_execution,
                    workflow_type,
                    initiated_event_id,
                    started_event_id,
                },
            ),
        ),
        Attributes::WorkflowExecutionTimedOutEventAttributes(a) => (
            EventType::ChildWorkflowExecutionTimedOut,
            Attributes::ChildWorkflowExecutionTimedOutEventAttributes(
                h::ChildWorkflowExecutionTimedOutEventAttributes {
                    namespace,
                    namespace_id,
                    workflow_execution,
                    workflow_type,
                    initiated_event_id,
                    started_event_id,
                    retry_state: a.retry_state,
                },
            ),
        ),
        // Not a close event: nothing to record.
        _ => return Ok(super::ok()),
    };
    ms.state.children.remove(&initiated_event_id);
    ms.add_or_buffer_event(event_type, attributes);
    ms.schedule_workflow_task_if_needed(batch)?;
    ms.persist(batch);
    Ok(super::ok())
}

/// Applies a closed parent's policy to its child: the child's current run, if it is open and
/// still the chain this parent started.
pub fn apply_parent_close_policy(
    batch: &mut ShardBatch,
    now: Timestamp,
    c: cmd::ApplyParentClosePolicy,
) -> ApplyResult<command_result::Result> {
    let Some(parent) = c.parent else {
        return Ok(super::ok());
    };
    let Some(mut ms) = load_existing(batch, now, &c.namespace_id, &c.workflow_id, "")? else {
        return Ok(super::ok());
    };
    if !ms.is_running()
        || !ms
            .state
            .parent
            .as_ref()
            .is_some_and(|p| same_parent(p, &parent))
    {
        return Ok(super::ok());
    }
    match ParentClosePolicy::try_from(c.policy) {
        Ok(ParentClosePolicy::Terminate) => {
            super::signal::terminate_run(
                batch,
                &mut ms,
                PARENT_CLOSE_POLICY_REASON,
                HISTORY_SERVICE_IDENTITY,
                None,
            )?;
        }
        Ok(ParentClosePolicy::RequestCancel) => {
            if !super::signal::add_cancel_request(
                batch,
                &mut ms,
                String::new(),
                HISTORY_SERVICE_IDENTITY.to_string(),
                0,
                parent.execution.clone(),
            )? {
                return Ok(super::ok());
            }
        }
        _ => return Ok(super::ok()),
    }
    ms.persist(batch);
    Ok(super::ok())
}
