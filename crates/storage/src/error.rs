#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("corrupt value in {cf}: {reason}")]
    Corrupt { cf: &'static str, reason: String },
    #[error("data directory {path} is in use by another process (lock file {lock})")]
    Locked { path: String, lock: String },
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

pub type StorageResult<T> = Result<T, StorageError>;
