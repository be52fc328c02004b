//! Target `workflow_service`: any bytes as the body of any `WorkflowService` or
//! `OperatorService` RPC, through tonic's decoding (the server the frontend serves, with its
//! message size limit) and the frontend handler's validation.
//!
//! The first input byte picks the method (every method of the two services, read from the
//! descriptor set the server reflects), the rest is the protobuf body. History and matching
//! are unreachable here: the namespace `default` resolves, and any call that gets past
//! validation to another role fails with `Unavailable`, as when those nodes are down. So the
//! target covers the frontend alone; the shard side has `shard_apply`.
//!
//! Invariant: no panic, no hang, and every answer is a gRPC status with a valid code.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use chronicle_cluster::{
    ActivityHeartbeat, ActivityOutcome, HistoryService, MatchingService, PollerInfo, QueryTask,
    TaskQueueKey, TaskRef,
};
use chronicle_frontend::{
    FrontendContext, NamespaceCache, OperatorHandler, WorkflowHandler, default_namespace_record,
};
use chronicle_proto::chronicle::history::v1 as hv1;
use chronicle_proto::chronicle::persistence::v1::NamespaceRecord;
use chronicle_proto::temporal::api::operatorservice::v1::operator_service_server::OperatorServiceServer;
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use chronicle_proto::temporal::api::workflowservice::v1::workflow_service_server::WorkflowServiceServer;
use chronicle_types::{ApiError, ApiResult};
use http_body_util::BodyExt;
use prost::Message;
use tower::Service;

/// History and matching as seen from a frontend whose other roles are down.
struct Unreachable {
    default_namespace: NamespaceRecord,
}

fn down() -> ApiError {
    ApiError::unavailable("history and matching are unreachable in the fuzz harness")
}

impl Unreachable {
    fn new() -> Self {
        let mut default_namespace = default_namespace_record("default", "", 3);
        // Custom search attributes, so list queries and upserts resolve some of their names.
        default_namespace.custom_search_attributes = BTreeMap::from([
            ("CustomKeyword".to_string(), 2),
            ("CustomInt".to_string(), 3),
            ("CustomText".to_string(), 1),
            ("CustomBool".to_string(), 5),
            ("CustomDatetime".to_string(), 6),
            ("CustomDouble".to_string(), 4),
            ("CustomKeywordList".to_string(), 7),
        ]);
        Self { default_namespace }
    }
}

