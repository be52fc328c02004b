//! The schedule's transfer tasks: starting a workflow on its shard and recording the outcome,
//! reporting a started workflow's close to its schedule, and cancelling or terminating a
//! running workflow for an overlap policy. Each step is checked at apply, so a task run again
//! after a failure changes nothing more (the start's request ID is derived from the schedule
//! and the time; the workflow's shard answers a retried start with the run it created).

use chronicle_proto::chronicle::history::v1::{self as cmd, command_result, shard_command::Kind};
use chronicle_proto::chronicle::persistence::v1 as pb;
use chronicle_proto::temporal::api::common::v1::{Payload, SearchAttributes, WorkflowExecution};
use chronicle_proto::temporal::api::enums::v1::{
    ScheduleOverlapPolicy, WorkflowExecutionStatus, WorkflowIdReusePolicy,
};
use chronicle_proto::temporal::api::history::v1::history_event::Attributes;
use chronicle_proto::temporal::api::schedule::v1::schedule_action::Action;
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use chronicle_types::time::millis;
use chronicle_types::{ApiError, ApiResult};

use crate::engine::{HistoryEngine, Shard};
use crate::read::storage;

pub const SCHEDULED_START_TIME: &str = "TemporalScheduledStartTime";
pub const SCHEDULED_BY_ID: &str = "TemporalScheduledById";

pub fn identity(state: &pb::ScheduleState) -> String {
    format!(
        "temporal-scheduler-{}-{}",
        state.namespace, state.schedule_id
    )
}

fn json_payload(json: String, sa_type: &str) -> Payload {
    let mut metadata = std::collections::HashMap::new();
    metadata.insert("encoding".to_string(), b"json/plain".to_vec());
    metadata.insert("type".to_string(), sa_type.as_bytes().to_vec());
    Payload {
        metadata,
        data: json.into_bytes(),
        ..Default::default()
    }
}

/// The action's search attributes plus the two Temporal adds to every scheduled start.
fn search_attributes(
    given: Option<&SearchAttributes>,
    nominal_ms: i64,
    schedule_id: &str,
) -> SearchAttributes {
    let mut fields = given.map(|s| s.indexed_fields.clone()).unwrap_or_default();
    let time = chrono::DateTime::from_timestamp(nominal_ms.div_euclid(1000), 0)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default();
    fields.insert(
        SCHEDULED_START_TIME.to_string(),
        json_payload(format!("\"{time}\""), "Datetime"),
    );
    fields.insert(
        SCHEDULED_BY_ID.to_string(),
        json_payload(serde_json_string(schedule_id), "Keyword"),
    );
    SearchAttributes {
        indexed_fields: fields,
    }
}

