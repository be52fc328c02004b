//! The history role over gRPC: [`HistoryApiService`] serves any [`HistoryService`] as the
//! internal `HistoryApi`, and [`RemoteHistory`] is a [`HistoryService`] that calls one.

use std::sync::Arc;

use async_trait::async_trait;
use chronicle_proto::chronicle::history::v1::{
    self as hpb, history_api_client, history_api_server,
};
use chronicle_proto::chronicle::persistence::v1::NamespaceRecord;
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use chronicle_types::{ApiError, ApiResult};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::MAX_MESSAGE_BYTES;
use super::wire::required;
use crate::{
    ActivityHeartbeat, ActivityOutcome, ActivityTarget, HeartbeatOutcome, HistoryService,
    PollerInfo, TaskRef,
};

type Reply<T> = Result<Response<T>, Status>;

fn reply<T>(result: ApiResult<T>) -> Reply<T> {
    result.map(Response::new).map_err(Status::from)
}

fn empty(result: ApiResult<()>) -> Reply<hpb::Empty> {
    reply(result.map(|()| hpb::Empty {}))
}

/// Serves a [`HistoryService`] (the local history engine) as `HistoryApi`.
pub struct HistoryApiService {
    inner: Arc<dyn HistoryService>,
    num_shards: u32,
}

impl HistoryApiService {
    pub fn new(inner: Arc<dyn HistoryService>, num_shards: u32) -> Self {
        Self { inner, num_shards }
    }

    pub fn into_server(self) -> history_api_server::HistoryApiServer<Self> {
        history_api_server::HistoryApiServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }
}

#[tonic::async_trait]
impl history_api_server::HistoryApi for HistoryApiService {
    async fn describe_node(&self, _: Request<hpb::Empty>) -> Reply<hpb::HistoryNodeInfo> {
        let cluster_id = self.inner.cluster_id().await.map_err(Status::from)?;
        Ok(Response::new(hpb::HistoryNodeInfo {
            num_shards: self.num_shards,
            cluster_id,
        }))
    }

    async fn propose_transfer(
        &self,
        r: Request<hpb::ProposeTransferRequest>,
    ) -> Reply<hpb::CommandResult> {
        let r = r.into_inner();
        let command = required(r.command, "command")?;
        reply(self.inner.propose_transfer(r.shard, command).await)
    }

    async fn reset_workflow(
        &self,
        r: Request<hpb::ResetWorkflowRequest>,
    ) -> Reply<ws::ResetWorkflowExecutionResponse> {
        let r = r.into_inner();
        let request = required(r.request, "request")?;
        reply(self.inner.reset_workflow(&r.namespace_id, request).await)
    }

    async fn schedule(&self, r: Request<hpb::ScheduleRequest>) -> Reply<hpb::ScheduleResponse> {
        let r = r.into_inner();
        let namespace_id = r.namespace_id.clone();
        reply(self.inner.schedule(&namespace_id, r).await)
    }

    async fn run_operation(&self, r: Request<hpb::RunOperation>) -> Reply<hpb::RunOperationResult> {
        reply(self.inner.run_operation(r.into_inner()).await)
    }

    async fn batch(&self, r: Request<hpb::BatchRequest>) -> Reply<hpb::BatchResponse> {
        let r = r.into_inner();
        let namespace_id = r.namespace_id.clone();
        reply(self.inner.batch(&namespace_id, r).await)
    }

    async fn standalone_activity(
        &self,
        r: Request<hpb::StandaloneActivityRequest>,
    ) -> Reply<hpb::StandaloneActivityResponse> {
        let r = r.into_inner();
        let namespace_id = r.namespace_id.clone();
        reply(self.inner.standalone_activity(&namespace_id, r).await)
    }

    async fn nexus_task(&self, r: Request<hpb::NexusTaskRequest>) -> Reply<hpb::NexusTaskResponse> {
        let r = r.into_inner();
        let namespace_id = r.namespace_id.clone();
        reply(self.inner.nexus_task(&namespace_id, r).await)
    }

    async fn nexus_endpoints(
        &self,
        r: Request<hpb::NexusEndpointsRequest>,
    ) -> Reply<hpb::NexusEndpointsResponse> {
        reply(self.inner.nexus_endpoints(r.into_inner()).await)
    }

    async fn register_namespace(
        &self,
        r: Request<hpb::NamespaceRecordRequest>,
    ) -> Reply<hpb::Empty> {
        let record = required(r.into_inner().record, "record")?;
        empty(self.inner.register_namespace(record).await)
    }

