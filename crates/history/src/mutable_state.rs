//! A run's mutable state while a command is applied: the stored `WorkflowExecutionState` plus
//! the events the command adds. Events that arrive while a workflow task is running are
//! buffered (no event ID yet) and flushed when that task ends, as Temporal does, so a worker
//! never sees events appear in the middle of the task it is working on.

use chronicle_proto::chronicle::persistence::v1 as pb;
use chronicle_proto::temporal::api::enums::v1::{
    EventType, TaskQueueKind, WorkflowExecutionStatus,
};
use chronicle_proto::temporal::api::history::v1 as h;
use chronicle_proto::temporal::api::history::v1::{HistoryEvent, history_event::Attributes};
use chronicle_proto::temporal::api::taskqueue::v1::TaskQueue;
use chronicle_proto::wkt::Timestamp;
use chronicle_storage::{ShardBatch, StorageResult};
use prost::Message;

pub struct MutableState {
    pub state: pb::WorkflowExecutionState,
    pub new_events: Vec<HistoryEvent>,
    pub now: Timestamp,
    /// Set by a command whose effect the worker must see in a new workflow task.
    pub force_new_workflow_task: bool,
    /// Keys of the timers the run's workflow task and activities held when loaded: those no
    /// longer held at `persist` (their task, activity or attempt ended) are deleted.
    loaded_timers: Vec<Vec<u8>>,
}

/// How long a workflow task waits on a sticky queue when the worker did not say.
const DEFAULT_STICKY_SCHEDULE_TO_START_MS: i64 = 5_000;

/// Event ID of a buffered event (assigned when flushed).
const BUFFERED_EVENT_ID: i64 = -123;

impl MutableState {
    pub fn new(state: pb::WorkflowExecutionState, now: Timestamp) -> Self {
        let loaded_timers = owned_timers(&state).cloned().collect();
        Self {
            state,
            new_events: Vec::new(),
            now,
            force_new_workflow_task: false,
            loaded_timers,
        }
    }

    pub fn now_ms(&self) -> i64 {
        chronicle_types::time::millis(&self.now)
    }

    pub fn is_running(&self) -> bool {
        self.state.status == WorkflowExecutionStatus::Running as i32
    }

    pub fn workflow_task_started(&self) -> bool {
        self.state
            .workflow_task
            .as_ref()
            .is_some_and(|t| t.started_event_id > 0)
    }

    /// Whether new events must wait: a workflow task is running, or a transient attempt (whose
    /// events are not written yet) holds the next event IDs.
    pub fn buffers_events(&self) -> bool {
        self.state
            .workflow_task
            .as_ref()
            .is_some_and(|t| t.started_event_id > 0 || t.transient)
    }

    pub(crate) fn make_event(
        &self,
        event_id: i64,
        event_type: EventType,
        attributes: Attributes,
    ) -> HistoryEvent {
        HistoryEvent {
            event_id,
            event_time: Some(self.now),
            event_type: event_type as i32,
            version: 0,
            task_id: 0,
            attributes: Some(attributes),
            ..Default::default()
        }
    }

    /// Whether the worker should continue the run as new: its history reached `events` events
    /// or `bytes` bytes (0: Temporal's default suggestion thresholds).
    pub fn suggest_continue_as_new(&self, events: i64, bytes: i64) -> bool {
        use chronicle_types::limits::{
            SUGGEST_CONTINUE_AS_NEW_BYTES, SUGGEST_CONTINUE_AS_NEW_EVENTS,
        };
        self.state.next_event_id > set_or(events, SUGGEST_CONTINUE_AS_NEW_EVENTS)
            || self.state.history_size_bytes >= set_or(bytes, SUGGEST_CONTINUE_AS_NEW_BYTES)
    }

