//! A scripted, in-memory [`Executor`] for simulation tests: each task follows the first scripted
//! [`Outcome`] whose [`Match`] fits it (run forever, exit with a code after a fake duration, fail
//! to start or prepare, ignore the stop signal), and answers health checks as its scripted
//! [`HealthScript`] says. Time is a fake clock moved only by [`FakeExecutor::advance`]; `wait` and
//! `shutdown` resolve when state changes, never by sleeping.
//!
//! Must not: start processes, touch the file system, sleep on wall time, or use randomness.

mod controller;
#[cfg(test)]
mod tests;

pub use controller::FakeController;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use nix::sys::signal::Signal;
use tokio::sync::watch;

use crate::exec::{
    parse_signal, CheckResult, Controller, ExecError, Executor, ExitStatus, LogLine, LogLines,
    LogOptions, LogStream, ProcessSpec, RuntimeState, TaskInfo, EXIT_NOT_FOUND,
};

/// What a scripted task does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Runs until shut down or terminated.
    RunForever,
    /// Exits with `code` once `after` of fake time has passed since it started.
    Exit {
        /// Exit code.
        code: i32,
        /// Fake time from start to exit.
        after: Duration,
    },
    /// `start` fails with this message (exit code 127, like a missing command).
    FailStart(String),
    /// `prepare` fails; `temporary` decides `is_temporary()` of the error.
    FailPrepare {
        /// The error text.
        message: String,
        /// Whether a retry may succeed.
        temporary: bool,
    },
    /// `start` takes this long (tokio time: a paused test clock moves past it on its own), then the task runs
    /// forever: a slow image pull or container create.
    SlowStart(Duration),
    /// Runs forever and ignores its stop signal: shutdown takes the whole grace period (fake
    /// time) and ends with SIGKILL.
    IgnoreStop,
}

/// How a scripted task answers its health checks (`exec_check`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum HealthScript {
    /// Every check passes.
    #[default]
    Pass,
    /// The first `n` checks fail (exit 1), every later one passes.
    FailFirst(u32),
    /// Every check fails with exit 1.
    Fail,
    /// Every check runs past its timeout (answered at once, as if the timeout had expired).
    Hang,
}

impl HealthScript {
    /// The answer to check number `n` (1-based).
    fn answer(&self, n: u32, timeout: Duration) -> CheckResult {
        let exited = |code: i32| CheckResult::Exited {
            code,
            output: format!("fake check {n}: exit {code}"),
        };
        match self {
            HealthScript::Pass => exited(0),
            HealthScript::FailFirst(k) if n > *k => exited(0),
            HealthScript::FailFirst(_) | HealthScript::Fail => exited(1),
            HealthScript::Hang => CheckResult::TimedOut { timeout },
        }
    }
}

/// Which tasks a scripted outcome applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Match {
    /// Every task.
    Any,
    /// Tasks whose image is exactly this.
    Image(String),
    /// Tasks whose name starts with this (e.g. `web.` for every task of service `web`).
    TaskNamePrefix(String),
}

