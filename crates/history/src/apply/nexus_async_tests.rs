//! Asynchronous Nexus operations applied command by command: a start answered with a token
//! (Started, still pending), the completion callback's outcomes (before and after the start
//! answer, stale and malformed ones), cancellation before and after the start, the handler's
//! answers to a cancel request, and a handler run's callbacks at its close.

use chronicle_proto::chronicle::history::v1::{
    self as cmd, complete_nexus_operation::Outcome, shard_command::Kind,
};
use chronicle_proto::chronicle::persistence::v1 as pb;
use chronicle_proto::temporal::api::command::v1::{
    RequestCancelNexusOperationCommandAttributes, command::Attributes as CommandAttributes,
};
use chronicle_proto::temporal::api::common::v1::Payload;
use chronicle_proto::temporal::api::enums::v1::{EventType, WorkflowTaskFailedCause};
use chronicle_proto::temporal::api::failure::v1::Failure;
use chronicle_proto::temporal::api::history::v1::history_event::Attributes;
use chronicle_proto::temporal::api::nexus::v1 as nexus;
use chronicle_proto::temporal::api::workflowservice::v1 as ws;

use super::child_tests::{Harness, NS};
use super::nexus_operation_tests::{
    HANDLER_NS, SHARD, WF, answer, endpoint, handler_error, only_operation, scheduled, token,
};

