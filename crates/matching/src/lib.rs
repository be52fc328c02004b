//! Matching: task queues held in memory. A task from history is handed straight to a waiting
//! poller (sync match) or queued; a poll waits up to 60 s. When a poller takes a task, matching
//! asks history to record it as started, and only then answers the poll: a task history no
//! longer wants (already started, run closed) is dropped and the poll goes on.
//!
//! Nothing here is durable by design: history's outbox keeps every task until it has started and
//! re-dispatches what matching may have lost (restart, dropped poll), so matching nodes are
//! stateless and restartable.

mod backlog;
mod forward;
pub mod metric_defs;
mod nexus;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chronicle_cluster::partition::parse_partition;
use chronicle_cluster::{
    ForwardedDispatch, HistoryService, MatchingService, PollerInfo, QueryTask, TaskKind,
    TaskQueueKey, TaskRef,
};
use chronicle_proto::chronicle::persistence::v1::TaskToken;
use chronicle_proto::temporal::api::enums::v1::{ResourceExhaustedCause, ResourceExhaustedScope};
use chronicle_proto::temporal::api::taskqueue::v1::PollerInfo as ApiPollerInfo;
use chronicle_proto::temporal::api::taskqueue::v1::TaskQueueStatus;
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use chronicle_types::{ApiError, ApiResult};
use prost::Message;
use tokio::sync::oneshot;

use crate::metric_defs::PollOutcome;

// Handed once through a oneshot to a waiting poller; boxing the query would only add an allocation.
#[allow(clippy::large_enum_variant)]
enum Dispatch {
    Task(TaskRef),
    Query(QueryTask),
}

/// A dispatch handed straight to a waiting poll (a sync match), and when: the poll reports the
/// time until history recorded the task as started as `syncmatch_latency`.
struct Handoff {
    dispatch: Dispatch,
    handed_at: Instant,
}

impl Handoff {
    fn into_sync_match(self) -> (Dispatch, PollOutcome) {
        (
            self.dispatch,
            PollOutcome::Sync {
                handed_at: Some(self.handed_at),
                forwarded: false,
            },
        )
    }
}

/// What a poll finds on arrival (moved once, straight out: boxing would only add an allocation).
#[allow(clippy::large_enum_variant)]
enum Taken {
    /// Found waiting here, and how it counts.
    Now(Dispatch, PollOutcome),
    Wait(oneshot::Receiver<Handoff>),
}

#[derive(Default)]
struct Queue {
    tasks: VecDeque<TaskRef>,
    /// (shard, outbox row) of queued tasks, and when each was queued (a poll that takes it
    /// reports the wait as `asyncmatch_latency`): a re-dispatched task is not queued twice.
    queued: HashMap<(u32, u64), Instant>,
    queries: VecDeque<QueryTask>,
    pollers: VecDeque<oneshot::Sender<Handoff>>,
    /// Identity -> last poll, for DescribeTaskQueue.
    recent_pollers: HashMap<String, (Instant, std::time::SystemTime)>,
    /// Root partition: tasks of child partitions waiting here for a poller (`forward_task`).
    offers: VecDeque<forward::PendingOffer>,
    /// Child partition: a task forwarder runs for its backlog.
    draining: bool,
    /// Child partition: one of its polls is forwarded to the root (at most one at a time).
    forwarding_poll: bool,
    /// When this node started holding the queue (`no_poller_tasks` waits for it to age).
    loaded_at: backlog::LoadedAt,
    /// A sticky queue: the normal queue its worker polls too (learned from its polls; empty
    /// until one arrived), which its metrics are reported under.
    sticky_normal_name: Option<String>,
}

/// Temporal's default task dispatch rate limit per task queue (`matching.rps`), which
/// DescribeTaskQueue reports.
const DEFAULT_DISPATCH_RATE_PER_SECOND: f64 = 100_000.0;

