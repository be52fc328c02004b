//! The cluster's history members, held by the metadata group: registered (`cluster init`,
//! `cluster add-node`), draining (`cluster drain`), drained (by the placement driver once the
//! node holds no replica).

use chronicle_proto::chronicle::history::v1::{self as cmd, command_result};
use chronicle_proto::chronicle::persistence::v1::{ClusterMember, MemberState};
use chronicle_storage::ShardBatch;
use chronicle_types::ApiError;

use super::ApplyResult;

/// Fewest active history nodes: each shard has three voters on distinct nodes.
pub const MIN_ACTIVE_MEMBERS: usize = 3;

pub fn update(
    batch: &mut ShardBatch,
    c: cmd::UpdateClusterMember,
) -> ApplyResult<command_result::Result> {
    let wanted = c
        .member
        .ok_or_else(|| ApiError::invalid_argument("the member is missing"))?;
    if wanted.node_id == 0 {
        return Err(ApiError::invalid_argument("node ID 0 is not a node").into());
    }
    let state = MemberState::try_from(wanted.state).unwrap_or(MemberState::Unspecified);
    let mut members = batch.cluster_members()?;
    let id = wanted.node_id;
    let existing = members.members.iter().position(|m| m.node_id == id);
    let current = existing.map(|i| {
        MemberState::try_from(members.members[i].state).unwrap_or(MemberState::Unspecified)
    });
    let mut replaced = false;
    if c.replaces != 0
        && c.replaces != id
        && state == MemberState::Active
        && let Some(old) = members.members.iter_mut().find(|m| m.node_id == c.replaces)
        && old.state == MemberState::Active as i32
    {
        old.state = MemberState::Draining as i32;
        replaced = true;
    }
    match (state, current) {
        (MemberState::Active, None) => {
            if wanted.raft_addr.is_empty() {
                return Err(ApiError::invalid_argument("the member's address is missing").into());
            }
            members.members.push(ClusterMember {
                node_id: id,
                raft_addr: wanted.raft_addr,
                state: MemberState::Active as i32,
            });
        }
        (MemberState::Active, Some(MemberState::Active)) if !replaced => {
            return Ok(super::ok());
        }
        (MemberState::Active, Some(MemberState::Active)) => {}
        (MemberState::Active, Some(_)) => {
            return Err(ApiError::failed_precondition(format!(
                "node {id} was drained from this cluster and a node ID is never reused: start \
                 the node with a fresh data directory and add that"
            ))
            .into());
        }
        (MemberState::Draining, None) | (MemberState::Drained, None) => {
            return Err(ApiError::new(
                tonic::Code::NotFound,
                format!("node {id} is not a member of this cluster"),
            )
            .into());
        }
        (MemberState::Draining, Some(MemberState::Draining | MemberState::Drained)) => {
            return Ok(super::ok());
        }
        (MemberState::Draining, Some(_)) => {
            let active = members
                .members
                .iter()
                .filter(|m| m.state == MemberState::Active as i32)
                .count();
            if active <= MIN_ACTIVE_MEMBERS {
                return Err(ApiError::failed_precondition(format!(
                    "draining node {id} would leave {} active history nodes, and each shard \
                     needs {MIN_ACTIVE_MEMBERS} on distinct nodes: add a node first \
                     (chronicle cluster add-node)",
                    active - 1
                ))
                .into());
            }
            if let Some(i) = existing {
                members.members[i].state = MemberState::Draining as i32;
            }
        }
        (MemberState::Drained, Some(MemberState::Drained)) => return Ok(super::ok()),
        (MemberState::Drained, Some(MemberState::Draining)) => {
            if let Some(i) = existing {
                members.members[i].state = MemberState::Drained as i32;
            }
        }
        (MemberState::Drained, Some(_)) => {
            return Err(ApiError::failed_precondition(format!(
                "node {id} is not draining: drain it first"
            ))
            .into());
        }
        (MemberState::Unspecified, _) => {
            return Err(ApiError::invalid_argument("the member's state is missing").into());
        }
    }
    batch.put_cluster_members(&members);
    Ok(super::ok())
}
