//! The child-workflow and external-request commands applied directly, step by step, as the
//! transfer executor proposes them, including the repeats that retries and leader changes
//! produce: each outcome is recorded once, whatever the order and number of attempts.

use chronicle_proto::chronicle::history::v1::{
    self as cmd, command_result, record_child_start_outcome::Outcome, shard_command::Kind,
};
use chronicle_proto::chronicle::persistence::v1 as pb;
use chronicle_proto::temporal::api::command::v1::{
    Command, CompleteWorkflowExecutionCommandAttributes,
    ContinueAsNewWorkflowExecutionCommandAttributes,
    RequestCancelExternalWorkflowExecutionCommandAttributes,
    StartChildWorkflowExecutionCommandAttributes, command::Attributes as CommandAttributes,
};
use chronicle_proto::temporal::api::common::v1::{WorkflowExecution, WorkflowType};
use chronicle_proto::temporal::api::enums::v1::{
    EventType, ParentClosePolicy, ResetReapplyType, StartChildWorkflowExecutionFailedCause,
    WorkflowExecutionStatus,
};
use chronicle_proto::temporal::api::history::v1::HistoryEvent;
use chronicle_proto::temporal::api::history::v1::history_event::Attributes;
use chronicle_proto::temporal::api::taskqueue::v1::TaskQueue;
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use chronicle_storage::{Db, DbOptions, ShardBatch, ShardTables};

pub(super) const NS: &str = "ns-id";
pub(super) const PARENT: u32 = 0;
pub(super) const CHILD: u32 = 1;

pub(super) struct Harness {
    pub(super) db: Db,
    clock: std::cell::Cell<i64>,
    pub(super) dir: tempfile::TempDir,
}

