//! Garbage collection of old secret and config versions: a stack deploy that changes a secret's or config's
//! content creates a new version (`com.swarm.version`) and moves the services to it; the old version is removed
//! once it is not the newest of its name, no service spec (current or previous, which a rollback would restore)
//! refers to it, and no task that is or may still be running uses it.
//!
//! Pure controller (`reconcile(&ClusterState, now, ids) -> Plan`). Must not: touch unversioned objects (created by
//! `secret create`) or the newest version of a name.

use std::collections::BTreeSet;

use super::Plan;
use crate::model::{object_version, ContainerSpec, TaskState, OBJECT_VERSION_LABEL};
use crate::store::{ClusterState, Op};
use crate::util::{IdSource, Millis};

/// Ids of secrets (`secrets = true`) or configs that some service spec or live task refers to.
fn in_use(state: &ClusterState, secrets: bool) -> BTreeSet<String> {
    let refs = |c: &ContainerSpec| -> Vec<String> {
        let list = if secrets { &c.secrets } else { &c.configs };
        list.iter().map(|r| r.id.clone()).collect()
    };
    let mut used = BTreeSet::new();
    for s in state.services() {
        used.extend(refs(&s.spec.task.container));
        if let Some(prev) = &s.previous_spec {
            used.extend(refs(&prev.task.container));
        }
    }
    for t in state.tasks() {
        let live = t.desired_state <= TaskState::Running || !t.status.state.is_terminal();
        if live {
            used.extend(refs(&t.spec.container));
        }
    }
    used
}

/// Removes old, unused versions of secrets and configs.
pub fn reconcile(state: &ClusterState, _now: Millis, _ids: &mut dyn IdSource) -> Plan {
    let mut plan = Plan::new();
    let used = in_use(state, true);
    for s in state.secrets() {
        if !s.spec.labels.contains_key(OBJECT_VERSION_LABEL) || used.contains(&s.id) {
            continue;
        }
        let newest = crate::manager::deploy::latest_secret(state, &s.spec.name)
            .map(|n| object_version(&n.spec.labels))
            .unwrap_or(0);
        if object_version(&s.spec.labels) < newest {
            plan.ops.push(Op::DeleteSecret {
                id: s.id.clone(),
                expected_version: s.meta.version,
            });
        }
    }
    let used = in_use(state, false);
    for c in state.configs() {
        if !c.spec.labels.contains_key(OBJECT_VERSION_LABEL) || used.contains(&c.id) {
            continue;
        }
        let newest = crate::manager::deploy::latest_config(state, &c.spec.name)
            .map(|n| object_version(&n.spec.labels))
            .unwrap_or(0);
        if object_version(&c.spec.labels) < newest {
            plan.ops.push(Op::DeleteConfig {
                id: c.id.clone(),
                expected_version: c.meta.version,
            });
        }
    }
    plan
}
