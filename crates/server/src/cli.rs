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
    /// Found a replicated history cluster, once: every node started with `--replicated` and a
    /// fresh data directory becomes a voter of every shard group and of the metadata group.
    Init(ClusterInit),
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
    /// Matching nodes (one for now: task-queue partitions are not yet spread over several).
    #[arg(long, default_value_t = 1)]
    pub matching: usize,
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
    /// History shards of the cluster, fixed at first start.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub num_shards: u32,
    /// Start a child again when it dies.
    #[arg(long)]
    pub restart: bool,
    /// Namespaces to create at start (repeatable); `default` always exists.
    #[arg(short = 'n', long = "namespace")]
    pub namespaces: Vec<String>,
    /// Log level of every node (their logs are in DATA_DIR/logs).
    #[arg(long, default_value = "info")]
    pub log_level: String,
    /// Relaxed durability on the history nodes (see `start-dev --no-fsync`).
    #[arg(long)]
    pub no_fsync: bool,
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
    /// Address other nodes reach this node's internal API and Raft transport at [default: the
    /// bound internal address]. Must stay stable for the node's life.
    #[arg(long, env = "CHRONICLE_ADVERTISE_ADDR")]
    pub advertise_addr: Option<String>,
    /// Internal address of the matching node (when this node has no matching role).
    #[arg(long, env = "CHRONICLE_MATCHING_ADDR")]
    pub matching_addr: Option<String>,
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
    /// Relaxed durability: acknowledge writes before the Raft log is fsynced.
    #[arg(long, env = "CHRONICLE_NO_FSYNC")]
    pub no_fsync: bool,
    #[command(flatten)]
    pub internode: InternodeTlsArgs,
    #[command(flatten)]
    pub frontend_tls: FrontendTlsArgs,
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
    /// Chronicle honours `limit.historyCount.suggestContinueAsNew` and
    /// `limit.historySize.suggestContinueAsNew`; other keys are accepted and ignored (logged).
    #[arg(long = "dynamic-config-value")]
    pub dynamic_config_values: Vec<String>,
}

/// The dynamic config values Chronicle honours.
#[derive(Debug, Default, PartialEq)]
pub struct DynamicConfig {
    pub suggest_continue_as_new_events: Option<i64>,
    pub suggest_continue_as_new_bytes: Option<i64>,
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
        let positive = || {
            value
                .trim()
                .trim_matches('"')
                .parse::<i64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{key} needs a positive integer, not {value:?}"))
        };
        match key {
            "limit.historyCount.suggestContinueAsNew" => {
                config.suggest_continue_as_new_events = Some(positive()?)
            }
            "limit.historySize.suggestContinueAsNew" => {
                config.suggest_continue_as_new_bytes = Some(positive()?)
            }
            _ => config.ignored.push(key.to_string()),
        }
    }
    Ok(config)
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
        assert_eq!(parsed.suggest_continue_as_new_events, Some(50));
        assert_eq!(parsed.suggest_continue_as_new_bytes, Some(1000));
        assert_eq!(parsed.ignored, vec!["system.enableEagerWorkflowStart"]);
        assert!(
            parse_dynamic_config(&["limit.historyCount.suggestContinueAsNew=-1".into()]).is_err()
        );
        assert!(parse_dynamic_config(&["no-equals-sign".into()]).is_err());
    }
}
