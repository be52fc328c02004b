//! [`RoutedHistory`]: a [`HistoryService`] over several history nodes that sends each call to
//! the leader of the group it is for (cluster.md §2.6).
//!
//! The group of a call is the workflow's shard (`shard_for(namespace ID, workflow ID)`, also for
//! task tokens and `TaskRef`s, which carry both), or the metadata group for namespaces. Leaders
//! are cached per group. A node that does not lead the group answers Unavailable with a
//! `NotLeader` detail, with the leader's internal address when it knows it: the router goes
//! there at once. Without a hint (an election is in progress) or when a node does not answer,
//! it backs off and tries the next node, until [`ROUTE_DEADLINE`].
//!
//! A node that runs a history role beside the router (every role in one process) registers its
//! engine with [`RoutedHistory::set_local`]: a call whose target is this node's own address is
//! then made in process, with the same answers (a `NotLeader` included) as over the network, so
//! a frontend or matching role reaches the groups its own node leads without a gRPC round trip.
//!
//! Retries: a call refused before its command reached the log (`NotLeader{proposed: false}`)
//! is always sent again. After an ambiguous failure (the command may still commit: leadership
//! lost after the proposal, a connection lost mid-call) only calls that are idempotent at apply
//! are sent again; the others end with a retryable Unavailable, as Temporal's clients expect.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use chronicle_proto::chronicle::persistence::v1::TaskToken;
use chronicle_types::shard::shard_for;
use chronicle_types::{ApiError, ApiResult};
use prost::Message;
use tonic::transport::Channel;

use super::RemoteHistory;
use crate::HistoryService;

#[path = "routed_batch.rs"]
mod batch;
#[path = "routed_merge.rs"]
mod merge;
#[path = "routed_service.rs"]
mod service;

/// How long one call may look for a leader before it answers Unavailable. Longer than a
/// failover (about 2.0–2.7 s with the replicated timing) so calls ride through one.
pub const ROUTE_DEADLINE: Duration = Duration::from_secs(10);
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_millis(400);

/// Whether a call may be sent again after an ambiguous failure.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Checked at apply (request IDs, task tokens' scheduled ID and attempt) or a read.
    Idempotent,
    /// A second application could answer differently (terminate, namespace registration).
    OnlyIfNotProposed,
}

/// A [`HistoryService`] over every history node of a cluster.
pub struct RoutedHistory {
    seeds: Vec<String>,
    /// Clients by internal address: the seeds and any leader address learned from a hint.
    nodes: Mutex<HashMap<String, Arc<RemoteHistory>>>,
    /// This process's history engine and the internal address the other nodes know it by.
    /// Weak: the engine holds this router (its transfer tasks go through it).
    local: OnceLock<(String, Weak<dyn HistoryService>)>,
    /// Last known leader's address per group.
    leaders: Mutex<HashMap<u32, String>>,
    /// Rotates the seed tried first when a group's leader is unknown.
    next_seed: AtomicUsize,
    /// Shard count of the cluster (0 until a node told us).
    num_shards: AtomicU32,
    /// The cluster's ID, once a node answered with one (it never changes).
    cluster_id: std::sync::OnceLock<String>,
}

/// A lazily connected channel to another node's internal API (history or matching): nodes may start
/// in any order, and calls fail with Unavailable until the peer answers.
pub fn lazy_channel(addr: &str) -> Result<Channel, String> {
    // Plaintext or mutual TLS, as the process was configured (`chronicle_types::tls`).
    Ok(
        chronicle_types::tls::internal_endpoint(addr, Duration::from_millis(500))?
            .http2_keep_alive_interval(Duration::from_secs(1))
            .keep_alive_timeout(Duration::from_secs(2))
            .keep_alive_while_idle(true)
            .connect_lazy(),
    )
}

impl RoutedHistory {
    /// A router over the history nodes at `seeds` (their internal addresses).
    pub fn new(seeds: Vec<String>) -> Self {
        Self {
            seeds,
            nodes: Mutex::new(HashMap::new()),
            leaders: Mutex::new(HashMap::new()),
            next_seed: AtomicUsize::new(0),
            num_shards: AtomicU32::new(0),
            cluster_id: std::sync::OnceLock::new(),
            local: OnceLock::new(),
        }
    }

    /// Serves calls addressed to `addr` (this node's advertised internal address) with the
    /// history engine of this process instead of over the network. Set once.
    pub fn set_local(&self, addr: String, engine: Weak<dyn HistoryService>) {
        let _ = self.local.set((addr, engine));
    }

    /// Sets the shard count (a history node's router knows it from its data directory).
    pub fn set_num_shards(&self, num_shards: u32) {
        self.num_shards.store(num_shards, Ordering::SeqCst);
    }

