//! OperatorService's Nexus endpoint registry: Create, Update, Delete, Get and
//! ListNexusEndpoints. Specs are checked here with Temporal's limits and messages (several
//! problems are reported together, comma-separated, as Temporal's request issues are); the
//! registry itself lives in the metadata group (`HistoryService::nexus_endpoints`), which checks
//! names taken, IDs and versions at apply.

use std::collections::HashMap;

use chronicle_proto::chronicle::history::v1::{
    self as hpb, NexusEndpointCommand, nexus_endpoint_command, nexus_endpoints_request,
};
use chronicle_proto::chronicle::persistence::v1::NexusEndpointRecord;
use chronicle_proto::temporal::api::nexus::v1::{Endpoint, EndpointSpec, endpoint_target};
use chronicle_proto::temporal::api::operatorservice::v1 as os;
use chronicle_types::limits::MAX_ID_LENGTH;
use chronicle_types::{ApiError, ApiResult};
use prost::Message;

use crate::FrontendContext;

/// Temporal's `limit.endpointNameMaxLength`.
const MAX_NAME_LENGTH: usize = 200;
/// Temporal's `limit.endpointDescriptionMaxSize` (bytes of the encoded payload).
const MAX_DESCRIPTION_BYTES: usize = 20_000;
/// Temporal's `limit.endpointExternalURLMaxLength`.
const MAX_EXTERNAL_URL_LENGTH: usize = 4 * 1024;
/// Temporal's `limit.endpointListDefaultPageSize` and `limit.endpointListMaxPageSize`.
const LIST_DEFAULT_PAGE_SIZE: i32 = 100;
const LIST_MAX_PAGE_SIZE: i32 = 1000;
const RESERVED_TASK_QUEUE_PREFIX: &str = "/_sys/";

pub async fn create(
    ctx: &FrontendContext,
    r: os::CreateNexusEndpointRequest,
) -> ApiResult<os::CreateNexusEndpointResponse> {
    let spec = r.spec.unwrap_or_default();
    let target_namespace_id = checked_spec(ctx, &spec).await?;
    let record = NexusEndpointRecord {
        spec: Some(spec),
        target_namespace_id,
        ..Default::default()
    };
    let stored = change(ctx, nexus_endpoint_command::Op::Create(record)).await?;
    Ok(os::CreateNexusEndpointResponse {
        endpoint: Some(to_api(stored, &namespace_names(ctx).await?)),
    })
}

pub async fn update(
    ctx: &FrontendContext,
    r: os::UpdateNexusEndpointRequest,
) -> ApiResult<os::UpdateNexusEndpointResponse> {
    let spec = r.spec.unwrap_or_default();
    let target_namespace_id = checked_spec(ctx, &spec).await?;
    let stored = change(
        ctx,
        nexus_endpoint_command::Op::Update(hpb::UpdateNexusEndpoint {
            id: r.id,
            version: r.version,
            spec: Some(spec),
            target_namespace_id,
        }),
    )
    .await?;
    Ok(os::UpdateNexusEndpointResponse {
        endpoint: Some(to_api(stored, &namespace_names(ctx).await?)),
    })
}

pub async fn delete(
    ctx: &FrontendContext,
    r: os::DeleteNexusEndpointRequest,
) -> ApiResult<os::DeleteNexusEndpointResponse> {
    let mut issues = id_issues(&r.id);
    if r.version <= 0 {
        issues.push("endpoint version is non-positive".to_string());
    }
    check(issues)?;
    // As in Temporal, the version must be positive but is not compared with the stored one.
    ctx.history
        .nexus_endpoints(hpb::NexusEndpointsRequest {
            op: Some(nexus_endpoints_request::Op::Change(NexusEndpointCommand {
                op: Some(nexus_endpoint_command::Op::DeleteId(r.id)),
            })),
        })
        .await?;
    Ok(os::DeleteNexusEndpointResponse {})
}

pub async fn get(
    ctx: &FrontendContext,
    r: os::GetNexusEndpointRequest,
) -> ApiResult<os::GetNexusEndpointResponse> {
    check(id_issues(&r.id))?;
    let answer = ctx
        .history
        .nexus_endpoints(hpb::NexusEndpointsRequest {
            op: Some(nexus_endpoints_request::Op::GetId(r.id.clone())),
        })
        .await?;
    let record = answer.endpoints.into_iter().next().ok_or_else(|| {
        ApiError::not_found(format!("Nexus endpoint with ID `{}` not found", r.id))
    })?;
    Ok(os::GetNexusEndpointResponse {
        endpoint: Some(to_api(record, &namespace_names(ctx).await?)),
    })
}

