//! UpdateWorkflowExecutionOptions applied command by command: the event and state an update
//! writes, an update that changes nothing writes nothing, refused overrides change nothing, and
//! an update during a running workflow task is buffered.

use chronicle_proto::chronicle::history::v1::{self as cmd, command_result, shard_command::Kind};
use chronicle_proto::temporal::api::common::v1::{Priority, WorkflowExecution};
use chronicle_proto::temporal::api::enums::v1::EventType;
use chronicle_proto::temporal::api::history::v1::history_event::Attributes;
use chronicle_proto::temporal::api::workflow::v1::versioning_override::{
    Override, PinnedOverride, PinnedOverrideBehavior,
};
use chronicle_proto::temporal::api::workflow::v1::{VersioningOverride, WorkflowExecutionOptions};
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use chronicle_proto::temporal_api::deployment::v1::WorkerDeploymentVersion;

use super::child_tests::{Harness, NS, reset_request};

const SHARD: u32 = 0;
const WF: &str = "wf-options";

fn update(options: WorkflowExecutionOptions, paths: &[&str]) -> Kind {
    Kind::RunOperation(cmd::RunOperation {
        namespace_id: NS.into(),
        workflow_id: WF.into(),
        run_id: String::new(),
        operation: Some(
            cmd::run_operation::Operation::UpdateWorkflowExecutionOptions(
                ws::UpdateWorkflowExecutionOptionsRequest {
                    workflow_execution: Some(WorkflowExecution {
                        workflow_id: WF.into(),
                        run_id: String::new(),
                    }),
                    workflow_execution_options: Some(options),
                    update_mask: Some(chronicle_proto::wkt::FieldMask {
                        paths: paths.iter().map(|p| p.to_string()).collect(),
                    }),
                    identity: "operator".into(),
                    ..Default::default()
                },
            ),
        ),
        jitter_seed: 0,
        request_id: String::new(),
    })
}

fn answered(result: command_result::Result) -> WorkflowExecutionOptions {
    let command_result::Result::RunOperation(r) = result else {
        panic!("run operation result");
    };
    r.workflow_execution_options.expect("options")
}

fn auto_upgrade() -> WorkflowExecutionOptions {
    WorkflowExecutionOptions {
        versioning_override: Some(VersioningOverride {
            r#override: Some(Override::AutoUpgrade(true)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn priority(key: i32) -> Option<Priority> {
    Some(Priority {
        priority_key: key,
        ..Default::default()
    })
}

#[test]
fn an_update_writes_one_event_and_a_repeat_writes_nothing() {
    let h = Harness::new();
    h.start(SHARD, WF, "run-1");
    let before = h.history(SHARD, WF).len();
    let options = WorkflowExecutionOptions {
        priority: priority(3),
        ..auto_upgrade()
    };
    let merged = answered(h.ok(
        SHARD,
        update(options.clone(), &["priority", "versioning_override"]),
    ));
    assert_eq!(merged, options);
    let history = h.history(SHARD, WF);
    assert_eq!(history.len(), before + 1);
    let event = history.last().unwrap();
    assert_eq!(
        event.event_type,
        EventType::WorkflowExecutionOptionsUpdated as i32
    );
    assert!(event.worker_may_ignore);
    let Some(Attributes::WorkflowExecutionOptionsUpdatedEventAttributes(a)) = &event.attributes
    else {
        panic!("options updated attributes");
    };
    assert_eq!(a.identity, "operator");
    assert_eq!(a.priority, priority(3));
    assert!(!a.unset_versioning_override);
    assert_eq!(a.versioning_override, options.versioning_override);
    let state = h.state(SHARD, WF);
    assert_eq!(state.priority, priority(3));
    assert_eq!(
        state.versioning_info.unwrap().versioning_override,
        options.versioning_override
    );
    let behavior = &state.search_attributes.unwrap().indexed_fields
        [super::workflow_options::VERSIONING_BEHAVIOR_ATTRIBUTE];
    assert_eq!(behavior.data, b"\"AutoUpgrade\"");

    // The same options again: the answer, and nothing written (not even the state).
    let transitions = h.state(SHARD, WF).state_transition_count;
    answered(h.ok(SHARD, update(options, &["priority", "versioning_override"])));
    assert_eq!(h.history(SHARD, WF).len(), before + 1);
    assert_eq!(h.state(SHARD, WF).state_transition_count, transitions);

    // Removing the override: the event says so, the attribute goes, the priority stays.
    let merged = answered(h.ok(SHARD, update(Default::default(), &["versioning_override"])));
    assert_eq!(merged.versioning_override, None);
    assert_eq!(merged.priority, priority(3));
    let Some(Attributes::WorkflowExecutionOptionsUpdatedEventAttributes(a)) =
        h.history(SHARD, WF).last().unwrap().attributes.clone()
    else {
        panic!("options updated attributes");
    };
    assert!(a.unset_versioning_override);
    let state = h.state(SHARD, WF);
    assert_eq!(state.versioning_info.unwrap().versioning_override, None);
    assert!(
        !state
            .search_attributes
            .unwrap_or_default()
            .indexed_fields
            .contains_key(super::workflow_options::VERSIONING_BEHAVIOR_ATTRIBUTE)
    );
}

#[test]
fn priority_sub_fields_merge_into_the_runs_priority() {
    let h = Harness::new();
    h.start(SHARD, WF, "run-1");
    let first = WorkflowExecutionOptions {
        priority: Some(Priority {
            priority_key: 2,
            fairness_key: "tenant".into(),
            fairness_weight: 1.5,
        }),
        ..Default::default()
    };
    h.ok(SHARD, update(first, &["priority"]));
    let merged = answered(h.ok(
        SHARD,
        update(
            WorkflowExecutionOptions {
                priority: priority(4),
                ..Default::default()
            },
            &["priority.priority_key"],
        ),
    ));
    assert_eq!(
        merged.priority,
        Some(Priority {
            priority_key: 4,
            fairness_key: "tenant".into(),
            fairness_weight: 1.5,
        })
    );
    assert_eq!(h.state(SHARD, WF).priority, merged.priority);
}

#[test]
fn refused_overrides_change_nothing() {
    let h = Harness::new();
    h.start(SHARD, WF, "run-1");
    let before = h.history(SHARD, WF).len();
    let pinned = |behavior: PinnedOverrideBehavior, version: Option<WorkerDeploymentVersion>| {
        WorkflowExecutionOptions {
            versioning_override: Some(VersioningOverride {
                r#override: Some(Override::Pinned(PinnedOverride {
                    behavior: behavior as i32,
                    version,
                })),
                ..Default::default()
            }),
            ..Default::default()
        }
    };
    let version = Some(WorkerDeploymentVersion {
        deployment_name: "d".into(),
        build_id: "b".into(),
    });
    let cases = [
        (
            update(
                pinned(PinnedOverrideBehavior::Pinned, None),
                &["versioning_override"],
            ),
            tonic::Code::FailedPrecondition,
            "must specify a specific pinned override version because workflow with id wf-options \
             has behavior Unspecified and is not yet pinned to any version",
        ),
        (
            update(
                pinned(PinnedOverrideBehavior::Unspecified, version.clone()),
                &["versioning_override"],
            ),
            tonic::Code::InvalidArgument,
            "must specify pinned override behavior if override is pinned.",
        ),
        (
            update(
                pinned(PinnedOverrideBehavior::Pinned, version),
                &["versioning_override"],
            ),
            tonic::Code::FailedPrecondition,
            "Pinned version 'd:b' is not present in task queue 'tq' of type 'Workflow'",
        ),
        (
            update(auto_upgrade(), &["versioning_override.auto_upgrade"]),
            tonic::Code::InvalidArgument,
            "error applying update_options: versioning_override doesn't support partial updates",
        ),
    ];
    for (command, code, message) in cases {
        let err = h.apply(SHARD, command).unwrap_err();
        assert_eq!(err.code, code as i32, "{}", err.message);
        assert_eq!(err.message, message);
    }
    assert_eq!(h.history(SHARD, WF).len(), before);
    assert!(h.state(SHARD, WF).versioning_info.is_none());
}

