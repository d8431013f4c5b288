//! The dispatcher's shared cache of the network maps' parts ([`NetmapCache`]): each network's endpoints built
//! once for every node on it, patched with the tasks a change touched, and the change between two builds
//! worked out once for every stream that sent the older one ([`MapParts`]: what one stream sent).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::{endpoint_of, network_info, node_networks, peer_nodes, service_endpoint};
use crate::model::netmap::{Endpoint, NetworkInfo, NetworkMap, PeerNode, ServiceEndpoint};
use crate::store::{AddressHolder, ClusterState, ObjectKind, Touched};

/// What one network contributes to every map that has it: its description, its placed tasks' endpoints
/// (sorted by task id, the order maps list them in within a network), how many of them run on each node and
/// belong to each service, and the services holding a VIP on it. Each build has its own generation, so what a
/// stream sent is told apart from what there is now without comparing the contents.
#[derive(Debug)]
pub struct Piece {
    pub(super) generation: u64,
    info: Option<NetworkInfo>,
    endpoints: Vec<Arc<Endpoint>>,
    /// Node id → endpoints on it.
    nodes: BTreeMap<String, usize>,
    /// Service id → endpoints of it.
    services: BTreeMap<String, usize>,
    /// Services with a VIP on the network.
    vips: BTreeSet<String>,
    /// The endpoints as JSON objects joined by commas (what a complete map carries), made on first use.
    endpoints_json: std::sync::OnceLock<String>,
}

/// What one build of a network's part changed from the build before: task id → its endpoint now (`None`:
/// gone).
type Patch = BTreeMap<String, Option<Arc<Endpoint>>>;

/// How many patches of each network the cache keeps, so a stream a few changes behind gets the sum of them
/// instead of a comparison of every endpoint.
const PATCHES_KEPT: usize = 64;

/// Generations of pieces, unique in the process (a piece of a throw-away cache is never taken for another).
static GENERATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn next_generation() -> u64 {
    GENERATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl Piece {
    fn endpoints_json(&self) -> &str {
        self.endpoints_json.get_or_init(|| joined(&self.endpoints))
    }

    /// The endpoint of task `id` in this build.
    fn endpoint(&self, id: &str) -> Option<&Arc<Endpoint>> {
        self.endpoints
            .binary_search_by(|e| e.task_id.as_str().cmp(id))
            .ok()
            .map(|i| &self.endpoints[i])
    }

    fn count(&mut self, e: &Endpoint, up: bool) {
        for (map, key) in [
            (&mut self.nodes, &e.node_id),
            (&mut self.services, &e.service_id),
        ] {
            if up {
                *map.entry(key.clone()).or_default() += 1;
            } else if let Some(n) = map.get_mut(key) {
                *n -= 1;
                if *n == 0 {
                    map.remove(key);
                }
            }
        }
    }

    /// This build with the endpoints of the tasks `ids` taken from `state` again; `None` when none of them
    /// changed. The tasks of the other nodes are not looked at: the cost follows the change.
    fn patched<'a>(
        &self,
        state: &ClusterState,
        net: &str,
        ids: impl Iterator<Item = &'a str>,
    ) -> Option<(Piece, Patch)> {
        let mut patch = Patch::new();
        for id in ids {
            let now = state.task(id).and_then(|t| endpoint_of(state, t, net));
            match (self.endpoint(id), now) {
                (None, None) => {}
                (Some(before), Some(now)) if **before == now => {}
                (_, now) => {
                    patch.insert(id.to_owned(), now.map(Arc::new));
                }
            }
        }
        if patch.is_empty() {
            return None;
        }
        let mut next = Piece {
            generation: next_generation(),
            info: self.info.clone(),
            endpoints: Vec::new(),
            nodes: self.nodes.clone(),
            services: self.services.clone(),
            vips: self.vips.clone(),
            endpoints_json: std::sync::OnceLock::new(),
        };
        for (id, now) in &patch {
            if let Some(before) = self.endpoint(id) {
                next.count(before, false);
            }
            if let Some(now) = now {
                next.count(now, true);
            }
        }
        // one pass: the unchanged endpoints are shared, the patched ones put in their place
        next.endpoints = crate::model::netmap::merged(
            self.endpoints.clone(),
            patch.values().flatten().cloned().collect(),
            |a, b| a.task_id.cmp(&b.task_id),
            |e| patch.get(&e.task_id).is_some_and(Option::is_none),
        );
        Some((next, patch))
    }
}

