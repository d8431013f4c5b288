//! The kernel side through rtnetlink: a connection in this process's network namespace or in another one (a
//! task's, by an open `/proc/PID/ns/net`; the socket is created in a helper thread that joined it, as CNI
//! plugins do), reading what [`Observed`] describes and applying [`Op`]s. Creating what exists already and
//! deleting what is gone are not errors, so a task start and the converge loop can race on the same bridge.
//!
//! Must not: touch a link whose name is not ours (see `names::ours`) except a task's loopback and its own
//! interfaces inside the task's namespace.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd};

use futures::TryStreamExt;
use rtnetlink::packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_REQUEST,
};
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVeth, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::route::RouteType;
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::{
    Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth, LinkVxlan, RouteMessageBuilder,
};

use super::desired::Fdb;
use super::diff::{Link, LinkKind, Observed, Op};
use super::names::{self, VXLAN_PORT};
use super::NetError;

const EEXIST: i32 = 17;
const ENODEV: i32 = 19;
const ENOENT: i32 = 2;
const EADDRNOTAVAIL: i32 = 99;

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

fn fail(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetError {
    let what = what.into();
    move |e| {
        let detail = match &e {
            rtnetlink::Error::NetlinkError(m) => m.to_io().to_string(),
            other => other.to_string(),
        };
        NetError::Kernel(format!("{what}: {detail}"))
    }
}

/// Success, or the error that means "already so".
fn tolerate(r: Result<(), rtnetlink::Error>, ok: &[i32]) -> Result<(), rtnetlink::Error> {
    match r {
        Err(e) if errno(&e).is_some_and(|n| ok.contains(&n)) => Ok(()),
        other => other,
    }
}

/// A netlink route connection.
pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// In this process's network namespace. Needs a tokio runtime.
    pub fn here() -> Result<Self, NetError> {
        let (conn, handle, _) = rtnetlink::new_connection()
            .map_err(|e| NetError::Kernel(format!("opening a netlink socket: {e}")))?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    /// In the network namespace `ns` (an open `/proc/PID/ns/net` or `/run/netns/NAME`). Needs a tokio runtime.
    pub fn in_namespace(ns: BorrowedFd<'_>) -> Result<Self, NetError> {
        let raw = ns.as_raw_fd();
        // a fresh thread joins the namespace only to create the socket; the socket stays in it
        let fd = std::thread::scope(|s| {
            s.spawn(move || -> std::io::Result<OwnedFd> {
                // SAFETY: `raw` is open for the whole scope; setns changes only this thread.
                let ns = unsafe { BorrowedFd::borrow_raw(raw) };
                nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)?;
                let mut socket =
                    rtnetlink::sys::Socket::new(rtnetlink::sys::constants::NETLINK_ROUTE)?;
                socket.bind_auto()?;
                // SAFETY: the socket's fd is handed over whole.
                Ok(unsafe { OwnedFd::from_raw_fd(socket.into_raw_fd()) })
            })
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the namespace thread panicked")))
        })
        .map_err(|e| {
            NetError::Kernel(format!(
                "opening a netlink socket in the task's namespace: {e}"
            ))
        })?;
        // SAFETY: a netlink socket we own; TokioSocket takes it over.
        let socket = unsafe { rtnetlink::sys::TokioSocket::from_raw_fd(fd.into_raw_fd()) };
        let (conn, handle, _) = rtnetlink::from_socket(socket);
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    async fn links(&self) -> Result<Vec<LinkMessage>, NetError> {
        self.handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(fail("listing links"))
    }

    /// The index of link `name`.
    pub async fn index(&self, name: &str) -> Result<Option<u32>, NetError> {
        let mut s = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match s.try_next().await {
            Ok(m) => Ok(m.map(|m| m.header.index)),
            Err(e) if errno(&e) == Some(ENODEV) => Ok(None),
            Err(e) => Err(fail(format!("looking up link {name}"))(e)),
        }
    }

    async fn need(&self, name: &str) -> Result<u32, NetError> {
        self.index(name)
            .await?
            .ok_or_else(|| NetError::Kernel(format!("link {name} does not exist")))
    }

    /// Every link with its IPv4 addresses, and the forwarding entries of our VXLAN devices.
    pub async fn observe(&self) -> Result<Observed, NetError> {
        let mut links: Vec<Link> = self.links().await?.iter().filter_map(parse_link).collect();
        let addrs: Vec<_> = self
            .handle
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(fail("listing addresses"))?;
        for a in addrs {
            let ip = a.attributes.iter().find_map(|at| match at {
                AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
                _ => None,
            });
            if let (Some(ip), Some(link)) =
                (ip, links.iter_mut().find(|l| l.index == a.header.index))
            {
                link.addrs.push((ip, a.header.prefix_len));
            }
        }
        let vxlans: Vec<(u32, String)> = links
            .iter()
            .filter(|l| matches!(l.kind, LinkKind::Vxlan { .. }) && names::ours(&l.name).is_some())
            .map(|l| (l.index, l.name.clone()))
            .collect();
        let mut fdb = Vec::new();
        if !vxlans.is_empty() {
            let entries: Vec<NeighbourMessage> = self
                .handle
                .neighbours()
                .get()
                .set_address_family(AddressFamily::Bridge)
                .execute()
                .try_collect()
                .await
                .map_err(fail("listing forwarding entries"))?;
            for n in entries {
                let Some((_, dev)) = vxlans.iter().find(|(i, _)| *i == n.header.ifindex) else {
                    continue;
                };
                if n.header.state != NeighbourState::Permanent {
                    continue;
                }
                if let Some(f) = parse_fdb(&n) {
                    fdb.push((dev.clone(), f));
                }
            }
        }
        Ok(Observed { links, fdb })
    }

    /// Applies `ops` in order; the first failure stops and is returned.
    pub async fn apply(&self, ops: &[Op]) -> Result<(), NetError> {
        for op in ops {
            self.apply_one(op).await?;
        }
        Ok(())
    }

    async fn apply_one(&self, op: &Op) -> Result<(), NetError> {
        let link = self.handle.link();
        match op {
            Op::DelLink(name) => self.del_link(name).await,
            Op::AddBridge(name, mac) => tolerate(
                link.add(LinkBridge::new(name).address(mac.to_vec()).build())
                    .execute()
                    .await,
                &[EEXIST],
            )
            .map_err(fail(format!("creating bridge {name}"))),
            Op::AddAddr(name, ip, prefix) => {
                let index = self.need(name).await?;
                self.add_addr(index, *ip, *prefix).await
            }
            Op::DelAddr(name, ip, prefix) => {
                let index = self.need(name).await?;
                let found: Vec<_> = self
                    .handle
                    .address()
                    .get()
                    .set_link_index_filter(index)
                    .execute()
                    .try_collect()
                    .await
                    .map_err(fail(format!("listing addresses of {name}")))?;
                for m in found.into_iter().filter(|m| {
                    m.header.prefix_len == *prefix
                        && m.attributes
                            .contains(&AddressAttribute::Local(IpAddr::V4(*ip)))
                }) {
                    tolerate(
                        self.handle.address().del(m).execute().await,
                        &[EADDRNOTAVAIL],
                    )
                    .map_err(fail(format!("removing {ip}/{prefix} from {name}")))?;
                }
                Ok(())
            }
            Op::Up(name) => self.up(name).await,
            Op::AddVxlan {
                name,
                vni,
                local,
                bridge,
                mtu,
            } => {
                let master = self.need(bridge).await?;
                let mut b = LinkVxlan::new(name, *vni)
                    .local(*local)
                    .port(VXLAN_PORT)
                    .learning(false)
                    .controller(master)
                    .up();
                if let Some(m) = mtu {
                    b = b.mtu(*m);
                }
                let msg = b.build();
                tolerate(link.add(msg).execute().await, &[EEXIST]).map_err(fail(format!(
                    "creating VXLAN device {name} (VNI {vni}, local {local})"
                )))
            }
            Op::SetMtu(name, mtu) => {
                let index = self.need(name).await?;
                link.set(LinkUnspec::new_with_index(index).mtu(*mtu).build())
                    .execute()
                    .await
                    .map_err(fail(format!("setting the MTU of {name} to {mtu}")))
            }
            Op::SetMaster(name, bridge) => {
                let (index, master) = (self.need(name).await?, self.need(bridge).await?);
                let msg = LinkUnspec::new_with_index(index).controller(master).build();
                link.set(msg)
                    .execute()
                    .await
                    .map_err(fail(format!("enslaving {name} to {bridge}")))
            }
            Op::AddFdb(dev, f) => {
                let index = self.need(dev).await?;
                let msg = fdb_message(index, f);
                let mut req = NetlinkMessage::from(RouteNetlinkMessage::NewNeighbour(msg));
                // append: several all-zero entries (one per peer) make the flooding list
                req.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_APPEND;
                tolerate(self.request(req).await, &[EEXIST]).map_err(fail(format!(
                    "adding forwarding entry {} dst {} to {dev}",
                    names::mac_text(&f.mac),
                    f.dst
                )))
            }
            Op::DelFdb(dev, f) => {
                let index = self.need(dev).await?;
                tolerate(
                    self.handle
                        .neighbours()
                        .del(fdb_message(index, f))
                        .execute()
                        .await,
                    &[ENOENT, ENODEV],
                )
                .map_err(fail(format!(
                    "removing forwarding entry {} dst {} from {dev}",
                    names::mac_text(&f.mac),
                    f.dst
                )))
            }
        }
    }

    async fn request(
        &self,
        req: NetlinkMessage<RouteNetlinkMessage>,
    ) -> Result<(), rtnetlink::Error> {
        let mut handle = self.handle.clone();
        let mut response = handle.request(req)?;
        use futures::StreamExt;
        while let Some(m) = response.next().await {
            if let NetlinkPayload::Error(e) = m.payload {
                if e.code.is_some() {
                    return Err(rtnetlink::Error::NetlinkError(e));
                }
            }
        }
        Ok(())
    }

    /// Deletes link `name` when it exists.
    pub async fn del_link(&self, name: &str) -> Result<(), NetError> {
        let Some(index) = self.index(name).await? else {
            return Ok(());
        };
        tolerate(self.handle.link().del(index).execute().await, &[ENODEV])
            .map_err(fail(format!("deleting link {name}")))
    }

    /// Brings link `name` up.
    pub async fn up(&self, name: &str) -> Result<(), NetError> {
        let index = self.need(name).await?;
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(fail(format!("bringing {name} up")))
    }

    async fn add_addr(&self, index: u32, ip: Ipv4Addr, prefix: u8) -> Result<(), NetError> {
        tolerate(
            self.handle
                .address()
                .add(index, IpAddr::V4(ip), prefix)
                .execute()
                .await,
            &[EEXIST],
        )
        .map_err(fail(format!("adding {ip}/{prefix}")))
    }

    /// Creates the veth pair `host` (enslaved to `bridge`, up) ↔ `peer` (named, with `mac`, created directly in
    /// the namespace `ns`), both with `mtu` when given. An existing `host` link (a start retried) is replaced.
    pub async fn add_veth(
        &self,
        host: &str,
        bridge: &str,
        peer: &str,
        mac: [u8; 6],
        mtu: Option<u32>,
        ns: BorrowedFd<'_>,
    ) -> Result<(), NetError> {
        let master = self.need(bridge).await?;
        self.del_link(host).await?;
        let mut peer_b = LinkMessageBuilder::<LinkUnspec>::new()
            .name(peer.to_string())
            .address(mac.to_vec())
            .setns_by_fd(ns.as_raw_fd());
        let mut b = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(host.to_string())
            .controller(master)
            .up();
        if let Some(m) = mtu {
            peer_b = peer_b.mtu(m);
            b = b.mtu(m);
        }
        let msg = b
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_b.build())))
            .build();
        self.handle
            .link()
            .add(msg)
            .execute()
            .await
            .map_err(fail(format!("creating veth {host} on {bridge}")))
    }

    /// Inside a task's namespace: `ip`/`prefix` on `ifname`, up.
    pub async fn configure(&self, ifname: &str, ip: Ipv4Addr, prefix: u8) -> Result<(), NetError> {
        let index = self.need(ifname).await?;
        self.add_addr(index, ip, prefix)
            .await
            .map_err(|e| NetError::Kernel(format!("{ifname}: {e}")))?;
        self.up(ifname).await
    }

    /// Inside a task's namespace: the default route via `gateway`.
    pub async fn default_route(&self, gateway: Ipv4Addr) -> Result<(), NetError> {
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(gateway)
            .build();
        tolerate(self.handle.route().add(route).execute().await, &[EEXIST])
            .map_err(fail(format!("adding the default route via {gateway}")))
    }
}

