//! The node's one RocksDB instance.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, DBWithThreadMode, Options, SingleThreaded};

use crate::error::{StorageError, StorageResult};

/// Column families, by access pattern (see ARCHITECTURE.md for the key of each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cf {
    RaftLog,
    RaftMeta,
    /// Applied index and other per-shard state-machine metadata.
    ShardMeta,
    Executions,
    Current,
    History,
    Timers,
    Outbox,
    /// Namespaces (metadata group).
    Namespaces,
    /// Visibility indexes over runs (`crate::visibility`).
    Visibility,
    /// Schedules (shard state, like executions).
    Schedules,
    /// Batch operations (shard state, like schedules).
    BatchJobs,
    /// Nexus endpoints (metadata group): records by ID and a name index.
    NexusEndpoints,
}

impl Cf {
    pub const ALL: [Cf; 13] = [
        Cf::RaftLog,
        Cf::RaftMeta,
        Cf::ShardMeta,
        Cf::Executions,
        Cf::Current,
        Cf::History,
        Cf::Timers,
        Cf::Outbox,
        Cf::Namespaces,
        Cf::Visibility,
        Cf::Schedules,
        Cf::BatchJobs,
        Cf::NexusEndpoints,
    ];
    /// Families that belong to the state machine (and so to snapshots).
    pub const STATE: [Cf; 11] = [
        Cf::ShardMeta,
        Cf::Executions,
        Cf::Current,
        Cf::History,
        Cf::Timers,
        Cf::Outbox,
        Cf::Namespaces,
        Cf::Visibility,
        Cf::Schedules,
        Cf::BatchJobs,
        // Last, so a snapshot dump's family positions stay what older dumps recorded.
        Cf::NexusEndpoints,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Cf::RaftLog => "raft_log",
            Cf::RaftMeta => "raft_meta",
            Cf::ShardMeta => "shard_meta",
            Cf::Executions => "executions",
            Cf::Current => "current",
            Cf::History => "history",
            Cf::Timers => "timers",
            Cf::Outbox => "outbox",
            Cf::Namespaces => "namespaces",
            Cf::Visibility => "visibility",
            Cf::Schedules => "schedules",
            Cf::BatchJobs => "batch_jobs",
            Cf::NexusEndpoints => "nexus_endpoints",
        }
    }
}

#[derive(Debug, Clone)]
pub struct DbOptions {
    /// fsync the Raft log before acknowledging (default). Off only in an explicit relaxed mode.
    pub sync_writes: bool,
}

impl Default for DbOptions {
    fn default() -> Self {
        Self { sync_writes: true }
    }
}

/// Every column family is created at open, so the single-threaded mode (plain `&ColumnFamily`
/// handles, no per-call Arc) is enough; the DB itself is still shared across threads.
pub type Rocks = DBWithThreadMode<SingleThreaded>;

/// Memory for memtables across all column families.
const DB_WRITE_BUFFER_BYTES: usize = 64 * 1024 * 1024;
/// Block cache (data, index and filter blocks) shared by all column families.
const BLOCK_CACHE_BYTES: usize = 64 * 1024 * 1024;
/// Target size of a column family's first level below L0 (see `Db::open`).
const LEVEL_BASE_BYTES: u64 = 16 * 1024 * 1024;
/// Target size of each SST file written by a compaction.
const TARGET_FILE_BYTES: u64 = 8 * 1024 * 1024;
/// A file whose entries are at least this share of deletions is compacted on its own.
const TOMBSTONE_RATIO_TO_COMPACT: f64 = 0.9;
/// Window and trigger of RocksDB's sliding-window deletion rule: zero turns that rule off
/// (see `Db::open`).
const DELETION_WINDOW_OFF: usize = 0;

/// Name of the `history` family's prefix extractor, recorded in each SST file: a file written
/// under another name (or none) is read without its prefix filter, never wrongly.
const HISTORY_RUN_PREFIX: &str = "chronicle.history.run.v1";

fn history_run_prefix(key: &[u8]) -> &[u8] {
    match crate::keys::history_run_prefix_len(key) {
        Some(len) => &key[..len],
        None => key,
    }
}

