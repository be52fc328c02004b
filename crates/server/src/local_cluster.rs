//! `chronicle server start-local-cluster`: a whole cluster on one machine, each node a real
//! child process of this binary (`chronicle server start --role ...`), for trying failover on a
//! laptop and for the tests.
//!
//! Every node gets its own loopback address (history `127.0.0.11`, `.12`, ...; matching
//! `127.0.0.21`, `.22`, ...; frontends `127.0.0.1`, `127.0.0.32`, `127.0.0.33`, ...), so all of them can use
//! the same port numbers, the way machines of a real cluster do, and a node's address says what
//! it is. The first frontend is on `127.0.0.1`, where SDKs and the CLI look by default.
//!
//! The layout (addresses, ports, shard count) is written to `DATA_DIR/local-cluster.json` on
//! the first start and reused afterwards: Raft memberships name the nodes' addresses, so a
//! restarted cluster must come back on the same ones. Children log to `DATA_DIR/logs/`.
//!
//! The supervisor does not restart a child that dies unless asked (`--restart`): losing a node
//! and watching the others carry on is the point.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::Context;
use chronicle_proto::temporal::api::workflowservice::v1::DescribeNamespaceRequest;
use chronicle_proto::temporal::api::workflowservice::v1::workflow_service_client::WorkflowServiceClient;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// What to run.
#[derive(Clone, Debug)]
pub struct LocalClusterOptions {
    pub history: usize,
    /// None: the count recorded in the data directory, or [`DEFAULT_MATCHING`] for a new one.
    pub matching: Option<usize>,
    pub frontend: usize,
    pub data_dir: PathBuf,
    /// Port of the public API on every frontend address; internal and metrics ports follow it
    /// (`port + 1`, `port + 2`). 0: free ports picked at first start.
    pub port: u16,
    /// None: the count recorded in the data directory, or [`DEFAULT_NUM_SHARDS`] for a new one.
    pub num_shards: Option<u32>,
    /// Start a child again when it dies (off by default).
    pub restart: bool,
    pub log_level: String,
    /// `text` or `json`, for every child.
    pub log_format: String,
    pub namespaces: Vec<String>,
    pub no_fsync: bool,
    /// `--min-namespace-retention` of every frontend (None: their default).
    pub min_namespace_retention: Option<String>,
    /// `--dead-node-timeout` of every history node (None: their default).
    pub dead_node_timeout: Option<String>,
    /// `--dynamic-config-value` flags given to every child.
    pub dynamic_config_values: Vec<String>,
    /// Node-to-node mutual TLS for every child (and this supervisor's own admin calls).
    pub internode_tls: chronicle_types::tls::TlsFiles,
    /// TLS on the frontends' public API.
    pub frontend_tls: chronicle_types::tls::TlsFiles,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Role {
    History,
    Matching,
    Frontend,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::History => "history",
            Role::Matching => "matching",
            Role::Frontend => "frontend",
        }
    }
}

/// One child process: where it listens, fixed for the life of the data directory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct NodeSpec {
    name: String,
    role: Role,
    /// The public Temporal API (frontends).
    frontend: Option<SocketAddr>,
    /// The internal API and Raft transport (history and matching).
    internal: Option<SocketAddr>,
    metrics: SocketAddr,
}

/// `DATA_DIR/local-cluster.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Layout {
    num_shards: u32,
    nodes: Vec<NodeSpec>,
}

impl Layout {
    fn of(&self, role: Role) -> impl Iterator<Item = &NodeSpec> {
        self.nodes.iter().filter(move |n| n.role == role)
    }

