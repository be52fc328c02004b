//! Where each group's replicas live when a cluster has more history nodes than a group has
//! voters.
//!
//! The members of the cluster are the members of the metadata group (its voters and learners:
//! every history node of the cluster holds it, so every node can compute the placement from its
//! own replica). A consistent-hash ring over their IDs (`hashring`, with virtual nodes) gives
//! each shard [`REPLICATION_FACTOR`] distinct nodes: walking the ring from the shard's key, the
//! first distinct nodes met. Adding a node moves only the shards whose walk now meets it.
//!
//! The ring gives the *desired* placement; a group's committed Raft membership stays the truth
//! for who holds it. A node that does not hold a group answers with the desired replicas'
//! addresses ([`HistoryEngine::not_hosted`]), so a router that only knows some seeds still
//! finds the leader.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use chronicle_proto::chronicle::history::v1::{self as cmd, shard_command};
use chronicle_proto::chronicle::persistence::v1::ClusterMember;
use chronicle_types::shard::{METADATA_GROUP, ShardId};
use chronicle_types::{ApiError, ApiResult};
use hashring::HashRing;
use openraft::{BasicNode, ChangeMembers};

use crate::engine::{HistoryEngine, Shard};

/// Voters per shard group.
pub const REPLICATION_FACTOR: usize = 3;

/// Points per node on the ring: enough that shards spread evenly over a handful of nodes.
const VIRTUAL_NODES: u32 = 64;

/// One point of a node on the ring. Hashed as explicit little-endian bytes, never through a
/// derived `Hash` of std types, so every build of every platform computes the same ring (a
/// rolling upgrade must not change where shards belong).
#[derive(Clone, Debug, PartialEq)]
struct VirtualNode {
    node: u64,
    index: u32,
}

impl Hash for VirtualNode {
    fn hash<H: Hasher>(&self, h: &mut H) {
        h.write(&self.node.to_le_bytes());
        h.write(&self.index.to_le_bytes());
    }
}

/// A ring key: its bytes, hashed as they are.
struct RingKey(Vec<u8>);

impl Hash for RingKey {
    fn hash<H: Hasher>(&self, h: &mut H) {
        h.write(&self.0);
    }
}

fn ring_key(group: ShardId) -> RingKey {
    if group == METADATA_GROUP {
        RingKey(b"metadata".to_vec())
    } else {
        RingKey(format!("shard/{group}").into_bytes())
    }
}

/// How many voters the metadata group has among `members` nodes: 3, or 5 from 5 nodes on. Five
/// voters survive two lost nodes, which a cluster of that size is expected to ride out; more
/// would only slow every metadata write (each waits for a majority). The other nodes are
/// learners: they hold the metadata without voting.
pub fn metadata_voter_count(members: usize) -> usize {
    if members >= 5 { 5 } else { members.min(3) }
}

/// The nodes `group` belongs on among `members` (node IDs, any order): `count` distinct nodes
/// (fewer when there are fewer members), the first its preferred leader. The same answer on
/// every node for the same members.
pub fn replicas(members: &[u64], group: ShardId, count: usize) -> Vec<u64> {
    let distinct: BTreeSet<u64> = members.iter().copied().collect();
    let mut ring = HashRing::new();
    for node in &distinct {
        for index in 0..VIRTUAL_NODES {
            ring.add(VirtualNode { node: *node, index });
        }
    }
    let want = count.min(distinct.len());
    let mut chosen = Vec::with_capacity(want);
    // The whole ring, starting at the key: rare (placement changes), so its cost is fine.
    let walk = ring
        .get_with_replicas(&ring_key(group), ring.len())
        .unwrap_or_default();
    for point in walk {
        if chosen.len() == want {
            break;
        }
        if !chosen.contains(&point.node) {
            chosen.push(point.node);
        }
    }
    chosen
}

/// The voters `group` should have among `members`.
pub fn desired_voters(members: &[u64], group: ShardId) -> Vec<u64> {
    let count = if group == METADATA_GROUP {
        metadata_voter_count(members.iter().collect::<BTreeSet<_>>().len())
    } else {
        REPLICATION_FACTOR
    };
    replicas(members, group, count)
}

