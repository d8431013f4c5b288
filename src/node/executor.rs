//! The task runtimes a node starts with (`--executor process,docker`), given the node's network plane.

use std::sync::Arc;

use crate::exec::process::{ProcessExecutor, ShimCommand};
use crate::exec::select::SelectExecutor;
use crate::exec::Executor;

use super::{netplane, NodeConfig, NodeError};

/// Which task runtime to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecutorKind {
    /// Local processes (the embedded default).
    Process,
    /// Docker containers.
    Docker,
}

impl ExecutorKind {
    /// The name a task's `com.swarm.executor` label and `swarmd --executor` use.
    pub fn name(self) -> &'static str {
        match self {
            ExecutorKind::Process => "process",
            ExecutorKind::Docker => "docker",
        }
    }

    /// `process` or `docker`.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "process" => Some(ExecutorKind::Process),
            "docker" => Some(ExecutorKind::Docker),
            _ => None,
        }
    }
}

/// The executors `config` names, behind one [`SelectExecutor`] (each task on the runtime its
/// `com.swarm.executor` label names, the first by default), their tasks plumbed through `net`.
pub(crate) async fn open_executor(
    config: &NodeConfig,
    net: &netplane::NodeNetwork,
) -> Result<Arc<dyn Executor>, NodeError> {
    let mut runtimes = Vec::new();
    for kind in &config.executors {
        if runtimes.iter().any(|(n, _)| n == kind.name()) {
            continue;
        }
        runtimes.push((kind.name().to_string(), open_one(*kind, config, net).await?));
    }
    if runtimes.is_empty() {
        return Err(NodeError::Exec("no executor given".into()));
    }
    Ok(Arc::new(SelectExecutor::new(runtimes)))
}

async fn open_one(
    kind: ExecutorKind,
    config: &NodeConfig,
    net: &netplane::NodeNetwork,
) -> Result<Arc<dyn Executor>, NodeError> {
    let dir = &config.state_dir;
    Ok(match kind {
        ExecutorKind::Process => {
            let shim = ShimCommand::current_exe().map_err(|e| NodeError::Exec(e.to_string()))?;
            // Absolute: the task's mount namespace covers these paths.
            let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.clone());
            let exec = ProcessExecutor::new(dir.join("tasks"), shim)
                .hiding(dir)
                .with_network(net.plane());
            // Said once: what a task is not isolated from on this host.
            for gap in exec.isolation_gaps() {
                tracing::warn!("task isolation: {gap}");
            }
            Arc::new(exec)
        }
        #[cfg(feature = "docker")]
        ExecutorKind::Docker => Arc::new(
            crate::exec::docker::DockerExecutor::connect(dir.join("docker"))
                .await
                .map_err(|e| match e {
                    crate::exec::ExecError::Unavailable(m) => NodeError::Exec(m),
                    e => NodeError::Exec(e.to_string()),
                })?
                .with_network(net.plane()),
        ),
        #[cfg(not(feature = "docker"))]
        ExecutorKind::Docker => {
            return Err(NodeError::Exec(
                "this swarmd was built without the docker feature: use --executor process".into(),
            ))
        }
    })
}
