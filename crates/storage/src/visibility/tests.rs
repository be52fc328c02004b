//! Unit tests of the visibility rows and indexes.

use super::*;
use crate::DbOptions;

/// The run IDs `index` of shard `shard` (namespace "ns") lists, in order.
fn listed(db: &Db, shard: ShardId, index: &VisIndex) -> Vec<String> {
    let mut out = Vec::new();
    for_each(
        db,
        shard,
        "ns",
        index,
        None,
        &TimeRange::default(),
        Some(10),
        |r| {
            out.push(r.run_id.to_string());
            true
        },
    )
    .unwrap();
    out
}

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
        for_each(
            &db,
            3,
            "ns",
            &index,
            after.as_ref(),
            &TimeRange::default(),
            Some(10),
            |r| {
                out.push(format!("{}:{}:{}", r.run_id, r.status, r.workflow_id));
                true
            },
        )
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
fn a_time_range_yields_exactly_the_rows_within_it_in_list_order() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), DbOptions::default()).unwrap();
    // Open runs (status 1) and closed ones (2), with starts and closes spread over time,
    // including negative times (before the epoch).
    let mut runs = Vec::new();
    for i in 0..60i64 {
        let start = (i * 37) % 50 - 10;
        let (status, close) = if i % 3 == 0 {
            (1, 0)
        } else {
            (2, start + (i % 7))
        };
        runs.push(run(&format!("r{i:02}"), status, start, close));
    }
    for r in &runs {
        let (_, puts) = changes(3, None, Some(&r.encode_to_vec())).unwrap();
        for (k, v) in puts {
            db.rocks().put_cf(db.cf(Cf::Visibility), k, v).unwrap();
        }
    }
    let secs = |t: i64| t * 1_000_000_000;
    let read = |range: &TimeRange, after: Option<&ListPosition>| {
        let mut out = Vec::new();
        for_each(&db, 3, "ns", &VisIndex::All, after, range, Some(10), |r| {
            out.push(r.run_id.to_string());
            true
        })
        .unwrap();
        out
    };
    let everything = read(&TimeRange::default(), None);
    assert_eq!(everything.len(), runs.len());
    let bound = |t: Option<i64>| t.map(secs);
    let candidates = [None, Some(-5), Some(0), Some(12), Some(30), Some(45)];
    for start_min in candidates {
        for start_max in [None, Some(0), Some(20), Some(39)] {
            for (close_min, close_max) in [
                (None, None),
                (Some(3), None),
                (None, Some(25)),
                (Some(10), Some(30)),
            ] {
                let range = TimeRange {
                    start_min: bound(start_min),
                    start_max: bound(start_max),
                    close_min: bound(close_min),
                    close_max: bound(close_max),
                };
                // Brute force: every run in list order, kept when within the range.
                let expected: Vec<String> = everything
                    .iter()
                    .filter(|id| {
                        let r = runs.iter().find(|r| &r.run_id == *id).unwrap();
                        let p = position(r);
                        range.holds(p.start, p.close)
                    })
                    .cloned()
                    .collect();
                assert_eq!(read(&range, None), expected, "{range:?}");
                // Resuming after any row of the full list gives the rest of the answer.
                for (i, id) in everything.iter().enumerate().step_by(7) {
                    let r = runs.iter().find(|r| &r.run_id == id).unwrap();
                    let rest: Vec<String> = expected
                        .iter()
                        .filter(|e| everything.iter().position(|x| x == *e).unwrap() > i)
                        .cloned()
                        .collect();
                    assert_eq!(
                        read(&range, Some(&position(r))),
                        rest,
                        "{range:?} after {id}"
                    );
                }
            }
        }
    }
}

fn with_attributes(mut state: pb::WorkflowExecutionState) -> pb::WorkflowExecutionState {
    use chronicle_proto::temporal::api::common::v1::{Payload, SearchAttributes};
    let payload = |json: &str, ty: Option<&str>| Payload {
        metadata: ty
            .map(|t| [("type".to_string(), t.as_bytes().to_vec())].into())
            .unwrap_or_default(),
        data: json.as_bytes().to_vec(),
        ..Default::default()
    };
    let long = format!("\"{}\"", "x".repeat(MAX_INDEXED_VALUE_BYTES + 1));
    state.search_attributes = Some(SearchAttributes {
        indexed_fields: [
            ("Untyped".to_string(), payload("\"abc\"", None)),
            ("Typed".to_string(), payload("\"x\"", Some("Keyword"))),
            (
                "Tags".to_string(),
                payload("[\"b\",\"a\",\"b\",7]", Some("KeywordList")),
            ),
            ("Words".to_string(), payload("\"hello\"", Some("Text"))),
            (
                "When".to_string(),
                payload("\"2024-01-01T00:00:00Z\"", Some("Datetime")),
            ),
            ("Long".to_string(), payload(&long, Some("Keyword"))),
            ("Count".to_string(), payload("5", Some("Int"))),
            ("Broken".to_string(), payload("{not json", None)),
        ]
        .into(),
    });
    state
}

