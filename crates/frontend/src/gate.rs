//! The frontend's admission gate: a tower layer in front of `WorkflowService` and
//! `OperatorService` that, before a request is decoded or any handler runs,
//!
//! 1. authenticates the bearer token and authorizes the method for the request's namespace
//!    (when JWT authorization is on), and
//! 2. applies the instance and namespace rate limits and the long-running call limit.
//!
//! The namespace is read from the still-encoded request: the body (one gRPC frame) is buffered
//! and its top-level protobuf fields are walked to the `namespace` field, skipping every other
//! field without parsing it. That walk is not a decode (nothing is allocated but the namespace);
//! tonic decodes the message once afterwards, as without the gate. A gzip-compressed frame is
//! inflated once here and handed on uncompressed, so it is not inflated twice either.
//!
//! gRPC health, reflection and `GetSystemInfo` (which SDKs call before anything else) are never
//! gated. Refusals are logged on the `chronicle::audit` target (subject, method, namespace;
//! never a token or a payload), and so is every admin-access call that is let through.

use std::future::Future;
use std::io::Read;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;

use crate::auth::{Access, Authenticator, Claims, MethodInfo, MethodTable, Scope};
use crate::ratelimit::RateLimiter;

/// The audit log's tracing target.
pub const AUDIT_TARGET: &str = "chronicle::audit";

/// Methods never gated (besides other services: health, reflection).
const OPEN_METHODS: &[&str] = &["/temporal.api.workflowservice.v1.WorkflowService/GetSystemInfo"];

/// What the gate enforces.
pub struct Gate {
    auth: Option<Arc<Authenticator>>,
    limits: Option<Arc<RateLimiter>>,
    table: &'static MethodTable,
    max_message: usize,
}

impl Gate {
    pub fn new(auth: Option<Arc<Authenticator>>, limits: Option<Arc<RateLimiter>>) -> Self {
        Self {
            auth,
            limits,
            table: MethodTable::get(),
            max_message: chronicle_types::limits::MAX_GRPC_MESSAGE_BYTES,
        }
    }

    /// Whether the gate has anything to do (otherwise the layer passes every call through).
    pub fn is_active(&self) -> bool {
        self.auth.is_some() || self.limits.is_some()
    }
}

#[derive(Clone)]
pub struct GateLayer {
    gate: Arc<Gate>,
}

impl GateLayer {
    pub fn new(gate: Gate) -> Self {
        Self {
            gate: Arc::new(gate),
        }
    }
}

impl<S> tower::Layer<S> for GateLayer {
    type Service = GateService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GateService {
            gate: self.gate.clone(),
            inner,
        }
    }
}

#[derive(Clone)]
pub struct GateService<S> {
    gate: Arc<Gate>,
    inner: S,
}

type Body = tonic::body::Body;

impl<S, RB> tower::Service<http::Request<Body>> for GateService<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    RB: Default + Send + 'static,
{
    type Response = http::Response<RB>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let path = request.uri().path();
        let info = match self.gate.table.lookup(path) {
            _ if !self.gate.is_active() || OPEN_METHODS.contains(&path) => {
                return Box::pin(self.inner.call(request));
            }
            Some(info) => *info,
            None if !path.starts_with(crate::auth::methods::WORKFLOW_SERVICE)
                && !path.starts_with(crate::auth::methods::OPERATOR_SERVICE) =>
            {
                // Health, reflection: not Temporal API calls.
                return Box::pin(self.inner.call(request));
            }
            None if self.gate.auth.is_none() => return Box::pin(self.inner.call(request)),
            // A method of the API this table does not know: nobody may call it.
            None => {
                let method = path.rsplit('/').next().unwrap_or(path).to_string();
                audit_denied("-", &method, "", "unclassified method");
                return Box::pin(async { Ok(refuse(permission_denied())) });
            }
        };
        // The ready service serves this call; a clone waits for the next (tower's pattern).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let gate = self.gate.clone();
        Box::pin(async move {
            match gate.admit(request, info).await {
                Ok((request, open_call)) => {
                    let response = inner.call(request).await;
                    drop(open_call);
                    response
                }
                Err(status) => Ok(refuse(status)),
            }
        })
    }
}

