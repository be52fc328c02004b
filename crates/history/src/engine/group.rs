//! Opening a shard's Raft group on this node, and following its leadership.

use super::proposals::proposal_loop;
use super::*;

pub(crate) async fn open_group(
    db: &Db,
    id: ShardId,
    config: &HistoryConfig,
    applier: &Arc<HistoryApplier>,
    notifier: &ShardNotifier,
    shutdown: &watch::Sender<bool>,
) -> Result<Shard, RaftError> {
    let changes = notifier.subscribe(id);
    // Before the group starts: entries it replays at start are not this node's to count.
    let leading = notifier.leading_flag(id);
    leading.store(false, Ordering::SeqCst);
    let raft = match &config.replication {
        None => {
            chronicle_raft::start_group(
                db.clone(),
                id,
                config.node_id,
                config.node_addr.clone(),
                applier.clone(),
                config.bootstrap_single_voter,
            )
            .await?
        }
        Some(replication) => {
            // Never bootstrap here: a replicated group is initialised once, by `cluster init`
            // on one node, or after a restart its stored membership is used.
            let raft = chronicle_raft::start_group_with(
                db.clone(),
                id,
                config.node_id,
                GrpcNetworkFactory::new(replication.peers.clone(), id),
                GroupTiming::replicated(),
                applier.clone(),
                Bootstrap::Join,
            )
            .await?;
            replication.registry.insert(id, raft.clone());
            raft
        }
    };
    let capacity = match config.max_pending_proposals {
        0 => DEFAULT_MAX_PENDING_PROPOSALS,
        n => n,
    };
    let (proposals, queue) = mpsc::channel(capacity);
    tokio::spawn(proposal_loop(raft.clone(), id, queue));
    let start_log_index = raft.metrics().borrow().last_log_index.unwrap_or(0);
    let ready_term = Arc::new(AtomicU64::new(0));
    tokio::spawn(readiness_loop(
        raft.clone(),
        id,
        config.node_id,
        ready_term.clone(),
        leading,
        shutdown.subscribe(),
    ));
    Ok(Shard {
        start_log_index,
        caught_up: AtomicBool::new(false),
        queue_ages: QueueAges::default(),
        ready_term,
        last_now: notifier.last_now(id),
        id,
        raft,
        tables: ShardTables::new(db.clone(), id),
        changes,
        timer_floor: notifier.timer_floor(id),
        notifier: notifier.clone(),
        proposals,
        retired: AtomicBool::new(false),
    })
}

/// Watches the group's leadership: each time this node becomes leader of a new term it waits
/// until the entries of earlier terms are applied (`ensure_linearizable` commits and applies up
/// to the leader's blank entry) and then marks the term ready.
async fn readiness_loop(
    raft: ShardRaft,
    group: ShardId,
    node_id: u64,
    ready_term: Arc<AtomicU64>,
    leading: Arc<AtomicBool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut metrics = raft.metrics();
    // The ring as the metadata replica last showed it (`membership_changed_count`).
    let mut ring: Option<BTreeSet<u64>> = None;
    // The term this node is taking the shard up in, and since when (`acquire_shards_*`).
    let mut acquiring: Option<(u64, Instant)> = None;
    loop {
        let (leader, term) = {
            let m = metrics.borrow_and_update();
            if group == METADATA_GROUP {
                let members: BTreeSet<u64> = m
                    .membership_config
                    .membership()
                    .nodes()
                    .map(|(id, _)| *id)
                    .collect();
                if !members.is_empty() && ring.as_ref() != Some(&members) {
                    metric_defs::record_membership_changed();
                    ring = Some(members);
                }
            }
            (m.current_leader, m.current_term)
        };
        if (leader != Some(node_id) || ready_term.load(Ordering::SeqCst) != term)
            && leading.swap(false, Ordering::SeqCst)
            && group != METADATA_GROUP
        {
            metric_defs::record_shard_leadership(false);
        }
        // An attempt ends when its term is no longer this node's to lead.
        if let Some((attempt_term, started)) = acquiring
            && (leader != Some(node_id) || attempt_term != term)
        {
            metric_defs::record_acquire_end(started);
            acquiring = None;
        }
        if leader == Some(node_id) && ready_term.load(Ordering::SeqCst) != term {
            if acquiring.is_none() && group != METADATA_GROUP {
                metric_defs::record_acquire_start();
                acquiring = Some((term, Instant::now()));
            }
            match raft.ensure_linearizable().await {
                Ok(_) => {
                    // Still the same term: a new term needs its own round.
                    if raft.metrics().borrow().current_term == term {
                        ready_term.store(term, Ordering::SeqCst);
                        if !leading.swap(true, Ordering::SeqCst) && group != METADATA_GROUP {
                            metric_defs::record_shard_leadership(true);
                        }
                        if let Some((_, started)) = acquiring.take() {
                            metric_defs::record_acquire_end(started);
                        }
                        tracing::info!(group, term, "leading the group");
                    }
                    continue;
                }
                Err(e) => {
                    tracing::debug!(group, error = %e, "leadership not confirmed yet");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                        _ = shutdown.changed() => return,
                    }
                    continue;
                }
            }
        }
        tokio::select! {
            changed = metrics.changed() => if changed.is_err() { return },
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
    }
}

pub(super) async fn wait_until_ready(shard: &Shard, node_id: u64, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let mut metrics = shard.raft.metrics();
    while Instant::now() < deadline {
        {
            let m = metrics.borrow_and_update();
            if m.current_leader == Some(node_id)
                && m.current_term == shard.ready_term.load(Ordering::SeqCst)
            {
                return;
            }
        }
        // The readiness loop stores the term without a metrics change: poll briefly too.
        let _ = tokio::time::timeout(Duration::from_millis(10), metrics.changed()).await;
    }
}