/// The JSON texts of `items` joined by commas (the inside of a JSON array).
fn joined<T: serde::Serialize>(items: &[T]) -> String {
    let texts: Vec<String> = items.iter().map(crate::api::to_json).collect();
    let mut out = String::new();
    join_into(&mut out, texts.iter().map(String::as_str));
    out
}

/// Appends the non-empty `parts` (insides of JSON arrays) to `out`, joined by commas.
fn join_into<'a>(out: &mut String, parts: impl Iterator<Item = &'a str>) {
    let mut first = true;
    for part in parts.filter(|p| !p.is_empty()) {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(part);
    }
}

fn piece(state: &ClusterState, net: &str) -> Piece {
    let mut p = Piece {
        generation: next_generation(),
        info: network_info(state, net),
        endpoints: Vec::new(),
        nodes: BTreeMap::new(),
        services: BTreeMap::new(),
        vips: BTreeSet::new(),
        endpoints_json: std::sync::OnceLock::new(),
    };
    let mut task_ids: BTreeSet<&str> = BTreeSet::new();
    for (_, holder) in state.addresses_on(net) {
        match holder {
            AddressHolder::Task(id) => {
                task_ids.insert(id);
            }
            AddressHolder::Vip(id) => {
                p.vips.insert(id.clone());
            }
        }
    }
    for t in task_ids.into_iter().filter_map(|id| state.task(id)) {
        if let Some(e) = endpoint_of(state, t, net) {
            p.count(&e, true);
            p.endpoints.push(Arc::new(e));
        }
    }
    p
}

/// A node's network map as the dispatcher keeps it for a stream: the small parts as they are, the endpoints
/// as the shared pieces of its networks (so a thousand streams hold one copy of a network's endpoints).
#[derive(Debug, Default, Clone)]
pub struct MapParts {
    networks: Vec<NetworkInfo>,
    /// Shared by every node on the same networks.
    shape: Arc<Shape>,
    /// The node: left out of the shape's peers.
    me: String,
    pieces: Vec<Arc<Piece>>,
}

/// What the maps of every node on the same set of networks share besides the endpoints: each node with tasks
/// there (on ingress every node) as a peer, and the services there. Built once per set of networks until a
/// node, service or network changes or a change adds or removes a network's last task of a node or service
/// (`NetmapCache::sync`), so a thousand streams on one network hold one list of a thousand peers.
#[derive(Debug, Default, PartialEq)]
struct Shape {
    peers: Vec<PeerNode>,
    services: Vec<ServiceEndpoint>,
}

impl MapParts {
    /// The peers of this node's map: the shape's, without the node itself.
    fn peers(&self) -> impl Iterator<Item = &PeerNode> {
        self.shape.peers.iter().filter(|p| p.node_id != self.me)
    }

    fn peers_json(&self) -> String {
        crate::api::to_json(&self.peers().collect::<Vec<_>>())
    }

    /// The map these parts make.
    pub fn to_map(&self) -> NetworkMap {
        NetworkMap {
            networks: self.networks.clone(),
            peers: self.peers().cloned().collect(),
            endpoints: self
                .pieces
                .iter()
                .flat_map(|p| p.endpoints.iter().cloned())
                .collect(),
            services: self.shape.services.clone(),
        }
    }

