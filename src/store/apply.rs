//! Deterministic apply: one `Batch` at one Raft log index, all or nothing. Each op is checked (existence,
//! expected version, name uniqueness (per version for secrets and configs), a task's service and slot fixed, its states only moving forward) and
//! applied in order while an undo log records what it replaced; the first refused op rolls everything back.
//! Applied objects get `meta.version` = the log index and `updated_at` = the batch's time. Every object is held
//! to the cluster's limits (`model::limits`) here too, so an entry past a limit is refused whatever the client.
//!
//! Must not: generate ids, read a clock, use randomness or iterate a hash map: two managers applying the same
//! entry to the same state must end up with identical states (DESIGN invariant 1).

use super::ops::{Batch, BatchRejected, Event, Op, Rejection};
use super::state::{AddressHolder, ClusterState, ObjectKind, StoredObject};
use super::touched::Touched;
use crate::model::cidr::{check_pool, parse_addr_prefix, Cidr};
use crate::model::limits::{self, OverLimit, CEILING_TASK_HISTORY, MAX_SECRET_SIZE};
use crate::model::{
    object_version, Cluster, Config, FileObjectSpec, Meta, Network, NetworkAddress, Node,
    RestartHistory, Secret, Service, Stack, Task,
};

/// The rejection for `error` of the object `name` of kind `T`.
fn over<T: StoredObject>(name: &str) -> impl FnOnce(OverLimit) -> Rejection + '_ {
    move |error| Rejection::OverLimit {
        kind: T::KIND,
        name: name.to_owned(),
        error: error.to_string(),
    }
}

/// Sealing adds a nonce and a tag to a secret's data: what the store may hold for [`MAX_SECRET_SIZE`].
const SEALED_OVERHEAD: usize = 64;

/// The size limits of a secret or config: its data and its labels.
fn check_file_object<T: StoredObject>(
    old: Option<&FileObjectSpec>,
    new: &FileObjectSpec,
    max_data: usize,
) -> Result<(), Rejection> {
    let data = |s: &FileObjectSpec| s.data.0.len() as u64;
    limits::check_labels("labels", &new.labels, old.map(|o| &o.labels))
        .and_then(|_| {
            limits::bounded(
                "data bytes",
                data(new),
                old.map(data),
                max_data as u64,
                None,
            )
        })
        .map_err(over::<T>(&new.name))
}

/// Kind-specific rules beyond existence and version, checked before a create (`old` is `None`) or update.
trait Validate: StoredObject {
    fn validate(_state: &ClusterState, _old: Option<&Self>, _new: &Self) -> Result<(), Rejection> {
        Ok(())
    }
}

impl Validate for Service {
    fn validate(state: &ClusterState, old: Option<&Self>, new: &Self) -> Result<(), Rejection> {
        check_addresses(state, &new.virtual_ips, &AddressHolder::Vip(new.id.clone()))?;
        state
            .limits()
            .check_service(&new.spec, old.map(|o| &o.spec))
            .map_err(over::<Self>(&new.spec.name))?;
        match state.service_by_name(&new.spec.name) {
            Some(other) if other.id != new.id => Err(Rejection::NameConflict {
                kind: ObjectKind::Service,
                name: new.spec.name.clone(),
                existing_id: other.id.clone(),
            }),
            _ => Ok(()),
        }
    }
}

/// IPAM's invariant: each of `holder`'s addresses parses and is held by nobody else on its network.
fn check_addresses(
    state: &ClusterState,
    addresses: &[NetworkAddress],
    holder: &AddressHolder,
) -> Result<(), Rejection> {
    for a in addresses {
        let ip = parse_addr_prefix(&a.addr).map_err(|reason| Rejection::NetworkConflict {
            name: a.network_id.clone(),
            reason: format!("{holder}: {reason}"),
        })?;
        match state.address_holder(&a.network_id, ip.0) {
            Some(other) if other != holder => {
                return Err(Rejection::AddressInUse {
                    network_id: a.network_id.clone(),
                    addr: ip.0.to_string(),
                    holder: other.to_string(),
                })
            }
            _ => {}
        }
    }
    Ok(())
}

