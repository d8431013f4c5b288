//! Where a published port's connections go, decided from the [`NetworkMap`] alone (pure).
//!
//! A node reaches its own tasks directly, from its host namespace through its bridge: the task answers the
//! bridge's gateway address, which is on this node. It cannot reach another node's task that way — every
//! node's bridge of a network holds the same gateway address, so the task would answer its own node's
//! bridge — and a node without tasks of a network may have no bridge for it at all. So a connection for a
//! task on another node goes to that node's own proxy, at the node's underlay (advertise) address and the same
//! published port, and that proxy hands it to one of its local tasks. A connection that arrives from a peer
//! node's address is such a hand-over: it is served by this node's tasks only, never passed on again (one hop
//! at most, no loops while two nodes' maps disagree).
//!
//! Ingress ports: every ready task of the service, each remote one counted as one hand-over to its node (so a
//! node with two tasks gets twice the share of a node with one). Host ports: this node's ready tasks only.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};

use crate::model::netmap::{Endpoint, NetworkMap};
use crate::model::service::{PortProtocol, PublishMode};

/// The protocols the proxy serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Transport {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// A listening port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortKey {
    /// TCP or UDP.
    pub protocol: Transport,
    /// The published port.
    pub port: u16,
}

impl std::fmt::Display for PortKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = match self.protocol {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
        };
        write!(f, "{}/{p}", self.port)
    }
}

/// Where one connection may go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Backend {
    /// A task on this node: its address and target port.
    Task(SocketAddr),
    /// Another node's proxy: its underlay address and the published port (it picks one of its tasks).
    Peer(SocketAddr),
}

impl Backend {
    /// The address to connect to.
    pub fn addr(self) -> SocketAddr {
        match self {
            Backend::Task(a) | Backend::Peer(a) => a,
        }
    }
}

/// One published port's backends on this node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortBackends {
    /// For a client's connection: local tasks and hand-overs to the other nodes with ready tasks.
    pub all: Vec<Backend>,
    /// For a connection handed over by a peer node: this node's tasks only.
    pub local: Vec<Backend>,
    /// The peer nodes' underlay addresses: a connection from one of them is a hand-over.
    pub peers: BTreeSet<IpAddr>,
}

impl PortBackends {
    /// The backends for a connection from `source`.
    pub fn for_source(&self, source: IpAddr) -> &[Backend] {
        if self.peers.contains(&source) {
            &self.local
        } else {
            &self.all
        }
    }
}

/// The address the proxy reaches a local task at: its endpoint on the ingress network if it has one, else its
/// first endpoint on a network of the map.
fn task_address<'a>(ingress: &[&str], eps: &[&'a Endpoint]) -> Option<&'a Endpoint> {
    eps.iter()
        .find(|e| ingress.contains(&e.network_id.as_str()))
        .or_else(|| eps.first())
        .copied()
}

