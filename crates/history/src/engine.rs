//! Starting a node's shard groups and proposing commands to them.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chronicle_cluster::MatchingService;
use chronicle_proto::chronicle::history::v1::{self as cmd, command_result, shard_command};
use chronicle_proto::temporal::api::enums::v1::{ResourceExhaustedCause, ResourceExhaustedScope};
use chronicle_raft::{
    Bootstrap, GroupRegistry, GroupTiming, GrpcNetworkFactory, PeerPool, RaftError, ShardRaft,
};
use chronicle_storage::{Db, ShardTables};
use chronicle_types::shard::{METADATA_GROUP, ShardId, shard_for};
use chronicle_types::{ApiError, ApiResult};
use prost::Message;
use tokio::sync::{Semaphore, mpsc, oneshot, watch};

use crate::apply::HistoryApplier;
use crate::metric_defs;
use crate::namespace_names::NamespaceNames;
use crate::notify::{ShardNotifier, WorkflowWatch};

mod group;
mod proposals;

pub(crate) use group::open_group;
use group::wait_until_ready;
use proposals::{PendingCommand, command_label};

#[derive(Clone)]
pub struct HistoryConfig {
    pub num_shards: u32,
    pub node_id: u64,
    pub node_addr: String,
    /// Make this node the only voter of groups never initialised (start-dev).
    pub bootstrap_single_voter: bool,
    /// Groups replicated across history nodes over the gRPC transport; `None`: every group has
    /// this node as its only voter and never talks to another node (start-dev).
    pub replication: Option<Replication>,
    /// Start activities whose ScheduleActivityTask command requests eager execution and hand
    /// them back in the workflow task completion's answer (Temporal's
    /// `system.enableActivityEagerExecution`).
    pub eager_activities: bool,
    /// History limits, for every namespace and by namespace: from which length and size
    /// workflow tasks suggest continue-as-new, and past which a run is terminated (Temporal's
    /// `limit.historyCount.*` and `limit.historySize.*`). Stamped into the commands, so every
    /// replica applies the leader's.
    pub history_limits: chronicle_types::limits::HistoryLimitsConfig,
    /// Commands that may wait per shard to be proposed (behind the entries being committed);
    /// past it a write is refused with RESOURCE_EXHAUSTED instead of queueing. 0: the default,
    /// [`DEFAULT_MAX_PENDING_PROPOSALS`].
    pub max_pending_proposals: usize,
}

/// Commands waiting per shard before writes are refused (about 40 full entries).
pub const DEFAULT_MAX_PENDING_PROPOSALS: usize = 10_000;

/// How a node's groups reach their replicas on other nodes.
#[derive(Clone)]
pub struct Replication {
    /// Channels to peers, shared by every group of the node.
    pub peers: PeerPool,
    /// Where the node's `TransportService` finds its groups; each group is added once started.
    pub registry: GroupRegistry,
}

impl std::fmt::Debug for HistoryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HistoryConfig")
            .field("num_shards", &self.num_shards)
            .field("node_id", &self.node_id)
            .field("node_addr", &self.node_addr)
            .field("replicated", &self.replication.is_some())
            .finish_non_exhaustive()
    }
}

pub(crate) struct Shard {
    pub id: ShardId,
    pub raft: ShardRaft,
    pub tables: ShardTables,
    pub changes: watch::Receiver<u64>,
    /// Earliest fire time of the timers applied since the timer loop last looked (`i64::MAX`:
    /// none); see [`ShardNotifier::timer_floor`].
    pub timer_floor: Arc<std::sync::atomic::AtomicI64>,
    notifier: ShardNotifier,
    /// Commands waiting to be proposed; see [`proposals::proposal_loop`].
    /// Bounded ([`HistoryConfig::max_pending_proposals`]): a full queue refuses the write.
    proposals: mpsc::Sender<PendingCommand>,
    /// The last log index the group had when it opened: it has caught up once it applied it.
    start_log_index: u64,
    caught_up: AtomicBool,
    /// Ages of the oldest queued work, kept by the timer and outbox loops while this node leads
    /// the shard (read by [`HistoryEngine::record_shard_gauge`]).
    pub(crate) queue_ages: QueueAges,
    /// The term in which this node, as leader, has applied every entry of earlier terms (0:
    /// none). `current_leader == self` is published when the vote commits, before the new
    /// term's blank entry is applied: processors and reads wait for this (cluster.md §2.7).
    ready_term: Arc<AtomicU64>,
    /// Set when this node dropped the replica (`placement.rs`): the group's loops stop. A group
    /// taken up again later is a new `Shard` in the same slot.
    pub(crate) retired: AtomicBool,
    /// Latest `ShardCommand.now` proposed or applied on this shard, in microseconds since the
    /// epoch: the next command is stamped later than it, so event times never go backwards
    /// after a failover to a node with a slower clock.
    last_now: Arc<AtomicI64>,
}