    fn internal_addrs(&self, role: Role) -> String {
        self.of(role)
            .filter_map(|n| n.internal.map(|a| a.to_string()))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn counts(&self) -> (usize, usize, usize) {
        (
            self.of(Role::History).count(),
            self.of(Role::Matching).count(),
            self.of(Role::Frontend).count(),
        )
    }
}

/// Matching nodes of a new local cluster.
pub const DEFAULT_MATCHING: usize = 2;

/// History shards of a new local cluster: one leader per history node of the default three.
/// On one machine every group's per-entry cost (an append, a commit notice and an apply on each
/// replica) is paid by the same cores, so fewer groups with larger entries serve more.
pub const DEFAULT_NUM_SHARDS: u32 = 3;

fn loopback(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// A port free on `ip` now (bound and released; nothing else on this machine races us for
/// the few milliseconds until the child binds it, except another such picker).
fn free_port(ip: IpAddr) -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind((ip, 0))
        .with_context(|| format!("binding {ip}: is the loopback range 127.0.0.0/8 usable here?"))?;
    Ok(listener.local_addr()?.port())
}

/// A port from `pick` that differs from every one in `picked` on `ip`, recorded there. A port
/// bound and released is free again at once, so the kernel may hand the same one to the next
/// pick on that address (seen: a frontend's public and metrics ports equal, and the node failed
/// to start).
fn distinct_port(
    picked: &mut HashSet<(IpAddr, u16)>,
    ip: IpAddr,
    mut pick: impl FnMut(IpAddr) -> anyhow::Result<u16>,
) -> anyhow::Result<u16> {
    for _ in 0..100 {
        let p = pick(ip)?;
        if picked.insert((ip, p)) {
            return Ok(p);
        }
    }
    anyhow::bail!("no free port left on {ip}")
}

fn plan(options: &LocalClusterOptions) -> anyhow::Result<Layout> {
    let mut picked = HashSet::new();
    let mut port = |ip: IpAddr, offset: u16| -> anyhow::Result<SocketAddr> {
        let p = if options.port == 0 {
            distinct_port(&mut picked, ip, free_port)?
        } else {
            options
                .port
                .checked_add(offset)
                .context("--port is too high")?
        };
        Ok(SocketAddr::new(ip, p))
    };
    let mut nodes = Vec::new();
    for i in 1..=options.history {
        let ip = loopback(10 + i as u8);
        nodes.push(NodeSpec {
            name: format!("history-{i}"),
            role: Role::History,
            frontend: None,
            internal: Some(port(ip, 1)?),
            metrics: port(ip, 2)?,
        });
    }
    for i in 1..=options.matching.unwrap_or(DEFAULT_MATCHING) {
        let ip = loopback(20 + i as u8);
        nodes.push(NodeSpec {
            name: format!("matching-{i}"),
            role: Role::Matching,
            frontend: None,
            internal: Some(port(ip, 1)?),
            metrics: port(ip, 2)?,
        });
    }
    for i in 1..=options.frontend {
        let ip = if i == 1 {
            loopback(1)
        } else {
            loopback(30 + i as u8)
        };
        nodes.push(NodeSpec {
            name: format!("frontend-{i}"),
            role: Role::Frontend,
            frontend: Some(port(ip, 0)?),
            internal: None,
            metrics: port(ip, 2)?,
        });
    }
    Ok(Layout {
        num_shards: options.num_shards.unwrap_or(DEFAULT_NUM_SHARDS),
        nodes,
    })
}

fn validate(options: &LocalClusterOptions) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=9).contains(&options.history),
        "--history must be between 1 and 9"
    );
    anyhow::ensure!(
        options.matching.is_none_or(|n| (1..=9).contains(&n)),
        "--matching must be between 1 and 9"
    );
    anyhow::ensure!(
        (1..=9).contains(&options.frontend),
        "--frontend must be between 1 and 9"
    );
    Ok(())
}

/// The layout of `data_dir`: the recorded one, which must match the counts asked for, or a
/// new one, recorded before any child starts.
fn load_or_plan(options: &LocalClusterOptions) -> anyhow::Result<Layout> {
    let path = options.data_dir.join("local-cluster.json");
    if path.exists() {
        let layout: Layout = serde_json::from_slice(&std::fs::read(&path)?)
            .with_context(|| format!("reading {}", path.display()))?;
        // An existing cluster keeps its matching nodes unless a count is asked for.
        let matching = options.matching.unwrap_or(layout.counts().1);
        let asked = (options.history, matching, options.frontend);
        anyhow::ensure!(
            layout.counts() == asked,
            "{} holds a cluster of {} history, {} matching and {} frontend nodes; start it with \
             those counts or use another --data-dir",
            options.data_dir.display(),
            layout.counts().0,
            layout.counts().1,
            layout.counts().2
        );
        let num_shards = options.num_shards.unwrap_or(layout.num_shards);
        anyhow::ensure!(
            layout.num_shards == num_shards,
            "{} holds a cluster of {} shards, not {}",
            options.data_dir.display(),
            layout.num_shards,
            num_shards
        );
        return Ok(layout);
    }
    let layout = plan(options)?;
    std::fs::create_dir_all(&options.data_dir)?;
    std::fs::write(&path, serde_json::to_vec_pretty(&layout)?)?;
    Ok(layout)
}

