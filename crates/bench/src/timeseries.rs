//! Per-second buckets of completions, failures and latency percentiles, for charts and for
//! spotting warm-up, stalls and queueing over a run.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Latencies are kept in microseconds up to an hour; two significant digits are plenty for a
/// per-second chart and keep each bucket small.
const BUCKET_MAX_MICROS: u64 = 3_600_000_000;
const BUCKET_SIGFIGS: u8 = 2;

/// One second of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SecondPoint {
    /// Seconds since the run started (the bucket `[second, second + 1)`).
    pub second: u64,
    /// Workflows that finished and verified in this second.
    pub completed: u64,
    /// Workflows that failed in this second.
    pub failed: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

struct Bucket {
    completed: u64,
    failed: u64,
    latency: Histogram<u64>,
}

impl Bucket {
    fn new() -> Self {
        Self {
            completed: 0,
            failed: 0,
            latency: Histogram::new_with_bounds(1, BUCKET_MAX_MICROS, BUCKET_SIGFIGS)
                .expect("valid histogram bounds"),
        }
    }
}

/// Outcomes bucketed by the second (since the run's start) in which they happened.
#[derive(Default)]
pub struct TimeSeries {
    buckets: Vec<Bucket>,
}

impl TimeSeries {
    fn bucket(&mut self, at: Duration) -> &mut Bucket {
        let index = at.as_secs() as usize;
        if self.buckets.len() <= index {
            self.buckets.resize_with(index + 1, Bucket::new);
        }
        &mut self.buckets[index]
    }

    /// A workflow that finished at `at` after `latency`.
    pub fn record_completed(&mut self, at: Duration, latency: Duration) {
        let bucket = self.bucket(at);
        bucket.completed += 1;
        bucket
            .latency
            .saturating_record((latency.as_micros() as u64).max(1));
    }

    pub fn record_failed(&mut self, at: Duration) {
        self.bucket(at).failed += 1;
    }

    /// Every second from the start to the last outcome, empty seconds included (a stall shows
    /// as a zero, not as a gap).
    pub fn points(&self) -> Vec<SecondPoint> {
        self.buckets
            .iter()
            .enumerate()
            .map(|(second, bucket)| {
                let ms = |quantile: f64| {
                    if bucket.latency.is_empty() {
                        0.0
                    } else {
                        bucket.latency.value_at_quantile(quantile) as f64 / 1000.0
                    }
                };
                SecondPoint {
                    second: second as u64,
                    completed: bucket.completed,
                    failed: bucket.failed,
                    p50_ms: ms(0.50),
                    p90_ms: ms(0.90),
                    p99_ms: ms(0.99),
                    max_ms: if bucket.latency.is_empty() {
                        0.0
                    } else {
                        bucket.latency.max() as f64 / 1000.0
                    },
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn outcomes_land_in_the_second_they_happened() {
        let mut series = TimeSeries::default();
        series.record_completed(ms(100), ms(5));
        series.record_completed(ms(999), ms(7));
        series.record_completed(ms(1000), ms(9));
        series.record_failed(ms(3500));
        let points = series.points();
        assert_eq!(
            points.len(),
            4,
            "seconds 0..=3, including the empty second 2"
        );
        assert_eq!(
            points.iter().map(|p| p.completed).collect::<Vec<_>>(),
            vec![2, 1, 0, 0]
        );
        assert_eq!(
            points.iter().map(|p| p.failed).collect::<Vec<_>>(),
            vec![0, 0, 0, 1]
        );
        assert_eq!(points[2].p99_ms, 0.0, "no latency in an empty second");
        assert_eq!(points[1].second, 1);
    }

    #[test]
    fn percentiles_follow_the_latency_distribution_within_a_second() {
        let mut series = TimeSeries::default();
        // 1..=100 ms: p50 ~ 50 ms, p90 ~ 90 ms, p99 ~ 99 ms, max 100 ms.
        for latency in 1..=100 {
            series.record_completed(ms(2000 + latency), ms(latency));
        }
        let point = &series.points()[2];
        assert_eq!(point.completed, 100);
        let close = |actual: f64, expected: f64| (actual - expected).abs() <= expected * 0.02;
        assert!(close(point.p50_ms, 50.0), "p50 {}", point.p50_ms);
        assert!(close(point.p90_ms, 90.0), "p90 {}", point.p90_ms);
        assert!(close(point.p99_ms, 99.0), "p99 {}", point.p99_ms);
        assert!(close(point.max_ms, 100.0), "max {}", point.max_ms);
        assert!(point.p50_ms < point.p90_ms && point.p90_ms < point.p99_ms);
    }
}
