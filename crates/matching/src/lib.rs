//! Matching: task queues held in memory. A task from history is handed straight to a waiting
//! poller (sync match) or queued; a poll waits up to 60 s. When a poller takes a task, matching
//! asks history to record it as started, and only then answers the poll: a task history no
//! longer wants (already started, run closed) is dropped and the poll goes on.
//!
//! Nothing here is durable by design: history's outbox keeps every task until it has started and
//! re-dispatches what matching may have lost (restart, dropped poll), so matching nodes are
//! stateless and restartable.

mod backlog;
mod describe;
mod forward;
pub mod metric_defs;
mod nexus;
mod poll;
mod queries;
mod queue;
mod tasks;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chronicle_cluster::{
    ForwardedDispatch, HistoryService, MatchingService, QueryTask, TaskKind, TaskQueueKey, TaskRef,
};
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use chronicle_types::{ApiError, ApiResult};
use tokio::sync::oneshot;

use crate::queue::{Dispatch, Queue};

/// Bounds of matching's in-memory state: past them, a call is refused with RESOURCE_EXHAUSTED
/// instead of growing memory. Nothing is lost: a task refused here stays in history's outbox,
/// which offers it again later.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatchingLimits {
    /// Tasks queued (not yet handed to a poller) per task queue.
    pub max_backlog_per_queue: usize,
    /// Polls waiting at once per task queue.
    pub max_pollers_per_queue: usize,
    /// Queries waiting for a worker's answer, over all queues.
    pub max_pending_queries: usize,
    /// A task added to a partition held this long, that nobody polled this long, counts
    /// as a `no_poller_tasks` (Temporal's two minutes by default).
    pub no_poller_threshold: Duration,
}

impl Default for MatchingLimits {
    fn default() -> Self {
        Self {
            max_backlog_per_queue: 100_000,
            max_pollers_per_queue: 5_000,
            max_pending_queries: 10_000,
            no_poller_threshold: metric_defs::NO_POLLER_THRESHOLD,
        }
    }
}

/// How often idle queues are looked for.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

pub struct MatchingEngine {
    /// Weak: history holds matching, and the node must be able to drop both at shutdown.
    history: OnceLock<Weak<dyn HistoryService>>,
    queues: Mutex<HashMap<TaskQueueKey, Queue>>,
    pending_queries: Mutex<HashMap<String, oneshot::Sender<ws::RespondQueryTaskCompletedRequest>>>,
    /// Sticky queues whose worker shut down, and when: tasks sent there go back to history.
    closed_sticky: Mutex<HashMap<TaskQueueKey, Instant>>,
    max_poll_wait: Duration,
    /// Set when the node stops: waiting polls answer empty at once (workers poll again,
    /// elsewhere), so the server drains in moments instead of a whole long-poll interval.
    stopping: tokio::sync::watch::Sender<bool>,
    limits: MatchingLimits,
    last_sweep: Mutex<Instant>,
    /// Routes forwarded calls to the root partition's owner (the matching ring); unset: this
    /// engine owns every partition.
    forwarder: OnceLock<Arc<dyn MatchingService>>,
    next_offer_id: std::sync::atomic::AtomicU64,
    me: Weak<MatchingEngine>,
    backlog_reporter: Mutex<backlog::BacklogReporter>,
}

impl MatchingEngine {
    pub fn new(max_poll_wait: Duration) -> Arc<Self> {
        Self::with_limits(max_poll_wait, MatchingLimits::default())
    }

