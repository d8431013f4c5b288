//! What the worker and its runners share: the executor, the reporter and the table of live runners, each
//! steered through a `watch` of [`Desired`]. Below both [`super::worker`] and [`super::runner`], so neither
//! needs the other's internals.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

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
}

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
        }
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
