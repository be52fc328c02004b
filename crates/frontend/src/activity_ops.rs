//! WorkflowService calls that act on a run without writing an event (they become one
//! `RunOperation` on the run's shard): PauseActivity, UnpauseActivity, ResetActivity,
//! UpdateActivityOptions (`temporal activity pause|unpause|reset|update-options`) and
//! ResetStickyTaskQueue; plus the task queue reads DescribeTaskQueue and
//! ListTaskQueuePartitions. The frontend checks what Temporal's frontend checks; history checks
//! the rest against the run at apply.

use chronicle_cluster::TaskKind;
use chronicle_proto::chronicle::history::v1::{RunOperation, RunOperationResult, run_operation};
use chronicle_proto::temporal::api::common::v1::WorkflowExecution;
use chronicle_proto::temporal::api::enums::v1::TaskQueueType;
use chronicle_proto::temporal::api::taskqueue::v1::TaskQueuePartitionMetadata;
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use chronicle_types::{ApiError, ApiResult};

use crate::{FrontendContext, validate};

fn workflow_id(execution: Option<&WorkflowExecution>) -> ApiResult<&WorkflowExecution> {
    match execution {
        Some(e) if !e.workflow_id.is_empty() => Ok(e),
        _ => Err(ApiError::invalid_argument(
            "WorkflowId is not set on request.",
        )),
    }
}

fn activity_not_named() -> ApiError {
    ApiError::invalid_argument("Either Activity.Id or Activity.Type should be set on request.")
}

async fn run(
    ctx: &FrontendContext,
    namespace_id: &str,
    execution: &WorkflowExecution,
    operation: run_operation::Operation,
) -> ApiResult<RunOperationResult> {
    run_with_request_id(ctx, namespace_id, execution, operation, String::new()).await
}

async fn run_with_request_id(
    ctx: &FrontendContext,
    namespace_id: &str,
    execution: &WorkflowExecution,
    operation: run_operation::Operation,
    request_id: String,
) -> ApiResult<RunOperationResult> {
    ctx.history
        .run_operation(RunOperation {
            namespace_id: namespace_id.to_string(),
            workflow_id: execution.workflow_id.clone(),
            run_id: execution.run_id.clone(),
            operation: Some(operation),
            jitter_seed: 0,
            request_id,
        })
        .await
}

pub async fn pause(
    ctx: &FrontendContext,
    namespace_id: &str,
    r: ws::PauseActivityRequest,
) -> ApiResult<ws::PauseActivityResponse> {
    let execution = workflow_id(r.execution.as_ref())?.clone();
    if r.activity.is_none() {
        return Err(activity_not_named());
    }
    let op = run_operation::Operation::PauseActivity(r);
    run(ctx, namespace_id, &execution, op).await?;
    Ok(ws::PauseActivityResponse {})
}

pub async fn unpause(
    ctx: &FrontendContext,
    namespace_id: &str,
    mut r: ws::UnpauseActivityRequest,
) -> ApiResult<ws::UnpauseActivityResponse> {
    let execution = workflow_id(r.execution.as_ref())?.clone();
    if r.activity.is_none() {
        return Err(activity_not_named());
    }
    validate::duration(&mut r.jitter, "Jitter")?;
    let op = run_operation::Operation::UnpauseActivity(r);
    run(ctx, namespace_id, &execution, op).await?;
    Ok(ws::UnpauseActivityResponse {})
}

pub async fn reset(
    ctx: &FrontendContext,
    namespace_id: &str,
    r: ws::ResetActivityRequest,
) -> ApiResult<ws::ResetActivityResponse> {
    reset_with_request_id(ctx, namespace_id, r, String::new()).await
}

async fn reset_with_request_id(
    ctx: &FrontendContext,
    namespace_id: &str,
    mut r: ws::ResetActivityRequest,
    request_id: String,
) -> ApiResult<ws::ResetActivityResponse> {
    let execution = workflow_id(r.execution.as_ref())?.clone();
    if r.activity.is_none() {
        return Err(activity_not_named());
    }
    validate::duration(&mut r.jitter, "Jitter")?;
    let op = run_operation::Operation::ResetActivity(r);
    run_with_request_id(ctx, namespace_id, &execution, op, request_id).await?;
    Ok(ws::ResetActivityResponse {})
}

