//! A static three-voter group over the gRPC transport: three nodes in one process, each with its
//! own RocksDB in a temporary directory and its own `RaftTransport` server on 127.0.0.1, talking
//! over real TCP connections. Conditions are polled with deadlines; no sleep is an assertion.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chronicle_proto::chronicle::persistence::v1::NamespaceRecord;
use chronicle_proto::chronicle::raft::v1::{
    Header, RaftRequest, raft_reply, raft_transport_client::RaftTransportClient,
};
use chronicle_proto::temporal_api::namespace::v1::NamespaceInfo;
use chronicle_raft::{
    Applier, Bootstrap, GroupRegistry, GroupTiming, GrpcNetworkFactory, PeerPool, PeerPoolConfig,
    RaftError, ShardRaft, TransportService,
};
use chronicle_storage::{Cf, Db, DbOptions, ShardBatch, StorageError};
use openraft::error::RPCError;
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::VoteRequest;
use openraft::{BasicNode, ServerState, Vote};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const CLUSTER: &str = "test-cluster";
/// Not 0, so a key or header that lost its group would not land in the right place by luck.
const GROUP: u32 = 5;
/// How long any one condition may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(20);

/// Records each command as a row of the group's `namespaces` family, keyed by its log index, so
/// a replica's applied state is real RocksDB state (which snapshots must carry).
struct RowPerCommand;

impl Applier for RowPerCommand {
    fn apply(
        &self,
        batch: &mut ShardBatch,
        log_index: u64,
        command: &[u8],
    ) -> Result<Vec<u8>, StorageError> {
        let record = NamespaceRecord {
            info: Some(NamespaceInfo {
                name: String::from_utf8_lossy(command).into_owned(),
                ..Default::default()
            }),
            ..Default::default()
        };
        batch.put_namespace(&format!("entry-{log_index:010}"), &record);
        Ok(command.to_vec())
    }
}

/// A running node: its database, the group's Raft and the transport server.
struct Running {
    db: Db,
    raft: ShardRaft,
    registry: GroupRegistry,
    stop_server: oneshot::Sender<()>,
    server: JoinHandle<()>,
}

struct Node {
    id: u64,
    addr: SocketAddr,
    dir: TempDir,
    pool_config: PeerPoolConfig,
    running: Option<Running>,
}

impl Node {
    fn raft(&self) -> &ShardRaft {
        &self.running.as_ref().expect("node is running").raft
    }

    fn db(&self) -> &Db {
        &self.running.as_ref().expect("node is running").db
    }
}

/// Opens a data directory, retrying while a previous incarnation's last handles (openraft's
/// tasks finishing after shutdown) still hold its lock.
async fn open_db(dir: &TempDir) -> Db {
    let start = Instant::now();
    loop {
        match Db::open(dir.path(), DbOptions::default()) {
            Ok(db) => return db,
            Err(_) if start.elapsed() < DEADLINE => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("cannot reopen {}: {e}", dir.path().display()),
        }
    }
}

/// Binds `addr` (port 0 for a new node), retrying while the old listener's port is released.
async fn bind(addr: SocketAddr) -> TcpListener {
    let start = Instant::now();
    loop {
        match TcpListener::bind(addr).await {
            Ok(listener) => return listener,
            Err(_) if start.elapsed() < DEADLINE => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("cannot bind {addr}: {e}"),
        }
    }
}

fn serve(
    listener: TcpListener,
    node_id: u64,
    registry: GroupRegistry,
) -> (oneshot::Sender<()>, JoinHandle<()>) {
    let (stop, stopped) = oneshot::channel::<()>();
    let service = TransportService::new(CLUSTER, node_id, registry).into_server();
    let server = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async {
                    let _ = stopped.await;
                },
            )
            .await
            .expect("transport server");
    });
    (stop, server)
}

