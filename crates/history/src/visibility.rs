//! ListWorkflowExecutions and CountWorkflowExecutions on the shards of this node: the query
//! (already checked by the frontend) is parsed again against the namespace's search attributes
//! the request carries, every run of the namespace is tested, and the page after the request's
//! token is kept in list order (`chronicle_visibility::order`). Runs are read one at a time and
//! at most two pages of them are held.
//!
//! A filter that pins the workflow ID (`WorkflowId = 'x'` or `WorkflowId IN (...)` among its
//! top-level AND terms) reads only those workflows' runs, on their shards (the `executions` key
//! begins with the workflow ID); any other filter reads every run of the namespace. No
//! secondary indexes yet (issue 14 section 3).

use std::collections::BTreeMap;

use chronicle_proto::chronicle::history::v1 as hpb;
use chronicle_proto::chronicle::persistence::v1::WorkflowExecutionState;
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use chronicle_types::{ApiError, ApiResult};
use chronicle_visibility::eval;
use chronicle_visibility::order::SortKey;

use crate::engine::{HistoryEngine, Shard};
use crate::read::{self, storage};

/// Page size when the request names none (Temporal's default for visibility pages).
const DEFAULT_PAGE_SIZE: usize = 1000;

pub(crate) fn list(
    engine: &HistoryEngine,
    request: hpb::ListWorkflowsRequest,
) -> ApiResult<hpb::ListWorkflowsResponse> {
    let query = chronicle_visibility::parse(&request.query, &request.search_attribute_types)
        .map_err(ApiError::invalid_argument)?;
    let after = if request.next_page_token.is_empty() {
        None
    } else {
        Some(SortKey::decode(&request.next_page_token).map_err(ApiError::invalid_argument)?)
    };
    let namespace_id = request.namespace_id.as_str();
    let scans = plan(engine, namespace_id, &query);
    if request.count_only {
        let mut count = 0i64;
        let mut status_counts = BTreeMap::<i32, i64>::new();
        for (shard, workflow_id) in &scans {
            shard
                .tables
                .for_each_execution(namespace_id, workflow_id.as_deref(), |state| {
                    if eval::matches(&query, &state) {
                        count = count.saturating_add(1);
                        let n = status_counts.entry(state.status).or_default();
                        *n = n.saturating_add(1);
                    }
                    true
                })
                .map_err(storage)?;
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
    for (shard, workflow_id) in &scans {
        shard
            .tables
            .for_each_execution(namespace_id, workflow_id.as_deref(), |state| {
                if !eval::matches(&query, &state) {
                    return true;
                }
                let key = SortKey::of_state(&state);
                if after.as_ref().is_some_and(|a| key <= *a) {
                    return true;
                }
                rows.push((key, state));
                if rows.len() >= keep.saturating_mul(2) {
                    rows.sort_by(|a, b| a.0.cmp(&b.0));
                    rows.truncate(keep);
                }
                true
            })
            .map_err(storage)?;
    }
    rows.sort_by(|a, b| a.0.cmp(&b.0));
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

/// The key ranges to read: `(shard, Some(workflow ID))` for a filter that pins the workflow ID,
/// else every shard's runs of the namespace.
fn plan<'a>(
    engine: &'a HistoryEngine,
    namespace_id: &str,
    query: &chronicle_visibility::ParsedQuery,
) -> Vec<(&'a std::sync::Arc<Shard>, Option<String>)> {
    if let Some(ids) = query.filter.as_ref().and_then(pinned_workflow_ids) {
        let mut ids: Vec<String> = ids.into_iter().collect();
        ids.sort();
        ids.dedup();
        return ids
            .into_iter()
            .map(|id| (engine.shard_of(namespace_id, &id), Some(id)))
            .collect();
    }
    engine.shards.iter().map(|s| (s, None)).collect()
}

/// The workflow IDs a filter limits runs to, if a top-level AND term does.
fn pinned_workflow_ids(expr: &chronicle_visibility::query::Expr) -> Option<Vec<String>> {
    use chronicle_visibility::attrs::Value;
    use chronicle_visibility::query::{CmpOp, Expr};
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
