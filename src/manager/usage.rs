//! When a secret or config is in use, the one rule that `secret rm` (refuses) and gc (keeps) share: an object is
//! in use while a service's spec, its previous spec (which a rollback would restore) or a task that is or may
//! still be running refers to it.
//!
//! A reference names its object by id (filled in by the manager when the service is created); a reference with
//! no id yet counts for every object of its name. Pure. Must not: change anything.

use crate::model::{ContainerSpec, FileReference, TaskState};
use crate::store::ClusterState;

/// Which kind of file object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// A secret (`/run/secrets/...`).
    Secret,
    /// A config.
    Config,
}

impl FileKind {
    /// `secret` or `config`.
    pub fn name(self) -> &'static str {
        match self {
            FileKind::Secret => "secret",
            FileKind::Config => "config",
        }
    }

    fn refs(self, c: &ContainerSpec) -> &[FileReference] {
        match self {
            FileKind::Secret => &c.secrets,
            FileKind::Config => &c.configs,
        }
    }
}

/// Whether `c` refers to the object with this id and name.
fn refers_to(kind: FileKind, c: &ContainerSpec, id: &str, name: &str) -> bool {
    kind.refs(c)
        .iter()
        .any(|r| r.id == id || (r.id.is_empty() && r.name == name))
}

/// The names of the services that use the object `id` (named `name`): by their spec, their previous spec, or a
/// live task (one whose desired state is at most running, or that has not ended yet). A task whose service is
/// gone is named by its service id. Empty when the object may be removed. In the store's service order.
pub fn users(state: &ClusterState, kind: FileKind, id: &str, name: &str) -> Vec<String> {
    let mut users: Vec<String> = Vec::new();
    let mut add = |u: String| {
        if !users.contains(&u) {
            users.push(u);
        }
    };
    for s in state.services() {
        let prev = s.previous_spec.as_ref().map(|p| &p.task.container);
        if refers_to(kind, &s.spec.task.container, id, name)
            || prev.is_some_and(|c| refers_to(kind, c, id, name))
        {
            add(s.spec.name.clone());
        }
    }
    for t in state.tasks() {
        let live = t.desired_state <= TaskState::Running || !t.status.state.is_terminal();
        if live && refers_to(kind, &t.spec.container, id, name) {
            add(state
                .service(&t.service_id)
                .map_or(t.service_id.clone(), |s| s.spec.name.clone()));
        }
    }
    users
}

/// Why an object may not be removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InUse {
    /// Secret or config.
    pub kind: FileKind,
    /// The object's name.
    pub name: String,
    /// The services using it (never empty).
    pub users: Vec<String>,
}

impl std::fmt::Display for InUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} '{}' is in use by the following service{}: {}",
            self.kind.name(),
            self.name,
            if self.users.len() > 1 { "s" } else { "" },
            self.users.join(", ")
        )
    }
}

/// `Ok` when the object may be removed (nothing uses it), else who uses it.
pub fn check_unused(
    state: &ClusterState,
    kind: FileKind,
    id: &str,
    name: &str,
) -> Result<(), InUse> {
    let users = users(state, kind, id, name);
    if users.is_empty() {
        Ok(())
    } else {
        Err(InUse {
            kind,
            name: name.to_string(),
            users,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manager::testutil::{service, task, World};
    use crate::model::{Service, ServiceMode, Task};
    use crate::store::Op;

    fn reference(name: &str, id: &str) -> FileReference {
        FileReference {
            name: name.into(),
            id: id.into(),
            target: name.into(),
            ..FileReference::default()
        }
    }

    fn using(id: &str, refs: Vec<FileReference>) -> Service {
        let mut s = service(id, ServiceMode::Replicated { replicas: 1 });
        s.spec.task.container.secrets = refs;
        s
    }

    fn world(services: Vec<Service>, tasks: Vec<Task>) -> World {
        let mut ops: Vec<Op> = services.into_iter().map(Op::CreateService).collect();
        ops.extend(tasks.into_iter().map(Op::CreateTask));
        World::with(ops)
    }

    #[test]
    fn a_spec_reference_by_id_is_a_use_another_version_of_the_name_is_not() {
        let w = world(
            vec![
                using("web", vec![reference("pw", "s2")]),
                using("api", vec![reference("pw", "s2")]),
                using("db", vec![]),
            ],
            vec![],
        );
        assert_eq!(
            users(&w.state, FileKind::Secret, "s2", "pw"),
            vec!["api", "web"]
        );
        // the old version s1 of the same name: nobody refers to it
        assert!(users(&w.state, FileKind::Secret, "s1", "pw").is_empty());
        // configs are another list
        assert!(users(&w.state, FileKind::Config, "s2", "pw").is_empty());
        let err = check_unused(&w.state, FileKind::Secret, "s2", "pw").unwrap_err();
        assert_eq!(
            err.to_string(),
            "secret 'pw' is in use by the following services: api, web"
        );
    }

    #[test]
    fn a_reference_without_id_counts_for_its_name() {
        let w = world(vec![using("web", vec![reference("pw", "")])], vec![]);
        assert_eq!(users(&w.state, FileKind::Secret, "s1", "pw"), vec!["web"]);
        assert!(users(&w.state, FileKind::Secret, "s1", "other").is_empty());
    }

    #[test]
    fn a_previous_spec_is_a_use() {
        let mut web = using("web", vec![reference("pw", "s2")]);
        let mut prev = web.spec.clone();
        prev.task.container.secrets = vec![reference("pw", "s1")];
        web.previous_spec = Some(prev);
        let w = world(vec![web], vec![]);
        let err = check_unused(&w.state, FileKind::Secret, "s1", "pw").unwrap_err();
        assert_eq!(
            err.to_string(),
            "secret 'pw' is in use by the following service: web"
        );
    }

    #[test]
    fn a_live_task_is_a_use_an_ended_one_is_not() {
        let with_ref = |t: Task| {
            let mut t = t;
            t.spec.container.secrets = vec![reference("pw", "s1")];
            t
        };
        // running task of a service whose spec moved on; a task of a removed service still stopping
        let live = with_ref(task(
            "t1",
            "web",
            1,
            Some("n1"),
            TaskState::Shutdown,
            TaskState::Running,
        ));
        let orphan = with_ref(task(
            "t2",
            "gone",
            1,
            Some("n1"),
            TaskState::Running,
            TaskState::Running,
        ));
        let done = with_ref(task(
            "t3",
            "web",
            2,
            Some("n1"),
            TaskState::Shutdown,
            TaskState::Shutdown,
        ));
        let w = world(vec![using("web", vec![])], vec![live.clone(), done.clone()]);
        assert_eq!(users(&w.state, FileKind::Secret, "s1", "pw"), vec!["web"]);
        let w = world(vec![using("web", vec![])], vec![done.clone()]);
        assert_eq!(check_unused(&w.state, FileKind::Secret, "s1", "pw"), Ok(()));
        let w = world(vec![], vec![orphan]);
        assert_eq!(users(&w.state, FileKind::Secret, "s1", "pw"), vec!["gone"]);
    }
}
