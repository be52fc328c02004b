//! Visibility against a real server (four shards): the search-attribute registry through the
//! OperatorService and its durability across a restart, values checked on start, queries over
//! custom attributes, stable page tokens across shards, and an SDK workflow's upsert listed as
//! soon as the completion that carried it is answered.

use std::collections::{HashMap, HashSet};

use chronicle_proto::temporal::api::common::v1::{Payload, SearchAttributes, WorkflowType};
use chronicle_proto::temporal::api::enums::v1::IndexedValueType;
use chronicle_proto::temporal::api::operatorservice::v1 as os;
use chronicle_proto::temporal::api::operatorservice::v1::operator_service_client::OperatorServiceClient;
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use chronicle_server::RunningServer;
use temporalio_client::{WorkflowGetResultOptions, WorkflowStartOptions};
use temporalio_common::search_attributes::SearchAttributeKey;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{WorkflowContext, WorkflowResult};
use tonic::Code;

use crate::common::*;

async fn operator(url: &str) -> OperatorServiceClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_string())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    OperatorServiceClient::new(channel)
}

fn json(value: &str) -> Payload {
    Payload {
        metadata: HashMap::from([("encoding".to_string(), b"json/plain".to_vec())]),
        data: value.as_bytes().to_vec(),
        ..Default::default()
    }
}

fn start_with(
    id: &str,
    task_queue: &str,
    attrs: &[(&str, &str)],
) -> ws::StartWorkflowExecutionRequest {
    ws::StartWorkflowExecutionRequest {
        namespace: "default".into(),
        workflow_id: id.into(),
        workflow_type: Some(WorkflowType {
            name: "Listed".into(),
        }),
        task_queue: queue(task_queue),
        request_id: uuid::Uuid::new_v4().to_string(),
        search_attributes: Some(SearchAttributes {
            indexed_fields: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), json(v)))
                .collect(),
        }),
        ..Default::default()
    }
}

