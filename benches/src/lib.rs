//! Workloads shared by the micro-benchmarks in `benches/`: scratch databases, the shard commands
//! of a workflow's life, and histories laid out the way the engine stores them.
//!
//! Everything here goes through the crates' public API, so a bench measures the code the server
//! runs, not a copy of it. The unit tests at the bottom keep the workloads honest: if the engine
//! starts rejecting a command the benches send, they fail in CI instead of the benches silently
//! timing the error path.

pub mod history;
pub mod scratch;
pub mod workload;

/// Criterion settings shared by every bench: short runs, so that the whole suite finishes in a
/// few minutes on a 2-core machine.
pub fn quick_criterion() -> criterion::Criterion {
    criterion::Criterion::default()
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(3))
        .sample_size(20)
}

#[cfg(test)]
mod tests {
    use chronicle_storage::ShardTables;

    use crate::history::{self, SERVER_PAGE_EVENTS};
    use crate::scratch::ScratchDb;
    use crate::workload::{self, CommandStream};

    #[test]
    fn command_stream_applies_without_rejections() {
        let scratch = ScratchDb::open(false);
        let tables = ShardTables::new(scratch.db.clone(), 0);
        let applier = workload::history_applier();
        // Three windows of 4 workflows, 7 commands each, in batches that cut across workflows.
        let mut stream = CommandStream::new(0, 4, 1);
        let mut index = 1;
        for size in [1, 16, 7, 60] {
            let commands = stream.take(size);
            workload::assert_all_ok(&workload::apply_batch(&applier, &tables, index, &commands));
            index += size as u64;
        }
    }

    #[test]
    fn three_activity_history_is_the_engines() {
        let events = history::three_activity_history();
        assert_eq!(events.len(), 23);
        assert!(events.iter().zip(1..).all(|(e, id)| e.event_id == id));
    }

    #[test]
    fn engine_layout_history_reads_back_whole() {
        for total in [1, 10, 2_345] {
            let groups = history::engine_layout_batches(total);
            let ids: Vec<i64> = groups.iter().flatten().map(|e| e.event_id).collect();
            assert_eq!(ids, (1..=total as i64).collect::<Vec<_>>());

            let scratch = ScratchDb::open(false);
            let tables = ShardTables::new(scratch.db.clone(), 3);
            let run = history::write_run(&tables, "wf", total);
            assert_eq!(
                history::read_run_paged(&tables, &run, SERVER_PAGE_EVENTS),
                total
            );
            assert_eq!(history::read_run_paged(&tables, &run, 7), total);
        }
    }
}
