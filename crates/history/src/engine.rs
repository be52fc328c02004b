//! Starting a node's shard groups and proposing commands to them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chronicle_cluster::MatchingService;
use chronicle_proto::chronicle::history::v1::{self as cmd, command_result, shard_command};
use chronicle_raft::{RaftError, ShardRaft};
use chronicle_storage::{Db, ShardTables};
use chronicle_types::shard::{METADATA_GROUP, ShardId, shard_for};
use chronicle_types::{ApiError, ApiResult};
use prost::Message;
use tokio::sync::{Semaphore, mpsc, oneshot, watch};

use crate::apply::HistoryApplier;
use crate::metric_defs;
use crate::namespace_names::NamespaceNames;
use crate::notify::{ShardNotifier, WorkflowWatch};

#[derive(Clone, Debug)]
pub struct HistoryConfig {
    pub num_shards: u32,
    pub node_id: u64,
    pub node_addr: String,
    /// Make this node the only voter of groups never initialised (start-dev).
    pub bootstrap_single_voter: bool,
    /// Start activities whose ScheduleActivityTask command requests eager execution and hand
    /// them back in the workflow task completion's answer (Temporal's
    /// `system.enableActivityEagerExecution`).
    pub eager_activities: bool,
    /// History length and size (bytes) from which workflow tasks suggest continue-as-new
    /// (Temporal's `limit.historyCount.suggestContinueAsNew` and
    /// `limit.historySize.suggestContinueAsNew`); 0: Temporal's defaults.
    pub suggest_continue_as_new_events: i64,
    pub suggest_continue_as_new_bytes: i64,
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
    /// Commands waiting to be proposed; see [`proposal_loop`].
    proposals: mpsc::UnboundedSender<PendingCommand>,
    /// The last log index the group had when it opened: it has caught up once it applied it.
    start_log_index: u64,
    caught_up: AtomicBool,
}

impl Shard {
    /// Subscribes to changes of one workflow of this shard (for long polls).
    pub fn watch_workflow(&self, namespace_id: &str, workflow_id: &str) -> WorkflowWatch {
        self.notifier
            .watch_workflow(self.id, namespace_id, workflow_id)
    }
}

/// A command on its way into the shard's log, and who waits for its result.
struct PendingCommand {
    command: cmd::ShardCommand,
    reply: oneshot::Sender<ApiResult<cmd::CommandResult>>,
}

/// Most commands in one log entry.
const MAX_COMMANDS_PER_ENTRY: usize = 256;
/// Log entries of one shard being committed at once.
const ENTRIES_IN_FLIGHT: usize = 2;

