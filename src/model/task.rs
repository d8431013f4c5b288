//! Tasks: one unit of work in a slot of a service, with its desired state (written by the manager) and its
//! observed status (written by the agent). A task is a snapshot of its service's `TaskSpec` plus the spec
//! version it came from (DESIGN invariant 4); a restart is a new task in the same slot.
//!
//! Owns: `TaskState` (an ordered enum that only moves forward, through [`TaskState::transition`]), `Task`,
//! `TaskStatus` (with the task's [`TaskHealth`] when it has a health check). Must not: do I/O, read a clock or generate ids (they are passed in).

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::cluster::Meta;
use super::service::TaskSpec;

/// The life of a task, in order. A task's state only moves forward (DESIGN invariant 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TaskState {
    /// Just created by an orchestrator.
    New,
    /// Waiting for the scheduler to pick a node.
    Pending,
    /// Given a node by the scheduler.
    Assigned,
    /// The agent accepted the assignment.
    Accepted,
    /// The agent is preparing resources (image, mounts, secrets).
    Preparing,
    /// Prepared, ready to start.
    Ready,
    /// Being started.
    Starting,
    /// Running.
    Running,
    /// Exited successfully (terminal).
    Complete,
    /// Stopped on request (terminal).
    Shutdown,
    /// Exited with an error or failed to start (terminal).
    Failed,
    /// The node refused the task (terminal).
    Rejected,
    /// Marked for removal; the agent removes it, then the reaper deletes it (terminal).
    Remove,
    /// The node was lost; the task's fate is unknown (terminal).
    Orphaned,
}

/// A refused task state change.
#[derive(Clone, Debug, PartialEq, Eq, Error, Serialize, Deserialize)]
#[error("task state cannot move backwards from {from:?} to {to:?}")]
pub struct TaskStateError {
    /// The current state.
    pub from: TaskState,
    /// The refused target state.
    pub to: TaskState,
}

impl TaskState {
    /// Whether the task has finished: `Complete` or any later state.
    pub fn is_terminal(self) -> bool {
        self >= TaskState::Complete
    }

    /// The one transition function: moving to `to` is allowed when it is not backwards (staying put is a
    /// no-op and allowed).
    pub fn transition(self, to: TaskState) -> Result<TaskState, TaskStateError> {
        if to < self {
            Err(TaskStateError { from: self, to })
        } else {
            Ok(to)
        }
    }

    /// Docker's lower-case name (`running`, `shutdown`, ...).
    pub fn name(self) -> &'static str {
        match self {
            TaskState::New => "new",
            TaskState::Pending => "pending",
            TaskState::Assigned => "assigned",
            TaskState::Accepted => "accepted",
            TaskState::Preparing => "preparing",
            TaskState::Ready => "ready",
            TaskState::Starting => "starting",
            TaskState::Running => "running",
            TaskState::Complete => "complete",
            TaskState::Shutdown => "shutdown",
            TaskState::Failed => "failed",
            TaskState::Rejected => "rejected",
            TaskState::Remove => "remove",
            TaskState::Orphaned => "orphaned",
        }
    }
}

/// What the agent last observed of a task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskStatus {
    /// The observed state.
    pub state: TaskState,
    /// When the state was observed (unix millis, chosen by the reporter).
    pub timestamp: u64,
    /// Human-readable progress (`started`, `preparing`).
    pub message: String,
    /// Why the task failed, if it did.
    pub err: Option<String>,
    /// The exit code, once it exited.
    pub exit_code: Option<i32>,
    /// The process id, while it runs.
    pub pid: Option<u32>,
    /// The result of the task's health check, when its spec has one (`None` without a check).
    #[serde(default)]
    pub health: Option<TaskHealth>,
}

/// What the health check of a running task says (Docker's container health status).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TaskHealth {
    /// Started, no check has passed yet: the task stays `Starting` (or keeps `Running` when it
    /// was adopted after a daemon restart) until one does.
    Starting,
    /// The last check passed (or failed fewer than `retries` times in a row since).
    Healthy,
    /// `retries` consecutive checks failed; the task is stopped and reported `Failed`.
    Unhealthy,
}

