//! Resets applied directly on a shard's tables: the new run's history and rebuilt state, the
//! replaced run, reapplied signals, retries, closed runs and refusals.

// The deprecated reapply type is still part of the request Temporal's clients send.
#![allow(deprecated)]

use chronicle_proto::chronicle::history::v1::{self as cmd, shard_command::Kind};
use chronicle_proto::chronicle::persistence::v1 as pb;
use chronicle_proto::temporal::api::command::v1::{
    ScheduleActivityTaskCommandAttributes, StartTimerCommandAttributes,
    command::Attributes as CommandAttributes,
};
use chronicle_proto::temporal::api::common::v1::{ActivityType, WorkflowExecution};
use chronicle_proto::temporal::api::enums::v1::{
    EventType, ResetReapplyExcludeType, ResetReapplyType, WorkflowExecutionStatus,
    WorkflowTaskFailedCause,
};
use chronicle_proto::temporal::api::history::v1::HistoryEvent;
use chronicle_proto::temporal::api::history::v1::history_event::Attributes;
use chronicle_proto::temporal::api::workflowservice::v1 as ws;

use super::super::child_tests::{self, Harness, NS, complete_command};

const SHARD: u32 = 0;
const WF: &str = "wf";

fn activity(id: &str) -> CommandAttributes {
    CommandAttributes::ScheduleActivityTaskCommandAttributes(
        ScheduleActivityTaskCommandAttributes {
            activity_id: id.into(),
            activity_type: Some(ActivityType { name: "act".into() }),
            start_to_close_timeout: Some(chronicle_types::time::duration_from_millis(60_000)),
            ..Default::default()
        },
    )
}

fn timer(id: &str) -> CommandAttributes {
    CommandAttributes::StartTimerCommandAttributes(StartTimerCommandAttributes {
        timer_id: id.into(),
        start_to_fire_timeout: Some(chronicle_types::time::duration_from_millis(3_600_000)),
    })
}

fn signal(h: &Harness, name: &str) {
    signal_workflow(h, SHARD, WF, name);
}

fn signal_workflow(h: &Harness, shard: u32, workflow_id: &str, name: &str) {
    h.ok(
        shard,
        Kind::SignalWorkflow(cmd::SignalWorkflow {
            namespace_id: NS.into(),
            request: Some(ws::SignalWorkflowExecutionRequest {
                namespace: "default".into(),
                workflow_execution: Some(WorkflowExecution {
                    workflow_id: workflow_id.into(),
                    run_id: String::new(),
                }),
                signal_name: name.into(),
                ..Default::default()
            }),
            external: None,
        }),
    );
}

/// A reset of the test's workflow.
fn reset_request(
    run_id: &str,
    event_id: i64,
    request_id: &str,
) -> ws::ResetWorkflowExecutionRequest {
    child_tests::reset_request(WF, run_id, event_id, request_id)
}

fn reset(
    h: &Harness,
    request: ws::ResetWorkflowExecutionRequest,
    new_run_id: &str,
) -> Result<String, cmd::CommandError> {
    h.reset(SHARD, request, new_run_id)
}

fn run_history(h: &Harness, run_id: &str) -> Vec<HistoryEvent> {
    h.tables(SHARD).history(NS, WF, run_id, 1, 10_000).unwrap()
}

fn run_state(h: &Harness, run_id: &str) -> pb::WorkflowExecutionState {
    h.tables(SHARD).execution(NS, WF, run_id).unwrap().unwrap()
}

fn types(events: &[HistoryEvent]) -> Vec<EventType> {
    events
        .iter()
        .map(|e| EventType::try_from(e.event_type).unwrap())
        .collect()
}

fn signal_names(events: &[HistoryEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e.attributes.as_ref() {
            Some(Attributes::WorkflowExecutionSignaledEventAttributes(a)) => {
                Some(a.signal_name.clone())
            }
            _ => None,
        })
        .collect()
}

