//! Long polls that end when the node stops.
//!
//! A frontend that is asked to stop still holds its workers' long polls, each up to a minute,
//! and its gRPC server waits for them before it exits: a rolling restart would take a minute per
//! frontend. [`PollsEndAtShutdown`] answers every waiting poll empty the moment the node stops
//! (an empty answer is an ordinary poll timeout to an SDK, which polls again, through another
//! frontend if this one is gone). Everything else passes through unchanged.

use std::sync::Arc;

use async_trait::async_trait;
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use chronicle_types::ApiResult;
use tokio::sync::watch;

use crate::{MatchingService, QueryTask, TaskQueueKey, TaskRef};

pub struct PollsEndAtShutdown {
    inner: Arc<dyn MatchingService>,
    stopping: watch::Receiver<bool>,
}

impl PollsEndAtShutdown {
    /// `stopping` turns true when the node stops.
    pub fn new(inner: Arc<dyn MatchingService>, stopping: watch::Receiver<bool>) -> Self {
        Self { inner, stopping }
    }

    /// `poll`, or the empty answer `T::default()` once the node is stopping.
    async fn or_empty<T: Default>(
        &self,
        poll: impl std::future::Future<Output = ApiResult<T>>,
    ) -> ApiResult<T> {
        let mut stopping = self.stopping.clone();
        if *stopping.borrow_and_update() {
            return Ok(T::default());
        }
        tokio::select! {
            answer = poll => answer,
            _ = stopping.wait_for(|stop| *stop) => Ok(T::default()),
        }
    }
}

#[async_trait]
impl MatchingService for PollsEndAtShutdown {
    async fn add_task(&self, queue: TaskQueueKey, task: TaskRef) -> ApiResult<()> {
        self.inner.add_task(queue, task).await
    }

    async fn poll_workflow_task(
        &self,
        namespace_id: &str,
        request: ws::PollWorkflowTaskQueueRequest,
    ) -> ApiResult<ws::PollWorkflowTaskQueueResponse> {
        self.or_empty(self.inner.poll_workflow_task(namespace_id, request))
            .await
    }

    async fn poll_activity_task(
        &self,
        namespace_id: &str,
        request: ws::PollActivityTaskQueueRequest,
    ) -> ApiResult<ws::PollActivityTaskQueueResponse> {
        self.or_empty(self.inner.poll_activity_task(namespace_id, request))
            .await
    }

    async fn poll_nexus_task(
        &self,
        namespace_id: &str,
        request: ws::PollNexusTaskQueueRequest,
    ) -> ApiResult<ws::PollNexusTaskQueueResponse> {
        self.or_empty(self.inner.poll_nexus_task(namespace_id, request))
            .await
    }

    async fn query_workflow(
        &self,
        namespace_id: &str,
        task_queue: &str,
        task: QueryTask,
        timeout: std::time::Duration,
    ) -> ApiResult<ws::RespondQueryTaskCompletedRequest> {
        self.inner
            .query_workflow(namespace_id, task_queue, task, timeout)
            .await
    }

    async fn respond_query_task_completed(
        &self,
        namespace_id: &str,
        request: ws::RespondQueryTaskCompletedRequest,
    ) -> ApiResult<()> {
        self.inner
            .respond_query_task_completed(namespace_id, request)
            .await
    }

    async fn describe_task_queue(
        &self,
        namespace_id: &str,
        name: &str,
        kind: crate::TaskKind,
    ) -> ApiResult<ws::DescribeTaskQueueResponse> {
        self.inner
            .describe_task_queue(namespace_id, name, kind)
            .await
    }

    async fn shutdown_sticky_queue(&self, namespace_id: &str, sticky_queue: &str) -> ApiResult<()> {
        self.inner
            .shutdown_sticky_queue(namespace_id, sticky_queue)
            .await
    }

    async fn forward_task(
        &self,
        root: TaskQueueKey,
        task: TaskRef,
        wait: std::time::Duration,
    ) -> ApiResult<bool> {
        self.inner.forward_task(root, task, wait).await
    }

    async fn forward_poll(
        &self,
        root: TaskQueueKey,
        identity: &str,
        wait: std::time::Duration,
    ) -> ApiResult<Option<crate::ForwardedDispatch>> {
        self.or_empty(self.inner.forward_poll(root, identity, wait))
            .await
    }

    fn placement_generation(&self) -> u64 {
        self.inner.placement_generation()
    }

    fn task_placement(&self, queue: &TaskQueueKey, task: &TaskRef) -> u64 {
        self.inner.task_placement(queue, task)
    }

    fn list_partitions(
        &self,
        namespace_id: &str,
        name: &str,
        kind: crate::TaskKind,
    ) -> Vec<crate::PartitionOwner> {
        self.inner.list_partitions(namespace_id, name, kind)
    }
}
