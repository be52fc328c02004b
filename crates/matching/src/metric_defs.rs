//! Metrics of the matching role: Temporal's matching-service names and labels where one exists,
//! Chronicle's own prefixed `chronicle_`.

use std::time::Instant;

use chronicle_proto::temporal::api::enums::v1::{TaskQueueKind, WorkerVersioningMode};
use chronicle_proto::temporal::api::taskqueue::v1::TaskQueue;
use chronicle_proto::temporal_api::deployment::v1::WorkerDeploymentOptions;

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

/// Tasks added to a partition that has been in memory for [`NO_POLLER_THRESHOLD`] without a
/// poll in that time (Temporal's `no_poller_tasks`): work nobody is there to do.
pub const NO_POLLER_TASKS: &str = "no_poller_tasks";
/// Tasks waiting in a partition's backlog, set at scrape time (a gauge per partition).
pub const APPROXIMATE_BACKLOG_COUNT: &str = "approximate_backlog_count";
/// Age of the oldest task waiting in a partition's backlog, in seconds (0 when empty).
pub const APPROXIMATE_BACKLOG_AGE_SECONDS: &str = "approximate_backlog_age_seconds";

/// Polls waiting in a partition's physical queue now (a gauge per physical queue, labels as
/// the poll counters): raised when a poll starts waiting, lowered when it ends.
pub const PENDING_POLLS: &str = "pending_polls";
/// Time a poll waited for a task, in seconds, by `poll_result` (`dispatch`, `timeout`,
/// `failed`) and `forwarded` (`true` when a child partition's poll got its task at the root).
pub const POLL_LATENCY: &str = "poll_latency";
/// `approximate_backlog_count` / `_age_seconds` of the partition's physical queue (Temporal has
/// one per worker version; Chronicle one per partition, the unversioned one).
pub const PHYSICAL_APPROXIMATE_BACKLOG_COUNT: &str = "physical_approximate_backlog_count";
pub const PHYSICAL_APPROXIMATE_BACKLOG_AGE_SECONDS: &str =
    "physical_approximate_backlog_age_seconds";

/// How long a root partition must have been in memory, and without a poll, before the tasks
/// added to it count as `no_poller_tasks` (Temporal's threshold is the same two minutes).
pub const NO_POLLER_THRESHOLD: std::time::Duration = std::time::Duration::from_secs(120);

/// Temporal's `namespace_state` of an active namespace (Chronicle has no standby clusters).
const NAMESPACE_STATE_ACTIVE: &str = "active";
/// Temporal's `worker_version` of the unversioned physical queue.
const UNVERSIONED: &str = "__unversioned__";
/// The priority key of Temporal's default subqueue, which every task without a priority is
/// counted under (`task_priority` of `approximate_backlog_count`).
const DEFAULT_PRIORITY_KEY: &str = "3";
/// `operation` of the per-partition families (Temporal's partition manager scope).
const PARTITION_MANAGER_OPERATION: &str = "TaskQueuePartitionManager";
/// `operation` of the per-physical-queue families (Temporal's physical queue manager scope).
const PHYSICAL_QUEUE_OPERATION: &str = "TaskQueueMgr";

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
    describe_counter!(
        NO_POLLER_TASKS,
        "Tasks added to a task queue with no poller in the last two minutes."
    );
    metrics::describe_gauge!(
        APPROXIMATE_BACKLOG_COUNT,
        "Tasks waiting in a task queue partition's backlog."
    );
    metrics::describe_gauge!(
        APPROXIMATE_BACKLOG_AGE_SECONDS,
        metrics::Unit::Seconds,
        "Age of the oldest task in a task queue partition's backlog."
    );
    metrics::describe_gauge!(PENDING_POLLS, "Polls waiting in a task queue partition.");
    metrics::describe_histogram!(
        POLL_LATENCY,
        metrics::Unit::Seconds,
        "Time a poll waited for a task, by result."
    );
    metrics::describe_gauge!(
        PHYSICAL_APPROXIMATE_BACKLOG_COUNT,
        "Tasks waiting in a physical task queue's backlog."
    );
    metrics::describe_gauge!(
        PHYSICAL_APPROXIMATE_BACKLOG_AGE_SECONDS,
        metrics::Unit::Seconds,
        "Age of the oldest task in a physical task queue's backlog."
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
    /// task); `forwarded`: the poll, of a child partition, was answered by the root partition.
    Sync {
        handed_at: Option<Instant>,
        forwarded: bool,
    },
    /// No task until the poll's deadline.
    Timeout,
}

impl PollOutcome {
    /// The outcome of a poll answered with a query task: Temporal counts every query it hands
    /// out as a sync match, and times none (its match latencies time added tasks).
    pub(crate) fn for_query(self) -> Self {
        match self {
            PollOutcome::Timeout => PollOutcome::Timeout,
            PollOutcome::Sync { forwarded, .. } => PollOutcome::Sync {
                handed_at: None,
                forwarded,
            },
            PollOutcome::Backlog { .. } => PollOutcome::Sync {
                handed_at: None,
                forwarded: false,
            },
        }
    }
}

