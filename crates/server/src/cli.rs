//! Command line: `chronicle server start-dev`, with the flags of `temporal server start-dev`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "chronicle",
    version,
    about = "A durable-execution server that speaks Temporal's API"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once at start: the size difference between the subcommands costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run servers.
    #[command(subcommand)]
    Server(ServerCommand),
    /// Operate on a cluster of history nodes.
    #[command(subcommand)]
    Cluster(ClusterCommand),
}

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Found a replicated history cluster, once, from nodes started with `--replicated` and a
    /// fresh data directory: each shard gets three voters on distinct nodes (placed by a
    /// consistent-hash ring), the metadata group three (five from five nodes) and every other
    /// node as a learner.
    Init(ClusterInit),
    /// Add a history node (started with a fresh data directory, --replicated and the cluster's
    /// --num-shards) to the cluster: it is registered and the placement driver moves to it the
    /// replicas the ring gives it.
    AddNode(ClusterAddNode),
    /// Drain a history node: the placement driver moves all its replicas to the other active
    /// nodes, then the node leaves the cluster (stop it afterwards). Refused when fewer than
    /// three active nodes would remain. Waits until the node is drained.
    Drain(ClusterDrain),
    /// Show the history nodes and, per shard, its leader, term, members, each replica's applied
    /// index and each follower's lag.
    Describe(ClusterDescribe),
    /// Replace a lost history node: in every group, the node at --add (started with a fresh
    /// data directory, --replicated and the cluster's --num-shards) joins as a learner, catches
    /// up, and becomes a voter in place of --remove. Safe to run again.
    ReplaceNode(ClusterReplaceNode),
}

#[derive(Args, Debug, Clone)]
pub struct ClusterReplaceNode {
    /// Internal addresses of the cluster's history nodes (the leaders are found among them).
    #[arg(
        long,
        env = "CHRONICLE_CLUSTER_NODES",
        value_delimiter = ',',
        required = true
    )]
    pub nodes: Vec<String>,
    /// ID of the node to remove (`chronicle cluster describe` lists them).
    #[arg(long)]
    pub remove: u64,
    /// Internal address of the new node.
    #[arg(long)]
    pub add: String,
    #[command(flatten)]
    pub internode: InternodeTlsArgs,
}

#[derive(Args, Debug, Clone)]
pub struct ClusterAddNode {
    /// Internal addresses of the cluster's history nodes.
    #[arg(
        long,
        env = "CHRONICLE_CLUSTER_NODES",
        value_delimiter = ',',
        required = true
    )]
    pub nodes: Vec<String>,
    /// Internal address of the new node.
    #[arg(long)]
    pub add: String,
    #[command(flatten)]
    pub internode: InternodeTlsArgs,
}

#[derive(Args, Debug, Clone)]
pub struct ClusterDrain {
    /// Internal addresses of the cluster's history nodes.
    #[arg(
        long,
        env = "CHRONICLE_CLUSTER_NODES",
        value_delimiter = ',',
        required = true
    )]
    pub nodes: Vec<String>,
    /// ID of the node to drain (`chronicle cluster describe` lists them).
    pub node: u64,
    /// Give up waiting after this many seconds (the drain goes on; 0: do not wait).
    #[arg(long, default_value_t = 600)]
    pub wait_secs: u64,
    #[command(flatten)]
    pub internode: InternodeTlsArgs,
}

#[derive(Args, Debug, Clone)]
pub struct ClusterDescribe {
    /// Internal addresses of the history nodes, comma-separated.
    #[arg(
        long,
        env = "CHRONICLE_CLUSTER_NODES",
        value_delimiter = ',',
        required = true
    )]
    pub nodes: Vec<String>,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Also digest every group's state on every node and say whether replicas at the same
    /// applied index agree (reads all the data: for checks, not for dashboards).
    #[arg(long)]
    pub digests: bool,
    #[command(flatten)]
    pub internode: InternodeTlsArgs,
}

