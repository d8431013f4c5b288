//! A task's interfaces, plumbed from the node into the task's network namespace by an open namespace file
//! (a process task's init, a container's pid: the way CNI plugins do it): its networks ensured first (the
//! converge loop may not have run yet), loopback up, one veth pair per attachment — the node's end enslaved to
//! the network's bridge, the task's end created directly inside the namespace as `ethN` with the MAC derived
//! from its address — its address, and the default route via the first non-internal network's gateway.

use std::collections::BTreeSet;
use std::os::fd::BorrowedFd;

use super::desired::{Attachment, NetPlan};
use super::diff::{diff, overlay_mtu};
use super::netlink::Netlink;
use super::NetError;

/// Plumbs `attachments` into the namespace `ns`. Needs root and a tokio runtime.
pub async fn plumb(ns: BorrowedFd<'_>, attachments: &[Attachment]) -> Result<(), NetError> {
    let host = Netlink::here()?;
    let mut seen = BTreeSet::new();
    let nets: Vec<NetPlan> = attachments
        .iter()
        .filter(|a| seen.insert(a.network.id.clone()))
        .map(|a| a.network.clone())
        .collect();
    let observed = host.observe().await?;
    host.apply(&diff(&nets, &observed, false)).await?;
    let inside = Netlink::in_namespace(ns)?;
    inside.up("lo").await?;
    for a in attachments {
        // an overlay's tasks leave room for the VXLAN header
        let mtu = a
            .network
            .vxlan
            .as_ref()
            .and_then(|v| overlay_mtu(&observed, v.local));
        host.add_veth(&a.host_veth, &a.network.bridge, &a.ifname, a.mac, mtu, ns)
            .await?;
        inside.configure(&a.ifname, a.address, a.prefix).await?;
    }
    if let Some(a) = attachments.iter().find(|a| a.default_route) {
        inside.default_route(a.network.gateway).await?;
    }
    Ok(())
}

/// Deletes the node's ends of a task's veth pairs (the task's ends go with them). Missing links are fine: a
/// namespace that ended took its pairs along.
pub async fn unplumb(host_veths: &[String]) -> Result<(), NetError> {
    if host_veths.is_empty() {
        return Ok(());
    }
    let host = Netlink::here()?;
    for v in host_veths {
        host.del_link(v).await?;
    }
    Ok(())
}
