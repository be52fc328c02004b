//! chronicle-bench: a load-benchmark harness for any server that speaks Temporal's public gRPC
//! API (Chronicle, Temporal).
//!
//! The harness brings its own workers, which answer workflow and activity tasks with raw
//! WorkflowService RPCs (no SDK in the loop), drives one of several [`scenario`]s in a closed or
//! open loop, verifies every workflow's result, and reports throughput, latency percentiles,
//! errors and the server process's CPU, memory and disk writes. The end-to-end mode runs the
//! same scenarios on real Temporal Python SDK workers instead ([`python`]).
//!
//! Module map: [`cli`] (arguments) -> [`run`] (one run: [`connection`], [`worker`] or
//! [`python`], [`driver`], [`metrics`], [`procfs`]) -> [`report`] and [`plot`]; [`compare`]
//! repeats runs across targets, [`ramp`] raises the rate step by step.

pub mod cli;
pub mod compare;
pub mod connection;
pub mod driver;
pub mod metrics;
pub mod plot;
pub mod procfs;
mod progress;
pub mod python;
pub mod ramp;
pub mod report;
pub mod run;
pub mod scenario;
pub mod timeseries;
pub mod worker;

use std::path::PathBuf;

pub use connection::{ServerTarget, TlsOptions};
pub use driver::{LoadMode, LoadPlan};
pub use python::PythonWorkerConfig;
pub use report::{RunReport, WorkerMode};
pub use run::{DescribeSampling, RunConfig, WorkerSetup, run};
pub use scenario::Scenario;

/// Why the harness could not do what it was asked (as opposed to workflows failing, which a
/// report counts).
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot connect to {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("{rpc} failed against the server: {code:?}: {message}")]
    Rpc {
        rpc: &'static str,
        code: tonic::Code,
        message: String,
    },
    #[error("namespace {0:?} does not exist on the server (create it, or pass --namespace)")]
    UnknownNamespace(String),
    #[error("cannot read /proc for server pid {pid}: {source}")]
    Process {
        pid: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("Python workers: {0}")]
    PythonWorker(String),
    #[error("cannot write {path}: {reason}")]
    Output { path: PathBuf, reason: String },
}

impl BenchError {
    fn rpc(rpc: &'static str, status: tonic::Status) -> Self {
        BenchError::Rpc {
            rpc,
            code: status.code(),
            message: status.message().to_string(),
        }
    }
}
