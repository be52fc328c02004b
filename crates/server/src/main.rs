use std::net::ToSocketAddrs;

use anyhow::Context;
use chronicle_server::cli::{
    Cli, ClusterAddNode, ClusterCommand, ClusterDescribe, ClusterDrain, ClusterInit,
    ClusterReplaceNode, Command, ServerCommand, Start, StartDev, StartLocalCluster,
    default_data_dir, parse_dynamic_config, parse_search_attribute,
};
use chronicle_server::config_file::{self, ConfigFile};
use chronicle_server::local_cluster::{LocalClusterOptions, run_local_cluster};
use chronicle_server::{Listeners, NodeConfig, NodeListeners, Roles, ServerConfig, run, run_node};
use clap::{CommandFactory, FromArgMatches};

// Under load glibc's malloc took a third of a cluster frontend's CPU (gRPC buffers and protobuf
// messages allocated on one worker thread and freed on another) and a tenth of a history
// node's. jemalloc's per-thread caches and arenas cost a few percent for the same work
// (docs/benchmarks.md, "Allocator").
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> anyhow::Result<()> {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match cli.command {
        Command::Server(ServerCommand::StartDev(args)) => start_dev(args),
        Command::Server(ServerCommand::Start(mut args)) => {
            if let Some(path) = args.config.clone() {
                let file = match ConfigFile::load(&path) {
                    Ok(file) => file,
                    Err(e) => {
                        eprintln!("chronicle: {e:#}");
                        std::process::exit(2);
                    }
                };
                let sub = matches
                    .subcommand_matches("server")
                    .and_then(|m| m.subcommand_matches("start"))
                    .expect("the start subcommand matched");
                config_file::apply(&mut args, file, sub);
            }
            start(args)
        }
        Command::Server(ServerCommand::StartLocalCluster(args)) => start_local_cluster(args),
        Command::Cluster(ClusterCommand::Init(args)) => cluster_init(args),
        Command::Cluster(ClusterCommand::Describe(args)) => cluster_describe(args),
        Command::Cluster(ClusterCommand::ReplaceNode(args)) => cluster_replace_node(args),
        Command::Cluster(ClusterCommand::AddNode(args)) => cluster_add_node(args),
        Command::Cluster(ClusterCommand::Drain(args)) => cluster_drain(args),
    }
}

fn cluster_add_node(args: ClusterAddNode) -> anyhow::Result<()> {
    init_logging("warn", "text", "cli");
    internode_tls(&args.internode);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match runtime.block_on(chronicle_server::placement_driver::add_node(
        &args.nodes,
        &args.add,
    )) {
        Ok(id) => {
            println!(
                "node {id} at {} added: the placement driver moves its replicas to it \
                 (`chronicle cluster describe` shows them)",
                args.add
            );
            Ok(())
        }
        Err(e) => {
            eprintln!("chronicle: {e:#}");
            std::process::exit(1);
        }
    }
}

fn cluster_drain(args: ClusterDrain) -> anyhow::Result<()> {
    init_logging("warn", "text", "cli");
    internode_tls(&args.internode);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let wait = (args.wait_secs > 0).then(|| std::time::Duration::from_secs(args.wait_secs));
    match runtime.block_on(chronicle_server::placement_driver::drain(
        &args.nodes,
        args.node,
        wait,
        |line| println!("{line}"),
    )) {
        Ok(()) => Ok(()),
        Err(e) => {
            eprintln!("chronicle: {e:#}");
            std::process::exit(1);
        }
    }
}

fn cluster_replace_node(args: ClusterReplaceNode) -> anyhow::Result<()> {
    init_logging("warn", "text", "cli");
    internode_tls(&args.internode);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match runtime.block_on(chronicle_server::admin::replace_node(
        &args.nodes,
        &args.add,
        args.remove,
        |line| println!("{line}"),
    )) {
        Ok(changed) => {
            println!(
                "node {} replaced by {} ({changed} groups changed)",
                args.remove, args.add
            );
            Ok(())
        }
        Err(e) => {
            eprintln!("chronicle: {e:#}");
            std::process::exit(1);
        }
    }
}

/// Sets this process' node-to-node TLS from the flags (plaintext when none is given).
fn internode_tls(args: &chronicle_server::cli::InternodeTlsArgs) {
    let loaded = chronicle_types::tls::InternodeTls::load(&args.files())
        .and_then(chronicle_types::tls::set_internode);
    if let Err(e) = loaded {
        eprintln!("chronicle: {e}");
        std::process::exit(2);
    }
}

