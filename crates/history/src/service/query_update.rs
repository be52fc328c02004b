//! Queries and update-with-start of the history service: a query waits for the next workflow
//! task or goes to a worker directly.

use std::time::Duration;

use chronicle_cluster::QueryTask;
use chronicle_proto::chronicle::persistence::v1 as pb;
use chronicle_proto::temporal::api::enums::v1::QueryResultType;
use chronicle_proto::temporal::api::errordetails::v1::QueryFailedFailure;
use chronicle_proto::temporal::api::history::v1::History;
use chronicle_proto::temporal::api::query::v1::{WorkflowQuery, WorkflowQueryResult};
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use chronicle_types::{ApiError, ApiResult};

use crate::engine::{HistoryEngine, Shard};
use crate::queries::{Registration, RunKey};
use crate::read;
use crate::tokens;

const QUERY_TIMEOUT: Duration = Duration::from_secs(20);

impl HistoryEngine {
    /// Sends a query to a worker as a query task: the run has no workflow task pending, so the
    /// worker's view (its last completed task) is the run's current state.
    async fn query_directly(
        &self,
        namespace_id: &str,
        shard: &Shard,
        execution: &Option<chronicle_proto::temporal::api::common::v1::WorkflowExecution>,
        query_id: String,
        query: WorkflowQuery,
    ) -> ApiResult<ws::QueryWorkflowResponse> {
        let state = read::load_state(shard, namespace_id, execution)?;
        if state.last_completed_workflow_task_started_event_id == 0 {
            return Err(ApiError::failed_precondition(
                "Cannot query workflow because the first workflow task has not completed yet.",
            ));
        }
        let token = pb::TaskToken {
            namespace_id: namespace_id.to_string(),
            workflow_id: state.workflow_id.clone(),
            run_id: state.run_id.clone(),
            query_id: query_id.clone(),
            ..Default::default()
        };
        let last =
            state
                .last_completed_workflow_task_started_event_id
                .max(if read::is_closed(&state) {
                    state.next_event_id - 1
                } else {
                    0
                });
        let (events, next_page_token) =
            read::history_page(shard, &state, 1, last, read::MAX_PAGE_EVENTS)?;
        let response = ws::PollWorkflowTaskQueueResponse {
            task_token: tokens::encode(&token),
            workflow_execution: Some(read::execution_of(&state)),
            workflow_type: state.workflow_type.clone(),
            previous_started_event_id: state.last_completed_workflow_task_started_event_id,
            started_event_id: last,
            history: Some(History { events }),
            next_page_token,
            query: Some(query),
            workflow_execution_task_queue: Some(
                chronicle_proto::temporal::api::taskqueue::v1::TaskQueue {
                    name: state.task_queue.clone(),
                    kind: 1,
                    normal_name: String::new(),
                },
            ),
            ..Default::default()
        };
        let answer = self
            .matching
            .query_workflow(
                namespace_id,
                &state.task_queue,
                QueryTask { query_id, response },
                QUERY_TIMEOUT,
            )
            .await?;
        query_result_response(WorkflowQueryResult {
            result_type: answer.completed_type,
            answer: answer.query_result,
            error_message: answer.error_message,
            failure: answer.failure,
        })
    }

