//! Batch operations at the frontend: StartBatchOperation's checks as Temporal's frontend and
//! batcher make them (required fields, one way of naming the targets, the query, the limit of
//! concurrent jobs per namespace), then the job's shard through history (`HistoryService::batch`).

use chronicle_proto::chronicle::history::v1::{
    BatchCountRunning, BatchRequest, BatchStart, ListWorkflowsRequest, batch_request::Op,
    batch_response::Op as RespOp,
};
use chronicle_proto::chronicle::persistence::v1::NamespaceRecord;
use chronicle_proto::temporal::api::common::v1::WorkflowExecution;
use chronicle_proto::temporal::api::enums::v1::{
    ExecutionType, ResourceExhaustedCause, ResourceExhaustedScope,
};
use chronicle_proto::temporal::api::workflowservice::v1::{
    self as ws, start_batch_operation_request::Operation,
};
use chronicle_types::ApiError;

use crate::FrontendContext;

type ApiResult<T> = Result<T, ApiError>;

/// Temporal's `frontend.MaxConcurrentBatchOperationPerNamespace`.
const MAX_CONCURRENT_PER_NAMESPACE: i64 = 1;

/// Temporal's batcher works only on running executions for these operations.
const RUNNING_FILTER: &str = "ExecutionStatus='Running' OR ExecutionStatus='Paused'";

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::invalid_argument(message)
}

async fn call(ctx: &FrontendContext, namespace_id: &str, op: Op) -> ApiResult<RespOp> {
    let answer = ctx
        .history
        .batch(
            namespace_id,
            BatchRequest {
                namespace_id: namespace_id.to_string(),
                op: Some(op),
                shards: Vec::new(),
            },
        )
        .await?;
    answer
        .op
        .ok_or_else(|| ApiError::internal("empty batch answer"))
}

/// Go's `%T` of the request's operation, as Temporal's messages print it.
fn go_type(op: &Operation) -> String {
    let name = match op {
        Operation::TerminationOperation(_) => "TerminationOperation",
        Operation::SignalOperation(_) => "SignalOperation",
        Operation::CancellationOperation(_) => "CancellationOperation",
        Operation::DeletionOperation(_) => "DeletionOperation",
        Operation::ResetOperation(_) => "ResetOperation",
        Operation::UpdateWorkflowOptionsOperation(_) => "UpdateWorkflowOptionsOperation",
        Operation::UnpauseActivitiesOperation(_) => "UnpauseActivitiesOperation",
        Operation::ResetActivitiesOperation(_) => "ResetActivitiesOperation",
        Operation::UpdateActivityOptionsOperation(_) => "UpdateActivityOptionsOperation",
        Operation::CancelActivitiesOperation(_) => "CancelActivitiesOperation",
        Operation::TerminateActivitiesOperation(_) => "TerminateActivitiesOperation",
        Operation::DeleteActivitiesOperation(_) => "DeleteActivitiesOperation",
    };
    format!("*workflowservice.StartBatchOperationRequest_{name}")
}

fn targets_activities(op: &Operation) -> bool {
    matches!(
        op,
        Operation::TerminateActivitiesOperation(_)
            | Operation::DeleteActivitiesOperation(_)
            | Operation::CancelActivitiesOperation(_)
    )
}

fn execution_type_name(t: i32) -> &'static str {
    match ExecutionType::try_from(t) {
        Ok(ExecutionType::Workflow) => "Workflow",
        Ok(ExecutionType::Activity) => "Activity",
        _ => "Unspecified",
    }
}

/// Temporal's `ValidateBatchOperation`, in its order.
fn check_start(r: &ws::StartBatchOperationRequest) -> ApiResult<()> {
    if let Some(op) = &r.operation
        && targets_activities(op)
    {
        // Standalone activities are not served, as on a namespace without them in Temporal.
        return Err(invalid(format!(
            "The operation type {} is not supported for this namespace",
            go_type(op)
        )));
    }
    #[allow(deprecated)]
    let selectors = [
        !r.visibility_query.is_empty(),
        !r.executions.is_empty(),
        !r.target_executions.is_empty(),
    ]
    .iter()
    .filter(|s| **s)
    .count();
    if r.operation.is_none() || r.reason.is_empty() || r.namespace.is_empty() || selectors == 0 {
        return Err(invalid(
            "must provide required parameters: BatchType,Reason,Namespace, AND one of (Query OR \
             Executions OR TargetExecutions)",
        ));
    }
    if r.job_id.is_empty() {
        return Err(invalid("JobId is not set on request."));
    }
    if selectors > 1 {
        return Err(invalid(
            "visibility query, executions, and target executions are mutually exclusive",
        ));
    }
    let Some(op) = &r.operation else {
        return Err(invalid("Batch operation is not set on request."));
    };
    for (i, execution) in r.target_executions.iter().enumerate() {
        if execution.r#type != ExecutionType::Workflow as i32 {
            return Err(invalid(format!(
                "target_executions[{i}] has type {}, but operation {} requires Workflow",
                execution_type_name(execution.r#type),
                go_type(op)
            )));
        }
    }
    match op {
        Operation::SignalOperation(s) if s.signal.is_empty() => {
            Err(invalid("must provide signal name"))
        }
        Operation::SignalOperation(s) => crate::validate::payload_size(&s.input, "Input"),
        Operation::UpdateWorkflowOptionsOperation(u) => {
            if u.workflow_execution_options.is_none() {
                return Err(invalid("must provide UpdateOptions"));
            }
            if u.update_mask.is_none() {
                return Err(invalid("must provide UpdateMask"));
            }
            // What Temporal's frontend would refuse for every run (bad mask paths, priority,
            // time skipping) is refused once, at the start.
            crate::workflow_options::check(&ws::UpdateWorkflowExecutionOptionsRequest {
                workflow_execution: Some(WorkflowExecution {
                    workflow_id: "batch".to_string(),
                    run_id: String::new(),
                }),
                workflow_execution_options: u.workflow_execution_options.clone(),
                update_mask: u.update_mask.clone(),
                ..Default::default()
            })
        }
        _ => Ok(()),
    }
}

