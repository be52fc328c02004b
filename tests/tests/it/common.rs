use std::time::Duration;

use chronicle_proto::temporal::api::common::v1::{
    Payload, Payloads, WorkflowExecution, WorkflowType,
};
use chronicle_proto::temporal::api::taskqueue::v1::TaskQueue;
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use chronicle_proto::temporal::api::workflowservice::v1::workflow_service_client::WorkflowServiceClient;
use chronicle_server::{RunningServer, ServerConfig};
use temporalio_client::{Client, ClientOptions, Connection, ConnectionOptions, Url};
use temporalio_common::worker::WorkerDeploymentOptions;
use temporalio_sdk::{Runtime, Worker, WorkerOptions};

use tonic::transport::Channel;

pub struct TestServer {
    pub server: RunningServer,
    /// Kept alive for the server's lifetime (removed on drop).
    _dir: tempfile::TempDir,
}

pub async fn start_server() -> TestServer {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = RunningServer::start(config_for(dir.path()))
        .await
        .expect("server starts");
    TestServer { server, _dir: dir }
}

/// A server whose configuration `adjust` changes first.
pub async fn start_server_with(adjust: impl FnOnce(&mut ServerConfig)) -> TestServer {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = config_for(dir.path());
    adjust(&mut config);
    let server = RunningServer::start(config).await.expect("server starts");
    TestServer { server, _dir: dir }
}

pub fn config_for(path: &std::path::Path) -> ServerConfig {
    let mut config = ServerConfig::new(path.to_path_buf());
    // Polls end sooner than in production so a stopping worker is not held for a minute.
    config.max_poll_wait = Duration::from_secs(5);
    // Several shards, so the tests cross shard boundaries (start-dev's default is one).
    config.num_shards = Some(4);
    config
}

pub async fn sdk_client(url: &str) -> Client {
    let options = ConnectionOptions::new(Url::parse(url).expect("url"))
        .identity("chronicle-it".to_string())
        .build();
    let connection = Connection::connect(options).await.expect("connect");
    Client::new(connection, ClientOptions::new("default").build()).expect("client")
}

pub async fn raw_client(url: &str) -> WorkflowServiceClient<Channel> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_string())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    WorkflowServiceClient::new(channel)
}

/// A fixed build ID: without one the SDK checksums the (large) test binary at every worker start.
pub fn deployment() -> WorkerDeploymentOptions {
    WorkerDeploymentOptions::from_build_id("chronicle-it".into())
}

pub fn runtime() -> Runtime {
    Runtime::from_current_tokio(Default::default()).expect("runtime")
}

pub fn new_worker(runtime: &Runtime, client: Client, options: WorkerOptions) -> Worker {
    Worker::new(runtime, client, options).expect("worker")
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4())
}

pub fn queue(name: &str) -> Option<TaskQueue> {
    Some(TaskQueue {
        name: name.into(),
        ..Default::default()
    })
}

pub fn execution(workflow_id: &str, run_id: &str) -> Option<WorkflowExecution> {
    Some(WorkflowExecution {
        workflow_id: workflow_id.into(),
        run_id: run_id.into(),
    })
}

/// One plain-text payload.
pub fn payloads(text: &str) -> Option<Payloads> {
    Some(Payloads {
        payloads: vec![Payload {
            metadata: std::collections::HashMap::from([(
                "encoding".to_string(),
                b"binary/plain".to_vec(),
            )]),
            data: text.as_bytes().to_vec(),
            ..Default::default()
        }],
    })
}

/// A start of `workflow_type` on `task_queue` in the default namespace, with a fresh request ID.
pub fn start_request(
    workflow_id: &str,
    workflow_type: &str,
    task_queue: &str,
) -> ws::StartWorkflowExecutionRequest {
    ws::StartWorkflowExecutionRequest {
        namespace: "default".into(),
        workflow_id: workflow_id.into(),
        workflow_type: Some(WorkflowType {
            name: workflow_type.into(),
        }),
        task_queue: queue(task_queue),
        request_id: unique("req"),
        ..Default::default()
    }
}

/// Every event of the workflow's current run in the default namespace (one page).
pub async fn workflow_history(
    raw: &mut WorkflowServiceClient<Channel>,
    workflow_id: &str,
) -> Vec<chronicle_proto::temporal::api::history::v1::HistoryEvent> {
    raw.get_workflow_execution_history(ws::GetWorkflowExecutionHistoryRequest {
        namespace: "default".into(),
        execution: execution(workflow_id, ""),
        ..Default::default()
    })
    .await
    .expect("history")
    .into_inner()
    .history
    .unwrap_or_default()
    .events
}

/// A workflow-task poll of `task_queue` in the default namespace.
pub fn poll(task_queue: &str) -> ws::PollWorkflowTaskQueueRequest {
    ws::PollWorkflowTaskQueueRequest {
        namespace: "default".into(),
        task_queue: queue(task_queue),
        identity: "raw-test".into(),
        ..Default::default()
    }
}
