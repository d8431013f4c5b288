//! Cluster requests: `swarm update` changes the cluster object's settings (limits, history retention). The
//! ceilings the settings may not pass are checked here and again by the store's apply.
//!
//! Must not: change the store but by proposal.

use super::error::ApiError;
use super::ControlApi;
use crate::api::control;
use crate::api::to_json;
use crate::model::limits::CEILING_TASK_HISTORY;
use crate::store::Op;

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
    s.limits
        .check_ceilings()
        .map_err(|e| ApiError::Invalid(e.to_string()))?;
    if updated != cluster {
        api.propose(vec![Op::UpdateCluster {
            cluster: updated,
            expected_version: cluster.meta.version,
        }])
        .await?;
    }
    let now = api.store.view(|s| s.cluster().cloned());
    Ok(control::JsonObject {
        json: now.map(|c| to_json(&c)).unwrap_or_default(),
    })
}