/// Node-to-node mutual TLS: every process of a cluster and the `cluster` commands present this
/// certificate and accept only peers signed by this CA.
#[derive(Args, Debug, Clone, Default, PartialEq)]
pub struct InternodeTlsArgs {
    /// PEM certificate this node presents to other nodes (and to the `cluster` commands).
    #[arg(long, env = "CHRONICLE_INTERNODE_TLS_CERT")]
    pub internode_tls_cert: Option<PathBuf>,
    /// PEM private key of --internode-tls-cert.
    #[arg(long, env = "CHRONICLE_INTERNODE_TLS_KEY")]
    pub internode_tls_key: Option<PathBuf>,
    /// PEM CA certificate that signs every node's certificate.
    #[arg(long, env = "CHRONICLE_INTERNODE_TLS_CA")]
    pub internode_tls_ca: Option<PathBuf>,
    /// Name to verify in other nodes' certificates instead of the address dialled.
    #[arg(long, env = "CHRONICLE_INTERNODE_TLS_SERVER_NAME")]
    pub internode_tls_server_name: Option<String>,
}

impl InternodeTlsArgs {
    pub fn files(&self) -> chronicle_types::tls::TlsFiles {
        chronicle_types::tls::TlsFiles {
            cert: self.internode_tls_cert.clone(),
            key: self.internode_tls_key.clone(),
            ca: self.internode_tls_ca.clone(),
            server_name: self.internode_tls_server_name.clone(),
        }
    }
}

/// TLS on the public Temporal API (frontend role).
#[derive(Args, Debug, Clone, Default, PartialEq)]
pub struct FrontendTlsArgs {
    /// PEM certificate the frontend presents to clients.
    #[arg(long, env = "CHRONICLE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "CHRONICLE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificate: when given, clients must present a certificate it signed.
    #[arg(long, env = "CHRONICLE_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
}

impl FrontendTlsArgs {
    pub fn files(&self) -> chronicle_types::tls::TlsFiles {
        chronicle_types::tls::TlsFiles {
            cert: self.tls_cert.clone(),
            key: self.tls_key.clone(),
            ca: self.tls_client_ca.clone(),
            server_name: None,
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct ClusterInit {
    /// Internal addresses of the history nodes, comma-separated.
    #[arg(
        long,
        env = "CHRONICLE_CLUSTER_NODES",
        value_delimiter = ',',
        required = true
    )]
    pub nodes: Vec<String>,
    /// History shards of the cluster; every node must have been started with the same count.
    #[arg(long, env = "CHRONICLE_NUM_SHARDS", value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub num_shards: u32,
    #[command(flatten)]
    pub internode: InternodeTlsArgs,
}

// Parsed once at start: the size difference between the subcommands costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum ServerCommand {
    /// Start a single-node server for development: every role in one process, data in RocksDB.
    StartDev(StartDev),
    /// Start a node running some of the roles (history, matching, frontend). Roles in other
    /// processes are reached over the internal API (`--history-addr`, `--matching-addr`).
    /// Every flag can also be set by its `CHRONICLE_*` environment variable.
    Start(Start),
    /// Run a whole cluster on this machine: history, matching and frontend nodes as child
    /// processes of this binary on their own 127.0.0.x addresses, founded and ready when it
    /// prints `ready`. Ctrl-C stops them all; a child that dies is reported, not restarted
    /// (unless --restart).
    StartLocalCluster(StartLocalCluster),
}