/// The arguments of `chronicle server start` for one node.
fn node_args(
    spec: &NodeSpec,
    layout: &Layout,
    options: &LocalClusterOptions,
) -> anyhow::Result<Vec<String>> {
    let mut args: Vec<String> = vec![
        "server".into(),
        "start".into(),
        "--role".into(),
        spec.role.name().into(),
        "--metrics-port".into(),
        spec.metrics.port().to_string(),
        "--log-level".into(),
        options.log_level.clone(),
        "--log-format".into(),
        options.log_format.clone(),
        // Its lines name it as the supervisor and its log file do.
        "--node-name".into(),
        spec.name.clone(),
    ];
    let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
    let internode = &options.internode_tls;
    for (flag, value) in [
        ("--internode-tls-cert", path(&internode.cert)),
        ("--internode-tls-key", path(&internode.key)),
        ("--internode-tls-ca", path(&internode.ca)),
        ("--internode-tls-server-name", internode.server_name.clone()),
    ] {
        if let Some(value) = value {
            args.extend([flag.to_string(), value]);
        }
    }
    for value in &options.dynamic_config_values {
        args.extend(["--dynamic-config-value".into(), value.clone()]);
    }
    if spec.role == Role::Frontend {
        if let Some(minimum) = &options.min_namespace_retention {
            args.extend(["--min-namespace-retention".into(), minimum.clone()]);
        }
        let public = &options.frontend_tls;
        for (flag, value) in [
            ("--tls-cert", path(&public.cert)),
            ("--tls-key", path(&public.key)),
            ("--tls-client-ca", path(&public.ca)),
        ] {
            if let Some(value) = value {
                args.extend([flag.to_string(), value]);
            }
        }
    }
    let histories = layout.internal_addrs(Role::History);
    let matching = layout.internal_addrs(Role::Matching);
    match spec.role {
        Role::History => {
            let data = options.data_dir.join(&spec.name);
            args.extend([
                "--internal-addr".into(),
                spec.internal
                    .context("history node without address")?
                    .to_string(),
                "--data-dir".into(),
                data.to_str().context("data directory is not UTF-8")?.into(),
                "--replicated".into(),
                "--num-shards".into(),
                layout.num_shards.to_string(),
                "--matching-addr".into(),
                matching,
            ]);
            for ns in &options.namespaces {
                args.extend(["--namespace".into(), ns.clone()]);
            }
            if options.no_fsync {
                args.push("--no-fsync".into());
            }
            if let Some(timeout) = &options.dead_node_timeout {
                args.extend(["--dead-node-timeout".into(), timeout.clone()]);
            }
        }
        // A matching node knows its peers: it forwards to the owners of root partitions.
        Role::Matching => args.extend([
            "--internal-addr".into(),
            spec.internal
                .context("matching node without address")?
                .to_string(),
            "--history-addr".into(),
            histories,
            "--matching-addr".into(),
            matching,
        ]),
        Role::Frontend => args.extend([
            "--frontend-addr".into(),
            spec.frontend
                .context("frontend without address")?
                .to_string(),
            "--history-addr".into(),
            histories,
            "--matching-addr".into(),
            matching,
        ]),
    }
    Ok(args)
}

fn spawn(spec: &NodeSpec, layout: &Layout, options: &LocalClusterOptions) -> anyhow::Result<Child> {
    let exe = std::env::current_exe().context("finding this binary")?;
    let logs = options.data_dir.join("logs");
    std::fs::create_dir_all(&logs)?;
    let log_path = logs.join(format!("{}.log", spec.name));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let mut command = Command::new(exe);
    command
        .args(node_args(spec, layout, options)?)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(false);
    // The child's settings come from its flags alone, not from variables set for the
    // supervisor (a CHRONICLE_ROLE in the shell would otherwise override its role's defaults).
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("CHRONICLE_") {
            command.env_remove(key);
        }
    }
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent. It makes the
    // kernel stop the child (SIGTERM) if the supervisor dies without stopping it, so no node
    // outlives a supervisor killed with SIGKILL.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command
        .spawn()
        .with_context(|| format!("starting {}", spec.name))
}

/// `GET /health/ready` on a node's metrics port answers 200.
async fn http_ready(addr: SocketAddr) -> bool {
    let probe = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(
                b"GET /health/ready HTTP/1.1\r\nHost: chronicle\r\nConnection: close\r\n\r\n",
            )
            .await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<bool, std::io::Error>(response.starts_with(b"HTTP/1.1 200"))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), probe).await,
        Ok(Ok(true))
    )
}

