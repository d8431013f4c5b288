//! The store's write vocabulary: `Op` (one change to one object, carrying the version it was computed from),
//! `Batch` (one Raft entry: ops plus the proposer's time, applied all or nothing), what apply answers
//! (`ApplyResponse`, `Rejection`) and what it announces (`Event`, `Commit`), with their versioned encodings.
//!
//! Must not: apply anything (that is `apply`), generate ids or read a clock: the proposer chooses both and
//! puts them in the ops and the batch. Encodings are postcard behind a format-version byte; new `Op`
//! variants go at the end so old entries keep decoding.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::kind::ObjectKind;
use crate::model::{
    Cluster, Config, Network, Node, RestartHistory, RestartKey, Secret, Service, Stack, Task,
    TaskStateError,
};

/// The format version byte that opens every encoded batch, response and snapshot. Version 2: `Stack.history`
/// (postcard is not self-describing, so an added field is a new version; version 1 data is refused, not misread).
/// Version 3: the fields added in this round: `Stack.source` (a GitOps watcher's source and sync state), and the
/// network fields (`Network.allocation`, `NetworkSpec.ingress`, `Task.attachments`, `Service.virtual_ips`, the
/// cluster's default address pool).
pub const FORMAT_VERSION: u8 = 3;

/// One change to one object. Creates carry the whole object with its id chosen by the proposer; updates and
/// deletes carry `expected_version`, the `meta.version` the change was computed from: if the stored object
/// has moved on, the whole batch is rejected and the proposer recomputes (DESIGN invariant 3).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// Create a service (its id and name must be unused).
    CreateService(Service),
    /// Replace a service.
    UpdateService {
        /// The new service (same id).
        service: Service,
        /// The version it was computed from.
        expected_version: u64,
    },
    /// Delete a service.
    DeleteService {
        /// Service id.
        id: String,
        /// The version the delete was decided on.
        expected_version: u64,
    },
    /// Create a task.
    CreateTask(Task),
    /// Replace a task; its desired state and observed state may not move backwards.
    UpdateTask {
        /// The new task (same id).
        task: Task,
        /// The version it was computed from.
        expected_version: u64,
    },
    /// Delete a task (the reaper, once it is terminal and beyond the retention limit).
    DeleteTask {
        /// Task id.
        id: String,
    },
    /// Register a node.
    CreateNode(Node),
    /// Replace a node.
    UpdateNode {
        /// The new node (same id).
        node: Node,
        /// The version it was computed from.
        expected_version: u64,
    },
    /// Remove a node.
    DeleteNode {
        /// Node id.
        id: String,
        /// The version the delete was decided on.
        expected_version: u64,
    },
    /// Create a secret (data already encrypted by the proposer).
    CreateSecret(Secret),
    /// Replace a secret.
    UpdateSecret {
        /// The new secret (same id).
        secret: Secret,
        /// The version it was computed from.
        expected_version: u64,
    },
    /// Delete a secret.
    DeleteSecret {
        /// Secret id.
        id: String,
        /// The version the delete was decided on.
        expected_version: u64,
    },
    /// Create a config.
    CreateConfig(Config),
    /// Replace a config.
    UpdateConfig {
        /// The new config (same id).
        config: Config,
        /// The version it was computed from.
        expected_version: u64,
    },
    /// Delete a config.
    DeleteConfig {
        /// Config id.
        id: String,
        /// The version the delete was decided on.
        expected_version: u64,
    },
    /// Create a network.
    CreateNetwork(Network),
    /// Replace a network.
    UpdateNetwork {
        /// The new network (same id).
        network: Network,
        /// The version it was computed from.
        expected_version: u64,
    },
    /// Delete a network.
    DeleteNetwork {
        /// Network id.
        id: String,
        /// The version the delete was decided on.
        expected_version: u64,
    },
    /// Create a stack (its name must be unused).
    CreateStack(Stack),
    /// Replace a stack (a redeploy).
    UpdateStack {
        /// The new stack (same name).
        stack: Stack,
        /// The version it was computed from.
        expected_version: u64,
    },
    /// Delete a stack.
    DeleteStack {
        /// Stack name.
        name: String,
        /// The version the delete was decided on.
        expected_version: u64,
    },
    /// Create the cluster object (once).
    CreateCluster(Cluster),
    /// Replace the cluster object.
    UpdateCluster {
        /// The new cluster object (same id).
        cluster: Cluster,
        /// The version it was computed from.
        expected_version: u64,
    },
    /// Start the restart history of a slot or node.
    CreateRestartHistory(RestartHistory),
    /// Replace a restart history.
    UpdateRestartHistory {
        /// The new history (same key).
        history: RestartHistory,
        /// The version it was computed from.
        expected_version: u64,
    },
    /// Delete a restart history (its service is gone).
    DeleteRestartHistory {
        /// Which slot or node.
        key: RestartKey,
        /// The version the delete was decided on.
        expected_version: u64,
    },
}

