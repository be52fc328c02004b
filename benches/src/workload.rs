//! The shard commands of a workflow's life, as the history service would propose them, and a
//! helper that applies a batch of them the way the Raft state machine does.
//!
//! A scripted workflow runs: start, then for each activity a workflow task that schedules it,
//! the activity's start and completion, and finally a workflow task that completes the run. The
//! event IDs every command refers to follow from that script, so the commands can be built up
//! front without reading anything back, as long as they are applied in order.

use std::collections::VecDeque;
use std::time::Duration;

use chronicle_history::apply::HistoryApplier;
use chronicle_history::notify::ShardNotifier;
use chronicle_proto::chronicle::history::v1::{
    self as cmd, command_result, respond_activity, shard_command,
};
use chronicle_proto::chronicle::persistence::v1::TaskToken;
use chronicle_proto::temporal::api::command::v1::{
    Command, CompleteWorkflowExecutionCommandAttributes, ScheduleActivityTaskCommandAttributes,
    command::Attributes as CommandAttributes,
};
use chronicle_proto::temporal::api::common::v1::{ActivityType, Payload, Payloads, WorkflowType};
use chronicle_proto::temporal::api::enums::v1::{CommandType, TaskQueueKind};
use chronicle_proto::temporal::api::taskqueue::v1::TaskQueue;
use chronicle_proto::temporal::api::workflowservice::v1::{
    RespondActivityTaskCompletedRequest, RespondWorkflowTaskCompletedRequest,
    StartWorkflowExecutionRequest,
};
use chronicle_raft::Applier;
use chronicle_storage::tables::META_APPLIED;
use chronicle_storage::{ShardBatch, ShardTables};
use prost::Message;

/// The namespace ID every bench workflow lives in (commands carry IDs, not names).
pub const NAMESPACE_ID: &str = "5e5c2a51-8f0e-4b4e-9d1a-bench0000001";
pub const TASK_QUEUE: &str = "bench-task-queue";
pub const WORKER_IDENTITY: &str = "12345@bench-host";
/// Size of the data of every input/result payload: a small JSON document, as most SDK calls carry.
pub const SMALL_PAYLOAD_BYTES: usize = 48;
/// A fixed clock (2026-01-01T00:00:00Z) so that every run writes the same bytes.
const BASE_TIME_MS: i64 = 1_767_225_600_000;

/// The kinds of command a scripted workflow goes through, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    StartWorkflow,
    RecordWorkflowTaskStarted,
    /// Completes a workflow task with one ScheduleActivityTask command.
    CompleteWorkflowTaskScheduleActivity,
    RecordActivityTaskStarted,
    RespondActivityCompleted,
    /// Completes the last workflow task with a CompleteWorkflowExecution command.
    CompleteWorkflowTaskCompleteWorkflow,
}

impl Step {
    pub fn label(self) -> &'static str {
        match self {
            Step::StartWorkflow => "start_workflow",
            Step::RecordWorkflowTaskStarted => "record_workflow_task_started",
            Step::CompleteWorkflowTaskScheduleActivity => {
                "complete_workflow_task/schedule_activity"
            }
            Step::RecordActivityTaskStarted => "record_activity_task_started",
            Step::RespondActivityCompleted => "respond_activity_completed",
            Step::CompleteWorkflowTaskCompleteWorkflow => {
                "complete_workflow_task/complete_workflow"
            }
        }
    }
}

/// A JSON payload of `data_bytes` bytes, with the metadata SDKs attach.
pub fn json_payload(data_bytes: usize) -> Payloads {
    let mut data = Vec::with_capacity(data_bytes.max(2));
    data.push(b'"');
    data.extend((0..data_bytes.saturating_sub(2)).map(|i| b'a' + (i % 26) as u8));
    data.push(b'"');
    Payloads {
        payloads: vec![Payload {
            metadata: [("encoding".to_string(), b"json/plain".to_vec())].into(),
            data,
            ..Default::default()
        }],
    }
}

fn duration(d: Duration) -> Option<chronicle_proto::wkt::Duration> {
    Some(chronicle_types::time::duration_from_millis(
        d.as_millis() as i64
    ))
}

