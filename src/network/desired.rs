//! The map as the kernel should hold it on this node (pure): per network a bridge with the gateway address, a
//! VXLAN device with its forwarding table when the network is an overlay, the NAT subnets; per local task its
//! interfaces. A network the map describes badly (an unparsable subnet, a gateway outside it) is left out with
//! a problem naming where in the map it is, so one bad entry never stops the others.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use crate::model::netmap::{NetworkInfo, NetworkMap};

use super::names;

/// One forwarding entry of a VXLAN device: frames for `mac` go to the node at `dst` (an all-zero `mac`: the
/// flooding list, broadcast and unknown destinations go to every such `dst`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fdb {
    /// Destination MAC (all zero for flooding).
    pub mac: [u8; 6],
    /// The peer's underlay address.
    pub dst: Ipv4Addr,
}

/// A network's VXLAN device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VxlanPlan {
    /// Device name.
    pub name: String,
    /// VXLAN network identifier.
    pub vni: u32,
    /// This node's underlay address.
    pub local: Ipv4Addr,
    /// The forwarding table, sorted.
    pub fdb: Vec<Fdb>,
}

/// One network on this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetPlan {
    /// Network id.
    pub id: String,
    /// Network name (for messages).
    pub name: String,
    /// Bridge name.
    pub bridge: String,
    /// The subnet's network address.
    pub subnet: Ipv4Addr,
    /// Prefix length of the subnet.
    pub prefix: u8,
    /// The bridge's address.
    pub gateway: Ipv4Addr,
    /// No NAT, no default route.
    pub internal: bool,
    /// The overlay device, for a network that spans nodes.
    pub vxlan: Option<VxlanPlan>,
}

/// Everything this node should have.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Desired {
    /// The networks, in the map's order.
    pub networks: Vec<NetPlan>,
    /// What was left out and why, one sentence each.
    pub problems: Vec<String>,
}

/// One interface of a task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    /// The network (its bridge is ensured before the task's veth is plugged in).
    pub network: NetPlan,
    /// The interface inside the task (`eth0`…).
    pub ifname: String,
    /// The node's end of the veth pair.
    pub host_veth: String,
    /// The task's address.
    pub address: Ipv4Addr,
    /// The subnet's prefix length.
    pub prefix: u8,
    /// Derived from the address.
    pub mac: [u8; 6],
    /// The task's default route goes through this network's gateway.
    pub default_route: bool,
}

/// `a.b.c.d/n` → (network address, n); the host bits must be zero.
pub fn parse_cidr(s: &str) -> Result<(Ipv4Addr, u8), String> {
    let (addr, len) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?} is not an IPv4 CIDR (a.b.c.d/n)"))?;
    let addr: Ipv4Addr = addr
        .parse()
        .map_err(|_| format!("{s:?}: {addr:?} is not an IPv4 address"))?;
    let len: u8 = len
        .parse()
        .ok()
        .filter(|l| *l <= 32)
        .ok_or_else(|| format!("{s:?}: prefix length {len:?} is not 0..32"))?;
    if u32::from(addr) & !mask(len) != 0 {
        return Err(format!("{s:?} has host bits set"));
    }
    Ok((addr, len))
}

fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    }
}

/// Whether `ip` is inside `subnet/prefix`.
pub fn contains(subnet: Ipv4Addr, prefix: u8, ip: Ipv4Addr) -> bool {
    u32::from(ip) & mask(prefix) == u32::from(subnet)
}

fn ip(s: &str, what: &str) -> Result<Ipv4Addr, String> {
    s.parse()
        .map_err(|_| format!("{what} {s:?} is not an IPv4 address"))
}

/// A network is an overlay (a VXLAN device joins its nodes) unless its driver is `bridge` (node-local).
fn spans_nodes(n: &NetworkInfo) -> bool {
    n.driver != "bridge"
}

