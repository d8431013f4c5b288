//! Stored objects besides services, tasks and nodes: secrets, configs, networks, stacks (a server object with
//! revisions), the cluster object with its settings, and restart histories (so restart limits survive leader
//! changes). Object metadata (`Meta`) is in [`super::meta`].
//!
//! Must not: encrypt or decrypt (that is `secrets`), read a clock or generate ids (they are passed in).

use serde::{Deserialize, Serialize};

use super::objects::{FileObjectSpec, NetworkSpec};

/// `Meta` lives in [`super::meta`]; kept here so `model::cluster::Meta` still names it.
pub use super::meta::Meta;

/// A secret. The store only ever holds ciphertext in `spec.data`: the proposer encrypts before it proposes
/// (DESIGN invariant 7), so the Raft log and snapshots never contain plaintext secrets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secret {
    /// Secret id.
    pub id: String,
    /// Version and timestamps.
    pub meta: Meta,
    /// Name, labels and the encrypted data.
    pub spec: FileObjectSpec,
}

/// A config (plaintext data).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// Config id.
    pub id: String,
    /// Version and timestamps.
    pub meta: Meta,
    /// Name, labels and data.
    pub spec: FileObjectSpec,
}

/// A network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    /// Network id.
    pub id: String,
    /// Version and timestamps.
    pub meta: Meta,
    /// What was asked for.
    pub spec: NetworkSpec,
    /// What the managers' IPAM gave it (subnet, gateway, VNI); `None` until allocated.
    #[serde(default)]
    pub allocation: Option<NetworkAllocation>,
}

/// A network's allocation, chosen by the managers' IPAM (`manager::ipam`) and held unique by the store (no two
/// networks overlap or share a VNI).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkAllocation {
    /// The subnet, CIDR (`10.0.1.0/24`).
    pub subnet: String,
    /// The gateway address on it (`10.0.1.1`): the node's bridge address.
    pub gateway: String,
    /// The VXLAN network identifier (from 4096, like Swarm's).
    pub vni: u32,
    /// `swarm` (spans the cluster) or `local`.
    pub scope: String,
    /// The host offset after the last address handed out: the next search starts there, so a just-freed
    /// address is not handed out again while the subnet has others.
    #[serde(default)]
    pub next_host: u64,
}

/// A deployed stack: the files it was deployed from and the objects it owns. Keyed by name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stack {
    /// Stack (namespace) name; unique.
    pub name: String,
    /// Version and timestamps.
    pub meta: Meta,
    /// Deploy count, chosen by the proposer (1 for the first deploy).
    pub revision: u64,
    /// The stack files as deployed: (file name, content).
    pub files: Vec<(String, String)>,
    /// Services the stack owns.
    pub service_ids: Vec<String>,
    /// Secrets the stack owns.
    pub secret_ids: Vec<String>,
    /// Configs the stack owns.
    pub config_ids: Vec<String>,
    /// Networks the stack owns.
    pub network_ids: Vec<String>,
    /// The last applied deploys, oldest first (at most the cluster's `limits.stack_history`); the last one is
    /// the current.
    #[serde(default)]
    pub history: Vec<StackRevision>,
    /// Where a GitOps watcher (`stack watch`) takes this stack from and its sync state; None for a stack
    /// deployed by hand.
    #[serde(default)]
    pub source: Option<super::gitops::StackSource>,
}

/// One applied deploy of a stack: enough to show what changed and to re-apply it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackRevision {
    /// The stack's revision number.
    pub revision: u64,
    /// When it was applied (unix millis).
    pub deployed_at: u64,
    /// One line per change it made ("update service demo_web (image: web:1 → web:2)").
    pub changes: Vec<String>,
    /// The stack files as deployed: (file name, content).
    pub files: Vec<(String, String)>,
    /// JSON of the `StackSpec` deployed, secret data SEALED (never plaintext).
    pub spec_json: String,
    /// Whether the deploy pruned services the files no longer named.
    pub prune: bool,
}

/// The cluster object (one per cluster).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cluster {
    /// Cluster id.
    pub id: String,
    /// Version and timestamps.
    pub meta: Meta,
    /// Cluster-wide settings.
    pub settings: ClusterSettings,
    /// The worker and manager join tokens (`pki::JoinTokens` as JSON), SEALED with the data key like secret
    /// data; empty in clusters created before tokens were stored (the manager adds them at start).
    #[serde(default)]
    pub join_tokens: super::objects::SecretData,
    /// Ids of nodes removed with `node rm`: their certificates are refused from then on (a node must join
    /// again with a token, and gets a new id).
    #[serde(default)]
    pub removed_nodes: Vec<String>,
    /// The last root CA rotation (`swarm ca --rotate`): under way until `done`; kept after it (the new root's
    /// key, sealed, is what a manager whose disk still holds the old root restores from).
    #[serde(default)]
    pub ca_rotation: Option<CaRotation>,
    /// The autolock key (`swarm update --autolock`), SEALED with the data key; empty when autolock is off.
    #[serde(default)]
    pub unlock_key: super::objects::SecretData,
}

