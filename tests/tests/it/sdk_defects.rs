//! Behaviour the official SDKs' own test suites rely on (issue 17): zero-duration timers,
//! time-ordered run IDs, memo upserts (and removals) in describe, priorities echoed back, gzip
//! on the health service. Raw gRPC, so each check names the exact fields the SDKs read.

use std::collections::HashMap;
use std::time::Duration;

use chronicle_proto::temporal::api::command::v1::{
    Command, ModifyWorkflowPropertiesCommandAttributes, ScheduleActivityTaskCommandAttributes,
    StartTimerCommandAttributes, command,
};
use chronicle_proto::temporal::api::common::v1::{ActivityType, Memo, Payload, Priority};
use chronicle_proto::temporal::api::enums::v1::CommandType;
use chronicle_proto::temporal::api::history::v1::history_event::Attributes;
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use chronicle_proto::temporal::api::workflowservice::v1::workflow_service_client::WorkflowServiceClient;
use tonic::Code;
use tonic::transport::Channel;

use crate::common::*;

fn seconds(s: i64) -> Option<chronicle_proto::wkt::Duration> {
    Some(chronicle_proto::wkt::Duration {
        seconds: s,
        nanos: 0,
    })
}

fn start_timer(timer_id: &str, fire: Option<chronicle_proto::wkt::Duration>) -> Command {
    Command {
        command_type: CommandType::StartTimer as i32,
        attributes: Some(command::Attributes::StartTimerCommandAttributes(
            StartTimerCommandAttributes {
                timer_id: timer_id.into(),
                start_to_fire_timeout: fire,
            },
        )),
        ..Default::default()
    }
}

async fn complete_task(
    raw: &mut WorkflowServiceClient<Channel>,
    task_token: Vec<u8>,
    commands: Vec<Command>,
) -> Result<ws::RespondWorkflowTaskCompletedResponse, tonic::Status> {
    raw.respond_workflow_task_completed(ws::RespondWorkflowTaskCompletedRequest {
        namespace: "default".into(),
        task_token,
        commands,
        identity: "sdk-defects".into(),
        ..Default::default()
    })
    .await
    .map(|r| r.into_inner())
}

async fn poll_task(
    raw: &mut WorkflowServiceClient<Channel>,
    tq: &str,
) -> ws::PollWorkflowTaskQueueResponse {
    let task = tokio::time::timeout(
        Duration::from_secs(20),
        raw.poll_workflow_task_queue(poll(tq)),
    )
    .await
    .expect("a workflow task in time")
    .expect("poll")
    .into_inner();
    assert!(!task.task_token.is_empty(), "the poll got a task");
    task
}

/// `workflow.sleep(0)` and timers of 0 s: Temporal accepts a zero (or absent)
/// StartToFireTimeout and fires the timer at once; only a negative one is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_duration_timers_fire_at_once_and_negative_ones_are_refused() {
    let server = start_server().await;
    let mut raw = raw_client(&server.server.url()).await;
    let tq = unique("zero-timer");
    let id = unique("zero-timer");
    raw.start_workflow_execution(start_request(&id, "ZeroTimer", &tq))
        .await
        .expect("start");

    // A negative duration is bad input: the task fails with InvalidArgument.
    let task = poll_task(&mut raw, &tq).await;
    let err = complete_task(
        &mut raw,
        task.task_token,
        vec![start_timer(
            "negative",
            Some(chronicle_proto::wkt::Duration {
                seconds: -1,
                nanos: 0,
            }),
        )],
    )
    .await
    .expect_err("a negative timer is refused");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("StartToFireTimeout"), "{err:?}");

    // The retried task: a timer of exactly 0 s and one with no duration at all are accepted.
    let task = poll_task(&mut raw, &tq).await;
    complete_task(
        &mut raw,
        task.task_token,
        vec![start_timer("zero", seconds(0)), start_timer("absent", None)],
    )
    .await
    .expect("zero-duration timers are accepted");

    // Both fire at once: the next workflow task carries both TimerFired events.
    let started = std::time::Instant::now();
    let mut fired = Vec::new();
    while fired.len() < 2 {
        let task = poll_task(&mut raw, &tq).await;
        for event in task.history.unwrap_or_default().events {
            if let Some(Attributes::TimerFiredEventAttributes(a)) = event.attributes {
                fired.push(a.timer_id);
            }
        }
        if fired.len() < 2 {
            complete_task(&mut raw, task.task_token, vec![])
                .await
                .expect("complete");
        }
    }
    fired.sort();
    assert_eq!(fired, vec!["absent".to_string(), "zero".to_string()]);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "zero-duration timers fire at once, took {:?}",
        started.elapsed()
    );
}

