//! The internal service interfaces between roles. Frontend, matching and history only talk to
//! each other through these traits; start-dev wires in-process implementations, the cluster
//! wires gRPC ones generated from `proto/`.
//!
//! Requests carry Temporal's own request messages plus the resolved namespace ID, so a role
//! never re-validates what the frontend already checked.

pub mod batch_list;
pub mod grpc;
pub mod metered;
pub mod metric_defs;
pub mod partition;
pub mod stoppable;

use async_trait::async_trait;
use chronicle_proto::chronicle::persistence::v1::NamespaceRecord;
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use chronicle_types::ApiResult;

/// A task the history engine hands to matching: enough to find the run and ask history to
/// start it when a poller takes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskRef {
    pub namespace_id: String,
    pub workflow_id: String,
    pub run_id: String,
    pub scheduled_event_id: i64,
    /// Activity attempt (workflow tasks: 0).
    pub attempt: i32,
    /// Outbox row that produced the task (for de-duplication in matching).
    pub outbox_id: u64,
    /// Shard that owns the run.
    pub shard: u32,
    /// Milliseconds since the epoch after which the task is dropped (schedule-to-start), 0 = never.
    pub expires_at_ms: i64,
    /// A workflow task for a worker's sticky queue (it falls back to the normal queue when that
    /// worker is not polling).
    pub sticky: bool,
    /// Worker commands for one worker process's control queue: a queue of one partition, like
    /// a sticky queue, but never redirected anywhere (docs/worker-commands.md).
    pub worker_commands: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TaskKind {
    Workflow,
    Activity,
    Nexus,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TaskQueueKey {
    pub namespace_id: String,
    pub name: String,
    pub kind: TaskKind,
}

/// Who took a task: used to record the Started event.
#[derive(Clone, Debug, Default)]
pub struct PollerInfo {
    pub identity: String,
    pub request_id: String,
    pub task_queue: String,
    pub task_queue_kind: i32,
    /// An activity poll's `worker_control_task_queue`: where that worker process takes worker
    /// commands (empty: it takes none).
    pub worker_control_task_queue: String,
}

#[async_trait]
pub trait HistoryService: Send + Sync + 'static {
    /// The ID of the cluster (GetClusterInfo, ListClusters): minted by `cluster init`, or a
    /// single-node server's own. Empty while no history node has joined a cluster yet.
    async fn cluster_id(&self) -> ApiResult<String> {
        Err(chronicle_types::ApiError::new(
            tonic::Code::Unimplemented,
            "this history service does not know its cluster",
        ))
    }

    // Namespaces (held by the metadata group).
    async fn register_namespace(&self, record: NamespaceRecord) -> ApiResult<()>;
    async fn update_namespace(&self, record: NamespaceRecord) -> ApiResult<()>;
    async fn namespace_by_name(&self, name: &str) -> ApiResult<NamespaceRecord>;
    async fn list_namespaces(&self) -> ApiResult<Vec<NamespaceRecord>>;
    /// Adds and removes custom search attributes of a namespace (the metadata group checks the
    /// change against the stored registry at apply).
    async fn update_search_attributes(
        &self,
        namespace: &str,
        add: std::collections::BTreeMap<String, i32>,
        remove: Vec<String>,
    ) -> ApiResult<()> {
        let _ = (namespace, add, remove);
        Err(chronicle_types::ApiError::new(
            tonic::Code::Unimplemented,
            "this history service does not change search attributes",
        ))
    }

    // Workflow lifecycle.
    async fn start_workflow(
        &self,
        namespace_id: &str,
        request: ws::StartWorkflowExecutionRequest,
    ) -> ApiResult<ws::StartWorkflowExecutionResponse>;
    async fn signal_workflow(
        &self,
        namespace_id: &str,
        request: ws::SignalWorkflowExecutionRequest,
    ) -> ApiResult<()>;
    async fn signal_with_start(
        &self,
        namespace_id: &str,
        request: ws::SignalWithStartWorkflowExecutionRequest,
    ) -> ApiResult<ws::SignalWithStartWorkflowExecutionResponse>;
    async fn terminate_workflow(
        &self,
        namespace_id: &str,
        request: ws::TerminateWorkflowExecutionRequest,
    ) -> ApiResult<()>;
    async fn request_cancel_workflow(
        &self,
        namespace_id: &str,
        request: ws::RequestCancelWorkflowExecutionRequest,
    ) -> ApiResult<()>;
    /// DeleteWorkflowExecution: a running run is terminated, then the run is deleted (at once,
    /// or shortly after, once its close has been reported to its parent or schedule).
    async fn delete_workflow_execution(
        &self,
        namespace_id: &str,
        request: ws::DeleteWorkflowExecutionRequest,
    ) -> ApiResult<()> {
        let _ = (namespace_id, request);
        Err(unimplemented("DeleteWorkflowExecution"))
    }
    /// Marks a namespace deleted and renames it (or removes a deleted record), on the metadata
    /// group; the shards then delete its runs.
    async fn delete_namespace(
        &self,
        command: chronicle_proto::chronicle::history::v1::DeleteNamespace,
    ) -> ApiResult<()> {
        let _ = command;
        Err(unimplemented("DeleteNamespace"))
    }
    async fn describe_workflow(
        &self,
        namespace_id: &str,
        request: ws::DescribeWorkflowExecutionRequest,
    ) -> ApiResult<ws::DescribeWorkflowExecutionResponse>;
    async fn get_history(
        &self,
        namespace_id: &str,
        request: ws::GetWorkflowExecutionHistoryRequest,
    ) -> ApiResult<ws::GetWorkflowExecutionHistoryResponse>;
    async fn get_history_reverse(
        &self,
        namespace_id: &str,
        request: ws::GetWorkflowExecutionHistoryReverseRequest,
    ) -> ApiResult<ws::GetWorkflowExecutionHistoryReverseResponse>;
    /// A page of the runs matching a visibility query (or only their count), in list order
    /// (`chronicle_visibility::order`). The query was checked by the frontend.
    async fn list_workflows(
        &self,
        request: chronicle_proto::chronicle::history::v1::ListWorkflowsRequest,
    ) -> ApiResult<chronicle_proto::chronicle::history::v1::ListWorkflowsResponse>;
    async fn query_workflow(
        &self,
        namespace_id: &str,
        request: ws::QueryWorkflowRequest,
    ) -> ApiResult<ws::QueryWorkflowResponse>;

    // Workflow updates. Admission is idempotent at apply (by update ID, and the start of
    // update-with-start by request ID), so a router may send these again after Unavailable.
    /// Admits an update (or finds the one with its ID) and waits, up to history's long-poll
    /// interval, for the request's wait stage; answers with the stage reached.
    async fn update_workflow(
        &self,
        namespace_id: &str,
        request: ws::UpdateWorkflowExecutionRequest,
    ) -> ApiResult<ws::UpdateWorkflowExecutionResponse> {
        let _ = (namespace_id, request);
        Err(unimplemented("UpdateWorkflow"))
    }
    /// Waits for an admitted update to reach the request's stage (same long-poll interval).
    async fn poll_workflow_update(
        &self,
        namespace_id: &str,
        request: ws::PollWorkflowExecutionUpdateRequest,
    ) -> ApiResult<ws::PollWorkflowExecutionUpdateResponse> {
        let _ = (namespace_id, request);
        Err(unimplemented("PollWorkflowUpdate"))
    }
    /// Update-with-start (ExecuteMultiOperation): starts the workflow under the start's
    /// conflict policy and admits the update on the resulting run, in one command.
    async fn update_with_start(
        &self,
        namespace_id: &str,
        start: ws::StartWorkflowExecutionRequest,
        update: ws::UpdateWorkflowExecutionRequest,
    ) -> ApiResult<(
        ws::StartWorkflowExecutionResponse,
        ws::UpdateWorkflowExecutionResponse,
    )> {
        let _ = (namespace_id, start, update);
        Err(unimplemented("UpdateWithStart"))
    }

    // Tasks, called by matching when a poller takes a task.
    async fn record_workflow_task_started(
        &self,
        task: &TaskRef,
        poller: &PollerInfo,
    ) -> ApiResult<ws::PollWorkflowTaskQueueResponse>;
    async fn record_activity_task_started(
        &self,
        task: &TaskRef,
        poller: &PollerInfo,
    ) -> ApiResult<ws::PollActivityTaskQueueResponse>;
    /// The worker of the sticky queue `task` was sent to is gone: move the workflow task to the
    /// run's normal queue.
    async fn sticky_worker_unavailable(&self, task: &TaskRef) -> ApiResult<()>;

    // Task outcomes, called by the frontend (tokens already decoded there are re-checked here).
    async fn respond_workflow_task_completed(
        &self,
        namespace_id: &str,
        request: ws::RespondWorkflowTaskCompletedRequest,
    ) -> ApiResult<ws::RespondWorkflowTaskCompletedResponse>;
    async fn respond_workflow_task_failed(
        &self,
        namespace_id: &str,
        request: ws::RespondWorkflowTaskFailedRequest,
    ) -> ApiResult<()>;
    async fn respond_activity(&self, namespace_id: &str, outcome: ActivityOutcome)
    -> ApiResult<()>;
    async fn record_activity_heartbeat(
        &self,
        namespace_id: &str,
        heartbeat: ActivityHeartbeat,
    ) -> ApiResult<HeartbeatOutcome>;

    /// An operation on a run that writes no event (`RunOperation`: activity pause, unpause,
    /// reset, options update; ResetStickyTaskQueue), routed by its workflow ID.
    async fn run_operation(
        &self,
        operation: chronicle_proto::chronicle::history::v1::RunOperation,
    ) -> ApiResult<chronicle_proto::chronicle::history::v1::RunOperationResult> {
        let _ = operation;
        Err(unimplemented("RunOperation"))
    }

    /// Proposes a transfer task's command on `shard` (history to history, across shards). The
    /// command is checked at apply, so it may be sent again after an ambiguous failure.
    async fn propose_transfer(
        &self,
        shard: u32,
        command: chronicle_proto::chronicle::history::v1::ShardCommand,
    ) -> ApiResult<chronicle_proto::chronicle::history::v1::CommandResult> {
        let _ = (shard, command);
        Err(chronicle_types::ApiError::new(
            tonic::Code::Unimplemented,
            "this history service does not take transfer commands",
        ))
    }

    /// ResetWorkflowExecution: a new run from a prefix of a run's history (idempotent at apply
    /// by the request's ID, so a router may send it again after Unavailable).
    async fn reset_workflow(
        &self,
        namespace_id: &str,
        request: ws::ResetWorkflowExecutionRequest,
    ) -> ApiResult<ws::ResetWorkflowExecutionResponse> {
        let _ = (namespace_id, request);
        Err(unimplemented("workflow resets"))
    }

    /// Schedules: create, describe, update, patch, delete, list, matching times (routed by
    /// schedule ID like a workflow ID; list gathers every shard).
    async fn schedule(
        &self,
        namespace_id: &str,
        request: chronicle_proto::chronicle::history::v1::ScheduleRequest,
    ) -> ApiResult<chronicle_proto::chronicle::history::v1::ScheduleResponse> {
        let _ = (namespace_id, request);
        Err(chronicle_types::ApiError::new(
            tonic::Code::Unimplemented,
            "this history service does not serve schedules",
        ))
    }

    /// Batch operations: start, describe, list, stop, count running (routed by job ID like a
    /// workflow ID; list and count gather every shard).
    async fn batch(
        &self,
        namespace_id: &str,
        request: chronicle_proto::chronicle::history::v1::BatchRequest,
    ) -> ApiResult<chronicle_proto::chronicle::history::v1::BatchResponse> {
        let _ = (namespace_id, request);
        Err(unimplemented("batch operations"))
    }

    /// Standalone activity executions: start, describe, poll the outcome, cancel, terminate,
    /// delete (routed by activity ID; list and count go through `list_workflows`).
    async fn standalone_activity(
        &self,
        namespace_id: &str,
        request: chronicle_proto::chronicle::history::v1::StandaloneActivityRequest,
    ) -> ApiResult<chronicle_proto::chronicle::history::v1::StandaloneActivityResponse> {
        let _ = (namespace_id, request);
        Err(unimplemented("standalone activities"))
    }

    /// The Nexus endpoint registry (metadata group): a change is proposed there (the leader
    /// mints IDs), a read is served by its leader, so each read sees every acknowledged change.
    async fn nexus_endpoints(
        &self,
        request: chronicle_proto::chronicle::history::v1::NexusEndpointsRequest,
    ) -> ApiResult<chronicle_proto::chronicle::history::v1::NexusEndpointsResponse> {
        let _ = request;
        Err(unimplemented("Nexus endpoints"))
    }

    /// Nexus tasks (docs/nexus.md): a handler worker's poll takes the start request of an
    /// operation (a read on the caller's shard), and the worker's answer is recorded there.
    async fn nexus_task(
        &self,
        namespace_id: &str,
        request: chronicle_proto::chronicle::history::v1::NexusTaskRequest,
    ) -> ApiResult<chronicle_proto::chronicle::history::v1::NexusTaskResponse> {
        let _ = (namespace_id, request);
        Err(unimplemented("Nexus operations"))
    }
}