    /// The reason to terminate a run whose history reached a hard limit, if it did: `events`
    /// events or `bytes` bytes (0: Temporal's defaults).
    pub fn history_limit_exceeded(&self, events: i64, bytes: i64) -> Option<&'static str> {
        use chronicle_types::limits::{MAX_HISTORY_BYTES, MAX_HISTORY_EVENTS};
        if self.state.next_event_id > set_or(events, MAX_HISTORY_EVENTS) {
            Some("Workflow history count exceeds limit.")
        } else if self.state.history_size_bytes >= set_or(bytes, MAX_HISTORY_BYTES) {
            Some("Workflow history size exceeds limit.")
        } else {
            None
        }
    }

    /// Appends an event now and returns its ID.
    pub fn add_event(&mut self, event_type: EventType, attributes: Attributes) -> i64 {
        let id = self.state.next_event_id;
        self.state.next_event_id += 1;
        let event = self.make_event(id, event_type, attributes);
        self.state.history_size_bytes += event.encoded_len() as i64;
        self.new_events.push(event);
        id
    }

    /// Appends an event, or buffers it while a workflow task is running. Returns its ID, or
    /// `None` when buffered.
    pub fn add_or_buffer_event(
        &mut self,
        event_type: EventType,
        attributes: Attributes,
    ) -> Option<i64> {
        if self.buffers_events() {
            let event = self.make_event(BUFFERED_EVENT_ID, event_type, attributes);
            self.state.buffered_events.push(event);
            None
        } else {
            Some(self.add_event(event_type, attributes))
        }
    }

    /// Gives buffered events their IDs, in arrival order.
    pub fn flush_buffered_events(&mut self) {
        // Child Started events flushed so far, by initiated event ID.
        let mut child_started = std::collections::HashMap::new();
        for mut event in std::mem::take(&mut self.state.buffered_events) {
            event.event_id = self.state.next_event_id;
            self.state.next_event_id += 1;
            // Completion events refer to their Started event, which was buffered with them.
            let previous_id = event.event_id - 1;
            fix_started_reference(&mut event, previous_id);
            self.fix_child_started_reference(&mut event, &mut child_started);
            self.state.history_size_bytes += event.encoded_len() as i64;
            self.new_events.push(event);
        }
    }

    /// A child's Started event gets its ID when flushed: the pending child learns it, and a
    /// close event of the same child buffered after it refers to it.
    fn fix_child_started_reference(
        &mut self,
        event: &mut HistoryEvent,
        started: &mut std::collections::HashMap<i64, i64>,
    ) {
        let id = event.event_id;
        let reference = match event.attributes.as_mut() {
            Some(Attributes::ChildWorkflowExecutionStartedEventAttributes(a)) => {
                started.insert(a.initiated_event_id, id);
                if let Some(child) = self.state.children.get_mut(&a.initiated_event_id) {
                    child.started_event_id = id;
                }
                return;
            }
            Some(Attributes::ChildWorkflowExecutionCompletedEventAttributes(a)) => {
                (a.initiated_event_id, &mut a.started_event_id)
            }
            Some(Attributes::ChildWorkflowExecutionFailedEventAttributes(a)) => {
                (a.initiated_event_id, &mut a.started_event_id)
            }
            Some(Attributes::ChildWorkflowExecutionCanceledEventAttributes(a)) => {
                (a.initiated_event_id, &mut a.started_event_id)
            }
            Some(Attributes::ChildWorkflowExecutionTerminatedEventAttributes(a)) => {
                (a.initiated_event_id, &mut a.started_event_id)
            }
            Some(Attributes::ChildWorkflowExecutionTimedOutEventAttributes(a)) => {
                (a.initiated_event_id, &mut a.started_event_id)
            }
            _ => return,
        };
        let (initiated, started_event_id) = reference;
        if *started_event_id == BUFFERED_EVENT_ID
            && let Some(id) = started.get(&initiated)
        {
            *started_event_id = *id;
        }
    }

    /// Schedules a workflow task if the run is open and none is pending.
    pub fn schedule_workflow_task_if_needed(
        &mut self,
        batch: &mut ShardBatch,
    ) -> StorageResult<()> {
        if self.is_running() && self.state.workflow_task.is_none() {
            self.schedule_workflow_task(batch, 1)?;
        }
        Ok(())
    }

    /// Schedules a workflow task: on the worker's sticky queue when the last completion asked
    /// for one (the worker has the run cached and gets only new events), else on the normal
    /// queue. A sticky task not picked up within its schedule-to-start timeout moves to the
    /// normal queue.
    pub fn schedule_workflow_task(
        &mut self,
        batch: &mut ShardBatch,
        attempt: i32,
    ) -> StorageResult<()> {
        self.schedule_task(batch, attempt, false)
    }

    /// Schedules a workflow task created only to deliver updates (Temporal's speculative task):
    /// its events stay out of history, like a transient attempt's, until it completes with
    /// something to record (see `apply::update::can_discard_speculative`).
    pub fn schedule_speculative_workflow_task(
        &mut self,
        batch: &mut ShardBatch,
    ) -> StorageResult<()> {
        self.schedule_task(batch, 1, true)
    }

    fn schedule_task(
        &mut self,
        batch: &mut ShardBatch,
        attempt: i32,
        speculative: bool,
    ) -> StorageResult<()> {
        let sticky = !self.state.sticky_task_queue.is_empty();
        let (task_queue, kind) = if sticky {
            (self.state.sticky_task_queue.clone(), TaskQueueKind::Sticky)
        } else {
            (self.state.task_queue.clone(), TaskQueueKind::Normal)
        };
        let timeout = self
            .state
            .workflow_task_timeout
            .or(Some(chronicle_types::time::duration_from_millis(10_000)));
        // Retries of a failed workflow task are transient, as in Temporal: their Scheduled and
        // Started events are only written if the attempt completes, so a task failing in a loop
        // does not grow the history. The attempt holds the next event IDs meanwhile.
        let transient = attempt > 1 || speculative;
        let scheduled_attributes = Attributes::WorkflowTaskScheduledEventAttributes(
            h::WorkflowTaskScheduledEventAttributes {
                task_queue: Some(TaskQueue {
                    name: task_queue.clone(),
                    kind: kind as i32,
                    normal_name: if sticky {
                        self.state.task_queue.clone()
                    } else {
                        String::new()
                    },
                }),
                start_to_close_timeout: timeout,
                attempt,
            },
        );
        let scheduled_event_id = if transient {
            self.state.next_event_id
        } else {
            self.add_event(EventType::WorkflowTaskScheduled, scheduled_attributes)
        };
        let outbox_task_id = batch.put_outbox(&pb::OutboxTask {
            kind: pb::outbox_task::Kind::WorkflowTask as i32,
            namespace_id: self.state.namespace_id.clone(),
            workflow_id: self.state.workflow_id.clone(),
            run_id: self.state.run_id.clone(),
            task_queue: task_queue.clone(),
            task_queue_kind: kind as i32,
            scheduled_event_id,
            attempt,
            normal_task_queue: self.state.task_queue.clone(),
            ..Default::default()
        })?;
        let mut timer_keys = Vec::new();
        if sticky {
            let wait = chronicle_types::time::opt_duration_millis(
                self.state.sticky_schedule_to_start_timeout.as_ref(),
            );
            let wait = if wait > 0 {
                wait
            } else {
                DEFAULT_STICKY_SCHEDULE_TO_START_MS
            };
            let key = batch.put_timer(
                self.now_ms().saturating_add(wait),
                &pb::TimerTask {
                    kind: pb::timer_task::Kind::WorkflowTaskScheduleToStartTimeout as i32,
                    namespace_id: self.state.namespace_id.clone(),
                    workflow_id: self.state.workflow_id.clone(),
                    run_id: self.state.run_id.clone(),
                    event_id: scheduled_event_id,
                    attempt,
                    ..Default::default()
                },
            )?;
            timer_keys.push(key);
        }
        self.state.workflow_task = Some(pb::WorkflowTaskInfo {
            scheduled_event_id,
            started_event_id: 0,
            attempt,
            task_queue,
            task_queue_kind: kind as i32,
            scheduled_time: Some(self.now),
            start_to_close_timeout: timeout,
            outbox_task_id: outbox_task_id as i64,
            transient,
            timer_keys,
            speculative,
            ..Default::default()
        });
        Ok(())
    }

    /// The Scheduled and Started events of a transient attempt, with the IDs it holds.
    pub fn transient_events(&self, task: &pb::WorkflowTaskInfo) -> Vec<HistoryEvent> {
        let queue = TaskQueue {
            name: task.task_queue.clone(),
            kind: task.task_queue_kind,
            normal_name: if task.task_queue_kind == TaskQueueKind::Sticky as i32 {
                self.state.task_queue.clone()
            } else {
                String::new()
            },
        };
        let mut scheduled = self.make_event(
            task.scheduled_event_id,
            EventType::WorkflowTaskScheduled,
            Attributes::WorkflowTaskScheduledEventAttributes(
                h::WorkflowTaskScheduledEventAttributes {
                    task_queue: Some(queue),
                    start_to_close_timeout: task.start_to_close_timeout,
                    attempt: task.attempt,
                },
            ),
        );
        scheduled.event_time = task.scheduled_time;
        let mut events = vec![scheduled];
        if task.started_event_id > 0 {
            let mut started = self.make_event(
                task.started_event_id,
                EventType::WorkflowTaskStarted,
                Attributes::WorkflowTaskStartedEventAttributes(
                    h::WorkflowTaskStartedEventAttributes {
                        scheduled_event_id: task.scheduled_event_id,
                        identity: task.started_identity.clone(),
                        request_id: task.started_request_id.clone(),
                        history_size_bytes: self.state.history_size_bytes,
                        suggest_continue_as_new: task.suggest_continue_as_new,
                        ..Default::default()
                    },
                ),
            );
            started.event_time = task.started_time;
            events.push(started);
        }
        events
    }

    /// Writes a transient attempt's events when it completes.
    pub fn write_transient_events(&mut self, task: &pb::WorkflowTaskInfo) {
        for event in self.transient_events(task) {
            self.state.next_event_id = event.event_id + 1;
            self.state.history_size_bytes += event.encoded_len() as i64;
            self.new_events.push(event);
        }
    }

    /// Forgets the worker's sticky queue: the next workflow task goes to the normal queue with
    /// the full history.
    pub fn clear_sticky(&mut self) {
        self.state.sticky_task_queue.clear();
        self.state.sticky_schedule_to_start_timeout = None;
    }

    /// Writes the state and the new events (one history batch per command).
    pub fn persist(mut self, batch: &mut ShardBatch) {
        // Timers of a workflow task, activity or attempt that ended (or of a closed run) go
        // with it.
        if !self.loaded_timers.is_empty() {
            let current: std::collections::HashSet<&Vec<u8>> = owned_timers(&self.state).collect();
            for key in &self.loaded_timers {
                if !current.contains(key) {
                    batch.delete_timer(key);
                }
            }
        }
        self.state.state_transition_count += 1;
        crate::metric_defs::observe_persist(&self.state);
        batch.put_execution(&self.state);
        let events = std::mem::take(&mut self.new_events);
        batch.append_history(
            &self.state.namespace_id,
            &self.state.workflow_id,
            &self.state.run_id,
            events,
        );
    }
}

