//! Evaluation of a resolved filter against a run's state, with SQL's three-valued logic: a
//! comparison with a missing (null) attribute is unknown, `NOT unknown` is unknown, and a run
//! matches only when the filter is true (as Temporal's SQL visibility answers).

use std::cmp::Ordering;

use chronicle_proto::chronicle::persistence::v1::WorkflowExecutionState;
use chronicle_proto::temporal::api::enums::v1::WorkflowExecutionStatus;

use crate::attrs::{self, SaType, Source, Value};
use crate::query::{Attr, CmpOp, Expr, ParsedQuery};

pub fn nanos(ts: &chronicle_proto::wkt::Timestamp) -> i64 {
    let n = i128::from(ts.seconds) * 1_000_000_000 + i128::from(ts.nanos);
    i64::try_from(n).unwrap_or(if n < 0 { i64::MIN } else { i64::MAX })
}

fn is_open(state: &WorkflowExecutionState) -> bool {
    state.status == WorkflowExecutionStatus::Running as i32
        || state.status == WorkflowExecutionStatus::Unspecified as i32
}

/// The close time of a closed run (nanoseconds since the epoch).
pub fn close_time(state: &WorkflowExecutionState) -> Option<i64> {
    if is_open(state) {
        return None;
    }
    state.close_time.as_ref().map(nanos)
}

/// The value of `attr` for a run (`None`: null).
pub fn attribute(state: &WorkflowExecutionState, attr: &Attr) -> Option<Value> {
    if attr.source == Source::Core {
        return core(state, &attr.name);
    }
    let payload = state
        .search_attributes
        .as_ref()?
        .indexed_fields
        .get(&attr.name)?;
    match attrs::decode(payload, attr.ty).ok()? {
        Some(Value::List(items)) if items.is_empty() => None,
        other => other,
    }
}

fn core(state: &WorkflowExecutionState, name: &str) -> Option<Value> {
    let start = state.start_time.as_ref().map(nanos);
    Some(match name {
        "WorkflowId" => Value::Str(state.workflow_id.clone()),
        "RunId" => Value::Str(state.run_id.clone()),
        "WorkflowType" => Value::Str(state.workflow_type.as_ref()?.name.clone()),
        "ExecutionStatus" => Value::Int(i64::from(state.status)),
        "StartTime" => Value::Time(start?),
        "CloseTime" => Value::Time(close_time(state)?),
        "ExecutionTime" => Value::Time(state.execution_time.as_ref().map(nanos).or(start)?),
        "ExecutionDuration" => {
            let close = close_time(state)?;
            let from = state.execution_time.as_ref().map(nanos).or(start)?;
            Value::Int(close.saturating_sub(from).max(0))
        }
        "TaskQueue" => Value::Str(state.task_queue.clone()),
        // Written to Temporal's visibility record when the run closes (null while open).
        "HistoryLength" if !is_open(state) => {
            Value::Int(state.next_event_id.saturating_sub(1).max(0))
        }
        "HistorySizeBytes" if !is_open(state) => Value::Int(state.history_size_bytes),
        "StateTransitionCount" if !is_open(state) => Value::Int(state.state_transition_count),
        "ParentWorkflowId" => Value::Str(
            state
                .parent
                .as_ref()?
                .execution
                .as_ref()?
                .workflow_id
                .clone(),
        ),
        "ParentRunId" => Value::Str(state.parent.as_ref()?.execution.as_ref()?.run_id.clone()),
        "RootWorkflowId" => Value::Str(match &state.root_execution {
            Some(root) => root.workflow_id.clone(),
            None => state.workflow_id.clone(),
        }),
        "RootRunId" => Value::Str(match &state.root_execution {
            Some(root) => root.run_id.clone(),
            None => state.run_id.clone(),
        }),
        _ => return None,
    })
}

fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Str(a), Value::Str(b)) => Some(a.as_bytes().cmp(b.as_bytes())),
        (Value::Int(a), Value::Int(b)) => Some(a.cmp(b)),
        (Value::Int(a), Value::Double(b)) => (*a as f64).partial_cmp(b),
        (Value::Double(a), Value::Int(b)) => a.partial_cmp(&(*b as f64)),
        (Value::Double(a), Value::Double(b)) => a.partial_cmp(b),
        (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
        (Value::Time(a), Value::Time(b)) => Some(a.cmp(b)),
        _ => None,
    }
}

fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| w.to_lowercase())
        .collect()
}

/// Full-text match of a Text attribute: every word of the query is a word of the value.
fn text_match(value: &str, query: &str) -> bool {
    let have = words(value);
    let want = words(query);
    !want.is_empty() && want.iter().all(|w| have.contains(w))
}

fn cmp_holds(op: CmpOp, o: Ordering) -> bool {
    match op {
        CmpOp::Eq => o == Ordering::Equal,
        CmpOp::Ne => o != Ordering::Equal,
        CmpOp::Lt => o == Ordering::Less,
        CmpOp::Le => o != Ordering::Greater,
        CmpOp::Gt => o == Ordering::Greater,
        CmpOp::Ge => o != Ordering::Less,
    }
}

fn list_contains(value: &Option<Value>, wanted: &Value) -> Option<bool> {
    match (value, wanted) {
        (Some(Value::List(items)), Value::Str(w)) => Some(items.iter().any(|i| i == w)),
        _ => None,
    }
}

/// Evaluates `expr` for a run: `Some(true)`, `Some(false)` or unknown (`None`).
pub fn eval(expr: &Expr, state: &WorkflowExecutionState) -> Option<bool> {
    match expr {
        Expr::And(a, b) => match (eval(a, state), eval(b, state)) {
            (Some(false), _) | (_, Some(false)) => Some(false),
            (Some(true), Some(true)) => Some(true),
            _ => None,
        },
        Expr::Or(a, b) => match (eval(a, state), eval(b, state)) {
            (Some(true), _) | (_, Some(true)) => Some(true),
            (Some(false), Some(false)) => Some(false),
            _ => None,
        },
        Expr::Not(a) => eval(a, state).map(|b| !b),
        Expr::IsNull(attr, negated) => Some(attribute(state, attr).is_none() != *negated),
        Expr::Cmp(attr, op, wanted) => {
            let value = attribute(state, attr);
            match attr.ty {
                SaType::KeywordList => {
                    let contains = list_contains(&value, wanted);
                    match op {
                        CmpOp::Eq => contains,
                        // A list that lacks the value, or no list at all.
                        _ => Some(!contains.unwrap_or(false)),
                    }
                }
                SaType::Text => match (&value?, wanted) {
                    (Value::Str(v), Value::Str(w)) => {
                        let m = text_match(v, w);
                        Some(if *op == CmpOp::Eq { m } else { !m })
                    }
                    _ => None,
                },
                _ => compare(&value?, wanted).map(|o| cmp_holds(*op, o)),
            }
        }
        Expr::In(attr, values, negated) => {
            let value = attribute(state, attr);
            if attr.ty == SaType::KeywordList {
                let any = values
                    .iter()
                    .any(|w| list_contains(&value, w).unwrap_or(false));
                return Some(any != *negated);
            }
            let value = value?;
            let any = values
                .iter()
                .any(|w| compare(&value, w) == Some(Ordering::Equal));
            Some(any != *negated)
        }
        Expr::Between(attr, lo, hi, negated) => {
            let value = attribute(state, attr)?;
            let inside =
                compare(&value, lo)? != Ordering::Less && compare(&value, hi)? != Ordering::Greater;
            Some(inside != *negated)
        }
        Expr::StartsWith(attr, prefix, negated) => match attribute(state, attr)? {
            Value::Str(s) => Some(s.starts_with(prefix.as_str()) != *negated),
            _ => None,
        },
    }
}

/// Whether a run matches a parsed query.
pub fn matches(query: &ParsedQuery, state: &WorkflowExecutionState) -> bool {
    match &query.filter {
        None => true,
        Some(expr) => eval(expr, state) == Some(true),
    }
}
