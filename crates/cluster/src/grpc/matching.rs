//! The matching role over gRPC: [`MatchingApiService`] serves any [`MatchingService`] as the
//! internal `MatchingApi`, and [`RemoteMatching`] is a [`MatchingService`] that calls one.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chronicle_proto::chronicle::history::v1 as hpb;
use chronicle_proto::chronicle::matching::v1::{
    self as mpb, matching_api_client, matching_api_server,
};
use chronicle_proto::temporal::api::enums::v1::TaskQueueKind;
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use chronicle_types::time::{duration_from_millis, duration_millis};
use chronicle_types::{ApiError, ApiResult};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::wire::required;
use super::{MAX_MESSAGE_BYTES, RingMatching};
use crate::{ForwardedDispatch, MatchingService, QueryTask, TaskKind, TaskQueueKey, TaskRef};

type Reply<T> = Result<Response<T>, Status>;

fn reply<T>(result: ApiResult<T>) -> Reply<T> {
    result.map(Response::new).map_err(Status::from)
}

fn empty(result: ApiResult<()>) -> Reply<hpb::Empty> {
    reply(result.map(|()| hpb::Empty {}))
}

/// Serves a [`MatchingService`] (the local matching engine) as `MatchingApi`.
pub struct MatchingApiService {
    inner: Arc<dyn MatchingService>,
    /// The ring this node belongs to, with this node's place in it: a task that arrives for a
    /// partition another live node owns is passed on to it.
    ring: Option<(Arc<RingMatching>, usize)>,
}

impl MatchingApiService {
    pub fn new(inner: Arc<dyn MatchingService>) -> Self {
        Self { inner, ring: None }
    }

    /// Serves as the node at `me` (an address as the ring lists it) of `ring`. A sender whose
    /// view of the ring differs from this node's (a history node started with a shorter
    /// `--matching-addr` list, or one that cannot reach a matching node this node reaches) would
    /// otherwise leave tasks on a node no poller asks: pollers reach each partition's owner.
    /// Without `me` in the ring the node keeps whatever it is sent.
    pub fn with_ring(mut self, ring: Arc<RingMatching>, me: &str) -> Self {
        self.ring = ring.node_index(me).map(|index| (ring, index));
        self
    }

    pub fn into_server(self) -> matching_api_server::MatchingApiServer<Self> {
        matching_api_server::MatchingApiServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }
}

#[tonic::async_trait]
impl matching_api_server::MatchingApi for MatchingApiService {
    async fn add_task(&self, r: Request<mpb::AddTaskRequest>) -> Reply<hpb::Empty> {
        let r = r.into_inner();
        let queue = TaskQueueKey {
            namespace_id: r.namespace_id,
            name: r.task_queue,
            kind: TaskKind::try_from(r.kind)?,
        };
        let task = TaskRef::from(required(r.task, "task")?);
        if !r.relayed
            && let Some((ring, me)) = &self.ring
            && let Some(owner) = ring.owner_of_partition(&queue)
            && owner != *me
        {
            match ring.relay_task(owner, queue.clone(), task.clone()).await {
                Ok(()) => return empty(Ok(())),
                // The owner did not take it: kept here, where the next placement change or
                // the sender's redispatch finds it.
                Err(error) => tracing::debug!(
                    queue = %queue.name, %error,
                    "passing a task on to its partition's owner failed; keeping it here"
                ),
            }
        }
        empty(self.inner.add_task(queue, task).await)
    }

    async fn poll_workflow_task(
        &self,
        r: Request<mpb::PollWorkflowTaskRequest>,
    ) -> Reply<ws::PollWorkflowTaskQueueResponse> {
        let r = r.into_inner();
        let request = required(r.request, "request")?;
        reply(
            self.inner
                .poll_workflow_task(&r.namespace_id, request)
                .await,
        )
    }

    async fn poll_activity_task(
        &self,
        r: Request<mpb::PollActivityTaskRequest>,
    ) -> Reply<ws::PollActivityTaskQueueResponse> {
        let r = r.into_inner();
        let request = required(r.request, "request")?;
        reply(
            self.inner
                .poll_activity_task(&r.namespace_id, request)
                .await,
        )
    }

    async fn poll_nexus_task(
        &self,
        r: Request<mpb::PollNexusTaskRequest>,
    ) -> Reply<ws::PollNexusTaskQueueResponse> {
        let r = r.into_inner();
        let request = required(r.request, "request")?;
        reply(self.inner.poll_nexus_task(&r.namespace_id, request).await)
    }

