//! Metrics of the history role: the names, labels and values Temporal's history service exports
//! (so its dashboards work), plus Chronicle's own, prefixed `chronicle_`.
//!
//! Timers are recorded in seconds; the exporter gives every histogram Temporal's timer buckets,
//! except those listed in [`DIMENSIONLESS_HISTOGRAMS`].

use std::cell::RefCell;

use chronicle_proto::chronicle::persistence::v1 as pb;
use chronicle_proto::temporal::api::enums::v1::WorkflowExecutionStatus;

/// Temporal's `service_name` of this role.
pub const SERVICE_NAME: &str = "history";

// Temporal's names.

/// Runs closed, by how they closed (labels: namespace, namespace_state, operation
/// `CompletionStats`, taskqueue, workflowType).
pub const WORKFLOW_SUCCESS: &str = "workflow_success";
pub const WORKFLOW_FAILED: &str = "workflow_failed";
pub const WORKFLOW_CANCEL: &str = "workflow_cancel";
pub const WORKFLOW_TERMINATE: &str = "workflow_terminate";
pub const WORKFLOW_TIMEOUT: &str = "workflow_timeout";
pub const WORKFLOW_CONTINUED_AS_NEW: &str = "workflow_continued_as_new";
/// Time from a task's scheduling to its start, in seconds (labels: namespace, operation
/// `RecordWorkflowTaskStarted` / `RecordActivityTaskStarted`, task_type, taskqueue, partition).
pub const TASK_SCHEDULE_TO_START_LATENCY: &str = "task_schedule_to_start_latency";
/// A run's state transitions so far, each time its state is written (dimensionless).
pub const STATE_TRANSITION_COUNT: &str = "state_transition_count";
/// Writes to the shard (each a Raft log entry, fsynced, then applied to RocksDB), by
/// Temporal's persistence operation name and namespace.
pub const PERSISTENCE_REQUESTS: &str = "persistence_requests";
/// Writes that failed for a storage or replication reason (not a refused command).
pub const PERSISTENCE_ERRORS: &str = "persistence_errors";
/// Time of a write from proposal until applied, in seconds.
pub const PERSISTENCE_LATENCY: &str = "persistence_latency";

/// Timer and transfer tasks run by a shard leader (labels: operation and task_type, both the
/// task's Temporal type such as `TimerActiveTaskUserTimer` or `TransferActiveTaskActivity`,
/// namespace).
pub const TASK_REQUESTS: &str = "task_requests";
/// Of those, attempts that failed (the task runs again).
pub const TASK_ERRORS: &str = "task_errors";
/// Time of one attempt, in seconds.
pub const TASK_LATENCY_PROCESSING: &str = "task_latency_processing";
/// Time from a task's first attempt to its completion, over all its attempts, in seconds
/// (labels as `task_requests`), counted by the leader that completed it (Temporal: the task's
/// in-memory latency across attempts).
pub const TASK_LATENCY: &str = "task_latency";
/// Time from a task's visibility to its completion, in seconds (labels as `task_requests` plus
/// `queue_reader_id`): a timer from its fire time, so a late timer queue shows here; an outbox
/// task from its creation (the time of the command that wrote it, which the leader stamped on
/// the replicated row), so a failover or a slow leader shows here too.
pub const TASK_LATENCY_QUEUE: &str = "task_latency_queue";
/// Attempts a task took to complete, counted by the leader that completed it (a dimensionless
/// histogram; labels as `task_latency_processing`).
pub const TASK_ATTEMPT: &str = "task_attempt";

/// History shards this node leads (Temporal: shards owned by the host), set at each scrape.
pub const NUMSHARDS_GAUGE: &str = "numshards_gauge";
/// A history shard this node came to lead (Temporal: a shard context created on the host).
pub const SHARDITEM_CREATED: &str = "sharditem_created_count";
/// A history shard this node stopped leading (Temporal: a shard context removed from the host).
pub const SHARDITEM_REMOVED: &str = "sharditem_removed_count";
/// A history shard this node stopped leading (Temporal: a shard context closed).
pub const SHARD_CLOSED: &str = "shard_closed_count";

