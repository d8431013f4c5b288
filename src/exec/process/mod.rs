//! # process — the embedded default executor (Linux)
//!
//! Runs each task as a real process under a per-task shim (see [`shim`]) so that tasks survive a
//! crash of the daemon and are re-adopted with their exit code. Each task owns `<root>/<task_id>/`
//! (see `layout`): `spec.json`, `launch.json`, `shim.json`, `pid.json`, `exit.json`,
//! `stdout.log`, `stderr.log`, `shim.log`, `secrets/` (tmpfs) and `configs/`. Health checks run
//! in the task's context, inside its namespaces and cgroup when it has them (see `check`).
//!
//! When the daemon is root every task is isolated like a container: its own PID namespace (an
//! init of the shim's as pid 1, see `spawn`) with its own `/proc`, its own mount namespace in
//! which the state dir, the control socket and other tasks' directories are hidden and the host's
//! file system is read-only (see `sandbox`), Docker's default capabilities with the spec's
//! `cap_add` / `cap_drop` and `no_new_privs` (see `caps`), and a cgroup enforcing its limits and
//! telling an OOM kill (see `cgroup`). [`ProcessExecutor::isolation_gaps`] says what is missing.
//! A task with network attachments in the node's map also gets a network namespace of its own: the
//! shim's init unshares it and waits while the daemon plumbs it by init's pid (`netns.json`, answered
//! in `network.done`, see `controller`), and `/etc/resolv.conf` names its network's gateway.
//!
//! Must not: know the model or store types, keep per-task state only in memory (everything a
//! restarted daemon needs is in the task directory), or write secret data to persistent disk.

mod caps;
mod cgroup;
mod check;
mod controller;
mod layout;
mod logs;
pub mod lookup;
mod mounts;
mod sandbox;
pub mod shim;
mod spawn;
pub mod user;

#[cfg(test)]
mod isolation_tests;
#[cfg(test)]
mod network_tests;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use futures::future::BoxFuture;
use futures::FutureExt;

/// Kept so `exec::process::LOST_MESSAGE` still names it: it belongs to the executor interface.
pub use crate::exec::LOST_MESSAGE;
pub use caps::check_name as check_capability;
pub use controller::ProcessController;
pub use shim::{maybe_run_shim, shim_main, ShimCommand, SHIM_ARG, SHIM_ENV};

use crate::exec::{Controller, ExecError, Executor, LogLines, LogOptions, ProcessSpec, TaskInfo};

use controller::{observe, stop_signal_of};
use layout::TaskDir;

/// Runs tasks as processes under `<root>/<task_id>/`.
#[derive(Clone, Debug)]
pub struct ProcessExecutor {
    root: PathBuf,
    shim: ShimCommand,
    is_root: bool,
    /// Paths no task may see (always the root itself).
    hidden: Vec<PathBuf>,
    /// The node's network layer: a task with attachments gets its own network namespace (root).
    network: Option<crate::network::Plane>,
}

impl ProcessExecutor {
    /// An executor keeping its tasks under `root` (created on first prepare) and starting shims
    /// with `shim` (in `swarmd`: [`ShimCommand::current_exe`]).
    pub fn new(root: impl Into<PathBuf>, shim: ShimCommand) -> Self {
        let root = root.into();
        ProcessExecutor {
            hidden: vec![root.clone()],
            root,
            shim,
            is_root: nix::unistd::geteuid().is_root(),
            network: None,
        }
    }

    /// Gives tasks with network attachments in `plane`'s map a network namespace of their own, plumbed
    /// before they start (root only; without root, or without attachments, a task shares the host's network).
    pub fn with_network(mut self, plane: crate::network::Plane) -> Self {
        self.network = Some(plane);
        self
    }

    /// Also hides `path` from every task (when root): `swarmd` passes its state directory, which
    /// holds the keys, the Raft data and the control socket.
    pub fn hiding(mut self, path: impl Into<PathBuf>) -> Self {
        self.hidden.push(path.into());
        self
    }

    /// What tasks will not get on this host, one sentence each (empty when they are isolated
    /// like containers): `swarmd` logs it once at start.
    pub fn isolation_gaps(&self) -> Vec<String> {
        if !self.is_root {
            return vec![
                "swarmd is not running as root: tasks run as swarmd's user in the host's mount and PID \
                 namespaces (they can see the state dir's files that user can read, the control socket and \
                 other tasks' processes), with swarmd's capabilities, and their resource limits are not \
                 enforced"
                    .to_string(),
            ];
        }
        cgroup::gaps()
    }

    /// Behaves as if not running as root (no tmpfs mount, namespace or user switch): tests
    /// exercise the unprivileged paths with it.
    #[cfg(test)]
    pub(crate) fn unprivileged(mut self) -> Self {
        self.is_root = false;
        self
    }

    /// Where task directories live.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn controller_for(
        &self,
        spec: ProcessSpec,
        adopted: bool,
    ) -> Result<ProcessController, ExecError> {
        let dir = TaskDir::new(&self.root, &spec.task_id)?;
        let stop_signal = stop_signal_of(&spec)?;
        Ok(ProcessController {
            spec,
            dir,
            root: self.root.clone(),
            shim: self.shim.clone(),
            is_root: self.is_root,
            hidden: self.hidden.clone(),
            stop_signal,
            adopted,
            network: self.network.clone(),
        })
    }

    fn read_spec(&self, task_id: &str) -> Result<(TaskDir, ProcessSpec), ExecError> {
        let dir = TaskDir::new(&self.root, task_id)?;
        let spec = layout::read_json::<ProcessSpec>(&dir.spec())?
            .ok_or_else(|| ExecError::NotFound(task_id.to_string()))?;
        Ok((dir, spec))
    }

    fn list_now(&self) -> Result<Vec<TaskInfo>, ExecError> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(ExecError::io(format!("listing {}", self.root.display()), e)),
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let Some(task_id) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            match self.read_spec(&task_id) {
                Ok((dir, spec)) => {
                    let state = observe(&dir)?.runtime_state();
                    out.push(TaskInfo {
                        task_id,
                        task_name: spec.task_name,
                        state,
                    });
                }
                Err(e) => {
                    tracing::debug!(task_id, error = %e, "skipping task directory without a spec")
                }
            }
        }
        out.sort_by(|a, b| a.task_id.cmp(&b.task_id));
        Ok(out)
    }
}

impl Executor for ProcessExecutor {
    fn controller(&self, spec: ProcessSpec) -> Result<Box<dyn Controller>, ExecError> {
        Ok(Box::new(self.controller_for(spec, false)?))
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<TaskInfo>, ExecError>> {
        async move { self.list_now() }.boxed()
    }

    fn adopt<'a>(
        &'a self,
        task_id: &'a str,
    ) -> BoxFuture<'a, Result<Box<dyn Controller>, ExecError>> {
        async move {
            let (_, spec) = self.read_spec(task_id)?;
            Ok(Box::new(self.controller_for(spec, true)?) as Box<dyn Controller>)
        }
        .boxed()
    }

    fn logs<'a>(
        &'a self,
        task_id: &'a str,
        opts: LogOptions,
    ) -> BoxFuture<'a, Result<LogLines, ExecError>> {
        async move {
            let dir = TaskDir::new(&self.root, task_id)?;
            if !dir.path().is_dir() {
                return Err(ExecError::NotFound(task_id.to_string()));
            }
            logs::read_logs(dir, opts)
        }
        .boxed()
    }
}
