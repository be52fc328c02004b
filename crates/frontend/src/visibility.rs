//! Visibility at the frontend: ListWorkflowExecutions, ScanWorkflowExecutions,
//! CountWorkflowExecutions, ListOpen/ListClosedWorkflowExecutions (their typed filters become a
//! query), and the checks of search-attribute values against the namespace's registry (start,
//! signal-with-start, and the commands of a workflow task completion).
//!
//! Queries are parsed and checked here (`chronicle_visibility`), so a bad query is refused before
//! any history node is asked; history parses the same text again with the same registry and
//! evaluates it. Answers from several history services would merge by the list order's sort key
//! (`chronicle_visibility::order::SortKey`), which is also the page token.

use std::collections::HashMap;

use chronicle_proto::chronicle::history::v1 as hpb;
use chronicle_proto::chronicle::persistence::v1::NamespaceRecord;
use chronicle_proto::temporal::api::command::v1::command::Attributes as CommandAttributes;
use chronicle_proto::temporal::api::common::v1::{Payload, SearchAttributes};
use chronicle_proto::temporal::api::enums::v1::WorkflowTaskFailedCause;
use chronicle_proto::temporal::api::failure::v1::Failure;
use chronicle_proto::temporal::api::filter::v1::{StartTimeFilter, WorkflowExecutionFilter};
use chronicle_proto::temporal::api::workflow::v1::WorkflowExecutionInfo;
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use chronicle_types::ApiError;
use chronicle_visibility::order::SortKey;
use chronicle_visibility::query::status_name;
use tonic::Status;

use crate::FrontendContext;

/// Temporal's default page size for visibility lists.
const DEFAULT_PAGE_SIZE: i32 = 1000;

fn invalid(message: impl Into<String>) -> Status {
    ApiError::invalid_argument(message).into()
}

async fn namespace(ctx: &FrontendContext, name: &str) -> Result<NamespaceRecord, Status> {
    crate::metric_defs::set_namespace(name);
    let record = ctx.namespaces.get(name).await?;
    let state = record.info.as_ref().map_or(0, |i| i.state);
    crate::delete::check_state(name, state, crate::delete::Allowed::RegisteredOrDeprecated)?;
    Ok(record)
}

fn namespace_id(record: &NamespaceRecord) -> String {
    record
        .info
        .as_ref()
        .map(|i| i.id.clone())
        .unwrap_or_default()
}

/// One page of the runs matching `query` after `token`.
async fn page(
    ctx: &FrontendContext,
    record: &NamespaceRecord,
    query: &str,
    page_size: i32,
    token: Vec<u8>,
) -> Result<(Vec<WorkflowExecutionInfo>, Vec<u8>), Status> {
    let parsed =
        chronicle_visibility::parse(query, &record.custom_search_attributes).map_err(invalid)?;
    // A list ignores `GROUP BY ExecutionStatus`, as Temporal's does.
    let _ = parsed;
    if !token.is_empty() {
        SortKey::decode(&token).map_err(invalid)?;
    }
    let page_size = if page_size > 0 {
        page_size
    } else {
        DEFAULT_PAGE_SIZE
    };
    let answer = ctx
        .history
        .list_workflows(hpb::ListWorkflowsRequest {
            namespace_id: namespace_id(record),
            query: query.to_string(),
            page_size: page_size.unsigned_abs(),
            search_attribute_types: record.custom_search_attributes.clone(),
            next_page_token: token,
            count_only: false,
            shards: Vec::new(),
            standalone_activities: false,
        })
        .await?;
    let executions = answer
        .executions
        .into_iter()
        .filter_map(|d| d.workflow_execution_info)
        .collect();
    Ok((executions, answer.next_page_token))
}

pub async fn list(
    ctx: &FrontendContext,
    r: ws::ListWorkflowExecutionsRequest,
) -> Result<ws::ListWorkflowExecutionsResponse, Status> {
    let record = namespace(ctx, &r.namespace).await?;
    let (executions, next_page_token) =
        page(ctx, &record, &r.query, r.page_size, r.next_page_token).await?;
    Ok(ws::ListWorkflowExecutionsResponse {
        executions,
        next_page_token,
    })
}

pub async fn scan(
    ctx: &FrontendContext,
    r: ws::ScanWorkflowExecutionsRequest,
) -> Result<ws::ScanWorkflowExecutionsResponse, Status> {
    let record = namespace(ctx, &r.namespace).await?;
    let (executions, next_page_token) =
        page(ctx, &record, &r.query, r.page_size, r.next_page_token).await?;
    Ok(ws::ScanWorkflowExecutionsResponse {
        executions,
        next_page_token,
    })
}

