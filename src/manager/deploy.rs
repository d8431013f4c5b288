//! Planning a stack deploy or removal against the store: which services, secrets, configs and networks to create,
//! update or remove, as ONE batch of ops (a deploy is one Raft entry: all of it applies, or none).
//!
//! Pure: ids and time come in as arguments, secret sealing is done by the caller (data arrives sealed, with a
//! comparison callback for existing secrets). Must not: touch the network or the disk.

use std::collections::BTreeSet;

use crate::model::{
    self, FileObjectSpec, Meta, Network, Secret, Service, ServiceSpec, Stack, StackSpec,
    STACK_NAMESPACE_LABEL,
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
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// A service refers to a secret/config the stack neither creates nor declares external.
    #[error("service {service}: {kind} {name} not found")]
    ReferenceMissing {
        /// The service.
        service: String,
        /// secret or config.
        kind: &'static str,
        /// The referenced name.
        name: String,
    },
    /// A secret or config of the stack changed content; swarm objects are immutable.
    #[error("{kind} {name} already exists with different content: {kind}s are immutable (rename it, or remove the stack's services using it first)")]
    Immutable {
        /// secret or config.
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// An object of that name belongs to another stack or to no stack.
    #[error("{kind} {name} already exists and is not part of stack {stack}")]
    NameTaken {
        /// service, secret, config or network.
        kind: &'static str,
        /// Its name.
        name: String,
        /// The stack being deployed.
        stack: String,
    },
}

/// What a deploy will do.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeployPlan {
    /// The ops, to propose as one batch.
    pub ops: Vec<Op>,
    /// One line per change, for the user ("create service demo_web").
    pub changes: Vec<String>,
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

    // networks
    let mut network_ids = Vec::new();
    for name in &spec.external_networks {
        if !state.networks().any(|n| &n.spec.name == name) {
            return Err(DeployError::ExternalMissing {
                kind: "network",
                name: name.clone(),
            });
        }
    }
    for net in &spec.networks {
        match state.networks().find(|n| n.spec.name == net.name) {
            Some(existing) => {
                if !in_stack(&existing.spec.labels, stack_name) {
                    return Err(DeployError::NameTaken {
                        kind: "network",
                        name: net.name.clone(),
                        stack: stack_name.into(),
                    });
                }
                network_ids.push(existing.id.clone());
            }
            None => {
                let id = ids.next_id();
                plan.changes.push(format!("create network {}", net.name));
                plan.ops.push(Op::CreateNetwork(Network {
                    id: id.clone(),
                    meta: Meta::default(),
                    spec: net.clone(),
                }));
                network_ids.push(id);
            }
        }
    }

    // secrets and configs: name → id
    let mut secret_ids = Vec::new();
    let mut secret_by_name: Vec<(String, String)> = Vec::new();
    for name in &spec.external_secrets {
        match state.secrets().find(|s| &s.spec.name == name) {
            Some(s) => secret_by_name.push((name.clone(), s.id.clone())),
            None => {
                return Err(DeployError::ExternalMissing {
                    kind: "secret",
                    name: name.clone(),
                })
            }
        }
    }
    for prepared in secrets {
        let name = &prepared.spec.name;
        match state.secrets().find(|s| &s.spec.name == name) {
            Some(existing) => {
                if !in_stack(&existing.spec.labels, stack_name) {
                    return Err(DeployError::NameTaken {
                        kind: "secret",
                        name: name.clone(),
                        stack: stack_name.into(),
                    });
                }
                if !(prepared.same_as)(&existing.spec) {
                    return Err(DeployError::Immutable {
                        kind: "secret",
                        name: name.clone(),
                    });
                }
                secret_ids.push(existing.id.clone());
                secret_by_name.push((name.clone(), existing.id.clone()));
            }
            None => {
                let id = ids.next_id();
                plan.changes.push(format!("create secret {name}"));
                plan.ops.push(Op::CreateSecret(Secret {
                    id: id.clone(),
                    meta: Meta::default(),
                    spec: prepared.spec.clone(),
                }));
                secret_ids.push(id.clone());
                secret_by_name.push((name.clone(), id));
            }
        }
    }
    let mut config_ids = Vec::new();
    let mut config_by_name: Vec<(String, String)> = Vec::new();
    for name in &spec.external_configs {
        match state.configs().find(|c| &c.spec.name == name) {
            Some(c) => config_by_name.push((name.clone(), c.id.clone())),
            None => {
                return Err(DeployError::ExternalMissing {
                    kind: "config",
                    name: name.clone(),
                })
            }
        }
    }
    for prepared in configs {
        let name = &prepared.spec.name;
        match state.configs().find(|c| &c.spec.name == name) {
            Some(existing) => {
                if !in_stack(&existing.spec.labels, stack_name) {
                    return Err(DeployError::NameTaken {
                        kind: "config",
                        name: name.clone(),
                        stack: stack_name.into(),
                    });
                }
                if !(prepared.same_as)(&existing.spec) {
                    return Err(DeployError::Immutable {
                        kind: "config",
                        name: name.clone(),
                    });
                }
                config_ids.push(existing.id.clone());
                config_by_name.push((name.clone(), existing.id.clone()));
            }
            None => {
                let id = ids.next_id();
                plan.changes.push(format!("create config {name}"));
                plan.ops.push(Op::CreateConfig(model::Config {
                    id: id.clone(),
                    meta: Meta::default(),
                    spec: prepared.spec.clone(),
                }));
                config_ids.push(id.clone());
                config_by_name.push((name.clone(), id));
            }
        }
    }

    // services
    let mut service_ids = Vec::new();
    let mut wanted = BTreeSet::new();
    for svc in &spec.services {
        let mut svc_spec: ServiceSpec = svc.clone();
        for r in svc_spec.task.container.secrets.iter_mut() {
            match secret_by_name.iter().find(|(n, _)| n == &r.name) {
                Some((_, id)) => r.id = id.clone(),
                None => {
                    return Err(DeployError::ReferenceMissing {
                        service: svc.name.clone(),
                        kind: "secret",
                        name: r.name.clone(),
                    })
                }
            }
        }
        for r in svc_spec.task.container.configs.iter_mut() {
            match config_by_name.iter().find(|(n, _)| n == &r.name) {
                Some((_, id)) => r.id = id.clone(),
                None => {
                    return Err(DeployError::ReferenceMissing {
                        service: svc.name.clone(),
                        kind: "config",
                        name: r.name.clone(),
                    })
                }
            }
        }
        wanted.insert(svc.name.clone());
        match state.service_by_name(&svc.name) {
            Some(existing) => {
                if !in_stack(&existing.spec.labels, stack_name) {
                    return Err(DeployError::NameTaken {
                        kind: "service",
                        name: svc.name.clone(),
                        stack: stack_name.into(),
                    });
                }
                service_ids.push(existing.id.clone());
                if let Some(op) = update_service(existing, svc_spec, &mut plan.changes) {
                    plan.ops.push(op);
                }
            }
            None => {
                let id = ids.next_id();
                plan.changes.push(format!("create service {}", svc.name));
                plan.ops.push(Op::CreateService(Service {
                    id: id.clone(),
                    meta: Meta::default(),
                    spec: svc_spec,
                    spec_version: 1,
                    previous_spec: None,
                    update_status: None,
                }));
                service_ids.push(id);
            }
        }
    }
    // services of the stack that the files no longer name
    for s in state.services() {
        if in_stack(&s.spec.labels, stack_name) && !wanted.contains(&s.spec.name) {
            if prune {
                plan.changes.push(format!("remove service {}", s.spec.name));
                plan.ops.push(Op::DeleteService {
                    id: s.id.clone(),
                    expected_version: s.meta.version,
                });
            } else {
                service_ids.push(s.id.clone());
            }
        }
    }

    if plan.ops.is_empty() && existing_stack.as_ref().is_some_and(|s| s.files == files) {
        return Ok(plan);
    }
    let stack = Stack {
        name: stack_name.to_string(),
        meta: Meta::default(),
        revision: existing_stack.as_ref().map_or(1, |s| s.revision + 1),
        files,
        service_ids,
        secret_ids,
        config_ids,
        network_ids,
    };
    let _ = now;
    match existing_stack {
        Some(old) => plan.ops.push(Op::UpdateStack {
            stack,
            expected_version: old.meta.version,
        }),
        None => plan.ops.push(Op::CreateStack(stack)),
    }
    Ok(plan)
}

