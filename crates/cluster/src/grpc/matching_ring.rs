//! [`RingMatching`]: a [`MatchingService`] over several matching nodes. Each task-queue partition
//! is placed on one node by consistent hashing (the `hashring` crate) over the nodes this process
//! currently sees as live, so history leaders, frontends and matching nodes, which all route
//! through it, agree on the owner. A node that stops answering is taken out of the ring (its
//! partitions move to the others) and probed until it answers again; each such change bumps the
//! placement generation, which makes history hand over again every task not yet started.
//!
//! A node that runs a matching role beside the router registers its engine with
//! [`RingMatching::set_local`]: calls for the partitions it owns are then made in process.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use chronicle_proto::temporal::api::enums::v1::TaskQueueKind;
use chronicle_proto::temporal::api::taskqueue::v1::TaskQueue;
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use chronicle_types::{ApiError, ApiResult};
use hashring::HashRing;
use tokio::sync::watch;

use super::RemoteMatching;
use crate::partition::{parse_partition, partition_name, partition_of_task};
use crate::{
    ForwardedDispatch, MatchingService, PartitionOwner, QueryTask, TaskKind, TaskQueueKey, TaskRef,
};

/// Points per node on the ring: enough for partitions to spread evenly over a few nodes.
const VIRTUAL_NODES: u32 = 64;
/// How often every node is probed (a dead one to see it back, a live one to notice its loss
/// even when this process sends it nothing).
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// A probe not answered within this counts as a failure.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// One point of a node on the ring.
#[derive(Clone, Debug, PartialEq, Eq)]
struct VirtualNode {
    node: usize,
    addr: Arc<str>,
    replica: u32,
}

impl Hash for VirtualNode {
    // By address, not index: every process places the same node at the same points whatever
    // order its list names the nodes in.
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.addr.hash(state);
        self.replica.hash(state);
    }
}

/// The key a partition is placed by.
#[derive(Hash)]
struct PartitionKey<'a> {
    namespace_id: &'a str,
    queue: &'a str,
    kind: u8,
    partition: u32,
}

struct Placement {
    live: Vec<bool>,
    /// Per node: the generation at which it last joined the ring (0: from the start).
    joined: Vec<u64>,
    ring: HashRing<VirtualNode>,
}

/// Routes matching calls to the owner of each task-queue partition.
pub struct RingMatching {
    addrs: Vec<Arc<str>>,
    clients: Vec<Arc<RemoteMatching>>,
    /// This process's matching engine and its place in `addrs`. Weak: the engine holds this
    /// router (its forwarder to root partitions).
    local: OnceLock<(usize, Weak<dyn MatchingService>)>,
    partitions: u32,
    placement: RwLock<Placement>,
    /// Bumped at every change of the live set.
    generation: watch::Sender<u64>,
    prober_started: AtomicBool,
    me: Weak<RingMatching>,
}

fn build_ring(addrs: &[Arc<str>], live: &[bool]) -> HashRing<VirtualNode> {
    let mut ring = HashRing::new();
    let points = addrs
        .iter()
        .enumerate()
        .filter(|(i, _)| live[*i])
        .flat_map(|(node, addr)| {
            (0..VIRTUAL_NODES).map(move |replica| VirtualNode {
                node,
                addr: addr.clone(),
                replica,
            })
        })
        .collect();
    ring.batch_add(points);
    ring
}

fn kind_byte(kind: TaskKind) -> u8 {
    match kind {
        TaskKind::Workflow => 1,
        TaskKind::Activity => 2,
        TaskKind::Nexus => 3,
    }
}

fn is_sticky(task_queue: Option<&TaskQueue>) -> bool {
    task_queue.is_some_and(|t| t.kind == TaskQueueKind::Sticky as i32)
}

/// A worker process's control queue (polled by that process alone): one partition.
fn is_worker_commands(task_queue: Option<&TaskQueue>) -> bool {
    task_queue.is_some_and(|t| t.kind == TaskQueueKind::WorkerCommands as i32)
}