/// Run IDs are UUIDs of version 7 (time-ordered), as Temporal issues them: for starts and for
/// the runs that follow (continue-as-new).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_ids_are_time_ordered_uuid_v7() {
    let server = start_server().await;
    let mut raw = raw_client(&server.server.url()).await;
    let tq = unique("v7");
    let mut run_ids = Vec::new();
    for _ in 0..3 {
        let started = raw
            .start_workflow_execution(start_request(&unique("v7"), "V7", &tq))
            .await
            .expect("start")
            .into_inner();
        run_ids.push(started.run_id);
        // Version 7 embeds a millisecond timestamp: runs started apart sort by start.
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    for run_id in &run_ids {
        let uuid = uuid::Uuid::parse_str(run_id).expect("a run ID is a UUID");
        assert_eq!(
            uuid.get_version_num(),
            7,
            "run ID {run_id} is not a v7 UUID"
        );
    }
    let mut sorted = run_ids.clone();
    sorted.sort();
    assert_eq!(sorted, run_ids, "v7 run IDs sort by creation time");

    // Continue-as-new: the next run's ID is a v7 UUID too.
    let id = unique("v7-can");
    raw.start_workflow_execution(start_request(&id, "V7", &tq))
        .await
        .expect("start");
    let task = poll_task(&mut raw, &tq).await;
    complete_task(
        &mut raw,
        task.task_token,
        vec![Command {
            command_type: CommandType::ContinueAsNewWorkflowExecution as i32,
            attributes: Some(
                command::Attributes::ContinueAsNewWorkflowExecutionCommandAttributes(
                    Default::default(),
                ),
            ),
            ..Default::default()
        }],
    )
    .await
    .expect("continue as new");
    let next = raw
        .describe_workflow_execution(ws::DescribeWorkflowExecutionRequest {
            namespace: "default".into(),
            execution: execution(&id, ""),
        })
        .await
        .expect("describe")
        .into_inner()
        .workflow_execution_info
        .unwrap()
        .execution
        .unwrap()
        .run_id;
    assert_eq!(
        uuid::Uuid::parse_str(&next).unwrap().get_version_num(),
        7,
        "continued run ID {next}"
    );
}

fn json(text: &str) -> Payload {
    Payload {
        metadata: HashMap::from([("encoding".to_string(), b"json/plain".to_vec())]),
        data: text.as_bytes().to_vec(),
        ..Default::default()
    }
}

/// What the Python SDK sends for `None`: a `binary/null` payload without data.
fn null_payload() -> Payload {
    Payload {
        metadata: HashMap::from([("encoding".to_string(), b"binary/null".to_vec())]),
        data: Vec::new(),
        ..Default::default()
    }
}

