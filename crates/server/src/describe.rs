//! `chronicle cluster describe`: asks every history node for its view of each Raft group and
//! prints the nodes, then per group its leader, term, members, each replica's applied index and
//! how far each follower trails the leader's log.

use std::collections::BTreeMap;
use std::fmt::Write;

use chronicle_proto::chronicle::admin::v1::{self as apb, admin_api_client::AdminApiClient};
use chronicle_proto::chronicle::persistence::v1::{ClusterMember, MemberState};
use chronicle_types::shard::METADATA_GROUP;

fn member_state(m: &ClusterMember) -> &'static str {
    match MemberState::try_from(m.state).unwrap_or_default() {
        MemberState::Active => "active",
        MemberState::Draining => "draining",
        MemberState::Drained => "drained",
        MemberState::Dead => "dead",
        MemberState::Unspecified => "unknown",
    }
}

/// The member list of the first node that gave one (the metadata replicas agree but for lag).
fn members(reports: &[NodeReport]) -> &[ClusterMember] {
    reports
        .iter()
        .map(|r| r.members.as_slice())
        .find(|m| !m.is_empty())
        .unwrap_or(&[])
}

/// One node's answers, or why it gave none.
pub struct NodeReport {
    pub addr: String,
    pub info: Result<(apb::NodeInfo, apb::DescribeGroupsResponse), String>,
    /// With `--digests`: each group's state digest on this node.
    pub digests: Option<Result<apb::DigestGroupsResponse, String>>,
    /// The member list as this node's metadata replica records it.
    pub members: Vec<ClusterMember>,
}

/// Asks each node (internal addresses); an unreachable node is reported, not fatal: describe
/// is what an operator runs when a node is down.
pub async fn describe_cluster(nodes: &[String], digests: bool) -> Vec<NodeReport> {
    let mut reports = Vec::new();
    for addr in nodes {
        let digest = if digests {
            Some(digest_node(addr).await)
        } else {
            None
        };
        let info = async {
            let channel = chronicle_cluster::grpc::lazy_channel(addr)?;
            let mut client = AdminApiClient::new(channel);
            let call = async {
                let info = client
                    .describe_node(apb::DescribeNodeRequest {
                        with_stored_groups: true,
                    })
                    .await?
                    .into_inner();
                let groups = client
                    .describe_groups(apb::DescribeGroupsRequest {})
                    .await?
                    .into_inner();
                // An older node without the call lists no members.
                let members = client
                    .list_members(apb::ListMembersRequest {})
                    .await
                    .map(|m| m.into_inner().members)
                    .unwrap_or_default();
                Ok::<_, tonic::Status>((info, groups, members))
            };
            match tokio::time::timeout(std::time::Duration::from_secs(5), call).await {
                Ok(Ok(answer)) => Ok(answer),
                Ok(Err(status)) => Err(status.message().to_string()),
                Err(_) => Err("no answer within 5 s".to_string()),
            }
        }
        .await;
        let (info, members) = match info {
            Ok((info, groups, members)) => (Ok((info, groups)), members),
            Err(e) => (Err(e), Vec::new()),
        };
        reports.push(NodeReport {
            addr: addr.clone(),
            info,
            digests: digest,
            members,
        });
    }
    reports
}

async fn digest_node(addr: &str) -> Result<apb::DigestGroupsResponse, String> {
    let channel = chronicle_cluster::grpc::lazy_channel(addr)?;
    let mut client = AdminApiClient::new(channel);
    match tokio::time::timeout(
        std::time::Duration::from_secs(60),
        client.digest_groups(apb::DigestGroupsRequest {}),
    )
    .await
    {
        Ok(Ok(answer)) => Ok(answer.into_inner()),
        Ok(Err(status)) => Err(status.message().to_string()),
        Err(_) => Err("no digest within 60 s".to_string()),
    }
}

