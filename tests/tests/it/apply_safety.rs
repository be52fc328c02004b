//! Apply is safe to replicate: absurd durations from clients are refused or capped before they
//! reach the log (and the server keeps working), a group whose storage fails stops the server
//! with an error, and replaying a shard's log on fresh databases gives the same state, byte for
//! byte.

use std::sync::Arc;
use std::time::Duration;

use chronicle_proto::temporal::api::command::v1::{
    Command, CompleteWorkflowExecutionCommandAttributes, ScheduleActivityTaskCommandAttributes,
    StartTimerCommandAttributes, command::Attributes,
};
use chronicle_proto::temporal::api::common::v1::{ActivityType, RetryPolicy, WorkflowExecution};
use chronicle_proto::temporal::api::enums::v1::{EventType, WorkflowExecutionStatus};
use chronicle_proto::temporal::api::history::v1::history_event;
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use chronicle_proto::temporal::api::workflowservice::v1::workflow_service_client::WorkflowServiceClient;
use chronicle_proto::wkt;
use chronicle_server::RunningServer;
use tonic::Code;
use tonic::transport::Channel;

use crate::common::*;

/// Temporal's cap on durations: 100 years.
const HUNDRED_YEARS: i64 = 100 * 365 * 24 * 3600;

fn secs(seconds: i64, nanos: i32) -> Option<wkt::Duration> {
    Some(wkt::Duration { seconds, nanos })
}

fn command(attributes: Attributes) -> Command {
    Command {
        attributes: Some(attributes),
        ..Default::default()
    }
}

fn timer(id: &str, timeout: Option<wkt::Duration>) -> Command {
    command(Attributes::StartTimerCommandAttributes(
        StartTimerCommandAttributes {
            timer_id: id.into(),
            start_to_fire_timeout: timeout,
        },
    ))
}

fn activity(
    id: &str,
    start_to_close: Option<wkt::Duration>,
    retry: Option<RetryPolicy>,
) -> Command {
    command(Attributes::ScheduleActivityTaskCommandAttributes(
        ScheduleActivityTaskCommandAttributes {
            activity_id: id.into(),
            activity_type: Some(ActivityType { name: "A".into() }),
            start_to_close_timeout: start_to_close,
            retry_policy: retry,
            ..Default::default()
        },
    ))
}

fn complete(token: Vec<u8>, commands: Vec<Command>) -> ws::RespondWorkflowTaskCompletedRequest {
    ws::RespondWorkflowTaskCompletedRequest {
        namespace: "default".into(),
        task_token: token,
        commands,
        identity: "apply-safety".into(),
        ..Default::default()
    }
}

fn invalid(result: Result<impl std::fmt::Debug, tonic::Status>, field: &str) {
    let err = result.expect_err("refused");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains(field),
        "the error names {field}: {}",
        err.message()
    );
}

