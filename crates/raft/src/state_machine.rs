//! openraft's `RaftStateMachine` for a shard. Committed commands go to the [`Applier`]; its
//! writes, the applied log ID and the membership are committed in one RocksDB write batch.
//! Snapshots are the shard's whole key range (see `chronicle_storage::snapshot`), kept in a
//! file: built by streaming RocksDB into it, sent and received in chunks read from and written
//! to disk, installed by streaming it into one write batch.

use std::io::{Read, Seek, SeekFrom};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use chronicle_storage::tables::{META_APPLIED, META_SNAPSHOT_SEQ};
use chronicle_storage::{ShardBatch, ShardTables, StorageError};
use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{
    AnyError, Entry, EntryPayload, LogId, RaftSnapshotBuilder, StorageError as RaftStorageError,
    StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};

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

type Meta = SnapshotMeta<u64, openraft::BasicNode>;

/// The snapshot `get_current_snapshot` serves: the last one built or installed. Only its meta is
/// in memory; the data is in the group's snapshot file (see [`SnapshotFile`]), so a snapshot of a
/// large shard costs disk, not memory. The one place it is held whole is the RocksDB write batch
/// that installs it (one batch, so a crash never leaves half a snapshot applied).
type CurrentSnapshot = Arc<Mutex<Option<Meta>>>;

/// `<data dir>/snapshots/group-<id>.snap`: the meta's length (u32 BE), the meta (postcard), then
/// the dumped key range. Written to a temporary file, fsynced and renamed into place.
struct SnapshotFile {
    path: std::path::PathBuf,
}

impl SnapshotFile {
    fn of(tables: &ShardTables) -> Self {
        Self {
            path: tables
                .db()
                .path()
                .join("snapshots")
                .join(format!("group-{}.snap", tables.shard())),
        }
    }

    /// Writes `meta` and the dump read from `data` (streamed, not held in memory).
    fn write_from(&self, meta: &Meta, mut data: impl Read) -> std::io::Result<()> {
        let (tmp, mut file) = self.create_tmp("tmp", meta)?;
        std::io::copy(&mut data, &mut file)?;
        self.finish(file)?;
        self.commit(&tmp)
    }

    /// A new temporary file next to the snapshot file, with `meta`'s header written.
    fn create_tmp(
        &self,
        tag: &str,
        meta: &Meta,
    ) -> std::io::Result<(std::path::PathBuf, std::io::BufWriter<std::fs::File>)> {
        use std::io::Write;
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let meta_bytes = postcard::to_stdvec(meta).map_err(std::io::Error::other)?;
        let meta_len = u32::try_from(meta_bytes.len()).map_err(std::io::Error::other)?;
        let tmp = self
            .path
            .with_extension(format!("{tag}-{}", std::process::id()));
        let mut file = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        file.write_all(&meta_len.to_be_bytes())?;
        file.write_all(&meta_bytes)?;
        Ok((tmp, file))
    }

    /// Makes a temporary file durable.
    fn finish(&self, file: std::io::BufWriter<std::fs::File>) -> std::io::Result<()> {
        file.into_inner().map_err(|e| e.into_error())?.sync_all()
    }

    /// Renames a finished temporary file into place, durably.
    fn commit(&self, tmp: &std::path::Path) -> std::io::Result<()> {
        std::fs::rename(tmp, &self.path)?;
        let dir = self.path.parent().unwrap_or(std::path::Path::new("."));
        std::fs::File::open(dir)?.sync_all()
    }

    /// The meta, and the file positioned at the start of the dump; `None` if there is no
    /// snapshot. Only the header is read.
    fn open(&self) -> std::io::Result<Option<(Meta, std::fs::File, u64)>> {
        let mut file = match std::fs::File::open(&self.path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let corrupt = || std::io::Error::other(format!("{} is corrupt", self.path.display()));
        let mut len = [0u8; 4];
        file.read_exact(&mut len).map_err(|_| corrupt())?;
        let meta_len = u32::from_be_bytes(len) as usize;
        let mut meta_bytes = vec![0; meta_len];
        file.read_exact(&mut meta_bytes).map_err(|_| corrupt())?;
        let meta: Meta = postcard::from_bytes(&meta_bytes).map_err(|_| corrupt())?;
        Ok(Some((meta, file, 4 + meta_len as u64)))
    }

    /// Where a snapshot being received from the leader is written.
    fn receiving_path(&self) -> std::path::PathBuf {
        self.path.with_extension("receiving")
    }
}

/// Snapshot data as openraft reads, writes and sends it: a file, from `base` on. A snapshot
/// file's dump follows its header, so the same file serves openraft (which sees offset 0 at the
/// dump's start) without copying it; a snapshot being received is a plain file. Sending reads
/// one chunk at a time and receiving writes chunks to disk, so neither holds the whole
/// snapshot in memory.
pub struct SnapshotData {
    file: tokio::fs::File,
    base: u64,
}

impl SnapshotData {
    fn new(file: std::fs::File, base: u64) -> Self {
        Self {
            file: tokio::fs::File::from_std(file),
            base,
        }
    }