#[test]
fn value_rows_hold_each_value_as_every_kind_it_decodes_as() {
    let state = with_attributes(run("r", 1, 7, 0));
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), DbOptions::default()).unwrap();
    let (_, puts) = changes(3, None, Some(&state.encode_to_vec())).unwrap();
    // Keywords: abc, x, a, b, hello, the date, the long one; Datetime: the date; Int and
    // Double: 5; Bool: none. "Broken" is no JSON.
    assert_eq!(
        puts.len(),
        3 + 7 + 1 + 2,
        "three indexes of every run, value rows"
    );
    for (k, v) in puts {
        db.rocks().put_cf(db.cf(Cf::Visibility), k, v).unwrap();
    }
    let find = |attribute: &str, value: Scalar| {
        let index = VisIndex::Value {
            attribute: attribute.into(),
            value,
        };
        listed(&db, 3, &index)
    };
    let kw = |s: &str| Scalar::Keyword(s.into());
    assert_eq!(find("Tags", kw("a")), ["r"]);
    assert_eq!(find("Untyped", kw("abc")), ["r"]);
    assert_eq!(find("Count", Scalar::Int(5)), ["r"]);
    assert_eq!(find("Count", Scalar::Double(5.0)), ["r"]);
    assert_eq!(
        find("When", Scalar::Datetime(1_704_067_200_000_000_000)),
        ["r"]
    );
    assert!(find("Tags", kw("c")).is_empty());
    assert!(find("Count", Scalar::Int(6)).is_empty());
    let long = "x".repeat(MAX_INDEXED_VALUE_BYTES + 1);
    assert_eq!(
        find("Long", kw(&long)),
        ["r"],
        "a long value's row holds its start"
    );
    // Removing the attributes removes their rows.
    let bare = run("r", 1, 7, 0);
    let (deletes, puts) =
        changes(3, Some(&state.encode_to_vec()), Some(&bare.encode_to_vec())).unwrap();
    assert_eq!((deletes.len(), puts.len()), (10, 0));
}

#[test]
fn rows_of_an_older_format_are_rebuilt_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), DbOptions::default()).unwrap();
    let state = with_attributes(run("r", 1, 7, 0));
    let key = keys::execution(1, "ns", &state.workflow_id, "r");
    db.rocks()
        .put_cf(db.cf(Cf::Executions), key, state.encode_to_vec())
        .unwrap();
    // Format 1: the three first indexes, no format key, and a row no run explains.
    for (k, v) in rows(1, &run("r", 1, 7, 0)) {
        db.rocks().put_cf(db.cf(Cf::Visibility), k, v).unwrap();
    }
    let stray = rows(1, &run("gone", 2, 1, 2)).remove(0);
    db.rocks()
        .put_cf(db.cf(Cf::Visibility), &stray.0, &stray.1)
        .unwrap();
    assert_eq!(stored_format(&db, 1).unwrap(), Some(1));
    assert!(build_if_missing(&db, 1).unwrap());
    assert_eq!(stored_format(&db, 1).unwrap(), Some(FORMAT));
    assert!(!build_if_missing(&db, 1).unwrap(), "built once");
    // A directory of format 2 (keyword rows only) is rebuilt too, and gains the Int rows.
    db.rocks()
        .put_cf(
            db.cf(Cf::ShardMeta),
            crate::db::visibility_format_key(1),
            2u32.to_be_bytes(),
        )
        .unwrap();
    assert!(build_if_missing(&db, 1).unwrap());
    assert_eq!(stored_format(&db, 1).unwrap(), Some(FORMAT));
    let count = VisIndex::Value {
        attribute: "Count".into(),
        value: Scalar::Int(5),
    };
    assert_eq!(listed(&db, 1, &count), ["r"]);
    assert_eq!(
        listed(&db, 1, &VisIndex::All),
        ["r"],
        "the stray row went with the old format"
    );
    let index = VisIndex::Value {
        attribute: "Tags".into(),
        value: Scalar::Keyword("a".into()),
    };
    assert_eq!(listed(&db, 1, &index), ["r"]);
    // A shard with no rows and no runs records the format and builds nothing.
    assert!(!build_if_missing(&db, 9).unwrap());
    assert_eq!(stored_format(&db, 9).unwrap(), Some(FORMAT));
}

#[test]
fn rows_from_the_partial_decode_equal_rows_from_the_whole_state() {
    let mut state = with_attributes(run("r", 2, 7, 9));
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
    let mut runs = listed(&db, 1, &VisIndex::All);
    runs.sort();
    assert_eq!(runs, ["a", "b"]);
    assert!(
        listed(&db, 2, &VisIndex::Status(1)).is_empty(),
        "shard 2 not built yet"
    );
    assert!(build_if_missing(&db, 2).unwrap());
}

#[test]
fn a_rebuild_derives_the_same_rows_again_and_drops_strays() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), DbOptions::default()).unwrap();
    for id in ["a", "b"] {
        let state = with_attributes(run(id, 1, 10, 0));
        let key = keys::execution(1, "ns", &state.workflow_id, id);
        db.rocks()
            .put_cf(db.cf(Cf::Executions), key, state.encode_to_vec())
            .unwrap();
    }
    assert!(build_if_missing(&db, 1).unwrap());
    let before = listed(&db, 1, &VisIndex::All);
    let stray = rows(1, &run("gone", 2, 1, 2)).remove(0);
    db.rocks()
        .put_cf(db.cf(Cf::Visibility), &stray.0, &stray.1)
        .unwrap();
    assert_eq!(listed(&db, 1, &VisIndex::All).len(), 3);
    assert_eq!(rebuild(&db, 1).unwrap(), 2);
    assert_eq!(listed(&db, 1, &VisIndex::All), before);
    assert_eq!(stored_format(&db, 1).unwrap(), Some(FORMAT));
}
