//! Health checks through the worker on the scripted fake executor, in paused tokio time: a task
//! is `Running` only once a check passes, `retries` failures (or timeouts) stop it and report
//! `Failed` with Docker's error, failures inside the start period do not count, `NONE` disables
//! checking, and an adopted task keeps `Running` while its checks start over.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use tokio::time::Instant;

use crate::exec::fake::{FakeExecutor, HealthScript, Match};
use crate::exec::{ExitStatus, RuntimeState};
use crate::model::{HealthConfig, Meta, Task, TaskHealth, TaskSpec, TaskState, TaskStatus};
use crate::util::ManualClock;

use super::{Assignments, StatusReport, Worker};

const SECS: fn(u64) -> Duration = Duration::from_secs;

fn health(test: &[&str]) -> HealthConfig {
    HealthConfig {
        test: test.iter().map(|s| s.to_string()).collect(),
        interval: Some(SECS(10)),
        timeout: Some(SECS(2)),
        retries: Some(3),
        start_period: None,
        start_interval: None,
    }
}

fn task(id: &str, image: &str, check: Option<HealthConfig>) -> Task {
    let mut spec = TaskSpec::default();
    spec.container.image = image.into();
    spec.container.args = vec!["app".into()];
    spec.container.healthcheck = check;
    Task {
        id: id.into(),
        meta: Meta::default(),
        service_id: "s1".into(),
        slot: 1,
        node_id: Some("n1".into()),
        spec,
        spec_version: 1,
        desired_state: TaskState::Running,
        status: TaskStatus::new(TaskState::Assigned, 0),
        attachments: Vec::new(),
    }
}

fn assignments(t: &Task) -> Assignments {
    Assignments {
        tasks: vec![t.clone()],
        service_names: HashMap::from([("s1".into(), "web".into())]),
        node_id: "n1".into(),
        node_hostname: "box1".into(),
        ..Assignments::default()
    }
}

fn worker(exec: &FakeExecutor) -> (Worker, UnboundedReceiver<StatusReport>) {
    let (tx, rx) = unbounded_channel();
    let w = Worker::new(Arc::new(exec.clone()), Arc::new(ManualClock::new(1)), tx);
    (w, rx)
}

/// Reports until one in `state`, with the (virtual) time each arrived, relative to `t0`.
async fn until(
    rx: &mut UnboundedReceiver<StatusReport>,
    state: TaskState,
    t0: Instant,
) -> Vec<(TaskStatus, Duration)> {
    let deadline = Instant::now() + SECS(3600);
    let mut seen: Vec<(TaskStatus, Duration)> = Vec::new();
    while !seen.iter().any(|(s, _)| s.state == state) {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(r)) => seen.push((r.status, t0.elapsed())),
            _ => panic!("never reached {state:?}; saw {seen:?}"),
        }
    }
    seen
}

fn states(seen: &[(TaskStatus, Duration)]) -> Vec<(TaskState, Option<TaskHealth>)> {
    seen.iter().map(|(s, _)| (s.state, s.health)).collect()
}

#[tokio::test(start_paused = true)]
async fn running_is_reported_only_once_a_check_passes() {
    let exec = FakeExecutor::new();
    exec.script_health(Match::Image("app".into()), HealthScript::FailFirst(1));
    let (w, mut rx) = worker(&exec);
    let t0 = Instant::now();
    let t = task(
        "t1",
        "app",
        Some(health(&["CMD-SHELL", "curl -f localhost"])),
    );
    w.assign(assignments(&t)).await.expect("assign");
    let seen = until(&mut rx, TaskState::Running, t0).await;
    assert_eq!(
        states(&seen),
        [
            (TaskState::Accepted, None),
            (TaskState::Preparing, None),
            (TaskState::Ready, None),
            (TaskState::Starting, None),
            (TaskState::Starting, Some(TaskHealth::Starting)),
            (TaskState::Running, Some(TaskHealth::Healthy)),
        ]
    );
    assert_eq!(
        seen.last().map(|(_, at)| *at),
        Some(SECS(20)),
        "second check"
    );
    let checks = exec.checks("t1");
    assert_eq!(checks.len(), 2);
    assert_eq!(checks[0], ["/bin/sh", "-c", "curl -f localhost"]);
    // Still healthy later: nothing more is reported.
    tokio::time::sleep(SECS(105)).await;
    assert!(rx.try_recv().is_err());
    assert_eq!(exec.checks("t1").len(), 12, "every ten seconds");
}

