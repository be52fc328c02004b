//! The benchmark scenarios: what each workflow does, decided from its history alone.
//!
//! A workflow's logic is a small deterministic function of its history (no SDK, no cached
//! state), so any poller can answer any workflow task. Every parameter a workflow needs travels in
//! its input, which also lets the driver compute the exact result it must end with.

use std::collections::HashMap;
use std::time::Duration;

use chronicle_proto::temporal::api::command::v1::{
    Command, CompleteWorkflowExecutionCommandAttributes,
    ContinueAsNewWorkflowExecutionCommandAttributes, FailWorkflowExecutionCommandAttributes,
    ScheduleActivityTaskCommandAttributes, StartChildWorkflowExecutionCommandAttributes,
    StartTimerCommandAttributes, command,
};
use chronicle_proto::temporal::api::common::v1::{ActivityType, Payload, Payloads, WorkflowType};
use chronicle_proto::temporal::api::enums::v1::CommandType;
use chronicle_proto::temporal::api::failure::v1::Failure;
use chronicle_proto::temporal::api::history::v1::{HistoryEvent, history_event::Attributes};
use chronicle_proto::temporal::api::taskqueue::v1::TaskQueue;
use serde::{Deserialize, Serialize};

/// Activity type every scenario schedules: returns its integer input plus one.
pub const INCREMENT_ACTIVITY: &str = "bench-increment";
/// Signal name the driver sends.
pub const SIGNAL_NAME: &str = "bench-signal";
/// Query type the workers answer: the seed the workflow chain started with.
pub const QUERY_ORIGIN: &str = "origin";
/// Value the driver signals in the `mixed` scenario.
pub const MIXED_SIGNAL_VALUE: i64 = 1;

/// A workload: one workflow shape, its parameters, and what the driver does while it runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Scenario {
    /// Completes in its first workflow task, returning its input.
    Echo,
    /// `activities` activities one after another, each adding one to the previous result.
    Sequential { activities: u32 },
    /// `activities` activities scheduled in one workflow task; the result is the sum of theirs.
    Fanout { activities: u32 },
    /// One durable timer, then completion.
    Timer { duration_ms: u64 },
    /// Waits until the driver has sent `signals` signals (valued 1..=signals) and returns their
    /// sum plus the seed.
    Signal { signals: u32 },
    /// `children` child workflows started at once, each returning its input plus one.
    Child { children: u32 },
    /// Activities, then a timer, then a signal, answering a query, then one continue-as-new
    /// whose second run runs one more activity.
    Mixed { activities: u32, timer_ms: u64 },
}

