//! The docker controller: one task's container. `prepare` pulls the image when missing, writes
//! secrets/configs and creates the container; `start`, `wait`, `shutdown` (stop with the grace
//! period), `terminate` (kill) and `remove` map onto the Engine API; everything is read back from
//! the daemon (`inspect`), so an adopted controller behaves like the one that created the task.
//!
//! Must not: hold secret data past `prepare`, or act on a container it did not name.

use std::collections::HashMap;
use std::time::Duration;

use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, HostConfig, PortBinding, PortMap,
};
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
    parse_signal, CheckResult, Controller, ExecError, ExitStatus, Limits, PortProtocol,
    ProcessSpec, PublishedPort, RuntimeState, CHECK_OUTPUT_LIMIT,
};

use super::files::TaskFiles;
use super::{container_name, is_not_found, map_err, message_of, status_of};
use super::{LABEL_TASK_ID, LABEL_TASK_NAME};

/// Reported when the task's container vanished (removed behind our back).
pub const GONE_MESSAGE: &str = "task container disappeared";
/// Reported for a container the kernel's OOM killer ended (Docker's `OOMKilled`).
pub const OOM_MESSAGE: &str = "container was OOM killed (out of memory)";

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
        let spec = &self.spec;
        let (entrypoint, cmd) = match spec.argv.split_first() {
            Some((first, rest)) => (Some(vec![first.clone()]), Some(rest.to_vec())),
            None => (None, None),
        };
        let hostname = spec
            .env
            .iter()
            .find(|(k, _)| k == "HOSTNAME")
            .map(|(_, v)| v.clone())
            .filter(|h| !h.is_empty());
        let (exposed_ports, port_bindings) = port_config(&spec.ports);
        if spec.ports.iter().any(|p| p.ingress) {
            warn_ingress_once(&spec.task_name);
        }
        let limits = spec.limits;
        let grace = spec.stop_grace_period;
        let stop_timeout = grace.as_secs() as i64 + i64::from(grace.subsec_nanos() > 0);
        ContainerCreateBody {
            image: Some(spec.image.clone()),
            entrypoint,
            cmd,
            env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            working_dir: spec.working_dir.clone().filter(|w| !w.is_empty()),
            user: spec.user.clone().filter(|u| !u.is_empty()),
            hostname,
            stop_signal: Some(self.stop_signal.as_str().to_string()),
            stop_timeout: Some(stop_timeout),
            exposed_ports,
            labels: Some(HashMap::from([
                (LABEL_TASK_ID.to_string(), spec.task_id.clone()),
                (LABEL_TASK_NAME.to_string(), spec.task_name.clone()),
            ])),
            host_config: Some(HostConfig {
                binds: (!binds.is_empty()).then_some(binds),
                readonly_rootfs: Some(spec.read_only),
                init: spec.init.then_some(true),
                nano_cpus: (limits.nano_cpus > 0).then_some(limits.nano_cpus),
                memory: (limits.memory_bytes > 0)
                    .then(|| i64::try_from(limits.memory_bytes).unwrap_or(i64::MAX)),
                pids_limit: (limits.pids > 0).then_some(limits.pids),
                port_bindings,
                ..Default::default()
            }),
            ..Default::default()
        }
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

    /// A start failure as the task reports it: Docker's `exec: "x": executable file not found
    /// in $PATH` rather than the whole OCI runtime chain when that is what happened.
    fn start_message(raw: &str) -> String {
        if let Some(i) = raw.find("exec: \"") {
            let tail = &raw[i..];
            let end = tail.find(": unknown").unwrap_or(tail.len());
            return tail[..end].to_string();
        }
        raw.to_string()
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
                    message: Self::start_message(&message_of(&e)),
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

/// Docker's `ExposedPorts` and `PortBindings` for the published ports (`None` when there are
/// none). A port without a published number gets an empty host port: the daemon picks one.
fn port_config(ports: &[PublishedPort]) -> (Option<Vec<String>>, Option<PortMap>) {
    if ports.is_empty() {
        return (None, None);
    }
    let mut exposed = Vec::new();
    let mut bindings = PortMap::new();
    for p in ports {
        let key = format!("{}/{}", p.target, p.protocol.as_str());
        if !exposed.contains(&key) {
            exposed.push(key.clone());
        }
        let binding = PortBinding {
            host_ip: None,
            host_port: Some(p.published.map(|n| n.to_string()).unwrap_or_default()),
        };
        bindings
            .entry(key)
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(binding);
    }
    (Some(exposed), Some(bindings))
}

/// Logs, once per process, that routing-mesh ports are published on the task's node only.
fn warn_ingress_once(task_name: &str) {
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        tracing::warn!(
            task = task_name,
            "ingress (routing mesh) ports are not supported by the docker executor: they are \
             published on the node running the task only, like host-mode ports"
        );
    });
}

