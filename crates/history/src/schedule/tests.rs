//! Schedules applied directly with explicit command times: each schedule time starts once
//! (repeated fires and repeated outcomes change nothing), overlap, pause, trigger, catch-up
//! window, and two databases that apply the same commands end with the same state.

use chronicle_proto::chronicle::history::v1::{self as cmd, schedule_command::Op};
use chronicle_proto::chronicle::persistence::v1::{self as pb, outbox_task::Kind as OutboxKind};
use chronicle_proto::temporal::api::common::v1::{Payloads, WorkflowType};
use chronicle_proto::temporal::api::enums::v1::{ScheduleOverlapPolicy, WorkflowExecutionStatus};
use chronicle_proto::temporal::api::schedule::v1 as s;
use chronicle_proto::temporal::api::taskqueue::v1::TaskQueue;
use chronicle_proto::temporal::api::workflow::v1::NewWorkflowExecutionInfo;
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use chronicle_storage::{Db, DbOptions, ShardBatch, ShardTables};
use chronicle_types::time::{duration_from_millis, from_millis};

use super::apply;

const NS: &str = "ns-id";
const ID: &str = "daily-report";
/// 2024-01-01T00:00:00Z.
const T0: i64 = 1_704_067_200_000;

struct Harness {
    db: Db,
    _dir: tempfile::TempDir,
}

impl Harness {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Db::open(dir.path(), DbOptions::default()).expect("db");
        Self { db, _dir: dir }
    }

    fn with_batch<T>(&self, f: impl FnOnce(&mut ShardBatch) -> T) -> T {
        let mut batch = ShardBatch::new(ShardTables::new(self.db.clone(), 0));
        let out = f(&mut batch);
        batch.commit().expect("commit");
        out
    }

    fn command(&self, now: i64, op: Op) {
        self.with_batch(|b| {
            let r = apply::command(
                b,
                from_millis(now),
                cmd::ScheduleCommand {
                    namespace_id: NS.into(),
                    op: Some(op),
                },
            );
            assert!(r.is_ok(), "schedule command refused");
        });
    }

    fn fire(&self, now: i64) {
        let state = self.state();
        let task = pb::TimerTask {
            kind: pb::timer_task::Kind::Schedule as i32,
            namespace_id: NS.into(),
            workflow_id: ID.into(),
            ..Default::default()
        };
        self.with_batch(|b| {
            let key = state.timer_key.clone();
            b.delete_timer(&key);
            assert!(apply::fire(b, from_millis(now), &key, &task).is_ok());
        });
    }

    fn outcome(&self, now: i64, request_id: &str, outbox_id: u64, run_id: &str) {
        self.with_batch(|b| {
            let r = apply::record_start_outcome(
                b,
                from_millis(now),
                cmd::RecordScheduleStartOutcome {
                    namespace_id: NS.into(),
                    schedule_id: ID.into(),
                    request_id: request_id.into(),
                    outbox_id: outbox_id as i64,
                    run_id: run_id.into(),
                    ..Default::default()
                },
            );
            assert!(r.is_ok());
        });
    }

    fn closed(&self, now: i64, workflow_id: &str) {
        self.with_batch(|b| {
            let r = apply::record_workflow_closed(
                b,
                from_millis(now),
                cmd::RecordScheduleWorkflowClosed {
                    namespace_id: NS.into(),
                    schedule_id: ID.into(),
                    workflow_id: workflow_id.into(),
                    status: WorkflowExecutionStatus::Completed as i32,
                    result: Some(Payloads::default()),
                    ..Default::default()
                },
            );
            assert!(r.is_ok());
        });
    }

    fn state(&self) -> pb::ScheduleState {
        ShardTables::new(self.db.clone(), 0)
            .schedule(NS, ID)
            .unwrap()
            .expect("schedule")
    }

    fn starts(&self) -> Vec<(u64, pb::OutboxTask)> {
        ShardTables::new(self.db.clone(), 0)
            .outbox_from(0, 10_000)
            .unwrap()
            .into_iter()
            .map(|(k, t)| (u64::from_be_bytes(k[k.len() - 8..].try_into().unwrap()), t))
            .filter(|(_, t)| t.kind == OutboxKind::ScheduleStart as i32)
            .collect()
    }
}