fn fdb_message(index: u32, f: &Fdb) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = AddressFamily::Bridge;
    m.header.ifindex = index;
    m.header.state = NeighbourState::Permanent;
    m.header.flags = NeighbourFlags::Own;
    m.header.kind = RouteType::Unspec;
    m.attributes
        .push(NeighbourAttribute::LinkLayerAddress(f.mac.to_vec()));
    m.attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
            f.dst,
        )));
    m
}

fn parse_fdb(n: &NeighbourMessage) -> Option<Fdb> {
    let mut mac = None;
    let mut dst = None;
    for a in &n.attributes {
        match a {
            NeighbourAttribute::LinkLayerAddress(l) if l.len() == 6 => {
                let mut m = [0u8; 6];
                m.copy_from_slice(l);
                mac = Some(m);
            }
            NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => dst = Some(*ip),
            // a bridge-family entry's destination comes undecoded
            NeighbourAttribute::Destination(NeighbourAddress::Other(b)) if b.len() == 4 => {
                dst = Some(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
            }
            _ => {}
        }
    }
    Some(Fdb {
        mac: mac?,
        dst: dst?,
    })
}

fn parse_link(m: &LinkMessage) -> Option<Link> {
    let mut name = None;
    let mut master = None;
    let mut kind = LinkKind::Other;
    let mut mtu = 0;
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => name = Some(n.clone()),
            LinkAttribute::Controller(i) => master = Some(*i),
            LinkAttribute::Mtu(m) => mtu = *m,
            LinkAttribute::LinkInfo(infos) => kind = parse_kind(infos),
            _ => {}
        }
    }
    Some(Link {
        name: name?,
        index: m.header.index,
        kind,
        master,
        up: m.header.flags.contains(LinkFlags::Up),
        addrs: Vec::new(),
        mtu,
    })
}

fn parse_kind(infos: &[LinkInfo]) -> LinkKind {
    let mut kind = LinkKind::Other;
    for i in infos {
        match i {
            LinkInfo::Kind(InfoKind::Bridge) => kind = LinkKind::Bridge,
            LinkInfo::Kind(InfoKind::Veth) => kind = LinkKind::Veth,
            LinkInfo::Kind(InfoKind::Vxlan) if !matches!(kind, LinkKind::Vxlan { .. }) => {
                kind = LinkKind::Vxlan {
                    vni: 0,
                    local: None,
                }
            }
            LinkInfo::Data(InfoData::Vxlan(attrs)) => {
                let mut vni = 0;
                let mut local = None;
                for a in attrs {
                    match a {
                        InfoVxlan::Id(v) => vni = *v,
                        InfoVxlan::Local(ip) => local = Some(*ip),
                        _ => {}
                    }
                }
                kind = LinkKind::Vxlan { vni, local };
            }
            _ => {}
        }
    }
    kind
}
