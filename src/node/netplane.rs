//! The node's network layer, wired: the `watch` channel of the managers' [`NetworkMap`] (its sender is where
//! the agent puts each map the dispatcher sends, before the assignments that use it), the
//! [`Plane`](crate::network::Plane) the executor reads task attachments from, and the converge loop as a part of
//! the node's lifecycle ([`Parts`]). Without root the loop does not run and swarmd says once that tasks share
//! the host's network.
//!
//! Until the dispatcher sends maps, `SWARMD_NETWORK_MAP_FILE` names a JSON `NetworkMap` file that is read
//! (and re-read when it changes) into the channel: what the tests use to drive a real swarmd.
//!
//! Must not: hold network logic (it is in `network`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::watch;

use crate::model::netmap::NetworkMap;
use crate::network::Plane;

use super::parts::Parts;

/// The environment variable naming a map file to feed the channel from.
pub const MAP_FILE_ENV: &str = "SWARMD_NETWORK_MAP_FILE";

/// How often the map file is looked at.
const MAP_FILE_POLL: Duration = Duration::from_millis(100);

/// The channel and the plane of one running node.
pub struct NodeNetwork {
    tx: watch::Sender<NetworkMap>,
    plane: Plane,
    /// Task networking was not turned off with `--no-task-networks`.
    requested: bool,
}

impl NodeNetwork {
    /// For a node advertising `listen_addr` (its IP is the VXLAN underlay address); `enabled` false
    /// (`swarmd --no-task-networks`) keeps every task on the host's network.
    pub fn new(listen_addr: SocketAddr, enabled: bool) -> Self {
        let (tx, rx) = watch::channel(NetworkMap::default());
        let plane = Plane::new(rx, Some(listen_addr.ip()));
        NodeNetwork {
            tx,
            plane: if enabled { plane } else { plane.turned_off() },
            requested: enabled,
        }
    }

    /// Whether this node runs the service layer (resolver, published ports, VIPs): task networking requested
    /// and root. Only then does draining a task before its stop signal keep clients away from it.
    pub fn serves_connections(&self) -> bool {
        self.requested && self.plane.enabled()
    }

    /// The agent's drain delay on this node: `configured` when it serves connections, else zero (nothing routes
    /// clients by the map, so there is nothing to wait for).
    pub fn drain_delay(&self, configured: Duration) -> Duration {
        if self.serves_connections() {
            configured
        } else {
            Duration::ZERO
        }
    }

    /// Where the agent sends each map it receives.
    pub fn sender(&self) -> watch::Sender<NetworkMap> {
        self.tx.clone()
    }

    /// The sender the agent publishes the dispatcher's maps on: none when [`MAP_FILE_ENV`] feeds the channel
    /// instead (tests that drive the plane without managers).
    pub fn agent_sender(&self) -> Option<watch::Sender<NetworkMap>> {
        std::env::var_os(MAP_FILE_ENV)
            .is_none()
            .then(|| self.tx.clone())
    }

    /// What the executor reads attachments from.
    pub fn plane(&self) -> Plane {
        self.plane.clone()
    }

