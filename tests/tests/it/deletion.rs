//! Deleting runs and namespaces: DeleteWorkflowExecution (a running run is terminated first),
//! retention (a closed run is deleted once its namespace's retention has passed after its close),
//! DeleteNamespace. After a deletion the run answers NotFound as Temporal does, its workflow ID
//! is free, and no row of it is left in any column family of the data directory.

use std::time::{Duration, Instant};

use chronicle_proto::temporal::api::enums::v1::{
    NamespaceState, WorkflowExecutionStatus, WorkflowIdReusePolicy,
};
use chronicle_proto::temporal::api::operatorservice::v1 as os;
use chronicle_proto::temporal::api::operatorservice::v1::operator_service_client::OperatorServiceClient;
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use chronicle_proto::temporal::api::workflowservice::v1::workflow_service_client::WorkflowServiceClient;
use chronicle_server::RunningServer;
use chronicle_storage::{Db, DbOptions, ShardTables};
use tonic::Code;
use tonic::transport::Channel;

use crate::common::*;

async fn describe(
    raw: &mut WorkflowServiceClient<Channel>,
    namespace: &str,
    workflow_id: &str,
    run_id: &str,
) -> Result<ws::DescribeWorkflowExecutionResponse, tonic::Status> {
    raw.describe_workflow_execution(ws::DescribeWorkflowExecutionRequest {
        namespace: namespace.into(),
        execution: execution(workflow_id, run_id),
    })
    .await
    .map(|r| r.into_inner())
}

