//! The `info` document of the control API (`swarmctl info`): who this node is, the cluster's size and settings,
//! and a summary of the Raft state.
//!
//! Must not: change anything.

use std::sync::Arc;

use crate::store::raft::RaftNode;
use crate::store::Store;

/// A function answering the `info` JSON of this node, read fresh on every call.
pub fn info_fn(
    store: Store,
    raft: Arc<RaftNode>,
    node_id: String,
    cluster_id: String,
) -> Arc<dyn Fn() -> serde_json::Value + Send + Sync> {
    Arc::new(move || info(&store, &raft, &node_id, &cluster_id))
}

/// The `info` JSON of this node now.
pub fn info(store: &Store, raft: &RaftNode, node_id: &str, cluster_id: &str) -> serde_json::Value {
    let m = raft.metrics();
    let members = raft.members();
    let voters: Vec<_> = members.iter().filter(|x| x.voter).collect();
    let reachable = voters.iter().filter(|x| x.reachable).count();
    let leader = raft.current_leader();
    store.view(|s| {
        let node_of = |raft_id: u64| {
            s.nodes()
                .find(|n| n.manager_status.as_ref().is_some_and(|ms| ms.raft_id == raft_id))
                .map(|n| n.id.clone())
                .unwrap_or_default()
        };
        let raft_members: Vec<serde_json::Value> = members
            .iter()
            .map(|x| {
                serde_json::json!({
                    "NodeID": node_of(x.id),
                    "RaftID": x.id,
                    "Addr": x.addr,
                    "Voter": x.voter,
                    "Leader": Some(x.id) == leader,
                    "Reachable": x.reachable,
                })
            })
            .collect();
        let settings = s.cluster().map(|c| c.settings.clone()).unwrap_or_default();
        serde_json::json!({
            "NodeID": node_id,
            "IsManager": true,
            "ClusterID": cluster_id,
            "Managers": s.nodes().filter(|n| n.spec.role == crate::model::NodeRole::Manager).count(),
            "Nodes": s.nodes().count(),
            "SnapshotInterval": settings.snapshot_interval,
            "HeartbeatPeriodMs": settings.heartbeat_period_ms,
            "TaskHistoryRetentionLimit": settings.task_history_retention_limit,
            "Limits": settings.limits,
            "CertExpirySecs": settings.cert_expiry_secs,
            "RootRotationInProgress": s.cluster().and_then(|c| c.ca_rotation.as_ref()).is_some_and(|r| !r.done),
            "AutoLockManagers": s.cluster().is_some_and(|c| !c.unlock_key.0.is_empty()),
            "RaftLastLogIndex": m.last_log_index,
            "RaftLastApplied": m.last_applied_index,
            "RaftSnapshotIndex": m.snapshot_index,
            "Leader": leader,
            "RaftMembers": raft_members,
            "Quorum": {
                "Voters": voters.len(),
                "Reachable": reachable,
                "Need": voters.len() / 2 + 1,
            },
        })
    })
}