/// The query the job pages through: an unpause by activity type pages through the runs whose
/// `TemporalPauseInfo` names the type (Temporal's frontend replaces the query so), and
/// Temporal's batcher limits the operations on running work to running executions.
fn job_query(r: &ws::StartBatchOperationRequest) -> String {
    use chronicle_proto::temporal::api::batch::v1::batch_operation_unpause_activities::Activity;
    let query = match &r.operation {
        Some(Operation::UnpauseActivitiesOperation(op)) if !r.visibility_query.is_empty() => {
            match &op.activity {
                Some(Activity::Type(activity_type)) => {
                    let entry = format!("property:activityType={activity_type}");
                    let quoted = entry.replace('\\', "\\\\").replace('\'', "\\'");
                    format!("TemporalPauseInfo = '{quoted}'")
                }
                _ => r.visibility_query.clone(),
            }
        }
        _ => r.visibility_query.clone(),
    };
    let only_running = matches!(
        r.operation,
        Some(
            Operation::TerminationOperation(_)
                | Operation::CancellationOperation(_)
                | Operation::SignalOperation(_)
                | Operation::UpdateWorkflowOptionsOperation(_)
                | Operation::UnpauseActivitiesOperation(_)
                | Operation::ResetActivitiesOperation(_)
                | Operation::UpdateActivityOptionsOperation(_)
        )
    );
    if query.is_empty() || !only_running {
        query
    } else {
        format!("({query}) AND ({RUNNING_FILTER})")
    }
}

pub async fn start(
    ctx: &FrontendContext,
    record: &NamespaceRecord,
    namespace_id: &str,
    r: ws::StartBatchOperationRequest,
) -> ApiResult<ws::StartBatchOperationResponse> {
    check_start(&r)?;
    crate::validate::max_id(&r.job_id, "WorkflowId")?;
    let query = job_query(&r);
    if !query.is_empty() {
        chronicle_visibility::parse(&query, &record.custom_search_attributes)
            .map_err(|e| invalid(format!("invalid visibility query: {e}")))?;
    }
    let running = match call(ctx, namespace_id, Op::CountRunning(BatchCountRunning {})).await? {
        RespOp::Running(n) => n,
        _ => return Err(ApiError::internal("unexpected batch answer")),
    };
    if running >= MAX_CONCURRENT_PER_NAMESPACE {
        return Err(ApiError::resource_exhausted_for(
            "Max concurrent batch operations is reached",
            ResourceExhaustedCause::ConcurrentLimit,
            ResourceExhaustedScope::Namespace,
        ));
    }
    #[allow(deprecated)]
    let mut total_estimate = (r.executions.len() + r.target_executions.len()) as i64;
    if !query.is_empty() {
        total_estimate = ctx
            .history
            .list_workflows(ListWorkflowsRequest {
                namespace_id: namespace_id.to_string(),
                query: query.clone(),
                page_size: 0,
                search_attribute_types: record.custom_search_attributes.clone(),
                next_page_token: Vec::new(),
                count_only: true,
                shards: Vec::new(),
                standalone_activities: false,
            })
            .await?
            .count;
    }
    let start = BatchStart {
        max_operations_per_second: r.max_operations_per_second,
        request: Some(r),
        query,
        search_attribute_types: record.custom_search_attributes.clone(),
        total_estimate,
    };
    match call(ctx, namespace_id, Op::Start(start)).await? {
        RespOp::Start(answer) => Ok(answer),
        _ => Err(ApiError::internal("unexpected batch answer")),
    }
}

pub async fn describe(
    ctx: &FrontendContext,
    namespace_id: &str,
    r: ws::DescribeBatchOperationRequest,
) -> ApiResult<ws::DescribeBatchOperationResponse> {
    if r.job_id.is_empty() {
        return Err(invalid("JobId is not set on request."));
    }
    match call(ctx, namespace_id, Op::Describe(r)).await? {
        RespOp::Describe(answer) => Ok(answer),
        _ => Err(ApiError::internal("unexpected batch answer")),
    }
}

pub async fn stop(
    ctx: &FrontendContext,
    namespace_id: &str,
    r: ws::StopBatchOperationRequest,
) -> ApiResult<ws::StopBatchOperationResponse> {
    if r.job_id.is_empty() {
        return Err(invalid("JobId is not set on request."));
    }
    if r.reason.is_empty() {
        return Err(invalid("Reason is not set on request."));
    }
    match call(ctx, namespace_id, Op::Stop(r)).await? {
        RespOp::Stop(answer) => Ok(answer),
        _ => Err(ApiError::internal("unexpected batch answer")),
    }
}

pub async fn list(
    ctx: &FrontendContext,
    namespace_id: &str,
    r: ws::ListBatchOperationsRequest,
) -> ApiResult<ws::ListBatchOperationsResponse> {
    match call(ctx, namespace_id, Op::List(r)).await? {
        RespOp::List(answer) => Ok(answer),
        _ => Err(ApiError::internal("unexpected batch answer")),
    }
}
