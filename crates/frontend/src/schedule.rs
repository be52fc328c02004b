//! Cron workflows and Schedules at the frontend: request checks as Temporal's.

use chronicle_proto::wkt::Duration;
use chronicle_types::ApiError;

type ApiResult<T> = Result<T, ApiError>;

/// A start request's cron schedule: not with a start delay, and a cron string Temporal accepts.
pub fn check_cron_start(cron_schedule: &str, start_delay: Option<&Duration>) -> ApiResult<()> {
    if !cron_schedule.is_empty() && start_delay.is_some() {
        return Err(ApiError::invalid_argument(
            "CronSchedule and WorkflowStartDelay may not be used together.",
        ));
    }
    chronicle_cron::validate(cron_schedule, chronicle_types::time::now_millis())
        .map_err(ApiError::invalid_argument)
}

use chronicle_proto::chronicle::history::v1::{
    ScheduleRequest, ScheduleResponse, schedule_request::Op, schedule_response::Op as RespOp,
};
use chronicle_proto::temporal::api::common::v1::SearchAttributes;
use chronicle_proto::temporal::api::schedule::v1::Schedule;
use chronicle_proto::temporal::api::schedule::v1::schedule_action::Action;
use chronicle_proto::temporal::api::workflowservice::v1 as ws;

use crate::FrontendContext;

fn required(value: &str, what: &str) -> ApiResult<()> {
    crate::validate::required_id(value, what)
}

/// A schedule's action and spec as far as the frontend checks them (the spec is canonicalised
/// and checked again at apply).
fn check_schedule(
    schedule: Option<&chronicle_proto::temporal::api::schedule::v1::Schedule>,
) -> ApiResult<()> {
    let Some(schedule) = schedule else {
        return Err(ApiError::invalid_argument("Schedule is not set."));
    };
    let Some(Action::StartWorkflow(nw)) = schedule.action.as_ref().and_then(|a| a.action.as_ref())
    else {
        return Err(ApiError::invalid_argument("Schedule action is not set."));
    };
    required(&nw.workflow_id, "WorkflowId")?;
    required(
        nw.workflow_type
            .as_ref()
            .map(|t| t.name.as_str())
            .unwrap_or(""),
        "WorkflowType",
    )?;
    required(
        nw.task_queue
            .as_ref()
            .map(|t| t.name.as_str())
            .unwrap_or(""),
        "TaskQueue",
    )?;
    crate::validate::payload_size(&nw.input, "Input")?;
    if let Some(spec) = &schedule.spec {
        chronicle_cron::spec::canonicalize(spec)
            .map_err(|e| ApiError::invalid_argument(format!("Invalid schedule spec: {e}")))?;
    }
    Ok(())
}

/// The schedule's own search attributes and its action's, checked against the namespace's
/// registry as a start's are (InvalidArgument with Temporal's message). The action's are stored
/// with their registered types in the payload metadata, as Temporal's server does since 1.24, so
/// describe returns them typed even when the client sent them untyped.
async fn check_search_attributes(
    ctx: &FrontendContext,
    namespace: &str,
    schedule: Option<&mut Schedule>,
    schedule_attrs: Option<&SearchAttributes>,
) -> ApiResult<()> {
    let action_attrs = schedule
        .and_then(|s| s.action.as_mut())
        .and_then(|a| match a.action.as_mut() {
            Some(Action::StartWorkflow(w)) => w.search_attributes.as_mut(),
            None => None,
        })
        .filter(|a| !a.indexed_fields.is_empty());
    let schedule_attrs = schedule_attrs.filter(|a| !a.indexed_fields.is_empty());
    if action_attrs.is_none() && schedule_attrs.is_none() {
        return Ok(());
    }
    let registry = ctx
        .namespaces
        .get(namespace)
        .await?
        .custom_search_attributes;
    for attrs in schedule_attrs.into_iter().chain(action_attrs.as_deref()) {
        chronicle_visibility::attrs::validate(&registry, namespace, attrs)
            .map_err(ApiError::invalid_argument)?;
    }
    if let Some(attrs) = action_attrs {
        chronicle_visibility::attrs::annotate_types(&registry, attrs);
    }
    Ok(())
}

