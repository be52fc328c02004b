//! Temporal's per-partition matching families (`approximate_backlog_count`,
//! `approximate_backlog_age_seconds`, `no_poller_tasks`, their physical-queue counterparts,
//! `pending_polls`, `poll_latency`), the worker version labels of the poll
//! families, and the queue latency of outbox tasks counted from their commit.

use std::net::SocketAddr;
use std::time::Duration;

use chronicle_proto::temporal::api::command::v1::{Command, command};
use chronicle_proto::temporal::api::enums::v1::{CommandType, WorkerVersioningMode};
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use chronicle_proto::temporal_api::deployment::v1::WorkerDeploymentOptions;
use chronicle_server::RunningServer;

use crate::common::{config_for, poll, queue, raw_client, start_request, unique};
use crate::metrics::{POLL_LABELS, Scrape, get, parse, wait_for_counter, wait_ready};

/// Labels of the backlog gauges (the count adds `task_priority`).
const BACKLOG_LABELS: &[&str] = &[
    "service_name",
    "operation",
    "namespace",
    "namespace_state",
    "taskqueue",
    "task_type",
    "partition",
    "worker_build_id",
    "worker_deployment_name",
    "worker_version",
];

async fn scrape(metrics: SocketAddr) -> Scrape {
    let (status, text) = get(metrics, "/metrics").await;
    assert_eq!(status, 200);
    parse(&text)
}

/// (count, age) of the workflow backlog of `queue_label`'s root partition.
fn backlog(scrape: &Scrape, queue_label: &str) -> (f64, f64) {
    let with = [
        ("service_name", "matching"),
        ("operation", "TaskQueuePartitionManager"),
        ("namespace", "default"),
        ("namespace_state", "active"),
        ("taskqueue", queue_label),
        ("task_type", "Workflow"),
        ("partition", "0"),
        ("worker_build_id", ""),
        ("worker_deployment_name", ""),
        ("worker_version", "__unversioned__"),
    ];
    let mut count_labels = BACKLOG_LABELS.to_vec();
    count_labels.push("task_priority");
    let mut count_with = with.to_vec();
    count_with.push(("task_priority", "3"));
    let count = scrape
        .one("approximate_backlog_count", &count_with, &count_labels)
        .value;
    let age = scrape
        .one("approximate_backlog_age_seconds", &with, BACKLOG_LABELS)
        .value;
    (count, age)
}

/// (count, age) of the same backlog as its physical queue reports it (Chronicle has one per
/// partition, so it equals the partition's).
fn physical_backlog(scrape: &Scrape, queue_label: &str) -> (f64, f64) {
    let with = [
        ("service_name", "matching"),
        ("operation", "TaskQueueMgr"),
        ("namespace", "default"),
        ("namespace_state", "active"),
        ("taskqueue", queue_label),
        ("task_type", "Workflow"),
        ("partition", "0"),
        ("worker_build_id", ""),
        ("worker_deployment_name", ""),
        ("worker_version", "__unversioned__"),
    ];
    let mut count_labels = BACKLOG_LABELS.to_vec();
    count_labels.push("task_priority");
    let mut count_with = with.to_vec();
    count_with.push(("task_priority", "3"));
    let count = scrape
        .one(
            "physical_approximate_backlog_count",
            &count_with,
            &count_labels,
        )
        .value;
    let age = scrape
        .one(
            "physical_approximate_backlog_age_seconds",
            &with,
            BACKLOG_LABELS,
        )
        .value;
    (count, age)
}

/// Polls of `queue_label`'s root workflow partition waiting now (`pending_polls`).
fn pending_polls(scrape: &Scrape, queue_label: &str) -> f64 {
    scrape
        .one(
            "pending_polls",
            &[
                ("operation", "TaskQueueMgr"),
                ("taskqueue", queue_label),
                ("task_type", "Workflow"),
                ("partition", "0"),
                ("worker_version", "__unversioned__"),
            ],
            POLL_LABELS,
        )
        .value
}

/// Labels of `poll_latency`: the poll counters' and `forwarded`, `task_priority`, `poll_result`.
fn poll_latency_labels() -> Vec<&'static str> {
    let mut labels = POLL_LABELS.to_vec();
    labels.extend(["forwarded", "task_priority", "poll_result"]);
    labels
}