    async fn update_namespace(&self, r: Request<hpb::NamespaceRecordRequest>) -> Reply<hpb::Empty> {
        let record = required(r.into_inner().record, "record")?;
        empty(self.inner.update_namespace(record).await)
    }

    async fn namespace_by_name(
        &self,
        r: Request<hpb::NamespaceByNameRequest>,
    ) -> Reply<NamespaceRecord> {
        reply(self.inner.namespace_by_name(&r.into_inner().name).await)
    }

    async fn list_namespaces(&self, _: Request<hpb::Empty>) -> Reply<hpb::ListNamespacesResponse> {
        reply(
            self.inner
                .list_namespaces()
                .await
                .map(|namespaces| hpb::ListNamespacesResponse { namespaces }),
        )
    }

    async fn start_workflow(
        &self,
        r: Request<hpb::StartWorkflowRequest>,
    ) -> Reply<ws::StartWorkflowExecutionResponse> {
        let r = r.into_inner();
        let request = required(r.request, "request")?;
        reply(self.inner.start_workflow(&r.namespace_id, request).await)
    }

    async fn signal_workflow(&self, r: Request<hpb::SignalWorkflowRequest>) -> Reply<hpb::Empty> {
        let r = r.into_inner();
        let request = required(r.request, "request")?;
        empty(self.inner.signal_workflow(&r.namespace_id, request).await)
    }

    async fn signal_with_start(
        &self,
        r: Request<hpb::SignalWithStartRequest>,
    ) -> Reply<ws::SignalWithStartWorkflowExecutionResponse> {
        let r = r.into_inner();
        let request = required(r.request, "request")?;
        reply(self.inner.signal_with_start(&r.namespace_id, request).await)
    }

    async fn delete_workflow_execution(
        &self,
        r: Request<hpb::DeleteWorkflowExecutionRequest>,
    ) -> Reply<hpb::Empty> {
        let r = r.into_inner();
        let request = required(r.request, "request")?;
        empty(
            self.inner
                .delete_workflow_execution(&r.namespace_id, request)
                .await,
        )
    }

    async fn delete_namespace(&self, r: Request<hpb::DeleteNamespace>) -> Reply<hpb::Empty> {
        empty(self.inner.delete_namespace(r.into_inner()).await)
    }

    async fn terminate_workflow(
        &self,
        r: Request<hpb::TerminateWorkflowRequest>,
    ) -> Reply<hpb::Empty> {
        let r = r.into_inner();
        let request = required(r.request, "request")?;
        empty(
            self.inner
                .terminate_workflow(&r.namespace_id, request)
                .await,
        )
    }

    async fn request_cancel_workflow(
        &self,
        r: Request<hpb::RequestCancelWorkflowRequest>,
    ) -> Reply<hpb::Empty> {
        let r = r.into_inner();
        let request = required(r.request, "request")?;
        empty(
            self.inner
                .request_cancel_workflow(&r.namespace_id, request)
                .await,
        )
    }

    async fn describe_workflow(
        &self,
        r: Request<hpb::DescribeWorkflowRequest>,
    ) -> Reply<ws::DescribeWorkflowExecutionResponse> {
        let r = r.into_inner();
        let request = required(r.request, "request")?;
        reply(self.inner.describe_workflow(&r.namespace_id, request).await)
    }

    async fn get_history(
        &self,
        r: Request<hpb::GetHistoryRequest>,
    ) -> Reply<ws::GetWorkflowExecutionHistoryResponse> {
        let r = r.into_inner();
        let request = required(r.request, "request")?;
        reply(self.inner.get_history(&r.namespace_id, request).await)
    }

    async fn get_history_reverse(
        &self,
        r: Request<hpb::GetHistoryReverseRequest>,
    ) -> Reply<ws::GetWorkflowExecutionHistoryReverseResponse> {
        let r = r.into_inner();
        let request = required(r.request, "request")?;
        reply(
            self.inner
                .get_history_reverse(&r.namespace_id, request)
                .await,
        )
    }

    async fn list_workflows(
        &self,
        r: Request<hpb::ListWorkflowsRequest>,
    ) -> Reply<hpb::ListWorkflowsResponse> {
        reply(self.inner.list_workflows(r.into_inner()).await)
    }

    async fn update_search_attributes(
        &self,
        r: Request<hpb::UpdateSearchAttributesRequest>,
    ) -> Reply<hpb::Empty> {
        let r = r.into_inner();
        empty(
            self.inner
                .update_search_attributes(&r.namespace, r.add, r.remove)
                .await,
        )
    }

