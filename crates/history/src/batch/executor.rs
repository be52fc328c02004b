//! The shard leader's batch executor: one driver per running job of the shard. A driver reads
//! the job's recorded cursor, applies the operation to the next few executions (at most the
//! job's operations per second), and records the step (`BatchProgress`) before the next; at
//! the end of a page it reads the query's next page and records it (`BatchPage`). Nothing is
//! held in memory that the job's row does not hold, so a new leader (or this node after a
//! restart) picks the job up at its last recorded step. The step in flight when a driver
//! stopped is applied again, which each operation tolerates (see `operation`).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chronicle_cluster::HistoryService;
use chronicle_proto::chronicle::history::v1::{
    self as cmd, ListWorkflowsRequest, batch_command::Op, shard_command::Kind,
};
use chronicle_proto::chronicle::persistence::v1 as pb;
use chronicle_types::{ApiError, ApiResult};
use tokio::sync::watch;
use tokio::time::Instant;

use super::apply::is_running;
use super::operation::BatchOperation;
use crate::engine::{HistoryEngine, Shard};

/// Executions worked on at once (Temporal's `worker.batcherConcurrency`).
const CONCURRENCY: usize = 5;
/// Executions read per page of the query (Temporal's batcher page size).
const PAGE_SIZE: u32 = 1000;
/// Attempts at one execution before it counts as failed, for errors that may pass.
const ATTEMPTS: u32 = 10;
/// How often a leader looks for running jobs it does not drive yet.
const SCAN_EVERY: Duration = Duration::from_millis(250);
/// Pause after a step that could not be recorded (no quorum, overload).
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// Temporal's `worker.batcherRPS`: a job's operations per second, unless it asks for fewer.
pub const DEFAULT_OPERATIONS_PER_SECOND: f32 = 50.0;

type JobKey = (String, String);

