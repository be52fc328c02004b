//! Which visibility index can answer which top-level AND terms of a filter, and the choice among
//! them: the index with the fewest rows (counted up to a cap on each shard), a single value or
//! status or type index before a slice of values when the counts tie (they are read in list
//! order, so a page stops early).

use std::collections::BTreeMap;
use std::ops::Bound;

use chronicle_storage::visibility::{Kind, Scalar, Slice, VisIndex};
use chronicle_visibility::attrs::{SaType, Source, Value};
use chronicle_visibility::query::{Attr, CmpOp, Expr};

/// Rows counted at most per candidate index when several fit, for a page (which a list-ordered
/// index gives after about a page of rows whatever its size) and for a count (which reads every
/// row of the index it picks); past this, the preference order decides.
pub(super) const PAGE_ESTIMATE_CAP: usize = 2_048;
pub(super) const COUNT_ESTIMATE_CAP: usize = 65_536;

/// An index that holds every run some top-level AND terms can match.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Candidate {
    pub index: VisIndex,
    /// The rows hold exactly the runs the terms match (a count of them reads no run).
    pub exact: bool,
    /// The positions of those terms among the AND terms.
    pub terms: Vec<usize>,
    /// The preference when row counts tie (higher first).
    rank: u8,
}

/// The kind of index-3 row an attribute's values are read from (Text has none: a word match
/// is no slice of values).
fn kind_of(attr: &Attr) -> Option<Kind> {
    if attr.source == Source::Core {
        return None;
    }
    Some(match attr.ty {
        SaType::Keyword | SaType::KeywordList => Kind::Keyword,
        SaType::Int => Kind::Int,
        SaType::Double => Kind::Double,
        SaType::Bool => Kind::Bool,
        SaType::Datetime => Kind::Datetime,
        SaType::Text => return None,
    })
}

/// A literal as a row value of `kind`, when it compares with the attribute's values as that
/// value does with the rows' (an Int attribute against a fractional literal: see [`bounds`]).
fn scalar(kind: Kind, value: &Value) -> Option<Scalar> {
    Some(match (kind, value) {
        (Kind::Keyword, Value::Str(s)) => Scalar::Keyword(s.clone()),
        (Kind::Int, Value::Int(n)) => Scalar::Int(*n),
        (Kind::Double, Value::Double(f)) if !f.is_nan() => Scalar::Double(*f),
        (Kind::Double, Value::Int(n)) => Scalar::Double(*n as f64),
        (Kind::Bool, Value::Bool(b)) => Scalar::Bool(*b),
        (Kind::Datetime, Value::Time(t)) => Scalar::Datetime(*t),
        _ => return None,
    })
}

type Bounds = (Bound<Scalar>, Bound<Scalar>);

/// The range terms of one attribute: its kind, their lower and upper bounds, their positions.
type RangeTerms = (Kind, Vec<Bound<Scalar>>, Vec<Bound<Scalar>>, Vec<usize>);

/// The values of `kind` that `value op literal` holds for, as lower and upper bounds.
fn bounds(kind: Kind, op: CmpOp, literal: &Value) -> Option<Bounds> {
    use Bound::{Excluded, Included, Unbounded};
    if let (Kind::Int, Value::Double(f)) = (kind, literal) {
        // An Int compares as a float with a fractional literal: integer bounds answer it
        // exactly while the literal is well inside f64's exact integers.
        if f.is_nan() || f.abs() >= (1u64 << 52) as f64 {
            return None;
        }
        let (floor, ceil) = (f.floor() as i64, f.ceil() as i64);
        let at_least = |n: i64| (Included(Scalar::Int(n)), Unbounded);
        let at_most = |n: i64| (Unbounded, Included(Scalar::Int(n)));
        return Some(match op {
            CmpOp::Eq if floor == ceil => {
                (Included(Scalar::Int(floor)), Included(Scalar::Int(floor)))
            }
            // No Int equals a fractional number: an empty slice.
            CmpOp::Eq => (Included(Scalar::Int(ceil)), Excluded(Scalar::Int(ceil))),
            CmpOp::Gt => at_least(floor + 1),
            CmpOp::Ge => at_least(ceil),
            CmpOp::Lt => at_most(ceil - 1),
            CmpOp::Le => at_most(floor),
            CmpOp::Ne => return None,
        });
    }
    let v = scalar(kind, literal)?;
    Some(match op {
        CmpOp::Eq => (Included(v.clone()), Included(v)),
        CmpOp::Gt => (Excluded(v), Unbounded),
        CmpOp::Ge => (Included(v), Unbounded),
        CmpOp::Lt => (Unbounded, Excluded(v)),
        CmpOp::Le => (Unbounded, Included(v)),
        CmpOp::Ne => return None,
    })
}

fn range_slice((lower, upper): Bounds) -> Slice {
    Slice::Range {
        lower: vec![lower],
        upper: vec![upper],
    }
}

