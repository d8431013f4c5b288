//! One task's life on this node, as a spawned tokio task: create (or adopt) its controller,
//! prepare, start, wait, and stop or remove it when its desired state moves on. The worker
//! steers it only through a `watch` of [`Desired`]; the runner reports every state it observes.
//! A task with a health check stays `Starting` (health starting) until a check passes, then is
//! reported `Running` (healthy); once unhealthy it is stopped and reported `Failed` with Docker's
//! `task: unhealthy container`, and the restart policy replaces it.
//!
//! Must not: read the assignments, hold the worker's runner map across an await, or restart a
//! task that was adopted running.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::exec::{CheckResult, Controller, ExecError, ExitStatus, ProcessSpec, RuntimeState};
use crate::model::{TaskHealth, TaskState};

use super::health::{HealthCheck, Monitor, Verdict};
use super::report::{exit_code_of, exit_report, Detail};
use super::shared::{Desired, Shared};

/// Pause before waiting again after a temporary runtime error while a task runs.
const WAIT_RETRY: Duration = Duration::from_secs(1);
/// How long past its timeout a health check may take before the runner gives up on it.
const CHECK_SLACK: Duration = Duration::from_secs(5);
/// Docker's error for a task stopped because its health check failed.
pub(crate) const UNHEALTHY: &str = "task: unhealthy container";

/// How the runner gets its controller.
pub(crate) enum Start {
    /// A new task: create it from this spec.
    Create(ProcessSpec),
    /// The executor already has the task (daemon restart): take it back. `respec` recreates it
    /// when it turns out never to have started.
    Adopt { respec: Option<ProcessSpec> },
}

/// How a lifecycle ended.
enum End {
    /// A temporary error: forget the runner so the next `assign` tries again.
    Retry,
    /// Finished (ran, failed, rejected or stopped): wait for removal.
    Done(Option<Arc<dyn Controller>>),
    /// The worker is gone: leave the task alone.
    Abandon,
}

/// Runs the task, then waits until it must be removed; finally drops its entry in the worker.
pub(crate) async fn run(
    shared: Arc<Shared>,
    task_id: String,
    gen: u64,
    start: Start,
    health: Option<HealthCheck>,
    mut desired: watch::Receiver<Desired>,
) {
    let r = Runner {
        shared: &shared,
        id: &task_id,
        health,
    };
    match r.lifecycle(start, &mut desired).await {
        End::Retry | End::Abandon => {}
        End::Done(ctl) => r.park(ctl, &mut desired).await,
    }
    shared.forget(&task_id, gen);
}

struct Runner<'a> {
    shared: &'a Shared,
    id: &'a str,
    health: Option<HealthCheck>,
}

