//! The receiving side: which groups live here, and the gRPC service that feeds them.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use chronicle_proto::chronicle::raft::v1::{
    FramedReply, FramedRequest, NoSuchGroup, RaftFrame, RaftReply, RaftReplyFrame, RaftRequest,
    UnsupportedCodec, WrongCluster, WrongNode, framed_reply, framed_request, raft_reply,
    raft_transport_server::{RaftTransport, RaftTransportServer},
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

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
    stopping: StopStreams,
}

/// Ends every `Frames` stream of a [`TransportService`]. A server's graceful shutdown waits for
/// its connections to go idle, which a peer's long-lived stream never does: the node stopping
/// calls [`StopStreams::stop`] when it stops serving, and the peers open new streams elsewhere
/// or find it gone.
#[derive(Clone)]
pub struct StopStreams(Arc<tokio::sync::watch::Sender<bool>>);

impl StopStreams {
    pub fn stop(&self) {
        self.0.send_replace(true);
    }

    async fn stopped(&self) {
        let mut stopped = self.0.subscribe();
        let _ = stopped.wait_for(|stop| *stop).await;
    }
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
            stopping: StopStreams(Arc::new(tokio::sync::watch::channel(false).0)),
        }
    }

    /// The handle that ends this service's streams (see [`StopStreams`]).
    pub fn stop_handle(&self) -> StopStreams {
        self.stopping.clone()
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

impl TransportService {
    async fn append_entries_reply(&self, request: RaftRequest) -> Result<RaftReply, Status> {
        let raft = match self.admit(&request) {
            Ok(raft) => raft,
            Err(refusal) => return Ok(refusal),
        };
        reply(raft.append_entries(payload(&request)?).await)
    }

    async fn vote_reply(&self, request: RaftRequest) -> Result<RaftReply, Status> {
        let raft = match self.admit(&request) {
            Ok(raft) => raft,
            Err(refusal) => return Ok(refusal),
        };
        reply(raft.vote(payload(&request)?).await)
    }

    /// One message of a frame, answered as its unary RPC would be (a status becomes `failed`).
    async fn framed(&self, request: FramedRequest) -> FramedReply {
        let work = async {
            match request.call {
                Some(framed_request::Call::AppendEntries(r)) => self.append_entries_reply(r).await,
                Some(framed_request::Call::Vote(r)) => self.vote_reply(r).await,
                None => Err(Status::invalid_argument("a framed message without a call")),
            }
        };
        let result = match request.timeout_ms {
            0 => work.await,
            ms => tokio::time::timeout(std::time::Duration::from_millis(ms.into()), work)
                .await
                .unwrap_or_else(|_| Err(Status::deadline_exceeded("deadline passed"))),
        };
        FramedReply {
            id: request.id,
            outcome: Some(match result {
                Ok(reply) => framed_reply::Outcome::Reply(reply),
                Err(status) => framed_reply::Outcome::Failed(status.to_string()),
            }),
        }
    }
}

/// Most answers sent back in one frame (the rest go in the next).
const MAX_REPLIES_PER_FRAME: usize = 256;

/// The answers of a peer's stream, in frames: each frame carries every answer ready when it is
/// sent. Ends once the peer closed its side and every message it sent has been answered.
type ReplyFrames = std::pin::Pin<
    Box<dyn tokio_stream::Stream<Item = Result<RaftReplyFrame, Status>> + Send + 'static>,
>;

fn reply_frames(answers: mpsc::UnboundedReceiver<FramedReply>) -> ReplyFrames {
    Box::pin(futures::stream::unfold(answers, |mut answers| async move {
        let first = answers.recv().await?;
        let mut replies = vec![first];
        while replies.len() < MAX_REPLIES_PER_FRAME {
            match answers.try_recv() {
                Ok(next) => replies.push(next),
                Err(_) => break,
            }
        }
        Some((Ok(RaftReplyFrame { replies }), answers))
    }))
}

/// Reads a peer's frames and handles each message on its own task, so an append waiting for
/// its fsync never holds up another group's heartbeat or vote.
async fn read_frames(
    service: TransportService,
    mut frames: Streaming<RaftFrame>,
    answers: mpsc::UnboundedSender<FramedReply>,
) {
    loop {
        let frame = match frames.message().await {
            Ok(Some(frame)) => frame,
            // The peer closed its side (its pool dropped the stream) or the connection broke:
            // messages already read are still answered, if anyone is listening.
            Ok(None) => return,
            Err(status) => {
                tracing::debug!(%status, "Raft frame stream ended");
                return;
            }
        };
        for request in frame.requests {
            let service = service.clone();
            let answers = answers.clone();
            tokio::spawn(async move {
                let _ = answers.send(service.framed(request).await);
            });
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

fn reply<T: Serialize, E: Serialize>(result: Result<T, E>) -> Result<RaftReply, Status> {
    let result = match result {
        Ok(ok) => raft_reply::Result::Ok(encode(&ok).map_err(encode_failed)?),
        Err(err) => raft_reply::Result::RaftError(encode(&err).map_err(encode_failed)?),
    };
    Ok(RaftReply {
        result: Some(result),
    })
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
        self.append_entries_reply(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn vote(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        self.vote_reply(request.into_inner())
            .await
            .map(Response::new)
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
        reply(raft.install_snapshot(payload(&request)?).await).map(Response::new)
    }

    type FramesStream = ReplyFrames;

    async fn frames(
        &self,
        request: Request<Streaming<RaftFrame>>,
    ) -> Result<Response<Self::FramesStream>, Status> {
        let (answers, answered) = mpsc::unbounded_channel();
        let stopping = self.stopping.clone();
        let reading = read_frames(self.clone(), request.into_inner(), answers);
        tokio::spawn(async move {
            tokio::select! {
                () = reading => {}
                () = stopping.stopped() => {}
            }
        });
        let stopping = self.stopping.clone();
        let frames = futures::StreamExt::take_until(reply_frames(answered), async move {
            stopping.stopped().await;
        });
        Ok(Response::new(Box::pin(frames)))
    }
}
