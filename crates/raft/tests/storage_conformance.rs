//! openraft's storage conformance suite run against the RocksDB log store and the shard state
//! machine, plus what the suite does not cover: normal (application) entries, which it cannot
//! build, and the stores' state after the database is reopened.
//!
//! Every store the suite asks for lives in its own temporary directory with its own RocksDB
//! instance; the directory is the suite's guard, so it is removed when a case ends.

use std::collections::BTreeMap;
use std::sync::Arc;

use chronicle_raft::{
    Applier, Command, CommandResponse, LogStore, ShardRaftConfig, ShardStateMachine,
};
use chronicle_storage::{Db, DbOptions, ShardBatch, ShardTables, StorageError};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{
    BasicNode, CommittedLeaderId, Entry, EntryPayload, LogId, Membership, RaftSnapshotBuilder,
    StorageError as RaftStorageError, StorageIOError,
};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

/// The group every store of the suite uses. Not 0, so that a key encoded without the group would
/// not accidentally land in the right range.
const GROUP: u32 = 7;

/// `shard_meta` kind the test applier writes the last command to. Far from the kinds the
/// storage crate uses itself.
const META_LAST_COMMAND: u8 = 100;

/// Applies a command by recording it in the shard's meta (so applied state is real RocksDB
/// state that snapshots must carry) and answers with the command's bytes.
struct TestApplier;

impl Applier for TestApplier {
    fn apply(
        &self,
        batch: &mut ShardBatch,
        log_index: u64,
        command: &[u8],
    ) -> Result<Vec<u8>, StorageError> {
        let mut value = log_index.to_be_bytes().to_vec();
        value.extend_from_slice(command);
        batch.put_meta(META_LAST_COMMAND, value);
        Ok(command.to_vec())
    }
}

type TestStateMachine = ShardStateMachine<TestApplier>;

fn open_stores(dir: &TempDir) -> Result<(Db, LogStore, TestStateMachine), StorageError> {
    let db = Db::open(dir.path(), DbOptions::default())?;
    // Wired as a running group wires them: the log store's purges wait for the state machine.
    let sm = ShardStateMachine::open(ShardTables::new(db.clone(), GROUP), Arc::new(TestApplier))?;
    let log_store = LogStore::with_purge_gate(db.clone(), GROUP, sm.purge_gate());
    Ok((db, log_store, sm))
}

fn to_raft_error(e: impl std::error::Error + 'static) -> RaftStorageError<u64> {
    StorageIOError::write(&e).into()
}

/// A snapshot's data from its start (openraft's offset 0, after the file's header).
async fn read_all(data: &mut chronicle_raft::SnapshotData) -> Vec<u8> {
    data.seek(std::io::SeekFrom::Start(0)).await.unwrap();
    let mut bytes = Vec::new();
    data.read_to_end(&mut bytes).await.unwrap();
    bytes
}

struct RocksStoreBuilder;

impl StoreBuilder<ShardRaftConfig, LogStore, TestStateMachine, TempDir> for RocksStoreBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, TestStateMachine), RaftStorageError<u64>> {
        let dir = tempfile::Builder::new()
            .prefix("chronicle-raft-conformance-")
            .tempdir()
            .map_err(to_raft_error)?;
        let (_db, log_store, sm) = open_stores(&dir).map_err(to_raft_error)?;
        Ok((dir, log_store, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    // Each case panics on a failed assertion; a storage error ends the run here.
    if let Err(e) = Suite::test_all(RocksStoreBuilder) {
        panic!("storage error in the conformance suite: {e:?}");
    }
}

fn log_id(term: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn normal(term: u64, index: u64, command: &[u8]) -> Entry<ShardRaftConfig> {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(Command(command.to_vec())),
    }
}

fn last_command(db: &Db) -> Option<Vec<u8>> {
    ShardTables::new(db.clone(), GROUP)
        .get_meta(META_LAST_COMMAND)
        .expect("read shard meta")
}

fn expected_meta(index: u64, command: &[u8]) -> Vec<u8> {
    let mut v = index.to_be_bytes().to_vec();
    v.extend_from_slice(command);
    v
}

/// The suite only applies blank and membership entries (it cannot build `C::D`). Normal entries
/// must reach the applier, their writes must be in the snapshot a follower installs, and the
/// applied state must survive reopening the database.
#[tokio::test]
async fn normal_entries_are_applied_snapshotted_and_durable() {
    let leader_dir = TempDir::new().unwrap();
    let follower_dir = TempDir::new().unwrap();
    let (leader_db, _leader_log, mut leader) = open_stores(&leader_dir).unwrap();
    let (follower_db, follower_log, mut follower) = open_stores(&follower_dir).unwrap();

    let mut voters = std::collections::BTreeSet::new();
    voters.insert(1u64);
    let membership = Entry::<ShardRaftConfig> {
        log_id: log_id(1, 1),
        payload: EntryPayload::Membership(Membership::new(vec![voters], None)),
    };
    let responses = leader
        .apply(vec![
            membership,
            normal(1, 2, b"first"),
            Entry {
                log_id: log_id(1, 3),
                payload: EntryPayload::Blank,
            },
            normal(1, 4, b"second"),
        ])
        .await
        .unwrap();
    assert_eq!(
        responses,
        vec![
            CommandResponse::default(),
            CommandResponse(b"first".to_vec()),
            CommandResponse::default(),
            CommandResponse(b"second".to_vec()),
        ]
    );
    assert_eq!(last_command(&leader_db), Some(expected_meta(4, b"second")));
    let (applied, leader_membership) = leader.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(1, 4)));
    assert_eq!(leader_membership.log_id(), &Some(log_id(1, 1)));

