//! Forwarding between the partitions of a task queue. Tasks and polls spread over a queue's
//! partitions, which may live on different matching nodes; without forwarding, a task in
//! partition 3 would wait for a poll that happens to pick partition 3 while a lone poller waits
//! on partition 1. So, as in Temporal, child partitions lean on the root partition (0):
//!
//! - a poll of a child partition that finds nothing there waits on the root as well (a forwarded
//!   poll): whatever reaches the root first, or the child, answers it;
//! - a child partition's backlog is offered, a task at a time, to the root's pollers (sync match
//!   only: the root keeps it only while it waits for a poller, then hands it back).
//!
//! Together, one worker with one poller gets every task of every partition as soon as it exists.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chronicle_cluster::partition::parse_partition;
use chronicle_cluster::{ForwardedDispatch, MatchingService, TaskQueueKey, TaskRef};
use chronicle_types::ApiResult;
use tokio::sync::oneshot;

use crate::MatchingEngine;
use crate::metric_defs::{self, PollOutcome};
use crate::queue::{Dispatch, Handoff, Queue, Taken};

/// How long a child partition's task waits at the root for a poller before the child takes it
/// back (and offers it again).
const OFFER_WAIT: Duration = Duration::from_secs(5);
/// Pause before offering or polling again after the root's node could not be reached.
const RETRY_PAUSE: Duration = Duration::from_millis(500);
/// Pause before forwarding a poll again after the root answered it empty early (it moved, or
/// its node is stopping).
const FORWARD_AGAIN_PAUSE: Duration = Duration::from_millis(50);
/// How often a poll waiting on its child partition checks whether it may be the forwarded one.
const FORWARD_SLOT_RECHECK: Duration = Duration::from_millis(50);

/// A child partition's task waiting at the root partition for a poller.
pub(crate) struct PendingOffer {
    id: u64,
    task: TaskRef,
    offered_at: Instant,
    /// Told when a poller took the task.
    taken: oneshot::Sender<()>,
}

impl PendingOffer {
    /// Its offerer stopped waiting (the call from the child's node was cancelled).
    pub(crate) fn is_abandoned(&self) -> bool {
        self.taken.is_closed()
    }
}

/// The first offered task whose offerer still waits, for a poll of the root partition, and
/// when it was offered.
pub(crate) fn take_offer(queue: &mut Queue) -> Option<(TaskRef, Instant)> {
    while let Some(offer) = queue.offers.pop_front() {
        if offer.taken.send(()).is_ok() {
            metrics::counter!(metric_defs::TASKS_FORWARDED).increment(1);
            return Some((offer.task, offer.offered_at));
        }
    }
    None
}

/// A child partition's one forwarded poll, held while it waits on the root.
struct ForwardSlot<'a> {
    engine: &'a MatchingEngine,
    key: TaskQueueKey,
}

impl Drop for ForwardSlot<'_> {
    fn drop(&mut self) {
        let mut queues = self.engine.queues.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(queue) = queues.get_mut(&self.key) {
            queue.forwarding_poll = false;
        }
    }
}

fn root_of(key: &TaskQueueKey) -> TaskQueueKey {
    TaskQueueKey {
        namespace_id: key.namespace_id.clone(),
        name: parse_partition(&key.name).0.to_string(),
        kind: key.kind,
    }
}

