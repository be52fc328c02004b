//! The result of a run: JSON-serializable, and printable as a summary table.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::BenchError;
use crate::driver::{LoadMode, LoadPlan};
use crate::metrics::Percentiles;
use crate::procfs::ProcessReport;
use crate::scenario::Scenario;
use crate::timeseries::SecondPoint;

/// State transitions per workflow, measured with DescribeWorkflowExecution on a sample.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TransitionsReport {
    /// Workflows described (all runs of each).
    pub sampled_workflows: u64,
    /// Mean `state_transition_count` per workflow (0 when the server does not report it).
    pub state_transitions_per_workflow: f64,
    /// Mean history length per workflow (events, all runs).
    pub history_events_per_workflow: f64,
    /// `state_transition_count`, or `history_length` when the server reports no transitions.
    pub source: String,
    /// Workflows/s times the per-workflow figure of `source`.
    pub per_second: f64,
    /// Describe calls that failed (the sample is smaller by as many).
    pub describe_errors: u64,
}

/// Who answered the workflow and activity tasks of a run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum WorkerMode {
    /// The harness's raw-RPC pollers (no SDK in the loop).
    #[default]
    Builtin,
    /// Temporal Python SDK worker processes (end to end).
    Python {
        processes: usize,
        /// SDK and Python versions, e.g. `temporalio 1.35.0, Python 3.11.7`.
        sdk: String,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// Name of the target in a comparison, or its address.
    pub target: String,
    pub address: String,
    pub namespace: String,
    /// What GetSystemInfo says.
    pub server_version: String,
    pub scenario: Scenario,
    pub load: LoadPlan,
    /// Built-in pollers or Python SDK workers (reports from before the mode existed: built-in).
    #[serde(default)]
    pub workers: WorkerMode,
    /// Built-in: pollers. Python: task slots of each worker process.
    pub workflow_pollers: usize,
    pub activity_pollers: usize,
    /// Whether the harness waited for and verified each result.
    pub verified_results: bool,
    pub task_queue: String,
    /// Workflows the server accepted.
    pub started: u64,
    /// Workflows that ended with the expected result (or, without verification, started).
    pub completed: u64,
    /// Workflows that did not.
    pub failed: u64,
    /// From the first start to the last result.
    pub elapsed_seconds: f64,
    pub workflows_per_second: f64,
    pub state_transitions: TransitionsReport,
    /// End to end: from the (scheduled) start to the observed close event.
    pub latency: Percentiles,
    pub rpc_latency: BTreeMap<String, Percentiles>,
    /// `"Rpc/Code"` -> count.
    pub rpc_errors: BTreeMap<String, u64>,
    /// Cause -> count.
    pub workflow_failures: BTreeMap<String, u64>,
    /// A few distinct failure messages.
    pub failure_samples: Vec<String>,
    pub servers: Vec<ProcessReport>,
    /// The Python worker processes (CPU with their children), apart from `servers` so that
    /// server CPU per workflow means the same in both modes. Empty with built-in workers, whose
    /// CPU is the harness's own.
    #[serde(default)]
    pub worker_processes: Vec<ProcessReport>,
    /// The last lines the Python workers wrote (SDK warnings and errors), if any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub worker_output: Vec<String>,
    pub timeline: Vec<SecondPoint>,
}

impl RunReport {
    pub fn total_rpc_errors(&self) -> u64 {
        self.rpc_errors.values().sum()
    }

    /// A run is clean when every workflow verified and no RPC failed.
    pub fn is_clean(&self) -> bool {
        self.failed == 0 && self.total_rpc_errors() == 0 && self.completed > 0
    }

    pub fn write_json(&self, path: &Path) -> Result<(), BenchError> {
        write_json(path, self)
    }

