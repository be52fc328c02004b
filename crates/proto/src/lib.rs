//! Protocol types for every role.
//!
//! - [`temporal`]: Temporal's public API. Messages come from the `temporalio-protos` crate; the
//!   `WorkflowService` and `OperatorService` server and client stubs are generated here.
//! - [`chronicle`]: Chronicle's internal protos from `proto/`: Raft commands of a shard and the
//!   durable state the shard state machine writes, and the Raft transport between history nodes.

#![allow(clippy::all, missing_docs, unreachable_pub)]

/// Well-known types (`Timestamp`, `Duration`, `Any`...) as Temporal's messages embed them.
pub use prost_wkt_types as wkt;
pub use temporalio_protos::google;
pub use temporalio_protos::temporal::api as temporal_api;

/// Generated gRPC stubs for Temporal's services.
pub mod temporal {
    pub mod api {
        pub mod workflowservice {
            pub mod v1 {
                pub use temporalio_protos::temporal::api::workflowservice::v1::*;
                tonic::include_proto!("temporal.api.workflowservice.v1");
            }
        }
        pub mod operatorservice {
            pub mod v1 {
                pub use temporalio_protos::temporal::api::operatorservice::v1::*;
                tonic::include_proto!("temporal.api.operatorservice.v1");
            }
        }
        pub use temporalio_protos::temporal::api::{
            activity, batch, command, common, enums, errordetails, failure, filter, history,
            namespace, nexus, nexusservices, protocol, query, replication, schedule, sdk,
            taskqueue, update, version, worker, workflow,
        };
    }
}

pub mod chronicle {
    pub mod persistence {
        pub mod v1 {
            include!(concat!(
                env!("OUT_DIR"),
                "/internal/chronicle.persistence.v1.rs"
            ));
        }
    }
    pub mod history {
        pub mod v1 {
            include!(concat!(
                env!("OUT_DIR"),
                "/internal/chronicle.history.v1.rs"
            ));
        }
    }
    pub mod matching {
        pub mod v1 {
            include!(concat!(
                env!("OUT_DIR"),
                "/internal/chronicle.matching.v1.rs"
            ));
        }
    }
    /// Cluster administration of history nodes (`AdminApi`).
    pub mod admin {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/internal/chronicle.admin.v1.rs"));
        }
    }
    /// Raft replication between history nodes (`RaftTransport`).
    pub mod raft {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/internal/chronicle.raft.v1.rs"));
        }
    }
}

/// Descriptor set of Chronicle's internal protos (for gRPC reflection).
pub const CHRONICLE_DESCRIPTOR_SET: &[u8] =
    tonic::include_file_descriptor_set!("chronicle_descriptor");

/// Descriptor set of Temporal's API (for gRPC reflection).
pub const TEMPORAL_DESCRIPTOR_SET: &[u8] =
    tonic::include_file_descriptor_set!("temporal_descriptor");
