//! Waiting for a deploy: per changed service, tasks updated / total, until every one converged (exit 0), an update
//! paused or rolled back (exit 1, with the service and the UpdateStatus message), or the timeout (exit 1).
//! On a terminal lines are redrawn in place; otherwise a plain line is printed only when a service's progress changes.
//!
//! Must not: decide convergence on the server or change anything.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use crate::cli::common::*;
use crate::cli::service::fetch;
use crate::model::{Service, ServiceMode, Task, TaskState, UpdateState};

#[derive(PartialEq, Eq, Clone, Debug)]
enum Progress {
    Converging(String),
    Done(String),
    Failed(String),
}

fn progress(svc: &Service, tasks: &[&Task], started_ms: u64) -> Progress {
    // an update of this deploy that paused or rolled back is a failure, whatever the tasks do
    let status = svc
        .update_status
        .as_ref()
        .filter(|u| u.started_at >= started_ms);
    if let Some(u) = status {
        if matches!(
            u.state,
            UpdateState::Paused | UpdateState::RollbackPaused | UpdateState::RollbackCompleted
        ) {
            return Progress::Failed(format!("update {}: {}", u.state.name(), u.message));
        }
    }
    let rolling_back = status.is_some_and(|u| u.state == UpdateState::RollbackStarted);
    let outdated_live = tasks
        .iter()
        .filter(|t| {
            t.spec_version < svc.spec_version
                && t.desired_state <= TaskState::Running
                && !t.status.state.is_terminal()
        })
        .count();
    let current: Vec<&&Task> = tasks
        .iter()
        .filter(|t| t.spec_version >= svc.spec_version)
        .collect();
    let running = current.iter().filter(|t| is_running(t)).count() as u64;
    // what the user sees: every running task, old spec or new
    let running_all = tasks.iter().filter(|t| is_running(t)).count() as u64;
    let live = current
        .iter()
        .filter(|t| t.desired_state <= TaskState::Running && !t.status.state.is_terminal())
        .count();
    let failed: Vec<&&&Task> = current
        .iter()
        .filter(|t| {
            matches!(t.status.state, TaskState::Failed | TaskState::Rejected)
                && t.status.timestamp >= started_ms
        })
        .collect();
    let last_error = failed
        .iter()
        .max_by_key(|t| t.status.timestamp)
        .map(|t| {
            t.status
                .err
                .clone()
                .unwrap_or_else(|| t.status.message.clone())
        })
        .unwrap_or_default();
    let (done, text, want) = match &svc.spec.mode {
        ServiceMode::Replicated { replicas } => (
            running == *replicas && live as u64 == *replicas,
            format!("{running_all}/{replicas} running"),
            *replicas,
        ),
        ServiceMode::Global => {
            let desired = current
                .iter()
                .filter(|t| t.desired_state <= TaskState::Running)
                .count() as u64;
            (
                desired > 0 && running == desired,
                format!("{running_all}/{desired} running"),
                desired.max(1),
            )
        }
        ServiceMode::ReplicatedJob {
            total_completions, ..
        } => {
            let complete = current
                .iter()
                .filter(|t| t.status.state == TaskState::Complete)
                .count() as u64;
            (
                complete >= *total_completions,
                format!("{complete}/{total_completions} completed"),
                *total_completions,
            )
        }
        ServiceMode::GlobalJob => {
            let complete = current
                .iter()
                .filter(|t| t.status.state == TaskState::Complete)
                .count() as u64;
            let desired = current
                .iter()
                .filter(|t| t.desired_state <= TaskState::Complete)
                .count() as u64;
            (
                desired > 0 && complete >= desired,
                format!("{complete}/{desired} completed"),
                desired.max(1),
            )
        }
    };
    let text = if outdated_live > 0 || status.is_some_and(|u| u.state == UpdateState::Updating) {
        let total = current.len() + outdated_live;
        format!("{text}, updated {}/{total}", current.len())
    } else {
        text
    };
    if rolling_back {
        let msg = status.map(|u| u.message.clone()).unwrap_or_default();
        return Progress::Converging(format!("{text} (rolling back: {msg})"));
    }
    // like docker, an update is done only once its new tasks stayed up for the monitor period
    let verifying = status.is_some_and(|u| u.state == UpdateState::Updating);
    if done && outdated_live == 0 && !verifying {
        return Progress::Done(text);
    }
    if done && outdated_live == 0 {
        return Progress::Converging(format!("{text} (verifying that the new tasks are stable)"));
    }
    // While this deploy's update runs, the updater's verdict (pause, rollback, complete) decides, not a guess
    // from failed tasks: a failed new task may just be the one that triggers the rollback.
    if status.is_some_and(|u| u.state == UpdateState::Updating) {
        if failed.is_empty() {
            return Progress::Converging(text);
        }
        return Progress::Converging(format!("{text} ({} failed: {last_error})", failed.len()));
    }
    // Failing: tasks keep failing and nothing is running, or the restart policy gave up (nothing live any more).
    let gave_up = live == 0 && !failed.is_empty();
    let keeps_failing = failed.len() as u64 >= (3 * want).max(3) && running == 0;
    if gave_up || keeps_failing {
        return Progress::Failed(format!("{text}; task failed: {last_error}"));
    }
    if !failed.is_empty() {
        return Progress::Converging(format!("{text} ({} failed: {last_error})", failed.len()));
    }
    Progress::Converging(text)
}

