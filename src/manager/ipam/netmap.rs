//! The [`NetworkMap`] of one node, built from the store: every network a task of the node attaches to (and
//! ingress when any service publishes a port through the mesh), the other nodes with tasks on those networks
//! (their advertise addresses; on ingress every other node), every task on them with its address and whether it may receive traffic, and the
//! services on them with their VIPs, aliases and ports. The dispatcher sends it with the node's assignments.
//!
//! Pure: `network_map(&ClusterState, node_id)`; the same state always gives the same map (sorted). Built from the
//! store's indexes (the node's tasks, the addresses held on each of its networks, the services publishing
//! through the mesh), so its cost follows the node's networks, not the cluster.

use std::collections::{BTreeMap, BTreeSet};

use super::ingress;
use crate::model::netmap::{Endpoint, NetworkInfo, NetworkMap, PeerNode, ServiceEndpoint};
use crate::model::{cidr, Service, Task, TaskHealth, TaskState, STACK_NAMESPACE_LABEL};
use crate::store::ClusterState;

/// A task that a node has (or had) and that still holds its addresses.
fn placed(task: &Task) -> Option<&str> {
    let node = task.node_id.as_deref()?;
    (task.status.state >= TaskState::Assigned && !task.status.state.is_terminal()).then_some(node)
}

/// Whether `task` may receive traffic: running, healthy when it has a health check, and still wanted. A task
/// whose desired state went to shutdown is not, so it leaves the backends before its agent stops it.
pub fn ready(task: &Task) -> bool {
    task.status.state == TaskState::Running
        && task.status.health.is_none_or(|h| h == TaskHealth::Healthy)
        && task.desired_state == TaskState::Running
}

/// The host part of an advertise address (`10.0.0.5:4242` → `10.0.0.5`, `[::1]:4242` → `::1`).
fn host_of(addr: &str) -> String {
    if let Ok(sa) = addr.parse::<std::net::SocketAddr>() {
        return sa.ip().to_string();
    }
    if addr.parse::<std::net::IpAddr>().is_ok() {
        return addr.to_string();
    }
    addr.rsplit_once(':').map_or(addr, |(h, _)| h).to_string()
}

/// A service's name within its stack (`web` of `app_web`).
fn short_name(service: &Service) -> Option<String> {
    let stack = service.spec.labels.get(STACK_NAMESPACE_LABEL)?;
    service
        .spec
        .name
        .strip_prefix(&format!("{stack}_"))
        .map(str::to_owned)
}

/// The networks in node `node_id`'s map: those of its placed tasks, and ingress when the mesh is in use.
fn node_networks(state: &ClusterState, node_id: &str) -> BTreeSet<String> {
    let mut nets: BTreeSet<String> = state
        .tasks_on_node(node_id)
        .filter(|t| placed(t).is_some())
        .flat_map(|t| t.attachments.iter().map(|a| a.network_id.clone()))
        .collect();
    if let Some(ingress) = ingress(state) {
        if state.ingress_services().next().is_some() {
            nets.insert(ingress.id.clone());
        }
    }
    nets
}

/// Network `id` as a map describes it; `None` before IPAM allocated it.
fn network_info(state: &ClusterState, id: &str) -> Option<NetworkInfo> {
    let n = state.network(id)?;
    let a = n.allocation.as_ref()?;
    Some(NetworkInfo {
        id: n.id.clone(),
        name: n.spec.name.clone(),
        driver: n.spec.driver.clone(),
        subnet: a.subnet.clone(),
        gateway: a.gateway.clone(),
        vni: a.vni,
        internal: n.spec.internal,
        ingress: n.spec.ingress,
    })
}

/// The network map of node `node_id`, from the store's indexes: the node's tasks, then per network the
/// addresses held on it (live tasks and VIPs) — nothing proportional to the tasks or services elsewhere. The
/// dispatcher's [`NetmapCache`] builds it the same way, keeping the parts between changes.
pub fn network_map(state: &ClusterState, node_id: &str) -> NetworkMap {
    NetmapCache::default().network_map(state, node_id)
}

/// Task `t`'s endpoint on network `net`: while it is placed and holds an address there.
fn endpoint_of(state: &ClusterState, t: &Task, net: &str) -> Option<Endpoint> {
    let node = placed(t)?;
    let service = state.service(&t.service_id)?;
    // a task attaches to a network once
    let a = t.attachments.iter().find(|a| a.network_id == net)?;
    let address = cidr::host_of(&a.addr)?;
    Some(Endpoint {
        task_id: t.id.clone(),
        task_name: t.name(&service.spec.name),
        service_id: t.service_id.clone(),
        node_id: node.to_owned(),
        network_id: a.network_id.clone(),
        address: address.to_string(),
        ready: ready(t),
    })
}

/// What the map says of service `s` on the networks `nets`.
fn service_endpoint(state: &ClusterState, nets: &BTreeSet<&str>, s: &Service) -> ServiceEndpoint {
    ServiceEndpoint {
        service_id: s.id.clone(),
        name: s.spec.name.clone(),
        short_name: short_name(s),
        mode: s.spec.endpoint.mode,
        vips: s
            .virtual_ips
            .iter()
            .filter(|v| nets.contains(v.network_id.as_str()))
            .filter_map(|v| cidr::host_of(&v.addr).map(|a| (v.network_id.clone(), a.to_string())))
            .collect(),
        aliases: s
            .spec
            .task
            .networks
            .iter()
            .filter_map(|att| {
                let n = state.network_by_name(&att.target)?;
                nets.contains(n.id.as_str())
                    .then_some((n.id.clone(), &att.aliases))
            })
            .flat_map(|(id, aliases)| aliases.iter().map(move |al| (id.clone(), al.clone())))
            .collect(),
        ports: s.spec.endpoint.ports.clone(),
    }
}

/// The map's peers: the nodes in `peers` (with the networks they share with this node) and, since every node
/// takes part in the ingress network (each has it in its map), every other node on it: the VXLAN flooding
/// list spans them all, and a node's published-port proxy knows every other node's proxy (`netsvc::backends`:
/// a connection from a peer is served by local tasks only).
fn peer_nodes<'a>(
    state: &'a ClusterState,
    networks: &'a [NetworkInfo],
    mut peers: BTreeMap<&'a str, BTreeSet<&'a str>>,
) -> Vec<PeerNode> {
    if let Some(ingress) = networks.iter().find(|n| n.ingress) {
        for n in state.nodes().filter(|n| !n.status.addr.is_empty()) {
            peers.entry(&n.id).or_default().insert(&ingress.id);
        }
    }
    peers
        .into_iter()
        .filter_map(|(id, networks)| {
            let n = state.node(id)?;
            Some(PeerNode {
                node_id: id.to_owned(),
                addr: host_of(&n.status.addr),
                networks: networks.into_iter().map(str::to_owned).collect(),
            })
        })
        .collect()
}

#[path = "netmap_cache.rs"]
mod cache;
pub use cache::{MapParts, NetmapCache};

#[cfg(test)]
#[path = "netmap_tests.rs"]
mod tests;