#[async_trait]
impl HistoryService for Unreachable {
    async fn register_namespace(&self, _record: NamespaceRecord) -> ApiResult<()> {
        Err(down())
    }
    async fn update_namespace(&self, _record: NamespaceRecord) -> ApiResult<()> {
        Err(down())
    }
    async fn namespace_by_name(&self, name: &str) -> ApiResult<NamespaceRecord> {
        if name == "default" {
            Ok(self.default_namespace.clone())
        } else {
            Err(ApiError::namespace_not_found(name))
        }
    }
    async fn list_namespaces(&self) -> ApiResult<Vec<NamespaceRecord>> {
        Ok(vec![self.default_namespace.clone()])
    }
    async fn start_workflow(
        &self,
        _: &str,
        _: ws::StartWorkflowExecutionRequest,
    ) -> ApiResult<ws::StartWorkflowExecutionResponse> {
        Err(down())
    }
    async fn signal_workflow(
        &self,
        _: &str,
        _: ws::SignalWorkflowExecutionRequest,
    ) -> ApiResult<()> {
        Err(down())
    }
    async fn signal_with_start(
        &self,
        _: &str,
        _: ws::SignalWithStartWorkflowExecutionRequest,
    ) -> ApiResult<ws::SignalWithStartWorkflowExecutionResponse> {
        Err(down())
    }
    async fn terminate_workflow(
        &self,
        _: &str,
        _: ws::TerminateWorkflowExecutionRequest,
    ) -> ApiResult<()> {
        Err(down())
    }
    async fn request_cancel_workflow(
        &self,
        _: &str,
        _: ws::RequestCancelWorkflowExecutionRequest,
    ) -> ApiResult<()> {
        Err(down())
    }
    async fn describe_workflow(
        &self,
        _: &str,
        _: ws::DescribeWorkflowExecutionRequest,
    ) -> ApiResult<ws::DescribeWorkflowExecutionResponse> {
        Err(down())
    }
    async fn get_history(
        &self,
        _: &str,
        _: ws::GetWorkflowExecutionHistoryRequest,
    ) -> ApiResult<ws::GetWorkflowExecutionHistoryResponse> {
        Err(down())
    }
    async fn get_history_reverse(
        &self,
        _: &str,
        _: ws::GetWorkflowExecutionHistoryReverseRequest,
    ) -> ApiResult<ws::GetWorkflowExecutionHistoryReverseResponse> {
        Err(down())
    }
    async fn list_workflows(
        &self,
        _: hv1::ListWorkflowsRequest,
    ) -> ApiResult<hv1::ListWorkflowsResponse> {
        Err(down())
    }
    async fn query_workflow(
        &self,
        _: &str,
        _: ws::QueryWorkflowRequest,
    ) -> ApiResult<ws::QueryWorkflowResponse> {
        Err(down())
    }
    async fn record_workflow_task_started(
        &self,
        _: &TaskRef,
        _: &PollerInfo,
    ) -> ApiResult<ws::PollWorkflowTaskQueueResponse> {
        Err(down())
    }
    async fn record_activity_task_started(
        &self,
        _: &TaskRef,
        _: &PollerInfo,
    ) -> ApiResult<ws::PollActivityTaskQueueResponse> {
        Err(down())
    }
    async fn sticky_worker_unavailable(&self, _: &TaskRef) -> ApiResult<()> {
        Err(down())
    }
    async fn respond_workflow_task_completed(
        &self,
        _: &str,
        _: ws::RespondWorkflowTaskCompletedRequest,
    ) -> ApiResult<ws::RespondWorkflowTaskCompletedResponse> {
        Err(down())
    }
    async fn respond_workflow_task_failed(
        &self,
        _: &str,
        _: ws::RespondWorkflowTaskFailedRequest,
    ) -> ApiResult<()> {
        Err(down())
    }
    async fn respond_activity(&self, _: &str, _: ActivityOutcome) -> ApiResult<()> {
        Err(down())
    }
    async fn record_activity_heartbeat(
        &self,
        _: &str,
        _: ActivityHeartbeat,
    ) -> ApiResult<chronicle_cluster::HeartbeatOutcome> {
        Err(down())
    }
    async fn standalone_activity(
        &self,
        _: &str,
        _: chronicle_proto::chronicle::history::v1::StandaloneActivityRequest,
    ) -> ApiResult<chronicle_proto::chronicle::history::v1::StandaloneActivityResponse> {
        Err(down())
    }
}

#[async_trait]
impl MatchingService for Unreachable {
    async fn add_task(&self, _: TaskQueueKey, _: TaskRef) -> ApiResult<()> {
        Err(down())
    }
    async fn poll_workflow_task(
        &self,
        _: &str,
        _: ws::PollWorkflowTaskQueueRequest,
    ) -> ApiResult<ws::PollWorkflowTaskQueueResponse> {
        Err(down())
    }
    async fn poll_activity_task(
        &self,
        _: &str,
        _: ws::PollActivityTaskQueueRequest,
    ) -> ApiResult<ws::PollActivityTaskQueueResponse> {
        Err(down())
    }
    async fn query_workflow(
        &self,
        _: &str,
        _: &str,
        _: QueryTask,
        _: std::time::Duration,
    ) -> ApiResult<ws::RespondQueryTaskCompletedRequest> {
        Err(down())
    }
    async fn respond_query_task_completed(
        &self,
        _: &str,
        _: ws::RespondQueryTaskCompletedRequest,
    ) -> ApiResult<()> {
        Err(down())
    }
    async fn describe_task_queue(
        &self,
        _: &str,
        _: &str,
        _: chronicle_cluster::TaskKind,
    ) -> ApiResult<ws::DescribeTaskQueueResponse> {
        Err(down())
    }
    async fn shutdown_sticky_queue(&self, _: &str, _: &str) -> ApiResult<()> {
        Err(down())
    }
}

struct Harness {
    runtime: tokio::runtime::Runtime,
    /// gRPC paths of every method of both services, in descriptor order.
    methods: Vec<String>,
    workflow: WorkflowServiceServer<WorkflowHandler>,
    operator: OperatorServiceServer<OperatorHandler>,
}

