//! Child workflows end to end with the official Rust SDK: children on the parent's shard and on
//! others, results and failures reported to the parent, a workflow ID in use, parent close
//! policies, cancellation of a child from its parent, a restart in the middle; and the command
//! checks on raw gRPC.

use std::time::{Duration, Instant};

use chronicle_proto::temporal::api::command::v1::{
    Command, SignalExternalWorkflowExecutionCommandAttributes,
    StartChildWorkflowExecutionCommandAttributes, command,
};
use chronicle_proto::temporal::api::common::v1::{WorkflowExecution, WorkflowType};
use chronicle_proto::temporal::api::enums::v1::{
    CommandType, EventType, ParentClosePolicy as ProtoParentClosePolicy,
    StartChildWorkflowExecutionFailedCause as ProtoStartFailedCause, WorkflowExecutionStatus,
    WorkflowTaskFailedCause,
};
use chronicle_proto::temporal::api::history::v1::HistoryEvent;
use chronicle_proto::temporal::api::history::v1::history_event::Attributes;
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use chronicle_server::RunningServer;
use temporalio_client::{WorkflowGetResultOptions, WorkflowStartOptions};
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    ApplicationFailure, ChildWorkflowOptions, ChildWorkflowStartError, ParentClosePolicy,
    WorkflowContext, WorkflowResult,
};

use crate::common::*;

const SHARDS: u32 = 4;

// --- workflows ---------------------------------------------------------------------------

/// Doubles its input after a short timer.
#[workflow]
#[derive(Default)]
pub struct Doubler;

#[workflow_methods]
impl Doubler {
    #[run]
    pub async fn run(ctx: &mut WorkflowContext<Self>, x: i64) -> WorkflowResult<i64> {
        ctx.timer(Duration::from_millis(100)).await;
        Ok(x * 2)
    }
}

/// Sleeps `ms` milliseconds, then doubles its input.
#[workflow]
#[derive(Default)]
pub struct SlowDoubler;

#[workflow_methods]
impl SlowDoubler {
    #[run]
    pub async fn run(ctx: &mut WorkflowContext<Self>, input: (i64, u64)) -> WorkflowResult<i64> {
        ctx.timer(Duration::from_millis(input.1)).await;
        Ok(input.0 * 2)
    }
}

/// Starts a `Doubler` child per ID (input `i + 1` for the i-th), then sums their results.
#[workflow]
#[derive(Default)]
pub struct FanOutParent;

#[workflow_methods]
impl FanOutParent {
    #[run]
    pub async fn run(ctx: &mut WorkflowContext<Self>, ids: Vec<String>) -> WorkflowResult<i64> {
        let mut started = Vec::new();
        for (i, id) in ids.into_iter().enumerate() {
            started.push(
                ctx.start_child_workflow(
                    Doubler::run,
                    i as i64 + 1,
                    ChildWorkflowOptions::workflow_id(id),
                )
                .await?,
            );
        }
        let mut sum = 0;
        for child in started {
            sum += child.result().await?;
        }
        Ok(sum)
    }
}

/// Like `FanOutParent` with `SlowDoubler` children (for the restart test).
#[workflow]
#[derive(Default)]
pub struct SlowParent;

#[workflow_methods]
impl SlowParent {
    #[run]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        input: (Vec<String>, u64),
    ) -> WorkflowResult<i64> {
        let (ids, ms) = input;
        let mut started = Vec::new();
        for (i, id) in ids.into_iter().enumerate() {
            started.push(
                ctx.start_child_workflow(
                    SlowDoubler::run,
                    (i as i64 + 1, ms),
                    ChildWorkflowOptions::workflow_id(id),
                )
                .await?,
            );
        }
        let mut sum = 0;
        for child in started {
            sum += child.result().await?;
        }
        Ok(sum)
    }
}

#[workflow]
#[derive(Default)]
pub struct FailingChild;

#[workflow_methods]
impl FailingChild {
    #[run]
    pub async fn run(_ctx: &mut WorkflowContext<Self>, _x: i64) -> WorkflowResult<i64> {
        Err(ApplicationFailure::non_retryable("child broke").into())
    }
}

/// Runs a `FailingChild` and answers with the messages of the failure it got.
#[workflow]
#[derive(Default)]
pub struct FailureParent;

#[workflow_methods]
impl FailureParent {
    #[run]
    pub async fn run(ctx: &mut WorkflowContext<Self>, id: String) -> WorkflowResult<Vec<String>> {
        let child = ctx
            .start_child_workflow(FailingChild::run, 1, ChildWorkflowOptions::workflow_id(id))
            .await?;
        match child.result().await {
            Ok(_) => Ok(vec!["child succeeded".into()]),
            Err(e) => {
                let mut messages = Vec::new();
                let mut failure = e.failure().cloned();
                while let Some(f) = failure {
                    messages.push(f.message.clone());
                    failure = f.cause.map(|c| *c);
                }
                Ok(messages)
            }
        }
    }
}

/// Waits until cancelled or terminated.
#[workflow]
#[derive(Default)]
pub struct Waiter {
    finished: bool,
}

#[workflow_methods]
impl Waiter {
    #[run]
    pub async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<String> {
        ctx.wait_condition(|s| s.finished).await?;
        Ok("finished".into())
    }
}

