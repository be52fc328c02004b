//! `HistoryService::standalone_activity`: standalone activity executions on the activity ID's
//! shard. Changes are shard commands (`apply/standalone_activity`); describe and the outcome
//! poll read the record on the leader, and their long polls wait on the record's watch.

use std::time::Duration;

use chronicle_proto::chronicle::history::v1::{
    self as cmd, command_result, shard_command::Kind, standalone_activity_request::Op,
    standalone_activity_response::Op as Answer,
};
use chronicle_proto::chronicle::persistence::v1 as pb;
use chronicle_proto::temporal::api::activity::v1::activity_execution_outcome::Value;
use chronicle_proto::temporal::api::activity::v1::{
    ActivityExecutionInfo, ActivityExecutionOutcome,
};
use chronicle_proto::temporal::api::common::v1::{Link, link};
use chronicle_proto::temporal::api::enums::v1::{PendingActivityState, RetryState};
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use chronicle_types::standalone_activity::key;
use chronicle_types::time::{duration_from_millis, millis};
use chronicle_types::{ApiError, ApiResult};

use crate::apply::standalone_activity::{ACTIVITY_KEY, api_status};
use crate::engine::{HistoryEngine, Shard};
use crate::read::storage;

/// Longest wait of a describe or outcome long poll before it answers "nothing yet" (Temporal's
/// chasm.activity.longPollTimeout).
const LONG_POLL: Duration = Duration::from_secs(20);

impl HistoryEngine {
    pub(crate) async fn standalone_activity_op(
        &self,
        namespace_id: &str,
        request: cmd::StandaloneActivityRequest,
    ) -> ApiResult<cmd::StandaloneActivityResponse> {
        let op = request
            .op
            .ok_or_else(|| ApiError::invalid_argument("standalone activity request is empty"))?;
        let answer = match op {
            Op::Start(r) => Answer::Start(self.start_activity(namespace_id, r).await?),
            Op::Describe(r) => Answer::Describe(self.describe_activity(namespace_id, r).await?),
            Op::Poll(r) => Answer::Poll(self.poll_activity(namespace_id, r).await?),
            Op::Cancel(r) => {
                let shard = &self.shard_of(namespace_id, &key(&r.activity_id));
                self.propose(
                    shard,
                    Kind::CancelActivityExecution(cmd::CancelActivityExecution {
                        namespace_id: namespace_id.to_string(),
                        request: Some(r),
                    }),
                )
                .await?;
                Answer::Done(cmd::Empty {})
            }
            Op::Terminate(r) => {
                let shard = &self.shard_of(namespace_id, &key(&r.activity_id));
                self.propose(
                    shard,
                    Kind::TerminateActivityExecution(cmd::TerminateActivityExecution {
                        namespace_id: namespace_id.to_string(),
                        request: Some(r),
                    }),
                )
                .await?;
                Answer::Done(cmd::Empty {})
            }
            Op::Delete(r) => {
                let shard = &self.shard_of(namespace_id, &key(&r.activity_id));
                self.propose(
                    shard,
                    Kind::DeleteActivityExecution(cmd::DeleteActivityExecution {
                        namespace_id: namespace_id.to_string(),
                        request: Some(r),
                    }),
                )
                .await?;
                Answer::Done(cmd::Empty {})
            }
        };
        Ok(cmd::StandaloneActivityResponse { op: Some(answer) })
    }

    async fn start_activity(
        &self,
        namespace_id: &str,
        request: ws::StartActivityExecutionRequest,
    ) -> ApiResult<ws::StartActivityExecutionResponse> {
        let shard = &self.shard_of(namespace_id, &key(&request.activity_id));
        let (namespace, activity_id) = (request.namespace.clone(), request.activity_id.clone());
        let result = self
            .propose(
                shard,
                Kind::StartActivityExecution(cmd::StartActivityExecution {
                    namespace_id: namespace_id.to_string(),
                    request: Some(request),
                    run_id: chronicle_types::new_run_id(),
                }),
            )
            .await?;
        let command_result::Result::StartWorkflow(started) = result else {
            return Err(ApiError::internal("unexpected start result"));
        };
        Ok(ws::StartActivityExecutionResponse {
            link: Some(Link {
                variant: Some(link::Variant::Activity(link::Activity {
                    namespace,
                    activity_id,
                    run_id: started.run_id.clone(),
                })),
            }),
            run_id: started.run_id,
            started: started.started,
        })
    }