/// A JSON string literal.
fn serde_json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// KIND_SCHEDULE_START: starts the pending start's workflow and records the outcome.
pub(crate) async fn start(
    engine: &HistoryEngine,
    shard: &Shard,
    outbox_id: u64,
    task: &pb::OutboxTask,
) -> ApiResult<()> {
    let record = |run_id: String, error: String, start_time| {
        Kind::RecordScheduleStartOutcome(cmd::RecordScheduleStartOutcome {
            namespace_id: task.namespace_id.clone(),
            schedule_id: task.workflow_id.clone(),
            request_id: task.schedule_request_id.clone(),
            outbox_id: outbox_id as i64,
            run_id,
            error,
            start_time,
        })
    };
    let state = shard
        .tables
        .schedule(&task.namespace_id, &task.workflow_id)
        .map_err(storage)?;
    let pending = state.as_ref().and_then(|s| {
        s.pending
            .iter()
            .find(|p| p.request_id == task.schedule_request_id)
            .map(|p| (s, p))
    });
    let action = pending.and_then(|(s, _)| {
        s.schedule
            .as_ref()
            .and_then(|s| s.action.as_ref())
            .and_then(|a| a.action.as_ref())
    });
    let (Some((state, pending)), Some(Action::StartWorkflow(nw))) = (pending, action) else {
        engine
            .propose(shard, record(String::new(), "gone".into(), None))
            .await?;
        return Ok(());
    };
    let nominal_ms = pending.nominal_time.as_ref().map(millis).unwrap_or(0);
    let allow_all = pending.overlap_policy == ScheduleOverlapPolicy::AllowAll as i32;
    let request = ws::StartWorkflowExecutionRequest {
        namespace: state.namespace.clone(),
        workflow_id: pending.workflow_id.clone(),
        workflow_type: nw.workflow_type.clone(),
        task_queue: nw.task_queue.clone(),
        input: nw.input.clone(),
        workflow_execution_timeout: nw.workflow_execution_timeout,
        workflow_run_timeout: nw.workflow_run_timeout,
        workflow_task_timeout: nw.workflow_task_timeout,
        identity: identity(state),
        request_id: pending.request_id.clone(),
        // Reject duplicates (a time starts once); manual starts may reuse an ID.
        workflow_id_reuse_policy: if pending.manual {
            WorkflowIdReusePolicy::AllowDuplicate as i32
        } else {
            WorkflowIdReusePolicy::RejectDuplicate as i32
        },
        retry_policy: nw.retry_policy.clone(),
        memo: nw.memo.clone(),
        search_attributes: Some(search_attributes(
            nw.search_attributes.as_ref(),
            nominal_ms,
            &state.schedule_id,
        )),
        header: nw.header.clone(),
        // ALLOW_ALL runs take no part in last completion result / failure.
        last_completion_result: if allow_all {
            None
        } else {
            state.last_completion_result.clone()
        },
        continued_failure: if allow_all {
            None
        } else {
            state.continued_failure.clone()
        },
        user_metadata: nw.user_metadata.clone(),
        priority: nw.priority.clone(),
        ..Default::default()
    };
    let target = &engine.shard_of(&task.namespace_id, &pending.workflow_id);
    let started = engine
        .propose_anywhere(
            target,
            Kind::StartWorkflow(cmd::StartWorkflow {
                namespace_id: task.namespace_id.clone(),
                request: Some(request),
                run_id: chronicle_types::new_run_id(),
                scheduled_by: Some(pb::ScheduledBy {
                    namespace_id: state.namespace_id.clone(),
                    schedule_id: state.schedule_id.clone(),
                }),
                eager_workflow_start: false,
            }),
        )
        .await;
    let namespace = state.namespace.clone();
    match &started {
        Ok(_) => {
            let due_ms = pending
                .actual_time
                .as_ref()
                .map(millis)
                .unwrap_or(nominal_ms);
            let delay_ms = chronicle_types::time::now_millis().saturating_sub(due_ms);
            crate::metric_defs::record_schedule_start(&namespace, Ok(delay_ms));
        }
        Err(_) => crate::metric_defs::record_schedule_start(&namespace, Err(())),
    }
    let outcome = match started {
        Ok(command_result::Result::StartWorkflow(r)) => record(r.run_id, String::new(), None),
        Ok(_) => return Err(ApiError::internal("unexpected start result")),
        // The workflow's answer for this start (ID in use, bad request): recorded, not retried.
        Err(e)
            if !matches!(
                e.code,
                tonic::Code::Unavailable
                    | tonic::Code::Internal
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::Cancelled
                    | tonic::Code::Unknown
            ) =>
        {
            record(String::new(), e.message.clone(), None)
        }
        Err(e) => return Err(e),
    };
    engine.propose(shard, outcome).await?;
    Ok(())
}

