//! Node requests: ls, inspect, update (availability, labels), rm (the node's id is remembered as removed, so
//! its certificate is refused from then on). Availability words are parsed by
//! `model::NodeAvailability`'s `FromStr`, the one parser the CLI uses too.
//!
//! Must not: change the store but by proposal, or touch what a node reports about itself.

use super::error::ApiError;
use super::objects::resolve_node;
use super::{json_objects, ControlApi};
use crate::api::control;
use crate::api::to_json;
use crate::model::{NodeAvailability, NodeRole, NodeSpec, NodeState};
use crate::store::Op;

/// The spec `spec` becomes with the request's availability (empty: unchanged), labels removed (each must
/// exist) and labels added.
fn updated_spec(spec: &NodeSpec, req: &control::NodeUpdateRequest) -> Result<NodeSpec, ApiError> {
    let mut new = spec.clone();
    if !req.availability.is_empty() {
        new.availability = req.availability.parse::<NodeAvailability>()?;
    }
    for k in &req.label_rm {
        if new.labels.remove(k).is_none() {
            return Err(ApiError::NotFound(format!(
                "key {k} doesn't exist in node's labels"
            )));
        }
    }
    new.labels.extend(req.label_add.clone());
    match req.role.as_str() {
        "" => {}
        "manager" => new.role = NodeRole::Manager,
        "worker" => new.role = NodeRole::Worker,
        other => {
            return Err(ApiError::Invalid(format!(
                "invalid role {other:?}: manager or worker"
            )))
        }
    }
    Ok(new)
}

/// Refuses a demotion that would leave no manager, or managers that could not form a quorum. The Raft side of a
/// role change is the leader's membership loop (`raftpeer::membership_loop`).
fn check_demotion(api: &ControlApi, node: &crate::model::Node) -> Result<(), ApiError> {
    let managers = api.store.view(|s| {
        s.nodes()
            .filter(|n| n.spec.role == NodeRole::Manager)
            .count()
    });
    if managers <= 1 {
        return Err(ApiError::Precondition(format!(
            "node {} is the last manager: promote another node first",
            node.id
        )));
    }
    let raft_id = node
        .manager_status
        .as_ref()
        .map(|m| m.raft_id)
        .unwrap_or_else(|| crate::model::raft_id_for(&node.id));
    let members = api.proposer.raft().members();
    let left: Vec<_> = members
        .iter()
        .filter(|m| m.voter && m.id != raft_id)
        .collect();
    let reachable = left.iter().filter(|m| m.reachable).count();
    if !left.is_empty() && reachable < left.len() / 2 + 1 {
        return Err(ApiError::Precondition(format!(
            "demoting {} would leave {reachable} of {} managers reachable (a quorum needs {}): bring the \
             others back first",
            node.id,
            left.len(),
            left.len() / 2 + 1
        )));
    }
    Ok(())
}

/// A manager's Raft standing now, as this node's Raft sees it: who leads, and whether the leader reaches it.
fn with_live_status(api: &ControlApi, mut node: crate::model::Node) -> crate::model::Node {
    use crate::model::Reachability;
    let raft = api.proposer.raft();
    if let Some(ms) = node.manager_status.as_mut() {
        let members = raft.members();
        ms.leader = raft.current_leader() == Some(ms.raft_id);
        ms.reachability = match members.iter().find(|m| m.id == ms.raft_id) {
            Some(m) if m.reachable => Reachability::Reachable,
            Some(_) => Reachability::Unreachable,
            None => Reachability::Unknown,
        };
        if let Some(m) = members.iter().find(|m| m.id == ms.raft_id) {
            ms.addr = m.addr.clone();
        }
    }
    node
}

/// `node ls`.
pub fn list(api: &ControlApi) -> control::JsonObjects {
    let nodes: Vec<crate::model::Node> = api.store.view(|s| s.nodes().cloned().collect());
    json_objects(nodes.into_iter().map(|n| with_live_status(api, n)))
}

/// `node inspect`.
pub fn get(api: &ControlApi, key: &str) -> Result<control::JsonObject, ApiError> {
    let node = api.store.view(|s| resolve_node(s, key).cloned())?;
    Ok(control::JsonObject {
        json: to_json(&with_live_status(api, node)),
    })
}

