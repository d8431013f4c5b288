//! The converge step as a pure function: what the kernel holds (our links, their addresses, the VXLAN
//! forwarding entries) against what the map wants, as an ordered list of operations. Only links whose names
//! are ours ([`names::ours`]) are ever changed or removed.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use super::desired::{Fdb, NetPlan};
use super::names::{self, Ours};

/// What a link is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkKind {
    /// A Linux bridge.
    Bridge,
    /// A VXLAN device.
    Vxlan {
        /// Its VNI.
        vni: u32,
        /// Its local (underlay) address.
        local: Option<Ipv4Addr>,
    },
    /// One end of a veth pair.
    Veth,
    /// Anything else.
    Other,
}

/// One link as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// Interface name.
    pub name: String,
    /// Interface index.
    pub index: u32,
    /// Its kind.
    pub kind: LinkKind,
    /// The index of the bridge it is enslaved to.
    pub master: Option<u32>,
    /// Administratively up.
    pub up: bool,
    /// Its IPv4 addresses with prefix lengths.
    pub addrs: Vec<(Ipv4Addr, u8)>,
    /// Its MTU.
    pub mtu: u32,
}

/// What the kernel holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// Every link of the namespace.
    pub links: Vec<Link>,
    /// Permanent forwarding entries with a destination, per device name.
    pub fdb: Vec<(String, Fdb)>,
}

/// One change to the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Delete a link of ours.
    DelLink(String),
    /// A bridge with a fixed MAC (derived from its gateway): a Linux bridge otherwise takes the lowest MAC of
    /// its ports, which changes when a task leaves, and every other task's ARP entry for the gateway goes stale.
    AddBridge(String, [u8; 6]),
    /// Add an address to a link.
    AddAddr(String, Ipv4Addr, u8),
    /// Remove an address from a link.
    DelAddr(String, Ipv4Addr, u8),
    /// Bring a link up.
    Up(String),
    /// Create a VXLAN device (nolearning, UDP 4789) enslaved to `bridge`, up.
    AddVxlan {
        /// Device name.
        name: String,
        /// VNI.
        vni: u32,
        /// Underlay address.
        local: Ipv4Addr,
        /// Bridge to enslave it to.
        bridge: String,
        /// The underlay's MTU less VXLAN's 50 bytes, when the underlay link is known.
        mtu: Option<u32>,
    },
    /// Set a link's MTU.
    SetMtu(String, u32),
    /// Enslave a link to a bridge.
    SetMaster(String, String),
    /// Add a forwarding entry.
    AddFdb(String, Fdb),
    /// Remove a forwarding entry.
    DelFdb(String, Fdb),
}

/// VXLAN's encapsulation: outer Ethernet is not counted; IPv4 20, UDP 8, VXLAN 8, inner Ethernet 14.
pub const VXLAN_OVERHEAD: u32 = 50;

/// The MTU of an overlay on this node: the MTU of the link holding the underlay address `local`, less
/// [`VXLAN_OVERHEAD`] (`None` when no link holds it).
pub fn overlay_mtu(observed: &Observed, local: Ipv4Addr) -> Option<u32> {
    observed
        .links
        .iter()
        .find(|l| l.addrs.iter().any(|(a, _)| *a == local))
        .map(|l| l.mtu.saturating_sub(VXLAN_OVERHEAD))
}

