//! The shard leader's data-lifecycle sweep (runs beside the timer and outbox processors).
//!
//! Retention itself needs no sweep: the run's close arms a `KIND_DELETE_RUN` timer in the same
//! write batch (`apply::delete`). This loop does what no timer covers:
//!
//! - **Deleted namespaces.** OperatorService.DeleteNamespace marks the namespace DELETED on the
//!   metadata group; each shard leader then deletes the namespace's runs in its shard (running
//!   ones are terminated first), a page at a time. The leader of the metadata group removes the
//!   record once no shard replica on this node holds a run of it any more and the namespace's
//!   delete delay has passed (every history node holds every shard, so its replicas see them
//!   all; a replica that lags only delays the removal to a later round).
//! - **Runs closed before retention existed** have no retention timer. The first sweep of each
//!   leadership term deletes those whose retention (the namespace's current one) has passed;
//!   later ones are caught by the next term's first sweep (a node restart, a leader change).

use std::sync::Arc;
use std::time::Duration;

use chronicle_proto::chronicle::history::v1::{self as cmd, shard_command::Kind};
use chronicle_proto::chronicle::persistence::v1 as pb;
use chronicle_proto::temporal::api::common::v1::WorkflowExecution;
use chronicle_proto::temporal::api::enums::v1::{NamespaceState, WorkflowExecutionStatus};
use chronicle_types::time::now_millis;
use tokio::sync::watch;

use crate::engine::{HistoryEngine, Shard};

/// How often a leader looks for work.
const SWEEP_EVERY: Duration = Duration::from_secs(2);
/// Runs deleted per shard and round (each is one command; they share log entries).
const DELETES_PER_ROUND: usize = 500;

pub(crate) fn spawn(
    engine: Arc<HistoryEngine>,
    shard: Arc<Shard>,
    shutdown: watch::Receiver<bool>,
) {
    tokio::spawn(sweep_loop(engine, shard, shutdown));
}

async fn sweep_loop(
    engine: Arc<HistoryEngine>,
    shard: Arc<Shard>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut was_leader = false;
    loop {
        tokio::select! {
            _ = shutdown.changed() => {}
            _ = tokio::time::sleep(SWEEP_EVERY) => {}
        }
        if *shutdown.borrow() || shard.retired.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        // The metadata group's leader removes deleted records whose runs are all gone, from the
        // loop of its first shard (the metadata group has no processors of its own), whether or
        // not it leads that shard: with leadership spread, the two rarely share a leader.
        if shard.id == 0 && engine.is_leader(&engine.metadata) {
            match engine.metadata.tables.namespaces() {
                Ok(namespaces) => remove_empty_namespaces(&engine, &namespaces).await,
                Err(e) => tracing::error!(error = %e, "reading namespaces failed"),
            }
        }
        if !engine.is_leader(&shard) {
            was_leader = false;
            continue;
        }
        let namespaces = match engine.metadata.tables.namespaces() {
            Ok(records) => records,
            Err(e) => {
                tracing::error!(shard = shard.id, error = %e, "reading namespaces failed");
                continue;
            }
        };
        if !was_leader {
            was_leader = true;
            expire_untimed_runs(&engine, &shard, &namespaces).await;
        }
        for record in namespaces.iter().filter(|r| is_deleted(r)) {
            let id = record
                .info
                .as_ref()
                .map(|i| i.id.clone())
                .unwrap_or_default();
            delete_namespace_runs(&engine, &shard, &id).await;
        }
    }
}

fn is_deleted(record: &pb::NamespaceRecord) -> bool {
    record
        .info
        .as_ref()
        .is_some_and(|i| i.state == NamespaceState::Deleted as i32)
}

/// Proposes the deletion of up to a page of the namespace's runs in this shard.
async fn delete_namespace_runs(engine: &HistoryEngine, shard: &Shard, namespace_id: &str) {
    if namespace_id.is_empty() {
        return;
    }
    let mut runs = Vec::new();
    let scanned = shard
        .tables
        .for_each_execution(namespace_id, None, |state| {
            runs.push(WorkflowExecution {
                workflow_id: state.workflow_id,
                run_id: state.run_id,
            });
            runs.len() < DELETES_PER_ROUND
        });
    if let Err(e) = scanned {
        tracing::error!(shard = shard.id, error = %e, "reading a deleted namespace's runs failed");
        return;
    }
    propose_deletes(engine, shard, namespace_id, runs, false).await;
}

