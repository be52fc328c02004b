//! What matching reports about its partitions: the backlog gauges Temporal's matching exports
//! per partition (`approximate_backlog_count`, `approximate_backlog_age_seconds`), set when
//! `/metrics` is scraped, and `no_poller_tasks`, counted as tasks arrive.
//!
//! Queues are keyed by namespace ID; the metrics carry the namespace's name, learned from polls
//! and, for a queue nobody polled yet, from history's namespace list (at most one lookup every
//! few seconds, only for an ID not seen before).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chronicle_cluster::{TaskKind, TaskQueueKey};

use crate::MatchingEngine;
use crate::metric_defs::{self, PartitionBacklog};
use crate::queue::Queue;

/// Least time between two lookups of history's namespace list.
const NAMESPACE_LOOKUP_EVERY: Duration = Duration::from_secs(5);

/// When a queue was first held in memory (Temporal: the partition's load time).
#[derive(Clone, Copy)]
pub(crate) struct LoadedAt(pub(crate) Instant);

impl Default for LoadedAt {
    fn default() -> Self {
        Self(Instant::now())
    }
}

/// Namespace names by ID, and the partitions whose gauges were set (a partition forgotten since
/// is reported empty once, as Temporal zeroes an unloaded partition's gauges).
#[derive(Default)]
pub(crate) struct BacklogReporter {
    namespace_names: HashMap<String, String>,
    last_lookup: Option<Instant>,
    reported: HashMap<TaskQueueKey, PartitionBacklog>,
}

fn task_type(kind: TaskKind) -> &'static str {
    match kind {
        TaskKind::Workflow => "Workflow",
        TaskKind::Activity => "Activity",
        TaskKind::Nexus => "Nexus",
    }
}

impl Queue {
    /// Whether a poll waits now or arrived within `window`.
    pub(crate) fn polled_within(&self, window: Duration) -> bool {
        self.pollers.iter().any(|p| !p.is_closed())
            || self
                .recent_pollers
                .values()
                .any(|(at, _)| at.elapsed() < window)
    }

    /// Temporal's no-poller condition: the partition has been loaded for longer than `threshold`
    /// and nobody polled it in that time.
    pub(crate) fn has_no_recent_poller(&self, threshold: Duration) -> bool {
        self.loaded_at.0.elapsed() > threshold && !self.polled_within(threshold)
    }

    fn backlog_age_seconds(&self) -> f64 {
        self.tasks
            .front()
            .and_then(|t| self.queued.get(&(t.shard, t.outbox_id)))
            .map_or(0.0, |at| at.elapsed().as_secs_f64())
    }
}

impl MatchingEngine {
    fn reporter(&self) -> std::sync::MutexGuard<'_, BacklogReporter> {
        self.backlog_reporter
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Remembers a namespace's name (every poll carries both).
    pub(crate) fn learn_namespace(&self, namespace_id: &str, name: &str) {
        if name.is_empty() {
            return;
        }
        let mut reporter = self.reporter();
        if reporter
            .namespace_names
            .get(namespace_id)
            .map(String::as_str)
            != Some(name)
        {
            reporter
                .namespace_names
                .insert(namespace_id.to_string(), name.to_string());
        }
    }

    /// What a poll tells the metrics: its namespace's name and, for a sticky queue, the normal
    /// queue it belongs to.
    pub(crate) fn note_poll(
        &self,
        key: &TaskQueueKey,
        namespace: &str,
        task_queue: Option<&chronicle_proto::temporal::api::taskqueue::v1::TaskQueue>,
    ) {
        self.learn_namespace(&key.namespace_id, namespace);
        if let Some(q) = task_queue.filter(|q| {
            q.kind == chronicle_proto::temporal::api::enums::v1::TaskQueueKind::Sticky as i32
        }) {
            let mut queues = self.queues.lock().expect("matching lock");
            let queue = queues.entry(key.clone()).or_default();
            if queue.sticky_normal_name.as_deref() != Some(q.normal_name.as_str()) {
                queue.sticky_normal_name = Some(q.normal_name.clone());
            }
        }
    }

    /// The name of namespace `namespace_id` if this node learned it (from a poll or history's
    /// namespace list), without asking history.
    pub fn known_namespace_name(&self, namespace_id: &str) -> Option<String> {
        self.reporter().namespace_names.get(namespace_id).cloned()
    }

    /// The name of namespace `namespace_id`, asking history when it was never seen here.
    pub(crate) async fn namespace_name(&self, namespace_id: &str) -> Option<String> {
        {
            let mut reporter = self.reporter();
            if let Some(name) = reporter.namespace_names.get(namespace_id) {
                return Some(name.clone());
            }
            if reporter
                .last_lookup
                .is_some_and(|at| at.elapsed() < NAMESPACE_LOOKUP_EVERY)
            {
                return None;
            }
            reporter.last_lookup = Some(Instant::now());
        }
        let records = self.history().ok()?.list_namespaces().await.ok()?;
        let mut reporter = self.reporter();
        for record in records {
            if let Some(info) = record.info {
                reporter.namespace_names.insert(info.id, info.name);
            }
        }
        reporter.namespace_names.get(namespace_id).cloned()
    }

    /// After a task was added to `queue`: learns its namespace's name if this node does not know
    /// it yet (the backlog gauges need it), and counts the task as a `no_poller_tasks` when it
    /// went to a partition nobody polled lately.
    pub(crate) async fn task_added(&self, queue: &TaskQueueKey, no_recent_poller: bool) {
        let namespace = self.namespace_name(&queue.namespace_id).await;
        if let (true, Some(namespace)) = (no_recent_poller, namespace) {
            metric_defs::record_no_poller_task(&namespace, &queue.name, task_type(queue.kind));
        }
    }

    /// Sets the backlog gauges of every partition held here, and zeroes those of partitions
    /// forgotten since the last scrape.
    pub fn record_backlog_gauges(&self) {
        let mut backlogs = HashMap::new();
        {
            let queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
            let reporter = self.reporter();
            for (key, q) in queues.iter() {
                let Some(namespace) = reporter.namespace_names.get(&key.namespace_id) else {
                    continue;
                };
                if q.sticky_normal_name.as_deref() == Some("") {
                    // A sticky queue no poll reached yet: its normal queue is not known.
                    continue;
                }
                let (taskqueue, partition) = metric_defs::queue_and_partition(
                    &key.name,
                    q.sticky_normal_name.is_some(),
                    q.sticky_normal_name.as_deref(),
                );
                let backlog = PartitionBacklog {
                    namespace: namespace.clone(),
                    taskqueue,
                    partition,
                    task_type: task_type(key.kind),
                    count: q.tasks.len(),
                    oldest_age_seconds: q.backlog_age_seconds(),
                };
                backlogs.insert(key.clone(), backlog);
            }
        }
        let mut reporter = self.reporter();
        for (key, gone) in reporter.reported.drain() {
            if !backlogs.contains_key(&key) {
                metric_defs::record_backlog(&PartitionBacklog {
                    count: 0,
                    oldest_age_seconds: 0.0,
                    ..gone
                });
            }
        }
        for backlog in backlogs.values() {
            metric_defs::record_backlog(backlog);
        }
        reporter.reported = backlogs;
    }
}
