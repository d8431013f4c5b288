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
use crate::store::{AddressHolder, ClusterState, ObjectKind, Touched};

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
/// addresses held on it (live tasks and VIPs) — nothing proportional to the tasks or services elsewhere.
pub fn network_map(state: &ClusterState, node_id: &str) -> NetworkMap {
    let networks: Vec<NetworkInfo> = node_networks(state, node_id)
        .iter()
        .filter_map(|id| network_info(state, id))
        .collect();
    let nets: BTreeSet<&str> = networks.iter().map(|n| n.id.as_str()).collect();

    // who holds an address on those networks: live tasks (placed ones are endpoints) and VIPs
    let mut task_ids: BTreeSet<&str> = BTreeSet::new();
    let mut services: BTreeSet<&str> = BTreeSet::new();
    for net in &nets {
        for (_, holder) in state.addresses_on(net) {
            match holder {
                AddressHolder::Task(id) => {
                    task_ids.insert(id);
                }
                AddressHolder::Vip(id) => {
                    services.insert(id);
                }
            }
        }
    }
    let mut endpoints = Vec::new();
    let mut peers: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for t in task_ids.into_iter().filter_map(|id| state.task(id)) {
        let Some(node) = placed(t) else { continue };
        let Some(service) = state.service(&t.service_id) else {
            continue;
        };
        for a in t
            .attachments
            .iter()
            .filter(|a| nets.contains(a.network_id.as_str()))
        {
            let Some(address) = cidr::host_of(&a.addr) else {
                continue;
            };
            if node != node_id {
                peers.entry(node).or_default().insert(&a.network_id);
            }
            services.insert(&service.id);
            endpoints.push(Endpoint {
                task_id: t.id.clone(),
                task_name: t.name(&service.spec.name),
                service_id: t.service_id.clone(),
                node_id: node.to_owned(),
                network_id: a.network_id.clone(),
                address: address.to_string(),
                ready: ready(t),
            });
        }
    }
    endpoints.sort_by(|a, b| a.key().cmp(&b.key()));
    let peers = peer_nodes(state, node_id, &networks, peers);
    let services = services
        .into_iter()
        .filter_map(|id| state.service(id))
        .map(|s| service_endpoint(state, &nets, s))
        .collect();
    NetworkMap {
        networks,
        peers,
        endpoints,
        services,
    }
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
    node_id: &str,
    networks: &'a [NetworkInfo],
    mut peers: BTreeMap<&'a str, BTreeSet<&'a str>>,
) -> Vec<PeerNode> {
    if let Some(ingress) = networks.iter().find(|n| n.ingress) {
        for n in state
            .nodes()
            .filter(|n| n.id != node_id && !n.status.addr.is_empty())
        {
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

/// What one network contributes to every map that has it: its description, its placed tasks' endpoints
/// (sorted by task id, the order maps list them in within a network), the nodes those run on and the services
/// on it (tasks or a VIP). Each build has its own generation, so what a stream sent is told apart from what
/// there is now without comparing the contents.
#[derive(Debug)]
pub struct Piece {
    generation: u64,
    info: Option<NetworkInfo>,
    endpoints: Vec<Endpoint>,
    nodes: BTreeSet<String>,
    services: BTreeSet<String>,
    /// The endpoints as JSON objects joined by commas (what a complete map carries), made on first use.
    endpoints_json: std::sync::OnceLock<String>,
}

/// Generations of pieces, unique in the process (a piece of a throw-away cache is never taken for another).
static GENERATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl Piece {
    fn endpoints_json(&self) -> &str {
        self.endpoints_json.get_or_init(|| joined(&self.endpoints))
    }
}

/// The JSON texts of `items` joined by commas (the inside of a JSON array).
fn joined<T: serde::Serialize>(items: &[T]) -> String {
    let mut out = String::new();
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&crate::api::to_json(item));
    }
    out
}

fn piece(state: &ClusterState, net: &str) -> Piece {
    let mut p = Piece {
        generation: GENERATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        info: network_info(state, net),
        endpoints: Vec::new(),
        nodes: BTreeSet::new(),
        services: BTreeSet::new(),
        endpoints_json: std::sync::OnceLock::new(),
    };
    let mut task_ids: BTreeSet<&str> = BTreeSet::new();
    for (_, holder) in state.addresses_on(net) {
        match holder {
            AddressHolder::Task(id) => {
                task_ids.insert(id);
            }
            AddressHolder::Vip(id) => {
                p.services.insert(id.clone());
            }
        }
    }
    for t in task_ids.into_iter().filter_map(|id| state.task(id)) {
        let Some(node) = placed(t) else { continue };
        let Some(service) = state.service(&t.service_id) else {
            continue;
        };
        // a task attaches to a network once
        let Some(a) = t.attachments.iter().find(|a| a.network_id == net) else {
            continue;
        };
        let Some(address) = cidr::host_of(&a.addr) else {
            continue;
        };
        p.nodes.insert(node.to_owned());
        p.services.insert(service.id.clone());
        p.endpoints.push(Endpoint {
            task_id: t.id.clone(),
            task_name: t.name(&service.spec.name),
            service_id: t.service_id.clone(),
            node_id: node.to_owned(),
            network_id: a.network_id.clone(),
            address: address.to_string(),
            ready: ready(t),
        });
    }
    p
}

/// A node's network map as the dispatcher keeps it for a stream: the small parts as they are, the endpoints
/// as the shared pieces of its networks (so a thousand streams hold one copy of a network's endpoints).
#[derive(Debug, Default, Clone)]
pub struct MapParts {
    networks: Vec<NetworkInfo>,
    peers: Vec<PeerNode>,
    services: Vec<ServiceEndpoint>,
    pieces: Vec<std::sync::Arc<Piece>>,
}

impl MapParts {
    /// The map these parts make.
    pub fn to_map(&self) -> NetworkMap {
        NetworkMap {
            networks: self.networks.clone(),
            peers: self.peers.clone(),
            endpoints: self
                .pieces
                .iter()
                .flat_map(|p| p.endpoints.iter().cloned())
                .collect(),
            services: self.services.clone(),
        }
    }

    /// The complete map as JSON (a [`NetworkMap`]), the endpoints copied from the pieces' JSON.
    pub fn to_json(&self) -> String {
        let mut out = String::from("{\"networks\":");
        out.push_str(&crate::api::to_json(&self.networks));
        out.push_str(",\"peers\":");
        out.push_str(&crate::api::to_json(&self.peers));
        out.push_str(",\"endpoints\":[");
        let mut first = true;
        for p in &self.pieces {
            let json = p.endpoints_json();
            if json.is_empty() {
                continue;
            }
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str(json);
        }
        out.push_str("],\"services\":");
        out.push_str(&crate::api::to_json(&self.services));
        out.push('}');
        out
    }

    /// Whether both hold the same map, without comparing endpoints (a piece is the same when it is the same
    /// build).
    pub fn same_as(&self, other: &MapParts) -> bool {
        self.networks == other.networks
            && self.peers == other.peers
            && self.services == other.services
            && self.pieces.len() == other.pieces.len()
            && self
                .pieces
                .iter()
                .zip(&other.pieces)
                .all(|(a, b)| a.generation == b.generation)
    }
}

/// How one network's endpoints changed from one build to the next, as JSON fragments ready to be put into
/// every delta that carries it (computed once, whatever the number of nodes on the network).
#[derive(Debug, Default)]
struct PieceChange {
    /// New or changed endpoints, JSON objects joined by commas.
    endpoints: String,
    /// Gone endpoints, `["network","task"]` joined by commas.
    removed: String,
}

/// The dispatcher's cache of what each network contributes to the maps: a network's part is built once and
/// reused by every node's map while nothing it is made of changed — its tasks (any change of a task holding or
/// having held an address on it), the services of those tasks and its VIPs, the network itself — as the
/// store's touched keys tell ([`NetmapCache::sync`]). A change in one network rebuilds that network's part
/// only, and how its endpoints changed is worked out once for every stream that sent the previous build
/// ([`NetmapCache::delta_json`]). [`NetmapCache::network_map`] equals [`network_map`].
#[derive(Debug, Default)]
pub struct NetmapCache {
    seen: Option<u64>,
    pieces: std::collections::HashMap<String, std::sync::Arc<Piece>>,
    /// (generation sent, generation now) → the change between them.
    changes: std::collections::HashMap<(u64, u64), std::sync::Arc<PieceChange>>,
}

impl NetmapCache {
    /// The store version the cache is in step with (None: never synced).
    pub fn seen(&self) -> Option<u64> {
        self.seen
    }

    /// Brings the cache in step with `state` at store `version`, given what changed since [`NetmapCache::seen`]
    /// (`Store::touched_since`; `None`: unknown, everything is dropped).
    pub fn sync(&mut self, state: &ClusterState, version: u64, touched: Option<&Touched>) {
        if self.seen == Some(version) {
            return;
        }
        self.seen = Some(version);
        let Some(t) = touched.filter(|_| !self.pieces.is_empty()) else {
            self.pieces.clear();
            self.changes.clear();
            return;
        };
        let mut stale: BTreeSet<&str> = t.address_networks.iter().map(String::as_str).collect();
        stale.extend(t.of(ObjectKind::Network));
        // a service's name is in its tasks' endpoints: the networks its tasks are on
        for sid in t.of(ObjectKind::Service) {
            for task in state.tasks_of_service(sid) {
                stale.extend(task.attachments.iter().map(|a| a.network_id.as_str()));
            }
        }
        for net in stale {
            self.pieces.remove(net);
        }
        // changes into a build that is gone are asked for no more
        let current: BTreeSet<u64> = self.pieces.values().map(|p| p.generation).collect();
        self.changes.retain(|(_, now), _| current.contains(now));
    }

    fn piece(&mut self, state: &ClusterState, net: &str) -> std::sync::Arc<Piece> {
        if let Some(p) = self.pieces.get(net) {
            return p.clone();
        }
        let p = std::sync::Arc::new(piece(state, net));
        self.pieces.insert(net.to_owned(), p.clone());
        p
    }

    /// The parts of node `node_id`'s map (call [`NetmapCache::sync`] first, under the same view of the state).
    pub fn parts(&mut self, state: &ClusterState, node_id: &str) -> MapParts {
        let pieces: Vec<std::sync::Arc<Piece>> = node_networks(state, node_id)
            .iter()
            .map(|id| self.piece(state, id))
            .filter(|p| p.info.is_some())
            .collect();
        let networks: Vec<NetworkInfo> = pieces.iter().filter_map(|p| p.info.clone()).collect();
        let nets: BTreeSet<&str> = networks.iter().map(|n| n.id.as_str()).collect();
        let mut peers: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        let mut services: BTreeSet<&str> = BTreeSet::new();
        for (p, info) in pieces
            .iter()
            .filter_map(|p| p.info.as_ref().map(|i| (p, i)))
        {
            for n in p.nodes.iter().filter(|n| *n != node_id) {
                peers.entry(n).or_default().insert(&info.id);
            }
            services.extend(p.services.iter().map(String::as_str));
        }
        let peers = peer_nodes(state, node_id, &networks, peers);
        let services = services
            .into_iter()
            .filter_map(|id| state.service(id))
            .map(|s| service_endpoint(state, &nets, s))
            .collect();
        MapParts {
            networks,
            peers,
            services,
            pieces,
        }
    }

    /// The network map of node `node_id` (call [`NetmapCache::sync`] first, under the same view of the state).
    pub fn network_map(&mut self, state: &ClusterState, node_id: &str) -> NetworkMap {
        self.parts(state, node_id).to_map()
    }

    /// The change from the map `old` (what a stream sent) to `new` as JSON of a
    /// [`crate::model::netmap::NetworkMapDelta`]; `None` when the map is the same.
    pub fn delta_json(&mut self, old: &MapParts, new: &MapParts) -> Option<String> {
        use std::fmt::Write;
        // (network, how its endpoints changed), in the map's order
        let mut changes: Vec<(&str, std::sync::Arc<PieceChange>)> = Vec::new();
        let old_by_net: BTreeMap<&str, &std::sync::Arc<Piece>> = old
            .pieces
            .iter()
            .filter_map(|p| p.info.as_ref().map(|i| (i.id.as_str(), p)))
            .collect();
        let new_nets: BTreeSet<&str> = new
            .pieces
            .iter()
            .filter_map(|p| p.info.as_ref().map(|i| i.id.as_str()))
            .collect();
        for p in &new.pieces {
            let Some(net) = p.info.as_ref().map(|i| i.id.as_str()) else {
                continue;
            };
            match old_by_net.get(net) {
                Some(o) if o.generation == p.generation => {}
                Some(o) => {
                    let key = (o.generation, p.generation);
                    let change = self
                        .changes
                        .entry(key)
                        .or_insert_with(|| std::sync::Arc::new(piece_change(o, p)))
                        .clone();
                    changes.push((net, change));
                }
                // a network new to the node: all of it
                None => changes.push((
                    net,
                    std::sync::Arc::new(PieceChange {
                        endpoints: p.endpoints_json().to_owned(),
                        removed: String::new(),
                    }),
                )),
            }
        }
        // a network the node left: all of it goes
        for (net, o) in &old_by_net {
            if !new_nets.contains(net) {
                let keys: Vec<(&str, &str)> = o.endpoints.iter().map(Endpoint::key).collect();
                let removed = joined(&keys);
                let change = PieceChange {
                    endpoints: String::new(),
                    removed,
                };
                changes.push((net, std::sync::Arc::new(change)));
            }
        }
        changes.sort_by(|a, b| a.0.cmp(b.0));
        let changes: Vec<&PieceChange> = changes.iter().map(|(_, c)| c.as_ref()).collect();
        let (services, removed_services) =
            crate::model::netmap::sorted_diff(&old.services, &new.services, |s| {
                s.service_id.as_str()
            });
        let networks_changed = old.networks != new.networks;
        let peers_changed = old.peers != new.peers;
        let endpoints_changed = changes
            .iter()
            .any(|c| !c.endpoints.is_empty() || !c.removed.is_empty());
        if !networks_changed
            && !peers_changed
            && !endpoints_changed
            && services.is_empty()
            && removed_services.is_empty()
        {
            return None;
        }
        let mut out = String::from("{");
        if networks_changed {
            let _ = write!(out, "\"networks\":{},", crate::api::to_json(&new.networks));
        }
        if peers_changed {
            let _ = write!(out, "\"peers\":{},", crate::api::to_json(&new.peers));
        }
        let join = |out: &mut String, parts: &mut dyn Iterator<Item = &str>| {
            let mut first = true;
            for part in parts.filter(|p| !p.is_empty()) {
                if !first {
                    out.push(',');
                }
                first = false;
                out.push_str(part);
            }
        };
        out.push_str("\"endpoints\":[");
        join(&mut out, &mut changes.iter().map(|c| c.endpoints.as_str()));
        out.push_str("],\"removed_endpoints\":[");
        join(&mut out, &mut changes.iter().map(|c| c.removed.as_str()));
        let _ = write!(
            out,
            "],\"services\":{},\"removed_services\":{}}}",
            crate::api::to_json(&services),
            crate::api::to_json(&removed_services)
        );
        Some(out)
    }
}

/// How the endpoints of one network changed from build `old` to build `new`.
fn piece_change(old: &Piece, new: &Piece) -> PieceChange {
    let (changed, gone) =
        crate::model::netmap::sorted_diff(&old.endpoints, &new.endpoints, |e| e.task_id.as_str());
    let net = new.info.as_ref().map_or("", |i| i.id.as_str());
    let gone: Vec<(&str, &str)> = gone.into_iter().map(|task| (net, task)).collect();
    PieceChange {
        endpoints: joined(&changed),
        removed: joined(&gone),
    }
}

#[cfg(test)]
#[path = "netmap_tests.rs"]
mod tests;
