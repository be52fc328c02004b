//! Throw-away RocksDB instances for the benches.

use std::path::PathBuf;

use chronicle_storage::{Db, DbOptions};
use tempfile::TempDir;

/// Directory the scratch databases are created in. Defaults to the system temp directory; set
/// `CHRONICLE_BENCH_DIR` to put them elsewhere. It must be on the disk the server would use: on a
/// tmpfs an fsync costs nothing and the synced-write numbers mean nothing.
pub fn scratch_root() -> PathBuf {
    std::env::var_os("CHRONICLE_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
}

/// A database in a fresh temporary directory, removed when dropped.
pub struct ScratchDb {
    pub db: Db,
    // Dropped after `db` (fields drop in order), so RocksDB closes before its files go.
    _dir: TempDir,
}

impl ScratchDb {
    /// `sync_writes` is the server's `DbOptions::sync_writes`: whether Raft log writes fsync.
    pub fn open(sync_writes: bool) -> Self {
        let root = scratch_root();
        std::fs::create_dir_all(&root).expect("create the scratch root");
        let dir = tempfile::Builder::new()
            .prefix("chronicle-bench-")
            .tempdir_in(&root)
            .expect("create a scratch directory");
        let db = Db::open(dir.path(), DbOptions { sync_writes }).expect("open RocksDB");
        Self { db, _dir: dir }
    }
}
