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

/// Sends raw bytes as a gRPC request body, bypassing the generated message types.
#[derive(Clone, Copy, Default)]
struct RawBytesCodec;

struct RawBytesEncoder;
struct RawBytesDecoder;

impl tonic::codec::Codec for RawBytesCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawBytesEncoder;
    type Decoder = RawBytesDecoder;
    fn encoder(&mut self) -> Self::Encoder {
        RawBytesEncoder
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawBytesDecoder
    }
}

impl tonic::codec::Encoder for RawBytesEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawBytesDecoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        let mut out = vec![0; bytes::Buf::remaining(src)];
        bytes::Buf::copy_to_slice(src, &mut out);
        Ok(Some(out))
    }
}

async fn send_raw(
    url: &str,
    method: &'static str,
    body: Vec<u8>,
) -> Result<Vec<u8>, tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_string())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(method);
    grpc.unary(tonic::Request::new(body), path, RawBytesCodec)
        .await
        .map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_messages_are_refused_and_the_server_keeps_serving() {
    const START: &str = "/temporal.api.workflowservice.v1.WorkflowService/StartWorkflowExecution";
    let server = start_server().await;
    let url = server.server.url();

    // Bytes that are not a protobuf message (a truncated length-delimited field): refused the
    // way Temporal's (grpc-go) server refuses an undecodable request, with Internal.
    let err = send_raw(&url, START, vec![0x0a, 0xff, 0xff, 0xff, 0x0f, b'x'])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Internal, "{err:?}");

    // A well-formed message whose fields are nonsense for the RPC: InvalidArgument.
    let err = send_raw(
        &url,
        START,
        ws::StartWorkflowExecutionRequest::default().encode_to_vec(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    // A message over the frontend's 128 MiB limit: ResourceExhausted, without being decoded.
    let mut huge = start_request("default", "huge", "huge-1");
    huge.input = Some(Payloads {
        payloads: vec![Payload {
            data: vec![7; chronicle_types::limits::MAX_GRPC_MESSAGE_BYTES + 1024],
            ..Default::default()
        }],
    });
    let err = send_raw(&url, START, huge.encode_to_vec())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");

    // None of it created anything, and the server still serves.
    let mut raw = raw_client(&url).await;
    assert_eq!(describe_status(&mut raw, "huge").await, Err(Code::NotFound));
    raw.start_workflow_execution(start_request("default", "after-bad-input", "ok-1"))
        .await
        .expect("the server still serves");
}
