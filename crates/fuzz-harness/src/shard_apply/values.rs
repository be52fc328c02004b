//! Fuzzed values for `shard_apply`: mostly near what the shard holds, sometimes anything.

use super::*;

pub(super) fn int(u: &mut Unstructured, real: i64) -> ArbResult<i64> {
    Ok(match u.int_in_range(0..=7u8)? {
        0..=3 => real,
        4 => real.wrapping_add(i64::from(u.int_in_range(-3i8..=3)?)),
        5 => *u.choose(&[0, -1, 1, i64::MAX, i64::MIN, i64::from(i32::MAX)])?,
        _ => u.arbitrary()?,
    })
}

pub(super) fn small(u: &mut Unstructured, real: i32) -> ArbResult<i32> {
    Ok(match u.int_in_range(0..=5u8)? {
        0..=3 => real,
        4 => *u.choose(&[0, -1, 2, i32::MAX, i32::MIN])?,
        _ => u.arbitrary()?,
    })
}

pub(super) fn text(u: &mut Unstructured, choices: &[&str]) -> ArbResult<String> {
    Ok(if u.ratio(1, 6)? {
        u.arbitrary::<String>()?
    } else {
        u.choose(choices)?.to_string()
    })
}

pub(super) fn workflow_id(u: &mut Unstructured) -> ArbResult<String> {
    Ok(format!("wf-{}", u.int_in_range(0..=WORKFLOWS - 1)?))
}

pub(super) fn duration(u: &mut Unstructured) -> ArbResult<Option<Duration>> {
    Ok(match u.int_in_range(0..=5u8)? {
        0 => None,
        1..=3 => Some(Duration {
            seconds: u.int_in_range(0..=100_000)?,
            nanos: u.int_in_range(0..=999_999_999)?,
        }),
        _ => Some(Duration {
            seconds: u.arbitrary()?,
            nanos: u.arbitrary()?,
        }),
    })
}

pub(super) fn payloads(u: &mut Unstructured) -> ArbResult<Option<Payloads>> {
    if u.ratio(1, 2)? {
        return Ok(None);
    }
    let mut metadata = HashMap::new();
    metadata.insert("encoding".to_string(), b"json/plain".to_vec());
    if u.ratio(1, 3)? {
        metadata.insert(u.arbitrary()?, u.arbitrary()?);
    }
    Ok(Some(Payloads {
        payloads: vec![Payload {
            metadata,
            data: u.arbitrary()?,
            ..Default::default()
        }],
    }))
}

pub(super) fn retry_policy(u: &mut Unstructured) -> ArbResult<Option<RetryPolicy>> {
    if u.ratio(1, 2)? {
        return Ok(None);
    }
    Ok(Some(RetryPolicy {
        initial_interval: duration(u)?,
        backoff_coefficient: u.arbitrary()?,
        maximum_interval: duration(u)?,
        maximum_attempts: small(u, 3)?,
        non_retryable_error_types: Vec::new(),
    }))
}

pub(super) fn failure(u: &mut Unstructured) -> ArbResult<Option<Failure>> {
    Ok(if u.ratio(1, 2)? {
        None
    } else {
        Some(Failure {
            message: text(u, &["boom"])?,
            ..Default::default()
        })
    })
}

pub(super) fn search_attributes(u: &mut Unstructured) -> ArbResult<Option<SearchAttributes>> {
    if u.ratio(1, 2)? {
        return Ok(None);
    }
    let mut indexed_fields = HashMap::new();
    for _ in 0..u.int_in_range(0..=3)? {
        let name = text(
            u,
            &[
                "CustomKeyword",
                "CustomInt",
                "BinaryChecksums",
                "WorkflowId",
            ],
        )?;
        let data = text(u, &["\"v\"", "42", "[\"a\"]", "null", "1e999"])?;
        indexed_fields.insert(
            name,
            Payload {
                metadata: HashMap::from([("encoding".into(), b"json/plain".to_vec())]),
                data: data.into_bytes(),
                ..Default::default()
            },
        );
    }
    Ok(Some(SearchAttributes { indexed_fields }))
}

pub(super) fn task_queue(u: &mut Unstructured) -> ArbResult<Option<TaskQueue>> {
    Ok(Some(TaskQueue {
        name: text(u, &["tq", "other", ""])?,
        kind: small(u, 0)?,
        normal_name: String::new(),
    }))
}

