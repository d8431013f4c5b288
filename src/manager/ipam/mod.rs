//! IPAM, the managers' address allocator, as a pure controller (`reconcile(&ClusterState, now, ids) -> Plan`,
//! run by the driver between the orchestrators and the scheduler, like Swarm's allocator before its
//! scheduler). Each round it gives
//! - every network without an allocation a subnet (the first one of its spec's `subnets`, else the first free
//!   subnet of the cluster's default address pool), its gateway (the first host) and the lowest free VNI;
//! - every service in `endpoint_mode: vip` a VIP on each network it attaches to (none in dnsrr);
//! - every task that waits for a node (New or Pending) an address on each network it attaches to. The
//!   scheduler places only tasks [`allocated`] says are complete.
//!
//! A round changes at most `MAX_TASK_OPS_PER_ROUND` services and as many tasks (a bounded Raft entry) and
//! asks to run again at once when more wait.
//!
//! A task attaches to the networks its spec names (by name) and to the ingress network when its service
//! publishes a port in ingress mode. Which addresses are taken is read from the store: live tasks' and VIPs'
//! (a terminal or deleted task's address is free again). The search on a network starts after the last
//! address handed out (`NetworkAllocation::next_host`), so a just-freed address is not reused while the subnet
//! has others. The store's apply refuses duplicates whatever this code does.
//!
//! Must not: place tasks (the scheduler), create or stop them (the orchestrators), read a clock.

pub mod netmap;
pub mod pick;
pub mod usage;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use super::{Plan, Scope};
use crate::model::limits::MAX_TASK_OPS_PER_ROUND;
use crate::model::{
    Cidr, EndpointMode, Network, NetworkAddress, NetworkAllocation, Service, Task, TaskState,
    TaskStatus,
};
use crate::store::{ClusterState, Op};
use crate::util::{IdSource, Millis};

/// The name of the routing mesh's network, made with the cluster.
pub const INGRESS_NAME: &str = "ingress";

/// The ingress network's spec (created by the founding manager with the cluster object).
pub fn ingress_spec() -> crate::model::NetworkSpec {
    crate::model::NetworkSpec {
        name: INGRESS_NAME.into(),
        driver: "overlay".into(),
        ingress: true,
        ..Default::default()
    }
}

/// The cluster's ingress network, if there is one.
pub fn ingress(state: &ClusterState) -> Option<&Network> {
    state.networks().find(|n| n.spec.ingress)
}

pub use crate::store::publishes_ingress;

/// The networks a task of `service` made from `targets` (its spec's network names) attaches to, in order,
/// plus ingress when the service publishes through the mesh. Err names the first network that does not exist.
pub fn wanted_networks<'a>(
    state: &'a ClusterState,
    service: Option<&Service>,
    targets: &[crate::model::NetworkAttachment],
) -> Result<Vec<&'a Network>, String> {
    let mut out: Vec<&Network> = Vec::new();
    for t in targets {
        let n = state
            .network_by_name(&t.target)
            .ok_or_else(|| format!("network {} not found", t.target))?;
        if !out.iter().any(|o| o.id == n.id) {
            out.push(n);
        }
    }
    if let (Some(svc), Some(ingress)) = (service, ingress(state)) {
        if publishes_ingress(svc) && !out.iter().any(|o| o.id == ingress.id) {
            out.push(ingress);
        }
    }
    Ok(out)
}

/// Whether `task` has an address on every network it attaches to: the scheduler's precondition.
pub fn allocated(state: &ClusterState, task: &Task) -> bool {
    let service = state.service(&task.service_id);
    match wanted_networks(state, service, &task.spec.networks) {
        Ok(nets) => nets
            .iter()
            .all(|n| task.attachments.iter().any(|a| a.network_id == n.id)),
        Err(_) => false,
    }
}

/// One network as this round sees it: its subnet, the addresses taken (stored and picked this round) and
/// the search cursor.
struct Pool {
    subnet: Cidr,
    used: BTreeSet<Ipv4Addr>,
    cursor: u64,
    changed: bool,
}

impl Pool {
    fn take(&mut self) -> Option<String> {
        let (addr, offset) = pick::address(&self.subnet, self.cursor, &self.used)?;
        self.used.insert(addr);
        self.cursor = offset + 1;
        self.changed = true;
        Some(self.subnet.with_host(addr))
    }
}