/// Attempts of this node to take up a history shard it was elected to lead (Temporal: passes of
/// its shard controller's acquire loop), counted when the attempt starts.
pub const ACQUIRE_SHARDS_COUNT: &str = "acquire_shards_count";
/// Time of one such attempt, from the election until the shard's term was ready (its earlier
/// entries applied) or the leadership was lost, in seconds.
pub const ACQUIRE_SHARDS_LATENCY: &str = "acquire_shards_latency";
/// Changes of this node's view of the ring of history nodes (the members of its metadata
/// replica), its first view at start included (Temporal: the ring's membership events its
/// shard controller receives, the first one when the host joins).
pub const MEMBERSHIP_CHANGED_COUNT: &str = "membership_changed_count";

/// `operation` of the shard controller's families.
const SHARD_CONTROLLER: &str = "ShardController";

/// Counts the start of an attempt to take up a shard (`acquire_shards_count`).
pub fn record_acquire_start() {
    metrics::counter!(
        ACQUIRE_SHARDS_COUNT,
        "service_name" => SERVICE_NAME,
        "operation" => SHARD_CONTROLLER,
    )
    .increment(1);
}

/// Records how long an attempt to take up a shard took (`acquire_shards_latency`).
pub fn record_acquire_end(started: std::time::Instant) {
    metrics::histogram!(
        ACQUIRE_SHARDS_LATENCY,
        "service_name" => SERVICE_NAME,
        "operation" => SHARD_CONTROLLER,
    )
    .record(started.elapsed().as_secs_f64());
}

/// Counts a change of this node's view of the ring (`membership_changed_count`).
pub fn record_membership_changed() {
    metrics::counter!(
        MEMBERSHIP_CHANGED_COUNT,
        "service_name" => SERVICE_NAME,
        "operation" => SHARD_CONTROLLER,
    )
    .increment(1);
}

/// Temporal's history RPC, and the namespace ID, of a transfer task's command sent to another
/// shard (Temporal's history calls another history host for it: the caller's `client_*`
/// families). `None` for commands Temporal sends no history RPC for (a schedule's actions go
/// through its frontend client).
pub(crate) fn transfer_client_call(
    kind: &chronicle_proto::chronicle::history::v1::shard_command::Kind,
) -> Option<(&'static str, &str)> {
    use chronicle_proto::chronicle::history::v1::shard_command::Kind;
    use chronicle_proto::temporal::api::enums::v1::ParentClosePolicy;
    match kind {
        Kind::StartChildWorkflow(c) => Some(("StartWorkflowExecution", &c.namespace_id)),
        Kind::RecordChildClosed(c) => Some((
            "RecordChildExecutionCompleted",
            c.parent.as_ref().map_or("", |p| p.namespace_id.as_str()),
        )),
        Kind::SignalWorkflow(c) if c.external.is_some() => {
            Some(("SignalWorkflowExecution", &c.namespace_id))
        }
        Kind::RequestCancelWorkflow(c) if c.external.is_some() => {
            Some(("RequestCancelWorkflowExecution", &c.namespace_id))
        }
        Kind::ApplyParentClosePolicy(c) => match ParentClosePolicy::try_from(c.policy) {
            Ok(ParentClosePolicy::Terminate) => {
                Some(("TerminateWorkflowExecution", &c.namespace_id))
            }
            Ok(ParentClosePolicy::RequestCancel) => {
                Some(("RequestCancelWorkflowExecution", &c.namespace_id))
            }
            _ => None,
        },
        _ => None,
    }
}

/// Counts a change of leadership of a history shard on this node, as Temporal's shard controller
/// counts shards acquired and released (operation `ShardController`).
pub fn record_shard_leadership(gained: bool) {
    let labels = [
        ("service_name", SERVICE_NAME),
        ("operation", "ShardController"),
    ];
    if gained {
        metrics::counter!(SHARDITEM_CREATED, &labels).increment(1);
    } else {
        metrics::counter!(SHARDITEM_REMOVED, &labels).increment(1);
        metrics::counter!(SHARD_CLOSED, &labels).increment(1);
    }
}

