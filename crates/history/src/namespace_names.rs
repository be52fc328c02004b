//! Namespace IDs to names (for answers that carry the name and for metric labels) and to
//! retention (stamped on the commands a leader proposes, see `apply::delete`).

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use chronicle_proto::wkt::Duration as ProtoDuration;
use chronicle_storage::ShardTables;

/// How long a namespace's retention is taken from the cache before the metadata replica is read
/// again (as long as the frontend's namespace cache keeps entries).
const RETENTION_REFRESH: Duration = Duration::from_secs(5);
/// How soon a namespace ID the cache did not know is looked up again.
const RETRY_MISS: Duration = Duration::from_millis(100);

/// A cache of the metadata group's namespace records, reloaded on a miss.
pub struct NamespaceNames {
    names: RwLock<HashMap<String, String>>,
    retention: RwLock<(Option<Instant>, HashMap<String, ProtoDuration>)>,
    metadata: ShardTables,
}

impl NamespaceNames {
    pub fn new(metadata: ShardTables) -> Self {
        Self {
            names: RwLock::new(HashMap::new()),
            retention: RwLock::new((None, HashMap::new())),
            metadata,
        }
    }

    /// The name of `namespace_id`; empty when no namespace has that ID.
    pub fn name(&self, namespace_id: &str) -> String {
        if let Some(name) = self.names.read().expect("names lock").get(namespace_id) {
            return name.clone();
        }
        let records = self.metadata.namespaces().unwrap_or_default();
        let mut names = self.names.write().expect("names lock");
        for r in records {
            if let Some(info) = r.info {
                names.insert(info.id, info.name);
            }
        }
        names.get(namespace_id).cloned().unwrap_or_default()
    }

    /// The workflow execution retention of `namespace_id` as this node's metadata replica holds
    /// it (at most a few seconds old); `None` for an unknown namespace.
    pub fn retention(&self, namespace_id: &str) -> Option<ProtoDuration> {
        {
            // A namespace just registered is looked up again at once; an unknown ID costs at
            // most one scan per RETRY_MISS, not one per command.
            let cached = self.retention.read().expect("retention lock");
            let age = cached.0.map(|at| at.elapsed());
            match cached.1.get(namespace_id) {
                Some(r) if age.is_some_and(|a| a < RETENTION_REFRESH) => return Some(*r),
                None if age.is_some_and(|a| a < RETRY_MISS) => return None,
                _ => {}
            }
        }
        let records = self.metadata.namespaces().unwrap_or_default();
        let mut by_id = HashMap::new();
        for r in records {
            let (Some(info), Some(retention)) = (
                r.info,
                r.config.and_then(|c| c.workflow_execution_retention_ttl),
            ) else {
                continue;
            };
            by_id.insert(info.id, retention);
        }
        let found = by_id.get(namespace_id).copied();
        *self.retention.write().expect("retention lock") = (Some(Instant::now()), by_id);
        found
    }
}
