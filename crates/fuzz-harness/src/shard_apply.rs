//! Target `shard_apply`: arbitrary `ShardCommand`s applied to a shard with state, on two real
//! RocksDB replicas in temp directories. Each input gets a fresh shard (a new shard ID) on both,
//! seeded with a few workflows (one with a workflow task running, one with an activity and a
//! timer pending), then a sequence of Raft entries built from the input: commands aimed at the
//! seeded runs with fuzzed event IDs, attempts, tokens, times, durations and Temporal commands,
//! timers and outbox rows read back from the shard, batched entries, and raw bytes.
//!
//! Invariants (what a replicated state machine needs): applying never panics, never fails with
//! a storage error on a healthy disk, and the two replicas answer every entry with the same bytes
//! and end with the same state digest (the one `cluster describe --digests` compares).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use arbitrary::{Result as ArbResult, Unstructured};
use chronicle_history::apply::HistoryApplier;
use chronicle_proto::chronicle::history::v1::{self as cmd, shard_command::Kind};
use chronicle_proto::chronicle::persistence::v1 as pb;
use chronicle_proto::temporal::api::command::v1 as command;
use chronicle_proto::temporal::api::command::v1::command::Attributes;
use chronicle_proto::temporal::api::common::v1::{
    ActivityType, Payload, Payloads, RetryPolicy, SearchAttributes, WorkflowExecution, WorkflowType,
};
use chronicle_proto::temporal::api::failure::v1::Failure;
use chronicle_proto::temporal::api::taskqueue::v1::TaskQueue;
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use chronicle_proto::wkt::{Duration, Timestamp};
use chronicle_raft::Applier;
use chronicle_storage::{Db, DbOptions, ShardBatch, ShardTables};
use prost::Message;

const NS: &str = "ns-fuzz";
const WORKFLOWS: u8 = 4;
const MAX_STEPS: usize = 24;

/// Two replicas: the same log is applied to both, shard by shard.
pub struct Replicas {
    _dirs: [tempfile::TempDir; 2],
    dbs: [Db; 2],
    next_shard: u32,
}

impl Replicas {
    pub fn new() -> Self {
        let dirs = [
            tempfile::tempdir().expect("temp dir"),
            tempfile::tempdir().expect("temp dir"),
        ];
        let dbs = [
            Db::open(dirs[0].path(), DbOptions::default()).expect("db"),
            Db::open(dirs[1].path(), DbOptions::default()).expect("db"),
        ];
        Self {
            _dirs: dirs,
            dbs,
            next_shard: 0,
        }
    }
}

impl Default for Replicas {
    fn default() -> Self {
        Self::new()
    }
}

/// One shard of both replicas, and the log applied to it so far.
struct Shard<'a> {
    dbs: &'a [Db; 2],
    id: u32,
    index: u64,
    clock_ms: i64,
}

impl Shard<'_> {
    /// Applies one entry to both replicas and checks they answer alike.
    fn apply(&mut self, entry: &[u8]) {
        self.index += 1;
        let applier = HistoryApplier {
            notifier: Default::default(),
            namespace_names: None,
        };
        let mut answers = Vec::with_capacity(2);
        for db in self.dbs {
            let mut batch = ShardBatch::new(ShardTables::new(db.clone(), self.id));
            let answer = applier
                .apply(&mut batch, self.index, entry)
                .map_err(|e| e.to_string());
            if answer.is_ok() {
                batch.commit().expect("commit");
            }
            answers.push(answer);
        }
        assert_eq!(answers[0], answers[1], "replicas answer an entry alike");
        if let Err(e) = &answers[0] {
            panic!("a healthy disk gave a storage error in apply: {e}");
        }
    }

    fn tables(&self) -> ShardTables {
        ShardTables::new(self.dbs[0].clone(), self.id)
    }

    fn state(&self, workflow_id: &str) -> Option<pb::WorkflowExecutionState> {
        let tables = self.tables();
        let current = tables.current(NS, workflow_id).ok()??;
        tables
            .execution(NS, workflow_id, &current.run_id)
            .ok()
            .flatten()
    }

    fn stamp(&mut self, kind: Kind) -> cmd::ShardCommand {
        self.clock_ms += 10;
        cmd::ShardCommand {
            now: Some(chronicle_types::time::from_millis(self.clock_ms)),
            kind: Some(kind),
            batch: Vec::new(),
            retention: None,
        }
    }

    fn digests_agree(&self) {
        let a = chronicle_storage::digest::shard_digest(&self.dbs[0], self.id).expect("digest");
        let b = chronicle_storage::digest::shard_digest(&self.dbs[1], self.id).expect("digest");
        assert_eq!(
            a.differing_families(&b),
            Vec::<&str>::new(),
            "replicas diverged"
        );
    }
}