fn complete_request(task_token: Vec<u8>) -> ws::RespondWorkflowTaskCompletedRequest {
    ws::RespondWorkflowTaskCompletedRequest {
        namespace: "default".into(),
        task_token,
        commands: vec![Command {
            command_type: CommandType::CompleteWorkflowExecution as i32,
            attributes: Some(
                command::Attributes::CompleteWorkflowExecutionCommandAttributes(Default::default()),
            ),
            ..Default::default()
        }],
        identity: "metrics-test".into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_gauges_and_no_poller_tasks_per_partition() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = config_for(dir.path());
    config.max_poll_wait = Duration::from_secs(1);
    // Temporal waits two minutes; a shorter threshold keeps the test short.
    config.admission.matching_limits.no_poller_threshold = Duration::from_secs(1);
    let server = RunningServer::start_with_metrics(config)
        .await
        .expect("server starts");
    let metrics = server.metrics_addr.expect("metrics port");
    wait_ready(metrics).await;
    let mut raw = raw_client(&server.url()).await;
    let task_queue = unique("backlog-queue");
    let queue_label = task_queue.replace('-', "_");

    // The first task loads the partition (too recently loaded to count); the second arrives
    // after the threshold with still no poll: one no-poller task.
    raw.start_workflow_execution(start_request(&unique("backlog"), "Backlog", &task_queue))
        .await
        .expect("start");
    wait_for_counter(metrics, "chronicle_task_queue_backlog_added", 1.0).await;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    raw.start_workflow_execution(start_request(&unique("backlog"), "Backlog", &task_queue))
        .await
        .expect("start");
    wait_for_counter(metrics, "chronicle_task_queue_backlog_added", 2.0).await;

    let scraped = scrape(metrics).await;
    scraped.assert_type("approximate_backlog_count", "gauge");
    scraped.assert_type("approximate_backlog_age_seconds", "gauge");
    let (count, age) = backlog(&scraped, &queue_label);
    assert_eq!(count, 2.0, "two tasks wait");
    assert!(
        (1.2..60.0).contains(&age),
        "the oldest waited ~1.3 s: {age}"
    );
    scraped.assert_type("physical_approximate_backlog_count", "gauge");
    scraped.assert_type("physical_approximate_backlog_age_seconds", "gauge");
    assert_eq!(
        physical_backlog(&scraped, &queue_label),
        (count, age),
        "the partition's one physical queue"
    );
    scraped.assert_type("no_poller_tasks", "counter");
    let no_poller = [
        ("service_name", "matching"),
        ("operation", "TaskQueuePartitionManager"),
        ("namespace", "default"),
        ("namespace_state", "active"),
        ("taskqueue", queue_label.as_str()),
        ("task_type", "Workflow"),
        ("partition", "0"),
    ];
    let no_poller_labels: Vec<&str> = no_poller.iter().map(|(k, _)| *k).collect();
    assert_eq!(
        scraped
            .one("no_poller_tasks", &no_poller, &no_poller_labels)
            .value,
        1.0
    );

    // A worker takes both: the backlog is empty; a task added while it polls is no no-poller
    // task.
    for _ in 0..2 {
        let task = raw
            .poll_workflow_task_queue(poll(&task_queue))
            .await
            .expect("poll")
            .into_inner();
        assert!(!task.task_token.is_empty(), "a backlogged task");
        raw.respond_workflow_task_completed(complete_request(task.task_token))
            .await
            .expect("complete");
    }
    let waiting_poll = {
        let (mut raw, task_queue) = (raw.clone(), task_queue.clone());
        tokio::spawn(async move { raw.poll_workflow_task_queue(poll(&task_queue)).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let scraped = scrape(metrics).await;
    scraped.assert_type("pending_polls", "gauge");
    assert_eq!(pending_polls(&scraped, &queue_label), 1.0, "one poll waits");
    raw.start_workflow_execution(start_request(&unique("backlog"), "Backlog", &task_queue))
        .await
        .expect("start");
    let task = waiting_poll
        .await
        .expect("poll task")
        .expect("poll")
        .into_inner();
    assert!(!task.task_token.is_empty(), "the third task");
    let scraped = scrape(metrics).await;
    assert_eq!(backlog(&scraped, &queue_label), (0.0, 0.0), "drained");
    assert_eq!(
        physical_backlog(&scraped, &queue_label),
        (0.0, 0.0),
        "drained"
    );
    assert_eq!(pending_polls(&scraped, &queue_label), 0.0, "no poll waits");
    // Three polls, each got a task: two from the backlog, one handed over while it waited.
    let dispatched = [
        ("operation", "TaskQueueMgr"),
        ("taskqueue", queue_label.as_str()),
        ("task_type", "Workflow"),
        ("partition", "0"),
        ("forwarded", "false"),
        ("task_priority", ""),
        ("poll_result", "dispatch"),
    ];
    scraped.assert_histogram("poll_latency", &dispatched, "0.001", "1000");
    assert_eq!(
        scraped
            .one("poll_latency_count", &dispatched, &poll_latency_labels())
            .value,
        3.0
    );
    let waited = scraped
        .one("poll_latency_sum", &dispatched, &poll_latency_labels())
        .value;
    assert!(waited >= 0.2, "the third poll waited 200 ms: {waited}");
    assert_eq!(
        scraped
            .one("no_poller_tasks", &no_poller, &no_poller_labels)
            .value,
        1.0,
        "polled within the threshold"
    );

    // A versioned worker's poll counts under its deployment version (`:` exported as `_`).
    let empty = raw
        .poll_activity_task_queue(ws::PollActivityTaskQueueRequest {
            namespace: "default".into(),
            task_queue: queue(&task_queue),
            identity: "metrics-versioned".into(),
            deployment_options: Some(WorkerDeploymentOptions {
                deployment_name: "orders".into(),
                build_id: "b1".into(),
                worker_versioning_mode: WorkerVersioningMode::Versioned as i32,
            }),
            ..Default::default()
        })
        .await
        .expect("poll")
        .into_inner();
    assert!(empty.task_token.is_empty(), "no activity task");
    let scraped = scrape(metrics).await;
    scraped.one(
        "poll_timeouts",
        &[
            ("namespace_state", "active"),
            ("taskqueue", queue_label.as_str()),
            ("task_type", "Activity"),
            ("worker_build_id", "b1"),
            ("worker_deployment_name", "orders"),
            ("worker_version", "orders_b1"),
        ],
        POLL_LABELS,
    );
    // Its wait ended at the poll deadline: a timeout of the version's queue.
    let timed_out = scraped.one(
        "poll_latency_count",
        &[
            ("taskqueue", queue_label.as_str()),
            ("task_type", "Activity"),
            ("worker_version", "orders_b1"),
            ("poll_result", "timeout"),
            ("forwarded", "false"),
        ],
        &poll_latency_labels(),
    );
    assert_eq!(timed_out.value, 1.0);
    server.stop().await.expect("stop");
}

/// Sum of `task_latency_queue` (or `task_latency`) of workflow-task dispatches.
fn dispatch_latency_sum(scrape: &Scrape, family: &str) -> f64 {
    scrape
        .find(
            &format!("{family}_sum"),
            &[
                ("operation", "TransferActiveTaskWorkflowTask"),
                ("namespace", "default"),
            ],
        )
        .iter()
        .map(|s| s.value)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_queue_latency_counts_from_the_tasks_commit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = RunningServer::start_with_metrics(config_for(dir.path()))
        .await
        .expect("server starts");
    wait_ready(server.metrics_addr.expect("metrics port")).await;
    let mut raw = raw_client(&server.url()).await;
    let task_queue = unique("latency-queue");
    raw.start_workflow_execution(start_request(&unique("latency"), "Latency", &task_queue))
        .await
        .expect("start");
    // The task is handed to matching (and measured) at once; matching forgets it when the
    // node stops.
    let metrics = server.metrics_addr.expect("metrics port");
    wait_for_counter(metrics, "chronicle_transfer_task_dispatched", 1.0).await;
    server.stop().await.expect("stop");
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // The new leader hands it over again: its queue latency counts from the row's commit,
    // before the downtime, not from when this leader read it.
    let server = RunningServer::start_with_metrics(config_for(dir.path()))
        .await
        .expect("server restarts");
    let metrics = server.metrics_addr.expect("metrics port");
    wait_ready(metrics).await;
    wait_for_counter(metrics, "chronicle_transfer_task_dispatched", 2.0).await;
    let scraped = scrape(metrics).await;
    let queue_latency = dispatch_latency_sum(&scraped, "task_latency_queue");
    let latency = dispatch_latency_sum(&scraped, "task_latency");
    assert!(
        queue_latency >= 1.5,
        "from the commit, across the downtime: {queue_latency}"
    );
    assert!(
        latency < 1.5,
        "task_latency counts this leader's attempts only: {latency}"
    );
    // Not started yet: the oldest outbox row's age counts from its commit too.
    let age = scraped
        .one("chronicle_outbox_oldest_task_age_seconds", &[], &[])
        .value;
    assert!(
        age >= 1.5,
        "the waiting task's age spans the downtime: {age}"
    );
    server.stop().await.expect("stop");
}