async fn call(ctx: &FrontendContext, ns: &str, op: Op) -> ApiResult<RespOp> {
    let answer: ScheduleResponse = ctx
        .history
        .schedule(
            ns,
            ScheduleRequest {
                namespace_id: ns.to_string(),
                op: Some(op),
                shards: Vec::new(),
            },
        )
        .await?;
    answer
        .op
        .ok_or_else(|| ApiError::internal("empty schedule answer"))
}

macro_rules! expect {
    ($answer:expr, $variant:ident) => {
        match $answer {
            RespOp::$variant(r) => Ok(r),
            _ => Err(ApiError::internal("unexpected schedule answer")),
        }
    };
}

pub async fn create(
    ctx: &FrontendContext,
    ns: &str,
    r: ws::CreateScheduleRequest,
) -> ApiResult<ws::CreateScheduleResponse> {
    required(&r.schedule_id, "ScheduleId")?;
    crate::validate::max_id(&r.request_id, "RequestId")?;
    check_schedule(r.schedule.as_ref())?;
    let mut r = r;
    check_search_attributes(
        ctx,
        &r.namespace,
        r.schedule.as_mut(),
        r.search_attributes.as_ref(),
    )
    .await?;
    if let Some(memo) = &r.memo {
        crate::validate::any_size(memo, "Memo")?;
    }
    expect!(call(ctx, ns, Op::Create(r)).await?, Create)
}

pub async fn describe(
    ctx: &FrontendContext,
    ns: &str,
    r: ws::DescribeScheduleRequest,
) -> ApiResult<ws::DescribeScheduleResponse> {
    required(&r.schedule_id, "ScheduleId")?;
    expect!(call(ctx, ns, Op::Describe(r)).await?, Describe)
}

pub async fn update(
    ctx: &FrontendContext,
    ns: &str,
    r: ws::UpdateScheduleRequest,
) -> ApiResult<ws::UpdateScheduleResponse> {
    required(&r.schedule_id, "ScheduleId")?;
    check_schedule(r.schedule.as_ref())?;
    let mut r = r;
    check_search_attributes(
        ctx,
        &r.namespace,
        r.schedule.as_mut(),
        r.search_attributes.as_ref(),
    )
    .await?;
    expect!(call(ctx, ns, Op::Update(r)).await?, Update)
}

pub async fn patch(
    ctx: &FrontendContext,
    ns: &str,
    r: ws::PatchScheduleRequest,
) -> ApiResult<ws::PatchScheduleResponse> {
    required(&r.schedule_id, "ScheduleId")?;
    expect!(call(ctx, ns, Op::Patch(r)).await?, Patch)
}

pub async fn delete(
    ctx: &FrontendContext,
    ns: &str,
    r: ws::DeleteScheduleRequest,
) -> ApiResult<ws::DeleteScheduleResponse> {
    required(&r.schedule_id, "ScheduleId")?;
    expect!(call(ctx, ns, Op::Delete(r)).await?, Delete)
}

pub async fn list(
    ctx: &FrontendContext,
    ns: &str,
    r: ws::ListSchedulesRequest,
) -> ApiResult<ws::ListSchedulesResponse> {
    expect!(call(ctx, ns, Op::List(r)).await?, List)
}

pub async fn matching_times(
    ctx: &FrontendContext,
    ns: &str,
    r: ws::ListScheduleMatchingTimesRequest,
) -> ApiResult<ws::ListScheduleMatchingTimesResponse> {
    required(&r.schedule_id, "ScheduleId")?;
    expect!(call(ctx, ns, Op::MatchingTimes(r)).await?, MatchingTimes)
}
