//! `RoutedHistory`'s routing and retry rules against real `HistoryApi` servers on 127.0.0.1
//! whose history service answers as a scripted node would (leader, follower, mid-election).
//! What is checked: hints are followed, a call refused before its command reached the log is
//! always sent again, and after an ambiguous failure only calls idempotent at apply are.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chronicle_cluster::grpc::{HistoryApiService, RoutedHistory};
use chronicle_cluster::{ActivityHeartbeat, ActivityOutcome, HistoryService, PollerInfo, TaskRef};
use chronicle_proto::chronicle::persistence::v1::NamespaceRecord;
use chronicle_proto::temporal::api::common::v1::WorkflowExecution;
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use chronicle_types::{ApiError, ApiResult};

/// How a scripted node answers: NotLeader (with these fields) for the first `refusals` calls,
/// then Ok.
struct Scripted {
    calls: AtomicUsize,
    refusals: usize,
    leader_addr: std::sync::Mutex<String>,
    proposed: bool,
    /// Refuse with this plain status instead of NotLeader.
    plain: Option<tonic::Code>,
}

impl Scripted {
    fn new(refusals: usize, proposed: bool) -> Arc<Self> {
        Arc::new(Self {
            calls: AtomicUsize::new(0),
            refusals,
            leader_addr: Default::default(),
            proposed,
            plain: None,
        })
    }

    fn failing_with(code: tonic::Code, refusals: usize) -> Arc<Self> {
        Arc::new(Self {
            calls: AtomicUsize::new(0),
            refusals,
            leader_addr: Default::default(),
            proposed: false,
            plain: Some(code),
        })
    }

