//! Durability across a restart on the same data directory, and the data-directory lock.

use std::time::Duration;

use chronicle_proto::temporal::api::common::v1::{WorkflowExecution, WorkflowType};
use chronicle_proto::temporal::api::enums::v1::{EventType, WorkflowExecutionStatus};
use chronicle_proto::temporal::api::taskqueue::v1::TaskQueue;
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use chronicle_server::RunningServer;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_and_pending_tasks_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = RunningServer::start(config_for(dir.path()))
        .await
        .expect("start");

    // A second server on the same directory is refused, clearly.
    let second = RunningServer::start(config_for(dir.path())).await;
    let message = format!(
        "{:#}",
        second.err().expect("second start on a locked dir fails")
    );
    assert!(
        message.contains("in use") || message.contains("lock"),
        "clear lock message: {message}"
    );

    let mut raw = raw_client(&server.url()).await;
    let task_queue = unique("restart");
    let workflow_id = unique("restart");
    raw.start_workflow_execution(ws::StartWorkflowExecutionRequest {
        namespace: "default".into(),
        workflow_id: workflow_id.clone(),
        workflow_type: Some(WorkflowType {
            name: "Durable".into(),
        }),
        task_queue: Some(TaskQueue {
            name: task_queue.clone(),
            ..Default::default()
        }),
        request_id: "d-1".into(),
        ..Default::default()
    })
    .await
    .expect("start");
    let poll = ws::PollWorkflowTaskQueueRequest {
        namespace: "default".into(),
        task_queue: Some(TaskQueue {
            name: task_queue.clone(),
            ..Default::default()
        }),
        identity: "restart-test".into(),
        ..Default::default()
    };
    let task = raw
        .poll_workflow_task_queue(poll.clone())
        .await
        .expect("poll")
        .into_inner();
    use chronicle_proto::temporal::api::command::v1::{
        Command, StartTimerCommandAttributes, command,
    };
    let timer = Command {
        command_type: chronicle_proto::temporal::api::enums::v1::CommandType::StartTimer as i32,
        attributes: Some(command::Attributes::StartTimerCommandAttributes(
            StartTimerCommandAttributes {
                timer_id: "t".into(),
                start_to_fire_timeout: Some(chronicle_types::time::duration_from_millis(1500)),
            },
        )),
        ..Default::default()
    };
    raw.respond_workflow_task_completed(ws::RespondWorkflowTaskCompletedRequest {
        namespace: "default".into(),
        task_token: task.task_token,
        commands: vec![timer],
        ..Default::default()
    })
    .await
    .expect("complete");
    server.stop().await.expect("clean stop");

    // The timer fires after the restart and its workflow task reaches a new poller.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let server = RunningServer::start(config_for(dir.path()))
        .await
        .expect("restart");
    let mut raw = raw_client(&server.url()).await;
    let task = raw
        .poll_workflow_task_queue(poll)
        .await
        .expect("poll after restart")
        .into_inner();
    assert!(
        !task.task_token.is_empty(),
        "workflow task delivered after restart"
    );
    let types: Vec<i32> = task
        .history
        .unwrap()
        .events
        .iter()
        .map(|e| e.event_type)
        .collect();
    assert!(
        types.contains(&(EventType::TimerFired as i32)),
        "timer fired after restart: {types:?}"
    );
    let described = raw
        .describe_workflow_execution(ws::DescribeWorkflowExecutionRequest {
            namespace: "default".into(),
            execution: Some(WorkflowExecution {
                workflow_id,
                run_id: String::new(),
            }),
        })
        .await
        .expect("describe")
        .into_inner();
    assert_eq!(
        described.workflow_execution_info.unwrap().status,
        WorkflowExecutionStatus::Running as i32
    );
    server.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_keeps_the_shard_count_it_was_created_with() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_for(dir.path());
    config.num_shards = None;
    let server = RunningServer::start(config.clone()).await.expect("start");
    // Workflows written with the default count must be found after restarts.
    let mut raw = raw_client(&server.url()).await;
    let workflow_ids: Vec<String> = (0..8).map(|i| unique(&format!("shards-{i}"))).collect();
    for workflow_id in &workflow_ids {
        raw.start_workflow_execution(start_request(workflow_id, "Counted", &unique("shards")))
            .await
            .expect("start workflow");
    }
    server.stop().await.expect("stop");

    // Asking for another count is refused with a message that says why.
    let mut other = config.clone();
    other.num_shards = Some(4);
    let refused = RunningServer::start(other).await;
    let message = format!("{:#}", refused.err().expect("a different count is refused"));
    assert!(
        message.contains("created with 1 history shards, not 4"),
        "clear message: {message}"
    );

    // Without a count, and with the same count, the directory opens and every workflow is found.
    for num_shards in [None, Some(1)] {
        let mut again = config.clone();
        again.num_shards = num_shards;
        let server = RunningServer::start(again).await.expect("restart");
        let mut raw = raw_client(&server.url()).await;
        for workflow_id in &workflow_ids {
            raw.describe_workflow_execution(ws::DescribeWorkflowExecutionRequest {
                namespace: "default".into(),
                execution: execution(workflow_id, ""),
            })
            .await
            .unwrap_or_else(|e| panic!("{workflow_id} found after restart: {e}"));
        }
        server.stop().await.expect("stop");
    }
}