/// `workflow.upsert_memo`: the ModifyWorkflowProperties command's memo is merged into the run's
/// (new keys added, existing ones replaced, a nil value removing its key) and describe shows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upserted_memo_is_merged_and_nil_values_remove_keys() {
    let server = start_server().await;
    let mut raw = raw_client(&server.server.url()).await;
    let tq = unique("memo");
    let id = unique("memo");
    let mut request = start_request(&id, "Memo", &tq);
    request.memo = Some(Memo {
        fields: HashMap::from([
            ("kept".to_string(), json("\"kept\"")),
            ("changed".to_string(), json("\"old\"")),
            ("removed".to_string(), json("\"removed\"")),
            ("removed_json_null".to_string(), json("\"removed\"")),
        ]),
    });
    raw.start_workflow_execution(request).await.expect("start");
    let task = poll_task(&mut raw, &tq).await;
    complete_task(
        &mut raw,
        task.task_token,
        vec![Command {
            command_type: CommandType::ModifyWorkflowProperties as i32,
            attributes: Some(
                command::Attributes::ModifyWorkflowPropertiesCommandAttributes(
                    ModifyWorkflowPropertiesCommandAttributes {
                        upserted_memo: Some(Memo {
                            fields: HashMap::from([
                                ("changed".to_string(), json("\"new\"")),
                                ("added".to_string(), json("\"added\"")),
                                ("removed".to_string(), null_payload()),
                                ("removed_json_null".to_string(), json("null")),
                            ]),
                        }),
                    },
                ),
            ),
            ..Default::default()
        }],
    )
    .await
    .expect("upsert memo");
    let memo = raw
        .describe_workflow_execution(ws::DescribeWorkflowExecutionRequest {
            namespace: "default".into(),
            execution: execution(&id, ""),
        })
        .await
        .expect("describe")
        .into_inner()
        .workflow_execution_info
        .unwrap()
        .memo
        .unwrap_or_default();
    let mut shown: Vec<(String, String)> = memo
        .fields
        .iter()
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.data).into_owned()))
        .collect();
    shown.sort();
    assert_eq!(
        shown,
        vec![
            ("added".to_string(), "\"added\"".to_string()),
            ("changed".to_string(), "\"new\"".to_string()),
            ("kept".to_string(), "\"kept\"".to_string()),
        ]
    );
    // The event keeps what the command sent, nil values included.
    let events = workflow_history(&mut raw, &id).await;
    let modified = events
        .iter()
        .find_map(|e| match &e.attributes {
            Some(Attributes::WorkflowPropertiesModifiedEventAttributes(a)) => Some(a),
            _ => None,
        })
        .expect("WorkflowPropertiesModified event");
    assert_eq!(modified.upserted_memo.as_ref().unwrap().fields.len(), 4);
}

fn priority(key: i32, fairness_key: &str, weight: f32) -> Option<Priority> {
    Some(Priority {
        priority_key: key,
        fairness_key: fairness_key.into(),
        fairness_weight: weight,
    })
}