impl Harness {
    pub(super) fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Db::open(dir.path(), DbOptions::default()).expect("db");
        Self {
            db,
            clock: std::cell::Cell::new(1_000_000),
            dir,
        }
    }

    /// Applies one command on `shard` and commits it, as one Raft entry would.
    pub(super) fn apply(
        &self,
        shard: u32,
        kind: Kind,
    ) -> Result<command_result::Result, cmd::CommandError> {
        self.clock.set(self.clock.get() + 10);
        let mut batch = ShardBatch::new(ShardTables::new(self.db.clone(), shard));
        let result = super::apply_one(
            &mut batch,
            cmd::ShardCommand {
                now: Some(chronicle_types::time::from_millis(self.clock.get())),
                kind: Some(kind),
                batch: Vec::new(),
                retention: None,
            },
        )
        .expect("storage");
        batch.commit().expect("commit");
        match result.result.expect("result") {
            command_result::Result::Error(e) => Err(e),
            other => Ok(other),
        }
    }

    pub(super) fn ok(&self, shard: u32, kind: Kind) -> command_result::Result {
        self.apply(shard, kind).expect("command applies")
    }

    pub(super) fn tables(&self, shard: u32) -> ShardTables {
        ShardTables::new(self.db.clone(), shard)
    }

    fn outbox(&self, shard: u32) -> Vec<(u64, pb::OutboxTask)> {
        self.tables(shard)
            .outbox_from(0, 1000)
            .expect("outbox")
            .into_iter()
            .map(|(k, t)| (u64::from_be_bytes(k[k.len() - 8..].try_into().unwrap()), t))
            .collect()
    }

    pub(super) fn transfer(
        &self,
        shard: u32,
        kind: pb::outbox_task::Kind,
    ) -> Vec<(u64, pb::OutboxTask)> {
        self.outbox(shard)
            .into_iter()
            .filter(|(_, t)| t.kind == kind as i32)
            .collect()
    }

    pub(super) fn state(&self, shard: u32, workflow_id: &str) -> pb::WorkflowExecutionState {
        let tables = self.tables(shard);
        let current = tables.current(NS, workflow_id).unwrap().expect("current");
        tables
            .execution(NS, workflow_id, &current.run_id)
            .unwrap()
            .expect("state")
    }

    pub(super) fn history(&self, shard: u32, workflow_id: &str) -> Vec<HistoryEvent> {
        let state = self.state(shard, workflow_id);
        self.tables(shard)
            .history(NS, workflow_id, &state.run_id, 1, 10_000)
            .unwrap()
    }

    pub(super) fn types(&self, shard: u32, workflow_id: &str) -> Vec<EventType> {
        self.history(shard, workflow_id)
            .iter()
            .map(|e| EventType::try_from(e.event_type).unwrap())
            .collect()
    }

    pub(super) fn start(&self, shard: u32, workflow_id: &str, run_id: &str) {
        self.ok(
            shard,
            Kind::StartWorkflow(cmd::StartWorkflow {
                scheduled_by: None,
                eager_workflow_start: false,
                namespace_id: NS.into(),
                request: Some(ws::StartWorkflowExecutionRequest {
                    namespace: "default".into(),
                    workflow_id: workflow_id.into(),
                    workflow_type: Some(WorkflowType {
                        name: "Parent".into(),
                    }),
                    task_queue: Some(TaskQueue {
                        name: "tq".into(),
                        ..Default::default()
                    }),
                    request_id: format!("start-{workflow_id}"),
                    ..Default::default()
                }),
                run_id: run_id.into(),
            }),
        );
    }

    /// Starts the pending workflow task of the workflow's current run; returns its token.
    pub(super) fn start_task(&self, shard: u32, workflow_id: &str) -> pb::TaskToken {
        let state = self.state(shard, workflow_id);
        let task = state.workflow_task.expect("a workflow task");
        let started = self.ok(
            shard,
            Kind::RecordWorkflowTaskStarted(cmd::RecordWorkflowTaskStarted {
                namespace_id: NS.into(),
                workflow_id: workflow_id.into(),
                run_id: state.run_id.clone(),
                scheduled_event_id: task.scheduled_event_id,
                request_id: uuid::Uuid::new_v4().to_string(),
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
            workflow_id: workflow_id.into(),
            run_id: state.run_id,
            scheduled_event_id: started.scheduled_event_id,
            attempt: started.attempt,
            started_event_id: started.started_event_id,
            ..Default::default()
        }
    }

    pub(super) fn complete_task(
        &self,
        shard: u32,
        token: pb::TaskToken,
        commands: Vec<CommandAttributes>,
    ) -> Result<command_result::Result, cmd::CommandError> {
        self.apply(
            shard,
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
                    identity: "test".into(),
                    ..Default::default()
                }),
                new_run_id: uuid::Uuid::new_v4().to_string(),
                eager_activities: true,
                max_history_events: 0,
                max_history_bytes: 0,
                nexus_endpoints: Vec::new(),
                nexus_request_ids: Vec::new(),
            }),
        )
    }

    /// Runs one workflow task of `workflow_id` with these commands.
    pub(super) fn decide(&self, shard: u32, workflow_id: &str, commands: Vec<CommandAttributes>) {
        let token = self.start_task(shard, workflow_id);
        self.complete_task(shard, token, commands)
            .expect("completion accepted");
    }

    /// The parent's start task as the executor carries it out, `repeat` times over.
    pub(super) fn start_child(
        &self,
        task: &pb::OutboxTask,
        child_id: &str,
        repeat: usize,
    ) -> String {
        let parent = self
            .tables(PARENT)
            .execution(NS, &task.workflow_id, &task.run_id)
            .unwrap()
            .expect("the task's parent run");
        let first_event = self
            .tables(PARENT)
            .history(NS, &task.workflow_id, &task.run_id, 1, 1)
            .unwrap()
            .remove(0);
        let child = &parent.children[&task.scheduled_event_id];
        let parent_record = pb::ParentExecutionInfo {
            original_run_id: super::child::original_run_id(&parent, &first_event),
            ..parent_info(&parent, task.scheduled_event_id)
        };
        let mut run_ids = Vec::new();
        for attempt in 0..repeat {
            let started = self.apply(
                CHILD,
                Kind::StartChildWorkflow(cmd::StartChildWorkflow {
                    namespace_id: NS.into(),
                    request: Some(ws::StartWorkflowExecutionRequest {
                        namespace: "default".into(),
                        workflow_id: child_id.into(),
                        workflow_type: Some(WorkflowType {
                            name: "Child".into(),
                        }),
                        task_queue: Some(TaskQueue {
                            name: "tq".into(),
                            ..Default::default()
                        }),
                        request_id: child.create_request_id.clone(),
                        ..Default::default()
                    }),
                    run_id: format!("child-run-{attempt}"),
                    parent: Some(parent_record.clone()),
                    root_execution: parent.root_execution.clone(),
                    reconnect_after_reset: super::child::initiated_before_reset(&parent, child),
                }),
            );
            match started {
                Ok(command_result::Result::StartWorkflow(r)) => run_ids.push(r.run_id),
                other => panic!("child start: {other:?}"),
            }
        }
        assert!(
            run_ids.iter().all(|r| *r == run_ids[0]),
            "one child run for every attempt: {run_ids:?}"
        );
        run_ids.remove(0)
    }

    /// Applies a reset on `shard` as the leader proposes it (having picked `new_run_id`): the
    /// run it answers, or its refusal.
    pub(super) fn reset(
        &self,
        shard: u32,
        request: ws::ResetWorkflowExecutionRequest,
        new_run_id: &str,
    ) -> Result<String, cmd::CommandError> {
        match self.apply(
            shard,
            Kind::ResetWorkflow(cmd::ResetWorkflow {
                namespace_id: NS.into(),
                request: Some(request),
                new_run_id: new_run_id.into(),
            }),
        )? {
            command_result::Result::ResetWorkflow(r) => Ok(r.run_id),
            other => panic!("reset answered {other:?}"),
        }
    }

    pub(super) fn record_start(&self, task_id: u64, task: &pb::OutboxTask, outcome: Outcome) {
        self.ok(
            PARENT,
            Kind::RecordChildStartOutcome(cmd::RecordChildStartOutcome {
                namespace_id: NS.into(),
                workflow_id: task.workflow_id.clone(),
                run_id: task.run_id.clone(),
                initiated_event_id: task.scheduled_event_id,
                outbox_id: task_id as i64,
                outcome: Some(outcome),
                header: None,
            }),
        );
    }

    /// The child's close report as the executor carries it out.
    pub(super) fn report_close(&self, child_id: &str) {
        let state = self.state(CHILD, child_id);
        let close_event = self
            .tables(CHILD)
            .history(NS, child_id, &state.run_id, state.completion_event_id, 1)
            .unwrap()
            .remove(0);
        self.ok(
            PARENT,
            Kind::RecordChildClosed(cmd::RecordChildClosed {
                parent: state.parent.clone(),
                child_execution: Some(WorkflowExecution {
                    workflow_id: child_id.into(),
                    run_id: state.run_id.clone(),
                }),
                child_first_run_id: state.first_run_id.clone(),
                close_event: Some(close_event),
            }),
        );
    }
}