fn refuse<RB: Default>(status: tonic::Status) -> http::Response<RB> {
    status.into_http()
}

fn unauthenticated() -> tonic::Status {
    tonic::Status::unauthenticated("Request unauthenticated.")
}

fn permission_denied() -> tonic::Status {
    tonic::Status::permission_denied("Request unauthorized.")
}

fn audit_denied(subject: &str, method: &str, namespace: &str, reason: &str) {
    tracing::warn!(
        target: AUDIT_TARGET,
        decision = "deny",
        subject,
        method,
        namespace,
        reason,
        "request refused"
    );
}

impl Gate {
    async fn admit(
        &self,
        request: http::Request<Body>,
        info: MethodInfo,
    ) -> Result<(http::Request<Body>, Option<crate::ratelimit::OpenCall>), tonic::Status> {
        let method = info.name;
        let class = info.class;
        let authenticated = match self.auth.as_ref() {
            Some(auth) => {
                let header = request
                    .headers()
                    .get(http::header::AUTHORIZATION)
                    .map(|v| v.as_bytes());
                Some(auth.authenticate(header).await)
            }
            None => None,
        };
        if let Some(Err(e)) = authenticated {
            // Refused without buffering the request: only its first bytes are read, for the
            // audit line's namespace (prost writes fields in order; the namespace comes early).
            let namespace = match (class.scope, info.namespace_field) {
                (Scope::Namespace, Some(_)) => peek_namespace(request, &info).await,
                _ => None,
            };
            let namespace = namespace.as_deref().unwrap_or("");
            crate::metric_defs::set_namespace(namespace);
            metrics::counter!(
                "service_errors_unauthorized",
                "service_name" => crate::metric_defs::SERVICE_NAME,
                "operation" => method,
                "namespace" => namespace.to_string(),
            )
            .increment(1);
            audit_denied("-", method, namespace, &e.0);
            return Err(unauthenticated());
        }
        // The namespace is needed for a namespace-scoped method when it is authorized or
        // limited by namespace; GetWorkflowExecutionHistory's long-poll flag when limited.
        let needs_body = class.scope == Scope::Namespace
            && (authenticated.is_some() || self.limits.is_some())
            && info.namespace_field.is_some();
        let (request, fields) = if needs_body {
            self.read_fields(request, &info).await?
        } else {
            (request, Fields::default())
        };
        let namespace = fields.namespace.as_deref().unwrap_or("");
        crate::metric_defs::set_namespace(namespace);
        // Refused tokens returned above.
        let claims: Option<Claims> = authenticated.and_then(Result::ok);
        let subject = claims.as_ref().map(|c| c.subject.as_str()).unwrap_or("-");
        if let Some(claims) = &claims
            && !claims.allows(class.scope, class.access, namespace)
        {
            metrics::counter!(
                "service_errors_authorize_failed",
                "service_name" => crate::metric_defs::SERVICE_NAME,
                "operation" => method,
                "namespace" => namespace.to_string(),
            )
            .increment(1);
            audit_denied(subject, method, namespace, "missing permission");
            return Err(permission_denied());
        }
        let mut open_call = None;
        if let Some(limits) = &self.limits {
            let long_running = class.long_running || fields.wait_new_event;
            let admitted = if long_running {
                limits
                    .enter_long_running(namespace, method)
                    .map(|call| open_call = call)
            } else {
                limits.admit(namespace)
            };
            if let Err(e) = admitted {
                return Err(e.into());
            }
        }
        if class.access == Access::Admin {
            tracing::info!(
                target: AUDIT_TARGET,
                decision = "allow",
                subject,
                method,
                namespace,
                "admin request"
            );
        }
        Ok((request, open_call))
    }

