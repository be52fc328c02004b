//! `temporal.api.workflowservice.v1.WorkflowService`: the handler and the routing of each RPC;
//! the larger families of RPCs live in the submodules.

mod activity_tasks;
mod executions;
mod metadata;
mod task_queues;

use chronicle_proto::temporal::api::workflowservice::v1::{
    self as ws, workflow_service_server::WorkflowService,
};
use tonic::{Request, Response, Status};

use crate::FrontendContext;
use crate::delete::Allowed;

pub struct WorkflowHandler {
    ctx: FrontendContext,
}

impl WorkflowHandler {
    pub fn new(ctx: FrontendContext) -> Self {
        Self { ctx }
    }

    async fn ns(&self, name: &str) -> Result<String, Status> {
        self.ns_in(name, Allowed::RegisteredOrDeprecated).await
    }

    /// The namespace's ID, if the namespace is in a state the call accepts.
    async fn ns_in(&self, name: &str, allowed: Allowed) -> Result<String, Status> {
        crate::metric_defs::set_namespace(name);
        let info = self
            .ctx
            .namespaces
            .get(name)
            .await?
            .info
            .unwrap_or_default();
        crate::delete::check_state(name, info.state, allowed)?;
        Ok(info.id)
    }
}

type Res<T> = Result<Response<T>, Status>;

fn ok<T>(t: T) -> Res<T> {
    Ok(Response::new(t))
}

#[tonic::async_trait]
impl WorkflowService for WorkflowHandler {
    // Batch operations (crate::batch).
    async fn start_batch_operation(
        &self,
        request: Request<ws::StartBatchOperationRequest>,
    ) -> Res<ws::StartBatchOperationResponse> {
        let r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        let record = self.ctx.namespaces.get(&r.namespace).await?;
        ok(crate::batch::start(&self.ctx, &record, &ns, r).await?)
    }

    async fn describe_batch_operation(
        &self,
        request: Request<ws::DescribeBatchOperationRequest>,
    ) -> Res<ws::DescribeBatchOperationResponse> {
        let r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        ok(crate::batch::describe(&self.ctx, &ns, r).await?)
    }

    async fn list_batch_operations(
        &self,
        request: Request<ws::ListBatchOperationsRequest>,
    ) -> Res<ws::ListBatchOperationsResponse> {
        let r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        ok(crate::batch::list(&self.ctx, &ns, r).await?)
    }

    async fn stop_batch_operation(
        &self,
        request: Request<ws::StopBatchOperationRequest>,
    ) -> Res<ws::StopBatchOperationResponse> {
        let r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        ok(crate::batch::stop(&self.ctx, &ns, r).await?)
    }

    // Schedules (crate::schedule).
    async fn create_schedule(
        &self,
        request: Request<ws::CreateScheduleRequest>,
    ) -> Res<ws::CreateScheduleResponse> {
        let r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        ok(crate::schedule::create(&self.ctx, &ns, r).await?)
    }

    async fn describe_schedule(
        &self,
        request: Request<ws::DescribeScheduleRequest>,
    ) -> Res<ws::DescribeScheduleResponse> {
        let r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        ok(crate::schedule::describe(&self.ctx, &ns, r).await?)
    }

    async fn update_schedule(
        &self,
        request: Request<ws::UpdateScheduleRequest>,
    ) -> Res<ws::UpdateScheduleResponse> {
        let r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        ok(crate::schedule::update(&self.ctx, &ns, r).await?)
    }

    async fn patch_schedule(
        &self,
        request: Request<ws::PatchScheduleRequest>,
    ) -> Res<ws::PatchScheduleResponse> {
        let r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        ok(crate::schedule::patch(&self.ctx, &ns, r).await?)
    }

    async fn delete_schedule(
        &self,
        request: Request<ws::DeleteScheduleRequest>,
    ) -> Res<ws::DeleteScheduleResponse> {
        let r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        ok(crate::schedule::delete(&self.ctx, &ns, r).await?)
    }