async fn start_node(
    node: &mut Node,
    listener: TcpListener,
    timing: &GroupTiming,
    bootstrap: Bootstrap,
) {
    let db = open_db(&node.dir).await;
    assert_eq!(
        db.node_id().unwrap(),
        node.id,
        "the node ID is the directory's"
    );
    let registry = GroupRegistry::new();
    let (stop_server, server) = serve(listener, node.id, registry.clone());
    let pool = PeerPool::new(CLUSTER, node.id, node.pool_config.clone());
    let raft = chronicle_raft::start_group_with(
        db.clone(),
        GROUP,
        node.id,
        GrpcNetworkFactory::new(pool, GROUP),
        timing.clone(),
        Arc::new(RowPerCommand),
        bootstrap,
    )
    .await
    .expect("start the group");
    registry.insert(GROUP, raft.clone());
    node.running = Some(Running {
        db,
        raft,
        registry,
        stop_server,
        server,
    });
}

/// Stops a node as a crash-free shutdown would: the group leaves the registry (peers now get
/// `NoSuchGroup`), the Raft stops, the server closes its port.
async fn stop_node(node: &mut Node) {
    let running = node.running.take().expect("node is running");
    running.registry.remove(GROUP);
    running.raft.shutdown().await.expect("raft shutdown");
    let _ = running.stop_server.send(());
    let mut server = running.server;
    if tokio::time::timeout(Duration::from_secs(5), &mut server)
        .await
        .is_err()
    {
        // Graceful shutdown waits for open connections; a peer's idle one must not hold us.
        server.abort();
    }
}

/// Three nodes with fresh directories; the first initialises the group with all three voters.
async fn start_cluster(timing: &GroupTiming) -> Vec<Node> {
    start_cluster_with(timing, PeerPoolConfig::default()).await
}

async fn start_cluster_with(timing: &GroupTiming, pool_config: PeerPoolConfig) -> Vec<Node> {
    let mut nodes = Vec::new();
    let mut listeners = Vec::new();
    for _ in 0..3 {
        let dir = tempfile::Builder::new()
            .prefix("chronicle-raft-3n-")
            .tempdir()
            .unwrap();
        let id = {
            let db = Db::open(dir.path(), DbOptions::default()).unwrap();
            db.node_id().unwrap()
        };
        let listener = bind("127.0.0.1:0".parse().unwrap()).await;
        nodes.push(Node {
            id,
            addr: listener.local_addr().unwrap(),
            dir,
            pool_config: pool_config.clone(),
            running: None,
        });
        listeners.push(listener);
    }
    let voters: BTreeMap<u64, BasicNode> = nodes
        .iter()
        .map(|n| (n.id, BasicNode::new(n.addr.to_string())))
        .collect();
    assert_eq!(voters.len(), 3, "three distinct node IDs");
    for (i, (node, listener)) in nodes.iter_mut().zip(listeners).enumerate() {
        let bootstrap = if i == 0 {
            Bootstrap::Voters(voters.clone())
        } else {
            Bootstrap::Join
        };
        start_node(node, listener, timing, bootstrap).await;
    }
    nodes
}

async fn restart_node(node: &mut Node, timing: &GroupTiming) {
    let listener = bind(node.addr).await;
    // A restarted node never bootstraps: its membership is in its log.
    start_node(node, listener, timing, Bootstrap::Join).await;
}

async fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The index of the running node that leads, once the running nodes agree on one.
async fn wait_for_leader(nodes: &[Node]) -> usize {
    wait_for("a leader every running node knows", || {
        let running: Vec<(usize, &Node)> = nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.running.is_some())
            .collect();
        let (leader_index, leader) = running
            .iter()
            .find(|(_, n)| n.raft().metrics().borrow().state == ServerState::Leader)?;
        let all_agree = running
            .iter()
            .all(|(_, n)| n.raft().metrics().borrow().current_leader == Some(leader.id));
        all_agree.then_some(*leader_index)
    })
    .await
}