    /// Buffers the request body and reads the method's fields from its frame.
    async fn read_fields(
        &self,
        request: http::Request<Body>,
        info: &MethodInfo,
    ) -> Result<(http::Request<Body>, Fields), tonic::Status> {
        let (parts, body) = request.into_parts();
        // Frame header plus the largest message tonic would accept.
        let limit = self.max_message + 5;
        let collected = http_body_util::Limited::new(body, limit)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    tonic::Status::resource_exhausted(format!(
                        "grpc: received message larger than max ({limit} bytes)"
                    ))
                } else {
                    tonic::Status::cancelled(format!("reading the request: {e}"))
                }
            })?;
        let mut bytes = collected.to_bytes();
        let gzip = parts
            .headers
            .get("grpc-encoding")
            .is_some_and(|v| v.as_bytes() == b"gzip");
        let mut fields = Fields::default();
        if let Some((compressed, message, rest)) = split_frame(&bytes) {
            if !compressed {
                fields = scan_fields(message, info);
            } else if gzip {
                let inflated = inflate(message, self.max_message)?;
                fields = scan_fields(&inflated, info);
                // Handed on uncompressed: tonic reads the frame's flag, not the header.
                let mut frame = BytesMut::with_capacity(5 + inflated.len() + rest.len());
                frame.extend_from_slice(&[0]);
                frame.extend_from_slice(&(inflated.len() as u32).to_be_bytes());
                frame.extend_from_slice(&inflated);
                frame.extend_from_slice(rest);
                bytes = frame.freeze();
            }
        }
        let body = Body::new(http_body_util::Full::new(bytes));
        Ok((http::Request::from_parts(parts, body), fields))
    }
}

/// Bytes of a refused request read for its namespace, at most.
const PEEK_BYTES: usize = 16 * 1024;

/// The namespace of an uncompressed request from its first [`PEEK_BYTES`] (a compressed one
/// would have to be inflated whole: it is not).
async fn peek_namespace(request: http::Request<Body>, info: &MethodInfo) -> Option<String> {
    let mut body = request.into_body();
    let mut prefix = BytesMut::new();
    while prefix.len() < PEEK_BYTES {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    prefix.extend_from_slice(data);
                }
            }
            _ => break,
        }
    }
    let prefix = prefix.freeze();
    let header = prefix.get(..5)?;
    if header[0] != 0 {
        return None;
    }
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    let message = &prefix[5..prefix.len().min(5 + len)];
    // A field cut off at the end of the prefix is left unread by the scan.
    scan_fields(message, info).namespace
}

#[derive(Default, Debug, PartialEq)]
struct Fields {
    namespace: Option<String>,
    wait_new_event: bool,
}

/// The first gRPC frame: (compressed, message, what follows).
fn split_frame(bytes: &Bytes) -> Option<(bool, &[u8], &[u8])> {
    let header = bytes.get(..5)?;
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    let message = bytes.get(5..5 + len)?;
    Some((header[0] == 1, message, &bytes[5 + len..]))
}

fn inflate(message: &[u8], max: usize) -> Result<Vec<u8>, tonic::Status> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(message)
        .take(max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| tonic::Status::internal(format!("could not decompress the request: {e}")))?;
    if out.len() > max {
        return Err(tonic::Status::resource_exhausted(format!(
            "grpc: received message after decompression larger than max ({max} bytes)"
        )));
    }
    Ok(out)
}

