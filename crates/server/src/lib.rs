//! The `chronicle` binary's library: wiring the roles of a node and serving them.
//!
//! [`run`] takes bound listeners, a configuration and a shutdown future, so tests start real
//! servers on port 0 in-process and the binary is a thin CLI around it.

pub mod cli;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use chronicle_cluster::{HistoryService, MatchingService};
use chronicle_frontend::{
    FrontendContext, NamespaceCache, OperatorHandler, WorkflowHandler, default_namespace_record,
};
use chronicle_history::{HistoryConfig, HistoryEngine};
use chronicle_matching::MatchingEngine;
use chronicle_proto::temporal::api::operatorservice::v1::operator_service_server::OperatorServiceServer;
use chronicle_proto::temporal::api::workflowservice::v1::workflow_service_server::WorkflowServiceServer;
use chronicle_storage::{Db, DbOptions};
use tonic::codec::CompressionEncoding;

/// The server version reported to SDKs (Temporal's API level Chronicle implements).
pub const SERVER_VERSION: &str = "1.29.0";

/// Shards of a new single-node data directory. One, as Temporal's dev server has: on one node
/// more groups buy apply parallelism only, and each costs its own log appends and fsyncs (on 2
/// cores, 4 groups ran the same load at 0.6x the throughput and 1.7x the CPU per workflow).
pub const DEFAULT_SHARDS: u32 = 1;

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    /// History shards of a new data directory (`None`: [`DEFAULT_SHARDS`]). An existing data
    /// directory keeps the count it was created with; asking for another is an error.
    pub num_shards: Option<u32>,
    /// Namespaces created at start if missing (`default` is always added).
    pub namespaces: Vec<String>,
    /// Custom search attributes (name, IndexedValueType).
    pub search_attributes: Vec<(String, i32)>,
    /// Longest long poll of a task queue.
    pub max_poll_wait: Duration,
    /// fsync every Raft log append (the durability guarantee). Only tests of non-durable
    /// behaviour turn it off.
    pub sync_writes: bool,
    /// Eager activity execution: activities a workflow task completion schedules with
    /// `request_eager_execution` on the run's task queue are started for the completing worker
    /// and returned in the completion's answer. On by default.
    pub eager_activities: bool,
    /// History length and size (bytes) from which workflow tasks suggest continue-as-new;
    /// 0: Temporal's defaults (`--dynamic-config-value limit.historyCount.suggestContinueAsNew=N`).
    pub suggest_continue_as_new_events: i64,
    pub suggest_continue_as_new_bytes: i64,
}

impl ServerConfig {
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            data_dir,
            num_shards: None,
            namespaces: Vec::new(),
            search_attributes: Vec::new(),
            max_poll_wait: chronicle_types::limits::MAX_POLL_WAIT,
            sync_writes: true,
            eager_activities: true,
            suggest_continue_as_new_events: 0,
            suggest_continue_as_new_bytes: 0,
        }
    }
}

pub struct Listeners {
    pub grpc: tokio::net::TcpListener,
}