    // Build on the leader; the built snapshot becomes the current one.
    let built = leader
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    assert_eq!(built.meta.last_log_id, Some(log_id(1, 4)));
    let mut current: Snapshot<ShardRaftConfig> = leader
        .get_current_snapshot()
        .await
        .unwrap()
        .expect("current snapshot after build");
    assert_eq!(current.meta, built.meta);

    // The follower had state of its own that the snapshot must replace, not merge into.
    follower.apply(vec![normal(1, 1, b"stale")]).await.unwrap();
    // Received as openraft receives it: the leader's data written into the follower's
    // receiving file (here in two pieces), then installed from that file.
    let sent = read_all(&mut current.snapshot).await;
    assert!(!sent.is_empty());
    let mut receiving = follower.begin_receiving_snapshot().await.unwrap();
    let (first, rest) = sent.split_at(sent.len() / 2);
    receiving.write_all(first).await.unwrap();
    receiving.write_all(rest).await.unwrap();
    receiving.shutdown().await.unwrap();
    follower
        .install_snapshot(&current.meta, receiving)
        .await
        .unwrap();
    assert_eq!(
        last_command(&follower_db),
        Some(expected_meta(4, b"second"))
    );
    assert_eq!(
        follower.applied_state().await.unwrap(),
        leader.applied_state().await.unwrap()
    );

    // Later entries apply on top of the installed state.
    let responses = follower.apply(vec![normal(2, 5, b"third")]).await.unwrap();
    assert_eq!(responses, vec![CommandResponse(b"third".to_vec())]);

    // Reopen the follower's database: the applied log ID, the membership and the applier's
    // writes are all still there.
    let expected_state = follower.applied_state().await.unwrap();
    drop(follower);
    drop(follower_log);
    drop(follower_db);
    let (reopened_db, _log, mut reopened) = open_stores(&follower_dir).unwrap();
    assert_eq!(reopened.applied_state().await.unwrap(), expected_state);
    assert_eq!(last_command(&reopened_db), Some(expected_meta(5, b"third")));
    // The installed snapshot is still the current one (it lives in a file, not in memory): a
    // restarted node can serve it, and openraft knows where the purged log ends.
    let mut after_reopen = reopened
        .get_current_snapshot()
        .await
        .unwrap()
        .expect("current snapshot after reopen");
    assert_eq!(after_reopen.meta, current.meta);
    let mut built = built;
    assert_eq!(
        read_all(&mut after_reopen.snapshot).await,
        read_all(&mut built.snapshot).await,
        "the same bytes as built"
    );
    assert_eq!(read_all(&mut built.snapshot).await, sent);
    let nodes: BTreeMap<u64, BasicNode> = expected_state
        .1
        .membership()
        .nodes()
        .map(|(id, n)| (*id, n.clone()))
        .collect();
    assert_eq!(nodes.keys().copied().collect::<Vec<_>>(), vec![1]);
}