fn start_local_cluster(args: StartLocalCluster) -> anyhow::Result<()> {
    internode_tls(&args.internode);
    init_logging("warn", &args.log_format, "local-cluster");
    let options = LocalClusterOptions {
        history: args.history,
        matching: args.matching,
        frontend: args.frontend,
        data_dir: std::path::absolute(&args.data_dir)?,
        port: args.port,
        num_shards: args.num_shards,
        restart: args.restart,
        log_level: args.log_level,
        log_format: args.log_format,
        namespaces: args.namespaces,
        no_fsync: args.no_fsync,
        min_namespace_retention: args.min_namespace_retention,
        dead_node_timeout: args.dead_node_timeout,
        dynamic_config_values: args.dynamic_config_values,
        internode_tls: args.internode.files(),
        frontend_tls: args.frontend_tls.files(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if let Err(e) = runtime.block_on(run_local_cluster(options, shutdown_signal())) {
        eprintln!("chronicle: {e:#}");
        std::process::exit(1);
    }
    Ok(())
}

fn cluster_describe(args: ClusterDescribe) -> anyhow::Result<()> {
    internode_tls(&args.internode);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let reports = runtime.block_on(chronicle_server::describe::describe_cluster(
        &args.nodes,
        args.digests,
    ));
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&chronicle_server::describe::render_json(&reports))?
        );
    } else {
        print!("{}", chronicle_server::describe::render_text(&reports));
    }
    if reports.iter().all(|r| r.info.is_err()) {
        std::process::exit(1);
    }
    Ok(())
}

