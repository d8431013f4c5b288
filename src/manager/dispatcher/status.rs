//! Task status reports from a node, turned into store changes: a report is taken only from the node the task
//! is assigned to, only when it moves the task's state forward (or keeps it and changes the details), and an
//! unchanged one is dropped.
//!
//! Must not: change a task's desired state, or touch a task of another node.

use crate::model::TaskStatus;
use crate::store::{ClusterState, Op};

/// The ops that record `reports` (task id, status) sent by `node_id`, each expecting the version it read.
pub fn status_ops(
    state: &ClusterState,
    node_id: &str,
    reports: &[(String, TaskStatus)],
) -> Vec<Op> {
    reports
        .iter()
        .filter_map(|(id, status)| {
            let task = state.task(id)?;
            if task.node_id.as_deref() != Some(node_id) || status.state < task.status.state {
                return None;
            }
            if &task.status == status {
                return None;
            }
            let mut updated = task.clone();
            updated.status = status.clone();
            Some(Op::UpdateTask {
                task: updated,
                expected_version: task.meta.version,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manager::testutil::{creates, node, service, task, World};
    use crate::model::{ServiceMode, TaskState};

    fn world() -> World {
        World::with(creates(
            vec![node("n1"), node("n2")],
            vec![service("web", ServiceMode::Replicated { replicas: 1 })],
            vec![task(
                "t1",
                "web",
                1,
                Some("n1"),
                TaskState::Running,
                TaskState::Starting,
            )],
        ))
    }

    fn status(state: TaskState) -> TaskStatus {
        TaskStatus::new(state, 5)
    }

    #[test]
    fn only_forward_only_from_the_tasks_node_only_when_changed() {
        let w = world();
        let current = w.state.task("t1").expect("t1").status.clone();
        let running = vec![("t1".to_string(), status(TaskState::Running))];
        let ops = status_ops(&w.state, "n1", &running);
        assert!(
            matches!(&ops[..], [Op::UpdateTask { task, .. }] if task.status.state == TaskState::Running)
        );
        assert!(
            status_ops(&w.state, "n2", &running).is_empty(),
            "not its task"
        );
        let back = vec![("t1".to_string(), status(TaskState::Assigned))];
        assert!(status_ops(&w.state, "n1", &back).is_empty(), "backwards");
        let same = vec![("t1".to_string(), current)];
        assert!(status_ops(&w.state, "n1", &same).is_empty(), "unchanged");
        let unknown = vec![("nope".to_string(), status(TaskState::Running))];
        assert!(status_ops(&w.state, "n1", &unknown).is_empty());
    }
}
