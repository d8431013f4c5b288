//! The task runtime a node starts with (`--executor`), given the node's network plane.

use std::sync::Arc;

use crate::exec::process::{ProcessExecutor, ShimCommand};
use crate::exec::Executor;

use super::{netplane, ExecutorKind, NodeConfig, NodeError};

/// The executor `config` names, its tasks plumbed through `net`.
pub(crate) async fn open_executor(
    config: &NodeConfig,
    net: &netplane::NodeNetwork,
) -> Result<Arc<dyn Executor>, NodeError> {
    let dir = &config.state_dir;
    Ok(match config.executor {
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
