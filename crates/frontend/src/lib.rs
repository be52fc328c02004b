//! The frontend role: Temporal's public `WorkflowService` and `OperatorService` over gRPC. It
//! validates requests, resolves namespaces, and forwards to history and matching through the
//! internal service traits. It holds no state of its own beyond a namespace cache.

mod activity_ops;
pub mod auth;
mod batch;
mod completion_callbacks;
mod delete;
pub mod gate;
pub mod metric_defs;
mod namespaces;
mod nexus_endpoints;
mod operator_service;
pub mod ratelimit;
mod reset;
mod schedule;
mod standalone_activity;
mod status_compat;
mod update;
mod validate;
mod visibility;
mod workflow_options;
mod workflow_service;

use std::sync::Arc;

use chronicle_cluster::{HistoryService, MatchingService};

pub use auth::{AuthConfig, Authenticator, JwksSource};
pub use delete::DEFAULT_MIN_RETENTION;
pub use gate::{Gate, GateLayer};
pub use metric_defs::ServiceMetricsLayer;
pub use namespaces::{NamespaceCache, default_namespace_record};
pub use operator_service::OperatorHandler;
pub use ratelimit::{RateLimitConfig, RateLimiter};
pub use status_compat::StatusCompatLayer;
pub use workflow_service::WorkflowHandler;

/// What the frontend needs from the rest of the node.
#[derive(Clone)]
pub struct FrontendContext {
    pub history: Arc<dyn HistoryService>,
    pub matching: Arc<dyn MatchingService>,
    pub namespaces: Arc<NamespaceCache>,
    pub num_shards: u32,
    pub server_version: String,
    /// The shortest workflow execution retention a namespace may have (Temporal's
    /// `system.namespaceMinRetentionLocal`, default one hour).
    pub min_namespace_retention: std::time::Duration,
    /// Namespaces advertise the `worker_commands` capability (Temporal's
    /// `frontend.WorkerCommandsEnabled`): SDK core then polls its control queue and names it in
    /// its activity polls (docs/worker-commands.md).
    pub worker_commands: bool,
}
