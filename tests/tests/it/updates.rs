//! Workflow Update over raw gRPC, with the worker's side of the protocol written out: request
//! messages in the poll response, Acceptance / Rejection / Response messages and ProtocolMessage
//! commands in the completion, every wait stage, and update IDs that survive a leader change of
//! replicated history. (The Python compat suite drives the same through the SDK.)

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use chronicle_cluster::HistoryService;
use chronicle_cluster::grpc::RoutedHistory;
use chronicle_proto::temporal::api::command::v1::{
    Command, ProtocolMessageCommandAttributes, command::Attributes as CommandAttributes,
};
use chronicle_proto::temporal::api::enums::v1::{
    CommandType, EventType, UpdateWorkflowExecutionLifecycleStage as Stage,
};
use chronicle_proto::temporal::api::failure::v1::Failure;
use chronicle_proto::temporal::api::protocol::v1::{Message, message::SequencingId};
use chronicle_proto::temporal::api::update::v1 as upd;
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use chronicle_proto::temporal::api::workflowservice::v1::workflow_service_client::WorkflowServiceClient;
use chronicle_types::shard::shard_for;
use prost::{Message as _, Name};
use tonic::transport::Channel;

use crate::common::*;
use crate::split_roles::{Node, wait_ready};

type Raw = WorkflowServiceClient<Channel>;

