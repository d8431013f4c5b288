//! Planning a stack deploy or removal against the store: which services, secrets, configs and networks to create,
//! update (with the changed fields) or remove, and which are unchanged or left, as ONE batch of ops (a deploy is
//! one Raft entry: all of it applies, or none). A secret or config whose content changed gets a new version
//! (same name, new id, `com.swarm.version` label) and the services using it move to it; `gc` removes old
//! versions once nothing uses them. Every applied deploy is recorded as a stack revision.
//!
//! Pure: ids and time come in as arguments, secret sealing is done by the caller (data arrives sealed, with a
//! comparison callback for existing secrets). Must not: touch the network or the disk.

use std::collections::BTreeSet;

use crate::model::limits::{self, OverLimit};
use crate::model::{
    self, object_version, FileObjectSpec, Meta, Network, PlanAction, PlanItem, PlanKind, Secret,
    Service, ServiceSpec, Stack, StackRevision, StackSpec, UpdateState, UpdateStatus,
    OBJECT_VERSION_LABEL, STACK_NAMESPACE_LABEL,
};
use crate::store::{ClusterState, Op};
use crate::util::{IdSource, Millis};

/// Why a deploy is refused (nothing was changed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeployError {
    /// An `external: true` object does not exist.
    #[error("{kind} not found: {name} (declared external in the stack: create it first)")]
    ExternalMissing {
        /// secret, config or network.
        kind: PlanKind,
        /// Its name.
        name: String,
    },
    /// A service refers to a secret/config the stack neither creates nor declares external.
    #[error("service {service}: {kind} {name} not found")]
    ReferenceMissing {
        /// The service.
        service: String,
        /// secret or config.
        kind: PlanKind,
        /// The referenced name.
        name: String,
    },
    /// An object of that name belongs to another stack or to no stack.
    #[error("{kind} {name} already exists and is not part of stack {stack}")]
    NameTaken {
        /// service, secret, config or network.
        kind: PlanKind,
        /// Its name.
        name: String,
        /// The stack being deployed.
        stack: String,
    },
    /// The stack or one of its services is over a limit of the cluster.
    #[error("{what}: {error}")]
    OverLimit {
        /// "stack NAME" or "service NAME".
        what: String,
        /// What is over which limit.
        error: OverLimit,
    },
}

/// What a deploy will do.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeployPlan {
    /// The ops, to propose as one batch (empty: nothing to do).
    pub ops: Vec<Op>,
    /// One item per object of the stack: created, updated (with fields), removed, unchanged or left.
    pub items: Vec<PlanItem>,
    /// The stack revision the deploy becomes (None: nothing to do, no new revision).
    pub revision: Option<u64>,
}

impl DeployPlan {
    /// One line per change, for the user ("create service demo_web").
    pub fn changes(&self) -> Vec<String> {
        self.items
            .iter()
            .filter(|i| i.is_change())
            .map(PlanItem::line)
            .collect()
    }

    /// Whether applying the plan changes anything.
    pub fn has_changes(&self) -> bool {
        !self.ops.is_empty()
    }

    fn item(&mut self, kind: PlanKind, name: &str, action: PlanAction, fields: Vec<String>) {
        self.items.push(PlanItem {
            kind,
            name: name.into(),
            action,
            fields,
        });
    }
}

/// A secret or config as the caller prepared it: the spec with SEALED data (secrets) and a way to tell whether an
/// existing object holds the same plaintext.
pub struct PreparedObject<'a> {
    /// The spec to store (data sealed for secrets, plain for configs).
    pub spec: FileObjectSpec,
    /// True when `existing`'s stored data equals this object's plaintext.
    pub same_as: &'a dyn Fn(&FileObjectSpec) -> bool,
}

fn in_stack(labels: &std::collections::BTreeMap<String, String>, stack: &str) -> bool {
    labels.get(STACK_NAMESPACE_LABEL).map(String::as_str) == Some(stack)
}

/// The newest version of the secret called `name`.
pub fn latest_secret<'a>(state: &'a ClusterState, name: &str) -> Option<&'a Secret> {
    state
        .secrets()
        .filter(|s| s.spec.name == name)
        .max_by_key(|s| object_version(&s.spec.labels))
}

/// The newest version of the config called `name`.
pub fn latest_config<'a>(state: &'a ClusterState, name: &str) -> Option<&'a model::Config> {
    state
        .configs()
        .filter(|c| c.spec.name == name)
        .max_by_key(|c| object_version(&c.spec.labels))
}

fn with_version(spec: &FileObjectSpec, version: u64) -> FileObjectSpec {
    let mut spec = spec.clone();
    spec.labels
        .insert(OBJECT_VERSION_LABEL.into(), version.to_string());
    spec
}

