//! One benchmark run against one server: connect, start the workers (built-in pollers or Python
//! SDK processes), apply the load, sample the server processes (and the Python workers), and
//! assemble the report.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chronicle_proto::temporal::api::common::v1::WorkflowExecution;
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use futures::StreamExt;
use tokio::time::Instant;
use tonic::Code;

use crate::BenchError;
use crate::connection::{Clients, ServerTarget};
use crate::driver::{Driver, LoadMode, LoadPlan, VerifiedWorkflow};
use crate::metrics::{Metrics, Rpc};
use crate::procfs::{self, ProcessReport, ProcessSampler};
use crate::progress::Progress;
use crate::python::{PythonWorkerConfig, PythonWorkers, WorkerAssignment};
use crate::report::{RunReport, TransitionsReport, WorkerMode};
use crate::scenario::Scenario;
use crate::worker::{WorkerContext, Workers};

/// Slack on top of a scenario's own timers before a workflow counts as lost.
const DEFAULT_WORKFLOW_TIMEOUT: Duration = Duration::from_secs(120);
/// Describe calls in flight while sampling state transitions.
const DESCRIBE_CONCURRENCY: usize = 8;

/// Which workflows to describe for the state-transition count. Describing is extra load, so it
/// happens after the measured window; `All` can take a while for long runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DescribeSampling {
    Off,
    /// Up to this many, spread evenly over the run.
    Sample(usize),
    All,
}

/// Who answers the run's workflow and activity tasks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum WorkerSetup {
    /// The harness's own raw-RPC pollers: no SDK in the loop, so the server is what is measured.
    #[default]
    Builtin,
    /// Real Temporal Python SDK workers in separate processes (end to end).
    Python(PythonWorkerConfig),
}

/// Everything one run needs.
#[derive(Clone, Debug)]
pub struct RunConfig {
    pub target: ServerTarget,
    /// Name in reports (the address when absent).
    pub label: Option<String>,
    pub scenario: Scenario,
    pub load: LoadPlan,
    pub workers: WorkerSetup,
    /// Built-in workers: workflow-task pollers, each answering one task at a time. Python
    /// workers: workflow tasks each process handles at once.
    pub workflow_pollers: usize,
    /// Built-in workers: activity pollers. Python workers: activities each process runs at once.
    pub activity_pollers: usize,
    /// Request eager activity execution (the server starts activities a workflow task schedules
    /// on the run's queue and returns them with the completion). Built-in workers have as many
    /// eager slots as activity pollers; Python workers use the SDK's own (its default is on). A
    /// server without it still works.
    pub eager_activities: bool,
    /// How long one workflow may take before it counts as failed (default: two minutes plus the
    /// scenario's timers).
    pub workflow_timeout: Option<Duration>,
    /// Wait for and verify each result (off: only start workflows, e.g. to park many on timers).
    pub wait_for_results: bool,
    pub describe: DescribeSampling,
    /// Server processes on this machine whose CPU, memory and writes are measured.
    pub server_pids: Vec<u32>,
    pub progress: bool,
}

impl RunConfig {
    pub fn new(target: ServerTarget, scenario: Scenario, load: LoadPlan) -> Self {
        Self {
            target,
            label: None,
            scenario,
            load,
            workers: WorkerSetup::Builtin,
            workflow_pollers: 8,
            activity_pollers: 8,
            eager_activities: true,
            workflow_timeout: None,
            wait_for_results: true,
            describe: DescribeSampling::Sample(100),
            server_pids: Vec::new(),
            progress: false,
        }
    }

    fn validate(&self) -> Result<(), BenchError> {
        let invalid = |m: &str| Err(BenchError::Config(m.into()));
        if self.load.count.is_none() && self.load.duration.is_none() {
            return invalid("bound the run with a count or a duration");
        }
        match self.load.mode {
            LoadMode::Closed { concurrency: 0 } => invalid("concurrency must be at least 1"),
            LoadMode::Open { rate, .. } if !(rate > 0.0 && rate.is_finite()) => {
                invalid("the rate must be a positive number of starts per second")
            }
            _ => Ok(()),
        }?;
        match &self.workers {
            WorkerSetup::Python(python) if python.processes == 0 => {
                invalid("at least one Python worker process is needed")
            }
            _ => Ok(()),
        }
    }
}