fn history_run_in_domain(key: &[u8]) -> bool {
    crate::keys::history_run_prefix_len(key).is_some()
}

/// A shared handle to the instance.
#[derive(Clone)]
pub struct Db {
    inner: Arc<DbInner>,
}

pub(crate) struct DbInner {
    pub(crate) rocks: Rocks,
    options: DbOptions,
    pub(crate) path: PathBuf,
    // Serialises the first `node_id()` calls, so two callers cannot store different IDs.
    node_id_created: std::sync::Mutex<()>,
    /// The node's Raft log writer (see `log_writer`).
    log_writer: crate::log_writer::LogWriter,
    // Held for the life of the process: a second server on the same directory fails to open.
    _lock: File,
}

impl Db {
    pub fn open(path: &Path, options: DbOptions) -> StorageResult<Self> {
        std::fs::create_dir_all(path)?;
        let lock = lock_dir(path)?;
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.increase_parallelism(2);
        // Memtables of all column families together stay under this; beyond it the largest is
        // flushed. Without the cap each family may hold up to two 64 MiB memtables, so memory
        // grows with the data written (every open workflow's state), not with the work in hand.
        opts.set_db_write_buffer_size(DB_WRITE_BUFFER_BYTES);
        opts.set_max_background_jobs(2);
        // Reusing WAL files keeps an fsync of the log from also journalling the file's growth
        // (new size, new blocks): on ext4 that halves the work of each synced append.
        opts.set_recycle_log_file_num(4);
        // Writers waiting for a write group block instead of spinning and yielding: on a small
        // machine the spinning threads take the cores the write group's leader needs.
        opts.set_enable_write_thread_adaptive_yield(false);
        // One block cache for every family, holding the index and filter blocks too: without
        // it each SST file's index and filters sit in memory outside any bound, so RSS grew with
        // the data (about 1.1 KiB per open workflow) instead of staying flat.
        let cache = rocksdb::Cache::new_lru_cache(BLOCK_CACHE_BYTES);
        let mut table = rocksdb::BlockBasedOptions::default();
        table.set_block_cache(&cache);
        table.set_cache_index_and_filter_blocks(true);
        table.set_pin_l0_filter_and_index_blocks_in_cache(true);
        table.set_bloom_filter(10.0, false);
        // Partitioned index and filters: an SST file's index is a small pinned top level over
        // 4 KiB partitions, so a seek reads one partition instead of the whole index. With one
        // monolithic index block per 64 MiB file, a directory grown to a million runs no longer
        // kept the index blocks in the cache, and every history read decompressed them again
        // (47% of the CPU at 1M runs, start throughput 0.34x an empty directory; see
        // docs/benchmarks.md).
        table.set_index_type(rocksdb::BlockBasedIndexType::TwoLevelIndexSearch);
        table.set_partition_filters(true);
        table.set_metadata_block_size(4096);
        table.set_pin_top_level_index_and_filter(true);
        // Index and filter partitions go to the cache's high-priority pool, so a scan of cold
        // data blocks does not evict them.
        table.set_cache_index_and_filter_blocks_with_high_priority(true);
        let cfs = Cf::ALL.iter().map(|cf| {
            let mut o = Options::default();
            o.set_block_based_table_factory(&table);
            // Levels and files sized to what a flush holds. Memtables of all families share
            // DB_WRITE_BUFFER_BYTES, so a family flushes a few MiB at a time. With RocksDB's
            // defaults (256 MiB level base, 64 MiB files) a family below 2.5 GiB compacts L0
            // straight into its last level, and each compaction rewrites every 64 MiB file the
            // flushed keys touch: a family of a few hundred MiB is a handful of such files
            // (and on a node of many shards a flush touches all of them, keys starting with
            // the shard), so the bytes rewritten per byte written grew with the data (a
            // million closed runs: 630 MB of compaction in a 20 s run, the compaction threads
            // a fifth of the server's CPU). A base about the size of L0 at its trigger and
            // 8 MiB files bring back the usual leveled amplification.
            o.set_max_bytes_for_level_base(LEVEL_BASE_BYTES);
            o.set_target_file_size_base(TARGET_FILE_BYTES);
            // A file that is mostly tombstones (what retention's deletions flush, and the
            // short-lived rows of timers and the outbox) is compacted down on its own, so the
            // space of deleted runs comes back while the server runs, not only when later
            // writes happen to push compactions through that key range. Only the ratio
            // counts: the sliding-window trigger would also fire on the dense runs of deleted
            // open-run index rows a busy server flushes, and compact them for nothing.
            o.add_compact_on_deletion_collector_factory(
                DELETION_WINDOW_OFF,
                DELETION_WINDOW_OFF,
                TOMBSTONE_RATIO_TO_COMPACT,
            );
            if matches!(cf, Cf::RaftLog | Cf::History) {
                o.set_compression_type(rocksdb::DBCompressionType::Lz4);
            }
            if *cf == Cf::History {
                // Each SST file's filter also holds the runs it has events of, so reading a run's
                // history (`Db::run_history_iterator`) skips the files without it. A run just
                // written lives in the memtable or one L0 file; without the filter, every read
                // of it also positioned an iterator in every other L0 file and every level
                // (at a million closed runs, 13% of start-dev's CPU under load against 7% on
                // an empty directory; see docs/benchmarks.md).
                o.set_prefix_extractor(rocksdb::SliceTransform::create(
                    HISTORY_RUN_PREFIX,
                    history_run_prefix,
                    Some(history_run_in_domain),
                ));
            }
            ColumnFamilyDescriptor::new(cf.name(), o)
        });
        let rocks = Rocks::open_cf_descriptors(&opts, path.join("rocksdb"), cfs)?;
        let (log_writer, log_writes) = crate::log_writer::LogWriter::new();
        let inner = Arc::new(DbInner {
            rocks,
            options,
            path: path.to_path_buf(),
            node_id_created: std::sync::Mutex::new(()),
            log_writer,
            _lock: lock,
        });
        inner.log_writer.spawn(Arc::downgrade(&inner), log_writes)?;
        Ok(Self { inner })
    }