/// Priorities are stored and echoed back as Temporal does: the start request's in the
/// WorkflowExecutionStarted event and in describe, the ScheduleActivityTask command's in the
/// ActivityTaskScheduled event and, merged with the run's, in the activity task. Invalid ones
/// are InvalidArgument.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priorities_are_stored_and_echoed_back() {
    let server = start_server().await;
    let mut raw = raw_client(&server.server.url()).await;
    let tq = unique("priority");
    let id = unique("priority");

    let mut bad = start_request(&unique("priority-bad"), "Priority", &tq);
    bad.priority = priority(-1, "", 0.0);
    let err = raw.start_workflow_execution(bad).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    let mut request = start_request(&id, "Priority", &tq);
    request.priority = priority(1, "tenant1", 2.5);
    raw.start_workflow_execution(request).await.expect("start");

    let described = raw
        .describe_workflow_execution(ws::DescribeWorkflowExecutionRequest {
            namespace: "default".into(),
            execution: execution(&id, ""),
        })
        .await
        .expect("describe")
        .into_inner();
    assert_eq!(
        described.workflow_execution_info.unwrap().priority,
        priority(1, "tenant1", 2.5)
    );

    let task = poll_task(&mut raw, &tq).await;
    let started = task.history.as_ref().unwrap().events[0].clone();
    let Some(Attributes::WorkflowExecutionStartedEventAttributes(a)) = started.attributes else {
        panic!("first event is not WorkflowExecutionStarted");
    };
    assert_eq!(a.priority, priority(1, "tenant1", 2.5));

    let schedule = |activity_id: &str, p: Option<Priority>| Command {
        command_type: CommandType::ScheduleActivityTask as i32,
        attributes: Some(command::Attributes::ScheduleActivityTaskCommandAttributes(
            ScheduleActivityTaskCommandAttributes {
                activity_id: activity_id.into(),
                activity_type: Some(ActivityType { name: "A".into() }),
                task_queue: queue(&tq),
                start_to_close_timeout: seconds(30),
                priority: p,
                ..Default::default()
            },
        )),
        ..Default::default()
    };
    // A negative fairness weight is refused (the task fails), then the retry schedules one.
    let err = complete_task(
        &mut raw,
        task.task_token,
        vec![schedule("bad", priority(0, "", -1.0))],
    )
    .await
    .expect_err("negative fairness weight");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let task = poll_task(&mut raw, &tq).await;
    // Only the fairness key set: the activity's task inherits the run's key and weight.
    complete_task(
        &mut raw,
        task.task_token,
        vec![schedule("a", priority(0, "tenant4", 0.0))],
    )
    .await
    .expect("schedule activity");

    let activity = raw
        .poll_activity_task_queue(ws::PollActivityTaskQueueRequest {
            namespace: "default".into(),
            task_queue: queue(&tq),
            identity: "sdk-defects".into(),
            ..Default::default()
        })
        .await
        .expect("poll activity")
        .into_inner();
    assert_eq!(activity.activity_id, "a");
    assert_eq!(activity.priority, priority(1, "tenant4", 2.5));

    let scheduled = workflow_history(&mut raw, &id)
        .await
        .into_iter()
        .find_map(|e| match e.attributes {
            Some(Attributes::ActivityTaskScheduledEventAttributes(a)) => Some(a),
            _ => None,
        })
        .expect("ActivityTaskScheduled event");
    assert_eq!(scheduled.priority, priority(0, "tenant4", 0.0));
}

/// `temporal operator cluster health` and the SDKs' health checks send gzip: the health
/// service accepts it (and answers compressed) like the Temporal services.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_service_accepts_gzip() {
    use tonic::codec::CompressionEncoding;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

    let server = start_server().await;
    let channel = tonic::transport::Endpoint::from_shared(server.server.url())
        .unwrap()
        .connect()
        .await
        .expect("connect");
    let mut client = HealthClient::new(channel)
        .send_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Gzip);
    for service in ["", "temporal.api.workflowservice.v1.WorkflowService"] {
        let status = client
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap_or_else(|e| panic!("health check of {service:?} with gzip: {e:?}"))
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }
}