/// A string literal of the query language.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The query of ListOpen/ListClosed's typed filters; `time_attribute` is what the time filter
/// bounds (StartTime for open runs, CloseTime for closed ones, as Temporal does).
fn typed_query(
    open: bool,
    time_filter: Option<&StartTimeFilter>,
    execution: Option<&WorkflowExecutionFilter>,
    workflow_type: Option<&str>,
    status: Option<i32>,
) -> String {
    let mut clauses = vec![if open {
        "ExecutionStatus = 'Running'".to_string()
    } else {
        "ExecutionStatus != 'Running'".to_string()
    }];
    let time_attribute = if open { "StartTime" } else { "CloseTime" };
    if let Some(f) = time_filter {
        let earliest = f
            .earliest_time
            .as_ref()
            .map(chronicle_visibility::eval::nanos);
        let latest = f
            .latest_time
            .as_ref()
            .map(chronicle_visibility::eval::nanos);
        if let Some(t) = earliest {
            clauses.push(format!("{time_attribute} >= {t}"));
        }
        if let Some(t) = latest.filter(|t| *t > 0) {
            clauses.push(format!("{time_attribute} <= {t}"));
        }
    }
    if let Some(e) = execution {
        if !e.workflow_id.is_empty() {
            clauses.push(format!("WorkflowId = {}", quote(&e.workflow_id)));
        }
        if !e.run_id.is_empty() {
            clauses.push(format!("RunId = {}", quote(&e.run_id)));
        }
    }
    if let Some(t) = workflow_type {
        clauses.push(format!("WorkflowType = {}", quote(t)));
    }
    if let Some(s) = status {
        clauses.push(format!("ExecutionStatus = {s}"));
    }
    clauses.join(" AND ")
}

pub async fn list_open(
    ctx: &FrontendContext,
    r: ws::ListOpenWorkflowExecutionsRequest,
) -> Result<ws::ListOpenWorkflowExecutionsResponse, Status> {
    use ws::list_open_workflow_executions_request::Filters;
    let record = namespace(ctx, &r.namespace).await?;
    let (execution, workflow_type) = match &r.filters {
        Some(Filters::ExecutionFilter(e)) => (Some(e), None),
        Some(Filters::TypeFilter(t)) => (None, Some(t.name.as_str())),
        None => (None, None),
    };
    let query = typed_query(
        true,
        r.start_time_filter.as_ref(),
        execution,
        workflow_type,
        None,
    );
    let (executions, next_page_token) =
        page(ctx, &record, &query, r.maximum_page_size, r.next_page_token).await?;
    Ok(ws::ListOpenWorkflowExecutionsResponse {
        executions,
        next_page_token,
    })
}

pub async fn list_closed(
    ctx: &FrontendContext,
    r: ws::ListClosedWorkflowExecutionsRequest,
) -> Result<ws::ListClosedWorkflowExecutionsResponse, Status> {
    use ws::list_closed_workflow_executions_request::Filters;
    let record = namespace(ctx, &r.namespace).await?;
    let (execution, workflow_type, status) = match &r.filters {
        Some(Filters::ExecutionFilter(e)) => (Some(e), None, None),
        Some(Filters::TypeFilter(t)) => (None, Some(t.name.as_str()), None),
        Some(Filters::StatusFilter(s)) => (None, None, Some(s.status)),
        None => (None, None, None),
    };
    let query = typed_query(
        false,
        r.start_time_filter.as_ref(),
        execution,
        workflow_type,
        status,
    );
    let (executions, next_page_token) =
        page(ctx, &record, &query, r.maximum_page_size, r.next_page_token).await?;
    Ok(ws::ListClosedWorkflowExecutionsResponse {
        executions,
        next_page_token,
    })
}

pub async fn count(
    ctx: &FrontendContext,
    r: ws::CountWorkflowExecutionsRequest,
) -> Result<ws::CountWorkflowExecutionsResponse, Status> {
    let record = namespace(ctx, &r.namespace).await?;
    let parsed =
        chronicle_visibility::parse(&r.query, &record.custom_search_attributes).map_err(invalid)?;
    let answer = ctx
        .history
        .list_workflows(hpb::ListWorkflowsRequest {
            namespace_id: namespace_id(&record),
            query: r.query.clone(),
            page_size: 0,
            search_attribute_types: record.custom_search_attributes.clone(),
            next_page_token: Vec::new(),
            count_only: true,
            shards: Vec::new(),
            standalone_activities: false,
        })
        .await?;
    let mut groups = Vec::new();
    if parsed.group_by_status {
        // One group per status present, as Temporal answers `GROUP BY ExecutionStatus`.
        groups = answer
            .status_counts
            .iter()
            .map(
                |(status, count)| ws::count_workflow_executions_response::AggregationGroup {
                    group_values: vec![json_string_payload(status_name(*status))],
                    count: *count,
                },
            )
            .collect();
    }
    Ok(ws::CountWorkflowExecutionsResponse {
        count: answer.count,
        groups,
    })
}

