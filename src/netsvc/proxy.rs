//! Published ports: a userspace TCP/UDP proxy in swarmd. In ingress mode every node listens on each published
//! port (`0.0.0.0:PORT`, so `curl 127.0.0.1:PORT` works on the host too) and sends each new connection to the
//! next ready task of the service, on any node (through the overlay); in host mode only this node's ready tasks
//! are backends. The backend set of a port is swapped whole when the map changes: a task that leaves the ready
//! set gets no new connection from then on, while connections already made to it run to their end, so a rolling
//! update (the managers make a task not ready before its stop signal) drops no request.
//!
//! The client's source address is not kept: the proxy ends the client's TCP connection and opens its own to
//! the task, which sees the node's address on the task's network. (Keeping it would need the packet path — DNAT
//! in the host namespace plus routing the replies back through the same node — which is what Swarm's ingress
//! loses it to as well, moby#25526.) VIP traffic between tasks keeps it (`vip`).

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

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

/// The address the proxy reaches a task at: its endpoint on the ingress network if it has one, else its first
/// endpoint on a network of the map.
fn task_address<'a>(map: &NetworkMap, eps: &[&'a Endpoint]) -> Option<&'a Endpoint> {
    let ingress: Vec<&str> = map
        .networks
        .iter()
        .filter(|n| n.ingress)
        .map(|n| n.id.as_str())
        .collect();
    eps.iter()
        .find(|e| ingress.contains(&e.network_id.as_str()))
        .or_else(|| eps.first())
        .copied()
}

