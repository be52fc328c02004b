//! Standalone activity executions (StartActivityExecution, DescribeActivityExecution,
//! PollActivityExecution, RequestCancel/Terminate/DeleteActivityExecution,
//! List/CountActivityExecutions): Temporal's request checks and timeout normalization here,
//! then `HistoryService::standalone_activity` on the activity ID's shard; list and count go
//! through `list_workflows` with `standalone_activities` set.

use chronicle_proto::chronicle::history::v1::{
    self as hpb, StandaloneActivityRequest, standalone_activity_request::Op,
    standalone_activity_response::Op as Answer,
};
use chronicle_proto::temporal::api::activity::v1::ActivityExecutionListInfo;
use chronicle_proto::temporal::api::enums::v1::{
    ActivityExecutionStatus, TaskQueueKind, WorkflowExecutionStatus,
};
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use chronicle_proto::wkt::Duration;
use chronicle_types::time::duration_millis;
use chronicle_types::{ApiError, ApiResult};

use crate::{FrontendContext, validate};

const MAX_ID_LENGTH: usize = chronicle_types::limits::MAX_ID_LENGTH;

fn check_activity_id(id: &str) -> ApiResult<()> {
    if id.is_empty() {
        return Err(ApiError::invalid_argument("activity ID is required"));
    }
    if id.len() > MAX_ID_LENGTH {
        return Err(ApiError::invalid_argument(format!(
            "activity ID exceeds length limit. Length={} Limit={MAX_ID_LENGTH}",
            id.len()
        )));
    }
    Ok(())
}

fn check_run_id(run_id: &str) -> ApiResult<()> {
    if !run_id.is_empty() && uuid::Uuid::parse_str(run_id).is_err() {
        return Err(ApiError::invalid_argument(
            "invalid run id: must be a valid UUID",
        ));
    }
    Ok(())
}

fn timeout(d: &mut Option<Duration>, what: &str) -> ApiResult<i64> {
    if let Some(v) = d.as_ref()
        && (v.seconds < 0 || v.nanos < 0)
    {
        return Err(ApiError::invalid_argument(format!(
            "invalid {what}: negative duration"
        )));
    }
    validate::duration(d, what)?;
    Ok(d.as_ref().map(duration_millis).unwrap_or(0))
}

