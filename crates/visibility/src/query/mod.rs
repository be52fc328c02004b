//! Temporal's visibility query language: a tokenizer, a recursive-descent parser into a raw
//! syntax tree, and resolution of that tree against the namespace's search attributes into a
//! typed [`Expr`]. Errors are InvalidArgument messages worded as Temporal's SQL visibility words
//! them (`invalid query: malformed SQL query: syntax error at position N`, `invalid query:
//! invalid search attribute: X`, `invalid query: invalid expression: ...`, `invalid query:
//! operation is not supported: ...`).
//!
//! Grammar (keywords case-insensitive, attribute names case-sensitive):
//!
//! ```text
//! query      := [or] [GROUP BY name] [ORDER BY ...] [LIMIT n] [';']
//! or         := and (OR and)*
//! and        := not (AND not)*
//! not        := NOT not | '(' or ')' | predicate
//! predicate  := name op value | name [NOT] IN '(' value (',' value)* ')'
//!             | name [NOT] BETWEEN value AND value | name IS [NOT] NULL
//!             | name [NOT] STARTS_WITH value | name [NOT] LIKE value
//! name       := identifier | `backquoted`
//! value      := 'string' | "string" | [-|+] number | TRUE | FALSE
//! ```
//!
//! ORDER BY and LIMIT parse but are refused, as Temporal's SQL visibility refuses them.

mod parser;
mod resolve;
mod tokens;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use crate::attrs::{self, Registry, SaType, Source, Value};

use parser::{Raw, RawQuery, parse_raw};
use resolve::resolve;

/// The text Temporal wraps a query in before parsing it; syntax error positions count it.
const SQL_PREFIX_LEN: usize = "select * from table1 where ".len();

pub type QueryResult<T> = Result<T, String>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    fn text(self) -> &'static str {
        match self {
            CmpOp::Eq => "=",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }
}

/// A resolved attribute of a predicate.
#[derive(Clone, Debug, PartialEq)]
pub struct Attr {
    pub name: String,
    pub ty: SaType,
    pub source: Source,
}

/// A typed filter.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Cmp(Attr, CmpOp, Value),
    In(Attr, Vec<Value>, bool),
    Between(Attr, Value, Value, bool),
    StartsWith(Attr, String, bool),
    IsNull(Attr, bool),
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct ParsedQuery {
    pub filter: Option<Expr>,
    /// `GROUP BY ExecutionStatus` (the only grouping there is).
    pub group_by_status: bool,
}

/// Parses and resolves `query` against the system attributes and `registry`.
pub fn parse(query: &str, registry: &Registry) -> QueryResult<ParsedQuery> {
    let raw = parse_raw(query).map_err(|e| format!("invalid query: {e}"))?;
    parse_resolved(raw, registry)
}

/// A query of ListActivityExecutions / CountActivityExecutions: `ActivityId` and
/// `ActivityType` name a standalone activity's ID and type, which its record keeps where a
/// run keeps its workflow ID and type (Temporal's business-ID alias), so they resolve to those.
pub fn parse_for_activities(query: &str, registry: &Registry) -> QueryResult<ParsedQuery> {
    let mut raw = parse_raw(query).map_err(|e| format!("invalid query: {e}"))?;
    fn alias(raw: &mut Raw) {
        match raw {
            Raw::And(a, b) | Raw::Or(a, b) => {
                alias(a);
                alias(b);
            }
            Raw::Not(a) => alias(a),
            Raw::Pred(name, _) => match name.as_str() {
                "ActivityId" => *name = "WorkflowId".into(),
                "ActivityType" => *name = "WorkflowType".into(),
                _ => {}
            },
        }
    }
    if let Some(filter) = raw.filter.as_mut() {
        alias(filter);
    }
    parse_resolved(raw, registry)
}

fn parse_resolved(raw: RawQuery, registry: &Registry) -> QueryResult<ParsedQuery> {
    let filter = match raw.filter {
        Some(f) => Some(resolve(f, registry).map_err(|e| format!("invalid query: {e}"))?),
        None => None,
    };
    if let Some(field) = &raw.group_by
        && field != "ExecutionStatus"
    {
        if attrs::lookup(registry, field).is_none() {
            return Err(format!("invalid query: invalid search attribute: {field}"));
        }
        return Err(format!(
            "invalid query: operation is not supported: 'GROUP BY' clause is not supported for search attribute {field}"
        ));
    }
    if raw.order_by {
        return Err("invalid query: operation is not supported: 'ORDER BY' clause".into());
    }
    if raw.limit {
        return Err("invalid query: operation is not supported: 'LIMIT' clause".into());
    }
    Ok(ParsedQuery {
        filter,
        group_by_status: raw.group_by.is_some(),
    })
}

/// `Running`, `Completed`, ... (as visibility names statuses) to the enum's value.
pub fn status_from_name(name: &str) -> Option<i32> {
    (1..=8).find(|s| status_name(*s) == name)
}

pub fn status_name(status: i32) -> &'static str {
    use chronicle_proto::temporal::api::enums::v1::WorkflowExecutionStatus as S;
    match S::try_from(status).unwrap_or(S::Unspecified) {
        S::Running => "Running",
        S::Completed => "Completed",
        S::Failed => "Failed",
        S::Canceled => "Canceled",
        S::Terminated => "Terminated",
        S::ContinuedAsNew => "ContinuedAsNew",
        S::TimedOut => "TimedOut",
        S::Paused => "Paused",
        S::Unspecified => "Unspecified",
    }
}

/// A duration as Temporal's visibility reads it, in nanoseconds: Go's `1h30m`, `1.5s`, `300ms`
/// (plus `d` for days), or `hh:mm:ss`.
pub fn parse_duration(s: &str) -> Option<i64> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if s.contains(':') {
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 3 {
            return None;
        }
        let mut total: i128 = 0;
        for (part, unit) in parts.iter().zip([3600i128, 60, 1]) {
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) || part.len() > 12 {
                return None;
            }
            total += part.parse::<i128>().ok()? * unit * 1_000_000_000;
        }
        return i64::try_from(total).ok();
    }
    let (negative, mut rest) = match s.as_bytes()[0] {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Some(0);
    }
    let mut total: f64 = 0.0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "d" => 86400e9,
            _ => return None,
        };
        rest = &rest[unit_end..];
        total += number * unit;
    }
    if !total.is_finite() || total.abs() > i64::MAX as f64 {
        return None;
    }
    let n = total as i64;
    Some(if negative { -n } else { n })
}