/// The workers of a running benchmark.
enum RunningWorkers {
    Builtin(Workers),
    Python(PythonWorkers),
}

impl RunningWorkers {
    /// Resolves only if a worker process dies during the run (built-in workers cannot).
    async fn exited(&mut self) -> BenchError {
        match self {
            RunningWorkers::Builtin(_) => std::future::pending().await,
            RunningWorkers::Python(python) => python.exited().await,
        }
    }

    /// Stops the workers; returns the Python workers' last output lines.
    async fn stop(self) -> Vec<String> {
        match self {
            RunningWorkers::Builtin(workers) => {
                workers.stop().await;
                Vec::new()
            }
            RunningWorkers::Python(python) => python.stop().await,
        }
    }
}

/// Runs one benchmark and returns its report (workflow failures are in the report, not errors).
pub async fn run(config: &RunConfig) -> Result<RunReport, BenchError> {
    config.validate()?;
    let target = &config.target;
    let clients = Arc::new(Clients::connect(target).await?);
    let server_version = preflight(&clients, &target.namespace).await?;

    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let run_id = &run_id[..12];
    let task_queue = format!("chronicle-bench-{}-{run_id}", config.scenario.name());
    let identity = format!("chronicle-bench-{}@{run_id}", std::process::id());
    let label = config
        .label
        .clone()
        .unwrap_or_else(|| target.address.clone());

    // Python workers start first, and their start-up (imports, connecting, the SDK's namespace
    // check) happens before the server is sampled: neither is part of the measured window.
    let python = match &config.workers {
        WorkerSetup::Builtin => None,
        WorkerSetup::Python(python) => {
            let assignment = WorkerAssignment {
                task_queue: &task_queue,
                identity: &identity,
                max_concurrent_workflow_tasks: config.workflow_pollers,
                max_concurrent_activities: config.activity_pollers,
                eager_activities: config.eager_activities,
            };
            Some(PythonWorkers::start(python, target, &assignment).await?)
        }
    };
    let worker_mode = match &python {
        None => WorkerMode::Builtin,
        Some(python) => WorkerMode::Python {
            processes: python.process_count(),
            sdk: python.sdk().to_string(),
        },
    };
    let python_pids = python.as_ref().map(PythonWorkers::pids).unwrap_or_default();

    let samplers = config
        .server_pids
        .iter()
        .map(|&pid| ProcessSampler::start(pid))
        .collect::<Result<Vec<_>, _>>()?;
    // The workers' CPU is reported apart from the server's, with anything they spawn.
    let worker_samplers = python_pids
        .iter()
        .map(|&pid| ProcessSampler::start_with_children(pid))
        .collect::<Result<Vec<_>, _>>()?;
    let origin = Instant::now();
    let metrics = Arc::new(Metrics::new(origin.into_std()));
    let mut workers = match python {
        Some(python) => RunningWorkers::Python(python),
        None => RunningWorkers::Builtin(Workers::spawn(
            Arc::new(WorkerContext {
                clients: clients.clone(),
                metrics: metrics.clone(),
                namespace: target.namespace.clone(),
                task_queue: task_queue.clone(),
                identity: identity.clone(),
                eager_activity_slots: (config.eager_activities && config.activity_pollers > 0)
                    .then(|| Arc::new(tokio::sync::Semaphore::new(config.activity_pollers))),
            }),
            config.workflow_pollers,
            config.activity_pollers,
        )),
    };
    let driver = Arc::new(Driver {
        clients: clients.clone(),
        metrics: metrics.clone(),
        scenario: config.scenario.clone(),
        namespace: target.namespace.clone(),
        task_queue: task_queue.clone(),
        identity,
        workflow_id_prefix: format!("bench-{}-{run_id}", config.scenario.name()),
        workflow_timeout: config
            .workflow_timeout
            .unwrap_or(DEFAULT_WORKFLOW_TIMEOUT + config.scenario.inherent_duration()),
        wait_for_results: config.wait_for_results,
        verified: Mutex::new(Vec::new()),
    });
    let progress = Progress::start(metrics.clone(), &config.load, &label, config.progress);

    let load = async {
        driver.apply(&config.load, origin).await;
        if !config.wait_for_results {
            // Nothing waited for the workflows: let the workers answer their pending tasks
            // (e.g. start the long timers the workflows are meant to park on) before stopping.
            if python_pids.is_empty() {
                settle(&metrics).await;
            } else {
                settle_python(&python_pids).await;
            }
        }
    };
    // A worker process that dies ends the run at once: its workflows would only time out.
    let worker_died = tokio::select! {
        _ = load => None,
        error = workers.exited() => Some(error),
    };
    if let Some(error) = worker_died {
        progress.finish().await;
        workers.stop().await;
        return Err(error);
    }

    let elapsed = origin.elapsed();
    let mut servers = Vec::new();
    for sampler in samplers {
        servers.push(sampler.finish().await);
    }
    let mut worker_processes = Vec::new();
    for sampler in worker_samplers {
        worker_processes.push(sampler.finish().await);
    }
    progress.finish().await;
    let worker_output = workers.stop().await;

    // Taken before the describe calls below, which are not part of the measured window.
    let snapshot = metrics.snapshot();
    let elapsed_seconds = elapsed.as_secs_f64();
    let workflows_per_second = snapshot.completed as f64 / elapsed_seconds.max(1e-9);
    for process in servers.iter_mut().chain(worker_processes.iter_mut()) {
        set_cpu_per_workflow(process, snapshot.completed);
    }
    let verified = std::mem::take(&mut *driver.verified.lock().unwrap_or_else(|e| e.into_inner()));
    let state_transitions = sample_transitions(
        &clients,
        &metrics,
        &target.namespace,
        &verified,
        config.describe,
        workflows_per_second,
    )
    .await;

    Ok(RunReport {
        target: label,
        address: target.address.clone(),
        namespace: target.namespace.clone(),
        server_version,
        scenario: config.scenario.clone(),
        load: config.load.clone(),
        workers: worker_mode,
        workflow_pollers: config.workflow_pollers,
        activity_pollers: config.activity_pollers,
        verified_results: config.wait_for_results,
        task_queue,
        started: snapshot.started,
        completed: snapshot.completed,
        failed: snapshot.failed,
        elapsed_seconds,
        workflows_per_second,
        state_transitions,
        latency: snapshot.latency,
        rpc_latency: snapshot.rpc_latency,
        rpc_errors: snapshot.rpc_errors,
        workflow_failures: snapshot.failures,
        failure_samples: snapshot.failure_samples,
        servers,
        worker_processes,
        worker_output,
        timeline: snapshot.timeline,
    })
}