impl Scenario {
    pub fn name(&self) -> &'static str {
        match self {
            Scenario::Echo => "echo",
            Scenario::Sequential { .. } => "sequential",
            Scenario::Fanout { .. } => "fanout",
            Scenario::Timer { .. } => "timer",
            Scenario::Signal { .. } => "signal",
            Scenario::Child { .. } => "child",
            Scenario::Mixed { .. } => "mixed",
        }
    }

    /// Human-readable form with parameters, for reports.
    pub fn describe(&self) -> String {
        match self {
            Scenario::Echo => "echo".into(),
            Scenario::Sequential { activities } => format!("sequential --activities {activities}"),
            Scenario::Fanout { activities } => format!("fanout --activities {activities}"),
            Scenario::Timer { duration_ms } => format!("timer --timer-duration {duration_ms}ms"),
            Scenario::Signal { signals } => format!("signal --signals {signals}"),
            Scenario::Child { children } => format!("child --children {children}"),
            Scenario::Mixed {
                activities,
                timer_ms,
            } => format!("mixed --activities {activities} --timer-duration {timer_ms}ms"),
        }
    }

    /// The workflow type the driver starts.
    pub fn workflow_type(&self) -> &'static str {
        WorkflowKind::root_of(self).type_name()
    }

    /// Input of the workflow with `seed`.
    pub fn input(&self, seed: i64) -> WorkflowInput {
        let (count, timer_ms) = match *self {
            Scenario::Echo => (0, 0),
            Scenario::Sequential { activities } | Scenario::Fanout { activities } => {
                (activities, 0)
            }
            Scenario::Timer { duration_ms } => (0, duration_ms),
            Scenario::Signal { signals } => (signals, 0),
            Scenario::Child { children } => (children, 0),
            Scenario::Mixed {
                activities,
                timer_ms,
            } => (activities, timer_ms),
        };
        WorkflowInput {
            seed,
            origin: seed,
            count,
            timer_ms,
            generation: 0,
        }
    }

    /// The result the last run of the workflow started with `seed` must return.
    pub fn expected_result(&self, seed: i64) -> serde_json::Value {
        match *self {
            Scenario::Echo => serde_json::to_value(self.input(seed)).expect("input serializes"),
            Scenario::Sequential { activities } => (seed + i64::from(activities)).into(),
            Scenario::Fanout { activities: n } | Scenario::Child { children: n } => {
                sum_of_increments(seed, n).into()
            }
            Scenario::Timer { .. } => seed.into(),
            Scenario::Signal { signals } => {
                let n = i64::from(signals);
                (seed + n * (n + 1) / 2).into()
            }
            Scenario::Mixed { activities, .. } => {
                // First run: `activities` increments, a child's increment and the signal;
                // second run: one increment.
                (seed + i64::from(activities) + 1 + MIXED_SIGNAL_VALUE + 1).into()
            }
        }
    }

    /// The longest a workflow of this scenario waits by design (timers), so the driver's
    /// per-workflow deadline can allow for it.
    pub fn inherent_duration(&self) -> Duration {
        match *self {
            Scenario::Timer { duration_ms }
            | Scenario::Mixed {
                timer_ms: duration_ms,
                ..
            } => Duration::from_millis(duration_ms),
            _ => Duration::ZERO,
        }
    }

    /// Signals the driver sends after starting a workflow, as values.
    pub fn signals_to_send(&self) -> Vec<i64> {
        match *self {
            Scenario::Signal { signals } => (1..=i64::from(signals)).collect(),
            Scenario::Mixed { .. } => vec![MIXED_SIGNAL_VALUE],
            _ => Vec::new(),
        }
    }

    /// Whether the driver queries the workflow while it runs.
    pub fn sends_query(&self) -> bool {
        matches!(self, Scenario::Mixed { .. })
    }
}

/// Sum over `i in 0..n` of `(seed + i) + 1`: what fan-out and child workflows return.
fn sum_of_increments(seed: i64, n: u32) -> i64 {
    let n = i64::from(n);
    n * seed + n * (n + 1) / 2
}

/// A workflow's input: everything its logic needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowInput {
    /// The value the workflow computes from (changes across continue-as-new).
    pub seed: i64,
    /// The seed the chain started with (answer to the `origin` query).
    pub origin: i64,
    /// Activities, signals or children, depending on the scenario.
    pub count: u32,
    pub timer_ms: u64,
    /// Which run of a continue-as-new chain this is.
    pub generation: u32,
}

/// The workflow types the workers know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkflowKind {
    Echo,
    Sequential,
    Fanout,
    Timer,
    Signal,
    ChildParent,
    ChildLeaf,
    Mixed,
}

impl WorkflowKind {
    pub const ALL: [WorkflowKind; 8] = [
        WorkflowKind::Echo,
        WorkflowKind::Sequential,
        WorkflowKind::Fanout,
        WorkflowKind::Timer,
        WorkflowKind::Signal,
        WorkflowKind::ChildParent,
        WorkflowKind::ChildLeaf,
        WorkflowKind::Mixed,
    ];

    fn root_of(scenario: &Scenario) -> Self {
        match scenario {
            Scenario::Echo => WorkflowKind::Echo,
            Scenario::Sequential { .. } => WorkflowKind::Sequential,
            Scenario::Fanout { .. } => WorkflowKind::Fanout,
            Scenario::Timer { .. } => WorkflowKind::Timer,
            Scenario::Signal { .. } => WorkflowKind::Signal,
            Scenario::Child { .. } => WorkflowKind::ChildParent,
            Scenario::Mixed { .. } => WorkflowKind::Mixed,
        }
    }

