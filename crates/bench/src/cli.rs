//! Command-line arguments and their translation into run configurations.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::BenchError;
use crate::connection::{ServerTarget, TlsOptions};
use crate::driver::{LoadMode, LoadPlan};
use crate::python::{self, PythonWorkerConfig};
use crate::run::{DescribeSampling, RunConfig, WorkerSetup};
use crate::scenario::Scenario;

/// Bound of a run given neither --count nor --duration.
const DEFAULT_RUN_DURATION: Duration = Duration::from_secs(30);
const DEFAULT_CONCURRENCY: usize = 10;

#[derive(Debug, Parser)]
#[command(
    name = "chronicle-bench",
    version,
    about = "Load benchmark for Temporal-compatible servers (Chronicle, Temporal), over the public gRPC API"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one scenario against one server.
    Run(RunArgs),
    /// Run the same scenario against several servers, interleaved, and compare medians.
    Compare(CompareArgs),
    /// Open-loop steps of rising rate until p99, errors or throughput degrade (the load
    /// options --rate/--concurrency/--count/--duration are replaced by the steps).
    Ramp(RampArgs),
}

#[derive(Clone, Debug, Args)]
pub struct RampArgs {
    /// Server frontend, host:port.
    #[arg(long, default_value = "127.0.0.1:7233")]
    pub address: String,
    /// Server process on this machine to measure; repeatable.
    #[arg(long = "server-pid", value_name = "PID")]
    pub server_pids: Vec<u32>,
    /// Rate of the first step (starts/s).
    #[arg(long, default_value_t = 10.0)]
    pub start_rate: f64,
    /// Rate added at each step.
    #[arg(long, default_value_t = 10.0)]
    pub step: f64,
    #[arg(long, default_value = "10s")]
    pub step_duration: humantime::Duration,
    #[arg(long, default_value_t = 20)]
    pub max_steps: usize,
    /// A step whose end-to-end p99 exceeds this is degraded.
    #[arg(long, default_value_t = 1000.0)]
    pub max_p99_ms: f64,
    /// A step completing fewer than this fraction of its offered rate is degraded.
    #[arg(long, default_value_t = 0.9)]
    pub min_throughput_ratio: f64,
    #[command(flatten)]
    pub bench: BenchArgs,
}

#[derive(Clone, Debug, Args)]
pub struct RunArgs {
    /// Server frontend, host:port.
    #[arg(long, default_value = "127.0.0.1:7233")]
    pub address: String,
    /// Server process on this machine to measure (CPU, RSS, bytes written); repeatable.
    #[arg(long = "server-pid", value_name = "PID")]
    pub server_pids: Vec<u32>,
    #[command(flatten)]
    pub bench: BenchArgs,
}

#[derive(Clone, Debug, Args)]
pub struct CompareArgs {
    /// A server to compare: NAME=HOST:PORT[,pid=PID...]. The first is the baseline.
    #[arg(long = "target", required = true, value_name = "NAME=ADDR[,pid=PID]")]
    pub targets: Vec<TargetSpec>,
    /// Rounds; each round runs every target once, in order (A B A B ...).
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Idle time between runs, so one run's after-effects (compaction, GC) settle.
    #[arg(long, default_value = "2s")]
    pub pause: humantime::Duration,
    #[command(flatten)]
    pub bench: BenchArgs,
}

/// Everything but the server: identical for every target of a comparison.
#[derive(Clone, Debug, Args)]
pub struct BenchArgs {
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// Connect with TLS (system roots unless --tls-ca-path).
    #[arg(long)]
    pub tls: bool,
    #[arg(long, value_name = "PATH")]
    pub tls_ca_path: Option<PathBuf>,
    #[arg(long, value_name = "PATH")]
    pub tls_cert_path: Option<PathBuf>,
    #[arg(long, value_name = "PATH")]
    pub tls_key_path: Option<PathBuf>,
    /// Server name to verify in the server's certificate.
    #[arg(long)]
    pub tls_server_name: Option<String>,
    /// gRPC (HTTP/2) connections to open per server.
    #[arg(long, default_value_t = 2)]
    pub connections: usize,

