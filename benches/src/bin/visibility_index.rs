//! A selective range on an Int custom search attribute over a shard of many runs: the count and
//! the first page (100) as `history/src/visibility.rs` reads them, through the index of every
//! run (what any custom-attribute filter read before the value index: every run fetched and
//! evaluated) and through the value index (only the slice's rows; the count from the rows
//! alone, as the planner does when the range is the whole filter). The runs are written through
//! `ShardBatch::commit`, which derives the index rows as apply does.
//!
//!   cargo run [--release] -p chronicle-benches --bin visibility_index -- [RUNS] [REPS]
//!   (defaults 100000 and 20; the scratch database goes to $CHRONICLE_BENCH_DIR or the temp dir)

use std::ops::Bound;
use std::time::Instant;

use chronicle_benches::scratch::ScratchDb;
use chronicle_proto::chronicle::persistence::v1::WorkflowExecutionState;
use chronicle_proto::temporal::api::common::v1::{Payload, SearchAttributes, WorkflowType};
use chronicle_storage::visibility::{self as vis, Kind, Scalar, Slice, TimeRange, VisIndex};
use chronicle_storage::{Cf, ShardBatch, ShardTables};

const NAMESPACE: &str = "bench-ns";
const PAGE: usize = 100;

/// A measured read: its label and what it returns (the runs it found).
type Case<'a> = (&'static str, Box<dyn FnMut() -> usize + 'a>);

fn state(i: u64, runs: u64) -> WorkflowExecutionState {
    let payload = |json: String, ty: &str| Payload {
        metadata: [
            ("encoding".to_string(), b"json/plain".to_vec()),
            ("type".to_string(), ty.as_bytes().to_vec()),
        ]
        .into(),
        data: json.into_bytes(),
        ..Default::default()
    };
    // Amounts are a permutation of 0..runs, so a range of width w holds w runs.
    let amount = (i * 7_919) % runs;
    let open = i.is_multiple_of(100);
    WorkflowExecutionState {
        namespace_id: NAMESPACE.into(),
        workflow_id: format!("order-{i:08}"),
        run_id: format!("{:032x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        workflow_type: Some(WorkflowType {
            name: "bench-order".into(),
        }),
        status: if open { 1 } else { 2 },
        start_time: Some(chronicle_proto::wkt::Timestamp {
            seconds: 1_700_000_000 + i as i64,
            nanos: 0,
        }),
        close_time: (!open).then(|| chronicle_proto::wkt::Timestamp {
            seconds: 1_700_000_060 + i as i64,
            nanos: 0,
        }),
        task_queue: "bench".into(),
        next_event_id: 12,
        search_attributes: Some(SearchAttributes {
            indexed_fields: [
                (
                    "OrderAmount".to_string(),
                    payload(amount.to_string(), "Int"),
                ),
                (
                    "Region".to_string(),
                    payload(format!("\"region-{}\"", i % 10), "Keyword"),
                ),
            ]
            .into(),
        }),
        ..Default::default()
    }
}

fn median_ms(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(|a, b| a.total_cmp(b));
    samples[samples.len() / 2]
}

/// Reads `index` as `list` does: each row's run fetched and the whole filter evaluated, until
/// `want` matches (a page plus one) or the end; returns the matches.
fn read(
    tables: &ShardTables,
    index: &VisIndex,
    query: &chronicle_visibility::ParsedQuery,
    want: Option<usize>,
) -> usize {
    let mut found = 0;
    vis::for_each(
        tables.db(),
        tables.shard(),
        NAMESPACE,
        index,
        None,
        &TimeRange::default(),
        want,
        |row| {
            let state = tables
                .execution(NAMESPACE, row.workflow_id, row.run_id)
                .expect("read a run")
                .expect("an indexed run exists");
            if chronicle_visibility::eval::matches(query, &state) {
                found += 1;
            }
            want.is_none_or(|w| found < w)
        },
    )
    .expect("read the index");
    found
}

