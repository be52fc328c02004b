//! UpdateActivityOptions: the field mask merge and the checks Temporal applies to the result
//! (its ActivityOptions merge, retry policy validation and the activity timeout deduction).

use chronicle_proto::temporal::api::activity::v1::ActivityOptions;
use chronicle_proto::temporal::api::common::v1::{Priority, RetryPolicy};
use chronicle_proto::temporal::api::taskqueue::v1::TaskQueue;
use chronicle_proto::wkt::Duration;
use chronicle_types::ApiError;
use chronicle_types::time::{checked_duration_millis, duration_from_millis, opt_duration_millis};

/// A masked sub-field: its path and how to copy it.
type FieldSetter<M> = (&'static str, fn(&mut M, &M));

/// A field mask path in Temporal's form: each segment in lowerCamelCase (`task_queue.name` and
/// `taskQueue.name` are the same path).
pub(crate) fn camel(path: &str) -> String {
    path.split('.')
        .map(|segment| {
            let mut out = String::with_capacity(segment.len());
            let mut upper = false;
            for c in segment.chars() {
                if c == '_' {
                    upper = true;
                } else if upper {
                    out.extend(c.to_uppercase());
                    upper = false;
                } else {
                    out.push(c);
                }
            }
            out
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// Applies the masked fields of `from` to `into`. Paths Temporal does not know are ignored, as
/// there; a sub-field of a message `from` does not carry is refused.
pub fn merge_options(
    mut into: ActivityOptions,
    from: &ActivityOptions,
    paths: &[&str],
) -> Result<ActivityOptions, ApiError> {
    let fields: std::collections::BTreeSet<String> = paths.iter().map(|p| camel(p)).collect();
    let has = |f: &str| fields.contains(f);
    let missing = |what: &str| ApiError::invalid_argument(format!("{what} is not provided"));
    if has("taskQueue.name") {
        let tq = from
            .task_queue
            .as_ref()
            .ok_or_else(|| missing("TaskQueue"))?;
        into.task_queue.get_or_insert_with(TaskQueue::default).name = tq.name.clone();
    }
    if has("scheduleToCloseTimeout") {
        into.schedule_to_close_timeout = from.schedule_to_close_timeout;
    }
    if has("scheduleToStartTimeout") {
        into.schedule_to_start_timeout = from.schedule_to_start_timeout;
    }
    if has("startToCloseTimeout") {
        into.start_to_close_timeout = from.start_to_close_timeout;
    }
    if has("heartbeatTimeout") {
        into.heartbeat_timeout = from.heartbeat_timeout;
    }
    if has("priority") {
        into.priority = from.priority.clone();
    }
    let priority_fields: [FieldSetter<Priority>; 3] = [
        ("priority.priorityKey", |i, f| {
            i.priority_key = f.priority_key
        }),
        ("priority.fairnessKey", |i, f| {
            i.fairness_key = f.fairness_key.clone()
        }),
        ("priority.fairnessWeight", |i, f| {
            i.fairness_weight = f.fairness_weight
        }),
    ];
    for (path, set) in priority_fields {
        if has(path) {
            let from = from.priority.as_ref().ok_or_else(|| missing("Priority"))?;
            set(into.priority.get_or_insert_with(Priority::default), from);
        }
    }
    if has("retryPolicy") {
        into.retry_policy = Some(
            from.retry_policy
                .clone()
                .ok_or_else(|| missing("RetryPolicy"))?,
        );
    }
    let policy_fields: [FieldSetter<RetryPolicy>; 4] = [
        ("retryPolicy.initialInterval", |i, f| {
            i.initial_interval = f.initial_interval
        }),
        ("retryPolicy.backoffCoefficient", |i, f| {
            i.backoff_coefficient = f.backoff_coefficient
        }),
        ("retryPolicy.maximumInterval", |i, f| {
            i.maximum_interval = f.maximum_interval
        }),
        ("retryPolicy.maximumAttempts", |i, f| {
            i.maximum_attempts = f.maximum_attempts
        }),
    ];
    let mut policy_changed = false;
    for (path, set) in policy_fields {
        if has(path) {
            let from = from
                .retry_policy
                .as_ref()
                .ok_or_else(|| missing("RetryPolicy"))?;
            set(
                into.retry_policy.get_or_insert_with(RetryPolicy::default),
                from,
            );
            policy_changed = true;
        }
    }
    if policy_changed {
        validate_retry_policy(into.retry_policy.as_ref())?;
    }
    Ok(into)
}

/// Temporal's retry policy check (retrypolicy.Validate).
fn validate_retry_policy(policy: Option<&RetryPolicy>) -> Result<(), ApiError> {
    let Some(p) = policy else { return Ok(()) };
    if p.maximum_attempts == 1 {
        return Ok(());
    }
    let bad = |m: String| Err(ApiError::invalid_argument(m));
    let initial = match checked_duration_millis(p.initial_interval.as_ref()) {
        Ok(v) => v,
        Err(e) => return bad(format!("invalid InitialInterval set on retry policy: {e}")),
    };
    if p.backoff_coefficient < 1.0 {
        return bad("BackoffCoefficient cannot be less than 1 on retry policy.".into());
    }
    let maximum = match checked_duration_millis(p.maximum_interval.as_ref()) {
        Ok(v) => v,
        Err(e) => return bad(format!("invalid MaximumInterval set on retry policy: {e}")),
    };
    if maximum > 0 && maximum < initial {
        return bad("MaximumInterval cannot be less than InitialInterval on retry policy.".into());
    }
    if p.maximum_attempts < 0 {
        return bad("MaximumAttempts cannot be negative on retry policy.".into());
    }
    Ok(())
}

/// The activity timeout deduction Temporal applies to updated options (as to a
/// ScheduleActivityTask command, without the run timeout's cap): a task queue with no name is
/// the workflow's, missing timeouts are derived from schedule-to-close, and the heartbeat
/// timeout never exceeds start-to-close.
pub fn normalize(
    mut o: ActivityOptions,
    workflow_task_queue: &str,
    activity_id: &str,
    activity_type: &str,
) -> Result<ActivityOptions, ApiError> {
    let tq = o.task_queue.get_or_insert_with(TaskQueue::default);
    if tq.name.is_empty() {
        tq.name = workflow_task_queue.to_string();
    }
    if tq.name.len() > chronicle_types::limits::MAX_ID_LENGTH {
        return Err(ApiError::invalid_argument(
            "task queue name exceeds length limit",
        ));
    }
    let check = |d: Option<&Duration>, name: &str| {
        checked_duration_millis(d)
            .map_err(|e| ApiError::invalid_argument(format!("invalid {name}: {e}")))
    };
    let to_close = check(
        o.schedule_to_close_timeout.as_ref(),
        "ScheduleToCloseTimeout",
    )?;
    let to_start = check(
        o.schedule_to_start_timeout.as_ref(),
        "ScheduleToStartTimeout",
    )?;
    let start_to_close = check(o.start_to_close_timeout.as_ref(), "StartToCloseTimeout")?;
    check(o.heartbeat_timeout.as_ref(), "HeartbeatTimeout")?;
    if to_close > 0 {
        o.schedule_to_start_timeout = Some(duration_from_millis(if to_start > 0 {
            to_start.min(to_close)
        } else {
            to_close
        }));
        o.start_to_close_timeout = Some(duration_from_millis(if start_to_close > 0 {
            start_to_close.min(to_close)
        } else {
            to_close
        }));
    } else if start_to_close > 0 {
        // No run timeout caps these here: an unset schedule-to-close stays unbounded.
        o.schedule_to_close_timeout = Some(duration_from_millis(0));
        if to_start <= 0 {
            o.schedule_to_start_timeout = Some(duration_from_millis(0));
        }
    } else {
        return Err(ApiError::invalid_argument(format!(
            "a valid StartToCloseTimeout or ScheduleToCloseTimeout must be set on the activity. \
             ActivityId={activity_id} ActivityType={activity_type}"
        )));
    }
    let start_to_close = opt_duration_millis(o.start_to_close_timeout.as_ref());
    let heartbeat = opt_duration_millis(o.heartbeat_timeout.as_ref());
    if heartbeat > start_to_close {
        o.heartbeat_timeout = o.start_to_close_timeout;
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: i64) -> Option<Duration> {
        Some(duration_from_millis(s * 1000))
    }

    #[test]
    fn paths_in_either_case_name_the_same_field() {
        assert_eq!(camel("task_queue.name"), "taskQueue.name");
        assert_eq!(
            camel("retryPolicy.maximumAttempts"),
            "retryPolicy.maximumAttempts"
        );
        assert_eq!(camel("start_to_close_timeout"), "startToCloseTimeout");
    }

    #[test]
    fn merge_takes_only_masked_fields() {
        let into = ActivityOptions {
            start_to_close_timeout: secs(10),
            heartbeat_timeout: secs(5),
            retry_policy: Some(RetryPolicy {
                maximum_attempts: 3,
                backoff_coefficient: 2.0,
                ..Default::default()
            }),
            ..Default::default()
        };
        let from = ActivityOptions {
            start_to_close_timeout: secs(60),
            heartbeat_timeout: secs(1),
            retry_policy: Some(RetryPolicy {
                maximum_attempts: 7,
                backoff_coefficient: 1.5,
                ..Default::default()
            }),
            ..Default::default()
        };
        let merged = merge_options(
            into,
            &from,
            &["start_to_close_timeout", "retry_policy.maximum_attempts"],
        )
        .unwrap();
        assert_eq!(merged.start_to_close_timeout, secs(60));
        assert_eq!(merged.heartbeat_timeout, secs(5));
        let policy = merged.retry_policy.unwrap();
        assert_eq!(policy.maximum_attempts, 7);
        assert_eq!(policy.backoff_coefficient, 2.0);
    }

    #[test]
    fn bad_merges_are_refused() {
        let err = merge_options(
            ActivityOptions::default(),
            &ActivityOptions::default(),
            &["retry_policy.maximum_attempts"],
        )
        .unwrap_err();
        assert_eq!(err.message, "RetryPolicy is not provided");
        let from = ActivityOptions {
            retry_policy: Some(RetryPolicy {
                maximum_attempts: -1,
                backoff_coefficient: 2.0,
                ..Default::default()
            }),
            ..Default::default()
        };
        let current = ActivityOptions {
            retry_policy: Some(RetryPolicy {
                backoff_coefficient: 2.0,
                ..Default::default()
            }),
            ..Default::default()
        };
        let err = merge_options(current, &from, &["retry_policy.maximum_attempts"]).unwrap_err();
        assert_eq!(
            err.message,
            "MaximumAttempts cannot be negative on retry policy."
        );
    }

    #[test]
    fn normalize_derives_timeouts_as_temporal() {
        let o = normalize(
            ActivityOptions {
                schedule_to_close_timeout: secs(30),
                start_to_close_timeout: secs(60),
                heartbeat_timeout: secs(90),
                ..Default::default()
            },
            "wf-queue",
            "a",
            "T",
        )
        .unwrap();
        assert_eq!(o.task_queue.unwrap().name, "wf-queue");
        assert_eq!(o.schedule_to_start_timeout, secs(30));
        assert_eq!(o.start_to_close_timeout, secs(30));
        assert_eq!(o.heartbeat_timeout, secs(30));
        let err = normalize(ActivityOptions::default(), "q", "a", "T").unwrap_err();
        assert!(err.message.starts_with("a valid StartToCloseTimeout"));
    }
}
