//! Namespace IDs to names, for answers that carry the name and for metric labels.

use std::collections::HashMap;
use std::sync::RwLock;

use chronicle_storage::ShardTables;

/// A cache of the metadata group's namespace records, reloaded on a miss.
pub struct NamespaceNames {
    names: RwLock<HashMap<String, String>>,
    metadata: ShardTables,
}

impl NamespaceNames {
    pub fn new(metadata: ShardTables) -> Self {
        Self {
            names: RwLock::new(HashMap::new()),
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
}