fn main() {
    let mut args = std::env::args().skip(1);
    let runs: u64 = args.next().map_or(100_000, |a| a.parse().expect("RUNS"));
    let reps: usize = args.next().map_or(20, |a| a.parse().expect("REPS"));
    let scratch = ScratchDb::open(false);
    let tables = ShardTables::new(scratch.db.clone(), 0);
    let started = Instant::now();
    for chunk in (0..runs).collect::<Vec<_>>().chunks(1_000) {
        let mut batch = ShardBatch::new(tables.clone());
        for i in chunk {
            batch.put_execution(&state(*i, runs));
        }
        batch.commit().expect("commit");
    }
    for cf in [Cf::Executions, Cf::Visibility] {
        let db = scratch.db.rocks();
        db.flush_cf(scratch.db.cf(cf)).expect("flush");
        db.compact_range_cf(scratch.db.cf(cf), None::<&[u8]>, None::<&[u8]>);
    }
    println!(
        "{runs} runs written and compacted in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // 0.1% of the runs (at least one page's worth at 100k).
    let width = (runs / 1_000).max(1) as i64;
    let (lo, hi) = (runs as i64 / 3, runs as i64 / 3 + width - 1);
    let text = format!("OrderAmount BETWEEN {lo} AND {hi}");
    let registry = [("OrderAmount".to_string(), 3), ("Region".to_string(), 2)].into();
    let query = chronicle_visibility::parse(&text, &registry).expect("parse");
    let slice = VisIndex::Values {
        attribute: "OrderAmount".into(),
        kind: Kind::Int,
        slices: vec![Slice::Range {
            lower: vec![Bound::Included(Scalar::Int(lo))],
            upper: vec![Bound::Included(Scalar::Int(hi))],
        }],
    };
    let time = |f: &mut dyn FnMut() -> usize| {
        let mut samples = Vec::with_capacity(reps);
        let mut result = 0;
        for _ in 0..reps {
            let t = Instant::now();
            result = f();
            samples.push(t.elapsed().as_secs_f64() * 1e3);
        }
        (median_ms(samples), result)
    };
    let count_rows = || {
        let mut n = 0;
        vis::for_each(
            tables.db(),
            tables.shard(),
            NAMESPACE,
            &slice,
            None,
            &TimeRange::default(),
            None,
            |_| {
                n += 1;
                true
            },
        )
        .expect("count");
        n
    };
    let cases: [Case; 4] = [
        (
            "count, every run read (before)",
            Box::new(|| read(&tables, &VisIndex::All, &query, None)),
        ),
        ("count, value index rows (after)", Box::new(count_rows)),
        (
            "first page, every run read (before)",
            Box::new(|| read(&tables, &VisIndex::All, &query, Some(PAGE + 1))),
        ),
        (
            "first page, value index (after)",
            Box::new(|| read(&tables, &slice, &query, Some(PAGE + 1))),
        ),
    ];
    println!("query: {text} (median of {reps})");
    let mut medians = Vec::new();
    for (label, mut f) in cases {
        let (ms, result) = time(&mut *f);
        println!("{label:<40} {ms:>10.2} ms  {result} runs");
        medians.push(ms);
    }
    println!(
        "count {:.0}x faster, first page {:.0}x faster",
        medians[0] / medians[1],
        medians[2] / medians[3]
    );

    // A broad range (10% of the runs): the slice's keys are all read for a page, where the
    // index of every run stops after about ten pages of runs.
    let (lo, hi) = (0, runs as i64 / 10 - 1);
    let text = format!("OrderAmount BETWEEN {lo} AND {hi}");
    let query = chronicle_visibility::parse(&text, &registry).expect("parse");
    let broad = VisIndex::Values {
        attribute: "OrderAmount".into(),
        kind: Kind::Int,
        slices: vec![Slice::Range {
            lower: vec![Bound::Included(Scalar::Int(lo))],
            upper: vec![Bound::Included(Scalar::Int(hi))],
        }],
    };
    println!("query: {text} (median of {reps})");
    let (before, _) = time(&mut || read(&tables, &VisIndex::All, &query, Some(PAGE + 1)));
    let (after, _) = time(&mut || read(&tables, &broad, &query, Some(PAGE + 1)));
    println!("first page, every run read (before)      {before:>10.2} ms");
    println!("first page, value index (after)          {after:>10.2} ms");
    println!("first page {:.1}x faster", before / after);
}
