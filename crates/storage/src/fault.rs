//! Injected storage faults, for tests of what a failing disk does to the engine (feature
//! `fault-injection`; never compiled into the server binary). A fault makes every point read of
//! one column family of one shard, in one data directory, fail as RocksDB would.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::db::Cf;
use crate::error::{StorageError, StorageResult};
use crate::keys::ShardId;

static READ_FAULTS: Mutex<Vec<(PathBuf, ShardId, Cf)>> = Mutex::new(Vec::new());

fn faults() -> std::sync::MutexGuard<'static, Vec<(PathBuf, ShardId, Cf)>> {
    READ_FAULTS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// From now on, reads of `cf` for `shard` in the database at `dir` fail.
pub fn fail_reads(dir: &Path, shard: ShardId, cf: Cf) {
    faults().push((dir.to_path_buf(), shard, cf));
}

/// Removes every fault of the database at `dir`.
pub fn clear_faults(dir: &Path) {
    faults().retain(|(d, _, _)| d != dir);
}

pub(crate) fn check_read(dir: &Path, cf: Cf, key: &[u8]) -> StorageResult<()> {
    let Some(shard) = key
        .get(..4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_be_bytes)
    else {
        return Ok(());
    };
    if faults()
        .iter()
        .any(|(d, s, c)| d == dir && *s == shard && *c == cf)
    {
        return Err(StorageError::Corrupt {
            cf: cf.name(),
            reason: "injected read fault".into(),
        });
    }
    Ok(())
}
