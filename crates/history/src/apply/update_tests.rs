//! Workflow updates applied command by command: admission and its de-duplication, speculative
//! tasks that leave no trace when they only reject, the events of accepted and completed
//! updates, and what a close or a bad message does to updates in flight.

use chronicle_proto::chronicle::history::v1::{self as cmd, command_result, shard_command::Kind};
use chronicle_proto::chronicle::persistence::v1 as pb;
use chronicle_proto::temporal::api::command::v1::{
    Command, CompleteWorkflowExecutionCommandAttributes,
    ContinueAsNewWorkflowExecutionCommandAttributes, ProtocolMessageCommandAttributes,
    RequestCancelNexusOperationCommandAttributes, command::Attributes as CommandAttributes,
};
use chronicle_proto::temporal::api::common::v1::{WorkflowExecution, WorkflowType};
use chronicle_proto::temporal::api::enums::v1::{
    EventType, WorkflowExecutionStatus, WorkflowTaskFailedCause,
};
use chronicle_proto::temporal::api::failure::v1::Failure;
use chronicle_proto::temporal::api::history::v1::history_event::Attributes;
use chronicle_proto::temporal::api::protocol::v1::Message;
use chronicle_proto::temporal::api::taskqueue::v1::TaskQueue;
use chronicle_proto::temporal::api::update::v1 as upd;
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use prost::Name;

use super::child_tests::{Harness, NS, reset_request};
use pb::update_info::Stage;

const SHARD: u32 = 0;
const WF: &str = "wf-update";