/// `node update`.
pub async fn update(
    api: &ControlApi,
    req: control::NodeUpdateRequest,
) -> Result<control::JsonObject, ApiError> {
    let node = api.store.view(|s| resolve_node(s, &req.node).cloned())?;
    let mut updated = node.clone();
    updated.spec = updated_spec(&node.spec, &req)?;
    if node.spec.role == NodeRole::Manager && updated.spec.role == NodeRole::Worker {
        check_demotion(api, &node)?;
    }
    if updated != node {
        api.propose(vec![Op::UpdateNode {
            node: updated,
            expected_version: node.meta.version,
        }])
        .await?;
    }
    let node = api.store.view(|s| s.node(&node.id).map(to_json));
    Ok(control::JsonObject {
        json: node.unwrap_or_default(),
    })
}

/// Takes a manager out of the Raft group (leader only; the call is forwarded there); Raft refuses when the
/// managers left could not form a quorum, and says so.
async fn leave_raft(api: &ControlApi, node: &crate::model::Node) -> Result<(), ApiError> {
    let raft = api.proposer.raft();
    let raft_id = node
        .manager_status
        .as_ref()
        .map(|m| m.raft_id)
        .unwrap_or_else(|| crate::model::raft_id_for(&node.id));
    raft.remove_member(raft_id)
        .await
        .map_err(|e| ApiError::Precondition(format!("node {} is a manager: {e}", node.id)))
}

/// `node rm [--force]`: a Down node (any node with `force`) leaves the cluster; its tasks are replaced
/// elsewhere by the orchestrators. A manager leaves the Raft group first.
pub async fn remove(
    api: &ControlApi,
    req: control::NodeRemoveRequest,
) -> Result<control::Empty, ApiError> {
    let (node, cluster) = api.store.view(|s| {
        resolve_node(s, &req.node)
            .cloned()
            .map(|n| (n, s.cluster().cloned()))
    })?;
    let cluster = cluster
        .ok_or_else(|| ApiError::Unavailable("the cluster object is not created yet".into()))?;
    if node.status.state != NodeState::Down && !req.force {
        return Err(ApiError::Precondition(format!(
            "node {} is not down and can't be removed (stop it first, or use --force)",
            node.id
        )));
    }
    if node.spec.role == NodeRole::Manager {
        leave_raft(api, &node).await?;
    }
    let mut updated = cluster.clone();
    updated.removed_nodes.push(node.id.clone());
    api.propose(vec![
        Op::DeleteNode {
            id: node.id.clone(),
            expected_version: node.meta.version,
        },
        Op::UpdateCluster {
            cluster: updated,
            expected_version: cluster.meta.version,
        },
    ])
    .await?;
    Ok(control::Empty {})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(availability: &str, add: &[(&str, &str)], rm: &[&str]) -> control::NodeUpdateRequest {
        control::NodeUpdateRequest {
            node: "n1".into(),
            availability: availability.into(),
            label_add: add
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            label_rm: rm.iter().map(|k| k.to_string()).collect(),
            role: String::new(),
        }
    }

    #[test]
    fn availability_and_labels_change_as_asked() {
        let mut spec = NodeSpec::default();
        spec.labels.insert("zone".into(), "a".into());
        let new = updated_spec(&spec, &req("drain", &[("disk", "ssd")], &["zone"])).unwrap();
        assert_eq!(new.availability, NodeAvailability::Drain);
        assert_eq!(new.labels.len(), 1);
        assert_eq!(new.labels["disk"], "ssd");
        assert_eq!(updated_spec(&spec, &req("", &[], &[])).unwrap(), spec);
        assert_eq!(
            updated_spec(&spec, &req("off", &[], &[])),
            Err(ApiError::Invalid(
                "invalid availability \"off\": use active, pause or drain".into()
            ))
        );
        assert_eq!(
            updated_spec(&spec, &req("", &[], &["rack"])),
            Err(ApiError::NotFound(
                "key rack doesn't exist in node's labels".into()
            ))
        );
    }
}
