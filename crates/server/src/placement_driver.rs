//! The placement driver and the commands that change the member list (`cluster add-node`,
//! `cluster drain`).
//!
//! The member list lives in the metadata group (`UpdateClusterMember`). The driver runs on
//! every history node and acts only on the metadata group's leader: whenever the list changed
//! (and once after each leadership gain, so a move cut short by a crash or a leader change is
//! finished), it walks every group, one at a time, and moves the group's membership to what the
//! ring over the ACTIVE members gives (`chronicle_history::placement`): new replicas join as
//! learners and catch up, one membership change sets the voters, the replicas that left drop
//! their data. Each step is idempotent, so a pass can always be run again. When a pass leaves
//! no replica on a DRAINING node, the driver records it DRAINED. A node unreachable for longer
//! than the dead-node timeout is recorded DEAD (`node_liveness.rs`) and leaves the ring the
//! same way, without waiting for it: its replicas are rebuilt on the active nodes.

use anyhow::Context;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use chronicle_history::HistoryEngine;
use chronicle_history::placement;
use chronicle_proto::chronicle::admin::v1::{self as apb, admin_api_client::AdminApiClient};
use chronicle_proto::chronicle::persistence::v1::{ClusterMember, MemberState};
use chronicle_types::shard::METADATA_GROUP;

/// How often the driver looks at the member list.
const TICK: Duration = Duration::from_secs(1);
/// Attempts per group in one pass: a leader that leaves the voters steps down, and the next
/// leader finishes the change.
const ATTEMPTS_PER_GROUP: usize = 5;

fn client(addr: &str) -> anyhow::Result<AdminApiClient<tonic::transport::Channel>> {
    Ok(AdminApiClient::new(
        chronicle_cluster::grpc::lazy_channel(addr).map_err(anyhow::Error::msg)?,
    ))
}

/// What a pass converged on: each member's state, and the dead members that answer again.
type Fingerprint = (Vec<(u64, i32)>, BTreeSet<u64>);

/// How often an incomplete placement pass is reported while it keeps being retried.
const INCOMPLETE_WARNING_EVERY: Duration = Duration::from_secs(30);

/// Runs the driver (and the liveness watch that declares nodes dead after `dead_after`) until
/// the engine shuts down.
pub fn spawn(engine: &Arc<HistoryEngine>, dead_after: Duration) {
    let liveness = crate::node_liveness::spawn(engine, dead_after);
    // A weak handle between ticks: a stopped node's engine (and its RocksDB) is freed at once.
    let weak = Arc::downgrade(engine);
    tokio::spawn(async move {
        let mut converged: Option<Fingerprint> = None;
        // Passes retry every tick while a node is down; the warning says so once per
        // `INCOMPLETE_WARNING_EVERY` with how many passes were incomplete, not once a second.
        let mut incomplete: u64 = 0;
        let mut last_warning: Option<tokio::time::Instant> = None;
        loop {
            tokio::time::sleep(TICK).await;
            let Some(engine) = weak.upgrade() else {
                return;
            };
            if engine.is_shut_down() {
                return;
            }
            if !engine.leads_metadata() {
                converged = None;
                continue;
            }
            let members = match engine.member_records() {
                Ok(members) if !members.is_empty() => members,
                // A cluster founded before members were recorded: nothing to place.
                _ => continue,
            };
            // A dead node answering again is a change too: its leftovers are dropped.
            let returned = liveness
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .returned();
            let fingerprint: Fingerprint = (
                members.iter().map(|m| (m.node_id, m.state)).collect(),
                returned.clone(),
            );
            if converged.as_ref() == Some(&fingerprint) {
                continue;
            }
            match pass(&engine, &members, &returned).await {
                Ok(()) => {
                    converged = Some(fingerprint);
                    incomplete = 0;
                    last_warning = None;
                }
                Err(e) => {
                    incomplete += 1;
                    if last_warning.is_none_or(|at| at.elapsed() >= INCOMPLETE_WARNING_EVERY) {
                        tracing::warn!(
                            error = %format!("{e:#}"),
                            passes = incomplete,
                            "placement pass incomplete; retrying every second"
                        );
                        last_warning = Some(tokio::time::Instant::now());
                        incomplete = 0;
                    }
                }
            }
        }
    });
}