/// Proposes `count` commands named `<prefix>-<i>` through the leader, following leadership
/// changes; returns the last log index they were committed at.
async fn propose_all(nodes: &[Node], prefix: &str, count: usize) -> u64 {
    let mut leader = wait_for_leader(nodes).await;
    for i in 0..count {
        let command = format!("{prefix}-{i}").into_bytes();
        let start = Instant::now();
        loop {
            match chronicle_raft::propose(nodes[leader].raft(), GROUP, command.clone()).await {
                Ok(answer) => {
                    assert_eq!(answer, command, "the applier's answer comes back");
                    break;
                }
                Err(RaftError::NotLeader { .. }) if start.elapsed() < DEADLINE => {
                    leader = wait_for_leader(nodes).await;
                }
                Err(e) => panic!("proposal {i} failed: {e}"),
            }
        }
    }
    nodes[leader]
        .raft()
        .metrics()
        .borrow()
        .last_applied
        .expect("applied")
        .index
}

/// The group's state-machine rows (every state family but `shard_meta`, whose applied meta
/// also counts local snapshot builds), for comparing replicas.
fn state_rows(db: &Db) -> Vec<(&'static str, Vec<u8>, Vec<u8>)> {
    let prefix = chronicle_storage::keys::shard_prefix(GROUP);
    let mut rows = Vec::new();
    for cf in Cf::STATE.into_iter().filter(|cf| *cf != Cf::ShardMeta) {
        let mut iter = db.prefix_iterator(cf, &prefix);
        iter.seek(&prefix);
        while let (Some(k), Some(v)) = (iter.key(), iter.value()) {
            rows.push((cf.name(), k.to_vec(), v.to_vec()));
            iter.next();
        }
        iter.status().unwrap();
    }
    rows
}

/// Waits until every running node applied `index`, then checks they hold the same rows, and
/// returns how many commands those rows record.
async fn wait_for_same_state(nodes: &[Node], index: u64) -> usize {
    for node in nodes.iter().filter(|n| n.running.is_some()) {
        wait_for(&format!("node {} to apply index {index}", node.id), || {
            let applied = node.raft().metrics().borrow().last_applied?;
            (applied.index >= index).then_some(())
        })
        .await;
    }
    let first = nodes
        .iter()
        .find(|n| n.running.is_some())
        .expect("a running node");
    // Every replica applied `index`, but the rows are read one replica after another while
    // entries may still be applied: retry until a read sees them all equal.
    let reference = wait_for("replicas to hold the same rows", || {
        let rows = state_rows(first.db());
        nodes
            .iter()
            .filter(|n| n.running.is_some())
            .all(|n| state_rows(n.db()) == rows)
            .then_some(rows)
    })
    .await;
    reference
        .iter()
        .filter(|(cf, _, _)| *cf == Cf::Namespaces.name())
        .count()
}

async fn shutdown_all(nodes: &mut [Node]) {
    for node in nodes.iter_mut().filter(|n| n.running.is_some()) {
        stop_node(node).await;
    }
}

/// (a) Proposals on the leader commit and are applied, identically, on all three replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_apply_the_same_commands() {
    let timing = GroupTiming::replicated();
    let mut nodes = start_cluster(&timing).await;
    let index = propose_all(&nodes, "a", 50).await;
    let rows = wait_for_same_state(&nodes, index).await;
    assert_eq!(rows, 50, "one row per command on every replica");
    // The voters are the three nodes, as initialised.
    let leader = wait_for_leader(&nodes).await;
    let voters: Vec<u64> = nodes[leader]
        .raft()
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .voter_ids()
        .collect();
    let mut expected: Vec<u64> = nodes.iter().map(|n| n.id).collect();
    expected.sort();
    assert_eq!(voters, expected);
    shutdown_all(&mut nodes).await;
}

