//! Workflows run end to end by the official Rust SDK against Chronicle.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use temporalio_sdk::ContinueAsNewOptions;

use chronicle_proto::temporal::api::enums::v1::EventType;
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use temporalio_client::{
    WorkflowGetResultOptions, WorkflowQueryOptions, WorkflowSignalOptions, WorkflowStartOptions,
};
use temporalio_common::RetryPolicy;
use temporalio_macros::{activities, workflow, workflow_methods};
use temporalio_sdk::activities::{ActivityContext, ActivityError};
use temporalio_sdk::{
    ActivityOptions, SyncWorkflowContext, WorkflowContext, WorkflowContextView, WorkflowResult,
};

use crate::common::*;

#[derive(Default)]
pub struct Steps {
    pub(crate) flaky_calls: Arc<AtomicU32>,
}

#[activities]
impl Steps {
    #[activity]
    pub async fn add_one(_ctx: ActivityContext, x: i64) -> Result<i64, ActivityError> {
        Ok(x + 1)
    }

    /// Fails its first two attempts.
    #[activity]
    pub async fn flaky(
        self: Arc<Self>,
        _ctx: ActivityContext,
        x: i64,
    ) -> Result<i64, ActivityError> {
        let call = self.flaky_calls.fetch_add(1, Ordering::SeqCst) + 1;
        if call < 3 {
            return Err(anyhow::anyhow!("transient failure {call}").into());
        }
        Ok(x * 10)
    }
}

#[workflow]
#[derive(Default)]
pub struct OrderWorkflow {
    approved: bool,
}

#[workflow_methods]
impl OrderWorkflow {
    #[run]
    pub async fn run(ctx: &mut WorkflowContext<Self>, start: i64) -> WorkflowResult<i64> {
        let mut x = start;
        for _ in 0..3 {
            x = ctx
                .execute_activity(
                    Steps::add_one,
                    x,
                    ActivityOptions::start_to_close_timeout(Duration::from_secs(10)),
                )
                .await?;
        }
        ctx.timer(Duration::from_secs(1)).await;
        ctx.wait_condition(|s| s.approved).await?;
        Ok(x)
    }

    #[signal]
    pub fn approve(&mut self, _ctx: &mut SyncWorkflowContext<Self>, _by: String) {
        self.approved = true;
    }

    #[query]
    pub fn is_approved(&self, _ctx: &WorkflowContextView) -> bool {
        self.approved
    }
}

#[workflow]
#[derive(Default)]
pub struct RetryWorkflow;

#[workflow_methods]
impl RetryWorkflow {
    #[run]
    pub async fn run(ctx: &mut WorkflowContext<Self>, x: i64) -> WorkflowResult<i64> {
        let options = ActivityOptions::with_start_to_close_timeout(Duration::from_secs(10))
            .retry_policy(
                RetryPolicy::builder()
                    .initial_interval(Duration::from_millis(200))
                    .backoff_coefficient(2.0)
                    .build(),
            )
            .build();
        Ok(ctx.execute_activity(Steps::flaky, x, options).await?)
    }
}

#[workflow]
#[derive(Default)]
pub struct ChainWorkflow;

#[workflow_methods]
impl ChainWorkflow {
    #[run]
    pub async fn run(ctx: &mut WorkflowContext<Self>, start: i64) -> WorkflowResult<i64> {
        let mut x = start;
        for _ in 0..4 {
            x = ctx
                .execute_activity(
                    Steps::add_one,
                    x,
                    ActivityOptions::start_to_close_timeout(Duration::from_secs(10)),
                )
                .await?;
        }
        Ok(x)
    }
}