pub async fn update_options(
    ctx: &FrontendContext,
    namespace_id: &str,
    mut r: ws::UpdateActivityOptionsRequest,
) -> ApiResult<ws::UpdateActivityOptionsResponse> {
    let execution = workflow_id(r.execution.as_ref())?.clone();
    if r.activity.is_none() {
        return Err(activity_not_named());
    }
    validate::priority(
        r.activity_options
            .as_ref()
            .and_then(|o| o.priority.as_ref()),
    )?;
    if let Some(o) = r.activity_options.as_mut() {
        validate::duration(&mut o.schedule_to_close_timeout, "ScheduleToCloseTimeout")?;
        validate::duration(&mut o.schedule_to_start_timeout, "ScheduleToStartTimeout")?;
        validate::duration(&mut o.start_to_close_timeout, "StartToCloseTimeout")?;
        validate::duration(&mut o.heartbeat_timeout, "HeartbeatTimeout")?;
    }
    let op = run_operation::Operation::UpdateActivityOptions(r);
    let result = run(ctx, namespace_id, &execution, op).await?;
    Ok(ws::UpdateActivityOptionsResponse {
        activity_options: result.activity_options,
    })
}

pub async fn reset_sticky_task_queue(
    ctx: &FrontendContext,
    namespace_id: &str,
    r: ws::ResetStickyTaskQueueRequest,
) -> ApiResult<ws::ResetStickyTaskQueueResponse> {
    let execution = match r.execution.as_ref() {
        None => {
            return Err(ApiError::invalid_argument(
                "Execution is not set on request.",
            ));
        }
        Some(e) => workflow_id(Some(e))?.clone(),
    };
    validate::max_id(&execution.workflow_id, "WorkflowId")?;
    let op = run_operation::Operation::ResetStickyTaskQueue(r);
    run(ctx, namespace_id, &execution, op).await?;
    Ok(ws::ResetStickyTaskQueueResponse {})
}

/// The name of a request's task queue, required.
fn task_queue_name(
    task_queue: Option<&chronicle_proto::temporal::api::taskqueue::v1::TaskQueue>,
) -> ApiResult<String> {
    let name = task_queue.map(|t| t.name.clone()).unwrap_or_default();
    validate::required_id(&name, "TaskQueue")?;
    Ok(name)
}

/// DescribeTaskQueue: the pollers of the queue of the request's type (workflow when unset, as
/// in Temporal).
pub async fn describe_task_queue(
    ctx: &FrontendContext,
    namespace_id: &str,
    r: ws::DescribeTaskQueueRequest,
) -> ApiResult<ws::DescribeTaskQueueResponse> {
    let name = task_queue_name(r.task_queue.as_ref())?;
    let kind = match TaskQueueType::try_from(r.task_queue_type).unwrap_or_default() {
        TaskQueueType::Activity => TaskKind::Activity,
        TaskQueueType::Nexus => TaskKind::Nexus,
        _ => TaskKind::Workflow,
    };
    let mut described = ctx
        .matching
        .describe_task_queue(namespace_id, &name, kind)
        .await?;
    // The legacy status only when asked for, as Temporal answers.
    #[allow(deprecated)]
    if !r.include_task_queue_status {
        described.task_queue_status = None;
    }
    Ok(described)
}

/// ListTaskQueuePartitions: the partitions of the queue's workflow and activity queues, each
/// with the matching node that owns it now (start-dev: one partition, no owner address).
pub async fn list_partitions(
    ctx: &FrontendContext,
    namespace_id: &str,
    r: ws::ListTaskQueuePartitionsRequest,
) -> ApiResult<ws::ListTaskQueuePartitionsResponse> {
    let name = task_queue_name(r.task_queue.as_ref())?;
    let partitions = |kind| {
        ctx.matching
            .list_partitions(namespace_id, &name, kind)
            .into_iter()
            .map(|p| TaskQueuePartitionMetadata {
                key: p.key,
                owner_host_name: p.owner,
            })
            .collect()
    };
    Ok(ws::ListTaskQueuePartitionsResponse {
        activity_task_queue_partitions: partitions(TaskKind::Activity),
        workflow_task_queue_partitions: partitions(TaskKind::Workflow),
    })
}

// The `*ActivityExecution` forms (what the `temporal activity` commands send): with a workflow
// ID they name one workflow activity by ID and act as the forms above, as Temporal's frontend
// forwards them; without one they would name a standalone activity, which is not served.

fn standalone_activity_disabled() -> ApiError {
    ApiError::new(
        tonic::Code::Unimplemented,
        "Standalone activity is disabled",
    )
}

/// Temporal's checks of an `*ActivityExecution` request's target, then the workflow execution.
/// Pause, unpause and update-options without a workflow ID act on the standalone activity with
/// the ID (whose record is keyed so; its run ID is the activity's), and so does reset.
fn workflow_or_standalone(workflow_id: &str, activity_id: &str) -> String {
    if workflow_id.is_empty() && !activity_id.is_empty() {
        chronicle_types::standalone_activity::key(activity_id)
    } else {
        workflow_id.to_string()
    }
}

