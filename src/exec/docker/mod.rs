//! # docker — tasks as Docker containers (Docker Engine API through bollard)
//!
//! One container per task, named `swarm-<task_id>` and labelled [`LABEL_TASK_ID`] /
//! [`LABEL_TASK_NAME`], so a restarted daemon finds its tasks again (`list`, `adopt`) from the
//! Docker daemon alone. The image is pulled only when it is missing locally. Secrets are written
//! into a tmpfs directory on the host (`<root>/<task_id>/secrets`, a tmpfs mount when root, else a
//! directory under /dev/shm) and bind-mounted read-only at `/run/secrets/<target>`; configs live
//! in `<root>/<task_id>/configs` and are bind-mounted read-only at their absolute target. Both are
//! removed with the task. Logs come from the container's log driver; health checks run through
//! `docker exec`. Resource limits become `NanoCpus`, `Memory` and `PidsLimit`; published ports
//! become `ExposedPorts` + `PortBindings` on this node (a port without a number gets one picked
//! by the daemon). Ingress (routing mesh) ports cannot be honoured and are published like
//! host-mode ports, with a warning logged once.
//!
//! A task with network attachments in the node's map (swarmd root) gets network mode `none` and is plumbed
//! by the container's pid once started, as CNI plugins do (`network::plumb`): the same bridges and veths as a
//! process task, so both reach each other; its `/etc/resolv.conf` is a bind of one naming its network's
//! gateway (the node's resolver). Docker offers no hook between creating the namespace and running the
//! entrypoint, so the task's first instants may see no interface yet.
//!
//! Must not: write secret data to persistent disk, touch containers without the task label, or
//! know the model or store types.

mod container;
mod controller;
mod files;
mod logs;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::query_parameters::{InspectContainerOptions, ListContainersOptionsBuilder};
use bollard::Docker;
use futures::future::BoxFuture;
use futures::FutureExt;

pub use controller::DockerController;

use crate::exec::{
    Controller, ExecError, Executor, LogLines, LogOptions, ProcessSpec, RuntimeState, TaskInfo,
};

/// Label carrying the task id on every container this executor creates.
pub const LABEL_TASK_ID: &str = "com.swarm.task.id";
/// Label carrying the task's human name.
pub const LABEL_TASK_NAME: &str = "com.swarm.task.name";
/// Label carrying the executor's root (the node's state directory): `list` asks the Engine only for this
/// node's containers, however many nodes share the daemon.
pub const LABEL_ROOT: &str = "com.swarm.executor.root";

/// Timeout of one Docker API request (stops with a long grace period wait that long, plus this).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// The container name of a task.
pub fn container_name(task_id: &str) -> String {
    format!("swarm-{task_id}")
}

/// Where the Docker client connects: `DOCKER_HOST` or the default unix socket.
pub fn daemon_address() -> String {
    std::env::var("DOCKER_HOST")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unix:///var/run/docker.sock".into())
}

/// Runs tasks as Docker containers; host-side files (secrets, configs) under `root`.
#[derive(Clone, Debug)]
pub struct DockerExecutor {
    docker: Docker,
    root: PathBuf,
    is_root: bool,
    /// Ended containers by container id, with the state they ended in.
    ended: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, RuntimeState>>>,
    network: Option<crate::network::Plane>,
}

impl DockerExecutor {
    /// Connects to the local Docker daemon (`DOCKER_HOST` or the default socket), negotiates the
    /// API version and checks that the daemon answers. Fails with "cannot reach the Docker daemon
    /// at ...: ..." otherwise (a temporary error).
    pub async fn connect(root: impl Into<PathBuf>) -> Result<Self, ExecError> {
        let unreachable =
            |e: &dyn std::fmt::Display| ExecError::Unavailable(unreachable(&daemon_address(), e));
        let docker = Docker::connect_with_local_defaults()
            .map_err(|e| unreachable(&e))?
            .with_timeout(REQUEST_TIMEOUT);
        let docker = docker
            .negotiate_version()
            .await
            .map_err(|e| unreachable(&e))?;
        docker.ping().await.map_err(|e| unreachable(&e))?;
        Ok(DockerExecutor {
            docker,
            root: root.into(),
            is_root: nix::unistd::geteuid().is_root(),
            ended: Default::default(),
            network: None,
        })
    }

