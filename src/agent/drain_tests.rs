//! Draining: a task that receives connections (an endpoint in the node's network map, or published ports)
//! keeps running for the drain delay after its stop was asked, and only then gets its stop signal; other tasks
//! stop at once. Paused time: the delays are the fake clock's, not the machine's.

use super::*;
use crate::model::netmap::Endpoint;
use crate::model::service::{PortConfig, PortProtocol, PublishMode};

const DELAY: Duration = Duration::from_secs(2);

fn harness(delay: Duration) -> Harness {
    let mut h = Harness::new(FakeExecutor::new());
    let (tx, rx) = unbounded_channel();
    h.rx = rx;
    h.worker = Worker::new(Arc::new(h.exec.clone()), Arc::new(h.clock.clone()), tx)
        .with_drain_delay(delay);
    h
}

/// The assignments of `tasks`, with an endpoint in the network map for each task named in `endpoints`.
fn with_endpoints(tasks: &[Task], endpoints: &[&str]) -> Assignments {
    let mut a = assignments(tasks);
    let node_id = a.node_id.clone();
    Arc::make_mut(&mut a.network_map).endpoints = endpoints
        .iter()
        .map(|id| {
            Arc::new(Endpoint {
                task_id: (*id).into(),
                service_id: "s1".into(),
                node_id: node_id.clone(),
                network_id: "net1".into(),
                address: "10.0.1.5".into(),
                ..Default::default()
            })
        })
        .collect();
    a
}

fn running(t: &Task) -> Task {
    let mut t = t.clone();
    t.status = TaskStatus::new(TaskState::Running, T0);
    t
}

fn stopping(t: &Task, desired: TaskState) -> Task {
    let mut t = running(t);
    t.desired_state = desired;
    t
}

/// Whether the fake runtime still runs `id` (no stop signal yet).
fn still_running(h: &Harness, id: &str) -> bool {
    h.exec.states().get(id) == Some(&RuntimeState::Running)
}

#[tokio::test(start_paused = true)]
async fn a_backend_is_stopped_only_after_the_drain_delay() {
    let mut h = harness(DELAY);
    let (web, worker) = (task("w", "s1", 1), task("b", "s2", 1));
    let both = [web.clone(), worker.clone()];
    h.worker
        .assign(with_endpoints(&both, &["w"]))
        .await
        .unwrap();
    h.until("w", TaskState::Running).await;
    h.until("b", TaskState::Running).await;
    let asked = tokio::time::Instant::now();
    let down = [
        stopping(&web, TaskState::Shutdown),
        stopping(&worker, TaskState::Shutdown),
    ];
    h.worker
        .assign(with_endpoints(&down, &["w"]))
        .await
        .unwrap();
    // the task without an endpoint stops at once
    h.until("b", TaskState::Shutdown).await;
    assert_eq!(
        tokio::time::Instant::now(),
        asked,
        "no drain for a non-backend"
    );
    // the backend is left running (and unreported) through the delay
    tokio::time::sleep(DELAY - Duration::from_millis(100)).await;
    assert!(still_running(&h, "w"), "no stop signal during the drain");
    h.drain().await;
    assert_eq!(h.states("w").last(), Some(&TaskState::Running));
    h.until("w", TaskState::Shutdown).await;
    assert!(tokio::time::Instant::now() >= asked + DELAY);
    assert_eq!(
        h.last("w").exit_code,
        Some(128 + 15),
        "then the stop signal"
    );
}

#[tokio::test(start_paused = true)]
async fn published_ports_make_a_backend_and_removal_drains_too() {
    let mut h = harness(DELAY);
    let web = task("w", "s1", 1);
    let mut a = assignments(std::slice::from_ref(&web));
    a.service_ports.insert(
        "s1".into(),
        vec![PortConfig {
            protocol: PortProtocol::Tcp,
            target_port: 80,
            published_port: Some(8080),
            publish_mode: PublishMode::Ingress,
        }],
    );
    h.worker.assign(a.clone()).await.unwrap();
    h.until("w", TaskState::Running).await;
    // the task disappears from the assignments (removed): it is still drained first
    let asked = tokio::time::Instant::now();
    h.worker.assign(assignments(&[])).await.unwrap();
    tokio::time::sleep(DELAY - Duration::from_millis(100)).await;
    assert!(still_running(&h, "w"));
    eventually("w removed", || h.exec.states().is_empty()).await;
    assert!(tokio::time::Instant::now() >= asked + DELAY);
}

#[tokio::test(start_paused = true)]
async fn a_zero_delay_stops_a_backend_at_once() {
    let mut h = harness(Duration::ZERO);
    let web = task("w", "s1", 1);
    h.worker
        .assign(with_endpoints(std::slice::from_ref(&web), &["w"]))
        .await
        .unwrap();
    h.until("w", TaskState::Running).await;
    let asked = tokio::time::Instant::now();
    let down = [stopping(&web, TaskState::Shutdown)];
    h.worker
        .assign(with_endpoints(&down, &["w"]))
        .await
        .unwrap();
    h.until("w", TaskState::Shutdown).await;
    assert_eq!(tokio::time::Instant::now(), asked);
}

#[tokio::test(start_paused = true)]
async fn a_backend_that_exits_while_draining_is_reported_and_not_signalled() {
    let mut h = harness(DELAY);
    let web = task("w", "s1", 1);
    h.worker
        .assign(with_endpoints(std::slice::from_ref(&web), &["w"]))
        .await
        .unwrap();
    h.until("w", TaskState::Running).await;
    let down = [stopping(&web, TaskState::Shutdown)];
    h.worker
        .assign(with_endpoints(&down, &["w"]))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    h.exec.exit_task("w", ExitStatus::exited(0)).unwrap();
    h.until("w", TaskState::Shutdown).await;
    assert_eq!(h.last("w").exit_code, Some(0), "its own exit, no signal");
    assert_eq!(
        h.exec.states()["w"],
        RuntimeState::Exited(ExitStatus::exited(0))
    );
}