/// A run whose first task scheduled an activity and a timer (events 1-7), then got signal
/// "late" and ran a second task (events 8-11).
fn busy_run(h: &Harness) -> String {
    h.start(SHARD, WF, "base-run");
    h.decide(SHARD, WF, vec![activity("a1"), timer("t1")]);
    signal(h, "late");
    let token = h.start_task(SHARD, WF);
    h.complete_task(SHARD, token, vec![]).unwrap();
    "base-run".to_string()
}

#[test]
fn reset_to_a_completed_task_rebuilds_the_run_and_reapplies_later_signals() {
    let h = Harness::new();
    let base = busy_run(&h);
    use EventType as E;
    assert_eq!(
        types(&run_history(&h, &base)),
        [
            E::WorkflowExecutionStarted,
            E::WorkflowTaskScheduled,
            E::WorkflowTaskStarted,
            E::WorkflowTaskCompleted,
            E::ActivityTaskScheduled,
            E::TimerStarted,
            E::WorkflowExecutionSignaled,
            E::WorkflowTaskScheduled,
            E::WorkflowTaskStarted,
            E::WorkflowTaskCompleted,
        ]
    );
    let new_run = reset(&h, reset_request(&base, 4, "req-1"), "new-run").unwrap();
    assert_eq!(new_run, "new-run");

    let history = run_history(&h, &new_run);
    assert_eq!(
        types(&history),
        [
            E::WorkflowExecutionStarted,
            E::WorkflowTaskScheduled,
            E::WorkflowTaskStarted,
            E::WorkflowTaskFailed,
            E::WorkflowExecutionSignaled,
            E::WorkflowTaskScheduled,
        ]
    );
    let base_history = run_history(&h, &base);
    assert_eq!(
        history[..3],
        base_history[..3],
        "the prefix is the base run's"
    );
    let Some(Attributes::WorkflowTaskFailedEventAttributes(failed)) = &history[3].attributes else {
        panic!("failed event");
    };
    assert_eq!(failed.cause, WorkflowTaskFailedCause::ResetWorkflow as i32);
    assert_eq!(failed.base_run_id, base);
    assert_eq!(failed.new_run_id, new_run);
    assert_eq!(failed.identity, "history-service");
    assert_eq!(failed.failure.as_ref().unwrap().message, "bad deploy");
    assert_eq!(signal_names(&history), ["late"]);

    // The activity and timer of the cut-off task are gone; the new run is current and running.
    let state = run_state(&h, &new_run);
    assert!(state.activities.is_empty() && state.timers.is_empty());
    assert_eq!(state.next_event_id, 7);
    assert_eq!(state.status, WorkflowExecutionStatus::Running as i32);
    assert_eq!(state.workflow_task.as_ref().unwrap().scheduled_event_id, 6);
    assert_eq!(h.state(SHARD, WF).run_id, new_run);

    // The base run was terminated by the resetter with the reset's reason.
    let old = run_state(&h, &base);
    assert_eq!(old.status, WorkflowExecutionStatus::Terminated as i32);
    assert_eq!(old.reset_run_id, new_run);
    let base_history = run_history(&h, &base);
    let Some(Attributes::WorkflowExecutionTerminatedEventAttributes(terminated)) =
        &base_history.last().unwrap().attributes
    else {
        panic!("terminated");
    };
    assert_eq!(terminated.reason, "bad deploy");
    assert_eq!(terminated.identity, "history-resetter");

    // A retry of the same request answers the same run and changes nothing.
    let again = reset(&h, reset_request(&base, 4, "req-1"), "other-run").unwrap();
    assert_eq!(again, new_run);
    assert!(
        h.tables(SHARD)
            .execution(NS, WF, "other-run")
            .unwrap()
            .is_none()
    );
}