    pub fn type_name(self) -> &'static str {
        match self {
            WorkflowKind::Echo => "bench-echo",
            WorkflowKind::Sequential => "bench-sequential",
            WorkflowKind::Fanout => "bench-fanout",
            WorkflowKind::Timer => "bench-timer",
            WorkflowKind::Signal => "bench-signal",
            WorkflowKind::ChildParent => "bench-child-parent",
            WorkflowKind::ChildLeaf => "bench-child-leaf",
            WorkflowKind::Mixed => "bench-mixed",
        }
    }

    pub fn from_type_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.type_name() == name)
    }
}

/// JSON payload, as Temporal SDKs encode them (so the results are readable in any UI/CLI).
pub fn json_payloads<T: Serialize>(value: &T) -> Payloads {
    Payloads {
        payloads: vec![Payload {
            metadata: HashMap::from([("encoding".to_string(), b"json/plain".to_vec())]),
            data: serde_json::to_vec(value).expect("JSON values serialize"),
            ..Default::default()
        }],
    }
}

/// The first payload decoded as JSON.
pub fn decode_json<T: for<'de> Deserialize<'de>>(payloads: Option<&Payloads>) -> Result<T, String> {
    let payload = payloads
        .and_then(|p| p.payloads.first())
        .ok_or_else(|| "no payload".to_string())?;
    serde_json::from_slice(&payload.data).map_err(|e| {
        format!(
            "payload is not the expected JSON ({e}): {:?}",
            String::from_utf8_lossy(&payload.data)
        )
    })
}

/// What a workflow's history says so far, in the terms the scenarios decide on.
#[derive(Debug, Default)]
struct HistorySummary {
    input: Option<WorkflowInput>,
    activities_scheduled: u32,
    /// Results of completed activities, in completion order.
    activity_results: Vec<i64>,
    timers_started: u32,
    timers_fired: u32,
    signal_values: Vec<i64>,
    children_initiated: u32,
    child_results: Vec<i64>,
    /// The first thing that went wrong (failed activity or child, undecodable payload).
    problem: Option<String>,
}

impl HistorySummary {
    fn of(events: &[HistoryEvent]) -> Self {
        let mut summary = HistorySummary::default();
        for event in events {
            let Some(attributes) = &event.attributes else {
                continue;
            };
            match attributes {
                Attributes::WorkflowExecutionStartedEventAttributes(a) => {
                    match decode_json::<WorkflowInput>(a.input.as_ref()) {
                        Ok(input) => summary.input = Some(input),
                        Err(e) => summary.note(format!("workflow input: {e}")),
                    }
                }
                Attributes::ActivityTaskScheduledEventAttributes(_) => {
                    summary.activities_scheduled += 1
                }
                Attributes::ActivityTaskCompletedEventAttributes(a) => {
                    match decode_json::<i64>(a.result.as_ref()) {
                        Ok(value) => summary.activity_results.push(value),
                        Err(e) => summary.note(format!("activity result: {e}")),
                    }
                }
                Attributes::ActivityTaskFailedEventAttributes(a) => summary.note(format!(
                    "activity failed: {}",
                    failure_message(a.failure.as_ref())
                )),
                Attributes::ActivityTaskTimedOutEventAttributes(a) => summary.note(format!(
                    "activity timed out: {}",
                    failure_message(a.failure.as_ref())
                )),
                Attributes::TimerStartedEventAttributes(_) => summary.timers_started += 1,
                Attributes::TimerFiredEventAttributes(_) => summary.timers_fired += 1,
                Attributes::WorkflowExecutionSignaledEventAttributes(a) => {
                    match decode_json::<i64>(a.input.as_ref()) {
                        Ok(value) => summary.signal_values.push(value),
                        Err(e) => summary.note(format!("signal {:?}: {e}", a.signal_name)),
                    }
                }
                Attributes::StartChildWorkflowExecutionInitiatedEventAttributes(_) => {
                    summary.children_initiated += 1
                }
                Attributes::ChildWorkflowExecutionCompletedEventAttributes(a) => {
                    match decode_json::<i64>(a.result.as_ref()) {
                        Ok(value) => summary.child_results.push(value),
                        Err(e) => summary.note(format!("child result: {e}")),
                    }
                }
                Attributes::StartChildWorkflowExecutionFailedEventAttributes(a) => {
                    summary.note(format!(
                        "child {:?} could not start (cause {})",
                        a.workflow_id, a.cause
                    ))
                }
                Attributes::ChildWorkflowExecutionFailedEventAttributes(a) => summary.note(
                    format!("child failed: {}", failure_message(a.failure.as_ref())),
                ),
                Attributes::ChildWorkflowExecutionTimedOutEventAttributes(_) => {
                    summary.note("child timed out".into())
                }
                Attributes::ChildWorkflowExecutionTerminatedEventAttributes(_) => {
                    summary.note("child terminated".into())
                }
                Attributes::ChildWorkflowExecutionCanceledEventAttributes(_) => {
                    summary.note("child canceled".into())
                }
                _ => {}
            }
        }
        summary
    }

