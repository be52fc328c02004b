//! Key encodings. Every key starts with the shard (big-endian u32) so a shard is one contiguous
//! range in each column family; numbers are big-endian so they sort; strings are length-prefixed
//! (u16) so that no string can be a prefix of another's encoding.

pub type ShardId = u32;

#[derive(Default)]
pub struct KeyBuf(Vec<u8>);

impl KeyBuf {
    pub fn shard(shard: ShardId) -> Self {
        let mut v = Vec::with_capacity(64);
        v.extend_from_slice(&shard.to_be_bytes());
        Self(v)
    }
    pub fn str(mut self, s: &str) -> Self {
        let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
        self.0.extend_from_slice(&len.to_be_bytes());
        self.0.extend_from_slice(&s.as_bytes()[..usize::from(len)]);
        self
    }
    pub fn u64(mut self, n: u64) -> Self {
        self.0.extend_from_slice(&n.to_be_bytes());
        self
    }
    pub fn i64(self, n: i64) -> Self {
        // Offset so that negative numbers sort before positive ones.
        self.u64((n as u64) ^ (1 << 63))
    }
    pub fn u8(mut self, n: u8) -> Self {
        self.0.push(n);
        self
    }
    pub fn build(self) -> Vec<u8> {
        self.0
    }
}

/// `raft_log`: shard, log index.
pub fn raft_log(shard: ShardId, index: u64) -> Vec<u8> {
    KeyBuf::shard(shard).u64(index).build()
}

pub fn raft_log_index(key: &[u8]) -> u64 {
    u64::from_be_bytes(key[4..12].try_into().unwrap_or([0; 8]))
}

/// `raft_meta`: shard, kind.
pub fn raft_meta(shard: ShardId, kind: u8) -> Vec<u8> {
    KeyBuf::shard(shard).u8(kind).build()
}

/// `shard_meta`: shard, kind.
pub fn shard_meta(shard: ShardId, kind: u8) -> Vec<u8> {
    KeyBuf::shard(shard).u8(kind).build()
}

/// `executions`: shard, namespace, workflow ID, run ID.
pub fn execution(shard: ShardId, namespace_id: &str, workflow_id: &str, run_id: &str) -> Vec<u8> {
    KeyBuf::shard(shard)
        .str(namespace_id)
        .str(workflow_id)
        .str(run_id)
        .build()
}

/// The `executions` rows of one namespace in a shard, or of one workflow ID's runs.
pub fn executions_prefix(shard: ShardId, namespace_id: &str, workflow_id: Option<&str>) -> Vec<u8> {
    let key = KeyBuf::shard(shard).str(namespace_id);
    match workflow_id {
        Some(id) => key.str(id).build(),
        None => key.build(),
    }
}

/// `current`: shard, namespace, workflow ID.
pub fn current(shard: ShardId, namespace_id: &str, workflow_id: &str) -> Vec<u8> {
    KeyBuf::shard(shard)
        .str(namespace_id)
        .str(workflow_id)
        .build()
}

/// `history`: shard, namespace, workflow ID, run ID, first event ID of the batch.
pub fn history(
    shard: ShardId,
    namespace_id: &str,
    workflow_id: &str,
    run_id: &str,
    first_event_id: i64,
) -> Vec<u8> {
    KeyBuf::shard(shard)
        .str(namespace_id)
        .str(workflow_id)
        .str(run_id)
        .i64(first_event_id)
        .build()
}

pub fn history_prefix(
    shard: ShardId,
    namespace_id: &str,
    workflow_id: &str,
    run_id: &str,
) -> Vec<u8> {
    KeyBuf::shard(shard)
        .str(namespace_id)
        .str(workflow_id)
        .str(run_id)
        .build()
}

/// How many leading bytes of a `history` key (or of a prefix at least that long) name its run:
/// the shard and the three length-prefixed strings, without the batch's event ID. `None` for
/// anything shorter (a shard or workflow prefix), which therefore names no single run.
///
/// This is the `history` family's prefix extractor (`Db::open`): SST files then carry a filter
/// of the runs they hold, so reading one run's history skips every file without it.
pub fn history_run_prefix_len(key: &[u8]) -> Option<usize> {
    let mut at = 4usize;
    if key.len() < at {
        return None;
    }
    for _ in 0..3 {
        let len_bytes: [u8; 2] = key.get(at..at + 2)?.try_into().ok()?;
        at = at.checked_add(2 + usize::from(u16::from_be_bytes(len_bytes)))?;
        if key.len() < at {
            return None;
        }
    }
    Some(at)
}