/// Per group, whether the replicas that applied the same index hold the same state.
fn render_digests(out: &mut String, reports: &[NodeReport]) {
    let mut by_group: BTreeMap<u32, Vec<(String, &apb::GroupDigest)>> = BTreeMap::new();
    for (i, report) in reports.iter().enumerate() {
        if let Some(Ok(answer)) = &report.digests {
            for d in &answer.groups {
                by_group
                    .entry(d.group)
                    .or_default()
                    .push((format!("n{}", i + 1), d));
            }
        }
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "GROUP  DIGESTS (node:applied index:digest)");
    for (group, digests) in by_group {
        let mut verdict = "replicas agree";
        for (_, a) in &digests {
            for (_, b) in &digests {
                if a.applied_index == b.applied_index && a.digest != b.digest {
                    verdict = "DIVERGED: same index, different state";
                }
            }
        }
        let cells: Vec<String> = digests
            .iter()
            .map(|(n, d)| format!("{n}:{}:{}", d.applied_index, &d.digest[..12]))
            .collect();
        let _ = writeln!(
            out,
            "{:<6} {}  {verdict}",
            group_name(group),
            cells.join(" ")
        );
    }
}

fn group_name(group: u32) -> String {
    if group == METADATA_GROUP {
        "meta".into()
    } else {
        group.to_string()
    }
}

/// The report as tables: the nodes, named `n1`, `n2`, ... in the order given, then one line
/// per group with its members under those names (Raft node IDs are long random numbers).
pub fn render_text(reports: &[NodeReport]) -> String {
    let mut out = String::new();
    let mut names: BTreeMap<u64, String> = BTreeMap::new();
    for (i, report) in reports.iter().enumerate() {
        if let Ok((info, _)) = &report.info {
            names.insert(info.node_id, format!("n{}", i + 1));
        }
    }
    let name = |id: u64| names.get(&id).cloned().unwrap_or_else(|| id.to_string());
    // Nodes of different clusters given together are an operator's mistake worth showing.
    let mut cluster_ids: Vec<&str> = reports
        .iter()
        .filter_map(|r| r.info.as_ref().ok())
        .map(|(info, _)| info.cluster_id.as_str())
        .collect();
    cluster_ids.sort_unstable();
    cluster_ids.dedup();
    let shown: Vec<&str> = cluster_ids
        .iter()
        .map(|id| if id.is_empty() { "(none yet)" } else { id })
        .collect();
    let _ = writeln!(out, "CLUSTER {}", shown.join(", "));
    if shown.len() > 1 {
        let _ = writeln!(
            out,
            "warning: these nodes belong to different clusters; each node's ID is in the \
             describe --json output"
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "NODE  NODE ID               ADDRESS                 STATUS"
    );
    // Each group as every reachable node sees it.
    let mut groups: BTreeMap<u32, Vec<(u64, &apb::GroupStatus)>> = BTreeMap::new();
    for (i, report) in reports.iter().enumerate() {
        let label = format!("n{}", i + 1);
        match &report.info {
            Ok((info, answer)) => {
                let leads = answer.groups.iter().filter(|g| g.state == "Leader").count();
                let _ = writeln!(
                    out,
                    "{label:<5} {:<21} {:<23} up, leads {leads} of {} groups",
                    info.node_id,
                    report.addr,
                    answer.groups.len()
                );
                for g in &answer.groups {
                    groups.entry(g.group).or_default().push((info.node_id, g));
                }
            }
            Err(e) => {
                let _ = writeln!(
                    out,
                    "{label:<5} {:<21} {:<23} unreachable: {e}",
                    "?", report.addr
                );
            }
        }
    }
    let members = members(reports);
    if !members.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "MEMBER NODE ID               ADDRESS                 STATE"
        );
        for m in members {
            let _ = writeln!(
                out,
                "{:<6} {:<21} {:<23} {}",
                name(m.node_id),
                m.node_id,
                m.raft_addr,
                member_state(m)
            );
        }
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "GROUP  LEADER  TERM  VOTERS      APPLIED (node:index)      LAG (node:entries behind)"
    );
    for (group, views) in &groups {
        // The leader's own view is authoritative for term, members and follower progress.
        let leader_view = views.iter().find(|(_, g)| g.state == "Leader");
        let (term, leader, voters) = match leader_view {
            Some((id, g)) => (g.term, name(*id), g.voters.clone()),
            None => (
                views.iter().map(|(_, g)| g.term).max().unwrap_or(0),
                "none".to_string(),
                views
                    .first()
                    .map(|(_, g)| g.voters.clone())
                    .unwrap_or_default(),
            ),
        };
        let applied: Vec<String> = views
            .iter()
            .map(|(id, g)| format!("{}:{}", name(*id), g.last_applied_index))
            .collect();
        let lag: Vec<String> = match leader_view {
            Some((_, g)) => g
                .followers
                .iter()
                .map(|f| match f.matched_index {
                    Some(m) => {
                        format!("{}:{}", name(f.node_id), g.last_log_index.saturating_sub(m))
                    }
                    None => format!("{}:?", name(f.node_id)),
                })
                .collect(),
            None => vec!["-".into()],
        };
        let mut voters: Vec<String> = voters.into_iter().map(name).collect();
        voters.sort();
        let _ = writeln!(
            out,
            "{:<6} {:<7} {:<5} {:<11} {:<25} {}",
            group_name(*group),
            leader,
            term,
            voters.join(","),
            applied.join(" "),
            lag.join(" ")
        );
    }
    if reports.iter().any(|r| r.digests.is_some()) {
        render_digests(&mut out, reports);
    }
    out
}