#[tokio::test(start_paused = true)]
async fn failing_checks_stop_the_task_as_unhealthy() {
    let exec = FakeExecutor::new();
    exec.script_health(Match::Image("sick".into()), HealthScript::Fail);
    exec.script_health(Match::Image("hung".into()), HealthScript::Hang);
    for (id, image) in [("t1", "sick"), ("t2", "hung")] {
        let (w, mut rx) = worker(&exec);
        let t0 = Instant::now();
        let t = task(id, image, Some(health(&["CMD", "check"])));
        w.assign(assignments(&t)).await.expect("assign");
        let seen = until(&mut rx, TaskState::Failed, t0).await;
        assert!(
            !seen.iter().any(|(s, _)| s.state == TaskState::Running),
            "{id}: {seen:?}"
        );
        let (last, at) = seen.last().expect("a report");
        assert_eq!(last.err.as_deref(), Some("task: unhealthy container"));
        assert_eq!(last.health, Some(TaskHealth::Unhealthy));
        assert_eq!(
            last.exit_code,
            Some(128 + 15),
            "stopped with its stop signal"
        );
        assert_eq!(*at, SECS(30), "{id}: three checks, ten seconds apart");
        assert_eq!(exec.checks(id).len(), 3);
        assert_eq!(
            exec.states().get(id),
            Some(&RuntimeState::Exited(ExitStatus::signaled(15)))
        );
    }
}

#[tokio::test(start_paused = true)]
async fn failures_inside_the_start_period_do_not_count() {
    let exec = FakeExecutor::new();
    exec.script_health(Match::Image("slow".into()), HealthScript::FailFirst(4));
    exec.script_health(Match::Image("sick".into()), HealthScript::Fail);
    let mut check = health(&["CMD", "check"]);
    check.retries = Some(2);
    check.start_period = Some(SECS(20));
    check.start_interval = Some(SECS(5));

    // Four failures at 5, 10, 15 s (inside) and 20 s (outside: the first that counts), then a pass.
    let (w, mut rx) = worker(&exec);
    let t0 = Instant::now();
    w.assign(assignments(&task("t1", "slow", Some(check.clone()))))
        .await
        .expect("assign");
    let seen = until(&mut rx, TaskState::Running, t0).await;
    assert_eq!(seen.last().map(|(_, at)| *at), Some(SECS(30)));
    assert_eq!(exec.checks("t1").len(), 5);

    // Always failing: 5, 10, 15 s ignored, 20 and 30 s count.
    let (w, mut rx) = worker(&exec);
    let t0 = Instant::now();
    w.assign(assignments(&task("t2", "sick", Some(check))))
        .await
        .expect("assign");
    let seen = until(&mut rx, TaskState::Failed, t0).await;
    assert_eq!(seen.last().map(|(_, at)| *at), Some(SECS(30)));
    assert_eq!(exec.checks("t2").len(), 5);
}

#[tokio::test(start_paused = true)]
async fn none_disables_the_check() {
    let exec = FakeExecutor::new();
    exec.script_health(Match::Any, HealthScript::Fail);
    let (w, mut rx) = worker(&exec);
    let t0 = Instant::now();
    w.assign(assignments(&task("t1", "app", Some(health(&["NONE"])))))
        .await
        .expect("assign");
    let seen = until(&mut rx, TaskState::Running, t0).await;
    assert_eq!(seen.last().map(|(s, _)| s.health), Some(None));
    tokio::time::sleep(SECS(300)).await;
    assert!(exec.checks("t1").is_empty());
    assert!(rx.try_recv().is_err());
}

#[tokio::test(start_paused = true)]
async fn an_adopted_task_keeps_running_while_its_checks_start_over() {
    let exec = FakeExecutor::new();
    let (w1, mut rx1) = worker(&exec);
    let t0 = Instant::now();
    let mut t = task("t1", "app", Some(health(&["CMD", "check"])));
    w1.assign(assignments(&t)).await.expect("assign");
    until(&mut rx1, TaskState::Running, t0).await;
    drop(w1); // the daemon restarts; the task keeps running

    let (w2, mut rx2) = worker(&exec);
    let t0 = Instant::now();
    t.status = TaskStatus::new(TaskState::Running, 1);
    t.status.health = Some(TaskHealth::Healthy);
    w2.assign(assignments(&t)).await.expect("assign");
    let first = rx2.recv().await.expect("a report");
    assert_eq!(
        (first.status.state, first.status.health),
        (TaskState::Running, Some(TaskHealth::Starting))
    );
    let next = rx2.recv().await.expect("a report");
    assert_eq!(
        (next.status.state, next.status.health, t0.elapsed()),
        (TaskState::Running, Some(TaskHealth::Healthy), SECS(10))
    );
    // Healthy, then sick: stopped and failed.
    exec.set_health("t1", HealthScript::Fail).expect("script");
    let seen = until(&mut rx2, TaskState::Failed, t0).await;
    let (last, at) = seen.last().expect("a report");
    assert_eq!(last.err.as_deref(), Some("task: unhealthy container"));
    assert_eq!(*at, SECS(40));
}
