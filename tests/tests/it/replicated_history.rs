//! History replicated on three nodes: every shard group and the metadata group has the three
//! history nodes as voters (founded once with `cluster init`), frontends and matching route each
//! call to the group's leader. Real nodes in this process on 127.0.0.1 port 0, real RocksDB,
//! Raft over the gRPC transport. Conditions are polled with deadlines.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chronicle_cluster::HistoryService;
use chronicle_cluster::grpc::{RemoteHistory, RoutedHistory, lazy_channel};
use chronicle_proto::chronicle::admin::v1 as apb;
use chronicle_proto::temporal::api::enums::v1::{EventType, WorkflowExecutionStatus};
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use chronicle_storage::{Cf, Db, DbOptions};
use chronicle_types::shard::{METADATA_GROUP, shard_for};
use temporalio_client::{
    WorkflowGetResultOptions, WorkflowQueryOptions, WorkflowSignalOptions, WorkflowStartOptions,
};

use crate::child_workflows::{Doubler, FanOutParent};
use crate::common::*;
use crate::sdk_workflows::{OrderWorkflow, Steps};
use crate::split_roles::{Node, wait_ready};

const SHARDS: u32 = 4;
const DEADLINE: Duration = Duration::from_secs(30);

/// The third node asks for a namespace of its own; it is not the metadata group's leader.
const EXTRA_NAMESPACE: &str = "asked-for-by-node-3";

pub(crate) async fn start_history(
    dir: &Path,
    matching: SocketAddr,
    internal: Option<SocketAddr>,
    namespaces: Vec<String>,
) -> Node {
    let data_dir = dir.to_path_buf();
    Node::start_on("history", internal, |c| {
        c.data_dir = data_dir;
        c.namespaces = namespaces;
        c.num_shards = Some(SHARDS);
        c.replicated = true;
        c.matching_addr = Some(matching.to_string());
    })
    .await
}

/// A worker for `OrderWorkflow` (with its activities) and the fan-out parent and its children.
pub(crate) fn order_and_fan_out_worker(task_queue: &str) -> temporalio_sdk::WorkerOptions {
    temporalio_sdk::WorkerOptions::new(task_queue)
        .deployment_options(deployment())
        .register_activities(Steps {
            flaky_calls: Arc::default(),
        })
        .register_workflow::<OrderWorkflow>()
        .expect("register")
        .register_workflow::<FanOutParent>()
        .expect("register")
        .register_workflow::<Doubler>()
        .expect("register")
        .build()
}

/// Runs a `FanOutParent` whose children land one on each of the `shards` shards and checks that
/// every child's result reached it. With the shards' leaders spread over the nodes, the children's
/// starts and results are transfer commands between leaders.
pub(crate) async fn fan_out_over_every_shard(
    client: &temporalio_client::Client,
    task_queue: &str,
    namespace_id: &str,
    shards: u32,
) {
    let children: Vec<String> = (0..shards)
        .map(|s| {
            loop {
                let id = unique("fan-out-child");
                if shard_for(namespace_id, &id, shards) == s {
                    break id;
                }
            }
        })
        .collect();
    let parent = client
        .start_workflow(
            FanOutParent::run,
            children,
            WorkflowStartOptions::new(task_queue, unique("fan-out-parent")).build(),
        )
        .await
        .expect("start the parent");
    let expected: i64 = (1..=i64::from(shards)).sum::<i64>() * 2;
    assert_eq!(
        parent
            .get_result(WorkflowGetResultOptions::default())
            .await
            .expect("parent result"),
        expected,
        "every child's result reached the parent"
    );
}

/// A digest of a group's replicated state on one replica: every state family's key range except
/// `shard_meta` (the applied log position and membership, which trail by one heartbeat on a
/// follower and are Raft's business, not the workflows').
fn digest(db: &Db, group: u32) -> u64 {
    use std::hash::{Hash, Hasher};
    let prefix = chronicle_storage::keys::shard_prefix(group);
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    let mut rows = 0u64;
    for cf in Cf::STATE.iter().filter(|cf| **cf != Cf::ShardMeta) {
        let mut iter = db.rocks().raw_iterator_cf(db.cf(*cf));
        iter.seek(&prefix);
        while let (Some(k), Some(v)) = (iter.key(), iter.value()) {
            if !k.starts_with(&prefix) {
                break;
            }
            cf.name().hash(&mut hasher);
            k.hash(&mut hasher);
            v.hash(&mut hasher);
            rows += 1;
            iter.next();
        }
    }
    rows.hash(&mut hasher);
    hasher.finish()
}

