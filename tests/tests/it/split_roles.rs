//! The three roles as separate nodes talking over the internal gRPC API: one history node, one
//! matching node and two frontends, each with its own listeners on port 0. The client and the
//! worker use different frontends, so every call crosses at least two nodes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chronicle_cluster::MatchingService;
use chronicle_proto::temporal::api::enums::v1::EventType;
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use chronicle_server::{NodeConfig, NodeListeners, Roles, run_node};
use temporalio_client::{
    WorkflowGetResultOptions, WorkflowQueryOptions, WorkflowSignalOptions, WorkflowStartOptions,
};

use crate::common::*;
use crate::sdk_workflows::{OrderWorkflow, Steps, history_events};

/// A node serving in the background until stopped.
pub(crate) struct Node {
    pub(crate) frontend: Option<SocketAddr>,
    pub(crate) internal: Option<SocketAddr>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Node {
    pub(crate) async fn start(roles: &str, config: impl FnOnce(&mut NodeConfig)) -> Node {
        Self::start_on(roles, None, config).await
    }

    /// Starts a node; `internal` reuses a known internal address (a restarted node).
    pub(crate) async fn start_on(
        roles: &str,
        internal: Option<SocketAddr>,
        config: impl FnOnce(&mut NodeConfig),
    ) -> Node {
        let roles = Roles::parse(roles).expect("roles");
        let mut node = NodeConfig::new(roles, std::path::PathBuf::new());
        node.num_shards = Some(4);
        node.max_poll_wait = Duration::from_secs(5);
        config(&mut node);
        let frontend = if roles.frontend {
            Some(
                tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind"),
            )
        } else {
            None
        };
        let internal = if roles.history || roles.matching {
            let addr = internal.unwrap_or_else(|| "127.0.0.1:0".parse().unwrap());
            Some(tokio::net::TcpListener::bind(addr).await.expect("bind"))
        } else {
            None
        };
        let frontend_addr = frontend.as_ref().map(|l| l.local_addr().unwrap());
        let internal_addr = internal.as_ref().map(|l| l.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(run_node(
            NodeListeners {
                frontend,
                internal,
                metrics: None,
            },
            node,
            async move {
                let _ = stopped.await;
            },
        ));
        Node {
            frontend: frontend_addr,
            internal: internal_addr,
            stop: Some(stop),
            task,
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.frontend.expect("a frontend node"))
    }

    pub(crate) fn internal(&self) -> String {
        self.internal.expect("an internal listener").to_string()
    }

    /// Waits for the node to end on its own (a node that refuses to start).
    pub(crate) async fn exit(mut self) -> anyhow::Result<()> {
        // Held, not dropped: a dropped sender is the signal to stop.
        let _stop = self.stop.take();
        tokio::time::timeout(Duration::from_secs(30), &mut self.task)
            .await
            .expect("the node ended")
            .expect("node task")
    }

    pub(crate) async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task)
            .await
            .expect("node task")
            .expect("clean stop");
    }
}