/// The frontend answers a namespace describe, which crosses to the history nodes.
async fn frontend_serves(addr: SocketAddr) -> bool {
    let probe = async {
        let mut client = WorkflowServiceClient::connect(format!("http://{addr}"))
            .await
            .ok()?;
        client
            .describe_namespace(DescribeNamespaceRequest {
                namespace: "default".into(),
                ..Default::default()
            })
            .await
            .ok()
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(5), probe).await,
        Ok(Some(_))
    )
}

/// Waits until `ready` holds, or fails when the child exits or the time is up.
async fn wait_until<F, Fut>(
    name: &str,
    child: &mut Child,
    timeout: Duration,
    mut ready: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("{name} exited at start-up ({status})");
        }
        if ready().await {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{name} was not ready within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn describe(spec: &NodeSpec, pid: Option<u32>, data_dir: &Path) -> String {
    let mut line = format!("{} pid={}", spec.name, pid.unwrap_or(0));
    if let Some(addr) = spec.frontend {
        line += &format!(" frontend={addr}");
    }
    if let Some(addr) = spec.internal {
        line += &format!(" internal={addr}");
    }
    line += &format!(" metrics={}", spec.metrics);
    line += &format!(
        " log={}",
        data_dir
            .join("logs")
            .join(format!("{}.log", spec.name))
            .display()
    );
    line
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn exit_reason(status: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("signal {signal}"),
        _ => status.to_string(),
    }
}

/// Runs the cluster until `shutdown` resolves, then stops every child (frontends first,
/// history last) and returns.
pub async fn run_local_cluster(
    options: LocalClusterOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    validate(&options)?;
    let layout = load_or_plan(&options)?;
    let mut children: BTreeMap<String, Child> = BTreeMap::new();
    let result = start_all(&layout, &options, &mut children).await;
    if let Err(e) = result {
        stop_all(&layout, &mut children).await;
        return Err(e);
    }
    let frontends: Vec<String> = layout
        .of(Role::Frontend)
        .filter_map(|n| n.frontend.map(|a| a.to_string()))
        .collect();
    say(&format!(
        "ready frontends={} history={} shards={} data={}",
        frontends.join(","),
        layout.of(Role::History).count(),
        layout.num_shards,
        options.data_dir.display()
    ));

    // One waiter per child reports its exit; a restarted child gets a new waiter.
    let (exited_tx, mut exited) = mpsc::unbounded_channel::<(String, u32, ExitStatus)>();
    let watch = |name: String, mut child: Child, tx: mpsc::UnboundedSender<_>| {
        let pid = child.id().unwrap_or(0);
        tokio::spawn(async move {
            if let Ok(status) = child.wait().await {
                let _ = tx.send((name, pid, status));
            }
        });
    };
    let mut pids: BTreeMap<String, u32> = BTreeMap::new();
    for (name, child) in std::mem::take(&mut children) {
        pids.insert(name.clone(), child.id().unwrap_or(0));
        watch(name, child, exited_tx.clone());
    }

    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some((name, pid, status)) = exited.recv() => {
                pids.remove(&name);
                if options.restart {
                    say(&format!("{name} (pid {pid}) exited ({}); restarting it", exit_reason(&status)));
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let spec = layout.nodes.iter().find(|n| n.name == name).context("unknown node")?;
                    match spawn(spec, &layout, &options) {
                        Ok(child) => {
                            say(&describe(spec, child.id(), &options.data_dir));
                            pids.insert(name.clone(), child.id().unwrap_or(0));
                            watch(name, child, exited_tx.clone());
                            if spec.role == Role::History {
                                // A history node whose data directory was wiped comes back as
                                // a new node: it takes its old place in every group.
                                let histories: Vec<String> = layout
                                    .of(Role::History)
                                    .filter_map(|n| n.internal.map(|a| a.to_string()))
                                    .collect();
                                tokio::spawn(async move {
                                    if let Err(e) = crate::admin::rejoin_fresh_nodes(&histories, say).await {
                                        say(&format!("rejoining a fresh node failed: {e:#}"));
                                    }
                                });
                            }
                        }
                        Err(e) => say(&format!("{name} could not be restarted: {e:#}")),
                    }
                } else {
                    say(&format!(
                        "{name} (pid {pid}) exited ({}); the other nodes keep serving, it is not restarted",
                        exit_reason(&status)
                    ));
                }
            }
        }
    }

    say("stopping the cluster");
    // Frontends first (clients see them go), history last (in-flight calls finish).
    for role in [Role::Frontend, Role::Matching, Role::History] {
        let names: Vec<String> = layout.of(role).map(|n| n.name.clone()).collect();
        for name in &names {
            if let Some(pid) = pids.get(name) {
                // SAFETY: sending a signal to our own child's pid.
                unsafe { libc::kill(*pid as i32, libc::SIGTERM) };
            }
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while names.iter().any(|n| pids.contains_key(n)) {
            match tokio::time::timeout_at(deadline, exited.recv()).await {
                Ok(Some((name, _, _))) => {
                    pids.remove(&name);
                }
                _ => {
                    for name in &names {
                        if let Some(pid) = pids.remove(name) {
                            say(&format!("{name} did not stop within 15 s; killing it"));
                            // SAFETY: as above.
                            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                        }
                    }
                }
            }
        }
    }
    say("stopped");
    Ok(())
}

