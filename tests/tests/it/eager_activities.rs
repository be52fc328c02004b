//! Eager activity execution on the raw protocol: a workflow task completion that schedules an
//! activity with `request_eager_execution` on the run's own task queue gets the activity task
//! back, already started, in `RespondWorkflowTaskCompletedResponse.activity_tasks`.

use std::time::Duration;

use chronicle_proto::temporal::api::command::v1::{
    Command, ScheduleActivityTaskCommandAttributes, command,
};
use chronicle_proto::temporal::api::common::v1::{ActivityType, RetryPolicy};
use chronicle_proto::temporal::api::enums::v1::{
    CommandType, EventType, PendingActivityState, WorkflowExecutionStatus,
};
use chronicle_proto::temporal::api::history::v1::HistoryEvent;
use chronicle_proto::temporal::api::history::v1::history_event::Attributes;
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use chronicle_proto::temporal::api::workflowservice::v1::workflow_service_client::WorkflowServiceClient;
use tonic::transport::Channel;

use crate::common::*;

const WORKER: &str = "eager-worker";

fn seconds(s: i64) -> chronicle_proto::wkt::Duration {
    chronicle_proto::wkt::Duration {
        seconds: s,
        nanos: 0,
    }
}

fn schedule(
    activity_id: &str,
    task_queue: &str,
    eager: bool,
    start_to_close: i64,
    retry: RetryPolicy,
) -> Command {
    Command {
        command_type: CommandType::ScheduleActivityTask as i32,
        attributes: Some(command::Attributes::ScheduleActivityTaskCommandAttributes(
            ScheduleActivityTaskCommandAttributes {
                activity_id: activity_id.into(),
                activity_type: Some(ActivityType {
                    name: "Work".into(),
                }),
                task_queue: queue(task_queue),
                input: payloads(activity_id),
                start_to_close_timeout: Some(seconds(start_to_close)),
                // Would fire long before the test ends if it were armed for an eager activity.
                schedule_to_start_timeout: Some(seconds(1)),
                retry_policy: Some(retry),
                request_eager_execution: eager,
                ..Default::default()
            },
        )),
        ..Default::default()
    }
}

fn one_attempt() -> RetryPolicy {
    RetryPolicy {
        maximum_attempts: 1,
        ..Default::default()
    }
}

fn complete_workflow() -> Command {
    Command {
        command_type: CommandType::CompleteWorkflowExecution as i32,
        attributes: Some(
            command::Attributes::CompleteWorkflowExecutionCommandAttributes(Default::default()),
        ),
        ..Default::default()
    }
}

async fn start(raw: &mut WorkflowServiceClient<Channel>, workflow_id: &str, tq: &str) -> String {
    raw.start_workflow_execution(start_request(workflow_id, "P", tq))
        .await
        .expect("start")
        .into_inner()
        .run_id
}

/// Polls the next workflow task and answers it with `commands`.
async fn decide(
    raw: &mut WorkflowServiceClient<Channel>,
    tq: &str,
    commands: Vec<Command>,
) -> ws::RespondWorkflowTaskCompletedResponse {
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
        identity: WORKER.into(),
        ..Default::default()
    })
    .await
    .expect("complete workflow task")
    .into_inner()
}

/// An activity poll of `tq` that gives up after `wait` (None: nothing came).
async fn poll_activity(
    raw: &mut WorkflowServiceClient<Channel>,
    tq: &str,
    wait: Duration,
) -> Option<ws::PollActivityTaskQueueResponse> {
    let mut request = tonic::Request::new(ws::PollActivityTaskQueueRequest {
        namespace: "default".into(),
        task_queue: queue(tq),
        identity: "poller".into(),
        ..Default::default()
    });
    request.set_timeout(wait);
    match raw.poll_activity_task_queue(request).await {
        Ok(r) => Some(r.into_inner()).filter(|t| !t.task_token.is_empty()),
        // The client's deadline ends the poll (DeadlineExceeded, or Cancelled by tonic).
        Err(status)
            if matches!(
                status.code(),
                tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
            ) =>
        {
            None
        }
        Err(status) => panic!("activity poll: {status:?}"),
    }
}

