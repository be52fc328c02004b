//! The schedule calls of `HistoryService`: changes are proposed on the schedule's shard, reads
//! come from the shard's tables (list: every shard this node holds).

use chronicle_proto::chronicle::history::v1::{
    self as cmd, command_result, schedule_command::Op as CmdOp, schedule_request::Op,
    schedule_response::Op as RespOp, shard_command::Kind,
};
use chronicle_proto::chronicle::persistence::v1 as pb;
use chronicle_proto::temporal::api::schedule::v1 as s;
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use chronicle_types::time::{from_millis, millis};
use chronicle_types::{ApiError, ApiResult};

use super::apply::{self, FUTURE_ACTIONS};
use crate::engine::HistoryEngine;
use crate::read::storage;

const LIST_FUTURE_ACTIONS: usize = 5;
const LIST_RECENT_ACTIONS: usize = 5;
const MAX_MATCHING_TIMES: usize = 1000;
/// How long DescribeSchedule waits for starts handed to the outbox to be made.
const DESCRIBE_WAITS_FOR_STARTS: std::time::Duration = std::time::Duration::from_secs(3);

fn required(id: &str) -> ApiResult<()> {
    if id.is_empty() {
        return Err(ApiError::invalid_argument("ScheduleId is not set."));
    }
    Ok(())
}

/// DescribeSchedule's answer from the stored state.
pub fn describe(state: &pb::ScheduleState) -> ws::DescribeScheduleResponse {
    let mut info = state.info.clone().unwrap_or_default();
    info.future_action_times = apply::future_action_times(state, FUTURE_ACTIONS);
    // Starts handed to the outbox and not yet made count as buffered: until their outcome is
    // recorded they are neither an action nor a running workflow.
    info.buffer_size = (state.buffered.len() + state.pending.len()) as i64;
    ws::DescribeScheduleResponse {
        schedule: state.schedule.clone(),
        info: Some(info),
        memo: state.memo.clone(),
        search_attributes: state.search_attributes.clone(),
        conflict_token: apply::encode_token(state.conflict_token),
    }
}

fn list_entry(state: &pb::ScheduleState) -> s::ScheduleListEntry {
    let mut spec = state
        .schedule
        .as_ref()
        .and_then(|s| s.spec.clone())
        .unwrap_or_default();
    spec.timezone_data.clear();
    let sched_state = state
        .schedule
        .as_ref()
        .and_then(|s| s.state.clone())
        .unwrap_or_default();
    let recent = state
        .info
        .as_ref()
        .map(|i| i.recent_actions.clone())
        .unwrap_or_default();
    let skip = recent.len().saturating_sub(LIST_RECENT_ACTIONS);
    s::ScheduleListEntry {
        schedule_id: state.schedule_id.clone(),
        memo: state.memo.clone(),
        search_attributes: state.search_attributes.clone(),
        info: Some(s::ScheduleListInfo {
            spec: Some(spec),
            workflow_type: state
                .schedule
                .as_ref()
                .and_then(|s| s.action.as_ref())
                .and_then(|a| match &a.action {
                    Some(s::schedule_action::Action::StartWorkflow(w)) => w.workflow_type.clone(),
                    None => None,
                }),
            notes: sched_state.notes,
            paused: sched_state.paused,
            recent_actions: recent.into_iter().skip(skip).collect(),
            future_action_times: apply::future_action_times(state, LIST_FUTURE_ACTIONS),
            state_size_bytes: 0,
        }),
    }
}

impl HistoryEngine {
    async fn schedule_command(
        &self,
        namespace_id: &str,
        schedule_id: &str,
        op: CmdOp,
    ) -> ApiResult<pb::ScheduleState> {
        required(schedule_id)?;
        let shard = &self.shard_of(namespace_id, schedule_id);
        let result = self
            .propose(
                shard,
                Kind::Schedule(cmd::ScheduleCommand {
                    namespace_id: namespace_id.to_string(),
                    op: Some(op),
                }),
            )
            .await?;
        match result {
            command_result::Result::Schedule(r) => Ok(r.state.unwrap_or_default()),
            _ => Err(ApiError::internal("unexpected schedule result")),
        }
    }

