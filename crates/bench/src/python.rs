//! End-to-end mode (`--workers python`): the run's workflow and activity tasks are answered by
//! real Temporal Python SDK workers instead of the built-in raw-RPC pollers.
//!
//! The worker script (`python/bench_worker.py`) is compiled into the binary, written to a
//! temporary directory for the run and started once per worker process. It implements the same
//! workflow types as [`crate::scenario::decide`], so the driver verifies results unchanged. The
//! harness waits for each process to print `READY ...` (it then has passed the SDK's namespace
//! check and is polling), watches for a process dying during the run, and stops them all at the
//! end: stdin is closed (the script's signal to shut down, which the kernel also gives when the
//! harness dies), and whatever is still running after a short grace is killed. Processes are also
//! killed when [`PythonWorkers`] is dropped, so an error or Ctrl-C leaves none behind.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::BenchError;
use crate::connection::ServerTarget;

/// The worker script, as shipped in the binary.
pub const WORKER_SCRIPT: &str = include_str!("../python/bench_worker.py");
const SCRIPT_FILE_NAME: &str = "bench_worker.py";
/// Exit status with which the script says it cannot import `temporalio`.
const MISSING_SDK_EXIT_STATUS: i32 = 3;
/// Start-up takes 1 to 2 s on an idle machine (imports, connecting, the namespace check); a
/// loaded one, starting several workers at once, needs more.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a stopping worker may take to shut down before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(3);
/// How long to wait for a dead worker's last output to be read.
const OUTPUT_DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// Lines of output kept per worker, for error messages and the report.
const OUTPUT_TAIL_LINES: usize = 40;
/// Where `scripts/setup.sh` creates the venv when `CHRONICLE_VENV` is not set.
const DEFAULT_VENV_UNDER_HOME: &str = ".cache/chronicle-venv";

/// Where the venv's Python may be, in order of preference: `$CHRONICLE_VENV/bin/python` (when
/// the variable is set), then `~/.cache/chronicle-venv/bin/python`.
pub fn venv_python_candidates() -> Vec<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(venv) = std::env::var_os("CHRONICLE_VENV").filter(|v| !v.is_empty()) {
        candidates.push(PathBuf::from(venv).join("bin").join("python"));
    }
    if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        candidates.push(
            PathBuf::from(home)
                .join(DEFAULT_VENV_UNDER_HOME)
                .join("bin")
                .join("python"),
        );
    }
    candidates
}

/// The first venv Python that exists (see [`venv_python_candidates`]).
pub fn venv_python() -> Option<PathBuf> {
    venv_python_candidates().into_iter().find(|p| p.exists())
}

/// The default of `--python`: the venv's Python, else `python3` from `PATH`.
pub fn default_python() -> PathBuf {
    venv_python().unwrap_or_else(|| PathBuf::from("python3"))
}

/// How to run the Python workers of one run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PythonWorkerConfig {
    /// An interpreter that can import `temporalio`.
    pub python: PathBuf,
    /// Worker processes; each gets the full concurrency limits.
    pub processes: usize,
}

impl Default for PythonWorkerConfig {
    fn default() -> Self {
        Self {
            python: default_python(),
            processes: 1,
        }
    }
}

/// What the worker processes are told besides the server: task queue, identity and limits.
#[derive(Clone, Debug)]
pub struct WorkerAssignment<'a> {
    pub task_queue: &'a str,
    pub identity: &'a str,
    /// Workflow tasks one process handles at once (the SDK's `max_concurrent_workflow_tasks`).
    pub max_concurrent_workflow_tasks: usize,
    /// Activities one process runs at once (`max_concurrent_activities`).
    pub max_concurrent_activities: usize,
    /// Request eager activity execution (the SDK's default; off: the SDK's
    /// `disable_eager_activity_execution`).
    pub eager_activities: bool,
}

/// The last lines a worker wrote (stdout apart from the ready line, and stderr), without
/// terminal colours, and with runs of the same message (the SDK repeats a warning for every
/// retry of a task) folded into one line and a count.
#[derive(Default)]
struct OutputTail {
    lines: VecDeque<String>,
    dropped: usize,
    /// The previous line without digits (timestamps), to recognise a repeat.
    last_key: Option<String>,
    repeats: usize,
}

