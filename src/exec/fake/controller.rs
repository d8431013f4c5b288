//! The fake executor's [`Controller`]: one scripted task's lifecycle (prepare, start, wait, stop, remove, health
//! checks) read from and written to the executor's shared table, on its fake clock.

use super::*;

/// Controls one scripted task.
#[derive(Debug)]
pub struct FakeController {
    pub(super) exec: FakeExecutor,
    pub(super) task_id: String,
}

impl FakeController {
    /// Starts the task at once (after a scripted slow start's wait).
    fn start_now(&self) -> Result<(), ExecError> {
        self.exec.with_task(&self.task_id, |t, now| match &t.phase {
            Phase::New => Err(invalid_state(&t.spec.task_id, "start", &t.phase)),
            Phase::Prepared => match &t.outcome {
                Outcome::FailStart(message) => {
                    t.phase =
                        Phase::Exited(ExitStatus::failed(Some(EXIT_NOT_FOUND), message.clone()));
                    Err(ExecError::StartFailed {
                        task: t.spec.task_name.clone(),
                        message: message.clone(),
                    })
                }
                _ => {
                    t.phase = Phase::Running {
                        since: now,
                        kill_at: None,
                    };
                    Ok(())
                }
            },
            Phase::Exited(ExitStatus {
                error: Some(message),
                ..
            }) => Err(ExecError::StartFailed {
                task: t.spec.task_name.clone(),
                message: message.clone(),
            }),
            Phase::Running { .. } | Phase::Exited(_) => Ok(()),
        })
    }

    async fn stop(&self, kill: bool) -> Result<(), ExecError> {
        let id = self.task_id.as_str();
        self.exec.with_task(id, |t, now| {
            if let Phase::Running { since, kill_at } = t.phase {
                let grace = t.spec.stop_grace_period;
                t.phase = if kill {
                    Phase::Exited(ExitStatus::signaled(Signal::SIGKILL as i32))
                } else if t.outcome == Outcome::IgnoreStop {
                    Phase::Running {
                        since,
                        kill_at: Some(kill_at.map_or(now + grace, |k| k.min(now + grace))),
                    }
                } else {
                    let sig =
                        parse_signal(t.spec.stop_signal.as_deref()).unwrap_or(Signal::SIGTERM);
                    Phase::Exited(ExitStatus::signaled(sig as i32))
                };
            }
            Ok(())
        })?;
        self.exec
            .until(id, |p| (!matches!(p, Phase::Running { .. })).then_some(()))
            .await
    }
}

impl Controller for FakeController {
    fn task_id(&self) -> &str {
        &self.task_id
    }

    fn prepare(&self) -> BoxFuture<'_, Result<(), ExecError>> {
        let r = self.exec.with_task(&self.task_id, |t, _| {
            if let Outcome::FailPrepare { message, temporary } = &t.outcome {
                return Err(if *temporary {
                    ExecError::Unavailable(message.clone())
                } else {
                    ExecError::InvalidSpec {
                        task: t.spec.task_name.clone(),
                        message: message.clone(),
                    }
                });
            }
            if t.phase == Phase::New {
                t.phase = Phase::Prepared;
            }
            Ok(())
        });
        futures::future::ready(r).boxed()
    }

    fn start(&self) -> BoxFuture<'_, Result<(), ExecError>> {
        let slow = self
            .exec
            .with_task(&self.task_id, |t, _| match t.outcome {
                Outcome::SlowStart(d) if t.phase == Phase::Prepared => Ok(Some(d)),
                _ => Ok(None),
            })
            .ok()
            .flatten();
        async move {
            if let Some(d) = slow {
                tokio::time::sleep(d).await;
            }
            self.start_now()
        }
        .boxed()
    }

    fn wait(&self) -> BoxFuture<'_, Result<ExitStatus, ExecError>> {
        async move {
            let id = self.task_id.as_str();
            let not_started = self.exec.with_task(id, |t, _| {
                Ok(matches!(t.phase, Phase::New | Phase::Prepared))
            })?;
            if not_started {
                return Err(ExecError::InvalidState {
                    task: id.into(),
                    op: "wait",
                    state: "not started".into(),
                });
            }
            self.exec
                .until(id, |p| match p {
                    Phase::Exited(s) => Some(s.clone()),
                    _ => None,
                })
                .await
        }
        .boxed()
    }

    fn shutdown(&self) -> BoxFuture<'_, Result<(), ExecError>> {
        self.stop(false).boxed()
    }

    fn terminate(&self) -> BoxFuture<'_, Result<(), ExecError>> {
        self.stop(true).boxed()
    }

    fn remove(&self) -> BoxFuture<'_, Result<(), ExecError>> {
        let r = {
            let mut inner = self.exec.lock();
            match inner.tasks.get(&self.task_id) {
                Some(t) if matches!(t.phase, Phase::Running { .. }) => {
                    Err(invalid_state(&self.task_id, "remove", &t.phase))
                }
                _ => {
                    inner.tasks.remove(&self.task_id);
                    Ok(())
                }
            }
        };
        self.exec.notify();
        futures::future::ready(r).boxed()
    }

    fn inspect(&self) -> BoxFuture<'_, Result<RuntimeState, ExecError>> {
        let r = self
            .exec
            .with_task(&self.task_id, |t, _| Ok(runtime_state(&t.phase)));
        futures::future::ready(r).boxed()
    }

    fn exec_check<'a>(
        &'a self,
        argv: &'a [String],
        timeout: Duration,
    ) -> BoxFuture<'a, Result<CheckResult, ExecError>> {
        let r = self.exec.with_task(&self.task_id, |t, _| {
            if !matches!(t.phase, Phase::Running { .. }) {
                return Err(invalid_state(&t.spec.task_id, "exec_check", &t.phase));
            }
            t.checks.push(argv.to_vec());
            let n = u32::try_from(t.checks.len()).unwrap_or(u32::MAX);
            Ok(t.health.answer(n, timeout))
        });
        futures::future::ready(r).boxed()
    }
}
