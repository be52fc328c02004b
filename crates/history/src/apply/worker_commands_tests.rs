//! Worker commands applied command by command: which running attempts a cancel request or a
//! close tells their worker about, under which control queue and task token, and that a poll
//! takes a row once.

use chronicle_proto::chronicle::history::v1::{self as cmd, command_result, shard_command::Kind};
use chronicle_proto::chronicle::persistence::v1 as pb;
use chronicle_proto::temporal::api::command::v1::{
    RequestCancelActivityTaskCommandAttributes, ScheduleActivityTaskCommandAttributes,
    command::Attributes as CommandAttributes,
};
use chronicle_proto::temporal::api::common::v1::{ActivityType, WorkflowExecution};
use chronicle_proto::temporal::api::enums::v1::TaskQueueKind;
use chronicle_proto::temporal::api::taskqueue::v1::TaskQueue;
use chronicle_proto::temporal::api::worker::v1::worker_command;
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use chronicle_types::time::duration_from_millis;

use super::child_tests::{Harness, NS};
use crate::tokens;

const SHARD: u32 = 0;
const WF: &str = "wf-commands";

fn schedule(id: &str) -> CommandAttributes {
    CommandAttributes::ScheduleActivityTaskCommandAttributes(
        ScheduleActivityTaskCommandAttributes {
            activity_id: id.into(),
            activity_type: Some(ActivityType {
                name: "Work".into(),
            }),
            task_queue: Some(TaskQueue {
                name: "tq".into(),
                ..Default::default()
            }),
            start_to_close_timeout: Some(duration_from_millis(300_000)),
            ..Default::default()
        },
    )
}

/// A run with activities `a`, `b`, `c`, `d` scheduled; `started` names those to start and the
/// control queue each poll named.
fn run_with_activities(started: &[(&str, &str)]) -> Harness {
    let h = Harness::new();
    h.start(SHARD, WF, "run-1");
    h.decide(
        SHARD,
        WF,
        ["a", "b", "c", "d"].into_iter().map(schedule).collect(),
    );
    for (id, control_queue) in started {
        let activity = activity(&h, id);
        h.ok(
            SHARD,
            Kind::RecordActivityTaskStarted(cmd::RecordActivityTaskStarted {
                namespace_id: NS.into(),
                workflow_id: WF.into(),
                run_id: "run-1".into(),
                scheduled_event_id: activity.scheduled_event_id,
                attempt: activity.attempt,
                request_id: format!("poll-{id}"),
                identity: "worker".into(),
                outbox_id: activity.outbox_task_id,
                worker_control_task_queue: control_queue.to_string(),
            }),
        );
    }
    h
}

fn activity(h: &Harness, id: &str) -> pb::ActivityInfo {
    h.state(SHARD, WF)
        .activities
        .into_values()
        .find(|a| a.activity_id == id)
        .expect("the activity")
}

/// The token the activity's poll answered (service::activity_task_response).
fn poll_token(activity: &pb::ActivityInfo) -> Vec<u8> {
    tokens::encode(&pb::TaskToken {
        namespace_id: NS.into(),
        workflow_id: WF.into(),
        run_id: "run-1".into(),
        scheduled_event_id: activity.scheduled_event_id,
        attempt: activity.attempt,
        is_activity: true,
        activity_id: activity.activity_id.clone(),
        ..Default::default()
    })
}

/// The worker-commands rows: (row ID, control queue, the tokens of its CancelActivity commands).
fn command_rows(h: &Harness) -> Vec<(u64, String, Vec<Vec<u8>>)> {
    h.transfer(SHARD, pb::outbox_task::Kind::WorkerCommands)
        .into_iter()
        .map(|(id, row)| {
            assert_eq!(row.task_queue_kind, TaskQueueKind::WorkerCommands as i32);
            // The delivery window counts from the command's time.
            assert!(row.visibility_time.is_some());
            assert_eq!(
                (row.workflow_id.as_str(), row.run_id.as_str()),
                (WF, "run-1")
            );
            let tokens = row
                .worker_commands
                .into_iter()
                .map(|c| match c.r#type {
                    Some(worker_command::Type::CancelActivity(cancel)) => cancel.task_token,
                    None => panic!("a command without a type"),
                })
                .collect();
            (id, row.task_queue, tokens)
        })
        .collect()
}