#[derive(Args, Debug, Clone)]
pub struct StartLocalCluster {
    /// History nodes (every shard is replicated on each, up to three voters).
    #[arg(long, default_value_t = 3)]
    pub history: usize,
    /// Matching nodes, on 127.0.0.21, .22, ...; task-queue partitions are spread over them
    /// [default: 2, or the count recorded in an existing DATA_DIR].
    #[arg(long)]
    pub matching: Option<usize>,
    /// Frontend nodes; the first listens on 127.0.0.1:PORT, the others on 127.0.0.32, .33, ...
    #[arg(long, default_value_t = 2)]
    pub frontend: usize,
    /// Directory of the cluster: each history node's data, the layout and the logs. Reusing it
    /// restarts the same cluster.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Public API port on every frontend address; internal and metrics ports are PORT+1 and
    /// PORT+2 on each node's address. 0: free ports, picked at first start and kept.
    #[arg(short = 'p', long, default_value_t = 7233)]
    pub port: u16,
    /// History shards of a new cluster [default: 3]; fixed at first start, and a restart keeps
    /// the recorded count. 3 (one leader per history node) gave the most throughput on one
    /// machine, where every group's per-entry cost is paid by the same cores (docs/benchmarks.md,
    /// shard-count sweep).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub num_shards: Option<u32>,
    /// Start a child again when it dies.
    #[arg(long)]
    pub restart: bool,
    /// Namespaces to create at start (repeatable); `default` always exists.
    #[arg(short = 'n', long = "namespace")]
    pub namespaces: Vec<String>,
    /// Log level of every node (their logs are in DATA_DIR/logs).
    #[arg(long, default_value = "info")]
    pub log_level: String,
    /// Log format of every node: text or json (each line names its node, e.g. `history-2`).
    #[arg(long, default_value = "text")]
    pub log_format: String,
    /// Relaxed durability on the history nodes (see `start-dev --no-fsync`).
    #[arg(long)]
    pub no_fsync: bool,
    /// The frontends' `--min-namespace-retention` (default: theirs, one hour).
    #[arg(long)]
    pub min_namespace_retention: Option<String>,
    /// The history nodes' `--dead-node-timeout` (default: theirs, five minutes).
    #[arg(long)]
    pub dead_node_timeout: Option<String>,
    /// Dynamic config value, KEY=VALUE (repeatable), given to every child (see `start-dev`).
    #[arg(long = "dynamic-config-value")]
    pub dynamic_config_values: Vec<String>,
    #[command(flatten)]
    pub internode: InternodeTlsArgs,
    #[command(flatten)]
    pub frontend_tls: FrontendTlsArgs,
}

#[derive(Args, Debug, Clone)]
pub struct Start {
    /// TOML configuration file. Its keys are the long flags' names in snake_case
    /// (`frontend_addr = "..."`); a flag or a `CHRONICLE_*` variable overrides the file.
    #[arg(long, env = "CHRONICLE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Roles of this process, comma-separated: history, matching, frontend.
    #[arg(
        long,
        env = "CHRONICLE_ROLE",
        default_value = "history,matching,frontend"
    )]
    pub role: String,
    /// Address of the public Temporal API (frontend role).
    #[arg(
        long,
        env = "CHRONICLE_FRONTEND_ADDR",
        default_value = "127.0.0.1:7233"
    )]
    pub frontend_addr: String,
    /// Address of the internal API this node serves for its history and matching roles.
    #[arg(
        long,
        env = "CHRONICLE_INTERNAL_ADDR",
        default_value = "127.0.0.1:7234"
    )]
    pub internal_addr: String,
    /// Internal addresses of the history nodes, comma-separated (when this node has no history
    /// role); calls go to each shard's leader among them.
    #[arg(long, env = "CHRONICLE_HISTORY_ADDR")]
    pub history_addr: Option<String>,
    /// History role: replicate the shard groups across history nodes (the cluster is founded
    /// once with `chronicle cluster init`); without it, this node is every group's only voter.
    #[arg(long, env = "CHRONICLE_REPLICATED")]
    pub replicated: bool,
    /// Replicated history: how long a history node may be unreachable from the metadata
    /// group's leader before it is declared dead and its replicas are rebuilt on the other
    /// nodes (a Go-style duration: `5m`, `30s`). A node back before then is left alone; a dead
    /// node must rejoin on a fresh data directory.
    #[arg(long, env = "CHRONICLE_DEAD_NODE_TIMEOUT", default_value = "5m", value_parser = parse_go_duration)]
    pub dead_node_timeout: std::time::Duration,
    /// Address other nodes reach this node's internal API and Raft transport at [default: the
    /// bound internal address]. Must stay stable for the node's life.
    #[arg(long, env = "CHRONICLE_ADVERTISE_ADDR")]
    pub advertise_addr: Option<String>,
    /// Internal addresses of the matching nodes, comma-separated. Task-queue partitions are
    /// spread over the ones that answer; a matching node lists every one, itself included.
    #[arg(long, env = "CHRONICLE_MATCHING_ADDR")]
    pub matching_addr: Option<String>,
    /// Partitions of each normal task queue, spread over the matching nodes [default: 4];
    /// every node of a cluster must use the same number. Sticky queues have one.
    #[arg(long, env = "CHRONICLE_TASK_QUEUE_PARTITIONS", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub task_queue_partitions: Option<u32>,
    /// Directory of the history role's durable data.
    #[arg(long, env = "CHRONICLE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// History shards of a new data directory [default: 1]; fixed for its life.
    #[arg(long, env = "CHRONICLE_NUM_SHARDS", value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub num_shards: Option<u32>,
    /// Namespaces the history role creates at start if missing (repeatable).
    #[arg(short = 'n', long = "namespace")]
    pub namespaces: Vec<String>,
    /// Port for Prometheus `/metrics` and the health probes `/health/live` and `/health/ready`;
    /// none when unset.
    #[arg(long, env = "CHRONICLE_METRICS_PORT")]
    pub metrics_port: Option<u16>,
    /// Log level: debug, info, warn, error.
    #[arg(long, env = "CHRONICLE_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Log format: text or json.
    #[arg(long, env = "CHRONICLE_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
    /// This node's name in its log lines (the `node` field) [default: its roles and address,
    /// e.g. `history@10.0.0.5:7234`]. The chart sets the pod's name.
    #[arg(long, env = "CHRONICLE_NODE_NAME")]
    pub node_name: Option<String>,
    /// Relaxed durability: acknowledge writes before the Raft log is fsynced.
    #[arg(long, env = "CHRONICLE_NO_FSYNC")]
    pub no_fsync: bool,
    /// Dynamic config value, KEY=VALUE (repeatable): the keys `start-dev` honours. A history
    /// node acts on the history limits; every node of a cluster should be given the same.
    #[arg(long = "dynamic-config-value")]
    pub dynamic_config_values: Vec<String>,
    #[command(flatten)]
    pub internode: InternodeTlsArgs,
    #[command(flatten)]
    pub frontend_tls: FrontendTlsArgs,
    #[command(flatten)]
    pub admission: AdmissionArgs,
}

