//! Which history nodes are alive, as the metadata group's leader sees them, and declaring the
//! ones gone for too long DEAD.
//!
//! Only the metadata leader (which runs the placement driver) watches. Every second it asks each
//! member that is neither drained nor dead for `AdminApi.DescribeNode` over the same internal
//! listener that carries the node's Raft traffic: a node answers only while its process runs and
//! its listener is reachable from the leader. A member that has not answered for longer than the
//! dead-node timeout (`--dead-node-timeout`, default 5 minutes, like the few minutes of
//! Temporal's, TiKV's and CockroachDB's store-down thresholds; a restart or a short partition is
//! ridden out by Raft alone) is recorded DEAD in the metadata group, and the placement driver
//! then moves its replicas to the active nodes.
//!
//! The clocks start when this node gains the metadata leadership (and when a member is first
//! seen), never from an earlier leader's view: a new leader waits a full timeout before it
//! declares anyone dead, so a leadership change can delay a declaration but never hasten it.
//! A node is not declared dead when that would leave fewer active nodes than a shard has
//! voters (the apply refuses it): its groups keep a quorum of the others and it is warned about.
//!
//! DEAD is final for the node ID. When a dead node answers again it is listed in
//! [`Liveness::returned`], and the driver tells it to drop every replica it still holds (it
//! stops campaigning in groups that moved on without it); it can serve again only from a fresh
//! data directory, as a new node (`cluster add-node`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chronicle_history::HistoryEngine;
use chronicle_proto::chronicle::admin::v1::{self as apb, admin_api_client::AdminApiClient};
use chronicle_proto::chronicle::persistence::v1::{ClusterMember, MemberState};
use tokio::time::Instant;

/// How often the leader asks every member.
const PING_INTERVAL: Duration = Duration::from_secs(1);
/// How long one answer may take: a node slower than this counts as not answering this round.
const PING_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the same "cannot be declared dead" warning is repeated.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// What the leader learned from its pings, shared with the placement driver.
#[derive(Default)]
pub struct Liveness {
    /// Dead members that answer again: their leftover replicas must be dropped.
    returned: BTreeSet<u64>,
}

impl Liveness {
    /// Dead members answering again, for the placement driver.
    pub fn returned(&self) -> BTreeSet<u64> {
        self.returned.clone()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn state(m: &ClusterMember) -> MemberState {
    MemberState::try_from(m.state).unwrap_or_default()
}

/// Whether node `id` answers behind `channel` within [`PING_TIMEOUT`]. Another node answering
/// at its address (a wiped node back with a new ID) is not the member answering.
async fn answers(channel: tonic::transport::Channel, id: u64) -> bool {
    let mut request = tonic::Request::new(apb::DescribeNodeRequest::default());
    request.set_timeout(PING_TIMEOUT);
    let mut client = AdminApiClient::new(channel);
    let call = client.describe_node(request);
    matches!(tokio::time::timeout(PING_TIMEOUT, call).await, Ok(Ok(info)) if info.get_ref().node_id == id)
}

/// Watches the members until the engine shuts down; returns what the driver reads.
pub fn spawn(engine: &Arc<HistoryEngine>, dead_after: Duration) -> Arc<Mutex<Liveness>> {
    let shared = Arc::new(Mutex::new(Liveness::default()));
    let out = shared.clone();
    let weak = Arc::downgrade(engine);
    tokio::spawn(async move {
        // Per member: when it last answered (or when this node started watching it).
        let mut last_heard: BTreeMap<u64, Instant> = BTreeMap::new();
        let mut last_warned: BTreeMap<u64, Instant> = BTreeMap::new();
        // One channel per address, kept: it reconnects by itself after a failure.
        let mut channels: BTreeMap<String, tonic::transport::Channel> = BTreeMap::new();
        loop {
            tokio::time::sleep(PING_INTERVAL).await;
            let Some(engine) = weak.upgrade() else {
                return;
            };
            if engine.is_shut_down() {
                return;
            }
            if !engine.leads_metadata() {
                // Another node watches; if this one leads again, its clocks start over.
                last_heard.clear();
                lock(&shared).returned.clear();
                continue;
            }
            let Ok(members) = engine.member_records() else {
                continue;
            };
            let me = engine.node_id();
            let watched: Vec<&ClusterMember> = members
                .iter()
                .filter(|m| m.node_id != me && state(m) != MemberState::Drained)
                .collect();
            let mut pings = tokio::task::JoinSet::new();
            for m in &watched {
                let channel = match channels.get(&m.raft_addr) {
                    Some(channel) => channel.clone(),
                    None => match chronicle_cluster::grpc::lazy_channel(&m.raft_addr) {
                        Ok(channel) => {
                            channels.insert(m.raft_addr.clone(), channel.clone());
                            channel
                        }
                        Err(_) => continue,
                    },
                };
                let id = m.node_id;
                pings.spawn(async move { (id, answers(channel, id).await) });
            }
            let mut answered = BTreeSet::new();
            while let Some(done) = pings.join_next().await {
                if let Ok((id, true)) = done {
                    answered.insert(id);
                }
            }
            // Still the leader after the round: a leader cut off from the others would find
            // every node silent, and must not act on that.
            if !engine.leads_metadata() {
                last_heard.clear();
                continue;
            }
            let now = Instant::now();
            last_heard.retain(|id, _| watched.iter().any(|m| m.node_id == *id));
            let mut returned = BTreeSet::new();
            for m in &watched {
                let id = m.node_id;
                let heard = last_heard.entry(id).or_insert(now);
                if answered.contains(&id) {
                    if state(m) == MemberState::Dead {
                        returned.insert(id);
                    }
                    *heard = now;
                    continue;
                }
                let silent = now.duration_since(*heard);
                if state(m) == MemberState::Dead || silent < dead_after {
                    continue;
                }
                declare_dead(&engine, m, silent, dead_after, &mut last_warned).await;
            }
            let mut shared = lock(&shared);
            for id in returned.difference(&shared.returned) {
                tracing::warn!(
                    node = id,
                    "dead node answers again: it is told to drop the replicas it still holds; \
                     to serve again it must be restarted on a fresh data directory and added \
                     as a new node (chronicle cluster add-node)"
                );
            }
            shared.returned = returned;
        }
    });
    out
}

async fn declare_dead(
    engine: &HistoryEngine,
    member: &ClusterMember,
    silent: Duration,
    dead_after: Duration,
    last_warned: &mut BTreeMap<u64, Instant>,
) {
    let id = member.node_id;
    let dead = ClusterMember {
        state: MemberState::Dead as i32,
        ..member.clone()
    };
    match engine.update_member(dead, 0).await {
        Ok(()) => tracing::warn!(
            node = id,
            addr = %member.raft_addr,
            silent_secs = silent.as_secs(),
            dead_node_timeout_secs = dead_after.as_secs(),
            "history node declared dead: unreachable for longer than the dead-node timeout; \
             its replicas move to the active nodes"
        ),
        Err(e) => {
            let due = last_warned
                .get(&id)
                .is_none_or(|at| at.elapsed() >= WARN_EVERY);
            if due {
                last_warned.insert(id, Instant::now());
                tracing::warn!(
                    node = id,
                    addr = %member.raft_addr,
                    silent_secs = silent.as_secs(),
                    error = %e.message,
                    "history node unreachable past the dead-node timeout but not declared dead"
                );
            }
        }
    }
}
