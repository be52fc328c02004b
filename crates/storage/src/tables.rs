//! Typed access to one shard's state. Reads go to RocksDB; writes are collected in a
//! [`ShardBatch`] (which also answers reads of what it holds, so that commands applied together
//! see each other) and land in one `WriteBatch` together with the applied index.

use chronicle_proto::chronicle::persistence::v1 as pb;
use chronicle_proto::temporal::api::history::v1::HistoryEvent;
use prost::Message;

use crate::db::{Cf, Db};
use crate::error::{StorageError, StorageResult};
use crate::keys::{self, ShardId};

mod batch;
pub use batch::{Savepoint, ShardBatch};

/// `shard_meta` kinds.
pub const META_APPLIED: u8 = 1;
pub const META_NEXT_TASK_ID: u8 = 2;
/// The node's count of snapshots built for the group (unique snapshot IDs across restarts).
/// Node-local: replicas that applied the same log differ here, so the state digest skips it.
pub const META_SNAPSHOT_SEQ: u8 = 3;
/// The metadata group's cluster members (`ClusterMembers`): replicated state.
pub const META_CLUSTER_MEMBERS: u8 = 4;

fn decode<M: Message + Default>(cf: Cf, bytes: &[u8]) -> StorageResult<M> {
    M::decode(bytes).map_err(|e| StorageError::Corrupt {
        cf: cf.name(),
        reason: e.to_string(),
    })
}

/// Read access to one shard (or the metadata group) of a node's database.
#[derive(Clone)]
pub struct ShardTables {
    db: Db,
    shard: ShardId,
}

impl ShardTables {
    pub fn new(db: Db, shard: ShardId) -> Self {
        Self { db, shard }
    }