    async fn query_workflow(
        &self,
        r: Request<hpb::QueryWorkflowRequest>,
    ) -> Reply<ws::QueryWorkflowResponse> {
        let r = r.into_inner();
        let request = required(r.request, "request")?;
        reply(self.inner.query_workflow(&r.namespace_id, request).await)
    }

    async fn update_workflow(
        &self,
        r: Request<hpb::UpdateWorkflowRequest>,
    ) -> Reply<ws::UpdateWorkflowExecutionResponse> {
        let r = r.into_inner();
        let request = required(r.request, "request")?;
        reply(self.inner.update_workflow(&r.namespace_id, request).await)
    }

    async fn poll_workflow_update(
        &self,
        r: Request<hpb::PollWorkflowUpdateRequest>,
    ) -> Reply<ws::PollWorkflowExecutionUpdateResponse> {
        let r = r.into_inner();
        let request = required(r.request, "request")?;
        reply(
            self.inner
                .poll_workflow_update(&r.namespace_id, request)
                .await,
        )
    }

    async fn update_with_start(
        &self,
        r: Request<hpb::UpdateWithStartRequest>,
    ) -> Reply<hpb::UpdateWithStartResponse> {
        let r = r.into_inner();
        let start = required(r.start, "start")?;
        let update = required(r.update, "update")?;
        reply(
            self.inner
                .update_with_start(&r.namespace_id, start, update)
                .await
                .map(|(start, update)| hpb::UpdateWithStartResponse {
                    start: Some(start),
                    update: Some(update),
                }),
        )
    }

    async fn record_workflow_task_started(
        &self,
        r: Request<hpb::RecordTaskStartedRequest>,
    ) -> Reply<ws::PollWorkflowTaskQueueResponse> {
        let r = r.into_inner();
        let task = TaskRef::from(required(r.task, "task")?);
        let poller = PollerInfo::from(required(r.poller, "poller")?);
        reply(
            self.inner
                .record_workflow_task_started(&task, &poller)
                .await,
        )
    }

    async fn record_activity_task_started(
        &self,
        r: Request<hpb::RecordTaskStartedRequest>,
    ) -> Reply<ws::PollActivityTaskQueueResponse> {
        let r = r.into_inner();
        let task = TaskRef::from(required(r.task, "task")?);
        let poller = PollerInfo::from(required(r.poller, "poller")?);
        reply(
            self.inner
                .record_activity_task_started(&task, &poller)
                .await,
        )
    }

    async fn sticky_worker_unavailable(&self, r: Request<hpb::TaskRef>) -> Reply<hpb::Empty> {
        let task = TaskRef::from(r.into_inner());
        empty(self.inner.sticky_worker_unavailable(&task).await)
    }

    async fn respond_workflow_task_completed(
        &self,
        r: Request<hpb::RespondWorkflowTaskCompletedRequest>,
    ) -> Reply<ws::RespondWorkflowTaskCompletedResponse> {
        let r = r.into_inner();
        let request = required(r.request, "request")?;
        reply(
            self.inner
                .respond_workflow_task_completed(&r.namespace_id, request)
                .await,
        )
    }

    async fn respond_workflow_task_failed(
        &self,
        r: Request<hpb::RespondWorkflowTaskFailedRequest>,
    ) -> Reply<hpb::Empty> {
        let r = r.into_inner();
        let request = required(r.request, "request")?;
        empty(
            self.inner
                .respond_workflow_task_failed(&r.namespace_id, request)
                .await,
        )
    }

    async fn respond_activity(&self, r: Request<hpb::RespondActivityRequest>) -> Reply<hpb::Empty> {
        let r = r.into_inner();
        let outcome = ActivityOutcome {
            target: ActivityTarget::try_from(r.target)?,
            identity: r.identity,
            result: required(r.result, "result")?.into(),
        };
        empty(self.inner.respond_activity(&r.namespace_id, outcome).await)
    }

    async fn record_activity_heartbeat(
        &self,
        r: Request<hpb::RecordActivityHeartbeatRequest>,
    ) -> Reply<hpb::RecordActivityHeartbeatResponse> {
        let r = r.into_inner();
        let heartbeat = ActivityHeartbeat {
            target: ActivityTarget::try_from(r.target)?,
            identity: r.identity,
            details: r.details,
        };
        reply(
            self.inner
                .record_activity_heartbeat(&r.namespace_id, heartbeat)
                .await
                .map(|h| hpb::RecordActivityHeartbeatResponse {
                    cancel_requested: h.cancel_requested,
                    activity_paused: h.activity_paused,
                    activity_reset: h.activity_reset,
                }),
        )
    }
}

