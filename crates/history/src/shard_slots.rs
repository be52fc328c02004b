//! The shard groups a history node holds, one slot per shard. A slot's group is replaced when
//! the node takes up again a replica it dropped (`placement.rs`): readers take the group of the
//! moment, and whoever still holds the stopped one sees it retired.

use std::sync::{Arc, RwLock};

use crate::engine::Shard;

pub(crate) struct ShardSlots(Vec<RwLock<Arc<Shard>>>);

impl ShardSlots {
    pub(crate) fn new(shards: Vec<Arc<Shard>>) -> Self {
        Self(shards.into_iter().map(RwLock::new).collect())
    }

    /// The group in slot `index` now.
    pub(crate) fn get(&self, index: usize) -> Option<Arc<Shard>> {
        self.0.get(index).map(read)
    }

    /// Every slot's group now, in shard order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = Arc<Shard>> + '_ {
        self.0.iter().map(read)
    }

    /// Puts `shard` in its slot; returns the group it replaces.
    pub(crate) fn replace(&self, shard: Arc<Shard>) -> Option<Arc<Shard>> {
        let slot = self.0.get(shard.id as usize)?;
        let mut current = slot
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Some(std::mem::replace(&mut *current, shard))
    }
}

fn read(slot: &RwLock<Arc<Shard>>) -> Arc<Shard> {
    slot.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}
