//! gRPC connections to the server under test (plain or TLS), shared round-robin by the driver
//! and the workers.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chronicle_proto::temporal::api::workflowservice::v1::workflow_service_client::WorkflowServiceClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::BenchError;

/// Histories of long workflows can be large; the server decides, not this client.
const MAX_MESSAGE_BYTES: usize = 128 * 1024 * 1024;

/// TLS settings, as the `temporal` CLI takes them.
#[derive(Clone, Debug, Default)]
pub struct TlsOptions {
    /// CA bundle that signs the server certificate; the system roots when absent.
    pub ca_path: Option<PathBuf>,
    /// Client certificate and key for mutual TLS.
    pub cert_path: Option<PathBuf>,
    pub key_path: Option<PathBuf>,
    /// Name to verify in the server certificate; the address's host when absent.
    pub server_name: Option<String>,
}

/// Where and how to reach the server.
#[derive(Clone, Debug)]
pub struct ServerTarget {
    /// `host:port`, or a URL (`http://host:port`).
    pub address: String,
    pub namespace: String,
    pub tls: Option<TlsOptions>,
    /// HTTP/2 connections to open; requests are spread over them.
    pub connections: usize,
}

impl ServerTarget {
    pub fn new(address: impl Into<String>) -> Self {
        Self {
            address: address.into(),
            namespace: "default".into(),
            tls: None,
            connections: 2,
        }
    }

    fn url(&self) -> String {
        if self.address.contains("://") {
            self.address.clone()
        } else if self.tls.is_some() {
            format!("https://{}", self.address)
        } else {
            format!("http://{}", self.address)
        }
    }
}

/// A pool of clients over separate connections.
pub struct Clients {
    clients: Vec<WorkflowServiceClient<Channel>>,
    next: AtomicUsize,
}

impl Clients {
    pub async fn connect(target: &ServerTarget) -> Result<Self, BenchError> {
        let url = target.url();
        let mut endpoint = Endpoint::from_shared(url.clone())
            .map_err(|e| BenchError::Config(format!("bad address {:?}: {e}", target.address)))?
            .connect_timeout(Duration::from_secs(10))
            .tcp_nodelay(true);
        if let Some(tls) = &target.tls {
            endpoint = endpoint
                .tls_config(tls_config(tls)?)
                .map_err(|e| BenchError::Config(format!("TLS settings: {e}")))?;
        }
        let mut clients = Vec::new();
        for _ in 0..target.connections.max(1) {
            let channel = endpoint.connect().await.map_err(|e| BenchError::Connect {
                url: url.clone(),
                reason: error_chain(&e),
            })?;
            clients.push(
                WorkflowServiceClient::new(channel)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES),
            );
        }
        Ok(Self {
            clients,
            next: AtomicUsize::new(0),
        })
    }

    /// A client on the next connection (cheap: clients share their connection).
    pub fn get(&self) -> WorkflowServiceClient<Channel> {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.clients.len();
        self.clients[index].clone()
    }
}

fn tls_config(options: &TlsOptions) -> Result<ClientTlsConfig, BenchError> {
    let read = |path: &PathBuf| {
        std::fs::read(path)
            .map_err(|e| BenchError::Config(format!("reading {}: {e}", path.display())))
    };
    let mut config = ClientTlsConfig::new();
    config = match &options.ca_path {
        Some(path) => config.ca_certificate(Certificate::from_pem(read(path)?)),
        None => config.with_native_roots(),
    };
    match (&options.cert_path, &options.key_path) {
        (Some(cert), Some(key)) => {
            config = config.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        (None, None) => {}
        _ => {
            return Err(BenchError::Config(
                "--tls-cert-path and --tls-key-path go together".into(),
            ));
        }
    }
    if let Some(name) = &options.server_name {
        config = config.domain_name(name.clone());
    }
    Ok(config)
}

/// An error with its causes, which for transport errors carry the useful part.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
