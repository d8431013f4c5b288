//! `ClusterState`: the tables (one `BTreeMap` by id per object kind) and their indexes (tasks by service,
//! tasks by node, service by name, addresses by network (live tasks' and VIPs), unplaced tasks, each node's
//! load, services publishing ingress ports; stacks are keyed by name), with read accessors for everyone and one
//! crate-private write path, [`ClusterState::set`], that keeps the indexes in step with the tables.
//!
//! Must not: decide whether a change is allowed (that is `apply`), do I/O, read a clock or generate ids.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use super::touched::{insert, Touched};
use crate::model::{
    Cluster, Config, Meta, Network, Node, PublishMode, RestartHistory, RestartKey, Secret, Service,
    Stack, Task, TaskSpec, TaskState,
};

pub use super::kind::ObjectKind;

/// Derived lookups, rebuilt from the tables on restore and kept in step by [`ClusterState::set`].
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Indexes {
    tasks_by_service: BTreeMap<String, BTreeSet<String>>,
    tasks_by_node: BTreeMap<String, BTreeSet<String>>,
    service_by_name: BTreeMap<String, String>,
    /// (network id, IPv4 address as u32) → who holds it: every live task's attachment and every VIP.
    addresses: BTreeMap<(String, u32), AddressHolder>,
    /// Tasks waiting for a node: status New or Pending, desired state at most Running ([`unplaced`]).
    unplaced: BTreeSet<String>,
    /// Node id → what its non-terminal tasks add up to.
    node_loads: BTreeMap<String, LoadSum>,
    /// Services publishing a port in ingress mode.
    ingress_services: BTreeSet<String>,
}

/// Whether `task` waits for a node: status New or Pending and desired state at most Running (what IPAM
/// allocates for and the scheduler places from).
pub fn unplaced(task: &Task) -> bool {
    matches!(task.status.state, TaskState::New | TaskState::Pending)
        && task.desired_state <= TaskState::Running
}

/// Whether `service` publishes a port through the routing mesh.
pub fn publishes_ingress(service: &Service) -> bool {
    service
        .spec
        .endpoint
        .ports
        .iter()
        .any(|p| p.publish_mode == PublishMode::Ingress)
}

/// What a node already carries: non-terminal tasks, in total and per service, and their reservations.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeLoad {
    /// Non-terminal tasks on the node.
    pub tasks: u64,
    /// Non-terminal tasks on the node, per service id.
    pub by_service: BTreeMap<String, u64>,
    /// Reserved CPU (billionths).
    pub nano_cpus: u64,
    /// Reserved memory (bytes).
    pub memory_bytes: u64,
}

impl NodeLoad {
    /// Counts one more task of `service_id` with `spec`'s reservations.
    pub fn add(&mut self, service_id: &str, spec: &TaskSpec) {
        self.tasks += 1;
        *self.by_service.entry(service_id.to_owned()).or_default() += 1;
        let r = &spec.resources.reservations;
        self.nano_cpus = self.nano_cpus.saturating_add(r.nano_cpus.max(0) as u64);
        self.memory_bytes = self.memory_bytes.saturating_add(r.memory_bytes);
    }

    /// Tasks of `service_id`.
    pub fn of_service(&self, service_id: &str) -> u64 {
        self.by_service.get(service_id).copied().unwrap_or(0)
    }
}

/// A node's load kept by the index: exact sums (so a removal undoes an addition), shown saturated as
/// [`NodeLoad::add`] would have made them.
#[derive(Clone, Debug, Default, PartialEq)]
struct LoadSum {
    load: NodeLoad,
    nano_cpus: u128,
    memory_bytes: u128,
}