/// A workflow task (woken by a signal) that requests the cancellation of `ids`.
fn cancel(h: &Harness, ids: &[&str]) {
    h.ok(
        SHARD,
        Kind::SignalWorkflow(cmd::SignalWorkflow {
            namespace_id: NS.into(),
            request: Some(ws::SignalWorkflowExecutionRequest {
                workflow_execution: Some(WorkflowExecution {
                    workflow_id: WF.into(),
                    run_id: "run-1".into(),
                }),
                signal_name: "cancel".into(),
                request_id: format!("cancel-{ids:?}"),
                ..Default::default()
            }),
            ..Default::default()
        }),
    );
    let commands = ids
        .iter()
        .map(|id| {
            CommandAttributes::RequestCancelActivityTaskCommandAttributes(
                RequestCancelActivityTaskCommandAttributes {
                    scheduled_event_id: activity(h, id).scheduled_event_id,
                },
            )
        })
        .collect();
    h.decide(SHARD, WF, commands);
}

/// One row per worker process for the whole workflow task, carrying the tokens their polls
/// answered; an attempt whose worker takes no commands, or one not started, gets none.
#[test]
fn a_cancel_request_tells_each_running_attempts_worker_once_per_task() {
    let h = run_with_activities(&[("a", "cq-1"), ("b", "cq-1"), ("c", ""), ("d", "cq-2")]);
    let (a, b) = (activity(&h, "a"), activity(&h, "b"));
    assert_eq!(a.worker_control_task_queue, "cq-1");
    assert!(
        command_rows(&h).is_empty(),
        "nothing before a cancel request"
    );
    cancel(&h, &["a", "b", "c"]);
    let rows = command_rows(&h);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].1, "cq-1");
    assert_eq!(rows[0].2, vec![poll_token(&a), poll_token(&b)]);
    // `d` runs on another worker, and nobody asked to cancel it.
    let d = activity(&h, "d");
    assert!(d.started && !d.cancel_requested && d.worker_control_task_queue == "cq-2");
}

#[test]
fn a_cancel_request_for_an_attempt_not_started_sends_nothing() {
    let h = run_with_activities(&[]);
    cancel(&h, &["a"]);
    assert!(command_rows(&h).is_empty());
}

/// The run's close (here a termination) tells every worker running one of its attempts, one
/// row per control queue; the attempts' timers and tasks go as before.
#[test]
fn closing_the_run_cancels_running_attempts_per_worker() {
    let h = run_with_activities(&[("a", "cq-1"), ("b", "cq-2"), ("c", "cq-1")]);
    let tokens_of = |ids: &[&str]| -> Vec<Vec<u8>> {
        ids.iter().map(|id| poll_token(&activity(&h, id))).collect()
    };
    let (cq1, cq2) = (tokens_of(&["a", "c"]), tokens_of(&["b"]));
    h.ok(
        SHARD,
        Kind::TerminateWorkflow(cmd::TerminateWorkflow {
            namespace_id: NS.into(),
            request: Some(ws::TerminateWorkflowExecutionRequest {
                namespace: "default".into(),
                workflow_execution: Some(WorkflowExecution {
                    workflow_id: WF.into(),
                    run_id: String::new(),
                }),
                reason: "test".into(),
                ..Default::default()
            }),
        }),
    );
    let rows: Vec<(String, Vec<Vec<u8>>)> = command_rows(&h)
        .into_iter()
        .map(|(_, queue, tokens)| (queue, tokens))
        .collect();
    assert_eq!(
        rows,
        vec![("cq-1".to_string(), cq1), ("cq-2".to_string(), cq2)]
    );
    assert!(h.state(SHARD, WF).activities.is_empty());
}

/// A poll takes a row once: a second poll (a copy of the task on another matching node, say)
/// finds it gone and the row stays deleted.
#[test]
fn a_worker_commands_row_is_taken_at_most_once() {
    let h = run_with_activities(&[("a", "cq-1")]);
    cancel(&h, &["a"]);
    let (row_id, _, _) = command_rows(&h).pop().expect("a row");
    let take = || {
        h.apply(
            SHARD,
            Kind::TakeWorkerCommands(cmd::TakeWorkerCommands {
                outbox_id: row_id as i64,
            }),
        )
    };
    assert!(matches!(take(), Ok(command_result::Result::Ok(_))));
    assert!(command_rows(&h).is_empty());
    let again = take().expect_err("taken already");
    assert_eq!(again.code, tonic::Code::NotFound as i32);
}