#[test]
fn an_update_during_a_running_task_waits_for_it_and_a_closed_run_refuses() {
    let h = Harness::new();
    h.start(SHARD, WF, "run-1");
    let token = h.start_task(SHARD, WF);
    let before = h.history(SHARD, WF).len();
    h.ok(SHARD, update(auto_upgrade(), &["versioning_override"]));
    assert_eq!(
        h.history(SHARD, WF).len(),
        before,
        "buffered while the task runs"
    );
    let state = h.state(SHARD, WF);
    assert_eq!(state.buffered_events.len(), 1);
    assert!(state.buffered_events[0].worker_may_ignore);
    // As in Temporal, a buffered event (even one a worker may ignore) makes a closing
    // completion fail as UnhandledCommand; the event is written and a new task follows.
    let refused = h
        .complete_task(SHARD, token, vec![super::child_tests::complete_command()])
        .unwrap_err();
    assert!(
        refused.message.starts_with("UnhandledCommand"),
        "{}",
        refused.message
    );
    let token = h.start_task(SHARD, WF);
    h.complete_task(SHARD, token, vec![super::child_tests::complete_command()])
        .expect("completes");
    let types = h.types(SHARD, WF);
    assert!(types.contains(&EventType::WorkflowExecutionOptionsUpdated));
    let err = h
        .apply(SHARD, update(auto_upgrade(), &["priority"]))
        .unwrap_err();
    assert_eq!(err.code, tonic::Code::NotFound as i32);
    assert_eq!(err.message, "workflow execution already completed");
}

#[test]
fn a_reset_run_keeps_the_options_its_prefix_set() {
    let h = Harness::new();
    h.start(SHARD, WF, "run-1");
    let options = WorkflowExecutionOptions {
        priority: priority(2),
        ..auto_upgrade()
    };
    h.ok(
        SHARD,
        update(options.clone(), &["priority", "versioning_override"]),
    );
    let token = h.start_task(SHARD, WF);
    h.complete_task(SHARD, token, vec![]).expect("completes");
    let completed = h
        .history(SHARD, WF)
        .iter()
        .rev()
        .find(|e| e.event_type == EventType::WorkflowTaskCompleted as i32)
        .expect("completed")
        .event_id;
    h.reset(
        SHARD,
        reset_request(WF, "run-1", completed, "reset-1"),
        "run-2",
    )
    .expect("reset applies");
    let state = h.state(SHARD, WF);
    assert_eq!(state.run_id, "run-2");
    assert_eq!(state.priority, priority(2));
    assert_eq!(
        state.versioning_info.unwrap().versioning_override,
        options.versioning_override
    );
    assert!(
        state
            .search_attributes
            .unwrap()
            .indexed_fields
            .contains_key(super::workflow_options::VERSIONING_BEHAVIOR_ATTRIBUTE)
    );
}
