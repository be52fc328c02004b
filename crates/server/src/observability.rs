//! The metrics port: Prometheus' `/metrics` and the health probes `/health/live` and
//! `/health/ready`, served by a small HTTP/1.1 server next to the gRPC listener.
//!
//! Metrics follow the conventions of Temporal's default (tally) Prometheus reporter, so Temporal's
//! dashboards read them: counters without a `_total` suffix, timers as histograms in seconds with
//! Temporal's default boundaries, dimensionless histograms with its dimensionless boundaries.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use chronicle_history::HistoryEngine;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Boundaries of every timer histogram, in seconds: Temporal's default timer boundaries (1 ms to
/// 1000 s), which its reporter converts from milliseconds.
pub const TIMER_BUCKETS_SECONDS: &[f64] = &[
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0,
    200.0, 500.0, 1000.0,
];

/// Boundaries of histograms of counts (Temporal's dimensionless boundaries, 1 to 100 000).
pub const DIMENSIONLESS_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1_000.0, 2_000.0, 5_000.0, 10_000.0,
    20_000.0, 50_000.0, 100_000.0,
];

/// Temporal's process counter: +1 per role when the process starts.
pub const RESTARTS: &str = "restarts";

/// Histograms that count things rather than time them, across the roles.
fn dimensionless_histograms() -> impl Iterator<Item = &'static str> {
    chronicle_history::metric_defs::DIMENSIONLESS_HISTOGRAMS
        .iter()
        .chain(chronicle_storage::metric_defs::DIMENSIONLESS_HISTOGRAMS)
        .copied()
}

static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();

/// Counts a start of each role this node runs (Temporal's `restarts`, one series per
/// `service_name`): a frontend-only process must not report history and matching starts.
pub fn record_start(frontend: bool, history: bool, matching: bool) {
    for (runs, role) in [
        (frontend, chronicle_frontend::metric_defs::SERVICE_NAME),
        (history, chronicle_history::metric_defs::SERVICE_NAME),
        (matching, chronicle_matching::metric_defs::SERVICE_NAME),
    ] {
        if runs {
            metrics::counter!(RESTARTS, "service_name" => role).increment(1);
        }
    }
}

/// The process' Prometheus recorder, installed on first use (a process has one global recorder;
/// servers started in the same process, as in tests, share it).
pub fn prometheus() -> anyhow::Result<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let mut builder = PrometheusBuilder::new()
                .set_buckets(TIMER_BUCKETS_SECONDS)
                .map_err(|e| e.to_string())?;
            for name in dimensionless_histograms() {
                builder = builder
                    .set_buckets_for_metric(Matcher::Full(name.to_string()), DIMENSIONLESS_BUCKETS)
                    .map_err(|e| e.to_string())?;
            }
            let handle = builder.install_recorder().map_err(|e| e.to_string())?;
            chronicle_frontend::metric_defs::describe();
            chronicle_matching::metric_defs::describe();
            chronicle_history::metric_defs::describe();
            chronicle_storage::metric_defs::describe();
            chronicle_cluster::metric_defs::describe();
            metrics::describe_counter!(RESTARTS, "Starts of the process, per role.");
            Ok(handle)
        })
        .clone()
        .map_err(|e| anyhow::anyhow!("installing the metrics recorder: {e}"))
}

/// What `/health/ready` looks at. The node is ready once its gRPC listeners serve and, on a node
/// with the history role, every shard group it hosts has a leader and has applied the log it
/// found at start.
#[derive(Default)]
pub struct Readiness {
    /// The node has the history role: it is not ready before its shards started.
    needs_history: bool,
    serving: AtomicBool,
    /// Weak: a probe must not keep the engine (and the data directory's lock) alive after the
    /// server stopped.
    history: OnceLock<Weak<HistoryEngine>>,
    /// The node's matching engine, whose backlog gauges are set at scrape time.
    matching: OnceLock<Weak<chronicle_matching::MatchingEngine>>,
}

impl Readiness {
    pub fn new(needs_history: bool) -> Self {
        Self {
            needs_history,
            ..Self::default()
        }
    }

    pub fn set_history(&self, history: &Arc<HistoryEngine>) {
        let _ = self.history.set(Arc::downgrade(history));
    }