/// A sticky queue with no poll for this long has no worker (Temporal's window is the same).
const STICKY_POLLER_WINDOW: Duration = Duration::from_secs(10);

impl Queue {
    /// Nothing waits in it and nobody polled it lately: it can be forgotten.
    fn is_idle(&self) -> bool {
        self.tasks.is_empty()
            && self.queries.is_empty()
            && self.offers.iter().all(forward::PendingOffer::is_abandoned)
            && !self.draining
            && !self.forwarding_poll
            && self.pollers.iter().all(|p| p.is_closed())
            && self
                .recent_pollers
                .values()
                .all(|(at, _)| at.elapsed() >= POLLER_MEMORY)
    }

    /// Whether a poller waits now or polled within [`STICKY_POLLER_WINDOW`].
    fn has_recent_poller(&self) -> bool {
        self.polled_within(STICKY_POLLER_WINDOW)
    }

    /// Hands `dispatch` to a waiting poller, or gives it back when none is waiting.
    fn offer(&mut self, mut dispatch: Dispatch) -> Option<Dispatch> {
        let handed_at = Instant::now();
        while let Some(poller) = self.pollers.pop_front() {
            match poller.send(Handoff {
                dispatch,
                handed_at,
            }) {
                Ok(()) => return None,
                // That poll was cancelled or timed out; try the next one.
                Err(back) => dispatch = back.dispatch,
            }
        }
        Some(dispatch)
    }
}

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

/// How long a poller's identity is remembered (DescribeTaskQueue shows it this long).
const POLLER_MEMORY: Duration = Duration::from_secs(300);
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

/// How long a shut-down sticky queue is remembered (history stops using it at the first task).
const CLOSED_STICKY_MEMORY: Duration = Duration::from_secs(600);

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

    /// Takes the next dispatch for `key`, waiting until `deadline`.
    async fn next_dispatch(
        &self,
        key: &TaskQueueKey,
        identity: &str,
        deadline: Instant,
    ) -> ApiResult<Option<(Dispatch, PollOutcome)>> {
        if *self.stopping.borrow() {
            return Ok(None);
        }
        self.closed_sticky
            .lock()
            .expect("matching lock")
            .remove(key);
        self.sweep_idle_queues(false);
        let receiver = match self.take_or_wait(key, identity)? {
            Taken::Now(dispatch, outcome) => return Ok(Some((dispatch, outcome))),
            Taken::Wait(receiver) => receiver,
        };
        if parse_partition(&key.name).1 != 0 {
            // A child partition: wait on the root partition as well.
            return Ok(self
                .wait_here_or_on_root(key, identity, receiver, deadline)
                .await);
        }
        let mut stopping = self.stopping.subscribe();
        Ok(tokio::select! {
            received = tokio::time::timeout_at(deadline.into(), receiver) => match received {
                Ok(Ok(handoff)) => Some(handoff.into_sync_match()),
                _ => None,
            },
            _ = stopping.wait_for(|stop| *stop) => None,
        })
    }

    /// Under the lock: the next query or task of `key` (a root partition's tasks forwarded from
    /// its children included), or a place among its waiting pollers.
    fn take_or_wait(&self, key: &TaskQueueKey, identity: &str) -> ApiResult<Taken> {
        {
            let mut queues = self.queues.lock().expect("matching lock");
            let queue = queues.entry(key.clone()).or_default();
            if queue.recent_pollers.len() >= 64 {
                queue
                    .recent_pollers
                    .retain(|_, (at, _)| at.elapsed() < POLLER_MEMORY);
            }
            queue.recent_pollers.insert(
                identity.to_string(),
                (Instant::now(), std::time::SystemTime::now()),
            );
            if let Some(query) = queue.queries.pop_front() {
                return Ok(Taken::Now(
                    Dispatch::Query(query),
                    PollOutcome::Backlog { queued_at: None },
                ));
            }
            let now_ms = chronicle_types::time::now_millis();
            while let Some(task) = queue.tasks.pop_front() {
                let queued_at = queue.queued.remove(&(task.shard, task.outbox_id));
                if task.expires_at_ms == 0 || task.expires_at_ms > now_ms {
                    return Ok(Taken::Now(
                        Dispatch::Task(task),
                        PollOutcome::Backlog { queued_at },
                    ));
                }
            }
            if let Some((task, offered_at)) = forward::take_offer(queue) {
                // A child partition's task waiting here for a poller: a sync match, as in
                // Temporal (the child forwards it only while it waits for one).
                return Ok(Taken::Now(
                    Dispatch::Task(task),
                    PollOutcome::Sync {
                        handed_at: Some(offered_at),
                        forwarded: false,
                    },
                ));
            }
            // Polls that timed out or were cancelled leave closed senders behind.
            queue.pollers.retain(|p| !p.is_closed());
            if queue.pollers.len() >= self.limits.max_pollers_per_queue {
                return Err(ApiError::resource_exhausted_for(
                    format!(
                        "too many pollers are waiting on this task queue (limit {})",
                        self.limits.max_pollers_per_queue
                    ),
                    ResourceExhaustedCause::ConcurrentLimit,
                    ResourceExhaustedScope::Namespace,
                ));
            }
            let (tx, rx) = oneshot::channel();
            queue.pollers.push_back(tx);
            Ok(Taken::Wait(rx))
        }
    }

    fn poll_deadline(&self) -> Instant {
        Instant::now() + self.max_poll_wait
    }
}