/// The operations that take `observed` to `desired`. With `prune`, links of ours that no network of
/// `desired` owns are removed (the converge loop); without, only the given networks are ensured (a task start
/// plumbing its own networks, which must not remove what the loop owns).
pub fn diff(desired: &[NetPlan], observed: &Observed, prune: bool) -> Vec<Op> {
    let by_name: BTreeMap<&str, &Link> = observed
        .links
        .iter()
        .map(|l| (l.name.as_str(), l))
        .collect();
    let mut ops = Vec::new();
    if prune {
        let wanted: BTreeSet<&str> = desired
            .iter()
            .flat_map(|n| {
                std::iter::once(n.bridge.as_str()).chain(n.vxlan.as_ref().map(|v| v.name.as_str()))
            })
            .collect();
        let bridge_indexes: BTreeSet<u32> = desired
            .iter()
            .filter_map(|n| by_name.get(n.bridge.as_str()))
            .filter(|l| l.kind == LinkKind::Bridge)
            .map(|l| l.index)
            .collect();
        let mut stale: Vec<&Link> = observed
            .links
            .iter()
            .filter(|l| match names::ours(&l.name) {
                Some(Ours::Bridge | Ours::Vxlan) => !wanted.contains(l.name.as_str()),
                // a task's veth outlives nothing: its network gone (or never plugged in), it goes
                Some(Ours::Veth) => !l.master.is_some_and(|m| bridge_indexes.contains(&m)),
                None => false,
            })
            .collect();
        // ports before their bridges
        stale.sort_by_key(|l| (names::ours(&l.name) == Some(Ours::Bridge), l.name.clone()));
        ops.extend(stale.into_iter().map(|l| Op::DelLink(l.name.clone())));
    }
    for net in desired {
        ensure_bridge(net, by_name.get(net.bridge.as_str()).copied(), &mut ops);
        ensure_vxlan(net, &by_name, observed, &mut ops);
    }
    // a link both pruned and found wrong is deleted once
    let mut deleted = BTreeSet::new();
    ops.retain(|op| match op {
        Op::DelLink(name) => deleted.insert(name.clone()),
        _ => true,
    });
    ops
}

fn ensure_bridge(net: &NetPlan, have: Option<&Link>, ops: &mut Vec<Op>) {
    let name = &net.bridge;
    let want = (net.gateway, net.prefix);
    let link = match have {
        Some(l) if l.kind == LinkKind::Bridge => l,
        other => {
            if other.is_some() {
                ops.push(Op::DelLink(name.clone()));
            }
            ops.push(Op::AddBridge(
                name.clone(),
                super::names::mac_of(net.gateway),
            ));
            ops.push(Op::AddAddr(name.clone(), want.0, want.1));
            ops.push(Op::Up(name.clone()));
            return;
        }
    };
    for &(a, p) in link.addrs.iter().filter(|a| **a != want) {
        ops.push(Op::DelAddr(name.clone(), a, p));
    }
    if !link.addrs.contains(&want) {
        ops.push(Op::AddAddr(name.clone(), want.0, want.1));
    }
    if !link.up {
        ops.push(Op::Up(name.clone()));
    }
}

