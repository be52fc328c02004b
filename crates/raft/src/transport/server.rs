//! The receiving side: which groups live here, and the gRPC service that feeds them.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use chronicle_proto::chronicle::raft::v1::{
    NoSuchGroup, RaftReply, RaftRequest, UnsupportedCodec, WrongCluster, WrongNode, raft_reply,
    raft_transport_server::{RaftTransport, RaftTransportServer},
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::{Request, Response, Status};

use super::{CODEC, MAX_MESSAGE_BYTES, decode, encode};
use crate::ShardRaft;

/// The Raft groups this node hosts, by group ID. A group is registered once its `Raft` is
/// running and removed before it shuts down; messages for a group that is not (or no longer)
/// here are refused with `NoSuchGroup`.
#[derive(Clone, Default)]
pub struct GroupRegistry {
    groups: Arc<RwLock<HashMap<u32, ShardRaft>>>,
}

impl GroupRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&self, group: u32, raft: ShardRaft) {
        self.write().insert(group, raft);
    }

    pub fn remove(&self, group: u32) -> Option<ShardRaft> {
        self.write().remove(&group)
    }

    pub fn get(&self, group: u32) -> Option<ShardRaft> {
        self.groups
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&group)
            .cloned()
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<u32, ShardRaft>> {
        // Entries are whole `Raft` handles, so a panic elsewhere cannot leave the map torn.
        self.groups
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The `RaftTransport` service of a node.
#[derive(Clone)]
pub struct TransportService {
    cluster_id: super::ClusterId,
    node_id: u64,
    registry: GroupRegistry,
}

impl TransportService {
    pub fn new(
        cluster_id: impl Into<super::ClusterId>,
        node_id: u64,
        registry: GroupRegistry,
    ) -> Self {
        Self {
            cluster_id: cluster_id.into(),
            node_id,
            registry,
        }
    }

    /// The tonic service to add to a server, with message limits that fit large appends and
    /// snapshot chunks.
    pub fn into_server(self) -> RaftTransportServer<Self> {
        RaftTransportServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// Checks the header; the group's `Raft` if the message is for this node and a group it
    /// hosts, otherwise the typed refusal to send back.
    fn admit(&self, request: &RaftRequest) -> Result<ShardRaft, RaftReply> {
        let refuse = |result| {
            Err(RaftReply {
                result: Some(result),
            })
        };
        let Some(header) = &request.header else {
            return refuse(raft_reply::Result::WrongNode(WrongNode {
                expected: 0,
                actual: self.node_id,
            }));
        };
        // A node that has not joined a cluster (empty ID) refuses everyone.
        let cluster_id = self.cluster_id.get();
        if cluster_id.is_empty() || header.cluster_id != cluster_id {
            return refuse(raft_reply::Result::WrongCluster(WrongCluster {
                expected: header.cluster_id.clone(),
                actual: cluster_id,
            }));
        }
        if header.to_node != self.node_id {
            return refuse(raft_reply::Result::WrongNode(WrongNode {
                expected: header.to_node,
                actual: self.node_id,
            }));
        }
        if request.codec != CODEC as i32 {
            return refuse(raft_reply::Result::UnsupportedCodec(UnsupportedCodec {
                codec: request.codec,
            }));
        }
        match self.registry.get(header.group) {
            Some(raft) => Ok(raft),
            None => refuse(raft_reply::Result::NoSuchGroup(NoSuchGroup {
                group: header.group,
            })),
        }
    }
}

/// A tonic server configured for Raft traffic: many groups' heartbeats share one connection per
/// peer, so the concurrent-stream limit is raised well above hyper's default of 200; HTTP/2
/// pings find a peer that vanished without closing its connection; no Nagle delay on small
/// messages (heartbeats, votes).
pub fn server_builder() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(1)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(1)))
        .tcp_nodelay(true)
}

/// Streams one peer may have open on one connection (one per in-flight RPC of any group).
const MAX_CONCURRENT_STREAMS: u32 = 8192;

fn payload<T: DeserializeOwned>(request: &RaftRequest) -> Result<T, Status> {
    decode(&request.payload)
        .map_err(|e| Status::invalid_argument(format!("undecodable Raft message: {e}")))
}

fn reply<T: Serialize, E: Serialize>(result: Result<T, E>) -> Result<Response<RaftReply>, Status> {
    let result = match result {
        Ok(ok) => raft_reply::Result::Ok(encode(&ok).map_err(encode_failed)?),
        Err(err) => raft_reply::Result::RaftError(encode(&err).map_err(encode_failed)?),
    };
    Ok(Response::new(RaftReply {
        result: Some(result),
    }))
}

fn encode_failed(e: postcard::Error) -> Status {
    Status::internal(format!("encoding the answer: {e}"))
}

#[tonic::async_trait]
impl RaftTransport for TransportService {
    async fn append_entries(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        let request = request.into_inner();
        let raft = match self.admit(&request) {
            Ok(raft) => raft,
            Err(refusal) => return Ok(Response::new(refusal)),
        };
        reply(raft.append_entries(payload(&request)?).await)
    }

    async fn vote(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let request = request.into_inner();
        let raft = match self.admit(&request) {
            Ok(raft) => raft,
            Err(refusal) => return Ok(Response::new(refusal)),
        };
        reply(raft.vote(payload(&request)?).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        let request = request.into_inner();
        let raft = match self.admit(&request) {
            Ok(raft) => raft,
            Err(refusal) => return Ok(Response::new(refusal)),
        };
        reply(raft.install_snapshot(payload(&request)?).await)
    }
}
