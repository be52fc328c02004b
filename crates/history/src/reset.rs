//! ResetWorkflowExecution on the shard leader: the leader picks the new run's ID, then one
//! `ResetWorkflow` command does the rest at apply (`apply::reset`).

use chronicle_proto::chronicle::history::v1::{self as cmd, command_result, shard_command::Kind};
use chronicle_proto::chronicle::persistence::v1 as pb;
use chronicle_proto::temporal::api::workflow::v1::WorkflowExecutionExtendedInfo;
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use chronicle_types::time::{from_millis, millis, opt_duration_millis};
use chronicle_types::{ApiError, ApiResult};

use crate::engine::HistoryEngine;

impl HistoryEngine {
    pub(crate) async fn reset(
        &self,
        namespace_id: &str,
        request: ws::ResetWorkflowExecutionRequest,
    ) -> ApiResult<ws::ResetWorkflowExecutionResponse> {
        let workflow_id = request
            .workflow_execution
            .as_ref()
            .map(|e| e.workflow_id.clone())
            .unwrap_or_default();
        let shard = &self.shard_of(namespace_id, &workflow_id);
        let result = self
            .propose(
                shard,
                Kind::ResetWorkflow(cmd::ResetWorkflow {
                    namespace_id: namespace_id.to_string(),
                    request: Some(request),
                    new_run_id: chronicle_types::new_run_id(),
                }),
            )
            .await?;
        let command_result::Result::ResetWorkflow(reset) = result else {
            return Err(ApiError::internal("unexpected reset result"));
        };
        Ok(ws::ResetWorkflowExecutionResponse {
            run_id: reset.run_id,
        })
    }
}

/// Describe's extended info, as Temporal fills it: expirations, the cancel request, the original
/// start (the base run's, for a run a reset created), the last reset and the run that replaced
/// this one.
pub(crate) fn extended_info(state: &pb::WorkflowExecutionState) -> WorkflowExecutionExtendedInfo {
    let run_ms = opt_duration_millis(state.workflow_run_timeout.as_ref());
    let run_expiration_time = (run_ms > 0)
        .then(|| {
            let from = state
                .execution_time
                .as_ref()
                .or(state.start_time.as_ref())?;
            let mut at = millis(from).saturating_add(run_ms);
            if let Some(execution) = state.execution_expiration_time.as_ref() {
                at = at.min(millis(execution));
            }
            Some(from_millis(at))
        })
        .flatten();
    WorkflowExecutionExtendedInfo {
        execution_expiration_time: state.execution_expiration_time,
        run_expiration_time,
        cancel_requested: state.cancel_requested,
        last_reset_time: state.last_reset_time,
        original_start_time: state.original_start_time.or(state.start_time),
        reset_run_id: state.reset_run_id.clone(),
        ..Default::default()
    }
}
