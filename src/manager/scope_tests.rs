//! The scoped controllers against the full ones: on a varied state (every service mode, tasks in many states,
//! a node Down, a node drained, a deleted service whose tasks remain, pending tasks), each controller run on a
//! scope proposes exactly the ops of a full run that concern the scope's services (and the ops that concern no
//! service, like a network's allocation, whatever the scope). And `dirty_scope` widens as documented.

use std::collections::BTreeSet;

use super::testutil::*;
use super::*;
use crate::model::{
    NodeAvailability, NodeState, RestartCondition, RestartHistory, RestartKey, TaskState,
    UpdateState, UpdateStatus,
};
use crate::util::SeqIds;

/// The service an op concerns (None: no service, e.g. a network's allocation).
fn service_of(state: &ClusterState, op: &Op) -> Option<String> {
    Some(match op {
        Op::CreateTask(t) | Op::UpdateTask { task: t, .. } => t.service_id.clone(),
        Op::DeleteTask { id } => state.task(id)?.service_id.clone(),
        Op::CreateService(s) | Op::UpdateService { service: s, .. } => s.id.clone(),
        Op::DeleteService { id, .. } => id.clone(),
        Op::CreateRestartHistory(h) | Op::UpdateRestartHistory { history: h, .. } => {
            h.key.service_id().to_owned()
        }
        Op::DeleteRestartHistory { key, .. } => key.service_id().to_owned(),
        _ => return None,
    })
}

/// An op as text, with a created task's id left out (ids come from a sequence both runs share differently).
fn text(op: &Op) -> String {
    match op {
        Op::CreateTask(t) => {
            let mut t = t.clone();
            t.id.clear();
            format!("{:?}", Op::CreateTask(t))
        }
        other => format!("{other:?}"),
    }
}

/// Whether `op` concerns no service or one of `scope`.
fn scope_has(scope: &Scope, state: &ClusterState, op: &Op) -> bool {
    service_of(state, op).is_none_or(|s| scope.contains(&s))
}

fn varied() -> World {
    let mut restarting = service("r", ServiceMode::Replicated { replicas: 3 });
    restarting.spec.task.restart.condition = RestartCondition::Any;
    restarting.spec.task.restart.delay = std::time::Duration::from_secs(30);
    let mut updating = service("u", ServiceMode::Replicated { replicas: 2 });
    updating.previous_spec = Some(updating.spec.clone());
    updating.spec.task.container.image = "v2".into();
    updating.spec_version = 2;
    updating.update_status = Some(UpdateStatus {
        state: UpdateState::Updating,
        started_at: 900_000,
        completed_at: None,
        message: "update in progress".into(),
    });
    let ops = creates(
        vec![
            node("n1"),
            node("n2"),
            node_with("down", NodeAvailability::Active, NodeState::Down),
            node_with("drained", NodeAvailability::Drain, NodeState::Ready),
        ],
        vec![
            service("a", ServiceMode::Replicated { replicas: 4 }),
            service("b", ServiceMode::Replicated { replicas: 1 }),
            service("g", ServiceMode::Global),
            service(
                "j",
                ServiceMode::ReplicatedJob {
                    max_concurrent: 2,
                    total_completions: 3,
                },
            ),
            restarting,
            updating,
        ],
        vec![
            // a: one running, one on a Down node, one on a drained node, slots 5 and 6 above replicas
            task(
                "a1",
                "a",
                1,
                Some("n1"),
                TaskState::Running,
                TaskState::Running,
            ),
            task(
                "a2",
                "a",
                2,
                Some("down"),
                TaskState::Running,
                TaskState::Running,
            ),
            task(
                "a3",
                "a",
                3,
                Some("drained"),
                TaskState::Running,
                TaskState::Running,
            ),
            task(
                "a5",
                "a",
                5,
                Some("n2"),
                TaskState::Running,
                TaskState::Running,
            ),
            task("a6", "a", 6, None, TaskState::Running, TaskState::New),
            // b: more finished tasks in its slot than history keeps, and a removed one that finished
            exited("b1", "b", 1, Some("n1"), 1, 10),
            exited("b2", "b", 1, Some("n1"), 1, 20),
            exited("b3", "b", 1, Some("n1"), 1, 30),
            exited("b4", "b", 1, Some("n1"), 1, 40),
            exited("b5", "b", 1, Some("n1"), 1, 50),
            exited("b6", "b", 1, Some("n1"), 1, 60),
            task(
                "b7",
                "b",
                1,
                Some("n2"),
                TaskState::Running,
                TaskState::Pending,
            ),
            task(
                "b8",
                "b",
                2,
                Some("n2"),
                TaskState::Remove,
                TaskState::Shutdown,
            ),
            // g: on n1 only, and on the Down node
            task(
                "g1",
                "g",
                0,
                Some("n1"),
                TaskState::Running,
                TaskState::Running,
            ),
            task(
                "g2",
                "g",
                0,
                Some("down"),
                TaskState::Running,
                TaskState::Running,
            ),
            // j: one slot done, one running
            exited("j1", "j", 1, Some("n1"), 0, 100),
            task(
                "j2",
                "j",
                2,
                Some("n2"),
                TaskState::Running,
                TaskState::Running,
            ),
            // r: a task that just failed (restart delay not over)
            exited("r1", "r", 1, Some("n1"), 1, 999_000),
            task(
                "r2",
                "r",
                2,
                Some("n2"),
                TaskState::Running,
                TaskState::Running,
            ),
            // u: outdated tasks (spec version 1 of 2)
            task(
                "u1",
                "u",
                1,
                Some("n1"),
                TaskState::Running,
                TaskState::Running,
            ),
            task(
                "u2",
                "u",
                2,
                Some("n2"),
                TaskState::Running,
                TaskState::Running,
            ),
            // a deleted service's tasks: one running, one finished
            task(
                "x1",
                "x",
                1,
                Some("n1"),
                TaskState::Running,
                TaskState::Running,
            ),
            exited("x2", "x", 2, Some("n1"), 0, 5),
        ],
    );
    let mut w = World::with(ops);
    w.apply_ops(vec![Op::CreateRestartHistory(RestartHistory {
        key: RestartKey::Slot {
            service_id: "x".into(),
            slot: 1,
        },
        meta: Default::default(),
        restarts: vec![1],
    })]);
    w.time = 1_000_000;
    w
}