    async fn list_schedules(
        &self,
        request: Request<ws::ListSchedulesRequest>,
    ) -> Res<ws::ListSchedulesResponse> {
        let r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        ok(crate::schedule::list(&self.ctx, &ns, r).await?)
    }

    async fn list_schedule_matching_times(
        &self,
        request: Request<ws::ListScheduleMatchingTimesRequest>,
    ) -> Res<ws::ListScheduleMatchingTimesResponse> {
        let r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        ok(crate::schedule::matching_times(&self.ctx, &ns, r).await?)
    }

    async fn get_system_info(
        &self,
        request: Request<ws::GetSystemInfoRequest>,
    ) -> Res<ws::GetSystemInfoResponse> {
        self.get_system_info_op(request).await
    }

    async fn get_cluster_info(
        &self,
        request: Request<ws::GetClusterInfoRequest>,
    ) -> Res<ws::GetClusterInfoResponse> {
        self.get_cluster_info_op(request).await
    }

    async fn register_namespace(
        &self,
        request: Request<ws::RegisterNamespaceRequest>,
    ) -> Res<ws::RegisterNamespaceResponse> {
        self.register_namespace_op(request).await
    }

    async fn describe_namespace(
        &self,
        request: Request<ws::DescribeNamespaceRequest>,
    ) -> Res<ws::DescribeNamespaceResponse> {
        self.describe_namespace_op(request).await
    }

    async fn list_namespaces(
        &self,
        request: Request<ws::ListNamespacesRequest>,
    ) -> Res<ws::ListNamespacesResponse> {
        self.list_namespaces_op(request).await
    }

    async fn update_namespace(
        &self,
        request: Request<ws::UpdateNamespaceRequest>,
    ) -> Res<ws::UpdateNamespaceResponse> {
        self.update_namespace_op(request).await
    }

    async fn start_workflow_execution(
        &self,
        request: Request<ws::StartWorkflowExecutionRequest>,
    ) -> Res<ws::StartWorkflowExecutionResponse> {
        self.start_workflow_execution_op(request).await
    }

    async fn signal_workflow_execution(
        &self,
        request: Request<ws::SignalWorkflowExecutionRequest>,
    ) -> Res<ws::SignalWorkflowExecutionResponse> {
        self.signal_workflow_execution_op(request).await
    }

    async fn signal_with_start_workflow_execution(
        &self,
        request: Request<ws::SignalWithStartWorkflowExecutionRequest>,
    ) -> Res<ws::SignalWithStartWorkflowExecutionResponse> {
        self.signal_with_start_workflow_execution_op(request).await
    }

    async fn delete_workflow_execution(
        &self,
        request: Request<ws::DeleteWorkflowExecutionRequest>,
    ) -> Res<ws::DeleteWorkflowExecutionResponse> {
        let r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        crate::delete::delete_workflow_execution(&self.ctx, &ns, r).await?;
        ok(ws::DeleteWorkflowExecutionResponse::default())
    }

    async fn deprecate_namespace(
        &self,
        request: Request<ws::DeprecateNamespaceRequest>,
    ) -> Res<ws::DeprecateNamespaceResponse> {
        let r = request.into_inner();
        crate::metric_defs::set_namespace(&r.namespace);
        crate::delete::deprecate_namespace(&self.ctx, &r.namespace).await?;
        ok(ws::DeprecateNamespaceResponse::default())
    }

    async fn terminate_workflow_execution(
        &self,
        request: Request<ws::TerminateWorkflowExecutionRequest>,
    ) -> Res<ws::TerminateWorkflowExecutionResponse> {
        self.terminate_workflow_execution_op(request).await
    }

    async fn reset_workflow_execution(
        &self,
        request: Request<ws::ResetWorkflowExecutionRequest>,
    ) -> Res<ws::ResetWorkflowExecutionResponse> {
        let mut r = request.into_inner();
        crate::reset::check_request(&mut r)?;
        let ns = self.ns(&r.namespace).await?;
        ok(crate::reset::reset_workflow_execution(&self.ctx, &ns, r).await?)
    }

