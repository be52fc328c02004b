//! Per-group change notifications: the state machine bumps a watch after every applied batch,
//! so long polls (history, waiting results) and the shard processors wake at once instead of
//! polling RocksDB.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use tokio::sync::watch;

#[derive(Clone, Default)]
pub struct ShardNotifier {
    senders: Arc<RwLock<HashMap<u32, watch::Sender<u64>>>>,
}

impl ShardNotifier {
    pub fn subscribe(&self, group: u32) -> watch::Receiver<u64> {
        let mut senders = self.senders.write().expect("notifier lock");
        senders
            .entry(group)
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    pub fn notify(&self, group: u32, index: u64) {
        if let Some(sender) = self.senders.read().expect("notifier lock").get(&group) {
            sender.send_replace(index);
        }
    }
}