    /// Adds the converge loop, the service layer (resolver, published ports, VIP rules; see
    /// [`services_loop`]) and the map-file feeder (when [`MAP_FILE_ENV`] is set) to `parts`, for node
    /// `node_id`; without root, says once that tasks keep the host's network.
    pub fn spawn(&self, parts: &mut Parts, node_id: &str) {
        if !self.requested {
            tracing::warn!(
                "service networking is off (--no-task-networks): tasks share the host's network (no address of \
                 their own, no overlay network, no service names, no routing mesh)"
            );
            return;
        }
        if !self.plane.enabled() {
            tracing::warn!(
                "service networking: swarmd is not running as root: tasks share the host's network (no address \
                 of their own, no overlay network, no outbound NAT)"
            );
            return;
        }
        if self.plane.underlay().is_none() {
            tracing::warn!(
                "service networking: --listen-addr is not a specific IPv4 address: overlay networks stay local to \
                 this node (no VXLAN underlay)"
            );
        }
        let plane = self.plane.clone();
        let keep = self.tx.clone();
        let shutdown = parts.shutdown();
        parts.spawn("the network plane", async move {
            // the sender lives as long as the loop, so the loop ends only with the shutdown
            let _keep = keep;
            plane.run(shutdown.wait()).await
        });
        // where the resolver listens, as the service layer last set it
        let (listening_tx, listening) = watch::channel(Vec::new());
        {
            // a task's VIP rules are in place before it starts, and its resolver listens
            let (rx, node) = (self.tx.subscribe(), node_id.to_string());
            self.plane.on_plumbed(std::sync::Arc::new(move |task, ns| {
                let (sets, _) = crate::netsvc::vip::rulesets_for_node(&rx.borrow(), &node);
                let vips = match sets.get(task) {
                    Some(rules) => crate::netsvc::vip::apply(
                        &crate::netsvc::vip::Netns::Path(ns.to_path_buf()),
                        rules,
                    )
                    .map_err(|e| format!("VIP rules: {e}")),
                    None => Ok(()),
                };
                let resolver = task_resolver(&rx.borrow(), task);
                let dns = wait_for_resolver(resolver, &listening, RESOLVER_WAIT);
                vips.and(dns)
            }));
        }
        let (plane, rx, node) = (self.plane.clone(), self.tx.subscribe(), node_id.to_string());
        let shutdown = parts.shutdown();
        parts.spawn("the service network", async move {
            services_loop(plane, rx, node, listening_tx, shutdown.wait()).await;
            Ok(())
        });
        if let Some(file) = std::env::var_os(MAP_FILE_ENV).map(PathBuf::from) {
            let tx = self.tx.clone();
            parts.spawn_until_shutdown("the network map file", feed_from_file(file, tx));
        }
    }
}