    /// The summary printed at the end of a run.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let load = match &self.load.mode {
            LoadMode::Closed { concurrency } => format!("closed loop, concurrency {concurrency}"),
            LoadMode::Open { rate, .. } => format!("open loop, {rate} starts/s"),
        };
        let bound = match (self.load.count, self.load.duration) {
            (Some(n), Some(d)) => format!("{n} workflows or {d:?}"),
            (Some(n), None) => format!("{n} workflows"),
            (None, Some(d)) => format!("{d:?}"),
            (None, None) => "unbounded".into(),
        };
        let _ = writeln!(
            out,
            "chronicle-bench: {} @ {} ({}), namespace {}",
            self.target, self.address, self.server_version, self.namespace
        );
        let _ = writeln!(
            out,
            "scenario {}, {load}, {bound}",
            self.scenario.describe()
        );
        let _ = writeln!(out, "workers: {}", self.describe_workers());
        let _ = writeln!(out);
        let mut row = |name: &str, value: String| {
            let _ = writeln!(out, "  {name:<28} {value}");
        };
        row("workflows started", self.started.to_string());
        row(
            if self.verified_results {
                "workflows verified"
            } else {
                "workflows (not waited for)"
            },
            self.completed.to_string(),
        );
        row("workflows failed", self.failed.to_string());
        row("elapsed", format!("{:.2} s", self.elapsed_seconds));
        row("workflows/s", format!("{:.1}", self.workflows_per_second));
        let t = &self.state_transitions;
        if t.sampled_workflows > 0 {
            row(
                "state transitions/s",
                format!(
                    "{:.1} ({} per workflow: {:.1}, sample of {})",
                    t.per_second,
                    t.source,
                    if t.source == "history_length" {
                        t.history_events_per_workflow
                    } else {
                        t.state_transitions_per_workflow
                    },
                    t.sampled_workflows
                ),
            );
        }
        let l = &self.latency;
        row(
            "latency (ms)",
            format!(
                "p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}",
                l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms
            ),
        );
        for server in &self.servers {
            row(
                &format!("server pid {} ({})", server.pid, server.name),
                format!(
                    "CPU {:.2} s ({} ms/workflow), peak RSS {:.0} MiB (VmHWM {:.0} MiB), written {}",
                    server.cpu_seconds,
                    per_workflow(server.cpu_ms_per_workflow),
                    server.peak_rss_mb,
                    server.vm_hwm_mb,
                    server
                        .bytes_written
                        .map_or("n/a".into(), |b| format!("{:.1} MiB", b as f64 / 1048576.0)),
                ),
            );
        }
        for worker in &self.worker_processes {
            row(
                &format!("python worker pid {}", worker.pid),
                format!(
                    "CPU {:.2} s ({} ms/workflow), peak RSS {:.0} MiB",
                    worker.cpu_seconds,
                    per_workflow(worker.cpu_ms_per_workflow),
                    worker.peak_rss_mb,
                ),
            );
        }
        if self.worker_processes.len() > 1 {
            row(
                "python workers, all",
                format!(
                    "CPU {:.2} s ({} ms/workflow)",
                    self.worker_cpu_seconds(),
                    per_workflow(self.worker_cpu_ms_per_workflow())
                ),
            );
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "  {:<40} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "RPC latency (ms)", "count", "p50", "p90", "p99", "max"
        );
        for (rpc, p) in &self.rpc_latency {
            let _ = writeln!(
                out,
                "  {:<40} {:>9} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
                rpc, p.count, p.p50_ms, p.p90_ms, p.p99_ms, p.max_ms
            );
        }
        if !self.is_clean() {
            let _ = writeln!(out);
            let _ = writeln!(
                out,
                "  !!! ERRORS: {} workflows failed, {} RPC errors",
                self.failed,
                self.total_rpc_errors()
            );
            for (rpc, n) in &self.rpc_errors {
                let _ = writeln!(out, "  !!!   RPC {rpc}: {n}");
            }
            for (cause, n) in &self.workflow_failures {
                let _ = writeln!(out, "  !!!   {cause}: {n}");
            }
            for sample in &self.failure_samples {
                let _ = writeln!(out, "  !!!   e.g. {sample}");
            }
            if self.completed == 0 {
                let _ = writeln!(out, "  !!!   no workflow completed");
            }
            if !self.worker_output.is_empty() {
                // The JSON report has more; the end is what explains a failure.
                const SHOWN: usize = 12;
                let skip = self.worker_output.len().saturating_sub(SHOWN);
                let _ = writeln!(out, "  !!!   last output of the Python workers:");
                for line in &self.worker_output[skip..] {
                    let _ = writeln!(out, "  !!!     {line}");
                }
            }
        }
        out
    }

    /// The worker line of the summary.
    pub fn describe_workers(&self) -> String {
        match &self.workers {
            WorkerMode::Builtin => format!(
                "built-in, {} workflow / {} activity pollers",
                self.workflow_pollers, self.activity_pollers
            ),
            WorkerMode::Python { processes, sdk } => format!(
                "Python SDK ({sdk}), {processes} process{}, each up to {} workflow tasks / {} \
                 activities at once",
                if *processes == 1 { "" } else { "es" },
                self.workflow_pollers,
                self.activity_pollers
            ),
        }
    }

    /// CPU seconds of all Python worker processes (0 with built-in workers).
    pub fn worker_cpu_seconds(&self) -> f64 {
        self.worker_processes.iter().map(|w| w.cpu_seconds).sum()
    }

    /// Python workers' CPU per verified workflow; `None` with built-in workers.
    pub fn worker_cpu_ms_per_workflow(&self) -> Option<f64> {
        (!self.worker_processes.is_empty() && self.completed > 0)
            .then(|| self.worker_cpu_seconds() * 1000.0 / self.completed as f64)
    }
}

