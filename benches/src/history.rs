//! Histories for the codec and read benches: a real one produced by the engine, and long ones
//! written directly through `ShardBatch` in the layout the engine uses (one `HistoryBatch` per
//! applied command, keyed by its first event ID).

use chronicle_proto::chronicle::persistence::v1 as pb;
use chronicle_proto::temporal::api::common::v1::{ActivityType, RetryPolicy, WorkflowType};
use chronicle_proto::temporal::api::enums::v1::{EventType, WorkflowExecutionStatus};
use chronicle_proto::temporal::api::history::v1 as h;
use chronicle_proto::temporal::api::history::v1::HistoryEvent;
use chronicle_proto::temporal::api::history::v1::history_event::Attributes;
use chronicle_proto::temporal::api::taskqueue::v1::TaskQueue;
use chronicle_storage::{ShardBatch, ShardTables};
use chronicle_types::time::{duration_from_millis, from_millis};
use prost::Message;

use crate::scratch::ScratchDb;
use crate::workload::{
    self, NAMESPACE_ID, SMALL_PAYLOAD_BYTES, TASK_QUEUE, WORKER_IDENTITY, WorkflowScript,
};

/// The page size `GetWorkflowExecutionHistory` uses when the client names none (the engine's
/// `read::MAX_PAGE_EVENTS`, which is private to chronicle-history).
pub const SERVER_PAGE_EVENTS: usize = 1000;

/// The full history of a workflow that ran three activities one after the other (23 events),
/// produced by the real applier and read back from RocksDB.
pub fn three_activity_history() -> Vec<HistoryEvent> {
    let scratch = ScratchDb::open(false);
    let tables = ShardTables::new(scratch.db.clone(), 0);
    let applier = workload::history_applier();
    let script = WorkflowScript::new(1, 3);
    let commands: Vec<Vec<u8>> = script
        .commands()
        .into_iter()
        .map(|(_, c)| c.encode_to_vec())
        .collect();
    // One command per apply batch, as an idle shard would apply them.
    for (i, command) in commands.iter().enumerate() {
        let results = workload::apply_batch(
            &applier,
            &tables,
            i as u64 + 1,
            std::slice::from_ref(command),
        );
        workload::assert_all_ok(&results);
    }
    let events = tables
        .history(
            NAMESPACE_ID,
            &script.workflow_id,
            &script.run_id,
            1,
            usize::MAX,
        )
        .expect("read the history back");
    assert_eq!(events.len() as i64, script.event_count());
    events
}

fn queue() -> Option<TaskQueue> {
    Some(TaskQueue {
        name: TASK_QUEUE.to_string(),
        kind: 1,
        normal_name: String::new(),
    })
}

/// `count` events alternating ActivityTaskScheduled (input) and ActivityTaskCompleted (result),
/// each carrying one payload of `payload_bytes`: a batch dominated by payload bytes.
pub fn large_payload_events(count: usize, payload_bytes: usize) -> Vec<HistoryEvent> {
    (0..count as i64)
        .map(|i| {
            let event_id = i + 1;
            let payload = Some(workload::json_payload(payload_bytes));
            let (event_type, attributes) = if i % 2 == 0 {
                (
                    EventType::ActivityTaskScheduled,
                    Attributes::ActivityTaskScheduledEventAttributes(
                        h::ActivityTaskScheduledEventAttributes {
                            activity_id: format!("{event_id}"),
                            activity_type: Some(ActivityType {
                                name: "Transform".to_string(),
                            }),
                            task_queue: queue(),
                            input: payload,
                            start_to_close_timeout: Some(duration_from_millis(30_000)),
                            workflow_task_completed_event_id: 4,
                            ..Default::default()
                        },
                    ),
                )
            } else {
                (
                    EventType::ActivityTaskCompleted,
                    Attributes::ActivityTaskCompletedEventAttributes(
                        h::ActivityTaskCompletedEventAttributes {
                            result: payload,
                            scheduled_event_id: event_id - 1,
                            started_event_id: event_id - 1,
                            identity: WORKER_IDENTITY.to_string(),
                            ..Default::default()
                        },
                    ),
                )
            };
            event(event_id, event_type, attributes)
        })
        .collect()
}

