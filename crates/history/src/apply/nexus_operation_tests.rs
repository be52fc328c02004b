//! Nexus operations applied command by command: scheduling (event, pending operation, outbox
//! row, timer), an unknown endpoint, a handler's success, retryable and final errors, stale
//! answers, and the schedule-to-close timeout.

use chronicle_proto::chronicle::history::v1::{self as cmd, shard_command::Kind};
use chronicle_proto::chronicle::persistence::v1 as pb;
use chronicle_proto::temporal::api::command::v1::{
    Command, ScheduleNexusOperationCommandAttributes, command::Attributes as CommandAttributes,
};
use chronicle_proto::temporal::api::common::v1::Payload;
use chronicle_proto::temporal::api::enums::v1::{EventType, WorkflowTaskFailedCause};
use chronicle_proto::temporal::api::failure::v1::{
    Failure, NexusHandlerFailureInfo, failure::FailureInfo,
};
use chronicle_proto::temporal::api::history::v1::history_event::Attributes;
use chronicle_proto::temporal::api::nexus::v1 as nexus;
use chronicle_proto::temporal::api::workflowservice::v1 as ws;

use super::child_tests::{Harness, NS};

pub(super) const SHARD: u32 = 0;
pub(super) const WF: &str = "wf-nexus";
pub(super) const HANDLER_NS: &str = "handler-ns-id";

pub(super) fn endpoint(name: &str) -> pb::NexusEndpointRecord {
    pb::NexusEndpointRecord {
        id: format!("id-{name}"),
        version: 1,
        spec: Some(nexus::EndpointSpec {
            name: name.into(),
            target: Some(nexus::EndpointTarget {
                variant: Some(nexus::endpoint_target::Variant::Worker(
                    nexus::endpoint_target::Worker {
                        namespace: "handlers".into(),
                        task_queue: "handler-tq".into(),
                    },
                )),
            }),
            ..Default::default()
        }),
        target_namespace_id: HANDLER_NS.into(),
        ..Default::default()
    }
}

fn schedule_command(endpoint: &str, timeout_secs: i64) -> Command {
    Command {
        attributes: Some(CommandAttributes::ScheduleNexusOperationCommandAttributes(
            ScheduleNexusOperationCommandAttributes {
                endpoint: endpoint.into(),
                service: "calc".into(),
                operation: "double".into(),
                input: Some(Payload {
                    data: b"21".to_vec(),
                    ..Default::default()
                }),
                schedule_to_close_timeout: (timeout_secs > 0).then_some(
                    chronicle_proto::wkt::Duration {
                        seconds: timeout_secs,
                        nanos: 0,
                    },
                ),
                ..Default::default()
            },
        )),
        ..Default::default()
    }
}

/// A running workflow whose task scheduled one operation on `found` endpoints.
pub(super) fn scheduled(
    h: &Harness,
    found: Vec<pb::NexusEndpointRecord>,
) -> Result<(), cmd::CommandError> {
    h.start(SHARD, WF, "run-1");
    let token = h.start_task(SHARD, WF);
    h.apply(
        SHARD,
        Kind::CompleteWorkflowTask(cmd::CompleteWorkflowTask {
            token: Some(token),
            request: Some(ws::RespondWorkflowTaskCompletedRequest {
                namespace: "default".into(),
                commands: vec![schedule_command("calc-ep", 30)],
                identity: "worker".into(),
                ..Default::default()
            }),
            new_run_id: "next".into(),
            eager_activities: false,
            max_history_events: 0,
            max_history_bytes: 0,
            nexus_endpoints: found,
            nexus_request_ids: vec!["req-1".into()],
        }),
    )
    .map(drop)
}

pub(super) fn has_timer(h: &Harness, key: &[u8]) -> bool {
    h.tables(SHARD)
        .timers_between(0, i64::MAX, 1000)
        .unwrap()
        .iter()
        .any(|(k, _)| k == key)
}

pub(super) fn only_operation(h: &Harness) -> pb::NexusOperationInfo {
    let ops = h.state(SHARD, WF).nexus_operations;
    assert_eq!(ops.len(), 1, "{ops:?}");
    ops.into_values().next().unwrap()
}

pub(super) fn token(op: &pb::NexusOperationInfo) -> pb::TaskToken {
    let state_run = "run-1";
    pb::TaskToken {
        namespace_id: NS.into(),
        workflow_id: WF.into(),
        run_id: state_run.into(),
        scheduled_event_id: op.scheduled_event_id,
        attempt: op.attempt,
        is_nexus: true,
        ..Default::default()
    }
}

pub(super) fn answer(
    h: &Harness,
    token: pb::TaskToken,
    outcome: cmd::respond_nexus_task::Outcome,
) -> Result<(), cmd::CommandError> {
    h.apply(
        SHARD,
        Kind::RespondNexusTask(cmd::RespondNexusTask {
            token: Some(token),
            outcome: Some(outcome),
            handler_namespace_id: HANDLER_NS.into(),
        }),
    )
    .map(drop)
}