impl OutputTail {
    fn push(&mut self, raw: &str) {
        let line = strip_terminal_escapes(raw);
        let key: String = line.chars().filter(|c| !c.is_ascii_digit()).collect();
        if self.last_key.as_ref() == Some(&key) {
            self.repeats += 1;
            return;
        }
        self.flush_repeats();
        self.last_key = Some(key);
        self.keep(line);
    }

    /// Writes out the count of a pending run of repeats; call before reading `lines`.
    fn flush_repeats(&mut self) {
        if self.repeats > 0 {
            let note = format!("(the line above repeated {} more times)", self.repeats);
            self.repeats = 0;
            self.keep(note);
        }
    }

    fn keep(&mut self, line: String) {
        if self.lines.len() == OUTPUT_TAIL_LINES {
            self.lines.pop_front();
            self.dropped += 1;
        }
        self.lines.push_back(line);
    }
}

/// `text` without ANSI escape sequences (the SDK core colours its log lines).
fn strip_terminal_escapes(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            // Parameters and intermediates, up to the final byte (@ to ~).
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
}

/// One running worker process.
struct WorkerProcess {
    index: usize,
    pid: u32,
    child: Child,
    /// Closing it asks the worker to shut down.
    stdin: Option<ChildStdin>,
    output: Arc<Mutex<OutputTail>>,
    readers: Vec<JoinHandle<()>>,
}

/// The Python worker processes of one run.
pub struct PythonWorkers {
    python: PathBuf,
    /// Declared before the script's directory so the processes are killed before it is removed.
    processes: Vec<WorkerProcess>,
    sdk: String,
    /// Holds the script; the workers read it at start-up and for tracebacks.
    _script_dir: tempfile::TempDir,
}

impl PythonWorkers {
    /// Starts `config.processes` workers and waits until every one is polling.
    pub async fn start(
        config: &PythonWorkerConfig,
        target: &ServerTarget,
        assignment: &WorkerAssignment<'_>,
    ) -> Result<Self, BenchError> {
        let script_dir = tempfile::Builder::new()
            .prefix("chronicle-bench-python-")
            .tempdir()
            .map_err(|e| BenchError::PythonWorker(format!("cannot create a temp dir: {e}")))?;
        let script = script_dir.path().join(SCRIPT_FILE_NAME);
        std::fs::write(&script, WORKER_SCRIPT).map_err(|e| {
            BenchError::PythonWorker(format!("cannot write {}: {e}", script.display()))
        })?;

        let mut workers = Self {
            python: config.python.clone(),
            processes: Vec::new(),
            sdk: String::new(),
            _script_dir: script_dir,
        };
        // All processes start at once (start-up is mostly waiting); then each is waited for.
        let mut ready_signals = Vec::new();
        for index in 0..config.processes.max(1) {
            let arguments = worker_arguments(&script, target, assignment, index);
            let (process, ready) = WorkerProcess::spawn(index, &config.python, arguments)?;
            workers.processes.push(process);
            ready_signals.push(ready);
        }
        let deadline = Instant::now() + READY_TIMEOUT;
        for (process, ready) in workers.processes.iter_mut().zip(ready_signals) {
            let versions = process.wait_ready(ready, &config.python, deadline).await?;
            workers.sdk = describe_versions(&versions);
        }
        Ok(workers)
    }

    pub fn pids(&self) -> Vec<u32> {
        self.processes.iter().map(|p| p.pid).collect()
    }

    pub fn process_count(&self) -> usize {
        self.processes.len()
    }

    /// SDK and Python versions, e.g. `temporalio 1.35.0, Python 3.11.7`.
    pub fn sdk(&self) -> &str {
        &self.sdk
    }

    /// Resolves when a worker exits, which they do only when stopped: the error says which one
    /// and shows its last output. Never resolves while all are running.
    pub async fn exited(&mut self) -> BenchError {
        if self.processes.is_empty() {
            return std::future::pending().await;
        }
        let waits = self.processes.iter_mut().map(|process| {
            Box::pin(async move {
                let status = process.child.wait().await;
                (process, status)
            })
        });
        let ((process, status), _, _) = futures::future::select_all(waits).await;
        process
            .exit_error(status, &self.python, "during the run")
            .await
    }

