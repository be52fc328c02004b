//! Tasks arriving from history: handed to a waiting poll or queued (and a child partition's
//! backlog forwarded to the root), and the tasks of a sticky queue whose worker shut down.

use std::time::{Duration, Instant};

use chronicle_cluster::partition::parse_partition;
use chronicle_cluster::{TaskKind, TaskQueueKey, TaskRef};
use chronicle_proto::temporal::api::enums::v1::{ResourceExhaustedCause, ResourceExhaustedScope};
use chronicle_types::{ApiError, ApiResult};

use crate::MatchingEngine;
use crate::metric_defs;
use crate::queue::Dispatch;

/// How long a shut-down sticky queue is remembered (history stops using it at the first task).
const CLOSED_STICKY_MEMORY: Duration = Duration::from_secs(600);

impl MatchingEngine {
    pub(super) async fn add_task_op(&self, queue: TaskQueueKey, task: TaskRef) -> ApiResult<()> {
        if self
            .closed_sticky
            .lock()
            .expect("matching lock")
            .contains_key(&queue)
        {
            return self.history()?.sticky_worker_unavailable(&task).await;
        }
        let is_child_partition = parse_partition(&queue.name).1 != 0;
        let mut start_drainer = false;
        let no_recent_poller;
        let back_to_history = {
            let mut queues = self.queues.lock().expect("matching lock");
            let q = queues.entry(queue.clone()).or_default();
            if q.queued.contains_key(&(task.shard, task.outbox_id)) {
                return Ok(());
            }
            no_recent_poller =
                !task.sticky && q.has_no_recent_poller(self.limits.no_poller_threshold);
            if task.sticky && q.sticky_normal_name.is_none() {
                // Sticky, its normal queue not known until its worker polls it.
                q.sticky_normal_name = Some(String::new());
            }
            // A sticky queue nobody polls (its worker is gone, or this node restarted and has
            // not seen it since): the task goes back to history for the normal queue now rather
            // than after the sticky schedule-to-start timeout, as in Temporal.
            if task.sticky && !q.has_recent_poller() {
                Some(task)
            } else {
                if let Some(Dispatch::Task(task)) = q.offer(Dispatch::Task(task)) {
                    if q.tasks.len() >= self.limits.max_backlog_per_queue {
                        metrics::counter!(metric_defs::TASKS_REFUSED).increment(1);
                        // History keeps it in its outbox and offers it again later.
                        return Err(ApiError::resource_exhausted_for(
                            format!(
                                "the task queue's backlog is full (limit {})",
                                self.limits.max_backlog_per_queue
                            ),
                            ResourceExhaustedCause::SystemOverloaded,
                            ResourceExhaustedScope::System,
                        ));
                    }
                    q.queued
                        .insert((task.shard, task.outbox_id), Instant::now());
                    q.tasks.push_back(task);
                    metrics::counter!(metric_defs::TASKS_QUEUED).increment(1);
                    if is_child_partition && !q.draining {
                        q.draining = true;
                        start_drainer = true;
                    }
                }
                None
            }
        };
        self.task_added(&queue, no_recent_poller).await;
        if start_drainer {
            self.spawn_drainer(queue);
        }
        if let Some(task) = back_to_history {
            metrics::counter!(metric_defs::STICKY_WORKER_UNAVAILABLE).increment(1);
            return self.history()?.sticky_worker_unavailable(&task).await;
        }
        Ok(())
    }

    pub(super) async fn shutdown_sticky_queue_op(
        &self,
        namespace_id: &str,
        sticky_queue: &str,
    ) -> ApiResult<()> {
        let key = TaskQueueKey {
            namespace_id: namespace_id.to_string(),
            name: sticky_queue.to_string(),
            kind: TaskKind::Workflow,
        };
        {
            let mut closed = self.closed_sticky.lock().expect("matching lock");
            closed.retain(|_, at| at.elapsed() < CLOSED_STICKY_MEMORY);
            closed.insert(key.clone(), Instant::now());
        }
        let waiting = self
            .queues
            .lock()
            .expect("matching lock")
            .remove(&key)
            .map(|q| q.tasks)
            .unwrap_or_default();
        let history = self.history()?;
        for task in waiting {
            if let Err(e) = history.sticky_worker_unavailable(&task).await {
                // The sticky schedule-to-start timeout still moves it, a little later.
                tracing::warn!(
                    namespace_id = %task.namespace_id,
                    workflow_id = %task.workflow_id,
                    run_id = %task.run_id,
                    shard = task.shard,
                    error = %e.message,
                    "moving a task off a closed sticky queue failed"
                );
            }
        }
        Ok(())
    }
}