fn parent_info(parent: &pb::WorkflowExecutionState, initiated: i64) -> pb::ParentExecutionInfo {
    pb::ParentExecutionInfo {
        namespace_id: NS.into(),
        namespace: "default".into(),
        execution: Some(WorkflowExecution {
            workflow_id: parent.workflow_id.clone(),
            run_id: parent.run_id.clone(),
        }),
        initiated_event_id: initiated,
        original_run_id: String::new(),
    }
}

/// A reset of `workflow_id` (run `run_id`, or the current run when empty) to
/// `finish_event_id`, reapplying everything eligible, as a client sends it.
pub(super) fn reset_request(
    workflow_id: &str,
    run_id: &str,
    finish_event_id: i64,
    request_id: &str,
) -> ws::ResetWorkflowExecutionRequest {
    ws::ResetWorkflowExecutionRequest {
        namespace: "default".into(),
        workflow_execution: Some(WorkflowExecution {
            workflow_id: workflow_id.into(),
            run_id: run_id.into(),
        }),
        reason: "bad deploy".into(),
        workflow_task_finish_event_id: finish_event_id,
        request_id: request_id.into(),
        // The deprecated field is still what clients set.
        #[allow(deprecated)]
        reset_reapply_type: ResetReapplyType::AllEligible as i32,
        ..Default::default()
    }
}

pub(super) fn start_child_command(
    workflow_id: &str,
    policy: ParentClosePolicy,
) -> CommandAttributes {
    CommandAttributes::StartChildWorkflowExecutionCommandAttributes(
        StartChildWorkflowExecutionCommandAttributes {
            workflow_id: workflow_id.into(),
            workflow_type: Some(WorkflowType {
                name: "Child".into(),
            }),
            parent_close_policy: policy as i32,
            ..Default::default()
        },
    )
}

pub(super) fn complete_command() -> CommandAttributes {
    CommandAttributes::CompleteWorkflowExecutionCommandAttributes(
        CompleteWorkflowExecutionCommandAttributes::default(),
    )
}