    fn answer(&self) -> ApiResult<()> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        if n < self.refusals {
            if let Some(code) = self.plain {
                return Err(ApiError::new(code, "operation was canceled"));
            }
            let addr = self.leader_addr.lock().unwrap().clone();
            let leader = (!addr.is_empty()).then_some(addr);
            return Err(ApiError::not_leader(
                1,
                leader.as_ref().map(|_| 7),
                leader,
                self.proposed,
            ));
        }
        Ok(())
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

fn unused<T>() -> ApiResult<T> {
    Err(ApiError::new(tonic::Code::Unimplemented, "not scripted"))
}

#[async_trait]
impl HistoryService for Scripted {
    async fn register_namespace(&self, _: NamespaceRecord) -> ApiResult<()> {
        unused()
    }
    async fn update_namespace(&self, _: NamespaceRecord) -> ApiResult<()> {
        unused()
    }
    async fn namespace_by_name(&self, _: &str) -> ApiResult<NamespaceRecord> {
        unused()
    }
    async fn list_namespaces(&self) -> ApiResult<Vec<NamespaceRecord>> {
        unused()
    }
    async fn start_workflow(
        &self,
        _: &str,
        _: ws::StartWorkflowExecutionRequest,
    ) -> ApiResult<ws::StartWorkflowExecutionResponse> {
        unused()
    }
    async fn signal_workflow(
        &self,
        _: &str,
        _: ws::SignalWorkflowExecutionRequest,
    ) -> ApiResult<()> {
        self.answer()
    }
    async fn signal_with_start(
        &self,
        _: &str,
        _: ws::SignalWithStartWorkflowExecutionRequest,
    ) -> ApiResult<ws::SignalWithStartWorkflowExecutionResponse> {
        unused()
    }
    async fn terminate_workflow(
        &self,
        _: &str,
        _: ws::TerminateWorkflowExecutionRequest,
    ) -> ApiResult<()> {
        self.answer()
    }
    async fn request_cancel_workflow(
        &self,
        _: &str,
        _: ws::RequestCancelWorkflowExecutionRequest,
    ) -> ApiResult<()> {
        self.answer()
    }
    async fn describe_workflow(
        &self,
        _: &str,
        _: ws::DescribeWorkflowExecutionRequest,
    ) -> ApiResult<ws::DescribeWorkflowExecutionResponse> {
        unused()
    }
    async fn get_history(
        &self,
        _: &str,
        _: ws::GetWorkflowExecutionHistoryRequest,
    ) -> ApiResult<ws::GetWorkflowExecutionHistoryResponse> {
        unused()
    }
    async fn get_history_reverse(
        &self,
        _: &str,
        _: ws::GetWorkflowExecutionHistoryReverseRequest,
    ) -> ApiResult<ws::GetWorkflowExecutionHistoryReverseResponse> {
        unused()
    }
    async fn list_workflows(
        &self,
        _: chronicle_proto::chronicle::history::v1::ListWorkflowsRequest,
    ) -> ApiResult<chronicle_proto::chronicle::history::v1::ListWorkflowsResponse> {
        unused()
    }
    async fn query_workflow(
        &self,
        _: &str,
        _: ws::QueryWorkflowRequest,
    ) -> ApiResult<ws::QueryWorkflowResponse> {
        unused()
    }
    async fn record_workflow_task_started(
        &self,
        _: &TaskRef,
        _: &PollerInfo,
    ) -> ApiResult<ws::PollWorkflowTaskQueueResponse> {
        unused()
    }
    async fn record_activity_task_started(
        &self,
        _: &TaskRef,
        _: &PollerInfo,
    ) -> ApiResult<ws::PollActivityTaskQueueResponse> {
        unused()
    }
    async fn sticky_worker_unavailable(&self, _: &TaskRef) -> ApiResult<()> {
        unused()
    }
    async fn respond_workflow_task_completed(
        &self,
        _: &str,
        _: ws::RespondWorkflowTaskCompletedRequest,
    ) -> ApiResult<ws::RespondWorkflowTaskCompletedResponse> {
        unused()
    }
    async fn respond_workflow_task_failed(
        &self,
        _: &str,
        _: ws::RespondWorkflowTaskFailedRequest,
    ) -> ApiResult<()> {
        unused()
    }
    async fn respond_activity(&self, _: &str, _: ActivityOutcome) -> ApiResult<()> {
        unused()
    }
    async fn record_activity_heartbeat(
        &self,
        _: &str,
        _: ActivityHeartbeat,
    ) -> ApiResult<chronicle_cluster::HeartbeatOutcome> {
        unused()
    }
}

async fn serve(node: Arc<Scripted>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = HistoryApiService::new(node, 4).into_server();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    addr
}

fn execution() -> Option<WorkflowExecution> {
    Some(WorkflowExecution {
        workflow_id: "wf".into(),
        run_id: String::new(),
    })
}

fn router(seed: SocketAddr) -> RoutedHistory {
    let router = RoutedHistory::new(vec![seed.to_string()]);
    router.set_num_shards(4);
    router
}

#[tokio::test]
async fn a_hint_sends_the_call_to_the_leader_at_once() {
    let leader = Scripted::new(0, false);
    let follower = Scripted::new(usize::MAX, false);
    let leader_addr = serve(leader.clone()).await;
    *follower.leader_addr.lock().unwrap() = leader_addr.to_string();
    let follower_addr = serve(follower.clone()).await;
    let router = router(follower_addr);
    let request = ws::SignalWorkflowExecutionRequest {
        workflow_execution: execution(),
        ..Default::default()
    };
    router
        .signal_workflow("ns", request.clone())
        .await
        .expect("routed");
    assert_eq!((follower.calls(), leader.calls()), (1, 1));
    // The leader is cached: the next call goes straight there.
    router.signal_workflow("ns", request).await.expect("routed");
    assert_eq!((follower.calls(), leader.calls()), (1, 2));
}

#[tokio::test]
async fn without_a_leader_the_router_backs_off_and_tries_again() {
    // Three refusals without a hint (an election), then the node leads.
    let node = Scripted::new(3, false);
    let addr = serve(node.clone()).await;
    let started = tokio::time::Instant::now();
    router(addr)
        .signal_workflow(
            "ns",
            ws::SignalWorkflowExecutionRequest {
                workflow_execution: execution(),
                ..Default::default()
            },
        )
        .await
        .expect("answered once a leader exists");
    assert_eq!(node.calls(), 4);
    assert!(
        started.elapsed() >= Duration::from_millis(50 + 100 + 200),
        "backed off between attempts"
    );
}

#[tokio::test]
async fn after_an_ambiguous_failure_only_idempotent_calls_are_sent_again() {
    // The first node took the command into its log and lost leadership (proposed: true),
    // pointing at a new leader.
    let new_leader = Scripted::new(0, false);
    let new_leader_addr = serve(new_leader.clone()).await;
    let old_leader = Scripted::new(usize::MAX, true);
    *old_leader.leader_addr.lock().unwrap() = new_leader_addr.to_string();
    let old_leader_addr = serve(old_leader.clone()).await;

    // Terminating twice could answer differently: the caller gets a plain Unavailable.
    let err = router(old_leader_addr)
        .terminate_workflow(
            "ns",
            ws::TerminateWorkflowExecutionRequest {
                workflow_execution: execution(),
                ..Default::default()
            },
        )
        .await
        .expect_err("not sent again");
    assert_eq!(err.code, tonic::Code::Unavailable);
    assert!(
        err.not_leader_detail().is_none(),
        "no internal detail leaks"
    );
    assert_eq!((old_leader.calls(), new_leader.calls()), (1, 0));

    // A cancellation request is recorded once however often it arrives: sent again.
    router(old_leader_addr)
        .request_cancel_workflow(
            "ns",
            ws::RequestCancelWorkflowExecutionRequest {
                workflow_execution: execution(),
                ..Default::default()
            },
        )
        .await
        .expect("sent again at the new leader");
    assert_eq!((old_leader.calls(), new_leader.calls()), (2, 1));
}

/// A call cut off because the node died mid-call (Cancelled, as hyper reports a connection that
/// closed before the answer) is sent again when it is idempotent, and reported otherwise.
#[tokio::test]
async fn a_call_cut_off_mid_flight_is_sent_again_only_when_idempotent() {
    let node = Scripted::failing_with(tonic::Code::Cancelled, 2);
    let addr = serve(node.clone()).await;
    router(addr)
        .signal_workflow(
            "ns",
            ws::SignalWorkflowExecutionRequest {
                workflow_execution: execution(),
                ..Default::default()
            },
        )
        .await
        .expect("a signal (idempotent by request ID) is sent again");
    assert_eq!(node.calls(), 3);

    let node = Scripted::failing_with(tonic::Code::Cancelled, 1);
    let addr = serve(node.clone()).await;
    let err = router(addr)
        .terminate_workflow(
            "ns",
            ws::TerminateWorkflowExecutionRequest {
                workflow_execution: execution(),
                ..Default::default()
            },
        )
        .await
        .expect_err("a terminate is not sent again");
    assert_eq!(err.code, tonic::Code::Cancelled);
    assert_eq!(node.calls(), 1);
}
