//! `HistoryService` on top of the engine: requests become shard commands; reads go to the
//! shard's tables after the commands they depend on were applied. This module routes each RPC
//! of the trait to its handler, one file per family of RPCs.

mod activities;
mod admin;
mod lifecycle;
mod query_update;
mod reads;
mod workflow_tasks;

use async_trait::async_trait;
use chronicle_cluster::{
    ActivityHeartbeat, ActivityOutcome, HeartbeatOutcome, HistoryService, PollerInfo, TaskRef,
};
use chronicle_proto::chronicle::history::v1 as cmd;
use chronicle_proto::chronicle::persistence::v1::NamespaceRecord;
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use chronicle_types::ApiResult;

use crate::engine::HistoryEngine;

impl HistoryEngine {
    pub(crate) async fn wait_for_change(
        &self,
        deadline: tokio::time::Instant,
        watch: &mut crate::notify::WorkflowWatch,
    ) -> bool {
        tokio::time::timeout_at(deadline, watch.changed())
            .await
            .is_ok()
    }

    /// The name of namespace `namespace_id` as this node's metadata replica holds it (answers,
    /// metric labels); empty for an unknown ID.
    pub fn namespace_name(&self, namespace_id: &str) -> String {
        self.namespace_names.name(namespace_id)
    }
}

#[async_trait]
impl HistoryService for HistoryEngine {
    async fn cluster_id(&self) -> ApiResult<String> {
        self.reported_cluster_id()
    }

    async fn register_namespace(&self, record: NamespaceRecord) -> ApiResult<()> {
        self.register_namespace_op(record).await
    }

    async fn update_namespace(&self, record: NamespaceRecord) -> ApiResult<()> {
        self.update_namespace_op(record).await
    }

    async fn namespace_by_name(&self, name: &str) -> ApiResult<NamespaceRecord> {
        self.namespace_by_name_op(name).await
    }

    async fn list_namespaces(&self) -> ApiResult<Vec<NamespaceRecord>> {
        self.list_namespaces_op().await
    }

    async fn update_search_attributes(
        &self,
        namespace: &str,
        add: std::collections::BTreeMap<String, i32>,
        remove: Vec<String>,
    ) -> ApiResult<()> {
        self.update_search_attributes_op(namespace, add, remove)
            .await
    }

    async fn start_workflow(
        &self,
        namespace_id: &str,
        request: ws::StartWorkflowExecutionRequest,
    ) -> ApiResult<ws::StartWorkflowExecutionResponse> {
        self.start_workflow_op(namespace_id, request).await
    }

    async fn signal_workflow(
        &self,
        namespace_id: &str,
        request: ws::SignalWorkflowExecutionRequest,
    ) -> ApiResult<()> {
        self.signal_workflow_op(namespace_id, request).await
    }

    async fn signal_with_start(
        &self,
        namespace_id: &str,
        request: ws::SignalWithStartWorkflowExecutionRequest,
    ) -> ApiResult<ws::SignalWithStartWorkflowExecutionResponse> {
        self.signal_with_start_op(namespace_id, request).await
    }

    async fn terminate_workflow(
        &self,
        namespace_id: &str,
        request: ws::TerminateWorkflowExecutionRequest,
    ) -> ApiResult<()> {
        self.terminate_workflow_op(namespace_id, request).await
    }

    async fn reset_workflow(
        &self,
        namespace_id: &str,
        request: ws::ResetWorkflowExecutionRequest,
    ) -> ApiResult<ws::ResetWorkflowExecutionResponse> {
        self.reset(namespace_id, request).await
    }

    async fn delete_workflow_execution(
        &self,
        namespace_id: &str,
        request: ws::DeleteWorkflowExecutionRequest,
    ) -> ApiResult<()> {
        self.delete_workflow_execution_op(namespace_id, request)
            .await
    }

    async fn delete_namespace(&self, command: cmd::DeleteNamespace) -> ApiResult<()> {
        self.delete_namespace_op(command).await
    }

    async fn request_cancel_workflow(
        &self,
        namespace_id: &str,
        request: ws::RequestCancelWorkflowExecutionRequest,
    ) -> ApiResult<()> {
        self.request_cancel_workflow_op(namespace_id, request).await
    }

    async fn describe_workflow(
        &self,
        namespace_id: &str,
        request: ws::DescribeWorkflowExecutionRequest,
    ) -> ApiResult<ws::DescribeWorkflowExecutionResponse> {
        self.describe_workflow_op(namespace_id, request).await
    }

    async fn get_history(
        &self,
        namespace_id: &str,
        request: ws::GetWorkflowExecutionHistoryRequest,
    ) -> ApiResult<ws::GetWorkflowExecutionHistoryResponse> {
        self.get_history_op(namespace_id, request).await
    }

