use super::*;
use crate::db::{Db, DbOptions};

fn timer(n: i32) -> pb::TimerTask {
    pb::TimerTask {
        attempt: n,
        ..Default::default()
    }
}

#[test]
fn rollback_undoes_exactly_the_writes_after_its_savepoint() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = Db::open(dir.path(), DbOptions::default()).expect("db");
    let mut batch = ShardBatch::new(ShardTables::new(db, 7));
    let kept = batch.put_timer(100, &timer(1)).expect("put");
    let outer = batch.savepoint();
    let overwritten_then_undone = batch.put_timer(200, &timer(2)).expect("put");
    let inner = batch.savepoint();
    batch.delete_timer(&kept);
    let undone = batch.put_timer(300, &timer(3)).expect("put");
    assert!(!batch.timer_exists(&kept).unwrap());
    batch.rollback(inner);
    // The inner rollback restores the deleted timer, drops the newer one, keeps the middle.
    assert!(batch.timer_exists(&kept).unwrap());
    assert!(!batch.timer_exists(&undone).unwrap());
    assert!(batch.timer_exists(&overwritten_then_undone).unwrap());
    batch.rollback(outer);
    assert!(batch.timer_exists(&kept).unwrap());
    assert!(!batch.timer_exists(&overwritten_then_undone).unwrap());
    // Task IDs allocated after the savepoint are handed out again.
    let again = batch.put_timer(200, &timer(2)).expect("put");
    assert_eq!(again, overwritten_then_undone);
    batch.commit().expect("commit");
}

#[test]
fn deleting_a_run_removes_its_whole_history_and_rolls_back() {
    use chronicle_proto::temporal::api::history::v1::HistoryEvent;
    let dir = tempfile::tempdir().expect("temp dir");
    let db = Db::open(dir.path(), DbOptions::default()).expect("db");
    let event = |id| HistoryEvent {
        event_id: id,
        ..Default::default()
    };
    let mut batch = ShardBatch::new(ShardTables::new(db.clone(), 3));
    batch.append_history("ns", "wf", "run", vec![event(1), event(2)]);
    batch.append_history("ns", "wf", "run", vec![event(3)]);
    batch.append_history("ns", "wf", "run2", vec![event(1)]);
    batch.commit().expect("commit");

    let mut batch = ShardBatch::new(ShardTables::new(db.clone(), 3));
    // A pending write of the run goes too; a later one survives.
    batch.append_history("ns", "wf", "run", vec![event(4)]);
    let savepoint = batch.savepoint();
    batch.delete_run("ns", "wf", "run").expect("delete");
    let key = keys::history(3, "ns", "wf", "run", 4);
    assert!(batch.get(Cf::History, &key).unwrap().is_none());
    batch.rollback(savepoint);
    assert!(batch.get(Cf::History, &key).unwrap().is_some());
    batch.delete_run("ns", "wf", "run").expect("delete");
    batch.append_history("ns", "wf", "run", vec![event(9)]);
    batch.commit().expect("commit");
    let tables = ShardTables::new(db, 3);
    let left: Vec<i64> = tables
        .history("ns", "wf", "run", 1, 100)
        .unwrap()
        .iter()
        .map(|e| e.event_id)
        .collect();
    assert_eq!(left, vec![9]);
    assert_eq!(tables.history("ns", "wf", "run2", 1, 100).unwrap().len(), 1);
}

/// Reads of one run's history use the `history` family's run filters (`Db::open`): with
/// runs spread over SST files of several levels and the memtable, every read from any event
/// still returns exactly that run's events, and scans of a whole workflow or shard (total
/// order) still see every run.
#[test]
fn run_filters_never_hide_history() {
    use chronicle_proto::temporal::api::history::v1::HistoryEvent;
    let dir = tempfile::tempdir().expect("temp dir");
    let db = Db::open(dir.path(), DbOptions::default()).expect("db");
    let events = |ids: std::ops::RangeInclusive<i64>| -> Vec<HistoryEvent> {
        ids.map(|event_id| HistoryEvent {
            event_id,
            ..Default::default()
        })
        .collect()
    };
    // Run r of workflow w: batches [1-3], [4], [5-9]; written in three rounds, each flushed
    // (the first rounds compacted down), the last round's left in the memtable.
    let runs: Vec<(String, String)> = (0..40)
        .map(|i| (format!("wf-{}", i % 10), format!("run-{i}")))
        .collect();
    for (round, batch_events) in [events(1..=3), events(4..=4), events(5..=9)]
        .into_iter()
        .enumerate()
    {
        let mut batch = ShardBatch::new(ShardTables::new(db.clone(), 2));
        for (workflow, run) in &runs {
            batch.append_history("ns", workflow, run, batch_events.clone());
        }
        // Runs that exist only in this round's file, so most files lack most runs.
        batch.append_history("ns", "only", &format!("round-{round}"), events(1..=2));
        batch.commit().expect("commit");
        if round < 2 {
            db.flush().expect("flush");
        }
        if round == 0 {
            db.rocks()
                .compact_range_cf(db.cf(Cf::History), None::<&[u8]>, None::<&[u8]>);
        }
    }
    let tables = ShardTables::new(db.clone(), 2);
    let ids = |workflow: &str, run: &str, from: i64| -> Vec<i64> {
        tables
            .history("ns", workflow, run, from, 100)
            .expect("read")
            .iter()
            .map(|e| e.event_id)
            .collect()
    };
    for (workflow, run) in &runs {
        for from in 1..=10 {
            let expected: Vec<i64> = (from..=9).collect();
            assert_eq!(
                ids(workflow, run, from),
                expected,
                "{workflow}/{run} from {from}"
            );
        }
        assert!(ids(workflow, "no-such-run", 1).is_empty());
    }
    for round in 0..3 {
        assert_eq!(ids("only", &format!("round-{round}"), 1), vec![1, 2]);
        assert_eq!(ids("only", &format!("round-{round}"), 2), vec![2]);
    }
    // A page cut short, then the rest.
    assert_eq!(
        tables
            .history("ns", "wf-3", "run-13", 2, 4)
            .expect("read")
            .len(),
        4
    );
    // Scans across runs see every batch: 40 runs of three, three runs of one.
    let mut all = db.prefix_iterator(Cf::History, &keys::shard_prefix(2));
    all.seek(keys::shard_prefix(2));
    let mut count = 0;
    while all.valid() {
        count += 1;
        all.next();
    }
    assert_eq!(count, 40 * 3 + 3);
    let workflow = keys::KeyBuf::shard(2).str("ns").str("wf-3").build();
    let mut runs_of_one = db.prefix_iterator(Cf::History, &workflow);
    runs_of_one.seek(&workflow);
    let mut count = 0;
    while runs_of_one.valid() {
        count += 1;
        runs_of_one.next();
    }
    assert_eq!(count, 4 * 3);
}
