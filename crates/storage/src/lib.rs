//! RocksDB storage of a history node: one instance, column families by access pattern, keys that
//! begin with the shard ID (big-endian) so that a shard is a contiguous key range.
//!
//! # Layout
//! - [`db`]: opening the instance (column families, the data-directory lock).
//! - [`keys`]: key encodings per column family.
//! - [`log_store`]: openraft's `RaftLogStorage` over the `raft_log` and `raft_meta` families,
//!   written through the node's one log writer (`log_writer`: one batch and fsync for all groups).
//! - [`tables`]: typed reads of a shard's state, and the write batch the state machine fills.
//! - [`snapshot`]: a shard's key range dumped to and loaded from bytes (Raft snapshots).
//! - [`digest`]: a hash of a shard's state, to check that replicas applied the same log alike.

pub mod canonical;
pub mod db;
pub mod digest;
pub mod error;
pub mod failpoint;
#[cfg(feature = "fault-injection")]
pub mod fault;
pub mod keys;
pub mod log_store;
mod log_writer;
pub mod metric_defs;
pub mod purge_gate;
pub mod snapshot;
pub mod tables;
pub mod visibility;

pub use db::{Cf, Db, DbOptions};
pub use error::{StorageError, StorageResult};
pub use log_writer::LogWriterStats;
pub use purge_gate::PurgeGate;
pub use tables::{ShardBatch, ShardTables};
