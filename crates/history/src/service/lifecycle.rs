//! Workflow lifecycle RPCs of the history service: start (with its eager workflow task),
//! signal, signal-with-start, terminate, request-cancel and delete.

use chronicle_proto::chronicle::history::v1::{self as cmd, command_result, shard_command::Kind};
use chronicle_proto::chronicle::persistence::v1 as pb;
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use chronicle_types::{ApiError, ApiResult};

use crate::engine::{HistoryEngine, Shard};
use crate::read::{self, storage};
use crate::tokens;

impl HistoryEngine {
    /// The poll answer for a workflow task an eager start recorded as started.
    fn eager_workflow_task(
        &self,
        shard: &Shard,
        namespace_id: &str,
        workflow_id: &str,
        run_id: &str,
        request_id: &str,
        started: &cmd::RecordWorkflowTaskStartedResult,
    ) -> ApiResult<ws::PollWorkflowTaskQueueResponse> {
        let state = shard
            .tables
            .execution(namespace_id, workflow_id, run_id)
            .map_err(storage)?
            .ok_or_else(|| ApiError::workflow_not_found_for(workflow_id, run_id))?;
        let token = pb::TaskToken {
            namespace_id: namespace_id.to_string(),
            workflow_id: workflow_id.to_string(),
            run_id: run_id.to_string(),
            scheduled_event_id: started.scheduled_event_id,
            attempt: started.attempt,
            started_event_id: started.started_event_id,
            started_request_id: request_id.to_string(),
            ..Default::default()
        };
        read::workflow_task_response(shard, &state, started, tokens::encode(&token))
    }

    pub(super) async fn start_workflow_op(
        &self,
        namespace_id: &str,
        request: ws::StartWorkflowExecutionRequest,
    ) -> ApiResult<ws::StartWorkflowExecutionResponse> {
        let shard = &self.shard_of(namespace_id, &request.workflow_id);
        let run_id = chronicle_types::new_run_id();
        let (workflow_id, request_id) = (request.workflow_id.clone(), request.request_id.clone());
        let attaching = crate::apply::attach_callbacks::attaches(&request);
        let result = self
            .propose(
                shard,
                Kind::StartWorkflow(cmd::StartWorkflow {
                    namespace_id: namespace_id.to_string(),
                    request: Some(request),
                    run_id,
                    scheduled_by: None,
                    // Temporal's system.enableEagerWorkflowStart, on by default.
                    eager_workflow_start: true,
                }),
            )
            .await?;
        let command_result::Result::StartWorkflow(started) = result else {
            return Err(ApiError::internal("unexpected start result"));
        };
        let eager_workflow_task = match &started.eager_workflow_task {
            Some(task) => Some(self.eager_workflow_task(
                shard,
                namespace_id,
                &workflow_id,
                &started.run_id,
                &request_id,
                task,
            )?),
            None => None,
        };
        Ok(ws::StartWorkflowExecutionResponse {
            // As Temporal: a link to the run's Started event (a Nexus handler passes it on), or
            // to the options update that attached this request to a running run.
            link: Some(if attaching && !started.started {
                crate::apply::nexus_async::request_id_link(
                    &self.namespace_name(namespace_id),
                    &workflow_id,
                    &started.run_id,
                    &request_id,
                    chronicle_proto::temporal::api::enums::v1::EventType::WorkflowExecutionOptionsUpdated,
                )
            } else {
                crate::apply::nexus_async::workflow_event_link(
                    &self.namespace_name(namespace_id),
                    &workflow_id,
                    &started.run_id,
                    1,
                    chronicle_proto::temporal::api::enums::v1::EventType::WorkflowExecutionStarted,
                )
            }),
            run_id: started.run_id,
            started: started.started,
            status: chronicle_proto::temporal::api::enums::v1::WorkflowExecutionStatus::Running
                as i32,
            eager_workflow_task,
            ..Default::default()
        })
    }

    pub(super) async fn signal_workflow_op(
        &self,
        namespace_id: &str,
        request: ws::SignalWorkflowExecutionRequest,
    ) -> ApiResult<()> {
        let workflow_id = request
            .workflow_execution
            .as_ref()
            .map(|e| e.workflow_id.clone())
            .unwrap_or_default();
        let shard = &self.shard_of(namespace_id, &workflow_id);
        self.propose(
            shard,
            Kind::SignalWorkflow(cmd::SignalWorkflow {
                namespace_id: namespace_id.to_string(),
                request: Some(request),
                external: None,
            }),
        )
        .await?;
        Ok(())
    }

    pub(super) async fn signal_with_start_op(
        &self,
        namespace_id: &str,
        request: ws::SignalWithStartWorkflowExecutionRequest,
    ) -> ApiResult<ws::SignalWithStartWorkflowExecutionResponse> {
        let shard = &self.shard_of(namespace_id, &request.workflow_id);
        let result = self
            .propose(
                shard,
                Kind::SignalWithStart(cmd::SignalWithStart {
                    namespace_id: namespace_id.to_string(),
                    request: Some(request),
                    run_id: chronicle_types::new_run_id(),
                }),
            )
            .await?;
        let command_result::Result::StartWorkflow(started) = result else {
            return Err(ApiError::internal("unexpected signal-with-start result"));
        };
        Ok(ws::SignalWithStartWorkflowExecutionResponse {
            run_id: started.run_id,
            started: started.started,
            ..Default::default()
        })
    }

    pub(super) async fn terminate_workflow_op(
        &self,
        namespace_id: &str,
        request: ws::TerminateWorkflowExecutionRequest,
    ) -> ApiResult<()> {
        let workflow_id = request
            .workflow_execution
            .as_ref()
            .map(|e| e.workflow_id.clone())
            .unwrap_or_default();
        let shard = &self.shard_of(namespace_id, &workflow_id);
        self.propose(
            shard,
            Kind::TerminateWorkflow(cmd::TerminateWorkflow {
                namespace_id: namespace_id.to_string(),
                request: Some(request),
            }),
        )
        .await?;
        Ok(())
    }

    pub(super) async fn delete_workflow_execution_op(
        &self,
        namespace_id: &str,
        request: ws::DeleteWorkflowExecutionRequest,
    ) -> ApiResult<()> {
        let execution = request.workflow_execution.unwrap_or_default();
        let shard = &self.shard_of(namespace_id, &execution.workflow_id);
        self.propose(
            shard,
            Kind::DeleteWorkflowExecution(cmd::DeleteWorkflowExecution {
                namespace_id: namespace_id.to_string(),
                execution: Some(execution),
                closed_only: false,
            }),
        )
        .await?;
        Ok(())
    }

    pub(super) async fn request_cancel_workflow_op(
        &self,
        namespace_id: &str,
        request: ws::RequestCancelWorkflowExecutionRequest,
    ) -> ApiResult<()> {
        let workflow_id = request
            .workflow_execution
            .as_ref()
            .map(|e| e.workflow_id.clone())
            .unwrap_or_default();
        let shard = &self.shard_of(namespace_id, &workflow_id);
        self.propose(
            shard,
            Kind::RequestCancelWorkflow(cmd::RequestCancelWorkflow {
                namespace_id: namespace_id.to_string(),
                request: Some(request),
                external: None,
            }),
        )
        .await?;
        Ok(())
    }
}