    pub(crate) fn log_writer(&self) -> &crate::log_writer::LogWriter {
        &self.inner.log_writer
    }

    /// How many RocksDB writes the node's Raft log writer made, and how many log operations of
    /// all groups they carried (their ratio is how many groups share an fsync).
    pub fn log_writer_stats(&self) -> crate::log_writer::LogWriterStats {
        self.inner.log_writer.stats()
    }

    pub fn rocks(&self) -> &Rocks {
        &self.inner.rocks
    }

    /// An iterator confined to the keys starting with `prefix`. The bounds matter beyond
    /// correctness: without an upper bound, a seek past a range's last live key walks on through
    /// the next range's deletion tombstones (queue-like families such as the outbox and timers
    /// are full of them) before it can report the end.
    pub fn prefix_iterator(
        &self,
        cf: Cf,
        prefix: &[u8],
    ) -> rocksdb::DBRawIteratorWithThreadMode<'_, Rocks> {
        let mut opts = rocksdb::ReadOptions::default();
        // Whatever the prefix, every key in it: a family with a prefix extractor (`history`)
        // would otherwise skip files by the seek key's prefix alone.
        opts.set_total_order_seek(true);
        opts.set_iterate_lower_bound(prefix.to_vec());
        if prefix.iter().any(|b| *b != u8::MAX) {
            // (A prefix of only 0xff bytes has no finite end; the lower bound alone applies.)
            opts.set_iterate_upper_bound(crate::keys::prefix_end(prefix));
        }
        self.rocks().raw_iterator_cf_opt(self.cf(cf), opts)
    }

    /// An iterator over one run's history batches (`prefix` from `keys::history_prefix`) that
    /// uses the files' run filters: a seek skips every SST file without this run. Seek forward
    /// where possible: RocksDB filters a backward seek too, but then steps into the previous
    /// file of the level anyway.
    pub fn run_history_iterator(
        &self,
        prefix: &[u8],
    ) -> rocksdb::DBRawIteratorWithThreadMode<'_, Rocks> {
        debug_assert_eq!(
            crate::keys::history_run_prefix_len(prefix),
            Some(prefix.len())
        );
        let mut opts = rocksdb::ReadOptions::default();
        opts.set_prefix_same_as_start(true);
        opts.set_iterate_lower_bound(prefix.to_vec());
        opts.set_iterate_upper_bound(crate::keys::prefix_end(prefix));
        self.rocks().raw_iterator_cf_opt(self.cf(Cf::History), opts)
    }

    pub fn cf(&self, cf: Cf) -> &ColumnFamily {
        self.inner.cf(cf)
    }

    pub fn options(&self) -> &DbOptions {
        &self.inner.options
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    pub fn get(&self, cf: Cf, key: &[u8]) -> StorageResult<Option<Vec<u8>>> {
        #[cfg(feature = "fault-injection")]
        crate::fault::check_read(&self.inner.path, cf, key)?;
        Ok(self.inner.rocks.get_cf(self.cf(cf), key)?)
    }

    /// Write options for the Raft log: the fsync point of every acknowledged write.
    pub fn log_write_options(&self) -> rocksdb::WriteOptions {
        self.inner.log_write_options()
    }

    /// Write options for state-machine batches: no fsync, since a crash re-applies from the log.
    pub fn state_write_options(&self) -> rocksdb::WriteOptions {
        rocksdb::WriteOptions::default()
    }

    /// Makes every write so far durable (the write-ahead log fsynced), without flushing
    /// memtables.
    pub fn sync_wal(&self) -> StorageResult<()> {
        self.inner.rocks.flush_wal(true)?;
        Ok(())
    }

    pub fn flush(&self) -> StorageResult<()> {
        for cf in Cf::ALL {
            self.inner.rocks.flush_cf(self.cf(cf))?;
        }
        self.inner.rocks.flush_wal(true)?;
        Ok(())
    }
}