/// Existing object (id, spec) of a kind, found by name (newest version).
type Lookup<'s> = dyn Fn(&str) -> Option<(String, &'s FileObjectSpec)> + 's;

/// The ids the stack owns, and name → id of every secret/config its services may refer to.
type PlannedFiles = (Vec<String>, Vec<(String, String)>);

/// Plans the stack's secrets or configs: unchanged, created (version 1) or a new version. Returns name → id.
#[allow(clippy::too_many_arguments)]
fn plan_files<'s>(
    plan: &mut DeployPlan,
    kind: PlanKind,
    stack: &str,
    external: &[String],
    prepared: &[PreparedObject],
    lookup: &Lookup<'s>,
    create: &dyn Fn(String, FileObjectSpec) -> Op,
    ids: &mut dyn IdSource,
) -> Result<PlannedFiles, DeployError> {
    let mut owned = Vec::new();
    let mut by_name = Vec::new();
    for name in external {
        match lookup(name) {
            Some((id, _)) => by_name.push((name.clone(), id)),
            None => {
                return Err(DeployError::ExternalMissing {
                    kind,
                    name: name.clone(),
                })
            }
        }
    }
    for p in prepared {
        let name = &p.spec.name;
        let id = match lookup(name) {
            Some((id, existing)) => {
                if !in_stack(&existing.labels, stack) {
                    return Err(DeployError::NameTaken {
                        kind,
                        name: name.clone(),
                        stack: stack.into(),
                    });
                }
                if (p.same_as)(existing) {
                    plan.item(kind, name, PlanAction::Unchanged, vec![]);
                    id
                } else {
                    let old = object_version(&existing.labels);
                    let id = ids.next_id();
                    plan.item(
                        kind,
                        name,
                        PlanAction::Update,
                        vec![format!("content changed: version {old} → {}", old + 1)],
                    );
                    plan.ops
                        .push(create(id.clone(), with_version(&p.spec, old + 1)));
                    id
                }
            }
            None => {
                let id = ids.next_id();
                plan.item(kind, name, PlanAction::Create, vec![]);
                plan.ops.push(create(id.clone(), with_version(&p.spec, 1)));
                id
            }
        };
        owned.push(id.clone());
        by_name.push((name.clone(), id));
    }
    Ok((owned, by_name))
}

/// Checks the stack and its services against the cluster's limits (which it returns), before anything is planned.
fn check_limits(
    state: &ClusterState,
    spec: &StackSpec,
    existing: Option<&Stack>,
    files: &[(String, String)],
) -> Result<model::Limits, DeployError> {
    let limits = state.limits();
    let stack_error = |error| DeployError::OverLimit {
        what: format!("stack {}", spec.name),
        error,
    };
    limits
        .check_stack_services(
            spec.services.len() as u64,
            existing.map(|s| s.service_ids.len() as u64),
        )
        .map_err(stack_error)?;
    limits::check_stack_files(files, existing.map(|s| limits::stack_files_bytes(&s.files)))
        .map_err(stack_error)?;
    for svc in &spec.services {
        let old = state.service_by_name(&svc.name).map(|s| &s.spec);
        limits
            .check_service(svc, old)
            .map_err(|error| DeployError::OverLimit {
                what: format!("service {}", svc.name),
                error,
            })?;
    }
    Ok(limits)
}

