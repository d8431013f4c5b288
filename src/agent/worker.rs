//! The worker: converges this node's runtime to its assignments, level-triggered (DESIGN
//! invariant 5). Every [`Worker::assign`] carries the complete set of the node's tasks; the
//! worker compares it with its runners and with what the executor still has (after a daemon
//! restart), adopts what still runs instead of restarting it, starts what is missing, stops and
//! removes what is no longer wanted, and reports every observed state through a channel.
//!
//! Must not: talk to the dispatcher (the session forwards [`StatusReport`]s and calls `assign`),
//! write desired state, or hold its runner map across an await.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use thiserror::Error;
use tokio::sync::{mpsc::UnboundedSender, watch};
use tokio::task::AbortHandle;

use crate::exec::process::LOST_MESSAGE;
use crate::exec::{ExecError, Executor, LogLines, LogOptions, TaskInfo};
use crate::model::{Task, TaskState};
use crate::util::Clock;

use super::report::{Detail, Reporter, StatusReport};
use super::runner::{self, Desired, Start};
use super::spec::{process_spec, SpecError, TaskContext};

/// Everything assigned to this node: always the complete set (each call replaces the last).
#[derive(Clone, Debug, Default)]
pub struct Assignments {
    /// The node's tasks, with their desired state and last status known to the manager.
    pub tasks: Vec<Task>,
    /// Secret data by secret id.
    pub secrets: HashMap<String, Vec<u8>>,
    /// Config data by config id.
    pub configs: HashMap<String, Vec<u8>>,
    /// Service names by service id.
    pub service_names: HashMap<String, String>,
    /// This node's id.
    pub node_id: String,
    /// This node's hostname.
    pub node_hostname: String,
}

/// Errors of [`Worker::assign`].
#[derive(Debug, Error)]
pub enum WorkerError {
    /// The executor could not list its tasks; tasks already known were updated, nothing new
    /// was started or removed. Call `assign` again later.
    #[error("listing the runtime's tasks: {0}")]
    List(#[source] ExecError),
}

/// One runner as the worker sees it.
struct RunnerHandle {
    gen: u64,
    desired: watch::Sender<Desired>,
    abort: Option<AbortHandle>,
}

/// What the worker and its runners share.
pub(crate) struct Shared {
    pub(crate) executor: Arc<dyn Executor>,
    pub(crate) reporter: Reporter,
    runners: Mutex<HashMap<String, RunnerHandle>>,
    next_gen: AtomicU64,
}

impl Shared {
    fn runners(&self) -> MutexGuard<'_, HashMap<String, RunnerHandle>> {
        // Every update is one insert, remove or field assignment: consistent after a panic.
        self.runners.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Called by a runner when it ends: drops its entry unless a newer runner took the id.
    pub(crate) fn forget(&self, task_id: &str, gen: u64) {
        let mut runners = self.runners();
        if runners.get(task_id).is_some_and(|r| r.gen == gen) {
            runners.remove(task_id);
        }
    }

    /// Raises the desired state of an existing runner; false when there is none.
    fn steer(&self, task_id: &str, want: Desired) -> bool {
        match self.runners().get(task_id) {
            Some(r) => {
                r.desired.send_if_modified(|d| {
                    let raise = want > *d;
                    if raise {
                        *d = want;
                    }
                    raise
                });
                true
            }
            None => false,
        }
    }
}

/// Converges the local runtime to the node's assignments. Dropping it abandons the runners but
/// leaves the tasks running (like a daemon crash); a new worker adopts them.
pub struct Worker {
    shared: Arc<Shared>,
    assigning: tokio::sync::Mutex<()>,
}

impl Worker {
    /// A worker driving `executor`, stamping reports with `clock` and sending them to `reports`.
    pub fn new(
        executor: Arc<dyn Executor>,
        clock: Arc<dyn Clock>,
        reports: UnboundedSender<StatusReport>,
    ) -> Self {
        Worker {
            shared: Arc::new(Shared {
                executor,
                reporter: Reporter::new(clock, reports),
                runners: Mutex::new(HashMap::new()),
                next_gen: AtomicU64::new(1),
            }),
            assigning: tokio::sync::Mutex::new(()),
        }
    }