fn poller(
    request_id: String,
    identity: &str,
    task_queue: &Option<chronicle_proto::temporal::api::taskqueue::v1::TaskQueue>,
) -> PollerInfo {
    PollerInfo {
        identity: identity.to_string(),
        request_id,
        // The queue's name, not the partition's.
        task_queue: task_queue
            .as_ref()
            .map(|t| parse_partition(&t.name).0.to_string())
            .unwrap_or_default(),
        task_queue_kind: task_queue.as_ref().map(|t| t.kind).unwrap_or_default(),
        worker_control_task_queue: String::new(),
    }
}

/// Errors that mean "this task is gone, take the next one".
fn task_is_stale(err: &ApiError) -> bool {
    matches!(
        err.code,
        tonic::Code::NotFound | tonic::Code::AlreadyExists | tonic::Code::FailedPrecondition
    )
}

#[async_trait]
impl MatchingService for MatchingEngine {
    async fn add_task(&self, queue: TaskQueueKey, task: TaskRef) -> ApiResult<()> {
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

    async fn poll_workflow_task(
        &self,
        namespace_id: &str,
        request: ws::PollWorkflowTaskQueueRequest,
    ) -> ApiResult<ws::PollWorkflowTaskQueueResponse> {
        let name = request
            .task_queue
            .as_ref()
            .map(|t| t.name.clone())
            .unwrap_or_default();
        let key = TaskQueueKey {
            namespace_id: namespace_id.to_string(),
            name,
            kind: TaskKind::Workflow,
        };
        self.note_poll(&key, &request.namespace, request.task_queue.as_ref());
        let deadline = self.poll_deadline();
        let record = |outcome| {
            metric_defs::record_poll(
                &request.namespace,
                request.task_queue.as_ref(),
                request.deployment_options.as_ref(),
                "Workflow",
                outcome,
            )
        };
        loop {
            let wait = metric_defs::PollWait::start(
                &request.namespace,
                request.task_queue.as_ref(),
                request.deployment_options.as_ref(),
                "Workflow",
            );
            let found = self.next_dispatch(&key, &request.identity, deadline).await;
            wait.finish(
                found
                    .as_ref()
                    .map(|f| f.as_ref().map(|(_, outcome)| *outcome)),
            );
            let Some((dispatch, outcome)) = found? else {
                record(PollOutcome::Timeout);
                return Ok(ws::PollWorkflowTaskQueueResponse::default());
            };
            match dispatch {
                Dispatch::Query(query) => {
                    record(outcome.for_query());
                    return Ok(query.response);
                }
                Dispatch::Task(task) => {
                    let info = poller(start_request_id(), &request.identity, &request.task_queue);
                    match self
                        .history()?
                        .record_workflow_task_started(&task, &info)
                        .await
                    {
                        Ok(response) => {
                            record(outcome);
                            return Ok(response);
                        }
                        Err(e) if task_is_stale(&e) => continue,
                        Err(e) => {
                            tracing::warn!(
                                namespace_id = %task.namespace_id,
                                workflow_id = %task.workflow_id,
                                run_id = %task.run_id,
                                shard = task.shard,
                                error = %e.message,
                                "recording a workflow task as started failed; history will re-dispatch it"
                            );
                            continue;
                        }
                    }
                }
            }
        }
    }

    async fn poll_activity_task(
        &self,
        namespace_id: &str,
        request: ws::PollActivityTaskQueueRequest,
    ) -> ApiResult<ws::PollActivityTaskQueueResponse> {
        let name = request
            .task_queue
            .as_ref()
            .map(|t| t.name.clone())
            .unwrap_or_default();
        let key = TaskQueueKey {
            namespace_id: namespace_id.to_string(),
            name,
            kind: TaskKind::Activity,
        };
        self.note_poll(&key, &request.namespace, request.task_queue.as_ref());
        let deadline = self.poll_deadline();
        let record = |outcome| {
            metric_defs::record_poll(
                &request.namespace,
                request.task_queue.as_ref(),
                request.deployment_options.as_ref(),
                "Activity",
                outcome,
            )
        };
        loop {
            let wait = metric_defs::PollWait::start(
                &request.namespace,
                request.task_queue.as_ref(),
                request.deployment_options.as_ref(),
                "Activity",
            );
            let found = self.next_dispatch(&key, &request.identity, deadline).await;
            wait.finish(
                found
                    .as_ref()
                    .map(|f| f.as_ref().map(|(_, outcome)| *outcome)),
            );
            let Some((dispatch, outcome)) = found? else {
                record(PollOutcome::Timeout);
                return Ok(ws::PollActivityTaskQueueResponse::default());
            };
            let Dispatch::Task(task) = dispatch else {
                continue;
            };
            let info = PollerInfo {
                worker_control_task_queue: request.worker_control_task_queue.clone(),
                ..poller(start_request_id(), &request.identity, &request.task_queue)
            };
            match self
                .history()?
                .record_activity_task_started(&task, &info)
                .await
            {
                Ok(response) => {
                    record(outcome);
                    return Ok(response);
                }
                Err(e) if task_is_stale(&e) => continue,
                Err(e) => {
                    tracing::warn!(
                        namespace_id = %task.namespace_id,
                        workflow_id = %task.workflow_id,
                        run_id = %task.run_id,
                        shard = task.shard,
                        error = %e.message,
                        "recording an activity task as started failed; history will re-dispatch it"
                    );
                    continue;
                }
            }
        }
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
        let (tx, rx) = oneshot::channel();
        let query_id = task.query_id.clone();
        {
            let mut pending = self.pending_queries.lock().expect("matching lock");
            if pending.len() >= self.limits.max_pending_queries {
                return Err(ApiError::resource_exhausted_for(
                    format!(
                        "too many queries are waiting for workers (limit {})",
                        self.limits.max_pending_queries
                    ),
                    ResourceExhaustedCause::ConcurrentLimit,
                    ResourceExhaustedScope::System,
                ));
            }
            pending.insert(query_id.clone(), tx);
        }
        {
            let key = TaskQueueKey {
                namespace_id: namespace_id.to_string(),
                name: task_queue.to_string(),
                kind: TaskKind::Workflow,
            };
            let mut queues = self.queues.lock().expect("matching lock");
            let q = queues.entry(key).or_default();
            if let Some(Dispatch::Query(query)) = q.offer(Dispatch::Query(task)) {
                q.queries.push_back(query);
            }
        }
        let outcome = tokio::time::timeout(timeout, rx).await;
        self.pending_queries
            .lock()
            .expect("matching lock")
            .remove(&query_id);
        // Drop the query task if no worker took it.
        {
            let key = TaskQueueKey {
                namespace_id: namespace_id.to_string(),
                name: task_queue.to_string(),
                kind: TaskKind::Workflow,
            };
            let mut queues = self.queues.lock().expect("matching lock");
            if let Some(q) = queues.get_mut(&key) {
                q.queries.retain(|t| t.query_id != query_id);
            }
        }
        match outcome {
            Ok(Ok(answer)) => Ok(answer),
            _ => Err(ApiError::new(
                tonic::Code::DeadlineExceeded,
                "query timed out before a worker answered it",
            )),
        }
    }

    async fn respond_query_task_completed(
        &self,
        _namespace_id: &str,
        request: ws::RespondQueryTaskCompletedRequest,
    ) -> ApiResult<()> {
        let token = TaskToken::decode(request.task_token.as_slice())
            .map_err(|_| ApiError::invalid_argument("invalid task token"))?;
        if token.query_id.is_empty() {
            return Err(ApiError::invalid_argument(
                "task token is not a query task token",
            ));
        }
        let sender = self
            .pending_queries
            .lock()
            .expect("matching lock")
            .remove(&token.query_id);
        match sender {
            Some(sender) => {
                let _ = sender.send(request);
                Ok(())
            }
            None => Err(ApiError::not_found(
                "query does not exist or has already timed out",
            )),
        }
    }

    async fn shutdown_sticky_queue(&self, namespace_id: &str, sticky_queue: &str) -> ApiResult<()> {
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
        // One type's pollers, as Temporal answers (`temporal task-queue describe` asks per type).
        let mut pollers = Vec::new();
        let mut backlog = 0usize;
        let queues = self.queues.lock().expect("matching lock");
        for k in [kind] {
            let key = TaskQueueKey {
                namespace_id: namespace_id.to_string(),
                name: name.to_string(),
                kind: k,
            };
            if let Some(q) = queues.get(&key) {
                backlog += q.tasks.len();
                for (identity, (seen, at)) in &q.recent_pollers {
                    if seen.elapsed() < Duration::from_secs(300) {
                        pollers.push(ApiPollerInfo {
                            identity: identity.clone(),
                            last_access_time: Some(chronicle_types::time::from_millis(
                                at.duration_since(std::time::UNIX_EPOCH)
                                    .map(|d| d.as_millis() as i64)
                                    .unwrap_or(0),
                            )),
                            rate_per_second: 0.0,
                            ..Default::default()
                        });
                    }
                }
            }
        }
        // The legacy status (deprecated in the API, still what `temporal task-queue describe
        // --legacy-mode` prints, and dereferences).
        #[allow(deprecated)]
        Ok(ws::DescribeTaskQueueResponse {
            pollers,
            // Kept only when the request asked for it (the frontend removes it otherwise).
            // Matching keeps no task IDs (its queues live in memory, tasks stay in history's
            // outbox), so the levels are zero; the rate is Temporal's default dispatch limit.
            task_queue_status: Some(TaskQueueStatus {
                backlog_count_hint: i64::try_from(backlog).unwrap_or(i64::MAX),
                rate_per_second: DEFAULT_DISPATCH_RATE_PER_SECOND,
                ..Default::default()
            }),
            ..Default::default()
        })
    }
}

/// A request ID for recording a task as started: unique per attempt, so that a task handed out
/// twice (re-dispatch) can never be started by two pollers, while a retried record with the
/// same ID gets the same answer.
fn start_request_id() -> String {
    uuid::Uuid::new_v4().to_string()
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
