//! Faults injected at each durable step of one replica of a three-voter group (failpoints from
//! `chronicle_storage::failpoint`, scoped to that node's data directory): the log append, the
//! log's fsync, apply, snapshot build and snapshot install, as an I/O error or as a panic of
//! the step. Each time the faulty replica's group stops (it never applies past a failed write,
//! and never records the fault as state), the other two keep acknowledging writes, and once the
//! replica restarts on its data it catches up: every acknowledged write is on all three
//! replicas, whose state rows are byte for byte equal. Bounded: every wait has a deadline.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chronicle_raft::{GroupTiming, ShardStateMachine};
use chronicle_storage::failpoint::names;
use common::*;
use openraft::storage::RaftStateMachine;

/// Stops a node whose group may have stopped on a fatal error (its shutdown may then fail).
async fn crash_node(node: &mut Node) {
    let running = node.running.take().expect("node is running");
    running.registry.remove(GROUP);
    let _ = tokio::time::timeout(Duration::from_secs(10), running.raft.shutdown()).await;
    let _ = running.stop_server.send(());
    running.server.abort();
}

fn inject(failpoint: &str, action: &str, node: &Node) {
    fail::cfg(
        failpoint,
        &format!("return({action}@{})", node.dir.path().display()),
    )
    .expect("failpoint configuration");
}

fn has_stopped(node: &Node) -> bool {
    node.raft().metrics().borrow().running_state.is_err()
}

async fn wait_until_stopped(node: &Node) {
    wait_for("the faulty replica's group to stop", || {
        node.raft()
            .metrics()
            .borrow()
            .running_state
            .is_err()
            .then_some(())
    })
    .await;
}