// Chronicle's Raft gauges, per node (never per shard), set at scrape time from each group's
// openraft metrics on this node.
/// Groups (shards and the metadata group) this node leads.
pub const RAFT_GROUPS_LED: &str = "chronicle_raft_groups_led";
/// Groups hosted here that know no leader (no quorum, or an election under way).
pub const RAFT_GROUPS_WITHOUT_LEADER: &str = "chronicle_raft_groups_without_leader";
/// Groups this node leads where a voter has not answered in this term or trails by more than
/// [`UNDER_REPLICATED_LAG`] entries.
pub const RAFT_GROUPS_UNDER_REPLICATED: &str = "chronicle_raft_groups_under_replicated";
/// Largest gap, over the groups hosted here, between the last log entry and the last applied.
pub const RAFT_APPLY_LAG_ENTRIES: &str = "chronicle_raft_apply_lag_entries";
/// Largest lag of a follower behind this node's log, over the groups it leads.
pub const RAFT_REPLICATION_LAG_ENTRIES: &str = "chronicle_raft_replication_lag_entries";
/// Leader changes seen by this node (sampled at scrape time: two changes between scrapes
/// count as one).
pub const RAFT_LEADER_CHANGES: &str = "chronicle_raft_leader_changes";
/// Follower lag (entries) from which a group counts as under-replicated.
pub const UNDER_REPLICATED_LAG: u64 = 1000;

/// Requests between roles, as Temporal's history and matching services count the RPCs they
/// serve (labels: service_name, operation, namespace). Chronicle's roles call each other in
/// process; the call is measured where it is made.
pub const SERVICE_REQUESTS: &str = "service_requests";
pub const SERVICE_LATENCY: &str = "service_latency";

// Chronicle's own.

/// Timers fired, by kind.
pub const TIMER_TASKS_FIRED: &str = "chronicle_timer_task_fired";
/// Lateness of a fired timer behind its deadline, in seconds.
pub const TIMER_TASK_LATENCY: &str = "chronicle_timer_task_schedule_latency";
/// Tasks handed from the outbox to matching.
pub const TRANSFER_TASKS_DISPATCHED: &str = "chronicle_transfer_task_dispatched";
/// Outbox sweeps started because task-queue partitions moved between matching nodes (each
/// hands every unstarted task over again).
pub const MATCHING_PLACEMENT_CHANGES: &str = "chronicle_outbox_matching_placement_changes";
/// Commands proposed to shard groups, by kind.
pub const SHARD_COMMANDS: &str = "chronicle_history_shard_commands";
/// Writes refused because the shard's proposal queue was full.
pub const SHARD_OVERLOADED: &str = "chronicle_history_shard_overloaded";
/// Time from proposing a command until it was applied, in seconds.
pub const SHARD_COMMAND_LATENCY: &str = "chronicle_history_shard_command_latency";
/// Commands per Raft log entry (group commit), per entry.
pub const SHARD_COMMAND_BATCH_SIZE: &str = "chronicle_history_shard_command_batch_size";
/// Transfer tasks (children, parent close policies, external signals and cancellations) run by
/// a shard leader, by outcome (`ok`, or `retry` when one failed and runs again).
pub const TRANSFER_TASKS_EXECUTED: &str = "chronicle_transfer_task_executed";
/// Worker commands (Temporal's name), per command: `outcome` `success` when a poll of the
/// worker's control queue took them, `no_poller` when nobody took them in time; `namespace`,
/// `command_type` (`cancel_activity`).
pub const WORKER_COMMANDS_SENT: &str = "worker_commands_sent";

mod schedule;
pub use schedule::*;

/// How far the timer queue is behind, in seconds: over the shards this node leads, now minus
/// the fire time of the earliest timer that is due and not fired yet (0 when none is due).
pub const TIMER_QUEUE_LAG: &str = "chronicle_timer_queue_lag_seconds";
/// Age of the oldest outbox task, in seconds, over the shards this node leads: a workflow or
/// activity task waiting for a worker, or a transfer task not run yet. Counted from the commit
/// that wrote it (its row's visibility time; a row without one, from when the current leader
/// first read it).
pub const OUTBOX_OLDEST_TASK_AGE: &str = "chronicle_outbox_oldest_task_age_seconds";

/// Histograms of counts, not durations: they get dimensionless buckets.
pub const DIMENSIONLESS_HISTOGRAMS: &[&str] = &[
    STATE_TRANSITION_COUNT,
    SHARD_COMMAND_BATCH_SIZE,
    TASK_ATTEMPT,
];

