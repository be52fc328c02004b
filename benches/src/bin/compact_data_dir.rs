//! Compacts every column family of a stopped node's data directory and prints the directory's
//! size before and after, in bytes (`benches/retention_space.sh` uses it to show how much of the
//! space of deleted runs RocksDB gives back once their tombstones are compacted). Every file is
//! rewritten, so the directory also gets the current build's table options (such as the
//! `history` family's run filter) before a benchmark.

use std::path::{Path, PathBuf};

use chronicle_storage::{Cf, Db, DbOptions};

fn dir_size(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir: PathBuf = std::env::args()
        .nth(1)
        .ok_or("usage: compact_data_dir DATA_DIR")?
        .into();
    let before = dir_size(&dir);
    {
        let db = Db::open(&dir, DbOptions::default())?;
        let sst = |db: &Db, cf: Cf| {
            db.rocks()
                .property_int_value_cf(db.cf(cf), "rocksdb.total-sst-files-size")
                .ok()
                .flatten()
                .unwrap_or(0)
        };
        let sizes_before: Vec<u64> = Cf::ALL.iter().map(|cf| sst(&db, *cf)).collect();
        // Every file rewritten, the last level's too (RocksDB skips it by default): tombstones
        // there are dropped, and every file gets the current options' filters.
        let mut options = rocksdb::CompactOptions::default();
        options.set_bottommost_level_compaction(rocksdb::BottommostLevelCompaction::Force);
        for cf in Cf::ALL {
            db.rocks()
                .compact_range_cf_opt(db.cf(cf), None::<&[u8]>, None::<&[u8]>, &options);
        }
        for (cf, before) in Cf::ALL.iter().zip(sizes_before) {
            println!(
                "cf={} sst_bytes_before={before} sst_bytes_after={}",
                cf.name(),
                sst(&db, *cf)
            );
        }
    }
    let after = dir_size(&dir);
    println!("before_compaction_bytes={before} after_compaction_bytes={after}");
    Ok(())
}
