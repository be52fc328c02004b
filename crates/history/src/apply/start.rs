//! StartWorkflow: request-ID de-duplication, workflow-ID reuse and conflict policies, the first
//! two events, run/execution timeout timers and the first workflow task.

use chronicle_proto::chronicle::history::v1::{self as cmd, command_result};
use chronicle_proto::chronicle::persistence::v1 as pb;
use chronicle_proto::temporal::api::common::v1::Payloads;
use chronicle_proto::temporal::api::common::v1::WorkflowExecution;
use chronicle_proto::temporal::api::enums::v1::{
    ContinueAsNewInitiator, EventType, WorkflowExecutionStatus, WorkflowIdConflictPolicy,
    WorkflowIdReusePolicy,
};
use chronicle_proto::temporal::api::failure::v1::Failure;
use chronicle_proto::temporal::api::history::v1 as h;
use chronicle_proto::temporal::api::history::v1::history_event::Attributes;
use chronicle_proto::temporal::api::workflowservice::v1::{
    SignalWorkflowExecutionRequest, StartWorkflowExecutionRequest,
};
use chronicle_proto::wkt::Timestamp;
use chronicle_storage::ShardBatch;
use chronicle_types::ApiError;
use chronicle_types::time::{duration_from_millis, millis, opt_duration_millis};

use super::{ApplyResult, signal};
use crate::mutable_state::MutableState;

const DEFAULT_WORKFLOW_TASK_TIMEOUT_MS: i64 = 10_000;
const MAX_WORKFLOW_TASK_TIMEOUT_MS: i64 = 120_000;

fn started(run_id: String, started: bool) -> command_result::Result {
    command_result::Result::StartWorkflow(cmd::StartWorkflowResult {
        run_id,
        started,
        eager_workflow_task: None,
    })
}

pub fn start_workflow(
    batch: &mut ShardBatch,
    now: Timestamp,
    c: cmd::StartWorkflow,
) -> ApplyResult<command_result::Result> {
    let eager = c.eager_workflow_start
        && c.request
            .as_ref()
            .is_some_and(|r| r.request_eager_execution);
    let Some(request) = c.request.clone().filter(|_| eager) else {
        return start_with_signal(batch, now, c, None, None);
    };
    let ns = c.namespace_id.clone();
    let mut result = start_with_signal(batch, now, c, None, None)?;
    if let command_result::Result::StartWorkflow(r) = &mut result {
        r.eager_workflow_task = super::eager_start::first_task(batch, now, &ns, &request, r)?;
    }
    Ok(result)
}

/// Starts a child workflow for its parent: a start under the workflow ID's reuse policy (a
/// running workflow with the ID makes it fail), whose runs know their parent.
pub fn start_child(
    batch: &mut ShardBatch,
    now: Timestamp,
    c: cmd::StartChildWorkflow,
) -> ApplyResult<command_result::Result> {
    let parent = c
        .parent
        .ok_or_else(|| ApiError::invalid_argument("child start without its parent"))?;
    let mut request = c
        .request
        .ok_or_else(|| ApiError::invalid_argument("start request missing"))?;
    // A chain this parent's initiated event already started (maybe continued or retried since,
    // maybe closed) answers a retried start: a child starts once. A reset run starting a child
    // of its base run's history again reconnects to the chain a run of its lineage started.
    if let Some(current) = batch.current(&c.namespace_id, &request.workflow_id)?
        && let Some(state) =
            batch.execution(&c.namespace_id, &request.workflow_id, &current.run_id)?
        && state.parent.as_ref().is_some_and(|p| {
            super::child::same_parent(p, &parent)
                || (c.reconnect_after_reset && super::child::same_reset_lineage(p, &parent))
        })
    {
        return Ok(started(state.first_run_id, false));
    }
    // A running workflow with the ID is a conflict, whatever the caller's conflict policy.
    request.workflow_id_conflict_policy = WorkflowIdConflictPolicy::Fail as i32;
    start_with_signal(
        batch,
        now,
        cmd::StartWorkflow {
            namespace_id: c.namespace_id,
            request: Some(request),
            run_id: c.run_id,
            scheduled_by: None,
            eager_workflow_start: false,
        },
        None,
        Some((parent, c.root_execution)),
    )
}

