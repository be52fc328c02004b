//! Committing through a shard's Raft group: `chronicle_raft::propose` on a single-voter group
//! started as start-dev starts it (`start_group` with `bootstrap_single_voter`), with an applier
//! that does nothing, so what is timed is openraft, the log append (RocksDB write + fsync) and
//! the state machine's applied-index write.
//!
//! - `<mode>/one_proposal`: latency of one proposal with nothing else in flight.
//! - `<mode>/64_concurrent`: 64 proposals in flight at once (each in its own task, as gRPC
//!   requests are), timed until all are answered; openraft batches them into fewer appends.
//!
//! - `fsync/64_concurrent_over_8_groups`: the same 64 proposals spread over 8 groups of one
//!   node's database, where RocksDB can fold the groups' synced log writes into shared fsyncs.
//!
//! `<mode>` is `fsync` (the server's default) or `no_fsync` (`DbOptions::sync_writes = false`).

use std::sync::Arc;
use std::time::Duration;

use chronicle_benches::scratch::ScratchDb;
use chronicle_benches::workload::CommandStream;
use chronicle_raft::{Applier, ShardRaft};
use chronicle_storage::{ShardBatch, StorageError};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tokio::runtime::Runtime;
use tokio::task::JoinSet;

const NODE_ID: u64 = 1;
const GROUP: u32 = 0;
const CONCURRENT: usize = 64;
const SPREAD_GROUPS: u32 = 8;

/// Accepts every command and writes nothing of its own, leaving Raft's own costs.
struct NoopApplier;

impl Applier for NoopApplier {
    fn apply(
        &self,
        _batch: &mut ShardBatch,
        _log_index: u64,
        _command: &[u8],
    ) -> Result<Vec<u8>, StorageError> {
        Ok(Vec::new())
    }
}

async fn start_single_voter(scratch: &ScratchDb, group: u32) -> ShardRaft {
    let raft = chronicle_raft::start_group(
        scratch.db.clone(),
        group,
        NODE_ID,
        "127.0.0.1:7233".to_string(),
        Arc::new(NoopApplier),
        true,
    )
    .await
    .expect("start the group");
    raft.wait(Some(Duration::from_secs(10)))
        .current_leader(NODE_ID, "single voter elected")
        .await
        .expect("the node becomes leader");
    raft
}

fn raft_commit_benches(c: &mut Criterion) {
    // Declared before the runtime so they are dropped after it: openraft's tasks keep clones of
    // the database until the runtime stops them, and a directory removed under an open RocksDB
    // is left half-deleted.
    let mut scratch_dbs = Vec::new();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    // Real encoded commands (a few hundred bytes each) so log entries have their usual size.
    let commands = CommandStream::new(0, 16, 1).take(1024);

    let mut group = c.benchmark_group("raft_commit");
    for sync in [true, false] {
        let mode = if sync { "fsync" } else { "no_fsync" };
        let scratch = ScratchDb::open(sync);
        let raft = runtime.block_on(start_single_voter(&scratch, GROUP));
        scratch_dbs.push(scratch);
        // Borrowed by the futures of every iteration, so they must outlive the closures.
        let (raft_ref, commands_ref) = (&raft, &commands);

        group.throughput(Throughput::Elements(1));
        group.bench_function(BenchmarkId::new(mode, "one_proposal"), |b| {
            let mut next = 0usize;
            b.to_async(&runtime).iter(move || {
                next += 1;
                let command = commands_ref[next % commands_ref.len()].clone();
                async move {
                    chronicle_raft::propose(raft_ref, GROUP, command)
                        .await
                        .expect("committed")
                }
            })
        });

        group.throughput(Throughput::Elements(CONCURRENT as u64));
        group.bench_function(
            BenchmarkId::new(mode, format!("{CONCURRENT}_concurrent")),
            |b| {
                let mut next = 0usize;
                b.to_async(&runtime).iter(move || {
                    next += CONCURRENT;
                    proposals_in_flight(raft_ref, commands_ref, next)
                })
            },
        );
        shutdown(&runtime, raft);
    }

    let scratch = ScratchDb::open(true);
    let groups: Vec<ShardRaft> = (0..SPREAD_GROUPS)
        .map(|group| runtime.block_on(start_single_voter(&scratch, group)))
        .collect();
    scratch_dbs.push(scratch);
    let (groups_ref, commands_ref) = (&groups, &commands);
    group.throughput(Throughput::Elements(CONCURRENT as u64));
    group.bench_function(
        BenchmarkId::new(
            "fsync",
            format!("{CONCURRENT}_concurrent_over_{SPREAD_GROUPS}_groups"),
        ),
        |b| {
            let mut next = 0usize;
            b.to_async(&runtime).iter(move || {
                next += CONCURRENT;
                proposals_spread(groups_ref, commands_ref, next)
            })
        },
    );
    for raft in groups {
        shutdown(&runtime, raft);
    }
    group.finish();
}

/// Proposal `i` goes to group `i % groups.len()`.
async fn proposals_spread(groups: &[ShardRaft], commands: &[Vec<u8>], first: usize) {
    let mut tasks = JoinSet::new();
    for i in first..first + CONCURRENT {
        let command = commands[i % commands.len()].clone();
        let group = i % groups.len();
        let raft = groups[group].clone();
        tasks.spawn(async move { chronicle_raft::propose(&raft, group as u32, command).await });
    }
    while let Some(answer) = tasks.join_next().await {
        answer.expect("task ran").expect("committed");
    }
}

async fn proposals_in_flight(raft: &ShardRaft, commands: &[Vec<u8>], first: usize) {
    let mut tasks = JoinSet::new();
    for i in first..first + CONCURRENT {
        let command = commands[i % commands.len()].clone();
        let raft = raft.clone();
        tasks.spawn(async move { chronicle_raft::propose(&raft, GROUP, command).await });
    }
    while let Some(answer) = tasks.join_next().await {
        answer.expect("task ran").expect("committed");
    }
}

fn shutdown(runtime: &Runtime, raft: ShardRaft) {
    runtime
        .block_on(raft.shutdown())
        .expect("group stops cleanly");
}

criterion_group! {
    name = benches;
    config = chronicle_benches::quick_criterion();
    targets = raft_commit_benches
}
criterion_main!(benches);
