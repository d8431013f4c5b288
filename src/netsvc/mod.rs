//! Service discovery and load balancing on a node, driven by the [`NetworkMap`] the node receives:
//! - [`index`] + [`dns`] (feature `dns`): the resolver every task uses (its network's gateway, port 53);
//! - [`vip`]: VIP load balancing as nftables DNAT inside each task's network namespace (source kept);
//! - [`proxy`]: published ports (ingress on every node, host mode on this node), a userspace TCP/UDP proxy;
//!   [`backends`] decides where each port's connections go (local tasks directly, remote ones through the
//!   proxy of their node).
//!
//! [`Services::update`] applies one map to all three. It owns no namespace: the network plane (which creates
//! the bridges, gateways and task namespaces) calls `update` after it plumbed the same map — so the gateway
//! addresses the resolver binds exist — and then [`Services::apply_pending_vips`] with its task → namespace
//! lookup (or takes [`Services::pending_vips`] and applies them itself with [`vip::apply`]).

pub mod backends;
#[cfg(feature = "dns")]
pub mod dns;
pub mod index;
pub mod proxy;
pub mod vip;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::model::netmap::NetworkMap;

use index::{DnsIndex, SharedIndex};
use proxy::Proxy;
use vip::Netns;

/// How many task namespaces get their VIP rules at once (each is an `nft` process: ~12 ms of start-up).
pub const VIP_APPLY_PARALLEL: usize = 4;

/// Where the resolver listens and forwards, and where published ports listen.
#[derive(Clone, Debug)]
pub struct ServicesConfig {
    /// Fixed resolver addresses (tests: loopback high ports). `None`: every network's gateway at `dns_port`.
    pub dns_listen: Option<Vec<SocketAddr>>,
    /// The resolver's port on the gateways (53).
    pub dns_port: u16,
    /// Where names outside the cluster go (the host's resolvers).
    pub upstreams: Vec<SocketAddr>,
    /// The address published ports listen on (`0.0.0.0`: every address of the host).
    pub publish_ip: IpAddr,
}

impl ServicesConfig {
    /// Production: the resolver on each gateway's port 53, forwarding to `/etc/resolv.conf`'s nameservers,
    /// published ports on every address. Problems reading resolv.conf come back to be logged.
    pub fn host() -> (Self, Vec<String>) {
        #[cfg(feature = "dns")]
        let (upstreams, problems) = dns::host_resolvers("/etc/resolv.conf");
        #[cfg(not(feature = "dns"))]
        let (upstreams, problems) = (Vec::new(), Vec::new());
        (
            ServicesConfig {
                dns_listen: None,
                dns_port: 53,
                upstreams,
                publish_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            },
            problems,
        )
    }
}

/// What one [`Services::update`] found wrong (bad addresses, ports that could not be bound…): to log. The
/// rest of the map was applied.
#[derive(Debug, Default)]
pub struct Update {
    /// One line per problem.
    pub problems: Vec<String>,
}

/// The node's service networking: resolver, published-port proxy, VIP rulesets.
pub struct Services {
    config: ServicesConfig,
    index: SharedIndex,
    #[cfg(feature = "dns")]
    dns: dns::DnsServers,
    proxy: Proxy,
    /// Task id → the VIP ruleset the last map asks for (this node's tasks).
    vip_desired: BTreeMap<String, String>,
    /// Task id → the ruleset last applied in its namespace.
    vip_applied: BTreeMap<String, String>,
}

impl Services {
    /// Nothing listens until the first [`update`](Self::update).
    pub fn new(config: ServicesConfig) -> Self {
        let index = SharedIndex::default();
        #[cfg(feature = "dns")]
        let dns = {
            // never forward to ourselves (a loop)
            let own = config.dns_listen.clone().unwrap_or_default();
            let ups = config
                .upstreams
                .iter()
                .filter(|u| !own.contains(u))
                .copied()
                .collect();
            dns::DnsServers::new(dns::Resolver::new(index.clone(), ups))
        };
        Services {
            proxy: Proxy::new(config.publish_ip),
            config,
            index,
            #[cfg(feature = "dns")]
            dns,
            vip_desired: BTreeMap::new(),
            vip_applied: BTreeMap::new(),
        }
    }