impl LoadSum {
    fn change(&mut self, task: &Task, add: bool) {
        let r = &task.spec.resources.reservations;
        let cpus = r.nano_cpus.max(0) as u128;
        let memory = u128::from(r.memory_bytes);
        let l = &mut self.load;
        if add {
            l.tasks += 1;
            *l.by_service.entry(task.service_id.clone()).or_default() += 1;
            self.nano_cpus += cpus;
            self.memory_bytes += memory;
        } else {
            l.tasks = l.tasks.saturating_sub(1);
            if let Some(n) = l.by_service.get_mut(&task.service_id) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    l.by_service.remove(&task.service_id);
                }
            }
            self.nano_cpus = self.nano_cpus.saturating_sub(cpus);
            self.memory_bytes = self.memory_bytes.saturating_sub(memory);
        }
        l.nano_cpus = u64::try_from(self.nano_cpus).unwrap_or(u64::MAX);
        l.memory_bytes = u64::try_from(self.memory_bytes).unwrap_or(u64::MAX);
    }
}

/// Who holds an address on a network.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum AddressHolder {
    /// A task that is not terminal (its attachment).
    Task(String),
    /// A service (its VIP).
    Vip(String),
}

impl fmt::Display for AddressHolder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddressHolder::Task(id) => write!(f, "task {id}"),
            AddressHolder::Vip(id) => write!(f, "the VIP of service {id}"),
        }
    }
}

/// The index keys of `addresses` (unparsable addresses are left out: apply refuses them).
fn address_keys(
    addresses: &[crate::model::NetworkAddress],
) -> impl Iterator<Item = (String, u32)> + '_ {
    addresses.iter().filter_map(|a| {
        crate::model::cidr::host_of(&a.addr).map(|ip| (a.network_id.clone(), u32::from(ip)))
    })
}

/// Adds or removes `holder`'s addresses (a removal only takes out entries `holder` holds).
fn index_addresses(
    map: &mut BTreeMap<(String, u32), AddressHolder>,
    addresses: &[crate::model::NetworkAddress],
    holder: AddressHolder,
    add: bool,
) {
    for key in address_keys(addresses) {
        if add {
            map.insert(key, holder.clone());
        } else if map.get(&key) == Some(&holder) {
            map.remove(&key);
        }
    }
}

fn add_to(map: &mut BTreeMap<String, BTreeSet<String>>, key: &str, id: &str) {
    map.entry(key.to_owned()).or_default().insert(id.to_owned());
}

fn remove_from(map: &mut BTreeMap<String, BTreeSet<String>>, key: &str, id: &str) {
    if let Some(set) = map.get_mut(key) {
        set.remove(id);
        if set.is_empty() {
            map.remove(key);
        }
    }
}

/// The whole replicated state: desired state written by managers and observed state reported by agents.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClusterState {
    pub(crate) applied_index: u64,
    pub(crate) services: BTreeMap<String, Service>,
    pub(crate) tasks: BTreeMap<String, Task>,
    pub(crate) nodes: BTreeMap<String, Node>,
    pub(crate) secrets: BTreeMap<String, Secret>,
    pub(crate) configs: BTreeMap<String, Config>,
    pub(crate) networks: BTreeMap<String, Network>,
    pub(crate) stacks: BTreeMap<String, Stack>,
    pub(crate) restart_histories: BTreeMap<String, RestartHistory>,
    pub(crate) clusters: BTreeMap<String, Cluster>,
    pub(crate) idx: Indexes,
}

/// A kind of stored object: its table, key, metadata and index entries. Crate-private plumbing for the
/// generic create/update/delete in `apply`.
pub(crate) trait StoredObject: Clone + 'static {
    const KIND: ObjectKind;
    fn key(&self) -> String;
    fn meta(&self) -> &Meta;
    fn meta_mut(&mut self) -> &mut Meta;
    fn table(state: &ClusterState) -> &BTreeMap<String, Self>;
    fn table_mut(state: &mut ClusterState) -> &mut BTreeMap<String, Self>;
    /// Adds (`add`) or removes this object's index entries.
    fn reindex(&self, _idx: &mut Indexes, _add: bool) {}
    /// Records the keys this object's index entries hang off (beyond its own key) in `t`.
    fn touch(&self, _t: &mut Touched) {}
}