    /// The complete map as JSON (a [`NetworkMap`]), the endpoints copied from the pieces' JSON.
    pub fn to_json(&self) -> String {
        let mut out = String::from("{\"networks\":");
        out.push_str(&crate::api::to_json(&self.networks));
        out.push_str(",\"peers\":");
        out.push_str(&self.peers_json());
        out.push_str(",\"endpoints\":[");
        join_into(&mut out, self.pieces.iter().map(|p| p.endpoints_json()));
        out.push_str("],\"services\":");
        out.push_str(&crate::api::to_json(&self.shape.services));
        out.push('}');
        out
    }

    /// Whether both hold the same map, without comparing endpoints (a piece is the same when it is the same
    /// build).
    pub fn same_as(&self, other: &MapParts) -> bool {
        self.networks == other.networks
            && self.me == other.me
            && (Arc::ptr_eq(&self.shape, &other.shape) || self.shape == other.shape)
            && self.pieces.len() == other.pieces.len()
            && self
                .pieces
                .iter()
                .zip(&other.pieces)
                .all(|(a, b)| a.generation == b.generation)
    }
}

/// The shape of the maps of the nodes on `networks` (their `pieces`): every node with tasks there (on ingress,
/// every node) with the networks it is on, and the services there.
fn shape(state: &ClusterState, networks: &[NetworkInfo], pieces: &[Arc<Piece>]) -> Shape {
    let nets: BTreeSet<&str> = networks.iter().map(|n| n.id.as_str()).collect();
    let mut peers: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut services: BTreeSet<&str> = BTreeSet::new();
    for (p, info) in pieces
        .iter()
        .filter_map(|p| p.info.as_ref().map(|i| (p, i)))
    {
        for n in p.nodes.keys() {
            peers.entry(n).or_default().insert(&info.id);
        }
        services.extend(p.services.keys().map(String::as_str));
        services.extend(p.vips.iter().map(String::as_str));
    }
    // no node is left out here: each map leaves out its own
    let peers = peer_nodes(state, networks, peers);
    let services = services
        .into_iter()
        .filter_map(|id| state.service(id))
        .map(|s| service_endpoint(state, &nets, s))
        .collect();
    Shape { peers, services }
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
/// ([`NetmapCache::delta_json`]). [`network_map`] is a fresh cache's map.
#[derive(Debug, Default)]
pub struct NetmapCache {
    seen: Option<u64>,
    pub(super) pieces: std::collections::HashMap<String, Arc<Piece>>,
    /// Per network, the latest patches: (generation before, generation after, what changed).
    pub(super) patches:
        std::collections::HashMap<String, std::collections::VecDeque<(u64, u64, Arc<Patch>)>>,
    /// (generation sent, generation now) → the change between them.
    changes: std::collections::HashMap<(u64, u64), Arc<PieceChange>>,
    /// The shape of the maps of each set of networks (ids), until a change may have altered it.
    shapes: std::collections::HashMap<Vec<String>, Arc<Shape>>,
}

impl NetmapCache {
    /// Whether every network part in `parts` is still the cache's (call [`NetmapCache::sync`] first): then the
    /// endpoints of the map they make did not change.
    pub fn is_current(&self, parts: &MapParts) -> bool {
        parts.pieces.iter().all(|p| {
            p.info
                .as_ref()
                .and_then(|i| self.pieces.get(&i.id))
                .is_some_and(|now| now.generation == p.generation)
        })
    }

    /// The store version the cache is in step with (None: never synced).
    pub fn seen(&self) -> Option<u64> {
        self.seen
    }

    /// Brings the cache in step with `state` at store `version`, given what changed since [`NetmapCache::seen`]
    /// (`Store::touched_since`; `None`: unknown, everything is dropped). A network whose description or one of
    /// whose services changed is built again; one on which only tasks changed gets those tasks' endpoints
    /// again (a patch), at a cost that follows the tasks changed.
    pub fn sync(&mut self, state: &ClusterState, version: u64, touched: Option<&Touched>) {
        if self.seen == Some(version) {
            return;
        }
        self.seen = Some(version);
        let Some(t) = touched.filter(|_| !self.pieces.is_empty()) else {
            self.pieces.clear();
            self.patches.clear();
            self.changes.clear();
            self.shapes.clear();
            return;
        };
        // a network whose description is as its part has it (IPAM records where its next search starts on the
        // network at every allocation) changes nothing in the maps, nor does one no map has
        let networks: BTreeSet<String> = t
            .of(ObjectKind::Network)
            .filter(|id| {
                self.pieces
                    .get(*id)
                    .is_some_and(|p| p.info != network_info(state, id))
            })
            .map(str::to_owned)
            .collect();
        // peers and services: nodes' addresses, services' names, VIPs, aliases and ports, networks
        if !networks.is_empty()
            || [ObjectKind::Node, ObjectKind::Service]
                .into_iter()
                .any(|k| t.of(k).next().is_some())
        {
            self.shapes.clear();
        }
        let mut rebuild = networks;
        // a service's name is in its tasks' endpoints, its VIPs are holders of their networks
        for sid in t.of(ObjectKind::Service) {
            for task in state.tasks_of_service(sid) {
                rebuild.extend(task.attachments.iter().map(|a| a.network_id.clone()));
            }
            if let Some(svc) = state.service(sid) {
                rebuild.extend(svc.virtual_ips.iter().map(|v| v.network_id.clone()));
            }
            for (net, p) in &self.pieces {
                if p.vips.contains(sid) || p.services.contains_key(sid) {
                    rebuild.insert(net.clone());
                }
            }
        }
        for net in &rebuild {
            self.pieces.remove(net);
            self.patches.remove(net);
        }
        if !rebuild.is_empty() {
            self.shapes.clear();
        }
        // the tasks changed, per network they are or were on
        let mut ids: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for id in t.of(ObjectKind::Task) {
            let now = state.task(id);
            for (net, p) in &self.pieces {
                let attached =
                    now.is_some_and(|t| t.attachments.iter().any(|a| &a.network_id == net));
                if attached || p.endpoint(id).is_some() {
                    ids.entry(net.as_str()).or_default().push(id);
                }
            }
        }
        let mut patched = Vec::new();
        for (net, ids) in ids {
            let Some(p) = self.pieces.get(net) else {
                continue;
            };
            if let Some((next, patch)) = p.patched(state, net, ids.into_iter()) {
                patched.push((net.to_owned(), p.generation, next, patch));
            }
        }
        for (net, before, next, patch) in patched {
            if let Some(old) = self.pieces.get(&net) {
                if !old.nodes.keys().eq(next.nodes.keys())
                    || !old.services.keys().eq(next.services.keys())
                {
                    self.shapes.clear();
                }
            }
            let kept = self.patches.entry(net.clone()).or_default();
            kept.push_back((before, next.generation, Arc::new(patch)));
            if kept.len() > PATCHES_KEPT {
                kept.pop_front();
            }
            self.pieces.insert(net, Arc::new(next));
        }
        // changes into a build that is gone are asked for no more
        let current: BTreeSet<u64> = self.pieces.values().map(|p| p.generation).collect();
        self.changes.retain(|(_, now), _| current.contains(now));
    }

    /// The change of network `net`'s endpoints from build `old` to build `new`: the sum of the patches
    /// between them when the cache still has them, else a comparison of both builds.
    fn piece_change(&self, net: &str, old: &Piece, new: &Piece) -> PieceChange {
        let Some(kept) = self.patches.get(net) else {
            return piece_change(old, new);
        };
        let Some(first) = kept
            .iter()
            .position(|(before, _, _)| *before == old.generation)
        else {
            return piece_change(old, new);
        };
        let mut sum: BTreeMap<&str, Option<&Arc<Endpoint>>> = BTreeMap::new();
        let mut at = old.generation;
        for (before, after, patch) in kept.iter().skip(first) {
            if *before != at {
                return piece_change(old, new);
            }
            for (id, e) in patch.iter() {
                sum.insert(id, e.as_ref());
            }
            at = *after;
            if at == new.generation {
                break;
            }
        }
        if at != new.generation {
            return piece_change(old, new);
        }
        let mut changed: Vec<&Arc<Endpoint>> = Vec::new();
        let mut gone: Vec<(&str, &str)> = Vec::new();
        for (id, now) in sum {
            match (old.endpoint(id), now) {
                (None, None) => {}
                (Some(b), Some(n)) if b == n => {}
                (_, Some(n)) => changed.push(n),
                (Some(_), None) => gone.push((net, id)),
            }
        }
        PieceChange {
            endpoints: joined(&changed),
            removed: joined(&gone),
        }
    }

    fn piece(&mut self, state: &ClusterState, net: &str) -> Arc<Piece> {
        if let Some(p) = self.pieces.get(net) {
            return p.clone();
        }
        let p = Arc::new(piece(state, net));
        self.pieces.insert(net.to_owned(), p.clone());
        p
    }

    /// The parts of node `node_id`'s map (call [`NetmapCache::sync`] first, under the same view of the state).
    pub fn parts(&mut self, state: &ClusterState, node_id: &str) -> MapParts {
        let pieces: Vec<Arc<Piece>> = node_networks(state, node_id)
            .iter()
            .map(|id| self.piece(state, id))
            .filter(|p| p.info.is_some())
            .collect();
        let networks: Vec<NetworkInfo> = pieces.iter().filter_map(|p| p.info.clone()).collect();
        let key: Vec<String> = networks.iter().map(|n| n.id.clone()).collect();
        let shape = match self.shapes.get(&key) {
            Some(shape) => shape.clone(),
            None => {
                let shape = Arc::new(shape(state, &networks, &pieces));
                self.shapes.insert(key, shape.clone());
                shape
            }
        };
        MapParts {
            networks,
            shape,
            me: node_id.to_owned(),
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
        let mut changes: Vec<(&str, Arc<PieceChange>)> = Vec::new();
        let old_by_net: BTreeMap<&str, &Arc<Piece>> = old
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
                    let change = match self.changes.get(&key) {
                        Some(c) => c.clone(),
                        None => {
                            let c = Arc::new(self.piece_change(net, o, p));
                            self.changes.insert(key, c.clone());
                            c
                        }
                    };
                    changes.push((net, change));
                }
                // a network new to the node: all of it
                None => changes.push((
                    net,
                    Arc::new(PieceChange {
                        endpoints: p.endpoints_json().to_owned(),
                        removed: String::new(),
                    }),
                )),
            }
        }
        // a network the node left: all of it goes
        for (net, o) in &old_by_net {
            if !new_nets.contains(net) {
                let keys: Vec<(&str, &str)> = o.endpoints.iter().map(|e| e.key()).collect();
                let removed = joined(&keys);
                let change = PieceChange {
                    endpoints: String::new(),
                    removed,
                };
                changes.push((net, Arc::new(change)));
            }
        }
        changes.sort_by(|a, b| a.0.cmp(b.0));
        let changes: Vec<&PieceChange> = changes.iter().map(|(_, c)| c.as_ref()).collect();
        let same_shape = Arc::ptr_eq(&old.shape, &new.shape);
        let (services, removed_services) = if same_shape {
            (Vec::new(), Vec::new())
        } else {
            crate::model::netmap::sorted_diff(&old.shape.services, &new.shape.services, |s| {
                s.service_id.as_str()
            })
        };
        let networks_changed = old.networks != new.networks;
        let peers_changed = !same_shape && !old.peers().eq(new.peers());
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
            let _ = write!(out, "\"peers\":{},", new.peers_json());
        }
        out.push_str("\"endpoints\":[");
        join_into(&mut out, changes.iter().map(|c| c.endpoints.as_str()));
        out.push_str("],\"removed_endpoints\":[");
        join_into(&mut out, changes.iter().map(|c| c.removed.as_str()));
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