/// A service's figures for a progress event: running tasks, the desired count (replicas, nodes, or a job's
/// completions) and, for jobs, the completed tasks.
fn figures(svc: &Service, tasks: &[&Task]) -> (u64, u64, Option<u64>) {
    let current = tasks.iter().filter(|t| t.spec_version >= svc.spec_version);
    let running = tasks.iter().filter(|t| is_running(t)).count() as u64;
    let complete = current
        .clone()
        .filter(|t| t.status.state == TaskState::Complete)
        .count() as u64;
    match &svc.spec.mode {
        ServiceMode::Replicated { replicas } => (running, *replicas, None),
        ServiceMode::Global => {
            let desired = current
                .filter(|t| t.desired_state <= TaskState::Running)
                .count() as u64;
            (running, desired, None)
        }
        ServiceMode::ReplicatedJob {
            total_completions, ..
        } => (running, *total_completions, Some(complete)),
        ServiceMode::GlobalJob => {
            let desired = current
                .filter(|t| t.desired_state <= TaskState::Complete)
                .count() as u64;
            (running, desired, Some(complete))
        }
    }
}

/// One progress event of `stack deploy --format json`: a JSON object on one line.
fn progress_event(stack: &str, svc: &Service, tasks: &[&Task], p: &Progress) -> serde_json::Value {
    let (running, desired, completed) = figures(svc, tasks);
    let (state, message) = match p {
        Progress::Converging(t) => ("converging", t),
        Progress::Done(t) => ("converged", t),
        Progress::Failed(t) => ("failed", t),
    };
    let mut event = serde_json::json!({
        "Type": "progress",
        "Time": now_ms(),
        "Stack": stack,
        "Service": svc.spec.name,
        "Running": running,
        "Desired": desired,
        "UpdateState": svc.update_status.as_ref().map(|u| u.state.name()).unwrap_or(""),
        "State": state,
        "Message": message,
    });
    if let Some(done) = completed {
        event["Completed"] = done.into();
    }
    event
}

/// Why waiting ended without convergence: a service failed (or its update rolled back), or the timeout.
#[derive(Debug)]
pub(super) enum WaitError {
    /// A service failed, its update paused or rolled back (the lines say which and why).
    Failed(String),
    /// Not converged within the timeout.
    TimedOut(String),
    /// The cluster could not be asked.
    Unreachable(String),
}

impl std::fmt::Display for WaitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WaitError::Failed(m) | WaitError::TimedOut(m) | WaitError::Unreachable(m) => {
                f.write_str(m)
            }
        }
    }
}

pub(super) async fn wait_converged(
    c: &mut Client,
    stack: &str,
    names: &[String],
    timeout: Duration,
) -> CmdResult {
    wait_events(c, stack, names, timeout, false)
        .await
        .map_err(|e| e.to_string())
}

