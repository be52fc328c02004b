//! ListWorkflowExecutions and CountWorkflowExecutions on the shards of this node: the query
//! (already checked by the frontend) is parsed again against the namespace's search attributes
//! the request carries, every run of the namespace is tested, and the page after the request's
//! token is kept in list order (`chronicle_visibility::order`). Runs are read one at a time and
//! at most two pages of them are held.
//!
//! Candidates come from the cheapest fitting source (see [`plan`]): a filter that pins the
//! workflow ID (`WorkflowId = 'x'` or `WorkflowId IN (...)` among its top-level AND terms)
//! reads only those workflows' runs, on their shards (the `executions` key begins with the
//! workflow ID); otherwise a visibility index (`chronicle_storage::visibility`) is read in list
//! order: by a custom attribute's value, a slice of its values (`IN`, ranges, a keyword
//! prefix), the workflow type or the status when top-level AND terms allow (the one with the
//! fewest rows on each shard, see [`terms`]), else every run, limited to the slice that
//! top-level StartTime and CloseTime bounds allow. An index read stops once a shard has given a
//! page's worth of matches after the token, and a count whose filter is an index's own exact
//! terms and time bounds (or none) counts index rows without reading runs.

mod terms;

use std::collections::BTreeMap;

use chronicle_proto::chronicle::history::v1 as hpb;
use chronicle_proto::chronicle::persistence::v1::WorkflowExecutionState;
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use chronicle_types::{ApiError, ApiResult};
use chronicle_visibility::eval;
use chronicle_visibility::order::SortKey;

use chronicle_storage::visibility::{IndexedRun, ListPosition, TimeRange, VisIndex};
use chronicle_visibility::attrs::Value;
use chronicle_visibility::query::{CmpOp, Expr};

use crate::engine::{HistoryEngine, Shard};
use crate::read::{self, storage};

/// Page size when the request names none (Temporal's default for visibility pages).
const DEFAULT_PAGE_SIZE: usize = 1000;

pub(crate) fn list(
    engine: &HistoryEngine,
    request: hpb::ListWorkflowsRequest,
) -> ApiResult<hpb::ListWorkflowsResponse> {
    let activities = request.standalone_activities;
    let query = if activities {
        chronicle_visibility::query::parse_for_activities(
            &request.query,
            &request.search_attribute_types,
        )
    } else {
        chronicle_visibility::parse(&request.query, &request.search_attribute_types)
    }
    .map_err(ApiError::invalid_argument)?;
    // Standalone activities share the tables with runs: each list sees only its own kind, and
    // an activity's filter sees its ID where a run's sees the workflow ID.
    let kind_matches =
        |workflow_id: &str| chronicle_types::standalone_activity::is_key(workflow_id) == activities;
    let matches = |state: &WorkflowExecutionState| {
        if !kind_matches(&state.workflow_id) {
            return false;
        }
        match chronicle_types::standalone_activity::activity_id(&state.workflow_id) {
            Some(id) => {
                let mut view = state.clone();
                view.workflow_id = id.to_string();
                eval::matches(&query, &view)
            }
            None => eval::matches(&query, state),
        }
    };
    let after = if request.next_page_token.is_empty() {
        None
    } else {
        Some(SortKey::decode(&request.next_page_token).map_err(ApiError::invalid_argument)?)
    };
    let namespace_id = request.namespace_id.as_str();
    let mut scans = plan(engine, namespace_id, &query, activities, request.count_only)?;
    if !request.shards.is_empty() {
        // A router's scatter: each shard is asked of its leader, whose state holds every write
        // acknowledged so far (a follower may still be applying).
        for id in &request.shards {
            engine.check_leader(engine.shard_by_id(*id)?.as_ref())?;
        }
        scans.retain(|(shard, _)| request.shards.contains(&shard.id));
    }
    if request.count_only {
        let mut count = 0i64;
        let mut status_counts = BTreeMap::<i32, i64>::new();
        let mut tally = |status: i32| {
            count = count.saturating_add(1);
            let n = status_counts.entry(status).or_default();
            *n = n.saturating_add(1);
        };
        for (shard, scan) in &scans {
            match scan {
                // The index row alone answers: its filter is the index's own term, or none.
                Scan::Index(index, range, true) => {
                    for_each_indexed(shard, namespace_id, index, range, None, None, |run| {
                        if kind_matches(run.workflow_id) {
                            tally(run.status);
                        }
                        Ok(true)
                    })?;
                }
                _ => for_each_run(shard, namespace_id, scan, None, None, |state| {
                    if matches(&state) {
                        tally(state.status);
                    }
                    Ok(true)
                })?,
            }
        }
        return Ok(hpb::ListWorkflowsResponse {
            count,
            status_counts,
            ..Default::default()
        });
    }
    let page_size = match request.page_size as usize {
        0 => DEFAULT_PAGE_SIZE,
        n => n,
    };
    // The page_size + 1 first runs after the token (one more tells whether a next page exists).
    let keep = page_size.saturating_add(1);
    let mut rows: Vec<(SortKey, WorkflowExecutionState)> = Vec::new();
    for (shard, scan) in &scans {
        let mut found = 0usize;
        for_each_run(
            shard,
            namespace_id,
            scan,
            after.as_ref(),
            Some(keep),
            |state| {
                if !matches(&state) {
                    return Ok(true);
                }
                let key = SortKey::of_state(&state);
                if after.as_ref().is_some_and(|a| key <= *a) {
                    return Ok(true);
                }
                rows.push((key, state));
                found += 1;
                if matches!(scan, Scan::Index(..)) {
                    // An index yields runs in list order: this shard's part of the page is complete.
                    return Ok(found < keep);
                }
                if rows.len() >= keep.saturating_mul(2) {
                    rows.sort_by(|a, b| a.0.cmp(&b.0));
                    rows.truncate(keep);
                }
                Ok(true)
            },
        )?;
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        rows.truncate(keep);
    }
    let more = rows.len() > page_size;
    rows.truncate(page_size);
    let next_page_token = match rows.last() {
        Some((key, _)) if more => key.encode(),
        _ => Vec::new(),
    };
    let count = rows.len() as i64;
    Ok(hpb::ListWorkflowsResponse {
        executions: rows
            .iter()
            .map(|(_, state)| ws::DescribeWorkflowExecutionResponse {
                workflow_execution_info: read::describe(state).workflow_execution_info,
                ..Default::default()
            })
            .collect(),
        next_page_token,
        count,
        ..Default::default()
    })
}