fn ensure_vxlan(
    net: &NetPlan,
    by_name: &BTreeMap<&str, &Link>,
    observed: &Observed,
    ops: &mut Vec<Op>,
) {
    let vx_name = names::vxlan_name(&net.id);
    let have = by_name.get(vx_name.as_str()).copied();
    let Some(plan) = &net.vxlan else {
        if have.is_some() {
            ops.push(Op::DelLink(vx_name));
        }
        return;
    };
    let mtu = overlay_mtu(observed, plan.local);
    let add = Op::AddVxlan {
        name: plan.name.clone(),
        vni: plan.vni,
        local: plan.local,
        bridge: net.bridge.clone(),
        mtu,
    };
    let fresh = match have {
        None => {
            ops.push(add);
            true
        }
        Some(l)
            if l.kind
                != (LinkKind::Vxlan {
                    vni: plan.vni,
                    local: Some(plan.local),
                }) =>
        {
            ops.push(Op::DelLink(plan.name.clone()));
            ops.push(add);
            true
        }
        Some(l) => {
            let bridge = by_name
                .get(net.bridge.as_str())
                .filter(|b| b.kind == LinkKind::Bridge);
            if bridge.is_none() || l.master != bridge.map(|b| b.index) {
                ops.push(Op::SetMaster(plan.name.clone(), net.bridge.clone()));
            }
            if let Some(m) = mtu.filter(|m| *m != l.mtu) {
                ops.push(Op::SetMtu(plan.name.clone(), m));
            }
            if !l.up {
                ops.push(Op::Up(plan.name.clone()));
            }
            false
        }
    };
    let have_fdb: BTreeSet<Fdb> = if fresh {
        BTreeSet::new()
    } else {
        observed
            .fdb
            .iter()
            .filter(|(dev, _)| *dev == plan.name)
            .map(|(_, f)| *f)
            .collect()
    };
    let want_fdb: BTreeSet<Fdb> = plan.fdb.iter().copied().collect();
    for f in have_fdb.difference(&want_fdb) {
        ops.push(Op::DelFdb(plan.name.clone(), *f));
    }
    for f in want_fdb.difference(&have_fdb) {
        ops.push(Op::AddFdb(plan.name.clone(), *f));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::desired::VxlanPlan;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn plan(id: &str, peers: &[&str]) -> NetPlan {
        NetPlan {
            id: id.into(),
            name: id.into(),
            bridge: names::bridge_name(id),
            subnet: ip("10.0.1.0"),
            prefix: 24,
            gateway: ip("10.0.1.1"),
            internal: false,
            vxlan: Some(VxlanPlan {
                name: names::vxlan_name(id),
                vni: 4097,
                local: ip("192.168.77.2"),
                fdb: peers
                    .iter()
                    .map(|p| Fdb {
                        mac: [0; 6],
                        dst: ip(p),
                    })
                    .collect(),
            }),
        }
    }

    fn link(name: &str, index: u32, kind: LinkKind, master: Option<u32>) -> Link {
        Link {
            name: name.into(),
            index,
            kind,
            master,
            up: true,
            addrs: vec![],
            mtu: 1500,
        }
    }

    /// What the kernel holds after `plan` was applied.
    fn converged(p: &NetPlan) -> Observed {
        let vx = p.vxlan.as_ref().unwrap();
        let mut br = link(&p.bridge, 10, LinkKind::Bridge, None);
        br.addrs = vec![(p.gateway, p.prefix)];
        Observed {
            links: vec![
                {
                    let mut l = link("eth0", 2, LinkKind::Other, None);
                    l.addrs = vec![(vx.local, 24)];
                    l
                },
                br,
                Link {
                    mtu: 1450,
                    ..link(
                        &vx.name,
                        11,
                        LinkKind::Vxlan {
                            vni: vx.vni,
                            local: Some(vx.local),
                        },
                        Some(10),
                    )
                },
                link(&names::veth_name("t1", &p.id), 12, LinkKind::Veth, Some(10)),
            ],
            fdb: vx.fdb.iter().map(|f| (vx.name.clone(), *f)).collect(),
        }
    }

    #[test]
    fn an_empty_node_gets_bridge_address_vxlan_and_flooding_entries() {
        let p = plan("n1", &["192.168.77.3", "192.168.77.4"]);
        let ops = diff(std::slice::from_ref(&p), &Observed::default(), true);
        let vx = names::vxlan_name("n1");
        assert_eq!(
            ops,
            vec![
                Op::AddBridge(p.bridge.clone(), crate::network::names::mac_of(p.gateway)),
                Op::AddAddr(p.bridge.clone(), ip("10.0.1.1"), 24),
                Op::Up(p.bridge.clone()),
                Op::AddVxlan {
                    name: vx.clone(),
                    vni: 4097,
                    local: ip("192.168.77.2"),
                    bridge: p.bridge.clone(),
                    mtu: None
                },
                Op::AddFdb(
                    vx.clone(),
                    Fdb {
                        mac: [0; 6],
                        dst: ip("192.168.77.3")
                    }
                ),
                Op::AddFdb(
                    vx,
                    Fdb {
                        mac: [0; 6],
                        dst: ip("192.168.77.4")
                    }
                ),
            ]
        );
    }

    #[test]
    fn converging_twice_changes_nothing() {
        let p = plan("n1", &["192.168.77.3"]);
        assert_eq!(diff(std::slice::from_ref(&p), &converged(&p), true), vec![]);
    }

    #[test]
    fn a_removed_network_takes_its_links_but_never_foreign_ones() {
        let p = plan("n1", &["192.168.77.3"]);
        let mut observed = converged(&p);
        observed
            .links
            .push(link("docker0", 3, LinkKind::Bridge, None));
        observed
            .links
            .push(link("swbr-notours", 4, LinkKind::Bridge, None));
        let ops = diff(&[], &observed, true);
        assert_eq!(
            ops,
            vec![
                Op::DelLink(names::veth_name("t1", "n1")),
                Op::DelLink(names::vxlan_name("n1")),
                Op::DelLink(p.bridge.clone()),
            ]
        );
        // a task start ensuring other networks removes nothing
        assert!(diff(&[], &observed, false).is_empty());
    }

    #[test]
    fn peers_joining_and_leaving_change_only_their_entries() {
        let before = plan("n1", &["192.168.77.3", "192.168.77.4"]);
        let after = plan("n1", &["192.168.77.4", "192.168.77.5"]);
        let vx = names::vxlan_name("n1");
        assert_eq!(
            diff(&[after], &converged(&before), true),
            vec![
                Op::DelFdb(
                    vx.clone(),
                    Fdb {
                        mac: [0; 6],
                        dst: ip("192.168.77.3")
                    }
                ),
                Op::AddFdb(
                    vx,
                    Fdb {
                        mac: [0; 6],
                        dst: ip("192.168.77.5")
                    }
                ),
            ]
        );
    }

    #[test]
    fn a_changed_vni_recreates_the_device_and_a_wrong_address_is_replaced() {
        let p = plan("n1", &["192.168.77.3"]);
        let mut observed = converged(&p);
        observed.links[1].addrs = vec![(ip("10.0.9.1"), 24)];
        observed.links[1].up = false;
        observed.links[2].kind = LinkKind::Vxlan {
            vni: 7,
            local: Some(ip("192.168.77.2")),
        };
        let vx = names::vxlan_name("n1");
        assert_eq!(
            diff(std::slice::from_ref(&p), &observed, true),
            vec![
                Op::DelAddr(p.bridge.clone(), ip("10.0.9.1"), 24),
                Op::AddAddr(p.bridge.clone(), ip("10.0.1.1"), 24),
                Op::Up(p.bridge.clone()),
                Op::DelLink(vx.clone()),
                Op::AddVxlan {
                    name: vx.clone(),
                    vni: 4097,
                    local: ip("192.168.77.2"),
                    bridge: p.bridge.clone(),
                    mtu: Some(1450)
                },
                Op::AddFdb(
                    vx,
                    Fdb {
                        mac: [0; 6],
                        dst: ip("192.168.77.3")
                    }
                ),
            ]
        );
    }

    #[test]
    fn the_overlay_follows_the_underlays_mtu() {
        let p = plan("n1", &["192.168.77.3"]);
        let mut observed = converged(&p);
        observed.links[0].mtu = 1400;
        assert_eq!(overlay_mtu(&observed, ip("192.168.77.2")), Some(1350));
        assert_eq!(
            diff(std::slice::from_ref(&p), &observed, true),
            vec![Op::SetMtu(names::vxlan_name("n1"), 1350)]
        );
    }

    #[test]
    fn a_network_turned_local_loses_its_vxlan_and_an_unplugged_veth_goes() {
        let p = plan("n1", &["192.168.77.3"]);
        let mut observed = converged(&p);
        observed.links[3].master = None;
        let local = NetPlan { vxlan: None, ..p };
        assert_eq!(
            diff(&[local], &observed, true),
            vec![
                Op::DelLink(names::veth_name("t1", "n1")),
                Op::DelLink(names::vxlan_name("n1"))
            ]
        );
    }
}