pub async fn list(
    ctx: &FrontendContext,
    r: os::ListNexusEndpointsRequest,
) -> ApiResult<os::ListNexusEndpointsResponse> {
    // A name filter ignores paging (Temporal's listAndFilterByName).
    let page_size = if !r.name.is_empty() || r.page_size == 0 {
        LIST_DEFAULT_PAGE_SIZE
    } else if r.page_size < 0 {
        return Err(ApiError::invalid_argument("page_size is negative"));
    } else if r.page_size > LIST_MAX_PAGE_SIZE {
        return Err(ApiError::invalid_argument(format!(
            "page_size exceeds limit of {LIST_MAX_PAGE_SIZE}"
        )));
    } else {
        r.page_size
    };
    let answer = ctx
        .history
        .nexus_endpoints(hpb::NexusEndpointsRequest {
            op: Some(nexus_endpoints_request::Op::List(hpb::ListNexusEndpoints {
                page_size,
                next_page_token: if r.name.is_empty() {
                    r.next_page_token
                } else {
                    Vec::new()
                },
                name: r.name,
            })),
        })
        .await?;
    let names = namespace_names(ctx).await?;
    Ok(os::ListNexusEndpointsResponse {
        next_page_token: answer.next_page_token,
        endpoints: answer
            .endpoints
            .into_iter()
            .map(|record| to_api(record, &names))
            .collect(),
    })
}

async fn change(
    ctx: &FrontendContext,
    op: nexus_endpoint_command::Op,
) -> ApiResult<NexusEndpointRecord> {
    let answer = ctx
        .history
        .nexus_endpoints(hpb::NexusEndpointsRequest {
            op: Some(nexus_endpoints_request::Op::Change(NexusEndpointCommand {
                op: Some(op),
            })),
        })
        .await?;
    answer
        .endpoints
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::internal("the registry answered without the endpoint"))
}

/// Checks a spec as Temporal's frontend does; answers the worker target's namespace ID (empty
/// for an external target).
async fn checked_spec(ctx: &FrontendContext, spec: &EndpointSpec) -> ApiResult<String> {
    let mut issues = name_issues(&spec.name);
    let Some(variant) = spec.target.as_ref().and_then(|t| t.variant.as_ref()) else {
        issues.push("empty target variant".to_string());
        return check(issues).map(|()| String::new());
    };
    let mut namespace_id = String::new();
    match variant {
        endpoint_target::Variant::Worker(worker) => {
            if worker.namespace.is_empty() {
                issues.push("target namespace not set".to_string());
            } else {
                namespace_id = ctx.namespaces.id(&worker.namespace).await.map_err(|e| {
                    ApiError::failed_precondition(format!(
                        "could not verify namespace referenced by target exists: {}",
                        e.message
                    ))
                })?;
            }
            if let Some(problem) = task_queue_issue(&worker.task_queue) {
                issues.push(format!("invalid target task queue: {problem:?}"));
            }
        }
        endpoint_target::Variant::External(external) => {
            if let Some(problem) = url_issue(&external.url) {
                issues.push(problem);
            }
        }
    }
    if spec
        .description
        .as_ref()
        .is_some_and(|d| d.encoded_len() > MAX_DESCRIPTION_BYTES)
    {
        issues.push(format!(
            "description size exceeds limit of {MAX_DESCRIPTION_BYTES}"
        ));
    }
    check(issues).map(|()| namespace_id)
}

fn check(issues: Vec<String>) -> ApiResult<()> {
    if issues.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid_argument(issues.join(", ")))
    }
}

fn name_issues(name: &str) -> Vec<String> {
    if name.is_empty() {
        return vec!["endpoint name not set".to_string()];
    }
    let mut issues = Vec::new();
    if name.len() > MAX_NAME_LENGTH {
        issues.push(format!(
            "endpoint name exceeds length limit of {MAX_NAME_LENGTH}"
        ));
    }
    if !valid_name(name) {
        issues.push(
            r#"endpoint name must match the regex: "^[a-zA-Z][a-zA-Z0-9\\-]*[a-zA-Z0-9]$""#
                .to_string(),
        );
    }
    issues
}