#[test]
fn pending_activities_and_timers_of_the_prefix_are_rebuilt_with_their_tasks() {
    let h = Harness::new();
    let base = busy_run(&h);
    // Reset to the second task's completion: activity a1 and timer t1 are pending.
    let new_run = reset(&h, reset_request(&base, 10, "req-2"), "new-run").unwrap();
    let state = run_state(&h, &new_run);
    let activity = state.activities.get(&5).expect("activity a1 pending");
    assert_eq!(activity.activity_id, "a1");
    assert!(!activity.started);
    let outbox = h.tables(SHARD).outbox_from(0, 1000).unwrap();
    assert!(
        outbox.iter().any(|(_, t)| t.run_id == new_run
            && t.kind == pb::outbox_task::Kind::ActivityTask as i32
            && t.scheduled_event_id == 5),
        "the activity is dispatched again for the new run"
    );
    let timer = state.timers.get("t1").expect("timer t1 pending");
    assert_eq!(timer.started_event_id, 6);
    let timers = h.tables(SHARD).timers_between(0, i64::MAX, 1000).unwrap();
    assert!(timers.iter().any(|(_, t)| t.run_id == new_run
        && t.kind == pb::timer_task::Kind::UserTimer as i32
        && t.timer_id == "t1"));
    // The signal came before the reset point: it is in the prefix, not reapplied.
    assert_eq!(signal_names(&run_history(&h, &new_run)), ["late"]);
}

#[test]
fn reset_to_a_started_event_starts_and_fails_the_task() {
    let h = Harness::new();
    h.start(SHARD, WF, "base-run");
    h.decide(SHARD, WF, vec![complete_command()]);
    assert_eq!(
        run_state(&h, "base-run").status,
        WorkflowExecutionStatus::Completed as i32
    );
    // A completed run can be reset; event 3 is the first task's Started event.
    let new_run = reset(&h, reset_request("", 3, "req-3"), "new-run").unwrap();
    let history = run_history(&h, &new_run);
    use EventType as E;
    assert_eq!(
        types(&history),
        [
            E::WorkflowExecutionStarted,
            E::WorkflowTaskScheduled,
            E::WorkflowTaskStarted,
            E::WorkflowTaskFailed,
            E::WorkflowTaskScheduled,
        ]
    );
    let Some(Attributes::WorkflowTaskStartedEventAttributes(started)) = &history[2].attributes
    else {
        panic!("started");
    };
    assert_eq!(started.identity, "history-service");
    // The completed run stays completed; the new run is current.
    assert_eq!(
        run_state(&h, "base-run").status,
        WorkflowExecutionStatus::Completed as i32
    );
    assert_eq!(h.state(SHARD, WF).run_id, new_run);
}

#[test]
fn reapply_none_or_excluding_signals_leaves_them_behind() {
    for (reapply_type, exclude) in [
        (ResetReapplyType::None as i32, vec![]),
        (
            ResetReapplyType::AllEligible as i32,
            vec![ResetReapplyExcludeType::Signal as i32],
        ),
    ] {
        let h = Harness::new();
        let base = busy_run(&h);
        let mut request = reset_request(&base, 4, "req-4");
        request.reset_reapply_type = reapply_type;
        request.reset_reapply_exclude_types = exclude;
        let new_run = reset(&h, request, "new-run").unwrap();
        assert!(signal_names(&run_history(&h, &new_run)).is_empty());
    }
}

#[test]
fn signals_buffered_in_the_terminated_run_are_reapplied() {
    let h = Harness::new();
    h.start(SHARD, WF, "base-run");
    h.decide(SHARD, WF, vec![]);
    signal(&h, "first");
    // A task is running: the next signal waits in the buffer until the termination flushes it.
    let _running = h.start_task(SHARD, WF);
    signal(&h, "buffered");
    let new_run = reset(&h, reset_request("", 4, "req-5"), "new-run").unwrap();
    assert_eq!(
        signal_names(&run_history(&h, &new_run)),
        ["first", "buffered"]
    );
}

