//! The docker controller: one task's container. `prepare` pulls the image when missing, writes
//! secrets/configs and creates the container; `start`, `wait`, `shutdown` (stop with the grace
//! period), `terminate` (kill) and `remove` map onto the Engine API; everything is read back from
//! the daemon (`inspect`), so an adopted controller behaves like the one that created the task.
//!
//! Must not: hold secret data past `prepare`, or act on a container it did not name.

use std::time::Duration;

use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::models::{ContainerCreateBody, ContainerInspectResponse};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, InspectContainerOptions,
    KillContainerOptionsBuilder, RemoveContainerOptionsBuilder, StartContainerOptions,
    StopContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use bollard::Docker;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use nix::sys::signal::Signal;

use crate::exec::{
    parse_signal, CheckResult, Controller, ExecError, ExitStatus, ProcessSpec, RuntimeState,
    CHECK_OUTPUT_LIMIT,
};

use super::container::GONE_MESSAGE;
use super::container::{self, observed, started};
use super::files::TaskFiles;
use super::{container_name, is_not_found, map_err, message_of, status_of};

/// Controls one task run as a Docker container.
pub struct DockerController {
    docker: Docker,
    files: TaskFiles,
    spec: ProcessSpec,
    name: String,
    stop_signal: Signal,
    /// Adopted controllers have no secret data and cannot prepare again.
    adopted: bool,
}

impl DockerController {
    pub(crate) fn new(
        docker: Docker,
        files: TaskFiles,
        spec: ProcessSpec,
        adopted: bool,
    ) -> Result<Self, ExecError> {
        let stop_signal = parse_signal(spec.stop_signal.as_deref()).map_err(|message| {
            ExecError::InvalidSpec {
                task: spec.task_name.clone(),
                message,
            }
        })?;
        Ok(DockerController {
            docker,
            files,
            name: container_name(&spec.task_id),
            spec,
            stop_signal,
            adopted,
        })
    }