/// Every method of the public services, as `/package.Service/Method`.
pub fn method_paths() -> Vec<String> {
    let set = prost_types::FileDescriptorSet::decode(chronicle_proto::TEMPORAL_DESCRIPTOR_SET)
        .expect("the server's descriptor set decodes");
    let mut paths = Vec::new();
    for file in &set.file {
        for service in &file.service {
            if !matches!(service.name(), "WorkflowService" | "OperatorService") {
                continue;
            }
            for method in &service.method {
                paths.push(format!(
                    "/{}.{}/{}",
                    file.package(),
                    service.name(),
                    method.name()
                ));
            }
        }
    }
    paths
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let roles = Arc::new(Unreachable::new());
        let ctx = FrontendContext {
            history: roles.clone(),
            matching: roles.clone(),
            namespaces: Arc::new(NamespaceCache::new(roles)),
            num_shards: 4,
            server_version: "fuzz".into(),
            min_namespace_retention: std::time::Duration::ZERO,
            worker_commands: true,
        };
        let max_message = chronicle_types::limits::MAX_GRPC_MESSAGE_BYTES;
        let methods = method_paths();
        assert!(methods.len() > 40, "both services' methods are listed");
        Harness {
            runtime,
            methods,
            workflow: WorkflowServiceServer::new(WorkflowHandler::new(ctx.clone()))
                .max_decoding_message_size(max_message)
                .max_encoding_message_size(max_message),
            operator: OperatorServiceServer::new(OperatorHandler::new(ctx))
                .max_decoding_message_size(max_message),
        }
    })
}

/// One gRPC call: `body` as the uncompressed message of the method picked by `selector`.
/// Returns the call's gRPC status code.
pub fn call(selector: u8, body: &[u8]) -> i32 {
    let h = harness();
    let path = &h.methods[usize::from(selector) % h.methods.len()];
    let mut frame = Vec::with_capacity(body.len() + 5);
    frame.push(0);
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(body);
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("http://frontend{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(tonic::body::Body::new(http_body_util::Full::new(
            bytes::Bytes::from(frame),
        )))
        .expect("request");
    h.runtime.block_on(async {
        let call = async {
            let response = if path.contains("OperatorService") {
                h.operator.clone().call(request).await
            } else {
                h.workflow.clone().call(request).await
            }
            .expect("tonic services are infallible");
            let (parts, body) = response.into_parts();
            let collected = body.collect().await.expect("response body");
            // A status either in the headers (trailers-only) or in the trailers.
            let headers = collected
                .trailers()
                .filter(|t| t.contains_key("grpc-status"))
                .unwrap_or(&parts.headers);
            let status = tonic::Status::from_header_map(headers)
                .map(|s| s.code() as i32)
                .unwrap_or(0);
            assert!((0..=16).contains(&status), "bad grpc-status {status}");
            status
        };
        // With the other roles unreachable nothing may wait long: a call that hangs is a bug.
        tokio::time::timeout(std::time::Duration::from_secs(20), call)
            .await
            .expect("the call answers")
    })
}

/// The fuzz target.
pub fn run(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    call(selector, body);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_start_reaches_history_and_a_bad_one_is_refused_by_validation() {
        let start = method_paths()
            .iter()
            .position(|p| p.ends_with("/StartWorkflowExecution"))
            .expect("StartWorkflowExecution") as u8;
        let good = ws::StartWorkflowExecutionRequest {
            namespace: "default".into(),
            workflow_id: "wf".into(),
            workflow_type: Some(chronicle_proto::temporal::api::common::v1::WorkflowType {
                name: "T".into(),
            }),
            task_queue: Some(chronicle_proto::temporal::api::taskqueue::v1::TaskQueue {
                name: "tq".into(),
                ..Default::default()
            }),
            request_id: "r".into(),
            ..Default::default()
        };
        assert_eq!(
            call(start, &good.encode_to_vec()),
            tonic::Code::Unavailable as i32
        );
        let no_id = ws::StartWorkflowExecutionRequest {
            workflow_id: String::new(),
            ..good
        };
        assert_eq!(
            call(start, &no_id.encode_to_vec()),
            tonic::Code::InvalidArgument as i32
        );
        // Not protobuf at all: tonic's decoder refuses it.
        assert_eq!(call(start, &[0xff, 0xff]), tonic::Code::Internal as i32);
    }
}