    #[arg(long, value_enum, default_value_t = ScenarioName::Echo)]
    pub scenario: ScenarioName,
    /// Activities per workflow (sequential, fanout, mixed).
    #[arg(long, default_value_t = 3)]
    pub activities: u32,
    /// Timer length (timer: default 1s; mixed: default 100ms).
    #[arg(long, value_name = "DURATION")]
    pub timer_duration: Option<humantime::Duration>,
    /// Signals the driver sends each workflow (signal).
    #[arg(long, default_value_t = 3)]
    pub signals: u32,
    /// Child workflows per workflow (child).
    #[arg(long, default_value_t = 3)]
    pub children: u32,

    /// Closed loop: workflows kept in flight (default 10 unless --rate).
    #[arg(long, conflicts_with = "rate")]
    pub concurrency: Option<usize>,
    /// Open loop: workflow starts per second, on schedule whatever the latency.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Open loop: most workflows in flight; later starts wait (and their latency shows it).
    #[arg(long, default_value_t = 10_000)]
    pub max_in_flight: usize,
    /// Stop after starting this many workflows.
    #[arg(long)]
    pub count: Option<u64>,
    /// Stop starting workflows after this long (default 30s when --count is not given).
    #[arg(long)]
    pub duration: Option<humantime::Duration>,

    /// Who answers the workflow and activity tasks: the built-in raw-RPC pollers (no SDK in the
    /// loop: the server is what is measured) or real Temporal Python SDK workers (end to end).
    #[arg(long, value_enum, default_value_t = WorkerChoice::Builtin)]
    pub workers: WorkerChoice,
    /// Python with the `temporalio` SDK, for --workers python [default: $CHRONICLE_VENV/bin/python,
    /// else ~/.cache/chronicle-venv/bin/python, else python3].
    #[arg(long, value_name = "PATH")]
    pub python: Option<PathBuf>,
    /// Python worker processes, for --workers python [default: 1]. Each gets the limits of
    /// --workflow-pollers and --activity-pollers.
    #[arg(long, value_name = "N")]
    pub python_workers: Option<usize>,
    /// Built-in workers: workflow-task pollers (each answers one task at a time). Python workers:
    /// workflow tasks each process handles at once (max_concurrent_workflow_tasks).
    #[arg(long, default_value_t = 8)]
    pub workflow_pollers: usize,
    /// Built-in workers: activity pollers. Python workers: activities each process runs at once
    /// (max_concurrent_activities).
    #[arg(long, default_value_t = 8)]
    pub activity_pollers: usize,
    /// Do not request eager activity execution (every activity then comes through an activity
    /// poll), for the built-in and the Python workers.
    #[arg(long)]
    pub no_eager_activities: bool,
    /// How long one workflow may take before it counts as failed.
    #[arg(long, value_name = "DURATION")]
    pub workflow_timeout: Option<humantime::Duration>,
    /// Only start workflows; do not wait for results (e.g. to park workflows on long timers).
    #[arg(long)]
    pub no_wait: bool,
    /// Workflows described after the run to count state transitions (0: none).
    #[arg(long, default_value_t = 100)]
    pub describe_sample: usize,
    /// Describe every workflow (slow for long runs).
    #[arg(long)]
    pub describe_all: bool,

    /// Write the report(s) as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write an SVG chart of throughput and latency percentiles per second.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// No progress bar (it is also hidden when stderr is not a terminal).
    #[arg(long)]
    pub no_progress: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ScenarioName {
    Echo,
    Sequential,
    Fanout,
    Timer,
    Signal,
    Child,
    Mixed,
}

/// `--workers`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum WorkerChoice {
    /// The harness's raw-RPC pollers.
    Builtin,
    /// Temporal Python SDK worker processes.
    Python,
}

/// `NAME=ADDR[,pid=PID...]` of `compare --target`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetSpec {
    pub name: String,
    pub address: String,
    pub pids: Vec<u32>,
}

