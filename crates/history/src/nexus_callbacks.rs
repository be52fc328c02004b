//! Completion callbacks (docs/nexus.md): a run started with `completion_callbacks` (a Nexus
//! handler's workflow-run operation) delivers its chain's outcome, when the chain's last run
//! closes, to each operation its callbacks name. A `temporal://system` callback's operation is
//! on this server: the outcome is proposed on the caller's shard as `CompleteNexusOperation`,
//! shaped as Temporal shapes a workflow's Nexus completion.

use chronicle_proto::chronicle::history::v1::shard_command::Kind;
use chronicle_proto::chronicle::history::v1::{self as cmd, complete_nexus_operation::Outcome};
use chronicle_proto::chronicle::persistence::v1 as pb;
use chronicle_proto::temporal::api::common::v1::callback;
use chronicle_proto::temporal::api::enums::v1::EventType;
use chronicle_proto::temporal::api::failure::v1::{
    CanceledFailureInfo, Failure, TerminatedFailureInfo, TimeoutFailureInfo, failure::FailureInfo,
};
use chronicle_proto::temporal::api::history::v1::HistoryEvent;
use chronicle_proto::temporal::api::history::v1::history_event::Attributes;
use chronicle_types::ApiResult;

use crate::engine::{HistoryEngine, Shard};
use crate::nexus_links::{CALLBACK_TOKEN_HEADER, SYSTEM_CALLBACK_URL, decode_callback_token};

/// The outcome a closed run's close event gives the operation it backs; `None` for an event
/// that closes no run.
pub(crate) fn outcome_of_close(close: &HistoryEvent) -> Option<Outcome> {
    let failure = |message: &str, info: FailureInfo| Failure {
        message: message.into(),
        failure_info: Some(info),
        ..Default::default()
    };
    Some(match close.attributes.as_ref()? {
        Attributes::WorkflowExecutionCompletedEventAttributes(a) => {
            Outcome::Result(a.result.as_ref()?.payloads.first()?.clone())
        }
        Attributes::WorkflowExecutionFailedEventAttributes(a) => {
            Outcome::Failure(a.failure.clone().unwrap_or_default())
        }
        Attributes::WorkflowExecutionCanceledEventAttributes(a) => Outcome::Canceled(failure(
            "operation canceled",
            FailureInfo::CanceledFailureInfo(CanceledFailureInfo {
                details: a.details.clone(),
                ..Default::default()
            }),
        )),
        // Completions may reach third parties: no termination reason, as Temporal.
        Attributes::WorkflowExecutionTerminatedEventAttributes(_) => Outcome::Failure(failure(
            "operation terminated",
            FailureInfo::TerminatedFailureInfo(TerminatedFailureInfo::default()),
        )),
        Attributes::WorkflowExecutionTimedOutEventAttributes(_) => Outcome::Failure(failure(
            "operation exceeded internal timeout",
            FailureInfo::TimeoutFailureInfo(TimeoutFailureInfo::default()),
        )),
        _ => return None,
    })
}

/// Whether the close event is a successful completion (with or without a result).
fn succeeded(close: &HistoryEvent) -> bool {
    matches!(
        close.attributes,
        Some(Attributes::WorkflowExecutionCompletedEventAttributes(_))
    )
}

/// Delivers a closed run's completion callbacks. A callback whose operation is gone (closed,
/// timed out, its run closed) is done; any other error leaves the task to run again, and
/// delivering twice changes nothing (the operation is no longer pending the second time).
pub(crate) async fn deliver(
    engine: &HistoryEngine,
    shard: &Shard,
    _outbox_id: u64,
    task: &pb::OutboxTask,
) -> ApiResult<()> {
    let Some(state) = crate::transfer::load(shard, task)? else {
        return Ok(());
    };
    if state.completion_callbacks.is_empty() {
        return Ok(());
    }
    let close = crate::transfer::read_event(shard, &state, state.completion_event_id)?;
    let outcome = outcome_of_close(&close);
    let succeeded = succeeded(&close);
    if outcome.is_none() && !succeeded {
        return Ok(());
    }
    let namespace = engine.namespace_name(&state.namespace_id);
    // The handler's run, for a Started event the caller fabricates if the start answer is late.
    let link = crate::apply::nexus_async::workflow_event_link(
        &namespace,
        &state.workflow_id,
        &state.run_id,
        1,
        EventType::WorkflowExecutionStarted,
    );
    for cb in &state.completion_callbacks {
        let Some(callback::Variant::Nexus(nexus)) = &cb.variant else {
            continue;
        };
        if nexus.url != SYSTEM_CALLBACK_URL {
            // The frontend accepts no other URL (no outbound calls are made).
            continue;
        }
        let token = nexus
            .header
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(CALLBACK_TOKEN_HEADER))
            .and_then(|(_, v)| decode_callback_token(v));
        let Some(target) = token else {
            tracing::debug!(workflow_id = %state.workflow_id, "completion callback without a valid token dropped");
            continue;
        };
        let caller_shard = engine.shard_of(&target.namespace_id, &target.workflow_id);
        let sent = engine
            .propose_anywhere(
                &caller_shard,
                Kind::CompleteNexusOperation(cmd::CompleteNexusOperation {
                    target: Some(target),
                    operation_token: String::new(),
                    start_time: state.start_time,
                    links: vec![link.clone()],
                    outcome: outcome.clone(),
                    succeeded,
                }),
            )
            .await;
        match sent {
            Ok(_) => {}
            // The operation is no longer waiting for this outcome.
            Err(e) if e.is_not_found() || e.code == tonic::Code::InvalidArgument => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Whether the closed run's callbacks still wait for delivery (their transfer row is there).
pub(crate) fn delivery_pending(
    shard: &Shard,
    state: &pb::WorkflowExecutionState,
) -> ApiResult<bool> {
    for id in &state.close_report_task_ids {
        let id = u64::try_from(*id).unwrap_or(0);
        let rows = shard
            .tables
            .outbox_from(id, 1)
            .map_err(crate::read::storage)?;
        if rows.first().is_some_and(|(_, task)| {
            task.kind == pb::outbox_task::Kind::NexusCallbacks as i32
                && task.run_id == state.run_id
                && task.workflow_id == state.workflow_id
        }) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// DescribeWorkflowExecution's `callbacks`: each completion callback, waiting for the run to
/// close (STANDBY), being delivered (SCHEDULED) or delivered (SUCCEEDED).
pub(crate) fn callback_infos(
    state: &pb::WorkflowExecutionState,
    delivery_pending: bool,
) -> Vec<chronicle_proto::temporal::api::workflow::v1::CallbackInfo> {
    use chronicle_proto::temporal::api::enums::v1::CallbackState;
    use chronicle_proto::temporal::api::workflow::v1::{CallbackInfo, callback_info};
    let running = state.close_time.is_none();
    let (callback_state, attempt) = if running {
        (CallbackState::Standby, 0)
    } else if delivery_pending {
        (CallbackState::Scheduled, 0)
    } else {
        (CallbackState::Succeeded, 1)
    };
    state
        .completion_callbacks
        .iter()
        .map(|cb| CallbackInfo {
            callback: Some(cb.clone()),
            trigger: Some(callback_info::Trigger {
                variant: Some(callback_info::trigger::Variant::WorkflowClosed(
                    callback_info::WorkflowClosed {},
                )),
            }),
            registration_time: state.start_time,
            state: callback_state as i32,
            attempt,
            last_attempt_complete_time: (attempt > 0).then_some(state.close_time).flatten(),
            request_id: state.create_request_id.clone(),
            ..Default::default()
        })
        .collect()
}