    /// Converges to `a`, the complete set of this node's tasks. Returns once every change is
    /// under way (tasks start and stop in the background). Safe to call repeatedly and
    /// concurrently (calls are serialized).
    pub async fn assign(&self, a: Assignments) -> Result<(), WorkerError> {
        let _serial = self.assigning.lock().await;
        let listed = self.shared.executor.list().await;
        let known: Option<HashMap<&str, &TaskInfo>> = listed
            .as_ref()
            .ok()
            .map(|l| l.iter().map(|t| (t.task_id.as_str(), t)).collect());
        let reporter = &self.shared.reporter;
        let mut assigned: HashSet<&str> = HashSet::new();
        for task in &a.tasks {
            if !assigned.insert(task.id.as_str()) {
                continue;
            }
            reporter.assigned(&task.id, task.status.state);
            let mut want = Desired::of(task.desired_state);
            if task.status.state.is_terminal() {
                // Finished as far as the manager knows: never run it again.
                want = want.max(Desired::Shutdown);
            }
            if self.shared.steer(&task.id, want) {
                continue;
            }
            let Some(known) = &known else { continue };
            if known.contains_key(task.id.as_str()) {
                let respec = if want == Desired::Run {
                    self.spec_of(task, &a).ok()
                } else {
                    None
                };
                self.spawn(&task.id, want, Start::Adopt { respec });
            } else if want == Desired::Run {
                if task.status.state >= TaskState::Starting {
                    // It was started on this node, but the runtime has no trace of it.
                    reporter.report(
                        &task.id,
                        TaskState::Failed,
                        Detail::error("failed", LOST_MESSAGE),
                    );
                    continue;
                }
                match self.spec_of(task, &a) {
                    Ok(spec) => self.spawn(&task.id, want, Start::Create(spec)),
                    Err(e) => {
                        reporter.report(
                            &task.id,
                            TaskState::Rejected,
                            Detail::error("rejected", e.to_string()),
                        );
                    }
                }
            } else {
                reporter.report(&task.id, TaskState::Shutdown, Detail::message("shutdown"));
            }
        }
        let unassigned: Vec<String> = self
            .shared
            .runners()
            .keys()
            .filter(|id| !assigned.contains(id.as_str()))
            .cloned()
            .collect();
        for id in unassigned {
            self.shared.steer(&id, Desired::Remove);
        }
        if let Some(known) = &known {
            for id in known.keys() {
                let has_runner = self.shared.runners().contains_key(*id);
                if !assigned.contains(id) && !has_runner {
                    tracing::info!(task_id = id, "removing a task that is no longer assigned");
                    self.spawn(id, Desired::Remove, Start::Adopt { respec: None });
                }
            }
        }
        reporter.retain(|id| assigned.contains(id));
        listed.map(drop).map_err(WorkerError::List)
    }

    /// The task's output, for `service logs`.
    pub async fn logs(&self, task_id: &str, opts: LogOptions) -> Result<LogLines, ExecError> {
        self.shared.executor.logs(task_id, opts).await
    }

    fn spec_of(&self, task: &Task, a: &Assignments) -> Result<crate::exec::ProcessSpec, SpecError> {
        let ctx = TaskContext {
            service_name: a
                .service_names
                .get(&task.service_id)
                .cloned()
                .unwrap_or_else(|| task.service_id.clone()),
            node_id: a.node_id.clone(),
            node_hostname: a.node_hostname.clone(),
        };
        let secrets = |id: &str| a.secrets.get(id).cloned();
        let configs = |id: &str| a.configs.get(id).cloned();
        process_spec(task, &ctx, &secrets, &configs)
    }

    fn spawn(&self, task_id: &str, want: Desired, start: Start) {
        let gen = self.shared.next_gen.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = watch::channel(want);
        self.shared.runners().insert(
            task_id.to_string(),
            RunnerHandle {
                gen,
                desired: tx,
                abort: None,
            },
        );
        let handle = tokio::spawn(runner::run(
            self.shared.clone(),
            task_id.to_string(),
            gen,
            start,
            rx,
        ));
        if let Some(r) = self
            .shared
            .runners()
            .get_mut(task_id)
            .filter(|r| r.gen == gen)
        {
            r.abort = Some(handle.abort_handle());
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        for r in self.shared.runners().values() {
            if let Some(a) = &r.abort {
                a.abort();
            }
        }
    }
}

#[cfg(test)]
mod tests {
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

        /// Collects what arrives within a short while (for "nothing more happens").
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

    #[tokio::test]
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

    #[tokio::test]
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

    #[tokio::test]
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

    #[tokio::test]
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

    #[tokio::test]
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
    async fn temporary_errors_retry_on_the_next_assign_and_logs_pass_through() {
        let exec = FakeExecutor::new();
        let mut h = Harness::new(exec.clone());
        exec.set_unavailable(true);
        h.assign(&[task("a", "s1", 1)]).await;
        h.until("a", TaskState::Preparing).await;
        eventually("runner forgotten", || h.worker.shared.runners().is_empty()).await;
        exec.set_unavailable(false);
        h.assign(&[task("a", "s1", 1)]).await;
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
}