async fn start_all(
    layout: &Layout,
    options: &LocalClusterOptions,
    children: &mut BTreeMap<String, Child>,
) -> anyhow::Result<()> {
    // History and matching first: they only find each other lazily.
    for spec in layout.of(Role::History).chain(layout.of(Role::Matching)) {
        let child = spawn(spec, layout, options)?;
        say(&describe(spec, child.id(), &options.data_dir));
        children.insert(spec.name.clone(), child);
    }
    let histories: Vec<String> = layout
        .of(Role::History)
        .filter_map(|n| n.internal.map(|a| a.to_string()))
        .collect();
    let founded = crate::admin::cluster_founded(&histories, layout.num_shards).await?;
    if !founded {
        crate::admin::init_cluster(&histories, layout.num_shards).await?;
        say(&format!(
            "cluster initialised: {} shards over {} history nodes",
            layout.num_shards,
            histories.len()
        ));
    } else {
        crate::admin::rejoin_fresh_nodes(&histories, say).await?;
    }
    for spec in layout.of(Role::History).chain(layout.of(Role::Matching)) {
        let child = children.get_mut(&spec.name).context("child missing")?;
        let metrics = spec.metrics;
        wait_until(&spec.name, child, Duration::from_secs(90), || {
            http_ready(metrics)
        })
        .await?;
    }
    for spec in layout.of(Role::Frontend) {
        let child = spawn(spec, layout, options)?;
        say(&describe(spec, child.id(), &options.data_dir));
        let child = children.entry(spec.name.clone()).or_insert(child);
        let addr = spec.frontend.context("frontend without address")?;
        let metrics = spec.metrics;
        // Behind TLS the supervisor (which holds no client certificate) asks the probe port.
        let tls = !options.frontend_tls.is_empty();
        wait_until(&spec.name, child, Duration::from_secs(90), || async move {
            if tls {
                http_ready(metrics).await
            } else {
                frontend_serves(addr).await
            }
        })
        .await?;
    }
    Ok(())
}

