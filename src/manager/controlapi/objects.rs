//! Finding objects the way docker does: by full id, by name, or by an unambiguous id prefix.
//!
//! Must not: change anything.

use super::error::ApiError;
use crate::model::{Network, Node, Secret, Service};
use crate::store::ClusterState;

fn resolve<'a, T>(
    kind: &str,
    key: &str,
    items: Vec<&'a T>,
    id: impl Fn(&T) -> &str,
    name: impl Fn(&T) -> &str,
) -> Result<&'a T, ApiError>
where
    T: 'a,
{
    if let Some(found) = items.iter().find(|i| id(i) == key) {
        return Ok(found);
    }
    if let Some(found) = items.iter().find(|i| name(i) == key) {
        return Ok(found);
    }
    let matches: Vec<&T> = items
        .into_iter()
        .filter(|i| !key.is_empty() && id(i).starts_with(key))
        .collect();
    match matches.len() {
        1 => Ok(matches[0]),
        0 => Err(ApiError::NotFound(format!("no such {kind}: {key}"))),
        _ => Err(ApiError::Invalid(format!(
            "{kind} {key} is ambiguous ({} matches)",
            matches.len()
        ))),
    }
}

/// A service by id, name or id prefix.
pub fn resolve_service<'a>(state: &'a ClusterState, key: &str) -> Result<&'a Service, ApiError> {
    resolve(
        "service",
        key,
        state.services().collect(),
        |s| &s.id,
        |s| &s.spec.name,
    )
}

/// A node by id, hostname or id prefix.
pub fn resolve_node<'a>(state: &'a ClusterState, key: &str) -> Result<&'a Node, ApiError> {
    resolve(
        "node",
        key,
        state.nodes().collect(),
        |n| &n.id,
        |n| &n.description.hostname,
    )
}

/// A secret by id, name or id prefix.
pub fn resolve_secret<'a>(state: &'a ClusterState, key: &str) -> Result<&'a Secret, ApiError> {
    let mut secrets: Vec<&Secret> = state.secrets().collect();
    // by name: the newest version
    secrets.sort_by_key(|s| std::cmp::Reverse(crate::model::object_version(&s.spec.labels)));
    resolve("secret", key, secrets, |s| &s.id, |s| &s.spec.name)
}

/// A network by id, name or id prefix.
pub fn resolve_network<'a>(state: &'a ClusterState, key: &str) -> Result<&'a Network, ApiError> {
    resolve(
        "network",
        key,
        state.networks().collect(),
        |n| &n.id,
        |n| &n.spec.name,
    )
}
