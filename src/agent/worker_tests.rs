//! Tests of the worker with the scripted fake executor: start, exits, start failures, shutdown
//! and removal, orphans, spec rejections, adoption by a new worker, and retries.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use super::*;
use crate::exec::fake::{FakeExecutor, Match, Outcome};
use crate::exec::{ExitStatus, RuntimeState};
use crate::model::{FileReference, Meta, TaskSpec, TaskStatus};
use crate::util::ManualClock;

const T0: u64 = 1_700_000_000_000;
const RUN_STATES: [TaskState; 5] = [
    TaskState::Accepted,
    TaskState::Preparing,
    TaskState::Ready,
    TaskState::Starting,
    TaskState::Running,
];

fn task(id: &str, service: &str, slot: u64) -> Task {
    let mut spec = TaskSpec::default();
    spec.container.image = "app".into();
    spec.container.args = vec!["app".into(), "--serve".into()];
    Task {
        id: id.into(),
        meta: Meta::default(),
        service_id: service.into(),
        slot,
        node_id: Some("n1".into()),
        spec,
        spec_version: 1,
        desired_state: TaskState::Running,
        status: TaskStatus::new(TaskState::Assigned, 0),
        attachments: Vec::new(),
    }
}

fn assignments(tasks: &[Task]) -> Assignments {
    Assignments {
        tasks: tasks.to_vec(),
        service_names: HashMap::from([
            ("s1".into(), "web".into()),
            ("s2".into(), "bad".into()),
            ("s3".into(), "job".into()),
        ]),
        node_id: "n1".into(),
        node_hostname: "box1".into(),
        ..Assignments::default()
    }
}

struct Harness {
    exec: FakeExecutor,
    clock: ManualClock,
    worker: Worker,
    rx: UnboundedReceiver<StatusReport>,
    seen: BTreeMap<String, Vec<TaskStatus>>,
}

impl Harness {
    fn new(exec: FakeExecutor) -> Self {
        let clock = ManualClock::new(T0);
        let (tx, rx) = unbounded_channel();
        let worker = Worker::new(Arc::new(exec.clone()), Arc::new(clock.clone()), tx);
        Harness {
            exec,
            clock,
            worker,
            rx,
            seen: BTreeMap::new(),
        }
    }

    async fn assign(&self, tasks: &[Task]) {
        self.worker
            .assign(assignments(tasks))
            .await
            .expect("assign");
    }

    fn states(&self, id: &str) -> Vec<TaskState> {
        self.seen
            .get(id)
            .map(|v| v.iter().map(|s| s.state).collect())
            .unwrap_or_default()
    }

    fn last(&self, id: &str) -> &TaskStatus {
        self.seen.get(id).and_then(|v| v.last()).expect("a report")
    }

    /// Collects reports until `id` reached `state` (5 s deadline).
    async fn until(&mut self, id: &str, state: TaskState) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !self.states(id).contains(&state) {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(r)) => self.seen.entry(r.task_id).or_default().push(r.status),
                _ => panic!("{id} never reached {state:?}; saw {:?}", self.seen),
            }
        }
    }

    /// Collects what arrives until the worker is idle (for "nothing more happens"). Only for tests with paused
    /// time (`start_paused`): tokio moves paused time past the 100 ms timeout only once every task of the
    /// runtime is blocked, so this returns when nothing more can happen, however slow the machine.
    async fn drain(&mut self) {
        while let Ok(Some(r)) =
            tokio::time::timeout(Duration::from_millis(100), self.rx.recv()).await
        {
            self.seen.entry(r.task_id).or_default().push(r.status);
        }
    }
}