    fn ended(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, RuntimeState>> {
        self.ended.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Plumbs containers of tasks with network attachments in `plane`'s map into its networks (root only).
    pub fn with_network(mut self, plane: crate::network::Plane) -> Self {
        self.network = Some(plane);
        self
    }

    /// The Docker client (tests inspect containers with it).
    pub fn client(&self) -> &Docker {
        &self.docker
    }

    /// Where host-side task files live.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn controller_for(
        &self,
        spec: ProcessSpec,
        adopted: bool,
    ) -> Result<DockerController, ExecError> {
        let mut spec = spec;
        spec.labels
            .insert(LABEL_ROOT.to_string(), self.root_label());
        DockerController::new(
            self.docker.clone(),
            files::TaskFiles::new(&self.root, &spec.task_id, self.is_root)?,
            spec,
            adopted,
            self.network.clone().filter(|n| self.is_root && n.enabled()),
        )
    }

    /// The value of [`LABEL_ROOT`] on this executor's containers.
    fn root_label(&self) -> String {
        self.root.to_string_lossy().into_owned()
    }

    /// This node's containers (by the root label) and what state each is in: a running one as the list says;
    /// an ended one inspected once for its exit status and remembered (an ended container does not change), so
    /// a list costs one Engine call however many exited containers are kept.
    async fn list_now(&self) -> Result<Vec<TaskInfo>, ExecError> {
        let filters = std::collections::HashMap::from([(
            "label".to_string(),
            vec![
                LABEL_TASK_ID.to_string(),
                format!("{LABEL_ROOT}={}", self.root_label()),
            ],
        )]);
        let opts = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let containers = self
            .docker
            .list_containers(Some(opts))
            .await
            .map_err(|e| map_err(e, "", "listing containers"))?;
        use bollard::models::ContainerSummaryStateEnum as S;
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for c in containers {
            let labels = c.labels.unwrap_or_default();
            let Some(task_id) = labels.get(LABEL_TASK_ID).cloned() else {
                continue;
            };
            let Some(id) = c.id else { continue };
            seen.insert(id.clone());
            let ended = matches!(c.state, Some(S::EXITED | S::DEAD));
            let known = ended.then(|| self.ended().get(&id).cloned()).flatten();
            let state = match (c.state, known) {
                (Some(S::RUNNING | S::PAUSED | S::RESTARTING), _) => RuntimeState::Running,
                (_, Some(state)) => state,
                _ => {
                    let info = match self
                        .docker
                        .inspect_container(&id, None::<InspectContainerOptions>)
                        .await
                    {
                        Ok(info) => info,
                        Err(e) if is_not_found(&e) => continue,
                        Err(e) => return Err(map_err(e, &task_id, "inspecting the container")),
                    };
                    let state = container::runtime_state(&info);
                    if ended && matches!(state, RuntimeState::Exited(_)) {
                        self.ended().insert(id.clone(), state.clone());
                    }
                    state
                }
            };
            out.push(TaskInfo {
                task_name: labels.get(LABEL_TASK_NAME).cloned().unwrap_or_default(),
                task_id,
                state,
            });
        }
        self.ended().retain(|id, _| seen.contains(id));
        out.sort_by(|a, b| a.task_id.cmp(&b.task_id));
        Ok(out)
    }
}

impl Executor for DockerExecutor {
    fn controller(&self, spec: ProcessSpec) -> Result<Box<dyn Controller>, ExecError> {
        Ok(Box::new(self.controller_for(spec, false)?))
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<TaskInfo>, ExecError>> {
        self.list_now().boxed()
    }

    fn adopt<'a>(
        &'a self,
        task_id: &'a str,
    ) -> BoxFuture<'a, Result<Box<dyn Controller>, ExecError>> {
        async move {
            let info = self
                .docker
                .inspect_container(&container_name(task_id), None::<InspectContainerOptions>)
                .await
                .map_err(|e| match is_not_found(&e) {
                    true => ExecError::NotFound(task_id.to_string()),
                    false => map_err(e, task_id, "inspecting the container"),
                })?;
            let spec = container::spec_of(task_id, &info)?;
            Ok(Box::new(self.controller_for(spec, true)?) as Box<dyn Controller>)
        }
        .boxed()
    }

    fn logs<'a>(
        &'a self,
        task_id: &'a str,
        opts: LogOptions,
    ) -> BoxFuture<'a, Result<LogLines, ExecError>> {
        async move { logs::container_logs(&self.docker, task_id, opts).await }.boxed()
    }
}

/// "cannot reach the Docker daemon at ADDR: ERR".
fn unreachable(addr: &str, e: &dyn std::fmt::Display) -> String {
    format!("cannot reach the Docker daemon at {addr}: {e}")
}

/// The HTTP status of a Docker error response, if it is one.
pub(crate) fn status_of(e: &bollard::errors::Error) -> Option<u16> {
    match e {
        bollard::errors::Error::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

pub(crate) fn is_not_found(e: &bollard::errors::Error) -> bool {
    status_of(e) == Some(404)
}

/// The daemon's message of an error response, or the error itself.
pub(crate) fn message_of(e: &bollard::errors::Error) -> String {
    match e {
        bollard::errors::Error::DockerResponseServerError { message, .. } => message.clone(),
        e => e.to_string(),
    }
}

/// Maps a Docker error of an operation on `task`: transport problems and server errors are
/// temporary (`Unavailable`: the daemon is down or struggling), client errors are permanent.
pub(crate) fn map_err(e: bollard::errors::Error, task: &str, context: &str) -> ExecError {
    match status_of(&e) {
        Some(code) if (400..500).contains(&code) => ExecError::InvalidSpec {
            task: task.to_string(),
            message: format!("{context}: {}", message_of(&e)),
        },
        Some(_) => ExecError::Unavailable(format!("{context}: {}", message_of(&e))),
        None => ExecError::Unavailable(unreachable(
            &daemon_address(),
            &format_args!("{context}: {e}"),
        )),
    }
}
