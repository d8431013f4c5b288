//! `swarm ca [--rotate]`: the root CA certificate that signs now and the progress of a rotation; `--rotate`
//! starts one by writing the new root (its key sealed) into the cluster object ([`crate::manager::rotation`]
//! does the rest, on every manager).
//!
//! Must not: return or log the CA key.

use super::error::ApiError;
use super::ControlApi;
use crate::api::control;
use crate::manager::rotation;
use crate::model::NodeState;
use crate::pki::Authority;
use crate::store::Op;

fn state_name(s: NodeState) -> &'static str {
    match s {
        NodeState::Unknown => "unknown",
        NodeState::Down => "down",
        NodeState::Ready => "ready",
        NodeState::Disconnected => "disconnected",
    }
}

/// `swarm ca`: the signing root and the rotation's progress; with `rotate`, a rotation is started first.
pub async fn root_ca(
    api: &ControlApi,
    req: control::RootCaRequest,
) -> Result<control::RootCaResponse, ApiError> {
    let shared = api
        .ca
        .as_ref()
        .ok_or_else(|| ApiError::Precondition("this node holds no CA".into()))?;
    if req.rotate {
        let cluster = api
            .store
            .view(|s| s.cluster().cloned())
            .ok_or_else(|| ApiError::Unavailable("the cluster object is not created yet".into()))?;
        if let Some(p) = api.store.view(rotation::progress).filter(|p| !p.done) {
            return Err(ApiError::Precondition(format!(
                "a root CA rotation is already under way ({}/{} nodes rotated): wait for it to finish \
                 (`swarmctl swarm ca` shows its progress; `swarmctl node rm` a node that is down for good)",
                p.rotated, p.total
            )));
        }
        let current = Authority::current(shared);
        let started =
            rotation::start(&current, &api.key, api.now()).map_err(ApiError::Precondition)?;
        let mut updated = cluster.clone();
        updated.ca_rotation = Some(started);
        api.propose(vec![Op::UpdateCluster {
            cluster: updated,
            expected_version: cluster.meta.version,
        }])
        .await?;
        tracing::info!("root CA rotation started");
    }
    let progress = api.store.view(rotation::progress);
    let rotating = progress.as_ref().is_some_and(|p| !p.done);
    // the certificate the cluster object names while the node's own authority catches up
    let cert_pem = api
        .store
        .view(|s| {
            s.cluster()
                .and_then(|c| c.ca_rotation.as_ref())
                .map(|r| r.new_cert_pem.clone())
        })
        .unwrap_or_else(|| Authority::current(shared).signer().cert_pem().to_string());
    let (rotated, total, pending) = match progress {
        Some(p) => (p.rotated as u64, p.total as u64, p.pending),
        None => (0, 0, Vec::new()),
    };
    Ok(control::RootCaResponse {
        cert_pem,
        rotating,
        rotated,
        total,
        pending: pending
            .into_iter()
            .map(|(id, hostname, state)| control::PendingNode {
                id,
                hostname,
                state: state_name(state).into(),
            })
            .collect(),
    })
}
