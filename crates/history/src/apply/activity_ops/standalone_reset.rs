//! ResetActivityExecution of a standalone activity, as Temporal 1.32's standalone activity
//! answers it (checked against its dev server):
//! - waiting (scheduled, or backing off before a retry): attempt 1 at once (or within the
//!   request's jitter), the backoff dropped, heartbeat details dropped if asked, the original
//!   options back if asked;
//! - paused and waiting: the same, and unpaused, unless `keep_paused`: then only the attempt
//!   count goes back to 1 and it stays paused;
//! - running: nothing changes for the attempt that runs (its heartbeats answer
//!   `activity_reset`); the reset waits for it. If it completes, that is the result; if it fails
//!   or times out, the next attempt is attempt 1, dispatched at once, whatever the retry policy
//!   would have said (see `activity::next_attempt`). A running attempt whose pause was asked is
//!   unpaused, unless `keep_paused`;
//! - a pending cancellation or an earlier reset still waiting refuse it; the same request ID
//!   again changes nothing.

use chronicle_proto::chronicle::persistence::v1 as pb;
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use chronicle_storage::ShardBatch;
use chronicle_types::ApiError;
use chronicle_types::time::opt_duration_millis;

use super::{Jitter, clear_pause, dispatch_at, rearm_timers, set_options, withdraw_dispatch};
use crate::apply::ApplyResult;
use crate::apply::standalone_activity::ACTIVITY_KEY;
use crate::mutable_state::MutableState;

pub(super) fn reset(
    batch: &mut ShardBatch,
    ms: &mut MutableState,
    r: &ws::ResetActivityRequest,
    request_id: &str,
    jitter: Jitter,
) -> ApplyResult<()> {
    let Some(mut a) = ms.state.activities.get(&ACTIVITY_KEY).cloned() else {
        return Err(ApiError::failed_precondition("activity execution is not running").into());
    };
    if !request_id.is_empty() && a.last_reset_request_id == request_id {
        return Ok(());
    }
    if a.cancel_requested {
        return Err(ApiError::failed_precondition(
            "cannot reset an activity with a pending cancellation",
        )
        .into());
    }
    if a.reset_requested {
        return Err(
            ApiError::failed_precondition("cannot reset an activity with a pending reset").into(),
        );
    }
    if !request_id.is_empty() {
        a.last_reset_request_id = request_id.to_string();
    }
    if a.started {
        return defer_while_running(batch, ms, a, r);
    }
    if r.restore_original_options {
        restore_original(&mut a);
    }
    a.attempt = 1;
    a.last_attempt_complete_time = None;
    if r.reset_heartbeat {
        a.heartbeat_details = None;
        a.last_heartbeat_time = None;
    }
    if a.paused && r.keep_paused {
        // Stays paused, undispatched; the unpause dispatches attempt 1.
        ms.state.activities.insert(ACTIVITY_KEY, a);
        return Ok(());
    }
    clear_pause(&mut a);
    withdraw_dispatch(batch, &mut a);
    rearm_timers(batch, ms, &mut a)?;
    ms.state.activities.insert(ACTIVITY_KEY, a);
    let jitter_ms = opt_duration_millis(r.jitter.as_ref());
    let fire = ms
        .now_ms()
        .saturating_add(jitter.offset(ACTIVITY_KEY, jitter_ms));
    dispatch_at(batch, ms, ACTIVITY_KEY, fire)
}

/// A worker runs an attempt: the reset waits for it (Temporal's RESET_REQUESTED).
fn defer_while_running(
    batch: &mut ShardBatch,
    ms: &mut MutableState,
    mut a: pb::ActivityInfo,
    r: &ws::ResetActivityRequest,
) -> ApplyResult<()> {
    if a.paused && !r.keep_paused {
        // A pause asked while the attempt ran is withdrawn; its timeouts run again.
        clear_pause(&mut a);
        rearm_timers(batch, ms, &mut a)?;
    }
    a.reset_requested = true;
    a.reset_while_running = true;
    a.reset_restore_options = r.restore_original_options;
    if r.reset_heartbeat {
        a.reset_heartbeats = true;
    }
    ms.state.activities.insert(ACTIVITY_KEY, a);
    Ok(())
}

/// The options the activity was started with (kept at its first options update; none kept
/// means they never changed).
pub(crate) fn restore_original(a: &mut pb::ActivityInfo) {
    if let Some(original) = a.original_options.clone() {
        set_options(a, &original);
    }
}