#[test]
fn bad_event_ids_and_missing_runs_are_refused_and_change_nothing() {
    let h = Harness::new();
    let base = busy_run(&h);
    let code = |r: Result<String, cmd::CommandError>| {
        let e = r.unwrap_err();
        (tonic::Code::from_i32(e.code), e.message)
    };
    for id in [0, 1, 11, 100] {
        assert_eq!(
            code(reset(&h, reset_request(&base, id, "r"), "x")),
            (
                tonic::Code::InvalidArgument,
                "Workflow task finish ID must be > 1 && <= workflow last event ID.".to_string()
            )
        );
    }
    // Event 6 (TimerStarted) + nothing pending: no workflow task after event 5.
    assert_eq!(
        code(reset(&h, reset_request(&base, 6, "r"), "x")),
        (
            tonic::Code::InvalidArgument,
            "Can only reset workflow to event ID in range [WorkflowTaskScheduled +1, WorkflowTaskStarted + 1]: 6".to_string()
        )
    );
    let (missing, _) = code(reset(
        &h,
        reset_request("2f2b4a38-0000-4000-8000-000000000000", 4, "r"),
        "x",
    ));
    assert_eq!(missing, tonic::Code::NotFound);
    assert_eq!(
        run_state(&h, &base).status,
        WorkflowExecutionStatus::Running as i32
    );
    assert!(h.tables(SHARD).execution(NS, WF, "x").unwrap().is_none());
}

#[test]
fn a_started_child_of_a_reset_parent_reports_its_close_to_the_new_run() {
    use super::super::child_tests::{CHILD, PARENT, start_child_command};
    use chronicle_proto::chronicle::history::v1::record_child_start_outcome::Outcome;
    use chronicle_proto::temporal::api::enums::v1::ParentClosePolicy;
    let h = Harness::new();
    h.start(PARENT, "parent", "parent-run");
    h.decide(
        PARENT,
        "parent",
        vec![start_child_command("child", ParentClosePolicy::Terminate)],
    );
    let (task_id, task) = h.transfer(PARENT, pb::outbox_task::Kind::StartChild)[0].clone();
    let child_run = h.start_child(&task, "child", 1);
    h.record_start(task_id, &task, Outcome::StartedRunId(child_run));
    // Events: 5 initiated, 6 child started, 7-8 a task (running). Reset to its Started event:
    // the child is pending (started) in the new run.
    let _running = h.start_task(PARENT, "parent");
    let new_run = h
        .reset(
            PARENT,
            child_tests::reset_request("parent", "", 8, "req-child"),
            "parent-new",
        )
        .expect("reset applies");
    let parent = h.state(PARENT, "parent");
    assert_eq!(parent.run_id, new_run);
    assert!(parent.children.get(&5).is_some_and(|c| c.started));
    // The replaced run applied no close policy: the child keeps running.
    assert!(
        h.transfer(PARENT, pb::outbox_task::Kind::ParentClosePolicy)
            .is_empty()
    );
    // The child completes and reports to the parent run it knows (the replaced one): the
    // close reaches the new run.
    h.decide(CHILD, "child", vec![complete_command()]);
    h.report_close("child");
    let types = h.types(PARENT, "parent");
    assert!(
        types.contains(&EventType::ChildWorkflowExecutionCompleted),
        "{types:?}"
    );
    assert!(h.state(PARENT, "parent").children.is_empty());
}

