//! Data lifecycle at the frontend: DeleteWorkflowExecution, OperatorService.DeleteNamespace,
//! DeprecateNamespace, the namespace states each call accepts, and the retention check of
//! RegisterNamespace / UpdateNamespace. The deletions themselves happen in history
//! (`history/src/apply/delete.rs`, `history/src/retention.rs`).

use std::time::Duration;

use chronicle_proto::chronicle::history::v1 as cmd;
use chronicle_proto::temporal::api::enums::v1::NamespaceState;
use chronicle_proto::temporal::api::errordetails::v1 as details;
use chronicle_proto::temporal::api::operatorservice::v1 as os;
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use chronicle_types::{ApiError, ApiResult};

use crate::FrontendContext;

/// Temporal's system namespace, which DeleteNamespace refuses.
const SYSTEM_NAMESPACE: &str = "temporal-system";
/// Temporal's default minimum retention of a local namespace (`system.namespaceMinRetentionLocal`).
pub const DEFAULT_MIN_RETENTION: Duration = Duration::from_secs(3600);

/// Which namespace states a call accepts (Temporal's namespace validator): starts need a
/// registered namespace, everything else a registered or deprecated one.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Allowed {
    Registered,
    RegisteredOrDeprecated,
}

/// Refuses a call on a namespace in a state the call does not accept, with Temporal's error.
pub fn check_state(name: &str, state: i32, allowed: Allowed) -> ApiResult<()> {
    let state = NamespaceState::try_from(state).unwrap_or(NamespaceState::Registered);
    let allowed_states: &[NamespaceState] = match allowed {
        Allowed::Registered => &[NamespaceState::Registered],
        Allowed::RegisteredOrDeprecated => {
            &[NamespaceState::Registered, NamespaceState::Deprecated]
        }
    };
    // Records written before states were checked have no state: registered.
    if state == NamespaceState::Unspecified || allowed_states.contains(&state) {
        return Ok(());
    }
    let names: Vec<&str> = allowed_states.iter().map(|s| state_name(*s)).collect();
    Err(ApiError::new(
        tonic::Code::FailedPrecondition,
        format!(
            "Namespace has invalid state: {}. Must be {}.",
            state_name(state),
            names.join(" or ")
        ),
    )
    .with_detail(&details::NamespaceInvalidStateFailure {
        namespace: name.to_string(),
        state: state as i32,
        allowed_states: allowed_states.iter().map(|s| *s as i32).collect(),
    }))
}

/// Go's `String()` of the enum, which Temporal's message uses.
fn state_name(state: NamespaceState) -> &'static str {
    match state {
        NamespaceState::Unspecified => "Unspecified",
        NamespaceState::Registered => "Registered",
        NamespaceState::Deprecated => "Deprecated",
        NamespaceState::Deleted => "Deleted",
    }
}

/// The retention of RegisterNamespace / UpdateNamespace: no shorter than the cluster's minimum
/// (Temporal's `errInvalidRetentionPeriod`).
pub fn check_retention(
    retention: Option<&chronicle_proto::wkt::Duration>,
    minimum: Duration,
) -> ApiResult<()> {
    let millis = retention.map_or(0, |d| {
        d.seconds
            .saturating_mul(1_000)
            .saturating_add(i64::from(d.nanos) / 1_000_000)
    });
    if millis < 0 || u128::try_from(millis).unwrap_or(0) < minimum.as_millis() {
        return Err(ApiError::invalid_argument(
            "A valid retention period is not set on request.",
        ));
    }
    Ok(())
}

pub async fn delete_workflow_execution(
    ctx: &FrontendContext,
    namespace_id: &str,
    request: ws::DeleteWorkflowExecutionRequest,
) -> ApiResult<()> {
    let Some(execution) = request.workflow_execution.as_ref() else {
        return Err(ApiError::invalid_argument(
            "Execution is not set on request.",
        ));
    };
    if execution.workflow_id.is_empty() {
        return Err(ApiError::invalid_argument(
            "WorkflowId is not set on request.",
        ));
    }
    if !execution.run_id.is_empty() && uuid::Uuid::parse_str(&execution.run_id).is_err() {
        return Err(ApiError::invalid_argument("Invalid RunId."));
    }
    ctx.history
        .delete_workflow_execution(namespace_id, request)
        .await
}

/// DeprecateNamespace: the namespace stays readable, new starts are refused.
pub async fn deprecate_namespace(ctx: &FrontendContext, name: &str) -> ApiResult<()> {
    let mut record = ctx.history.namespace_by_name(name).await?;
    let info = record.info.get_or_insert_with(Default::default);
    info.state = NamespaceState::Deprecated as i32;
    ctx.history.update_namespace(record).await?;
    ctx.namespaces.invalidate(name);
    Ok(())
}

