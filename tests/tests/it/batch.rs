//! Batch operations against a real server with four shards: a signal job by visibility query
//! that a restart interrupts and that finishes afterwards with every target signalled exactly
//! once, and a terminate job by an explicit list of executions (run IDs honoured, list pages).

use std::time::Duration;

use chronicle_proto::temporal::api::batch::v1::{BatchOperationSignal, BatchOperationTermination};
use chronicle_proto::temporal::api::common::v1::{Execution, WorkflowExecution};
use chronicle_proto::temporal::api::enums::v1::{
    BatchOperationState, BatchOperationType, EventType, ExecutionType, WorkflowExecutionStatus,
};
use chronicle_proto::temporal::api::workflowservice::v1::workflow_service_client::WorkflowServiceClient;
use chronicle_proto::temporal::api::workflowservice::v1::{
    self as ws, start_batch_operation_request::Operation,
};
use chronicle_server::RunningServer;
use tonic::transport::Channel;

use crate::common::*;

type Raw = WorkflowServiceClient<Channel>;

async fn start_waiting(raw: &mut Raw, task_queue: &str, count: usize) -> Vec<(String, String)> {
    let mut started = Vec::new();
    for i in 0..count {
        let id = unique(&format!("batch-{i}"));
        let run_id = raw
            .start_workflow_execution(start_request(&id, "Waiting", task_queue))
            .await
            .expect("start")
            .into_inner()
            .run_id;
        started.push((id, run_id));
    }
    started
}

async fn describe(raw: &mut Raw, job_id: &str) -> ws::DescribeBatchOperationResponse {
    raw.describe_batch_operation(ws::DescribeBatchOperationRequest {
        namespace: "default".into(),
        job_id: job_id.into(),
    })
    .await
    .expect("describe batch")
    .into_inner()
}

