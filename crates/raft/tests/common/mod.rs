//! A static three-voter group over the gRPC transport: three nodes in one process, each with its
//! own RocksDB in a temporary directory and its own `RaftTransport` server on 127.0.0.1, talking
//! over real TCP connections. Conditions are polled with deadlines; no sleep is an assertion.
//! Shared by `three_nodes.rs` and `failpoints.rs`.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chronicle_proto::chronicle::persistence::v1::NamespaceRecord;
use chronicle_proto::temporal_api::namespace::v1::NamespaceInfo;
use chronicle_raft::{
    Applier, Bootstrap, GroupRegistry, GroupTiming, GrpcNetworkFactory, PeerPool, PeerPoolConfig,
    RaftError, ShardRaft, TransportService,
};
use chronicle_storage::{Cf, Db, DbOptions, ShardBatch, StorageError};
use openraft::{BasicNode, ServerState};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const CLUSTER: &str = "test-cluster";
/// Not 0, so a key or header that lost its group would not land in the right place by luck.
pub const GROUP: u32 = 5;
/// How long any one condition may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Records each command as a row of the group's `namespaces` family, keyed by its log index, so
/// a replica's applied state is real RocksDB state (which snapshots must carry).
pub struct RowPerCommand;

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
pub struct Running {
    pub db: Db,
    pub raft: ShardRaft,
    pub registry: GroupRegistry,
    pub stop_server: oneshot::Sender<()>,
    pub server: JoinHandle<()>,
}

pub struct Node {
    pub id: u64,
    pub addr: SocketAddr,
    pub dir: TempDir,
    pub pool_config: PeerPoolConfig,
    pub running: Option<Running>,
}

impl Node {
    pub fn raft(&self) -> &ShardRaft {
        &self.running.as_ref().expect("node is running").raft
    }

    pub fn db(&self) -> &Db {
        &self.running.as_ref().expect("node is running").db
    }
}

/// Opens a data directory, retrying while a previous incarnation's last handles (openraft's
/// tasks finishing after shutdown) still hold its lock.
pub async fn open_db(dir: &TempDir) -> Db {
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
pub async fn bind(addr: SocketAddr) -> TcpListener {
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

pub fn serve(
    listener: TcpListener,
    node_id: u64,
    registry: GroupRegistry,
) -> (oneshot::Sender<()>, JoinHandle<()>) {
    let (stop, stopped) = oneshot::channel::<()>();
    let service = TransportService::new(CLUSTER, node_id, registry).into_server();
    let server = tokio::spawn(async move {
        chronicle_raft::transport::server_builder()
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

pub async fn start_node(
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
pub async fn stop_node(node: &mut Node) {
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
pub async fn start_cluster(timing: &GroupTiming) -> Vec<Node> {
    start_cluster_with(timing, PeerPoolConfig::default()).await
}

pub async fn start_cluster_with(timing: &GroupTiming, pool_config: PeerPoolConfig) -> Vec<Node> {
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

pub async fn restart_node(node: &mut Node, timing: &GroupTiming) {
    let listener = bind(node.addr).await;
    // A restarted node never bootstraps: its membership is in its log.
    start_node(node, listener, timing, Bootstrap::Join).await;
}

pub async fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The index of the running node that leads, once the running members of its group agree on
/// it (a running node that is not a member, such as a wiped node under a new ID, is ignored).
pub async fn wait_for_leader(nodes: &[Node]) -> usize {
    wait_for("a leader every running member knows", || {
        let running: Vec<(usize, &Node)> = nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.running.is_some())
            .collect();
        let (leader_index, leader) = running
            .iter()
            .find(|(_, n)| n.raft().metrics().borrow().state == ServerState::Leader)?;
        let membership = leader.raft().metrics().borrow().membership_config.clone();
        let all_agree = running
            .iter()
            .filter(|(_, n)| membership.membership().get_node(&n.id).is_some())
            .all(|(_, n)| n.raft().metrics().borrow().current_leader == Some(leader.id));
        all_agree.then_some(*leader_index)
    })
    .await
}

/// Proposes `count` commands named `<prefix>-<i>` through the leader, following leadership
/// changes; returns the last log index they were committed at.
pub async fn propose_all(nodes: &[Node], prefix: &str, count: usize) -> u64 {
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
pub fn state_rows(db: &Db) -> Vec<(&'static str, Vec<u8>, Vec<u8>)> {
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
pub async fn wait_for_same_state(nodes: &[Node], index: u64) -> usize {
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

pub async fn shutdown_all(nodes: &mut [Node]) {
    for node in nodes.iter_mut().filter(|n| n.running.is_some()) {
        stop_node(node).await;
    }
}

/// Snapshots every 20 entries and purges the log behind them, so a replica builds snapshots
/// during the test and one that was away must install one.
pub fn snapshotting() -> GroupTiming {
    GroupTiming {
        snapshot_logs_since_last: 20,
        max_in_snapshot_log_to_keep: 0,
        purge_batch_size: 1,
        snapshot_max_chunk_size: 512,
        ..GroupTiming::replicated()
    }
}

/// Stops a follower, then has the others take 60 writes (after 5 all three hold) until the
/// leader purged its log past the follower's: once restarted, it must install a snapshot.
/// Returns the follower's index and its last log index.
pub async fn stop_a_follower_past_the_purge(nodes: &mut [Node]) -> (usize, u64) {
    let index = propose_all(nodes, "early", 5).await;
    wait_for_same_state(nodes, index).await;
    let leader = wait_for_leader(nodes).await;
    let lagging = (leader + 1) % 3;
    let lagging_last_log = nodes[lagging]
        .raft()
        .metrics()
        .borrow()
        .last_log_index
        .expect("the follower has a log");
    stop_node(&mut nodes[lagging]).await;
    propose_all(nodes, "missed", 60).await;
    let leader = wait_for_leader(nodes).await;
    wait_for(
        "the leader to purge past the stopped follower's log",
        || {
            let purged = nodes[leader].raft().metrics().borrow().purged?;
            (purged.index > lagging_last_log + 1).then_some(())
        },
    )
    .await;
    (lagging, lagging_last_log)
}