/// Tries to start a `Waiter` child under an ID; answers how the start went.
#[workflow]
#[derive(Default)]
pub struct ConflictParent;

#[workflow_methods]
impl ConflictParent {
    #[run]
    pub async fn run(ctx: &mut WorkflowContext<Self>, id: String) -> WorkflowResult<String> {
        match ctx
            .start_child_workflow(Waiter::run, (), ChildWorkflowOptions::workflow_id(id))
            .await
        {
            Ok(_) => Ok("started".into()),
            Err(ChildWorkflowStartError::StartFailed { cause, .. }) => Ok(format!("{cause:?}")),
            Err(e) => Err(e.into()),
        }
    }
}

/// Starts `Waiter` children with the given parent close policies, then waits forever.
#[workflow]
#[derive(Default)]
pub struct PolicyParent {
    never: bool,
}

#[workflow_methods]
impl PolicyParent {
    #[run]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        children: Vec<(String, i32)>,
    ) -> WorkflowResult<()> {
        let mut started = Vec::new();
        for (id, policy) in children {
            let policy = match policy {
                2 => ParentClosePolicy::Abandon,
                3 => ParentClosePolicy::RequestCancel,
                _ => ParentClosePolicy::Terminate,
            };
            let options = ChildWorkflowOptions::builder()
                .workflow_id(id)
                .parent_close_policy(policy)
                .build();
            started.push(ctx.start_child_workflow(Waiter::run, (), options).await?);
        }
        ctx.wait_condition(|s| s.never).await?;
        Ok(())
    }
}

/// Starts a `Waiter` child, cancels it, and answers with how its result ended.
#[workflow]
#[derive(Default)]
pub struct CancelParent;

#[workflow_methods]
impl CancelParent {
    #[run]
    pub async fn run(ctx: &mut WorkflowContext<Self>, id: String) -> WorkflowResult<String> {
        let child = ctx
            .start_child_workflow(Waiter::run, (), ChildWorkflowOptions::workflow_id(id))
            .await?;
        ctx.timer(Duration::from_millis(200)).await;
        child.cancel("no longer needed".into());
        match child.result().await {
            Ok(r) => Ok(format!("completed: {r}")),
            Err(e) => Ok(format!(
                "cancelled: {}",
                e.failure().map(|f| f.message.clone()).unwrap_or_default()
            )),
        }
    }
}

/// Starts two `Waiter` children, one with a 1 s run timeout (the test terminates the other),
/// and answers with the failure messages their results ended with.
#[workflow]
#[derive(Default)]
pub struct TimeoutParent;

#[workflow_methods]
impl TimeoutParent {
    #[run]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        ids: (String, String),
    ) -> WorkflowResult<Vec<String>> {
        let timed = ChildWorkflowOptions::builder()
            .workflow_id(ids.0)
            .run_timeout(Duration::from_secs(1))
            .build();
        let timing_out = ctx.start_child_workflow(Waiter::run, (), timed).await?;
        let terminated = ctx
            .start_child_workflow(Waiter::run, (), ChildWorkflowOptions::workflow_id(ids.1))
            .await?;
        let mut out = Vec::new();
        for result in [timing_out.result().await, terminated.result().await] {
            out.push(match result {
                Ok(r) => r,
                Err(e) => e.failure().map(|f| f.message.clone()).unwrap_or_default(),
            });
        }
        Ok(out)
    }
}

// --- helpers -------------------------------------------------------------------------------

async fn start_sharded(dir: &std::path::Path) -> RunningServer {
    let mut config = config_for(dir);
    config.num_shards = Some(SHARDS);
    RunningServer::start(config).await.expect("server starts")
}

async fn default_namespace_id(url: &str) -> String {
    raw_client(url)
        .await
        .describe_namespace(ws::DescribeNamespaceRequest {
            namespace: "default".into(),
            ..Default::default()
        })
        .await
        .expect("describe namespace")
        .into_inner()
        .namespace_info
        .expect("namespace info")
        .id
}

fn shard(namespace_id: &str, workflow_id: &str) -> u32 {
    chronicle_types::shard::shard_for(namespace_id, workflow_id, SHARDS)
}

/// `count` child IDs under `prefix`, at least one on `parent`'s shard and one on another.
fn child_ids(namespace_id: &str, parent: &str, prefix: &str, count: usize) -> Vec<String> {
    let home = shard(namespace_id, parent);
    let (mut same, mut other) = (Vec::new(), Vec::new());
    let mut i = 0;
    while same.is_empty() || other.len() < count - 1 {
        let id = format!("{prefix}-{i}");
        if shard(namespace_id, &id) == home {
            same.push(id);
        } else {
            other.push(id);
        }
        i += 1;
    }
    let mut ids = vec![same.remove(0)];
    ids.extend(other.into_iter().take(count - 1));
    ids
}

async fn history(url: &str, workflow_id: &str, run_id: &str) -> Vec<HistoryEvent> {
    raw_client(url)
        .await
        .get_workflow_execution_history(ws::GetWorkflowExecutionHistoryRequest {
            namespace: "default".into(),
            execution: execution(workflow_id, run_id),
            ..Default::default()
        })
        .await
        .expect("history")
        .into_inner()
        .history
        .unwrap_or_default()
        .events
}