    async fn request_cancel_workflow_execution(
        &self,
        request: Request<ws::RequestCancelWorkflowExecutionRequest>,
    ) -> Res<ws::RequestCancelWorkflowExecutionResponse> {
        self.request_cancel_workflow_execution_op(request).await
    }

    async fn describe_workflow_execution(
        &self,
        request: Request<ws::DescribeWorkflowExecutionRequest>,
    ) -> Res<ws::DescribeWorkflowExecutionResponse> {
        self.describe_workflow_execution_op(request).await
    }

    async fn get_workflow_execution_history(
        &self,
        request: Request<ws::GetWorkflowExecutionHistoryRequest>,
    ) -> Res<ws::GetWorkflowExecutionHistoryResponse> {
        self.get_workflow_execution_history_op(request).await
    }

    async fn get_workflow_execution_history_reverse(
        &self,
        request: Request<ws::GetWorkflowExecutionHistoryReverseRequest>,
    ) -> Res<ws::GetWorkflowExecutionHistoryReverseResponse> {
        self.get_workflow_execution_history_reverse_op(request)
            .await
    }

    async fn list_workflow_executions(
        &self,
        request: Request<ws::ListWorkflowExecutionsRequest>,
    ) -> Res<ws::ListWorkflowExecutionsResponse> {
        ok(crate::visibility::list(&self.ctx, request.into_inner()).await?)
    }

    async fn scan_workflow_executions(
        &self,
        request: Request<ws::ScanWorkflowExecutionsRequest>,
    ) -> Res<ws::ScanWorkflowExecutionsResponse> {
        ok(crate::visibility::scan(&self.ctx, request.into_inner()).await?)
    }

    async fn list_open_workflow_executions(
        &self,
        request: Request<ws::ListOpenWorkflowExecutionsRequest>,
    ) -> Res<ws::ListOpenWorkflowExecutionsResponse> {
        ok(crate::visibility::list_open(&self.ctx, request.into_inner()).await?)
    }

    async fn list_closed_workflow_executions(
        &self,
        request: Request<ws::ListClosedWorkflowExecutionsRequest>,
    ) -> Res<ws::ListClosedWorkflowExecutionsResponse> {
        ok(crate::visibility::list_closed(&self.ctx, request.into_inner()).await?)
    }

    async fn count_workflow_executions(
        &self,
        request: Request<ws::CountWorkflowExecutionsRequest>,
    ) -> Res<ws::CountWorkflowExecutionsResponse> {
        ok(crate::visibility::count(&self.ctx, request.into_inner()).await?)
    }

    async fn query_workflow(
        &self,
        request: Request<ws::QueryWorkflowRequest>,
    ) -> Res<ws::QueryWorkflowResponse> {
        self.query_workflow_op(request).await
    }

    async fn poll_workflow_task_queue(
        &self,
        request: Request<ws::PollWorkflowTaskQueueRequest>,
    ) -> Res<ws::PollWorkflowTaskQueueResponse> {
        self.poll_workflow_task_queue_op(request).await
    }

    async fn respond_workflow_task_completed(
        &self,
        request: Request<ws::RespondWorkflowTaskCompletedRequest>,
    ) -> Res<ws::RespondWorkflowTaskCompletedResponse> {
        self.respond_workflow_task_completed_op(request).await
    }

    async fn respond_workflow_task_failed(
        &self,
        request: Request<ws::RespondWorkflowTaskFailedRequest>,
    ) -> Res<ws::RespondWorkflowTaskFailedResponse> {
        self.respond_workflow_task_failed_op(request).await
    }

    async fn poll_activity_task_queue(
        &self,
        request: Request<ws::PollActivityTaskQueueRequest>,
    ) -> Res<ws::PollActivityTaskQueueResponse> {
        self.poll_activity_task_queue_op(request).await
    }

    async fn poll_nexus_task_queue(
        &self,
        request: Request<ws::PollNexusTaskQueueRequest>,
    ) -> Res<ws::PollNexusTaskQueueResponse> {
        self.poll_nexus_task_queue_op(request).await
    }