fn update_request(
    workflow_id: &str,
    update_id: &str,
    stage: Stage,
) -> ws::UpdateWorkflowExecutionRequest {
    ws::UpdateWorkflowExecutionRequest {
        namespace: "default".into(),
        workflow_execution: execution(workflow_id, ""),
        wait_policy: Some(upd::WaitPolicy {
            lifecycle_stage: stage as i32,
        }),
        request: Some(upd::Request {
            meta: Some(upd::Meta {
                update_id: update_id.into(),
                identity: "client".into(),
            }),
            input: Some(upd::Input {
                name: "approve".into(),
                args: payloads(update_id),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn poll_update(
    workflow_id: &str,
    update_id: &str,
    stage: Stage,
) -> ws::PollWorkflowExecutionUpdateRequest {
    ws::PollWorkflowExecutionUpdateRequest {
        namespace: "default".into(),
        update_ref: Some(upd::UpdateRef {
            workflow_execution: execution(workflow_id, ""),
            update_id: update_id.into(),
        }),
        identity: "client".into(),
        wait_policy: Some(upd::WaitPolicy {
            lifecycle_stage: stage as i32,
        }),
    }
}

fn message<M: prost::Message + Name>(update_id: &str, suffix: &str, body: &M) -> Message {
    Message {
        id: format!("{update_id}/{suffix}"),
        protocol_instance_id: update_id.into(),
        sequencing_id: None,
        body: Some(chronicle_proto::wkt::Any {
            type_url: format!("type.googleapis.com/{}", M::full_name()),
            value: body.encode_to_vec(),
        }),
    }
}

fn accept(request: &Message) -> Message {
    let Some(SequencingId::EventId(sequencing)) = request.sequencing_id else {
        panic!("request without a sequencing event: {request:?}");
    };
    message(
        &request.protocol_instance_id,
        "accept",
        &upd::Acceptance {
            accepted_request_message_id: request.id.clone(),
            accepted_request_sequencing_event_id: sequencing,
            accepted_request: None,
        },
    )
}

fn respond(update_id: &str, result: &str) -> Message {
    message(
        update_id,
        "complete",
        &upd::Response {
            meta: Some(upd::Meta {
                update_id: update_id.into(),
                identity: "raw-worker".into(),
            }),
            outcome: Some(upd::Outcome {
                value: Some(upd::outcome::Value::Success(
                    payloads(result).unwrap_or_default(),
                )),
            }),
        },
    )
}

fn reject(update_id: &str) -> Message {
    message(
        update_id,
        "reject",
        &upd::Rejection {
            rejected_request_message_id: format!("{update_id}/request"),
            failure: Some(Failure {
                message: "rejected by validator".into(),
                ..Default::default()
            }),
            ..Default::default()
        },
    )
}

fn protocol_commands(messages: &[Message]) -> Vec<Command> {
    messages
        .iter()
        .map(|m| Command {
            command_type: CommandType::ProtocolMessage as i32,
            attributes: Some(CommandAttributes::ProtocolMessageCommandAttributes(
                ProtocolMessageCommandAttributes {
                    message_id: m.id.clone(),
                },
            )),
            ..Default::default()
        })
        .collect()
}

async fn poll_task(raw: &mut Raw, task_queue: &str) -> ws::PollWorkflowTaskQueueResponse {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    loop {
        let task = raw
            .poll_workflow_task_queue(poll(task_queue))
            .await
            .expect("poll")
            .into_inner();
        if !task.task_token.is_empty() {
            return task;
        }
        assert!(tokio::time::Instant::now() < deadline, "no workflow task");
    }
}

async fn complete(
    raw: &mut Raw,
    task: &ws::PollWorkflowTaskQueueResponse,
    commands: Vec<Command>,
    messages: Vec<Message>,
) -> ws::RespondWorkflowTaskCompletedResponse {
    raw.respond_workflow_task_completed(ws::RespondWorkflowTaskCompletedRequest {
        namespace: "default".into(),
        task_token: task.task_token.clone(),
        commands,
        messages,
        identity: "raw-worker".into(),
        // As today's SDKs: a speculative task that carried events may still be discarded (the
        // worker takes the same events again in the next task).
        capabilities: Some(ws::respond_workflow_task_completed_request::Capabilities {
            discard_speculative_workflow_task_with_events: true,
        }),
        ..Default::default()
    })
    .await
    .expect("completed")
    .into_inner()
}

/// Polls the next task, which must carry exactly `update_id`'s request, and accepts and
/// completes it with `result`.
async fn accept_and_complete(raw: &mut Raw, task_queue: &str, update_id: &str, result: &str) {
    let task = poll_task(raw, task_queue).await;
    assert_eq!(task.messages.len(), 1, "{:?}", task.messages);
    assert_eq!(task.messages[0].protocol_instance_id, update_id);
    let messages = vec![accept(&task.messages[0]), respond(update_id, result)];
    complete(raw, &task, protocol_commands(&messages), messages).await;
}

fn success(outcome: &Option<upd::Outcome>) -> String {
    match outcome.as_ref().and_then(|o| o.value.as_ref()) {
        Some(upd::outcome::Value::Success(p)) => {
            String::from_utf8(p.payloads[0].data.clone()).expect("utf-8")
        }
        other => panic!("not a success: {other:?}"),
    }
}

fn failure(outcome: &Option<upd::Outcome>) -> Failure {
    match outcome.as_ref().and_then(|o| o.value.as_ref()) {
        Some(upd::outcome::Value::Failure(f)) => f.clone(),
        other => panic!("not a failure: {other:?}"),
    }
}

fn count(
    events: &[chronicle_proto::temporal::api::history::v1::HistoryEvent],
    t: EventType,
) -> usize {
    events.iter().filter(|e| e.event_type == t as i32).count()
}

/// Starts a workflow and completes its first task with no commands: it then waits, idle.
async fn idle_workflow(raw: &mut Raw, workflow_id: &str, task_queue: &str) {
    raw.start_workflow_execution(start_request(workflow_id, "Approval", task_queue))
        .await
        .expect("start");
    let first = poll_task(raw, task_queue).await;
    assert!(first.messages.is_empty());
    complete(raw, &first, Vec::new(), Vec::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_protocol_and_wait_stages_over_raw_grpc() {
    let server = start_server().await;
    let url = server.server.url();
    let mut raw = raw_client(&url).await;
    let task_queue = unique("updates");
    let workflow_id = unique("update");
    idle_workflow(&mut raw, &workflow_id, &task_queue).await;

    // 1. Accepted and completed in one task: the caller waiting for COMPLETED gets the outcome.
    let mut caller = raw.clone();
    let waiting = tokio::spawn({
        let request = update_request(&workflow_id, "u1", Stage::Completed);
        async move { caller.update_workflow_execution(request).await }
    });
    let task = poll_task(&mut raw, &task_queue).await;
    assert_eq!(task.messages.len(), 1);
    let request = &task.messages[0];
    assert_eq!(
        (request.id.as_str(), request.protocol_instance_id.as_str()),
        ("u1/request", "u1")
    );
    assert_eq!(
        request.sequencing_id,
        Some(SequencingId::EventId(task.started_event_id - 1)),
        "sequenced after the event before the task's Started event, as Temporal does"
    );
    let body = request.body.as_ref().expect("body");
    assert!(body.type_url.ends_with("/temporal.api.update.v1.Request"));
    let decoded = upd::Request::decode(body.value.as_slice()).expect("a Request");
    assert_eq!(decoded.input.unwrap().name, "approve");
    // The task's own events come with it, though they are not in history yet (speculative).
    let events = &task.history.as_ref().unwrap().events;
    assert_eq!(
        events.last().map(|e| (e.event_id, e.event_type)),
        Some((task.started_event_id, EventType::WorkflowTaskStarted as i32))
    );
    let messages = vec![accept(request), respond("u1", "one")];
    complete(&mut raw, &task, protocol_commands(&messages), messages).await;
    let done = waiting.await.unwrap().expect("update").into_inner();
    assert_eq!(done.stage, Stage::Completed as i32);
    assert_eq!(success(&done.outcome), "one");
    assert_eq!(done.update_ref.unwrap().update_id, "u1");
    // The same ID again: the same outcome at once, nothing new for the worker.
    let again = raw
        .update_workflow_execution(update_request(&workflow_id, "u1", Stage::Completed))
        .await
        .expect("again")
        .into_inner();
    assert_eq!(success(&again.outcome), "one");

    // 2. Rejected: the caller gets the rejection; the speculative task leaves no events.
    let before = workflow_history(&mut raw, &workflow_id).await;
    let mut caller = raw.clone();
    let waiting = tokio::spawn({
        let request = update_request(&workflow_id, "u2", Stage::Completed);
        async move { caller.update_workflow_execution(request).await }
    });
    let task = poll_task(&mut raw, &task_queue).await;
    let completed = complete(&mut raw, &task, Vec::new(), vec![reject("u2")]).await;
    let last_started = before
        .iter()
        .rev()
        .find(|e| e.event_type == EventType::WorkflowTaskStarted as i32)
        .unwrap()
        .event_id;
    assert_eq!(completed.reset_history_event_id, last_started);
    let rejected = waiting.await.unwrap().expect("update").into_inner();
    assert_eq!(rejected.stage, Stage::Completed as i32);
    assert_eq!(failure(&rejected.outcome).message, "rejected by validator");
    assert_eq!(workflow_history(&mut raw, &workflow_id).await, before);

    // 3. Admitted, no worker: the call waits up to history's long poll (20 s), then answers
    // with the stage reached so far; the SDK polls again from there.
    let started = std::time::Instant::now();
    let admitted = raw
        .update_workflow_execution(update_request(&workflow_id, "u3", Stage::Accepted))
        .await
        .expect("admitted")
        .into_inner();
    assert_eq!(admitted.stage, Stage::Admitted as i32);
    assert!(admitted.outcome.is_none());
    assert!(started.elapsed() >= Duration::from_secs(15), "it waited");
    // A caller with a shorter deadline gets the stage reached before its deadline instead.
    let started = std::time::Instant::now();
    let mut request = tonic::Request::new(update_request(&workflow_id, "u3", Stage::Accepted));
    request.set_timeout(Duration::from_secs(3));
    let admitted = raw
        .update_workflow_execution(request)
        .await
        .expect("answered before the deadline")
        .into_inner();
    assert_eq!(admitted.stage, Stage::Admitted as i32);
    assert!(started.elapsed() < Duration::from_secs(3));
    let mut request = tonic::Request::new(poll_update(&workflow_id, "u3", Stage::Completed));
    request.set_timeout(Duration::from_secs(2));
    let polled = raw
        .poll_workflow_execution_update(request)
        .await
        .expect("answered before the deadline")
        .into_inner();
    assert_eq!(polled.stage, Stage::Admitted as i32);
    let polled = raw
        .poll_workflow_execution_update(poll_update(&workflow_id, "u3", Stage::Admitted))
        .await
        .expect("poll")
        .into_inner();
    assert_eq!(polled.stage, Stage::Admitted as i32);
    // Accepted, not completed.
    let task = poll_task(&mut raw, &task_queue).await;
    let messages = vec![accept(&task.messages[0])];
    complete(&mut raw, &task, protocol_commands(&messages), messages).await;
    let polled = raw
        .poll_workflow_execution_update(poll_update(&workflow_id, "u3", Stage::Accepted))
        .await
        .expect("poll")
        .into_inner();
    assert_eq!(polled.stage, Stage::Accepted as i32);
    // The run ends first: the accepted update completes with Temporal's failure.
    raw.terminate_workflow_execution(ws::TerminateWorkflowExecutionRequest {
        namespace: "default".into(),
        workflow_execution: execution(&workflow_id, ""),
        reason: "done".into(),
        ..Default::default()
    })
    .await
    .expect("terminate");
    let polled = raw
        .poll_workflow_execution_update(poll_update(&workflow_id, "u3", Stage::Completed))
        .await
        .expect("poll")
        .into_inner();
    assert_eq!(polled.stage, Stage::Completed as i32);
    assert_eq!(
        failure(&polled.outcome).message,
        "Workflow Update failed because the Workflow completed before the Update completed."
    );
    let unknown = raw
        .poll_workflow_execution_update(poll_update(&workflow_id, "nope", Stage::Completed))
        .await
        .expect_err("unknown update");
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    let closed = raw
        .update_workflow_execution(update_request(&workflow_id, "u4", Stage::Completed))
        .await
        .expect_err("closed run");
    assert_eq!(closed.code(), tonic::Code::NotFound);
    assert_eq!(closed.message(), "workflow execution already completed");
    let events = workflow_history(&mut raw, &workflow_id).await;
    assert_eq!(
        count(&events, EventType::WorkflowExecutionUpdateAccepted),
        2
    );
    assert_eq!(
        count(&events, EventType::WorkflowExecutionUpdateCompleted),
        1
    );
    // Waiting for ADMITTED is not supported, as in Temporal.
    let refused = raw
        .update_workflow_execution(update_request(&workflow_id, "u5", Stage::Admitted))
        .await
        .expect_err("admitted is no wait stage");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
}

async fn start_history(dir: &Path, matching: SocketAddr, shards: u32) -> Node {
    let data_dir = dir.to_path_buf();
    Node::start_on("history", None, |c| {
        c.data_dir = data_dir;
        c.num_shards = Some(shards);
        c.replicated = true;
        c.matching_addr = Some(matching.to_string());
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_ids_and_admitted_updates_survive_a_leader_change() {
    const SHARDS: u32 = 2;
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let matching_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let matching_addr = matching_listener.local_addr().unwrap();
    drop(matching_listener);
    let mut histories = Vec::new();
    for dir in &dirs {
        histories.push(Some(start_history(dir.path(), matching_addr, SHARDS).await));
    }
    let addrs: Vec<String> = histories
        .iter()
        .map(|h| h.as_ref().unwrap().internal())
        .collect();
    chronicle_server::admin::init_cluster(&addrs, SHARDS)
        .await
        .expect("cluster init");
    let history_addr = addrs.join(",");
    let matching = Node::start_on("matching", Some(matching_addr), |c| {
        c.history_addr = Some(history_addr.clone());
    })
    .await;
    let frontend = Node::start("frontend", |c| {
        c.history_addr = Some(history_addr.clone());
        c.matching_addr = Some(matching.internal());
    })
    .await;
    wait_ready(&frontend.url()).await;
    let mut raw = raw_client(&frontend.url()).await;
    let router = RoutedHistory::new(addrs.clone());
    let namespace_id = router
        .namespace_by_name("default")
        .await
        .expect("default namespace")
        .info
        .unwrap()
        .id;

    let task_queue = unique("updates-replicated");
    let workflow_id = unique("update-failover");
    idle_workflow(&mut raw, &workflow_id, &task_queue).await;
    let mut caller = raw.clone();
    let waiting = tokio::spawn({
        let request = update_request(&workflow_id, "done-before", Stage::Completed);
        async move { caller.update_workflow_execution(request).await }
    });
    accept_and_complete(&mut raw, &task_queue, "done-before", "first").await;
    assert_eq!(
        success(&waiting.await.unwrap().expect("update").into_inner().outcome),
        "first"
    );
    // Admitted under this leader, not yet delivered to any worker.
    let mut caller = raw.clone();
    let pending = tokio::spawn({
        let request = update_request(&workflow_id, "admitted-before", Stage::Completed);
        async move { caller.update_workflow_execution(request).await }
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while raw
        .poll_workflow_execution_update(poll_update(
            &workflow_id,
            "admitted-before",
            Stage::Admitted,
        ))
        .await
        .is_err()
    {
        assert!(tokio::time::Instant::now() < deadline, "never admitted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The shard's leader goes away.
    let shard = shard_for(&namespace_id, &workflow_id, SHARDS);
    router
        .describe_workflow(
            &namespace_id,
            ws::DescribeWorkflowExecutionRequest {
                namespace: "default".into(),
                execution: execution(&workflow_id, ""),
            },
        )
        .await
        .expect("describe");
    let leader = router.cached_leader(shard).expect("the shard's leader");
    let index = addrs.iter().position(|a| *a == leader).expect("a member");
    histories[index].take().unwrap().stop().await;
    pending.abort();

    // The new leader knows the completed update by its ID...
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let again = loop {
        match raw
            .update_workflow_execution(update_request(
                &workflow_id,
                "done-before",
                Stage::Completed,
            ))
            .await
        {
            Ok(r) => break r.into_inner(),
            Err(e) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "no answer after failover: {e:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    assert_eq!(again.stage, Stage::Completed as i32);
    assert_eq!(success(&again.outcome), "first");
    // ...and delivers the update admitted under the old one.
    accept_and_complete(&mut raw, &task_queue, "admitted-before", "second").await;
    let polled = raw
        .poll_workflow_execution_update(poll_update(
            &workflow_id,
            "admitted-before",
            Stage::Completed,
        ))
        .await
        .expect("poll")
        .into_inner();
    assert_eq!(success(&polled.outcome), "second");
    router
        .describe_workflow(
            &namespace_id,
            ws::DescribeWorkflowExecutionRequest {
                namespace: "default".into(),
                execution: execution(&workflow_id, ""),
            },
        )
        .await
        .expect("describe");
    assert_ne!(
        router.cached_leader(shard).as_deref(),
        Some(leader.as_str()),
        "another node leads the shard"
    );
    let events = workflow_history(&mut raw, &workflow_id).await;
    assert_eq!(
        count(&events, EventType::WorkflowExecutionUpdateAccepted),
        2
    );
    assert_eq!(
        count(&events, EventType::WorkflowExecutionUpdateCompleted),
        2
    );

    frontend.stop().await;
    matching.stop().await;
    for node in histories.into_iter().flatten() {
        node.stop().await;
    }
}

/// Updates for the replay test (`apply_safety`): a run holding several updates in every stage
/// (accepted and completed, rejected, admitted and undelivered: a map of its state with more
/// than one entry) and a speculative task discarded by a rejection.
pub async fn update_workload(url: &str) {
    let mut raw = raw_client(url).await;
    let task_queue = unique("replay-updates");
    let workflow_id = unique("replay-update");
    idle_workflow(&mut raw, &workflow_id, &task_queue).await;
    let mut caller = raw.clone();
    let waiting = tokio::spawn({
        let request = update_request(&workflow_id, "done", Stage::Completed);
        async move { caller.update_workflow_execution(request).await }
    });
    accept_and_complete(&mut raw, &task_queue, "done", "ok").await;
    waiting.await.unwrap().expect("update");
    let mut caller = raw.clone();
    let waiting = tokio::spawn({
        let request = update_request(&workflow_id, "rejected", Stage::Completed);
        async move { caller.update_workflow_execution(request).await }
    });
    let task = poll_task(&mut raw, &task_queue).await;
    complete(&mut raw, &task, Vec::new(), vec![reject("rejected")]).await;
    waiting.await.unwrap().expect("update");
    // Admitted, never delivered: the callers give up, the updates stay in the run's state.
    for id in ["pending-1", "pending-2", "pending-3"] {
        let mut caller = raw.clone();
        let request = update_request(&workflow_id, id, Stage::Completed);
        let call = tokio::spawn(async move { caller.update_workflow_execution(request).await });
        while raw
            .poll_workflow_execution_update(poll_update(&workflow_id, id, Stage::Admitted))
            .await
            .is_err()
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        call.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_in_flight_when_the_run_closes_get_temporals_errors() {
    use chronicle_proto::temporal::api::command::v1::{
        CompleteWorkflowExecutionCommandAttributes, ContinueAsNewWorkflowExecutionCommandAttributes,
    };
    use chronicle_proto::temporal::api::common::v1::WorkflowType;
    let server = start_server().await;
    let mut raw = raw_client(&server.server.url()).await;
    let task_queue = unique("closing");

    // Admitted while the task that closes the run is running: the closing run drops it.
    for continue_as_new in [false, true] {
        let workflow_id = unique("closing");
        raw.start_workflow_execution(start_request(&workflow_id, "Approval", &task_queue))
            .await
            .expect("start");
        let task = poll_task(&mut raw, &task_queue).await;
        let mut caller = raw.clone();
        let waiting = tokio::spawn({
            let request = update_request(&workflow_id, "late", Stage::Completed);
            async move { caller.update_workflow_execution(request).await }
        });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while raw
            .poll_workflow_execution_update(poll_update(&workflow_id, "late", Stage::Admitted))
            .await
            .is_err()
        {
            assert!(tokio::time::Instant::now() < deadline, "never admitted");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let close = if continue_as_new {
            CommandAttributes::ContinueAsNewWorkflowExecutionCommandAttributes(
                ContinueAsNewWorkflowExecutionCommandAttributes {
                    workflow_type: Some(WorkflowType {
                        name: "Approval".into(),
                    }),
                    task_queue: queue(&task_queue),
                    ..Default::default()
                },
            )
        } else {
            CommandAttributes::CompleteWorkflowExecutionCommandAttributes(
                CompleteWorkflowExecutionCommandAttributes::default(),
            )
        };
        let command = Command {
            attributes: Some(close),
            ..Default::default()
        };
        complete(&mut raw, &task, vec![command], Vec::new()).await;
        let error = waiting.await.unwrap().expect_err("aborted");
        if continue_as_new {
            // Retryable: the SDK sends it again, to the new run when it named none.
            assert_eq!(error.code(), tonic::Code::ResourceExhausted, "{error:?}");
            assert_eq!(
                error.message(),
                "workflow operation can not be applied because workflow is closing"
            );
            let retried = tokio::spawn({
                let mut caller = raw.clone();
                let request = update_request(&workflow_id, "late", Stage::Completed);
                async move { caller.update_workflow_execution(request).await }
            });
            // Admitted on the new run before its first task starts, that task carries it (a
            // poll that wins the race gets a task without it, and the update rides the next).
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while raw
                .poll_workflow_execution_update(poll_update(&workflow_id, "late", Stage::Admitted))
                .await
                .is_err()
            {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "retry never admitted"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let task = poll_task(&mut raw, &task_queue).await;
            assert_eq!(task.messages.len(), 1);
            let messages = vec![accept(&task.messages[0]), respond("late", "on the new run")];
            complete(&mut raw, &task, protocol_commands(&messages), messages).await;
            let done = retried.await.unwrap().expect("update").into_inner();
            assert_eq!(success(&done.outcome), "on the new run");
            raw.terminate_workflow_execution(ws::TerminateWorkflowExecutionRequest {
                namespace: "default".into(),
                workflow_execution: execution(&workflow_id, ""),
                reason: "done".into(),
                ..Default::default()
            })
            .await
            .expect("terminate");
        } else {
            assert_eq!(error.code(), tonic::Code::NotFound, "{error:?}");
            assert_eq!(
                error.message(),
                "workflow update was aborted by closing workflow"
            );
        }
    }
}

/// An approval workflow of the official Rust SDK: an update with a validator.
#[temporalio_macros::workflow]
#[derive(Default)]
pub struct Approvals {
    approvers: Vec<String>,
}

#[temporalio_macros::workflow_methods]
impl Approvals {
    #[run]
    pub async fn run(
        ctx: &mut temporalio_sdk::WorkflowContext<Self>,
        required: u32,
    ) -> temporalio_sdk::WorkflowResult<Vec<String>> {
        ctx.wait_condition(|s| s.approvers.len() as u32 >= required)
            .await?;
        Ok(ctx.state(|s| s.approvers.clone()))
    }

    #[update]
    pub fn approve(
        &mut self,
        _ctx: &mut temporalio_sdk::SyncWorkflowContext<Self>,
        who: String,
    ) -> u32 {
        self.approvers.push(who);
        self.approvers.len() as u32
    }

    #[update_validator(approve)]
    pub fn validate_approve(
        &self,
        _ctx: &temporalio_sdk::WorkflowContextView,
        who: &String,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        if self.approvers.contains(who) {
            return Err(format!("{who} already approved").into());
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_sdk_updates_with_a_validator() {
    use temporalio_client::{
        WorkflowExecuteUpdateOptions, WorkflowGetResultOptions, WorkflowStartOptions,
    };
    let server = start_server().await;
    let url = server.server.url();
    let client = sdk_client(&url).await;
    let mut raw = raw_client(&url).await;
    let task_queue = unique("rust-updates");
    let workflow_id = unique("rust-approvals");
    let runtime = runtime();
    let options = temporalio_sdk::WorkerOptions::new(&task_queue)
        .deployment_options(deployment())
        .register_workflow::<Approvals>()
        .expect("register")
        .build();
    let mut worker = new_worker(&runtime, client.clone(), options);
    let stop = worker.shutdown_handle();
    let (run, ()) = tokio::join!(worker.run(), async {
        let handle = client
            .start_workflow(
                Approvals::run,
                2,
                WorkflowStartOptions::new(task_queue.clone(), workflow_id.clone()).build(),
            )
            .await
            .expect("start");
        let with_id = |id: &str| {
            WorkflowExecuteUpdateOptions::builder()
                .update_id(id.to_string())
                .build()
        };
        let approved = handle
            .execute_update(Approvals::approve, "alice".to_string(), with_id("a"))
            .await
            .expect("alice");
        assert_eq!(approved, 1);
        let before = workflow_history(&mut raw, &workflow_id).await;
        let rejected = handle
            .execute_update(Approvals::approve, "alice".to_string(), with_id("a-again"))
            .await
            .expect_err("the validator rejects a second approval by alice");
        assert!(
            format!("{rejected:?}").contains("alice already approved"),
            "{rejected:?}"
        );
        assert_eq!(
            workflow_history(&mut raw, &workflow_id).await.len(),
            before.len(),
            "a rejection leaves no events"
        );
        // The first update's ID again: its outcome, not a second approval.
        let again = handle
            .execute_update(Approvals::approve, "alice".to_string(), with_id("a"))
            .await
            .expect("deduplicated");
        assert_eq!(again, 1);
        let approved = handle
            .execute_update(Approvals::approve, "bob".to_string(), with_id("b"))
            .await
            .expect("bob");
        assert_eq!(approved, 2);
        let result = handle
            .get_result(WorkflowGetResultOptions::default())
            .await
            .expect("result");
        assert_eq!(result, vec!["alice".to_string(), "bob".to_string()]);
        stop();
    });
    run.expect("worker ran");
    let events = workflow_history(&mut raw, &workflow_id).await;
    assert_eq!(
        count(&events, EventType::WorkflowExecutionUpdateAccepted),
        2
    );
    assert_eq!(
        count(&events, EventType::WorkflowExecutionUpdateCompleted),
        2
    );
}