    async fn query_workflow(
        &self,
        r: Request<mpb::QueryWorkflowRequest>,
    ) -> Reply<ws::RespondQueryTaskCompletedRequest> {
        let r = r.into_inner();
        let task = QueryTask {
            query_id: r.query_id,
            response: required(r.response, "response")?,
        };
        let timeout_ms = r.timeout.as_ref().map(duration_millis).unwrap_or(0).max(0);
        let timeout = Duration::from_millis(u64::try_from(timeout_ms).unwrap_or(0));
        reply(
            self.inner
                .query_workflow(&r.namespace_id, &r.task_queue, task, timeout)
                .await,
        )
    }

    async fn respond_query_task_completed(
        &self,
        r: Request<mpb::RespondQueryTaskCompletedRequest>,
    ) -> Reply<hpb::Empty> {
        let r = r.into_inner();
        let request = required(r.request, "request")?;
        empty(
            self.inner
                .respond_query_task_completed(&r.namespace_id, request)
                .await,
        )
    }

    async fn describe_task_queue(
        &self,
        r: Request<mpb::DescribeTaskQueueRequest>,
    ) -> Reply<ws::DescribeTaskQueueResponse> {
        let r = r.into_inner();
        let kind = match mpb::TaskKind::try_from(r.task_kind) {
            Ok(mpb::TaskKind::Activity) => TaskKind::Activity,
            Ok(mpb::TaskKind::Nexus) => TaskKind::Nexus,
            _ => TaskKind::Workflow,
        };
        reply(
            self.inner
                .describe_task_queue(&r.namespace_id, &r.name, kind)
                .await,
        )
    }

    async fn shutdown_sticky_queue(
        &self,
        r: Request<mpb::ShutdownStickyQueueRequest>,
    ) -> Reply<hpb::Empty> {
        let r = r.into_inner();
        empty(
            self.inner
                .shutdown_sticky_queue(&r.namespace_id, &r.sticky_queue)
                .await,
        )
    }

    async fn forward_task(
        &self,
        r: Request<mpb::ForwardTaskRequest>,
    ) -> Reply<mpb::ForwardTaskResponse> {
        let r = r.into_inner();
        let root = TaskQueueKey {
            namespace_id: r.namespace_id,
            name: r.task_queue,
            kind: TaskKind::try_from(r.kind)?,
        };
        let task = TaskRef::from(required(r.task, "task")?);
        let wait = wait_of(r.wait.as_ref());
        reply(
            self.inner
                .forward_task(root, task, wait)
                .await
                .map(|matched| mpb::ForwardTaskResponse { matched }),
        )
    }

    async fn forward_poll(
        &self,
        r: Request<mpb::ForwardPollRequest>,
    ) -> Reply<mpb::ForwardPollResponse> {
        let r = r.into_inner();
        let root = TaskQueueKey {
            namespace_id: r.namespace_id,
            name: r.task_queue,
            kind: TaskKind::try_from(r.kind)?,
        };
        let wait = wait_of(r.wait.as_ref());
        reply(self.inner.forward_poll(root, &r.identity, wait).await.map(
            |dispatch| match dispatch {
                None => mpb::ForwardPollResponse::default(),
                Some(ForwardedDispatch::Task(task)) => mpb::ForwardPollResponse {
                    task: Some((&task).into()),
                    ..Default::default()
                },
                Some(ForwardedDispatch::Query(query)) => mpb::ForwardPollResponse {
                    query_id: query.query_id,
                    query_response: Some(query.response),
                    ..Default::default()
                },
            },
        ))
    }
}

fn wait_of(wait: Option<&chronicle_proto::wkt::Duration>) -> Duration {
    let ms = wait.map(duration_millis).unwrap_or(0).max(0);
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

fn wait_to_proto(wait: Duration) -> chronicle_proto::wkt::Duration {
    duration_from_millis(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX))
}

/// A [`MatchingService`] on a matching node reached over gRPC.
#[derive(Clone)]
pub struct RemoteMatching {
    client: matching_api_client::MatchingApiClient<Channel>,
}

impl RemoteMatching {
    pub fn new(channel: Channel) -> Self {
        Self {
            client: matching_api_client::MatchingApiClient::new(channel)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        }
    }

    fn client(&self) -> matching_api_client::MatchingApiClient<Channel> {
        self.client.clone()
    }

    /// AddTask; `relayed`: sent on by a matching node to the owner in its view of the ring.
    pub(crate) async fn send_task(
        &self,
        queue: TaskQueueKey,
        task: TaskRef,
        relayed: bool,
    ) -> ApiResult<()> {
        let request = mpb::AddTaskRequest {
            namespace_id: queue.namespace_id,
            task_queue: queue.name,
            kind: mpb::TaskKind::from(queue.kind) as i32,
            task: Some((&task).into()),
            relayed,
        };
        answer(self.client().add_task(request).await).map(drop)
    }
}

