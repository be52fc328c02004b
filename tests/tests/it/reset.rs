//! ResetWorkflowExecution with the official Rust SDK's worker: a workflow that ran activities, a
//! timer and a signal is reset to its first workflow task; the worker runs the new run to
//! completion again, with the signal reapplied.

use std::sync::Arc;
use std::time::Duration;

use chronicle_proto::temporal::api::enums::v1::{
    EventType, WorkflowExecutionStatus, WorkflowTaskFailedCause,
};
use chronicle_proto::temporal::api::history::v1::HistoryEvent;
use chronicle_proto::temporal::api::history::v1::history_event::Attributes;
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use temporalio_client::{WorkflowGetResultOptions, WorkflowSignalOptions, WorkflowStartOptions};

use crate::common::*;
use crate::sdk_workflows::{OrderWorkflow, Steps};

fn count(events: &[HistoryEvent], t: EventType) -> usize {
    events.iter().filter(|e| e.event_type == t as i32).count()
}

async fn wait_for_close(url: &str, workflow_id: &str) -> Vec<HistoryEvent> {
    let mut raw = raw_client(url).await;
    for _ in 0..300 {
        let events = workflow_history(&mut raw, workflow_id).await;
        if events
            .last()
            .is_some_and(|e| e.event_type == EventType::WorkflowExecutionCompleted as i32)
        {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{workflow_id} did not complete after the reset");
}

fn reset_request(
    workflow_id: &str,
    event_id: i64,
    request_id: &str,
) -> ws::ResetWorkflowExecutionRequest {
    ws::ResetWorkflowExecutionRequest {
        namespace: "default".into(),
        workflow_execution: execution(workflow_id, ""),
        reason: "bad deploy".into(),
        workflow_task_finish_event_id: event_id,
        request_id: request_id.into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_to_the_first_workflow_task_runs_the_workflow_again_with_its_signal() {
    let server = start_server().await;
    let url = server.server.url();
    let client = sdk_client(&url).await;
    let task_queue = unique("reset");
    let workflow_id = unique("reset");
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
    let (run, outcome) = tokio::join!(worker.run(), async {
        let handle = client
            .start_workflow(
                OrderWorkflow::run,
                10,
                WorkflowStartOptions::new(task_queue.clone(), workflow_id.clone()).build(),
            )
            .await
            .expect("start");
        handle
            .signal(
                OrderWorkflow::approve,
                "alice".to_string(),
                WorkflowSignalOptions::default(),
            )
            .await
            .expect("signal");
        let first = handle.get_result(WorkflowGetResultOptions::default()).await;
        let mut raw = raw_client(&url).await;
        let base = workflow_history(&mut raw, &workflow_id).await;
        let first_completed = base
            .iter()
            .find(|e| e.event_type == EventType::WorkflowTaskCompleted as i32)
            .expect("a completed workflow task")
            .event_id;
        let new_run = raw
            .reset_workflow_execution(reset_request(&workflow_id, first_completed, "reset-1"))
            .await
            .expect("reset")
            .into_inner()
            .run_id;
        // The same request again answers the same run.
        let again = raw
            .reset_workflow_execution(reset_request(&workflow_id, first_completed, "reset-1"))
            .await
            .expect("reset retried")
            .into_inner()
            .run_id;
        let after = wait_for_close(&url, &workflow_id).await;
        stop();
        (first, base, first_completed, new_run, again, after)
    });
    run.expect("worker ran");
    let (first, base, first_completed, new_run, again, after) = outcome;
    assert_eq!(first.expect("first result"), 13);
    assert_eq!(again, new_run);

    // The new run: the base run's first events, the reset's failed task, the signal reapplied,
    // then everything again (three activities, the timer) to the same result.
    assert_eq!(
        after[..first_completed as usize - 1],
        base[..first_completed as usize - 1]
    );
    let failed = &after[first_completed as usize - 1];
    let Some(Attributes::WorkflowTaskFailedEventAttributes(failed)) = &failed.attributes else {
        panic!("the reset fails the workflow task: {failed:?}");
    };
    assert_eq!(failed.cause, WorkflowTaskFailedCause::ResetWorkflow as i32);
    assert_eq!(failed.new_run_id, new_run);
    assert_eq!(count(&after, EventType::WorkflowExecutionSignaled), 1);
    assert_eq!(count(&after, EventType::ActivityTaskCompleted), 3);
    assert_eq!(count(&after, EventType::TimerFired), 1);
    let Some(Attributes::WorkflowExecutionCompletedEventAttributes(done)) =
        &after.last().unwrap().attributes
    else {
        panic!("completed");
    };
    assert_eq!(
        done.result.as_ref().unwrap().payloads[0].data,
        b"13".to_vec()
    );

    // Describe: the new run is current; the completed base run stays completed.
    let mut raw = raw_client(&url).await;
    let current = raw
        .describe_workflow_execution(ws::DescribeWorkflowExecutionRequest {
            namespace: "default".into(),
            execution: execution(&workflow_id, ""),
        })
        .await
        .expect("describe")
        .into_inner()
        .workflow_execution_info
        .unwrap();
    assert_eq!(current.execution.unwrap().run_id, new_run);
    let base_run = match &base[0].attributes {
        Some(Attributes::WorkflowExecutionStartedEventAttributes(a)) => {
            a.original_execution_run_id.clone()
        }
        _ => panic!("started"),
    };
    let old = raw
        .describe_workflow_execution(ws::DescribeWorkflowExecutionRequest {
            namespace: "default".into(),
            execution: execution(&workflow_id, &base_run),
        })
        .await
        .expect("describe base")
        .into_inner()
        .workflow_execution_info
        .unwrap();
    assert_eq!(old.status, WorkflowExecutionStatus::Completed as i32);
    server.server.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_resets_get_temporals_errors() {
    let server = start_server().await;
    let url = server.server.url();
    let mut raw = raw_client(&url).await;
    let task_queue = unique("reset-bad");
    let workflow_id = unique("reset-bad");
    raw.start_workflow_execution(start_request(&workflow_id, "Anything", &task_queue))
        .await
        .expect("start");
    let code = |r: Result<tonic::Response<ws::ResetWorkflowExecutionResponse>, tonic::Status>| {
        let status = r.expect_err("refused");
        (status.code(), status.message().to_string())
    };
    // Only events 1 and 2 exist: 3 is out of range, and before 2 no workflow task is pending.
    assert_eq!(
        code(
            raw.reset_workflow_execution(reset_request(&workflow_id, 3, "r"))
                .await
        ),
        (
            tonic::Code::InvalidArgument,
            "Workflow task finish ID must be > 1 && <= workflow last event ID.".into()
        )
    );
    assert_eq!(
        code(raw.reset_workflow_execution(reset_request(&workflow_id, 2, "r")).await),
        (
            tonic::Code::InvalidArgument,
            "Can only reset workflow to event ID in range [WorkflowTaskScheduled +1, WorkflowTaskStarted + 1]: 2".into()
        )
    );
    assert_eq!(
        code(
            raw.reset_workflow_execution(reset_request(&workflow_id, 3, ""))
                .await
        ),
        (
            tonic::Code::InvalidArgument,
            "RequestId is not set on request.".into()
        )
    );
    assert_eq!(
        code(
            raw.reset_workflow_execution(reset_request(&unique("missing"), 3, "r"))
                .await
        )
        .0,
        tonic::Code::NotFound
    );
    server.server.stop().await.expect("clean stop");
}
