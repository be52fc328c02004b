//! A digest of a shard's state-machine key range: one hash per state column family over every key
//! and value of the shard, in key order, from one RocksDB snapshot. Two replicas that applied the
//! same log must have equal digests (the Raft log and vote, `raft_log` and `raft_meta`, are not
//! state and are left out). Values are compared in a canonical form, see [`shard_digest`].

use xxhash_rust::xxh3::Xxh3;

use crate::db::{Cf, Db};
use crate::error::StorageResult;
use crate::keys::{self, ShardId};

/// The digest of one column family's rows of a shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FamilyDigest {
    pub family: &'static str,
    pub rows: u64,
    pub hash: u128,
}

/// The digest of a shard's state: one entry per state family ([`Cf::STATE`], in that order).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardDigest {
    pub shard: ShardId,
    pub families: Vec<FamilyDigest>,
}

impl ShardDigest {
    /// One hash over every family's digest.
    pub fn combined(&self) -> u128 {
        let mut hasher = Xxh3::new();
        for f in &self.families {
            hasher.update(f.family.as_bytes());
            hasher.update(&f.rows.to_be_bytes());
            hasher.update(&f.hash.to_be_bytes());
        }
        hasher.digest128()
    }

    /// Names of the families whose digests differ from `other`'s.
    pub fn differing_families(&self, other: &ShardDigest) -> Vec<&'static str> {
        self.families
            .iter()
            .zip(&other.families)
            .filter(|(a, b)| a != b)
            .map(|(a, _)| a.family)
            .collect()
    }
}

/// The protobuf message each state family's values hold (`shard_meta` holds other encodings).
fn value_type(cf: Cf) -> Option<&'static str> {
    match cf {
        Cf::Executions => Some(".chronicle.persistence.v1.WorkflowExecutionState"),
        Cf::Current => Some(".chronicle.persistence.v1.CurrentExecution"),
        Cf::History => Some(".chronicle.persistence.v1.HistoryBatch"),
        Cf::Timers => Some(".chronicle.persistence.v1.TimerTask"),
        Cf::Outbox => Some(".chronicle.persistence.v1.OutboxTask"),
        Cf::Namespaces => Some(".chronicle.persistence.v1.NamespaceRecord"),
        Cf::Schedules => Some(".chronicle.persistence.v1.ScheduleState"),
        Cf::BatchJobs => Some(".chronicle.persistence.v1.BatchJobState"),
        Cf::NexusEndpoints => Some(".chronicle.persistence.v1.NexusEndpointRecord"),
        Cf::ShardMeta | Cf::RaftLog | Cf::RaftMeta | Cf::Visibility => None,
    }
}

/// Hashes every key and value of `shard` in the state families, from one consistent snapshot.
/// Keys and values are length-prefixed so that no two different row sets hash the same stream.
/// Protobuf values are hashed in their canonical form ([`crate::canonical`]): map entries in
/// byte order, since prost writes Temporal's `HashMap`-typed maps (memos, search attributes,
/// headers, payload metadata) in an order that differs between replicas.
pub fn shard_digest(db: &Db, shard: ShardId) -> StorageResult<ShardDigest> {
    let snapshot = db.rocks().snapshot();
    let prefix = keys::shard_prefix(shard);
    let mut families = Vec::with_capacity(Cf::STATE.len());
    for cf in Cf::STATE {
        let mut opts = rocksdb::ReadOptions::default();
        opts.set_snapshot(&snapshot);
        // Every key of the shard, not only those of the seek key's prefix (`history`).
        opts.set_total_order_seek(true);
        opts.set_iterate_lower_bound(prefix.clone());
        opts.set_iterate_upper_bound(keys::prefix_end(&prefix));
        let mut iter = db.rocks().raw_iterator_cf_opt(db.cf(cf), opts);
        iter.seek(&prefix);
        let mut hasher = Xxh3::new();
        let mut rows = 0u64;
        let node_local = keys::shard_meta(shard, crate::tables::META_SNAPSHOT_SEQ);
        while let (Some(k), Some(v)) = (iter.key(), iter.value()) {
            if !k.starts_with(&prefix) {
                break;
            }
            if cf == Cf::ShardMeta && k == node_local.as_slice() {
                iter.next();
                continue;
            }
            let v = match value_type(cf) {
                Some(type_name) => {
                    std::borrow::Cow::Owned(crate::canonical::canonical(v, type_name))
                }
                None => std::borrow::Cow::Borrowed(v),
            };
            hasher.update(&(k.len() as u64).to_be_bytes());
            hasher.update(k);
            hasher.update(&(v.len() as u64).to_be_bytes());
            hasher.update(&v);
            rows += 1;
            iter.next();
        }
        iter.status()?;
        families.push(FamilyDigest {
            family: cf.name(),
            rows,
            hash: hasher.digest128(),
        });
    }
    Ok(ShardDigest { shard, families })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::DbOptions;
    use crate::tables::{ShardBatch, ShardTables};
    use chronicle_proto::chronicle::persistence::v1 as pb;

    fn write_state(db: &Db, shard: ShardId, run: &str) {
        let mut batch = ShardBatch::new(ShardTables::new(db.clone(), shard));
        batch.put_execution(&pb::WorkflowExecutionState {
            namespace_id: "ns".into(),
            workflow_id: "wf".into(),
            run_id: run.into(),
            ..Default::default()
        });
        batch.put_timer(1_000, &pb::TimerTask::default()).unwrap();
        batch.commit().unwrap();
    }

    #[test]
    fn equal_state_gives_equal_digests_and_a_difference_names_its_family() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let db_a = Db::open(a.path(), DbOptions::default()).unwrap();
        let db_b = Db::open(b.path(), DbOptions::default()).unwrap();
        write_state(&db_a, 3, "run-1");
        write_state(&db_b, 3, "run-1");
        // Other shards and the Raft log are not part of shard 3's digest.
        write_state(&db_b, 4, "run-other");
        db_b.rocks()
            .put_cf(db_b.cf(Cf::RaftLog), keys::raft_log(3, 1), b"entry")
            .unwrap();
        let (da, db) = (
            shard_digest(&db_a, 3).unwrap(),
            shard_digest(&db_b, 3).unwrap(),
        );
        assert_eq!(da, db);
        assert_eq!(da.combined(), db.combined());
        assert_eq!(da.families.len(), Cf::STATE.len());

        write_state(&db_b, 3, "run-2");
        let changed = shard_digest(&db_b, 3).unwrap();
        assert_ne!(da.combined(), changed.combined());
        // The second write added an execution (and its visibility rows) and a timer, and
        // advanced the task ID counter.
        assert_eq!(
            da.differing_families(&changed),
            vec!["shard_meta", "executions", "timers", "visibility"]
        );
        assert_ne!(shard_digest(&db_b, 4).unwrap(), changed);
    }
}
