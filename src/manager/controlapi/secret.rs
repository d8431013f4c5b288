//! Secret requests: create (sealed before proposing), ls, inspect, rm. Names and sizes are checked by
//! `rules`, whether a secret is in use by `usage` (the rule gc keeps to as well).
//!
//! Must not: return secret data (every read is redacted), or change the store but by proposal.

use super::error::ApiError;
use super::objects::resolve_secret;
use super::{json_objects, ControlApi};
use crate::api::control;
use crate::api::to_json;
use crate::manager::rules::{check_object_name, check_secret_data};
use crate::manager::usage::{check_unused, FileKind};
use crate::model::{self, FileObjectSpec, SecretData};
use crate::store::Op;

/// A secret as shown to users: everything but the data.
fn redact(secret: &model::Secret) -> model::Secret {
    let mut s = secret.clone();
    s.spec.data = SecretData(Vec::new());
    s
}

/// `secret create`.
pub async fn create(
    api: &ControlApi,
    req: control::CreateSecretRequest,
) -> Result<control::JsonObject, ApiError> {
    check_object_name(&req.name)?;
    check_secret_data(&req.data)?;
    // any version of the name
    if api
        .store
        .view(|s| s.secrets().any(|x| x.spec.name == req.name))
    {
        return Err(ApiError::Exists(format!(
            "secret {} already exists",
            req.name
        )));
    }
    let id = api.ids().next_id();
    let secret = model::Secret {
        id: id.clone(),
        meta: model::Meta::default(),
        spec: FileObjectSpec {
            name: req.name,
            labels: req.labels.into_iter().collect(),
            data: SecretData(api.key.seal(&req.data)),
        },
    };
    api.propose(vec![Op::CreateSecret(secret)]).await?;
    let s = api
        .store
        .view(|s| s.secret(&id).map(|s| to_json(&redact(s))));
    Ok(control::JsonObject {
        json: s.unwrap_or_default(),
    })
}

/// `secret ls`.
pub fn list(api: &ControlApi) -> control::JsonObjects {
    api.store.view(|s| json_objects(s.secrets().map(redact)))
}

/// `secret inspect`.
pub fn get(api: &ControlApi, key: &str) -> Result<control::JsonObject, ApiError> {
    let secret = api.store.view(|s| resolve_secret(s, key).map(redact))?;
    Ok(control::JsonObject {
        json: to_json(&secret),
    })
}

/// `secret rm`: refused while the secret is in use.
pub async fn remove(api: &ControlApi, key: &str) -> Result<control::Empty, ApiError> {
    let secret = api.store.view(|s| {
        let secret = resolve_secret(s, key).cloned()?;
        check_unused(s, FileKind::Secret, &secret.id, &secret.spec.name)?;
        Ok::<_, ApiError>(secret)
    })?;
    api.propose(vec![Op::DeleteSecret {
        id: secret.id,
        expected_version: secret.meta.version,
    }])
    .await?;
    Ok(control::Empty {})
}