async fn wait_until(
    raw: &mut Raw,
    job_id: &str,
    done: impl Fn(&ws::DescribeBatchOperationResponse) -> bool,
) -> ws::DescribeBatchOperationResponse {
    for _ in 0..600 {
        let answer = describe(raw, job_id).await;
        if done(&answer) {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "batch job {job_id} did not get there: {:?}",
        describe(raw, job_id).await
    );
}

async fn events_of(raw: &mut Raw, workflow_id: &str, event_type: EventType) -> usize {
    workflow_history(raw, workflow_id)
        .await
        .iter()
        .filter(|e| e.event_type == event_type as i32)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_job_interrupted_by_a_restart_finishes_signalling_each_target_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = RunningServer::start(config_for(dir.path()))
        .await
        .expect("start");
    let mut raw = raw_client(&server.url()).await;
    let task_queue = unique("batch-signal");
    let targets = start_waiting(&mut raw, &task_queue, 20).await;
    let job_id = unique("job");
    raw.start_batch_operation(ws::StartBatchOperationRequest {
        namespace: "default".into(),
        job_id: job_id.clone(),
        reason: "poke them all".into(),
        visibility_query: format!("TaskQueue = '{task_queue}'"),
        // Slow enough that the restart falls in the middle of the job.
        max_operations_per_second: 10.0,
        operation: Some(Operation::SignalOperation(BatchOperationSignal {
            signal: "poke".into(),
            input: payloads("hi"),
            identity: "batch-it".into(),
            ..Default::default()
        })),
        ..Default::default()
    })
    .await
    .expect("start batch");
    let running = wait_until(&mut raw, &job_id, |d| d.complete_operation_count >= 5).await;
    assert_eq!(running.state, BatchOperationState::Running as i32);
    assert_eq!(running.total_operation_count, 20);
    assert_eq!(
        running.operation_type,
        BatchOperationType::SignalWorkflow as i32
    );
    server.stop().await.expect("stop");

    // (as in restart.rs: the node's background tasks let go of the directory)
    tokio::time::sleep(Duration::from_millis(200)).await;
    let server = RunningServer::start(config_for(dir.path()))
        .await
        .expect("restart");
    let mut raw = raw_client(&server.url()).await;
    let resumed = describe(&mut raw, &job_id).await;
    assert!(
        resumed.complete_operation_count >= running.complete_operation_count,
        "progress is kept: {resumed:?}"
    );
    let done = wait_until(&mut raw, &job_id, |d| {
        d.state != BatchOperationState::Running as i32
    })
    .await;
    assert_eq!(
        done.state,
        BatchOperationState::Completed as i32,
        "{done:?}"
    );
    assert_eq!(
        (
            done.total_operation_count,
            done.complete_operation_count,
            done.failure_operation_count
        ),
        (20, 20, 0)
    );
    assert_eq!(done.identity, "batch-it");
    assert_eq!(done.reason, "poke them all");
    for (workflow_id, _) in &targets {
        assert_eq!(
            events_of(&mut raw, workflow_id, EventType::WorkflowExecutionSignaled).await,
            1,
            "{workflow_id} signalled exactly once"
        );
    }
    server.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminate_job_by_execution_list_acts_on_the_named_runs() {
    let server = start_server().await;
    let mut raw = raw_client(&server.server.url()).await;
    let task_queue = unique("batch-terminate");
    let targets = start_waiting(&mut raw, &task_queue, 3).await;
    let spared = start_waiting(&mut raw, &task_queue, 1).await;
    let mut executions: Vec<Execution> = targets
        .iter()
        .map(|(id, run_id)| Execution {
            r#type: ExecutionType::Workflow as i32,
            business_id: id.clone(),
            run_id: run_id.clone(),
        })
        .collect();
    // A run ID that is not the workflow's: NotFound, which counts as done (Temporal's batcher).
    executions.push(Execution {
        r#type: ExecutionType::Workflow as i32,
        business_id: spared[0].0.clone(),
        run_id: uuid::Uuid::new_v4().to_string(),
    });
    let job_id = unique("job");
    raw.start_batch_operation(ws::StartBatchOperationRequest {
        namespace: "default".into(),
        job_id: job_id.clone(),
        reason: "cleanup".into(),
        target_executions: executions.clone(),
        operation: Some(Operation::TerminationOperation(BatchOperationTermination {
            details: payloads("bye"),
            identity: "batch-it".into(),
        })),
        ..Default::default()
    })
    .await
    .expect("start batch");
    let done = wait_until(&mut raw, &job_id, |d| {
        d.state != BatchOperationState::Running as i32
    })
    .await;
    assert_eq!(done.state, BatchOperationState::Completed as i32);
    assert_eq!(
        (
            done.total_operation_count,
            done.complete_operation_count,
            done.failure_operation_count
        ),
        (4, 4, 0)
    );
    assert_eq!(done.executions, executions);
    assert!(done.query.is_empty());
    for (workflow_id, _) in &targets {
        assert_eq!(
            events_of(
                &mut raw,
                workflow_id,
                EventType::WorkflowExecutionTerminated
            )
            .await,
            1
        );
    }
    let spared_status = raw
        .describe_workflow_execution(ws::DescribeWorkflowExecutionRequest {
            namespace: "default".into(),
            execution: Some(WorkflowExecution {
                workflow_id: spared[0].0.clone(),
                run_id: String::new(),
            }),
        })
        .await
        .expect("describe")
        .into_inner()
        .workflow_execution_info
        .unwrap()
        .status;
    assert_eq!(spared_status, WorkflowExecutionStatus::Running as i32);

    // A second job, then the list one entry per page, newest first.
    let second = unique("job");
    raw.start_batch_operation(ws::StartBatchOperationRequest {
        namespace: "default".into(),
        job_id: second.clone(),
        reason: "the rest".into(),
        visibility_query: format!("TaskQueue = '{task_queue}'"),
        operation: Some(Operation::TerminationOperation(Default::default())),
        ..Default::default()
    })
    .await
    .expect("second batch");
    wait_until(&mut raw, &second, |d| {
        d.state == BatchOperationState::Completed as i32
    })
    .await;
    let mut listed = Vec::new();
    let mut token = Vec::new();
    loop {
        let page = raw
            .list_batch_operations(ws::ListBatchOperationsRequest {
                namespace: "default".into(),
                page_size: 1,
                next_page_token: token,
            })
            .await
            .expect("list")
            .into_inner();
        assert!(page.operation_info.len() <= 1);
        listed.extend(page.operation_info.into_iter().map(|o| o.job_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(listed, vec![second, job_id]);
    server.server.stop().await.expect("stop");
}

/// Three replicated history nodes: the node leading the job's shard stops in the middle of a
/// signal job; the new leader resumes it at the recorded step and every target holds one signal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_job_resumes_on_the_new_leader_of_its_shard() {
    use chronicle_cluster::HistoryService;
    use chronicle_cluster::grpc::RoutedHistory;
    use chronicle_proto::chronicle::history::v1 as hpb;

    use crate::replicated_history::start_history;
    use crate::split_roles::{Node, wait_ready};

    const SHARDS: u32 = 4;
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let matching_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let matching_addr = matching_listener.local_addr().unwrap();
    drop(matching_listener);
    let mut histories = Vec::new();
    for dir in &dirs {
        histories.push(Some(
            start_history(dir.path(), matching_addr, None, Vec::new()).await,
        ));
    }
    let addrs: Vec<String> = histories
        .iter()
        .map(|h| h.as_ref().unwrap().internal())
        .collect();
    chronicle_server::admin::init_cluster(&addrs, SHARDS)
        .await
        .expect("cluster init");
    let history_addr = addrs.join(",");
    let matching = Node::start_on("matching", Some(matching_addr), |c| {
        c.history_addr = Some(history_addr.clone());
    })
    .await;
    let matching_internal = matching.internal();
    let frontend = Node::start("frontend", |c| {
        c.history_addr = Some(history_addr.clone());
        c.matching_addr = Some(matching_internal);
    })
    .await;
    wait_ready(&frontend.url()).await;
    let mut raw = raw_client(&frontend.url()).await;

    let task_queue = unique("batch-failover");
    let targets = start_waiting(&mut raw, &task_queue, 30).await;
    let job_id = unique("job");
    raw.start_batch_operation(ws::StartBatchOperationRequest {
        namespace: "default".into(),
        job_id: job_id.clone(),
        reason: "failover".into(),
        target_executions: targets
            .iter()
            .map(|(id, _)| Execution {
                r#type: ExecutionType::Workflow as i32,
                business_id: id.clone(),
                run_id: String::new(),
            })
            .collect(),
        max_operations_per_second: 10.0,
        operation: Some(Operation::SignalOperation(BatchOperationSignal {
            signal: "poke".into(),
            ..Default::default()
        })),
        ..Default::default()
    })
    .await
    .expect("start batch");
    wait_until(&mut raw, &job_id, |d| d.complete_operation_count >= 5).await;

    // The job's shard and its leader, as the router finds them.
    let router = RoutedHistory::new(addrs.clone());
    let namespace_id = router
        .namespace_by_name("default")
        .await
        .expect("namespace")
        .info
        .expect("info")
        .id;
    router
        .batch(
            &namespace_id,
            hpb::BatchRequest {
                namespace_id: namespace_id.clone(),
                op: Some(hpb::batch_request::Op::Describe(
                    ws::DescribeBatchOperationRequest {
                        namespace: "default".into(),
                        job_id: job_id.clone(),
                    },
                )),
                shards: Vec::new(),
            },
        )
        .await
        .expect("describe through the router");
    let shard = chronicle_types::shard::shard_for(&namespace_id, &job_id, SHARDS);
    let leader = router.cached_leader(shard).expect("the job's leader");
    let index = addrs.iter().position(|a| *a == leader).expect("a member");
    let before = describe(&mut raw, &job_id).await;
    assert_eq!(
        before.state,
        BatchOperationState::Running as i32,
        "the leader stops in the middle of the job"
    );
    histories[index].take().unwrap().stop().await;

    let done = wait_until(&mut raw, &job_id, |d| {
        d.state != BatchOperationState::Running as i32
    })
    .await;
    assert_eq!(
        done.state,
        BatchOperationState::Completed as i32,
        "{done:?}"
    );
    assert_eq!(
        (done.complete_operation_count, done.failure_operation_count),
        (30, 0)
    );
    for (workflow_id, _) in &targets {
        assert_eq!(
            events_of(&mut raw, workflow_id, EventType::WorkflowExecutionSignaled).await,
            1,
            "{workflow_id} signalled exactly once"
        );
    }
    frontend.stop().await;
    matching.stop().await;
    for node in histories.into_iter().flatten() {
        node.stop().await;
    }
}