    pub fn set_matching(&self, matching: &Arc<chronicle_matching::MatchingEngine>) {
        let _ = self.matching.set(Arc::downgrade(matching));
    }

    pub fn set_serving(&self, serving: bool) {
        self.serving.store(serving, Ordering::SeqCst);
    }

    /// Refreshes the gauges that are read at scrape time.
    fn record_gauges(&self) {
        if let Some(history) = self.history.get().and_then(Weak::upgrade) {
            history.record_shard_gauge();
            history.record_node_gauges();
        }
        if let Some(matching) = self.matching.get().and_then(Weak::upgrade) {
            matching.record_backlog_gauges();
        }
    }

    /// `Ok` when ready, else why not.
    pub fn check(&self) -> Result<(), String> {
        let history = self.history.get();
        if self.needs_history && history.is_none() {
            return Err("history shards are starting".into());
        }
        if !self.serving.load(Ordering::SeqCst) {
            return Err("the gRPC listeners are not serving".into());
        }
        match history.map(Weak::upgrade) {
            Some(Some(history)) => history.readiness(),
            Some(None) => Err("the server stopped".into()),
            None => Ok(()),
        }
    }
}

/// Serves `/metrics`, `/health/live` and `/health/ready` on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    handle: PrometheusHandle,
    readiness: Arc<Readiness>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    // Histograms are drained into their buckets by upkeep; scrapes do it too, this bounds the
    // memory between scrapes.
    let upkeep = {
        let handle = handle.clone();
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(5)) => handle.run_upkeep(),
                    _ = shutdown.changed() => return,
                }
            }
        })
    };
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::debug!(error = %e, "metrics listener accept failed");
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let handle = handle.clone();
        let readiness = readiness.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let response = respond(&request, &handle, &readiness);
                async move { Ok::<_, Infallible>(response) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, "metrics connection ended with an error");
            }
        });
    }
    upkeep.abort();
}

fn respond<B>(
    request: &Request<B>,
    handle: &PrometheusHandle,
    readiness: &Readiness,
) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".into());
    }
    match request.uri().path() {
        "/metrics" => {
            readiness.record_gauges();
            handle.run_upkeep();
            let rendered = sanitize_label_values(&restore_count_suffix(&handle.render()));
            let mut response = text(StatusCode::OK, rendered);
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            response
        }
        "/health/live" => health(StatusCode::OK, "live", None),
        "/health/ready" => match readiness.check() {
            Ok(()) => health(StatusCode::OK, "ready", None),
            Err(reason) => health(StatusCode::SERVICE_UNAVAILABLE, "not ready", Some(&reason)),
        },
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    }
}