fn plan_network(
    i: usize,
    n: &NetworkInfo,
    map: &NetworkMap,
    local: Option<Ipv4Addr>,
    problems: &mut Vec<String>,
) -> Result<NetPlan, String> {
    let at = format!("networks[{i}] (id {:?}, {:?})", n.id, n.name);
    if n.id.is_empty() {
        return Err(format!("{at}: the id is empty"));
    }
    let (subnet, prefix) = parse_cidr(&n.subnet).map_err(|e| format!("{at}.subnet: {e}"))?;
    if prefix > 30 {
        return Err(format!("{at}.subnet: /{prefix} leaves no room for tasks"));
    }
    let gateway = ip(&n.gateway, "the gateway").map_err(|e| format!("{at}.gateway: {e}"))?;
    if !contains(subnet, prefix, gateway) {
        return Err(format!(
            "{at}.gateway: {gateway} is outside the subnet {}",
            n.subnet
        ));
    }
    let vxlan = match (spans_nodes(n), local) {
        (false, _) => None,
        (true, None) => {
            problems.push(format!(
                "{at}: no VXLAN device: this node has no IPv4 underlay address (its --listen-addr); the \
                 network stays local to this node"
            ));
            None
        }
        (true, Some(local)) => {
            if n.vni == 0 || n.vni >= 1 << 24 {
                return Err(format!(
                    "{at}.vni: {} is not a VXLAN id (1..16777215)",
                    n.vni
                ));
            }
            let mut fdb = BTreeSet::new();
            for (p, peer) in map.peers.iter().enumerate() {
                if !peer.networks.contains(&n.id) {
                    continue;
                }
                let dst = match ip(&peer.addr, "the underlay address") {
                    Ok(a) if a != local => a,
                    Ok(_) => continue,
                    Err(e) => {
                        problems.push(format!("peers[{p}] ({:?}).addr: {e}", peer.node_id));
                        continue;
                    }
                };
                fdb.insert(Fdb { mac: [0; 6], dst });
                // the peer's tasks on this network, by their derived MACs
                for e in map
                    .endpoints
                    .iter()
                    .filter(|e| e.network_id == n.id && e.node_id == peer.node_id)
                {
                    if let Ok(addr) = e.address.parse::<Ipv4Addr>() {
                        fdb.insert(Fdb {
                            mac: names::mac_of(addr),
                            dst,
                        });
                    }
                }
            }
            Some(VxlanPlan {
                name: names::vxlan_name(&n.id),
                vni: n.vni,
                local,
                fdb: fdb.into_iter().collect(),
            })
        }
    };
    Ok(NetPlan {
        id: n.id.clone(),
        name: n.name.clone(),
        bridge: names::bridge_name(&n.id),
        subnet,
        prefix,
        gateway,
        internal: n.internal,
        vxlan,
    })
}

/// What this node should hold for `map`; `local` is its underlay address (none: no VXLAN devices).
pub fn desired(map: &NetworkMap, local: Option<Ipv4Addr>) -> Desired {
    let mut out = Desired::default();
    let mut seen = BTreeSet::new();
    for (i, n) in map.networks.iter().enumerate() {
        if !seen.insert(n.id.as_str()) {
            out.problems.push(format!(
                "networks[{i}]: network id {:?} appears twice",
                n.id
            ));
            continue;
        }
        match plan_network(i, n, map, local, &mut out.problems) {
            Ok(p) => out.networks.push(p),
            Err(e) => out.problems.push(e),
        }
    }
    out
}

