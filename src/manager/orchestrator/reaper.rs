//! The reaper: deletes tasks nobody needs any more. Per slot (per (service, node) for global services) it
//! keeps the newest `task_history_retention_limit` tasks that finished and were shut down (terminal status,
//! desired Shutdown or later) and deletes older ones; it deletes tasks marked Remove once they finished, or
//! when their node is Down or gone or they never had one; tasks shut down before any agent had them (status
//! New or Pending) or whose node is gone; tasks of deleted services once they finished; and the restart
//! histories of deleted services.
//!
//! Must not: delete a task that may still run on a node it can reach, a job's successful task (desired
//! Complete: it marks the slot done), or the newest task of a slot (it tells an ended slot from a vacant one).

use std::collections::BTreeMap;

use crate::manager::{Plan, Scope};
use crate::model::{ClusterSettings, NodeState, Task, TaskState};
use crate::store::{ClusterState, Op};
use crate::util::{IdSource, Millis};

/// The retention limit in force (the cluster's setting, or the default), at least 1.
pub fn retention_limit(state: &ClusterState) -> usize {
    let limit = state.cluster().map_or_else(
        || ClusterSettings::default().task_history_retention_limit,
        |c| c.settings.task_history_retention_limit,
    );
    limit.clamp(1, usize::MAX as u64) as usize
}

/// Whether `task`'s node is Down or gone, or it never had one: nothing will ever report its end.
fn unreachable(state: &ClusterState, task: &Task) -> bool {
    match &task.node_id {
        None => true,
        Some(n) => state
            .node(n)
            .is_none_or(|n| n.status.state == NodeState::Down),
    }
}

/// Deletes what is no longer needed (see the module docs).
pub fn reconcile(state: &ClusterState, now: Millis, ids: &mut dyn IdSource) -> Plan {
    reconcile_in(state, &Scope::All, now, ids)
}

