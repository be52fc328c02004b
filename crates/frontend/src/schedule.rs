//! Cron workflows and Schedules at the frontend: request checks as Temporal's.

use chronicle_proto::wkt::Duration;
use chronicle_types::ApiError;

type ApiResult<T> = Result<T, ApiError>;

/// A start request's cron schedule: not with a start delay, and a cron string Temporal accepts.
pub fn check_cron_start(cron_schedule: &str, start_delay: Option<&Duration>) -> ApiResult<()> {
    if !cron_schedule.is_empty() && start_delay.is_some() {
        return Err(ApiError::invalid_argument(
            "CronSchedule and WorkflowStartDelay may not be used together.",
        ));
    }
    chronicle_cron::validate(cron_schedule, chronicle_types::time::now_millis())
        .map_err(ApiError::invalid_argument)
}