/// Whether the node at `addr` has both workflows completed in its own replicas (a node lists
/// from its local replicas, leader or not).
async fn completed_locally(addr: &str, namespace_id: &str, workflow_ids: &[&str]) -> bool {
    let node = RemoteHistory::new(lazy_channel(addr).expect("channel"));
    let request = chronicle_proto::chronicle::history::v1::ListWorkflowsRequest {
        namespace_id: namespace_id.into(),
        page_size: 1000,
        ..Default::default()
    };
    let Ok(listed) = node.list_workflows(request).await.map(|r| r.executions) else {
        return false;
    };
    workflow_ids.iter().all(|id| {
        listed.iter().any(|d| {
            d.workflow_execution_info.as_ref().is_some_and(|i| {
                i.execution.as_ref().is_some_and(|e| e.workflow_id == *id)
                    && i.status == WorkflowExecutionStatus::Completed as i32
            })
        })
    })
}

fn describe(workflow_id: &str) -> ws::DescribeWorkflowExecutionRequest {
    ws::DescribeWorkflowExecutionRequest {
        namespace: "default".into(),
        execution: Some(
            chronicle_proto::temporal::api::common::v1::WorkflowExecution {
                workflow_id: workflow_id.into(),
                run_id: String::new(),
            },
        ),
    }
}

