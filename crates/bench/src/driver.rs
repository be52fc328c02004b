//! The load generator: starts workflows in a closed or open loop, drives their signals and
//! queries, waits for each result and verifies it.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chronicle_proto::temporal::api::common::v1::{WorkflowExecution, WorkflowType};
use chronicle_proto::temporal::api::enums::v1::HistoryEventFilterType;
use chronicle_proto::temporal::api::history::v1::history_event::Attributes;
use chronicle_proto::temporal::api::query::v1::WorkflowQuery;
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tonic::{Code, Request, Status};

use crate::connection::Clients;
use crate::metrics::{Metrics, Rpc};
use crate::scenario::{self, Scenario};

/// Deadline of one long poll for a workflow's close event; the server ends it earlier with an
/// empty page, which is simply polled again.
const CLOSE_POLL_DEADLINE: Duration = Duration::from_secs(70);
/// How often and how long a query is retried while the workflow cannot answer yet (no
/// workflow task completed so far).
const QUERY_RETRY_PAUSE: Duration = Duration::from_millis(20);
const QUERY_ATTEMPTS: u32 = 250;

/// How the load is applied.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum LoadMode {
    /// `concurrency` workflows in flight at all times: each finished one starts the next.
    Closed { concurrency: usize },
    /// `rate` starts per second on a fixed schedule whatever the server's speed; latency counts
    /// from the scheduled start, so queueing shows. At most `max_in_flight` at once.
    Open { rate: f64, max_in_flight: usize },
}

/// How much load: a mode and when to stop starting workflows (whichever bound comes first).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoadPlan {
    pub mode: LoadMode,
    pub count: Option<u64>,
    #[serde(with = "optional_seconds")]
    pub duration: Option<Duration>,
}

mod optional_seconds {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(value: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        value.map(|d| d.as_secs_f64()).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.map(Duration::from_secs_f64))
    }
}

/// A workflow that ended as the scenario says it must, with every run of its chain.
#[derive(Clone, Debug)]
pub struct VerifiedWorkflow {
    pub runs: Vec<WorkflowExecution>,
}

/// Why a workflow did not verify.
#[derive(Debug, thiserror::Error)]
enum WorkflowFailure {
    #[error("{} returned {:?}: {}", .rpc.name(), .status.code(), .status.message())]
    Rpc { rpc: Rpc, status: Status },
    #[error("wrong result: expected {expected}, got {actual}")]
    WrongResult {
        expected: serde_json::Value,
        actual: String,
    },
    #[error("wrong answer to query {query:?}: expected {expected}, got {actual}")]
    WrongQueryAnswer {
        query: &'static str,
        expected: i64,
        actual: String,
    },
    #[error("the workflow closed as {status}: {detail}")]
    Closed {
        status: &'static str,
        detail: String,
    },
    #[error("no result within {0:?}")]
    Timeout(Duration),
}

impl WorkflowFailure {
    /// The bucket this failure is counted in.
    fn cause(&self) -> String {
        match self {
            WorkflowFailure::Rpc { rpc, status } => format!("{} {:?}", rpc.name(), status.code()),
            WorkflowFailure::WrongResult { .. } => "wrong result".into(),
            WorkflowFailure::WrongQueryAnswer { .. } => "wrong query answer".into(),
            WorkflowFailure::Closed { status, .. } => format!("workflow {status}"),
            WorkflowFailure::Timeout(_) => "timed out waiting for the result".into(),
        }
    }
}

fn rpc_failure(rpc: Rpc) -> impl FnOnce(Status) -> WorkflowFailure {
    move |status| WorkflowFailure::Rpc { rpc, status }
}

/// What one workflow needs from the run.
pub struct Driver {
    pub clients: Arc<Clients>,
    pub metrics: Arc<Metrics>,
    pub scenario: Scenario,
    pub namespace: String,
    pub task_queue: String,
    pub identity: String,
    /// Prefix of this run's workflow IDs.
    pub workflow_id_prefix: String,
    pub workflow_timeout: Duration,
    /// Start workflows without waiting for their results (for parking many open workflows).
    pub wait_for_results: bool,
    /// Verified workflows, for the state-transition sample after the run.
    pub verified: Mutex<Vec<VerifiedWorkflow>>,
}