    pub fn shard(&self) -> ShardId {
        self.shard
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    pub fn get_meta(&self, kind: u8) -> StorageResult<Option<Vec<u8>>> {
        self.db
            .get(Cf::ShardMeta, &keys::shard_meta(self.shard, kind))
    }

    pub fn execution(
        &self,
        namespace_id: &str,
        workflow_id: &str,
        run_id: &str,
    ) -> StorageResult<Option<pb::WorkflowExecutionState>> {
        self.db
            .get(
                Cf::Executions,
                &keys::execution(self.shard, namespace_id, workflow_id, run_id),
            )?
            .map(|b| decode(Cf::Executions, &b))
            .transpose()
    }

    pub fn current(
        &self,
        namespace_id: &str,
        workflow_id: &str,
    ) -> StorageResult<Option<pb::CurrentExecution>> {
        self.db
            .get(
                Cf::Current,
                &keys::current(self.shard, namespace_id, workflow_id),
            )?
            .map(|b| decode(Cf::Current, &b))
            .transpose()
    }

    /// Events of a run from `first_event_id` on, at most `max_events`, in order.
    pub fn history(
        &self,
        namespace_id: &str,
        workflow_id: &str,
        run_id: &str,
        first_event_id: i64,
        max_events: usize,
    ) -> StorageResult<Vec<HistoryEvent>> {
        let prefix = keys::history_prefix(self.shard, namespace_id, workflow_id, run_id);
        let mut iter = self.db.run_history_iterator(&prefix);
        // The batch holding `first_event_id` starts at or before it. Reads usually start where a
        // batch does (the whole history, or a sticky worker's new events), so a forward seek
        // for that batch comes first: only a backward seek steps into files the run filter
        // has ruled out.
        let target = keys::history(
            self.shard,
            namespace_id,
            workflow_id,
            run_id,
            first_event_id,
        );
        iter.seek(&target);
        if iter.key() != Some(target.as_slice()) {
            iter.status()?;
            iter.seek_for_prev(&target);
            if !iter.valid() || !iter.key().is_some_and(|k| k.starts_with(&prefix)) {
                iter.seek(&prefix);
            }
        }
        let mut out = Vec::new();
        while let (Some(k), Some(v)) = (iter.key(), iter.value()) {
            if !k.starts_with(&prefix) || out.len() >= max_events {
                break;
            }
            let batch: pb::HistoryBatch = decode(Cf::History, v)?;
            for e in batch.events {
                if e.event_id >= first_event_id && out.len() < max_events {
                    out.push(e);
                }
            }
            iter.next();
        }
        iter.status()?;
        Ok(out)
    }

    /// Timers due by `until_ms` with a fire time of at least `from_ms`. Starting the seek at a
    /// known floor skips the deletion tombstones that fired timers leave at the front of the
    /// range, which a scan from the shard's first key would step over one by one.
    pub fn timers_between(
        &self,
        from_ms: i64,
        until_ms: i64,
        limit: usize,
    ) -> StorageResult<Vec<(Vec<u8>, pb::TimerTask)>> {
        self.scan_from(
            Cf::Timers,
            &keys::timer(self.shard, from_ms, 0),
            limit,
            |k| keys::timer_fire_time(k) <= until_ms,
        )
    }

    /// The fire time of the earliest timer at or after `from_ms`.
    pub fn next_timer_time_from(&self, from_ms: i64) -> StorageResult<Option<i64>> {
        Ok(self
            .scan_from::<pb::TimerTask>(
                Cf::Timers,
                &keys::timer(self.shard, from_ms, 0),
                1,
                |_| true,
            )?
            .first()
            .map(|(k, _)| keys::timer_fire_time(k)))
    }

    /// Outbox rows with a task ID of at least `from_id` (IDs only grow, and rows are only ever
    /// deleted, so a processor can skip what it knows is gone).
    pub fn outbox_from(
        &self,
        from_id: u64,
        limit: usize,
    ) -> StorageResult<Vec<(Vec<u8>, pb::OutboxTask)>> {
        self.scan_from(
            Cf::Outbox,
            &keys::outbox(self.shard, from_id),
            limit,
            |_| true,
        )
    }

    pub fn namespace(&self, name: &str) -> StorageResult<Option<pb::NamespaceRecord>> {
        self.db
            .get(Cf::Namespaces, &keys::namespace(self.shard, name))?
            .map(|b| decode(Cf::Namespaces, &b))
            .transpose()
    }

    pub fn nexus_endpoint(&self, id: &str) -> StorageResult<Option<pb::NexusEndpointRecord>> {
        self.db
            .get(Cf::NexusEndpoints, &keys::nexus_endpoint(self.shard, id))?
            .map(|b| decode(Cf::NexusEndpoints, &b))
            .transpose()
    }

    /// The endpoint named `name`, through the name index.
    pub fn nexus_endpoint_by_name(
        &self,
        name: &str,
    ) -> StorageResult<Option<pb::NexusEndpointRecord>> {
        let index: Option<pb::NexusEndpointRecord> = self
            .db
            .get(
                Cf::NexusEndpoints,
                &keys::nexus_endpoint_name(self.shard, name),
            )?
            .map(|b| decode(Cf::NexusEndpoints, &b))
            .transpose()?;
        match index {
            Some(index) => self.nexus_endpoint(&index.id),
            None => Ok(None),
        }
    }

    /// Up to `limit` endpoints in ID order, from the first whose ID is `from_id` or after.
    pub fn nexus_endpoints(
        &self,
        from_id: &str,
        limit: usize,
    ) -> StorageResult<Vec<pb::NexusEndpointRecord>> {
        let records = keys::nexus_endpoints_prefix(self.shard);
        Ok(self
            .scan_from(
                Cf::NexusEndpoints,
                &keys::nexus_endpoint(self.shard, from_id),
                limit,
                |k| k.starts_with(&records),
            )?
            .into_iter()
            .map(|(_, v)| v)
            .collect())
    }

    /// The cluster's members (on the metadata group; empty before any was registered).
    pub fn cluster_members(&self) -> StorageResult<pb::ClusterMembers> {
        Ok(self
            .get_meta(META_CLUSTER_MEMBERS)?
            .map(|b| decode(Cf::ShardMeta, &b))
            .transpose()?
            .unwrap_or_default())
    }

    pub fn namespaces(&self) -> StorageResult<Vec<pb::NamespaceRecord>> {
        Ok(self
            .scan(Cf::Namespaces, usize::MAX, |_| true)?
            .into_iter()
            .map(|(_, v)| v)
            .collect())
    }

    pub fn schedule(
        &self,
        namespace_id: &str,
        schedule_id: &str,
    ) -> StorageResult<Option<pb::ScheduleState>> {
        self.db
            .get(
                Cf::Schedules,
                &keys::schedule(self.shard, namespace_id, schedule_id),
            )?
            .map(|b| decode(Cf::Schedules, &b))
            .transpose()
    }

    /// Schedules of this shard.
    pub fn schedules(&self) -> StorageResult<Vec<pb::ScheduleState>> {
        Ok(self
            .scan(Cf::Schedules, usize::MAX, |_| true)?
            .into_iter()
            .map(|(_, v)| v)
            .collect())
    }

    pub fn batch_job(
        &self,
        namespace_id: &str,
        job_id: &str,
    ) -> StorageResult<Option<pb::BatchJobState>> {
        self.db
            .get(
                Cf::BatchJobs,
                &keys::batch_job(self.shard, namespace_id, job_id),
            )?
            .map(|b| decode(Cf::BatchJobs, &b))
            .transpose()
    }

    /// Batch jobs of this shard.
    pub fn batch_jobs(&self) -> StorageResult<Vec<pb::BatchJobState>> {
        Ok(self
            .scan(Cf::BatchJobs, usize::MAX, |_| true)?
            .into_iter()
            .map(|(_, v)| v)
            .collect())
    }

    /// Executions of this shard (for describe/list until visibility has its own index).
    pub fn executions(&self, limit: usize) -> StorageResult<Vec<pb::WorkflowExecutionState>> {
        Ok(self
            .scan(Cf::Executions, limit, |_| true)?
            .into_iter()
            .map(|(_, v)| v)
            .collect())
    }

    /// Visits every run of a namespace in this shard, or only the runs of `workflow_id` (one at
    /// a time: a shard's runs need not fit in memory), until `visit` answers false.
    pub fn for_each_execution(
        &self,
        namespace_id: &str,
        workflow_id: Option<&str>,
        mut visit: impl FnMut(pb::WorkflowExecutionState) -> bool,
    ) -> StorageResult<()> {
        let prefix = keys::executions_prefix(self.shard, namespace_id, workflow_id);
        let mut iter = self.db.prefix_iterator(Cf::Executions, &prefix);
        iter.seek(&prefix);
        while let (Some(k), Some(v)) = (iter.key(), iter.value()) {
            if !k.starts_with(&prefix) || !visit(decode(Cf::Executions, v)?) {
                break;
            }
            iter.next();
        }
        iter.status()?;
        Ok(())
    }

    fn scan<M: Message + Default>(
        &self,
        cf: Cf,
        limit: usize,
        keep: impl Fn(&[u8]) -> bool,
    ) -> StorageResult<Vec<(Vec<u8>, M)>> {
        self.scan_from(cf, &keys::shard_prefix(self.shard), limit, keep)
    }

    /// Rows of this shard from `start` on, while `keep` holds.
    fn scan_from<M: Message + Default>(
        &self,
        cf: Cf,
        start: &[u8],
        limit: usize,
        keep: impl Fn(&[u8]) -> bool,
    ) -> StorageResult<Vec<(Vec<u8>, M)>> {
        let prefix = keys::shard_prefix(self.shard);
        let mut iter = self.db.prefix_iterator(cf, &prefix);
        iter.seek(start);
        let mut out = Vec::new();
        while let (Some(k), Some(v)) = (iter.key(), iter.value()) {
            if !k.starts_with(&prefix) || out.len() >= limit || !keep(k) {
                break;
            }
            out.push((k.to_vec(), decode(cf, v)?));
            iter.next();
        }
        iter.status()?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
