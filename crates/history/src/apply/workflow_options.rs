//! UpdateWorkflowExecutionOptions (`temporal workflow update-options`) as Temporal's history
//! service does it: the masked fields of the request merged into the run's options (versioning
//! override, priority), the override checked against the run, and a
//! WorkflowExecutionOptionsUpdated event when the merged options differ from the run's. An
//! update that changes nothing writes nothing and answers the options.
//!
//! Chronicle has no worker versioning: no task queue has a deployment version, so an override
//! that pins the run to a version is refused as Temporal refuses a version its task queue does
//! not have; auto-upgrade (which routes an unversioned run as before) and removing the override
//! are served.

// Clients may still send the deprecated override forms (behavior + deployment or version
// string), which Temporal reads and describe fills in.
#![allow(deprecated)]

use chronicle_proto::chronicle::history::v1 as cmd;
use chronicle_proto::chronicle::persistence::v1 as pb;
use chronicle_proto::temporal::api::common::v1::{Payload, Priority};
use chronicle_proto::temporal::api::enums::v1::{EventType, VersioningBehavior};
use chronicle_proto::temporal::api::history::v1::WorkflowExecutionOptionsUpdatedEventAttributes;
use chronicle_proto::temporal::api::history::v1::history_event::Attributes;
use chronicle_proto::temporal::api::workflow::v1::versioning_override::{
    Override, PinnedOverrideBehavior,
};
use chronicle_proto::temporal::api::workflow::v1::{
    VersioningOverride, WorkflowExecutionOptions, WorkflowExecutionVersioningInfo,
};
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use chronicle_storage::ShardBatch;
use chronicle_types::ApiError;

use super::ApplyResult;
use crate::mutable_state::MutableState;

/// The system search attribute Temporal keeps with a run's effective versioning behavior.
pub const VERSIONING_BEHAVIOR_ATTRIBUTE: &str = "TemporalWorkflowVersioningBehavior";

pub fn update(
    batch: &mut ShardBatch,
    mut ms: MutableState,
    r: &ws::UpdateWorkflowExecutionOptionsRequest,
) -> ApplyResult<cmd::RunOperationResult> {
    if !ms.is_running() {
        return Err(ApiError::not_found("workflow execution already completed").into());
    }
    let requested = r.workflow_execution_options.clone().unwrap_or_default();
    let override_ = requested.versioning_override.as_ref();
    if let Some(Override::Pinned(p)) = override_.and_then(|o| o.r#override.as_ref())
        && p.behavior != PinnedOverrideBehavior::Unspecified as i32
        && p.version.is_none()
    {
        // A pinned override may omit the version only for a run already pinned, which no run
        // is without worker versioning.
        return Err(ApiError::failed_precondition(format!(
            "must specify a specific pinned override version because workflow with id {} has \
             behavior {} and is not yet pinned to any version",
            ms.state.workflow_id,
            behavior_name(effective_behavior(&ms.state)),
        ))
        .into());
    }
    check_override(override_)?;
    check_version_present(override_, &ms.state.task_queue)?;
    let current = current_options(&ms.state);
    let paths: Vec<&str> = r
        .update_mask
        .as_ref()
        .map(|m| m.paths.iter().map(String::as_str).collect())
        .unwrap_or_default();
    let merged = merge(current.clone(), &requested, &paths).map_err(|why| {
        ApiError::invalid_argument(format!("error applying update_options: {why}"))
    })?;
    let result = cmd::RunOperationResult {
        workflow_execution_options: Some(merged.clone()),
        ..Default::default()
    };
    if merged == current {
        return Ok(result);
    }
    let stored_override = merged.versioning_override.as_ref().map(normalize);
    let attributes = WorkflowExecutionOptionsUpdatedEventAttributes {
        versioning_override: stored_override.clone(),
        unset_versioning_override: stored_override.is_none(),
        identity: r.identity.clone(),
        priority: merged.priority.clone(),
        ..Default::default()
    };
    apply_event(&mut ms.state, &attributes);
    let written = ms.add_or_buffer_event(
        EventType::WorkflowExecutionOptionsUpdated,
        Attributes::WorkflowExecutionOptionsUpdatedEventAttributes(attributes),
    );
    // Temporal marks the event as one a worker's replay may skip.
    let event = match written {
        Some(_) => ms.new_events.last_mut(),
        None => ms.state.buffered_events.last_mut(),
    };
    if let Some(event) = event {
        event.worker_may_ignore = true;
    }
    ms.persist(batch);
    Ok(result)
}

/// What a WorkflowExecutionOptionsUpdated event does to the run (when written, and when a
/// reset replays it).
pub(crate) fn apply_event(
    state: &mut pb::WorkflowExecutionState,
    a: &WorkflowExecutionOptionsUpdatedEventAttributes,
) {
    // The versioning info appears with the first override and stays (empty) once removed. An
    // event that only attached callbacks (a start with on_conflict_options) leaves it alone.
    let touches_override = a.versioning_override.is_some() || a.unset_versioning_override;
    if touches_override && (a.versioning_override.is_some() || state.versioning_info.is_some()) {
        state
            .versioning_info
            .get_or_insert_with(WorkflowExecutionVersioningInfo::default)
            .versioning_override = a.versioning_override.clone();
    }
    // As Temporal: an update without a priority leaves the run's priority as it was.
    if a.priority.is_some() {
        state.priority = a.priority.clone();
    }
    set_behavior_attribute(state);
}

/// The run's options as an update merges into them.
fn current_options(state: &pb::WorkflowExecutionState) -> WorkflowExecutionOptions {
    WorkflowExecutionOptions {
        versioning_override: state
            .versioning_info
            .as_ref()
            .and_then(|i| i.versioning_override.clone()),
        priority: state.priority.clone(),
        time_skipping_config: None,
    }
}

/// The behavior the run's override gives it (without worker versioning, only an override).
fn effective_behavior(state: &pb::WorkflowExecutionState) -> VersioningBehavior {
    state
        .versioning_info
        .as_ref()
        .and_then(|i| i.versioning_override.as_ref())
        .map(override_behavior)
        .unwrap_or(VersioningBehavior::Unspecified)
}

fn override_behavior(o: &VersioningOverride) -> VersioningBehavior {
    match o.r#override {
        Some(Override::AutoUpgrade(true)) => VersioningBehavior::AutoUpgrade,
        Some(Override::Pinned(_)) | Some(Override::OneTime(_)) => VersioningBehavior::Pinned,
        _ => VersioningBehavior::try_from(o.behavior).unwrap_or_default(),
    }
}