impl HistoryEngine {
    /// Whether this node holds a replica of `shard` (votes in it or learns it).
    pub(crate) fn hosts(&self, shard: &Shard) -> bool {
        if lock(&self.dropped).contains(&shard.id) {
            return false;
        }
        shard
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_node(&self.config.node_id)
            .is_some()
    }

    /// The cluster's members as this node's metadata replica knows them: ID → Raft (and
    /// internal API) address. Empty on a node that is not in a cluster yet.
    pub fn cluster_members(&self) -> BTreeMap<u64, String> {
        self.metadata
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .nodes()
            .map(|(id, node)| (*id, node.addr.clone()))
            .collect()
    }

    /// The answer of a node that does not hold `group`: the addresses of the nodes the
    /// placement puts it on.
    pub(crate) fn not_hosted(&self, group: ShardId) -> ApiError {
        let members = self.cluster_members();
        let ids: Vec<u64> = members.keys().copied().collect();
        let addrs = desired_voters(&ids, group)
            .into_iter()
            .filter(|id| *id != self.config.node_id)
            .filter_map(|id| members.get(&id).cloned())
            .collect();
        ApiError::not_hosted(group, addrs)
    }

    /// On the leader of `group`: moves its membership to exactly `voters` and `learners` (ID →
    /// Raft address). New nodes first join as learners, and the call waits until each has
    /// caught up (log entries or a snapshot); then one membership change sets the voters
    /// (openraft commits a joint configuration first, so no moment has two disjoint
    /// majorities); then nodes in neither set leave. Safe to repeat: a group already there is
    /// left alone. NotLeader elsewhere.
    pub async fn set_members(
        &self,
        group: ShardId,
        voters: BTreeMap<u64, String>,
        learners: BTreeMap<u64, String>,
    ) -> ApiResult<MembersChanged> {
        if voters.is_empty() {
            return Err(ApiError::invalid_argument(format!(
                "group {group} needs at least one voter"
            )));
        }
        if let Some(both) = voters.keys().find(|id| learners.contains_key(id)) {
            return Err(ApiError::invalid_argument(format!(
                "node {both} cannot be both a voter and a learner of group {group}"
            )));
        }
        let shard = &self.shard_by_id(group)?;
        self.check_leader(shard)?;
        let unavailable = |e: String| ApiError::unavailable(format!("group {group}: {e}"));
        let current = || {
            let metrics = shard.raft.metrics().borrow().clone();
            let membership = metrics.membership_config.membership().clone();
            let voters: BTreeSet<u64> = membership.voter_ids().collect();
            let nodes: BTreeSet<u64> = membership.nodes().map(|(id, _)| *id).collect();
            (voters, nodes)
        };
        let (old_voters, old_nodes) = current();
        let want_voters: BTreeSet<u64> = voters.keys().copied().collect();
        let want_nodes: BTreeSet<u64> = voters.keys().chain(learners.keys()).copied().collect();
        if old_voters == want_voters && old_nodes == want_nodes {
            return Ok(MembersChanged {
                voters: want_voters.into_iter().collect(),
                learners: learners.into_keys().collect(),
                changed: false,
            });
        }
        for (id, addr) in voters.iter().chain(learners.iter()) {
            if !old_nodes.contains(id) {
                shard
                    .raft
                    .add_learner(*id, BasicNode { addr: addr.clone() }, false)
                    .await
                    .map_err(|e| unavailable(e.to_string()))?;
            }
        }
        // Only a replica that holds the log votes: a learner added by an earlier call that gave
        // up waiting (its node is down, or was replaced meanwhile) is never promoted unchecked.
        for id in want_voters.difference(&old_voters) {
            wait_caught_up(shard, *id, CATCH_UP_TIMEOUT)
                .await
                .map_err(unavailable)?;
        }
        if old_voters != want_voters {
            // Removed voters stay as learners for a moment; the next step removes those not
            // wanted. A leader that is not among the new voters steps down once the change
            // commits (openraft), and another voter is elected.
            shard
                .raft
                .change_membership(ChangeMembers::ReplaceAllVoters(want_voters.clone()), true)
                .await
                .map_err(|e| unavailable(e.to_string()))?;
        }
        let (_, nodes) = current();
        let leaving: BTreeSet<u64> = nodes.difference(&want_nodes).copied().collect();
        if !leaving.is_empty() {
            match shard
                .raft
                .change_membership(ChangeMembers::RemoveNodes(leaving.clone()), false)
                .await
            {
                Ok(_) => {}
                // This node left the voters and stepped down: the new leader removes the
                // rest when the call is repeated.
                Err(e) if !want_voters.contains(&self.config.node_id) => {
                    tracing::info!(group, error = %e, "left the voters; the next leader finishes");
                }
                Err(e) => return Err(unavailable(e.to_string())),
            }
        }
        tracing::info!(group, voters = ?want_voters, learners = ?learners.keys(), "membership set");
        Ok(MembersChanged {
            voters: want_voters.into_iter().collect(),
            learners: learners.into_keys().collect(),
            changed: true,
        })
    }
}