fn count(types: &[EventType], t: EventType) -> usize {
    types.iter().filter(|x| **x == t).count()
}

#[test]
fn every_step_of_a_child_applies_once_however_often_it_is_retried() {
    let h = Harness::new();
    h.start(PARENT, "parent", "parent-run");
    h.decide(
        PARENT,
        "parent",
        vec![start_child_command("child", ParentClosePolicy::Unspecified)],
    );
    let parent = h.state(PARENT, "parent");
    assert_eq!(parent.children.len(), 1);
    let child_info = parent.children.values().next().unwrap();
    assert_eq!(
        child_info.parent_close_policy,
        ParentClosePolicy::Terminate as i32,
        "Temporal's default"
    );
    let tasks = h.transfer(PARENT, pb::outbox_task::Kind::StartChild);
    assert_eq!(tasks.len(), 1);
    let (task_id, task) = tasks[0].clone();
    assert_eq!(task.scheduled_event_id, child_info.initiated_event_id);

    // The start is proposed three times (retries after lost answers): one child run.
    let run_id = h.start_child(&task, "child", 3);
    let child = h.state(CHILD, "child");
    assert_eq!(child.run_id, run_id);
    assert!(h.state(PARENT, "parent").workflow_task.is_none());
    // The outcome is recorded twice (a retry after a leader change): one Started event.
    h.record_start(task_id, &task, Outcome::StartedRunId(run_id.clone()));
    h.record_start(task_id, &task, Outcome::StartedRunId(run_id.clone()));
    let types = h.types(PARENT, "parent");
    assert_eq!(count(&types, EventType::ChildWorkflowExecutionStarted), 1);
    assert_eq!(
        types.last(),
        Some(&EventType::WorkflowTaskScheduled),
        "{types:?}"
    );
    assert!(
        h.transfer(PARENT, pb::outbox_task::Kind::StartChild)
            .is_empty()
    );

    // The child completes; its report reaches the parent twice: one Completed event.
    h.decide(CHILD, "child", vec![complete_command()]);
    let reports = h.transfer(CHILD, pb::outbox_task::Kind::ChildClosed);
    assert_eq!(reports.len(), 1);
    h.report_close("child");
    h.report_close("child");
    let events = h.history(PARENT, "parent");
    let types: Vec<EventType> = events
        .iter()
        .map(|e| EventType::try_from(e.event_type).unwrap())
        .collect();
    assert_eq!(count(&types, EventType::ChildWorkflowExecutionCompleted), 1);
    let started_id = events
        .iter()
        .find(|e| e.event_type == EventType::ChildWorkflowExecutionStarted as i32)
        .unwrap()
        .event_id;
    let Some(Attributes::ChildWorkflowExecutionCompletedEventAttributes(done)) = &events
        .iter()
        .find(|e| e.event_type == EventType::ChildWorkflowExecutionCompleted as i32)
        .unwrap()
        .attributes
    else {
        panic!("completed attributes");
    };
    assert_eq!(done.started_event_id, started_id);
    assert!(h.state(PARENT, "parent").children.is_empty());
    h.ok(
        CHILD,
        Kind::CompleteTransferTask(cmd::CompleteTransferTask {
            outbox_id: reports[0].0 as i64,
        }),
    );
    assert!(
        h.transfer(CHILD, pb::outbox_task::Kind::ChildClosed)
            .is_empty()
    );
}

#[test]
fn a_close_reported_before_the_start_is_recorded_records_both() {
    let h = Harness::new();
    h.start(PARENT, "parent", "parent-run");
    h.decide(
        PARENT,
        "parent",
        vec![start_child_command("child", ParentClosePolicy::Abandon)],
    );
    let (task_id, task) = h.transfer(PARENT, pb::outbox_task::Kind::StartChild)[0].clone();
    let run_id = h.start_child(&task, "child", 1);
    // The parent's leader stalls before recording the start; the child finishes meanwhile.
    h.decide(CHILD, "child", vec![complete_command()]);
    h.report_close("child");
    let types = h.types(PARENT, "parent");
    let started = types
        .iter()
        .position(|t| *t == EventType::ChildWorkflowExecutionStarted)
        .expect("Started recorded first");
    let completed = types
        .iter()
        .position(|t| *t == EventType::ChildWorkflowExecutionCompleted)
        .expect("Completed");
    assert_eq!(started + 1, completed);
    // The late start outcome changes nothing but removes its row.
    h.record_start(task_id, &task, Outcome::StartedRunId(run_id));
    assert_eq!(h.types(PARENT, "parent"), types);
    assert!(
        h.transfer(PARENT, pb::outbox_task::Kind::StartChild)
            .is_empty()
    );
}