async fn complete_activity(raw: &mut WorkflowServiceClient<Channel>, token: Vec<u8>, result: &str) {
    raw.respond_activity_task_completed(ws::RespondActivityTaskCompletedRequest {
        namespace: "default".into(),
        task_token: token,
        result: payloads(result),
        identity: WORKER.into(),
        ..Default::default()
    })
    .await
    .expect("complete activity");
}

fn types(events: &[HistoryEvent]) -> Vec<EventType> {
    events
        .iter()
        .map(|e| EventType::try_from(e.event_type).unwrap())
        .collect()
}

async fn status(raw: &mut WorkflowServiceClient<Channel>, workflow_id: &str) -> i32 {
    raw.describe_workflow_execution(ws::DescribeWorkflowExecutionRequest {
        namespace: "default".into(),
        execution: execution(workflow_id, ""),
    })
    .await
    .expect("describe")
    .into_inner()
    .workflow_execution_info
    .unwrap()
    .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eager_activity_comes_back_with_the_completion() {
    let server = start_server().await;
    let mut raw = raw_client(&server.server.url()).await;
    let tq = unique("tq");
    let id = unique("eager");
    let run_id = start(&mut raw, &id, &tq).await;

    let retry = RetryPolicy {
        maximum_attempts: 3,
        ..Default::default()
    };
    let response = decide(&mut raw, &tq, vec![schedule("a1", "", true, 30, retry)]).await;
    assert_eq!(response.activity_tasks.len(), 1, "{response:?}");
    let task = response.activity_tasks[0].clone();
    assert!(!task.task_token.is_empty());
    assert_eq!(task.activity_id, "a1");
    assert_eq!(task.activity_type.as_ref().unwrap().name, "Work");
    assert_eq!(task.input, payloads("a1"));
    assert_eq!(task.attempt, 1);
    assert_eq!(task.workflow_namespace, "default");
    assert_eq!(task.workflow_type.as_ref().unwrap().name, "P");
    assert_eq!(task.workflow_execution, execution(&id, &run_id));
    assert_eq!(task.start_to_close_timeout, Some(seconds(30)));
    assert!(task.scheduled_time.is_some() && task.started_time.is_some());
    assert_eq!(task.current_attempt_scheduled_time, task.scheduled_time);
    let policy = task.retry_policy.clone().expect("retry policy");
    assert_eq!(policy.maximum_attempts, 3);
    assert!(task.heartbeat_details.is_none());

    // Started already: the queue has nothing, and describe shows it running.
    assert!(
        poll_activity(&mut raw, &tq, Duration::from_millis(1500))
            .await
            .is_none(),
        "an eager activity is not dispatched through matching"
    );
    let described = raw
        .describe_workflow_execution(ws::DescribeWorkflowExecutionRequest {
            namespace: "default".into(),
            execution: execution(&id, ""),
        })
        .await
        .expect("describe")
        .into_inner();
    let pending = &described.pending_activities[0];
    assert_eq!(pending.state, PendingActivityState::Started as i32);
    assert_eq!(pending.attempt, 1);

    // The schedule-to-start timeout (1 s) did not fire: completing it works.
    complete_activity(&mut raw, task.task_token, "done").await;
    let response = decide(&mut raw, &tq, vec![complete_workflow()]).await;
    assert!(response.activity_tasks.is_empty());
    assert_eq!(
        status(&mut raw, &id).await,
        WorkflowExecutionStatus::Completed as i32
    );

    let events = workflow_history(&mut raw, &id).await;
    assert_eq!(
        types(&events),
        vec![
            EventType::WorkflowExecutionStarted,
            EventType::WorkflowTaskScheduled,
            EventType::WorkflowTaskStarted,
            EventType::WorkflowTaskCompleted,
            EventType::ActivityTaskScheduled,
            EventType::ActivityTaskStarted,
            EventType::ActivityTaskCompleted,
            EventType::WorkflowTaskScheduled,
            EventType::WorkflowTaskStarted,
            EventType::WorkflowTaskCompleted,
            EventType::WorkflowExecutionCompleted,
        ]
    );
    let Some(Attributes::ActivityTaskStartedEventAttributes(started)) = &events[5].attributes
    else {
        panic!("started attributes");
    };
    assert_eq!(started.scheduled_event_id, 5);
    assert_eq!(started.identity, WORKER);
    assert_eq!(started.attempt, 1);
    assert!(!started.request_id.is_empty());
    let Some(Attributes::ActivityTaskCompletedEventAttributes(completed)) = &events[6].attributes
    else {
        panic!("completed attributes");
    };
    assert_eq!(completed.result, payloads("done"));
    assert_eq!(completed.started_event_id, 6);
    server.server.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_eager_requests_on_the_runs_queue_of_an_open_run_are_started() {
    let server = start_server().await;
    let mut raw = raw_client(&server.server.url()).await;
    let tq = unique("tq");
    let other = unique("other-tq");
    let id = unique("eager-mixed");
    start(&mut raw, &id, &tq).await;

    // Eager on another queue, not requested, and eager on the run's queue (named explicitly).
    let response = decide(
        &mut raw,
        &tq,
        vec![
            schedule("elsewhere", &other, true, 30, one_attempt()),
            schedule("polled", &tq, false, 30, one_attempt()),
            schedule("eager", &tq, true, 30, one_attempt()),
        ],
    )
    .await;
    let eager: Vec<&str> = response
        .activity_tasks
        .iter()
        .map(|t| t.activity_id.as_str())
        .collect();
    assert_eq!(eager, vec!["eager"]);
    let elsewhere = poll_activity(&mut raw, &other, Duration::from_secs(10))
        .await
        .expect("the other queue's activity is delivered through a poll");
    assert_eq!(elsewhere.activity_id, "elsewhere");
    let polled = poll_activity(&mut raw, &tq, Duration::from_secs(10))
        .await
        .expect("the non-eager activity is delivered through a poll");
    assert_eq!(polled.activity_id, "polled");
    for token in [
        elsewhere.task_token,
        polled.task_token,
        response.activity_tasks[0].task_token.clone(),
    ] {
        complete_activity(&mut raw, token, "ok").await;
    }
    let events = workflow_history(&mut raw, &id).await;
    let started: Vec<(i64, String)> = events
        .iter()
        .filter_map(|e| match &e.attributes {
            Some(Attributes::ActivityTaskStartedEventAttributes(a)) => {
                Some((a.scheduled_event_id, a.identity.clone()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(started.len(), 3, "{events:?}");
    assert!(started.contains(&(7, WORKER.to_string())), "{started:?}");
    assert!(started.contains(&(5, "poller".to_string())), "{started:?}");
    assert!(started.contains(&(6, "poller".to_string())), "{started:?}");

    // A completion that also closes the run hands out no activity task (a queue of its own:
    // the first run has a workflow task pending on `tq`).
    let tq = unique("tq");
    let closing = unique("eager-close");
    start(&mut raw, &closing, &tq).await;
    let response = decide(
        &mut raw,
        &tq,
        vec![
            schedule("late", &tq, true, 30, one_attempt()),
            complete_workflow(),
        ],
    )
    .await;
    assert!(response.activity_tasks.is_empty(), "{response:?}");
    assert_eq!(
        status(&mut raw, &closing).await,
        WorkflowExecutionStatus::Completed as i32
    );

    // A refused completion (a duplicate activity ID) starts nothing either.
    let refused = unique("eager-refused");
    start(&mut raw, &refused, &tq).await;
    let task = raw
        .poll_workflow_task_queue(poll(&tq))
        .await
        .expect("poll")
        .into_inner();
    let err = raw
        .respond_workflow_task_completed(ws::RespondWorkflowTaskCompletedRequest {
            namespace: "default".into(),
            task_token: task.task_token,
            commands: vec![
                schedule("dup", &tq, true, 30, one_attempt()),
                schedule("dup", &tq, true, 30, one_attempt()),
            ],
            identity: WORKER.into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    let described = raw
        .describe_workflow_execution(ws::DescribeWorkflowExecutionRequest {
            namespace: "default".into(),
            execution: execution(&refused, ""),
        })
        .await
        .expect("describe")
        .into_inner();
    assert!(described.pending_activities.is_empty());
    server.server.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_eager_activity_times_out_and_is_retried_through_the_queue() {
    let server = start_server().await;
    let mut raw = raw_client(&server.server.url()).await;
    let tq = unique("tq");
    let id = unique("eager-timeout");
    start(&mut raw, &id, &tq).await;

    let retry = RetryPolicy {
        initial_interval: Some(chronicle_proto::wkt::Duration {
            seconds: 0,
            nanos: 200_000_000,
        }),
        maximum_attempts: 2,
        ..Default::default()
    };
    let response = decide(&mut raw, &tq, vec![schedule("slow", &tq, true, 1, retry)]).await;
    assert_eq!(response.activity_tasks.len(), 1);
    assert_eq!(response.activity_tasks[0].attempt, 1);
    // The worker never answers; after the 1 s start-to-close timeout the retry is dispatched
    // through the normal queue.
    let retried = poll_activity(&mut raw, &tq, Duration::from_secs(10))
        .await
        .expect("the retry comes through a poll");
    assert_eq!(retried.activity_id, "slow");
    assert_eq!(retried.attempt, 2);
    // The first attempt's token is stale.
    let err = raw
        .respond_activity_task_completed(ws::RespondActivityTaskCompletedRequest {
            namespace: "default".into(),
            task_token: response.activity_tasks[0].task_token.clone(),
            result: payloads("late"),
            identity: WORKER.into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    complete_activity(&mut raw, retried.task_token, "second").await;

    let events = workflow_history(&mut raw, &id).await;
    let started = events
        .iter()
        .find_map(|e| match &e.attributes {
            Some(Attributes::ActivityTaskStartedEventAttributes(a)) => Some(a.clone()),
            _ => None,
        })
        .expect("started event");
    assert_eq!(started.attempt, 2);
    assert_eq!(started.identity, "poller");
    let failure = started.last_failure.expect("the first attempt's timeout");
    assert!(
        failure.message.to_lowercase().contains("timeout")
            || failure.message.to_lowercase().contains("timed out"),
        "{failure:?}"
    );
    assert!(
        types(&events).contains(&EventType::ActivityTaskCompleted),
        "{events:?}"
    );
    server.server.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_eager_activities_dispatches_them_through_the_queue() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = config_for(dir.path());
    config.eager_activities = false;
    let server = chronicle_server::RunningServer::start(config)
        .await
        .expect("server starts");
    let mut raw = raw_client(&server.url()).await;
    let tq = unique("tq");
    let id = unique("eager-off");
    start(&mut raw, &id, &tq).await;
    let response = decide(
        &mut raw,
        &tq,
        vec![schedule("a1", &tq, true, 30, one_attempt())],
    )
    .await;
    assert!(response.activity_tasks.is_empty(), "{response:?}");
    let polled = poll_activity(&mut raw, &tq, Duration::from_secs(10))
        .await
        .expect("delivered through a poll");
    assert_eq!(polled.activity_id, "a1");
    assert_eq!(polled.attempt, 1);
    complete_activity(&mut raw, polled.task_token, "ok").await;
    server.stop().await.expect("clean stop");
}
