//! The sending side: a pool of channels to peers and openraft's network on top of it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chronicle_proto::chronicle::raft::v1::{
    Header, RaftReply, RaftRequest, framed_request, raft_reply,
    raft_transport_client::RaftTransportClient,
};
use openraft::BasicNode;
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::transport::Channel;

use super::frames::{FrameError, FrameSender};
use super::{CODEC, MAX_MESSAGE_BYTES, decode, encode};
use crate::ShardRaftConfig;

/// Which connection a message travels on. Each lane is its own HTTP/2 connection, so votes and
/// heartbeats never wait behind a large append or a snapshot chunk in a TCP send buffer or an
/// HTTP/2 flow-control window (heartbeats starved by bulk traffic cause needless elections).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Lane {
    /// Votes and entry-less appends (heartbeats).
    Control,
    /// Appends that carry entries.
    Data,
    /// Snapshot chunks.
    Snapshot,
}

/// Connection settings of the pool.
#[derive(Clone, Debug)]
pub struct PeerPoolConfig {
    /// Bound on establishing a connection, so a dead peer is reported quickly.
    pub connect_timeout: Duration,
    /// HTTP/2 pings on every connection, idle or not: a peer that vanished without closing its
    /// sockets (a killed pod, a partition) is noticed within about two intervals instead of
    /// leaving a stale connection that keeps swallowing requests.
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    /// Largest request sent. A larger append is refused locally as `PayloadTooLarge`, which
    /// makes openraft send fewer entries per RPC; the receiver accepts up to
    /// [`MAX_MESSAGE_BYTES`](super::MAX_MESSAGE_BYTES), so this must not exceed it.
    pub max_message_bytes: usize,
}

impl Default for PeerPoolConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_millis(500),
            keepalive_interval: Duration::from_secs(1),
            keepalive_timeout: Duration::from_secs(1),
            max_message_bytes: MAX_MESSAGE_BYTES,
        }
    }
}

/// This node's channels to its peers, shared by every group on the node. Channels are created
/// on first use with `connect_lazy`, so creating one never waits on the network; a channel whose
/// RPC failed at the connection level is dropped and the next RPC builds a fresh one.
#[derive(Clone)]
pub struct PeerPool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    cluster_id: super::ClusterId,
    node_id: u64,
    config: PeerPoolConfig,
    channels: Mutex<HashMap<(u64, Lane), PeerChannel>>,
    /// The open `Frames` stream per peer and lane (appends and votes of every group).
    streams: Mutex<HashMap<(u64, Lane), PeerStream>>,
    /// Peers (at an address) that answered `Frames` with `Unimplemented`, and when: they get
    /// unary RPCs until [`UNARY_RETRY_AFTER`] has passed (a rolling upgrade may reach them).
    unary_only: Mutex<HashMap<(u64, String), Instant>>,
    next_stream: AtomicU64,
}

struct PeerChannel {
    addr: String,
    channel: Channel,
}

struct PeerStream {
    addr: String,
    /// Tells this stream apart from a later one on the same key, so a stream that ends only
    /// forgets itself.
    serial: u64,
    sender: FrameSender,
}

/// Appends above this size are sent as unary RPCs rather than on the peer's stream.
const FRAMED_APPEND_MAX_BYTES: usize = 1024 * 1024;

/// How long a peer without `Frames` is sent unary RPCs before a stream is tried again.
const UNARY_RETRY_AFTER: Duration = Duration::from_secs(60);

impl PeerPool {
    pub fn new(
        cluster_id: impl Into<super::ClusterId>,
        node_id: u64,
        config: PeerPoolConfig,
    ) -> Self {
        Self {
            inner: Arc::new(PoolInner {
                cluster_id: cluster_id.into(),
                node_id,
                config,
                channels: Mutex::new(HashMap::new()),
                streams: Mutex::new(HashMap::new()),
                unary_only: Mutex::new(HashMap::new()),
                next_stream: AtomicU64::new(0),
            }),
        }
    }

    pub fn node_id(&self) -> u64 {
        self.inner.node_id
    }

    pub fn cluster_id(&self) -> String {
        self.inner.cluster_id.get()
    }