    fn load_activity(
        &self,
        shard: &Shard,
        namespace_id: &str,
        activity_id: &str,
        run_id: &str,
    ) -> ApiResult<pb::WorkflowExecutionState> {
        let key = key(activity_id);
        let not_found =
            || ApiError::not_found(format!("activity execution not found: {activity_id}"));
        let run_id = if run_id.is_empty() {
            match shard.tables.current(namespace_id, &key).map_err(storage)? {
                Some(current) => current.run_id,
                None => return Err(not_found()),
            }
        } else {
            run_id.to_string()
        };
        shard
            .tables
            .execution(namespace_id, &key, &run_id)
            .map_err(storage)?
            .filter(|s| s.standalone_activity.is_some())
            .ok_or_else(not_found)
    }

    async fn describe_activity(
        &self,
        namespace_id: &str,
        request: ws::DescribeActivityExecutionRequest,
    ) -> ApiResult<ws::DescribeActivityExecutionResponse> {
        let shard = &self.shard_of(namespace_id, &key(&request.activity_id));
        self.check_leader(shard)?;
        let deadline = tokio::time::Instant::now() + LONG_POLL;
        let mut changes = shard.watch_workflow(namespace_id, &key(&request.activity_id));
        loop {
            changes.mark_seen();
            let state =
                self.load_activity(shard, namespace_id, &request.activity_id, &request.run_id)?;
            let token = long_poll_token(&state);
            if !request.long_poll_token.is_empty() {
                check_long_poll_token(&request.long_poll_token, &state)?;
            }
            if request.long_poll_token != token {
                return Ok(describe(&state, &request, token));
            }
            if !self.wait_for_change(deadline, &mut changes).await {
                return Ok(ws::DescribeActivityExecutionResponse::default());
            }
        }
    }

    async fn poll_activity(
        &self,
        namespace_id: &str,
        request: ws::PollActivityExecutionRequest,
    ) -> ApiResult<ws::PollActivityExecutionResponse> {
        let shard = &self.shard_of(namespace_id, &key(&request.activity_id));
        self.check_leader(shard)?;
        let deadline = tokio::time::Instant::now() + LONG_POLL;
        let mut changes = shard.watch_workflow(namespace_id, &key(&request.activity_id));
        loop {
            changes.mark_seen();
            let state =
                self.load_activity(shard, namespace_id, &request.activity_id, &request.run_id)?;
            if crate::read::is_closed(&state) {
                return Ok(ws::PollActivityExecutionResponse {
                    outcome: outcome(&state),
                    run_id: state.run_id,
                });
            }
            if !self.wait_for_change(deadline, &mut changes).await {
                return Ok(ws::PollActivityExecutionResponse::default());
            }
        }
    }
}

/// A describe long poll's token: the record and how many times it changed.
fn long_poll_token(state: &pb::WorkflowExecutionState) -> Vec<u8> {
    format!("{}:{}", state.run_id, state.state_transition_count).into_bytes()
}

/// Temporal's refusals of a token that is not one of ours, or is another record's.
fn check_long_poll_token(token: &[u8], state: &pb::WorkflowExecutionState) -> ApiResult<()> {
    let parsed = std::str::from_utf8(token)
        .ok()
        .and_then(|t| t.rsplit_once(':'))
        .filter(|(_, count)| count.parse::<i64>().is_ok());
    match parsed {
        None => Err(ApiError::invalid_argument("invalid long poll token")),
        Some((run_id, _)) if run_id != state.run_id => Err(ApiError::invalid_argument(
            "long poll token does not match execution",
        )),
        Some(_) => Ok(()),
    }
}

fn outcome(state: &pb::WorkflowExecutionState) -> Option<ActivityExecutionOutcome> {
    let record = state.standalone_activity.as_ref()?;
    if !crate::read::is_closed(state) {
        return None;
    }
    let value = match (&record.result, &record.failure) {
        (_, Some(failure)) => Value::Failure(failure.clone()),
        (Some(result), None) => Value::Result(result.clone()),
        (None, None) => Value::Result(Default::default()),
    };
    Some(ActivityExecutionOutcome {
        value: Some(value),
        retry_state: if record.failure.is_some() {
            record.retry_state
        } else {
            RetryState::Unspecified as i32
        },
    })
}

/// The activity of a record: the pending one while it runs, the one it ended with after.
pub(crate) fn activity_of(state: &pb::WorkflowExecutionState) -> pb::ActivityInfo {
    state
        .activities
        .get(&ACTIVITY_KEY)
        .cloned()
        .or_else(|| {
            state
                .standalone_activity
                .as_ref()
                .and_then(|r| r.closed_activity.clone())
        })
        .unwrap_or_default()
}

