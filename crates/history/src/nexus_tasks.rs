//! Nexus operations on the caller's shard (docs/nexus.md): the leader resolves the endpoints a
//! workflow task's ScheduleNexusOperation commands name before proposing, a handler worker's
//! poll takes an operation's start request (a read of the caller's run), and the worker's answer
//! is proposed as `RespondNexusTask` (apply/nexus_operation).

use chronicle_proto::chronicle::history::v1::{
    self as cmd, nexus_task_request::Op, respond_nexus_task, shard_command::Kind,
};
use chronicle_proto::chronicle::persistence::v1 as pb;
use chronicle_proto::temporal::api::command::v1::command::Attributes as CommandAttributes;
use chronicle_proto::temporal::api::nexus::v1 as nexus;
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use chronicle_types::{ApiError, ApiResult};

use crate::engine::HistoryEngine;
use crate::nexus_links;
use crate::read::{is_closed, storage};
use crate::tokens;

impl HistoryEngine {
    /// The endpoints a completion's ScheduleNexusOperation commands name, as this node's copy of
    /// the registry holds them now, and a request ID per command: carried by the command so
    /// every replica schedules the same operations.
    pub(crate) fn resolve_nexus_commands(
        &self,
        request: &ws::RespondWorkflowTaskCompletedRequest,
    ) -> ApiResult<(Vec<pb::NexusEndpointRecord>, Vec<String>)> {
        let mut endpoints: Vec<pb::NexusEndpointRecord> = Vec::new();
        let mut request_ids = Vec::new();
        for command in &request.commands {
            let Some(CommandAttributes::ScheduleNexusOperationCommandAttributes(a)) =
                &command.attributes
            else {
                continue;
            };
            request_ids.push(uuid::Uuid::new_v4().to_string());
            let known = endpoints
                .iter()
                .any(|e| e.spec.as_ref().is_some_and(|s| s.name == a.endpoint));
            if a.endpoint.is_empty() || known {
                continue;
            }
            if let Some(record) = self
                .metadata
                .tables
                .nexus_endpoint_by_name(&a.endpoint)
                .map_err(storage)?
            {
                endpoints.push(record);
            }
        }
        Ok((endpoints, request_ids))
    }

    pub(crate) async fn nexus_task_op(
        &self,
        namespace_id: &str,
        request: cmd::NexusTaskRequest,
    ) -> ApiResult<cmd::NexusTaskResponse> {
        let (token_bytes, outcome) = match request.op {
            Some(Op::Started(r)) => {
                let task = r
                    .task
                    .ok_or_else(|| ApiError::invalid_argument("the Nexus task is missing"))?;
                let started = if task.worker_commands {
                    self.worker_commands_started(&task).await?
                } else {
                    self.nexus_task_started(&task)?
                };
                return Ok(cmd::NexusTaskResponse {
                    started: Some(started),
                });
            }
            Some(Op::Completed(r)) => (
                r.task_token.clone(),
                respond_nexus_task::Outcome::Completed(r),
            ),
            Some(Op::Failed(r)) => (r.task_token.clone(), respond_nexus_task::Outcome::Failed(r)),
            None => {
                return Err(ApiError::invalid_argument(
                    "the Nexus task request is empty",
                ));
            }
        };
        let token = tokens::decode(&token_bytes)?;
        if !token.is_nexus {
            return Err(ApiError::invalid_argument(
                "Error deserializing task token.",
            ));
        }
        if token.is_worker_commands {
            // The commands left the outbox when the poll took them: the worker's answer (its
            // results, or a failure, which Temporal only logs) changes nothing.
            if let respond_nexus_task::Outcome::Failed(r) = &outcome {
                tracing::debug!(
                    workflow_id = %token.workflow_id,
                    failure = ?r.failure,
                    "a worker failed its worker commands"
                );
            }
            return Ok(cmd::NexusTaskResponse::default());
        }
        let shard = self.shard_of(&token.namespace_id, &token.workflow_id);
        self.propose(
            &shard,
            Kind::RespondNexusTask(cmd::RespondNexusTask {
                token: Some(token),
                outcome: Some(outcome),
                handler_namespace_id: namespace_id.to_string(),
            }),
        )
        .await?;
        Ok(cmd::NexusTaskResponse::default())
    }

