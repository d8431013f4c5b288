//! The update monitor: which new tasks of the update in progress failed early, and whether there are too
//! many of them (`max_failure_ratio`). A new task is one made from the service's current spec version since
//! the update started; a failure is a new task that stopped on its own (Failed, Rejected, or Complete, except
//! a job's task that exited 0) within `monitor` of being created, or before it ever ran (no exit code).
//!
//! Must not: change anything (it only reads), or count tasks that the manager stopped (status Shutdown,
//! Remove) or whose node was lost (Orphaned): those are not the new spec's fault.

use std::collections::BTreeSet;
use std::time::Duration;

use super::UnitKey;
use crate::manager::orchestrator::restart::succeeded;
use crate::model::{Service, Task, TaskState};
use crate::store::ClusterState;

/// How the update's new tasks fared so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Units (slots, or nodes of a global service) that got a new task in this update.
    pub updated: usize,
    /// Units with at least one failed new task.
    pub failed: usize,
    /// The earliest failed task (by the time it ended, then id), if any.
    pub first_failed: Option<String>,
}

impl Verdict {
    /// Whether the failures exceed `max_failure_ratio` (failed units / updated units).
    pub fn exceeds(&self, max_failure_ratio: f64) -> bool {
        self.failed > 0 && (self.failed as f64) / (self.updated.max(1) as f64) > max_failure_ratio
    }
}

/// Whether `task` belongs to the update of `service` in progress: made from the current spec version
/// since the update started (tasks relabelled to the current version without a restart are older).
pub fn of_this_update(service: &Service, task: &Task) -> bool {
    let started = service.update_status.as_ref().map_or(0, |s| s.started_at);
    task.spec_version == service.spec_version && task.meta.created_at >= started
}

/// Whether `task` (of a job service when `job`) stopped on its own early enough to count as a failure.
pub fn failed_early(job: bool, task: &Task, monitor: Duration) -> bool {
    let stopped = match task.status.state {
        TaskState::Complete => !(job && succeeded(task)),
        TaskState::Failed | TaskState::Rejected => true,
        _ => false,
    };
    if !stopped {
        return false;
    }
    let never_ran = task.status.exit_code.is_none() && task.status.state != TaskState::Complete;
    let monitor = monitor.as_millis().min(u64::MAX as u128) as u64;
    never_ran || task.status.timestamp.saturating_sub(task.meta.created_at) <= monitor
}

/// Counts the update's units and failures for `service` with `monitor`.
pub fn verdict(state: &ClusterState, service: &Service, monitor: Duration) -> Verdict {
    let job = service.spec.mode.is_job();
    let mut updated: BTreeSet<UnitKey> = BTreeSet::new();
    let mut failed: BTreeSet<UnitKey> = BTreeSet::new();
    let mut first: Option<(u64, &str)> = None;
    for t in state.tasks_of_service(&service.id) {
        if !of_this_update(service, t) {
            continue;
        }
        let key = super::unit_key(t);
        updated.insert(key.clone());
        if failed_early(job, t, monitor) {
            failed.insert(key);
            let this = (t.status.timestamp, t.id.as_str());
            if first.is_none_or(|f| this < f) {
                first = Some(this);
            }
        }
    }
    Verdict {
        updated: updated.len(),
        failed: failed.len(),
        first_failed: first.map(|(_, id)| id.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manager::testutil::*;

    #[test]
    fn what_counts_as_a_failure() {
        let monitor = Duration::from_secs(5);
        let at = |state: TaskState, code: Option<i32>, created: u64, ended: u64| {
            let mut t = task("a", "s1", 1, Some("n1"), TaskState::Running, state);
            t.status.exit_code = code;
            t.meta.created_at = created;
            t.status.timestamp = ended;
            t
        };
        // (name, job, task, counts)
        let cases = [
            (
                "running",
                false,
                at(TaskState::Running, None, 0, 1000),
                false,
            ),
            (
                "exit 1 early",
                false,
                at(TaskState::Failed, Some(1), 0, 5000),
                true,
            ),
            (
                "exit 1 late",
                false,
                at(TaskState::Failed, Some(1), 0, 5001),
                false,
            ),
            (
                "never started",
                false,
                at(TaskState::Failed, None, 0, 60_000),
                true,
            ),
            (
                "rejected",
                false,
                at(TaskState::Rejected, None, 0, 60_000),
                true,
            ),
            (
                "service exit 0 early",
                false,
                at(TaskState::Complete, Some(0), 0, 1000),
                true,
            ),
            (
                "job exit 0",
                true,
                at(TaskState::Complete, Some(0), 0, 1000),
                false,
            ),
            (
                "job exit 1",
                true,
                at(TaskState::Failed, Some(1), 0, 1000),
                true,
            ),
            (
                "shut down",
                false,
                at(TaskState::Shutdown, None, 0, 1000),
                false,
            ),
            (
                "orphaned",
                false,
                at(TaskState::Orphaned, None, 0, 1000),
                false,
            ),
        ];
        for (name, job, t, want) in cases {
            assert_eq!(failed_early(job, &t, monitor), want, "{name}");
        }
    }

    #[test]
    fn ratio() {
        let v = |updated, failed| Verdict {
            updated,
            failed,
            first_failed: None,
        };
        assert!(!v(3, 0).exceeds(0.0));
        assert!(v(3, 1).exceeds(0.0));
        assert!(!v(2, 1).exceeds(0.5));
        assert!(v(3, 2).exceeds(0.5));
    }
}
