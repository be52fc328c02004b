//! [`MeteredHistory`]: the history service as another role calls it, measured per call.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use chronicle_proto::chronicle::history::v1 as hv1;
use chronicle_proto::chronicle::persistence::v1::NamespaceRecord;
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use chronicle_types::ApiResult;

use super::{Caller, NamespaceNames};
use crate::metric_defs::HISTORY_ROLE;
use crate::{
    ActivityHeartbeat, ActivityOutcome, ActivityResult, HeartbeatOutcome, HistoryService,
    PollerInfo, TaskRef,
};

/// The history service called by role `caller` (`frontend`, `matching`): each call Temporal's
/// roles make to history is counted under `HistoryClient<RPC>`.
pub struct MeteredHistory {
    inner: Arc<dyn HistoryService>,
    caller: Caller,
}

impl MeteredHistory {
    pub fn new(inner: Arc<dyn HistoryService>, caller: &'static str) -> Arc<Self> {
        Arc::new(Self {
            inner,
            caller: Caller::new(caller, HISTORY_ROLE, "HistoryClient"),
        })
    }

    /// Sets how the caller names namespaces it knows by ID (first call wins).
    pub fn set_namespace_names(&self, names: NamespaceNames) {
        let _ = self.caller.names.set(names);
    }

    fn ns(&self, namespace_id: &str, from_request: &str) -> Option<String> {
        self.caller.namespace(namespace_id, from_request)
    }
}

/// Temporal's history RPC of a run operation.
fn run_operation_name(operation: &hv1::RunOperation) -> &'static str {
    use hv1::run_operation::Operation;
    match &operation.operation {
        Some(Operation::PauseActivity(_)) => "PauseActivity",
        Some(Operation::UnpauseActivity(_)) => "UnpauseActivity",
        Some(Operation::ResetActivity(_)) => "ResetActivity",
        Some(Operation::UpdateActivityOptions(_)) => "UpdateActivityOptions",
        Some(Operation::ResetStickyTaskQueue(_)) => "ResetStickyTaskQueue",
        Some(Operation::UpdateWorkflowExecutionOptions(_)) => "UpdateWorkflowExecutionOptions",
        None => "RunOperation",
    }
}

#[async_trait]
impl HistoryService for MeteredHistory {
    async fn cluster_id(&self) -> ApiResult<String> {
        self.inner.cluster_id().await
    }
    async fn register_namespace(&self, record: NamespaceRecord) -> ApiResult<()> {
        self.inner.register_namespace(record).await
    }
    async fn update_namespace(&self, record: NamespaceRecord) -> ApiResult<()> {
        self.inner.update_namespace(record).await
    }
    async fn namespace_by_name(&self, name: &str) -> ApiResult<NamespaceRecord> {
        self.inner.namespace_by_name(name).await
    }
    async fn list_namespaces(&self) -> ApiResult<Vec<NamespaceRecord>> {
        self.inner.list_namespaces().await
    }
    async fn update_search_attributes(
        &self,
        namespace: &str,
        add: BTreeMap<String, i32>,
        remove: Vec<String>,
    ) -> ApiResult<()> {
        self.inner
            .update_search_attributes(namespace, add, remove)
            .await
    }