pub(crate) async fn history_events(
    url: &str,
    workflow_id: &str,
) -> Vec<chronicle_proto::temporal::api::history::v1::HistoryEvent> {
    let mut raw = raw_client(url).await;
    let response = raw
        .get_workflow_execution_history(ws::GetWorkflowExecutionHistoryRequest {
            namespace: "default".into(),
            execution: Some(
                chronicle_proto::temporal::api::common::v1::WorkflowExecution {
                    workflow_id: workflow_id.into(),
                    run_id: String::new(),
                },
            ),
            ..Default::default()
        })
        .await
        .expect("history")
        .into_inner();
    response.history.unwrap_or_default().events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_with_activities_timer_signal_and_query() {
    let server = start_server().await;
    let url = server.server.url();
    let client = sdk_client(&url).await;
    let task_queue = unique("orders");
    let workflow_id = unique("order");
    let runtime = runtime();
    let options = temporalio_sdk::WorkerOptions::new(&task_queue)
        .deployment_options(deployment())
        .register_activities(Steps {
            flaky_calls: Arc::default(),
        })
        .register_workflow::<OrderWorkflow>()
        .expect("register")
        .build();
    let mut worker = new_worker(&runtime, client.clone(), options);
    let stop = worker.shutdown_handle();
    let started = Instant::now();
    let (run, outcome) = tokio::join!(worker.run(), async {
        let handle = client
            .start_workflow(
                OrderWorkflow::run,
                10,
                WorkflowStartOptions::new(task_queue.clone(), workflow_id.clone()).build(),
            )
            .await
            .expect("start");
        // Wait until the workflow is blocked on the approval, then query and signal it.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let before = handle
            .query(
                OrderWorkflow::is_approved,
                (),
                WorkflowQueryOptions::default(),
            )
            .await
            .expect("query");
        handle
            .signal(
                OrderWorkflow::approve,
                "alice".to_string(),
                WorkflowSignalOptions::default(),
            )
            .await
            .expect("signal");
        let result = handle.get_result(WorkflowGetResultOptions::default()).await;
        stop();
        (before, result)
    });
    run.expect("worker ran");
    let (before, result) = outcome;
    assert!(!before, "query sees the workflow before the signal");
    assert_eq!(result.expect("result"), 13);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "the 1 s timer was honoured"
    );

    let events = history_events(&url, &workflow_id).await;
    let ids: Vec<i64> = events.iter().map(|e| e.event_id).collect();
    assert_eq!(
        ids,
        (1..=events.len() as i64).collect::<Vec<_>>(),
        "event IDs are contiguous from 1"
    );
    let types: Vec<EventType> = events
        .iter()
        .map(|e| EventType::try_from(e.event_type).unwrap())
        .collect();
    assert_eq!(types.first(), Some(&EventType::WorkflowExecutionStarted));
    assert_eq!(types.last(), Some(&EventType::WorkflowExecutionCompleted));
    assert_eq!(
        types
            .iter()
            .filter(|t| **t == EventType::ActivityTaskCompleted)
            .count(),
        3
    );
    assert_eq!(
        types
            .iter()
            .filter(|t| **t == EventType::TimerFired)
            .count(),
        1
    );
    assert_eq!(
        types
            .iter()
            .filter(|t| **t == EventType::WorkflowExecutionSignaled)
            .count(),
        1
    );
    server.server.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activity_retries_stay_out_of_history() {
    let server = start_server().await;
    let url = server.server.url();
    let client = sdk_client(&url).await;
    let task_queue = unique("retry");
    let workflow_id = unique("retry");
    let calls = Arc::new(AtomicU32::new(0));
    let runtime = runtime();
    let options = temporalio_sdk::WorkerOptions::new(&task_queue)
        .deployment_options(deployment())
        .register_activities(Steps {
            flaky_calls: calls.clone(),
        })
        .register_workflow::<RetryWorkflow>()
        .expect("register")
        .build();
    let mut worker = new_worker(&runtime, client.clone(), options);
    let stop = worker.shutdown_handle();
    let started = Instant::now();
    let (run, result) = tokio::join!(worker.run(), async {
        let handle = client
            .start_workflow(
                RetryWorkflow::run,
                4,
                WorkflowStartOptions::new(task_queue.clone(), workflow_id.clone()).build(),
            )
            .await
            .expect("start");
        let result = handle.get_result(WorkflowGetResultOptions::default()).await;
        stop();
        result
    });
    run.expect("worker ran");
    assert_eq!(result.expect("result"), 40);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "two failures, then success"
    );
    // Backoff 200 ms then 400 ms.
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "retries waited for their backoff"
    );

    let events = history_events(&url, &workflow_id).await;
    let started_events: Vec<_> = events
        .iter()
        .filter(|e| e.event_type == EventType::ActivityTaskStarted as i32)
        .collect();
    assert_eq!(
        started_events.len(),
        1,
        "one Started event for all attempts"
    );
    let Some(chronicle_proto::temporal::api::history::v1::history_event::Attributes::ActivityTaskStartedEventAttributes(a)) = &started_events[0].attributes else {
        panic!("started attributes");
    };
    assert_eq!(a.attempt, 3);
    assert!(
        a.last_failure
            .as_ref()
            .is_some_and(|f| f.message.contains("transient failure 2")),
        "last failure carried: {:?}",
        a.last_failure
    );
    server.server.stop().await.expect("clean stop");
}

