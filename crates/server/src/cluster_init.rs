//! `chronicle cluster init`: founding a replicated history cluster once, with each group's
//! voters placed by the ring (`chronicle_history::placement`).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use chronicle_history::placement;
use chronicle_proto::chronicle::admin::v1::{self as apb, admin_api_client::AdminApiClient};
use chronicle_proto::chronicle::persistence::v1::{ClusterMember, MemberState};
use chronicle_types::shard::METADATA_GROUP;

use crate::admin::describe_with_retry;

/// Asks every node at `nodes` (internal addresses) who it is, checks they are fresh and agree on
/// the shard count, mints the cluster's ID and has every node join it, then has each group
/// initialised by exactly one node with the voters the placement gives it
/// ([`chronicle_history::placement`]: three distinct nodes per shard, three or five for the
/// metadata group), by the first of them, its preferred leader: the initialising node
/// campaigns at once and so first leads the group, and leadership starts spread (cluster.md
/// §2.3). Every other node then joins the metadata group as a learner, so each node holds the
/// member list the placement is computed from. Returns the cluster ID and the members.
pub async fn init_cluster(
    nodes: &[String],
    num_shards: u32,
) -> anyhow::Result<(String, Vec<apb::Member>)> {
    anyhow::ensure!(!nodes.is_empty(), "no nodes given");
    let cluster_id = uuid::Uuid::new_v4().to_string();
    let mut clients = Vec::new();
    let mut members = Vec::new();
    for addr in nodes {
        let channel = chronicle_cluster::grpc::lazy_channel(addr).map_err(anyhow::Error::msg)?;
        let mut client = AdminApiClient::new(channel);
        let info = describe_with_retry(&mut client, addr).await?;
        anyhow::ensure!(
            !info.initialized,
            "{addr} (node {}) already belongs to a cluster: a cluster is initialised once",
            info.node_id
        );
        anyhow::ensure!(
            info.cluster_id.is_empty(),
            "{addr} (node {}) already joined cluster {}: give it a fresh data directory",
            info.node_id,
            info.cluster_id
        );
        anyhow::ensure!(
            info.num_shards == num_shards,
            "{addr} has {} shards, not {num_shards} (start it with --num-shards {num_shards} \
             and a fresh data directory)",
            info.num_shards
        );
        anyhow::ensure!(
            !members
                .iter()
                .any(|m: &apb::Member| m.node_id == info.node_id),
            "{addr} is node {} again: each node needs its own data directory",
            info.node_id
        );
        members.push(apb::Member {
            node_id: info.node_id,
            raft_addr: info.raft_addr,
        });
        clients.push(client);
    }
    // Every node joins before any group starts, so the first votes are not refused.
    for (i, client) in clients.iter_mut().enumerate() {
        client
            .join_cluster(apb::JoinClusterRequest {
                cluster_id: cluster_id.clone(),
            })
            .await
            .map_err(|s| anyhow::anyhow!("{}: {}", nodes[i], s.message()))?;
    }
    let ids: Vec<u64> = members.iter().map(|m| m.node_id).collect();
    // Each group is initialised by the one of its voters that initialised the fewest so far
    // (ties: the ring's order), so first leaders spread evenly whatever the random IDs; groups
    // with the same voters and initialiser go in one call.
    let mut initialised: BTreeMap<u64, usize> = BTreeMap::new();
    let mut calls: BTreeMap<(u64, Vec<u64>), Vec<u32>> = BTreeMap::new();
    for group in (0..num_shards).chain([METADATA_GROUP]) {
        let voters = placement::desired_voters(&ids, group);
        let first = *voters
            .iter()
            .min_by_key(|id| initialised.get(id).copied().unwrap_or(0))
            .context("the placement gave a group no voter")?;
        *initialised.entry(first).or_default() += 1;
        let mut sorted = voters.clone();
        sorted.sort_unstable();
        calls.entry((first, sorted)).or_default().push(group);
    }
    for ((first, voters), groups) in calls {
        let first = ids
            .iter()
            .position(|id| *id == first)
            .context("the placement chose a node that is not a member")?;
        let voter_members: Vec<apb::Member> = members
            .iter()
            .filter(|m| voters.contains(&m.node_id))
            .cloned()
            .collect();
        clients[first]
            .initialize_cluster(apb::InitializeClusterRequest {
                num_shards,
                members: voter_members,
                groups,
                cluster_id: cluster_id.clone(),
            })
            .await
            .map_err(|s| anyhow::anyhow!("{}: {}", nodes[first], s.message()))?;
    }
    let metadata_voters = placement::desired_voters(&ids, METADATA_GROUP);
    if metadata_voters.len() < members.len() {
        let (voters, learners): (Vec<apb::Member>, Vec<apb::Member>) = members
            .iter()
            .cloned()
            .partition(|m| metadata_voters.contains(&m.node_id));
        set_group_members(nodes, METADATA_GROUP, voters, learners).await?;
    }
    // The member list the placement driver works from.
    for m in &members {
        crate::placement_driver::update_member(
            nodes,
            ClusterMember {
                node_id: m.node_id,
                raft_addr: m.raft_addr.clone(),
                state: MemberState::Active as i32,
            },
            0,
        )
        .await?;
    }
    Ok((cluster_id, members))
}

/// Asks the nodes at `nodes` in turn until the leader of `group` has set its members (a group
/// just initialised may still be electing). Returns the answer.
pub async fn set_group_members(
    nodes: &[String],
    group: u32,
    voters: Vec<apb::Member>,
    learners: Vec<apb::Member>,
) -> anyhow::Result<apb::SetGroupMembersResponse> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let mut last_error = String::from("no node answered");
        for addr in nodes {
            let channel =
                chronicle_cluster::grpc::lazy_channel(addr).map_err(anyhow::Error::msg)?;
            let request = apb::SetGroupMembersRequest {
                group,
                voters: voters.clone(),
                learners: learners.clone(),
            };
            // A new replica that cannot catch up (its node is down) must not hold the caller
            // forever: the call is given up and tried again later.
            let mut request = tonic::Request::new(request);
            request.set_timeout(Duration::from_secs(60));
            match AdminApiClient::new(channel)
                .set_group_members(request)
                .await
            {
                Ok(answer) => return Ok(answer.into_inner()),
                Err(status) => last_error = format!("{addr}: {}", status.message()),
            }
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "group {group}: no leader set its members within 120 s ({last_error})"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
