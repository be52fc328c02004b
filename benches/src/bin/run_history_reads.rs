//! Times reads of single runs' histories in a grown data directory, the read a workflow task's
//! poll and a client's wait for the result make, with and without the `history` family's run
//! filters, on the same files in one process:
//!
//!     run_history_reads DATA_DIR [RUNS]
//!
//! It writes RUNS new runs (default 20,000; three batches each, as an `echo` run has) into the
//! directory's first namespace, so they sit in the memtable as a just-started run does, then
//! reads each of them and as many of the directory's older runs (sampled from its SST files)
//! twice: through a total-order iterator with a backward seek (how every read worked before the
//! filters) and through `ShardTables::history` (the run filters, a forward seek). Stop the
//! server first; the runs written stay in the directory.

use std::path::PathBuf;
use std::time::Instant;

use chronicle_proto::temporal::api::history::v1::HistoryEvent;
use chronicle_storage::{Cf, Db, DbOptions, ShardBatch, ShardTables, keys};

/// A run as the keys name it.
struct Run {
    namespace_id: String,
    workflow_id: String,
    run_id: String,
}

/// Splits a `history` key into its run's three strings.
fn run_of(key: &[u8]) -> Option<Run> {
    let mut at = 4usize;
    let mut parts = Vec::with_capacity(3);
    for _ in 0..3 {
        let len = usize::from(u16::from_be_bytes(key.get(at..at + 2)?.try_into().ok()?));
        parts.push(String::from_utf8(key.get(at + 2..at + 2 + len)?.to_vec()).ok()?);
        at += 2 + len;
    }
    let run_id = parts.pop()?;
    let workflow_id = parts.pop()?;
    let namespace_id = parts.pop()?;
    Some(Run {
        namespace_id,
        workflow_id,
        run_id,
    })
}

/// The read as it was before the run filters: a total-order iterator, a backward seek to the
/// batch holding event 1, then forward over the run's batches.
fn read_total_order(db: &Db, shard: u32, run: &Run) -> usize {
    let prefix = keys::history_prefix(shard, &run.namespace_id, &run.workflow_id, &run.run_id);
    let mut iter = db.prefix_iterator(Cf::History, &prefix);
    iter.seek_for_prev(keys::history(
        shard,
        &run.namespace_id,
        &run.workflow_id,
        &run.run_id,
        1,
    ));
    if !iter.valid() {
        iter.seek(&prefix);
    }
    let mut events = 0;
    while let Some(value) = iter.value() {
        events +=
            <chronicle_proto::chronicle::persistence::v1::HistoryBatch as prost::Message>::decode(
                value,
            )
            .map(|b| b.events.len())
            .unwrap_or(0);
        iter.next();
    }
    events
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir: PathBuf = args
        .next()
        .ok_or("usage: run_history_reads DATA_DIR [RUNS]")?
        .into();
    let count: usize = args
        .next()
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(20_000);
    let db = Db::open(&dir, DbOptions::default())?;

    // Older runs: every 50th run of the directory, up to `count`.
    let mut old = Vec::with_capacity(count);
    let mut seen = 0usize;
    let mut all = db.prefix_iterator(Cf::History, &[]);
    all.seek([]);
    let mut last: Option<Vec<u8>> = None;
    while let Some(key) = all.key() {
        if old.len() >= count {
            break;
        }
        let run_prefix = keys::history_run_prefix_len(key).map(|n| key[..n].to_vec());
        if run_prefix.is_some() && run_prefix != last {
            if seen.is_multiple_of(50) {
                let shard = u32::from_be_bytes(key[..4].try_into()?);
                if let Some(run) = run_of(key) {
                    old.push((shard, run));
                }
            }
            seen += 1;
            last = run_prefix;
        }
        all.next();
    }
    drop(all);
    let (shard, namespace_id) = match old.first() {
        Some((shard, run)) => (*shard, run.namespace_id.clone()),
        None => return Err("no history in this directory".into()),
    };

    // New runs, in the memtable: three batches each (1-2, 3-4, 5), as an echo run writes them.
    let stamp = std::process::id();
    let new: Vec<Run> = (0..count)
        .map(|i| Run {
            namespace_id: namespace_id.clone(),
            workflow_id: format!("history-read-{stamp}-{i}"),
            run_id: format!("{:032x}", (u128::from(stamp) << 64) | i as u128),
        })
        .collect();
    let event = |event_id| HistoryEvent {
        event_id,
        ..Default::default()
    };
    for chunk in new.chunks(500) {
        let mut batch = ShardBatch::new(ShardTables::new(db.clone(), shard));
        for run in chunk {
            for events in [
                vec![event(1), event(2)],
                vec![event(3), event(4)],
                vec![event(5)],
            ] {
                batch.append_history(&run.namespace_id, &run.workflow_id, &run.run_id, events);
            }
        }
        batch.commit()?;
    }

    let tables = ShardTables::new(db.clone(), shard);
    let filtered = |run: &Run| {
        tables
            .history(
                &run.namespace_id,
                &run.workflow_id,
                &run.run_id,
                1,
                usize::MAX,
            )
            .map(|events| events.len())
            .unwrap_or(0)
    };
    println!(
        "{count} new runs (memtable), {} older runs (SST files)",
        old.len()
    );
    println!("{:<34} {:>12} {:>12}", "", "total order", "run filters");
    for (label, runs) in [
        (
            "new runs: µs per read",
            new.iter().map(|r| (shard, r)).collect::<Vec<_>>(),
        ),
        (
            "older runs: µs per read",
            old.iter().map(|(s, r)| (*s, r)).collect(),
        ),
    ] {
        let mut times = [0f64; 2];
        // Twice each, interleaved, the second round counted (the first warms the cache).
        for round in 0..2 {
            for (which, time) in times.iter_mut().enumerate() {
                let started = Instant::now();
                let mut events = 0;
                for (s, run) in &runs {
                    events += if which == 0 {
                        read_total_order(&db, *s, run)
                    } else {
                        filtered(run)
                    };
                }
                assert!(events >= runs.len(), "every run has events");
                if round == 1 {
                    *time = started.elapsed().as_secs_f64() * 1e6 / runs.len() as f64;
                }
            }
        }
        println!("{label:<34} {:>12.2} {:>12.2}", times[0], times[1]);
    }
    Ok(())
}
