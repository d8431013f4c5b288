//! The global orchestrator: a `Global` service has one live task (slot 0) on every eligible node (Ready,
//! Active, constraints match). Tasks on nodes that are Down, gone, drained or no longer match the
//! constraints are shut down; a paused node keeps its task but gets none. Tasks that ended on their own go
//! through the restart supervisor, keyed by (service, node). `GlobalJob` services use the same routine
//! from `jobs`. At most `MAX_TASK_OPS_PER_ROUND` tasks are created per round.
//!
//! Must not: create tasks on ineligible nodes, write task status, or touch replicated services.

use std::collections::BTreeMap;

use super::{new_task, reconcile_slot, set_desired, wanted, SlotCtx, SlotState};
use crate::manager::scheduler::filter::{global_eligible, global_may_keep};
use crate::manager::{Plan, Scope};
use crate::model::limits::MAX_TASK_OPS_PER_ROUND;
use crate::model::{RestartKey, Service, ServiceMode, Task, TaskState};
use crate::store::{ClusterState, Op};
use crate::util::{IdSource, Millis};

/// Reconciles one node-keyed service (global or global job): per node, its tasks; then a task for every
/// eligible node whose slot is vacant, while `budget` (tasks this round may still create) lasts. When the
/// budget ran out before every node was looked at, the service is `unfinished` in `plan`.
pub fn reconcile_service(
    state: &ClusterState,
    service: &Service,
    now: Millis,
    ids: &mut dyn IdSource,
    plan: &mut Plan,
    budget: &mut usize,
) {
    let placement = &service.spec.task.placement;
    let mut by_node: BTreeMap<&str, Vec<&Task>> = BTreeMap::new();
    for t in state.tasks_of_service(&service.id) {
        match t.node_id.as_deref() {
            Some(node) if t.slot == 0 => by_node.entry(node).or_default().push(t),
            // Not a global task (a mode change): it has no place here.
            _ => {
                if wanted(t) {
                    plan.ops.push(set_desired(t, TaskState::Remove));
                }
            }
        }
    }
    let mut states: BTreeMap<&str, SlotState> = BTreeMap::new();
    for (&node_id, tasks) in &by_node {
        let node = state.node(node_id);
        let keep_here = global_may_keep(node, placement);
        let ctx = SlotCtx {
            state,
            service,
            slot: 0,
            node: Some(node_id),
            can_replace: node.is_some_and(|n| global_eligible(n, placement)),
            key: RestartKey::Node {
                service_id: service.id.clone(),
                node_id: node_id.to_owned(),
            },
            now,
            moves: None,
        };
        let keep = |_: &Task| keep_here;
        let s = reconcile_slot(&ctx, tasks, &keep, ids, plan);
        states.insert(node_id, s);
    }
    for node in state.nodes() {
        if *budget == 0 {
            plan.unfinished.insert(service.id.clone());
            break;
        }
        if !global_eligible(node, placement) {
            continue;
        }
        let s = states.get(node.id.as_str()).copied();
        if s.is_none_or(|s| s == SlotState::Vacant) {
            let task = new_task(service, 0, Some(&node.id), now, ids);
            plan.ops.push(Op::CreateTask(task));
            *budget -= 1;
        }
    }
}

/// Makes every global service have one live task per eligible node (see the module docs).
pub fn reconcile(state: &ClusterState, now: Millis, ids: &mut dyn IdSource) -> Plan {
    reconcile_in(state, &Scope::All, now, ids)
}

