//! Temporal's families of the calls between roles (`client_requests`, `client_errors`,
//! `client_latency`), asserted on the scrape of `metrics::metrics_port_serves_health_and_temporal_metrics`
//! after its run (starts, a duplicate start, polls, completions, a terminate, a history long poll).

use crate::metrics::Scrape;

/// Temporal's labels of its internal clients' families (`client_errors` adds `error_type`).
const CLIENT_LABELS: &[&str] = &["service_name", "service_role", "operation", "namespace"];

/// Each call the run made from one role to another is counted under the caller's
/// `service_name`, the called `service_role` and Temporal's `HistoryClient<RPC>` /
/// `MatchingClient<RPC>` operation, with its latency; failures by error type.
pub(crate) fn assert_client_families(scrape: &Scrape) {
    scrape.assert_type("client_requests", "counter");
    scrape.assert_type("client_errors", "counter");
    for (caller, role, operation, at_least) in [
        // 5 starts (one refused as a duplicate).
        (
            "frontend",
            "history",
            "HistoryClientStartWorkflowExecution",
            5.0,
        ),
        (
            "frontend",
            "history",
            "HistoryClientRespondWorkflowTaskCompleted",
            2.0,
        ),
        (
            "frontend",
            "history",
            "HistoryClientTerminateWorkflowExecution",
            1.0,
        ),
        (
            "frontend",
            "history",
            "HistoryClientGetWorkflowExecutionHistory",
            2.0,
        ),
        (
            "frontend",
            "matching",
            "MatchingClientPollWorkflowTaskQueue",
            2.0,
        ),
        (
            "frontend",
            "matching",
            "MatchingClientPollActivityTaskQueue",
            1.0,
        ),
        // History's outbox hands each workflow task to matching.
        ("history", "matching", "MatchingClientAddWorkflowTask", 2.0),
        // Matching has history record each task it hands to a poll as started.
        (
            "matching",
            "history",
            "HistoryClientRecordWorkflowTaskStarted",
            2.0,
        ),
    ] {
        let labels = [
            ("service_name", caller),
            ("service_role", role),
            ("operation", operation),
            ("namespace", "default"),
        ];
        let requests = scrape.one("client_requests", &labels, CLIENT_LABELS).value;
        assert!(requests >= at_least, "{operation}: {requests} requests");
        scrape.assert_histogram("client_latency", &labels, "0.001", "1000");
        // Every call counted here ended (the run waited for each answer).
        let ended = scrape
            .one("client_latency_count", &labels, CLIENT_LABELS)
            .value;
        assert_eq!(ended, requests, "{operation}: every call ended");
    }
    // The duplicate start failed in history with Temporal's error type; nothing else failed.
    let mut with_type = CLIENT_LABELS.to_vec();
    with_type.push("error_type");
    let duplicate = scrape.one(
        "client_errors",
        &[
            ("service_name", "frontend"),
            ("service_role", "history"),
            ("operation", "HistoryClientStartWorkflowExecution"),
            ("namespace", "default"),
            ("error_type", "serviceerror_WorkflowExecutionAlreadyStarted"),
        ],
        &with_type,
    );
    assert_eq!(duplicate.value, 1.0);
    let errors: Vec<_> = scrape
        .find("client_errors", &[])
        .into_iter()
        .filter(|s| {
            s.labels.get("operation").map(String::as_str)
                != Some("HistoryClientStartWorkflowExecution")
        })
        .collect();
    assert!(errors.is_empty(), "no other call failed: {errors:?}");
}

/// Temporal's shard-controller families on one node with 4 shards: each shard was taken up
/// once (one attempt, ended when its term was ready), and the node saw one ring (itself).
pub(crate) fn assert_shard_controller_families(scrape: &Scrape) {
    let controller = [
        ("service_name", "history"),
        ("operation", "ShardController"),
    ];
    let labels = &["service_name", "operation"];
    scrape.assert_type("acquire_shards_count", "counter");
    assert_eq!(
        scrape
            .one("acquire_shards_count", &controller, labels)
            .value,
        4.0
    );
    scrape.assert_histogram("acquire_shards_latency", &controller, "0.001", "1000");
    assert_eq!(
        scrape
            .one("acquire_shards_latency_count", &controller, labels)
            .value,
        4.0,
        "every attempt ended"
    );
    scrape.assert_type("membership_changed_count", "counter");
    assert_eq!(
        scrape
            .one("membership_changed_count", &controller, labels)
            .value,
        1.0
    );
}

/// Temporal's cache gauges for the RocksDB block cache (Chronicle's one cache of history's
/// data): its 64 MiB capacity, and the bytes it holds and has pinned after the run's reads.
pub(crate) fn assert_cache_families(scrape: &Scrape) {
    let cache = [("service_name", "history"), ("cache_type", "rocksdb_block")];
    let labels = &["service_name", "cache_type"];
    for name in ["cache_size", "cache_usage", "cache_pinned_usage"] {
        scrape.assert_type(name, "gauge");
    }
    assert_eq!(
        scrape.one("cache_size", &cache, labels).value,
        64.0 * 1024.0 * 1024.0
    );
    let usage = scrape.one("cache_usage", &cache, labels).value;
    let pinned = scrape.one("cache_pinned_usage", &cache, labels).value;
    assert!(usage > 0.0, "the run's reads went through the cache");
    assert!(pinned <= usage, "pinned {pinned} of {usage}");
    // Temporal's mutable-state and events caches have no counterpart: no such series.
    assert!(
        !scrape.samples.iter().any(|s| s.name.starts_with("cache_")
            && s.labels.get("cache_type").map(String::as_str) != Some("rocksdb_block")),
        "only the block cache is reported"
    );
}