/// The published ports of a container, read back from its `PortBindings`.
fn ports_of(info: &ContainerInspectResponse) -> Vec<PublishedPort> {
    let Some(map) = info
        .host_config
        .as_ref()
        .and_then(|h| h.port_bindings.as_ref())
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (key, bindings) in map {
        let (target, proto) = key.split_once('/').unwrap_or((key.as_str(), "tcp"));
        let (Ok(target), Some(protocol)) = (target.parse::<u16>(), PortProtocol::parse(proto))
        else {
            continue;
        };
        for b in bindings.iter().flatten() {
            out.push(PublishedPort {
                target,
                published: b.host_port.as_deref().and_then(|p| p.parse().ok()),
                protocol,
                ingress: false,
            });
        }
    }
    out.sort_by_key(|p| (p.target, p.protocol.as_str(), p.published));
    out
}

/// Whether the container ever started (its start time is set).
fn started(info: &ContainerInspectResponse) -> bool {
    info.state
        .as_ref()
        .and_then(|s| s.started_at.as_deref())
        .is_some_and(|t| !t.is_empty() && !t.starts_with("0001-01-01"))
}

/// What the daemon says about the task's container.
fn observed(info: &ContainerInspectResponse) -> RuntimeState {
    use bollard::models::ContainerStateStatusEnum as S;
    let Some(state) = info.state.as_ref() else {
        return RuntimeState::New;
    };
    let code = state.exit_code.map(|c| c as i32);
    let error = state.error.clone().filter(|e| !e.is_empty());
    match state.status {
        Some(S::RUNNING | S::PAUSED | S::RESTARTING) => RuntimeState::Running,
        Some(S::CREATED) if !started(info) => match error {
            // A start that failed leaves the container "created" with the reason.
            Some(e) => RuntimeState::Exited(ExitStatus::failed(
                code.filter(|c| *c != 0),
                DockerController::start_message(&e),
            )),
            None => RuntimeState::Prepared,
        },
        _ if state.oom_killed == Some(true) => {
            RuntimeState::Exited(ExitStatus::failed(code, OOM_MESSAGE))
        }
        _ => match error {
            Some(e) => RuntimeState::Exited(ExitStatus::failed(code, e)),
            None => RuntimeState::Exited(ExitStatus::exited(code.unwrap_or(0))),
        },
    }
}

/// The runtime state of a task container (for `list`).
pub(crate) fn runtime_state(info: &ContainerInspectResponse) -> RuntimeState {
    observed(info)
}

/// Rebuilds what an adopted controller needs from the container itself: name, stop signal and
/// grace period (secret data is not needed any more and is not recoverable).
pub(crate) fn spec_of(
    task_id: &str,
    info: &ContainerInspectResponse,
) -> Result<ProcessSpec, ExecError> {
    let config = info.config.clone().unwrap_or_default();
    let labels = config.labels.clone().unwrap_or_default();
    if labels.get(LABEL_TASK_ID).map(String::as_str) != Some(task_id) {
        return Err(ExecError::NotFound(task_id.to_string()));
    }
    let mut argv = config.entrypoint.clone().unwrap_or_default();
    argv.extend(config.cmd.clone().unwrap_or_default());
    Ok(ProcessSpec {
        task_id: task_id.to_string(),
        task_name: labels.get(LABEL_TASK_NAME).cloned().unwrap_or_default(),
        argv,
        env: Vec::new(),
        working_dir: config.working_dir.clone().filter(|w| !w.is_empty()),
        user: config.user.clone().filter(|u| !u.is_empty()),
        stop_signal: config.stop_signal.clone(),
        stop_grace_period: Duration::from_secs(config.stop_timeout.unwrap_or(10).max(0) as u64),
        secrets: Vec::new(),
        configs: Vec::new(),
        image: config.image.clone().unwrap_or_default(),
        read_only: false,
        init: false,
        limits: info
            .host_config
            .as_ref()
            .map_or_else(Limits::default, |h| Limits {
                nano_cpus: h.nano_cpus.unwrap_or(0).max(0),
                memory_bytes: h.memory.unwrap_or(0).max(0) as u64,
                pids: h.pids_limit.unwrap_or(0).max(0),
            }),
        ports: ports_of(info),
    })
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
