//! Metrics of the matching role: Temporal's matching-service names and labels where one exists,
//! Chronicle's own prefixed `chronicle_`.

use std::time::Instant;

use chronicle_proto::temporal::api::enums::v1::TaskQueueKind;
use chronicle_proto::temporal::api::taskqueue::v1::TaskQueue;

/// Temporal's `service_name` of this role.
pub const SERVICE_NAME: &str = "matching";

/// Polls that returned a task.
pub const POLL_SUCCESS: &str = "poll_success";
/// Polls that returned a task handed over directly by its producer (sync match).
pub const POLL_SUCCESS_SYNC: &str = "poll_success_sync";
/// Polls that ended without a task.
pub const POLL_TIMEOUTS: &str = "poll_timeouts";

/// Time from a task's arrival to history recording it as started, for a task handed straight
/// to a waiting poll (sync match), in seconds (labels as the poll counters, operation
/// `AddWorkflowTask` / `AddActivityTask` as Temporal's matching handler records it).
pub const SYNCMATCH_LATENCY: &str = "syncmatch_latency";
/// Time from a task's queueing to history recording it as started, for a task a poll took from
/// the backlog (async match), in seconds (operation `PollWorkflowTaskQueue` /
/// `PollActivityTaskQueue`).
pub const ASYNCMATCH_LATENCY: &str = "asyncmatch_latency";

/// Tasks queued because no poller was waiting.
pub const TASKS_QUEUED: &str = "chronicle_task_queue_backlog_added";
/// Tasks refused because their queue's backlog was full (history offers them again later).
pub const TASKS_REFUSED: &str = "chronicle_task_queue_backlog_refused";
/// Workflow tasks for a sticky queue nobody polls, sent back to history for the normal queue.
pub const STICKY_WORKER_UNAVAILABLE: &str = "chronicle_sticky_worker_unavailable";

/// Tasks of a child partition taken by a poller of the root partition (forwarded).
pub const TASKS_FORWARDED: &str = "chronicle_task_queue_tasks_forwarded";
/// Polls of a child partition answered by the root partition (forwarded).
pub const POLLS_FORWARDED: &str = "chronicle_task_queue_polls_forwarded";

/// Describes the role's metrics (the exporter's `# HELP` lines).
pub fn describe() {
    use metrics::describe_counter;
    describe_counter!(POLL_SUCCESS, "Polls that returned a task.");
    describe_counter!(
        POLL_SUCCESS_SYNC,
        "Polls that returned a sync-matched task."
    );
    describe_counter!(POLL_TIMEOUTS, "Polls that ended without a task.");
    metrics::describe_histogram!(
        SYNCMATCH_LATENCY,
        metrics::Unit::Seconds,
        "Time from a sync-matched task's arrival to its start."
    );
    metrics::describe_histogram!(
        ASYNCMATCH_LATENCY,
        metrics::Unit::Seconds,
        "Time from a backlogged task's queueing to its start."
    );
    describe_counter!(TASKS_QUEUED, "Tasks queued because no poller was waiting.");
    describe_counter!(
        TASKS_REFUSED,
        "Tasks refused because the task queue's backlog was full."
    );
    describe_counter!(
        TASKS_FORWARDED,
        "Tasks of a child partition taken by a poller of the root partition."
    );
    describe_counter!(
        POLLS_FORWARDED,
        "Polls of a child partition answered with work of the root partition."
    );
    describe_counter!(
        STICKY_WORKER_UNAVAILABLE,
        "Sticky workflow tasks sent back to the normal queue."
    );
}

/// How a poll ended.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum PollOutcome {
    /// A task (or query) from the backlog, queued at `queued_at` (a task).
    Backlog { queued_at: Option<Instant> },
    /// A task handed to the waiting poll at `handed_at` (a query task: none, it is no added
    /// task).
    Sync { handed_at: Option<Instant> },
    /// No task until the poll's deadline.
    Timeout,
}

impl PollOutcome {
    /// The outcome of a poll answered with a query task: Temporal counts every query it hands
    /// out as a sync match, and times none (its match latencies time added tasks).
    pub(crate) fn for_query(self) -> Self {
        match self {
            PollOutcome::Timeout => PollOutcome::Timeout,
            _ => PollOutcome::Sync { handed_at: None },
        }
    }
}

/// Counts a poll the way Temporal's matching does (labels: namespace, taskqueue, task_type,
/// partition, operation `TaskQueueMgr`), and how long its task waited (sync or async match,
/// once history recorded the task as started). Sticky queues are reported under their normal
/// queue's name with partition `__sticky__`, as Temporal does.
pub(crate) fn record_poll(
    namespace: &str,
    task_queue: Option<&TaskQueue>,
    task_type: &'static str,
    outcome: PollOutcome,
) {
    let (name, partition) = match task_queue {
        Some(q) if q.kind == TaskQueueKind::Sticky as i32 => (
            if q.normal_name.is_empty() {
                q.name.clone()
            } else {
                q.normal_name.clone()
            },
            "__sticky__".to_string(),
        ),
        Some(q) => {
            let (root, partition) = chronicle_cluster::partition::parse_partition(&q.name);
            (root.to_string(), partition.to_string())
        }
        None => (String::new(), "0".to_string()),
    };
    let mut labels = [
        ("service_name", SERVICE_NAME.to_string()),
        ("operation", "TaskQueueMgr".to_string()),
        ("namespace", namespace.to_string()),
        ("taskqueue", name),
        ("task_type", task_type.to_string()),
        ("partition", partition),
    ];
    let is_workflow = task_type == "Workflow";
    match outcome {
        PollOutcome::Timeout => metrics::counter!(POLL_TIMEOUTS, &labels[..]).increment(1),
        PollOutcome::Backlog { queued_at } => {
            metrics::counter!(POLL_SUCCESS, &labels[..]).increment(1);
            if let Some(queued_at) = queued_at {
                labels[1].1 = if is_workflow {
                    "PollWorkflowTaskQueue"
                } else {
                    "PollActivityTaskQueue"
                }
                .to_string();
                metrics::histogram!(ASYNCMATCH_LATENCY, &labels[..])
                    .record(queued_at.elapsed().as_secs_f64());
            }
        }
        PollOutcome::Sync { handed_at } => {
            metrics::counter!(POLL_SUCCESS, &labels[..]).increment(1);
            metrics::counter!(POLL_SUCCESS_SYNC, &labels[..]).increment(1);
            if let Some(handed_at) = handed_at {
                labels[1].1 = if is_workflow {
                    "AddWorkflowTask"
                } else {
                    "AddActivityTask"
                }
                .to_string();
                metrics::histogram!(SYNCMATCH_LATENCY, &labels[..])
                    .record(handed_at.elapsed().as_secs_f64());
            }
        }
    }
}
