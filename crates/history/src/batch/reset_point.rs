//! Where a batch reset resets each execution to. A batch names the point by kind (the first or
//! the last workflow task, or an event ID), not by an event of one run, so the job reads each
//! run's history: the first (or last) WorkflowTaskCompleted event, or, in a run whose first task
//! never completed, the Started event that follows its first (or last) WorkflowTaskScheduled
//! (as Temporal's batcher picks it). The history is read in that direction and only as far as
//! the answer.

use chronicle_cluster::HistoryService;
use chronicle_proto::temporal::api::batch::v1::BatchOperationReset;
use chronicle_proto::temporal::api::common::v1::{ResetOptions, WorkflowExecution, reset_options};
use chronicle_proto::temporal::api::enums::v1::{EventType, ResetType};
use chronicle_proto::temporal::api::history::v1::HistoryEvent;
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use chronicle_types::{ApiError, ApiResult};

const PAGE_SIZE: i32 = 1000;

/// Which workflow task of a run a batch reset goes back to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ResetPoint {
    FirstWorkflowTask,
    LastWorkflowTask,
    EventId(i64),
}

impl ResetPoint {
    /// The point a request asks for (`options`, else the deprecated `reset_type`).
    pub fn of(op: &BatchOperationReset) -> ApiResult<Self> {
        if !op.post_reset_operations.is_empty() {
            return Err(ApiError::invalid_argument(
                "post-reset operations are not supported by this server",
            ));
        }
        if let Some(options) = &op.options {
            return match &options.target {
                Some(reset_options::Target::FirstWorkflowTask(())) => Ok(Self::FirstWorkflowTask),
                Some(reset_options::Target::LastWorkflowTask(())) => Ok(Self::LastWorkflowTask),
                Some(reset_options::Target::WorkflowTaskId(id)) => Ok(Self::EventId(*id)),
                Some(reset_options::Target::BuildId(_)) => Err(ApiError::invalid_argument(
                    "resetting to a build ID needs worker versioning, which this server does not \
                     have",
                )),
                None => Err(ApiError::invalid_argument("reset target is not set")),
            };
        }
        #[allow(deprecated)]
        match ResetType::try_from(op.reset_type) {
            Ok(ResetType::FirstWorkflowTask) => Ok(Self::FirstWorkflowTask),
            Ok(ResetType::LastWorkflowTask) => Ok(Self::LastWorkflowTask),
            _ => Err(ApiError::invalid_argument("unsupported reset type")),
        }
    }
}

/// The reset options a request carries (for the reapply settings), if any.
pub(crate) fn options(op: &BatchOperationReset) -> ResetOptions {
    op.options.clone().unwrap_or_default()
}

/// A run's history read in the direction a point is found in (oldest first for the first
/// workflow task, newest first for the last): the first WorkflowTaskCompleted met is the answer;
/// until one is met, the Started event after the first WorkflowTaskScheduled met stands in.
#[derive(Default)]
struct Scan {
    completed: Option<i64>,
    started_after_scheduled: Option<i64>,
}

impl Scan {
    /// Looks at the next events in reading order; true once the answer is final.
    fn feed(&mut self, events: &[HistoryEvent]) -> bool {
        for event in events {
            if event.event_type == EventType::WorkflowTaskCompleted as i32 {
                self.completed = Some(event.event_id);
                return true;
            }
            if event.event_type == EventType::WorkflowTaskScheduled as i32 {
                self.started_after_scheduled
                    .get_or_insert(event.event_id.saturating_add(1));
            }
        }
        false
    }

    fn answer(&self) -> Option<i64> {
        self.completed.or(self.started_after_scheduled)
    }
}

/// The event ID of `point` in `events` (a whole history, oldest first); `None` when the run
/// never scheduled a workflow task.
#[cfg(test)]
fn event_id_in(events: &[HistoryEvent], point: ResetPoint) -> Option<i64> {
    let mut scan = Scan::default();
    match point {
        ResetPoint::EventId(id) => return Some(id),
        ResetPoint::FirstWorkflowTask => scan.feed(events),
        ResetPoint::LastWorkflowTask => {
            let newest_first: Vec<HistoryEvent> = events.iter().rev().cloned().collect();
            scan.feed(&newest_first)
        }
    };
    scan.answer()
}

/// Reads the run's history, forward for the first workflow task and backward for the last, and
/// stops at the page holding the answer.
pub(crate) async fn resolve(
    history: &dyn HistoryService,
    namespace: &str,
    namespace_id: &str,
    execution: &WorkflowExecution,
    point: ResetPoint,
) -> ApiResult<i64> {
    let mut scan = Scan::default();
    let mut token = Vec::new();
    loop {
        let (events, next) = match point {
            ResetPoint::EventId(id) => return Ok(id),
            ResetPoint::FirstWorkflowTask => {
                let page = history
                    .get_history(
                        namespace_id,
                        ws::GetWorkflowExecutionHistoryRequest {
                            namespace: namespace.to_string(),
                            execution: Some(execution.clone()),
                            maximum_page_size: PAGE_SIZE,
                            next_page_token: token,
                            ..Default::default()
                        },
                    )
                    .await?;
                (page.history, page.next_page_token)
            }
            ResetPoint::LastWorkflowTask => {
                let page = history
                    .get_history_reverse(
                        namespace_id,
                        ws::GetWorkflowExecutionHistoryReverseRequest {
                            namespace: namespace.to_string(),
                            execution: Some(execution.clone()),
                            maximum_page_size: PAGE_SIZE,
                            next_page_token: token,
                        },
                    )
                    .await?;
                (page.history, page.next_page_token)
            }
        };
        let done = scan.feed(&events.map(|h| h.events).unwrap_or_default());
        if done || next.is_empty() {
            break;
        }
        token = next;
    }
    scan.answer().ok_or_else(|| {
        ApiError::failed_precondition("unable to find any scheduled or completed workflow task")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(types: &[EventType]) -> Vec<HistoryEvent> {
        types
            .iter()
            .enumerate()
            .map(|(i, t)| HistoryEvent {
                event_id: i as i64 + 1,
                event_type: *t as i32,
                ..Default::default()
            })
            .collect()
    }

    #[test]
    fn first_and_last_completed_tasks_or_the_started_after_a_scheduled_one() {
        use EventType::*;
        let two_tasks = events(&[
            WorkflowExecutionStarted,
            WorkflowTaskScheduled,
            WorkflowTaskStarted,
            WorkflowTaskCompleted,
            WorkflowExecutionSignaled,
            WorkflowTaskScheduled,
            WorkflowTaskStarted,
            WorkflowTaskCompleted,
        ]);
        assert_eq!(
            event_id_in(&two_tasks, ResetPoint::FirstWorkflowTask),
            Some(4)
        );
        assert_eq!(
            event_id_in(&two_tasks, ResetPoint::LastWorkflowTask),
            Some(8)
        );
        let never_completed = events(&[WorkflowExecutionStarted, WorkflowTaskScheduled]);
        assert_eq!(
            event_id_in(&never_completed, ResetPoint::FirstWorkflowTask),
            Some(3)
        );
        assert_eq!(
            event_id_in(&never_completed, ResetPoint::LastWorkflowTask),
            Some(3)
        );
        assert_eq!(
            event_id_in(
                &events(&[WorkflowExecutionStarted]),
                ResetPoint::LastWorkflowTask
            ),
            None
        );
        assert_eq!(event_id_in(&[], ResetPoint::EventId(9)), Some(9));
    }
}
