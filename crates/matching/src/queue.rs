//! A task queue partition held in memory: its queued tasks and queries, its waiting polls and
//! what a poll finds on arrival.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use chronicle_cluster::{QueryTask, TaskRef};
use tokio::sync::oneshot;

use crate::metric_defs::PollOutcome;
use crate::{backlog, forward};

// Handed once through a oneshot to a waiting poller; boxing the query would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Dispatch {
    Task(TaskRef),
    Query(QueryTask),
}

/// A dispatch handed straight to a waiting poll (a sync match), and when: the poll reports the
/// time until history recorded the task as started as `syncmatch_latency`.
pub(crate) struct Handoff {
    pub(crate) dispatch: Dispatch,
    pub(crate) handed_at: Instant,
}

impl Handoff {
    pub(crate) fn into_sync_match(self) -> (Dispatch, PollOutcome) {
        (
            self.dispatch,
            PollOutcome::Sync {
                handed_at: Some(self.handed_at),
                forwarded: false,
            },
        )
    }
}

/// What a poll finds on arrival (moved once, straight out: boxing would only add an allocation).
#[allow(clippy::large_enum_variant)]
pub(crate) enum Taken {
    /// Found waiting here, and how it counts.
    Now(Dispatch, PollOutcome),
    Wait(oneshot::Receiver<Handoff>),
}

#[derive(Default)]
pub(crate) struct Queue {
    pub(crate) tasks: VecDeque<TaskRef>,
    /// (shard, outbox row) of queued tasks, and when each was queued (a poll that takes it
    /// reports the wait as `asyncmatch_latency`): a re-dispatched task is not queued twice.
    pub(crate) queued: HashMap<(u32, u64), Instant>,
    pub(crate) queries: VecDeque<QueryTask>,
    pub(crate) pollers: VecDeque<oneshot::Sender<Handoff>>,
    /// Identity -> last poll, for DescribeTaskQueue.
    pub(crate) recent_pollers: HashMap<String, (Instant, std::time::SystemTime)>,
    /// Root partition: tasks of child partitions waiting here for a poller (`forward_task`).
    pub(crate) offers: VecDeque<forward::PendingOffer>,
    /// Child partition: a task forwarder runs for its backlog.
    pub(crate) draining: bool,
    /// Child partition: one of its polls is forwarded to the root (at most one at a time).
    pub(crate) forwarding_poll: bool,
    /// When this node started holding the queue (`no_poller_tasks` waits for it to age).
    pub(crate) loaded_at: backlog::LoadedAt,
    /// A sticky queue: the normal queue its worker polls too (learned from its polls; empty
    /// until one arrived), which its metrics are reported under.
    pub(crate) sticky_normal_name: Option<String>,
}

/// A sticky queue with no poll for this long has no worker (Temporal's window is the same).
pub(crate) const STICKY_POLLER_WINDOW: Duration = Duration::from_secs(10);

/// How long a poller's identity is remembered (DescribeTaskQueue shows it this long).
pub(crate) const POLLER_MEMORY: Duration = Duration::from_secs(300);

impl Queue {
    /// Nothing waits in it and nobody polled it lately: it can be forgotten.
    pub(crate) fn is_idle(&self) -> bool {
        self.tasks.is_empty()
            && self.queries.is_empty()
            && self.offers.iter().all(forward::PendingOffer::is_abandoned)
            && !self.draining
            && !self.forwarding_poll
            && self.pollers.iter().all(|p| p.is_closed())
            && self
                .recent_pollers
                .values()
                .all(|(at, _)| at.elapsed() >= POLLER_MEMORY)
    }

    /// Whether a poller waits now or polled within [`STICKY_POLLER_WINDOW`].
    pub(crate) fn has_recent_poller(&self) -> bool {
        self.polled_within(STICKY_POLLER_WINDOW)
    }

    /// Hands `dispatch` to a waiting poller, or gives it back when none is waiting.
    pub(crate) fn offer(&mut self, mut dispatch: Dispatch) -> Option<Dispatch> {
        let handed_at = Instant::now();
        while let Some(poller) = self.pollers.pop_front() {
            match poller.send(Handoff {
                dispatch,
                handed_at,
            }) {
                Ok(()) => return None,
                // That poll was cancelled or timed out; try the next one.
                Err(back) => dispatch = back.dispatch,
            }
        }
        Some(dispatch)
    }
}