fn task_queue() -> Option<TaskQueue> {
    Some(TaskQueue {
        name: TASK_QUEUE.to_string(),
        kind: TaskQueueKind::Normal as i32,
        normal_name: String::new(),
    })
}

/// One workflow run and the commands that take it from start to completion.
#[derive(Clone, Debug)]
pub struct WorkflowScript {
    pub workflow_id: String,
    pub run_id: String,
    pub activities: usize,
}

impl WorkflowScript {
    /// Workflow number `n`; its run ID is shaped like the UUIDs the leader picks.
    pub fn new(n: u64, activities: usize) -> Self {
        Self {
            workflow_id: format!("bench-order-{n:010}"),
            run_id: format!("0b9f3c2e-7d41-4a6b-8e15-{n:012x}"),
            activities,
        }
    }

    /// Every command of the run, in the order they must be applied.
    pub fn commands(&self) -> Vec<(Step, cmd::ShardCommand)> {
        let mut out = Vec::with_capacity(3 + 4 * self.activities);
        let mut push = |step: Step, kind: shard_command::Kind| {
            // Each command a few milliseconds after the previous one, as the leader's clock says.
            let now = chronicle_types::time::from_millis(BASE_TIME_MS + 5 * out.len() as i64);
            out.push((
                step,
                cmd::ShardCommand {
                    now: Some(now),
                    kind: Some(kind),
                    ..Default::default()
                },
            ));
        };
        push(Step::StartWorkflow, self.start());
        // Event IDs: 1 WorkflowExecutionStarted, 2 WorkflowTaskScheduled; each activity round
        // then adds WorkflowTaskStarted, WorkflowTaskCompleted, ActivityTaskScheduled,
        // ActivityTaskStarted, ActivityTaskCompleted and the next WorkflowTaskScheduled.
        let mut workflow_task_scheduled = 2;
        for i in 0..self.activities {
            let started = workflow_task_scheduled + 1;
            push(
                Step::RecordWorkflowTaskStarted,
                self.workflow_task_started(workflow_task_scheduled),
            );
            push(
                Step::CompleteWorkflowTaskScheduleActivity,
                self.complete_workflow_task(
                    workflow_task_scheduled,
                    started,
                    self.schedule_activity(i),
                ),
            );
            let activity_scheduled = started + 2;
            push(
                Step::RecordActivityTaskStarted,
                self.activity_started(activity_scheduled),
            );
            push(
                Step::RespondActivityCompleted,
                self.activity_completed(activity_scheduled, i),
            );
            workflow_task_scheduled = activity_scheduled + 3;
        }
        push(
            Step::RecordWorkflowTaskStarted,
            self.workflow_task_started(workflow_task_scheduled),
        );
        push(
            Step::CompleteWorkflowTaskCompleteWorkflow,
            self.complete_workflow_task(
                workflow_task_scheduled,
                workflow_task_scheduled + 1,
                Command {
                    command_type: CommandType::CompleteWorkflowExecution as i32,
                    attributes: Some(
                        CommandAttributes::CompleteWorkflowExecutionCommandAttributes(
                            CompleteWorkflowExecutionCommandAttributes {
                                result: Some(json_payload(SMALL_PAYLOAD_BYTES)),
                            },
                        ),
                    ),
                    ..Default::default()
                },
            ),
        );
        out
    }

    /// Number of events the finished run's history holds.
    pub fn event_count(&self) -> i64 {
        2 + 6 * self.activities as i64 + 3
    }

    fn start(&self) -> shard_command::Kind {
        shard_command::Kind::StartWorkflow(cmd::StartWorkflow {
            scheduled_by: None,
            eager_workflow_start: false,
            namespace_id: NAMESPACE_ID.to_string(),
            run_id: self.run_id.clone(),
            request: Some(StartWorkflowExecutionRequest {
                namespace: "default".to_string(),
                workflow_id: self.workflow_id.clone(),
                workflow_type: Some(WorkflowType {
                    name: "ProcessOrder".to_string(),
                }),
                task_queue: task_queue(),
                input: Some(json_payload(SMALL_PAYLOAD_BYTES)),
                identity: WORKER_IDENTITY.to_string(),
                request_id: format!("start-{}", self.workflow_id),
                ..Default::default()
            }),
        })
    }