    fn note(&mut self, problem: String) {
        self.problem.get_or_insert(problem);
    }
}

fn failure_message(failure: Option<&Failure>) -> String {
    failure
        .map(|f| f.message.clone())
        .unwrap_or_else(|| "(no failure details)".into())
}

/// Where a workflow's commands go: its own task queue (children and continued runs too).
#[derive(Clone, Debug)]
pub struct DecisionContext<'a> {
    pub task_queue: &'a str,
    pub workflow_id: &'a str,
}

/// The commands that answer a workflow task whose full history is `events`.
pub fn decide(kind: WorkflowKind, events: &[HistoryEvent], ctx: &DecisionContext) -> Vec<Command> {
    let summary = HistorySummary::of(events);
    if let Some(problem) = &summary.problem {
        return vec![fail_command(problem)];
    }
    let Some(input) = &summary.input else {
        return vec![fail_command(
            "the history has no WorkflowExecutionStarted event with an input",
        )];
    };
    let completed = summary.activity_results.len() as u32;
    match kind {
        WorkflowKind::Echo => vec![complete_command(input)],
        WorkflowKind::Sequential => {
            sequential_step(input.seed, input.count, &summary, ctx, complete_command)
        }
        WorkflowKind::Fanout => {
            if summary.activities_scheduled == 0 {
                (0..input.count)
                    .map(|i| schedule_activity(i, input.seed + i64::from(i), ctx))
                    .collect()
            } else if completed == input.count {
                vec![complete_command(
                    &summary.activity_results.iter().sum::<i64>(),
                )]
            } else {
                Vec::new()
            }
        }
        WorkflowKind::Timer => {
            if summary.timers_started == 0 {
                vec![start_timer("timer", input.timer_ms)]
            } else if summary.timers_fired > 0 {
                vec![complete_command(&input.seed)]
            } else {
                Vec::new()
            }
        }
        WorkflowKind::Signal => {
            if summary.signal_values.len() as u32 >= input.count {
                let total: i64 = summary
                    .signal_values
                    .iter()
                    .take(input.count as usize)
                    .sum();
                vec![complete_command(&(input.seed + total))]
            } else {
                Vec::new()
            }
        }
        WorkflowKind::ChildParent => {
            if summary.children_initiated == 0 {
                (0..input.count)
                    .map(|i| start_child(i, input, ctx))
                    .collect()
            } else if summary.child_results.len() as u32 == input.count {
                vec![complete_command(&summary.child_results.iter().sum::<i64>())]
            } else {
                Vec::new()
            }
        }
        WorkflowKind::ChildLeaf => vec![complete_command(&(input.seed + 1))],
        WorkflowKind::Mixed => mixed_step(input, &summary, ctx),
    }
}

/// Runs `count` activities in a row from `seed`; when all are done, `finish` gets the last value.
fn sequential_step(
    seed: i64,
    count: u32,
    summary: &HistorySummary,
    ctx: &DecisionContext,
    finish: impl FnOnce(&i64) -> Command,
) -> Vec<Command> {
    let completed = summary.activity_results.len() as u32;
    let current = summary.activity_results.last().copied().unwrap_or(seed);
    if completed >= count {
        vec![finish(&current)]
    } else if summary.activities_scheduled == completed {
        vec![schedule_activity(completed, current, ctx)]
    } else {
        // An activity is still running; this task was caused by something else (a signal).
        Vec::new()
    }
}