/// Waits until describe answers NotFound; that answer.
async fn wait_gone(
    raw: &mut WorkflowServiceClient<Channel>,
    namespace: &str,
    workflow_id: &str,
    run_id: &str,
    within: Duration,
) -> tonic::Status {
    let deadline = Instant::now() + within;
    loop {
        match describe(raw, namespace, workflow_id, run_id).await {
            Err(e) if e.code() == Code::NotFound => return e,
            Err(e) => panic!("describe failed: {e:?}"),
            Ok(_) => assert!(
                Instant::now() < deadline,
                "{workflow_id} still exists after {within:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn delete(
    raw: &mut WorkflowServiceClient<Channel>,
    workflow_id: &str,
    run_id: &str,
) -> Result<(), tonic::Status> {
    raw.delete_workflow_execution(ws::DeleteWorkflowExecutionRequest {
        namespace: "default".into(),
        workflow_execution: execution(workflow_id, run_id),
    })
    .await
    .map(drop)
}

/// Every row of the data directory that names the workflow: its runs, their history, its
/// current-run record, timers (visibility rows go with the runs, in the same write batch).
fn rows_naming(
    dir: &std::path::Path,
    shards: u32,
    namespace_id: &str,
    workflow_id: &str,
    run_ids: &[&str],
) -> Vec<String> {
    let db = Db::open(dir, DbOptions::default()).expect("reopen the data directory");
    let mut found = Vec::new();
    for shard in 0..shards {
        let tables = ShardTables::new(db.clone(), shard);
        for run_id in run_ids {
            let events = tables
                .history(namespace_id, workflow_id, run_id, 1, 10)
                .expect("history");
            if !events.is_empty() {
                found.push(format!("{} events of {run_id}", events.len()));
            }
        }
        if tables
            .current(namespace_id, workflow_id)
            .expect("current")
            .is_some()
        {
            found.push("current record".into());
        }
        for state in tables.executions(usize::MAX).expect("executions") {
            if state.workflow_id == workflow_id {
                found.push(format!("execution {}", state.run_id));
            }
        }
        for (_, timer) in tables
            .timers_between(i64::MIN, i64::MAX, usize::MAX)
            .expect("timers")
        {
            if timer.workflow_id == workflow_id {
                found.push(format!("timer kind {}", timer.kind));
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_running_workflow_terminates_and_removes_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_for(dir.path());
    let shards = config.num_shards.expect("shard count");
    let server = RunningServer::start(config).await.expect("start");
    let mut raw = raw_client(&server.url()).await;
    let workflow_id = unique("del");
    let run_id = raw
        .start_workflow_execution(start_request(&workflow_id, "Waits", &unique("tq")))
        .await
        .expect("start")
        .into_inner()
        .run_id;
    // No run ID: the current run.
    delete(&mut raw, &workflow_id, "").await.expect("delete");
    let gone = wait_gone(
        &mut raw,
        "default",
        &workflow_id,
        &run_id,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(
        gone.message(),
        format!(
            "workflow execution not found for workflow ID \"{workflow_id}\" and run ID \"{run_id}\""
        )
    );
    let history = raw
        .get_workflow_execution_history(ws::GetWorkflowExecutionHistoryRequest {
            namespace: "default".into(),
            execution: execution(&workflow_id, &run_id),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(history.code(), Code::NotFound);
    let current = describe(&mut raw, "default", &workflow_id, "")
        .await
        .unwrap_err();
    assert_eq!(
        current.message(),
        format!("workflow not found for ID: {workflow_id}")
    );
    // Deleting again: NotFound, as Temporal answers.
    assert_eq!(
        delete(&mut raw, &workflow_id, "").await.unwrap_err().code(),
        Code::NotFound
    );
    let listed = raw
        .list_workflow_executions(ws::ListWorkflowExecutionsRequest {
            namespace: "default".into(),
            query: format!("WorkflowId = '{workflow_id}'"),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert!(listed.executions.is_empty(), "{listed:?}");
    // The ID is free for any reuse policy.
    let mut again = start_request(&workflow_id, "Waits", &unique("tq"));
    again.workflow_id_reuse_policy = WorkflowIdReusePolicy::RejectDuplicate as i32;
    let second = raw
        .start_workflow_execution(again)
        .await
        .expect("the ID starts again")
        .into_inner()
        .run_id;
    delete(&mut raw, &workflow_id, &second)
        .await
        .expect("delete");
    wait_gone(
        &mut raw,
        "default",
        &workflow_id,
        &second,
        Duration::from_secs(10),
    )
    .await;
    let namespace_id = namespace_id(&mut raw, "default").await;
    server.stop().await.expect("clean stop");
    let left = rows_naming(
        dir.path(),
        shards,
        &namespace_id,
        &workflow_id,
        &[&run_id, &second],
    );
    assert!(left.is_empty(), "rows left: {left:?}");
}

async fn namespace_id(raw: &mut WorkflowServiceClient<Channel>, name: &str) -> String {
    raw.describe_namespace(ws::DescribeNamespaceRequest {
        namespace: name.into(),
        ..Default::default()
    })
    .await
    .expect("describe namespace")
    .into_inner()
    .namespace_info
    .expect("info")
    .id
}

async fn register(raw: &mut WorkflowServiceClient<Channel>, retention: Duration) -> String {
    let name = unique("ret");
    raw.register_namespace(ws::RegisterNamespaceRequest {
        namespace: name.clone(),
        workflow_execution_retention_period: Some(chronicle_types::time::duration_from_millis(
            retention.as_millis() as i64,
        )),
        ..Default::default()
    })
    .await
    .expect("register");
    name
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_runs_are_deleted_once_retention_has_passed() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_for(dir.path());
    let shards = config.num_shards.expect("shard count");
    let server = RunningServer::start(config).await.expect("start");
    let mut raw = raw_client(&server.url()).await;
    let namespace = register(&mut raw, Duration::from_secs(2)).await;
    let described = raw
        .describe_namespace(ws::DescribeNamespaceRequest {
            namespace: namespace.clone(),
            ..Default::default()
        })
        .await
        .expect("describe")
        .into_inner();
    // Kept exactly (it used to be rounded to whole days, and a day or less became three).
    assert_eq!(
        described
            .config
            .and_then(|c| c.workflow_execution_retention_ttl),
        Some(chronicle_types::time::duration_from_millis(2_000))
    );
    let start = |id: &str| {
        let mut r = start_request(id, "Waits", "retention-tq");
        r.namespace = namespace.clone();
        r
    };
    let closed_id = unique("closed");
    let open_id = unique("open");
    let closed_run = raw
        .start_workflow_execution(start(&closed_id))
        .await
        .expect("start")
        .into_inner()
        .run_id;
    raw.start_workflow_execution(start(&open_id))
        .await
        .expect("start");
    raw.terminate_workflow_execution(ws::TerminateWorkflowExecutionRequest {
        namespace: namespace.clone(),
        workflow_execution: execution(&closed_id, ""),
        ..Default::default()
    })
    .await
    .expect("terminate");
    let closed_at = Instant::now();
    wait_gone(
        &mut raw,
        &namespace,
        &closed_id,
        &closed_run,
        Duration::from_secs(15),
    )
    .await;
    assert!(
        closed_at.elapsed() >= Duration::from_millis(1_500),
        "deleted {:?} after its close, before the retention of 2s",
        closed_at.elapsed()
    );
    // An open run is never expired.
    let open = describe(&mut raw, &namespace, &open_id, "")
        .await
        .expect("open run");
    assert_eq!(
        open.workflow_execution_info.map(|i| i.status),
        Some(WorkflowExecutionStatus::Running as i32)
    );
    let namespace_id = namespace_id(&mut raw, &namespace).await;
    server.stop().await.expect("clean stop");
    let left = rows_naming(
        dir.path(),
        shards,
        &namespace_id,
        &closed_id,
        &[&closed_run],
    );
    assert!(left.is_empty(), "rows left: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_namespace_renames_it_and_deletes_its_runs() {
    let server = start_server().await;
    let url = server.server.url();
    let mut raw = raw_client(&url).await;
    let channel = tonic::transport::Endpoint::from_shared(url.clone())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut operator = OperatorServiceClient::new(channel);
    let namespace = register(&mut raw, Duration::from_secs(3600)).await;
    let id = namespace_id(&mut raw, &namespace).await;
    for _ in 0..5 {
        let mut r = start_request(&unique("doomed"), "Waits", "delns-tq");
        r.namespace = namespace.clone();
        raw.start_workflow_execution(r).await.expect("start");
    }
    // Deprecated first: starts are refused with Temporal's error, the rest still works.
    raw.deprecate_namespace(ws::DeprecateNamespaceRequest {
        namespace: namespace.clone(),
        ..Default::default()
    })
    .await
    .expect("deprecate");
    let mut refused = start_request(&unique("late"), "Waits", "delns-tq");
    refused.namespace = namespace.clone();
    let err = raw.start_workflow_execution(refused).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(
        err.message(),
        "Namespace has invalid state: Deprecated. Must be Registered."
    );

    let deleted = operator
        .delete_namespace(os::DeleteNamespaceRequest {
            namespace: namespace.clone(),
            ..Default::default()
        })
        .await
        .expect("delete namespace")
        .into_inner()
        .deleted_namespace;
    assert_eq!(deleted, format!("{namespace}-deleted-{}", &id[..5]));
    let renamed = raw
        .describe_namespace(ws::DescribeNamespaceRequest {
            namespace: deleted.clone(),
            ..Default::default()
        })
        .await
        .expect("the renamed namespace")
        .into_inner()
        .namespace_info
        .expect("info");
    assert_eq!(renamed.state, NamespaceState::Deleted as i32);
    assert_eq!(renamed.id, id);
    // A deleted namespace serves nothing.
    let listing = raw
        .list_workflow_executions(ws::ListWorkflowExecutionsRequest {
            namespace: deleted.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(listing.code(), Code::FailedPrecondition);
    // The old name is free at once.
    register_named(&mut raw, &namespace).await;
    // Its runs are deleted, then its record.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let found = raw
            .describe_namespace(ws::DescribeNamespaceRequest {
                namespace: deleted.clone(),
                ..Default::default()
            })
            .await;
        match found {
            Err(e) if e.code() == Code::NotFound => break,
            _ => assert!(Instant::now() < deadline, "the deleted namespace stays"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let unknown = operator
        .delete_namespace(os::DeleteNamespaceRequest {
            namespace: unique("nope"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    server.server.stop().await.expect("clean stop");
}

async fn register_named(raw: &mut WorkflowServiceClient<Channel>, name: &str) {
    raw.register_namespace(ws::RegisterNamespaceRequest {
        namespace: name.into(),
        workflow_execution_retention_period: Some(chronicle_types::time::duration_from_millis(
            86_400_000,
        )),
        ..Default::default()
    })
    .await
    .expect("register the name again");
}

/// A child deleted while running is terminated, and its parent learns of it before the child's
/// state goes (the report reads the child's close event): the parent is never left waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_child_still_reports_its_close_to_the_parent() {
    use chronicle_proto::temporal::api::command::v1::{
        Command, StartChildWorkflowExecutionCommandAttributes, command,
    };
    use chronicle_proto::temporal::api::common::v1::WorkflowType;
    use chronicle_proto::temporal::api::enums::v1::{CommandType, EventType};

    let server = start_server().await;
    let mut raw = raw_client(&server.server.url()).await;
    let tq = unique("parent-tq");
    let parent_id = unique("parent");
    let child_id = unique("child");
    let parent_run = raw
        .start_workflow_execution(start_request(&parent_id, "Parent", &tq))
        .await
        .expect("start parent")
        .into_inner()
        .run_id;
    let task = raw
        .poll_workflow_task_queue(poll(&tq))
        .await
        .expect("poll")
        .into_inner();
    raw.respond_workflow_task_completed(ws::RespondWorkflowTaskCompletedRequest {
        namespace: "default".into(),
        task_token: task.task_token,
        commands: vec![Command {
            command_type: CommandType::StartChildWorkflowExecution as i32,
            attributes: Some(
                command::Attributes::StartChildWorkflowExecutionCommandAttributes(
                    StartChildWorkflowExecutionCommandAttributes {
                        workflow_id: child_id.clone(),
                        workflow_type: Some(WorkflowType {
                            name: "Child".into(),
                        }),
                        task_queue: queue(&unique("child-tq")),
                        ..Default::default()
                    },
                ),
            ),
            ..Default::default()
        }],
        ..Default::default()
    })
    .await
    .expect("start the child");
    let deadline = Instant::now() + Duration::from_secs(10);
    let child_run = loop {
        if let Ok(d) = describe(&mut raw, "default", &child_id, "").await {
            break d
                .workflow_execution_info
                .and_then(|i| i.execution)
                .expect("execution")
                .run_id;
        }
        assert!(Instant::now() < deadline, "the child never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    delete(&mut raw, &child_id, "")
        .await
        .expect("delete the child");
    wait_gone(
        &mut raw,
        "default",
        &child_id,
        &child_run,
        Duration::from_secs(15),
    )
    .await;
    let events = workflow_history(&mut raw, &parent_id).await;
    let types: Vec<i32> = events.iter().map(|e| e.event_type).collect();
    assert!(
        types.contains(&(EventType::ChildWorkflowExecutionTerminated as i32)),
        "the parent {parent_run} did not learn of its child's end: {types:?}"
    );
    server.server.stop().await.expect("clean stop");
}
