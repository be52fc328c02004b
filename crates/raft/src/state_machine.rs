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

/// A snapshot kept in memory: its meta and the dumped key range.
type StoredSnapshot = (SnapshotMeta<u64, openraft::BasicNode>, Vec<u8>);

/// The snapshot `get_current_snapshot` serves: the last one built or installed.
type CurrentSnapshot = Arc<Mutex<Option<StoredSnapshot>>>;

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
        Ok(Self {
            tables,
            applier,
            meta,
            current_snapshot: Arc::default(),
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
        *lock_current(&self.current_snapshot) = Some((meta.clone(), data));
        self.applier.state_replaced(self.tables.shard());
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> SmResult<Option<Snapshot<ShardRaftConfig>>> {
        Ok(lock_current(&self.current_snapshot)
            .as_ref()
            .map(|(meta, data)| Snapshot {
                meta: meta.clone(),
                snapshot: Box::new(Cursor::new(data.clone())),
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

fn lock_current(current: &CurrentSnapshot) -> std::sync::MutexGuard<'_, Option<StoredSnapshot>> {
    // The slot only ever holds a complete value, so a panic elsewhere cannot leave it torn.
    current
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl RaftSnapshotBuilder<ShardRaftConfig> for ShardSnapshotBuilder {
    async fn build_snapshot(&mut self) -> SmResult<Snapshot<ShardRaftConfig>> {
        let tables = self.tables.clone();
        // One RocksDB snapshot for the dump so the meta and the state agree.
        let (data, meta) =
            tokio::task::spawn_blocking(move || -> Result<(Vec<u8>, AppliedMeta), StorageError> {
                let data = chronicle_storage::snapshot::dump_shard(tables.db(), tables.shard())?;
                let meta =
                    chronicle_storage::snapshot::meta_in_dump(&data, tables.shard(), META_APPLIED)?
                        .map(|b| {
                            postcard::from_bytes(&b).map_err(|e| StorageError::Corrupt {
                                cf: "shard_meta",
                                reason: e.to_string(),
                            })
                        })
                        .transpose()?
                        .unwrap_or_default();
                Ok((data, meta))
            })
            .await
            .map_err(read_err)?
            .map_err(read_err)?;
        let snapshot_id = match meta.last_applied {
            Some(id) => format!("{}-{}-{}", id.leader_id, id.index, self.snapshot_seq),
            None => format!("none-{}", self.snapshot_seq),
        };
        let snapshot_meta = SnapshotMeta {
            last_log_id: meta.last_applied,
            last_membership: meta.membership,
            snapshot_id,
        };
        // Becomes the current snapshot unless one covering more of the log was installed while
        // this one was being built.
        {
            let mut current = lock_current(&self.current_snapshot);
            let newer_present = current
                .as_ref()
                .is_some_and(|(m, _)| m.last_log_id > snapshot_meta.last_log_id);
            if !newer_present {
                *current = Some((snapshot_meta.clone(), data.clone()));
            }
        }
        Ok(Snapshot {
            meta: snapshot_meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}
