//! Workflow updates at the frontend: UpdateWorkflowExecution, PollWorkflowExecutionUpdate and
//! ExecuteMultiOperation (update-with-start), validated as Temporal's frontend does and
//! forwarded to history.

use chronicle_proto::temporal::api::enums::v1::UpdateWorkflowExecutionLifecycleStage as Stage;
use chronicle_proto::temporal::api::errordetails::v1::{
    MultiOperationExecutionFailure, multi_operation_execution_failure::OperationStatus,
};
use chronicle_proto::temporal::api::failure::v1::MultiOperationExecutionAborted;
use chronicle_proto::temporal::api::workflowservice::v1::{
    self as ws, execute_multi_operation_request::operation::Operation as Op,
    execute_multi_operation_response::response::Response as OpResponse,
};
use std::time::Duration;

use chronicle_proto::temporal::api::update::v1 as upd;
use chronicle_types::{ApiError, ApiResult};
use prost::{Message, Name};

use crate::FrontendContext;
use crate::validate;

/// Temporal's checks of an update request; an empty update ID gets a new one, an unset wait
/// stage means ACCEPTED.
fn validate_update(r: &mut ws::UpdateWorkflowExecutionRequest) -> ApiResult<()> {
    validate::required_id(
        r.workflow_execution
            .as_ref()
            .map(|e| e.workflow_id.as_str())
            .unwrap_or(""),
        "WorkflowId",
    )?;
    let Some(meta) = r.request.as_mut().and_then(|u| u.meta.as_mut()) else {
        return Err(ApiError::invalid_argument(
            "Update meta is not set on request.",
        ));
    };
    if meta.update_id.len() > chronicle_types::limits::MAX_ID_LENGTH {
        return Err(ApiError::invalid_argument("UpdateId length exceeds limit."));
    }
    if meta.update_id.is_empty() {
        meta.update_id = uuid::Uuid::new_v4().to_string();
    }
    let Some(input) = r.request.as_ref().and_then(|u| u.input.as_ref()) else {
        return Err(ApiError::invalid_argument(
            "Update input is not set on request.",
        ));
    };
    if input.name.is_empty() {
        return Err(ApiError::invalid_argument(
            "Update name is not set on request.",
        ));
    }
    validate::payload_size(&input.args, "Update input")?;
    let policy = r.wait_policy.get_or_insert_with(Default::default);
    if policy.lifecycle_stage == Stage::Unspecified as i32 {
        policy.lifecycle_stage = Stage::Accepted as i32;
    }
    if policy.lifecycle_stage == Stage::Admitted as i32 {
        return Err(ApiError::new(
            tonic::Code::PermissionDenied,
            "UpdateWorkflowExecution issued asynchronously and waiting on update admitted is not supported.",
        ));
    }
    Ok(())
}

/// How long a call may wait for its stage: until shortly before the caller's gRPC deadline
/// (`grpc-timeout`), so that a caller with a short deadline gets the stage reached so far (and
/// polls again) rather than DeadlineExceeded. `None`: no deadline; history's own long-poll
/// interval bounds the wait.
pub fn wait_budget(metadata: &tonic::metadata::MetadataMap) -> Option<Duration> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let amount: u64 = digits.parse().ok()?;
    let timeout = match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    };
    // Room for the answer to travel back.
    let margin = (timeout / 5).min(Duration::from_secs(1));
    Some(timeout.saturating_sub(margin))
}