pub struct HistoryEngine {
    pub(crate) config: HistoryConfig,
    pub(crate) shards: Vec<Arc<Shard>>,
    pub(crate) metadata: Arc<Shard>,
    pub(crate) matching: Arc<dyn MatchingService>,
    pub(crate) namespace_names: Arc<NamespaceNames>,
    pub(crate) queries: crate::queries::QueryRegistry,
    shutdown: watch::Sender<bool>,
}

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
        let mut shards = Vec::new();
        for id in 0..config.num_shards {
            shards.push(Arc::new(
                open_group(&db, id, &config, &applier, &notifier).await?,
            ));
        }
        let metadata =
            Arc::new(open_group(&db, METADATA_GROUP, &config, &applier, &notifier).await?);
        let (shutdown, _) = watch::channel(false);
        let engine = Arc::new(Self {
            config,
            shards,
            metadata,
            matching,
            namespace_names,
            queries: Default::default(),
            shutdown,
        });
        for group in engine
            .shards
            .iter()
            .chain(std::iter::once(&engine.metadata))
        {
            wait_for_leader(&group.raft, engine.config.node_id, Duration::from_secs(10)).await;
        }
        for shard in &engine.shards {
            crate::processors::spawn(engine.clone(), shard.clone(), engine.shutdown.subscribe());
        }
        Ok(engine)
    }

    /// Stops the processors and the Raft groups. Committed state is already durable.
    pub async fn shutdown(&self) {
        self.shutdown.send_replace(true);
        for group in self.shards.iter().chain(std::iter::once(&self.metadata)) {
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
        let (tx, mut rx) = mpsc::channel(1);
        for group in self.shards.iter().chain(std::iter::once(&self.metadata)) {
            let mut metrics = group.raft.metrics();
            let tx = tx.clone();
            let id = group.id;
            tokio::spawn(async move {
                loop {
                    let fatal = match &metrics.borrow_and_update().running_state {
                        Ok(()) | Err(openraft::error::Fatal::Stopped) => None,
                        Err(e) => Some(e.to_string()),
                    };
                    if let Some(reason) = fatal {
                        let _ = tx.send((id, reason)).await;
                        return;
                    }
                    if metrics.changed().await.is_err() {
                        // The group is gone; a last state it published was seen above.
                        return;
                    }
                }
            });
        }
        drop(tx);
        match rx.recv().await {
            Some(failed) => failed,
            None => std::future::pending().await,
        }
    }

    pub fn num_shards(&self) -> u32 {
        self.config.num_shards
    }

    pub(crate) fn shard_of(&self, namespace_id: &str, workflow_id: &str) -> &Arc<Shard> {
        &self.shards[shard_for(namespace_id, workflow_id, self.config.num_shards) as usize]
    }

    /// Proposes a command to `shard` and returns what applying it answered.
    pub(crate) async fn propose(
        &self,
        shard: &Shard,
        kind: shard_command::Kind,
    ) -> ApiResult<command_result::Result> {
        let label = command_label(&kind);
        let operation = metric_defs::persistence_operation(&kind);
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
            now: Some(chronicle_types::time::now_timestamp()),
            kind: Some(kind),
            batch: Vec::new(),
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
                .send(PendingCommand { command, reply })
                .map_err(|_| {
                    ApiError::unavailable(format!("shard {} is shutting down", shard.id))
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
        for shard in self.shards.iter().chain(std::iter::once(&self.metadata)) {
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

    /// Sets Temporal's `numshards_gauge`: the history shards this node leads.
    pub fn record_shard_gauge(&self) {
        let led = self.shards.iter().filter(|s| self.is_leader(s)).count();
        metrics::gauge!(
            metric_defs::NUMSHARDS_GAUGE,
            "service_name" => metric_defs::SERVICE_NAME,
            "operation" => "ShardController",
        )
        .set(led as f64);
    }

    pub(crate) fn is_leader(&self, shard: &Shard) -> bool {
        shard.raft.metrics().borrow().current_leader == Some(self.config.node_id)
    }
}

fn command_label(kind: &shard_command::Kind) -> &'static str {
    use shard_command::Kind::*;
    match kind {
        StartWorkflow(_) => "start_workflow",
        RecordWorkflowTaskStarted(_) => "record_workflow_task_started",
        CompleteWorkflowTask(_) => "complete_workflow_task",
        FailWorkflowTask(_) => "fail_workflow_task",
        RecordActivityTaskStarted(_) => "record_activity_task_started",
        RespondActivity(_) => "respond_activity",
        RecordActivityHeartbeat(_) => "record_activity_heartbeat",
        SignalWorkflow(_) => "signal_workflow",
        TerminateWorkflow(_) => "terminate_workflow",
        FireTimer(_) => "fire_timer",
        UpsertNamespace(_) => "upsert_namespace",
        RequestCancelWorkflow(_) => "request_cancel_workflow",
        StickyWorkerUnavailable(_) => "sticky_worker_unavailable",
        SignalWithStart(_) => "signal_with_start",
        StartChildWorkflow(_) => "start_child_workflow",
        RecordChildStartOutcome(_) => "record_child_start_outcome",
        RecordChildClosed(_) => "record_child_closed",
        ApplyParentClosePolicy(_) => "apply_parent_close_policy",
        RecordExternalOutcome(_) => "record_external_outcome",
        CompleteTransferTask(_) => "complete_transfer_task",
    }
}

async fn open_group(
    db: &Db,
    id: ShardId,
    config: &HistoryConfig,
    applier: &Arc<HistoryApplier>,
    notifier: &ShardNotifier,
) -> Result<Shard, RaftError> {
    let changes = notifier.subscribe(id);
    let raft = chronicle_raft::start_group(
        db.clone(),
        id,
        config.node_id,
        config.node_addr.clone(),
        applier.clone(),
        config.bootstrap_single_voter,
    )
    .await?;
    let (proposals, queue) = mpsc::unbounded_channel();
    tokio::spawn(proposal_loop(raft.clone(), id, queue));
    let start_log_index = raft.metrics().borrow().last_log_index.unwrap_or(0);
    Ok(Shard {
        start_log_index,
        caught_up: AtomicBool::new(false),
        id,
        raft,
        tables: ShardTables::new(db.clone(), id),
        changes,
        timer_floor: notifier.timer_floor(id),
        notifier: notifier.clone(),
        proposals,
    })
}

/// Group commit. openraft turns every `client_write` into its own log append, and each append
/// waits for its fsync, so a shard proposing commands one by one commits about one command per
/// fsync however many callers wait. Here the commands that queue up while earlier entries are
/// being committed go into the next entry together: one append, one fsync, one apply batch for
/// all of them, and the batch grows with the load.
async fn proposal_loop(
    raft: ShardRaft,
    group: ShardId,
    mut queue: mpsc::UnboundedReceiver<PendingCommand>,
) {
    let in_flight = Arc::new(Semaphore::new(ENTRIES_IN_FLIGHT));
    while let Some(first) = queue.recv().await {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let mut pending = vec![first];
        while pending.len() < MAX_COMMANDS_PER_ENTRY {
            match queue.try_recv() {
                Ok(next) => pending.push(next),
                Err(_) => break,
            }
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            propose_entry(&raft, group, pending).await;
            drop(permit);
        });
    }
}

async fn propose_entry(raft: &ShardRaft, group: ShardId, pending: Vec<PendingCommand>) {
    metrics::histogram!(metric_defs::SHARD_COMMAND_BATCH_SIZE).record(pending.len() as f64);
    let (commands, replies): (Vec<_>, Vec<_>) =
        pending.into_iter().map(|p| (p.command, p.reply)).unzip();
    let batched = commands.len() > 1;
    let entry = if batched {
        cmd::ShardCommand {
            batch: commands,
            ..Default::default()
        }
    } else {
        commands.into_iter().next().unwrap_or_default()
    };
    let outcome = chronicle_raft::propose(raft, group, entry.encode_to_vec())
        .await
        .map_err(|e| match e {
            RaftError::NotLeader { .. } => {
                ApiError::unavailable(format!("shard {group} has no leader on this node; retry"))
            }
            other => ApiError::unavailable(format!("shard {group} is unavailable: {other}")),
        })
        .and_then(|bytes| {
            cmd::CommandResult::decode(bytes.as_slice())
                .map_err(|e| ApiError::internal(format!("undecodable command result: {e}")))
        });
    match outcome {
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
        Ok(result) if !batched => {
            if let Some(reply) = replies.into_iter().next() {
                let _ = reply.send(Ok(result));
            }
        }
        Ok(result) => {
            let mut results = result.batch.into_iter();
            for reply in replies {
                let _ = reply.send(
                    results
                        .next()
                        .ok_or_else(|| ApiError::internal("a batched command got no result")),
                );
            }
        }
    }
}

async fn wait_for_leader(raft: &ShardRaft, node_id: u64, timeout: Duration) {
    let _ = raft
        .wait(Some(timeout))
        .current_leader(node_id, "shard leader elected")
        .await;
}