impl MatchingEngine {
    /// Root partition: hands `task` to a waiting poller, or lets it wait up to `wait` for the
    /// next poll. `false`: no poller took it, the child partition keeps it.
    pub(crate) async fn offer_to_root_pollers(
        &self,
        root: TaskQueueKey,
        task: TaskRef,
        wait: Duration,
    ) -> ApiResult<bool> {
        if *self.stopping.borrow() {
            return Ok(false);
        }
        let id = self.next_offer_id.fetch_add(1, Ordering::Relaxed);
        let taken = {
            let mut queues = self.queues.lock().expect("matching lock");
            let queue = queues.entry(root.clone()).or_default();
            match queue.offer(Dispatch::Task(task)) {
                None => {
                    metrics::counter!(metric_defs::TASKS_FORWARDED).increment(1);
                    return Ok(true);
                }
                Some(Dispatch::Task(task)) => {
                    let (tx, rx) = oneshot::channel();
                    queue.offers.push_back(PendingOffer {
                        id,
                        task,
                        offered_at: Instant::now(),
                        taken: tx,
                    });
                    rx
                }
                // Only a task was offered.
                Some(Dispatch::Query(_)) => return Ok(false),
            }
        };
        if let Ok(Ok(())) = tokio::time::timeout(wait, taken).await {
            return Ok(true);
        }
        // Still waiting here: withdraw it. Gone: a poll took it just now.
        let mut queues = self.queues.lock().expect("matching lock");
        let withdrawn = queues.get_mut(&root).and_then(|queue| {
            let at = queue.offers.iter().position(|o| o.id == id)?;
            queue.offers.remove(at)
        });
        Ok(withdrawn.is_none())
    }

    async fn forward_task_to_root(&self, root: TaskQueueKey, task: TaskRef) -> ApiResult<bool> {
        match self.forwarder.get() {
            Some(forwarder) => forwarder.forward_task(root, task, OFFER_WAIT).await,
            None => self.offer_to_root_pollers(root, task, OFFER_WAIT).await,
        }
    }

    async fn forward_poll_to_root(
        &self,
        root: TaskQueueKey,
        identity: &str,
        wait: Duration,
    ) -> ApiResult<Option<ForwardedDispatch>> {
        match self.forwarder.get() {
            Some(forwarder) => forwarder.forward_poll(root, identity, wait).await,
            // Boxed: the root's poll is the same code as this one's.
            None => Box::pin(MatchingService::forward_poll(self, root, identity, wait)).await,
        }
    }

    /// A poll of child partition `key` that found nothing there: waits for this partition's
    /// next task, and, if no other poll of the partition is forwarded already, becomes the one
    /// that waits on the root instead, until `deadline`. A forwarded poll that ends early (the
    /// root moved to another node, or its node did not answer) is sent again, so a lone poller
    /// keeps waiting on the root wherever it is.
    ///
    /// A forwarded poll is committed to: it stops waiting here before it is sent, and is never
    /// abandoned for a task that arrives here meanwhile. Abandoning it (dropping the call) lost
    /// whatever the root had handed to it in the meantime: that task reached no worker, and
    /// history handed it over again only after 10 s (about 1% of the workflows of a loaded
    /// two-node matching ring). As in Temporal, one poll per partition is forwarded at a time,
    /// so the other pollers keep matching this partition's tasks here.
    pub(crate) async fn wait_here_or_on_root(
        &self,
        key: &TaskQueueKey,
        identity: &str,
        mut here: oneshot::Receiver<Handoff>,
        deadline: Instant,
    ) -> Option<(Dispatch, PollOutcome)> {
        let mut stopping = self.stopping.subscribe();
        let root = root_of(key);
        loop {
            if deadline <= Instant::now() {
                return self.stop_waiting_here(here);
            }
            let Some(slot) = self.take_forward_slot(key) else {
                // Another poll of this partition waits on the root: wait here, and look again
                // shortly in case it is answered (then this poll takes its place).
                let recheck = deadline.min(Instant::now() + FORWARD_SLOT_RECHECK);
                tokio::select! {
                    received = &mut here => return received.ok().map(Handoff::into_sync_match),
                    () = tokio::time::sleep_until(recheck.into()) => continue,
                    _ = stopping.wait_for(|stop| *stop) => return self.stop_waiting_here(here),
                }
            };
            // This poll is forwarded: it leaves this partition's pollers first.
            if let Some(found) = self.stop_waiting_here(here) {
                return Some(found);
            }
            let wait = deadline.saturating_duration_since(Instant::now());
            let from_root = tokio::select! {
                answer = self.forward_poll_to_root(root.clone(), identity, wait) => answer,
                // The root's own wait ends at the same deadline, and a stopping node answers
                // its polls empty: these only cut short a call that has nothing to deliver.
                () = tokio::time::sleep_until(deadline.into()) => Ok(None),
                _ = stopping.wait_for(|stop| *stop) => Ok(None),
            };
            drop(slot);
            let pause = match from_root {
                Ok(Some(dispatch)) => {
                    metrics::counter!(metric_defs::POLLS_FORWARDED).increment(1);
                    return Some((
                        match dispatch {
                            ForwardedDispatch::Task(task) => Dispatch::Task(task),
                            ForwardedDispatch::Query(query) => Dispatch::Query(query),
                        },
                        // Handed over at the root a moment ago (one call away).
                        PollOutcome::Sync {
                            handed_at: Some(Instant::now()),
                            forwarded: true,
                        },
                    ));
                }
                Ok(None) => FORWARD_AGAIN_PAUSE,
                Err(e) => {
                    tracing::debug!(error = %e.message, "a forwarded poll failed; it is sent again shortly");
                    RETRY_PAUSE
                }
            };
            if *stopping.borrow() || deadline <= Instant::now() {
                return None;
            }
            // Wait here again, through the pause and after it.
            here = match self.take_or_wait(key, identity) {
                Ok(Taken::Now(dispatch, outcome)) => return Some((dispatch, outcome)),
                Ok(Taken::Wait(receiver)) => receiver,
                Err(_) => return None,
            };
            let pause_end = deadline.min(Instant::now() + pause);
            tokio::select! {
                received = &mut here => return received.ok().map(Handoff::into_sync_match),
                () = tokio::time::sleep_until(pause_end.into()) => {}
                _ = stopping.wait_for(|stop| *stop) => return self.stop_waiting_here(here),
            }
        }
    }

