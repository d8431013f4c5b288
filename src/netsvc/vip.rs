//! Load balancing to a service's virtual IP: nftables DNAT inside each task's network namespace, the way
//! Docker puts IPVS in the container's sandbox (no IPVS on this kernel). A connection a task opens to a VIP is
//! translated on its first packet, in the task's own `output` hook, to one of the service's ready tasks on that
//! network (`numgen inc mod N`: round robin); conntrack in the task's namespace keeps the choice for the whole
//! connection and un-NATs the replies. So the backend sees the client task's own address (the source is kept),
//! established connections finish when their backend leaves the set, and only new ones follow the new set.
//!
//! [`ruleset`] is pure (map + task → `nft -f` text, one atomic transaction that replaces the task's table);
//! [`apply`] runs `nft -f -` inside a namespace given by pid or path.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::model::netmap::NetworkMap;
use crate::model::service::EndpointMode;

/// The nftables table a task's VIP rules live in (family `ip`).
pub const TABLE: &str = "swarm_vip";

/// Where `nft` is looked for first (Debian's `nftables` package); else `nft` on `PATH`.
pub const NFT: &str = "/usr/sbin/nft";

/// One VIP as a task sees it: the ready backends on the VIP's network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VipTarget {
    /// The service's full name (a comment in the ruleset).
    pub service: String,
    /// The virtual IP.
    pub vip: Ipv4Addr,
    /// Ready task addresses on the same network, in map order.
    pub backends: Vec<Ipv4Addr>,
}

/// Every VIP-mode service's VIP with its ready backends, per network: built once per map.
#[derive(Debug, Default)]
pub struct VipTable {
    by_network: HashMap<String, Vec<VipTarget>>,
    /// Unparsable addresses, described.
    pub problems: Vec<String>,
}

impl VipTable {
    /// The table of `map` (one pass over endpoints and services).
    pub fn build(map: &NetworkMap) -> VipTable {
        let mut table = VipTable::default();
        let mut ready: HashMap<(&str, &str), Vec<Ipv4Addr>> = HashMap::new();
        for e in map.endpoints.iter().filter(|e| e.ready) {
            match e.address.parse::<Ipv4Addr>() {
                Ok(a) => {
                    let list = ready
                        .entry((e.service_id.as_str(), e.network_id.as_str()))
                        .or_default();
                    if !list.contains(&a) {
                        list.push(a);
                    }
                }
                Err(_) => table.problems.push(format!(
                    "task {} on network {}: address {:?} is not an IPv4 address",
                    e.task_id, e.network_id, e.address
                )),
            }
        }
        for svc in map.services.iter().filter(|s| s.mode == EndpointMode::Vip) {
            for (net, vip) in &svc.vips {
                let Ok(vip) = vip.parse::<Ipv4Addr>() else {
                    table.problems.push(format!(
                        "service {}: VIP {vip:?} on network {net} is not an IPv4 address",
                        svc.name
                    ));
                    continue;
                };
                let backends = ready
                    .get(&(svc.service_id.as_str(), net.as_str()))
                    .cloned()
                    .unwrap_or_default();
                table
                    .by_network
                    .entry(net.clone())
                    .or_default()
                    .push(VipTarget {
                        service: svc.name.clone(),
                        vip,
                        backends,
                    });
            }
        }
        table
    }

    /// The VIPs reachable from a task on `networks`, by address (the first network's wins a duplicate).
    pub fn targets<'a>(&self, networks: impl IntoIterator<Item = &'a str>) -> Vec<VipTarget> {
        let mut out: BTreeMap<Ipv4Addr, VipTarget> = BTreeMap::new();
        for net in networks {
            for t in self.by_network.get(net).into_iter().flatten() {
                out.entry(t.vip).or_insert_with(|| t.clone());
            }
        }
        out.into_values().collect()
    }
}

/// The networks of task `task_id`, in map order.
fn networks_of<'a>(map: &'a NetworkMap, task_id: &str) -> Vec<&'a str> {
    let mut nets = Vec::new();
    for e in map.endpoints.iter().filter(|e| e.task_id == task_id) {
        if !nets.contains(&e.network_id.as_str()) {
            nets.push(e.network_id.as_str());
        }
    }
    nets
}