    /// Stops every worker (closing stdin asks for a graceful shutdown; stragglers are killed
    /// after a short grace) and returns the tail of their output, each line prefixed with the
    /// worker's index.
    pub async fn stop(mut self) -> Vec<String> {
        for process in &mut self.processes {
            process.stdin.take();
        }
        let deadline = Instant::now() + STOP_GRACE;
        let mut output = Vec::new();
        for process in &mut self.processes {
            if tokio::time::timeout_at(deadline, process.child.wait())
                .await
                .is_err()
            {
                // kill() also waits for the process, so it is reaped here.
                let _ = process.child.kill().await;
            }
            process.drain_output().await;
            let mut tail = process.output.lock().unwrap_or_else(|e| e.into_inner());
            tail.flush_repeats();
            output.extend(
                tail.lines
                    .iter()
                    .map(|line| format!("python worker {}: {line}", process.index)),
            );
        }
        output
    }
}

impl WorkerProcess {
    fn spawn(
        index: usize,
        python: &Path,
        arguments: Vec<OsString>,
    ) -> Result<(Self, oneshot::Receiver<String>), BenchError> {
        let mut child = Command::new(python)
            .args(arguments)
            .env("PYTHONUNBUFFERED", "1")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| spawn_error(python, &e))?;
        let pid = child.id().unwrap_or_default();
        let output = Arc::new(Mutex::new(OutputTail::default()));
        let (ready_sender, ready) = oneshot::channel();
        let mut readers = Vec::new();
        if let Some(stdout) = child.stdout.take() {
            readers.push(read_lines(stdout, output.clone(), Some(ready_sender)));
        }
        if let Some(stderr) = child.stderr.take() {
            readers.push(read_lines(stderr, output.clone(), None));
        }
        let stdin = child.stdin.take();
        Ok((
            Self {
                index,
                pid,
                child,
                stdin,
                output,
                readers,
            },
            ready,
        ))
    }

    /// Waits for the ready line; returns what follows `READY` on it (the versions).
    async fn wait_ready(
        &mut self,
        ready: oneshot::Receiver<String>,
        python: &Path,
        deadline: Instant,
    ) -> Result<String, BenchError> {
        let outcome = tokio::select! {
            line = ready => line.ok(),
            _ = tokio::time::sleep_until(deadline) => {
                self.drain_output_for(Duration::ZERO).await;
                return Err(BenchError::PythonWorker(format!(
                    "python worker {} (pid {}, {}) was not ready within {READY_TIMEOUT:?}; its \
                     output:\n{}",
                    self.index,
                    self.pid,
                    python.display(),
                    self.output_text()
                )));
            }
        };
        match outcome {
            Some(versions) => Ok(versions),
            // stdout closed without the ready line: the process is ending.
            None => {
                let status = self.child.wait().await;
                Err(self.exit_error(status, python, "before it was ready").await)
            }
        }
    }

    /// The error for a worker that exited, with its last output.
    async fn exit_error(
        &mut self,
        status: std::io::Result<ExitStatus>,
        python: &Path,
        when: &str,
    ) -> BenchError {
        self.drain_output().await;
        let output = self.output_text();
        BenchError::PythonWorker(match status {
            Ok(status) if status.code() == Some(MISSING_SDK_EXIT_STATUS) => format!(
                "{} cannot import the Temporal Python SDK (temporalio):\n{output}\nCreate the venv \
                 with scripts/setup.sh (it installs temporalio into $CHRONICLE_VENV, default \
                 ~/.cache/chronicle-venv), or pass --python with an interpreter that has it",
                python.display()
            ),
            Ok(status) => format!(
                "python worker {} (pid {}) exited {when} ({status}); its output:\n{output}",
                self.index, self.pid
            ),
            Err(e) => format!(
                "python worker {} (pid {}): cannot wait for it: {e}",
                self.index, self.pid
            ),
        })
    }

    async fn drain_output(&mut self) {
        self.drain_output_for(OUTPUT_DRAIN_TIMEOUT).await;
    }

    /// Waits up to `limit` for the output readers to reach end of file (the process's pipes
    /// close when it exits); whatever was read by then is in the tail.
    async fn drain_output_for(&mut self, limit: Duration) {
        let readers = std::mem::take(&mut self.readers);
        let _ = tokio::time::timeout(limit, futures::future::join_all(readers)).await;
    }

    fn output_text(&self) -> String {
        let mut tail = self.output.lock().unwrap_or_else(|e| e.into_inner());
        tail.flush_repeats();
        if tail.lines.is_empty() {
            return "  (nothing)".into();
        }
        let mut text = String::new();
        if tail.dropped > 0 {
            text.push_str(&format!("  ({} earlier lines not kept)\n", tail.dropped));
        }
        for line in &tail.lines {
            text.push_str("  ");
            text.push_str(line);
            text.push('\n');
        }
        text.trim_end().to_string()
    }
}

