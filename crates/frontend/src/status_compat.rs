//! Status codes tonic chooses differently from Temporal's (grpc-go) server, rewritten at the edge
//! so that SDKs see what they would see from Temporal.
//!
//! A request larger than the frontend's message limit: tonic answers OUT_OF_RANGE, grpc-go
//! answers RESOURCE_EXHAUSTED, and SDKs treat only the latter as "request too large".

use std::task::{Context, Poll};

use futures::TryFutureExt;
use futures::future::MapOk;
use http::HeaderValue;

const GRPC_STATUS: &str = "grpc-status";
const GRPC_MESSAGE: &str = "grpc-message";
const OUT_OF_RANGE: &str = "11";
const RESOURCE_EXHAUSTED: &str = "8";

/// The tower layer to put in front of the gRPC services.
#[derive(Clone, Copy, Debug, Default)]
pub struct StatusCompatLayer;

impl<S> tower::Layer<S> for StatusCompatLayer {
    type Service = StatusCompat<S>;

    fn layer(&self, inner: S) -> Self::Service {
        StatusCompat { inner }
    }
}

#[derive(Clone, Debug)]
pub struct StatusCompat<S> {
    inner: S,
}

impl<S, Request, B> tower::Service<Request> for StatusCompat<S>
where
    S: tower::Service<Request, Response = http::Response<B>>,
{
    type Response = http::Response<B>;
    type Error = S::Error;
    type Future = MapOk<S::Future, fn(http::Response<B>) -> http::Response<B>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        self.inner.call(request).map_ok(rewrite_status::<B>)
    }
}

/// Rewrites a trailers-only error response (the status travels in the headers, which is how
/// tonic answers a request it could not decode).
fn rewrite_status<B>(mut response: http::Response<B>) -> http::Response<B> {
    let headers = response.headers_mut();
    if headers.get(GRPC_STATUS).is_some_and(|v| v == OUT_OF_RANGE) && is_too_large(headers) {
        headers.insert(GRPC_STATUS, HeaderValue::from_static(RESOURCE_EXHAUSTED));
    }
    response
}

fn is_too_large(headers: &http::HeaderMap) -> bool {
    // grpc-message is percent-encoded.
    headers
        .get(GRPC_MESSAGE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|m| m.replace("%20", " ").contains("message length too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: &'static str, message: &'static str) -> http::Response<()> {
        let mut r = http::Response::new(());
        r.headers_mut()
            .insert(GRPC_STATUS, HeaderValue::from_static(status));
        r.headers_mut()
            .insert(GRPC_MESSAGE, HeaderValue::from_static(message));
        r
    }

    #[test]
    fn too_large_becomes_resource_exhausted() {
        let r = rewrite_status(response(
            "11",
            "Error,%20decoded%20message%20length%20too%20large:%20found%201%20bytes",
        ));
        assert_eq!(r.headers()[GRPC_STATUS], RESOURCE_EXHAUSTED);
    }

    #[test]
    fn other_statuses_are_untouched() {
        let r = rewrite_status(response("11", "some%20other%20range%20error"));
        assert_eq!(r.headers()[GRPC_STATUS], OUT_OF_RANGE);
        let r = rewrite_status(response("3", "message%20length%20too%20large"));
        assert_eq!(r.headers()[GRPC_STATUS], "3");
    }
}