pub(crate) async fn run(
    engine: Arc<HistoryEngine>,
    shard: Arc<Shard>,
    mut shutdown: watch::Receiver<bool>,
) {
    let driven: Arc<Mutex<HashSet<JobKey>>> = Arc::default();
    loop {
        if *shutdown.borrow() || shard.retired.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        if engine.is_leader(&shard) {
            match shard.tables.batch_jobs() {
                Ok(jobs) => {
                    for job in jobs.into_iter().filter(is_running) {
                        let key = (job.namespace_id.clone(), job.job_id.clone());
                        if lock(&driven).insert(key.clone()) {
                            tokio::spawn(drive(
                                engine.clone(),
                                shard.clone(),
                                key,
                                driven.clone(),
                                shutdown.clone(),
                            ));
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(shard = shard.id, error = %e, "reading batch jobs failed")
                }
            }
        }
        tokio::select! {
            _ = shutdown.changed() => {}
            _ = tokio::time::sleep(SCAN_EVERY) => {}
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Spaces operations `interval` apart (across the concurrent ones of a step).
struct Pacer {
    next: Instant,
    interval: Duration,
}

impl Pacer {
    fn new(per_second: f32) -> Self {
        let rate = if per_second > 0.0 && per_second <= DEFAULT_OPERATIONS_PER_SECOND {
            per_second
        } else {
            DEFAULT_OPERATIONS_PER_SECOND
        };
        Self {
            next: Instant::now(),
            interval: Duration::from_secs_f64(1.0 / f64::from(rate)),
        }
    }

    fn slot(&mut self) -> Instant {
        let slot = self.next.max(Instant::now());
        self.next = slot + self.interval;
        slot
    }
}

async fn drive(
    engine: Arc<HistoryEngine>,
    shard: Arc<Shard>,
    key: JobKey,
    driven: Arc<Mutex<HashSet<JobKey>>>,
    shutdown: watch::Receiver<bool>,
) {
    let history: Arc<dyn HistoryService> = match engine.router.get() {
        Some(router) => router.clone(),
        None => engine.clone(),
    };
    let mut pacer: Option<Pacer> = None;
    loop {
        if *shutdown.borrow() || !engine.is_leader(&shard) {
            break;
        }
        let job = match shard.tables.batch_job(&key.0, &key.1) {
            Ok(Some(job)) if is_running(&job) => job,
            Ok(_) => break,
            Err(e) => {
                tracing::error!(shard = shard.id, namespace_id = %key.0, job = %key.1, error = %e, "reading a batch job failed");
                break;
            }
        };
        let pacer = pacer.get_or_insert_with(|| Pacer::new(job.max_operations_per_second));
        let step = async {
            if job.page_index < job.page.len() as i64 {
                apply_step(&*history, &engine, &shard, &job, pacer, &shutdown).await
            } else if job.more_pages {
                next_page(&*history, &job).await
            } else {
                // Completed at apply with the last step; nothing left to do.
                Ok(None)
            }
        };
        // A stopping node lets go at once (the engine, and so the database, is held here).
        let step = tokio::select! {
            step = step => step,
            _ = stopping(&shutdown) => break,
        };
        let op = match step {
            Ok(Some(op)) => op,
            // Leadership or shutdown came in between: the next leader resumes.
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(shard = shard.id, namespace_id = %key.0, job = %key.1, error = %e, "batch job step failed; retrying");
                pause(&shutdown).await;
                continue;
            }
        };
        let command = Kind::BatchJob(cmd::BatchCommand {
            namespace_id: job.namespace_id.clone(),
            job_id: job.job_id.clone(),
            op: Some(op),
        });
        if let Err(e) = engine.propose(&shard, command).await {
            if e.not_leader_detail().is_some() {
                break;
            }
            // A refused cursor means the row moved on (a stop, or another driver): re-read it.
            if e.code != tonic::Code::FailedPrecondition {
                tracing::warn!(shard = shard.id, namespace_id = %key.0, job = %key.1, error = %e, "recording a batch step failed");
                pause(&shutdown).await;
            }
        }
    }
    lock(&driven).remove(&key);
}

async fn stopping(shutdown: &watch::Receiver<bool>) {
    let mut shutdown = shutdown.clone();
    let _ = shutdown.wait_for(|stop| *stop).await;
}

async fn pause(shutdown: &watch::Receiver<bool>) {
    tokio::select! {
        _ = tokio::time::sleep(RETRY_PAUSE) => {}
        _ = stopping(shutdown) => {}
    }
}

/// Applies the operation to the next executions of the page; the progress to record, or `None`
/// if this node should stop driving the job.
async fn apply_step(
    history: &dyn HistoryService,
    engine: &HistoryEngine,
    shard: &Shard,
    job: &pb::BatchJobState,
    pacer: &mut Pacer,
    shutdown: &watch::Receiver<bool>,
) -> ApiResult<Option<Op>> {
    let request = job.request.clone().unwrap_or_default();
    let operation = BatchOperation::of(&request)?;
    let start = job.page_index as usize;
    let end = (start + CONCURRENCY).min(job.page.len());
    let targets = &job.page[start..end];
    let slots: Vec<Instant> = targets.iter().map(|_| pacer.slot()).collect();
    let outcomes = futures::future::join_all(targets.iter().zip(slots).map(|(execution, slot)| {
        let operation = &operation;
        let request = &request;
        async move {
            tokio::time::sleep_until(slot).await;
            let mut attempt = 1;
            loop {
                let outcome = operation
                    .apply(
                        history,
                        &request.namespace,
                        &job.namespace_id,
                        &job.job_id,
                        execution,
                    )
                    .await;
                match outcome {
                    Ok(()) => return true,
                    Err(e) if attempt < ATTEMPTS && may_pass(&e) => {
                        attempt += 1;
                        let backoff = Duration::from_millis(100u64 << attempt.min(4));
                        tokio::time::sleep(backoff).await;
                    }
                    Err(e) => {
                        tracing::info!(job = %job.job_id, workflow_id = %execution.workflow_id,
                            error = %e, "batch operation failed on an execution");
                        return false;
                    }
                }
            }
        }
    }))
    .await;
    if *shutdown.borrow() || !engine.is_leader(shard) {
        return Ok(None);
    }
    let failed = outcomes.iter().filter(|ok| !**ok).count() as i64;
    Ok(Some(Op::Progress(cmd::BatchProgress {
        pages_loaded: job.pages_loaded,
        page_index: job.page_index,
        applied: outcomes.len() as i64,
        failed,
    })))
}

/// Errors that a later attempt may not meet (Temporal's batcher retries these in place).
fn may_pass(e: &ApiError) -> bool {
    matches!(
        e.code,
        tonic::Code::Unavailable
            | tonic::Code::ResourceExhausted
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Aborted
            | tonic::Code::Cancelled
            | tonic::Code::Internal
            | tonic::Code::Unknown
    )
}

/// Reads the query's next page (every shard's runs, through the router in a cluster).
/// A query the visibility store refuses fails the job (as Temporal's batcher fails its workflow
/// on a non-retryable error).
async fn next_page(history: &dyn HistoryService, job: &pb::BatchJobState) -> ApiResult<Option<Op>> {
    let answer = history
        .list_workflows(ListWorkflowsRequest {
            namespace_id: job.namespace_id.clone(),
            query: job.query.clone(),
            page_size: PAGE_SIZE,
            search_attribute_types: job.search_attribute_types.clone(),
            next_page_token: job.next_page_token.clone(),
            count_only: false,
            shards: Vec::new(),
            standalone_activities: false,
        })
        .await;
    let answer = match answer {
        Ok(answer) => answer,
        Err(e) if e.code == tonic::Code::InvalidArgument => {
            return Ok(Some(Op::Stop(cmd::BatchStop {
                reason: format!("failed to fetch next page: {}", e.message),
                identity: String::new(),
            })));
        }
        Err(e) => return Err(e),
    };
    let executions = answer
        .executions
        .into_iter()
        .filter_map(|d| d.workflow_execution_info.and_then(|i| i.execution))
        .collect();
    Ok(Some(Op::Page(cmd::BatchPage {
        pages_loaded: job.pages_loaded,
        executions,
        more: !answer.next_page_token.is_empty(),
        next_page_token: answer.next_page_token,
    })))
}