async fn describe(url: &str, workflow_id: &str) -> ws::DescribeWorkflowExecutionResponse {
    raw_client(url)
        .await
        .describe_workflow_execution(ws::DescribeWorkflowExecutionRequest {
            namespace: "default".into(),
            execution: execution(workflow_id, ""),
        })
        .await
        .expect("describe")
        .into_inner()
}

fn status_of(d: &ws::DescribeWorkflowExecutionResponse) -> WorkflowExecutionStatus {
    WorkflowExecutionStatus::try_from(d.workflow_execution_info.as_ref().unwrap().status).unwrap()
}

/// Polls `describe` until `done` holds (or panics after 20 s).
async fn wait_for(
    url: &str,
    workflow_id: &str,
    what: &str,
    done: impl Fn(&ws::DescribeWorkflowExecutionResponse) -> bool,
) -> ws::DescribeWorkflowExecutionResponse {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let d = describe(url, workflow_id).await;
        if done(&d) {
            return d;
        }
        assert!(
            Instant::now() < deadline,
            "{workflow_id}: {what} never happened: {d:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn types(events: &[HistoryEvent]) -> Vec<EventType> {
    events
        .iter()
        .map(|e| EventType::try_from(e.event_type).unwrap())
        .collect()
}

fn count(events: &[HistoryEvent], t: EventType) -> usize {
    events.iter().filter(|e| e.event_type == t as i32).count()
}

fn worker_options(task_queue: &str) -> temporalio_sdk::WorkerOptions {
    temporalio_sdk::WorkerOptions::new(task_queue)
        .deployment_options(deployment())
        // A restarted server's matching does not know the sticky queues of the workers before
        // it: their tasks move to the normal queue after this long.
        .sticky_queue_schedule_to_start_timeout(Duration::from_secs(1))
        .register_workflow::<Doubler>()
        .expect("register")
        .register_workflow::<SlowDoubler>()
        .expect("register")
        .register_workflow::<FanOutParent>()
        .expect("register")
        .register_workflow::<SlowParent>()
        .expect("register")
        .register_workflow::<FailingChild>()
        .expect("register")
        .register_workflow::<FailureParent>()
        .expect("register")
        .register_workflow::<Waiter>()
        .expect("register")
        .register_workflow::<ConflictParent>()
        .expect("register")
        .register_workflow::<PolicyParent>()
        .expect("register")
        .register_workflow::<CancelParent>()
        .expect("register")
        .register_workflow::<TimeoutParent>()
        .expect("register")
        .build()
}

// --- tests ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parent_awaits_children_on_its_shard_and_others() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_sharded(dir.path()).await;
    let url = server.url();
    let namespace_id = default_namespace_id(&url).await;
    let client = sdk_client(&url).await;
    let task_queue = unique("children");
    let parent_id = unique("parent");
    let ids = child_ids(&namespace_id, &parent_id, &format!("{parent_id}-child"), 5);
    let runtime = runtime();
    let mut worker = new_worker(&runtime, client.clone(), worker_options(&task_queue));
    let stop = worker.shutdown_handle();
    let (run, result) = tokio::join!(worker.run(), async {
        let handle = client
            .start_workflow(
                FanOutParent::run,
                ids.clone(),
                WorkflowStartOptions::new(task_queue.clone(), parent_id.clone()).build(),
            )
            .await
            .expect("start");
        let result = handle.get_result(WorkflowGetResultOptions::default()).await;
        stop();
        result
    });
    run.expect("worker ran");
    // 2 * (1 + 2 + 3 + 4 + 5)
    assert_eq!(result.expect("parent result"), 30);

    let events = history(&url, &parent_id, "").await;
    assert_eq!(
        events.iter().map(|e| e.event_id).collect::<Vec<_>>(),
        (1..=events.len() as i64).collect::<Vec<_>>(),
        "contiguous event IDs"
    );
    for t in [
        EventType::StartChildWorkflowExecutionInitiated,
        EventType::ChildWorkflowExecutionStarted,
        EventType::ChildWorkflowExecutionCompleted,
    ] {
        assert_eq!(count(&events, t), 5, "{t:?} in {:?}", types(&events));
    }
    let parent_run = describe(&url, &parent_id)
        .await
        .workflow_execution_info
        .unwrap()
        .execution
        .unwrap()
        .run_id;
    let by_id = |id: i64| &events[(id - 1) as usize];
    for e in &events {
        match &e.attributes {
            Some(Attributes::StartChildWorkflowExecutionInitiatedEventAttributes(a)) => {
                assert_eq!(a.namespace, "default");
                assert_eq!(a.namespace_id, namespace_id);
                assert_eq!(a.task_queue.as_ref().unwrap().name, task_queue, "inherited");
                assert_eq!(
                    a.parent_close_policy,
                    ProtoParentClosePolicy::Terminate as i32
                );
                assert_eq!(
                    by_id(a.workflow_task_completed_event_id).event_type,
                    EventType::WorkflowTaskCompleted as i32
                );
                assert!(a.workflow_task_timeout.is_some());
            }
            Some(Attributes::ChildWorkflowExecutionStartedEventAttributes(a)) => {
                assert_eq!(
                    by_id(a.initiated_event_id).event_type,
                    EventType::StartChildWorkflowExecutionInitiated as i32
                );
                assert_eq!(a.workflow_type.as_ref().unwrap().name, "Doubler");
            }
            Some(Attributes::ChildWorkflowExecutionCompletedEventAttributes(a)) => {
                let started = by_id(a.started_event_id);
                let Some(Attributes::ChildWorkflowExecutionStartedEventAttributes(s)) =
                    &started.attributes
                else {
                    panic!(
                        "started_event_id {} is not a Started event",
                        a.started_event_id
                    );
                };
                assert_eq!(s.initiated_event_id, a.initiated_event_id);
                assert_eq!(s.workflow_execution, a.workflow_execution);
                assert!(a.result.is_some());
            }
            _ => {}
        }
    }
    // Each child knows its parent and root, in its first event and in describe.
    for id in &ids {
        let child_events = history(&url, id, "").await;
        let Some(Attributes::WorkflowExecutionStartedEventAttributes(started)) =
            &child_events[0].attributes
        else {
            panic!("first event");
        };
        let parent_execution = started.parent_workflow_execution.clone().unwrap();
        assert_eq!(parent_execution.workflow_id, parent_id);
        assert_eq!(parent_execution.run_id, parent_run);
        assert_eq!(started.parent_workflow_namespace, "default");
        assert_eq!(started.parent_workflow_namespace_id, namespace_id);
        assert!(started.parent_initiated_event_id > 0);
        assert_eq!(
            started.root_workflow_execution,
            Some(parent_execution.clone())
        );
        assert_eq!(
            types(&child_events).last(),
            Some(&EventType::WorkflowExecutionCompleted)
        );
        let info = describe(&url, id).await.workflow_execution_info.unwrap();
        assert_eq!(info.parent_execution, Some(parent_execution.clone()));
        assert_eq!(info.parent_namespace_id, namespace_id);
        assert_eq!(info.root_execution, Some(parent_execution));
    }
    assert!(
        ids.iter()
            .any(|id| shard(&namespace_id, id) != shard(&namespace_id, &parent_id))
            && ids
                .iter()
                .any(|id| shard(&namespace_id, id) == shard(&namespace_id, &parent_id))
    );
    server.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_child_and_workflow_id_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_sharded(dir.path()).await;
    let url = server.url();
    let client = sdk_client(&url).await;
    let task_queue = unique("children");
    let failure_parent = unique("failure-parent");
    let failing_child = unique("failing-child");
    let conflict_parent = unique("conflict-parent");
    let busy = unique("busy");
    let runtime = runtime();
    let mut worker = new_worker(&runtime, client.clone(), worker_options(&task_queue));
    let stop = worker.shutdown_handle();
    let (run, (failed, conflict)) = tokio::join!(worker.run(), async {
        // A workflow already running under the ID the second parent wants for its child.
        client
            .start_workflow(
                Waiter::run,
                (),
                WorkflowStartOptions::new(task_queue.clone(), busy.clone()).build(),
            )
            .await
            .expect("start busy");
        let failure = client
            .start_workflow(
                FailureParent::run,
                failing_child.clone(),
                WorkflowStartOptions::new(task_queue.clone(), failure_parent.clone()).build(),
            )
            .await
            .expect("start");
        let conflict = client
            .start_workflow(
                ConflictParent::run,
                busy.clone(),
                WorkflowStartOptions::new(task_queue.clone(), conflict_parent.clone()).build(),
            )
            .await
            .expect("start");
        let failed = failure
            .get_result(WorkflowGetResultOptions::default())
            .await;
        let conflict = conflict
            .get_result(WorkflowGetResultOptions::default())
            .await;
        stop();
        (failed, conflict)
    });
    run.expect("worker ran");
    let messages = failed.expect("failure parent completes");
    assert!(
        messages.iter().any(|m| m == "child broke"),
        "the child's failure reaches the parent: {messages:?}"
    );
    let events = history(&url, &failure_parent, "").await;
    let failed_event = events
        .iter()
        .find_map(|e| match &e.attributes {
            Some(Attributes::ChildWorkflowExecutionFailedEventAttributes(a)) => Some(a.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no ChildWorkflowExecutionFailed in {:?}", types(&events)));
    assert_eq!(failed_event.failure.unwrap().message, "child broke");
    assert_eq!(
        failed_event.workflow_execution.unwrap().workflow_id,
        failing_child
    );
    assert_eq!(
        status_of(&describe(&url, &failing_child).await),
        WorkflowExecutionStatus::Failed
    );

    assert_eq!(
        conflict.expect("conflict parent completes"),
        "WorkflowAlreadyExists"
    );
    let events = history(&url, &conflict_parent, "").await;
    let start_failed = events
        .iter()
        .find_map(|e| match &e.attributes {
            Some(Attributes::StartChildWorkflowExecutionFailedEventAttributes(a)) => {
                Some(a.clone())
            }
            _ => None,
        })
        .unwrap_or_else(|| {
            panic!(
                "no StartChildWorkflowExecutionFailed in {:?}",
                types(&events)
            )
        });
    assert_eq!(
        start_failed.cause,
        ProtoStartFailedCause::WorkflowAlreadyExists as i32
    );
    assert_eq!(start_failed.workflow_id, busy);
    assert_eq!(
        events[(start_failed.initiated_event_id - 1) as usize].event_type,
        EventType::StartChildWorkflowExecutionInitiated as i32
    );
    assert_eq!(count(&events, EventType::ChildWorkflowExecutionStarted), 0);
    // The busy workflow is untouched.
    assert_eq!(
        status_of(&describe(&url, &busy).await),
        WorkflowExecutionStatus::Running
    );
    server.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_timeout_and_termination_reach_the_parent() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_sharded(dir.path()).await;
    let url = server.url();
    let client = sdk_client(&url).await;
    let task_queue = unique("children");
    let parent_id = unique("timeout-parent");
    let timing_out = format!("{parent_id}-times-out");
    let terminated = format!("{parent_id}-terminated");
    let runtime = runtime();
    let mut worker = new_worker(&runtime, client.clone(), worker_options(&task_queue));
    let stop = worker.shutdown_handle();
    let mut raw = raw_client(&url).await;
    let (run, result) = tokio::join!(worker.run(), async {
        let handle = client
            .start_workflow(
                TimeoutParent::run,
                (timing_out.clone(), terminated.clone()),
                WorkflowStartOptions::new(task_queue.clone(), parent_id.clone()).build(),
            )
            .await
            .expect("start");
        wait_for(&url, &parent_id, "the second child started", |d| {
            d.pending_children
                .iter()
                .any(|c| c.workflow_id == terminated && !c.run_id.is_empty())
        })
        .await;
        raw.terminate_workflow_execution(ws::TerminateWorkflowExecutionRequest {
            namespace: "default".into(),
            workflow_execution: execution(&terminated, ""),
            reason: "stop it".into(),
            ..Default::default()
        })
        .await
        .expect("terminate child");
        let result = handle.get_result(WorkflowGetResultOptions::default()).await;
        stop();
        result
    });
    run.expect("worker ran");
    assert_eq!(result.expect("parent completes").len(), 2);
    let events = history(&url, &parent_id, "").await;
    let timed_out = events
        .iter()
        .find_map(|e| match &e.attributes {
            Some(Attributes::ChildWorkflowExecutionTimedOutEventAttributes(a)) => Some(a.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no TimedOut in {:?}", types(&events)));
    assert_eq!(
        timed_out.workflow_execution.unwrap().workflow_id,
        timing_out
    );
    assert_eq!(
        timed_out.retry_state,
        chronicle_proto::temporal::api::enums::v1::RetryState::RetryPolicyNotSet as i32
    );
    let ended = events
        .iter()
        .find_map(|e| match &e.attributes {
            Some(Attributes::ChildWorkflowExecutionTerminatedEventAttributes(a)) => Some(a.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no Terminated in {:?}", types(&events)));
    assert_eq!(ended.workflow_execution.unwrap().workflow_id, terminated);
    assert_eq!(
        events[(ended.started_event_id - 1) as usize].event_type,
        EventType::ChildWorkflowExecutionStarted as i32
    );
    server.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parent_close_policies_terminate_cancel_or_abandon_children() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_sharded(dir.path()).await;
    let url = server.url();
    let client = sdk_client(&url).await;
    let task_queue = unique("children");
    let parent_id = unique("policy-parent");
    let terminated = format!("{parent_id}-terminate");
    let abandoned = format!("{parent_id}-abandon");
    let cancelled = format!("{parent_id}-cancel");
    let runtime = runtime();
    let mut worker = new_worker(&runtime, client.clone(), worker_options(&task_queue));
    let stop = worker.shutdown_handle();
    let mut raw = raw_client(&url).await;
    let (run, ()) = tokio::join!(worker.run(), async {
        client
            .start_workflow(
                PolicyParent::run,
                vec![
                    (terminated.clone(), 1),
                    (abandoned.clone(), 2),
                    (cancelled.clone(), 3),
                ],
                WorkflowStartOptions::new(task_queue.clone(), parent_id.clone()).build(),
            )
            .await
            .expect("start");
        let described = wait_for(&url, &parent_id, "three started children", |d| {
            d.pending_children.len() == 3 && d.pending_children.iter().all(|c| !c.run_id.is_empty())
        })
        .await;
        let policies: Vec<(String, i32)> = described
            .pending_children
            .iter()
            .map(|c| (c.workflow_id.clone(), c.parent_close_policy))
            .collect();
        assert_eq!(
            policies,
            vec![
                (terminated.clone(), ProtoParentClosePolicy::Terminate as i32),
                (abandoned.clone(), ProtoParentClosePolicy::Abandon as i32),
                (
                    cancelled.clone(),
                    ProtoParentClosePolicy::RequestCancel as i32
                ),
            ]
        );
        raw.terminate_workflow_execution(ws::TerminateWorkflowExecutionRequest {
            namespace: "default".into(),
            workflow_execution: execution(&parent_id, ""),
            reason: "test over".into(),
            ..Default::default()
        })
        .await
        .expect("terminate parent");
        wait_for(&url, &terminated, "termination by policy", |d| {
            status_of(d) == WorkflowExecutionStatus::Terminated
        })
        .await;
        wait_for(&url, &cancelled, "cancellation by policy", |d| {
            status_of(d) == WorkflowExecutionStatus::Canceled
        })
        .await;
        stop();
    });
    run.expect("worker ran");

    let events = history(&url, &terminated, "").await;
    let Some(Attributes::WorkflowExecutionTerminatedEventAttributes(t)) =
        &events.last().unwrap().attributes
    else {
        panic!("terminated last: {:?}", types(&events));
    };
    assert_eq!(t.reason, "by parent close policy");
    assert_eq!(t.identity, "history-service");

    let events = history(&url, &cancelled, "").await;
    let request = events
        .iter()
        .find_map(|e| match &e.attributes {
            Some(Attributes::WorkflowExecutionCancelRequestedEventAttributes(a)) => Some(a.clone()),
            _ => None,
        })
        .expect("cancel requested");
    assert_eq!(
        request.external_workflow_execution.unwrap().workflow_id,
        parent_id
    );

    // ABANDON: still running well after the others were dealt with.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        status_of(&describe(&url, &abandoned).await),
        WorkflowExecutionStatus::Running
    );
    // The closed parent recorded nothing after its termination.
    let parent_events = history(&url, &parent_id, "").await;
    assert_eq!(
        types(&parent_events).last(),
        Some(&EventType::WorkflowExecutionTerminated)
    );
    raw.terminate_workflow_execution(ws::TerminateWorkflowExecutionRequest {
        namespace: "default".into(),
        workflow_execution: execution(&abandoned, ""),
        ..Default::default()
    })
    .await
    .expect("clean up");
    server.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parent_cancels_its_child() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_sharded(dir.path()).await;
    let url = server.url();
    let client = sdk_client(&url).await;
    let task_queue = unique("children");
    let parent_id = unique("cancel-parent");
    let child_id = unique("cancelled-child");
    let runtime = runtime();
    let mut worker = new_worker(&runtime, client.clone(), worker_options(&task_queue));
    let stop = worker.shutdown_handle();
    let (run, result) = tokio::join!(worker.run(), async {
        let handle = client
            .start_workflow(
                CancelParent::run,
                child_id.clone(),
                WorkflowStartOptions::new(task_queue.clone(), parent_id.clone()).build(),
            )
            .await
            .expect("start");
        let result = handle.get_result(WorkflowGetResultOptions::default()).await;
        stop();
        result
    });
    run.expect("worker ran");
    let result = result.expect("parent completes");
    assert!(result.starts_with("cancelled"), "{result}");
    assert_eq!(
        status_of(&describe(&url, &child_id).await),
        WorkflowExecutionStatus::Canceled
    );
    let events = history(&url, &parent_id, "").await;
    let t = types(&events);
    for expected in [
        EventType::StartChildWorkflowExecutionInitiated,
        EventType::ChildWorkflowExecutionStarted,
        EventType::RequestCancelExternalWorkflowExecutionInitiated,
        EventType::ExternalWorkflowExecutionCancelRequested,
        EventType::ChildWorkflowExecutionCanceled,
    ] {
        assert_eq!(count(&events, expected), 1, "{expected:?} in {t:?}");
    }
    let position = |x: EventType| t.iter().position(|y| *y == x).unwrap();
    assert!(
        position(EventType::RequestCancelExternalWorkflowExecutionInitiated)
            < position(EventType::ExternalWorkflowExecutionCancelRequested)
    );
    let initiated = events
        .iter()
        .find_map(|e| match &e.attributes {
            Some(Attributes::RequestCancelExternalWorkflowExecutionInitiatedEventAttributes(a)) => {
                Some(a.clone())
            }
            _ => None,
        })
        .unwrap();
    assert_eq!(initiated.workflow_execution.unwrap().workflow_id, child_id);
    assert!(initiated.child_workflow_only);
    let child_events = history(&url, &child_id, "").await;
    let request = child_events
        .iter()
        .find_map(|e| match &e.attributes {
            Some(Attributes::WorkflowExecutionCancelRequestedEventAttributes(a)) => Some(a.clone()),
            _ => None,
        })
        .expect("child got the cancellation request");
    assert_eq!(
        request.external_workflow_execution.unwrap().workflow_id,
        parent_id
    );
    assert!(request.external_initiated_event_id > 0);
    assert_eq!(
        types(&child_events).last(),
        Some(&EventType::WorkflowExecutionCanceled)
    );
    server.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parent_finishes_after_a_restart_in_the_middle() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_sharded(dir.path()).await;
    let url = server.url();
    let namespace_id = default_namespace_id(&url).await;
    let task_queue = unique("children");
    let parent_id = unique("restart-parent");
    let ids = child_ids(&namespace_id, &parent_id, &format!("{parent_id}-child"), 4);

    // First life: the parent starts its children, which sleep; the server stops meanwhile.
    let client = sdk_client(&url).await;
    let runtime = runtime();
    let mut worker = new_worker(&runtime, client.clone(), worker_options(&task_queue));
    let stop = worker.shutdown_handle();
    let (run, ()) = tokio::join!(worker.run(), async {
        client
            .start_workflow(
                SlowParent::run,
                (ids.clone(), 1_500u64),
                WorkflowStartOptions::new(task_queue.clone(), parent_id.clone()).build(),
            )
            .await
            .expect("start");
        wait_for(&url, &parent_id, "started children", |d| {
            d.pending_children.len() == 4 && d.pending_children.iter().all(|c| !c.run_id.is_empty())
        })
        .await;
        stop();
    });
    run.expect("worker ran");
    drop(worker);
    server.stop().await.expect("clean stop");

    // Second life: children's timers fire, their closes reach the parent across shards.
    let server = start_sharded(dir.path()).await;
    let url = server.url();
    let client = sdk_client(&url).await;
    let mut worker = new_worker(&runtime, client.clone(), worker_options(&task_queue));
    let stop = worker.shutdown_handle();
    let (run, result) = tokio::join!(worker.run(), async {
        let handle = client.get_workflow_handle::<SlowParent>(parent_id.clone());
        let result = handle.get_result(WorkflowGetResultOptions::default()).await;
        stop();
        result
    });
    run.expect("worker ran");
    assert_eq!(result.expect("parent result"), 20);
    let events = history(&url, &parent_id, "").await;
    assert_eq!(count(&events, EventType::ChildWorkflowExecutionStarted), 4);
    assert_eq!(
        count(&events, EventType::ChildWorkflowExecutionCompleted),
        4
    );
    server.stop().await.expect("clean stop");
}

// --- raw gRPC: command checks and signals to other workflows --------------------------------

fn start_child_command(attributes: StartChildWorkflowExecutionCommandAttributes) -> Command {
    Command {
        command_type: CommandType::StartChildWorkflowExecution as i32,
        attributes: Some(
            command::Attributes::StartChildWorkflowExecutionCommandAttributes(attributes),
        ),
        ..Default::default()
    }
}

/// Starts a workflow and takes its first workflow task; returns (run ID, task token).
async fn first_task(
    raw: &mut ws::workflow_service_client::WorkflowServiceClient<tonic::transport::Channel>,
    task_queue: &str,
    workflow_id: &str,
) -> (String, Vec<u8>) {
    let run_id = raw
        .start_workflow_execution(ws::StartWorkflowExecutionRequest {
            namespace: "default".into(),
            workflow_id: workflow_id.into(),
            workflow_type: Some(WorkflowType {
                name: "RawParent".into(),
            }),
            task_queue: queue(task_queue),
            request_id: uuid::Uuid::new_v4().to_string(),
            ..Default::default()
        })
        .await
        .expect("start")
        .into_inner()
        .run_id;
    let task = raw
        .poll_workflow_task_queue(poll(task_queue))
        .await
        .expect("poll")
        .into_inner();
    (run_id, task.task_token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_child_commands_fail_the_workflow_task() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_sharded(dir.path()).await;
    let url = server.url();
    let mut raw = raw_client(&url).await;
    let task_queue = unique("raw");
    let workflow_id = unique("raw-parent");
    let (run_id, mut token) = first_task(&mut raw, &task_queue, &workflow_id).await;
    let good = StartChildWorkflowExecutionCommandAttributes {
        workflow_id: unique("raw-child"),
        workflow_type: Some(WorkflowType {
            name: "RawChild".into(),
        }),
        ..Default::default()
    };
    let cases = [
        StartChildWorkflowExecutionCommandAttributes {
            workflow_id: String::new(),
            ..good.clone()
        },
        StartChildWorkflowExecutionCommandAttributes {
            workflow_type: None,
            ..good.clone()
        },
        #[allow(deprecated)]
        StartChildWorkflowExecutionCommandAttributes {
            namespace: "another-namespace".into(),
            ..good.clone()
        },
        StartChildWorkflowExecutionCommandAttributes {
            workflow_id: "x".repeat(1001),
            ..good.clone()
        },
    ];
    for (i, bad) in cases.into_iter().enumerate() {
        let status = raw
            .respond_workflow_task_completed(ws::RespondWorkflowTaskCompletedRequest {
                namespace: "default".into(),
                task_token: token.clone(),
                commands: vec![start_child_command(bad)],
                identity: "raw-test".into(),
                ..Default::default()
            })
            .await
            .expect_err("refused");
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "case {i}: {status:?}"
        );
        // The task failed with Temporal's cause; the retry is a new attempt.
        let task = raw
            .poll_workflow_task_queue(poll(&task_queue))
            .await
            .expect("poll")
            .into_inner();
        assert!(task.attempt >= 2, "case {i}: attempt {}", task.attempt);
        token = task.task_token;
    }
    let events = history(&url, &workflow_id, &run_id).await;
    let failed = events
        .iter()
        .find_map(|e| match &e.attributes {
            Some(Attributes::WorkflowTaskFailedEventAttributes(a)) => Some(a.clone()),
            _ => None,
        })
        .expect("WorkflowTaskFailed");
    assert_eq!(
        failed.cause,
        WorkflowTaskFailedCause::BadStartChildExecutionAttributes as i32
    );
    assert!(
        failed.failure.unwrap().message.contains("WorkflowId"),
        "Temporal's message"
    );
    assert_eq!(
        count(&events, EventType::StartChildWorkflowExecutionInitiated),
        0
    );

    // A good command is accepted, with Temporal's defaults filled in.
    raw.respond_workflow_task_completed(ws::RespondWorkflowTaskCompletedRequest {
        namespace: "default".into(),
        task_token: token,
        commands: vec![start_child_command(good.clone())],
        identity: "raw-test".into(),
        ..Default::default()
    })
    .await
    .expect("accepted");
    let events = history(&url, &workflow_id, &run_id).await;
    let initiated = events
        .iter()
        .find_map(|e| match &e.attributes {
            Some(Attributes::StartChildWorkflowExecutionInitiatedEventAttributes(a)) => {
                Some(a.clone())
            }
            _ => None,
        })
        .expect("initiated");
    assert_eq!(initiated.namespace, "default");
    assert_eq!(initiated.task_queue.unwrap().name, task_queue);
    assert_eq!(
        initiated.workflow_task_timeout,
        Some(chronicle_types::time::duration_from_millis(10_000))
    );
    assert_eq!(
        initiated.parent_close_policy,
        ProtoParentClosePolicy::Terminate as i32
    );
    assert_eq!(
        initiated.workflow_id_reuse_policy,
        chronicle_proto::temporal::api::enums::v1::WorkflowIdReusePolicy::AllowDuplicate as i32
    );
    // The child starts (on its own task queue, the parent's), and the parent is told.
    let task = raw
        .poll_workflow_task_queue(poll(&task_queue))
        .await
        .expect("poll")
        .into_inner();
    let polled_type = task.workflow_type.clone().unwrap().name;
    let (child_task, parent_task) = if polled_type == "RawChild" {
        let parent = raw
            .poll_workflow_task_queue(poll(&task_queue))
            .await
            .expect("poll")
            .into_inner();
        (task, parent)
    } else {
        let child = raw
            .poll_workflow_task_queue(poll(&task_queue))
            .await
            .expect("poll")
            .into_inner();
        (child, task)
    };
    assert_eq!(child_task.workflow_type.unwrap().name, "RawChild");
    assert_eq!(
        child_task.workflow_execution.unwrap().workflow_id,
        good.workflow_id
    );
    let parent_types = types(&parent_task.history.unwrap().events);
    assert!(
        parent_types.contains(&EventType::ChildWorkflowExecutionStarted),
        "{parent_types:?}"
    );
    server.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signal_external_workflows() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_sharded(dir.path()).await;
    let url = server.url();
    let mut raw = raw_client(&url).await;
    let task_queue = unique("raw");
    let target_queue = unique("raw-target");
    let workflow_id = unique("signaller");
    let target = unique("signal-target");
    raw.start_workflow_execution(ws::StartWorkflowExecutionRequest {
        namespace: "default".into(),
        workflow_id: target.clone(),
        workflow_type: Some(WorkflowType {
            name: "Target".into(),
        }),
        task_queue: queue(&target_queue),
        request_id: uuid::Uuid::new_v4().to_string(),
        ..Default::default()
    })
    .await
    .expect("start target");
    let (run_id, token) = first_task(&mut raw, &task_queue, &workflow_id).await;
    let signal = |workflow_id: &str| Command {
        command_type: CommandType::SignalExternalWorkflowExecution as i32,
        attributes: Some(
            command::Attributes::SignalExternalWorkflowExecutionCommandAttributes(
                SignalExternalWorkflowExecutionCommandAttributes {
                    execution: Some(WorkflowExecution {
                        workflow_id: workflow_id.into(),
                        run_id: String::new(),
                    }),
                    signal_name: "poke".into(),
                    input: payloads("hello"),
                    ..Default::default()
                },
            ),
        ),
        ..Default::default()
    };
    raw.respond_workflow_task_completed(ws::RespondWorkflowTaskCompletedRequest {
        namespace: "default".into(),
        task_token: token,
        commands: vec![signal(&target), signal("nobody-runs-this")],
        identity: "raw-test".into(),
        ..Default::default()
    })
    .await
    .expect("accepted");
    // Both outcomes come back to the sender in a new workflow task.
    let deadline = Instant::now() + Duration::from_secs(20);
    let events = loop {
        let events = history(&url, &workflow_id, &run_id).await;
        if count(&events, EventType::ExternalWorkflowExecutionSignaled) == 1
            && count(&events, EventType::SignalExternalWorkflowExecutionFailed) == 1
            && count(&events, EventType::WorkflowTaskScheduled) == 2
        {
            break events;
        }
        assert!(Instant::now() < deadline, "{:?}", types(&events));
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let failed = events
        .iter()
        .find_map(|e| match &e.attributes {
            Some(Attributes::SignalExternalWorkflowExecutionFailedEventAttributes(a)) => {
                Some(a.clone())
            }
            _ => None,
        })
        .unwrap();
    assert_eq!(
        failed.workflow_execution.unwrap().workflow_id,
        "nobody-runs-this"
    );
    assert_eq!(
        failed.cause,
        chronicle_proto::temporal::api::enums::v1::SignalExternalWorkflowExecutionFailedCause::ExternalWorkflowExecutionNotFound as i32
    );
    let target_events = history(&url, &target, "").await;
    let signaled = target_events
        .iter()
        .find_map(|e| match &e.attributes {
            Some(Attributes::WorkflowExecutionSignaledEventAttributes(a)) => Some(a.clone()),
            _ => None,
        })
        .expect("the target got the signal");
    assert_eq!(signaled.signal_name, "poke");
    assert_eq!(signaled.identity, "history-service");
    assert_eq!(
        signaled.external_workflow_execution.unwrap().workflow_id,
        workflow_id
    );
    server.stop().await.expect("clean stop");
}