impl RingMatching {
    /// A router over the matching nodes at `addrs` (internal addresses), splitting every normal
    /// task queue into `partitions` partitions. Starts probing the nodes when called inside a
    /// Tokio runtime.
    pub fn new(addrs: &[String], partitions: u32) -> Result<Arc<Self>, String> {
        let router = Self::without_probes(addrs, partitions)?;
        if tokio::runtime::Handle::try_current().is_ok() {
            router.start_prober();
        }
        Ok(router)
    }

    /// The router alone: nodes leave the ring only after failed calls.
    fn without_probes(addrs: &[String], partitions: u32) -> Result<Arc<Self>, String> {
        if addrs.is_empty() {
            return Err("no matching node address given".into());
        }
        let mut clients = Vec::new();
        for addr in addrs {
            clients.push(Arc::new(RemoteMatching::new(super::lazy_channel(addr)?)));
        }
        let addrs: Vec<Arc<str>> = addrs.iter().map(|a| Arc::from(a.as_str())).collect();
        let live = vec![true; addrs.len()];
        let ring = build_ring(&addrs, &live);
        let router = Arc::new_cyclic(|me| Self {
            addrs,
            clients,
            local: OnceLock::new(),
            partitions: partitions.max(1),
            placement: RwLock::new(Placement {
                joined: vec![0; live.len()],
                live,
                ring,
            }),
            generation: watch::Sender::new(0),
            prober_started: AtomicBool::new(false),
            me: me.clone(),
        });
        Ok(router)
    }

    /// Serves calls for the partitions of the node listed as `addr` (this node) with the
    /// matching engine of this process instead of over the network. Set once; ignored if the
    /// ring does not list `addr`.
    pub fn set_local(&self, addr: &str, engine: Weak<dyn MatchingService>) {
        if let Some(node) = self.node_index(addr) {
            let _ = self.local.set((node, engine));
        }
    }

    /// Node `node`: this process's engine when that is this node, else its client.
    fn client(&self, node: usize) -> Arc<dyn MatchingService> {
        if let Some((me, engine)) = self.local.get()
            && *me == node
            && let Some(engine) = engine.upgrade()
        {
            crate::metric_defs::count_in_process(crate::metric_defs::MATCHING_ROLE);
            return engine;
        }
        self.clients[node].clone()
    }

    /// The place of the node listed as `addr`, if the ring lists it.
    pub fn node_index(&self, addr: &str) -> Option<usize> {
        self.addrs.iter().position(|a| &**a == addr)
    }

    /// The live owner of the partition `queue` names (a partition name, as in AddTask).
    pub(crate) fn owner_of_partition(&self, queue: &TaskQueueKey) -> Option<usize> {
        let (root, partition) = parse_partition(&queue.name);
        self.owner(&queue.namespace_id, root, queue.kind, partition)
            .ok()
    }

    /// Passes a task on to `node`, which keeps it whatever its own view of the ring.
    pub(crate) async fn relay_task(
        &self,
        node: usize,
        queue: TaskQueueKey,
        task: TaskRef,
    ) -> ApiResult<()> {
        self.clients[node].send_task(queue, task, true).await
    }

