//! The node's one Raft log writer: every group's log appends, truncations, purges and votes go
//! through one FIFO queue, and a dedicated thread turns whatever has queued up (from all groups)
//! into one RocksDB write batch and one synced write. With many groups on a node this is one
//! fsync for all of them instead of one per group, and a group's `append` no longer waits for
//! the disk: it returns once the entries are readable, and openraft's callback fires when the
//! write is durable (the storage-v2 contract). One queue also keeps each group's operations in
//! the order they were issued (an append is never overtaken by a later truncate).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Weak};

use crate::db::{Cf, DbInner};

/// One operation on the log families.
pub(crate) enum LogOp {
    Put {
        cf: Cf,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    DeleteRange {
        cf: Cf,
        from: Vec<u8>,
        to: Vec<u8>,
    },
}

/// Called on the writer thread once the write is durable (or failed).
pub(crate) type Done = Box<dyn FnOnce(Result<(), String>) + Send>;

pub(crate) struct LogWrite {
    pub ops: Vec<LogOp>,
    pub done: Done,
}

/// Most writes of one RocksDB batch, so one large burst does not delay the first callbacks.
const MAX_WRITES_PER_BATCH: usize = 4096;

pub(crate) struct LogWriter {
    queue: mpsc::Sender<LogWrite>,
    stats: Arc<Counters>,
}

#[derive(Default)]
struct Counters {
    batches: AtomicU64,
    writes: AtomicU64,
}

/// What the log writer did since the database was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogWriterStats {
    /// RocksDB writes (each one fsync when writes are synced).
    pub batches: u64,
    /// Log operations (appends, votes, truncations, purges) those batches carried.
    pub writes: u64,
}

impl LogWriter {
    /// The queue, and its receiving end for [`LogWriter::spawn`].
    pub(crate) fn new() -> (Self, mpsc::Receiver<LogWrite>) {
        let (queue, writes) = mpsc::channel();
        let stats = Arc::new(Counters::default());
        (Self { queue, stats }, writes)
    }

    pub(crate) fn stats(&self) -> LogWriterStats {
        LogWriterStats {
            batches: self.stats.batches.load(Ordering::Relaxed),
            writes: self.stats.writes.load(Ordering::Relaxed),
        }
    }

    /// Starts the writer thread. It holds the database weakly: once every `Db` handle is gone
    /// the queue's sender is dropped with it and the thread ends, so the directory lock is
    /// released as before.
    pub(crate) fn spawn(
        &self,
        db: Weak<DbInner>,
        writes: mpsc::Receiver<LogWrite>,
    ) -> std::io::Result<()> {
        let stats = self.stats.clone();
        std::thread::Builder::new()
            .name("chronicle-log-writer".into())
            .spawn(move || run(db, writes, &stats))?;
        Ok(())
    }

    pub(crate) fn submit(&self, write: LogWrite) {
        if let Err(mpsc::SendError(write)) = self.queue.send(write) {
            (write.done)(Err("the log writer has stopped".into()));
        }
    }
}

fn run(db: Weak<DbInner>, writes: mpsc::Receiver<LogWrite>, stats: &Counters) {
    while let Ok(first) = writes.recv() {
        let mut pending = vec![first];
        while pending.len() < MAX_WRITES_PER_BATCH {
            match writes.try_recv() {
                Ok(write) => pending.push(write),
                Err(_) => break,
            }
        }
        let result = match db.upgrade() {
            Some(db)
                if let Err(e) =
                    crate::failpoint::check(crate::failpoint::names::RAFT_LOG_FSYNC, &db.path) =>
            {
                Err(e)
            }
            Some(db) => {
                let mut batch = rocksdb::WriteBatch::default();
                for op in pending.iter().flat_map(|w| w.ops.iter()) {
                    match op {
                        LogOp::Put { cf, key, value } => batch.put_cf(db.cf(*cf), key, value),
                        LogOp::DeleteRange { cf, from, to } => {
                            batch.delete_range_cf(db.cf(*cf), from, to)
                        }
                    }
                }
                stats.batches.fetch_add(1, Ordering::Relaxed);
                stats
                    .writes
                    .fetch_add(pending.len() as u64, Ordering::Relaxed);
                let started = std::time::Instant::now();
                let written = db
                    .rocks
                    .write_opt(batch, &db.log_write_options())
                    .map_err(|e| e.to_string());
                metrics::histogram!(crate::metric_defs::RAFT_LOG_APPEND_DURATION)
                    .record(started.elapsed().as_secs_f64());
                metrics::histogram!(crate::metric_defs::RAFT_LOG_WRITES_PER_SYNC)
                    .record(pending.len() as f64);
                written
            }
            None => Err("the database is closed".into()),
        };
        for write in pending {
            (write.done)(result.clone());
        }
    }
}
