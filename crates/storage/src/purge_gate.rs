//! Keeps a group's log from being purged on disk past what its state machine's state covers.
//!
//! openraft (0.9) purges a follower's log up to a received snapshot as soon as it accepts the
//! snapshot, while the state machine installs it in another task: the purge can be durable
//! before the install is, and an install that fails or crashes would leave the log purged past
//! the applied state (openraft then refuses to start the group, and the entries the follower
//! had acknowledged would be gone before the snapshot replacing them is there). The gate holds
//! such a purge back: the log store reports it to openraft at once (in memory), but writes it
//! only once the state machine's durable state covers it, which it says through
//! [`PurgeGate::covered_up_to`] after each commit of applied or installed state. A crash in
//! between leaves the log and the state as they were before the snapshot arrived.
//!
//! "Covered" means written to RocksDB before the purge: state batches are not fsynced, but they
//! go through the same write-ahead log ahead of the purge's synced write, so once the purge is
//! durable, so is the state it relied on.

use std::sync::Mutex;

use crate::db::Db;
use crate::log_writer::{LogOp, LogWrite};

pub struct PurgeGate {
    db: Db,
    inner: Mutex<GateState>,
}

struct GateState {
    /// The last log index the state machine's committed state covers.
    covered: Option<u64>,
    /// A purge not covered yet: its last index and its writes.
    deferred: Option<(u64, Vec<LogOp>)>,
}

impl PurgeGate {
    /// A gate for a state machine whose state covers the log up to `covered` (its applied index).
    pub fn new(db: Db, covered: Option<u64>) -> Self {
        Self {
            db,
            inner: Mutex::new(GateState {
                covered,
                deferred: None,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, GateState> {
        // Every critical section leaves the state whole, so a poisoned lock is still consistent.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A purge up to `upto` was asked for: its writes, to make durable now, if the state covers
    /// `upto`; otherwise they are kept until it does and `None` is returned. openraft purges in
    /// increasing order, so a later purge replaces a deferred one.
    pub(crate) fn admit(&self, upto: u64, ops: Vec<LogOp>) -> Option<Vec<LogOp>> {
        let mut state = self.state();
        if state.covered.is_some_and(|covered| covered >= upto) {
            state.deferred = None;
            return Some(ops);
        }
        tracing::info!(
            upto,
            covered = ?state.covered,
            "log purge held back until the state machine covers it"
        );
        state.deferred = Some((upto, ops));
        None
    }

    /// The state machine's committed state now covers the log up to `index`: a deferred purge
    /// it covers is submitted to the log writer (under the lock, so purges reach it in order).
    pub fn covered_up_to(&self, index: u64) {
        let mut state = self.state();
        if state.covered.is_some_and(|covered| covered >= index) {
            return;
        }
        state.covered = Some(index);
        let Some((upto, ops)) = state.deferred.take_if(|(upto, _)| *upto <= index) else {
            return;
        };
        self.db.log_writer().submit(LogWrite {
            ops,
            done: Box::new(move |result| {
                // Not fatal: the log then keeps entries the state covers, which the next purge
                // (or openraft at the next start) removes.
                if let Err(e) = result {
                    tracing::warn!(upto, error = %e, "a held-back log purge failed");
                }
            }),
        });
    }

    /// Whether a purge is waiting for the state machine (for tests and diagnostics).
    pub fn has_deferred(&self) -> bool {
        self.state().deferred.is_some()
    }
}
