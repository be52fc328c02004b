//! Workflow updates, the service side: admission is a shard command (`apply::update`); waiting
//! for a stage re-reads the run's replicated update registry whenever the workflow changes
//! (`notify.rs`), so a waiter needs no state of its own and any leader can answer.

use std::time::Duration;

use chronicle_proto::chronicle::history::v1::{self as cmd, command_result, shard_command::Kind};
use chronicle_proto::chronicle::persistence::v1 as pb;
use chronicle_proto::temporal::api::common::v1::WorkflowExecution;
use chronicle_proto::temporal::api::enums::v1::{
    UpdateWorkflowExecutionLifecycleStage as Stage, WorkflowExecutionStatus,
};
use chronicle_proto::temporal::api::update::v1 as upd;
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use chronicle_types::{ApiError, ApiResult};

use crate::apply::update::dropped_update_error;
use crate::engine::{HistoryEngine, Shard};
use crate::read::storage;

/// How long one call waits for its stage before answering with the stage reached so far
/// (Temporal's history.longPollExpirationInterval); the SDK then polls again.
const UPDATE_LONG_POLL: Duration = Duration::from_secs(20);

/// Where an update is, as the API reports it.
struct Status {
    stage: Stage,
    outcome: Option<upd::Outcome>,
}

fn status_of(info: &pb::UpdateInfo) -> Status {
    use pb::update_info::Stage as S;
    match S::try_from(info.stage).unwrap_or(S::Unspecified) {
        S::Accepted => Status {
            stage: Stage::Accepted,
            outcome: None,
        },
        S::Completed | S::Rejected => Status {
            stage: Stage::Completed,
            outcome: info.outcome.clone(),
        },
        S::Admitted | S::Unspecified => Status {
            stage: Stage::Admitted,
            outcome: None,
        },
    }
}

impl HistoryEngine {
    pub(crate) async fn update_workflow_impl(
        &self,
        namespace_id: &str,
        request: ws::UpdateWorkflowExecutionRequest,
        start: Option<ws::StartWorkflowExecutionRequest>,
    ) -> ApiResult<(
        cmd::UpdateWorkflowResult,
        ws::UpdateWorkflowExecutionResponse,
    )> {
        let workflow_id = match &start {
            Some(start) => start.workflow_id.clone(),
            None => request
                .workflow_execution
                .as_ref()
                .map(|e| e.workflow_id.clone())
                .unwrap_or_default(),
        };
        let update_id = request
            .request
            .as_ref()
            .and_then(|r| r.meta.as_ref())
            .map(|m| m.update_id.clone())
            .unwrap_or_default();
        let wait = request
            .wait_policy
            .as_ref()
            .map(|p| Stage::try_from(p.lifecycle_stage).unwrap_or(Stage::Unspecified))
            .unwrap_or(Stage::Unspecified);
        let shard = &self.shard_of(namespace_id, &workflow_id);
        // Subscribed before proposing, so no change between the two goes unseen.
        let mut changes = shard.watch_workflow(namespace_id, &workflow_id);
        let mut request = request;
        if let Some(e) = request.workflow_execution.as_mut() {
            e.workflow_id = workflow_id.clone();
        } else {
            request.workflow_execution = Some(WorkflowExecution {
                workflow_id: workflow_id.clone(),
                run_id: String::new(),
            });
        }
        let result = self
            .propose(
                shard,
                Kind::UpdateWorkflow(cmd::UpdateWorkflow {
                    namespace_id: namespace_id.to_string(),
                    request: Some(request),
                    start: start.map(|request| cmd::StartWorkflow {
                        namespace_id: namespace_id.to_string(),
                        request: Some(request),
                        run_id: chronicle_types::new_run_id(),
                        scheduled_by: None,
                        eager_workflow_start: false,
                    }),
                }),
            )
            .await?;
        let command_result::Result::UpdateWorkflow(admitted) = result else {
            return Err(ApiError::internal("unexpected update result"));
        };
        let response = self
            .wait_update(
                shard,
                namespace_id,
                &workflow_id,
                &admitted.run_id,
                &update_id,
                wait,
                &mut changes,
            )
            .await?;
        Ok((
            admitted,
            ws::UpdateWorkflowExecutionResponse {
                update_ref: response.update_ref,
                outcome: response.outcome,
                stage: response.stage,
                ..Default::default()
            },
        ))
    }

