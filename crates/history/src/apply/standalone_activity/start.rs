//! StartActivityExecution at apply: request-ID de-duplication, the activity ID's conflict policy
//! (a running activity with the ID) and reuse policy (a closed one), then a new record whose
//! activity is handed to matching at once, or after the start delay.

use chronicle_proto::chronicle::history::v1::{self as cmd, command_result};
use chronicle_proto::chronicle::persistence::v1 as pb;
use chronicle_proto::temporal::api::common::v1::WorkflowType;
use chronicle_proto::temporal::api::enums::v1::{
    ActivityIdConflictPolicy, ActivityIdReusePolicy, TimeoutType, WorkflowExecutionStatus,
};
use chronicle_proto::wkt::Timestamp;
use chronicle_storage::ShardBatch;
use chronicle_types::ApiError;
use chronicle_types::time::{from_millis, millis, opt_duration_millis};

use super::ACTIVITY_KEY;
use crate::apply::ApplyResult;
use crate::apply::activity::timeout_fire_ms;
use crate::mutable_state::MutableState;

fn started(run_id: String, started: bool) -> command_result::Result {
    command_result::Result::StartWorkflow(cmd::StartWorkflowResult {
        run_id,
        started,
        eager_workflow_task: None,
    })
}

pub fn start(
    batch: &mut ShardBatch,
    now: Timestamp,
    c: cmd::StartActivityExecution,
) -> ApplyResult<command_result::Result> {
    let request = c
        .request
        .ok_or_else(|| ApiError::invalid_argument("start request missing"))?;
    if request.activity_id.is_empty() {
        return Err(ApiError::invalid_argument("activityId is not set").into());
    }
    if c.run_id.is_empty() {
        return Err(ApiError::invalid_argument("start without a run ID").into());
    }
    let namespace_id = c.namespace_id;
    let key = chronicle_types::standalone_activity::key(&request.activity_id);
    if let Some(current) = batch.current(&namespace_id, &key)? {
        // A retried start (same request ID) answers the record it created.
        if !request.request_id.is_empty() && current.create_request_id == request.request_id {
            return Ok(started(current.run_id, true));
        }
        let taken = || {
            ApiError::activity_already_started(&current.create_request_id, &current.run_id).into()
        };
        if current.status == WorkflowExecutionStatus::Running as i32 {
            return match ActivityIdConflictPolicy::try_from(request.id_conflict_policy)
                .unwrap_or_default()
            {
                ActivityIdConflictPolicy::UseExisting => Ok(started(current.run_id, false)),
                _ => Err(taken()),
            };
        }
        match ActivityIdReusePolicy::try_from(request.id_reuse_policy).unwrap_or_default() {
            ActivityIdReusePolicy::RejectDuplicate => return Err(taken()),
            ActivityIdReusePolicy::AllowDuplicateFailedOnly
                if current.status == WorkflowExecutionStatus::Completed as i32 =>
            {
                return Err(taken());
            }
            _ => {}
        }
    }

    let now_ms = millis(&now);
    let dispatch_ms = now_ms.saturating_add(opt_duration_millis(request.start_delay.as_ref()));
    let task_queue = request.task_queue.clone().unwrap_or_default();
    let state = pb::WorkflowExecutionState {
        namespace_id: namespace_id.clone(),
        workflow_id: key.clone(),
        run_id: c.run_id.clone(),
        workflow_type: Some(WorkflowType {
            name: request
                .activity_type
                .as_ref()
                .map(|t| t.name.clone())
                .unwrap_or_default(),
        }),
        task_queue: task_queue.name.clone(),
        status: WorkflowExecutionStatus::Running as i32,
        next_event_id: 1,
        start_time: Some(now),
        execution_time: Some(from_millis(dispatch_ms)),
        first_run_id: c.run_id.clone(),
        create_request_id: request.request_id.clone(),
        attempt: 1,
        search_attributes: request.search_attributes.clone(),
        identity: request.identity.clone(),
        priority: request.priority.clone(),
        user_metadata: request.user_metadata.clone(),
        standalone_activity: Some(pb::StandaloneActivity {
            first_dispatch_time: Some(from_millis(dispatch_ms)),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut ms = MutableState::new(state, now);
    let timer = |kind: pb::timer_task::Kind, timeout: TimeoutType| pb::TimerTask {
        kind: kind as i32,
        namespace_id: namespace_id.clone(),
        workflow_id: key.clone(),
        run_id: c.run_id.clone(),
        event_id: ACTIVITY_KEY,
        attempt: 1,
        timeout_type: timeout as i32,
        timer_id: String::new(),
    };
    let to_close = opt_duration_millis(request.schedule_to_close_timeout.as_ref());
    let to_start = opt_duration_millis(request.schedule_to_start_timeout.as_ref());
    let mut schedule_timer_keys = Vec::new();
    let mut attempt_timer_keys = Vec::new();
    let mut outbox_task_id = 0;
    if to_close > 0 {
        // The activity's clock starts with its first dispatch (after the start delay).
        schedule_timer_keys.push(batch.put_timer(
            timeout_fire_ms(now_ms, dispatch_ms.saturating_add(to_close)),
            &timer(
                pb::timer_task::Kind::ActivityTimeout,
                TimeoutType::ScheduleToClose,
            ),
        )?);
    }
    if dispatch_ms > now_ms {
        // The retry timer's path dispatches the attempt and arms its schedule-to-start timeout.
        batch.put_timer(
            dispatch_ms,
            &timer(
                pb::timer_task::Kind::ActivityRetry,
                TimeoutType::Unspecified,
            ),
        )?;
    } else {
        outbox_task_id = batch.put_outbox(&pb::OutboxTask {
            kind: pb::outbox_task::Kind::ActivityTask as i32,
            namespace_id: namespace_id.clone(),
            workflow_id: key.clone(),
            run_id: c.run_id.clone(),
            task_queue: task_queue.name.clone(),
            task_queue_kind: task_queue.kind,
            scheduled_event_id: ACTIVITY_KEY,
            attempt: 1,
            ..Default::default()
        })? as i64;
        if to_start > 0 {
            attempt_timer_keys.push(batch.put_timer(
                timeout_fire_ms(now_ms, now_ms.saturating_add(to_start)),
                &timer(
                    pb::timer_task::Kind::ActivityTimeout,
                    TimeoutType::ScheduleToStart,
                ),
            )?);
        }
    }
    let dispatch = from_millis(dispatch_ms);
    ms.state.activities.insert(
        ACTIVITY_KEY,
        pb::ActivityInfo {
            scheduled_event_id: ACTIVITY_KEY,
            activity_id: request.activity_id.clone(),
            activity_type: request.activity_type.clone(),
            task_queue: Some(task_queue),
            header: request.header.clone(),
            input: request.input.clone(),
            schedule_to_close_timeout: request.schedule_to_close_timeout,
            schedule_to_start_timeout: request.schedule_to_start_timeout,
            start_to_close_timeout: request.start_to_close_timeout,
            heartbeat_timeout: request.heartbeat_timeout,
            retry_policy: Some(crate::apply::workflow_task::default_activity_retry_policy(
                request.retry_policy.as_ref(),
            )),
            attempt: 1,
            first_scheduled_time: Some(dispatch),
            scheduled_time: Some(dispatch),
            next_attempt_schedule_time: (dispatch_ms > now_ms).then_some(dispatch),
            outbox_task_id,
            schedule_timer_keys,
            attempt_timer_keys,
            priority: request.priority.clone(),
            ..Default::default()
        },
    );
    batch.put_current(
        &namespace_id,
        &key,
        &pb::CurrentExecution {
            run_id: c.run_id.clone(),
            status: WorkflowExecutionStatus::Running as i32,
            create_request_id: request.request_id.clone(),
            start_time: Some(now),
        },
    );
    ms.persist(batch);
    Ok(started(c.run_id, true))
}
