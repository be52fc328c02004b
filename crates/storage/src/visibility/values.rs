//! Index 3 of the `visibility` family: a row per search-attribute value, keyed by the attribute,
//! the kind the value was read as and the value in an order-preserving encoding, so equality,
//! `IN`, ranges and (for keywords) prefixes read only their slice:
//!
//! | kind | value bytes |
//! |---|---|
//! | 0 Keyword | the string's first [`MAX_INDEXED_VALUE_BYTES`] bytes, `00` escaped as `00 ff`, then `00 01` |
//! | 1 Int | i64, sign bit flipped, big-endian |
//! | 2 Double | f64 bits, all flipped when negative, else the sign bit flipped (IEEE total order; `-0` stored as `0`) |
//! | 3 Bool | `0` or `1` |
//! | 4 Datetime | nanoseconds since the epoch as an Int |
//!
//! Rows come from the run alone (the namespace's registry, which says an attribute's type, is
//! not part of the shard's state): a value gets a row of every kind it decodes as, with the same
//! decoding a query's evaluation uses (`chronicle_visibility::attrs::decode_json`). So the Int
//! rows of an attribute registered as Int are exactly its runs whose value evaluates as an Int,
//! at that value (and likewise Double, Bool, Datetime), and a range of rows answers a range term
//! exactly. Keyword rows are a superset (each string of a list, long strings cut to their first
//! bytes), so a reader evaluates the term again on what they yield.

use std::collections::{BinaryHeap, HashSet};
use std::ops::Bound;

use chronicle_proto::chronicle::persistence::v1 as pb;
use chronicle_visibility::attrs::{SaType, Value};

use crate::db::{Cf, Db};
use crate::error::StorageResult;
use crate::keys::{self, KeyBuf, ShardId};

use super::{BY_VALUE, IndexedRun, ListPosition, TimeRange};

/// Longest keyword prefix a row holds: a longer value's row holds its first this many bytes
/// (a reader evaluates the term again, so a cut value still answers equality, ranges and
/// prefixes with a superset).
pub const MAX_INDEXED_VALUE_BYTES: usize = 256;

/// The kind a value is indexed as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Keyword,
    Int,
    Double,
    Bool,
    Datetime,
}

impl Kind {
    fn tag(self) -> u8 {
        match self {
            Kind::Keyword => 0,
            Kind::Int => 1,
            Kind::Double => 2,
            Kind::Bool => 3,
            Kind::Datetime => 4,
        }
    }
}

/// A value of an index-3 row.
#[derive(Clone, Debug, PartialEq)]
pub enum Scalar {
    Keyword(String),
    Int(i64),
    Double(f64),
    Bool(bool),
    /// Nanoseconds since the epoch.
    Datetime(i64),
}

impl Scalar {
    pub fn kind(&self) -> Kind {
        match self {
            Scalar::Keyword(_) => Kind::Keyword,
            Scalar::Int(_) => Kind::Int,
            Scalar::Double(_) => Kind::Double,
            Scalar::Bool(_) => Kind::Bool,
            Scalar::Datetime(_) => Kind::Datetime,
        }
    }

    /// Whether rows of this encoding may hold longer values (a keyword of the longest length a
    /// row holds, or longer, has the encoding of every value that starts with it).
    fn is_cut(&self) -> bool {
        matches!(self, Scalar::Keyword(s) if s.len() >= MAX_INDEXED_VALUE_BYTES)
    }

    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Scalar::Keyword(s) => {
                escape(&s.as_bytes()[..s.len().min(MAX_INDEXED_VALUE_BYTES)], out);
                out.extend_from_slice(&[0, 1]);
            }
            Scalar::Int(n) | Scalar::Datetime(n) => {
                out.extend_from_slice(&((*n as u64) ^ (1 << 63)).to_be_bytes())
            }
            Scalar::Double(f) => {
                // -0 and 0 compare equal in a query: one encoding for both.
                let f = if *f == 0.0 { 0.0 } else { *f };
                let bits = f.to_bits();
                let ordered = if bits >> 63 == 1 {
                    !bits
                } else {
                    bits | (1 << 63)
                };
                out.extend_from_slice(&ordered.to_be_bytes());
            }
            Scalar::Bool(b) => out.push(u8::from(*b)),
        }
    }
}

fn escape(bytes: &[u8], out: &mut Vec<u8>) {
    for b in bytes {
        out.push(*b);
        if *b == 0 {
            out.push(0xff);
        }
    }
}