fn async_started(operation_token: &str) -> cmd::respond_nexus_task::Outcome {
    use nexus::start_operation_response::{Async, Variant};
    cmd::respond_nexus_task::Outcome::Completed(ws::RespondNexusTaskCompletedRequest {
        response: Some(nexus::Response {
            variant: Some(nexus::response::Variant::StartOperation(
                nexus::StartOperationResponse {
                    variant: Some(Variant::AsyncSuccess(
                        #[allow(deprecated)]
                        Async {
                            operation_id: String::new(),
                            operation_token: operation_token.into(),
                            links: vec![nexus::Link {
                                url: "temporal:///namespaces/handlers/workflows/backing/r1/history?eventID=1&eventType=WorkflowExecutionStarted&referenceType=EventReference".into(),
                                r#type: "temporal.api.common.v1.Link.WorkflowEvent".into(),
                            }, nexus::Link { url: "garbage".into(), r#type: "x".into() }],
                        },
                    )),
                },
            )),
        }),
        ..Default::default()
    })
}

fn cancel_accepted() -> cmd::respond_nexus_task::Outcome {
    cmd::respond_nexus_task::Outcome::Completed(ws::RespondNexusTaskCompletedRequest {
        response: Some(nexus::Response {
            variant: Some(nexus::response::Variant::CancelOperation(
                nexus::CancelOperationResponse {},
            )),
        }),
        ..Default::default()
    })
}

fn target(op: &pb::NexusOperationInfo) -> pb::NexusCallbackToken {
    pb::NexusCallbackToken {
        namespace_id: NS.into(),
        workflow_id: WF.into(),
        run_id: "run-1".into(),
        scheduled_event_id: op.scheduled_event_id,
        request_id: op.request_id.clone(),
    }
}

fn callback_outcome(
    h: &Harness,
    target: Option<pb::NexusCallbackToken>,
    outcome: Option<Outcome>,
) -> Result<(), cmd::CommandError> {
    h.apply(
        SHARD,
        Kind::CompleteNexusOperation(cmd::CompleteNexusOperation {
            target,
            operation_token: "late-token".into(),
            start_time: None,
            links: Vec::new(),
            outcome,
            succeeded: false,
        }),
    )
    .map(drop)
}

/// The run's events, buffered ones (a workflow task is running) included.
fn events(h: &Harness) -> Vec<chronicle_proto::temporal::api::history::v1::HistoryEvent> {
    let mut all = h.history(SHARD, WF);
    all.extend(h.state(SHARD, WF).buffered_events);
    all
}

/// A signal, so the workflow has a task to run.
fn wake(h: &Harness) {
    h.ok(
        SHARD,
        Kind::SignalWorkflow(cmd::SignalWorkflow {
            namespace_id: NS.into(),
            request: Some(ws::SignalWorkflowExecutionRequest {
                namespace: "default".into(),
                workflow_execution: Some(
                    chronicle_proto::temporal::api::common::v1::WorkflowExecution {
                        workflow_id: WF.into(),
                        run_id: String::new(),
                    },
                ),
                signal_name: "wake".into(),
                ..Default::default()
            }),
            external: None,
        }),
    );
}

fn cancel_command(h: &Harness, scheduled_event_id: i64) -> Result<(), cmd::CommandError> {
    if h.state(SHARD, WF).workflow_task.is_none() {
        wake(h);
    }
    let task = h.start_task(SHARD, WF);
    h.complete_task(
        SHARD,
        task,
        vec![
            CommandAttributes::RequestCancelNexusOperationCommandAttributes(
                RequestCancelNexusOperationCommandAttributes { scheduled_event_id },
            ),
        ],
    )
    .map(drop)
}

fn result(data: &[u8]) -> Option<Outcome> {
    Some(Outcome::Result(Payload {
        data: data.to_vec(),
        ..Default::default()
    }))
}

#[test]
fn an_async_start_stays_pending_until_its_callback_completes_it() {
    let h = Harness::new();
    scheduled(&h, vec![endpoint("calc-ep")]).expect("scheduled");
    let op = only_operation(&h);
    answer(&h, token(&op), async_started("tok-1")).expect("started");
    let started = only_operation(&h);
    assert_eq!(started.operation_token, "tok-1");
    assert!(started.started_time.is_some());
    assert_eq!(started.outbox_task_id, 0);
    assert!(
        h.transfer(SHARD, pb::outbox_task::Kind::NexusTask)
            .is_empty()
    );
    let event = h
        .history(SHARD, WF)
        .into_iter()
        .find(|e| e.event_type == EventType::NexusOperationStarted as i32)
        .expect("started event");
    let Some(Attributes::NexusOperationStartedEventAttributes(a)) = &event.attributes else {
        panic!("{event:?}");
    };
    assert_eq!(
        (
            a.scheduled_event_id,
            a.operation_token.as_str(),
            a.request_id.as_str()
        ),
        (op.scheduled_event_id, "tok-1", "req-1")
    );
    // The workflow-event link is kept, the unparseable one dropped.
    assert_eq!(event.links.len(), 1, "{:?}", event.links);
    // A second start answer (a re-offer's) changes nothing.
    let events = h.history(SHARD, WF).len();
    assert!(answer(&h, token(&op), async_started("tok-2")).is_err());
    assert_eq!(h.history(SHARD, WF).len(), events);

    // A callback for another request of the same event ID, or with no target or no outcome,
    // is refused and changes nothing.
    let mut stranger = target(&op);
    stranger.request_id = "other".into();
    assert_eq!(
        callback_outcome(&h, Some(stranger), result(b"1"))
            .unwrap_err()
            .code,
        tonic::Code::NotFound as i32
    );
    assert!(callback_outcome(&h, None, result(b"1")).is_err());
    assert!(callback_outcome(&h, Some(target(&op)), None).is_err());
    assert_eq!(h.history(SHARD, WF).len(), events);
    assert_eq!(only_operation(&h), started);

    callback_outcome(&h, Some(target(&op)), result(b"42")).expect("completed");
    let completed = h
        .history(SHARD, WF)
        .into_iter()
        .find_map(|e| match e.attributes {
            Some(Attributes::NexusOperationCompletedEventAttributes(a)) => Some(a),
            _ => None,
        })
        .expect("completed event");
    assert_eq!(completed.result.unwrap().data, b"42");
    assert!(h.state(SHARD, WF).nexus_operations.is_empty());
    // Delivered twice: the second finds nothing pending.
    assert_eq!(
        callback_outcome(&h, Some(target(&op)), result(b"42"))
            .unwrap_err()
            .code,
        tonic::Code::NotFound as i32
    );
}

#[test]
fn a_callback_before_the_start_answer_records_started_first() {
    let h = Harness::new();
    scheduled(&h, vec![endpoint("calc-ep")]).expect("scheduled");
    let op = only_operation(&h);
    callback_outcome(
        &h,
        Some(target(&op)),
        Some(Outcome::Failure(Failure {
            message: "boom".into(),
            ..Default::default()
        })),
    )
    .expect("failed");
    let types = h.types(SHARD, WF);
    let started = types
        .iter()
        .position(|t| *t == EventType::NexusOperationStarted);
    let failed = types
        .iter()
        .position(|t| *t == EventType::NexusOperationFailed);
    assert!(started.is_some() && started < failed, "{types:?}");
    let failure = h
        .history(SHARD, WF)
        .into_iter()
        .find_map(|e| match e.attributes {
            Some(Attributes::NexusOperationFailedEventAttributes(a)) => a.failure,
            _ => None,
        })
        .expect("failure");
    assert_eq!(failure.message, "nexus operation completed unsuccessfully");
    assert_eq!(failure.cause.unwrap().message, "boom");
    assert!(h.state(SHARD, WF).nexus_operations.is_empty());
    assert!(
        h.transfer(SHARD, pb::outbox_task::Kind::NexusTask)
            .is_empty()
    );
    // The late start answer finds nothing.
    assert!(answer(&h, token(&op), async_started("tok")).is_err());
}

#[test]
fn cancel_waits_for_the_start_then_is_offered_and_answered() {
    let h = Harness::new();
    scheduled(&h, vec![endpoint("calc-ep")]).expect("scheduled");
    let op = only_operation(&h);
    // Unknown operation: the task fails with Temporal's cause.
    let refused = cancel_command(&h, 999).expect_err("refused");
    assert!(
        refused
            .message
            .contains("non-existing or already completed"),
        "{}",
        refused.message
    );
    let failed = events(&h)
        .into_iter()
        .find_map(|e| match e.attributes {
            Some(Attributes::WorkflowTaskFailedEventAttributes(a)) => Some(a),
            _ => None,
        })
        .expect("task failed");
    assert_eq!(
        failed.cause,
        WorkflowTaskFailedCause::BadRequestCancelNexusOperationAttributes as i32
    );

    cancel_command(&h, op.scheduled_event_id).expect("cancel requested");
    let requested = only_operation(&h);
    assert_eq!(
        requested.cancel_state,
        pb::NexusCancelationState::Pending as i32
    );
    assert!(requested.cancel_requested_event_id > 0);
    assert!(
        h.transfer(SHARD, pb::outbox_task::Kind::NexusCancel)
            .is_empty()
    );

    // The start answer sends the cancel request.
    answer(&h, token(&op), async_started("tok-1")).expect("started");
    let offered = only_operation(&h);
    assert_eq!(
        offered.cancel_state,
        pb::NexusCancelationState::Scheduled as i32
    );
    let rows = h.transfer(SHARD, pb::outbox_task::Kind::NexusCancel);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].0, offered.cancel_outbox_task_id);
    assert_eq!(rows[0].1.target_namespace_id, HANDLER_NS);

    // Asked twice (the Started event woke the workflow): refused.
    let twice = cancel_command(&h, op.scheduled_event_id).expect_err("refused");
    assert!(
        twice.message.contains("already requested"),
        "{}",
        twice.message
    );
    let cancel_token = |attempt| pb::TaskToken {
        is_nexus_cancel: true,
        attempt,
        ..token(&offered)
    };
    // A retryable refusal keeps it offered, with the next attempt.
    answer(&h, cancel_token(1), handler_error("INTERNAL")).expect("retried");
    assert_eq!(only_operation(&h).cancel_attempt, 2);
    assert!(
        answer(&h, cancel_token(1), cancel_accepted()).is_err(),
        "stale attempt"
    );
    answer(&h, cancel_token(2), cancel_accepted()).expect("accepted");
    let accepted = only_operation(&h);
    assert_eq!(
        accepted.cancel_state,
        pb::NexusCancelationState::Succeeded as i32
    );
    assert!(
        h.transfer(SHARD, pb::outbox_task::Kind::NexusCancel)
            .is_empty()
    );
    let event = events(&h)
        .into_iter()
        .find(|e| e.event_type == EventType::NexusOperationCancelRequestCompleted as i32)
        .expect("cancel request completed");
    assert!(event.worker_may_ignore);
    let Some(Attributes::NexusOperationCancelRequestCompletedEventAttributes(a)) = event.attributes
    else {
        panic!("attributes");
    };
    assert_eq!(
        (a.scheduled_event_id, a.requested_event_id),
        (op.scheduled_event_id, requested.cancel_requested_event_id)
    );
    // Answered again: nothing.
    assert!(answer(&h, cancel_token(2), cancel_accepted()).is_err());

    callback_outcome(
        &h,
        Some(target(&op)),
        Some(Outcome::Canceled(Failure {
            message: "operation canceled".into(),
            ..Default::default()
        })),
    )
    .expect("canceled");
    let canceled = events(&h)
        .into_iter()
        .find_map(|e| match e.attributes {
            Some(Attributes::NexusOperationCanceledEventAttributes(a)) => a.failure,
            _ => None,
        })
        .expect("canceled event");
    assert!(matches!(
        canceled.cause.unwrap().failure_info,
        Some(
            chronicle_proto::temporal::api::failure::v1::failure::FailureInfo::CanceledFailureInfo(
                _
            )
        )
    ));
}