fn list(query: String, page_size: i32, token: Vec<u8>) -> ws::ListWorkflowExecutionsRequest {
    ws::ListWorkflowExecutionsRequest {
        namespace: "default".into(),
        query,
        page_size,
        next_page_token: token,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visibility_registry_is_durable_and_values_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let server = RunningServer::start(config_for(dir.path()))
        .await
        .expect("start");
    let mut ops = operator(&server.url()).await;
    ops.add_search_attributes(os::AddSearchAttributesRequest {
        namespace: "default".into(),
        search_attributes: HashMap::from([
            ("Region".to_string(), IndexedValueType::Keyword as i32),
            ("Total".to_string(), IndexedValueType::Int as i32),
        ]),
    })
    .await
    .expect("add");
    let mut raw = raw_client(&server.url()).await;
    let tq = unique("vis");
    let refused = raw
        .start_workflow_execution(start_with(&unique("bad"), &tq, &[("Total", "\"many\"")]))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert_eq!(
        refused.message(),
        "invalid value for search attribute Total of type Int: many"
    );
    let unknown = raw
        .start_workflow_execution(start_with(&unique("bad"), &tq, &[("Nope", "1")]))
        .await
        .unwrap_err();
    assert_eq!(
        unknown.message(),
        "Namespace default has no mapping defined for search attribute Nope"
    );
    for (i, region) in ["eu", "us", "eu"].iter().enumerate() {
        raw.start_workflow_execution(start_with(
            &format!("{tq}-{i}"),
            &tq,
            &[
                ("Region", &format!("\"{region}\"")),
                ("Total", &i.to_string()),
            ],
        ))
        .await
        .expect("start");
    }
    let query = format!("TaskQueue = '{tq}' AND Region = 'eu' AND Total > 0");
    let listed = raw
        .list_workflow_executions(list(query.clone(), 0, Vec::new()))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.executions.len(), 1);
    assert_eq!(
        listed.executions[0].execution.as_ref().unwrap().workflow_id,
        format!("{tq}-2")
    );
    server.stop().await.expect("stop");

    // After a restart the registry, and queries by it, are still there.
    let server = RunningServer::start(config_for(dir.path()))
        .await
        .expect("restart");
    let mut ops = operator(&server.url()).await;
    let registry = ops
        .list_search_attributes(os::ListSearchAttributesRequest {
            namespace: "default".into(),
        })
        .await
        .expect("list attributes")
        .into_inner();
    assert_eq!(
        registry.custom_attributes.get("Region"),
        Some(&(IndexedValueType::Keyword as i32))
    );
    assert_eq!(
        registry.custom_attributes.get("Total"),
        Some(&(IndexedValueType::Int as i32))
    );
    let mut raw = raw_client(&server.url()).await;
    let again = raw
        .list_workflow_executions(list(query, 0, Vec::new()))
        .await
        .expect("list after restart")
        .into_inner();
    assert_eq!(again.executions.len(), 1);
    let removed = ops
        .remove_search_attributes(os::RemoveSearchAttributesRequest {
            namespace: "default".into(),
            search_attributes: vec!["Total".into()],
        })
        .await;
    assert!(removed.is_ok());
    let err = raw
        .list_workflow_executions(list("Total > 0".into(), 0, Vec::new()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        err.message(),
        "invalid query: invalid search attribute: Total"
    );
    server.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visibility_pages_are_stable_across_shards() {
    let server = start_server().await;
    let mut raw = raw_client(&server.server.url()).await;
    let tq = unique("pages");
    for i in 0..30 {
        raw.start_workflow_execution(start_with(&format!("{tq}-{i:02}"), &tq, &[]))
            .await
            .expect("start");
    }
    let query = format!("TaskQueue = '{tq}'");
    let (mut seen, mut token, mut pages) = (Vec::new(), Vec::new(), 0);
    loop {
        let page = raw
            .list_workflow_executions(list(query.clone(), 7, token))
            .await
            .expect("page")
            .into_inner();
        pages += 1;
        seen.extend(
            page.executions
                .iter()
                .map(|e| e.execution.as_ref().unwrap().workflow_id.clone()),
        );
        if pages == 2 {
            // Newer runs sort before the token: later pages are unchanged.
            raw.start_workflow_execution(start_with(&format!("{tq}-late"), &tq, &[]))
                .await
                .expect("start");
        }
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(pages, 5);
    let distinct: HashSet<&String> = seen.iter().collect();
    assert_eq!((seen.len(), distinct.len()), (30, 30));
    let newest_first: Vec<String> = (0..30).rev().map(|i| format!("{tq}-{i:02}")).collect();
    assert_eq!(seen, newest_first);
    let bad_token = raw
        .list_workflow_executions(list(query, 7, b"garbage".to_vec()))
        .await
        .unwrap_err();
    assert_eq!(bad_token.code(), Code::InvalidArgument);
    server.server.stop().await.expect("stop");
}

const TAG: SearchAttributeKey<String> = SearchAttributeKey::keyword("VisTag");

#[workflow]
#[derive(Default)]
pub struct TagWorkflow;

#[workflow_methods]
impl TagWorkflow {
    #[run]
    pub async fn run(ctx: &mut WorkflowContext<Self>, tag: String) -> WorkflowResult<String> {
        ctx.upsert_search_attributes([TAG.value_set(tag.clone())]);
        Ok(tag)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visibility_sdk_upsert_is_listed_at_once() {
    let server = start_server_with(|config| {
        config.search_attributes = vec![("VisTag".into(), IndexedValueType::Keyword as i32)];
    })
    .await;
    let url = server.server.url();
    let client = sdk_client(&url).await;
    let task_queue = unique("tag");
    let tag = unique("tag");
    let runtime = runtime();
    let options = temporalio_sdk::WorkerOptions::new(&task_queue)
        .deployment_options(deployment())
        .register_workflow::<TagWorkflow>()
        .expect("register")
        .build();
    let mut worker = new_worker(&runtime, client.clone(), options);
    let stop = worker.shutdown_handle();
    let id = unique("tagged");
    let (run, result) = tokio::join!(worker.run(), async {
        let handle = client
            .start_workflow(
                TagWorkflow::run,
                tag.clone(),
                WorkflowStartOptions::new(task_queue.clone(), id.clone()).build(),
            )
            .await
            .expect("start");
        let result = handle.get_result(WorkflowGetResultOptions::default()).await;
        stop();
        result
    });
    run.expect("worker ran");
    assert_eq!(result.expect("result"), tag);
    let mut raw = raw_client(&url).await;
    let listed = raw
        .list_workflow_executions(list(
            format!("VisTag = '{tag}' AND ExecutionStatus = 'Completed'"),
            0,
            Vec::new(),
        ))
        .await
        .expect("list")
        .into_inner();
    let ids: Vec<&str> = listed
        .executions
        .iter()
        .map(|e| e.execution.as_ref().unwrap().workflow_id.as_str())
        .collect();
    assert_eq!(ids, [id.as_str()]);
    let counted = raw
        .count_workflow_executions(ws::CountWorkflowExecutionsRequest {
            namespace: "default".into(),
            query: format!(
                "VisTag STARTS_WITH 'tag-' AND TaskQueue = '{task_queue}' GROUP BY ExecutionStatus"
            ),
        })
        .await
        .expect("count")
        .into_inner();
    assert_eq!(counted.count, 1);
    assert_eq!(counted.groups.len(), 1);
    server.server.stop().await.expect("stop");
}
