//! Apply must be safe to replicate: a local storage fault is a storage error that stops the
//! group (never history, which other replicas would not share), and no value a client can put
//! in a log entry makes apply panic or wrap.

use chronicle_proto::chronicle::history::v1::{self as cmd, shard_command::Kind};
use chronicle_proto::temporal::api::command::v1::{
    Command, StartTimerCommandAttributes, command::Attributes as CommandAttributes,
};
use chronicle_proto::temporal::api::common::v1::WorkflowExecution;
use chronicle_proto::temporal::api::enums::v1::EventType;
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use chronicle_raft::Applier;
use chronicle_storage::{Cf, ShardBatch, ShardTables};
use prost::Message;

use super::HistoryApplier;
use super::child_tests::{Harness, complete_command};

fn completion(token: chronicle_proto::chronicle::persistence::v1::TaskToken) -> Kind {
    Kind::CompleteWorkflowTask(cmd::CompleteWorkflowTask {
        token: Some(token),
        request: Some(ws::RespondWorkflowTaskCompletedRequest {
            namespace: "default".into(),
            commands: vec![Command {
                attributes: Some(complete_command()),
                ..Default::default()
            }],
            identity: "test".into(),
            ..Default::default()
        }),
        new_run_id: "next-run".into(),
        eager_activities: false,
        max_history_events: 0,
        max_history_bytes: 0,
        nexus_endpoints: Vec::new(),
        nexus_request_ids: Vec::new(),
    })
}

fn entry(kinds: Vec<Kind>) -> Vec<u8> {
    let now = Some(chronicle_types::time::from_millis(5_000_000));
    let mut commands: Vec<cmd::ShardCommand> = kinds
        .into_iter()
        .map(|kind| cmd::ShardCommand {
            now,
            kind: Some(kind),
            batch: Vec::new(),
            retention: None,
        })
        .collect();
    if commands.len() == 1 {
        return commands.remove(0).encode_to_vec();
    }
    cmd::ShardCommand {
        batch: commands,
        ..Default::default()
    }
    .encode_to_vec()
}

#[test]
fn a_storage_fault_while_completing_a_task_is_a_storage_error_not_history() {
    let h = Harness::new();
    h.start(0, "wf", "run-1");
    let token = h.start_task(0, "wf");
    let before = h.types(0, "wf");
    let applier = HistoryApplier {
        notifier: Default::default(),
        namespace_names: None,
    };

    // Closing the run reads its current-run record; that read fails on this node's disk.
    chronicle_storage::fault::fail_reads(h.dir.path(), 0, Cf::Current);
    let mut batch = ShardBatch::new(ShardTables::new(h.db.clone(), 0));
    let applied = applier.apply(&mut batch, 10, &entry(vec![completion(token.clone())]));
    assert!(
        applied.is_err(),
        "a read failure must be a storage error (it stops the group), not a command result"
    );
    // The same in a group-committed entry: the whole entry fails, the command after it too.
    let mut batch = ShardBatch::new(ShardTables::new(h.db.clone(), 0));
    let signal = Kind::SignalWorkflow(cmd::SignalWorkflow {
        namespace_id: super::child_tests::NS.into(),
        request: Some(ws::SignalWorkflowExecutionRequest {
            workflow_execution: Some(WorkflowExecution {
                workflow_id: "wf".into(),
                run_id: "run-1".into(),
            }),
            signal_name: "s".into(),
            request_id: "sig-1".into(),
            ..Default::default()
        }),
        ..Default::default()
    });
    assert!(
        applier
            .apply(
                &mut batch,
                10,
                &entry(vec![completion(token.clone()), signal])
            )
            .is_err()
    );
    drop(batch);
    chronicle_storage::fault::clear_faults(h.dir.path());
    assert_eq!(h.types(0, "wf"), before, "nothing was recorded");
    assert!(
        !h.types(0, "wf").contains(&EventType::WorkflowTaskFailed),
        "a storage fault is not a failed workflow task"
    );

    // Re-applied after the restart, the same entry completes the run.
    let mut batch = ShardBatch::new(ShardTables::new(h.db.clone(), 0));
    let result = applier
        .apply(&mut batch, 10, &entry(vec![completion(token)]))
        .expect("applies once the disk works");
    batch.commit().expect("commit");
    let result = cmd::CommandResult::decode(result.as_slice()).expect("result");
    assert!(
        matches!(
            result.result,
            Some(cmd::command_result::Result::CompleteWorkflowTask(_))
        ),
        "{result:?}"
    );
    assert_eq!(
        h.types(0, "wf").last(),
        Some(&EventType::WorkflowExecutionCompleted)
    );
}