#[workflow]
#[derive(Default)]
pub struct LoopWorkflow;

#[workflow_methods]
impl LoopWorkflow {
    #[run]
    pub async fn run(ctx: &mut WorkflowContext<Self>, input: (u32, u32)) -> WorkflowResult<u32> {
        let (iteration, last) = input;
        ctx.timer(Duration::from_millis(50)).await;
        if iteration < last {
            ctx.continue_as_new((iteration + 1, last), ContinueAsNewOptions::default())?;
        }
        Ok(iteration)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continue_as_new_chains_runs() {
    use chronicle_proto::temporal::api::enums::v1::WorkflowExecutionStatus;
    let server = start_server().await;
    let url = server.server.url();
    let client = sdk_client(&url).await;
    let task_queue = unique("loop");
    let workflow_id = unique("loop");
    let runtime = runtime();
    let options = temporalio_sdk::WorkerOptions::new(&task_queue)
        .deployment_options(deployment())
        .register_workflow::<LoopWorkflow>()
        .expect("register")
        .build();
    let mut worker = new_worker(&runtime, client.clone(), options);
    let stop = worker.shutdown_handle();
    let (run, result) = tokio::join!(worker.run(), async {
        let handle = client
            .start_workflow(
                LoopWorkflow::run,
                (0u32, 3u32),
                WorkflowStartOptions::new(task_queue.clone(), workflow_id.clone()).build(),
            )
            .await
            .expect("start");
        let result = handle.get_result(WorkflowGetResultOptions::default()).await;
        stop();
        result
    });
    run.expect("worker ran");
    assert_eq!(result.expect("result follows the chain"), 3);

    // Four runs under one workflow ID: three continued-as-new, the current one completed.
    let mut raw = raw_client(&url).await;
    let listed = raw
        .list_workflow_executions(ws::ListWorkflowExecutionsRequest {
            namespace: "default".into(),
            query: format!("WorkflowId = '{workflow_id}'"),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner()
        .executions;
    let statuses: Vec<i32> = listed.iter().map(|e| e.status).collect();
    assert_eq!(statuses.len(), 4, "{statuses:?}");
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == WorkflowExecutionStatus::ContinuedAsNew as i32)
            .count(),
        3
    );
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == WorkflowExecutionStatus::Completed as i32)
            .count(),
        1
    );
    let first_run_ids: std::collections::HashSet<&str> =
        listed.iter().map(|e| e.first_run_id.as_str()).collect();
    assert_eq!(first_run_ids.len(), 1, "every run shares the first run ID");
    server.server.stop().await.expect("clean stop");
}

/// The SDK asks for eager execution of activities on its own task queue by default: the
/// activities come back with the workflow task completions and the workflow completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_worker_runs_eager_activities() {
    let server = start_server().await;
    let url = server.server.url();
    let client = sdk_client(&url).await;
    let task_queue = unique("eager");
    let workflow_id = unique("chain");
    let runtime = runtime();
    let options = temporalio_sdk::WorkerOptions::new(&task_queue)
        .deployment_options(deployment())
        .register_activities(Steps {
            flaky_calls: Arc::default(),
        })
        .register_workflow::<ChainWorkflow>()
        .expect("register")
        .build();
    let mut worker = new_worker(&runtime, client.clone(), options);
    let stop = worker.shutdown_handle();
    let (run, result) = tokio::join!(worker.run(), async {
        let handle = client
            .start_workflow(
                ChainWorkflow::run,
                1,
                WorkflowStartOptions::new(task_queue.clone(), workflow_id.clone()).build(),
            )
            .await
            .expect("start");
        let result = handle.get_result(WorkflowGetResultOptions::default()).await;
        stop();
        result
    });
    run.expect("worker ran");
    assert_eq!(result.expect("result"), 5);

    let events = history_events(&url, &workflow_id).await;
    let started: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.attributes {
            Some(
                chronicle_proto::temporal::api::history::v1::history_event::Attributes::ActivityTaskStartedEventAttributes(a),
            ) => Some(a.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(started.len(), 4);
    assert!(started.iter().all(|a| a.attempt == 1));
    // Chronicle names an eager start's request "<run>:eager:<scheduled event ID>".
    let eager = started
        .iter()
        .filter(|a| a.request_id.contains(":eager:"))
        .count();
    assert!(
        eager > 0,
        "the SDK's activities were started eagerly: {started:?}"
    );
    server.server.stop().await.expect("clean stop");
}
