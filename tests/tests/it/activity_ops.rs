//! Activity pause, unpause and reset, and eager workflow start, on the raw protocol (the Rust
//! SDK's client does not expose these calls): what a worker sees of each, and what describe and
//! history show.

use std::time::Duration;

use chronicle_proto::temporal::api::command::v1::{
    Command, ScheduleActivityTaskCommandAttributes, command,
};
use chronicle_proto::temporal::api::common::v1::{ActivityType, RetryPolicy};
use chronicle_proto::temporal::api::enums::v1::{
    CommandType, EventType, PendingActivityState, WorkflowExecutionStatus,
};
use chronicle_proto::temporal::api::failure::v1::Failure;
use chronicle_proto::temporal::api::history::v1::history_event::Attributes;
use chronicle_proto::temporal::api::workflow::v1::PendingActivityInfo;
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use chronicle_proto::temporal::api::workflowservice::v1::workflow_service_client::WorkflowServiceClient;
use tonic::transport::Channel;

use crate::common::*;

type Raw = WorkflowServiceClient<Channel>;

fn seconds(s: i64) -> chronicle_proto::wkt::Duration {
    chronicle_proto::wkt::Duration {
        seconds: s,
        nanos: 0,
    }
}

fn command(attributes: command::Attributes, command_type: CommandType) -> Command {
    Command {
        command_type: command_type as i32,
        attributes: Some(attributes),
        ..Default::default()
    }
}

/// Polls the next workflow task of `tq` and answers it with `commands`.
async fn decide(raw: &mut Raw, tq: &str, commands: Vec<Command>) {
    let task = raw
        .poll_workflow_task_queue(poll(tq))
        .await
        .expect("poll")
        .into_inner();
    assert!(!task.task_token.is_empty(), "a workflow task");
    raw.respond_workflow_task_completed(ws::RespondWorkflowTaskCompletedRequest {
        namespace: "default".into(),
        task_token: task.task_token,
        commands,
        identity: "worker".into(),
        ..Default::default()
    })
    .await
    .expect("complete workflow task");
}

/// An activity poll that gives up after `wait` (None: nothing came).
async fn poll_activity(
    raw: &mut Raw,
    tq: &str,
    wait: Duration,
) -> Option<ws::PollActivityTaskQueueResponse> {
    let mut request = tonic::Request::new(ws::PollActivityTaskQueueRequest {
        namespace: "default".into(),
        task_queue: queue(tq),
        identity: "worker".into(),
        ..Default::default()
    });
    request.set_timeout(wait);
    match raw.poll_activity_task_queue(request).await {
        Ok(r) => Some(r.into_inner()).filter(|t| !t.task_token.is_empty()),
        Err(s)
            if matches!(
                s.code(),
                tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
            ) =>
        {
            None
        }
        Err(s) => panic!("activity poll: {s:?}"),
    }
}

async fn pending(raw: &mut Raw, workflow_id: &str) -> PendingActivityInfo {
    let d = raw
        .describe_workflow_execution(ws::DescribeWorkflowExecutionRequest {
            namespace: "default".into(),
            execution: execution(workflow_id, ""),
        })
        .await
        .expect("describe")
        .into_inner();
    d.pending_activities
        .into_iter()
        .next()
        .expect("a pending activity")
}

async fn fail(raw: &mut Raw, token: Vec<u8>) {
    raw.respond_activity_task_failed(ws::RespondActivityTaskFailedRequest {
        namespace: "default".into(),
        task_token: token,
        failure: Some(Failure {
            message: "boom".into(),
            ..Default::default()
        }),
        identity: "worker".into(),
        ..Default::default()
    })
    .await
    .expect("fail activity");
}

async fn heartbeat(raw: &mut Raw, token: Vec<u8>) -> ws::RecordActivityTaskHeartbeatResponse {
    raw.record_activity_task_heartbeat(ws::RecordActivityTaskHeartbeatRequest {
        namespace: "default".into(),
        task_token: token,
        identity: "worker".into(),
        ..Default::default()
    })
    .await
    .expect("heartbeat")
    .into_inner()
}

