//! Everything measured during a run: end-to-end latency, per-RPC latency, errors by gRPC code,
//! workflow failures by cause, and the per-second time series.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tonic::{Code, Status};

use crate::timeseries::{SecondPoint, TimeSeries};

/// Latency histograms hold microseconds up to an hour at three significant digits.
const MAX_MICROS: u64 = 3_600_000_000;
const SIGFIGS: u8 = 3;
/// How many distinct failure messages a report keeps as examples.
const FAILURE_SAMPLES: usize = 10;

/// The RPCs the harness times.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rpc {
    StartWorkflowExecution,
    PollWorkflowTaskQueue,
    RespondWorkflowTaskCompleted,
    PollActivityTaskQueue,
    RespondActivityTaskCompleted,
    RespondActivityTaskFailed,
    RespondQueryTaskCompleted,
    SignalWorkflowExecution,
    QueryWorkflow,
    /// Paging a workflow task's history.
    GetWorkflowExecutionHistory,
    /// The driver's long poll for a workflow's close event.
    WaitForClose,
    DescribeWorkflowExecution,
    TerminateWorkflowExecution,
}

impl Rpc {
    pub fn name(self) -> &'static str {
        match self {
            Rpc::StartWorkflowExecution => "StartWorkflowExecution",
            Rpc::PollWorkflowTaskQueue => "PollWorkflowTaskQueue",
            Rpc::RespondWorkflowTaskCompleted => "RespondWorkflowTaskCompleted",
            Rpc::PollActivityTaskQueue => "PollActivityTaskQueue",
            Rpc::RespondActivityTaskCompleted => "RespondActivityTaskCompleted",
            Rpc::RespondActivityTaskFailed => "RespondActivityTaskFailed",
            Rpc::RespondQueryTaskCompleted => "RespondQueryTaskCompleted",
            Rpc::SignalWorkflowExecution => "SignalWorkflowExecution",
            Rpc::QueryWorkflow => "QueryWorkflow",
            Rpc::GetWorkflowExecutionHistory => "GetWorkflowExecutionHistory",
            Rpc::WaitForClose => "GetWorkflowExecutionHistory(wait close)",
            Rpc::DescribeWorkflowExecution => "DescribeWorkflowExecution",
            Rpc::TerminateWorkflowExecution => "TerminateWorkflowExecution",
        }
    }
}

/// Latency percentiles of one distribution, in milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    pub fn of(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return Self::default();
        }
        let ms = |micros: u64| micros as f64 / 1000.0;
        Self {
            count: histogram.len(),
            mean_ms: histogram.mean() / 1000.0,
            p50_ms: ms(histogram.value_at_quantile(0.50)),
            p90_ms: ms(histogram.value_at_quantile(0.90)),
            p99_ms: ms(histogram.value_at_quantile(0.99)),
            p999_ms: ms(histogram.value_at_quantile(0.999)),
            max_ms: ms(histogram.max()),
        }
    }
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MICROS, SIGFIGS).expect("valid histogram bounds")
}

fn record(histogram: &mut Histogram<u64>, latency: Duration) {
    histogram.saturating_record((latency.as_micros() as u64).max(1));
}

struct Inner {
    latency: Histogram<u64>,
    rpc_latency: BTreeMap<Rpc, Histogram<u64>>,
    /// Keyed by the code's number (`Code` is not `Ord`).
    rpc_errors: BTreeMap<(Rpc, i32), u64>,
    failures: BTreeMap<String, u64>,
    failure_samples: Vec<String>,
    series: TimeSeries,
    started: u64,
    completed: u64,
    failed: u64,
}

/// Thread-safe recorder shared by the driver and the workers of one run.
pub struct Metrics {
    origin: Instant,
    inner: Mutex<Inner>,
}

/// A consistent copy of the counters, for the progress bar.
#[derive(Clone, Debug, Default)]
pub struct LiveCounts {
    pub started: u64,
    pub completed: u64,
    pub failed: u64,
    pub rpc_errors: u64,
    pub p99_ms: f64,
}

/// Everything recorded, frozen at the end of a run.
pub struct Snapshot {
    pub started: u64,
    pub completed: u64,
    pub failed: u64,
    pub latency: Percentiles,
    pub rpc_latency: BTreeMap<String, Percentiles>,
    /// `"Rpc/Code"` -> count.
    pub rpc_errors: BTreeMap<String, u64>,
    pub failures: BTreeMap<String, u64>,
    pub failure_samples: Vec<String>,
    pub timeline: Vec<SecondPoint>,
}