fn read_varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*at)?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// Walks the message's top-level fields for the namespace string and the long-poll flag (the
/// last occurrence wins, as protobuf merges scalars). A malformed message yields what was read
/// so far: tonic refuses it when decoding it.
fn scan_fields(message: &[u8], info: &MethodInfo) -> Fields {
    let mut fields = Fields::default();
    let mut at = 0;
    while at < message.len() {
        let Some(key) = read_varint(message, &mut at) else {
            break;
        };
        let number = (key >> 3) as u32;
        match key & 7 {
            0 => {
                let Some(value) = read_varint(message, &mut at) else {
                    break;
                };
                if Some(number) == info.wait_field {
                    fields.wait_new_event = value != 0;
                }
            }
            1 => at += 8,
            5 => at += 4,
            2 => {
                let Some(len) = read_varint(message, &mut at) else {
                    break;
                };
                let Some(end) = at.checked_add(len as usize).filter(|e| *e <= message.len()) else {
                    break;
                };
                if Some(number) == info.namespace_field {
                    fields.namespace = std::str::from_utf8(&message[at..end])
                        .ok()
                        .map(str::to_string);
                }
                at = end;
            }
            _ => break,
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;
    use chronicle_proto::temporal::api::workflowservice::v1 as ws;
    use prost::Message;

    fn info(method: &str) -> MethodInfo {
        *MethodTable::get()
            .lookup(&format!(
                "{}{method}",
                crate::auth::methods::WORKFLOW_SERVICE
            ))
            .unwrap()
    }

    #[test]
    fn reads_the_namespace_without_decoding() {
        let request = ws::StartWorkflowExecutionRequest {
            namespace: "orders".into(),
            workflow_id: "wf".into(),
            input: Some(Default::default()),
            ..Default::default()
        };
        let fields = scan_fields(&request.encode_to_vec(), &info("StartWorkflowExecution"));
        assert_eq!(fields.namespace.as_deref(), Some("orders"));
        assert!(!fields.wait_new_event);

        let history = ws::GetWorkflowExecutionHistoryRequest {
            namespace: "default".into(),
            wait_new_event: true,
            maximum_page_size: 7,
            ..Default::default()
        };
        let fields = scan_fields(
            &history.encode_to_vec(),
            &info("GetWorkflowExecutionHistory"),
        );
        assert_eq!(fields.namespace.as_deref(), Some("default"));
        assert!(fields.wait_new_event);
    }

    #[test]
    fn reads_the_namespace_of_other_requests() {
        // Requests whose namespace is not their only string field.
        let register = ws::RegisterNamespaceRequest {
            namespace: "n1".into(),
            description: "d".into(),
            ..Default::default()
        };
        assert_eq!(
            scan_fields(&register.encode_to_vec(), &info("RegisterNamespace")).namespace,
            Some("n1".into())
        );
        let poll = ws::PollActivityTaskQueueRequest {
            namespace: "n2".into(),
            identity: "me".into(),
            ..Default::default()
        };
        assert_eq!(
            scan_fields(&poll.encode_to_vec(), &info("PollActivityTaskQueue")).namespace,
            Some("n2".into())
        );
    }

    #[test]
    fn malformed_input_does_not_panic() {
        let i = info("StartWorkflowExecution");
        for bytes in [
            &[0xff, 0xff, 0xff][..],
            &[0x0a, 0x7f, 0x41],
            &[0x0b],
            &[0x0a],
            &[0x80; 12],
        ] {
            let _ = scan_fields(bytes, &i);
        }
        assert_eq!(split_frame(&Bytes::from_static(&[0, 0, 0, 0, 9, 1])), None);
    }

    #[tokio::test]
    async fn a_refused_request_is_peeked_not_buffered() {
        use chronicle_proto::temporal::api::common::v1::{Payload, Payloads};
        use futures::StreamExt;
        let request = ws::StartWorkflowExecutionRequest {
            namespace: "orders".into(),
            input: Some(Payloads {
                payloads: vec![Payload {
                    data: vec![7; 1 << 20],
                    ..Default::default()
                }],
            }),
            ..Default::default()
        };
        let message = request.encode_to_vec();
        let mut frame = vec![0];
        frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
        frame.extend_from_slice(&message);
        // Sent in 8 KiB data frames, as HTTP/2 would; count what the peek pulls.
        let pulled = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let chunks: Vec<Bytes> = frame.chunks(8192).map(Bytes::copy_from_slice).collect();
        let counter = pulled.clone();
        let stream = futures::stream::iter(chunks).map(move |chunk| {
            counter.fetch_add(chunk.len(), std::sync::atomic::Ordering::SeqCst);
            Ok::<_, std::convert::Infallible>(http_body::Frame::data(chunk))
        });
        let http_request = http::Request::new(Body::new(http_body_util::StreamBody::new(stream)));
        assert_eq!(
            peek_namespace(http_request, &info("StartWorkflowExecution"))
                .await
                .as_deref(),
            Some("orders")
        );
        assert!(pulled.load(std::sync::atomic::Ordering::SeqCst) <= PEEK_BYTES + 8192);
    }

    #[test]
    fn inflates_once() {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(b"hello").unwrap();
        let gz = encoder.finish().unwrap();
        assert_eq!(inflate(&gz, 100).unwrap(), b"hello");
        assert_eq!(
            inflate(&gz, 3).unwrap_err().code(),
            tonic::Code::ResourceExhausted
        );
    }
}
