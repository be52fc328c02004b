//! ResetWorkflowExecution: Temporal's frontend checks (request ID, execution, reapply type),
//! then one call to the workflow's shard, where the reset is a single command.

use chronicle_proto::temporal::api::enums::v1::ResetReapplyType;
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use chronicle_types::limits::MAX_ID_LENGTH;
use chronicle_types::{ApiError, ApiResult};

use crate::FrontendContext;

/// Checks a reset request as Temporal's frontend does, with its messages.
#[allow(deprecated)]
pub fn check_request(request: &mut ws::ResetWorkflowExecutionRequest) -> ApiResult<()> {
    if request.request_id.is_empty() {
        return Err(ApiError::invalid_argument(
            "RequestId is not set on request.",
        ));
    }
    if request.request_id.len() > MAX_ID_LENGTH {
        return Err(ApiError::invalid_argument(
            "RequestId length exceeds limit.",
        ));
    }
    let Some(execution) = request.workflow_execution.as_ref() else {
        return Err(ApiError::invalid_argument(
            "Execution is not set on request.",
        ));
    };
    if execution.workflow_id.is_empty() {
        return Err(ApiError::invalid_argument(
            "WorkflowId is not set on request.",
        ));
    }
    if !execution.run_id.is_empty() && uuid::Uuid::parse_str(&execution.run_id).is_err() {
        return Err(ApiError::invalid_argument("Invalid RunId."));
    }
    // Temporal defaults the deprecated reapply type to "all eligible" and refuses values it does
    // not know with an internal error.
    if request.reset_reapply_type == ResetReapplyType::Unspecified as i32 {
        request.reset_reapply_type = ResetReapplyType::AllEligible as i32;
    }
    if ResetReapplyType::try_from(request.reset_reapply_type).is_err() {
        return Err(ApiError::internal(format!(
            "unknown reset reapply type: {}",
            request.reset_reapply_type
        )));
    }
    // Post-reset operations change worker-versioning options, which Chronicle does not have.
    if !request.post_reset_operations.is_empty() {
        return Err(ApiError::invalid_argument(
            "Chronicle does not support post-reset operations (worker versioning options).",
        ));
    }
    Ok(())
}

pub async fn reset_workflow_execution(
    ctx: &FrontendContext,
    namespace_id: &str,
    request: ws::ResetWorkflowExecutionRequest,
) -> ApiResult<ws::ResetWorkflowExecutionResponse> {
    ctx.history.reset_workflow(namespace_id, request).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use chronicle_proto::temporal::api::common::v1::WorkflowExecution;

    fn request(workflow_id: &str, run_id: &str) -> ws::ResetWorkflowExecutionRequest {
        ws::ResetWorkflowExecutionRequest {
            namespace: "default".into(),
            workflow_execution: Some(WorkflowExecution {
                workflow_id: workflow_id.into(),
                run_id: run_id.into(),
            }),
            request_id: "r1".into(),
            workflow_task_finish_event_id: 4,
            ..Default::default()
        }
    }

    #[test]
    #[allow(deprecated)]
    fn bad_requests_get_temporals_messages() {
        let mut r = request("wf", "");
        r.request_id.clear();
        assert_eq!(
            check_request(&mut r).unwrap_err().message,
            "RequestId is not set on request."
        );
        let mut r = request("", "");
        assert_eq!(
            check_request(&mut r).unwrap_err().message,
            "WorkflowId is not set on request."
        );
        let mut r = request("wf", "not-a-uuid");
        assert_eq!(check_request(&mut r).unwrap_err().message, "Invalid RunId.");
        let mut r = request("wf", "");
        r.workflow_execution = None;
        assert_eq!(
            check_request(&mut r).unwrap_err().message,
            "Execution is not set on request."
        );
        let mut r = request("wf", "");
        r.reset_reapply_type = 99;
        assert_eq!(
            check_request(&mut r).unwrap_err().code,
            tonic::Code::Internal
        );
    }

    #[test]
    #[allow(deprecated)]
    fn the_reapply_type_defaults_to_all_eligible() {
        let mut r = request("wf", "");
        check_request(&mut r).unwrap();
        assert_eq!(r.reset_reapply_type, ResetReapplyType::AllEligible as i32);
    }
}
