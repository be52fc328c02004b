//! The history role: owns shards. Each shard is a Raft group; its leader turns requests into
//! commands, proposes them, and answers once they are committed and applied. The leader also
//! runs the shard's timer and outbox processors.
//!
//! - [`engine`]: starting the shard groups, proposing commands, routing by workflow ID.
//! - [`apply`]: the deterministic state machine logic, one module per kind of command.
//! - [`mutable_state`]: a run's state and new events while a command is applied.
//! - [`service`]: the `HistoryService` the frontend and matching call.
//! - [`read`]: answers built from the shard's tables (history pages, describe, poll responses).
//! - [`processors`]: the leader's timer queue and outbox dispatcher.
//! - [`retention`]: deleting the runs of deleted namespaces and of closes without a retention timer.
//! - [`transfer`]: the outbox's transfer tasks, which reach other workflows (children, parent
//!   close policies, external signals and cancellations), possibly on other shards.

pub mod apply;
pub mod batch;
pub mod engine;
pub mod group_status;
pub mod membership;
pub mod metric_defs;
pub mod mutable_state;
pub mod namespace_names;
mod nexus_callbacks;
mod nexus_endpoints;
pub mod nexus_links;
mod nexus_tasks;
pub mod notify;
pub mod placement;
mod processors;
mod queries;
mod read;
mod reset;
mod retention;
pub mod schedule;
mod service;
mod shard_slots;
mod standalone_activity;
pub mod tokens;
mod transfer;
mod update;
mod visibility;
mod worker_commands;

pub use engine::{DEFAULT_MAX_PENDING_PROPOSALS, HistoryConfig, HistoryEngine, Replication};