fn per_workflow(ms: Option<f64>) -> String {
    ms.map_or("-".into(), |v| format!("{v:.2}"))
}

/// Writes any report as pretty JSON.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), BenchError> {
    let text = serde_json::to_string_pretty(value).expect("reports serialize");
    std::fs::write(path, text).map_err(|e| BenchError::Output {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// A clean closed-loop echo report with the given throughput and p99.
    pub fn report(workflows_per_second: f64, p99_ms: f64) -> RunReport {
        RunReport {
            target: "t".into(),
            address: "127.0.0.1:1".into(),
            namespace: "default".into(),
            server_version: "test".into(),
            scenario: Scenario::Echo,
            load: LoadPlan {
                mode: LoadMode::Closed { concurrency: 1 },
                count: Some(10),
                duration: None,
            },
            workers: WorkerMode::Builtin,
            workflow_pollers: 1,
            activity_pollers: 1,
            verified_results: true,
            task_queue: "tq".into(),
            started: 10,
            completed: 10,
            failed: 0,
            elapsed_seconds: 10.0 / workflows_per_second,
            workflows_per_second,
            state_transitions: TransitionsReport::default(),
            latency: Percentiles {
                count: 10,
                p99_ms,
                p50_ms: p99_ms / 2.0,
                ..Default::default()
            },
            rpc_latency: BTreeMap::new(),
            rpc_errors: BTreeMap::new(),
            workflow_failures: BTreeMap::new(),
            failure_samples: Vec::new(),
            servers: Vec::new(),
            worker_processes: Vec::new(),
            worker_output: Vec::new(),
            timeline: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::report;
    use super::*;

    #[test]
    fn the_summary_names_the_worker_mode_and_python_worker_cpu_apart() {
        let builtin = report(100.0, 10.0);
        assert!(
            builtin
                .summary()
                .contains("workers: built-in, 1 workflow / 1 activity pollers"),
            "{}",
            builtin.summary()
        );
        assert_eq!(builtin.worker_cpu_ms_per_workflow(), None);

        let mut python = report(100.0, 10.0);
        python.workers = WorkerMode::Python {
            processes: 2,
            sdk: "temporalio 1.35.0, Python 3.11.7".into(),
        };
        python.worker_processes = [(11, 0.25), (12, 0.05)]
            .into_iter()
            .map(|(pid, cpu_seconds)| ProcessReport {
                pid,
                cpu_seconds,
                ..Default::default()
            })
            .collect();
        let summary = python.summary();
        assert!(
            summary.contains("workers: Python SDK (temporalio 1.35.0, Python 3.11.7), 2 processes"),
            "{summary}"
        );
        assert!(summary.contains("python worker pid 11"), "{summary}");
        // 0.3 s over 10 workflows.
        assert!(
            summary.contains("CPU 0.30 s (30.00 ms/workflow)"),
            "{summary}"
        );

        let json = serde_json::to_value(&python).unwrap();
        assert_eq!(json["workers"]["mode"], "python");
        assert_eq!(json["workers"]["processes"], 2);
        assert_eq!(json["worker_processes"][1]["pid"], 12);
        let back: RunReport = serde_json::from_value(json).unwrap();
        assert_eq!(back, python);

        // A report written before the worker mode existed reads as built-in.
        let mut old = serde_json::to_value(&builtin).unwrap();
        let fields = old.as_object_mut().unwrap();
        fields.remove("workers");
        fields.remove("worker_processes");
        let old: RunReport = serde_json::from_value(old).unwrap();
        assert_eq!(old.workers, WorkerMode::Builtin);
    }
}