#[test]
fn child_events_arriving_during_a_workflow_task_are_buffered_with_their_references() {
    let h = Harness::new();
    h.start(PARENT, "parent", "parent-run");
    h.decide(
        PARENT,
        "parent",
        vec![start_child_command("child", ParentClosePolicy::Terminate)],
    );
    let (task_id, task) = h.transfer(PARENT, pb::outbox_task::Kind::StartChild)[0].clone();
    let run_id = h.start_child(&task, "child", 1);
    h.record_start(task_id, &task, Outcome::StartedRunId(run_id));
    // A workflow task of the parent runs while the child completes and reports.
    let token = h.start_task(PARENT, "parent");
    h.decide(CHILD, "child", vec![complete_command()]);
    h.report_close("child");
    let before = h.types(PARENT, "parent");
    assert_eq!(before.last(), Some(&EventType::WorkflowTaskStarted));
    h.complete_task(PARENT, token, vec![])
        .expect("completion accepted");
    let events = h.history(PARENT, "parent");
    let done = events
        .iter()
        .find_map(|e| match &e.attributes {
            Some(Attributes::ChildWorkflowExecutionCompletedEventAttributes(a)) => Some(a.clone()),
            _ => None,
        })
        .expect("flushed");
    assert_eq!(
        events[(done.started_event_id - 1) as usize].event_type,
        EventType::ChildWorkflowExecutionStarted as i32
    );
    // The buffered close asks for a new workflow task.
    assert!(h.state(PARENT, "parent").workflow_task.is_some());
}

#[test]
fn a_workflow_id_in_use_fails_the_start() {
    let h = Harness::new();
    h.start(CHILD, "busy", "busy-run");
    h.start(PARENT, "parent", "parent-run");
    h.decide(
        PARENT,
        "parent",
        vec![start_child_command("busy", ParentClosePolicy::Terminate)],
    );
    let (task_id, task) = h.transfer(PARENT, pb::outbox_task::Kind::StartChild)[0].clone();
    let parent = h.state(PARENT, "parent");
    let refused = h.apply(
        CHILD,
        Kind::StartChildWorkflow(cmd::StartChildWorkflow {
            namespace_id: NS.into(),
            request: Some(ws::StartWorkflowExecutionRequest {
                workflow_id: "busy".into(),
                request_id: "another".into(),
                ..Default::default()
            }),
            run_id: "new-run".into(),
            parent: Some(parent_info(&parent, task.scheduled_event_id)),
            root_execution: None,
            reconnect_after_reset: false,
        }),
    );
    let error = refused.expect_err("the ID is in use");
    assert_eq!(error.code, tonic_code_already_exists());
    let failed =
        Outcome::Failed(StartChildWorkflowExecutionFailedCause::WorkflowAlreadyExists as i32);
    h.record_start(task_id, &task, failed.clone());
    h.record_start(task_id, &task, failed);
    let events = h.history(PARENT, "parent");
    let failures: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.attributes {
            Some(Attributes::StartChildWorkflowExecutionFailedEventAttributes(a)) => {
                Some(a.clone())
            }
            _ => None,
        })
        .collect();
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].workflow_id, "busy");
    assert_eq!(failures[0].initiated_event_id, task.scheduled_event_id);
    assert!(h.state(PARENT, "parent").children.is_empty());
    assert_eq!(h.state(CHILD, "busy").run_id, "busy-run");
}

fn tonic_code_already_exists() -> i32 {
    6
}