/// One Raft entry: ops applied in order, all or none (DESIGN invariant 6). Later ops see the effects of
/// earlier ones, so an op on an object changed earlier in the same batch expects the batch's log index.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    /// The changes, in order.
    pub ops: Vec<Op>,
    /// The proposer's time (unix millis); becomes `updated_at` (and `created_at`) of what the batch touches.
    pub time: u64,
}

/// Why a batch was not applied.
#[derive(Clone, Debug, PartialEq, Eq, Error, Serialize, Deserialize)]
pub enum Rejection {
    /// An update or delete names an object that does not exist.
    #[error("{kind} {id} not found")]
    NotFound {
        /// Object kind.
        kind: ObjectKind,
        /// Object id (or name, for stacks).
        id: String,
    },
    /// A create names an object that already exists.
    #[error("{kind} {id} already exists")]
    AlreadyExists {
        /// Object kind.
        kind: ObjectKind,
        /// Object id (or name, for stacks).
        id: String,
    },
    /// The op was computed from an older (or newer) version than the stored one: recompute it.
    #[error("{kind} {id} is at version {actual}, the change was computed from version {expected}")]
    VersionMismatch {
        /// Object kind.
        kind: ObjectKind,
        /// Object id.
        id: String,
        /// The version the op carried.
        expected: u64,
        /// The stored version.
        actual: u64,
    },
    /// The name is taken by another object of the same kind.
    #[error("{kind} name {name} is already used by {existing_id}")]
    NameConflict {
        /// Object kind.
        kind: ObjectKind,
        /// The contested name.
        name: String,
        /// The object that has it.
        existing_id: String,
    },
    /// A task update would move its desired or observed state backwards.
    #[error("task {id}: {error}")]
    TaskStateBackwards {
        /// Task id.
        id: String,
        /// The refused move.
        error: TaskStateError,
    },
    /// An update tries to change a field that is fixed at creation (a task's service or slot).
    #[error("{kind} {id}: {field} cannot change")]
    Immutable {
        /// Object kind.
        kind: ObjectKind,
        /// Object id.
        id: String,
        /// The field.
        field: String,
    },
    /// The entry's log index is not after the last applied one.
    #[error("log index {index} is not after the last applied index {applied}")]
    IndexNotAfter {
        /// The entry's index.
        index: u64,
        /// The last applied index.
        applied: u64,
    },
    /// A node removed with `node rm` tries to come back under its old id.
    #[error("node {id} was removed from the cluster: join it again with a token")]
    NodeRemoved {
        /// The node id.
        id: String,
    },
    /// The object asks for more than the cluster's limits allow.
    #[error("{kind} {name}: {error}")]
    OverLimit {
        /// Object kind.
        kind: ObjectKind,
        /// Its name (or id, for objects without one).
        name: String,
        /// What is over which limit.
        error: String,
    },
    /// The entry could not be decoded.
    #[error("malformed entry: {reason}")]
    Malformed {
        /// The decoder's complaint.
        reason: String,
    },
    /// An address on a network is already held by a live task or a VIP (IPAM's invariant).
    #[error("address {addr} on network {network_id} is already held by {holder}")]
    AddressInUse {
        /// The network.
        network_id: String,
        /// The address.
        addr: String,
        /// Who has it (`task ID`, `the VIP of service ID`).
        holder: String,
    },
    /// A network's allocation is invalid or collides with another network's (overlapping subnet, same VNI),
    /// or an address does not parse.
    #[error("network {name}: {reason}")]
    NetworkConflict {
        /// The network (or the object whose address is wrong).
        name: String,
        /// What collides.
        reason: String,
    },
}

