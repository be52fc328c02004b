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

mod values;
use values::{
    duration, failure, int, payloads, retry_policy, search_attributes, small,
    standalone_activity_command, task_queue, text, token, workflow_command, workflow_id,
};

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
        max_history_events: 0,
        max_history_bytes: 0,
        nexus_endpoints: Vec::new(),
        nexus_request_ids: Vec::new(),
    }));
    shard.apply(&complete.encode_to_vec());
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
                max_history_events: int(u, 0)?,
                max_history_bytes: int(u, 0)?,
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
