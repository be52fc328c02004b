//! StartWorkflowExecution's ID conflict and reuse policies, and the by-ID forms of the activity
//! RPCs (heartbeat, complete, fail), on the raw protocol.

use std::collections::HashMap;
use std::time::Duration;

use chronicle_proto::temporal::api::command::v1::{
    Command, ScheduleActivityTaskCommandAttributes, command,
};
use chronicle_proto::temporal::api::common::v1::{ActivityType, RetryPolicy, WorkflowType};
use chronicle_proto::temporal::api::enums::v1::{
    CommandType, EventType, WorkflowExecutionStatus, WorkflowIdConflictPolicy,
    WorkflowIdReusePolicy,
};
use chronicle_proto::temporal::api::failure::v1::Failure;
use chronicle_proto::temporal::api::history::v1::history_event::Attributes;
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use chronicle_proto::temporal::api::workflowservice::v1::workflow_service_client::WorkflowServiceClient;
use tonic::Code;
use tonic::transport::Channel;

use crate::common::*;

fn start(workflow_id: &str, task_queue: &str) -> ws::StartWorkflowExecutionRequest {
    ws::StartWorkflowExecutionRequest {
        namespace: "default".into(),
        workflow_id: workflow_id.into(),
        workflow_type: Some(WorkflowType { name: "P".into() }),
        task_queue: queue(task_queue),
        request_id: unique("req"),
        ..Default::default()
    }
}

async fn status_of(
    raw: &mut WorkflowServiceClient<Channel>,
    workflow_id: &str,
    run_id: &str,
) -> i32 {
    raw.describe_workflow_execution(ws::DescribeWorkflowExecutionRequest {
        namespace: "default".into(),
        execution: execution(workflow_id, run_id),
    })
    .await
    .expect("describe")
    .into_inner()
    .workflow_execution_info
    .unwrap()
    .status
}