impl Validate for Task {
    fn validate(state: &ClusterState, old: Option<&Self>, new: &Self) -> Result<(), Rejection> {
        if !new.status.state.is_terminal() {
            check_addresses(
                state,
                &new.attachments,
                &AddressHolder::Task(new.id.clone()),
            )?;
        }
        let Some(old) = old else { return Ok(()) };
        let immutable = |field: &str| Rejection::Immutable {
            kind: ObjectKind::Task,
            id: new.id.clone(),
            field: field.to_owned(),
        };
        if old.service_id != new.service_id {
            return Err(immutable("service_id"));
        }
        if old.slot != new.slot {
            return Err(immutable("slot"));
        }
        let refuse = |error| Rejection::TaskStateBackwards {
            id: new.id.clone(),
            error,
        };
        old.desired_state
            .transition(new.desired_state)
            .map_err(refuse)?;
        old.status
            .state
            .transition(new.status.state)
            .map_err(refuse)?;
        Ok(())
    }
}

impl Validate for Cluster {
    fn validate(state: &ClusterState, old: Option<&Self>, new: &Self) -> Result<(), Rejection> {
        let settings = &new.settings;
        settings
            .limits
            .check_ceilings()
            .and_then(|_| {
                limits::bounded(
                    "task history retention limit",
                    settings.task_history_retention_limit,
                    None,
                    CEILING_TASK_HISTORY,
                    None,
                )
            })
            .map_err(over::<Self>(&new.id))?;
        check_pool(
            &settings.default_addr_pool,
            settings.default_addr_pool_mask_len,
        )
        .map_err(|reason| Rejection::NetworkConflict {
            name: "default address pool".into(),
            reason,
        })?;
        match (old, state.cluster()) {
            (None, Some(existing)) => Err(Rejection::AlreadyExists {
                kind: ObjectKind::Cluster,
                id: existing.id.clone(),
            }),
            _ => Ok(()),
        }
    }
}

/// Refuses `name` when another object (not `id`) of the table already has it. A scan: these tables are small.
fn unique_name<'a, T: StoredObject>(
    objects: impl Iterator<Item = (&'a str, &'a str)>,
    id: &str,
    name: &str,
) -> Result<(), Rejection> {
    match objects.into_iter().find(|(i, n)| *n == name && *i != id) {
        Some((existing, _)) => Err(Rejection::NameConflict {
            kind: T::KIND,
            name: name.to_owned(),
            existing_id: existing.to_owned(),
        }),
        None => Ok(()),
    }
}

/// Secrets and configs: the name is unique per version (`com.swarm.version` label), so a changed stack file can
/// add a new version under the same name while tasks still use the old one.
fn unique_versioned_name<'a, T: StoredObject>(
    objects: impl Iterator<Item = (&'a str, &'a crate::model::FileObjectSpec)>,
    id: &str,
    spec: &crate::model::FileObjectSpec,
) -> Result<(), Rejection> {
    let version = object_version(&spec.labels);
    match objects
        .into_iter()
        .find(|(i, o)| o.name == spec.name && object_version(&o.labels) == version && *i != id)
    {
        Some((existing, _)) => Err(Rejection::NameConflict {
            kind: T::KIND,
            name: format!("{} (version {version})", spec.name),
            existing_id: existing.to_owned(),
        }),
        None => Ok(()),
    }
}

impl Validate for Secret {
    fn validate(state: &ClusterState, old: Option<&Self>, new: &Self) -> Result<(), Rejection> {
        check_file_object::<Self>(
            old.map(|o| &o.spec),
            &new.spec,
            MAX_SECRET_SIZE + SEALED_OVERHEAD,
        )?;
        let objects = state.secrets().map(|o| (o.id.as_str(), &o.spec));
        unique_versioned_name::<Self>(objects, &new.id, &new.spec)
    }
}

impl Validate for Config {
    fn validate(state: &ClusterState, old: Option<&Self>, new: &Self) -> Result<(), Rejection> {
        check_file_object::<Self>(old.map(|o| &o.spec), &new.spec, MAX_SECRET_SIZE)?;
        let objects = state.configs().map(|o| (o.id.as_str(), &o.spec));
        unique_versioned_name::<Self>(objects, &new.id, &new.spec)
    }
}

