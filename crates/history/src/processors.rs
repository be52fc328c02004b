//! The shard leader's background work.
//!
//! - Timer queue: fires due timer tasks by proposing `FireTimer`, sleeping until the earliest
//!   deadline (or until an applied command may have added an earlier one), so timers fire within
//!   a few milliseconds of their deadline.
//! - Outbox: hands workflow and activity tasks to matching. A row stays until its task starts,
//!   so tasks matching lost (restart, a dropped poll) are handed over again after a while.
//!   Transfer tasks (children, parent close policies, external signals and cancellations) are
//!   run here instead, concurrently (see `crate::transfer`); one that fails runs again at the
//!   next sweep.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chronicle_cluster::{TaskKind, TaskQueueKey, TaskRef};
use chronicle_proto::chronicle::history::v1::{self as cmd, shard_command};
use chronicle_proto::chronicle::persistence::v1 as pb;
use chronicle_types::time::now_millis;
use tokio::sync::watch;

use crate::engine::{HistoryEngine, Shard};
use crate::metric_defs;

/// How long a handed-over task may stay unstarted before it is handed over again.
const REDISPATCH_AFTER: Duration = Duration::from_secs(10);
/// Longest sleep of an idle processor (leadership changes are noticed within this).
const IDLE_WAIT: Duration = Duration::from_millis(500);
const TIMER_BATCH: usize = 256;
/// Pause after a round in which no due timer could be fired.
const FIRE_RETRY_PAUSE: Duration = Duration::from_millis(100);
const OUTBOX_BATCH: usize = 1000;
/// How often the outbox is swept for tasks to hand over again.
const SWEEP_EVERY: Duration = Duration::from_secs(2);
/// At most one "handing tasks to matching failed" warning per shard this often.
const DISPATCH_WARNING_EVERY: Duration = Duration::from_secs(10);