impl DbInner {
    pub(crate) fn cf(&self, cf: Cf) -> &ColumnFamily {
        // Every family is created at open, so this cannot fail.
        self.rocks
            .cf_handle(cf.name())
            .expect("column family exists")
    }

    pub(crate) fn log_write_options(&self) -> rocksdb::WriteOptions {
        let mut w = rocksdb::WriteOptions::default();
        w.set_sync(self.options.sync_writes);
        w
    }
}

fn lock_dir(path: &Path) -> StorageResult<File> {
    let lock_path = path.join("chronicle.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)?;
    #[allow(unsafe_code)]
    // SAFETY: flock on a file descriptor we own; no memory is shared with the call.
    let rc = unsafe {
        libc::flock(
            std::os::fd::AsRawFd::as_raw_fd(&file),
            libc::LOCK_EX | libc::LOCK_NB,
        )
    };
    if rc != 0 {
        return Err(StorageError::Locked {
            path: path.display().to_string(),
            lock: lock_path.display().to_string(),
        });
    }
    Ok(file)
}

/// The node's own settings live under this pseudo group in `shard_meta` (no shard has this ID:
/// shard IDs are below the shard count, at most 4096, and the metadata group is `u32::MAX`).
const NODE_META_GROUP: u32 = u32::MAX - 1;
const NODE_META_SHARD_COUNT: u8 = 1;
const NODE_META_NODE_ID: u8 = 2;
const NODE_META_CLUSTER_ID: u8 = 3;
const NODE_META_DROPPED_GROUPS: u8 = 4;
const NODE_META_DEV_CLUSTER_ID: u8 = 5;
const NODE_META_VISIBILITY_FORMAT: u8 = 6;

/// Where the format of a shard's visibility rows is kept: node metadata, outside every group's
/// key range, so it is neither replicated, snapshotted nor part of a digest (each node records
/// what it built itself).
pub(crate) fn visibility_format_key(shard: crate::keys::ShardId) -> Vec<u8> {
    let mut key = crate::keys::shard_meta(NODE_META_GROUP, NODE_META_VISIBILITY_FORMAT);
    key.extend_from_slice(&shard.to_be_bytes());
    key
}

impl Db {
    /// The number of history shards this data directory was created with. Directories from
    /// before the count was stored are recognised by the Raft votes of their groups.
    pub fn shard_count(&self) -> StorageResult<Option<u32>> {
        if let Some(bytes) = self.get(
            Cf::ShardMeta,
            &crate::keys::shard_meta(NODE_META_GROUP, NODE_META_SHARD_COUNT),
        )? {
            let bytes: [u8; 4] =
                bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| StorageError::Corrupt {
                        cf: "shard_meta",
                        reason: "the stored shard count is not 4 bytes".into(),
                    })?;
            return Ok(Some(u32::from_be_bytes(bytes)));
        }
        let mut groups_with_a_vote = 0u32;
        while self
            .get(
                Cf::RaftMeta,
                &crate::keys::raft_meta(groups_with_a_vote, crate::log_store::META_VOTE),
            )?
            .is_some()
        {
            groups_with_a_vote += 1;
        }
        Ok((groups_with_a_vote > 0).then_some(groups_with_a_vote))
    }

    /// Records the shard count (synced: it must never disagree with the data).
    pub fn set_shard_count(&self, count: u32) -> StorageResult<()> {
        let mut opts = rocksdb::WriteOptions::default();
        opts.set_sync(true);
        self.inner.rocks.put_cf_opt(
            self.cf(Cf::ShardMeta),
            crate::keys::shard_meta(NODE_META_GROUP, NODE_META_SHARD_COUNT),
            count.to_be_bytes(),
            &opts,
        )?;
        Ok(())
    }
}

