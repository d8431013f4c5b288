//! Root CA rotation, declaratively: `swarm ca --rotate` writes a [`CaRotation`] into the cluster object (the
//! new root, its key sealed with the data key, the new root cross-signed by the old one); every manager derives
//! from it the [`Authority`] it signs and trusts with ([`desired`]); nodes renew from the new root and are
//! recorded as rotated when they present its certificate ([`record_rotated`]); once every node that is not
//! removed holds one, [`completion`] marks the rotation done and re-makes the join tokens with the new
//! digest (old tokens stop working), and the old root is trusted no more.
//!
//! Must not: touch the disk (the node's rotation loop writes the manager's `certs/ca.*`), or log a key.

use std::sync::Arc;

use crate::manager::proposer::{ProposeError, Proposer};
use crate::model::{CaRotation, Cluster, NodeState, SecretData};
use crate::pki::rotate::rotated_root;
use crate::pki::{Authority, CaDigest, JoinTokens, RootCa};
use crate::secrets::DataKey;
use crate::store::{ClusterState, Op, Store};

/// A new rotation away from `current`'s signing root, started at `now_ms`.
pub fn start(current: &Authority, key: &DataKey, now_ms: u64) -> Result<CaRotation, String> {
    let old = current.signer();
    let (new, cross) =
        rotated_root(old, std::time::SystemTime::now()).map_err(|e| e.to_string())?;
    Ok(CaRotation {
        new_cert_pem: new.cert_pem().to_string(),
        new_key: SecretData(key.seal(new.key_pem().as_bytes())),
        cross_signed_pem: cross,
        old_cert_pem: old.cert_pem().to_string(),
        rotated_nodes: Vec::new(),
        done: false,
        started_at: now_ms,
    })
}

/// The new root of `rotation`, its key opened with `key`.
pub fn new_root(rotation: &CaRotation, key: &DataKey) -> Result<RootCa, String> {
    let pem = key
        .open(&rotation.new_key.0)
        .map_err(|e| format!("cannot open the new CA key of the rotation: {e}"))?;
    let pem = String::from_utf8(pem).map_err(|_| "the new CA key is not PEM".to_string())?;
    RootCa::from_pem(&rotation.new_cert_pem, &pem).map_err(|e| e.to_string())
}

/// What a manager whose disk holds the root `disk` should sign and trust with, as the cluster object says;
/// and the root its disk must hold from now on when that is no longer `disk` (a finished rotation).
pub fn desired(
    disk: &Arc<RootCa>,
    cluster: Option<&Cluster>,
    key: &DataKey,
) -> Result<(Authority, Option<Arc<RootCa>>), String> {
    let Some(rotation) = cluster.and_then(|c| c.ca_rotation.as_ref()) else {
        return Ok((Authority::single(disk.clone()), None));
    };
    let new_digest = crate::pki::cert_der_from_pem(&rotation.new_cert_pem, "new CA certificate")
        .map(|d| CaDigest::of_der(&d))
        .map_err(|e| e.to_string())?;
    if rotation.done && new_digest == disk.digest() {
        return Ok((Authority::single(disk.clone()), None));
    }
    let new = Arc::new(new_root(rotation, key)?);
    if rotation.done {
        return Ok((Authority::single(new.clone()), Some(new)));
    }
    let auth = Authority::rotating(new, &rotation.cross_signed_pem, &rotation.old_cert_pem)
        .map_err(|e| e.to_string())?;
    Ok((auth, None))
}

/// Where a rotation is: nodes counted, nodes rotated, and the ones still to rotate (id, hostname, state).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// Nodes that are not removed.
    pub total: usize,
    /// Of them, those holding a certificate of the new root.
    pub rotated: usize,
    /// The others: (node id, hostname, state).
    pub pending: Vec<(String, String, NodeState)>,
    /// The rotation is done.
    pub done: bool,
}

/// The progress of the cluster's rotation, `None` when there never was one.
pub fn progress(state: &ClusterState) -> Option<Progress> {
    let rotation = state.cluster()?.ca_rotation.as_ref()?;
    let mut p = Progress {
        total: 0,
        rotated: 0,
        pending: Vec::new(),
        done: rotation.done,
    };
    for node in state.nodes().filter(|n| !state.is_removed(&n.id)) {
        p.total += 1;
        if rotation.done || rotation.rotated_nodes.contains(&node.id) {
            p.rotated += 1;
        } else {
            p.pending.push((
                node.id.clone(),
                node.description.hostname.clone(),
                node.status.state,
            ));
        }
    }
    Some(p)
}

