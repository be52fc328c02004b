//! JWT authorization (`--jwks`), rate limits and queue bounds on a real server. Keys are made
//! fresh for each test with the `openssl` command line tool; tokens are signed here.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chronicle_frontend::{AuthConfig, RateLimitConfig};
use chronicle_proto::temporal::api::enums::v1::{ResourceExhaustedCause, ResourceExhaustedScope};
use chronicle_proto::temporal::api::errordetails::v1::ResourceExhaustedFailure;
use chronicle_proto::temporal::api::operatorservice::v1 as os;
use chronicle_proto::temporal::api::operatorservice::v1::operator_service_client::OperatorServiceClient;
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use chronicle_server::{RunningServer, ServerConfig};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use prost::Message;
use tonic::Code;

use crate::common::{config_for, queue, raw_client, start_request, unique};

fn openssl(args: &[&str]) -> Vec<u8> {
    let out = std::process::Command::new("openssl")
        .args(args)
        .output()
        .expect("the openssl tool runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn b64url(bytes: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

/// A signing key and its public JWK.
struct Key {
    kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    jwk: serde_json::Value,
}

fn ec_key(dir: &Path, kid: &str) -> Key {
    let path = dir.join(format!("{kid}.pem"));
    let p = path.to_str().unwrap();
    openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        p,
    ]);
    let spki = openssl(&["pkey", "-in", p, "-pubout", "-outform", "DER"]);
    // The SubjectPublicKeyInfo ends with the uncompressed point 04 || x || y.
    let point = &spki[spki.len() - 65..];
    assert_eq!(point[0], 4);
    Key {
        kid: kid.into(),
        alg: Algorithm::ES256,
        encoding: EncodingKey::from_ec_pem(&std::fs::read(&path).unwrap()).expect("EC key"),
        jwk: serde_json::json!({
            "kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
            "x": b64url(&point[1..33]), "y": b64url(&point[33..]),
        }),
    }
}

fn rsa_key(dir: &Path, kid: &str) -> Key {
    let path = dir.join(format!("{kid}.pem"));
    let p = path.to_str().unwrap();
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        p,
    ]);
    let modulus = String::from_utf8(openssl(&["rsa", "-in", p, "-noout", "-modulus"])).unwrap();
    let modulus = modulus.trim().strip_prefix("Modulus=").expect("modulus");
    Key {
        kid: kid.into(),
        alg: Algorithm::RS256,
        encoding: EncodingKey::from_rsa_pem(&std::fs::read(&path).unwrap()).expect("RSA key"),
        jwk: serde_json::json!({
            "kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
            "n": b64url(&hex(modulus)), "e": "AQAB",
        }),
    }
}

fn write_jwks(path: &Path, keys: &[&Key]) {
    let doc = serde_json::json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() });
    // Written whole then renamed, as a key rotation would.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, doc.to_string()).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

const AUDIENCE: &str = "chronicle-test";

fn token_with(key: &Key, claims: serde_json::Value) -> String {
    let mut header = Header::new(key.alg);
    header.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&header, &claims, &key.encoding).expect("signs")
}

fn token(key: &Key, permissions: &[&str]) -> String {
    token_with(
        key,
        serde_json::json!({
            "sub": "test-user", "aud": AUDIENCE, "exp": now() + 600, "iat": now(),
            "permissions": permissions,
        }),
    )
}

fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii"),
    );
    request
}

fn describe(namespace: &str) -> ws::DescribeNamespaceRequest {
    ws::DescribeNamespaceRequest {
        namespace: namespace.into(),
        ..Default::default()
    }
}

struct AuthServer {
    server: RunningServer,
    jwks: PathBuf,
    dir: tempfile::TempDir,
    ec: Key,
    rsa: Key,
}