fn execution_target(
    workflow_id: &str,
    activity_id: &str,
    run_id: &str,
    identity: &str,
) -> ApiResult<WorkflowExecution> {
    if activity_id.is_empty() {
        return Err(ApiError::invalid_argument("activity ID is required"));
    }
    if workflow_id.is_empty() {
        return Err(standalone_activity_disabled());
    }
    let limit = chronicle_types::limits::MAX_ID_LENGTH;
    if activity_id.len() > limit {
        return Err(ApiError::invalid_argument(format!(
            "activity ID exceeds length limit. Length={} Limit={limit}",
            activity_id.len()
        )));
    }
    if identity.len() > limit {
        return Err(ApiError::invalid_argument(format!(
            "identity exceeds length limit. Length={} Limit={limit}",
            identity.len()
        )));
    }
    if !run_id.is_empty() && uuid::Uuid::parse_str(run_id).is_err() {
        return Err(ApiError::invalid_argument(
            "invalid run id: must be a valid UUID",
        ));
    }
    Ok(WorkflowExecution {
        workflow_id: workflow_id.to_string(),
        run_id: run_id.to_string(),
    })
}

pub async fn pause_execution(
    ctx: &FrontendContext,
    namespace_id: &str,
    r: ws::PauseActivityExecutionRequest,
) -> ApiResult<ws::PauseActivityExecutionResponse> {
    let workflow_id = workflow_or_standalone(&r.workflow_id, &r.activity_id);
    let execution = execution_target(&workflow_id, &r.activity_id, &r.run_id, &r.identity)?;
    // An empty request ID is filled in, as Temporal normalises it: two pauses without one are
    // two pauses.
    let request_id = if r.request_id.is_empty() {
        uuid::Uuid::new_v4().to_string()
    } else {
        r.request_id
    };
    let request = ws::PauseActivityRequest {
        namespace: r.namespace,
        execution: Some(execution),
        identity: r.identity,
        activity: Some(ws::pause_activity_request::Activity::Id(r.activity_id)),
        reason: r.reason,
        request_id,
    };
    pause(ctx, namespace_id, request).await?;
    Ok(ws::PauseActivityExecutionResponse {})
}

pub async fn unpause_execution(
    ctx: &FrontendContext,
    namespace_id: &str,
    r: ws::UnpauseActivityExecutionRequest,
) -> ApiResult<ws::UnpauseActivityExecutionResponse> {
    let workflow_id = workflow_or_standalone(&r.workflow_id, &r.activity_id);
    let execution = execution_target(&workflow_id, &r.activity_id, &r.run_id, &r.identity)?;
    let request = ws::UnpauseActivityRequest {
        namespace: r.namespace,
        execution: Some(execution),
        identity: r.identity,
        activity: Some(ws::unpause_activity_request::Activity::Id(r.activity_id)),
        jitter: r.jitter,
        ..Default::default()
    };
    unpause(ctx, namespace_id, request).await?;
    Ok(ws::UnpauseActivityExecutionResponse {})
}

pub async fn reset_execution(
    ctx: &FrontendContext,
    namespace_id: &str,
    r: ws::ResetActivityExecutionRequest,
) -> ApiResult<ws::ResetActivityExecutionResponse> {
    let workflow_id = workflow_or_standalone(&r.workflow_id, &r.activity_id);
    let execution = execution_target(&workflow_id, &r.activity_id, &r.run_id, &r.identity)?;
    let request = ws::ResetActivityRequest {
        namespace: r.namespace,
        execution: Some(execution),
        identity: r.identity,
        activity: Some(ws::reset_activity_request::Activity::Id(r.activity_id)),
        reset_heartbeat: r.reset_heartbeat,
        keep_paused: r.keep_paused,
        jitter: r.jitter,
        restore_original_options: r.restore_original_options,
    };
    reset_with_request_id(ctx, namespace_id, request, r.request_id).await?;
    Ok(ws::ResetActivityExecutionResponse {})
}

pub async fn update_execution_options(
    ctx: &FrontendContext,
    namespace_id: &str,
    r: ws::UpdateActivityExecutionOptionsRequest,
) -> ApiResult<ws::UpdateActivityExecutionOptionsResponse> {
    let workflow_id = workflow_or_standalone(&r.workflow_id, &r.activity_id);
    let execution = execution_target(&workflow_id, &r.activity_id, &r.run_id, &r.identity)?;
    let request = ws::UpdateActivityOptionsRequest {
        namespace: r.namespace,
        execution: Some(execution),
        identity: r.identity,
        activity_options: r.activity_options,
        update_mask: r.update_mask,
        activity: Some(ws::update_activity_options_request::Activity::Id(
            r.activity_id,
        )),
        restore_original: r.restore_original,
    };
    let response = update_options(ctx, namespace_id, request).await?;
    Ok(ws::UpdateActivityExecutionOptionsResponse {
        activity_options: response.activity_options,
    })
}
