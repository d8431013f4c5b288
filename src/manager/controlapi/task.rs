//! Task requests: `service ps`/`stack ps`, tasks filtered by service, node and stack.
//!
//! Must not: change anything.

use super::error::ApiError;
use super::objects::{resolve_node, resolve_service};
use super::{json_objects, ControlApi};
use crate::api::control;
use crate::model;
use crate::store::ClusterState;

/// The tasks that pass every non-empty part of `filter`; an unknown service, node or stack is an error.
fn tasks_filtered(
    state: &ClusterState,
    filter: &control::TaskFilter,
) -> Result<Vec<model::Task>, ApiError> {
    let service_id = if filter.service.is_empty() {
        None
    } else {
        Some(resolve_service(state, &filter.service)?.id.clone())
    };
    let node_id = if filter.node.is_empty() {
        None
    } else {
        Some(resolve_node(state, &filter.node)?.id.clone())
    };
    let stack_services: Option<Vec<String>> = if filter.stack.is_empty() {
        None
    } else {
        if state.stack(&filter.stack).is_none() {
            return Err(ApiError::NotFound(format!(
                "nothing found in stack: {}",
                filter.stack
            )));
        }
        Some(
            state
                .services()
                .filter(|s| s.spec.labels.get(model::STACK_NAMESPACE_LABEL) == Some(&filter.stack))
                .map(|s| s.id.clone())
                .collect(),
        )
    };
    Ok(state
        .tasks()
        .filter(|t| service_id.as_ref().is_none_or(|id| &t.service_id == id))
        .filter(|t| {
            node_id
                .as_ref()
                .is_none_or(|id| t.node_id.as_ref() == Some(id))
        })
        .filter(|t| {
            stack_services
                .as_ref()
                .is_none_or(|ids| ids.contains(&t.service_id))
        })
        .cloned()
        .collect())
}

/// `service ps`, `stack ps`, `node ps`.
pub fn list(
    api: &ControlApi,
    filter: &control::TaskFilter,
) -> Result<control::JsonObjects, ApiError> {
    let tasks = api.store.view(|s| tasks_filtered(s, filter))?;
    Ok(json_objects(tasks.into_iter()))
}
