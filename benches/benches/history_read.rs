//! Reading a run's whole history page by page, as `GetWorkflowExecutionHistory` without a page
//! size does (1,000 events a page): per page the run's state, then `ShardTables::history`, which
//! seeks to the batch holding the first wanted event and decodes `HistoryBatch` rows.
//!
//! The runs (10, 1,000 and 50,000 events) are written through `ShardBatch::append_history` in the
//! engine's layout (one row per command, 1–3 events a row) and flushed to SST files first. After
//! the first iteration the blocks are in RocksDB's block cache, so this is the warm-cache cost.

use chronicle_benches::history::{self, SERVER_PAGE_EVENTS};
use chronicle_benches::scratch::ScratchDb;
use chronicle_storage::ShardTables;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn history_read_benches(c: &mut Criterion) {
    let scratch = ScratchDb::open(false);
    let tables = ShardTables::new(scratch.db.clone(), 0);
    let runs: Vec<_> = [10usize, 1_000, 50_000]
        .into_iter()
        .map(|events| history::write_run(&tables, &format!("bench-history-{events}"), events))
        .collect();

    let mut group = c.benchmark_group("history_read");
    for run in &runs {
        group.throughput(Throughput::ElementsAndBytes {
            elements: run.events as u64,
            bytes: run.event_bytes,
        });
        group.bench_function(
            BenchmarkId::from_parameter(format!("{}_events", run.events)),
            |b| {
                b.iter(|| {
                    let read = history::read_run_paged(&tables, run, SERVER_PAGE_EVENTS);
                    assert_eq!(read, run.events);
                })
            },
        );
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = chronicle_benches::quick_criterion();
    targets = history_read_benches
}
criterion_main!(benches);