fn update_service(existing: &Service, spec: ServiceSpec, changes: &mut Vec<String>) -> Option<Op> {
    if existing.spec == spec {
        return None;
    }
    let task_changed = existing.spec.task != spec.task;
    let mut fields = Vec::new();
    if task_changed {
        fields.push("task template");
    }
    if existing.spec.mode != spec.mode {
        fields.push("mode/replicas");
    }
    if existing.spec.labels != spec.labels {
        fields.push("labels");
    }
    if existing.spec.update != spec.update || existing.spec.rollback != spec.rollback {
        fields.push("update/rollback config");
    }
    if existing.spec.endpoint != spec.endpoint {
        fields.push("endpoint");
    }
    changes.push(format!(
        "update service {} ({})",
        spec.name,
        fields.join(", ")
    ));
    let mut updated = existing.clone();
    updated.previous_spec = Some(existing.spec.clone());
    updated.spec = spec;
    if task_changed {
        updated.spec_version += 1;
    }
    Some(Op::UpdateService {
        service: updated,
        expected_version: existing.meta.version,
    })
}

/// Plans removing a whole stack: its services, then its secrets, configs and networks, then the stack object.
pub fn plan_remove_stack(state: &ClusterState, stack_name: &str) -> Option<DeployPlan> {
    let stack = state.stack(stack_name)?;
    let mut plan = DeployPlan::default();
    for s in state
        .services()
        .filter(|s| in_stack(&s.spec.labels, stack_name))
    {
        plan.changes
            .push(format!("Removing service {}", s.spec.name));
        plan.ops.push(Op::DeleteService {
            id: s.id.clone(),
            expected_version: s.meta.version,
        });
    }
    for s in state
        .secrets()
        .filter(|s| in_stack(&s.spec.labels, stack_name))
    {
        plan.changes
            .push(format!("Removing secret {}", s.spec.name));
        plan.ops.push(Op::DeleteSecret {
            id: s.id.clone(),
            expected_version: s.meta.version,
        });
    }
    for c in state
        .configs()
        .filter(|c| in_stack(&c.spec.labels, stack_name))
    {
        plan.changes
            .push(format!("Removing config {}", c.spec.name));
        plan.ops.push(Op::DeleteConfig {
            id: c.id.clone(),
            expected_version: c.meta.version,
        });
    }
    for n in state
        .networks()
        .filter(|n| in_stack(&n.spec.labels, stack_name))
    {
        plan.changes
            .push(format!("Removing network {}", n.spec.name));
        plan.ops.push(Op::DeleteNetwork {
            id: n.id.clone(),
            expected_version: n.meta.version,
        });
    }
    plan.ops.push(Op::DeleteStack {
        name: stack.name.clone(),
        expected_version: stack.meta.version,
    });
    Some(plan)
}
