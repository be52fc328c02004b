//! Schedules at apply: create, update, patch (trigger, backfill, pause), delete, the wake-up
//! timer, the outcome of a start and the close of a started workflow. Every change ends with
//! [`process`]: schedule times up to the command's `now` become buffered starts, the buffer is
//! resolved under the overlap policies into starts (outbox rows) and cancellations or
//! terminations, and the wake-up timer is set for the next time. Only the command's `now` is
//! used, never the wall clock.

use crate::metric_defs;
use chronicle_cron::spec::{CompiledSpec, canonicalize, clean};
use chronicle_proto::chronicle::history::v1::{self as cmd, command_result, schedule_command::Op};
use chronicle_proto::chronicle::persistence::v1::{
    self as pb, outbox_task::Kind as OutboxKind, timer_task::Kind as TimerKind,
};
use chronicle_proto::temporal::api::common::v1::WorkflowExecution;
use chronicle_proto::temporal::api::enums::v1::{ScheduleOverlapPolicy, WorkflowExecutionStatus};
use chronicle_proto::temporal::api::schedule::v1 as s;
use chronicle_proto::wkt::Timestamp;
use chronicle_storage::ShardBatch;
use chronicle_types::ApiError;
use chronicle_types::time::{from_millis, millis, opt_duration_millis};

use crate::apply::ApplyResult;

/// Temporal's scheduler defaults.
pub const RECENT_ACTIONS: usize = 10;
pub const FUTURE_ACTIONS: usize = 10;
pub const MAX_BUFFER: usize = 1000;
const DEFAULT_CATCHUP_MS: i64 = 365 * 24 * 3600 * 1000;
const MIN_CATCHUP_MS: i64 = 10_000;
/// Schedule times looked at per command at most (a schedule far behind catches up over
/// several wake-ups; the catch-up window drops what is too old anyway).
const MAX_TIMES_PER_PROCESS: usize = 10_000;
const RECENT_REQUEST_IDS: usize = 32;
const INITIAL_CONFLICT_TOKEN: i64 = 1;
/// Backfill times buffered per command at most, and the pause before the next part.
const BACKFILL_PER_COMMAND: usize = 500;
const BACKFILL_PAUSE_MS: i64 = 100;

pub fn not_found(schedule_id: &str) -> ApiError {
    let _ = schedule_id;
    ApiError::not_found("schedule not found")
}

pub fn jitter_seed(state: &pb::ScheduleState) -> String {
    format!("{}-{}", state.namespace_id, state.schedule_id)
}

pub fn compiled(state: &pb::ScheduleState) -> Option<CompiledSpec> {
    let spec = state.schedule.as_ref()?.spec.as_ref()?;
    CompiledSpec::new(spec).ok()
}

fn policies(state: &pb::ScheduleState) -> s::SchedulePolicies {
    state
        .schedule
        .as_ref()
        .and_then(|s| s.policies)
        .unwrap_or_default()
}

fn sched_state(state: &mut pb::ScheduleState) -> &mut s::ScheduleState {
    state
        .schedule
        .get_or_insert_with(Default::default)
        .state
        .get_or_insert_with(Default::default)
}

fn info(state: &mut pb::ScheduleState) -> &mut s::ScheduleInfo {
    state.info.get_or_insert_with(Default::default)
}

fn resolve(state: &pb::ScheduleState, p: i32) -> ScheduleOverlapPolicy {
    let mut policy = ScheduleOverlapPolicy::try_from(p).unwrap_or_default();
    if policy == ScheduleOverlapPolicy::Unspecified {
        policy =
            ScheduleOverlapPolicy::try_from(policies(state).overlap_policy).unwrap_or_default();
    }
    if policy == ScheduleOverlapPolicy::Unspecified {
        policy = ScheduleOverlapPolicy::Skip;
    }
    policy
}

fn catchup_ms(state: &pb::ScheduleState) -> i64 {
    match policies(state).catchup_window.as_ref() {
        None => DEFAULT_CATCHUP_MS,
        Some(d) => opt_duration_millis(Some(d)).max(MIN_CATCHUP_MS),
    }
}

