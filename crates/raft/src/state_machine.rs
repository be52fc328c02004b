//! openraft's `RaftStateMachine` for a shard. Committed commands go to the [`Applier`]; its
//! writes, the applied log ID and the membership are committed in one RocksDB write batch.
//! Snapshots are the shard's whole key range (see `chronicle_storage::snapshot`), kept in a
//! file: built by streaming RocksDB into it, sent and received in chunks read from and written
//! to disk, installed by streaming it into one write batch.
//!
//! Installing a received snapshot is crash-safe in two steps: the data first becomes the
//! group's snapshot file (fsynced, renamed into place), then the shard's state is replaced by it
//! in one RocksDB write together with the applied record. A node that dies between the two
//! finds a snapshot newer than its state when it opens, and finishes the install from the file.
//! The log is purged past the old state only after that write (`PurgeGate`), so an install that
//! fails or crashes earlier leaves the node's log and state as they were.

use std::io::{Read, Seek, SeekFrom};
use std::sync::{Arc, Mutex};

use chronicle_storage::tables::{META_APPLIED, META_SNAPSHOT_SEQ};
use chronicle_storage::{PurgeGate, ShardBatch, ShardTables, StorageError};
use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{
    AnyError, Entry, EntryPayload, LogId, RaftSnapshotBuilder, StorageError as RaftStorageError,
    StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};

use crate::snapshot_file::{SnapshotData, SnapshotFile};
use crate::{CommandResponse, ShardRaftConfig};

/// Turns a committed command into writes. Implemented by the history engine.
pub trait Applier: Send + Sync + 'static {
    /// Applies one command. Must be deterministic: the same command on the same state gives the
    /// same writes and the same answer on every replica. Errors the user should see are encoded
    /// in the answer; an `Err` means the shard's storage failed and stops the group.
    fn apply(
        &self,
        batch: &mut ShardBatch,
        log_index: u64,
        command: &[u8],
    ) -> Result<Vec<u8>, StorageError>;

    /// Called after applied writes are visible in RocksDB (wakes the shard's processors and long
    /// polls).
    /// `earliest_new_timer`: the earliest fire time of the timers the batch added, if any;
    /// `changed_workflows`: (namespace ID, workflow ID) of the executions the batch wrote.
    fn applied(
        &self,
        _group: chronicle_types::shard::ShardId,
        _last_index: u64,
        _earliest_new_timer: Option<i64>,
        _changed_workflows: &[(String, String)],
    ) {
    }

    /// Called after a snapshot replaced the shard's state.
    fn state_replaced(&self, _group: chronicle_types::shard::ShardId) {}
}

/// The applied state every replica shares (`shard_meta`, [`META_APPLIED`]).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct AppliedMeta {
    last_applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, openraft::BasicNode>,
}

/// The applied record as stored before the snapshot counter moved to its own node-local key
/// ([`META_SNAPSHOT_SEQ`]): postcard is not self-describing, so such a record is recognised by
/// decoding it whole (a current record is shorter, and fails to).
#[derive(Deserialize)]
struct LegacyAppliedMeta {
    last_applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, openraft::BasicNode>,
    last_snapshot_id: u64,
}

pub(crate) type Meta = SnapshotMeta<u64, openraft::BasicNode>;

/// The snapshot `get_current_snapshot` serves: the last one built or installed. Only its meta is
/// in memory; the data is in the group's snapshot file (see [`SnapshotFile`]), so a snapshot of a
/// large shard costs disk, not memory. The one place it is held whole is the RocksDB write batch
/// that installs it (one batch, so a crash never leaves half a snapshot applied).
type CurrentSnapshot = Arc<Mutex<Option<Meta>>>;

pub struct ShardStateMachine<A> {
    tables: ShardTables,
    applier: Arc<A>,
    meta: AppliedMeta,
    /// Snapshots this node built for the group ([`META_SNAPSHOT_SEQ`]); not replicated state.
    last_snapshot_id: u64,
    // Shared with the snapshot builders: openraft runs `build_snapshot` apart from the state
    // machine, and expects the built snapshot to be the current one afterwards (it is what a
    // leader sends to a follower that needs a snapshot).
    current_snapshot: CurrentSnapshot,
    /// Shared with the group's log store: purges past the committed state wait for it.
    purge_gate: Arc<PurgeGate>,
    /// See `GroupTiming::snapshot_carries_state`.
    snapshot_carries_state: bool,
}

type SmResult<T> = Result<T, RaftStorageError<u64>>;

fn read_err(e: impl std::error::Error + 'static) -> RaftStorageError<u64> {
    StorageIOError::read_state_machine(AnyError::new(&e)).into()
}