    /// The index the resolver answers from (to look names up without a query).
    pub fn index(&self) -> SharedIndex {
        self.index.clone()
    }

    /// Where the resolver listens now (empty without the `dns` feature).
    pub fn dns_listening(&self) -> Vec<SocketAddr> {
        #[cfg(feature = "dns")]
        return self.dns.listening();
        #[cfg(not(feature = "dns"))]
        Vec::new()
    }

    /// The published-port proxy.
    pub fn proxy(&self) -> &Proxy {
        &self.proxy
    }

    /// Where the resolver listens for this map.
    pub fn dns_addresses(&self, map: &NetworkMap) -> (Vec<SocketAddr>, Vec<String>) {
        if let Some(fixed) = &self.config.dns_listen {
            return (fixed.clone(), Vec::new());
        }
        let mut out = Vec::new();
        let mut problems = Vec::new();
        for n in &map.networks {
            match n.gateway.parse::<IpAddr>() {
                Ok(ip) => out.push(SocketAddr::new(ip, self.config.dns_port)),
                Err(_) => problems.push(format!(
                    "network {}: gateway {:?} is not an IP address",
                    n.name, n.gateway
                )),
            }
        }
        out.sort();
        out.dedup();
        (out, problems)
    }

    /// Apply `map` as seen by node `node_id`: the resolver answers from it at once (one swap), its listeners
    /// follow the networks' gateways, the proxy opens and closes published ports and swaps their backends, and
    /// the VIP rulesets of this node's tasks are recomputed (see [`pending_vips`](Self::pending_vips)).
    pub async fn update(&mut self, map: &NetworkMap, node_id: &str) -> Update {
        let mut problems = Vec::new();
        let (index, p) = DnsIndex::build(map);
        problems.extend(p);
        self.index.swap(index);
        let (addrs, p) = self.dns_addresses(map);
        problems.extend(p);
        #[cfg(feature = "dns")]
        problems.extend(self.dns.set_listeners(&addrs).await);
        #[cfg(not(feature = "dns"))]
        let _ = addrs;
        let (ports, p) = backends::published(map, node_id);
        problems.extend(p);
        problems.extend(self.proxy.reconcile(&ports).await);
        let (sets, p) = vip::rulesets_for_node(map, node_id);
        problems.extend(p);
        self.vip_applied.retain(|task, _| sets.contains_key(task));
        self.vip_desired = sets;
        problems.sort();
        problems.dedup();
        Update { problems }
    }

    /// The rulesets of this node's tasks that differ from what was last applied: task id → `nft -f` text.
    pub fn pending_vips(&self) -> BTreeMap<String, String> {
        self.vip_desired
            .iter()
            .filter(|(t, r)| self.vip_applied.get(*t) != Some(*r))
            .map(|(t, r)| (t.clone(), r.clone()))
            .collect()
    }

    /// Record that `ruleset` was applied in task `task_id`'s namespace (by a caller of [`vip::apply`]).
    pub fn vip_applied(&mut self, task_id: &str, ruleset: &str) {
        if self.vip_desired.contains_key(task_id) {
            self.vip_applied
                .insert(task_id.to_string(), ruleset.to_string());
        }
    }

    /// Apply every pending ruleset in its task's namespace (`ns_of`: the network plane's lookup; a task it
    /// does not know yet is left pending), [`VIP_APPLY_PARALLEL`] at a time. Returns the failures, which stay
    /// pending for the next call.
    pub async fn apply_pending_vips(
        &mut self,
        ns_of: impl Fn(&str) -> Option<Netns>,
    ) -> Vec<String> {
        self.apply_some_pending_vips(ns_of, usize::MAX).await
    }