pub(crate) fn info(state: &pb::WorkflowExecutionState) -> ActivityExecutionInfo {
    let activity = activity_of(state);
    let record = state.standalone_activity.clone().unwrap_or_default();
    let closed = crate::read::is_closed(state);
    let run_state = if closed {
        PendingActivityState::Unspecified
    } else if activity.paused && activity.started {
        PendingActivityState::PauseRequested
    } else if activity.paused {
        PendingActivityState::Paused
    } else if activity.cancel_requested {
        PendingActivityState::CancelRequested
    } else if activity.started {
        PendingActivityState::Started
    } else {
        PendingActivityState::Scheduled
    };
    let policy = activity.retry_policy.clone().unwrap_or_default();
    let current_retry_interval =
        (!closed && activity.attempt > 1 && !activity.started).then(|| {
            duration_from_millis(crate::apply::next_retry_delay_ms(
                &policy,
                activity.attempt - 1,
            ))
        });
    ActivityExecutionInfo {
        activity_id: chronicle_types::standalone_activity::activity_id(&state.workflow_id)
            .unwrap_or_default()
            .to_string(),
        run_id: state.run_id.clone(),
        activity_type: activity.activity_type.clone(),
        status: if !closed && activity.paused {
            chronicle_proto::temporal::api::enums::v1::ActivityExecutionStatus::Paused as i32
        } else {
            api_status(state.status) as i32
        },
        run_state: run_state as i32,
        task_queue: activity
            .task_queue
            .as_ref()
            .map(|q| q.name.clone())
            .unwrap_or_default(),
        schedule_to_close_timeout: activity.schedule_to_close_timeout,
        schedule_to_start_timeout: activity.schedule_to_start_timeout,
        start_to_close_timeout: activity.start_to_close_timeout,
        heartbeat_timeout: activity.heartbeat_timeout,
        retry_policy: activity.retry_policy.clone(),
        heartbeat_details: activity.heartbeat_details.clone(),
        last_heartbeat_time: activity.last_heartbeat_time,
        last_started_time: activity.started_time,
        attempt: activity.attempt,
        execution_duration: match (&state.close_time, &state.start_time) {
            (Some(close), Some(start)) if closed => Some(duration_from_millis(
                millis(close).saturating_sub(millis(start)),
            )),
            _ => None,
        },
        schedule_time: state.start_time,
        expiration_time: activity
            .schedule_to_close_timeout
            .as_ref()
            .zip(record.first_dispatch_time.as_ref())
            .map(|(d, t)| {
                chronicle_types::time::from_millis(
                    millis(t).saturating_add(chronicle_types::time::duration_millis(d)),
                )
            }),
        close_time: if closed { state.close_time } else { None },
        last_failure: activity.last_failure.clone(),
        last_worker_identity: activity.last_worker_identity.clone(),
        current_retry_interval,
        last_attempt_complete_time: activity.last_attempt_complete_time,
        next_attempt_schedule_time: activity.next_attempt_schedule_time,
        priority: activity.priority.clone(),
        state_transition_count: state.state_transition_count,
        search_attributes: state.search_attributes.clone(),
        header: activity.header.clone(),
        user_metadata: state.user_metadata.clone(),
        canceled_reason: record.cancel_reason.clone(),
        total_heartbeat_count: record.total_heartbeat_count,
        execution_time: record.first_dispatch_time,
        start_delay: match (&record.first_dispatch_time, &state.start_time) {
            (Some(dispatch), Some(start)) if millis(dispatch) > millis(start) => Some(
                duration_from_millis(millis(dispatch).saturating_sub(millis(start))),
            ),
            _ => None,
        },
        ..Default::default()
    }
}

fn describe(
    state: &pb::WorkflowExecutionState,
    request: &ws::DescribeActivityExecutionRequest,
    long_poll_token: Vec<u8>,
) -> ws::DescribeActivityExecutionResponse {
    let mut info = info(state);
    if !request.include_heartbeat_details {
        info.heartbeat_details = None;
    }
    if !request.include_last_failure {
        info.last_failure = None;
    }
    ws::DescribeActivityExecutionResponse {
        run_id: state.run_id.clone(),
        info: Some(info),
        input: if request.include_input {
            activity_of(state).input
        } else {
            None
        },
        outcome: if request.include_outcome {
            outcome(state)
        } else {
            None
        },
        long_poll_token,
        callbacks: Vec::new(),
    }
}