#[derive(Args, Debug, Clone)]
pub struct StartDev {
    /// IP address to bind the frontend service to.
    #[arg(long, default_value = "localhost")]
    pub ip: String,
    /// Port for the frontend gRPC service.
    #[arg(short = 'p', long, default_value_t = 7233)]
    pub port: u16,
    /// Port for Temporal's HTTP API (not served yet; accepted for compatibility).
    #[arg(long)]
    pub http_port: Option<u16>,
    /// Port for Prometheus `/metrics` and the health probes `/health/live` and `/health/ready`;
    /// none when unset.
    #[arg(long)]
    pub metrics_port: Option<u16>,
    /// Port for the web UI (Chronicle has no UI yet; accepted for compatibility).
    #[arg(long)]
    pub ui_port: Option<u16>,
    /// Disable the web UI (always the case for now).
    #[arg(long)]
    pub headless: bool,
    /// Namespaces to create at start (repeatable); `default` always exists.
    #[arg(short = 'n', long = "namespace")]
    pub namespaces: Vec<String>,
    /// Custom search attributes, KEY=TYPE (Text, Keyword, Int, Double, Bool, Datetime, KeywordList).
    #[arg(long = "search-attribute")]
    pub search_attributes: Vec<String>,
    /// Log level: debug, info, warn, error.
    #[arg(long, default_value = "info")]
    pub log_level: String,
    /// Log format: text or json.
    #[arg(long, default_value = "text")]
    pub log_format: String,
    /// Directory of the durable RocksDB data (default: a per-user data directory).
    #[arg(long, conflicts_with = "ephemeral")]
    pub data_dir: Option<PathBuf>,
    /// Keep data in a temporary directory that is removed on exit.
    #[arg(long)]
    pub ephemeral: bool,
    /// Number of history shards of a new data directory [default: 1]. Fixed for the life of a
    /// data directory: an existing one keeps its count, and asking for another is an error.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub num_shards: Option<u32>,
    /// Relaxed durability: acknowledge writes before the Raft log is fsynced. A crash of the
    /// machine (not just the process) can then lose the last acknowledged writes. Off by default.
    #[arg(long)]
    pub no_fsync: bool,
    /// Turn off eager activity execution (activities requesting it then go through matching).
    #[arg(long)]
    pub no_eager_activities: bool,
    /// Dynamic config value, KEY=VALUE (repeatable), as `temporal server start-dev` takes them.
    /// Chronicle honours the history limits (`limit.historyCount.suggestContinueAsNew`,
    /// `limit.historySize.suggestContinueAsNew`, `limit.historyCount.error`,
    /// `limit.historySize.error`; a number, or a JSON list of
    /// `{"value": N, "constraints": {"namespace": "NAME"}}` for some namespaces),
    /// `system.namespaceMinRetentionLocal` and `frontend.WorkerCommandsEnabled`; other keys are
    /// accepted and ignored (logged).
    #[arg(long = "dynamic-config-value")]
    pub dynamic_config_values: Vec<String>,
    #[command(flatten)]
    pub admission: AdmissionArgs,
}

