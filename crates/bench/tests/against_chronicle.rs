//! The harness end to end against an in-process Chronicle server: every workflow verifies, the
//! counts add up, and the JSON report carries the documented fields.

use std::time::Duration;

use chronicle_bench::{
    DescribeSampling, LoadMode, LoadPlan, RunConfig, RunReport, Scenario, ServerTarget,
};
use chronicle_server::{RunningServer, ServerConfig};

struct Server {
    server: RunningServer,
    _dir: tempfile::TempDir,
}

async fn start_chronicle() -> Server {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = ServerConfig::new(dir.path().to_path_buf());
    config.max_poll_wait = Duration::from_secs(5);
    let server = RunningServer::start(config).await.expect("server starts");
    Server { server, _dir: dir }
}

fn config(server: &Server, scenario: Scenario, count: u64) -> RunConfig {
    let mut config = RunConfig::new(
        ServerTarget::new(server.server.addr.to_string()),
        scenario,
        LoadPlan {
            mode: LoadMode::Closed { concurrency: 5 },
            count: Some(count),
            duration: None,
        },
    );
    config.workflow_pollers = 4;
    config.activity_pollers = 4;
    config.workflow_timeout = Some(Duration::from_secs(30));
    config.describe = DescribeSampling::All;
    // This test process stands in for the server process.
    config.server_pids = vec![std::process::id()];
    config
}

fn assert_clean(report: &RunReport, count: u64) {
    assert!(report.is_clean(), "{}", report.summary());
    assert_eq!(report.started, count);
    assert_eq!(report.completed, count);
    assert_eq!(report.failed, 0);
    assert!(report.rpc_errors.is_empty(), "{:?}", report.rpc_errors);
    assert_eq!(report.latency.count, count);
    assert!(report.latency.p50_ms > 0.0 && report.latency.p50_ms <= report.latency.max_ms);
    assert!(report.workflows_per_second > 0.0);
    let timeline_total: u64 = report.timeline.iter().map(|p| p.completed).sum();
    assert_eq!(timeline_total, count, "every completion lands in a second");
    assert_eq!(report.state_transitions.sampled_workflows, count);
    assert!(report.state_transitions.per_second > 0.0);
    assert_eq!(report.servers.len(), 1);
    assert!(report.servers[0].peak_rss_mb > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_and_sequential_verify_every_workflow() {
    let server = start_chronicle().await;

    let echo = chronicle_bench::run(&config(&server, Scenario::Echo, 20))
        .await
        .expect("echo runs");
    assert_clean(&echo, 20);
    // Echo: started, task scheduled/started/completed, completed.
    assert_eq!(echo.state_transitions.history_events_per_workflow, 5.0);
    assert!(echo.rpc_latency.contains_key("StartWorkflowExecution"));
    assert!(
        echo.rpc_latency
            .contains_key("RespondWorkflowTaskCompleted")
    );

    let sequential =
        chronicle_bench::run(&config(&server, Scenario::Sequential { activities: 2 }, 20))
            .await
            .expect("sequential runs");
    assert_clean(&sequential, 20);
    // Each activity adds scheduled/started/completed and a workflow task (3 events).
    assert_eq!(
        sequential.state_transitions.history_events_per_workflow,
        5.0 + 2.0 * 6.0
    );
    assert_eq!(
        sequential.rpc_latency["RespondActivityTaskCompleted"].count, 40,
        "two activities per workflow"
    );

    // The built-in workers request eager activities by default; without that every activity
    // comes through a poll, with the same results.
    let mut polled_config = config(&server, Scenario::Sequential { activities: 2 }, 20);
    polled_config.eager_activities = false;
    let polled = chronicle_bench::run(&polled_config)
        .await
        .expect("sequential without eager activities runs");
    assert_clean(&polled, 20);
    assert_eq!(polled.rpc_latency["RespondActivityTaskCompleted"].count, 40);
    assert!(polled.rpc_latency["PollActivityTaskQueue"].count >= 40);

    // The JSON report round-trips and has the fields tools read.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.json");
    sequential.write_json(&path).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(json["completed"], 20);
    assert_eq!(json["failed"], 0);
    assert_eq!(json["scenario"]["kind"], "sequential");
    assert_eq!(json["scenario"]["activities"], 2);
    assert_eq!(json["load"]["mode"]["mode"], "closed");
    for field in ["p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms"] {
        assert!(json["latency"][field].as_f64().unwrap() > 0.0, "{field}");
    }
    assert!(json["workflows_per_second"].as_f64().unwrap() > 0.0);
    assert!(json["servers"][0]["cpu_seconds"].is_number());
    assert!(!json["timeline"].as_array().unwrap().is_empty());
    let parsed: RunReport = serde_json::from_value(json).expect("the report deserializes");
    assert_eq!(parsed.scenario, sequential.scenario);
    assert_eq!(parsed.load, sequential.load);
    assert_eq!(parsed.timeline.len(), sequential.timeline.len());
    assert_eq!(parsed.rpc_latency.len(), sequential.rpc_latency.len());

    server.server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_signals_and_mixed_scenario_verify() {
    let server = start_chronicle().await;

    let mut signal = config(&server, Scenario::Signal { signals: 3 }, 10);
    signal.load.mode = LoadMode::Open {
        rate: 50.0,
        max_in_flight: 100,
    };
    let report = chronicle_bench::run(&signal).await.expect("signal runs");
    assert_clean(&report, 10);
    assert_eq!(report.rpc_latency["SignalWorkflowExecution"].count, 30);

    let mixed = config(
        &server,
        Scenario::Mixed {
            activities: 1,
            timer_ms: 50,
        },
        10,
    );
    let report = chronicle_bench::run(&mixed).await.expect("mixed runs");
    assert_clean(&report, 10);
    assert_eq!(report.rpc_latency["QueryWorkflow"].count, 10);
    assert!(
        report.latency.p50_ms >= 50.0,
        "the timer is part of the latency"
    );

    server.server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_scenario_verifies_across_shards() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server_config = ServerConfig::new(dir.path().to_path_buf());
    server_config.max_poll_wait = Duration::from_secs(5);
    // Children hash to other shards than their parents.
    server_config.num_shards = Some(4);
    let server = Server {
        server: RunningServer::start(server_config)
            .await
            .expect("server starts"),
        _dir: dir,
    };
    let report = chronicle_bench::run(&config(&server, Scenario::Child { children: 3 }, 10))
        .await
        .expect("child runs");
    assert_clean(&report, 10);
    server.server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_namespace_is_a_clear_error() {
    let server = start_chronicle().await;
    let mut config = config(&server, Scenario::Echo, 1);
    config.target.namespace = "no-such-namespace".into();
    let error = chronicle_bench::run(&config).await.unwrap_err();
    assert!(error.to_string().contains("no-such-namespace"), "{error}");
    server.server.stop().await.unwrap();
}
