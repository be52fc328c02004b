//! [`MeteredMatching`]: the matching service as another role calls it, measured per call.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use chronicle_types::ApiResult;

use super::{Caller, NamespaceNames};
use crate::metric_defs::MATCHING_ROLE;
use crate::{
    ForwardedDispatch, MatchingService, PartitionOwner, QueryTask, TaskKind, TaskQueueKey, TaskRef,
};

/// The matching service called by role `caller` (`frontend`, `history`, or `matching` for a
/// partition's forwards to its root): each call is counted under `MatchingClient<RPC>`.
pub struct MeteredMatching {
    inner: Arc<dyn MatchingService>,
    caller: Caller,
}

impl MeteredMatching {
    pub fn new(inner: Arc<dyn MatchingService>, caller: &'static str) -> Arc<Self> {
        Arc::new(Self {
            inner,
            caller: Caller::new(caller, MATCHING_ROLE, "MatchingClient"),
        })
    }

    /// Sets how the caller names namespaces it knows by ID (first call wins).
    pub fn set_namespace_names(&self, names: NamespaceNames) {
        let _ = self.caller.names.set(names);
    }

    fn ns(&self, namespace_id: &str, from_request: &str) -> Option<String> {
        self.caller.namespace(namespace_id, from_request)
    }
}

/// Temporal's matching RPC that adds a task of `kind` (a forwarded task is added again at the
/// root partition by the same RPC).
fn add_task_operation(kind: TaskKind) -> &'static str {
    match kind {
        TaskKind::Workflow => "AddWorkflowTask",
        TaskKind::Activity => "AddActivityTask",
        TaskKind::Nexus => "DispatchNexusTask",
    }
}

/// Temporal's matching RPC that polls a queue of `kind` (a forwarded poll polls the root).
fn poll_operation(kind: TaskKind) -> &'static str {
    match kind {
        TaskKind::Workflow => "PollWorkflowTaskQueue",
        TaskKind::Activity => "PollActivityTaskQueue",
        TaskKind::Nexus => "PollNexusTaskQueue",
    }
}

#[async_trait]
impl MatchingService for MeteredMatching {
    async fn add_task(&self, queue: TaskQueueKey, task: TaskRef) -> ApiResult<()> {
        let ns = self.ns(&queue.namespace_id, "");
        let operation = add_task_operation(queue.kind);
        let call = self.inner.add_task(queue, task);
        self.caller.measure(operation, ns, call).await
    }
    async fn poll_workflow_task(
        &self,
        namespace_id: &str,
        request: ws::PollWorkflowTaskQueueRequest,
    ) -> ApiResult<ws::PollWorkflowTaskQueueResponse> {
        let ns = self.ns(namespace_id, &request.namespace);
        let call = self.inner.poll_workflow_task(namespace_id, request);
        self.caller.measure("PollWorkflowTaskQueue", ns, call).await
    }
    async fn poll_activity_task(
        &self,
        namespace_id: &str,
        request: ws::PollActivityTaskQueueRequest,
    ) -> ApiResult<ws::PollActivityTaskQueueResponse> {
        let ns = self.ns(namespace_id, &request.namespace);
        let call = self.inner.poll_activity_task(namespace_id, request);
        self.caller.measure("PollActivityTaskQueue", ns, call).await
    }
    async fn poll_nexus_task(
        &self,
        namespace_id: &str,
        request: ws::PollNexusTaskQueueRequest,
    ) -> ApiResult<ws::PollNexusTaskQueueResponse> {
        let ns = self.ns(namespace_id, &request.namespace);
        let call = self.inner.poll_nexus_task(namespace_id, request);
        self.caller.measure("PollNexusTaskQueue", ns, call).await
    }
    async fn query_workflow(
        &self,
        namespace_id: &str,
        task_queue: &str,
        task: QueryTask,
        timeout: Duration,
    ) -> ApiResult<ws::RespondQueryTaskCompletedRequest> {
        let ns = self.ns(namespace_id, "");
        let call = self
            .inner
            .query_workflow(namespace_id, task_queue, task, timeout);
        self.caller.measure("QueryWorkflow", ns, call).await
    }
    async fn respond_query_task_completed(
        &self,
        namespace_id: &str,
        request: ws::RespondQueryTaskCompletedRequest,
    ) -> ApiResult<()> {
        let ns = self.ns(namespace_id, &request.namespace);
        let call = self
            .inner
            .respond_query_task_completed(namespace_id, request);
        self.caller
            .measure("RespondQueryTaskCompleted", ns, call)
            .await
    }
    async fn describe_task_queue(
        &self,
        namespace_id: &str,
        name: &str,
        kind: TaskKind,
    ) -> ApiResult<ws::DescribeTaskQueueResponse> {
        let ns = self.ns(namespace_id, "");
        let call = self.inner.describe_task_queue(namespace_id, name, kind);
        self.caller.measure("DescribeTaskQueue", ns, call).await
    }
    async fn shutdown_sticky_queue(&self, namespace_id: &str, sticky_queue: &str) -> ApiResult<()> {
        // Temporal's ShutdownWorker unloads the worker's sticky queue partition.
        let ns = self.ns(namespace_id, "");
        let call = self.inner.shutdown_sticky_queue(namespace_id, sticky_queue);
        self.caller
            .measure("ForceUnloadTaskQueuePartition", ns, call)
            .await
    }
    async fn forward_task(
        &self,
        root: TaskQueueKey,
        task: TaskRef,
        wait: Duration,
    ) -> ApiResult<bool> {
        let ns = self.ns(&root.namespace_id, "");
        let operation = add_task_operation(root.kind);
        let call = self.inner.forward_task(root, task, wait);
        self.caller.measure(operation, ns, call).await
    }
    async fn forward_poll(
        &self,
        root: TaskQueueKey,
        identity: &str,
        wait: Duration,
    ) -> ApiResult<Option<ForwardedDispatch>> {
        let ns = self.ns(&root.namespace_id, "");
        let operation = poll_operation(root.kind);
        let call = self.inner.forward_poll(root, identity, wait);
        self.caller.measure(operation, ns, call).await
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
        kind: TaskKind,
    ) -> Vec<PartitionOwner> {
        self.inner.list_partitions(namespace_id, name, kind)
    }
}