impl Validate for Network {
    fn validate(state: &ClusterState, _old: Option<&Self>, new: &Self) -> Result<(), Rejection> {
        let names = state
            .networks()
            .map(|o| (o.id.as_str(), o.spec.name.as_str()));
        unique_name::<Self>(names, &new.id, &new.spec.name)?;
        let Some(alloc) = &new.allocation else {
            return Ok(());
        };
        let conflict = |reason: String| Rejection::NetworkConflict {
            name: new.spec.name.clone(),
            reason,
        };
        let subnet = Cidr::parse(&alloc.subnet).map_err(|e| conflict(format!("subnet {e}")))?;
        for other in state.networks().filter(|o| o.id != new.id) {
            let Some(theirs) = &other.allocation else {
                continue;
            };
            if Cidr::parse(&theirs.subnet).is_ok_and(|s| s.overlaps(&subnet)) {
                return Err(conflict(format!(
                    "subnet {subnet} overlaps {} of network {}",
                    theirs.subnet, other.spec.name
                )));
            }
            if theirs.vni == alloc.vni {
                return Err(conflict(format!(
                    "VNI {} is already used by network {}",
                    alloc.vni, other.spec.name
                )));
            }
        }
        Ok(())
    }
}

impl Validate for Node {
    fn validate(state: &ClusterState, old: Option<&Self>, new: &Self) -> Result<(), Rejection> {
        if state.is_removed(&new.id) {
            return Err(Rejection::NodeRemoved { id: new.id.clone() });
        }
        limits::check_labels("node labels", &new.spec.labels, old.map(|o| &o.spec.labels))
            .map_err(over::<Self>(&new.id))
    }
}

impl Validate for Stack {
    fn validate(state: &ClusterState, old: Option<&Self>, new: &Self) -> Result<(), Rejection> {
        let limits = state.limits();
        let count = |s: &Stack| s.service_ids.len() as u64;
        limits
            .check_stack_services(count(new), old.map(count))
            .and_then(|_| {
                let bytes = |s: &Stack| limits::stack_files_bytes(&s.files);
                limits::check_stack_files(&new.files, old.map(bytes))
            })
            .and_then(|_| {
                let kept = |s: &Stack| s.history.len() as u64;
                limits::bounded(
                    "kept revisions",
                    kept(new),
                    old.map(kept),
                    limits.stack_history,
                    Some(("--stack-history", limits::CEILING_STACK_HISTORY)),
                )
            })
            .map_err(over::<Self>(&new.name))
    }
}
impl Validate for RestartHistory {}

type Undo = Box<dyn FnOnce(&mut ClusterState)>;

/// One batch in progress: the state, where it is in the log, and how to take it back.
struct Tx<'a> {
    state: &'a mut ClusterState,
    index: u64,
    time: u64,
    undo: Vec<Undo>,
    events: Vec<Event>,
    touched: Touched,
}

