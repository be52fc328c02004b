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
//! Retries: a call refused before its command reached the log (`NotLeader{proposed: false}`)
//! is always sent again. After an ambiguous failure (the command may still commit: leadership
//! lost after the proposal, a connection lost mid-call) only calls that are idempotent at apply
//! are sent again; the others end with a retryable Unavailable, as Temporal's clients expect.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chronicle_proto::chronicle::history::v1 as hpb;
use chronicle_proto::chronicle::persistence::v1::{NamespaceRecord, TaskToken};
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use chronicle_types::shard::{METADATA_GROUP, shard_for};
use chronicle_types::{ApiError, ApiResult};
use prost::Message;
use tonic::transport::Channel;

use super::RemoteHistory;

#[path = "routed_batch.rs"]
mod batch;
use crate::{
    ActivityHeartbeat, ActivityOutcome, ActivityTarget, HeartbeatOutcome, HistoryService,
    PollerInfo, TaskRef,
};

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
    nodes: Mutex<HashMap<String, RemoteHistory>>,
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
        }
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
            match self.client(addr)?.describe_node().await {
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

    fn client(&self, addr: &str) -> ApiResult<RemoteHistory> {
        let mut nodes = lock(&self.nodes);
        if let Some(client) = nodes.get(addr) {
            return Ok(client.clone());
        }
        let channel = lazy_channel(addr).map_err(ApiError::unavailable)?;
        let client = RemoteHistory::new(channel);
        nodes.insert(addr.to_string(), client.clone());
        Ok(client)
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
        F: Fn(RemoteHistory, u32) -> Fut,
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
        F: Fn(RemoteHistory) -> Fut,
        Fut: Future<Output = ApiResult<T>>,
    {
        let deadline = tokio::time::Instant::now() + ROUTE_DEADLINE;
        let mut backoff = BACKOFF_MIN;
        loop {
            let addr = self.target(group);
            let outcome = call(self.client(&addr)?).await;
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

fn execution_id(e: &Option<chronicle_proto::temporal_api::common::v1::WorkflowExecution>) -> &str {
    e.as_ref().map(|e| e.workflow_id.as_str()).unwrap_or("")
}

#[async_trait]
impl HistoryService for RoutedHistory {
    /// Asked of the history nodes in turn until one has joined the cluster, then kept.
    async fn cluster_id(&self) -> ApiResult<String> {
        if let Some(id) = self.cluster_id.get() {
            return Ok(id.clone());
        }
        let mut last = ApiError::unavailable("no history node is configured");
        for addr in &self.seeds {
            match self.client(addr)?.describe_node().await {
                Ok(info) if !info.cluster_id.is_empty() => {
                    return Ok(self.cluster_id.get_or_init(|| info.cluster_id).clone());
                }
                Ok(_) => {
                    last = ApiError::unavailable(format!(
                        "{addr} has not joined a cluster yet (run `chronicle cluster init`)"
                    ))
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    async fn register_namespace(&self, record: NamespaceRecord) -> ApiResult<()> {
        self.route(METADATA_GROUP, Retry::OnlyIfNotProposed, |h| {
            let record = record.clone();
            async move { h.register_namespace(record).await }
        })
        .await
    }

    async fn update_namespace(&self, record: NamespaceRecord) -> ApiResult<()> {
        // An update carries the whole record: applying it twice leaves the same record.
        self.route(METADATA_GROUP, Retry::Idempotent, |h| {
            let record = record.clone();
            async move { h.update_namespace(record).await }
        })
        .await
    }

    async fn namespace_by_name(&self, name: &str) -> ApiResult<NamespaceRecord> {
        self.route(METADATA_GROUP, Retry::Idempotent, |h| async move {
            h.namespace_by_name(name).await
        })
        .await
    }

    async fn list_namespaces(&self) -> ApiResult<Vec<NamespaceRecord>> {
        self.route(METADATA_GROUP, Retry::Idempotent, |h| async move {
            h.list_namespaces().await
        })
        .await
    }

    async fn update_search_attributes(
        &self,
        namespace: &str,
        add: std::collections::BTreeMap<String, i32>,
        remove: Vec<String>,
    ) -> ApiResult<()> {
        // Adding a name already registered and removing one that is gone change nothing, so
        // applying the change twice leaves the registry as once.
        self.route(METADATA_GROUP, Retry::Idempotent, |h| {
            let (add, remove) = (add.clone(), remove.clone());
            async move { h.update_search_attributes(namespace, add, remove).await }
        })
        .await
    }

    async fn start_workflow(
        &self,
        namespace_id: &str,
        request: ws::StartWorkflowExecutionRequest,
    ) -> ApiResult<ws::StartWorkflowExecutionResponse> {
        let shard = self.shard(namespace_id, &request.workflow_id).await?;
        self.route(shard, Retry::Idempotent, |h| {
            let request = request.clone();
            async move { h.start_workflow(namespace_id, request).await }
        })
        .await
    }

    async fn signal_workflow(
        &self,
        namespace_id: &str,
        request: ws::SignalWorkflowExecutionRequest,
    ) -> ApiResult<()> {
        let shard = self
            .shard(namespace_id, execution_id(&request.workflow_execution))
            .await?;
        self.route(shard, Retry::Idempotent, |h| {
            let request = request.clone();
            async move { h.signal_workflow(namespace_id, request).await }
        })
        .await
    }

    async fn signal_with_start(
        &self,
        namespace_id: &str,
        request: ws::SignalWithStartWorkflowExecutionRequest,
    ) -> ApiResult<ws::SignalWithStartWorkflowExecutionResponse> {
        let shard = self.shard(namespace_id, &request.workflow_id).await?;
        self.route(shard, Retry::Idempotent, |h| {
            let request = request.clone();
            async move { h.signal_with_start(namespace_id, request).await }
        })
        .await
    }

    async fn delete_workflow_execution(
        &self,
        namespace_id: &str,
        request: ws::DeleteWorkflowExecutionRequest,
    ) -> ApiResult<()> {
        let shard = self
            .shard(namespace_id, execution_id(&request.workflow_execution))
            .await?;
        // Deleting twice leaves the same result (the second finds nothing: NotFound), so only
        // a command that surely never reached the log is resent.
        self.route(shard, Retry::OnlyIfNotProposed, |h| {
            let request = request.clone();
            async move { h.delete_workflow_execution(namespace_id, request).await }
        })
        .await
    }

    async fn delete_namespace(
        &self,
        command: chronicle_proto::chronicle::history::v1::DeleteNamespace,
    ) -> ApiResult<()> {
        self.route(METADATA_GROUP, Retry::OnlyIfNotProposed, |h| {
            let command = command.clone();
            async move { h.delete_namespace(command).await }
        })
        .await
    }

    async fn terminate_workflow(
        &self,
        namespace_id: &str,
        request: ws::TerminateWorkflowExecutionRequest,
    ) -> ApiResult<()> {
        let shard = self
            .shard(namespace_id, execution_id(&request.workflow_execution))
            .await?;
        self.route(shard, Retry::OnlyIfNotProposed, |h| {
            let request = request.clone();
            async move { h.terminate_workflow(namespace_id, request).await }
        })
        .await
    }

    async fn reset_workflow(
        &self,
        namespace_id: &str,
        request: ws::ResetWorkflowExecutionRequest,
    ) -> ApiResult<ws::ResetWorkflowExecutionResponse> {
        let shard = self
            .shard(namespace_id, execution_id(&request.workflow_execution))
            .await?;
        // Idempotent at apply: a retry with the request's ID answers the run it created.
        self.route(shard, Retry::Idempotent, |h| {
            let request = request.clone();
            async move { h.reset_workflow(namespace_id, request).await }
        })
        .await
    }

    async fn request_cancel_workflow(
        &self,
        namespace_id: &str,
        request: ws::RequestCancelWorkflowExecutionRequest,
    ) -> ApiResult<()> {
        let shard = self
            .shard(namespace_id, execution_id(&request.workflow_execution))
            .await?;
        self.route(shard, Retry::Idempotent, |h| {
            let request = request.clone();
            async move { h.request_cancel_workflow(namespace_id, request).await }
        })
        .await
    }

    async fn describe_workflow(
        &self,
        namespace_id: &str,
        request: ws::DescribeWorkflowExecutionRequest,
    ) -> ApiResult<ws::DescribeWorkflowExecutionResponse> {
        let shard = self
            .shard(namespace_id, execution_id(&request.execution))
            .await?;
        self.route(shard, Retry::Idempotent, |h| {
            let request = request.clone();
            async move { h.describe_workflow(namespace_id, request).await }
        })
        .await
    }

    async fn get_history(
        &self,
        namespace_id: &str,
        request: ws::GetWorkflowExecutionHistoryRequest,
    ) -> ApiResult<ws::GetWorkflowExecutionHistoryResponse> {
        let shard = self
            .shard(namespace_id, execution_id(&request.execution))
            .await?;
        self.route(shard, Retry::Idempotent, |h| {
            let request = request.clone();
            async move { h.get_history(namespace_id, request).await }
        })
        .await
    }

    async fn get_history_reverse(
        &self,
        namespace_id: &str,
        request: ws::GetWorkflowExecutionHistoryReverseRequest,
    ) -> ApiResult<ws::GetWorkflowExecutionHistoryReverseResponse> {
        let shard = self
            .shard(namespace_id, execution_id(&request.execution))
            .await?;
        self.route(shard, Retry::Idempotent, |h| {
            let request = request.clone();
            async move { h.get_history_reverse(namespace_id, request).await }
        })
        .await
    }

    async fn list_workflows(
        &self,
        request: chronicle_proto::chronicle::history::v1::ListWorkflowsRequest,
    ) -> ApiResult<chronicle_proto::chronicle::history::v1::ListWorkflowsResponse> {
        // Scatter-gather: each shard is asked of its leader (whose state holds every write
        // acknowledged so far; a follower, or a node just back from a partition, may lag), then
        // the pages merge in list order. Each shard returns the first page_size runs after the
        // token, so the first page_size of the merge are the page.
        let answers = self
            .scatter(|h, shard| {
                let mut request = request.clone();
                request.shards = vec![shard];
                async move { h.list_workflows(request).await }
            })
            .await?;
        Ok(merge_list_pages(&request, answers))
    }

    async fn query_workflow(
        &self,
        namespace_id: &str,
        request: ws::QueryWorkflowRequest,
    ) -> ApiResult<ws::QueryWorkflowResponse> {
        let shard = self
            .shard(namespace_id, execution_id(&request.execution))
            .await?;
        self.route(shard, Retry::Idempotent, |h| {
            let request = request.clone();
            async move { h.query_workflow(namespace_id, request).await }
        })
        .await
    }

    async fn update_workflow(
        &self,
        namespace_id: &str,
        request: ws::UpdateWorkflowExecutionRequest,
    ) -> ApiResult<ws::UpdateWorkflowExecutionResponse> {
        let shard = self
            .shard(namespace_id, execution_id(&request.workflow_execution))
            .await?;
        // Admission de-duplicates by update ID at apply: sending it again admits nothing twice.
        self.route(shard, Retry::Idempotent, |h| {
            let request = request.clone();
            async move { h.update_workflow(namespace_id, request).await }
        })
        .await
    }

    async fn poll_workflow_update(
        &self,
        namespace_id: &str,
        request: ws::PollWorkflowExecutionUpdateRequest,
    ) -> ApiResult<ws::PollWorkflowExecutionUpdateResponse> {
        let execution = request
            .update_ref
            .as_ref()
            .and_then(|r| r.workflow_execution.clone());
        let shard = self.shard(namespace_id, execution_id(&execution)).await?;
        self.route(shard, Retry::Idempotent, |h| {
            let request = request.clone();
            async move { h.poll_workflow_update(namespace_id, request).await }
        })
        .await
    }

    async fn update_with_start(
        &self,
        namespace_id: &str,
        start: ws::StartWorkflowExecutionRequest,
        update: ws::UpdateWorkflowExecutionRequest,
    ) -> ApiResult<(
        ws::StartWorkflowExecutionResponse,
        ws::UpdateWorkflowExecutionResponse,
    )> {
        let shard = self.shard(namespace_id, &start.workflow_id).await?;
        // The start de-duplicates by request ID and the update by update ID, at apply.
        self.route(shard, Retry::Idempotent, |h| {
            let (start, update) = (start.clone(), update.clone());
            async move { h.update_with_start(namespace_id, start, update).await }
        })
        .await
    }

    async fn record_workflow_task_started(
        &self,
        task: &TaskRef,
        poller: &PollerInfo,
    ) -> ApiResult<ws::PollWorkflowTaskQueueResponse> {
        self.route(task.shard, Retry::Idempotent, |h| async move {
            h.record_workflow_task_started(task, poller).await
        })
        .await
    }

    async fn record_activity_task_started(
        &self,
        task: &TaskRef,
        poller: &PollerInfo,
    ) -> ApiResult<ws::PollActivityTaskQueueResponse> {
        self.route(task.shard, Retry::Idempotent, |h| async move {
            h.record_activity_task_started(task, poller).await
        })
        .await
    }

    async fn sticky_worker_unavailable(&self, task: &TaskRef) -> ApiResult<()> {
        self.route(task.shard, Retry::Idempotent, |h| async move {
            h.sticky_worker_unavailable(task).await
        })
        .await
    }

    async fn respond_workflow_task_completed(
        &self,
        namespace_id: &str,
        request: ws::RespondWorkflowTaskCompletedRequest,
    ) -> ApiResult<ws::RespondWorkflowTaskCompletedResponse> {
        let shard = self.token_shard(&request.task_token).await?;
        self.route(shard, Retry::Idempotent, |h| {
            let request = request.clone();
            async move {
                h.respond_workflow_task_completed(namespace_id, request)
                    .await
            }
        })
        .await
    }

    async fn respond_workflow_task_failed(
        &self,
        namespace_id: &str,
        request: ws::RespondWorkflowTaskFailedRequest,
    ) -> ApiResult<()> {
        let shard = self.token_shard(&request.task_token).await?;
        self.route(shard, Retry::Idempotent, |h| {
            let request = request.clone();
            async move { h.respond_workflow_task_failed(namespace_id, request).await }
        })
        .await
    }

    async fn respond_activity(
        &self,
        namespace_id: &str,
        outcome: ActivityOutcome,
    ) -> ApiResult<()> {
        let shard = match &outcome.target {
            ActivityTarget::Token(token) => self.token_shard(token).await?,
            ActivityTarget::ById { workflow_id, .. } => {
                self.shard(namespace_id, workflow_id).await?
            }
        };
        self.route(shard, Retry::Idempotent, |h| {
            let outcome = outcome.clone();
            async move { h.respond_activity(namespace_id, outcome).await }
        })
        .await
    }

    async fn record_activity_heartbeat(
        &self,
        namespace_id: &str,
        heartbeat: ActivityHeartbeat,
    ) -> ApiResult<HeartbeatOutcome> {
        let shard = match &heartbeat.target {
            ActivityTarget::Token(token) => self.token_shard(token).await?,
            ActivityTarget::ById { workflow_id, .. } => {
                self.shard(namespace_id, workflow_id).await?
            }
        };
        self.route(shard, Retry::Idempotent, |h| {
            let heartbeat = heartbeat.clone();
            async move { h.record_activity_heartbeat(namespace_id, heartbeat).await }
        })
        .await
    }

    async fn run_operation(
        &self,
        operation: hpb::RunOperation,
    ) -> ApiResult<hpb::RunOperationResult> {
        // Not idempotent at apply (a reset applied twice resets twice; a pause resent would be
        // "already paused"): sent again only when it never reached the log.
        let shard = self
            .shard(&operation.namespace_id, &operation.workflow_id)
            .await?;
        self.route(shard, Retry::OnlyIfNotProposed, |h| {
            let operation = operation.clone();
            async move { h.run_operation(operation).await }
        })
        .await
    }

    async fn propose_transfer(
        &self,
        shard: u32,
        command: hpb::ShardCommand,
    ) -> ApiResult<hpb::CommandResult> {
        self.route(shard, Retry::Idempotent, |h| {
            let command = command.clone();
            async move { h.propose_transfer(shard, command).await }
        })
        .await
    }

    async fn batch(
        &self,
        namespace_id: &str,
        request: hpb::BatchRequest,
    ) -> ApiResult<hpb::BatchResponse> {
        self.route_batch(namespace_id, request).await
    }

    async fn standalone_activity(
        &self,
        namespace_id: &str,
        request: hpb::StandaloneActivityRequest,
    ) -> ApiResult<hpb::StandaloneActivityResponse> {
        use hpb::standalone_activity_request::Op;
        let (activity_id, retry) = match &request.op {
            // A start de-duplicates by its request ID; reads may always be asked again.
            Some(Op::Start(r)) => (r.activity_id.as_str(), Retry::Idempotent),
            Some(Op::Describe(r)) => (r.activity_id.as_str(), Retry::Idempotent),
            Some(Op::Poll(r)) => (r.activity_id.as_str(), Retry::Idempotent),
            // Cancellations and terminations de-duplicate by request ID only when one is given.
            Some(Op::Cancel(r)) => (r.activity_id.as_str(), Retry::OnlyIfNotProposed),
            Some(Op::Terminate(r)) => (r.activity_id.as_str(), Retry::OnlyIfNotProposed),
            Some(Op::Delete(r)) => (r.activity_id.as_str(), Retry::OnlyIfNotProposed),
            None => ("", Retry::OnlyIfNotProposed),
        };
        let key = chronicle_types::standalone_activity::key(activity_id);
        let shard = self.shard(namespace_id, &key).await?;
        self.route(shard, retry, |h| {
            let request = request.clone();
            async move { h.standalone_activity(namespace_id, request).await }
        })
        .await
    }

    async fn nexus_task(
        &self,
        namespace_id: &str,
        request: hpb::NexusTaskRequest,
    ) -> ApiResult<hpb::NexusTaskResponse> {
        use hpb::nexus_task_request::Op;
        let (shard, retry) = match &request.op {
            // Taking a task only reads the caller's run.
            Some(Op::Started(r)) => (
                r.task.as_ref().map(|t| t.shard).ok_or_else(|| {
                    ApiError::invalid_argument("the Nexus task to start is missing")
                })?,
                Retry::Idempotent,
            ),
            // An answer is checked at apply against the pending operation, so a resent one
            // changes nothing more.
            Some(Op::Completed(r)) => (self.token_shard(&r.task_token).await?, Retry::Idempotent),
            Some(Op::Failed(r)) => (self.token_shard(&r.task_token).await?, Retry::Idempotent),
            None => {
                return Err(ApiError::invalid_argument(
                    "the Nexus task request is empty",
                ));
            }
        };
        self.route(shard, retry, |h| {
            let request = request.clone();
            async move { h.nexus_task(namespace_id, request).await }
        })
        .await
    }

    async fn nexus_endpoints(
        &self,
        request: hpb::NexusEndpointsRequest,
    ) -> ApiResult<hpb::NexusEndpointsResponse> {
        use hpb::nexus_endpoints_request::Op;
        // A change applied twice would fail the second time (name taken, version moved on,
        // ID gone): resend it only if it never reached the log. Reads may always be resent.
        let retry = match &request.op {
            Some(Op::Change(_)) | None => Retry::OnlyIfNotProposed,
            Some(Op::GetId(_)) | Some(Op::List(_)) => Retry::Idempotent,
        };
        self.route(METADATA_GROUP, retry, |h| {
            let request = request.clone();
            async move { h.nexus_endpoints(request).await }
        })
        .await
    }

    async fn schedule(
        &self,
        namespace_id: &str,
        request: hpb::ScheduleRequest,
    ) -> ApiResult<hpb::ScheduleResponse> {
        use hpb::schedule_request::Op;
        let schedule_id = match &request.op {
            Some(Op::Create(r)) => Some(r.schedule_id.as_str()),
            Some(Op::Describe(r)) => Some(r.schedule_id.as_str()),
            Some(Op::Update(r)) => Some(r.schedule_id.as_str()),
            Some(Op::Patch(r)) => Some(r.schedule_id.as_str()),
            Some(Op::Delete(r)) => Some(r.schedule_id.as_str()),
            Some(Op::MatchingTimes(r)) => Some(r.schedule_id.as_str()),
            Some(Op::List(_)) | None => None,
        };
        // Creates, updates and patches de-duplicate by request ID at apply; a delete resent
        // after it applied would answer NotFound.
        let retry = if matches!(request.op, Some(Op::Delete(_))) {
            Retry::OnlyIfNotProposed
        } else {
            Retry::Idempotent
        };
        if let Some(Op::List(list)) = &request.op {
            // Scatter to each shard's leader, then merge in schedule ID order.
            let answers = self
                .scatter(|h, shard| {
                    let mut request = request.clone();
                    request.shards = vec![shard];
                    async move { h.schedule(namespace_id, request).await }
                })
                .await?;
            return Ok(merge_schedule_pages(list.maximum_page_size, answers));
        }
        let group = match schedule_id {
            Some(id) => self.shard(namespace_id, id).await?,
            None => METADATA_GROUP,
        };
        self.route(group, retry, |h| {
            let request = request.clone();
            async move { h.schedule(namespace_id, request).await }
        })
        .await
    }
}

/// Merges per-shard ListSchedules pages (each in schedule ID order after the same token).
fn merge_schedule_pages(
    maximum_page_size: i32,
    answers: Vec<hpb::ScheduleResponse>,
) -> hpb::ScheduleResponse {
    use hpb::schedule_response::Op as RespOp;
    let page = if maximum_page_size > 0 {
        maximum_page_size as usize
    } else {
        1000
    };
    let mut more = false;
    let mut schedules = Vec::new();
    for answer in answers {
        if let Some(RespOp::List(list)) = answer.op {
            more |= !list.next_page_token.is_empty();
            schedules.extend(list.schedules);
        }
    }
    schedules.sort_by(|a, b| a.schedule_id.cmp(&b.schedule_id));
    more |= schedules.len() > page;
    schedules.truncate(page);
    let next_page_token = match schedules.last() {
        Some(last) if more => last.schedule_id.clone().into_bytes(),
        _ => Vec::new(),
    };
    hpb::ScheduleResponse {
        op: Some(RespOp::List(ws::ListSchedulesResponse {
            schedules,
            next_page_token,
        })),
    }
}

/// Merges per-shard list (or count) answers into one page in Temporal's list order.
fn merge_list_pages(
    request: &chronicle_proto::chronicle::history::v1::ListWorkflowsRequest,
    answers: Vec<chronicle_proto::chronicle::history::v1::ListWorkflowsResponse>,
) -> chronicle_proto::chronicle::history::v1::ListWorkflowsResponse {
    use chronicle_visibility::order::SortKey;
    let mut merged = chronicle_proto::chronicle::history::v1::ListWorkflowsResponse::default();
    if request.count_only {
        for answer in answers {
            merged.count = merged.count.saturating_add(answer.count);
            for (status, n) in answer.status_counts {
                let total = merged.status_counts.entry(status).or_default();
                *total = total.saturating_add(n);
            }
        }
        return merged;
    }
    let page_size = match request.page_size as usize {
        0 => 1000,
        n => n,
    };
    let mut more = false;
    let mut rows = Vec::new();
    for answer in answers {
        more |= !answer.next_page_token.is_empty();
        for execution in answer.executions {
            let key = execution
                .workflow_execution_info
                .as_ref()
                .map(SortKey::of_info);
            rows.push((key, execution));
        }
    }
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    more |= rows.len() > page_size;
    rows.truncate(page_size);
    merged.next_page_token = match rows.last() {
        Some((Some(key), _)) if more => key.encode(),
        _ => Vec::new(),
    };
    merged.count = rows.len() as i64;
    merged.executions = rows.into_iter().map(|(_, e)| e).collect();
    merged
}

#[cfg(test)]
mod merge_tests {
    use super::*;
    use chronicle_proto::chronicle::history::v1::{ListWorkflowsRequest, ListWorkflowsResponse};
    use chronicle_proto::temporal::api::common::v1::WorkflowExecution;
    use chronicle_proto::temporal::api::workflow::v1::WorkflowExecutionInfo;

    fn run(id: &str, start_secs: i64) -> ws::DescribeWorkflowExecutionResponse {
        ws::DescribeWorkflowExecutionResponse {
            workflow_execution_info: Some(WorkflowExecutionInfo {
                execution: Some(WorkflowExecution {
                    workflow_id: id.into(),
                    run_id: id.into(),
                }),
                start_time: Some(chronicle_proto::wkt::Timestamp {
                    seconds: start_secs,
                    nanos: 0,
                }),
                status: 1,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn ids(answer: &ListWorkflowsResponse) -> Vec<String> {
        answer
            .executions
            .iter()
            .map(|e| {
                e.workflow_execution_info
                    .as_ref()
                    .unwrap()
                    .execution
                    .as_ref()
                    .unwrap()
                    .workflow_id
                    .clone()
            })
            .collect()
    }

    #[test]
    fn shard_pages_merge_in_list_order_and_the_token_marks_the_last_row() {
        let request = ListWorkflowsRequest {
            page_size: 3,
            ..Default::default()
        };
        // Each shard's page is in list order (newest start first) and has more behind it.
        let shard0 = ListWorkflowsResponse {
            executions: vec![run("a", 50), run("c", 30), run("e", 10)],
            next_page_token: b"more".to_vec(),
            ..Default::default()
        };
        let shard1 = ListWorkflowsResponse {
            executions: vec![run("b", 40), run("d", 20)],
            ..Default::default()
        };
        let merged = merge_list_pages(&request, vec![shard0, shard1]);
        assert_eq!(ids(&merged), ["a", "b", "c"]);
        let token = chronicle_visibility::order::SortKey::decode(&merged.next_page_token).unwrap();
        assert_eq!(token.run_id, "c");
    }

    #[test]
    fn schedule_pages_merge_by_id_and_keep_the_page_size() {
        use chronicle_proto::temporal::api::schedule::v1::ScheduleListEntry;
        let page = |ids: &[&str], more: bool| hpb::ScheduleResponse {
            op: Some(hpb::schedule_response::Op::List(
                ws::ListSchedulesResponse {
                    schedules: ids
                        .iter()
                        .map(|id| ScheduleListEntry {
                            schedule_id: id.to_string(),
                            ..Default::default()
                        })
                        .collect(),
                    next_page_token: if more { b"x".to_vec() } else { Vec::new() },
                },
            )),
        };
        let merged = merge_schedule_pages(2, vec![page(&["b", "d"], false), page(&["a"], false)]);
        let Some(hpb::schedule_response::Op::List(list)) = merged.op else {
            panic!("a list")
        };
        let ids: Vec<&str> = list
            .schedules
            .iter()
            .map(|s| s.schedule_id.as_str())
            .collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(list.next_page_token, b"b");
    }

    #[test]
    fn counts_add_up_per_status() {
        let request = ListWorkflowsRequest {
            count_only: true,
            ..Default::default()
        };
        let answer = |count, running, done| ListWorkflowsResponse {
            count,
            status_counts: [(1, running), (2, done)].into_iter().collect(),
            ..Default::default()
        };
        let merged = merge_list_pages(&request, vec![answer(3, 1, 2), answer(4, 4, 0)]);
        assert_eq!(merged.count, 7);
        assert_eq!(merged.status_counts[&1], 5);
        assert_eq!(merged.status_counts[&2], 2);
    }
}