fn set_cpu_per_workflow(process: &mut ProcessReport, completed: u64) {
    if completed > 0 {
        process.cpu_ms_per_workflow = Some(process.cpu_seconds * 1000.0 / completed as f64);
    }
}

/// Returns once every started workflow had a workflow task answered and the workers have been
/// idle for a moment, or when the workers have made no progress for a minute (the report then
/// shows the shortfall in RespondWorkflowTaskCompleted against workflows started).
async fn settle(metrics: &Metrics) {
    const QUIET: Duration = Duration::from_secs(2);
    const STALLED_ROUNDS: u32 = 30;
    let mut answered = metrics.rpc_count(Rpc::RespondWorkflowTaskCompleted);
    let mut rounds_without_progress = 0;
    loop {
        tokio::time::sleep(QUIET).await;
        let now = metrics.rpc_count(Rpc::RespondWorkflowTaskCompleted);
        if now == answered {
            rounds_without_progress += 1;
            if now >= metrics.live().started || rounds_without_progress >= STALLED_ROUNDS {
                return;
            }
        } else {
            rounds_without_progress = 0;
        }
        answered = now;
    }
}

/// `settle` for Python workers, whose RPCs the harness does not see: returns once the worker
/// processes have been close to idle for a moment (they then have no task left to answer), or
/// after a minute and a half.
async fn settle_python(pids: &[u32]) {
    const QUIET: Duration = Duration::from_secs(2);
    /// Below this the workers only wait on their long polls (a few ticks per second at most).
    const IDLE_CPU_SECONDS: f64 = 0.05;
    const MAX_ROUNDS: u32 = 45;
    let cpu = || -> f64 {
        pids.iter()
            .filter_map(|&pid| procfs::tree_cpu_seconds(pid))
            .sum()
    };
    let mut before = cpu();
    for _ in 0..MAX_ROUNDS {
        tokio::time::sleep(QUIET).await;
        let now = cpu();
        if now - before < IDLE_CPU_SECONDS {
            return;
        }
        before = now;
    }
}

