//! A node running any subset of the three roles. Roles in the same process call each other
//! in-process through the service traits; a role that lives elsewhere is reached over the
//! internal gRPC API (`HistoryApi`, `MatchingApi`), which this node also serves for its own
//! roles on its internal listener. start-dev is the node with every role and no internal
//! listener.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chronicle_cluster::grpc::{HistoryApiService, MatchingApiService, RingMatching, RoutedHistory};
use chronicle_cluster::metered::{MeteredHistory, MeteredMatching, NamespaceNames};
use chronicle_cluster::stoppable::PollsEndAtShutdown;
use chronicle_cluster::{HistoryService, MatchingService};
use chronicle_frontend::{
    FrontendContext, NamespaceCache, OperatorHandler, WorkflowHandler, default_namespace_record,
};
use chronicle_history::{HistoryConfig, HistoryEngine, Replication};
use chronicle_matching::MatchingEngine;
use chronicle_proto::temporal::api::operatorservice::v1::operator_service_server::OperatorServiceServer;
use chronicle_proto::temporal::api::workflowservice::v1::workflow_service_server::WorkflowServiceServer;
use chronicle_raft::{ClusterId, GroupRegistry, PeerPool, PeerPoolConfig, TransportService};
use chronicle_storage::{Db, DbOptions};
use tokio::net::TcpListener;
use tonic::codec::CompressionEncoding;

use crate::observability::{self, Readiness};
use crate::{SERVER_VERSION, resolve_shard_count};

/// Which roles this process runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Roles {
    pub history: bool,
    pub matching: bool,
    pub frontend: bool,
}

impl Roles {
    pub const ALL: Roles = Roles {
        history: true,
        matching: true,
        frontend: true,
    };

    /// Parses a comma-separated list such as `history,matching`.
    pub fn parse(spec: &str) -> anyhow::Result<Self> {
        let mut roles = Roles {
            history: false,
            matching: false,
            frontend: false,
        };
        for role in spec.split(',').map(str::trim).filter(|r| !r.is_empty()) {
            match role {
                "history" => roles.history = true,
                "matching" => roles.matching = true,
                "frontend" => roles.frontend = true,
                other => anyhow::bail!(
                    "unknown role {other:?}: the roles are history, matching and frontend"
                ),
            }
        }
        anyhow::ensure!(
            roles.history || roles.matching || roles.frontend,
            "no role given: name at least one of history, matching, frontend"
        );
        Ok(roles)
    }

    pub fn names(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        if self.history {
            names.push("history");
        }
        if self.matching {
            names.push("matching");
        }
        if self.frontend {
            names.push("frontend");
        }
        names
    }
}

/// How long a history node may be unreachable before its replicas are moved: a few minutes,
/// like Temporal's, TiKV's and CockroachDB's store-down thresholds, so a restart or a short
/// partition never moves data.
pub const DEFAULT_DEAD_NODE_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// Everything a node needs; [`crate::ServerConfig`] is the start-dev subset.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub roles: Roles,
    /// Durable data of the history role.
    pub data_dir: PathBuf,
    pub num_shards: Option<u32>,
    /// Internal addresses of the history nodes (comma-separated), for a node without the
    /// history role. Calls go to each shard's leader among them.
    pub history_addr: Option<String>,
    /// History groups are replicated across history nodes (a cluster founded by `chronicle
    /// cluster init`) instead of having this node as their only voter.
    pub replicated: bool,
    /// Replicated history: how long a member may be unreachable from the metadata leader
    /// before it is declared dead and its replicas are moved to the other nodes.
    pub dead_node_timeout: Duration,
    /// Address other nodes reach this node's internal listener at (Raft and internal API);
    /// default: the listener's bound address.
    pub advertise_addr: Option<String>,
    /// Internal addresses of the matching nodes, comma-separated (a matching node lists itself
    /// too): task-queue partitions are placed over them by the matching ring.
    pub matching_addr: Option<String>,
    /// Partitions of a normal task queue over the matching ring (None: 4).
    pub task_queue_partitions: Option<u32>,
    pub namespaces: Vec<String>,
    pub search_attributes: Vec<(String, i32)>,
    pub max_poll_wait: Duration,
    pub sync_writes: bool,
    pub eager_activities: bool,
    /// History limits, for every namespace and by namespace; unset: Temporal's defaults.
    pub history_limits: chronicle_types::limits::HistoryLimitsConfig,
    /// Namespaces advertise the `worker_commands` capability (docs/worker-commands.md).
    pub worker_commands: bool,
    /// TLS of the public API (frontend role); node-to-node TLS is set for the whole process
    /// (`chronicle_types::tls::set_internode`).
    pub frontend_tls: chronicle_types::tls::TlsFiles,
    /// Frontend: admission (JWT authorization, rate limits) and the queue bounds of history and
    /// matching.
    pub admission: Admission,
}