    /// The channel to `target` on `lane`, created (without dialling) if there is none or the
    /// peer's address changed. `addr` is `host:port`.
    pub fn channel(&self, target: u64, addr: &str, lane: Lane) -> Result<Channel, String> {
        let mut channels = self.lock();
        if let Some(existing) = channels.get(&(target, lane))
            && existing.addr == addr
        {
            return Ok(existing.channel.clone());
        }
        let config = &self.inner.config;
        // Plaintext or mutual TLS, as the process was configured (`chronicle_types::tls`).
        let channel = chronicle_types::tls::internal_endpoint(addr, config.connect_timeout)
            .map_err(|e| format!("node {target}: {e}"))?
            .http2_keep_alive_interval(config.keepalive_interval)
            .keep_alive_timeout(config.keepalive_timeout)
            .keep_alive_while_idle(true)
            .connect_lazy();
        channels.insert(
            (target, lane),
            PeerChannel {
                addr: addr.to_string(),
                channel: channel.clone(),
            },
        );
        Ok(channel)
    }

    /// Drops the channel to `target` on `lane` (after a connection-level failure), so the next
    /// RPC dials again instead of reusing a connection to a peer that may have restarted.
    pub fn forget(&self, target: u64, lane: Lane) {
        self.lock().remove(&(target, lane));
    }

