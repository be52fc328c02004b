//! Activity task RPCs of the history service: recording a task as started, completions and
//! heartbeats, and the task a worker receives.

use chronicle_cluster::{
    ActivityHeartbeat, ActivityOutcome, ActivityResult, ActivityTarget, HeartbeatOutcome,
    PollerInfo, TaskRef,
};
use chronicle_proto::chronicle::history::v1::{
    self as cmd, command_result, respond_activity, shard_command::Kind,
};
use chronicle_proto::chronicle::persistence::v1 as pb;
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use chronicle_types::{ApiError, ApiResult};

use crate::engine::HistoryEngine;
use crate::tokens;

impl HistoryEngine {
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
    pub(super) fn activity_task_response(
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

    pub(super) async fn record_activity_task_started_op(
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

    pub(super) async fn respond_activity_op(
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

    pub(super) async fn record_activity_heartbeat_op(
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
}