fn by_id(
    workflow_id: &str,
) -> Option<chronicle_proto::temporal::api::common::v1::WorkflowExecution> {
    execution(workflow_id, "")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_activity_waits_for_unpause_and_reset_starts_it_over() {
    let server = start_server().await;
    let mut raw = raw_client(&server.server.url()).await;
    let tq = unique("tq");
    let id = unique("pause");
    raw.start_workflow_execution(start_request(&id, "P", &tq))
        .await
        .expect("start");
    let schedule = ScheduleActivityTaskCommandAttributes {
        activity_id: "a".into(),
        activity_type: Some(ActivityType {
            name: "Work".into(),
        }),
        task_queue: queue(&tq),
        start_to_close_timeout: Some(seconds(30)),
        // Retries would come after 10 s: every attempt seen here is dispatched by an operation.
        retry_policy: Some(RetryPolicy {
            initial_interval: Some(seconds(10)),
            backoff_coefficient: 1.0,
            ..Default::default()
        }),
        ..Default::default()
    };
    decide(
        &mut raw,
        &tq,
        vec![command(
            command::Attributes::ScheduleActivityTaskCommandAttributes(schedule),
            CommandType::ScheduleActivityTask,
        )],
    )
    .await;
    let first = poll_activity(&mut raw, &tq, Duration::from_secs(10))
        .await
        .expect("attempt 1");
    assert_eq!(first.attempt, 1);

    raw.pause_activity(ws::PauseActivityRequest {
        namespace: "default".into(),
        execution: by_id(&id),
        identity: "operator".into(),
        activity: Some(ws::pause_activity_request::Activity::Id("a".into())),
        reason: "investigating".into(),
        request_id: "p1".into(),
    })
    .await
    .expect("pause");
    // The running attempt learns of the pause from its heartbeat; describe shows it asked.
    assert!(
        heartbeat(&mut raw, first.task_token.clone())
            .await
            .activity_paused
    );
    let a = pending(&mut raw, &id).await;
    assert_eq!(a.state, PendingActivityState::PauseRequested as i32);
    assert!(a.paused);
    // It fails: the next attempt waits for the unpause, with no backoff and no dispatch.
    fail(&mut raw, first.task_token).await;
    let a = pending(&mut raw, &id).await;
    assert_eq!(a.state, PendingActivityState::Paused as i32);
    assert_eq!(a.attempt, 2);
    assert!(a.next_attempt_schedule_time.is_none());
    assert!(
        poll_activity(&mut raw, &tq, Duration::from_millis(1500))
            .await
            .is_none()
    );

    raw.unpause_activity(ws::UnpauseActivityRequest {
        namespace: "default".into(),
        execution: by_id(&id),
        activity: Some(ws::unpause_activity_request::Activity::Id("a".into())),
        ..Default::default()
    })
    .await
    .expect("unpause");
    let second = poll_activity(&mut raw, &tq, Duration::from_secs(10))
        .await
        .expect("attempt 2 at once");
    assert_eq!(second.attempt, 2);
    assert!(
        !heartbeat(&mut raw, second.task_token.clone())
            .await
            .activity_paused
    );
    fail(&mut raw, second.task_token).await;
    assert_eq!(pending(&mut raw, &id).await.attempt, 3);

    // Reset: attempt 1 again, dispatched now rather than after the 10 s backoff.
    raw.reset_activity(ws::ResetActivityRequest {
        namespace: "default".into(),
        execution: by_id(&id),
        activity: Some(ws::reset_activity_request::Activity::Type("Work".into())),
        ..Default::default()
    })
    .await
    .expect("reset");
    let again = poll_activity(&mut raw, &tq, Duration::from_secs(5))
        .await
        .expect("reset attempt");
    assert_eq!(again.attempt, 1);
    raw.respond_activity_task_completed(ws::RespondActivityTaskCompletedRequest {
        namespace: "default".into(),
        task_token: again.task_token,
        result: payloads("done"),
        identity: "worker".into(),
        ..Default::default()
    })
    .await
    .expect("complete");
    let events = workflow_history(&mut raw, &id).await;
    let started = events
        .iter()
        .find(|e| e.event_type == EventType::ActivityTaskStarted as i32)
        .expect("started event");
    let Some(Attributes::ActivityTaskStartedEventAttributes(s)) = &started.attributes else {
        panic!("started attributes");
    };
    assert_eq!(s.attempt, 1);
    assert_eq!(
        s.last_failure.as_ref().map(|f| f.message.as_str()),
        Some("boom")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eager_workflow_start_hands_back_the_first_task() {
    let server = start_server().await;
    let mut raw = raw_client(&server.server.url()).await;
    let tq = unique("tq");
    let id = unique("eager");
    let mut request = start_request(&id, "P", &tq);
    request.request_eager_execution = true;
    request.identity = "eager-worker".into();
    let started = raw
        .start_workflow_execution(request.clone())
        .await
        .expect("start")
        .into_inner();
    let task = started
        .eager_workflow_task
        .expect("the first workflow task");
    assert_eq!(task.started_event_id, 3);
    assert_eq!(task.attempt, 1);
    let events = task.history.clone().unwrap_or_default().events;
    let types: Vec<i32> = events.iter().map(|e| e.event_type).collect();
    assert_eq!(
        types,
        [
            EventType::WorkflowExecutionStarted as i32,
            EventType::WorkflowTaskScheduled as i32,
            EventType::WorkflowTaskStarted as i32
        ]
    );
    // A retried start answers the same task; the queue never sees it.
    let again = raw
        .start_workflow_execution(request)
        .await
        .expect("retried start")
        .into_inner();
    assert_eq!(again.run_id, started.run_id);
    assert_eq!(
        again.eager_workflow_task.map(|t| t.started_event_id),
        Some(3)
    );
    let mut short_poll = tonic::Request::new(poll(&tq));
    short_poll.set_timeout(Duration::from_millis(1500));
    if let Ok(r) = raw.poll_workflow_task_queue(short_poll).await {
        assert!(
            r.into_inner().task_token.is_empty(),
            "the eager task went through matching"
        );
    }
    raw.respond_workflow_task_completed(ws::RespondWorkflowTaskCompletedRequest {
        namespace: "default".into(),
        task_token: task.task_token,
        commands: vec![command(
            command::Attributes::CompleteWorkflowExecutionCommandAttributes(Default::default()),
            CommandType::CompleteWorkflowExecution,
        )],
        identity: "eager-worker".into(),
        ..Default::default()
    })
    .await
    .expect("complete the eager task");
    let info = raw
        .describe_workflow_execution(ws::DescribeWorkflowExecutionRequest {
            namespace: "default".into(),
            execution: by_id(&id),
        })
        .await
        .expect("describe")
        .into_inner()
        .workflow_execution_info
        .unwrap();
    assert_eq!(info.status, WorkflowExecutionStatus::Completed as i32);
}