/// Authorization, rate limits and queue bounds (`server start` and `server start-dev`).
#[derive(Args, Debug, Clone)]
pub struct AdmissionArgs {
    /// JSON Web Key Set, a file or an `http(s)://` URL (an identity provider's `jwks_uri`):
    /// turns on JWT authorization of the public API. Every call then needs
    /// `authorization: Bearer <JWT>` signed by one of its keys (RS256/ES256 and kin), with
    /// permissions in Temporal's format. A file is re-read when it changes, a URL fetched again
    /// every `--jwks-refresh-secs`; a token naming an unknown key triggers a check at once.
    #[arg(long, env = "CHRONICLE_JWKS")]
    pub jwks: Option<String>,
    /// Audience tokens must carry (`aud`); unchecked when unset.
    #[arg(long, env = "CHRONICLE_JWT_AUDIENCE", requires = "jwks")]
    pub jwt_audience: Option<String>,
    /// Claim holding the permissions (`"<namespace>:<read|write|worker|admin>"`).
    #[arg(
        long,
        env = "CHRONICLE_JWT_PERMISSIONS_CLAIM",
        default_value = "permissions"
    )]
    pub jwt_permissions_claim: String,
    /// How often the JWKS file or URL is checked for changes, in seconds.
    #[arg(long, env = "CHRONICLE_JWKS_REFRESH_SECS", default_value_t = 60)]
    pub jwks_refresh_secs: u64,
    /// Requests per second this frontend accepts (Temporal's `frontend.rps`, whose default is
    /// 2400; Chronicle's frontend serves more); 0: no limit.
    #[arg(long, env = "CHRONICLE_FRONTEND_RPS", default_value_t = chronicle_frontend::ratelimit::DEFAULT_FRONTEND_RPS)]
    pub frontend_rps: f64,
    /// Requests per second per namespace on this frontend (`frontend.namespaceRPS`); 0: no limit.
    #[arg(long, env = "CHRONICLE_NAMESPACE_RPS", default_value_t = chronicle_frontend::ratelimit::DEFAULT_NAMESPACE_RPS)]
    pub namespace_rps: f64,
    /// Burst of both rate limits, as a multiple of the rate (`frontend.namespaceBurstRatio`).
    #[arg(long, env = "CHRONICLE_RPS_BURST_RATIO", default_value_t = chronicle_frontend::ratelimit::DEFAULT_BURST_RATIO)]
    pub rps_burst_ratio: f64,
    /// Long polls (and queries, updates) open at once per namespace and method on this frontend
    /// (`frontend.namespaceCount`); 0: no limit.
    #[arg(long, env = "CHRONICLE_NAMESPACE_MAX_LONG_POLLS", default_value_t = chronicle_frontend::ratelimit::DEFAULT_NAMESPACE_CONCURRENT)]
    pub namespace_max_long_polls: usize,
    /// Matching: tasks queued per task queue before more are refused (history re-offers them).
    #[arg(long, env = "CHRONICLE_MAX_TASK_BACKLOG", default_value_t = chronicle_matching::MatchingLimits::default().max_backlog_per_queue)]
    pub max_task_backlog: usize,
    /// Matching: polls waiting at once per task queue.
    #[arg(long, env = "CHRONICLE_MAX_POLLERS_PER_QUEUE", default_value_t = chronicle_matching::MatchingLimits::default().max_pollers_per_queue)]
    pub max_pollers_per_queue: usize,
    /// Matching: queries waiting for a worker's answer.
    #[arg(long, env = "CHRONICLE_MAX_PENDING_QUERIES", default_value_t = chronicle_matching::MatchingLimits::default().max_pending_queries)]
    pub max_pending_queries: usize,
    /// History: writes waiting per shard to be committed before more are refused.
    #[arg(long, env = "CHRONICLE_MAX_PENDING_PROPOSALS", default_value_t = chronicle_history::DEFAULT_MAX_PENDING_PROPOSALS)]
    pub max_pending_proposals: usize,
    /// Frontend: the shortest workflow execution retention a namespace may be given (Temporal's
    /// `system.namespaceMinRetentionLocal`, whose default is 1h), as a Go-style duration
    /// (`1h`, `30s`, `1d`). Lower it only for tests.
    #[arg(long, env = "CHRONICLE_MIN_NAMESPACE_RETENTION", default_value = "1h", value_parser = parse_go_duration)]
    pub min_namespace_retention: std::time::Duration,
}

