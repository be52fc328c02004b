//! A shard as an openraft group: the type configuration, the state machine that hands committed
//! commands to the history engine's applier, and the network used between a group's members.
//!
//! The raft crate knows nothing about workflows. A log entry carries an opaque, prost-encoded
//! command; an [`Applier`] turns it into writes on the shard's tables. Everything one `apply`
//! call produces (state, history, timers, outbox, applied index, membership) lands in one RocksDB
//! write batch, so a crash never leaves a half-applied command.

mod network;
mod state_machine;

use std::io::Cursor;
use std::sync::Arc;

use chronicle_storage::log_store::RocksLogStore;
use chronicle_storage::{Db, ShardTables};
use chronicle_types::shard::ShardId;
use serde::{Deserialize, Serialize};

pub use network::LocalOnlyNetwork;
pub use state_machine::{Applier, ShardStateMachine};

/// A command as it travels through the log: the encoded `ShardCommand`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command(#[serde(with = "serde_bytes")] pub Vec<u8>);

/// What applying a command returned: the encoded `CommandResult` (empty for blank and
/// membership entries).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandResponse(#[serde(with = "serde_bytes")] pub Vec<u8>);

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "command({} bytes)", self.0.len())
    }
}

openraft::declare_raft_types!(
    /// openraft types of every Chronicle group (history shards and the metadata group).
    pub ShardRaftConfig:
        D = Command,
        R = CommandResponse,
        NodeId = u64,
        Node = openraft::BasicNode,
        SnapshotData = Cursor<Vec<u8>>,
);

pub type ShardRaft = openraft::Raft<ShardRaftConfig>;
pub type LogStore = RocksLogStore<ShardRaftConfig>;

#[derive(Debug, thiserror::Error)]
pub enum RaftError {
    #[error("raft group {group} failed to start: {reason}")]
    Start { group: ShardId, reason: String },
    #[error("storage: {0}")]
    Storage(#[from] chronicle_storage::StorageError),
    #[error("not the leader of group {group}")]
    NotLeader { group: ShardId, leader: Option<u64> },
    #[error("raft group {group} is shutting down or failed: {reason}")]
    Fatal { group: ShardId, reason: String },
}

/// Timing of every group. Elections are only relevant once groups have several voters; the
/// heartbeat is kept short so that a new leader is found quickly after a node loss.
pub fn group_config(group: ShardId) -> openraft::Config {
    openraft::Config {
        cluster_name: format!("chronicle-group-{group}"),
        heartbeat_interval: 250,
        election_timeout_min: 1000,
        election_timeout_max: 2000,
        // Snapshots are a copy of the shard's key range; take one every 50k entries and keep a
        // tail of the log so a briefly lagging follower catches up from the log.
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(50_000),
        max_in_snapshot_log_to_keep: 10_000,
        ..Default::default()
    }
}

/// Starts one group on this node. When `bootstrap_single_voter` is set and the group has never
/// been initialised, the node makes itself the only voter (start-dev).
pub async fn start_group<A: Applier>(
    db: Db,
    group: ShardId,
    node_id: u64,
    node_addr: String,
    applier: Arc<A>,
    bootstrap_single_voter: bool,
) -> Result<ShardRaft, RaftError> {
    let config = Arc::new(
        group_config(group)
            .validate()
            .map_err(|e| RaftError::Start {
                group,
                reason: e.to_string(),
            })?,
    );
    let log_store = LogStore::new(db.clone(), group);
    let state_machine = ShardStateMachine::open(ShardTables::new(db, group), applier)?;
    let raft = openraft::Raft::new(node_id, config, LocalOnlyNetwork, log_store, state_machine)
        .await
        .map_err(|e| RaftError::Start {
            group,
            reason: e.to_string(),
        })?;
    if bootstrap_single_voter
        && !raft.is_initialized().await.map_err(|e| RaftError::Start {
            group,
            reason: e.to_string(),
        })?
    {
        let mut members = std::collections::BTreeMap::new();
        members.insert(node_id, openraft::BasicNode { addr: node_addr });
        raft.initialize(members)
            .await
            .map_err(|e| RaftError::Start {
                group,
                reason: e.to_string(),
            })?;
    }
    Ok(raft)
}

/// Proposes `command` and waits until it is committed (fsynced on a quorum) and applied;
/// returns what the applier answered.
pub async fn propose(
    raft: &ShardRaft,
    group: ShardId,
    command: Vec<u8>,
) -> Result<Vec<u8>, RaftError> {
    use openraft::error::{ClientWriteError, RaftError as OpenraftError};
    match raft.client_write(Command(command)).await {
        Ok(resp) => Ok(resp.data.0),
        Err(OpenraftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
            Err(RaftError::NotLeader {
                group,
                leader: f.leader_id,
            })
        }
        Err(e) => Err(RaftError::Fatal {
            group,
            reason: e.to_string(),
        }),
    }
}

/// Applies `group`'s Raft log as stored in `source` to the state machine of `group` in `target`
/// (a fresh database), through `applier`, in batches of `batch_entries` entries: what a new
/// replica replaying the log would hold. Returns how many entries were applied. The log must be
/// whole (not purged after a snapshot). Used to check that apply is deterministic: compare
/// `chronicle_storage::digest::shard_digest` of the two databases.
pub async fn replay_log<A: Applier>(
    source: &Db,
    target: Db,
    group: ShardId,
    applier: Arc<A>,
    batch_entries: usize,
) -> Result<usize, RaftError> {
    use openraft::storage::{RaftLogReader, RaftStateMachine};
    let fatal = |e: &dyn std::fmt::Display| RaftError::Fatal {
        group,
        reason: e.to_string(),
    };
    let mut log = LogStore::new(source.clone(), group);
    let entries = log.try_get_log_entries(..).await.map_err(|e| fatal(&e))?;
    let mut state_machine = ShardStateMachine::open(ShardTables::new(target, group), applier)?;
    for chunk in entries.chunks(batch_entries.max(1)) {
        state_machine
            .apply(chunk.to_vec())
            .await
            .map_err(|e| fatal(&e))?;
    }
    Ok(entries.len())
}