impl HistoryEngine {
    /// This node's replica of `group` was moved to other nodes (the group's committed
    /// membership no longer has it; the placement driver says so): it stops taking Raft
    /// messages for it (peers see NoSuchGroup), no longer reports or serves it, its Raft
    /// instance is stopped and then its data (rows of every column family, snapshot files) is
    /// deleted. The group is recorded as dropped (synced) before anything is deleted and stays
    /// recorded until the next start, which deletes it again before the groups open: a crash
    /// midway, or a late write of the stopped instance, leaves nothing behind after that start.
    /// Refused on the group's leader.
    pub async fn drop_replica(&self, group: ShardId) -> ApiResult<()> {
        let shard = &self.shard_by_id(group)?;
        // The Raft state, not `is_leader`: a leader that left the voters steps down to learner
        // but may still name itself the leader.
        let state = shard.raft.metrics().borrow().state;
        if state == openraft::ServerState::Leader {
            return Err(ApiError::failed_precondition(format!(
                "node {} leads group {group}: it is still a member",
                self.config.node_id
            )));
        }
        let Some(replication) = &self.config.replication else {
            return Err(ApiError::failed_precondition(
                "a single-voter node holds every group",
            ));
        };
        let _changing = self.replica_changes.lock().await;
        {
            let mut dropped = lock(&self.dropped);
            if dropped.contains(&group) {
                return Ok(());
            }
            let db = shard.tables.db();
            let mut stored = db
                .dropped_groups()
                .map_err(|e| ApiError::unavailable(e.to_string()))?;
            if !stored.contains(&group) {
                stored.push(group);
            }
            db.set_dropped_groups(&stored)
                .map_err(|e| ApiError::unavailable(e.to_string()))?;
            dropped.insert(group);
            replication.registry.remove(group);
            shard.retired.store(true, Ordering::SeqCst);
        }
        // Nothing of the group runs or writes once its instance stopped (a removed replica
        // would otherwise keep campaigning); `failed_group` ignores a stopped group.
        if let Err(e) = shard.raft.shutdown().await {
            tracing::warn!(group, error = %e, "dropped replica did not stop cleanly");
        }
        let db = shard.tables.db().clone();
        let wiped = tokio::task::spawn_blocking(move || db.wipe_group(group))
            .await
            .map_err(|e| ApiError::internal(format!("wiping group {group}: {e}")))?;
        match wiped {
            Ok(()) => tracing::info!(
                group,
                "replica moved to other nodes: stopped and its data deleted"
            ),
            // Still recorded as dropped: the next start deletes it.
            Err(e) => tracing::error!(
                group,
                error = %e,
                "replica moved to other nodes: stopped; deleting its data failed, the next \
                 start deletes it"
            ),
        }
        Ok(())
    }