/// A schedule as Temporal stores it: the spec canonical and cleaned, defaults filled in.
fn normalized(schedule: Option<s::Schedule>) -> Result<s::Schedule, ApiError> {
    let mut schedule =
        schedule.ok_or_else(|| ApiError::invalid_argument("Schedule is not set."))?;
    let spec = schedule.spec.clone().unwrap_or_default();
    let mut spec = canonicalize(&spec)
        .map_err(|e| ApiError::invalid_argument(format!("Invalid schedule spec: {e}")))?;
    clean(&mut spec);
    schedule.spec = Some(spec);
    let has_start = schedule
        .action
        .as_ref()
        .and_then(|a| a.action.as_ref())
        .is_some();
    if !has_start {
        return Err(ApiError::invalid_argument("Schedule action is not set."));
    }
    schedule.policies.get_or_insert_with(Default::default);
    schedule.state.get_or_insert_with(Default::default);
    Ok(schedule)
}

fn seen_request(state: &mut pb::ScheduleState, request_id: &str) -> bool {
    if request_id.is_empty() {
        return false;
    }
    if state.recent_request_ids.iter().any(|r| r == request_id) {
        return true;
    }
    state.recent_request_ids.push(request_id.to_string());
    let excess = state
        .recent_request_ids
        .len()
        .saturating_sub(RECENT_REQUEST_IDS);
    state.recent_request_ids.drain(..excess);
    false
}

fn result(state: pb::ScheduleState) -> command_result::Result {
    command_result::Result::Schedule(cmd::ScheduleCommandResult { state: Some(state) })
}

/// CreateSchedule, UpdateSchedule, PatchSchedule, DeleteSchedule.
pub fn command(
    batch: &mut ShardBatch,
    now: Timestamp,
    c: cmd::ScheduleCommand,
) -> ApplyResult<command_result::Result> {
    let now_ms = millis(&now);
    let ns = c.namespace_id;
    match c.op {
        Some(Op::Create(r)) => {
            if let Some(existing) = batch.schedule(&ns, &r.schedule_id)? {
                if !r.request_id.is_empty() && existing.create_request_id == r.request_id {
                    return Ok(result(existing));
                }
                // Temporal answers with WorkflowExecutionAlreadyStarted (its scheduler is a
                // workflow); the SDKs raise ScheduleAlreadyRunningError on that detail.
                return Err(ApiError::already_started(
                    "schedule with this ID is already registered",
                    &existing.create_request_id,
                    "",
                )
                .into());
            }
            let schedule = normalized(r.schedule)?;
            let mut state = pb::ScheduleState {
                namespace_id: ns.clone(),
                namespace: r.namespace.clone(),
                schedule_id: r.schedule_id.clone(),
                schedule: Some(schedule),
                info: Some(s::ScheduleInfo {
                    create_time: Some(now),
                    ..Default::default()
                }),
                memo: r.memo,
                search_attributes: r.search_attributes,
                conflict_token: INITIAL_CONFLICT_TOKEN,
                last_processed_time: Some(now),
                create_request_id: r.request_id,
                ..Default::default()
            };
            if let Some(patch) = r.initial_patch {
                apply_patch(&mut state, now_ms, patch);
            }
            process(batch, &mut state, now_ms)?;
            batch.put_schedule(&state);
            Ok(result(state))
        }
        Some(Op::Update(r)) => {
            let mut state = batch
                .schedule(&ns, &r.schedule_id)?
                .ok_or_else(|| not_found(&r.schedule_id))?;
            if seen_request(&mut state, &r.request_id) {
                return Ok(result(state));
            }
            let token = decode_token(&r.conflict_token);
            // As Temporal: a stale conflict token makes the update a no-op (not an error).
            if token != 0 && token != state.conflict_token {
                batch.put_schedule(&state);
                return Ok(result(state));
            }
            let schedule = normalized(r.schedule)?;
            process(batch, &mut state, now_ms)?;
            state.schedule = Some(schedule);
            if let Some(sa) = r.search_attributes {
                state.search_attributes = Some(sa);
            }
            info(&mut state).update_time = Some(now);
            state.conflict_token = state.conflict_token.saturating_add(1);
            process(batch, &mut state, now_ms)?;
            batch.put_schedule(&state);
            Ok(result(state))
        }
        Some(Op::Patch(r)) => {
            let mut state = batch
                .schedule(&ns, &r.schedule_id)?
                .ok_or_else(|| not_found(&r.schedule_id))?;
            if seen_request(&mut state, &r.request_id) {
                return Ok(result(state));
            }
            process(batch, &mut state, now_ms)?;
            if let Some(patch) = r.patch {
                apply_patch(&mut state, now_ms, patch);
            }
            process(batch, &mut state, now_ms)?;
            batch.put_schedule(&state);
            Ok(result(state))
        }
        Some(Op::Delete(r)) => {
            let mut state = batch
                .schedule(&ns, &r.schedule_id)?
                .ok_or_else(|| not_found(&r.schedule_id))?;
            if !state.timer_key.is_empty() {
                batch.delete_timer(&state.timer_key);
            }
            batch.delete_schedule(&ns, &r.schedule_id);
            state.deleted = true;
            Ok(result(state))
        }
        None => Err(ApiError::invalid_argument("empty schedule command").into()),
    }
}

