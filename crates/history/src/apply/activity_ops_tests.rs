//! Activity operations applied command by command: what a pause withdraws, what an unpause or
//! reset dispatches (and when, with jitter, identically on every replica), and that refused
//! operations change nothing.

use chronicle_proto::chronicle::history::v1::{self as cmd, command_result, shard_command::Kind};
use chronicle_proto::chronicle::persistence::v1 as pb;
use chronicle_proto::temporal::api::activity::v1::ActivityOptions;
use chronicle_proto::temporal::api::command::v1::{
    ScheduleActivityTaskCommandAttributes, command::Attributes as CommandAttributes,
};
use chronicle_proto::temporal::api::common::v1::{ActivityType, RetryPolicy, WorkflowExecution};
use chronicle_proto::temporal::api::taskqueue::v1::TaskQueue;
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use chronicle_types::time::{duration_from_millis, millis};

use super::child_tests::{Harness, NS};

const SHARD: u32 = 0;
const WF: &str = "wf-ops";

fn with_activity() -> Harness {
    let h = Harness::new();
    h.start(SHARD, WF, "run-1");
    h.decide(
        SHARD,
        WF,
        vec![CommandAttributes::ScheduleActivityTaskCommandAttributes(
            ScheduleActivityTaskCommandAttributes {
                activity_id: "a".into(),
                activity_type: Some(ActivityType {
                    name: "Work".into(),
                }),
                task_queue: Some(TaskQueue {
                    name: "tq".into(),
                    ..Default::default()
                }),
                start_to_close_timeout: Some(duration_from_millis(30_000)),
                schedule_to_close_timeout: Some(duration_from_millis(600_000)),
                retry_policy: Some(RetryPolicy {
                    backoff_coefficient: 2.0,
                    ..Default::default()
                }),
                ..Default::default()
            },
        )],
    );
    h
}

fn activity(h: &Harness) -> pb::ActivityInfo {
    h.state(SHARD, WF)
        .activities
        .into_values()
        .next()
        .expect("the activity")
}

fn operation(op: cmd::run_operation::Operation, seed: u64) -> Kind {
    Kind::RunOperation(cmd::RunOperation {
        namespace_id: NS.into(),
        workflow_id: WF.into(),
        run_id: String::new(),
        operation: Some(op),
        jitter_seed: seed,
        request_id: String::new(),
    })
}

fn execution() -> Option<WorkflowExecution> {
    Some(WorkflowExecution {
        workflow_id: WF.into(),
        run_id: String::new(),
    })
}

fn pause(id: &str, request_id: &str) -> Kind {
    operation(
        cmd::run_operation::Operation::PauseActivity(ws::PauseActivityRequest {
            execution: execution(),
            activity: Some(ws::pause_activity_request::Activity::Id(id.into())),
            request_id: request_id.into(),
            identity: "op".into(),
            reason: "why".into(),
            ..Default::default()
        }),
        0,
    )
}

fn unpause(jitter_ms: i64, seed: u64) -> Kind {
    operation(
        cmd::run_operation::Operation::UnpauseActivity(ws::UnpauseActivityRequest {
            execution: execution(),
            activity: Some(ws::unpause_activity_request::Activity::UnpauseAll(true)),
            jitter: (jitter_ms > 0).then(|| duration_from_millis(jitter_ms)),
            ..Default::default()
        }),
        seed,
    )
}

fn record_started(h: &Harness, a: &pb::ActivityInfo, outbox_id: i64) -> command_result::Result {
    h.ok(
        SHARD,
        Kind::RecordActivityTaskStarted(cmd::RecordActivityTaskStarted {
            namespace_id: NS.into(),
            workflow_id: WF.into(),
            run_id: "run-1".into(),
            scheduled_event_id: a.scheduled_event_id,
            attempt: a.attempt,
            request_id: "poll".into(),
            identity: "worker".into(),
            outbox_id,
            ..Default::default()
        }),
    )
}

#[test]
fn pause_withdraws_the_waiting_attempt_and_unpause_dispatches_it() {
    let h = with_activity();
    let before = activity(&h);
    assert_ne!(before.outbox_task_id, 0, "dispatched when scheduled");
    h.ok(SHARD, pause("a", "p1"));
    let paused = activity(&h);
    assert!(paused.paused);
    assert_eq!(paused.outbox_task_id, 0, "withdrawn from matching");
    assert!(paused.schedule_timer_keys.is_empty() && paused.attempt_timer_keys.is_empty());
    // The copy matching may still hold is refused.
    let command_result::Result::ActivityTaskStarted(r) =
        record_started(&h, &paused, before.outbox_task_id)
    else {
        panic!("started result");
    };
    assert!(r.stale);
    // The same pause again is accepted; another is not.
    h.ok(SHARD, pause("a", "p1"));
    let err = h.apply(SHARD, pause("a", "p2")).unwrap_err();
    assert_eq!(err.code, tonic::Code::FailedPrecondition as i32);

    h.ok(SHARD, unpause(0, 7));
    let unpaused = activity(&h);
    assert!(!unpaused.paused && unpaused.pause_info.is_none());
    assert_ne!(unpaused.outbox_task_id, 0, "dispatched at once");
    assert_eq!(
        unpaused.schedule_timer_keys.len(),
        1,
        "schedule-to-close armed again"
    );
    let command_result::Result::ActivityTaskStarted(r) =
        record_started(&h, &unpaused, unpaused.outbox_task_id)
    else {
        panic!("started result");
    };
    assert!(!r.stale);
}