/// Checks the server answers and the namespace exists; returns the server's version.
async fn preflight(clients: &Clients, namespace: &str) -> Result<String, BenchError> {
    let info = clients
        .get()
        .get_system_info(ws::GetSystemInfoRequest {})
        .await
        .map_err(|s| BenchError::rpc("GetSystemInfo", s))?
        .into_inner();
    match clients
        .get()
        .describe_namespace(ws::DescribeNamespaceRequest {
            namespace: namespace.into(),
            ..Default::default()
        })
        .await
    {
        Ok(_) => Ok(info.server_version),
        Err(status) if status.code() == Code::NotFound => {
            Err(BenchError::UnknownNamespace(namespace.into()))
        }
        Err(status) => Err(BenchError::rpc("DescribeNamespace", status)),
    }
}

/// Describes a sample of the verified workflows and scales their per-workflow state
/// transitions by the run's throughput.
async fn sample_transitions(
    clients: &Clients,
    metrics: &Metrics,
    namespace: &str,
    verified: &[VerifiedWorkflow],
    sampling: DescribeSampling,
    workflows_per_second: f64,
) -> TransitionsReport {
    let wanted = match sampling {
        DescribeSampling::Off => 0,
        DescribeSampling::Sample(n) => n.min(verified.len()),
        DescribeSampling::All => verified.len(),
    };
    if wanted == 0 {
        return TransitionsReport::default();
    }
    // Evenly spread over the run, so warm-up and steady state both count.
    let stride = verified.len() as f64 / wanted as f64;
    let sample: Vec<&VerifiedWorkflow> = (0..wanted)
        .map(|i| &verified[((i as f64) * stride) as usize])
        .collect();
    let described: Vec<Option<(u64, u64)>> = futures::stream::iter(sample)
        .map(|workflow| describe_workflow(clients, metrics, namespace, &workflow.runs))
        .buffer_unordered(DESCRIBE_CONCURRENCY)
        .collect()
        .await;
    let ok: Vec<(u64, u64)> = described.iter().flatten().copied().collect();
    let describe_errors = (described.len() - ok.len()) as u64;
    if ok.is_empty() {
        return TransitionsReport {
            describe_errors,
            ..Default::default()
        };
    }
    let n = ok.len() as f64;
    let transitions = ok.iter().map(|(t, _)| *t as f64).sum::<f64>() / n;
    let events = ok.iter().map(|(_, e)| *e as f64).sum::<f64>() / n;
    let (source, per_workflow) = if transitions > 0.0 {
        ("state_transition_count", transitions)
    } else {
        ("history_length", events)
    };
    TransitionsReport {
        sampled_workflows: ok.len() as u64,
        state_transitions_per_workflow: transitions,
        history_events_per_workflow: events,
        source: source.into(),
        per_second: per_workflow * workflows_per_second,
        describe_errors,
    }
}

/// (state transitions, history events) summed over a workflow's runs.
async fn describe_workflow(
    clients: &Clients,
    metrics: &Metrics,
    namespace: &str,
    runs: &[WorkflowExecution],
) -> Option<(u64, u64)> {
    let mut transitions = 0;
    let mut events = 0;
    for run in runs {
        let request = ws::DescribeWorkflowExecutionRequest {
            namespace: namespace.into(),
            execution: Some(run.clone()),
        };
        let info = metrics
            .timed(
                Rpc::DescribeWorkflowExecution,
                clients.get().describe_workflow_execution(request),
            )
            .await
            .ok()?
            .into_inner()
            .workflow_execution_info?;
        transitions += info.state_transition_count.max(0) as u64;
        events += info.history_length.max(0) as u64;
    }
    Some((transitions, events))
}