    fn workflow_task_started(&self, scheduled_event_id: i64) -> shard_command::Kind {
        shard_command::Kind::RecordWorkflowTaskStarted(cmd::RecordWorkflowTaskStarted {
            namespace_id: NAMESPACE_ID.to_string(),
            workflow_id: self.workflow_id.clone(),
            run_id: self.run_id.clone(),
            scheduled_event_id,
            request_id: format!("poll-wft-{}-{scheduled_event_id}", self.workflow_id),
            identity: WORKER_IDENTITY.to_string(),
            outbox_id: 0,
            ..Default::default()
        })
    }

    fn token(&self, scheduled_event_id: i64, started_event_id: i64) -> TaskToken {
        TaskToken {
            namespace_id: NAMESPACE_ID.to_string(),
            workflow_id: self.workflow_id.clone(),
            run_id: self.run_id.clone(),
            scheduled_event_id,
            attempt: 1,
            started_event_id,
            ..Default::default()
        }
    }

    fn complete_workflow_task(
        &self,
        scheduled_event_id: i64,
        started_event_id: i64,
        command: Command,
    ) -> shard_command::Kind {
        shard_command::Kind::CompleteWorkflowTask(cmd::CompleteWorkflowTask {
            token: Some(self.token(scheduled_event_id, started_event_id)),
            request: Some(RespondWorkflowTaskCompletedRequest {
                commands: vec![command],
                identity: WORKER_IDENTITY.to_string(),
                namespace: "default".to_string(),
                ..Default::default()
            }),
            new_run_id: String::new(),
            eager_activities: false,
            max_history_events: 0,
            max_history_bytes: 0,
            nexus_endpoints: Vec::new(),
            nexus_request_ids: Vec::new(),
        })
    }

    fn schedule_activity(&self, i: usize) -> Command {
        Command {
            command_type: CommandType::ScheduleActivityTask as i32,
            attributes: Some(CommandAttributes::ScheduleActivityTaskCommandAttributes(
                ScheduleActivityTaskCommandAttributes {
                    activity_id: format!("{}", i + 1),
                    activity_type: Some(ActivityType {
                        name: "ChargeCard".to_string(),
                    }),
                    task_queue: task_queue(),
                    input: Some(json_payload(SMALL_PAYLOAD_BYTES)),
                    start_to_close_timeout: duration(Duration::from_secs(30)),
                    ..Default::default()
                },
            )),
            ..Default::default()
        }
    }

    fn activity_started(&self, scheduled_event_id: i64) -> shard_command::Kind {
        shard_command::Kind::RecordActivityTaskStarted(cmd::RecordActivityTaskStarted {
            namespace_id: NAMESPACE_ID.to_string(),
            workflow_id: self.workflow_id.clone(),
            run_id: self.run_id.clone(),
            scheduled_event_id,
            attempt: 1,
            request_id: format!("poll-at-{}-{scheduled_event_id}", self.workflow_id),
            identity: WORKER_IDENTITY.to_string(),
            outbox_id: 0,
            worker_control_task_queue: String::new(),
        })
    }

    fn activity_completed(&self, scheduled_event_id: i64, i: usize) -> shard_command::Kind {
        shard_command::Kind::RespondActivity(cmd::RespondActivity {
            token: Some(TaskToken {
                is_activity: true,
                activity_id: format!("{}", i + 1),
                ..self.token(scheduled_event_id, 0)
            }),
            outcome: Some(respond_activity::Outcome::Completed(
                RespondActivityTaskCompletedRequest {
                    result: Some(json_payload(SMALL_PAYLOAD_BYTES)),
                    identity: WORKER_IDENTITY.to_string(),
                    namespace: "default".to_string(),
                    ..Default::default()
                },
            )),
        })
    }
}

