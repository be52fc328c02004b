//! Applying shard commands: `HistoryApplier::apply` into a `ShardBatch`, then the batch's commit
//! (one RocksDB write, no fsync), as the Raft state machine does for committed log entries.
//!
//! - `apply/command/<kind>`: one command per apply batch, for each kind a workflow with one
//!   activity goes through. Every iteration works on a fresh workflow brought to the right point
//!   beforehand, outside the timed section.
//! - `apply/batch/<n>`: batches of n commands from a stream of 16 workflows in flight, the mix a
//!   busy shard sees (start, workflow tasks, activity start and completion, completion).
//! - `apply/without_commit/<n>`: the same batches with only the applier's work timed; the commit
//!   still happens (the next commands need the state) but outside the timed section. The
//!   difference to `apply/batch/<n>` is the cost of the RocksDB write.

use std::time::{Duration, Instant};

use chronicle_benches::scratch::ScratchDb;
use chronicle_benches::workload::{self, CommandStream, Step, WorkflowScript};
use chronicle_storage::{ShardBatch, ShardTables};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use prost::Message;

/// Workflows of the per-kind benches are numbered from here, apart from the stream's.
const PER_KIND_FIRST_WORKFLOW: u64 = 1 << 40;
/// Commands applied per commit while preparing workflows (not timed).
const PREPARE_BATCH: usize = 256;

fn apply_benches(c: &mut Criterion) {
    // Whether the log fsyncs does not matter here: state-machine writes never do.
    let scratch = ScratchDb::open(true);
    let tables = ShardTables::new(scratch.db.clone(), 0);
    let applier = workload::history_applier();
    let mut log_index = 1u64;

    let mut group = c.benchmark_group("apply/batch");
    let mut stream = CommandStream::new(0, 16, 1);
    for batch_size in [1usize, 16, 128] {
        group.throughput(Throughput::Elements(batch_size as u64));
        group.bench_function(BenchmarkId::from_parameter(batch_size), |b| {
            b.iter_custom(|iters| {
                let commands = stream.take(iters as usize * batch_size);
                let mut results = Vec::with_capacity(commands.len());
                let started = Instant::now();
                for batch in commands.chunks(batch_size) {
                    results.extend(workload::apply_batch(&applier, &tables, log_index, batch));
                    log_index += batch.len() as u64;
                }
                let elapsed = started.elapsed();
                workload::assert_all_ok(&results);
                elapsed
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("apply/without_commit");
    for batch_size in [1usize, 16, 128] {
        group.throughput(Throughput::Elements(batch_size as u64));
        group.bench_function(BenchmarkId::from_parameter(batch_size), |b| {
            b.iter_custom(|iters| {
                let commands = stream.take(iters as usize * batch_size);
                let mut results = Vec::with_capacity(commands.len());
                let mut elapsed = Duration::ZERO;
                for commands in commands.chunks(batch_size) {
                    let mut batch = ShardBatch::new(tables.clone());
                    let started = Instant::now();
                    results.extend(workload::apply_into(
                        &applier, &mut batch, log_index, commands,
                    ));
                    elapsed += started.elapsed();
                    log_index += commands.len() as u64;
                    workload::commit(batch, log_index - 1);
                }
                workload::assert_all_ok(&results);
                elapsed
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("apply/command");
    group.throughput(Throughput::Elements(1));
    let steps: Vec<Step> = WorkflowScript::new(0, 1)
        .commands()
        .into_iter()
        .map(|(step, _)| step)
        .collect();
    let mut next_workflow = PER_KIND_FIRST_WORKFLOW;
    for (position, step) in steps.iter().enumerate() {
        // The second RecordWorkflowTaskStarted of the script costs the same as the first.
        if steps[..position].contains(step) {
            continue;
        }
        group.bench_function(step.label(), |b| {
            b.iter_custom(|iters| {
                let scripts: Vec<Vec<Vec<u8>>> = (0..iters)
                    .map(|_| {
                        next_workflow += 1;
                        WorkflowScript::new(next_workflow, 1)
                            .commands()
                            .into_iter()
                            .map(|(_, c)| c.encode_to_vec())
                            .collect()
                    })
                    .collect();
                let preparation: Vec<Vec<u8>> = scripts
                    .iter()
                    .flat_map(|s| s[..position].iter().cloned())
                    .collect();
                for batch in preparation.chunks(PREPARE_BATCH) {
                    let results = workload::apply_batch(&applier, &tables, log_index, batch);
                    workload::assert_all_ok(&results);
                    log_index += batch.len() as u64;
                }
                let mut results = Vec::with_capacity(scripts.len());
                let started = Instant::now();
                for script in &scripts {
                    let command = std::slice::from_ref(&script[position]);
                    results.extend(workload::apply_batch(&applier, &tables, log_index, command));
                    log_index += 1;
                }
                let elapsed = started.elapsed();
                workload::assert_all_ok(&results);
                elapsed
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = chronicle_benches::quick_criterion();
    targets = apply_benches
}
criterion_main!(benches);