/// A [`HistoryService`] on a history node reached over gRPC.
#[derive(Clone)]
pub struct RemoteHistory {
    client: history_api_client::HistoryApiClient<Channel>,
}

impl RemoteHistory {
    pub fn new(channel: Channel) -> Self {
        Self {
            client: history_api_client::HistoryApiClient::new(channel)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        }
    }

    fn client(&self) -> history_api_client::HistoryApiClient<Channel> {
        // Clones share the channel's connection; tonic's generated methods take `&mut self`.
        self.client.clone()
    }

    pub async fn describe_node(&self) -> ApiResult<hpb::HistoryNodeInfo> {
        answer(self.client().describe_node(hpb::Empty {}).await)
    }
}

fn answer<T>(result: Result<Response<T>, Status>) -> ApiResult<T> {
    result.map(Response::into_inner).map_err(ApiError::from)
}

#[async_trait]
impl HistoryService for RemoteHistory {
    async fn cluster_id(&self) -> ApiResult<String> {
        Ok(self.describe_node().await?.cluster_id)
    }

    async fn register_namespace(&self, record: NamespaceRecord) -> ApiResult<()> {
        let request = hpb::NamespaceRecordRequest {
            record: Some(record),
        };
        answer(self.client().register_namespace(request).await).map(drop)
    }

    async fn update_namespace(&self, record: NamespaceRecord) -> ApiResult<()> {
        let request = hpb::NamespaceRecordRequest {
            record: Some(record),
        };
        answer(self.client().update_namespace(request).await).map(drop)
    }

    async fn namespace_by_name(&self, name: &str) -> ApiResult<NamespaceRecord> {
        let request = hpb::NamespaceByNameRequest { name: name.into() };
        answer(self.client().namespace_by_name(request).await)
    }

    async fn list_namespaces(&self) -> ApiResult<Vec<NamespaceRecord>> {
        answer(self.client().list_namespaces(hpb::Empty {}).await).map(|r| r.namespaces)
    }

    async fn propose_transfer(
        &self,
        shard: u32,
        command: hpb::ShardCommand,
    ) -> ApiResult<hpb::CommandResult> {
        let request = hpb::ProposeTransferRequest {
            shard,
            command: Some(command),
        };
        answer(self.client().propose_transfer(request).await)
    }

    async fn schedule(
        &self,
        namespace_id: &str,
        mut request: hpb::ScheduleRequest,
    ) -> ApiResult<hpb::ScheduleResponse> {
        request.namespace_id = namespace_id.into();
        answer(self.client().schedule(request).await)
    }

    async fn reset_workflow(
        &self,
        namespace_id: &str,
        request: ws::ResetWorkflowExecutionRequest,
    ) -> ApiResult<ws::ResetWorkflowExecutionResponse> {
        let request = hpb::ResetWorkflowRequest {
            namespace_id: namespace_id.into(),
            request: Some(request),
        };
        answer(self.client().reset_workflow(request).await)
    }

    async fn batch(
        &self,
        namespace_id: &str,
        mut request: hpb::BatchRequest,
    ) -> ApiResult<hpb::BatchResponse> {
        request.namespace_id = namespace_id.into();
        answer(self.client().batch(request).await)
    }

    async fn standalone_activity(
        &self,
        namespace_id: &str,
        mut request: hpb::StandaloneActivityRequest,
    ) -> ApiResult<hpb::StandaloneActivityResponse> {
        request.namespace_id = namespace_id.into();
        answer(self.client().standalone_activity(request).await)
    }

    async fn nexus_task(
        &self,
        namespace_id: &str,
        mut request: hpb::NexusTaskRequest,
    ) -> ApiResult<hpb::NexusTaskResponse> {
        request.namespace_id = namespace_id.into();
        answer(self.client().nexus_task(request).await)
    }

    async fn nexus_endpoints(
        &self,
        request: hpb::NexusEndpointsRequest,
    ) -> ApiResult<hpb::NexusEndpointsResponse> {
        answer(self.client().nexus_endpoints(request).await)
    }

    async fn start_workflow(
        &self,
        namespace_id: &str,
        request: ws::StartWorkflowExecutionRequest,
    ) -> ApiResult<ws::StartWorkflowExecutionResponse> {
        let request = hpb::StartWorkflowRequest {
            namespace_id: namespace_id.into(),
            request: Some(request),
        };
        answer(self.client().start_workflow(request).await)
    }

