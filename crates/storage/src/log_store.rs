//! openraft's `RaftLogStorage` over RocksDB: one store per shard group, all groups of a node in
//! the same `raft_log`/`raft_meta` families. Every write goes through the node's log writer
//! (`crate::log_writer`), which fsyncs the appends of all groups together (the durability point
//! of every acknowledged write). An append returns once its entries are readable (from the
//! in-memory tail) and reports durability through openraft's callback. A store opened with
//! [`RocksLogStore::with_purge_gate`] writes a purge only once the group's state machine covers
//! it (see `crate::purge_gate`); until then the purged entries are gone only from its view.

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
use crate::log_writer::{LogOp, LogWrite};
use crate::purge_gate::PurgeGate;

pub(crate) const META_VOTE: u8 = 1;
// 2 held the committed log ID, which is no longer stored.
const META_PURGED: u8 = 3;

pub struct RocksLogStore<C: RaftTypeConfig> {
    db: Db,
    group: ShardId,
    /// The newest entries, shared with the readers cloned from this store.
    recent: Arc<Mutex<RecentEntries<C::Entry>>>,
    /// The last purge asked of this store since it was opened, written or held back by the
    /// gate: what openraft sees as the purge point, whatever the disk still holds.
    purged: Arc<Mutex<Option<LogId<C::NodeId>>>>,
    gate: Option<Arc<PurgeGate>>,
    _config: PhantomData<C>,
}

impl<C: RaftTypeConfig> Clone for RocksLogStore<C> {
    fn clone(&self) -> Self {
        Self {
            db: self.db.clone(),
            group: self.group,
            recent: self.recent.clone(),
            purged: self.purged.clone(),
            gate: self.gate.clone(),
            _config: PhantomData,
        }
    }
}

/// Most entries and bytes kept by [`RecentEntries`] per group.
const RECENT_MAX_ENTRIES: usize = 1024;
const RECENT_MAX_BYTES: usize = 4 * 1024 * 1024;

/// The tail of the log, in memory. openraft reads every committed entry back to apply it, a
/// moment after appending it, and serving that from here saves a RocksDB seek and a decode
/// per entry. It is also where appended entries are readable before the log writer has put
/// them in RocksDB: an entry leaves the front only once the write that added it is durable.
/// Invariant: when not empty, it holds exactly the log's entries from its first index to the
/// log's last index, without gaps, and every entry before its first index is in RocksDB.
struct RecentEntries<E> {
    entries: VecDeque<Held<E>>,
    bytes: usize,
    /// Sequence number of the next append, and of the newest append known durable. The log
    /// writer completes writes in the order they were submitted, so `durable_seq` only grows.
    next_seq: u64,
    durable_seq: u64,
}

struct Held<E> {
    index: u64,
    entry: E,
    size: usize,
    seq: u64,
}

impl<E: Clone> RecentEntries<E> {
    fn new() -> Self {
        Self {
            entries: VecDeque::new(),
            bytes: 0,
            next_seq: 1,
            durable_seq: 0,
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// Records appended entries (`index`, entry, encoded size), in order; returns the append's
    /// sequence number, to pass to [`RecentEntries::flushed`] once the write is durable.
    fn appended(&mut self, appended: Vec<(u64, E, usize)>) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        for (index, entry, size) in appended {
            if self.entries.back().is_some_and(|h| h.index + 1 != index) {
                // Not a continuation of what is held: start over from here. (openraft appends
                // without gaps, after a truncate or a purge, so nothing unwritten is dropped.)
                self.clear();
            }
            self.bytes += size;
            self.entries.push_back(Held {
                index,
                entry,
                size,
                seq,
            });
        }
        self.evict();
        seq
    }

    /// The append `seq` (and every earlier one) is durable.
    fn flushed(&mut self, seq: u64) {
        self.durable_seq = self.durable_seq.max(seq);
        self.evict();
    }

    /// Keeps the tail within its bounds, never dropping an entry that is not in RocksDB yet.
    fn evict(&mut self) {
        while self.entries.len() > RECENT_MAX_ENTRIES
            || (self.bytes > RECENT_MAX_BYTES && self.entries.len() > 1)
        {
            if self
                .entries
                .front()
                .is_some_and(|h| h.seq > self.durable_seq)
            {
                break;
            }
            if let Some(held) = self.entries.pop_front() {
                self.bytes -= held.size;
            }
        }
    }

    /// Entries from `index` on were deleted.
    fn truncated(&mut self, index: u64) {
        while self.entries.back().is_some_and(|h| h.index >= index) {
            if let Some(held) = self.entries.pop_back() {
                self.bytes -= held.size;
            }
        }
    }

    /// Entries up to `index` were deleted.
    fn purged(&mut self, index: u64) {
        while self.entries.front().is_some_and(|h| h.index <= index) {
            if let Some(held) = self.entries.pop_front() {
                self.bytes -= held.size;
            }
        }
    }

    /// The entries of `start..end` if all of them are held (`end == u64::MAX`: to the end).
    fn get(&self, start: u64, end: u64) -> Option<Vec<E>> {
        let first = self.entries.front()?.index;
        let last = self.entries.back()?.index;
        if start < first || (end != u64::MAX && end > last + 1) {
            return None;
        }
        Some(self.held_from(start, end))
    }

    /// The held entries of `start..end` (whatever part of the range is held).
    fn held_from(&self, start: u64, end: u64) -> Vec<E> {
        self.entries
            .iter()
            .skip_while(|h| h.index < start)
            .take_while(|h| h.index < end)
            .map(|h| h.entry.clone())
            .collect()
    }

    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|h| h.index)
    }
}