    /// Takes up again a replica of `group` this node dropped since it started (the placement
    /// driver asks before it adds the node to the group again): whatever is left of the old
    /// replica is deleted, the drop record is cleared (synced) before anything new is written,
    /// and the group opens empty, as on a fresh node; it catches up once its leader adds it.
    /// `false` if the node did not drop the group. The metadata group is taken up again only
    /// by a restart.
    pub async fn rehost_replica(self: &Arc<Self>, group: ShardId) -> ApiResult<bool> {
        let _changing = self.replica_changes.lock().await;
        if !lock(&self.dropped).contains(&group) {
            return Ok(false);
        }
        if group == METADATA_GROUP {
            return Err(ApiError::failed_precondition(format!(
                "node {} dropped the metadata group: it holds it again after a restart",
                self.config.node_id
            )));
        }
        let db = self.metadata.tables.db().clone();
        let wiped = {
            let db = db.clone();
            tokio::task::spawn_blocking(move || -> Result<(), String> {
                db.wipe_group(group).map_err(|e| e.to_string())?;
                let mut stored = db.dropped_groups().map_err(|e| e.to_string())?;
                stored.retain(|g| *g != group);
                db.set_dropped_groups(&stored).map_err(|e| e.to_string())?;
                chronicle_storage::visibility::build_if_missing(&db, group)
                    .map(drop)
                    .map_err(|e| e.to_string())
            })
            .await
            .map_err(|e| ApiError::internal(format!("clearing group {group}: {e}")))?
        };
        wiped.map_err(|e| ApiError::unavailable(format!("clearing group {group}: {e}")))?;
        let shard = Arc::new(
            crate::engine::open_group(
                &db,
                group,
                &self.config,
                &self.applier,
                &self.notifier,
                &self.shutdown,
            )
            .await
            .map_err(|e| ApiError::unavailable(format!("opening group {group}: {e}")))?,
        );
        self.shards.replace(shard.clone());
        self.watch_for_failure(&shard);
        lock(&self.dropped).remove(&group);
        crate::processors::spawn(self.clone(), shard, self.shutdown.subscribe());
        tracing::info!(
            group,
            "took up again a replica dropped earlier: it catches up from the leader"
        );
        Ok(true)
    }

    /// Groups whose Raft state this node holds although their committed membership no longer
    /// has it (not dropped yet): a replica moved away whose drop did not happen (its node led
    /// the group at that moment, or the driver stopped).
    pub fn removed_groups(&self) -> Vec<ShardId> {
        let dropped = lock(&self.dropped).clone();
        self.shards
            .iter()
            .chain(std::iter::once(self.metadata.clone()))
            .filter(|shard| !dropped.contains(&shard.id))
            .filter(|shard| {
                let metrics = shard.raft.metrics().borrow().clone();
                let membership = metrics.membership_config.membership();
                membership.voter_ids().next().is_some()
                    && membership.get_node(&self.config.node_id).is_none()
            })
            .map(|shard| shard.id)
            .collect()
    }

    /// Whether any row of `group` is still stored on this node (a dropped replica's data is
    /// deleted at once; this says whether it was).
    pub fn holds_rows_of(&self, group: ShardId) -> ApiResult<bool> {
        self.shard_by_id(group)?
            .tables
            .db()
            .group_has_rows(group)
            .map_err(|e| ApiError::unavailable(e.to_string()))
    }

    /// Whether this node dropped `group` (its Raft instance is stopped) and has not taken it up
    /// again ([`HistoryEngine::rehost_replica`]).
    pub fn dropped_replica(&self, group: ShardId) -> bool {
        lock(&self.dropped).contains(&group)
    }

    /// The cluster's members as recorded in this node's metadata replica (empty for a cluster
    /// founded before members were recorded).
    pub fn member_records(&self) -> ApiResult<Vec<ClusterMember>> {
        Ok(self
            .metadata
            .tables
            .cluster_members()
            .map_err(|e| ApiError::unavailable(e.to_string()))?
            .members)
    }

    /// Registers, drains or marks drained a member, through the metadata group's leader
    /// (NotLeader elsewhere).
    pub async fn update_member(&self, member: ClusterMember, replaces: u64) -> ApiResult<()> {
        let kind = shard_command::Kind::UpdateClusterMember(cmd::UpdateClusterMember {
            member: Some(member),
            replaces,
        });
        self.propose(&self.metadata, kind).await?;
        Ok(())
    }

