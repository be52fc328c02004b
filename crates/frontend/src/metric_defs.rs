//! Metrics of the frontend role, named and labelled as Temporal's frontend service exports them:
//! per RPC, `service_requests`, `service_latency` (seconds), `service_error_with_type`,
//! `service_errors` (unexpected errors only) and `service_errors_resource_exhausted`, with the
//! labels `service_name="frontend"`, `operation` (the RPC's method name; OperatorService methods
//! get Temporal's `Operator` prefix) and `namespace` (the request's namespace, `_unknown_` for
//! requests without one).
//!
//! [`ServiceMetricsLayer`] measures every Temporal API call. A handler names the request's
//! namespace with [`set_namespace`] when it resolves it (the layer sees only encoded bytes).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

/// Temporal's `service_name` of this role.
pub const SERVICE_NAME: &str = "frontend";

pub const SERVICE_REQUESTS: &str = "service_requests";
/// Unexpected errors only (not a client's mistake: see [`is_expected`]).
pub const SERVICE_ERRORS: &str = "service_errors";
/// Every error, by `error_type`.
pub const SERVICE_ERROR_WITH_TYPE: &str = "service_error_with_type";
pub const SERVICE_ERRORS_RESOURCE_EXHAUSTED: &str = "service_errors_resource_exhausted";
pub const SERVICE_LATENCY: &str = "service_latency";

/// Temporal's namespace label of requests that name none.
pub const UNKNOWN_NAMESPACE: &str = "_unknown_";

const WORKFLOW_SERVICE: &str = "/temporal.api.workflowservice.v1.WorkflowService/";
const OPERATOR_SERVICE: &str = "/temporal.api.operatorservice.v1.OperatorService/";

/// Describes the role's metrics (the exporter's `# HELP` lines).
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_histogram};
    describe_counter!(SERVICE_REQUESTS, "Requests received, per operation.");
    describe_counter!(SERVICE_ERRORS, "Requests that failed unexpectedly.");
    describe_counter!(
        SERVICE_ERROR_WITH_TYPE,
        "Requests that failed, by error type."
    );
    describe_counter!(
        SERVICE_ERRORS_RESOURCE_EXHAUSTED,
        "Requests refused with RESOURCE_EXHAUSTED."
    );
    describe_histogram!(SERVICE_LATENCY, Unit::Seconds, "Time to answer a request.");
}

/// What the handler learns about the request it serves.
#[derive(Default)]
struct RequestScope {
    namespace: Mutex<Option<String>>,
    operation: Mutex<Option<&'static str>>,
}

tokio::task_local! {
    static REQUEST: Arc<RequestScope>;
}

/// Names the namespace of the request being served (its metric label).
pub fn set_namespace(name: &str) {
    let _ = REQUEST.try_with(|scope| {
        let mut namespace = scope.namespace.lock().unwrap_or_else(|e| e.into_inner());
        if namespace.is_none() && !name.is_empty() {
            *namespace = Some(name.to_string());
        }
    });
}

/// Reports the request under another operation name than its method's (Temporal reports a
/// GetWorkflowExecutionHistory that waits for new events as `PollWorkflowExecutionHistory`).
pub fn set_operation(operation: &'static str) {
    let _ = REQUEST.try_with(|scope| {
        *scope.operation.lock().unwrap_or_else(|e| e.into_inner()) = Some(operation);
    });
}

/// Temporal's operation name of a gRPC path, for the Temporal API services only.
pub fn operation_of(path: &str) -> Option<String> {
    if let Some(method) = path.strip_prefix(WORKFLOW_SERVICE) {
        Some(method.to_string())
    } else {
        path.strip_prefix(OPERATOR_SERVICE)
            .map(|method| format!("Operator{method}"))
    }
}

/// Whether an error is the client's (Temporal's classification): these are not counted in
/// `service_errors`, so availability panels do not penalise bad requests.
pub fn is_expected(code: tonic::Code, error_type: &str) -> bool {
    use tonic::Code::*;
    match code {
        Cancelled | InvalidArgument | NotFound | AlreadyExists | PermissionDenied
        | FailedPrecondition | OutOfRange | Unauthenticated => true,
        _ => matches!(
            error_type,
            "serviceerror_WorkflowExecutionAlreadyStarted"
                | "serviceerror_NamespaceNotActive"
                | "serviceerror_NamespaceInvalidState"
                | "serviceerror_QueryFailed"
                | "serviceerror_WorkflowNotReady"
                | "serviceerror_CancellationAlreadyRequested"
                | "serviceerror_ClientVersionNotSupported"
                | "serviceerror_ServerVersionNotSupported"
                | "serviceerror_NewerBuildExists"
        ),
    }
}

