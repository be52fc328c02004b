//! Resolution of the raw syntax tree against the namespace's search attributes into a typed
//! [`Expr`], with Temporal's errors for unknown attributes and unsupported operators.

use super::parser::{Lit, Pred, Raw};
use super::{Attr, CmpOp, Expr, QueryResult, parse_duration, status_from_name};
use crate::attrs::{self, Registry, SaType, Value};

pub(super) fn resolve(raw: Raw, registry: &Registry) -> QueryResult<Expr> {
    Ok(match raw {
        Raw::And(a, b) => Expr::And(
            Box::new(resolve(*a, registry)?),
            Box::new(resolve(*b, registry)?),
        ),
        Raw::Or(a, b) => Expr::Or(
            Box::new(resolve(*a, registry)?),
            Box::new(resolve(*b, registry)?),
        ),
        Raw::Not(a) => Expr::Not(Box::new(resolve(*a, registry)?)),
        Raw::Pred(name, pred) => predicate(name, pred, registry)?,
    })
}

fn unsupported_op(op: &str, attr: &Attr) -> String {
    format!(
        "operation is not supported: operator '{op}' not supported for {} type search attribute '{}'",
        attr.ty.name(),
        attr.name
    )
}

fn predicate(name: String, pred: Pred, registry: &Registry) -> QueryResult<Expr> {
    let Some((ty, source)) = attrs::lookup(registry, &name) else {
        return Err(format!("invalid search attribute: {name}"));
    };
    let attr = Attr { name, ty, source };
    Ok(match pred {
        Pred::Like(negated) => {
            return Err(unsupported_op(
                if negated { "NOT LIKE" } else { "LIKE" },
                &attr,
            ));
        }
        Pred::IsNull(negated) => Expr::IsNull(attr, negated),
        Pred::Cmp(op, lit) => {
            let value = convert(&attr, lit)?;
            match attr.ty {
                SaType::Text | SaType::KeywordList if !matches!(op, CmpOp::Eq | CmpOp::Ne) => {
                    return Err(unsupported_op(op.text(), &attr));
                }
                _ => {}
            }
            Expr::Cmp(attr, op, value)
        }
        Pred::In(lits, negated) => {
            let mut values = Vec::with_capacity(lits.len());
            for lit in lits {
                values.push(convert(&attr, lit)?);
            }
            if attr.ty == SaType::Text {
                return Err(unsupported_op(if negated { "NOT IN" } else { "IN" }, &attr));
            }
            Expr::In(attr, values, negated)
        }
        Pred::Between(lo, hi, negated) => {
            if matches!(attr.ty, SaType::Text | SaType::KeywordList) {
                return Err(format!(
                    "invalid expression: cannot do range condition on search attribute '{}' of type {}",
                    attr.name,
                    attr.ty.name()
                ));
            }
            let lo = convert(&attr, lo)?;
            let hi = convert(&attr, hi)?;
            Expr::Between(attr, lo, hi, negated)
        }
        Pred::StartsWith(lit, negated) => {
            let value = convert(&attr, lit)?;
            let op = if negated {
                "NOT STARTS_WITH"
            } else {
                "STARTS_WITH"
            };
            match (attr.ty, value) {
                (SaType::Keyword, Value::Str(prefix)) => Expr::StartsWith(attr, prefix, negated),
                _ => return Err(unsupported_op(op, &attr)),
            }
        }
    })
}

fn go_type(lit: &Lit) -> &'static str {
    match lit {
        Lit::Str(_) => "string",
        Lit::Int(_) => "int64",
        Lit::Float(_) => "float64",
        Lit::Bool(_) => "bool",
    }
}

fn go_show(lit: &Lit) -> String {
    match lit {
        Lit::Str(s) => format!("{s:?}"),
        Lit::Int(n) => n.to_string(),
        Lit::Float(f) => f.to_string(),
        Lit::Bool(b) => b.to_string(),
    }
}

/// A literal as a value of the attribute's type.
fn convert(attr: &Attr, lit: Lit) -> QueryResult<Value> {
    let wrong = |lit: &Lit| {
        Err(format!(
            "invalid expression: invalid value type for search attribute {} of type {}: {} (type: {})",
            attr.name,
            attr.ty.name(),
            go_show(lit),
            go_type(lit)
        ))
    };
    if attr.name == "ExecutionStatus" {
        return match lit {
            Lit::Str(s) => status_from_name(&s)
                .map(|s| Value::Int(i64::from(s)))
                .ok_or_else(|| format!("invalid expression: invalid ExecutionStatus value '{s}'")),
            Lit::Int(n) => Ok(Value::Int(n)),
            other => wrong(&other),
        };
    }
    if attr.name == "ExecutionDuration" {
        return match lit {
            Lit::Str(s) => parse_duration(&s).map(Value::Int).ok_or_else(|| {
                format!(
                    "invalid expression: invalid duration value for search attribute ExecutionDuration: {s}"
                )
            }),
            Lit::Int(n) => Ok(Value::Int(n)),
            other => Err(format!(
                "invalid expression: unexpected value type {} for search attribute ExecutionDuration",
                go_type(&other)
            )),
        };
    }
    match (attr.ty, lit) {
        (SaType::Keyword | SaType::Text | SaType::KeywordList, Lit::Str(s)) => Ok(Value::Str(s)),
        (SaType::Int, Lit::Int(n)) => Ok(Value::Int(n)),
        (SaType::Int | SaType::Double, Lit::Float(f)) => Ok(Value::Double(f)),
        (SaType::Double, Lit::Int(n)) => Ok(Value::Double(n as f64)),
        (SaType::Bool, Lit::Bool(b)) => Ok(Value::Bool(b)),
        (SaType::Datetime, Lit::Str(s)) => attrs::parse_datetime(&s)
            .map(Value::Time)
            .ok_or_else(|| format!("invalid expression: unable to parse datetime '{s}'")),
        (SaType::Datetime, Lit::Int(n)) => Ok(Value::Time(n)),
        (_, other) => wrong(&other),
    }
}