/// How a shard's candidate runs are read.
enum Scan {
    /// The runs of one workflow ID (any order).
    Workflow(String),
    /// A visibility index, in list order, limited to a range of start and close times; `true`
    /// when the index's term and the range are the whole filter.
    Index(VisIndex, TimeRange, bool),
}

fn position(key: &SortKey) -> ListPosition {
    ListPosition {
        close: key.close,
        start: key.start,
        run_id: key.run_id.clone(),
    }
}

fn for_each_indexed(
    shard: &Shard,
    namespace_id: &str,
    index: &VisIndex,
    range: &TimeRange,
    after: Option<&SortKey>,
    page_hint: Option<usize>,
    mut visit: impl FnMut(IndexedRun<'_>) -> ApiResult<bool>,
) -> ApiResult<()> {
    let mut failed = None;
    chronicle_storage::visibility::for_each(
        shard.tables.db(),
        shard.tables.shard(),
        namespace_id,
        index,
        after.map(position).as_ref(),
        range,
        page_hint,
        |run| match visit(run) {
            Ok(go_on) => go_on,
            Err(e) => {
                failed = Some(e);
                false
            }
        },
    )
    .map_err(storage)?;
    failed.map_or(Ok(()), Err)
}

/// Visits the candidate runs of `scan` (after `after`, for an index) until `visit` answers
/// false.
fn for_each_run(
    shard: &Shard,
    namespace_id: &str,
    scan: &Scan,
    after: Option<&SortKey>,
    page_hint: Option<usize>,
    mut visit: impl FnMut(WorkflowExecutionState) -> ApiResult<bool>,
) -> ApiResult<()> {
    match scan {
        Scan::Workflow(workflow_id) => {
            let mut failed = None;
            shard
                .tables
                .for_each_execution(namespace_id, Some(workflow_id), |state| {
                    match visit(state) {
                        Ok(go_on) => go_on,
                        Err(e) => {
                            failed = Some(e);
                            false
                        }
                    }
                })
                .map_err(storage)?;
            failed.map_or(Ok(()), Err)
        }
        Scan::Index(index, range, _) => {
            for_each_indexed(shard, namespace_id, index, range, after, page_hint, |run| {
                match shard
                    .tables
                    .execution(namespace_id, run.workflow_id, run.run_id)
                    .map_err(storage)?
                {
                    Some(state) => visit(state),
                    // (Not possible: rows are written with their run; skipped rather than trusted.)
                    None => Ok(true),
                }
            })
        }
    }
}

/// What to read on which shard: only the pinned workflows' runs on their shards when a top-level
/// AND term fixes the workflow ID, else on every shard the index that fits top-level AND terms
/// with the fewest rows there ([`terms::choose`]), else the index of every run.
fn plan(
    engine: &HistoryEngine,
    namespace_id: &str,
    query: &chronicle_visibility::ParsedQuery,
    activities: bool,
    count_only: bool,
) -> ApiResult<Vec<(std::sync::Arc<Shard>, Scan)>> {
    if let Some(ids) = query.filter.as_ref().and_then(pinned_workflow_ids) {
        let mut ids: Vec<String> = ids
            .into_iter()
            .map(|id| {
                if activities {
                    chronicle_types::standalone_activity::key(&id)
                } else {
                    id
                }
            })
            .collect();
        ids.sort();
        ids.dedup();
        return Ok(ids
            .into_iter()
            .map(|id| (engine.shard_of(namespace_id, &id), Scan::Workflow(id)))
            .collect());
    }
    let mut filter_terms = Vec::new();
    if let Some(expr) = &query.filter {
        and_terms(expr, &mut filter_terms);
    }
    let candidates = terms::candidates(&filter_terms);
    let mut scans = Vec::with_capacity(engine.num_shards() as usize);
    for shard in engine.shards.iter() {
        let cap = if count_only {
            terms::COUNT_ESTIMATE_CAP
        } else {
            terms::PAGE_ESTIMATE_CAP
        };
        let chosen = terms::choose(&candidates, cap, |index, cap| {
            chronicle_storage::visibility::estimate(
                shard.tables.db(),
                shard.tables.shard(),
                namespace_id,
                index,
                cap,
            )
            .map_err(storage)
        })?;
        scans.push((shard, index_scan(&filter_terms, chosen)));
    }
    Ok(scans)
}

/// The read of `chosen` (none: the index of every run) for a filter's top-level AND terms,
/// within their time bounds; whole when every term is answered exactly by the index's rows or
/// is a time bound that the range applies exactly.
fn index_scan(filter_terms: &[&Expr], chosen: Option<&terms::Candidate>) -> Scan {
    let mut range = TimeRange::default();
    let mut whole = true;
    for (i, term) in filter_terms.iter().enumerate() {
        let served = chosen.is_some_and(|c| c.exact && c.terms.contains(&i));
        if !narrow(&mut range, term) && !served {
            whole = false;
        }
    }
    let index = chosen.map_or(VisIndex::All, |c| c.index.clone());
    Scan::Index(index, range, whole)
}

/// The top-level AND terms of a filter.
fn and_terms<'e>(expr: &'e Expr, out: &mut Vec<&'e Expr>) {
    match expr {
        Expr::And(a, b) => {
            and_terms(a, out);
            and_terms(b, out);
        }
        other => out.push(other),
    }
}