/// The VIPs task `task_id` reaches: every VIP-mode service's VIP on each network the task is attached to,
/// with the ready backends on that network. Unparsable addresses are skipped and described in the second list.
pub fn targets(map: &NetworkMap, task_id: &str) -> (Vec<VipTarget>, Vec<String>) {
    let table = VipTable::build(map);
    (table.targets(networks_of(map, task_id)), table.problems)
}

/// Quote a name for an nft comment (service names are `[a-zA-Z0-9_.-]`; anything else is dropped).
fn comment(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        .collect()
}

/// The `nft -f` text that makes the task's table exactly `targets`: one transaction that creates the table if
/// missing, deletes it and defines it again, so it applies atomically (a packet sees the old rules or the new).
/// A VIP with no ready backend rejects at once (TCP reset, ICMP for the rest) instead of timing out. No target:
/// the table is only removed.
pub fn ruleset(targets: &[VipTarget]) -> String {
    let mut s = format!("table ip {TABLE}\ndelete table ip {TABLE}\n");
    if targets.is_empty() {
        return s;
    }
    s.push_str(&format!("table ip {TABLE} {{\n"));
    s.push_str("\tchain vip {\n\t\ttype nat hook output priority -100; policy accept;\n");
    let mut refused = Vec::new();
    for t in targets {
        let c = comment(&t.service);
        match t.backends.as_slice() {
            [] => refused.push(t.vip),
            [one] => s.push_str(&format!(
                "\t\tip daddr {} dnat to {one} comment \"{c}\"\n",
                t.vip
            )),
            many => {
                let map: Vec<String> = many
                    .iter()
                    .enumerate()
                    .map(|(i, a)| format!("{i} : {a}"))
                    .collect();
                s.push_str(&format!(
                    "\t\tip daddr {} dnat to numgen inc mod {} map {{ {} }} comment \"{c}\"\n",
                    t.vip,
                    many.len(),
                    map.join(", ")
                ));
            }
        }
    }
    s.push_str("\t}\n");
    if !refused.is_empty() {
        let set: Vec<String> = refused.iter().map(Ipv4Addr::to_string).collect();
        let set = set.join(", ");
        s.push_str(
            "\tchain no_backend {\n\t\ttype filter hook output priority 0; policy accept;\n",
        );
        s.push_str(&format!(
            "\t\tip daddr {{ {set} }} meta l4proto tcp reject with tcp reset\n"
        ));
        s.push_str(&format!("\t\tip daddr {{ {set} }} reject\n"));
        s.push_str("\t}\n");
    }
    s.push_str("}\n");
    s
}

/// The ruleset of every task of `node_id` on the map's networks, by task id (computed once per distinct set of
/// networks: tasks on the same networks share one text).
pub fn rulesets_for_node(
    map: &NetworkMap,
    node_id: &str,
) -> (BTreeMap<String, String>, Vec<String>) {
    let table = VipTable::build(map);
    let mut nets: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for e in map.endpoints.iter().filter(|e| e.node_id == node_id) {
        let list = nets.entry(e.task_id.as_str()).or_default();
        if !list.contains(&e.network_id.as_str()) {
            list.push(e.network_id.as_str());
        }
    }
    let mut by_nets: HashMap<Vec<&str>, String> = HashMap::new();
    let mut out = BTreeMap::new();
    for (task, list) in nets {
        let text = by_nets
            .entry(list.clone())
            .or_insert_with(|| ruleset(&table.targets(list.iter().copied())))
            .clone();
        out.insert(task.to_string(), text);
    }
    let mut problems = table.problems;
    problems.sort();
    problems.dedup();
    (out, problems)
}

/// A network namespace to apply rules in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Netns {
    /// The namespace of a process (`/proc/PID/ns/net`): a task's init.
    Pid(u32),
    /// A namespace file (`/run/netns/NAME`, a bind mount netplane keeps).
    Path(PathBuf),
}