/// SignalWithStartWorkflowExecution: the running run gets the signal; otherwise a new run starts
/// (under the reuse policy) with the signal in its history before its first workflow task.
pub fn signal_with_start(
    batch: &mut ShardBatch,
    now: Timestamp,
    c: cmd::SignalWithStart,
) -> ApplyResult<command_result::Result> {
    let request = c
        .request
        .ok_or_else(|| ApiError::invalid_argument("signal-with-start request missing"))?;
    let ns = c.namespace_id;
    let signal = SignalWorkflowExecutionRequest {
        namespace: request.namespace.clone(),
        workflow_execution: Some(WorkflowExecution {
            workflow_id: request.workflow_id.clone(),
            run_id: String::new(),
        }),
        signal_name: request.signal_name.clone(),
        input: request.signal_input.clone(),
        identity: request.identity.clone(),
        request_id: request.request_id.clone(),
        header: request.header.clone(),
        links: request.links.clone(),
        ..Default::default()
    };
    let conflict =
        WorkflowIdConflictPolicy::try_from(request.workflow_id_conflict_policy).unwrap_or_default();
    if conflict == WorkflowIdConflictPolicy::Fail {
        return Err(ApiError::invalid_argument(
            "SignalWithStartWorkflowExecution does not support WorkflowIdConflictPolicy FAIL.",
        )
        .into());
    }
    if let Some(current) = batch.current(&ns, &request.workflow_id)? {
        let running = current.status == WorkflowExecutionStatus::Running as i32;
        if running && conflict != WorkflowIdConflictPolicy::TerminateExisting {
            signal::signal(
                batch,
                now,
                cmd::SignalWorkflow {
                    namespace_id: ns.clone(),
                    request: Some(signal),
                    external: None,
                },
            )?;
            return Ok(started(current.run_id, false));
        }
    }
    let start = StartWorkflowExecutionRequest {
        namespace: request.namespace.clone(),
        workflow_id: request.workflow_id.clone(),
        workflow_type: request.workflow_type.clone(),
        task_queue: request.task_queue.clone(),
        input: request.input.clone(),
        workflow_execution_timeout: request.workflow_execution_timeout,
        workflow_run_timeout: request.workflow_run_timeout,
        workflow_task_timeout: request.workflow_task_timeout,
        identity: request.identity.clone(),
        request_id: request.request_id.clone(),
        workflow_id_reuse_policy: request.workflow_id_reuse_policy,
        workflow_id_conflict_policy: request.workflow_id_conflict_policy,
        retry_policy: request.retry_policy.clone(),
        cron_schedule: request.cron_schedule.clone(),
        memo: request.memo.clone(),
        search_attributes: request.search_attributes.clone(),
        header: request.header.clone(),
        workflow_start_delay: request.workflow_start_delay,
        user_metadata: request.user_metadata.clone(),
        links: request.links.clone(),
        priority: request.priority.clone(),
        ..Default::default()
    };
    start_with_signal(
        batch,
        now,
        cmd::StartWorkflow {
            namespace_id: ns,
            request: Some(start),
            run_id: c.run_id,
            scheduled_by: None,
            eager_workflow_start: false,
        },
        Some(&signal),
        None,
    )
}

