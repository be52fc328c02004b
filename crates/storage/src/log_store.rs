//! openraft's `RaftLogStorage` over RocksDB: one store per shard group, all groups of a node in
//! the same `raft_log`/`raft_meta` families. Appends are fsynced (the durability point of every
//! acknowledged write); concurrent appends of many groups share RocksDB's group commit.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{
    AnyError, LogId, OptionalSend, RaftLogId, RaftTypeConfig, StorageError, StorageIOError, Vote,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::db::{Cf, Db};
use crate::keys::{self, ShardId};

pub(crate) const META_VOTE: u8 = 1;
// 2 held the committed log ID, which is no longer stored.
const META_PURGED: u8 = 3;

pub struct RocksLogStore<C: RaftTypeConfig> {
    db: Db,
    group: ShardId,
    /// The newest entries, shared with the readers cloned from this store.
    recent: Arc<Mutex<RecentEntries<C::Entry>>>,
    _config: PhantomData<C>,
}

impl<C: RaftTypeConfig> Clone for RocksLogStore<C> {
    fn clone(&self) -> Self {
        Self {
            db: self.db.clone(),
            group: self.group,
            recent: self.recent.clone(),
            _config: PhantomData,
        }
    }
}

/// Most entries and bytes kept by [`RecentEntries`] per group.
const RECENT_MAX_ENTRIES: usize = 1024;
const RECENT_MAX_BYTES: usize = 4 * 1024 * 1024;

/// The tail of the log, in memory: openraft reads every committed entry back to apply it, a
/// moment after appending it, and serving that from here saves a RocksDB seek and a decode
/// per entry. Invariant: when not empty, it holds exactly the log's entries from its first
/// index to the log's last index, without gaps.
struct RecentEntries<E> {
    entries: VecDeque<(u64, E, usize)>,
    bytes: usize,
}

