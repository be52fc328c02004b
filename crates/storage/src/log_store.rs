//! openraft's `RaftLogStorage` over RocksDB: one store per shard group, all groups of a node in
//! the same `raft_log`/`raft_meta` families. Appends are fsynced (the durability point of every
//! acknowledged write); concurrent appends of many groups share RocksDB's group commit.

use std::fmt::Debug;
use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{
    AnyError, LogId, OptionalSend, RaftLogId, RaftTypeConfig, StorageError, StorageIOError, Vote,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::db::{Cf, Db};
use crate::keys::{self, ShardId};

const META_VOTE: u8 = 1;
const META_COMMITTED: u8 = 2;
const META_PURGED: u8 = 3;

pub struct RocksLogStore<C> {
    db: Db,
    group: ShardId,
    _config: PhantomData<C>,
}

impl<C> Clone for RocksLogStore<C> {
    fn clone(&self) -> Self {
        Self {
            db: self.db.clone(),
            group: self.group,
            _config: PhantomData,
        }
    }
}

type SResult<T, C> = Result<T, StorageError<<C as RaftTypeConfig>::NodeId>>;

impl<C: RaftTypeConfig> RocksLogStore<C>
where
    C::Entry: Serialize + DeserializeOwned,
{
    pub fn new(db: Db, group: ShardId) -> Self {
        Self {
            db,
            group,
            _config: PhantomData,
        }
    }

    fn get_meta<T: DeserializeOwned>(&self, kind: u8) -> Result<Option<T>, AnyError> {
        match self
            .db
            .get(Cf::RaftMeta, &keys::raft_meta(self.group, kind))
            .map_err(|e| AnyError::new(&e))?
        {
            None => Ok(None),
            Some(bytes) => postcard::from_bytes(&bytes)
                .map(Some)
                .map_err(|e| AnyError::new(&e)),
        }
    }

    fn put_meta<T: Serialize>(&self, kind: u8, value: &T, sync: bool) -> Result<(), AnyError> {
        let bytes = postcard::to_stdvec(value).map_err(|e| AnyError::new(&e))?;
        let mut opts = self.db.log_write_options();
        if !sync {
            opts.set_sync(false);
        }
        self.db
            .rocks()
            .put_cf_opt(
                self.db.cf(Cf::RaftMeta),
                keys::raft_meta(self.group, kind),
                bytes,
                &opts,
            )
            .map_err(|e| AnyError::new(&e))
    }

    fn last_entry(&self) -> Result<Option<C::Entry>, AnyError> {
        let end = keys::raft_log(self.group, u64::MAX);
        let mut iter = self
            .db
            .prefix_iterator(Cf::RaftLog, &keys::shard_prefix(self.group));
        iter.seek_for_prev(&end);
        if let (Some(k), Some(v)) = (iter.key(), iter.value()) {
            if k.starts_with(&keys::shard_prefix(self.group)) {
                return postcard::from_bytes(v)
                    .map(Some)
                    .map_err(|e| AnyError::new(&e));
            }
        }
        iter.status().map_err(|e| AnyError::new(&e))?;
        Ok(None)
    }

    fn delete_range(&self, from: u64, to_exclusive: u64) -> Result<(), AnyError> {
        let mut batch = rocksdb::WriteBatch::default();
        batch.delete_range_cf(
            self.db.cf(Cf::RaftLog),
            keys::raft_log(self.group, from),
            keys::raft_log(self.group, to_exclusive),
        );
        self.db
            .rocks()
            .write_opt(batch, &self.db.log_write_options())
            .map_err(|e| AnyError::new(&e))
    }
}

impl<C: RaftTypeConfig> RaftLogReader<C> for RocksLogStore<C>
where
    C::Entry: Serialize + DeserializeOwned,
{
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> SResult<Vec<C::Entry>, C> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i + 1,
            Bound::Unbounded => 0,
        };
        let mut out = Vec::new();
        let mut iter = self
            .db
            .prefix_iterator(Cf::RaftLog, &keys::shard_prefix(self.group));
        iter.seek(keys::raft_log(self.group, start));
        let prefix = keys::shard_prefix(self.group);
        while let (Some(k), Some(v)) = (iter.key(), iter.value()) {
            if !k.starts_with(&prefix) || !range.contains(&keys::raft_log_index(k)) {
                break;
            }
            let entry: C::Entry = postcard::from_bytes(v)
                .map_err(|e| StorageIOError::read_logs(AnyError::new(&e)))?;
            out.push(entry);
            iter.next();
        }
        iter.status()
            .map_err(|e| StorageIOError::read_logs(AnyError::new(&e)))?;
        Ok(out)
    }
}