    pub(super) async fn query_workflow_op(
        &self,
        namespace_id: &str,
        request: ws::QueryWorkflowRequest,
    ) -> ApiResult<ws::QueryWorkflowResponse> {
        let workflow_id = request
            .execution
            .as_ref()
            .map(|e| e.workflow_id.clone())
            .unwrap_or_default();
        let shard = &self.shard_of(namespace_id, &workflow_id);
        self.check_leader(shard)?;
        let state = read::load_state(shard, namespace_id, &request.execution)?;
        if let Some(rejected) = query_rejection(&state, request.query_reject_condition) {
            return Ok(ws::QueryWorkflowResponse {
                query_result: None,
                query_rejected: Some(rejected),
                ..Default::default()
            });
        }
        let Some(query) = request.query.clone() else {
            return Err(ApiError::invalid_argument("Query is not set on request."));
        };
        let key: RunKey = (
            namespace_id.to_string(),
            state.workflow_id.clone(),
            state.run_id.clone(),
        );
        let execution = Some(read::execution_of(&state));
        let query_id = uuid::Uuid::new_v4().to_string();
        // Subscribed before registering, so no change between the two goes unseen.
        let mut changes = shard.watch_workflow(namespace_id, &workflow_id);
        let mut must_buffer_error = None;
        let registration = self.queries.register(&key, &query_id, query.clone(), || {
            match read::load_state(shard, namespace_id, &execution) {
                Ok(current) => must_buffer(&current),
                Err(e) => {
                    must_buffer_error = Some(e);
                    false
                }
            }
        });
        if let Some(e) = must_buffer_error {
            return Err(e);
        }
        let mut answer = match registration {
            Registration::Direct => {
                return self
                    .query_directly(namespace_id, shard, &execution, query_id, query)
                    .await;
            }
            Registration::Full => {
                return Err(ApiError::resource_exhausted(format!(
                    "Too many queries are waiting for this workflow's next workflow task (limit {}).",
                    crate::queries::MAX_BUFFERED_QUERIES_PER_RUN
                )));
            }
            Registration::Buffered(rx) => rx,
        };
        // Wait for the answer on a workflow task; re-check on every change of the shard (and
        // now and then, should a completion that carried the answer have failed) whether the run
        // reached a point where the query can go to a worker directly instead.
        let deadline = tokio::time::Instant::now() + QUERY_TIMEOUT;
        let mut recheck = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                result = &mut answer => {
                    return match result {
                        Ok(result) => query_result_response(result),
                        // The sender is only dropped with its entry; treat as "ask directly".
                        Err(_) => self.query_directly(namespace_id, shard, &execution, query_id, query).await,
                    };
                }
                _ = changes.changed() => {}
                _ = recheck.tick() => {}
                _ = tokio::time::sleep_until(deadline) => {
                    self.queries.remove(&key, &query_id);
                    return Err(ApiError::deadline_exceeded(
                        "query timed out waiting for the workflow's next workflow task",
                    ));
                }
            }
            let safe = || {
                read::load_state(shard, namespace_id, &execution)
                    .map(|current| !must_buffer(&current))
                    .unwrap_or(true)
            };
            if self.queries.take_if(&key, &query_id, safe) {
                return self
                    .query_directly(namespace_id, shard, &execution, query_id, query)
                    .await;
            }
        }
    }

    pub(super) async fn update_with_start_op(
        &self,
        namespace_id: &str,
        start: ws::StartWorkflowExecutionRequest,
        update: ws::UpdateWorkflowExecutionRequest,
    ) -> ApiResult<(
        ws::StartWorkflowExecutionResponse,
        ws::UpdateWorkflowExecutionResponse,
    )> {
        let (admitted, response) = self
            .update_workflow_impl(namespace_id, update, Some(start))
            .await?;
        let started = ws::StartWorkflowExecutionResponse {
            run_id: admitted.run_id,
            started: admitted.started,
            status: chronicle_proto::temporal::api::enums::v1::WorkflowExecutionStatus::Running
                as i32,
            ..Default::default()
        };
        Ok((started, response))
    }
}

/// True while the run has a workflow task scheduled or running: a query must then wait for it.
fn must_buffer(state: &pb::WorkflowExecutionState) -> bool {
    !read::is_closed(state) && state.workflow_task.is_some()
}

/// Temporal's `QueryRejectCondition`: a closed run can refuse queries instead of answering them.
fn query_rejection(
    state: &pb::WorkflowExecutionState,
    condition: i32,
) -> Option<chronicle_proto::temporal::api::query::v1::QueryRejected> {
    use chronicle_proto::temporal::api::enums::v1::{
        QueryRejectCondition, WorkflowExecutionStatus,
    };
    let closed = read::is_closed(state);
    let reject =
        match QueryRejectCondition::try_from(condition).unwrap_or(QueryRejectCondition::None) {
            QueryRejectCondition::NotOpen => closed,
            QueryRejectCondition::NotCompletedCleanly => {
                closed && state.status != WorkflowExecutionStatus::Completed as i32
            }
            _ => false,
        };
    reject.then_some(chronicle_proto::temporal::api::query::v1::QueryRejected {
        status: state.status,
    })
}

fn query_result_response(result: WorkflowQueryResult) -> ApiResult<ws::QueryWorkflowResponse> {
    if result.result_type == QueryResultType::Answered as i32 {
        Ok(ws::QueryWorkflowResponse {
            query_result: result.answer,
            query_rejected: None,
            ..Default::default()
        })
    } else {
        Err(
            ApiError::invalid_argument(result.error_message.clone()).with_detail(
                &QueryFailedFailure {
                    failure: result.failure.clone(),
                },
            ),
        )
    }
}
