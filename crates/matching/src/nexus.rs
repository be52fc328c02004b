//! Nexus task queues: a Nexus handler worker's long poll (`PollNexusTaskQueue`). Nothing offers
//! Nexus tasks yet (operations are not built, docs/nexus.md), so a poll holds its place among the
//! queue's pollers, where DescribeTaskQueue lists it, and answers empty at the interval's end.

use chronicle_cluster::{TaskKind, TaskQueueKey};
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use chronicle_types::ApiResult;

use crate::MatchingEngine;
use crate::metric_defs::{self, PollOutcome};

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
        let deadline = self.poll_deadline();
        // Nothing offers Nexus tasks yet: the poll holds its place among the queue's pollers
        // (DescribeTaskQueue lists it) until the poll interval ends or matching stops.
        while let Some((dispatch, _)) = self
            .next_dispatch(&key, &request.identity, deadline)
            .await?
        {
            tracing::warn!(?key, "a task reached a Nexus task queue and was dropped");
            drop(dispatch);
        }
        metric_defs::record_poll(
            &request.namespace,
            request.task_queue.as_ref(),
            request.deployment_options.as_ref(),
            "Nexus",
            PollOutcome::Timeout,
        );
        Ok(ws::PollNexusTaskQueueResponse::default())
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