impl Shard {
    /// Subscribes to changes of one workflow of this shard (for long polls).
    pub fn watch_workflow(&self, namespace_id: &str, workflow_id: &str) -> WorkflowWatch {
        self.notifier
            .watch_workflow(self.id, namespace_id, workflow_id)
    }
}

pub struct HistoryEngine {
    pub(crate) config: HistoryConfig,
    pub(crate) shards: crate::shard_slots::ShardSlots,
    pub(crate) metadata: Arc<Shard>,
    pub(crate) matching: Arc<dyn MatchingService>,
    pub(crate) namespace_names: Arc<NamespaceNames>,
    pub(crate) queries: crate::queries::QueryRegistry,
    pub(crate) shutdown: watch::Sender<bool>,
    /// Reaches the leaders of shards led by other nodes (transfer tasks); see
    /// [`HistoryEngine::set_router`].
    pub(crate) router: std::sync::OnceLock<Arc<dyn chronicle_cluster::HistoryService>>,
    /// Each group's leader at the last scrape, to count leader changes (`group_status.rs`).
    pub(crate) last_seen_leaders: std::sync::Mutex<Vec<Option<u64>>>,
    /// Groups whose replica moved away from this node while it ran (`placement.rs`).
    pub(crate) dropped: std::sync::Mutex<std::collections::BTreeSet<ShardId>>,
    /// Held while a replica is dropped or taken up again, so the two never interleave.
    pub(crate) replica_changes: tokio::sync::Mutex<()>,
    /// What opening a group needs after the start (a dropped replica taken up again).
    pub(crate) applier: Arc<HistoryApplier>,
    pub(crate) notifier: ShardNotifier,
    /// Groups whose Raft core stopped on a fatal error or panicked, from every instance this
    /// engine opened (a replica taken up again included); read by [`HistoryEngine::failed_group`].
    fatal: (
        mpsc::UnboundedSender<GroupFailure>,
        tokio::sync::Mutex<mpsc::UnboundedReceiver<GroupFailure>>,
    ),
}

/// A group that stopped serving, and why.
type GroupFailure = (ShardId, String);