    pub fn with_limits(max_poll_wait: Duration, limits: MatchingLimits) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            me: me.clone(),
            forwarder: OnceLock::new(),
            next_offer_id: std::sync::atomic::AtomicU64::new(0),
            history: OnceLock::new(),
            queues: Mutex::new(HashMap::new()),
            pending_queries: Mutex::new(HashMap::new()),
            closed_sticky: Mutex::new(HashMap::new()),
            max_poll_wait,
            stopping: tokio::sync::watch::Sender::new(false),
            limits,
            last_sweep: Mutex::new(Instant::now()),
            backlog_reporter: Mutex::default(),
        })
    }

    /// Ends every waiting poll with an empty answer, and every later one at once: the node is
    /// stopping. Tasks are not lost: one not yet recorded as started is dispatched again by
    /// history's outbox.
    pub fn stop_polls(&self) {
        self.stopping.send_replace(true);
    }

    /// Task queues held in memory now.
    pub fn queue_count(&self) -> usize {
        self.queues.lock().expect("matching lock").len()
    }

    /// Forgets idle queues, at most once per [`SWEEP_INTERVAL`] (`force`: now).
    pub fn sweep_idle_queues(&self, force: bool) {
        {
            let mut last = self.last_sweep.lock().expect("matching lock");
            if !force && last.elapsed() < SWEEP_INTERVAL {
                return;
            }
            *last = Instant::now();
        }
        let mut queues = self.queues.lock().expect("matching lock");
        let before = queues.len();
        queues.retain(|_, q| !q.is_idle());
        let removed = before - queues.len();
        if removed > 0 {
            tracing::debug!(removed, "forgot idle task queues");
        }
    }

    /// Wires the router that reaches the owners of root partitions (the matching ring).
    pub fn set_forwarder(&self, forwarder: Arc<dyn MatchingService>) {
        let _ = self.forwarder.set(forwarder);
    }

    /// Wires the history service (history and matching refer to each other).
    pub fn set_history(&self, history: &Arc<dyn HistoryService>) {
        let _ = self.history.set(Arc::downgrade(history));
    }

    fn history(&self) -> ApiResult<Arc<dyn HistoryService>> {
        self.history
            .get()
            .and_then(Weak::upgrade)
            .ok_or_else(|| ApiError::unavailable("matching is not connected to history"))
    }
}

#[async_trait]
impl MatchingService for MatchingEngine {
    async fn add_task(&self, queue: TaskQueueKey, task: TaskRef) -> ApiResult<()> {
        self.add_task_op(queue, task).await
    }

    async fn poll_workflow_task(
        &self,
        namespace_id: &str,
        request: ws::PollWorkflowTaskQueueRequest,
    ) -> ApiResult<ws::PollWorkflowTaskQueueResponse> {
        self.poll_workflow_task_op(namespace_id, request).await
    }

    async fn poll_activity_task(
        &self,
        namespace_id: &str,
        request: ws::PollActivityTaskQueueRequest,
    ) -> ApiResult<ws::PollActivityTaskQueueResponse> {
        self.poll_activity_task_op(namespace_id, request).await
    }

    async fn poll_nexus_task(
        &self,
        namespace_id: &str,
        request: ws::PollNexusTaskQueueRequest,
    ) -> ApiResult<ws::PollNexusTaskQueueResponse> {
        self.poll_nexus(namespace_id, request).await
    }

    async fn query_workflow(
        &self,
        namespace_id: &str,
        task_queue: &str,
        task: QueryTask,
        timeout: Duration,
    ) -> ApiResult<ws::RespondQueryTaskCompletedRequest> {
        self.query_workflow_op(namespace_id, task_queue, task, timeout)
            .await
    }

    async fn respond_query_task_completed(
        &self,
        _namespace_id: &str,
        request: ws::RespondQueryTaskCompletedRequest,
    ) -> ApiResult<()> {
        self.respond_query_task_completed_op(_namespace_id, request)
            .await
    }

    async fn shutdown_sticky_queue(&self, namespace_id: &str, sticky_queue: &str) -> ApiResult<()> {
        self.shutdown_sticky_queue_op(namespace_id, sticky_queue)
            .await
    }

    async fn forward_task(
        &self,
        root: TaskQueueKey,
        task: TaskRef,
        wait: Duration,
    ) -> ApiResult<bool> {
        self.offer_to_root_pollers(root, task, wait).await
    }

    async fn forward_poll(
        &self,
        root: TaskQueueKey,
        identity: &str,
        wait: Duration,
    ) -> ApiResult<Option<ForwardedDispatch>> {
        let deadline = Instant::now() + wait.min(self.max_poll_wait);
        Ok(self.next_dispatch(&root, identity, deadline).await?.map(
            |(dispatch, _)| match dispatch {
                Dispatch::Task(task) => ForwardedDispatch::Task(task),
                Dispatch::Query(query) => ForwardedDispatch::Query(query),
            },
        ))
    }