macro_rules! stored {
    ($ty:ty, $kind:ident, $table:ident, |$o:ident| $key:expr) => {
        impl StoredObject for $ty {
            const KIND: ObjectKind = ObjectKind::$kind;
            fn key(&self) -> String {
                let $o = self;
                $key
            }
            fn meta(&self) -> &Meta {
                &self.meta
            }
            fn meta_mut(&mut self) -> &mut Meta {
                &mut self.meta
            }
            fn table(state: &ClusterState) -> &BTreeMap<String, Self> {
                &state.$table
            }
            fn table_mut(state: &mut ClusterState) -> &mut BTreeMap<String, Self> {
                &mut state.$table
            }
            stored!(@reindex $kind);
            stored!(@touch $kind);
        }
    };
    (@touch Service) => {
        fn touch(&self, t: &mut Touched) {
            for a in &self.virtual_ips {
                insert(&mut t.address_networks, &a.network_id);
            }
        }
    };
    (@touch Task) => {
        fn touch(&self, t: &mut Touched) {
            insert(&mut t.task_services, &self.service_id);
            if let Some(node) = &self.node_id {
                insert(&mut t.task_nodes, node);
            }
            for a in &self.attachments {
                insert(&mut t.address_networks, &a.network_id);
            }
        }
    };
    (@touch RestartHistory) => {
        fn touch(&self, t: &mut Touched) {
            insert(&mut t.task_services, self.key.service_id());
        }
    };
    (@touch $other:ident) => {};
    (@reindex Service) => {
        fn reindex(&self, idx: &mut Indexes, add: bool) {
            if add {
                idx.service_by_name.insert(self.spec.name.clone(), self.id.clone());
            } else if idx.service_by_name.get(&self.spec.name) == Some(&self.id) {
                idx.service_by_name.remove(&self.spec.name);
            }
            let holder = AddressHolder::Vip(self.id.clone());
            index_addresses(&mut idx.addresses, &self.virtual_ips, holder, add);
            if publishes_ingress(self) {
                if add {
                    idx.ingress_services.insert(self.id.clone());
                } else {
                    idx.ingress_services.remove(&self.id);
                }
            }
        }
    };
    (@reindex Task) => {
        fn reindex(&self, idx: &mut Indexes, add: bool) {
            let by_node = self.node_id.as_deref();
            if add {
                add_to(&mut idx.tasks_by_service, &self.service_id, &self.id);
                if let Some(node) = by_node {
                    add_to(&mut idx.tasks_by_node, node, &self.id);
                }
            } else {
                remove_from(&mut idx.tasks_by_service, &self.service_id, &self.id);
                if let Some(node) = by_node {
                    remove_from(&mut idx.tasks_by_node, node, &self.id);
                }
            }
            if unplaced(self) {
                if add {
                    idx.unplaced.insert(self.id.clone());
                } else {
                    idx.unplaced.remove(&self.id);
                }
            }
            // a terminal task's addresses are free again, and it no longer weighs on its node
            if !self.status.state.is_terminal() {
                let holder = AddressHolder::Task(self.id.clone());
                index_addresses(&mut idx.addresses, &self.attachments, holder, add);
                if let Some(node) = by_node {
                    if add {
                        idx.node_loads.entry(node.to_owned()).or_default().change(self, true);
                    } else if let Some(sum) = idx.node_loads.get_mut(node) {
                        sum.change(self, false);
                        if sum.load.tasks == 0 {
                            idx.node_loads.remove(node);
                        }
                    }
                }
            }
        }
    };
    (@reindex $other:ident) => {};
}

stored!(Service, Service, services, |o| o.id.clone());
stored!(Task, Task, tasks, |o| o.id.clone());
stored!(Node, Node, nodes, |o| o.id.clone());
stored!(Secret, Secret, secrets, |o| o.id.clone());
stored!(Config, Config, configs, |o| o.id.clone());
stored!(Network, Network, networks, |o| o.id.clone());
stored!(Stack, Stack, stacks, |o| o.name.clone());
stored!(RestartHistory, RestartHistory, restart_histories, |o| o
    .key
    .id());
stored!(Cluster, Cluster, clusters, |o| o.id.clone());

impl ClusterState {
    /// An empty state (nothing applied yet).
    pub fn new() -> ClusterState {
        ClusterState::default()
    }

