//! Built-in workers: they poll the run's task queue and answer workflow, query and activity
//! tasks with plain WorkflowService RPCs, so the measurement has no SDK in it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chronicle_proto::temporal::api::common::v1::WorkflowExecution;
use chronicle_proto::temporal::api::enums::v1::{QueryResultType, WorkflowTaskFailedCause};
use chronicle_proto::temporal::api::failure::v1::Failure;
use chronicle_proto::temporal::api::history::v1::HistoryEvent;
use chronicle_proto::temporal::api::query::v1::WorkflowQueryResult;
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinHandle;
use tonic::{Code, Request, Status};

use crate::connection::Clients;
use crate::metrics::{Metrics, Rpc};
use crate::scenario::{self, DecisionContext, WorkflowKind};

/// Deadline of a long poll: a little over the minute servers hold one, as SDKs do, so the
/// server ends it with an empty response rather than the client with an error.
const POLL_DEADLINE: Duration = Duration::from_secs(70);
/// Pause after a failed poll so a down server is not hammered.
const POLL_ERROR_BACKOFF: Duration = Duration::from_millis(200);
/// Activities one workflow task completion asks to run eagerly at most, as the SDKs do
/// (`max_eager_activity_reservations_per_workflow_task`).
const MAX_EAGER_ACTIVITIES_PER_TASK: usize = 3;

/// What the workers of one run share.
pub struct WorkerContext {
    pub clients: Arc<Clients>,
    pub metrics: Arc<Metrics>,
    pub namespace: String,
    pub task_queue: String,
    pub identity: String,
    /// Slots for eager activities (`None`: eager execution is not requested). A completion asks
    /// the server to start an activity for this worker only with a free slot, which the activity
    /// holds while it runs.
    pub eager_activity_slots: Option<Arc<Semaphore>>,
}

/// The workers' tasks and the switch that stops them.
pub struct Workers {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Workers {
    pub fn spawn(
        context: Arc<WorkerContext>,
        workflow_pollers: usize,
        activity_pollers: usize,
    ) -> Self {
        let (stop, stopped) = watch::channel(false);
        let mut tasks = Vec::new();
        for _ in 0..workflow_pollers.max(1) {
            tasks.push(tokio::spawn(workflow_poller(
                context.clone(),
                stopped.clone(),
            )));
        }
        for _ in 0..activity_pollers {
            tasks.push(tokio::spawn(activity_poller(
                context.clone(),
                stopped.clone(),
            )));
        }
        Self { stop, tasks }
    }