/// ListWorkflowExecutions pages: `page_size` runs per page and a token for the next page until
/// every match was listed, newest first, none twice (the SDKs' `limit` reads several pages).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_workflow_executions_pages_through_every_run() {
    let server = start_server().await;
    let mut raw = raw_client(&server.server.url()).await;
    let tq = unique("list-pages");
    let mut started = Vec::new();
    for i in 0..5 {
        let id = format!("{tq}-{i}");
        let run = raw
            .start_workflow_execution(start_request(&id, "Listed", &tq))
            .await
            .expect("start")
            .into_inner()
            .run_id;
        started.push((id, run));
    }
    let mut listed = Vec::new();
    let mut token = Vec::new();
    let mut pages = 0;
    loop {
        let page = raw
            .list_workflow_executions(ws::ListWorkflowExecutionsRequest {
                namespace: "default".into(),
                page_size: 2,
                next_page_token: token,
                query: format!("TaskQueue = '{tq}'"),
            })
            .await
            .expect("list")
            .into_inner();
        pages += 1;
        assert!(page.executions.len() <= 2, "page size respected");
        listed.extend(page.executions.into_iter().map(|info| {
            let e = info.execution.unwrap();
            (e.workflow_id, e.run_id)
        }));
        if page.next_page_token.is_empty() {
            break;
        }
        assert!(pages < 10, "pagination ends");
        token = page.next_page_token;
    }
    assert_eq!(pages, 3);
    let mut expected = started.clone();
    expected.sort();
    let mut got = listed.clone();
    got.sort();
    assert_eq!(got, expected, "every run listed exactly once");

    let err = raw
        .list_workflow_executions(ws::ListWorkflowExecutionsRequest {
            namespace: "default".into(),
            page_size: 2,
            next_page_token: b"garbage".to_vec(),
            query: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

/// A command's user metadata (the SDKs' `summary=`) goes on the event it creates, and a start's
/// on WorkflowExecutionStarted, as in Temporal: UIs and the SDKs' tests read them there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_metadata_of_start_and_commands_is_on_their_events() {
    use chronicle_proto::temporal::api::sdk::v1::UserMetadata;

    let server = start_server().await;
    let mut raw = raw_client(&server.server.url()).await;
    let tq = unique("metadata");
    let id = unique("metadata");
    let summary = |text: &str| {
        Some(UserMetadata {
            summary: Some(json(&format!("\"{text}\""))),
            details: None,
        })
    };
    let mut request = start_request(&id, "Metadata", &tq);
    request.user_metadata = summary("the run");
    raw.start_workflow_execution(request).await.expect("start");
    let task = poll_task(&mut raw, &tq).await;
    let mut with_summary = start_timer("t1", seconds(60));
    with_summary.user_metadata = summary("first timer");
    complete_task(
        &mut raw,
        task.task_token,
        vec![with_summary, start_timer("t2", seconds(60))],
    )
    .await
    .expect("start timers");
    let summaries: Vec<(i32, Option<Vec<u8>>)> = workflow_history(&mut raw, &id)
        .await
        .into_iter()
        .filter(|e| {
            matches!(
                e.attributes,
                Some(Attributes::WorkflowExecutionStartedEventAttributes(_))
                    | Some(Attributes::TimerStartedEventAttributes(_))
            )
        })
        .map(|e| {
            (
                e.event_type,
                e.user_metadata.and_then(|m| m.summary).map(|p| p.data),
            )
        })
        .collect();
    use chronicle_proto::temporal::api::enums::v1::EventType;
    // Describe shows the start's metadata in the execution config.
    let described = raw
        .describe_workflow_execution(ws::DescribeWorkflowExecutionRequest {
            namespace: "default".into(),
            execution: execution(&id, ""),
        })
        .await
        .expect("describe")
        .into_inner();
    assert_eq!(
        described.execution_config.unwrap().user_metadata,
        summary("the run")
    );
    assert_eq!(
        summaries,
        vec![
            (
                EventType::WorkflowExecutionStarted as i32,
                Some(b"\"the run\"".to_vec())
            ),
            (
                EventType::TimerStarted as i32,
                Some(b"\"first timer\"".to_vec())
            ),
            (EventType::TimerStarted as i32, None),
        ]
    );
}

/// A workflow retried under its retry policy runs again with the same input (and header), as
/// in Temporal: the SDKs' retry tests start workflows with arguments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_run_gets_the_same_input() {
    use chronicle_proto::temporal::api::command::v1::FailWorkflowExecutionCommandAttributes;
    use chronicle_proto::temporal::api::common::v1::RetryPolicy;
    use chronicle_proto::temporal::api::failure::v1::Failure;

    let server = start_server().await;
    let mut raw = raw_client(&server.server.url()).await;
    let tq = unique("retry-input");
    let id = unique("retry-input");
    let mut request = start_request(&id, "Retried", &tq);
    request.input = payloads("the argument");
    request.retry_policy = Some(RetryPolicy {
        initial_interval: Some(chronicle_types::time::duration_from_millis(100)),
        maximum_attempts: 2,
        ..Default::default()
    });
    let first_run = raw
        .start_workflow_execution(request)
        .await
        .expect("start")
        .into_inner()
        .run_id;
    let task = poll_task(&mut raw, &tq).await;
    complete_task(
        &mut raw,
        task.task_token,
        vec![Command {
            command_type: CommandType::FailWorkflowExecution as i32,
            attributes: Some(command::Attributes::FailWorkflowExecutionCommandAttributes(
                FailWorkflowExecutionCommandAttributes {
                    failure: Some(Failure {
                        message: "try again".into(),
                        ..Default::default()
                    }),
                },
            )),
            ..Default::default()
        }],
    )
    .await
    .expect("fail the run");
    let task = poll_task(&mut raw, &tq).await;
    let run = task.workflow_execution.unwrap().run_id;
    assert_ne!(run, first_run, "the retry is a new run");
    let Some(Attributes::WorkflowExecutionStartedEventAttributes(started)) =
        task.history.unwrap().events.remove(0).attributes
    else {
        panic!("first event is not WorkflowExecutionStarted");
    };
    assert_eq!(started.attempt, 2);
    assert_eq!(started.input, payloads("the argument"));
}