    async fn get_history_reverse(
        &self,
        namespace_id: &str,
        request: ws::GetWorkflowExecutionHistoryReverseRequest,
    ) -> ApiResult<ws::GetWorkflowExecutionHistoryReverseResponse> {
        self.get_history_reverse_op(namespace_id, request).await
    }

    async fn list_workflows(
        &self,
        request: chronicle_proto::chronicle::history::v1::ListWorkflowsRequest,
    ) -> ApiResult<chronicle_proto::chronicle::history::v1::ListWorkflowsResponse> {
        crate::visibility::list(self, request)
    }

    async fn query_workflow(
        &self,
        namespace_id: &str,
        request: ws::QueryWorkflowRequest,
    ) -> ApiResult<ws::QueryWorkflowResponse> {
        self.query_workflow_op(namespace_id, request).await
    }

    async fn update_workflow(
        &self,
        namespace_id: &str,
        request: ws::UpdateWorkflowExecutionRequest,
    ) -> ApiResult<ws::UpdateWorkflowExecutionResponse> {
        Ok(self
            .update_workflow_impl(namespace_id, request, None)
            .await?
            .1)
    }

    async fn poll_workflow_update(
        &self,
        namespace_id: &str,
        request: ws::PollWorkflowExecutionUpdateRequest,
    ) -> ApiResult<ws::PollWorkflowExecutionUpdateResponse> {
        self.poll_workflow_update_impl(namespace_id, request).await
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
        self.update_with_start_op(namespace_id, start, update).await
    }

    async fn record_workflow_task_started(
        &self,
        task: &TaskRef,
        poller: &PollerInfo,
    ) -> ApiResult<ws::PollWorkflowTaskQueueResponse> {
        self.record_workflow_task_started_op(task, poller).await
    }

    async fn record_activity_task_started(
        &self,
        task: &TaskRef,
        poller: &PollerInfo,
    ) -> ApiResult<ws::PollActivityTaskQueueResponse> {
        self.record_activity_task_started_op(task, poller).await
    }

    async fn sticky_worker_unavailable(&self, task: &TaskRef) -> ApiResult<()> {
        self.sticky_worker_unavailable_op(task).await
    }

    async fn respond_workflow_task_completed(
        &self,
        namespace_id: &str,
        request: ws::RespondWorkflowTaskCompletedRequest,
    ) -> ApiResult<ws::RespondWorkflowTaskCompletedResponse> {
        self.respond_workflow_task_completed_op(namespace_id, request)
            .await
    }

    async fn respond_workflow_task_failed(
        &self,
        namespace_id: &str,
        request: ws::RespondWorkflowTaskFailedRequest,
    ) -> ApiResult<()> {
        self.respond_workflow_task_failed_op(namespace_id, request)
            .await
    }

    async fn respond_activity(
        &self,
        namespace_id: &str,
        outcome: ActivityOutcome,
    ) -> ApiResult<()> {
        self.respond_activity_op(namespace_id, outcome).await
    }

    async fn record_activity_heartbeat(
        &self,
        namespace_id: &str,
        heartbeat: ActivityHeartbeat,
    ) -> ApiResult<HeartbeatOutcome> {
        self.record_activity_heartbeat_op(namespace_id, heartbeat)
            .await
    }

    async fn run_operation(
        &self,
        operation: cmd::RunOperation,
    ) -> ApiResult<cmd::RunOperationResult> {
        self.run_operation_op(operation).await
    }

    async fn propose_transfer(
        &self,
        shard: u32,
        command: cmd::ShardCommand,
    ) -> ApiResult<cmd::CommandResult> {
        self.propose_transfer_op(shard, command).await
    }

    async fn schedule(
        &self,
        namespace_id: &str,
        request: cmd::ScheduleRequest,
    ) -> ApiResult<cmd::ScheduleResponse> {
        self.schedule_op(namespace_id, request).await
    }

    async fn batch(
        &self,
        namespace_id: &str,
        request: cmd::BatchRequest,
    ) -> ApiResult<cmd::BatchResponse> {
        self.batch_op(namespace_id, request).await
    }

    async fn standalone_activity(
        &self,
        namespace_id: &str,
        request: cmd::StandaloneActivityRequest,
    ) -> ApiResult<cmd::StandaloneActivityResponse> {
        self.standalone_activity_op(namespace_id, request).await
    }

    async fn nexus_endpoints(
        &self,
        request: cmd::NexusEndpointsRequest,
    ) -> ApiResult<cmd::NexusEndpointsResponse> {
        self.nexus_endpoints_op(request).await
    }

    async fn nexus_task(
        &self,
        namespace_id: &str,
        request: cmd::NexusTaskRequest,
    ) -> ApiResult<cmd::NexusTaskResponse> {
        self.nexus_task_op(namespace_id, request).await
    }
}