/// Temporal's checks of a start and its deduced timeouts (schedule-to-start and start-to-close
/// bounded by schedule-to-close, heartbeat by start-to-close).
fn normalize_start(r: &mut ws::StartActivityExecutionRequest) -> ApiResult<()> {
    if r.activity_id.is_empty() {
        return Err(ApiError::invalid_argument("activityId is not set"));
    }
    if r.activity_id.len() > MAX_ID_LENGTH {
        return Err(ApiError::invalid_argument(format!(
            "activityId exceeds length limit. Length={} Limit={MAX_ID_LENGTH}",
            r.activity_id.len()
        )));
    }
    let activity_type = r
        .activity_type
        .as_ref()
        .map(|t| t.name.clone())
        .unwrap_or_default();
    if activity_type.is_empty() {
        return Err(ApiError::invalid_argument("activityType is not set"));
    }
    if activity_type.len() > MAX_ID_LENGTH {
        return Err(ApiError::invalid_argument(format!(
            "activityType exceeds length limit. Length={} Limit={MAX_ID_LENGTH}",
            activity_type.len()
        )));
    }
    match r.task_queue.as_mut() {
        Some(q) if !q.name.is_empty() => {
            validate::max_id(&q.name, "TaskQueue")?;
            q.kind = TaskQueueKind::Normal as i32;
        }
        _ => {
            return Err(ApiError::invalid_argument(
                "TaskQueue is not set on request.",
            ));
        }
    }
    if r.request_id.len() > MAX_ID_LENGTH {
        return Err(ApiError::invalid_argument(format!(
            "request ID exceeds length limit. Length={} Limit={MAX_ID_LENGTH}",
            r.request_id.len()
        )));
    }
    if r.request_id.is_empty() {
        r.request_id = uuid::Uuid::new_v4().to_string();
    }
    validate::priority(r.priority.as_ref())?;
    validate::payload_size(&r.input, "Input")?;
    if let Some(v) = r.start_delay.as_ref()
        && (v.seconds < 0 || v.nanos < 0)
    {
        return Err(ApiError::invalid_argument(
            "invalid StartDelay: negative duration",
        ));
    }
    validate::duration(&mut r.start_delay, "StartDelay")?;
    let to_close = timeout(&mut r.schedule_to_close_timeout, "ScheduleToCloseTimeout")?;
    let to_start = timeout(&mut r.schedule_to_start_timeout, "ScheduleToStartTimeout")?;
    let start_to_close = timeout(&mut r.start_to_close_timeout, "StartToCloseTimeout")?;
    timeout(&mut r.heartbeat_timeout, "HeartbeatTimeout")?;
    if to_close > 0 {
        if to_start <= 0 || to_start > to_close {
            r.schedule_to_start_timeout = r.schedule_to_close_timeout;
        }
        if start_to_close <= 0 || start_to_close > to_close {
            r.start_to_close_timeout = r.schedule_to_close_timeout;
        }
    } else if start_to_close <= 0 {
        return Err(ApiError::invalid_argument(format!(
            "a valid StartToCloseTimeout or ScheduleToCloseTimeout must be set on the activity. ActivityId={} ActivityType={activity_type}",
            r.activity_id
        )));
    }
    let start_to_close = r
        .start_to_close_timeout
        .as_ref()
        .map(duration_millis)
        .unwrap_or(0);
    if r.heartbeat_timeout
        .as_ref()
        .is_some_and(|h| duration_millis(h) > start_to_close)
    {
        r.heartbeat_timeout = r.start_to_close_timeout;
    }
    validate::retry_policy(&mut r.retry_policy, "RetryPolicy")?;
    // Completion callbacks are not built: refused as Temporal refuses them on a namespace
    // without them (activity.enableCallbacks).
    if !r.completion_callbacks.is_empty() {
        return Err(ApiError::invalid_argument(
            "completion callbacks are not enabled for this namespace",
        ));
    }
    Ok(())
}

/// A RespondActivityTask*ById / RecordActivityTaskHeartbeatById target: no workflow ID names a
/// standalone activity (whose run ID is the activity's), kept under its key.
pub fn by_id_target(
    workflow_id: String,
    run_id: String,
    activity_id: String,
) -> chronicle_cluster::ActivityTarget {
    let workflow_id = if workflow_id.is_empty() && !activity_id.is_empty() {
        chronicle_types::standalone_activity::key(&activity_id)
    } else {
        workflow_id
    };
    chronicle_cluster::ActivityTarget::ById {
        workflow_id,
        run_id,
        activity_id,
    }
}

async fn call(ctx: &FrontendContext, namespace_id: &str, op: Op) -> ApiResult<Option<Answer>> {
    Ok(ctx
        .history
        .standalone_activity(
            namespace_id,
            StandaloneActivityRequest {
                namespace_id: namespace_id.to_string(),
                op: Some(op),
            },
        )
        .await?
        .op)
}

pub async fn start(
    ctx: &FrontendContext,
    namespace_id: &str,
    mut r: ws::StartActivityExecutionRequest,
) -> ApiResult<ws::StartActivityExecutionResponse> {
    normalize_start(&mut r)?;
    if let Some(attrs) = r
        .search_attributes
        .as_ref()
        .filter(|a| !a.indexed_fields.is_empty())
    {
        let record = ctx.namespaces.get(&r.namespace).await?;
        chronicle_visibility::attrs::validate(
            &record.custom_search_attributes,
            &r.namespace,
            attrs,
        )
        .map_err(ApiError::invalid_argument)?;
    }
    match call(ctx, namespace_id, Op::Start(r)).await? {
        Some(Answer::Start(a)) => Ok(a),
        _ => Err(ApiError::internal("unexpected standalone activity answer")),
    }
}

