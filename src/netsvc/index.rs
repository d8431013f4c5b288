//! The DNS index: what the node's resolver answers, built from a [`NetworkMap`] in one pass and swapped whole
//! ([`SharedIndex`]), so an answer always comes from one map — a task that stopped being ready is never served
//! after the map that says so arrived (Swarm's stale-DNS bugs moby#42833, #35508).
//!
//! Who asks matters: the query's source address names the asking task (any of its endpoints), and names are
//! answered only on the networks that task is attached to, in the order of its endpoints (the first network with
//! an answer wins, as Docker's embedded resolver does). Short names (`web`, `tasks.web`) resolve within the
//! asker's stack; full names (`stack_web`), aliases (per network), and task names everywhere on shared networks.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, RwLock};

use crate::model::netmap::{NetworkMap, ServiceEndpoint};
use crate::model::service::EndpointMode;

/// What the index says about one name for one asker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// A cluster name on a network the asker shares: these addresses (empty when the name exists but no task
    /// of it is ready: the resolver answers NOERROR with no record).
    Found(Vec<Ipv4Addr>),
    /// A name of the cluster's shape (one label, `tasks.…`, a task name of a known service) that does not exist
    /// for this asker: NXDOMAIN at once, never forwarded.
    NoSuchName,
    /// Not a cluster name: forwarded to the host's resolvers.
    Outside,
}

#[derive(Debug, Default)]
struct Asker {
    /// Network ids in the order of the task's endpoints.
    networks: Vec<String>,
    stack: Option<String>,
}

#[derive(Debug, Default)]
struct NetNames {
    /// Full names, `tasks.` full names, task names and aliases → addresses.
    global: HashMap<String, Vec<Ipv4Addr>>,
    /// Stack → short names and `tasks.` short names → addresses.
    stacks: HashMap<String, HashMap<String, Vec<Ipv4Addr>>>,
}

/// The answers of one [`NetworkMap`], per asker.
#[derive(Debug, Default)]
pub struct DnsIndex {
    /// Every endpoint address → its task.
    askers: HashMap<Ipv4Addr, String>,
    /// Task id → its networks and stack.
    tasks: HashMap<String, Asker>,
    networks: HashMap<String, NetNames>,
    /// Lower-case full names of every service (the first label of a task name).
    services: HashSet<String>,
}

/// The index the resolver reads, replaced whole by each update.
#[derive(Clone, Debug, Default)]
pub struct SharedIndex(Arc<RwLock<Arc<DnsIndex>>>);