#[test]
fn a_final_cancel_refusal_records_cancel_request_failed() {
    let h = Harness::new();
    scheduled(&h, vec![endpoint("calc-ep")]).expect("scheduled");
    let op = only_operation(&h);
    answer(&h, token(&op), async_started("tok-1")).expect("started");
    cancel_command(&h, op.scheduled_event_id).expect("cancel requested");
    let offered = only_operation(&h);
    assert_eq!(
        h.transfer(SHARD, pb::outbox_task::Kind::NexusCancel).len(),
        1
    );
    let cancel_token = pb::TaskToken {
        is_nexus_cancel: true,
        attempt: 1,
        ..token(&offered)
    };
    answer(&h, cancel_token, handler_error("BAD_REQUEST")).expect("refused");
    let failed = h
        .history(SHARD, WF)
        .into_iter()
        .find_map(|e| match e.attributes {
            Some(Attributes::NexusOperationCancelRequestFailedEventAttributes(a)) => Some(a),
            _ => None,
        })
        .expect("cancel request failed");
    assert_eq!(failed.failure.unwrap().message, "handler says BAD_REQUEST");
    assert_eq!(
        only_operation(&h).cancel_state,
        pb::NexusCancelationState::Failed as i32
    );
    assert!(
        h.transfer(SHARD, pb::outbox_task::Kind::NexusCancel)
            .is_empty()
    );
}

#[test]
fn an_empty_or_oversized_operation_token_is_handled() {
    // Started with an empty token: a second start answer still finds it started.
    let h = Harness::new();
    scheduled(&h, vec![endpoint("calc-ep")]).expect("scheduled");
    let op = only_operation(&h);
    answer(&h, token(&op), async_started("")).expect("started");
    assert!(answer(&h, token(&op), async_started("tok")).is_err());
    assert_eq!(only_operation(&h).operation_token, "");

    // A token over Temporal's limit fails the operation.
    let h = Harness::new();
    scheduled(&h, vec![endpoint("calc-ep")]).expect("scheduled");
    let op = only_operation(&h);
    answer(&h, token(&op), async_started(&"x".repeat(4097))).expect("failed");
    assert!(h.state(SHARD, WF).nexus_operations.is_empty());
    let failure = h
        .history(SHARD, WF)
        .into_iter()
        .find_map(|e| match e.attributes {
            Some(Attributes::NexusOperationFailedEventAttributes(a)) => a.failure,
            _ => None,
        })
        .expect("failed event");
    assert!(
        failure
            .cause
            .unwrap()
            .message
            .contains("length exceeds allowed limit (4097/4096)")
    );
}