    /// Partitions of a normal task queue.
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    fn start_prober(&self) {
        if self.prober_started.swap(true, Ordering::SeqCst) {
            return;
        }
        let me = self.me.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(PROBE_EVERY).await;
                let Some(router) = me.upgrade() else { return };
                let probes = (0..router.addrs.len()).map(|node| router.probe(node));
                futures::future::join_all(probes).await;
            }
        });
    }

    /// Whether `node` answers; updates the ring when that changed.
    async fn probe(&self, node: usize) -> bool {
        let call = self.clients[node].describe_task_queue("", "", TaskKind::Workflow);
        let alive = matches!(tokio::time::timeout(PROBE_TIMEOUT, call).await, Ok(Ok(_)));
        self.set_live(node, alive);
        alive
    }

    fn set_live(&self, node: usize, alive: bool) {
        let mut placement = self.placement.write().expect("ring lock");
        if placement.live[node] == alive {
            return;
        }
        placement.live[node] = alive;
        placement.ring = build_ring(&self.addrs, &placement.live);
        let mut generation = 0;
        self.generation.send_modify(|g| {
            *g += 1;
            generation = *g;
        });
        if alive {
            placement.joined[node] = generation;
        }
        drop(placement);
        if alive {
            tracing::info!(node = %self.addrs[node], "matching node is back in the ring");
        } else {
            tracing::warn!(node = %self.addrs[node], "matching node left the ring: its partitions move to the others");
        }
    }

    /// The live node owning partition `partition` of a queue.
    fn owner(
        &self,
        namespace_id: &str,
        queue: &str,
        kind: TaskKind,
        partition: u32,
    ) -> ApiResult<usize> {
        let key = PartitionKey {
            namespace_id,
            queue,
            kind: kind_byte(kind),
            partition,
        };
        self.placement
            .read()
            .expect("ring lock")
            .ring
            .get(&key)
            .map(|v| v.node)
            .ok_or_else(|| ApiError::unavailable("no matching node is reachable"))
    }

    /// After a call to `node` failed with `error`: whether to try again on the (new) owner, i.e.
    /// the node no longer answers and was taken out of the ring.
    async fn node_lost(&self, node: usize, error: &ApiError) -> bool {
        matches!(
            error.code,
            tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::Unknown
        ) && !self.probe(node).await
    }

    /// Resolves once partition `partition` of a queue has an owner other than `node`.
    async fn owner_moved(
        &self,
        namespace_id: &str,
        queue: &str,
        kind: TaskKind,
        partition: u32,
        node: usize,
    ) {
        let mut changes = self.generation.subscribe();
        loop {
            if changes.changed().await.is_err() {
                return std::future::pending().await;
            }
            if self.owner(namespace_id, queue, kind, partition).ok() != Some(node) {
                return;
            }
        }
    }

    fn poll_partition(&self, sticky: bool) -> u32 {
        if sticky || self.partitions <= 1 {
            0
        } else {
            rand::random_range(0..self.partitions)
        }
    }

    /// Runs `poll` (given the node and the partition's name) on the owner of a random partition
    /// of the queue; on the owner's loss, or when the partition moves, polls the new owner.
    async fn routed_poll<T, F, Fut>(
        &self,
        namespace_id: &str,
        queue: &str,
        kind: TaskKind,
        sticky: bool,
        poll: F,
    ) -> ApiResult<T>
    where
        F: Fn(Arc<dyn MatchingService>, String) -> Fut,
        Fut: std::future::Future<Output = ApiResult<T>>,
    {
        let partition = self.poll_partition(sticky);
        let name = partition_name(queue, partition);
        let mut attempts = 0;
        loop {
            attempts += 1;
            let node = self.owner(namespace_id, queue, kind, partition)?;
            tokio::select! {
                answer = poll(self.client(node), name.clone()) => match answer {
                    Err(e) if attempts <= self.addrs.len() && self.node_lost(node, &e).await => continue,
                    other => return other,
                },
                // A task that node had already handed to this poll is lost with it; history
                // hands every unstarted task over again when the placement changes.
                () = self.owner_moved(namespace_id, queue, kind, partition, node) => continue,
            }
        }
    }

    /// Calls `call` on the owner of a partition, again on the new owner if that one is lost.
    async fn routed<T, F, Fut>(
        &self,
        namespace_id: &str,
        queue: &str,
        kind: TaskKind,
        partition: u32,
        call: F,
    ) -> ApiResult<T>
    where
        F: Fn(Arc<dyn MatchingService>) -> Fut,
        Fut: std::future::Future<Output = ApiResult<T>>,
    {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let node = self.owner(namespace_id, queue, kind, partition)?;
            match call(self.client(node)).await {
                Err(e) if attempts <= self.addrs.len() && self.node_lost(node, &e).await => {
                    continue;
                }
                other => return other,
            }
        }
    }

    fn live_nodes(&self) -> Vec<usize> {
        let placement = self.placement.read().expect("ring lock");
        (0..self.addrs.len())
            .filter(|n| placement.live[*n])
            .collect()
    }
}