    async fn signal_workflow(
        &self,
        namespace_id: &str,
        request: ws::SignalWorkflowExecutionRequest,
    ) -> ApiResult<()> {
        let request = hpb::SignalWorkflowRequest {
            namespace_id: namespace_id.into(),
            request: Some(request),
        };
        answer(self.client().signal_workflow(request).await).map(drop)
    }

    async fn signal_with_start(
        &self,
        namespace_id: &str,
        request: ws::SignalWithStartWorkflowExecutionRequest,
    ) -> ApiResult<ws::SignalWithStartWorkflowExecutionResponse> {
        let request = hpb::SignalWithStartRequest {
            namespace_id: namespace_id.into(),
            request: Some(request),
        };
        answer(self.client().signal_with_start(request).await)
    }

    async fn delete_workflow_execution(
        &self,
        namespace_id: &str,
        request: ws::DeleteWorkflowExecutionRequest,
    ) -> ApiResult<()> {
        let request = hpb::DeleteWorkflowExecutionRequest {
            namespace_id: namespace_id.into(),
            request: Some(request),
        };
        answer(self.client().delete_workflow_execution(request).await).map(drop)
    }

    async fn delete_namespace(&self, command: hpb::DeleteNamespace) -> ApiResult<()> {
        answer(self.client().delete_namespace(command).await).map(drop)
    }

    async fn terminate_workflow(
        &self,
        namespace_id: &str,
        request: ws::TerminateWorkflowExecutionRequest,
    ) -> ApiResult<()> {
        let request = hpb::TerminateWorkflowRequest {
            namespace_id: namespace_id.into(),
            request: Some(request),
        };
        answer(self.client().terminate_workflow(request).await).map(drop)
    }

    async fn request_cancel_workflow(
        &self,
        namespace_id: &str,
        request: ws::RequestCancelWorkflowExecutionRequest,
    ) -> ApiResult<()> {
        let request = hpb::RequestCancelWorkflowRequest {
            namespace_id: namespace_id.into(),
            request: Some(request),
        };
        answer(self.client().request_cancel_workflow(request).await).map(drop)
    }

    async fn describe_workflow(
        &self,
        namespace_id: &str,
        request: ws::DescribeWorkflowExecutionRequest,
    ) -> ApiResult<ws::DescribeWorkflowExecutionResponse> {
        let request = hpb::DescribeWorkflowRequest {
            namespace_id: namespace_id.into(),
            request: Some(request),
        };
        answer(self.client().describe_workflow(request).await)
    }

    async fn get_history(
        &self,
        namespace_id: &str,
        request: ws::GetWorkflowExecutionHistoryRequest,
    ) -> ApiResult<ws::GetWorkflowExecutionHistoryResponse> {
        let request = hpb::GetHistoryRequest {
            namespace_id: namespace_id.into(),
            request: Some(request),
        };
        answer(self.client().get_history(request).await)
    }

    async fn get_history_reverse(
        &self,
        namespace_id: &str,
        request: ws::GetWorkflowExecutionHistoryReverseRequest,
    ) -> ApiResult<ws::GetWorkflowExecutionHistoryReverseResponse> {
        let request = hpb::GetHistoryReverseRequest {
            namespace_id: namespace_id.into(),
            request: Some(request),
        };
        answer(self.client().get_history_reverse(request).await)
    }

    async fn list_workflows(
        &self,
        request: hpb::ListWorkflowsRequest,
    ) -> ApiResult<hpb::ListWorkflowsResponse> {
        answer(self.client().list_workflows(request).await)
    }

    async fn update_search_attributes(
        &self,
        namespace: &str,
        add: std::collections::BTreeMap<String, i32>,
        remove: Vec<String>,
    ) -> ApiResult<()> {
        let request = hpb::UpdateSearchAttributesRequest {
            namespace: namespace.into(),
            add,
            remove,
        };
        answer(self.client().update_search_attributes(request).await).map(|_| ())
    }

    async fn query_workflow(
        &self,
        namespace_id: &str,
        request: ws::QueryWorkflowRequest,
    ) -> ApiResult<ws::QueryWorkflowResponse> {
        let request = hpb::QueryWorkflowRequest {
            namespace_id: namespace_id.into(),
            request: Some(request),
        };
        answer(self.client().query_workflow(request).await)
    }