    async fn respond_nexus_task_completed(
        &self,
        request: Request<ws::RespondNexusTaskCompletedRequest>,
    ) -> Res<ws::RespondNexusTaskCompletedResponse> {
        self.respond_nexus_task_completed_op(request).await
    }

    async fn respond_nexus_task_failed(
        &self,
        request: Request<ws::RespondNexusTaskFailedRequest>,
    ) -> Res<ws::RespondNexusTaskFailedResponse> {
        self.respond_nexus_task_failed_op(request).await
    }

    async fn respond_activity_task_completed(
        &self,
        request: Request<ws::RespondActivityTaskCompletedRequest>,
    ) -> Res<ws::RespondActivityTaskCompletedResponse> {
        self.respond_activity_task_completed_op(request).await
    }

    async fn respond_activity_task_completed_by_id(
        &self,
        request: Request<ws::RespondActivityTaskCompletedByIdRequest>,
    ) -> Res<ws::RespondActivityTaskCompletedByIdResponse> {
        self.respond_activity_task_completed_by_id_op(request).await
    }

    async fn respond_activity_task_failed(
        &self,
        request: Request<ws::RespondActivityTaskFailedRequest>,
    ) -> Res<ws::RespondActivityTaskFailedResponse> {
        self.respond_activity_task_failed_op(request).await
    }

    async fn respond_activity_task_failed_by_id(
        &self,
        request: Request<ws::RespondActivityTaskFailedByIdRequest>,
    ) -> Res<ws::RespondActivityTaskFailedByIdResponse> {
        self.respond_activity_task_failed_by_id_op(request).await
    }

    async fn respond_activity_task_canceled(
        &self,
        request: Request<ws::RespondActivityTaskCanceledRequest>,
    ) -> Res<ws::RespondActivityTaskCanceledResponse> {
        self.respond_activity_task_canceled_op(request).await
    }

    async fn respond_activity_task_canceled_by_id(
        &self,
        request: Request<ws::RespondActivityTaskCanceledByIdRequest>,
    ) -> Res<ws::RespondActivityTaskCanceledByIdResponse> {
        self.respond_activity_task_canceled_by_id_op(request).await
    }

    async fn record_activity_task_heartbeat(
        &self,
        request: Request<ws::RecordActivityTaskHeartbeatRequest>,
    ) -> Res<ws::RecordActivityTaskHeartbeatResponse> {
        self.record_activity_task_heartbeat_op(request).await
    }

    async fn record_activity_task_heartbeat_by_id(
        &self,
        request: Request<ws::RecordActivityTaskHeartbeatByIdRequest>,
    ) -> Res<ws::RecordActivityTaskHeartbeatByIdResponse> {
        self.record_activity_task_heartbeat_by_id_op(request).await
    }

    async fn respond_query_task_completed(
        &self,
        request: Request<ws::RespondQueryTaskCompletedRequest>,
    ) -> Res<ws::RespondQueryTaskCompletedResponse> {
        self.respond_query_task_completed_op(request).await
    }

    async fn describe_task_queue(
        &self,
        request: Request<ws::DescribeTaskQueueRequest>,
    ) -> Res<ws::DescribeTaskQueueResponse> {
        let r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        ok(crate::activity_ops::describe_task_queue(&self.ctx, &ns, r).await?)
    }

    async fn shutdown_worker(
        &self,
        request: Request<ws::ShutdownWorkerRequest>,
    ) -> Res<ws::ShutdownWorkerResponse> {
        self.shutdown_worker_op(request).await
    }

    async fn record_worker_heartbeat(
        &self,
        request: Request<ws::RecordWorkerHeartbeatRequest>,
    ) -> Res<ws::RecordWorkerHeartbeatResponse> {
        let r = request.into_inner();
        self.ns(&r.namespace).await?;
        ok(ws::RecordWorkerHeartbeatResponse::default())
    }

    async fn update_workflow_execution(
        &self,
        request: Request<ws::UpdateWorkflowExecutionRequest>,
    ) -> Res<ws::UpdateWorkflowExecutionResponse> {
        let budget = crate::update::wait_budget(request.metadata());
        let r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        ok(crate::update::update_workflow_execution(&self.ctx, &ns, r, budget).await?)
    }