impl SharedIndex {
    /// The current index (a cheap clone of an `Arc`; the lock is held only for that).
    pub fn current(&self) -> Arc<DnsIndex> {
        match self.0.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replace the index: every query from now on is answered from `index`.
    pub fn swap(&self, index: DnsIndex) {
        let index = Arc::new(index);
        match self.0.write() {
            Ok(mut g) => *g = index,
            Err(poisoned) => *poisoned.into_inner() = index,
        }
    }
}

/// A DNS name as the index keys it: lower case, without the root's trailing dot.
pub fn normalize(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// The stack of a service whose full name is `STACK_SHORT`.
pub fn stack_of(service: &ServiceEndpoint) -> Option<String> {
    let short = service.short_name.as_deref()?;
    service
        .name
        .strip_suffix(short)?
        .strip_suffix('_')
        .filter(|s| !s.is_empty())
        .map(str::to_ascii_lowercase)
}

fn push_all(map: &mut HashMap<String, Vec<Ipv4Addr>>, name: String, addrs: &[Ipv4Addr]) {
    let entry = map.entry(name).or_default();
    for a in addrs {
        if !entry.contains(a) {
            entry.push(*a);
        }
    }
}

impl DnsIndex {
    /// Build the index of `map`. Addresses that do not parse are left out and described in the returned list.
    pub fn build(map: &NetworkMap) -> (DnsIndex, Vec<String>) {
        let mut problems = Vec::new();
        let mut index = DnsIndex::default();
        let services: HashMap<&str, &ServiceEndpoint> = map
            .services
            .iter()
            .map(|s| (s.service_id.as_str(), s))
            .collect();
        // (service, network) → ready task addresses, in map order.
        let mut ready: HashMap<(&str, &str), Vec<Ipv4Addr>> = HashMap::new();
        // networks each service has tasks on, in map order
        let mut service_nets: HashMap<&str, Vec<&str>> = HashMap::new();
        for ep in &map.endpoints {
            let Ok(addr) = ep.address.parse::<Ipv4Addr>() else {
                problems.push(format!(
                    "task {} on network {}: address {:?} is not an IPv4 address",
                    ep.task_id, ep.network_id, ep.address
                ));
                continue;
            };
            index.askers.insert(addr, ep.task_id.clone());
            let asker = index.tasks.entry(ep.task_id.clone()).or_default();
            if !asker.networks.contains(&ep.network_id) {
                asker.networks.push(ep.network_id.clone());
            }
            if asker.stack.is_none() {
                asker.stack = services
                    .get(ep.service_id.as_str())
                    .and_then(|s| stack_of(s));
            }
            let nets = service_nets.entry(ep.service_id.as_str()).or_default();
            if !nets.contains(&ep.network_id.as_str()) {
                nets.push(ep.network_id.as_str());
            }
            if ep.ready {
                let list = ready
                    .entry((ep.service_id.as_str(), ep.network_id.as_str()))
                    .or_default();
                if !list.contains(&addr) {
                    list.push(addr);
                }
                if !ep.task_name.is_empty() {
                    let names = index.networks.entry(ep.network_id.clone()).or_default();
                    push_all(&mut names.global, normalize(&ep.task_name), &[addr]);
                }
            }
        }
        for svc in &map.services {
            let full = normalize(&svc.name);
            let short = svc.short_name.as_deref().map(normalize);
            let stack = stack_of(svc);
            index.services.insert(full.clone());
            let mut vips: HashMap<&str, Ipv4Addr> = HashMap::new();
            for (net, vip) in &svc.vips {
                match vip.parse::<Ipv4Addr>() {
                    Ok(a) => {
                        vips.insert(net.as_str(), a);
                    }
                    Err(_) => problems.push(format!(
                        "service {}: VIP {vip:?} on network {net} is not an IPv4 address",
                        svc.name
                    )),
                }
            }
            let mut nets: Vec<&str> = service_nets
                .get(svc.service_id.as_str())
                .cloned()
                .unwrap_or_default();
            for (net, _) in &svc.vips {
                if !nets.contains(&net.as_str()) {
                    nets.push(net.as_str());
                }
            }
            let mut main_on: HashMap<&str, Vec<Ipv4Addr>> = HashMap::new();
            for net in nets {
                let tasks = ready
                    .get(&(svc.service_id.as_str(), net))
                    .cloned()
                    .unwrap_or_default();
                let main = match (svc.mode, vips.get(net)) {
                    (EndpointMode::Vip, Some(vip)) => vec![*vip],
                    _ => tasks.clone(),
                };
                let names = index.networks.entry(net.to_string()).or_default();
                push_all(&mut names.global, full.clone(), &main);
                push_all(&mut names.global, format!("tasks.{full}"), &tasks);
                if let (Some(short), Some(stack)) = (&short, &stack) {
                    let scoped = names.stacks.entry(stack.clone()).or_default();
                    push_all(scoped, short.clone(), &main);
                    push_all(scoped, format!("tasks.{short}"), &tasks);
                }
                main_on.insert(net, main);
            }
            for (net, alias) in &svc.aliases {
                let alias = normalize(alias);
                let main = main_on.get(net.as_str()).cloned().unwrap_or_default();
                let names = index.networks.entry(net.clone()).or_default();
                push_all(&mut names.global, alias, &main);
            }
        }
        (index, problems)
    }

    /// The answer to `name` (any case, with or without the trailing dot) asked from `asker`.
    pub fn lookup(&self, asker: IpAddr, name: &str) -> Lookup {
        let name = normalize(name);
        let asker = match asker {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(a) => a.to_ipv4_mapped(),
        };
        let asker = asker
            .and_then(|a| self.askers.get(&a))
            .and_then(|task| self.tasks.get(task));
        let mut exists = false;
        if let Some(asker) = asker {
            for net in &asker.networks {
                let Some(names) = self.networks.get(net) else {
                    continue;
                };
                let scoped = asker
                    .stack
                    .as_ref()
                    .and_then(|s| names.stacks.get(s))
                    .and_then(|m| m.get(&name));
                for hit in [scoped, names.global.get(&name)].into_iter().flatten() {
                    if !hit.is_empty() {
                        return Lookup::Found(hit.clone());
                    }
                    exists = true;
                }
            }
        }
        if exists {
            Lookup::Found(Vec::new())
        } else if self.is_cluster_name(&name) {
            Lookup::NoSuchName
        } else {
            Lookup::Outside
        }
    }

    /// One label (`web`), `tasks.` and one label, or a task name's shape: three labels, the first a service's
    /// full name (`stack_web.1.abc`). `web.example.com` is not one, even with a service `web`.
    fn is_cluster_name(&self, name: &str) -> bool {
        let labels: Vec<&str> = name.split('.').collect();
        match labels.as_slice() {
            [_] => true,
            ["tasks", _] => true,
            [first, _, _] => self.services.contains(*first),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::netmap::Endpoint;

    fn ep(task: &str, svc: &str, net: &str, addr: &str, ready: bool) -> std::sync::Arc<Endpoint> {
        std::sync::Arc::new(Endpoint {
            task_id: task.into(),
            task_name: format!("{svc}.1.{task}"),
            service_id: svc.into(),
            node_id: "n1".into(),
            network_id: net.into(),
            address: addr.into(),
            ready,
        })
    }

    fn svc(
        id: &str,
        stack: &str,
        short: &str,
        mode: EndpointMode,
        vips: &[(&str, &str)],
    ) -> ServiceEndpoint {
        ServiceEndpoint {
            service_id: id.into(),
            name: format!("{stack}_{short}"),
            short_name: Some(short.into()),
            mode,
            vips: vips
                .iter()
                .map(|(n, a)| (n.to_string(), a.to_string()))
                .collect(),
            aliases: Vec::new(),
            ports: Vec::new(),
        }
    }

    /// Stack `s`: `web` (vip, 3 tasks, one not ready) and `db` (dnsrr) on network `front`; `client` on `front`;
    /// stack `o`: `web` too on network `other`, and a lone task of `o_spy` only on `other`.
    fn map() -> NetworkMap {
        NetworkMap {
            endpoints: vec![
                ep("w1", "s_web", "front", "10.0.1.11", true),
                ep("w2", "s_web", "front", "10.0.1.12", true),
                ep("w3", "s_web", "front", "10.0.1.13", false),
                ep("d1", "s_db", "front", "10.0.1.21", true),
                ep("d2", "s_db", "front", "10.0.1.22", true),
                ep("c1", "s_client", "front", "10.0.1.31", true),
                ep("ow1", "o_web", "other", "10.0.2.11", true),
                ep("spy", "o_spy", "other", "10.0.2.99", true),
            ],
            services: vec![
                svc(
                    "s_web",
                    "s",
                    "web",
                    EndpointMode::Vip,
                    &[("front", "10.0.1.2")],
                ),
                svc("s_db", "s", "db", EndpointMode::Dnsrr, &[]),
                svc(
                    "s_client",
                    "s",
                    "client",
                    EndpointMode::Vip,
                    &[("front", "10.0.1.3")],
                ),
                svc(
                    "o_web",
                    "o",
                    "web",
                    EndpointMode::Vip,
                    &[("other", "10.0.2.2")],
                ),
                svc(
                    "o_spy",
                    "o",
                    "spy",
                    EndpointMode::Vip,
                    &[("other", "10.0.2.3")],
                ),
            ],
            ..Default::default()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn found(v: &[&str]) -> Lookup {
        Lookup::Found(v.iter().map(|a| a.parse().unwrap()).collect())
    }

    #[test]
    fn a_task_resolves_its_stacks_services_by_short_and_full_name() {
        let (index, problems) = DnsIndex::build(&map());
        assert!(problems.is_empty(), "{problems:?}");
        let me = ip("10.0.1.31");
        assert_eq!(index.lookup(me, "web."), found(&["10.0.1.2"]));
        assert_eq!(index.lookup(me, "WEB"), found(&["10.0.1.2"]));
        assert_eq!(index.lookup(me, "s_web."), found(&["10.0.1.2"]));
        // tasks.: every ready task, never the one that is not ready
        assert_eq!(
            index.lookup(me, "tasks.web."),
            found(&["10.0.1.11", "10.0.1.12"])
        );
        assert_eq!(
            index.lookup(me, "tasks.s_web."),
            found(&["10.0.1.11", "10.0.1.12"])
        );
        // dnsrr: the service name gives the ready tasks themselves
        assert_eq!(index.lookup(me, "db."), found(&["10.0.1.21", "10.0.1.22"]));
        assert_eq!(index.lookup(me, "s_web.1.w1."), found(&["10.0.1.11"]));
    }

    #[test]
    fn names_are_answered_only_on_networks_the_asker_shares() {
        let (index, _) = DnsIndex::build(&map());
        let me = ip("10.0.1.31");
        // o_web lives on a network the client is not on
        assert_eq!(index.lookup(me, "o_web."), Lookup::NoSuchName);
        assert_eq!(index.lookup(me, "tasks.o_web."), Lookup::NoSuchName);
        assert_eq!(index.lookup(me, "o_spy.1.spy."), Lookup::NoSuchName);
        // a task of stack o on `other` sees its own web, not s's
        let spy = ip("10.0.2.99");
        assert_eq!(index.lookup(spy, "web."), found(&["10.0.2.2"]));
        assert_eq!(index.lookup(spy, "s_web."), Lookup::NoSuchName);
        // an address that is no task's (the host) gets no cluster answer
        assert_eq!(index.lookup(ip("127.0.0.1"), "s_web."), Lookup::NoSuchName);
    }

    #[test]
    fn unknown_cluster_names_are_nxdomain_and_others_are_forwarded() {
        let (index, _) = DnsIndex::build(&map());
        let me = ip("10.0.1.31");
        assert_eq!(index.lookup(me, "nosuch."), Lookup::NoSuchName);
        assert_eq!(index.lookup(me, "tasks.nosuch."), Lookup::NoSuchName);
        assert_eq!(index.lookup(me, "s_web.9.zzz."), Lookup::NoSuchName);
        assert_eq!(index.lookup(me, "example.com."), Lookup::Outside);
        assert_eq!(index.lookup(me, "web.example.com."), Lookup::Outside);
        assert_eq!(index.lookup(me, "s_web.example.com."), Lookup::NoSuchName);
        assert_eq!(index.lookup(me, "tasks.example.com."), Lookup::Outside);
        assert_eq!(index.lookup(me, "s_web.example.co.uk."), Lookup::Outside);
    }

    #[test]
    fn a_task_not_ready_is_not_served_and_the_next_map_is_followed() {
        let mut m = map();
        // w1 is being stopped by an update, w3 became healthy
        for e in &mut m.endpoints {
            let e = std::sync::Arc::make_mut(e);
            match e.task_id.as_str() {
                "w1" => e.ready = false,
                "w3" => e.ready = true,
                _ => {}
            }
        }
        let shared = SharedIndex::default();
        let me = ip("10.0.1.31");
        assert_eq!(
            shared.current().lookup(me, "tasks.web."),
            Lookup::NoSuchName
        );
        shared.swap(DnsIndex::build(&m).0);
        assert_eq!(
            shared.current().lookup(me, "tasks.web."),
            found(&["10.0.1.12", "10.0.1.13"])
        );
        assert_eq!(
            shared.current().lookup(me, "s_web.1.w1."),
            Lookup::NoSuchName
        );
        // every task of db gone: the name exists, with no address (NOERROR, no record)
        m.endpoints.retain(|e| e.service_id != "s_db");
        m.endpoints
            .push(ep("d3", "s_db", "front", "10.0.1.23", false));
        shared.swap(DnsIndex::build(&m).0);
        assert_eq!(shared.current().lookup(me, "db."), Lookup::Found(vec![]));
        assert_eq!(
            shared.current().lookup(me, "tasks.db."),
            Lookup::Found(vec![])
        );
        // removed from the map: gone
        m.endpoints.retain(|e| e.service_id != "s_db");
        m.services.retain(|s| s.service_id != "s_db");
        shared.swap(DnsIndex::build(&m).0);
        assert_eq!(shared.current().lookup(me, "db."), Lookup::NoSuchName);
    }

    #[test]
    fn aliases_answer_on_their_network_and_bad_addresses_are_reported() {
        let mut m = map();
        m.services[0].aliases.push(("front".into(), "www".into()));
        m.services[0]
            .aliases
            .push(("other".into(), "hidden".into()));
        m.endpoints
            .push(ep("bad", "s_web", "front", "10.0.1.x", true));
        let (index, problems) = DnsIndex::build(&m);
        let me = ip("10.0.1.31");
        assert_eq!(index.lookup(me, "www."), found(&["10.0.1.2"]));
        assert_eq!(index.lookup(me, "hidden."), Lookup::NoSuchName);
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].contains("task bad on network front"),
            "{problems:?}"
        );
        assert!(problems[0].contains("\"10.0.1.x\""), "{problems:?}");
    }

    #[test]
    fn the_first_shared_network_with_an_answer_wins() {
        let mut m = map();
        // the client also sits on `other`, listed second; o_web is only on `other`
        m.endpoints
            .push(ep("c1", "s_client", "other", "10.0.2.31", true));
        let (index, _) = DnsIndex::build(&m);
        for me in [ip("10.0.1.31"), ip("10.0.2.31")] {
            assert_eq!(index.lookup(me, "o_web."), found(&["10.0.2.2"]));
            // the client's own stack's web is found first on `front`
            assert_eq!(index.lookup(me, "web."), found(&["10.0.1.2"]));
        }
    }
}