#[test]
fn a_storage_fault_while_starting_is_a_storage_error() {
    let h = Harness::new();
    let applier = HistoryApplier {
        notifier: Default::default(),
        namespace_names: None,
    };
    chronicle_storage::fault::fail_reads(h.dir.path(), 0, Cf::Current);
    let start = Kind::StartWorkflow(cmd::StartWorkflow {
        scheduled_by: None,
        eager_workflow_start: false,
        namespace_id: super::child_tests::NS.into(),
        request: Some(ws::StartWorkflowExecutionRequest {
            namespace: "default".into(),
            workflow_id: "wf".into(),
            workflow_type: Some(Default::default()),
            request_id: "r".into(),
            ..Default::default()
        }),
        run_id: "run-1".into(),
    });
    let mut batch = ShardBatch::new(ShardTables::new(h.db.clone(), 0));
    assert!(applier.apply(&mut batch, 1, &entry(vec![start])).is_err());
}

/// Timers with the largest durations a log entry can carry apply without overflowing: the
/// deadline saturates instead of wrapping (release) or panicking (debug, on every replay).
#[test]
fn extreme_timer_durations_apply_without_overflow() {
    let h = Harness::new();
    h.start(0, "wf", "run-1");
    let token = h.start_task(0, "wf");
    let timer = |id: &str, seconds: i64, nanos: i32| {
        CommandAttributes::StartTimerCommandAttributes(StartTimerCommandAttributes {
            timer_id: id.into(),
            start_to_fire_timeout: Some(chronicle_proto::wkt::Duration { seconds, nanos }),
        })
    };
    h.complete_task(
        0,
        token,
        vec![
            timer("max", i64::MAX, 999_999_999),
            timer("huge", i64::MAX / 1000 + 1, 0),
            timer("nanos", 1, i32::MAX),
        ],
    )
    .expect("completion accepted");
    let state = h.state(0, "wf");
    let expiry = |id: &str| {
        chronicle_types::time::millis(state.timers[id].expiry_time.as_ref().expect("expiry"))
    };
    assert_eq!(expiry("max"), i64::MAX);
    assert_eq!(expiry("huge"), i64::MAX);
    assert!(expiry("nanos") > 1_000_000 + 3000);
}

/// Backoffs from any retry policy a log entry can carry, at any attempt: no panic, no negative
/// or wrapped delay.
#[test]
fn retry_backoff_is_bounded_for_any_policy_and_attempt() {
    use chronicle_proto::temporal::api::common::v1::RetryPolicy;
    let d = |seconds| Some(chronicle_proto::wkt::Duration { seconds, nanos: 0 });
    for (initial, maximum, coefficient) in [
        (d(i64::MAX), None, 1e300),
        (d(i64::MAX), d(i64::MAX), f64::INFINITY),
        (d(1), None, f64::NAN),
        (d(i64::MIN), d(i64::MIN), f64::NEG_INFINITY),
        (d(1), d(10), 2.0),
    ] {
        let policy = RetryPolicy {
            initial_interval: initial,
            maximum_interval: maximum,
            backoff_coefficient: coefficient,
            ..Default::default()
        };
        for attempt in [i32::MIN, -1, 0, 1, 2, 64, 10_000, i32::MAX] {
            let delay = super::next_retry_delay_ms(&policy, attempt);
            assert!(
                (0..=1i64 << 62).contains(&delay),
                "{policy:?} attempt {attempt}: {delay}"
            );
        }
    }
    let policy = RetryPolicy {
        initial_interval: d(1),
        maximum_interval: d(10),
        backoff_coefficient: 2.0,
        ..Default::default()
    };
    assert_eq!(super::next_retry_delay_ms(&policy, 1), 1000);
    assert_eq!(super::next_retry_delay_ms(&policy, 3), 4000);
    assert_eq!(super::next_retry_delay_ms(&policy, 100), 10_000);
}

/// The backoff is computed with plain multiplications (deterministic on every replica), and
/// matches the exact powers where they are representable.
#[test]
fn retry_backoff_uses_exact_powers() {
    use chronicle_proto::temporal::api::common::v1::RetryPolicy;
    let policy = |coefficient| RetryPolicy {
        initial_interval: Some(chronicle_types::time::duration_from_millis(3)),
        backoff_coefficient: coefficient,
        ..Default::default()
    };
    assert_eq!(super::next_retry_delay_ms(&policy(2.0), 1), 3);
    assert_eq!(super::next_retry_delay_ms(&policy(2.0), 11), 3 * 1024);
    assert_eq!(super::next_retry_delay_ms(&policy(3.0), 6), 3 * 243);
    assert_eq!(super::next_retry_delay_ms(&policy(1.5), 3), 6);
    // 1.1^20 = 6.7275 (to 4 places): 3 ms × that, truncated.
    assert_eq!(super::next_retry_delay_ms(&policy(1.1), 21), 20);
}