impl Metrics {
    /// `origin` is time zero of the run's time series.
    pub fn new(origin: Instant) -> Self {
        Self {
            origin,
            inner: Mutex::new(Inner {
                latency: new_histogram(),
                rpc_latency: BTreeMap::new(),
                rpc_errors: BTreeMap::new(),
                failures: BTreeMap::new(),
                failure_samples: Vec::new(),
                series: TimeSeries::default(),
                started: 0,
                completed: 0,
                failed: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the counters inconsistent in a way that
        // matters for a report, so keep recording.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `call`, recording its latency on success and its gRPC code on failure.
    pub async fn timed<T>(
        &self,
        rpc: Rpc,
        call: impl Future<Output = Result<T, Status>>,
    ) -> Result<T, Status> {
        let begun = Instant::now();
        let result = call.await;
        match &result {
            Ok(_) => self.record_rpc(rpc, begun.elapsed()),
            Err(status) => self.record_rpc_error(rpc, status.code()),
        }
        result
    }

    pub fn record_rpc(&self, rpc: Rpc, latency: Duration) {
        let mut inner = self.lock();
        record(
            inner.rpc_latency.entry(rpc).or_insert_with(new_histogram),
            latency,
        );
    }

    pub fn record_rpc_error(&self, rpc: Rpc, code: Code) {
        *self
            .lock()
            .rpc_errors
            .entry((rpc, code as i32))
            .or_default() += 1;
    }

    /// Successful calls of `rpc` so far.
    pub fn rpc_count(&self, rpc: Rpc) -> u64 {
        self.lock().rpc_latency.get(&rpc).map_or(0, |h| h.len())
    }

    pub fn record_started(&self) {
        self.lock().started += 1;
    }

    /// A workflow whose result verified, `latency` after it was due to start.
    pub fn record_completed(&self, latency: Duration) {
        let at = self.origin.elapsed();
        let mut inner = self.lock();
        inner.completed += 1;
        record(&mut inner.latency, latency);
        inner.series.record_completed(at, latency);
    }

    /// A workflow that did not end as expected; `cause` buckets it, `detail` is an example.
    pub fn record_failed(&self, cause: String, detail: String) {
        let at = self.origin.elapsed();
        let mut inner = self.lock();
        inner.failed += 1;
        *inner.failures.entry(cause).or_default() += 1;
        if inner.failure_samples.len() < FAILURE_SAMPLES && !inner.failure_samples.contains(&detail)
        {
            inner.failure_samples.push(detail);
        }
        inner.series.record_failed(at);
    }

    pub fn live(&self) -> LiveCounts {
        let inner = self.lock();
        LiveCounts {
            started: inner.started,
            completed: inner.completed,
            failed: inner.failed,
            rpc_errors: inner.rpc_errors.values().sum(),
            p99_ms: if inner.latency.is_empty() {
                0.0
            } else {
                inner.latency.value_at_quantile(0.99) as f64 / 1000.0
            },
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        let inner = self.lock();
        Snapshot {
            started: inner.started,
            completed: inner.completed,
            failed: inner.failed,
            latency: Percentiles::of(&inner.latency),
            rpc_latency: inner
                .rpc_latency
                .iter()
                .map(|(rpc, h)| (rpc.name().to_string(), Percentiles::of(h)))
                .collect(),
            rpc_errors: inner
                .rpc_errors
                .iter()
                .map(|((rpc, code), n)| (format!("{}/{:?}", rpc.name(), Code::from_i32(*code)), *n))
                .collect(),
            failures: inner.failures.clone(),
            failure_samples: inner.failure_samples.clone(),
            timeline: inner.series.points(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn timed_calls_record_latency_or_error_code() {
        let metrics = Metrics::new(Instant::now());
        let ok: Result<u32, Status> = metrics
            .timed(Rpc::StartWorkflowExecution, async {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok(1)
            })
            .await;
        assert_eq!(ok.unwrap(), 1);
        let err: Result<u32, Status> = metrics
            .timed(Rpc::StartWorkflowExecution, async {
                Err(Status::unavailable("down"))
            })
            .await;
        assert!(err.is_err());
        let snapshot = metrics.snapshot();
        let start = &snapshot.rpc_latency["StartWorkflowExecution"];
        assert_eq!(
            start.count, 1,
            "failed calls are not in the latency histogram"
        );
        assert!(start.p50_ms >= 20.0, "{start:?}");
        assert_eq!(
            snapshot
                .rpc_errors
                .get("StartWorkflowExecution/Unavailable"),
            Some(&1)
        );
    }

    #[test]
    fn failures_are_bucketed_with_distinct_samples() {
        let metrics = Metrics::new(Instant::now());
        for _ in 0..3 {
            metrics.record_failed("timeout".into(), "wf-1 timed out".into());
        }
        metrics.record_failed("wrong result".into(), "wf-2 returned 3".into());
        metrics.record_completed(Duration::from_millis(10));
        let snapshot = metrics.snapshot();
        assert_eq!(snapshot.failed, 4);
        assert_eq!(snapshot.completed, 1);
        assert_eq!(snapshot.failures["timeout"], 3);
        assert_eq!(snapshot.failure_samples.len(), 2);
        assert_eq!(snapshot.timeline[0].failed, 4);
        assert_eq!(snapshot.timeline[0].completed, 1);
    }
}