/// The `worker_version`, `worker_deployment_name` and `worker_build_id` labels of a poll: those
/// of the physical queue Temporal serves it from, the version's queue for a worker that polls
/// as a versioned worker of a deployment, else the unversioned one.
pub(crate) fn worker_labels(
    deployment: Option<&WorkerDeploymentOptions>,
) -> [(&'static str, String); 3] {
    match deployment {
        Some(d) if d.worker_versioning_mode == WorkerVersioningMode::Versioned as i32 => [
            ("worker_build_id", sanitize_label(&d.build_id).into_owned()),
            (
                "worker_deployment_name",
                sanitize_label(&d.deployment_name).into_owned(),
            ),
            (
                "worker_version",
                sanitize_label(&format!("{}:{}", d.deployment_name, d.build_id)).into_owned(),
            ),
        ],
        _ => [
            ("worker_build_id", String::new()),
            ("worker_deployment_name", String::new()),
            ("worker_version", UNVERSIONED.to_string()),
        ],
    }
}

/// Label values keep ASCII letters, digits and `_`, as Temporal's reporter sanitizes them (the
/// exporter does it for every value; done here too so tests of these labels read the same).
fn sanitize_label(value: &str) -> std::borrow::Cow<'_, str> {
    if value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        std::borrow::Cow::Borrowed(value)
    } else {
        std::borrow::Cow::Owned(
            value
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '_' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect(),
        )
    }
}

/// The queue name and partition a partition is reported under: a sticky queue under its normal
/// queue's name (`normal_name`, when known) with partition `__sticky__`, as Temporal does, a
/// normal one under its root's name with the partition's number.
pub(crate) fn queue_and_partition(
    name: &str,
    sticky: bool,
    normal_name: Option<&str>,
) -> (String, String) {
    if sticky {
        (
            normal_name
                .filter(|n| !n.is_empty())
                .unwrap_or(name)
                .to_string(),
            "__sticky__".to_string(),
        )
    } else {
        let (root, partition) = chronicle_cluster::partition::parse_partition(name);
        (root.to_string(), partition.to_string())
    }
}

/// Counts a task added to a partition nobody polled lately (`no_poller_tasks`).
/// Every such task is counted under the root partition (`0`), as Temporal counts them there:
/// its child partitions hand every task they get to the root, which counts it when nobody polled
/// the queue lately. A Chronicle child partition keeps its tasks and has pollers of its own, so
/// it counts its tasks itself, by the same rule.
pub(crate) fn record_no_poller_task(namespace: &str, task_queue: &str, task_type: &'static str) {
    let (name, _) = queue_and_partition(task_queue, false, None);
    let partition = "0";
    metrics::counter!(
        NO_POLLER_TASKS,
        "service_name" => SERVICE_NAME,
        "operation" => PARTITION_MANAGER_OPERATION,
        "namespace" => namespace.to_string(),
        "namespace_state" => NAMESPACE_STATE_ACTIVE,
        "taskqueue" => name,
        "task_type" => task_type,
        "partition" => partition,
    )
    .increment(1);
}

/// One partition's backlog as the scrape finds it.
pub(crate) struct PartitionBacklog {
    pub namespace: String,
    pub taskqueue: String,
    pub partition: String,
    pub task_type: &'static str,
    pub count: usize,
    pub oldest_age_seconds: f64,
}

/// Sets `approximate_backlog_count` and `approximate_backlog_age_seconds` of one partition
/// (Chronicle has only the unversioned physical queue, and every task in the default priority).
pub(crate) fn record_backlog(backlog: &PartitionBacklog) {
    let mut labels = vec![
        ("service_name", SERVICE_NAME.to_string()),
        ("operation", PARTITION_MANAGER_OPERATION.to_string()),
        ("namespace", backlog.namespace.clone()),
        ("namespace_state", NAMESPACE_STATE_ACTIVE.to_string()),
        ("taskqueue", backlog.taskqueue.clone()),
        ("task_type", backlog.task_type.to_string()),
        ("partition", backlog.partition.clone()),
    ];
    labels.extend(worker_labels(None));
    metrics::gauge!(APPROXIMATE_BACKLOG_AGE_SECONDS, &labels[..]).set(backlog.oldest_age_seconds);
    labels.push(("task_priority", DEFAULT_PRIORITY_KEY.to_string()));
    metrics::gauge!(APPROXIMATE_BACKLOG_COUNT, &labels[..]).set(backlog.count as f64);
    // The partition's one physical queue (the unversioned one) holds the same backlog; Temporal
    // reports it under its physical queue manager's operation.
    labels[1].1 = PHYSICAL_QUEUE_OPERATION.to_string();
    metrics::gauge!(PHYSICAL_APPROXIMATE_BACKLOG_COUNT, &labels[..]).set(backlog.count as f64);
    labels.pop();
    metrics::gauge!(PHYSICAL_APPROXIMATE_BACKLOG_AGE_SECONDS, &labels[..])
        .set(backlog.oldest_age_seconds);
}

