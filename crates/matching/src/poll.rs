//! Polls of workflow and activity task queues: taking the next dispatch of a partition or
//! waiting for one, then having history record the task as started before answering.

use std::time::Instant;

use chronicle_cluster::partition::parse_partition;
use chronicle_cluster::{PollerInfo, TaskKind, TaskQueueKey};
use chronicle_proto::temporal::api::enums::v1::{ResourceExhaustedCause, ResourceExhaustedScope};
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use chronicle_types::{ApiError, ApiResult};
use tokio::sync::oneshot;

use crate::MatchingEngine;
use crate::forward;
use crate::metric_defs::{self, PollOutcome};
use crate::queue::{Dispatch, POLLER_MEMORY, Taken};

impl MatchingEngine {
    /// Takes the next dispatch for `key`, waiting until `deadline`.
    pub(crate) async fn next_dispatch(
        &self,
        key: &TaskQueueKey,
        identity: &str,
        deadline: Instant,
    ) -> ApiResult<Option<(Dispatch, PollOutcome)>> {
        if *self.stopping.borrow() {
            return Ok(None);
        }
        self.closed_sticky
            .lock()
            .expect("matching lock")
            .remove(key);
        self.sweep_idle_queues(false);
        let receiver = match self.take_or_wait(key, identity)? {
            Taken::Now(dispatch, outcome) => return Ok(Some((dispatch, outcome))),
            Taken::Wait(receiver) => receiver,
        };
        if parse_partition(&key.name).1 != 0 {
            // A child partition: wait on the root partition as well.
            return Ok(self
                .wait_here_or_on_root(key, identity, receiver, deadline)
                .await);
        }
        let mut stopping = self.stopping.subscribe();
        Ok(tokio::select! {
            received = tokio::time::timeout_at(deadline.into(), receiver) => match received {
                Ok(Ok(handoff)) => Some(handoff.into_sync_match()),
                _ => None,
            },
            _ = stopping.wait_for(|stop| *stop) => None,
        })
    }

    /// Under the lock: the next query or task of `key` (a root partition's tasks forwarded from
    /// its children included), or a place among its waiting pollers.
    pub(crate) fn take_or_wait(&self, key: &TaskQueueKey, identity: &str) -> ApiResult<Taken> {
        {
            let mut queues = self.queues.lock().expect("matching lock");
            let queue = queues.entry(key.clone()).or_default();
            if queue.recent_pollers.len() >= 64 {
                queue
                    .recent_pollers
                    .retain(|_, (at, _)| at.elapsed() < POLLER_MEMORY);
            }
            queue.recent_pollers.insert(
                identity.to_string(),
                (Instant::now(), std::time::SystemTime::now()),
            );
            if let Some(query) = queue.queries.pop_front() {
                return Ok(Taken::Now(
                    Dispatch::Query(query),
                    PollOutcome::Backlog { queued_at: None },
                ));
            }
            let now_ms = chronicle_types::time::now_millis();
            while let Some(task) = queue.tasks.pop_front() {
                let queued_at = queue.queued.remove(&(task.shard, task.outbox_id));
                if task.expires_at_ms == 0 || task.expires_at_ms > now_ms {
                    return Ok(Taken::Now(
                        Dispatch::Task(task),
                        PollOutcome::Backlog { queued_at },
                    ));
                }
            }
            if let Some((task, offered_at)) = forward::take_offer(queue) {
                // A child partition's task waiting here for a poller: a sync match, as in
                // Temporal (the child forwards it only while it waits for one).
                return Ok(Taken::Now(
                    Dispatch::Task(task),
                    PollOutcome::Sync {
                        handed_at: Some(offered_at),
                        forwarded: false,
                    },
                ));
            }
            // Polls that timed out or were cancelled leave closed senders behind.
            queue.pollers.retain(|p| !p.is_closed());
            if queue.pollers.len() >= self.limits.max_pollers_per_queue {
                return Err(ApiError::resource_exhausted_for(
                    format!(
                        "too many pollers are waiting on this task queue (limit {})",
                        self.limits.max_pollers_per_queue
                    ),
                    ResourceExhaustedCause::ConcurrentLimit,
                    ResourceExhaustedScope::Namespace,
                ));
            }
            let (tx, rx) = oneshot::channel();
            queue.pollers.push_back(tx);
            Ok(Taken::Wait(rx))
        }
    }

    pub(crate) fn poll_deadline(&self) -> Instant {
        Instant::now() + self.max_poll_wait
    }