    /// What a handler's poll answers for the operation `task` offers, read on the caller's
    /// shard leader: NotFound when the operation is no longer pending (matching drops the task).
    fn nexus_task_started(&self, task: &cmd::TaskRef) -> ApiResult<ws::PollNexusTaskQueueResponse> {
        let shard = self.shard_of(&task.namespace_id, &task.workflow_id);
        self.check_leader(&shard)?;
        let gone = || ApiError::not_found("Nexus operation not found");
        let state = shard
            .tables
            .execution(&task.namespace_id, &task.workflow_id, &task.run_id)
            .map_err(storage)?
            .ok_or_else(gone)?;
        if is_closed(&state) {
            return Err(gone());
        }
        let op = state
            .nexus_operations
            .get(&task.scheduled_event_id)
            .ok_or_else(gone)?;
        if op.cancel_outbox_task_id == task.outbox_id
            && op.cancel_state == pb::NexusCancelationState::Scheduled as i32
        {
            return Ok(cancel_request(task, op));
        }
        if op.outbox_task_id != task.outbox_id || op.started_time.is_some() {
            return Err(gone());
        }
        // The caller's Scheduled event, for the handler to link back to, and the callback
        // that completes the operation when the handler finishes it asynchronously.
        let namespace = self.namespace_name(&task.namespace_id);
        let caller_link = crate::apply::nexus_async::workflow_event_link(
            &namespace,
            &task.workflow_id,
            &task.run_id,
            op.scheduled_event_id,
            chronicle_proto::temporal::api::enums::v1::EventType::NexusOperationScheduled,
        );
        let callback_token = nexus_links::encode_callback_token(&pb::NexusCallbackToken {
            namespace_id: task.namespace_id.clone(),
            workflow_id: task.workflow_id.clone(),
            run_id: task.run_id.clone(),
            scheduled_event_id: op.scheduled_event_id,
            request_id: op.request_id.clone(),
        });
        let token = pb::TaskToken {
            namespace_id: task.namespace_id.clone(),
            workflow_id: task.workflow_id.clone(),
            run_id: task.run_id.clone(),
            scheduled_event_id: op.scheduled_event_id,
            attempt: op.attempt,
            is_nexus: true,
            ..Default::default()
        };
        let mut header: std::collections::HashMap<String, String> =
            op.nexus_header.clone().into_iter().collect();
        let remaining = remaining_ms(op);
        if let Some(ms) = remaining {
            // Nexus's header for how long the caller still waits for the operation.
            header
                .entry("operation-timeout".into())
                .or_insert_with(|| format!("{ms}ms"));
        }
        request_timeout(&mut header, remaining);
        Ok(ws::PollNexusTaskQueueResponse {
            task_token: tokens::encode(&token),
            request: Some(nexus::Request {
                header,
                scheduled_time: op.scheduled_time,
                capabilities: Some(nexus::request::Capabilities {
                    temporal_failure_responses: true,
                }),
                variant: Some(nexus::request::Variant::StartOperation(
                    nexus::StartOperationRequest {
                        service: op.service.clone(),
                        operation: op.operation.clone(),
                        request_id: op.request_id.clone(),
                        payload: op.input.clone(),
                        callback: nexus_links::SYSTEM_CALLBACK_URL.to_string(),
                        callback_header: [(
                            nexus_links::CALLBACK_TOKEN_HEADER.to_string(),
                            callback_token,
                        )]
                        .into(),
                        links: nexus_links::to_nexus(&caller_link).into_iter().collect(),
                    },
                )),
                endpoint: op.endpoint.clone(),
            }),
            ..Default::default()
        })
    }
}

/// Temporal's timeout of one Nexus request (`component.nexusoperations.request.timeout`).
const REQUEST_TIMEOUT_MS: i64 = 10_000;

/// What is left of the operation's schedule-to-close timeout now; `None` without one.
fn remaining_ms(op: &pb::NexusOperationInfo) -> Option<i64> {
    let timeout = chronicle_types::time::opt_duration_millis(op.schedule_to_close_timeout.as_ref());
    if timeout <= 0 {
        return None;
    }
    let scheduled = op
        .scheduled_time
        .as_ref()
        .map(chronicle_types::time::millis)
        .unwrap_or_default();
    let elapsed = chronicle_types::time::now_millis()
        .saturating_sub(scheduled)
        .max(0);
    Some(timeout.saturating_sub(elapsed).max(0))
}

