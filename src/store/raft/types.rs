//! The openraft type configuration: opaque command bytes in, opaque response bytes out, `u64` node ids
//! and a node record carrying the advertise address. Crate-private except `NodeInfo`: no openraft
//! type leaves `store::raft`.

use std::fmt;
use std::io::Cursor;

use serde::{Deserialize, Serialize};

/// A Raft node id.
pub type NodeId = u64;

/// What the cluster knows about a Raft member: where to reach it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The address other managers dial to reach this node's Raft endpoint.
    pub addr: String,
}

impl fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.addr)
    }
}

/// One command as it travels through the log: bytes the state machine alone understands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RaftRequest(pub(crate) Vec<u8>);

/// What applying one entry returned: bytes the state machine alone understands (empty for
/// blank and membership entries).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RaftResponse(pub(crate) Vec<u8>);

openraft::declare_raft_types!(
    /// The type configuration our Raft runs with.
    pub(crate) TypeConfig:
        D = RaftRequest,
        R = RaftResponse,
        NodeId = NodeId,
        Node = NodeInfo,
        SnapshotData = Cursor<Vec<u8>>,
);

/// A log entry as openraft sees it.
pub(crate) type Entry = openraft::Entry<TypeConfig>;
/// A log position (term, leader, index).
pub(crate) type LogId = openraft::LogId<NodeId>;
/// Openraft's storage error for our config.
pub(crate) type StorageError = openraft::StorageError<NodeId>;
/// The membership a snapshot or the state machine carries.
pub(crate) type StoredMembership = openraft::StoredMembership<NodeId, NodeInfo>;
/// Snapshot metadata for our config.
pub(crate) type SnapshotMeta = openraft::SnapshotMeta<NodeId, NodeInfo>;
/// The Raft handle for our config.
pub(crate) type Raft = openraft::Raft<TypeConfig>;
