//! Unit tests of the matching ring: placement, failover, handing tasks over again.

use super::*;

fn addrs(n: usize) -> Vec<Arc<str>> {
    (1..=n)
        .map(|i| Arc::from(format!("127.0.0.{}:7234", 20 + i)))
        .collect()
}

fn owners(ring: &HashRing<VirtualNode>, queues: usize) -> Vec<usize> {
    (0..queues)
        .flat_map(|q| (0..4).map(move |partition| (format!("queue-{q}"), partition)))
        .map(|(queue, partition)| {
            let key = PartitionKey {
                namespace_id: "ns",
                queue: &queue,
                kind: 1,
                partition,
            };
            ring.get(&key).unwrap().node
        })
        .collect()
}

#[test]
fn partitions_spread_over_nodes_and_only_a_lost_nodes_move() {
    let nodes = addrs(3);
    let all = owners(&build_ring(&nodes, &[true, true, true]), 300);
    for node in 0..3 {
        let share = all.iter().filter(|&&n| n == node).count();
        assert!(share > 200, "node {node} owns {share} of 1200 partitions");
    }
    // Node 1 leaves: its partitions go to the others, no other partition moves.
    let without = owners(&build_ring(&nodes, &[true, false, true]), 300);
    for (before, after) in all.iter().zip(&without) {
        assert_ne!(*after, 1);
        if *before != 1 {
            assert_eq!(before, after);
        }
    }
    // It comes back: the placement is the first one again.
    assert_eq!(owners(&build_ring(&nodes, &[true, true, true]), 300), all);
}

#[test]
fn placement_does_not_depend_on_the_order_nodes_are_listed_in() {
    let nodes = addrs(3);
    let reversed: Vec<_> = nodes.iter().rev().cloned().collect();
    let a = build_ring(&nodes, &[true; 3]);
    let b = build_ring(&reversed, &[true; 3]);
    for q in 0..100 {
        let key = PartitionKey {
            namespace_id: "ns",
            queue: &format!("q{q}"),
            kind: 2,
            partition: 1,
        };
        assert_eq!(a.get(&key).unwrap().addr, b.get(&key).unwrap().addr);
    }
}

#[tokio::test]
async fn an_unreachable_node_leaves_the_ring_and_calls_go_to_the_others() {
    // Nothing listens on these ports (bound, then released).
    let free = || {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let ring = RingMatching::new(&[free(), free()], 4).unwrap();
    assert_eq!(ring.placement_generation(), 0);
    let owners = ring.list_partitions("ns", "q", TaskKind::Workflow);
    assert_eq!(owners.len(), 4);
    assert_eq!(owners[2].key, "/_sys/q/2");
    assert!(owners.iter().all(|o| !o.owner.is_empty()));
    // The first call finds its owner gone, probes it, and tries the other: both are gone.
    let err = ring
        .describe_task_queue("ns", "q", TaskKind::Workflow)
        .await
        .unwrap_err();
    assert_eq!(err.code, tonic::Code::Unavailable);
    assert!(ring.placement_generation() >= 2);
    assert!(
        ring.list_partitions("ns", "q", TaskKind::Workflow)
            .iter()
            .all(|o| o.owner.is_empty())
    );
}

#[tokio::test]
async fn only_tasks_whose_partition_moved_or_whose_node_came_back_are_handed_over_again() {
    // No prober: the test drives the live set itself.
    let ring =
        RingMatching::without_probes(&["127.0.0.21:7234".into(), "127.0.0.22:7234".into()], 4)
            .unwrap();
    let queue = TaskQueueKey {
        namespace_id: "ns".into(),
        name: "q".into(),
        kind: TaskKind::Activity,
    };
    let task = |id| TaskRef {
        namespace_id: "ns".into(),
        workflow_id: "wf".into(),
        run_id: "run".into(),
        scheduled_event_id: 5,
        attempt: 1,
        outbox_id: id,
        shard: 1,
        expires_at_ms: 0,
        sticky: false,
        worker_commands: false,
    };
    let placements = || -> Vec<u64> {
        (0..64)
            .map(|id| ring.task_placement(&queue, &task(id)))
            .collect()
    };
    let before = placements();
    let on_second = |p: u64| p & 0xffff == 2;
    assert!(before.iter().any(|p| on_second(*p)) && before.iter().any(|p| !on_second(*p)));

    ring.set_live(1, false);
    let without = placements();
    for (b, w) in before.iter().zip(&without) {
        // Tasks of the first node stay put; the second's moved.
        assert_eq!(on_second(*b), b != w);
        assert!(!on_second(*w));
    }

    ring.set_live(1, true);
    let back = placements();
    for (b, n) in before.iter().zip(&back) {
        // The second node is back with empty queues: its tasks are new placements.
        assert_eq!(on_second(*b), b != n);
        assert_eq!(on_second(*b), on_second(*n));
    }
    assert_eq!(ring.placement_generation(), 2);
}