/// Plans deploying `spec` (secrets and configs given prepared, in the same order as in `spec`).
#[allow(clippy::too_many_arguments)]
pub fn plan_deploy(
    state: &ClusterState,
    spec: &StackSpec,
    secrets: &[PreparedObject],
    configs: &[PreparedObject],
    files: Vec<(String, String)>,
    prune: bool,
    now: Millis,
    ids: &mut dyn IdSource,
) -> Result<DeployPlan, DeployError> {
    let stack_name = spec.name.as_str();
    let mut plan = DeployPlan::default();
    let existing_stack = state.stack(stack_name).cloned();
    let limits = check_limits(state, spec, existing_stack.as_ref(), &files)?;

    // networks
    let mut network_ids = Vec::new();
    for name in &spec.external_networks {
        if !state.networks().any(|n| &n.spec.name == name) {
            return Err(DeployError::ExternalMissing {
                kind: PlanKind::Network,
                name: name.clone(),
            });
        }
    }
    for net in &spec.networks {
        match state.networks().find(|n| n.spec.name == net.name) {
            Some(existing) => {
                if !in_stack(&existing.spec.labels, stack_name) {
                    return Err(DeployError::NameTaken {
                        kind: PlanKind::Network,
                        name: net.name.clone(),
                        stack: stack_name.into(),
                    });
                }
                plan.item(PlanKind::Network, &net.name, PlanAction::Unchanged, vec![]);
                network_ids.push(existing.id.clone());
            }
            None => {
                let id = ids.next_id();
                plan.item(PlanKind::Network, &net.name, PlanAction::Create, vec![]);
                plan.ops.push(Op::CreateNetwork(Network {
                    id: id.clone(),
                    meta: Meta::default(),
                    spec: net.clone(),
                    allocation: None,
                }));
                network_ids.push(id);
            }
        }
    }

    // secrets and configs: name → id (a changed content is a new version)
    let secret_lookup = |name: &str| latest_secret(state, name).map(|s| (s.id.clone(), &s.spec));
    let (secret_ids, secret_by_name) = plan_files(
        &mut plan,
        PlanKind::Secret,
        stack_name,
        &spec.external_secrets,
        secrets,
        &secret_lookup,
        &|id, spec| {
            Op::CreateSecret(Secret {
                id,
                meta: Meta::default(),
                spec,
            })
        },
        ids,
    )?;
    let config_lookup = |name: &str| latest_config(state, name).map(|c| (c.id.clone(), &c.spec));
    let (config_ids, config_by_name) = plan_files(
        &mut plan,
        PlanKind::Config,
        stack_name,
        &spec.external_configs,
        configs,
        &config_lookup,
        &|id, spec| {
            Op::CreateConfig(model::Config {
                id,
                meta: Meta::default(),
                spec,
            })
        },
        ids,
    )?;
    // stack secrets/configs the files no longer name: kept (removed with the stack)
    let named: BTreeSet<&str> = spec
        .secrets
        .iter()
        .chain(&spec.configs)
        .map(|s| s.name.as_str())
        .collect();
    let mut left: BTreeSet<(PlanKind, &str)> = BTreeSet::new();
    for s in state
        .secrets()
        .filter(|s| in_stack(&s.spec.labels, stack_name))
    {
        if !named.contains(s.spec.name.as_str()) {
            left.insert((PlanKind::Secret, s.spec.name.as_str()));
        }
    }
    for c in state
        .configs()
        .filter(|c| in_stack(&c.spec.labels, stack_name))
    {
        if !named.contains(c.spec.name.as_str()) {
            left.insert((PlanKind::Config, c.spec.name.as_str()));
        }
    }
    for (kind, name) in left {
        plan.item(kind, name, PlanAction::Left, vec![]);
    }

    // services
    let mut service_ids = Vec::new();
    let mut wanted = BTreeSet::new();
    for svc in &spec.services {
        let mut svc_spec: ServiceSpec = svc.clone();
        for (refs, by_name, kind) in [
            (
                &mut svc_spec.task.container.secrets,
                &secret_by_name,
                PlanKind::Secret,
            ),
            (
                &mut svc_spec.task.container.configs,
                &config_by_name,
                PlanKind::Config,
            ),
        ] {
            for r in refs.iter_mut() {
                match by_name.iter().find(|(n, _)| n == &r.name) {
                    Some((_, id)) => r.id = id.clone(),
                    None => {
                        return Err(DeployError::ReferenceMissing {
                            service: svc.name.clone(),
                            kind,
                            name: r.name.clone(),
                        })
                    }
                }
            }
        }
        wanted.insert(svc.name.clone());
        match state.service_by_name(&svc.name) {
            Some(existing) => {
                if !in_stack(&existing.spec.labels, stack_name) {
                    return Err(DeployError::NameTaken {
                        kind: PlanKind::Service,
                        name: svc.name.clone(),
                        stack: stack_name.into(),
                    });
                }
                service_ids.push(existing.id.clone());
                match update_service(existing, svc_spec, now) {
                    Some((op, fields)) => {
                        plan.item(PlanKind::Service, &svc.name, PlanAction::Update, fields);
                        plan.ops.push(op);
                    }
                    None => plan.item(PlanKind::Service, &svc.name, PlanAction::Unchanged, vec![]),
                }
            }
            None => {
                let id = ids.next_id();
                plan.item(PlanKind::Service, &svc.name, PlanAction::Create, vec![]);
                plan.ops.push(Op::CreateService(Service {
                    id: id.clone(),
                    meta: Meta::default(),
                    spec: svc_spec,
                    spec_version: 1,
                    previous_spec: None,
                    update_status: None,
                    virtual_ips: Vec::new(),
                }));
                service_ids.push(id);
            }
        }
    }
    // services of the stack that the files no longer name
    for s in state.services() {
        if in_stack(&s.spec.labels, stack_name) && !wanted.contains(&s.spec.name) {
            if prune {
                plan.item(PlanKind::Service, &s.spec.name, PlanAction::Remove, vec![]);
                plan.ops.push(Op::DeleteService {
                    id: s.id.clone(),
                    expected_version: s.meta.version,
                });
            } else {
                plan.item(PlanKind::Service, &s.spec.name, PlanAction::Left, vec![]);
                service_ids.push(s.id.clone());
            }
        }
    }

    if plan.ops.is_empty() {
        // Same files (or files meaning the same): no new revision, nothing restarted.
        return Ok(plan);
    }
    let revision = existing_stack.as_ref().map_or(1, |s| s.revision + 1);
    // what a rollback needs to re-apply this revision: the spec with secret data SEALED
    let mut sealed = spec.clone();
    sealed.secrets = secrets.iter().map(|p| p.spec.clone()).collect();
    let mut history = existing_stack
        .as_ref()
        .map(|s| s.history.clone())
        .unwrap_or_default();
    history.push(StackRevision {
        revision,
        deployed_at: now,
        changes: plan.changes(),
        files: files.clone(),
        spec_json: serde_json::to_string(&sealed).unwrap_or_default(),
        prune,
    });
    let keep = limits.stack_history.max(1) as usize;
    if history.len() > keep {
        history.drain(..history.len() - keep);
    }
    let stack = Stack {
        name: stack_name.to_string(),
        meta: Meta::default(),
        revision,
        files,
        service_ids,
        secret_ids,
        config_ids,
        network_ids,
        history,
        source: existing_stack.as_ref().and_then(|s| s.source.clone()),
    };
    match existing_stack {
        Some(old) => plan.ops.push(Op::UpdateStack {
            stack,
            expected_version: old.meta.version,
        }),
        None => plan.ops.push(Op::CreateStack(stack)),
    }
    plan.revision = Some(revision);
    Ok(plan)
}