async fn start_auth_server(tweak: impl FnOnce(&mut ServerConfig)) -> AuthServer {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let ec = ec_key(&keys, "ec-1");
    let rsa = rsa_key(&keys, "rsa-1");
    let jwks = keys.join("jwks.json");
    write_jwks(&jwks, &[&ec, &rsa]);
    let mut config = config_for(&dir.path().join("data"));
    config.max_poll_wait = Duration::from_secs(2);
    let mut auth = AuthConfig::new(jwks.clone());
    auth.audience = Some(AUDIENCE.into());
    auth.refresh_interval = Duration::from_millis(200);
    config.admission.auth = Some(auth);
    config.admission.rate_limits = RateLimitConfig::unlimited();
    tweak(&mut config);
    let server = RunningServer::start(config).await.expect("server starts");
    AuthServer {
        server,
        jwks,
        dir,
        ec,
        rsa,
    }
}

#[tokio::test]
async fn auth_refuses_missing_expired_forged_and_misaddressed_tokens() {
    let s = start_auth_server(|_| {}).await;
    let mut raw = raw_client(&s.server.url()).await;

    let code = |r: Result<tonic::Response<ws::DescribeNamespaceResponse>, tonic::Status>| {
        r.map(|_| Code::Ok).unwrap_or_else(|e| e.code())
    };
    // No token at all.
    assert_eq!(
        code(raw.describe_namespace(describe("default")).await),
        Code::Unauthenticated
    );
    // Not a JWT.
    assert_eq!(
        code(
            raw.describe_namespace(with_token(describe("default"), "not-a-jwt"))
                .await
        ),
        Code::Unauthenticated
    );
    // Expired.
    let expired = token_with(
        &s.ec,
        serde_json::json!({"sub": "u", "aud": AUDIENCE, "exp": now() - 60, "permissions": ["default:admin"]}),
    );
    assert_eq!(
        code(
            raw.describe_namespace(with_token(describe("default"), &expired))
                .await
        ),
        Code::Unauthenticated
    );
    // Not valid yet.
    let early = token_with(
        &s.ec,
        serde_json::json!({"sub": "u", "aud": AUDIENCE, "exp": now() + 600, "nbf": now() + 300, "permissions": ["default:admin"]}),
    );
    assert_eq!(
        code(
            raw.describe_namespace(with_token(describe("default"), &early))
                .await
        ),
        Code::Unauthenticated
    );
    // Another audience.
    let elsewhere = token_with(
        &s.ec,
        serde_json::json!({"sub": "u", "aud": "someone-else", "exp": now() + 600, "permissions": ["default:admin"]}),
    );
    assert_eq!(
        code(
            raw.describe_namespace(with_token(describe("default"), &elsewhere))
                .await
        ),
        Code::Unauthenticated
    );
    // Signed by a key the server does not have, under a kid it does have.
    let forger = ec_key(&s.dir.path().join("keys"), "forger");
    let forged = token(
        &Key {
            kid: s.ec.kid.clone(),
            ..forger
        },
        &["default:admin"],
    );
    assert_eq!(
        code(
            raw.describe_namespace(with_token(describe("default"), &forged))
                .await
        ),
        Code::Unauthenticated
    );
    // An RS256 token with the RSA key and an ES256 one with the EC key both pass.
    for key in [&s.ec, &s.rsa] {
        let good = token(key, &["default:read"]);
        assert_eq!(
            code(
                raw.describe_namespace(with_token(describe("default"), &good))
                    .await
            ),
            Code::Ok,
            "{:?}",
            key.alg
        );
    }

    // Health and GetSystemInfo stay open without a token.
    let channel = tonic::transport::Endpoint::from_shared(s.server.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health needs no token");
    raw.get_system_info(ws::GetSystemInfoRequest {})
        .await
        .expect("GetSystemInfo needs no token");
    s.server.stop().await.unwrap();
}

#[tokio::test]
async fn auth_enforces_temporal_permissions() {
    let s = start_auth_server(|_| {}).await;
    let url = s.server.url();
    let mut raw = raw_client(&url).await;
    let reader = token(&s.ec, &["default:read"]);
    let worker = token(&s.ec, &["default:worker"]);
    let writer = token(&s.rsa, &["default:write"]);
    let admin = token(&s.ec, &["default:admin"]);
    let system = token(&s.ec, &["temporal-system:admin"]);

    // A reader reads but cannot start, and the refused start leaves nothing behind.
    raw.describe_namespace(with_token(describe("default"), &reader))
        .await
        .expect("reader reads");
    let id = unique("auth-wf");
    let refused = raw
        .start_workflow_execution(with_token(start_request(&id, "Echo", "auth-q"), &reader))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(!refused.message().contains("default"), "{refused:?}");
    let missing = raw
        .describe_workflow_execution(with_token(
            ws::DescribeWorkflowExecutionRequest {
                namespace: "default".into(),
                execution: crate::common::execution(&id, ""),
            },
            &admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    // A reader of default reads nothing elsewhere.
    assert_eq!(
        raw.describe_namespace(with_token(describe("other"), &reader))
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );

    // A worker polls (the poll times out empty after max_poll_wait) but cannot start.
    raw.poll_activity_task_queue(with_token(
        ws::PollActivityTaskQueueRequest {
            namespace: "default".into(),
            task_queue: queue("auth-q"),
            identity: "auth-worker".into(),
            ..Default::default()
        },
        &worker,
    ))
    .await
    .expect("a worker polls");
    assert_eq!(
        raw.start_workflow_execution(with_token(start_request(&id, "Echo", "auth-q"), &worker))
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );

    // A writer starts (RS256), and cannot register a namespace.
    raw.start_workflow_execution(with_token(start_request(&id, "Echo", "auth-q"), &writer))
        .await
        .expect("a writer starts");
    let register = |name: &str| ws::RegisterNamespaceRequest {
        namespace: name.into(),
        ..Default::default()
    };
    assert_eq!(
        raw.register_namespace(with_token(register("default"), &writer))
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    // An admin of a namespace administers it (register answers AlreadyExists: past the gate).
    assert_eq!(
        raw.register_namespace(with_token(register("default"), &admin))
            .await
            .unwrap_err()
            .code(),
        Code::AlreadyExists
    );
    // An admin of `team` may register `team`, not `elsewhere`.
    let team_admin = token(&s.ec, &["auth-team:admin"]);
    raw.register_namespace(with_token(register("auth-team"), &team_admin))
        .await
        .expect("the namespace's admin registers it");
    assert_eq!(
        raw.register_namespace(with_token(register("elsewhere"), &team_admin))
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    // Cluster-scoped methods need the system role.
    assert_eq!(
        raw.list_namespaces(with_token(ws::ListNamespacesRequest::default(), &admin))
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    raw.list_namespaces(with_token(ws::ListNamespacesRequest::default(), &system))
        .await
        .expect("the system admin lists namespaces");
    // The operator service is gated too.
    let channel = tonic::transport::Endpoint::from_shared(url)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut operator = OperatorServiceClient::new(channel);
    assert_eq!(
        operator
            .list_search_attributes(os::ListSearchAttributesRequest {
                namespace: "default".into(),
            })
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
    operator
        .list_search_attributes(with_token(
            os::ListSearchAttributesRequest {
                namespace: "default".into(),
            },
            &reader,
        ))
        .await
        .expect("a reader lists search attributes");
    s.server.stop().await.unwrap();
}

#[tokio::test]
async fn auth_picks_up_rotated_keys() {
    let s = start_auth_server(|_| {}).await;
    let mut raw = raw_client(&s.server.url()).await;
    let old = token(&s.ec, &["default:read"]);
    raw.describe_namespace(with_token(describe("default"), &old))
        .await
        .expect("the old key works");

    // Rotate: a new key in, the old EC key out.
    let new_key = ec_key(&s.dir.path().join("keys"), "ec-2");
    write_jwks(&s.jwks, &[&new_key, &s.rsa]);
    let new = token(&new_key, &["default:read"]);
    // A token naming an unknown kid makes the server re-read the key set at once.
    raw.describe_namespace(with_token(describe("default"), &new))
        .await
        .expect("the new key works without a restart");
    // The removed key stops working (the file is re-checked every 200 ms here).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match raw
            .describe_namespace(with_token(describe("default"), &old))
            .await
        {
            Err(e) if e.code() == Code::Unauthenticated => break,
            other => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the removed key still works: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    s.server.stop().await.unwrap();
}

/// A minimal HTTP server answering every GET with the current JWKS document (an identity
/// provider's `jwks_uri`); counts the fetches.
struct JwksEndpoint {
    url: String,
    doc: std::sync::Arc<std::sync::Mutex<String>>,
    fetches: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksEndpoint {
    async fn serve(keys: &[&Key]) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve_on(listener, keys)
    }

    fn serve_on(listener: tokio::net::TcpListener, keys: &[&Key]) -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let url = format!(
            "http://{}/.well-known/jwks.json",
            listener.local_addr().unwrap()
        );
        let doc = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let fetches = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (served, counted) = (doc.clone(), fetches.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                let (served, counted) = (served.clone(), counted.clone());
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let body = served.lock().unwrap().clone();
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = conn.write_all(response.as_bytes()).await;
                    let _ = conn.shutdown().await;
                });
            }
        });
        let endpoint = Self {
            url,
            doc,
            fetches,
            task,
        };
        endpoint.publish(keys);
        endpoint
    }

    fn publish(&self, keys: &[&Key]) {
        let doc =
            serde_json::json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() });
        *self.doc.lock().unwrap() = doc.to_string();
    }

    fn fetches(&self) -> usize {
        self.fetches.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[tokio::test]
async fn auth_fetches_the_key_set_from_a_url_and_follows_its_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let ec = ec_key(dir.path(), "url-ec-1");
    let rsa = rsa_key(dir.path(), "url-rsa-1");
    let endpoint = JwksEndpoint::serve(&[&ec]).await;
    let mut config = config_for(&dir.path().join("data"));
    let mut auth = AuthConfig::new(chronicle_frontend::JwksSource::parse(&endpoint.url));
    auth.audience = Some(AUDIENCE.into());
    // Long enough that only a token naming an unknown key makes it fetch again in this test.
    auth.refresh_interval = Duration::from_secs(3600);
    config.admission.auth = Some(auth);
    config.admission.rate_limits = RateLimitConfig::unlimited();
    let server = RunningServer::start(config).await.expect("server starts");
    assert_eq!(endpoint.fetches(), 1, "fetched once at start");
    let mut raw = raw_client(&server.url()).await;

    raw.describe_namespace(with_token(
        describe("default"),
        &token(&ec, &["default:read"]),
    ))
    .await
    .expect("a token signed by the published key works");
    let err = raw
        .describe_namespace(with_token(
            describe("default"),
            &token(&rsa, &["default:read"]),
        ))
        .await
        .expect_err("a key the provider has not published");
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(endpoint.fetches(), 2, "the unknown kid made it fetch again");

    // The provider rotates: the RSA key in, the EC key out. A token naming the new key is
    // accepted once the forced-fetch pause (10 s for a URL) has passed.
    endpoint.publish(&[&rsa]);
    let new = token(&rsa, &["default:read"]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match raw
            .describe_namespace(with_token(describe("default"), &new))
            .await
        {
            Ok(_) => break,
            Err(e) => {
                assert_eq!(e.code(), Code::Unauthenticated);
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the rotated key never became valid"
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    // The retired key stops working with the fetch that brought the new one.
    let err = raw
        .describe_namespace(with_token(
            describe("default"),
            &token(&ec, &["default:read"]),
        ))
        .await
        .expect_err("the retired key");
    assert_eq!(err.code(), Code::Unauthenticated);
    server.stop().await.unwrap();
    endpoint.task.abort();
}

#[tokio::test]
async fn auth_from_an_unreachable_url_refuses_every_token_until_it_is_fetched() {
    let dir = tempfile::tempdir().unwrap();
    let ec = ec_key(dir.path(), "late-ec-1");
    // Reserve a port, then serve on it only after the server started.
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    let url = format!("http://{addr}/jwks.json");
    let mut config = config_for(&dir.path().join("data"));
    let mut auth = AuthConfig::new(chronicle_frontend::JwksSource::parse(&url));
    auth.refresh_interval = Duration::from_millis(300);
    config.admission.auth = Some(auth);
    config.admission.rate_limits = RateLimitConfig::unlimited();
    let server = RunningServer::start(config)
        .await
        .expect("starts without its identity provider");
    let mut raw = raw_client(&server.url()).await;
    let good = token(&ec, &["default:read"]);
    let err = raw
        .describe_namespace(with_token(describe("default"), &good))
        .await
        .expect_err("no keys yet: deny");
    assert_eq!(err.code(), Code::Unauthenticated);

    // The provider comes up on that address; the server's retry picks the keys up.
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let endpoint = JwksEndpoint::serve_on(listener, &[&ec]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match raw
            .describe_namespace(with_token(describe("default"), &good))
            .await
        {
            Ok(_) => break,
            Err(e) => {
                assert_eq!(e.code(), Code::Unauthenticated);
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the keys were never fetched"
                );
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    }
    server.stop().await.unwrap();
    endpoint.task.abort();
}

fn resource_exhausted(status: &tonic::Status) -> ResourceExhaustedFailure {
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let details = chronicle_proto::google::rpc::Status::decode(status.details())
        .expect("grpc-status-details-bin");
    let any = details.details.first().expect("one detail");
    assert!(
        any.type_url
            .ends_with("temporal.api.errordetails.v1.ResourceExhaustedFailure"),
        "{}",
        any.type_url
    );
    ResourceExhaustedFailure::decode(any.value.as_slice()).expect("detail decodes")
}

async fn start_limited(
    tweak: impl FnOnce(&mut ServerConfig),
) -> (RunningServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_for(dir.path());
    config.max_poll_wait = Duration::from_secs(2);
    config.admission.rate_limits = RateLimitConfig::unlimited();
    tweak(&mut config);
    (
        RunningServer::start_with_metrics(config)
            .await
            .expect("starts"),
        dir,
    )
}

/// The value of an unlabelled counter on the server's metrics port (0 when absent).
async fn counter(server: &RunningServer, name: &str) -> f64 {
    let (_, body) =
        crate::metrics::get(server.metrics_addr.expect("metrics port"), "/metrics").await;
    body.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn rate_limits_answer_resource_exhausted_with_temporal_details() {
    // Namespace limit: 2 requests a second, burst 2.
    let (server, _dir) = start_limited(|c| {
        c.admission.rate_limits.namespace_rps = 2.0;
        c.admission.rate_limits.burst_ratio = 1.0;
    })
    .await;
    let mut raw = raw_client(&server.url()).await;
    let mut refused = None;
    for _ in 0..10 {
        if let Err(e) = raw.describe_namespace(describe("default")).await {
            refused = Some(e);
            break;
        }
    }
    let failure = resource_exhausted(&refused.expect("the namespace limit refuses"));
    assert_eq!(failure.cause, ResourceExhaustedCause::RpsLimit as i32);
    assert_eq!(failure.scope, ResourceExhaustedScope::Namespace as i32);
    // GetSystemInfo is never limited; another namespace has its own bucket.
    raw.get_system_info(ws::GetSystemInfoRequest {})
        .await
        .expect("open");
    let other = raw.describe_namespace(describe("no-such-namespace")).await;
    assert_eq!(other.unwrap_err().code(), Code::NotFound);
    // The bucket refills.
    tokio::time::sleep(Duration::from_millis(600)).await;
    raw.describe_namespace(describe("default"))
        .await
        .expect("refilled");
    server.stop().await.unwrap();

    // Instance limit: scope SYSTEM, whatever the namespace.
    let (server, _dir) = start_limited(|c| {
        c.admission.rate_limits.frontend_rps = 2.0;
        c.admission.rate_limits.burst_ratio = 1.0;
    })
    .await;
    let mut raw = raw_client(&server.url()).await;
    let mut refused = None;
    for i in 0..10 {
        if let Err(e) = raw.describe_namespace(describe(&format!("ns-{i}"))).await
            && e.code() == Code::ResourceExhausted
        {
            refused = Some(e);
            break;
        }
    }
    let failure = resource_exhausted(&refused.expect("the instance limit refuses"));
    assert_eq!(failure.cause, ResourceExhaustedCause::RpsLimit as i32);
    assert_eq!(failure.scope, ResourceExhaustedScope::System as i32);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn long_polls_are_limited_by_concurrency_not_rate() {
    let (server, _dir) = start_limited(|c| {
        c.admission.rate_limits.namespace_concurrent = 1;
        // One request a second: polls must not be charged to it.
        c.admission.rate_limits.namespace_rps = 1.0;
        c.admission.rate_limits.burst_ratio = 1.0;
    })
    .await;
    let poll = |q: &str| ws::PollActivityTaskQueueRequest {
        namespace: "default".into(),
        task_queue: queue(q),
        identity: "limit-test".into(),
        ..Default::default()
    };
    let mut first = raw_client(&server.url()).await;
    let waiting = tokio::spawn({
        let request = poll("limit-q");
        async move { first.poll_activity_task_queue(request).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut raw = raw_client(&server.url()).await;
    let refused = raw
        .poll_activity_task_queue(poll("limit-q"))
        .await
        .unwrap_err();
    let failure = resource_exhausted(&refused);
    assert_eq!(
        failure.cause,
        ResourceExhaustedCause::ConcurrentLimit as i32
    );
    assert_eq!(failure.scope, ResourceExhaustedScope::Namespace as i32);
    waiting.await.unwrap().expect("the first poll ends empty");
    // Its place is free again; polls took no rate tokens, so two plain calls still pass.
    raw.poll_activity_task_queue(poll("limit-q"))
        .await
        .expect("polls again");
    raw.describe_namespace(describe("default"))
        .await
        .expect("rate token left");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn matching_bounds_pollers_and_backlog() {
    let (server, _dir) = start_limited(|c| {
        c.admission.matching_limits.max_pollers_per_queue = 1;
        c.admission.matching_limits.max_backlog_per_queue = 1;
    })
    .await;
    // Pollers: one waits, the second on the same queue is refused; another queue is free.
    let poll = |q: &str| ws::PollWorkflowTaskQueueRequest {
        namespace: "default".into(),
        task_queue: queue(q),
        identity: "bound-test".into(),
        ..Default::default()
    };
    let mut first = raw_client(&server.url()).await;
    let waiting = tokio::spawn({
        let request = poll("bound-q");
        async move { first.poll_workflow_task_queue(request).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut raw = raw_client(&server.url()).await;
    let refused = raw
        .poll_workflow_task_queue(poll("bound-q"))
        .await
        .unwrap_err();
    let failure = resource_exhausted(&refused);
    assert_eq!(
        failure.cause,
        ResourceExhaustedCause::ConcurrentLimit as i32
    );
    waiting.await.unwrap().expect("the first poll ends empty");

    // Backlog of one: three workflows on a queue nobody polls. Two tasks are refused by
    // matching and stay in history's outbox, which offers them again: all three arrive.
    let q = unique("backlog-q");
    for i in 0..3 {
        raw.start_workflow_execution(start_request(&format!("{q}-{i}"), "Echo", &q))
            .await
            .expect("starts");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut seen = std::collections::BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while seen.len() < 3 && tokio::time::Instant::now() < deadline {
        let task = raw
            .poll_workflow_task_queue(poll(&q))
            .await
            .expect("poll")
            .into_inner();
        if let Some(execution) = task.workflow_execution {
            seen.insert(execution.workflow_id);
        }
    }
    assert_eq!(
        seen.len(),
        3,
        "every task arrives despite the bound: {seen:?}"
    );
    assert!(
        counter(&server, "chronicle_task_queue_backlog_refused").await >= 1.0,
        "the backlog bound refused tasks"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn full_proposal_queue_refuses_writes() {
    let (server, _dir) = start_limited(|c| {
        c.admission.max_pending_proposals = 1;
        c.num_shards = Some(1);
    })
    .await;
    let url = server.url();
    let mut overloaded = None;
    let mut started = 0;
    for _round in 0..20 {
        let starts = (0..48).map(|i| {
            let url = url.clone();
            async move {
                let mut raw = raw_client(&url).await;
                raw.start_workflow_execution(start_request(
                    &unique(&format!("burst-{i}")),
                    "Echo",
                    "burst-q",
                ))
                .await
            }
        });
        for result in futures::future::join_all(starts).await {
            match result {
                Ok(_) => started += 1,
                Err(e) => overloaded = Some(e),
            }
        }
        if overloaded.is_some() {
            break;
        }
    }
    let failure = resource_exhausted(&overloaded.expect("a burst overflows a queue of one"));
    assert_eq!(
        failure.cause,
        ResourceExhaustedCause::SystemOverloaded as i32
    );
    assert_eq!(failure.scope, ResourceExhaustedScope::System as i32);
    assert!(started > 0, "writes still go through");
    assert!(counter(&server, "chronicle_history_shard_overloaded").await >= 1.0);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_query_bound_refuses_the_next_query() {
    let (server, _dir) = start_limited(|c| {
        c.admission.matching_limits.max_pending_queries = 1;
    })
    .await;
    let mut raw = raw_client(&server.url()).await;
    let q = unique("query-bound-q");
    let id = unique("query-bound");
    raw.start_workflow_execution(start_request(&id, "Q", &q))
        .await
        .expect("start");
    // Complete the first workflow task: later queries go to matching as query tasks.
    let task = raw
        .poll_workflow_task_queue(ws::PollWorkflowTaskQueueRequest {
            namespace: "default".into(),
            task_queue: queue(&q),
            identity: "query-bound".into(),
            ..Default::default()
        })
        .await
        .expect("poll")
        .into_inner();
    assert!(!task.task_token.is_empty(), "the first workflow task");
    raw.respond_workflow_task_completed(ws::RespondWorkflowTaskCompletedRequest {
        namespace: "default".into(),
        task_token: task.task_token,
        ..Default::default()
    })
    .await
    .expect("complete");
    let query = || ws::QueryWorkflowRequest {
        namespace: "default".into(),
        execution: crate::common::execution(&id, ""),
        query: Some(chronicle_proto::temporal::api::query::v1::WorkflowQuery {
            query_type: "state".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    // Nobody polls: the first query waits in matching for a worker...
    let waiting = tokio::spawn({
        let mut raw = raw.clone();
        let request = query();
        async move { raw.query_workflow(request).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiting.is_finished(), "the first query waits for a worker");
    // ...and the second finds the buffer full.
    let refused = raw.query_workflow(query()).await.unwrap_err();
    let failure = resource_exhausted(&refused);
    assert_eq!(
        failure.cause,
        ResourceExhaustedCause::ConcurrentLimit as i32
    );
    waiting.abort();
    server.stop().await.unwrap();
}
