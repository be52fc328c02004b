//! The metrics port: health probes, and Temporal's metric names, types and labels in the
//! Prometheus exposition after a workflow ran to completion.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use chronicle_proto::temporal::api::command::v1::{Command, command};
use chronicle_proto::temporal::api::enums::v1::CommandType;
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use chronicle_server::RunningServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

use crate::common::{config_for, execution, poll, queue, raw_client, start_request, unique};

/// A GET over a fresh HTTP/1.1 connection: (status, body).
pub(crate) async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .expect("write");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read");
    let text = String::from_utf8(raw).expect("utf-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP response");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    (status, body.to_string())
}

/// Waits until `/health/ready` answers 200; until then it must answer 503.
pub(crate) async fn wait_ready(metrics: SocketAddr) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = get(metrics, "/health/ready").await;
        if status == 200 {
            assert!(body.contains("\"ready\""), "{body}");
            return;
        }
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("\"reason\""), "{body}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "never ready: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One sample line of the exposition.
#[derive(Debug)]
pub(crate) struct Sample {
    pub(crate) name: String,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) value: f64,
}

pub(crate) struct Scrape {
    types: BTreeMap<String, String>,
    pub(crate) samples: Vec<Sample>,
}

pub(crate) fn parse(text: &str) -> Scrape {
    let mut types = BTreeMap::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE line");
            types.insert(name.to_string(), kind.to_string());
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("sample line");
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect("closing brace");
                let labels = body
                    .split("\",")
                    .filter(|kv| !kv.is_empty())
                    .map(|kv| {
                        let (k, v) = kv.split_once("=\"").expect("label");
                        (k.to_string(), v.trim_end_matches('"').to_string())
                    })
                    .collect();
                (name.to_string(), labels)
            }
            None => (series.to_string(), BTreeMap::new()),
        };
        samples.push(Sample {
            name,
            labels,
            value: value.parse().expect("sample value"),
        });
    }
    Scrape { types, samples }
}

impl Scrape {
    /// Samples of `name` whose labels include every pair of `with`.
    pub(crate) fn find(&self, name: &str, with: &[(&str, &str)]) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| {
                s.name == name
                    && with
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect()
    }

    /// The one sample of `name` with those labels; asserts its exact label names.
    pub(crate) fn one(&self, name: &str, with: &[(&str, &str)], label_names: &[&str]) -> &Sample {
        let found = self.find(name, with);
        assert_eq!(
            found.len(),
            1,
            "one {name} series with {with:?}, found {found:?}"
        );
        let names: BTreeSet<&str> = found[0].labels.keys().map(String::as_str).collect();
        let expected: BTreeSet<&str> = label_names.iter().copied().collect();
        assert_eq!(names, expected, "labels of {name}");
        found[0]
    }

    pub(crate) fn assert_type(&self, name: &str, kind: &str) {
        assert_eq!(
            self.types.get(name).map(String::as_str),
            Some(kind),
            "# TYPE of {name}"
        );
    }

    /// A histogram with Temporal's bucket boundaries (`first` to `last`, then `+Inf`) for the
    /// series with `with`, and `_sum` / `_count`.
    pub(crate) fn assert_histogram(
        &self,
        name: &str,
        with: &[(&str, &str)],
        first: &str,
        last: &str,
    ) {
        self.assert_type(name, "histogram");
        let buckets = self.find(&format!("{name}_bucket"), with);
        let bounds: Vec<&str> = buckets
            .iter()
            .filter_map(|s| s.labels.get("le").map(String::as_str))
            .collect();
        assert!(bounds.contains(&first), "{name} buckets {bounds:?}");
        assert!(bounds.contains(&last), "{name} buckets {bounds:?}");
        assert!(bounds.contains(&"+Inf"), "{name} buckets {bounds:?}");
        let count = self.find(&format!("{name}_count"), with);
        assert!(!count.is_empty(), "{name}_count with {with:?}");
        assert!(count.iter().all(|c| c.value >= 1.0));
        assert!(!self.find(&format!("{name}_sum"), with).is_empty());
    }
}

