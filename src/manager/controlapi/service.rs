//! Service requests: ls, inspect, scale, rm, update (flags), rollback. What scale may change is
//! `rules::scaled_mode`; how an update or rollback changes versions is `deploy::update_service`/`manual_rollback`.
//!
//! Must not: change the store but by proposal.

use super::error::ApiError;
use super::objects::resolve_service;
use super::{json_objects, update, ControlApi};
use crate::api::control;
use crate::api::to_json;
use crate::manager::deploy::{manual_rollback, update_service};
use crate::manager::rules::scaled_mode;
use crate::manager::specdiff::service_fields;
use crate::model::{self, Service};
use crate::store::Op;

impl ControlApi {
    fn service_by_key(&self, key: &str) -> Result<Service, ApiError> {
        self.store.view(|s| resolve_service(s, key).cloned())
    }

    /// Refuses `new`, the update of the stored `old`, when it is over the cluster's limits.
    fn check_limits(&self, old: &Service, new: &model::ServiceSpec) -> Result<(), ApiError> {
        self.store
            .view(|s| s.limits())
            .check_service(new, Some(&old.spec))
            .map_err(|e| ApiError::Invalid(format!("service {}: {e}", old.spec.name)))
    }

    /// The stored service `id` as JSON (empty when it is gone).
    fn service_json(&self, id: &str) -> String {
        self.store
            .view(|s| s.service(id).map(to_json))
            .unwrap_or_default()
    }
}

/// `service ls`, optionally of one stack.
pub fn list(api: &ControlApi, stack: &str) -> control::JsonObjects {
    api.store.view(|s| {
        json_objects(
            s.services()
                .filter(|svc| {
                    stack.is_empty()
                        || svc
                            .spec
                            .labels
                            .get(model::STACK_NAMESPACE_LABEL)
                            .map(String::as_str)
                            == Some(stack)
                })
                .cloned(),
        )
    })
}

/// `service inspect`.
pub fn get(api: &ControlApi, key: &str) -> Result<control::JsonObject, ApiError> {
    let svc = api.service_by_key(key)?;
    Ok(control::JsonObject {
        json: to_json(&svc),
    })
}

/// `service scale NAME=N`.
pub async fn scale(
    api: &ControlApi,
    req: control::ScaleRequest,
) -> Result<control::JsonObject, ApiError> {
    let svc = api.service_by_key(&req.service)?;
    let mut updated = svc.clone();
    updated.spec.mode = scaled_mode(&svc.spec, req.replicas)?;
    api.check_limits(&svc, &updated.spec)?;
    if updated.spec != svc.spec {
        api.propose(vec![Op::UpdateService {
            service: updated,
            expected_version: svc.meta.version,
        }])
        .await?;
    }
    Ok(control::JsonObject {
        json: api.service_json(&svc.id),
    })
}

/// `service rm`.
pub async fn remove(api: &ControlApi, key: &str) -> Result<control::Empty, ApiError> {
    let svc = api.service_by_key(key)?;
    api.propose(vec![Op::DeleteService {
        id: svc.id,
        expected_version: svc.meta.version,
    }])
    .await?;
    Ok(control::Empty {})
}

/// `service update` with flags.
pub async fn update(
    api: &ControlApi,
    req: control::ServiceUpdateRequest,
) -> Result<control::ServiceUpdateResponse, ApiError> {
    let svc = api.service_by_key(&req.service)?;
    let spec = update::apply_flags(&svc.spec, &req).map_err(ApiError::Invalid)?;
    api.check_limits(&svc, &spec)?;
    let mut changes = Vec::new();
    if let Some((op, fields)) = update_service(&svc, spec, api.now()) {
        api.propose(vec![op]).await?;
        changes = fields;
    }
    Ok(control::ServiceUpdateResponse {
        service_json: api.service_json(&svc.id),
        changes,
    })
}

/// `service rollback`: back to the previous spec.
pub async fn rollback(
    api: &ControlApi,
    key: &str,
) -> Result<control::ServiceUpdateResponse, ApiError> {
    let svc = api.service_by_key(key)?;
    let op = manual_rollback(&svc, api.now()).ok_or_else(|| {
        ApiError::Precondition(format!(
            "service {} has no previous spec to roll back to",
            svc.spec.name
        ))
    })?;
    let fields = match &op {
        Op::UpdateService { service, .. } => service_fields(&svc.spec, &service.spec),
        _ => Vec::new(),
    };
    api.propose(vec![op]).await?;
    Ok(control::ServiceUpdateResponse {
        service_json: api.service_json(&svc.id),
        changes: fields,
    })
}
