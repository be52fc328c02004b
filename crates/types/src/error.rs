//! The error every role returns to clients, and its one mapping to `tonic::Status` with
//! Temporal's error details (`grpc-status-details-bin` carrying a `google.rpc.Status`).

use chronicle_proto::google::rpc::Status as RpcStatus;
use chronicle_proto::temporal::api::errordetails::v1 as details;
use prost::{Message, Name};

pub type ApiResult<T, E = ApiError> = std::result::Result<T, E>;

const NOT_LEADER_TYPE_URL: &str = "type.googleapis.com/chronicle.history.v1.NotLeader";

#[derive(Debug, Clone, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct ApiError {
    pub code: tonic::Code,
    pub message: String,
    /// One of Temporal's `errordetails.v1` messages, packed as `Any`.
    pub detail: Option<chronicle_proto::wkt::Any>,
}

fn pack<M: Message + Name>(m: &M) -> chronicle_proto::wkt::Any {
    chronicle_proto::wkt::Any {
        type_url: M::type_url(),
        value: m.encode_to_vec(),
    }
}

impl ApiError {
    pub fn new(code: tonic::Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            detail: None,
        }
    }
    pub fn with_detail<M: Message + Name>(mut self, detail: &M) -> Self {
        self.detail = Some(pack(detail));
        self
    }
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(tonic::Code::InvalidArgument, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(tonic::Code::NotFound, message).with_detail(&details::NotFoundFailure {
            current_cluster: "active".into(),
            active_cluster: "active".into(),
        })
    }
    pub fn workflow_not_found() -> Self {
        Self::not_found("workflow execution not found")
    }
    /// Temporal's wording, which SDKs and users grep for.
    /// Temporal's NotFound for a workflow ID's current run, or (with a run ID) for one run, as
    /// its persistence layer words them.
    pub fn workflow_not_found_for(workflow_id: &str, run_id: &str) -> Self {
        if run_id.is_empty() {
            Self::not_found(format!("workflow not found for ID: {workflow_id}"))
        } else {
            Self::not_found(format!(
                "workflow execution not found for workflow ID {workflow_id:?} and run ID {run_id:?}"
            ))
        }
    }
    pub fn namespace_not_found(name: &str) -> Self {
        Self::new(
            tonic::Code::NotFound,
            format!("Namespace {name} is not found."),
        )
        .with_detail(&details::NamespaceNotFoundFailure {
            namespace: name.to_string(),
        })
    }
    pub fn namespace_already_exists(name: &str) -> Self {
        Self::new(
            tonic::Code::AlreadyExists,
            format!("Namespace {name} already exists."),
        )
        .with_detail(&details::NamespaceAlreadyExistsFailure {})
    }
    pub fn already_started(
        message: impl Into<String>,
        start_request_id: &str,
        run_id: &str,
    ) -> Self {
        Self::new(tonic::Code::AlreadyExists, message).with_detail(
            &details::WorkflowExecutionAlreadyStartedFailure {
                start_request_id: start_request_id.to_string(),
                run_id: run_id.to_string(),
                ..Default::default()
            },
        )
    }
    /// Temporal's ActivityExecutionAlreadyStarted (a standalone activity's ID is taken).
    pub fn activity_already_started(start_request_id: &str, run_id: &str) -> Self {
        Self::new(
            tonic::Code::AlreadyExists,
            "activity execution already started",
        )
        .with_detail(&details::ActivityExecutionAlreadyStartedFailure {
            start_request_id: start_request_id.to_string(),
            run_id: run_id.to_string(),
        })
    }
    pub fn already_completed() -> Self {
        Self::not_found("workflow execution already completed")
    }
    pub fn failed_precondition(message: impl Into<String>) -> Self {
        Self::new(tonic::Code::FailedPrecondition, message)
    }
    pub fn resource_exhausted(message: impl Into<String>) -> Self {
        Self::new(tonic::Code::ResourceExhausted, message)
    }
    /// RESOURCE_EXHAUSTED with Temporal's `ResourceExhaustedFailure` detail, which tells SDKs
    /// why (`cause`: RPS_LIMIT, CONCURRENT_LIMIT, SYSTEM_OVERLOADED, ...) and for whom (`scope`:
    /// the namespace or the whole system), so that they back off.
    pub fn resource_exhausted_for(
        message: impl Into<String>,
        cause: chronicle_proto::temporal::api::enums::v1::ResourceExhaustedCause,
        scope: chronicle_proto::temporal::api::enums::v1::ResourceExhaustedScope,
    ) -> Self {
        Self::new(tonic::Code::ResourceExhausted, message).with_detail(
            &details::ResourceExhaustedFailure {
                cause: cause as i32,
                scope: scope as i32,
            },
        )
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(tonic::Code::Internal, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(tonic::Code::Unavailable, message)
    }
    pub fn deadline_exceeded(message: impl Into<String>) -> Self {
        Self::new(tonic::Code::DeadlineExceeded, message)
    }

    /// Unavailable from a history node that does not lead `group`, with Chronicle's `NotLeader`
    /// detail so a router can go to the leader (`leader_addr`, when known) at once.
    pub fn not_leader(
        group: u32,
        leader_id: Option<u64>,
        leader_addr: Option<String>,
        proposed: bool,
    ) -> Self {
        let detail = chronicle_proto::chronicle::history::v1::NotLeader {
            group,
            leader_id: leader_id.unwrap_or(0),
            leader_addr: leader_addr.unwrap_or_default(),
            proposed,
            replica_addrs: Vec::new(),
        };
        Self {
            code: tonic::Code::Unavailable,
            message: format!("this history node does not lead group {group}"),
            detail: Some(chronicle_proto::wkt::Any {
                type_url: NOT_LEADER_TYPE_URL.to_string(),
                value: detail.encode_to_vec(),
            }),
        }
    }

    /// From a node that does not host `group`: Unavailable with a `NotLeader` detail naming the
    /// nodes that do (by the placement), so a router goes there instead.
    pub fn not_hosted(group: u32, replica_addrs: Vec<String>) -> Self {
        let detail = chronicle_proto::chronicle::history::v1::NotLeader {
            group,
            leader_id: 0,
            leader_addr: String::new(),
            proposed: false,
            replica_addrs,
        };
        Self {
            code: tonic::Code::Unavailable,
            message: format!("this history node does not host group {group}"),
            detail: Some(chronicle_proto::wkt::Any {
                type_url: NOT_LEADER_TYPE_URL.to_string(),
                value: detail.encode_to_vec(),
            }),
        }
    }

    /// The `NotLeader` detail, if this error carries one.
    pub fn not_leader_detail(&self) -> Option<chronicle_proto::chronicle::history::v1::NotLeader> {
        let any = self.detail.as_ref()?;
        if any.type_url != NOT_LEADER_TYPE_URL {
            return None;
        }
        Message::decode(any.value.as_slice()).ok()
    }

    /// NotFound: the workflow, run or namespace does not exist (or the run is closed).
    pub fn is_not_found(&self) -> bool {
        self.code == tonic::Code::NotFound
    }
    /// AlreadyExists: e.g. a workflow with the ID is running (`already_started`).
    pub fn is_already_exists(&self) -> bool {
        self.code == tonic::Code::AlreadyExists
    }

    /// Encoded `google.rpc.Status` for `grpc-status-details-bin`.
    pub fn details_bytes(&self) -> Vec<u8> {
        match &self.detail {
            None => Vec::new(),
            Some(any) => RpcStatus {
                code: self.code as i32,
                message: self.message.clone(),
                details: vec![any.clone()],
            }
            .encode_to_vec(),
        }
    }

    /// Rebuilds an error from `code`, `message` and encoded details (as carried in a Raft result).
    pub fn from_parts(code: i32, message: String, details: &[u8]) -> Self {
        let detail = RpcStatus::decode(details)
            .ok()
            .and_then(|s| s.details.into_iter().next());
        Self {
            code: tonic::Code::from_i32(code),
            message,
            detail,
        }
    }
}

impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> Self {
        if e.detail.is_some() {
            let details = e.details_bytes();
            tonic::Status::with_details(e.code, e.message, details.into())
        } else {
            tonic::Status::new(e.code, e.message)
        }
    }
}

impl From<tonic::Status> for ApiError {
    fn from(s: tonic::Status) -> Self {
        Self::from_parts(s.code() as i32, s.message().to_string(), s.details())
    }
}