/// The data directory's shard count; a new directory gets `requested` (or the default). The
/// count is stored before any group starts, so a directory never holds data of two counts.
fn resolve_shard_count(db: &Db, requested: Option<u32>) -> anyhow::Result<u32> {
    let stored = db.shard_count().map_err(|e| anyhow::anyhow!("{e}"))?;
    let count = match (stored, requested) {
        (Some(stored), Some(requested)) if stored != requested => anyhow::bail!(
            "the data directory was created with {stored} history shards, not {requested}; \
             the shard count is fixed for the life of a data directory"
        ),
        (Some(stored), _) => stored,
        (None, requested) => requested.unwrap_or(DEFAULT_SHARDS),
    };
    anyhow::ensure!(
        (1..=4096).contains(&count),
        "the shard count must be between 1 and 4096, not {count}"
    );
    if stored != Some(count) {
        db.set_shard_count(count)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    Ok(count)
}

/// Serves until `shutdown` resolves, then stops accepting, lets in-flight requests finish, stops
/// the shard groups and flushes RocksDB.
pub async fn run(
    listeners: Listeners,
    config: ServerConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let grpc_addr = listeners.grpc.local_addr()?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    let db_options = DbOptions {
        sync_writes: config.sync_writes,
    };
    let data_dir = config.data_dir.clone();
    let db = tokio::task::spawn_blocking(move || Db::open(&data_dir, db_options))
        .await?
        .map_err(|e| anyhow::anyhow!("{e}"))?;

    let num_shards = resolve_shard_count(&db, config.num_shards)?;

    let matching = MatchingEngine::new(config.max_poll_wait);
    let history = HistoryEngine::start(
        db.clone(),
        HistoryConfig {
            num_shards,
            node_id: 1,
            node_addr: grpc_addr.to_string(),
            bootstrap_single_voter: true,
            eager_activities: config.eager_activities,
            suggest_continue_as_new_events: config.suggest_continue_as_new_events,
            suggest_continue_as_new_bytes: config.suggest_continue_as_new_bytes,
        },
        matching.clone() as Arc<dyn MatchingService>,
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let history_service: Arc<dyn HistoryService> = history.clone();
    matching.set_history(&history_service);

    let mut wanted = vec!["default".to_string()];
    wanted.extend(config.namespaces.iter().cloned());
    for name in wanted {
        if history.namespace_by_name(&name).await.is_err() {
            history
                .register_namespace(default_namespace_record(&name, "", 3))
                .await
                .map_err(|e| anyhow::anyhow!("creating namespace {name}: {}", e.message))?;
        }
    }

    let search_attributes: BTreeMap<String, i32> =
        config.search_attributes.iter().cloned().collect();
    let ctx = FrontendContext {
        history: history.clone(),
        matching: matching.clone(),
        namespaces: Arc::new(NamespaceCache::new(history.clone())),
        num_shards,
        server_version: SERVER_VERSION.to_string(),
        search_attributes: Arc::new(RwLock::new(search_attributes)),
    };
    let max_message = chronicle_types::limits::MAX_GRPC_MESSAGE_BYTES;
    let workflow = WorkflowServiceServer::new(WorkflowHandler::new(ctx.clone()))
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(max_message);
    let operator = OperatorServiceServer::new(OperatorHandler::new(ctx))
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(max_message);
    let (health_reporter, health) = tonic_health::server::health_reporter();
    // Temporal's clients (the CLI, the SDKs' health checks) send gzip to every service.
    let health = health
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip);
    health_reporter
        .set_serving::<WorkflowServiceServer<WorkflowHandler>>()
        .await;
    health_reporter
        .set_serving::<OperatorServiceServer<OperatorHandler>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(chronicle_proto::TEMPORAL_DESCRIPTOR_SET)
        .build_v1()
        .context("building the reflection service")?
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip);

    tracing::info!(
        grpc = %grpc_addr,
        data_dir = %config.data_dir.display(),
        shards = num_shards,
        "Chronicle is serving Temporal's API on {grpc_addr}; data in {}",
        config.data_dir.display()
    );
    // Nagle's algorithm off on every connection: gRPC answers are small writes, and with Nagle
    // plus the client's delayed ACK a reply can sit ~40 ms in the kernel.
    let incoming = tokio_stream::StreamExt::map(
        tokio_stream::wrappers::TcpListenerStream::new(listeners.grpc),
        |conn| {
            conn.inspect(|stream| {
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!(error = %e, "could not disable Nagle's algorithm");
                }
            })
        },
    );
    let served = tonic::transport::Server::builder()
        .layer(chronicle_frontend::StatusCompatLayer)
        .add_service(workflow)
        .add_service(operator)
        .add_service(health)
        .add_service(reflection)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    tracing::info!("stopping: shard groups and storage");
    history.shutdown().await;
    db.flush().map_err(|e| anyhow::anyhow!("{e}"))?;
    served.context("gRPC server failed")?;
    Ok(())
}

/// A server started in the background (tests, benchmarks).
pub struct RunningServer {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RunningServer {
    /// Binds `127.0.0.1:0` and serves `config` until [`RunningServer::stop`].
    pub async fn start(config: ServerConfig) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(run(Listeners { grpc: listener }, config, async move {
            let _ = stopped.await;
        }));
        // Ready when the port answers gRPC health.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if task.is_finished() {
                return Err(task
                    .await?
                    .err()
                    .unwrap_or_else(|| anyhow::anyhow!("server exited at start")));
            }
            if let Ok(channel) = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
                .connect()
                .await
            {
                let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
                if client
                    .check(tonic_health::pb::HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                    .is_ok()
                {
                    break;
                }
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "server did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Self {
            addr,
            stop: Some(stop),
            task,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await?
    }
}
