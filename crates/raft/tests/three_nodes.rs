//! A static three-voter group over the gRPC transport: three nodes in one process, each with its
//! own RocksDB in a temporary directory and its own `RaftTransport` server on 127.0.0.1, talking
//! over real TCP connections. Conditions are polled with deadlines; no sleep is an assertion.

mod common;

use common::*;

use std::time::{Duration, Instant};

use chronicle_proto::chronicle::raft::v1::{
    Header, RaftRequest, raft_reply, raft_transport_client::RaftTransportClient,
};
use chronicle_raft::{GroupTiming, GrpcNetworkFactory, PeerPool, PeerPoolConfig};
use chronicle_storage::{Db, DbOptions};
use openraft::error::RPCError;
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::VoteRequest;
use openraft::{BasicNode, Vote};

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
    // The received chunks went to a file that became the follower's own snapshot file.
    let snapshots = nodes[lagging].dir.path().join("snapshots");
    assert!(snapshots.join(format!("group-{GROUP}.snap")).exists());
    assert!(!snapshots.join(format!("group-{GROUP}.receiving")).exists());
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

/// A node whose data directory was wiped comes back at the same address as a new node (a new
/// ID): the group's messages for the old ID are refused (`WrongNode`), so it never receives a
/// log it could mistake for its own, and the other two keep committing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_node_at_the_old_address_gets_nothing() {
    let timing = GroupTiming::replicated();
    let mut nodes = start_cluster(&timing).await;
    let index = propose_all(&nodes, "before", 5).await;
    wait_for_same_state(&nodes, index).await;

    let leader = wait_for_leader(&nodes).await;
    let wiped = (leader + 1) % 3;
    stop_node(&mut nodes[wiped]).await;
    let old_id = nodes[wiped].id;
    nodes[wiped].dir = tempfile::Builder::new()
        .prefix("chronicle-raft-3n-wiped-")
        .tempdir()
        .unwrap();
    nodes[wiped].id = {
        let db = Db::open(nodes[wiped].dir.path(), DbOptions::default()).unwrap();
        db.node_id().unwrap()
    };
    assert_ne!(nodes[wiped].id, old_id, "a wiped directory is a new node");
    restart_node(&mut nodes[wiped], &timing).await;

    let index = propose_all(&nodes, "after", 10).await;
    // The leader keeps trying the old ID at that address; give it several heartbeats.
    let others: Vec<&Node> = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != wiped)
        .map(|(_, n)| n)
        .collect();
    for node in &others {
        wait_for("the two remaining replicas to apply", || {
            let applied = node.raft().metrics().borrow().last_applied?;
            (applied.index >= index).then_some(())
        })
        .await;
    }
    let heard_nothing_until = Instant::now() + Duration::from_millis(1000);
    while Instant::now() < heard_nothing_until {
        let metrics = nodes[wiped].raft().metrics().borrow().clone();
        assert_eq!(metrics.last_log_index, None, "the new node got no log");
        assert_eq!(metrics.current_leader, None, "the new node knows no leader");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
