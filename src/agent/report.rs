//! Status reports from the worker to whoever forwards them to the dispatcher: one
//! [`StatusReport`] per observed state change, stamped with the injected clock, and never a state
//! lower than one already reported or known to the manager (states only move forward, DESIGN
//! invariant 4); the same state is reported again only when it carries a new health. Tasks that are not in the current assignments (orphans after a restart) are
//! never reported.
//!
//! Must not: decide what a task should do, or touch the runtime.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::mpsc::UnboundedSender;

use crate::exec::ExitStatus;
use crate::model::{TaskHealth, TaskState, TaskStatus};
use crate::util::Clock;

/// One observed state of one task, for the dispatcher.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusReport {
    /// The task.
    pub task_id: String,
    /// What the agent observed.
    pub status: TaskStatus,
}

/// The highest states known for one task.
#[derive(Clone, Copy, Debug, Default)]
struct Floor {
    /// What the manager last had (from the assignments).
    manager: Option<TaskState>,
    /// What this worker last sent.
    sent: Option<TaskState>,
    /// The health this worker last sent with `sent`.
    sent_health: Option<TaskHealth>,
}

/// Sends reports, keeping them monotonic per task.
pub(crate) struct Reporter {
    clock: Arc<dyn Clock>,
    tx: UnboundedSender<StatusReport>,
    floors: Mutex<HashMap<String, Floor>>,
}

/// What a report says besides its state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Detail {
    pub(crate) message: String,
    pub(crate) err: Option<String>,
    pub(crate) exit_code: Option<i32>,
    pub(crate) health: Option<TaskHealth>,
}

impl Detail {
    pub(crate) fn message(message: &str) -> Self {
        Detail {
            message: message.into(),
            ..Detail::default()
        }
    }

    pub(crate) fn error(message: &str, err: impl Into<String>) -> Self {
        Detail {
            message: message.into(),
            err: Some(err.into()),
            ..Detail::default()
        }
    }

    pub(crate) fn with_health(mut self, health: TaskHealth) -> Self {
        self.health = Some(health);
        self
    }
}