async fn stop_all(layout: &Layout, children: &mut BTreeMap<String, Child>) {
    for spec in layout.nodes.iter().rev() {
        if let Some(mut child) = children.remove(&spec.name) {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(port: u16) -> LocalClusterOptions {
        LocalClusterOptions {
            history: 3,
            matching: Some(1),
            frontend: 2,
            data_dir: PathBuf::from("/nonexistent"),
            port,
            num_shards: Some(4),
            restart: false,
            log_level: "info".into(),
            log_format: "text".into(),
            namespaces: vec![],
            no_fsync: false,
            min_namespace_retention: None,
            dead_node_timeout: None,
            dynamic_config_values: vec![],
            internode_tls: Default::default(),
            frontend_tls: Default::default(),
        }
    }

    #[test]
    fn fixed_ports_give_each_node_its_own_loopback_address() {
        let layout = plan(&options(7233)).unwrap();
        let addrs: Vec<String> = layout
            .nodes
            .iter()
            .map(|n| format!("{} {:?} {:?} {}", n.name, n.frontend, n.internal, n.metrics))
            .collect();
        assert_eq!(
            addrs,
            [
                "history-1 None Some(127.0.0.11:7234) 127.0.0.11:7235",
                "history-2 None Some(127.0.0.12:7234) 127.0.0.12:7235",
                "history-3 None Some(127.0.0.13:7234) 127.0.0.13:7235",
                "matching-1 None Some(127.0.0.21:7234) 127.0.0.21:7235",
                "frontend-1 Some(127.0.0.1:7233) None 127.0.0.1:7235",
                "frontend-2 Some(127.0.0.32:7233) None 127.0.0.32:7235",
            ]
        );
        assert_eq!(layout.internal_addrs(Role::History).split(',').count(), 3);
    }

    #[test]
    fn a_new_cluster_gets_the_default_shard_count_and_a_restart_keeps_the_recorded_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = options(7233);
        opts.data_dir = dir.path().to_path_buf();
        opts.num_shards = None;
        assert_eq!(load_or_plan(&opts).unwrap().num_shards, DEFAULT_NUM_SHARDS);

        // A directory founded with another count (the default was 8 before) starts again
        // without the flag, and refuses a different explicit count.
        let other = tempfile::tempdir().unwrap();
        opts.data_dir = other.path().to_path_buf();
        opts.num_shards = Some(8);
        assert_eq!(load_or_plan(&opts).unwrap().num_shards, 8);
        opts.num_shards = None;
        assert_eq!(load_or_plan(&opts).unwrap().num_shards, 8);
        opts.num_shards = Some(4);
        let err = load_or_plan(&opts).unwrap_err().to_string();
        assert!(err.contains("holds a cluster of 8 shards, not 4"), "{err}");
    }

    #[test]
    fn picked_ports_never_repeat_on_one_address() {
        let ip = loopback(1);
        let other = loopback(32);
        let mut picked = HashSet::new();
        // A picker that hands out the same port again, as the kernel may.
        let mut handed = [7000, 7000, 7000, 7001].into_iter();
        let mut kernel = |_: IpAddr| Ok(handed.next().unwrap_or(7002));
        assert_eq!(distinct_port(&mut picked, ip, &mut kernel).unwrap(), 7000);
        assert_eq!(distinct_port(&mut picked, ip, &mut kernel).unwrap(), 7001);
        // Another address may reuse a number.
        assert_eq!(
            distinct_port(&mut picked, other, |_| Ok(7000)).unwrap(),
            7000
        );
        let err = distinct_port(&mut picked, ip, |_| Ok(7000)).unwrap_err();
        assert!(err.to_string().contains("no free port left"), "{err}");
        // Free ports picked for a whole layout are distinct too.
        let layout = plan(&options(0)).unwrap();
        let mut seen = HashSet::new();
        for n in &layout.nodes {
            for a in [n.frontend, n.internal, Some(n.metrics)]
                .into_iter()
                .flatten()
            {
                assert!(seen.insert(a), "{a} picked twice");
            }
        }
    }

    #[test]
    fn history_args_name_every_peer_role() {
        let opts = options(7233);
        let layout = plan(&opts).unwrap();
        let history = node_args(&layout.nodes[0], &layout, &opts)
            .unwrap()
            .join(" ");
        assert!(history.contains("--role history"), "{history}");
        // Its log lines name it as its log file does, in the supervisor's format.
        assert!(
            history.contains("--log-format text --node-name history-1"),
            "{history}"
        );
        assert!(history.contains("--replicated --num-shards 4"), "{history}");
        assert!(
            history.contains("--matching-addr 127.0.0.21:7234"),
            "{history}"
        );
        let frontend = node_args(&layout.nodes[5], &layout, &opts)
            .unwrap()
            .join(" ");
        assert!(
            frontend.contains("--history-addr 127.0.0.11:7234,127.0.0.12:7234,127.0.0.13:7234"),
            "{frontend}"
        );
    }

    #[test]
    fn every_role_names_all_matching_nodes_and_the_count_is_bounded() {
        let mut opts = options(7233);
        opts.matching = None;
        let layout = plan(&opts).unwrap();
        let list = "127.0.0.21:7234,127.0.0.22:7234";
        assert_eq!(layout.internal_addrs(Role::Matching), list);
        for node in &layout.nodes {
            let args = node_args(node, &layout, &opts).unwrap().join(" ");
            assert!(args.contains(&format!("--matching-addr {list}")), "{args}");
        }
        opts.matching = Some(0);
        let err = validate(&opts).unwrap_err().to_string();
        assert!(err.contains("--matching must be between 1 and 9"), "{err}");
    }

    #[test]
    fn a_recorded_layout_keeps_its_matching_count_unless_one_is_asked_for() {
        let dir = std::env::temp_dir().join(format!("chronicle-lc-{}", std::process::id()));
        let mut opts = options(7233);
        opts.data_dir = dir.clone();
        opts.matching = Some(1);
        load_or_plan(&opts).unwrap();
        opts.matching = None;
        assert_eq!(load_or_plan(&opts).unwrap().counts().1, 1);
        opts.matching = Some(2);
        assert!(load_or_plan(&opts).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