/// The op that finishes the rotation once every node is rotated: done, and join tokens pinning the new root
/// (with new secrets). `None` while nodes are pending, or without a rotation under way.
pub fn completion(state: &ClusterState, key: &DataKey) -> Result<Option<Op>, String> {
    let Some(cluster) = state.cluster() else {
        return Ok(None);
    };
    let Some(rotation) = cluster.ca_rotation.as_ref().filter(|r| !r.done) else {
        return Ok(None);
    };
    match progress(state) {
        Some(p) if p.pending.is_empty() => {}
        _ => return Ok(None),
    }
    let digest = crate::pki::cert_der_from_pem(&rotation.new_cert_pem, "new CA certificate")
        .map(|d| CaDigest::of_der(&d))
        .map_err(|e| e.to_string())?;
    let mut tokens: JoinTokens = key
        .open(&cluster.join_tokens.0)
        .ok()
        .and_then(|json| serde_json::from_slice(&json).ok())
        .ok_or("cannot open the cluster's join tokens")?;
    tokens.rotate_ca(digest, &mut rand::rng());
    let json = serde_json::to_vec(&tokens).map_err(|e| e.to_string())?;
    let mut updated = cluster.clone();
    updated.join_tokens = SecretData(key.seal(&json));
    if let Some(r) = updated.ca_rotation.as_mut() {
        r.done = true;
    }
    Ok(Some(Op::UpdateCluster {
        cluster: updated,
        expected_version: cluster.meta.version,
    }))
}

/// Whether `node_id` still has to be recorded as rotated.
pub fn needs_record(state: &ClusterState, node_id: &str) -> bool {
    state
        .cluster()
        .and_then(|c| c.ca_rotation.as_ref())
        .is_some_and(|r| !r.done && !r.rotated_nodes.iter().any(|n| n == node_id))
}

/// Records that `node_id` presented a certificate of the new root (retried when the cluster object moved on).
pub async fn record_rotated(store: &Store, proposer: &Proposer, node_id: &str) {
    for _ in 0..5 {
        let Some(cluster) = store.view(|s| {
            needs_record(s, node_id)
                .then(|| s.cluster().cloned())
                .flatten()
        }) else {
            return;
        };
        let mut updated = cluster.clone();
        if let Some(r) = updated.ca_rotation.as_mut() {
            r.rotated_nodes.push(node_id.to_string());
        }
        let op = Op::UpdateCluster {
            cluster: updated,
            expected_version: cluster.meta.version,
        };
        match proposer.propose(vec![op]).await {
            Ok(_) => {
                tracing::info!(node = %node_id, "node holds a certificate of the new root CA");
                return;
            }
            Err(ProposeError::Rejected(_)) => continue,
            Err(e) => {
                tracing::debug!("cannot record a rotated node yet: {e}");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ClusterSettings;
    use crate::pki::NodeRole;

    fn cluster(key: &DataKey, ca: &RootCa) -> Cluster {
        let tokens = JoinTokens::generate(ca.digest(), &mut rand::rng());
        Cluster {
            id: "c".into(),
            meta: Default::default(),
            settings: ClusterSettings::default(),
            join_tokens: SecretData(key.seal(&serde_json::to_vec(&tokens).unwrap())),
            removed_nodes: Vec::new(),
            ca_rotation: None,
            unlock_key: Default::default(),
        }
    }

    fn state(cluster: Cluster, nodes: &[&str]) -> ClusterState {
        let mut s = ClusterState::new();
        s.clusters.insert(cluster.id.clone(), cluster);
        for id in nodes {
            let node = crate::manager::testutil::node(id);
            s.nodes.insert(node.id.clone(), node);
        }
        s
    }

    #[test]
    fn a_rotation_completes_once_every_node_is_rotated_and_remakes_the_tokens() {
        crate::pki::install_crypto_provider();
        let key = DataKey::from_bytes([7; 32]);
        let old = Arc::new(RootCa::generate("c", std::time::SystemTime::now()).unwrap());
        let mut c = cluster(&key, &old);
        let rotation = start(&Authority::single(old.clone()), &key, 1).unwrap();
        assert!(!format!("{rotation:?}").contains("PRIVATE KEY"));
        c.ca_rotation = Some(rotation.clone());
        let (auth, disk) = desired(&old, Some(&c), &key).unwrap();
        assert!(auth.is_rotating() && disk.is_none());
        assert_eq!(auth.roots().len(), 2);

        let mut s = state(c.clone(), &["a", "b"]);
        assert!(completion(&s, &key).unwrap().is_none());
        assert_eq!(progress(&s).unwrap().pending.len(), 2);
        assert!(needs_record(&s, "a"));
        c.ca_rotation.as_mut().unwrap().rotated_nodes = vec!["a".into()];
        s = state(c.clone(), &["a", "b"]);
        assert!(completion(&s, &key).unwrap().is_none());
        // b removed: the rotation finishes without it
        c.removed_nodes = vec!["b".into()];
        s = state(c.clone(), &["a", "b"]);
        let Some(Op::UpdateCluster { cluster: done, .. }) = completion(&s, &key).unwrap() else {
            panic!("no completion");
        };
        assert!(done.ca_rotation.as_ref().unwrap().done);
        let tokens: JoinTokens =
            serde_json::from_slice(&key.open(&done.join_tokens.0).unwrap()).unwrap();
        let new = new_root(&rotation, &key).unwrap();
        assert_eq!(tokens.token(NodeRole::Worker).ca_digest(), new.digest());
        // the disk must now hold the new root; once it does, nothing more to write
        let (auth, disk) = desired(&old, Some(&done), &key).unwrap();
        assert!(!auth.is_rotating());
        let disk = disk.expect("write the new root");
        assert_eq!(disk.digest(), new.digest());
        let (_, again) = desired(&disk, Some(&done), &key).unwrap();
        assert!(again.is_none());
    }
}
