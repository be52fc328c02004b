//! Queries sent to workers: a query task offered to the workflow queue's pollers, and the
//! answer a worker sends back for it.

use std::time::Duration;

use chronicle_cluster::{QueryTask, TaskKind, TaskQueueKey};
use chronicle_proto::chronicle::persistence::v1::TaskToken;
use chronicle_proto::temporal::api::enums::v1::{ResourceExhaustedCause, ResourceExhaustedScope};
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use chronicle_types::{ApiError, ApiResult};
use prost::Message;
use tokio::sync::oneshot;

use crate::MatchingEngine;
use crate::queue::Dispatch;

impl MatchingEngine {
    pub(super) async fn query_workflow_op(
        &self,
        namespace_id: &str,
        task_queue: &str,
        task: QueryTask,
        timeout: Duration,
    ) -> ApiResult<ws::RespondQueryTaskCompletedRequest> {
        let (tx, rx) = oneshot::channel();
        let query_id = task.query_id.clone();
        {
            let mut pending = self.pending_queries.lock().expect("matching lock");
            if pending.len() >= self.limits.max_pending_queries {
                return Err(ApiError::resource_exhausted_for(
                    format!(
                        "too many queries are waiting for workers (limit {})",
                        self.limits.max_pending_queries
                    ),
                    ResourceExhaustedCause::ConcurrentLimit,
                    ResourceExhaustedScope::System,
                ));
            }
            pending.insert(query_id.clone(), tx);
        }
        {
            let key = TaskQueueKey {
                namespace_id: namespace_id.to_string(),
                name: task_queue.to_string(),
                kind: TaskKind::Workflow,
            };
            let mut queues = self.queues.lock().expect("matching lock");
            let q = queues.entry(key).or_default();
            if let Some(Dispatch::Query(query)) = q.offer(Dispatch::Query(task)) {
                q.queries.push_back(query);
            }
        }
        let outcome = tokio::time::timeout(timeout, rx).await;
        self.pending_queries
            .lock()
            .expect("matching lock")
            .remove(&query_id);
        // Drop the query task if no worker took it.
        {
            let key = TaskQueueKey {
                namespace_id: namespace_id.to_string(),
                name: task_queue.to_string(),
                kind: TaskKind::Workflow,
            };
            let mut queues = self.queues.lock().expect("matching lock");
            if let Some(q) = queues.get_mut(&key) {
                q.queries.retain(|t| t.query_id != query_id);
            }
        }
        match outcome {
            Ok(Ok(answer)) => Ok(answer),
            _ => Err(ApiError::new(
                tonic::Code::DeadlineExceeded,
                "query timed out before a worker answered it",
            )),
        }
    }

    pub(super) async fn respond_query_task_completed_op(
        &self,
        _namespace_id: &str,
        request: ws::RespondQueryTaskCompletedRequest,
    ) -> ApiResult<()> {
        let token = TaskToken::decode(request.task_token.as_slice())
            .map_err(|_| ApiError::invalid_argument("invalid task token"))?;
        if token.query_id.is_empty() {
            return Err(ApiError::invalid_argument(
                "task token is not a query task token",
            ));
        }
        let sender = self
            .pending_queries
            .lock()
            .expect("matching lock")
            .remove(&token.query_id);
        match sender {
            Some(sender) => {
                let _ = sender.send(request);
                Ok(())
            }
            None => Err(ApiError::not_found(
                "query does not exist or has already timed out",
            )),
        }
    }
}
