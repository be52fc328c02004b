//! A shard as an openraft group: the type configuration, the state machine that hands committed
//! commands to the history engine's applier, and the network used between a group's members.
//!
//! The raft crate knows nothing about workflows. A log entry carries an opaque, prost-encoded
//! command; an [`Applier`] turns it into writes on the shard's tables. Everything one `apply`
//! call produces (state, history, timers, outbox, applied index, membership) lands in one RocksDB
//! write batch, so a crash never leaves a half-applied command.
//!
//! Networks: [`LocalOnlyNetwork`] for a group whose only member is this node (start-dev), and
//! the gRPC transport in [`transport`] between the replicas of a multi-voter group.

mod network;
mod snapshot_file;
mod state_machine;
pub mod transport;

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use chronicle_storage::log_store::RocksLogStore;
use chronicle_storage::{Db, ShardTables};
use chronicle_types::shard::ShardId;
use serde::{Deserialize, Serialize};

pub use network::LocalOnlyNetwork;
pub use snapshot_file::SnapshotData;
pub use state_machine::{Applier, ShardStateMachine};
pub use transport::{
    ClusterId, GroupRegistry, GrpcNetworkFactory, PeerPool, PeerPoolConfig, TransportService,
};

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
        SnapshotData = snapshot_file::SnapshotData,
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

/// openraft's defaults, read once. `openraft::Config::default()` runs a whole clap parse of an
/// empty command line (allocation-heavy: tens of microseconds), and the timing is consulted on
/// hot paths (the history engine's leader lease check runs on every proposal and processor
/// pass), where it cost 7-9% of a history node's CPU under load.
static OPENRAFT_DEFAULTS: LazyLock<openraft::Config> = LazyLock::new(openraft::Config::default);

/// Timing and log-retention settings of a group (openraft's `Config`, in milliseconds and
/// entries).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupTiming {
    pub heartbeat_interval_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Bound on one snapshot chunk's RPC. openraft counts the *installation* of the snapshot in
    /// the last chunk's RPC, so this must cover loading a whole shard on the follower.
    pub install_snapshot_timeout_ms: u64,
    pub snapshot_max_chunk_size: u64,
    pub max_payload_entries: u64,
    /// A snapshot is built every this many applied entries.
    pub snapshot_logs_since_last: u64,
    /// Entries kept in the log behind the last snapshot, so a follower that lags by less than
    /// this catches up from the log rather than by snapshot, and a snapshot in transit is not
    /// overtaken by the purge (openraft #1706).
    pub max_in_snapshot_log_to_keep: u64,
    pub purge_batch_size: u64,
    /// Whether a snapshot file holds a copy of the shard's state. Only a follower ever reads
    /// that copy (a leader sends it to a replica that fell behind its log). A group whose only
    /// voter is this node has none, and its state is already durable in RocksDB before the log
    /// behind a snapshot is purged (`PurgeGate`), so its snapshots record only the applied log
    /// position: building one no longer rewrites the whole shard every 50,000 entries.
    pub snapshot_carries_state: bool,
}

impl GroupTiming {
    /// A group whose only voter is this node (start-dev). Elections never happen, so the
    /// election timeouts only matter for how soon the node elects itself at start.
    pub fn single_node() -> Self {
        let defaults = &*OPENRAFT_DEFAULTS;
        Self {
            heartbeat_interval_ms: 250,
            election_timeout_min_ms: 1000,
            election_timeout_max_ms: 2000,
            install_snapshot_timeout_ms: defaults.install_snapshot_timeout,
            snapshot_max_chunk_size: defaults.snapshot_max_chunk_size,
            max_payload_entries: defaults.max_payload_entries,
            // Snapshots are a copy of the shard's key range; take one every 50k entries and keep
            // a tail of the log so a briefly lagging follower catches up from the log.
            snapshot_logs_since_last: 50_000,
            max_in_snapshot_log_to_keep: 10_000,
            purge_batch_size: defaults.purge_batch_size,
            snapshot_carries_state: false,
        }
    }

    /// A group with several voters (docs: cluster.md §2.10). A follower calls an election
    /// `election_timeout_max + U(min, max) + ≤1.5 × heartbeat` after the leader's last heartbeat,
    /// so a dead leader is replaced within about 2.0–2.7 s. openraft's append RPC timeout is the
    /// heartbeat interval, and an append includes the follower's fsync, so it stays at 200 ms.
    pub fn replicated() -> Self {
        Self {
            heartbeat_interval_ms: 200,
            election_timeout_min_ms: 800,
            election_timeout_max_ms: 1200,
            install_snapshot_timeout_ms: 60_000,
            snapshot_max_chunk_size: 1024 * 1024,
            max_payload_entries: 300,
            snapshot_logs_since_last: 50_000,
            max_in_snapshot_log_to_keep: 10_000,
            purge_batch_size: OPENRAFT_DEFAULTS.purge_batch_size,
            snapshot_carries_state: true,
        }
    }

    /// The longest a group can be without a leader after its leader dies, before the new leader
    /// commits: lease, election timeout and one tick (what to print at startup).
    pub fn worst_case_failover_ms(&self) -> u64 {
        2 * self.election_timeout_max_ms + self.heartbeat_interval_ms * 3 / 2
    }

