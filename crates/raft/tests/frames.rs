//! The `Frames` stream: several groups' messages to one peer in one frame, each answered by its
//! own group; a peer that goes away fails only the calls sent to it; a peer without `Frames`
//! (an older build) gets unary RPCs. Real nodes, real groups, real TCP.

mod common;

use common::*;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chronicle_proto::chronicle::raft::v1::{
    FramedReply, FramedRequest, Header, RaftFrame, RaftReply, RaftReplyFrame, RaftRequest,
    framed_reply, framed_request, raft_reply,
    raft_transport_client::RaftTransportClient,
    raft_transport_server::{RaftTransport, RaftTransportServer},
};
use chronicle_raft::{
    Bootstrap, GroupTiming, GrpcNetworkFactory, PeerPool, PeerPoolConfig, TransportService,
};
use openraft::error::RPCError;
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{VoteRequest, VoteResponse};
use openraft::{BasicNode, Vote};
use tonic::{Request, Response, Status, Streaming};

/// A second group, hosted by one node only (its single voter).
const OTHER: u32 = GROUP + 10;

fn codec() -> i32 {
    chronicle_proto::chronicle::raft::v1::Codec::PostcardOpenraft09 as i32
}

/// A vote for term 0: refused by any group, whose answer then carries its own last log ID.
fn stale_vote(from: u64) -> Vec<u8> {
    postcard::to_stdvec(&VoteRequest::<u64>::new(Vote::new(0, from), None)).unwrap()
}

fn request(from: u64, to: u64, group: u32, payload: Vec<u8>) -> RaftRequest {
    RaftRequest {
        header: Some(Header {
            cluster_id: CLUSTER.to_string(),
            from_node: from,
            to_node: to,
            group,
        }),
        codec: codec(),
        payload,
    }
}

