//! What a batch job does to each execution: one variant per operation, each applied through the
//! node's `HistoryService` (the router in a cluster, so targets on any shard are reached at their
//! leader). Every application is safe to repeat: an executor that stops between applying and
//! recording its progress applies it again on resume, so signals and cancellations carry a
//! request ID derived from the job and the target (de-duplicated by the run), and a terminate
//! of a run already closed answers NotFound, which counts as done (as in Temporal's batcher).

use chronicle_cluster::HistoryService;
use chronicle_proto::chronicle::history::v1::{RunOperation, run_operation};
use chronicle_proto::temporal::api::common::v1::{
    Execution, Header, Payloads, ResetOptions, WorkflowExecution,
};
use chronicle_proto::temporal::api::enums::v1::{
    BatchOperationType, ExecutionType, ResetReapplyType,
};
use chronicle_proto::temporal::api::workflowservice::v1::{
    self as ws, start_batch_operation_request::Operation,
};
use chronicle_types::{ApiError, ApiResult};

use super::reset_point::{self, ResetPoint};

/// The operations a batch job can run (one variant each, and one arm in `apply`).
#[derive(Clone, Debug)]
pub(crate) enum BatchOperation {
    Terminate {
        reason: String,
        details: Option<Payloads>,
        identity: String,
    },
    Cancel {
        reason: String,
        identity: String,
    },
    Signal {
        name: String,
        input: Option<Payloads>,
        header: Option<Header>,
        identity: String,
    },
    Delete {
        identity: String,
    },
    /// Resets each run to `point` (read from its history), reapplying as `options` says.
    Reset {
        reason: String,
        point: ResetPoint,
        options: ResetOptions,
        identity: String,
    },
    /// The activity operations: each run gets the single-run request (UnpauseActivity,
    /// ResetActivity, UpdateActivityOptions) with the job's activity selector, as Temporal's
    /// batcher sends it; a run without a matching activity answers NotFound (done).
    UnpauseActivities(ws::UnpauseActivityRequest),
    ResetActivities(ws::ResetActivityRequest),
    UpdateActivityOptions(Box<ws::UpdateActivityOptionsRequest>),
    /// UpdateWorkflowExecutionOptions of each run, with the job's options, mask and identity.
    UpdateWorkflowOptions(Box<ws::UpdateWorkflowExecutionOptionsRequest>),
}

impl BatchOperation {
    /// The operation a request asks for; the ones Chronicle does not run yet are refused.
    pub fn of(request: &ws::StartBatchOperationRequest) -> ApiResult<Self> {
        match &request.operation {
            Some(Operation::TerminationOperation(op)) => Ok(Self::Terminate {
                reason: request.reason.clone(),
                details: op.details.clone(),
                identity: op.identity.clone(),
            }),
            Some(Operation::CancellationOperation(op)) => Ok(Self::Cancel {
                reason: request.reason.clone(),
                identity: op.identity.clone(),
            }),
            Some(Operation::SignalOperation(op)) => Ok(Self::Signal {
                name: op.signal.clone(),
                input: op.input.clone(),
                header: op.header.clone(),
                identity: op.identity.clone(),
            }),
            Some(Operation::DeletionOperation(op)) => Ok(Self::Delete {
                identity: op.identity.clone(),
            }),
            Some(Operation::ResetOperation(op)) => Ok(Self::Reset {
                reason: request.reason.clone(),
                point: ResetPoint::of(op)?,
                options: reset_point::options(op),
                identity: op.identity.clone(),
            }),
            Some(Operation::UnpauseActivitiesOperation(op)) => {
                use chronicle_proto::temporal::api::batch::v1::batch_operation_unpause_activities::Activity;
                use ws::unpause_activity_request::Activity as Selector;
                Ok(Self::UnpauseActivities(ws::UnpauseActivityRequest {
                    namespace: request.namespace.clone(),
                    identity: op.identity.clone(),
                    activity: match &op.activity {
                        Some(Activity::Type(t)) => Some(Selector::Type(t.clone())),
                        Some(Activity::MatchAll(true)) => Some(Selector::UnpauseAll(true)),
                        _ => None,
                    },
                    reset_attempts: op.reset_attempts,
                    reset_heartbeat: op.reset_heartbeat,
                    jitter: op.jitter,
                    ..Default::default()
                }))
            }
            Some(Operation::ResetActivitiesOperation(op)) => {
                use chronicle_proto::temporal::api::batch::v1::batch_operation_reset_activities::Activity;
                use ws::reset_activity_request::Activity as Selector;
                Ok(Self::ResetActivities(ws::ResetActivityRequest {
                    namespace: request.namespace.clone(),
                    identity: op.identity.clone(),
                    activity: match &op.activity {
                        Some(Activity::Type(t)) => Some(Selector::Type(t.clone())),
                        Some(Activity::MatchAll(true)) => Some(Selector::MatchAll(true)),
                        _ => None,
                    },
                    reset_heartbeat: op.reset_heartbeat,
                    keep_paused: op.keep_paused,
                    jitter: op.jitter,
                    restore_original_options: op.restore_original_options,
                    ..Default::default()
                }))
            }
            Some(Operation::UpdateActivityOptionsOperation(op)) => {
                use chronicle_proto::temporal::api::batch::v1::batch_operation_update_activity_options::Activity;
                use ws::update_activity_options_request::Activity as Selector;
                Ok(Self::UpdateActivityOptions(Box::new(
                    ws::UpdateActivityOptionsRequest {
                        namespace: request.namespace.clone(),
                        identity: op.identity.clone(),
                        activity: match &op.activity {
                            Some(Activity::Type(t)) => Some(Selector::Type(t.clone())),
                            Some(Activity::MatchAll(true)) => Some(Selector::MatchAll(true)),
                            _ => None,
                        },
                        activity_options: op.activity_options.clone(),
                        update_mask: op.update_mask.clone(),
                        restore_original: op.restore_original,
                        ..Default::default()
                    },
                )))
            }
            Some(Operation::UpdateWorkflowOptionsOperation(op)) => Ok(Self::UpdateWorkflowOptions(
                Box::new(ws::UpdateWorkflowExecutionOptionsRequest {
                    namespace: request.namespace.clone(),
                    workflow_execution_options: op.workflow_execution_options.clone(),
                    update_mask: op.update_mask.clone(),
                    identity: op.identity.clone(),
                    ..Default::default()
                }),
            )),
            Some(other) => Err(ApiError::invalid_argument(format!(
                "The operation type {} is not supported",
                operation_name(other)
            ))),
            None => Err(ApiError::invalid_argument(
                "Batch operation is not set on request.",
            )),
        }
    }

