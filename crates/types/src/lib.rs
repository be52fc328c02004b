//! Types every role shares: shard hashing, identifiers, Temporal's limits and the API error type.

pub mod error;
pub mod limits;
pub mod shard;
pub mod time;

pub use error::{ApiError, ApiResult};
pub use shard::{ShardId, shard_for};