    async fn poll_workflow_execution_update(
        &self,
        request: Request<ws::PollWorkflowExecutionUpdateRequest>,
    ) -> Res<ws::PollWorkflowExecutionUpdateResponse> {
        let budget = crate::update::wait_budget(request.metadata());
        let r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        ok(crate::update::poll_workflow_execution_update(&self.ctx, &ns, r, budget).await?)
    }

    async fn execute_multi_operation(
        &self,
        request: Request<ws::ExecuteMultiOperationRequest>,
    ) -> Res<ws::ExecuteMultiOperationResponse> {
        let r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        ok(crate::update::execute_multi_operation(&self.ctx, &ns, r).await?)
    }

    async fn update_workflow_execution_options(
        &self,
        r: Request<ws::UpdateWorkflowExecutionOptionsRequest>,
    ) -> Res<ws::UpdateWorkflowExecutionOptionsResponse> {
        let r = r.into_inner();
        let ns = self.ns(&r.namespace).await?;
        ok(crate::workflow_options::update(&self.ctx, &ns, r).await?)
    }

    // Run operations and task queue reads (crate::activity_ops).
    async fn pause_activity(
        &self,
        r: Request<ws::PauseActivityRequest>,
    ) -> Res<ws::PauseActivityResponse> {
        let r = r.into_inner();
        ok(crate::activity_ops::pause(&self.ctx, &self.ns(&r.namespace).await?, r).await?)
    }
    async fn unpause_activity(
        &self,
        r: Request<ws::UnpauseActivityRequest>,
    ) -> Res<ws::UnpauseActivityResponse> {
        let r = r.into_inner();
        ok(crate::activity_ops::unpause(&self.ctx, &self.ns(&r.namespace).await?, r).await?)
    }
    async fn reset_activity(
        &self,
        r: Request<ws::ResetActivityRequest>,
    ) -> Res<ws::ResetActivityResponse> {
        let r = r.into_inner();
        ok(crate::activity_ops::reset(&self.ctx, &self.ns(&r.namespace).await?, r).await?)
    }
    async fn update_activity_options(
        &self,
        r: Request<ws::UpdateActivityOptionsRequest>,
    ) -> Res<ws::UpdateActivityOptionsResponse> {
        let r = r.into_inner();
        ok(
            crate::activity_ops::update_options(&self.ctx, &self.ns(&r.namespace).await?, r)
                .await?,
        )
    }
    async fn pause_activity_execution(
        &self,
        r: Request<ws::PauseActivityExecutionRequest>,
    ) -> Res<ws::PauseActivityExecutionResponse> {
        let r = r.into_inner();
        ok(
            crate::activity_ops::pause_execution(&self.ctx, &self.ns(&r.namespace).await?, r)
                .await?,
        )
    }
    async fn unpause_activity_execution(
        &self,
        r: Request<ws::UnpauseActivityExecutionRequest>,
    ) -> Res<ws::UnpauseActivityExecutionResponse> {
        let r = r.into_inner();
        ok(
            crate::activity_ops::unpause_execution(&self.ctx, &self.ns(&r.namespace).await?, r)
                .await?,
        )
    }
    async fn reset_activity_execution(
        &self,
        r: Request<ws::ResetActivityExecutionRequest>,
    ) -> Res<ws::ResetActivityExecutionResponse> {
        let r = r.into_inner();
        ok(
            crate::activity_ops::reset_execution(&self.ctx, &self.ns(&r.namespace).await?, r)
                .await?,
        )
    }
    async fn update_activity_execution_options(
        &self,
        r: Request<ws::UpdateActivityExecutionOptionsRequest>,
    ) -> Res<ws::UpdateActivityExecutionOptionsResponse> {
        let r = r.into_inner();
        ok(crate::activity_ops::update_execution_options(
            &self.ctx,
            &self.ns(&r.namespace).await?,
            r,
        )
        .await?)
    }
    async fn reset_sticky_task_queue(
        &self,
        r: Request<ws::ResetStickyTaskQueueRequest>,
    ) -> Res<ws::ResetStickyTaskQueueResponse> {
        let r = r.into_inner();
        ok(crate::activity_ops::reset_sticky_task_queue(
            &self.ctx,
            &self.ns(&r.namespace).await?,
            r,
        )
        .await?)
    }
    async fn list_task_queue_partitions(
        &self,
        r: Request<ws::ListTaskQueuePartitionsRequest>,
    ) -> Res<ws::ListTaskQueuePartitionsResponse> {
        let r = r.into_inner();
        let namespace_id = self.ns(&r.namespace).await?;
        ok(crate::activity_ops::list_partitions(&self.ctx, &namespace_id, r).await?)
    }