impl<C: RaftTypeConfig> RaftLogStorage<C> for RocksLogStore<C>
where
    C::Entry: Serialize + DeserializeOwned,
{
    type LogReader = Self;

    async fn get_log_state(&mut self) -> SResult<LogState<C>, C> {
        // `purge` stores `Some(log_id)`, so it must be decoded as an `Option` too: decoding those
        // bytes as a bare `LogId` reads the option tag as the term and shifts every field (the
        // openraft conformance suite caught a wrong `last_purged_log_id` after any purge).
        let last_purged: Option<LogId<C::NodeId>> = self
            .get_meta::<Option<LogId<C::NodeId>>>(META_PURGED)
            .map_err(StorageIOError::read_logs)?
            .flatten();
        let last = self
            .last_entry()
            .map_err(StorageIOError::read_logs)?
            .map(|e| e.get_log_id().clone());
        Ok(LogState {
            last_log_id: last.or(last_purged.clone()),
            last_purged_log_id: last_purged,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<C::NodeId>) -> SResult<(), C> {
        self.put_meta(META_VOTE, vote, true)
            .map_err(StorageIOError::write_vote)?;
        Ok(())
    }

    async fn read_vote(&mut self) -> SResult<Option<Vote<C::NodeId>>, C> {
        Ok(self
            .get_meta(META_VOTE)
            .map_err(StorageIOError::read_vote)?)
    }

    async fn save_committed(&mut self, committed: Option<LogId<C::NodeId>>) -> SResult<(), C> {
        // Not fsynced: losing it only means re-applying from the last applied index.
        self.put_meta(META_COMMITTED, &committed, false)
            .map_err(StorageIOError::write_logs)?;
        Ok(())
    }

    async fn read_committed(&mut self) -> SResult<Option<LogId<C::NodeId>>, C> {
        Ok(self
            .get_meta::<Option<LogId<C::NodeId>>>(META_COMMITTED)
            .map_err(StorageIOError::read_logs)?
            .flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<C>) -> SResult<(), C>
    where
        I: IntoIterator<Item = C::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = rocksdb::WriteBatch::default();
        let cf = self.db.cf(Cf::RaftLog);
        for entry in entries {
            let bytes = postcard::to_stdvec(&entry)
                .map_err(|e| StorageIOError::write_logs(AnyError::new(&e)))?;
            batch.put_cf(
                cf,
                keys::raft_log(self.group, entry.get_log_id().index),
                bytes,
            );
        }
        // The write (and its fsync) runs off the async runtime; RocksDB groups concurrent
        // synced writes of all groups into one WAL fsync. It is awaited before returning:
        // openraft requires appended entries to be readable once `append` returns and the
        // group's log IO to be applied in order, and issues truncate/purge/save_vote (and
        // replication reads) right after `append` without waiting for the callback. A detached
        // write could land after a later truncate (resurrecting truncated entries) or be
        // missing when a replication task reads it.
        let db = self.db.clone();
        let result = tokio::task::spawn_blocking(move || {
            db.rocks().write_opt(batch, &db.log_write_options())
        })
        .await
        .map_err(|e| StorageIOError::write_logs(AnyError::new(&e)))?;
        match result {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(StorageIOError::write_logs(AnyError::new(&e)).into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<C::NodeId>) -> SResult<(), C> {
        self.delete_range(log_id.index, u64::MAX)
            .map_err(StorageIOError::write_logs)?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<C::NodeId>) -> SResult<(), C> {
        self.put_meta(META_PURGED, &Some(log_id.clone()), true)
            .map_err(StorageIOError::write_logs)?;
        self.delete_range(0, log_id.index + 1)
            .map_err(StorageIOError::write_logs)?;
        Ok(())
    }
}
