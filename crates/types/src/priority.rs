//! Task priorities (`temporal.api.common.v1.Priority`) as Temporal checks and combines them.

use chronicle_proto::temporal::api::common::v1::Priority;

/// Longest fairness key Temporal accepts.
pub const MAX_FAIRNESS_KEY_LENGTH: usize = 64;

/// Temporal's checks: no negative priority key or fairness weight, a fairness key of at most
/// 64 bytes. An absent priority is valid.
pub fn validate(p: Option<&Priority>) -> Result<(), &'static str> {
    let Some(p) = p else { return Ok(()) };
    if p.priority_key < 0 {
        return Err("priority key can't be negative");
    }
    if p.fairness_key.len() > MAX_FAIRNESS_KEY_LENGTH {
        return Err("fairness key length exceeds limit");
    }
    if p.fairness_weight < 0.0 {
        return Err("fairness weight must be greater than zero");
    }
    Ok(())
}

/// `over`'s fields where set, `base`'s otherwise: what a task inherits from its workflow (an
/// activity, a child workflow).
pub fn merge(base: Option<&Priority>, over: Option<&Priority>) -> Option<Priority> {
    match (base, over) {
        (None, over) => over.cloned(),
        (base, None) => base.cloned(),
        (Some(base), Some(over)) => Some(Priority {
            priority_key: if over.priority_key != 0 {
                over.priority_key
            } else {
                base.priority_key
            },
            fairness_key: if over.fairness_key.is_empty() {
                base.fairness_key.clone()
            } else {
                over.fairness_key.clone()
            },
            fairness_weight: if over.fairness_weight != 0.0 {
                over.fairness_weight
            } else {
                base.fairness_weight
            },
        }),
    }
}