/// An endless stream of encoded commands from many workflows in flight at once: `window`
/// workflows advance one step each in turn, so a batch mixes runs at different points of their
/// life, as a busy shard's Raft batches do.
pub struct CommandStream {
    next_workflow: u64,
    window: usize,
    activities: usize,
    pending: VecDeque<Vec<u8>>,
}

impl CommandStream {
    /// Workflows are numbered from `first_workflow`; give streams over one database disjoint
    /// ranges.
    pub fn new(first_workflow: u64, window: usize, activities: usize) -> Self {
        Self {
            next_workflow: first_workflow,
            window: window.max(1),
            activities,
            pending: VecDeque::new(),
        }
    }

    pub fn take(&mut self, n: usize) -> Vec<Vec<u8>> {
        (0..n).map(|_| self.next_command()).collect()
    }

    pub fn next_command(&mut self) -> Vec<u8> {
        if self.pending.is_empty() {
            self.refill();
        }
        self.pending.pop_front().expect("refilled")
    }

    fn refill(&mut self) {
        let scripts: Vec<Vec<Vec<u8>>> = (0..self.window)
            .map(|_| {
                let script = WorkflowScript::new(self.next_workflow, self.activities);
                self.next_workflow += 1;
                script
                    .commands()
                    .into_iter()
                    .map(|(_, c)| c.encode_to_vec())
                    .collect()
            })
            .collect();
        let steps = scripts[0].len();
        for step in 0..steps {
            for script in &scripts {
                self.pending.push_back(script[step].clone());
            }
        }
    }
}

pub fn history_applier() -> HistoryApplier {
    HistoryApplier {
        notifier: ShardNotifier::default(),
        namespace_names: None,
    }
}

/// Applies `commands` the way `ShardStateMachine::apply` does with one batch of log entries:
/// every command into one `ShardBatch`, then the applied index, then one RocksDB write.
/// Returns the encoded `CommandResult` of each command.
pub fn apply_batch(
    applier: &HistoryApplier,
    tables: &ShardTables,
    first_log_index: u64,
    commands: &[Vec<u8>],
) -> Vec<Vec<u8>> {
    let mut batch = ShardBatch::new(tables.clone());
    let results = apply_into(applier, &mut batch, first_log_index, commands);
    commit(batch, first_log_index + commands.len() as u64 - 1);
    results
}

/// The apply half of [`apply_batch`]: the applier's work, no RocksDB write.
pub fn apply_into(
    applier: &HistoryApplier,
    batch: &mut ShardBatch,
    first_log_index: u64,
    commands: &[Vec<u8>],
) -> Vec<Vec<u8>> {
    commands
        .iter()
        .enumerate()
        .map(|(i, command)| {
            applier
                .apply(batch, first_log_index + i as u64, command)
                .expect("storage failed while applying")
        })
        .collect()
}

/// The commit half of [`apply_batch`]: the applied index, then the batch's one RocksDB write.
pub fn commit(mut batch: ShardBatch, last_log_index: u64) {
    // The state machine stores its applied log ID and membership here (a few dozen bytes of
    // postcard); the index alone stands in for it, the write costs the same.
    batch.put_meta(META_APPLIED, last_log_index.to_be_bytes().to_vec());
    batch.commit().expect("commit the apply batch");
}

/// Fails on a command the engine rejected or found stale: a bench must time the normal path.
pub fn check_result(encoded: &[u8]) -> Result<(), String> {
    let result = cmd::CommandResult::decode(encoded).map_err(|e| e.to_string())?;
    match result.result {
        None => Err("empty command result".to_string()),
        Some(command_result::Result::Error(e)) => Err(format!("rejected: {}", e.message)),
        Some(command_result::Result::WorkflowTaskStarted(r)) if r.stale => {
            Err("workflow task was stale".to_string())
        }
        Some(command_result::Result::ActivityTaskStarted(r)) if r.stale => {
            Err("activity task was stale".to_string())
        }
        Some(_) => Ok(()),
    }
}

/// Panics unless every result is a success.
pub fn assert_all_ok(results: &[Vec<u8>]) {
    for (i, r) in results.iter().enumerate() {
        if let Err(e) = check_result(r) {
            panic!("command {i} of the batch failed: {e}");
        }
    }
}