    /// The file positioned at the start of the data.
    async fn into_std(self) -> std::io::Result<(std::fs::File, u64)> {
        let mut file = self.file.into_std().await;
        file.seek(SeekFrom::Start(self.base))?;
        Ok((file, self.base))
    }
}

impl tokio::io::AsyncRead for SnapshotData {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.file).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for SnapshotData {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.file).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.file).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.file).poll_shutdown(cx)
    }
}

impl tokio::io::AsyncSeek for SnapshotData {
    fn start_seek(mut self: Pin<&mut Self>, position: SeekFrom) -> std::io::Result<()> {
        let position = match position {
            SeekFrom::Start(offset) => SeekFrom::Start(self.base + offset),
            relative => relative,
        };
        Pin::new(&mut self.file).start_seek(position)
    }

    fn poll_complete(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<u64>> {
        let base = self.base;
        Pin::new(&mut self.file)
            .poll_complete(cx)
            .map_ok(|position| position.saturating_sub(base))
    }
}

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
        Ok(Self {
            tables,
            applier,
            meta,
            last_snapshot_id,
            current_snapshot: Arc::new(Mutex::new(current)),
        })
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
        let (data, base) = snapshot.into_std().await.map_err(read_err)?;
        chronicle_storage::failpoint::check(
            chronicle_storage::failpoint::names::SNAPSHOT_INSTALL,
            self.tables.db().path(),
        )
        .map_err(|e| write_err(std::io::Error::other(e)))?;
        let tables = self.tables.clone();
        // Loading a large shard blocks, so it runs off the async runtime.
        let mut data = tokio::task::spawn_blocking(move || {
            chronicle_storage::snapshot::load_shard_from(tables.db(), tables.shard(), &data)
                .map(|()| data)
        })
        .await
        .map_err(write_err)?
        .map_err(write_err)?;
        // The loaded range includes the applied meta as of the snapshot; make it match `meta`.
        self.meta.last_applied = meta.last_log_id;
        self.meta.membership = meta.last_membership.clone();
        let mut batch = ShardBatch::new(self.tables.clone());
        batch.put_meta(META_APPLIED, self.encoded_meta());
        // The loaded range carried the sender's snapshot counter; this node keeps its own.
        batch.put_meta(
            META_SNAPSHOT_SEQ,
            self.last_snapshot_id.to_be_bytes().to_vec(),
        );
        batch.commit().map_err(write_err)?;
        {
            let mut current = lock_current(&self.current_snapshot);
            data.seek(SeekFrom::Start(base)).map_err(read_err)?;
            SnapshotFile::of(&self.tables)
                .write_from(meta, &data)
                .map_err(write_err)?;
            *current = Some(meta.clone());
        }
        // The received copy is now in the snapshot file (nothing if the data came from
        // elsewhere, as in tests).
        let _ = std::fs::remove_file(SnapshotFile::of(&self.tables).receiving_path());
        self.applier.state_replaced(self.tables.shard());
        Ok(())
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

/// Builds a snapshot from RocksDB: the state as of the last write batch the state machine
/// committed, with the applied log ID and membership read from the same key range.
pub struct ShardSnapshotBuilder {
    tables: ShardTables,
    snapshot_seq: u64,
    current_snapshot: CurrentSnapshot,
}

fn lock_current(current: &CurrentSnapshot) -> std::sync::MutexGuard<'_, Option<Meta>> {
    // The slot only ever holds a complete value, so a panic elsewhere cannot leave it torn.
    current
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl RaftSnapshotBuilder<ShardRaftConfig> for ShardSnapshotBuilder {
    // The closures return openraft's `StorageError`, whose size is openraft's choice; boxing it
    // here would only be unboxed again for the trait's return type.
    #[allow(clippy::result_large_err)]
    async fn build_snapshot(&mut self) -> SmResult<Snapshot<ShardRaftConfig>> {
        let tables = self.tables.clone();
        let snapshot_seq = self.snapshot_seq;
        let current_snapshot = self.current_snapshot.clone();
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
                let written = chronicle_storage::snapshot::dump_shard_to(
                    tables.db(),
                    tables.shard(),
                    META_APPLIED,
                    |applied| {
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
                    },
                )
                .map_err(read_err)?;
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
