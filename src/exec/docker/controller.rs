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
    /// The node's network layer (root).
    network: Option<crate::network::Plane>,
}

impl DockerController {
    pub(crate) fn new(
        docker: Docker,
        files: TaskFiles,
        spec: ProcessSpec,
        adopted: bool,
        network: Option<crate::network::Plane>,
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
            network,
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

    fn create_body(&self, binds: Vec<String>, networked: bool) -> ContainerCreateBody {
        let mut body = container::create_body(&self.spec, self.stop_signal, binds);
        if networked {
            // plumbed by us once started; published ports go through the mesh, not docker's proxy
            if let Some(h) = body.host_config.as_mut() {
                h.network_mode = Some("none".into());
                h.port_bindings = None;
            }
            body.exposed_ports = None;
        }
        body
    }

    /// The task's interfaces in the node's map (none: docker's default networking).
    fn attachments(&self) -> Result<Vec<crate::network::Attachment>, ExecError> {
        let Some(net) = &self.network else {
            return Ok(Vec::new());
        };
        net.attachments(&self.spec.task_id)
            .map_err(|e| ExecError::StartFailed {
                task: self.spec.task_name.clone(),
                message: e.to_string(),
            })
    }

    fn network_file(&self) -> std::path::PathBuf {
        self.files.dir().join("network.json")
    }

    /// Writes the task's resolv.conf and the names of its veths; returns the bind of the resolv.conf.
    fn write_network_files(
        &self,
        attachments: &[crate::network::Attachment],
    ) -> Result<Option<String>, ExecError> {
        let dir = self.files.dir();
        let io = |p: &std::path::Path| {
            let p = p.display().to_string();
            move |e| ExecError::io(format!("writing {p}"), e)
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let veths: Vec<&str> = attachments.iter().map(|a| a.host_veth.as_str()).collect();
        let file = self.network_file();
        std::fs::write(&file, serde_json::to_vec(&veths).unwrap_or_default()).map_err(io(&file))?;
        let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let Some(text) = crate::network::resolv_conf(attachments, &host) else {
            return Ok(None);
        };
        let resolv = dir.join("resolv.conf");
        std::fs::write(&resolv, text).map_err(io(&resolv))?;
        Ok(Some(format!("{}:/etc/resolv.conf:ro", resolv.display())))
    }

    /// Plumbs the started container's namespace (by its pid); a failure kills the container.
    async fn plumb(&self) -> Result<(), ExecError> {
        let attachments = self.attachments()?;
        let Some(net) = self.network.as_ref().filter(|_| !attachments.is_empty()) else {
            return Ok(());
        };
        let info = self.inspect_now().await?;
        let pid = info
            .as_ref()
            .and_then(|i| i.state.as_ref())
            .and_then(|s| s.pid)
            .filter(|p| *p > 0);
        let result = match pid {
            None => Err("the container is not running".to_string()),
            Some(pid) => match std::fs::File::open(format!("/proc/{pid}/ns/net")) {
                Ok(ns) => {
                    use std::os::fd::AsFd;
                    net.plumb(ns.as_fd(), &attachments)
                        .await
                        .map_err(|e| e.to_string())
                }
                Err(e) => Err(format!("opening the container's network namespace: {e}")),
            },
        };
        let Err(message) = result else {
            return Ok(());
        };
        let opts = KillContainerOptionsBuilder::default()
            .signal("SIGKILL")
            .build();
        let _ = self.docker.kill_container(&self.name, Some(opts)).await;
        Err(ExecError::StartFailed {
            task: self.spec.task_name.clone(),
            message: format!("setting up the task's network: {message}"),
        })
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
        let mut binds = self.files.write(&self.spec.secrets, &self.spec.configs)?;
        let attachments = self.attachments()?;
        if !attachments.is_empty() {
            binds.extend(self.write_network_files(&attachments)?);
        }
        let opts = CreateContainerOptionsBuilder::default()
            .name(&self.name)
            .build();
        match self
            .docker
            .create_container(Some(opts), self.create_body(binds, !attachments.is_empty()))
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
            Ok(()) => self.plumb().await,
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
        // the pairs ended with the container's namespace; a start that failed half way may have left one
        let veths: Vec<String> = std::fs::read(self.network_file())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        if let Err(e) = crate::network::unplumb(&veths).await {
            tracing::warn!(task = %self.spec.task_name, "removing the task's veths: {e}");
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
