//! The network of a group whose only member is this node. Replication RPCs are never sent in a
//! single-voter group; if openraft asks anyway, the target is reported unreachable. The cluster
//! issue adds a gRPC network from `proto/`.

use openraft::BasicNode;
use openraft::error::{InstallSnapshotError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};

use crate::ShardRaftConfig;

#[derive(Clone, Copy, Debug, Default)]
pub struct LocalOnlyNetwork;

fn unreachable<E: std::error::Error>(target: u64) -> RPCError<u64, BasicNode, E> {
    let err = std::io::Error::new(
        std::io::ErrorKind::NotConnected,
        format!("node {target}: no peers in a single-node group"),
    );
    RPCError::Unreachable(Unreachable::new(&err))
}

pub struct NoConnection {
    target: u64,
}

impl RaftNetworkFactory<ShardRaftConfig> for LocalOnlyNetwork {
    type Network = NoConnection;

    async fn new_client(&mut self, target: u64, _node: &BasicNode) -> Self::Network {
        NoConnection { target }
    }
}

impl RaftNetwork<ShardRaftConfig> for NoConnection {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<ShardRaftConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        Err(unreachable(self.target))
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<ShardRaftConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
    > {
        Err(unreachable(self.target))
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<u64>,
        _option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        Err(unreachable(self.target))
    }
}