/// The parent started a child and a signal scheduled a task before the child's start was
/// recorded (events 5 initiated, 6 signaled, 7 task scheduled, 8 child started); then the child
/// continued as new. Resetting the parent to event 8 leaves the child initiated but not started
/// in the new run, whose start task reconnects to the chain the base run started (as Temporal's
/// does) instead of failing on the running workflow ID.
#[test]
fn a_reset_run_reconnects_to_a_child_initiated_but_not_started_in_its_prefix() {
    use super::super::child_tests::{CHILD, PARENT, start_child_command};
    use chronicle_proto::chronicle::history::v1::record_child_start_outcome::Outcome;
    use chronicle_proto::temporal::api::command::v1::ContinueAsNewWorkflowExecutionCommandAttributes;
    use chronicle_proto::temporal::api::common::v1::WorkflowType;
    use chronicle_proto::temporal::api::enums::v1::ParentClosePolicy;
    let h = Harness::new();
    h.start(PARENT, "parent", "parent-run");
    h.decide(
        PARENT,
        "parent",
        vec![start_child_command("child", ParentClosePolicy::Terminate)],
    );
    signal_workflow(&h, PARENT, "parent", "poke");
    let (task_id, task) = h.transfer(PARENT, pb::outbox_task::Kind::StartChild)[0].clone();
    let first_child_run = h.start_child(&task, "child", 1);
    h.record_start(
        task_id,
        &task,
        Outcome::StartedRunId(first_child_run.clone()),
    );
    use EventType as E;
    assert_eq!(
        h.types(PARENT, "parent")[4..],
        [
            E::StartChildWorkflowExecutionInitiated,
            E::WorkflowExecutionSignaled,
            E::WorkflowTaskScheduled,
            E::ChildWorkflowExecutionStarted,
        ]
    );
    h.decide(
        CHILD,
        "child",
        vec![
            CommandAttributes::ContinueAsNewWorkflowExecutionCommandAttributes(
                ContinueAsNewWorkflowExecutionCommandAttributes {
                    workflow_type: Some(WorkflowType {
                        name: "Child".into(),
                    }),
                    ..Default::default()
                },
            ),
        ],
    );
    let second_child_run = h.state(CHILD, "child").run_id;
    assert_ne!(second_child_run, first_child_run);

    let new_run = h
        .reset(
            PARENT,
            child_tests::reset_request("parent", "parent-run", 8, "req-reconnect"),
            "parent-new",
        )
        .expect("reset applies");
    let parent = h.state(PARENT, "parent");
    assert!(parent.children.get(&5).is_some_and(|c| !c.started));
    let (task_id, task) = h
        .transfer(PARENT, pb::outbox_task::Kind::StartChild)
        .into_iter()
        .find(|(_, t)| t.run_id == new_run)
        .expect("the new run starts its pending child");
    // Every attempt answers the chain's first run; no run is added to the child's chain.
    assert_eq!(h.start_child(&task, "child", 2), first_child_run);
    assert_eq!(h.state(CHILD, "child").run_id, second_child_run);
    h.record_start(
        task_id,
        &task,
        Outcome::StartedRunId(first_child_run.clone()),
    );
    let events = h.history(PARENT, "parent");
    let started = events
        .iter()
        .find_map(|e| match &e.attributes {
            Some(Attributes::ChildWorkflowExecutionStartedEventAttributes(a)) => Some(a.clone()),
            _ => None,
        })
        .expect("the new run records the start");
    assert_eq!(started.initiated_event_id, 5);
    assert_eq!(started.workflow_execution.unwrap().run_id, first_child_run);

    // The child closes and reports to the base run it knows: the close reaches the new run.
    h.decide(CHILD, "child", vec![complete_command()]);
    h.report_close("child");
    assert!(
        h.types(PARENT, "parent")
            .contains(&EventType::ChildWorkflowExecutionCompleted)
    );
    assert!(h.state(PARENT, "parent").children.is_empty());
}

/// Which recorded parents count as the asking reset run's: its original run and the runs that
/// share it (other resets of it), of the same workflow; nothing when the asker names no original.
#[test]
fn the_reset_lineage_is_the_parent_workflows_runs_sharing_its_original_run() {
    use super::super::child::same_reset_lineage;
    use chronicle_proto::chronicle::persistence::v1::ParentExecutionInfo;
    let record = |workflow_id: &str, run_id: &str, original: &str| ParentExecutionInfo {
        namespace_id: NS.into(),
        namespace: "default".into(),
        execution: Some(WorkflowExecution {
            workflow_id: workflow_id.into(),
            run_id: run_id.into(),
        }),
        initiated_event_id: 5,
        original_run_id: original.into(),
    };
    let asking = record("parent", "parent-new", "parent-run");
    assert!(same_reset_lineage(
        &record("parent", "parent-run", ""),
        &asking
    ));
    assert!(same_reset_lineage(
        &record("parent", "parent-other-reset", "parent-run"),
        &asking
    ));
    assert!(!same_reset_lineage(
        &record("stranger", "parent-run", ""),
        &asking
    ));
    assert!(!same_reset_lineage(
        &record("parent", "unrelated", "unrelated"),
        &asking
    ));
    let other_namespace = ParentExecutionInfo {
        namespace_id: "other-ns".into(),
        ..record("parent", "parent-run", "")
    };
    assert!(!same_reset_lineage(&other_namespace, &asking));
    assert!(!same_reset_lineage(
        &record("parent", "parent-run", ""),
        &record("parent", "parent-new", "")
    ));
}
