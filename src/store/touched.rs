//! [`Touched`]: which keys one committed entry (or several) touched — the objects it created, updated or
//! deleted, and the keys their index entries hang off (a task's service and node, the networks of a task's or
//! a service's addresses), before and after the change. Recorded by `apply`, carried on the change feed
//! ([`super::Commit`], [`super::Store::touched_since`]), read by the driver to run controllers on what changed.
//!
//! Must not: be used to decide what is *in* the state (read the state for that): it only says where to look.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::kind::ObjectKind;

/// The keys an entry touched. A task change touches the task, its service, the node it is or was on and the
/// networks of its attachments (old and new); a service change touches the service and the networks of its
/// VIPs (old and new). Unions of several entries are again a `Touched`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Touched {
    /// The objects created, updated or deleted, by kind (stacks by name, restart histories by key id).
    pub objects: BTreeMap<ObjectKind, BTreeSet<String>>,
    /// Services one of whose tasks (or restart histories) changed.
    pub task_services: BTreeSet<String>,
    /// Nodes a changed task is or was assigned to.
    pub task_nodes: BTreeSet<String>,
    /// Networks on which an address holder changed (a task's attachment, a service's VIP).
    pub address_networks: BTreeSet<String>,
}

impl Touched {
    /// Nothing touched.
    pub fn new() -> Touched {
        Touched::default()
    }

    /// Whether nothing was touched.
    pub fn is_empty(&self) -> bool {
        self.objects.values().all(BTreeSet::is_empty)
            && self.task_services.is_empty()
            && self.task_nodes.is_empty()
            && self.address_networks.is_empty()
    }

    /// The keys of kind `kind` that were touched.
    pub fn of(&self, kind: ObjectKind) -> impl Iterator<Item = &str> + '_ {
        self.objects
            .get(&kind)
            .into_iter()
            .flatten()
            .map(String::as_str)
    }

    /// Whether any object of `kind` was touched.
    pub fn any(&self, kind: ObjectKind) -> bool {
        self.objects.get(&kind).is_some_and(|s| !s.is_empty())
    }

    /// How many keys this holds (a measure of its size).
    pub fn len(&self) -> usize {
        self.objects.values().map(BTreeSet::len).sum::<usize>()
            + self.task_services.len()
            + self.task_nodes.len()
            + self.address_networks.len()
    }

    /// Records that the object `key` of `kind` was touched.
    pub fn object(&mut self, kind: ObjectKind, key: &str) {
        let set = self.objects.entry(kind).or_default();
        if !set.contains(key) {
            set.insert(key.to_owned());
        }
    }

    /// Adds everything `other` touched.
    pub fn extend(&mut self, other: &Touched) {
        for (kind, keys) in &other.objects {
            let set = self.objects.entry(*kind).or_default();
            set.extend(keys.iter().cloned());
        }
        self.task_services
            .extend(other.task_services.iter().cloned());
        self.task_nodes.extend(other.task_nodes.iter().cloned());
        self.address_networks
            .extend(other.address_networks.iter().cloned());
    }
}

pub(crate) fn insert(set: &mut BTreeSet<String>, key: &str) {
    if !set.contains(key) {
        set.insert(key.to_owned());
    }
}