/// A set of values of one kind.
#[derive(Clone, Debug, PartialEq)]
pub enum Slice {
    /// The values within every one of these lower and upper bounds (none: unbounded).
    Range {
        lower: Vec<Bound<Scalar>>,
        upper: Vec<Bound<Scalar>>,
    },
    /// Keyword values that start with this.
    Prefix(String),
}

impl Slice {
    /// One value.
    pub fn value(v: Scalar) -> Self {
        Slice::Range {
            lower: vec![Bound::Included(v.clone())],
            upper: vec![Bound::Included(v)],
        }
    }

    /// The keys of the slice's rows after `base` (the attribute and kind): from `start` on,
    /// before `end` (`None`: to the end of the kind).
    fn bytes(&self) -> (Vec<u8>, Option<Vec<u8>>) {
        let encoded = |v: &Scalar| {
            let mut out = Vec::new();
            v.encode(&mut out);
            out
        };
        match self {
            Slice::Prefix(p) => {
                let mut start = Vec::new();
                escape(
                    &p.as_bytes()[..p.len().min(MAX_INDEXED_VALUE_BYTES)],
                    &mut start,
                );
                let end = (!start.is_empty()).then(|| keys::prefix_end(&start));
                (start, end)
            }
            Slice::Range { lower, upper } => {
                let mut start = Vec::new();
                for bound in lower {
                    let from = match bound {
                        Bound::Unbounded => Vec::new(),
                        Bound::Included(v) => encoded(v),
                        // A cut keyword's row may hold a longer value above the bound.
                        Bound::Excluded(v) if v.is_cut() => encoded(v),
                        Bound::Excluded(v) => keys::prefix_end(&encoded(v)),
                    };
                    start = start.max(from);
                }
                let mut end: Option<Vec<u8>> = None;
                for bound in upper {
                    let to = match bound {
                        Bound::Unbounded => continue,
                        Bound::Excluded(v) if !v.is_cut() => encoded(v),
                        Bound::Included(v) | Bound::Excluded(v) => keys::prefix_end(&encoded(v)),
                    };
                    end = Some(end.map_or(to.clone(), |e| e.min(to)));
                }
                (start, end)
            }
        }
    }
}

fn base(shard: ShardId, namespace_id: &str, attribute: &str, kind: Kind) -> Vec<u8> {
    KeyBuf::shard(shard)
        .str(namespace_id)
        .u8(BY_VALUE)
        .str(attribute)
        .u8(kind.tag())
        .build()
}

/// The key prefix of the rows of runs whose `attribute` holds `value`.
pub(super) fn value_prefix(
    shard: ShardId,
    namespace_id: &str,
    attribute: &str,
    value: &Scalar,
) -> Vec<u8> {
    let mut key = base(shard, namespace_id, attribute, value.kind());
    value.encode(&mut key);
    key
}