/// Who may call the frontend and how much; how much the history and matching roles hold.
#[derive(Clone, Debug, Default)]
pub struct Admission {
    /// JWT authorization of the public API; `None`: every call is allowed (start-dev's default).
    pub auth: Option<chronicle_frontend::AuthConfig>,
    pub rate_limits: chronicle_frontend::RateLimitConfig,
    pub matching_limits: chronicle_matching::MatchingLimits,
    /// Commands waiting per shard to be proposed; 0: history's default.
    pub max_pending_proposals: usize,
    /// The shortest namespace retention the frontend accepts (zero in tests' default; the
    /// CLI's default is Temporal's one hour).
    pub min_namespace_retention: Duration,
}

impl NodeConfig {
    /// A node with `roles` and every other setting at its default (one shard for a new data
    /// directory, fsync on, eager activities on, Temporal's limits).
    pub fn new(roles: Roles, data_dir: PathBuf) -> Self {
        Self {
            roles,
            data_dir,
            num_shards: None,
            history_addr: None,
            replicated: false,
            dead_node_timeout: DEFAULT_DEAD_NODE_TIMEOUT,
            advertise_addr: None,
            matching_addr: None,
            task_queue_partitions: None,
            namespaces: Vec::new(),
            search_attributes: Vec::new(),
            max_poll_wait: chronicle_types::limits::MAX_POLL_WAIT,
            sync_writes: true,
            eager_activities: true,
            history_limits: Default::default(),
            worker_commands: true,
            frontend_tls: Default::default(),
            admission: Admission::default(),
        }
    }
}

/// Bound sockets: the public Temporal API (frontend role) and the internal API (history and
/// matching roles, when another process needs to reach them).
pub struct NodeListeners {
    pub frontend: Option<TcpListener>,
    pub internal: Option<TcpListener>,
    /// The metrics port: Prometheus `/metrics`, `/health/live` and `/health/ready`.
    pub metrics: Option<TcpListener>,
}

/// Accepted connections with Nagle's algorithm off: gRPC answers are small writes, and with
/// Nagle plus the client's delayed ACK a reply can sit ~40 ms in the kernel.
fn no_delay(
    listener: TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    tokio_stream::StreamExt::map(
        tokio_stream::wrappers::TcpListenerStream::new(listener),
        |conn| {
            conn.inspect(|stream| {
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!(error = %e, "could not disable Nagle's algorithm");
                }
            })
        },
    )
}

/// The history role's shard count, asked of the history nodes (which may still be starting).
async fn remote_shard_count(history: &RoutedHistory) -> anyhow::Result<u32> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match history.num_shards().await {
            Ok(n) => return Ok(n),
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::info!(error = %e.message, "waiting for the history node");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => anyhow::bail!("the history node did not answer: {}", e.message),
        }
    }
}