    /// Every schedule call of WorkflowService.
    pub(crate) async fn schedule_op(
        &self,
        namespace_id: &str,
        request: cmd::ScheduleRequest,
    ) -> ApiResult<cmd::ScheduleResponse> {
        let only_shards = request.shards;
        let op = request
            .op
            .ok_or_else(|| ApiError::invalid_argument("schedule request without an operation"))?;
        let answer = match op {
            Op::Create(r) => {
                let id = r.schedule_id.clone();
                let state = self
                    .schedule_command(namespace_id, &id, CmdOp::Create(r))
                    .await?;
                RespOp::Create(ws::CreateScheduleResponse {
                    conflict_token: apply::encode_token(state.conflict_token),
                })
            }
            Op::Update(r) => {
                let id = r.schedule_id.clone();
                self.schedule_command(namespace_id, &id, CmdOp::Update(r))
                    .await?;
                RespOp::Update(ws::UpdateScheduleResponse::default())
            }
            Op::Patch(r) => {
                let id = r.schedule_id.clone();
                self.schedule_command(namespace_id, &id, CmdOp::Patch(r))
                    .await?;
                RespOp::Patch(ws::PatchScheduleResponse::default())
            }
            Op::Delete(r) => {
                let id = r.schedule_id.clone();
                self.schedule_command(namespace_id, &id, CmdOp::Delete(r))
                    .await?;
                RespOp::Delete(ws::DeleteScheduleResponse::default())
            }
            Op::Describe(r) => {
                required(&r.schedule_id)?;
                let shard = &self.shard_of(namespace_id, &r.schedule_id);
                let deadline = tokio::time::Instant::now() + DESCRIBE_WAITS_FOR_STARTS;
                let state = loop {
                    self.check_leader(shard)?;
                    let state = shard
                        .tables
                        .schedule(namespace_id, &r.schedule_id)
                        .map_err(storage)?
                        .ok_or_else(|| apply::not_found(&r.schedule_id))?;
                    // A start already decided (triggered, or due) but not yet made on its
                    // workflow's shard is neither an action nor a running workflow yet. As
                    // Temporal's describe (a query the scheduler answers once it has acted),
                    // wait for it briefly, so a describe right after a trigger shows the action.
                    if state.pending.is_empty() || tokio::time::Instant::now() >= deadline {
                        break state;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                };
                RespOp::Describe(describe(&state))
            }
            Op::MatchingTimes(r) => {
                required(&r.schedule_id)?;
                let shard = &self.shard_of(namespace_id, &r.schedule_id);
                self.check_leader(shard)?;
                let state = shard
                    .tables
                    .schedule(namespace_id, &r.schedule_id)
                    .map_err(storage)?
                    .ok_or_else(|| apply::not_found(&r.schedule_id))?;
                let (Some(start), Some(end)) = (r.start_time.as_ref(), r.end_time.as_ref()) else {
                    return Err(ApiError::invalid_argument("missing or invalid query"));
                };
                let end = millis(end);
                let mut out = Vec::new();
                if let Some(spec) = apply::compiled(&state) {
                    let seed = apply::jitter_seed(&state);
                    let mut t = millis(start);
                    while out.len() < MAX_MATCHING_TIMES {
                        let Some(next) = spec.next(&seed, t) else {
                            break;
                        };
                        if next.actual > end {
                            break;
                        }
                        t = next.actual;
                        out.push(from_millis(next.actual));
                    }
                }
                RespOp::MatchingTimes(ws::ListScheduleMatchingTimesResponse { start_time: out })
            }
            Op::List(r) => {
                // Every shard this node holds (every node holds every shard), as one list in
                // schedule ID order; the page token is the last ID of the previous page.
                let mut all = Vec::new();
                // A router's scatter asks each shard of its leader (see `list_workflows`).
                for id in &only_shards {
                    self.check_leader(self.shard_by_id(*id)?.as_ref())?;
                }
                let shards = self
                    .shards
                    .iter()
                    .filter(|s| only_shards.is_empty() || only_shards.contains(&s.id));
                for shard in shards {
                    for state in shard.tables.schedules().map_err(storage)? {
                        if state.namespace_id == namespace_id {
                            all.push(state);
                        }
                    }
                }
                all.sort_by(|a, b| a.schedule_id.cmp(&b.schedule_id));
                let after = String::from_utf8_lossy(&r.next_page_token).into_owned();
                let page = if r.maximum_page_size > 0 {
                    r.maximum_page_size as usize
                } else {
                    1000
                };
                let filtered: Vec<&pb::ScheduleState> = all
                    .iter()
                    .filter(|s| after.is_empty() || s.schedule_id > after)
                    .filter(|s| matches_query(s, &r.query))
                    .collect();
                let more = filtered.len() > page;
                let entries: Vec<s::ScheduleListEntry> =
                    filtered.iter().take(page).map(|s| list_entry(s)).collect();
                let next_page_token = if more {
                    entries
                        .last()
                        .map(|e| e.schedule_id.clone().into_bytes())
                        .unwrap_or_default()
                } else {
                    Vec::new()
                };
                RespOp::List(ws::ListSchedulesResponse {
                    schedules: entries,
                    next_page_token,
                })
            }
        };
        Ok(cmd::ScheduleResponse { op: Some(answer) })
    }
}

/// The list queries schedules take: none, `ScheduleId = '...'`, `TemporalSchedulePaused = bool`
/// (anything else lists every schedule).
fn matches_query(state: &pb::ScheduleState, query: &str) -> bool {
    let q = query.trim();
    if q.is_empty() {
        return true;
    }
    let Some((field, value)) = q.split_once('=') else {
        return true;
    };
    let value = value.trim().trim_matches(|c| c == '\'' || c == '"');
    match field.trim() {
        "ScheduleId" => state.schedule_id == value,
        "TemporalSchedulePaused" => {
            let paused = state
                .schedule
                .as_ref()
                .and_then(|s| s.state.as_ref())
                .is_some_and(|s| s.paused);
            paused == value.eq_ignore_ascii_case("true")
        }
        _ => true,
    }
}
