//! The [`HistoryService`] of [`RoutedHistory`]: for each call, the group it goes to and whether
//! it may be sent again after an ambiguous failure; lists and schedule lists are scattered to
//! every shard's leader and merged.

use async_trait::async_trait;
use chronicle_proto::chronicle::history::v1 as hpb;
use chronicle_proto::chronicle::persistence::v1::NamespaceRecord;
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use chronicle_types::shard::METADATA_GROUP;
use chronicle_types::{ApiError, ApiResult};

use super::merge::{merge_list_pages, merge_schedule_pages};
use super::{Retry, RoutedHistory};
use crate::{
    ActivityHeartbeat, ActivityOutcome, ActivityTarget, HeartbeatOutcome, HistoryService,
    PollerInfo, TaskRef,
};

fn execution_id(e: &Option<chronicle_proto::temporal_api::common::v1::WorkflowExecution>) -> &str {
    e.as_ref().map(|e| e.workflow_id.as_str()).unwrap_or("")
}

#[async_trait]
impl HistoryService for RoutedHistory {
    /// Asked of the history nodes in turn until one has joined the cluster, then kept.
    async fn cluster_id(&self) -> ApiResult<String> {
        if let Some(id) = self.cluster_id.get() {
            return Ok(id.clone());
        }
        let mut last = ApiError::unavailable("no history node is configured");
        for addr in &self.seeds {
            match self.remote(addr)?.describe_node().await {
                Ok(info) if !info.cluster_id.is_empty() => {
                    return Ok(self.cluster_id.get_or_init(|| info.cluster_id).clone());
                }
                Ok(_) => {
                    last = ApiError::unavailable(format!(
                        "{addr} has not joined a cluster yet (run `chronicle cluster init`)"
                    ))
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    async fn register_namespace(&self, record: NamespaceRecord) -> ApiResult<()> {
        self.route(METADATA_GROUP, Retry::OnlyIfNotProposed, |h| {
            let record = record.clone();
            async move { h.register_namespace(record).await }
        })
        .await
    }

    async fn update_namespace(&self, record: NamespaceRecord) -> ApiResult<()> {
        // An update carries the whole record: applying it twice leaves the same record.
        self.route(METADATA_GROUP, Retry::Idempotent, |h| {
            let record = record.clone();
            async move { h.update_namespace(record).await }
        })
        .await
    }

    async fn namespace_by_name(&self, name: &str) -> ApiResult<NamespaceRecord> {
        self.route(METADATA_GROUP, Retry::Idempotent, |h| async move {
            h.namespace_by_name(name).await
        })
        .await
    }

    async fn list_namespaces(&self) -> ApiResult<Vec<NamespaceRecord>> {
        self.route(METADATA_GROUP, Retry::Idempotent, |h| async move {
            h.list_namespaces().await
        })
        .await
    }

    async fn update_search_attributes(
        &self,
        namespace: &str,
        add: std::collections::BTreeMap<String, i32>,
        remove: Vec<String>,
    ) -> ApiResult<()> {
        // Adding a name already registered and removing one that is gone change nothing, so
        // applying the change twice leaves the registry as once.
        self.route(METADATA_GROUP, Retry::Idempotent, |h| {
            let (add, remove) = (add.clone(), remove.clone());
            async move { h.update_search_attributes(namespace, add, remove).await }
        })
        .await
    }

    async fn start_workflow(
        &self,
        namespace_id: &str,
        request: ws::StartWorkflowExecutionRequest,
    ) -> ApiResult<ws::StartWorkflowExecutionResponse> {
        let shard = self.shard(namespace_id, &request.workflow_id).await?;
        self.route(shard, Retry::Idempotent, |h| {
            let request = request.clone();
            async move { h.start_workflow(namespace_id, request).await }
        })
        .await
    }

    async fn signal_workflow(
        &self,
        namespace_id: &str,
        request: ws::SignalWorkflowExecutionRequest,
    ) -> ApiResult<()> {
        let shard = self
            .shard(namespace_id, execution_id(&request.workflow_execution))
            .await?;
        self.route(shard, Retry::Idempotent, |h| {
            let request = request.clone();
            async move { h.signal_workflow(namespace_id, request).await }
        })
        .await
    }

    async fn signal_with_start(
        &self,
        namespace_id: &str,
        request: ws::SignalWithStartWorkflowExecutionRequest,
    ) -> ApiResult<ws::SignalWithStartWorkflowExecutionResponse> {
        let shard = self.shard(namespace_id, &request.workflow_id).await?;
        self.route(shard, Retry::Idempotent, |h| {
            let request = request.clone();
            async move { h.signal_with_start(namespace_id, request).await }
        })
        .await
    }

    async fn delete_workflow_execution(
        &self,
        namespace_id: &str,
        request: ws::DeleteWorkflowExecutionRequest,
    ) -> ApiResult<()> {
        let shard = self
            .shard(namespace_id, execution_id(&request.workflow_execution))
            .await?;
        // Deleting twice leaves the same result (the second finds nothing: NotFound), so only
        // a command that surely never reached the log is resent.
        self.route(shard, Retry::OnlyIfNotProposed, |h| {
            let request = request.clone();
            async move { h.delete_workflow_execution(namespace_id, request).await }
        })
        .await
    }

    async fn delete_namespace(
        &self,
        command: chronicle_proto::chronicle::history::v1::DeleteNamespace,
    ) -> ApiResult<()> {
        self.route(METADATA_GROUP, Retry::OnlyIfNotProposed, |h| {
            let command = command.clone();
            async move { h.delete_namespace(command).await }
        })
        .await
    }

    async fn terminate_workflow(
        &self,
        namespace_id: &str,
        request: ws::TerminateWorkflowExecutionRequest,
    ) -> ApiResult<()> {
        let shard = self
            .shard(namespace_id, execution_id(&request.workflow_execution))
            .await?;
        self.route(shard, Retry::OnlyIfNotProposed, |h| {
            let request = request.clone();
            async move { h.terminate_workflow(namespace_id, request).await }
        })
        .await
    }

    async fn reset_workflow(
        &self,
        namespace_id: &str,
        request: ws::ResetWorkflowExecutionRequest,
    ) -> ApiResult<ws::ResetWorkflowExecutionResponse> {
        let shard = self
            .shard(namespace_id, execution_id(&request.workflow_execution))
            .await?;
        // Idempotent at apply: a retry with the request's ID answers the run it created.
        self.route(shard, Retry::Idempotent, |h| {
            let request = request.clone();
            async move { h.reset_workflow(namespace_id, request).await }
        })
        .await
    }

    async fn request_cancel_workflow(
        &self,
        namespace_id: &str,
        request: ws::RequestCancelWorkflowExecutionRequest,
    ) -> ApiResult<()> {
        let shard = self
            .shard(namespace_id, execution_id(&request.workflow_execution))
            .await?;
        self.route(shard, Retry::Idempotent, |h| {
            let request = request.clone();
            async move { h.request_cancel_workflow(namespace_id, request).await }
        })
        .await
    }

    async fn describe_workflow(
        &self,
        namespace_id: &str,
        request: ws::DescribeWorkflowExecutionRequest,
    ) -> ApiResult<ws::DescribeWorkflowExecutionResponse> {
        let shard = self
            .shard(namespace_id, execution_id(&request.execution))
            .await?;
        self.route(shard, Retry::Idempotent, |h| {
            let request = request.clone();
            async move { h.describe_workflow(namespace_id, request).await }
        })
        .await
    }

    async fn get_history(
        &self,
        namespace_id: &str,
        request: ws::GetWorkflowExecutionHistoryRequest,
    ) -> ApiResult<ws::GetWorkflowExecutionHistoryResponse> {
        let shard = self
            .shard(namespace_id, execution_id(&request.execution))
            .await?;
        self.route(shard, Retry::Idempotent, |h| {
            let request = request.clone();
            async move { h.get_history(namespace_id, request).await }
        })
        .await
    }

    async fn get_history_reverse(
        &self,
        namespace_id: &str,
        request: ws::GetWorkflowExecutionHistoryReverseRequest,
    ) -> ApiResult<ws::GetWorkflowExecutionHistoryReverseResponse> {
        let shard = self
            .shard(namespace_id, execution_id(&request.execution))
            .await?;
        self.route(shard, Retry::Idempotent, |h| {
            let request = request.clone();
            async move { h.get_history_reverse(namespace_id, request).await }
        })
        .await
    }

    async fn list_workflows(
        &self,
        request: chronicle_proto::chronicle::history::v1::ListWorkflowsRequest,
    ) -> ApiResult<chronicle_proto::chronicle::history::v1::ListWorkflowsResponse> {
        // Scatter-gather: each shard is asked of its leader (whose state holds every write
        // acknowledged so far; a follower, or a node just back from a partition, may lag), then
        // the pages merge in list order. Each shard returns the first page_size runs after the
        // token, so the first page_size of the merge are the page.
        let answers = self
            .scatter(|h, shard| {
                let mut request = request.clone();
                request.shards = vec![shard];
                async move { h.list_workflows(request).await }
            })
            .await?;
        Ok(merge_list_pages(&request, answers))
    }

    async fn query_workflow(
        &self,
        namespace_id: &str,
        request: ws::QueryWorkflowRequest,
    ) -> ApiResult<ws::QueryWorkflowResponse> {
        let shard = self
            .shard(namespace_id, execution_id(&request.execution))
            .await?;
        self.route(shard, Retry::Idempotent, |h| {
            let request = request.clone();
            async move { h.query_workflow(namespace_id, request).await }
        })
        .await
    }

    async fn update_workflow(
        &self,
        namespace_id: &str,
        request: ws::UpdateWorkflowExecutionRequest,
    ) -> ApiResult<ws::UpdateWorkflowExecutionResponse> {
        let shard = self
            .shard(namespace_id, execution_id(&request.workflow_execution))
            .await?;
        // Admission de-duplicates by update ID at apply: sending it again admits nothing twice.
        self.route(shard, Retry::Idempotent, |h| {
            let request = request.clone();
            async move { h.update_workflow(namespace_id, request).await }
        })
        .await
    }

    async fn poll_workflow_update(
        &self,
        namespace_id: &str,
        request: ws::PollWorkflowExecutionUpdateRequest,
    ) -> ApiResult<ws::PollWorkflowExecutionUpdateResponse> {
        let execution = request
            .update_ref
            .as_ref()
            .and_then(|r| r.workflow_execution.clone());
        let shard = self.shard(namespace_id, execution_id(&execution)).await?;
        self.route(shard, Retry::Idempotent, |h| {
            let request = request.clone();
            async move { h.poll_workflow_update(namespace_id, request).await }
        })
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
        let shard = self.shard(namespace_id, &start.workflow_id).await?;
        // The start de-duplicates by request ID and the update by update ID, at apply.
        self.route(shard, Retry::Idempotent, |h| {
            let (start, update) = (start.clone(), update.clone());
            async move { h.update_with_start(namespace_id, start, update).await }
        })
        .await
    }

    async fn record_workflow_task_started(
        &self,
        task: &TaskRef,
        poller: &PollerInfo,
    ) -> ApiResult<ws::PollWorkflowTaskQueueResponse> {
        self.route(task.shard, Retry::Idempotent, |h| async move {
            h.record_workflow_task_started(task, poller).await
        })
        .await
    }

    async fn record_activity_task_started(
        &self,
        task: &TaskRef,
        poller: &PollerInfo,
    ) -> ApiResult<ws::PollActivityTaskQueueResponse> {
        self.route(task.shard, Retry::Idempotent, |h| async move {
            h.record_activity_task_started(task, poller).await
        })
        .await
    }

    async fn sticky_worker_unavailable(&self, task: &TaskRef) -> ApiResult<()> {
        self.route(task.shard, Retry::Idempotent, |h| async move {
            h.sticky_worker_unavailable(task).await
        })
        .await
    }

    async fn respond_workflow_task_completed(
        &self,
        namespace_id: &str,
        request: ws::RespondWorkflowTaskCompletedRequest,
    ) -> ApiResult<ws::RespondWorkflowTaskCompletedResponse> {
        let shard = self.token_shard(&request.task_token).await?;
        self.route(shard, Retry::Idempotent, |h| {
            let request = request.clone();
            async move {
                h.respond_workflow_task_completed(namespace_id, request)
                    .await
            }
        })
        .await
    }

    async fn respond_workflow_task_failed(
        &self,
        namespace_id: &str,
        request: ws::RespondWorkflowTaskFailedRequest,
    ) -> ApiResult<()> {
        let shard = self.token_shard(&request.task_token).await?;
        self.route(shard, Retry::Idempotent, |h| {
            let request = request.clone();
            async move { h.respond_workflow_task_failed(namespace_id, request).await }
        })
        .await
    }

    async fn respond_activity(
        &self,
        namespace_id: &str,
        outcome: ActivityOutcome,
    ) -> ApiResult<()> {
        let shard = match &outcome.target {
            ActivityTarget::Token(token) => self.token_shard(token).await?,
            ActivityTarget::ById { workflow_id, .. } => {
                self.shard(namespace_id, workflow_id).await?
            }
        };
        self.route(shard, Retry::Idempotent, |h| {
            let outcome = outcome.clone();
            async move { h.respond_activity(namespace_id, outcome).await }
        })
        .await
    }

    async fn record_activity_heartbeat(
        &self,
        namespace_id: &str,
        heartbeat: ActivityHeartbeat,
    ) -> ApiResult<HeartbeatOutcome> {
        let shard = match &heartbeat.target {
            ActivityTarget::Token(token) => self.token_shard(token).await?,
            ActivityTarget::ById { workflow_id, .. } => {
                self.shard(namespace_id, workflow_id).await?
            }
        };
        self.route(shard, Retry::Idempotent, |h| {
            let heartbeat = heartbeat.clone();
            async move { h.record_activity_heartbeat(namespace_id, heartbeat).await }
        })
        .await
    }

    async fn run_operation(
        &self,
        operation: hpb::RunOperation,
    ) -> ApiResult<hpb::RunOperationResult> {
        // Not idempotent at apply (a reset applied twice resets twice; a pause resent would be
        // "already paused"): sent again only when it never reached the log.
        let shard = self
            .shard(&operation.namespace_id, &operation.workflow_id)
            .await?;
        self.route(shard, Retry::OnlyIfNotProposed, |h| {
            let operation = operation.clone();
            async move { h.run_operation(operation).await }
        })
        .await
    }

    async fn propose_transfer(
        &self,
        shard: u32,
        command: hpb::ShardCommand,
    ) -> ApiResult<hpb::CommandResult> {
        self.route(shard, Retry::Idempotent, |h| {
            let command = command.clone();
            async move { h.propose_transfer(shard, command).await }
        })
        .await
    }

    async fn batch(
        &self,
        namespace_id: &str,
        request: hpb::BatchRequest,
    ) -> ApiResult<hpb::BatchResponse> {
        self.route_batch(namespace_id, request).await
    }

    async fn standalone_activity(
        &self,
        namespace_id: &str,
        request: hpb::StandaloneActivityRequest,
    ) -> ApiResult<hpb::StandaloneActivityResponse> {
        use hpb::standalone_activity_request::Op;
        let (activity_id, retry) = match &request.op {
            // A start de-duplicates by its request ID; reads may always be asked again.
            Some(Op::Start(r)) => (r.activity_id.as_str(), Retry::Idempotent),
            Some(Op::Describe(r)) => (r.activity_id.as_str(), Retry::Idempotent),
            Some(Op::Poll(r)) => (r.activity_id.as_str(), Retry::Idempotent),
            // Cancellations and terminations de-duplicate by request ID only when one is given.
            Some(Op::Cancel(r)) => (r.activity_id.as_str(), Retry::OnlyIfNotProposed),
            Some(Op::Terminate(r)) => (r.activity_id.as_str(), Retry::OnlyIfNotProposed),
            Some(Op::Delete(r)) => (r.activity_id.as_str(), Retry::OnlyIfNotProposed),
            None => ("", Retry::OnlyIfNotProposed),
        };
        let key = chronicle_types::standalone_activity::key(activity_id);
        let shard = self.shard(namespace_id, &key).await?;
        self.route(shard, retry, |h| {
            let request = request.clone();
            async move { h.standalone_activity(namespace_id, request).await }
        })
        .await
    }

    async fn nexus_task(
        &self,
        namespace_id: &str,
        request: hpb::NexusTaskRequest,
    ) -> ApiResult<hpb::NexusTaskResponse> {
        use hpb::nexus_task_request::Op;
        let (shard, retry) = match &request.op {
            // Taking a task only reads the caller's run.
            Some(Op::Started(r)) => (
                r.task.as_ref().map(|t| t.shard).ok_or_else(|| {
                    ApiError::invalid_argument("the Nexus task to start is missing")
                })?,
                Retry::Idempotent,
            ),
            // An answer is checked at apply against the pending operation, so a resent one
            // changes nothing more.
            Some(Op::Completed(r)) => (self.token_shard(&r.task_token).await?, Retry::Idempotent),
            Some(Op::Failed(r)) => (self.token_shard(&r.task_token).await?, Retry::Idempotent),
            None => {
                return Err(ApiError::invalid_argument(
                    "the Nexus task request is empty",
                ));
            }
        };
        self.route(shard, retry, |h| {
            let request = request.clone();
            async move { h.nexus_task(namespace_id, request).await }
        })
        .await
    }

    async fn nexus_endpoints(
        &self,
        request: hpb::NexusEndpointsRequest,
    ) -> ApiResult<hpb::NexusEndpointsResponse> {
        use hpb::nexus_endpoints_request::Op;
        // A change applied twice would fail the second time (name taken, version moved on,
        // ID gone): resend it only if it never reached the log. Reads may always be resent.
        let retry = match &request.op {
            Some(Op::Change(_)) | None => Retry::OnlyIfNotProposed,
            Some(Op::GetId(_)) | Some(Op::List(_)) => Retry::Idempotent,
        };
        self.route(METADATA_GROUP, retry, |h| {
            let request = request.clone();
            async move { h.nexus_endpoints(request).await }
        })
        .await
    }

    async fn schedule(
        &self,
        namespace_id: &str,
        request: hpb::ScheduleRequest,
    ) -> ApiResult<hpb::ScheduleResponse> {
        use hpb::schedule_request::Op;
        let schedule_id = match &request.op {
            Some(Op::Create(r)) => Some(r.schedule_id.as_str()),
            Some(Op::Describe(r)) => Some(r.schedule_id.as_str()),
            Some(Op::Update(r)) => Some(r.schedule_id.as_str()),
            Some(Op::Patch(r)) => Some(r.schedule_id.as_str()),
            Some(Op::Delete(r)) => Some(r.schedule_id.as_str()),
            Some(Op::MatchingTimes(r)) => Some(r.schedule_id.as_str()),
            Some(Op::List(_)) | None => None,
        };
        // Creates, updates and patches de-duplicate by request ID at apply; a delete resent
        // after it applied would answer NotFound.
        let retry = if matches!(request.op, Some(Op::Delete(_))) {
            Retry::OnlyIfNotProposed
        } else {
            Retry::Idempotent
        };
        if let Some(Op::List(list)) = &request.op {
            // Scatter to each shard's leader, then merge in schedule ID order.
            let answers = self
                .scatter(|h, shard| {
                    let mut request = request.clone();
                    request.shards = vec![shard];
                    async move { h.schedule(namespace_id, request).await }
                })
                .await?;
            return Ok(merge_schedule_pages(list.maximum_page_size, answers));
        }
        let group = match schedule_id {
            Some(id) => self.shard(namespace_id, id).await?,
            None => METADATA_GROUP,
        };
        self.route(group, retry, |h| {
            let request = request.clone();
            async move { h.schedule(namespace_id, request).await }
        })
        .await
    }
}
