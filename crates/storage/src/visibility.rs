//! The `visibility` family: secondary indexes over a shard's runs, in list order, written in the
//! same write batch as the run states they describe ([`crate::ShardBatch::commit`] derives them
//! from the `executions` rows the batch writes), so list and count read only the rows of the
//! index that fits a query instead of every run.
//!
//! Key: shard, namespace ID (str), index, then the list order of the run:
//!
//! | index | after the namespace | then |
//! |---|---|---|
//! | 0, every run | `0u8` | order |
//! | 1, by status | `1u8`, status (u8) | order |
//! | 2, by workflow type | `2u8`, type name (str) | order |
//! | 3, by attribute value | `3u8`, attribute name (str), kind (u8), value (see [`values`]) | order |
//!
//! order = open (0) or closed (1) as u8, close time descending (u64, 0 while open), start time
//! descending (u64), run ID (raw bytes, last). That is Temporal's list order (open runs first,
//! then newest close, newest start, run ID), so an index read in key order yields runs in list
//! order and a page stops after its last row. Value: status (u8) and the workflow ID.
//!
//! Index 3 holds a row per search-attribute value and kind it decodes as (Keyword, each string
//! of a KeywordList, Int, Double, Bool, Datetime) in an order-preserving encoding, so a value,
//! a list of values, a range or a keyword prefix is a slice of it ([`values`]). Rows within one
//! value are in list order; a slice of several values is ordered after reading its keys.
//!
//! Each node records the format ([`FORMAT`]) of each shard's rows in its own metadata (outside
//! the group's replicated key range); a shard whose rows are of an older format (or have none)
//! is rebuilt from its runs when the node starts, before its group applies anything.

use prost::Message;

mod values;
pub use values::{Kind, MAX_INDEXED_VALUE_BYTES, Scalar, Slice};

use crate::db::{Cf, Db};
use crate::error::StorageResult;
use crate::keys::{self, KeyBuf, ShardId};
use chronicle_proto::chronicle::persistence::v1 as pb;

const ALL: u8 = 0;
const BY_STATUS: u8 = 1;
const BY_TYPE: u8 = 2;
const BY_VALUE: u8 = 3;

/// The rows' format: 1 had indexes 0 to 2, 2 added index 3 for keywords of at most 256 bytes,
/// 3 made index 3 hold values of every kind, ordered (and keywords cut to 256 bytes).
pub const FORMAT: u32 = 3;

/// Which index to read.
#[derive(Clone, Debug, PartialEq)]
pub enum VisIndex {
    All,
    Status(i32),
    WorkflowType(String),
    /// Runs with a search attribute holding this value (or a keyword list holding it), in list
    /// order.
    Value {
        attribute: String,
        value: Scalar,
    },
    /// Runs with a search attribute holding a value of `kind` within one of `slices`: read
    /// whole (keys only), then visited in list order.
    Values {
        attribute: String,
        kind: Kind,
        slices: Vec<Slice>,
    },
}

/// A run's place in list order: close time (`None` while open) and start time in nanoseconds
/// since the epoch, and the run ID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListPosition {
    pub close: Option<i64>,
    pub start: i64,
    pub run_id: String,
}

fn flip(n: i64) -> u64 {
    (n as u64) ^ (1 << 63)
}

fn nanos(ts: &chronicle_proto::wkt::Timestamp) -> i64 {
    let n = i128::from(ts.seconds) * 1_000_000_000 + i128::from(ts.nanos);
    i64::try_from(n).unwrap_or(if n < 0 { i64::MIN } else { i64::MAX })
}

fn is_open(status: i32) -> bool {
    // WORKFLOW_EXECUTION_STATUS_UNSPECIFIED (0) and RUNNING (1).
    status <= 1
}