/// Temporal's labels of service and persistence requests.
const REQUEST_LABELS: &[&str] = &["service_name", "operation", "namespace"];
const CLOSE_LABELS: &[&str] = &[
    "service_name",
    "operation",
    "namespace",
    "namespace_state",
    "taskqueue",
    "workflowType",
];
/// Labels of the poll counters (Temporal's; the worker version ones are those of the physical
/// queue the poll was served from).
pub(crate) const POLL_LABELS: &[&str] = &[
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
/// Labels of the match latencies (Temporal records them without the namespace state and the
/// worker version labels).
const MATCH_LATENCY_LABELS: &[&str] = &[
    "service_name",
    "operation",
    "namespace",
    "taskqueue",
    "task_type",
    "partition",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_port_serves_health_and_temporal_metrics() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = config_for(dir.path());
    // Long enough for a poll to wait through a start (the sync match below).
    config.max_poll_wait = Duration::from_secs(3);
    let server = RunningServer::start_with_metrics(config)
        .await
        .expect("server starts");
    let metrics = server.metrics_addr.expect("metrics port");

    // Health: live at once; ready once every shard group leads and caught up.
    let (status, body) = get(metrics, "/health/live").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"live\""), "{body}");
    wait_ready(metrics).await;
    assert_eq!(get(metrics, "/nowhere").await.0, 404);

    // A workflow run to completion through raw gRPC, a duplicate start (a client error), a
    // terminated run and an activity poll that times out.
    let mut raw = raw_client(&server.url()).await;
    let task_queue = unique("metrics-queue");
    let workflow_id = unique("metrics-wf");
    let started = raw
        .start_workflow_execution(start_request(&workflow_id, "MetricsWorkflow", &task_queue))
        .await
        .expect("start")
        .into_inner();
    let err = raw
        .start_workflow_execution(start_request(&workflow_id, "MetricsWorkflow", &task_queue))
        .await
        .expect_err("a running workflow's ID is taken");
    assert_eq!(err.code(), Code::AlreadyExists);
    // No poller yet: the task waits in matching's backlog (an async match). Polled once matching
    // queued it, and at least half a second later.
    tokio::time::sleep(Duration::from_millis(500)).await;
    wait_for_counter(metrics, "chronicle_task_queue_backlog_added", 1.0).await;
    let task = raw
        .poll_workflow_task_queue(poll(&task_queue))
        .await
        .expect("poll")
        .into_inner();
    assert!(!task.task_token.is_empty(), "a workflow task");
    let complete = Command {
        command_type: CommandType::CompleteWorkflowExecution as i32,
        attributes: Some(
            command::Attributes::CompleteWorkflowExecutionCommandAttributes(Default::default()),
        ),
        ..Default::default()
    };
    raw.respond_workflow_task_completed(ws::RespondWorkflowTaskCompletedRequest {
        namespace: "default".into(),
        task_token: task.task_token,
        commands: vec![complete],
        identity: "metrics-test".into(),
        ..Default::default()
    })
    .await
    .expect("complete");
    let history = raw
        .get_workflow_execution_history(ws::GetWorkflowExecutionHistoryRequest {
            namespace: "default".into(),
            execution: execution(&workflow_id, &started.run_id),
            wait_new_event: true,
            history_event_filter_type: 2, // the close event
            ..Default::default()
        })
        .await
        .expect("history")
        .into_inner();
    assert_eq!(history.history.map(|h| h.events.len()), Some(1));

    // A run that continues as new, its task handed to a poll already waiting (a sync match).
    let continued_id = unique("metrics-continued");
    let waiting_poll = {
        let mut raw = raw.clone();
        let mut request = poll(&task_queue);
        request.identity = "metrics-sync-poller".into();
        tokio::spawn(async move { raw.poll_workflow_task_queue(request).await })
    };
    wait_for_waiting_poller(&mut raw, &task_queue, "metrics-sync-poller").await;
    raw.start_workflow_execution(start_request(&continued_id, "MetricsWorkflow", &task_queue))
        .await
        .expect("start");
    let task = waiting_poll
        .await
        .expect("poll task")
        .expect("poll")
        .into_inner();
    assert_eq!(
        task.workflow_execution.map(|e| e.workflow_id),
        Some(continued_id.clone())
    );
    let continue_as_new = Command {
        command_type: CommandType::ContinueAsNewWorkflowExecution as i32,
        attributes: Some(
            command::Attributes::ContinueAsNewWorkflowExecutionCommandAttributes(Default::default()),
        ),
        ..Default::default()
    };
    raw.respond_workflow_task_completed(ws::RespondWorkflowTaskCompletedRequest {
        namespace: "default".into(),
        task_token: task.task_token,
        commands: vec![continue_as_new],
        identity: "metrics-test".into(),
        ..Default::default()
    })
    .await
    .expect("continue as new");

    // A run that times out.
    let timed_out_id = unique("metrics-timed-out");
    let mut request = start_request(&timed_out_id, "MetricsWorkflow", &task_queue);
    request.workflow_run_timeout = Some(chronicle_proto::wkt::Duration {
        seconds: 1,
        nanos: 0,
    });
    let timed_out = raw
        .start_workflow_execution(request)
        .await
        .expect("start")
        .into_inner();
    let history = raw
        .get_workflow_execution_history(ws::GetWorkflowExecutionHistoryRequest {
            namespace: "default".into(),
            execution: execution(&timed_out_id, &timed_out.run_id),
            wait_new_event: true,
            history_event_filter_type: 2, // the close event
            ..Default::default()
        })
        .await
        .expect("history")
        .into_inner();
    assert_eq!(history.history.map(|h| h.events.len()), Some(1));

    let terminated_id = unique("metrics-terminated");
    raw.start_workflow_execution(start_request(
        &terminated_id,
        "MetricsWorkflow",
        &task_queue,
    ))
    .await
    .expect("start");
    raw.terminate_workflow_execution(ws::TerminateWorkflowExecutionRequest {
        namespace: "default".into(),
        workflow_execution: execution(&terminated_id, ""),
        reason: "test".into(),
        ..Default::default()
    })
    .await
    .expect("terminate");

    let empty = raw
        .poll_activity_task_queue(ws::PollActivityTaskQueueRequest {
            namespace: "default".into(),
            task_queue: queue(&task_queue),
            identity: "metrics-test".into(),
            ..Default::default()
        })
        .await
        .expect("poll")
        .into_inner();
    assert!(empty.task_token.is_empty(), "no activity task");

    // Label values keep letters, digits and `_` only, as Temporal exports them.
    let queue_label = task_queue.replace('-', "_");
    let (status, text) = get(metrics, "/metrics").await;
    assert_eq!(status, 200);
    let scrape = parse(&text);

    // Temporal's conventions: counters without `_total`, no summaries.
    for (name, kind) in &scrape.types {
        assert_ne!(
            kind, "summary",
            "{name} is a summary: its buckets are not configured"
        );
        assert!(!name.ends_with("_total"), "{name}");
    }

    // Frontend, per operation and namespace.
    scrape.assert_type("service_requests", "counter");
    let start = [
        ("service_name", "frontend"),
        ("operation", "StartWorkflowExecution"),
        ("namespace", "default"),
    ];
    assert!(scrape.one("service_requests", &start, REQUEST_LABELS).value >= 3.0);
    scrape.assert_histogram("service_latency", &start, "0.001", "1000");
    for operation in [
        "PollWorkflowTaskQueue",
        "RespondWorkflowTaskCompleted",
        "TerminateWorkflowExecution",
        "PollActivityTaskQueue",
        "PollWorkflowExecutionHistory",
    ] {
        scrape.one(
            "service_requests",
            &[("operation", operation), ("namespace", "default")],
            REQUEST_LABELS,
        );
    }
    // Requests between roles, under the serving role's name.
    for (service, operation) in [
        ("history", "RecordWorkflowTaskStarted"),
        ("matching", "AddWorkflowTask"),
    ] {
        let labels = [
            ("service_name", service),
            ("operation", operation),
            ("namespace", "default"),
        ];
        scrape.one("service_requests", &labels, REQUEST_LABELS);
        scrape.assert_histogram("service_latency", &labels, "0.001", "1000");
    }
    scrape.assert_type("service_error_with_type", "counter");
    let already_started = scrape.one(
        "service_error_with_type",
        &[
            ("operation", "StartWorkflowExecution"),
            ("error_type", "serviceerror_WorkflowExecutionAlreadyStarted"),
        ],
        &["service_name", "operation", "namespace", "error_type"],
    );
    assert!(already_started.value >= 1.0);
    // A client's error is not a service error.
    assert!(
        scrape
            .find("service_errors", &[("operation", "StartWorkflowExecution")])
            .is_empty()
    );

    // History: closes, schedule-to-start, state transitions, persistence.
    scrape.assert_type("workflow_success", "counter");
    let by_queue = [
        ("namespace", "default"),
        ("taskqueue", queue_label.as_str()),
        ("workflowType", "MetricsWorkflow"),
        ("operation", "CompletionStats"),
        ("service_name", "history"),
    ];
    assert_eq!(
        scrape
            .one("workflow_success", &by_queue, CLOSE_LABELS)
            .value,
        1.0
    );
    for family in ["workflow_continued_as_new", "workflow_timeout"] {
        scrape.assert_type(family, "counter");
        assert_eq!(
            scrape.one(family, &by_queue, CLOSE_LABELS).value,
            1.0,
            "{family}"
        );
    }
    scrape.assert_type("workflow_terminate", "counter");
    assert_eq!(
        scrape
            .one("workflow_terminate", &by_queue, CLOSE_LABELS)
            .value,
        1.0
    );
    scrape.assert_histogram(
        "task_schedule_to_start_latency",
        &[
            ("service_name", "history"),
            ("operation", "RecordWorkflowTaskStarted"),
            ("namespace", "default"),
            ("task_type", "Workflow"),
            ("taskqueue", queue_label.as_str()),
            ("partition", "__normal__"),
        ],
        "0.001",
        "1000",
    );
    scrape.assert_histogram(
        "state_transition_count",
        &[
            ("service_name", "history"),
            ("operation", "WorkflowContext"),
            ("namespace", "default"),
        ],
        "1",
        "100000",
    );
    scrape.assert_type("persistence_requests", "counter");
    let create = [
        ("service_name", "history"),
        ("operation", "CreateWorkflowExecution"),
        ("namespace", "default"),
    ];
    assert!(
        scrape
            .one("persistence_requests", &create, REQUEST_LABELS)
            .value
            >= 2.0
    );
    scrape.one(
        "persistence_requests",
        &[
            ("operation", "UpdateWorkflowExecution"),
            ("namespace", "default"),
        ],
        REQUEST_LABELS,
    );
    scrape.assert_histogram("persistence_latency", &create, "0.001", "1000");

    // Matching: polls per task queue.
    let workflow_polls = [
        ("service_name", "matching"),
        ("operation", "TaskQueueMgr"),
        ("namespace", "default"),
        ("namespace_state", "active"),
        ("taskqueue", queue_label.as_str()),
        ("task_type", "Workflow"),
        ("partition", "0"),
        ("worker_build_id", ""),
        ("worker_deployment_name", ""),
        ("worker_version", "__unversioned__"),
    ];
    scrape.assert_type("poll_success", "counter");
    assert_eq!(
        scrape
            .one("poll_success", &workflow_polls, POLL_LABELS)
            .value,
        2.0
    );
    scrape.assert_type("poll_timeouts", "counter");
    assert_eq!(
        scrape
            .one(
                "poll_timeouts",
                &[
                    ("taskqueue", queue_label.as_str()),
                    ("task_type", "Activity"),
                ],
                POLL_LABELS,
            )
            .value,
        1.0
    );
    // One task was handed to the waiting poll, the other taken from the backlog.
    scrape.assert_type("poll_success_sync", "counter");
    assert_eq!(
        scrape
            .one("poll_success_sync", &workflow_polls, POLL_LABELS)
            .value,
        1.0
    );
    for (family, operation) in [
        ("syncmatch_latency", "AddWorkflowTask"),
        ("asyncmatch_latency", "PollWorkflowTaskQueue"),
    ] {
        let labels = [
            ("service_name", "matching"),
            ("operation", operation),
            ("namespace", "default"),
            ("taskqueue", queue_label.as_str()),
            ("task_type", "Workflow"),
            ("partition", "0"),
        ];
        scrape.assert_histogram(family, &labels, "0.001", "1000");
        let count = scrape.one(&format!("{family}_count"), &labels, MATCH_LATENCY_LABELS);
        assert_eq!(count.value, 1.0, "{family}");
    }
    // The backlogged task waited for its poll at least the half second before it.
    let waited = scrape.one(
        "asyncmatch_latency_sum",
        &[
            ("operation", "PollWorkflowTaskQueue"),
            ("taskqueue", queue_label.as_str()),
        ],
        MATCH_LATENCY_LABELS,
    );
    assert!(
        waited.value >= 0.4,
        "asyncmatch_latency_sum {}",
        waited.value
    );

    // Timer and transfer tasks, under Temporal's task types and labels.
    scrape.assert_type("task_requests", "counter");
    const TASK_LABELS: &[&str] = &[
        "service_name",
        "operation",
        "task_type",
        "namespace",
        "archetype",
        "task_priority",
    ];
    for task_type in [
        "TransferActiveTaskWorkflowTask",
        "TimerActiveTaskWorkflowRunTimeout",
    ] {
        let labels = [
            ("service_name", "history"),
            ("operation", task_type),
            ("task_type", task_type),
            ("namespace", "default"),
            ("archetype", "workflow"),
        ];
        assert!(scrape.one("task_requests", &labels, TASK_LABELS).value >= 1.0);
        scrape.assert_histogram("task_latency_processing", &labels, "0.001", "1000");
        scrape.one("task_latency_processing_count", &labels, &TASK_LABELS[..5]);
        scrape.assert_histogram("task_latency", &labels, "0.001", "1000");
        scrape.one("task_latency_count", &labels, TASK_LABELS);
        scrape.assert_histogram("task_latency_queue", &labels, "0.001", "1000");
        let mut queue_labels = TASK_LABELS.to_vec();
        queue_labels.push("queue_reader_id");
        scrape.one("task_latency_queue_count", &labels, &queue_labels);
        // Attempts per completed task: one each here, in dimensionless buckets.
        scrape.assert_histogram("task_attempt", &labels, "1", "100000");
        let attempts = scrape.one("task_attempt_count", &labels, &TASK_LABELS[..5]);
        let attempts_sum = scrape.one("task_attempt_sum", &labels, &TASK_LABELS[..5]);
        assert_eq!(
            attempts_sum.value, attempts.value,
            "{task_type} took one attempt each"
        );
    }

    // Calls between roles, as Temporal's internal clients count them.
    crate::metrics_roles::assert_client_families(&scrape);
    crate::metrics_roles::assert_shard_controller_families(&scrape);
    crate::metrics_roles::assert_cache_families(&scrape);

    // Process and shard ownership.
    scrape.assert_type("restarts", "counter");
    for role in ["frontend", "history", "matching"] {
        assert_eq!(
            scrape
                .one("restarts", &[("service_name", role)], &["service_name"])
                .value,
            1.0
        );
    }
    scrape.assert_type("numshards_gauge", "gauge");
    assert_eq!(
        scrape
            .one(
                "numshards_gauge",
                &[
                    ("service_name", "history"),
                    ("operation", "ShardController")
                ],
                &["service_name", "operation"],
            )
            .value,
        4.0
    );
    // Temporal's shard controller counters: each of the 4 shards was taken up once, none let go.
    scrape.assert_type("sharditem_created_count", "counter");
    assert_eq!(
        scrape
            .one(
                "sharditem_created_count",
                &[
                    ("service_name", "history"),
                    ("operation", "ShardController")
                ],
                &["service_name", "operation"],
            )
            .value,
        4.0
    );
    assert!(
        !scrape
            .samples
            .iter()
            .any(|s| s.name == "sharditem_removed_count"),
        "no shard was let go on a single node"
    );

    // Per-node Raft families: the 4 shards and the metadata group, all led by this one node.
    for (name, value) in [
        ("chronicle_raft_groups_led", 5.0),
        ("chronicle_raft_groups_without_leader", 0.0),
        ("chronicle_raft_groups_under_replicated", 0.0),
    ] {
        scrape.assert_type(name, "gauge");
        assert_eq!(scrape.one(name, &[], &[]).value, value, "{name}");
    }
    scrape.assert_type("chronicle_raft_apply_lag_entries", "gauge");
    scrape.assert_histogram(
        "chronicle_raft_log_append_duration_seconds",
        &[],
        "0.001",
        "1000",
    );
    scrape.assert_histogram("chronicle_raft_log_writes_per_sync", &[], "1", "100000");
    // RocksDB, per node and per column family (never per shard).
    scrape.assert_type("chronicle_rocksdb_write_stopped", "gauge");
    assert_eq!(
        scrape
            .one("chronicle_rocksdb_write_stopped", &[], &[])
            .value,
        0.0
    );
    for name in [
        "chronicle_rocksdb_sst_bytes",
        "chronicle_rocksdb_memtable_bytes",
        "chronicle_rocksdb_pending_compaction_bytes",
    ] {
        scrape.assert_type(name, "gauge");
        scrape.one(name, &[("cf", "history")], &["cf"]);
    }
    assert!(
        scrape
            .one(
                "chronicle_rocksdb_memtable_bytes",
                &[("cf", "raft_log")],
                &["cf"]
            )
            .value
            > 0.0,
        "the Raft log's memtable holds the entries just written"
    );

    // Chronicle's own metrics carry its prefix.
    scrape.assert_type("chronicle_history_shard_commands", "counter");
    scrape.assert_histogram(
        "chronicle_history_shard_command_batch_size",
        &[],
        "1",
        "100000",
    );

    server.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_again_after_a_restart_replays_the_log() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = RunningServer::start_with_metrics(config_for(dir.path()))
        .await
        .expect("server starts");
    wait_ready(server.metrics_addr.expect("metrics port")).await;
    let mut raw = raw_client(&server.url()).await;
    let task_queue = unique("ready-queue");
    for _ in 0..20 {
        raw.start_workflow_execution(start_request(&unique("ready"), "Ready", &task_queue))
            .await
            .expect("start");
    }
    server.stop().await.expect("stop");

    // The groups reopen with their logs; the node is ready once they led and applied them.
    let server = RunningServer::start_with_metrics(config_for(dir.path()))
        .await
        .expect("server restarts");
    let metrics = server.metrics_addr.expect("metrics port");
    wait_ready(metrics).await;
    assert_eq!(get(metrics, "/health/live").await.0, 200);
    server.stop().await.expect("stop");
}

