//! `HistoryService` on top of the engine: requests become shard commands; reads go to the
//! shard's tables after the commands they depend on were applied.

use std::time::Duration;

use async_trait::async_trait;
use chronicle_cluster::{
    ActivityHeartbeat, ActivityOutcome, ActivityResult, ActivityTarget, HeartbeatOutcome,
    HistoryService, PollerInfo, QueryTask, TaskRef,
};
use chronicle_proto::chronicle::history::v1::{
    self as cmd, command_result, respond_activity, shard_command::Kind,
};
use chronicle_proto::chronicle::persistence::v1::{self as pb, NamespaceRecord};
use chronicle_proto::temporal::api::enums::v1::{HistoryEventFilterType, QueryResultType};
use chronicle_proto::temporal::api::errordetails::v1::QueryFailedFailure;
use chronicle_proto::temporal::api::history::v1::History;
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use chronicle_types::{ApiError, ApiResult};

use crate::engine::{HistoryEngine, Shard};
use crate::queries::{Registration, RunKey};
use crate::read::{self, storage};
use crate::tokens::{self, PageToken};
use chronicle_proto::temporal::api::query::v1::{WorkflowQuery, WorkflowQueryResult};

/// Longest wait of a history long poll before it answers "nothing new yet".
const HISTORY_LONG_POLL: Duration = Duration::from_secs(20);
const QUERY_TIMEOUT: Duration = Duration::from_secs(20);

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

    pub(crate) async fn wait_for_change(
        &self,
        deadline: tokio::time::Instant,
        watch: &mut crate::notify::WorkflowWatch,
    ) -> bool {
        tokio::time::timeout_at(deadline, watch.changed())
            .await
            .is_ok()
    }

    fn activity_target_token(
        &self,
        namespace_id: &str,
        target: &ActivityTarget,
    ) -> ApiResult<pb::TaskToken> {
        match target {
            ActivityTarget::Token(bytes) => {
                let token = tokens::decode(bytes)?;
                if token.namespace_id != namespace_id {
                    return Err(ApiError::invalid_argument(
                        "Task token does not belong to the request's namespace.",
                    ));
                }
                Ok(token)
            }
            ActivityTarget::ById {
                workflow_id,
                run_id,
                activity_id,
            } => {
                if workflow_id.is_empty() || activity_id.is_empty() {
                    return Err(ApiError::invalid_argument(
                        "WorkflowId and ActivityId are required.",
                    ));
                }
                Ok(pb::TaskToken {
                    namespace_id: namespace_id.to_string(),
                    workflow_id: workflow_id.clone(),
                    run_id: run_id.clone(),
                    activity_id: activity_id.clone(),
                    is_activity: true,
                    ..Default::default()
                })
            }
        }
    }

    /// The activity task a worker gets for a started attempt: a poll's answer, or an eager
    /// activity in a workflow task completion's answer.
    fn activity_task_response(
        &self,
        namespace_id: &str,
        workflow_id: &str,
        run_id: &str,
        started: cmd::RecordActivityTaskStartedResult,
    ) -> ApiResult<ws::PollActivityTaskQueueResponse> {
        let Some(activity) = started.activity else {
            return Err(ApiError::not_found("Activity task not found."));
        };
        let token = pb::TaskToken {
            namespace_id: namespace_id.to_string(),
            workflow_id: workflow_id.to_string(),
            run_id: run_id.to_string(),
            scheduled_event_id: activity.scheduled_event_id,
            attempt: activity.attempt,
            is_activity: true,
            activity_id: activity.activity_id.clone(),
            ..Default::default()
        };
        // A standalone activity's task names no workflow, and its run ID is the activity's.
        let standalone = chronicle_types::standalone_activity::is_key(workflow_id);
        Ok(ws::PollActivityTaskQueueResponse {
            task_token: tokens::encode(&token),
            workflow_namespace: self.namespace_name(namespace_id),
            workflow_type: if standalone {
                None
            } else {
                started.workflow_type
            },
            workflow_execution: (!standalone).then(|| {
                chronicle_proto::temporal::api::common::v1::WorkflowExecution {
                    workflow_id: workflow_id.to_string(),
                    run_id: run_id.to_string(),
                }
            }),
            activity_run_id: if standalone {
                run_id.to_string()
            } else {
                String::new()
            },
            activity_type: activity.activity_type,
            activity_id: activity.activity_id,
            header: activity.header,
            input: activity.input,
            heartbeat_details: activity.heartbeat_details,
            scheduled_time: activity.first_scheduled_time,
            current_attempt_scheduled_time: activity.scheduled_time,
            started_time: activity.started_time,
            attempt: activity.attempt,
            schedule_to_close_timeout: activity.schedule_to_close_timeout,
            start_to_close_timeout: activity.start_to_close_timeout,
            heartbeat_timeout: activity.heartbeat_timeout,
            retry_policy: activity.retry_policy,
            priority: activity.priority,
            ..Default::default()
        })
    }

    /// Temporal's `task_schedule_to_start_latency` of a task that just started.
    #[allow(clippy::too_many_arguments)]
    fn record_schedule_to_start(
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

    /// The poll answer for a workflow task an eager start recorded as started.
    fn eager_workflow_task(
        &self,
        shard: &Shard,
        namespace_id: &str,
        workflow_id: &str,
        run_id: &str,
        request_id: &str,
        started: &cmd::RecordWorkflowTaskStartedResult,
    ) -> ApiResult<ws::PollWorkflowTaskQueueResponse> {
        let state = shard
            .tables
            .execution(namespace_id, workflow_id, run_id)
            .map_err(storage)?
            .ok_or_else(|| ApiError::workflow_not_found_for(workflow_id, run_id))?;
        let token = pb::TaskToken {
            namespace_id: namespace_id.to_string(),
            workflow_id: workflow_id.to_string(),
            run_id: run_id.to_string(),
            scheduled_event_id: started.scheduled_event_id,
            attempt: started.attempt,
            started_event_id: started.started_event_id,
            started_request_id: request_id.to_string(),
            ..Default::default()
        };
        read::workflow_task_response(shard, &state, started, tokens::encode(&token))
    }

    /// The name of namespace `namespace_id` as this node's metadata replica holds it (answers,
    /// metric labels); empty for an unknown ID.
    pub fn namespace_name(&self, namespace_id: &str) -> String {
        self.namespace_names.name(namespace_id)
    }

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

#[async_trait]
impl HistoryService for HistoryEngine {
    async fn cluster_id(&self) -> ApiResult<String> {
        self.reported_cluster_id()
    }

    async fn register_namespace(&self, record: NamespaceRecord) -> ApiResult<()> {
        self.propose(
            &self.metadata,
            Kind::UpsertNamespace(cmd::UpsertNamespace {
                record: Some(record),
                create: true,
                search_attributes: None,
            }),
        )
        .await?;
        Ok(())
    }

    async fn update_namespace(&self, record: NamespaceRecord) -> ApiResult<()> {
        self.propose(
            &self.metadata,
            Kind::UpsertNamespace(cmd::UpsertNamespace {
                record: Some(record),
                create: false,
                search_attributes: None,
            }),
        )
        .await?;
        Ok(())
    }

    async fn namespace_by_name(&self, name: &str) -> ApiResult<NamespaceRecord> {
        // Served by the metadata leader, so a namespace just registered is found.
        self.check_leader(&self.metadata)?;
        self.metadata
            .tables
            .namespace(name)
            .map_err(storage)?
            .ok_or_else(|| ApiError::namespace_not_found(name))
    }

    async fn list_namespaces(&self) -> ApiResult<Vec<NamespaceRecord>> {
        self.check_leader(&self.metadata)?;
        self.metadata.tables.namespaces().map_err(storage)
    }

    async fn update_search_attributes(
        &self,
        namespace: &str,
        add: std::collections::BTreeMap<String, i32>,
        remove: Vec<String>,
    ) -> ApiResult<()> {
        self.propose(
            &self.metadata,
            Kind::UpsertNamespace(crate::apply::namespace::search_attributes_change(
                namespace, add, remove,
            )),
        )
        .await?;
        Ok(())
    }

    async fn start_workflow(
        &self,
        namespace_id: &str,
        request: ws::StartWorkflowExecutionRequest,
    ) -> ApiResult<ws::StartWorkflowExecutionResponse> {
        let shard = &self.shard_of(namespace_id, &request.workflow_id);
        let run_id = chronicle_types::new_run_id();
        let (workflow_id, request_id) = (request.workflow_id.clone(), request.request_id.clone());
        let attaching = crate::apply::attach_callbacks::attaches(&request);
        let result = self
            .propose(
                shard,
                Kind::StartWorkflow(cmd::StartWorkflow {
                    namespace_id: namespace_id.to_string(),
                    request: Some(request),
                    run_id,
                    scheduled_by: None,
                    // Temporal's system.enableEagerWorkflowStart, on by default.
                    eager_workflow_start: true,
                }),
            )
            .await?;
        let command_result::Result::StartWorkflow(started) = result else {
            return Err(ApiError::internal("unexpected start result"));
        };
        let eager_workflow_task = match &started.eager_workflow_task {
            Some(task) => Some(self.eager_workflow_task(
                shard,
                namespace_id,
                &workflow_id,
                &started.run_id,
                &request_id,
                task,
            )?),
            None => None,
        };
        Ok(ws::StartWorkflowExecutionResponse {
            // As Temporal: a link to the run's Started event (a Nexus handler passes it on), or
            // to the options update that attached this request to a running run.
            link: Some(if attaching && !started.started {
                crate::apply::nexus_async::request_id_link(
                    &self.namespace_name(namespace_id),
                    &workflow_id,
                    &started.run_id,
                    &request_id,
                    chronicle_proto::temporal::api::enums::v1::EventType::WorkflowExecutionOptionsUpdated,
                )
            } else {
                crate::apply::nexus_async::workflow_event_link(
                    &self.namespace_name(namespace_id),
                    &workflow_id,
                    &started.run_id,
                    1,
                    chronicle_proto::temporal::api::enums::v1::EventType::WorkflowExecutionStarted,
                )
            }),
            run_id: started.run_id,
            started: started.started,
            status: chronicle_proto::temporal::api::enums::v1::WorkflowExecutionStatus::Running
                as i32,
            eager_workflow_task,
            ..Default::default()
        })
    }

    async fn signal_workflow(
        &self,
        namespace_id: &str,
        request: ws::SignalWorkflowExecutionRequest,
    ) -> ApiResult<()> {
        let workflow_id = request
            .workflow_execution
            .as_ref()
            .map(|e| e.workflow_id.clone())
            .unwrap_or_default();
        let shard = &self.shard_of(namespace_id, &workflow_id);
        self.propose(
            shard,
            Kind::SignalWorkflow(cmd::SignalWorkflow {
                namespace_id: namespace_id.to_string(),
                request: Some(request),
                external: None,
            }),
        )
        .await?;
        Ok(())
    }

    async fn signal_with_start(
        &self,
        namespace_id: &str,
        request: ws::SignalWithStartWorkflowExecutionRequest,
    ) -> ApiResult<ws::SignalWithStartWorkflowExecutionResponse> {
        let shard = &self.shard_of(namespace_id, &request.workflow_id);
        let result = self
            .propose(
                shard,
                Kind::SignalWithStart(cmd::SignalWithStart {
                    namespace_id: namespace_id.to_string(),
                    request: Some(request),
                    run_id: chronicle_types::new_run_id(),
                }),
            )
            .await?;
        let command_result::Result::StartWorkflow(started) = result else {
            return Err(ApiError::internal("unexpected signal-with-start result"));
        };
        Ok(ws::SignalWithStartWorkflowExecutionResponse {
            run_id: started.run_id,
            started: started.started,
            ..Default::default()
        })
    }

    async fn terminate_workflow(
        &self,
        namespace_id: &str,
        request: ws::TerminateWorkflowExecutionRequest,
    ) -> ApiResult<()> {
        let workflow_id = request
            .workflow_execution
            .as_ref()
            .map(|e| e.workflow_id.clone())
            .unwrap_or_default();
        let shard = &self.shard_of(namespace_id, &workflow_id);
        self.propose(
            shard,
            Kind::TerminateWorkflow(cmd::TerminateWorkflow {
                namespace_id: namespace_id.to_string(),
                request: Some(request),
            }),
        )
        .await?;
        Ok(())
    }

    async fn reset_workflow(
        &self,
        namespace_id: &str,
        request: ws::ResetWorkflowExecutionRequest,
    ) -> ApiResult<ws::ResetWorkflowExecutionResponse> {
        self.reset(namespace_id, request).await
    }

    async fn delete_workflow_execution(
        &self,
        namespace_id: &str,
        request: ws::DeleteWorkflowExecutionRequest,
    ) -> ApiResult<()> {
        let execution = request.workflow_execution.unwrap_or_default();
        let shard = &self.shard_of(namespace_id, &execution.workflow_id);
        self.propose(
            shard,
            Kind::DeleteWorkflowExecution(cmd::DeleteWorkflowExecution {
                namespace_id: namespace_id.to_string(),
                execution: Some(execution),
                closed_only: false,
            }),
        )
        .await?;
        Ok(())
    }

    async fn delete_namespace(&self, command: cmd::DeleteNamespace) -> ApiResult<()> {
        self.propose(&self.metadata, Kind::DeleteNamespace(command))
            .await?;
        Ok(())
    }

    async fn request_cancel_workflow(
        &self,
        namespace_id: &str,
        request: ws::RequestCancelWorkflowExecutionRequest,
    ) -> ApiResult<()> {
        let workflow_id = request
            .workflow_execution
            .as_ref()
            .map(|e| e.workflow_id.clone())
            .unwrap_or_default();
        let shard = &self.shard_of(namespace_id, &workflow_id);
        self.propose(
            shard,
            Kind::RequestCancelWorkflow(cmd::RequestCancelWorkflow {
                namespace_id: namespace_id.to_string(),
                request: Some(request),
                external: None,
            }),
        )
        .await?;
        Ok(())
    }

    async fn describe_workflow(
        &self,
        namespace_id: &str,
        request: ws::DescribeWorkflowExecutionRequest,
    ) -> ApiResult<ws::DescribeWorkflowExecutionResponse> {
        let workflow_id = request
            .execution
            .as_ref()
            .map(|e| e.workflow_id.clone())
            .unwrap_or_default();
        let shard = &self.shard_of(namespace_id, &workflow_id);
        self.check_leader(shard)?;
        let state = read::load_state(shard, namespace_id, &request.execution)?;
        let mut described = read::describe(&state);
        if !state.completion_callbacks.is_empty() {
            let pending = crate::nexus_callbacks::delivery_pending(shard, &state)?;
            described.callbacks = crate::nexus_callbacks::callback_infos(&state, pending);
        }
        Ok(described)
    }

    async fn get_history(
        &self,
        namespace_id: &str,
        request: ws::GetWorkflowExecutionHistoryRequest,
    ) -> ApiResult<ws::GetWorkflowExecutionHistoryResponse> {
        let mut execution = request.execution.clone().unwrap_or_default();
        let token = if request.next_page_token.is_empty() {
            None
        } else {
            Some(PageToken::decode(&request.next_page_token)?)
        };
        if let Some(t) = &token {
            execution.run_id = t.run_id.clone();
        }
        let shard = &self.shard_of(namespace_id, &execution.workflow_id);
        self.check_leader(shard)?;
        let close_only =
            request.history_event_filter_type == HistoryEventFilterType::CloseEvent as i32;
        let page_size = if request.maximum_page_size > 0 {
            request.maximum_page_size as usize
        } else {
            read::MAX_PAGE_EVENTS
        };
        let deadline = tokio::time::Instant::now() + HISTORY_LONG_POLL;
        let mut changes = shard.watch_workflow(namespace_id, &execution.workflow_id);
        loop {
            changes.mark_seen();
            let state = read::load_state(shard, namespace_id, &Some(execution.clone()))?;
            execution.run_id = state.run_id.clone();
            let from = token.as_ref().map(|t| t.next_event_id).unwrap_or(1);
            let to = token.as_ref().map(|t| t.last_event_id).unwrap_or(0);
            if close_only {
                if read::is_closed(&state) {
                    let (events, _) = read::history_page(
                        shard,
                        &state,
                        state.completion_event_id,
                        state.completion_event_id,
                        1,
                    )?;
                    return Ok(ws::GetWorkflowExecutionHistoryResponse {
                        history: Some(History { events }),
                        ..Default::default()
                    });
                }
            } else {
                let (events, next) = read::history_page(shard, &state, from, to, page_size)?;
                let waiting =
                    request.wait_new_event && events.is_empty() && !read::is_closed(&state);
                if !waiting {
                    // A long poller on an open run keeps a token to continue from.
                    let next =
                        if next.is_empty() && request.wait_new_event && !read::is_closed(&state) {
                            PageToken {
                                next_event_id: state.next_event_id,
                                last_event_id: 0,
                                run_id: state.run_id.clone(),
                            }
                            .encode()
                        } else {
                            next
                        };
                    return Ok(ws::GetWorkflowExecutionHistoryResponse {
                        history: Some(History { events }),
                        next_page_token: next,
                        ..Default::default()
                    });
                }
            }
            if !request.wait_new_event {
                return Ok(ws::GetWorkflowExecutionHistoryResponse {
                    history: Some(History::default()),
                    ..Default::default()
                });
            }
            if !self.wait_for_change(deadline, &mut changes).await {
                // Nothing new in time: an empty page and a token to poll again.
                let next = PageToken {
                    next_event_id: state.next_event_id.max(from),
                    last_event_id: 0,
                    run_id: state.run_id.clone(),
                }
                .encode();
                return Ok(ws::GetWorkflowExecutionHistoryResponse {
                    history: Some(History::default()),
                    next_page_token: next,
                    ..Default::default()
                });
            }
        }
    }

    async fn get_history_reverse(
        &self,
        namespace_id: &str,
        request: ws::GetWorkflowExecutionHistoryReverseRequest,
    ) -> ApiResult<ws::GetWorkflowExecutionHistoryReverseResponse> {
        let mut execution = request.execution.clone().unwrap_or_default();
        let token = if request.next_page_token.is_empty() {
            None
        } else {
            Some(PageToken::decode(&request.next_page_token)?)
        };
        if let Some(t) = &token {
            execution.run_id = t.run_id.clone();
        }
        let shard = &self.shard_of(namespace_id, &execution.workflow_id);
        self.check_leader(shard)?;
        let state = read::load_state(shard, namespace_id, &Some(execution))?;
        let page_size = if request.maximum_page_size > 0 {
            request.maximum_page_size as usize
        } else {
            read::MAX_PAGE_EVENTS
        }
        .min(read::MAX_PAGE_EVENTS);
        let top = token
            .map(|t| t.next_event_id)
            .unwrap_or(state.next_event_id - 1);
        let (bottom, top) = crate::tokens::reverse_span(top, page_size);
        let (mut events, _) = read::history_page(shard, &state, bottom, top, page_size)?;
        events.reverse();
        let next_page_token = if bottom > 1 {
            PageToken {
                next_event_id: bottom - 1,
                last_event_id: 0,
                run_id: state.run_id.clone(),
            }
            .encode()
        } else {
            Vec::new()
        };
        Ok(ws::GetWorkflowExecutionHistoryReverseResponse {
            history: Some(History { events }),
            next_page_token,
        })
    }

    async fn list_workflows(
        &self,
        request: chronicle_proto::chronicle::history::v1::ListWorkflowsRequest,
    ) -> ApiResult<chronicle_proto::chronicle::history::v1::ListWorkflowsResponse> {
        crate::visibility::list(self, request)
    }

    async fn query_workflow(
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

    async fn update_workflow(
        &self,
        namespace_id: &str,
        request: ws::UpdateWorkflowExecutionRequest,
    ) -> ApiResult<ws::UpdateWorkflowExecutionResponse> {
        Ok(self
            .update_workflow_impl(namespace_id, request, None)
            .await?
            .1)
    }

    async fn poll_workflow_update(
        &self,
        namespace_id: &str,
        request: ws::PollWorkflowExecutionUpdateRequest,
    ) -> ApiResult<ws::PollWorkflowExecutionUpdateResponse> {
        self.poll_workflow_update_impl(namespace_id, request).await
    }

    async fn update_with_start(
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

    async fn record_workflow_task_started(
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
                    suggest_continue_as_new_events: self.config.suggest_continue_as_new_events,
                    suggest_continue_as_new_bytes: self.config.suggest_continue_as_new_bytes,
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

    async fn record_activity_task_started(
        &self,
        task: &TaskRef,
        poller: &PollerInfo,
    ) -> ApiResult<ws::PollActivityTaskQueueResponse> {
        let _measure = crate::metric_defs::RequestTimer::new(
            crate::metric_defs::SERVICE_NAME,
            "RecordActivityTaskStarted",
            self.namespace_name(&task.namespace_id),
        );
        let shard = &self.shard_of(&task.namespace_id, &task.workflow_id);
        let result = self
            .propose(
                shard,
                Kind::RecordActivityTaskStarted(cmd::RecordActivityTaskStarted {
                    namespace_id: task.namespace_id.clone(),
                    workflow_id: task.workflow_id.clone(),
                    run_id: task.run_id.clone(),
                    scheduled_event_id: task.scheduled_event_id,
                    attempt: task.attempt,
                    request_id: poller.request_id.clone(),
                    identity: poller.identity.clone(),
                    outbox_id: task.outbox_id as i64,
                    worker_control_task_queue: poller.worker_control_task_queue.clone(),
                }),
            )
            .await?;
        let command_result::Result::ActivityTaskStarted(started) = result else {
            return Err(ApiError::internal("unexpected record-started result"));
        };
        if started.stale {
            return Err(ApiError::not_found("Activity task not found."));
        }
        if let Some(activity) = &started.activity {
            self.record_schedule_to_start(
                "RecordActivityTaskStarted",
                "Activity",
                &task.namespace_id,
                activity
                    .task_queue
                    .as_ref()
                    .map(|q| q.name.as_str())
                    .unwrap_or_default(),
                false,
                activity.scheduled_time.as_ref(),
                activity.started_time.as_ref(),
            );
        }
        self.activity_task_response(&task.namespace_id, &task.workflow_id, &task.run_id, started)
    }

    async fn sticky_worker_unavailable(&self, task: &TaskRef) -> ApiResult<()> {
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

    async fn respond_workflow_task_completed(
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

    async fn respond_workflow_task_failed(
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

    async fn respond_activity(
        &self,
        namespace_id: &str,
        outcome: ActivityOutcome,
    ) -> ApiResult<()> {
        let token = self.activity_target_token(namespace_id, &outcome.target)?;
        let shard = &self.shard_of(namespace_id, &token.workflow_id);
        let identity = outcome.identity.clone();
        let outcome = match outcome.result {
            ActivityResult::Completed(result) => {
                respond_activity::Outcome::Completed(ws::RespondActivityTaskCompletedRequest {
                    result,
                    identity,
                    ..Default::default()
                })
            }
            ActivityResult::Failed {
                failure,
                last_heartbeat_details,
            } => respond_activity::Outcome::Failed(ws::RespondActivityTaskFailedRequest {
                failure,
                identity,
                last_heartbeat_details,
                ..Default::default()
            }),
            ActivityResult::Canceled(details) => {
                respond_activity::Outcome::Canceled(ws::RespondActivityTaskCanceledRequest {
                    details,
                    identity,
                    ..Default::default()
                })
            }
        };
        self.propose(
            shard,
            Kind::RespondActivity(cmd::RespondActivity {
                token: Some(token),
                outcome: Some(outcome),
            }),
        )
        .await?;
        Ok(())
    }

    async fn record_activity_heartbeat(
        &self,
        namespace_id: &str,
        heartbeat: ActivityHeartbeat,
    ) -> ApiResult<HeartbeatOutcome> {
        let token = self.activity_target_token(namespace_id, &heartbeat.target)?;
        let shard = &self.shard_of(namespace_id, &token.workflow_id);
        let result = self
            .propose(
                shard,
                Kind::RecordActivityHeartbeat(cmd::RecordActivityHeartbeat {
                    token: Some(token),
                    details: heartbeat.details,
                    identity: heartbeat.identity,
                }),
            )
            .await?;
        match result {
            command_result::Result::Heartbeat(h) => Ok(HeartbeatOutcome {
                cancel_requested: h.cancel_requested,
                activity_paused: h.activity_paused,
                activity_reset: h.activity_reset,
            }),
            _ => Err(ApiError::internal("unexpected heartbeat result")),
        }
    }

    async fn run_operation(
        &self,
        mut operation: cmd::RunOperation,
    ) -> ApiResult<cmd::RunOperationResult> {
        let shard = &self.shard_of(&operation.namespace_id, &operation.workflow_id);
        // The leader draws the randomness of any jitter, so replicas agree on it.
        operation.jitter_seed = uuid::Uuid::new_v4().as_u64_pair().0;
        match self.propose(shard, Kind::RunOperation(operation)).await? {
            command_result::Result::RunOperation(r) => Ok(r),
            _ => Err(ApiError::internal("unexpected run operation result")),
        }
    }

    async fn propose_transfer(
        &self,
        shard: u32,
        command: cmd::ShardCommand,
    ) -> ApiResult<cmd::CommandResult> {
        let shard = &self.shard_by_id(shard)?;
        let kind = command
            .kind
            .ok_or_else(|| ApiError::invalid_argument("transfer command without a kind"))?;
        // Refusals travel inside the result, as they do out of a local proposal.
        let result = match self.propose(shard, kind).await {
            Ok(result) => result,
            Err(e) if e.not_leader_detail().is_some() || e.code == tonic::Code::Unavailable => {
                return Err(e);
            }
            Err(e) => command_result::Result::Error(cmd::CommandError {
                code: e.code as i32,
                message: e.message.clone(),
                details: e.details_bytes(),
            }),
        };
        Ok(cmd::CommandResult {
            result: Some(result),
            batch: Vec::new(),
        })
    }

    async fn schedule(
        &self,
        namespace_id: &str,
        request: cmd::ScheduleRequest,
    ) -> ApiResult<cmd::ScheduleResponse> {
        self.schedule_op(namespace_id, request).await
    }

    async fn batch(
        &self,
        namespace_id: &str,
        request: cmd::BatchRequest,
    ) -> ApiResult<cmd::BatchResponse> {
        self.batch_op(namespace_id, request).await
    }

    async fn standalone_activity(
        &self,
        namespace_id: &str,
        request: cmd::StandaloneActivityRequest,
    ) -> ApiResult<cmd::StandaloneActivityResponse> {
        self.standalone_activity_op(namespace_id, request).await
    }

    async fn nexus_endpoints(
        &self,
        request: cmd::NexusEndpointsRequest,
    ) -> ApiResult<cmd::NexusEndpointsResponse> {
        self.nexus_endpoints_op(request).await
    }

    async fn nexus_task(
        &self,
        namespace_id: &str,
        request: cmd::NexusTaskRequest,
    ) -> ApiResult<cmd::NexusTaskResponse> {
        self.nexus_task_op(namespace_id, request).await
    }
}
