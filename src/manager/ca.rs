//! The cluster's certificate authority as a gRPC service on the cluster port (`NodeCA`): anyone may fetch the
//! root CA certificate (a joining node checks it against the digest in its token before trusting it); a node
//! with a valid join token gets its first certificate, with an id the manager chooses and the role the token
//! grants. The CSR only contributes its public key (`RootCa::sign_node_csr`).
//!
//! A node renews with its current certificate (same id and role, a new key); certificates last the cluster's
//! `cert_expiry_secs`. During a root CA rotation ([`super::rotation`]) certificates come from the new root
//! with the cross-signed intermediate appended, the root CA answer holds both roots (the signing one first),
//! and a node asking for it with a certificate of the new root is recorded as rotated. Must not: log a token or a key, let the caller choose its node id or role, sign without a
//! valid token or certificate, or renew a removed node.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tonic::{Request, Response, Status};

use crate::api::dispatcher::{self as pb, node_ca_server::NodeCa};
use crate::manager::controlapi::open_tokens;
use crate::manager::proposer::Proposer;
use crate::pki::{Authority, JoinToken, NodeCertSpec, NodeRole, PkiError, SharedAuthority};
use crate::secrets::DataKey;
use crate::store::Store;
use crate::transport::PeerInfo;
use crate::util::{IdSource, RandomIds};

/// The CA service of a manager.
pub struct CaService {
    store: Store,
    proposer: Proposer,
    key: DataKey,
    ca: SharedAuthority,
}

impl CaService {
    /// A CA service signing with `ca` (swapped during a rotation), checking tokens kept (sealed with `key`) in
    /// `store`'s cluster object, recording rotated nodes through `proposer`.
    pub fn new(store: Store, proposer: Proposer, key: DataKey, ca: SharedAuthority) -> Self {
        CaService {
            store,
            proposer,
            key,
            ca,
        }
    }

    fn authority(&self) -> Arc<Authority> {
        Authority::current(&self.ca)
    }

    /// The role `token` grants, or the refusal the joining node sees.
    fn role_for(&self, token: &str) -> Result<NodeRole, Status> {
        let token =
            JoinToken::from_str(token).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let cluster = self
            .store
            .view(|s| s.cluster().cloned())
            .ok_or_else(|| Status::unavailable("the cluster is not initialized yet"))?;
        let tokens = open_tokens(&self.key, &cluster).map_err(Status::from)?;
        tokens.role_for(&token).map_err(|e| match e {
            PkiError::TokenForOtherCa { .. } | PkiError::InvalidTokenSecret => {
                Status::permission_denied(e.to_string())
            }
            e => Status::invalid_argument(e.to_string()),
        })
    }
}

impl CaService {
    /// The lifetime of the certificates issued now.
    fn validity(&self) -> Duration {
        self.store.view(|s| s.cert_lifetime())
    }
}

fn addr(req: &tonic::Extensions) -> String {
    req.get::<PeerInfo>()
        .map(|p| p.addr.to_string())
        .unwrap_or_else(|| "?".into())
}

#[tonic::async_trait]
impl NodeCa for CaService {
    async fn get_root_ca_certificate(
        &self,
        request: Request<pb::RootCaRequest>,
    ) -> Result<Response<pb::RootCaResponse>, Status> {
        let authority = self.authority();
        // a node asking with a certificate of the new root has rotated
        if let Some(PeerInfo {
            identity: Some(id),
            cert: Some(cert),
            ..
        }) = request.extensions().get::<PeerInfo>()
        {
            let node = id.node_id.clone();
            if authority.is_rotating()
                && authority.signed_it(cert)
                && self.store.view(|s| super::rotation::needs_record(s, &node))
            {
                let (store, proposer) = (self.store.clone(), self.proposer.clone());
                tokio::spawn(async move {
                    super::rotation::record_rotated(&store, &proposer, &node).await
                });
            }
        }
        Ok(Response::new(pb::RootCaResponse {
            cert_pem: authority.bundle_pem().to_string(),
        }))
    }

    async fn issue_node_certificate(
        &self,
        request: Request<pb::IssueCertificateRequest>,
    ) -> Result<Response<pb::IssueCertificateResponse>, Status> {
        let from = addr(request.extensions());
        let req = request.into_inner();
        let role = match self.role_for(&req.token) {
            Ok(role) => role,
            Err(status) => {
                tracing::warn!(%from, "join refused: {}", status.message());
                return Err(status);
            }
        };
        let node_id = RandomIds.next_id();
        let spec = NodeCertSpec::new(node_id.clone(), role).with_validity(self.validity());
        let cert_pem = self
            .authority()
            .sign_node_csr(&req.csr_pem, &spec, SystemTime::now())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        tracing::info!(%from, node = %node_id, %role, "issued a certificate to a joining node");
        Ok(Response::new(pb::IssueCertificateResponse {
            node_id,
            cert_pem,
            role: role.to_string(),
        }))
    }

    async fn renew_node_certificate(
        &self,
        request: Request<pb::RenewCertificateRequest>,
    ) -> Result<Response<pb::IssueCertificateResponse>, Status> {
        let identity = request
            .extensions()
            .get::<PeerInfo>()
            .and_then(|p| p.identity.clone())
            .ok_or_else(|| {
                Status::unauthenticated("renewing needs the node's current certificate")
            })?;
        if identity.role == NodeRole::Client {
            return Err(Status::permission_denied(
                "client certificates are not renewed: issue a new one with swarmctl swarm ca --issue-client",
            ));
        }
        if self.store.view(|s| s.is_removed(&identity.node_id)) {
            return Err(Status::permission_denied(format!(
                "node {} was removed from the cluster: its certificate is not renewed",
                identity.node_id
            )));
        }
        let req = request.into_inner();
        // the role is the managers' (`node promote` / `node demote`), not the old certificate's
        let role = self
            .store
            .view(|s| s.node(&identity.node_id).map(|n| n.spec.role))
            .map(|r| match r {
                crate::model::NodeRole::Manager => NodeRole::Manager,
                crate::model::NodeRole::Worker => NodeRole::Worker,
            })
            .unwrap_or(identity.role);
        let spec = NodeCertSpec::new(identity.node_id.clone(), role).with_validity(self.validity());
        let cert_pem = self
            .authority()
            .sign_node_csr(&req.csr_pem, &spec, SystemTime::now())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        tracing::debug!(node = %identity.node_id, "renewed a node certificate");
        Ok(Response::new(pb::IssueCertificateResponse {
            node_id: identity.node_id,
            cert_pem,
            role: role.to_string(),
        }))
    }
}