    // Standalone activity executions (crate::standalone_activity).
    async fn start_activity_execution(
        &self,
        r: Request<ws::StartActivityExecutionRequest>,
    ) -> Res<ws::StartActivityExecutionResponse> {
        let r = r.into_inner();
        let ns = self.ns_in(&r.namespace, Allowed::Registered).await?;
        ok(crate::standalone_activity::start(&self.ctx, &ns, r).await?)
    }
    async fn describe_activity_execution(
        &self,
        r: Request<ws::DescribeActivityExecutionRequest>,
    ) -> Res<ws::DescribeActivityExecutionResponse> {
        let budget = crate::update::wait_budget(r.metadata());
        let r = r.into_inner();
        let ns = self.ns(&r.namespace).await?;
        ok(crate::standalone_activity::describe(&self.ctx, &ns, r, budget).await?)
    }
    async fn poll_activity_execution(
        &self,
        r: Request<ws::PollActivityExecutionRequest>,
    ) -> Res<ws::PollActivityExecutionResponse> {
        let budget = crate::update::wait_budget(r.metadata());
        let r = r.into_inner();
        let ns = self.ns(&r.namespace).await?;
        ok(crate::standalone_activity::poll(&self.ctx, &ns, r, budget).await?)
    }
    async fn request_cancel_activity_execution(
        &self,
        r: Request<ws::RequestCancelActivityExecutionRequest>,
    ) -> Res<ws::RequestCancelActivityExecutionResponse> {
        let r = r.into_inner();
        let ns = self.ns(&r.namespace).await?;
        ok(crate::standalone_activity::cancel(&self.ctx, &ns, r).await?)
    }
    async fn terminate_activity_execution(
        &self,
        r: Request<ws::TerminateActivityExecutionRequest>,
    ) -> Res<ws::TerminateActivityExecutionResponse> {
        let r = r.into_inner();
        let ns = self.ns(&r.namespace).await?;
        ok(crate::standalone_activity::terminate(&self.ctx, &ns, r).await?)
    }
    async fn delete_activity_execution(
        &self,
        r: Request<ws::DeleteActivityExecutionRequest>,
    ) -> Res<ws::DeleteActivityExecutionResponse> {
        let r = r.into_inner();
        let ns = self.ns(&r.namespace).await?;
        ok(crate::standalone_activity::delete(&self.ctx, &ns, r).await?)
    }
    async fn list_activity_executions(
        &self,
        r: Request<ws::ListActivityExecutionsRequest>,
    ) -> Res<ws::ListActivityExecutionsResponse> {
        let r = r.into_inner();
        self.ns(&r.namespace).await?;
        ok(crate::standalone_activity::list(&self.ctx, r).await?)
    }
    async fn count_activity_executions(
        &self,
        r: Request<ws::CountActivityExecutionsRequest>,
    ) -> Res<ws::CountActivityExecutionsResponse> {
        let r = r.into_inner();
        self.ns(&r.namespace).await?;
        ok(crate::standalone_activity::count(&self.ctx, r).await?)
    }

    async fn get_search_attributes(
        &self,
        request: Request<ws::GetSearchAttributesRequest>,
    ) -> Res<ws::GetSearchAttributesResponse> {
        self.get_search_attributes_op(request).await
    }
}