/// The ports node `node_id` publishes and where their connections go (see the module's text). Ports without a
/// published number, SCTP, unparsable addresses, a remote task whose node has no underlay address in the map,
/// and two services on one port (the first keeps it) are described in the second list.
pub fn published(
    map: &NetworkMap,
    node_id: &str,
) -> (BTreeMap<PortKey, PortBackends>, Vec<String>) {
    let mut out: BTreeMap<PortKey, PortBackends> = BTreeMap::new();
    let mut owner: HashMap<PortKey, &str> = HashMap::new();
    let mut problems = Vec::new();
    let ingress: Vec<&str> = map
        .networks
        .iter()
        .filter(|n| n.ingress)
        .map(|n| n.id.as_str())
        .collect();
    // the other nodes' underlay addresses (an unparsable one is the network plane's to report)
    let peer_addr: HashMap<&str, IpAddr> = map
        .peers
        .iter()
        .filter(|p| p.node_id != node_id)
        .filter_map(|p| Some((p.node_id.as_str(), p.addr.parse::<IpAddr>().ok()?)))
        .collect();
    let peers: BTreeSet<IpAddr> = peer_addr.values().copied().collect();
    // each service's ready tasks, each with all its endpoints, in map order (one pass)
    let mut by_service: HashMap<&str, Vec<(&str, Vec<&Endpoint>)>> = HashMap::new();
    let mut slot: HashMap<&str, usize> = HashMap::new();
    for e in map.endpoints.iter().filter(|e| e.ready) {
        let tasks = by_service.entry(e.service_id.as_str()).or_default();
        match slot.get(e.task_id.as_str()) {
            Some(&i) if tasks.get(i).is_some_and(|(t, _)| *t == e.task_id) => tasks[i].1.push(e),
            _ => {
                slot.insert(e.task_id.as_str(), tasks.len());
                tasks.push((e.task_id.as_str(), vec![e]));
            }
        }
    }
    let none = Vec::new();
    for svc in map.services.iter().filter(|s| !s.ports.is_empty()) {
        let tasks = by_service.get(svc.service_id.as_str()).unwrap_or(&none);
        for port in &svc.ports {
            let Some(published) = port.published_port else {
                problems.push(format!(
                    "service {}: target port {} has no published port assigned",
                    svc.name, port.target_port
                ));
                continue;
            };
            let protocol = match port.protocol {
                PortProtocol::Tcp => Transport::Tcp,
                PortProtocol::Udp => Transport::Udp,
                PortProtocol::Sctp => {
                    problems.push(format!(
                        "service {}: port {published}/sctp is not supported (TCP and UDP only)",
                        svc.name
                    ));
                    continue;
                }
            };
            let key = PortKey {
                protocol,
                port: published,
            };
            if let Some(first) = owner.get(&key) {
                if *first != svc.name {
                    problems.push(format!(
                        "service {}: port {key} is already published by service {first}",
                        svc.name
                    ));
                    continue;
                }
            }
            owner.insert(key, svc.name.as_str());
            let set = out.entry(key).or_default();
            set.peers.clone_from(&peers);
            for (task, eps) in tasks {
                let Some(e) = task_address(&ingress, eps) else {
                    continue;
                };
                if e.node_id != node_id {
                    if port.publish_mode == PublishMode::Host {
                        continue;
                    }
                    match peer_addr.get(e.node_id.as_str()) {
                        Some(ip) => set
                            .all
                            .push(Backend::Peer(SocketAddr::new(*ip, published))),
                        None => problems.push(format!(
                            "service {}: task {task} on node {} is not reachable through port {key}: the \
                             network map has no underlay address for its node",
                            svc.name, e.node_id
                        )),
                    }
                    continue;
                }
                match e.address.parse::<IpAddr>() {
                    Ok(ip) => {
                        let b = Backend::Task(SocketAddr::new(ip, port.target_port));
                        if !set.local.contains(&b) {
                            set.local.push(b);
                            set.all.push(b);
                        }
                    }
                    Err(_) => problems.push(format!(
                        "task {} on network {}: address {:?} is not an IP address",
                        e.task_id, e.network_id, e.address
                    )),
                }
            }
        }
    }
    (out, problems)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::netmap::{NetworkInfo, PeerNode, ServiceEndpoint};
    use crate::model::service::PortConfig;

    fn ep(task: &str, net: &str, addr: &str, ready: bool, node: &str) -> std::sync::Arc<Endpoint> {
        std::sync::Arc::new(Endpoint {
            task_id: task.into(),
            task_name: format!("web.{task}"),
            service_id: "web".into(),
            node_id: node.into(),
            network_id: net.into(),
            address: addr.into(),
            ready,
        })
    }

    fn port(published: u16, target: u16, mode: PublishMode) -> PortConfig {
        PortConfig {
            protocol: PortProtocol::Tcp,
            target_port: target,
            published_port: Some(published),
            publish_mode: mode,
        }
    }

    fn peer(node: &str, addr: &str) -> PeerNode {
        PeerNode {
            node_id: node.into(),
            addr: addr.into(),
            networks: vec!["ing".into()],
        }
    }

    /// Tasks t1 (n1, front + ingress), t2 and t4 (n2), t3 (n1, not ready), t5 (n3); the map as n1 sees it.
    fn map() -> NetworkMap {
        NetworkMap {
            networks: vec![
                NetworkInfo {
                    id: "front".into(),
                    ..Default::default()
                },
                NetworkInfo {
                    id: "ing".into(),
                    ingress: true,
                    ..Default::default()
                },
            ],
            peers: vec![
                peer("n2", "192.0.2.2"),
                peer("n3", "192.0.2.3"),
                peer("n4", "192.0.2.4"),
            ],
            endpoints: vec![
                ep("t1", "front", "10.0.1.11", true, "n1"),
                ep("t1", "ing", "10.255.0.11", true, "n1"),
                ep("t2", "front", "10.0.1.12", true, "n2"),
                ep("t3", "front", "10.0.1.13", false, "n1"),
                ep("t4", "ing", "10.255.0.14", true, "n2"),
                ep("t5", "ing", "10.255.0.15", true, "n3"),
            ],
            services: vec![ServiceEndpoint {
                service_id: "web".into(),
                name: "s_web".into(),
                ports: vec![
                    port(8080, 80, PublishMode::Ingress),
                    port(9090, 90, PublishMode::Host),
                ],
                ..Default::default()
            }],
        }
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn key(port: u16) -> PortKey {
        PortKey {
            protocol: Transport::Tcp,
            port,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn local_tasks_are_dialled_and_remote_ones_handed_to_their_nodes_proxy() {
        let (ports, problems) = published(&map(), "n1");
        assert!(problems.is_empty(), "{problems:?}");
        let ingress = &ports[&key(8080)];
        // t1 through its ingress address; t2 and t4 through n2's proxy (twice: two tasks), t5 through n3's;
        // t3 is not ready
        assert_eq!(
            ingress.all,
            vec![
                Backend::Task(sa("10.255.0.11:80")),
                Backend::Peer(sa("192.0.2.2:8080")),
                Backend::Peer(sa("192.0.2.2:8080")),
                Backend::Peer(sa("192.0.2.3:8080")),
            ]
        );
        assert_eq!(ingress.local, vec![Backend::Task(sa("10.255.0.11:80"))]);
        // host mode: this node's tasks only
        assert_eq!(
            ports[&key(9090)].all,
            vec![Backend::Task(sa("10.255.0.11:90"))]
        );
    }

    #[test]
    fn a_connection_from_a_peer_is_served_by_local_tasks_only() {
        let (ports, _) = published(&map(), "n1");
        let ingress = &ports[&key(8080)];
        // a client (not a node of the cluster): every task; a peer node's hand-over: only t1, never back out
        assert_eq!(ingress.for_source(ip("198.51.100.7")).len(), 4);
        assert_eq!(
            ingress.for_source(ip("192.0.2.2")),
            &[Backend::Task(sa("10.255.0.11:80"))]
        );
        // n4 runs nothing: a connection arriving there goes to the nodes that do, and from a peer it finds none
        let mut m = map();
        m.peers = vec![
            peer("n1", "192.0.2.1"),
            peer("n2", "192.0.2.2"),
            peer("n3", "192.0.2.3"),
        ];
        let (on_n4, _) = published(&m, "n4");
        let p = &on_n4[&key(8080)];
        assert!(p.all.iter().all(|b| matches!(b, Backend::Peer(_))));
        assert_eq!(p.all.len(), 4);
        assert!(p.for_source(ip("192.0.2.1")).is_empty());
        assert!(on_n4[&key(9090)].all.is_empty(), "host mode: no local task");
    }

    #[test]
    fn a_remote_task_without_an_underlay_address_is_reported() {
        let mut m = map();
        m.peers.retain(|p| p.node_id != "n3");
        let (ports, problems) = published(&m, "n1");
        assert_eq!(ports[&key(8080)].all.len(), 3);
        assert_eq!(
            problems,
            vec![
                "service s_web: task t5 on node n3 is not reachable through port 8080/tcp: the network map \
                 has no underlay address for its node"
                    .to_string()
            ]
        );
    }

    #[test]
    fn conflicting_unassigned_and_sctp_ports_are_reported() {
        let mut m = map();
        let mut other = m.services[0].clone();
        other.service_id = "api".into();
        other.name = "s_api".into();
        other.ports = vec![
            port(8080, 81, PublishMode::Ingress),
            PortConfig {
                published_port: None,
                ..port(1, 82, PublishMode::Ingress)
            },
            PortConfig {
                protocol: PortProtocol::Sctp,
                ..port(7000, 83, PublishMode::Ingress)
            },
        ];
        m.services.push(other);
        let (ports, problems) = published(&m, "n1");
        assert_eq!(
            problems,
            vec![
                "service s_api: port 8080/tcp is already published by service s_web".to_string(),
                "service s_api: target port 82 has no published port assigned".to_string(),
                "service s_api: port 7000/sctp is not supported (TCP and UDP only)".to_string(),
            ]
        );
        assert_eq!(ports.len(), 2);
    }
}