async fn eventually(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn three_tasks_run_and_reassigning_starts_nothing_twice() {
    let mut h = Harness::new(FakeExecutor::new());
    let tasks: Vec<Task> = (1..=3).map(|i| task(&format!("t{i}"), "s1", i)).collect();
    h.assign(&tasks).await;
    for t in &tasks {
        h.until(&t.id, TaskState::Running).await;
        assert_eq!(h.states(&t.id), RUN_STATES);
        assert_eq!(h.last(&t.id).timestamp, T0);
        assert_eq!(h.last(&t.id).message, "started");
    }
    // The same set again, twice at once, with and without the manager's updated status.
    let mut updated = tasks.clone();
    for t in &mut updated {
        t.status = TaskStatus::new(TaskState::Running, T0);
    }
    let (a, b) = tokio::join!(h.assign(&tasks), h.assign(&updated));
    let ((), ()) = (a, b);
    h.drain().await;
    for t in &tasks {
        assert_eq!(h.states(&t.id), RUN_STATES, "nothing reported twice");
    }
    let states = h.exec.states();
    assert_eq!(states.len(), 3);
    assert!(states.values().all(|s| *s == RuntimeState::Running));
}

#[tokio::test(start_paused = true)]
async fn exits_are_reported_like_docker() {
    let exec = FakeExecutor::new();
    let after = Duration::from_secs(2);
    exec.script(
        Match::TaskNamePrefix("bad.".into()),
        Outcome::Exit { code: 1, after },
    );
    exec.script(
        Match::TaskNamePrefix("job.".into()),
        Outcome::Exit { code: 0, after },
    );
    let mut h = Harness::new(exec);
    h.assign(&[task("f", "s2", 1), task("c", "s3", 1)]).await;
    h.until("f", TaskState::Running).await;
    h.until("c", TaskState::Running).await;
    h.clock.advance(Duration::from_secs(3));
    h.exec.advance(Duration::from_secs(3));
    h.until("f", TaskState::Failed).await;
    h.until("c", TaskState::Complete).await;
    let f = h.last("f");
    assert_eq!(f.err.as_deref(), Some("task: non-zero exit (1)"));
    assert_eq!(f.exit_code, Some(1));
    assert_eq!(
        f.timestamp,
        T0 + 3000,
        "terminal states carry the clock's time"
    );
    let c = h.last("c");
    assert_eq!((c.exit_code, c.err.as_deref()), (Some(0), None));
    // Still assigned with desired Running: a finished task is not started again.
    h.assign(&[task("f", "s2", 1), task("c", "s3", 1)]).await;
    h.drain().await;
    assert_eq!(h.states("f").len(), 6);
    assert!(matches!(h.exec.states()["f"], RuntimeState::Exited(_)));
}

#[tokio::test]
async fn start_failure_is_failed_with_the_executors_message() {
    let exec = FakeExecutor::new();
    let msg = "exec: \"x\": executable file not found in $PATH";
    exec.script(Match::Any, Outcome::FailStart(msg.into()));
    let mut h = Harness::new(exec);
    h.assign(&[task("a", "s1", 1)]).await;
    h.until("a", TaskState::Failed).await;
    let a = h.last("a");
    assert_eq!((a.err.as_deref(), a.exit_code), (Some(msg), Some(127)));
    assert!(!h.states("a").contains(&TaskState::Running));
}

#[tokio::test(start_paused = true)]
async fn desired_shutdown_then_remove() {
    let mut h = Harness::new(FakeExecutor::new());
    let mut t = task("a", "s1", 1);
    h.assign(std::slice::from_ref(&t)).await;
    h.until("a", TaskState::Running).await;
    t.desired_state = TaskState::Shutdown;
    t.status = TaskStatus::new(TaskState::Running, T0);
    h.assign(std::slice::from_ref(&t)).await;
    h.until("a", TaskState::Shutdown).await;
    assert_eq!(h.last("a").exit_code, Some(128 + 15));
    assert_eq!(
        h.exec.states()["a"],
        RuntimeState::Exited(ExitStatus::signaled(15)),
        "stopped, kept for its logs"
    );
    t.desired_state = TaskState::Remove;
    h.assign(std::slice::from_ref(&t)).await;
    eventually("removal", || h.exec.states().is_empty()).await;
    h.drain().await;
    assert_eq!(h.states("a").last(), Some(&TaskState::Shutdown));
}

#[tokio::test]
async fn unassigned_tasks_are_stopped_and_removed() {
    let mut h = Harness::new(FakeExecutor::new());
    h.assign(&[task("a", "s1", 1), task("b", "s1", 2)]).await;
    h.until("b", TaskState::Running).await;
    h.assign(&[task("a", "s1", 1)]).await;
    eventually("b removed", || !h.exec.states().contains_key("b")).await;
    assert_eq!(h.exec.states()["a"], RuntimeState::Running);
}

#[tokio::test]
async fn spec_errors_are_rejected() {
    let mut h = Harness::new(FakeExecutor::new());
    let mut empty = task("e", "s1", 1);
    empty.spec.container.args.clear();
    let mut secret = task("s", "s1", 2);
    secret.spec.container.secrets = vec![FileReference {
        name: "pw".into(),
        id: "nope".into(),
        ..FileReference::default()
    }];
    h.assign(&[empty, secret]).await;
    h.until("e", TaskState::Rejected).await;
    h.until("s", TaskState::Rejected).await;
    assert_eq!(
        h.last("e").err.as_deref(),
        Some("task has no command: the process executor needs `command` or `entrypoint`")
    );
    assert!(h.last("s").err.as_deref().is_some_and(|e| e.contains("pw")));
    assert!(h.exec.states().is_empty(), "nothing created");
}

#[tokio::test(start_paused = true)]
async fn a_new_worker_adopts_instead_of_restarting() {
    let exec = FakeExecutor::new();
    let mut h = Harness::new(exec.clone());
    let mut tasks = vec![task("a", "s1", 1), task("b", "s1", 2), task("o", "s1", 3)];
    h.assign(&tasks).await;
    for t in &tasks {
        h.until(&t.id, TaskState::Running).await;
    }
    drop(h); // the daemon "crashes"; the runtime keeps its tasks
    exec.exit_task("b", ExitStatus::exited(3)).expect("b exits");
    let mut h = Harness::new(exec);
    for t in &mut tasks {
        t.status = TaskStatus::new(TaskState::Running, T0);
    }
    tasks.pop(); // "o" is no longer assigned: an orphan
    h.assign(&tasks).await;
    h.until("a", TaskState::Running).await;
    h.until("b", TaskState::Failed).await;
    assert_eq!(
        h.states("a"),
        [TaskState::Running],
        "adopted, not restarted"
    );
    assert_eq!(h.last("b").exit_code, Some(3));
    eventually("orphan removed", || !h.exec.states().contains_key("o")).await;
    assert_eq!(h.exec.states()["a"], RuntimeState::Running);
    h.drain().await;
    assert!(!h.seen.contains_key("o"), "orphans are not reported");
}

#[tokio::test(start_paused = true)]
async fn lost_and_finished_tasks_are_not_started() {
    let mut h = Harness::new(FakeExecutor::new());
    let mut lost = task("l", "s1", 1);
    lost.status = TaskStatus::new(TaskState::Running, T0);
    let mut done = task("d", "s1", 2);
    done.status = TaskStatus::new(TaskState::Complete, T0);
    let mut stopped = task("s", "s1", 3);
    stopped.desired_state = TaskState::Shutdown;
    h.assign(&[lost, done, stopped]).await;
    h.until("l", TaskState::Failed).await;
    h.until("s", TaskState::Shutdown).await;
    assert_eq!(h.last("l").err.as_deref(), Some(LOST_MESSAGE));
    h.drain().await;
    assert!(!h.seen.contains_key("d"));
    assert!(h.exec.states().is_empty(), "nothing started");
}

#[tokio::test]
async fn temporary_errors_retry_on_resync_and_logs_pass_through() {
    let exec = FakeExecutor::new();
    let mut h = Harness::new(exec.clone());
    exec.set_unavailable(true);
    h.assign(&[task("a", "s1", 1)]).await;
    h.until("a", TaskState::Preparing).await;
    eventually("runner forgotten", || {
        h.worker.shared.runner_ids().is_empty()
    })
    .await;
    exec.set_unavailable(false);
    h.worker.resync().await.expect("resync");
    h.until("a", TaskState::Running).await;
    assert_eq!(h.states("a"), RUN_STATES);
    exec.write_log("a", crate::exec::LogStream::Stdout, "hi")
        .expect("log");
    use futures::StreamExt;
    let lines: Vec<_> = h
        .worker
        .logs("a", LogOptions::default())
        .await
        .expect("logs")
        .collect()
        .await;
    assert_eq!(lines.len(), 1);
}

#[test]
fn assignments_debug_hides_secret_data() {
    let mut a = assignments(&[]);
    a.secrets.insert("sec1".into(), b"hunter2".to_vec());
    let shown = format!("{a:?}");
    assert!(shown.contains("sec1") && !shown.contains("hunter2") && !shown.contains("104"));
}

/// A start wave runs at most the configured number of starts at once, and every task reports as it comes up
/// (no report waits for the whole wave).
#[tokio::test(start_paused = true)]
async fn a_start_wave_runs_a_bounded_number_of_starts_at_once() {
    let exec = FakeExecutor::new();
    exec.script(Match::Any, Outcome::SlowStart(Duration::from_secs(1)));
    let mut h = Harness::new(exec);
    h.worker = Worker::new(Arc::new(h.exec.clone()), Arc::new(h.clock.clone()), {
        let (tx, rx) = unbounded_channel();
        h.rx = rx;
        tx
    })
    .with_start_parallelism(2);
    let tasks: Vec<Task> = (1..=6).map(|i| task(&format!("t{i}"), "s1", i)).collect();
    h.assign(&tasks).await;
    let mut in_flight = std::collections::BTreeSet::new();
    let mut most = 0;
    let mut running = Vec::new();
    while running.len() < tasks.len() {
        let r = tokio::time::timeout(Duration::from_secs(30), h.rx.recv())
            .await
            .expect("reports keep coming")
            .expect("a report");
        match r.status.state {
            TaskState::Accepted => {
                in_flight.insert(r.task_id.clone());
            }
            TaskState::Running => {
                in_flight.remove(&r.task_id);
                running.push((r.task_id.clone(), tokio::time::Instant::now()));
            }
            _ => {}
        }
        most = most.max(in_flight.len());
    }
    assert_eq!(most, 2, "at most two starts at once");
    // the first tasks were running a whole start time before the last ones
    let first = running.first().unwrap().1;
    let last = running.last().unwrap().1;
    assert!(
        last.duration_since(first) >= Duration::from_secs(2),
        "{running:?}"
    );
}

#[tokio::test]
async fn the_network_map_reaches_subscribers_once_per_change() {
    let h = Harness::new(FakeExecutor::new());
    let mut maps = h.worker.network_maps();
    let mut a = assignments(&[]);
    Arc::make_mut(&mut a.network_map)
        .networks
        .push(crate::model::netmap::NetworkInfo {
            id: "net1".into(),
            subnet: "10.0.1.0/24".into(),
            ..Default::default()
        });
    h.worker.assign(a.clone()).await.expect("assign");
    assert!(maps.has_changed().expect("sender alive"));
    assert_eq!(maps.borrow_and_update().networks[0].subnet, "10.0.1.0/24");
    h.worker.assign(a).await.expect("assign");
    assert!(
        !maps.has_changed().expect("sender alive"),
        "the same map again is no change"
    );
    h.worker.assign(assignments(&[])).await.expect("assign");
    assert!(maps.borrow_and_update().networks.is_empty());
}

#[path = "drain_tests.rs"]
mod drain;