/// [`reconcile`] on the global services of `scope` only.
pub fn reconcile_in(
    state: &ClusterState,
    scope: &Scope,
    now: Millis,
    ids: &mut dyn IdSource,
) -> Plan {
    let mut plan = Plan::new();
    let mut budget = MAX_TASK_OPS_PER_ROUND;
    for service in scope.services(state) {
        if service.spec.mode == ServiceMode::Global {
            reconcile_service(state, service, now, ids, &mut plan, &mut budget);
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manager::testutil::*;
    use crate::model::{Node, NodeAvailability, NodeState, RestartCondition};
    use crate::util::SeqIds;

    fn on(id: &str, node: &str) -> Task {
        task(
            id,
            "g",
            0,
            Some(node),
            TaskState::Running,
            TaskState::Running,
        )
    }

    #[test]
    fn table() {
        let now = 1_000_000;
        let global = || service("g", ServiceMode::Global);
        let constrained = || {
            let mut s = global();
            s.spec.task.placement.constraints = vec!["node.labels.zone==a".into()];
            s
        };
        type Case<'a> = (&'a str, Vec<Node>, Service, Vec<Task>, Vec<&'a str>);
        let cases: Vec<Case> = vec![
            (
                "one per node",
                vec![node("n1"), node("n2")],
                global(),
                vec![],
                vec!["create g/0@n1 New", "create g/0@n2 New"],
            ),
            (
                "node added",
                vec![node("n1"), node("n2")],
                global(),
                vec![on("a", "n1")],
                vec!["create g/0@n2 New"],
            ),
            (
                "drained node: shut down, nothing new",
                vec![
                    node_with("n1", NodeAvailability::Drain, NodeState::Ready),
                    node("n2"),
                ],
                global(),
                vec![on("a", "n1"), on("b", "n2")],
                vec!["update a desired=Shutdown status=Running@n1"],
            ),
            (
                "paused node keeps its task, gets none",
                vec![
                    node_with("n1", NodeAvailability::Pause, NodeState::Ready),
                    node_with("n2", NodeAvailability::Pause, NodeState::Ready),
                ],
                global(),
                vec![on("a", "n1")],
                vec![],
            ),
            (
                "down node: shut down",
                vec![node_with("n1", NodeAvailability::Active, NodeState::Down)],
                global(),
                vec![on("a", "n1")],
                vec!["update a desired=Shutdown status=Running@n1"],
            ),
            (
                "constraints",
                vec![
                    labelled("n1", &[("zone", "a")]),
                    labelled("n2", &[("zone", "b")]),
                ],
                constrained(),
                vec![on("b", "n2")],
                vec![
                    "update b desired=Shutdown status=Running@n2",
                    "create g/0@n1 New",
                ],
            ),
            (
                "failed task restarts on its node",
                vec![node("n1")],
                global(),
                vec![exited("a", "g", 0, Some("n1"), 1, now)],
                vec![
                    "update a desired=Shutdown status=Failed@n1",
                    "create g/0@n1 New",
                ],
            ),
            (
                "failed task on a paused node is not restarted",
                vec![node_with("n1", NodeAvailability::Pause, NodeState::Ready)],
                global(),
                vec![exited("a", "g", 0, Some("n1"), 1, now)],
                vec!["update a desired=Shutdown status=Failed@n1"],
            ),
            (
                "node back after drain: new task",
                vec![node("n1")],
                global(),
                vec![task(
                    "a",
                    "g",
                    0,
                    Some("n1"),
                    TaskState::Shutdown,
                    TaskState::Shutdown,
                )],
                vec!["create g/0@n1 New"],
            ),
            (
                "ended by policy: not recreated",
                vec![node("n1")],
                {
                    let mut s = global();
                    s.spec.task.restart.condition = RestartCondition::OnFailure;
                    s
                },
                vec![{
                    let mut t = exited("a", "g", 0, Some("n1"), 0, now);
                    t.desired_state = TaskState::Shutdown;
                    t
                }],
                vec![],
            ),
        ];
        for (name, nodes, svc, tasks, want) in cases {
            let mut w = World::with(creates(nodes, vec![svc], tasks));
            w.time = now;
            let plan = reconcile(&w.state, now, &mut SeqIds::new("x"));
            assert_eq!(summary(&plan), want, "{name}");
            check_idempotent(&mut w, reconcile);
        }
    }
}
