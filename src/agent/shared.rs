//! What the worker and its runners share: the executor, the reporter and the table of live runners, each
//! steered through a `watch` of [`Desired`]. Below both [`super::worker`] and [`super::runner`], so neither
//! needs the other's internals.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::AbortHandle;

use crate::exec::Executor;
use crate::model::TaskState;

use super::report::Reporter;

/// What the manager wants of a task, as far as the runner is concerned (ordered: it only grows).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Desired {
    /// Run it (desired Running, or Complete for jobs).
    Run,
    /// Stop it, keep its directory (logs).
    Shutdown,
    /// Stop it and delete everything it left.
    Remove,
}

impl Desired {
    /// The runner's view of a task's desired state.
    pub(crate) fn of(state: TaskState) -> Desired {
        match state {
            s if s <= TaskState::Running || s == TaskState::Complete => Desired::Run,
            TaskState::Remove => Desired::Remove,
            _ => Desired::Shutdown,
        }
    }
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
    /// Bounds how many tasks are being created, prepared and started at once (a start wave of a thousand
    /// tasks runs that many at a time, and each reports as it goes).
    pub(crate) starts: Arc<tokio::sync::Semaphore>,
    /// How long a backend task is left running after its stop was asked (milliseconds; 0: no drain).
    drain_delay_ms: AtomicU64,
    /// The tasks that can receive connections (an endpoint in the node's network map, or published ports), as
    /// of the last assignments that listed them.
    backends: Mutex<HashSet<String>>,
}

/// How long a task that receives connections keeps running after its stop was asked, by default in `swarmd`
/// (`--drain-delay`): the time for every node to apply the map without it (Docker waits as long for its
/// gossip). A [`super::Worker`] drains only when given a delay.
pub const DEFAULT_DRAIN_DELAY: Duration = Duration::from_secs(2);

/// How many task starts run at once by default: enough to keep a container engine busy (Docker and
/// containerd start containers in parallel fine), few enough that each finishes and reports promptly.
pub const DEFAULT_START_PARALLELISM: usize = 32;

impl Shared {
    /// No runners yet.
    pub(super) fn new(executor: Arc<dyn Executor>, reporter: Reporter) -> Shared {
        Shared {
            executor,
            reporter,
            runners: Mutex::new(HashMap::new()),
            next_gen: AtomicU64::new(1),
            starts: Arc::new(tokio::sync::Semaphore::new(DEFAULT_START_PARALLELISM)),
            drain_delay_ms: AtomicU64::new(0),
            backends: Mutex::new(HashSet::new()),
        }
    }

    /// Sets the drain delay (zero: a stop is sent at once).
    pub(super) fn set_drain_delay(&self, d: Duration) {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        self.drain_delay_ms.store(ms, Ordering::Relaxed);
    }

    fn backends(&self) -> MutexGuard<'_, HashSet<String>> {
        self.backends.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records whether `task_id` can receive connections (called for every assigned task before it is
    /// steered, so a runner asked to stop knows).
    pub(super) fn mark_backend(&self, task_id: &str, backend: bool) {
        let mut set = self.backends();
        if backend {
            if !set.contains(task_id) {
                set.insert(task_id.to_string());
            }
        } else {
            set.remove(task_id);
        }
    }

    /// Forgets the marks of tasks neither assigned nor run any more.
    pub(super) fn retain_backends(&self, keep: impl Fn(&str) -> bool) {
        let runners: HashSet<String> = self.runners().keys().cloned().collect();
        self.backends()
            .retain(|id| keep(id) || runners.contains(id));
    }

    /// How long runner `task_id` waits between being asked to stop and sending the stop signal: the drain delay
    /// for a task that receives connections, else `None`.
    pub(crate) fn drain_delay_of(&self, task_id: &str) -> Option<Duration> {
        let ms = self.drain_delay_ms.load(Ordering::Relaxed);
        (ms > 0 && self.backends().contains(task_id)).then(|| Duration::from_millis(ms))
    }

    fn runners(&self) -> MutexGuard<'_, HashMap<String, RunnerHandle>> {
        // Every update is one insert, remove or field assignment: consistent after a panic.
        self.runners.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The ids of the tasks that have a runner.
    pub(super) fn runner_ids(&self) -> Vec<String> {
        self.runners().keys().cloned().collect()
    }

    /// Whether `task_id` has a runner.
    pub(super) fn has_runner(&self, task_id: &str) -> bool {
        self.runners().contains_key(task_id)
    }

    /// Enters a new runner for `task_id` (replacing any older one): its generation and the receiving end of
    /// its desired state, starting at `want`.
    pub(super) fn register(&self, task_id: &str, want: Desired) -> (u64, watch::Receiver<Desired>) {
        let gen = self.next_gen.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = watch::channel(want);
        self.runners().insert(
            task_id.to_string(),
            RunnerHandle {
                gen,
                desired: tx,
                abort: None,
            },
        );
        (gen, rx)
    }

    /// Records how to abort runner `gen` of `task_id`, unless it already ended or was replaced.
    pub(super) fn set_abort(&self, task_id: &str, gen: u64, abort: AbortHandle) {
        if let Some(r) = self.runners().get_mut(task_id).filter(|r| r.gen == gen) {
            r.abort = Some(abort);
        }
    }

    /// Aborts every runner (their tasks keep running in the runtime).
    pub(super) fn abort_all(&self) {
        for r in self.runners().values() {
            if let Some(a) = &r.abort {
                a.abort();
            }
        }
    }

    /// Called by a runner when it ends: drops its entry unless a newer runner took the id.
    pub(crate) fn forget(&self, task_id: &str, gen: u64) {
        let mut runners = self.runners();
        if runners.get(task_id).is_some_and(|r| r.gen == gen) {
            runners.remove(task_id);
        }
    }

    /// Raises the desired state of an existing runner; false when there is none.
    pub(super) fn steer(&self, task_id: &str, want: Desired) -> bool {
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