fn start_request(workflow_id: &str) -> ws::StartWorkflowExecutionRequest {
    ws::StartWorkflowExecutionRequest {
        namespace: "fuzz".into(),
        workflow_id: workflow_id.into(),
        workflow_type: Some(WorkflowType {
            name: "Fuzzed".into(),
        }),
        task_queue: Some(TaskQueue {
            name: "tq".into(),
            ..Default::default()
        }),
        request_id: format!("start-{workflow_id}"),
        workflow_run_timeout: Some(Duration {
            seconds: 3600,
            nanos: 0,
        }),
        ..Default::default()
    }
}

fn token_of(state: &pb::WorkflowExecutionState) -> Option<pb::TaskToken> {
    let task = state.workflow_task.as_ref()?;
    Some(pb::TaskToken {
        namespace_id: NS.into(),
        workflow_id: state.workflow_id.clone(),
        run_id: state.run_id.clone(),
        scheduled_event_id: task.scheduled_event_id,
        attempt: task.attempt,
        started_event_id: task.started_event_id,
        started_request_id: task.started_request_id.clone(),
        ..Default::default()
    })
}

/// Seeds the shard: `wf-0` waiting for its first workflow task, `wf-1` with its task started,
/// `wf-2` with an activity and a timer pending after a completed task, `wf-3` not started.
fn seed(shard: &mut Shard) {
    for i in 0..3 {
        let wf = format!("wf-{i}");
        let start = shard.stamp(Kind::StartWorkflow(cmd::StartWorkflow {
            namespace_id: NS.into(),
            request: Some(start_request(&wf)),
            run_id: format!("run-{i}"),
            scheduled_by: None,
            eager_workflow_start: false,
        }));
        shard.apply(&start.encode_to_vec());
    }
    for wf in ["wf-1", "wf-2"] {
        let scheduled = shard
            .state(wf)
            .and_then(|s| s.workflow_task)
            .map(|t| t.scheduled_event_id)
            .unwrap_or(2);
        let started = shard.stamp(Kind::RecordWorkflowTaskStarted(
            cmd::RecordWorkflowTaskStarted {
                namespace_id: NS.into(),
                workflow_id: wf.into(),
                run_id: shard.state(wf).map(|s| s.run_id).unwrap_or_default(),
                scheduled_event_id: scheduled,
                request_id: format!("poll-{wf}"),
                identity: "seed".into(),
                ..Default::default()
            },
        ));
        shard.apply(&started.encode_to_vec());
    }
    let Some(token) = shard.state("wf-2").as_ref().and_then(token_of) else {
        return;
    };
    let complete = shard.stamp(Kind::CompleteWorkflowTask(cmd::CompleteWorkflowTask {
        token: Some(token),
        request: Some(ws::RespondWorkflowTaskCompletedRequest {
            namespace: "fuzz".into(),
            identity: "seed".into(),
            commands: vec![
                command::Command {
                    attributes: Some(Attributes::ScheduleActivityTaskCommandAttributes(
                        command::ScheduleActivityTaskCommandAttributes {
                            activity_id: "act".into(),
                            activity_type: Some(ActivityType { name: "A".into() }),
                            task_queue: Some(TaskQueue {
                                name: "tq".into(),
                                ..Default::default()
                            }),
                            start_to_close_timeout: Some(Duration {
                                seconds: 60,
                                nanos: 0,
                            }),
                            ..Default::default()
                        },
                    )),
                    ..Default::default()
                },
                command::Command {
                    attributes: Some(Attributes::StartTimerCommandAttributes(
                        command::StartTimerCommandAttributes {
                            timer_id: "t".into(),
                            start_to_fire_timeout: Some(Duration {
                                seconds: 30,
                                nanos: 0,
                            }),
                        },
                    )),
                    ..Default::default()
                },
            ],
            ..Default::default()
        }),
        new_run_id: "seed-next".into(),
        eager_activities: false,
        nexus_endpoints: Vec::new(),
        nexus_request_ids: Vec::new(),
    }));
    shard.apply(&complete.encode_to_vec());
}