/// The interfaces of task `task_id`, in the map's network order (empty: the task has no attachments and keeps
/// the executor's default networking). An endpoint on a network the map describes badly, or with a bad
/// address, is an error naming it: the task must not start half plumbed.
pub fn attachments(
    map: &NetworkMap,
    local: Option<Ipv4Addr>,
    task_id: &str,
) -> Result<Vec<Attachment>, String> {
    let endpoints: Vec<(usize, &crate::model::netmap::Endpoint)> = map
        .endpoints
        .iter()
        .enumerate()
        .filter(|(_, e)| e.task_id == task_id)
        .map(|(i, e)| (i, &**e))
        .collect();
    if endpoints.is_empty() {
        return Ok(Vec::new());
    }
    let plan = desired(map, local);
    let mut out = Vec::new();
    for net in &plan.networks {
        let Some((i, e)) = endpoints.iter().find(|(_, e)| e.network_id == net.id) else {
            continue;
        };
        let address = ip(&e.address, "the address")
            .map_err(|m| format!("endpoints[{i}] (task {task_id}).address: {m}"))?;
        if !contains(net.subnet, net.prefix, address) || address == net.gateway {
            return Err(format!(
                "endpoints[{i}] (task {task_id}).address: {address} is not a task address of {} ({}/{})",
                net.name, net.subnet, net.prefix
            ));
        }
        out.push(Attachment {
            ifname: names::task_ifname(out.len()),
            host_veth: names::veth_name(task_id, &net.id),
            address,
            prefix: net.prefix,
            mac: names::mac_of(address),
            default_route: false,
            network: net.clone(),
        });
    }
    if let Some((i, e)) = endpoints
        .iter()
        .find(|(_, e)| !plan.networks.iter().any(|n| n.id == e.network_id))
    {
        let why = plan
            .problems
            .iter()
            .find(|p| p.contains(&format!("{:?}", e.network_id)))
            .cloned()
            .unwrap_or_else(|| "the map has no such network".into());
        return Err(format!(
            "endpoints[{i}] (task {task_id}): network {:?}: {why}",
            e.network_id
        ));
    }
    if let Some(first) = out.iter_mut().find(|a| !a.network.internal) {
        first.default_route = true;
    }
    Ok(out)
}

