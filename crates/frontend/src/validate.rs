//! Request validation with Temporal's limits and messages. Runs before anything is proposed, so
//! a refused request changes nothing.

use chronicle_proto::temporal::api::command::v1::{
    Command, command::Attributes as CommandAttributes,
};
use chronicle_proto::temporal::api::common::v1::{Payloads, RetryPolicy};
use chronicle_proto::temporal::api::failure::v1::{Failure, failure::FailureInfo};
use chronicle_proto::wkt::Duration;
use chronicle_types::limits::{MAX_ID_LENGTH, MAX_PAYLOAD_BYTES};
use chronicle_types::time::duration_millis;
use chronicle_types::{ApiError, ApiResult};
use prost::Message;

pub fn required_id(value: &str, what: &str) -> ApiResult<()> {
    if value.is_empty() {
        return Err(ApiError::invalid_argument(format!(
            "{what} is not set on request."
        )));
    }
    // Standalone activities are stored under workflow-ID keys no workflow may take.
    if what == "WorkflowId" && chronicle_types::standalone_activity::is_key(value) {
        return Err(ApiError::invalid_argument(format!(
            "{what} must not start with a NUL character followed by \"activity\"."
        )));
    }
    max_id(value, what)
}

/// A task queue name a request sets: required, not too long, and not a partition's name
/// (`/_sys/...`, as Temporal refuses it).
pub fn task_queue_name(name: &str) -> ApiResult<()> {
    required_id(name, "TaskQueue")?;
    if name.starts_with(chronicle_cluster::partition::RESERVED_PREFIX) {
        return Err(ApiError::invalid_argument(format!(
            "Task queue name cannot start with reserved prefix {}.",
            chronicle_cluster::partition::RESERVED_PREFIX
        )));
    }
    Ok(())
}

pub fn max_id(value: &str, what: &str) -> ApiResult<()> {
    if value.len() > MAX_ID_LENGTH {
        return Err(ApiError::invalid_argument(format!(
            "{what} exceeds length limit."
        )));
    }
    Ok(())
}

pub fn payload_size(payloads: &Option<Payloads>, what: &str) -> ApiResult<()> {
    if let Some(p) = payloads
        && p.encoded_len() > MAX_PAYLOAD_BYTES
    {
        return Err(ApiError::invalid_argument(format!(
            "{what} exceeds size limit."
        )));
    }
    Ok(())
}

pub fn any_size<M: Message>(message: &M, what: &str) -> ApiResult<()> {
    if message.encoded_len() > MAX_PAYLOAD_BYTES {
        return Err(ApiError::invalid_argument(format!(
            "{what} exceeds size limit."
        )));
    }
    Ok(())
}

/// Temporal's longest duration: 100 years. Longer ones are capped to it, as Temporal does
/// (`timestamp.ValidateAndCapProtoDuration`); the cap also keeps every deadline computed from a
/// client's duration far from `i64` overflow.
pub const MAX_DURATION_SECONDS: i64 = 100 * 365 * 24 * 60 * 60;

/// A client's duration: refused if negative, if its seconds and nanos differ in sign, or if its
/// nanos are not within ±1 s (a malformed `google.protobuf.Duration`); capped to 100 years.
pub fn duration(d: &mut Option<Duration>, what: &str) -> ApiResult<()> {
    let Some(v) = d.as_mut() else {
        return Ok(());
    };
    let invalid = |why: &str| ApiError::invalid_argument(format!("Invalid {what}: {why}."));
    if !(-999_999_999..=999_999_999).contains(&v.nanos) {
        return Err(invalid("nanos out of range"));
    }
    if (v.seconds > 0 && v.nanos < 0) || (v.seconds < 0 && v.nanos > 0) {
        return Err(invalid(
            "duration has seconds and nanos with different signs",
        ));
    }
    if v.seconds < 0 || v.nanos < 0 {
        return Err(invalid("negative duration"));
    }
    cap(d);
    Ok(())
}

pub fn priority(p: Option<&chronicle_proto::temporal::api::common::v1::Priority>) -> ApiResult<()> {
    chronicle_types::priority::validate(p)
        .map_err(|e| ApiError::invalid_argument(format!("invalid priorities: {e}")))
}