fn cluster_init(args: ClusterInit) -> anyhow::Result<()> {
    init_logging("info", "text", "cli");
    internode_tls(&args.internode);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Idempotent: a founded cluster is left as it is (a node back on an empty data directory
    // takes its lost predecessor's place), so an init Job may run again on every upgrade.
    let founded = runtime.block_on(async {
        if !chronicle_server::admin::cluster_founded(&args.nodes, args.num_shards).await? {
            return Ok::<_, anyhow::Error>(false);
        }
        chronicle_server::admin::rejoin_fresh_nodes(&args.nodes, |line| println!("{line}")).await?;
        Ok(true)
    });
    match founded {
        Ok(true) => {
            println!("cluster already initialised: nothing to do");
            return Ok(());
        }
        Ok(false) => {}
        Err(e) => {
            eprintln!("chronicle: {e:#}");
            std::process::exit(1);
        }
    }
    match runtime.block_on(chronicle_server::admin::init_cluster(
        &args.nodes,
        args.num_shards,
    )) {
        Ok((cluster_id, members)) => {
            println!("cluster {cluster_id}");
            for m in members {
                println!("node {} at {}", m.node_id, m.raft_addr);
            }
            println!(
                "cluster initialised: {} shards and the metadata group",
                args.num_shards
            );
            Ok(())
        }
        Err(e) => {
            eprintln!("chronicle: {e:#}");
            std::process::exit(1);
        }
    }
}

fn init_logging(log_level: &str, log_format: &str, node: &str) {
    chronicle_server::logging::init(log_level, log_format, node);
}

fn start_dev(args: StartDev) -> anyhow::Result<()> {
    init_logging(
        &args.log_level,
        &args.log_format,
        &format!("dev@{}:{}", args.ip, args.port),
    );
    let search_attributes = args
        .search_attributes
        .iter()
        .map(|s| parse_search_attribute(s).map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let dynamic = parse_dynamic_config(&args.dynamic_config_values).map_err(anyhow::Error::msg)?;
    if !dynamic.ignored.is_empty() {
        tracing::info!(keys = ?dynamic.ignored, "dynamic config values Chronicle does not use are ignored");
    }
    let ephemeral = if args.ephemeral {
        Some(tempfile::Builder::new().prefix("chronicle-").tempdir()?)
    } else {
        None
    };
    let data_dir = match (&ephemeral, &args.data_dir) {
        (Some(tmp), _) => tmp.path().to_path_buf(),
        (None, Some(dir)) => dir.clone(),
        (None, None) => default_data_dir(),
    };
    let mut config = ServerConfig::new(data_dir);
    config.num_shards = args.num_shards;
    config.sync_writes = !args.no_fsync;
    config.eager_activities = !args.no_eager_activities;
    config.history_limits = dynamic.history_limits.clone();
    config.worker_commands = dynamic.worker_commands.unwrap_or(true);
    if args.no_fsync {
        tracing::warn!("--no-fsync: writes are acknowledged before they reach the disk");
    }
    config.namespaces = args.namespaces.clone();
    config.search_attributes = search_attributes;
    config.admission = args.admission.to_admission().map_err(anyhow::Error::msg)?;
    if let Some(minimum) = dynamic.min_namespace_retention {
        config.admission.min_namespace_retention = minimum;
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(async move {
        let addr = (args.ip.as_str(), args.port)
            .to_socket_addrs()
            .with_context(|| format!("resolving {}", args.ip))?
            .next()
            .context("no address to bind")?;
        let grpc = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let metrics = match args.metrics_port {
            Some(port) => {
                let metrics_addr = std::net::SocketAddr::new(addr.ip(), port);
                Some(
                    tokio::net::TcpListener::bind(metrics_addr)
                        .await
                        .with_context(|| format!("binding the metrics port {metrics_addr}"))?,
                )
            }
            None => None,
        };
        run(Listeners { grpc, metrics }, config, shutdown_signal()).await
    });
    drop(ephemeral);
    if let Err(e) = &result {
        eprintln!("chronicle: {e:#}");
        std::process::exit(1);
    }
    Ok(())
}

/// `chronicle server start`: a node with the roles given.
fn start(args: Start) -> anyhow::Result<()> {
    let node_name = args.node_name.clone().unwrap_or_else(|| {
        let addr = args.advertise_addr.as_deref().unwrap_or(
            if args.role.contains("history") || args.role.contains("matching") {
                &args.internal_addr
            } else {
                &args.frontend_addr
            },
        );
        format!("{}@{addr}", args.role.replace(' ', ""))
    });
    init_logging(&args.log_level, &args.log_format, &node_name);
    internode_tls(&args.internode);
    let roles = Roles::parse(&args.role)?;
    let mut config = NodeConfig::new(
        roles,
        args.data_dir.clone().unwrap_or_else(default_data_dir),
    );
    config.num_shards = args.num_shards;
    config.history_addr = args.history_addr.clone();
    config.matching_addr = args.matching_addr.clone();
    config.task_queue_partitions = args.task_queue_partitions;
    config.namespaces = args.namespaces.clone();
    config.sync_writes = !args.no_fsync;
    config.replicated = args.replicated;
    config.dead_node_timeout = args.dead_node_timeout;
    config.advertise_addr = args.advertise_addr.clone();
    config.frontend_tls = args.frontend_tls.files();
    config.admission = args.admission.to_admission().map_err(anyhow::Error::msg)?;
    let dynamic = parse_dynamic_config(&args.dynamic_config_values).map_err(anyhow::Error::msg)?;
    if !dynamic.ignored.is_empty() {
        tracing::info!(keys = ?dynamic.ignored, "dynamic config values Chronicle does not use are ignored");
    }
    config.history_limits = dynamic.history_limits;
    if args.no_fsync {
        tracing::warn!("--no-fsync: writes are acknowledged before they reach the disk");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(async move {
        let frontend = if roles.frontend {
            Some(bind(&args.frontend_addr).await?)
        } else {
            None
        };
        let internal = if roles.history || roles.matching {
            Some(bind(&args.internal_addr).await?)
        } else {
            None
        };
        let metrics = match args.metrics_port {
            Some(port) => {
                let ip = internal
                    .as_ref()
                    .or(frontend.as_ref())
                    .map(|l| l.local_addr())
                    .transpose()?
                    .map(|a| a.ip())
                    .unwrap_or(std::net::Ipv4Addr::LOCALHOST.into());
                let metrics_addr = std::net::SocketAddr::new(ip, port);
                Some(
                    tokio::net::TcpListener::bind(metrics_addr)
                        .await
                        .with_context(|| format!("binding the metrics port {metrics_addr}"))?,
                )
            }
            None => None,
        };
        run_node(
            NodeListeners {
                frontend,
                internal,
                metrics,
            },
            config,
            shutdown_signal(),
        )
        .await
    });
    if let Err(e) = &result {
        eprintln!("chronicle: {e:#}");
        std::process::exit(1);
    }
    Ok(())
}

async fn bind(addr: &str) -> anyhow::Result<tokio::net::TcpListener> {
    let resolved = addr
        .to_socket_addrs()
        .with_context(|| format!("resolving {addr}"))?
        .next()
        .with_context(|| format!("no address for {addr}"))?;
    tokio::net::TcpListener::bind(resolved)
        .await
        .with_context(|| format!("binding {resolved}"))
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutdown requested");
}
