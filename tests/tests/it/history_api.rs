//! The raw workflow-task protocol and history reads, without an SDK in between.

use std::time::Duration;

use chronicle_proto::temporal::api::command::v1::ScheduleActivityTaskCommandAttributes;
use chronicle_proto::temporal::api::command::v1::{Command, StartTimerCommandAttributes, command};
use chronicle_proto::temporal::api::common::v1::{ActivityType, WorkflowExecution, WorkflowType};
use chronicle_proto::temporal::api::enums::v1::{CommandType, EventType, HistoryEventFilterType};
use chronicle_proto::temporal::api::taskqueue::v1::TaskQueue;
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use tonic::Code;

use crate::common::*;

async fn stored_len(
    raw: &mut ws::workflow_service_client::WorkflowServiceClient<tonic::transport::Channel>,
    execution: &WorkflowExecution,
) -> usize {
    let request = ws::GetWorkflowExecutionHistoryRequest {
        namespace: "default".into(),
        execution: Some(execution.clone()),
        ..Default::default()
    };
    raw.get_workflow_execution_history(request)
        .await
        .expect("history")
        .into_inner()
        .history
        .unwrap()
        .events
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflow_task_protocol_timers_and_history_reads() {
    let server = start_server().await;
    let mut raw = raw_client(&server.server.url()).await;
    let task_queue = unique("raw");
    let workflow_id = unique("raw");
    let execution = WorkflowExecution {
        workflow_id: workflow_id.clone(),
        run_id: String::new(),
    };
    raw.start_workflow_execution(ws::StartWorkflowExecutionRequest {
        namespace: "default".into(),
        workflow_id: workflow_id.clone(),
        workflow_type: Some(WorkflowType { name: "Raw".into() }),
        task_queue: Some(TaskQueue {
            name: task_queue.clone(),
            ..Default::default()
        }),
        request_id: "raw-1".into(),
        ..Default::default()
    })
    .await
    .expect("start");

    let task = raw
        .poll_workflow_task_queue(poll(&task_queue))
        .await
        .expect("poll")
        .into_inner();
    assert_eq!(task.started_event_id, 3);
    let events: Vec<i32> = task
        .history
        .as_ref()
        .unwrap()
        .events
        .iter()
        .map(|e| e.event_type)
        .collect();
    assert_eq!(
        events,
        vec![
            EventType::WorkflowExecutionStarted as i32,
            EventType::WorkflowTaskScheduled as i32,
            EventType::WorkflowTaskStarted as i32
        ]
    );

    // A bad command fails the task (WorkflowTaskFailed) and the worker gets InvalidArgument.
    let bad = Command {
        command_type: CommandType::ScheduleActivityTask as i32,
        attributes: Some(command::Attributes::ScheduleActivityTaskCommandAttributes(
            ScheduleActivityTaskCommandAttributes {
                activity_id: "a".into(),
                activity_type: Some(ActivityType { name: "A".into() }),
                ..Default::default()
            },
        )),
        ..Default::default()
    };
    let err = raw
        .respond_workflow_task_completed(ws::RespondWorkflowTaskCompletedRequest {
            namespace: "default".into(),
            task_token: task.task_token.clone(),
            commands: vec![bad],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    // The failed attempt's token is now stale.
    let err = raw
        .respond_workflow_task_completed(ws::RespondWorkflowTaskCompletedRequest {
            namespace: "default".into(),
            task_token: task.task_token.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    // Attempt 2 is transient: its Scheduled/Started events (5, 6) end the poll response but
    // are not stored; failing it again adds nothing to the history.
    let task = raw
        .poll_workflow_task_queue(poll(&task_queue))
        .await
        .expect("poll")
        .into_inner();
    assert_eq!(task.attempt, 2);
    let ids: Vec<i64> = task
        .history
        .as_ref()
        .unwrap()
        .events
        .iter()
        .map(|e| e.event_id)
        .collect();
    assert_eq!(ids, vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(task.started_event_id, 6);
    assert_eq!(
        stored_len(&mut raw, &execution).await,
        4,
        "WorkflowTaskFailed is the last stored event"
    );
    raw.respond_workflow_task_failed(ws::RespondWorkflowTaskFailedRequest {
        namespace: "default".into(),
        task_token: task.task_token.clone(),
        identity: "raw-test".into(),
        ..Default::default()
    })
    .await
    .expect("fail attempt 2");
    assert_eq!(
        stored_len(&mut raw, &execution).await,
        4,
        "a transient attempt's failure is not stored"
    );

    // Attempt 3 starts a 300 ms timer; completing it stores its Scheduled/Started events.
    let task = raw
        .poll_workflow_task_queue(poll(&task_queue))
        .await
        .expect("poll")
        .into_inner();
    assert_eq!(task.attempt, 3);
    assert_eq!(task.started_event_id, 6);
    let timer = Command {
        command_type: CommandType::StartTimer as i32,
        attributes: Some(command::Attributes::StartTimerCommandAttributes(
            StartTimerCommandAttributes {
                timer_id: "t1".into(),
                start_to_fire_timeout: Some(chronicle_types::time::duration_from_millis(300)),
            },
        )),
        ..Default::default()
    };
    raw.respond_workflow_task_completed(ws::RespondWorkflowTaskCompletedRequest {
        namespace: "default".into(),
        task_token: task.task_token.clone(),
        commands: vec![timer],
        ..Default::default()
    })
    .await
    .expect("complete");
    let fired_at = std::time::Instant::now();
    let task = raw
        .poll_workflow_task_queue(poll(&task_queue))
        .await
        .expect("poll")
        .into_inner();
    assert!(fired_at.elapsed() < Duration::from_secs(3));
    let last_types: Vec<i32> = task
        .history
        .as_ref()
        .unwrap()
        .events
        .iter()
        .rev()
        .take(3)
        .map(|e| e.event_type)
        .collect();
    assert_eq!(
        last_types,
        vec![
            EventType::WorkflowTaskStarted as i32,
            EventType::WorkflowTaskScheduled as i32,
            EventType::TimerFired as i32
        ]
    );

    // Complete the workflow.
    let complete = Command {
        command_type: CommandType::CompleteWorkflowExecution as i32,
        attributes: Some(
            command::Attributes::CompleteWorkflowExecutionCommandAttributes(Default::default()),
        ),
        ..Default::default()
    };
    raw.respond_workflow_task_completed(ws::RespondWorkflowTaskCompletedRequest {
        namespace: "default".into(),
        task_token: task.task_token.clone(),
        commands: vec![complete],
        ..Default::default()
    })
    .await
    .expect("complete");

    // Paginated history: pages of 2 cover every event exactly once, in order.
    let mut token = Vec::new();
    let mut ids = Vec::new();
    loop {
        let page = raw
            .get_workflow_execution_history(ws::GetWorkflowExecutionHistoryRequest {
                namespace: "default".into(),
                execution: Some(execution.clone()),
                maximum_page_size: 2,
                next_page_token: token.clone(),
                ..Default::default()
            })
            .await
            .expect("page")
            .into_inner();
        let events = page.history.unwrap().events;
        assert!(events.len() <= 2);
        ids.extend(events.iter().map(|e| e.event_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(ids, (1..=ids.len() as i64).collect::<Vec<_>>());
    assert!(ids.len() >= 12, "whole history read: {ids:?}");

    // Reverse order.
    let reverse = raw
        .get_workflow_execution_history_reverse(ws::GetWorkflowExecutionHistoryReverseRequest {
            namespace: "default".into(),
            execution: Some(execution.clone()),
            maximum_page_size: 3,
            next_page_token: Vec::new(),
        })
        .await
        .expect("reverse")
        .into_inner();
    let rev_ids: Vec<i64> = reverse
        .history
        .unwrap()
        .events
        .iter()
        .map(|e| e.event_id)
        .collect();
    let n = ids.len() as i64;
    assert_eq!(rev_ids, vec![n, n - 1, n - 2]);

    // Close-event filter returns only the completion event.
    let close = raw
        .get_workflow_execution_history(ws::GetWorkflowExecutionHistoryRequest {
            namespace: "default".into(),
            execution: Some(execution.clone()),
            wait_new_event: true,
            history_event_filter_type: HistoryEventFilterType::CloseEvent as i32,
            ..Default::default()
        })
        .await
        .expect("close event")
        .into_inner();
    let events = close.history.unwrap().events;
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0].event_type,
        EventType::WorkflowExecutionCompleted as i32
    );

    let described = raw
        .describe_workflow_execution(ws::DescribeWorkflowExecutionRequest {
            namespace: "default".into(),
            execution: Some(execution),
        })
        .await
        .expect("describe")
        .into_inner();
    let info = described.workflow_execution_info.unwrap();
    assert_eq!(info.history_length, n);
    assert!(info.close_time.is_some());
    server.server.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_queue_gets_new_events_and_falls_back_to_the_normal_queue() {
    use chronicle_proto::temporal::api::enums::v1::{TaskQueueKind, TimeoutType};
    use chronicle_proto::temporal::api::history::v1::history_event::Attributes;
    use chronicle_proto::temporal::api::taskqueue::v1::StickyExecutionAttributes;

    let server = start_server().await;
    let mut raw = raw_client(&server.server.url()).await;
    let task_queue = unique("normal");
    let sticky_queue = unique("sticky");
    let workflow_id = unique("sticky");
    raw.start_workflow_execution(ws::StartWorkflowExecutionRequest {
        namespace: "default".into(),
        workflow_id: workflow_id.clone(),
        workflow_type: Some(WorkflowType {
            name: "Sticky".into(),
        }),
        task_queue: Some(TaskQueue {
            name: task_queue.clone(),
            ..Default::default()
        }),
        request_id: "s-1".into(),
        ..Default::default()
    })
    .await
    .expect("start");
    let sticky = |seconds: i64| {
        Some(StickyExecutionAttributes {
            worker_task_queue: Some(TaskQueue {
                name: sticky_queue.clone(),
                kind: TaskQueueKind::Sticky as i32,
                normal_name: task_queue.clone(),
            }),
            schedule_to_start_timeout: Some(chronicle_types::time::duration_from_millis(
                seconds * 1000,
            )),
        })
    };
    let signal = |n: &str| ws::SignalWorkflowExecutionRequest {
        namespace: "default".into(),
        workflow_execution: Some(WorkflowExecution {
            workflow_id: workflow_id.clone(),
            run_id: String::new(),
        }),
        signal_name: n.into(),
        ..Default::default()
    };
    let task = raw
        .poll_workflow_task_queue(poll(&task_queue))
        .await
        .expect("poll")
        .into_inner();
    raw.respond_workflow_task_completed(ws::RespondWorkflowTaskCompletedRequest {
        namespace: "default".into(),
        task_token: task.task_token,
        sticky_attributes: sticky(30),
        ..Default::default()
    })
    .await
    .expect("complete");

    // The next task goes to the sticky queue and carries only the events after the last task.
    // The worker polls its sticky queue before the task exists, as SDK workers do (a sticky
    // queue nobody polls is treated as gone).
    let mut sticky_poller = raw.clone();
    let sticky_poll = {
        let request = poll(&sticky_queue);
        tokio::spawn(async move { sticky_poller.poll_workflow_task_queue(request).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    raw.signal_workflow_execution(signal("one"))
        .await
        .expect("signal");
    let task = sticky_poll
        .await
        .expect("poll task")
        .expect("sticky poll")
        .into_inner();
    let ids: Vec<i64> = task
        .history
        .as_ref()
        .unwrap()
        .events
        .iter()
        .map(|e| e.event_id)
        .collect();
    assert_eq!(task.previous_started_event_id, 3);
    assert_eq!(
        ids,
        vec![4, 5, 6, 7],
        "completed, signal, scheduled, started only"
    );
    raw.respond_workflow_task_completed(ws::RespondWorkflowTaskCompletedRequest {
        namespace: "default".into(),
        task_token: task.task_token,
        sticky_attributes: sticky(1),
        ..Default::default()
    })
    .await
    .expect("complete");

    // Nobody polls the sticky queue: after its 1 s schedule-to-start timeout the task moves to
    // the normal queue, with the full history.
    raw.signal_workflow_execution(signal("two"))
        .await
        .expect("signal");
    let task = raw
        .poll_workflow_task_queue(poll(&task_queue))
        .await
        .expect("normal poll")
        .into_inner();
    let events = task.history.unwrap().events;
    assert_eq!(
        events.first().unwrap().event_id,
        1,
        "full history after falling back"
    );
    let timed_out = events
        .iter()
        .find(|e| e.event_type == EventType::WorkflowTaskTimedOut as i32)
        .expect("timed out event");
    let Some(Attributes::WorkflowTaskTimedOutEventAttributes(a)) = &timed_out.attributes else {
        panic!("attributes")
    };
    assert_eq!(a.timeout_type, TimeoutType::ScheduleToStart as i32);
    server.server.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sticky_queue_nobody_polls_sends_its_task_to_the_normal_queue_at_once() {
    use chronicle_proto::temporal::api::enums::v1::TaskQueueKind;
    use chronicle_proto::temporal::api::taskqueue::v1::StickyExecutionAttributes;

    let server = start_server().await;
    let mut raw = raw_client(&server.server.url()).await;
    let task_queue = unique("normal");
    let workflow_id = unique("sticky-gone");
    raw.start_workflow_execution(start_request(&workflow_id, "Sticky", &task_queue))
        .await
        .expect("start");
    let task = raw
        .poll_workflow_task_queue(poll(&task_queue))
        .await
        .expect("poll")
        .into_inner();
    // The worker names a sticky queue it never polls (it died, or the server restarted and has
    // not heard from it), with a long schedule-to-start timeout.
    raw.respond_workflow_task_completed(ws::RespondWorkflowTaskCompletedRequest {
        namespace: "default".into(),
        task_token: task.task_token,
        sticky_attributes: Some(StickyExecutionAttributes {
            worker_task_queue: Some(TaskQueue {
                name: unique("sticky-never-polled"),
                kind: TaskQueueKind::Sticky as i32,
                normal_name: task_queue.clone(),
            }),
            schedule_to_start_timeout: Some(chronicle_types::time::duration_from_millis(60_000)),
        }),
        ..Default::default()
    })
    .await
    .expect("complete");
    raw.signal_workflow_execution(ws::SignalWorkflowExecutionRequest {
        namespace: "default".into(),
        workflow_execution: execution(&workflow_id, ""),
        signal_name: "wake".into(),
        ..Default::default()
    })
    .await
    .expect("signal");
    // The task is on the normal queue at once (the poll would otherwise end empty after the
    // server's 5 s poll wait), with the full history and no timeout event.
    let task = raw
        .poll_workflow_task_queue(poll(&task_queue))
        .await
        .expect("normal poll")
        .into_inner();
    let events = task.history.expect("history").events;
    assert_eq!(events.first().map(|e| e.event_id), Some(1), "full history");
    assert!(
        events
            .iter()
            .all(|e| e.event_type != EventType::WorkflowTaskTimedOut as i32),
        "moved without a timeout: {events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e.event_type == EventType::WorkflowExecutionSignaled as i32),
        "the signal is in the task"
    );
    server.server.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_worker_moves_sticky_tasks_to_the_normal_queue_at_once() {
    use chronicle_proto::temporal::api::enums::v1::TaskQueueKind;
    use chronicle_proto::temporal::api::taskqueue::v1::StickyExecutionAttributes;

    let server = start_server().await;
    let mut raw = raw_client(&server.server.url()).await;
    let task_queue = unique("normal");
    let workflow_id = unique("sticky-shutdown");
    raw.start_workflow_execution(ws::StartWorkflowExecutionRequest {
        namespace: "default".into(),
        workflow_id: workflow_id.clone(),
        workflow_type: Some(WorkflowType { name: "S".into() }),
        task_queue: Some(TaskQueue {
            name: task_queue.clone(),
            ..Default::default()
        }),
        request_id: unique("req"),
        ..Default::default()
    })
    .await
    .expect("start");
    // Stickiness with a schedule-to-start timeout far longer than the test may take: only
    // ShutdownWorker can move the tasks in time.
    let sticky = |queue: &str| {
        Some(StickyExecutionAttributes {
            worker_task_queue: Some(TaskQueue {
                name: queue.to_string(),
                kind: TaskQueueKind::Sticky as i32,
                normal_name: task_queue.clone(),
            }),
            schedule_to_start_timeout: Some(chronicle_types::time::duration_from_millis(600_000)),
        })
    };
    let signal = || ws::SignalWorkflowExecutionRequest {
        namespace: "default".into(),
        workflow_execution: Some(WorkflowExecution {
            workflow_id: workflow_id.clone(),
            run_id: String::new(),
        }),
        signal_name: "poke".into(),
        ..Default::default()
    };
    let shutdown = |queue: &str| ws::ShutdownWorkerRequest {
        namespace: "default".into(),
        sticky_task_queue: queue.to_string(),
        identity: "raw-test".into(),
        reason: "test".into(),
        ..Default::default()
    };
    let poll_normal_quickly =
        |mut raw: ws::workflow_service_client::WorkflowServiceClient<tonic::transport::Channel>,
         queue: String| async move {
            tokio::time::timeout(
                Duration::from_secs(10),
                raw.poll_workflow_task_queue(poll(&queue)),
            )
            .await
            .expect("the task reached the normal queue without waiting for the sticky timeout")
            .expect("poll")
            .into_inner()
        };

    // 1. A task already waiting on the sticky queue when the worker shuts down.
    let first_sticky = unique("sticky-a");
    let task = raw
        .poll_workflow_task_queue(poll(&task_queue))
        .await
        .expect("poll")
        .into_inner();
    raw.respond_workflow_task_completed(ws::RespondWorkflowTaskCompletedRequest {
        namespace: "default".into(),
        task_token: task.task_token,
        sticky_attributes: sticky(&first_sticky),
        ..Default::default()
    })
    .await
    .expect("complete");
    raw.signal_workflow_execution(signal())
        .await
        .expect("signal");
    tokio::time::sleep(Duration::from_millis(200)).await;
    raw.shutdown_worker(shutdown(&first_sticky))
        .await
        .expect("shutdown worker");
    let task = poll_normal_quickly(raw.clone(), task_queue.clone()).await;
    let events = task.history.as_ref().unwrap().events.clone();
    assert_eq!(
        events[0].event_id, 1,
        "the full history on the normal queue"
    );
    assert!(
        !events
            .iter()
            .any(|e| e.event_type == EventType::WorkflowTaskTimedOut as i32),
        "moved, not timed out"
    );

    // 2. A worker that shut down before its next task was even scheduled.
    let second_sticky = unique("sticky-b");
    raw.respond_workflow_task_completed(ws::RespondWorkflowTaskCompletedRequest {
        namespace: "default".into(),
        task_token: task.task_token,
        sticky_attributes: sticky(&second_sticky),
        ..Default::default()
    })
    .await
    .expect("complete");
    raw.shutdown_worker(shutdown(&second_sticky))
        .await
        .expect("shutdown worker");
    raw.signal_workflow_execution(signal())
        .await
        .expect("signal");
    let task = poll_normal_quickly(raw.clone(), task_queue.clone()).await;
    assert_eq!(task.history.as_ref().unwrap().events[0].event_id, 1);
}