impl Tx<'_> {
    fn put<T: StoredObject>(&mut self, key: String, new: Option<T>) {
        let old = self.state.set_touching(&key, new, Some(&mut self.touched));
        self.undo.push(Box::new(move |state: &mut ClusterState| {
            state.set(&key, old);
        }));
    }

    fn current<T: StoredObject>(&self, key: &str, expected: Option<u64>) -> Result<&T, Rejection> {
        let current = T::table(self.state)
            .get(key)
            .ok_or_else(|| Rejection::NotFound {
                kind: T::KIND,
                id: key.to_owned(),
            })?;
        match expected {
            Some(expected) if expected != current.meta().version => {
                Err(Rejection::VersionMismatch {
                    kind: T::KIND,
                    id: key.to_owned(),
                    expected,
                    actual: current.meta().version,
                })
            }
            _ => Ok(current),
        }
    }

    fn create<T: Validate>(&mut self, obj: &T) -> Result<(), Rejection> {
        let key = obj.key();
        if T::table(self.state).contains_key(&key) {
            return Err(Rejection::AlreadyExists {
                kind: T::KIND,
                id: key,
            });
        }
        T::validate(self.state, None, obj)?;
        let mut obj = obj.clone();
        *obj.meta_mut() = Meta {
            version: self.index,
            created_at: self.time,
            updated_at: self.time,
        };
        self.events.push(Event::Created {
            kind: T::KIND,
            id: key.clone(),
        });
        self.put(key, Some(obj));
        Ok(())
    }

    fn update<T: Validate>(&mut self, obj: &T, expected: u64) -> Result<(), Rejection> {
        let key = obj.key();
        let current = self.current::<T>(&key, Some(expected))?;
        T::validate(self.state, Some(current), obj)?;
        let created_at = current.meta().created_at;
        let mut obj = obj.clone();
        *obj.meta_mut() = Meta {
            version: self.index,
            created_at,
            updated_at: self.time,
        };
        self.events.push(Event::Updated {
            kind: T::KIND,
            id: key.clone(),
        });
        self.put(key, Some(obj));
        Ok(())
    }

    fn delete<T: StoredObject>(
        &mut self,
        key: &str,
        expected: Option<u64>,
    ) -> Result<(), Rejection> {
        self.current::<T>(key, expected)?;
        self.events.push(Event::Deleted {
            kind: T::KIND,
            id: key.to_owned(),
        });
        self.put::<T>(key.to_owned(), None);
        Ok(())
    }

    fn apply(&mut self, op: &Op) -> Result<(), Rejection> {
        match op {
            Op::CreateService(o) => self.create(o),
            Op::UpdateService {
                service,
                expected_version,
            } => self.update(service, *expected_version),
            Op::DeleteService {
                id,
                expected_version,
            } => self.delete::<Service>(id, Some(*expected_version)),
            Op::CreateTask(o) => self.create(o),
            Op::UpdateTask {
                task,
                expected_version,
            } => self.update(task, *expected_version),
            Op::DeleteTask { id } => self.delete::<Task>(id, None),
            Op::CreateNode(o) => self.create(o),
            Op::UpdateNode {
                node,
                expected_version,
            } => self.update(node, *expected_version),
            Op::DeleteNode {
                id,
                expected_version,
            } => self.delete::<Node>(id, Some(*expected_version)),
            Op::CreateSecret(o) => self.create(o),
            Op::UpdateSecret {
                secret,
                expected_version,
            } => self.update(secret, *expected_version),
            Op::DeleteSecret {
                id,
                expected_version,
            } => self.delete::<Secret>(id, Some(*expected_version)),
            Op::CreateConfig(o) => self.create(o),
            Op::UpdateConfig {
                config,
                expected_version,
            } => self.update(config, *expected_version),
            Op::DeleteConfig {
                id,
                expected_version,
            } => self.delete::<Config>(id, Some(*expected_version)),
            Op::CreateNetwork(o) => self.create(o),
            Op::UpdateNetwork {
                network,
                expected_version,
            } => self.update(network, *expected_version),
            Op::DeleteNetwork {
                id,
                expected_version,
            } => self.delete::<Network>(id, Some(*expected_version)),
            Op::CreateStack(o) => self.create(o),
            Op::UpdateStack {
                stack,
                expected_version,
            } => self.update(stack, *expected_version),
            Op::DeleteStack {
                name,
                expected_version,
            } => self.delete::<Stack>(name, Some(*expected_version)),
            Op::CreateCluster(o) => self.create(o),
            Op::UpdateCluster {
                cluster,
                expected_version,
            } => self.update(cluster, *expected_version),
            Op::CreateRestartHistory(o) => self.create(o),
            Op::UpdateRestartHistory {
                history,
                expected_version,
            } => self.update(history, *expected_version),
            Op::DeleteRestartHistory {
                key,
                expected_version,
            } => self.delete::<RestartHistory>(&key.id(), Some(*expected_version)),
        }
    }

    fn rollback(self) {
        for undo in self.undo.into_iter().rev() {
            undo(self.state);
        }
    }
}

impl ClusterState {
    /// Applies `batch` as the entry at log `index`: every op, or (on the first refused op) none. Returns the
    /// events of the change in op order. Deterministic: depends only on the state, `index` and `batch`.
    pub fn apply_batch(&mut self, index: u64, batch: &Batch) -> Result<Vec<Event>, BatchRejected> {
        self.apply_batch_touched(index, batch)
            .map(|(events, _)| events)
    }

    /// [`ClusterState::apply_batch`], also returning the keys the entry touched ([`Touched`]).
    pub fn apply_batch_touched(
        &mut self,
        index: u64,
        batch: &Batch,
    ) -> Result<(Vec<Event>, Touched), BatchRejected> {
        if index <= self.applied_index {
            return Err(BatchRejected {
                index,
                op: None,
                reason: Rejection::IndexNotAfter {
                    index,
                    applied: self.applied_index,
                },
            });
        }
        let mut tx = Tx {
            state: self,
            index,
            time: batch.time,
            undo: Vec::with_capacity(batch.ops.len()),
            events: Vec::with_capacity(batch.ops.len()),
            touched: Touched::new(),
        };
        for (i, op) in batch.ops.iter().enumerate() {
            if let Err(reason) = tx.apply(op) {
                tx.rollback();
                return Err(BatchRejected {
                    index,
                    op: Some(i),
                    reason,
                });
            }
        }
        let events = std::mem::take(&mut tx.events);
        let touched = std::mem::take(&mut tx.touched);
        self.applied_index = index;
        Ok((events, touched))
    }
}