/// `timers`: shard, fire time (ms), task ID.
pub fn timer(shard: ShardId, fire_time_ms: i64, task_id: u64) -> Vec<u8> {
    KeyBuf::shard(shard).i64(fire_time_ms).u64(task_id).build()
}

pub fn timer_fire_time(key: &[u8]) -> i64 {
    let raw = u64::from_be_bytes(key[4..12].try_into().unwrap_or([0; 8]));
    (raw ^ (1 << 63)) as i64
}

/// `outbox`: shard, task ID.
pub fn outbox(shard: ShardId, task_id: u64) -> Vec<u8> {
    KeyBuf::shard(shard).u64(task_id).build()
}

/// `schedules`: shard, namespace ID, schedule ID.
pub fn schedule(shard: ShardId, namespace_id: &str, schedule_id: &str) -> Vec<u8> {
    KeyBuf::shard(shard)
        .str(namespace_id)
        .str(schedule_id)
        .build()
}

/// `batch_jobs`: shard, namespace ID, job ID.
pub fn batch_job(shard: ShardId, namespace_id: &str, job_id: &str) -> Vec<u8> {
    KeyBuf::shard(shard).str(namespace_id).str(job_id).build()
}

/// `namespaces`: group, name.
pub fn namespace(group: ShardId, name: &str) -> Vec<u8> {
    KeyBuf::shard(group).str(name).build()
}

/// `nexus_endpoints`: group, then an endpoint record by ID ...
pub fn nexus_endpoint(group: ShardId, id: &str) -> Vec<u8> {
    KeyBuf::shard(group)
        .u8(NEXUS_ENDPOINT_BY_ID)
        .str(id)
        .build()
}

/// ... or the name index (its value: a record holding only the ID).
pub fn nexus_endpoint_name(group: ShardId, name: &str) -> Vec<u8> {
    KeyBuf::shard(group)
        .u8(NEXUS_ENDPOINT_BY_NAME)
        .str(name)
        .build()
}

/// Every endpoint record of the group (not the name index).
pub fn nexus_endpoints_prefix(group: ShardId) -> Vec<u8> {
    KeyBuf::shard(group).u8(NEXUS_ENDPOINT_BY_ID).build()
}

const NEXUS_ENDPOINT_BY_ID: u8 = 1;
const NEXUS_ENDPOINT_BY_NAME: u8 = 2;

pub fn shard_prefix(shard: ShardId) -> Vec<u8> {
    shard.to_be_bytes().to_vec()
}

/// The first key after every key of `prefix` (for range ends).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    vec![0xff; prefix.len() + 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_sort_by_time_then_id() {
        let a = timer(1, 1_000, 9);
        let b = timer(1, 2_000, 1);
        let c = timer(2, 0, 0);
        assert!(a < b && b < c);
        assert_eq!(timer_fire_time(&b), 2_000);
        assert!(timer(1, -5, 0) < timer(1, 0, 0));
    }

    #[test]
    fn string_parts_do_not_collide() {
        assert_ne!(current(0, "ab", "c"), current(0, "a", "bc"));
        let p = history_prefix(0, "ns", "wf", "run");
        assert!(history(0, "ns", "wf", "run", 5).starts_with(&p));
        assert!(!history(0, "ns", "wf", "run2", 5).starts_with(&p));
    }

    #[test]
    fn a_history_key_and_its_run_prefix_name_the_same_run() {
        let p = history_prefix(7, "ns", "wf", "run");
        assert_eq!(history_run_prefix_len(&p), Some(p.len()));
        let k = history(7, "ns", "wf", "run", 42);
        assert_eq!(history_run_prefix_len(&k), Some(p.len()));
        // Shorter prefixes (a shard, a workflow's runs) and cut keys name no run.
        assert_eq!(history_run_prefix_len(&shard_prefix(7)), None);
        assert_eq!(history_run_prefix_len(&p[..p.len() - 1]), None);
        assert_eq!(history_run_prefix_len(&[0, 0, 0]), None);
        let workflow = KeyBuf::shard(7).str("ns").str("wf").build();
        assert_eq!(history_run_prefix_len(&workflow), None);
        // A length that points past the end is refused, never read out of bounds.
        assert_eq!(history_run_prefix_len(&[0, 0, 0, 7, 0xff, 0xff, 1]), None);
        // Empty strings are fine.
        let empty = history_prefix(0, "", "", "");
        assert_eq!(history_run_prefix_len(&empty), Some(empty.len()));
    }
}
