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
            .chain(std::iter::once(&self.metadata))
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