/// A rejected batch: which op (if the entry decoded at all) and why. Nothing of the batch was applied.
#[derive(Clone, Debug, PartialEq, Eq, Error, Serialize, Deserialize)]
#[error("batch at log index {index} rejected{}: {reason}", op.map(|i| format!(" at op {i}")).unwrap_or_default())]
pub struct BatchRejected {
    /// The entry's log index.
    pub index: u64,
    /// The position of the offending op in the batch.
    pub op: Option<usize>,
    /// Why.
    pub reason: Rejection,
}

/// A batch that was applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// The entry's log index (now every touched object's `meta.version`).
    pub index: u64,
    /// How many objects changed.
    pub changes: usize,
}

/// What apply answers the proposer, for each entry.
pub type ApplyResponse = Result<Applied, BatchRejected>;

/// One object change, announced after apply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// The object was created.
    Created {
        /// Object kind.
        kind: ObjectKind,
        /// Object id (or name, for stacks).
        id: String,
    },
    /// The object was replaced.
    Updated {
        /// Object kind.
        kind: ObjectKind,
        /// Object id.
        id: String,
    },
    /// The object was deleted.
    Deleted {
        /// Object kind.
        kind: ObjectKind,
        /// Object id.
        id: String,
    },
}

impl Event {
    /// The kind of the changed object.
    pub fn kind(&self) -> ObjectKind {
        match self {
            Event::Created { kind, .. }
            | Event::Updated { kind, .. }
            | Event::Deleted { kind, .. } => *kind,
        }
    }

    /// The id (or stack name) of the changed object.
    pub fn id(&self) -> &str {
        match self {
            Event::Created { id, .. } | Event::Updated { id, .. } | Event::Deleted { id, .. } => id,
        }
    }
}

/// The events of one applied batch, in op order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    /// The entry's log index.
    pub index: u64,
    /// What changed.
    pub events: Vec<Event>,
    /// The keys it touched (objects, and what their index entries hang off). Not part of any encoding.
    #[serde(skip)]
    pub touched: std::sync::Arc<super::touched::Touched>,
}

/// A payload that could not be decoded.
#[derive(Debug, Error)]
pub enum CodecError {
    /// No bytes at all.
    #[error("empty {what}")]
    Empty {
        /// What was being decoded.
        what: &'static str,
    },
    /// A format version this build does not know.
    #[error("{what} has format version {version}, this build reads version {FORMAT_VERSION}")]
    UnsupportedVersion {
        /// What was being decoded.
        what: &'static str,
        /// The version byte found.
        version: u8,
    },
    /// The bytes do not decode.
    #[error("cannot decode {what}: {source}")]
    Decode {
        /// What was being decoded.
        what: &'static str,
        /// The decoder's error.
        source: postcard::Error,
    },
    /// The value does not encode (should not happen for store types).
    #[error("cannot encode {what}: {source}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// The encoder's error.
        source: postcard::Error,
    },
}

/// Encodes `value` as the format-version byte followed by postcard.
pub(crate) fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, CodecError> {
    postcard::to_extend(value, vec![FORMAT_VERSION])
        .map_err(|source| CodecError::Encode { what, source })
}

/// Decodes what [`encode`] wrote, refusing unknown format versions.
pub(crate) fn decode<T: DeserializeOwned>(
    what: &'static str,
    bytes: &[u8],
) -> Result<T, CodecError> {
    match bytes.split_first() {
        None => Err(CodecError::Empty { what }),
        Some((&FORMAT_VERSION, rest)) => {
            postcard::from_bytes(rest).map_err(|source| CodecError::Decode { what, source })
        }
        Some((&version, _)) => Err(CodecError::UnsupportedVersion { what, version }),
    }
}

impl Batch {
    /// The Raft entry bytes for this batch.
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        encode("batch", self)
    }

    /// Decodes Raft entry bytes.
    pub fn decode(bytes: &[u8]) -> Result<Batch, CodecError> {
        decode("batch", bytes)
    }
}

/// Encodes an apply response (what the state machine hands back to the proposer).
pub fn encode_response(response: &ApplyResponse) -> Result<Vec<u8>, CodecError> {
    encode("apply response", response)
}

/// Decodes an apply response.
pub fn decode_response(bytes: &[u8]) -> Result<ApplyResponse, CodecError> {
    decode("apply response", bytes)
}
