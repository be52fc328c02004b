//! The cluster's history members, held by the metadata group: registered (`cluster init`,
//! `cluster add-node`), draining (`cluster drain`), drained (by the placement driver once the
//! node holds no replica), dead (by the placement driver once the node has been unreachable for
//! longer than the dead-node timeout).

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
                "node {id} was drained from this cluster or declared dead, and a node ID is \
                 never reused: start the node with a fresh data directory and add that"
            ))
            .into());
        }
        (MemberState::Draining | MemberState::Drained | MemberState::Dead, None) => {
            return Err(ApiError::new(
                tonic::Code::NotFound,
                format!("node {id} is not a member of this cluster"),
            )
            .into());
        }
        (
            MemberState::Draining,
            Some(MemberState::Draining | MemberState::Drained | MemberState::Dead),
        ) => {
            return Ok(super::ok());
        }
        (MemberState::Draining, Some(_)) => {
            let active = active_count(&members);
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
        (MemberState::Dead, Some(MemberState::Dead | MemberState::Drained)) => {
            return Ok(super::ok());
        }
        (MemberState::Dead, Some(MemberState::Active)) => {
            let active = active_count(&members);
            // With fewer nodes left than a shard has voters, a replica could only be removed,
            // not moved: the node stays a member and its groups keep a quorum of the others.
            if active <= MIN_ACTIVE_MEMBERS {
                return Err(ApiError::failed_precondition(format!(
                    "declaring node {id} dead would leave {} active history nodes, and each \
                     shard needs {MIN_ACTIVE_MEMBERS} on distinct nodes: its replicas stay until \
                     it returns or a node is added",
                    active - 1
                ))
                .into());
            }
            if let Some(i) = existing {
                members.members[i].state = MemberState::Dead as i32;
            }
        }
        (MemberState::Dead, Some(_)) => {
            // A draining node that died: its replicas were leaving anyway.
            if let Some(i) = existing {
                members.members[i].state = MemberState::Dead as i32;
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

/// How many members are active (hold replicas and take new ones).
fn active_count(members: &chronicle_proto::chronicle::persistence::v1::ClusterMembers) -> usize {
    members
        .members
        .iter()
        .filter(|m| m.state == MemberState::Active as i32)
        .count()
}

#[cfg(test)]
mod tests {
    use chronicle_storage::{Db, DbOptions, ShardTables};
    use chronicle_types::shard::METADATA_GROUP;

    use super::*;

    fn set(db: &Db, id: u64, state: MemberState) -> Result<(), ApiError> {
        let mut batch = ShardBatch::new(ShardTables::new(db.clone(), METADATA_GROUP));
        let c = cmd::UpdateClusterMember {
            member: Some(ClusterMember {
                node_id: id,
                raft_addr: format!("10.0.0.{id}:7234"),
                state: state as i32,
            }),
            replaces: 0,
        };
        match update(&mut batch, c) {
            Ok(_) => {
                batch.commit().expect("commit");
                Ok(())
            }
            Err(super::super::ApplyError::Rejected(e)) => Err(e),
            Err(_) => panic!("a storage error, not a refusal"),
        }
    }

    fn states(db: &Db) -> Vec<(u64, MemberState)> {
        ShardTables::new(db.clone(), METADATA_GROUP)
            .cluster_members()
            .expect("members")
            .members
            .iter()
            .map(|m| (m.node_id, MemberState::try_from(m.state).unwrap()))
            .collect()
    }

    #[test]
    fn a_dead_node_leaves_the_active_set_for_good_and_never_below_three() {
        let dir = tempfile::tempdir().expect("dir");
        let db = Db::open(dir.path(), DbOptions::default()).expect("db");
        for id in 1..=4 {
            set(&db, id, MemberState::Active).expect("registered");
        }
        set(&db, 4, MemberState::Dead).expect("four active: one may die");
        set(&db, 4, MemberState::Dead).expect("declared again: no change");
        // Three active left: a second death would leave a shard without three nodes.
        let refused = set(&db, 3, MemberState::Dead).unwrap_err();
        assert_eq!(refused.code, tonic::Code::FailedPrecondition);
        assert!(
            refused.message.contains("would leave 2 active"),
            "{}",
            refused.message
        );
        // A dead ID is never registered again, nor drained.
        let reused = set(&db, 4, MemberState::Active).unwrap_err();
        assert!(
            reused.message.contains("never reused"),
            "{}",
            reused.message
        );
        set(&db, 4, MemberState::Draining).expect("already leaving: no change");
        assert_eq!(
            states(&db),
            vec![
                (1, MemberState::Active),
                (2, MemberState::Active),
                (3, MemberState::Active),
                (4, MemberState::Dead),
            ]
        );
        // A draining node that dies is dead (it was leaving anyway); an unknown one is not found.
        set(&db, 5, MemberState::Active).expect("registered");
        set(&db, 5, MemberState::Draining).expect("draining");
        set(&db, 5, MemberState::Dead).expect("died while draining");
        assert_eq!(states(&db)[4], (5, MemberState::Dead));
        let unknown = set(&db, 9, MemberState::Dead).unwrap_err();
        assert_eq!(unknown.code, tonic::Code::NotFound);
    }
}