/// Reads `stream` line by line into `output`; the first line starting with `READY` goes to
/// `ready` instead (its remainder: the versions).
fn read_lines(
    stream: impl AsyncRead + Unpin + Send + 'static,
    output: Arc<Mutex<OutputTail>>,
    mut ready: Option<oneshot::Sender<String>>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(versions) = line.strip_prefix("READY")
                && let Some(sender) = ready.take()
            {
                let _ = sender.send(versions.trim().to_string());
                continue;
            }
            output.lock().unwrap_or_else(|e| e.into_inner()).push(&line);
        }
    })
}

fn spawn_error(python: &Path, error: &std::io::Error) -> BenchError {
    let hint = if error.kind() == std::io::ErrorKind::NotFound {
        let looked_at: Vec<String> = venv_python_candidates()
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        format!(
            "\nNo such interpreter. Create the venv with scripts/setup.sh (looked for {}), or \
             pass --python PATH",
            if looked_at.is_empty() {
                "$CHRONICLE_VENV/bin/python and ~/.cache/chronicle-venv/bin/python".into()
            } else {
                looked_at.join(" and ")
            }
        )
    } else {
        String::new()
    };
    BenchError::PythonWorker(format!("cannot start {}: {error}{hint}", python.display()))
}

/// `temporalio=1.35.0 python=3.11.7` -> `temporalio 1.35.0, Python 3.11.7`.
fn describe_versions(ready_line: &str) -> String {
    let mut parts = Vec::new();
    for pair in ready_line.split_whitespace() {
        match pair.split_once('=') {
            Some(("python", version)) => parts.push(format!("Python {version}")),
            Some((name, version)) => parts.push(format!("{name} {version}")),
            None => parts.push(pair.to_string()),
        }
    }
    parts.join(", ")
}