fn event(event_id: i64, event_type: EventType, attributes: Attributes) -> HistoryEvent {
    HistoryEvent {
        event_id,
        event_time: Some(from_millis(1_767_225_600_000 + event_id)),
        event_type: event_type as i32,
        attributes: Some(attributes),
        ..Default::default()
    }
}

/// What the engine appends for each command of a run that calls activities one after the other:
/// the start, then per activity a workflow task completion that schedules it, the activity's
/// Started + Completed (written together when it closes) with the next workflow task, and that
/// task's start.
const START_GROUPS: &[&[EventType]] = &[
    &[
        EventType::WorkflowExecutionStarted,
        EventType::WorkflowTaskScheduled,
    ],
    &[EventType::WorkflowTaskStarted],
];
const ACTIVITY_ROUND_GROUPS: &[&[EventType]] = &[
    &[
        EventType::WorkflowTaskCompleted,
        EventType::ActivityTaskScheduled,
    ],
    &[
        EventType::ActivityTaskStarted,
        EventType::ActivityTaskCompleted,
        EventType::WorkflowTaskScheduled,
    ],
    &[EventType::WorkflowTaskStarted],
];

/// A history of exactly `total_events` events, grouped as the engine writes them: each group is
/// what one command appended (see [`ACTIVITY_ROUND_GROUPS`]); the last group may be cut short.
pub fn engine_layout_batches(total_events: usize) -> Vec<Vec<HistoryEvent>> {
    let shapes = START_GROUPS
        .iter()
        .chain(ACTIVITY_ROUND_GROUPS.iter().cycle());
    let mut groups = Vec::new();
    let mut next_id = 1i64;
    for shape in shapes {
        let remaining = total_events + 1 - next_id as usize;
        if remaining == 0 {
            break;
        }
        let group: Vec<HistoryEvent> = shape
            .iter()
            .take(remaining)
            .map(|&event_type| {
                let id = next_id;
                next_id += 1;
                event(id, event_type, attributes_like_engine(event_type, id))
            })
            .collect();
        groups.push(group);
    }
    groups
}

