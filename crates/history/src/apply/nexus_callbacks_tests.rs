//! A handler's run and its completion callbacks, applied command by command: kept across
//! continue-as-new and reset, delivered once the chain ends, and attached by a start that
//! finds the workflow running (USE_EXISTING with on_conflict_options).

use chronicle_proto::chronicle::history::v1::{self as cmd, shard_command::Kind};
use chronicle_proto::chronicle::persistence::v1 as pb;
use chronicle_proto::temporal::api::command::v1::{
    ContinueAsNewWorkflowExecutionCommandAttributes, command::Attributes as CommandAttributes,
};
use chronicle_proto::temporal::api::common::v1::{Callback, WorkflowType, callback};
use chronicle_proto::temporal::api::enums::v1::EventType;
use chronicle_proto::temporal::api::history::v1::history_event::Attributes;
use chronicle_proto::temporal::api::taskqueue::v1::TaskQueue;
use chronicle_proto::temporal::api::workflowservice::v1 as ws;

use super::child_tests::{Harness, NS, complete_command};
use super::nexus_operation_tests::SHARD;

fn start_with_callback(h: &Harness, workflow_id: &str) {
    h.ok(
        SHARD,
        Kind::StartWorkflow(cmd::StartWorkflow {
            namespace_id: NS.into(),
            request: Some(ws::StartWorkflowExecutionRequest {
                namespace: "default".into(),
                workflow_id: workflow_id.into(),
                workflow_type: Some(WorkflowType {
                    name: "Backing".into(),
                }),
                task_queue: Some(TaskQueue {
                    name: "tq".into(),
                    ..Default::default()
                }),
                request_id: "req-backing".into(),
                completion_callbacks: vec![Callback {
                    variant: Some(callback::Variant::Nexus(callback::Nexus {
                        url: "temporal://system".into(),
                        header: [("temporal-callback-token".to_string(), "00".to_string())].into(),
                    })),
                    links: Vec::new(),
                }],
                ..Default::default()
            }),
            run_id: format!("{workflow_id}-run"),
            ..Default::default()
        }),
    );
}

#[test]
fn a_backing_run_delivers_its_callbacks_when_its_chain_ends() {
    let h = Harness::new();
    start_with_callback(&h, "backing");
    assert_eq!(h.state(SHARD, "backing").completion_callbacks.len(), 1);
    // Continue-as-new hands the callbacks on; no delivery yet.
    h.decide(
        SHARD,
        "backing",
        vec![
            CommandAttributes::ContinueAsNewWorkflowExecutionCommandAttributes(
                ContinueAsNewWorkflowExecutionCommandAttributes {
                    workflow_type: Some(WorkflowType {
                        name: "Backing".into(),
                    }),
                    task_queue: Some(TaskQueue {
                        name: "tq".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ),
        ],
    );
    assert!(
        h.transfer(SHARD, pb::outbox_task::Kind::NexusCallbacks)
            .is_empty()
    );
    let next = h.state(SHARD, "backing");
    assert_ne!(next.run_id, "backing-run");
    assert_eq!(next.completion_callbacks.len(), 1);
    h.decide(SHARD, "backing", vec![complete_command()]);
    let rows = h.transfer(SHARD, pb::outbox_task::Kind::NexusCallbacks);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].1.run_id, next.run_id);
    // The run is kept until the delivery is done.
    assert!(
        h.state(SHARD, "backing")
            .close_report_task_ids
            .contains(&(rows[0].0 as i64))
    );
}

#[test]
fn a_reset_hands_the_callbacks_to_the_new_run() {
    let h = Harness::new();
    start_with_callback(&h, "backing");
    let token = h.start_task(SHARD, "backing");
    h.complete_task(SHARD, token, vec![]).expect("completed");
    let new_run = h
        .reset(
            SHARD,
            super::child_tests::reset_request("backing", "", 4, "req-reset"),
            "backing-reset",
        )
        .expect("reset");
    // The replaced run was terminated, but the new run delivers the outcome.
    assert!(
        h.transfer(SHARD, pb::outbox_task::Kind::NexusCallbacks)
            .is_empty()
    );
    let state = h.state(SHARD, "backing");
    assert_eq!(state.run_id, new_run);
    assert_eq!(state.completion_callbacks.len(), 1);
    h.decide(SHARD, "backing", vec![complete_command()]);
    let rows = h.transfer(SHARD, pb::outbox_task::Kind::NexusCallbacks);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].1.run_id, new_run);
}

#[test]
fn a_use_existing_start_attaches_its_callback_once() {
    use chronicle_proto::temporal::api::enums::v1::WorkflowIdConflictPolicy;
    use chronicle_proto::temporal::api::workflow::v1::OnConflictOptions;
    let h = Harness::new();
    start_with_callback(&h, "backing");
    let attach = || {
        h.ok(
            SHARD,
            Kind::StartWorkflow(cmd::StartWorkflow {
                namespace_id: NS.into(),
                request: Some(ws::StartWorkflowExecutionRequest {
                    namespace: "default".into(),
                    workflow_id: "backing".into(),
                    workflow_type: Some(WorkflowType {
                        name: "Backing".into(),
                    }),
                    task_queue: Some(TaskQueue {
                        name: "tq".into(),
                        ..Default::default()
                    }),
                    request_id: "req-second".into(),
                    workflow_id_conflict_policy: WorkflowIdConflictPolicy::UseExisting as i32,
                    completion_callbacks: vec![Callback {
                        variant: Some(callback::Variant::Nexus(callback::Nexus {
                            url: "temporal://system".into(),
                            header: Default::default(),
                        })),
                        links: Vec::new(),
                    }],
                    on_conflict_options: Some(OnConflictOptions {
                        attach_request_id: true,
                        attach_completion_callbacks: true,
                        attach_links: true,
                    }),
                    ..Default::default()
                }),
                run_id: "unused-run".into(),
                ..Default::default()
            }),
        )
    };
    attach();
    let state = h.state(SHARD, "backing");
    assert_eq!(state.run_id, "backing-run");
    assert_eq!(state.completion_callbacks.len(), 2);
    let updates: Vec<_> = h
        .history(SHARD, "backing")
        .into_iter()
        .filter(|e| e.event_type == EventType::WorkflowExecutionOptionsUpdated as i32)
        .collect();
    assert_eq!(updates.len(), 1);
    assert!(updates[0].worker_may_ignore);
    let Some(Attributes::WorkflowExecutionOptionsUpdatedEventAttributes(a)) =
        &updates[0].attributes
    else {
        panic!("attributes");
    };
    assert_eq!(a.attached_request_id, "req-second");
    assert_eq!(a.attached_completion_callbacks.len(), 1);
    // The same start again (a retry) attaches nothing more.
    attach();
    assert_eq!(h.state(SHARD, "backing").completion_callbacks.len(), 2);
    h.decide(SHARD, "backing", vec![complete_command()]);
    assert_eq!(
        h.transfer(SHARD, pb::outbox_task::Kind::NexusCallbacks)
            .len(),
        1
    );
}