async fn propose_deletes(
    engine: &HistoryEngine,
    shard: &Shard,
    namespace_id: &str,
    runs: Vec<WorkflowExecution>,
    closed_only: bool,
) {
    let deletes = runs.into_iter().map(|execution| {
        engine.propose(
            shard,
            Kind::DeleteWorkflowExecution(cmd::DeleteWorkflowExecution {
                namespace_id: namespace_id.to_string(),
                execution: Some(execution),
                closed_only,
            }),
        )
    });
    // Proposed together, so they share log entries (group commit).
    for result in futures::future::join_all(deletes).await {
        if let Err(e) = result
            && e.code != tonic::Code::NotFound
        {
            tracing::debug!(shard = shard.id, error = %e.message, "deleting a run failed; the next sweep tries again");
        }
    }
}

/// Runs closed with no retention timer (closed before retention existed) whose namespace's
/// retention has passed are deleted.
async fn expire_untimed_runs(
    engine: &HistoryEngine,
    shard: &Shard,
    namespaces: &[pb::NamespaceRecord],
) {
    let now = now_millis();
    for record in namespaces.iter().filter(|r| !is_deleted(r)) {
        let Some(info) = record.info.as_ref() else {
            continue;
        };
        let Some(retention) = record
            .config
            .as_ref()
            .and_then(|c| c.workflow_execution_retention_ttl)
        else {
            continue;
        };
        let retention_ms = retention.seconds.saturating_mul(1_000);
        let mut expired = Vec::new();
        let scanned = shard.tables.for_each_execution(&info.id, None, |state| {
            let closed = state.status != WorkflowExecutionStatus::Running as i32
                && state.status != WorkflowExecutionStatus::Unspecified as i32;
            let close_ms = state
                .close_time
                .as_ref()
                .map_or(i64::MAX, |t| t.seconds.saturating_mul(1_000));
            if closed
                && state.retention_timer_key.is_empty()
                && close_ms.saturating_add(retention_ms) <= now
            {
                expired.push(WorkflowExecution {
                    workflow_id: state.workflow_id,
                    run_id: state.run_id,
                });
            }
            true
        });
        if let Err(e) = scanned {
            tracing::error!(shard = shard.id, error = %e, "reading runs for retention failed");
            continue;
        }
        for page in expired.chunks(DELETES_PER_ROUND) {
            propose_deletes(engine, shard, &info.id, page.to_vec(), true).await;
        }
    }
}

/// Removes DELETED namespace records with no run left on any shard of this node.
/// Whether no shard holds a run (or standalone activity) of the namespace any more. In a cluster
/// each shard is asked of its leader through the router (this node may hold only some shards,
/// and its follower replicas may lag); start-dev reads its own shards.
async fn namespace_is_empty(engine: &HistoryEngine, namespace_id: &str) -> bool {
    if let Some(router) = engine.router.get() {
        for standalone_activities in [false, true] {
            let counted = router
                .list_workflows(cmd::ListWorkflowsRequest {
                    namespace_id: namespace_id.to_string(),
                    count_only: true,
                    standalone_activities,
                    ..Default::default()
                })
                .await;
            match counted {
                Ok(answer) if answer.count == 0 => {}
                Ok(_) => return false,
                Err(e) => {
                    tracing::debug!(error = %e.message, "counting a deleted namespace's runs failed; the next sweep tries again");
                    return false;
                }
            }
        }
        return true;
    }
    engine.shards.iter().all(|shard| {
        let mut any = false;
        let read = shard.tables.for_each_execution(namespace_id, None, |_| {
            any = true;
            false
        });
        read.is_ok() && !any
    })
}

async fn remove_empty_namespaces(engine: &HistoryEngine, namespaces: &[pb::NamespaceRecord]) {
    let now = now_millis();
    for record in namespaces.iter().filter(|r| is_deleted(r)) {
        let Some(info) = record.info.as_ref() else {
            continue;
        };
        let due = record.delete_after.as_ref().map_or(0, |t| {
            t.seconds
                .saturating_mul(1_000)
                .saturating_add(i64::from(t.nanos) / 1_000_000)
        });
        if due > now {
            continue;
        }
        if !namespace_is_empty(engine, &info.id).await {
            continue;
        }
        let removed = engine
            .propose(
                &engine.metadata,
                Kind::DeleteNamespace(cmd::DeleteNamespace {
                    name: info.name.clone(),
                    remove_record: true,
                    ..Default::default()
                }),
            )
            .await;
        if let Err(e) = removed {
            tracing::debug!(error = %e.message, "removing a deleted namespace failed; the next sweep tries again");
        }
    }
}