    /// DescribeBatchOperation's and ListBatchOperations' `operation_type`.
    pub fn operation_type(&self) -> BatchOperationType {
        match self {
            Self::Terminate { .. } => BatchOperationType::TerminateWorkflow,
            Self::Cancel { .. } => BatchOperationType::CancelWorkflow,
            Self::Signal { .. } => BatchOperationType::SignalWorkflow,
            Self::Delete { .. } => BatchOperationType::DeleteWorkflow,
            Self::Reset { .. } => BatchOperationType::ResetWorkflow,
            Self::UnpauseActivities(_) => BatchOperationType::UnpauseActivity,
            Self::ResetActivities(_) => BatchOperationType::ResetActivity,
            Self::UpdateActivityOptions(_) => BatchOperationType::UpdateActivityOptions,
            // The type Temporal's frontend records for these jobs (deprecated in the API since).
            #[allow(deprecated)]
            Self::UpdateWorkflowOptions(_) => BatchOperationType::UpdateExecutionOptions,
        }
    }

    pub fn identity(&self) -> &str {
        match self {
            Self::Terminate { identity, .. }
            | Self::Cancel { identity, .. }
            | Self::Signal { identity, .. }
            | Self::Delete { identity }
            | Self::Reset { identity, .. } => identity,
            Self::UnpauseActivities(r) => &r.identity,
            Self::ResetActivities(r) => &r.identity,
            Self::UpdateActivityOptions(r) => &r.identity,
            Self::UpdateWorkflowOptions(r) => &r.identity,
        }
    }

