//! What one node needs to know about the cluster's networks to plumb them, answer DNS and balance connections:
//! the [`NetworkMap`] the dispatcher sends a node with its assignments (built from the store by the managers,
//! applied by the node's network layer). Plain data: addresses are strings as the store keeps them (`10.0.1.5`,
//! subnets as CIDR `10.0.1.0/24`), checked where they are parsed.

use serde::{Deserialize, Serialize};

use super::service::{EndpointMode, PortConfig};

/// The network view of one node: every network a task of this node attaches to (and the ingress network when
/// any service publishes a port in ingress mode), the other nodes those networks span, the tasks on them and the
/// services reachable on them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkMap {
    /// The networks this node takes part in.
    pub networks: Vec<NetworkInfo>,
    /// The other nodes with tasks on those networks (their VXLAN underlay addresses); on the ingress network,
    /// every other node.
    pub peers: Vec<PeerNode>,
    /// Every task on those networks, on this node or another, with its address on each network.
    pub endpoints: Vec<Endpoint>,
    /// The services with tasks on those networks (what DNS answers and the load balancer serves).
    pub services: Vec<ServiceEndpoint>,
}

/// One network as a node plumbs it: a bridge, a VXLAN device with `vni` when it spans nodes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkInfo {
    /// Network id.
    pub id: String,
    /// Network name (`STACK_default`).
    pub name: String,
    /// Driver (`overlay`, `bridge` for a node-local network).
    pub driver: String,
    /// The allocated subnet, CIDR.
    pub subnet: String,
    /// The gateway address on that subnet (the node's bridge address; the tasks' default route and resolver).
    pub gateway: String,
    /// The VXLAN network identifier.
    pub vni: u32,
    /// No outside connectivity (no NAT, no default route beyond the network).
    pub internal: bool,
    /// The routing mesh's network.
    pub ingress: bool,
}

/// Another node on one or more of this node's networks.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerNode {
    /// Node id.
    pub node_id: String,
    /// Underlay address (the node's advertise address, without port).
    pub addr: String,
    /// Ids of the networks shared with this node.
    pub networks: Vec<String>,
}

/// One task's address on one network.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// Task id.
    pub task_id: String,
    /// Docker's task name (`stack_web.1.abc`), which DNS answers too.
    pub task_name: String,
    /// The task's service.
    pub service_id: String,
    /// The node running it.
    pub node_id: String,
    /// Network id.
    pub network_id: String,
    /// The task's address on that network (no prefix length).
    pub address: String,
    /// Running, and healthy when it has a health check: DNS serves it and it receives connections. A task the
    /// managers are about to stop is not ready, so it leaves the backends before it gets its stop signal.
    pub ready: bool,
}

/// A service as DNS and the load balancer see it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceEndpoint {
    /// Service id.
    pub service_id: String,
    /// Full name (`stack_web`).
    pub name: String,
    /// Name within its stack (`web`), when it belongs to one.
    pub short_name: Option<String>,
    /// VIP or DNS round robin.
    pub mode: EndpointMode,
    /// The service's virtual IP on each network it is attached to: (network id, address).
    pub vips: Vec<(String, String)>,
    /// Extra DNS names per network: (network id, alias).
    pub aliases: Vec<(String, String)>,
    /// Published ports.
    pub ports: Vec<PortConfig>,
}