/// The report as JSON, for scripts.
pub fn render_json(reports: &[NodeReport]) -> serde_json::Value {
    let nodes: Vec<serde_json::Value> = reports
        .iter()
        .map(|r| {
            let mut node = match &r.info {
                Ok((info, answer)) => serde_json::json!({
                    "address": r.addr,
                    "node_id": info.node_id,
                    "raft_address": info.raft_addr,
                    "num_shards": info.num_shards,
                    "initialized": info.initialized,
                    "cluster_id": info.cluster_id,
                    // Groups with any row on this node's disk (those it holds, and small
                    // start-up records of others); a dropped replica's data is deleted as it is
                    // dropped.
                    "groups_with_data": info.groups_with_rows.iter().map(|g| group_name(*g))
                        .collect::<Vec<_>>(),
                    // Replicas this node dropped since it started (moved to other nodes); it
                    // opens one anew when the group is placed on it again.
                    "dropped_groups": info.dropped_groups.iter().map(|g| group_name(*g))
                        .collect::<Vec<_>>(),
                    "groups": answer.groups.iter().map(|g| serde_json::json!({
                        "group": group_name(g.group),
                        "state": g.state,
                        "term": g.term,
                        "leader": (g.leader != 0).then_some(g.leader),
                        "last_log_index": g.last_log_index,
                        "last_applied_index": g.last_applied_index,
                        "voters": g.voters,
                        "learners": g.learners,
                        "followers": g.followers.iter().map(|f| serde_json::json!({
                            "node_id": f.node_id,
                            "matched_index": f.matched_index,
                            "lag": f.matched_index.map(|m| g.last_log_index.saturating_sub(m)),
                        })).collect::<Vec<_>>(),
                    })).collect::<Vec<_>>(),
                }),
                Err(e) => serde_json::json!({ "address": r.addr, "error": e }),
            };
            if let Some(digests) = &r.digests {
                node["digests"] = digests_json(digests);
            }
            node
        })
        .collect();
    let members: Vec<serde_json::Value> = members(reports)
        .iter()
        .map(|m| {
            serde_json::json!({
                "node_id": m.node_id,
                "address": m.raft_addr,
                "state": member_state(m),
            })
        })
        .collect();
    serde_json::json!({ "nodes": nodes, "members": members })
}

/// The `digests` member of a node's JSON: per group, its applied index and digest.
fn digests_json(digests: &Result<apb::DigestGroupsResponse, String>) -> serde_json::Value {
    match digests {
        Ok(answer) => serde_json::Value::Array(
            answer
                .groups
                .iter()
                .map(|d| {
                    serde_json::json!({
                        "group": group_name(d.group),
                        "applied_index": d.applied_index,
                        "digest": d.digest,
                    })
                })
                .collect(),
        ),
        Err(e) => serde_json::json!({ "error": e }),
    }
}