/// Where the update is now, without waiting (the answer once the caller's budget ran out).
async fn stage_now(
    ctx: &FrontendContext,
    namespace: &str,
    namespace_id: &str,
    update_ref: upd::UpdateRef,
) -> ApiResult<ws::PollWorkflowExecutionUpdateResponse> {
    ctx.history
        .poll_workflow_update(
            namespace_id,
            ws::PollWorkflowExecutionUpdateRequest {
                namespace: namespace.to_string(),
                update_ref: Some(update_ref),
                wait_policy: Some(upd::WaitPolicy {
                    lifecycle_stage: Stage::Unspecified as i32,
                }),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| {
            if e.code == tonic::Code::NotFound {
                // Not admitted yet: the caller's deadline passed first.
                ApiError::deadline_exceeded("update was not admitted before the deadline")
            } else {
                e
            }
        })
}

pub async fn update_workflow_execution(
    ctx: &FrontendContext,
    namespace_id: &str,
    mut r: ws::UpdateWorkflowExecutionRequest,
    budget: Option<Duration>,
) -> ApiResult<ws::UpdateWorkflowExecutionResponse> {
    validate_update(&mut r)?;
    let update_ref = upd::UpdateRef {
        workflow_execution: r.workflow_execution.clone(),
        update_id: r
            .request
            .as_ref()
            .and_then(|u| u.meta.as_ref())
            .map(|m| m.update_id.clone())
            .unwrap_or_default(),
    };
    let namespace = r.namespace.clone();
    let call = ctx.history.update_workflow(namespace_id, r);
    let Some(budget) = budget else {
        return call.await;
    };
    match tokio::time::timeout(budget, call).await {
        Ok(answer) => answer,
        Err(_) => {
            let now = stage_now(ctx, &namespace, namespace_id, update_ref).await?;
            Ok(ws::UpdateWorkflowExecutionResponse {
                update_ref: now.update_ref,
                outcome: now.outcome,
                stage: now.stage,
                ..Default::default()
            })
        }
    }
}

pub async fn poll_workflow_execution_update(
    ctx: &FrontendContext,
    namespace_id: &str,
    r: ws::PollWorkflowExecutionUpdateRequest,
    budget: Option<Duration>,
) -> ApiResult<ws::PollWorkflowExecutionUpdateResponse> {
    let Some(update_ref) = &r.update_ref else {
        return Err(ApiError::invalid_argument(
            "UpdateRef is not set on request.",
        ));
    };
    validate::required_id(
        update_ref
            .workflow_execution
            .as_ref()
            .map(|e| e.workflow_id.as_str())
            .unwrap_or(""),
        "WorkflowId",
    )?;
    validate::required_id(&update_ref.update_id, "UpdateId")?;
    let (namespace, update_ref) = (r.namespace.clone(), update_ref.clone());
    let call = ctx.history.poll_workflow_update(namespace_id, r);
    let Some(budget) = budget else {
        return call.await;
    };
    match tokio::time::timeout(budget, call).await {
        Ok(answer) => answer,
        Err(_) => stage_now(ctx, &namespace, namespace_id, update_ref).await,
    }
}

/// The start half of update-with-start: StartWorkflowExecution's checks plus Temporal's
/// multi-operation restrictions.
fn validate_start(r: &mut ws::StartWorkflowExecutionRequest) -> ApiResult<()> {
    validate::start_request(r)?;
    if !r.cron_schedule.is_empty() {
        return Err(ApiError::invalid_argument("CronSchedule is not allowed."));
    }
    if r.request_eager_execution {
        return Err(ApiError::invalid_argument(
            "RequestEagerExecution is not supported.",
        ));
    }
    if r.workflow_start_delay.is_some() {
        return Err(ApiError::invalid_argument(
            "WorkflowStartDelay is not supported.",
        ));
    }
    Ok(())
}

fn operation_status(e: &ApiError) -> OperationStatus {
    OperationStatus {
        code: e.code as i32,
        message: e.message.clone(),
        details: e.detail.iter().cloned().collect(),
    }
}

fn aborted_status() -> OperationStatus {
    OperationStatus {
        code: tonic::Code::Aborted as i32,
        message: "Operation was aborted.".to_string(),
        details: vec![chronicle_proto::wkt::Any {
            type_url: MultiOperationExecutionAborted::type_url(),
            value: MultiOperationExecutionAborted {}.encode_to_vec(),
        }],
    }
}

/// Temporal's MultiOperationExecution error: one status per operation, the one that failed and
/// "aborted" for the other.
fn multi_operation_error(e: ApiError, start_failed: bool) -> ApiError {
    let statuses = if start_failed {
        vec![operation_status(&e), aborted_status()]
    } else {
        vec![aborted_status(), operation_status(&e)]
    };
    ApiError::new(
        tonic::Code::Aborted,
        format!("Update-with-Start could not be executed: {}", e.message),
    )
    .with_detail(&MultiOperationExecutionFailure { statuses })
}

pub async fn execute_multi_operation(
    ctx: &FrontendContext,
    namespace_id: &str,
    r: ws::ExecuteMultiOperationRequest,
) -> ApiResult<ws::ExecuteMultiOperationResponse> {
    let mut ops = r.operations.into_iter().map(|o| o.operation);
    let (
        Some(Some(Op::StartWorkflow(mut start))),
        Some(Some(Op::UpdateWorkflow(mut update))),
        None,
    ) = (ops.next(), ops.next(), ops.next())
    else {
        return Err(ApiError::invalid_argument(
            "Operations have to be exactly [Start, Update].",
        ));
    };
    let other = |ns: &str| !ns.is_empty() && ns != r.namespace;
    if other(&start.namespace) || other(&update.namespace) {
        return Err(ApiError::invalid_argument(
            "Operation namespace did not match request's namespace.",
        ));
    }
    // Errors of one operation are reported in Temporal's per-operation form.
    validate_start(&mut start).map_err(|e| multi_operation_error(e, true))?;
    crate::visibility::check_search_attributes(ctx, &r.namespace, start.search_attributes.as_ref())
        .await
        .map_err(|status| multi_operation_error(ApiError::from(status), true))?;
    let execution = update.workflow_execution.clone().unwrap_or_default();
    let update_error =
        |message: &str| multi_operation_error(ApiError::invalid_argument(message), false);
    if !execution.workflow_id.is_empty() && execution.workflow_id != start.workflow_id {
        return Err(update_error(
            "WorkflowId is not consistent with previous operation(s).",
        ));
    }
    if !execution.run_id.is_empty() {
        return Err(update_error("RunId is not allowed."));
    }
    if !update.first_execution_run_id.is_empty() {
        return Err(update_error("FirstExecutionRunId is not allowed."));
    }
    update
        .workflow_execution
        .get_or_insert_with(Default::default)
        .workflow_id = start.workflow_id.clone();
    validate_update(&mut update).map_err(|e| multi_operation_error(e, false))?;
    let (started, updated) = ctx
        .history
        .update_with_start(namespace_id, start, update)
        .await
        .map_err(|e| {
            // One command does both: a workflow that exists (conflict policy FAIL) is the
            // start's failure, anything else the update's.
            let start_failed = e.is_already_exists();
            if e.code == tonic::Code::Unavailable {
                e
            } else {
                multi_operation_error(e, start_failed)
            }
        })?;
    let response =
        |r: OpResponse| ws::execute_multi_operation_response::Response { response: Some(r) };
    Ok(ws::ExecuteMultiOperationResponse {
        responses: vec![
            response(OpResponse::StartWorkflow(started)),
            response(OpResponse::UpdateWorkflow(updated)),
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(value: &str) -> Option<Duration> {
        let mut metadata = tonic::metadata::MetadataMap::new();
        metadata.insert("grpc-timeout", value.parse().unwrap());
        wait_budget(&metadata)
    }

    #[test]
    fn the_wait_ends_before_the_callers_deadline() {
        assert_eq!(budget("10S"), Some(Duration::from_secs(9)));
        assert_eq!(budget("3000m"), Some(Duration::from_millis(2400)));
        assert_eq!(budget("1H"), Some(Duration::from_secs(3599)));
        assert_eq!(budget("0n"), Some(Duration::ZERO));
        assert_eq!(budget("x"), None);
        assert_eq!(budget("10"), None);
        assert_eq!(
            wait_budget(&tonic::metadata::MetadataMap::new()),
            None,
            "no deadline"
        );
    }
}