/// The fields of a `WorkflowExecutionState` the index rows need (same tags): decoding a stored
/// state into it skips everything else (activities, buffered events, ...) without allocating.
#[derive(Clone, PartialEq, prost::Message)]
struct IndexedFields {
    #[prost(string, tag = "1")]
    namespace_id: String,
    #[prost(string, tag = "2")]
    workflow_id: String,
    #[prost(string, tag = "3")]
    run_id: String,
    #[prost(message, optional, tag = "4")]
    workflow_type: Option<TypeName>,
    #[prost(int32, tag = "6")]
    status: i32,
    #[prost(message, optional, tag = "8")]
    start_time: Option<chronicle_proto::wkt::Timestamp>,
    #[prost(message, optional, tag = "10")]
    close_time: Option<chronicle_proto::wkt::Timestamp>,
    #[prost(message, optional, tag = "19")]
    search_attributes: Option<chronicle_proto::temporal::api::common::v1::SearchAttributes>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct TypeName {
    #[prost(string, tag = "1")]
    name: String,
}

impl From<IndexedFields> for pb::WorkflowExecutionState {
    fn from(f: IndexedFields) -> Self {
        pb::WorkflowExecutionState {
            namespace_id: f.namespace_id,
            workflow_id: f.workflow_id,
            run_id: f.run_id,
            workflow_type: f
                .workflow_type
                .map(|t| chronicle_proto::temporal::api::common::v1::WorkflowType { name: t.name }),
            status: f.status,
            start_time: f.start_time,
            close_time: f.close_time,
            search_attributes: f.search_attributes,
            ..Default::default()
        }
    }
}

/// The list position of a run.
pub fn position(state: &pb::WorkflowExecutionState) -> ListPosition {
    ListPosition {
        close: if is_open(state.status) {
            None
        } else {
            Some(state.close_time.as_ref().map(nanos).unwrap_or(0))
        },
        start: state.start_time.as_ref().map(nanos).unwrap_or(0),
        run_id: state.run_id.clone(),
    }
}

fn order_bytes(key: &mut Vec<u8>, p: &ListPosition) {
    match p.close {
        None => {
            key.push(0);
            key.extend_from_slice(&0u64.to_be_bytes());
        }
        Some(close) => {
            key.push(1);
            key.extend_from_slice(&descending(close));
        }
    }
    key.extend_from_slice(&descending(p.start));
    key.extend_from_slice(p.run_id.as_bytes());
}

fn index_prefix(shard: ShardId, namespace_id: &str, index: &VisIndex) -> Vec<u8> {
    let key = KeyBuf::shard(shard).str(namespace_id);
    match index {
        VisIndex::All => key.u8(ALL).build(),
        VisIndex::Status(s) => key
            .u8(BY_STATUS)
            .u8(u8::try_from(*s).unwrap_or(u8::MAX))
            .build(),
        VisIndex::WorkflowType(t) => key.u8(BY_TYPE).str(t).build(),
        VisIndex::Value { attribute, value } => {
            values::value_prefix(shard, namespace_id, attribute, value)
        }
        // (Not read by prefix: see `values::for_each`.)
        VisIndex::Values { attribute, .. } => key.u8(BY_VALUE).str(attribute).build(),
    }
}

/// The index rows of a run.
pub fn rows(shard: ShardId, state: &pb::WorkflowExecutionState) -> Vec<Row> {
    let p = position(state);
    let mut value = vec![u8::try_from(state.status).unwrap_or(u8::MAX)];
    value.extend_from_slice(state.workflow_id.as_bytes());
    let workflow_type = state
        .workflow_type
        .as_ref()
        .map(|t| t.name.clone())
        .unwrap_or_default();
    let mut prefixes: Vec<Vec<u8>> = [
        VisIndex::All,
        VisIndex::Status(state.status),
        VisIndex::WorkflowType(workflow_type),
    ]
    .iter()
    .map(|index| index_prefix(shard, &state.namespace_id, index))
    .collect();
    prefixes.extend(values::prefixes(shard, state));
    prefixes
        .into_iter()
        .map(|mut key| {
            order_bytes(&mut key, &p);
            (key, value.clone())
        })
        .collect()
}

/// An index row: key and value.
pub type Row = (Vec<u8>, Vec<u8>);

/// The index changes of an `executions` row going from `old` to `new` (either may be absent):
/// keys to delete and rows to put.
pub fn changes(
    shard: ShardId,
    old: Option<&[u8]>,
    new: Option<&[u8]>,
) -> StorageResult<(Vec<Vec<u8>>, Vec<Row>)> {
    let decode = |b: &[u8]| -> StorageResult<Vec<Row>> {
        let state: pb::WorkflowExecutionState =
            IndexedFields::decode(b)
                .map(Into::into)
                .map_err(|e| crate::StorageError::Corrupt {
                    cf: Cf::Executions.name(),
                    reason: e.to_string(),
                })?;
        Ok(rows(shard, &state))
    };
    if old == new {
        return Ok((Vec::new(), Vec::new()));
    }
    let old_rows = old.map(decode).transpose()?.unwrap_or_default();
    let new_rows = new.map(decode).transpose()?.unwrap_or_default();
    let deletes = old_rows
        .iter()
        .filter(|(k, _)| !new_rows.iter().any(|(n, _)| n == k))
        .map(|(k, _)| k.clone())
        .collect();
    let puts = new_rows
        .into_iter()
        .filter(|row| !old_rows.contains(row))
        .collect();
    Ok((deletes, puts))
}

/// One row of an index read.
pub struct IndexedRun<'a> {
    pub status: i32,
    pub workflow_id: &'a str,
    pub run_id: &'a str,
}

