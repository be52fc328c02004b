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
use chronicle_history::membership::MemberChange;
use chronicle_proto::chronicle::admin::v1::{
    self as apb, admin_api_client::AdminApiClient, admin_api_server,
};
use chronicle_proto::chronicle::persistence::v1::{ClusterMember, MemberState};
use chronicle_types::ApiError;
use chronicle_types::shard::METADATA_GROUP;
use tonic::{Request, Response, Status};

pub use crate::cluster_init::{init_cluster, set_group_members};

/// The `AdminApi` of a history node.
pub struct AdminApiService {
    engine: Arc<HistoryEngine>,
    node_id: u64,
    raft_addr: String,
    identity: NodeIdentity,
}

/// The cluster a node belongs to: stored in its data directory, and shared with its Raft
/// transport, which talks to that cluster only.
#[derive(Clone)]
pub struct NodeIdentity {
    pub db: chronicle_storage::Db,
    pub cluster_id: chronicle_raft::ClusterId,
    /// Serialises joins, so two concurrent ones cannot both see "none yet".
    pub joining: Arc<tokio::sync::Mutex<()>>,
}

/// The cluster ID of nodes founded before `cluster init` minted one: their groups keep
/// talking to each other after an upgrade.
pub const LEGACY_CLUSTER_ID: &str = "chronicle";

impl NodeIdentity {
    /// Reads the stored cluster ID; a node whose groups were founded before IDs existed gets
    /// [`LEGACY_CLUSTER_ID`] (stored, so it stays).
    pub async fn load(
        db: chronicle_storage::Db,
        cluster_id: chronicle_raft::ClusterId,
        engine: &HistoryEngine,
    ) -> anyhow::Result<Self> {
        let stored = db.cluster_id().map_err(|e| anyhow::anyhow!("{e}"))?;
        let id = match stored {
            Some(id) => id,
            None if engine
                .is_initialized()
                .await
                .map_err(|e| anyhow::anyhow!("{}", e.message))? =>
            {
                db.set_cluster_id(LEGACY_CLUSTER_ID)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                LEGACY_CLUSTER_ID.to_string()
            }
            None => String::new(),
        };
        cluster_id.set(id);
        Ok(Self {
            db,
            cluster_id,
            joining: Arc::default(),
        })
    }

    /// Joins `id`: stores it when the node has none, accepts the same one again, refuses
    /// another.
    pub async fn join(&self, node_id: u64, id: &str) -> Result<(), ApiError> {
        if id.is_empty() {
            return Err(ApiError::invalid_argument("the cluster ID is empty"));
        }
        let _joining = self.joining.lock().await;
        let stored = self
            .db
            .cluster_id()
            .map_err(|e| ApiError::unavailable(format!("reading the cluster ID: {e}")))?;
        match stored {
            Some(existing) if existing == id => Ok(()),
            Some(existing) => Err(ApiError::failed_precondition(format!(
                "node {node_id} belongs to cluster {existing}, not {id}: a node joins one \
                 cluster in the life of its data directory (start it with a fresh one)"
            ))),
            None => {
                self.db
                    .set_cluster_id(id)
                    .map_err(|e| ApiError::unavailable(format!("storing the cluster ID: {e}")))?;
                self.cluster_id.set(id);
                tracing::info!(cluster_id = %id, "joined the cluster");
                Ok(())
            }
        }
    }
}

impl AdminApiService {
    pub fn new(
        engine: Arc<HistoryEngine>,
        node_id: u64,
        raft_addr: String,
        identity: NodeIdentity,
    ) -> Self {
        Self {
            engine,
            node_id,
            raft_addr,
            identity,
        }
    }

    pub fn into_server(self) -> admin_api_server::AdminApiServer<Self> {
        admin_api_server::AdminApiServer::new(self)
    }