/// A Go-style duration: a sequence of numbers with units `ms`, `s`, `m`, `h` and `d`
/// (`1h30m`, `500ms`, `2s`), optionally quoted.
pub fn parse_go_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim().trim_matches('"');
    let bad = || format!("{text:?} is not a duration such as 1h, 30m, 2s or 500ms");
    if text.is_empty() {
        return Err(bad());
    }
    let mut total_ms: u64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let per_unit = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total_ms = total_ms.saturating_add(n.saturating_mul(per_unit));
    }
    Ok(std::time::Duration::from_millis(total_ms))
}

impl AdmissionArgs {
    pub fn to_admission(&self) -> Result<crate::Admission, String> {
        let positive = |n: usize, flag: &str| {
            if n == 0 {
                Err(format!("--{flag} must be at least 1"))
            } else {
                Ok(n)
            }
        };
        if self.frontend_rps < 0.0 || self.namespace_rps < 0.0 {
            return Err("rate limits cannot be negative".into());
        }
        if self.rps_burst_ratio < 1.0 {
            return Err("--rps-burst-ratio must be 1 or more".into());
        }
        let auth = self.jwks.as_ref().map(|source| {
            let mut auth =
                chronicle_frontend::AuthConfig::new(chronicle_frontend::JwksSource::parse(source));
            auth.audience = self.jwt_audience.clone();
            auth.permissions_claim = self.jwt_permissions_claim.clone();
            auth.refresh_interval = std::time::Duration::from_secs(self.jwks_refresh_secs.max(1));
            auth
        });
        Ok(crate::Admission {
            auth,
            rate_limits: chronicle_frontend::RateLimitConfig {
                frontend_rps: self.frontend_rps,
                namespace_rps: self.namespace_rps,
                burst_ratio: self.rps_burst_ratio,
                namespace_concurrent: self.namespace_max_long_polls,
            },
            matching_limits: chronicle_matching::MatchingLimits {
                max_backlog_per_queue: positive(self.max_task_backlog, "max-task-backlog")?,
                max_pollers_per_queue: positive(
                    self.max_pollers_per_queue,
                    "max-pollers-per-queue",
                )?,
                max_pending_queries: positive(self.max_pending_queries, "max-pending-queries")?,
                no_poller_threshold: chronicle_matching::metric_defs::NO_POLLER_THRESHOLD,
            },
            max_pending_proposals: positive(self.max_pending_proposals, "max-pending-proposals")?,
            min_namespace_retention: self.min_namespace_retention,
        })
    }
}

/// The dynamic config values Chronicle honours.
#[derive(Debug, Default, PartialEq)]
pub struct DynamicConfig {
    /// `limit.historyCount.*` and `limit.historySize.*`, for every namespace and by namespace.
    pub history_limits: chronicle_types::limits::HistoryLimitsConfig,
    /// `system.namespaceMinRetentionLocal`: the shortest namespace retention.
    pub min_namespace_retention: Option<std::time::Duration>,
    /// `frontend.WorkerCommandsEnabled`: namespaces advertise the `worker_commands` capability
    /// (server-pushed activity cancellation; Chronicle's default: on).
    pub worker_commands: Option<bool>,
    /// Keys accepted for compatibility with `temporal server start-dev` but not acted on.
    pub ignored: Vec<String>,
}