/// The allocation round in progress.
struct Round<'a> {
    state: &'a ClusterState,
    /// Network id → its allocation as this round ends it (stored, or made now).
    allocs: BTreeMap<String, NetworkAllocation>,
    pools: BTreeMap<String, Pool>,
    made: BTreeSet<String>,
}

impl<'a> Round<'a> {
    fn new(state: &'a ClusterState) -> Self {
        let allocs = state
            .networks()
            .filter_map(|n| n.allocation.clone().map(|a| (n.id.clone(), a)))
            .collect();
        Round {
            state,
            allocs,
            pools: BTreeMap::new(),
            made: BTreeSet::new(),
        }
    }

    /// Allocates every network that lacks an allocation: those with the user's subnet first (they can have no
    /// other), then ingress, then the oldest first.
    fn networks(&mut self) {
        let settings = self
            .state
            .cluster()
            .map(|c| c.settings.clone())
            .unwrap_or_default();
        let pools: Vec<Cidr> = settings
            .default_addr_pool
            .iter()
            .filter_map(|p| Cidr::parse(p).ok())
            .collect();
        let mut todo: Vec<&Network> = self
            .state
            .networks()
            .filter(|n| n.allocation.is_none())
            .collect();
        todo.sort_by_key(|n| {
            (
                n.spec.subnets.is_empty(),
                !n.spec.ingress,
                n.meta.created_at,
                n.id.clone(),
            )
        });
        for n in todo {
            let taken: Vec<Cidr> = self
                .allocs
                .values()
                .filter_map(|a| Cidr::parse(&a.subnet).ok())
                .collect();
            let subnet = match n.spec.subnets.first() {
                // the user's subnet; one that does not parse or overlaps is refused where it is created
                Some(s) => Cidr::parse(s)
                    .ok()
                    .filter(|c| !taken.iter().any(|t| t.overlaps(c))),
                None => pick::subnet_from_pool(&pools, settings.default_addr_pool_mask_len, &taken),
            };
            let vnis: BTreeSet<u32> = self.allocs.values().map(|a| a.vni).collect();
            let (Some(subnet), Some(vni)) = (subnet, pick::vni(&vnis)) else {
                continue;
            };
            self.allocs.insert(
                n.id.clone(),
                NetworkAllocation {
                    subnet: subnet.to_string(),
                    gateway: subnet.gateway().to_string(),
                    vni,
                    scope: if n.spec.driver == "bridge" {
                        "local"
                    } else {
                        "swarm"
                    }
                    .into(),
                    next_host: 0,
                },
            );
            self.made.insert(n.id.clone());
        }
    }

    /// The address pool of network `id`, once it has a subnet.
    fn pool(&mut self, id: &str) -> Option<&mut Pool> {
        if !self.pools.contains_key(id) {
            let alloc = self.allocs.get(id)?;
            let subnet = Cidr::parse(&alloc.subnet).ok()?;
            let mut used: BTreeSet<Ipv4Addr> =
                self.state.addresses_on(id).map(|(a, _)| a).collect();
            used.insert(subnet.gateway());
            self.pools.insert(
                id.to_owned(),
                Pool {
                    subnet,
                    used,
                    cursor: alloc.next_host,
                    changed: false,
                },
            );
        }
        self.pools.get_mut(id)
    }

    /// The VIPs `service` should have, or None when they are right already.
    fn vips(&mut self, service: &Service) -> Option<Vec<NetworkAddress>> {
        let nets: Vec<String> = match service.spec.endpoint.mode {
            EndpointMode::Dnsrr => Vec::new(),
            EndpointMode::Vip => {
                wanted_networks(self.state, Some(service), &service.spec.task.networks)
                    .map(|ns| ns.iter().map(|n| n.id.clone()).collect())
                    .unwrap_or_else(|_| {
                        // keep what exists while a network is missing; add the ones that resolve
                        service
                            .spec
                            .task
                            .networks
                            .iter()
                            .filter_map(|t| {
                                self.state.network_by_name(&t.target).map(|n| n.id.clone())
                            })
                            .collect()
                    })
            }
        };
        let mut out: Vec<NetworkAddress> = service
            .virtual_ips
            .iter()
            .filter(|v| nets.contains(&v.network_id))
            .cloned()
            .collect();
        for net in &nets {
            if out.iter().any(|v| &v.network_id == net) {
                continue;
            }
            if let Some(addr) = self.pool(net).and_then(Pool::take) {
                out.push(NetworkAddress {
                    network_id: net.clone(),
                    addr,
                });
            }
        }
        (out != service.virtual_ips).then_some(out)
    }