fn write_err(e: impl std::error::Error + 'static) -> RaftStorageError<u64> {
    StorageIOError::write_state_machine(AnyError::new(&e)).into()
}

impl<A: Applier> ShardStateMachine<A> {
    pub fn open(tables: ShardTables, applier: Arc<A>) -> Result<Self, StorageError> {
        Self::open_with(tables, applier, true)
    }

    /// `snapshot_carries_state`: see `GroupTiming::snapshot_carries_state`.
    pub fn open_with(
        tables: ShardTables,
        applier: Arc<A>,
        snapshot_carries_state: bool,
    ) -> Result<Self, StorageError> {
        let corrupt = |e: postcard::Error| StorageError::Corrupt {
            cf: "shard_meta",
            reason: e.to_string(),
        };
        let (meta, legacy_snapshot_id) = match tables.get_meta(META_APPLIED)? {
            Some(bytes) => match postcard::from_bytes::<LegacyAppliedMeta>(&bytes) {
                Ok(legacy) => (
                    AppliedMeta {
                        last_applied: legacy.last_applied,
                        membership: legacy.membership,
                    },
                    legacy.last_snapshot_id,
                ),
                Err(_) => (postcard::from_bytes(&bytes).map_err(corrupt)?, 0),
            },
            None => (AppliedMeta::default(), 0),
        };
        let last_snapshot_id = match tables.get_meta(META_SNAPSHOT_SEQ)? {
            Some(bytes) => u64::from_be_bytes(bytes.as_slice().try_into().map_err(|_| {
                StorageError::Corrupt {
                    cf: "shard_meta",
                    reason: "snapshot counter is not 8 bytes".into(),
                }
            })?),
            None => legacy_snapshot_id,
        };
        // The last snapshot survives restarts: openraft asks for it at start, and the log before
        // it may already be purged.
        let current = SnapshotFile::of(&tables)
            .open()
            .map_err(StorageError::Io)?
            .map(|(meta, _, _)| meta);
        let mut meta = meta;
        // A snapshot newer than the state is one whose install died after the file was in place
        // and before the state was replaced (a build only ever covers applied state): finish it.
        // This blocks while the shard loads, only ever at the first start after such a crash.
        if let Some(snapshot) = current.as_ref()
            && snapshot.last_log_id > meta.last_applied
        {
            // A group whose snapshots hold no state never installs one, and syncs its state
            // before recording a snapshot: a snapshot ahead of the state means RocksDB lost
            // synced writes. Loading the empty snapshot would wipe the shard; stop instead.
            if !snapshot_carries_state {
                return Err(StorageError::Corrupt {
                    cf: "shard_meta",
                    reason: format!(
                        "group {}: the state is at {:?}, behind its snapshot at {:?}, whose file \
                         holds no state",
                        tables.shard(),
                        meta.last_applied,
                        snapshot.last_log_id
                    ),
                });
            }
            tracing::warn!(
                group = tables.shard(),
                snapshot = ?snapshot.last_log_id,
                applied = ?meta.last_applied,
                "finishing a snapshot install that was interrupted"
            );
            meta = AppliedMeta {
                last_applied: snapshot.last_log_id,
                membership: snapshot.last_membership.clone(),
            };
            load_snapshot_file(&tables, &meta, last_snapshot_id)?;
            let _ = std::fs::remove_file(SnapshotFile::of(&tables).receiving_path());
        }
        let purge_gate = Arc::new(PurgeGate::new(
            tables.db().clone(),
            meta.last_applied.map(|id| id.index),
        ));
        Ok(Self {
            tables,
            applier,
            meta,
            last_snapshot_id,
            current_snapshot: Arc::new(Mutex::new(current)),
            purge_gate,
            snapshot_carries_state,
        })
    }

    /// The gate to give the group's log store (`LogStore::with_purge_gate`).
    pub fn purge_gate(&self) -> Arc<PurgeGate> {
        self.purge_gate.clone()
    }

    fn encoded_meta(&self) -> Vec<u8> {
        postcard::to_stdvec(&self.meta).unwrap_or_default()
    }
}