/// Temporal's `error_type` of a status: the Go type name of the service error (`serviceerror.X`,
/// exported as `serviceerror_X`: Temporal's reporter replaces `.` in label values), where `X`
/// follows the status' Temporal error detail (`...errordetails.v1.<X>Failure`) or, without one,
/// its code.
pub fn error_type(status: &tonic::Status) -> String {
    const MARKER: &[u8] = b"errordetails.v1.";
    let details = status.details();
    if let Some(at) = details.windows(MARKER.len()).position(|w| w == MARKER) {
        let rest = &details[at + MARKER.len()..];
        let end = rest
            .iter()
            .position(|b| !b.is_ascii_alphanumeric())
            .unwrap_or(rest.len());
        if let Ok(name) = std::str::from_utf8(&rest[..end]) {
            let name = name.strip_suffix("Failure").unwrap_or(name);
            if !name.is_empty() {
                return format!("serviceerror_{name}");
            }
        }
    }
    format!("serviceerror_{}", code_name(status.code()))
}

fn code_name(code: tonic::Code) -> &'static str {
    chronicle_cluster::metric_defs::code_name(code)
}

/// The tower layer that measures the Temporal API services (other paths pass through).
#[derive(Clone, Copy, Debug, Default)]
pub struct ServiceMetricsLayer;

impl<S> tower::Layer<S> for ServiceMetricsLayer {
    type Service = ServiceMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ServiceMetrics { inner }
    }
}

#[derive(Clone, Debug)]
pub struct ServiceMetrics<S> {
    inner: S,
}

impl<S, B, RB> tower::Service<http::Request<B>> for ServiceMetrics<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<RB>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let Some(operation) = operation_of(request.uri().path()) else {
            return Box::pin(self.inner.call(request));
        };
        let scope = Arc::new(RequestScope::default());
        let served = REQUEST.scope(scope.clone(), self.inner.call(request));
        Box::pin(async move {
            let started = Instant::now();
            let response = served.await;
            let elapsed = started.elapsed().as_secs_f64();
            let operation = scope
                .operation
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .map(str::to_string)
                .unwrap_or(operation);
            let namespace = scope
                .namespace
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
                .unwrap_or_else(|| UNKNOWN_NAMESPACE.to_string());
            // A handler's error travels in the response headers (trailers-only response).
            let status = match &response {
                Ok(response) => tonic::Status::from_header_map(response.headers()),
                Err(_) => Some(tonic::Status::internal("transport error")),
            };
            record(&operation, &namespace, elapsed, status.as_ref());
            response
        })
    }
}

fn record(operation: &str, namespace: &str, seconds: f64, status: Option<&tonic::Status>) {
    let labels = [
        ("service_name", SERVICE_NAME.to_string()),
        ("operation", operation.to_string()),
        ("namespace", namespace.to_string()),
    ];
    metrics::counter!(SERVICE_REQUESTS, &labels[..]).increment(1);
    metrics::histogram!(SERVICE_LATENCY, &labels[..]).record(seconds);
    let Some(status) = status.filter(|s| s.code() != tonic::Code::Ok) else {
        return;
    };
    let error_type = error_type(status);
    let mut with_type = labels.to_vec();
    with_type.push(("error_type", error_type.clone()));
    metrics::counter!(SERVICE_ERROR_WITH_TYPE, &with_type[..]).increment(1);
    if status.code() == tonic::Code::ResourceExhausted {
        let mut exhausted = labels.to_vec();
        let (cause, scope) = resource_exhausted_labels(status);
        exhausted.push(("resource_exhausted_cause", cause));
        exhausted.push(("resource_exhausted_scope", scope));
        metrics::counter!(SERVICE_ERRORS_RESOURCE_EXHAUSTED, &exhausted[..]).increment(1);
    }
    if !is_expected(status.code(), &error_type) {
        metrics::counter!(SERVICE_ERRORS, &labels[..]).increment(1);
    }
}

