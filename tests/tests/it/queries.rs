//! Query delivery, on the raw protocol: a query that arrives while a workflow task is pending
//! rides on that task (`queries`, answered in `query_results`); otherwise it goes to a worker as
//! a query task. Closed runs can refuse queries with a reject condition.

use std::collections::HashMap;
use std::time::Duration;

use chronicle_proto::temporal::api::common::v1::{Payloads, WorkflowExecution, WorkflowType};
use chronicle_proto::temporal::api::enums::v1::{
    QueryRejectCondition, QueryResultType, WorkflowExecutionStatus,
};
use chronicle_proto::temporal::api::query::v1::{WorkflowQuery, WorkflowQueryResult};
use chronicle_proto::temporal::api::taskqueue::v1::TaskQueue;
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use chronicle_proto::temporal::api::workflowservice::v1::workflow_service_client::WorkflowServiceClient;
use tonic::transport::Channel;

use crate::common::*;

fn text_of(p: &Option<Payloads>) -> String {
    String::from_utf8(p.as_ref().expect("payloads").payloads[0].data.clone()).unwrap()
}

fn query_request(workflow_id: &str, condition: QueryRejectCondition) -> ws::QueryWorkflowRequest {
    ws::QueryWorkflowRequest {
        namespace: "default".into(),
        execution: Some(WorkflowExecution {
            workflow_id: workflow_id.into(),
            run_id: String::new(),
        }),
        query: Some(WorkflowQuery {
            query_type: "state".into(),
            ..Default::default()
        }),
        query_reject_condition: condition as i32,
    }
}

/// Sends a query in the background: it only returns once a worker answered it.
fn spawn_query(
    raw: &WorkflowServiceClient<Channel>,
    workflow_id: &str,
) -> tokio::task::JoinHandle<Result<ws::QueryWorkflowResponse, tonic::Status>> {
    let mut raw = raw.clone();
    let request = query_request(workflow_id, QueryRejectCondition::None);
    tokio::spawn(async move { raw.query_workflow(request).await.map(|r| r.into_inner()) })
}

async fn signal(raw: &mut WorkflowServiceClient<Channel>, workflow_id: &str) {
    raw.signal_workflow_execution(ws::SignalWorkflowExecutionRequest {
        namespace: "default".into(),
        workflow_execution: Some(WorkflowExecution {
            workflow_id: workflow_id.into(),
            run_id: String::new(),
        }),
        signal_name: "poke".into(),
        identity: "query-test".into(),
        ..Default::default()
    })
    .await
    .expect("signal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_ride_on_pending_workflow_tasks_or_go_as_query_tasks() {
    let server = start_server().await;
    let mut raw = raw_client(&server.server.url()).await;
    let task_queue = unique("query");
    let workflow_id = unique("query");
    raw.start_workflow_execution(ws::StartWorkflowExecutionRequest {
        namespace: "default".into(),
        workflow_id: workflow_id.clone(),
        workflow_type: Some(WorkflowType { name: "Q".into() }),
        task_queue: Some(TaskQueue {
            name: task_queue.clone(),
            ..Default::default()
        }),
        request_id: unique("req"),
        ..Default::default()
    })
    .await
    .expect("start");

    // 1. The first workflow task is pending: the query waits for it and rides on it.
    let pending = spawn_query(&raw, &workflow_id);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !pending.is_finished(),
        "the query must wait for the workflow task"
    );
    let task = raw
        .poll_workflow_task_queue(poll(&task_queue))
        .await
        .expect("poll")
        .into_inner();
    assert!(
        task.query.is_none(),
        "a real workflow task, not a query task"
    );
    assert_eq!(
        task.queries.len(),
        1,
        "the buffered query rides on the task"
    );
    let (query_id, query) = task.queries.iter().next().unwrap();
    assert_eq!(query.query_type, "state");
    raw.respond_workflow_task_completed(ws::RespondWorkflowTaskCompletedRequest {
        namespace: "default".into(),
        task_token: task.task_token.clone(),
        query_results: HashMap::from([(
            query_id.clone(),
            WorkflowQueryResult {
                result_type: QueryResultType::Answered as i32,
                answer: payloads("answered-on-task"),
                ..Default::default()
            },
        )]),
        ..Default::default()
    })
    .await
    .expect("complete");
    let answered = pending.await.unwrap().expect("query answered");
    assert_eq!(text_of(&answered.query_result), "answered-on-task");

    // 2. Nothing pending: the query goes to a worker as a query task right away.
    let direct = spawn_query(&raw, &workflow_id);
    let query_task = raw
        .poll_workflow_task_queue(poll(&task_queue))
        .await
        .expect("poll")
        .into_inner();
    assert_eq!(
        query_task.query.as_ref().expect("query task").query_type,
        "state"
    );
    assert!(query_task.queries.is_empty());
    raw.respond_query_task_completed(ws::RespondQueryTaskCompletedRequest {
        namespace: "default".into(),
        task_token: query_task.task_token.clone(),
        completed_type: QueryResultType::Answered as i32,
        query_result: payloads("answered-directly"),
        ..Default::default()
    })
    .await
    .expect("respond query");
    let answered = direct.await.unwrap().expect("query answered");
    assert_eq!(text_of(&answered.query_result), "answered-directly");

    // 3. A signal makes a task pending; the worker starts it, then a query arrives: it is not
    //    on the running task, and once that task completes without new work the query goes to a
    //    worker as a query task.
    signal(&mut raw, &workflow_id).await;
    let task = raw
        .poll_workflow_task_queue(poll(&task_queue))
        .await
        .expect("poll")
        .into_inner();
    assert!(task.queries.is_empty());
    let late = spawn_query(&raw, &workflow_id);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!late.is_finished(), "the query waits for the running task");
    raw.respond_workflow_task_completed(ws::RespondWorkflowTaskCompletedRequest {
        namespace: "default".into(),
        task_token: task.task_token.clone(),
        ..Default::default()
    })
    .await
    .expect("complete");
    let query_task = raw
        .poll_workflow_task_queue(poll(&task_queue))
        .await
        .expect("poll")
        .into_inner();
    assert!(query_task.query.is_some(), "released as a query task");
    raw.respond_query_task_completed(ws::RespondQueryTaskCompletedRequest {
        namespace: "default".into(),
        task_token: query_task.task_token.clone(),
        completed_type: QueryResultType::Failed as i32,
        error_message: "no such query".into(),
        ..Default::default()
    })
    .await
    .expect("respond query");
    let failed = late.await.unwrap().expect_err("a failed query is an error");
    assert_eq!(failed.code(), tonic::Code::InvalidArgument);
    assert_eq!(failed.message(), "no such query");

    // 4. Closed runs: NOT_OPEN refuses the query with the run's status, no worker involved.
    raw.terminate_workflow_execution(ws::TerminateWorkflowExecutionRequest {
        namespace: "default".into(),
        workflow_execution: Some(WorkflowExecution {
            workflow_id: workflow_id.clone(),
            run_id: String::new(),
        }),
        reason: "done".into(),
        ..Default::default()
    })
    .await
    .expect("terminate");
    let rejected = raw
        .query_workflow(query_request(&workflow_id, QueryRejectCondition::NotOpen))
        .await
        .expect("query")
        .into_inner();
    assert!(rejected.query_result.is_none());
    assert_eq!(
        rejected.query_rejected.expect("rejected").status,
        WorkflowExecutionStatus::Terminated as i32
    );
}
