//! `compare`: the same scenario against several servers with identical settings, interleaved
//! (A B A B ...) so drift on the machine hits every target alike; medians per target and ratios
//! to the first (baseline) target.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::BenchError;
use crate::cli::{BenchArgs, TargetSpec, WorkerChoice};
use crate::plot::{self, PlotSeries};
use crate::report::{self, RunReport};
use crate::run;

/// The compared figures, in table order: (key, label, whether lower is better).
pub const METRICS: [(&str, &str, bool); 12] = [
    ("workflows_per_second", "workflows/s", false),
    ("state_transitions_per_second", "state transitions/s", false),
    ("latency_p50_ms", "latency p50 (ms)", true),
    ("latency_p90_ms", "latency p90 (ms)", true),
    ("latency_p99_ms", "latency p99 (ms)", true),
    ("latency_p999_ms", "latency p99.9 (ms)", true),
    ("latency_max_ms", "latency max (ms)", true),
    ("server_cpu_ms_per_workflow", "server CPU ms/workflow", true),
    ("server_peak_rss_mb", "server peak RSS (MiB)", true),
    (
        "server_kib_written_per_workflow",
        "server KiB written/workflow",
        true,
    ),
    // End-to-end mode only: the Python SDK workers, apart from the server.
    (
        "python_worker_cpu_ms_per_workflow",
        "python worker CPU ms/workflow",
        true,
    ),
    ("errors", "errors (failed + RPC)", true),
];

/// The figures of one run by metric key; absent when not measured (no --server-pid).
pub fn run_metrics(run: &RunReport) -> BTreeMap<String, f64> {
    let mut m = BTreeMap::new();
    let mut put = |key: &str, value: f64| {
        m.insert(key.to_string(), value);
    };
    put("workflows_per_second", run.workflows_per_second);
    if run.state_transitions.sampled_workflows > 0 {
        put(
            "state_transitions_per_second",
            run.state_transitions.per_second,
        );
    }
    put("latency_p50_ms", run.latency.p50_ms);
    put("latency_p90_ms", run.latency.p90_ms);
    put("latency_p99_ms", run.latency.p99_ms);
    put("latency_p999_ms", run.latency.p999_ms);
    put("latency_max_ms", run.latency.max_ms);
    if !run.servers.is_empty() && run.completed > 0 {
        let cpu: f64 = run.servers.iter().map(|s| s.cpu_seconds).sum();
        put(
            "server_cpu_ms_per_workflow",
            cpu * 1000.0 / run.completed as f64,
        );
        put(
            "server_peak_rss_mb",
            run.servers.iter().map(|s| s.peak_rss_mb).sum(),
        );
        if run.servers.iter().all(|s| s.bytes_written.is_some()) {
            let bytes: u64 = run.servers.iter().filter_map(|s| s.bytes_written).sum();
            put(
                "server_kib_written_per_workflow",
                bytes as f64 / 1024.0 / run.completed as f64,
            );
        }
    }
    if let Some(cpu) = run.worker_cpu_ms_per_workflow() {
        put("python_worker_cpu_ms_per_workflow", cpu);
    }
    put("errors", (run.failed + run.total_rpc_errors()) as f64);
    m
}

/// The median of `values` (mean of the middle two for an even count).
pub fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len().is_multiple_of(2) {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    })
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TargetResult {
    pub name: String,
    pub address: String,
    pub pids: Vec<u32>,
    pub runs: Vec<RunReport>,
    pub medians: BTreeMap<String, f64>,
    /// This target's median over the baseline's, per metric.
    pub ratio_to_baseline: BTreeMap<String, f64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CompareReport {
    pub scenario: String,
    pub repeat: usize,
    pub baseline: String,
    pub targets: Vec<TargetResult>,
}

impl CompareReport {
    pub fn is_clean(&self) -> bool {
        self.targets
            .iter()
            .all(|t| t.runs.iter().all(RunReport::is_clean))
    }

    /// Medians per target, then each target's ratio to the baseline.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "compare: {} x{} (medians; ratio = target / {})",
            self.scenario, self.repeat, self.baseline
        );
        let _ = write!(out, "  {:<30}", "metric");
        for target in &self.targets {
            let _ = write!(out, " {:>14}", target.name);
        }
        for target in self.targets.iter().skip(1) {
            let _ = write!(out, " {:>14}", format!("{}/{}", target.name, self.baseline));
        }
        let _ = writeln!(out);
        for (key, label, _) in METRICS {
            if key == "python_worker_cpu_ms_per_workflow"
                && self.targets.iter().all(|t| !t.medians.contains_key(key))
            {
                // Built-in workers: there are no worker processes to report on.
                continue;
            }
            let _ = write!(out, "  {label:<30}");
            for target in &self.targets {
                let cell = target
                    .medians
                    .get(key)
                    .map_or("-".into(), |v| format_number(*v));
                let _ = write!(out, " {cell:>14}");
            }
            for target in self.targets.iter().skip(1) {
                let cell = target
                    .ratio_to_baseline
                    .get(key)
                    .map_or("-".into(), |r| format!("{r:.2}x"));
                let _ = write!(out, " {cell:>14}");
            }
            let _ = writeln!(out);
        }
        if !self.is_clean() {
            let _ = writeln!(out);
            for target in &self.targets {
                for (round, run) in target.runs.iter().enumerate() {
                    if !run.is_clean() {
                        let _ = writeln!(
                            out,
                            "  !!! ERRORS in {} round {}: {} failed, {} RPC errors {:?} {:?}",
                            target.name,
                            round + 1,
                            run.failed,
                            run.total_rpc_errors(),
                            run.rpc_errors,
                            run.workflow_failures
                        );
                    }
                }
            }
        }
        out
    }

    pub fn write_json(&self, path: &Path) -> Result<(), BenchError> {
        report::write_json(path, self)
    }

    /// Throughput and latency over time of each target's median-throughput run.
    pub fn write_plot(&self, path: &Path) -> Result<(), BenchError> {
        let series: Vec<PlotSeries> = self
            .targets
            .iter()
            .filter_map(|t| {
                let mut runs: Vec<&RunReport> = t.runs.iter().collect();
                runs.sort_by(|a, b| a.workflows_per_second.total_cmp(&b.workflows_per_second));
                runs.get(runs.len() / 2).map(|run| PlotSeries {
                    label: t.name.clone(),
                    points: &run.timeline,
                })
            })
            .collect();
        plot::write_svg(path, &format!("compare: {}", self.scenario), &series)
    }
}