/// Describes every metric of the role (the exporter's `# HELP` lines).
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_histogram};
    for (name, help) in [
        (WORKFLOW_SUCCESS, "Workflow runs completed."),
        (WORKFLOW_FAILED, "Workflow runs failed."),
        (WORKFLOW_CANCEL, "Workflow runs canceled."),
        (WORKFLOW_TERMINATE, "Workflow runs terminated."),
        (WORKFLOW_TIMEOUT, "Workflow runs timed out."),
        (
            WORKFLOW_CONTINUED_AS_NEW,
            "Workflow runs closed by continue-as-new.",
        ),
        (PERSISTENCE_REQUESTS, "Shard writes (Raft entries applied)."),
        (
            PERSISTENCE_ERRORS,
            "Shard writes failed by storage or replication.",
        ),
        (TASK_REQUESTS, "Timer and transfer task attempts."),
        (TASK_ERRORS, "Timer and transfer task attempts that failed."),
        (TIMER_TASKS_FIRED, "Timers fired, by kind."),
        (
            TRANSFER_TASKS_DISPATCHED,
            "Tasks handed from the outbox to matching.",
        ),
        (
            MATCHING_PLACEMENT_CHANGES,
            "Outbox sweeps after task-queue partitions moved between matching nodes.",
        ),
        (
            SHARD_COMMANDS,
            "Commands proposed to shard groups, by kind.",
        ),
        (TRANSFER_TASKS_EXECUTED, "Transfer tasks run, by outcome."),
        (
            WORKER_COMMANDS_SENT,
            "Worker commands delivered to or dropped for a worker's control queue, by outcome.",
        ),
        (
            SHARD_OVERLOADED,
            "Writes refused because the shard's proposal queue was full.",
        ),
        (SCHEDULE_ACTION_SUCCESS, "Workflows started by schedules."),
        (
            SCHEDULE_ACTION_ERRORS,
            "Failed attempts to start a schedule's workflow.",
        ),
        (
            SCHEDULE_MISSED_CATCHUP_WINDOW,
            "Schedule times skipped for being older than the catch-up window.",
        ),
        (
            SCHEDULE_BUFFER_OVERRUNS,
            "Schedule actions dropped because the buffer was full.",
        ),
        (
            SCHEDULE_OVERLAP_SKIPPED,
            "Schedule actions skipped by the overlap policy.",
        ),
        (
            SCHEDULE_CANCEL_WORKFLOW_ERRORS,
            "Errors cancelling a schedule's previous run.",
        ),
        (
            SCHEDULE_TERMINATE_WORKFLOW_ERRORS,
            "Errors terminating a schedule's previous run.",
        ),
    ] {
        describe_counter!(name, help);
    }
    for (name, help) in [
        (
            TASK_SCHEDULE_TO_START_LATENCY,
            "Time from a task's scheduling to its start.",
        ),
        (PERSISTENCE_LATENCY, "Time of a shard write."),
        (TASK_LATENCY_PROCESSING, "Time of one task attempt."),
        (
            TASK_LATENCY,
            "Time from a task's first attempt to its completion.",
        ),
        (
            TASK_LATENCY_QUEUE,
            "Time from a task's visibility to its completion.",
        ),
        (TIMER_TASK_LATENCY, "Lateness of fired timers."),
        (SHARD_COMMAND_LATENCY, "Time from proposal to apply."),
        (
            SCHEDULE_ACTION_DELAY,
            "Time from a schedule action's time to its workflow's start.",
        ),
    ] {
        describe_histogram!(name, Unit::Seconds, help);
    }
    metrics::describe_gauge!(NUMSHARDS_GAUGE, "History shards this node leads.");
    metrics::describe_counter!(SHARDITEM_CREATED, "History shards this node came to lead.");
    metrics::describe_counter!(
        SHARDITEM_REMOVED,
        "History shards this node stopped leading."
    );
    metrics::describe_counter!(SHARD_CLOSED, "History shards this node stopped leading.");
    metrics::describe_counter!(
        ACQUIRE_SHARDS_COUNT,
        "Attempts to take up a history shard this node was elected to lead."
    );
    describe_histogram!(
        ACQUIRE_SHARDS_LATENCY,
        Unit::Seconds,
        "Time from a shard election until its term was ready."
    );
    metrics::describe_counter!(
        MEMBERSHIP_CHANGED_COUNT,
        "Changes of this node's view of the history ring."
    );
    metrics::describe_gauge!(
        TIMER_QUEUE_LAG,
        Unit::Seconds,
        "Lateness of the earliest due timer not fired yet, over shards led here."
    );
    metrics::describe_gauge!(
        OUTBOX_OLDEST_TASK_AGE,
        Unit::Seconds,
        "Age of the oldest outbox task, over shards led here."
    );
    for (name, help) in [
        (RAFT_GROUPS_LED, "Raft groups this node leads."),
        (
            RAFT_GROUPS_WITHOUT_LEADER,
            "Raft groups hosted here without a known leader.",
        ),
        (
            RAFT_GROUPS_UNDER_REPLICATED,
            "Groups led here with a voter silent or far behind.",
        ),
        (
            RAFT_APPLY_LAG_ENTRIES,
            "Largest log-to-applied gap of a group hosted here.",
        ),
        (
            RAFT_REPLICATION_LAG_ENTRIES,
            "Largest follower lag of a group led here (entries).",
        ),
    ] {
        metrics::describe_gauge!(name, help);
    }
    metrics::describe_counter!(RAFT_LEADER_CHANGES, "Leader changes seen (sampled).");
    describe_histogram!(
        STATE_TRANSITION_COUNT,
        Unit::Count,
        "A run's state transitions, at each write of its state."
    );
    describe_histogram!(
        SHARD_COMMAND_BATCH_SIZE,
        Unit::Count,
        "Commands per Raft log entry."
    );
    describe_histogram!(
        TASK_ATTEMPT,
        Unit::Count,
        "Attempts a history task took to complete."
    );
}