#[test]
fn close_policies_reach_started_children_and_children_whose_start_raced_the_close() {
    let h = Harness::new();
    h.start(PARENT, "parent", "parent-run");
    h.decide(
        PARENT,
        "parent",
        vec![
            start_child_command("terminated", ParentClosePolicy::Terminate),
            start_child_command("abandoned", ParentClosePolicy::Abandon),
            start_child_command("cancelled", ParentClosePolicy::RequestCancel),
            start_child_command("late", ParentClosePolicy::Terminate),
        ],
    );
    let tasks = h.transfer(PARENT, pb::outbox_task::Kind::StartChild);
    assert_eq!(tasks.len(), 4);
    let mut late = None;
    for (task_id, task) in tasks {
        let child_id = h.state(PARENT, "parent").children[&task.scheduled_event_id]
            .workflow_id
            .clone();
        let run_id = h.start_child(&task, &child_id, 1);
        if child_id == "late" {
            late = Some((task_id, task, run_id));
        } else {
            h.record_start(task_id, &task, Outcome::StartedRunId(run_id));
        }
    }
    // The parent finishes before the late child's start is recorded.
    h.decide(PARENT, "parent", vec![complete_command()]);
    let policies = h.transfer(PARENT, pb::outbox_task::Kind::ParentClosePolicy);
    let targets: Vec<&str> = policies
        .iter()
        .map(|(_, t)| t.target_workflow_id.as_str())
        .collect();
    assert_eq!(targets, vec!["terminated", "cancelled"]);
    let (task_id, task, run_id) = late.unwrap();
    h.record_start(task_id, &task, Outcome::StartedRunId(run_id));
    let policies = h.transfer(PARENT, pb::outbox_task::Kind::ParentClosePolicy);
    assert_eq!(policies.len(), 3, "the late child gets its policy too");
    // Each policy applied twice (a retry): once in effect.
    for _ in 0..2 {
        for (_, task) in &policies {
            let parent = h.state(PARENT, "parent");
            h.ok(
                CHILD,
                Kind::ApplyParentClosePolicy(cmd::ApplyParentClosePolicy {
                    namespace_id: NS.into(),
                    workflow_id: task.target_workflow_id.clone(),
                    parent: Some(parent_info(&parent, task.scheduled_event_id)),
                    policy: task.parent_close_policy,
                }),
            );
        }
    }
    let status = |id| WorkflowExecutionStatus::try_from(h.state(CHILD, id).status).unwrap();
    assert_eq!(status("terminated"), WorkflowExecutionStatus::Terminated);
    assert_eq!(status("late"), WorkflowExecutionStatus::Terminated);
    assert_eq!(status("abandoned"), WorkflowExecutionStatus::Running);
    assert_eq!(status("cancelled"), WorkflowExecutionStatus::Running);
    let cancelled = h.types(CHILD, "cancelled");
    assert_eq!(
        count(&cancelled, EventType::WorkflowExecutionCancelRequested),
        1
    );
    // A policy naming another parent leaves a workflow alone.
    h.start(CHILD, "stranger", "stranger-run");
    let parent = h.state(PARENT, "parent");
    h.ok(
        CHILD,
        Kind::ApplyParentClosePolicy(cmd::ApplyParentClosePolicy {
            namespace_id: NS.into(),
            workflow_id: "stranger".into(),
            parent: Some(parent_info(&parent, 5)),
            policy: ParentClosePolicy::Terminate as i32,
        }),
    );
    assert_eq!(status("stranger"), WorkflowExecutionStatus::Running);
}