/// Waits for `names` of `stack` to converge, printing progress as text lines or (with `json`) as one JSON event
/// per line.
pub(super) async fn wait_events(
    c: &mut Client,
    stack: &str,
    names: &[String],
    timeout: Duration,
    json: bool,
) -> Result<(), WaitError> {
    let started = Instant::now();
    let started_ms = now_ms().saturating_sub(2_000);
    let tty = std::io::stdout().is_terminal();
    let mut shown: HashMap<String, Progress> = HashMap::new();
    loop {
        let (services, tasks, _) = fetch(c, stack).await.map_err(WaitError::Unreachable)?;
        let mut all_done = true;
        let mut failures = Vec::new();
        for name in names {
            let Some(svc) = services.iter().find(|s| &s.spec.name == name) else {
                all_done = false;
                continue;
            };
            let mine: Vec<&Task> = tasks.iter().filter(|t| t.service_id == svc.id).collect();
            let p = progress(svc, &mine, started_ms);
            if shown.get(name) != Some(&p) && json {
                println!("{}", progress_event(stack, svc, &mine, &p));
                shown.insert(name.clone(), p.clone());
            }
            if shown.get(name) != Some(&p) {
                let line = match &p {
                    Progress::Converging(t) => format!("{name}: {t}"),
                    Progress::Done(t) => format!("{name}: {t} (converged)"),
                    Progress::Failed(t) => format!("{name}: {t}"),
                };
                if tty {
                    println!("\x1b[2K{line}");
                } else {
                    println!("{line}");
                }
                shown.insert(name.clone(), p.clone());
            }
            match p {
                Progress::Done(_) => {}
                Progress::Failed(t) => {
                    failures.push(format!("service {name} failed to converge: {t}"))
                }
                Progress::Converging(_) => all_done = false,
            }
        }
        if !failures.is_empty() {
            return Err(WaitError::Failed(failures.join("\n")));
        }
        if all_done {
            if !json {
                println!("Stack {stack} converged");
            }
            return Ok(());
        }
        if started.elapsed() > timeout {
            return Err(WaitError::TimedOut(format!(
                "stack {stack} did not converge within {}",
                crate::stack::units::format_duration(timeout)
            )));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manager::testutil::{service, task};
    use crate::model::UpdateStatus;

    fn status(state: UpdateState, at: u64, message: &str) -> Option<UpdateStatus> {
        Some(UpdateStatus {
            state,
            started_at: at,
            completed_at: None,
            message: message.into(),
        })
    }

    #[test]
    fn updates_report_progress_and_fail_when_paused_or_rolled_back() {
        let mut svc = service("web", ServiceMode::Replicated { replicas: 2 });
        svc.spec_version = 2;
        let old = task(
            "t1",
            "web",
            1,
            Some("n"),
            TaskState::Running,
            TaskState::Running,
        );
        let mut new = task(
            "t2",
            "web",
            2,
            Some("n"),
            TaskState::Running,
            TaskState::Running,
        );
        new.spec_version = 2;
        svc.update_status = status(UpdateState::Updating, 1000, "update in progress");
        match progress(&svc, &[&old, &new], 500) {
            Progress::Converging(t) => assert!(t.contains("updated 1/2"), "{t}"),
            other => panic!("an outdated task still runs: {other:?}"),
        }
        let mut new1 = old.clone();
        new1.id = "t3".into();
        new1.spec_version = 2;
        // all tasks updated, but the update is still watching them (monitor): not done yet
        assert!(
            matches!(progress(&svc, &[&new1, &new], 500), Progress::Converging(ref t) if t.contains("verifying")),
        );
        svc.update_status = status(UpdateState::Completed, 1000, "update completed");
        assert!(matches!(
            progress(&svc, &[&new1, &new], 500),
            Progress::Done(_)
        ));

        svc.update_status = status(UpdateState::Paused, 1000, "task t2 failed");
        assert_eq!(
            progress(&svc, &[&old, &new], 500),
            Progress::Failed("update paused: task t2 failed".into())
        );
        // a pause from before this deploy is not this deploy's failure
        assert!(matches!(
            progress(&svc, &[&new1, &new], 5000),
            Progress::Done(_)
        ));
        svc.update_status = status(UpdateState::RollbackStarted, 1000, "update failed");
        assert!(
            matches!(progress(&svc, &[&new1, &new], 500), Progress::Converging(ref t) if t.contains("rolling back"))
        );
        svc.update_status = status(UpdateState::RollbackCompleted, 1000, "rolled back");
        assert!(matches!(
            progress(&svc, &[&new1, &new], 500),
            Progress::Failed(_)
        ));
    }
}