/// Measures one request between roles from its creation until it is dropped.
pub(crate) struct RequestTimer {
    labels: [(&'static str, String); 3],
    started: std::time::Instant,
}

impl RequestTimer {
    pub(crate) fn new(
        service_name: &'static str,
        operation: &'static str,
        namespace: String,
    ) -> Self {
        Self {
            labels: [
                ("service_name", service_name.to_string()),
                ("operation", operation.to_string()),
                ("namespace", namespace),
            ],
            started: std::time::Instant::now(),
        }
    }
}

impl Drop for RequestTimer {
    fn drop(&mut self) {
        metrics::counter!(SERVICE_REQUESTS, &self.labels[..]).increment(1);
        metrics::histogram!(SERVICE_LATENCY, &self.labels[..])
            .record(self.started.elapsed().as_secs_f64());
    }
}

/// Temporal's task type of a timer task.
pub(crate) fn timer_task_type(kind: i32) -> &'static str {
    use pb::timer_task::Kind;
    match Kind::try_from(kind).unwrap_or_default() {
        Kind::UserTimer => "TimerActiveTaskUserTimer",
        Kind::WorkflowTaskTimeout | Kind::WorkflowTaskScheduleToStartTimeout => {
            "TimerActiveTaskWorkflowTaskTimeout"
        }
        Kind::ActivityTimeout => "TimerActiveTaskActivityTimeout",
        Kind::ActivityRetry => "TimerActiveTaskActivityRetryTimer",
        Kind::WorkflowRunTimeout => "TimerActiveTaskWorkflowRunTimeout",
        Kind::WorkflowExecutionTimeout => "TimerActiveTaskWorkflowExecutionTimeout",
        Kind::WorkflowStartDelay => "TimerActiveTaskWorkflowBackoffTimer",
        Kind::Schedule => "TimerActiveTaskScheduleTimer",
        Kind::DeleteRun => "TimerActiveTaskDeleteHistoryEvent",
        Kind::NexusOperationTimeout => "TimerActiveTaskStateMachineTimer",
        Kind::Unspecified => "TimerActiveTaskUnknown",
    }
}

/// Temporal's task type of an outbox (transfer) task.
pub(crate) fn transfer_task_type(kind: i32) -> &'static str {
    use pb::outbox_task::Kind;
    match Kind::try_from(kind).unwrap_or_default() {
        Kind::WorkflowTask => "TransferActiveTaskWorkflowTask",
        Kind::ActivityTask => "TransferActiveTaskActivity",
        Kind::StartChild => "TransferActiveTaskStartChildExecution",
        // Temporal reports the parent's notification and the close policy under its close task.
        Kind::ChildClosed | Kind::ParentClosePolicy => "TransferActiveTaskCloseExecution",
        Kind::CancelExternal => "TransferActiveTaskCancelExecution",
        Kind::SignalExternal => "TransferActiveTaskSignalExecution",
        Kind::ScheduleStart => "TransferActiveTaskScheduleStart",
        Kind::ScheduleWorkflowClosed => "TransferActiveTaskCloseExecution",
        Kind::ScheduleStopWorkflow => "TransferActiveTaskScheduleStop",
        // Temporal's outbound queue task for a Nexus start request.
        Kind::WorkerCommands => "OutboundActive.WorkerCommands",
        Kind::NexusTask | Kind::NexusCancel => "OutboundActiveTaskInvocation",
        // Temporal's callback invocation (a closed run's completion callbacks).
        Kind::NexusCallbacks => "OutboundActiveTaskInvocation",
        Kind::Unspecified => "TransferActiveTaskUnknown",
    }
}

