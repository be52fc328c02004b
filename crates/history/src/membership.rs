//! Replacing a replica: `chronicle cluster replace-node` moves every group of a lost (or
//! drained) node to another node, one group at a time, the way Raft changes membership safely.
//!
//! On the group's leader: the new node joins as a learner and the call waits until it has caught
//! up (log entries or a snapshot), then one membership change swaps the voters (openraft commits
//! a joint configuration first, so no moment has two disjoint majorities). The group never has
//! fewer voters than before, and the new node votes only once it holds the log.

use std::collections::{BTreeMap, BTreeSet};

use chronicle_types::shard::ShardId;
use chronicle_types::{ApiError, ApiResult};

use crate::engine::HistoryEngine;

/// What a membership change did to one group.
#[derive(Clone, Debug, PartialEq)]
pub enum MemberChange {
    /// The voters were changed to these.
    Changed(Vec<u64>),
    /// Nothing to do: the new node already votes and the old one does not.
    AlreadyDone(Vec<u64>),
}

impl HistoryEngine {
    /// On the leader of `group`: adds `add` (node ID and Raft address) as a voter in place of
    /// `remove` (or beside the others when `None`). NotLeader elsewhere.
    pub async fn replace_member(
        &self,
        group: ShardId,
        add: (u64, String),
        remove: Option<u64>,
    ) -> ApiResult<MemberChange> {
        let shard = &self.shard_by_id(group)?;
        self.check_leader(shard)?;
        let membership = shard.raft.metrics().borrow().membership_config.clone();
        let voters: BTreeSet<u64> = membership.membership().voter_ids().collect();
        let (add_id, add_addr) = add;
        if voters.contains(&add_id) && remove.is_none_or(|r| !voters.contains(&r)) {
            return Ok(MemberChange::AlreadyDone(voters.into_iter().collect()));
        }
        let learners: BTreeSet<u64> = membership.membership().learner_ids().collect();
        if let Some(old) = remove
            && !voters.contains(&old)
        {
            // With more nodes than replicas, a group the lost node did not vote in stays as it
            // is; a learner (of the metadata group) is replaced by a learner.
            if !learners.contains(&old) {
                return Ok(MemberChange::AlreadyDone(voters.into_iter().collect()));
            }
            let mut wanted_learners: BTreeMap<u64, String> = membership
                .membership()
                .nodes()
                .filter(|(id, _)| learners.contains(id) && **id != old)
                .map(|(id, node)| (*id, node.addr.clone()))
                .collect();
            wanted_learners.insert(add_id, add_addr);
            let wanted_voters = membership
                .membership()
                .nodes()
                .filter(|(id, _)| voters.contains(id))
                .map(|(id, node)| (*id, node.addr.clone()))
                .collect();
            self.set_members(group, wanted_voters, wanted_learners)
                .await?;
            return Ok(MemberChange::Changed(voters.into_iter().collect()));
        }
        if remove == Some(self.config.node_id) {
            // A leader removing itself would step down mid-change; the caller moves leadership
            // first (or asks another voter once this one is gone).
            return Err(ApiError::failed_precondition(format!(
                "node {} leads group {group} and cannot remove itself: stop it and run the \
                 replacement again, or replace another node first",
                self.config.node_id
            )));
        }
        let unavailable = |e: String| ApiError::unavailable(format!("group {group}: {e}"));
        if !voters.contains(&add_id) {
            if !learners.contains(&add_id) {
                shard
                    .raft
                    .add_learner(add_id, openraft::BasicNode { addr: add_addr }, false)
                    .await
                    .map_err(|e| unavailable(e.to_string()))?;
            }
            // Bounded: a new node that dies meanwhile must not hold the caller forever.
            crate::placement::wait_caught_up(shard, add_id, crate::placement::CATCH_UP_TIMEOUT)
                .await
                .map_err(unavailable)?;
        }
        let mut new_voters = voters.clone();
        new_voters.insert(add_id);
        if let Some(old) = remove {
            new_voters.remove(&old);
        }
        // `retain = false`: the removed voter leaves the group entirely (not kept as learner).
        shard
            .raft
            .change_membership(new_voters.clone(), false)
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        tracing::info!(group, added = add_id, removed = ?remove, voters = ?new_voters, "membership changed");
        Ok(MemberChange::Changed(new_voters.into_iter().collect()))
    }

    /// The Raft addresses of the members this node knows for `group` (voters and learners).
    pub fn member_addresses(&self, group: ShardId) -> ApiResult<BTreeMap<u64, String>> {
        let shard = &self.shard_by_id(group)?;
        let metrics = shard.raft.metrics().borrow().clone();
        Ok(metrics
            .membership_config
            .membership()
            .nodes()
            .map(|(id, node)| (*id, node.addr.clone()))
            .collect())
    }
}