fn format_number(value: f64) -> String {
    if value.abs() >= 100.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    }
}

/// Runs the comparison; `on_run` sees each run as it finishes (for progress output).
pub async fn compare(
    targets: &[TargetSpec],
    repeat: usize,
    pause: Duration,
    bench: &BenchArgs,
    mut on_run: impl FnMut(&RunReport),
) -> Result<CompareReport, BenchError> {
    if targets.is_empty() {
        return Err(BenchError::Config(
            "compare needs at least one --target".into(),
        ));
    }
    let mut runs: Vec<Vec<RunReport>> = vec![Vec::new(); targets.len()];
    for round in 0..repeat.max(1) {
        for (index, target) in targets.iter().enumerate() {
            if round > 0 || index > 0 {
                tokio::time::sleep(pause).await;
            }
            let config = bench.run_config(
                &target.address,
                Some(target.name.clone()),
                target.pids.clone(),
            )?;
            let report = run::run(&config).await?;
            on_run(&report);
            runs[index].push(report);
        }
    }
    let mut scenario = bench.scenario().describe();
    if bench.workers == WorkerChoice::Python {
        scenario.push_str(", Python SDK workers");
    }
    Ok(assemble(targets, repeat.max(1), &scenario, runs))
}

/// Medians and ratios from the runs of each target.
pub fn assemble(
    targets: &[TargetSpec],
    repeat: usize,
    scenario: &str,
    runs: Vec<Vec<RunReport>>,
) -> CompareReport {
    let mut results: Vec<TargetResult> = targets
        .iter()
        .zip(runs)
        .map(|(target, runs)| {
            let per_run: Vec<BTreeMap<String, f64>> = runs.iter().map(run_metrics).collect();
            let medians = METRICS
                .iter()
                .filter_map(|(key, _, _)| {
                    let mut values: Vec<f64> = per_run
                        .iter()
                        .filter_map(|m| m.get(*key).copied())
                        .collect();
                    median(&mut values).map(|v| (key.to_string(), v))
                })
                .collect();
            TargetResult {
                name: target.name.clone(),
                address: target.address.clone(),
                pids: target.pids.clone(),
                runs,
                medians,
                ratio_to_baseline: BTreeMap::new(),
            }
        })
        .collect();
    let baseline = results[0].medians.clone();
    for result in &mut results {
        result.ratio_to_baseline = result
            .medians
            .iter()
            .filter_map(|(key, value)| {
                baseline
                    .get(key)
                    .filter(|b| **b != 0.0)
                    .map(|b| (key.clone(), value / b))
            })
            .collect();
    }
    CompareReport {
        scenario: scenario.into(),
        repeat,
        baseline: targets[0].name.clone(),
        targets: results,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::test_support::report;

    fn target(name: &str) -> TargetSpec {
        TargetSpec {
            name: name.into(),
            address: "127.0.0.1:1".into(),
            pids: Vec::new(),
        }
    }

    #[test]
    fn medians_per_target_and_ratios_to_the_first() {
        let runs = vec![
            vec![report(100.0, 10.0), report(120.0, 30.0), report(80.0, 20.0)],
            vec![report(200.0, 5.0), report(260.0, 9.0), report(240.0, 4.0)],
        ];
        let compared = assemble(&[target("base"), target("other")], 3, "echo", runs);
        assert_eq!(compared.baseline, "base");
        let base = &compared.targets[0];
        let other = &compared.targets[1];
        assert_eq!(base.medians["workflows_per_second"], 100.0);
        assert_eq!(other.medians["workflows_per_second"], 240.0);
        assert_eq!(other.medians["latency_p99_ms"], 5.0);
        assert_eq!(other.ratio_to_baseline["workflows_per_second"], 2.4);
        assert_eq!(other.ratio_to_baseline["latency_p99_ms"], 0.25);
        assert_eq!(base.ratio_to_baseline["latency_p99_ms"], 1.0);
        // Not measured without --server-pid: no median, no ratio, "-" in the table.
        assert!(!other.medians.contains_key("server_cpu_ms_per_workflow"));
        assert!(compared.is_clean());
        let table = compared.table();
        assert!(table.contains("2.40x"), "{table}");
        assert!(!table.contains("python worker"), "{table}");
    }

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&mut []), None);
    }
}
