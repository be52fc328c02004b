//! Where a standalone activity execution lives. Temporal keeps activity IDs apart from workflow
//! IDs (one may equal the other); Chronicle stores an activity execution in the shard tables a
//! workflow run uses (`executions`, `current`, timers, outbox, visibility), under a workflow-ID
//! key that no workflow can have: the activity ID behind [`KEY_PREFIX`]. The key decides the
//! shard, so every call about one activity ID meets on one shard, as a workflow ID's do.

/// Starts every standalone activity's key; the frontend refuses workflow IDs that start with it.
pub const KEY_PREFIX: &str = "\u{0}activity\u{0}";

/// The workflow-ID key of the standalone activity `activity_id`.
pub fn key(activity_id: &str) -> String {
    format!("{KEY_PREFIX}{activity_id}")
}

/// The activity ID a key stands for, if it is a standalone activity's key.
pub fn activity_id(key: &str) -> Option<&str> {
    key.strip_prefix(KEY_PREFIX)
}

pub fn is_key(workflow_id: &str) -> bool {
    workflow_id.starts_with(KEY_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_never_equal_a_plain_id() {
        assert_eq!(activity_id(&key("a")), Some("a"));
        assert_eq!(activity_id("a"), None);
        assert!(is_key(&key("")));
        assert!(!is_key("activity"));
    }
}
