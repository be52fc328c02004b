//! Applying a workflow task completion: the task's Completed event, its commands in order (each
//! kind dispatched to its own module) and what follows them (a new task, eager activities).

use chronicle_proto::chronicle::history::v1 as cmd;
use chronicle_proto::chronicle::persistence::v1 as pb;
use chronicle_proto::temporal::api::command::v1::{
    Command, command::Attributes as CommandAttributes,
};
use chronicle_proto::temporal::api::enums::v1::{EventType, WorkflowTaskFailedCause};
use chronicle_proto::temporal::api::history::v1 as h;
use chronicle_proto::temporal::api::history::v1::history_event::Attributes;
use chronicle_storage::ShardBatch;

use super::activity_commands::{self, schedule_activity};
use super::{
    CommandContext, Rejection, close_commands, property_commands, reject, storage_rejection,
    timer_commands,
};
use crate::mutable_state::MutableState;

/// Applies a completion to the run: its Completed event, its commands in order, then a new task
/// if one is due and the eager activities it starts (returned as started attempts).
pub(super) fn apply_completion(
    batch: &mut ShardBatch,
    ms: &mut MutableState,
    task: &pb::WorkflowTaskInfo,
    request: &chronicle_proto::temporal::api::workflowservice::v1::RespondWorkflowTaskCompletedRequest,
    new_run_id: &str,
    eager_activities: bool,
    nexus: crate::apply::nexus_operation::Resolved<'_>,
) -> Result<Vec<cmd::RecordActivityTaskStartedResult>, Rejection> {
    if task.transient {
        ms.write_transient_events(task);
    }
    let completed_id = ms.add_event(
        EventType::WorkflowTaskCompleted,
        Attributes::WorkflowTaskCompletedEventAttributes(h::WorkflowTaskCompletedEventAttributes {
            scheduled_event_id: task.scheduled_event_id,
            started_event_id: task.started_event_id,
            identity: request.identity.clone(),
            sdk_metadata: request.sdk_metadata.clone(),
            metering_metadata: request.metering_metadata,
            versioning_behavior: request.versioning_behavior,
            ..Default::default()
        }),
    );
    ms.state.workflow_task = None;
    ms.state.last_completed_workflow_task_started_event_id = task.started_event_id;
    match request.sticky_attributes.as_ref().and_then(|a| {
        a.worker_task_queue
            .as_ref()
            .map(|q| (q.name.clone(), a.schedule_to_start_timeout))
    }) {
        Some((name, timeout)) if !name.is_empty() => {
            ms.state.sticky_task_queue = name;
            ms.state.sticky_schedule_to_start_timeout = timeout;
        }
        _ => ms.clear_sticky(),
    }
    let has_new_events = !ms.state.buffered_events.is_empty();
    let mut closed = false;
    let mut ctx = CommandContext {
        completed_id,
        namespace: &request.namespace,
        initiated_children: Default::default(),
        eager_activities,
        eager_scheduled: Vec::new(),
        cancel_requested: Vec::new(),
        messages: crate::apply::update::Messages::new(&request.messages),
        identity: &request.identity,
        nexus,
    };
    for command in &request.commands {
        if closed {
            return Err(reject(
                WorkflowTaskFailedCause::BadCompleteWorkflowExecutionAttributes,
                "commands follow a command that closed the workflow",
            ));
        }
        let first_event_id = ms.state.next_event_id;
        closed = apply_command(batch, ms, command, &mut ctx, has_new_events, new_run_id)?;
        // The command's summary and details (user metadata) go on the event it created, as in
        // Temporal (a timer's summary, an activity's, a child's...).
        if let Some(metadata) = &command.user_metadata
            && let Some(event) = ms
                .new_events
                .iter_mut()
                .find(|e| e.event_id == first_event_id)
        {
            event.user_metadata = Some(metadata.clone());
        }
    }
    if closed {
        // Updates still in flight were aborted with the close; messages no command referenced
        // have nothing left to act on. (The close told running attempts to stop.)
        return Ok(Vec::new());
    }
    // Started attempts whose cancellation the task requested: their workers are told at once
    // (one row per worker process for the whole task, as Temporal batches them).
    let cancel_requested: Vec<pb::ActivityInfo> = ctx
        .cancel_requested
        .iter()
        .filter_map(|id| ms.state.activities.get(id).cloned())
        .collect();
    crate::worker_commands::cancel_running(batch, &ms.state, ms.now, &cancel_requested)
        .map_err(Rejection::Storage)?;
    crate::apply::update::after_commands(ms, &mut ctx, task, request)?;
    ms.flush_buffered_events();
    if has_new_events || request.force_create_new_workflow_task || ms.force_new_workflow_task {
        ms.schedule_workflow_task(batch, 1)?;
    } else if crate::apply::update::has_undelivered(ms) {
        // Updates admitted while the task ran: a task of their own, as Temporal does.
        ms.schedule_speculative_workflow_task(batch)?;
    }
    // Eager activities start once every command applied, as in Temporal: one canceled by a
    // later command of the same task is gone and gets no task.
    let mut started = Vec::with_capacity(ctx.eager_scheduled.len());
    for scheduled_id in std::mem::take(&mut ctx.eager_scheduled) {
        let Some(activity) = ms
            .state
            .activities
            .get(&scheduled_id)
            .filter(|a| !a.started)
            .cloned()
        else {
            continue;
        };
        let request_id = format!("{}:eager:{scheduled_id}", ms.state.run_id);
        let activity = crate::apply::activity::start_attempt(
            batch,
            ms,
            activity,
            request.identity.clone(),
            request_id,
            request.worker_control_task_queue.clone(),
        )
        .map_err(storage_rejection)?;
        started.push(crate::apply::activity::started_attempt(ms, &activity));
    }
    Ok(started)
}

