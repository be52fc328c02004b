//! The workflow execution RPCs of the WorkflowService: start, signal, signal-with-start,
//! terminate, request-cancel, describe, history and query, each validated before history.

use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use tonic::Request;

use super::{Res, WorkflowHandler, ok};
use crate::delete::Allowed;
use crate::validate;

impl WorkflowHandler {
    pub(super) async fn start_workflow_execution_op(
        &self,
        request: Request<ws::StartWorkflowExecutionRequest>,
    ) -> Res<ws::StartWorkflowExecutionResponse> {
        let mut r = request.into_inner();
        let ns = self.ns_in(&r.namespace, Allowed::Registered).await?;
        validate::start_request(&mut r)?;
        crate::schedule::check_cron_start(&r.cron_schedule, r.workflow_start_delay.as_ref())?;
        crate::visibility::check_search_attributes(
            &self.ctx,
            &r.namespace,
            r.search_attributes.as_ref(),
        )
        .await?;
        ok(self.ctx.history.start_workflow(&ns, r).await?)
    }

    pub(super) async fn signal_workflow_execution_op(
        &self,
        request: Request<ws::SignalWorkflowExecutionRequest>,
    ) -> Res<ws::SignalWorkflowExecutionResponse> {
        let r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        validate::required_id(
            r.workflow_execution
                .as_ref()
                .map(|e| e.workflow_id.as_str())
                .unwrap_or(""),
            "WorkflowId",
        )?;
        validate::required_id(&r.signal_name, "SignalName")?;
        validate::payload_size(&r.input, "Input")?;
        self.ctx.history.signal_workflow(&ns, r).await?;
        ok(ws::SignalWorkflowExecutionResponse::default())
    }

    pub(super) async fn signal_with_start_workflow_execution_op(
        &self,
        request: Request<ws::SignalWithStartWorkflowExecutionRequest>,
    ) -> Res<ws::SignalWithStartWorkflowExecutionResponse> {
        let mut r = request.into_inner();
        let ns = self.ns_in(&r.namespace, Allowed::Registered).await?;
        validate::required_id(&r.workflow_id, "WorkflowId")?;
        validate::required_id(&r.signal_name, "SignalName")?;
        validate::required_id(
            r.workflow_type
                .as_ref()
                .map(|t| t.name.as_str())
                .unwrap_or(""),
            "WorkflowType",
        )?;
        validate::task_queue_name(r.task_queue.as_ref().map(|t| t.name.as_str()).unwrap_or(""))?;
        validate::payload_size(&r.input, "Input")?;
        validate::payload_size(&r.signal_input, "SignalInput")?;
        validate::duration(
            &mut r.workflow_execution_timeout,
            "WorkflowExecutionTimeout",
        )?;
        validate::duration(&mut r.workflow_run_timeout, "WorkflowRunTimeout")?;
        validate::duration(&mut r.workflow_task_timeout, "WorkflowTaskTimeout")?;
        validate::duration(&mut r.workflow_start_delay, "WorkflowStartDelay")?;
        validate::retry_policy(&mut r.retry_policy, "RetryPolicy")?;
        crate::schedule::check_cron_start(&r.cron_schedule, r.workflow_start_delay.as_ref())?;
        validate::priority(r.priority.as_ref())?;
        crate::visibility::check_search_attributes(
            &self.ctx,
            &r.namespace,
            r.search_attributes.as_ref(),
        )
        .await?;
        ok(self.ctx.history.signal_with_start(&ns, r).await?)
    }

    pub(super) async fn terminate_workflow_execution_op(
        &self,
        request: Request<ws::TerminateWorkflowExecutionRequest>,
    ) -> Res<ws::TerminateWorkflowExecutionResponse> {
        let r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        validate::required_id(
            r.workflow_execution
                .as_ref()
                .map(|e| e.workflow_id.as_str())
                .unwrap_or(""),
            "WorkflowId",
        )?;
        self.ctx.history.terminate_workflow(&ns, r).await?;
        ok(ws::TerminateWorkflowExecutionResponse::default())
    }

    pub(super) async fn request_cancel_workflow_execution_op(
        &self,
        request: Request<ws::RequestCancelWorkflowExecutionRequest>,
    ) -> Res<ws::RequestCancelWorkflowExecutionResponse> {
        let r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        validate::required_id(
            r.workflow_execution
                .as_ref()
                .map(|e| e.workflow_id.as_str())
                .unwrap_or(""),
            "WorkflowId",
        )?;
        self.ctx.history.request_cancel_workflow(&ns, r).await?;
        ok(ws::RequestCancelWorkflowExecutionResponse::default())
    }

    pub(super) async fn describe_workflow_execution_op(
        &self,
        request: Request<ws::DescribeWorkflowExecutionRequest>,
    ) -> Res<ws::DescribeWorkflowExecutionResponse> {
        let r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        validate::required_id(
            r.execution
                .as_ref()
                .map(|e| e.workflow_id.as_str())
                .unwrap_or(""),
            "WorkflowId",
        )?;
        ok(self.ctx.history.describe_workflow(&ns, r).await?)
    }

    pub(super) async fn get_workflow_execution_history_op(
        &self,
        request: Request<ws::GetWorkflowExecutionHistoryRequest>,
    ) -> Res<ws::GetWorkflowExecutionHistoryResponse> {
        let r = request.into_inner();
        if r.wait_new_event {
            crate::metric_defs::set_operation("PollWorkflowExecutionHistory");
        }
        let ns = self.ns(&r.namespace).await?;
        validate::required_id(
            r.execution
                .as_ref()
                .map(|e| e.workflow_id.as_str())
                .unwrap_or(""),
            "WorkflowId",
        )?;
        ok(self.ctx.history.get_history(&ns, r).await?)
    }

    pub(super) async fn get_workflow_execution_history_reverse_op(
        &self,
        request: Request<ws::GetWorkflowExecutionHistoryReverseRequest>,
    ) -> Res<ws::GetWorkflowExecutionHistoryReverseResponse> {
        let r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        validate::required_id(
            r.execution
                .as_ref()
                .map(|e| e.workflow_id.as_str())
                .unwrap_or(""),
            "WorkflowId",
        )?;
        ok(self.ctx.history.get_history_reverse(&ns, r).await?)
    }

    pub(super) async fn query_workflow_op(
        &self,
        request: Request<ws::QueryWorkflowRequest>,
    ) -> Res<ws::QueryWorkflowResponse> {
        let r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        validate::required_id(
            r.execution
                .as_ref()
                .map(|e| e.workflow_id.as_str())
                .unwrap_or(""),
            "WorkflowId",
        )?;
        validate::required_id(
            r.query
                .as_ref()
                .map(|q| q.query_type.as_str())
                .unwrap_or(""),
            "QueryType",
        )?;
        ok(self.ctx.history.query_workflow(&ns, r).await?)
    }
}