fn unimplemented(what: &str) -> chronicle_types::ApiError {
    chronicle_types::ApiError::new(
        tonic::Code::Unimplemented,
        format!("this history service does not serve {what}"),
    )
}

/// How an activity attempt ended, addressed by task token or by workflow and activity ID.
#[derive(Clone, Debug)]
pub struct ActivityOutcome {
    pub target: ActivityTarget,
    pub identity: String,
    pub result: ActivityResult,
}

#[derive(Clone, Debug)]
pub enum ActivityTarget {
    Token(Vec<u8>),
    ById {
        workflow_id: String,
        run_id: String,
        activity_id: String,
    },
}

// One value per activity RPC, moved once: the size of the `Failed` variant costs nothing worth
// an extra allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum ActivityResult {
    Completed(Option<chronicle_proto::temporal::api::common::v1::Payloads>),
    Failed {
        failure: Option<chronicle_proto::temporal::api::failure::v1::Failure>,
        last_heartbeat_details: Option<chronicle_proto::temporal::api::common::v1::Payloads>,
    },
    Canceled(Option<chronicle_proto::temporal::api::common::v1::Payloads>),
}

#[derive(Clone, Debug)]
pub struct ActivityHeartbeat {
    pub target: ActivityTarget,
    pub identity: String,
    pub details: Option<chronicle_proto::temporal::api::common::v1::Payloads>,
}