/// Creates the namespaces a replicated node was asked for, through the metadata group's leader
/// wherever it is (the group may not even be initialised when the node starts). Stops once they
/// are in this node's replica.
async fn ensure_namespaces(
    engine: Arc<HistoryEngine>,
    router: Arc<RoutedHistory>,
    wanted: Vec<String>,
) {
    loop {
        let missing: Vec<&String> = wanted
            .iter()
            .filter(|name| !engine.has_local_namespace(name))
            .collect();
        if missing.is_empty() || engine.is_shut_down() {
            return;
        }
        for name in missing {
            match router.namespace_by_name(name).await {
                Ok(_) => continue,
                Err(e) if !e.is_not_found() => {
                    tracing::debug!(namespace = %name, error = %e.message, "metadata not ready");
                    continue;
                }
                Err(_) => {}
            }
            match router
                .register_namespace(default_namespace_record(name, "", 3))
                .await
            {
                Ok(()) => tracing::info!(namespace = %name, "namespace created"),
                Err(e) if e.is_already_exists() => {}
                Err(e) => tracing::debug!(namespace = %name, error = %e.message, "retrying"),
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Serves the node's roles until `shutdown` resolves, then stops accepting, lets in-flight
/// requests finish, stops the shard groups and flushes RocksDB.
pub async fn run_node(
    listeners: NodeListeners,
    config: NodeConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let roles = config.roles;
    anyhow::ensure!(
        !roles.frontend || listeners.frontend.is_some(),
        "the frontend role needs a frontend listener"
    );
    // History and matching serve other processes unless every role is here (start-dev).
    let needs_internal = roles != Roles::ALL && (roles.history || roles.matching);
    anyhow::ensure!(
        !needs_internal || listeners.internal.is_some(),
        "a node without every role needs an internal listener for the others to reach it"
    );

    // The frontend's gate first: a bad key file stops the node before anything starts.
    let mut gate = if roles.frontend {
        Some(crate::admission::gate(&config.admission).await?)
    } else {
        None
    };

    // The metrics port answers from the start: live at once, ready once the shards (if any)
    // caught up and the gRPC listeners serve.
    let readiness = Arc::new(Readiness::new(roles.history));
    let (metrics_stop, metrics_stopped) = tokio::sync::watch::channel(false);
    let metrics_server = match listeners.metrics {
        Some(listener) => {
            let handle = observability::prometheus()?;
            observability::record_start(roles.frontend, roles.history, roles.matching);
            tracing::info!(metrics = %listener.local_addr()?, "serving /metrics, /health/live and /health/ready");
            Some(tokio::spawn(observability::serve(
                listener,
                handle,
                readiness.clone(),
                metrics_stopped,
            )))
        }
        None => None,
    };

    // Matching: local engine or a remote node.
    let local_matching = roles.matching.then(|| {
        MatchingEngine::with_limits(config.max_poll_wait, config.admission.matching_limits)
    });
    // With matching addresses, calls go through the ring that places task-queue partitions on
    // them (a matching node forwards to root partitions through it too); without, to the
    // local engine, which then holds every partition.
    let ring = match config.matching_addr.as_deref() {
        Some(list) => {
            let addrs: Vec<String> = list
                .split(',')
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .map(String::from)
                .collect();
            let partitions = config
                .task_queue_partitions
                .unwrap_or(chronicle_cluster::partition::DEFAULT_PARTITIONS);
            Some(RingMatching::new(&addrs, partitions).map_err(anyhow::Error::msg)?)
        }
        None => None,
    };
    let matching: Arc<dyn MatchingService> = match (&ring, &local_matching) {
        (Some(ring), _) => ring.clone(),
        (None, Some(engine)) => engine.clone(),
        (None, None) => {
            anyhow::bail!("a node without the matching role needs --matching-addr")
        }
    };
    if let (Some(ring), Some(engine)) = (&ring, &local_matching) {
        // A partition's forwards to its root are matching's calls to matching.
        let forwarder = MeteredMatching::new(ring.clone(), "matching");
        forwarder.set_namespace_names(matching_names(engine));
        engine.set_forwarder(forwarder);
    }
    // History's calls to matching (the outbox's task hand-over, queries), measured as
    // Temporal's history measures its matching client.
    let matching_for_history = MeteredMatching::new(matching.clone(), "history");

    // History: local engine (with its data directory) or remote nodes.
    let mut local_history = None;
    let mut raft_services = None;
    let mut transport_streams: Option<chronicle_raft::transport::StopStreams> = None;
    let mut routed_local: Option<Arc<RoutedHistory>> = None;
    let history: Arc<dyn HistoryService>;
    let num_shards;
    if roles.history {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
        let db_options = DbOptions {
            sync_writes: config.sync_writes,
        };
        let data_dir = config.data_dir.clone();
        let db = tokio::task::spawn_blocking(move || Db::open(&data_dir, db_options))
            .await?
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        num_shards = resolve_shard_count(&db, config.num_shards)?;
        let node_addr = match (
            &config.advertise_addr,
            &listeners.internal,
            &listeners.frontend,
        ) {
            (Some(addr), _, _) => addr.clone(),
            (None, Some(l), _) | (None, None, Some(l)) => l.local_addr()?.to_string(),
            (None, None, None) => String::new(),
        };
        // A replicated node is known by the random ID of its data directory, never reused; a
        // single-voter node keeps ID 1, which its existing groups were founded with.
        // Set once the node has joined a cluster (below, or by `cluster init`).
        let cluster_id = ClusterId::default();
        let (node_id, replication) = if config.replicated {
            anyhow::ensure!(
                listeners.internal.is_some(),
                "a replicated history node needs an internal listener for Raft"
            );
            let node_id = db.node_id().map_err(|e| anyhow::anyhow!("{e}"))?;
            let replication = Replication {
                peers: PeerPool::new(cluster_id.clone(), node_id, PeerPoolConfig::default()),
                registry: GroupRegistry::new(),
            };
            (node_id, Some(replication))
        } else {
            (1, None)
        };
        let engine = HistoryEngine::start(
            db.clone(),
            HistoryConfig {
                num_shards,
                node_id,
                node_addr: node_addr.clone(),
                bootstrap_single_voter: !config.replicated,
                replication: replication.clone(),
                eager_activities: config.eager_activities,
                history_limits: config.history_limits.clone(),
                max_pending_proposals: config.admission.max_pending_proposals,
            },
            matching_for_history.clone(),
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        matching_for_history.set_namespace_names({
            let engine = Arc::downgrade(&engine);
            Arc::new(move |id: &str| {
                Some(engine.upgrade()?.namespace_name(id)).filter(|n| !n.is_empty())
            })
        });
        let mut wanted = vec!["default".to_string()];
        wanted.extend(config.namespaces.iter().cloned());
        if let Some(replication) = replication {
            // Commands for shards led elsewhere (transfer tasks) go through this node's own
            // API, whose NotLeader answers point at the leader.
            let router = Arc::new(RoutedHistory::new(vec![node_addr.clone()]));
            router.set_num_shards(num_shards);
            // Calls for the groups this node leads stay in process.
            router.set_local(node_addr.clone(), Arc::downgrade(&engine) as _);
            engine.set_router(router.clone());
            tokio::spawn(ensure_namespaces(engine.clone(), router.clone(), wanted));
            // A frontend or matching role in this process reaches the leaders through the
            // router too: this node leads only some groups.
            routed_local = Some(router);
            let identity =
                crate::admin::NodeIdentity::load(db.clone(), cluster_id.clone(), &engine).await?;
            // Acts only while this node leads the metadata group.
            crate::placement_driver::spawn(&engine, config.dead_node_timeout);
            let transport = TransportService::new(cluster_id, node_id, replication.registry);
            transport_streams = Some(transport.stop_handle());
            raft_services = Some((
                transport.into_server(),
                crate::admin::AdminApiService::new(engine.clone(), node_id, node_addr, identity)
                    .into_server(),
            ));
            tracing::info!(node_id, "replicated history node");
        } else {
            let search_attributes: BTreeMap<String, i32> =
                config.search_attributes.iter().cloned().collect();
            for name in wanted {
                if engine.namespace_by_name(&name).await.is_err() {
                    engine
                        .register_namespace(default_namespace_record(&name, "", 3))
                        .await
                        .map_err(|e| anyhow::anyhow!("creating namespace {name}: {}", e.message))?;
                }
                // `--search-attribute`: registered in each namespace created at start, as
                // Temporal's dev server does (durably; names already there are left alone).
                if !search_attributes.is_empty() {
                    engine
                        .update_search_attributes(&name, search_attributes.clone(), Vec::new())
                        .await
                        .map_err(|e| {
                            anyhow::anyhow!("search attributes of {name}: {}", e.message)
                        })?;
                }
            }
        }
        readiness.set_history(&engine);
        history = match routed_local {
            Some(router) => router,
            None => engine.clone(),
        };
        local_history = Some((engine, db));
    } else {
        let addr = config
            .history_addr
            .as_deref()
            .context("a node without the history role needs --history-addr")?;
        let seeds: Vec<String> = addr
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(String::from)
            .collect();
        anyhow::ensure!(!seeds.is_empty(), "--history-addr names no address");
        let remote = RoutedHistory::new(seeds);
        num_shards = if roles.frontend {
            remote_shard_count(&remote).await?
        } else {
            0
        };
        history = Arc::new(remote);
    }
    // Matching keeps a weak reference to history; `history_for_matching` lives until this
    // function returns. Matching's calls to history (a poll's task start) are measured as
    // Temporal's matching measures its history client.
    let history_for_matching: Arc<dyn HistoryService> = {
        let metered = MeteredHistory::new(history.clone(), "matching");
        if let Some(engine) = &local_matching {
            metered.set_namespace_names(matching_names(engine));
        }
        metered
    };
    if let Some(engine) = &local_matching {
        engine.set_history(&history_for_matching);
        readiness.set_matching(engine);
    }

    let mut servers = tokio::task::JoinSet::new();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let polls_stop = stop_rx.clone();
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };

    if let Some(streams) = transport_streams.take() {
        // Peers' Raft streams would keep the internal server's graceful shutdown waiting.
        let stop = stopped();
        tokio::spawn(async move {
            stop.await;
            streams.stop();
        });
    }

    if let Some(listener) = listeners.internal {
        let addr = listener.local_addr()?;
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = chronicle_types::tls::internode_server() {
            builder = builder
                .tls_config(tls)
                .context("node-to-node TLS on the internal listener")?;
        }
        let mut router =
            builder.add_optional_service(local_history.as_ref().map(|(engine, _)| {
                HistoryApiService::new(engine.clone(), num_shards).into_server()
            }));
        if let Some((transport, admin)) = raft_services.take() {
            router = router.add_service(transport).add_service(admin);
        }
        router = router.add_optional_service(local_matching.as_ref().map(|engine| {
            let service = MatchingApiService::new(engine.clone());
            match &ring {
                // Known in the ring by its advertised address, else by the bound one.
                Some(ring) => {
                    let me = config
                        .advertise_addr
                        .clone()
                        .unwrap_or_else(|| addr.to_string());
                    // Calls for the partitions this node owns stay in process.
                    ring.set_local(&me, Arc::downgrade(engine) as _);
                    service.with_ring(ring.clone(), &me)
                }
                None => service,
            }
            .into_server()
        }));
        let (health_reporter, health) = tonic_health::server::health_reporter();
        health_reporter
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        let router = router.add_service(health);
        tracing::info!(internal = %addr, roles = ?roles.names(), "serving the internal API on {addr}");
        let stop = stopped();
        servers.spawn(async move {
            router
                .serve_with_incoming_shutdown(no_delay(listener), stop)
                .await
                .context("internal gRPC server failed")
        });
    }

    if let Some(listener) = listeners.frontend.filter(|_| roles.frontend) {
        let addr = listener.local_addr()?;
        // The frontend's calls to history and matching, measured as Temporal's frontend
        // measures its clients (namespace records are read unmeasured: Temporal's frontend
        // reads them from persistence).
        let namespaces = Arc::new(NamespaceCache::new(history.clone()));
        let names: NamespaceNames = {
            let namespaces = Arc::downgrade(&namespaces);
            Arc::new(move |id: &str| namespaces.upgrade()?.name_of_id(id))
        };
        let frontend_history = MeteredHistory::new(history.clone(), "frontend");
        frontend_history.set_namespace_names(names.clone());
        // Workers' long polls end the moment the node stops, so it drains at once.
        let frontend_matching = MeteredMatching::new(
            Arc::new(PollsEndAtShutdown::new(matching.clone(), polls_stop)),
            "frontend",
        );
        frontend_matching.set_namespace_names(names);
        let ctx = FrontendContext {
            history: frontend_history,
            matching: frontend_matching,
            namespaces,
            num_shards,
            server_version: SERVER_VERSION.to_string(),
            min_namespace_retention: config.admission.min_namespace_retention,
            worker_commands: config.worker_commands,
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
        match &local_history {
            Some(_) => tracing::info!(
                grpc = %addr,
                data_dir = %config.data_dir.display(),
                shards = num_shards,
                "Chronicle is serving Temporal's API on {addr}; data in {}",
                config.data_dir.display()
            ),
            None => tracing::info!(
                grpc = %addr,
                shards = num_shards,
                "Chronicle is serving Temporal's API on {addr}"
            ),
        }
        let gate = gate.take().context("the frontend's gate")?;
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) =
            chronicle_types::tls::public_server(&config.frontend_tls).map_err(anyhow::Error::msg)?
        {
            builder = builder.tls_config(tls).context("TLS on the public API")?;
        }
        let router = builder
            .layer(chronicle_frontend::StatusCompatLayer)
            .layer(chronicle_frontend::ServiceMetricsLayer)
            .layer(gate)
            .add_service(workflow)
            .add_service(operator)
            .add_service(health)
            .add_service(reflection);
        let stop = stopped();
        servers.spawn(async move {
            router
                .serve_with_incoming_shutdown(no_delay(listener), stop)
                .await
                .context("gRPC server failed")
        });
    }

    // A group that stopped on a fatal error (a storage failure while applying its log) serves
    // nothing any more: fail fast, so the node restarts and re-applies the log, rather than keep
    // answering with a frozen shard. In-flight requests are dropped, not drained.
    let fatal_group = {
        let engine = local_history.as_ref().map(|(engine, _)| engine.clone());
        async move {
            match engine {
                Some(engine) => engine.failed_group().await,
                None => std::future::pending().await,
            }
        }
    };
    readiness.set_serving(true);
    // Until asked to stop, until a server fails, or until a group fails.
    let mut failed = None;
    tokio::select! {
        () = shutdown => {}
        Some(result) = servers.join_next() => {
            failed = Some(result.context("server task").and_then(|r| r));
        }
        (group, reason) = fatal_group => {
            tracing::error!(
                group,
                reason = %reason,
                "raft group {group} stopped on a fatal error; exiting so that the node restarts \
                 and re-applies its log"
            );
            servers.abort_all();
            if let Some((engine, _)) = &local_history {
                engine.shutdown().await;
            }
            anyhow::bail!("raft group {group} stopped on a fatal error: {reason}");
        }
    }
    readiness.set_serving(false);
    let _ = stop_tx.send(true);
    if let Some(engine) = &local_matching {
        engine.stop_polls();
    }
    while let Some(result) = servers.join_next().await {
        if let Err(e) = result.context("server task").and_then(|r| r) {
            failed.get_or_insert(Err(e));
        }
    }
    if let Some((engine, db)) = local_history {
        tracing::info!("stopping: shard groups and storage");
        engine.shutdown().await;
        db.flush().map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let _ = metrics_stop.send(true);
    if let Some(metrics_server) = metrics_server {
        let _ = metrics_server.await;
    }
    match failed {
        Some(Err(e)) => Err(e),
        _ => Ok(()),
    }
}

/// How a matching node names the namespaces of its calls' labels: those it learned from polls
/// and history's namespace list.
fn matching_names(engine: &Arc<MatchingEngine>) -> NamespaceNames {
    let engine = Arc::downgrade(engine);
    Arc::new(move |id: &str| engine.upgrade()?.known_namespace_name(id))
}