/// Reads `file` into `tx` whenever its content changes; a bad file is reported once per content, naming the
/// line and column.
async fn feed_from_file(file: PathBuf, tx: watch::Sender<NetworkMap>) -> Result<(), String> {
    let mut last: Option<String> = None;
    loop {
        match tokio::fs::read_to_string(&file).await {
            Ok(text) if last.as_deref() != Some(text.as_str()) => {
                match serde_json::from_str::<NetworkMap>(&text) {
                    Ok(map) => {
                        tx.send_replace(map);
                    }
                    Err(e) => tracing::warn!(
                        "{}: line {} column {}: {e}; keeping the previous network map",
                        file.display(),
                        e.line(),
                        e.column()
                    ),
                }
                last = Some(text);
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("{}: {e}", file.display()),
        }
        tokio::time::sleep(MAP_FILE_POLL).await;
    }
}

/// Keeps the node's service layer (`netsvc`: the resolver on each gateway, the published-port proxy, the VIP
/// rules inside each local task's namespace) equal to the map: on every change, and again within a second
/// while something is not in place yet (a gateway the plane has not created, a task not plumbed yet).
async fn services_loop(
    plane: Plane,
    mut map: watch::Receiver<NetworkMap>,
    node_id: String,
    listening: watch::Sender<Vec<SocketAddr>>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    use crate::netsvc::{vip::Netns, Services, ServicesConfig};
    tokio::pin!(shutdown);
    let (config, problems) = ServicesConfig::host();
    for p in problems {
        tracing::warn!("service networking: {p}");
    }
    let mut services = Services::new(config);
    let mut last_problems: Vec<String> = Vec::new();
    let mut retry = false;
    let mut last_round: Option<tokio::time::Instant> = None;
    loop {
        let wait = if retry { RETRY_SOON } else { RESYNC };
        tokio::select! {
            changed = map.changed() => if changed.is_err() { break },
            _ = tokio::time::sleep(wait) => {}
            () = &mut shutdown => break,
        }
        // a lone change is applied at once (a task being stopped leaves the backends now); a burst of maps (a
        // start wave) at most once per COALESCE, the newest
        if let Some(at) = last_round {
            tokio::time::sleep_until(at + COALESCE).await;
        }
        last_round = Some(tokio::time::Instant::now());
        let current = map.borrow_and_update().clone();
        let mut problems = services.update(&current, &node_id).await.problems;
        listening.send_replace(services.dns_listening());
        tracing::debug!(
            ready = current.endpoints.iter().filter(|e| e.ready).count(),
            endpoints = current.endpoints.len(),
            "service layer applied the map"
        );
        problems.extend(
            services
                .apply_some_pending_vips(
                    |task| plane.task_netns(task).map(Netns::Path),
                    VIPS_PER_ROUND,
                )
                .await,
        );
        plane.forget_gone();
        retry = !problems.is_empty() || !services.pending_vips().is_empty();
        if problems != last_problems {
            for p in &problems {
                tracing::warn!("service networking: {p} (retrying)");
            }
            last_problems = problems;
        }
    }
    services.shutdown().await;
}

/// The resolver task `task_id` is told to use: its first network's gateway (the first network of the map it
/// is attached to, as its `resolv.conf` names it).
fn task_resolver(map: &NetworkMap, task_id: &str) -> Option<std::net::IpAddr> {
    map.networks
        .iter()
        .find(|n| {
            map.endpoints
                .iter()
                .any(|e| e.task_id == task_id && e.network_id == n.id)
        })
        .and_then(|n| n.gateway.parse().ok())
}

/// Blocks (on the plumbing's blocking thread) until the resolver listens on `resolver`, for at most `limit`:
/// a task started before it would fail its first lookups. `None`: nothing to wait for.
fn wait_for_resolver(
    resolver: Option<std::net::IpAddr>,
    listening: &watch::Receiver<Vec<SocketAddr>>,
    limit: Duration,
) -> Result<(), String> {
    let Some(ip) = resolver else { return Ok(()) };
    let deadline = std::time::Instant::now() + limit;
    loop {
        if listening.borrow().iter().any(|a| a.ip() == ip) {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            return Err(format!(
                "the resolver is not listening on {ip} after {limit:?}: the task starts anyway, its first \
                 lookups may fail"
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// How long a task start waits for its resolver.
const RESOLVER_WAIT: Duration = Duration::from_secs(2);

/// At most this many task namespaces get their VIP rules re-applied per round (a new task gets its rules when
/// it is plumbed, before it starts, whatever this says).
const VIPS_PER_ROUND: usize = 16;

/// The service layer applies maps at most once per this long (a map after a quiet spell at once).
const COALESCE: Duration = Duration::from_millis(200);

/// How soon the service layer tries again while something is not in place.
const RETRY_SOON: Duration = Duration::from_secs(1);
/// How often it re-applies the map when nothing changed.
const RESYNC: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::netmap::{Endpoint, NetworkInfo};

    #[test]
    fn a_task_start_waits_for_its_first_networks_resolver_and_no_longer_than_the_limit() {
        let net = |id: &str, gw: &str| NetworkInfo {
            id: id.into(),
            gateway: gw.into(),
            ..Default::default()
        };
        let map = NetworkMap {
            networks: vec![net("a", "10.0.1.1"), net("b", "10.0.2.1")],
            endpoints: vec![std::sync::Arc::new(Endpoint {
                task_id: "t1".into(),
                network_id: "b".into(),
                ..Default::default()
            })],
            ..Default::default()
        };
        let gw: std::net::IpAddr = "10.0.2.1".parse().unwrap();
        assert_eq!(task_resolver(&map, "t1"), Some(gw));
        assert_eq!(task_resolver(&map, "t2"), None);
        let (tx, rx) = watch::channel(Vec::new());
        assert_eq!(wait_for_resolver(None, &rx, Duration::ZERO), Ok(()));
        let err = wait_for_resolver(Some(gw), &rx, Duration::from_millis(40)).unwrap_err();
        assert!(err.contains("not listening on 10.0.2.1"), "{err}");
        // listening from another thread while the start waits
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            tx.send_replace(vec![SocketAddr::new(gw, 53)]);
            tx
        });
        assert_eq!(
            wait_for_resolver(Some(gw), &rx, Duration::from_secs(10)),
            Ok(())
        );
        drop(t.join());
    }

    #[test]
    fn tasks_are_drained_only_where_the_node_serves_connections() {
        let addr: SocketAddr = "127.0.0.1:4242".parse().unwrap();
        let d = Duration::from_secs(2);
        let off = NodeNetwork::new(addr, false);
        assert!(!off.serves_connections());
        assert_eq!(off.drain_delay(d), Duration::ZERO, "--no-task-networks");
        let on = NodeNetwork::new(addr, true);
        let root = nix::unistd::geteuid().is_root();
        assert_eq!(on.serves_connections(), root);
        assert_eq!(on.drain_delay(d), if root { d } else { Duration::ZERO });
    }
}
