//! Cluster requests: `swarm update` changes the cluster object's settings (limits, history retention; the
//! ceilings the settings may not pass are checked here and again by the store's apply); `swarm join-token`
//! shows or rotates a join token. The tokens live in the cluster object sealed with the data key
//! ([`seal_tokens`]); they are opened only here, for the admin on the local socket.
//!
//! Must not: change the store but by proposal, return the sealed tokens in a cluster object, or log a token.

use super::error::ApiError;
use super::ControlApi;
use crate::api::control;
use crate::api::to_json;
use crate::model::limits::CEILING_TASK_HISTORY;

/// The longest node certificate lifetime a cluster may set (the root CA's own lifetime).
const CEILING_CERT_EXPIRY_SECS: u64 = 20 * 365 * 24 * 60 * 60;
use crate::model::{Cluster, SecretData};
use crate::pki::{JoinTokens, NodeRole};
use crate::secrets::DataKey;
use crate::store::Op;

/// `tokens` sealed for the cluster object.
pub fn seal_tokens(key: &DataKey, tokens: &JoinTokens) -> SecretData {
    let json = serde_json::to_vec(tokens).unwrap_or_default();
    SecretData(key.seal(&json))
}

/// The tokens of `cluster`, opened.
pub fn open_tokens(key: &DataKey, cluster: &Cluster) -> Result<JoinTokens, ApiError> {
    if cluster.join_tokens.0.is_empty() {
        return Err(ApiError::Unavailable(
            "the cluster has no join tokens yet: try again in a moment".into(),
        ));
    }
    let json = key.open(&cluster.join_tokens.0).map_err(|e| {
        ApiError::Precondition(format!("cannot open the cluster's join tokens: {e}"))
    })?;
    serde_json::from_slice(&json)
        .map_err(|e| ApiError::Precondition(format!("malformed join tokens in the store: {e}")))
}

/// A cluster object as shown to users: without the sealed tokens, CA key and unlock key.
pub(super) fn public(cluster: &Cluster) -> Cluster {
    let mut c = Cluster {
        join_tokens: SecretData::default(),
        unlock_key: SecretData::default(),
        ..cluster.clone()
    };
    if let Some(r) = c.ca_rotation.as_mut() {
        r.new_key = SecretData::default();
    }
    c
}

/// `swarm ca --issue-client NAME`: a key and a client certificate (CN `client-NAME`, OU `swarm-client`) for
/// swarmctl on another machine, valid for the cluster's certificate lifetime.
pub fn issue_client(
    api: &ControlApi,
    req: control::ClientCertRequest,
) -> Result<control::ClientCertResponse, ApiError> {
    crate::manager::rules::check_object_name(&req.name)
        .map_err(|e| ApiError::Invalid(e.to_string()))?;
    let ca = api
        .ca
        .as_ref()
        .map(crate::pki::Authority::current)
        .ok_or_else(|| ApiError::Precondition("this node holds no CA".into()))?;
    let lifetime = api.store.view(|s| s.cert_lifetime());
    let id = format!("client-{}", req.name);
    let fail = |e: crate::pki::PkiError| ApiError::Precondition(e.to_string());
    let key = crate::pki::NodeKey::generate().map_err(fail)?;
    let spec = crate::pki::NodeCertSpec::new(id.clone(), NodeRole::Client).with_validity(lifetime);
    let cert_pem = ca
        .sign_node_csr(
            &key.csr_pem(&id).map_err(fail)?,
            &spec,
            std::time::SystemTime::now(),
        )
        .map_err(fail)?;
    Ok(control::ClientCertResponse {
        cert_pem,
        key_pem: key.to_pem(),
        ca_pem: ca.bundle_pem().to_string(),
    })
}

/// `swarm join-token [--rotate] worker|manager`.
pub async fn join_token(
    api: &ControlApi,
    req: control::JoinTokenRequest,
) -> Result<control::JoinTokenResponse, ApiError> {
    let role = match req.role.as_str() {
        "worker" => NodeRole::Worker,
        "manager" => NodeRole::Manager,
        other => {
            return Err(ApiError::Invalid(format!(
                "unknown role {other:?}: expected worker or manager"
            )))
        }
    };
    for _ in 0..3 {
        let cluster = api
            .store
            .view(|s| s.cluster().cloned())
            .ok_or_else(|| ApiError::Unavailable("the cluster object is not created yet".into()))?;
        let mut tokens = open_tokens(&api.key, &cluster)?;
        if req.rotate {
            tokens.rotate(role, &mut rand::rng());
            let updated = Cluster {
                join_tokens: seal_tokens(&api.key, &tokens),
                ..cluster.clone()
            };
            if !super::try_update_cluster(api, &cluster, updated).await? {
                continue;
            }
        }
        return Ok(control::JoinTokenResponse {
            token: tokens.token(role).to_string(),
            join_addr: api.join_addr.clone(),
        });
    }
    Err(ApiError::Conflict(
        "the cluster object kept changing: try again".into(),
    ))
}

/// `swarm update`: the cluster object with the requested settings changed.
pub async fn update(
    api: &ControlApi,
    req: control::ClusterUpdateRequest,
) -> Result<control::JsonObject, ApiError> {
    let cluster = api
        .store
        .view(|s| s.cluster().cloned())
        .ok_or_else(|| ApiError::Unavailable("the cluster object is not created yet".into()))?;
    let mut updated = cluster.clone();
    let s = &mut updated.settings;
    if let Some(n) = req.max_replicas {
        s.limits.max_replicas = n;
    }
    if let Some(n) = req.max_services_per_stack {
        s.limits.max_services_per_stack = n;
    }
    if let Some(n) = req.stack_history {
        s.limits.stack_history = n;
    }
    if let Some(n) = req.task_history_retention_limit {
        if n > CEILING_TASK_HISTORY {
            return Err(ApiError::Invalid(format!(
                "--task-history-limit {n} is over the limit of {CEILING_TASK_HISTORY}"
            )));
        }
        s.task_history_retention_limit = n;
    }
    if let Some(ms) = req.cert_expiry_ms {
        let secs = ms / 1000;
        if !(1..=CEILING_CERT_EXPIRY_SECS).contains(&secs) {
            return Err(ApiError::Invalid(format!(
                "--cert-expiry must be between 1s and 20 years (got {ms} ms)"
            )));
        }
        s.cert_expiry_secs = secs;
    }
    s.limits
        .check_ceilings()
        .map_err(|e| ApiError::Invalid(e.to_string()))?;
    if let Some(on) = req.autolock {
        super::lock::set_autolock(&api.key, &mut updated, on);
    }
    if updated != cluster {
        let relock = updated.unlock_key != cluster.unlock_key;
        let desired =
            super::lock::open_unlock_key(&api.key, &updated).map_err(ApiError::Precondition)?;
        api.propose(vec![Op::UpdateCluster {
            cluster: updated,
            expected_version: cluster.meta.version,
        }])
        .await?;
        if relock {
            tracing::info!(on = desired.is_some(), "autolock changed");
            super::lock::wait_on_disk(api, desired.as_ref()).await?;
        }
    }
    let now = api.store.view(|s| s.cluster().cloned());
    Ok(control::JsonObject {
        json: now.map(|c| to_json(&public(&c))).unwrap_or_default(),
    })
}