fn start_with_signal(
    batch: &mut ShardBatch,
    now: Timestamp,
    c: cmd::StartWorkflow,
    signal: Option<&SignalWorkflowExecutionRequest>,
    parent: Option<(pb::ParentExecutionInfo, Option<WorkflowExecution>)>,
) -> ApplyResult<command_result::Result> {
    let scheduled_by = c.scheduled_by.clone();
    let request = c
        .request
        .ok_or_else(|| ApiError::invalid_argument("start request missing"))?;
    let ns = c.namespace_id;
    let workflow_id = request.workflow_id.clone();

    if let Some(current) = batch.current(&ns, &workflow_id)? {
        let running = current.status == WorkflowExecutionStatus::Running as i32;
        // The same request retried: answer what the first attempt did.
        if !request.request_id.is_empty() && current.create_request_id == request.request_id {
            return Ok(started(current.run_id, false));
        }
        if running {
            let conflict = WorkflowIdConflictPolicy::try_from(request.workflow_id_conflict_policy)
                .unwrap_or_default();
            let reuse = WorkflowIdReusePolicy::try_from(request.workflow_id_reuse_policy)
                .unwrap_or_default();
            match conflict {
                WorkflowIdConflictPolicy::UseExisting => {
                    super::attach_callbacks::attach(batch, now, &ns, &current.run_id, &request)?;
                    return Ok(started(current.run_id, false));
                }
                WorkflowIdConflictPolicy::TerminateExisting => {
                    let mut ms = super::load_run(batch, now, &ns, &workflow_id, &current.run_id)?;
                    signal::terminate_run(
                        batch,
                        &mut ms,
                        "TerminateExisting WorkflowIdConflictPolicy",
                        &request.identity,
                        None,
                    )?;
                    ms.persist(batch);
                }
                #[allow(deprecated)]
                _ if reuse == WorkflowIdReusePolicy::TerminateIfRunning => {
                    let mut ms = super::load_run(batch, now, &ns, &workflow_id, &current.run_id)?;
                    signal::terminate_run(
                        batch,
                        &mut ms,
                        "TerminateIfRunning WorkflowIdReusePolicy",
                        &request.identity,
                        None,
                    )?;
                    ms.persist(batch);
                }
                _ => {
                    return Err(ApiError::already_started(
                        format!("Workflow execution is already running. WorkflowId: {workflow_id}, RunId: {}.", current.run_id),
                        &current.create_request_id,
                        &current.run_id,
                    )
                    .into());
                }
            }
        } else {
            let reuse = WorkflowIdReusePolicy::try_from(request.workflow_id_reuse_policy)
                .unwrap_or_default();
            let failed_like = [
                WorkflowExecutionStatus::Failed,
                WorkflowExecutionStatus::Canceled,
                WorkflowExecutionStatus::Terminated,
                WorkflowExecutionStatus::TimedOut,
            ]
            .iter()
            .any(|s| *s as i32 == current.status);
            let refused = match reuse {
                WorkflowIdReusePolicy::RejectDuplicate => true,
                WorkflowIdReusePolicy::AllowDuplicateFailedOnly => !failed_like,
                _ => false,
            };
            if refused {
                return Err(ApiError::already_started(
                    format!(
                        "Workflow execution already finished{}. Workflow ID reuse policy does not allow a new run. WorkflowId: {workflow_id}, RunId: {}.",
                        if failed_like { "" } else { " successfully" },
                        current.run_id
                    ),
                    &current.create_request_id,
                    &current.run_id,
                )
                .into());
            }
        }
    }

    let run_id = c.run_id;
    let mut lineage = Lineage::first(&run_id);
    // A schedule's start: its result and failure so far, and where to report the close.
    lineage.scheduled_by = scheduled_by;
    lineage.last_completion_result = request.last_completion_result.clone();
    lineage.continued_failure = request.continued_failure.clone();
    let mut request = request;
    if !request.cron_schedule.is_empty() {
        // A cron workflow's first run waits for the first cron time (the frontend refused a
        // start delay with it), and names the cron as its initiator, as in Temporal.
        let backoff = chronicle_cron::first_backoff_ms(&request.cron_schedule, millis(&now));
        request.workflow_start_delay = (backoff > 0).then(|| duration_from_millis(backoff));
        lineage.initiator = ContinueAsNewInitiator::CronSchedule;
    }
    if let Some((parent, root)) = parent {
        lineage.parent = Some(parent);
        lineage.root_execution = root;
    }
    create_run(batch, now, &ns, &run_id, &request, lineage, signal)?;
    Ok(started(run_id, true))
}

/// Where a new run comes from: a client's start, a workflow retry or a continue-as-new.
pub struct Lineage {
    pub attempt: i32,
    pub first_run_id: String,
    pub continued_execution_run_id: String,
    pub initiator: ContinueAsNewInitiator,
    pub continued_failure: Option<Failure>,
    pub last_completion_result: Option<Payloads>,
    /// Absolute deadline of the whole execution (kept across retries and continue-as-new).
    pub execution_expiration_ms: Option<i64>,
    /// A child workflow's parent (every run of the child's chain keeps it).
    pub parent: Option<pb::ParentExecutionInfo>,
    /// The top of the parent chain; `None`: the new run is its own root.
    pub root_execution: Option<WorkflowExecution>,
    /// The schedule that started the chain.
    pub scheduled_by: Option<pb::ScheduledBy>,
}

