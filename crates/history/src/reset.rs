//! ResetWorkflowExecution on the shard leader: the leader picks the new run's ID, then one
//! `ResetWorkflow` command does the rest at apply (`apply::reset`).

use chronicle_proto::chronicle::history::v1::{self as cmd, command_result, shard_command::Kind};
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
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
        let shard = self.shard_of(namespace_id, &workflow_id);
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
