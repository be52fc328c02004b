//! Bad input gets Temporal's status codes and error details, and changes nothing.

use chronicle_proto::google::rpc::Status as RpcStatus;
use chronicle_proto::temporal::api::common::v1::{
    Payload, Payloads, WorkflowExecution, WorkflowType,
};
use chronicle_proto::temporal::api::enums::v1::WorkflowExecutionStatus;
use chronicle_proto::temporal::api::errordetails::v1::{
    NamespaceNotFoundFailure, WorkflowExecutionAlreadyStartedFailure,
};
use chronicle_proto::temporal::api::taskqueue::v1::TaskQueue;
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use prost::{Message, Name};
use tonic::Code;

use crate::common::*;

fn start_request(
    namespace: &str,
    workflow_id: &str,
    request_id: &str,
) -> ws::StartWorkflowExecutionRequest {
    ws::StartWorkflowExecutionRequest {
        namespace: namespace.into(),
        workflow_id: workflow_id.into(),
        workflow_type: Some(WorkflowType { name: "Any".into() }),
        task_queue: Some(TaskQueue {
            name: "nobody-polls".into(),
            ..Default::default()
        }),
        request_id: request_id.into(),
        ..Default::default()
    }
}

fn detail<M: Message + Name + Default>(status: &tonic::Status) -> Option<M> {
    let rpc = RpcStatus::decode(status.details()).ok()?;
    rpc.details
        .iter()
        .find(|a| a.type_url == M::type_url())
        .and_then(|a| M::decode(a.value.as_slice()).ok())
}

async fn describe_status(
    raw: &mut ws::workflow_service_client::WorkflowServiceClient<tonic::transport::Channel>,
    workflow_id: &str,
) -> Result<i32, Code> {
    raw.describe_workflow_execution(ws::DescribeWorkflowExecutionRequest {
        namespace: "default".into(),
        execution: Some(WorkflowExecution {
            workflow_id: workflow_id.into(),
            run_id: String::new(),
        }),
    })
    .await
    .map(|r| r.into_inner().workflow_execution_info.unwrap().status)
    .map_err(|s| s.code())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_temporal_errors_and_change_nothing() {
    let server = start_server().await;
    let mut raw = raw_client(&server.server.url()).await;

    // Unknown namespace: NotFound with NamespaceNotFoundFailure.
    let err = raw
        .start_workflow_execution(start_request("no-such-ns", "wf", "r0"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let failure: NamespaceNotFoundFailure = detail(&err).expect("NamespaceNotFoundFailure detail");
    assert_eq!(failure.namespace, "no-such-ns");

    // Workflow ID over 1,000 characters: InvalidArgument, nothing created.
    let long_id = "x".repeat(1001);
    let err = raw
        .start_workflow_execution(start_request("default", &long_id, "r1"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        describe_status(&mut raw, &long_id).await,
        Err(Code::InvalidArgument)
    );

    // Missing workflow type.
    let mut no_type = start_request("default", "typeless", "r2");
    no_type.workflow_type = None;
    assert_eq!(
        raw.start_workflow_execution(no_type)
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    assert_eq!(
        describe_status(&mut raw, "typeless").await,
        Err(Code::NotFound)
    );

    // Input over the 2 MiB payload limit.
    let mut big = start_request("default", "too-big", "r3");
    big.input = Some(Payloads {
        payloads: vec![Payload {
            data: vec![7u8; 2 * 1024 * 1024 + 1],
            ..Default::default()
        }],
    });
    assert_eq!(
        raw.start_workflow_execution(big).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    assert_eq!(
        describe_status(&mut raw, "too-big").await,
        Err(Code::NotFound)
    );

    // Same request ID: the same run, not a conflict.
    let workflow_id = unique("dup");
    let first = raw
        .start_workflow_execution(start_request("default", &workflow_id, "req-a"))
        .await
        .unwrap()
        .into_inner();
    assert!(first.started);
    let again = raw
        .start_workflow_execution(start_request("default", &workflow_id, "req-a"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.run_id, first.run_id);
    // A different request for a running ID: AlreadyExists with the running run's ID.
    let err = raw
        .start_workflow_execution(start_request("default", &workflow_id, "req-b"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    let started: WorkflowExecutionAlreadyStartedFailure =
        detail(&err).expect("WorkflowExecutionAlreadyStartedFailure detail");
    assert_eq!(started.run_id, first.run_id);
    assert_eq!(started.start_request_id, "req-a");

    // Task tokens: garbage is InvalidArgument; a well-formed but stale one is NotFound.
    let err = raw
        .respond_activity_task_completed(ws::RespondActivityTaskCompletedRequest {
            namespace: "default".into(),
            task_token: vec![0xff, 0x01, 0x02],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let namespace_id = raw
        .describe_namespace(ws::DescribeNamespaceRequest {
            namespace: "default".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .namespace_info
        .unwrap()
        .id;
    let stale = chronicle_proto::chronicle::persistence::v1::TaskToken {
        namespace_id,
        workflow_id: workflow_id.clone(),
        run_id: first.run_id.clone(),
        scheduled_event_id: 5,
        attempt: 1,
        is_activity: true,
        activity_id: "1".into(),
        ..Default::default()
    };
    let err = raw
        .respond_activity_task_completed(ws::RespondActivityTaskCompletedRequest {
            namespace: "default".into(),
            task_token: stale.encode_to_vec(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    // Terminate, then a second terminate is NotFound and the run stays terminated.
    let terminate = ws::TerminateWorkflowExecutionRequest {
        namespace: "default".into(),
        workflow_execution: Some(WorkflowExecution {
            workflow_id: workflow_id.clone(),
            run_id: String::new(),
        }),
        reason: "test".into(),
        ..Default::default()
    };
    raw.terminate_workflow_execution(terminate.clone())
        .await
        .expect("terminate");
    assert_eq!(
        raw.terminate_workflow_execution(terminate)
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    assert_eq!(
        describe_status(&mut raw, &workflow_id).await,
        Ok(WorkflowExecutionStatus::Terminated as i32)
    );

    // Registering an existing namespace: AlreadyExists.
    let err = raw
        .register_namespace(ws::RegisterNamespaceRequest {
            namespace: "default".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    server.server.stop().await.expect("clean stop");
}
