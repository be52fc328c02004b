//! Faults injected into the history leader's outbox (failpoints from
//! `chronicle_storage::failpoint`): handing workflow tasks to matching and executing transfer
//! tasks fail for a while. Nothing acknowledged is lost and no workflow is left stuck: once the
//! fault clears, the task reaches a worker and the signal reaches its target. Then the shard's
//! log, replayed on a fresh database, gives the live state (digests). The Raft-side failpoints
//! (append, fsync, apply, snapshots) are in crates/raft/tests/failpoints.rs.

use std::time::Duration;

use chronicle_proto::temporal::api::command::v1::{
    Command, CompleteWorkflowExecutionCommandAttributes,
    SignalExternalWorkflowExecutionCommandAttributes, command::Attributes,
};
use chronicle_proto::temporal::api::enums::v1::EventType;
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use chronicle_proto::temporal::api::workflowservice::v1::workflow_service_client::WorkflowServiceClient;
use chronicle_server::RunningServer;
use chronicle_storage::failpoint::names;
use tonic::transport::Channel;

use crate::common::*;

fn complete(token: Vec<u8>, attributes: Attributes) -> ws::RespondWorkflowTaskCompletedRequest {
    ws::RespondWorkflowTaskCompletedRequest {
        namespace: "default".into(),
        task_token: token,
        commands: vec![Command {
            attributes: Some(attributes),
            ..Default::default()
        }],
        identity: "failpoints".into(),
        ..Default::default()
    }
}

/// A poll that gives up after `wait` (an empty task when nothing came).
async fn poll_for(
    raw: &mut WorkflowServiceClient<Channel>,
    tq: &str,
    wait: Duration,
) -> Option<ws::PollWorkflowTaskQueueResponse> {
    let task = tokio::time::timeout(wait, raw.poll_workflow_task_queue(poll(tq)))
        .await
        .ok()?
        .expect("poll")
        .into_inner();
    (!task.task_token.is_empty()).then_some(task)
}

async fn signaled(raw: &mut WorkflowServiceClient<Channel>, id: &str) -> bool {
    workflow_history(raw, id)
        .await
        .iter()
        .any(|e| e.event_type == EventType::WorkflowExecutionSignaled as i32)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_outbox_dispatch_and_transfers_lose_nothing_and_leave_nothing_stuck() {
    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_for(dir.path());
    config.num_shards = Some(1);
    let server = RunningServer::start(config).await.expect("start");
    let mut raw = raw_client(&server.url()).await;

    // Workflow tasks cannot reach matching: a start is acknowledged, but no worker gets its task.
    fail::cfg(names::OUTBOX_DISPATCH, "return(error)").unwrap();
    let tq = unique("fp");
    let (source, target) = (unique("source"), unique("target"));
    raw.start_workflow_execution(start_request(&target, "Target", &unique("fp-target")))
        .await
        .expect("start target");
    raw.start_workflow_execution(start_request(&source, "Source", &tq))
        .await
        .expect("start source");
    assert!(
        poll_for(&mut raw, &tq, Duration::from_secs(3))
            .await
            .is_none(),
        "no task while dispatch fails"
    );
    fail::remove(names::OUTBOX_DISPATCH);
    let task = poll_for(&mut raw, &tq, Duration::from_secs(20))
        .await
        .expect("the workflow task reaches a worker once the fault cleared");

    // The source signals the target; the transfer task fails until the fault clears.
    fail::cfg(names::TRANSFER_EXECUTE, "return(error)").unwrap();
    raw.respond_workflow_task_completed(complete(
        task.task_token,
        Attributes::SignalExternalWorkflowExecutionCommandAttributes(
            SignalExternalWorkflowExecutionCommandAttributes {
                execution: execution(&target, ""),
                signal_name: "ping".into(),
                ..Default::default()
            },
        ),
    ))
    .await
    .expect("complete with a signal command");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !signaled(&mut raw, &target).await,
        "no delivery while transfers fail"
    );
    fail::remove(names::TRANSFER_EXECUTE);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !signaled(&mut raw, &target).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the signal never arrived after the fault cleared"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The source hears of the delivery in a new workflow task, and completes.
    let task = poll_for(&mut raw, &tq, Duration::from_secs(20))
        .await
        .expect("the source's next task");
    raw.respond_workflow_task_completed(complete(
        task.task_token,
        Attributes::CompleteWorkflowExecutionCommandAttributes(
            CompleteWorkflowExecutionCommandAttributes::default(),
        ),
    ))
    .await
    .expect("complete");
    let events = workflow_history(&mut raw, &source).await;
    assert!(
        events
            .iter()
            .any(|e| e.event_type == EventType::ExternalWorkflowExecutionSignaled as i32)
    );
    assert_eq!(
        events.last().map(|e| e.event_type),
        Some(EventType::WorkflowExecutionCompleted as i32)
    );
    drop(raw);
    server.stop().await.expect("clean stop");

    // The log replayed on a fresh database gives the live state: the faults left no trace.
    let source_db =
        chronicle_storage::Db::open(dir.path(), Default::default()).expect("reopen the data");
    let (_replayed_dir, replayed) = crate::apply_safety::replay(&source_db, &[0], 1).await;
    let live = chronicle_storage::digest::shard_digest(&source_db, 0).unwrap();
    let again = chronicle_storage::digest::shard_digest(&replayed, 0).unwrap();
    assert_eq!(
        live,
        again,
        "differs in {:?}",
        live.differing_families(&again)
    );
    scenario.teardown();
}
