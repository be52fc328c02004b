//! Metric names of the matching role (Temporal's server names where one exists).

/// Tasks handed directly to a waiting poller.
pub const SYNC_MATCH: &str = "poll_success_sync";
/// Tasks queued because no poller was waiting.
pub const TASKS_QUEUED: &str = "task_queue_backlog_added";
/// Workflow tasks for a sticky queue nobody polls, sent back to history for the normal queue.
pub const STICKY_WORKER_UNAVAILABLE: &str = "sticky_worker_unavailable";