impl HistoryEngine {
    /// Opens every group of this node and starts the leader processors.
    pub async fn start(
        db: Db,
        config: HistoryConfig,
        matching: Arc<dyn MatchingService>,
    ) -> Result<Arc<Self>, RaftError> {
        let notifier = ShardNotifier::default();
        let namespace_names = Arc::new(NamespaceNames::new(ShardTables::new(
            db.clone(),
            METADATA_GROUP,
        )));
        let applier = Arc::new(HistoryApplier {
            notifier: notifier.clone(),
            namespace_names: Some(namespace_names.clone()),
        });
        let (shutdown, _) = watch::channel(false);
        // Replicas moved to other nodes while this node ran: their data goes before they open.
        let dropped = db.dropped_groups().map_err(|e| RaftError::Start {
            group: METADATA_GROUP,
            reason: format!("reading the dropped groups: {e}"),
        })?;
        for group in &dropped {
            db.wipe_group(*group).map_err(|e| RaftError::Start {
                group: *group,
                reason: format!("deleting the data of a replica moved away: {e}"),
            })?;
            tracing::info!(group, "deleted the data of a replica moved to other nodes");
        }
        if !dropped.is_empty() {
            db.set_dropped_groups(&[]).map_err(|e| RaftError::Start {
                group: METADATA_GROUP,
                reason: e.to_string(),
            })?;
        }
        let mut shards = Vec::new();
        for id in 0..config.num_shards {
            // Visibility indexes for runs applied before they existed, before the group applies.
            chronicle_storage::visibility::build_if_missing(&db, id).map_err(|e| {
                RaftError::Start {
                    group: id,
                    reason: format!("building visibility indexes: {e}"),
                }
            })?;
            shards.push(Arc::new(
                open_group(&db, id, &config, &applier, &notifier, &shutdown).await?,
            ));
        }
        let metadata = Arc::new(
            open_group(&db, METADATA_GROUP, &config, &applier, &notifier, &shutdown).await?,
        );
        // A group founded with other voters (a start-dev directory started as a cluster node,
        // or the reverse) would never elect this node and would silently serve nothing.
        // Asked of the group's Raft core, not read from its metrics: the metrics start empty
        // and only show the stored membership once the core has reported, so a read right after
        // opening could miss it and let a foreign directory start.
        for group in shards.iter().chain(std::iter::once(&metadata)) {
            // A learner (a replacement node still catching up) is a member too.
            let node_id = config.node_id;
            let (voters, member): (Vec<u64>, bool) = group
                .raft
                .with_raft_state(move |state| {
                    let membership = state.membership_state.effective();
                    (
                        membership.voter_ids().collect(),
                        membership.membership().get_node(&node_id).is_some(),
                    )
                })
                .await
                .map_err(|e| RaftError::Start {
                    group: group.id,
                    reason: e.to_string(),
                })?;
            if !voters.is_empty() && !member {
                let group_id = group.id;
                for group in shards.iter().chain(std::iter::once(&metadata)) {
                    let _ = group.raft.shutdown().await;
                }
                return Err(RaftError::Start {
                    group: group_id,
                    reason: format!(
                        "the data directory's groups have voters {voters:?}, not this node ({}): \
                         a start-dev directory cannot join a cluster, nor can a cluster node's \
                         directory run without --replicated",
                        config.node_id
                    ),
                });
            }
        }
        let engine = Arc::new(Self {
            config,
            shards: crate::shard_slots::ShardSlots::new(shards),
            metadata,
            matching,
            namespace_names,
            queries: Default::default(),
            shutdown,
            router: std::sync::OnceLock::new(),
            last_seen_leaders: Default::default(),
            dropped: Default::default(),
            replica_changes: Default::default(),
            applier,
            notifier,
            fatal: {
                let (tx, rx) = mpsc::unbounded_channel();
                (tx, tokio::sync::Mutex::new(rx))
            },
        });
        for group in engine
            .shards
            .iter()
            .chain(std::iter::once(engine.metadata.clone()))
        {
            engine.watch_for_failure(&group);
        }
        // A single voter elects itself within its election timeout; wait for that (and for the
        // group to be ready) so that start-dev answers its first requests. A replicated group's
        // leader may be elsewhere or not elected yet (no quorum, not initialised): the node
        // serves at once and answers NotLeader meanwhile.
        if engine.config.replication.is_none() {
            for group in engine
                .shards
                .iter()
                .chain(std::iter::once(engine.metadata.clone()))
            {
                wait_until_ready(&group, engine.config.node_id, Duration::from_secs(10)).await;
            }
        }
        for shard in engine.shards.iter() {
            crate::processors::spawn(engine.clone(), shard.clone(), engine.shutdown.subscribe());
        }
        Ok(engine)
    }

    /// Initialises `groups` of this node (every group when empty) with `members` as their
    /// voters (`chronicle cluster init`). Refused if one of them already has a membership: a
    /// cluster is founded once, and initialising a group again with other voters would split it.
    pub async fn initialize_cluster(
        &self,
        members: std::collections::BTreeMap<u64, openraft::BasicNode>,
        groups: &[ShardId],
    ) -> ApiResult<u32> {
        if !members.contains_key(&self.config.node_id) {
            return Err(ApiError::invalid_argument(format!(
                "the members do not include this node ({})",
                self.config.node_id
            )));
        }
        let targets: Vec<Arc<Shard>> = if groups.is_empty() {
            self.shards
                .iter()
                .chain(std::iter::once(self.metadata.clone()))
                .collect()
        } else {
            groups
                .iter()
                .map(|g| self.shard_by_id(*g))
                .collect::<ApiResult<_>>()?
        };
        for group in &targets {
            if group
                .raft
                .is_initialized()
                .await
                .map_err(|e| ApiError::unavailable(e.to_string()))?
            {
                return Err(ApiError::new(
                    tonic::Code::AlreadyExists,
                    format!(
                        "group {} is already initialised: the cluster exists",
                        group.id
                    ),
                ));
            }
        }
        for group in &targets {
            chronicle_raft::initialize_group(&group.raft, group.id, members.clone())
                .await
                .map_err(|e| ApiError::unavailable(e.to_string()))?;
        }
        Ok(targets.len() as u32)
    }