impl TaskHealth {
    /// Docker's lower-case name (`starting`, `healthy`, `unhealthy`).
    pub fn name(self) -> &'static str {
        match self {
            TaskHealth::Starting => "starting",
            TaskHealth::Healthy => "healthy",
            TaskHealth::Unhealthy => "unhealthy",
        }
    }
}

impl TaskStatus {
    /// A status in `state` at `timestamp` with no message, error, exit code or pid.
    pub fn new(state: TaskState, timestamp: u64) -> TaskStatus {
        TaskStatus {
            state,
            timestamp,
            message: String::new(),
            err: None,
            exit_code: None,
            pid: None,
            health: None,
        }
    }
}

/// One task: a slot of a service (or a node, for global services) running one copy of the task spec.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// Task id (chosen by the proposer).
    pub id: String,
    /// Version and timestamps, set by the store on apply.
    pub meta: Meta,
    /// The service this task belongs to.
    pub service_id: String,
    /// The replica slot (1-based for replicated services; 0 for global services, keyed by node).
    pub slot: u64,
    /// The node the scheduler assigned, if any.
    pub node_id: Option<String>,
    /// The service's task template at the time the task was created.
    pub spec: TaskSpec,
    /// The service spec version `spec` came from; the task is outdated when this is below the service's.
    pub spec_version: u64,
    /// Where the manager wants the task to be (only moves forward).
    pub desired_state: TaskState,
    /// What the agent last observed (only moves forward).
    pub status: TaskStatus,
    /// The task's address on each network it attaches to, allocated by the managers' IPAM before the task is
    /// scheduled (docker's `NetworksAttachments`); the address is free again once the task is terminal.
    #[serde(default)]
    pub attachments: Vec<super::service::NetworkAddress>,
}

impl Task {
    /// Docker's task name: `service.slot.id` (`web.1.abc`), or `service.node.id` for global services.
    pub fn name(&self, service_name: &str) -> String {
        if self.slot == 0 {
            let node = self.node_id.as_deref().unwrap_or("");
            format!("{service_name}.{node}.{}", self.id)
        } else {
            format!("{service_name}.{}.{}", self.slot, self.id)
        }
    }

    /// Whether the task was made from an older spec than `service_spec_version`.
    pub fn is_outdated(&self, service_spec_version: u64) -> bool {
        self.spec_version < service_spec_version
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_are_ordered_and_terminal_from_complete() {
        assert!(TaskState::New < TaskState::Pending);
        assert!(TaskState::Running < TaskState::Complete);
        assert!(TaskState::Remove < TaskState::Orphaned);
        assert!(!TaskState::Running.is_terminal());
        assert!(TaskState::Complete.is_terminal());
        assert!(TaskState::Orphaned.is_terminal());
    }

    #[test]
    fn transition_refuses_backwards() {
        assert_eq!(
            TaskState::Assigned.transition(TaskState::Running),
            Ok(TaskState::Running)
        );
        assert_eq!(
            TaskState::Running.transition(TaskState::Running),
            Ok(TaskState::Running)
        );
        assert_eq!(
            TaskState::Failed.transition(TaskState::Running),
            Err(TaskStateError {
                from: TaskState::Failed,
                to: TaskState::Running
            })
        );
    }

    #[test]
    fn status_without_health_still_decodes() {
        let json = r#"{"state":"Running","timestamp":1,"message":"","err":null,"exit_code":null,"pid":null}"#;
        let s: TaskStatus = serde_json::from_str(json).expect("decode");
        assert_eq!(s, TaskStatus::new(TaskState::Running, 1));
        assert_eq!(TaskHealth::Unhealthy.name(), "unhealthy");
    }

    #[test]
    fn task_name_like_docker() {
        let mut t = Task {
            id: "abc".into(),
            meta: Meta::default(),
            service_id: "s1".into(),
            slot: 2,
            node_id: Some("n1".into()),
            spec: TaskSpec::default(),
            spec_version: 1,
            desired_state: TaskState::Running,
            status: TaskStatus::new(TaskState::New, 0),
            attachments: Vec::new(),
        };
        assert_eq!(t.name("web"), "web.2.abc");
        t.slot = 0;
        assert_eq!(t.name("web"), "web.n1.abc");
        assert!(t.is_outdated(2));
        assert!(!t.is_outdated(1));
    }
}
