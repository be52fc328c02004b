//! Three replicated nodes that each run every role (`chronicle server start`'s default roles):
//! a frontend or matching role reaches the history groups its own node leads, and a history or
//! frontend role the task-queue partitions its own node owns, in process; everything else goes
//! over the internal API. Real nodes in this process on 127.0.0.1, real RocksDB, Raft over gRPC.

use temporalio_client::{
    WorkflowGetResultOptions, WorkflowQueryOptions, WorkflowSignalOptions, WorkflowStartOptions,
};

use crate::common::*;
use crate::replicated_history::{fan_out_over_every_shard, order_and_fan_out_worker};
use crate::sdk_workflows::OrderWorkflow;
use crate::split_roles::{Node, wait_ready};

const SHARDS: u32 = 4;

/// The sum of `name`'s samples whose labels include `with`.
fn total(scrape: &crate::metrics::Scrape, name: &str, with: &[(&str, &str)]) -> f64 {
    scrape.find(name, with).iter().map(|s| s.value).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_with_every_role_serve_their_own_groups_and_partitions_in_process() {
    // Every node of this test records into the process's one recorder.
    let metrics = chronicle_server::observability::prometheus().expect("recorder");
    // Each node lists every matching node, itself included, so the addresses come first.
    let internals: Vec<std::net::SocketAddr> = (0..3)
        .map(|_| {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.local_addr().unwrap()
        })
        .collect();
    let matching_addr = internals
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes = Vec::new();
    for (dir, internal) in dirs.iter().zip(&internals) {
        let data_dir = dir.path().to_path_buf();
        let matching_addr = matching_addr.clone();
        nodes.push(
            Node::start_on("history,matching,frontend", Some(*internal), |c| {
                c.data_dir = data_dir;
                c.num_shards = Some(SHARDS);
                c.replicated = true;
                c.matching_addr = Some(matching_addr);
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
    let before = crate::metrics::parse(&metrics.render());

    // The client on one node, the worker on another; children on every shard, so their starts
    // and results are transfers between leaders on different nodes and on the same one.
    let client = sdk_client(&nodes[0].url()).await;
    let worker_client = sdk_client(&nodes[1].url()).await;
    let router = chronicle_cluster::grpc::RoutedHistory::new(addrs.clone());
    let namespace_id = chronicle_cluster::HistoryService::namespace_by_name(&router, "default")
        .await
        .expect("default namespace")
        .info
        .expect("info")
        .id;
    let task_queue = unique("colocated");
    let runtime = runtime();
    let options = order_and_fan_out_worker(&task_queue);
    let mut worker = new_worker(&runtime, worker_client, options);
    let stop_worker = worker.shutdown_handle();
    let (run, ()) = tokio::join!(worker.run(), async {
        let order = client
            .start_workflow(
                OrderWorkflow::run,
                1,
                WorkflowStartOptions::new(task_queue.clone(), unique("colocated-order")).build(),
            )
            .await
            .expect("start");
        // Queried until the worker has run its first task (a query needs a worker's answer).
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            match order
                .query(
                    OrderWorkflow::is_approved,
                    (),
                    WorkflowQueryOptions::default(),
                )
                .await
            {
                Ok(approved) => {
                    assert!(!approved);
                    break;
                }
                Err(e) => assert!(
                    tokio::time::Instant::now() < deadline,
                    "query never answered: {e:?}"
                ),
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        order
            .signal(
                OrderWorkflow::approve,
                "dana".to_string(),
                WorkflowSignalOptions::default(),
            )
            .await
            .expect("signal");
        assert_eq!(
            order
                .get_result(WorkflowGetResultOptions::default())
                .await
                .expect("order result"),
            4
        );
        fan_out_over_every_shard(&client, &task_queue, &namespace_id, SHARDS).await;
        stop_worker();
    });
    run.expect("worker");

    let after = crate::metrics::parse(&metrics.render());
    let delta =
        |name: &str, with: &[(&str, &str)]| total(&after, name, with) - total(&before, name, with);
    for role in ["history", "matching"] {
        let in_process = delta(
            "chronicle_client_in_process_requests",
            &[("service_role", role)],
        );
        let all = delta("client_requests", &[("service_role", role)]);
        assert!(
            in_process > 0.0,
            "calls to {role} that the node's own role serves stay in process ({all} calls in all)"
        );
        assert!(
            in_process < all,
            "calls to {role} owned by other nodes cross the network: {in_process} of {all} in process"
        );
    }
    for node in nodes {
        node.stop().await;
    }
}