impl Runner<'_> {
    fn report(&self, state: TaskState, detail: Detail) {
        self.shared.reporter.report(self.id, state, detail);
    }

    fn report_exit(&self, status: &ExitStatus, stopping: bool) {
        let (state, detail) = exit_report(status, stopping);
        self.report(state, detail);
    }

    fn temporary(&self, what: &str, e: &ExecError) -> End {
        tracing::warn!(task_id = self.id, error = %e, "{what} failed; will retry");
        End::Retry
    }

    async fn lifecycle(&self, start: Start, desired: &mut watch::Receiver<Desired>) -> End {
        let spec = match start {
            Start::Create(spec) => spec,
            Start::Adopt { respec } => match self.adopt(respec, desired).await {
                Ok(end) => return end,
                Err(spec) => spec,
            },
        };
        // at most so many tasks are being started at once; the permit is held until this one runs (or failed)
        let Ok(permit) = self.shared.starts.clone().acquire_owned().await else {
            return End::Done(None);
        };
        if *desired.borrow() != Desired::Run {
            self.report(TaskState::Shutdown, Detail::message("shutdown"));
            return End::Done(None);
        }
        let ctl: Arc<dyn Controller> = match self.shared.executor.controller(spec) {
            Ok(c) => Arc::from(c),
            Err(e) if e.is_temporary() => return self.temporary("creating the task", &e),
            Err(e) => {
                self.report(
                    TaskState::Rejected,
                    Detail::error("rejected", e.to_string()),
                );
                return End::Done(None);
            }
        };
        self.report(TaskState::Accepted, Detail::message("accepted"));
        self.report(TaskState::Preparing, Detail::message("preparing"));
        match ctl.prepare().await {
            Ok(()) => self.report(TaskState::Ready, Detail::message("prepared")),
            Err(e) if e.is_temporary() => return self.temporary("prepare", &e),
            Err(e) => {
                self.report(
                    TaskState::Rejected,
                    Detail::error("rejected", e.to_string()),
                );
                return End::Done(Some(ctl));
            }
        }
        if *desired.borrow() != Desired::Run {
            self.report(TaskState::Shutdown, Detail::message("shutdown"));
            return End::Done(Some(ctl));
        }
        self.report(TaskState::Starting, Detail::message("starting"));
        match ctl.start().await {
            Ok(()) if self.health.is_some() => self.report(
                TaskState::Starting,
                Detail::message("started").with_health(TaskHealth::Starting),
            ),
            Ok(()) => self.report(TaskState::Running, Detail::message("started")),
            Err(ExecError::StartFailed { message, .. }) => {
                let code = ctl.wait().await.ok().and_then(|s| exit_code_of(&s));
                let mut d = Detail::error("failed", message);
                d.exit_code = code;
                self.report(TaskState::Failed, d);
                return End::Done(Some(ctl));
            }
            Err(e) if e.is_temporary() => return self.temporary("start", &e),
            Err(e) => {
                self.report(TaskState::Failed, Detail::error("failed", e.to_string()));
                return End::Done(Some(ctl));
            }
        }
        drop(permit);
        self.supervise(ctl, desired).await
    }

    /// Takes back a task the executor already has. `Err(spec)`: it never started, recreate it.
    async fn adopt(
        &self,
        respec: Option<ProcessSpec>,
        desired: &mut watch::Receiver<Desired>,
    ) -> Result<End, ProcessSpec> {
        let ctl: Arc<dyn Controller> = match self.shared.executor.adopt(self.id).await {
            Ok(c) => Arc::from(c),
            // Removed between `list` and `adopt`: nothing left to adopt.
            Err(ExecError::NotFound(_)) => {
                return match respec {
                    Some(spec) => Err(spec),
                    None => Ok(End::Done(None)),
                }
            }
            Err(e) if e.is_temporary() => return Ok(self.temporary("adopt", &e)),
            Err(e) => {
                self.report(TaskState::Failed, Detail::error("failed", e.to_string()));
                return Ok(End::Done(None));
            }
        };
        let stopping = *desired.borrow() != Desired::Run;
        match ctl.inspect().await {
            Ok(RuntimeState::Running) => {
                tracing::info!(task_id = self.id, "adopted a running task");
                if !stopping {
                    match &self.health {
                        None => self.report(TaskState::Running, Detail::message("started")),
                        // Checking starts over; a task the manager already has running keeps
                        // that state (reports never move back), with its health starting.
                        Some(_) => {
                            let state = match self.shared.reporter.known(self.id) {
                                Some(s) if s >= TaskState::Running => TaskState::Running,
                                _ => TaskState::Starting,
                            };
                            let d = Detail::message("started").with_health(TaskHealth::Starting);
                            self.report(state, d)
                        }
                    };
                }
                Ok(self.supervise(ctl, desired).await)
            }
            Ok(RuntimeState::Exited(status)) => {
                self.report_exit(&status, stopping);
                Ok(End::Done(Some(ctl)))
            }
            Ok(RuntimeState::New | RuntimeState::Prepared) => match respec {
                Some(spec) if !stopping => {
                    // It never ran: start over from a fresh directory (an adopted controller
                    // has no secret data to prepare with).
                    if let Err(e) = ctl.remove().await {
                        return Ok(self.temporary("removing an unstarted task", &e));
                    }
                    Err(spec)
                }
                _ => {
                    self.report(TaskState::Shutdown, Detail::message("shutdown"));
                    Ok(End::Done(Some(ctl)))
                }
            },
            Err(e) if e.is_temporary() => Ok(self.temporary("inspect", &e)),
            Err(e) => {
                self.report(TaskState::Failed, Detail::error("failed", e.to_string()));
                Ok(End::Done(Some(ctl)))
            }
        }
    }

    /// Waits for the running task to end, or stops it when its desired state moves on or its
    /// health check says it is unhealthy.
    async fn supervise(
        &self,
        ctl: Arc<dyn Controller>,
        desired: &mut watch::Receiver<Desired>,
    ) -> End {
        let probe = ctl.clone();
        let health = async move {
            match self.health.clone() {
                Some(check) => self.monitor(probe.as_ref(), check).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(health);
        loop {
            if *desired.borrow_and_update() != Desired::Run {
                return self.stop(ctl).await;
            }
            tokio::select! {
                last = &mut health => return self.unhealthy(ctl, &last).await,
                r = ctl.wait() => match r {
                    Ok(status) => {
                        let stopping = *desired.borrow() != Desired::Run;
                        self.report_exit(&status, stopping);
                        return End::Done(Some(ctl));
                    }
                    Err(e) if e.is_temporary() => {
                        tracing::warn!(task_id = self.id, error = %e, "wait failed; retrying");
                        tokio::time::sleep(WAIT_RETRY).await;
                    }
                    Err(e) => {
                        self.report(TaskState::Failed, Detail::error("failed", e.to_string()));
                        return End::Done(Some(ctl));
                    }
                },
                changed = desired.changed() => {
                    if changed.is_err() {
                        return End::Abandon;
                    }
                }
            }
        }
    }

    /// Runs the health check until the task is unhealthy; returns the last failed check. Reports
    /// `Running` (healthy) on the first pass.
    async fn monitor(&self, ctl: &dyn Controller, check: HealthCheck) -> CheckResult {
        let mut m = Monitor::new(check, tokio::time::Instant::now());
        loop {
            tokio::time::sleep(m.next_delay(tokio::time::Instant::now())).await;
            let at = tokio::time::Instant::now();
            let c = m.check();
            // The executor kills a check at its timeout; this bounds a runtime that does not.
            let bound = c.timeout + CHECK_SLACK;
            let result = match tokio::time::timeout(bound, ctl.exec_check(&c.argv, c.timeout)).await
            {
                Err(_) => CheckResult::TimedOut { timeout: c.timeout },
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    // No check ran (the task is ending, the runtime failed): nothing to count.
                    tracing::warn!(task_id = self.id, error = %e, "health check could not run");
                    continue;
                }
            };
            match m.record(result.passed(), at) {
                Verdict::Healthy => {
                    let d = Detail::message("started").with_health(TaskHealth::Healthy);
                    self.report(TaskState::Running, d);
                }
                Verdict::Unchanged => {}
                Verdict::Unhealthy => return result,
            }
            if !result.passed() {
                tracing::debug!(task_id = self.id, output = %result.output(), "health check failed");
            }
        }
    }

    /// Stops an unhealthy task (stop signal, grace, SIGKILL) and reports it `Failed`.
    async fn unhealthy(&self, ctl: Arc<dyn Controller>, last: &CheckResult) -> End {
        tracing::warn!(task_id = self.id, output = %last.output(), "task is unhealthy; stopping it");
        if let Err(e) = ctl.shutdown().await {
            tracing::warn!(task_id = self.id, error = %e, "shutdown failed; killing");
            if let Err(e) = ctl.terminate().await {
                return self.temporary("terminate", &e);
            }
        }
        let mut detail = Detail::error("failed", UNHEALTHY).with_health(TaskHealth::Unhealthy);
        if let Ok(status) = ctl.wait().await {
            detail.exit_code = exit_code_of(&status);
        }
        self.report(TaskState::Failed, detail);
        End::Done(Some(ctl))
    }

    /// Stop signal, grace period, SIGKILL (the executor does all three), then report Shutdown. A task that
    /// receives connections is drained first (see [`Runner::drain`]).
    async fn stop(&self, ctl: Arc<dyn Controller>) -> End {
        if let Some(delay) = self.shared.drain_delay_of(self.id) {
            if let Some(status) = self.drain(ctl.as_ref(), delay).await {
                self.report_exit(&status, true);
                return End::Done(Some(ctl));
            }
        }
        if let Err(e) = ctl.shutdown().await {
            tracing::warn!(task_id = self.id, error = %e, "shutdown failed; killing");
            if let Err(e) = ctl.terminate().await {
                return self.temporary("terminate", &e);
            }
        }
        let mut detail = Detail::message("shutdown");
        if let Ok(status) = ctl.wait().await {
            detail.exit_code = exit_code_of(&status);
        }
        self.report(TaskState::Shutdown, detail);
        End::Done(Some(ctl))
    }

    /// Leaves the task running for `delay` before its stop signal: the managers made it not ready in the same
    /// change that asked its stop, so by then every node's resolver and load balancers have stopped sending it
    /// new clients, and the connections they gave it just before have been accepted. `Some`: it ended on its own
    /// meanwhile.
    async fn drain(&self, ctl: &dyn Controller, delay: Duration) -> Option<ExitStatus> {
        tracing::debug!(task_id = self.id, ?delay, "draining before the stop signal");
        let deadline = tokio::time::Instant::now() + delay;
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => None,
            r = ctl.wait() => match r {
                Ok(status) => Some(status),
                Err(e) => {
                    tracing::warn!(task_id = self.id, error = %e, "wait failed while draining");
                    tokio::time::sleep_until(deadline).await;
                    None
                }
            },
        }
    }

    /// After the task ended: waits for `Remove`, then deletes what it left.
    async fn park(&self, ctl: Option<Arc<dyn Controller>>, desired: &mut watch::Receiver<Desired>) {
        loop {
            if *desired.borrow_and_update() == Desired::Remove {
                if let Some(ctl) = ctl {
                    if let Err(e) = ctl.remove().await {
                        tracing::warn!(task_id = self.id, error = %e, "removing the task failed");
                    }
                }
                return;
            }
            if desired.changed().await.is_err() {
                return;
            }
        }
    }
}