/// DescribeSchedule's conflict token: the counter, big-endian.
pub fn encode_token(token: i64) -> Vec<u8> {
    token.to_be_bytes().to_vec()
}

fn decode_token(bytes: &[u8]) -> i64 {
    <[u8; 8]>::try_from(bytes)
        .map(i64::from_be_bytes)
        .unwrap_or(0)
}

fn add_start(
    state: &mut pb::ScheduleState,
    nominal_ms: i64,
    actual_ms: i64,
    overlap_policy: i32,
    manual: bool,
) {
    if state.buffered.len() >= MAX_BUFFER {
        info(state).buffer_dropped += 1;
        metric_defs::observe_schedule(
            &state.namespace_id,
            metric_defs::SCHEDULE_BUFFER_OVERRUNS,
            "",
            1,
        );
        return;
    }
    state.buffered.push(pb::ScheduleBufferedStart {
        nominal_time: Some(from_millis(nominal_ms)),
        actual_time: Some(from_millis(actual_ms)),
        overlap_policy,
        manual,
    });
}

fn apply_patch(state: &mut pb::ScheduleState, now_ms: i64, patch: s::SchedulePatch) {
    if let Some(trigger) = patch.trigger_immediately {
        let at = trigger
            .scheduled_time
            .as_ref()
            .map(millis)
            .filter(|t| *t != 0)
            .unwrap_or(now_ms);
        add_start(state, at, at, trigger.overlap_policy, true);
    }
    for mut backfill in patch.backfill_request {
        // Taken a part at a time (see `process_backfills`); the start is inclusive, as in
        // Temporal's current scheduler.
        if state.ongoing_backfills.len() >= MAX_BUFFER {
            info(state).buffer_dropped += 1;
            metric_defs::observe_schedule(
                &state.namespace_id,
                metric_defs::SCHEDULE_BUFFER_OVERRUNS,
                "",
                1,
            );
            continue;
        }
        let start = backfill.start_time.as_ref().map(millis).unwrap_or(0);
        backfill.start_time = Some(from_millis(start.saturating_sub(1)));
        state.ongoing_backfills.push(backfill);
    }
    if !patch.pause.is_empty() {
        let st = sched_state(state);
        st.paused = true;
        st.notes = patch.pause;
        state.conflict_token = state.conflict_token.saturating_add(1);
    }
    if !patch.unpause.is_empty() {
        let st = sched_state(state);
        st.paused = false;
        st.notes = patch.unpause;
        state.conflict_token = state.conflict_token.saturating_add(1);
    }
}

/// Whether a start may be taken now (and counts against remaining actions).
fn can_take(state: &mut pb::ScheduleState, manual: bool) -> bool {
    if manual {
        return true;
    }
    let st = sched_state(state);
    if st.paused {
        return false;
    }
    if st.limited_actions {
        if st.remaining_actions <= 0 {
            return false;
        }
        st.remaining_actions -= 1;
    }
    true
}