    /// Whether this node leads the metadata group (and so runs the placement driver).
    pub fn leads_metadata(&self) -> bool {
        self.is_leader(&self.metadata)
    }
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// How long a membership change waits for a new replica to catch up before it gives up (and
/// is tried again later): a replica on a node that is down never does.
pub(crate) const CATCH_UP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// On the leader of the group: waits until `id` has received the log up to the group's current
/// membership entry (the entry that made it a member, or a later one), as openraft's own
/// blocking `add_learner` does, but for at most `timeout`. A replica whose node does not
/// answer, or answers as another node, never matches. An error names the replica.
pub(crate) async fn wait_caught_up(
    shard: &Shard,
    id: u64,
    timeout: std::time::Duration,
) -> Result<(), String> {
    shard
        .raft
        .wait(Some(timeout))
        .metrics(
            |m| {
                let Some(replication) = &m.replication else {
                    // No longer the leader: the membership change itself fails with NotLeader.
                    return true;
                };
                let membership_entry = m.membership_config.log_id();
                replication
                    .get(&id)
                    .is_some_and(|matched| matched.is_some() && matched >= membership_entry)
            },
            "replica catch-up",
        )
        .await
        .map(|_| ())
        .map_err(|_| {
            format!("node {id} has not caught up with the log within {timeout:?}; not promoted")
        })
}

/// What [`HistoryEngine::set_members`] left the group with.
#[derive(Clone, Debug, PartialEq)]
pub struct MembersChanged {
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
    /// False when the group already had exactly these members.
    pub changed: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_shard_gets_three_distinct_nodes_and_the_answer_is_stable() {
        let members = [11, 22, 33, 44, 55];
        for shard in 0..64 {
            let chosen = replicas(&members, shard, 3);
            assert_eq!(chosen.len(), 3);
            assert_eq!(chosen.iter().collect::<BTreeSet<_>>().len(), 3);
            assert!(chosen.iter().all(|n| members.contains(n)));
            let shuffled = [44, 11, 55, 33, 22];
            assert_eq!(
                replicas(&shuffled, shard, 3),
                chosen,
                "member order does not matter"
            );
        }
        // Three members: every shard on all three.
        for shard in 0..16 {
            let mut all = replicas(&[1, 2, 3], shard, 3);
            all.sort();
            assert_eq!(all, vec![1, 2, 3]);
        }
        assert_eq!(replicas(&[7], 0, 3), vec![7], "fewer members than replicas");
    }

    #[test]
    fn shards_spread_over_the_nodes_and_a_new_node_takes_only_some() {
        let four = [101, 202, 303, 404];
        let mut load: BTreeMap<u64, usize> = BTreeMap::new();
        for shard in 0..256 {
            for n in replicas(&four, shard, 3) {
                *load.entry(n).or_default() += 1;
            }
        }
        // 768 replicas over 4 nodes: 192 each if perfectly even.
        assert!(load.values().all(|l| (120..=260).contains(l)), "{load:?}");

        let five = [101, 202, 303, 404, 505];
        let mut moved = 0;
        for shard in 0..256 {
            let before: BTreeSet<u64> = replicas(&four, shard, 3).into_iter().collect();
            let after: BTreeSet<u64> = replicas(&five, shard, 3).into_iter().collect();
            let gone: Vec<_> = before.difference(&after).collect();
            assert!(gone.len() <= 1, "shard {shard}: {before:?} -> {after:?}");
            if !gone.is_empty() {
                assert!(after.contains(&505), "only the new node takes replicas");
                moved += 1;
            }
        }
        assert!(moved > 0 && moved < 256, "{moved} of 256 shards moved");
    }

    #[test]
    fn the_metadata_group_has_three_or_five_voters() {
        assert_eq!(metadata_voter_count(3), 3);
        assert_eq!(metadata_voter_count(4), 3);
        assert_eq!(metadata_voter_count(5), 5);
        assert_eq!(metadata_voter_count(9), 5);
        assert_eq!(desired_voters(&[1, 2, 3, 4, 5, 6], METADATA_GROUP).len(), 5);
        assert_eq!(desired_voters(&[1, 2, 3, 4], 0).len(), 3);
    }
}