/// Temporal's `archetype` of a task: Chronicle's tasks all belong to workflow runs.
const TASK_ARCHETYPE: &str = "workflow";
/// Temporal's `task_priority`: the tasks of Chronicle's queues are all run alike, as Temporal's
/// default (high) priority class.
const TASK_PRIORITY: &str = "high";

/// Records one attempt of a timer or transfer task (labels as Temporal's history queues set
/// them: the attempt's latency without `task_priority`, the counters with it).
/// The labels Temporal puts on its history task families (before `task_priority`).
fn task_labels(task_type: &'static str, namespace: String) -> Vec<(&'static str, String)> {
    vec![
        ("service_name", SERVICE_NAME.to_string()),
        ("operation", task_type.to_string()),
        ("task_type", task_type.to_string()),
        ("namespace", namespace),
        ("archetype", TASK_ARCHETYPE.to_string()),
    ]
}

pub(crate) fn record_task(
    task_type: &'static str,
    namespace: String,
    started: std::time::Instant,
    ok: bool,
) {
    let mut labels = task_labels(task_type, namespace);
    metrics::histogram!(TASK_LATENCY_PROCESSING, &labels[..])
        .record(started.elapsed().as_secs_f64());
    labels.push(("task_priority", TASK_PRIORITY.to_string()));
    metrics::counter!(TASK_REQUESTS, &labels[..]).increment(1);
    if !ok {
        metrics::counter!(TASK_ERRORS, &labels[..]).increment(1);
    }
}

/// Records a task's completion: `task_latency` since `first_attempt_ms`, `task_latency_queue`
/// since `visible_ms` (milliseconds since the epoch) and the `attempts` it took.
pub(crate) fn record_task_done(
    task_type: &'static str,
    namespace: String,
    first_attempt_ms: i64,
    visible_ms: i64,
    attempts: u32,
) {
    let now = chronicle_types::time::now_millis();
    let seconds_since = |ms: i64| now.saturating_sub(ms).max(0) as f64 / 1000.0;
    let mut labels = task_labels(task_type, namespace);
    metrics::histogram!(TASK_ATTEMPT, &labels[..]).record(f64::from(attempts.max(1)));
    labels.push(("task_priority", TASK_PRIORITY.to_string()));
    metrics::histogram!(TASK_LATENCY, &labels[..]).record(seconds_since(first_attempt_ms));
    // One reader per queue (Temporal's default reader is 0).
    labels.push(("queue_reader_id", "0".to_string()));
    metrics::histogram!(TASK_LATENCY_QUEUE, &labels[..]).record(seconds_since(visible_ms));
}

/// When an outbox task became visible: the time of the command that wrote it, stamped on the
/// row at apply; a row written before rows carried it counts from `first_read_ms`.
pub(crate) fn outbox_visible_ms(task: &pb::OutboxTask, first_read_ms: i64) -> i64 {
    task.visibility_time.as_ref().map_or(first_read_ms, |t| {
        t.seconds
            .saturating_mul(1000)
            .saturating_add(i64::from(t.nanos) / 1_000_000)
    })
}

/// Temporal's persistence operation for a command.
pub(crate) fn persistence_operation(
    kind: &chronicle_proto::chronicle::history::v1::shard_command::Kind,
) -> &'static str {
    use chronicle_proto::chronicle::history::v1::shard_command::Kind::*;
    match kind {
        StartWorkflow(_) | SignalWithStart(_) | StartChildWorkflow(_) => "CreateWorkflowExecution",
        // Update-with-start may create the run.
        UpdateWorkflow(c) if c.start.is_some() => "CreateWorkflowExecution",
        UpsertNamespace(c) if c.create => "CreateNamespace",
        UpsertNamespace(_) => "UpdateNamespace",
        DeleteNamespace(_) => "DeleteNamespace",
        NexusEndpoint(c) => match c.op {
            Some(
                chronicle_proto::chronicle::history::v1::nexus_endpoint_command::Op::DeleteId(_),
            ) => "DeleteNexusEndpoint",
            _ => "CreateOrUpdateNexusEndpoint",
        },
        DeleteWorkflowExecution(_) => "DeleteWorkflowExecution",
        _ => "UpdateWorkflowExecution",
    }
}