    /// The cluster's shard count, asked of the first node that answers.
    pub async fn num_shards(&self) -> ApiResult<u32> {
        let known = self.num_shards.load(Ordering::SeqCst);
        if known != 0 {
            return Ok(known);
        }
        let mut last = ApiError::unavailable("no history node is configured");
        for addr in &self.seeds {
            match self.remote(addr)?.describe_node().await {
                Ok(info) if info.num_shards > 0 => {
                    self.num_shards.store(info.num_shards, Ordering::SeqCst);
                    return Ok(info.num_shards);
                }
                Ok(_) => last = ApiError::unavailable(format!("{addr} has no shards")),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// The last known leader of `group`, for tests and diagnostics.
    pub fn cached_leader(&self, group: u32) -> Option<String> {
        lock(&self.leaders).get(&group).cloned()
    }

    fn remote(&self, addr: &str) -> ApiResult<Arc<RemoteHistory>> {
        let mut nodes = lock(&self.nodes);
        if let Some(client) = nodes.get(addr) {
            return Ok(client.clone());
        }
        let channel = lazy_channel(addr).map_err(ApiError::unavailable)?;
        let client = Arc::new(RemoteHistory::new(channel));
        nodes.insert(addr.to_string(), client.clone());
        Ok(client)
    }

    /// This process's engine, when `addr` is this node.
    fn local_engine(&self, addr: &str) -> Option<Arc<dyn HistoryService>> {
        let (me, engine) = self.local.get()?;
        (me == addr).then(|| engine.upgrade()).flatten()
    }

    async fn shard(&self, namespace_id: &str, workflow_id: &str) -> ApiResult<u32> {
        Ok(shard_for(
            namespace_id,
            workflow_id,
            self.num_shards().await?,
        ))
    }

    async fn token_shard(&self, token: &[u8]) -> ApiResult<u32> {
        let token = TaskToken::decode(token)
            .map_err(|_| ApiError::invalid_argument("Error deserializing task token."))?;
        self.shard(&token.namespace_id, &token.workflow_id).await
    }

    fn target(&self, group: u32) -> String {
        if let Some(leader) = lock(&self.leaders).get(&group) {
            return leader.clone();
        }
        let n = self.seeds.len().max(1);
        let i = self.next_seed.fetch_add(1, Ordering::Relaxed) % n;
        self.seeds.get(i).cloned().unwrap_or_default()
    }

    fn forget(&self, group: u32, addr: &str) {
        let mut leaders = lock(&self.leaders);
        if leaders.get(&group).is_some_and(|a| a == addr) {
            leaders.remove(&group);
        }
    }

    /// Sends `call` to `group`'s leader, following hints and retrying as the module explains.
    /// Calls every shard's leader with `call(client, shard)` at once (idempotent reads: list
    /// and count, ListSchedules) and returns the answers in shard order.
    async fn scatter<T, F, Fut>(&self, call: F) -> ApiResult<Vec<T>>
    where
        F: Fn(Arc<dyn HistoryService>, u32) -> Fut,
        Fut: Future<Output = ApiResult<T>>,
    {
        let num_shards = self.num_shards().await?;
        let call = &call;
        futures::future::try_join_all(
            (0..num_shards)
                .map(|shard| self.route(shard, Retry::Idempotent, move |h| call(h, shard))),
        )
        .await
    }

    async fn route<T, F, Fut>(&self, group: u32, retry: Retry, call: F) -> ApiResult<T>
    where
        F: Fn(Arc<dyn HistoryService>) -> Fut,
        Fut: Future<Output = ApiResult<T>>,
    {
        let deadline = tokio::time::Instant::now() + ROUTE_DEADLINE;
        let mut backoff = BACKOFF_MIN;
        loop {
            let addr = self.target(group);
            let local = self.local_engine(&addr);
            let in_process = local.is_some();
            let node = match local {
                Some(engine) => engine,
                None => self.remote(&addr)?,
            };
            let outcome = call(node).await;
            // Counted once answered here: a local replica that does not lead the group refuses
            // the call, which then crosses the network.
            if in_process
                && outcome
                    .as_ref()
                    .err()
                    .is_none_or(|e| e.not_leader_detail().is_none())
            {
                crate::metric_defs::count_in_process(crate::metric_defs::HISTORY_ROLE);
            }
            let error = match outcome {
                Ok(value) => {
                    lock(&self.leaders).insert(group, addr);
                    return Ok(value);
                }
                Err(e) => e,
            };
            let hint = error.not_leader_detail();
            let retryable = match &hint {
                Some(h) => !h.proposed || retry == Retry::Idempotent,
                // No answer from the node: refused or dropped connection (Unavailable), or a
                // call cut off because the node died mid-call (hyper's "operation was canceled",
                // Cancelled). Whether it reached the log is unknown: resend only what is
                // idempotent at apply.
                None if matches!(
                    error.code,
                    tonic::Code::Unavailable | tonic::Code::Cancelled
                ) =>
                {
                    retry == Retry::Idempotent
                }
                None => return Err(error),
            };
            self.forget(group, &addr);
            if !retryable || tokio::time::Instant::now() >= deadline {
                return Err(without_hint(error, group));
            }
            // A node that does not hold the group names the nodes that do: try one of them
            // (a different one each time, so a dead one is not tried forever).
            let replica = hint.as_ref().and_then(|h| {
                let others: Vec<&String> = h.replica_addrs.iter().filter(|a| **a != addr).collect();
                let n = others.len();
                (n > 0).then(|| others[self.next_seed.fetch_add(1, Ordering::Relaxed) % n].clone())
            });
            match hint
                .map(|h| h.leader_addr)
                .filter(|a| !a.is_empty() && *a != addr)
                .or(replica)
            {
                Some(leader) => {
                    // Go to the hinted leader at once; a stale hint costs one more hop.
                    lock(&self.leaders).insert(group, leader);
                }
                None => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }
}

/// What the router answers after giving up: Unavailable without Chronicle's internal detail
/// (clients retry Unavailable; the detail means nothing to them).
fn without_hint(error: ApiError, group: u32) -> ApiError {
    if error.not_leader_detail().is_some() {
        ApiError::unavailable(format!(
            "no leader of history group {group} could take the call; retry"
        ))
    } else {
        error
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section leaves the map whole.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
