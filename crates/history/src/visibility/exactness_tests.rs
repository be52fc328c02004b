//! Every index the planner can pick for a filter answers exactly what evaluating the filter on
//! every run answers: the same runs in the same list order, page after page through page
//! tokens, and the same counts (also those read from index rows alone), over runs with values
//! of every search-attribute type, missing ones and mistyped ones, before and after upserts
//! change them and retention deletes runs.

use std::collections::BTreeMap;

use chronicle_proto::chronicle::persistence::v1::WorkflowExecutionState;
use chronicle_proto::temporal::api::common::v1::{Payload, SearchAttributes, WorkflowType};
use chronicle_storage::visibility::{self as vis, ListPosition};
use chronicle_storage::{Cf, Db, DbOptions};
use chronicle_visibility::order::SortKey;
use chronicle_visibility::{ParsedQuery, eval};
use prost::Message;

use super::{Scan, and_terms, index_scan, terms};

const SHARD: u32 = 2;

/// A deterministic pseudo-random sequence (xorshift).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

fn long(tail: &str) -> String {
    format!("{}{tail}", "x".repeat(300))
}

/// JSON values (as stored) of each attribute; `None` leaves it out.
fn values(name: &str) -> Vec<Option<String>> {
    let quoted = |s: &str| Some(format!("\"{s}\""));
    let mut out: Vec<Option<String>> = match name {
        "VInt" => [
            "-5",
            "-1",
            "0",
            "1",
            "2",
            "3",
            "3",
            "4",
            "9223372036854775807",
            "-9223372036854775808",
            // Mistyped or odd: a string, a float, one- and two-element lists, null.
            "\"3\"",
            "2.5",
            "[3]",
            "[1,2]",
            "[]",
            "null",
        ]
        .iter()
        .map(|s| Some(s.to_string()))
        .collect(),
        "VDouble" => [
            "-1.5", "-1", "-0.0", "0", "1.5", "2", "2.5", "1e300", "3", "\"2\"", "[2.5]", "true",
        ]
        .iter()
        .map(|s| Some(s.to_string()))
        .collect(),
        "VBool" => ["true", "false", "false", "\"true\"", "[true]", "1"]
            .iter()
            .map(|s| Some(s.to_string()))
            .collect(),
        "VTime" => vec![
            quoted("2024-01-01T00:00:00Z"),
            quoted("2024-01-02T00:00:00Z"),
            quoted("2024-01-02T12:00:00+02:00"),
            quoted("2024-01-02T10:00:00.000000001Z"),
            quoted("2024-01-03T00:00:00Z"),
            quoted("1969-12-31T23:59:59Z"),
            quoted("not a date"),
            Some("1704153600000000000".into()),
            Some("[\"2024-01-02T00:00:00Z\"]".into()),
        ],
        "VKw" => vec![
            quoted(""),
            quoted("a"),
            quoted("ab"),
            quoted("a\\u0000b"),
            quoted("b"),
            quoted("it's"),
            quoted("2024-01-02T00:00:00Z"),
            quoted(&long("a")),
            quoted(&long("b")),
            quoted(&"x".repeat(256)),
            quoted(&"x".repeat(255)),
            Some("[\"a\",\"b\"]".into()),
            Some("7".into()),
        ],
        "VTags" => [
            "[\"red\"]",
            "[\"red\",\"blue\"]",
            "[\"blue\",\"blue\"]",
            "[]",
            "[\"red\",7]",
            "\"red\"",
        ]
        .iter()
        .map(|s| Some(s.to_string()))
        .collect(),
        _ => vec![
            Some("\"the quick fox\"".into()),
            Some("\"lazy dog\"".into()),
        ],
    };
    out.push(None);
    out.push(None);
    out
}

const NAMES: [&str; 7] = ["VInt", "VDouble", "VBool", "VTime", "VKw", "VTags", "VText"];

fn attributes(rng: &mut Rng) -> SearchAttributes {
    let mut fields = std::collections::HashMap::new();
    for name in NAMES {
        let choices = values(name);
        if let Some(json) = &choices[rng.below(choices.len() as u64) as usize] {
            let mut payload = Payload {
                data: json.as_bytes().to_vec(),
                ..Default::default()
            };
            if rng.below(2) == 0 {
                payload
                    .metadata
                    .insert("encoding".into(), b"json/plain".to_vec());
            }
            fields.insert(name.to_string(), payload);
        }
    }
    SearchAttributes {
        indexed_fields: fields,
    }
}