/// The script's command line for worker `index`.
fn worker_arguments(
    script: &Path,
    target: &ServerTarget,
    assignment: &WorkerAssignment<'_>,
    index: usize,
) -> Vec<OsString> {
    // The Python client takes host:port; a URL's scheme says whether to use TLS.
    let (address, https) = match target.address.split_once("://") {
        Some((scheme, rest)) => (rest.trim_end_matches('/'), scheme == "https"),
        None => (target.address.as_str(), false),
    };
    let mut arguments: Vec<OsString> = vec![
        script.into(),
        "--address".into(),
        address.into(),
        "--namespace".into(),
        target.namespace.clone().into(),
        "--task-queue".into(),
        assignment.task_queue.into(),
        "--identity".into(),
        format!("{}-python-{index}", assignment.identity).into(),
        "--max-concurrent-workflow-tasks".into(),
        assignment.max_concurrent_workflow_tasks.to_string().into(),
        "--max-concurrent-activities".into(),
        assignment.max_concurrent_activities.to_string().into(),
    ];
    if !assignment.eager_activities {
        arguments.push("--no-eager-activities".into());
    }
    if https || target.tls.is_some() {
        arguments.push("--tls".into());
    }
    if let Some(tls) = &target.tls {
        let options = [
            ("--tls-ca-path", &tls.ca_path),
            ("--tls-cert-path", &tls.cert_path),
            ("--tls-key-path", &tls.key_path),
        ];
        for (flag, path) in options {
            if let Some(path) = path {
                arguments.push(flag.into());
                arguments.push(path.into());
            }
        }
        if let Some(name) = &tls.server_name {
            arguments.push("--tls-server-name".into());
            arguments.push(name.into());
        }
    }
    arguments
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::TlsOptions;

    const ASSIGNMENT: WorkerAssignment<'static> = WorkerAssignment {
        task_queue: "tq",
        identity: "bench@1",
        max_concurrent_workflow_tasks: 8,
        max_concurrent_activities: 4,
        eager_activities: true,
    };

    /// An executable shell script at `<dir>/python` that stands in for the interpreter.
    fn fake_python(dir: &tempfile::TempDir, script: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.path().join("python");
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn strings(arguments: &[OsString]) -> Vec<String> {
        arguments
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn worker_arguments_carry_the_target_queue_and_limits() {
        let target = ServerTarget::new("127.0.0.1:7233");
        let arguments = strings(&worker_arguments(
            Path::new("/tmp/w.py"),
            &target,
            &ASSIGNMENT,
            2,
        ));
        assert_eq!(
            arguments.join(" "),
            "/tmp/w.py --address 127.0.0.1:7233 --namespace default --task-queue tq --identity \
             bench@1-python-2 --max-concurrent-workflow-tasks 8 --max-concurrent-activities 4"
        );
    }

    #[test]
    fn worker_arguments_pass_tls_options_and_strip_url_schemes() {
        let mut target = ServerTarget::new("https://example.com:7233/");
        target.tls = Some(TlsOptions {
            ca_path: Some("ca.pem".into()),
            cert_path: Some("c.pem".into()),
            key_path: Some("k.pem".into()),
            server_name: Some("srv".into()),
        });
        let arguments = strings(&worker_arguments(
            Path::new("w.py"),
            &target,
            &ASSIGNMENT,
            0,
        ));
        let text = arguments.join(" ");
        assert!(text.contains("--address example.com:7233 "), "{text}");
        assert!(
            text.ends_with(
                "--tls --tls-ca-path ca.pem --tls-cert-path c.pem --tls-key-path k.pem \
                 --tls-server-name srv"
            ),
            "{text}"
        );
        let plain = strings(&worker_arguments(
            Path::new("w.py"),
            &ServerTarget::new("http://h:1"),
            &ASSIGNMENT,
            0,
        ));
        assert!(plain.contains(&"h:1".to_string()) && !plain.contains(&"--tls".to_string()));
    }

    #[test]
    fn ready_line_versions_read_well() {
        assert_eq!(
            describe_versions("temporalio=1.35.0 python=3.11.7"),
            "temporalio 1.35.0, Python 3.11.7"
        );
    }

    #[test]
    fn the_script_defines_every_workflow_type_the_scenarios_use() {
        use crate::scenario::{INCREMENT_ACTIVITY, QUERY_ORIGIN, SIGNAL_NAME, WorkflowKind};
        for kind in WorkflowKind::ALL {
            let definition = format!("@workflow.defn(name=\"{}\")", kind.type_name());
            assert!(WORKER_SCRIPT.contains(&definition), "{definition} missing");
        }
        for name in [INCREMENT_ACTIVITY, SIGNAL_NAME, QUERY_ORIGIN] {
            assert!(WORKER_SCRIPT.contains(&format!("= \"{name}\"")), "{name}");
        }
    }

    #[test]
    fn the_output_tail_keeps_the_last_lines() {
        let mut tail = OutputTail::default();
        for i in 0..OUTPUT_TAIL_LINES + 3 {
            tail.push(&format!("line {}", "x".repeat(i)));
        }
        assert_eq!(tail.dropped, 3);
        assert_eq!(tail.lines.front().map(String::as_str), Some("line xxx"));
    }

    #[test]
    fn the_output_tail_folds_repeats_and_drops_colours() {
        let mut tail = OutputTail::default();
        tail.push("starting");
        for second in 10..14 {
            tail.push(&format!(
                "\u{1b}[2m2026-12-01T23:24:{second}Z\u{1b}[0m \u{1b}[33m WARN\u{1b}[0m refused"
            ));
        }
        tail.push("done");
        tail.flush_repeats();
        assert_eq!(
            Vec::from(tail.lines.clone()),
            [
                "starting",
                "2026-12-01T23:24:10Z  WARN refused",
                "(the line above repeated 3 more times)",
                "done"
            ]
        );
    }

    #[tokio::test]
    async fn a_missing_interpreter_is_a_clear_error() {
        let config = PythonWorkerConfig {
            python: "/nonexistent/bin/python".into(),
            processes: 1,
        };
        let error = PythonWorkers::start(&config, &ServerTarget::new("127.0.0.1:1"), &ASSIGNMENT)
            .await
            .err()
            .expect("no such interpreter");
        let text = error.to_string();
        assert!(text.contains("/nonexistent/bin/python"), "{text}");
        assert!(text.contains("scripts/setup.sh"), "{text}");
    }

    #[tokio::test]
    async fn an_interpreter_without_temporalio_is_a_clear_error() {
        // A shell script stands in for a Python without the SDK: it exits as the worker script
        // does when the import fails.
        let dir = tempfile::tempdir().unwrap();
        let fake = fake_python(
            &dir,
            "#!/bin/sh\necho \"No module named 'temporalio'\" >&2\nexit 3\n",
        );
        let config = PythonWorkerConfig {
            python: fake,
            processes: 2,
        };
        let error = PythonWorkers::start(&config, &ServerTarget::new("127.0.0.1:1"), &ASSIGNMENT)
            .await
            .err()
            .expect("no SDK");
        let text = error.to_string();
        assert!(
            text.contains("cannot import the Temporal Python SDK"),
            "{text}"
        );
        assert!(text.contains("No module named 'temporalio'"), "{text}");
    }

    #[tokio::test]
    async fn a_worker_that_dies_is_reported_with_its_output() {
        // Ready, then dead: the harness must notice and show what it wrote.
        let dir = tempfile::tempdir().unwrap();
        let fake = fake_python(
            &dir,
            "#!/bin/sh\necho 'READY temporalio=0 python=0'\nsleep 0.2\necho 'boom' >&2\nexit 7\n",
        );
        let config = PythonWorkerConfig {
            python: fake,
            processes: 1,
        };
        let mut workers =
            PythonWorkers::start(&config, &ServerTarget::new("127.0.0.1:1"), &ASSIGNMENT)
                .await
                .expect("ready");
        assert_eq!(workers.sdk(), "temporalio 0, Python 0");
        let error = tokio::time::timeout(Duration::from_secs(10), workers.exited())
            .await
            .expect("the death is noticed")
            .to_string();
        assert!(error.contains("exited during the run"), "{error}");
        assert!(error.contains("boom"), "{error}");
        assert!(error.contains("exit status: 7"), "{error}");
        workers.stop().await;
    }

    #[tokio::test]
    async fn stopping_kills_a_worker_that_ignores_stdin() {
        let dir = tempfile::tempdir().unwrap();
        // Ignores end of stdin and SIGTERM alike; only the kill after the grace ends it.
        let fake = fake_python(
            &dir,
            "#!/bin/sh\ntrap '' TERM\necho READY\nexec sleep 600\n",
        );
        let config = PythonWorkerConfig {
            python: fake,
            processes: 2,
        };
        let workers = PythonWorkers::start(&config, &ServerTarget::new("127.0.0.1:1"), &ASSIGNMENT)
            .await
            .expect("ready");
        let pids = workers.pids();
        assert_eq!(pids.len(), 2);
        let begun = std::time::Instant::now();
        workers.stop().await;
        assert!(begun.elapsed() < STOP_GRACE + Duration::from_secs(5));
        for pid in pids {
            // Killed and reaped: no /proc entry left (not even a zombie).
            assert!(
                !Path::new(&format!("/proc/{pid}")).exists(),
                "pid {pid} still there"
            );
        }
    }
}