/// The update of `existing` to `spec`, with the changed fields; None when nothing changes. A change of the task
/// template bumps `spec_version`, keeps the old spec as `previous_spec` and starts a rolling update
/// (`UpdateStatus::Updating`); any other change (replicas, labels, update config) keeps the spec version.
pub fn update_service(
    existing: &Service,
    spec: ServiceSpec,
    now: Millis,
) -> Option<(Op, Vec<String>)> {
    if existing.spec == spec {
        return None;
    }
    let fields = crate::manager::specdiff::service_fields(&existing.spec, &spec);
    let mut updated = existing.clone();
    if existing.spec.task != spec.task {
        updated.spec_version += 1;
        updated.previous_spec = Some(existing.spec.clone());
        updated.update_status = Some(UpdateStatus {
            state: UpdateState::Updating,
            started_at: now,
            completed_at: None,
            message: "update in progress".into(),
        });
    }
    updated.spec = spec;
    Some((
        Op::UpdateService {
            service: updated,
            expected_version: existing.meta.version,
        },
        fields,
    ))
}

/// A manually requested rollback (`service rollback`): the updater's swap with Docker's message.
/// None when there is no previous spec.
pub fn manual_rollback(existing: &Service, now: Millis) -> Option<Op> {
    crate::manager::orchestrator::update::rollback_op(
        existing,
        now,
        crate::manager::orchestrator::update::MANUAL_ROLLBACK,
    )
}

/// Plans removing a whole stack: its services, then its secrets, configs and networks, then the stack object.
pub fn plan_remove_stack(state: &ClusterState, stack_name: &str) -> Option<DeployPlan> {
    let stack = state.stack(stack_name)?;
    let mut plan = DeployPlan::default();
    // (kind, name, labels, delete op) of every object of the stack, in removal order
    let services = state.services().map(|s| {
        let op = Op::DeleteService {
            id: s.id.clone(),
            expected_version: s.meta.version,
        };
        (PlanKind::Service, &s.spec.name, &s.spec.labels, op)
    });
    let secrets = state.secrets().map(|s| {
        let op = Op::DeleteSecret {
            id: s.id.clone(),
            expected_version: s.meta.version,
        };
        (PlanKind::Secret, &s.spec.name, &s.spec.labels, op)
    });
    let configs = state.configs().map(|c| {
        let op = Op::DeleteConfig {
            id: c.id.clone(),
            expected_version: c.meta.version,
        };
        (PlanKind::Config, &c.spec.name, &c.spec.labels, op)
    });
    let networks = state.networks().map(|n| {
        let op = Op::DeleteNetwork {
            id: n.id.clone(),
            expected_version: n.meta.version,
        };
        (PlanKind::Network, &n.spec.name, &n.spec.labels, op)
    });
    for (kind, name, labels, op) in services.chain(secrets).chain(configs).chain(networks) {
        if in_stack(labels, stack_name) {
            plan.item(kind, name, PlanAction::Remove, vec![]);
            plan.ops.push(op);
        }
    }
    plan.ops.push(Op::DeleteStack {
        name: stack.name.clone(),
        expected_version: stack.meta.version,
    });
    Some(plan)
}

#[cfg(test)]
#[path = "deploy_tests.rs"]
mod tests;