fn run(rng: &mut Rng, namespace: &str, i: usize) -> WorkflowExecutionState {
    let start = rng.below(100) as i64;
    let closed = rng.below(3) != 0;
    WorkflowExecutionState {
        namespace_id: namespace.into(),
        workflow_id: format!("wf-{}", i % 150),
        run_id: format!("run-{i:04}"),
        workflow_type: Some(WorkflowType {
            name: rng.pick(&["T1", "T2"]).into(),
        }),
        status: if closed { 2 + rng.below(3) as i32 } else { 1 },
        start_time: Some(chronicle_proto::wkt::Timestamp {
            seconds: start,
            nanos: 0,
        }),
        close_time: closed.then(|| chronicle_proto::wkt::Timestamp {
            seconds: start + rng.below(50) as i64,
            nanos: 0,
        }),
        search_attributes: Some(attributes(rng)),
        ..Default::default()
    }
}

/// Writes the index changes of a run going from `old` to `new`, as a shard batch would.
fn write(db: &Db, old: Option<&WorkflowExecutionState>, new: Option<&WorkflowExecutionState>) {
    let old = old.map(Message::encode_to_vec);
    let new = new.map(Message::encode_to_vec);
    let (deletes, puts) = vis::changes(SHARD, old.as_deref(), new.as_deref()).unwrap();
    for k in deletes {
        db.rocks().delete_cf(db.cf(Cf::Visibility), k).unwrap();
    }
    for (k, v) in puts {
        db.rocks().put_cf(db.cf(Cf::Visibility), k, v).unwrap();
    }
}

fn registry() -> chronicle_visibility::Registry {
    [
        ("VText", 1),
        ("VKw", 2),
        ("VInt", 3),
        ("VDouble", 4),
        ("VBool", 5),
        ("VTime", 6),
        ("VTags", 7),
    ]
    .into_iter()
    .map(|(n, t)| (n.to_string(), t))
    .collect()
}