type SResult<T, C> = Result<T, StorageError<<C as RaftTypeConfig>::NodeId>>;

impl<C: RaftTypeConfig> RocksLogStore<C>
where
    C::Entry: Serialize + DeserializeOwned + Clone,
{
    /// A store whose purges are written at once: for a log whose state machine is not running
    /// (tools, tests). A running group's store has a gate ([`Self::with_purge_gate`]).
    pub fn new(db: Db, group: ShardId) -> Self {
        Self {
            db,
            group,
            recent: Arc::new(Mutex::new(RecentEntries::new())),
            purged: Arc::new(Mutex::new(None)),
            gate: None,
            _config: PhantomData,
        }
    }

    /// A store that writes a purge only once `gate` (shared with the group's state machine)
    /// says the state covers it.
    pub fn with_purge_gate(db: Db, group: ShardId, gate: Arc<PurgeGate>) -> Self {
        Self {
            gate: Some(gate),
            ..Self::new(db, group)
        }
    }

    /// The index of the last entry purged in this store's view (0 and `None` alike: nothing).
    fn purged_index(&self) -> Option<u64> {
        self.purged
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .map(|id| id.index)
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

    /// Submits `ops` to the log writer and waits until they are durable.
    async fn write_and_wait(&self, ops: Vec<LogOp>) -> Result<(), AnyError> {
        let (done, written) = tokio::sync::oneshot::channel();
        self.db.log_writer().submit(LogWrite {
            ops,
            done: Box::new(move |result| {
                let _ = done.send(result);
            }),
        });
        match written.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(AnyError::error(e)),
            Err(_) => Err(AnyError::error("the log writer dropped a write")),
        }
    }

    fn meta_op<T: Serialize>(&self, kind: u8, value: &T) -> Result<LogOp, AnyError> {
        Ok(LogOp::Put {
            cf: Cf::RaftMeta,
            key: keys::raft_meta(self.group, kind),
            value: postcard::to_stdvec(value).map_err(|e| AnyError::new(&e))?,
        })
    }

    fn delete_op(&self, from: u64, to_exclusive: u64) -> LogOp {
        LogOp::DeleteRange {
            cf: Cf::RaftLog,
            from: keys::raft_log(self.group, from),
            to: keys::raft_log(self.group, to_exclusive),
        }
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
        // Purged entries whose deletion the gate holds back are still on disk: never served.
        let start = match self.purged_index() {
            Some(purged) => start.max(purged.saturating_add(1)),
            None => start,
        };
        // The held part first: entries before the first held one are in RocksDB by then, and
        // the held ones may not be yet.
        let (first_held, held) = {
            let recent = self.recent();
            if let Some(entries) = recent.get(start, end) {
                return Ok(entries);
            }
            let first_held = recent.first_index();
            let held = first_held.map_or_else(Vec::new, |_| recent.held_from(start, end));
            (first_held, held)
        };
        let db_end = first_held.map_or(end, |first| first.min(end));
        let mut out = Vec::new();
        let mut iter = self
            .db
            .prefix_iterator(Cf::RaftLog, &keys::shard_prefix(self.group));
        iter.seek(keys::raft_log(self.group, start));
        let prefix = keys::shard_prefix(self.group);
        while let (Some(k), Some(v)) = (iter.key(), iter.value()) {
            let index = keys::raft_log_index(k);
            if !k.starts_with(&prefix) || !range.contains(&index) || index >= db_end {
                break;
            }
            let entry: C::Entry = postcard::from_bytes(v)
                .map_err(|e| StorageIOError::read_logs(AnyError::new(&e)))?;
            out.push(entry);
            iter.next();
        }
        iter.status()
            .map_err(|e| StorageIOError::read_logs(AnyError::new(&e)))?;
        out.extend(held);
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
        let stored_purged: Option<LogId<C::NodeId>> = self
            .get_meta::<Option<LogId<C::NodeId>>>(META_PURGED)
            .map_err(StorageIOError::read_logs)?
            .flatten();
        // A purge held back by the gate is not stored yet; the entries it covers may remain.
        let asked = self
            .purged
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let last_purged = std::cmp::max(stored_purged, asked);
        let last = self
            .last_entry()
            .map_err(StorageIOError::read_logs)?
            .map(|e| e.get_log_id().clone());
        // By index: entries a held-back purge covers may be of a later term than its log ID
        // (entries that conflict with the snapshot's log, purged rather than truncated).
        let last_log_id = match (last, &last_purged) {
            (Some(last), Some(purged)) if last.index <= purged.index => Some(purged.clone()),
            (Some(last), _) => Some(last),
            (None, purged) => purged.clone(),
        };
        Ok(LogState {
            last_log_id,
            last_purged_log_id: last_purged,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<C::NodeId>) -> SResult<(), C> {
        // Durable before returning (openraft's contract); also after this group's queued
        // appends, so the log never runs ahead of a vote that is lost.
        let op = self
            .meta_op(META_VOTE, vote)
            .map_err(StorageIOError::write_vote)?;
        self.write_and_wait(vec![op])
            .await
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
        crate::failpoint::check(crate::failpoint::names::RAFT_LOG_APPEND, self.db.path())
            .map_err(|e| StorageIOError::write_logs(AnyError::error(e)))?;
        let mut ops = Vec::new();
        let mut appended = Vec::new();
        for entry in entries {
            let bytes = postcard::to_stdvec(&entry)
                .map_err(|e| StorageIOError::write_logs(AnyError::new(&e)))?;
            let index = entry.get_log_id().index;
            appended.push((index, entry, bytes.len()));
            ops.push(LogOp::Put {
                cf: Cf::RaftLog,
                key: keys::raft_log(self.group, index),
                value: bytes,
            });
        }
        // Readable from the in-memory tail as soon as this returns; durable when the writer
        // calls back, together with the appends of every other group queued meanwhile.
        let seq = self.recent().appended(appended);
        let recent = self.recent.clone();
        self.db.log_writer().submit(LogWrite {
            ops,
            done: Box::new(move |result| match result {
                Ok(()) => {
                    recent
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .flushed(seq);
                    callback.log_io_completed(Ok(()));
                }
                Err(e) => callback.log_io_completed(Err(std::io::Error::other(e))),
            }),
        });
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<C::NodeId>) -> SResult<(), C> {
        self.recent().truncated(log_id.index);
        // Waited for, so a read that falls through to RocksDB never sees truncated entries.
        self.write_and_wait(vec![self.delete_op(log_id.index, u64::MAX)])
            .await
            .map_err(StorageIOError::write_logs)?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<C::NodeId>) -> SResult<(), C> {
        self.recent().purged(log_id.index);
        *self
            .purged
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(log_id.clone());
        // The purge point and the deletion in one batch.
        let ops = vec![
            self.meta_op(META_PURGED, &Some(log_id.clone()))
                .map_err(StorageIOError::write_logs)?,
            self.delete_op(0, log_id.index + 1),
        ];
        // Past what the state machine's state covers (a snapshot being installed), the gate
        // keeps the writes until the install is committed: a failed or crashed install must
        // leave the log the node had.
        let ops = match &self.gate {
            Some(gate) => match gate.admit(log_id.index, ops) {
                Some(ops) => ops,
                None => return Ok(()),
            },
            None => ops,
        };
        self.write_and_wait(ops)
            .await
            .map_err(StorageIOError::write_logs)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::RecentEntries;

    fn filled(indexes: std::ops::RangeInclusive<u64>) -> RecentEntries<u64> {
        let mut recent = RecentEntries::new();
        let seq = recent.appended(indexes.map(|i| (i, i * 10, 1)).collect());
        recent.flushed(seq);
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
        let seq = recent.appended(vec![(
            super::RECENT_MAX_ENTRIES as u64 + 11,
            7,
            super::RECENT_MAX_BYTES + 1,
        )]);
        recent.flushed(seq);
        assert_eq!(
            recent.entries.len(),
            1,
            "one oversized entry pushes out the rest"
        );
        assert_eq!(recent.bytes, super::RECENT_MAX_BYTES + 1);
    }

    #[test]
    fn keeps_entries_until_they_are_durable() {
        let mut recent = RecentEntries::new();
        let max = super::RECENT_MAX_ENTRIES as u64;
        let first = recent.appended((1..=max).map(|i| (i, i, 1)).collect());
        let second = recent.appended(vec![(max + 1, max + 1, 1), (max + 2, max + 2, 1)]);
        assert_eq!(
            recent.get(1, 2),
            Some(vec![1]),
            "over the bound, but nothing is durable yet"
        );
        recent.flushed(first);
        assert_eq!(recent.first_index(), Some(3), "durable entries go first");
        assert_eq!(recent.entries.len(), super::RECENT_MAX_ENTRIES);
        recent.flushed(second);
        assert_eq!(recent.get(max + 1, u64::MAX), Some(vec![max + 1, max + 2]));
        assert_eq!(recent.held_from(0, 5), vec![3, 4]);
    }
}
