//! Garbage collection of old secret and config versions: a stack deploy that changes a secret's or config's
//! content creates a new version (`com.swarm.version`) and moves the services to it; the old version is removed
//! once it is not the newest of its name, no service spec (current or previous, which a rollback would restore)
//! refers to it, and no task that is or may still be running uses it (the rule of [`super::usage`], which
//! `secret rm` shares).
//!
//! Pure controller (`reconcile(&ClusterState, now, ids) -> Plan`). Must not: touch unversioned objects (created by
//! `secret create`) or the newest version of a name.

use super::usage::{self, FileKind};
use super::{Plan, Scope};
use crate::model::{object_version, OBJECT_VERSION_LABEL};
use crate::store::{ClusterState, Op};
use crate::util::{IdSource, Millis};

/// [`reconcile`], run by the driver whenever anything changed: it looks at every versioned secret and config
/// (few), whatever the scope (a task that stopped may have been the last user of one).
pub fn reconcile_in(
    state: &ClusterState,
    _scope: &Scope,
    now: Millis,
    ids: &mut dyn IdSource,
) -> Plan {
    reconcile(state, now, ids)
}

/// Removes old, unused versions of secrets and configs.
pub fn reconcile(state: &ClusterState, _now: Millis, _ids: &mut dyn IdSource) -> Plan {
    let mut plan = Plan::new();
    for s in state.secrets() {
        if !s.spec.labels.contains_key(OBJECT_VERSION_LABEL) {
            continue;
        }
        let newest = crate::manager::deploy::latest_secret(state, &s.spec.name)
            .map(|n| object_version(&n.spec.labels))
            .unwrap_or(0);
        if object_version(&s.spec.labels) < newest
            && usage::users(state, FileKind::Secret, &s.id, &s.spec.name).is_empty()
        {
            plan.ops.push(Op::DeleteSecret {
                id: s.id.clone(),
                expected_version: s.meta.version,
            });
        }
    }
    for c in state.configs() {
        if !c.spec.labels.contains_key(OBJECT_VERSION_LABEL) {
            continue;
        }
        let newest = crate::manager::deploy::latest_config(state, &c.spec.name)
            .map(|n| object_version(&n.spec.labels))
            .unwrap_or(0);
        if object_version(&c.spec.labels) < newest
            && usage::users(state, FileKind::Config, &c.id, &c.spec.name).is_empty()
        {
            plan.ops.push(Op::DeleteConfig {
                id: c.id.clone(),
                expected_version: c.meta.version,
            });
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manager::testutil::{service, task, World};
    use crate::model::{FileObjectSpec, FileReference, Meta, Secret, ServiceMode, TaskState};
    use crate::util::SeqIds;

    fn version(id: &str, v: u64) -> Secret {
        Secret {
            id: id.into(),
            meta: Meta::default(),
            spec: FileObjectSpec {
                name: "pw".into(),
                labels: [(OBJECT_VERSION_LABEL.to_string(), v.to_string())].into(),
                ..FileObjectSpec::default()
            },
        }
    }

    #[test]
    fn an_old_version_used_by_a_live_task_is_kept_until_the_task_ends() {
        let reference = FileReference {
            name: "pw".into(),
            id: "s1".into(),
            ..FileReference::default()
        };
        let mut web = service("web", ServiceMode::Replicated { replicas: 1 });
        web.spec.task.container.secrets = vec![FileReference {
            id: "s2".into(),
            ..reference.clone()
        }];
        let mut old = task(
            "t1",
            "web",
            1,
            Some("n1"),
            TaskState::Shutdown,
            TaskState::Running,
        );
        old.spec.container.secrets = vec![reference];
        let mut w = World::with(vec![
            Op::CreateSecret(version("s1", 1)),
            Op::CreateSecret(version("s2", 2)),
            Op::CreateService(web),
            Op::CreateTask(old.clone()),
        ]);
        let mut ids = SeqIds::default();
        assert!(reconcile(&w.state, 0, &mut ids).ops.is_empty());
        let mut ended = w.state.task("t1").unwrap().clone();
        ended.status.state = TaskState::Shutdown;
        w.apply_ops(vec![Op::UpdateTask {
            expected_version: ended.meta.version,
            task: ended,
        }]);
        assert_eq!(
            reconcile(&w.state, 0, &mut ids).ops,
            vec![Op::DeleteSecret {
                id: "s1".into(),
                expected_version: 1
            }]
        );
    }
}