/// What a heartbeat tells the worker (RecordActivityTaskHeartbeatResponse).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeartbeatOutcome {
    pub cancel_requested: bool,
    /// The activity is paused: the worker should stop the attempt.
    pub activity_paused: bool,
    /// The activity was reset while this attempt ran.
    pub activity_reset: bool,
}

/// A query waiting for a worker: the poll response to hand out (with `query` set).
#[derive(Clone, Debug)]
pub struct QueryTask {
    pub query_id: String,
    pub response: ws::PollWorkflowTaskQueueResponse,
}

#[async_trait]
pub trait MatchingService: Send + Sync + 'static {
    /// Adds a task to its queue (or hands it to a waiting poller). Idempotent per outbox row.
    async fn add_task(&self, queue: TaskQueueKey, task: TaskRef) -> ApiResult<()>;
    async fn poll_workflow_task(
        &self,
        namespace_id: &str,
        request: ws::PollWorkflowTaskQueueRequest,
    ) -> ApiResult<ws::PollWorkflowTaskQueueResponse>;
    async fn poll_activity_task(
        &self,
        namespace_id: &str,
        request: ws::PollActivityTaskQueueRequest,
    ) -> ApiResult<ws::PollActivityTaskQueueResponse>;
    /// A Nexus handler worker's long poll. No Nexus task is dispatched yet (operations are not
    /// built), so it waits like any poll and answers empty; the worker shows among the queue's
    /// pollers.
    async fn poll_nexus_task(
        &self,
        namespace_id: &str,
        request: ws::PollNexusTaskQueueRequest,
    ) -> ApiResult<ws::PollNexusTaskQueueResponse> {
        let _ = (namespace_id, request);
        Err(unimplemented_matching("PollNexusTaskQueue"))
    }
    /// Sends a query task to a workflow worker of `task_queue` and waits for its answer.
    async fn query_workflow(
        &self,
        namespace_id: &str,
        task_queue: &str,
        task: QueryTask,
        timeout: std::time::Duration,
    ) -> ApiResult<ws::RespondQueryTaskCompletedRequest>;
    async fn respond_query_task_completed(
        &self,
        namespace_id: &str,
        request: ws::RespondQueryTaskCompletedRequest,
    ) -> ApiResult<()>;
    /// The pollers of the workflow or the activity queue of a name (DescribeTaskQueue's type).
    async fn describe_task_queue(
        &self,
        namespace_id: &str,
        name: &str,
        kind: TaskKind,
    ) -> ApiResult<ws::DescribeTaskQueueResponse>;
    /// A worker shut down (`ShutdownWorker`): its sticky queue gets no more polls, so the tasks
    /// waiting there, and any sent there later, go back to history for the normal queue.
    async fn shutdown_sticky_queue(&self, namespace_id: &str, sticky_queue: &str) -> ApiResult<()>;

    /// Offers a task of a child partition to the pollers of the root partition `root` (sync
    /// match only), waiting at most `wait` for one. `Ok(false)`: nobody took it.
    async fn forward_task(
        &self,
        root: TaskQueueKey,
        task: TaskRef,
        wait: std::time::Duration,
    ) -> ApiResult<bool> {
        let _ = (root, task, wait);
        Err(unimplemented_matching("ForwardTask"))
    }
    /// A poll of a child partition that found nothing there waits on the root partition `root`
    /// too: the task or query handed over (not yet recorded as started), or `None` after `wait`.
    async fn forward_poll(
        &self,
        root: TaskQueueKey,
        identity: &str,
        wait: std::time::Duration,
    ) -> ApiResult<Option<ForwardedDispatch>> {
        let _ = (root, identity, wait);
        Err(unimplemented_matching("ForwardPoll"))
    }
    /// Changes whenever task-queue partitions move between matching nodes (a node left or
    /// joined): history hands over again every task not yet started.
    fn placement_generation(&self) -> u64 {
        0
    }
    /// Where `task` goes if handed over now: its partition's owner and that owner's current
    /// stay in the ring. A task handed over under another value must be handed over again (its
    /// partition moved, or its owner left and came back with empty queues).
    fn task_placement(&self, queue: &TaskQueueKey, task: &TaskRef) -> u64 {
        let _ = (queue, task);
        0
    }
    /// The partitions of a task queue and the node owning each (ListTaskQueuePartitions).
    fn list_partitions(
        &self,
        namespace_id: &str,
        name: &str,
        kind: TaskKind,
    ) -> Vec<PartitionOwner> {
        let _ = (namespace_id, kind);
        vec![PartitionOwner {
            key: name.to_string(),
            owner: String::new(),
        }]
    }
}

/// What a forwarded poll got from the root partition.
// Moved once through a oneshot or a reply; boxing the query would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum ForwardedDispatch {
    Task(TaskRef),
    Query(QueryTask),
}

/// One partition of a task queue and the matching node that owns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionOwner {
    /// The partition's name (`partition::partition_name`).
    pub key: String,
    /// The owning node's internal address ("" in a single-process server).
    pub owner: String,
}

fn unimplemented_matching(what: &str) -> chronicle_types::ApiError {
    chronicle_types::ApiError::new(
        tonic::Code::Unimplemented,
        format!("this matching service does not serve {what}"),
    )
}