/// OperatorService.DeleteNamespace as Temporal's delete-namespace workflow does it: validate,
/// mark DELETED and rename to `<name>-deleted-<first 5 characters of the ID>` (so the name can
/// be registered again at once), then the runs are deleted in the background and the record
/// goes once none is left and the delete delay has passed. Answers the new name.
pub async fn delete_namespace(
    ctx: &FrontendContext,
    request: os::DeleteNamespaceRequest,
) -> ApiResult<os::DeleteNamespaceResponse> {
    let record = match (
        request.namespace.is_empty(),
        request.namespace_id.is_empty(),
    ) {
        (true, true) => {
            return Err(ApiError::invalid_argument(
                "namespace or namespace ID is required",
            ));
        }
        (false, false) => {
            return Err(ApiError::invalid_argument(
                "only one of namespace or namespace ID must be set",
            ));
        }
        // An unknown namespace is Temporal's NamespaceNotFound (its namespace validator answers
        // before the handler runs).
        (false, true) => ctx.history.namespace_by_name(&request.namespace).await?,
        (true, false) => ctx
            .history
            .list_namespaces()
            .await?
            .into_iter()
            .find(|r| {
                r.info
                    .as_ref()
                    .is_some_and(|i| i.id == request.namespace_id)
            })
            .ok_or_else(|| ApiError::namespace_not_found(&request.namespace_id))?,
    };
    let info = record.info.clone().unwrap_or_default();
    if info.name == SYSTEM_NAMESPACE {
        return Err(ApiError::failed_precondition(
            "unable to delete system namespace",
        ));
    }
    let new_name = deleted_name(ctx, &info.name, &info.id).await?;
    let delay = request
        .namespace_delete_delay
        .map(|d| d.seconds.max(0).saturating_mul(1_000))
        .unwrap_or(0);
    let delete_after = chronicle_types::time::from_millis(
        chronicle_types::time::now_millis().saturating_add(delay),
    );
    ctx.history
        .delete_namespace(cmd::DeleteNamespace {
            name: info.name.clone(),
            new_name: new_name.clone(),
            delete_after: Some(delete_after),
            remove_record: false,
        })
        .await?;
    ctx.namespaces.invalidate(&info.name);
    Ok(os::DeleteNamespaceResponse {
        deleted_namespace: new_name,
    })
}

/// `<name>-deleted-<ID prefix>`: the shortest ID prefix (from 5 characters) not taken; a name
/// that already ends so (a namespace deleted again) keeps it.
async fn deleted_name(ctx: &FrontendContext, name: &str, id: &str) -> ApiResult<String> {
    for len in 5..id.len() {
        let suffix = format!("-deleted-{}", &id[..len]);
        if name.ends_with(&suffix) {
            return Ok(name.to_string());
        }
        let candidate = format!("{name}{suffix}");
        match ctx.history.namespace_by_name(&candidate).await {
            Err(e) if e.code == tonic::Code::NotFound => return Ok(candidate),
            Err(e) => return Err(e),
            Ok(_) => continue,
        }
    }
    Err(ApiError::internal(format!(
        "unable to generate new name for deleted namespace {name}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deprecated_namespaces_refuse_starts_only() {
        let deprecated = NamespaceState::Deprecated as i32;
        let err = check_state("ns", deprecated, Allowed::Registered).unwrap_err();
        assert_eq!(err.code, tonic::Code::FailedPrecondition);
        assert_eq!(
            err.message,
            "Namespace has invalid state: Deprecated. Must be Registered."
        );
        assert!(check_state("ns", deprecated, Allowed::RegisteredOrDeprecated).is_ok());
        let deleted = NamespaceState::Deleted as i32;
        let err = check_state("ns", deleted, Allowed::RegisteredOrDeprecated).unwrap_err();
        assert_eq!(
            err.message,
            "Namespace has invalid state: Deleted. Must be Registered or Deprecated."
        );
    }

    #[test]
    fn retention_below_the_minimum_is_refused() {
        let secs = |s| chronicle_proto::wkt::Duration {
            seconds: s,
            nanos: 0,
        };
        let hour = Duration::from_secs(3600);
        assert!(check_retention(Some(&secs(3600)), hour).is_ok());
        assert!(check_retention(Some(&secs(3599)), hour).is_err());
        assert!(check_retention(None, hour).is_err());
        assert!(check_retention(Some(&secs(2)), Duration::from_secs(1)).is_ok());
    }
}