/// Adds the pollers of `more` to `all`, keeping each identity once (its latest poll).
/// Adds one partition's answer to the queue's: its pollers (each identity once, at its latest
/// poll) and its backlog (the legacy status, deprecated in the API but what the CLI's legacy
/// mode reads).
#[allow(deprecated)]
fn merge_pollers(all: &mut ws::DescribeTaskQueueResponse, more: ws::DescribeTaskQueueResponse) {
    if let Some(status) = more.task_queue_status {
        match &mut all.task_queue_status {
            Some(total) => {
                total.backlog_count_hint = total
                    .backlog_count_hint
                    .saturating_add(status.backlog_count_hint);
            }
            None => all.task_queue_status = Some(status),
        }
    }
    for poller in more.pollers {
        let at = |p: &chronicle_proto::temporal::api::taskqueue::v1::PollerInfo| {
            p.last_access_time.as_ref().map(|t| (t.seconds, t.nanos))
        };
        match all
            .pollers
            .iter_mut()
            .find(|p| p.identity == poller.identity)
        {
            Some(known) if at(known) < at(&poller) => *known = poller,
            Some(_) => {}
            None => all.pollers.push(poller),
        }
    }
}

#[async_trait]
impl MatchingService for RingMatching {
    async fn add_task(&self, queue: TaskQueueKey, task: TaskRef) -> ApiResult<()> {
        let partition = if task.sticky || task.worker_commands {
            0
        } else {
            partition_of_task(task.shard, task.outbox_id, self.partitions)
        };
        let name = partition_name(&queue.name, partition);
        self.routed(
            &queue.namespace_id,
            &queue.name,
            queue.kind,
            partition,
            |client| {
                let key = TaskQueueKey {
                    name: name.clone(),
                    ..queue.clone()
                };
                let task = task.clone();
                async move { client.add_task(key, task).await }
            },
        )
        .await
    }

    async fn poll_workflow_task(
        &self,
        namespace_id: &str,
        request: ws::PollWorkflowTaskQueueRequest,
    ) -> ApiResult<ws::PollWorkflowTaskQueueResponse> {
        let queue = request
            .task_queue
            .as_ref()
            .map(|t| t.name.clone())
            .unwrap_or_default();
        let sticky = is_sticky(request.task_queue.as_ref());
        self.routed_poll(
            namespace_id,
            &queue,
            TaskKind::Workflow,
            sticky,
            |client, name| {
                let mut request = request.clone();
                if let Some(tq) = request.task_queue.as_mut() {
                    tq.name = name;
                }
                async move { client.poll_workflow_task(namespace_id, request).await }
            },
        )
        .await
    }

    async fn poll_activity_task(
        &self,
        namespace_id: &str,
        request: ws::PollActivityTaskQueueRequest,
    ) -> ApiResult<ws::PollActivityTaskQueueResponse> {
        let queue = request
            .task_queue
            .as_ref()
            .map(|t| t.name.clone())
            .unwrap_or_default();
        self.routed_poll(
            namespace_id,
            &queue,
            TaskKind::Activity,
            false,
            |client, name| {
                let mut request = request.clone();
                if let Some(tq) = request.task_queue.as_mut() {
                    tq.name = name;
                }
                async move { client.poll_activity_task(namespace_id, request).await }
            },
        )
        .await
    }

    async fn poll_nexus_task(
        &self,
        namespace_id: &str,
        request: ws::PollNexusTaskQueueRequest,
    ) -> ApiResult<ws::PollNexusTaskQueueResponse> {
        let queue = request
            .task_queue
            .as_ref()
            .map(|t| t.name.clone())
            .unwrap_or_default();
        self.routed_poll(
            namespace_id,
            &queue,
            TaskKind::Nexus,
            is_worker_commands(request.task_queue.as_ref()),
            |client, name| {
                let mut request = request.clone();
                if let Some(tq) = request.task_queue.as_mut() {
                    tq.name = name;
                }
                async move { client.poll_nexus_task(namespace_id, request).await }
            },
        )
        .await
    }

    async fn query_workflow(
        &self,
        namespace_id: &str,
        task_queue: &str,
        task: QueryTask,
        timeout: Duration,
    ) -> ApiResult<ws::RespondQueryTaskCompletedRequest> {
        // Queries wait on the root partition; pollers of the other partitions wait there too.
        self.routed(namespace_id, task_queue, TaskKind::Workflow, 0, |client| {
            let task = task.clone();
            async move {
                client
                    .query_workflow(namespace_id, task_queue, task, timeout)
                    .await
            }
        })
        .await
    }

