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
//!
//! order = open (0) or closed (1) as u8, close time descending (u64, 0 while open), start time
//! descending (u64), run ID (raw bytes, last). That is Temporal's list order (open runs first,
//! then newest close, newest start, run ID), so an index read in key order yields runs in list
//! order and a page stops after its last row. Value: status (u8) and the workflow ID.

use prost::Message;

use crate::db::{Cf, Db};
use crate::error::StorageResult;
use crate::keys::{self, KeyBuf, ShardId};
use chronicle_proto::chronicle::persistence::v1 as pb;

const ALL: u8 = 0;
const BY_STATUS: u8 = 1;
const BY_TYPE: u8 = 2;

/// Which index to read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VisIndex {
    All,
    Status(i32),
    WorkflowType(String),
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
            key.extend_from_slice(&(u64::MAX - flip(close)).to_be_bytes());
        }
    }
    key.extend_from_slice(&(u64::MAX - flip(p.start)).to_be_bytes());
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
    [
        VisIndex::All,
        VisIndex::Status(state.status),
        VisIndex::WorkflowType(workflow_type),
    ]
    .iter()
    .map(|index| {
        let mut key = index_prefix(shard, &state.namespace_id, index);
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

/// Reads `index` of a namespace in list order, from just after `after` on, until `visit`
/// answers false.
pub fn for_each(
    db: &Db,
    shard: ShardId,
    namespace_id: &str,
    index: &VisIndex,
    after: Option<&ListPosition>,
    mut visit: impl FnMut(IndexedRun<'_>) -> bool,
) -> StorageResult<()> {
    let prefix = index_prefix(shard, namespace_id, index);
    let order_start = prefix.len();
    let mut iter = db.prefix_iterator(Cf::Visibility, &prefix);
    let after_key = after.map(|p| {
        let mut key = prefix.clone();
        order_bytes(&mut key, p);
        key
    });
    iter.seek(after_key.as_deref().unwrap_or(&prefix));
    while let (Some(k), Some(v)) = (iter.key(), iter.value()) {
        if !k.starts_with(&prefix) {
            break;
        }
        if after_key.as_deref() == Some(k) {
            iter.next();
            continue;
        }
        let run_id =
            std::str::from_utf8(k.get(order_start + 17..).unwrap_or_default()).unwrap_or_default();
        let workflow_id = std::str::from_utf8(v.get(1..).unwrap_or_default()).unwrap_or_default();
        let status = i32::from(v.first().copied().unwrap_or(0));
        if !visit(IndexedRun {
            status,
            workflow_id,
            run_id,
        }) {
            break;
        }
        iter.next();
    }
    iter.status()?;
    Ok(())
}

/// Builds the indexes of a shard whose runs have none (a data directory from before the
/// `visibility` family existed). Derived from the runs alone, so every replica builds the same
/// rows; run before the shard's group applies anything. Returns whether it built.
pub fn build_if_missing(db: &Db, shard: ShardId) -> StorageResult<bool> {
    let prefix = keys::shard_prefix(shard);
    let mut existing = db.prefix_iterator(Cf::Visibility, &prefix);
    existing.seek(&prefix);
    if existing.key().is_some() {
        return Ok(false);
    }
    existing.status()?;
    drop(existing);
    let mut runs = db.prefix_iterator(Cf::Executions, &prefix);
    runs.seek(&prefix);
    let mut batch = rocksdb::WriteBatch::default();
    let mut built = false;
    while let Some(v) = runs.value() {
        let (_, puts) = changes(shard, None, Some(v))?;
        for (k, v) in puts {
            batch.put_cf(db.cf(Cf::Visibility), k, v);
        }
        built = true;
        if batch.len() >= 30_000 {
            db.rocks()
                .write_opt(std::mem::take(&mut batch), &db.state_write_options())?;
        }
        runs.next();
    }
    runs.status()?;
    if !batch.is_empty() {
        db.rocks().write_opt(batch, &db.state_write_options())?;
    }
    Ok(built)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DbOptions;

    fn run(id: &str, status: i32, start: i64, close: i64) -> pb::WorkflowExecutionState {
        pb::WorkflowExecutionState {
            namespace_id: "ns".into(),
            workflow_id: format!("wf-{id}"),
            run_id: id.into(),
            status,
            start_time: Some(chronicle_proto::wkt::Timestamp {
                seconds: start,
                nanos: 0,
            }),
            close_time: Some(chronicle_proto::wkt::Timestamp {
                seconds: close,
                nanos: 0,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn index_order_is_list_order_and_pages_resume_after_a_position() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), DbOptions::default()).unwrap();
        let runs = [
            run("a", 2, 10, 50),
            run("b", 1, 20, 0),
            run("c", 3, 5, 90),
            run("d", 1, 30, 0),
            run("e", 2, -4, 50),
        ];
        for r in &runs {
            let bytes = r.encode_to_vec();
            let (_, puts) = changes(3, None, Some(&bytes)).unwrap();
            for (k, v) in puts {
                db.rocks().put_cf(db.cf(Cf::Visibility), k, v).unwrap();
            }
        }
        let read = |index: VisIndex, after: Option<ListPosition>| {
            let mut out = Vec::new();
            for_each(&db, 3, "ns", &index, after.as_ref(), |r| {
                out.push(format!("{}:{}:{}", r.run_id, r.status, r.workflow_id));
                true
            })
            .unwrap();
            out
        };
        assert_eq!(
            read(VisIndex::All, None),
            ["d:1:wf-d", "b:1:wf-b", "c:3:wf-c", "a:2:wf-a", "e:2:wf-e"]
        );
        assert_eq!(read(VisIndex::Status(1), None), ["d:1:wf-d", "b:1:wf-b"]);
        assert_eq!(read(VisIndex::Status(2), None), ["a:2:wf-a", "e:2:wf-e"]);
        assert_eq!(
            read(VisIndex::All, Some(position(&runs[2]))),
            ["a:2:wf-a", "e:2:wf-e"]
        );
        // A run that closes moves: its old rows go, its new ones come.
        let old = runs[1].encode_to_vec();
        let closed = run("b", 2, 20, 60).encode_to_vec();
        let (deletes, puts) = changes(3, Some(&old), Some(&closed)).unwrap();
        assert_eq!((deletes.len(), puts.len()), (3, 3));
        let (deletes, puts) = changes(3, Some(&closed), Some(&closed)).unwrap();
        assert!(
            deletes.is_empty() && puts.is_empty(),
            "an unchanged place writes nothing"
        );
        let (deletes, puts) = changes(3, Some(&closed), None).unwrap();
        assert_eq!((deletes.len(), puts.len()), (3, 0));
    }

    #[test]
    fn rows_from_the_partial_decode_equal_rows_from_the_whole_state() {
        let mut state = run("r", 2, 7, 9);
        state.workflow_type = Some(chronicle_proto::temporal::api::common::v1::WorkflowType {
            name: "Typed".into(),
        });
        state.next_event_id = 12;
        state.activities.insert(
            5,
            pb::ActivityInfo {
                activity_id: "a".into(),
                ..Default::default()
            },
        );
        let (_, puts) = changes(4, None, Some(&state.encode_to_vec())).unwrap();
        assert_eq!(puts, rows(4, &state));
    }

    #[test]
    fn a_shard_without_indexes_gets_them_built_once() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), DbOptions::default()).unwrap();
        for (shard, id) in [(1, "a"), (1, "b"), (2, "c")] {
            let state = run(id, 1, 10, 0);
            let key = keys::execution(shard, "ns", &state.workflow_id, id);
            db.rocks()
                .put_cf(db.cf(Cf::Executions), key, state.encode_to_vec())
                .unwrap();
        }
        assert!(build_if_missing(&db, 1).unwrap());
        assert!(!build_if_missing(&db, 1).unwrap(), "built once");
        assert!(
            !build_if_missing(&db, 5).unwrap(),
            "no runs, nothing to build"
        );
        let mut listed = Vec::new();
        for_each(&db, 1, "ns", &VisIndex::All, None, |r| {
            listed.push(r.run_id.to_string());
            true
        })
        .unwrap();
        listed.sort();
        assert_eq!(listed, ["a", "b"]);
        let mut other = 0;
        for_each(&db, 2, "ns", &VisIndex::Status(1), None, |_| {
            other += 1;
            true
        })
        .unwrap();
        assert_eq!(other, 0, "shard 2 not built yet");
        assert!(build_if_missing(&db, 2).unwrap());
    }
}