    /// The crate's one write path: replaces the object stored under `key` with `new` (or removes it) and
    /// keeps the indexes in step. Returns the previous object.
    pub(crate) fn set<T: StoredObject>(&mut self, key: &str, new: Option<T>) -> Option<T> {
        self.set_touching(key, new, None)
    }

    /// [`ClusterState::set`], recording in `touched` (when given) the key and what its index entries hang off,
    /// before and after.
    pub(crate) fn set_touching<T: StoredObject>(
        &mut self,
        key: &str,
        new: Option<T>,
        touched: Option<&mut Touched>,
    ) -> Option<T> {
        let old = T::table_mut(self).remove(key);
        if let Some(t) = touched {
            t.object(T::KIND, key);
            if let Some(old) = &old {
                old.touch(t);
            }
            if let Some(new) = &new {
                new.touch(t);
            }
        }
        if let Some(old) = &old {
            old.reindex(&mut self.idx, false);
        }
        if let Some(new) = new {
            new.reindex(&mut self.idx, true);
            T::table_mut(self).insert(key.to_owned(), new);
        }
        old
    }

    /// Rebuilds every index from the tables (after a restore).
    pub(crate) fn rebuild_indexes(&mut self) {
        let mut idx = Indexes::default();
        for s in self.services.values() {
            s.reindex(&mut idx, true);
        }
        for t in self.tasks.values() {
            t.reindex(&mut idx, true);
        }
        self.idx = idx;
    }

    /// The Raft log index of the last batch that changed the state (0 before any).
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    /// A service by id.
    pub fn service(&self, id: &str) -> Option<&Service> {
        self.services.get(id)
    }

    /// A service by its (unique) name.
    pub fn service_by_name(&self, name: &str) -> Option<&Service> {
        self.idx
            .service_by_name
            .get(name)
            .and_then(|id| self.services.get(id))
    }

    /// All services, by id.
    pub fn services(&self) -> impl Iterator<Item = &Service> {
        self.services.values()
    }

    /// A task by id.
    pub fn task(&self, id: &str) -> Option<&Task> {
        self.tasks.get(id)
    }

    /// All tasks, by id.
    pub fn tasks(&self) -> impl Iterator<Item = &Task> {
        self.tasks.values()
    }