    async fn update_workflow(
        &self,
        namespace_id: &str,
        request: ws::UpdateWorkflowExecutionRequest,
    ) -> ApiResult<ws::UpdateWorkflowExecutionResponse> {
        let request = hpb::UpdateWorkflowRequest {
            namespace_id: namespace_id.into(),
            request: Some(request),
        };
        answer(self.client().update_workflow(request).await)
    }

    async fn poll_workflow_update(
        &self,
        namespace_id: &str,
        request: ws::PollWorkflowExecutionUpdateRequest,
    ) -> ApiResult<ws::PollWorkflowExecutionUpdateResponse> {
        let request = hpb::PollWorkflowUpdateRequest {
            namespace_id: namespace_id.into(),
            request: Some(request),
        };
        answer(self.client().poll_workflow_update(request).await)
    }

    async fn update_with_start(
        &self,
        namespace_id: &str,
        start: ws::StartWorkflowExecutionRequest,
        update: ws::UpdateWorkflowExecutionRequest,
    ) -> ApiResult<(
        ws::StartWorkflowExecutionResponse,
        ws::UpdateWorkflowExecutionResponse,
    )> {
        let request = hpb::UpdateWithStartRequest {
            namespace_id: namespace_id.into(),
            start: Some(start),
            update: Some(update),
        };
        let r = answer(self.client().update_with_start(request).await)?;
        Ok((r.start.unwrap_or_default(), r.update.unwrap_or_default()))
    }

    async fn record_workflow_task_started(
        &self,
        task: &TaskRef,
        poller: &PollerInfo,
    ) -> ApiResult<ws::PollWorkflowTaskQueueResponse> {
        let request = hpb::RecordTaskStartedRequest {
            task: Some(task.into()),
            poller: Some(poller.into()),
        };
        answer(self.client().record_workflow_task_started(request).await)
    }

    async fn record_activity_task_started(
        &self,
        task: &TaskRef,
        poller: &PollerInfo,
    ) -> ApiResult<ws::PollActivityTaskQueueResponse> {
        let request = hpb::RecordTaskStartedRequest {
            task: Some(task.into()),
            poller: Some(poller.into()),
        };
        answer(self.client().record_activity_task_started(request).await)
    }

    async fn sticky_worker_unavailable(&self, task: &TaskRef) -> ApiResult<()> {
        answer(
            self.client()
                .sticky_worker_unavailable(hpb::TaskRef::from(task))
                .await,
        )
        .map(drop)
    }

    async fn respond_workflow_task_completed(
        &self,
        namespace_id: &str,
        request: ws::RespondWorkflowTaskCompletedRequest,
    ) -> ApiResult<ws::RespondWorkflowTaskCompletedResponse> {
        let request = hpb::RespondWorkflowTaskCompletedRequest {
            namespace_id: namespace_id.into(),
            request: Some(request),
        };
        answer(self.client().respond_workflow_task_completed(request).await)
    }

    async fn respond_workflow_task_failed(
        &self,
        namespace_id: &str,
        request: ws::RespondWorkflowTaskFailedRequest,
    ) -> ApiResult<()> {
        let request = hpb::RespondWorkflowTaskFailedRequest {
            namespace_id: namespace_id.into(),
            request: Some(request),
        };
        answer(self.client().respond_workflow_task_failed(request).await).map(drop)
    }

    async fn respond_activity(
        &self,
        namespace_id: &str,
        outcome: ActivityOutcome,
    ) -> ApiResult<()> {
        let request = hpb::RespondActivityRequest {
            namespace_id: namespace_id.into(),
            target: Some(outcome.target.into()),
            identity: outcome.identity,
            result: Some(outcome.result.into()),
        };
        answer(self.client().respond_activity(request).await).map(drop)
    }

    async fn record_activity_heartbeat(
        &self,
        namespace_id: &str,
        heartbeat: ActivityHeartbeat,
    ) -> ApiResult<HeartbeatOutcome> {
        let request = hpb::RecordActivityHeartbeatRequest {
            namespace_id: namespace_id.into(),
            target: Some(heartbeat.target.into()),
            identity: heartbeat.identity,
            details: heartbeat.details,
        };
        answer(self.client().record_activity_heartbeat(request).await).map(|r| HeartbeatOutcome {
            cancel_requested: r.cancel_requested,
            activity_paused: r.activity_paused,
            activity_reset: r.activity_reset,
        })
    }

    async fn run_operation(
        &self,
        operation: hpb::RunOperation,
    ) -> ApiResult<hpb::RunOperationResult> {
        answer(self.client().run_operation(operation).await)
    }
}
