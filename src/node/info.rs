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
    store.view(|s| {
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
            "Leader": m.leader,
        })
    })
}