/// A letter, then letters, digits and dashes, ending with a letter or digit (two characters at
/// least).
fn valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    bytes.len() >= 2
        && first.is_ascii_alphabetic()
        && last.is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
}

fn task_queue_issue(task_queue: &str) -> Option<String> {
    if task_queue.is_empty() {
        Some("taskQueue is not set".to_string())
    } else if task_queue.len() > MAX_ID_LENGTH {
        Some("taskQueue length exceeds limit".to_string())
    } else if task_queue.starts_with(RESERVED_TASK_QUEUE_PREFIX) {
        Some(format!(
            "task queue name cannot start with reserved prefix {RESERVED_TASK_QUEUE_PREFIX}"
        ))
    } else {
        None
    }
}

fn url_issue(url: &str) -> Option<String> {
    if url.is_empty() {
        return Some("empty target URL".to_string());
    }
    if url.len() > MAX_EXTERNAL_URL_LENGTH {
        return Some(format!(
            "target URL length exceeds limit of {MAX_EXTERNAL_URL_LENGTH}"
        ));
    }
    let scheme = url_scheme(url);
    if scheme != "http" && scheme != "https" {
        return Some(format!(
            "invalid target URL scheme: {scheme:?}, expected http or https"
        ));
    }
    None
}

/// The scheme of a URL as Go's url.Parse reads it: letters first, then letters, digits, `+`,
/// `-` or `.`, up to the first `:`; none when another character comes first. Lower-cased, as
/// Go's URL holds it.
fn url_scheme(url: &str) -> String {
    for (i, c) in url.char_indices() {
        match c {
            ':' if i > 0 => return url[..i].to_ascii_lowercase(),
            c if c.is_ascii_alphabetic() => {}
            c if i > 0 && (c.is_ascii_digit() || matches!(c, '+' | '-' | '.')) => {}
            _ => return String::new(),
        }
    }
    String::new()
}

fn id_issues(id: &str) -> Vec<String> {
    if id.is_empty() {
        vec!["endpoint ID not set".to_string()]
    } else if let Err(e) = uuid::Uuid::parse_str(id) {
        vec![format!("malformed endpoint ID: {:?}", e.to_string())]
    } else {
        Vec::new()
    }
}

/// Namespace names by ID: a worker target is stored by namespace ID and reported by the name
/// that namespace has now.
async fn namespace_names(ctx: &FrontendContext) -> ApiResult<HashMap<String, String>> {
    Ok(ctx
        .history
        .list_namespaces()
        .await?
        .into_iter()
        .filter_map(|record| record.info)
        .map(|info| (info.id, info.name))
        .collect())
}

fn to_api(record: NexusEndpointRecord, names: &HashMap<String, String>) -> Endpoint {
    let mut spec = record.spec.unwrap_or_default();
    if let Some(endpoint_target::Variant::Worker(worker)) =
        spec.target.as_mut().and_then(|t| t.variant.as_mut())
        && let Some(name) = names.get(&record.target_namespace_id)
    {
        worker.namespace = name.clone();
    }
    Endpoint {
        version: record.version,
        url_prefix: format!("/nexus/endpoints/{}/services", record.id),
        id: record.id,
        spec: Some(spec),
        created_time: record.created_time,
        last_modified_time: record.last_modified_time,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_temporals_pattern() {
        for good in ["ab", "my-endpoint", "A1", "x-y-z9"] {
            assert!(valid_name(good), "{good}");
        }
        for bad in ["a", "1ab", "ab-", "a_b", "a b", "-ab", "é1"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn url_schemes_are_read_as_go_reads_them() {
        assert_eq!(url_scheme("http://localhost:1234/x"), "http");
        assert_eq!(url_scheme("HTTPS://h"), "https");
        assert_eq!(url_scheme("localhost:1234"), "localhost");
        assert_eq!(url_scheme("/path"), "");
        assert_eq!(
            url_issue("ftp://h").unwrap(),
            r#"invalid target URL scheme: "ftp", expected http or https"#
        );
        assert!(url_issue("https://example.com/nexus").is_none());
    }

    #[test]
    fn several_issues_are_reported_together() {
        let issues = name_issues(&format!("1{}", "a".repeat(200)));
        assert_eq!(issues.len(), 2);
        assert_eq!(issues[0], "endpoint name exceeds length limit of 200");
    }
}