fn answer<T>(result: Result<Response<T>, Status>) -> ApiResult<T> {
    result.map(Response::into_inner).map_err(ApiError::from)
}

#[async_trait]
impl MatchingService for RemoteMatching {
    async fn add_task(&self, queue: TaskQueueKey, task: TaskRef) -> ApiResult<()> {
        self.send_task(queue, task, false).await
    }

    async fn poll_workflow_task(
        &self,
        namespace_id: &str,
        request: ws::PollWorkflowTaskQueueRequest,
    ) -> ApiResult<ws::PollWorkflowTaskQueueResponse> {
        let request = mpb::PollWorkflowTaskRequest {
            namespace_id: namespace_id.into(),
            request: Some(request),
        };
        answer(self.client().poll_workflow_task(request).await)
    }

    async fn poll_activity_task(
        &self,
        namespace_id: &str,
        request: ws::PollActivityTaskQueueRequest,
    ) -> ApiResult<ws::PollActivityTaskQueueResponse> {
        let request = mpb::PollActivityTaskRequest {
            namespace_id: namespace_id.into(),
            request: Some(request),
        };
        answer(self.client().poll_activity_task(request).await)
    }

    async fn poll_nexus_task(
        &self,
        namespace_id: &str,
        request: ws::PollNexusTaskQueueRequest,
    ) -> ApiResult<ws::PollNexusTaskQueueResponse> {
        let request = mpb::PollNexusTaskRequest {
            namespace_id: namespace_id.into(),
            request: Some(request),
        };
        answer(self.client().poll_nexus_task(request).await)
    }

    async fn query_workflow(
        &self,
        namespace_id: &str,
        task_queue: &str,
        task: QueryTask,
        timeout: Duration,
    ) -> ApiResult<ws::RespondQueryTaskCompletedRequest> {
        let timeout_ms = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
        let request = mpb::QueryWorkflowRequest {
            namespace_id: namespace_id.into(),
            task_queue: task_queue.into(),
            query_id: task.query_id,
            response: Some(task.response),
            timeout: Some(duration_from_millis(timeout_ms)),
        };
        answer(self.client().query_workflow(request).await)
    }

    async fn respond_query_task_completed(
        &self,
        namespace_id: &str,
        request: ws::RespondQueryTaskCompletedRequest,
    ) -> ApiResult<()> {
        let request = mpb::RespondQueryTaskCompletedRequest {
            namespace_id: namespace_id.into(),
            request: Some(request),
        };
        answer(self.client().respond_query_task_completed(request).await).map(drop)
    }

    async fn describe_task_queue(
        &self,
        namespace_id: &str,
        name: &str,
        kind: TaskKind,
    ) -> ApiResult<ws::DescribeTaskQueueResponse> {
        let request = mpb::DescribeTaskQueueRequest {
            namespace_id: namespace_id.into(),
            name: name.into(),
            kind: TaskQueueKind::Normal as i32,
            task_kind: mpb::TaskKind::from(kind) as i32,
        };
        answer(self.client().describe_task_queue(request).await)
    }

    async fn shutdown_sticky_queue(&self, namespace_id: &str, sticky_queue: &str) -> ApiResult<()> {
        let request = mpb::ShutdownStickyQueueRequest {
            namespace_id: namespace_id.into(),
            sticky_queue: sticky_queue.into(),
        };
        answer(self.client().shutdown_sticky_queue(request).await).map(drop)
    }

    async fn forward_task(
        &self,
        root: TaskQueueKey,
        task: TaskRef,
        wait: Duration,
    ) -> ApiResult<bool> {
        let request = mpb::ForwardTaskRequest {
            namespace_id: root.namespace_id,
            task_queue: root.name,
            kind: mpb::TaskKind::from(root.kind) as i32,
            task: Some((&task).into()),
            wait: Some(wait_to_proto(wait)),
        };
        answer(self.client().forward_task(request).await).map(|r| r.matched)
    }

    async fn forward_poll(
        &self,
        root: TaskQueueKey,
        identity: &str,
        wait: Duration,
    ) -> ApiResult<Option<ForwardedDispatch>> {
        let request = mpb::ForwardPollRequest {
            namespace_id: root.namespace_id,
            task_queue: root.name,
            kind: mpb::TaskKind::from(root.kind) as i32,
            identity: identity.into(),
            wait: Some(wait_to_proto(wait)),
        };
        let r = answer(self.client().forward_poll(request).await)?;
        Ok(match (r.task, r.query_response) {
            (Some(task), _) => Some(ForwardedDispatch::Task(TaskRef::from(task))),
            (None, Some(response)) => Some(ForwardedDispatch::Query(QueryTask {
                query_id: r.query_id,
                response,
            })),
            (None, None) => None,
        })
    }
}
