//! prost encoding and decoding of a `HistoryBatch`, the value of every `history` row: encoded when
//! a command appends events, decoded by every history read.
//!
//! - `three_activity_workflow`: the 23 events of a workflow that ran three activities, as the
//!   engine produced them (small payloads: the bytes are mostly IDs, names and timestamps).
//! - `100_events_1KiB_payloads`: activity scheduled/completed events carrying 1 KiB each.

use std::hint::black_box;

use chronicle_benches::history;
use chronicle_proto::chronicle::persistence::v1::HistoryBatch;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use prost::Message;

fn codec_benches(c: &mut Criterion) {
    let cases = [
        ("three_activity_workflow", history::three_activity_history()),
        (
            "100_events_1KiB_payloads",
            history::large_payload_events(100, 1024),
        ),
    ];
    let mut group = c.benchmark_group("event_codec");
    for (name, events) in cases {
        let batch = HistoryBatch { events };
        let encoded = batch.encode_to_vec();
        group.throughput(Throughput::ElementsAndBytes {
            elements: batch.events.len() as u64,
            bytes: encoded.len() as u64,
        });
        group.bench_function(BenchmarkId::new("encode", name), |b| {
            b.iter(|| black_box(&batch).encode_to_vec())
        });
        group.bench_function(BenchmarkId::new("decode", name), |b| {
            b.iter(|| HistoryBatch::decode(black_box(encoded.as_slice())).expect("decodes"))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = chronicle_benches::quick_criterion();
    targets = codec_benches
}
criterion_main!(benches);
