//! TLS: the public API's server side, and node-to-node mutual TLS on the internal API.
//!
//! Node-to-node TLS is a property of the process, set once at start ([`set_internode`]): every
//! internal channel (history, matching and admin calls, the Raft transport) is made through
//! [`internal_endpoint`], and every internal listener is served with [`internode_server`]. Both
//! sides present the node certificate and accept only peers whose certificate the cluster's CA
//! signed, so the internal API answers node certificates only (a client of the public API, even
//! one with a valid client certificate of another CA, cannot reach it).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};

/// Certificate files: a PEM certificate (chain) and its PEM private key, plus the CA that signs
/// the peers' certificates.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TlsFiles {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub ca: Option<PathBuf>,
    /// The name to verify in peers' certificates instead of the host dialled (one certificate
    /// shared by all nodes under one name, as Temporal's `serverName`).
    pub server_name: Option<String>,
}

impl TlsFiles {
    /// No file given: plaintext.
    pub fn is_empty(&self) -> bool {
        self.cert.is_none() && self.key.is_none() && self.ca.is_none()
    }
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("reading the {what} {}: {e}", path.display()))
}

/// Node-to-node TLS, loaded.
#[derive(Clone, Debug)]
pub struct InternodeTls {
    identity: Identity,
    ca: Certificate,
    server_name: Option<String>,
}

impl InternodeTls {
    /// Loads `files`; all three of cert, key and CA are needed (mutual TLS).
    pub fn load(files: &TlsFiles) -> Result<Option<Self>, String> {
        if files.is_empty() {
            return Ok(None);
        }
        let (Some(cert), Some(key), Some(ca)) = (&files.cert, &files.key, &files.ca) else {
            return Err(
                "node-to-node TLS needs a certificate, its key and the cluster's CA \
                        (--internode-tls-cert, --internode-tls-key, --internode-tls-ca)"
                    .into(),
            );
        };
        Ok(Some(Self {
            identity: Identity::from_pem(read(cert, "certificate")?, read(key, "key")?),
            ca: Certificate::from_pem(read(ca, "CA certificate")?),
            server_name: files.server_name.clone(),
        }))
    }
}

static INTERNODE: OnceLock<Option<InternodeTls>> = OnceLock::new();

/// Sets this process' node-to-node TLS (`None`: plaintext). Once per process; a second call
/// with another setting is refused (in-process test clusters all run plaintext).
pub fn set_internode(tls: Option<InternodeTls>) -> Result<(), String> {
    let wanted = tls.is_some();
    let set = INTERNODE.get_or_init(|| tls);
    if set.is_some() != wanted {
        return Err("node-to-node TLS was already set differently in this process".into());
    }
    Ok(())
}

fn internode() -> Option<&'static InternodeTls> {
    INTERNODE.get().and_then(Option::as_ref)
}

/// Whether internal channels use TLS.
pub fn internode_enabled() -> bool {
    internode().is_some()
}

/// An endpoint for the internal API at `addr` (`host:port`, or a URL), over mutual TLS when
/// the process has node-to-node TLS, with the keepalive settings every internal channel uses.
pub fn internal_endpoint(addr: &str, connect_timeout: Duration) -> Result<Endpoint, String> {
    let host_port = addr
        .strip_prefix("http://")
        .or_else(|| addr.strip_prefix("https://"))
        .unwrap_or(addr);
    let tls = internode();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{host_port}"))
        .map_err(|e| format!("bad internal address {addr:?}: {e}"))?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true);
    if let Some(tls) = tls {
        let mut config = ClientTlsConfig::new()
            .ca_certificate(tls.ca.clone())
            .identity(tls.identity.clone());
        if let Some(name) = &tls.server_name {
            config = config.domain_name(name.clone());
        }
        endpoint = endpoint
            .tls_config(config)
            .map_err(|e| format!("TLS for {addr}: {e}"))?;
    }
    Ok(endpoint)
}

/// The internal listener's TLS: the node certificate, and client certificates required and
/// checked against the cluster's CA. `None` without node-to-node TLS.
pub fn internode_server() -> Option<ServerTlsConfig> {
    internode().map(|tls| {
        ServerTlsConfig::new()
            .identity(tls.identity.clone())
            .client_ca_root(tls.ca.clone())
    })
}

/// The public API's TLS from `files`: the server certificate, and with a CA, client
/// certificates required and checked against it (Temporal's `requireClientAuth`).
pub fn public_server(files: &TlsFiles) -> Result<Option<ServerTlsConfig>, String> {
    if files.is_empty() {
        return Ok(None);
    }
    let (Some(cert), Some(key)) = (&files.cert, &files.key) else {
        return Err("TLS on the public API needs --tls-cert and --tls-key".into());
    };
    let mut config = ServerTlsConfig::new().identity(Identity::from_pem(
        read(cert, "certificate")?,
        read(key, "key")?,
    ));
    if let Some(ca) = &files.ca {
        config = config.client_ca_root(Certificate::from_pem(read(ca, "client CA certificate")?));
    }
    Ok(Some(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_files_is_plaintext_and_partial_settings_are_refused() {
        assert!(InternodeTls::load(&TlsFiles::default()).unwrap().is_none());
        let partial = TlsFiles {
            cert: Some("node.pem".into()),
            ..Default::default()
        };
        let err = InternodeTls::load(&partial).unwrap_err();
        assert!(err.contains("--internode-tls-ca"), "{err}");
        let err = public_server(&TlsFiles {
            ca: Some("ca.pem".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.contains("--tls-cert"), "{err}");
        let missing = TlsFiles {
            cert: Some("/nonexistent/node.pem".into()),
            key: Some("/nonexistent/node.key".into()),
            ca: Some("/nonexistent/ca.pem".into()),
            server_name: None,
        };
        let err = InternodeTls::load(&missing).unwrap_err();
        assert!(err.contains("/nonexistent/node.pem"), "{err}");
    }

    #[test]
    fn plaintext_endpoints_keep_the_address() {
        let endpoint = internal_endpoint("127.0.0.1:7234", Duration::from_secs(1)).unwrap();
        assert_eq!(endpoint.uri().to_string(), "http://127.0.0.1:7234/");
        let endpoint = internal_endpoint("http://10.0.0.1:7234", Duration::from_secs(1)).unwrap();
        assert_eq!(endpoint.uri().to_string(), "http://10.0.0.1:7234/");
    }
}