    /// Whether any group of this node has a membership (initialised here or joined).
    /// The cluster ID to report (GetClusterInfo): the one this node joined, else on a
    /// single-node server (start-dev) its own, minted at the first call and kept for the life of
    /// the data directory; empty on a replicated node that has not joined a cluster yet.
    pub fn reported_cluster_id(&self) -> ApiResult<String> {
        let db = self.metadata.tables.db();
        if let Some(id) = db.cluster_id().map_err(crate::read::storage)? {
            return Ok(id);
        }
        if self.config.replication.is_some() {
            return Ok(String::new());
        }
        db.dev_cluster_id(|| uuid::Uuid::new_v4().to_string())
            .map_err(crate::read::storage)
    }

    pub async fn is_initialized(&self) -> ApiResult<bool> {
        let dropped = self
            .dropped
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        // A node that gave up a replica was in a cluster (and that group's instance is stopped).
        if !dropped.is_empty() {
            return Ok(true);
        }
        for group in self
            .shards
            .iter()
            .chain(std::iter::once(self.metadata.clone()))
        {
            if group
                .raft
                .is_initialized()
                .await
                .map_err(|e| ApiError::unavailable(e.to_string()))?
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Whether this node's replica of the metadata group has the namespace (no leader check).
    pub fn has_local_namespace(&self, name: &str) -> bool {
        matches!(self.metadata.tables.namespace(name), Ok(Some(_)))
    }

    pub fn is_shut_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Stops the processors and the Raft groups. Committed state is already durable.
    pub async fn shutdown(&self) {
        self.shutdown.send_replace(true);
        for group in self
            .shards
            .iter()
            .chain(std::iter::once(self.metadata.clone()))
        {
            if let Some(replication) = &self.config.replication {
                // Peers now get NoSuchGroup (reported to openraft as Unreachable).
                replication.registry.remove(group.id);
            }
            if let Err(e) = group.raft.shutdown().await {
                tracing::warn!(group = group.id, error = %e, "raft group did not stop cleanly");
            }
        }
    }

    /// Resolves when a group of this node stopped on a fatal error (its storage failed while
    /// applying the log, for one): the group serves nothing any more, and the node must exit so
    /// that it restarts and re-applies its log. Never resolves while every group runs, nor for
    /// groups stopped by [`HistoryEngine::shutdown`].
    pub async fn failed_group(&self) -> (ShardId, String) {
        let mut failures = self.fatal.1.lock().await;
        match failures.recv().await {
            Some(failed) => failed,
            // The engine holds a sender as long as it lives.
            None => std::future::pending().await,
        }
    }

    /// Reports to [`HistoryEngine::failed_group`] when this instance of a group stops on a
    /// fatal error, or its core ends without saying why (a panic: openraft panics on some
    /// protocol violations, such as a follower whose log went back), so the node fails fast
    /// instead of keeping a group that serves nothing until someone restarts it. An instance
    /// stopped on purpose (shutdown, a dropped replica) is not reported.
    pub(crate) fn watch_for_failure(&self, group: &Shard) {
        let mut metrics = group.raft.metrics();
        let tx = self.fatal.0.clone();
        let id = group.id;
        tokio::spawn(async move {
            loop {
                let (stopped, fatal) = match &metrics.borrow_and_update().running_state {
                    Ok(()) => (false, None),
                    Err(openraft::error::Fatal::Stopped) => (true, None),
                    Err(e) => (true, Some(e.to_string())),
                };
                if let Some(reason) = fatal {
                    let _ = tx.send((id, reason));
                    return;
                }
                if metrics.changed().await.is_err() {
                    if !stopped {
                        let _ = tx.send((
                            id,
                            "the Raft core ended without a reason (it panicked)".to_string(),
                        ));
                    }
                    return;
                }
            }
        });
    }

    pub fn num_shards(&self) -> u32 {
        self.config.num_shards
    }

    /// This node's ID (the random ID of its data directory).
    pub fn node_id(&self) -> u64 {
        self.config.node_id
    }

    pub(crate) fn shard_of(&self, namespace_id: &str, workflow_id: &str) -> Arc<Shard> {
        self.shards
            .get(shard_for(namespace_id, workflow_id, self.config.num_shards) as usize)
            .expect("shard_for is below the shard count")
    }

    pub(crate) fn shard_by_id(&self, id: ShardId) -> ApiResult<Arc<Shard>> {
        if id == METADATA_GROUP {
            return Ok(self.metadata.clone());
        }
        self.shards.get(id as usize).ok_or_else(|| {
            ApiError::invalid_argument(format!(
                "shard {id} does not exist ({} shards)",
                self.config.num_shards
            ))
        })
    }

    /// `Ok` if this node leads `shard` and may serve it (reads, proposals); otherwise the
    /// NotLeader error that sends the caller to the leader.
    pub(crate) fn check_leader(&self, shard: &Shard) -> ApiResult<()> {
        if self.is_leader(shard) {
            return Ok(());
        }
        if self.config.replication.is_some() && !self.hosts(shard) {
            return Err(self.not_hosted(shard.id));
        }
        let metrics = shard.raft.metrics().borrow().clone();
        let leader = metrics.current_leader.filter(|l| *l != self.config.node_id);
        // The leader's BasicNode.addr is its Raft address, which is also its internal API
        // address (both are served on the internal listener).
        let addr = leader.and_then(|l| {
            metrics
                .membership_config
                .membership()
                .get_node(&l)
                .map(|n| n.addr.clone())
        });
        Err(ApiError::not_leader(shard.id, leader, addr, false))
    }

    /// Proposes a command to `shard` and returns what applying it answered.
    pub(crate) async fn propose(
        &self,
        shard: &Shard,
        kind: shard_command::Kind,
    ) -> ApiResult<command_result::Result> {
        self.check_leader(shard)?;
        let label = command_label(&kind);
        let operation = metric_defs::persistence_operation(&kind);
        // A run this command closes gets its namespace's retention timer (the leader's view of
        // the namespace, carried in the command so every replica arms the same timer).
        let retention = match metric_defs::command_namespace(&kind) {
            metric_defs::CommandNamespace::Id(id) => self.namespace_names.retention(id),
            _ => None,
        };
        let namespace = match metric_defs::command_namespace(&kind) {
            metric_defs::CommandNamespace::Id(id) => {
                let name = self.namespace_name(id);
                if name.is_empty() {
                    "_unknown_".to_string()
                } else {
                    name
                }
            }
            metric_defs::CommandNamespace::Name(name) => name.to_string(),
            metric_defs::CommandNamespace::System => "system".to_string(),
        };
        let command = cmd::ShardCommand {
            now: Some(monotonic_now(&shard.last_now)),
            kind: Some(kind),
            batch: Vec::new(),
            retention,
        };
        let started = Instant::now();
        let persistence = [
            ("service_name", metric_defs::SERVICE_NAME.to_string()),
            ("operation", operation.to_string()),
            ("namespace", namespace),
        ];
        metrics::counter!(metric_defs::PERSISTENCE_REQUESTS, &persistence[..]).increment(1);
        let committed = async {
            let (reply, answer) = oneshot::channel();
            shard
                .proposals
                .try_send(PendingCommand { command, reply })
                .map_err(|e| match e {
                    mpsc::error::TrySendError::Full(_) => {
                        metrics::counter!(metric_defs::SHARD_OVERLOADED).increment(1);
                        ApiError::resource_exhausted_for(
                            format!(
                                "shard {} is overloaded: too many writes are waiting to be \
                                 committed (limit {})",
                                shard.id,
                                shard.proposals.max_capacity()
                            ),
                            ResourceExhaustedCause::SystemOverloaded,
                            ResourceExhaustedScope::System,
                        )
                    }
                    mpsc::error::TrySendError::Closed(_) => {
                        ApiError::unavailable(format!("shard {} is shutting down", shard.id))
                    }
                })?;
            answer.await.map_err(|_| {
                ApiError::unavailable(format!("shard {} stopped before answering", shard.id))
            })?
        };
        let result = match committed.await {
            Ok(result) => result,
            Err(e) => {
                metrics::counter!(metric_defs::PERSISTENCE_ERRORS, &persistence[..]).increment(1);
                return Err(e);
            }
        };
        let elapsed = started.elapsed().as_secs_f64();
        metrics::histogram!(metric_defs::PERSISTENCE_LATENCY, &persistence[..]).record(elapsed);
        metrics::counter!(metric_defs::SHARD_COMMANDS, "command" => label).increment(1);
        metrics::histogram!(metric_defs::SHARD_COMMAND_LATENCY).record(elapsed);
        match result.result {
            Some(command_result::Result::Error(e)) => {
                Err(ApiError::from_parts(e.code, e.message, &e.details))
            }
            Some(other) => Ok(other),
            None => Err(ApiError::internal("empty command result")),
        }
    }

    /// Whether this node serves: every group it hosts has a leader and has applied the log it
    /// found when it opened. `Err` says which group is not there yet. Once caught up, a group
    /// stays caught up (later entries are load, not recovery); a group without a leader makes
    /// the node unready again.
    pub fn readiness(&self) -> Result<(), String> {
        // With more nodes than replicas, a node holds only the groups placed on it.
        let replicated = self.config.replication.is_some();
        if replicated && !self.hosts(&self.metadata) {
            return Err("the node is not a member of a cluster yet".into());
        }
        for shard in self
            .shards
            .iter()
            .chain(std::iter::once(self.metadata.clone()))
        {
            if replicated && !self.hosts(&shard) {
                continue;
            }
            let metrics = shard.raft.metrics().borrow().clone();
            let group = if shard.id == METADATA_GROUP {
                "the metadata group".to_string()
            } else {
                format!("shard {}", shard.id)
            };
            if let Err(e) = &metrics.running_state {
                return Err(format!("{group} stopped: {e}"));
            }
            if metrics.current_leader.is_none() {
                return Err(format!("{group} has no leader"));
            }
            if !shard.caught_up.load(Ordering::Relaxed) {
                let applied = metrics.last_applied.map(|l| l.index).unwrap_or(0);
                if applied < shard.start_log_index {
                    return Err(format!(
                        "{group} is applying its log ({applied} of {})",
                        shard.start_log_index
                    ));
                }
                shard.caught_up.store(true, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// Sets Temporal's `numshards_gauge` (the history shards this node leads) and the ages of
    /// the oldest queued timer and outbox task over those shards, at scrape time.
    pub fn record_shard_gauge(&self) {
        let led: Vec<Arc<Shard>> = self.shards.iter().filter(|s| self.is_leader(s)).collect();
        metrics::gauge!(
            metric_defs::NUMSHARDS_GAUGE,
            "service_name" => metric_defs::SERVICE_NAME,
            "operation" => "ShardController",
        )
        .set(led.len() as f64);
        let now = chronicle_types::time::now_millis();
        let age = |since: &AtomicI64| -> f64 {
            match since.load(Ordering::Relaxed) {
                i64::MAX => 0.0,
                ms => now.saturating_sub(ms).max(0) as f64 / 1000.0,
            }
        };
        let (mut timer_lag, mut outbox_age) = (0.0f64, 0.0f64);
        for shard in &led {
            timer_lag = timer_lag.max(age(&shard.queue_ages.oldest_due_timer_ms));
            outbox_age = outbox_age.max(age(&shard.queue_ages.oldest_outbox_task_ms));
        }
        metrics::gauge!(metric_defs::TIMER_QUEUE_LAG).set(timer_lag);
        metrics::gauge!(metric_defs::OUTBOX_OLDEST_TASK_AGE).set(outbox_age);
    }

    /// Sets the client that routes commands to shards this node does not lead. Without one
    /// (start-dev), every command is proposed locally.
    pub fn set_router(&self, router: Arc<dyn chronicle_cluster::HistoryService>) {
        let _ = self.router.set(router);
    }

    /// Proposes `kind` on `shard` here if this node leads it, otherwise through the router at
    /// the shard's leader. Only for commands checked at apply (transfer tasks): the router may
    /// send them again after an ambiguous failure. A failure leaves the caller's outbox row in
    /// place, and the sweep runs it again.
    pub(crate) async fn propose_anywhere(
        &self,
        shard: &Shard,
        kind: shard_command::Kind,
    ) -> ApiResult<command_result::Result> {
        // Measured as Temporal's history measures its calls to other history hosts, whether
        // the shard is led here or elsewhere (Temporal's dev server calls itself too).
        let measured = metric_defs::transfer_client_call(&kind).map(|(operation, namespace_id)| {
            chronicle_cluster::metric_defs::ClientCall::start(
                metric_defs::SERVICE_NAME,
                chronicle_cluster::metric_defs::HISTORY_ROLE,
                format!("HistoryClient{operation}"),
                Some(self.namespace_name(namespace_id)),
            )
        });
        let result = self.propose_on_leader(shard, kind).await;
        if let Some(measured) = measured {
            measured.finish(&result);
        }
        result
    }

    async fn propose_on_leader(
        &self,
        shard: &Shard,
        kind: shard_command::Kind,
    ) -> ApiResult<command_result::Result> {
        let router = match self.router.get() {
            Some(router) if !self.is_leader(shard) => router,
            _ => return self.propose(shard, kind).await,
        };
        let command = cmd::ShardCommand {
            now: None,
            kind: Some(kind),
            batch: Vec::new(),
            retention: None,
        };
        let result = router.propose_transfer(shard.id, command).await?;
        match result.result {
            Some(command_result::Result::Error(e)) => {
                Err(ApiError::from_parts(e.code, e.message, &e.details))
            }
            Some(other) => Ok(other),
            None => Err(ApiError::internal("empty command result")),
        }
    }

    /// This node leads `shard` and has applied every entry of earlier terms. Processors run
    /// only while this holds and stop at their next check once it does not.
    ///
    /// A replicated leader must also have heard from a quorum within the shortest election
    /// timeout: openraft 0.9 has no check-quorum step-down, so a leader cut off from the others
    /// keeps believing it leads while a new one is elected. Followers refuse votes for the lease
    /// after a heartbeat, so one acknowledged more recently than that is still the only leader
    /// (cluster.md §2.7, given sane clocks).
    pub(crate) fn is_leader(&self, shard: &Shard) -> bool {
        let metrics = shard.raft.metrics();
        let metrics = metrics.borrow();
        let leads = metrics.current_leader == Some(self.config.node_id)
            && metrics.current_term == shard.ready_term.load(Ordering::SeqCst);
        leads
            && (self.config.replication.is_none()
                || metrics
                    .millis_since_quorum_ack
                    .is_some_and(|ms| ms < GroupTiming::replicated().election_timeout_min_ms))
    }
}

/// When the oldest queued work of a shard became due, in milliseconds since the epoch
/// (`i64::MAX`: none).
pub(crate) struct QueueAges {
    /// Fire time of the earliest timer that is due and not fired yet.
    pub(crate) oldest_due_timer_ms: AtomicI64,
    /// When this leader first read the oldest row still in the outbox (a task handed to
    /// matching stays until a worker starts it; a transfer task until it ran).
    pub(crate) oldest_outbox_task_ms: AtomicI64,
}

impl Default for QueueAges {
    fn default() -> Self {
        Self {
            oldest_due_timer_ms: AtomicI64::new(i64::MAX),
            oldest_outbox_task_ms: AtomicI64::new(i64::MAX),
        }
    }
}

/// `now`, or 1 µs after the latest stamp of the shard if the clock is behind it (P30).
fn monotonic_now(last_now: &AtomicI64) -> prost_wkt_types::Timestamp {
    let wall = chronicle_types::time::now_timestamp();
    let wall_micros = wall.seconds * 1_000_000 + i64::from(wall.nanos) / 1_000;
    let mut stamp = wall_micros;
    let _ = last_now.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| {
        stamp = wall_micros.max(last + 1);
        Some(stamp)
    });
    if stamp == wall_micros {
        return wall;
    }
    prost_wkt_types::Timestamp {
        seconds: stamp.div_euclid(1_000_000),
        nanos: (stamp.rem_euclid(1_000_000) * 1_000) as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new leader whose clock is behind the shard's last stamp still stamps later (P30).
    #[test]
    fn command_time_never_goes_backwards() {
        let wall = chronicle_types::time::now_timestamp();
        let wall_micros = wall.seconds * 1_000_000 + i64::from(wall.nanos) / 1_000;
        let ahead = wall_micros + 3_600_000_000;
        let last_now = AtomicI64::new(ahead);
        let first = monotonic_now(&last_now);
        let second = monotonic_now(&last_now);
        let micros =
            |t: &prost_wkt_types::Timestamp| t.seconds * 1_000_000 + i64::from(t.nanos) / 1_000;
        assert_eq!(micros(&first), ahead + 1);
        assert_eq!(micros(&second), ahead + 2);
        // With the clock ahead of every stamp, the clock wins.
        let behind = AtomicI64::new(i64::MIN);
        assert!(micros(&monotonic_now(&behind)) >= wall_micros);
    }
}
