//! Published ports: a userspace TCP/UDP proxy in swarmd. In ingress mode every node listens on each published
//! port (`0.0.0.0:PORT`, so `curl 127.0.0.1:PORT` works on the host too) and sends each new connection to the
//! next ready task of the service: a task of this node directly, a task of another node through that node's
//! own proxy (its underlay address, the same port), which serves a connection from a peer with its own tasks
//! only (`backends`); in host mode only this node's ready tasks are backends. The backend set of a port is swapped whole when the map changes: a task that leaves the ready
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

pub use super::backends::{Backend, PortBackends, PortKey, Transport};

/// Round robin: the backend for the `counter`-th connection, `None` when there is none.
pub fn pick<T: Copy>(backends: &[T], counter: usize) -> Option<T> {
    if backends.is_empty() {
        None
    } else {
        Some(backends[counter % backends.len()])
    }
}

/// A port's backends, swapped whole; the round-robin counter survives a swap.
#[derive(Debug, Default)]
pub struct BackendSet {
    list: RwLock<Arc<PortBackends>>,
    next: AtomicUsize,
}

impl BackendSet {
    /// The current backends.
    pub fn current(&self) -> Arc<PortBackends> {
        match self.list.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Replace the backends: new connections use only `list` from now on.
    pub fn set(&self, list: PortBackends) {
        let list = Arc::new(list);
        match self.list.write() {
            Ok(mut g) => *g = list,
            Err(p) => *p.into_inner() = list,
        }
    }

    /// The backends to try for one new connection from `source`: the next in turn first, then the others (at
    /// most 3).
    pub fn candidates(&self, source: IpAddr) -> Vec<Backend> {
        let current = self.current();
        let list = current.for_source(source);
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..list.len().min(3))
            .filter_map(|i| pick(list, start.wrapping_add(i)))
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
    pub fn backends(&self, key: PortKey) -> Option<Arc<PortBackends>> {
        self.listeners.get(&key).map(|l| l.backends.current())
    }

    /// Make the listeners `desired`: open new ports, close ports no longer published, swap the backends of the
    /// others. A port that cannot be bound is reported (and tried again on the next call).
    pub async fn reconcile(&mut self, desired: &BTreeMap<PortKey, PortBackends>) -> Vec<String> {
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
        let candidates = backends.candidates(peer.ip());
        if candidates.is_empty() {
            return None;
        }
        for b in candidates.iter().map(|b| b.addr()) {
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
                let Some(backend) = backends.candidates(client.ip()).first().map(|b| b.addr())
                else {
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

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn tasks(list: &[SocketAddr]) -> PortBackends {
        PortBackends {
            all: list.iter().copied().map(Backend::Task).collect(),
            local: list.iter().copied().map(Backend::Task).collect(),
            peers: Default::default(),
        }
    }

    #[test]
    fn round_robin_over_the_current_set_never_a_removed_backend() {
        let (a, b, c) = (sa("127.0.0.1:1"), sa("127.0.0.1:2"), sa("127.0.0.1:3"));
        let client: IpAddr = "127.0.0.9".parse().unwrap();
        assert_eq!(pick::<SocketAddr>(&[], 5), None);
        let set = BackendSet::default();
        assert!(set.candidates(client).is_empty());
        set.set(tasks(&[a, b, c]));
        let firsts: Vec<_> = (0..6).map(|_| set.candidates(client)[0].addr()).collect();
        let mut turn: Vec<_> = firsts[..3].to_vec();
        turn.sort();
        assert_eq!(
            turn,
            vec![a, b, c],
            "each backend once in three connections"
        );
        assert_eq!(firsts[3..], firsts[..3]);
        // the next one in turn first, then the others as fallbacks
        let next = set.candidates(client);
        assert_eq!(next[0].addr(), firsts[0]);
        assert_eq!(next.len(), 3);
        set.set(tasks(&[a, c]));
        for _ in 0..10 {
            assert!(!set.candidates(client).contains(&Backend::Task(b)));
        }
    }

    #[test]
    fn a_peers_connection_gets_the_local_list() {
        let peer: IpAddr = "192.0.2.2".parse().unwrap();
        let set = BackendSet::default();
        set.set(PortBackends {
            all: vec![
                Backend::Peer(sa("192.0.2.3:80")),
                Backend::Task(sa("10.0.0.5:80")),
            ],
            local: vec![Backend::Task(sa("10.0.0.5:80"))],
            peers: [peer].into(),
        });
        for _ in 0..4 {
            assert_eq!(set.candidates(peer), vec![Backend::Task(sa("10.0.0.5:80"))]);
        }
        let from_client = set.candidates("203.0.113.1".parse().unwrap());
        assert_eq!(from_client.len(), 2);
    }
}
