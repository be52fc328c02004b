//! Nexus task queues: a Nexus handler worker's long poll (`PollNexusTaskQueue`). History offers
//! a Nexus operation's start request here (docs/nexus.md); the poll that takes it asks the
//! caller's shard for the request and its task token, and answers empty at the interval's end.

use chronicle_cluster::{TaskKind, TaskQueueKey};
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use chronicle_types::ApiResult;

use chronicle_proto::chronicle::history::v1 as hpb;

use crate::MatchingEngine;
use crate::metric_defs::{self, PollOutcome};
use crate::poll::{poller, start_request_id, task_is_stale};
use crate::queue::Dispatch;

impl MatchingEngine {
    pub(crate) async fn poll_nexus(
        &self,
        namespace_id: &str,
        request: ws::PollNexusTaskQueueRequest,
    ) -> ApiResult<ws::PollNexusTaskQueueResponse> {
        let key = TaskQueueKey {
            namespace_id: namespace_id.to_string(),
            name: request
                .task_queue
                .as_ref()
                .map(|t| t.name.clone())
                .unwrap_or_default(),
            kind: TaskKind::Nexus,
        };
        self.note_poll(&key, &request.namespace, request.task_queue.as_ref());
        let deadline = self.poll_deadline();
        let record = |outcome| {
            metric_defs::record_poll(
                &request.namespace,
                request.task_queue.as_ref(),
                request.deployment_options.as_ref(),
                "Nexus",
                outcome,
            )
        };
        loop {
            let Some((dispatch, outcome)) = self
                .next_dispatch(&key, &request.identity, deadline)
                .await?
            else {
                record(PollOutcome::Timeout);
                return Ok(ws::PollNexusTaskQueueResponse::default());
            };
            let Dispatch::Task(task) = dispatch else {
                continue;
            };
            let info = poller(start_request_id(), &request.identity, &request.task_queue);
            let taken = hpb::NexusTaskRequest {
                namespace_id: task.namespace_id.clone(),
                op: Some(hpb::nexus_task_request::Op::Started(
                    hpb::RecordTaskStartedRequest {
                        task: Some(hpb::TaskRef::from(&task)),
                        poller: Some(hpb::PollerInfo::from(&info)),
                    },
                )),
            };
            match self.history()?.nexus_task(&task.namespace_id, taken).await {
                Ok(answer) => {
                    record(outcome);
                    return Ok(answer.started.unwrap_or_default());
                }
                Err(e) if task_is_stale(&e) => continue,
                Err(e) => {
                    tracing::warn!(
                        namespace_id = %task.namespace_id,
                        workflow_id = %task.workflow_id,
                        run_id = %task.run_id,
                        shard = task.shard,
                        error = %e.message,
                        "taking a Nexus task failed; history will offer it again"
                    );
                    continue;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chronicle_cluster::MatchingService;

    use super::*;
    use crate::MatchingLimits;

    /// A Nexus poll waits its interval, answers empty, and its worker is listed among the
    /// queue's Nexus pollers only.
    #[tokio::test]
    async fn nexus_polls_wait_and_are_listed_as_nexus_pollers() {
        let engine =
            MatchingEngine::with_limits(Duration::from_millis(50), MatchingLimits::default());
        let started = std::time::Instant::now();
        let answer = engine
            .poll_nexus_task(
                "ns",
                ws::PollNexusTaskQueueRequest {
                    namespace: "default".into(),
                    task_queue: Some(chronicle_proto::temporal::api::taskqueue::v1::TaskQueue {
                        name: "tq".into(),
                        ..Default::default()
                    }),
                    identity: "nexus-worker".into(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert!(answer.task_token.is_empty() && answer.request.is_none());
        assert!(started.elapsed() >= Duration::from_millis(50));
        let nexus = engine
            .describe_task_queue("ns", "tq", TaskKind::Nexus)
            .await
            .unwrap();
        let identities: Vec<_> = nexus.pollers.iter().map(|p| p.identity.as_str()).collect();
        assert_eq!(identities, ["nexus-worker"]);
        let activity = engine
            .describe_task_queue("ns", "tq", TaskKind::Activity)
            .await
            .unwrap();
        assert!(activity.pollers.is_empty());
    }
}
