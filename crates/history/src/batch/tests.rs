//! Batch jobs applied directly: the cursor every step must name (a stale or repeated step
//! changes nothing), counts, completion at the last step, stop, duplicate job IDs, operations
//! not served yet.

use chronicle_proto::chronicle::history::v1::{self as cmd, batch_command::Op, command_result};
use chronicle_proto::chronicle::persistence::v1 as pb;
use chronicle_proto::temporal::api::batch::v1::{
    BatchOperationCancelActivities, BatchOperationSignal, BatchOperationTermination,
};
use chronicle_proto::temporal::api::common::v1::{Execution, WorkflowExecution};
use chronicle_proto::temporal::api::enums::v1::{
    BatchOperationState, BatchOperationType, ExecutionType,
};
use chronicle_proto::temporal::api::workflowservice::v1::{
    self as ws, start_batch_operation_request::Operation,
};
use chronicle_storage::{Db, DbOptions, ShardBatch, ShardTables};
use chronicle_types::ApiError;
use chronicle_types::time::from_millis;

use super::apply;
use crate::apply::ApplyError;

const NS: &str = "ns-id";
const JOB: &str = "job-1";
const T0: i64 = 1_704_067_200_000;

struct Harness {
    db: Db,
    _dir: tempfile::TempDir,
}

impl Harness {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Db::open(dir.path(), DbOptions::default()).expect("db");
        Self { db, _dir: dir }
    }

    fn apply(&self, now: i64, op: Op) -> Result<pb::BatchJobState, ApiError> {
        let mut batch = ShardBatch::new(ShardTables::new(self.db.clone(), 0));
        let outcome = apply::command(
            &mut batch,
            from_millis(now),
            cmd::BatchCommand {
                namespace_id: NS.into(),
                job_id: JOB.into(),
                op: Some(op),
            },
        );
        let outcome = match outcome {
            Ok(command_result::Result::BatchJob(r)) => Ok(r.state.unwrap_or_default()),
            Ok(_) => panic!("unexpected result"),
            Err(ApplyError::Rejected(e)) => Err(e),
            Err(_) => panic!("unexpected apply error"),
        };
        if outcome.is_ok() {
            batch.commit().expect("commit");
        }
        outcome
    }

    fn stored(&self) -> pb::BatchJobState {
        ShardTables::new(self.db.clone(), 0)
            .batch_job(NS, JOB)
            .expect("read")
            .expect("stored job")
    }
}

fn execution(id: &str) -> Execution {
    Execution {
        r#type: ExecutionType::Workflow as i32,
        business_id: id.into(),
        run_id: String::new(),
    }
}

fn start(request: ws::StartBatchOperationRequest, query: &str, estimate: i64) -> Op {
    Op::Start(cmd::BatchStart {
        request: Some(request),
        query: query.into(),
        search_attribute_types: Default::default(),
        total_estimate: estimate,
        max_operations_per_second: 0.0,
    })
}

fn terminate_listed(ids: &[&str]) -> Op {
    let request = ws::StartBatchOperationRequest {
        namespace: "default".into(),
        job_id: JOB.into(),
        reason: "r".into(),
        target_executions: ids.iter().map(|id| execution(id)).collect(),
        operation: Some(Operation::TerminationOperation(
            BatchOperationTermination::default(),
        )),
        ..Default::default()
    };
    start(request, "", ids.len() as i64)
}

fn progress(pages_loaded: i64, page_index: i64, applied: i64, failed: i64) -> Op {
    Op::Progress(cmd::BatchProgress {
        pages_loaded,
        page_index,
        applied,
        failed,
    })
}

#[test]
fn listed_executions_complete_step_by_step_and_stale_steps_change_nothing() {
    let h = Harness::new();
    let started = h.apply(T0, terminate_listed(&["a", "b", "c"])).unwrap();
    assert_eq!(started.state, BatchOperationState::Running as i32);
    assert_eq!(
        started.operation_type,
        BatchOperationType::TerminateWorkflow as i32
    );
    let stored = h.stored();
    assert_eq!(stored.page.len(), 3);
    assert_eq!((stored.pages_loaded, stored.page_index), (1, 0));
    assert!(!stored.more_pages);

    h.apply(T0 + 1, progress(1, 0, 2, 1)).unwrap();
    // The same step again (a driver that lost its leadership, or a resend) is refused.
    let refused = h.apply(T0 + 2, progress(1, 0, 2, 1)).unwrap_err();
    assert_eq!(refused.code, tonic::Code::FailedPrecondition);
    // Past the end of the page, more failures than applications: refused too.
    assert!(h.apply(T0 + 2, progress(1, 2, 2, 0)).is_err());
    assert!(h.apply(T0 + 2, progress(1, 2, 1, 2)).is_err());
    assert!(h.apply(T0 + 2, progress(0, 2, 1, 0)).is_err());
    let stored = h.stored();
    assert_eq!(
        (
            stored.page_index,
            stored.complete_count,
            stored.failure_count
        ),
        (2, 1, 1)
    );

    let done = h.apply(T0 + 3, progress(1, 2, 1, 0)).unwrap();
    assert_eq!(done.state, BatchOperationState::Completed as i32);
    assert_eq!(done.close_time, Some(from_millis(T0 + 3)));
    assert_eq!(
        (done.total_estimate, done.complete_count, done.failure_count),
        (3, 2, 1)
    );
    assert!(h.stored().page.is_empty());
    assert!(h.apply(T0 + 4, progress(1, 3, 1, 0)).is_err());
}

