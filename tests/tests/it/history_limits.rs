//! Temporal's history limits: past 4,096 events workflow tasks suggest continue-as-new; at
//! 51,200 events the run is terminated instead of growing a history no worker could replay.

use chronicle_proto::temporal::api::command::v1::{
    Command, RecordMarkerCommandAttributes, command,
};
use chronicle_proto::temporal::api::common::v1::{WorkflowExecution, WorkflowType};
use chronicle_proto::temporal::api::enums::v1::{CommandType, EventType, WorkflowExecutionStatus};
use chronicle_proto::temporal::api::history::v1::history_event::Attributes;
use chronicle_proto::temporal::api::taskqueue::v1::TaskQueue;
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use chronicle_proto::temporal::api::workflowservice::v1::workflow_service_client::WorkflowServiceClient;
use tonic::transport::Channel;

use crate::common::*;

const MARKERS_PER_TASK: usize = 1000;

fn marker() -> Command {
    Command {
        command_type: CommandType::RecordMarker as i32,
        attributes: Some(command::Attributes::RecordMarkerCommandAttributes(
            RecordMarkerCommandAttributes {
                marker_name: "m".into(),
                ..Default::default()
            },
        )),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_count_limit_terminates_the_run() {
    let server = start_server().await;
    let mut raw = raw_client(&server.server.url()).await;
    let task_queue = unique("limits");
    let workflow_id = unique("limits");
    let execution = WorkflowExecution {
        workflow_id: workflow_id.clone(),
        run_id: String::new(),
    };
    raw.start_workflow_execution(ws::StartWorkflowExecutionRequest {
        namespace: "default".into(),
        workflow_id: workflow_id.clone(),
        workflow_type: Some(WorkflowType { name: "Big".into() }),
        task_queue: Some(TaskQueue {
            name: task_queue.clone(),
            ..Default::default()
        }),
        request_id: unique("req"),
        ..Default::default()
    })
    .await
    .expect("start");

    let mut suggested_at = None;
    let mut tasks = 0;
    loop {
        let task = raw
            .poll_workflow_task_queue(ws::PollWorkflowTaskQueueRequest {
                namespace: "default".into(),
                task_queue: Some(TaskQueue {
                    name: task_queue.clone(),
                    ..Default::default()
                }),
                identity: "limits-test".into(),
                ..Default::default()
            })
            .await
            .expect("poll")
            .into_inner();
        tasks += 1;
        // The task's history pages are not needed: the started event is the last one.
        let described = raw
            .get_workflow_execution_history_reverse(ws::GetWorkflowExecutionHistoryReverseRequest {
                namespace: "default".into(),
                execution: Some(execution.clone()),
                maximum_page_size: 1,
                ..Default::default()
            })
            .await
            .expect("history")
            .into_inner();
        let last = &described.history.unwrap().events[0];
        assert_eq!(last.event_type, EventType::WorkflowTaskStarted as i32);
        let Some(Attributes::WorkflowTaskStartedEventAttributes(started)) = &last.attributes else {
            panic!("started event without attributes");
        };
        if started.suggest_continue_as_new && suggested_at.is_none() {
            suggested_at = Some(last.event_id);
        }
        if !started.suggest_continue_as_new {
            assert!(
                last.event_id <= 4096,
                "no suggestion at event {}",
                last.event_id
            );
        }
        raw.respond_workflow_task_completed(ws::RespondWorkflowTaskCompletedRequest {
            namespace: "default".into(),
            task_token: task.task_token,
            commands: vec![marker(); MARKERS_PER_TASK],
            ..Default::default()
        })
        .await
        .expect("complete");
        let described = raw
            .describe_workflow_execution(ws::DescribeWorkflowExecutionRequest {
                namespace: "default".into(),
                execution: Some(execution.clone()),
            })
            .await
            .expect("describe")
            .into_inner();
        let info = described.workflow_execution_info.unwrap();
        if info.status != WorkflowExecutionStatus::Running as i32 {
            assert_eq!(info.status, WorkflowExecutionStatus::Terminated as i32);
            assert!(info.history_length >= 51_200, "{}", info.history_length);
            break;
        }
        assert!(tasks < 60, "the run should have hit the limit by now");
        raw.signal_workflow_execution(ws::SignalWorkflowExecutionRequest {
            namespace: "default".into(),
            workflow_execution: Some(execution.clone()),
            signal_name: "more".into(),
            ..Default::default()
        })
        .await
        .expect("signal");
    }
    assert!(
        suggested_at.is_some(),
        "continue-as-new was never suggested"
    );

    let terminated = termination(&mut raw, "default", &workflow_id).await;
    assert_eq!(terminated.reason, "Workflow history count exceeds limit.");
    assert_eq!(terminated.identity, "history-service");
}

/// The attributes of the run's last event, which must be its termination.
async fn termination(
    raw: &mut WorkflowServiceClient<Channel>,
    namespace: &str,
    workflow_id: &str,
) -> chronicle_proto::temporal::api::history::v1::WorkflowExecutionTerminatedEventAttributes {
    let last = raw
        .get_workflow_execution_history_reverse(ws::GetWorkflowExecutionHistoryReverseRequest {
            namespace: namespace.into(),
            execution: execution(workflow_id, ""),
            maximum_page_size: 1,
            ..Default::default()
        })
        .await
        .expect("history")
        .into_inner()
        .history
        .unwrap()
        .events
        .remove(0);
    let Some(Attributes::WorkflowExecutionTerminatedEventAttributes(terminated)) = last.attributes
    else {
        panic!("the last event is not a termination: {last:?}");
    };
    terminated
}

/// Runs one workflow of `namespace` through workflow tasks of 10 markers each until it closes or
/// `tasks` tasks completed; returns its status, its history length, whether any of its
/// WorkflowTaskStarted events suggested continue-as-new, and its workflow ID.
async fn grow(
    raw: &mut WorkflowServiceClient<Channel>,
    namespace: &str,
    tasks: usize,
) -> (i32, i64, bool, String) {
    let task_queue = unique("limits-ns");
    let workflow_id = unique("limits-ns");
    raw.start_workflow_execution(ws::StartWorkflowExecutionRequest {
        namespace: namespace.into(),
        ..start_request(&workflow_id, "Grows", &task_queue)
    })
    .await
    .expect("start");
    let mut suggested = false;
    for _ in 0..tasks {
        let task = raw
            .poll_workflow_task_queue(ws::PollWorkflowTaskQueueRequest {
                namespace: namespace.into(),
                task_queue: queue(&task_queue),
                identity: "limits-test".into(),
                ..Default::default()
            })
            .await
            .expect("poll")
            .into_inner();
        let started = task.history.unwrap().events.pop().unwrap();
        if let Some(Attributes::WorkflowTaskStartedEventAttributes(a)) = started.attributes {
            suggested |= a.suggest_continue_as_new;
        }
        raw.respond_workflow_task_completed(ws::RespondWorkflowTaskCompletedRequest {
            namespace: namespace.into(),
            task_token: task.task_token,
            commands: vec![marker(); 10],
            ..Default::default()
        })
        .await
        .expect("complete");
        let info = describe(raw, namespace, &workflow_id).await;
        if info.status != WorkflowExecutionStatus::Running as i32 {
            return (info.status, info.history_length, suggested, workflow_id);
        }
        raw.signal_workflow_execution(ws::SignalWorkflowExecutionRequest {
            namespace: namespace.into(),
            workflow_execution: execution(&workflow_id, ""),
            signal_name: "more".into(),
            request_id: unique("signal"),
            ..Default::default()
        })
        .await
        .expect("signal");
    }
    let info = describe(raw, namespace, &workflow_id).await;
    (info.status, info.history_length, suggested, workflow_id)
}

async fn describe(
    raw: &mut WorkflowServiceClient<Channel>,
    namespace: &str,
    workflow_id: &str,
) -> chronicle_proto::temporal::api::workflow::v1::WorkflowExecutionInfo {
    raw.describe_workflow_execution(ws::DescribeWorkflowExecutionRequest {
        namespace: namespace.into(),
        execution: execution(workflow_id, ""),
    })
    .await
    .expect("describe")
    .into_inner()
    .workflow_execution_info
    .unwrap()
}

/// `--dynamic-config-value 'limit.historyCount.error=[{"value": 40, "constraints":
/// {"namespace": "small"}}]'` and the same for the suggestion: the limits of one namespace,
/// while the others keep Temporal's defaults.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_limits_can_be_set_for_one_namespace() {
    let server = start_server_with(|config| {
        config.namespaces = vec!["small".into()];
        config.history_limits.namespaces.insert(
            "small".into(),
            chronicle_types::limits::HistoryLimits {
                suggest_events: 20,
                max_events: 40,
                ..Default::default()
            },
        );
    })
    .await;
    let mut raw = raw_client(&server.server.url()).await;

    // Each task adds about 15 events (10 markers, the signal, the task's own events).
    let (status, length, suggested, workflow_id) = grow(&mut raw, "small", 10).await;
    assert_eq!(status, WorkflowExecutionStatus::Terminated as i32);
    assert!((40..70).contains(&length), "terminated at {length} events");
    assert!(
        suggested,
        "continue-as-new was not suggested past 20 events"
    );
    let terminated = termination(&mut raw, "small", &workflow_id).await;
    assert_eq!(terminated.reason, "Workflow history count exceeds limit.");

    let (status, length, suggested, _) = grow(&mut raw, "default", 10).await;
    assert_eq!(
        status,
        WorkflowExecutionStatus::Running as i32,
        "at {length} events"
    );
    assert!(length > 100, "{length}");
    assert!(
        !suggested,
        "the default namespace suggests only past 4,096 events"
    );
}