    /// The task with addresses on every network it attaches to, or (as Pending) why it cannot have them yet.
    fn task(&mut self, task: &Task, now: Millis) -> Option<Task> {
        let service = self.state.service(&task.service_id);
        let nets = match wanted_networks(self.state, service, &task.spec.networks) {
            Ok(nets) => nets.iter().map(|n| n.id.clone()).collect::<Vec<_>>(),
            Err(why) => return pend(task, why, now),
        };
        let mut new = task.clone();
        new.attachments.retain(|a| nets.contains(&a.network_id));
        for net in &nets {
            if new.attachments.iter().any(|a| &a.network_id == net) {
                continue;
            }
            let name = self
                .state
                .network(net)
                .map_or(net.as_str(), |n| n.spec.name.as_str());
            if !self.allocs.contains_key(net) {
                // the network gets its subnet in a later round (or never: its spec says why)
                let why = format!("network {name} has no subnet allocated yet");
                return pend(task, why, now);
            }
            let Some(addr) = self.pool(net).and_then(Pool::take) else {
                let why = format!("no free address left on network {name}");
                return pend(task, why, now);
            };
            new.attachments.push(NetworkAddress {
                network_id: net.clone(),
                addr,
            });
        }
        (new.attachments != task.attachments).then_some(new)
    }
}

/// `task` Pending with `message` (None when it already is).
fn pend(task: &Task, message: String, now: Millis) -> Option<Task> {
    if task.status.state == TaskState::Pending && task.status.message == message {
        return None;
    }
    let mut new = task.clone();
    new.status = TaskStatus::new(TaskState::Pending, now);
    new.status.message = message;
    Some(new)
}

/// Allocates what lacks an allocation (see the module docs).
pub fn reconcile(state: &ClusterState, now: Millis, ids: &mut dyn IdSource) -> Plan {
    reconcile_in(state, &Scope::All, now, ids)
}

/// [`reconcile`] giving VIPs to the services of `scope` only; networks and the tasks waiting for a node (the
/// store's index of them) whatever the scope.
pub fn reconcile_in(
    state: &ClusterState,
    scope: &Scope,
    now: Millis,
    _ids: &mut dyn IdSource,
) -> Plan {
    let mut round = Round::new(state);
    round.networks();
    let mut service_ops = Vec::new();
    let mut more = false;
    for s in scope.services(state) {
        if service_ops.len() >= MAX_TASK_OPS_PER_ROUND {
            more = true;
            break;
        }
        if let Some(vips) = round.vips(s) {
            let mut new = s.clone();
            new.virtual_ips = vips;
            service_ops.push(Op::UpdateService {
                service: new,
                expected_version: s.meta.version,
            });
        }
    }
    let mut task_ops = Vec::new();
    // the tasks waiting for a node (New or Pending, may still run), from the store's index
    for t in state.unplaced_tasks() {
        if task_ops.len() >= MAX_TASK_OPS_PER_ROUND {
            more = true;
            break;
        }
        if let Some(new) = round.task(t, now) {
            task_ops.push(Op::UpdateTask {
                task: new,
                expected_version: t.meta.version,
            });
        }
    }
    let mut plan = Plan::new();
    for n in state.networks() {
        let cursor = round
            .pools
            .get(&n.id)
            .filter(|p| p.changed)
            .map(|p| p.cursor);
        if !round.made.contains(&n.id) && cursor.is_none() {
            continue;
        }
        let Some(mut alloc) = round.allocs.get(&n.id).cloned() else {
            continue;
        };
        if let Some(c) = cursor {
            alloc.next_host = c;
        }
        let mut new = n.clone();
        new.allocation = Some(alloc);
        plan.ops.push(Op::UpdateNetwork {
            network: new,
            expected_version: n.meta.version,
        });
    }
    plan.ops.extend(service_ops);
    plan.ops.extend(task_ops);
    if more {
        plan.requeue(std::time::Duration::ZERO);
    }
    plan
}