#[test]
fn a_scoped_run_proposes_what_a_full_run_proposes_for_the_scope() {
    let w = varied();
    let services: Vec<&str> = vec!["a", "b", "g", "j", "r", "u", "x", "nope"];
    let mut scopes: Vec<Scope> = services.iter().map(|s| Scope::of([*s])).collect();
    scopes.push(Scope::of(["a", "g", "x"]));
    scopes.push(Scope::of(services.clone()));
    for (name, full) in CONTROLLERS {
        let (_, scoped) = SCOPED_CONTROLLERS
            .iter()
            .find(|(n, _)| n == name)
            .expect("same controllers");
        let all = full(&w.state, w.time, &mut SeqIds::new("t"));
        assert_eq!(
            scoped(&w.state, &Scope::All, w.time, &mut SeqIds::new("t")),
            all,
            "{name}: the scope of everything is the full run"
        );
        for scope in &scopes {
            let in_scope = |op: &&Op| match *name {
                // these work on every task waiting for a node (or their few objects), whatever the scope
                "scheduler" | "gc" | "networks" => true,
                // IPAM: VIPs for the scope's services, addresses for every task waiting for a node
                "ipam" => !matches!(op, Op::UpdateService { .. }) || scope_has(scope, &w.state, op),
                _ => scope_has(scope, &w.state, op),
            };
            let mut want: Vec<String> = all.ops.iter().filter(in_scope).map(text).collect();
            let plan = scoped(&w.state, scope, w.time, &mut SeqIds::new("t"));
            let mut got: Vec<String> = plan.ops.iter().map(text).collect();
            want.sort();
            got.sort();
            assert_eq!(got, want, "{name} on {scope:?}");
        }
    }
    // the state is varied enough that every service-scoped controller has something to do
    let busy: BTreeSet<&str> = CONTROLLERS
        .iter()
        .filter(|(_, c)| !c(&w.state, w.time, &mut SeqIds::new("t")).is_empty())
        .map(|(n, _)| *n)
        .collect();
    for name in [
        "replicated",
        "global",
        "jobs",
        "orphans",
        "update",
        "scheduler",
        "reaper",
    ] {
        assert!(busy.contains(name), "{name} has nothing to do: {busy:?}");
    }
}

#[test]
fn the_scoped_and_full_lists_agree() {
    let scoped: Vec<&str> = SCOPED_CONTROLLERS.iter().map(|(n, _)| *n).collect();
    let full: Vec<&str> = CONTROLLERS.iter().map(|(n, _)| *n).collect();
    assert_eq!(scoped, full);
}

fn touched(f: impl FnOnce(&mut Touched)) -> Touched {
    let mut t = Touched::new();
    f(&mut t);
    t
}

#[test]
fn dirty_scope_widens_as_documented() {
    let w = varied();
    let s = &w.state;
    assert_eq!(dirty_scope(s, None), Scope::All, "unknown: everything");
    assert!(dirty_scope(s, Some(&Touched::new())).is_empty());
    // a task's change: its service
    let t = touched(|t| {
        t.object(ObjectKind::Task, "a1");
        t.task_services.insert("a".into());
        t.task_nodes.insert("n1".into());
    });
    assert_eq!(dirty_scope(s, Some(&t)), Scope::of(["a"]));
    // a node's change: the services with tasks on it, every global service, the services of unplaced tasks
    let t = touched(|t| t.object(ObjectKind::Node, "n2"));
    assert_eq!(
        dirty_scope(s, Some(&t)),
        Scope::of(["a", "b", "g", "j", "r", "u"])
    );
    let t = touched(|t| t.object(ObjectKind::Node, "new-node"));
    assert_eq!(dirty_scope(s, Some(&t)), Scope::of(["a", "b", "g"]));
    // addresses freed on a network: the services of unplaced tasks
    let t = touched(|t| {
        t.address_networks.insert("net".into());
    });
    assert_eq!(dirty_scope(s, Some(&t)), Scope::of(["a", "b"]));
    // a restart history: its service (recorded by the store as the service it hangs off)
    let t = touched(|t| {
        t.object(ObjectKind::RestartHistory, "r/1");
        t.task_services.insert("r".into());
    });
    assert_eq!(dirty_scope(s, Some(&t)), Scope::of(["r"]));
    for kind in [
        ObjectKind::Network,
        ObjectKind::Secret,
        ObjectKind::Config,
        ObjectKind::Stack,
        ObjectKind::Cluster,
    ] {
        let t = touched(|t| t.object(kind, "x"));
        assert_eq!(dirty_scope(s, Some(&t)), Scope::All, "{kind}");
    }
}
