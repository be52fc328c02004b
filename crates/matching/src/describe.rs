//! DescribeTaskQueue as matching answers it: the pollers seen lately and the backlog of the
//! queues held here.

use std::time::Duration;

use chronicle_cluster::{TaskKind, TaskQueueKey};
use chronicle_proto::temporal::api::taskqueue::v1::PollerInfo as ApiPollerInfo;
use chronicle_proto::temporal::api::taskqueue::v1::TaskQueueStatus;
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use chronicle_types::ApiResult;

use crate::MatchingEngine;

/// Temporal's default task dispatch rate limit per task queue (`matching.rps`), which
/// DescribeTaskQueue reports.
const DEFAULT_DISPATCH_RATE_PER_SECOND: f64 = 100_000.0;

impl MatchingEngine {
    pub(super) async fn describe_task_queue_op(
        &self,
        namespace_id: &str,
        name: &str,
        kind: TaskKind,
    ) -> ApiResult<ws::DescribeTaskQueueResponse> {
        // One type's pollers, as Temporal answers (`temporal task-queue describe` asks per type).
        let mut pollers = Vec::new();
        let mut backlog = 0usize;
        let queues = self.queues.lock().expect("matching lock");
        for k in [kind] {
            let key = TaskQueueKey {
                namespace_id: namespace_id.to_string(),
                name: name.to_string(),
                kind: k,
            };
            if let Some(q) = queues.get(&key) {
                backlog += q.tasks.len();
                for (identity, (seen, at)) in &q.recent_pollers {
                    if seen.elapsed() < Duration::from_secs(300) {
                        pollers.push(ApiPollerInfo {
                            identity: identity.clone(),
                            last_access_time: Some(chronicle_types::time::from_millis(
                                at.duration_since(std::time::UNIX_EPOCH)
                                    .map(|d| d.as_millis() as i64)
                                    .unwrap_or(0),
                            )),
                            rate_per_second: 0.0,
                            ..Default::default()
                        });
                    }
                }
            }
        }
        // The legacy status (deprecated in the API, still what `temporal task-queue describe
        // --legacy-mode` prints, and dereferences).
        #[allow(deprecated)]
        Ok(ws::DescribeTaskQueueResponse {
            pollers,
            // Kept only when the request asked for it (the frontend removes it otherwise).
            // Matching keeps no task IDs (its queues live in memory, tasks stay in history's
            // outbox), so the levels are zero; the rate is Temporal's default dispatch limit.
            task_queue_status: Some(TaskQueueStatus {
                backlog_count_hint: i64::try_from(backlog).unwrap_or(i64::MAX),
                rate_per_second: DEFAULT_DISPATCH_RATE_PER_SECOND,
                ..Default::default()
            }),
            ..Default::default()
        })
    }
}
