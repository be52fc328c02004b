//! The live progress bar on stderr: completions, current rate, p99 and errors. Hidden when stderr
//! is not a terminal, so logs and CI output stay clean.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::driver::LoadPlan;
use crate::metrics::Metrics;

const REFRESH: Duration = Duration::from_millis(500);

pub struct Progress {
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl Progress {
    pub fn start(metrics: Arc<Metrics>, plan: &LoadPlan, label: &str, enabled: bool) -> Self {
        let (stop, mut stopped) = watch::channel(false);
        if !enabled || !std::io::stderr().is_terminal() {
            return Self { stop, task: None };
        }
        // Bounded by count: the bar counts workflows; by time: it counts seconds.
        let by_count = plan.count;
        let by_time = plan.duration.filter(|_| by_count.is_none());
        let length = by_count
            .or(by_time.map(|d| d.as_secs().max(1)))
            .unwrap_or(0);
        let bar = ProgressBar::with_draw_target(Some(length), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}",
            )
            .expect("valid template"),
        );
        bar.set_prefix(label.to_string());
        let task = tokio::spawn(async move {
            let begun = tokio::time::Instant::now();
            let mut ticker = tokio::time::interval(REFRESH);
            let mut last_done = 0u64;
            let mut last_tick = begun;
            loop {
                let finished = tokio::select! {
                    _ = stopped.changed() => true,
                    _ = ticker.tick() => false,
                };
                let live = metrics.live();
                let done = live.completed + live.failed;
                let now = tokio::time::Instant::now();
                let window = now.duration_since(last_tick).as_secs_f64().max(1e-3);
                let rate = (done - last_done) as f64 / window;
                last_done = done;
                last_tick = now;
                bar.set_position(match by_time {
                    Some(_) => now.duration_since(begun).as_secs(),
                    None => done,
                });
                let errors = live.failed + live.rpc_errors;
                bar.set_message(format!(
                    "{rate:.0} wf/s  p99 {:.1} ms  {}",
                    live.p99_ms,
                    if errors > 0 {
                        format!("ERRORS {errors}")
                    } else {
                        "no errors".into()
                    }
                ));
                if finished {
                    bar.finish_and_clear();
                    return;
                }
            }
        });
        Self {
            stop,
            task: Some(task),
        }
    }

    pub async fn finish(self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task {
            let _ = task.await;
        }
    }
}