    async fn describe_task_queue(
        &self,
        namespace_id: &str,
        name: &str,
        kind: TaskKind,
    ) -> ApiResult<ws::DescribeTaskQueueResponse> {
        self.describe_task_queue_op(namespace_id, name, kind).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine(limits: MatchingLimits) -> Arc<MatchingEngine> {
        MatchingEngine::with_limits(Duration::from_millis(50), limits)
    }

    fn poll_request(queue: &str) -> ws::PollActivityTaskQueueRequest {
        ws::PollActivityTaskQueueRequest {
            namespace: "default".into(),
            task_queue: Some(chronicle_proto::temporal::api::taskqueue::v1::TaskQueue {
                name: queue.into(),
                ..Default::default()
            }),
            identity: "unit".into(),
            ..Default::default()
        }
    }

    /// A stopping node must not hold its workers' long polls for a whole poll interval: its
    /// server waits for them before it exits, so a rolling restart took a minute per node.
    #[tokio::test]
    async fn stopping_answers_waiting_and_later_polls_empty_at_once() {
        let engine = MatchingEngine::new(Duration::from_secs(60));
        let waiting = {
            let engine = engine.clone();
            tokio::spawn(async move { engine.poll_activity_task("ns", poll_request("tq")).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "the poll should wait for a task");
        engine.stop_polls();
        let answer = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the waiting poll ends when the node stops")
            .unwrap()
            .unwrap();
        assert!(answer.task_token.is_empty());
        let later = tokio::time::timeout(
            Duration::from_secs(5),
            engine.poll_activity_task("ns", poll_request("tq")),
        )
        .await
        .expect("a poll after the stop answers at once")
        .unwrap();
        assert!(later.task_token.is_empty());
    }

    #[tokio::test]
    async fn timed_out_polls_leave_no_place_taken() {
        let engine = engine(MatchingLimits {
            max_pollers_per_queue: 1,
            ..MatchingLimits::default()
        });
        // Each poll times out empty; its closed sender must not count against the next.
        for _ in 0..3 {
            let answer = engine
                .poll_activity_task("ns", poll_request("q"))
                .await
                .expect("poll");
            assert!(answer.task_token.is_empty());
        }
        // Two at once: the second is refused.
        let (a, b) = tokio::join!(engine.poll_activity_task("ns", poll_request("q")), async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            engine.poll_activity_task("ns", poll_request("q")).await
        });
        assert!(a.is_ok());
        assert_eq!(b.unwrap_err().code, tonic::Code::ResourceExhausted);
    }

    #[tokio::test]
    async fn idle_queues_are_forgotten_and_queries_bounded() {
        let engine = engine(MatchingLimits {
            max_pending_queries: 1,
            ..MatchingLimits::default()
        });
        let task = |id: &str| QueryTask {
            query_id: id.into(),
            response: Default::default(),
        };
        let (first, second) = tokio::join!(
            engine.query_workflow("ns", "q", task("a"), Duration::from_millis(100)),
            async {
                tokio::time::sleep(Duration::from_millis(10)).await;
                engine
                    .query_workflow("ns", "q", task("b"), Duration::from_millis(100))
                    .await
            }
        );
        assert_eq!(first.unwrap_err().code, tonic::Code::DeadlineExceeded);
        assert_eq!(second.unwrap_err().code, tonic::Code::ResourceExhausted);
        // The query left a queue behind with nothing in it and no poller: it is forgotten.
        assert_eq!(engine.queue_count(), 1);
        engine.sweep_idle_queues(true);
        assert_eq!(engine.queue_count(), 0);
        // A queue polled lately is kept.
        engine
            .poll_activity_task("ns", poll_request("polled"))
            .await
            .unwrap();
        engine.sweep_idle_queues(true);
        assert_eq!(engine.queue_count(), 1);
    }
}