/// Schedule times up to `now_ms` into the buffer, the buffer into starts, and the timer for the
/// next time.
pub fn process(
    batch: &mut ShardBatch,
    state: &mut pb::ScheduleState,
    now_ms: i64,
) -> ApplyResult<()> {
    let spec = compiled(state);
    let seed = jitter_seed(state);
    let update_ms = state
        .info
        .as_ref()
        .and_then(|i| i.update_time.as_ref())
        .map(millis);
    let catchup = catchup_ms(state);
    let mut t = state
        .last_processed_time
        .as_ref()
        .map(millis)
        .unwrap_or(now_ms);
    if let Some(spec) = &spec {
        let mut looked = 0;
        while let Some(next) = spec.next(&seed, t) {
            if next.actual > now_ms {
                break;
            }
            looked += 1;
            if looked > MAX_TIMES_PER_PROCESS {
                break;
            }
            t = next.actual;
            if update_ms.is_some_and(|u| u > next.actual) {
                continue;
            }
            if now_ms.saturating_sub(next.actual) > catchup {
                info(state).missed_catchup_window += 1;
                metric_defs::observe_schedule(
                    &state.namespace_id,
                    metric_defs::SCHEDULE_MISSED_CATCHUP_WINDOW,
                    "",
                    1,
                );
                continue;
            }
            add_start(state, next.nominal, next.actual, 0, false);
        }
    }
    state.last_processed_time = Some(from_millis(t));
    process_backfills(state, spec.as_ref(), &seed);
    process_buffer(batch, state)?;
    // A backfill not taken whole (a full buffer, or the per-command limit) goes on soon.
    let soon = (!state.ongoing_backfills.is_empty() && state.buffered.len() < MAX_BUFFER / 2)
        .then_some(now_ms.saturating_add(BACKFILL_PAUSE_MS));
    set_timer(batch, state, spec.as_ref(), &seed, t, soon)
}

/// Backfill times into the buffer, oldest request first, while the buffer is under half full
/// and at most `BACKFILL_PER_COMMAND` per command.
fn process_backfills(state: &mut pb::ScheduleState, spec: Option<&CompiledSpec>, seed: &str) {
    let Some(spec) = spec else {
        state.ongoing_backfills.clear();
        return;
    };
    let mut limit = BACKFILL_PER_COMMAND;
    while limit > 0 && state.buffered.len() < MAX_BUFFER / 2 {
        let Some(backfill) = state.ongoing_backfills.first().cloned() else {
            break;
        };
        let end = backfill.end_time.as_ref().map(millis).unwrap_or(0);
        let mut t = backfill.start_time.as_ref().map(millis).unwrap_or(0);
        let mut done = true;
        while let Some(next) = spec.next(seed, t) {
            if next.actual > end {
                break;
            }
            if limit == 0 || state.buffered.len() >= MAX_BUFFER / 2 {
                done = false;
                break;
            }
            limit -= 1;
            t = next.actual;
            add_start(
                state,
                next.nominal,
                next.actual,
                backfill.overlap_policy,
                true,
            );
        }
        if done {
            state.ongoing_backfills.remove(0);
        } else if let Some(first) = state.ongoing_backfills.first_mut() {
            first.start_time = Some(from_millis(t));
        }
    }
}