/// Bounds on a run's start and close times (nanoseconds since the epoch, inclusive) that an
/// index read applies from the keys alone: both times are part of every row's key. An open run
/// has no close time, so any close bound leaves open runs out (as a comparison with a null
/// close time is never true). The default is no bound.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TimeRange {
    pub start_min: Option<i64>,
    pub start_max: Option<i64>,
    pub close_min: Option<i64>,
    pub close_max: Option<i64>,
}

impl TimeRange {
    fn bounds_close(&self) -> bool {
        self.close_min.is_some() || self.close_max.is_some()
    }

    fn holds(&self, start: i64, close: Option<i64>) -> bool {
        let within = |t: i64, min: Option<i64>, max: Option<i64>| {
            min.is_none_or(|m| t >= m) && max.is_none_or(|m| t <= m)
        };
        within(start, self.start_min, self.start_max)
            && match close {
                Some(close) => within(close, self.close_min, self.close_max),
                None => !self.bounds_close(),
            }
    }
}

/// The bytes of a time in a key: descending, so later times come first.
fn descending(t: i64) -> [u8; 8] {
    (u64::MAX - flip(t)).to_be_bytes()
}

fn from_descending(bytes: &[u8]) -> i64 {
    let raw = u64::from_be_bytes(bytes.try_into().unwrap_or([0; 8]));
    ((u64::MAX - raw) ^ (1 << 63)) as i64
}

/// The close time (`None` while open) and start time in a row's order bytes.
fn order_times(order: &[u8]) -> (Option<i64>, i64) {
    let close = from_descending(order.get(1..9).unwrap_or(&[]));
    let start = from_descending(order.get(9..17).unwrap_or(&[]));
    ((order.first() == Some(&1)).then_some(close), start)
}

/// A row from its order bytes and value.
fn indexed_run<'a>(order: &'a [u8], value: &'a [u8]) -> IndexedRun<'a> {
    IndexedRun {
        status: i32::from(value.first().copied().unwrap_or(0)),
        workflow_id: std::str::from_utf8(value.get(1..).unwrap_or_default()).unwrap_or_default(),
        run_id: std::str::from_utf8(order.get(17..).unwrap_or_default()).unwrap_or_default(),
    }
}

/// The number of rows of `index` (any times), counted up to `cap`: how selective a term is.
pub fn estimate(
    db: &Db,
    shard: ShardId,
    namespace_id: &str,
    index: &VisIndex,
    cap: usize,
) -> StorageResult<usize> {
    if let VisIndex::Values {
        attribute,
        kind,
        slices,
    } = index
    {
        return values::estimate(db, shard, namespace_id, attribute, *kind, slices, cap);
    }
    let prefix = index_prefix(shard, namespace_id, index);
    let mut iter = db.prefix_iterator(Cf::Visibility, &prefix);
    iter.seek(&prefix);
    let mut n = 0usize;
    while n < cap && iter.key().is_some() {
        n += 1;
        iter.next();
    }
    iter.status()?;
    Ok(n)
}

/// Reads `index` of a namespace in list order, from just after `after` on, until `visit`
/// answers false (`page_hint`: how many rows the caller expects to take, `None` for a count,
/// which takes the rows of a [`VisIndex::Values`] in key order). Only rows within `range` are visited, and the read skips what the key order
/// rules out: open rows are in descending start time, so a start bound limits them to a slice;
/// closed rows are in descending close time, so a close bound does, and so does a lower start
/// bound (a run closes no earlier than it starts). Closed rows within the slice are checked
/// against the whole range from their keys.
#[allow(clippy::too_many_arguments)]
pub fn for_each(
    db: &Db,
    shard: ShardId,
    namespace_id: &str,
    index: &VisIndex,
    after: Option<&ListPosition>,
    range: &TimeRange,
    page_hint: Option<usize>,
    mut visit: impl FnMut(IndexedRun<'_>) -> bool,
) -> StorageResult<()> {
    if let VisIndex::Values {
        attribute,
        kind,
        slices,
    } = index
    {
        return values::for_each(
            db,
            shard,
            namespace_id,
            attribute,
            *kind,
            slices,
            after,
            range,
            page_hint,
            visit,
        );
    }
    let prefix = index_prefix(shard, namespace_id, index);
    let order_start = prefix.len();
    let after_key = after.map(|p| {
        let mut key = prefix.clone();
        order_bytes(&mut key, p);
        key
    });
    // (section byte, where its rows in range begin, the lowest time its rows in range have).
    let mut sections = Vec::with_capacity(2);
    if !range.bounds_close() {
        let mut begin = prefix.clone();
        begin.push(0);
        begin.extend_from_slice(&0u64.to_be_bytes());
        if let Some(max) = range.start_max {
            begin.extend_from_slice(&descending(max));
        }
        sections.push((0u8, begin, range.start_min));
    }
    let mut begin = prefix.clone();
    begin.push(1);
    if let Some(max) = range.close_max {
        begin.extend_from_slice(&descending(max));
    }
    let close_floor = match (range.close_min, range.start_min) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    sections.push((1u8, begin, close_floor));
    let mut iter = db.prefix_iterator(Cf::Visibility, &prefix);
    'sections: for (section, begin, floor) in sections {
        let from = match &after_key {
            Some(after) if *after > begin => after.as_slice(),
            _ => begin.as_slice(),
        };
        iter.seek(from);
        while let (Some(k), Some(v)) = (iter.key(), iter.value()) {
            if !k.starts_with(&prefix) || k.get(order_start) != Some(&section) {
                break;
            }
            if after_key.as_deref() == Some(k) {
                iter.next();
                continue;
            }
            let close = from_descending(k.get(order_start + 1..order_start + 9).unwrap_or(&[]));
            let start = from_descending(k.get(order_start + 9..order_start + 17).unwrap_or(&[]));
            // The time the section is ordered by: past the floor, no later row is in range.
            let ordered_by = if section == 0 { start } else { close };
            if floor.is_some_and(|floor| ordered_by < floor) {
                break;
            }
            let close = (section == 1).then_some(close);
            if range.holds(start, close) {
                let run_id = std::str::from_utf8(k.get(order_start + 17..).unwrap_or_default())
                    .unwrap_or_default();
                let workflow_id =
                    std::str::from_utf8(v.get(1..).unwrap_or_default()).unwrap_or_default();
                let status = i32::from(v.first().copied().unwrap_or(0));
                if !visit(IndexedRun {
                    status,
                    workflow_id,
                    run_id,
                }) {
                    break 'sections;
                }
            }
            iter.next();
        }
        iter.status()?;
    }
    iter.status()?;
    Ok(())
}