async fn terminate(raw: &mut WorkflowServiceClient<Channel>, workflow_id: &str) {
    raw.terminate_workflow_execution(ws::TerminateWorkflowExecutionRequest {
        namespace: "default".into(),
        workflow_execution: execution(workflow_id, ""),
        reason: "test".into(),
        ..Default::default()
    })
    .await
    .expect("terminate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflow_id_conflict_and_reuse_policies() {
    let server = start_server().await;
    let mut raw = raw_client(&server.server.url()).await;
    let tq = unique("tq");
    let id = unique("policy");

    let first = raw
        .start_workflow_execution(start(&id, &tq))
        .await
        .expect("start")
        .into_inner();
    assert!(first.started);

    // Running: FAIL (the default) refuses, USE_EXISTING answers the running run.
    let err = raw
        .start_workflow_execution(start(&id, &tq))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    let mut use_existing = start(&id, &tq);
    use_existing.workflow_id_conflict_policy = WorkflowIdConflictPolicy::UseExisting as i32;
    let existing = raw
        .start_workflow_execution(use_existing)
        .await
        .expect("use existing")
        .into_inner();
    assert_eq!(existing.run_id, first.run_id);
    assert!(!existing.started);

    // TERMINATE_EXISTING: the running run is terminated, a new one starts.
    let mut terminate_existing = start(&id, &tq);
    terminate_existing.workflow_id_conflict_policy =
        WorkflowIdConflictPolicy::TerminateExisting as i32;
    let second = raw
        .start_workflow_execution(terminate_existing)
        .await
        .expect("terminate existing")
        .into_inner();
    assert!(second.started);
    assert_ne!(second.run_id, first.run_id);
    assert_eq!(
        status_of(&mut raw, &id, &first.run_id).await,
        WorkflowExecutionStatus::Terminated as i32
    );
    assert_eq!(
        status_of(&mut raw, &id, &second.run_id).await,
        WorkflowExecutionStatus::Running as i32
    );

    // Closed (terminated, so "failed-like"): ALLOW_DUPLICATE_FAILED_ONLY admits a new run ...
    terminate(&mut raw, &id).await;
    let mut failed_only = start(&id, &tq);
    failed_only.workflow_id_reuse_policy = WorkflowIdReusePolicy::AllowDuplicateFailedOnly as i32;
    let third = raw
        .start_workflow_execution(failed_only)
        .await
        .expect("failed-only after terminate")
        .into_inner();
    assert!(third.started);

    // ... but not after a run that completed successfully.
    let task = raw
        .poll_workflow_task_queue(ws::PollWorkflowTaskQueueRequest {
            namespace: "default".into(),
            task_queue: queue(&tq),
            identity: "policy-test".into(),
            ..Default::default()
        })
        .await
        .expect("poll")
        .into_inner();
    assert_eq!(
        task.workflow_execution.as_ref().unwrap().run_id,
        third.run_id
    );
    raw.respond_workflow_task_completed(ws::RespondWorkflowTaskCompletedRequest {
        namespace: "default".into(),
        task_token: task.task_token,
        commands: vec![Command {
            command_type: CommandType::CompleteWorkflowExecution as i32,
            attributes: Some(
                command::Attributes::CompleteWorkflowExecutionCommandAttributes(Default::default()),
            ),
            ..Default::default()
        }],
        ..Default::default()
    })
    .await
    .expect("complete");
    let mut failed_only = start(&id, &tq);
    failed_only.workflow_id_reuse_policy = WorkflowIdReusePolicy::AllowDuplicateFailedOnly as i32;
    let err = raw.start_workflow_execution(failed_only).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    let mut reject = start(&id, &tq);
    reject.workflow_id_reuse_policy = WorkflowIdReusePolicy::RejectDuplicate as i32;
    let err = raw.start_workflow_execution(reject).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    // ALLOW_DUPLICATE (the default) admits it.
    let fourth = raw
        .start_workflow_execution(start(&id, &tq))
        .await
        .expect("allow")
        .into_inner();
    assert!(fourth.started);

    // The deprecated TERMINATE_IF_RUNNING reuse policy terminates the running run.
    let mut terminate_if_running = start(&id, &tq);
    #[allow(deprecated)]
    let policy = WorkflowIdReusePolicy::TerminateIfRunning as i32;
    terminate_if_running.workflow_id_reuse_policy = policy;
    let fifth = raw
        .start_workflow_execution(terminate_if_running)
        .await
        .expect("terminate if running")
        .into_inner();
    assert_ne!(fifth.run_id, fourth.run_id);
    assert_eq!(
        status_of(&mut raw, &id, &fourth.run_id).await,
        WorkflowExecutionStatus::Terminated as i32
    );
}

fn schedule(activity_id: &str, task_queue: &str) -> Command {
    Command {
        command_type: CommandType::ScheduleActivityTask as i32,
        attributes: Some(command::Attributes::ScheduleActivityTaskCommandAttributes(
            ScheduleActivityTaskCommandAttributes {
                activity_id: activity_id.into(),
                activity_type: Some(ActivityType {
                    name: "Work".into(),
                }),
                task_queue: queue(task_queue),
                start_to_close_timeout: Some(prost_wkt_types_duration(30)),
                retry_policy: Some(RetryPolicy {
                    maximum_attempts: 1,
                    ..Default::default()
                }),
                ..Default::default()
            },
        )),
        ..Default::default()
    }
}

fn prost_wkt_types_duration(seconds: i64) -> chronicle_proto::wkt::Duration {
    chronicle_proto::wkt::Duration { seconds, nanos: 0 }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activities_by_id_heartbeat_complete_and_fail() {
    let server = start_server().await;
    let mut raw = raw_client(&server.server.url()).await;
    let tq = unique("tq");
    let id = unique("byid");
    let started = raw
        .start_workflow_execution(start(&id, &tq))
        .await
        .expect("start")
        .into_inner();
    let task = raw
        .poll_workflow_task_queue(ws::PollWorkflowTaskQueueRequest {
            namespace: "default".into(),
            task_queue: queue(&tq),
            identity: "byid-test".into(),
            ..Default::default()
        })
        .await
        .expect("poll")
        .into_inner();
    raw.respond_workflow_task_completed(ws::RespondWorkflowTaskCompletedRequest {
        namespace: "default".into(),
        task_token: task.task_token,
        commands: vec![schedule("ok", &tq), schedule("bad", &tq)],
        ..Default::default()
    })
    .await
    .expect("schedule two activities");

    // Both get started by a poller; then they are driven by ID only.
    for _ in 0..2 {
        let activity = raw
            .poll_activity_task_queue(ws::PollActivityTaskQueueRequest {
                namespace: "default".into(),
                task_queue: queue(&tq),
                identity: "byid-test".into(),
                ..Default::default()
            })
            .await
            .expect("poll activity")
            .into_inner();
        assert!(!activity.task_token.is_empty());
    }

    let heartbeat = raw
        .record_activity_task_heartbeat_by_id(ws::RecordActivityTaskHeartbeatByIdRequest {
            namespace: "default".into(),
            workflow_id: id.clone(),
            run_id: started.run_id.clone(),
            activity_id: "ok".into(),
            details: payloads("halfway"),
            identity: "byid-test".into(),
            ..Default::default()
        })
        .await
        .expect("heartbeat by id")
        .into_inner();
    assert!(!heartbeat.cancel_requested);
    let described = raw
        .describe_workflow_execution(ws::DescribeWorkflowExecutionRequest {
            namespace: "default".into(),
            execution: execution(&id, ""),
        })
        .await
        .expect("describe")
        .into_inner();
    let pending = described
        .pending_activities
        .iter()
        .find(|a| a.activity_id == "ok")
        .expect("pending activity");
    assert_eq!(pending.heartbeat_details, payloads("halfway"));

    // An unknown activity ID is NotFound and changes nothing.
    let err = raw
        .respond_activity_task_completed_by_id(ws::RespondActivityTaskCompletedByIdRequest {
            namespace: "default".into(),
            workflow_id: id.clone(),
            run_id: started.run_id.clone(),
            activity_id: "nope".into(),
            result: payloads("x"),
            identity: "byid-test".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");

    raw.respond_activity_task_completed_by_id(ws::RespondActivityTaskCompletedByIdRequest {
        namespace: "default".into(),
        workflow_id: id.clone(),
        run_id: String::new(),
        activity_id: "ok".into(),
        result: payloads("done"),
        identity: "byid-test".into(),
        ..Default::default()
    })
    .await
    .expect("complete by id");
    raw.respond_activity_task_failed_by_id(ws::RespondActivityTaskFailedByIdRequest {
        namespace: "default".into(),
        workflow_id: id.clone(),
        run_id: started.run_id.clone(),
        activity_id: "bad".into(),
        failure: Some(Failure {
            message: "broken".into(),
            ..Default::default()
        }),
        identity: "byid-test".into(),
        ..Default::default()
    })
    .await
    .expect("fail by id");
    // Completing it again: the activity is gone.
    let err = raw
        .respond_activity_task_completed_by_id(ws::RespondActivityTaskCompletedByIdRequest {
            namespace: "default".into(),
            workflow_id: id.clone(),
            run_id: started.run_id.clone(),
            activity_id: "ok".into(),
            result: payloads("again"),
            identity: "byid-test".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    // History: one Completed with the result, one Failed with the failure (maximum_attempts 1).
    tokio::time::sleep(Duration::from_millis(50)).await;
    let events = raw
        .get_workflow_execution_history(ws::GetWorkflowExecutionHistoryRequest {
            namespace: "default".into(),
            execution: execution(&id, ""),
            ..Default::default()
        })
        .await
        .expect("history")
        .into_inner()
        .history
        .unwrap()
        .events;
    let completed: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.attributes {
            Some(Attributes::ActivityTaskCompletedEventAttributes(a)) => Some(a.result.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(completed, vec![payloads("done")]);
    let failed: Vec<_> = events
        .iter()
        .filter(|e| e.event_type == EventType::ActivityTaskFailed as i32)
        .collect();
    assert_eq!(failed.len(), 1);
    let Some(Attributes::ActivityTaskFailedEventAttributes(a)) = &failed[0].attributes else {
        unreachable!()
    };
    assert_eq!(a.failure.as_ref().unwrap().message, "broken");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_timeout_closes_the_run_and_memo_and_search_attributes_are_kept() {
    use chronicle_proto::temporal::api::common::v1::{Memo, SearchAttributes};
    use chronicle_proto::temporal::api::enums::v1::{HistoryEventFilterType, RetryState};

    let server = crate::common::start_server_with(|config| {
        config.search_attributes = vec![("CustomKeywordField".into(), 2)];
    })
    .await;
    let mut raw = raw_client(&server.server.url()).await;
    let id = unique("timeout");
    let mut request = start(&id, &unique("tq"));
    request.workflow_run_timeout = Some(prost_wkt_types_duration(1));
    request.memo = Some(Memo {
        fields: HashMap::from([(
            "owner".to_string(),
            payloads("ops").unwrap().payloads[0].clone(),
        )]),
    });
    let mut keyword = payloads("\"gold\"").unwrap().payloads[0].clone();
    keyword
        .metadata
        .insert("encoding".into(), b"json/plain".to_vec());
    request.search_attributes = Some(SearchAttributes {
        indexed_fields: HashMap::from([("CustomKeywordField".to_string(), keyword.clone())]),
    });
    let started = raw
        .start_workflow_execution(request)
        .await
        .expect("start")
        .into_inner();

    // Nobody polls: the run times out after one second. Wait for the close event.
    let closed = tokio::time::timeout(
        Duration::from_secs(20),
        raw.get_workflow_execution_history(ws::GetWorkflowExecutionHistoryRequest {
            namespace: "default".into(),
            execution: execution(&id, &started.run_id),
            wait_new_event: true,
            history_event_filter_type: HistoryEventFilterType::CloseEvent as i32,
            ..Default::default()
        }),
    )
    .await
    .expect("closed in time")
    .expect("history")
    .into_inner()
    .history
    .unwrap()
    .events;
    assert_eq!(closed.len(), 1);
    assert_eq!(
        closed[0].event_type,
        EventType::WorkflowExecutionTimedOut as i32
    );
    let Some(Attributes::WorkflowExecutionTimedOutEventAttributes(a)) = &closed[0].attributes
    else {
        panic!("timed-out event without attributes");
    };
    assert_eq!(a.retry_state, RetryState::RetryPolicyNotSet as i32);
    assert!(a.new_execution_run_id.is_empty());

    let described = raw
        .describe_workflow_execution(ws::DescribeWorkflowExecutionRequest {
            namespace: "default".into(),
            execution: execution(&id, ""),
        })
        .await
        .expect("describe")
        .into_inner();
    let info = described.workflow_execution_info.unwrap();
    assert_eq!(info.status, WorkflowExecutionStatus::TimedOut as i32);
    assert!(info.close_time.is_some());
    assert_eq!(info.memo.unwrap().fields["owner"].data, b"ops".to_vec());
    assert_eq!(
        info.search_attributes.unwrap().indexed_fields["CustomKeywordField"].data,
        keyword.data
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signal_with_start_is_one_atomic_step() {
    let server = start_server().await;
    let mut raw = raw_client(&server.server.url()).await;
    let tq = unique("tq");
    let id = unique("sws");
    let sws = |request_id: &str, signal: &str| ws::SignalWithStartWorkflowExecutionRequest {
        namespace: "default".into(),
        workflow_id: id.clone(),
        workflow_type: Some(WorkflowType { name: "Sws".into() }),
        task_queue: queue(&tq),
        signal_name: signal.into(),
        signal_input: payloads(signal),
        request_id: request_id.into(),
        identity: "sws-test".into(),
        ..Default::default()
    };

    let first = raw
        .signal_with_start_workflow_execution(sws("sws-1", "first"))
        .await
        .expect("signal with start")
        .into_inner();
    assert!(first.started);
    // The same request again (a client retry): the same run, and no second signal.
    let retried = raw
        .signal_with_start_workflow_execution(sws("sws-1", "first"))
        .await
        .expect("retried")
        .into_inner();
    assert_eq!(retried.run_id, first.run_id);
    assert!(!retried.started);

    // The first workflow task already holds the signal, between Started and TaskScheduled.
    let task = raw
        .poll_workflow_task_queue(ws::PollWorkflowTaskQueueRequest {
            namespace: "default".into(),
            task_queue: queue(&tq),
            identity: "sws-test".into(),
            ..Default::default()
        })
        .await
        .expect("poll")
        .into_inner();
    let types: Vec<i32> = task
        .history
        .as_ref()
        .unwrap()
        .events
        .iter()
        .map(|e| e.event_type)
        .collect();
    assert_eq!(
        types,
        vec![
            EventType::WorkflowExecutionStarted as i32,
            EventType::WorkflowExecutionSignaled as i32,
            EventType::WorkflowTaskScheduled as i32,
            EventType::WorkflowTaskStarted as i32,
        ]
    );

    // A running run just gets the signal.
    let second = raw
        .signal_with_start_workflow_execution(sws("sws-2", "second"))
        .await
        .expect("signal running")
        .into_inner();
    assert_eq!(second.run_id, first.run_id);
    assert!(!second.started);
    raw.respond_workflow_task_completed(ws::RespondWorkflowTaskCompletedRequest {
        namespace: "default".into(),
        task_token: task.task_token,
        ..Default::default()
    })
    .await
    .expect("complete");
    let events = raw
        .get_workflow_execution_history(ws::GetWorkflowExecutionHistoryRequest {
            namespace: "default".into(),
            execution: execution(&id, ""),
            ..Default::default()
        })
        .await
        .expect("history")
        .into_inner()
        .history
        .unwrap()
        .events;
    let signals: Vec<String> = events
        .iter()
        .filter_map(|e| match &e.attributes {
            Some(Attributes::WorkflowExecutionSignaledEventAttributes(a)) => {
                Some(a.signal_name.clone())
            }
            _ => None,
        })
        .collect();
    assert_eq!(signals, vec!["first".to_string(), "second".to_string()]);

    // Conflict policy FAIL makes no sense for signal-with-start: refused, nothing changes.
    let mut fail = sws("sws-3", "third");
    fail.workflow_id_conflict_policy = WorkflowIdConflictPolicy::Fail as i32;
    let err = raw
        .signal_with_start_workflow_execution(fail)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

/// A schedule-to-close deadline that ends an activity's retries reports the timeout with the
/// last attempt's failure as its cause, as Temporal does (SDKs show it as the timeout's cause).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedule_to_close_timeout_carries_the_last_failure_as_cause() {
    let server = start_server().await;
    let mut raw = raw_client(&server.server.url()).await;
    let tq = unique("tq");
    let id = unique("s2c");
    raw.start_workflow_execution(start(&id, &tq))
        .await
        .expect("start");
    let task = raw
        .poll_workflow_task_queue(poll(&tq))
        .await
        .expect("poll")
        .into_inner();
    let mut command = schedule("flaky", &tq);
    if let Some(command::Attributes::ScheduleActivityTaskCommandAttributes(a)) =
        command.attributes.as_mut()
    {
        a.schedule_to_close_timeout = Some(prost_wkt_types_duration(1));
        a.start_to_close_timeout = Some(prost_wkt_types_duration(1));
        // Retries would go on (the first after 100 ms) but nobody polls for them, so the
        // schedule-to-close deadline ends the activity.
        a.retry_policy = Some(RetryPolicy {
            initial_interval: Some(chronicle_proto::wkt::Duration {
                seconds: 0,
                nanos: 100_000_000,
            }),
            ..Default::default()
        });
        a.request_eager_execution = false;
    }
    raw.respond_workflow_task_completed(ws::RespondWorkflowTaskCompletedRequest {
        namespace: "default".into(),
        task_token: task.task_token,
        commands: vec![command],
        ..Default::default()
    })
    .await
    .expect("schedule");
    let activity = raw
        .poll_activity_task_queue(ws::PollActivityTaskQueueRequest {
            namespace: "default".into(),
            task_queue: queue(&tq),
            identity: "s2c-test".into(),
            ..Default::default()
        })
        .await
        .expect("poll activity")
        .into_inner();
    assert!(!activity.task_token.is_empty());
    raw.respond_activity_task_failed(ws::RespondActivityTaskFailedRequest {
        namespace: "default".into(),
        task_token: activity.task_token,
        failure: Some(Failure {
            message: "boom".into(),
            ..Default::default()
        }),
        identity: "s2c-test".into(),
        ..Default::default()
    })
    .await
    .expect("fail the first attempt");

    // The deadline passes with the retry unpolled: the workflow gets a task with the timeout.
    let task = raw
        .poll_workflow_task_queue(poll(&tq))
        .await
        .expect("poll")
        .into_inner();
    let timed_out = task
        .history
        .unwrap_or_default()
        .events
        .into_iter()
        .find_map(|e| match e.attributes {
            Some(Attributes::ActivityTaskTimedOutEventAttributes(a)) => Some(a),
            _ => None,
        })
        .expect("ActivityTaskTimedOut");
    let failure = timed_out.failure.expect("a timeout failure");
    assert_eq!(
        failure.cause.map(|c| c.message),
        Some("boom".to_string()),
        "the last attempt's failure is the cause"
    );
}