fn queries() -> Vec<String> {
    let mut q: Vec<String> = [
        "VInt = 3",
        "VInt != 3",
        "VInt > 2",
        "VInt >= 2",
        "VInt < -1",
        "VInt <= 0",
        "VInt BETWEEN -2 AND 2",
        "VInt NOT BETWEEN -2 AND 2",
        "VInt IN (1, 3, 3, -5)",
        "VInt NOT IN (1)",
        "VInt > 2.5",
        "VInt >= 2.5",
        "VInt < 2.5",
        "VInt <= -1.5",
        "VInt = 2.0",
        "VInt = 2.5",
        "VInt IN (2.5, 3.0)",
        "VInt > 1 AND VInt < 4",
        "VInt >= 0 AND VInt BETWEEN -3 AND 1",
        "VInt > 5 AND VInt < 2",
        "VInt >= 9223372036854775807",
        "VInt < 0 AND VInt > -9223372036854775807",
        "VInt IS NULL",
        "NOT VInt > 0",
        "VDouble = 2",
        "VDouble = 0",
        "VDouble = -0.0",
        "VDouble > 1.5",
        "VDouble <= -1",
        "VDouble BETWEEN -1.5 AND 2.5",
        "VDouble IN (2.5, 0, 3)",
        "VDouble < 0 OR VDouble > 100",
        "VBool = true",
        "VBool = false",
        "VBool != true",
        "VBool IN (true)",
        "VBool > false",
        "VTime > '2024-01-02T00:00:00Z'",
        "VTime >= '2024-01-02T10:00:00Z'",
        "VTime <= '2024-01-02T12:00:00+02:00'",
        "VTime BETWEEN '2024-01-01T00:00:00Z' AND '2024-01-02T10:00:00Z'",
        "VTime = '2024-01-02T00:00:00Z'",
        "VTime IN ('2024-01-02T00:00:00Z', '2024-01-03T00:00:00Z')",
        "VTime < 1704153600000000000",
        "VTime < '1970-01-01T00:00:00Z'",
        "VKw = 'a'",
        "VKw = ''",
        "VKw > 'a'",
        "VKw >= 'ab'",
        "VKw < 'b'",
        "VKw <= ''",
        "VKw BETWEEN 'a' AND 'b'",
        "VKw STARTS_WITH 'a'",
        "VKw STARTS_WITH 'it'",
        "VKw IN ('a', 'b', 'zz', 'a')",
        "VKw NOT IN ('a')",
        "VTags = 'red'",
        "VTags IN ('red', 'blue')",
        "VTags != 'red'",
        "VText = 'quick'",
        "ExecutionStatus = 'Running' AND VInt > 0",
        "ExecutionStatus = 'Completed' AND VBool = false",
        "VInt > 0 AND VKw = 'a'",
        "VInt >= 1 AND VDouble < 2 AND StartTime > '1970-01-01T00:00:40Z'",
        "WorkflowType = 'T1' AND VBool = true",
        "WorkflowType = 'T2' AND VTime > '2024-01-01T00:00:00Z' AND CloseTime < '1970-01-01T00:01:00Z'",
        "VInt > 0 OR VBool = true",
        "VInt > -10 AND VDouble > -10 AND VBool IN (true, false) AND VTags = 'blue'",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    q.push(format!("VKw = '{}'", long("a")));
    q.push(format!("VKw = '{}'", "x".repeat(256)));
    q.push(format!("VKw > '{}'", "x".repeat(256)));
    q.push(format!("VKw < '{}'", long("b")));
    q.push(format!("VKw <= '{}'", long("a")));
    q.push(format!("VKw STARTS_WITH '{}'", "x".repeat(300)));
    q.push(format!("VKw STARTS_WITH '{}'", long("b")));
    q
}

fn position(key: &SortKey) -> ListPosition {
    ListPosition {
        close: key.close,
        start: key.start,
        run_id: key.run_id.clone(),
    }
}

/// The run IDs a scan lists, page by page (each page resumes after the last run of the one
/// before, as a page token does), as `list` reads them.
fn listed(
    db: &Db,
    runs: &BTreeMap<String, WorkflowExecutionState>,
    query: &ParsedQuery,
    scan: &Scan,
    page_size: usize,
) -> Vec<String> {
    let Scan::Index(index, range, _) = scan else {
        unreachable!("an index scan")
    };
    let mut out = Vec::new();
    let mut after: Option<SortKey> = None;
    loop {
        let keep = page_size + 1;
        let mut rows: Vec<SortKey> = Vec::new();
        vis::for_each(
            db,
            SHARD,
            "ns",
            index,
            after.as_ref().map(position).as_ref(),
            range,
            Some(keep),
            |row| {
                let state = &runs[row.run_id];
                assert_eq!(state.workflow_id, row.workflow_id);
                if !eval::matches(query, state) {
                    return true;
                }
                let key = SortKey::of_state(state);
                if after.as_ref().is_some_and(|a| key <= *a) {
                    return true;
                }
                rows.push(key);
                rows.len() < keep
            },
        )
        .unwrap();
        let more = rows.len() > page_size;
        rows.truncate(page_size);
        out.extend(rows.iter().map(|k| k.run_id.clone()));
        match rows.pop() {
            Some(last) if more => after = Some(last),
            _ => return out,
        }
    }
}

/// The count a scan gives, as `list` counts (from the rows alone when the scan is whole).
fn counted(
    db: &Db,
    runs: &BTreeMap<String, WorkflowExecutionState>,
    query: &ParsedQuery,
    scan: &Scan,
) -> usize {
    let Scan::Index(index, range, whole) = scan else {
        unreachable!("an index scan")
    };
    let mut n = 0;
    vis::for_each(db, SHARD, "ns", index, None, range, None, |row| {
        if *whole || eval::matches(query, &runs[row.run_id]) {
            n += 1;
        }
        true
    })
    .unwrap();
    n
}

/// Checks every candidate index of every query (and the index of every run) against the
/// filter evaluated on every run; returns how many reads were whole (counted from rows alone).
fn check_all(db: &Db, runs: &BTreeMap<String, WorkflowExecutionState>) -> usize {
    let mut in_order: Vec<(SortKey, &str)> = runs
        .values()
        .map(|s| (SortKey::of_state(s), s.run_id.as_str()))
        .collect();
    in_order.sort();
    let mut whole_reads = 0;
    for text in queries() {
        let query = chronicle_visibility::parse(&text, &registry())
            .unwrap_or_else(|e| panic!("{text}: {e}"));
        let expected: Vec<String> = in_order
            .iter()
            .filter(|(_, id)| eval::matches(&query, &runs[*id]))
            .map(|(_, id)| id.to_string())
            .collect();
        let mut filter_terms = Vec::new();
        if let Some(expr) = &query.filter {
            and_terms(expr, &mut filter_terms);
        }
        let candidates = terms::candidates(&filter_terms);
        let mut scans = vec![index_scan(&filter_terms, None)];
        scans.extend(
            candidates
                .iter()
                .map(|c| index_scan(&filter_terms, Some(c))),
        );
        for scan in &scans {
            let Scan::Index(index, _, whole) = scan else {
                unreachable!()
            };
            whole_reads += usize::from(*whole);
            for page_size in [1, 4, 1000] {
                assert_eq!(
                    listed(db, runs, &query, scan, page_size),
                    expected,
                    "{text} by {index:?}, pages of {page_size}"
                );
            }
            assert_eq!(
                counted(db, runs, &query, scan),
                expected.len(),
                "count {text} by {index:?} (whole: {whole})"
            );
        }
        // The planner's choice is one of them (the one with the fewest rows).
        let chosen = terms::choose(&candidates, terms::PAGE_ESTIMATE_CAP, |index, cap| {
            vis::estimate(db, SHARD, "ns", index, cap)
        })
        .unwrap();
        assert_eq!(chosen.is_some(), !candidates.is_empty(), "{text}");
        if let Some(chosen) = chosen {
            let rows = |i: &vis::VisIndex| vis::estimate(db, SHARD, "ns", i, usize::MAX).unwrap();
            let fewest = candidates.iter().map(|c| rows(&c.index)).min().unwrap();
            assert_eq!(
                rows(&chosen.index),
                fewest,
                "{text}: not the smallest index"
            );
        }
    }
    whole_reads
}

#[test]
fn every_index_read_answers_as_evaluating_every_run_does() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), DbOptions::default()).unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut runs = BTreeMap::new();
    for i in 0..400 {
        let state = run(&mut rng, "ns", i);
        write(&db, None, Some(&state));
        runs.insert(state.run_id.clone(), state);
    }
    // Another namespace's runs, with the same values, are never listed.
    for i in 0..40 {
        write(&db, None, Some(&run(&mut rng, "other", 1000 + i)));
    }
    let whole = check_all(&db, &runs);
    assert!(
        whole > 20,
        "ranges and equalities count from rows alone ({whole})"
    );

    // Upserts change (or remove) values and runs close; retention deletes runs.
    let ids: Vec<String> = runs.keys().cloned().collect();
    for (n, id) in ids.iter().enumerate() {
        let old = runs[id].clone();
        if n % 7 == 0 {
            write(&db, Some(&old), None);
            runs.remove(id);
            continue;
        }
        if n % 3 == 0 {
            let mut new = old.clone();
            new.search_attributes = Some(attributes(&mut rng));
            if new.status == 1 && n % 2 == 0 {
                new.status = 2;
                new.close_time = Some(chronicle_proto::wkt::Timestamp {
                    seconds: 150,
                    nanos: 0,
                });
            }
            write(&db, Some(&old), Some(&new));
            runs.insert(id.clone(), new);
        }
    }
    check_all(&db, &runs);

    // No row is left behind: deleting every run leaves no row of the namespace.
    for state in std::mem::take(&mut runs).values() {
        write(&db, Some(state), None);
    }
    let prefix = chronicle_storage::keys::KeyBuf::shard(SHARD)
        .str("ns")
        .build();
    let mut iter = db.prefix_iterator(Cf::Visibility, &prefix);
    iter.seek(&prefix);
    assert!(iter.key().is_none(), "rows outlived their runs");
}
