//! The `TemporalPauseInfo` system search attribute: one `property:activityType=<type>` entry per
//! type of the run's paused activities, as Temporal keeps it, so operators list paused work with
//! `TemporalPauseInfo = 'property:activityType=X'` (and a batch unpause by type finds its runs).
//! Temporal refreshes it when an activity's pause changes (pause, unpause, reset), not when a
//! paused activity ends; so does this.

use std::collections::BTreeSet;

use chronicle_proto::temporal::api::common::v1::Payload;

use crate::mutable_state::MutableState;

pub const PAUSE_INFO_ATTRIBUTE: &str = "TemporalPauseInfo";

/// The entry a paused activity of type `activity_type` contributes.
pub fn entry(activity_type: &str) -> String {
    format!("property:activityType={activity_type}")
}

/// Sets the attribute from the run's paused activities, or removes it when none is paused.
pub fn refresh(ms: &mut MutableState) {
    // A standalone activity's record is not a workflow's visibility row.
    if ms.state.standalone_activity.is_some() {
        return;
    }
    let entries: BTreeSet<String> = ms
        .state
        .activities
        .values()
        .filter(|a| a.paused)
        .map(|a| entry(a.activity_type.as_ref().map_or("", |t| t.name.as_str())))
        .collect();
    if entries.is_empty() {
        if let Some(attrs) = ms.state.search_attributes.as_mut() {
            attrs.indexed_fields.remove(PAUSE_INFO_ATTRIBUTE);
        }
        return;
    }
    let json = serde_json::to_string(&entries.into_iter().collect::<Vec<_>>())
        .unwrap_or_else(|_| "[]".to_string());
    let mut metadata = std::collections::HashMap::new();
    metadata.insert("encoding".to_string(), b"json/plain".to_vec());
    metadata.insert("type".to_string(), b"KeywordList".to_vec());
    ms.state
        .search_attributes
        .get_or_insert_with(Default::default)
        .indexed_fields
        .insert(
            PAUSE_INFO_ATTRIBUTE.to_string(),
            Payload {
                metadata,
                data: json.into_bytes(),
                ..Default::default()
            },
        );
}