/// KIND_SCHEDULE_WORKFLOW_CLOSED: reports the chain's close to the schedule.
pub(crate) async fn report_closed(
    engine: &HistoryEngine,
    shard: &Shard,
    outbox_id: u64,
    task: &pb::OutboxTask,
) -> ApiResult<()> {
    let state = shard
        .tables
        .execution(&task.namespace_id, &task.workflow_id, &task.run_id)
        .map_err(storage)?;
    if let Some(state) = state {
        let close = shard
            .tables
            .history(
                &state.namespace_id,
                &state.workflow_id,
                &state.run_id,
                state.completion_event_id,
                1,
            )
            .map_err(storage)?
            .into_iter()
            .next()
            .filter(|e| e.event_id == state.completion_event_id);
        let (mut result, mut failure) = (None, None);
        match close.and_then(|e| e.attributes) {
            Some(Attributes::WorkflowExecutionCompletedEventAttributes(a)) => {
                result = Some(a.result.unwrap_or_default());
            }
            Some(Attributes::WorkflowExecutionFailedEventAttributes(a)) => failure = a.failure,
            _ => {}
        }
        let schedule_shard = &engine.shard_of(&task.target_namespace_id, &task.target_workflow_id);
        engine
            .propose_anywhere(
                schedule_shard,
                Kind::RecordScheduleWorkflowClosed(cmd::RecordScheduleWorkflowClosed {
                    namespace_id: task.target_namespace_id.clone(),
                    schedule_id: task.target_workflow_id.clone(),
                    workflow_id: state.workflow_id.clone(),
                    status: WorkflowExecutionStatus::try_from(state.status).unwrap_or_default()
                        as i32,
                    result,
                    failure,
                    close_time: state.close_time,
                }),
            )
            .await?;
    }
    complete(engine, shard, outbox_id).await
}

/// KIND_SCHEDULE_STOP_WORKFLOW: cancels or terminates a running workflow (overlap policy).
pub(crate) async fn stop_workflow(
    engine: &HistoryEngine,
    shard: &Shard,
    outbox_id: u64,
    task: &pb::OutboxTask,
) -> ApiResult<()> {
    let state = shard
        .tables
        .schedule(&task.namespace_id, &task.workflow_id)
        .map_err(storage)?;
    let identity = state.as_ref().map(identity).unwrap_or_default();
    let namespace = state.map(|s| s.namespace).unwrap_or_default();
    let metric_namespace = namespace.clone();
    let target = &engine.shard_of(&task.target_namespace_id, &task.target_workflow_id);
    let execution = Some(WorkflowExecution {
        workflow_id: task.target_workflow_id.clone(),
        run_id: String::new(),
    });
    let kind = if task.schedule_terminate {
        Kind::TerminateWorkflow(cmd::TerminateWorkflow {
            namespace_id: task.target_namespace_id.clone(),
            request: Some(ws::TerminateWorkflowExecutionRequest {
                namespace,
                workflow_execution: execution,
                reason: "terminated by schedule overlap policy".into(),
                identity,
                first_execution_run_id: task.target_run_id.clone(),
                ..Default::default()
            }),
        })
    } else {
        Kind::RequestCancelWorkflow(cmd::RequestCancelWorkflow {
            namespace_id: task.target_namespace_id.clone(),
            request: Some(ws::RequestCancelWorkflowExecutionRequest {
                namespace,
                workflow_execution: execution,
                identity,
                request_id: format!("sched-cancel-{outbox_id}"),
                first_execution_run_id: task.target_run_id.clone(),
                reason: "cancelled by schedule overlap policy".into(),
                ..Default::default()
            }),
            external: None,
        })
    };
    match engine.propose_anywhere(target, kind).await {
        Ok(_) => {}
        // Closed or gone already: nothing to stop.
        Err(e) if e.code != tonic::Code::Unavailable && e.code != tonic::Code::Internal => {}
        Err(e) => {
            crate::metric_defs::record_schedule_stop_error(
                &metric_namespace,
                task.schedule_terminate,
            );
            return Err(e);
        }
    }
    complete(engine, shard, outbox_id).await
}

async fn complete(engine: &HistoryEngine, shard: &Shard, outbox_id: u64) -> ApiResult<()> {
    engine
        .propose(
            shard,
            Kind::CompleteTransferTask(cmd::CompleteTransferTask {
                outbox_id: outbox_id as i64,
            }),
        )
        .await?;
    Ok(())
}
