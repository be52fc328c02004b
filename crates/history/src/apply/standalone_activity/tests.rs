//! Standalone activity executions applied command by command: start under the ID policies,
//! a worker's start and outcome, retries, cancellation and termination, and that none of it
//! writes history events.

use chronicle_proto::chronicle::history::v1::{
    self as cmd, command_result, respond_activity, shard_command::Kind,
};
use chronicle_proto::chronicle::persistence::v1 as pb;
use chronicle_proto::temporal::api::common::v1::{ActivityType, Payloads, RetryPolicy};
use chronicle_proto::temporal::api::enums::v1::{
    ActivityIdConflictPolicy, ActivityIdReusePolicy, WorkflowExecutionStatus,
};
use chronicle_proto::temporal::api::failure::v1::{ApplicationFailureInfo, Failure, failure};
use chronicle_proto::temporal::api::taskqueue::v1::TaskQueue;
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use chronicle_types::standalone_activity::key;
use chronicle_types::time::duration_from_millis;

use crate::apply::child_tests::{Harness, NS};

const SHARD: u32 = 0;

fn start_request(id: &str, request_id: &str) -> ws::StartActivityExecutionRequest {
    ws::StartActivityExecutionRequest {
        namespace: "default".into(),
        activity_id: id.into(),
        request_id: request_id.into(),
        activity_type: Some(ActivityType {
            name: "Work".into(),
        }),
        task_queue: Some(TaskQueue {
            name: "tq".into(),
            kind: 1,
            ..Default::default()
        }),
        start_to_close_timeout: Some(duration_from_millis(10_000)),
        schedule_to_close_timeout: Some(duration_from_millis(600_000)),
        retry_policy: Some(RetryPolicy {
            maximum_attempts: 2,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn start(
    h: &Harness,
    request: ws::StartActivityExecutionRequest,
    run_id: &str,
) -> Result<cmd::StartWorkflowResult, cmd::CommandError> {
    match h.apply(
        SHARD,
        Kind::StartActivityExecution(cmd::StartActivityExecution {
            namespace_id: NS.into(),
            request: Some(request),
            run_id: run_id.into(),
        }),
    )? {
        command_result::Result::StartWorkflow(r) => Ok(r),
        other => panic!("unexpected {other:?}"),
    }
}

fn state(h: &Harness, id: &str) -> pb::WorkflowExecutionState {
    h.state(SHARD, &key(id))
}

fn activity_tasks(h: &Harness) -> Vec<(u64, pb::OutboxTask)> {
    h.transfer(SHARD, pb::outbox_task::Kind::ActivityTask)
}

/// The worker's poll: records attempt `attempt` as started, answers its token.
fn poll(h: &Harness, id: &str, attempt: i32) -> pb::TaskToken {
    let s = state(h, id);
    let (outbox_id, _) = activity_tasks(h).pop().expect("an activity task");
    h.ok(
        SHARD,
        Kind::RecordActivityTaskStarted(cmd::RecordActivityTaskStarted {
            namespace_id: NS.into(),
            workflow_id: key(id),
            run_id: s.run_id.clone(),
            scheduled_event_id: super::ACTIVITY_KEY,
            attempt,
            request_id: format!("poll-{attempt}"),
            identity: "worker".into(),
            outbox_id: outbox_id as i64,
            ..Default::default()
        }),
    );
    pb::TaskToken {
        namespace_id: NS.into(),
        workflow_id: key(id),
        run_id: s.run_id,
        scheduled_event_id: super::ACTIVITY_KEY,
        attempt,
        is_activity: true,
        activity_id: id.into(),
        ..Default::default()
    }
}

fn respond(
    h: &Harness,
    token: pb::TaskToken,
    outcome: respond_activity::Outcome,
) -> Result<command_result::Result, cmd::CommandError> {
    h.apply(
        SHARD,
        Kind::RespondActivity(cmd::RespondActivity {
            token: Some(token),
            outcome: Some(outcome),
        }),
    )
}

/// The retry timer of attempt `attempt` fires (its apply): the attempt is dispatched.
fn retry_backoff_elapses(h: &Harness, id: &str, attempt: i32) {
    let mut batch = chronicle_storage::ShardBatch::new(h.tables(SHARD));
    let mut ms = crate::mutable_state::MutableState::new(
        state(h, id),
        chronicle_types::time::from_millis(2_000_000),
    );
    assert!(matches!(
        crate::apply::activity::retry_due(&mut batch, &mut ms, super::ACTIVITY_KEY, attempt),
        Ok(true)
    ));
    ms.persist(&mut batch);
    batch.commit().unwrap();
}

fn payloads(data: &[u8]) -> Option<Payloads> {
    Some(Payloads {
        payloads: vec![chronicle_proto::temporal::api::common::v1::Payload {
            data: data.to_vec(),
            ..Default::default()
        }],
    })
}

#[test]
fn a_started_activity_is_dispatched_run_and_closed_with_its_result_without_events() {
    let h = Harness::new();
    let started = start(&h, start_request("a", "req-1"), "run-1").unwrap();
    assert!(started.started);
    assert_eq!(activity_tasks(&h).len(), 1);
    let token = poll(&h, "a", 1);
    assert!(
        activity_tasks(&h).is_empty(),
        "started: the task left the outbox"
    );
    respond(
        &h,
        token,
        respond_activity::Outcome::Completed(ws::RespondActivityTaskCompletedRequest {
            result: payloads(b"2"),
            ..Default::default()
        }),
    )
    .unwrap();
    let s = state(&h, "a");
    assert_eq!(s.status, WorkflowExecutionStatus::Completed as i32);
    let record = s.standalone_activity.unwrap();
    assert_eq!(record.result, payloads(b"2"));
    assert!(record.closed_activity.unwrap().started);
    assert!(s.activities.is_empty());
    assert!(h.history(SHARD, &key("a")).is_empty(), "no history events");
}

#[test]
fn id_conflict_and_reuse_policies_are_temporals() {
    let h = Harness::new();
    start(&h, start_request("a", "req-1"), "run-1").unwrap();
    // A retried start answers its own record.
    assert_eq!(
        start(&h, start_request("a", "req-1"), "run-x")
            .unwrap()
            .run_id,
        "run-1"
    );
    // Running: FAIL (the default) refuses, USE_EXISTING answers the running one.
    let err = start(&h, start_request("a", "req-2"), "run-2").unwrap_err();
    assert_eq!(err.code, tonic::Code::AlreadyExists as i32);
    assert_eq!(err.message, "activity execution already started");
    let mut use_existing = start_request("a", "req-3");
    use_existing.id_conflict_policy = ActivityIdConflictPolicy::UseExisting as i32;
    let existing = start(&h, use_existing, "run-3").unwrap();
    assert_eq!(
        (existing.run_id.as_str(), existing.started),
        ("run-1", false)
    );
    // Closed: REJECT_DUPLICATE refuses, ALLOW_DUPLICATE starts a new run.
    let token = poll(&h, "a", 1);
    respond(
        &h,
        token,
        respond_activity::Outcome::Completed(Default::default()),
    )
    .unwrap();
    let mut reject = start_request("a", "req-4");
    reject.id_reuse_policy = ActivityIdReusePolicy::RejectDuplicate as i32;
    assert!(start(&h, reject, "run-4").is_err());
    let mut failed_only = start_request("a", "req-5");
    failed_only.id_reuse_policy = ActivityIdReusePolicy::AllowDuplicateFailedOnly as i32;
    assert!(start(&h, failed_only, "run-5").is_err());
    let again = start(&h, start_request("a", "req-6"), "run-6").unwrap();
    assert_eq!((again.run_id.as_str(), again.started), ("run-6", true));
}

#[test]
fn a_failed_attempt_is_retried_until_the_policy_ends_it() {
    let h = Harness::new();
    start(&h, start_request("a", "req-1"), "run-1").unwrap();
    let failure = || {
        respond_activity::Outcome::Failed(ws::RespondActivityTaskFailedRequest {
            failure: Some(Failure {
                message: "boom".into(),
                failure_info: Some(failure::FailureInfo::ApplicationFailureInfo(
                    ApplicationFailureInfo::default(),
                )),
                ..Default::default()
            }),
            ..Default::default()
        })
    };
    let token = poll(&h, "a", 1);
    respond(&h, token, failure()).unwrap();
    let s = state(&h, "a");
    assert_eq!(s.status, WorkflowExecutionStatus::Running as i32);
    let retrying = &s.activities[&super::ACTIVITY_KEY];
    assert_eq!(retrying.attempt, 2);
    assert!(retrying.next_attempt_schedule_time.is_some());
    // The retry backoff elapses (the timer's apply): the second attempt is dispatched, fails,
    // and is the last.
    retry_backoff_elapses(&h, "a", 2);
    let token = poll(&h, "a", 2);
    respond(&h, token, failure()).unwrap();
    let s = state(&h, "a");
    assert_eq!(s.status, WorkflowExecutionStatus::Failed as i32);
    assert_eq!(
        s.standalone_activity.unwrap().failure.unwrap().message,
        "boom"
    );
}

fn cancel(
    h: &Harness,
    id: &str,
    request_id: &str,
) -> Result<command_result::Result, cmd::CommandError> {
    h.apply(
        SHARD,
        Kind::CancelActivityExecution(cmd::CancelActivityExecution {
            namespace_id: NS.into(),
            request: Some(ws::RequestCancelActivityExecutionRequest {
                activity_id: id.into(),
                request_id: request_id.into(),
                reason: "enough".into(),
                ..Default::default()
            }),
        }),
    )
}

#[test]
fn cancellation_closes_an_idle_activity_and_asks_a_running_one() {
    let h = Harness::new();
    start(&h, start_request("idle", "r1"), "run-1").unwrap();
    cancel(&h, "idle", "c1").unwrap();
    let s = state(&h, "idle");
    assert_eq!(s.status, WorkflowExecutionStatus::Canceled as i32);
    assert!(activity_tasks(&h).is_empty(), "the task left the outbox");
    // A retried cancellation answers as the first; another is refused.
    cancel(&h, "idle", "c1").unwrap();
    let err = cancel(&h, "idle", "c2").unwrap_err();
    assert_eq!(err.code, tonic::Code::FailedPrecondition as i32);

    start(&h, start_request("busy", "r2"), "run-2").unwrap();
    let token = poll(&h, "busy", 1);
    // A worker cannot report a cancellation nobody asked for.
    let canceled =
        || respond_activity::Outcome::Canceled(ws::RespondActivityTaskCanceledRequest::default());
    let err = respond(&h, token.clone(), canceled()).unwrap_err();
    assert_eq!(
        err.message,
        "unable to mark activity as canceled without activity being request canceled first"
    );
    cancel(&h, "busy", "c3").unwrap();
    assert_eq!(
        state(&h, "busy").status,
        WorkflowExecutionStatus::Running as i32
    );
    respond(&h, token, canceled()).unwrap();
    assert_eq!(
        state(&h, "busy").status,
        WorkflowExecutionStatus::Canceled as i32
    );
}

#[test]
fn termination_closes_a_running_activity_once() {
    let h = Harness::new();
    start(&h, start_request("a", "r1"), "run-1").unwrap();
    let terminate = |request_id: &str| {
        h.apply(
            SHARD,
            Kind::TerminateActivityExecution(cmd::TerminateActivityExecution {
                namespace_id: NS.into(),
                request: Some(ws::TerminateActivityExecutionRequest {
                    activity_id: "a".into(),
                    request_id: request_id.into(),
                    reason: "stop".into(),
                    ..Default::default()
                }),
            }),
        )
    };
    terminate("t1").unwrap();
    let s = state(&h, "a");
    assert_eq!(s.status, WorkflowExecutionStatus::Terminated as i32);
    assert_eq!(
        s.standalone_activity.unwrap().failure.unwrap().message,
        "stop"
    );
    terminate("t1").unwrap();
    assert_eq!(
        terminate("t2").unwrap_err().message,
        "already terminated with request ID t1"
    );
}

#[test]
fn pause_withdraws_the_task_and_unpause_dispatches_it_with_temporals_refusals() {
    let h = Harness::new();
    start(&h, start_request("a", "r1"), "run-1").unwrap();
    let operation = |op: cmd::run_operation::Operation| {
        h.apply(
            SHARD,
            Kind::RunOperation(cmd::RunOperation {
                namespace_id: NS.into(),
                workflow_id: key("a"),
                run_id: String::new(),
                operation: Some(op),
                jitter_seed: 0,
                request_id: String::new(),
            }),
        )
    };
    let pause = |request_id: &str| {
        cmd::run_operation::Operation::PauseActivity(ws::PauseActivityRequest {
            activity: Some(ws::pause_activity_request::Activity::Id("a".into())),
            request_id: request_id.into(),
            ..Default::default()
        })
    };
    let unpause = || {
        cmd::run_operation::Operation::UnpauseActivity(ws::UnpauseActivityRequest {
            activity: Some(ws::unpause_activity_request::Activity::Id("a".into())),
            ..Default::default()
        })
    };
    assert_eq!(
        operation(unpause()).unwrap_err().message,
        "activity is in non-unpausable state Scheduled"
    );
    operation(pause("p1")).unwrap();
    assert!(
        activity_tasks(&h).is_empty(),
        "the waiting task is withdrawn"
    );
    operation(pause("p1")).unwrap();
    assert_eq!(
        operation(pause("p2")).unwrap_err().message,
        "activity is in non-pausable state Paused"
    );
    operation(unpause()).unwrap();
    assert_eq!(activity_tasks(&h).len(), 1, "dispatched again");
}

#[test]
fn a_reset_while_the_last_attempt_runs_waits_and_then_starts_over_at_attempt_1() {
    let h = Harness::new();
    start(&h, start_request("a", "r1"), "run-1").unwrap();
    let reset = |request_id: &str| {
        h.apply(
            SHARD,
            Kind::RunOperation(cmd::RunOperation {
                namespace_id: NS.into(),
                workflow_id: key("a"),
                run_id: String::new(),
                operation: Some(cmd::run_operation::Operation::ResetActivity(
                    ws::ResetActivityRequest {
                        activity: Some(ws::reset_activity_request::Activity::Id("a".into())),
                        reset_heartbeat: true,
                        ..Default::default()
                    },
                )),
                jitter_seed: 7,
                request_id: request_id.into(),
            }),
        )
    };
    // Attempt 2 of 2 runs (the policy allows no third).
    let token = poll(&h, "a", 1);
    respond(
        &h,
        token,
        respond_activity::Outcome::Failed(ws::RespondActivityTaskFailedRequest::default()),
    )
    .unwrap();
    retry_backoff_elapses(&h, "a", 2);
    let token = poll(&h, "a", 2);

    reset("x").unwrap();
    let running = &state(&h, "a").activities[&super::ACTIVITY_KEY];
    assert_eq!(running.attempt, 2, "the running attempt is left alone");
    assert!(running.reset_requested && running.reset_while_running);
    reset("x").unwrap();
    assert_eq!(
        reset("y").unwrap_err().message,
        "cannot reset an activity with a pending reset"
    );
    // Even a non-retryable failure of the last attempt starts over at attempt 1, dispatched.
    let non_retryable = respond_activity::Outcome::Failed(ws::RespondActivityTaskFailedRequest {
        failure: Some(Failure {
            message: "bad".into(),
            failure_info: Some(failure::FailureInfo::ApplicationFailureInfo(
                ApplicationFailureInfo {
                    non_retryable: true,
                    ..Default::default()
                },
            )),
            ..Default::default()
        }),
        ..Default::default()
    });
    respond(&h, token, non_retryable).unwrap();
    let s = state(&h, "a");
    assert_eq!(s.status, WorkflowExecutionStatus::Running as i32);
    let next = &s.activities[&super::ACTIVITY_KEY];
    assert_eq!(next.attempt, 1);
    assert!(!next.reset_requested && !next.reset_while_running);
    assert!(next.next_attempt_schedule_time.is_some());
    assert_eq!(
        next.next_attempt_schedule_time, next.last_attempt_complete_time,
        "attempt 1 is due at once (no backoff)"
    );
}