    /// A request that names its node (`node_id` not 0) is refused by any other node: after a
    /// wiped node came back as a new node on the same address, a request meant for the old one
    /// (a draining member the placement driver still asks) must not drop or wipe the new one's
    /// replicas.
    fn ensure_addressed_to_me(&self, node_id: u64) -> Result<(), Status> {
        if node_id != 0 && node_id != self.node_id {
            return Err(ApiError::failed_precondition(format!(
                "this is node {}, not node {node_id}: that node no longer answers at this address",
                self.node_id
            ))
            .into());
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl admin_api_server::AdminApi for AdminApiService {
    async fn describe_node(
        &self,
        r: Request<apb::DescribeNodeRequest>,
    ) -> Result<Response<apb::NodeInfo>, Status> {
        let groups_with_rows = if r.into_inner().with_stored_groups {
            (0..self.engine.num_shards())
                .chain([METADATA_GROUP])
                .filter_map(|g| match self.engine.holds_rows_of(g) {
                    Ok(true) => Some(Ok(g)),
                    Ok(false) => None,
                    Err(e) => Some(Err(e)),
                })
                .collect::<Result<_, _>>()
                .map_err(Status::from)?
        } else {
            Vec::new()
        };
        Ok(Response::new(apb::NodeInfo {
            node_id: self.node_id,
            raft_addr: self.raft_addr.clone(),
            num_shards: self.engine.num_shards(),
            initialized: self.engine.is_initialized().await.map_err(Status::from)?,
            cluster_id: self.identity.cluster_id.get(),
            dropped_groups: (0..self.engine.num_shards())
                .chain([METADATA_GROUP])
                .filter(|g| self.engine.dropped_replica(*g))
                .collect(),
            groups_with_rows,
            removed_groups: self.engine.removed_groups(),
        }))
    }

    async fn update_member(
        &self,
        r: Request<apb::UpdateMemberRequest>,
    ) -> Result<Response<apb::UpdateMemberResponse>, Status> {
        let r = r.into_inner();
        let member = r
            .member
            .ok_or_else(|| Status::invalid_argument("the member is missing"))?;
        self.engine
            .update_member(member, r.replaces)
            .await
            .map_err(Status::from)?;
        Ok(Response::new(apb::UpdateMemberResponse {}))
    }

    async fn list_members(
        &self,
        _: Request<apb::ListMembersRequest>,
    ) -> Result<Response<apb::ListMembersResponse>, Status> {
        Ok(Response::new(apb::ListMembersResponse {
            members: self.engine.member_records().map_err(Status::from)?,
        }))
    }

    async fn drop_replica(
        &self,
        r: Request<apb::DropReplicaRequest>,
    ) -> Result<Response<apb::DropReplicaResponse>, Status> {
        let r = r.into_inner();
        self.ensure_addressed_to_me(r.node_id)?;
        self.engine
            .drop_replica(r.group)
            .await
            .map_err(Status::from)?;
        Ok(Response::new(apb::DropReplicaResponse {}))
    }

    async fn rehost_replica(
        &self,
        r: Request<apb::RehostReplicaRequest>,
    ) -> Result<Response<apb::RehostReplicaResponse>, Status> {
        let r = r.into_inner();
        self.ensure_addressed_to_me(r.node_id)?;
        let rehosted = self
            .engine
            .rehost_replica(r.group)
            .await
            .map_err(Status::from)?;
        Ok(Response::new(apb::RehostReplicaResponse { rehosted }))
    }

    async fn set_group_members(
        &self,
        r: Request<apb::SetGroupMembersRequest>,
    ) -> Result<Response<apb::SetGroupMembersResponse>, Status> {
        let r = r.into_inner();
        let by_id = |members: Vec<apb::Member>| -> BTreeMap<u64, String> {
            members
                .into_iter()
                .map(|m| (m.node_id, m.raft_addr))
                .collect()
        };
        let done = self
            .engine
            .set_members(r.group, by_id(r.voters), by_id(r.learners))
            .await
            .map_err(Status::from)?;
        Ok(Response::new(apb::SetGroupMembersResponse {
            voters: done.voters,
            learners: done.learners,
            changed: done.changed,
        }))
    }

    async fn join_cluster(
        &self,
        r: Request<apb::JoinClusterRequest>,
    ) -> Result<Response<apb::JoinClusterResponse>, Status> {
        self.identity
            .join(self.node_id, &r.into_inner().cluster_id)
            .await
            .map_err(Status::from)?;
        Ok(Response::new(apb::JoinClusterResponse {}))
    }

    async fn initialize_cluster(
        &self,
        r: Request<apb::InitializeClusterRequest>,
    ) -> Result<Response<apb::InitializeClusterResponse>, Status> {
        let r = r.into_inner();
        let own = self.identity.cluster_id.get();
        if r.cluster_id.is_empty() || r.cluster_id != own {
            return Err(ApiError::failed_precondition(format!(
                "node {} has not joined cluster {:?} (it belongs to {:?}): join it first",
                self.node_id, r.cluster_id, own
            ))
            .into());
        }
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

    async fn replace_member(
        &self,
        r: Request<apb::ReplaceMemberRequest>,
    ) -> Result<Response<apb::ReplaceMemberResponse>, Status> {
        let r = r.into_inner();
        let add = r
            .add
            .ok_or_else(|| Status::invalid_argument("the node to add is missing"))?;
        let remove = (r.remove_node_id != 0).then_some(r.remove_node_id);
        let change = self
            .engine
            .replace_member(r.group, (add.node_id, add.raft_addr), remove)
            .await
            .map_err(Status::from)?;
        let (voters, changed) = match change {
            MemberChange::Changed(voters) => (voters, true),
            MemberChange::AlreadyDone(voters) => (voters, false),
        };
        Ok(Response::new(apb::ReplaceMemberResponse {
            voters,
            changed,
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

/// Nodes may still be starting: ask again for a while.
pub(crate) async fn describe_with_retry(
    client: &mut AdminApiClient<tonic::transport::Channel>,
    addr: &str,
) -> anyhow::Result<apb::NodeInfo> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match client
            .describe_node(apb::DescribeNodeRequest::default())
            .await
        {
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

/// Whether the history nodes at `nodes` already form a cluster: `true` when any belongs to one
/// (a node with a fresh data directory among them is then a replacement, see
/// [`rejoin_fresh_nodes`]), `false` when none does. A shard count that differs is an error.
pub async fn cluster_founded(nodes: &[String], num_shards: u32) -> anyhow::Result<bool> {
    let mut founded = false;
    for addr in nodes {
        let channel = chronicle_cluster::grpc::lazy_channel(addr).map_err(anyhow::Error::msg)?;
        let info = describe_with_retry(&mut AdminApiClient::new(channel), addr).await?;
        anyhow::ensure!(
            info.num_shards == num_shards,
            "{addr} has {} shards, not {num_shards}",
            info.num_shards
        );
        founded |= info.initialized;
    }
    Ok(founded)
}

/// Nodes of a founded cluster that came back with a fresh data directory (a wiped disk) are
/// new nodes with new IDs: each takes the place of a member that no longer answers to any of
/// `nodes`, in every group ([`replace_node`]), or, when no member is missing (the old node was
/// declared dead and its replicas moved already), joins as a new node
/// ([`crate::placement_driver::add_node`]). Returns how many were rejoined.
pub async fn rejoin_fresh_nodes(
    nodes: &[String],
    mut progress: impl FnMut(&str),
) -> anyhow::Result<usize> {
    let mut founded = Vec::new();
    let mut fresh = Vec::new();
    let mut present = Vec::new();
    for addr in nodes {
        let channel = chronicle_cluster::grpc::lazy_channel(addr).map_err(anyhow::Error::msg)?;
        let info = describe_with_retry(&mut AdminApiClient::new(channel), addr).await?;
        present.push(info.node_id);
        if info.initialized {
            founded.push(addr.clone());
        } else {
            fresh.push((addr.clone(), info.node_id));
        }
    }
    if founded.is_empty() || fresh.is_empty() {
        return Ok(0);
    }
    // The metadata group's members name every member of the cluster.
    let channel = chronicle_cluster::grpc::lazy_channel(&founded[0]).map_err(anyhow::Error::msg)?;
    let groups = AdminApiClient::new(channel)
        .describe_groups(apb::DescribeGroupsRequest {})
        .await
        .map_err(|s| anyhow::anyhow!("{}: {}", founded[0], s.message()))?
        .into_inner();
    // Every member holds the metadata group, as a voter or a learner.
    let voters: Vec<u64> = groups
        .groups
        .iter()
        .find(|g| g.group == METADATA_GROUP)
        .map(|g| g.voters.iter().chain(&g.learners).copied().collect())
        .unwrap_or_default();
    let lost: Vec<u64> = voters
        .into_iter()
        .filter(|v| !present.contains(v))
        .collect();
    let mut lost = lost.into_iter();
    for (addr, id) in &fresh {
        match lost.next() {
            Some(old) => {
                progress(&format!(
                    "{addr} has a fresh data directory: node {id} replaces lost node {old}"
                ));
                let changed = replace_node(nodes, addr, old, &mut progress).await?;
                progress(&format!(
                    "{addr}: node {id} took lost node {old}'s place in every group ({changed} \
                     changed)"
                ));
            }
            // No member is missing: the node this one was before was declared dead (or
            // drained) and its replicas already live elsewhere. It joins as a new node, and the
            // placement moves some replicas to it.
            None => {
                progress(&format!(
                    "{addr} has a fresh data directory and no member is missing: node {id} \
                     joins as a new node"
                ));
                crate::placement_driver::add_node(nodes, addr).await?;
                progress(&format!(
                    "{addr}: node {id} joined the cluster as a new node"
                ));
            }
        }
    }
    Ok(fresh.len())
}

/// `chronicle cluster replace-node`: in every group, `new_addr`'s node takes the place of
/// `remove` (a lost node's ID, as `cluster describe` shows it), asked of each group's leader
/// among `nodes`. Safe to run again after an interruption: groups already changed are skipped.
/// Returns the number of groups changed.
pub async fn replace_node(
    nodes: &[String],
    new_addr: &str,
    remove: u64,
    mut progress: impl FnMut(&str),
) -> anyhow::Result<u32> {
    let channel = chronicle_cluster::grpc::lazy_channel(new_addr).map_err(anyhow::Error::msg)?;
    let new = describe_with_retry(&mut AdminApiClient::new(channel), new_addr).await?;
    anyhow::ensure!(
        new.node_id != remove,
        "{new_addr} is node {remove} itself: a replacement needs a fresh data directory"
    );
    let member = apb::Member {
        node_id: new.node_id,
        raft_addr: new.raft_addr.clone(),
    };
    let mut clients = Vec::new();
    let mut cluster_id = String::new();
    for addr in nodes {
        let channel = chronicle_cluster::grpc::lazy_channel(addr).map_err(anyhow::Error::msg)?;
        let mut client = AdminApiClient::new(channel);
        if cluster_id.is_empty()
            && let Ok(info) = client
                .describe_node(apb::DescribeNodeRequest::default())
                .await
            && info.get_ref().initialized
        {
            cluster_id = info.into_inner().cluster_id;
        }
        clients.push((addr.clone(), client));
    }
    anyhow::ensure!(
        !cluster_id.is_empty(),
        "none of the nodes given answered as a member of a cluster"
    );
    anyhow::ensure!(
        new.cluster_id.is_empty() || new.cluster_id == cluster_id,
        "{new_addr} (node {}) belongs to cluster {}, not {cluster_id}: give it a fresh data \
         directory",
        new.node_id,
        new.cluster_id
    );
    // The new node talks to this cluster only, from before it receives its first message.
    AdminApiClient::new(
        chronicle_cluster::grpc::lazy_channel(new_addr).map_err(anyhow::Error::msg)?,
    )
    .join_cluster(apb::JoinClusterRequest {
        cluster_id: cluster_id.clone(),
    })
    .await
    .map_err(|s| anyhow::anyhow!("{new_addr}: {}", s.message()))?;
    // The member list first (clusters founded before it was kept have none): the new node
    // counts, the old one is draining, and the placement driver records it drained. Recorded
    // before any group changes, so the driver (which moves groups toward the placement over the
    // active members) works toward the same voters as this replacement and never puts the lost
    // node back into a group already changed.
    if !crate::placement_driver::list_members(nodes)
        .await
        .unwrap_or_default()
        .is_empty()
    {
        crate::placement_driver::update_member(
            nodes,
            ClusterMember {
                node_id: new.node_id,
                raft_addr: new.raft_addr.clone(),
                state: MemberState::Active as i32,
            },
            remove,
        )
        .await?;
    }
    let groups: Vec<u32> = (0..new.num_shards).chain([METADATA_GROUP]).collect();
    let mut changed = 0;
    for group in groups {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        'group: loop {
            let mut last_error = String::from("no node answered");
            for (addr, client) in clients.iter_mut() {
                let request = apb::ReplaceMemberRequest {
                    group,
                    add: Some(member.clone()),
                    remove_node_id: remove,
                };
                match client.replace_member(request).await {
                    Ok(answer) => {
                        let answer = answer.into_inner();
                        if answer.changed {
                            changed += 1;
                        }
                        let name = if group == METADATA_GROUP {
                            "metadata group".to_string()
                        } else {
                            format!("shard {group}")
                        };
                        progress(&format!(
                            "{name}: voters {:?}{}",
                            answer.voters,
                            if answer.changed { "" } else { " (already)" }
                        ));
                        break 'group;
                    }
                    Err(status) => last_error = format!("{addr}: {}", status.message()),
                }
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "group {group}: no leader made the change within 120 s ({last_error})"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    Ok(changed)
}