/// One Temporal command of a workflow task completion.
// The deprecated `namespace` fields are still what old SDKs send.
#[allow(deprecated)]
pub(super) fn workflow_command(
    u: &mut Unstructured,
    state: &pb::WorkflowExecutionState,
) -> ArbResult<command::Command> {
    let activity = state.activities.values().next();
    let attributes = match u.int_in_range(0..=13u8)? {
        0 => Attributes::ScheduleActivityTaskCommandAttributes(
            command::ScheduleActivityTaskCommandAttributes {
                activity_id: text(u, &["act", "act-2", ""])?,
                activity_type: Some(ActivityType {
                    name: text(u, &["A"])?,
                }),
                task_queue: task_queue(u)?,
                input: payloads(u)?,
                schedule_to_close_timeout: duration(u)?,
                schedule_to_start_timeout: duration(u)?,
                start_to_close_timeout: duration(u)?,
                heartbeat_timeout: duration(u)?,
                retry_policy: retry_policy(u)?,
                request_eager_execution: u.arbitrary()?,
                ..Default::default()
            },
        ),
        1 => Attributes::StartTimerCommandAttributes(command::StartTimerCommandAttributes {
            timer_id: text(u, &["t", "t-2", ""])?,
            start_to_fire_timeout: duration(u)?,
        }),
        2 => Attributes::CancelTimerCommandAttributes(command::CancelTimerCommandAttributes {
            timer_id: text(u, &["t", "t-2", "missing"])?,
        }),
        3 => Attributes::CompleteWorkflowExecutionCommandAttributes(
            command::CompleteWorkflowExecutionCommandAttributes {
                result: payloads(u)?,
            },
        ),
        4 => Attributes::FailWorkflowExecutionCommandAttributes(
            command::FailWorkflowExecutionCommandAttributes {
                failure: failure(u)?,
            },
        ),
        5 => Attributes::RequestCancelActivityTaskCommandAttributes(
            command::RequestCancelActivityTaskCommandAttributes {
                scheduled_event_id: int(u, activity.map_or(5, |a| a.scheduled_event_id))?,
            },
        ),
        6 => Attributes::ContinueAsNewWorkflowExecutionCommandAttributes(
            command::ContinueAsNewWorkflowExecutionCommandAttributes {
                workflow_type: Some(WorkflowType {
                    name: text(u, &["Fuzzed", ""])?,
                }),
                task_queue: task_queue(u)?,
                input: payloads(u)?,
                workflow_run_timeout: duration(u)?,
                workflow_task_timeout: duration(u)?,
                backoff_start_interval: duration(u)?,
                retry_policy: retry_policy(u)?,
                initiator: small(u, 0)?,
                failure: failure(u)?,
                cron_schedule: text(u, &["", "* * * * *", "@every 1s", "61 * * * *"])?,
                search_attributes: search_attributes(u)?,
                ..Default::default()
            },
        ),
        7 => Attributes::StartChildWorkflowExecutionCommandAttributes(
            command::StartChildWorkflowExecutionCommandAttributes {
                namespace: text(u, &["fuzz", ""])?,
                workflow_id: workflow_id(u)?,
                workflow_type: Some(WorkflowType {
                    name: text(u, &["Child"])?,
                }),
                task_queue: task_queue(u)?,
                workflow_execution_timeout: duration(u)?,
                workflow_run_timeout: duration(u)?,
                workflow_task_timeout: duration(u)?,
                parent_close_policy: small(u, 1)?,
                workflow_id_reuse_policy: small(u, 0)?,
                retry_policy: retry_policy(u)?,
                cron_schedule: text(u, &["", "@hourly", "bad cron"])?,
                search_attributes: search_attributes(u)?,
                ..Default::default()
            },
        ),
        8 => Attributes::SignalExternalWorkflowExecutionCommandAttributes(
            command::SignalExternalWorkflowExecutionCommandAttributes {
                namespace: text(u, &["fuzz", ""])?,
                execution: Some(WorkflowExecution {
                    workflow_id: workflow_id(u)?,
                    run_id: text(u, &["", "run-0", "run-1"])?,
                }),
                signal_name: text(u, &["sig"])?,
                input: payloads(u)?,
                child_workflow_only: u.arbitrary()?,
                ..Default::default()
            },
        ),
        9 => Attributes::RequestCancelExternalWorkflowExecutionCommandAttributes(
            command::RequestCancelExternalWorkflowExecutionCommandAttributes {
                namespace: text(u, &["fuzz", ""])?,
                workflow_id: workflow_id(u)?,
                run_id: text(u, &["", "run-0"])?,
                child_workflow_only: u.arbitrary()?,
                reason: text(u, &["why"])?,
                ..Default::default()
            },
        ),
        10 => Attributes::RecordMarkerCommandAttributes(command::RecordMarkerCommandAttributes {
            marker_name: text(u, &["Version", "LocalActivity", ""])?,
            failure: failure(u)?,
            ..Default::default()
        }),
        11 => Attributes::UpsertWorkflowSearchAttributesCommandAttributes(
            command::UpsertWorkflowSearchAttributesCommandAttributes {
                search_attributes: search_attributes(u)?,
            },
        ),
        12 => Attributes::CancelWorkflowExecutionCommandAttributes(
            command::CancelWorkflowExecutionCommandAttributes {
                details: payloads(u)?,
            },
        ),
        _ => Attributes::ModifyWorkflowPropertiesCommandAttributes(
            command::ModifyWorkflowPropertiesCommandAttributes {
                upserted_memo: None,
            },
        ),
    };
    Ok(command::Command {
        command_type: small(u, 0)?,
        attributes: Some(attributes),
        ..Default::default()
    })
}