/// (b) The leader's node stops: the other two elect a leader and commit within a few seconds.
/// (c) The stopped node restarts from its directory and catches up to the same state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_takes_over_and_a_restarted_node_catches_up() {
    let timing = GroupTiming::replicated();
    let mut nodes = start_cluster(&timing).await;
    let index = propose_all(&nodes, "before", 20).await;
    wait_for_same_state(&nodes, index).await;

    let old_leader = wait_for_leader(&nodes).await;
    let old_term = nodes[old_leader].raft().metrics().borrow().current_term;
    stop_node(&mut nodes[old_leader]).await;
    let stopped_at = Instant::now();
    let new_leader = wait_for_leader(&nodes).await;
    let index = propose_all(&nodes, "after", 20).await;
    let failover = stopped_at.elapsed();
    assert_ne!(new_leader, old_leader);
    assert!(nodes[new_leader].raft().metrics().borrow().current_term > old_term);
    // Lease (1.2 s) + election timeout (≤ 1.2 s) + a tick (0.3 s), with room for a loaded
    // machine: a few seconds, not the 20 s deadline.
    assert!(
        failover < Duration::from_secs(8),
        "a new leader committed after {failover:?}"
    );
    eprintln!("failover to a committing leader took {failover:?}");

    restart_node(&mut nodes[old_leader], &timing).await;
    let rows = wait_for_same_state(&nodes, index).await;
    assert_eq!(rows, 40);
    // And the restarted node keeps following: new commands reach it too.
    let index = propose_all(&nodes, "later", 5).await;
    assert_eq!(wait_for_same_state(&nodes, index).await, 45);
    shutdown_all(&mut nodes).await;
}

/// (d) A follower that was away while the leader snapshotted and purged its log catches up by
/// snapshot (the entries it misses no longer exist anywhere).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_behind_the_purged_log_catches_up_by_snapshot() {
    let timing = GroupTiming {
        snapshot_logs_since_last: 20,
        max_in_snapshot_log_to_keep: 0,
        purge_batch_size: 1,
        // Small chunks, so the snapshot takes several InstallSnapshot RPCs.
        snapshot_max_chunk_size: 512,
        ..GroupTiming::replicated()
    };
    let mut nodes = start_cluster(&timing).await;
    let index = propose_all(&nodes, "early", 5).await;
    wait_for_same_state(&nodes, index).await;

    let leader = wait_for_leader(&nodes).await;
    let lagging = (leader + 1) % 3;
    let lagging_last_log = nodes[lagging]
        .raft()
        .metrics()
        .borrow()
        .last_log_index
        .expect("the follower has a log");
    stop_node(&mut nodes[lagging]).await;

    let index = propose_all(&nodes, "missed", 60).await;
    let leader = wait_for_leader(&nodes).await;
    wait_for(
        "the leader to purge past the stopped follower's log",
        || {
            let purged = nodes[leader].raft().metrics().borrow().purged?;
            (purged.index > lagging_last_log + 1).then_some(())
        },
    )
    .await;

    restart_node(&mut nodes[lagging], &timing).await;
    let rows = wait_for_same_state(&nodes, index).await;
    assert_eq!(rows, 65);
    let installed = nodes[lagging].raft().metrics().borrow().snapshot;
    assert!(
        installed.is_some_and(|s| s.index > lagging_last_log),
        "the follower holds a snapshot past its old log: {installed:?}"
    );
    // The follower's log starts after the snapshot: it never received the purged entries.
    let follower_purged = nodes[lagging].raft().metrics().borrow().purged;
    assert!(
        follower_purged.is_some_and(|p| p.index > lagging_last_log),
        "the follower's log begins after the snapshot: {follower_purged:?}"
    );
    shutdown_all(&mut nodes).await;
}

/// A follower that missed more entries than fit in one message catches up from the log in
/// several smaller appends: the sender refuses an oversized append as `PayloadTooLarge` and
/// openraft retries with the entry count it hints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_above_the_message_limit_are_split() {
    let pool_config = PeerPoolConfig {
        max_message_bytes: 16 * 1024,
        ..PeerPoolConfig::default()
    };
    let timing = GroupTiming::replicated();
    let mut nodes = start_cluster_with(&timing, pool_config).await;
    let index = propose_all(&nodes, "small", 3).await;
    wait_for_same_state(&nodes, index).await;

    let leader = wait_for_leader(&nodes).await;
    let lagging = (leader + 1) % 3;
    stop_node(&mut nodes[lagging]).await;
    // 30 commands of about 4 KiB: about 120 KiB the follower misses, at most three entries
    // per message.
    let padding = "x".repeat(4096);
    let index = propose_all(&nodes, &padding, 30).await;
    restart_node(&mut nodes[lagging], &timing).await;
    assert_eq!(wait_for_same_state(&nodes, index).await, 33);
    let snapshot = nodes[lagging].raft().metrics().borrow().snapshot;
    assert_eq!(snapshot, None, "caught up from the log, not by snapshot");
    shutdown_all(&mut nodes).await;
}