impl<E: Clone> RecentEntries<E> {
    fn new() -> Self {
        Self {
            entries: VecDeque::new(),
            bytes: 0,
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// Records appended entries (`index`, entry, encoded size), in order.
    fn appended(&mut self, appended: Vec<(u64, E, usize)>) {
        for (index, entry, size) in appended {
            if self
                .entries
                .back()
                .is_some_and(|(last, _, _)| *last + 1 != index)
            {
                // Not a continuation of what is held: start over from here.
                self.clear();
            }
            self.bytes += size;
            self.entries.push_back((index, entry, size));
        }
        while self.entries.len() > RECENT_MAX_ENTRIES
            || (self.bytes > RECENT_MAX_BYTES && self.entries.len() > 1)
        {
            if let Some((_, _, size)) = self.entries.pop_front() {
                self.bytes -= size;
            }
        }
    }

    /// Entries from `index` on were deleted.
    fn truncated(&mut self, index: u64) {
        while self
            .entries
            .back()
            .is_some_and(|(last, _, _)| *last >= index)
        {
            if let Some((_, _, size)) = self.entries.pop_back() {
                self.bytes -= size;
            }
        }
    }

    /// Entries up to `index` were deleted.
    fn purged(&mut self, index: u64) {
        while self
            .entries
            .front()
            .is_some_and(|(first, _, _)| *first <= index)
        {
            if let Some((_, _, size)) = self.entries.pop_front() {
                self.bytes -= size;
            }
        }
    }

    /// The entries of `start..end` if all of them are held (`end == u64::MAX`: to the end).
    fn get(&self, start: u64, end: u64) -> Option<Vec<E>> {
        let (first, _, _) = self.entries.front()?;
        let (last, _, _) = self.entries.back()?;
        if start < *first || (end != u64::MAX && end > last + 1) {
            return None;
        }
        let skip = usize::try_from(start - first).ok()?;
        Some(
            self.entries
                .iter()
                .skip(skip)
                .take_while(|(index, _, _)| *index < end)
                .map(|(_, entry, _)| entry.clone())
                .collect(),
        )
    }
}

type SResult<T, C> = Result<T, StorageError<<C as RaftTypeConfig>::NodeId>>;

impl<C: RaftTypeConfig> RocksLogStore<C>
where
    C::Entry: Serialize + DeserializeOwned + Clone,
{
    pub fn new(db: Db, group: ShardId) -> Self {
        Self {
            db,
            group,
            recent: Arc::new(Mutex::new(RecentEntries::new())),
            _config: PhantomData,
        }
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, RecentEntries<C::Entry>> {
        // Every critical section leaves the deque whole, so a poisoned lock is still consistent.
        self.recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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
        if let (Some(k), Some(v)) = (iter.key(), iter.value())
            && k.starts_with(&keys::shard_prefix(self.group))
        {
            return postcard::from_bytes(v)
                .map(Some)
                .map_err(|e| AnyError::new(&e));
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
    C::Entry: Serialize + DeserializeOwned + Clone,
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
        let end = match range.end_bound() {
            Bound::Included(i) => i.saturating_add(1),
            Bound::Excluded(i) => *i,
            Bound::Unbounded => u64::MAX,
        };
        if let Some(entries) = self.recent().get(start, end) {
            return Ok(entries);
        }
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
    C::Entry: Serialize + DeserializeOwned + Clone,
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

    async fn save_committed(&mut self, _committed: Option<LogId<C::NodeId>>) -> SResult<(), C> {
        // Not stored. The state machine keeps its applied log ID in the same write batch as the
        // state, and a restarted group re-commits (and so re-applies) the rest of its log once a
        // leader is elected. Storing the committed ID cost one RocksDB write per commit, queued
        // behind the log's fsync like every other write.
        Ok(())
    }

    async fn read_committed(&mut self) -> SResult<Option<LogId<C::NodeId>>, C> {
        Ok(None)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<C>) -> SResult<(), C>
    where
        I: IntoIterator<Item = C::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = rocksdb::WriteBatch::default();
        let cf = self.db.cf(Cf::RaftLog);
        let mut appended = Vec::new();
        for entry in entries {
            let bytes = postcard::to_stdvec(&entry)
                .map_err(|e| StorageIOError::write_logs(AnyError::new(&e)))?;
            let index = entry.get_log_id().index;
            batch.put_cf(cf, keys::raft_log(self.group, index), &bytes);
            appended.push((index, entry, bytes.len()));
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
                self.recent().appended(appended);
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
        self.recent().truncated(log_id.index);
        self.delete_range(log_id.index, u64::MAX)
            .map_err(StorageIOError::write_logs)?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<C::NodeId>) -> SResult<(), C> {
        self.recent().purged(log_id.index);
        self.put_meta(META_PURGED, &Some(log_id.clone()), true)
            .map_err(StorageIOError::write_logs)?;
        self.delete_range(0, log_id.index + 1)
            .map_err(StorageIOError::write_logs)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::RecentEntries;

    fn filled(indexes: std::ops::RangeInclusive<u64>) -> RecentEntries<u64> {
        let mut recent = RecentEntries::new();
        recent.appended(indexes.map(|i| (i, i * 10, 1)).collect());
        recent
    }

    #[test]
    fn serves_only_ranges_it_holds_whole() {
        let recent = filled(5..=9);
        assert_eq!(recent.get(5, 10), Some(vec![50, 60, 70, 80, 90]));
        assert_eq!(recent.get(7, 9), Some(vec![70, 80]));
        assert_eq!(recent.get(8, u64::MAX), Some(vec![80, 90]));
        assert_eq!(
            recent.get(10, u64::MAX),
            Some(vec![]),
            "past the end: nothing"
        );
        assert_eq!(recent.get(4, 7), None, "starts before the first held entry");
        assert_eq!(recent.get(6, 12), None, "ends after the last held entry");
    }

    #[test]
    fn truncate_purge_and_gaps_keep_it_a_contiguous_tail() {
        let mut recent = filled(1..=10);
        recent.truncated(8);
        assert_eq!(recent.get(6, u64::MAX), Some(vec![60, 70]));
        recent.purged(3);
        assert_eq!(recent.get(3, 5), None);
        assert_eq!(recent.get(4, 6), Some(vec![40, 50]));
        // An append that does not continue the tail replaces it.
        recent.appended(vec![(20, 200, 1)]);
        assert_eq!(recent.get(4, 6), None);
        assert_eq!(recent.get(20, 21), Some(vec![200]));
    }

    #[test]
    fn bounded_by_entries_and_bytes() {
        let mut recent = filled(1..=(super::RECENT_MAX_ENTRIES as u64 + 10));
        assert_eq!(recent.entries.len(), super::RECENT_MAX_ENTRIES);
        assert_eq!(recent.get(1, 2), None);
        recent.appended(vec![(
            super::RECENT_MAX_ENTRIES as u64 + 11,
            7,
            super::RECENT_MAX_BYTES + 1,
        )]);
        assert_eq!(
            recent.entries.len(),
            1,
            "one oversized entry pushes out the rest"
        );
        assert_eq!(recent.bytes, super::RECENT_MAX_BYTES + 1);
    }
}
