//! The `chronicle` binary's library: wiring the roles of a node and serving them.
//!
//! [`run`] takes bound listeners, a configuration and a shutdown future, so tests start real
//! servers on port 0 in-process and the binary is a thin CLI around it.

pub mod admin;
mod admission;
pub mod cli;
mod cluster_init;
pub mod config_file;
pub mod describe;
pub mod local_cluster;
pub mod logging;
pub mod node_liveness;
pub mod observability;
pub mod placement_driver;
mod roles;

pub use roles::{Admission, NodeConfig, NodeListeners, Roles, run_node};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use chronicle_storage::Db;

/// The server version reported to SDKs (Temporal's API level Chronicle implements).
pub const SERVER_VERSION: &str = "1.32.0";

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
    /// History limits, for every namespace and by namespace (`--dynamic-config-value
    /// limit.historyCount.suggestContinueAsNew=N` and the other `limit.history*` keys); unset:
    /// Temporal's defaults.
    pub history_limits: chronicle_types::limits::HistoryLimitsConfig,
    /// Namespaces advertise the `worker_commands` capability (docs/worker-commands.md;
    /// `--dynamic-config-value frontend.WorkerCommandsEnabled=false` turns it off). On by default.
    pub worker_commands: bool,
    /// JWT authorization, rate limits and queue bounds (default: no authorization, Temporal's
    /// rate limits).
    pub admission: Admission,
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
            history_limits: Default::default(),
            worker_commands: true,
            admission: Admission::default(),
        }
    }
}

pub struct Listeners {
    pub grpc: tokio::net::TcpListener,
    /// The metrics port: Prometheus `/metrics`, `/health/live` and `/health/ready`.
    pub metrics: Option<tokio::net::TcpListener>,
}

impl Listeners {
    pub fn grpc_only(grpc: tokio::net::TcpListener) -> Self {
        Self {
            grpc,
            metrics: None,
        }
    }
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

/// Serves start-dev (every role in this process) until `shutdown` resolves, then stops
/// accepting, lets in-flight requests finish, stops the shard groups and flushes RocksDB.
pub async fn run(
    listeners: Listeners,
    config: ServerConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let node = NodeConfig {
        roles: Roles::ALL,
        data_dir: config.data_dir,
        num_shards: config.num_shards,
        history_addr: None,
        replicated: false,
        dead_node_timeout: crate::roles::DEFAULT_DEAD_NODE_TIMEOUT,
        advertise_addr: None,
        matching_addr: None,
        task_queue_partitions: None,
        namespaces: config.namespaces,
        search_attributes: config.search_attributes,
        max_poll_wait: config.max_poll_wait,
        sync_writes: config.sync_writes,
        eager_activities: config.eager_activities,
        history_limits: config.history_limits,
        worker_commands: config.worker_commands,
        frontend_tls: Default::default(),
        admission: config.admission,
    };
    let listeners = NodeListeners {
        frontend: Some(listeners.grpc),
        internal: None,
        metrics: listeners.metrics,
    };
    run_node(listeners, node, shutdown).await
}

/// A server started in the background (tests, benchmarks).
pub struct RunningServer {
    pub addr: SocketAddr,
    /// The metrics port, when started with [`RunningServer::start_with_metrics`].
    pub metrics_addr: Option<SocketAddr>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RunningServer {
    /// Binds `127.0.0.1:0` and serves `config` until [`RunningServer::stop`].
    pub async fn start(config: ServerConfig) -> anyhow::Result<Self> {
        Self::start_inner(config, false).await
    }

    /// As [`RunningServer::start`], with a metrics port on `127.0.0.1:0` too.
    pub async fn start_with_metrics(config: ServerConfig) -> anyhow::Result<Self> {
        Self::start_inner(config, true).await
    }

    async fn start_inner(config: ServerConfig, with_metrics: bool) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let metrics = if with_metrics {
            Some(tokio::net::TcpListener::bind("127.0.0.1:0").await?)
        } else {
            None
        };
        let metrics_addr = metrics.as_ref().map(|l| l.local_addr()).transpose()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let listeners = Listeners {
            grpc: listener,
            metrics,
        };
        let task = tokio::spawn(run(listeners, config, async move {
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
            metrics_addr,
            stop: Some(stop),
            task,
        })
    }

    /// Waits until the server stops by itself (it only does on a fatal error) and returns how
    /// [`run`] ended.
    pub async fn finished(mut self) -> anyhow::Result<()> {
        let result = (&mut self.task).await?;
        self.stop.take();
        result
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
