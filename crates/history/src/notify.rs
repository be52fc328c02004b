//! Per-group change notifications: the state machine bumps a watch after every applied batch,
//! so long polls (history, waiting results) and the shard processors wake at once instead of
//! polling RocksDB.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use tokio::sync::watch;

#[derive(Clone, Default)]
pub struct ShardNotifier {
    senders: Arc<RwLock<HashMap<u32, watch::Sender<u64>>>>,
    /// Per group: the earliest fire time of timers added since the timer loop last looked.
    timer_floors: Arc<RwLock<HashMap<u32, Arc<AtomicI64>>>>,
}

impl ShardNotifier {
    pub fn subscribe(&self, group: u32) -> watch::Receiver<u64> {
        let mut senders = self.senders.write().expect("notifier lock");
        senders
            .entry(group)
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// Records that timers firing at `fire_ms` or later were added to `group`.
    pub fn timer_added(&self, group: u32, fire_ms: i64) {
        self.timer_floor(group).fetch_min(fire_ms, Ordering::SeqCst);
    }

    /// The group's "earliest timer added" cell: the timer loop swaps `i64::MAX` into it to take
    /// what was added since its last look.
    pub fn timer_floor(&self, group: u32) -> Arc<AtomicI64> {
        if let Some(floor) = self.timer_floors.read().expect("notifier lock").get(&group) {
            return floor.clone();
        }
        self.timer_floors
            .write()
            .expect("notifier lock")
            .entry(group)
            .or_insert_with(|| Arc::new(AtomicI64::new(i64::MAX)))
            .clone()
    }

    pub fn notify(&self, group: u32, index: u64) {
        if let Some(sender) = self.senders.read().expect("notifier lock").get(&group) {
            sender.send_replace(index);
        }
    }
}