    async fn start_workflow(
        &self,
        namespace_id: &str,
        request: ws::StartWorkflowExecutionRequest,
    ) -> ApiResult<ws::StartWorkflowExecutionResponse> {
        let ns = self.ns(namespace_id, &request.namespace);
        let call = self.inner.start_workflow(namespace_id, request);
        self.caller
            .measure("StartWorkflowExecution", ns, call)
            .await
    }
    async fn signal_workflow(
        &self,
        namespace_id: &str,
        request: ws::SignalWorkflowExecutionRequest,
    ) -> ApiResult<()> {
        let ns = self.ns(namespace_id, &request.namespace);
        let call = self.inner.signal_workflow(namespace_id, request);
        self.caller
            .measure("SignalWorkflowExecution", ns, call)
            .await
    }
    async fn signal_with_start(
        &self,
        namespace_id: &str,
        request: ws::SignalWithStartWorkflowExecutionRequest,
    ) -> ApiResult<ws::SignalWithStartWorkflowExecutionResponse> {
        let ns = self.ns(namespace_id, &request.namespace);
        let call = self.inner.signal_with_start(namespace_id, request);
        self.caller
            .measure("SignalWithStartWorkflowExecution", ns, call)
            .await
    }
    async fn terminate_workflow(
        &self,
        namespace_id: &str,
        request: ws::TerminateWorkflowExecutionRequest,
    ) -> ApiResult<()> {
        let ns = self.ns(namespace_id, &request.namespace);
        let call = self.inner.terminate_workflow(namespace_id, request);
        self.caller
            .measure("TerminateWorkflowExecution", ns, call)
            .await
    }
    async fn request_cancel_workflow(
        &self,
        namespace_id: &str,
        request: ws::RequestCancelWorkflowExecutionRequest,
    ) -> ApiResult<()> {
        let ns = self.ns(namespace_id, &request.namespace);
        let call = self.inner.request_cancel_workflow(namespace_id, request);
        self.caller
            .measure("RequestCancelWorkflowExecution", ns, call)
            .await
    }
    async fn delete_workflow_execution(
        &self,
        namespace_id: &str,
        request: ws::DeleteWorkflowExecutionRequest,
    ) -> ApiResult<()> {
        let ns = self.ns(namespace_id, &request.namespace);
        let call = self.inner.delete_workflow_execution(namespace_id, request);
        self.caller
            .measure("DeleteWorkflowExecution", ns, call)
            .await
    }
    async fn delete_namespace(&self, command: hv1::DeleteNamespace) -> ApiResult<()> {
        self.inner.delete_namespace(command).await
    }
    async fn describe_workflow(
        &self,
        namespace_id: &str,
        request: ws::DescribeWorkflowExecutionRequest,
    ) -> ApiResult<ws::DescribeWorkflowExecutionResponse> {
        let ns = self.ns(namespace_id, &request.namespace);
        let call = self.inner.describe_workflow(namespace_id, request);
        self.caller
            .measure("DescribeWorkflowExecution", ns, call)
            .await
    }
    async fn get_history(
        &self,
        namespace_id: &str,
        request: ws::GetWorkflowExecutionHistoryRequest,
    ) -> ApiResult<ws::GetWorkflowExecutionHistoryResponse> {
        let ns = self.ns(namespace_id, &request.namespace);
        let call = self.inner.get_history(namespace_id, request);
        self.caller
            .measure("GetWorkflowExecutionHistory", ns, call)
            .await
    }
    async fn get_history_reverse(
        &self,
        namespace_id: &str,
        request: ws::GetWorkflowExecutionHistoryReverseRequest,
    ) -> ApiResult<ws::GetWorkflowExecutionHistoryReverseResponse> {
        let ns = self.ns(namespace_id, &request.namespace);
        let call = self.inner.get_history_reverse(namespace_id, request);
        self.caller
            .measure("GetWorkflowExecutionHistoryReverse", ns, call)
            .await
    }
    async fn list_workflows(
        &self,
        request: hv1::ListWorkflowsRequest,
    ) -> ApiResult<hv1::ListWorkflowsResponse> {
        // Temporal's frontend reads visibility from its store, not from history.
        self.inner.list_workflows(request).await
    }
    async fn query_workflow(
        &self,
        namespace_id: &str,
        request: ws::QueryWorkflowRequest,
    ) -> ApiResult<ws::QueryWorkflowResponse> {
        let ns = self.ns(namespace_id, &request.namespace);
        let call = self.inner.query_workflow(namespace_id, request);
        self.caller.measure("QueryWorkflow", ns, call).await
    }
    async fn update_workflow(
        &self,
        namespace_id: &str,
        request: ws::UpdateWorkflowExecutionRequest,
    ) -> ApiResult<ws::UpdateWorkflowExecutionResponse> {
        let ns = self.ns(namespace_id, &request.namespace);
        let call = self.inner.update_workflow(namespace_id, request);
        self.caller
            .measure("UpdateWorkflowExecution", ns, call)
            .await
    }
    async fn poll_workflow_update(
        &self,
        namespace_id: &str,
        request: ws::PollWorkflowExecutionUpdateRequest,
    ) -> ApiResult<ws::PollWorkflowExecutionUpdateResponse> {
        let ns = self.ns(namespace_id, &request.namespace);
        let call = self.inner.poll_workflow_update(namespace_id, request);
        self.caller
            .measure("PollWorkflowExecutionUpdate", ns, call)
            .await
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
        let ns = self.ns(namespace_id, &start.namespace);
        let call = self.inner.update_with_start(namespace_id, start, update);
        self.caller.measure("ExecuteMultiOperation", ns, call).await
    }
    async fn record_workflow_task_started(
        &self,
        task: &TaskRef,
        poller: &PollerInfo,
    ) -> ApiResult<ws::PollWorkflowTaskQueueResponse> {
        let ns = self.ns(&task.namespace_id, "");
        let call = self.inner.record_workflow_task_started(task, poller);
        self.caller
            .measure("RecordWorkflowTaskStarted", ns, call)
            .await
    }
    async fn record_activity_task_started(
        &self,
        task: &TaskRef,
        poller: &PollerInfo,
    ) -> ApiResult<ws::PollActivityTaskQueueResponse> {
        let ns = self.ns(&task.namespace_id, "");
        let call = self.inner.record_activity_task_started(task, poller);
        self.caller
            .measure("RecordActivityTaskStarted", ns, call)
            .await
    }
    async fn sticky_worker_unavailable(&self, task: &TaskRef) -> ApiResult<()> {
        // Temporal's matching answers history's AddWorkflowTask with StickyWorkerUnavailable
        // instead; there is no such call to count.
        self.inner.sticky_worker_unavailable(task).await
    }
    async fn respond_workflow_task_completed(
        &self,
        namespace_id: &str,
        request: ws::RespondWorkflowTaskCompletedRequest,
    ) -> ApiResult<ws::RespondWorkflowTaskCompletedResponse> {
        let ns = self.ns(namespace_id, &request.namespace);
        let call = self
            .inner
            .respond_workflow_task_completed(namespace_id, request);
        self.caller
            .measure("RespondWorkflowTaskCompleted", ns, call)
            .await
    }
    async fn respond_workflow_task_failed(
        &self,
        namespace_id: &str,
        request: ws::RespondWorkflowTaskFailedRequest,
    ) -> ApiResult<()> {
        let ns = self.ns(namespace_id, &request.namespace);
        let call = self
            .inner
            .respond_workflow_task_failed(namespace_id, request);
        self.caller
            .measure("RespondWorkflowTaskFailed", ns, call)
            .await
    }
    async fn respond_activity(
        &self,
        namespace_id: &str,
        outcome: ActivityOutcome,
    ) -> ApiResult<()> {
        let operation = match outcome.result {
            ActivityResult::Completed(_) => "RespondActivityTaskCompleted",
            ActivityResult::Failed { .. } => "RespondActivityTaskFailed",
            ActivityResult::Canceled(_) => "RespondActivityTaskCanceled",
        };
        let ns = self.ns(namespace_id, "");
        let call = self.inner.respond_activity(namespace_id, outcome);
        self.caller.measure(operation, ns, call).await
    }
    async fn record_activity_heartbeat(
        &self,
        namespace_id: &str,
        heartbeat: ActivityHeartbeat,
    ) -> ApiResult<HeartbeatOutcome> {
        let ns = self.ns(namespace_id, "");
        let call = self
            .inner
            .record_activity_heartbeat(namespace_id, heartbeat);
        self.caller
            .measure("RecordActivityTaskHeartbeat", ns, call)
            .await
    }
    async fn run_operation(
        &self,
        operation: hv1::RunOperation,
    ) -> ApiResult<hv1::RunOperationResult> {
        let name = run_operation_name(&operation);
        let ns = self.ns(&operation.namespace_id, "");
        let call = self.inner.run_operation(operation);
        self.caller.measure(name, ns, call).await
    }
    async fn propose_transfer(
        &self,
        shard: u32,
        command: hv1::ShardCommand,
    ) -> ApiResult<hv1::CommandResult> {
        self.inner.propose_transfer(shard, command).await
    }
    async fn reset_workflow(
        &self,
        namespace_id: &str,
        request: ws::ResetWorkflowExecutionRequest,
    ) -> ApiResult<ws::ResetWorkflowExecutionResponse> {
        let ns = self.ns(namespace_id, &request.namespace);
        let call = self.inner.reset_workflow(namespace_id, request);
        self.caller
            .measure("ResetWorkflowExecution", ns, call)
            .await
    }
    // Schedules, batch jobs, standalone activities and Nexus are workflows or components of
    // Temporal's own, reached through several RPCs each: no one call to count them under.
    async fn schedule(
        &self,
        namespace_id: &str,
        request: hv1::ScheduleRequest,
    ) -> ApiResult<hv1::ScheduleResponse> {
        self.inner.schedule(namespace_id, request).await
    }
    async fn batch(
        &self,
        namespace_id: &str,
        request: hv1::BatchRequest,
    ) -> ApiResult<hv1::BatchResponse> {
        self.inner.batch(namespace_id, request).await
    }
    async fn standalone_activity(
        &self,
        namespace_id: &str,
        request: hv1::StandaloneActivityRequest,
    ) -> ApiResult<hv1::StandaloneActivityResponse> {
        self.inner.standalone_activity(namespace_id, request).await
    }
    async fn nexus_endpoints(
        &self,
        request: hv1::NexusEndpointsRequest,
    ) -> ApiResult<hv1::NexusEndpointsResponse> {
        self.inner.nexus_endpoints(request).await
    }
    async fn nexus_task(
        &self,
        namespace_id: &str,
        request: hv1::NexusTaskRequest,
    ) -> ApiResult<hv1::NexusTaskResponse> {
        self.inner.nexus_task(namespace_id, request).await
    }
}
