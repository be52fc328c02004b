//! `ramp`: open-loop steps of rising rate until latency, errors or throughput degrade; the
//! highest good step is the rate the server sustains for the scenario.

use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::BenchError;
use crate::driver::{LoadMode, LoadPlan};
use crate::report::RunReport;
use crate::run::{self, RunConfig};

/// When a step counts as degraded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RampLimits {
    /// End-to-end p99 above this (ms).
    pub max_p99_ms: f64,
    /// Completions per second below this fraction of the offered rate.
    pub min_throughput_ratio: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RampStep {
    pub offered_rate: f64,
    /// Why the step degraded (`None`: it held).
    pub degraded: Option<String>,
    pub report: RunReport,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RampReport {
    pub limits: RampLimits,
    pub steps: Vec<RampStep>,
    /// The highest offered rate whose step held.
    pub sustained_rate: Option<f64>,
}

impl RampReport {
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "  {:>10} {:>10} {:>9} {:>9} {:>9} {:>7}  verdict",
            "offered/s", "done/s", "p50 ms", "p99 ms", "max ms", "errors"
        );
        for step in &self.steps {
            let r = &step.report;
            let _ = writeln!(
                out,
                "  {:>10.1} {:>10.1} {:>9.1} {:>9.1} {:>9.1} {:>7}  {}",
                step.offered_rate,
                r.workflows_per_second,
                r.latency.p50_ms,
                r.latency.p99_ms,
                r.latency.max_ms,
                r.failed + r.total_rpc_errors(),
                step.degraded.as_deref().unwrap_or("ok")
            );
        }
        let _ = writeln!(
            out,
            "sustained rate: {}",
            self.sustained_rate
                .map_or("none (the first step degraded)".into(), |r| format!(
                    "{r:.1} workflows/s"
                ))
        );
        out
    }
}

/// Why `report` (a step at `rate`) is degraded, if it is.
pub fn degradation(report: &RunReport, rate: f64, limits: &RampLimits) -> Option<String> {
    let errors = report.failed + report.total_rpc_errors();
    if errors > 0 {
        return Some(format!("{errors} errors"));
    }
    if report.latency.p99_ms > limits.max_p99_ms {
        return Some(format!(
            "p99 {:.0} ms > {:.0} ms",
            report.latency.p99_ms, limits.max_p99_ms
        ));
    }
    if report.workflows_per_second < rate * limits.min_throughput_ratio {
        return Some(format!(
            "{:.1}/s completed < {:.0}% of offered",
            report.workflows_per_second,
            limits.min_throughput_ratio * 100.0
        ));
    }
    None
}

/// Runs steps at `start`, `start + step`, ... each for `step_duration`, until one degrades or
/// `max_steps` ran. `base` supplies everything but the load.
pub async fn ramp(
    base: &RunConfig,
    start: f64,
    step: f64,
    step_duration: Duration,
    max_steps: usize,
    limits: RampLimits,
    mut on_step: impl FnMut(&RampStep),
) -> Result<RampReport, BenchError> {
    if !(start > 0.0 && step >= 0.0) {
        return Err(BenchError::Config(
            "ramp needs a positive start rate and a non-negative step".into(),
        ));
    }
    let mut steps = Vec::new();
    let mut sustained_rate = None;
    for index in 0..max_steps.max(1) {
        let rate = start + step * index as f64;
        let mut config = base.clone();
        config.load = LoadPlan {
            mode: LoadMode::Open {
                rate,
                max_in_flight: match base.load.mode {
                    LoadMode::Open { max_in_flight, .. } => max_in_flight,
                    LoadMode::Closed { .. } => 10_000,
                },
            },
            count: None,
            duration: Some(step_duration),
        };
        config.label = Some(format!("ramp {rate:.1}/s"));
        let report = run::run(&config).await?;
        let degraded = degradation(&report, rate, &limits);
        let held = degraded.is_none();
        let result = RampStep {
            offered_rate: rate,
            degraded,
            report,
        };
        on_step(&result);
        steps.push(result);
        if !held {
            break;
        }
        sustained_rate = Some(rate);
    }
    Ok(RampReport {
        limits,
        steps,
        sustained_rate,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::test_support::report;

    const LIMITS: RampLimits = RampLimits {
        max_p99_ms: 100.0,
        min_throughput_ratio: 0.9,
    };

    #[test]
    fn a_step_degrades_on_errors_latency_or_lost_throughput() {
        assert_eq!(degradation(&report(50.0, 80.0), 50.0, &LIMITS), None);
        let slow = degradation(&report(50.0, 150.0), 50.0, &LIMITS).unwrap();
        assert!(slow.contains("p99"), "{slow}");
        let behind = degradation(&report(40.0, 80.0), 50.0, &LIMITS).unwrap();
        assert!(behind.contains("offered"), "{behind}");
        let mut failing = report(50.0, 80.0);
        failing
            .rpc_errors
            .insert("StartWorkflowExecution/Unavailable".into(), 2);
        assert_eq!(
            degradation(&failing, 50.0, &LIMITS).as_deref(),
            Some("2 errors")
        );
    }
}
