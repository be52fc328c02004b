//! Queries that arrive while a workflow task is scheduled or running.
//!
//! Sending such a query straight to a worker would answer it from a state that misses the events
//! the pending task is about to deliver. As Temporal's server does, the query is buffered instead:
//! it rides on the next workflow task the worker starts (`PollWorkflowTaskQueueResponse.queries`)
//! and its answer comes back in `RespondWorkflowTaskCompleted.query_results`. When the run reaches
//! a point with no workflow task pending (the task completed without answering it, or the run
//! closed) the waiter takes its query back and sends it to a worker as a query task.
//!
//! The buffer lives in memory on the shard leader: a query is a read, and a leader change simply
//! lets the client's waiting call time out, as it would with Temporal's server.

use std::collections::HashMap;
use std::sync::Mutex;

use chronicle_proto::temporal::api::query::v1::{WorkflowQuery, WorkflowQueryResult};
use tokio::sync::oneshot;

/// Most queries buffered for one run at a time. Temporal's default is 1, which turns bursts of
/// queries (a UI polling while a worker is busy) into errors; Chronicle buffers more.
pub(crate) const MAX_BUFFERED_QUERIES_PER_RUN: usize = 64;

/// (namespace id, workflow id, run id).
pub(crate) type RunKey = (String, String, String);

struct Buffered {
    id: String,
    query: WorkflowQuery,
    answer: oneshot::Sender<WorkflowQueryResult>,
    /// A workflow task completion carrying this query's result is being committed: the waiter
    /// must not take the query back for a direct dispatch meanwhile.
    answering: bool,
}

#[derive(Default)]
pub(crate) struct QueryRegistry {
    runs: Mutex<HashMap<RunKey, Vec<Buffered>>>,
}

pub(crate) enum Registration {
    Buffered(oneshot::Receiver<WorkflowQueryResult>),
    /// No workflow task is pending: the query can go to a worker directly.
    Direct,
    Full,
}

impl QueryRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RunKey, Vec<Buffered>>> {
        self.runs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Buffers the query if `must_buffer()` (evaluated under the registry's lock, so it cannot
    /// interleave with `take_if` deciding about the same run).
    pub(crate) fn register(
        &self,
        key: &RunKey,
        id: &str,
        query: WorkflowQuery,
        must_buffer: impl FnOnce() -> bool,
    ) -> Registration {
        let mut runs = self.lock();
        if !must_buffer() {
            return Registration::Direct;
        }
        let entries = runs.entry(key.clone()).or_default();
        if entries.len() >= MAX_BUFFERED_QUERIES_PER_RUN {
            return Registration::Full;
        }
        let (tx, rx) = oneshot::channel();
        entries.push(Buffered {
            id: id.to_string(),
            query,
            answer: tx,
            answering: false,
        });
        Registration::Buffered(rx)
    }

    /// The buffered queries of a run, to attach to the workflow task being started.
    pub(crate) fn attach(&self, key: &RunKey) -> HashMap<String, WorkflowQuery> {
        self.lock()
            .get(key)
            .map(|entries| {
                entries
                    .iter()
                    .map(|e| (e.id.clone(), e.query.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Marks (or unmarks) the queries a workflow task completion is about to answer.
    pub(crate) fn set_answering<'a>(
        &self,
        key: &RunKey,
        ids: impl Iterator<Item = &'a String>,
        answering: bool,
    ) {
        let mut runs = self.lock();
        let Some(entries) = runs.get_mut(key) else {
            return;
        };
        for id in ids {
            if let Some(e) = entries.iter_mut().find(|e| &e.id == id) {
                e.answering = answering;
            }
        }
    }

    /// Hands the results of a committed workflow task completion to their waiters.
    pub(crate) fn answer(&self, key: &RunKey, results: HashMap<String, WorkflowQueryResult>) {
        let mut runs = self.lock();
        let Some(entries) = runs.get_mut(key) else {
            return;
        };
        for (id, result) in results {
            if let Some(pos) = entries.iter().position(|e| e.id == id) {
                let entry = entries.swap_remove(pos);
                let _ = entry.answer.send(result);
            }
        }
        if entries.is_empty() {
            runs.remove(key);
        }
    }

    /// Removes the query if it is still buffered, not being answered, and `safe()` says it may
    /// now go to a worker directly. True when it was removed.
    pub(crate) fn take_if(&self, key: &RunKey, id: &str, safe: impl FnOnce() -> bool) -> bool {
        let mut runs = self.lock();
        let Some(entries) = runs.get_mut(key) else {
            return false;
        };
        let Some(pos) = entries.iter().position(|e| e.id == id) else {
            return false;
        };
        if entries[pos].answering || !safe() {
            return false;
        }
        entries.swap_remove(pos);
        if entries.is_empty() {
            runs.remove(key);
        }
        true
    }

    /// Forgets a query whose caller stopped waiting.
    pub(crate) fn remove(&self, key: &RunKey, id: &str) {
        let mut runs = self.lock();
        if let Some(entries) = runs.get_mut(key) {
            entries.retain(|e| e.id != id);
            if entries.is_empty() {
                runs.remove(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> RunKey {
        ("ns".into(), "wf".into(), "run".into())
    }

    fn query(name: &str) -> WorkflowQuery {
        WorkflowQuery {
            query_type: name.into(),
            ..Default::default()
        }
    }

    #[test]
    fn buffered_query_is_attached_then_answered() {
        let registry = QueryRegistry::default();
        let Registration::Buffered(mut rx) =
            registry.register(&key(), "q1", query("state"), || true)
        else {
            panic!("expected a buffered query");
        };
        let attached = registry.attach(&key());
        assert_eq!(attached.len(), 1);
        assert_eq!(attached["q1"].query_type, "state");
        assert!(rx.try_recv().is_err());
        let result = WorkflowQueryResult {
            result_type: 1,
            ..Default::default()
        };
        registry.answer(&key(), HashMap::from([("q1".to_string(), result)]));
        assert_eq!(rx.try_recv().expect("answered").result_type, 1);
        assert!(registry.attach(&key()).is_empty());
    }

    #[test]
    fn no_pending_task_means_direct() {
        let registry = QueryRegistry::default();
        assert!(matches!(
            registry.register(&key(), "q1", query("state"), || false),
            Registration::Direct
        ));
        assert!(registry.attach(&key()).is_empty());
    }

    #[test]
    fn a_query_being_answered_is_not_taken_back() {
        let registry = QueryRegistry::default();
        let _rx = registry.register(&key(), "q1", query("state"), || true);
        let ids = ["q1".to_string()];
        registry.set_answering(&key(), ids.iter(), true);
        assert!(!registry.take_if(&key(), "q1", || true));
        registry.set_answering(&key(), ids.iter(), false);
        assert!(!registry.take_if(&key(), "q1", || false));
        assert!(registry.take_if(&key(), "q1", || true));
        assert!(registry.attach(&key()).is_empty());
    }

    #[test]
    fn buffer_is_bounded_per_run() {
        let registry = QueryRegistry::default();
        let mut receivers = Vec::new();
        for i in 0..MAX_BUFFERED_QUERIES_PER_RUN {
            match registry.register(&key(), &format!("q{i}"), query("s"), || true) {
                Registration::Buffered(rx) => receivers.push(rx),
                _ => panic!("query {i} should be buffered"),
            }
        }
        assert!(matches!(
            registry.register(&key(), "one-more", query("s"), || true),
            Registration::Full
        ));
    }
}
