//! A single-voter group (start-dev) records snapshots without a copy of its state: its state is
//! durable in RocksDB before the log behind a snapshot is purged, and no follower ever reads
//! one. The log is still purged, and a restart finds every row.

mod common;

use std::sync::Arc;

use chronicle_raft::{Bootstrap, GroupTiming, LocalOnlyNetwork};
use common::{DEADLINE, GROUP, RowPerCommand, open_db, state_rows, wait_for};

fn timing() -> GroupTiming {
    GroupTiming {
        snapshot_logs_since_last: 20,
        max_in_snapshot_log_to_keep: 0,
        purge_batch_size: 1,
        ..GroupTiming::single_node()
    }
}

async fn start(db: chronicle_storage::Db) -> chronicle_raft::ShardRaft {
    chronicle_raft::start_group_with(
        db,
        GROUP,
        1,
        LocalOnlyNetwork,
        timing(),
        Arc::new(RowPerCommand),
        Bootstrap::SingleVoter {
            addr: "local".into(),
        },
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_hold_no_state_the_log_is_purged_and_a_restart_keeps_every_row() {
    assert!(!GroupTiming::single_node().snapshot_carries_state);
    assert!(GroupTiming::replicated().snapshot_carries_state);
    let dir = tempfile::tempdir().unwrap();
    let db = open_db(&dir).await;
    let raft = start(db.clone()).await;
    wait_for("the single voter leads", || {
        raft.metrics().borrow().current_leader.filter(|l| *l == 1)
    })
    .await;
    for i in 0..100 {
        let command = format!("cmd-{i}").into_bytes();
        let answer = chronicle_raft::propose(&raft, GROUP, command.clone())
            .await
            .unwrap();
        assert_eq!(answer, command);
    }
    let snapshot = wait_for("a snapshot and a purged log", || {
        let m = raft.metrics().borrow().clone();
        m.snapshot.filter(|s| s.index >= 60 && m.purged.is_some())
    })
    .await;
    // The file is the header alone (the meta), not a copy of the 100 rows.
    let file = dir
        .path()
        .join("snapshots")
        .join(format!("group-{GROUP}.snap"));
    let len = std::fs::metadata(&file).unwrap().len();
    assert!(
        len < 512,
        "a snapshot without state is a few bytes, not {len}"
    );
    let rows = state_rows(&db);
    assert_eq!(rows.len(), 100);

    raft.shutdown().await.unwrap();
    drop(raft);
    drop(db);
    let start_time = std::time::Instant::now();
    let db = loop {
        match chronicle_storage::Db::open(dir.path(), Default::default()) {
            Ok(db) => break db,
            Err(_) if start_time.elapsed() < DEADLINE => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await
            }
            Err(e) => panic!("reopen: {e}"),
        }
    };
    let raft = start(db.clone()).await;
    wait_for("the restarted voter leads", || {
        raft.metrics().borrow().current_leader.filter(|l| *l == 1)
    })
    .await;
    assert_eq!(state_rows(&db), rows, "every row is still there");
    assert!(raft.metrics().borrow().snapshot >= Some(snapshot));
    let answer = chronicle_raft::propose(&raft, GROUP, b"after".to_vec())
        .await
        .unwrap();
    assert_eq!(answer, b"after".to_vec());
    assert_eq!(state_rows(&db).len(), 101);
    raft.shutdown().await.unwrap();
}
