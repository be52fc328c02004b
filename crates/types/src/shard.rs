//! Workflow → shard mapping. The shard count is fixed when a cluster (or a start-dev data
//! directory) is created: changing it would move workflows between Raft groups.

/// A shard (and its Raft group) number, `0..num_shards`.
pub type ShardId = u32;

/// The Raft group that holds cluster metadata (namespaces); not a history shard.
pub const METADATA_GROUP: ShardId = u32::MAX;

/// The shard of a workflow: a stable hash of namespace ID and workflow ID.
pub fn shard_for(namespace_id: &str, workflow_id: &str, num_shards: u32) -> ShardId {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(namespace_id.as_bytes());
    hasher.update(&[0]);
    hasher.update(workflow_id.as_bytes());
    (hasher.digest() % u64::from(num_shards.max(1))) as ShardId
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_and_in_range() {
        let a = shard_for("ns", "order-1", 4);
        assert_eq!(a, shard_for("ns", "order-1", 4));
        assert!(a < 4);
        // The separator keeps ("ab","c") and ("a","bc") apart.
        let spread: std::collections::HashSet<_> = (0..200)
            .map(|i| shard_for("ns", &format!("wf-{i}"), 8))
            .collect();
        assert_eq!(spread.len(), 8, "200 IDs must reach all 8 shards");
    }
}
