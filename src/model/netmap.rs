//! What one node needs to know about the cluster's networks to plumb them, answer DNS and balance connections:
//! the [`NetworkMap`] the dispatcher sends a node with its assignments (built from the store by the managers,
//! applied by the node's network layer). Plain data: addresses are strings as the store keeps them (`10.0.1.5`,
//! subnets as CIDR `10.0.1.0/24`), checked where they are parsed.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

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
    /// Every task on those networks, on this node or another, with its address on each network; sorted by
    /// (network id, task id), a task once per network. Shared: the maps of a thousand nodes and the
    /// managers' copies hold one endpoint each, not a thousand.
    pub endpoints: Vec<Arc<Endpoint>>,
    /// The services with tasks on those networks (what DNS answers and the load balancer serves); sorted by
    /// service id.
    pub services: Vec<ServiceEndpoint>,
}

/// What changed from one [`NetworkMap`] to the next: what the dispatcher sends after a stream's complete map,
/// so a change of one task costs one endpoint on the wire, not the whole network's. [`NetworkMap::apply`]
/// turns the previous map into the next.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkMapDelta {
    /// The complete list of networks, when it changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networks: Option<Vec<NetworkInfo>>,
    /// The complete list of peers, when it changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peers: Option<Vec<PeerNode>>,
    /// Endpoints that are new or changed (the same network and task: replaced).
    #[serde(default)]
    pub endpoints: Vec<Arc<Endpoint>>,
    /// Endpoints gone: (network id, task id).
    #[serde(default)]
    pub removed_endpoints: Vec<(String, String)>,
    /// Services that are new or changed (the same id: replaced).
    #[serde(default)]
    pub services: Vec<ServiceEndpoint>,
    /// Ids of the services gone from the map.
    #[serde(default)]
    pub removed_services: Vec<String>,
}

impl NetworkMapDelta {
    /// Whether applying it changes nothing.
    pub fn is_empty(&self) -> bool {
        self.networks.is_none()
            && self.peers.is_none()
            && self.endpoints.is_empty()
            && self.removed_endpoints.is_empty()
            && self.services.is_empty()
            && self.removed_services.is_empty()
    }

    /// The change from `old` to `new` (both in the map's order).
    pub fn between(old: &NetworkMap, new: &NetworkMap) -> NetworkMapDelta {
        let (endpoints, removed_endpoints) =
            sorted_diff(&old.endpoints, &new.endpoints, |e| e.key());
        let (services, removed) =
            sorted_diff(&old.services, &new.services, |s| s.service_id.as_str());
        NetworkMapDelta {
            networks: (old.networks != new.networks).then(|| new.networks.clone()),
            peers: (old.peers != new.peers).then(|| new.peers.clone()),
            endpoints: endpoints.into_iter().cloned().collect(),
            removed_endpoints: removed_endpoints
                .into_iter()
                .map(|(n, t)| (n.to_owned(), t.to_owned()))
                .collect(),
            services: services.into_iter().cloned().collect(),
            removed_services: removed.into_iter().map(str::to_owned).collect(),
        }
    }
}

/// The items of `new` that are not in `old` as they are, and the keys of `old` that `new` lacks; both lists
/// sorted by `key`, which is unique in each.
pub fn sorted_diff<'a, T: PartialEq, K: Ord + Copy>(
    old: &'a [T],
    new: &'a [T],
    key: impl Fn(&'a T) -> K,
) -> (Vec<&'a T>, Vec<K>) {
    let (mut changed, mut gone) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    while i < old.len() || j < new.len() {
        match (old.get(i), new.get(j)) {
            (Some(o), Some(n)) => match key(o).cmp(&key(n)) {
                std::cmp::Ordering::Less => {
                    gone.push(key(o));
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    changed.push(n);
                    j += 1;
                }
                std::cmp::Ordering::Equal => {
                    if o != n {
                        changed.push(n);
                    }
                    i += 1;
                    j += 1;
                }
            },
            (Some(o), None) => {
                gone.push(key(o));
                i += 1;
            }
            (None, Some(n)) => {
                changed.push(n);
                j += 1;
            }
            (None, None) => break,
        }
    }
    (changed, gone)
}