impl Db {
    /// The ID of the cluster this node belongs to, once it joined one (`cluster init` or a
    /// replacement): a node belongs to one cluster for the life of its data directory.
    pub fn cluster_id(&self) -> StorageResult<Option<String>> {
        let key = crate::keys::shard_meta(NODE_META_GROUP, NODE_META_CLUSTER_ID);
        match self.get(Cf::ShardMeta, &key)? {
            None => Ok(None),
            Some(bytes) => String::from_utf8(bytes)
                .map(Some)
                .map_err(|_| StorageError::Corrupt {
                    cf: "shard_meta",
                    reason: "the stored cluster ID is not UTF-8".into(),
                }),
        }
    }

    /// Groups whose replica this node gave up (moved to other nodes) while running: their data
    /// is deleted at the next start, before the groups open ([`Db::wipe_group`]).
    pub fn dropped_groups(&self) -> StorageResult<Vec<u32>> {
        let key = crate::keys::shard_meta(NODE_META_GROUP, NODE_META_DROPPED_GROUPS);
        Ok(self
            .get(Cf::ShardMeta, &key)?
            .unwrap_or_default()
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    /// Records the dropped groups (synced).
    pub fn set_dropped_groups(&self, groups: &[u32]) -> StorageResult<()> {
        let key = crate::keys::shard_meta(NODE_META_GROUP, NODE_META_DROPPED_GROUPS);
        let value: Vec<u8> = groups.iter().flat_map(|g| g.to_be_bytes()).collect();
        let mut opts = rocksdb::WriteOptions::default();
        opts.set_sync(true);
        self.inner
            .rocks
            .put_cf_opt(self.cf(Cf::ShardMeta), key, value, &opts)?;
        Ok(())
    }

    /// Deletes every row of `group` (its state, Raft log and vote) in one synced write (all of
    /// them or, after a crash, none), then its snapshot files, then compacts the range so the
    /// disk space comes back: the node no longer holds a replica of it. Only while the group is
    /// not open or stopped. Repeating it is harmless, which makes an interrupted wipe safe to
    /// finish at the next start.
    pub fn wipe_group(&self, group: u32) -> StorageResult<()> {
        // Log writes the group's instance queued before it stopped land first (the writer
        // completes writes in the order they were submitted), so none can follow the wipe.
        let (done, written) = std::sync::mpsc::channel();
        self.log_writer().submit(crate::log_writer::LogWrite {
            ops: Vec::new(),
            done: Box::new(move |_| {
                let _ = done.send(());
            }),
        });
        let _ = written.recv();
        let prefix = crate::keys::shard_prefix(group);
        let end = crate::keys::prefix_end(&prefix);
        let mut batch = rocksdb::WriteBatch::default();
        for cf in Cf::ALL {
            batch.delete_range_cf(self.cf(cf), &prefix, &end);
        }
        let mut opts = rocksdb::WriteOptions::default();
        opts.set_sync(true);
        self.inner.rocks.write_opt(batch, &opts)?;
        // The snapshot (`snapshots/group-<id>.snap`) and any temporary file next to it.
        let snapshots = self.path().join("snapshots");
        let name = format!("group-{group}.");
        if let Ok(entries) = std::fs::read_dir(&snapshots) {
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().starts_with(&name) {
                    match std::fs::remove_file(entry.path()) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                        _ => {}
                    }
                }
            }
        }
        for cf in Cf::ALL {
            self.inner
                .rocks
                .compact_range_cf(self.cf(cf), Some(&prefix), Some(&end));
        }
        Ok(())
    }