/// Runs one ordinary workflow to completion: the server still works.
async fn a_normal_workflow_completes(raw: &mut WorkflowServiceClient<Channel>) {
    let tq = unique("normal");
    let id = unique("normal");
    raw.start_workflow_execution(start_request(&id, "Normal", &tq))
        .await
        .expect("start");
    let task = raw
        .poll_workflow_task_queue(poll(&tq))
        .await
        .expect("poll")
        .into_inner();
    raw.respond_workflow_task_completed(complete(
        task.task_token,
        vec![command(
            Attributes::CompleteWorkflowExecutionCommandAttributes(
                CompleteWorkflowExecutionCommandAttributes::default(),
            ),
        )],
    ))
    .await
    .expect("complete");
    let described = raw
        .describe_workflow_execution(ws::DescribeWorkflowExecutionRequest {
            namespace: "default".into(),
            execution: execution(&id, ""),
        })
        .await
        .expect("describe")
        .into_inner();
    assert_eq!(
        described.workflow_execution_info.map(|i| i.status),
        Some(WorkflowExecutionStatus::Completed as i32)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurd_durations_are_refused_or_capped_and_the_server_keeps_working() {
    let server = start_server().await;
    let mut raw = raw_client(&server.server.url()).await;
    let tq = unique("durations");

    // StartWorkflowExecution: negative, mixed-sign and malformed durations are refused, naming
    // the field; nothing is started.
    let refused_id = unique("refused");
    let with = |f: &dyn Fn(&mut ws::StartWorkflowExecutionRequest)| {
        let mut r = start_request(&refused_id, "W", &tq);
        f(&mut r);
        r
    };
    let bad_starts: Vec<(ws::StartWorkflowExecutionRequest, &str)> = vec![
        (
            with(&|r| r.workflow_execution_timeout = secs(i64::MIN, 0)),
            "WorkflowExecutionTimeout",
        ),
        (
            with(&|r| r.workflow_run_timeout = secs(-1, 0)),
            "WorkflowRunTimeout",
        ),
        (
            with(&|r| r.workflow_task_timeout = secs(1, -5)),
            "WorkflowTaskTimeout",
        ),
        (
            with(&|r| r.workflow_run_timeout = secs(0, i32::MAX)),
            "WorkflowRunTimeout",
        ),
        (
            with(&|r| r.workflow_start_delay = secs(i64::MIN, i32::MIN)),
            "WorkflowStartDelay",
        ),
        (
            with(&|r| {
                r.retry_policy = Some(RetryPolicy {
                    backoff_coefficient: 0.5,
                    ..Default::default()
                })
            }),
            "RetryPolicy",
        ),
        (
            with(&|r| {
                r.retry_policy = Some(RetryPolicy {
                    initial_interval: secs(-3, 0),
                    ..Default::default()
                })
            }),
            "InitialInterval",
        ),
    ];
    for (request, field) in bad_starts {
        invalid(raw.start_workflow_execution(request).await, field);
    }
    let described = raw
        .describe_workflow_execution(ws::DescribeWorkflowExecutionRequest {
            namespace: "default".into(),
            execution: execution(&refused_id, ""),
        })
        .await;
    assert_eq!(described.expect_err("not started").code(), Code::NotFound);

    // Huge ones are capped to 100 years, as Temporal does, and the run works.
    let id = unique("huge");
    let mut request = start_request(&id, "W", &tq);
    request.workflow_execution_timeout = secs(i64::MAX, 999_999_999);
    request.workflow_run_timeout = secs(i64::MAX, 0);
    request.retry_policy = Some(RetryPolicy {
        initial_interval: secs(i64::MAX, 0),
        maximum_interval: secs(i64::MAX, 0),
        backoff_coefficient: 1e300,
        ..Default::default()
    });
    raw.start_workflow_execution(request)
        .await
        .expect("capped start");
    let events = workflow_history(&mut raw, &id).await;
    let Some(history_event::Attributes::WorkflowExecutionStartedEventAttributes(started)) =
        &events[0].attributes
    else {
        panic!("started event first: {events:?}");
    };
    assert_eq!(started.workflow_execution_timeout, secs(HUNDRED_YEARS, 0));
    assert_eq!(started.workflow_run_timeout, secs(HUNDRED_YEARS, 0));

    // Its workflow task's commands: a negative or malformed one fails the workflow task with
    // InvalidArgument naming the field (as Temporal's command checker does: a WorkflowTaskFailed
    // event and a new task, so the SDK is not left retrying a task that can never complete);
    // huge ones are capped.
    let bad_completions = [
        (vec![timer("t", secs(-1, 0))], "StartToFireTimeout"),
        (
            vec![activity("a", secs(i64::MIN, 0), None)],
            "StartToCloseTimeout",
        ),
        (
            vec![timer("t", secs(5, 1_000_000_000)), timer("u", secs(-5, 0))],
            "StartToFireTimeout",
        ),
    ];
    for (commands, field) in bad_completions {
        let task = raw
            .poll_workflow_task_queue(poll(&tq))
            .await
            .expect("poll")
            .into_inner();
        assert!(
            !task.task_token.is_empty(),
            "a new task after the failed one"
        );
        invalid(
            raw.respond_workflow_task_completed(complete(task.task_token, commands))
                .await,
            field,
        );
    }
    let task = raw
        .poll_workflow_task_queue(poll(&tq))
        .await
        .expect("poll")
        .into_inner();
    raw.respond_workflow_task_completed(complete(
        task.task_token,
        vec![
            timer("t", secs(i64::MAX, 999_999_999)),
            activity(
                "a",
                secs(i64::MAX, 0),
                Some(RetryPolicy {
                    initial_interval: secs(i64::MAX, 0),
                    backoff_coefficient: 1e300,
                    ..Default::default()
                }),
            ),
        ],
    ))
    .await
    .expect("capped commands");
    let events = workflow_history(&mut raw, &id).await;
    let timer_started = events
        .iter()
        .find_map(|e| match &e.attributes {
            Some(history_event::Attributes::TimerStartedEventAttributes(a)) => Some(a.clone()),
            _ => None,
        })
        .expect("timer started");
    assert_eq!(timer_started.start_to_fire_timeout, secs(HUNDRED_YEARS, 0));
    let scheduled = events
        .iter()
        .find_map(|e| match &e.attributes {
            Some(history_event::Attributes::ActivityTaskScheduledEventAttributes(a)) => {
                Some(a.clone())
            }
            _ => None,
        })
        .expect("activity scheduled");
    assert_eq!(scheduled.start_to_close_timeout, secs(HUNDRED_YEARS, 0));
    // Each refused completion failed its workflow task, as in Temporal; only the first failure
    // is in history (the retries after it are transient attempts, as in Temporal).
    assert_eq!(
        events
            .iter()
            .filter(|e| e.event_type == EventType::WorkflowTaskFailed as i32)
            .count(),
        1
    );

    // The activity fails and asks for an absurd retry delay: refused, then an ordinary failure
    // is retried with the (capped, huge) backoff without overflowing.
    let activity_task = raw
        .poll_activity_task_queue(ws::PollActivityTaskQueueRequest {
            namespace: "default".into(),
            task_queue: queue(&tq),
            identity: "apply-safety".into(),
            ..Default::default()
        })
        .await
        .expect("activity poll")
        .into_inner();
    use chronicle_proto::temporal::api::failure::v1::{
        ApplicationFailureInfo, Failure, failure::FailureInfo,
    };
    let failure = |delay| Failure {
        message: "boom".into(),
        failure_info: Some(FailureInfo::ApplicationFailureInfo(
            ApplicationFailureInfo {
                next_retry_delay: delay,
                ..Default::default()
            },
        )),
        ..Default::default()
    };
    invalid(
        raw.respond_activity_task_failed(ws::RespondActivityTaskFailedRequest {
            namespace: "default".into(),
            task_token: activity_task.task_token.clone(),
            failure: Some(failure(secs(-1, 0))),
            ..Default::default()
        })
        .await,
        "NextRetryDelay",
    );
    raw.respond_activity_task_failed(ws::RespondActivityTaskFailedRequest {
        namespace: "default".into(),
        task_token: activity_task.task_token,
        failure: Some(failure(None)),
        ..Default::default()
    })
    .await
    .expect("failure retried");
    // The capped backoff (100 years) would outlast the run's capped timeout: the activity
    // fails for good with retry state Timeout, computed without overflow.
    let failed = workflow_history(&mut raw, &id)
        .await
        .into_iter()
        .find_map(|e| match e.attributes {
            Some(history_event::Attributes::ActivityTaskFailedEventAttributes(a)) => Some(a),
            _ => None,
        })
        .expect("activity failed");
    assert_eq!(
        failed.retry_state,
        chronicle_proto::temporal::api::enums::v1::RetryState::Timeout as i32
    );

    // A namespace's retention: negative is refused, huge is capped (it was multiplied unchecked).
    invalid(
        raw.register_namespace(ws::RegisterNamespaceRequest {
            namespace: unique("ns"),
            workflow_execution_retention_period: secs(-86_400, 0),
            ..Default::default()
        })
        .await,
        "WorkflowExecutionRetentionPeriod",
    );
    let ns = unique("ns");
    raw.register_namespace(ws::RegisterNamespaceRequest {
        namespace: ns.clone(),
        workflow_execution_retention_period: secs(i64::MAX, 0),
        ..Default::default()
    })
    .await
    .expect("capped retention");
    let described = raw
        .describe_namespace(ws::DescribeNamespaceRequest {
            namespace: ns,
            ..Default::default()
        })
        .await
        .expect("describe namespace")
        .into_inner();
    let retention = described
        .config
        .and_then(|c| c.workflow_execution_retention_ttl)
        .expect("retention");
    assert!(
        retention.seconds > 0 && retention.seconds <= HUNDRED_YEARS,
        "{retention:?}"
    );

    a_normal_workflow_completes(&mut raw).await;
    raw.terminate_workflow_execution(ws::TerminateWorkflowExecutionRequest {
        namespace: "default".into(),
        workflow_execution: Some(WorkflowExecution {
            workflow_id: id,
            run_id: String::new(),
        }),
        ..Default::default()
    })
    .await
    .expect("terminate");
    server.server.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_whose_storage_fails_stops_the_server_with_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_for(dir.path());
    config.num_shards = Some(1);
    let server = RunningServer::start(config).await.expect("start");
    let mut raw = raw_client(&server.url()).await;
    a_normal_workflow_completes(&mut raw).await;

    // From now on the shard's current-run records cannot be read: the next start's apply fails.
    chronicle_storage::fault::fail_reads(dir.path(), 0, chronicle_storage::Cf::Current);
    let tq = unique("doomed");
    let id = unique("doomed");
    let started = raw
        .start_workflow_execution(start_request(&id, "W", &tq))
        .await;
    assert!(started.is_err(), "nothing is acknowledged: {started:?}");
    let ended = tokio::time::timeout(Duration::from_secs(20), server.finished())
        .await
        .expect("the server stops by itself");
    chronicle_storage::fault::clear_faults(dir.path());
    let err = ended.expect_err("the server ends with an error");
    assert!(
        err.to_string()
            .contains("raft group 0 stopped on a fatal error"),
        "{err:#}"
    );

    // Restarted on the same data, the node re-applies the log: the start that failed to apply
    // is in the log (it was committed), so the workflow exists now, with the history every
    // replica would have recorded.
    // (In-process, the data directory is free once the old server's connections are gone; the
    // binary exits instead.)
    drop(raw);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let server = loop {
        match RunningServer::start(config_for_one_shard(dir.path())).await {
            Ok(server) => break server,
            Err(e)
                if tokio::time::Instant::now() < deadline && e.to_string().contains("in use") =>
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("restart: {e:#}"),
        }
    };
    let mut raw = raw_client(&server.url()).await;
    let events = workflow_history(&mut raw, &id).await;
    assert_eq!(
        events.first().map(|e| e.event_type),
        Some(EventType::WorkflowExecutionStarted as i32)
    );
    assert!(
        !events
            .iter()
            .any(|e| e.event_type == EventType::WorkflowTaskFailed as i32)
    );
    a_normal_workflow_completes(&mut raw).await;
    server.stop().await.expect("clean stop");
}

fn config_for_one_shard(path: &std::path::Path) -> chronicle_server::ServerConfig {
    let mut config = config_for(path);
    config.num_shards = Some(1);
    config
}

/// Replays every group's log of a stopped server on a fresh database; returns the database.
pub(crate) async fn replay(
    source: &chronicle_storage::Db,
    groups: &[u32],
    batch_entries: usize,
) -> (tempfile::TempDir, chronicle_storage::Db) {
    let dir = tempfile::tempdir().unwrap();
    let db = chronicle_storage::Db::open(dir.path(), Default::default()).expect("fresh db");
    for group in groups {
        let applier = Arc::new(chronicle_history::apply::HistoryApplier {
            notifier: Default::default(),
            namespace_names: None,
        });
        let applied =
            chronicle_raft::replay_log(source, db.clone(), *group, applier, batch_entries)
                .await
                .expect("replay");
        assert!(applied > 0, "group {group} has a log");
    }
    (dir, db)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_the_logs_on_fresh_databases_gives_identical_state() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_for(dir.path());
    let num_shards = config.num_shards.expect("shard count");
    let server = RunningServer::start(config).await.expect("start");
    mixed_workload(&server.url()).await;
    server.stop().await.expect("clean stop");

    let source =
        chronicle_storage::Db::open(dir.path(), Default::default()).expect("reopen the data");
    let mut groups: Vec<u32> = (0..num_shards).collect();
    groups.push(chronicle_types::shard::METADATA_GROUP);
    // Two replays, one applying entry by entry and one in large batches (as a busy leader
    // does), and the original.
    let (_a, one_by_one) = replay(&source, &groups, 1).await;
    let (_b, batched) = replay(&source, &groups, 500).await;
    let (mut history_rows, mut shards_with_history, mut namespace_rows) = (0, 0, 0);
    for group in groups {
        let original = chronicle_storage::digest::shard_digest(&source, group).unwrap();
        let a = chronicle_storage::digest::shard_digest(&one_by_one, group).unwrap();
        let b = chronicle_storage::digest::shard_digest(&batched, group).unwrap();
        assert_eq!(
            a,
            b,
            "group {group}: replays differ in {:?}",
            a.differing_families(&b)
        );
        assert_eq!(
            original,
            a,
            "group {group}: the replay differs from the original in {:?}",
            original.differing_families(&a)
        );
        let rows = |family: &str| {
            original
                .families
                .iter()
                .filter(|f| f.family == family)
                .map(|f| f.rows)
                .sum::<u64>()
        };
        history_rows += rows("history");
        shards_with_history += u32::from(rows("history") > 0);
        namespace_rows += rows("namespaces");
    }
    // (Workflow IDs are random, so which shards hold what varies; the workload spans several.)
    assert!(history_rows > 20, "{history_rows} history batches");
    assert!(shards_with_history >= 2, "{shards_with_history} shards");
    assert!(
        namespace_rows >= 1,
        "the metadata group holds the namespaces"
    );
}

/// Signals, a query, timers, activities (one retried), children across shards, continue-as-new,
/// a termination, deletions, a workflow left waiting with a pending task and a signal, and
/// standalone activities (completed, canceled, terminated, deleted, delayed).
async fn mixed_workload(url: &str) {
    use crate::child_workflows::{Doubler, FanOutParent};
    use crate::sdk_workflows::{LoopWorkflow, OrderWorkflow, RetryWorkflow, Steps};
    use temporalio_client::{
        WorkflowGetResultOptions, WorkflowQueryOptions, WorkflowSignalOptions, WorkflowStartOptions,
    };
    let client = sdk_client(url).await;
    let task_queue = unique("mixed");
    let runtime = runtime();
    let options = temporalio_sdk::WorkerOptions::new(&task_queue)
        .deployment_options(deployment())
        .register_activities(Steps::default())
        .register_workflow::<OrderWorkflow>()
        .expect("register")
        .register_workflow::<RetryWorkflow>()
        .expect("register")
        .register_workflow::<LoopWorkflow>()
        .expect("register")
        .register_workflow::<FanOutParent>()
        .expect("register")
        .register_workflow::<Doubler>()
        .expect("register")
        .build();
    let mut worker = new_worker(&runtime, client.clone(), options);
    let stop = worker.shutdown_handle();
    let start = |id: &str| WorkflowStartOptions::new(task_queue.clone(), id.to_string()).build();
    let (run, ()) = tokio::join!(worker.run(), async {
        let order = client
            .start_workflow(OrderWorkflow::run, 10, start(&unique("order")))
            .await
            .expect("start order");
        let retry = client
            .start_workflow(RetryWorkflow::run, 4, start(&unique("retry")))
            .await
            .expect("start retry");
        let chain = client
            .start_workflow(LoopWorkflow::run, (0u32, 2u32), start(&unique("loop")))
            .await
            .expect("start loop");
        let children: Vec<String> = (0..4).map(|i| unique(&format!("child-{i}"))).collect();
        let parent = client
            .start_workflow(FanOutParent::run, children, start(&unique("parent")))
            .await
            .expect("start parent");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let approved = order
            .query(
                OrderWorkflow::is_approved,
                (),
                WorkflowQueryOptions::default(),
            )
            .await
            .expect("query");
        assert!(!approved);
        order
            .signal(
                OrderWorkflow::approve,
                "alice".to_string(),
                WorkflowSignalOptions::default(),
            )
            .await
            .expect("signal");
        assert_eq!(
            order
                .get_result(WorkflowGetResultOptions::default())
                .await
                .expect("order"),
            13
        );
        assert_eq!(
            retry
                .get_result(WorkflowGetResultOptions::default())
                .await
                .expect("retry"),
            40
        );
        assert_eq!(
            chain
                .get_result(WorkflowGetResultOptions::default())
                .await
                .expect("chain"),
            2
        );
        assert_eq!(
            parent
                .get_result(WorkflowGetResultOptions::default())
                .await
                .expect("parent"),
            20
        );
        stop();
    });
    run.expect("worker ran");

    crate::updates::update_workload(url).await;

    // Raw: a workflow left with several pending timers and activities (maps of its state with
    // more than one entry: their encoding must not depend on a hash order).
    let mut raw = raw_client(url).await;
    let busy_queue = unique("busy");
    // Its memo has several fields (a Temporal map: prost writes it in HashMap order).
    let mut busy = start_request(&unique("busy"), "Busy", &busy_queue);
    busy.memo = Some(chronicle_proto::temporal::api::common::v1::Memo {
        fields: (0..6)
            .map(|i| {
                (
                    format!("field-{i}"),
                    payloads("memo").unwrap().payloads[0].clone(),
                )
            })
            .collect(),
    });
    raw.start_workflow_execution(busy)
        .await
        .expect("start busy");
    let task = raw
        .poll_workflow_task_queue(poll(&busy_queue))
        .await
        .expect("poll busy")
        .into_inner();
    let mut commands: Vec<Command> = (0..4)
        .map(|i| timer(&format!("t{i}"), secs(3600 + i, 0)))
        .collect();
    commands.extend((0..4).map(|i| activity(&format!("a{i}"), secs(600, 0), None)));
    raw.respond_workflow_task_completed(complete(task.task_token, commands))
        .await
        .expect("busy commands");

    // A workflow nobody works on (its task stays in the outbox), signalled; another terminated
    // then deleted; a third deleted while running.
    let idle_queue = unique("idle");
    for (i, id) in [unique("idle"), unique("doomed"), unique("deleted")]
        .iter()
        .enumerate()
    {
        raw.start_workflow_execution(start_request(id, "Idle", &idle_queue))
            .await
            .expect("start idle");
        raw.signal_workflow_execution(ws::SignalWorkflowExecutionRequest {
            namespace: "default".into(),
            workflow_execution: execution(id, ""),
            signal_name: "poke".into(),
            request_id: unique("sig"),
            ..Default::default()
        })
        .await
        .expect("signal idle");
        if i == 1 {
            raw.terminate_workflow_execution(ws::TerminateWorkflowExecutionRequest {
                namespace: "default".into(),
                workflow_execution: execution(id, ""),
                reason: "done".into(),
                ..Default::default()
            })
            .await
            .expect("terminate");
        }
        // Deletions (range deletes of history, a running run terminated first) replay too.
        if i == 1 || i == 2 {
            raw.delete_workflow_execution(ws::DeleteWorkflowExecutionRequest {
                namespace: "default".into(),
                workflow_execution: execution(id, ""),
            })
            .await
            .expect("delete");
        }
    }

    // Standalone activities: one run by a worker to completion, one canceled before any worker
    // took it, one terminated, one deleted, one left waiting with a start delay.
    let activity_queue = unique("standalone");
    let start_activity =
        |id: &str, delay: Option<wkt::Duration>| ws::StartActivityExecutionRequest {
            namespace: "default".into(),
            activity_id: id.into(),
            request_id: unique("start-activity"),
            activity_type: Some(ActivityType {
                name: "Standalone".into(),
            }),
            task_queue: Some(chronicle_proto::temporal::api::taskqueue::v1::TaskQueue {
                name: activity_queue.clone(),
                ..Default::default()
            }),
            start_to_close_timeout: secs(600, 0),
            schedule_to_close_timeout: secs(3600, 0),
            start_delay: delay,
            ..Default::default()
        };
    let ids: Vec<String> = (0..5).map(|i| unique(&format!("standalone-{i}"))).collect();
    for (i, id) in ids.iter().enumerate() {
        let delay = (i == 4).then(|| secs(3600, 0)).flatten();
        raw.start_activity_execution(start_activity(id, delay))
            .await
            .expect("start standalone activity");
    }
    let task = raw
        .poll_activity_task_queue(ws::PollActivityTaskQueueRequest {
            namespace: "default".into(),
            task_queue: Some(chronicle_proto::temporal::api::taskqueue::v1::TaskQueue {
                name: activity_queue.clone(),
                ..Default::default()
            }),
            identity: "replay-worker".into(),
            ..Default::default()
        })
        .await
        .expect("poll standalone activity")
        .into_inner();
    raw.respond_activity_task_completed(ws::RespondActivityTaskCompletedRequest {
        namespace: "default".into(),
        task_token: task.task_token,
        result: payloads("done"),
        ..Default::default()
    })
    .await
    .expect("complete standalone activity");
    // (The completed one is whichever the poll got; the others act on the rest by ID.)
    let rest: Vec<&String> = ids[..4]
        .iter()
        .filter(|id| **id != task.activity_id)
        .collect();
    raw.request_cancel_activity_execution(ws::RequestCancelActivityExecutionRequest {
        namespace: "default".into(),
        activity_id: rest[0].clone(),
        request_id: unique("cancel"),
        reason: "not needed".into(),
        ..Default::default()
    })
    .await
    .expect("cancel standalone activity");
    raw.terminate_activity_execution(ws::TerminateActivityExecutionRequest {
        namespace: "default".into(),
        activity_id: rest[1].clone(),
        request_id: unique("terminate"),
        reason: "stop".into(),
        ..Default::default()
    })
    .await
    .expect("terminate standalone activity");
    raw.delete_activity_execution(ws::DeleteActivityExecutionRequest {
        namespace: "default".into(),
        activity_id: rest[2].clone(),
        ..Default::default()
    })
    .await
    .expect("delete standalone activity");
}
