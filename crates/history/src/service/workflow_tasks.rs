//! Workflow task RPCs of the history service: recording a task as started and a worker's
//! answers to it.

use chronicle_cluster::{PollerInfo, TaskRef};
use chronicle_proto::chronicle::history::v1::{self as cmd, command_result, shard_command::Kind};
use chronicle_proto::chronicle::persistence::v1 as pb;
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use chronicle_types::{ApiError, ApiResult};

use crate::engine::{HistoryEngine, Shard};
use crate::queries::RunKey;
use crate::read::{self, storage};
use crate::tokens;

impl HistoryEngine {
    fn token_shard(
        &self,
        namespace_id: &str,
        token: &pb::TaskToken,
    ) -> ApiResult<std::sync::Arc<Shard>> {
        if token.namespace_id != namespace_id {
            return Err(ApiError::invalid_argument(
                "Task token does not belong to the request's namespace.",
            ));
        }
        Ok(self.shard_of(&token.namespace_id, &token.workflow_id))
    }

    /// Temporal's `task_schedule_to_start_latency` of a task that just started.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn record_schedule_to_start(
        &self,
        operation: &'static str,
        task_type: &'static str,
        namespace_id: &str,
        task_queue: &str,
        sticky: bool,
        scheduled: Option<&chronicle_proto::wkt::Timestamp>,
        started: Option<&chronicle_proto::wkt::Timestamp>,
    ) {
        let (Some(scheduled), Some(started)) = (scheduled, started) else {
            return;
        };
        let millis =
            chronicle_types::time::millis(started) - chronicle_types::time::millis(scheduled);
        metrics::histogram!(
            crate::metric_defs::TASK_SCHEDULE_TO_START_LATENCY,
            "service_name" => crate::metric_defs::SERVICE_NAME,
            "operation" => operation,
            "namespace" => self.namespace_name(namespace_id),
            "task_type" => task_type,
            "taskqueue" => task_queue.to_string(),
            "partition" => if sticky { "__sticky__" } else { "__normal__" },
        )
        .record(millis.max(0) as f64 / 1000.0);
    }

    pub(super) async fn record_workflow_task_started_op(
        &self,
        task: &TaskRef,
        poller: &PollerInfo,
    ) -> ApiResult<ws::PollWorkflowTaskQueueResponse> {
        let _measure = crate::metric_defs::RequestTimer::new(
            crate::metric_defs::SERVICE_NAME,
            "RecordWorkflowTaskStarted",
            self.namespace_name(&task.namespace_id),
        );
        let shard = &self.shard_of(&task.namespace_id, &task.workflow_id);
        let limits = self
            .config
            .history_limits
            .for_namespace(&self.namespace_name(&task.namespace_id));
        let result = self
            .propose(
                shard,
                Kind::RecordWorkflowTaskStarted(cmd::RecordWorkflowTaskStarted {
                    namespace_id: task.namespace_id.clone(),
                    workflow_id: task.workflow_id.clone(),
                    run_id: task.run_id.clone(),
                    scheduled_event_id: task.scheduled_event_id,
                    request_id: poller.request_id.clone(),
                    identity: poller.identity.clone(),
                    outbox_id: task.outbox_id as i64,
                    suggest_continue_as_new_events: limits.suggest_events,
                    suggest_continue_as_new_bytes: limits.suggest_bytes,
                }),
            )
            .await?;
        let command_result::Result::WorkflowTaskStarted(started) = result else {
            return Err(ApiError::internal("unexpected record-started result"));
        };
        if started.stale {
            return Err(ApiError::not_found("Workflow task not found."));
        }
        let state = shard
            .tables
            .execution(&task.namespace_id, &task.workflow_id, &task.run_id)
            .map_err(storage)?
            .ok_or_else(|| ApiError::workflow_not_found_for(&task.workflow_id, &task.run_id))?;
        self.record_schedule_to_start(
            "RecordWorkflowTaskStarted",
            "Workflow",
            &task.namespace_id,
            &state.task_queue,
            task.sticky,
            started.scheduled_time.as_ref(),
            started.started_time.as_ref(),
        );
        let token = pb::TaskToken {
            namespace_id: task.namespace_id.clone(),
            workflow_id: task.workflow_id.clone(),
            run_id: task.run_id.clone(),
            scheduled_event_id: started.scheduled_event_id,
            attempt: started.attempt,
            started_event_id: started.started_event_id,
            started_request_id: poller.request_id.clone(),
            ..Default::default()
        };
        let mut response =
            read::workflow_task_response(shard, &state, &started, tokens::encode(&token))?;
        response.messages =
            crate::apply::update::request_messages(&state, started.started_event_id);
        response.queries = self.queries.attach(&(
            task.namespace_id.clone(),
            task.workflow_id.clone(),
            task.run_id.clone(),
        ));
        Ok(response)
    }

    pub(super) async fn sticky_worker_unavailable_op(&self, task: &TaskRef) -> ApiResult<()> {
        let shard = &self.shard_of(&task.namespace_id, &task.workflow_id);
        self.propose(
            shard,
            Kind::StickyWorkerUnavailable(cmd::StickyWorkerUnavailable {
                namespace_id: task.namespace_id.clone(),
                workflow_id: task.workflow_id.clone(),
                run_id: task.run_id.clone(),
                scheduled_event_id: task.scheduled_event_id,
            }),
        )
        .await?;
        Ok(())
    }

    pub(super) async fn respond_workflow_task_completed_op(
        &self,
        namespace_id: &str,
        request: ws::RespondWorkflowTaskCompletedRequest,
    ) -> ApiResult<ws::RespondWorkflowTaskCompletedResponse> {
        let token = tokens::decode(&request.task_token)?;
        let shard = &self.token_shard(namespace_id, &token)?;
        let key: RunKey = (
            token.namespace_id.clone(),
            token.workflow_id.clone(),
            token.run_id.clone(),
        );
        let (nexus_endpoints, nexus_request_ids) = self.resolve_nexus_commands(&request)?;
        let query_results = request.query_results.clone();
        let limits = self
            .config
            .history_limits
            .for_namespace(&self.namespace_name(&token.namespace_id));
        // Query results count only once the completion commits (a stale task's do not).
        self.queries.set_answering(&key, query_results.keys(), true);
        let committed = self
            .propose(
                shard,
                Kind::CompleteWorkflowTask(cmd::CompleteWorkflowTask {
                    token: Some(token),
                    nexus_endpoints,
                    nexus_request_ids,
                    request: Some(request),
                    new_run_id: chronicle_types::new_run_id(),
                    eager_activities: self.config.eager_activities,
                    max_history_events: limits.max_events,
                    max_history_bytes: limits.max_bytes,
                }),
            )
            .await;
        let result = match committed {
            Ok(result) => {
                self.queries.answer(&key, query_results);
                result
            }
            Err(e) => {
                self.queries
                    .set_answering(&key, query_results.keys(), false);
                return Err(e);
            }
        };
        let mut response = ws::RespondWorkflowTaskCompletedResponse::default();
        if let command_result::Result::CompleteWorkflowTask(completed) = result {
            response.reset_history_event_id = completed.reset_history_event_id;
            for started in completed.eager_activities {
                response
                    .activity_tasks
                    .push(self.activity_task_response(&key.0, &key.1, &key.2, started)?);
            }
        }
        Ok(response)
    }

    pub(super) async fn respond_workflow_task_failed_op(
        &self,
        namespace_id: &str,
        request: ws::RespondWorkflowTaskFailedRequest,
    ) -> ApiResult<()> {
        let token = tokens::decode(&request.task_token)?;
        let shard = &self.token_shard(namespace_id, &token)?;
        self.propose(
            shard,
            Kind::FailWorkflowTask(cmd::FailWorkflowTask {
                token: Some(token),
                request: Some(request),
            }),
        )
        .await?;
        Ok(())
    }
}
