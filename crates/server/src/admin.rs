//! Founding a replicated history cluster (`chronicle cluster init`): the `AdminApi` a history
//! node serves on its internal listener, and the client side that asks every node who it is and
//! then one node to initialise every group with all of them as voters.
//!
//! Only one node initialises a group: two nodes initialising the same group with different
//! voter sets would found two clusters under one name (openraft's cluster-formation docs).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chronicle_history::HistoryEngine;
use chronicle_proto::chronicle::admin::v1::{
    self as apb, admin_api_client::AdminApiClient, admin_api_server,
};
use chronicle_types::ApiError;
use chronicle_types::shard::METADATA_GROUP;
use tonic::{Request, Response, Status};

/// The `AdminApi` of a history node.
pub struct AdminApiService {
    engine: Arc<HistoryEngine>,
    node_id: u64,
    raft_addr: String,
}

impl AdminApiService {
    pub fn new(engine: Arc<HistoryEngine>, node_id: u64, raft_addr: String) -> Self {
        Self {
            engine,
            node_id,
            raft_addr,
        }
    }

    pub fn into_server(self) -> admin_api_server::AdminApiServer<Self> {
        admin_api_server::AdminApiServer::new(self)
    }
}

#[tonic::async_trait]
impl admin_api_server::AdminApi for AdminApiService {
    async fn describe_node(
        &self,
        _: Request<apb::DescribeNodeRequest>,
    ) -> Result<Response<apb::NodeInfo>, Status> {
        Ok(Response::new(apb::NodeInfo {
            node_id: self.node_id,
            raft_addr: self.raft_addr.clone(),
            num_shards: self.engine.num_shards(),
            initialized: self.engine.is_initialized().await.map_err(Status::from)?,
        }))
    }

    async fn initialize_cluster(
        &self,
        r: Request<apb::InitializeClusterRequest>,
    ) -> Result<Response<apb::InitializeClusterResponse>, Status> {
        let r = r.into_inner();
        if r.num_shards != self.engine.num_shards() {
            return Err(ApiError::failed_precondition(format!(
                "the cluster is to have {} shards but this node's data directory has {}",
                r.num_shards,
                self.engine.num_shards()
            ))
            .into());
        }
        let members: BTreeMap<u64, openraft::BasicNode> = r
            .members
            .into_iter()
            .map(|m| (m.node_id, openraft::BasicNode { addr: m.raft_addr }))
            .collect();
        let groups = self
            .engine
            .initialize_cluster(members, &r.groups)
            .await
            .map_err(Status::from)?;
        Ok(Response::new(apb::InitializeClusterResponse { groups }))
    }

    async fn describe_groups(
        &self,
        _: Request<apb::DescribeGroupsRequest>,
    ) -> Result<Response<apb::DescribeGroupsResponse>, Status> {
        let groups = self
            .engine
            .group_status()
            .into_iter()
            .map(|g| apb::GroupStatus {
                group: g.group,
                state: g.state,
                term: g.term,
                leader: g.leader.unwrap_or(0),
                last_log_index: g.last_log_index,
                last_applied_index: g.last_applied_index,
                voters: g.voters,
                learners: g.learners,
                followers: g
                    .matched
                    .into_iter()
                    .map(|(node_id, matched_index)| apb::FollowerProgress {
                        node_id,
                        matched_index,
                    })
                    .collect(),
            })
            .collect();
        Ok(Response::new(apb::DescribeGroupsResponse {
            node_id: self.node_id,
            groups,
        }))
    }

    async fn digest_groups(
        &self,
        _: Request<apb::DigestGroupsRequest>,
    ) -> Result<Response<apb::DigestGroupsResponse>, Status> {
        let engine = self.engine.clone();
        let digests = tokio::task::spawn_blocking(move || engine.group_digests())
            .await
            .map_err(|e| Status::internal(format!("digest task: {e}")))?
            .map_err(|e| Status::internal(format!("reading the state: {e}")))?;
        Ok(Response::new(apb::DigestGroupsResponse {
            node_id: self.node_id,
            groups: digests
                .into_iter()
                .map(|d| apb::GroupDigest {
                    group: d.group,
                    applied_index: d.applied_index,
                    digest: format!("{:032x}", d.digest),
                })
                .collect(),
        }))
    }
}

/// Asks every node at `nodes` (internal addresses) who it is, checks they are fresh and agree on
/// the shard count, then has each group initialised, with all of them as voters, by exactly one
/// node: shard `s` by node `s % n`, the metadata group by the first. The initialising node
/// campaigns at once and so first leads its groups: leadership starts spread over the nodes
/// (cluster.md §2.3: each group initialised by its preferred leader). Returns the members.
pub async fn init_cluster(nodes: &[String], num_shards: u32) -> anyhow::Result<Vec<apb::Member>> {
    anyhow::ensure!(!nodes.is_empty(), "no nodes given");
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
    let mut groups: Vec<Vec<u32>> = vec![Vec::new(); clients.len()];
    for shard in 0..num_shards {
        groups[shard as usize % clients.len()].push(shard);
    }
    groups[0].push(METADATA_GROUP);
    for (i, client) in clients.iter_mut().enumerate() {
        if groups[i].is_empty() {
            continue;
        }
        client
            .initialize_cluster(apb::InitializeClusterRequest {
                num_shards,
                members: members.clone(),
                groups: groups[i].clone(),
            })
            .await
            .map_err(|s| anyhow::anyhow!("{}: {}", nodes[i], s.message()))?;
    }
    Ok(members)
}

/// Nodes may still be starting: ask again for a while.
async fn describe_with_retry(
    client: &mut AdminApiClient<tonic::transport::Channel>,
    addr: &str,
) -> anyhow::Result<apb::NodeInfo> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match client.describe_node(apb::DescribeNodeRequest {}).await {
            Ok(info) => return Ok(info.into_inner()),
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::info!(%addr, error = %e.message(), "waiting for the node");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => {
                return Err(anyhow::anyhow!(e.message().to_string()))
                    .with_context(|| format!("{addr} did not answer"));
            }
        }
    }
}

/// Whether the history nodes at `nodes` already form a cluster: `true` when every one belongs
/// to one, `false` when none does, an error when only some do (a node's data directory was
/// wiped or swapped, which `cluster init` cannot repair) or a shard count differs.
pub async fn cluster_founded(nodes: &[String], num_shards: u32) -> anyhow::Result<bool> {
    let mut initialized = Vec::new();
    for addr in nodes {
        let channel = chronicle_cluster::grpc::lazy_channel(addr).map_err(anyhow::Error::msg)?;
        let info = describe_with_retry(&mut AdminApiClient::new(channel), addr).await?;
        anyhow::ensure!(
            info.num_shards == num_shards,
            "{addr} has {} shards, not {num_shards}",
            info.num_shards
        );
        initialized.push(info.initialized);
    }
    match (
        initialized.iter().all(|i| *i),
        initialized.iter().any(|i| *i),
    ) {
        (true, _) => Ok(true),
        (false, false) => Ok(false),
        (false, true) => anyhow::bail!(
            "only some of the history nodes {} belong to a cluster: one lost its data directory",
            nodes.join(",")
        ),
    }
}
