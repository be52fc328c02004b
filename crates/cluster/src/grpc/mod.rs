//! The service traits over gRPC (`proto/chronicle/{history,matching}/v1/service.proto`): a server
//! adapter that serves a local implementation, and a client that implements the trait by calling
//! a remote node. A role in another process sees exactly what an in-process caller sees, errors
//! with their Temporal details included.

mod history;
mod matching;
mod matching_ring;
mod routed;
mod wire;

pub use history::{HistoryApiService, RemoteHistory};
pub use matching::{MatchingApiService, RemoteMatching};
pub use matching_ring::RingMatching;
pub use routed::{ROUTE_DEADLINE, RoutedHistory, lazy_channel};

/// Largest internal message. A workflow-task completion or a history page can carry many
/// payloads of up to 2 MiB each (Temporal's limit), well past gRPC's 4 MiB default; history caps
/// a run at 50 MiB.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