/// `items` (sorted by `cmp`, unique) with `upserts` put in (replacing an item that compares equal) and the
/// items `removed` says are gone taken out, still sorted: one pass over `items`, whatever the size of the change.
pub fn merged<T>(
    items: Vec<T>,
    mut upserts: Vec<T>,
    cmp: impl Fn(&T, &T) -> std::cmp::Ordering,
    removed: impl Fn(&T) -> bool,
) -> Vec<T> {
    use std::cmp::Ordering;
    upserts.sort_by(&cmp);
    upserts.dedup_by(|a, b| cmp(a, b) == Ordering::Equal);
    let mut out = Vec::with_capacity(items.len() + upserts.len());
    let mut new = upserts.into_iter().peekable();
    for item in items {
        while new.peek().is_some_and(|n| cmp(n, &item) == Ordering::Less) {
            out.extend(new.next());
        }
        if new.peek().is_some_and(|n| cmp(n, &item) == Ordering::Equal) {
            out.extend(new.next());
            continue;
        }
        if !removed(&item) {
            out.push(item);
        }
    }
    out.extend(new);
    out
}

impl NetworkMap {
    /// Turns this map into the next one, as `delta` (made from this map) says.
    pub fn apply(&mut self, delta: NetworkMapDelta) {
        if let Some(n) = delta.networks {
            self.networks = n;
        }
        if let Some(p) = delta.peers {
            self.peers = p;
        }
        if !delta.endpoints.is_empty() || !delta.removed_endpoints.is_empty() {
            let mut gone: HashMap<String, HashSet<String>> = HashMap::new();
            for (net, task) in delta.removed_endpoints {
                gone.entry(net).or_default().insert(task);
            }
            let items = std::mem::take(&mut self.endpoints);
            self.endpoints = merged(
                items,
                delta.endpoints,
                |a, b| a.key().cmp(&b.key()),
                |e| {
                    gone.get(&e.network_id)
                        .is_some_and(|t| t.contains(&e.task_id))
                },
            );
        }
        if !delta.services.is_empty() || !delta.removed_services.is_empty() {
            let gone: HashSet<String> = delta.removed_services.into_iter().collect();
            let items = std::mem::take(&mut self.services);
            self.services = merged(
                items,
                delta.services,
                |a, b| a.service_id.cmp(&b.service_id),
                |s| gone.contains(&s.service_id),
            );
        }
    }
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

impl Endpoint {
    /// What identifies it in a map: (network id, task id).
    pub fn key(&self) -> (&str, &str) {
        (&self.network_id, &self.task_id)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(net: &str, task: &str, addr: &str) -> Arc<Endpoint> {
        Arc::new(Endpoint {
            task_id: task.into(),
            network_id: net.into(),
            address: addr.into(),
            ..Endpoint::default()
        })
    }

    fn svc(id: &str, name: &str) -> ServiceEndpoint {
        ServiceEndpoint {
            service_id: id.into(),
            name: name.into(),
            ..ServiceEndpoint::default()
        }
    }

    #[test]
    fn a_delta_turns_the_old_map_into_the_new_one_and_names_only_changes() {
        let old = NetworkMap {
            networks: vec![],
            peers: vec![],
            endpoints: vec![
                ep("a", "t1", "10.0.0.2"),
                ep("a", "t2", "10.0.0.3"),
                ep("b", "t1", "10.0.1.2"),
                ep("b", "t4", "10.0.1.4"),
            ],
            services: vec![svc("s1", "web"), svc("s2", "db")],
        };
        let new = NetworkMap {
            networks: vec![NetworkInfo {
                id: "c".into(),
                ..NetworkInfo::default()
            }],
            peers: old.peers.clone(),
            endpoints: vec![
                ep("a", "t0", "10.0.0.9"),
                ep("a", "t1", "10.0.0.2"),
                ep("a", "t2", "10.0.0.7"),
                ep("b", "t4", "10.0.1.4"),
                ep("c", "t9", "10.0.2.2"),
            ],
            services: vec![svc("s1", "www"), svc("s3", "cache")],
        };
        let d = NetworkMapDelta::between(&old, &new);
        assert!(d.peers.is_none(), "unchanged peers are not sent");
        assert_eq!(d.networks.as_deref(), Some(&new.networks[..]));
        let keys: Vec<(&str, &str)> = d.endpoints.iter().map(|e| e.key()).collect();
        assert_eq!(keys, vec![("a", "t0"), ("a", "t2"), ("c", "t9")]);
        assert_eq!(d.removed_endpoints, vec![("b".into(), "t1".into())]);
        assert_eq!(d.removed_services, vec!["s2".to_string()]);
        let mut got = old.clone();
        got.apply(d);
        assert_eq!(got, new);
        // nothing changed: an empty delta, and applying it changes nothing
        let d = NetworkMapDelta::between(&new, &new);
        assert!(d.is_empty());
        got.apply(d);
        assert_eq!(got, new);
        // what a delta says survives the wire
        let d = NetworkMapDelta::between(&new, &old);
        let wire: NetworkMapDelta =
            serde_json::from_str(&serde_json::to_string(&d).unwrap()).unwrap();
        assert_eq!(wire, d);
        got.apply(wire);
        assert_eq!(got, old);
    }
}