fn sync_success(data: &[u8]) -> cmd::respond_nexus_task::Outcome {
    use nexus::start_operation_response::{Sync, Variant};
    cmd::respond_nexus_task::Outcome::Completed(ws::RespondNexusTaskCompletedRequest {
        response: Some(nexus::Response {
            variant: Some(nexus::response::Variant::StartOperation(
                nexus::StartOperationResponse {
                    variant: Some(Variant::SyncSuccess(Sync {
                        payload: Some(Payload {
                            data: data.to_vec(),
                            ..Default::default()
                        }),
                        links: Vec::new(),
                    })),
                },
            )),
        }),
        ..Default::default()
    })
}

pub(super) fn handler_error(error_type: &str) -> cmd::respond_nexus_task::Outcome {
    cmd::respond_nexus_task::Outcome::Failed(ws::RespondNexusTaskFailedRequest {
        failure: Some(Failure {
            message: format!("handler says {error_type}"),
            failure_info: Some(FailureInfo::NexusHandlerFailureInfo(
                NexusHandlerFailureInfo {
                    r#type: error_type.into(),
                    retry_behavior: 0,
                },
            )),
            ..Default::default()
        }),
        ..Default::default()
    })
}

#[test]
fn a_scheduled_operation_is_offered_and_its_sync_result_completes_it() {
    let h = Harness::new();
    scheduled(&h, vec![endpoint("calc-ep")]).expect("scheduled");
    let op = only_operation(&h);
    assert_eq!(op.endpoint_id, "id-calc-ep");
    assert_eq!(op.request_id, "req-1");
    assert_eq!(op.attempt, 1);
    let event = h
        .history(SHARD, WF)
        .into_iter()
        .find(|e| e.event_id == op.scheduled_event_id)
        .expect("scheduled event");
    let Some(Attributes::NexusOperationScheduledEventAttributes(a)) = event.attributes else {
        panic!("{event:?}");
    };
    assert_eq!(
        (
            a.endpoint.as_str(),
            a.endpoint_id.as_str(),
            a.request_id.as_str()
        ),
        ("calc-ep", "id-calc-ep", "req-1")
    );
    let rows = h.transfer(SHARD, pb::outbox_task::Kind::NexusTask);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].0, op.outbox_task_id);
    assert_eq!(rows[0].1.target_namespace_id, HANDLER_NS);
    assert_eq!(rows[0].1.task_queue, "handler-tq");
    assert!(has_timer(&h, &op.timeout_timer_key));

    // An answer from another namespace than the endpoint's target is refused.
    let wrong = h.apply(
        SHARD,
        Kind::RespondNexusTask(cmd::RespondNexusTask {
            token: Some(token(&op)),
            outcome: Some(sync_success(b"42")),
            handler_namespace_id: "elsewhere".into(),
        }),
    );
    assert!(wrong.is_err());
    assert_eq!(only_operation(&h), op);

    answer(&h, token(&op), sync_success(b"42")).expect("completed");
    let done = h.history(SHARD, WF).into_iter().last().expect("events");
    assert_eq!(done.event_type, EventType::WorkflowTaskScheduled as i32);
    let completed = h
        .history(SHARD, WF)
        .into_iter()
        .find_map(|e| match e.attributes {
            Some(Attributes::NexusOperationCompletedEventAttributes(a)) => Some(a),
            _ => None,
        })
        .expect("completed event");
    assert_eq!(completed.scheduled_event_id, op.scheduled_event_id);
    assert_eq!(completed.request_id, "req-1");
    assert_eq!(completed.result.unwrap().data, b"42");
    assert!(h.state(SHARD, WF).nexus_operations.is_empty());
    assert!(
        h.transfer(SHARD, pb::outbox_task::Kind::NexusTask)
            .is_empty()
    );
    assert!(!has_timer(&h, &op.timeout_timer_key));
    // A late second answer changes nothing.
    let events = h.history(SHARD, WF).len();
    let again = answer(&h, token(&op), sync_success(b"43")).expect_err("no longer pending");
    assert_eq!(again.code, tonic::Code::NotFound as i32);
    assert_eq!(h.history(SHARD, WF).len(), events);
}

