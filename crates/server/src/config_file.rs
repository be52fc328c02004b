//! The TOML configuration of `chronicle server start --config FILE`.
//!
//! Layers, lowest first: built-in defaults, the file, `CHRONICLE_*` environment variables,
//! flags. clap already applies the last two over the defaults and records where each value came
//! from, so the file fills exactly the settings whose value is still a default (or unset).
//!
//! Keys are the long flags' names in snake_case. An unknown key or a value of the wrong type is
//! an error naming it: a typo in a cluster's configuration must stop the node, not be ignored.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::ArgMatches;
use clap::parser::ValueSource;
use serde::Deserialize;

use crate::cli::Start;

/// A string or a list of strings (`role = "history"` or `role = ["history", "matching"]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn joined(self) -> String {
        match self {
            OneOrMany::One(s) => s,
            OneOrMany::Many(list) => list.join(","),
        }
    }
}

#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub role: Option<OneOrMany>,
    pub frontend_addr: Option<String>,
    pub internal_addr: Option<String>,
    pub history_addr: Option<OneOrMany>,
    pub replicated: Option<bool>,
    pub dead_node_timeout: Option<String>,
    pub advertise_addr: Option<String>,
    pub matching_addr: Option<OneOrMany>,
    pub task_queue_partitions: Option<u32>,
    /// `--dynamic-config-value` flags, each `KEY=VALUE`.
    pub dynamic_config_values: Option<Vec<String>>,
    pub data_dir: Option<PathBuf>,
    pub num_shards: Option<u32>,
    pub namespaces: Option<Vec<String>>,
    pub metrics_port: Option<u16>,
    pub log_level: Option<String>,
    pub log_format: Option<String>,
    pub no_fsync: Option<bool>,
    pub internode_tls_cert: Option<PathBuf>,
    pub internode_tls_key: Option<PathBuf>,
    pub internode_tls_ca: Option<PathBuf>,
    pub internode_tls_server_name: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_client_ca: Option<PathBuf>,
    // Authorization, rate limits and queue bounds (`AdmissionArgs`).
    pub jwks: Option<String>,
    pub jwt_audience: Option<String>,
    pub jwt_permissions_claim: Option<String>,
    pub jwks_refresh_secs: Option<u64>,
    pub frontend_rps: Option<f64>,
    pub namespace_rps: Option<f64>,
    pub rps_burst_ratio: Option<f64>,
    pub namespace_max_long_polls: Option<usize>,
    pub max_task_backlog: Option<usize>,
    pub max_pollers_per_queue: Option<usize>,
    pub max_pending_queries: Option<usize>,
    pub max_pending_proposals: Option<usize>,
    pub min_namespace_retention: Option<String>,
}

impl ConfigFile {
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let file: ConfigFile = toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        if let Some(n) = file.num_shards {
            anyhow::ensure!(
                (1..=4096).contains(&n),
                "num_shards must be between 1 and 4096, not {n}"
            );
        }
        if let Some(timeout) = &file.dead_node_timeout {
            crate::cli::parse_go_duration(timeout)
                .map_err(|e| anyhow::anyhow!("dead_node_timeout: {e}"))?;
        }
        if let Some(retention) = &file.min_namespace_retention {
            crate::cli::parse_go_duration(retention)
                .map_err(|e| anyhow::anyhow!("min_namespace_retention: {e}"))?;
        }
        Ok(file)
    }

    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the configuration {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in {}", path.display()))
    }
}

/// Whether `id` still holds its default: neither a flag nor an environment variable set it.
fn unset(matches: &ArgMatches, id: &str) -> bool {
    !matches!(
        matches.value_source(id),
        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
    )
}