// Fuzzed values: mostly near what the shard holds, sometimes anything.

fn int(u: &mut Unstructured, real: i64) -> ArbResult<i64> {
    Ok(match u.int_in_range(0..=7u8)? {
        0..=3 => real,
        4 => real.wrapping_add(i64::from(u.int_in_range(-3i8..=3)?)),
        5 => *u.choose(&[0, -1, 1, i64::MAX, i64::MIN, i64::from(i32::MAX)])?,
        _ => u.arbitrary()?,
    })
}

fn small(u: &mut Unstructured, real: i32) -> ArbResult<i32> {
    Ok(match u.int_in_range(0..=5u8)? {
        0..=3 => real,
        4 => *u.choose(&[0, -1, 2, i32::MAX, i32::MIN])?,
        _ => u.arbitrary()?,
    })
}

fn text(u: &mut Unstructured, choices: &[&str]) -> ArbResult<String> {
    Ok(if u.ratio(1, 6)? {
        u.arbitrary::<String>()?
    } else {
        u.choose(choices)?.to_string()
    })
}

fn workflow_id(u: &mut Unstructured) -> ArbResult<String> {
    Ok(format!("wf-{}", u.int_in_range(0..=WORKFLOWS - 1)?))
}

fn duration(u: &mut Unstructured) -> ArbResult<Option<Duration>> {
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

fn payloads(u: &mut Unstructured) -> ArbResult<Option<Payloads>> {
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

fn retry_policy(u: &mut Unstructured) -> ArbResult<Option<RetryPolicy>> {
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

fn failure(u: &mut Unstructured) -> ArbResult<Option<Failure>> {
    Ok(if u.ratio(1, 2)? {
        None
    } else {
        Some(Failure {
            message: text(u, &["boom"])?,
            ..Default::default()
        })
    })
}

fn search_attributes(u: &mut Unstructured) -> ArbResult<Option<SearchAttributes>> {
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

fn task_queue(u: &mut Unstructured) -> ArbResult<Option<TaskQueue>> {
    Ok(Some(TaskQueue {
        name: text(u, &["tq", "other", ""])?,
        kind: small(u, 0)?,
        normal_name: String::new(),
    }))
}

/// One Temporal command of a workflow task completion.
// The deprecated `namespace` fields are still what old SDKs send.
#[allow(deprecated)]
fn workflow_command(
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
fn token(
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
fn standalone_activity_command(u: &mut Unstructured) -> ArbResult<Kind> {
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

/// One command, built from the input and what the shard holds now.
fn shard_command(u: &mut Unstructured, shard: &mut Shard) -> ArbResult<cmd::ShardCommand> {
    let wf = workflow_id(u)?;
    let state = shard.state(&wf);
    let run_id = state.as_ref().map(|s| s.run_id.clone()).unwrap_or_default();
    let scheduled = state
        .as_ref()
        .and_then(|s| s.workflow_task.as_ref())
        .map_or(2, |t| t.scheduled_event_id);
    let kind = match u.int_in_range(0..=19u8)? {
        0 => Kind::StartWorkflow(cmd::StartWorkflow {
            namespace_id: NS.into(),
            request: Some(ws::StartWorkflowExecutionRequest {
                request_id: text(u, &["start-wf-0", "again", ""])?,
                workflow_execution_timeout: duration(u)?,
                workflow_run_timeout: duration(u)?,
                workflow_task_timeout: duration(u)?,
                workflow_id_reuse_policy: small(u, 0)?,
                workflow_id_conflict_policy: small(u, 0)?,
                retry_policy: retry_policy(u)?,
                cron_schedule: text(u, &["", "@every 1m", "* * * * * * *"])?,
                workflow_start_delay: duration(u)?,
                search_attributes: search_attributes(u)?,
                ..start_request(&wf)
            }),
            run_id: text(u, &["run-new", "run-0", ""])?,
            scheduled_by: None,
            eager_workflow_start: u.arbitrary()?,
        }),
        1 => Kind::RecordWorkflowTaskStarted(cmd::RecordWorkflowTaskStarted {
            namespace_id: NS.into(),
            workflow_id: wf,
            run_id,
            scheduled_event_id: int(u, scheduled)?,
            request_id: text(u, &["poll-a", "poll-b"])?,
            identity: "fuzz".into(),
            outbox_id: int(u, 0)?,
            suggest_continue_as_new_events: int(u, 0)?,
            suggest_continue_as_new_bytes: int(u, 0)?,
        }),
        2 => {
            let commands = match &state {
                Some(s) => {
                    let mut commands = Vec::new();
                    for _ in 0..u.int_in_range(0..=4)? {
                        commands.push(workflow_command(u, s)?);
                    }
                    commands
                }
                None => Vec::new(),
            };
            Kind::CompleteWorkflowTask(cmd::CompleteWorkflowTask {
                token: Some(token(u, state.as_ref(), false)?),
                request: Some(ws::RespondWorkflowTaskCompletedRequest {
                    namespace: "fuzz".into(),
                    identity: "fuzz".into(),
                    commands,
                    force_create_new_workflow_task: u.arbitrary()?,
                    ..Default::default()
                }),
                new_run_id: text(u, &["next-run", "run-0"])?,
                eager_activities: u.arbitrary()?,
                nexus_endpoints: Vec::new(),
                nexus_request_ids: Vec::new(),
            })
        }
        3 => Kind::FailWorkflowTask(cmd::FailWorkflowTask {
            token: Some(token(u, state.as_ref(), false)?),
            request: Some(ws::RespondWorkflowTaskFailedRequest {
                cause: small(u, 1)?,
                failure: failure(u)?,
                identity: "fuzz".into(),
                ..Default::default()
            }),
        }),
        4 => {
            let info = state.as_ref().and_then(|s| s.activities.values().next());
            Kind::RecordActivityTaskStarted(cmd::RecordActivityTaskStarted {
                namespace_id: NS.into(),
                workflow_id: wf,
                run_id,
                scheduled_event_id: int(u, info.map_or(5, |a| a.scheduled_event_id))?,
                attempt: small(u, info.map_or(1, |a| a.attempt))?,
                request_id: text(u, &["poll-a"])?,
                identity: "fuzz".into(),
                outbox_id: int(u, 0)?,
                worker_control_task_queue: text(
                    u,
                    &["", "temporal-sys/worker-commands/default/w"],
                )?,
            })
        }
        5 => {
            let token = Some(token(u, state.as_ref(), true)?);
            let outcome = match u.int_in_range(0..=2u8)? {
                0 => cmd::respond_activity::Outcome::Completed(
                    ws::RespondActivityTaskCompletedRequest {
                        result: payloads(u)?,
                        ..Default::default()
                    },
                ),
                1 => cmd::respond_activity::Outcome::Failed(ws::RespondActivityTaskFailedRequest {
                    failure: failure(u)?,
                    ..Default::default()
                }),
                _ => cmd::respond_activity::Outcome::Canceled(
                    ws::RespondActivityTaskCanceledRequest::default(),
                ),
            };
            Kind::RespondActivity(cmd::RespondActivity {
                token,
                outcome: Some(outcome),
            })
        }
        6 => Kind::RecordActivityHeartbeat(cmd::RecordActivityHeartbeat {
            token: Some(token(u, state.as_ref(), true)?),
            details: payloads(u)?,
            identity: "fuzz".into(),
        }),
        7 => Kind::SignalWorkflow(cmd::SignalWorkflow {
            namespace_id: NS.into(),
            request: Some(ws::SignalWorkflowExecutionRequest {
                namespace: "fuzz".into(),
                workflow_execution: Some(WorkflowExecution {
                    workflow_id: wf,
                    run_id: text(u, &["", "run-0", "nope"])?,
                }),
                signal_name: text(u, &["sig"])?,
                input: payloads(u)?,
                request_id: text(u, &["sig-1", ""])?,
                ..Default::default()
            }),
            external: None,
        }),
        8 => Kind::TerminateWorkflow(cmd::TerminateWorkflow {
            namespace_id: NS.into(),
            request: Some(ws::TerminateWorkflowExecutionRequest {
                namespace: "fuzz".into(),
                workflow_execution: Some(WorkflowExecution {
                    workflow_id: wf,
                    run_id: String::new(),
                }),
                reason: "fuzz".into(),
                ..Default::default()
            }),
        }),
        9 => Kind::RequestCancelWorkflow(cmd::RequestCancelWorkflow {
            namespace_id: NS.into(),
            request: Some(ws::RequestCancelWorkflowExecutionRequest {
                namespace: "fuzz".into(),
                workflow_execution: Some(WorkflowExecution {
                    workflow_id: wf,
                    run_id: String::new(),
                }),
                request_id: text(u, &["cancel-1"])?,
                ..Default::default()
            }),
            external: None,
        }),
        10 => {
            // A due timer of the shard, as the timer processor proposes it, or a forged one.
            let timers = shard
                .tables()
                .timers_between(i64::MIN, i64::MAX, 16)
                .unwrap_or_default();
            let (key, task) = if timers.is_empty() || u.ratio(1, 8)? {
                let task = pb::TimerTask {
                    kind: small(u, 1)?,
                    namespace_id: NS.into(),
                    workflow_id: wf,
                    run_id,
                    event_id: int(u, 5)?,
                    ..Default::default()
                };
                (u.arbitrary::<Vec<u8>>()?, task)
            } else {
                u.choose(&timers)?.clone()
            };
            Kind::FireTimer(cmd::FireTimer {
                key,
                task: Some(task),
                new_run_id: text(u, &["retry-run"])?,
            })
        }
        11 => Kind::StickyWorkerUnavailable(cmd::StickyWorkerUnavailable {
            namespace_id: NS.into(),
            workflow_id: wf,
            run_id,
            scheduled_event_id: int(u, scheduled)?,
        }),
        12 => {
            let outbox = shard.tables().outbox_from(0, 16).unwrap_or_default();
            let id = if outbox.is_empty() || u.ratio(1, 8)? {
                u.arbitrary()?
            } else {
                let key = &outbox[u.choose_index(outbox.len())?].0;
                let tail = key.get(key.len().saturating_sub(8)..).unwrap_or_default();
                u64::from_be_bytes(tail.try_into().unwrap_or_default()) as i64
            };
            Kind::CompleteTransferTask(cmd::CompleteTransferTask { outbox_id: id })
        }
        13 => Kind::SignalWithStart(cmd::SignalWithStart {
            namespace_id: NS.into(),
            request: Some(ws::SignalWithStartWorkflowExecutionRequest {
                namespace: "fuzz".into(),
                workflow_id: wf.clone(),
                workflow_type: Some(WorkflowType {
                    name: "Fuzzed".into(),
                }),
                task_queue: task_queue(u)?,
                workflow_run_timeout: duration(u)?,
                workflow_task_timeout: duration(u)?,
                signal_name: "sig".into(),
                request_id: text(u, &["sws-1", ""])?,
                workflow_id_conflict_policy: small(u, 0)?,
                workflow_start_delay: duration(u)?,
                ..Default::default()
            }),
            run_id: text(u, &["run-sws", "run-0"])?,
        }),
        14 => Kind::RecordExternalOutcome(cmd::RecordExternalOutcome {
            namespace_id: NS.into(),
            workflow_id: wf,
            run_id,
            initiated_event_id: int(u, 5)?,
            outbox_id: int(u, 0)?,
            signal: u.arbitrary()?,
            failed: u.arbitrary()?,
            not_attempted: u.arbitrary()?,
        }),
        16..=19 => standalone_activity_command(u)?,
        _ => Kind::StartChildWorkflow(cmd::StartChildWorkflow {
            namespace_id: NS.into(),
            request: Some(ws::StartWorkflowExecutionRequest {
                workflow_run_timeout: duration(u)?,
                ..start_request(&format!("child-{}", u.int_in_range(0..=2u8)?))
            }),
            run_id: text(u, &["child-run"])?,
            parent: Some(pb::ParentExecutionInfo {
                namespace_id: NS.into(),
                namespace: "fuzz".into(),
                execution: Some(WorkflowExecution {
                    workflow_id: wf,
                    run_id,
                }),
                initiated_event_id: int(u, 5)?,
                original_run_id: text(u, &["run-1"])?,
            }),
            root_execution: None,
            reconnect_after_reset: u.arbitrary()?,
        }),
    };
    let mut command = shard.stamp(kind);
    // The leader's clock: usually moving forward, sometimes anywhere.
    match u.int_in_range(0..=9u8)? {
        0 => {
            command.now = Some(Timestamp {
                seconds: u.arbitrary()?,
                nanos: u.arbitrary()?,
            })
        }
        1 => {
            shard.clock_ms = shard
                .clock_ms
                .saturating_add(u.int_in_range(0..=400_000_000)?);
            command.now = Some(chronicle_types::time::from_millis(shard.clock_ms));
        }
        2 => command.now = None,
        _ => {}
    }
    Ok(command)
}

/// One Raft entry: a command, a group-committed batch, raw bytes, or a command with a byte
/// changed.
fn entry(u: &mut Unstructured, shard: &mut Shard) -> ArbResult<Vec<u8>> {
    Ok(match u.int_in_range(0..=9u8)? {
        0 => {
            let mut batch = Vec::new();
            for _ in 0..u.int_in_range(1..=3)? {
                batch.push(shard_command(u, shard)?);
            }
            cmd::ShardCommand {
                batch,
                ..Default::default()
            }
            .encode_to_vec()
        }
        1 => u.arbitrary::<Vec<u8>>()?,
        2 => {
            let mut bytes = shard_command(u, shard)?.encode_to_vec();
            if !bytes.is_empty() {
                let at = u.choose_index(bytes.len())?;
                bytes[at] = u.arbitrary()?;
            }
            bytes
        }
        _ => shard_command(u, shard)?.encode_to_vec(),
    })
}

fn replicas() -> &'static Mutex<Replicas> {
    static REPLICAS: OnceLock<Mutex<Replicas>> = OnceLock::new();
    REPLICAS.get_or_init(|| Mutex::new(Replicas::new()))
}

/// Runs one input on a fresh shard of `replicas`.
pub fn run_on(replicas: &mut Replicas, data: &[u8]) {
    let id = replicas.next_shard;
    replicas.next_shard += 1;
    let mut shard = Shard {
        dbs: &replicas.dbs,
        id,
        index: 0,
        clock_ms: 1_700_000_000_000,
    };
    seed(&mut shard);
    let mut u = Unstructured::new(data);
    for _ in 0..MAX_STEPS {
        if u.is_empty() {
            break;
        }
        let Ok(entry) = entry(&mut u, &mut shard) else {
            break;
        };
        shard.apply(&entry);
    }
    shard.digests_agree();
}

/// The fuzz target.
pub fn run(data: &[u8]) {
    let mut replicas = replicas().lock().unwrap_or_else(|e| e.into_inner());
    run_on(&mut replicas, data);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_builds_the_state_the_steps_aim_at() {
        let mut replicas = Replicas::new();
        {
            let mut shard = Shard {
                dbs: &replicas.dbs,
                id: 7,
                index: 0,
                clock_ms: 1_700_000_000_000,
            };
            seed(&mut shard);
            let wf1 = shard.state("wf-1").expect("wf-1");
            assert!(wf1.workflow_task.is_some_and(|t| t.started_event_id > 0));
            let wf2 = shard.state("wf-2").expect("wf-2");
            assert_eq!(wf2.activities.len(), 1);
            assert_eq!(wf2.timers.len(), 1);
            assert!(shard.state("wf-3").is_none());
            shard.digests_agree();
        }
        // Inputs run, each on a fresh shard.
        for input in [
            &b""[..],
            &[7u8; 64],
            &[0xff; 300],
            b"a longer input of printable bytes",
        ] {
            run_on(&mut replicas, input);
        }
    }
}