    pub fn to_config(&self, group: ShardId) -> openraft::Config {
        openraft::Config {
            cluster_name: format!("chronicle-group-{group}"),
            heartbeat_interval: self.heartbeat_interval_ms,
            election_timeout_min: self.election_timeout_min_ms,
            election_timeout_max: self.election_timeout_max_ms,
            install_snapshot_timeout: self.install_snapshot_timeout_ms,
            snapshot_max_chunk_size: self.snapshot_max_chunk_size,
            max_payload_entries: self.max_payload_entries,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_logs_since_last),
            max_in_snapshot_log_to_keep: self.max_in_snapshot_log_to_keep,
            purge_batch_size: self.purge_batch_size,
            ..Default::default()
        }
    }
}

/// Timing of a single-voter group (start-dev).
pub fn group_config(group: ShardId) -> openraft::Config {
    GroupTiming::single_node().to_config(group)
}

/// How a group that has never been initialised gets its first membership.
#[derive(Clone, Debug)]
pub enum Bootstrap {
    /// Wait to be contacted by a leader (a replica added to an existing group, or a voter of a
    /// new group that another node initialises).
    Join,
    /// This node becomes the only voter (start-dev).
    SingleVoter { addr: String },
    /// This node initialises the group with exactly these voters. Only one node may do this for
    /// a group: two nodes initialising the same group with different voter sets split it.
    Voters(BTreeMap<u64, openraft::BasicNode>),
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
    let bootstrap = if bootstrap_single_voter {
        Bootstrap::SingleVoter { addr: node_addr }
    } else {
        Bootstrap::Join
    };
    start_group_with(
        db,
        group,
        node_id,
        LocalOnlyNetwork,
        GroupTiming::single_node(),
        applier,
        bootstrap,
    )
    .await
}

/// Starts one group on this node with the given network and timing. The bootstrap applies only
/// if the group has never been initialised (no vote, no log): after a restart the stored
/// membership wins, so calling this again with the same `Bootstrap` is harmless.
pub async fn start_group_with<A, N>(
    db: Db,
    group: ShardId,
    node_id: u64,
    network: N,
    timing: GroupTiming,
    applier: Arc<A>,
    bootstrap: Bootstrap,
) -> Result<ShardRaft, RaftError>
where
    A: Applier,
    N: openraft::network::RaftNetworkFactory<ShardRaftConfig>,
{
    let start_err = |e: &dyn std::fmt::Display| RaftError::Start {
        group,
        reason: e.to_string(),
    };
    let config = Arc::new(
        timing
            .to_config(group)
            .validate()
            .map_err(|e| start_err(&e))?,
    );
    let state_machine = ShardStateMachine::open_with(
        ShardTables::new(db.clone(), group),
        applier,
        timing.snapshot_carries_state,
    )?;
    let log_store = LogStore::with_purge_gate(db, group, state_machine.purge_gate());
    let raft = openraft::Raft::new(node_id, config, network, log_store, state_machine)
        .await
        .map_err(|e| start_err(&e))?;
    let members = match bootstrap {
        Bootstrap::Join => return Ok(raft),
        Bootstrap::SingleVoter { addr } => {
            BTreeMap::from([(node_id, openraft::BasicNode { addr })])
        }
        Bootstrap::Voters(members) => members,
    };
    initialize_group(&raft, group, members).await?;
    Ok(raft)
}

/// Initialises `raft`'s group with `members` as its voters unless it already has a membership
/// (then nothing happens: the stored one wins).
pub async fn initialize_group(
    raft: &ShardRaft,
    group: ShardId,
    members: BTreeMap<u64, openraft::BasicNode>,
) -> Result<(), RaftError> {
    use openraft::error::{InitializeError, RaftError as OpenraftError};
    let start_err = |e: &dyn std::fmt::Display| RaftError::Start {
        group,
        reason: e.to_string(),
    };
    if raft.is_initialized().await.map_err(|e| start_err(&e))? {
        return Ok(());
    }
    match raft.initialize(members).await {
        Ok(()) => Ok(()),
        // Raced with a leader that reached this node first: the group has its membership.
        Err(OpenraftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
        Err(e) => Err(start_err(&e)),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// start-dev's groups keep the timing they had before timing became configurable.
    #[test]
    fn single_node_timing_is_unchanged() {
        let config = group_config(3);
        let defaults = openraft::Config::default();
        assert_eq!(config.cluster_name, "chronicle-group-3");
        assert_eq!(
            (
                config.heartbeat_interval,
                config.election_timeout_min,
                config.election_timeout_max
            ),
            (250, 1000, 2000)
        );
        assert_eq!(
            config.snapshot_policy,
            openraft::SnapshotPolicy::LogsSinceLast(50_000)
        );
        assert_eq!(config.max_in_snapshot_log_to_keep, 10_000);
        assert_eq!(
            config.install_snapshot_timeout,
            defaults.install_snapshot_timeout
        );
        assert_eq!(config.max_payload_entries, defaults.max_payload_entries);
        assert_eq!(
            config.snapshot_max_chunk_size,
            defaults.snapshot_max_chunk_size
        );
        assert!(config.validate().is_ok());
    }

    #[test]
    fn replicated_timing_is_valid_and_fails_over_within_three_seconds() {
        let timing = GroupTiming::replicated();
        assert!(timing.to_config(0).validate().is_ok());
        assert_eq!(timing.worst_case_failover_ms(), 2 * 1200 + 300);
    }
}
