//! The worker task queue RPCs of the WorkflowService: workflow, activity and Nexus task polls,
//! the answers to workflow, Nexus and query tasks, and a worker's shutdown.

use chronicle_proto::chronicle::history::v1 as hpb;
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use tonic::Request;

use super::{Res, WorkflowHandler, ok};
use crate::validate;

impl WorkflowHandler {
    pub(super) async fn poll_workflow_task_queue_op(
        &self,
        request: Request<ws::PollWorkflowTaskQueueRequest>,
    ) -> Res<ws::PollWorkflowTaskQueueResponse> {
        let r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        validate::task_queue_name(r.task_queue.as_ref().map(|t| t.name.as_str()).unwrap_or(""))?;
        validate::max_id(&r.identity, "Identity")?;
        ok(self.ctx.matching.poll_workflow_task(&ns, r).await?)
    }

    pub(super) async fn respond_workflow_task_completed_op(
        &self,
        request: Request<ws::RespondWorkflowTaskCompletedRequest>,
    ) -> Res<ws::RespondWorkflowTaskCompletedResponse> {
        let mut r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        validate::cap_command_durations(&mut r.commands);
        if let Some(sticky) = r.sticky_attributes.as_mut() {
            validate::duration(
                &mut sticky.schedule_to_start_timeout,
                "StickyAttributes.ScheduleToStartTimeout",
            )?;
        }
        crate::visibility::check_completion(&self.ctx, &ns, &r).await?;
        ok(self
            .ctx
            .history
            .respond_workflow_task_completed(&ns, r)
            .await?)
    }

    pub(super) async fn respond_workflow_task_failed_op(
        &self,
        request: Request<ws::RespondWorkflowTaskFailedRequest>,
    ) -> Res<ws::RespondWorkflowTaskFailedResponse> {
        let r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        self.ctx
            .history
            .respond_workflow_task_failed(&ns, r)
            .await?;
        ok(ws::RespondWorkflowTaskFailedResponse::default())
    }

    pub(super) async fn poll_activity_task_queue_op(
        &self,
        request: Request<ws::PollActivityTaskQueueRequest>,
    ) -> Res<ws::PollActivityTaskQueueResponse> {
        let r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        validate::task_queue_name(r.task_queue.as_ref().map(|t| t.name.as_str()).unwrap_or(""))?;
        ok(self.ctx.matching.poll_activity_task(&ns, r).await?)
    }

    /// Nexus handler workers poll here for the start requests of operations workflows call
    /// (docs/nexus.md); an idle poll answers empty at the end of its interval.
    pub(super) async fn poll_nexus_task_queue_op(
        &self,
        request: Request<ws::PollNexusTaskQueueRequest>,
    ) -> Res<ws::PollNexusTaskQueueResponse> {
        let r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        validate::task_queue_name(r.task_queue.as_ref().map(|t| t.name.as_str()).unwrap_or(""))?;
        ok(self.ctx.matching.poll_nexus_task(&ns, r).await?)
    }

    /// A handler's answer to a start request, recorded on the calling workflow's shard.
    pub(super) async fn respond_nexus_task_completed_op(
        &self,
        request: Request<ws::RespondNexusTaskCompletedRequest>,
    ) -> Res<ws::RespondNexusTaskCompletedResponse> {
        let r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        let request = hpb::NexusTaskRequest {
            namespace_id: ns.clone(),
            op: Some(hpb::nexus_task_request::Op::Completed(r)),
        };
        self.ctx.history.nexus_task(&ns, request).await?;
        ok(ws::RespondNexusTaskCompletedResponse::default())
    }

    pub(super) async fn respond_nexus_task_failed_op(
        &self,
        request: Request<ws::RespondNexusTaskFailedRequest>,
    ) -> Res<ws::RespondNexusTaskFailedResponse> {
        let r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        let request = hpb::NexusTaskRequest {
            namespace_id: ns.clone(),
            op: Some(hpb::nexus_task_request::Op::Failed(r)),
        };
        self.ctx.history.nexus_task(&ns, request).await?;
        ok(ws::RespondNexusTaskFailedResponse::default())
    }

    pub(super) async fn respond_query_task_completed_op(
        &self,
        request: Request<ws::RespondQueryTaskCompletedRequest>,
    ) -> Res<ws::RespondQueryTaskCompletedResponse> {
        let r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        self.ctx
            .matching
            .respond_query_task_completed(&ns, r)
            .await?;
        ok(ws::RespondQueryTaskCompletedResponse::default())
    }

    pub(super) async fn shutdown_worker_op(
        &self,
        request: Request<ws::ShutdownWorkerRequest>,
    ) -> Res<ws::ShutdownWorkerResponse> {
        // The worker's sticky queue will not be polled again: its cached runs' next workflow
        // tasks go to the normal queue at once instead of after the sticky schedule-to-start
        // timeout.
        let r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        if !r.sticky_task_queue.is_empty() {
            self.ctx
                .matching
                .shutdown_sticky_queue(&ns, &r.sticky_task_queue)
                .await?;
        }
        ok(ws::ShutdownWorkerResponse::default())
    }
}
