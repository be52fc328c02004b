//! The shard leader's background work.
//!
//! - Timer queue: fires due timer tasks by proposing `FireTimer`, sleeping until the earliest
//!   deadline (or until an applied command may have added an earlier one), so timers fire within
//!   a few milliseconds of their deadline.
//! - Outbox: hands workflow and activity tasks to matching. A row stays until its task starts,
//!   so tasks matching lost (restart, a dropped poll) are handed over again after a while.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chronicle_cluster::{TaskKind, TaskQueueKey, TaskRef};
use chronicle_proto::chronicle::history::v1::{self as cmd, shard_command};
use chronicle_proto::chronicle::persistence::v1 as pb;
use chronicle_types::time::now_millis;
use tokio::sync::watch;

use crate::engine::{HistoryEngine, Shard};
use crate::metrics_names;

/// How long a handed-over task may stay unstarted before it is handed over again.
const REDISPATCH_AFTER: Duration = Duration::from_secs(10);
/// Longest sleep of an idle processor (leadership changes are noticed within this).
const IDLE_WAIT: Duration = Duration::from_millis(500);
const TIMER_BATCH: usize = 256;
const OUTBOX_BATCH: usize = 1000;

pub(crate) fn spawn(
    engine: Arc<HistoryEngine>,
    shard: Arc<Shard>,
    shutdown: watch::Receiver<bool>,
) {
    tokio::spawn(timer_loop(engine.clone(), shard.clone(), shutdown.clone()));
    tokio::spawn(outbox_loop(engine, shard, shutdown));
}

async fn wait_for_change(
    changes: &mut watch::Receiver<u64>,
    shutdown: &mut watch::Receiver<bool>,
    max: Duration,
) {
    tokio::select! {
        _ = changes.changed() => {}
        _ = shutdown.changed() => {}
        _ = tokio::time::sleep(max) => {}
    }
}

async fn timer_loop(
    engine: Arc<HistoryEngine>,
    shard: Arc<Shard>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut changes = shard.changes.clone();
    loop {
        if *shutdown.borrow() {
            return;
        }
        if !engine.is_leader(&shard) {
            wait_for_change(&mut changes, &mut shutdown, IDLE_WAIT).await;
            continue;
        }
        changes.borrow_and_update();
        let now = now_millis();
        let due = match shard.tables.timers_until(now, TIMER_BATCH) {
            Ok(due) => due,
            Err(e) => {
                tracing::error!(shard = shard.id, error = %e, "reading due timers failed");
                tokio::time::sleep(IDLE_WAIT).await;
                continue;
            }
        };
        if !due.is_empty() {
            // Fired concurrently so that their log appends share fsyncs.
            let fires = due.into_iter().map(|(key, task)| {
                let engine = engine.clone();
                let shard = shard.clone();
                async move {
                    let deadline = chronicle_storage::keys::timer_fire_time(&key);
                    let kind = pb::timer_task::Kind::try_from(task.kind).unwrap_or_default().as_str_name();
                    let fire = cmd::FireTimer { key, task: Some(task), new_run_id: uuid::Uuid::new_v4().to_string() };
                    match engine.propose(&shard, shard_command::Kind::FireTimer(fire)).await {
                        Ok(_) => {
                            metrics::counter!(metrics_names::TIMER_TASKS_FIRED, "kind" => kind).increment(1);
                            metrics::histogram!(metrics_names::TIMER_TASK_LATENCY).record((now_millis() - deadline).max(0) as f64 / 1000.0);
                        }
                        Err(e) => tracing::debug!(shard = shard.id, error = %e.message, "firing a timer failed; it stays due"),
                    }
                }
            });
            futures_join_all(fires).await;
            continue;
        }
        let wait = match shard.tables.next_timer_time() {
            Ok(Some(next)) => Duration::from_millis(
                (next - now_millis()).clamp(0, IDLE_WAIT.as_millis() as i64) as u64,
            ),
            _ => IDLE_WAIT,
        };
        wait_for_change(&mut changes, &mut shutdown, wait).await;
    }
}

async fn futures_join_all<F: std::future::Future<Output = ()> + Send + 'static>(
    futures: impl Iterator<Item = F>,
) {
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    for h in handles {
        let _ = h.await;
    }
}

async fn outbox_loop(
    engine: Arc<HistoryEngine>,
    shard: Arc<Shard>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut changes = shard.changes.clone();
    // Outbox key -> when it was last handed to matching (this leadership term only).
    let mut handed: HashMap<Vec<u8>, Instant> = HashMap::new();
    let mut was_leader = false;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let leader = engine.is_leader(&shard);
        if !leader {
            was_leader = false;
            handed.clear();
            wait_for_change(&mut changes, &mut shutdown, IDLE_WAIT).await;
            continue;
        }
        if !was_leader {
            was_leader = true;
        }
        changes.borrow_and_update();
        let rows = match shard.tables.outbox(OUTBOX_BATCH) {
            Ok(rows) => rows,
            Err(e) => {
                tracing::error!(shard = shard.id, error = %e, "reading the outbox failed");
                tokio::time::sleep(IDLE_WAIT).await;
                continue;
            }
        };
        let present: std::collections::HashSet<&Vec<u8>> = rows.iter().map(|(k, _)| k).collect();
        handed.retain(|k, _| present.contains(k));
        for (key, task) in &rows {
            if handed
                .get(key)
                .is_some_and(|at| at.elapsed() < REDISPATCH_AFTER)
            {
                continue;
            }
            let outbox_id = u64::from_be_bytes(key[key.len() - 8..].try_into().unwrap_or([0; 8]));
            let kind = if task.kind == pb::outbox_task::Kind::ActivityTask as i32 {
                TaskKind::Activity
            } else {
                TaskKind::Workflow
            };
            let queue = TaskQueueKey {
                namespace_id: task.namespace_id.clone(),
                name: task.task_queue.clone(),
                kind,
            };
            let task_ref = TaskRef {
                namespace_id: task.namespace_id.clone(),
                workflow_id: task.workflow_id.clone(),
                run_id: task.run_id.clone(),
                scheduled_event_id: task.scheduled_event_id,
                attempt: task.attempt,
                outbox_id,
                shard: shard.id,
                // Schedule-to-start is enforced by a history timer, not by matching.
                expires_at_ms: 0,
            };
            match engine.matching.add_task(queue, task_ref).await {
                Ok(()) => {
                    metrics::counter!(metrics_names::TRANSFER_TASKS_DISPATCHED).increment(1);
                    handed.insert(key.clone(), Instant::now());
                }
                Err(e) => {
                    tracing::warn!(shard = shard.id, error = %e.message, "handing a task to matching failed; will retry")
                }
            }
        }
        // Wake on new rows, or when the oldest handed-over row is due to be handed over again.
        let wait = handed
            .values()
            .map(|at| REDISPATCH_AFTER.saturating_sub(at.elapsed()))
            .min()
            .unwrap_or(REDISPATCH_AFTER)
            .min(Duration::from_secs(2));
        wait_for_change(
            &mut changes,
            &mut shutdown,
            wait.max(Duration::from_millis(50)),
        )
        .await;
    }
}