/// One follower fails at `failpoint` while the group takes writes; then it restarts.
async fn a_follower_failing_at(failpoint: &str, action: &str) {
    let scenario = fail::FailScenario::setup();
    let timing = snapshotting();
    let mut nodes = start_cluster(&timing).await;
    let index = propose_all(&nodes, "before", 5).await;
    wait_for_same_state(&nodes, index).await;
    let leader = wait_for_leader(&nodes).await;
    let faulty = (leader + 1) % 3;

    inject(failpoint, action, &nodes[faulty]);
    // Acknowledged by the two healthy voters, in rounds until the faulty replica reaches the
    // failing step. On a loaded machine it may fall behind the leader's purge point and catch
    // up by installing a snapshot, which applies no entry and builds no snapshot: the rounds
    // after the install bring it to the step.
    let mut during = 0;
    let start = std::time::Instant::now();
    while !has_stopped(&nodes[faulty]) {
        assert!(
            start.elapsed() < DEADLINE,
            "the faulty replica never reached {failpoint}"
        );
        propose_all(&nodes, &format!("during-{during}"), 10).await;
        during += 10;
    }
    wait_until_stopped(&nodes[faulty]).await;
    fail::remove(failpoint);

    crash_node(&mut nodes[faulty]).await;
    restart_node(&mut nodes[faulty], &timing).await;
    let index = propose_all(&nodes, "after", 5).await;
    assert_eq!(
        wait_for_same_state(&nodes, index).await,
        5 + during + 5,
        "every acknowledged write is on every replica"
    );
    shutdown_all(&mut nodes).await;
    scenario.teardown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_log_append_stops_the_replica_and_it_catches_up() {
    a_follower_failing_at(names::RAFT_LOG_APPEND, "error").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_log_fsync_stops_the_replica_and_it_catches_up() {
    a_follower_failing_at(names::RAFT_LOG_FSYNC, "error").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_apply_stops_the_replica_and_it_catches_up() {
    a_follower_failing_at(names::APPLY, "error").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_apply_stops_the_replica_and_it_catches_up() {
    a_follower_failing_at(names::APPLY, "panic").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_snapshot_build_stops_the_replica_and_it_catches_up() {
    a_follower_failing_at(names::SNAPSHOT_BUILD, "error").await;
}

/// A follower away while the leader snapshotted and purged must install a snapshot, and the
/// install fails: the follower's group stops and the other two go on acknowledging writes,
/// which they both hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_snapshot_install_stops_the_replica_and_the_others_go_on() {
    let scenario = fail::FailScenario::setup();
    let timing = snapshotting();
    let (mut nodes, lagging, _) =
        a_follower_failing_to_install(&timing, names::SNAPSHOT_INSTALL).await;
    let index = propose_all(&nodes, "after", 5).await;
    crash_node(&mut nodes[lagging]).await;
    assert_eq!(wait_for_same_state(&nodes, index).await, 70);
    shutdown_all(&mut nodes).await;
    scenario.teardown();
}

/// The failed install left the follower's log and state as they were (the purge up to the
/// snapshot waited for the install), so it restarts on them, receives the snapshot again and
/// catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_snapshot_install_failed_restarts_and_catches_up() {
    let scenario = fail::FailScenario::setup();
    let timing = snapshotting();
    let (mut nodes, lagging, lagging_last_log) =
        a_follower_failing_to_install(&timing, names::SNAPSHOT_INSTALL).await;
    crash_node(&mut nodes[lagging]).await;
    restart_node(&mut nodes[lagging], &timing).await;
    let index = propose_all(&nodes, "after", 5).await;
    assert_eq!(wait_for_same_state(&nodes, index).await, 70);
    let installed = nodes[lagging].raft().metrics().borrow().snapshot;
    assert!(
        installed.is_some_and(|s| s.index > lagging_last_log),
        "caught up by snapshot: {installed:?}"
    );
    shutdown_all(&mut nodes).await;
    scenario.teardown();
}

/// The install failed once the snapshot was the node's snapshot file, before the state was
/// replaced: the restarted node finishes the install from the file as it opens (its applied
/// state is the snapshot's before any message arrives), then catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_install_failed_after_the_snapshot_file_finishes_it_at_restart() {
    let scenario = fail::FailScenario::setup();
    let timing = snapshotting();
    let (mut nodes, lagging, lagging_last_log) =
        a_follower_failing_to_install(&timing, names::SNAPSHOT_INSTALL_STATE).await;
    crash_node(&mut nodes[lagging]).await;
    {
        // Opened as a restart opens it: the state is still the old one, the snapshot file the
        // received one, and opening the state machine finishes the install.
        let db = open_db(&nodes[lagging].dir).await;
        let commands = |db: &chronicle_storage::Db| {
            state_rows(db)
                .iter()
                .filter(|(cf, _, _)| *cf == chronicle_storage::Cf::Namespaces.name())
                .count()
        };
        assert_eq!(commands(&db), 5, "the state was not replaced");
        let tables = chronicle_storage::ShardTables::new(db.clone(), GROUP);
        let mut sm = ShardStateMachine::open(tables, Arc::new(RowPerCommand)).unwrap();
        let snapshot = sm
            .get_current_snapshot()
            .await
            .unwrap()
            .expect("the received snapshot is the node's snapshot file");
        let snapshot = snapshot.meta.last_log_id.expect("a snapshot of a log");
        assert!(snapshot.index > lagging_last_log);
        assert_eq!(sm.applied_state().await.unwrap().0, Some(snapshot));
        assert!(commands(&db) > 5, "the snapshot's state is loaded");
    }
    restart_node(&mut nodes[lagging], &timing).await;
    let index = propose_all(&nodes, "after", 5).await;
    assert_eq!(wait_for_same_state(&nodes, index).await, 70);
    shutdown_all(&mut nodes).await;
    scenario.teardown();
}

/// Three nodes; one is stopped while the leader takes 60 writes, snapshots and purges, then
/// restarted with its snapshot install failing at `failpoint`. Returns the nodes, the faulty
/// one's index and its last log index before it stopped; the failpoint is cleared again.
async fn a_follower_failing_to_install(
    timing: &GroupTiming,
    failpoint: &str,
) -> (Vec<Node>, usize, u64) {
    let mut nodes = start_cluster(timing).await;
    let (lagging, lagging_last_log) = stop_a_follower_past_the_purge(&mut nodes).await;
    inject(failpoint, "error", &nodes[lagging]);
    restart_node(&mut nodes[lagging], timing).await;
    wait_until_stopped(&nodes[lagging]).await;
    fail::remove(failpoint);
    (nodes, lagging, lagging_last_log)
}