/// The value of a gauge without labels in a fresh scrape.
/// Waits until the unlabelled counter `name` reaches `at_least`.
pub(crate) async fn wait_for_counter(metrics: SocketAddr, name: &str, at_least: f64) {
    for _ in 0..100 {
        let (_, text) = get(metrics, "/metrics").await;
        if parse(&text)
            .samples
            .iter()
            .any(|s| s.name == name && s.value >= at_least)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{name} never reached {at_least}");
}

/// Waits until matching lists `identity` among the pollers of `task_queue`'s workflow tasks: a
/// poll registers its identity and its place among the waiting polls at once, so a task added
/// after that is handed to it.
async fn wait_for_waiting_poller(
    raw: &mut ws::workflow_service_client::WorkflowServiceClient<tonic::transport::Channel>,
    task_queue: &str,
    identity: &str,
) {
    for _ in 0..100 {
        let described = raw
            .describe_task_queue(ws::DescribeTaskQueueRequest {
                namespace: "default".into(),
                task_queue: queue(task_queue),
                task_queue_type: 1, // workflow
                ..Default::default()
            })
            .await
            .expect("describe task queue")
            .into_inner();
        if described.pollers.iter().any(|p| p.identity == identity) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{identity} never showed up among the pollers of {task_queue}");
}

async fn gauge(metrics: SocketAddr, name: &str) -> f64 {
    let (status, text) = get(metrics, "/metrics").await;
    assert_eq!(status, 200);
    parse(&text)
        .samples
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("{name} is not exported"))
        .value
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_age_grows_while_a_task_waits_for_a_worker_and_drops_once_started() {
    const AGE: &str = "chronicle_outbox_oldest_task_age_seconds";
    const TIMER_LAG: &str = "chronicle_timer_queue_lag_seconds";
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = config_for(dir.path());
    config.max_poll_wait = Duration::from_secs(2);
    let server = RunningServer::start_with_metrics(config)
        .await
        .expect("server starts");
    let metrics = server.metrics_addr.expect("metrics port");
    wait_ready(metrics).await;
    assert_eq!(gauge(metrics, AGE).await, 0.0, "an empty outbox");
    assert_eq!(gauge(metrics, TIMER_LAG).await, 0.0, "no timer due");

    // A workflow task nobody polls for stays in the outbox.
    let mut raw = raw_client(&server.url()).await;
    let task_queue = unique("age-queue");
    raw.start_workflow_execution(start_request(&unique("age"), "Age", &task_queue))
        .await
        .expect("start");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let waiting = gauge(metrics, AGE).await;
    assert!(
        (1.5..60.0).contains(&waiting),
        "the task has waited about 2.5 s: {waiting}"
    );

    // A worker starts it: its row goes, and the next sweep (every 2 s) forgets it.
    let task = raw
        .poll_workflow_task_queue(poll(&task_queue))
        .await
        .expect("poll")
        .into_inner();
    assert!(!task.task_token.is_empty(), "a workflow task");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let age = gauge(metrics, AGE).await;
        if age == 0.0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the started task still counts: {age}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(gauge(metrics, TIMER_LAG).await, 0.0, "timers fire on time");
    server.stop().await.expect("stop");
}