/// Applies one command; returns whether it closed the workflow.
fn apply_command(
    batch: &mut ShardBatch,
    ms: &mut MutableState,
    command: &Command,
    ctx: &mut CommandContext,
    has_new_events: bool,
    new_run_id: &str,
) -> Result<bool, Rejection> {
    use WorkflowTaskFailedCause as Cause;
    let completed_id = ctx.completed_id;
    let Some(attributes) = &command.attributes else {
        return Err(reject(Cause::BadBinary, "command has no attributes"));
    };
    let is_close = matches!(
        attributes,
        CommandAttributes::CompleteWorkflowExecutionCommandAttributes(_)
            | CommandAttributes::FailWorkflowExecutionCommandAttributes(_)
            | CommandAttributes::CancelWorkflowExecutionCommandAttributes(_)
            | CommandAttributes::ContinueAsNewWorkflowExecutionCommandAttributes(_)
    );
    if is_close && has_new_events {
        // New events arrived while the worker decided to close: it must see them first.
        return Err(reject(
            Cause::UnhandledCommand,
            "UnhandledCommand: new events arrived while the workflow task was running",
        ));
    }
    match attributes {
        CommandAttributes::ScheduleActivityTaskCommandAttributes(a) => {
            // Eager only on the run's own (normal) task queue, where the completing worker polls.
            let eager = ctx.eager_activities
                && a.request_eager_execution
                && a.task_queue
                    .as_ref()
                    .is_none_or(|q| q.name.is_empty() || q.name == ms.state.task_queue);
            let scheduled_id = schedule_activity(batch, ms, a, completed_id, eager)?;
            if eager {
                ctx.eager_scheduled.push(scheduled_id);
            }
            Ok(false)
        }
        CommandAttributes::RequestCancelActivityTaskCommandAttributes(a) => {
            activity_commands::request_cancel_activity(batch, ms, a, completed_id, ctx)
        }
        CommandAttributes::StartTimerCommandAttributes(a) => {
            timer_commands::start_timer(batch, ms, a, completed_id)
        }
        CommandAttributes::CancelTimerCommandAttributes(a) => {
            timer_commands::cancel_timer(ms, a, completed_id)
        }
        CommandAttributes::CompleteWorkflowExecutionCommandAttributes(a) => {
            close_commands::complete_workflow(batch, ms, a, completed_id, new_run_id)
        }
        CommandAttributes::FailWorkflowExecutionCommandAttributes(a) => {
            close_commands::fail_workflow(batch, ms, a, completed_id, new_run_id)
        }
        CommandAttributes::ContinueAsNewWorkflowExecutionCommandAttributes(a) => {
            close_commands::continue_as_new(batch, ms, a, completed_id, new_run_id)
        }
        CommandAttributes::CancelWorkflowExecutionCommandAttributes(a) => {
            close_commands::cancel_workflow(batch, ms, a, completed_id)
        }
        CommandAttributes::RecordMarkerCommandAttributes(a) => {
            property_commands::record_marker(ms, a, completed_id)
        }
        CommandAttributes::UpsertWorkflowSearchAttributesCommandAttributes(a) => {
            property_commands::upsert_search_attributes(ms, a, completed_id)
        }
        CommandAttributes::ModifyWorkflowPropertiesCommandAttributes(a) => {
            property_commands::modify_properties(ms, a, completed_id)
        }
        CommandAttributes::StartChildWorkflowExecutionCommandAttributes(a) => {
            crate::apply::child::initiate(batch, ms, a, ctx)?;
            Ok(false)
        }
        CommandAttributes::RequestCancelExternalWorkflowExecutionCommandAttributes(a) => {
            crate::apply::external::initiate_cancel(batch, ms, a, ctx)?;
            Ok(false)
        }
        CommandAttributes::SignalExternalWorkflowExecutionCommandAttributes(a) => {
            crate::apply::external::initiate_signal(batch, ms, a, ctx)?;
            Ok(false)
        }
        CommandAttributes::ProtocolMessageCommandAttributes(a) => {
            crate::apply::update::protocol_message_command(ms, ctx, &a.message_id)?;
            Ok(false)
        }
        CommandAttributes::ScheduleNexusOperationCommandAttributes(a) => {
            crate::apply::nexus_operation::schedule(batch, ms, a, ctx)?;
            Ok(false)
        }
        CommandAttributes::RequestCancelNexusOperationCommandAttributes(a) => {
            crate::apply::nexus_async::request_cancel(batch, ms, a, ctx)?;
            Ok(false)
        }
    }
}
