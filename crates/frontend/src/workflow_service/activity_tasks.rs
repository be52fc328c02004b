//! The activity task RPCs of the WorkflowService: a worker's completions, failures,
//! cancellations and heartbeats, by task token or by ID.

use chronicle_cluster::{ActivityHeartbeat, ActivityOutcome, ActivityResult, ActivityTarget};
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use tonic::Request;

use super::{Res, WorkflowHandler, ok};
use crate::validate;

impl WorkflowHandler {
    pub(super) async fn respond_activity_task_completed_op(
        &self,
        request: Request<ws::RespondActivityTaskCompletedRequest>,
    ) -> Res<ws::RespondActivityTaskCompletedResponse> {
        let r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        validate::payload_size(&r.result, "Result")?;
        let outcome = ActivityOutcome {
            target: ActivityTarget::Token(r.task_token),
            identity: r.identity,
            result: ActivityResult::Completed(r.result),
        };
        self.ctx.history.respond_activity(&ns, outcome).await?;
        ok(ws::RespondActivityTaskCompletedResponse::default())
    }

    pub(super) async fn respond_activity_task_completed_by_id_op(
        &self,
        request: Request<ws::RespondActivityTaskCompletedByIdRequest>,
    ) -> Res<ws::RespondActivityTaskCompletedByIdResponse> {
        let r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        validate::payload_size(&r.result, "Result")?;
        let target =
            crate::standalone_activity::by_id_target(r.workflow_id, r.run_id, r.activity_id);
        self.ctx
            .history
            .respond_activity(
                &ns,
                ActivityOutcome {
                    target,
                    identity: r.identity,
                    result: ActivityResult::Completed(r.result),
                },
            )
            .await?;
        ok(ws::RespondActivityTaskCompletedByIdResponse::default())
    }

    pub(super) async fn respond_activity_task_failed_op(
        &self,
        request: Request<ws::RespondActivityTaskFailedRequest>,
    ) -> Res<ws::RespondActivityTaskFailedResponse> {
        let mut r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        validate::failure_durations(&mut r.failure)?;
        let result = ActivityResult::Failed {
            failure: r.failure,
            last_heartbeat_details: r.last_heartbeat_details,
        };
        self.ctx
            .history
            .respond_activity(
                &ns,
                ActivityOutcome {
                    target: ActivityTarget::Token(r.task_token),
                    identity: r.identity,
                    result,
                },
            )
            .await?;
        ok(ws::RespondActivityTaskFailedResponse::default())
    }

    pub(super) async fn respond_activity_task_failed_by_id_op(
        &self,
        request: Request<ws::RespondActivityTaskFailedByIdRequest>,
    ) -> Res<ws::RespondActivityTaskFailedByIdResponse> {
        let mut r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        validate::failure_durations(&mut r.failure)?;
        let target =
            crate::standalone_activity::by_id_target(r.workflow_id, r.run_id, r.activity_id);
        let result = ActivityResult::Failed {
            failure: r.failure,
            last_heartbeat_details: r.last_heartbeat_details,
        };
        self.ctx
            .history
            .respond_activity(
                &ns,
                ActivityOutcome {
                    target,
                    identity: r.identity,
                    result,
                },
            )
            .await?;
        ok(ws::RespondActivityTaskFailedByIdResponse::default())
    }

    pub(super) async fn respond_activity_task_canceled_op(
        &self,
        request: Request<ws::RespondActivityTaskCanceledRequest>,
    ) -> Res<ws::RespondActivityTaskCanceledResponse> {
        let r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        let outcome = ActivityOutcome {
            target: ActivityTarget::Token(r.task_token),
            identity: r.identity,
            result: ActivityResult::Canceled(r.details),
        };
        self.ctx.history.respond_activity(&ns, outcome).await?;
        ok(ws::RespondActivityTaskCanceledResponse::default())
    }

    pub(super) async fn respond_activity_task_canceled_by_id_op(
        &self,
        request: Request<ws::RespondActivityTaskCanceledByIdRequest>,
    ) -> Res<ws::RespondActivityTaskCanceledByIdResponse> {
        let r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        let target =
            crate::standalone_activity::by_id_target(r.workflow_id, r.run_id, r.activity_id);
        self.ctx
            .history
            .respond_activity(
                &ns,
                ActivityOutcome {
                    target,
                    identity: r.identity,
                    result: ActivityResult::Canceled(r.details),
                },
            )
            .await?;
        ok(ws::RespondActivityTaskCanceledByIdResponse::default())
    }

    pub(super) async fn record_activity_task_heartbeat_op(
        &self,
        request: Request<ws::RecordActivityTaskHeartbeatRequest>,
    ) -> Res<ws::RecordActivityTaskHeartbeatResponse> {
        let r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        validate::payload_size(&r.details, "Details")?;
        let heartbeat = ActivityHeartbeat {
            target: ActivityTarget::Token(r.task_token),
            identity: r.identity,
            details: r.details,
        };
        let h = self
            .ctx
            .history
            .record_activity_heartbeat(&ns, heartbeat)
            .await?;
        ok(ws::RecordActivityTaskHeartbeatResponse {
            cancel_requested: h.cancel_requested,
            activity_paused: h.activity_paused,
            activity_reset: h.activity_reset,
        })
    }

    pub(super) async fn record_activity_task_heartbeat_by_id_op(
        &self,
        request: Request<ws::RecordActivityTaskHeartbeatByIdRequest>,
    ) -> Res<ws::RecordActivityTaskHeartbeatByIdResponse> {
        let r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        validate::payload_size(&r.details, "Details")?;
        let target =
            crate::standalone_activity::by_id_target(r.workflow_id, r.run_id, r.activity_id);
        let heartbeat = ActivityHeartbeat {
            target,
            identity: r.identity,
            details: r.details,
        };
        let h = self
            .ctx
            .history
            .record_activity_heartbeat(&ns, heartbeat)
            .await?;
        ok(ws::RecordActivityTaskHeartbeatByIdResponse {
            cancel_requested: h.cancel_requested,
            activity_paused: h.activity_paused,
            activity_reset: h.activity_reset,
        })
    }
}