    async fn respond_query_task_completed(
        &self,
        namespace_id: &str,
        request: ws::RespondQueryTaskCompletedRequest,
    ) -> ApiResult<()> {
        // The token names no node: the one waiting for this query's answer takes it.
        let mut last = ApiError::not_found("query does not exist or has already timed out");
        for node in self.live_nodes() {
            match self
                .client(node)
                .respond_query_task_completed(namespace_id, request.clone())
                .await
            {
                Ok(()) => return Ok(()),
                Err(e) if e.code == tonic::Code::NotFound => {}
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    async fn describe_task_queue(
        &self,
        namespace_id: &str,
        name: &str,
        kind: TaskKind,
    ) -> ApiResult<ws::DescribeTaskQueueResponse> {
        let (queue, _) = parse_partition(name);
        let partitions = if queue != name { 1 } else { self.partitions };
        let mut all = ws::DescribeTaskQueueResponse::default();
        for partition in 0..partitions {
            let partition_queue = if queue != name {
                name.to_string()
            } else {
                partition_name(queue, partition)
            };
            let answer = self
                .routed(namespace_id, queue, kind, partition, |client| {
                    let partition_queue = partition_queue.clone();
                    async move {
                        client
                            .describe_task_queue(namespace_id, &partition_queue, kind)
                            .await
                    }
                })
                .await?;
            merge_pollers(&mut all, answer);
        }
        Ok(all)
    }

    async fn shutdown_sticky_queue(&self, namespace_id: &str, sticky_queue: &str) -> ApiResult<()> {
        self.routed(
            namespace_id,
            sticky_queue,
            TaskKind::Workflow,
            0,
            |client| async move {
                client
                    .shutdown_sticky_queue(namespace_id, sticky_queue)
                    .await
            },
        )
        .await
    }

    async fn forward_task(
        &self,
        root: TaskQueueKey,
        task: TaskRef,
        wait: Duration,
    ) -> ApiResult<bool> {
        self.routed(&root.namespace_id, &root.name, root.kind, 0, |client| {
            let (root, task) = (root.clone(), task.clone());
            async move { client.forward_task(root, task, wait).await }
        })
        .await
    }

    async fn forward_poll(
        &self,
        root: TaskQueueKey,
        identity: &str,
        wait: Duration,
    ) -> ApiResult<Option<ForwardedDispatch>> {
        let node = self.owner(&root.namespace_id, &root.name, root.kind, 0)?;
        let client = self.client(node);
        tokio::select! {
            answer = client.forward_poll(root.clone(), identity, wait) => answer,
            // The root moved: the child polls again and forwards to the new owner.
            () = self.owner_moved(&root.namespace_id, &root.name, root.kind, 0, node) => Ok(None),
        }
    }

    fn placement_generation(&self) -> u64 {
        *self.generation.borrow()
    }

    fn task_placement(&self, queue: &TaskQueueKey, task: &TaskRef) -> u64 {
        let partition = if task.sticky || task.worker_commands {
            0
        } else {
            partition_of_task(task.shard, task.outbox_id, self.partitions)
        };
        let key = PartitionKey {
            namespace_id: &queue.namespace_id,
            queue: &queue.name,
            kind: kind_byte(queue.kind),
            partition,
        };
        let placement = self.placement.read().expect("ring lock");
        match placement.ring.get(&key) {
            // Node index in the low bits, its joining generation above.
            Some(v) => (placement.joined[v.node] << 16) | (v.node as u64 + 1),
            None => 0,
        }
    }

    fn list_partitions(
        &self,
        namespace_id: &str,
        name: &str,
        kind: TaskKind,
    ) -> Vec<PartitionOwner> {
        let partitions = if name.starts_with(crate::partition::RESERVED_PREFIX) {
            1
        } else {
            self.partitions
        };
        (0..partitions)
            .map(|partition| PartitionOwner {
                key: partition_name(name, partition),
                owner: self
                    .owner(namespace_id, name, kind, partition)
                    .map(|node| self.addrs[node].to_string())
                    .unwrap_or_default(),
            })
            .collect()
    }
}

#[cfg(test)]
#[path = "matching_ring_tests.rs"]
mod tests;