/// What a running group leaves in the log store must survive reopening the database: the vote,
/// the purge point and the entries after it, and the state machine's applied state.
#[tokio::test]
async fn log_state_survives_reopen() {
    use openraft::RaftLogId;
    use openraft::storage::{RaftLogReader, RaftLogStorage};

    let dir = TempDir::new().unwrap();
    {
        let db = Db::open(dir.path(), DbOptions::default()).unwrap();
        let raft = chronicle_raft::start_group(
            db.clone(),
            GROUP,
            1,
            "127.0.0.1:0".into(),
            Arc::new(TestApplier),
            true,
        )
        .await
        .unwrap();
        raft.wait(Some(std::time::Duration::from_secs(10)))
            .current_leader(1, "single voter elects itself")
            .await
            .unwrap();
        for i in 0..5u8 {
            let resp = chronicle_raft::propose(&raft, GROUP, vec![i])
                .await
                .unwrap();
            assert_eq!(resp, vec![i]);
        }
        raft.shutdown().await.unwrap();
        drop(raft);

        let mut log = LogStore::new(db, GROUP);
        let last = log
            .get_log_state()
            .await
            .unwrap()
            .last_log_id
            .expect("entries were appended");
        log.purge(LogId::new(last.leader_id, last.index - 2))
            .await
            .unwrap();
    }

    let (db, mut log, mut sm) = open_stores(&dir).unwrap();
    let state = log.get_log_state().await.unwrap();
    let purged = state.last_purged_log_id.expect("purge point is stored");
    let last = state
        .last_log_id
        .expect("entries after the purge point remain");
    assert_eq!(purged.index + 2, last.index);
    assert_eq!(purged.leader_id, last.leader_id);
    let entries = log.try_get_log_entries(0..u64::MAX).await.unwrap();
    assert_eq!(
        entries
            .iter()
            .map(|e| e.get_log_id().index)
            .collect::<Vec<_>>(),
        vec![purged.index + 1, last.index]
    );
    let vote = log.read_vote().await.unwrap().expect("vote is stored");
    assert!(vote.is_committed());
    assert_eq!(vote.leader_id().voted_for(), Some(1));
    let (applied, _) = sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(last));
    assert_eq!(last_command(&db), Some(expected_meta(last.index, &[4])));
}

/// The applied state a replica writes is the same whatever it did apart from applying: a node
/// that built snapshots (a node-local counter) has the state digest of one that did not.
#[tokio::test]
async fn building_snapshots_leaves_the_state_digest_unchanged() {
    let (a_dir, b_dir) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let (a_db, _a_log, mut a) = open_stores(&a_dir).unwrap();
    let (b_db, _b_log, mut b) = open_stores(&b_dir).unwrap();
    let first = || vec![normal(1, 1, b"one"), normal(1, 2, b"two")];
    a.apply(first()).await.unwrap();
    b.apply(first()).await.unwrap();
    for _ in 0..2 {
        a.get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
    }
    a.apply(vec![normal(1, 3, b"three")]).await.unwrap();
    b.apply(vec![normal(1, 3, b"three")]).await.unwrap();
    let digest = |db: &Db| chronicle_storage::digest::shard_digest(db, GROUP).unwrap();
    assert_eq!(digest(&a_db), digest(&b_db));

    // The counter survives a reopen (snapshot IDs stay unique).
    drop(a);
    drop(_a_log);
    drop(a_db);
    let (_db, _log, mut reopened) = open_stores(&a_dir).unwrap();
    let built = reopened
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    assert!(
        built.meta.snapshot_id.ends_with("-3"),
        "{}",
        built.meta.snapshot_id
    );
}

