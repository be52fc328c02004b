//! The gRPC network between the replicas of a group (`proto/chronicle/raft/v1/transport.proto`).
//!
//! - [`client`]: [`PeerPool`] (one lazily connected channel per peer and lane, shared by every
//!   group of the node) and [`GrpcNetworkFactory`], openraft's network for one group.
//! - [`server`]: [`GroupRegistry`] (the groups this node hosts) and [`TransportService`], which
//!   checks each request's header and hands the message to the group's `Raft`.
//! - [`frames`]: the `Frames` stream per peer and lane that carries every group's appends and
//!   votes (snapshot chunks stay unary RPCs; so does everything to a peer without `Frames`).
//!
//! Wire contract: every request carries `Header{cluster_id, from_node, to_node, group}` and a
//! payload, openraft's request type encoded with postcard under [`Codec::PostcardOpenraft09`]. The
//! reply is the group's answer or its `RaftError` in the same codec, or a typed refusal
//! (`WrongNode`, `NoSuchGroup`, `WrongCluster`, `UnsupportedCodec`) that the sender reports to
//! openraft as `Unreachable`, so it backs off instead of hammering a peer that cannot answer.

mod client;
mod frames;
mod server;

pub use client::{GrpcNetwork, GrpcNetworkFactory, Lane, PeerPool, PeerPoolConfig};
pub use server::{GroupRegistry, StopStreams, TransportService, server_builder};

use std::sync::{Arc, RwLock};

use chronicle_proto::chronicle::raft::v1::Codec;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// gRPC messages may carry a batch of log entries or a snapshot chunk: well above tonic's 4 MiB
/// default, which would otherwise refuse a large append as `OutOfRange` forever.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// The codec this build writes and the only one it reads.
pub(crate) const CODEC: Codec = Codec::PostcardOpenraft09;

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, postcard::Error> {
    postcard::to_stdvec(value)
}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, postcard::Error> {
    postcard::from_bytes(bytes)
}

/// The ID of the cluster a node belongs to, shared by its sender ([`PeerPool`]) and receiver
/// ([`TransportService`]). Empty until the node joins a cluster (`cluster init`, or a
/// replacement): a node without one sends nothing and refuses every message, so two clusters
/// (or a stray node) never exchange Raft messages, whatever addresses they were given.
#[derive(Clone, Debug, Default)]
pub struct ClusterId(Arc<RwLock<String>>);

impl ClusterId {
    pub fn new(id: impl Into<String>) -> Self {
        Self(Arc::new(RwLock::new(id.into())))
    }

    pub fn get(&self) -> String {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Set once the node joined a cluster (a `String`, so no half-written value can be seen).
    pub fn set(&self, id: impl Into<String>) {
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = id.into();
    }
}

impl From<&str> for ClusterId {
    fn from(id: &str) -> Self {
        Self::new(id)
    }
}

impl From<String> for ClusterId {
    fn from(id: String) -> Self {
        Self::new(id)
    }
}