/// The ports this node publishes and their ready backends (task address, target port): every ready task for
/// ingress ports, this node's ready tasks for host ports. Ports without a published number, SCTP, unparsable
/// addresses and two services on one port (the first keeps it) are described in the second list.
pub fn published(
    map: &NetworkMap,
    node_id: &str,
) -> (BTreeMap<PortKey, Vec<SocketAddr>>, Vec<String>) {
    let mut out: BTreeMap<PortKey, Vec<SocketAddr>> = BTreeMap::new();
    let mut owner: HashMap<PortKey, &str> = HashMap::new();
    let mut problems = Vec::new();
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
            let backends = out.entry(key).or_default();
            for (_, eps) in tasks {
                let Some(e) = task_address(map, eps) else {
                    continue;
                };
                if port.publish_mode == PublishMode::Host && e.node_id != node_id {
                    continue;
                }
                match e.address.parse::<IpAddr>() {
                    Ok(ip) => {
                        let b = SocketAddr::new(ip, port.target_port);
                        if !backends.contains(&b) {
                            backends.push(b);
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

/// Round robin: the backend for the `counter`-th connection, `None` when there is none.
pub fn pick(backends: &[SocketAddr], counter: usize) -> Option<SocketAddr> {
    if backends.is_empty() {
        None
    } else {
        Some(backends[counter % backends.len()])
    }
}

/// A port's backends, swapped whole; the round-robin counter survives a swap.
#[derive(Debug, Default)]
pub struct BackendSet {
    list: RwLock<Arc<Vec<SocketAddr>>>,
    next: AtomicUsize,
}

impl BackendSet {
    /// The current backends.
    pub fn current(&self) -> Arc<Vec<SocketAddr>> {
        match self.list.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Replace the backends: new connections use only `list` from now on.
    pub fn set(&self, list: Vec<SocketAddr>) {
        let list = Arc::new(list);
        match self.list.write() {
            Ok(mut g) => *g = list,
            Err(p) => *p.into_inner() = list,
        }
    }

    /// The backends to try for one new connection: the next in turn first, then the others (at most 3).
    pub fn candidates(&self) -> Vec<SocketAddr> {
        let list = self.current();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..list.len().min(3))
            .filter_map(|i| pick(&list, start.wrapping_add(i)))
            .collect()
    }
}

struct Listener {
    backends: Arc<BackendSet>,
    task: Option<JoinHandle<()>>,
}

impl Listener {
    /// Stop accepting and wait until the socket is closed (the port is free again when this returns);
    /// connections already accepted run on their own tasks to their end.
    async fn close(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// How long a connection to a backend may take before the next backend is tried.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A UDP "connection" (client address → backend) ends after this long without a datagram either way.
pub const UDP_IDLE: Duration = Duration::from_secs(30);

/// At most this many UDP flows per port; datagrams of new flows beyond it are dropped.
pub const UDP_MAX_FLOWS: usize = 4096;

/// The proxy's listeners, one per published port.
pub struct Proxy {
    bind: IpAddr,
    listeners: BTreeMap<PortKey, Listener>,
}

impl Proxy {
    /// A proxy listening on `bind` (`0.0.0.0` in production; a loopback address in tests).
    pub fn new(bind: IpAddr) -> Self {
        Proxy {
            bind,
            listeners: BTreeMap::new(),
        }
    }

    /// The ports listened on.
    pub fn ports(&self) -> Vec<PortKey> {
        self.listeners.keys().copied().collect()
    }

    /// The current backends of a port.
    pub fn backends(&self, key: PortKey) -> Option<Arc<Vec<SocketAddr>>> {
        self.listeners.get(&key).map(|l| l.backends.current())
    }

    /// Make the listeners `desired`: open new ports, close ports no longer published, swap the backends of the
    /// others. A port that cannot be bound is reported (and tried again on the next call).
    pub async fn reconcile(&mut self, desired: &BTreeMap<PortKey, Vec<SocketAddr>>) -> Vec<String> {
        let mut problems = Vec::new();
        let gone: Vec<PortKey> = self
            .listeners
            .keys()
            .filter(|k| !desired.contains_key(k))
            .copied()
            .collect();
        for key in gone {
            if let Some(l) = self.listeners.remove(&key) {
                l.close().await;
            }
        }
        for (key, backends) in desired {
            if let Some(l) = self.listeners.get(key) {
                l.backends.set(backends.clone());
                continue;
            }
            let set = Arc::new(BackendSet::default());
            set.set(backends.clone());
            let addr = SocketAddr::new(self.bind, key.port);
            let task = match key.protocol {
                Transport::Tcp => match TcpListener::bind(addr).await {
                    Ok(l) => tokio::spawn(serve_tcp(l, set.clone())),
                    Err(e) => {
                        problems.push(format!("cannot publish port {key} on {addr}: {e}"));
                        continue;
                    }
                },
                Transport::Udp => match UdpSocket::bind(addr).await {
                    Ok(s) => tokio::spawn(serve_udp(Arc::new(s), set.clone())),
                    Err(e) => {
                        problems.push(format!("cannot publish port {key} on {addr}: {e}"));
                        continue;
                    }
                },
            };
            self.listeners.insert(
                *key,
                Listener {
                    backends: set,
                    task: Some(task),
                },
            );
        }
        problems
    }
}

async fn serve_tcp(listener: TcpListener, backends: Arc<BackendSet>) {
    loop {
        let (client, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and the like: back off instead of spinning
                tracing::warn!(
                    "published port {:?}: accept: {e}",
                    listener.local_addr().ok()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let backends = backends.clone();
        tokio::spawn(async move {
            let _ = client.set_nodelay(true);
            // no ready backend: the client's connection is closed
            let Some(mut upstream) = connect_upstream(&backends, peer).await else {
                return;
            };
            let _ = upstream.set_nodelay(true);
            let mut client = client;
            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        });
    }
}

/// Rounds of connection attempts over a port's backends before a client is turned away.
pub const CONNECT_ROUNDS: u32 = 3;

/// The pause before the n-th further round (n × this): time for a map swap under way to land.
const ROUND_PAUSE: Duration = Duration::from_millis(100);

/// An upstream connection for a new client: the backends in turn; when every one fails to connect (refused,
/// reset or unreachable: a task stopping, a replacement not listening yet, a map swap racing a stop), again
/// over the set as it is then, at most [`CONNECT_ROUNDS`] rounds. Only connects are retried: once a backend
/// accepted, nothing is replayed elsewhere (it may have acted on the bytes). `None` when no backend is ready.
async fn connect_upstream(backends: &BackendSet, peer: SocketAddr) -> Option<TcpStream> {
    for round in 0..CONNECT_ROUNDS {
        if round > 0 {
            tokio::time::sleep(ROUND_PAUSE * round).await;
        }
        let candidates = backends.candidates();
        if candidates.is_empty() {
            return None;
        }
        for b in &candidates {
            match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(b)).await {
                Ok(Ok(s)) => return Some(s),
                Ok(Err(e)) => tracing::debug!("proxy {peer} → {b}: {e} (round {round})"),
                Err(_) => tracing::debug!("proxy {peer} → {b}: connect timed out (round {round})"),
            }
        }
    }
    tracing::debug!("proxy {peer}: no backend accepted in {CONNECT_ROUNDS} rounds");
    None
}

#[cfg(test)]
#[path = "proxy_retry_tests.rs"]
mod retry_tests;

async fn serve_udp(socket: Arc<UdpSocket>, backends: Arc<BackendSet>) {
    let flows: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>> = Arc::default();
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, client) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!("published udp port: recv: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let existing = flows.lock().ok().and_then(|f| f.get(&client).cloned());
        let flow = match existing {
            Some(f) => f,
            None => {
                let full = flows
                    .lock()
                    .map(|f| f.len() >= UDP_MAX_FLOWS)
                    .unwrap_or(true);
                let Some(backend) = backends.candidates().first().copied() else {
                    continue;
                };
                if full {
                    continue;
                }
                let local: SocketAddr = match backend {
                    SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
                    SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
                };
                let Ok(up) = UdpSocket::bind(local).await else {
                    continue;
                };
                if up.connect(backend).await.is_err() {
                    continue;
                }
                let up = Arc::new(up);
                if let Ok(mut f) = flows.lock() {
                    f.insert(client, up.clone());
                }
                tokio::spawn(udp_replies(
                    up.clone(),
                    socket.clone(),
                    client,
                    flows.clone(),
                ));
                up
            }
        };
        let _ = flow.send(&buf[..n]).await;
    }
}

/// Relay a flow's replies to its client until it is idle for [`UDP_IDLE`].
async fn udp_replies(
    up: Arc<UdpSocket>,
    socket: Arc<UdpSocket>,
    client: SocketAddr,
    flows: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>>,
) {
    let mut buf = vec![0u8; 65536];
    while let Ok(Ok(n)) = tokio::time::timeout(UDP_IDLE, up.recv(&mut buf)).await {
        let _ = socket.send_to(&buf[..n], client).await;
    }
    if let Ok(mut f) = flows.lock() {
        f.remove(&client);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::netmap::{NetworkInfo, ServiceEndpoint};
    use crate::model::service::PortConfig;

    fn ep(task: &str, net: &str, addr: &str, ready: bool, node: &str) -> Endpoint {
        Endpoint {
            task_id: task.into(),
            task_name: format!("web.{task}"),
            service_id: "web".into(),
            node_id: node.into(),
            network_id: net.into(),
            address: addr.into(),
            ready,
        }
    }

    fn port(published: u16, target: u16, mode: PublishMode) -> PortConfig {
        PortConfig {
            protocol: PortProtocol::Tcp,
            target_port: target,
            published_port: Some(published),
            publish_mode: mode,
        }
    }

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
            endpoints: vec![
                ep("t1", "front", "10.0.1.11", true, "n1"),
                ep("t1", "ing", "10.255.0.11", true, "n1"),
                ep("t2", "front", "10.0.1.12", true, "n2"),
                ep("t3", "front", "10.0.1.13", false, "n1"),
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
            ..Default::default()
        }
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ingress_ports_go_to_every_ready_task_and_host_ports_to_local_ones() {
        let (ports, problems) = published(&map(), "n1");
        assert!(problems.is_empty(), "{problems:?}");
        let ingress = PortKey {
            protocol: Transport::Tcp,
            port: 8080,
        };
        let host = PortKey {
            protocol: Transport::Tcp,
            port: 9090,
        };
        // t1 through its ingress address, t2 (other node) on its only network, t3 not ready
        assert_eq!(
            ports[&ingress],
            vec![sa("10.255.0.11:80"), sa("10.0.1.12:80")]
        );
        assert_eq!(ports[&host], vec![sa("10.255.0.11:90")]);
        let (on_n2, _) = published(&map(), "n2");
        assert_eq!(on_n2[&host], vec![sa("10.0.1.12:90")]);
        assert_eq!(on_n2[&ingress].len(), 2);
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

    #[test]
    fn round_robin_over_the_current_set_never_a_removed_backend() {
        let a = sa("127.0.0.1:1");
        let b = sa("127.0.0.1:2");
        let c = sa("127.0.0.1:3");
        assert_eq!(pick(&[], 5), None);
        let set = BackendSet::default();
        assert!(set.candidates().is_empty());
        set.set(vec![a, b, c]);
        let firsts: Vec<_> = (0..6).map(|_| set.candidates()[0]).collect();
        let mut turn: Vec<_> = firsts[..3].to_vec();
        turn.sort();
        assert_eq!(
            turn,
            vec![a, b, c],
            "each backend once in three connections"
        );
        assert_eq!(firsts[3..], firsts[..3]);
        // the next one in turn first, then the others as fallbacks
        let next = set.candidates();
        assert_eq!(next[0], firsts[0]);
        assert_eq!(next.len(), 3);
        set.set(vec![a, c]);
        for _ in 0..10 {
            assert!(!set.candidates().contains(&b));
        }
    }
}