fn admit(h: &Harness, update_id: &str) -> Result<command_result::Result, cmd::CommandError> {
    h.apply(
        SHARD,
        Kind::UpdateWorkflow(cmd::UpdateWorkflow {
            namespace_id: NS.into(),
            request: Some(ws::UpdateWorkflowExecutionRequest {
                namespace: "default".into(),
                workflow_execution: Some(WorkflowExecution {
                    workflow_id: WF.into(),
                    run_id: String::new(),
                }),
                request: Some(upd::Request {
                    meta: Some(upd::Meta {
                        update_id: update_id.into(),
                        identity: "client".into(),
                    }),
                    input: Some(upd::Input {
                        name: "approve".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            start: None,
        }),
    )
}

fn message<M: prost::Message + Name>(update_id: &str, suffix: &str, body: &M) -> Message {
    Message {
        id: format!("{update_id}/{suffix}"),
        protocol_instance_id: update_id.into(),
        sequencing_id: None,
        body: Some(chronicle_proto::wkt::Any {
            type_url: format!("type.googleapis.com/{}", M::full_name()),
            value: body.encode_to_vec(),
        }),
    }
}

fn acceptance(update_id: &str) -> Message {
    message(
        update_id,
        "accept",
        &upd::Acceptance {
            accepted_request_message_id: format!("{update_id}/request"),
            accepted_request_sequencing_event_id: 4,
            accepted_request: None,
        },
    )
}

fn response(update_id: &str) -> Message {
    message(
        update_id,
        "complete",
        &upd::Response {
            meta: Some(upd::Meta {
                update_id: update_id.into(),
                identity: "worker".into(),
            }),
            outcome: Some(upd::Outcome {
                value: Some(upd::outcome::Value::Success(Default::default())),
            }),
        },
    )
}

fn rejection(update_id: &str) -> Message {
    message(
        update_id,
        "reject",
        &upd::Rejection {
            rejected_request_message_id: format!("{update_id}/request"),
            failure: Some(Failure {
                message: "no".into(),
                ..Default::default()
            }),
            ..Default::default()
        },
    )
}

fn protocol_command(m: &Message) -> CommandAttributes {
    CommandAttributes::ProtocolMessageCommandAttributes(ProtocolMessageCommandAttributes {
        message_id: m.id.clone(),
    })
}

fn complete(
    h: &Harness,
    token: pb::TaskToken,
    commands: Vec<CommandAttributes>,
    messages: Vec<Message>,
) -> Result<command_result::Result, cmd::CommandError> {
    h.apply(
        SHARD,
        Kind::CompleteWorkflowTask(cmd::CompleteWorkflowTask {
            token: Some(token),
            request: Some(ws::RespondWorkflowTaskCompletedRequest {
                namespace: "default".into(),
                commands: commands
                    .into_iter()
                    .map(|a| Command {
                        attributes: Some(a),
                        ..Default::default()
                    })
                    .collect(),
                messages,
                identity: "worker".into(),
                ..Default::default()
            }),
            new_run_id: "next-run".into(),
            eager_activities: false,
            max_history_events: 0,
            max_history_bytes: 0,
            nexus_endpoints: Vec::new(),
            nexus_request_ids: Vec::new(),
        }),
    )
}

/// A workflow whose first task completed with no commands: idle, no task pending.
fn idle_workflow() -> Harness {
    let h = Harness::new();
    h.start(SHARD, WF, "run-1");
    h.decide(SHARD, WF, vec![]);
    assert!(h.state(SHARD, WF).workflow_task.is_none());
    h
}

fn stage(h: &Harness, update_id: &str) -> Option<Stage> {
    h.state(SHARD, WF)
        .updates
        .get(update_id)
        .map(|u| Stage::try_from(u.stage).unwrap())
}

#[test]
fn a_speculative_task_that_only_rejects_leaves_no_events() {
    let h = idle_workflow();
    let before = h.history(SHARD, WF);
    admit(&h, "u1").expect("admitted");
    let task = h
        .state(SHARD, WF)
        .workflow_task
        .expect("a task for the update");
    assert!(task.speculative && task.transient);
    assert_eq!(h.history(SHARD, WF), before, "nothing written at admission");
    let token = h.start_task(SHARD, WF);
    let messages =
        crate::apply::update::request_messages(&h.state(SHARD, WF), token.started_event_id);
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].id, "u1/request");
    let result = complete(&h, token, vec![], vec![rejection("u1")]).expect("completed");
    let command_result::Result::CompleteWorkflowTask(result) = result else {
        panic!("{result:?}");
    };
    let state = h.state(SHARD, WF);
    assert_eq!(
        result.reset_history_event_id,
        state.last_completed_workflow_task_started_event_id
    );
    assert_eq!(h.history(SHARD, WF), before, "no trace of the task");
    assert!(state.workflow_task.is_none());
    assert_eq!(stage(&h, "u1"), Some(Stage::Rejected));
    // A rejected update ID is admitted afresh, as Temporal forgets rejections.
    admit(&h, "u1").expect("admitted again");
    assert_eq!(stage(&h, "u1"), Some(Stage::Admitted));
}

#[test]
fn accepted_and_completed_updates_write_events_and_ids_are_deduplicated() {
    let h = idle_workflow();
    admit(&h, "u1").expect("admitted");
    let token = h.start_task(SHARD, WF);
    let (a, r) = (acceptance("u1"), response("u1"));
    complete(
        &h,
        token,
        vec![protocol_command(&a), protocol_command(&r)],
        vec![a, r],
    )
    .expect("completed");
    let events = h.history(SHARD, WF);
    let types: Vec<EventType> = events
        .iter()
        .map(|e| EventType::try_from(e.event_type).unwrap())
        .collect();
    assert_eq!(
        &types[types.len() - 5..],
        [
            EventType::WorkflowTaskScheduled,
            EventType::WorkflowTaskStarted,
            EventType::WorkflowTaskCompleted,
            EventType::WorkflowExecutionUpdateAccepted,
            EventType::WorkflowExecutionUpdateCompleted,
        ]
    );
    let accepted = &events[events.len() - 2];
    let Some(Attributes::WorkflowExecutionUpdateAcceptedEventAttributes(a)) = &accepted.attributes
    else {
        panic!("accepted")
    };
    assert_eq!(a.protocol_instance_id, "u1");
    assert_eq!(a.accepted_request_message_id, "u1/request");
    assert_eq!(a.accepted_request_sequencing_event_id, 4);
    assert_eq!(
        a.accepted_request
            .as_ref()
            .unwrap()
            .input
            .as_ref()
            .unwrap()
            .name,
        "approve",
        "the original request"
    );
    let Some(Attributes::WorkflowExecutionUpdateCompletedEventAttributes(c)) =
        &events[events.len() - 1].attributes
    else {
        panic!("completed")
    };
    assert_eq!(c.accepted_event_id, accepted.event_id);
    assert_eq!(c.meta.as_ref().unwrap().update_id, "u1");
    assert_eq!(stage(&h, "u1"), Some(Stage::Completed));

    // The same ID again changes nothing: no new task, no new state.
    let state = h.state(SHARD, WF);
    admit(&h, "u1").expect("found");
    assert_eq!(h.state(SHARD, WF), state);
    // Also once the run closed.
    admit(&h, "u2").expect("admitted");
    let token = h.start_task(SHARD, WF);
    let reject = rejection("u2");
    complete(
        &h,
        token,
        vec![
            CommandAttributes::CompleteWorkflowExecutionCommandAttributes(
                CompleteWorkflowExecutionCommandAttributes::default(),
            ),
        ],
        vec![reject],
    )
    .expect("completed");
    assert_eq!(
        h.state(SHARD, WF).status,
        WorkflowExecutionStatus::Completed as i32
    );
    admit(&h, "u1").expect("a completed update is found on a closed run");
    let refused = admit(&h, "u3").expect_err("a new update on a closed run");
    assert_eq!(refused.message, "workflow execution already completed");
    assert_eq!(refused.code, tonic::Code::NotFound as i32);
}

#[test]
fn continue_as_new_drops_admitted_updates_and_fails_accepted_ones() {
    let h = idle_workflow();
    admit(&h, "accepted").expect("admitted");
    let token = h.start_task(SHARD, WF);
    let a = acceptance("accepted");
    complete(&h, token, vec![protocol_command(&a)], vec![a]).expect("accepted");
    assert_eq!(stage(&h, "accepted"), Some(Stage::Accepted));
    // Admitted while nothing runs: delivered with the next task, which continues as new
    // without handling it.
    admit(&h, "admitted").expect("admitted");
    let token = h.start_task(SHARD, WF);
    let old_run = token.run_id.clone();
    complete(
        &h,
        token,
        vec![
            CommandAttributes::ContinueAsNewWorkflowExecutionCommandAttributes(
                ContinueAsNewWorkflowExecutionCommandAttributes {
                    workflow_type: Some(WorkflowType {
                        name: "Parent".into(),
                    }),
                    task_queue: Some(TaskQueue {
                        name: "tq".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ),
        ],
        vec![],
    )
    .expect("continued");
    let old = h
        .tables(SHARD)
        .execution(NS, WF, &old_run)
        .unwrap()
        .unwrap();
    assert_eq!(old.status, WorkflowExecutionStatus::ContinuedAsNew as i32);
    assert!(!old.updates.contains_key("admitted"));
    let error = crate::apply::update::dropped_update_error(&old);
    assert_eq!(error.code, tonic::Code::ResourceExhausted, "retryable");
    let accepted = &old.updates["accepted"];
    assert_eq!(accepted.stage, Stage::Completed as i32);
    let Some(upd::outcome::Value::Failure(f)) =
        accepted.outcome.as_ref().and_then(|o| o.value.as_ref())
    else {
        panic!("failure outcome")
    };
    assert_eq!(
        f.message,
        "Workflow Update failed because the Workflow completed before the Update completed."
    );
    // The same update ID without a run goes to the new run, as a new update.
    admit(&h, "admitted").expect("admitted on the new run");
    assert_ne!(h.state(SHARD, WF).run_id, old_run);
}

#[test]
fn a_bad_message_fails_the_task_and_aborts_the_updates_it_carried() {
    let h = idle_workflow();
    admit(&h, "u1").expect("admitted");
    let token = h.start_task(SHARD, WF);
    // A Response for an update that was never accepted.
    let r = response("u1");
    let refused = complete(&h, token, vec![protocol_command(&r)], vec![r]).expect_err("refused");
    assert_eq!(refused.code, tonic::Code::InvalidArgument as i32);
    let state = h.state(SHARD, WF);
    assert!(!state.updates.contains_key("u1"));
    assert_eq!(
        crate::apply::update::dropped_update_error(&state).code,
        tonic::Code::FailedPrecondition,
        "WorkflowNotReady"
    );
    let failed = h
        .history(SHARD, WF)
        .into_iter()
        .rev()
        .find_map(|e| match e.attributes {
            Some(Attributes::WorkflowTaskFailedEventAttributes(a)) => Some(a),
            _ => None,
        })
        .expect("the speculative task became a failed normal one");
    assert_eq!(
        failed.cause,
        WorkflowTaskFailedCause::BadUpdateWorkflowExecutionMessage as i32
    );
}

#[test]
fn a_cancel_of_an_unknown_nexus_operation_fails_the_task_once() {
    let h = Harness::new();
    h.start(SHARD, WF, "run-1");
    let nexus = || {
        vec![
            CommandAttributes::RequestCancelNexusOperationCommandAttributes(
                RequestCancelNexusOperationCommandAttributes::default(),
            ),
        ]
    };
    let token = h.start_task(SHARD, WF);
    let refused = complete(&h, token, nexus(), vec![]).expect_err("refused");
    assert!(
        refused
            .message
            .contains("requested cancelation for a non-existing or already completed operation"),
        "{refused:?}"
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
        WorkflowTaskFailedCause::BadRequestCancelNexusOperationAttributes as i32
    );
    // The retry that sends it again is refused without a new attempt: it times out instead.
    let token = h.start_task(SHARD, WF);
    assert_eq!(token.attempt, 2);
    complete(&h, token.clone(), nexus(), vec![]).expect_err("refused again");
    let task = h
        .state(SHARD, WF)
        .workflow_task
        .expect("still the same task");
    assert_eq!(task.attempt, 2);
    assert_eq!(task.started_event_id, token.started_event_id);
}

#[test]
fn in_flight_updates_are_limited() {
    let h = idle_workflow();
    for i in 0..crate::apply::update::MAX_IN_FLIGHT_UPDATES {
        admit(&h, &format!("u{i}")).expect("admitted");
    }
    let refused = admit(&h, "one-too-many").expect_err("limit");
    assert_eq!(refused.code, tonic::Code::ResourceExhausted as i32);
    // Requests for admitted IDs are still answered.
    admit(&h, "u0").expect("found");
}

/// Starts the pending task with this poll request ID; the token carries it, as the service's do.
fn start_task_as(h: &Harness, request_id: &str) -> pb::TaskToken {
    let state = h.state(SHARD, WF);
    let task = state.workflow_task.expect("a workflow task");
    let started = h.ok(
        SHARD,
        Kind::RecordWorkflowTaskStarted(cmd::RecordWorkflowTaskStarted {
            namespace_id: NS.into(),
            workflow_id: WF.into(),
            run_id: state.run_id.clone(),
            scheduled_event_id: task.scheduled_event_id,
            request_id: request_id.into(),
            identity: "test".into(),
            outbox_id: task.outbox_task_id,
            ..Default::default()
        }),
    );
    let command_result::Result::WorkflowTaskStarted(started) = started else {
        panic!("started");
    };
    pb::TaskToken {
        namespace_id: NS.into(),
        workflow_id: WF.into(),
        run_id: state.run_id,
        scheduled_event_id: started.scheduled_event_id,
        attempt: started.attempt,
        started_event_id: started.started_event_id,
        started_request_id: request_id.into(),
        ..Default::default()
    }
}

#[test]
fn a_late_completion_of_a_discarded_speculative_task_does_not_complete_the_next_one() {
    let h = idle_workflow();
    admit(&h, "u1").expect("admitted");
    let first = start_task_as(&h, "poll-1");
    complete(&h, first.clone(), vec![], vec![rejection("u1")]).expect("discarded");
    admit(&h, "u2").expect("admitted");
    let second = start_task_as(&h, "poll-2");
    // Nothing was written in between: the new task has the same IDs and attempt.
    assert_eq!(
        (
            second.scheduled_event_id,
            second.started_event_id,
            second.attempt
        ),
        (
            first.scheduled_event_id,
            first.started_event_id,
            first.attempt
        )
    );
    // The first task's completion, sent again (a retry after a lost answer), is stale.
    let stale = complete(&h, first, vec![], vec![rejection("u1")]).expect_err("stale");
    assert_eq!(stale.code, tonic::Code::NotFound as i32);
    assert_eq!(stage(&h, "u2"), Some(Stage::Admitted));
    complete(&h, second, vec![], vec![rejection("u2")]).expect("the new task completes");
    assert_eq!(stage(&h, "u2"), Some(Stage::Rejected));
}

#[test]
fn an_update_to_a_run_whose_start_is_delayed_waits_for_the_first_task() {
    let h = Harness::new();
    h.ok(
        SHARD,
        Kind::StartWorkflow(cmd::StartWorkflow {
            namespace_id: NS.into(),
            request: Some(ws::StartWorkflowExecutionRequest {
                namespace: "default".into(),
                workflow_id: WF.into(),
                workflow_type: Some(WorkflowType {
                    name: "Delayed".into(),
                }),
                task_queue: Some(TaskQueue {
                    name: "tq".into(),
                    ..Default::default()
                }),
                request_id: "start".into(),
                workflow_start_delay: Some(chronicle_types::time::duration_from_millis(60_000)),
                ..Default::default()
            }),
            run_id: "run-1".into(),
            scheduled_by: None,
            eager_workflow_start: false,
        }),
    );
    admit(&h, "early").expect("admitted");
    assert!(
        h.state(SHARD, WF).workflow_task.is_none(),
        "no task before the start delay ends"
    );
    // The delay ends: the first task carries the update.
    let (key, task) = h
        .tables(SHARD)
        .timers_between(0, i64::MAX, 100)
        .unwrap()
        .into_iter()
        .find(|(_, t)| t.kind == pb::timer_task::Kind::WorkflowStartDelay as i32)
        .expect("the start delay timer");
    h.ok(
        SHARD,
        Kind::FireTimer(cmd::FireTimer {
            key,
            task: Some(task),
            new_run_id: String::new(),
        }),
    );
    let token = h.start_task(SHARD, WF);
    let messages =
        crate::apply::update::request_messages(&h.state(SHARD, WF), token.started_event_id);
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].protocol_instance_id, "early");
}

#[test]
fn a_reset_admits_the_accepted_update_again_by_an_admitted_event() {
    use chronicle_proto::temporal::api::enums::v1::UpdateAdmittedEventOrigin;
    let h = idle_workflow();
    admit(&h, "u1").expect("admitted");
    let token = h.start_task(SHARD, WF);
    let accept = acceptance("u1");
    let done = response("u1");
    complete(
        &h,
        token,
        vec![protocol_command(&accept), protocol_command(&done)],
        vec![accept, done],
    )
    .expect("completed");
    assert_eq!(stage(&h, "u1"), Some(Stage::Completed));
    // Reset to the first task's completion (event 4): the update came after it.
    h.reset(SHARD, reset_request(WF, "run-1", 4, "reset-1"), "run-2")
        .expect("reset applies");
    let state = h.state(SHARD, WF);
    assert_eq!(state.run_id, "run-2");
    let info = state.updates.get("u1").expect("re-admitted");
    assert_eq!(info.stage, Stage::Admitted as i32);
    assert!(info.request.is_none(), "the request is in history");
    let history = h.history(SHARD, WF);
    let admitted = history
        .iter()
        .find(|e| e.event_id == info.admitted_event_id)
        .expect("the Admitted event");
    let Some(Attributes::WorkflowExecutionUpdateAdmittedEventAttributes(a)) = &admitted.attributes
    else {
        panic!("{admitted:?}");
    };
    assert_eq!(a.origin, UpdateAdmittedEventOrigin::Reapply as i32);
    assert_eq!(
        a.request.as_ref().unwrap().meta.as_ref().unwrap().update_id,
        "u1"
    );
    // The worker reads it from history: no request message; its acceptance has no copy.
    let token = h.start_task(SHARD, WF);
    assert!(
        crate::apply::update::request_messages(&h.state(SHARD, WF), token.started_event_id)
            .is_empty()
    );
    // (even when the worker's acceptance echoes the request)
    let accept = message(
        "u1",
        "accept",
        &upd::Acceptance {
            accepted_request_message_id: "u1/request".into(),
            accepted_request_sequencing_event_id: 4,
            accepted_request: a.request.clone(),
        },
    );
    complete(&h, token, vec![protocol_command(&accept)], vec![accept]).expect("completed");
    let accepted = h
        .history(SHARD, WF)
        .into_iter()
        .rev()
        .find_map(|e| match e.attributes {
            Some(Attributes::WorkflowExecutionUpdateAcceptedEventAttributes(a)) => Some(a),
            _ => None,
        })
        .expect("accepted");
    assert_eq!(accepted.protocol_instance_id, "u1");
    assert!(accepted.accepted_request.is_none());
    assert_eq!(stage(&h, "u1"), Some(Stage::Accepted));
}