/// One walk over every group; then DRAINING members that hold nothing become DRAINED.
/// `returned`: DEAD members that answer again, whose leftover replicas are dropped.
async fn pass(
    engine: &HistoryEngine,
    members: &[ClusterMember],
    returned: &BTreeSet<u64>,
) -> anyhow::Result<()> {
    let state = |m: &ClusterMember| MemberState::try_from(m.state).unwrap_or_default();
    let active: Vec<u64> = members
        .iter()
        .filter(|m| state(m) == MemberState::Active)
        .map(|m| m.node_id)
        .collect();
    let dead: Vec<u64> = members
        .iter()
        .filter(|m| state(m) == MemberState::Dead)
        .map(|m| m.node_id)
        .collect();
    // The members the driver waits for: active and draining ones. A dead one is never waited
    // for (its groups move on a quorum of the others); one that answers again is asked what it
    // still holds, so that it drops it.
    let reachable: BTreeMap<u64, String> = members
        .iter()
        .filter(|m| match state(m) {
            MemberState::Drained => false,
            MemberState::Dead => returned.contains(&m.node_id),
            _ => true,
        })
        .map(|m| (m.node_id, m.raft_addr.clone()))
        .collect();
    let nodes: Vec<String> = members
        .iter()
        .filter(|m| matches!(state(m), MemberState::Active | MemberState::Draining))
        .map(|m| m.raft_addr.clone())
        .collect();
    // What each node holds now (a replica that was removed while the node was away still shows
    // here, and is dropped below) and what it dropped since it started (taken up again below
    // before it is added back).
    let mut hosted: BTreeMap<u64, BTreeSet<u32>> = BTreeMap::new();
    let mut dropped: BTreeMap<u64, BTreeSet<u32>> = BTreeMap::new();
    // A node that does not answer is left alone in this pass, which then counts as incomplete
    // (tried again), so its leftover replicas are dropped once it answers.
    let mut unanswered = Vec::new();
    // Each group's voters and learners as its leader sees them.
    let mut memberships: BTreeMap<u32, (Vec<u64>, Vec<u64>)> = BTreeMap::new();
    for (id, addr) in &reachable {
        let mut c = client(addr)?;
        let mut info = tonic::Request::new(apb::DescribeNodeRequest::default());
        info.set_timeout(Duration::from_secs(5));
        let info = match c.describe_node(info).await {
            Ok(info) => info.into_inner(),
            Err(_) => {
                unanswered.push(*id);
                continue;
            }
        };
        // Another node on the member's address: a wiped node back as a new node where a
        // draining (replaced) member lived. What it holds is its own, never the old member's:
        // taken for the old member's, its fresh replicas would be dropped as leftovers. The old
        // member holds nothing any more.
        if info.node_id != *id {
            tracing::info!(
                member = id,
                answering = info.node_id,
                addr,
                "another node answers at the member's address: the member holds nothing"
            );
            continue;
        }
        dropped.insert(*id, info.dropped_groups.into_iter().collect());
        let mut groups = tonic::Request::new(apb::DescribeGroupsRequest {});
        groups.set_timeout(Duration::from_secs(5));
        match c.describe_groups(groups).await {
            Ok(groups) => {
                let groups = groups.into_inner().groups;
                for g in groups.iter().filter(|g| g.state == "Leader") {
                    memberships.insert(g.group, (g.voters.clone(), g.learners.clone()));
                }
                let held = hosted.entry(*id).or_default();
                held.extend(groups.iter().map(|g| g.group));
                // Replicas removed earlier whose drop never happened are dropped too.
                held.extend(info.removed_groups);
            }
            Err(_) => unanswered.push(*id),
        }
    }
    let member = |id: &u64| apb::Member {
        node_id: *id,
        raft_addr: reachable.get(id).cloned().unwrap_or_default(),
    };
    for group in (0..engine.num_shards()).chain([METADATA_GROUP]) {
        let voters = placement::desired_voters(&active, group);
        let learners: Vec<u64> = if group == METADATA_GROUP {
            // Every active node holds the metadata, so it can compute the placement.
            active
                .iter()
                .filter(|id| !voters.contains(id))
                .copied()
                .collect()
        } else {
            Vec::new()
        };
        let wanted: BTreeSet<u64> = voters.iter().chain(&learners).copied().collect();
        // A node that dropped this group since it started opens it anew, empty, before it is
        // added back (it then catches up like a new replica).
        for node in wanted
            .iter()
            .filter(|id| dropped.get(id).is_some_and(|d| d.contains(&group)))
        {
            let addr = reachable
                .get(node)
                .with_context(|| format!("node {node} is not reachable"))?;
            // A replica opened anew starts from an empty log. Its leader must not still count
            // it as a member with the entries it had (openraft's leader stops on a follower
            // whose log went back): out of the group first, then back in as a new replica.
            if let Some((current_voters, current_learners)) = memberships.get(&group)
                && (current_voters.contains(node) || current_learners.contains(node))
            {
                // Addresses matter only for nodes that join; these are all members already.
                let keep = |ids: &[u64]| -> Vec<apb::Member> {
                    ids.iter().filter(|id| *id != node).map(member).collect()
                };
                tracing::warn!(
                    node,
                    group,
                    "a node that dropped the group is still its member: removed before it takes \
                     it up again"
                );
                crate::admin::set_group_members(
                    &nodes,
                    group,
                    keep(current_voters),
                    keep(current_learners),
                )
                .await?;
            }
            let mut request = tonic::Request::new(apb::RehostReplicaRequest {
                group,
                node_id: *node,
            });
            request.set_timeout(Duration::from_secs(30));
            client(addr)?
                .rehost_replica(request)
                .await
                .with_context(|| format!("node {node} taking up group {group} again"))?;
            tracing::info!(
                node,
                group,
                "a node that dropped the group takes it up again"
            );
        }
        let mut attempts = 0;
        loop {
            attempts += 1;
            let answer = crate::admin::set_group_members(
                &nodes,
                group,
                voters.iter().map(member).collect(),
                learners.iter().map(member).collect(),
            )
            .await?;
            if !answer.changed || attempts >= ATTEMPTS_PER_GROUP {
                if answer.changed {
                    anyhow::bail!("group {group} did not settle on {voters:?}");
                }
                break;
            }
            let left_dead: Vec<u64> = dead
                .iter()
                .filter(|id| !answer.voters.contains(id))
                .copied()
                .collect();
            tracing::info!(
                group,
                voters = ?answer.voters,
                learners = ?answer.learners,
                dead_members = ?left_dead,
                "placement: group moved"
            );
        }
        // The replicas that left drop their data.
        for (id, groups) in &hosted {
            if groups.contains(&group) && !wanted.contains(id) {
                let addr = &reachable[id];
                tracing::info!(
                    node = id,
                    group,
                    "placement: the replica that left drops it"
                );
                let mut tries = 0;
                loop {
                    tries += 1;
                    match client(addr)?
                        .drop_replica(apb::DropReplicaRequest {
                            group,
                            node_id: *id,
                        })
                        .await
                    {
                        Ok(_) => break,
                        // A leader that left the voters steps down a moment after the change
                        // commits.
                        Err(s) if s.code() == tonic::Code::FailedPrecondition && tries < 20 => {
                            tokio::time::sleep(Duration::from_millis(250)).await;
                        }
                        Err(s) => anyhow::bail!("{addr}: dropping group {group}: {}", s.message()),
                    }
                }
            }
        }
    }
    anyhow::ensure!(
        unanswered.is_empty(),
        "nodes {unanswered:?} did not answer; their replicas are checked again"
    );
    for m in members.iter().filter(|m| state(m) == MemberState::Draining) {
        engine
            .update_member(
                ClusterMember {
                    state: MemberState::Drained as i32,
                    ..m.clone()
                },
                0,
            )
            .await
            .map_err(|e| anyhow::anyhow!("recording node {} drained: {}", m.node_id, e.message))?;
        tracing::info!(node = m.node_id, "drained: it holds no replica");
    }
    Ok(())
}