/// A frontend answers once its history node does: waits for a namespace describe to succeed.
pub(crate) async fn wait_ready(url: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(channel) = tonic::transport::Endpoint::from_shared(url.to_string())
            .unwrap()
            .connect()
            .await
        {
            let mut client = chronicle_proto::temporal::api::workflowservice::v1::workflow_service_client::WorkflowServiceClient::new(channel);
            if client
                .describe_namespace(
                    chronicle_proto::temporal::api::workflowservice::v1::DescribeNamespaceRequest {
                        namespace: "default".into(),
                        ..Default::default()
                    },
                )
                .await
                .is_ok()
            {
                return;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{url} never became ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct SplitCluster {
    history: Node,
    matching: Node,
    frontends: Vec<Node>,
    _dir: tempfile::TempDir,
}

async fn start_split_cluster() -> SplitCluster {
    let dir = tempfile::tempdir().expect("temp dir");
    // Matching and history refer to each other: the matching node is started first, on a port
    // the history node is then told about, and it reaches history lazily once history is up.
    let matching_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let matching_addr = matching_listener.local_addr().unwrap();
    drop(matching_listener);
    let data_dir = dir.path().to_path_buf();
    let history = Node::start("history", |c| {
        c.data_dir = data_dir;
        c.matching_addr = Some(matching_addr.to_string());
    })
    .await;
    let history_addr = history.internal();
    let matching = Node::start_on("matching", Some(matching_addr), |c| {
        c.history_addr = Some(history_addr.clone());
    })
    .await;
    let mut frontends = Vec::new();
    for _ in 0..2 {
        let history_addr = history_addr.clone();
        let matching_addr = matching.internal();
        frontends.push(
            Node::start("frontend", |c| {
                c.history_addr = Some(history_addr);
                c.matching_addr = Some(matching_addr);
            })
            .await,
        );
    }
    for frontend in &frontends {
        wait_ready(&frontend.url()).await;
    }
    SplitCluster {
        history,
        matching,
        frontends,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflow_runs_across_separate_role_nodes() {
    let cluster = start_split_cluster().await;
    let worker_url = cluster.frontends[0].url();
    let client_url = cluster.frontends[1].url();
    let worker_client = sdk_client(&worker_url).await;
    let client = sdk_client(&client_url).await;
    let task_queue = unique("split");
    let workflow_id = unique("split-order");
    let runtime = runtime();
    let options = temporalio_sdk::WorkerOptions::new(&task_queue)
        .deployment_options(deployment())
        .register_activities(Steps {
            flaky_calls: Arc::default(),
        })
        .register_workflow::<OrderWorkflow>()
        .expect("register")
        .build();
    let mut worker = new_worker(&runtime, worker_client, options);
    let stop = worker.shutdown_handle();
    let (run, outcome) = tokio::join!(worker.run(), async {
        let handle = client
            .start_workflow(
                OrderWorkflow::run,
                1,
                WorkflowStartOptions::new(task_queue.clone(), workflow_id.clone()).build(),
            )
            .await
            .expect("start through the second frontend");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let before = handle
            .query(
                OrderWorkflow::is_approved,
                (),
                WorkflowQueryOptions::default(),
            )
            .await
            .expect("query through matching to the worker");
        handle
            .signal(
                OrderWorkflow::approve,
                "bob".to_string(),
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
    assert!(!before);
    assert_eq!(
        result.expect("result"),
        4,
        "three activities added one each"
    );

    // The history as the worker's frontend reads it (a different node from the client's).
    let events = history_events(&worker_url, &workflow_id).await;
    let types: Vec<EventType> = events
        .iter()
        .map(|e| EventType::try_from(e.event_type).unwrap())
        .collect();
    assert_eq!(types.last(), Some(&EventType::WorkflowExecutionCompleted));
    assert_eq!(
        types
            .iter()
            .filter(|t| **t == EventType::ActivityTaskCompleted)
            .count(),
        3
    );

    for frontend in cluster.frontends {
        frontend.stop().await;
    }
    cluster.matching.stop().await;
    cluster.history.stop().await;
}

/// A restarted matching node has lost its queues; history's outbox hands the waiting task to it
/// again, so a workflow started while matching was down still runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_matching_node_gets_pending_tasks_again() {
    let cluster = start_split_cluster().await;
    let url = cluster.frontends[0].url();
    let matching_addr: SocketAddr = cluster.matching.internal().parse().unwrap();
    let history_addr = cluster.history.internal();
    cluster.matching.stop().await;

    // Start while matching is down: history accepts (the task waits in its outbox).
    let mut raw = raw_client(&url).await;
    let workflow_id = unique("while-matching-down");
    let task_queue = unique("split-restart");
    let started = raw
        .start_workflow_execution(start_request(&workflow_id, "Waiting", &task_queue))
        .await
        .expect("start while matching is down")
        .into_inner();

    let matching = Node::start_on("matching", Some(matching_addr), |c| {
        c.history_addr = Some(history_addr);
    })
    .await;
    // A poll through the frontend now reaches the restarted node and gets the task that was
    // added before it existed (re-sent by history's outbox sweep).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let task = loop {
        let task = raw
            .poll_workflow_task_queue(poll(&task_queue))
            .await
            .expect("poll")
            .into_inner();
        if !task.task_token.is_empty() {
            break task;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the task never reached the restarted matching node"
        );
    };
    assert_eq!(
        task.workflow_execution.as_ref().map(|e| e.run_id.as_str()),
        Some(started.run_id.as_str())
    );

    for frontend in cluster.frontends {
        frontend.stop().await;
    }
    matching.stop().await;
    cluster.history.stop().await;
}

/// Binds a free port on loopback and releases it: an address for a node started later.
fn reserved_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().unwrap()
}

/// A history node that knows only one of the two matching nodes sends every task there, also
/// those whose partition the other node owns; pollers ask the owner. The matching node passes
/// such a task on to the owner, so the workflow runs: without that, the task waited forever on
/// a node no poller asked (a history node added with a shorter `--matching-addr` list).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_sent_to_a_matching_node_that_does_not_own_its_partition_reaches_the_owner() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (first, second) = (reserved_addr(), reserved_addr());
    let ring_list = format!("{first},{second}");
    let data_dir = dir.path().to_path_buf();
    // One partition per queue: the queue's one partition has one owner, the second node below.
    let history = Node::start("history", |c| {
        c.data_dir = data_dir;
        c.matching_addr = Some(first.to_string());
        c.task_queue_partitions = Some(1);
    })
    .await;
    let history_addr = history.internal();
    let mut matching = Vec::new();
    for addr in [first, second] {
        let (history_addr, ring_list) = (history_addr.clone(), ring_list.clone());
        matching.push(
            Node::start_on("matching", Some(addr), |c| {
                c.history_addr = Some(history_addr);
                c.matching_addr = Some(ring_list);
                c.task_queue_partitions = Some(1);
            })
            .await,
        );
    }
    let frontend = Node::start("frontend", |c| {
        c.history_addr = Some(history_addr.clone());
        c.matching_addr = Some(ring_list.clone());
        c.task_queue_partitions = Some(1);
    })
    .await;
    let url = frontend.url();
    wait_ready(&url).await;

    let mut raw = raw_client(&url).await;
    let namespace_id = raw
        .describe_namespace(ws::DescribeNamespaceRequest {
            namespace: "default".into(),
            ..Default::default()
        })
        .await
        .expect("describe namespace")
        .into_inner()
        .namespace_info
        .expect("namespace info")
        .id;
    // A queue whose partition the second node owns, as every node with the full list sees it.
    let placement =
        chronicle_cluster::grpc::RingMatching::new(&[first.to_string(), second.to_string()], 1)
            .expect("ring");
    let task_queue = (0..)
        .map(|_| unique("owned-by-second"))
        .find(|q| {
            placement.list_partitions(&namespace_id, q, chronicle_cluster::TaskKind::Workflow)[0]
                .owner
                == second.to_string()
        })
        .expect("a queue placed on the second node");

    let workflow_id = unique("relayed");
    let started = raw
        .start_workflow_execution(start_request(&workflow_id, "Relayed", &task_queue))
        .await
        .expect("start")
        .into_inner();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let task = loop {
        let task = raw
            .poll_workflow_task_queue(poll(&task_queue))
            .await
            .expect("poll")
            .into_inner();
        if !task.task_token.is_empty() {
            break task;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the task stayed on the matching node that does not own its partition"
        );
    };
    assert_eq!(
        task.workflow_execution.as_ref().map(|e| e.run_id.as_str()),
        Some(started.run_id.as_str())
    );

    frontend.stop().await;
    for node in matching {
        node.stop().await;
    }
    history.stop().await;
}