    /// Stops polling; a task being answered is finished first.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

fn long_poll<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.set_timeout(POLL_DEADLINE);
    request
}

/// Polls until stopped; `None` when stopped, `Some(None)` for an empty poll or an error.
async fn poll_once<T, F>(
    stopped: &mut watch::Receiver<bool>,
    metrics: &Metrics,
    rpc: Rpc,
    call: F,
) -> Option<Option<T>>
where
    F: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
{
    if *stopped.borrow() {
        return None;
    }
    let begun = tokio::time::Instant::now();
    let result = tokio::select! {
        _ = stopped.changed() => return None,
        result = call => result,
    };
    match result {
        Ok(response) => {
            metrics.record_rpc(rpc, begun.elapsed());
            Some(Some(response.into_inner()))
        }
        // The poll outlived its deadline: nothing to do, poll again.
        Err(status) if status.code() == Code::DeadlineExceeded => Some(None),
        Err(status) => {
            if *stopped.borrow() {
                return None;
            }
            metrics.record_rpc_error(rpc, status.code());
            tokio::time::sleep(POLL_ERROR_BACKOFF).await;
            Some(None)
        }
    }
}

async fn workflow_poller(context: Arc<WorkerContext>, mut stopped: watch::Receiver<bool>) {
    loop {
        let request = ws::PollWorkflowTaskQueueRequest {
            namespace: context.namespace.clone(),
            task_queue: Some(scenario::task_queue(&context.task_queue)),
            identity: context.identity.clone(),
            ..Default::default()
        };
        let mut client = context.clients.get();
        let call = client.poll_workflow_task_queue(long_poll(request));
        let Some(task) = poll_once(
            &mut stopped,
            &context.metrics,
            Rpc::PollWorkflowTaskQueue,
            call,
        )
        .await
        else {
            return;
        };
        // An empty response is a poll that timed out with no task.
        if let Some(task) = task.filter(|t| !t.task_token.is_empty()) {
            handle_workflow_task(&context, task).await;
        }
    }
}

async fn handle_workflow_task(
    context: &Arc<WorkerContext>,
    task: ws::PollWorkflowTaskQueueResponse,
) {
    let metrics = &context.metrics;
    let execution = task.workflow_execution.clone().unwrap_or_default();
    let type_name = task
        .workflow_type
        .as_ref()
        .map(|t| t.name.as_str())
        .unwrap_or_default();
    let Some(kind) = WorkflowKind::from_type_name(type_name) else {
        fail_workflow_task(
            context,
            &task,
            &format!("unknown workflow type {type_name:?}"),
        )
        .await;
        return;
    };
    let events = match full_history(context, &execution, &task).await {
        Ok(events) => events,
        // Already counted as an RPC error; the task times out and is retried by the server.
        Err(_) => return,
    };

    // A legacy query task (the workflow had no workflow task to carry it): answer it alone.
    if let Some(query) = &task.query {
        let (completed_type, query_result, error_message) =
            match scenario::answer_query(&events, &query.query_type) {
                Ok(answer) => (QueryResultType::Answered, Some(answer), String::new()),
                Err(message) => (QueryResultType::Failed, None, message),
            };
        let request = ws::RespondQueryTaskCompletedRequest {
            namespace: context.namespace.clone(),
            task_token: task.task_token.clone(),
            completed_type: completed_type as i32,
            query_result,
            error_message,
            ..Default::default()
        };
        let _ = metrics
            .timed(
                Rpc::RespondQueryTaskCompleted,
                context.clients.get().respond_query_task_completed(request),
            )
            .await;
        return;
    }

    let decision_context = DecisionContext {
        task_queue: &context.task_queue,
        workflow_id: &execution.workflow_id,
    };
    let mut commands = scenario::decide(kind, &events, &decision_context);
    let mut eager_permits = request_eager_activities(context, &mut commands);
    let query_results: HashMap<String, WorkflowQueryResult> = task
        .queries
        .iter()
        .map(|(id, query)| {
            let result = match scenario::answer_query(&events, &query.query_type) {
                Ok(answer) => WorkflowQueryResult {
                    result_type: QueryResultType::Answered as i32,
                    answer: Some(answer),
                    ..Default::default()
                },
                Err(message) => WorkflowQueryResult {
                    result_type: QueryResultType::Failed as i32,
                    error_message: message,
                    ..Default::default()
                },
            };
            (id.clone(), result)
        })
        .collect();
    let request = ws::RespondWorkflowTaskCompletedRequest {
        namespace: context.namespace.clone(),
        task_token: task.task_token.clone(),
        commands,
        identity: context.identity.clone(),
        query_results,
        ..Default::default()
    };
    let result = metrics
        .timed(
            Rpc::RespondWorkflowTaskCompleted,
            context
                .clients
                .get()
                .respond_workflow_task_completed(request),
        )
        .await;
    let status = match result {
        Ok(response) => {
            // Activities the server started for this worker run here, as polled ones do. A
            // server without eager execution returns none: they come through the pollers.
            for activity in response.into_inner().activity_tasks {
                let permit = eager_permits.pop();
                let context = context.clone();
                tokio::spawn(async move {
                    run_activity(&context, activity).await;
                    drop(permit);
                });
            }
            return;
        }
        Err(status) => status,
    };
    drop(eager_permits);
    if server_refused_commands(&status) {
        // The server will never accept what this scenario needs (e.g. a command it does not
        // implement). Retrying would loop until the driver's deadline; end the workflow with the
        // server's own words so the run reports them.
        terminate(
            context,
            &execution,
            format!(
                "chronicle-bench: the server refused the workflow task's commands: {:?}: {}",
                status.code(),
                status.message()
            ),
        )
        .await;
    }
}

/// Marks up to [`MAX_EAGER_ACTIVITIES_PER_TASK`] activities scheduled on this worker's task
/// queue for eager execution, one free slot each; returns the slots taken.
fn request_eager_activities(
    context: &WorkerContext,
    commands: &mut [chronicle_proto::temporal::api::command::v1::Command],
) -> Vec<OwnedSemaphorePermit> {
    use chronicle_proto::temporal::api::command::v1::command::Attributes;
    let mut permits = Vec::new();
    let Some(slots) = &context.eager_activity_slots else {
        return permits;
    };
    for command in commands {
        if permits.len() >= MAX_EAGER_ACTIVITIES_PER_TASK {
            break;
        }
        let Some(Attributes::ScheduleActivityTaskCommandAttributes(a)) = &mut command.attributes
        else {
            continue;
        };
        let same_queue = a
            .task_queue
            .as_ref()
            .is_none_or(|q| q.name.is_empty() || q.name == context.task_queue);
        if !same_queue {
            continue;
        }
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            break;
        };
        a.request_eager_execution = true;
        permits.push(permit);
    }
    permits
}