/// `/etc/resolv.conf` for a task: the gateway of its first network (where the node's resolver answers) and the
/// host's search domains and options.
pub fn resolv_conf(attachments: &[Attachment], host: &str) -> Option<String> {
    let first = attachments.first()?;
    let mut out = format!("nameserver {}\n", first.network.gateway);
    for line in host.lines().map(str::trim) {
        if line.starts_with("search ")
            || line.starts_with("domain ")
            || line.starts_with("options ")
        {
            out.push_str(line);
            out.push('\n');
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::netmap::{Endpoint, PeerNode};

    fn net(id: &str, subnet: &str, gw: &str, vni: u32) -> NetworkInfo {
        NetworkInfo {
            id: id.into(),
            name: format!("st_{id}"),
            driver: "overlay".into(),
            subnet: subnet.into(),
            gateway: gw.into(),
            vni,
            internal: false,
            ingress: false,
        }
    }

    fn ep(task: &str, node: &str, net: &str, addr: &str) -> std::sync::Arc<Endpoint> {
        std::sync::Arc::new(Endpoint {
            task_id: task.into(),
            task_name: format!("web.1.{task}"),
            service_id: "svc".into(),
            node_id: node.into(),
            network_id: net.into(),
            address: addr.into(),
            ready: true,
        })
    }

    fn two_node_map() -> NetworkMap {
        NetworkMap {
            networks: vec![
                net("front", "10.0.1.0/24", "10.0.1.1", 4097),
                net("back", "10.0.2.0/24", "10.0.2.1", 4098),
            ],
            peers: vec![PeerNode {
                node_id: "nodeB".into(),
                addr: "192.168.77.3".into(),
                networks: vec!["front".into()],
            }],
            endpoints: vec![
                ep("t1", "nodeA", "back", "10.0.2.5"),
                ep("t1", "nodeA", "front", "10.0.1.5"),
                ep("t2", "nodeB", "front", "10.0.1.6"),
            ],
            services: vec![],
        }
    }

    #[test]
    fn overlays_get_a_vxlan_with_peers_and_their_tasks_macs() {
        let d = desired(&two_node_map(), Some("192.168.77.2".parse().unwrap()));
        assert!(d.problems.is_empty(), "{:?}", d.problems);
        let front = &d.networks[0];
        assert_eq!(front.bridge, names::bridge_name("front"));
        assert_eq!(
            (front.subnet.to_string(), front.prefix),
            ("10.0.1.0".into(), 24)
        );
        let vx = front.vxlan.as_ref().unwrap();
        assert_eq!(vx.vni, 4097);
        let peer: Ipv4Addr = "192.168.77.3".parse().unwrap();
        assert_eq!(
            vx.fdb,
            vec![
                Fdb {
                    mac: [0; 6],
                    dst: peer
                },
                Fdb {
                    mac: names::mac_of("10.0.1.6".parse().unwrap()),
                    dst: peer
                },
            ]
        );
        // `back` spans no other node: a device without peers
        assert!(d.networks[1].vxlan.as_ref().unwrap().fdb.is_empty());
    }

    #[test]
    fn without_an_underlay_address_overlays_stay_local_and_say_so() {
        let d = desired(&two_node_map(), None);
        assert!(d.networks.iter().all(|n| n.vxlan.is_none()));
        assert_eq!(d.problems.len(), 2);
        assert!(
            d.problems[0].contains("no IPv4 underlay address"),
            "{:?}",
            d.problems
        );
    }

    #[test]
    fn bad_networks_are_left_out_with_where_they_are() {
        let mut map = two_node_map();
        map.networks.push(net("bad", "10.0.3.0/33", "10.0.3.1", 1));
        map.networks.push(net("gw", "10.0.4.0/24", "10.0.5.1", 2));
        map.networks.push(net("host", "10.0.6.1/24", "10.0.6.1", 3));
        map.networks
            .push(net("front", "10.0.7.0/24", "10.0.7.1", 4));
        let d = desired(&map, Some("192.168.77.2".parse().unwrap()));
        assert_eq!(d.networks.len(), 2);
        assert_eq!(
            d.problems,
            vec![
                "networks[2] (id \"bad\", \"st_bad\").subnet: \"10.0.3.0/33\": prefix length \"33\" is not 0..32",
                "networks[3] (id \"gw\", \"st_gw\").gateway: 10.0.5.1 is outside the subnet 10.0.4.0/24",
                "networks[4] (id \"host\", \"st_host\").subnet: \"10.0.6.1/24\" has host bits set",
                "networks[5]: network id \"front\" appears twice",
            ]
        );
    }

    #[test]
    fn a_tasks_interfaces_follow_the_maps_network_order() {
        let map = two_node_map();
        let a = attachments(&map, Some("192.168.77.2".parse().unwrap()), "t1").unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(
            (a[0].ifname.as_str(), a[0].network.id.as_str()),
            ("eth0", "front")
        );
        assert_eq!(
            (a[1].ifname.as_str(), a[1].network.id.as_str()),
            ("eth1", "back")
        );
        assert_eq!(a[0].address.to_string(), "10.0.1.5");
        assert_eq!(a[0].mac, names::mac_of(a[0].address));
        assert!(a[0].default_route && !a[1].default_route);
        assert_eq!(a[0].host_veth, names::veth_name("t1", "front"));
        assert!(attachments(&map, None, "nobody").unwrap().is_empty());
    }

    #[test]
    fn the_default_route_skips_internal_networks() {
        let mut map = two_node_map();
        map.networks[0].internal = true;
        let a = attachments(&map, None, "t1").unwrap();
        assert!(!a[0].default_route && a[1].default_route);
        map.networks[1].internal = true;
        let a = attachments(&map, None, "t1").unwrap();
        assert!(a.iter().all(|a| !a.default_route));
    }

    #[test]
    fn a_bad_endpoint_fails_the_task_naming_it() {
        let mut map = two_node_map();
        std::sync::Arc::make_mut(&mut map.endpoints[1]).address = "10.0.9.5".into();
        let e = attachments(&map, None, "t1").unwrap_err();
        assert_eq!(
            e,
            "endpoints[1] (task t1).address: 10.0.9.5 is not a task address of st_front (10.0.1.0/24)"
        );
        std::sync::Arc::make_mut(&mut map.endpoints[1]).address = "10.0.1.5".into();
        map.networks[1].subnet = "nonsense".into();
        let e = attachments(&map, None, "t1").unwrap_err();
        assert!(
            e.starts_with("endpoints[0] (task t1): network \"back\": networks[1]"),
            "{e}"
        );
    }

    #[test]
    fn resolv_conf_points_at_the_first_gateway_with_the_hosts_search() {
        let a = attachments(&two_node_map(), None, "t1").unwrap();
        let host = "# generated\nnameserver 10.255.255.53\nsearch corp.example\noptions ndots:2\n";
        assert_eq!(
            resolv_conf(&a, host).unwrap(),
            "nameserver 10.0.1.1\nsearch corp.example\noptions ndots:2\n"
        );
        assert_eq!(resolv_conf(&[], host), None);
    }
}
