//! Autolock requests: `swarm update --autolock` seals a new unlock key into the cluster object (or clears it),
//! `swarm unlock-key [--rotate]` shows it or replaces it. Each answers once this manager's key files are wrapped
//! as the cluster object says (the node's autolock loop does the wrapping), so a key shown is a key that works.
//!
//! Must not: log an unlock key, or return it to anyone but the admin (the unix socket, or a client
//! certificate over TCP).

use std::time::Duration;

use super::error::ApiError;
use super::ControlApi;
use crate::api::control;
use crate::model::{Cluster, SecretData};
use crate::secrets::lock::UnlockKey;
use crate::secrets::DataKey;

/// The unlock key sealed in `cluster` (`None`: autolock is off).
pub fn open_unlock_key(key: &DataKey, cluster: &Cluster) -> Result<Option<UnlockKey>, String> {
    if cluster.unlock_key.0.is_empty() {
        return Ok(None);
    }
    let bytes = key
        .open(&cluster.unlock_key.0)
        .map_err(|e| format!("cannot open the cluster's unlock key: {e}"))?;
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|_| "the cluster's unlock key is malformed".to_string())?;
    Ok(Some(UnlockKey::from_bytes(bytes)))
}

/// Turns autolock on (a new key, unless there is one) or off in `cluster`.
pub(super) fn set_autolock(key: &DataKey, cluster: &mut Cluster, on: bool) {
    match (on, cluster.unlock_key.0.is_empty()) {
        (true, true) => {
            cluster.unlock_key = SecretData(key.seal(UnlockKey::generate().as_bytes()));
        }
        (false, false) => cluster.unlock_key = SecretData::default(),
        _ => {}
    }
}

/// Waits (a few seconds at most) until this manager's key files are wrapped with `desired`.
pub(super) async fn wait_on_disk(
    api: &ControlApi,
    desired: Option<&UnlockKey>,
) -> Result<(), ApiError> {
    let Some(lock) = api.lock.as_ref() else {
        return Ok(());
    };
    for _ in 0..100 {
        if lock.read().unwrap_or_else(|p| p.into_inner()).as_ref() == desired {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(ApiError::Unavailable(
        "the cluster's autolock setting changed, but this manager's key files are not re-wrapped yet: see \
         swarmd's log, and run `swarmctl swarm unlock-key` again"
            .into(),
    ))
}

/// `swarm unlock-key [--rotate]`.
pub async fn unlock_key(
    api: &ControlApi,
    req: control::UnlockKeyRequest,
) -> Result<control::UnlockKeyResponse, ApiError> {
    for _ in 0..3 {
        let cluster = api
            .store
            .view(|s| s.cluster().cloned())
            .ok_or_else(|| ApiError::Unavailable("the cluster object is not created yet".into()))?;
        let Some(current) = open_unlock_key(&api.key, &cluster).map_err(ApiError::Precondition)?
        else {
            return Err(ApiError::Precondition(
                "autolock is not enabled on this swarm: turn it on with `swarmctl swarm update --autolock=true`"
                    .into(),
            ));
        };
        if !req.rotate {
            wait_on_disk(api, Some(&current)).await?;
            return Ok(control::UnlockKeyResponse {
                key: current.to_text(),
            });
        }
        let new = UnlockKey::generate();
        let mut updated = cluster.clone();
        updated.unlock_key = SecretData(api.key.seal(new.as_bytes()));
        if !super::try_update_cluster(api, &cluster, updated).await? {
            continue;
        }
        tracing::info!("the unlock key was rotated");
        wait_on_disk(api, Some(&new)).await?;
        return Ok(control::UnlockKeyResponse { key: new.to_text() });
    }
    Err(ApiError::Conflict(
        "the cluster object kept changing: try again".into(),
    ))
}
