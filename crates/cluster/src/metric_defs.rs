//! Metrics of the calls between roles, named and labelled as Temporal's internal RPC clients
//! (`client/history/metric_client.go`, `client/matching/metric_client.go`) export them:
//! `client_requests` (counted when the call starts), `client_errors` (every failed call, by
//! `error_type`) and `client_latency` (seconds, recorded when the call ends), labelled
//! `service_name` (the calling role), `service_role` (the called role, `history` or `matching`),
//! `operation` (`HistoryClient<RPC>` / `MatchingClient<RPC>`, Temporal's RPC name) and
//! `namespace` (the namespace the call is for, `_unknown_` when its name is not known).

use std::time::Instant;

use chronicle_types::ApiError;

pub const CLIENT_REQUESTS: &str = "client_requests";
pub const CLIENT_ERRORS: &str = "client_errors";
pub const CLIENT_LATENCY: &str = "client_latency";
/// Chronicle's own: calls to another role answered in this process because that role runs here
/// too (a node with every role, reaching a history group it leads or a task-queue partition it
/// owns), by `service_role`. The rest of `client_requests` crossed the network.
pub const CLIENT_IN_PROCESS: &str = "chronicle_client_in_process_requests";

/// `service_role` of calls to history.
pub const HISTORY_ROLE: &str = "history";
/// `service_role` of calls to matching.
pub const MATCHING_ROLE: &str = "matching";

/// Temporal's namespace label of calls for no known namespace.
pub const UNKNOWN_NAMESPACE: &str = "_unknown_";

/// Describes the families (the exporter's `# HELP` lines).
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_histogram};
    describe_counter!(
        CLIENT_REQUESTS,
        "Requests sent to another role, by service_role and operation."
    );
    describe_counter!(CLIENT_ERRORS, "Requests to another role that failed.");
    describe_counter!(
        CLIENT_IN_PROCESS,
        "Requests to another role served in this process (the role runs here too), by service_role."
    );
    describe_histogram!(
        CLIENT_LATENCY,
        Unit::Seconds,
        "Time until another role answered a request."
    );
}

/// Counts a call to `role` made in process rather than over the network.
pub fn count_in_process(role: &'static str) {
    metrics::counter!(CLIENT_IN_PROCESS, "service_role" => role).increment(1);
}

/// Temporal's name of a gRPC code, as its `serviceerror` types are named (`Canceled`, ...).
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "Canceled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}

/// Temporal's `error_type` of an error (as its reporter exports it, `.` as `_`):
/// `serviceerror_<X>` where `X` follows the Temporal error detail (`...errordetails.v1.<X>Failure`)
/// or, without one, the code.
pub fn error_type_of(error: &ApiError) -> String {
    let from_detail = error.detail.as_ref().and_then(|any| {
        let name = any.type_url.rsplit_once("errordetails.v1.")?.1;
        let name = name.strip_suffix("Failure").unwrap_or(name);
        (!name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric()))
            .then(|| name.to_string())
    });
    format!(
        "serviceerror_{}",
        from_detail.as_deref().unwrap_or(code_name(error.code))
    )
}

/// One call to another role being measured: `client_requests` is counted when it is made (as
/// Temporal does, so a long poll in flight is already counted), the rest when it ends. A call
/// abandoned by its caller (a worker that closed its long poll) ends as `Canceled`, as the
/// canceled context of Temporal's gRPC call does.
pub struct ClientCall {
    labels: [(&'static str, String); 4],
    started: Instant,
    finished: bool,
}

impl ClientCall {
    pub fn start(
        caller: &'static str,
        role: &'static str,
        operation: String,
        namespace: Option<String>,
    ) -> Self {
        let labels = [
            ("service_name", caller.to_string()),
            ("service_role", role.to_string()),
            ("operation", operation),
            (
                "namespace",
                namespace
                    .filter(|n| !n.is_empty())
                    .unwrap_or_else(|| UNKNOWN_NAMESPACE.to_string()),
            ),
        ];
        metrics::counter!(CLIENT_REQUESTS, &labels[..]).increment(1);
        Self {
            labels,
            started: Instant::now(),
            finished: false,
        }
    }

    pub fn finish<T>(mut self, result: &Result<T, ApiError>) {
        self.record(result.as_ref().err().map(error_type_of));
    }

    fn record(&mut self, error_type: Option<String>) {
        self.finished = true;
        if let Some(error_type) = error_type {
            let mut with_type = self.labels.to_vec();
            with_type.push(("error_type", error_type));
            metrics::counter!(CLIENT_ERRORS, &with_type[..]).increment(1);
        }
        metrics::histogram!(CLIENT_LATENCY, &self.labels[..])
            .record(self.started.elapsed().as_secs_f64());
    }
}

impl Drop for ClientCall {
    fn drop(&mut self) {
        if !self.finished {
            self.record(Some(format!(
                "serviceerror_{}",
                code_name(tonic::Code::Cancelled)
            )));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_types_follow_the_detail_or_the_code() {
        let plain = ApiError::new(tonic::Code::Cancelled, "gone");
        assert_eq!(error_type_of(&plain), "serviceerror_Canceled");
        let detailed = ApiError {
            code: tonic::Code::NotFound,
            message: "x".into(),
            detail: Some(chronicle_proto::wkt::Any {
                type_url:
                    "type.googleapis.com/temporal.api.errordetails.v1.NamespaceNotFoundFailure"
                        .into(),
                value: Vec::new(),
            }),
        };
        assert_eq!(error_type_of(&detailed), "serviceerror_NamespaceNotFound");
    }
}