    /// Forgets the channel and the stream to `target` on `lane`: the next call opens both
    /// anew. Calls in flight on the old stream still get their answers.
    fn retire(&self, target: u64, lane: Lane) {
        lock(&self.inner.streams).remove(&(target, lane));
        self.forget(target, lane);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(u64, Lane), PeerChannel>> {
        lock(&self.inner.channels)
    }

    /// The `Frames` stream to `target` on `lane`, opened if there is none (or it ended, or the
    /// peer's address changed); `None` if the peer only speaks the unary RPCs.
    pub(crate) fn frame_sender(
        &self,
        target: u64,
        addr: &str,
        lane: Lane,
    ) -> Result<Option<FrameSender>, String> {
        {
            let mut unary_only = lock(&self.inner.unary_only);
            let key = (target, addr.to_string());
            match unary_only.get(&key) {
                Some(since) if since.elapsed() < UNARY_RETRY_AFTER => return Ok(None),
                Some(_) => {
                    unary_only.remove(&key);
                }
                None => {}
            }
        }
        let mut streams = lock(&self.inner.streams);
        if let Some(existing) = streams.get(&(target, lane))
            && existing.addr == addr
            && !existing.sender.is_closed()
        {
            return Ok(Some(existing.sender.clone()));
        }
        let channel = self.channel(target, addr, lane)?;
        let serial = self.inner.next_stream.fetch_add(1, Ordering::Relaxed);
        let pool = self.clone();
        let sender = FrameSender::open(channel, move || {
            // The connection failed or the peer went away: the next call dials afresh.
            let mut streams = lock(&pool.inner.streams);
            if streams.get(&(target, lane)).map(|s| s.serial) == Some(serial) {
                streams.remove(&(target, lane));
                drop(streams);
                pool.forget(target, lane);
            }
        });
        streams.insert(
            (target, lane),
            PeerStream {
                addr: addr.to_string(),
                serial,
                sender: sender.clone(),
            },
        );
        Ok(Some(sender))
    }

    /// `target` at `addr` answered `Frames` with `Unimplemented`.
    pub(crate) fn mark_unary_only(&self, target: u64, addr: &str) {
        lock(&self.inner.unary_only).insert((target, addr.to_string()), Instant::now());
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The pool's maps only ever hold complete entries, so a panic elsewhere cannot leave them
    // torn.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// openraft's network factory of one group.
#[derive(Clone)]
pub struct GrpcNetworkFactory {
    pool: PeerPool,
    group: u32,
}

impl GrpcNetworkFactory {
    pub fn new(pool: PeerPool, group: u32) -> Self {
        Self { pool, group }
    }
}

impl RaftNetworkFactory<ShardRaftConfig> for GrpcNetworkFactory {
    type Network = GrpcNetwork;

    // RaftCore awaits this while it handles votes and heartbeats: it only records the target.
    // Channels are looked up (and lazily created) per RPC.
    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Self::Network {
        GrpcNetwork {
            pool: self.pool.clone(),
            group: self.group,
            target,
            addr: node.addr.clone(),
        }
    }
}

/// openraft's connection from one group to one of its peers.
pub struct GrpcNetwork {
    pool: PeerPool,
    group: u32,
    target: u64,
    addr: String,
}

enum Framed {
    Answered(RaftReply),
    UseUnary(RaftRequest),
}

#[derive(Clone, Copy)]
enum Rpc {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

fn unreachable<E: std::error::Error>(message: String) -> RPCError<u64, BasicNode, E> {
    RPCError::Unreachable(Unreachable::new(&std::io::Error::new(
        std::io::ErrorKind::NotConnected,
        message,
    )))
}

fn network_error<E: std::error::Error>(message: String) -> RPCError<u64, BasicNode, E> {
    RPCError::Network(NetworkError::new(&std::io::Error::other(message)))
}

fn encode_request(request: &impl Serialize) -> Result<Vec<u8>, String> {
    encode(request).map_err(|e| format!("encoding the request: {e}"))
}

impl GrpcNetwork {
    async fn call<Resp, E>(
        &self,
        rpc: Rpc,
        lane: Lane,
        payload: Vec<u8>,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<u64, BasicNode, E>>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let target = self.target;
        let cluster_id = self.pool.cluster_id();
        if cluster_id.is_empty() {
            return Err(unreachable(
                "this node has not joined a cluster yet".to_string(),
            ));
        }
        let request = RaftRequest {
            header: Some(Header {
                cluster_id,
                from_node: self.pool.node_id(),
                to_node: target,
                group: self.group,
            }),
            codec: CODEC as i32,
            payload,
        };
        let reply = match self.call_framed(rpc, lane, request, option).await? {
            Framed::Answered(reply) => reply,
            Framed::UseUnary(request) => self.call_unary(rpc, lane, request, option).await?,
        };
        let group = self.group;
        if matches!(
            reply.result,
            Some(
                raft_reply::Result::WrongNode(_)
                    | raft_reply::Result::NoSuchGroup(_)
                    | raft_reply::Result::WrongCluster(_)
                    | raft_reply::Result::UnsupportedCodec(_)
            )
        ) {
            // The process that answered may be on its way out (a stopping server keeps serving
            // the streams already open on its connections) or another node now has the
            // address: the next call dials afresh. Calls in flight on the old stream finish.
            self.pool.retire(target, lane);
        }
        match reply.result {
            Some(raft_reply::Result::Ok(bytes)) => decode(&bytes)
                .map_err(|e| network_error(format!("decoding node {target}'s answer: {e}"))),
            Some(raft_reply::Result::RaftError(bytes)) => {
                let err: E = decode(&bytes)
                    .map_err(|e| network_error(format!("decoding node {target}'s error: {e}")))?;
                Err(RPCError::RemoteError(RemoteError::new_with_node(
                    target,
                    BasicNode::new(self.addr.clone()),
                    err,
                )))
            }
            Some(raft_reply::Result::WrongNode(w)) => Err(unreachable(format!(
                "{} answers as node {}, not node {}",
                self.addr, w.actual, w.expected
            ))),
            Some(raft_reply::Result::NoSuchGroup(_)) => Err(unreachable(format!(
                "node {target} does not host group {group}"
            ))),
            Some(raft_reply::Result::WrongCluster(w)) => Err(unreachable(format!(
                "node {target} at {} is in cluster {:?}, not {:?}",
                self.addr, w.actual, w.expected
            ))),
            Some(raft_reply::Result::UnsupportedCodec(c)) => Err(unreachable(format!(
                "node {target} cannot read codec {}",
                c.codec
            ))),
            None => Err(network_error(format!("node {target} sent an empty reply"))),
        }
    }

    /// Appends and votes go on the peer's `Frames` stream; snapshot chunks, large appends and
    /// every message to a peer without `Frames` as unary RPCs.
    async fn call_framed<E: std::error::Error>(
        &self,
        rpc: Rpc,
        lane: Lane,
        request: RaftRequest,
        option: &RPCOption,
    ) -> Result<Framed, RPCError<u64, BasicNode, E>> {
        let call = match rpc {
            // A large append (a follower catching up) would hold up every other group's
            // messages behind it on the shared stream; on its own HTTP/2 stream it interleaves.
            Rpc::AppendEntries if request.payload.len() > FRAMED_APPEND_MAX_BYTES => {
                return Ok(Framed::UseUnary(request));
            }
            Rpc::AppendEntries => framed_request::Call::AppendEntries,
            Rpc::Vote => framed_request::Call::Vote,
            Rpc::InstallSnapshot => return Ok(Framed::UseUnary(request)),
        };
        let Some(sender) = self
            .pool
            .frame_sender(self.target, &self.addr, lane)
            .map_err(unreachable)?
        else {
            return Ok(Framed::UseUnary(request));
        };
        let context = || {
            format!(
                "node {} at {} (group {})",
                self.target, self.addr, self.group
            )
        };
        match sender.call(call(request), option.hard_ttl()).await {
            Ok(reply) => Ok(Framed::Answered(reply)),
            Err(FrameError::Unimplemented(call)) => {
                self.pool.mark_unary_only(self.target, &self.addr);
                match *call {
                    framed_request::Call::AppendEntries(request)
                    | framed_request::Call::Vote(request) => Ok(Framed::UseUnary(request)),
                }
            }
            Err(FrameError::Unreachable(why)) => Err(unreachable(format!("{}: {why}", context()))),
            Err(FrameError::Failed(why)) => Err(network_error(format!("{}: {why}", context()))),
        }
    }

    async fn call_unary<E: std::error::Error>(
        &self,
        rpc: Rpc,
        lane: Lane,
        request: RaftRequest,
        option: &RPCOption,
    ) -> Result<RaftReply, RPCError<u64, BasicNode, E>> {
        let channel = self
            .pool
            .channel(self.target, &self.addr, lane)
            .map_err(unreachable)?;
        let mut client = RaftTransportClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let mut request = tonic::Request::new(request);
        // The receiver stops working on a request openraft has already given up on.
        request.set_timeout(option.hard_ttl());
        let result = match rpc {
            Rpc::AppendEntries => client.append_entries(request).await,
            Rpc::Vote => client.vote(request).await,
            Rpc::InstallSnapshot => client.install_snapshot(request).await,
        };
        result
            .map(tonic::Response::into_inner)
            .map_err(|status| self.status_error(lane, status))
    }

    /// Connection failures mean the peer is down or restarting: openraft should back off
    /// (`Unreachable`), and the channel is rebuilt so a restarted peer gets a fresh connection.
    /// Anything else (a timeout, a refused message) is retried normally.
    fn status_error<E: std::error::Error>(
        &self,
        lane: Lane,
        status: tonic::Status,
    ) -> RPCError<u64, BasicNode, E> {
        let message = format!(
            "node {} at {} (group {}): {status}",
            self.target, self.addr, self.group
        );
        match status.code() {
            tonic::Code::Unavailable | tonic::Code::Unknown => {
                self.pool.forget(self.target, lane);
                unreachable(message)
            }
            _ => network_error(message),
        }
    }
}

impl RaftNetwork<ShardRaftConfig> for GrpcNetwork {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<ShardRaftConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        let entries = rpc.entries.len() as u64;
        let lane = if entries == 0 {
            Lane::Control
        } else {
            Lane::Data
        };
        let payload = encode_request(&rpc).map_err(network_error)?;
        let limit = self.pool.inner.config.max_message_bytes;
        if payload.len() > limit && entries > 1 {
            // Ask openraft for as many entries as would have fitted (at least one; a single
            // entry above the limit is sent anyway and the receiver decides).
            let fitting = (entries as u128 * limit as u128 / payload.len() as u128) as u64;
            return Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(fitting.clamp(1, entries - 1)),
            ));
        }
        self.call(Rpc::AppendEntries, lane, payload, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<ShardRaftConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
    > {
        let payload = encode_request(&rpc).map_err(network_error)?;
        self.call(Rpc::InstallSnapshot, Lane::Snapshot, payload, &option)
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        let payload = encode_request(&rpc).map_err(network_error)?;
        self.call(Rpc::Vote, Lane::Control, payload, &option).await
    }
}