pub async fn describe(
    ctx: &FrontendContext,
    namespace_id: &str,
    r: ws::DescribeActivityExecutionRequest,
    budget: Option<std::time::Duration>,
) -> ApiResult<ws::DescribeActivityExecutionResponse> {
    check_activity_id(&r.activity_id)?;
    if !r.long_poll_token.is_empty() && r.run_id.is_empty() {
        return Err(ApiError::invalid_argument(
            "run id is required when long poll token is provided",
        ));
    }
    check_run_id(&r.run_id)?;
    let long_poll = !r.long_poll_token.is_empty();
    let answer = call(ctx, namespace_id, Op::Describe(r));
    // A long poll answers empty shortly before the caller's deadline ("poll again"), as
    // Temporal's does, rather than DeadlineExceeded.
    let answer = match budget.filter(|_| long_poll) {
        Some(budget) => match tokio::time::timeout(budget, answer).await {
            Ok(answer) => answer?,
            Err(_) => return Ok(ws::DescribeActivityExecutionResponse::default()),
        },
        None => answer.await?,
    };
    match answer {
        Some(Answer::Describe(a)) => Ok(a),
        _ => Err(ApiError::internal("unexpected standalone activity answer")),
    }
}

pub async fn poll(
    ctx: &FrontendContext,
    namespace_id: &str,
    r: ws::PollActivityExecutionRequest,
    budget: Option<std::time::Duration>,
) -> ApiResult<ws::PollActivityExecutionResponse> {
    check_activity_id(&r.activity_id)?;
    check_run_id(&r.run_id)?;
    let answer = call(ctx, namespace_id, Op::Poll(r));
    let answer = match budget {
        Some(budget) => match tokio::time::timeout(budget, answer).await {
            Ok(answer) => answer?,
            Err(_) => return Ok(ws::PollActivityExecutionResponse::default()),
        },
        None => answer.await?,
    };
    match answer {
        Some(Answer::Poll(a)) => Ok(a),
        _ => Err(ApiError::internal("unexpected standalone activity answer")),
    }
}

fn check_control(activity_id: &str, run_id: &str, identity: &str, reason: &str) -> ApiResult<()> {
    check_activity_id(activity_id)?;
    if identity.len() > MAX_ID_LENGTH {
        return Err(ApiError::invalid_argument(format!(
            "identity exceeds length limit. Length={} Limit={MAX_ID_LENGTH}",
            identity.len()
        )));
    }
    check_run_id(run_id)?;
    if reason.len() > chronicle_types::limits::MAX_ID_LENGTH {
        return Err(ApiError::invalid_argument("reason exceeds length limit"));
    }
    Ok(())
}

pub async fn cancel(
    ctx: &FrontendContext,
    namespace_id: &str,
    r: ws::RequestCancelActivityExecutionRequest,
) -> ApiResult<ws::RequestCancelActivityExecutionResponse> {
    check_control(&r.activity_id, &r.run_id, &r.identity, &r.reason)?;
    call(ctx, namespace_id, Op::Cancel(r)).await?;
    Ok(ws::RequestCancelActivityExecutionResponse {})
}

pub async fn terminate(
    ctx: &FrontendContext,
    namespace_id: &str,
    r: ws::TerminateActivityExecutionRequest,
) -> ApiResult<ws::TerminateActivityExecutionResponse> {
    check_control(&r.activity_id, &r.run_id, &r.identity, &r.reason)?;
    call(ctx, namespace_id, Op::Terminate(r)).await?;
    Ok(ws::TerminateActivityExecutionResponse {})
}

pub async fn delete(
    ctx: &FrontendContext,
    namespace_id: &str,
    r: ws::DeleteActivityExecutionRequest,
) -> ApiResult<ws::DeleteActivityExecutionResponse> {
    check_control(&r.activity_id, &r.run_id, "", "")?;
    call(ctx, namespace_id, Op::Delete(r)).await?;
    Ok(ws::DeleteActivityExecutionResponse {})
}

