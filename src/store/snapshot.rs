//! Snapshots of the whole `ClusterState`: the format-version byte, then postcard of every table (indexes are
//! derived and rebuilt on restore). Raft snapshots and `restore` go through here.
//!
//! Must not: hold plaintext secrets (the store never has any: secret data arrives encrypted), or change the
//! field order of the snapshot structs without bumping `FORMAT_VERSION`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::ops::{decode, encode, CodecError};
use super::state::ClusterState;
use crate::model::{Cluster, Config, Network, Node, RestartHistory, Secret, Service, Stack, Task};

/// The encoding side of a snapshot (borrows the tables).
#[derive(Serialize)]
struct SnapshotRef<'a> {
    applied_index: u64,
    services: &'a BTreeMap<String, Service>,
    tasks: &'a BTreeMap<String, Task>,
    nodes: &'a BTreeMap<String, Node>,
    secrets: &'a BTreeMap<String, Secret>,
    configs: &'a BTreeMap<String, Config>,
    networks: &'a BTreeMap<String, Network>,
    stacks: &'a BTreeMap<String, Stack>,
    restart_histories: &'a BTreeMap<String, RestartHistory>,
    clusters: &'a BTreeMap<String, Cluster>,
}

/// The decoding side of a snapshot (same fields, same order).
#[derive(Deserialize)]
struct SnapshotOwned {
    applied_index: u64,
    services: BTreeMap<String, Service>,
    tasks: BTreeMap<String, Task>,
    nodes: BTreeMap<String, Node>,
    secrets: BTreeMap<String, Secret>,
    configs: BTreeMap<String, Config>,
    networks: BTreeMap<String, Network>,
    stacks: BTreeMap<String, Stack>,
    restart_histories: BTreeMap<String, RestartHistory>,
    clusters: BTreeMap<String, Cluster>,
}

impl ClusterState {
    /// Serializes the whole state (format version byte + postcard).
    pub fn to_snapshot(&self) -> Result<Vec<u8>, CodecError> {
        encode(
            "snapshot",
            &SnapshotRef {
                applied_index: self.applied_index,
                services: &self.services,
                tasks: &self.tasks,
                nodes: &self.nodes,
                secrets: &self.secrets,
                configs: &self.configs,
                networks: &self.networks,
                stacks: &self.stacks,
                restart_histories: &self.restart_histories,
                clusters: &self.clusters,
            },
        )
    }

    /// Rebuilds a state from [`ClusterState::to_snapshot`] bytes, indexes included.
    pub fn from_snapshot(bytes: &[u8]) -> Result<ClusterState, CodecError> {
        let s: SnapshotOwned = decode("snapshot", bytes)?;
        let mut state = ClusterState {
            applied_index: s.applied_index,
            services: s.services,
            tasks: s.tasks,
            nodes: s.nodes,
            secrets: s.secrets,
            configs: s.configs,
            networks: s.networks,
            stacks: s.stacks,
            restart_histories: s.restart_histories,
            clusters: s.clusters,
            idx: Default::default(),
        };
        state.rebuild_indexes();
        Ok(state)
    }
}