impl Driver {
    /// Applies `plan` until its bound, then waits for the workflows in flight.
    pub async fn apply(self: &Arc<Self>, plan: &LoadPlan, origin: Instant) {
        let deadline = plan.duration.map(|d| origin + d);
        match plan.mode {
            LoadMode::Closed { concurrency } => {
                let next_index = Arc::new(AtomicU64::new(0));
                let mut loops = JoinSet::new();
                for _ in 0..concurrency.max(1) {
                    let driver = self.clone();
                    let next_index = next_index.clone();
                    let count = plan.count;
                    loops.spawn(async move {
                        loop {
                            if deadline.is_some_and(|d| Instant::now() >= d) {
                                break;
                            }
                            let index = next_index.fetch_add(1, Ordering::Relaxed);
                            if count.is_some_and(|n| index >= n) {
                                break;
                            }
                            driver.execute(index, Instant::now()).await;
                        }
                    });
                }
                while loops.join_next().await.is_some() {}
            }
            LoadMode::Open {
                rate,
                max_in_flight,
            } => {
                let period = Duration::from_secs_f64(1.0 / rate.max(f64::MIN_POSITIVE));
                let in_flight = Arc::new(Semaphore::new(max_in_flight.max(1)));
                let mut workflows = JoinSet::new();
                for index in 0u64.. {
                    if plan.count.is_some_and(|n| index >= n) {
                        break;
                    }
                    let due = origin + period.mul_f64(index as f64);
                    if deadline.is_some_and(|d| due >= d) {
                        break;
                    }
                    tokio::time::sleep_until(due).await;
                    // Waiting for a slot delays the start but not the latency's origin.
                    let Ok(slot) = in_flight.clone().acquire_owned().await else {
                        break;
                    };
                    let driver = self.clone();
                    workflows.spawn(async move {
                        driver.execute(index, due).await;
                        drop(slot);
                    });
                    while workflows.try_join_next().is_some() {}
                }
                while workflows.join_next().await.is_some() {}
            }
        }
    }

    /// One workflow from start to verified result; `due` is when it was meant to start.
    async fn execute(&self, index: u64, due: Instant) {
        let workflow_id = format!("{}-{index}", self.workflow_id_prefix);
        let seed = index as i64;
        let outcome =
            tokio::time::timeout(self.workflow_timeout, self.run_workflow(&workflow_id, seed))
                .await
                .unwrap_or(Err(WorkflowFailure::Timeout(self.workflow_timeout)));
        match outcome {
            Ok(runs) => {
                self.metrics.record_completed(due.elapsed());
                if !runs.is_empty() {
                    self.verified
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(VerifiedWorkflow { runs });
                }
            }
            Err(failure) => self
                .metrics
                .record_failed(failure.cause(), format!("{workflow_id}: {failure}")),
        }
    }

    async fn run_workflow(
        &self,
        workflow_id: &str,
        seed: i64,
    ) -> Result<Vec<WorkflowExecution>, WorkflowFailure> {
        let input = self.scenario.input(seed);
        let request = ws::StartWorkflowExecutionRequest {
            namespace: self.namespace.clone(),
            workflow_id: workflow_id.into(),
            workflow_type: Some(WorkflowType {
                name: self.scenario.workflow_type().into(),
            }),
            task_queue: Some(scenario::task_queue(&self.task_queue)),
            input: Some(scenario::json_payloads(&input)),
            workflow_task_timeout: Some(scenario::duration(Duration::from_secs(10))),
            identity: self.identity.clone(),
            request_id: uuid::Uuid::new_v4().to_string(),
            ..Default::default()
        };
        let started = self
            .metrics
            .timed(
                Rpc::StartWorkflowExecution,
                self.clients.get().start_workflow_execution(request),
            )
            .await
            .map_err(rpc_failure(Rpc::StartWorkflowExecution))?
            .into_inner();
        self.metrics.record_started();
        if !self.wait_for_results {
            return Ok(Vec::new());
        }
        let first_run = WorkflowExecution {
            workflow_id: workflow_id.into(),
            run_id: started.run_id,
        };

        for value in self.scenario.signals_to_send() {
            self.signal(workflow_id, value).await?;
        }
        if self.scenario.sends_query() {
            self.query_origin(workflow_id, seed).await?;
        }
        let (runs, result) = self.wait_for_result(first_run).await?;
        let expected = self.scenario.expected_result(seed);
        match scenario::decode_json::<serde_json::Value>(result.as_ref()) {
            Ok(actual) if actual == expected => Ok(runs),
            Ok(actual) => Err(WorkflowFailure::WrongResult {
                expected,
                actual: actual.to_string(),
            }),
            Err(problem) => Err(WorkflowFailure::WrongResult {
                expected,
                actual: problem,
            }),
        }
    }

    async fn signal(&self, workflow_id: &str, value: i64) -> Result<(), WorkflowFailure> {
        let request = ws::SignalWorkflowExecutionRequest {
            namespace: self.namespace.clone(),
            // No run ID: the signal goes to the current run.
            workflow_execution: Some(WorkflowExecution {
                workflow_id: workflow_id.into(),
                run_id: String::new(),
            }),
            signal_name: scenario::SIGNAL_NAME.into(),
            input: Some(scenario::json_payloads(&value)),
            identity: self.identity.clone(),
            request_id: uuid::Uuid::new_v4().to_string(),
            ..Default::default()
        };
        self.metrics
            .timed(
                Rpc::SignalWorkflowExecution,
                self.clients.get().signal_workflow_execution(request),
            )
            .await
            .map_err(rpc_failure(Rpc::SignalWorkflowExecution))?;
        Ok(())
    }