    /// Whether any column family holds a row of `group` on this node.
    pub fn group_has_rows(&self, group: u32) -> StorageResult<bool> {
        let prefix = crate::keys::shard_prefix(group);
        for cf in Cf::ALL {
            let mut iter = self.prefix_iterator(cf, &prefix);
            iter.seek(&prefix);
            if iter.valid() {
                tracing::debug!(group, cf = ?cf, "group has rows");
                return Ok(true);
            }
            iter.status()?;
        }
        Ok(false)
    }

    /// The ID a single-node server (start-dev) reports as its cluster's: minted by `mint` at the
    /// first call and stored (synced), so it stays for the life of the data directory. Kept
    /// apart from [`Db::cluster_id`], which says the node joined a replicated cluster.
    pub fn dev_cluster_id(&self, mint: impl FnOnce() -> String) -> StorageResult<String> {
        let key = crate::keys::shard_meta(NODE_META_GROUP, NODE_META_DEV_CLUSTER_ID);
        if let Some(bytes) = self.get(Cf::ShardMeta, &key)? {
            return String::from_utf8(bytes).map_err(|_| StorageError::Corrupt {
                cf: "shard_meta",
                reason: "the stored cluster ID is not UTF-8".into(),
            });
        }
        let id = mint();
        let mut opts = rocksdb::WriteOptions::default();
        opts.set_sync(true);
        self.inner
            .rocks
            .put_cf_opt(self.cf(Cf::ShardMeta), key, id.as_bytes(), &opts)?;
        Ok(id)
    }

    /// Stores the cluster ID (synced). The caller checks that none, or the same, was stored.
    pub fn set_cluster_id(&self, cluster_id: &str) -> StorageResult<()> {
        let key = crate::keys::shard_meta(NODE_META_GROUP, NODE_META_CLUSTER_ID);
        let mut opts = rocksdb::WriteOptions::default();
        opts.set_sync(true);
        self.inner
            .rocks
            .put_cf_opt(self.cf(Cf::ShardMeta), key, cluster_id.as_bytes(), &opts)?;
        Ok(())
    }
}

impl Db {
    /// This node's Raft ID: a random non-zero u64 created with the data directory and stored in
    /// it (synced). It is never derived from a host name or an ordinal and never reused: a wiped
    /// directory is a new node, since a node rejoining under an old ID with an empty log can lose
    /// committed entries (openraft's FAQ, issue #898).
    pub fn node_id(&self) -> StorageResult<u64> {
        let key = crate::keys::shard_meta(NODE_META_GROUP, NODE_META_NODE_ID);
        let _creating = self
            .inner
            .node_id_created
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(bytes) = self.get(Cf::ShardMeta, &key)? {
            let bytes: [u8; 8] =
                bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| StorageError::Corrupt {
                        cf: "shard_meta",
                        reason: "the stored node ID is not 8 bytes".into(),
                    })?;
            return Ok(u64::from_be_bytes(bytes));
        }
        // Zero is openraft's customary "no node"; never hand it out.
        let id = loop {
            let candidate: u64 = rand::random();
            if candidate != 0 {
                break candidate;
            }
        };
        let mut opts = rocksdb::WriteOptions::default();
        opts.set_sync(true);
        self.inner
            .rocks
            .put_cf_opt(self.cf(Cf::ShardMeta), key, id.to_be_bytes(), &opts)?;
        Ok(id)
    }
}