/// Attributes of the size and shape the engine writes for `event_type` as event `id` of a run
/// following [`ACTIVITY_ROUND_GROUPS`] (the IDs they refer to are the neighbours it implies).
fn attributes_like_engine(event_type: EventType, id: i64) -> Attributes {
    let payload = || Some(workload::json_payload(SMALL_PAYLOAD_BYTES));
    match event_type {
        EventType::WorkflowExecutionStarted => Attributes::WorkflowExecutionStartedEventAttributes(
            h::WorkflowExecutionStartedEventAttributes {
                workflow_type: Some(WorkflowType {
                    name: "ProcessOrder".to_string(),
                }),
                task_queue: queue(),
                input: payload(),
                workflow_task_timeout: Some(duration_from_millis(10_000)),
                original_execution_run_id: "0b9f3c2e-7d41-4a6b-8e15-000000000001".to_string(),
                first_execution_run_id: "0b9f3c2e-7d41-4a6b-8e15-000000000001".to_string(),
                identity: WORKER_IDENTITY.to_string(),
                attempt: 1,
                workflow_id: "bench-long-history".to_string(),
                ..Default::default()
            },
        ),
        EventType::WorkflowTaskScheduled => Attributes::WorkflowTaskScheduledEventAttributes(
            h::WorkflowTaskScheduledEventAttributes {
                task_queue: queue(),
                start_to_close_timeout: Some(duration_from_millis(10_000)),
                attempt: 1,
            },
        ),
        EventType::WorkflowTaskStarted => {
            Attributes::WorkflowTaskStartedEventAttributes(h::WorkflowTaskStartedEventAttributes {
                scheduled_event_id: id - 1,
                identity: WORKER_IDENTITY.to_string(),
                request_id: format!("poll-wft-{id}"),
                history_size_bytes: id * 180,
                ..Default::default()
            })
        }
        EventType::WorkflowTaskCompleted => Attributes::WorkflowTaskCompletedEventAttributes(
            h::WorkflowTaskCompletedEventAttributes {
                scheduled_event_id: id - 2,
                started_event_id: id - 1,
                identity: WORKER_IDENTITY.to_string(),
                ..Default::default()
            },
        ),
        EventType::ActivityTaskScheduled => Attributes::ActivityTaskScheduledEventAttributes(
            h::ActivityTaskScheduledEventAttributes {
                activity_id: format!("{id}"),
                activity_type: Some(ActivityType {
                    name: "ChargeCard".to_string(),
                }),
                task_queue: queue(),
                input: payload(),
                start_to_close_timeout: Some(duration_from_millis(30_000)),
                workflow_task_completed_event_id: id - 1,
                retry_policy: Some(RetryPolicy {
                    initial_interval: Some(duration_from_millis(1_000)),
                    backoff_coefficient: 2.0,
                    maximum_interval: Some(duration_from_millis(100_000)),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ),
        EventType::ActivityTaskStarted => {
            Attributes::ActivityTaskStartedEventAttributes(h::ActivityTaskStartedEventAttributes {
                scheduled_event_id: id - 1,
                identity: WORKER_IDENTITY.to_string(),
                request_id: format!("poll-at-{id}"),
                attempt: 1,
                ..Default::default()
            })
        }
        EventType::ActivityTaskCompleted => Attributes::ActivityTaskCompletedEventAttributes(
            h::ActivityTaskCompletedEventAttributes {
                result: payload(),
                scheduled_event_id: id - 2,
                started_event_id: id - 1,
                identity: WORKER_IDENTITY.to_string(),
                ..Default::default()
            },
        ),
        other => unreachable!("no {other:?} in the scripted history"),
    }
}

/// A stored run: what a history read needs to find it.
pub struct StoredRun {
    pub workflow_id: String,
    pub run_id: String,
    pub events: usize,
    /// Sum of the encoded sizes of its events (what a reader decodes).
    pub event_bytes: u64,
}

/// Writes a run of `total_events` events: its history groups and its execution state, in
/// `ShardBatch` commits of a few hundred groups, then flushes so the reads come from SST files as
/// they would for a run that is not brand new.
pub fn write_run(tables: &ShardTables, workflow_id: &str, total_events: usize) -> StoredRun {
    let run_id = format!("0b9f3c2e-7d41-4a6b-8e15-{total_events:012x}");
    let groups = engine_layout_batches(total_events);
    let event_bytes = groups
        .iter()
        .flatten()
        .map(|e| e.encoded_len() as u64)
        .sum();
    for chunk in groups.chunks(256) {
        let mut batch = ShardBatch::new(tables.clone());
        for events in chunk {
            batch.append_history(NAMESPACE_ID, workflow_id, &run_id, events.clone());
        }
        batch.commit().expect("write history");
    }
    let mut batch = ShardBatch::new(tables.clone());
    batch.put_execution(&pb::WorkflowExecutionState {
        namespace_id: NAMESPACE_ID.to_string(),
        workflow_id: workflow_id.to_string(),
        run_id: run_id.clone(),
        task_queue: TASK_QUEUE.to_string(),
        status: WorkflowExecutionStatus::Running as i32,
        next_event_id: total_events as i64 + 1,
        ..Default::default()
    });
    batch.commit().expect("write execution state");
    tables.db().flush().expect("flush");
    StoredRun {
        workflow_id: workflow_id.to_string(),
        run_id,
        events: total_events,
        event_bytes,
    }
}

/// Reads a whole run page by page as `GetWorkflowExecutionHistory` does: per page, the run's
/// state (for its last event ID), then up to `page_size` events from where the last page ended.
/// Returns the number of events read.
pub fn read_run_paged(tables: &ShardTables, run: &StoredRun, page_size: usize) -> usize {
    let mut from = 1i64;
    let mut read = 0usize;
    loop {
        let state = tables
            .execution(NAMESPACE_ID, &run.workflow_id, &run.run_id)
            .expect("read execution")
            .expect("run exists");
        let last = state.next_event_id - 1;
        if from > last {
            break;
        }
        let wanted = ((last - from + 1) as usize).min(page_size);
        let page = tables
            .history(NAMESPACE_ID, &run.workflow_id, &run.run_id, from, wanted)
            .expect("read history page");
        let Some(last_read) = page.last() else { break };
        from = last_read.event_id + 1;
        read += page.len();
        std::hint::black_box(page);
    }
    read
}