/// Temporal's `resource_exhausted_cause` and `resource_exhausted_scope` label values (its enums'
/// short names: `RpsLimit`, `ConcurrentLimit`, `Namespace`, `System`, ...) from the status'
/// `ResourceExhaustedFailure` detail; `Unspecified` without one.
pub fn resource_exhausted_labels(status: &tonic::Status) -> (String, String) {
    use chronicle_proto::temporal::api::enums::v1::{
        ResourceExhaustedCause, ResourceExhaustedScope,
    };
    use prost::Message;
    let failure = chronicle_proto::google::rpc::Status::decode(status.details())
        .ok()
        .and_then(|s| {
            s.details.into_iter().find(|d| {
                d.type_url
                    .ends_with("temporal.api.errordetails.v1.ResourceExhaustedFailure")
            })
        })
        .and_then(|any| {
            chronicle_proto::temporal::api::errordetails::v1::ResourceExhaustedFailure::decode(
                any.value.as_slice(),
            )
            .ok()
        })
        .unwrap_or_default();
    let short = |name: &str, prefix: &str| -> String {
        name.strip_prefix(prefix)
            .unwrap_or(name)
            .split('_')
            .map(|word| {
                let lower = word.to_ascii_lowercase();
                let mut chars = lower.chars();
                chars
                    .next()
                    .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                    .unwrap_or_default()
            })
            .collect()
    };
    let cause = ResourceExhaustedCause::try_from(failure.cause).unwrap_or_default();
    let scope = ResourceExhaustedScope::try_from(failure.scope).unwrap_or_default();
    (
        short(cause.as_str_name(), "RESOURCE_EXHAUSTED_CAUSE_"),
        short(scope.as_str_name(), "RESOURCE_EXHAUSTED_SCOPE_"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_exhausted_labels_follow_the_detail() {
        use chronicle_proto::temporal::api::enums::v1::{
            ResourceExhaustedCause, ResourceExhaustedScope,
        };
        let status: tonic::Status = chronicle_types::ApiError::resource_exhausted_for(
            "x",
            ResourceExhaustedCause::RpsLimit,
            ResourceExhaustedScope::Namespace,
        )
        .into();
        assert_eq!(
            resource_exhausted_labels(&status),
            ("RpsLimit".to_string(), "Namespace".to_string())
        );
        let plain = tonic::Status::resource_exhausted("too large");
        assert_eq!(
            resource_exhausted_labels(&plain),
            ("Unspecified".to_string(), "Unspecified".to_string())
        );
    }

    #[test]
    fn operations_are_method_names_with_temporal_prefixes() {
        assert_eq!(
            operation_of("/temporal.api.workflowservice.v1.WorkflowService/StartWorkflowExecution")
                .as_deref(),
            Some("StartWorkflowExecution")
        );
        assert_eq!(
            operation_of("/temporal.api.operatorservice.v1.OperatorService/ListSearchAttributes")
                .as_deref(),
            Some("OperatorListSearchAttributes")
        );
        assert_eq!(operation_of("/grpc.health.v1.Health/Check"), None);
    }

    #[test]
    fn error_types_follow_temporal_error_details_or_the_code() {
        let plain = tonic::Status::not_found("gone");
        assert_eq!(error_type(&plain), "serviceerror_NotFound");
        let detailed = tonic::Status::with_details(
            tonic::Code::AlreadyExists,
            "started",
            tonic::codegen::Bytes::from_static(
                b"\x0a\x3etype.googleapis.com/temporal.api.errordetails.v1.WorkflowExecutionAlreadyStartedFailure\x12\x00",
            ),
        );
        assert_eq!(
            error_type(&detailed),
            "serviceerror_WorkflowExecutionAlreadyStarted"
        );
        assert!(is_expected(detailed.code(), &error_type(&detailed)));
        assert!(!is_expected(
            tonic::Code::Unavailable,
            "serviceerror_Unavailable"
        ));
        assert!(!is_expected(
            tonic::Code::ResourceExhausted,
            "serviceerror_ResourceExhausted"
        ));
    }
}