impl FromStr for TargetSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut parts = text.split(',');
        let head = parts.next().unwrap_or_default();
        let (name, address) = head
            .split_once('=')
            .filter(|(n, a)| !n.is_empty() && !a.is_empty())
            .ok_or_else(|| format!("expected NAME=ADDR[,pid=PID], got {text:?}"))?;
        let mut pids = Vec::new();
        for part in parts {
            let pid = part
                .strip_prefix("pid=")
                .ok_or_else(|| format!("unknown target option {part:?} (only pid=PID)"))?;
            pids.push(pid.parse().map_err(|e| format!("pid {pid:?}: {e}"))?);
        }
        Ok(Self {
            name: name.into(),
            address: address.into(),
            pids,
        })
    }
}

impl BenchArgs {
    pub fn scenario(&self) -> Scenario {
        let timer = |default_ms: u64| {
            self.timer_duration
                .map_or(default_ms, |d| Duration::from(d).as_millis() as u64)
        };
        match self.scenario {
            ScenarioName::Echo => Scenario::Echo,
            ScenarioName::Sequential => Scenario::Sequential {
                activities: self.activities,
            },
            ScenarioName::Fanout => Scenario::Fanout {
                activities: self.activities,
            },
            ScenarioName::Timer => Scenario::Timer {
                duration_ms: timer(1000),
            },
            ScenarioName::Signal => Scenario::Signal {
                signals: self.signals,
            },
            ScenarioName::Child => Scenario::Child {
                children: self.children,
            },
            ScenarioName::Mixed => Scenario::Mixed {
                activities: self.activities,
                timer_ms: timer(100),
            },
        }
    }

    pub fn load(&self) -> LoadPlan {
        let mode = match self.rate {
            Some(rate) => LoadMode::Open {
                rate,
                max_in_flight: self.max_in_flight,
            },
            None => LoadMode::Closed {
                concurrency: self.concurrency.unwrap_or(DEFAULT_CONCURRENCY),
            },
        };
        let duration = self.duration.map(Duration::from);
        LoadPlan {
            mode,
            count: self.count,
            duration: if self.count.is_none() && duration.is_none() {
                Some(DEFAULT_RUN_DURATION)
            } else {
                duration
            },
        }
    }

    fn tls(&self) -> Option<TlsOptions> {
        let any_tls_option = self.tls_ca_path.is_some()
            || self.tls_cert_path.is_some()
            || self.tls_key_path.is_some()
            || self.tls_server_name.is_some();
        (self.tls || any_tls_option).then(|| TlsOptions {
            ca_path: self.tls_ca_path.clone(),
            cert_path: self.tls_cert_path.clone(),
            key_path: self.tls_key_path.clone(),
            server_name: self.tls_server_name.clone(),
        })
    }

    /// The worker setup of --workers, --python and --python-workers.
    pub fn worker_setup(&self) -> Result<WorkerSetup, BenchError> {
        match self.workers {
            WorkerChoice::Builtin => {
                if self.python.is_some() || self.python_workers.is_some() {
                    return Err(BenchError::Config(
                        "--python and --python-workers need --workers python".into(),
                    ));
                }
                Ok(WorkerSetup::Builtin)
            }
            WorkerChoice::Python => Ok(WorkerSetup::Python(PythonWorkerConfig {
                python: self.python.clone().unwrap_or_else(python::default_python),
                processes: self.python_workers.unwrap_or(1),
            })),
        }
    }