/// The value-row prefixes of a run, sorted and distinct.
pub(super) fn prefixes(shard: ShardId, state: &pb::WorkflowExecutionState) -> Vec<Vec<u8>> {
    use serde_json::Value as J;
    let mut out = Vec::new();
    let Some(attrs) = &state.search_attributes else {
        return out;
    };
    for (name, payload) in &attrs.indexed_fields {
        let Ok(json) = serde_json::from_slice::<J>(&payload.data) else {
            continue;
        };
        let mut push = |v: Scalar| out.push(value_prefix(shard, &state.namespace_id, name, &v));
        match &json {
            J::String(s) => push(Scalar::Keyword(s.clone())),
            J::Array(items) => {
                for item in items {
                    if let J::String(s) = item {
                        push(Scalar::Keyword(s.clone()));
                    }
                }
            }
            _ => {}
        }
        for ty in [SaType::Int, SaType::Double, SaType::Bool, SaType::Datetime] {
            match chronicle_visibility::attrs::decode_json(&json, ty) {
                Ok(Some(Value::Int(n))) => push(Scalar::Int(n)),
                Ok(Some(Value::Double(f))) => push(Scalar::Double(f)),
                Ok(Some(Value::Bool(b))) => push(Scalar::Bool(b)),
                Ok(Some(Value::Time(t))) => push(Scalar::Datetime(t)),
                _ => {}
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The length of the encoded value at the start of `rest`.
fn value_len(kind: Kind, rest: &[u8]) -> usize {
    match kind {
        Kind::Int | Kind::Double | Kind::Datetime => 8,
        Kind::Bool => 1,
        Kind::Keyword => {
            let mut i = 0;
            while i + 1 < rest.len() {
                if rest[i] == 0 {
                    if rest[i + 1] == 1 {
                        return i + 2;
                    }
                    i += 2;
                } else {
                    i += 1;
                }
            }
            rest.len()
        }
    }
}

/// A row of a slice: its list-order bytes and its value (status and workflow ID).
type Entry = (Vec<u8>, Vec<u8>);

/// Reads the rows of `slices` (values of `kind` of `attribute`) within `range` and after
/// `after`. With `page_hint` (how many rows the caller expects to take), rows are visited in
/// list order: each round keeps the first rows of the slices after the last one visited (a
/// bounded heap, so memory follows the page, not the slice) and doubles for the next round.
/// Without it rows come in key order (for counts), once each.
#[allow(clippy::too_many_arguments)]
pub(super) fn for_each(
    db: &Db,
    shard: ShardId,
    namespace_id: &str,
    attribute: &str,
    kind: Kind,
    slices: &[Slice],
    after: Option<&ListPosition>,
    range: &TimeRange,
    page_hint: Option<usize>,
    mut visit: impl FnMut(IndexedRun<'_>) -> bool,
) -> StorageResult<()> {
    let base = base(shard, namespace_id, attribute, kind);
    let mut cursor = after.map(|p| {
        let mut order = Vec::new();
        super::order_bytes(&mut order, p);
        order
    });
    let Some(hint) = page_hint else {
        let mut seen = HashSet::new();
        return scan(db, &base, kind, slices, range, cursor.as_deref(), |e| {
            if slices.len() > 1 && !seen.insert(e.0.clone()) {
                return true;
            }
            visit(super::indexed_run(&e.0, &e.1))
        });
    };
    let mut batch = hint.clamp(64, 1 << 20);
    loop {
        // The `batch` first rows in list order after the cursor (a max-heap of the kept ones).
        let mut kept: BinaryHeap<Entry> = BinaryHeap::new();
        scan(db, &base, kind, slices, range, cursor.as_deref(), |e| {
            if kept.len() < batch {
                kept.push(e);
            } else if kept.peek().is_some_and(|top| e.0 < top.0) {
                kept.pop();
                kept.push(e);
            }
            true
        })?;
        let full = kept.len() == batch;
        let mut rows = kept.into_sorted_vec();
        // A run with several values in the slices (a keyword list) has a row per value.
        rows.dedup_by(|a, b| a.0 == b.0);
        for (order, value) in &rows {
            if !visit(super::indexed_run(order, value)) {
                return Ok(());
            }
        }
        match rows.pop() {
            Some((last, _)) if full => cursor = Some(last),
            _ => return Ok(()),
        }
        batch = batch.saturating_mul(2).min(1 << 20);
    }
}

/// Visits every row of `slices` within `range` whose order bytes come after `after`, in key
/// order, until `visit` answers false.
fn scan(
    db: &Db,
    base: &[u8],
    kind: Kind,
    slices: &[Slice],
    range: &TimeRange,
    after: Option<&[u8]>,
    mut visit: impl FnMut(Entry) -> bool,
) -> StorageResult<()> {
    let mut iter = db.prefix_iterator(Cf::Visibility, base);
    for slice in slices {
        let (start, end) = slice.bytes();
        let mut from = base.to_vec();
        from.extend_from_slice(&start);
        let end = end.map(|e| {
            let mut key = base.to_vec();
            key.extend_from_slice(&e);
            key
        });
        iter.seek(&from);
        while let (Some(k), Some(v)) = (iter.key(), iter.value()) {
            if !k.starts_with(base) || end.as_deref().is_some_and(|e| k >= e) {
                break;
            }
            let rest = &k[base.len()..];
            let order = &rest[value_len(kind, rest).min(rest.len())..];
            let (close, start) = super::order_times(order);
            let in_range = range.holds(start, close);
            if in_range && after.is_none_or(|a| order > a) && !visit((order.to_vec(), v.to_vec())) {
                return Ok(iter.status()?);
            }
            iter.next();
        }
        iter.status()?;
    }
    Ok(())
}

/// The number of rows of `slices`, counted up to `cap`.
pub(super) fn estimate(
    db: &Db,
    shard: ShardId,
    namespace_id: &str,
    attribute: &str,
    kind: Kind,
    slices: &[Slice],
    cap: usize,
) -> StorageResult<usize> {
    let base = base(shard, namespace_id, attribute, kind);
    let mut n = 0usize;
    scan(db, &base, kind, slices, &TimeRange::default(), None, |_| {
        n += 1;
        n < cap
    })?;
    Ok(n)
}