pub(crate) fn spawn(
    engine: Arc<HistoryEngine>,
    shard: Arc<Shard>,
    shutdown: watch::Receiver<bool>,
) {
    tokio::spawn(timer_loop(engine.clone(), shard.clone(), shutdown.clone()));
    crate::retention::spawn(engine.clone(), shard.clone(), shutdown.clone());
    tokio::spawn(crate::batch::executor::run(
        engine.clone(),
        shard.clone(),
        shutdown.clone(),
    ));
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
    // No timer fires before `floor`: fired timers leave deletion tombstones at the front of the
    // timers range, and seeking past them keeps each look at the queue cheap. It starts at the
    // beginning whenever this node (again) leads the shard, and drops to the fire time of any
    // timer added since the last look (the applier reports them).
    let mut floor = i64::MIN;
    // When the queue must be read next: the earliest live timer as of the last read, lowered by
    // timers added since. Between those points an applied command costs this loop one atomic
    // read, not a seek (timers deleted early, with the task or activity that armed them, leave
    // tombstones ahead of `now` that every seek would have to walk).
    let mut next_read = i64::MIN;
    let mut was_leader = false;
    // Timer key -> when this leader first tried to fire it (`task_latency` spans the attempts)
    // and how many attempts it made (`task_attempt`).
    let mut first_attempts: HashMap<Vec<u8>, (i64, u32)> = HashMap::new();
    loop {
        if *shutdown.borrow() || shard.retired.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        if !engine.is_leader(&shard) {
            was_leader = false;
            first_attempts.clear();
            shard
                .queue_ages
                .oldest_due_timer_ms
                .store(i64::MAX, std::sync::atomic::Ordering::Relaxed);
            wait_for_change(&mut changes, &mut shutdown, IDLE_WAIT).await;
            continue;
        }
        if !was_leader {
            was_leader = true;
            floor = i64::MIN;
            next_read = i64::MIN;
        }
        changes.borrow_and_update();
        let added = shard
            .timer_floor
            .swap(i64::MAX, std::sync::atomic::Ordering::SeqCst);
        floor = floor.min(added);
        next_read = next_read.min(added);
        let now = now_millis();
        if now < next_read {
            let wait = Duration::from_millis(
                next_read
                    .saturating_sub(now)
                    .min(IDLE_WAIT.as_millis() as i64) as u64,
            );
            wait_for_change(&mut changes, &mut shutdown, wait).await;
            continue;
        }
        let due = match shard.tables.timers_between(floor, now, TIMER_BATCH) {
            Ok(due) => due,
            Err(e) => {
                tracing::error!(shard = shard.id, error = %e, "reading due timers failed");
                tokio::time::sleep(IDLE_WAIT).await;
                continue;
            }
        };
        // Everything before the first due timer is gone; when nothing is due, everything up to
        // now is (timers added meanwhile lower the floor again through the notifier).
        floor = due
            .first()
            .map(|(key, _)| chronicle_storage::keys::timer_fire_time(key))
            .unwrap_or(now.saturating_add(1));
        shard.queue_ages.oldest_due_timer_ms.store(
            due.first().map_or(i64::MAX, |(key, _)| {
                chronicle_storage::keys::timer_fire_time(key)
            }),
            std::sync::atomic::Ordering::Relaxed,
        );
        if due.len() < TIMER_BATCH {
            // Every due timer was read: those no longer due fired (or were deleted).
            let due_keys: std::collections::HashSet<&Vec<u8>> =
                due.iter().map(|(k, _)| k).collect();
            first_attempts.retain(|k, _| due_keys.contains(k));
        }
        if !due.is_empty() {
            let attempt_ms = now_millis();
            // Fired concurrently so that their log appends share fsyncs.
            let fires = due.into_iter().map(|(key, task)| {
                let engine = engine.clone();
                let shard = shard.clone();
                let (first_attempt_ms, attempts) = {
                    let entry = first_attempts.entry(key.clone()).or_insert((attempt_ms, 0));
                    entry.1 = entry.1.saturating_add(1);
                    *entry
                };
                async move {
                    let deadline = chronicle_storage::keys::timer_fire_time(&key);
                    let kind = pb::timer_task::Kind::try_from(task.kind).unwrap_or_default().as_str_name();
                    let task_type = metric_defs::timer_task_type(task.kind);
                    let namespace = engine.namespace_name(&task.namespace_id);
                    let fire = cmd::FireTimer { key, task: Some(task), new_run_id: chronicle_types::new_run_id() };
                    let started = Instant::now();
                    let fired = engine.propose(&shard, shard_command::Kind::FireTimer(fire)).await;
                    metric_defs::record_task(task_type, namespace.clone(), started, fired.is_ok());
                    match fired {
                        Ok(_) => {
                            metric_defs::record_task_done(task_type, namespace, first_attempt_ms, deadline, attempts);
                            metrics::counter!(metric_defs::TIMER_TASKS_FIRED, "kind" => kind).increment(1);
                            metrics::histogram!(metric_defs::TIMER_TASK_LATENCY).record(now_millis().saturating_sub(deadline).max(0) as f64 / 1000.0);
                            true
                        }
                        Err(e) => {
                            tracing::debug!(shard = shard.id, error = %e.message, "firing a timer failed; it stays due");
                            false
                        }
                    }
                }
            });
            let fired = futures_join_all(fires).await;
            if fired == 0 {
                // Every fire failed (no leader, shutting down): they stay due; do not spin.
                tokio::time::sleep(FIRE_RETRY_PAUSE).await;
            }
            // Read again at once: more may be due (or a fire failed and stays due).
            next_read = i64::MIN;
            continue;
        }
        next_read = match shard.tables.next_timer_time_from(floor) {
            Ok(next) => next.unwrap_or(i64::MAX),
            Err(e) => {
                tracing::error!(shard = shard.id, error = %e, "reading the timer queue failed");
                now + IDLE_WAIT.as_millis() as i64
            }
        };
        let wait = Duration::from_millis(
            next_read
                .saturating_sub(now_millis())
                .clamp(0, IDLE_WAIT.as_millis() as i64) as u64,
        );
        wait_for_change(&mut changes, &mut shutdown, wait).await;
    }
}

/// Runs the futures concurrently; how many of them returned `true`.
async fn futures_join_all<F: std::future::Future<Output = bool> + Send + 'static>(
    futures: impl Iterator<Item = F>,
) -> usize {
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut succeeded = 0;
    for h in handles {
        if matches!(h.await, Ok(true)) {
            succeeded += 1;
        }
    }
    succeeded
}

