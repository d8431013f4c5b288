//! Failing updates and rollbacks, converging through every controller and a simulated agent: pause,
//! continue, rollback, a failing rollback, and a paused update resumed by a new deploy.

use super::sim::*;
use super::*;

#[test]
fn failure_pauses_then_a_new_deploy_resumes() {
    let mut sim = Sim::new(
        two_nodes(),
        vec![replicated("s1", 3, "v1", cfg(1, UpdateOrder::StopFirst))],
    );
    // Fails as it starts: the next batch never begins.
    sim.deploy("s1", |s| s.task.container.image = "crash".into());
    let paused = |w: &World| {
        w.state
            .service("s1")
            .unwrap()
            .update_status
            .as_ref()
            .unwrap()
            .state
            == UpdateState::Paused
    };
    sim.run_until("paused", &paused);
    let status = sim.status("s1");
    assert!(
        status
            .message
            .starts_with("update paused due to failure or early termination of task t"),
        "{}",
        status.message
    );
    assert_eq!(status.completed_at, None);
    for _ in 0..20 {
        sim.round(&mut |_| {});
    }
    assert_eq!(
        v2_slots(&sim.w),
        vec![1],
        "no slot after the first was touched"
    );
    assert_eq!(
        running_images(&sim.w, "s1")
            .iter()
            .filter(|i| *i == "v1")
            .count(),
        2
    );

    // A new deploy starts over and wins.
    sim.deploy("s1", |s| s.task.container.image = "v3".into());
    sim.converge(&mut |_| {});
    assert_eq!(running_images(&sim.w, "s1"), imgs("v3", 3));
    assert_eq!(sim.status("s1").state, UpdateState::Completed);
}

#[test]
fn late_failure_pauses_with_the_next_batch_in_flight() {
    let mut sim = Sim::new(
        two_nodes(),
        vec![replicated("s1", 4, "v1", cfg(1, UpdateOrder::StopFirst))],
    );
    // Runs for a second, then exits 1: the next batch has started by then (as in Docker, where the
    // monitor runs beside the batches).
    sim.deploy("s1", |s| s.task.container.image = "bad".into());
    sim.run_until("paused", &|w| {
        w.state
            .service("s1")
            .unwrap()
            .update_status
            .as_ref()
            .unwrap()
            .state
            == UpdateState::Paused
    });
    let touched = v2_slots(&sim.w);
    assert!(touched.len() < 4, "{touched:?}");
    let mut min_running = usize::MAX;
    for _ in 0..20 {
        sim.round(&mut |w| min_running = min_running.min(running_count(w, "s1")));
    }
    assert_eq!(v2_slots(&sim.w), touched, "nothing new after the pause");
    assert!(min_running >= 4 - touched.len());
    assert_eq!(sim.status("s1").state, UpdateState::Paused);
}

#[test]
fn failure_with_continue_keeps_going() {
    let mut c = cfg(1, UpdateOrder::StopFirst);
    c.failure_action = FailureAction::Continue;
    let mut sim = Sim::new(two_nodes(), vec![replicated("s1", 3, "v1", c)]);
    sim.deploy("s1", |s| s.task.container.image = "bad".into());
    sim.run_until("every slot tried", &|w| v2_slots(w) == vec![1, 2, 3]);
    for _ in 0..10 {
        sim.round(&mut |_| {});
        assert!(!matches!(
            sim.status("s1").state,
            UpdateState::Paused | UpdateState::RollbackStarted
        ));
    }
}

#[test]
fn failure_rolls_back_to_the_previous_spec() {
    let mut c = cfg(1, UpdateOrder::StopFirst);
    c.failure_action = FailureAction::Rollback;
    let mut sim = Sim::new(two_nodes(), vec![replicated("s1", 3, "v1", c)]);
    let before = sim.service("s1").spec.clone();
    // Fails as it starts: only slot 1 is ever touched.
    let untouched: Vec<String> = {
        let mut v: Vec<(u64, String)> = sim
            .w
            .state
            .tasks_of_service("s1")
            .filter(|t| t.slot > 1)
            .map(|t| (t.slot, t.id.clone()))
            .collect();
        v.sort();
        v.into_iter().map(|(_, id)| id).collect()
    };
    sim.deploy("s1", |s| s.task.container.image = "crash".into());
    let bad = sim.service("s1").spec.clone();
    sim.run_until("rollback started", &|w| {
        w.state
            .service("s1")
            .unwrap()
            .update_status
            .as_ref()
            .unwrap()
            .state
            == UpdateState::RollbackStarted
    });
    assert!(sim
        .status("s1")
        .message
        .starts_with("update rolled back due to failure or early termination of task t"));
    sim.converge(&mut |_| {});
    let s = sim.service("s1");
    assert_eq!(s.spec, before, "the previous spec is back");
    assert_eq!(s.previous_spec.as_ref(), Some(&bad));
    assert_eq!(s.spec_version, 3);
    let status = sim.status("s1");
    assert_eq!(status.state, UpdateState::RollbackCompleted);
    assert!(
        status.message.starts_with(
            "rollback completed (update rolled back due to failure or early termination of task t"
        ),
        "the reason survives: {}",
        status.message
    );
    assert!(status.completed_at.is_some());
    assert_eq!(running_images(&sim.w, "s1"), imgs("v1", 3));
    let running: Vec<&Task> = sim
        .w
        .state
        .tasks_of_service("s1")
        .filter(|t| t.status.state == TaskState::Running)
        .collect();
    assert!(running
        .iter()
        .all(|t| t.spec == before.task && t.spec_version == 3));
    for id in untouched {
        assert!(
            running.iter().any(|t| t.id == id),
            "slot task {id} was never touched"
        );
    }
}

#[test]
fn failing_rollback_pauses() {
    let mut s = replicated("s1", 2, "v2", cfg(1, UpdateOrder::StopFirst));
    let mut bad = s.spec.clone();
    bad.task.container.image = "crash".into();
    s.previous_spec = Some(bad);
    let mut sim = Sim::new(two_nodes(), vec![s]);
    let op = rollback_op(sim.service("s1"), sim.w.time, MANUAL_ROLLBACK).unwrap();
    sim.w.apply_ops(vec![op]);
    assert_eq!(sim.status("s1").message, "manually requested rollback");
    sim.run_until("rollback paused", &|w| {
        w.state
            .service("s1")
            .unwrap()
            .update_status
            .as_ref()
            .unwrap()
            .state
            == UpdateState::RollbackPaused
    });
    assert!(sim
        .status("s1")
        .message
        .starts_with("rollback paused due to failure or early termination of task t"));
    for _ in 0..10 {
        sim.round(&mut |_| {});
    }
    assert_eq!(sim.status("s1").state, UpdateState::RollbackPaused);
    assert_eq!(
        running_images(&sim.w, "s1")
            .iter()
            .filter(|i| *i == "v2")
            .count(),
        1,
        "the second slot was left alone"
    );
}