fn mixed_step(
    input: &WorkflowInput,
    summary: &HistorySummary,
    ctx: &DecisionContext,
) -> Vec<Command> {
    if input.generation > 0 {
        // The continued run: one more activity, then done.
        return sequential_step(input.seed, 1, summary, ctx, complete_command);
    }
    let completed = summary.activity_results.len() as u32;
    if completed < input.count {
        return sequential_step(input.seed, input.count, summary, ctx, complete_command);
    }
    let after_activities = summary
        .activity_results
        .last()
        .copied()
        .unwrap_or(input.seed);
    // Then one child, from the activities' result; it answers that plus one.
    if summary.children_initiated == 0 {
        let from = WorkflowInput {
            seed: after_activities,
            ..input.clone()
        };
        return vec![start_child(0, &from, ctx)];
    }
    let Some(after_child) = summary.child_results.first().copied() else {
        return Vec::new();
    };
    if summary.timers_started == 0 {
        return vec![start_timer("mixed-timer", input.timer_ms)];
    }
    if summary.timers_fired == 0 || summary.signal_values.is_empty() {
        return Vec::new();
    }
    let next = WorkflowInput {
        seed: after_child + summary.signal_values[0],
        generation: input.generation + 1,
        ..input.clone()
    };
    vec![Command {
        command_type: CommandType::ContinueAsNewWorkflowExecution as i32,
        attributes: Some(
            command::Attributes::ContinueAsNewWorkflowExecutionCommandAttributes(
                ContinueAsNewWorkflowExecutionCommandAttributes {
                    workflow_type: Some(WorkflowType {
                        name: WorkflowKind::Mixed.type_name().into(),
                    }),
                    task_queue: Some(task_queue(ctx.task_queue)),
                    input: Some(json_payloads(&next)),
                    workflow_task_timeout: Some(duration(Duration::from_secs(10))),
                    ..Default::default()
                },
            ),
        ),
        ..Default::default()
    }]
}

/// The answer to a query, from the history of the run it targets.
pub fn answer_query(events: &[HistoryEvent], query_type: &str) -> Result<Payloads, String> {
    if query_type != QUERY_ORIGIN {
        return Err(format!("unknown query type {query_type:?}"));
    }
    let summary = HistorySummary::of(events);
    summary
        .input
        .map(|input| json_payloads(&input.origin))
        .ok_or_else(|| "the history has no workflow input".to_string())
}

pub fn task_queue(name: &str) -> TaskQueue {
    TaskQueue {
        name: name.into(),
        kind: chronicle_proto::temporal::api::enums::v1::TaskQueueKind::Normal as i32,
        ..Default::default()
    }
}