#[test]
fn query_jobs_load_pages_until_the_last() {
    let h = Harness::new();
    let request = ws::StartBatchOperationRequest {
        namespace: "default".into(),
        job_id: JOB.into(),
        reason: "r".into(),
        visibility_query: "WorkflowType = 'x'".into(),
        operation: Some(Operation::SignalOperation(BatchOperationSignal {
            signal: "s".into(),
            ..Default::default()
        })),
        ..Default::default()
    };
    h.apply(T0, start(request, "(WorkflowType = 'x') AND (...)", 1))
        .unwrap();
    let stored = h.stored();
    assert_eq!((stored.pages_loaded, stored.more_pages), (0, true));
    let page = |pages_loaded: i64, ids: &[&str], more: bool| {
        Op::Page(cmd::BatchPage {
            pages_loaded,
            executions: ids
                .iter()
                .map(|id| WorkflowExecution {
                    workflow_id: id.to_string(),
                    run_id: "r".into(),
                })
                .collect(),
            next_page_token: if more { b"t".to_vec() } else { Vec::new() },
            more,
        })
    };
    h.apply(T0 + 1, page(0, &["a", "b"], true)).unwrap();
    // A page while the current one is unfinished, or for another cursor, is refused.
    assert!(h.apply(T0 + 2, page(1, &["c"], false)).is_err());
    assert!(h.apply(T0 + 2, page(0, &["c"], false)).is_err());
    h.apply(T0 + 2, progress(1, 0, 2, 0)).unwrap();
    let state = h.apply(T0 + 3, page(1, &["c"], false)).unwrap();
    assert_eq!(state.state, BatchOperationState::Running as i32);
    let done = h.apply(T0 + 4, progress(2, 0, 1, 0)).unwrap();
    assert_eq!(done.state, BatchOperationState::Completed as i32);
    // Three done although the count at the start said one: the total follows.
    assert_eq!((done.total_estimate, done.complete_count), (3, 3));

    // An empty last page completes the job at once.
    let h = Harness::new();
    let request = ws::StartBatchOperationRequest {
        operation: Some(Operation::TerminationOperation(Default::default())),
        visibility_query: "q".into(),
        ..Default::default()
    };
    h.apply(T0, start(request, "q", 0)).unwrap();
    let done = h.apply(T0 + 1, page(0, &[], false)).unwrap();
    assert_eq!(done.state, BatchOperationState::Completed as i32);
}

#[test]
fn stop_fails_the_job_once_and_duplicates_are_refused() {
    let h = Harness::new();
    h.apply(T0, terminate_listed(&["a", "b"])).unwrap();
    let duplicate = h.apply(T0 + 1, terminate_listed(&["c"])).unwrap_err();
    assert_eq!(duplicate.code, tonic::Code::AlreadyExists);
    assert!(
        duplicate.message.contains("already running"),
        "{}",
        duplicate.message
    );

    let stop = || {
        Op::Stop(cmd::BatchStop {
            reason: "enough".into(),
            identity: "me".into(),
        })
    };
    let stopped = h.apply(T0 + 2, stop()).unwrap();
    assert_eq!(stopped.state, BatchOperationState::Failed as i32);
    assert_eq!(stopped.close_time, Some(from_millis(T0 + 2)));
    assert_eq!(stopped.stop_reason, "enough");
    let again = h.apply(T0 + 3, stop()).unwrap_err();
    assert_eq!(again.code, tonic::Code::NotFound);
    assert_eq!(again.message, "workflow execution already completed");
    // The executor's step after the stop is refused; the counts stay.
    assert!(h.apply(T0 + 3, progress(1, 0, 1, 0)).is_err());
    assert_eq!(h.stored().complete_count, 0);
    let duplicate = h.apply(T0 + 4, terminate_listed(&["c"])).unwrap_err();
    assert!(
        duplicate.message.contains("RejectDuplicate"),
        "{}",
        duplicate.message
    );

    let h = Harness::new();
    let missing = h.apply(T0, progress(1, 0, 1, 0)).unwrap_err();
    assert_eq!(missing.code, tonic::Code::NotFound);
}

#[test]
fn operations_not_served_are_refused_and_write_nothing() {
    let h = Harness::new();
    let request = ws::StartBatchOperationRequest {
        namespace: "default".into(),
        job_id: JOB.into(),
        reason: "r".into(),
        visibility_query: "q".into(),
        operation: Some(Operation::CancelActivitiesOperation(
            BatchOperationCancelActivities::default(),
        )),
        ..Default::default()
    };
    let refused = h.apply(T0, start(request, "q", 0)).unwrap_err();
    assert_eq!(refused.code, tonic::Code::InvalidArgument);
    assert!(
        ShardTables::new(h.db.clone(), 0)
            .batch_job(NS, JOB)
            .unwrap()
            .is_none()
    );
}
