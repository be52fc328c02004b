//! Temporal's default limits, enforced with the same errors as Temporal's server.

/// Largest single payload (blob) accepted: 2 MiB.
pub const MAX_PAYLOAD_BYTES: usize = 2 * 1024 * 1024;
/// Longest workflow ID, activity ID, task queue name, signal name, etc.
pub const MAX_ID_LENGTH: usize = 1000;
/// History limits: the run is terminated when it would exceed either.
pub const MAX_HISTORY_EVENTS: i64 = 51_200;
pub const MAX_HISTORY_BYTES: i64 = 50 * 1024 * 1024;
/// Past these, WorkflowTaskStarted events carry `suggest_continue_as_new` (Temporal's defaults).
pub const SUGGEST_CONTINUE_AS_NEW_EVENTS: i64 = 4 * 1024;
pub const SUGGEST_CONTINUE_AS_NEW_BYTES: i64 = 4 * 1024 * 1024;
/// Pending activities a run may have at once.
pub const MAX_PENDING_ACTIVITIES: usize = 2_000;
/// Longest long poll of a task queue.
pub const MAX_POLL_WAIT: std::time::Duration = std::time::Duration::from_secs(60);
/// Largest gRPC message accepted by the frontend (Temporal's default).
pub const MAX_GRPC_MESSAGE_BYTES: usize = 128 * 1024 * 1024;
/// Page size of history in poll responses and GetWorkflowExecutionHistory when none is asked.
pub const DEFAULT_HISTORY_PAGE_SIZE: usize = 256;
/// Pending child workflows, cancellation requests and signals to other workflows a run may
/// have at once (Temporal's defaults).
pub const MAX_PENDING_CHILDREN: usize = 2_000;
pub const MAX_PENDING_REQUEST_CANCELS: usize = 2_000;
pub const MAX_PENDING_EXTERNAL_SIGNALS: usize = 2_000;

/// A namespace's history limits (Temporal's `limit.historyCount.*` and `limit.historySize.*`
/// dynamic config); 0 in a field means Temporal's default for it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HistoryLimits {
    /// `limit.historyCount.suggestContinueAsNew` (default [`SUGGEST_CONTINUE_AS_NEW_EVENTS`]).
    pub suggest_events: i64,
    /// `limit.historySize.suggestContinueAsNew` (default [`SUGGEST_CONTINUE_AS_NEW_BYTES`]).
    pub suggest_bytes: i64,
    /// `limit.historyCount.error`: the run is terminated past it (default [`MAX_HISTORY_EVENTS`]).
    pub max_events: i64,
    /// `limit.historySize.error` (default [`MAX_HISTORY_BYTES`]).
    pub max_bytes: i64,
}

impl HistoryLimits {
    /// Each field of `self` that is set, else `fallback`'s.
    pub fn or(self, fallback: HistoryLimits) -> HistoryLimits {
        let pick = |own: i64, other: i64| if own > 0 { own } else { other };
        HistoryLimits {
            suggest_events: pick(self.suggest_events, fallback.suggest_events),
            suggest_bytes: pick(self.suggest_bytes, fallback.suggest_bytes),
            max_events: pick(self.max_events, fallback.max_events),
            max_bytes: pick(self.max_bytes, fallback.max_bytes),
        }
    }
}

/// History limits for every namespace, and for some namespaces of their own (as Temporal's
/// dynamic config values constrained by namespace).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HistoryLimitsConfig {
    pub all: HistoryLimits,
    /// By namespace name.
    pub namespaces: std::collections::BTreeMap<String, HistoryLimits>,
}

impl HistoryLimitsConfig {
    /// The limits of the namespace called `name`: its own where set, else those of all.
    pub fn for_namespace(&self, name: &str) -> HistoryLimits {
        match self.namespaces.get(name) {
            Some(own) => own.or(self.all),
            None => self.all,
        }
    }
}