    /// The run against `address` these arguments describe.
    pub fn run_config(
        &self,
        address: &str,
        label: Option<String>,
        server_pids: Vec<u32>,
    ) -> Result<RunConfig, BenchError> {
        let target = ServerTarget {
            address: address.into(),
            namespace: self.namespace.clone(),
            tls: self.tls(),
            connections: self.connections,
        };
        let mut config = RunConfig::new(target, self.scenario(), self.load());
        config.label = label;
        config.workers = self.worker_setup()?;
        config.workflow_pollers = self.workflow_pollers;
        config.activity_pollers = self.activity_pollers;
        config.eager_activities = !self.no_eager_activities;
        config.workflow_timeout = self.workflow_timeout.map(Duration::from);
        config.wait_for_results = !self.no_wait;
        config.describe = if self.describe_all {
            DescribeSampling::All
        } else if self.describe_sample == 0 {
            DescribeSampling::Off
        } else {
            DescribeSampling::Sample(self.describe_sample)
        };
        config.server_pids = server_pids;
        config.progress = !self.no_progress;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_specs_parse_names_addresses_and_pids() {
        let spec: TargetSpec = "chronicle=127.0.0.1:7233,pid=42,pid=43".parse().unwrap();
        assert_eq!(spec.name, "chronicle");
        assert_eq!(spec.address, "127.0.0.1:7233");
        assert_eq!(spec.pids, vec![42, 43]);
        assert!("noequals".parse::<TargetSpec>().is_err());
        assert!("a=b,cpu=1".parse::<TargetSpec>().is_err());
    }

    #[test]
    fn run_arguments_become_a_run_config() {
        let cli = Cli::try_parse_from([
            "chronicle-bench",
            "run",
            "--scenario",
            "sequential",
            "--activities",
            "4",
            "--rate",
            "50",
            "--count",
            "200",
            "--server-pid",
            "7",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("run expected");
        };
        let config = args
            .bench
            .run_config(&args.address, None, args.server_pids.clone())
            .unwrap();
        assert_eq!(config.scenario, Scenario::Sequential { activities: 4 });
        assert_eq!(
            config.load.mode,
            LoadMode::Open {
                rate: 50.0,
                max_in_flight: 10_000
            }
        );
        assert_eq!(config.load.count, Some(200));
        assert_eq!(config.load.duration, None);
        assert_eq!(config.server_pids, vec![7]);
        assert!(config.target.tls.is_none());
    }

    #[test]
    fn concurrency_and_rate_are_exclusive_and_runs_are_bounded_by_default() {
        assert!(
            Cli::try_parse_from([
                "chronicle-bench",
                "run",
                "--concurrency",
                "5",
                "--rate",
                "5"
            ])
            .is_err()
        );
        let cli =
            Cli::try_parse_from(["chronicle-bench", "run", "--tls-ca-path", "ca.pem"]).unwrap();
        let Command::Run(args) = cli.command else {
            panic!("run expected");
        };
        let load = args.bench.load();
        assert_eq!(load.duration, Some(DEFAULT_RUN_DURATION));
        assert_eq!(
            load.mode,
            LoadMode::Closed {
                concurrency: DEFAULT_CONCURRENCY
            }
        );
        assert!(args.bench.tls().is_some(), "a TLS option implies --tls");
    }

    fn bench_args(extra: &[&str]) -> Result<BenchArgs, clap::Error> {
        let mut argv = vec!["chronicle-bench", "run"];
        argv.extend_from_slice(extra);
        let cli = Cli::try_parse_from(argv)?;
        let Command::Run(args) = cli.command else {
            panic!("run expected");
        };
        Ok(args.bench)
    }

    #[test]
    fn worker_mode_options_become_a_worker_setup() {
        let builtin = bench_args(&[]).unwrap();
        assert_eq!(builtin.worker_setup().unwrap(), WorkerSetup::Builtin);
        assert!(
            bench_args(&["--python-workers", "2"])
                .unwrap()
                .worker_setup()
                .is_err(),
            "Python options without --workers python"
        );
        assert!(bench_args(&["--workers", "rust"]).is_err());

        let python = bench_args(&[
            "--workers",
            "python",
            "--python",
            "/opt/py/bin/python",
            "--python-workers",
            "3",
            "--workflow-pollers",
            "16",
        ])
        .unwrap();
        let config = python
            .run_config("127.0.0.1:7233", None, Vec::new())
            .unwrap();
        assert_eq!(
            config.workers,
            WorkerSetup::Python(PythonWorkerConfig {
                python: "/opt/py/bin/python".into(),
                processes: 3,
            })
        );
        assert_eq!(config.workflow_pollers, 16);

        let defaults = bench_args(&["--workers", "python"]).unwrap();
        assert_eq!(
            defaults.worker_setup().unwrap(),
            WorkerSetup::Python(PythonWorkerConfig {
                python: python::default_python(),
                processes: 1,
            })
        );
    }
}