    pub(crate) async fn poll_workflow_update_impl(
        &self,
        namespace_id: &str,
        request: ws::PollWorkflowExecutionUpdateRequest,
    ) -> ApiResult<ws::PollWorkflowExecutionUpdateResponse> {
        let update_ref = request
            .update_ref
            .ok_or_else(|| ApiError::invalid_argument("UpdateRef is not set on request."))?;
        let execution = update_ref.workflow_execution.unwrap_or_default();
        let shard = &self.shard_of(namespace_id, &execution.workflow_id);
        self.check_leader(shard)?;
        let mut changes = shard.watch_workflow(namespace_id, &execution.workflow_id);
        changes.mark_seen();
        let state = crate::read::load_state(shard, namespace_id, &Some(execution.clone()))?;
        if !state.updates.contains_key(&update_ref.update_id) {
            return Err(ApiError::not_found(format!(
                "update {:?} not found",
                update_ref.update_id
            )));
        }
        let wait = request
            .wait_policy
            .as_ref()
            .map(|p| Stage::try_from(p.lifecycle_stage).unwrap_or(Stage::Unspecified))
            .unwrap_or(Stage::Unspecified);
        self.wait_update(
            shard,
            namespace_id,
            &execution.workflow_id,
            &state.run_id,
            &update_ref.update_id,
            wait,
            &mut changes,
        )
        .await
    }

    /// Waits until the update reaches `wait` (or completes), at most [`UPDATE_LONG_POLL`]; then
    /// answers with the stage reached. An update the run dropped answers Temporal's error for
    /// why it was dropped.
    #[allow(clippy::too_many_arguments)]
    async fn wait_update(
        &self,
        shard: &Shard,
        namespace_id: &str,
        workflow_id: &str,
        run_id: &str,
        update_id: &str,
        wait: Stage,
        changes: &mut crate::notify::WorkflowWatch,
    ) -> ApiResult<ws::PollWorkflowExecutionUpdateResponse> {
        let deadline = tokio::time::Instant::now() + UPDATE_LONG_POLL;
        loop {
            changes.mark_seen();
            // Only the leader has every applied change; a deposed one sends the caller on.
            self.check_leader(shard)?;
            let state = shard
                .tables
                .execution(namespace_id, workflow_id, run_id)
                .map_err(storage)?
                .ok_or_else(|| ApiError::workflow_not_found_for(workflow_id, run_id))?;
            let Some(info) = state.updates.get(update_id) else {
                return Err(dropped_update_error(&state));
            };
            let status = status_of(info);
            let reached = match wait {
                Stage::Completed => status.stage == Stage::Completed,
                Stage::Accepted => status.stage != Stage::Admitted,
                Stage::Admitted | Stage::Unspecified => true,
            };
            // A closed run will not move an admitted update any further.
            let closed = state.status != WorkflowExecutionStatus::Running as i32;
            let timed_out = !reached
                && !closed
                && tokio::time::timeout_at(deadline, changes.changed())
                    .await
                    .is_err();
            if reached || closed || timed_out {
                return Ok(ws::PollWorkflowExecutionUpdateResponse {
                    outcome: status.outcome,
                    stage: status.stage as i32,
                    update_ref: Some(upd::UpdateRef {
                        workflow_execution: Some(WorkflowExecution {
                            workflow_id: workflow_id.to_string(),
                            run_id: run_id.to_string(),
                        }),
                        update_id: update_id.to_string(),
                    }),
                });
            }
        }
    }
}