/// One wait of a poll for a task (Temporal: one call of its physical queue's `PollTask`):
/// `pending_polls` of the queue counts it while it lasts, and `poll_latency` times it. A poll
/// its worker abandoned ends as a `timeout`, as Temporal's canceled poll context does.
pub(crate) struct PollWait {
    labels: Vec<(&'static str, String)>,
    started: Instant,
    finished: bool,
}

impl PollWait {
    pub(crate) fn start(
        namespace: &str,
        task_queue: Option<&TaskQueue>,
        deployment: Option<&WorkerDeploymentOptions>,
        task_type: &'static str,
    ) -> Self {
        let labels = poll_labels(namespace, task_queue, deployment, task_type);
        metrics::gauge!(PENDING_POLLS, &labels[..]).increment(1.0);
        Self {
            labels,
            started: Instant::now(),
            finished: false,
        }
    }

    /// Ends the wait with what it found: a task or query (`Some`), nothing by the deadline
    /// (`None`), or an error.
    pub(crate) fn finish<E>(mut self, found: Result<Option<PollOutcome>, E>) {
        let (result, forwarded) = match found {
            Ok(Some(PollOutcome::Sync { forwarded, .. })) => ("dispatch", forwarded),
            Ok(Some(_)) => ("dispatch", false),
            Ok(None) => ("timeout", false),
            Err(_) => ("failed", false),
        };
        self.end(result, forwarded);
    }

    fn end(&mut self, result: &'static str, forwarded: bool) {
        self.finished = true;
        metrics::gauge!(PENDING_POLLS, &self.labels[..]).decrement(1.0);
        let mut labels = self.labels.clone();
        labels.push(("forwarded", forwarded.to_string()));
        // Temporal's priority key of a task without a priority is exported empty.
        labels.push(("task_priority", String::new()));
        labels.push(("poll_result", result.to_string()));
        metrics::histogram!(POLL_LATENCY, &labels[..]).record(self.started.elapsed().as_secs_f64());
    }
}

impl Drop for PollWait {
    fn drop(&mut self) {
        if !self.finished {
            self.end("timeout", false);
        }
    }
}

/// The labels of a poll's partition: service, operation `TaskQueueMgr`, namespace, queue name,
/// task type and partition (a sticky queue under its normal queue's name, `__sticky__`).
fn partition_labels(
    namespace: &str,
    task_queue: Option<&TaskQueue>,
    task_type: &'static str,
) -> Vec<(&'static str, String)> {
    let (name, partition) = match task_queue {
        Some(q) => queue_and_partition(
            &q.name,
            q.kind == TaskQueueKind::Sticky as i32,
            Some(&q.normal_name),
        ),
        None => (String::new(), "0".to_string()),
    };
    vec![
        ("service_name", SERVICE_NAME.to_string()),
        ("operation", PHYSICAL_QUEUE_OPERATION.to_string()),
        ("namespace", namespace.to_string()),
        ("taskqueue", name),
        ("task_type", task_type.to_string()),
        ("partition", partition),
    ]
}

/// The labels of the physical queue serving a poll: its partition's, the namespace state and
/// the worker version labels.
fn poll_labels(
    namespace: &str,
    task_queue: Option<&TaskQueue>,
    deployment: Option<&WorkerDeploymentOptions>,
    task_type: &'static str,
) -> Vec<(&'static str, String)> {
    let mut labels = partition_labels(namespace, task_queue, task_type);
    labels.push(("namespace_state", NAMESPACE_STATE_ACTIVE.to_string()));
    labels.extend(worker_labels(deployment));
    labels
}

/// Counts a poll the way Temporal's matching does (labels: namespace, namespace_state,
/// taskqueue, task_type, partition, the worker version labels, operation `TaskQueueMgr`), and
/// how long its task waited (sync or async match, once history recorded the task as started;
/// without the namespace state and worker labels, as Temporal records those).
/// Sticky queues are reported under their normal queue's name with partition `__sticky__`, as
/// Temporal does.
pub(crate) fn record_poll(
    namespace: &str,
    task_queue: Option<&TaskQueue>,
    deployment: Option<&WorkerDeploymentOptions>,
    task_type: &'static str,
    outcome: PollOutcome,
) {
    // The match latencies carry Temporal's per-partition labels only (its matching engine
    // records them outside the physical queue's scope); the poll counters add the namespace
    // state and the worker version labels of the queue that served the poll.
    let mut labels = partition_labels(namespace, task_queue, task_type);
    let poll_labels = poll_labels(namespace, task_queue, deployment, task_type);
    let is_workflow = task_type == "Workflow";
    match outcome {
        PollOutcome::Timeout => metrics::counter!(POLL_TIMEOUTS, &poll_labels[..]).increment(1),
        PollOutcome::Backlog { queued_at } => {
            metrics::counter!(POLL_SUCCESS, &poll_labels[..]).increment(1);
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
        PollOutcome::Sync { handed_at, .. } => {
            metrics::counter!(POLL_SUCCESS, &poll_labels[..]).increment(1);
            metrics::counter!(POLL_SUCCESS_SYNC, &poll_labels[..]).increment(1);
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
