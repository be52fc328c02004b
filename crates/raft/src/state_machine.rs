//! openraft's `RaftStateMachine` for a shard. Committed commands go to the [`Applier`]; its
//! writes, the applied log ID and the membership are committed in one RocksDB write batch.
//! Snapshots are the shard's whole key range (see `chronicle_storage::snapshot`).

use std::io::Cursor;
use std::sync::{Arc, Mutex};

use chronicle_storage::tables::META_APPLIED;
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

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct AppliedMeta {
    last_applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, openraft::BasicNode>,
    last_snapshot_id: u64,
}

type Meta = SnapshotMeta<u64, openraft::BasicNode>;

/// The snapshot `get_current_snapshot` serves: the last one built or installed. Only its meta is
/// in memory; the data is in the group's snapshot file (see [`SnapshotFile`]), so a snapshot of a
/// large shard costs disk, not memory, between the moments it is built, installed or sent.
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

    fn write(&self, meta: &Meta, data: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        let dir = self.path.parent().unwrap_or(std::path::Path::new("."));
        std::fs::create_dir_all(dir)?;
        let meta_bytes = postcard::to_stdvec(meta).map_err(std::io::Error::other)?;
        let meta_len = u32::try_from(meta_bytes.len()).map_err(std::io::Error::other)?;
        let tmp = self
            .path
            .with_extension(format!("tmp-{}", std::process::id()));
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&meta_len.to_be_bytes())?;
        file.write_all(&meta_bytes)?;
        file.write_all(data)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        std::fs::File::open(dir)?.sync_all()
    }

    fn read(&self) -> std::io::Result<Option<(Meta, Vec<u8>)>> {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let corrupt = || std::io::Error::other(format!("{} is corrupt", self.path.display()));
        let meta_len = bytes
            .get(..4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_be_bytes)
            .ok_or_else(corrupt)? as usize;
        let meta_end = 4usize.checked_add(meta_len).ok_or_else(corrupt)?;
        let meta: Meta = postcard::from_bytes(bytes.get(4..meta_end).ok_or_else(corrupt)?)
            .map_err(|_| corrupt())?;
        Ok(Some((meta, bytes[meta_end..].to_vec())))
    }
}

pub struct ShardStateMachine<A> {
    tables: ShardTables,
    applier: Arc<A>,
    meta: AppliedMeta,
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
        let meta = match tables.get_meta(META_APPLIED)? {
            Some(bytes) => postcard::from_bytes(&bytes).map_err(|e| StorageError::Corrupt {
                cf: "shard_meta",
                reason: e.to_string(),
            })?,
            None => AppliedMeta::default(),
        };
        // The last snapshot survives restarts: openraft asks for it at start, and the log before
        // it may already be purged.
        let current = SnapshotFile::of(&tables)
            .read()
            .map_err(StorageError::Io)?
            .map(|(meta, _)| meta);
        Ok(Self {
            tables,
            applier,
            meta,
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
        let earliest_new_timer = batch.min_timer_fire_time();
        let changed_workflows = batch.take_changed_workflows();
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
        self.meta.last_snapshot_id += 1;
        ShardSnapshotBuilder {
            tables: self.tables.clone(),
            snapshot_seq: self.meta.last_snapshot_id,
            current_snapshot: self.current_snapshot.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> SmResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, openraft::BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> SmResult<()> {
        let data = snapshot.into_inner();
        chronicle_storage::snapshot::load_shard(self.tables.db(), self.tables.shard(), &data)
            .map_err(write_err)?;
        // The loaded range includes the applied meta as of the snapshot; make it match `meta`.
        self.meta.last_applied = meta.last_log_id;
        self.meta.membership = meta.last_membership.clone();
        let mut batch = ShardBatch::new(self.tables.clone());
        batch.put_meta(META_APPLIED, self.encoded_meta());
        batch.commit().map_err(write_err)?;
        {
            let mut current = lock_current(&self.current_snapshot);
            SnapshotFile::of(&self.tables)
                .write(meta, &data)
                .map_err(write_err)?;
            *current = Some(meta.clone());
        }
        self.applier.state_replaced(self.tables.shard());
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> SmResult<Option<Snapshot<ShardRaftConfig>>> {
        // Under the lock, so a snapshot being renamed into place is read whole.
        let current = lock_current(&self.current_snapshot);
        if current.is_none() {
            return Ok(None);
        }
        Ok(SnapshotFile::of(&self.tables)
            .read()
            .map_err(read_err)?
            .map(|(meta, data)| Snapshot {
                meta,
                snapshot: Box::new(Cursor::new(data)),
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
        let (snapshot_meta, data) = tokio::task::spawn_blocking(
            move || -> Result<(Meta, Vec<u8>), RaftStorageError<u64>> {
                let data = chronicle_storage::snapshot::dump_shard(tables.db(), tables.shard())
                    .map_err(read_err)?;
                let meta: AppliedMeta =
                    chronicle_storage::snapshot::meta_in_dump(&data, tables.shard(), META_APPLIED)
                        .map_err(read_err)?
                        .map(|b| {
                            postcard::from_bytes(&b).map_err(|e| {
                                read_err(StorageError::Corrupt {
                                    cf: "shard_meta",
                                    reason: e.to_string(),
                                })
                            })
                        })
                        .transpose()?
                        .unwrap_or_default();
                let snapshot_id = match meta.last_applied {
                    Some(id) => format!("{}-{}-{}", id.leader_id, id.index, snapshot_seq),
                    None => format!("none-{snapshot_seq}"),
                };
                let snapshot_meta = SnapshotMeta {
                    last_log_id: meta.last_applied,
                    last_membership: meta.membership,
                    snapshot_id,
                };
                // Becomes the current snapshot unless one covering more of the log was installed
                // while this one was being built.
                let mut current = lock_current(&current_snapshot);
                let newer_present = current
                    .as_ref()
                    .is_some_and(|m| m.last_log_id > snapshot_meta.last_log_id);
                if !newer_present {
                    SnapshotFile::of(&tables)
                        .write(&snapshot_meta, &data)
                        .map_err(write_err)?;
                    *current = Some(snapshot_meta.clone());
                }
                Ok((snapshot_meta, data))
            },
        )
        .await
        .map_err(read_err)??;
        Ok(Snapshot {
            meta: snapshot_meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}
