//! A replica whose process dies (aborts, as under `kill -9`: no destructor, no flush) while it
//! installs a snapshot restarts on what it left on disk and catches up. The replica runs in a
//! child process (this test binary, re-run on the ignored `crash_child_replica` with the node's
//! directory and address in the environment) with a failpoint set to `abort` through the `fail`
//! crate's `FAILPOINTS` variable; the other two voters run in the test's process. Bounded: the
//! child and every wait have deadlines.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::sync::Arc;
use std::time::Instant;

use chronicle_raft::{Bootstrap, GroupRegistry, GrpcNetworkFactory, PeerPool, PeerPoolConfig};
use chronicle_storage::failpoint::names;
use common::*;

const CHILD_TEST: &str = "crash_child_replica";
const CHILD_DIR: &str = "CHRONICLE_CRASH_CHILD_DIR";
const CHILD_ADDR: &str = "CHRONICLE_CRASH_CHILD_ADDR";
const SIGABRT: i32 = 6;

/// The replica of the crash tests, in the child process; returns at once elsewhere. It joins
/// the group from its directory and serves until the failpoint kills it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run only as the child process of the crash tests"]
async fn crash_child_replica() {
    let (Ok(dir), Ok(addr)) = (std::env::var(CHILD_DIR), std::env::var(CHILD_ADDR)) else {
        return;
    };
    let _failpoints = fail::FailScenario::setup();
    let start = Instant::now();
    // The parent's stopped incarnation may still hold the directory's lock for a moment.
    let db = loop {
        match chronicle_storage::Db::open(std::path::Path::new(&dir), Default::default()) {
            Ok(db) => break db,
            Err(e) if start.elapsed() > DEADLINE => panic!("cannot open {dir}: {e}"),
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    };
    let node_id = db.node_id().unwrap();
    let listener = bind(addr.parse().unwrap()).await;
    let registry = GroupRegistry::new();
    let _server = serve(listener, node_id, registry.clone());
    let pool = PeerPool::new(CLUSTER, node_id, PeerPoolConfig::default());
    let raft = chronicle_raft::start_group_with(
        db,
        GROUP,
        node_id,
        GrpcNetworkFactory::new(pool, GROUP),
        snapshotting(),
        Arc::new(RowPerCommand),
        Bootstrap::Join,
    )
    .await
    .expect("start the group");
    registry.insert(GROUP, raft);
    // The install the leader sends kills the process before this ends; if it does not, the
    // child exits normally and the parent fails.
    tokio::time::sleep(DEADLINE).await;
}

/// A follower that was away must install a snapshot; its process dies at `failpoint` during the
/// install. Restarted (in this process) on its directory, it catches up: all three hold every
/// acknowledged write, row for row.
async fn a_replica_killed_at(failpoint: &str) {
    let timing = snapshotting();
    let mut nodes = start_cluster(&timing).await;
    let (lagging, lagging_last_log) = stop_a_follower_past_the_purge(&mut nodes).await;

    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([CHILD_TEST, "--exact", "--ignored", "--nocapture"])
        .env(CHILD_DIR, nodes[lagging].dir.path())
        .env(CHILD_ADDR, nodes[lagging].addr.to_string())
        .env("FAILPOINTS", format!("{failpoint}=return(abort)"))
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start the child replica");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > DEADLINE * 2 {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the child replica never reached {failpoint}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(
        status.signal(),
        Some(SIGABRT),
        "the child died at {failpoint}: {status:?}"
    );

    restart_node(&mut nodes[lagging], &timing).await;
    let index = propose_all(&nodes, "after", 5).await;
    assert_eq!(
        wait_for_same_state(&nodes, index).await,
        70,
        "every acknowledged write is on every replica"
    );
    let installed = nodes[lagging].raft().metrics().borrow().snapshot;
    assert!(
        installed.is_some_and(|s| s.index > lagging_last_log),
        "caught up by snapshot: {installed:?}"
    );
    shutdown_all(&mut nodes).await;
}

/// Dies before anything of the snapshot is written (openraft may already have purged the log in
/// its view): the node restarts on its old log and state and receives the snapshot again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_before_writing_a_snapshot_restarts_and_catches_up() {
    a_replica_killed_at(names::SNAPSHOT_INSTALL).await;
}

/// Dies once the snapshot is its snapshot file, before the state is replaced: the restart
/// finishes the install from the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_between_snapshot_file_and_state_restarts_and_catches_up() {
    a_replica_killed_at(names::SNAPSHOT_INSTALL_STATE).await;
}
