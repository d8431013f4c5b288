//! Draining a node moves its replicated tasks start-first: the replacement is created while the old task keeps
//! running, and the old one stops only once the replacement runs (or no node can take it); at most the
//! service's update parallelism of slots move at once.

use super::replicated::reconcile;
use crate::manager::testutil::*;
use crate::model::{NodeAvailability, NodeState, ServiceMode, Task, TaskState};
use crate::store::Op;
use crate::util::SeqIds;

fn world(replicas: u64, parallelism: u64, tasks: Vec<Task>) -> World {
    let mut s = service("s1", ServiceMode::Replicated { replicas });
    s.spec.update.parallelism = parallelism;
    World::with(creates(
        vec![
            node_with("n1", NodeAvailability::Drain, NodeState::Ready),
            node("n2"),
        ],
        vec![s],
        tasks,
    ))
}

/// Sets the status of the newest task of `slot` not on n1.
fn replacement_status(w: &mut World, slot: u64, state: TaskState, message: &str) {
    let t = w
        .state
        .tasks()
        .filter(|t| t.slot == slot && t.node_id.as_deref() != Some("n1"))
        .max_by_key(|t| t.meta.created_at)
        .cloned()
        .expect("a replacement");
    let mut new = t.clone();
    new.node_id = Some("n2".into());
    new.status.state = state;
    new.status.message = message.into();
    w.apply_ops(vec![Op::UpdateTask {
        task: new,
        expected_version: t.meta.version,
    }]);
}

#[test]
fn the_old_task_stops_only_once_its_replacement_runs() {
    let mut w = world(1, 1, vec![running("a", 1, "n1")]);
    let mut ids = SeqIds::new("r");
    let plan = reconcile(&w.state, w.time, &mut ids);
    assert_eq!(summary(&plan), vec!["create s1/1@- New"]);
    w.apply_plan(&plan);
    // placed and starting: the old one still runs
    replacement_status(&mut w, 1, TaskState::Starting, "");
    assert!(reconcile(&w.state, w.time, &mut ids).is_empty());
    // running: now the old one goes
    replacement_status(&mut w, 1, TaskState::Running, "");
    let plan = reconcile(&w.state, w.time, &mut ids);
    assert_eq!(
        summary(&plan),
        vec!["update a desired=Shutdown status=Running@n1"]
    );
    w.apply_plan(&plan);
    assert!(reconcile(&w.state, w.time, &mut ids).is_empty());
}

#[test]
fn a_replacement_no_node_can_take_lets_the_drain_win() {
    let mut w = world(1, 1, vec![running("a", 1, "n1")]);
    let mut ids = SeqIds::new("r");
    w.apply_plan(&reconcile(&w.state, w.time, &mut ids));
    replacement_status(
        &mut w,
        1,
        TaskState::Pending,
        "no suitable node (1 node not available)",
    );
    assert_eq!(
        summary(&reconcile(&w.state, w.time, &mut ids)),
        vec!["update a desired=Shutdown status=Running@n1"]
    );
}

#[test]
fn at_most_parallelism_slots_move_at_once() {
    let tasks = (1..=3)
        .map(|s| running(&format!("t{s}"), s, "n1"))
        .collect();
    let mut w = world(3, 1, tasks);
    let mut ids = SeqIds::new("r");
    let plan = reconcile(&w.state, w.time, &mut ids);
    assert_eq!(
        summary(&plan),
        vec!["create s1/1@- New"],
        "one move at a time"
    );
    w.apply_plan(&plan);
    assert!(
        reconcile(&w.state, w.time, &mut ids).is_empty(),
        "the next waits for the first"
    );
    replacement_status(&mut w, 1, TaskState::Running, "");
    let plan = reconcile(&w.state, w.time, &mut ids);
    assert_eq!(
        summary(&plan),
        vec![
            "update t1 desired=Shutdown status=Running@n1",
            "create s1/2@- New"
        ]
    );
    // parallelism 0: every slot moves at once
    let tasks = (1..=3)
        .map(|s| running(&format!("t{s}"), s, "n1"))
        .collect();
    let w = world(3, 0, tasks);
    assert_eq!(reconcile(&w.state, w.time, &mut ids).ops.len(), 3);
}