impl Reporter {
    pub(crate) fn new(clock: Arc<dyn Clock>, tx: UnboundedSender<StatusReport>) -> Self {
        Reporter {
            clock,
            tx,
            floors: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Floor>> {
        // Every update is a single assignment: the data is consistent even after a panic.
        self.floors.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the state the manager has for an assigned task; makes the task reportable.
    pub(crate) fn assigned(&self, task_id: &str, manager_state: TaskState) {
        let mut floors = self.lock();
        let f = floors.entry(task_id.to_string()).or_default();
        f.manager = Some(f.manager.map_or(manager_state, |m| m.max(manager_state)));
    }

    /// Forgets tasks that are no longer assigned: they are not reported any more.
    pub(crate) fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.lock().retain(|id, _| keep(id));
    }

    /// The highest state known for an assigned task: sent by this worker or held by the manager.
    pub(crate) fn known(&self, task_id: &str) -> Option<TaskState> {
        let floors = self.lock();
        let f = floors.get(task_id)?;
        f.manager.max(f.sent)
    }

    /// Sends `state` for `task_id` unless it would not move the task forward (a higher state,
    /// or the state last sent with a new health). Returns whether a report was sent.
    pub(crate) fn report(&self, task_id: &str, state: TaskState, detail: Detail) -> bool {
        {
            let mut floors = self.lock();
            let Some(f) = floors.get_mut(task_id) else {
                return false;
            };
            if let Some(m) = f.manager {
                if m.is_terminal() || state < m {
                    return false;
                }
            }
            let new_health = detail.health.is_some() && detail.health != f.sent_health;
            if f.sent
                .is_some_and(|s| state < s || (state == s && !new_health))
            {
                return false;
            }
            f.sent = Some(state);
            f.sent_health = detail.health;
        }
        let status = TaskStatus {
            state,
            timestamp: self.clock.now(),
            message: detail.message,
            err: detail.err,
            exit_code: detail.exit_code,
            pid: None,
            health: detail.health,
        };
        tracing::debug!(task_id, state = state.name(), "task status");
        // The receiver gone means the worker is being torn down: nothing to tell any more.
        let _ = self.tx.send(StatusReport {
            task_id: task_id.to_string(),
            status,
        });
        true
    }
}

/// The exit code docker shows for a status: the code, or 128 + signal.
pub(crate) fn exit_code_of(status: &ExitStatus) -> Option<i32> {
    status.code.or(status.signal.map(|s| 128 + s))
}

/// How an ended task is reported. A task that was asked to stop reports `Shutdown`, whatever
/// its exit status.
pub(crate) fn exit_report(status: &ExitStatus, stopping: bool) -> (TaskState, Detail) {
    let exit_code = exit_code_of(status);
    if stopping {
        let d = Detail {
            message: "shutdown".into(),
            exit_code,
            ..Detail::default()
        };
        return (TaskState::Shutdown, d);
    }
    if status.success() {
        let d = Detail {
            message: "finished".into(),
            exit_code,
            ..Detail::default()
        };
        return (TaskState::Complete, d);
    }
    let err = match (&status.error, exit_code) {
        (Some(e), _) => e.clone(),
        (None, Some(code)) => format!("task: non-zero exit ({code})"),
        (None, None) => status.to_string(),
    };
    let d = Detail {
        message: "failed".into(),
        err: Some(err),
        exit_code,
        health: None,
    };
    (TaskState::Failed, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::ManualClock;

    #[test]
    fn exit_statuses_map_like_docker() {
        let (s, d) = exit_report(&ExitStatus::exited(0), false);
        assert_eq!(
            (s, d.exit_code, d.err),
            (TaskState::Complete, Some(0), None)
        );
        let (s, d) = exit_report(&ExitStatus::exited(1), false);
        assert_eq!(s, TaskState::Failed);
        assert_eq!(d.err.as_deref(), Some("task: non-zero exit (1)"));
        let (_, d) = exit_report(&ExitStatus::signaled(9), false);
        assert_eq!(d.err.as_deref(), Some("task: non-zero exit (137)"));
        let (_, d) = exit_report(&ExitStatus::failed(Some(127), "exec: nope"), false);
        assert_eq!(
            (d.err.as_deref(), d.exit_code),
            (Some("exec: nope"), Some(127))
        );
        let (s, d) = exit_report(&ExitStatus::signaled(15), true);
        assert_eq!(
            (s, d.err, d.exit_code),
            (TaskState::Shutdown, None, Some(143))
        );
    }

    #[test]
    fn reports_only_move_forward() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let r = Reporter::new(Arc::new(ManualClock::new(42)), tx);
        assert!(
            !r.report("a", TaskState::Running, Detail::default()),
            "unassigned"
        );
        r.assigned("a", TaskState::Preparing);
        assert!(!r.report("a", TaskState::Accepted, Detail::default()));
        assert!(r.report("a", TaskState::Preparing, Detail::default()));
        assert!(!r.report("a", TaskState::Preparing, Detail::default()));
        assert!(r.report("a", TaskState::Running, Detail::default()));
        assert!(!r.report("a", TaskState::Starting, Detail::default()));
        assert!(r.report("a", TaskState::Failed, Detail::default()));
        let got: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        assert_eq!(got.len(), 3);
        assert!(got.iter().all(|g| g.status.timestamp == 42));
        r.assigned("b", TaskState::Complete);
        assert!(
            !r.report("b", TaskState::Failed, Detail::default()),
            "terminal"
        );
        r.assigned("h", TaskState::Running);
        let healthy = || Detail::default().with_health(TaskHealth::Healthy);
        let starting = || Detail::default().with_health(TaskHealth::Starting);
        assert!(r.report("h", TaskState::Running, starting()), "adopted");
        assert!(
            !r.report("h", TaskState::Running, starting()),
            "same health"
        );
        assert!(
            !r.report("h", TaskState::Running, Detail::default()),
            "no health"
        );
        assert!(r.report("h", TaskState::Running, healthy()), "new health");
        assert!(!r.report("h", TaskState::Running, healthy()));
        assert!(!r.report("h", TaskState::Starting, starting()), "backwards");
        assert_eq!(r.known("h"), Some(TaskState::Running));
        r.retain(|id| id == "b");
        assert!(
            !r.report("a", TaskState::Remove, Detail::default()),
            "forgotten"
        );
    }
}