fn activity_status(status: i32) -> ActivityExecutionStatus {
    match WorkflowExecutionStatus::try_from(status).unwrap_or_default() {
        WorkflowExecutionStatus::Running => ActivityExecutionStatus::Running,
        WorkflowExecutionStatus::Completed => ActivityExecutionStatus::Completed,
        WorkflowExecutionStatus::Failed => ActivityExecutionStatus::Failed,
        WorkflowExecutionStatus::Canceled => ActivityExecutionStatus::Canceled,
        WorkflowExecutionStatus::Terminated => ActivityExecutionStatus::Terminated,
        WorkflowExecutionStatus::TimedOut => ActivityExecutionStatus::TimedOut,
        _ => ActivityExecutionStatus::Unspecified,
    }
}

fn list_request(
    record: &chronicle_proto::chronicle::persistence::v1::NamespaceRecord,
    query: &str,
) -> ApiResult<hpb::ListWorkflowsRequest> {
    chronicle_visibility::query::parse_for_activities(query, &record.custom_search_attributes)
        .map_err(ApiError::invalid_argument)?;
    Ok(hpb::ListWorkflowsRequest {
        namespace_id: record
            .info
            .as_ref()
            .map(|i| i.id.clone())
            .unwrap_or_default(),
        query: query.to_string(),
        search_attribute_types: record.custom_search_attributes.clone(),
        standalone_activities: true,
        ..Default::default()
    })
}

pub async fn list(
    ctx: &FrontendContext,
    r: ws::ListActivityExecutionsRequest,
) -> ApiResult<ws::ListActivityExecutionsResponse> {
    let record = ctx.namespaces.get(&r.namespace).await?;
    let mut request = list_request(&record, &r.query)?;
    if !r.next_page_token.is_empty() {
        chronicle_visibility::order::SortKey::decode(&r.next_page_token)
            .map_err(ApiError::invalid_argument)?;
    }
    request.page_size = if r.page_size > 0 {
        r.page_size.unsigned_abs()
    } else {
        1000
    };
    request.next_page_token = r.next_page_token;
    let answer = ctx.history.list_workflows(request).await?;
    let executions = answer
        .executions
        .into_iter()
        .filter_map(|d| d.workflow_execution_info)
        .map(|info| {
            let execution = info.execution.unwrap_or_default();
            let closed = info.status != WorkflowExecutionStatus::Running as i32;
            ActivityExecutionListInfo {
                activity_id: chronicle_types::standalone_activity::activity_id(
                    &execution.workflow_id,
                )
                .unwrap_or_default()
                .to_string(),
                run_id: execution.run_id,
                activity_type: info.r#type.map(|t| {
                    chronicle_proto::temporal::api::common::v1::ActivityType { name: t.name }
                }),
                schedule_time: info.start_time,
                close_time: if closed { info.close_time } else { None },
                status: activity_status(info.status) as i32,
                search_attributes: info.search_attributes,
                task_queue: info.task_queue,
                // Temporal writes these at close.
                state_transition_count: if closed {
                    info.state_transition_count
                } else {
                    0
                },
                execution_duration: if closed {
                    info.execution_duration
                } else {
                    None
                },
                execution_time: info.execution_time,
                ..Default::default()
            }
        })
        .collect();
    Ok(ws::ListActivityExecutionsResponse {
        executions,
        next_page_token: answer.next_page_token,
    })
}

pub async fn count(
    ctx: &FrontendContext,
    r: ws::CountActivityExecutionsRequest,
) -> ApiResult<ws::CountActivityExecutionsResponse> {
    let record = ctx.namespaces.get(&r.namespace).await?;
    let parsed = chronicle_visibility::query::parse_for_activities(
        &r.query,
        &record.custom_search_attributes,
    )
    .map_err(ApiError::invalid_argument)?;
    let mut request = list_request(&record, &r.query)?;
    request.count_only = true;
    let answer = ctx.history.list_workflows(request).await?;
    let groups = if parsed.group_by_status {
        answer
            .status_counts
            .iter()
            .map(
                |(status, count)| ws::count_activity_executions_response::AggregationGroup {
                    group_values: vec![crate::visibility::json_string_payload(
                        chronicle_visibility::query::status_name(*status),
                    )],
                    count: *count,
                },
            )
            .collect()
    } else {
        Vec::new()
    };
    Ok(ws::CountActivityExecutionsResponse {
        count: answer.count,
        groups,
    })
}