/// Asking to cancel a run that already closed succeeds and changes nothing, as in Temporal
/// (the SDKs' `handle.cancel()` after the result); terminating it is still NotFound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_closed_run_succeeds_and_changes_nothing() {
    let server = start_server().await;
    let mut raw = raw_client(&server.server.url()).await;
    let id = unique("cancel-closed");
    raw.start_workflow_execution(start_request(&id, "Closed", &unique("tq")))
        .await
        .expect("start");
    let terminate = || ws::TerminateWorkflowExecutionRequest {
        namespace: "default".into(),
        workflow_execution: execution(&id, ""),
        reason: "done".into(),
        ..Default::default()
    };
    raw.terminate_workflow_execution(terminate())
        .await
        .expect("terminate");
    let before = workflow_history(&mut raw, &id).await.len();
    raw.request_cancel_workflow_execution(ws::RequestCancelWorkflowExecutionRequest {
        namespace: "default".into(),
        workflow_execution: execution(&id, ""),
        request_id: unique("cancel"),
        ..Default::default()
    })
    .await
    .expect("cancelling a closed run succeeds");
    assert_eq!(workflow_history(&mut raw, &id).await.len(), before);
    let err = raw
        .terminate_workflow_execution(terminate())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

/// `--dynamic-config-value limit.historyCount.suggestContinueAsNew=N` (the SDK suites start
/// their dev server with 50): workflow tasks suggest continue-as-new from N events instead of
/// Temporal's default 4,096.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continue_as_new_suggestion_threshold_is_configurable() {
    async fn suggested(threshold: i64) -> bool {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config_for(dir.path());
        config.history_limits.all.suggest_events = threshold;
        let server = chronicle_server::RunningServer::start(config)
            .await
            .expect("start");
        let mut raw = raw_client(&server.url()).await;
        let tq = unique("suggest");
        let id = unique("suggest");
        raw.start_workflow_execution(start_request(&id, "Suggest", &tq))
            .await
            .expect("start");
        // Four signals: events 3 to 6, so the Started event is the 7th.
        for _ in 0..4 {
            raw.signal_workflow_execution(ws::SignalWorkflowExecutionRequest {
                namespace: "default".into(),
                workflow_execution: execution(&id, ""),
                signal_name: "s".into(),
                request_id: unique("signal"),
                ..Default::default()
            })
            .await
            .expect("signal");
        }
        let task = poll_task(&mut raw, &tq).await;
        let started = task.history.unwrap().events.pop().unwrap();
        assert_eq!(started.event_id, 7);
        let Some(Attributes::WorkflowTaskStartedEventAttributes(a)) = started.attributes else {
            panic!("last event is not WorkflowTaskStarted");
        };
        a.suggest_continue_as_new
    }
    assert!(suggested(5).await, "7 events are past a threshold of 5");
    assert!(!suggested(0).await, "Temporal's default threshold is 4,096");
}