pub(crate) fn json_string_payload(s: &str) -> Payload {
    Payload {
        metadata: HashMap::from([("encoding".to_string(), b"json/plain".to_vec())]),
        data: serde_json_string(s).into_bytes(),
        ..Default::default()
    }
}

fn serde_json_string(s: &str) -> String {
    // Status names are plain ASCII words; escape what JSON requires anyway.
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Checks search attributes against the namespace's registry: InvalidArgument with Temporal's
/// message (start, signal-with-start).
pub async fn check_search_attributes(
    ctx: &FrontendContext,
    namespace: &str,
    attrs: Option<&SearchAttributes>,
) -> Result<(), Status> {
    let Some(attrs) = attrs.filter(|a| !a.indexed_fields.is_empty()) else {
        return Ok(());
    };
    let record = ctx.namespaces.get(namespace).await?;
    chronicle_visibility::attrs::validate(&record.custom_search_attributes, namespace, attrs)
        .map_err(invalid)
}

/// The first bad search attributes among a completion's commands (upserts, children,
/// continue-as-new), if any.
fn bad_command_search_attributes(
    record: &NamespaceRecord,
    namespace: &str,
    r: &ws::RespondWorkflowTaskCompletedRequest,
) -> Option<String> {
    for command in &r.commands {
        let attrs = match &command.attributes {
            Some(CommandAttributes::UpsertWorkflowSearchAttributesCommandAttributes(a)) => {
                a.search_attributes.as_ref()
            }
            Some(CommandAttributes::StartChildWorkflowExecutionCommandAttributes(a)) => {
                a.search_attributes.as_ref()
            }
            Some(CommandAttributes::ContinueAsNewWorkflowExecutionCommandAttributes(a)) => {
                a.search_attributes.as_ref()
            }
            _ => None,
        };
        if let Some(attrs) = attrs
            && let Err(message) = chronicle_visibility::attrs::validate(
                &record.custom_search_attributes,
                namespace,
                attrs,
            )
        {
            return Some(message);
        }
    }
    None
}

/// A completion whose commands carry bad search attributes fails its workflow task with cause
/// BAD_SEARCH_ATTRIBUTES (a new task is scheduled, as after any failed task) and the worker gets
/// InvalidArgument, as from Temporal's command checker.
pub async fn check_completion(
    ctx: &FrontendContext,
    namespace_id: &str,
    r: &ws::RespondWorkflowTaskCompletedRequest,
) -> Result<(), Status> {
    if r.commands.iter().all(|c| {
        !matches!(
            c.attributes,
            Some(
                CommandAttributes::UpsertWorkflowSearchAttributesCommandAttributes(_)
                    | CommandAttributes::StartChildWorkflowExecutionCommandAttributes(_)
                    | CommandAttributes::ContinueAsNewWorkflowExecutionCommandAttributes(_)
            )
        )
    }) {
        return Ok(());
    }
    let record = ctx.namespaces.get(&r.namespace).await?;
    let Some(message) = bad_command_search_attributes(&record, &r.namespace, r) else {
        return Ok(());
    };
    ctx.history
        .respond_workflow_task_failed(
            namespace_id,
            ws::RespondWorkflowTaskFailedRequest {
                task_token: r.task_token.clone(),
                cause: WorkflowTaskFailedCause::BadSearchAttributes as i32,
                failure: Some(Failure {
                    message: message.clone(),
                    ..Default::default()
                }),
                identity: r.identity.clone(),
                namespace: r.namespace.clone(),
                ..Default::default()
            },
        )
        .await?;
    Err(invalid(message))
}

/// ListSearchAttributes / GetSearchAttributes: the system attributes and `record`'s custom ones.
pub fn system_attributes() -> HashMap<String, i32> {
    chronicle_visibility::attrs::SYSTEM
        .iter()
        .map(|(name, ty, _)| (name.to_string(), ty.to_i32()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chronicle_visibility::query::status_from_name;

    #[test]
    fn typed_filters_become_valid_queries() {
        let q = typed_query(
            false,
            Some(&StartTimeFilter {
                earliest_time: Some(chronicle_proto::wkt::Timestamp {
                    seconds: 10,
                    nanos: 0,
                }),
                latest_time: None,
            }),
            Some(&WorkflowExecutionFilter {
                workflow_id: "it's \\ odd".into(),
                run_id: String::new(),
            }),
            None,
            Some(2),
        );
        let parsed = chronicle_visibility::parse(&q, &Default::default()).unwrap();
        assert!(parsed.filter.is_some(), "{q}");
        assert!(q.contains("CloseTime >= 10000000000"), "{q}");
        assert_eq!(status_from_name("Completed"), Some(2));
    }
}