/// The timers a run's state holds on to: its workflow task's and its activities'.
fn owned_timers(state: &pb::WorkflowExecutionState) -> impl Iterator<Item = &Vec<u8>> {
    state
        .workflow_task
        .iter()
        .flat_map(|t| t.timer_keys.iter())
        .chain(state.activities.values().flat_map(|a| {
            a.schedule_timer_keys
                .iter()
                .chain(a.attempt_timer_keys.iter())
        }))
}

/// Activity results are buffered together with their Started event; once IDs are assigned the
/// result must point at the Started event just before it.
fn fix_started_reference(event: &mut HistoryEvent, previous_id: i64) {
    match event.attributes.as_mut() {
        Some(Attributes::ActivityTaskCompletedEventAttributes(a))
            if a.started_event_id == BUFFERED_EVENT_ID =>
        {
            a.started_event_id = previous_id
        }
        Some(Attributes::ActivityTaskFailedEventAttributes(a))
            if a.started_event_id == BUFFERED_EVENT_ID =>
        {
            a.started_event_id = previous_id
        }
        Some(Attributes::ActivityTaskTimedOutEventAttributes(a))
            if a.started_event_id == BUFFERED_EVENT_ID =>
        {
            a.started_event_id = previous_id
        }
        Some(Attributes::ActivityTaskCanceledEventAttributes(a))
            if a.started_event_id == BUFFERED_EVENT_ID =>
        {
            a.started_event_id = previous_id
        }
        _ => {}
    }
}

pub const BUFFERED_ID: i64 = BUFFERED_EVENT_ID;

/// A configured limit, or `default` where it is not set (0 or less).
fn set_or(limit: i64, default: i64) -> i64 {
    if limit > 0 { limit } else { default }
}