/// Starts `OTHER` on `node` (its only voter) and commits `count` commands in it.
async fn start_other_group(node: &Node, count: usize) -> chronicle_raft::ShardRaft {
    let pool = PeerPool::new(CLUSTER, node.id, PeerPoolConfig::default());
    let voters = BTreeMap::from([(node.id, BasicNode::new(node.addr.to_string()))]);
    let raft = chronicle_raft::start_group_with(
        node.db().clone(),
        OTHER,
        node.id,
        GrpcNetworkFactory::new(pool, OTHER),
        GroupTiming::replicated(),
        Arc::new(RowPerCommand),
        Bootstrap::Voters(voters),
    )
    .await
    .expect("start the second group");
    node.running
        .as_ref()
        .unwrap()
        .registry
        .insert(OTHER, raft.clone());
    for i in 0..count {
        let mut attempts = 0;
        while chronicle_raft::propose(&raft, OTHER, format!("other-{i}").into_bytes())
            .await
            .is_err()
        {
            attempts += 1;
            assert!(attempts < 500, "the single-voter group elects itself");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    raft
}

fn last_log_index(raft: &chronicle_raft::ShardRaft) -> Option<u64> {
    raft.metrics().borrow().last_log_index
}

/// One frame with messages for two groups, an unknown group, another node and an undecodable
/// payload: every message is answered under its own ID, by its own group or with its refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_frame_carries_several_groups_messages() {
    let mut nodes = start_cluster(&GroupTiming::replicated()).await;
    let index = propose_all(&nodes, "shared", 3).await;
    let target = &nodes[1];
    wait_for("the follower has every entry", || {
        (last_log_index(target.raft()) >= Some(index)).then_some(())
    })
    .await;
    let other = start_other_group(target, 7).await;
    let from = nodes[0].id;

    let framed = |id, group, to, payload| FramedRequest {
        id,
        call: Some(framed_request::Call::Vote(request(
            from, to, group, payload,
        ))),
        timeout_ms: 5_000,
    };
    let frame = RaftFrame {
        requests: vec![
            framed(11, GROUP, target.id, stale_vote(from)),
            framed(12, OTHER, target.id, stale_vote(from)),
            framed(13, GROUP + 1, target.id, stale_vote(from)),
            framed(
                14,
                GROUP,
                target.id.wrapping_add(1).max(1),
                stale_vote(from),
            ),
            framed(15, GROUP, target.id, vec![0xff; 3]),
        ],
    };
    let mut client = RaftTransportClient::connect(format!("http://{}", target.addr))
        .await
        .unwrap();
    let (frames, outbound) = tokio::sync::mpsc::unbounded_channel();
    frames.send(frame).unwrap();
    let mut inbound = client
        .frames(tokio_stream::wrappers::UnboundedReceiverStream::new(
            outbound,
        ))
        .await
        .unwrap()
        .into_inner();
    let mut answers: HashMap<u64, FramedReply> = HashMap::new();
    while answers.len() < 5 {
        let frame: RaftReplyFrame = tokio::time::timeout(DEADLINE, inbound.message())
            .await
            .expect("answers within the deadline")
            .unwrap()
            .expect("the stream stays open while messages are pending");
        for reply in frame.replies {
            assert!(
                answers.insert(reply.id, reply).is_none(),
                "one answer per ID"
            );
        }
    }
    let vote_of = |id: u64| -> VoteResponse<u64> {
        match &answers[&id].outcome {
            Some(framed_reply::Outcome::Reply(RaftReply {
                result: Some(raft_reply::Result::Ok(bytes)),
            })) => postcard::from_bytes(bytes).unwrap(),
            other => panic!("message {id}: expected a vote answer, got {other:?}"),
        }
    };
    let shared = vote_of(11);
    let second = vote_of(12);
    assert!(!shared.vote_granted && !second.vote_granted);
    assert_eq!(
        shared.last_log_id.map(|l| l.index),
        last_log_index(target.raft())
    );
    assert_eq!(second.last_log_id.map(|l| l.index), last_log_index(&other));
    assert_ne!(
        shared.last_log_id, second.last_log_id,
        "each group answered for itself"
    );
    assert!(
        matches!(
            &answers[&13].outcome,
            Some(framed_reply::Outcome::Reply(RaftReply { result: Some(raft_reply::Result::NoSuchGroup(g)) }))
                if g.group == GROUP + 1
        ),
        "{:?}",
        answers[&13]
    );
    assert!(
        matches!(
            &answers[&14].outcome,
            Some(framed_reply::Outcome::Reply(RaftReply {
                result: Some(raft_reply::Result::WrongNode(_))
            }))
        ),
        "{:?}",
        answers[&14]
    );
    assert!(
        matches!(&answers[&15].outcome, Some(framed_reply::Outcome::Failed(why)) if why.contains("undecodable")),
        "{:?}",
        answers[&15]
    );
    drop(frames);
    // Closing our side ends the stream once everything was answered.
    let end = tokio::time::timeout(DEADLINE, inbound.message())
        .await
        .unwrap();
    assert!(matches!(end, Ok(None)), "{end:?}");

    other.shutdown().await.unwrap();
    shutdown_all(&mut nodes).await;
}

async fn vote_through(
    pool: &PeerPool,
    group: u32,
    node: &Node,
    from: u64,
) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, openraft::error::RaftError<u64>>> {
    let mut network = GrpcNetworkFactory::new(pool.clone(), group)
        .new_client(node.id, &BasicNode::new(node.addr.to_string()))
        .await;
    network
        .vote(
            VoteRequest::new(Vote::new(0, from), None),
            RPCOption::new(Duration::from_secs(2)),
        )
        .await
}

/// A peer that stops fails the calls sent to it (`Unreachable`, so openraft backs off), the
/// same pool's stream to another peer keeps working, and the restarted peer is reached on a
/// new stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_goes_away_fails_only_its_calls() {
    let timing = GroupTiming::replicated();
    let mut nodes = start_cluster(&timing).await;
    propose_all(&nodes, "before", 3).await;
    let from = nodes[0].id;
    let pool = PeerPool::new(CLUSTER, from, PeerPoolConfig::default());
    vote_through(&pool, GROUP, &nodes[1], from).await.unwrap();
    vote_through(&pool, GROUP, &nodes[2], from).await.unwrap();

    stop_node(&mut nodes[2]).await;
    let err = wait_for_async_err(&pool, &nodes[2], from).await;
    assert!(matches!(err, RPCError::Unreachable(_)), "{err:?}");
    vote_through(&pool, GROUP, &nodes[1], from)
        .await
        .expect("the other peer's stream is unaffected");
    // The group still commits on the two nodes left, over their streams.
    propose_all(&nodes, "while-down", 3).await;

    restart_node(&mut nodes[2], &timing).await;
    let mut answered = false;
    for _ in 0..100 {
        if vote_through(&pool, GROUP, &nodes[2], from).await.is_ok() {
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(answered, "the restarted peer is reached on a new stream");
    let index = propose_all(&nodes, "after", 3).await;
    wait_for_same_state(&nodes, index).await;
    shutdown_all(&mut nodes).await;
}

/// The first call after the peer stopped may still be answered by the stream's last moments;
/// the error comes within a few calls.
async fn wait_for_async_err(
    pool: &PeerPool,
    node: &Node,
    from: u64,
) -> RPCError<u64, BasicNode, openraft::error::RaftError<u64>> {
    for _ in 0..100 {
        if let Err(e) = vote_through(pool, GROUP, node, from).await {
            return e;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("a stopped peer kept answering");
}

/// A node of an older build: the unary RPCs only, `Frames` unimplemented.
#[derive(Clone)]
struct UnaryOnly(TransportService);

type NoFrames = std::pin::Pin<
    Box<dyn tokio_stream::Stream<Item = Result<RaftReplyFrame, Status>> + Send + 'static>,
>;

#[tonic::async_trait]
impl RaftTransport for UnaryOnly {
    async fn append_entries(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        self.0.append_entries(request).await
    }

    async fn vote(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        self.0.vote(request).await
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        self.0.install_snapshot(request).await
    }

    type FramesStream = NoFrames;

    async fn frames(
        &self,
        _request: Request<Streaming<RaftFrame>>,
    ) -> Result<Response<Self::FramesStream>, Status> {
        Err(Status::unimplemented("Frames"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_without_frames_gets_unary_rpcs() {
    let mut nodes = start_cluster(&GroupTiming::replicated()).await;
    let index = propose_all(&nodes, "shared", 2).await;
    let target = &nodes[1];
    wait_for("the follower applied", || {
        (target
            .raft()
            .metrics()
            .borrow()
            .last_applied
            .map(|l| l.index)
            >= Some(index))
        .then_some(())
    })
    .await;
    // The same node's groups, served by a build without `Frames` on another port.
    let listener = bind("127.0.0.1:0".parse().unwrap()).await;
    let old_addr = listener.local_addr().unwrap();
    let registry = target.running.as_ref().unwrap().registry.clone();
    let service = UnaryOnly(TransportService::new(CLUSTER, target.id, registry));
    let server = tokio::spawn(
        chronicle_raft::transport::server_builder()
            .add_service(RaftTransportServer::new(service))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let old = Node {
        id: target.id,
        addr: old_addr,
        dir: tempfile::tempdir().unwrap(),
        pool_config: PeerPoolConfig::default(),
        running: None,
    };
    let from = nodes[0].id;
    let pool = PeerPool::new(CLUSTER, from, PeerPoolConfig::default());
    for _ in 0..3 {
        let answer = vote_through(&pool, GROUP, &old, from)
            .await
            .expect("answered over a unary RPC");
        assert!(!answer.vote_granted);
        assert_eq!(
            answer.last_log_id.map(|l| l.index),
            last_log_index(target.raft()),
            "the group itself answered"
        );
    }
    server.abort();
    shutdown_all(&mut nodes).await;
}