/// A retry policy's intervals as [`duration`], and Temporal's rules: no negative attempts, a
/// backoff coefficient of at least 1 (0 means the default), a maximum interval no shorter than
/// the initial one.
pub fn retry_policy(p: &mut Option<RetryPolicy>, what: &str) -> ApiResult<()> {
    let Some(p) = p.as_mut() else {
        return Ok(());
    };
    duration(&mut p.initial_interval, &format!("{what}.InitialInterval"))?;
    duration(&mut p.maximum_interval, &format!("{what}.MaximumInterval"))?;
    let invalid = |why: &str| ApiError::invalid_argument(format!("Invalid {what}: {why}."));
    if !p.backoff_coefficient.is_finite()
        || (p.backoff_coefficient != 0.0 && p.backoff_coefficient < 1.0)
    {
        return Err(invalid("BackoffCoefficient cannot be less than 1"));
    }
    if p.maximum_attempts < 0 {
        return Err(invalid("MaximumAttempts cannot be negative"));
    }
    let millis = |d: &Option<Duration>| d.as_ref().map(duration_millis).unwrap_or(0);
    let (initial, maximum) = (millis(&p.initial_interval), millis(&p.maximum_interval));
    if maximum > 0 && maximum < initial {
        return Err(invalid(
            "MaximumInterval cannot be less than InitialInterval",
        ));
    }
    Ok(())
}

/// Caps a duration at 100 years and leaves everything else as it is.
fn cap(d: &mut Option<Duration>) {
    if let Some(v) = d.as_mut()
        && (v.seconds, v.nanos) > (MAX_DURATION_SECONDS, 0)
    {
        *v = Duration {
            seconds: MAX_DURATION_SECONDS,
            nanos: 0,
        };
    }
}

fn cap_retry_policy(p: &mut Option<RetryPolicy>) {
    if let Some(p) = p.as_mut() {
        cap(&mut p.initial_interval);
        cap(&mut p.maximum_interval);
    }
}

/// The durations a workflow task's commands carry, capped at 100 years as Temporal caps them.
/// Nothing is refused here: a bad command attribute (a negative timer, say) is the history's
/// command checker's to judge, which fails the workflow task with the cause (a
/// WorkflowTaskFailed event and a new task), as Temporal does. Refusing the whole completion
/// here would leave the task started until its timeout and the SDK retrying it.
pub fn cap_command_durations(commands: &mut [Command]) {
    use CommandAttributes as A;
    for command in commands {
        match command.attributes.as_mut() {
            Some(A::ScheduleActivityTaskCommandAttributes(a)) => {
                cap(&mut a.schedule_to_close_timeout);
                cap(&mut a.schedule_to_start_timeout);
                cap(&mut a.start_to_close_timeout);
                cap(&mut a.heartbeat_timeout);
                cap_retry_policy(&mut a.retry_policy);
            }
            Some(A::StartTimerCommandAttributes(a)) => cap(&mut a.start_to_fire_timeout),
            Some(A::StartChildWorkflowExecutionCommandAttributes(a)) => {
                cap(&mut a.workflow_execution_timeout);
                cap(&mut a.workflow_run_timeout);
                cap(&mut a.workflow_task_timeout);
                cap_retry_policy(&mut a.retry_policy);
            }
            Some(A::ContinueAsNewWorkflowExecutionCommandAttributes(a)) => {
                cap(&mut a.workflow_run_timeout);
                cap(&mut a.workflow_task_timeout);
                cap(&mut a.backoff_start_interval);
                cap_retry_policy(&mut a.retry_policy);
            }
            _ => {}
        }
    }
}

/// The retry delay an activity's failure may ask for.
pub fn failure_durations(failure: &mut Option<Failure>) -> ApiResult<()> {
    if let Some(Failure {
        failure_info: Some(FailureInfo::ApplicationFailureInfo(info)),
        ..
    }) = failure.as_mut()
    {
        duration(&mut info.next_retry_delay, "Failure.NextRetryDelay")?;
    }
    Ok(())
}

