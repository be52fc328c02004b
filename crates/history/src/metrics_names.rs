//! Metric names of the history role, following Temporal's server names.

/// Timers fired, by kind.
pub const TIMER_TASKS_FIRED: &str = "timer_task_fired";
/// Lateness of a fired timer behind its deadline, in seconds.
pub const TIMER_TASK_LATENCY: &str = "timer_task_schedule_latency";
/// Tasks handed from the outbox to matching.
pub const TRANSFER_TASKS_DISPATCHED: &str = "transfer_task_dispatched";
/// Commands proposed to shard groups, by kind.
pub const SHARD_COMMANDS: &str = "history_shard_commands";
/// Time from proposing a command until it was applied, in seconds.
pub const SHARD_COMMAND_LATENCY: &str = "history_shard_command_latency";
/// Commands per Raft log entry (group commit), per entry.
pub const SHARD_COMMAND_BATCH_SIZE: &str = "history_shard_command_batch_size";
/// Transfer tasks (children, parent close policies, external signals and cancellations) run by
/// a shard leader, by outcome (`ok`, or `retry` when one failed and runs again).
pub const TRANSFER_TASKS_EXECUTED: &str = "transfer_task_executed";