impl Lineage {
    pub fn first(run_id: &str) -> Self {
        Self {
            attempt: 1,
            first_run_id: run_id.to_string(),
            continued_execution_run_id: String::new(),
            initiator: ContinueAsNewInitiator::Unspecified,
            continued_failure: None,
            last_completion_result: None,
            execution_expiration_ms: None,
            parent: None,
            root_execution: None,
            scheduled_by: None,
        }
    }
}

fn parent_field<T: Default>(lineage: &Lineage, f: impl Fn(&pb::ParentExecutionInfo) -> T) -> T {
    lineage.parent.as_ref().map(f).unwrap_or_default()
}

/// Creates a run: its first event, the first workflow task (or the timer that delays it), the
/// run timeout timer and the current-run record.
pub fn create_run(
    batch: &mut ShardBatch,
    now: Timestamp,
    ns: &str,
    run_id: &str,
    request: &StartWorkflowExecutionRequest,
    lineage: Lineage,
    signal: Option<&SignalWorkflowExecutionRequest>,
) -> ApplyResult<()> {
    let workflow_id = request.workflow_id.clone();
    let run_id = run_id.to_string();
    // Timeouts as Temporal normalises them: the run timeout never exceeds the execution timeout,
    // the task timeout defaults to 10 s, is capped at 120 s and never exceeds the run timeout.
    let execution_ms = opt_duration_millis(request.workflow_execution_timeout.as_ref()).max(0);
    let now_ms = millis(&now);
    let execution_expiration_ms = lineage
        .execution_expiration_ms
        .or((execution_ms > 0).then_some(now_ms.saturating_add(execution_ms)));
    let mut run_ms = opt_duration_millis(request.workflow_run_timeout.as_ref()).max(0);
    if run_ms == 0 || (execution_ms > 0 && run_ms > execution_ms) {
        run_ms = execution_ms;
    }
    let mut task_ms = opt_duration_millis(request.workflow_task_timeout.as_ref());
    if task_ms <= 0 {
        task_ms = DEFAULT_WORKFLOW_TASK_TIMEOUT_MS;
    }
    task_ms = task_ms.min(MAX_WORKFLOW_TASK_TIMEOUT_MS);
    if run_ms > 0 {
        task_ms = task_ms.min(run_ms);
    }
    let task_queue = request
        .task_queue
        .as_ref()
        .map(|t| t.name.clone())
        .unwrap_or_default();
    let delay_ms = opt_duration_millis(request.workflow_start_delay.as_ref()).max(0);
    let state = pb::WorkflowExecutionState {
        namespace_id: ns.to_string(),
        workflow_id: workflow_id.clone(),
        run_id: run_id.clone(),
        workflow_type: request.workflow_type.clone(),
        task_queue: task_queue.clone(),
        status: WorkflowExecutionStatus::Running as i32,
        next_event_id: 1,
        start_time: Some(now),
        execution_time: Some(chronicle_types::time::from_millis(
            now_ms.saturating_add(delay_ms),
        )),
        workflow_execution_timeout: (execution_ms > 0).then(|| duration_from_millis(execution_ms)),
        workflow_run_timeout: (run_ms > 0).then(|| duration_from_millis(run_ms)),
        workflow_task_timeout: Some(duration_from_millis(task_ms)),
        first_run_id: lineage.first_run_id.clone(),
        create_request_id: request.request_id.clone(),
        retry_policy: request.retry_policy.clone(),
        attempt: lineage.attempt,
        memo: request.memo.clone(),
        search_attributes: request.search_attributes.clone(),
        execution_expiration_time: execution_expiration_ms.map(chronicle_types::time::from_millis),
        identity: request.identity.clone(),
        parent: lineage.parent.clone(),
        root_execution: Some(lineage.root_execution.clone().unwrap_or(WorkflowExecution {
            workflow_id: workflow_id.clone(),
            run_id: run_id.clone(),
        })),
        priority: request.priority.clone(),
        user_metadata: request.user_metadata.clone(),
        cron_schedule: request.cron_schedule.clone(),
        scheduled_by: lineage.scheduled_by.clone(),
        completion_callbacks: request.completion_callbacks.clone(),
        ..Default::default()
    };
    let mut ms = MutableState::new(state, now);
    ms.add_event(
        EventType::WorkflowExecutionStarted,
        Attributes::WorkflowExecutionStartedEventAttributes(
            h::WorkflowExecutionStartedEventAttributes {
                workflow_type: request.workflow_type.clone(),
                task_queue: request.task_queue.clone(),
                input: request.input.clone(),
                workflow_execution_timeout: ms.state.workflow_execution_timeout,
                workflow_run_timeout: ms.state.workflow_run_timeout,
                workflow_task_timeout: ms.state.workflow_task_timeout,
                original_execution_run_id: run_id.clone(),
                identity: request.identity.clone(),
                first_execution_run_id: lineage.first_run_id.clone(),
                continued_execution_run_id: lineage.continued_execution_run_id.clone(),
                initiator: lineage.initiator as i32,
                continued_failure: lineage.continued_failure.clone(),
                last_completion_result: lineage.last_completion_result.clone(),
                retry_policy: request.retry_policy.clone(),
                attempt: lineage.attempt,
                workflow_execution_expiration_time: ms.state.execution_expiration_time,
                cron_schedule: request.cron_schedule.clone(),
                first_workflow_task_backoff: (delay_ms > 0).then(|| duration_from_millis(delay_ms)),
                memo: request.memo.clone(),
                search_attributes: request.search_attributes.clone(),
                header: request.header.clone(),
                workflow_id: workflow_id.clone(),
                parent_workflow_namespace: parent_field(&lineage, |p| p.namespace.clone()),
                parent_workflow_namespace_id: parent_field(&lineage, |p| p.namespace_id.clone()),
                parent_workflow_execution: lineage
                    .parent
                    .as_ref()
                    .and_then(|p| p.execution.clone()),
                parent_initiated_event_id: parent_field(&lineage, |p| p.initiated_event_id),
                root_workflow_execution: lineage
                    .parent
                    .as_ref()
                    .and(ms.state.root_execution.clone()),
                priority: request.priority.clone(),
                completion_callbacks: request.completion_callbacks.clone(),
                ..Default::default()
            },
        ),
    );
    // The start's summary and details, and its links (a Nexus caller's operation), on its
    // first event as in Temporal.
    if let Some(event) = ms.new_events.last_mut() {
        event.user_metadata = request.user_metadata.clone();
        event.links = request.links.clone();
    }
    if let Some(signal) = signal {
        // Remembered like any signal's request ID, so a retried signal-with-start that reaches
        // the run it created does not deliver the signal twice.
        if !signal.request_id.is_empty() {
            ms.state.signal_request_ids.push(signal.request_id.clone());
        }
        // The request's links go on both events, as in Temporal.
        super::nexus_async::add_with_links(
            &mut ms,
            EventType::WorkflowExecutionSignaled,
            Attributes::WorkflowExecutionSignaledEventAttributes(
                h::WorkflowExecutionSignaledEventAttributes {
                    signal_name: signal.signal_name.clone(),
                    input: signal.input.clone(),
                    identity: signal.identity.clone(),
                    header: signal.header.clone(),
                    ..Default::default()
                },
            ),
            signal.links.clone(),
            false,
        );
    }
    if delay_ms > 0 {
        batch.put_timer(
            now_ms.saturating_add(delay_ms),
            &pb::TimerTask {
                kind: pb::timer_task::Kind::WorkflowStartDelay as i32,
                namespace_id: ns.to_string(),
                workflow_id: workflow_id.clone(),
                run_id: run_id.clone(),
                ..Default::default()
            },
        )?;
    } else {
        ms.schedule_workflow_task(batch, 1)?;
    }
    if run_ms > 0 {
        batch.put_timer(
            now_ms.saturating_add(delay_ms).saturating_add(run_ms),
            &pb::TimerTask {
                kind: pb::timer_task::Kind::WorkflowRunTimeout as i32,
                namespace_id: ns.to_string(),
                workflow_id: workflow_id.clone(),
                run_id: run_id.clone(),
                ..Default::default()
            },
        )?;
    }
    batch.put_current(
        ns,
        &workflow_id,
        &pb::CurrentExecution {
            run_id: run_id.clone(),
            status: WorkflowExecutionStatus::Running as i32,
            create_request_id: request.request_id.clone(),
            start_time: Some(now),
        },
    );
    ms.persist(batch);
    Ok(())
}