/// ActivityTaskStarted is written when the attempt ends but dated when it started, as in
/// Temporal (the time between Started and Completed is the activity's run time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activity_started_event_is_dated_when_the_attempt_started() {
    let server = start_server().await;
    let mut raw = raw_client(&server.server.url()).await;
    let tq = unique("started-time");
    let id = unique("started-time");
    raw.start_workflow_execution(start_request(&id, "StartedTime", &tq))
        .await
        .expect("start");
    let task = poll_task(&mut raw, &tq).await;
    complete_task(
        &mut raw,
        task.task_token,
        vec![Command {
            command_type: CommandType::ScheduleActivityTask as i32,
            attributes: Some(command::Attributes::ScheduleActivityTaskCommandAttributes(
                ScheduleActivityTaskCommandAttributes {
                    activity_id: "a".into(),
                    activity_type: Some(ActivityType { name: "A".into() }),
                    task_queue: queue(&tq),
                    start_to_close_timeout: seconds(30),
                    ..Default::default()
                },
            )),
            ..Default::default()
        }],
    )
    .await
    .expect("schedule");
    let activity = raw
        .poll_activity_task_queue(ws::PollActivityTaskQueueRequest {
            namespace: "default".into(),
            task_queue: queue(&tq),
            identity: "sdk-defects".into(),
            ..Default::default()
        })
        .await
        .expect("poll activity")
        .into_inner();
    tokio::time::sleep(Duration::from_millis(400)).await;
    raw.respond_activity_task_completed(ws::RespondActivityTaskCompletedRequest {
        namespace: "default".into(),
        task_token: activity.task_token,
        ..Default::default()
    })
    .await
    .expect("complete");
    let events = workflow_history(&mut raw, &id).await;
    let time_of = |wanted: fn(&Attributes) -> bool| {
        events
            .iter()
            .find(|e| e.attributes.as_ref().is_some_and(wanted))
            .and_then(|e| e.event_time.as_ref())
            .map(chronicle_types::time::millis)
            .expect("event")
    };
    let started = time_of(|a| matches!(a, Attributes::ActivityTaskStartedEventAttributes(_)));
    let completed = time_of(|a| matches!(a, Attributes::ActivityTaskCompletedEventAttributes(_)));
    assert_eq!(
        Some(started),
        activity
            .started_time
            .as_ref()
            .map(chronicle_types::time::millis),
        "the Started event carries the attempt's start time"
    );
    assert!(
        completed - started >= 350,
        "started {started}, completed {completed}"
    );
}

/// CountWorkflowExecutions with `GROUP BY ExecutionStatus` answers one group per status, as
/// Temporal does (the SDKs' `count_workflows`); another grouping is InvalidArgument.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_groups_by_execution_status() {
    let server = start_server().await;
    let mut raw = raw_client(&server.server.url()).await;
    let tq = unique("count-groups");
    for i in 0..3 {
        let id = format!("{tq}-{i}");
        raw.start_workflow_execution(start_request(&id, "Counted", &tq))
            .await
            .expect("start");
        if i == 0 {
            raw.terminate_workflow_execution(ws::TerminateWorkflowExecutionRequest {
                namespace: "default".into(),
                workflow_execution: execution(&id, ""),
                ..Default::default()
            })
            .await
            .expect("terminate");
        }
    }
    let count = |query: String| ws::CountWorkflowExecutionsRequest {
        namespace: "default".into(),
        query,
    };
    let answer = raw
        .count_workflow_executions(count(format!(
            "TaskQueue = '{tq}' GROUP BY ExecutionStatus"
        )))
        .await
        .expect("count")
        .into_inner();
    assert_eq!(answer.count, 3);
    let mut groups: Vec<(String, i64)> = answer
        .groups
        .iter()
        .map(|g| {
            assert_eq!(g.group_values.len(), 1);
            (
                String::from_utf8_lossy(&g.group_values[0].data).into_owned(),
                g.count,
            )
        })
        .collect();
    groups.sort();
    assert_eq!(
        groups,
        vec![
            ("\"Running\"".to_string(), 2),
            ("\"Terminated\"".to_string(), 1)
        ]
    );
    let plain = raw
        .count_workflow_executions(count(format!("TaskQueue = '{tq}'")))
        .await
        .expect("count")
        .into_inner();
    assert_eq!((plain.count, plain.groups.len()), (3, 0));
    let err = raw
        .count_workflow_executions(count(format!("TaskQueue = '{tq}' GROUP BY WorkflowType")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}