/// Parses `--dynamic-config-value KEY=VALUE` flags: a known key with a bad value is an error,
/// an unknown key is ignored (Temporal's dev server has hundreds of them).
pub fn parse_dynamic_config(values: &[String]) -> Result<DynamicConfig, String> {
    let mut config = DynamicConfig::default();
    for spec in values {
        let (key, value) = spec
            .split_once('=')
            .ok_or_else(|| format!("dynamic config value {spec:?} is not KEY=VALUE"))?;
        use chronicle_types::limits::HistoryLimits;
        let limit: Option<fn(&mut HistoryLimits) -> &mut i64> = match key {
            "limit.historyCount.suggestContinueAsNew" => Some(|l| &mut l.suggest_events),
            "limit.historySize.suggestContinueAsNew" => Some(|l| &mut l.suggest_bytes),
            "limit.historyCount.error" => Some(|l| &mut l.max_events),
            "limit.historySize.error" => Some(|l| &mut l.max_bytes),
            _ => None,
        };
        if let Some(field) = limit {
            set_history_limit(&mut config.history_limits, key, value, field)?;
            continue;
        }
        match key {
            "system.namespaceMinRetentionLocal" => {
                config.min_namespace_retention =
                    Some(parse_go_duration(value).map_err(|e| format!("{key}: {e}"))?)
            }
            "frontend.WorkerCommandsEnabled" => {
                config.worker_commands = Some(
                    value
                        .trim()
                        .trim_matches('"')
                        .parse::<bool>()
                        .map_err(|_| format!("{key} needs true or false, not {value:?}"))?,
                )
            }
            _ => config.ignored.push(key.to_string()),
        }
    }
    Ok(config)
}

/// Sets one history limit from a dynamic config value: a positive integer for every namespace,
/// or Temporal's constrained form, a JSON list of `{"value": N}` (every namespace) and
/// `{"value": N, "constraints": {"namespace": "NAME"}}` entries.
fn set_history_limit(
    limits: &mut chronicle_types::limits::HistoryLimitsConfig,
    key: &str,
    value: &str,
    field: fn(&mut chronicle_types::limits::HistoryLimits) -> &mut i64,
) -> Result<(), String> {
    let bad = || {
        format!(
            "{key} needs a positive integer, or a JSON list of {{\"value\": N, \"constraints\": \
             {{\"namespace\": \"NAME\"}}}}, not {value:?}"
        )
    };
    let positive = |v: &serde_json::Value| v.as_i64().filter(|n| *n > 0);
    let plain = value.trim().trim_matches('"');
    if let Ok(n) = plain.parse::<i64>() {
        *field(&mut limits.all) = Some(n).filter(|n| *n > 0).ok_or_else(bad)?;
        return Ok(());
    }
    let entries: Vec<serde_json::Value> = serde_json::from_str(value.trim()).map_err(|_| bad())?;
    for entry in entries {
        let n = entry.get("value").and_then(positive).ok_or_else(bad)?;
        match entry.get("constraints") {
            None => *field(&mut limits.all) = n,
            Some(constraints) => {
                let object = constraints.as_object().ok_or_else(bad)?;
                // Only namespace constraints mean anything to Chronicle's history limits.
                if object.keys().any(|k| k != "namespace") {
                    return Err(format!(
                        "{key}: only the \"namespace\" constraint is supported, not {constraints}"
                    ));
                }
                let namespace = object
                    .get("namespace")
                    .and_then(|n| n.as_str())
                    .filter(|n| !n.is_empty())
                    .ok_or_else(bad)?;
                *field(limits.namespaces.entry(namespace.to_string()).or_default()) = n;
            }
        }
    }
    Ok(())
}

/// Parses `KEY=TYPE` into a search attribute name and Temporal's IndexedValueType.
pub fn parse_search_attribute(spec: &str) -> Result<(String, i32), String> {
    use chronicle_proto::temporal::api::enums::v1::IndexedValueType as T;
    let (key, kind) = spec
        .split_once('=')
        .ok_or_else(|| format!("search attribute {spec:?} is not KEY=TYPE"))?;
    let kind = match kind.to_ascii_lowercase().as_str() {
        "text" => T::Text,
        "keyword" => T::Keyword,
        "int" => T::Int,
        "double" => T::Double,
        "bool" => T::Bool,
        "datetime" => T::Datetime,
        "keywordlist" => T::KeywordList,
        other => return Err(format!("unknown search attribute type {other:?}")),
    };
    if key.is_empty() {
        return Err("search attribute name is empty".into());
    }
    Ok((key.to_string(), kind as i32))
}