/// Groups of one node share the log writer: proposals of eight single-voter groups made at the
/// same time are fsynced in fewer RocksDB writes than there are appends, and every group's
/// entries are there after a reopen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_share_log_writes() {
    use openraft::storage::RaftLogStorage;

    const GROUPS: u32 = 8;
    const PROPOSALS: u8 = 20;
    let dir = TempDir::new().unwrap();
    let mut last_indexes = Vec::new();
    {
        let db = Db::open(dir.path(), DbOptions::default()).unwrap();
        let mut rafts = Vec::new();
        for group in 0..GROUPS {
            let raft = chronicle_raft::start_group(
                db.clone(),
                group,
                1,
                "127.0.0.1:0".into(),
                Arc::new(TestApplier),
                true,
            )
            .await
            .unwrap();
            raft.wait(Some(std::time::Duration::from_secs(10)))
                .current_leader(1, "single voter elects itself")
                .await
                .unwrap();
            rafts.push(raft);
        }
        let before = db.log_writer_stats();
        let mut proposing = tokio::task::JoinSet::new();
        for (group, raft) in rafts.iter().enumerate() {
            let raft = raft.clone();
            proposing.spawn(async move {
                for i in 0..PROPOSALS {
                    chronicle_raft::propose(&raft, group as u32, vec![i])
                        .await
                        .unwrap();
                }
            });
        }
        proposing.join_all().await;
        let after = db.log_writer_stats();
        let writes = after.writes - before.writes;
        let batches = after.batches - before.batches;
        eprintln!("{writes} log writes of {GROUPS} groups in {batches} RocksDB writes");
        assert!(
            writes >= u64::from(GROUPS) * u64::from(PROPOSALS),
            "{writes} writes"
        );
        assert!(
            batches < writes,
            "appends of different groups share RocksDB writes ({batches} batches for {writes} writes)"
        );
        for raft in &rafts {
            last_indexes.push(raft.metrics().borrow().last_log_index);
            raft.shutdown().await.unwrap();
        }
    }

    let db = loop {
        // openraft's tasks may still hold the previous handles for a moment.
        match Db::open(dir.path(), DbOptions::default()) {
            Ok(db) => break db,
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    };
    for (group, expected) in (0..GROUPS).zip(last_indexes) {
        let mut log = LogStore::new(db.clone(), group);
        let state = log.get_log_state().await.unwrap();
        assert_eq!(
            state.last_log_id.map(|l| l.index),
            expected,
            "group {group}"
        );
    }
}

/// A purge past what the state machine applied (openraft purging a follower's log up to a
/// snapshot it is still installing) is openraft's view at once, but reaches the disk only once
/// the state covers it: a node that dies first reopens with the log it had.
#[tokio::test]
async fn a_purge_past_the_applied_state_waits_for_the_state() {
    use openraft::RaftLogId;
    use openraft::storage::{RaftLogReader, RaftLogStorage};

    let dir = TempDir::new().unwrap();
    {
        let db = Db::open(dir.path(), DbOptions::default()).unwrap();
        let raft = chronicle_raft::start_group(
            db,
            GROUP,
            1,
            "127.0.0.1:0".into(),
            Arc::new(TestApplier),
            true,
        )
        .await
        .unwrap();
        raft.wait(Some(std::time::Duration::from_secs(10)))
            .current_leader(1, "single voter elects itself")
            .await
            .unwrap();
        for i in 0..3u8 {
            chronicle_raft::propose(&raft, GROUP, vec![i])
                .await
                .unwrap();
        }
        raft.shutdown().await.unwrap();
    }
    let indexes = |entries: Vec<Entry<ShardRaftConfig>>| {
        entries
            .iter()
            .map(|e| e.get_log_id().index)
            .collect::<Vec<_>>()
    };

    let (db, mut log, sm) = open_stores(&dir).unwrap();
    let before = log.get_log_state().await.unwrap();
    let last = before.last_log_id.expect("entries were appended");
    let all = indexes(log.try_get_log_entries(0..u64::MAX).await.unwrap());
    // As a received snapshot three entries past this node's log would be purged.
    let snapshot = LogId::new(last.leader_id, last.index + 3);
    log.purge(snapshot).await.unwrap();
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(snapshot));
    assert_eq!(state.last_log_id, Some(snapshot));
    assert!(
        log.try_get_log_entries(0..u64::MAX)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(sm.purge_gate().has_deferred());

    // Died before the install: the log is what it was.
    drop((log, sm, db));
    let (db, mut log, sm) = open_stores(&dir).unwrap();
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, before.last_purged_log_id);
    assert_eq!(state.last_log_id, Some(last));
    assert_eq!(
        indexes(log.try_get_log_entries(0..u64::MAX).await.unwrap()),
        all
    );

    // Once the state covers it (an install committed), the held purge is written.
    log.purge(snapshot).await.unwrap();
    sm.purge_gate().covered_up_to(snapshot.index);
    assert!(!sm.purge_gate().has_deferred());
    // The log writer is first in, first out: once a later write is durable, so is the purge.
    let vote = log.read_vote().await.unwrap().expect("vote is stored");
    log.save_vote(&vote).await.unwrap();
    drop((log, sm, db));
    let (_db, mut log, _sm) = open_stores(&dir).unwrap();
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(snapshot));
    assert_eq!(state.last_log_id, Some(snapshot));
    assert!(
        log.try_get_log_entries(0..u64::MAX)
            .await
            .unwrap()
            .is_empty()
    );
}