impl Match {
    fn fits(&self, spec: &ProcessSpec) -> bool {
        match self {
            Match::Any => true,
            Match::Image(i) => &spec.image == i,
            Match::TaskNamePrefix(p) => spec.task_name.starts_with(p.as_str()),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    New,
    Prepared,
    Running {
        since: Duration,
        kill_at: Option<Duration>,
    },
    Exited(ExitStatus),
}

#[derive(Debug)]
struct FakeTask {
    spec: ProcessSpec,
    outcome: Outcome,
    phase: Phase,
    logs: Vec<LogLine>,
    health: HealthScript,
    /// Health checks run so far, with their argv.
    checks: Vec<Vec<String>>,
}

#[derive(Debug, Default)]
struct Inner {
    now: Duration,
    rules: Vec<(Match, Outcome)>,
    health_rules: Vec<(Match, HealthScript)>,
    tasks: BTreeMap<String, FakeTask>,
    unavailable: bool,
}

impl Inner {
    /// Moves every running task whose time has come to `Exited`.
    fn settle(&mut self) {
        let now = self.now;
        for t in self.tasks.values_mut() {
            if let Phase::Running { since, kill_at } = t.phase {
                if kill_at.is_some_and(|k| now >= k) {
                    t.phase = Phase::Exited(ExitStatus::signaled(Signal::SIGKILL as i32));
                } else if let Outcome::Exit { code, after } = t.outcome {
                    if now >= since + after {
                        t.phase = Phase::Exited(ExitStatus::exited(code));
                    }
                }
            }
        }
    }
}

/// The scripted executor. Cheap to clone; clones share tasks and clock.
#[derive(Clone, Debug)]
pub struct FakeExecutor {
    inner: Arc<Mutex<Inner>>,
    changed: Arc<watch::Sender<u64>>,
}

impl Default for FakeExecutor {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeExecutor {
    /// An executor where every task runs forever until scripted otherwise.
    pub fn new() -> Self {
        FakeExecutor {
            inner: Arc::default(),
            changed: Arc::new(watch::channel(0).0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data (every update is one assignment).
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn notify(&self) {
        self.changed.send_modify(|v| *v += 1);
    }

    /// Adds a rule; rules are tried in the order added, the first that fits wins. Applies to
    /// tasks created afterwards.
    pub fn script(&self, when: Match, outcome: Outcome) {
        self.lock().rules.push((when, outcome));
    }

    /// Adds a health rule (first that fits wins; tasks no rule fits pass every check). Applies
    /// to tasks created afterwards.
    pub fn script_health(&self, when: Match, script: HealthScript) {
        self.lock().health_rules.push((when, script));
    }

    /// Changes how an existing task answers its next health checks (the count goes on).
    pub fn set_health(&self, task_id: &str, script: HealthScript) -> Result<(), ExecError> {
        let mut inner = self.lock();
        let t = inner
            .tasks
            .get_mut(task_id)
            .ok_or_else(|| ExecError::NotFound(task_id.into()))?;
        t.health = script;
        Ok(())
    }

    /// The health check commands run for a task so far, oldest first.
    pub fn checks(&self, task_id: &str) -> Vec<Vec<String>> {
        self.lock()
            .tasks
            .get(task_id)
            .map(|t| t.checks.clone())
            .unwrap_or_default()
    }

    /// The fake time since this executor was created.
    pub fn now(&self) -> Duration {
        self.lock().now
    }

    /// Moves the fake clock; tasks whose exit time has come exit.
    pub fn advance(&self, by: Duration) {
        {
            let mut inner = self.lock();
            inner.now += by;
            inner.settle();
        }
        self.notify();
    }

    /// Makes a running task exit now with `status` (a crash, an OOM kill…).
    pub fn exit_task(&self, task_id: &str, status: ExitStatus) -> Result<(), ExecError> {
        {
            let mut inner = self.lock();
            let t = inner
                .tasks
                .get_mut(task_id)
                .ok_or_else(|| ExecError::NotFound(task_id.into()))?;
            if matches!(t.phase, Phase::Running { .. }) {
                t.phase = Phase::Exited(status);
            }
        }
        self.notify();
        Ok(())
    }

    /// While set, every operation fails with a temporary `Unavailable` error.
    pub fn set_unavailable(&self, unavailable: bool) {
        self.lock().unavailable = unavailable;
        self.notify();
    }

    /// Appends a line to a task's logs.
    pub fn write_log(&self, task_id: &str, stream: LogStream, line: &str) -> Result<(), ExecError> {
        let mut inner = self.lock();
        let t = inner
            .tasks
            .get_mut(task_id)
            .ok_or_else(|| ExecError::NotFound(task_id.into()))?;
        t.logs.push(LogLine {
            stream,
            line: line.into(),
        });
        Ok(())
    }

    /// What every task is doing, by task id.
    pub fn states(&self) -> BTreeMap<String, RuntimeState> {
        self.lock()
            .tasks
            .iter()
            .map(|(id, t)| (id.clone(), runtime_state(&t.phase)))
            .collect()
    }

    /// Runs `f` on the task under the lock, failing when unavailable or unknown.
    fn with_task<T>(
        &self,
        task_id: &str,
        f: impl FnOnce(&mut FakeTask, Duration) -> Result<T, ExecError>,
    ) -> Result<T, ExecError> {
        let result = {
            let mut inner = self.lock();
            if inner.unavailable {
                return Err(ExecError::Unavailable("fake runtime is unavailable".into()));
            }
            let now = inner.now;
            let t = inner
                .tasks
                .get_mut(task_id)
                .ok_or_else(|| ExecError::NotFound(task_id.into()))?;
            let r = f(t, now);
            inner.settle();
            r
        };
        self.notify();
        result
    }

    /// Resolves when `done` returns `Some` for the task, re-checking on every state change.
    async fn until<T>(
        &self,
        task_id: &str,
        mut done: impl FnMut(&Phase) -> Option<T>,
    ) -> Result<T, ExecError> {
        let mut rx = self.changed.subscribe();
        loop {
            let phase = {
                let inner = self.lock();
                inner
                    .tasks
                    .get(task_id)
                    .map(|t| t.phase.clone())
                    .ok_or_else(|| ExecError::NotFound(task_id.into()))?
            };
            if let Some(v) = done(&phase) {
                return Ok(v);
            }
            if rx.changed().await.is_err() {
                return Err(ExecError::Unavailable("fake executor dropped".into()));
            }
        }
    }
}

fn runtime_state(phase: &Phase) -> RuntimeState {
    match phase {
        Phase::New => RuntimeState::New,
        Phase::Prepared => RuntimeState::Prepared,
        Phase::Running { .. } => RuntimeState::Running,
        Phase::Exited(s) => RuntimeState::Exited(s.clone()),
    }
}

fn invalid_state(task: &str, op: &'static str, phase: &Phase) -> ExecError {
    ExecError::InvalidState {
        task: task.into(),
        op,
        state: format!("{:?}", runtime_state(phase)),
    }
}

impl Executor for FakeExecutor {
    fn controller(&self, spec: ProcessSpec) -> Result<Box<dyn Controller>, ExecError> {
        parse_signal(spec.stop_signal.as_deref()).map_err(|message| ExecError::InvalidSpec {
            task: spec.task_name.clone(),
            message,
        })?;
        let task_id = spec.task_id.clone();
        {
            let mut inner = self.lock();
            if !inner.tasks.contains_key(&task_id) {
                let outcome = inner
                    .rules
                    .iter()
                    .find(|(m, _)| m.fits(&spec))
                    .map_or(Outcome::RunForever, |(_, o)| o.clone());
                let health = inner
                    .health_rules
                    .iter()
                    .find(|(m, _)| m.fits(&spec))
                    .map_or(HealthScript::Pass, |(_, h)| h.clone());
                // Secret data is not kept: only the runtime would need it.
                let spec = ProcessSpec {
                    secrets: Vec::new(),
                    ..spec
                };
                inner.tasks.insert(
                    task_id.clone(),
                    FakeTask {
                        spec,
                        outcome,
                        phase: Phase::New,
                        logs: Vec::new(),
                        health,
                        checks: Vec::new(),
                    },
                );
            }
        }
        Ok(Box::new(FakeController {
            exec: self.clone(),
            task_id,
        }))
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<TaskInfo>, ExecError>> {
        let inner = self.lock();
        let out = inner
            .tasks
            .iter()
            .map(|(id, t)| TaskInfo {
                task_id: id.clone(),
                task_name: t.spec.task_name.clone(),
                state: runtime_state(&t.phase),
            })
            .collect();
        futures::future::ready(Ok(out)).boxed()
    }

    fn adopt<'a>(
        &'a self,
        task_id: &'a str,
    ) -> BoxFuture<'a, Result<Box<dyn Controller>, ExecError>> {
        let found = self.lock().tasks.contains_key(task_id);
        let r: Result<Box<dyn Controller>, ExecError> = if found {
            Ok(Box::new(FakeController {
                exec: self.clone(),
                task_id: task_id.into(),
            }))
        } else {
            Err(ExecError::NotFound(task_id.into()))
        };
        futures::future::ready(r).boxed()
    }

    fn logs<'a>(
        &'a self,
        task_id: &'a str,
        opts: LogOptions,
    ) -> BoxFuture<'a, Result<LogLines, ExecError>> {
        let r = self.with_task(task_id, |t, _| {
            let skip = opts.tail.map_or(0, |n| t.logs.len().saturating_sub(n));
            Ok(t.logs[skip..].to_vec())
        });
        let r =
            r.map(|lines| Box::pin(futures::stream::iter(lines.into_iter().map(Ok))) as LogLines);
        futures::future::ready(r).boxed()
    }
}