#[test]
fn a_continued_child_reports_from_its_last_run() {
    let h = Harness::new();
    h.start(PARENT, "parent", "parent-run");
    h.decide(
        PARENT,
        "parent",
        vec![start_child_command("child", ParentClosePolicy::Terminate)],
    );
    let (task_id, task) = h.transfer(PARENT, pb::outbox_task::Kind::StartChild)[0].clone();
    let first_run = h.start_child(&task, "child", 1);
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
    assert!(
        h.transfer(CHILD, pb::outbox_task::Kind::ChildClosed)
            .is_empty(),
        "continue-as-new does not close the child"
    );
    let second = h.state(CHILD, "child");
    assert_ne!(second.run_id, first_run);
    assert_eq!(second.first_run_id, first_run);
    assert_eq!(second.parent, h.state(CHILD, "child").parent);
    assert!(second.parent.is_some(), "the new run keeps the parent");
    // A retried start (its answer was lost) finds the chain and answers its first run.
    assert_eq!(h.start_child(&task, "child", 1), first_run);
    h.record_start(task_id, &task, Outcome::StartedRunId(first_run.clone()));
    h.decide(CHILD, "child", vec![complete_command()]);
    assert_eq!(
        h.transfer(CHILD, pb::outbox_task::Kind::ChildClosed).len(),
        1
    );
    h.report_close("child");
    let events = h.history(PARENT, "parent");
    let done = events
        .iter()
        .find_map(|e| match &e.attributes {
            Some(Attributes::ChildWorkflowExecutionCompletedEventAttributes(a)) => Some(a.clone()),
            _ => None,
        })
        .expect("completed");
    assert_eq!(done.workflow_execution.unwrap().run_id, second.run_id);
    let started = events
        .iter()
        .find_map(|e| match &e.attributes {
            Some(Attributes::ChildWorkflowExecutionStartedEventAttributes(a)) => Some(a.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(started.workflow_execution.unwrap().run_id, first_run);
}

#[test]
fn cancel_requests_are_idempotent_and_child_only_requests_check_the_parent() {
    let h = Harness::new();
    h.start(PARENT, "parent", "parent-run");
    h.start(CHILD, "stranger", "stranger-run");
    h.decide(
        PARENT,
        "parent",
        vec![
            CommandAttributes::RequestCancelExternalWorkflowExecutionCommandAttributes(
                RequestCancelExternalWorkflowExecutionCommandAttributes {
                    workflow_id: "stranger".into(),
                    child_workflow_only: true,
                    ..Default::default()
                },
            ),
        ],
    );
    let parent = h.state(PARENT, "parent");
    let info = parent.request_cancels.values().next().unwrap().clone();
    let request = |child_only: bool| {
        Kind::RequestCancelWorkflow(cmd::RequestCancelWorkflow {
            namespace_id: NS.into(),
            request: Some(ws::RequestCancelWorkflowExecutionRequest {
                workflow_execution: Some(WorkflowExecution {
                    workflow_id: "stranger".into(),
                    run_id: String::new(),
                }),
                request_id: info.request_id.clone(),
                ..Default::default()
            }),
            external: Some(cmd::ExternalSource {
                execution: Some(WorkflowExecution {
                    workflow_id: "parent".into(),
                    run_id: "parent-run".into(),
                }),
                initiated_event_id: info.initiated_event_id,
                child_workflow_only: child_only,
            }),
        })
    };
    let refused = h.apply(CHILD, request(true)).expect_err("not its child");
    assert_eq!(refused.code, 5, "NotFound");
    h.ok(CHILD, request(false));
    h.ok(CHILD, request(false));
    assert_eq!(
        count(
            &h.types(CHILD, "stranger"),
            EventType::WorkflowExecutionCancelRequested
        ),
        1
    );
    let (task_id, _) = h.transfer(PARENT, pb::outbox_task::Kind::CancelExternal)[0].clone();
    for _ in 0..2 {
        h.ok(
            PARENT,
            Kind::RecordExternalOutcome(cmd::RecordExternalOutcome {
                namespace_id: NS.into(),
                workflow_id: "parent".into(),
                run_id: "parent-run".into(),
                initiated_event_id: info.initiated_event_id,
                outbox_id: task_id as i64,
                signal: false,
                failed: true,
                not_attempted: false,
            }),
        );
    }
    let types = h.types(PARENT, "parent");
    assert_eq!(
        count(
            &types,
            EventType::RequestCancelExternalWorkflowExecutionFailed
        ),
        1
    );
    assert!(h.state(PARENT, "parent").request_cancels.is_empty());
    assert!(
        h.transfer(PARENT, pb::outbox_task::Kind::CancelExternal)
            .is_empty()
    );
}

#[test]
fn start_and_cancel_of_the_same_child_in_one_task_is_refused() {
    let h = Harness::new();
    h.start(PARENT, "parent", "parent-run");
    let token = h.start_task(PARENT, "parent");
    let refused = h
        .complete_task(
            PARENT,
            token,
            vec![
                start_child_command("child", ParentClosePolicy::Terminate),
                CommandAttributes::RequestCancelExternalWorkflowExecutionCommandAttributes(
                    RequestCancelExternalWorkflowExecutionCommandAttributes {
                        workflow_id: "child".into(),
                        child_workflow_only: true,
                        ..Default::default()
                    },
                ),
            ],
        )
        .expect_err("refused");
    assert!(
        refused.message.contains("same workflow task"),
        "{}",
        refused.message
    );
    // Nothing of the completion is kept: no child, no start task.
    assert!(h.state(PARENT, "parent").children.is_empty());
    assert!(
        h.transfer(PARENT, pb::outbox_task::Kind::StartChild)
            .is_empty()
    );
    assert_eq!(
        h.types(PARENT, "parent").last(),
        Some(&EventType::WorkflowTaskFailed)
    );
}
