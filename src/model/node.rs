//! Nodes: what a machine says about itself (description), what the operator wants of it (spec: role,
//! availability, labels), what the managers observe (status) and, for managers, their Raft standing.
//!
//! Must not: do I/O or read a clock (heartbeat times are passed in by the dispatcher).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::cluster::Meta;

/// A machine in the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// Node id (from its certificate).
    pub id: String,
    /// Version and timestamps, set by the store on apply.
    pub meta: Meta,
    /// What the node reports about itself.
    pub description: NodeDescription,
    /// What the operator wants of the node.
    pub spec: NodeSpec,
    /// What the managers observe.
    pub status: NodeStatus,
    /// Raft standing, for managers only.
    pub manager_status: Option<ManagerStatus>,
}

/// What a node reports about itself when it registers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeDescription {
    /// Host name.
    pub hostname: String,
    /// Operating system and architecture.
    pub platform: Platform,
    /// Capacity available to tasks.
    pub resources: NodeResources,
    /// Labels of the engine (`engine.labels.*` in constraints).
    pub engine_labels: BTreeMap<String, String>,
}

/// Operating system and architecture (`linux`, `x86_64`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// Operating system (`linux`).
    pub os: String,
    /// Architecture (`x86_64`, `aarch64`).
    pub arch: String,
}

/// A node's capacity.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeResources {
    /// CPU in billionths of a CPU.
    pub nano_cpus: u64,
    /// Memory in bytes.
    pub memory_bytes: u64,
}

/// What the operator wants of a node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSpec {
    /// Manager or worker.
    pub role: NodeRole,
    /// Whether the scheduler may place tasks here.
    pub availability: NodeAvailability,
    /// Node labels (`node.labels.*` in constraints).
    pub labels: BTreeMap<String, String>,
}

/// A node's role.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeRole {
    /// Takes part in Raft and may run the control plane.
    Manager,
    /// Runs tasks only.
    #[default]
    Worker,
}

/// Whether the scheduler may use a node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeAvailability {
    /// New tasks may be placed here.
    #[default]
    Active,
    /// No new tasks; existing tasks keep running.
    Pause,
    /// No tasks: existing ones are moved elsewhere.
    Drain,
}

impl NodeAvailability {
    /// Every availability, in the order the CLI lists them.
    pub const ALL: [NodeAvailability; 3] = [
        NodeAvailability::Active,
        NodeAvailability::Pause,
        NodeAvailability::Drain,
    ];

    /// The name users type (`active`, `pause`, `drain`), as in `node update --availability`.
    pub fn name(self) -> &'static str {
        match self {
            NodeAvailability::Active => "active",
            NodeAvailability::Pause => "pause",
            NodeAvailability::Drain => "drain",
        }
    }

    /// The name as `node ls` shows it, with a capital first letter (`Active`).
    pub fn title(self) -> &'static str {
        match self {
            NodeAvailability::Active => "Active",
            NodeAvailability::Pause => "Pause",
            NodeAvailability::Drain => "Drain",
        }
    }
}

/// A word that is not an availability.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AvailabilityError(pub String);

impl std::fmt::Display for AvailabilityError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "invalid availability {:?}: use active, pause or drain",
            self.0
        )
    }
}

impl std::error::Error for AvailabilityError {}

impl std::str::FromStr for NodeAvailability {
    type Err = AvailabilityError;

    /// Exactly one of the [`NodeAvailability::name`]s (lower case, as docker).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NodeAvailability::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| AvailabilityError(s.to_string()))
    }
}

/// What the managers observe of a node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// Up, down or unknown.
    pub state: NodeState,
    /// The address the node was last seen from.
    pub addr: String,
    /// Why the node is in this state.
    pub message: String,
    /// When the last heartbeat arrived (unix millis, chosen by the dispatcher).
    pub last_heartbeat: u64,
}

/// A node's observed state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeState {
    /// Not yet heard from (e.g. after a leader change).
    #[default]
    Unknown,
    /// Missed its heartbeats; its tasks are considered lost.
    Down,
    /// Heartbeating and accepting work.
    Ready,
    /// Closed its session cleanly.
    Disconnected,
}

/// The Raft id of a manager that joined (the founding manager is 1): derived from its node id, so any manager
/// can tell which Raft member a manager certificate belongs to. Never 0 or 1.
pub fn raft_id_for(node_id: &str) -> u64 {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(node_id.as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(bytes) >> 1).max(2)
}

/// A manager's Raft standing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagerStatus {
    /// Whether it is the current leader.
    pub leader: bool,
    /// Whether the leader can reach it.
    pub reachability: Reachability,
    /// Its Raft address.
    pub addr: String,
    /// Its id in the Raft group (kept in the store; `leader` and `reachability` are filled in when read).
    #[serde(default)]
    pub raft_id: u64,
}

/// Whether a manager is reachable from the leader.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reachability {
    /// Not known yet.
    #[default]
    Unknown,
    /// The leader cannot reach it.
    Unreachable,
    /// The leader reaches it.
    Reachable,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn availability_names_parse_back_and_wire_form_is_unchanged() {
        for a in NodeAvailability::ALL {
            assert_eq!(a.name().parse::<NodeAvailability>(), Ok(a));
            assert_eq!(a.title().to_lowercase(), a.name());
            // the JSON form stays the variant name
            assert_eq!(
                serde_json::to_string(&a).unwrap(),
                format!("\"{}\"", a.title())
            );
        }
        let err = "Drain".parse::<NodeAvailability>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid availability \"Drain\": use active, pause or drain"
        );
        assert!("".parse::<NodeAvailability>().is_err());
    }
}