/// [`reconcile`] for the tasks and restart histories of the scope's services (deleted ones too) only.
pub fn reconcile_in(
    state: &ClusterState,
    scope: &Scope,
    _now: Millis,
    _ids: &mut dyn IdSource,
) -> Plan {
    let mut plan = Plan::new();
    let limit = retention_limit(state);
    let mut history: BTreeMap<(&str, u64, &str), Vec<&Task>> = BTreeMap::new();
    let (tasks, histories): (
        Box<dyn Iterator<Item = &Task>>,
        Box<dyn Iterator<Item = &crate::model::RestartHistory>>,
    ) = match scope {
        Scope::All => (Box::new(state.tasks()), Box::new(state.restart_histories())),
        Scope::Services(ids) => (
            Box::new(ids.iter().flat_map(|id| state.tasks_of_service(id))),
            Box::new(
                ids.iter()
                    .filter(|id| state.service(id).is_none())
                    .flat_map(|id| state.restart_histories_of(id)),
            ),
        ),
    };
    for t in tasks {
        let terminal = t.status.state.is_terminal();
        let service_gone = state.service(&t.service_id).is_none();
        let removable = t.desired_state >= TaskState::Remove && (terminal || unreachable(state, t));
        // Stopped before any agent had it, or its node is gone: nothing will ever report its end.
        let abandoned = t.desired_state >= TaskState::Shutdown
            && !terminal
            && (t.status.state <= TaskState::Pending
                || t.node_id
                    .as_deref()
                    .is_some_and(|n| state.node(n).is_none()));
        if removable || abandoned || (service_gone && terminal) {
            plan.ops.push(Op::DeleteTask { id: t.id.clone() });
        } else if terminal && t.desired_state >= TaskState::Shutdown {
            let node = if t.slot == 0 {
                t.node_id.as_deref().unwrap_or("")
            } else {
                ""
            };
            history
                .entry((&t.service_id, t.slot, node))
                .or_default()
                .push(t);
        }
    }
    for (_, mut tasks) in history {
        if tasks.len() <= limit {
            continue;
        }
        tasks.sort_by(|a, b| {
            (a.meta.created_at, a.status.timestamp, &a.id).cmp(&(
                b.meta.created_at,
                b.status.timestamp,
                &b.id,
            ))
        });
        let excess = tasks.len() - limit;
        for t in &tasks[..excess] {
            plan.ops.push(Op::DeleteTask { id: t.id.clone() });
        }
    }
    for h in histories {
        if state.service(h.key.service_id()).is_none() {
            plan.ops.push(Op::DeleteRestartHistory {
                key: h.key.clone(),
                expected_version: h.meta.version,
            });
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manager::testutil::*;
    use crate::model::{
        Cluster, Meta, Node, NodeAvailability, RestartHistory, RestartKey, ServiceMode,
    };
    use crate::util::SeqIds;

    fn done(id: &str, slot: u64) -> Op {
        Op::CreateTask(task(
            id,
            "s1",
            slot,
            Some("n1"),
            TaskState::Shutdown,
            TaskState::Shutdown,
        ))
    }

    /// Seven finished tasks in slot 1, each created by its own batch so they have distinct ages.
    fn seven_finished() -> World {
        let mut w = World::with(creates(
            vec![node("n1")],
            vec![service("s1", ServiceMode::Replicated { replicas: 1 })],
            vec![],
        ));
        for i in 1..=7 {
            w.time += 1000;
            w.apply_ops(vec![done(&format!("t{i}"), 1)]);
        }
        w
    }

    #[test]
    fn retention_limit_5() {
        let mut w = seven_finished();
        let plan = reconcile(&w.state, w.time, &mut SeqIds::new("x"));
        assert_eq!(summary(&plan), vec!["delete t1", "delete t2"]);
        check_idempotent(&mut w, reconcile);
        assert_eq!(w.state.tasks().count(), 5);
    }

    #[test]
    fn retention_from_cluster_settings() {
        let mut w = seven_finished();
        w.apply_ops(vec![Op::CreateCluster(Cluster {
            id: "c".into(),
            meta: Meta::default(),
            settings: ClusterSettings {
                task_history_retention_limit: 2,
                ..ClusterSettings::default()
            },
            join_tokens: Default::default(),
            removed_nodes: Default::default(),
            ca_rotation: None,
            unlock_key: Default::default(),
        })]);
        let plan = reconcile(&w.state, w.time, &mut SeqIds::new("x"));
        assert_eq!(
            summary(&plan),
            vec![
                "delete t1",
                "delete t2",
                "delete t3",
                "delete t4",
                "delete t5"
            ]
        );
    }

    #[test]
    fn table() {
        let down = node_with("n2", NodeAvailability::Active, NodeState::Down);
        let history = |svc: &str| {
            Op::CreateRestartHistory(RestartHistory {
                key: RestartKey::Slot {
                    service_id: svc.into(),
                    slot: 1,
                },
                meta: Meta::default(),
                restarts: vec![1],
            })
        };
        type Case<'a> = (&'a str, Vec<Node>, Vec<Task>, Vec<Op>, Vec<&'a str>);
        let cases: Vec<Case> = vec![
            (
                "remove once finished",
                vec![node("n1")],
                vec![
                    task(
                        "a",
                        "s1",
                        2,
                        Some("n1"),
                        TaskState::Remove,
                        TaskState::Shutdown,
                    ),
                    task(
                        "b",
                        "s1",
                        3,
                        Some("n1"),
                        TaskState::Remove,
                        TaskState::Running,
                    ),
                ],
                vec![],
                vec!["delete a"],
            ),
            (
                "remove on a down, gone or no node",
                vec![node("n1"), down.clone()],
                vec![
                    task(
                        "a",
                        "s1",
                        2,
                        Some("n2"),
                        TaskState::Remove,
                        TaskState::Running,
                    ),
                    task(
                        "b",
                        "s1",
                        3,
                        Some("gone"),
                        TaskState::Remove,
                        TaskState::Running,
                    ),
                    task("c", "s1", 4, None, TaskState::Remove, TaskState::Pending),
                ],
                vec![],
                vec!["delete a", "delete b", "delete c"],
            ),
            (
                "deleted service: finished tasks and histories",
                vec![node("n1")],
                vec![
                    task(
                        "a",
                        "gone",
                        1,
                        Some("n1"),
                        TaskState::Running,
                        TaskState::Failed,
                    ),
                    task(
                        "b",
                        "gone",
                        2,
                        Some("n1"),
                        TaskState::Remove,
                        TaskState::Running,
                    ),
                ],
                vec![history("gone"), history("s1")],
                vec!["delete a", "history- gone/1"],
            ),
            (
                "shut down before assignment, or node gone",
                vec![node("n1"), down.clone()],
                vec![
                    task(
                        "a",
                        "s1",
                        0,
                        Some("n1"),
                        TaskState::Shutdown,
                        TaskState::Pending,
                    ),
                    task(
                        "b",
                        "s1",
                        2,
                        Some("gone"),
                        TaskState::Shutdown,
                        TaskState::Running,
                    ),
                    task(
                        "c",
                        "s1",
                        3,
                        Some("n2"),
                        TaskState::Shutdown,
                        TaskState::Running,
                    ),
                ],
                vec![],
                vec!["delete a", "delete b"],
            ),
            (
                "job successes and running tasks stay",
                vec![node("n1")],
                vec![
                    task(
                        "a",
                        "s1",
                        1,
                        Some("n1"),
                        TaskState::Complete,
                        TaskState::Complete,
                    ),
                    task(
                        "b",
                        "s1",
                        2,
                        Some("n1"),
                        TaskState::Running,
                        TaskState::Running,
                    ),
                    task(
                        "c",
                        "s1",
                        3,
                        Some("n1"),
                        TaskState::Shutdown,
                        TaskState::Shutdown,
                    ),
                ],
                vec![],
                vec![],
            ),
        ];
        for (name, nodes, tasks, extra, want) in cases {
            let mut ops = creates(
                nodes,
                vec![service("s1", ServiceMode::Replicated { replicas: 1 })],
                tasks,
            );
            ops.extend(extra);
            let mut w = World::with(ops);
            let plan = reconcile(&w.state, w.time, &mut SeqIds::new("x"));
            assert_eq!(summary(&plan), want, "{name}");
            check_idempotent(&mut w, reconcile);
        }
    }
}