    /// Queries the running workflow and checks the answer. A workflow that has not completed a
    /// workflow task yet cannot answer (servers refuse with FailedPrecondition); that is retried.
    async fn query_origin(&self, workflow_id: &str, seed: i64) -> Result<(), WorkflowFailure> {
        let mut attempt = 0;
        let response = loop {
            attempt += 1;
            let request = ws::QueryWorkflowRequest {
                namespace: self.namespace.clone(),
                execution: Some(WorkflowExecution {
                    workflow_id: workflow_id.into(),
                    run_id: String::new(),
                }),
                query: Some(WorkflowQuery {
                    query_type: scenario::QUERY_ORIGIN.into(),
                    ..Default::default()
                }),
                ..Default::default()
            };
            let begun = Instant::now();
            match self.clients.get().query_workflow(request).await {
                Ok(response) => {
                    self.metrics.record_rpc(Rpc::QueryWorkflow, begun.elapsed());
                    break response.into_inner();
                }
                Err(status)
                    if status.code() == Code::FailedPrecondition && attempt < QUERY_ATTEMPTS =>
                {
                    tokio::time::sleep(QUERY_RETRY_PAUSE).await;
                }
                Err(status) => {
                    self.metrics
                        .record_rpc_error(Rpc::QueryWorkflow, status.code());
                    return Err(WorkflowFailure::Rpc {
                        rpc: Rpc::QueryWorkflow,
                        status,
                    });
                }
            }
        };
        match scenario::decode_json::<i64>(response.query_result.as_ref()) {
            Ok(answer) if answer == seed => Ok(()),
            Ok(answer) => Err(WorkflowFailure::WrongQueryAnswer {
                query: scenario::QUERY_ORIGIN,
                expected: seed,
                actual: answer.to_string(),
            }),
            Err(problem) => Err(WorkflowFailure::WrongQueryAnswer {
                query: scenario::QUERY_ORIGIN,
                expected: seed,
                actual: problem,
            }),
        }
    }

    /// Long-polls for the close event of each run, following continue-as-new, and returns the
    /// runs and the last run's result.
    async fn wait_for_result(
        &self,
        first_run: WorkflowExecution,
    ) -> Result<
        (
            Vec<WorkflowExecution>,
            Option<chronicle_proto::temporal::api::common::v1::Payloads>,
        ),
        WorkflowFailure,
    > {
        let mut runs = vec![first_run];
        loop {
            let execution = runs.last().expect("at least one run").clone();
            let mut next_page_token = Vec::new();
            let close = loop {
                let mut request = Request::new(ws::GetWorkflowExecutionHistoryRequest {
                    namespace: self.namespace.clone(),
                    execution: Some(execution.clone()),
                    wait_new_event: true,
                    history_event_filter_type: HistoryEventFilterType::CloseEvent as i32,
                    next_page_token: next_page_token.clone(),
                    skip_archival: true,
                    ..Default::default()
                });
                request.set_timeout(CLOSE_POLL_DEADLINE);
                let response = match self
                    .metrics
                    .timed(
                        Rpc::WaitForClose,
                        self.clients.get().get_workflow_execution_history(request),
                    )
                    .await
                {
                    Ok(response) => response.into_inner(),
                    Err(status) if status.code() == Code::DeadlineExceeded => continue,
                    Err(status) => return Err(rpc_failure(Rpc::WaitForClose)(status)),
                };
                let event = response.history.and_then(|h| h.events.into_iter().last());
                match event {
                    Some(event) => break event,
                    // Nothing closed yet within the server's poll: poll again from where it was.
                    None => next_page_token = response.next_page_token,
                }
            };
            match close.attributes {
                Some(Attributes::WorkflowExecutionCompletedEventAttributes(a)) => {
                    return Ok((runs, a.result));
                }
                Some(Attributes::WorkflowExecutionContinuedAsNewEventAttributes(a)) => {
                    runs.push(WorkflowExecution {
                        workflow_id: execution.workflow_id.clone(),
                        run_id: a.new_execution_run_id,
                    });
                }
                Some(Attributes::WorkflowExecutionFailedEventAttributes(a)) => {
                    return Err(WorkflowFailure::Closed {
                        status: "failed",
                        detail: a.failure.map(|f| f.message).unwrap_or_default(),
                    });
                }
                Some(Attributes::WorkflowExecutionTerminatedEventAttributes(a)) => {
                    return Err(WorkflowFailure::Closed {
                        status: "terminated",
                        detail: a.reason,
                    });
                }
                Some(Attributes::WorkflowExecutionTimedOutEventAttributes(_)) => {
                    return Err(WorkflowFailure::Closed {
                        status: "timed out",
                        detail: String::new(),
                    });
                }
                Some(Attributes::WorkflowExecutionCanceledEventAttributes(_)) => {
                    return Err(WorkflowFailure::Closed {
                        status: "canceled",
                        detail: String::new(),
                    });
                }
                other => {
                    return Err(WorkflowFailure::Closed {
                        status: "unknown",
                        detail: format!(
                            "the close-event poll returned event {} ({:?})",
                            close.event_id,
                            other.map(|_| close.event_type)
                        ),
                    });
                }
            }
        }
    }
}
