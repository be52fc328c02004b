//! Task-queue partitions. A normal task queue is split into partitions, each placed on a
//! matching node by the ring (`grpc::RingMatching`). Partition 0 (the root) is named like the
//! queue; partition `n > 0` is named `/_sys/<queue>/<n>`, the way Temporal names them, so a
//! partition is an ordinary queue to the matching engine. Sticky queues have one partition.

/// Prefix of the names of non-root partitions (task queue names must not start with it).
pub const RESERVED_PREFIX: &str = "/_sys/";

/// Partitions of a normal task queue in a cluster, unless configured otherwise.
pub const DEFAULT_PARTITIONS: u32 = 4;

/// The name of partition `partition` of task queue `root`.
pub fn partition_name(root: &str, partition: u32) -> String {
    if partition == 0 {
        root.to_string()
    } else {
        format!("{RESERVED_PREFIX}{root}/{partition}")
    }
}

/// The queue name and partition number a (partition) name stands for: `/_sys/q/3` is partition 3
/// of `q`; anything else is the root partition of itself.
pub fn parse_partition(name: &str) -> (&str, u32) {
    let Some(rest) = name.strip_prefix(RESERVED_PREFIX) else {
        return (name, 0);
    };
    match rest.rsplit_once('/') {
        Some((root, n)) if !root.is_empty() => match n.parse::<u32>() {
            Ok(partition) if partition > 0 && n == partition.to_string() => (root, partition),
            _ => (name, 0),
        },
        _ => (name, 0),
    }
}

/// Which partition a task goes to: fixed per task (shard and outbox row), so a task history hands
/// over again lands on the same partition and is recognised there as already queued.
pub fn partition_of_task(shard: u32, outbox_id: u64, partitions: u32) -> u32 {
    if partitions <= 1 {
        return 0;
    }
    // SplitMix64 finaliser: consecutive outbox rows spread evenly.
    let mut x = outbox_id ^ (u64::from(shard) << 40);
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    (x % u64::from(partitions)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(partition_name("orders", 0), "orders");
        assert_eq!(partition_name("orders", 3), "/_sys/orders/3");
        assert_eq!(parse_partition("/_sys/orders/3"), ("orders", 3));
        assert_eq!(parse_partition("/_sys/a/b/12"), ("a/b", 12));
        assert_eq!(parse_partition("orders"), ("orders", 0));
        // Not a partition name: taken as a queue of its own.
        for name in [
            "/_sys/orders/0",
            "/_sys/orders/x",
            "/_sys//2",
            "/_sys/orders/03",
        ] {
            assert_eq!(parse_partition(name), (name, 0), "{name}");
        }
    }

    #[test]
    fn tasks_spread_over_partitions_and_stay_put() {
        let mut counts = [0u32; 4];
        for id in 0..4000 {
            let p = partition_of_task(1, id, 4);
            assert_eq!(p, partition_of_task(1, id, 4));
            counts[p as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
        assert_eq!(partition_of_task(7, 99, 1), 0);
    }
}