    /// The tasks of a service, by task id.
    pub fn tasks_of_service<'a>(&'a self, service_id: &str) -> impl Iterator<Item = &'a Task> + 'a {
        self.lookup_tasks(self.idx.tasks_by_service.get(service_id))
    }

    /// The tasks assigned to a node, by task id.
    pub fn tasks_on_node<'a>(&'a self, node_id: &str) -> impl Iterator<Item = &'a Task> + 'a {
        self.lookup_tasks(self.idx.tasks_by_node.get(node_id))
    }

    fn lookup_tasks<'a>(
        &'a self,
        ids: Option<&'a BTreeSet<String>>,
    ) -> impl Iterator<Item = &'a Task> + 'a {
        ids.into_iter()
            .flatten()
            .filter_map(move |id| self.tasks.get(id))
    }

    /// The tasks waiting for a node (status New or Pending, desired state at most Running; see
    /// [`unplaced`]), by task id.
    pub fn unplaced_tasks(&self) -> impl Iterator<Item = &Task> + '_ {
        self.lookup_tasks(Some(&self.idx.unplaced))
    }

    /// What the non-terminal tasks assigned to `node_id` add up to (None: none).
    pub fn node_load(&self, node_id: &str) -> Option<&NodeLoad> {
        self.idx.node_loads.get(node_id).map(|s| &s.load)
    }

    /// Every node's load (nodes with non-terminal tasks only; a task's node need not exist), by node id.
    pub fn node_loads(&self) -> impl Iterator<Item = (&str, &NodeLoad)> + '_ {
        self.idx
            .node_loads
            .iter()
            .map(|(id, s)| (id.as_str(), &s.load))
    }

    /// The services publishing a port in ingress mode, by id.
    pub fn ingress_services(&self) -> impl Iterator<Item = &Service> + '_ {
        self.idx
            .ingress_services
            .iter()
            .filter_map(|id| self.services.get(id))
    }

    /// A node by id.
    pub fn node(&self, id: &str) -> Option<&Node> {
        self.nodes.get(id)
    }

    /// All nodes, by id.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.values()
    }

    /// A secret by id (its data is ciphertext).
    pub fn secret(&self, id: &str) -> Option<&Secret> {
        self.secrets.get(id)
    }

    /// All secrets, by id.
    pub fn secrets(&self) -> impl Iterator<Item = &Secret> {
        self.secrets.values()
    }

    /// A config by id.
    pub fn config(&self, id: &str) -> Option<&Config> {
        self.configs.get(id)
    }

    /// All configs, by id.
    pub fn configs(&self) -> impl Iterator<Item = &Config> {
        self.configs.values()
    }

    /// A network by id.
    pub fn network(&self, id: &str) -> Option<&Network> {
        self.networks.get(id)
    }

    /// A network by its (unique) name.
    pub fn network_by_name(&self, name: &str) -> Option<&Network> {
        self.networks.values().find(|n| n.spec.name == name)
    }

    /// Who holds `addr` on network `network_id`: a live task or a service's VIP.
    pub fn address_holder(
        &self,
        network_id: &str,
        addr: std::net::Ipv4Addr,
    ) -> Option<&AddressHolder> {
        self.idx
            .addresses
            .get(&(network_id.to_owned(), u32::from(addr)))
    }

    /// Every address held on network `network_id` (live tasks' and VIPs), in address order.
    pub fn addresses_on<'a>(
        &'a self,
        network_id: &str,
    ) -> impl Iterator<Item = (std::net::Ipv4Addr, &'a AddressHolder)> + 'a {
        let range = (network_id.to_owned(), 0)..=(network_id.to_owned(), u32::MAX);
        self.idx
            .addresses
            .range(range)
            .map(|((_, ip), holder)| (std::net::Ipv4Addr::from(*ip), holder))
    }

    /// All networks, by id.
    pub fn networks(&self) -> impl Iterator<Item = &Network> {
        self.networks.values()
    }

    /// A stack by name (stacks are keyed by name).
    pub fn stack(&self, name: &str) -> Option<&Stack> {
        self.stacks.get(name)
    }

    /// All stacks, by name.
    pub fn stacks(&self) -> impl Iterator<Item = &Stack> {
        self.stacks.values()
    }

    /// The restart history of a slot or node.
    pub fn restart_history(&self, key: &RestartKey) -> Option<&RestartHistory> {
        self.restart_histories.get(&key.id())
    }

    /// The restart histories of the slots and nodes of service `service_id`.
    pub fn restart_histories_of<'a>(
        &'a self,
        service_id: &'a str,
    ) -> impl Iterator<Item = &'a RestartHistory> + 'a {
        self.restart_histories
            .range(service_id.to_owned()..)
            .take_while(move |(k, _)| k.starts_with(service_id))
            .map(|(_, h)| h)
            .filter(move |h| h.key.service_id() == service_id)
    }

    /// All restart histories.
    pub fn restart_histories(&self) -> impl Iterator<Item = &RestartHistory> {
        self.restart_histories.values()
    }

    /// The cluster object, once created.
    pub fn cluster(&self) -> Option<&Cluster> {
        self.clusters.values().next()
    }

    /// How long the node certificates issued now are valid (the cluster's `--cert-expiry`; 90 days before the
    /// cluster object exists).
    pub fn cert_lifetime(&self) -> std::time::Duration {
        let secs = self
            .cluster()
            .map_or_else(crate::model::default_cert_expiry_secs, |c| {
                c.settings.cert_expiry_secs
            });
        std::time::Duration::from_secs(secs.max(1))
    }

    /// Whether `node_id` was removed with `node rm` (its certificate is refused from then on).
    pub fn is_removed(&self, node_id: &str) -> bool {
        self.cluster()
            .is_some_and(|c| c.removed_nodes.iter().any(|n| n == node_id))
    }

    /// The cluster's limits (the defaults before the cluster object exists).
    pub fn limits(&self) -> crate::model::Limits {
        self.cluster()
            .map(|c| c.settings.limits.clone())
            .unwrap_or_default()
    }
}
