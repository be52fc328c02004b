//! Metric names of the storage layer: the node-wide Raft log writer and RocksDB's own state
//! (read from its properties at scrape time). Aggregated per node: one series per node (or per
//! column family), never per shard, so thousands of shards cost nothing here.

/// Time of one log-writer batch: the RocksDB write of every group's appends and, with synced
/// writes, its fsync (histogram, seconds).
pub const RAFT_LOG_APPEND_DURATION: &str = "chronicle_raft_log_append_duration_seconds";
/// Log operations (appends, votes, truncations of any group) carried by one synced write
/// (histogram, dimensionless): how well the node-wide writer batches.
pub const RAFT_LOG_WRITES_PER_SYNC: &str = "chronicle_raft_log_writes_per_sync";

/// 1 while RocksDB has stopped writes (too many memtables or L0 files), else 0.
pub const ROCKSDB_WRITE_STOPPED: &str = "chronicle_rocksdb_write_stopped";
/// The rate RocksDB throttles writes to while it delays them (bytes/s); 0 when not delayed.
pub const ROCKSDB_DELAYED_WRITE_RATE: &str = "chronicle_rocksdb_delayed_write_rate";
/// Per column family (`cf` label):
pub const ROCKSDB_PENDING_COMPACTION_BYTES: &str = "chronicle_rocksdb_pending_compaction_bytes";
pub const ROCKSDB_MEMTABLE_BYTES: &str = "chronicle_rocksdb_memtable_bytes";
pub const ROCKSDB_SST_BYTES: &str = "chronicle_rocksdb_sst_bytes";
/// Timer tasks and outbox (transfer) tasks stored on this node, over every shard replica it
/// hosts: RocksDB's key estimate for the family, cheap to read at scrape time (deletions not yet
/// compacted can make it off by their number).
pub const TIMER_QUEUE_DEPTH: &str = "chronicle_timer_queue_depth";
pub const OUTBOX_DEPTH: &str = "chronicle_outbox_depth";
/// Block cache in use (shared by the column families).
pub const ROCKSDB_BLOCK_CACHE_BYTES: &str = "chronicle_rocksdb_block_cache_bytes";

// Temporal's cache gauges (`cache_size`, `cache_usage`, `cache_pinned_usage`, labels
// `service_name`, `cache_type`), for the one read cache of history's data Chronicle has: the
// RocksDB block cache every column family shares (run state, history events, tasks, the Raft
// log). Temporal's mutable-state and events caches have no counterpart (docs/metrics.md).
/// The cache's capacity, in bytes.
pub const CACHE_SIZE: &str = "cache_size";
/// Bytes the cache holds now.
pub const CACHE_USAGE: &str = "cache_usage";
/// Bytes of entries held in use (pinned: index and filter tops, blocks readers hold), which the
/// cache cannot evict.
pub const CACHE_PINNED_USAGE: &str = "cache_pinned_usage";
/// `cache_type` of the RocksDB block cache.
pub const BLOCK_CACHE_TYPE: &str = "rocksdb_block";
/// `service_name` of the storage layer's families: it serves the history role.
pub const SERVICE_NAME: &str = "history";

/// Raft snapshots built (of this node's groups) and installed (received from a leader), by
/// outcome (`op` = build | install, `outcome` = ok | error).
pub const RAFT_SNAPSHOTS: &str = "chronicle_raft_snapshots";
/// Time to build or install one snapshot, in seconds (`op` label).
pub const RAFT_SNAPSHOT_DURATION: &str = "chronicle_raft_snapshot_duration_seconds";

/// Counts one snapshot build or install and its duration.
pub fn record_snapshot(op: &'static str, started: std::time::Instant, ok: bool) {
    metrics::counter!(RAFT_SNAPSHOTS, "op" => op, "outcome" => if ok { "ok" } else { "error" })
        .increment(1);
    if ok {
        metrics::histogram!(RAFT_SNAPSHOT_DURATION, "op" => op)
            .record(started.elapsed().as_secs_f64());
    }
}

/// Histograms that count things (not seconds): exported with count buckets.
pub const DIMENSIONLESS_HISTOGRAMS: &[&str] = &[RAFT_LOG_WRITES_PER_SYNC];

pub fn describe() {
    use metrics::{Unit, describe_gauge, describe_histogram};
    describe_histogram!(
        RAFT_LOG_APPEND_DURATION,
        Unit::Seconds,
        "Node-wide Raft log write (and fsync) of one batch of all groups' appends."
    );
    metrics::describe_counter!(
        RAFT_SNAPSHOTS,
        "Raft snapshots built and installed, by op and outcome."
    );
    describe_histogram!(
        RAFT_SNAPSHOT_DURATION,
        Unit::Seconds,
        "Time to build or install one Raft snapshot."
    );
    describe_histogram!(
        RAFT_LOG_WRITES_PER_SYNC,
        "Raft log operations carried by one synced write."
    );
    for (name, help) in [
        (ROCKSDB_WRITE_STOPPED, "1 while RocksDB stops writes."),
        (
            ROCKSDB_DELAYED_WRITE_RATE,
            "Rate RocksDB throttles writes to (bytes/s), 0 when not delayed.",
        ),
        (
            ROCKSDB_PENDING_COMPACTION_BYTES,
            "Estimated bytes compaction still has to rewrite, per column family.",
        ),
        (ROCKSDB_MEMTABLE_BYTES, "Memtable bytes, per column family."),
        (ROCKSDB_SST_BYTES, "SST file bytes, per column family."),
        (ROCKSDB_BLOCK_CACHE_BYTES, "Block cache bytes in use."),
        (CACHE_SIZE, "Capacity of a cache, by cache_type (bytes)."),
        (CACHE_USAGE, "Bytes a cache holds, by cache_type."),
        (
            CACHE_PINNED_USAGE,
            "Bytes of a cache's entries in use (not evictable), by cache_type.",
        ),
        (
            TIMER_QUEUE_DEPTH,
            "Timer tasks stored on this node (RocksDB estimate).",
        ),
        (
            OUTBOX_DEPTH,
            "Outbox tasks stored on this node (RocksDB estimate).",
        ),
    ] {
        describe_gauge!(name, help);
    }
}