impl<A: Applier> RaftStateMachine<ShardRaftConfig> for ShardStateMachine<A> {
    type SnapshotBuilder = ShardSnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> SmResult<(
        Option<LogId<u64>>,
        StoredMembership<u64, openraft::BasicNode>,
    )> {
        Ok((self.meta.last_applied, self.meta.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> SmResult<Vec<CommandResponse>>
    where
        I: IntoIterator<Item = Entry<ShardRaftConfig>> + openraft::OptionalSend,
        I::IntoIter: openraft::OptionalSend,
    {
        let mut batch = ShardBatch::new(self.tables.clone());
        let mut responses = Vec::new();
        for entry in entries {
            self.meta.last_applied = Some(entry.log_id);
            let response = match entry.payload {
                EntryPayload::Blank => CommandResponse::default(),
                EntryPayload::Normal(command) => CommandResponse(
                    self.applier
                        .apply(&mut batch, entry.log_id.index, &command.0)
                        .map_err(write_err)?,
                ),
                EntryPayload::Membership(membership) => {
                    self.meta.membership = StoredMembership::new(Some(entry.log_id), membership);
                    CommandResponse::default()
                }
            };
            responses.push(response);
        }
        let Some(last) = self.meta.last_applied else {
            return Ok(responses);
        };
        batch.put_meta(META_APPLIED, self.encoded_meta());
        batch.put_meta(
            META_SNAPSHOT_SEQ,
            self.last_snapshot_id.to_be_bytes().to_vec(),
        );
        let earliest_new_timer = batch.min_timer_fire_time();
        let changed_workflows = batch.take_changed_workflows();
        chronicle_storage::failpoint::check(
            chronicle_storage::failpoint::names::APPLY,
            self.tables.db().path(),
        )
        .map_err(|e| write_err(std::io::Error::other(e)))?;
        batch.commit().map_err(write_err)?;
        self.purge_gate.covered_up_to(last.index);
        self.applier.applied(
            self.tables.shard(),
            last.index,
            earliest_new_timer,
            &changed_workflows,
        );
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.last_snapshot_id += 1;
        ShardSnapshotBuilder {
            tables: self.tables.clone(),
            snapshot_seq: self.last_snapshot_id,
            current_snapshot: self.current_snapshot.clone(),
            carries_state: self.snapshot_carries_state,
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> SmResult<Box<SnapshotData>> {
        // One snapshot is received at a time; a previous, abandoned one is overwritten.
        let path = SnapshotFile::of(&self.tables).receiving_path();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(write_err)?;
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(write_err)?;
        Ok(Box::new(SnapshotData::new(file, 0)))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, openraft::BasicNode>,
        snapshot: Box<SnapshotData>,
    ) -> SmResult<()> {
        let started = std::time::Instant::now();
        let installed = self.install_snapshot_measured(meta, snapshot).await;
        chronicle_storage::metric_defs::record_snapshot("install", started, installed.is_ok());
        installed
    }

    async fn get_current_snapshot(&mut self) -> SmResult<Option<Snapshot<ShardRaftConfig>>> {
        // Under the lock, so a snapshot being renamed into place is opened whole (the open file
        // stays readable when a newer snapshot replaces it later).
        let current = lock_current(&self.current_snapshot);
        if current.is_none() {
            return Ok(None);
        }
        Ok(SnapshotFile::of(&self.tables)
            .open()
            .map_err(read_err)?
            .map(|(meta, file, base)| Snapshot {
                meta,
                snapshot: Box::new(SnapshotData::new(file, base)),
            }))
    }
}

/// Replaces the shard's state with the group's snapshot file, and its applied record with
/// `applied`, in one RocksDB write (synced). The file's records carry the sender's applied
/// record and snapshot counter; this node keeps its own counter.
fn load_snapshot_file(
    tables: &ShardTables,
    applied: &AppliedMeta,
    last_snapshot_id: u64,
) -> Result<(), StorageError> {
    let (_, file, _) = SnapshotFile::of(tables)
        .open()
        .map_err(StorageError::Io)?
        .ok_or_else(|| StorageError::Io(std::io::Error::other("the snapshot file is missing")))?;
    let applied = postcard::to_stdvec(applied).map_err(|e| StorageError::Corrupt {
        cf: "shard_meta",
        reason: e.to_string(),
    })?;
    chronicle_storage::snapshot::load_shard_from(
        tables.db(),
        tables.shard(),
        file,
        &[
            (META_APPLIED, applied),
            (META_SNAPSHOT_SEQ, last_snapshot_id.to_be_bytes().to_vec()),
        ],
    )
}

/// Builds a snapshot from RocksDB: the state as of the last write batch the state machine
/// committed, with the applied log ID and membership read from the same key range.
pub struct ShardSnapshotBuilder {
    tables: ShardTables,
    snapshot_seq: u64,
    current_snapshot: CurrentSnapshot,
    carries_state: bool,
}

fn lock_current(current: &CurrentSnapshot) -> std::sync::MutexGuard<'_, Option<Meta>> {
    // The slot only ever holds a complete value, so a panic elsewhere cannot leave it torn.
    current
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl<A: Applier> ShardStateMachine<A> {
    async fn install_snapshot_measured(
        &mut self,
        meta: &SnapshotMeta<u64, openraft::BasicNode>,
        snapshot: Box<SnapshotData>,
    ) -> SmResult<()> {
        let (data, base) = snapshot.into_std().await.map_err(read_err)?;
        chronicle_storage::failpoint::check(
            chronicle_storage::failpoint::names::SNAPSHOT_INSTALL,
            self.tables.db().path(),
        )
        .map_err(|e| write_err(std::io::Error::other(e)))?;
        let installed = AppliedMeta {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
        };
        let tables = self.tables.clone();
        let current = self.current_snapshot.clone();
        let snapshot_meta = meta.clone();
        let last_snapshot_id = self.last_snapshot_id;
        let applied = installed.clone();
        // Writing and loading a large shard blocks, so both run off the async runtime.
        tokio::task::spawn_blocking(move || -> Result<(), StorageError> {
            let file = SnapshotFile::of(&tables);
            // First the received data becomes the snapshot file, durably: from then on a crash
            // is finished from it at the next open (see `open`).
            {
                let mut current = lock_current(&current);
                let mut data = data;
                data.seek(SeekFrom::Start(base))?;
                file.write_from(&snapshot_meta, &data)?;
                *current = Some(snapshot_meta);
            }
            chronicle_storage::failpoint::check(
                chronicle_storage::failpoint::names::SNAPSHOT_INSTALL_STATE,
                tables.db().path(),
            )
            .map_err(|e| StorageError::Io(std::io::Error::other(e)))?;
            // Then the state, with the applied record, in one write.
            load_snapshot_file(&tables, &applied, last_snapshot_id)
        })
        .await
        .map_err(write_err)?
        .map_err(write_err)?;
        self.meta = installed;
        // Only now may the log be purged up to the snapshot on disk.
        if let Some(last) = self.meta.last_applied {
            self.purge_gate.covered_up_to(last.index);
        }
        // The received copy is now in the snapshot file (nothing if the data came from
        // elsewhere, as in tests).
        let _ = std::fs::remove_file(SnapshotFile::of(&self.tables).receiving_path());
        self.applier.state_replaced(self.tables.shard());
        Ok(())
    }
}

impl ShardSnapshotBuilder {
    #[allow(clippy::result_large_err)]
    async fn build_snapshot_measured(&mut self) -> SmResult<Snapshot<ShardRaftConfig>> {
        let tables = self.tables.clone();
        let snapshot_seq = self.snapshot_seq;
        let current_snapshot = self.current_snapshot.clone();
        let carries_state = self.carries_state;
        // Dumping and writing a large shard blocks, so both run off the async runtime. One
        // RocksDB snapshot for the dump, so the meta and the state agree.
        let (snapshot_meta, file, base) = tokio::task::spawn_blocking(
            move || -> Result<(Meta, std::fs::File, u64), RaftStorageError<u64>> {
                chronicle_storage::failpoint::check(
                    chronicle_storage::failpoint::names::SNAPSHOT_BUILD,
                    tables.db().path(),
                )
                .map_err(|e| read_err(std::io::Error::other(e)))?;
                let snapshot_file = SnapshotFile::of(&tables);
                // The dump streams from one RocksDB snapshot into a temporary file whose header
                // is the applied meta of that same snapshot, so meta and state agree.
                let mut building = None;
                let mut start = |applied: Option<Vec<u8>>| {
                    let applied: AppliedMeta = applied
                        .map(|b| postcard::from_bytes(&b).map_err(std::io::Error::other))
                        .transpose()?
                        .unwrap_or_default();
                    let snapshot_id = match applied.last_applied {
                        Some(id) => format!("{}-{}-{}", id.leader_id, id.index, snapshot_seq),
                        None => format!("none-{snapshot_seq}"),
                    };
                    let meta = SnapshotMeta {
                        last_log_id: applied.last_applied,
                        last_membership: applied.membership,
                        snapshot_id,
                    };
                    let (tmp, file) =
                        snapshot_file.create_tmp(&format!("building-{snapshot_seq}"), &meta)?;
                    building = Some((meta, tmp));
                    Ok(file)
                };
                let written = if carries_state {
                    chronicle_storage::snapshot::dump_shard_to(
                        tables.db(),
                        tables.shard(),
                        META_APPLIED,
                        start,
                    )
                    .map_err(read_err)?
                } else {
                    // The applied position only. The state it covers is in RocksDB; the
                    // write-ahead log is synced first, so no crash can leave the state behind
                    // the snapshot once it is recorded.
                    let applied = tables.get_meta(META_APPLIED).map_err(read_err)?;
                    tables.db().sync_wal().map_err(write_err)?;
                    start(applied).map_err(read_err)?
                };
                let (snapshot_meta, tmp) =
                    building.ok_or_else(|| read_err(std::io::Error::other("no snapshot meta")))?;
                snapshot_file.finish(written).map_err(write_err)?;
                // Becomes the current snapshot unless one covering more of the log was installed
                // while this one was being built.
                let mut current = lock_current(&current_snapshot);
                let newer_present = current
                    .as_ref()
                    .is_some_and(|m| m.last_log_id > snapshot_meta.last_log_id);
                if !newer_present {
                    snapshot_file.commit(&tmp).map_err(write_err)?;
                    *current = Some(snapshot_meta.clone());
                    let (_, file, base) = snapshot_file
                        .open()
                        .map_err(read_err)?
                        .ok_or_else(|| read_err(std::io::Error::other("snapshot file vanished")))?;
                    return Ok((snapshot_meta, file, base));
                }
                // Superseded before it was done: hand the data back from the temporary file,
                // unlinked (openraft drops a built snapshot's data anyway).
                drop(current);
                let mut file = std::fs::File::open(&tmp).map_err(read_err)?;
                let _ = std::fs::remove_file(&tmp);
                let mut len = [0u8; 4];
                file.read_exact(&mut len).map_err(read_err)?;
                let base = 4 + u64::from(u32::from_be_bytes(len));
                Ok((snapshot_meta, file, base))
            },
        )
        .await
        .map_err(read_err)??;
        Ok(Snapshot {
            meta: snapshot_meta,
            snapshot: Box::new(SnapshotData::new(file, base)),
        })
    }
}

impl RaftSnapshotBuilder<ShardRaftConfig> for ShardSnapshotBuilder {
    // The closures return openraft's `StorageError`, whose size is openraft's choice; boxing it
    // here would only be unboxed again for the trait's return type.
    #[allow(clippy::result_large_err)]
    async fn build_snapshot(&mut self) -> SmResult<Snapshot<ShardRaftConfig>> {
        let started = std::time::Instant::now();
        let built = self.build_snapshot_measured().await;
        chronicle_storage::metric_defs::record_snapshot("build", started, built.is_ok());
        built
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoApplier;

    impl Applier for NoApplier {
        fn apply(&self, _: &mut ShardBatch, _: u64, _: &[u8]) -> Result<Vec<u8>, StorageError> {
            Ok(Vec::new())
        }
    }

    #[derive(Serialize)]
    struct OldAppliedMeta {
        last_applied: Option<LogId<u64>>,
        membership: StoredMembership<u64, openraft::BasicNode>,
        last_snapshot_id: u64,
    }

    #[tokio::test]
    async fn an_applied_record_written_with_the_snapshot_counter_inside_still_opens() {
        let dir = tempfile::tempdir().unwrap();
        let db = chronicle_storage::Db::open(dir.path(), Default::default()).unwrap();
        let tables = ShardTables::new(db, 5);
        let applied = Some(LogId::new(openraft::CommittedLeaderId::new(3, 1), 42));
        let mut batch = ShardBatch::new(tables.clone());
        let old = OldAppliedMeta {
            last_applied: applied,
            membership: StoredMembership::default(),
            last_snapshot_id: 7,
        };
        batch.put_meta(META_APPLIED, postcard::to_stdvec(&old).unwrap());
        batch.commit().unwrap();

        let mut sm = ShardStateMachine::open(tables.clone(), Arc::new(NoApplier)).unwrap();
        assert_eq!(sm.applied_state().await.unwrap().0, applied);
        assert_eq!(sm.last_snapshot_id, 7);
        // Written back in the current layout, it opens the same.
        sm.apply(Vec::<openraft::Entry<ShardRaftConfig>>::new())
            .await
            .unwrap();
        let mut batch = ShardBatch::new(tables.clone());
        batch.put_meta(META_APPLIED, sm.encoded_meta());
        batch.put_meta(META_SNAPSHOT_SEQ, 8u64.to_be_bytes().to_vec());
        batch.commit().unwrap();
        let mut sm = ShardStateMachine::open(tables, Arc::new(NoApplier)).unwrap();
        assert_eq!(sm.applied_state().await.unwrap().0, applied);
        assert_eq!(sm.last_snapshot_id, 8);
    }
}