/// A task token near the run's real one: fuzzed IDs, attempt, run, request ID.
pub(super) fn token(
    u: &mut Unstructured,
    state: Option<&pb::WorkflowExecutionState>,
    activity: bool,
) -> ArbResult<pb::TaskToken> {
    let mut token = state.and_then(token_of).unwrap_or_else(|| pb::TaskToken {
        namespace_id: NS.into(),
        workflow_id: "wf-0".into(),
        run_id: "run-0".into(),
        scheduled_event_id: 2,
        ..Default::default()
    });
    if activity {
        let info = state.and_then(|s| s.activities.values().next());
        token.is_activity = true;
        token.scheduled_event_id = info.map_or(5, |a| a.scheduled_event_id);
        token.attempt = info.map_or(1, |a| a.attempt);
        token.activity_id = info.map(|a| a.activity_id.clone()).unwrap_or_default();
        token.started_event_id = 0;
    }
    token.scheduled_event_id = int(u, token.scheduled_event_id)?;
    token.started_event_id = int(u, token.started_event_id)?;
    token.attempt = small(u, token.attempt)?;
    if u.ratio(1, 8)? {
        token.run_id = text(u, &["", "run-0", "other"])?;
    }
    if u.ratio(1, 8)? {
        token.started_request_id = u.arbitrary()?;
    }
    Ok(token)
}

/// A standalone activity command: starts under any policies and timeouts (the frontend's
/// normalization skipped), cancellations, terminations and deletions of a few activity IDs.
pub(super) fn standalone_activity_command(u: &mut Unstructured) -> ArbResult<Kind> {
    let activity_id = text(u, &["act-0", "act-1", ""])?;
    let run_id = text(u, &["", "act-run-0", "other"])?;
    let request_id = text(u, &["req-0", "req-1", ""])?;
    Ok(match u.int_in_range(0..=3u8)? {
        0 => Kind::StartActivityExecution(cmd::StartActivityExecution {
            namespace_id: NS.into(),
            request: Some(ws::StartActivityExecutionRequest {
                activity_id,
                request_id,
                activity_type: Some(ActivityType {
                    name: text(u, &["Work", ""])?,
                }),
                task_queue: Some(TaskQueue {
                    name: text(u, &["tq", ""])?,
                    ..Default::default()
                }),
                schedule_to_close_timeout: duration(u)?,
                schedule_to_start_timeout: duration(u)?,
                start_to_close_timeout: duration(u)?,
                heartbeat_timeout: duration(u)?,
                start_delay: duration(u)?,
                retry_policy: retry_policy(u)?,
                id_reuse_policy: small(u, 0)?,
                id_conflict_policy: small(u, 0)?,
                ..Default::default()
            }),
            run_id: text(u, &["act-run-0", "act-run-1", ""])?,
        }),
        1 => Kind::CancelActivityExecution(cmd::CancelActivityExecution {
            namespace_id: NS.into(),
            request: Some(ws::RequestCancelActivityExecutionRequest {
                activity_id,
                run_id,
                request_id,
                reason: u.arbitrary()?,
                ..Default::default()
            }),
        }),
        2 => Kind::TerminateActivityExecution(cmd::TerminateActivityExecution {
            namespace_id: NS.into(),
            request: Some(ws::TerminateActivityExecutionRequest {
                activity_id,
                run_id,
                request_id,
                reason: u.arbitrary()?,
                ..Default::default()
            }),
        }),
        _ => Kind::DeleteActivityExecution(cmd::DeleteActivityExecution {
            namespace_id: NS.into(),
            request: Some(ws::DeleteActivityExecutionRequest {
                activity_id,
                run_id,
                ..Default::default()
            }),
        }),
    })
}