/// metrics-exporter-prometheus appends `_count` to a histogram's count series only when the
/// name does not already end with it, so `state_transition_count` (a Temporal histogram) would
/// lose the `state_transition_count_count` series Temporal's dashboards read. Puts it back.
pub fn restore_count_suffix(rendered: &str) -> String {
    let mut histograms_named_count = std::collections::HashSet::new();
    for line in rendered.lines() {
        if let Some(name) = line
            .strip_prefix("# TYPE ")
            .and_then(|rest| rest.strip_suffix(" histogram"))
            .filter(|name| name.ends_with("_count"))
        {
            histograms_named_count.insert(name.to_string());
        }
    }
    if histograms_named_count.is_empty() {
        return rendered.to_string();
    }
    let mut out = String::with_capacity(rendered.len() + 64);
    for line in rendered.lines() {
        let series = line.split(['{', ' ']).next().unwrap_or_default();
        if !line.starts_with('#') && histograms_named_count.contains(series) {
            out.push_str(series);
            out.push_str("_count");
            out.push_str(&line[series.len()..]);
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// Temporal's reporter keeps only ASCII letters, digits and `_` in label values and replaces
/// every other character with `_` (namespace `temporal-system` is exported as
/// `temporal_system`, error type `serviceerror.NotFound` as `serviceerror_NotFound`). Does the
/// same to every label value except the bucket bounds (`le`).
pub fn sanitize_label_values(rendered: &str) -> String {
    let mut out = String::with_capacity(rendered.len());
    for line in rendered.lines() {
        match line.find('{') {
            Some(open) if !line.starts_with('#') => {
                out.push_str(&line[..=open]);
                let rest = &line[open + 1..];
                let consumed = sanitize_labels(rest, &mut out);
                out.push_str(&rest[consumed..]);
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// Copies `key="value",...` up to the closing brace into `out` with sanitized values; returns
/// how many bytes of `labels` it consumed.
fn sanitize_labels(labels: &str, out: &mut String) -> usize {
    let bytes = labels.as_bytes();
    let mut at = 0;
    while at < bytes.len() && bytes[at] != b'}' {
        let Some(eq) = labels[at..].find("=\"") else {
            return at;
        };
        let key = &labels[at..at + eq];
        out.push_str(key);
        out.push_str("=\"");
        let mut value = String::new();
        let mut i = at + eq + 2;
        let mut chars = labels[i..].chars();
        while let Some(c) = chars.next() {
            i += c.len_utf8();
            match c {
                '"' => break,
                '\\' => {
                    if let Some(escaped) = chars.next() {
                        i += escaped.len_utf8();
                        value.push(if escaped == 'n' { '\n' } else { escaped });
                    }
                }
                c => value.push(c),
            }
        }
        if key == "le" {
            out.push_str(&value);
        } else {
            out.extend(value.chars().map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' {
                    c
                } else {
                    '_'
                }
            }));
        }
        out.push('"');
        at = i;
        if bytes.get(at) == Some(&b',') {
            out.push(',');
            at += 1;
        }
    }
    at
}

fn health(status: StatusCode, state: &str, reason: Option<&str>) -> Response<Full<Bytes>> {
    let mut body = serde_json::json!({ "status": state });
    if let Some(reason) = reason {
        body["reason"] = reason.into();
    }
    let mut response = text(status, format!("{body}\n"));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str, readiness: &Readiness) -> (StatusCode, String) {
        let handle = PrometheusBuilder::new().build_recorder().handle();
        let request = Request::get(path).body(()).expect("request");
        let response = respond(&request, &handle, readiness);
        let status = response.status();
        let body = response.into_body();
        let bytes = body_bytes(body);
        (status, String::from_utf8(bytes).expect("utf-8"))
    }

    fn body_bytes(body: Full<Bytes>) -> Vec<u8> {
        use http_body_util::BodyExt;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        runtime
            .block_on(body.collect())
            .expect("body")
            .to_bytes()
            .to_vec()
    }

    #[test]
    fn not_ready_until_history_and_the_listener_are_there() {
        let readiness = Readiness::new(true);
        let (status, body) = get("/health/ready", &readiness);
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("history shards are starting"), "{body}");
        let (status, body) = get("/health/live", &readiness);
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "{\"status\":\"live\"}\n");
        assert_eq!(get("/other", &readiness).0, StatusCode::NOT_FOUND);
    }

    #[test]
    fn label_values_keep_letters_digits_and_underscores_only() {
        let rendered = "# HELP x a-b.c\n\
            x_bucket{namespace=\"temporal-system\",error_type=\"serviceerror.NotFound\",le=\"0.005\"} 1\n\
            y{q=\"a\\\"b\",r=\"ok_1\"} 2.5\n\
            z 3\n";
        assert_eq!(
            sanitize_label_values(rendered),
            "# HELP x a-b.c\n\
            x_bucket{namespace=\"temporal_system\",error_type=\"serviceerror_NotFound\",le=\"0.005\"} 1\n\
            y{q=\"a_b\",r=\"ok_1\"} 2.5\n\
            z 3\n"
        );
    }

    #[test]
    fn a_histogram_named_count_gets_its_count_series_back() {
        let rendered = "# TYPE state_transition_count histogram\n\
            state_transition_count_bucket{le=\"1\"} 2\n\
            state_transition_count_sum{a=\"b\"} 9\n\
            state_transition_count{a=\"b\"} 5\n\
            # TYPE service_requests counter\n\
            service_requests{a=\"b\"} 3\n";
        let fixed = restore_count_suffix(rendered);
        assert!(fixed.contains("state_transition_count_count{a=\"b\"} 5\n"));
        assert!(fixed.contains("state_transition_count_bucket{le=\"1\"} 2\n"));
        assert!(fixed.contains("state_transition_count_sum{a=\"b\"} 9\n"));
        assert!(fixed.contains("service_requests{a=\"b\"} 3\n"));
    }
}
