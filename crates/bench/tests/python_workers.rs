//! The end-to-end mode against an in-process Chronicle server: real Temporal Python SDK workers
//! (the script embedded in the harness) answer the tasks, and every workflow verifies as with
//! the built-in workers.
//!
//! These tests need the venv that `scripts/setup.sh` creates (`scripts/test-all.sh` runs it
//! first). Without it they fail, saying so: a skipped end-to-end test would hide a broken mode.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chronicle_bench::python::{venv_python, venv_python_candidates};
use chronicle_bench::{
    DescribeSampling, LoadMode, LoadPlan, PythonWorkerConfig, RunConfig, RunReport, Scenario,
    ServerTarget, WorkerMode, WorkerSetup,
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

/// The venv's Python, found as the CLI's `--python` default finds it.
fn python() -> PathBuf {
    venv_python().unwrap_or_else(|| {
        panic!(
            "no Python venv with the temporalio SDK at {:?}: run scripts/setup.sh (or set \
             CHRONICLE_VENV to a venv that has it); the end-to-end tests need it",
            venv_python_candidates()
        )
    })
}

fn config(server: &Server, scenario: Scenario, count: u64, processes: usize) -> RunConfig {
    let mut config = RunConfig::new(
        ServerTarget::new(server.server.addr.to_string()),
        scenario,
        LoadPlan {
            mode: LoadMode::Closed { concurrency: 5 },
            count: Some(count),
            duration: None,
        },
    );
    config.workers = WorkerSetup::Python(PythonWorkerConfig {
        python: python(),
        processes,
    });
    config.workflow_pollers = 4;
    config.activity_pollers = 4;
    config.workflow_timeout = Some(Duration::from_secs(30));
    config.describe = DescribeSampling::Off;
    // This test process stands in for the server process.
    config.server_pids = vec![std::process::id()];
    config
}

fn assert_clean(report: &RunReport, count: u64, processes: usize) {
    assert!(report.is_clean(), "{}", report.summary());
    assert_eq!(report.started, count);
    assert_eq!(report.completed, count);
    assert_eq!(report.latency.count, count);
    match &report.workers {
        WorkerMode::Python { processes: n, sdk } => {
            assert_eq!(*n, processes);
            assert!(sdk.starts_with("temporalio "), "{sdk}");
        }
        other => panic!("expected Python workers, got {other:?}"),
    }
    // The workers' CPU is measured, apart from the server's.
    assert_eq!(report.worker_processes.len(), processes);
    assert!(
        report.worker_cpu_seconds() > 0.0,
        "{:?}",
        report.worker_processes
    );
    assert!(report.worker_cpu_ms_per_workflow().is_some());
    assert_eq!(report.servers.len(), 1);
    // Stopped and reaped: nothing left behind.
    for worker in &report.worker_processes {
        assert!(
            !Path::new(&format!("/proc/{}", worker.pid)).exists(),
            "python worker {} outlived the run",
            worker.pid
        );
    }
    // The harness sees only its own RPCs: the workers' polls are the SDK's business.
    assert!(!report.rpc_latency.contains_key("PollWorkflowTaskQueue"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_workers_verify_echo_and_sequential() {
    let server = start_chronicle().await;

    let echo = chronicle_bench::run(&config(&server, Scenario::Echo, 20, 1))
        .await
        .expect("echo runs");
    assert_clean(&echo, 20, 1);

    let sequential = chronicle_bench::run(&config(
        &server,
        Scenario::Sequential { activities: 3 },
        20,
        1,
    ))
    .await
    .expect("sequential runs");
    assert_clean(&sequential, 20, 1);
    assert!(
        sequential.summary().contains("workers: Python SDK"),
        "{}",
        sequential.summary()
    );

    server.server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_workers_verify_signals_across_two_processes() {
    let server = start_chronicle().await;
    let report = chronicle_bench::run(&config(&server, Scenario::Signal { signals: 3 }, 20, 2))
        .await
        .expect("signal runs");
    assert_clean(&report, 20, 2);
    assert_eq!(report.rpc_latency["SignalWorkflowExecution"].count, 60);
    server.server.stop().await.unwrap();
}