/// Codes with which a server says the commands themselves are unacceptable (not a transient or
/// stale-token condition).
fn server_refused_commands(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::InvalidArgument | Code::Unimplemented | Code::FailedPrecondition
    )
}

/// The task's history, with the pages the poll response left out.
async fn full_history(
    context: &WorkerContext,
    execution: &WorkflowExecution,
    task: &ws::PollWorkflowTaskQueueResponse,
) -> Result<Vec<HistoryEvent>, Status> {
    let mut events = task
        .history
        .as_ref()
        .map(|h| h.events.clone())
        .unwrap_or_default();
    let mut next_page_token = task.next_page_token.clone();
    while !next_page_token.is_empty() {
        let request = ws::GetWorkflowExecutionHistoryRequest {
            namespace: context.namespace.clone(),
            execution: Some(execution.clone()),
            next_page_token,
            ..Default::default()
        };
        let page = context
            .metrics
            .timed(
                Rpc::GetWorkflowExecutionHistory,
                context
                    .clients
                    .get()
                    .get_workflow_execution_history(request),
            )
            .await?
            .into_inner();
        events.extend(page.history.map(|h| h.events).unwrap_or_default());
        next_page_token = page.next_page_token;
    }
    Ok(events)
}

async fn fail_workflow_task(
    context: &WorkerContext,
    task: &ws::PollWorkflowTaskQueueResponse,
    message: &str,
) {
    let request = ws::RespondWorkflowTaskFailedRequest {
        namespace: context.namespace.clone(),
        task_token: task.task_token.clone(),
        cause: WorkflowTaskFailedCause::WorkflowWorkerUnhandledFailure as i32,
        failure: Some(Failure {
            message: format!("chronicle-bench worker: {message}"),
            ..Default::default()
        }),
        identity: context.identity.clone(),
        ..Default::default()
    };
    let _ = context
        .clients
        .get()
        .respond_workflow_task_failed(request)
        .await;
}

async fn terminate(context: &WorkerContext, execution: &WorkflowExecution, reason: String) {
    let request = ws::TerminateWorkflowExecutionRequest {
        namespace: context.namespace.clone(),
        workflow_execution: Some(execution.clone()),
        reason,
        identity: context.identity.clone(),
        ..Default::default()
    };
    let _ = context
        .metrics
        .timed(
            Rpc::TerminateWorkflowExecution,
            context.clients.get().terminate_workflow_execution(request),
        )
        .await;
}

async fn activity_poller(context: Arc<WorkerContext>, mut stopped: watch::Receiver<bool>) {
    loop {
        let request = ws::PollActivityTaskQueueRequest {
            namespace: context.namespace.clone(),
            task_queue: Some(scenario::task_queue(&context.task_queue)),
            identity: context.identity.clone(),
            ..Default::default()
        };
        let mut client = context.clients.get();
        let call = client.poll_activity_task_queue(long_poll(request));
        let Some(task) = poll_once(
            &mut stopped,
            &context.metrics,
            Rpc::PollActivityTaskQueue,
            call,
        )
        .await
        else {
            return;
        };
        if let Some(task) = task.filter(|t| !t.task_token.is_empty()) {
            run_activity(&context, task).await;
        }
    }
}

/// The one activity: its integer input plus one.
async fn run_activity(context: &WorkerContext, task: ws::PollActivityTaskQueueResponse) {
    let activity_type = task
        .activity_type
        .as_ref()
        .map(|t| t.name.as_str())
        .unwrap_or_default();
    let outcome = if activity_type == scenario::INCREMENT_ACTIVITY {
        scenario::decode_json::<i64>(task.input.as_ref()).map(|value| value + 1)
    } else {
        Err(format!("unknown activity type {activity_type:?}"))
    };
    let mut client = context.clients.get();
    match outcome {
        Ok(result) => {
            let request = ws::RespondActivityTaskCompletedRequest {
                namespace: context.namespace.clone(),
                task_token: task.task_token,
                result: Some(scenario::json_payloads(&result)),
                identity: context.identity.clone(),
                ..Default::default()
            };
            let _ = context
                .metrics
                .timed(
                    Rpc::RespondActivityTaskCompleted,
                    client.respond_activity_task_completed(request),
                )
                .await;
        }
        Err(message) => {
            let request = ws::RespondActivityTaskFailedRequest {
                namespace: context.namespace.clone(),
                task_token: task.task_token,
                failure: Some(Failure {
                    message: format!("chronicle-bench activity: {message}"),
                    ..Default::default()
                }),
                identity: context.identity.clone(),
                ..Default::default()
            };
            let _ = context
                .metrics
                .timed(
                    Rpc::RespondActivityTaskFailed,
                    client.respond_activity_task_failed(request),
                )
                .await;
        }
    }
}
