//! Types every role shares: shard hashing, identifiers, Temporal's limits and the API error type.

pub mod error;
pub mod limits;
pub mod priority;
pub mod shard;
pub mod standalone_activity;
pub mod time;
pub mod tls;

pub use error::{ApiError, ApiResult};
pub use shard::{ShardId, shard_for};

/// A new run ID: a UUID version 7 (time-ordered), as Temporal issues them.
pub fn new_run_id() -> String {
    uuid::Uuid::now_v7().to_string()
}
