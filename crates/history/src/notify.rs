//! Change notifications. The state machine bumps a per-group watch after every applied batch,
//! which wakes the shard's processors, and a per-workflow watch for each workflow the batch
//! wrote, which wakes only the long polls (history, queries) waiting on that workflow. (With one
//! watch per group, every commit woke every waiter of the shard to re-read its run: at 50
//! workflows in flight that was an eighth of the server's CPU.)

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::watch;

#[derive(Clone, Default)]
pub struct ShardNotifier {
    senders: Arc<RwLock<HashMap<u32, watch::Sender<u64>>>>,
    /// Per group: the earliest fire time of timers added since the timer loop last looked.
    timer_floors: Arc<RwLock<HashMap<u32, Arc<AtomicI64>>>>,
    /// Per group: the latest `ShardCommand.now` applied or proposed, in microseconds.
    last_nows: Arc<RwLock<HashMap<u32, Arc<AtomicI64>>>>,
    /// Watches of the workflows someone waits on, by (group, namespace ID, workflow ID); an
    /// entry lives as long as a [`WorkflowWatch`] holds it.
    workflows: Arc<Mutex<HashMap<WorkflowKey, watch::Sender<u64>>>>,
    /// Per group opened by an engine: whether this node leads it, ready to serve (set by the
    /// engine's readiness loop). Apply records the per-workflow metrics (closes, transitions)
    /// only where this is set, so a close is counted once per cluster, not once per replica.
    leading: Arc<RwLock<HashMap<u32, Arc<AtomicBool>>>>,
}

type WorkflowKey = (u32, String, String);

/// A waiter's subscription to one workflow's changes. `changed` resolves after a batch that
/// wrote the workflow's execution state (any of its runs) was applied.
pub struct WorkflowWatch {
    key: WorkflowKey,
    receiver: Option<watch::Receiver<u64>>,
    registry: Arc<Mutex<HashMap<WorkflowKey, watch::Sender<u64>>>>,
}

impl WorkflowWatch {
    /// Marks everything so far as seen; call before reading the state, then wait.
    pub fn mark_seen(&mut self) {
        if let Some(receiver) = &mut self.receiver {
            receiver.borrow_and_update();
        }
    }

    /// Waits for the next change after the last `mark_seen`.
    pub async fn changed(&mut self) {
        match &mut self.receiver {
            Some(receiver) => {
                if receiver.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
            None => std::future::pending::<()>().await,
        }
    }
}

impl Drop for WorkflowWatch {
    fn drop(&mut self) {
        drop(self.receiver.take());
        let mut registry = lock(&self.registry);
        if registry
            .get(&self.key)
            .is_some_and(|sender| sender.receiver_count() == 0)
        {
            registry.remove(&self.key);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section leaves the map whole, so a poisoned lock is still consistent.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl ShardNotifier {
    /// The group's "this node leads it" flag, created unset.
    pub fn leading_flag(&self, group: u32) -> Arc<AtomicBool> {
        if let Some(flag) = self.leading.read().expect("notifier lock").get(&group) {
            return flag.clone();
        }
        self.leading
            .write()
            .expect("notifier lock")
            .entry(group)
            .or_insert_with(|| Arc::new(AtomicBool::new(false)))
            .clone()
    }

    /// Whether apply on this node should record the group's workflow metrics: it leads the
    /// group, or no engine opened the group here (apply driven directly, as in tests).
    pub fn records_metrics(&self, group: u32) -> bool {
        self.leading
            .read()
            .expect("notifier lock")
            .get(&group)
            .is_none_or(|flag| flag.load(Ordering::SeqCst))
    }

    pub fn subscribe(&self, group: u32) -> watch::Receiver<u64> {
        let mut senders = self.senders.write().expect("notifier lock");
        senders
            .entry(group)
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// Records that timers firing at `fire_ms` or later were added to `group`.
    pub fn timer_added(&self, group: u32, fire_ms: i64) {
        self.timer_floor(group).fetch_min(fire_ms, Ordering::SeqCst);
    }

    /// The group's latest command time in microseconds (see `Shard::last_now`).
    pub fn last_now(&self, group: u32) -> Arc<AtomicI64> {
        if let Some(cell) = self.last_nows.read().expect("notifier lock").get(&group) {
            return cell.clone();
        }
        self.last_nows
            .write()
            .expect("notifier lock")
            .entry(group)
            .or_insert_with(|| Arc::new(AtomicI64::new(i64::MIN)))
            .clone()
    }

    /// Records an applied command's time, so that this node stamps later ones after it when it
    /// becomes leader.
    pub fn observe_now(&self, group: u32, micros: i64) {
        self.last_now(group).fetch_max(micros, Ordering::SeqCst);
    }

    /// The group's "earliest timer added" cell: the timer loop swaps `i64::MAX` into it to take
    /// what was added since its last look.
    pub fn timer_floor(&self, group: u32) -> Arc<AtomicI64> {
        if let Some(floor) = self.timer_floors.read().expect("notifier lock").get(&group) {
            return floor.clone();
        }
        self.timer_floors
            .write()
            .expect("notifier lock")
            .entry(group)
            .or_insert_with(|| Arc::new(AtomicI64::new(i64::MAX)))
            .clone()
    }

    /// Subscribes to changes of one workflow (all its runs) in `group`.
    pub fn watch_workflow(
        &self,
        group: u32,
        namespace_id: &str,
        workflow_id: &str,
    ) -> WorkflowWatch {
        let key = (group, namespace_id.to_string(), workflow_id.to_string());
        let receiver = lock(&self.workflows)
            .entry(key.clone())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe();
        WorkflowWatch {
            key,
            receiver: Some(receiver),
            registry: self.workflows.clone(),
        }
    }

    /// Wakes the waiters of the workflows an applied batch wrote.
    pub fn workflows_changed(&self, group: u32, changed: &[(String, String)]) {
        if changed.is_empty() {
            return;
        }
        let registry = lock(&self.workflows);
        if registry.is_empty() {
            return;
        }
        for (namespace_id, workflow_id) in changed {
            // The key is built per lookup; waiters are few compared with writes, so the map
            // is usually small and the lookup cheap.
            let key = (group, namespace_id.clone(), workflow_id.clone());
            if let Some(sender) = registry.get(&key) {
                sender.send_modify(|version| *version += 1);
            }
        }
    }

    /// Wakes every waiter of `group` (its whole state was replaced by a snapshot).
    pub fn all_workflows_changed(&self, group: u32) {
        for (key, sender) in lock(&self.workflows).iter() {
            if key.0 == group {
                sender.send_modify(|version| *version += 1);
            }
        }
    }

    pub fn notify(&self, group: u32, index: u64) {
        if let Some(sender) = self.senders.read().expect("notifier lock").get(&group) {
            sender.send_replace(index);
        }
    }
}