    /// [`apply_pending_vips`](Self::apply_pending_vips) for at most `limit` tasks: a caller that runs often
    /// bounds the `nft` work of one round (every task's table lists every VIP of its networks, so on a network
    /// with thousands of services each backend change touches every table).
    pub async fn apply_some_pending_vips(
        &mut self,
        ns_of: impl Fn(&str) -> Option<Netns>,
        limit: usize,
    ) -> Vec<String> {
        use futures::StreamExt;
        let jobs: Vec<(String, String, Netns)> = self
            .pending_vips()
            .into_iter()
            .filter_map(|(task, ruleset)| ns_of(&task).map(|ns| (task, ruleset, ns)))
            .take(limit)
            .collect();
        let results: Vec<(String, String, Result<(), String>)> = futures::stream::iter(jobs)
            .map(|(task, ruleset, ns)| async move {
                let text = ruleset.clone();
                let r = match tokio::task::spawn_blocking(move || vip::apply(&ns, &text)).await {
                    Ok(r) => r.map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                (task, ruleset, r)
            })
            .buffer_unordered(VIP_APPLY_PARALLEL)
            .collect()
            .await;
        let mut problems = Vec::new();
        for (task, ruleset, r) in results {
            match r {
                Ok(()) => self.vip_applied(&task, &ruleset),
                Err(e) => problems.push(format!("task {task}: VIP rules: {e}")),
            }
        }
        problems.sort();
        problems
    }

    /// Close the resolver's listeners and every published port (connections in flight run to their end).
    pub async fn shutdown(&mut self) {
        #[cfg(feature = "dns")]
        self.dns.shutdown().await;
        let _ = self.proxy.reconcile(&BTreeMap::new()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::netmap::{Endpoint, NetworkInfo, ServiceEndpoint};

    fn map(ready: bool) -> NetworkMap {
        let ep = |task: &str, svc: &str, addr: &str, node: &str, ready: bool| {
            std::sync::Arc::new(Endpoint {
                task_id: task.into(),
                task_name: format!("{svc}.1.{task}"),
                service_id: svc.into(),
                node_id: node.into(),
                network_id: "front".into(),
                address: addr.into(),
                ready,
            })
        };
        NetworkMap {
            networks: vec![
                NetworkInfo {
                    id: "front".into(),
                    name: "s_default".into(),
                    gateway: "10.0.1.1".into(),
                    ..Default::default()
                },
                NetworkInfo {
                    id: "bad".into(),
                    name: "s_bad".into(),
                    gateway: "nope".into(),
                    ..Default::default()
                },
            ],
            endpoints: vec![
                ep("c1", "s_client", "10.0.1.31", "n1", true),
                ep("w1", "s_web", "10.0.1.11", "n2", ready),
            ],
            services: vec![ServiceEndpoint {
                service_id: "s_web".into(),
                name: "s_web".into(),
                vips: vec![("front".into(), "10.0.1.2".into())],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn config() -> ServicesConfig {
        ServicesConfig {
            dns_listen: None,
            dns_port: 5353,
            upstreams: Vec::new(),
            publish_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        }
    }

    #[test]
    fn the_resolver_listens_on_each_networks_gateway() {
        let services = Services::new(config());
        let (addrs, problems) = services.dns_addresses(&map(true));
        assert_eq!(addrs, vec!["10.0.1.1:5353".parse().unwrap()]);
        assert_eq!(
            problems,
            vec!["network s_bad: gateway \"nope\" is not an IP address".to_string()]
        );
    }

    #[tokio::test]
    async fn a_vip_ruleset_is_pending_until_applied_and_again_when_the_backends_change() {
        let mut services = Services::new(ServicesConfig {
            dns_listen: Some(Vec::new()),
            ..config()
        });
        services.update(&map(true), "n1").await;
        let pending = services.pending_vips();
        assert_eq!(
            pending.keys().collect::<Vec<_>>(),
            vec!["c1"],
            "only this node's tasks"
        );
        assert!(
            pending["c1"].contains("ip daddr 10.0.1.2 dnat to 10.0.1.11"),
            "{}",
            pending["c1"]
        );
        services.vip_applied("c1", &pending["c1"]);
        assert!(services.pending_vips().is_empty());
        // the same map again: nothing to apply; w1 not ready: c1's rules change
        services.update(&map(true), "n1").await;
        assert!(services.pending_vips().is_empty());
        services.update(&map(false), "n1").await;
        assert!(services.pending_vips()["c1"].contains("reject with tcp reset"));
        // a task gone from the map is forgotten
        services.update(&NetworkMap::default(), "n1").await;
        assert!(services.pending_vips().is_empty());
        services.vip_applied("c1", "x");
        assert!(services.pending_vips().is_empty());
    }
}
