//! StartWorkflowExecution with the USE_EXISTING conflict policy and `on_conflict_options`
//! (docs/nexus.md): a start that finds its workflow running attaches its completion callbacks,
//! links and request ID to that run, as Temporal does, with a WorkflowExecutionOptionsUpdated
//! event. Several Nexus operations can so be backed by one workflow.

use chronicle_proto::temporal::api::enums::v1::EventType;
use chronicle_proto::temporal::api::history::v1::WorkflowExecutionOptionsUpdatedEventAttributes;
use chronicle_proto::temporal::api::history::v1::history_event::Attributes;
use chronicle_proto::temporal::api::workflowservice::v1::StartWorkflowExecutionRequest;
use chronicle_proto::wkt::Timestamp;
use chronicle_storage::ShardBatch;
use chronicle_types::ApiError;

use super::ApplyResult;

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