/// The candidate indexes of a filter's top-level AND terms. Range terms on one attribute
/// (`<`, `<=`, `>`, `>=`, `BETWEEN`) make one candidate together: the slice within all of them.
pub(super) fn candidates(terms: &[&Expr]) -> Vec<Candidate> {
    let mut out = Vec::new();
    // Attribute -> (kind, lower bounds, upper bounds, terms).
    let mut ranges: BTreeMap<&str, RangeTerms> = BTreeMap::new();
    for (i, term) in terms.iter().enumerate() {
        let single = |index: VisIndex, exact: bool, rank: u8| Candidate {
            index,
            exact,
            terms: vec![i],
            rank,
        };
        match term {
            Expr::Cmp(attr, CmpOp::Eq, Value::Int(status))
                if attr.source == Source::Core && attr.name == "ExecutionStatus" =>
            {
                if let Ok(status) = i32::try_from(*status) {
                    out.push(single(VisIndex::Status(status), true, 3));
                }
            }
            Expr::Cmp(attr, CmpOp::Eq, Value::Str(name))
                if attr.source == Source::Core && attr.name == "WorkflowType" =>
            {
                out.push(single(VisIndex::WorkflowType(name.clone()), true, 4));
            }
            Expr::Cmp(attr, op, literal) => {
                let Some(kind) = kind_of(attr) else { continue };
                if *op == CmpOp::Eq {
                    // Keyword rows are a superset (each item of a list, long values cut).
                    let exact = kind != Kind::Keyword;
                    let index = match scalar(kind, literal) {
                        Some(value) => VisIndex::Value {
                            attribute: attr.name.clone(),
                            value,
                        },
                        None => match bounds(kind, CmpOp::Eq, literal) {
                            Some(b) => VisIndex::Values {
                                attribute: attr.name.clone(),
                                kind,
                                slices: vec![range_slice(b)],
                            },
                            None => continue,
                        },
                    };
                    out.push(single(index, exact, 5));
                } else if attr.ty != SaType::KeywordList
                    && let Some((lower, upper)) = bounds(kind, *op, literal)
                {
                    let entry = ranges
                        .entry(attr.name.as_str())
                        .or_insert_with(|| (kind, Vec::new(), Vec::new(), Vec::new()));
                    entry.1.push(lower);
                    entry.2.push(upper);
                    entry.3.push(i);
                }
            }
            Expr::Between(attr, lo, hi, false) if attr.ty != SaType::KeywordList => {
                let Some(kind) = kind_of(attr) else { continue };
                let (Some((lower, _)), Some((_, upper))) =
                    (bounds(kind, CmpOp::Ge, lo), bounds(kind, CmpOp::Le, hi))
                else {
                    continue;
                };
                let entry = ranges
                    .entry(attr.name.as_str())
                    .or_insert_with(|| (kind, Vec::new(), Vec::new(), Vec::new()));
                entry.1.push(lower);
                entry.2.push(upper);
                entry.3.push(i);
            }
            Expr::In(attr, literals, false) => {
                let Some(kind) = kind_of(attr) else { continue };
                let slices: Option<Vec<Slice>> = literals
                    .iter()
                    .map(|l| bounds(kind, CmpOp::Eq, l).map(range_slice))
                    .collect();
                let Some(mut slices) = slices else { continue };
                slices.dedup();
                out.push(single(
                    VisIndex::Values {
                        attribute: attr.name.clone(),
                        kind,
                        slices,
                    },
                    kind != Kind::Keyword,
                    2,
                ));
            }
            Expr::StartsWith(attr, prefix, false)
                if attr.ty == SaType::Keyword && kind_of(attr).is_some() =>
            {
                let index = VisIndex::Values {
                    attribute: attr.name.clone(),
                    kind: Kind::Keyword,
                    slices: vec![Slice::Prefix(prefix.clone())],
                };
                out.push(single(index, false, 2));
            }
            _ => {}
        }
    }
    for (attribute, (kind, lower, upper, terms)) in ranges {
        out.push(Candidate {
            index: VisIndex::Values {
                attribute: attribute.to_string(),
                kind,
                slices: vec![Slice::Range { lower, upper }],
            },
            exact: kind != Kind::Keyword,
            terms,
            rank: 1,
        });
    }
    out
}

/// The candidate with the fewest rows on a shard (`count` counts an index's rows up to a cap),
/// by preference among those past `cap` rows or equal.
pub(super) fn choose<E>(
    candidates: &[Candidate],
    cap: usize,
    mut count: impl FnMut(&VisIndex, usize) -> Result<usize, E>,
) -> Result<Option<&Candidate>, E> {
    if candidates.len() <= 1 {
        return Ok(candidates.first());
    }
    let mut by_rank: Vec<&Candidate> = candidates.iter().collect();
    by_rank.sort_by_key(|c| std::cmp::Reverse(c.rank));
    let mut best: Option<(&Candidate, usize)> = None;
    for candidate in by_rank {
        let cap = best.map_or(cap, |(_, n)| n);
        if cap == 0 {
            break;
        }
        let n = count(&candidate.index, cap)?;
        if best.is_none_or(|(_, b)| n < b) {
            best = Some((candidate, n));
        }
    }
    Ok(best.map(|(c, _)| c))
}