/// The checks every StartWorkflowExecutionRequest gets, alone or inside update-with-start:
/// required IDs, sizes, durations (capped as Temporal caps them), the retry policy, the memo and
/// the priority.
pub fn start_request(
    r: &mut chronicle_proto::temporal::api::workflowservice::v1::StartWorkflowExecutionRequest,
) -> Result<(), chronicle_types::ApiError> {
    required_id(&r.workflow_id, "WorkflowId")?;
    required_id(
        r.workflow_type
            .as_ref()
            .map(|t| t.name.as_str())
            .unwrap_or(""),
        "WorkflowType",
    )?;
    task_queue_name(r.task_queue.as_ref().map(|t| t.name.as_str()).unwrap_or(""))?;
    max_id(&r.request_id, "RequestId")?;
    payload_size(&r.input, "Input")?;
    duration(
        &mut r.workflow_execution_timeout,
        "WorkflowExecutionTimeout",
    )?;
    duration(&mut r.workflow_run_timeout, "WorkflowRunTimeout")?;
    duration(&mut r.workflow_task_timeout, "WorkflowTaskTimeout")?;
    duration(&mut r.workflow_start_delay, "WorkflowStartDelay")?;
    retry_policy(&mut r.retry_policy, "RetryPolicy")?;
    if let Some(memo) = &r.memo {
        any_size(memo, "Memo")?;
    }
    priority(r.priority.as_ref())?;
    crate::completion_callbacks::validate(&mut r.completion_callbacks)?;
    crate::completion_callbacks::dedup_links(&mut r.links, &r.completion_callbacks);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(seconds: i64, nanos: i32) -> Option<Duration> {
        Some(Duration { seconds, nanos })
    }

    #[test]
    fn durations_are_refused_when_negative_or_malformed_and_capped_when_huge() {
        for bad in [
            d(-1, 0),
            d(0, -1),
            d(1, -1),
            d(-1, 1),
            d(0, 1_000_000_000),
            d(1, i32::MIN),
        ] {
            let mut v = bad;
            let err = duration(&mut v, "Timeout").expect_err("refused");
            assert_eq!(err.code, tonic::Code::InvalidArgument);
            assert!(err.message.contains("Timeout"), "{}", err.message);
        }
        let mut v = d(i64::MAX, 999_999_999);
        duration(&mut v, "Timeout").expect("capped");
        assert_eq!(v, d(MAX_DURATION_SECONDS, 0));
        let mut v = d(MAX_DURATION_SECONDS, 0);
        duration(&mut v, "Timeout").expect("kept");
        assert_eq!(v, d(MAX_DURATION_SECONDS, 0));
        for fine in [None, d(0, 0), d(5, 500_000_000)] {
            let mut v = fine;
            duration(&mut v, "Timeout").expect("accepted");
            assert_eq!(v, fine);
        }
    }

    #[test]
    fn retry_policies_follow_temporals_rules() {
        let policy = |initial: i64, maximum: i64, coefficient: f64, attempts: i32| {
            Some(RetryPolicy {
                initial_interval: d(initial, 0),
                maximum_interval: d(maximum, 0),
                backoff_coefficient: coefficient,
                maximum_attempts: attempts,
                ..Default::default()
            })
        };
        for bad in [
            policy(-1, 0, 2.0, 0),
            policy(1, -1, 2.0, 0),
            policy(1, 0, 0.5, 0),
            policy(1, 0, f64::NAN, 0),
            policy(1, 0, f64::INFINITY, 0),
            policy(1, 0, 2.0, -1),
            policy(10, 5, 2.0, 0),
        ] {
            let mut p = bad;
            assert!(retry_policy(&mut p, "RetryPolicy").is_err(), "{p:?}");
        }
        let mut p = policy(i64::MAX, 0, 0.0, 3);
        retry_policy(&mut p, "RetryPolicy").expect("capped");
        assert_eq!(
            p.and_then(|p| p.initial_interval),
            d(MAX_DURATION_SECONDS, 0)
        );
    }
}