fn create(every_ms: i64, overlap: ScheduleOverlapPolicy, catchup_ms: Option<i64>) -> Op {
    Op::Create(ws::CreateScheduleRequest {
        namespace: "default".into(),
        schedule_id: ID.into(),
        request_id: "create-1".into(),
        schedule: Some(s::Schedule {
            spec: Some(s::ScheduleSpec {
                interval: vec![s::IntervalSpec {
                    interval: Some(duration_from_millis(every_ms)),
                    phase: None,
                }],
                ..Default::default()
            }),
            action: Some(s::ScheduleAction {
                action: Some(s::schedule_action::Action::StartWorkflow(
                    NewWorkflowExecutionInfo {
                        workflow_id: "report".into(),
                        workflow_type: Some(WorkflowType {
                            name: "DailyReport".into(),
                        }),
                        task_queue: Some(TaskQueue {
                            name: "reports".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                )),
            }),
            policies: Some(s::SchedulePolicies {
                overlap_policy: overlap as i32,
                catchup_window: catchup_ms.map(duration_from_millis),
                ..Default::default()
            }),
            state: None,
        }),
        ..Default::default()
    })
}

fn patch(request_id: &str, patch: s::SchedulePatch) -> Op {
    Op::Patch(ws::PatchScheduleRequest {
        schedule_id: ID.into(),
        request_id: request_id.into(),
        patch: Some(patch),
        ..Default::default()
    })
}

#[test]
fn each_time_starts_once_and_its_outcome_counts_once() {
    let h = Harness::new();
    h.command(T0 + 500, create(10_000, ScheduleOverlapPolicy::Skip, None));
    let state = h.state();
    assert_eq!(
        chronicle_storage::keys::timer_fire_time(&state.timer_key),
        T0 + 10_000
    );
    assert!(h.starts().is_empty());
    // Retried create with the same request ID: same schedule; another ID: AlreadyExists.
    h.command(T0 + 600, create(10_000, ScheduleOverlapPolicy::Skip, None));

    h.fire(T0 + 10_000);
    h.fire(T0 + 10_020);
    let starts = h.starts();
    assert_eq!(starts.len(), 1, "one start per schedule time");
    let state = h.state();
    assert_eq!(state.pending.len(), 1);
    let pending = &state.pending[0];
    assert_eq!(pending.workflow_id, "report-2024-01-01T00:00:10Z");
    assert_eq!(pending.request_id, format!("sched-{ID}-{}", T0 + 10_000));
    assert_eq!(
        chronicle_storage::keys::timer_fire_time(&state.timer_key),
        T0 + 20_000
    );

    let (outbox_id, _) = starts[0];
    h.outcome(T0 + 10_050, &pending.request_id, outbox_id, "run-1");
    h.outcome(T0 + 10_060, &pending.request_id, outbox_id, "run-1");
    let state = h.state();
    let info = state.info.clone().unwrap();
    assert_eq!(info.action_count, 1);
    assert_eq!(info.running_workflows.len(), 1);
    assert_eq!(info.recent_actions.len(), 1);
    assert!(state.pending.is_empty());
    assert!(h.starts().is_empty());

    // Still running at the next time: SKIP.
    h.fire(T0 + 20_000);
    let state = h.state();
    assert_eq!(state.info.as_ref().unwrap().overlap_skipped, 1);
    assert!(state.pending.is_empty());

    h.closed(T0 + 21_000, "report-2024-01-01T00:00:10Z");
    let state = h.state();
    assert!(state.info.as_ref().unwrap().running_workflows.is_empty());
    assert!(state.last_completion_result.is_some());
    assert_eq!(
        state.info.as_ref().unwrap().recent_actions[0].start_workflow_status,
        WorkflowExecutionStatus::Completed as i32
    );
}

#[test]
fn pause_drops_scheduled_times_and_trigger_still_starts() {
    let h = Harness::new();
    h.command(T0, create(10_000, ScheduleOverlapPolicy::AllowAll, None));
    h.command(
        T0 + 1,
        patch(
            "p1",
            s::SchedulePatch {
                pause: "maintenance".into(),
                ..Default::default()
            },
        ),
    );
    let state = h.state();
    let st = state.schedule.as_ref().unwrap().state.as_ref().unwrap();
    assert!(st.paused);
    assert_eq!(st.notes, "maintenance");
    assert_eq!(state.conflict_token, 2);
    h.fire(T0 + 10_000);
    assert!(h.starts().is_empty());
    let trigger = s::SchedulePatch {
        trigger_immediately: Some(s::TriggerImmediatelyRequest::default()),
        ..Default::default()
    };
    h.command(T0 + 12_000, patch("p2", trigger.clone()));
    // The same patch resent: no second trigger.
    h.command(T0 + 12_500, patch("p2", trigger));
    assert_eq!(h.starts().len(), 1);
    assert!(h.state().pending[0].manual);
}

#[test]
fn times_older_than_the_catchup_window_are_missed() {
    let h = Harness::new();
    h.command(T0, create(1_000, ScheduleOverlapPolicy::Skip, Some(10_000)));
    // An hour without a wake-up (the leader was down).
    h.fire(T0 + 3_600_000);
    let state = h.state();
    let info = state.info.as_ref().unwrap();
    assert!(
        info.missed_catchup_window >= 3_580,
        "missed {}",
        info.missed_catchup_window
    );
    assert_eq!(
        state.pending.len(),
        1,
        "one start, the rest overlap-skipped"
    );
    assert_eq!(info.overlap_skipped, 10);
}

#[test]
fn replicas_applying_the_same_commands_agree() {
    let run = || {
        let h = Harness::new();
        h.command(T0, create(5_000, ScheduleOverlapPolicy::BufferOne, None));
        h.fire(T0 + 5_000);
        h.fire(T0 + 10_000);
        h.fire(T0 + 15_000);
        let state = h.state();
        let digest = chronicle_storage::digest::shard_digest(&h.db, 0).unwrap();
        (state, digest)
    };
    let (a, da) = run();
    let (b, db) = run();
    assert_eq!(a, b);
    assert_eq!(a.buffered.len(), 1, "BUFFER_ONE keeps one start waiting");
    assert!(da.differing_families(&db).is_empty());
}

#[test]
fn remaining_actions_limit_scheduled_starts_and_failure_pauses() {
    let h = Harness::new();
    let Op::Create(mut create) = create(10_000, ScheduleOverlapPolicy::AllowAll, None) else {
        unreachable!()
    };
    let schedule = create.schedule.as_mut().unwrap();
    schedule.state = Some(s::ScheduleState {
        limited_actions: true,
        remaining_actions: 2,
        ..Default::default()
    });
    schedule.policies.as_mut().unwrap().pause_on_failure = true;
    schedule.policies.as_mut().unwrap().overlap_policy = ScheduleOverlapPolicy::Skip as i32;
    h.command(T0, Op::Create(create));
    assert_eq!(super::apply::future_action_times(&h.state(), 10).len(), 2);
    h.fire(T0 + 10_000);
    let state = h.state();
    let pending = state.pending[0].clone();
    let (outbox_id, _) = h.starts()[0];
    h.outcome(T0 + 10_100, &pending.request_id, outbox_id, "run-1");
    // The started workflow fails: the schedule pauses with Temporal's note.
    h.with_batch(|b| {
        let r = apply::record_workflow_closed(
            b,
            from_millis(T0 + 11_000),
            cmd::RecordScheduleWorkflowClosed {
                namespace_id: NS.into(),
                schedule_id: ID.into(),
                workflow_id: pending.workflow_id.clone(),
                status: WorkflowExecutionStatus::Failed as i32,
                failure: Some(chronicle_proto::temporal::api::failure::v1::Failure {
                    message: "boom".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        assert!(r.is_ok());
    });
    let state = h.state();
    let st = state.schedule.as_ref().unwrap().state.as_ref().unwrap();
    assert!(st.paused);
    assert_eq!(
        st.notes,
        "paused due to workflow failure: report-2024-01-01T00:00:10Z: boom"
    );
    assert_eq!(st.remaining_actions, 1);
    assert!(state.continued_failure.is_some());
    // Unpaused: one more scheduled start, then none.
    h.command(
        T0 + 12_000,
        patch(
            "u1",
            s::SchedulePatch {
                unpause: "go".into(),
                ..Default::default()
            },
        ),
    );
    h.fire(T0 + 20_000);
    h.fire(T0 + 30_000);
    let state = h.state();
    assert_eq!(state.pending.len(), 1);
    let st = state.schedule.as_ref().unwrap().state.as_ref().unwrap();
    assert_eq!(st.remaining_actions, 0);
    assert!(super::apply::future_action_times(&state, 10).is_empty());
}

#[test]
fn a_large_backfill_is_taken_a_part_at_a_time_and_whole() {
    let h = Harness::new();
    h.command(T0, create(1_000, ScheduleOverlapPolicy::AllowAll, None));
    // 1,201 past times (inclusive start and end).
    h.command(
        T0 + 1,
        patch(
            "b1",
            s::SchedulePatch {
                backfill_request: vec![s::BackfillRequest {
                    start_time: Some(from_millis(T0 - 2_000_000)),
                    end_time: Some(from_millis(T0 - 800_000)),
                    overlap_policy: ScheduleOverlapPolicy::AllowAll as i32,
                }],
                ..Default::default()
            },
        ),
    );
    let state = h.state();
    assert_eq!(state.pending.len(), 500);
    assert_eq!(state.ongoing_backfills.len(), 1);
    assert_eq!(
        chronicle_storage::keys::timer_fire_time(&state.timer_key),
        T0 + 101
    );
    h.fire(T0 + 101);
    let state = h.state();
    assert_eq!(state.pending.len(), 1000);
    assert_eq!(
        state.ongoing_backfills.len(),
        1,
        "{:?}",
        state.ongoing_backfills
    );
    assert_eq!(
        chronicle_storage::keys::timer_fire_time(&state.timer_key),
        T0 + 201
    );
    h.fire(T0 + 202);
    let state = h.state();
    assert_eq!(
        state.pending.len(),
        1201,
        "{:?} {:?} {}",
        state.ongoing_backfills,
        state.info,
        state.buffered.len()
    );
    assert!(state.ongoing_backfills.is_empty());
    assert_eq!(h.starts().len(), 1201);
    let first = &state.pending[0];
    assert_eq!(first.workflow_id, "report-2023-12-31T23:26:40Z");
    assert!(first.manual);
    // Back to the schedule's own times.
    assert_eq!(
        chronicle_storage::keys::timer_fire_time(&state.timer_key),
        T0 + 1_000
    );
}

#[test]
fn buffer_all_starts_every_buffered_time_one_after_another() {
    let h = Harness::new();
    h.command(T0, create(10_000, ScheduleOverlapPolicy::BufferAll, None));
    h.fire(T0 + 10_000);
    let state = h.state();
    let (outbox_id, _) = h.starts()[0];
    h.outcome(
        T0 + 10_100,
        &state.pending[0].request_id,
        outbox_id,
        "run-1",
    );
    h.fire(T0 + 20_000);
    h.fire(T0 + 30_000);
    let state = h.state();
    assert_eq!(state.buffered.len(), 2);
    assert!(state.pending.is_empty());
    h.closed(T0 + 31_000, "report-2024-01-01T00:00:10Z");
    let state = h.state();
    assert_eq!(state.buffered.len(), 1);
    assert_eq!(state.pending.len(), 1);
    assert_eq!(state.pending[0].workflow_id, "report-2024-01-01T00:00:20Z");
    assert_eq!(state.info.as_ref().unwrap().overlap_skipped, 0);
}
