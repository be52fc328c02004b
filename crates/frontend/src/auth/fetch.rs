//! Fetching a JSON Web Key Set from an `http://` or `https://` URL (an identity provider's
//! `jwks_uri`). One GET per fetch over a fresh connection: key sets are fetched once a refresh
//! interval, so a connection pool would buy nothing. HTTPS verifies the server against the
//! system's trust store (`SSL_CERT_FILE` / `SSL_CERT_DIR` override it, as with OpenSSL).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::rustls;

/// A key set larger than this is refused (real ones are a few kilobytes).
const MAX_JWKS_BYTES: usize = 1 << 20;
/// Connect, TLS handshake, request and body together.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether `source` names a URL rather than a file.
pub fn is_url(source: &str) -> bool {
    let lower = source.to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

/// GETs `url` and returns the body, which must come with status 200.
pub async fn fetch(url: &str) -> Result<String, String> {
    tokio::time::timeout(FETCH_TIMEOUT, fetch_inner(url))
        .await
        .map_err(|_| format!("fetching {url}: no answer within {FETCH_TIMEOUT:?}"))?
        .map_err(|e| format!("fetching {url}: {e}"))
}

async fn fetch_inner(url: &str) -> Result<String, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
    let https = match uri.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("https") => true,
        Some(s) if s.eq_ignore_ascii_case("http") => false,
        _ => return Err("only http:// and https:// URLs are supported".into()),
    };
    let host = uri.host().ok_or("the URL has no host")?.to_string();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    // A bracketed IPv6 literal is connected to without its brackets.
    let bare_host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let tcp = tokio::net::TcpStream::connect((bare_host.as_str(), port))
        .await
        .map_err(|e| format!("connecting to {host}:{port}: {e}"))?;
    tcp.set_nodelay(true).ok();
    let authority = uri
        .authority()
        .map(|a| a.as_str().to_string())
        .unwrap_or(host.clone());
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    if https {
        let name = rustls::pki_types::ServerName::try_from(bare_host)
            .map_err(|e| format!("bad server name {host}: {e}"))?;
        let config = tls_config()?;
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake with {host}:{port}: {e}"))?;
        get(tls, &authority, &path).await
    } else {
        get(tcp, &authority, &path).await
    }
}

async fn get<S>(io: S, authority: &str, path: &str) -> Result<String, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let request = http::Request::get(path)
        .header(http::header::HOST, authority)
        .header(http::header::ACCEPT, "application/json")
        .header(http::header::USER_AGENT, "chronicle")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("building the request: {e}"))?;
    let result = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("request: {e}"))?;
        if response.status() != http::StatusCode::OK {
            return Err(format!("HTTP status {}", response.status()));
        }
        let body = Limited::new(response.into_body(), MAX_JWKS_BYTES)
            .collect()
            .await
            .map_err(|e| format!("reading the body: {e}"))?
            .to_bytes();
        String::from_utf8(body.to_vec()).map_err(|_| "the body is not UTF-8".to_string())
    }
    .await;
    driver.abort();
    result
}

/// One client configuration for the process: the trust store is read once.
fn tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                // A certificate the store cannot use is skipped, as a browser would.
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(format!(
                    "no trusted root certificates found (set SSL_CERT_FILE): {:?}",
                    found.errors
                ));
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("TLS configuration: {e}"))?
                .with_root_certificates(roots)
                .with_no_client_auth();
            Ok(Arc::new(config))
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_told_from_files() {
        assert!(is_url("https://idp.example/.well-known/jwks.json"));
        assert!(is_url("HTTP://127.0.0.1:8080/keys"));
        assert!(!is_url("/etc/chronicle/jwks.json"));
        assert!(!is_url("jwks.json"));
    }

    #[tokio::test]
    async fn refuses_other_schemes_and_unreachable_hosts() {
        let e = fetch("ftp://example/keys").await.unwrap_err();
        assert!(e.contains("only http"), "{e}");
        // Port 1 on loopback: nothing listens there.
        let e = fetch("http://127.0.0.1:1/keys").await.unwrap_err();
        assert!(e.contains("connecting"), "{e}");
    }
}
