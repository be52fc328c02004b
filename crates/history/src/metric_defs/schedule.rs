//! Schedule metrics, under Temporal's scheduler names (see `docs/metrics.md`). Apply-time
//! events (skips, missed catch-up windows, buffer overruns) go through the observations in the
//! parent module, counted on the leader only.

use super::SERVICE_NAME;

// Temporal's dev server exports these from the scheduler workflow on its worker service;
// Chronicle's schedules live in history. `namespace` on each.
/// Workflows a schedule started (`schedule_action` `start_workflow`).
pub const SCHEDULE_ACTION_SUCCESS: &str = "schedule_action_success";
/// Failed attempts to start a schedule's workflow (a retried attempt counts again).
pub const SCHEDULE_ACTION_ERRORS: &str = "schedule_action_errors";
/// From an action's time (its jittered time) to its workflow's start, in seconds.
pub const SCHEDULE_ACTION_DELAY: &str = "schedule_action_delay";
/// Times skipped because they were further back than the catch-up window.
pub const SCHEDULE_MISSED_CATCHUP_WINDOW: &str = "schedule_missed_catchup_window";
/// Actions dropped because the schedule's buffer was full.
pub const SCHEDULE_BUFFER_OVERRUNS: &str = "schedule_buffer_overruns";
/// Actions skipped by the overlap policy (`schedule_overlap_policy`, Temporal's policy name).
pub const SCHEDULE_OVERLAP_SKIPPED: &str = "schedule_overlap_skipped";
/// Errors cancelling or terminating a previous run (CANCEL_OTHER, TERMINATE_OTHER).
pub const SCHEDULE_CANCEL_WORKFLOW_ERRORS: &str = "schedule_cancel_workflow_errors";
pub const SCHEDULE_TERMINATE_WORKFLOW_ERRORS: &str = "schedule_terminate_workflow_errors";

/// A schedule's start of its workflow: `delay_ms` from the action's time when it started.
pub(crate) fn record_schedule_start(namespace: &str, started: Result<i64, ()>) {
    match started {
        Ok(delay_ms) => {
            metrics::counter!(
                SCHEDULE_ACTION_SUCCESS,
                "service_name" => SERVICE_NAME,
                "namespace" => namespace.to_string(),
                "schedule_action" => "start_workflow",
            )
            .increment(1);
            metrics::histogram!(
                SCHEDULE_ACTION_DELAY,
                "service_name" => SERVICE_NAME,
                "namespace" => namespace.to_string(),
            )
            .record(delay_ms.max(0) as f64 / 1000.0);
        }
        Err(()) => metrics::counter!(
            SCHEDULE_ACTION_ERRORS,
            "service_name" => SERVICE_NAME,
            "namespace" => namespace.to_string(),
        )
        .increment(1),
    }
}

/// A schedule failed to cancel (or terminate) a previous run.
pub(crate) fn record_schedule_stop_error(namespace: &str, terminate: bool) {
    let name = if terminate {
        SCHEDULE_TERMINATE_WORKFLOW_ERRORS
    } else {
        SCHEDULE_CANCEL_WORKFLOW_ERRORS
    };
    metrics::counter!(name, "service_name" => SERVICE_NAME, "namespace" => namespace.to_string())
        .increment(1);
}