/// How Temporal's Go enums print a versioning behavior.
fn behavior_name(b: VersioningBehavior) -> &'static str {
    match b {
        VersioningBehavior::Unspecified => "Unspecified",
        VersioningBehavior::Pinned => "Pinned",
        VersioningBehavior::AutoUpgrade => "AutoUpgrade",
    }
}

/// Temporal's checks of an override's structure (v0.32 oneof first, then the deprecated
/// behavior with its deployment or version string).
fn check_override(o: Option<&VersioningOverride>) -> ApplyResult<()> {
    let Some(o) = o else { return Ok(()) };
    let invalid = |m: &str| Err(ApiError::invalid_argument(m).into());
    match &o.r#override {
        Some(Override::AutoUpgrade(auto)) => {
            return if *auto {
                Ok(())
            } else {
                invalid("auto-upgrade override must be true")
            };
        }
        Some(Override::Pinned(p)) => {
            if p.version.is_none() {
                return invalid("must provide version if override is pinned.");
            }
            if p.behavior == PinnedOverrideBehavior::Unspecified as i32 {
                return invalid("must specify pinned override behavior if override is pinned.");
            }
            return Ok(());
        }
        Some(Override::OneTime(one)) => {
            if one.target_deployment_version.is_none() {
                return invalid("must provide target deployment version if override is one-time.");
            }
            return Ok(());
        }
        None => {}
    }
    match VersioningBehavior::try_from(o.behavior) {
        Ok(VersioningBehavior::Pinned) => {
            if let Some(d) = &o.deployment {
                if d.series_name.is_empty() {
                    return invalid("deployment name cannot be empty");
                }
                if d.series_name.contains(['.', ':']) {
                    return invalid("deployment name cannot contain '.' or ':'");
                }
                if d.build_id.is_empty() {
                    return invalid("deployment build ID cannot be empty");
                }
                Ok(())
            } else if !o.pinned_version.is_empty() {
                version_from_string(&o.pinned_version).map(|_| ())
            } else {
                invalid(
                    "must provide deployment (deprecated) or pinned version if behavior is 'PINNED'",
                )
            }
        }
        Ok(VersioningBehavior::AutoUpgrade) => {
            if o.deployment.is_some() {
                invalid("only provide deployment if behavior is 'PINNED'")
            } else if !o.pinned_version.is_empty() {
                invalid("only provide pinned version if behavior is 'PINNED'")
            } else {
                Ok(())
            }
        }
        Ok(VersioningBehavior::Unspecified) => invalid("override behavior is required"),
        Err(_) => Err(ApiError::invalid_argument(format!(
            "override behavior {} not recognized",
            o.behavior
        ))
        .into()),
    }
}

/// A v0.31 version string, `<deployment>.<build ID>` (or `:`, whichever comes first).
fn version_from_string(s: &str) -> ApplyResult<(String, String)> {
    let cut = s.find(['.', ':']);
    match cut {
        Some(at) if at > 0 && at + 1 < s.len() => {
            Ok((s[..at].to_string(), s[at + 1..].to_string()))
        }
        _ => Err(ApiError::invalid_argument(format!(
            "invalid version string \"{s}\", expected format is \"<deployment_name>.<build_id>\""
        ))
        .into()),
    }
}