/// Fills the settings of `args` that flags and the environment left at their defaults from
/// `file`. `matches` are the `server start` subcommand's.
pub fn apply(args: &mut Start, file: ConfigFile, matches: &ArgMatches) {
    macro_rules! fill {
        ($field:ident) => {
            if let Some(value) = file.$field {
                if unset(matches, stringify!($field)) {
                    args.$field = value;
                }
            }
        };
        ($field:ident, some) => {
            if let Some(value) = file.$field {
                if unset(matches, stringify!($field)) {
                    args.$field = Some(value);
                }
            }
        };
    }
    if let Some(role) = file.role
        && unset(matches, "role")
    {
        args.role = role.joined();
    }
    if let Some(history) = file.history_addr
        && unset(matches, "history_addr")
    {
        args.history_addr = Some(history.joined());
    }
    if let Some(matching) = file.matching_addr
        && unset(matches, "matching_addr")
    {
        args.matching_addr = Some(matching.joined());
    }
    fill!(frontend_addr);
    fill!(internal_addr);
    fill!(replicated);
    fill!(advertise_addr, some);
    fill!(task_queue_partitions, some);
    fill!(dynamic_config_values);
    fill!(data_dir, some);
    fill!(num_shards, some);
    fill!(namespaces);
    fill!(metrics_port, some);
    fill!(log_level);
    fill!(log_format);
    fill!(no_fsync);
    // The TLS settings live in flattened groups; their argument IDs are still the field names.
    macro_rules! fill_in {
        ($group:ident . $field:ident) => {
            if let Some(value) = file.$field {
                if unset(matches, stringify!($field)) {
                    args.$group.$field = Some(value);
                }
            }
        };
    }
    fill_in!(internode.internode_tls_cert);
    fill_in!(internode.internode_tls_key);
    fill_in!(internode.internode_tls_ca);
    fill_in!(internode.internode_tls_server_name);
    fill_in!(frontend_tls.tls_cert);
    fill_in!(frontend_tls.tls_key);
    fill_in!(frontend_tls.tls_client_ca);
    fill_in!(admission.jwks);
    fill_in!(admission.jwt_audience);
    macro_rules! fill_admission {
        ($field:ident) => {
            if let Some(value) = file.$field {
                if unset(matches, stringify!($field)) {
                    args.admission.$field = value;
                }
            }
        };
    }
    fill_admission!(jwt_permissions_claim);
    fill_admission!(jwks_refresh_secs);
    fill_admission!(frontend_rps);
    fill_admission!(namespace_rps);
    fill_admission!(rps_burst_ratio);
    fill_admission!(namespace_max_long_polls);
    fill_admission!(max_task_backlog);
    fill_admission!(max_pollers_per_queue);
    fill_admission!(max_pending_queries);
    fill_admission!(max_pending_proposals);
    if let Some(timeout) = file.dead_node_timeout
        && unset(matches, "dead_node_timeout")
        && let Ok(value) = crate::cli::parse_go_duration(&timeout)
    {
        args.dead_node_timeout = value;
    }
    if let Some(retention) = file.min_namespace_retention
        && unset(matches, "min_namespace_retention")
        && let Ok(value) = crate::cli::parse_go_duration(&retention)
    {
        args.admission.min_namespace_retention = value;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command, ServerCommand};
    use clap::{CommandFactory, FromArgMatches};

    /// Parses `chronicle server start ARGS`, then applies `toml`.
    fn start_with(argv: &[&str], toml: &str) -> Start {
        let mut full = vec!["chronicle", "server", "start"];
        full.extend_from_slice(argv);
        let matches = Cli::command().try_get_matches_from(full).unwrap();
        let cli = Cli::from_arg_matches(&matches).unwrap();
        let Command::Server(ServerCommand::Start(mut start)) = cli.command else {
            panic!("not start")
        };
        let sub = matches
            .subcommand_matches("server")
            .and_then(|m| m.subcommand_matches("start"))
            .unwrap();
        apply(&mut start, ConfigFile::parse(toml).unwrap(), sub);
        start
    }

    #[test]
    fn the_file_fills_defaults_and_flags_override_it() {
        let toml = r#"
            role = ["history", "matching"]
            internal_addr = "10.0.0.5:7234"
            history_addr = ["10.0.0.5:7234", "10.0.0.6:7234"]
            replicated = true
            num_shards = 64
            namespaces = ["orders"]
            log_format = "json"
            internode_tls_ca = "/etc/chronicle/ca.pem"
            dynamic_config_values = [
                'limit.historyCount.error=[{"value": 1000, "constraints": {"namespace": "orders"}}]',
            ]
        "#;
        let start = start_with(&["--internal-addr", "10.0.0.9:7234"], toml);
        assert_eq!(start.role, "history,matching");
        assert_eq!(start.internal_addr, "10.0.0.9:7234", "the flag wins");
        assert_eq!(
            start.history_addr.as_deref(),
            Some("10.0.0.5:7234,10.0.0.6:7234")
        );
        assert!(start.replicated);
        assert_eq!(start.num_shards, Some(64));
        assert_eq!(start.namespaces, vec!["orders"]);
        let dynamic = crate::cli::parse_dynamic_config(&start.dynamic_config_values).unwrap();
        assert_eq!(
            dynamic.history_limits.for_namespace("orders").max_events,
            1000
        );
        assert_eq!(
            dynamic.history_limits.for_namespace("default").max_events,
            0
        );
        assert_eq!(start.log_format, "json");
        assert_eq!(start.log_level, "info", "untouched default");
        assert_eq!(
            start.internode.internode_tls_ca.as_deref(),
            Some(std::path::Path::new("/etc/chronicle/ca.pem"))
        );
    }

    #[test]
    fn the_file_sets_authorization_and_limits() {
        let toml = r#"
            jwks = "https://idp.example/.well-known/jwks.json"
            jwt_audience = "chronicle"
            jwks_refresh_secs = 300
            namespace_rps = 50.0
            max_pending_proposals = 2000
            min_namespace_retention = "1d"
        "#;
        let start = start_with(&["--namespace-rps", "80"], toml);
        let admission = &start.admission;
        assert_eq!(
            admission.jwks.as_deref(),
            Some("https://idp.example/.well-known/jwks.json")
        );
        assert_eq!(admission.jwt_audience.as_deref(), Some("chronicle"));
        assert_eq!(admission.jwks_refresh_secs, 300);
        assert_eq!(admission.namespace_rps, 80.0, "the flag wins");
        assert_eq!(admission.max_pending_proposals, 2000);
        assert_eq!(
            admission.min_namespace_retention,
            std::time::Duration::from_secs(86_400)
        );
        assert_eq!(admission.jwt_permissions_claim, "permissions", "default");
        let built = admission.to_admission().expect("valid");
        let auth = built.auth.expect("authorization on");
        assert_eq!(
            auth.jwks,
            chronicle_frontend::JwksSource::Url("https://idp.example/.well-known/jwks.json".into())
        );
        let err = ConfigFile::parse("min_namespace_retention = \"soon\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("min_namespace_retention"), "{err}");
    }

    #[test]
    fn the_dead_node_timeout_comes_from_the_file_unless_a_flag_sets_it() {
        let five_minutes = start_with(&[], "");
        assert_eq!(
            five_minutes.dead_node_timeout,
            std::time::Duration::from_secs(300),
            "default"
        );
        let file = start_with(&[], "dead_node_timeout = \"10m\"");
        assert_eq!(file.dead_node_timeout, std::time::Duration::from_secs(600));
        let flag = start_with(
            &["--dead-node-timeout", "30s"],
            "dead_node_timeout = \"10m\"",
        );
        assert_eq!(flag.dead_node_timeout, std::time::Duration::from_secs(30));
        let err = ConfigFile::parse("dead_node_timeout = \"later\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("dead_node_timeout"), "{err}");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_by_name() {
        let err = ConfigFile::parse("frontend_adr = \"x\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("frontend_adr"), "{err}");
        let err = ConfigFile::parse("num_shards = \"many\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("num_shards"), "{err}");
        let err = ConfigFile::parse("num_shards = 0").unwrap_err().to_string();
        assert!(err.contains("between 1 and 4096"), "{err}");
    }

    #[test]
    fn the_example_in_deploy_parses() {
        let text = include_str!("../../../deploy/chronicle.toml");
        ConfigFile::parse(text).expect("deploy/chronicle.toml parses");
    }
}