/// The namespace a command writes for: its ID, or its name (namespace commands), or neither
/// (shard housekeeping, labelled `system` as Temporal labels shard-level operations).
pub(crate) enum CommandNamespace<'a> {
    Id(&'a str),
    Name(&'a str),
    System,
}

pub(crate) fn command_namespace(
    kind: &chronicle_proto::chronicle::history::v1::shard_command::Kind,
) -> CommandNamespace<'_> {
    use chronicle_proto::chronicle::history::v1::shard_command::Kind::*;
    let id = match kind {
        StartWorkflow(c) => &c.namespace_id,
        SignalWithStart(c) => &c.namespace_id,
        RecordWorkflowTaskStarted(c) => &c.namespace_id,
        RecordActivityTaskStarted(c) => &c.namespace_id,
        SignalWorkflow(c) => &c.namespace_id,
        TerminateWorkflow(c) => &c.namespace_id,
        RequestCancelWorkflow(c) => &c.namespace_id,
        StartChildWorkflow(c) => &c.namespace_id,
        RecordChildStartOutcome(c) => &c.namespace_id,
        ApplyParentClosePolicy(c) => &c.namespace_id,
        RecordExternalOutcome(c) => &c.namespace_id,
        StickyWorkerUnavailable(c) => &c.namespace_id,
        UpdateWorkflow(c) => &c.namespace_id,
        Schedule(c) => &c.namespace_id,
        DeleteWorkflowExecution(c) => &c.namespace_id,
        DeleteNamespace(c) => return CommandNamespace::Name(&c.name),
        RecordScheduleStartOutcome(c) => &c.namespace_id,
        RecordScheduleWorkflowClosed(c) => &c.namespace_id,
        ResetWorkflow(c) => &c.namespace_id,
        RunOperation(c) => &c.namespace_id,
        BatchJob(c) => &c.namespace_id,
        StartActivityExecution(c) => &c.namespace_id,
        CancelActivityExecution(c) => &c.namespace_id,
        TerminateActivityExecution(c) => &c.namespace_id,
        DeleteActivityExecution(c) => &c.namespace_id,
        UpdateClusterMember(_) | NexusEndpoint(_) => return CommandNamespace::System,
        CompleteWorkflowTask(c) => return token_namespace(&c.token),
        FailWorkflowTask(c) => return token_namespace(&c.token),
        RespondActivity(c) => return token_namespace(&c.token),
        RespondNexusTask(c) => return token_namespace(&c.token),
        CompleteNexusOperation(c) => match &c.target {
            Some(target) => &target.namespace_id,
            None => return CommandNamespace::System,
        },
        RecordActivityHeartbeat(c) => return token_namespace(&c.token),
        RecordChildClosed(c) => match &c.parent {
            Some(parent) => &parent.namespace_id,
            None => return CommandNamespace::System,
        },
        FireTimer(c) => match &c.task {
            Some(task) => &task.namespace_id,
            None => return CommandNamespace::System,
        },
        UpsertNamespace(c) => {
            return match c.record.as_ref().and_then(|r| r.info.as_ref()) {
                Some(info) => CommandNamespace::Name(&info.name),
                None => CommandNamespace::System,
            };
        }
        CompleteTransferTask(_) | TakeWorkerCommands(_) => return CommandNamespace::System,
    };
    CommandNamespace::Id(id)
}

fn token_namespace(token: &Option<pb::TaskToken>) -> CommandNamespace<'_> {
    match token {
        Some(token) => CommandNamespace::Id(&token.namespace_id),
        None => CommandNamespace::System,
    }
}