impl Db {
    /// Sets the RocksDB gauges of `metric_defs` from the database's properties (called at
    /// scrape time; each is a cheap in-memory read).
    pub fn record_gauges(&self) {
        use crate::metric_defs as m;
        let int = |name: &str| -> f64 {
            self.rocks()
                .property_int_value(name)
                .ok()
                .flatten()
                .unwrap_or(0) as f64
        };
        metrics::gauge!(m::ROCKSDB_WRITE_STOPPED).set(int("rocksdb.is-write-stopped"));
        metrics::gauge!(m::ROCKSDB_DELAYED_WRITE_RATE)
            .set(int("rocksdb.actual-delayed-write-rate"));
        let mut block_cache = 0.0f64;
        let (mut capacity, mut pinned) = (0.0f64, 0.0f64);
        for cf in Cf::ALL {
            let prop = |name: &str| -> f64 {
                self.rocks()
                    .property_int_value_cf(self.cf(cf), name)
                    .ok()
                    .flatten()
                    .unwrap_or(0) as f64
            };
            let label = cf.name();
            metrics::gauge!(m::ROCKSDB_PENDING_COMPACTION_BYTES, "cf" => label)
                .set(prop("rocksdb.estimate-pending-compaction-bytes"));
            metrics::gauge!(m::ROCKSDB_MEMTABLE_BYTES, "cf" => label)
                .set(prop("rocksdb.cur-size-all-mem-tables"));
            metrics::gauge!(m::ROCKSDB_SST_BYTES, "cf" => label)
                .set(prop("rocksdb.total-sst-files-size"));
            // Column families may share one cache: report the largest, not the sum.
            block_cache = block_cache.max(prop("rocksdb.block-cache-usage"));
            capacity = capacity.max(prop("rocksdb.block-cache-capacity"));
            pinned = pinned.max(prop("rocksdb.block-cache-pinned-usage"));
        }
        metrics::gauge!(m::ROCKSDB_BLOCK_CACHE_BYTES).set(block_cache);
        let cache = [
            ("service_name", m::SERVICE_NAME),
            ("cache_type", m::BLOCK_CACHE_TYPE),
        ];
        metrics::gauge!(m::CACHE_SIZE, &cache).set(capacity);
        metrics::gauge!(m::CACHE_USAGE, &cache).set(block_cache);
        metrics::gauge!(m::CACHE_PINNED_USAGE, &cache).set(pinned);
        let keys = |cf: Cf| -> f64 {
            self.rocks()
                .property_int_value_cf(self.cf(cf), "rocksdb.estimate-num-keys")
                .ok()
                .flatten()
                .unwrap_or(0) as f64
        };
        metrics::gauge!(m::TIMER_QUEUE_DEPTH).set(keys(Cf::Timers));
        metrics::gauge!(m::OUTBOX_DEPTH).set(keys(Cf::Outbox));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_count_is_stored_or_inferred_from_the_groups_votes() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), DbOptions::default()).unwrap();
        assert_eq!(db.shard_count().unwrap(), None, "a new directory has none");

        // A directory from before the count was stored: groups 0..3 voted (the metadata group,
        // u32::MAX, does not count).
        for group in [0, 1, 2, u32::MAX] {
            db.rocks()
                .put_cf(
                    db.cf(Cf::RaftMeta),
                    crate::keys::raft_meta(group, crate::log_store::META_VOTE),
                    b"vote",
                )
                .unwrap();
        }
        assert_eq!(db.shard_count().unwrap(), Some(3));

        // A stored count wins, and survives a reopen.
        db.set_shard_count(8).unwrap();
        drop(db);
        let db = Db::open(dir.path(), DbOptions::default()).unwrap();
        assert_eq!(db.shard_count().unwrap(), Some(8));
    }

    #[test]
    fn node_id_is_created_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), DbOptions::default()).unwrap();
        let id = db.node_id().unwrap();
        assert_ne!(id, 0);
        assert_eq!(
            db.node_id().unwrap(),
            id,
            "asking again does not create another"
        );
        drop(db);
        let db = Db::open(dir.path(), DbOptions::default()).unwrap();
        assert_eq!(db.node_id().unwrap(), id, "it survives a reopen");
        drop(db);

        // Another directory is another node.
        let other = tempfile::tempdir().unwrap();
        let db = Db::open(other.path(), DbOptions::default()).unwrap();
        assert_ne!(db.node_id().unwrap(), id);
    }
}
