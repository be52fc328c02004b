//! RocksDB write batches into the `raft_log` column family with the log's write options
//! (`Db::log_write_options`), with and without fsync (`DbOptions::sync_writes`): the cost of the
//! durability point of every acknowledged write, and what batching buys.
//!
//! Entries are ~1 KiB (an encoded log entry carrying a command with a payload), in batches of 1
//! and 32. Keys cycle over a fixed range so that the column family stays small over a long run,
//! as a log that is purged after snapshots does.

use chronicle_benches::scratch::ScratchDb;
use chronicle_storage::{Cf, keys};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const ENTRY_BYTES: usize = 1024;
/// Log indexes are reused modulo this, keeping the live data to a few MiB.
const KEY_RING: u64 = 4096;
/// A group number of its own (any value does; keys start with it).
const GROUP: u32 = 7;

/// Bytes that do not compress (an xorshift sequence), like encrypted or already-compressed payloads.
fn entry_value() -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..ENTRY_BYTES)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn rocksdb_write_benches(c: &mut Criterion) {
    let value = entry_value();
    let mut group = c.benchmark_group("rocksdb_write");
    for sync in [false, true] {
        let scratch = ScratchDb::open(sync);
        let db = &scratch.db;
        let mode = if sync { "fsync" } else { "no_fsync" };
        let mut index = 0u64;
        for entries in [1usize, 32] {
            group.throughput(Throughput::ElementsAndBytes {
                elements: entries as u64,
                bytes: (entries * ENTRY_BYTES) as u64,
            });
            let name = match entries {
                1 => "1_entry".to_string(),
                n => format!("{n}_entries"),
            };
            group.bench_function(BenchmarkId::new(mode, name), |b| {
                b.iter(|| {
                    // Built inside the timed section: the log store builds one per append.
                    let mut batch = rocksdb::WriteBatch::default();
                    let cf = db.cf(Cf::RaftLog);
                    for _ in 0..entries {
                        batch.put_cf(cf, keys::raft_log(GROUP, index % KEY_RING), &value);
                        index += 1;
                    }
                    db.rocks()
                        .write_opt(batch, &db.log_write_options())
                        .expect("write batch");
                })
            });
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = chronicle_benches::quick_criterion();
    targets = rocksdb_write_benches
}
criterion_main!(benches);
