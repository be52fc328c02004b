//! Due timer tasks: user timers, workflow-task and activity timeouts, activity retry backoffs,
//! run timeouts and delayed starts. A timer task is deleted when it fires; one whose target
//! moved on (timer canceled, attempt finished) changes nothing else.

use chronicle_proto::chronicle::history::v1::{self as cmd, command_result};
use chronicle_proto::chronicle::persistence::v1::timer_task::Kind;
use chronicle_proto::temporal::api::enums::v1::{EventType, RetryState, WorkflowExecutionStatus};
use chronicle_proto::temporal::api::history::v1 as h;
use chronicle_proto::temporal::api::history::v1::history_event::Attributes;
use chronicle_proto::wkt::Timestamp;
use chronicle_storage::ShardBatch;

use super::{ApplyError, ApplyResult, activity, close_run, load_run, workflow_task};

pub fn fire(
    batch: &mut ShardBatch,
    now: Timestamp,
    c: cmd::FireTimer,
) -> ApplyResult<command_result::Result> {
    if !batch.timer_exists(&c.key)? {
        return Ok(super::ok());
    }
    batch.delete_timer(&c.key);
    let Some(task) = c.task else {
        return Ok(super::ok());
    };
    if task.kind == Kind::Schedule as i32 {
        crate::schedule::apply::fire(batch, now, &c.key, &task)?;
        return Ok(super::ok());
    }
    if task.kind == Kind::DeleteRun as i32 {
        super::delete::fire(batch, now, &task)?;
        return Ok(super::ok());
    }
    let mut ms = match load_run(
        batch,
        now,
        &task.namespace_id,
        &task.workflow_id,
        &task.run_id,
    ) {
        Ok(ms) => ms,
        Err(ApplyError::Rejected(_)) => return Ok(super::ok()),
        Err(e) => return Err(e),
    };
    if !ms.is_running() {
        return Ok(super::ok());
    }
    let changed = match Kind::try_from(task.kind).unwrap_or_default() {
        Kind::UserTimer => match ms.state.timers.get(&task.timer_id) {
            Some(timer) if timer.started_event_id == task.event_id => {
                ms.state.timers.remove(&task.timer_id);
                ms.add_or_buffer_event(
                    EventType::TimerFired,
                    Attributes::TimerFiredEventAttributes(h::TimerFiredEventAttributes {
                        timer_id: task.timer_id.clone(),
                        started_event_id: task.event_id,
                    }),
                );
                ms.schedule_workflow_task_if_needed(batch)?;
                true
            }
            _ => false,
        },
        Kind::WorkflowTaskTimeout => {
            workflow_task::timed_out(batch, &mut ms, task.event_id, task.attempt)?
        }
        Kind::ActivityTimeout => activity::timed_out(batch, &mut ms, &task)?,
        Kind::ActivityRetry => activity::retry_due(batch, &mut ms, task.event_id, task.attempt)?,
        kind @ (Kind::WorkflowRunTimeout | Kind::WorkflowExecutionTimeout) => {
            // As Temporal: a run timeout may be retried under the workflow's retry policy (and
            // reports why not otherwise, e.g. RetryPolicyNotSet); once the whole execution's
            // time is up there is no retry and the state is Timeout.
            let retry = if kind == Kind::WorkflowExecutionTimeout {
                Err(RetryState::Timeout)
            } else {
                super::new_run::workflow_retry_delay(&ms, None)
            };
            // Without a retry (and with time left), a cron workflow's next run starts at the
            // next cron time.
            let cron = match retry {
                Err(RetryState::Timeout) if kind == Kind::WorkflowExecutionTimeout => None,
                Err(_) => super::new_run::cron_delay(&ms),
                Ok(_) => None,
            };
            let id = ms.add_event(
                EventType::WorkflowExecutionTimedOut,
                Attributes::WorkflowExecutionTimedOutEventAttributes(
                    h::WorkflowExecutionTimedOutEventAttributes {
                        retry_state: match retry {
                            Ok(_) => RetryState::InProgress,
                            Err(state) => state,
                        } as i32,
                        new_execution_run_id: if retry.is_ok() || cron.is_some() {
                            c.new_run_id.clone()
                        } else {
                            String::new()
                        },
                    },
                ),
            );
            close_run(batch, &mut ms, WorkflowExecutionStatus::TimedOut, id)?;
            if let Ok(delay) = retry {
                super::new_run::start_retry(batch, &ms, &c.new_run_id, None, delay)?;
            } else if let Some(delay) = cron {
                super::new_run::start_cron(
                    batch,
                    &ms,
                    &c.new_run_id,
                    None,
                    Some(super::new_run::run_timeout_failure()),
                    delay,
                )?;
            }
            true
        }
        Kind::WorkflowStartDelay => {
            ms.schedule_workflow_task_if_needed(batch)?;
            true
        }
        Kind::WorkflowTaskScheduleToStartTimeout => {
            workflow_task::sticky_timed_out(batch, &mut ms, task.event_id, task.attempt)?
        }
        Kind::NexusOperationTimeout => super::nexus_operation::timed_out(batch, &mut ms, &task)?,
        Kind::Unspecified | Kind::Schedule | Kind::DeleteRun => false,
    };
    if changed {
        ms.persist(batch);
    }
    Ok(super::ok())
}
