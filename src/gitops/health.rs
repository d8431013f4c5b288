//! A stack's HEALTH from its services and tasks: Healthy (every service has what it asks for: replicas
//! running, jobs completed), Progressing (an update or rollback is replacing tasks, or tasks are still
//! starting), Degraded (an update paused, or a service is short of tasks while its latest ones failed).
//!
//! Must not: do I/O.

use serde::Serialize;

use crate::model::{Service, ServiceMode, Task, TaskState, UpdateState};

/// A stack's health.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Health {
    /// Every service runs (or completed) what it asks for.
    Healthy,
    /// Tasks are being replaced or started.
    Progressing,
    /// An update paused, or tasks keep failing.
    Degraded,
}

impl Health {
    /// The name shown in HEALTH.
    pub fn name(self) -> &'static str {
        match self {
            Health::Healthy => "Healthy",
            Health::Progressing => "Progressing",
            Health::Degraded => "Degraded",
        }
    }
}

fn running(t: &Task) -> bool {
    t.status.state == TaskState::Running && t.desired_state <= TaskState::Running
}

/// The health of one service, with its tasks.
pub fn service_health(svc: &Service, tasks: &[&Task]) -> Health {
    if let Some(u) = &svc.update_status {
        match u.state {
            UpdateState::Paused | UpdateState::RollbackPaused => return Health::Degraded,
            UpdateState::Updating | UpdateState::RollbackStarted => return Health::Progressing,
            UpdateState::Completed | UpdateState::RollbackCompleted => {}
        }
    }
    let mine: Vec<&&Task> = tasks.iter().filter(|t| t.service_id == svc.id).collect();
    let up = mine.iter().filter(|t| running(t)).count() as u64;
    let complete = mine
        .iter()
        .filter(|t| t.status.state == TaskState::Complete)
        .count() as u64;
    let (have, want) = match &svc.spec.mode {
        ServiceMode::Replicated { replicas } => (up, *replicas),
        ServiceMode::Global => (
            up,
            mine.iter()
                .filter(|t| t.desired_state <= TaskState::Running)
                .count() as u64,
        ),
        ServiceMode::ReplicatedJob {
            total_completions, ..
        } => (complete, *total_completions),
        ServiceMode::GlobalJob => (
            complete,
            mine.iter()
                .filter(|t| t.desired_state <= TaskState::Complete)
                .count() as u64,
        ),
    };
    if have >= want {
        return Health::Healthy;
    }
    // short of tasks: failing when the newest task of a slot (or node) failed, else still starting
    let mut newest: std::collections::BTreeMap<(u64, Option<&str>), &Task> = Default::default();
    for t in &mine {
        let key = (
            t.slot,
            (t.slot == 0).then_some(t.node_id.as_deref()).flatten(),
        );
        let e = newest.entry(key).or_insert(t);
        if t.meta.created_at > e.meta.created_at {
            *e = t;
        }
    }
    let failing = newest
        .values()
        .any(|t| matches!(t.status.state, TaskState::Failed | TaskState::Rejected));
    if failing {
        Health::Degraded
    } else {
        Health::Progressing
    }
}

/// The health of a stack: its worst service's (Healthy for a stack without services).
pub fn stack_health(services: &[&Service], tasks: &[&Task]) -> Health {
    services
        .iter()
        .map(|s| service_health(s, tasks))
        .max()
        .unwrap_or(Health::Healthy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manager::testutil::{service, task};
    use crate::model::UpdateStatus;

    #[test]
    fn health_follows_tasks_and_updates() {
        let mut web = service("web", ServiceMode::Replicated { replicas: 2 });
        let t1 = task(
            "t1",
            "web",
            1,
            Some("n"),
            TaskState::Running,
            TaskState::Running,
        );
        let mut t2 = task(
            "t2",
            "web",
            2,
            Some("n"),
            TaskState::Running,
            TaskState::Starting,
        );
        assert_eq!(stack_health(&[&web], &[&t1, &t2]), Health::Progressing);
        t2.status.state = TaskState::Running;
        assert_eq!(stack_health(&[&web], &[&t1, &t2]), Health::Healthy);
        t2.status.state = TaskState::Failed;
        assert_eq!(stack_health(&[&web], &[&t1, &t2]), Health::Degraded);
        // a newer task in the failed slot is starting: progressing again
        let mut t3 = task(
            "t3",
            "web",
            2,
            Some("n"),
            TaskState::Running,
            TaskState::Preparing,
        );
        t3.meta.created_at = 10;
        assert_eq!(stack_health(&[&web], &[&t1, &t2, &t3]), Health::Progressing);
        web.update_status = Some(UpdateStatus {
            state: UpdateState::Paused,
            started_at: 1,
            completed_at: None,
            message: "update paused".into(),
        });
        assert_eq!(stack_health(&[&web], &[&t1, &t3]), Health::Degraded);

        let job = service(
            "job",
            ServiceMode::ReplicatedJob {
                max_concurrent: 1,
                total_completions: 1,
            },
        );
        let done = task(
            "j1",
            "job",
            1,
            Some("n"),
            TaskState::Complete,
            TaskState::Complete,
        );
        assert_eq!(stack_health(&[&job], &[&done]), Health::Healthy);
        assert_eq!(stack_health(&[], &[]), Health::Healthy);
    }
}