/// Waits until the workflow is blocked on its approval (activities and the 1 s timer done, the
/// workflow task after the timer completed), as the shard's leader reads it.
async fn wait_blocked(router: &RoutedHistory, namespace_id: &str, workflow_id: &str) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let history = router
            .get_history(
                namespace_id,
                ws::GetWorkflowExecutionHistoryRequest {
                    namespace: "default".into(),
                    execution: Some(
                        chronicle_proto::temporal::api::common::v1::WorkflowExecution {
                            workflow_id: workflow_id.into(),
                            run_id: String::new(),
                        },
                    ),
                    ..Default::default()
                },
            )
            .await;
        let events = history
            .ok()
            .and_then(|h| h.history)
            .map(|h| h.events)
            .unwrap_or_default();
        let types: Vec<i32> = events.iter().map(|e| e.event_type).collect();
        if types.contains(&(EventType::TimerFired as i32))
            && types.last() == Some(&(EventType::WorkflowTaskCompleted as i32))
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{workflow_id} never blocked on its approval"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicated_history_survives_losing_the_shard_leader() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let matching_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let matching_addr = matching_listener.local_addr().unwrap();
    drop(matching_listener);
    let mut histories = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let namespaces = if i == 2 {
            vec![EXTRA_NAMESPACE.to_string()]
        } else {
            Vec::new()
        };
        histories.push(Some(
            start_history(dir.path(), matching_addr, None, namespaces).await,
        ));
    }
    let addrs: Vec<String> = histories
        .iter()
        .map(|h| h.as_ref().unwrap().internal())
        .collect();

    // Founded once: every node answers who it is, the first initialises every group.
    let (cluster_id, members) = chronicle_server::admin::init_cluster(&addrs, SHARDS)
        .await
        .expect("cluster init");
    assert_eq!(members.len(), 3);
    assert!(
        uuid::Uuid::parse_str(&cluster_id).is_ok(),
        "init mints a random cluster ID: {cluster_id}"
    );
    let again = chronicle_server::admin::init_cluster(&addrs, SHARDS).await;
    assert!(
        again.is_err_and(|e| e.to_string().contains("already belongs")),
        "a second init is refused"
    );
    let mut admin =
        apb::admin_api_client::AdminApiClient::new(lazy_channel(&addrs[1]).expect("channel"));
    let wrong_count = admin
        .initialize_cluster(apb::InitializeClusterRequest {
            num_shards: SHARDS + 1,
            members: members.clone(),
            groups: Vec::new(),
            cluster_id: cluster_id.clone(),
        })
        .await
        .expect_err("another shard count is refused");
    assert_eq!(wrong_count.code(), tonic::Code::FailedPrecondition);
    let twice = admin
        .initialize_cluster(apb::InitializeClusterRequest {
            num_shards: SHARDS,
            members: members.clone(),
            groups: Vec::new(),
            cluster_id: cluster_id.clone(),
        })
        .await
        .expect_err("a node of a founded cluster refuses to initialise");
    assert_eq!(twice.code(), tonic::Code::AlreadyExists);
    // Every node stored the cluster's ID; one of them refuses to join another cluster.
    for addr in &addrs {
        let info = apb::admin_api_client::AdminApiClient::new(lazy_channel(addr).unwrap())
            .describe_node(apb::DescribeNodeRequest::default())
            .await
            .expect("describe")
            .into_inner();
        assert_eq!(info.cluster_id, cluster_id, "{addr}");
    }
    let other = admin
        .join_cluster(apb::JoinClusterRequest {
            cluster_id: uuid::Uuid::new_v4().to_string(),
        })
        .await
        .expect_err("a member of one cluster refuses to join another");
    assert_eq!(other.code(), tonic::Code::FailedPrecondition);
    assert!(other.message().contains(&cluster_id), "{}", other.message());
    admin
        .join_cluster(apb::JoinClusterRequest {
            cluster_id: cluster_id.clone(),
        })
        .await
        .expect("joining its own cluster again is harmless");

    let history_addr = addrs.join(",");
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

    let router = RoutedHistory::new(addrs.clone());
    let namespace_id = router
        .namespace_by_name("default")
        .await
        .expect("the metadata leader created the default namespace")
        .info
        .expect("namespace info")
        .id;
    // A node that does not lead the metadata group creates the namespaces it was asked for
    // through the leader.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while router.namespace_by_name(EXTRA_NAMESPACE).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{EXTRA_NAMESPACE} was never created"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A transfer command (history to history, across shards) reaches the target shard's leader
    // through the router; sent directly, only the leader takes it, the others refuse it before
    // it reaches the log. (Deleting an outbox row that does not exist changes nothing.)
    let transfer = chronicle_proto::chronicle::history::v1::ShardCommand {
        kind: Some(
            chronicle_proto::chronicle::history::v1::shard_command::Kind::CompleteTransferTask(
                chronicle_proto::chronicle::history::v1::CompleteTransferTask {
                    outbox_id: i64::MAX,
                },
            ),
        ),
        ..Default::default()
    };
    router
        .propose_transfer(0, transfer.clone())
        .await
        .expect("routed to shard 0's leader");
    let mut taken = 0;
    for addr in &addrs {
        let node = RemoteHistory::new(lazy_channel(addr).expect("channel"));
        match node.propose_transfer(0, transfer.clone()).await {
            Ok(_) => taken += 1,
            Err(e) => assert!(
                e.not_leader_detail()
                    .is_some_and(|h| !h.proposed && h.group == 0),
                "{addr}: {e:?}"
            ),
        }
    }
    assert_eq!(taken, 1, "exactly the leader takes the command");
    // Each shard's leader is the node that initialised it: init spreads them over the nodes.
    for s in 0..SHARDS {
        router
            .propose_transfer(s, transfer.clone())
            .await
            .expect("routed");
    }
    let leaders: std::collections::BTreeSet<String> = (0..SHARDS)
        .filter_map(|s| router.cached_leader(s))
        .collect();
    assert_eq!(leaders.len(), 3, "leadership starts spread: {leaders:?}");

    let worker_url = frontends[0].url();
    let client_url = frontends[1].url();
    let worker_client = sdk_client(&worker_url).await;
    let client = sdk_client(&client_url).await;
    let task_queue = unique("replicated");
    let first_id = unique("replicated-first");
    let shard = shard_for(&namespace_id, &first_id, SHARDS);
    // The other workflows land on the same shard, so they live through its failover.
    let same_shard = |prefix: &str| loop {
        let id = unique(prefix);
        if shard_for(&namespace_id, &id, SHARDS) == shard {
            break id;
        }
    };
    let in_flight_id = same_shard("replicated-in-flight");
    let after_id = same_shard("replicated-after");
    let runtime = runtime();
    let options = order_and_fan_out_worker(&task_queue);
    let mut worker = new_worker(&runtime, worker_client, options);
    let stop_worker = worker.shutdown_handle();
    let mut stopped_leader = None;
    let (run, ()) = tokio::join!(worker.run(), async {
        let start = |id: String| {
            let client = client.clone();
            let task_queue = task_queue.clone();
            async move {
                client
                    .start_workflow(
                        OrderWorkflow::run,
                        1,
                        WorkflowStartOptions::new(task_queue, id).build(),
                    )
                    .await
                    .expect("start")
            }
        };
        // 1. A workflow with activities, a timer, a query and a signal.
        let first = start(first_id.clone()).await;
        wait_blocked(&router, &namespace_id, &first_id).await;
        let approved = first
            .query(
                OrderWorkflow::is_approved,
                (),
                WorkflowQueryOptions::default(),
            )
            .await
            .expect("query");
        assert!(!approved);
        first
            .signal(
                OrderWorkflow::approve,
                "carol".to_string(),
                WorkflowSignalOptions::default(),
            )
            .await
            .expect("signal");
        assert_eq!(
            first
                .get_result(WorkflowGetResultOptions::default())
                .await
                .expect("first result"),
            4
        );

        // Children on every shard: `cluster init` spread the shards' leaders over the three
        // nodes, so starting them and reporting their results back are transfer commands
        // proposed at another node's leader (HistoryApi.ProposeTransfer).
        fan_out_over_every_shard(&client, &task_queue, &namespace_id, SHARDS).await;

        // 2. A second one waits for its approval while its shard's leader goes away.
        let in_flight = start(in_flight_id.clone()).await;
        wait_blocked(&router, &namespace_id, &in_flight_id).await;
        let leader = router
            .cached_leader(shard)
            .expect("the shard's leader is known");
        let index = addrs.iter().position(|a| *a == leader).expect("a member");
        // A follower refuses a shard-keyed call with NotLeader naming the leader's address.
        let follower = addrs.iter().find(|a| **a != leader).unwrap();
        let refused = RemoteHistory::new(lazy_channel(follower).expect("channel"))
            .describe_workflow(&namespace_id, describe(&in_flight_id))
            .await
            .expect_err("a follower does not serve the shard");
        assert_eq!(refused.code, tonic::Code::Unavailable);
        let hint = refused.not_leader_detail().expect("a NotLeader detail");
        assert_eq!(
            (hint.group, hint.leader_addr.as_str()),
            (shard, leader.as_str())
        );
        assert!(!hint.proposed);
        histories[index].take().unwrap().stop().await;
        stopped_leader = Some(index);

        // 3. A new leader takes over: the waiting workflow completes, and a new one runs.
        in_flight
            .signal(
                OrderWorkflow::approve,
                "carol".to_string(),
                WorkflowSignalOptions::default(),
            )
            .await
            .expect("signal after failover");
        assert_eq!(
            in_flight
                .get_result(WorkflowGetResultOptions::default())
                .await
                .expect("in-flight result"),
            4
        );
        let after = start(after_id.clone()).await;
        wait_blocked(&router, &namespace_id, &after_id).await;
        after
            .signal(
                OrderWorkflow::approve,
                "carol".to_string(),
                WorkflowSignalOptions::default(),
            )
            .await
            .expect("signal");
        assert_eq!(
            after
                .get_result(WorkflowGetResultOptions::default())
                .await
                .expect("result after failover"),
            4
        );
        let new_leader = router.cached_leader(shard).expect("a new leader");
        assert_ne!(new_leader, leader, "another node leads the shard now");
        stop_worker();
    });
    run.expect("worker ran");

    // The stopped node comes back, catches up, and every replica ends with the same state.
    let index = stopped_leader.expect("a leader was stopped");
    let addr: SocketAddr = addrs[index].parse().unwrap();
    histories[index] =
        Some(start_history(dirs[index].path(), matching_addr, Some(addr), Vec::new()).await);
    let ids = [first_id.as_str(), in_flight_id.as_str(), after_id.as_str()];
    let deadline = tokio::time::Instant::now() + DEADLINE;
    for addr in &addrs {
        while !completed_locally(addr, &namespace_id, &ids).await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{addr} never applied the workflows"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for frontend in frontends {
        frontend.stop().await;
    }
    matching.stop().await;
    for node in histories.into_iter().flatten() {
        node.stop().await;
    }
    let groups: Vec<u32> = (0..SHARDS).chain([METADATA_GROUP]).collect();
    let mut digests = Vec::new();
    for dir in &dirs {
        let db = Db::open(dir.path(), DbOptions::default()).expect("reopen");
        digests.push(groups.iter().map(|g| digest(&db, *g)).collect::<Vec<_>>());
    }
    assert_eq!(digests[0], digests[1], "replicas 1 and 2 differ");
    assert_eq!(digests[0], digests[2], "replicas 1 and 3 differ");
}