/// Asks the nodes at `nodes` in turn until the metadata group's leader recorded `member`.
pub async fn update_member(
    nodes: &[String],
    member: ClusterMember,
    replaces: u64,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut last_error = String::from("no node answered");
        for addr in nodes {
            let request = apb::UpdateMemberRequest {
                member: Some(member.clone()),
                replaces,
            };
            match client(addr)?.update_member(request).await {
                Ok(_) => return Ok(()),
                // A refusal of the change itself (drain below three nodes, a reused ID).
                Err(s) if s.code() != tonic::Code::Unavailable => {
                    anyhow::bail!("{}", s.message())
                }
                Err(s) => last_error = format!("{addr}: {}", s.message()),
            }
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "no metadata leader recorded the change within 60 s ({last_error})"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The member list, from the first of `nodes` that answers.
pub async fn list_members(nodes: &[String]) -> anyhow::Result<Vec<ClusterMember>> {
    let mut last_error = String::from("no node given");
    for addr in nodes {
        match client(addr)?.list_members(apb::ListMembersRequest {}).await {
            Ok(answer) => return Ok(answer.into_inner().members),
            Err(s) => last_error = format!("{addr}: {}", s.message()),
        }
    }
    anyhow::bail!("no node listed the members ({last_error})")
}

/// `chronicle cluster add-node`: the fresh node at `add` joins the cluster of `nodes` and is
/// registered ACTIVE; the driver then moves to it the replicas the ring gives it. Returns its
/// node ID.
pub async fn add_node(nodes: &[String], add: &str) -> anyhow::Result<u64> {
    let new = crate::admin::describe_with_retry(&mut client(add)?, add).await?;
    let mut cluster_id = String::new();
    for addr in nodes {
        if let Ok(info) = client(addr)?
            .describe_node(apb::DescribeNodeRequest::default())
            .await
        {
            let info = info.into_inner();
            if info.initialized {
                anyhow::ensure!(
                    info.num_shards == new.num_shards,
                    "{add} has {} shards, the cluster {}: start it with --num-shards {}",
                    new.num_shards,
                    info.num_shards,
                    info.num_shards
                );
                cluster_id = info.cluster_id;
                break;
            }
        }
    }
    anyhow::ensure!(
        !cluster_id.is_empty(),
        "none of {nodes:?} answered as a cluster member"
    );
    anyhow::ensure!(
        new.cluster_id.is_empty() || new.cluster_id == cluster_id,
        "{add} (node {}) belongs to cluster {}, not {cluster_id}: give it a fresh data directory",
        new.node_id,
        new.cluster_id
    );
    client(add)?
        .join_cluster(apb::JoinClusterRequest { cluster_id })
        .await
        .map_err(|s| anyhow::anyhow!("{add}: {}", s.message()))?;
    update_member(
        nodes,
        ClusterMember {
            node_id: new.node_id,
            raft_addr: new.raft_addr,
            state: MemberState::Active as i32,
        },
        0,
    )
    .await?;
    Ok(new.node_id)
}

/// `chronicle cluster drain`: records `node` DRAINING (refused when fewer than three active
/// nodes would remain), then with `wait` follows the driver until it is DRAINED.
pub async fn drain(
    nodes: &[String],
    node: u64,
    wait: Option<Duration>,
    mut progress: impl FnMut(&str),
) -> anyhow::Result<()> {
    let members = list_members(nodes).await?;
    let Some(member) = members.iter().find(|m| m.node_id == node) else {
        anyhow::bail!(
            "node {node} is not a member of this cluster (`cluster describe` lists them)"
        );
    };
    update_member(
        nodes,
        ClusterMember {
            state: MemberState::Draining as i32,
            ..member.clone()
        },
        0,
    )
    .await?;
    progress(&format!(
        "node {node} is draining: its replicas move to the other nodes"
    ));
    let Some(wait) = wait else {
        return Ok(());
    };
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let drained = list_members(nodes)
            .await?
            .iter()
            .any(|m| m.node_id == node && m.state == MemberState::Drained as i32);
        if drained {
            progress(&format!(
                "node {node} is drained: it holds no replica and can be stopped"
            ));
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "node {node} still holds replicas after {wait:?}: see `cluster describe`"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