/// (e) A message for another node (or a group the node does not host) is refused with a typed
/// error, and openraft sees the peer as unreachable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_for_another_node_or_group_is_refused() {
    let timing = GroupTiming::replicated();
    let mut nodes = start_cluster(&timing).await;
    let target = &nodes[1];
    let vote = VoteRequest::new(Vote::new(1, nodes[0].id), None);
    let payload = postcard::to_stdvec(&vote).unwrap();

    let mut client = RaftTransportClient::connect(format!("http://{}", target.addr))
        .await
        .unwrap();
    let request = |to_node: u64, group: u32, cluster_id: &str| RaftRequest {
        header: Some(Header {
            cluster_id: cluster_id.to_string(),
            from_node: nodes[0].id,
            to_node,
            group,
        }),
        codec: chronicle_proto::chronicle::raft::v1::Codec::PostcardOpenraft09 as i32,
        payload: payload.clone(),
    };
    let wrong_id = target.id.wrapping_add(1).max(1);
    let reply = client
        .vote(request(wrong_id, GROUP, CLUSTER))
        .await
        .unwrap()
        .into_inner();
    match reply.result {
        Some(raft_reply::Result::WrongNode(w)) => {
            assert_eq!((w.expected, w.actual), (wrong_id, target.id));
        }
        other => panic!("expected WrongNode, got {other:?}"),
    }
    let reply = client
        .append_entries(request(target.id, GROUP + 1, CLUSTER))
        .await
        .unwrap()
        .into_inner();
    assert!(
        matches!(reply.result, Some(raft_reply::Result::NoSuchGroup(g)) if g.group == GROUP + 1),
        "{reply:?}"
    );
    let reply = client
        .vote(request(target.id, GROUP, "another-cluster"))
        .await
        .unwrap()
        .into_inner();
    assert!(
        matches!(reply.result, Some(raft_reply::Result::WrongCluster(_))),
        "{reply:?}"
    );

    // Through openraft's network: both refusals are `Unreachable` (backoff), never a vote.
    let pool = PeerPool::new(CLUSTER, nodes[0].id, PeerPoolConfig::default());
    let option = RPCOption::new(Duration::from_secs(2));
    let mut wrong_node = GrpcNetworkFactory::new(pool.clone(), GROUP)
        .new_client(wrong_id, &BasicNode::new(target.addr.to_string()))
        .await;
    let err = wrong_node
        .vote(vote.clone(), option.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, RPCError::Unreachable(_)), "{err:?}");
    let mut no_group = GrpcNetworkFactory::new(pool.clone(), GROUP + 1)
        .new_client(target.id, &BasicNode::new(target.addr.to_string()))
        .await;
    let err = no_group
        .vote(vote.clone(), option.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, RPCError::Unreachable(_)), "{err:?}");
    // A peer nobody listens on is unreachable too, and creating its client did not dial.
    let closed = bind("127.0.0.1:0".parse().unwrap()).await;
    let closed_addr = closed.local_addr().unwrap();
    drop(closed);
    let started = Instant::now();
    let mut nobody = GrpcNetworkFactory::new(pool.clone(), GROUP)
        .new_client(424242, &BasicNode::new(closed_addr.to_string()))
        .await;
    assert!(started.elapsed() < Duration::from_millis(100));
    let err = nobody.vote(vote, option).await.unwrap_err();
    assert!(matches!(err, RPCError::Unreachable(_)), "{err:?}");

    // The group itself is unharmed: it still commits.
    let index = propose_all(&nodes, "still", 3).await;
    assert_eq!(wait_for_same_state(&nodes, index).await, 3);
    shutdown_all(&mut nodes).await;
}