pub fn duration(d: Duration) -> chronicle_proto::wkt::Duration {
    chronicle_proto::wkt::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

fn complete_command<T: Serialize>(result: &T) -> Command {
    Command {
        command_type: CommandType::CompleteWorkflowExecution as i32,
        attributes: Some(
            command::Attributes::CompleteWorkflowExecutionCommandAttributes(
                CompleteWorkflowExecutionCommandAttributes {
                    result: Some(json_payloads(result)),
                },
            ),
        ),
        ..Default::default()
    }
}

fn fail_command(message: &str) -> Command {
    Command {
        command_type: CommandType::FailWorkflowExecution as i32,
        attributes: Some(command::Attributes::FailWorkflowExecutionCommandAttributes(
            FailWorkflowExecutionCommandAttributes {
                failure: Some(Failure {
                    message: format!("chronicle-bench workflow: {message}"),
                    source: "chronicle-bench".into(),
                    ..Default::default()
                }),
            },
        )),
        ..Default::default()
    }
}

fn schedule_activity(index: u32, value: i64, ctx: &DecisionContext) -> Command {
    Command {
        command_type: CommandType::ScheduleActivityTask as i32,
        attributes: Some(command::Attributes::ScheduleActivityTaskCommandAttributes(
            ScheduleActivityTaskCommandAttributes {
                activity_id: format!("a{index}"),
                activity_type: Some(ActivityType {
                    name: INCREMENT_ACTIVITY.into(),
                }),
                task_queue: Some(task_queue(ctx.task_queue)),
                input: Some(json_payloads(&value)),
                start_to_close_timeout: Some(duration(Duration::from_secs(30))),
                ..Default::default()
            },
        )),
        ..Default::default()
    }
}

fn start_timer(timer_id: &str, millis: u64) -> Command {
    Command {
        command_type: CommandType::StartTimer as i32,
        attributes: Some(command::Attributes::StartTimerCommandAttributes(
            StartTimerCommandAttributes {
                timer_id: timer_id.into(),
                start_to_fire_timeout: Some(duration(Duration::from_millis(millis.max(1)))),
            },
        )),
        ..Default::default()
    }
}

fn start_child(index: u32, parent: &WorkflowInput, ctx: &DecisionContext) -> Command {
    let child_input = WorkflowInput {
        seed: parent.seed + i64::from(index),
        count: 0,
        ..parent.clone()
    };
    Command {
        command_type: CommandType::StartChildWorkflowExecution as i32,
        attributes: Some(
            command::Attributes::StartChildWorkflowExecutionCommandAttributes(
                StartChildWorkflowExecutionCommandAttributes {
                    workflow_id: format!("{}-child-{index}", ctx.workflow_id),
                    workflow_type: Some(WorkflowType {
                        name: WorkflowKind::ChildLeaf.type_name().into(),
                    }),
                    task_queue: Some(task_queue(ctx.task_queue)),
                    input: Some(json_payloads(&child_input)),
                    workflow_task_timeout: Some(duration(Duration::from_secs(10))),
                    ..Default::default()
                },
            ),
        ),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chronicle_proto::temporal::api::history::v1::{
        ActivityTaskCompletedEventAttributes, ActivityTaskScheduledEventAttributes,
        ChildWorkflowExecutionCompletedEventAttributes, TimerFiredEventAttributes,
        TimerStartedEventAttributes, WorkflowExecutionSignaledEventAttributes,
        WorkflowExecutionStartedEventAttributes,
    };

    const CTX: DecisionContext<'static> = DecisionContext {
        task_queue: "tq",
        workflow_id: "wf",
    };

    fn event(attributes: Attributes) -> HistoryEvent {
        HistoryEvent {
            attributes: Some(attributes),
            ..Default::default()
        }
    }

    fn started(input: &WorkflowInput) -> HistoryEvent {
        event(Attributes::WorkflowExecutionStartedEventAttributes(
            WorkflowExecutionStartedEventAttributes {
                input: Some(json_payloads(input)),
                ..Default::default()
            },
        ))
    }

    fn scheduled() -> HistoryEvent {
        event(Attributes::ActivityTaskScheduledEventAttributes(
            ActivityTaskScheduledEventAttributes::default(),
        ))
    }

    fn completed(value: i64) -> HistoryEvent {
        event(Attributes::ActivityTaskCompletedEventAttributes(
            ActivityTaskCompletedEventAttributes {
                result: Some(json_payloads(&value)),
                ..Default::default()
            },
        ))
    }

    fn completion_value(command: &Command) -> serde_json::Value {
        match &command.attributes {
            Some(command::Attributes::CompleteWorkflowExecutionCommandAttributes(a)) => {
                decode_json(a.result.as_ref()).unwrap()
            }
            other => panic!("not a completion: {other:?}"),
        }
    }

    #[test]
    fn sequential_schedules_one_at_a_time_and_returns_the_expected_result() {
        let scenario = Scenario::Sequential { activities: 2 };
        let input = scenario.input(40);
        let mut history = vec![started(&input)];
        let commands = decide(WorkflowKind::Sequential, &history, &CTX);
        assert_eq!(commands.len(), 1);
        assert_eq!(
            commands[0].command_type,
            CommandType::ScheduleActivityTask as i32
        );
        history.extend([scheduled(), completed(41)]);
        let commands = decide(WorkflowKind::Sequential, &history, &CTX);
        assert_eq!(
            commands[0].command_type,
            CommandType::ScheduleActivityTask as i32
        );
        history.extend([scheduled(), completed(42)]);
        let commands = decide(WorkflowKind::Sequential, &history, &CTX);
        assert_eq!(completion_value(&commands[0]), scenario.expected_result(40));
    }

    #[test]
    fn fanout_waits_for_every_activity() {
        let scenario = Scenario::Fanout { activities: 3 };
        let mut history = vec![started(&scenario.input(10))];
        assert_eq!(decide(WorkflowKind::Fanout, &history, &CTX).len(), 3);
        history.extend([
            scheduled(),
            scheduled(),
            scheduled(),
            completed(11),
            completed(13),
        ]);
        assert!(decide(WorkflowKind::Fanout, &history, &CTX).is_empty());
        history.push(completed(12));
        let commands = decide(WorkflowKind::Fanout, &history, &CTX);
        assert_eq!(completion_value(&commands[0]), scenario.expected_result(10));
    }

    #[test]
    fn mixed_runs_a_child_then_continues_as_new_after_timer_and_signal() {
        let scenario = Scenario::Mixed {
            activities: 1,
            timer_ms: 10,
        };
        let input = scenario.input(5);
        let mut history = vec![started(&input), scheduled(), completed(6)];
        let commands = decide(WorkflowKind::Mixed, &history, &CTX);
        let Some(command::Attributes::StartChildWorkflowExecutionCommandAttributes(child)) =
            &commands[0].attributes
        else {
            panic!("expected a child: {commands:?}");
        };
        let child_input: WorkflowInput = decode_json(child.input.as_ref()).unwrap();
        assert_eq!(
            child_input.seed, 6,
            "the child starts from the activities' result"
        );
        history.push(event(
            Attributes::StartChildWorkflowExecutionInitiatedEventAttributes(Default::default()),
        ));
        assert!(
            decide(WorkflowKind::Mixed, &history, &CTX).is_empty(),
            "waits for the child"
        );
        history.push(event(
            Attributes::ChildWorkflowExecutionCompletedEventAttributes(
                ChildWorkflowExecutionCompletedEventAttributes {
                    result: Some(json_payloads(&7)),
                    ..Default::default()
                },
            ),
        ));
        let commands = decide(WorkflowKind::Mixed, &history, &CTX);
        assert_eq!(commands[0].command_type, CommandType::StartTimer as i32);
        history.push(event(Attributes::TimerStartedEventAttributes(
            TimerStartedEventAttributes::default(),
        )));
        history.push(event(Attributes::TimerFiredEventAttributes(
            TimerFiredEventAttributes::default(),
        )));
        assert!(
            decide(WorkflowKind::Mixed, &history, &CTX).is_empty(),
            "waits for the signal"
        );
        history.push(event(Attributes::WorkflowExecutionSignaledEventAttributes(
            WorkflowExecutionSignaledEventAttributes {
                input: Some(json_payloads(&MIXED_SIGNAL_VALUE)),
                ..Default::default()
            },
        )));
        let commands = decide(WorkflowKind::Mixed, &history, &CTX);
        let Some(command::Attributes::ContinueAsNewWorkflowExecutionCommandAttributes(next)) =
            &commands[0].attributes
        else {
            panic!("expected continue-as-new: {commands:?}");
        };
        let next: WorkflowInput = decode_json(next.input.as_ref()).unwrap();
        assert_eq!(next.generation, 1);
        assert_eq!(next.origin, 5);
        let second = vec![started(&next), scheduled(), completed(next.seed + 1)];
        let commands = decide(WorkflowKind::Mixed, &second, &CTX);
        assert_eq!(completion_value(&commands[0]), scenario.expected_result(5));
        assert_eq!(
            decode_json::<i64>(Some(&answer_query(&second, QUERY_ORIGIN).unwrap())).unwrap(),
            5
        );
    }

    #[test]
    fn a_failed_activity_fails_the_workflow() {
        let input = Scenario::Sequential { activities: 1 }.input(0);
        let history = vec![
            started(&input),
            scheduled(),
            event(Attributes::ActivityTaskFailedEventAttributes(
                Default::default(),
            )),
        ];
        let commands = decide(WorkflowKind::Sequential, &history, &CTX);
        assert_eq!(
            commands[0].command_type,
            CommandType::FailWorkflowExecution as i32
        );
    }

    #[test]
    fn workflow_type_names_round_trip() {
        for kind in WorkflowKind::ALL {
            assert_eq!(WorkflowKind::from_type_name(kind.type_name()), Some(kind));
        }
        assert_eq!(WorkflowKind::from_type_name("other"), None);
    }
}