/// What applying a command observed, reported once the command is kept (a refused command's
/// writes are rolled back, and so are its observations).
pub(crate) enum Observation {
    Closed {
        namespace_id: String,
        workflow_type: String,
        task_queue: String,
        status: WorkflowExecutionStatus,
    },
    Transitions {
        namespace_id: String,
        count: i64,
    },
    /// A schedule skipped or dropped actions: `name` is the counter, `policy` the overlap
    /// policy's label (only for SCHEDULE_OVERLAP_SKIPPED).
    Schedule {
        namespace_id: String,
        name: &'static str,
        policy: &'static str,
        count: u64,
    },
}

/// A schedule dropped or skipped `count` actions (recorded on the leader only, as the other
/// observations of apply).
pub(crate) fn observe_schedule(
    namespace_id: &str,
    name: &'static str,
    policy: &'static str,
    count: u64,
) {
    if count > 0 {
        OBSERVED.with(|o| {
            o.borrow_mut().push(Observation::Schedule {
                namespace_id: namespace_id.to_string(),
                name,
                policy,
                count,
            })
        });
    }
}

thread_local! {
    // Apply is synchronous, one command at a time on a thread: the buffer holds the current
    // command's observations only.
    static OBSERVED: RefCell<Vec<Observation>> = const { RefCell::new(Vec::new()) };
}

/// A run closed with `status` (called where the run's state is closed).
pub(crate) fn observe_close(state: &pb::WorkflowExecutionState, status: WorkflowExecutionStatus) {
    OBSERVED.with(|o| {
        o.borrow_mut().push(Observation::Closed {
            namespace_id: state.namespace_id.clone(),
            workflow_type: state
                .workflow_type
                .as_ref()
                .map(|t| t.name.clone())
                .unwrap_or_default(),
            task_queue: state.task_queue.clone(),
            status,
        })
    });
}

/// A run's state was written.
pub(crate) fn observe_persist(state: &pb::WorkflowExecutionState) {
    OBSERVED.with(|o| {
        o.borrow_mut().push(Observation::Transitions {
            namespace_id: state.namespace_id.clone(),
            count: state.state_transition_count,
        })
    });
}

/// Takes the observations of the command applied last.
pub(crate) fn take_observations() -> Vec<Observation> {
    OBSERVED.with(|o| std::mem::take(&mut *o.borrow_mut()))
}

/// Records observations; `namespace_name` resolves a namespace ID to its name.
pub(crate) fn record(observations: Vec<Observation>, namespace_name: impl Fn(&str) -> String) {
    for observation in observations {
        match observation {
            Observation::Closed {
                namespace_id,
                workflow_type,
                task_queue,
                status,
            } => {
                let name = match status {
                    WorkflowExecutionStatus::Completed => WORKFLOW_SUCCESS,
                    WorkflowExecutionStatus::Failed => WORKFLOW_FAILED,
                    WorkflowExecutionStatus::Canceled => WORKFLOW_CANCEL,
                    WorkflowExecutionStatus::Terminated => WORKFLOW_TERMINATE,
                    WorkflowExecutionStatus::TimedOut => WORKFLOW_TIMEOUT,
                    WorkflowExecutionStatus::ContinuedAsNew => WORKFLOW_CONTINUED_AS_NEW,
                    _ => continue,
                };
                metrics::counter!(
                    name,
                    "service_name" => SERVICE_NAME,
                    "operation" => "CompletionStats",
                    "namespace" => namespace_name(&namespace_id),
                    "namespace_state" => "active",
                    "taskqueue" => task_queue,
                    "workflowType" => workflow_type,
                )
                .increment(1);
            }
            Observation::Schedule {
                namespace_id,
                name,
                policy,
                count,
            } => {
                let namespace = namespace_name(&namespace_id);
                let counter = if name == SCHEDULE_OVERLAP_SKIPPED {
                    metrics::counter!(
                        name,
                        "service_name" => SERVICE_NAME,
                        "namespace" => namespace,
                        "schedule_overlap_policy" => policy,
                    )
                } else {
                    metrics::counter!(name, "service_name" => SERVICE_NAME, "namespace" => namespace)
                };
                counter.increment(count);
            }
            Observation::Transitions {
                namespace_id,
                count,
            } => {
                metrics::histogram!(
                    STATE_TRANSITION_COUNT,
                    "service_name" => SERVICE_NAME,
                    "operation" => "WorkflowContext",
                    "namespace" => namespace_name(&namespace_id),
                    "namespace_state" => "active",
                )
                .record(count as f64);
            }
        }
    }
}
