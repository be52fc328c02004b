//! What a reset carries over from after its reset point: signals and updates the base run (and
//! the runs that continued it, up to the current one) received, as Temporal reapplies them,
//! filtered by `reset_reapply_type` and `reset_reapply_exclude_types`.

use std::collections::HashSet;

use chronicle_proto::chronicle::persistence::v1 as pb;
use chronicle_proto::chronicle::persistence::v1::update_info::Stage;
use chronicle_proto::temporal::api::enums::v1::{
    EventType, ResetReapplyExcludeType, ResetReapplyType, UpdateAdmittedEventOrigin,
};
use chronicle_proto::temporal::api::history::v1 as h;
use chronicle_proto::temporal::api::history::v1::HistoryEvent;
use chronicle_proto::temporal::api::history::v1::history_event::Attributes;
use chronicle_storage::ShardBatch;

use super::super::ApplyResult;
use crate::mutable_state::MutableState;

/// The kinds of events a reset leaves behind, from the deprecated include type and the exclude
/// list together (Temporal's GetResetReapplyExcludeTypes).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Excluded {
    pub signals: bool,
    pub updates: bool,
}

pub fn excluded(reapply_type: i32, exclude_types: &[i32]) -> Excluded {
    let mut excluded = match ResetReapplyType::try_from(reapply_type) {
        Ok(ResetReapplyType::Signal) => Excluded {
            signals: false,
            updates: true,
        },
        Ok(ResetReapplyType::None) => Excluded {
            signals: true,
            updates: true,
        },
        _ => Excluded::default(),
    };
    for t in exclude_types {
        match ResetReapplyExcludeType::try_from(*t) {
            Ok(ResetReapplyExcludeType::Signal) => excluded.signals = true,
            Ok(ResetReapplyExcludeType::Update) => excluded.updates = true,
            _ => {}
        }
    }
    excluded
}

/// The events after the reset point that may be reapplied: the base run's from `finish_event_id`
/// on, then every run its chain continued into (continue-as-new), whole, as far as it goes.
pub fn events_after_reset_point(
    batch: &ShardBatch,
    namespace_id: &str,
    workflow_id: &str,
    base_run_id: &str,
    base_events: &[HistoryEvent],
    finish_event_id: i64,
) -> ApplyResult<Vec<HistoryEvent>> {
    let mut out: Vec<HistoryEvent> = base_events
        .iter()
        .filter(|e| e.event_id >= finish_event_id)
        .cloned()
        .collect();
    let mut seen = HashSet::from([base_run_id.to_string()]);
    let mut next = continued_run(base_events);
    while let Some(run_id) = next.filter(|r| seen.insert(r.clone())) {
        let events = batch.full_history(namespace_id, workflow_id, &run_id)?;
        if events.is_empty() {
            break;
        }
        next = continued_run(&events);
        out.extend(events);
    }
    Ok(out)
}

/// The run a history's continue-as-new event names, if it ends with one.
fn continued_run(events: &[HistoryEvent]) -> Option<String> {
    match events.last().and_then(|e| e.attributes.as_ref()) {
        Some(Attributes::WorkflowExecutionContinuedAsNewEventAttributes(a)) => {
            Some(a.new_execution_run_id.clone())
        }
        _ => None,
    }
}

/// Reapplies the eligible events to the new run: signals become new Signaled events; updates
/// the base run admitted or accepted are admitted again by UpdateAdmitted events (the worker
/// reads them with the next workflow task).
pub fn reapply(ms: &mut MutableState, events: &[HistoryEvent], excluded: Excluded) {
    for event in events {
        match event.attributes.as_ref() {
            Some(Attributes::WorkflowExecutionSignaledEventAttributes(a)) if !excluded.signals => {
                ms.add_event(
                    EventType::WorkflowExecutionSignaled,
                    Attributes::WorkflowExecutionSignaledEventAttributes(
                        h::WorkflowExecutionSignaledEventAttributes {
                            signal_name: a.signal_name.clone(),
                            input: a.input.clone(),
                            identity: a.identity.clone(),
                            header: a.header.clone(),
                            ..Default::default()
                        },
                    ),
                );
            }
            Some(Attributes::WorkflowExecutionUpdateAdmittedEventAttributes(a))
                if !excluded.updates =>
            {
                if let Some(request) = a.request.clone() {
                    readmit_update(ms, request, a.origin);
                }
            }
            // An acceptance with its request is admitted again (origin REAPPLY); one without
            // follows an Admitted event, which is reapplied instead, as in Temporal.
            Some(Attributes::WorkflowExecutionUpdateAcceptedEventAttributes(a))
                if !excluded.updates =>
            {
                if let Some(request) = a.accepted_request.clone() {
                    readmit_update(ms, request, UpdateAdmittedEventOrigin::Reapply as i32);
                }
            }
            _ => {}
        }
    }
}

/// Admits an update in the new run by a WorkflowExecutionUpdateAdmitted event, as Temporal's
/// reset does: the worker reads the request from history.
fn readmit_update(
    ms: &mut MutableState,
    request: chronicle_proto::temporal::api::update::v1::Request,
    origin: i32,
) {
    let update_id = request
        .meta
        .as_ref()
        .map(|m| m.update_id.clone())
        .unwrap_or_default();
    if update_id.is_empty() || ms.state.updates.contains_key(&update_id) {
        return;
    }
    let event_id = ms.add_event(
        EventType::WorkflowExecutionUpdateAdmitted,
        Attributes::WorkflowExecutionUpdateAdmittedEventAttributes(
            h::WorkflowExecutionUpdateAdmittedEventAttributes {
                request: Some(request),
                origin,
            },
        ),
    );
    let sequence = ms.state.next_update_sequence;
    ms.state.next_update_sequence = sequence.saturating_add(1);
    ms.state.updates.insert(
        update_id.clone(),
        pb::UpdateInfo {
            update_id,
            stage: Stage::Admitted as i32,
            sequence,
            admitted_event_id: event_id,
            ..Default::default()
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reapply_type_and_exclude_list_combine_as_in_temporal() {
        let all = excluded(ResetReapplyType::AllEligible as i32, &[]);
        assert_eq!(all, Excluded::default());
        assert_eq!(excluded(ResetReapplyType::Unspecified as i32, &[]), all);
        let signal_only = excluded(ResetReapplyType::Signal as i32, &[]);
        assert!(!signal_only.signals && signal_only.updates);
        let none = excluded(ResetReapplyType::None as i32, &[]);
        assert!(none.signals && none.updates);
        let no_signals = excluded(
            ResetReapplyType::AllEligible as i32,
            &[ResetReapplyExcludeType::Signal as i32],
        );
        assert!(no_signals.signals && !no_signals.updates);
    }
}