/// The format of a shard's rows: `None` when it has no rows at all, 1 for rows written before
/// the format was recorded.
fn stored_format(db: &Db, shard: ShardId) -> StorageResult<Option<u32>> {
    if let Some(v) = db.get(Cf::ShardMeta, &crate::db::visibility_format_key(shard))? {
        let bytes: [u8; 4] = v.as_slice().try_into().unwrap_or([0; 4]);
        return Ok(Some(u32::from_be_bytes(bytes)));
    }
    let prefix = keys::shard_prefix(shard);
    let mut existing = db.prefix_iterator(Cf::Visibility, &prefix);
    existing.seek(&prefix);
    let any = existing.key().is_some();
    existing.status()?;
    Ok(any.then_some(1))
}

/// Builds the indexes of a shard whose rows are missing or of an older [`FORMAT`] (a data
/// directory from before the `visibility` family, or from before an index was added): its rows
/// are deleted and derived again from its runs, so every replica builds the same rows, and the
/// format is recorded last (a crash in between builds again at the next start). Run before the
/// shard's group applies anything. Returns whether it built.
pub fn build_if_missing(db: &Db, shard: ShardId) -> StorageResult<bool> {
    let stored = stored_format(db, shard)?;
    if stored == Some(FORMAT) {
        return Ok(false);
    }
    rebuild_rows(db, shard, stored.is_some()).map(|runs| runs > 0)
}

/// Deletes a shard's index rows and derives them again from its runs, as an upgrade from an
/// older [`FORMAT`] does at start (on a stopped node's directory: the group must not apply
/// meanwhile). Returns how many runs it indexed. `benches/src/bin/rebuild_visibility.rs` times
/// it on a grown directory.
pub fn rebuild(db: &Db, shard: ShardId) -> StorageResult<u64> {
    rebuild_rows(db, shard, true)
}

fn rebuild_rows(db: &Db, shard: ShardId, delete_old: bool) -> StorageResult<u64> {
    let prefix = keys::shard_prefix(shard);
    let mut batch = rocksdb::WriteBatch::default();
    if delete_old {
        batch.delete_range_cf(db.cf(Cf::Visibility), &prefix, &keys::prefix_end(&prefix));
    }
    let mut runs = db.prefix_iterator(Cf::Executions, &prefix);
    runs.seek(&prefix);
    let mut indexed = 0u64;
    while let Some(v) = runs.value() {
        let (_, puts) = changes(shard, None, Some(v))?;
        for (k, v) in puts {
            batch.put_cf(db.cf(Cf::Visibility), k, v);
        }
        indexed += 1;
        if batch.len() >= 30_000 {
            db.rocks()
                .write_opt(std::mem::take(&mut batch), &db.state_write_options())?;
        }
        runs.next();
    }
    runs.status()?;
    batch.put_cf(
        db.cf(Cf::ShardMeta),
        crate::db::visibility_format_key(shard),
        FORMAT.to_be_bytes(),
    );
    db.rocks().write_opt(batch, &db.state_write_options())?;
    Ok(indexed)
}

#[cfg(test)]
mod tests;