/// Temporal's ProcessBuffer: which buffered starts start now, which wait, which are skipped,
/// and whether running workflows are to be cancelled or terminated.
fn process_buffer(batch: &mut ShardBatch, state: &mut pb::ScheduleState) -> ApplyResult<()> {
    let has_action = state
        .schedule
        .as_ref()
        .and_then(|s| s.action.as_ref())
        .and_then(|a| a.action.as_ref())
        .is_some();
    if !has_action || state.buffered.is_empty() {
        state.buffered.clear();
        return Ok(());
    }
    let running = state
        .info
        .as_ref()
        .is_some_and(|i| !i.running_workflows.is_empty())
        || state.pending.iter().any(|p| p.tracked);
    let buffer = std::mem::take(&mut state.buffered);
    let mut overlapping = Vec::new();
    let mut non_overlapping: Option<pb::ScheduleBufferedStart> = None;
    let mut new_buffer = Vec::new();
    let (mut need_cancel, mut need_terminate) = (false, false);
    // Skipped starts by policy, as Temporal labels them (BufferOne, Skip).
    let (mut skipped_buffer_one, mut skipped_skip) = (0u64, 0u64);
    for start in buffer {
        let policy = resolve(state, start.overlap_policy);
        if policy == ScheduleOverlapPolicy::AllowAll {
            overlapping.push(start);
            continue;
        }
        if !running && non_overlapping.is_none() {
            non_overlapping = Some(start);
            continue;
        }
        match policy {
            ScheduleOverlapPolicy::BufferOne => {
                if new_buffer.is_empty() {
                    new_buffer.push(start);
                } else {
                    skipped_buffer_one += 1;
                }
            }
            ScheduleOverlapPolicy::BufferAll => new_buffer.push(start),
            ScheduleOverlapPolicy::CancelOther => {
                if running {
                    need_cancel = true;
                    new_buffer.push(start);
                } else {
                    non_overlapping = Some(start);
                }
            }
            ScheduleOverlapPolicy::TerminateOther => {
                if running {
                    need_terminate = true;
                    new_buffer.push(start);
                } else {
                    non_overlapping = Some(start);
                }
            }
            // SKIP (and anything unknown).
            _ => skipped_skip += 1,
        }
    }
    let skipped = (skipped_buffer_one + skipped_skip) as i64;
    for (policy, count) in [("BufferOne", skipped_buffer_one), ("Skip", skipped_skip)] {
        metric_defs::observe_schedule(
            &state.namespace_id,
            metric_defs::SCHEDULE_OVERLAP_SKIPPED,
            policy,
            count,
        );
    }
    if need_cancel || need_terminate {
        overlapping.clear();
    }
    info(state).overlap_skipped += skipped;
    state.buffered = new_buffer;
    let mut starts: Vec<(pb::ScheduleBufferedStart, bool)> =
        overlapping.into_iter().map(|s| (s, false)).collect();
    if let Some(s) = non_overlapping {
        starts.push((s, true));
    }
    for (start, tracked) in starts {
        if !can_take(state, start.manual) {
            continue;
        }
        launch(batch, state, start, tracked)?;
    }
    if need_cancel || need_terminate {
        let running: Vec<WorkflowExecution> = state
            .info
            .as_ref()
            .map(|i| i.running_workflows.clone())
            .unwrap_or_default();
        for ex in running {
            batch.put_outbox(&pb::OutboxTask {
                kind: OutboxKind::ScheduleStopWorkflow as i32,
                namespace_id: state.namespace_id.clone(),
                workflow_id: state.schedule_id.clone(),
                target_namespace_id: state.namespace_id.clone(),
                target_workflow_id: ex.workflow_id.clone(),
                target_run_id: ex.run_id.clone(),
                schedule_terminate: need_terminate,
                ..Default::default()
            })?;
        }
    }
    Ok(())
}

/// The ID of the workflow a start creates: the action's, with the nominal time appended.
fn target_workflow_id(state: &pb::ScheduleState, nominal_ms: i64) -> String {
    let base = state
        .schedule
        .as_ref()
        .and_then(|s| s.action.as_ref())
        .and_then(|a| a.action.as_ref())
        .map(|s::schedule_action::Action::StartWorkflow(w)| w.workflow_id.clone())
        .unwrap_or_default();
    if policies(state).keep_original_workflow_id {
        return base;
    }
    format!("{base}-{}", rfc3339_seconds(nominal_ms))
}