    /// Leaves the partition's waiting pollers; a dispatch handed to this poll meanwhile is returned
    /// (`None`: there was none).
    fn stop_waiting_here(
        &self,
        mut here: oneshot::Receiver<Handoff>,
    ) -> Option<(Dispatch, PollOutcome)> {
        here.close();
        here.try_recv().ok().map(Handoff::into_sync_match)
    }

    /// Makes the caller `key`'s forwarded poll if it has none (`None`: it has one). The slot is
    /// given back when the returned guard is dropped, also when the poll itself is dropped
    /// mid-forward (its client cancelled the long poll, a worker shutting down): a slot kept
    /// by a poll that no longer exists would stop every later poll of the partition from
    /// waiting on the root, and a task offered there by another partition would then find no
    /// poller, ever.
    fn take_forward_slot(&self, key: &TaskQueueKey) -> Option<ForwardSlot<'_>> {
        let mut queues = self.queues.lock().expect("matching lock");
        let queue = queues.entry(key.clone()).or_default();
        if std::mem::replace(&mut queue.forwarding_poll, true) {
            return None;
        }
        Some(ForwardSlot {
            engine: self,
            key: key.clone(),
        })
    }

    /// Starts offering child partition `key`'s backlog to the root's pollers (the caller set
    /// the queue's `draining`).
    pub(crate) fn spawn_drainer(&self, key: TaskQueueKey) {
        let me = self.me.clone();
        tokio::spawn(async move {
            let root = root_of(&key);
            loop {
                let Some(engine) = me.upgrade() else { return };
                let Some(task) = engine.next_backlog_task(&key) else {
                    return;
                };
                match engine
                    .forward_task_to_root(root.clone(), task.clone())
                    .await
                {
                    Ok(true) => {
                        if let Some(queue) =
                            engine.queues.lock().expect("matching lock").get_mut(&key)
                        {
                            queue.queued.remove(&(task.shard, task.outbox_id));
                        }
                    }
                    Ok(false) => engine.return_to_backlog(&key, task),
                    Err(e) => {
                        tracing::debug!(error = %e.message, "offering a task to the root partition failed");
                        engine.return_to_backlog(&key, task);
                        drop(engine);
                        tokio::time::sleep(RETRY_PAUSE).await;
                    }
                }
            }
        });
    }

    /// The head of `key`'s backlog for the drainer (it stays marked as queued while offered),
    /// or `None`, ending the drainer, when the backlog is empty or the node stops.
    fn next_backlog_task(&self, key: &TaskQueueKey) -> Option<TaskRef> {
        let mut queues = self.queues.lock().expect("matching lock");
        let queue = queues.get_mut(key)?;
        let now_ms = chronicle_types::time::now_millis();
        while !*self.stopping.borrow() {
            let Some(task) = queue.tasks.pop_front() else {
                break;
            };
            if task.expires_at_ms == 0 || task.expires_at_ms > now_ms {
                return Some(task);
            }
            queue.queued.remove(&(task.shard, task.outbox_id));
        }
        queue.draining = false;
        None
    }

    /// A task the root did not take: to a poller of `key` that arrived meanwhile, or back to the
    /// front of its backlog.
    fn return_to_backlog(&self, key: &TaskQueueKey, task: TaskRef) {
        let mut queues = self.queues.lock().expect("matching lock");
        let queue = queues.entry(key.clone()).or_default();
        // Marked draining again in case the queue was swept meanwhile: this drainer goes on.
        queue.draining = true;
        let id = (task.shard, task.outbox_id);
        if let Some(Dispatch::Task(task)) = queue.offer(Dispatch::Task(task)) {
            // Still marked with when it was first queued here (the drainer kept the mark).
            queue.queued.entry(id).or_insert_with(Instant::now);
            queue.tasks.push_front(task);
        } else {
            queue.queued.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chronicle_cluster::{MatchingService, TaskKind};

    use super::*;

    fn key(name: &str) -> TaskQueueKey {
        TaskQueueKey {
            namespace_id: "ns".into(),
            name: name.into(),
            kind: TaskKind::Activity,
        }
    }

    fn task(id: u64) -> TaskRef {
        TaskRef {
            namespace_id: "ns".into(),
            workflow_id: format!("wf-{id}"),
            run_id: "run".into(),
            scheduled_event_id: 5,
            attempt: 1,
            outbox_id: id,
            shard: 1,
            expires_at_ms: 0,
            sticky: false,
            worker_commands: false,
        }
    }

    /// Two engines, as two matching nodes: the child partitions' node forwards to the root's.
    fn two_nodes() -> (Arc<MatchingEngine>, Arc<MatchingEngine>) {
        let root_node = MatchingEngine::new(Duration::from_secs(10));
        let child_node = MatchingEngine::new(Duration::from_secs(10));
        child_node.set_forwarder(root_node.clone());
        (child_node, root_node)
    }

    fn taken(dispatch: Option<ForwardedDispatch>) -> u64 {
        match dispatch {
            Some(ForwardedDispatch::Task(task)) => task.outbox_id,
            other => panic!("expected a task, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_child_partitions_backlog_reaches_a_poller_of_the_root() {
        let (child_node, root_node) = two_nodes();
        // No poller anywhere: the task is queued in partition 3.
        child_node
            .add_task(key("/_sys/q/3"), task(7))
            .await
            .unwrap();
        // A poller of the root partition (on the other node) gets it.
        let got = root_node
            .forward_poll(key("q"), "root-poller", Duration::from_secs(8))
            .await
            .unwrap();
        assert_eq!(taken(got), 7);
        // It left partition 3: a poll there finds nothing (it waits on the root, which is empty).
        let again = child_node
            .forward_poll(key("/_sys/q/3"), "p3", Duration::from_millis(200))
            .await
            .unwrap();
        assert!(again.is_none());
    }

    #[tokio::test]
    async fn a_lone_poller_of_one_partition_gets_tasks_of_the_root_and_of_other_partitions() {
        let (child_node, root_node) = two_nodes();
        // A poll of partition 1 waits there and, forwarded, on the root.
        let poll = |child_node: Arc<MatchingEngine>| {
            tokio::spawn(async move {
                child_node
                    .forward_poll(key("/_sys/q/1"), "lone", Duration::from_secs(8))
                    .await
            })
        };
        let waiting = poll(child_node.clone());
        tokio::time::sleep(Duration::from_millis(100)).await;
        root_node.add_task(key("q"), task(1)).await.unwrap();
        assert_eq!(taken(waiting.await.unwrap().unwrap()), 1);

        // A task of partition 3 (same node as partition 1 here) reaches it through the root.
        let waiting = poll(child_node.clone());
        tokio::time::sleep(Duration::from_millis(100)).await;
        child_node
            .add_task(key("/_sys/q/3"), task(2))
            .await
            .unwrap();
        assert_eq!(taken(waiting.await.unwrap().unwrap()), 2);
        // Nothing is left behind in partition 3 or at the root.
        let rest = root_node
            .forward_poll(key("q"), "check", Duration::from_millis(200))
            .await
            .unwrap();
        assert!(rest.is_none());
        assert!(
            child_node.queues.lock().unwrap()[&key("/_sys/q/3")]
                .tasks
                .is_empty()
        );
    }

    #[tokio::test]
    async fn a_forwarded_poll_dropped_by_its_client_lets_the_next_poll_forward() {
        let (child_node, root_node) = two_nodes();
        // A poll of partition 1 is forwarded to the root, then its client goes away (a worker
        // shutting down cancels its long polls): the call is dropped mid-forward.
        let cancelled = tokio::time::timeout(
            Duration::from_millis(200),
            child_node.forward_poll(key("/_sys/q/1"), "gone", Duration::from_secs(8)),
        )
        .await;
        assert!(
            cancelled.is_err(),
            "the poll was still waiting when dropped"
        );
        // The next poll of partition 1 waits on the root too, so a root task reaches it.
        let next = {
            let child_node = child_node.clone();
            tokio::spawn(async move {
                child_node
                    .forward_poll(key("/_sys/q/1"), "next", Duration::from_secs(8))
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        root_node.add_task(key("q"), task(9)).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), next)
            .await
            .expect("the root's task reached the partition's poller")
            .unwrap()
            .unwrap();
        assert_eq!(taken(got), 9);
    }

    #[tokio::test]
    async fn a_task_offered_to_the_root_comes_back_when_no_poller_takes_it() {
        let root_node = MatchingEngine::new(Duration::from_secs(10));
        let matched = root_node
            .offer_to_root_pollers(key("q"), task(3), Duration::from_millis(50))
            .await
            .unwrap();
        assert!(!matched);
        // Withdrawn: a later root poll does not get it (its child partition still holds it).
        let later = root_node
            .forward_poll(key("q"), "late", Duration::from_millis(100))
            .await
            .unwrap();
        assert!(later.is_none());
    }

    /// A task the root hands to a partition's forwarded poll while a task of the partition
    /// itself arrives is not lost: each reaches a poll, once.
    #[tokio::test]
    async fn tasks_arriving_at_the_root_and_the_partition_together_both_reach_a_poller() {
        for round in 0..20u64 {
            let (child_node, root_node) = two_nodes();
            let first = {
                let child_node = child_node.clone();
                tokio::spawn(async move {
                    child_node
                        .forward_poll(key("/_sys/q/1"), "p1", Duration::from_secs(8))
                        .await
                })
            };
            tokio::time::sleep(Duration::from_millis(20)).await;
            let (at_root, here) = (round * 2 + 1, round * 2 + 2);
            root_node.add_task(key("q"), task(at_root)).await.unwrap();
            child_node
                .add_task(key("/_sys/q/1"), task(here))
                .await
                .unwrap();
            let got_first = taken(first.await.unwrap().unwrap());
            let got_second = taken(
                child_node
                    .forward_poll(key("/_sys/q/1"), "p1", Duration::from_secs(8))
                    .await
                    .unwrap(),
            );
            let mut got = [got_first, got_second];
            got.sort_unstable();
            assert_eq!(got, [at_root, here], "round {round}");
        }
    }
}