#[test]
fn an_unknown_endpoint_fails_the_workflow_task() {
    let h = Harness::new();
    let refused = scheduled(&h, vec![]).expect_err("refused");
    assert_eq!(
        refused.message,
        "BadScheduleNexusOperationAttributes: endpoint \"calc-ep\" not found"
    );
    let failed = h
        .history(SHARD, WF)
        .into_iter()
        .find_map(|e| match e.attributes {
            Some(Attributes::WorkflowTaskFailedEventAttributes(a)) => Some(a),
            _ => None,
        })
        .expect("WorkflowTaskFailed");
    assert_eq!(
        failed.cause,
        WorkflowTaskFailedCause::BadScheduleNexusOperationAttributes as i32
    );
    let types = h.types(SHARD, WF);
    assert!(!types.contains(&EventType::NexusOperationScheduled));
    // The retry that sends it again is refused without failing the task again (paced by the
    // task timeout, not a hot loop).
    let retry = h.start_task(SHARD, WF);
    assert_eq!(retry.attempt, 2);
    let again = h.apply(
        SHARD,
        Kind::CompleteWorkflowTask(cmd::CompleteWorkflowTask {
            token: Some(retry.clone()),
            request: Some(ws::RespondWorkflowTaskCompletedRequest {
                namespace: "default".into(),
                commands: vec![schedule_command("calc-ep", 30)],
                ..Default::default()
            }),
            nexus_request_ids: vec!["req-2".into()],
            ..Default::default()
        }),
    );
    assert!(again.is_err());
    let task = h.state(SHARD, WF).workflow_task.expect("still started");
    assert_eq!(
        (task.attempt, task.started_event_id),
        (2, retry.started_event_id)
    );
    assert!(h.state(SHARD, WF).nexus_operations.is_empty());
    assert!(
        h.transfer(SHARD, pb::outbox_task::Kind::NexusTask)
            .is_empty()
    );
}

#[test]
fn a_retryable_handler_error_keeps_the_operation_and_a_final_one_fails_it() {
    let h = Harness::new();
    scheduled(&h, vec![endpoint("calc-ep")]).expect("scheduled");
    let first = only_operation(&h);
    answer(&h, token(&first), handler_error("INTERNAL")).expect("retried");
    let retried = only_operation(&h);
    assert_eq!(retried.attempt, 2);
    assert_eq!(
        retried.last_attempt_failure.as_ref().unwrap().message,
        "handler says INTERNAL"
    );
    assert_eq!(
        h.transfer(SHARD, pb::outbox_task::Kind::NexusTask).len(),
        1,
        "the request is still offered"
    );
    // The first attempt's token is stale now.
    assert!(answer(&h, token(&first), sync_success(b"1")).is_err());

    answer(&h, token(&retried), handler_error("BAD_REQUEST")).expect("failed");
    let failed = h
        .history(SHARD, WF)
        .into_iter()
        .find_map(|e| match e.attributes {
            Some(Attributes::NexusOperationFailedEventAttributes(a)) => Some(a),
            _ => None,
        })
        .expect("failed event");
    let failure = failed.failure.expect("failure");
    assert_eq!(failure.message, "nexus operation completed unsuccessfully");
    let Some(FailureInfo::NexusOperationExecutionFailureInfo(info)) = &failure.failure_info else {
        panic!("{failure:?}");
    };
    assert_eq!(
        (
            info.endpoint.as_str(),
            info.service.as_str(),
            info.operation.as_str()
        ),
        ("calc-ep", "calc", "double")
    );
    assert_eq!(info.scheduled_event_id, first.scheduled_event_id);
    assert_eq!(failure.cause.unwrap().message, "handler says BAD_REQUEST");
    assert!(h.state(SHARD, WF).nexus_operations.is_empty());
    assert!(
        h.transfer(SHARD, pb::outbox_task::Kind::NexusTask)
            .is_empty()
    );
}

#[test]
fn the_schedule_to_close_timeout_times_the_operation_out() {
    let h = Harness::new();
    scheduled(&h, vec![endpoint("calc-ep")]).expect("scheduled");
    let op = only_operation(&h);
    h.ok(
        SHARD,
        Kind::FireTimer(cmd::FireTimer {
            key: op.timeout_timer_key.clone(),
            task: Some(pb::TimerTask {
                kind: pb::timer_task::Kind::NexusOperationTimeout as i32,
                namespace_id: NS.into(),
                workflow_id: WF.into(),
                run_id: "run-1".into(),
                event_id: op.scheduled_event_id,
                ..Default::default()
            }),
            new_run_id: String::new(),
        }),
    );
    let timed_out = h
        .history(SHARD, WF)
        .into_iter()
        .find_map(|e| match e.attributes {
            Some(Attributes::NexusOperationTimedOutEventAttributes(a)) => Some(a),
            _ => None,
        })
        .expect("timed out event");
    assert_eq!(timed_out.scheduled_event_id, op.scheduled_event_id);
    let failure = timed_out.failure.unwrap();
    assert_eq!(failure.message, "nexus operation completed unsuccessfully");
    assert_eq!(failure.cause.unwrap().message, "operation timed out");
    assert!(h.state(SHARD, WF).nexus_operations.is_empty());
    assert!(
        h.transfer(SHARD, pb::outbox_task::Kind::NexusTask)
            .is_empty()
    );
    // The handler's answer after the timeout changes nothing.
    assert!(answer(&h, token(&op), sync_success(b"42")).is_err());
}