/// RFC 3339 in UTC, whole seconds (Go's time.RFC3339 of a UTC time).
pub fn rfc3339_seconds(ms: i64) -> String {
    chrono::DateTime::from_timestamp(ms.div_euclid(1000), 0)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

fn launch(
    batch: &mut ShardBatch,
    state: &mut pb::ScheduleState,
    start: pb::ScheduleBufferedStart,
    tracked: bool,
) -> ApplyResult<()> {
    let nominal_ms = start.nominal_time.as_ref().map(millis).unwrap_or(0);
    let actual_ms = start.actual_time.as_ref().map(millis).unwrap_or(0);
    // Derived from the schedule and the time, so a start retried after a lost answer is the
    // same request (and a start of the same time is never made twice).
    let mut request_id = format!("sched-{}-{nominal_ms}", state.schedule_id);
    if start.manual {
        request_id.push_str(&format!("-manual-{actual_ms}"));
    }
    if state.pending.iter().any(|p| p.request_id == request_id) {
        return Ok(());
    }
    let workflow_id = target_workflow_id(state, nominal_ms);
    state.pending.push(pb::SchedulePendingStart {
        request_id: request_id.clone(),
        workflow_id,
        nominal_time: start.nominal_time,
        actual_time: start.actual_time,
        overlap_policy: resolve(state, start.overlap_policy) as i32,
        manual: start.manual,
        tracked,
        closed_status: 0,
    });
    batch.put_outbox(&pb::OutboxTask {
        kind: OutboxKind::ScheduleStart as i32,
        namespace_id: state.namespace_id.clone(),
        workflow_id: state.schedule_id.clone(),
        schedule_request_id: request_id,
        ..Default::default()
    })?;
    Ok(())
}

/// Keeps one wake-up timer, at the next schedule time after `after_ms`.
fn set_timer(
    batch: &mut ShardBatch,
    state: &mut pb::ScheduleState,
    spec: Option<&CompiledSpec>,
    seed: &str,
    after_ms: i64,
    soon: Option<i64>,
) -> ApplyResult<()> {
    let next = spec.and_then(|s| s.next(seed, after_ms)).map(|n| n.actual);
    let next = match (next, soon) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let current = (!state.timer_key.is_empty())
        .then(|| chronicle_storage::keys::timer_fire_time(&state.timer_key));
    if next == current && (next.is_none() || batch.timer_exists(&state.timer_key)?) {
        return Ok(());
    }
    if !state.timer_key.is_empty() {
        batch.delete_timer(&state.timer_key);
        state.timer_key.clear();
    }
    if let Some(at) = next {
        state.timer_key = batch.put_timer(
            at,
            &pb::TimerTask {
                kind: TimerKind::Schedule as i32,
                namespace_id: state.namespace_id.clone(),
                workflow_id: state.schedule_id.clone(),
                ..Default::default()
            },
        )?;
    }
    Ok(())
}

/// The schedule's wake-up timer fired.
pub fn fire(
    batch: &mut ShardBatch,
    now: Timestamp,
    key: &[u8],
    task: &pb::TimerTask,
) -> ApplyResult<()> {
    let Some(mut state) = batch.schedule(&task.namespace_id, &task.workflow_id)? else {
        return Ok(());
    };
    if state.timer_key == key {
        state.timer_key.clear();
    }
    process(batch, &mut state, millis(&now))?;
    batch.put_schedule(&state);
    Ok(())
}

/// The outcome of a start: recorded as an action (and a running workflow), the row deleted.
pub fn record_start_outcome(
    batch: &mut ShardBatch,
    now: Timestamp,
    c: cmd::RecordScheduleStartOutcome,
) -> ApplyResult<command_result::Result> {
    batch.delete_outbox(c.outbox_id as u64);
    let Some(mut state) = batch.schedule(&c.namespace_id, &c.schedule_id)? else {
        return Ok(crate::apply::ok());
    };
    let Some(pos) = state
        .pending
        .iter()
        .position(|p| p.request_id == c.request_id)
    else {
        return Ok(crate::apply::ok());
    };
    let pending = state.pending.remove(pos);
    if !c.run_id.is_empty() {
        let closed = pending.closed_status != 0;
        let result = s::ScheduleActionResult {
            schedule_time: pending.actual_time,
            actual_time: c.start_time.or(Some(now)),
            start_workflow_result: Some(WorkflowExecution {
                workflow_id: pending.workflow_id.clone(),
                run_id: c.run_id.clone(),
            }),
            start_workflow_status: if closed {
                pending.closed_status
            } else {
                WorkflowExecutionStatus::Running as i32
            },
        };
        let i = info(&mut state);
        i.action_count += 1;
        i.recent_actions.push(result);
        let excess = i.recent_actions.len().saturating_sub(RECENT_ACTIONS);
        i.recent_actions.drain(..excess);
        if pending.tracked && !closed {
            i.running_workflows.push(WorkflowExecution {
                workflow_id: pending.workflow_id,
                run_id: c.run_id,
            });
        }
    }
    process(batch, &mut state, millis(&now))?;
    batch.put_schedule(&state);
    Ok(crate::apply::ok())
}

/// A workflow the schedule started closed: no longer running; its result (or failure) goes to
/// the next start; pause-on-failure.
pub fn record_workflow_closed(
    batch: &mut ShardBatch,
    now: Timestamp,
    c: cmd::RecordScheduleWorkflowClosed,
) -> ApplyResult<command_result::Result> {
    let Some(mut state) = batch.schedule(&c.namespace_id, &c.schedule_id)? else {
        return Ok(crate::apply::ok());
    };
    // A close that overtook the start's outcome.
    for p in state
        .pending
        .iter_mut()
        .filter(|p| p.workflow_id == c.workflow_id)
    {
        p.closed_status = c.status;
    }
    let mut was_tracked = false;
    {
        let i = info(&mut state);
        if let Some(pos) = i
            .running_workflows
            .iter()
            .position(|e| e.workflow_id == c.workflow_id)
        {
            i.running_workflows.remove(pos);
            was_tracked = true;
        }
        for a in i.recent_actions.iter_mut().filter(|a| {
            a.start_workflow_result
                .as_ref()
                .is_some_and(|r| r.workflow_id == c.workflow_id)
        }) {
            a.start_workflow_status = c.status;
        }
    }
    let status = WorkflowExecutionStatus::try_from(c.status).unwrap_or_default();
    let failed = matches!(
        status,
        WorkflowExecutionStatus::Failed | WorkflowExecutionStatus::TimedOut
    );
    let paused = state
        .schedule
        .as_ref()
        .and_then(|s| s.state.as_ref())
        .is_some_and(|s| s.paused);
    if policies(&state).pause_on_failure && failed && !paused {
        let notes = if status == WorkflowExecutionStatus::Failed {
            format!(
                "paused due to workflow failure: {}: {}",
                c.workflow_id,
                c.failure.as_ref().map(|f| f.message.as_str()).unwrap_or("")
            )
        } else {
            format!("paused due to workflow timeout: {}", c.workflow_id)
        };
        let st = sched_state(&mut state);
        st.paused = true;
        st.notes = notes;
        state.conflict_token = state.conflict_token.saturating_add(1);
    }
    if was_tracked {
        if c.result.is_some() {
            state.last_completion_result = c.result;
            state.continued_failure = None;
        } else if c.failure.is_some() {
            state.continued_failure = c.failure;
        }
    }
    process(batch, &mut state, millis(&now))?;
    batch.put_schedule(&state);
    Ok(crate::apply::ok())
}

/// A run closed: if a schedule started its chain and the chain ends here, report the close.
pub fn on_close(
    batch: &mut ShardBatch,
    ms: &crate::mutable_state::MutableState,
    continues: bool,
) -> ApplyResult<Option<u64>> {
    let Some(by) = ms.state.scheduled_by.as_ref() else {
        return Ok(None);
    };
    if continues {
        return Ok(None);
    }
    let id = batch.put_outbox(&pb::OutboxTask {
        kind: OutboxKind::ScheduleWorkflowClosed as i32,
        namespace_id: ms.state.namespace_id.clone(),
        workflow_id: ms.state.workflow_id.clone(),
        run_id: ms.state.run_id.clone(),
        target_namespace_id: by.namespace_id.clone(),
        target_workflow_id: by.schedule_id.clone(),
        ..Default::default()
    })?;
    Ok(Some(id))
}

/// Future action times for describe and list: the next `n` after the last processed time,
/// not before the last update, no more than the remaining actions.
pub fn future_action_times(state: &pb::ScheduleState, n: usize) -> Vec<Timestamp> {
    let Some(spec) = compiled(state) else {
        return Vec::new();
    };
    let mut n = n;
    if let Some(st) = state.schedule.as_ref().and_then(|s| s.state.as_ref())
        && st.limited_actions
    {
        n = n.min(usize::try_from(st.remaining_actions.max(0)).unwrap_or(0));
    }
    let update_ms = state
        .info
        .as_ref()
        .and_then(|i| i.update_time.as_ref())
        .map(millis);
    let seed = jitter_seed(state);
    let mut t = state.last_processed_time.as_ref().map(millis).unwrap_or(0);
    let mut out = Vec::new();
    let mut looked = 0;
    while out.len() < n && looked < 10_000 {
        looked += 1;
        let Some(next) = spec.next(&seed, t) else {
            break;
        };
        t = next.actual;
        if update_ms.is_some_and(|u| u > next.actual) {
            continue;
        }
        out.push(from_millis(next.actual));
    }
    out
}