    pub(super) async fn poll_workflow_task_op(
        &self,
        namespace_id: &str,
        request: ws::PollWorkflowTaskQueueRequest,
    ) -> ApiResult<ws::PollWorkflowTaskQueueResponse> {
        let name = request
            .task_queue
            .as_ref()
            .map(|t| t.name.clone())
            .unwrap_or_default();
        let key = TaskQueueKey {
            namespace_id: namespace_id.to_string(),
            name,
            kind: TaskKind::Workflow,
        };
        self.note_poll(&key, &request.namespace, request.task_queue.as_ref());
        let deadline = self.poll_deadline();
        let record = |outcome| {
            metric_defs::record_poll(
                &request.namespace,
                request.task_queue.as_ref(),
                request.deployment_options.as_ref(),
                "Workflow",
                outcome,
            )
        };
        loop {
            let wait = metric_defs::PollWait::start(
                &request.namespace,
                request.task_queue.as_ref(),
                request.deployment_options.as_ref(),
                "Workflow",
            );
            let found = self.next_dispatch(&key, &request.identity, deadline).await;
            wait.finish(
                found
                    .as_ref()
                    .map(|f| f.as_ref().map(|(_, outcome)| *outcome)),
            );
            let Some((dispatch, outcome)) = found? else {
                record(PollOutcome::Timeout);
                return Ok(ws::PollWorkflowTaskQueueResponse::default());
            };
            match dispatch {
                Dispatch::Query(query) => {
                    record(outcome.for_query());
                    return Ok(query.response);
                }
                Dispatch::Task(task) => {
                    let info = poller(start_request_id(), &request.identity, &request.task_queue);
                    match self
                        .history()?
                        .record_workflow_task_started(&task, &info)
                        .await
                    {
                        Ok(response) => {
                            record(outcome);
                            return Ok(response);
                        }
                        Err(e) if task_is_stale(&e) => continue,
                        Err(e) => {
                            tracing::warn!(
                                namespace_id = %task.namespace_id,
                                workflow_id = %task.workflow_id,
                                run_id = %task.run_id,
                                shard = task.shard,
                                error = %e.message,
                                "recording a workflow task as started failed; history will re-dispatch it"
                            );
                            continue;
                        }
                    }
                }
            }
        }
    }

    pub(super) async fn poll_activity_task_op(
        &self,
        namespace_id: &str,
        request: ws::PollActivityTaskQueueRequest,
    ) -> ApiResult<ws::PollActivityTaskQueueResponse> {
        let name = request
            .task_queue
            .as_ref()
            .map(|t| t.name.clone())
            .unwrap_or_default();
        let key = TaskQueueKey {
            namespace_id: namespace_id.to_string(),
            name,
            kind: TaskKind::Activity,
        };
        self.note_poll(&key, &request.namespace, request.task_queue.as_ref());
        let deadline = self.poll_deadline();
        let record = |outcome| {
            metric_defs::record_poll(
                &request.namespace,
                request.task_queue.as_ref(),
                request.deployment_options.as_ref(),
                "Activity",
                outcome,
            )
        };
        loop {
            let wait = metric_defs::PollWait::start(
                &request.namespace,
                request.task_queue.as_ref(),
                request.deployment_options.as_ref(),
                "Activity",
            );
            let found = self.next_dispatch(&key, &request.identity, deadline).await;
            wait.finish(
                found
                    .as_ref()
                    .map(|f| f.as_ref().map(|(_, outcome)| *outcome)),
            );
            let Some((dispatch, outcome)) = found? else {
                record(PollOutcome::Timeout);
                return Ok(ws::PollActivityTaskQueueResponse::default());
            };
            let Dispatch::Task(task) = dispatch else {
                continue;
            };
            let info = PollerInfo {
                worker_control_task_queue: request.worker_control_task_queue.clone(),
                ..poller(start_request_id(), &request.identity, &request.task_queue)
            };
            match self
                .history()?
                .record_activity_task_started(&task, &info)
                .await
            {
                Ok(response) => {
                    record(outcome);
                    return Ok(response);
                }
                Err(e) if task_is_stale(&e) => continue,
                Err(e) => {
                    tracing::warn!(
                        namespace_id = %task.namespace_id,
                        workflow_id = %task.workflow_id,
                        run_id = %task.run_id,
                        shard = task.shard,
                        error = %e.message,
                        "recording an activity task as started failed; history will re-dispatch it"
                    );
                    continue;
                }
            }
        }
    }
}

pub(crate) fn poller(
    request_id: String,
    identity: &str,
    task_queue: &Option<chronicle_proto::temporal::api::taskqueue::v1::TaskQueue>,
) -> PollerInfo {
    PollerInfo {
        identity: identity.to_string(),
        request_id,
        // The queue's name, not the partition's.
        task_queue: task_queue
            .as_ref()
            .map(|t| parse_partition(&t.name).0.to_string())
            .unwrap_or_default(),
        task_queue_kind: task_queue.as_ref().map(|t| t.kind).unwrap_or_default(),
        worker_control_task_queue: String::new(),
    }
}

/// Errors that mean "this task is gone, take the next one".
pub(crate) fn task_is_stale(err: &ApiError) -> bool {
    matches!(
        err.code,
        tonic::Code::NotFound | tonic::Code::AlreadyExists | tonic::Code::FailedPrecondition
    )
}

/// A request ID for recording a task as started: unique per attempt, so that a task handed out
/// twice (re-dispatch) can never be started by two pollers, while a retried record with the
/// same ID gets the same answer.
pub(crate) fn start_request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}