/// Temporal asks matching whether a pinned or one-time version belongs to the run's task queue.
/// Without worker versioning no version does, so every such override is refused as Temporal
/// refuses an unknown version.
fn check_version_present(o: Option<&VersioningOverride>, task_queue: &str) -> ApplyResult<()> {
    let Some(o) = o else { return Ok(()) };
    let version = match &o.r#override {
        Some(Override::Pinned(p)) => p
            .version
            .as_ref()
            .map(|v| (v.deployment_name.clone(), v.build_id.clone())),
        Some(Override::OneTime(one)) => one
            .target_deployment_version
            .as_ref()
            .map(|v| (v.deployment_name.clone(), v.build_id.clone())),
        Some(Override::AutoUpgrade(_)) => None,
        None if o.behavior == VersioningBehavior::Pinned as i32 => match &o.deployment {
            Some(d) => Some((d.series_name.clone(), d.build_id.clone())),
            None => Some(version_from_string(&o.pinned_version)?),
        },
        None => None,
    };
    match version {
        Some((deployment, build_id)) => Err(ApiError::failed_precondition(format!(
            "Pinned version '{deployment}:{build_id}' is not present in task queue \
             '{task_queue}' of type 'Workflow'"
        ))
        .into()),
        None => Ok(()),
    }
}

/// The override as the run keeps it: the v0.32 form only (the deprecated auto-upgrade behavior
/// becomes `auto_upgrade`).
fn normalize(o: &VersioningOverride) -> VersioningOverride {
    let r#override = match &o.r#override {
        Some(x) => Some(x.clone()),
        None if o.behavior == VersioningBehavior::AutoUpgrade as i32 => {
            Some(Override::AutoUpgrade(true))
        }
        None => None,
    };
    VersioningOverride {
        r#override,
        ..Default::default()
    }
}

/// The override as describe shows it: the v0.32 form plus the deprecated fields Temporal fills
/// in for older clients.
pub fn described_override(o: &VersioningOverride) -> VersioningOverride {
    let mut out = o.clone();
    out.behavior = override_behavior(o) as i32;
    if let Some(Override::Pinned(p)) = &o.r#override
        && let Some(v) = &p.version
    {
        out.pinned_version = format!("{}.{}", v.deployment_name, v.build_id);
    }
    out
}

/// Temporal's merge of the masked fields (paths in lowerCamelCase, as its field mask parser
/// turns them); the error is the reason, without the "error applying" prefix.
fn merge(
    mut into: WorkflowExecutionOptions,
    from: &WorkflowExecutionOptions,
    paths: &[&str],
) -> Result<WorkflowExecutionOptions, &'static str> {
    let fields: std::collections::BTreeSet<String> = paths
        .iter()
        .map(|p| super::activity_ops::camel_path(p))
        .collect();
    let has = |f: &str| fields.contains(f);
    if has("versioningOverride") {
        into.versioning_override = from.versioning_override.clone();
    }
    let deployment = has("versioningOverride.deployment");
    let behavior = has("versioningOverride.behavior");
    if deployment != behavior {
        return Err("versioning_override fields must be updated together");
    }
    if deployment {
        into.versioning_override = from.versioning_override.clone();
    }
    if fields.iter().any(|f| {
        f.starts_with("versioningOverride.")
            && f != "versioningOverride.deployment"
            && f != "versioningOverride.behavior"
    }) {
        return Err("versioning_override doesn't support partial updates");
    }
    if has("priority") {
        into.priority = from.priority.clone();
    }
    let from_priority = from.priority.clone().unwrap_or_default();
    if has("priority.priorityKey") {
        into.priority
            .get_or_insert_with(Priority::default)
            .priority_key = from_priority.priority_key;
    }
    if has("priority.fairnessKey") {
        into.priority
            .get_or_insert_with(Priority::default)
            .fairness_key = from_priority.fairness_key.clone();
    }
    if has("priority.fairnessWeight") {
        into.priority
            .get_or_insert_with(Priority::default)
            .fairness_weight = from_priority.fairness_weight;
    }
    if has("timeSkippingConfig") {
        into.time_skipping_config = from.time_skipping_config.clone();
    }
    if fields.iter().any(|f| f.starts_with("timeSkippingConfig.")) {
        return Err("time_skipping_config doesn't support partial update");
    }
    Ok(into)
}

/// Keeps `TemporalWorkflowVersioningBehavior` in step with the run's override, as Temporal's
/// visibility record shows the effective behavior.
fn set_behavior_attribute(state: &mut pb::WorkflowExecutionState) {
    let behavior = effective_behavior(state);
    if behavior == VersioningBehavior::Unspecified {
        if let Some(attrs) = state.search_attributes.as_mut() {
            attrs.indexed_fields.remove(VERSIONING_BEHAVIOR_ATTRIBUTE);
        }
    } else {
        let attrs = state.search_attributes.get_or_insert_with(Default::default);
        attrs.indexed_fields.insert(
            VERSIONING_BEHAVIOR_ATTRIBUTE.to_string(),
            keyword_payload(behavior_name(behavior)),
        );
    }
}

fn keyword_payload(value: &str) -> Payload {
    let mut metadata = std::collections::HashMap::new();
    metadata.insert("encoding".to_string(), b"json/plain".to_vec());
    metadata.insert("type".to_string(), b"Keyword".to_vec());
    Payload {
        metadata,
        data: format!("\"{value}\"").into_bytes(),
        ..Default::default()
    }
}