impl Netns {
    /// The namespace file.
    pub fn path(&self) -> PathBuf {
        match self {
            Netns::Pid(pid) => PathBuf::from(format!("/proc/{pid}/ns/net")),
            Netns::Path(p) => p.clone(),
        }
    }
}

/// Why a ruleset was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The namespace file did not open or `setns` refused it.
    #[error("network namespace {path}: {error}")]
    Namespace {
        /// The namespace file.
        path: String,
        /// What failed.
        error: String,
    },
    /// `nft` did not run or refused the ruleset.
    #[error("nft -f - in {path}: {error}")]
    Nft {
        /// The namespace file.
        path: String,
        /// `nft`'s error output or the spawn failure.
        error: String,
    },
}

fn nft_binary() -> &'static str {
    if std::path::Path::new(NFT).exists() {
        NFT
    } else {
        "nft"
    }
}

/// Apply `ruleset` with `nft -f -` inside `ns` (blocking: call it from `spawn_blocking`). A short-lived thread
/// enters the namespace (`setns`, which needs CAP_SYS_ADMIN) and spawns `nft` there — a child starts in its
/// creating thread's namespaces — then ends, so no other thread of swarmd ever changes namespace.
pub fn apply(ns: &Netns, ruleset: &str) -> Result<(), ApplyError> {
    let path = ns.path();
    let shown = path.display().to_string();
    let file = std::fs::File::open(&path).map_err(|e| ApplyError::Namespace {
        path: shown.clone(),
        error: e.to_string(),
    })?;
    let text = ruleset.to_string();
    let thread_path = shown.clone();
    let joined = std::thread::Builder::new()
        .name("swarm-netns".into())
        .spawn(move || -> Result<(), ApplyError> {
            nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
                ApplyError::Namespace {
                    path: thread_path.clone(),
                    error: format!("setns: {e}"),
                }
            })?;
            let nft_err = |error: String| ApplyError::Nft {
                path: thread_path.clone(),
                error,
            };
            let mut child = Command::new(nft_binary())
                .args(["-f", "-"])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| nft_err(format!("cannot run {}: {e}", nft_binary())))?;
            if let Some(mut stdin) = child.stdin.take() {
                stdin
                    .write_all(text.as_bytes())
                    .map_err(|e| nft_err(e.to_string()))?;
            }
            let out = child
                .wait_with_output()
                .map_err(|e| nft_err(e.to_string()))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(nft_err(
                    String::from_utf8_lossy(&out.stderr).trim().to_string(),
                ))
            }
        })
        .map_err(|e| ApplyError::Namespace {
            path: shown.clone(),
            error: format!("cannot start a thread: {e}"),
        })?;
    joined.join().unwrap_or_else(|_| {
        Err(ApplyError::Nft {
            path: shown,
            error: "the namespace thread panicked".into(),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::netmap::{Endpoint, ServiceEndpoint};

    fn ep(
        task: &str,
        svc: &str,
        net: &str,
        addr: &str,
        ready: bool,
        node: &str,
    ) -> std::sync::Arc<Endpoint> {
        std::sync::Arc::new(Endpoint {
            task_id: task.into(),
            task_name: format!("{svc}.{task}"),
            service_id: svc.into(),
            node_id: node.into(),
            network_id: net.into(),
            address: addr.into(),
            ready,
        })
    }

    fn svc(id: &str, mode: EndpointMode, vips: &[(&str, &str)]) -> ServiceEndpoint {
        ServiceEndpoint {
            service_id: id.into(),
            name: id.into(),
            mode,
            vips: vips
                .iter()
                .map(|(n, a)| (n.to_string(), a.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    fn map() -> NetworkMap {
        NetworkMap {
            endpoints: vec![
                ep("c1", "s_client", "front", "10.0.1.31", true, "n1"),
                ep("w1", "s_web", "front", "10.0.1.11", true, "n1"),
                ep("w2", "s_web", "front", "10.0.1.12", true, "n2"),
                ep("w3", "s_web", "front", "10.0.1.13", false, "n2"),
                ep("d1", "s_db", "back", "10.0.2.21", true, "n2"),
                ep("r1", "s_rr", "front", "10.0.1.41", true, "n2"),
            ],
            services: vec![
                svc("s_client", EndpointMode::Vip, &[("front", "10.0.1.3")]),
                svc("s_web", EndpointMode::Vip, &[("front", "10.0.1.2")]),
                svc("s_db", EndpointMode::Vip, &[("back", "10.0.2.2")]),
                svc("s_rr", EndpointMode::Dnsrr, &[("front", "10.0.1.4")]),
            ],
            ..Default::default()
        }
    }

    #[test]
    fn a_task_gets_the_ready_backends_of_vips_on_its_networks_only() {
        let (t, problems) = targets(&map(), "c1");
        assert!(problems.is_empty(), "{problems:?}");
        let web = t.iter().find(|t| t.service == "s_web").unwrap();
        assert_eq!(web.vip, "10.0.1.2".parse::<Ipv4Addr>().unwrap());
        // w3 is not ready; w2 on another node is a backend all the same (through the overlay)
        assert_eq!(
            web.backends,
            vec![Ipv4Addr::new(10, 0, 1, 11), Ipv4Addr::new(10, 0, 1, 12)]
        );
        // db's VIP is on `back`, which c1 is not on; dnsrr services have no VIP rule
        assert!(
            t.iter().all(|t| t.service != "s_db" && t.service != "s_rr"),
            "{t:?}"
        );
        let client = t.iter().find(|t| t.service == "s_client").unwrap();
        assert_eq!(client.backends, vec![Ipv4Addr::new(10, 0, 1, 31)]);
    }

    #[test]
    fn the_ruleset_replaces_the_table_with_numgen_dnat_and_refuses_empty_vips() {
        let mut m = map();
        std::sync::Arc::make_mut(&mut m.endpoints[0]).ready = false; // the client itself is not ready: its own VIP has no backend
        let (t, _) = targets(&m, "c1");
        let text = ruleset(&t);
        let expected = "table ip swarm_vip\n\
            delete table ip swarm_vip\n\
            table ip swarm_vip {\n\
            \tchain vip {\n\
            \t\ttype nat hook output priority -100; policy accept;\n\
            \t\tip daddr 10.0.1.2 dnat to numgen inc mod 2 map { 0 : 10.0.1.11, 1 : 10.0.1.12 } comment \"s_web\"\n\
            \t}\n\
            \tchain no_backend {\n\
            \t\ttype filter hook output priority 0; policy accept;\n\
            \t\tip daddr { 10.0.1.3 } meta l4proto tcp reject with tcp reset\n\
            \t\tip daddr { 10.0.1.3 } reject\n\
            \t}\n\
            }\n";
        assert_eq!(text, expected);
        // one backend: a plain dnat; none at all: the table is only removed
        let one = ruleset(&[VipTarget {
            service: "x\"; flush ruleset".into(),
            vip: Ipv4Addr::new(10, 9, 0, 2),
            backends: vec![Ipv4Addr::new(10, 9, 0, 5)],
        }]);
        assert!(
            one.contains("ip daddr 10.9.0.2 dnat to 10.9.0.5 comment \"xflushruleset\"\n"),
            "{one}"
        );
        assert_eq!(
            ruleset(&[]),
            "table ip swarm_vip\ndelete table ip swarm_vip\n"
        );
    }

    #[test]
    fn rulesets_are_made_for_this_nodes_tasks_and_bad_addresses_reported() {
        let mut m = map();
        m.endpoints
            .push(ep("w4", "s_web", "front", "10.0.1.x", true, "n2"));
        let (sets, problems) = rulesets_for_node(&m, "n1");
        assert_eq!(sets.keys().collect::<Vec<_>>(), vec!["c1", "w1"]);
        assert!(
            sets["w1"].contains("dnat to numgen inc mod 2"),
            "{}",
            sets["w1"]
        );
        assert_eq!(
            problems,
            vec![
                "task w4 on network front: address \"10.0.1.x\" is not an IPv4 address".to_string()
            ]
        );
    }

    #[test]
    fn a_missing_namespace_is_a_clear_error() {
        let err = apply(&Netns::Path("/nonexistent/netns".into()), "").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("network namespace /nonexistent/netns: "),
            "{err}"
        );
    }
}