    fn err(&self, context: &str) -> impl FnOnce(bollard::errors::Error) -> ExecError + '_ {
        let context = context.to_string();
        move |e| map_err(e, &self.spec.task_name, &context)
    }

    /// The container, or `None` when it does not exist.
    async fn inspect_now(&self) -> Result<Option<ContainerInspectResponse>, ExecError> {
        match self
            .docker
            .inspect_container(&self.name, None::<InspectContainerOptions>)
            .await
        {
            Ok(info) => Ok(Some(info)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(self.err("inspecting the container")(e)),
        }
    }

    async fn ensure_image(&self) -> Result<(), ExecError> {
        let image = &self.spec.image;
        match self.docker.inspect_image(image).await {
            Ok(_) => return Ok(()),
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(self.err("inspecting the image")(e)),
        }
        let opts = CreateImageOptionsBuilder::default()
            .from_image(image)
            .build();
        let mut pull = self.docker.create_image(Some(opts), None, None);
        let mut failure = None;
        while let Some(item) = pull.next().await {
            match item {
                Ok(info) => {
                    if let Some(detail) = info.error_detail.and_then(|d| d.message) {
                        failure = Some(detail);
                    }
                }
                Err(e)
                    if status_of(&e).is_none()
                        && !matches!(e, bollard::errors::Error::DockerStreamError { .. }) =>
                {
                    return Err(self.err("pulling the image")(e))
                }
                Err(e) => {
                    failure = Some(message_of(&e));
                    break;
                }
            }
        }
        if let Some(why) = failure {
            return Err(ExecError::StartFailed {
                task: self.spec.task_name.clone(),
                message: format!("image {image} not found locally and could not be pulled: {why}"),
            });
        }
        Ok(())
    }

    fn create_body(&self, binds: Vec<String>) -> ContainerCreateBody {
        container::create_body(&self.spec, self.stop_signal, binds)
    }

    async fn prepare_now(&self) -> Result<(), ExecError> {
        if self.inspect_now().await?.is_some() {
            return Ok(());
        }
        if self.adopted {
            return Err(ExecError::InvalidState {
                task: self.spec.task_id.clone(),
                op: "prepare",
                state: "adopted".into(),
            });
        }
        self.ensure_image().await?;
        let binds = self.files.write(&self.spec.secrets, &self.spec.configs)?;
        let opts = CreateContainerOptionsBuilder::default()
            .name(&self.name)
            .build();
        match self
            .docker
            .create_container(Some(opts), self.create_body(binds))
            .await
        {
            Ok(_) => Ok(()),
            // Created concurrently by an earlier, interrupted prepare.
            Err(e) if status_of(&e) == Some(409) => Ok(()),
            Err(e) => Err(self.err("creating the container")(e)),
        }
    }

    async fn start_now(&self) -> Result<(), ExecError> {
        let Some(info) = self.inspect_now().await? else {
            return Err(ExecError::InvalidState {
                task: self.spec.task_id.clone(),
                op: "start",
                state: "not prepared".into(),
            });
        };
        match observed(&info) {
            RuntimeState::Prepared => {}
            RuntimeState::Exited(ExitStatus {
                error: Some(message),
                ..
            }) if !started(&info) => {
                return Err(ExecError::StartFailed {
                    task: self.spec.task_name.clone(),
                    message,
                })
            }
            _ => return Ok(()),
        }
        match self
            .docker
            .start_container(&self.name, None::<StartContainerOptions>)
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if status_of(&e) == Some(304) => Ok(()),
            Err(e) if status_of(&e).is_some_and(|c| c == 400 || c == 500) => {
                Err(ExecError::StartFailed {
                    task: self.spec.task_name.clone(),
                    message: container::start_message(&message_of(&e)),
                })
            }
            Err(e) => Err(self.err("starting the container")(e)),
        }
    }

    async fn wait_now(&self) -> Result<ExitStatus, ExecError> {
        loop {
            let Some(info) = self.inspect_now().await? else {
                return Ok(ExitStatus::failed(None, GONE_MESSAGE));
            };
            match observed(&info) {
                RuntimeState::Exited(status) => return Ok(status),
                RuntimeState::New | RuntimeState::Prepared => {
                    return Err(ExecError::InvalidState {
                        task: self.spec.task_id.clone(),
                        op: "wait",
                        state: "not started".into(),
                    })
                }
                RuntimeState::Running => {
                    let opts = WaitContainerOptionsBuilder::default()
                        .condition("not-running")
                        .build();
                    let mut waiting = self.docker.wait_container(&self.name, Some(opts));
                    match waiting.next().await {
                        // Exit details come from inspect; a wait error (the daemon reports a
                        // non-zero exit as one) or a request timeout just means: look again.
                        Some(Ok(_)) | Some(Err(_)) | None => {}
                    }
                    // Do not spin if the daemon keeps failing the wait request.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }

    async fn stop(&self, graceful: bool) -> Result<(), ExecError> {
        let Some(info) = self.inspect_now().await? else {
            return Ok(());
        };
        if observed(&info) != RuntimeState::Running {
            return Ok(());
        }
        let result = if graceful {
            let grace = self.spec.stop_grace_period;
            let t = grace.as_secs() as i32 + i32::from(grace.subsec_nanos() > 0);
            let opts = StopContainerOptionsBuilder::default()
                .t(t)
                .signal(self.stop_signal.as_str())
                .build();
            self.docker.stop_container(&self.name, Some(opts)).await
        } else {
            let opts = KillContainerOptionsBuilder::default()
                .signal("SIGKILL")
                .build();
            self.docker.kill_container(&self.name, Some(opts)).await
        };
        match result {
            Ok(()) => {}
            // Not running any more (304 on stop, 409 on kill) or gone.
            Err(e) if matches!(status_of(&e), Some(304 | 404 | 409)) => {}
            // A grace period longer than the client's request timeout: the daemon still stops
            // the container; wait for it.
            Err(bollard::errors::Error::RequestTimeoutError) => {}
            Err(e) => return Err(self.err("stopping the container")(e)),
        }
        self.wait_now().await.map(drop)
    }

    async fn remove_now(&self) -> Result<(), ExecError> {
        if let Some(info) = self.inspect_now().await? {
            if observed(&info) == RuntimeState::Running {
                return Err(ExecError::InvalidState {
                    task: self.spec.task_id.clone(),
                    op: "remove",
                    state: "running".into(),
                });
            }
            let opts = RemoveContainerOptionsBuilder::default()
                .v(true)
                .force(true)
                .build();
            match self.docker.remove_container(&self.name, Some(opts)).await {
                Ok(()) => {}
                Err(e) if is_not_found(&e) => {}
                // Already being removed.
                Err(e) if status_of(&e) == Some(409) => {}
                Err(e) => return Err(self.err("removing the container")(e)),
            }
        }
        self.files.remove()
    }

    async fn exec_check_now(
        &self,
        argv: &[String],
        timeout: Duration,
    ) -> Result<CheckResult, ExecError> {
        match self.inspect_now().await?.as_ref().map(observed) {
            Some(RuntimeState::Running) => {}
            other => {
                return Err(ExecError::InvalidState {
                    task: self.spec.task_id.clone(),
                    op: "run a health check",
                    state: match other {
                        None => "removed".into(),
                        Some(s) => format!("{s:?}").to_lowercase(),
                    },
                })
            }
        }
        let exec = self
            .docker
            .create_exec(
                &self.name,
                CreateExecOptions {
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    cmd: Some(argv.to_vec()),
                    ..Default::default()
                },
            )
            .await
            .map_err(self.err("creating the health check"))?;
        let run = async {
            let started = self
                .docker
                .start_exec(&exec.id, None::<StartExecOptions>)
                .await
                .map_err(self.err("starting the health check"))?;
            let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
            if let StartExecResults::Attached { mut output, .. } = started {
                while let Some(chunk) = output.next().await {
                    match chunk {
                        Ok(bollard::container::LogOutput::StdErr { message }) => {
                            stderr.extend_from_slice(&message)
                        }
                        Ok(other) => stdout.extend_from_slice(other.as_ref()),
                        Err(_) => break,
                    }
                }
            }
            stdout.extend_from_slice(&stderr);
            stdout.truncate(CHECK_OUTPUT_LIMIT);
            Ok::<_, ExecError>(String::from_utf8_lossy(&stdout).into_owned())
        };
        let output = match tokio::time::timeout(timeout, run).await {
            Ok(r) => r?,
            Err(_) => return Ok(CheckResult::TimedOut { timeout }),
        };
        // The exit code is set once the exec's process has been reaped.
        for _ in 0..50 {
            let ins = self
                .docker
                .inspect_exec(&exec.id)
                .await
                .map_err(self.err("inspecting the health check"))?;
            if ins.running != Some(true) {
                if let Some(code) = ins.exit_code {
                    return Ok(CheckResult::Exited {
                        code: code as i32,
                        output,
                    });
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(ExecError::Unavailable(format!(
            "task {}: the health check's exit code never appeared",
            self.spec.task_name
        )))
    }
}

impl Controller for DockerController {
    fn task_id(&self) -> &str {
        &self.spec.task_id
    }

    fn prepare(&self) -> BoxFuture<'_, Result<(), ExecError>> {
        self.prepare_now().boxed()
    }

    fn start(&self) -> BoxFuture<'_, Result<(), ExecError>> {
        self.start_now().boxed()
    }

    fn wait(&self) -> BoxFuture<'_, Result<ExitStatus, ExecError>> {
        self.wait_now().boxed()
    }

    fn shutdown(&self) -> BoxFuture<'_, Result<(), ExecError>> {
        self.stop(true).boxed()
    }

    fn terminate(&self) -> BoxFuture<'_, Result<(), ExecError>> {
        self.stop(false).boxed()
    }

    fn remove(&self) -> BoxFuture<'_, Result<(), ExecError>> {
        self.remove_now().boxed()
    }

    fn inspect(&self) -> BoxFuture<'_, Result<RuntimeState, ExecError>> {
        async move {
            Ok(self
                .inspect_now()
                .await?
                .as_ref()
                .map_or(RuntimeState::New, observed))
        }
        .boxed()
    }

    fn exec_check<'a>(
        &'a self,
        argv: &'a [String],
        timeout: Duration,
    ) -> BoxFuture<'a, Result<CheckResult, ExecError>> {
        self.exec_check_now(argv, timeout).boxed()
    }
}
