//! A run's completion callbacks (docs/nexus.md): StartWorkflowExecution with the USE_EXISTING
//! conflict policy and `on_conflict_options` that finds its workflow running attaches its
//! callbacks, links and request ID to that run, as Temporal does, with a
//! WorkflowExecutionOptionsUpdated event (several Nexus operations can so be backed by one
//! workflow); the chain's last run hands its callbacks to the delivery task when it closes.

use chronicle_proto::chronicle::persistence::v1 as pb;
use chronicle_proto::temporal::api::enums::v1::EventType;
use chronicle_proto::temporal::api::history::v1::WorkflowExecutionOptionsUpdatedEventAttributes;
use chronicle_proto::temporal::api::history::v1::history_event::Attributes;
use chronicle_proto::temporal::api::workflowservice::v1::StartWorkflowExecutionRequest;
use chronicle_proto::wkt::Timestamp;
use chronicle_storage::ShardBatch;
use chronicle_types::ApiError;

use super::ApplyResult;
use crate::mutable_state::MutableState;

/// Temporal's default limit of callbacks on one execution.
const MAX_CALLBACKS_PER_EXECUTION: usize = 32;

/// Whether the request asks to attach anything to a running workflow it finds.
pub fn attaches(request: &StartWorkflowExecutionRequest) -> bool {
    request.on_conflict_options.as_ref().is_some_and(|o| {
        (o.attach_completion_callbacks && !request.completion_callbacks.is_empty())
            || (o.attach_links && !request.links.is_empty())
            || (o.attach_request_id && !request.request_id.is_empty())
    })
}

/// Attaches what the start's `on_conflict_options` ask for to the running run `run_id`. The
/// same request ID attached before changes nothing (a retried start).
pub(super) fn attach(
    batch: &mut ShardBatch,
    now: Timestamp,
    namespace_id: &str,
    run_id: &str,
    request: &StartWorkflowExecutionRequest,
) -> ApplyResult<()> {
    if !attaches(request) {
        return Ok(());
    }
    let options = request.on_conflict_options.unwrap_or_default();
    let mut ms = super::load_run(batch, now, namespace_id, &request.workflow_id, run_id)?;
    if !request.request_id.is_empty() && ms.state.attached_request_ids.contains(&request.request_id)
    {
        return Ok(());
    }
    let callbacks = if options.attach_completion_callbacks {
        request.completion_callbacks.clone()
    } else {
        Vec::new()
    };
    if ms.state.completion_callbacks.len() + callbacks.len() > MAX_CALLBACKS_PER_EXECUTION {
        return Err(ApiError::failed_precondition(format!(
            "cannot attach more than {MAX_CALLBACKS_PER_EXECUTION} callbacks to a workflow ({} callbacks already attached)",
            ms.state.completion_callbacks.len()
        ))
        .into());
    }
    let attached_request_id = if options.attach_request_id {
        request.request_id.clone()
    } else {
        String::new()
    };
    let links = if options.attach_links {
        request.links.clone()
    } else {
        Vec::new()
    };
    super::nexus_async::add_with_links(
        &mut ms,
        EventType::WorkflowExecutionOptionsUpdated,
        Attributes::WorkflowExecutionOptionsUpdatedEventAttributes(
            WorkflowExecutionOptionsUpdatedEventAttributes {
                attached_request_id,
                attached_completion_callbacks: callbacks.clone(),
                identity: request.identity.clone(),
                ..Default::default()
            },
        ),
        links,
        // As Temporal's: SDKs skip it.
        true,
    );
    ms.state.completion_callbacks.extend(callbacks);
    if !request.request_id.is_empty() {
        ms.state
            .attached_request_ids
            .push(request.request_id.clone());
    }
    ms.persist(batch);
    Ok(())
}

/// A closing run that backs Nexus operations (completion callbacks) delivers its outcome to
/// them, unless a new run continues its chain (which keeps the callbacks). Returns the row.
pub(super) fn callbacks_on_close(
    batch: &mut ShardBatch,
    ms: &MutableState,
) -> ApplyResult<Option<u64>> {
    // A run a reset replaced leaves the delivery to the new run (which has the callbacks).
    let replaced = !ms.state.reset_run_id.is_empty() && ms.state.reset_run_id != ms.state.run_id;
    if ms.state.completion_callbacks.is_empty() || super::child::continues(ms) || replaced {
        return Ok(None);
    }
    Ok(Some(batch.put_outbox(&pb::OutboxTask {
        kind: pb::outbox_task::Kind::NexusCallbacks as i32,
        namespace_id: ms.state.namespace_id.clone(),
        workflow_id: ms.state.workflow_id.clone(),
        run_id: ms.state.run_id.clone(),
        scheduled_event_id: ms.state.completion_event_id,
        ..Default::default()
    })?))
}