/// Narrows `range` by a filter term on StartTime or CloseTime; false (and `range` untouched)
/// for any other term. Strict bounds become inclusive ones a nanosecond inside, the precision
/// of the stored times.
fn narrow(range: &mut TimeRange, term: &Expr) -> bool {
    let (attr, min, max) = match term {
        Expr::Cmp(attr, op, Value::Time(t)) => {
            let t = *t;
            let (min, max) = match op {
                CmpOp::Eq => (Some(t), Some(t)),
                CmpOp::Gt => (Some(t.saturating_add(1)), None),
                CmpOp::Ge => (Some(t), None),
                CmpOp::Lt => (None, Some(t.saturating_sub(1))),
                CmpOp::Le => (None, Some(t)),
                CmpOp::Ne => return false,
            };
            (attr, min, max)
        }
        Expr::Between(attr, Value::Time(a), Value::Time(b), false) => (attr, Some(*a), Some(*b)),
        _ => return false,
    };
    if attr.source != chronicle_visibility::attrs::Source::Core {
        return false;
    }
    let (lower, upper) = match attr.name.as_str() {
        "StartTime" => (&mut range.start_min, &mut range.start_max),
        "CloseTime" => (&mut range.close_min, &mut range.close_max),
        _ => return false,
    };
    if let Some(min) = min {
        *lower = Some(lower.map_or(min, |l| l.max(min)));
    }
    if let Some(max) = max {
        *upper = Some(upper.map_or(max, |u| u.min(max)));
    }
    true
}

/// The workflow IDs a filter limits runs to, if a top-level AND term does.
fn pinned_workflow_ids(expr: &Expr) -> Option<Vec<String>> {
    let strings = |values: &[Value]| -> Option<Vec<String>> {
        values
            .iter()
            .map(|v| match v {
                Value::Str(s) => Some(s.clone()),
                _ => None,
            })
            .collect()
    };
    match expr {
        Expr::Cmp(attr, CmpOp::Eq, value) if attr.name == "WorkflowId" => {
            strings(std::slice::from_ref(value))
        }
        Expr::In(attr, values, false) if attr.name == "WorkflowId" => strings(values),
        Expr::And(a, b) => pinned_workflow_ids(a).or_else(|| pinned_workflow_ids(b)),
        _ => None,
    }
}

#[cfg(test)]
mod exactness_tests;

#[cfg(test)]
mod tests {
    use super::*;

    fn pinned(query: &str) -> Option<Vec<String>> {
        let parsed = chronicle_visibility::parse(query, &Default::default()).unwrap();
        parsed.filter.as_ref().and_then(pinned_workflow_ids)
    }

    #[test]
    fn only_filters_that_pin_the_workflow_id_narrow_the_scan() {
        assert_eq!(pinned("WorkflowId = 'a'"), Some(vec!["a".to_string()]));
        assert_eq!(
            pinned("TaskQueue = 'q' AND (WorkflowId IN ('a', 'b'))"),
            Some(vec!["a".to_string(), "b".to_string()])
        );
        assert_eq!(pinned("WorkflowId = 'a' OR TaskQueue = 'q'"), None);
        assert_eq!(pinned("NOT WorkflowId = 'a'"), None);
        assert_eq!(pinned("WorkflowId NOT IN ('a')"), None);
        assert_eq!(pinned("WorkflowId STARTS_WITH 'a'"), None);
        assert_eq!(pinned(""), None);
    }
}