async fn outbox_loop(
    engine: Arc<HistoryEngine>,
    shard: Arc<Shard>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut changes = shard.changes.clone();
    // Outbox key -> when it was last handed to matching (this leadership term only), and where
    // it went (`MatchingService::task_placement`): when its partition moves to another matching
    // node (one left or joined the ring), or its node left and came back with empty queues, the
    // copy handed over may be lost or out of its pollers' reach, so the task is handed over
    // again at once. A change of placement starts a sweep, which looks at every row.
    let mut handed: HashMap<Vec<u8>, (Instant, u64)> = HashMap::new();
    let mut generation = engine.matching.placement_generation();
    let mut was_leader = false;
    // Two cursors over the outbox. Task IDs only grow and rows are only ever deleted, so
    // - `next_new` is the first ID not looked at yet: each wake-up reads only rows added since,
    //   which keeps the cost per applied command independent of how many rows are waiting;
    // - `floor` is the first row still present at the last sweep: the periodic sweep that hands
    //   over again what matching may have lost starts there, skipping the deletion tombstones of
    //   started tasks below it.
    let mut next_new: u64 = 0;
    let mut floor: u64 = 0;
    let mut last_sweep = Instant::now();
    let transfers = Arc::new(crate::transfer::TransferTracker::default());
    // Dispatch failures since the last warning, and when it was logged.
    let mut dispatch_failures: u64 = 0;
    let mut last_dispatch_warning: Option<Instant> = None;
    // Outbox ID -> (when this leader first read the row, when its task became visible: the
    // commit of the command that wrote it). The oldest visible row's age is a gauge.
    let mut first_seen: std::collections::BTreeMap<u64, (i64, i64)> =
        std::collections::BTreeMap::new();
    // Outbox ID -> attempts this leader made to run or hand over the task (`task_attempt`).
    let mut attempts: HashMap<u64, u32> = HashMap::new();
    loop {
        if *shutdown.borrow() || shard.retired.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        if !engine.is_leader(&shard) {
            was_leader = false;
            handed.clear();
            first_seen.clear();
            attempts.clear();
            shard
                .queue_ages
                .oldest_outbox_task_ms
                .store(i64::MAX, std::sync::atomic::Ordering::Relaxed);
            transfers.clear();
            wait_for_change(&mut changes, &mut shutdown, IDLE_WAIT).await;
            continue;
        }
        if !was_leader {
            // A new term: everything present is handed over (again).
            was_leader = true;
            next_new = 0;
            floor = 0;
            last_sweep = Instant::now();
        }
        changes.borrow_and_update();
        let current_generation = engine.matching.placement_generation();
        let placement_moved = current_generation != generation;
        if placement_moved {
            generation = current_generation;
            metrics::counter!(metric_defs::MATCHING_PLACEMENT_CHANGES).increment(1);
        }
        let sweep = placement_moved || last_sweep.elapsed() >= SWEEP_EVERY;
        let from = if sweep { floor } else { next_new };
        let rows = match shard.tables.outbox_from(from, OUTBOX_BATCH) {
            Ok(rows) => rows,
            Err(e) => {
                tracing::error!(shard = shard.id, error = %e, "reading the outbox failed");
                tokio::time::sleep(IDLE_WAIT).await;
                continue;
            }
        };
        if let Some((key, _)) = rows.last() {
            next_new = next_new.max(outbox_id_of(key) + 1);
        }
        if sweep {
            last_sweep = Instant::now();
            floor = rows.first().map_or(next_new, |(key, _)| outbox_id_of(key));
            if rows.len() < OUTBOX_BATCH {
                // A complete sweep: forget rows that are gone (their tasks started).
                let present: std::collections::HashSet<&Vec<u8>> =
                    rows.iter().map(|(k, _)| k).collect();
                handed.retain(|k, _| present.contains(k));
                let present_ids: std::collections::HashSet<u64> =
                    rows.iter().map(|(k, _)| outbox_id_of(k)).collect();
                first_seen.retain(|id, _| present_ids.contains(id));
                attempts.retain(|id, _| present_ids.contains(id));
                transfers.forget_absent(&present_ids);
            }
            // Rows below the first one present are gone (IDs only grow, rows are only deleted).
            first_seen = first_seen.split_off(&floor);
            attempts.retain(|id, _| *id >= floor);
        }
        let seen_at = chronicle_types::time::now_millis();
        for (key, task) in &rows {
            first_seen
                .entry(outbox_id_of(key))
                .or_insert_with(|| (seen_at, metric_defs::outbox_visible_ms(task, seen_at)));
        }
        shard.queue_ages.oldest_outbox_task_ms.store(
            // IDs grow with the commits, so the first row is the one visible longest.
            first_seen
                .values()
                .next()
                .map_or(i64::MAX, |(_, visible)| *visible),
            std::sync::atomic::Ordering::Relaxed,
        );
        let more = rows.len() >= OUTBOX_BATCH;
        for (key, task) in &rows {
            if crate::transfer::is_transfer(task.kind) {
                let id = outbox_id_of(key);
                if transfers.begin(id) {
                    let (engine, shard, transfers) =
                        (engine.clone(), shard.clone(), transfers.clone());
                    let (read_at_ms, visible_ms) =
                        first_seen.get(&id).copied().unwrap_or((seen_at, seen_at));
                    let attempt = next_attempt(&mut attempts, id);
                    let task = task.clone();
                    tokio::spawn(async move {
                        let started = Instant::now();
                        let result = crate::transfer::execute(&engine, &shard, id, &task).await;
                        let task_type = metric_defs::transfer_task_type(task.kind);
                        let namespace = engine.namespace_name(&task.namespace_id);
                        metric_defs::record_task(
                            task_type,
                            namespace.clone(),
                            started,
                            result.is_ok(),
                        );
                        if result.is_ok() {
                            metric_defs::record_task_done(
                                task_type, namespace, read_at_ms, visible_ms, attempt,
                            );
                        }
                        if let Err(e) = &result {
                            tracing::debug!(shard = shard.id, error = %e.message, "transfer task failed; it runs again at the next sweep");
                        }
                        metrics::counter!(metric_defs::TRANSFER_TASKS_EXECUTED, "outcome" => if result.is_ok() { "ok" } else { "retry" }).increment(1);
                        transfers.finish(id, result.is_ok());
                    });
                }
                continue;
            }
            let worker_commands = task.kind == pb::outbox_task::Kind::WorkerCommands as i32;
            let expires_at_ms = if worker_commands {
                crate::worker_commands::expires_at_ms(task)
            } else {
                // Schedule-to-start is enforced by a history timer, not by matching.
                0
            };
            if worker_commands && expires_at_ms <= seen_at {
                // Nobody took the commands in time (their worker is gone): dropped, as Temporal
                // drops them after its last dispatch attempt.
                if transfers.begin(outbox_id_of(key)) {
                    let (engine, shard, transfers) =
                        (engine.clone(), shard.clone(), transfers.clone());
                    let id = outbox_id_of(key);
                    let task = task.clone();
                    tokio::spawn(async move {
                        let dropped = crate::transfer::complete(&engine, &shard, id).await;
                        if dropped.is_ok() {
                            crate::worker_commands::record_sent(&engine, &task, "no_poller");
                        }
                        transfers.finish(id, dropped.is_ok());
                    });
                }
                continue;
            }
            let (kind, queue_namespace_id) = match pb::outbox_task::Kind::try_from(task.kind) {
                Ok(pb::outbox_task::Kind::ActivityTask) => (TaskKind::Activity, &task.namespace_id),
                // A Nexus start request goes to the endpoint's handler namespace.
                Ok(pb::outbox_task::Kind::NexusTask | pb::outbox_task::Kind::NexusCancel) => {
                    (TaskKind::Nexus, &task.target_namespace_id)
                }
                // Worker commands: a Nexus task on the worker process's control queue.
                Ok(pb::outbox_task::Kind::WorkerCommands) => (TaskKind::Nexus, &task.namespace_id),
                _ => (TaskKind::Workflow, &task.namespace_id),
            };
            let queue = TaskQueueKey {
                namespace_id: queue_namespace_id.clone(),
                name: task.task_queue.clone(),
                kind,
            };
            let task_ref = TaskRef {
                namespace_id: task.namespace_id.clone(),
                workflow_id: task.workflow_id.clone(),
                run_id: task.run_id.clone(),
                scheduled_event_id: task.scheduled_event_id,
                attempt: task.attempt,
                outbox_id: outbox_id_of(key),
                shard: shard.id,
                expires_at_ms,
                sticky: task.task_queue_kind
                    == chronicle_proto::temporal::api::enums::v1::TaskQueueKind::Sticky as i32,
                worker_commands,
            };
            let placement = engine.matching.task_placement(&queue, &task_ref);
            if handed
                .get(key)
                .is_some_and(|(at, under)| *under == placement && at.elapsed() < REDISPATCH_AFTER)
            {
                continue;
            }
            let attempt = next_attempt(&mut attempts, outbox_id_of(key));
            let started = Instant::now();
            let measure = metric_defs::RequestTimer::new(
                "matching",
                match kind {
                    TaskKind::Activity => "AddActivityTask",
                    TaskKind::Nexus => "AddNexusTask",
                    _ => "AddWorkflowTask",
                },
                engine.namespace_name(&task.namespace_id),
            );
            let added = match chronicle_storage::failpoint::check(
                chronicle_storage::failpoint::names::OUTBOX_DISPATCH,
                shard.tables.db().path(),
            ) {
                Err(e) => Err(chronicle_types::ApiError::unavailable(e)),
                Ok(()) => engine.matching.add_task(queue, task_ref).await,
            };
            drop(measure);
            let task_type = metric_defs::transfer_task_type(task.kind);
            let namespace = engine.namespace_name(&task.namespace_id);
            metric_defs::record_task(task_type, namespace.clone(), started, added.is_ok());
            match added {
                Ok(()) => {
                    metrics::counter!(metric_defs::TRANSFER_TASKS_DISPATCHED).increment(1);
                    let handed_before = handed.insert(key.clone(), (Instant::now(), placement));
                    if handed_before.is_none() {
                        // Done once matching has it (handing it over again is a retry).
                        let (read_at_ms, visible_ms) = first_seen
                            .get(&outbox_id_of(key))
                            .copied()
                            .unwrap_or((seen_at, seen_at));
                        metric_defs::record_task_done(
                            task_type, namespace, read_at_ms, visible_ms, attempt,
                        );
                    }
                }
                Err(e) => {
                    // Not in `handed`: the next sweep hands it over again. Under overload every
                    // row of a sweep fails alike: one warning per shard every 10 s, with how many
                    // failed since, not one line per row (an overload test wrote 65,000 lines).
                    dispatch_failures += 1;
                    if last_dispatch_warning.is_none_or(|at| at.elapsed() >= DISPATCH_WARNING_EVERY)
                    {
                        tracing::warn!(
                            shard = shard.id,
                            namespace_id = %task.namespace_id,
                            task_queue = %task.task_queue,
                            failures = dispatch_failures,
                            error = %e.message,
                            "handing tasks to matching failed; they are handed over again at the next sweep"
                        );
                        last_dispatch_warning = Some(Instant::now());
                        dispatch_failures = 0;
                    }
                }
            }
        }
        if more {
            continue;
        }
        // Wake on new rows, or for the next sweep.
        wait_for_change(
            &mut changes,
            &mut shutdown,
            SWEEP_EVERY
                .saturating_sub(last_sweep.elapsed())
                .max(Duration::from_millis(10)),
        )
        .await;
    }
}

/// The task ID at the end of an outbox key.
fn outbox_id_of(key: &[u8]) -> u64 {
    key.len()
        .checked_sub(8)
        .and_then(|start| key[start..].try_into().ok())
        .map_or(0, u64::from_be_bytes)
}

/// Counts one more attempt of outbox task `id` and returns its number.
fn next_attempt(attempts: &mut HashMap<u64, u32>, id: u64) -> u32 {
    let count = attempts.entry(id).or_insert(0);
    *count = count.saturating_add(1);
    *count
}