/// Nexus's `request-timeout` header: how long this request may take (the handler's
/// request deadline), at most what is left of the operation.
fn request_timeout(header: &mut std::collections::HashMap<String, String>, remaining: Option<i64>) {
    let ms = remaining.map_or(REQUEST_TIMEOUT_MS, |r| r.min(REQUEST_TIMEOUT_MS));
    header.insert("request-timeout".into(), format!("{ms}ms"));
}

/// A poll's answer for an operation's cancel request.
#[allow(deprecated)]
fn cancel_request(
    task: &cmd::TaskRef,
    op: &pb::NexusOperationInfo,
) -> ws::PollNexusTaskQueueResponse {
    let token = pb::TaskToken {
        namespace_id: task.namespace_id.clone(),
        workflow_id: task.workflow_id.clone(),
        run_id: task.run_id.clone(),
        scheduled_event_id: op.scheduled_event_id,
        attempt: op.cancel_attempt,
        is_nexus: true,
        is_nexus_cancel: true,
        ..Default::default()
    };
    let mut header: std::collections::HashMap<String, String> =
        op.nexus_header.clone().into_iter().collect();
    request_timeout(&mut header, remaining_ms(op));
    ws::PollNexusTaskQueueResponse {
        task_token: tokens::encode(&token),
        request: Some(nexus::Request {
            header,
            scheduled_time: op.cancel_requested_time,
            capabilities: Some(nexus::request::Capabilities {
                temporal_failure_responses: true,
            }),
            variant: Some(nexus::request::Variant::CancelOperation(
                nexus::CancelOperationRequest {
                    service: op.service.clone(),
                    operation: op.operation.clone(),
                    operation_id: op.operation_token.clone(),
                    operation_token: op.operation_token.clone(),
                },
            )),
            endpoint: op.endpoint.clone(),
        }),
        ..Default::default()
    }
}

/// DescribeWorkflowExecution's `pending_nexus_operations`, in scheduling order. An operation
/// is Scheduled until the handler starts it (retries are offered again at once, so there is no
/// backing-off state to show), then Started until its outcome arrives.
#[allow(deprecated)]
pub(crate) fn pending_operations(
    state: &pb::WorkflowExecutionState,
) -> Vec<chronicle_proto::temporal::api::workflow::v1::PendingNexusOperationInfo> {
    use chronicle_proto::temporal::api::enums::v1::PendingNexusOperationState;
    let mut ops: Vec<&pb::NexusOperationInfo> = state.nexus_operations.values().collect();
    ops.sort_by_key(|op| op.scheduled_event_id);
    ops.into_iter()
        .map(
            |op| chronicle_proto::temporal::api::workflow::v1::PendingNexusOperationInfo {
                endpoint: op.endpoint.clone(),
                service: op.service.clone(),
                operation: op.operation.clone(),
                schedule_to_close_timeout: op.schedule_to_close_timeout,
                scheduled_time: op.scheduled_time,
                state: if op.started_time.is_some() {
                    PendingNexusOperationState::Started as i32
                } else {
                    PendingNexusOperationState::Scheduled as i32
                },
                operation_token: op.operation_token.clone(),
                operation_id: op.operation_token.clone(),
                cancellation_info: cancellation_info(op),
                // Temporal counts the attempts made: 0 while the first is in flight.
                attempt: op.attempt.saturating_sub(1),
                last_attempt_failure: op.last_attempt_failure.clone(),
                scheduled_event_id: op.scheduled_event_id,
                ..Default::default()
            },
        )
        .collect()
}

/// What DescribeWorkflowExecution shows of an operation's cancel request.
fn cancellation_info(
    op: &pb::NexusOperationInfo,
) -> Option<chronicle_proto::temporal::api::workflow::v1::NexusOperationCancellationInfo> {
    use chronicle_proto::temporal::api::enums::v1::NexusOperationCancellationState as State;
    if op.cancel_requested_event_id == 0 {
        return None;
    }
    let state = match pb::NexusCancelationState::try_from(op.cancel_state) {
        Ok(pb::NexusCancelationState::Scheduled) => State::Scheduled,
        Ok(pb::NexusCancelationState::Succeeded) => State::Succeeded,
        Ok(pb::NexusCancelationState::Failed) => State::Failed,
        _ => State::Unspecified,
    };
    Some(
        chronicle_proto::temporal::api::workflow::v1::NexusOperationCancellationInfo {
            requested_time: op.cancel_requested_time,
            state: state as i32,
            attempt: op.cancel_attempt.saturating_sub(1).max(0),
            last_attempt_failure: op.cancel_last_failure.clone(),
            ..Default::default()
        },
    )
}