    /// Applies the operation to one execution. NotFound (closed or gone) counts as done.
    pub async fn apply(
        &self,
        history: &dyn HistoryService,
        namespace: &str,
        namespace_id: &str,
        job_id: &str,
        execution: &WorkflowExecution,
    ) -> ApiResult<()> {
        let outcome = match self {
            Self::Terminate {
                reason,
                details,
                identity,
            } => {
                let request = ws::TerminateWorkflowExecutionRequest {
                    namespace: namespace.to_string(),
                    workflow_execution: Some(execution.clone()),
                    reason: reason.clone(),
                    details: details.clone(),
                    identity: identity.clone(),
                    ..Default::default()
                };
                history.terminate_workflow(namespace_id, request).await
            }
            Self::Cancel { reason, identity } => {
                let request = ws::RequestCancelWorkflowExecutionRequest {
                    namespace: namespace.to_string(),
                    workflow_execution: Some(execution.clone()),
                    identity: identity.clone(),
                    request_id: request_id(job_id, "cancel", execution),
                    reason: reason.clone(),
                    ..Default::default()
                };
                history.request_cancel_workflow(namespace_id, request).await
            }
            Self::Signal {
                name,
                input,
                header,
                identity,
            } => {
                let request = ws::SignalWorkflowExecutionRequest {
                    namespace: namespace.to_string(),
                    workflow_execution: Some(execution.clone()),
                    signal_name: name.clone(),
                    input: input.clone(),
                    identity: identity.clone(),
                    request_id: request_id(job_id, "signal", execution),
                    header: header.clone(),
                    ..Default::default()
                };
                history.signal_workflow(namespace_id, request).await
            }
            Self::Delete { .. } => {
                let request = ws::DeleteWorkflowExecutionRequest {
                    namespace: namespace.to_string(),
                    workflow_execution: Some(execution.clone()),
                };
                history
                    .delete_workflow_execution(namespace_id, request)
                    .await
            }
            Self::Reset {
                reason,
                point,
                options,
                identity,
            } => {
                let event_id =
                    reset_point::resolve(history, namespace, namespace_id, execution, *point)
                        .await?;
                #[allow(deprecated)]
                let request = ws::ResetWorkflowExecutionRequest {
                    namespace: namespace.to_string(),
                    workflow_execution: Some(execution.clone()),
                    reason: reason.clone(),
                    workflow_task_finish_event_id: event_id,
                    // The same for every attempt: a repeated reset answers the run it made.
                    request_id: request_id(job_id, "reset", execution),
                    // Unset: everything eligible is reapplied, as for a single reset.
                    reset_reapply_type: match options.reset_reapply_type {
                        0 => ResetReapplyType::AllEligible as i32,
                        given => given,
                    },
                    reset_reapply_exclude_types: options.reset_reapply_exclude_types.clone(),
                    identity: identity.clone(),
                    ..Default::default()
                };
                history
                    .reset_workflow(namespace_id, request)
                    .await
                    .map(|_| ())
            }
            Self::UnpauseActivities(template) => {
                let request = ws::UnpauseActivityRequest {
                    execution: Some(execution.clone()),
                    ..template.clone()
                };
                let named = request.activity.is_some();
                let operation = run_operation::Operation::UnpauseActivity(request);
                on_run(history, namespace_id, execution, named.then_some(operation)).await
            }
            Self::ResetActivities(template) => {
                let request = ws::ResetActivityRequest {
                    execution: Some(execution.clone()),
                    ..template.clone()
                };
                let named = request.activity.is_some();
                let operation = run_operation::Operation::ResetActivity(request);
                on_run(history, namespace_id, execution, named.then_some(operation)).await
            }
            Self::UpdateActivityOptions(template) => {
                let request = ws::UpdateActivityOptionsRequest {
                    execution: Some(execution.clone()),
                    ..(**template).clone()
                };
                let named = request.activity.is_some();
                let operation = run_operation::Operation::UpdateActivityOptions(request);
                on_run(history, namespace_id, execution, named.then_some(operation)).await
            }
            Self::UpdateWorkflowOptions(template) => {
                let request = ws::UpdateWorkflowExecutionOptionsRequest {
                    workflow_execution: Some(execution.clone()),
                    ..(**template).clone()
                };
                let operation = run_operation::Operation::UpdateWorkflowExecutionOptions(request);
                on_run(history, namespace_id, execution, Some(operation)).await
            }
        };
        match outcome {
            Err(e) if e.code == tonic::Code::NotFound => Ok(()),
            other => other,
        }
    }
}

/// Sends one run operation to the run's shard (through the router in a cluster). A job whose
/// selector names no activity fails on each run, as Temporal's batcher does ("unknown activity
/// type").
async fn on_run(
    history: &dyn HistoryService,
    namespace_id: &str,
    execution: &WorkflowExecution,
    operation: Option<run_operation::Operation>,
) -> ApiResult<()> {
    let Some(operation) = operation else {
        return Err(ApiError::invalid_argument(
            "unknown activity type: the operation names neither an activity type nor match_all",
        ));
    };
    history
        .run_operation(RunOperation {
            namespace_id: namespace_id.to_string(),
            workflow_id: execution.workflow_id.clone(),
            run_id: execution.run_id.clone(),
            operation: Some(operation),
            jitter_seed: 0,
            request_id: String::new(),
        })
        .await
        .map(|_| ())
}

fn operation_name(op: &Operation) -> &'static str {
    match op {
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
    }
}

/// The same for every attempt at one job's operation on one run, so the run de-duplicates it.
fn request_id(job_id: &str, what: &str, execution: &WorkflowExecution) -> String {
    format!(
        "batch:{job_id}:{what}:{}:{}",
        execution.workflow_id, execution.run_id
    )
}

/// The executions a request lists (`target_executions`, else the deprecated `executions`).
pub fn listed_executions(request: &ws::StartBatchOperationRequest) -> Vec<WorkflowExecution> {
    if !request.target_executions.is_empty() {
        return request
            .target_executions
            .iter()
            .map(|e| WorkflowExecution {
                workflow_id: e.business_id.clone(),
                run_id: e.run_id.clone(),
            })
            .collect();
    }
    #[allow(deprecated)]
    request.executions.clone()
}

/// DescribeBatchOperation's `executions`: the listed targets in the unified form.
pub fn described_executions(request: &ws::StartBatchOperationRequest) -> Vec<Execution> {
    if !request.target_executions.is_empty() {
        return request.target_executions.clone();
    }
    #[allow(deprecated)]
    request
        .executions
        .iter()
        .map(|e| Execution {
            r#type: ExecutionType::Workflow as i32,
            business_id: e.workflow_id.clone(),
            run_id: e.run_id.clone(),
        })
        .collect()
}
