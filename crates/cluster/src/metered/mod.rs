//! Decorators of the service traits that measure each call between roles as Temporal's internal
//! RPC clients do (`client_requests`, `client_errors`, `client_latency`, see
//! [`crate::metric_defs`]). The server wraps the history and matching services each role calls
//! with the calling role's name; start-dev measures its in-process calls the same way, as
//! Temporal's dev server measures its roles' gRPC calls to each other.
//!
//! Calls that Temporal's roles do not make to each other (namespace records, which Temporal's
//! frontend reads from persistence; visibility lists; Chronicle's own routing and placement
//! queries) pass through unmeasured.

mod history;
mod matching;

use std::future::Future;
use std::sync::{Arc, OnceLock};

use chronicle_types::ApiResult;

pub use history::MeteredHistory;
pub use matching::MeteredMatching;

use crate::metric_defs::ClientCall;

/// Finds the name of a namespace by its ID (the `namespace` label) from what the calling role
/// already knows; `None` when it does not know the ID.
pub type NamespaceNames = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// What both decorators share: the calling role and how it names namespaces.
struct Caller {
    service_name: &'static str,
    role: &'static str,
    prefix: &'static str,
    names: OnceLock<NamespaceNames>,
}

impl Caller {
    fn new(service_name: &'static str, role: &'static str, prefix: &'static str) -> Self {
        Self {
            service_name,
            role,
            prefix,
            names: OnceLock::new(),
        }
    }

    /// The namespace label: the name the request carries, else the caller's name for the ID.
    fn namespace(&self, namespace_id: &str, from_request: &str) -> Option<String> {
        if !from_request.is_empty() {
            return Some(from_request.to_string());
        }
        self.names.get().and_then(|names| names(namespace_id))
    }

    async fn measure<T>(
        &self,
        operation: &str,
        namespace: Option<String>,
        call: impl Future<Output = ApiResult<T>>,
    ) -> ApiResult<T> {
        let measured = ClientCall::start(
            self.service_name,
            self.role,
            format!("{}{operation}", self.prefix),
            namespace,
        );
        let result = call.await;
        measured.finish(&result);
        result
    }
}