/// A start-dev-style directory (this node the only voter, ID 1) cannot be started as a cluster
/// node, whose ID is the directory's random one: it would never be elected and serve nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_voter_directory_refuses_to_start_replicated() {
    let dir = tempfile::tempdir().unwrap();
    let matching: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let data_dir = dir.path().to_path_buf();
    let single = Node::start("history", |c| {
        c.data_dir = data_dir;
        c.matching_addr = Some(matching.to_string());
    })
    .await;
    // Serving means its groups were founded with it as their only voter.
    let addr = single.internal();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while RemoteHistory::new(lazy_channel(&addr).unwrap())
        .describe_node()
        .await
        .is_err()
    {
        assert!(tokio::time::Instant::now() < deadline, "never served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    single.stop().await;
    let refused = start_history(dir.path(), matching, None, Vec::new())
        .await
        .exit()
        .await
        .expect_err("refused");
    assert!(
        format!("{refused:#}").contains("cannot join a cluster"),
        "{refused:#}"
    );
}

/// A frontend in the same process as a replicated history node routes to each shard's leader
/// like a remote one: every node starts and describes workflows of every shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frontends_beside_replicated_history_nodes_reach_every_leader() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let matching_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let matching_addr = matching_listener.local_addr().unwrap();
    drop(matching_listener);
    let mut nodes = Vec::new();
    for dir in &dirs {
        let data_dir = dir.path().to_path_buf();
        nodes.push(
            Node::start("history,frontend", |c| {
                c.data_dir = data_dir;
                c.num_shards = Some(SHARDS);
                c.replicated = true;
                c.matching_addr = Some(matching_addr.to_string());
            })
            .await,
        );
    }
    let addrs: Vec<String> = nodes.iter().map(Node::internal).collect();
    chronicle_server::admin::init_cluster(&addrs, SHARDS)
        .await
        .expect("cluster init");
    for node in &nodes {
        wait_ready(&node.url()).await;
    }
    let router = RoutedHistory::new(addrs.clone());
    let namespace_id = router
        .namespace_by_name("default")
        .await
        .expect("default namespace")
        .info
        .expect("info")
        .id;
    // One workflow per shard, started through node i % 3 and described through the next.
    for shard in 0..SHARDS {
        let workflow_id = loop {
            let id = unique("beside");
            if shard_for(&namespace_id, &id, SHARDS) == shard {
                break id;
            }
        };
        let starter = &nodes[shard as usize % 3];
        let reader = &nodes[(shard as usize + 1) % 3];
        let started = raw_client(&starter.url())
            .await
            .start_workflow_execution(start_request(&workflow_id, "Beside", "beside-queue"))
            .await
            .expect("start through any node")
            .into_inner();
        let described = raw_client(&reader.url())
            .await
            .describe_workflow_execution(ws::DescribeWorkflowExecutionRequest {
                namespace: "default".into(),
                execution: execution(&workflow_id, ""),
            })
            .await
            .expect("describe through another node")
            .into_inner();
        assert_eq!(
            described
                .workflow_execution_info
                .and_then(|i| i.execution)
                .map(|e| e.run_id),
            Some(started.run_id)
        );
    }
    for node in nodes {
        node.stop().await;
    }
}