#[test]
fn jitter_is_the_same_on_every_replica() {
    let times: Vec<i64> = (0..2)
        .map(|_| {
            let h = with_activity();
            h.ok(SHARD, pause("a", "p"));
            h.ok(SHARD, unpause(60_000, 42));
            let a = activity(&h);
            assert_eq!(a.outbox_task_id, 0, "waits for its jittered time");
            millis(a.next_attempt_schedule_time.as_ref().expect("a retry time"))
        })
        .collect();
    assert_eq!(times[0], times[1]);
}

#[test]
fn refused_operations_change_nothing() {
    let h = with_activity();
    let before = h.state(SHARD, WF);
    let err = h.apply(SHARD, pause("missing", "p")).unwrap_err();
    assert_eq!(err.code, tonic::Code::NotFound as i32);
    let mut request = ws::UpdateActivityOptionsRequest {
        execution: execution(),
        activity: Some(ws::update_activity_options_request::Activity::Id(
            "a".into(),
        )),
        activity_options: Some(ActivityOptions {
            start_to_close_timeout: Some(duration_from_millis(0)),
            schedule_to_close_timeout: Some(duration_from_millis(0)),
            ..Default::default()
        }),
        update_mask: Some(Default::default()),
        ..Default::default()
    };
    if let Some(mask) = request.update_mask.as_mut() {
        mask.paths = vec![
            "start_to_close_timeout".into(),
            "schedule_to_close_timeout".into(),
        ];
    }
    let bad_options = operation(
        cmd::run_operation::Operation::UpdateActivityOptions(request),
        0,
    );
    let err = h.apply(SHARD, bad_options).unwrap_err();
    assert_eq!(err.code, tonic::Code::InvalidArgument as i32);
    assert!(
        err.message.starts_with("a valid StartToCloseTimeout"),
        "{}",
        err.message
    );
    assert_eq!(h.state(SHARD, WF), before);
}

#[test]
fn reset_of_a_waiting_activity_starts_over_at_attempt_one() {
    let h = with_activity();
    let a = activity(&h);
    record_started(&h, &a, a.outbox_task_id);
    h.ok(
        SHARD,
        Kind::RespondActivity(cmd::RespondActivity {
            token: Some(pb::TaskToken {
                namespace_id: NS.into(),
                workflow_id: WF.into(),
                run_id: "run-1".into(),
                scheduled_event_id: a.scheduled_event_id,
                attempt: 1,
                is_activity: true,
                ..Default::default()
            }),
            outcome: Some(cmd::respond_activity::Outcome::Failed(
                ws::RespondActivityTaskFailedRequest::default(),
            )),
        }),
    );
    let backing_off = activity(&h);
    assert_eq!(backing_off.attempt, 2);
    assert_eq!(backing_off.outbox_task_id, 0);
    h.ok(
        SHARD,
        operation(
            cmd::run_operation::Operation::ResetActivity(ws::ResetActivityRequest {
                execution: execution(),
                activity: Some(ws::reset_activity_request::Activity::MatchAll(true)),
                ..Default::default()
            }),
            0,
        ),
    );
    let reset = activity(&h);
    assert_eq!(reset.attempt, 1);
    assert_ne!(
        reset.outbox_task_id, 0,
        "dispatched now, not after the backoff"
    );
}

#[test]
fn pause_sets_temporal_pause_info_and_unpause_removes_it() {
    let h = with_activity();
    let attribute = |h: &Harness| {
        h.state(SHARD, WF)
            .search_attributes
            .unwrap_or_default()
            .indexed_fields
            .get(super::activity_ops::pause_attribute::PAUSE_INFO_ATTRIBUTE)
            .map(|p| String::from_utf8(p.data.clone()).unwrap())
    };
    assert_eq!(attribute(&h), None);
    h.ok(SHARD, pause("a", "p1"));
    assert_eq!(
        attribute(&h).as_deref(),
        Some("[\"property:activityType=Work\"]")
    );
    h.ok(SHARD, unpause(0, 1));
    assert_eq!(attribute(&h), None);
}