pub fn default_data_dir() -> PathBuf {
    dirs::data_local_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("chronicle")
        .join("start-dev")
}

#[cfg(test)]
mod dynamic_config_tests {
    use super::*;

    #[test]
    fn known_keys_are_parsed_and_others_ignored() {
        let parsed = parse_dynamic_config(&[
            "limit.historyCount.suggestContinueAsNew=50".into(),
            "limit.historySize.suggestContinueAsNew=\"1000\"".into(),
            "system.enableEagerWorkflowStart=true".into(),
        ])
        .expect("parses");
        assert_eq!(parsed.history_limits.all.suggest_events, 50);
        assert_eq!(parsed.history_limits.all.suggest_bytes, 1000);
        assert_eq!(parsed.ignored, vec!["system.enableEagerWorkflowStart"]);
        assert!(
            parse_dynamic_config(&["limit.historyCount.suggestContinueAsNew=-1".into()]).is_err()
        );
        assert!(parse_dynamic_config(&["no-equals-sign".into()]).is_err());
    }

    #[test]
    fn history_limits_apply_to_every_namespace_or_to_the_named_ones() {
        let parsed = parse_dynamic_config(&[
            "limit.historyCount.error=20000".into(),
            r#"limit.historyCount.error=[{"value": 300, "constraints": {"namespace": "small"}}]"#
                .into(),
            r#"limit.historySize.error=[{"value": 1000000}, {"value": 5000, "constraints": {"namespace": "small"}}]"#
                .into(),
            r#"limit.historyCount.suggestContinueAsNew=[{"value": 100, "constraints": {"namespace": "other"}}]"#
                .into(),
        ])
        .expect("parses");
        let limits = &parsed.history_limits;
        let small = limits.for_namespace("small");
        assert_eq!(
            (small.max_events, small.max_bytes, small.suggest_events),
            (300, 5000, 0)
        );
        let other = limits.for_namespace("other");
        assert_eq!(
            (other.max_events, other.max_bytes, other.suggest_events),
            (20000, 1000000, 100)
        );
        let default = limits.for_namespace("default");
        assert_eq!(
            (
                default.max_events,
                default.max_bytes,
                default.suggest_events
            ),
            (20000, 1000000, 0)
        );
        for bad in [
            "limit.historyCount.error=0",
            "limit.historyCount.error=lots",
            r#"limit.historyCount.error=[{"value": -1}]"#,
            r#"limit.historyCount.error=[{"value": 5, "constraints": {"taskQueueName": "q"}}]"#,
            r#"limit.historyCount.error=[{"value": 5, "constraints": {"namespace": ""}}]"#,
            r#"limit.historyCount.error={"value": 5}"#,
        ] {
            assert!(
                parse_dynamic_config(&[bad.into()]).is_err(),
                "{bad} should be refused"
            );
        }
    }

    #[test]
    fn minimum_retention_takes_go_durations() {
        let parsed =
            parse_dynamic_config(&["system.namespaceMinRetentionLocal=\"1s\"".into()]).unwrap();
        assert_eq!(
            parsed.min_namespace_retention,
            Some(std::time::Duration::from_secs(1))
        );
        let ms = |text| parse_go_duration(text).map(|d| d.as_millis());
        assert_eq!(ms("1h30m"), Ok(5_400_000));
        assert_eq!(ms("500ms"), Ok(500));
        assert_eq!(ms("2d"), Ok(172_800_000));
        assert!(ms("").is_err() && ms("5").is_err() && ms("1x").is_err() && ms("h").is_err());
        assert!(parse_dynamic_config(&["system.namespaceMinRetentionLocal=soon".into()]).is_err());
        let parsed =
            parse_dynamic_config(&["frontend.WorkerCommandsEnabled=false".into()]).unwrap();
        assert_eq!(parsed.worker_commands, Some(false));
        assert!(parse_dynamic_config(&["frontend.WorkerCommandsEnabled=maybe".into()]).is_err());
    }
}
