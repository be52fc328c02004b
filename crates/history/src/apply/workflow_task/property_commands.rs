//! The commands of a workflow task completion that record a marker or change the run's
//! properties: RecordMarker, UpsertWorkflowSearchAttributes and ModifyWorkflowProperties.

use chronicle_proto::temporal::api::command::v1::{
    ModifyWorkflowPropertiesCommandAttributes, RecordMarkerCommandAttributes,
    UpsertWorkflowSearchAttributesCommandAttributes,
};
use chronicle_proto::temporal::api::common::v1::SearchAttributes;
use chronicle_proto::temporal::api::enums::v1::EventType;
use chronicle_proto::temporal::api::history::v1 as h;
use chronicle_proto::temporal::api::history::v1::history_event::Attributes;

use super::Rejection;
use crate::mutable_state::MutableState;

/// Whether a payload stands for "no value" (Temporal's nil payload: no data, a JSON `null` or
/// an empty list): upserting one removes the key.
fn is_nil_payload(p: &chronicle_proto::temporal::api::common::v1::Payload) -> bool {
    p.data.is_empty() || p.data == b"null" || p.data == b"[]"
}

/// Merges upserted memo fields or search attributes into the run's, as Temporal does: a nil
/// value removes its key, any other replaces it.
pub(crate) fn merge_payloads(
    into: &mut std::collections::HashMap<
        String,
        chronicle_proto::temporal::api::common::v1::Payload,
    >,
    upsert: &std::collections::HashMap<String, chronicle_proto::temporal::api::common::v1::Payload>,
) {
    for (k, v) in upsert {
        if is_nil_payload(v) {
            into.remove(k);
        } else {
            into.insert(k.clone(), v.clone());
        }
    }
}

/// RecordMarker: a MarkerRecorded event.
pub(super) fn record_marker(
    ms: &mut MutableState,
    a: &RecordMarkerCommandAttributes,
    completed_id: i64,
) -> Result<bool, Rejection> {
    ms.add_event(
        EventType::MarkerRecorded,
        Attributes::MarkerRecordedEventAttributes(h::MarkerRecordedEventAttributes {
            marker_name: a.marker_name.clone(),
            details: a.details.clone(),
            workflow_task_completed_event_id: completed_id,
            header: a.header.clone(),
            failure: a.failure.clone(),
        }),
    );
    Ok(false)
}

/// UpsertWorkflowSearchAttributes: merges the attributes into the run's.
pub(super) fn upsert_search_attributes(
    ms: &mut MutableState,
    a: &UpsertWorkflowSearchAttributesCommandAttributes,
    completed_id: i64,
) -> Result<bool, Rejection> {
    let upsert = a.search_attributes.clone().unwrap_or_default();
    let merged = ms
        .state
        .search_attributes
        .get_or_insert_with(SearchAttributes::default);
    merge_payloads(&mut merged.indexed_fields, &upsert.indexed_fields);
    ms.add_event(
        EventType::UpsertWorkflowSearchAttributes,
        Attributes::UpsertWorkflowSearchAttributesEventAttributes(
            h::UpsertWorkflowSearchAttributesEventAttributes {
                workflow_task_completed_event_id: completed_id,
                search_attributes: Some(upsert),
            },
        ),
    );
    Ok(false)
}

/// ModifyWorkflowProperties: merges the upserted memo fields into the run's memo.
pub(super) fn modify_properties(
    ms: &mut MutableState,
    a: &ModifyWorkflowPropertiesCommandAttributes,
    completed_id: i64,
) -> Result<bool, Rejection> {
    if let Some(upsert) = &a.upserted_memo {
        let memo = ms.state.memo.get_or_insert_with(Default::default);
        merge_payloads(&mut memo.fields, &upsert.fields);
    }
    ms.add_event(
        EventType::WorkflowPropertiesModified,
        Attributes::WorkflowPropertiesModifiedEventAttributes(
            h::WorkflowPropertiesModifiedEventAttributes {
                workflow_task_completed_event_id: completed_id,
                upserted_memo: a.upserted_memo.clone(),
            },
        ),
    );
    Ok(false)
}