/// A root CA rotation, kept in the cluster object so every manager signs and trusts the same roots.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaRotation {
    /// The new root certificate (PEM).
    pub new_cert_pem: String,
    /// The new root's private key (PEM), SEALED with the data key.
    pub new_key: super::objects::SecretData,
    /// The new root's key certified by the old root (PEM): appended to certificates issued during the
    /// rotation, so peers trusting only the old root accept them.
    pub cross_signed_pem: String,
    /// The root being replaced (PEM), trusted until the rotation is done.
    pub old_cert_pem: String,
    /// Nodes seen presenting a certificate of the new root.
    pub rotated_nodes: Vec<String>,
    /// Every node holds a certificate of the new root: the old root is no longer trusted.
    pub done: bool,
    /// When the rotation started (unix millis).
    pub started_at: u64,
}

/// Cluster-wide settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterSettings {
    /// Raft entries between snapshots (default 10 000).
    pub snapshot_interval: u64,
    /// How often agents heartbeat, in milliseconds (default 5000).
    pub heartbeat_period_ms: u64,
    /// Terminated tasks kept per slot (default 5).
    pub task_history_retention_limit: u64,
    /// What a request may ask for (settings stored before limits existed read as the defaults).
    #[serde(default)]
    pub limits: super::limits::Limits,
    /// How long the node certificates the CA issues are valid, in seconds (default 90 days); nodes renew at a
    /// random point in the second half of that.
    #[serde(default = "default_cert_expiry_secs")]
    pub cert_expiry_secs: u64,
    /// The pools network subnets are allocated from (`swarmd --default-addr-pool`, CIDR; Swarm's default
    /// `10.0.0.0/8`), set when the cluster is created.
    #[serde(default = "default_addr_pool")]
    pub default_addr_pool: Vec<String>,
    /// The prefix length of each allocated subnet (`--default-addr-pool-mask-length`, default 24).
    #[serde(default = "default_addr_pool_mask_len")]
    pub default_addr_pool_mask_len: u8,
}

/// Swarm's default address pool: `10.0.0.0/8`.
pub fn default_addr_pool() -> Vec<String> {
    vec!["10.0.0.0/8".to_string()]
}

/// Swarm's default subnet size within the pool: /24.
pub fn default_addr_pool_mask_len() -> u8 {
    24
}

/// Swarm's default node certificate lifetime: 90 days.
pub fn default_cert_expiry_secs() -> u64 {
    90 * 24 * 60 * 60
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            snapshot_interval: 10_000,
            heartbeat_period_ms: 5000,
            task_history_retention_limit: 5,
            limits: Default::default(),
            cert_expiry_secs: default_cert_expiry_secs(),
            default_addr_pool: default_addr_pool(),
            default_addr_pool_mask_len: default_addr_pool_mask_len(),
        }
    }
}

/// What a restart history counts restarts of.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum RestartKey {
    /// A slot of a replicated service (or job).
    Slot {
        /// The service.
        service_id: String,
        /// The slot.
        slot: u64,
    },
    /// The task of a global service on one node.
    Node {
        /// The service.
        service_id: String,
        /// The node.
        node_id: String,
    },
}

impl RestartKey {
    /// The store key: `service/slot` or `service@node`.
    pub fn id(&self) -> String {
        match self {
            RestartKey::Slot { service_id, slot } => format!("{service_id}/{slot}"),
            RestartKey::Node {
                service_id,
                node_id,
            } => format!("{service_id}@{node_id}"),
        }
    }

    /// The service the key belongs to.
    pub fn service_id(&self) -> &str {
        match self {
            RestartKey::Slot { service_id, .. } | RestartKey::Node { service_id, .. } => service_id,
        }
    }
}

/// Recent restarts of one slot (or global task on a node), for `max_attempts` within `window`. Kept in the
/// store so the counts survive a leader change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartHistory {
    /// Which slot or node.
    pub key: RestartKey,
    /// Version and timestamps.
    pub meta: Meta,
    /// When each recent restart happened (unix millis, oldest first; the restarter trims it).
    pub restarts: Vec<u64>,
}

impl RestartHistory {
    /// Restarts at or after `since` (unix millis).
    pub fn count_since(&self, since: u64) -> usize {
        self.restarts.iter().filter(|t| **t >= since).count()
    }
}
