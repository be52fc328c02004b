//! What `chronicle cluster describe` shows of one node: each Raft group it hosts as this node
//! sees it (role, term, leader, log and applied index, members), and on a leader how far each
//! follower has replicated.

use std::collections::BTreeMap;

use chronicle_types::shard::ShardId;

use crate::engine::HistoryEngine;

/// One group on one node.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupStatus {
    pub group: ShardId,
    /// openraft's server state: Leader, Follower, Candidate, Learner, Shutdown.
    pub state: String,
    pub term: u64,
    pub leader: Option<u64>,
    pub last_log_index: u64,
    pub last_applied_index: u64,
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
    /// On the leader: the highest log index each other member is known to hold (`None` when
    /// the leader has not heard from it yet in this term).
    pub matched: BTreeMap<u64, Option<u64>>,
}

impl HistoryEngine {
    /// Every group of this node: the shards in order, then the metadata group.
    pub fn group_status(&self) -> Vec<GroupStatus> {
        self.shards
            .iter()
            .chain(std::iter::once(self.metadata.clone()))
            // Groups placed on other nodes (or moved away) have no replica here; before
            // `cluster init` a node holds none.
            .filter(|shard| self.hosts(shard))
            .map(|shard| {
                let metrics = shard.raft.metrics().borrow().clone();
                let membership = metrics.membership_config.membership();
                GroupStatus {
                    group: shard.id,
                    state: format!("{:?}", metrics.state),
                    term: metrics.current_term,
                    leader: metrics.current_leader,
                    last_log_index: metrics.last_log_index.unwrap_or(0),
                    last_applied_index: metrics.last_applied.map(|l| l.index).unwrap_or(0),
                    voters: membership.voter_ids().collect(),
                    learners: membership.learner_ids().collect(),
                    matched: metrics
                        .replication
                        .as_ref()
                        .map(|r| {
                            r.iter()
                                .filter(|(id, _)| Some(**id) != metrics.current_leader)
                                .map(|(id, log)| (*id, log.map(|l| l.index)))
                                .collect()
                        })
                        .unwrap_or_default(),
                }
            })
            .collect()
    }
}

/// A digest of one group's replicated state on this node, with the log index it reflects.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupDigest {
    pub group: ShardId,
    pub applied_index: u64,
    pub digest: u128,
}

impl HistoryEngine {
    /// Digests of every group's state (`chronicle_storage::digest`): replicas that applied the
    /// same log up to the same index must have equal digests, which the fault tests check after
    /// every scenario. Blocking (it reads every row of the node): call it off the runtime.
    ///
    /// The applied index is read before and after the digest; a group that applied entries
    /// meanwhile is digested again, so the index names exactly the state hashed.
    pub fn group_digests(&self) -> Result<Vec<GroupDigest>, chronicle_storage::StorageError> {
        let mut digests = Vec::new();
        for shard in self
            .shards
            .iter()
            .chain(std::iter::once(self.metadata.clone()))
        {
            if !self.hosts(&shard) {
                continue;
            }
            let applied = || {
                shard
                    .raft
                    .metrics()
                    .borrow()
                    .last_applied
                    .map(|l| l.index)
                    .unwrap_or(0)
            };
            let mut attempts = 0;
            loop {
                let before = applied();
                let digest = chronicle_storage::digest::shard_digest(shard.tables.db(), shard.id)?;
                let after = applied();
                attempts += 1;
                if before == after || attempts >= 20 {
                    digests.push(GroupDigest {
                        group: shard.id,
                        // After too many tries under load, report the state as not pinned.
                        applied_index: if before == after { after } else { 0 },
                        digest: digest.combined(),
                    });
                    break;
                }
            }
        }
        Ok(digests)
    }
}

impl HistoryEngine {
    /// Sets the per-node Raft gauges (`metric_defs::RAFT_*`) and the RocksDB gauges from every
    /// group's current openraft metrics; called at scrape time.
    pub fn record_node_gauges(&self) {
        use crate::metric_defs as m;
        let mut led = 0u64;
        let mut leaderless = 0u64;
        let mut under_replicated = 0u64;
        let mut apply_lag = 0u64;
        let mut replication_lag = 0u64;
        let mut changes = 0u64;
        let mut last_leaders = self.last_seen_leaders.lock().expect("leader sample lock");
        for (i, status) in self.group_status().into_iter().enumerate() {
            apply_lag = apply_lag.max(
                status
                    .last_log_index
                    .saturating_sub(status.last_applied_index),
            );
            match status.leader {
                None => leaderless += 1,
                Some(leader) if leader == self.config.node_id => {
                    led += 1;
                    let mut lagging = false;
                    for voter in status.voters.iter().filter(|v| **v != leader) {
                        match status.matched.get(voter).copied().flatten() {
                            Some(matched) => {
                                let lag = status.last_log_index.saturating_sub(matched);
                                replication_lag = replication_lag.max(lag);
                                lagging |= lag > m::UNDER_REPLICATED_LAG;
                            }
                            None => lagging = true,
                        }
                    }
                    under_replicated += u64::from(lagging);
                }
                Some(_) => {}
            }
            if last_leaders.len() <= i {
                last_leaders.resize(i + 1, None);
            }
            if status.leader.is_some() && last_leaders[i] != status.leader {
                if last_leaders[i].is_some() {
                    changes += 1;
                }
                last_leaders[i] = status.leader;
            }
        }
        drop(last_leaders);
        metrics::gauge!(m::RAFT_GROUPS_LED).set(led as f64);
        metrics::gauge!(m::RAFT_GROUPS_WITHOUT_LEADER).set(leaderless as f64);
        metrics::gauge!(m::RAFT_GROUPS_UNDER_REPLICATED).set(under_replicated as f64);
        metrics::gauge!(m::RAFT_APPLY_LAG_ENTRIES).set(apply_lag as f64);
        metrics::gauge!(m::RAFT_REPLICATION_LAG_ENTRIES).set(replication_lag as f64);
        metrics::counter!(m::RAFT_LEADER_CHANGES).increment(changes);
        self.metadata.tables.db().record_gauges();
    }
}
