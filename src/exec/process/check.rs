//! Health check commands of a running task, in the task's context: the environment, working
//! directory and credentials the shim used (read back from `launch.json`, so adopted tasks work
//! too) and, when the task has its own mount namespace (root), that namespace, entered with
//! `setns` on `/proc/<pid>/ns/mnt` of the task's process in the check's pre-exec hook. When the
//! namespace cannot be opened the check runs in the host's, with the same environment. The check
//! runs in its own process group, which is killed when the check ends or exceeds its timeout.
//!
//! Must not: run a check for a task that is not running, leave a check's processes behind, or
//! keep more than [`CHECK_OUTPUT_LIMIT`] bytes of its output.

use std::fs::File;
use std::os::fd::AsFd;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::exec::{CheckResult, ExecError, CHECK_OUTPUT_LIMIT};

use super::controller::{observe, Observed, ProcessController};
use super::layout::{self, ProcRecord};
use super::lookup::{lookup_program, DEFAULT_PATH};
use super::shim::LaunchPlan;

/// How long output is still read after the check's process group was killed.
const DRAIN: Duration = Duration::from_secs(1);

/// SIGKILLs a check's process group when dropped: also when the check's future is dropped
/// mid-way (the task exited, the runner moved on).
struct GroupKill(Option<Pid>);

impl Drop for GroupKill {
    fn drop(&mut self) {
        if let Some(pg) = self.0 {
            let _ = killpg(pg, Signal::SIGKILL);
        }
    }
}

/// Reads at most [`CHECK_OUTPUT_LIMIT`] bytes and drains the rest.
async fn read_limited(mut r: impl AsyncRead + Unpin) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return kept,
            Ok(n) => {
                let room = CHECK_OUTPUT_LIMIT.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}

impl ProcessController {
    /// The task's process while it runs; `InvalidState` otherwise.
    fn running_record(&self) -> Result<ProcRecord, ExecError> {
        match observe(&self.dir)? {
            Observed::Running { task: Some(t) } if t.alive() => Ok(t),
            other => Err(ExecError::InvalidState {
                task: self.spec.task_id.clone(),
                op: "run a health check",
                state: format!("{:?}", other.runtime_state()),
            }),
        }
    }

    /// The task's mount namespace, when it has one and it can be opened.
    fn task_namespace(&self, plan: &LaunchPlan, task: &ProcRecord) -> Option<File> {
        if !(plan.namespace && self.is_root) {
            return None;
        }
        let path = format!("/proc/{}/ns/mnt", task.pid);
        match File::open(&path) {
            // The pid may have been reused between `observe` and `open`.
            Ok(f) if task.alive() => Some(f),
            Ok(_) => None,
            Err(e) => {
                tracing::debug!(task = %self.spec.task_name, error = %e,
                    "cannot enter the task's mount namespace; checking in the host's");
                None
            }
        }
    }

    pub(crate) async fn exec_check_now(
        &self,
        argv: &[String],
        timeout: Duration,
    ) -> Result<CheckResult, ExecError> {
        let task = self.running_record()?;
        let plan: LaunchPlan = layout::read_json(&self.dir.launch())?
            .ok_or_else(|| ExecError::NotFound(self.dir.launch().display().to_string()))?;
        let namespace = self.task_namespace(&plan, &task);
        let argv0 = argv.first().map(String::as_str).unwrap_or("");
        let path_var = plan
            .env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map_or(DEFAULT_PATH, |(_, v)| v.as_str());
        // A path inside the namespace (e.g. under /run/secrets) may not exist on the host: the
        // child's exec resolves it after entering the namespace.
        let program = if namespace.is_some() && argv0.contains('/') {
            plan.working_dir.join(argv0)
        } else {
            match lookup_program(argv0, path_var, &plan.working_dir) {
                Ok(p) => p,
                Err(e) => {
                    return Ok(CheckResult::Exited {
                        code: e.code,
                        output: e.message,
                    })
                }
            }
        };
        let cwd = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(
            plan.working_dir.as_os_str(),
        ))
        .map_err(|_| ExecError::InvalidSpec {
            task: plan.task_name.clone(),
            message: "working dir contains NUL".into(),
        })?;
        let creds = plan.credentials.clone();
        let gids: Vec<nix::unistd::Gid> = creds
            .iter()
            .flat_map(|c| c.groups.iter().map(|g| nix::unistd::Gid::from_raw(*g)))
            .collect();

        let mut cmd = tokio::process::Command::new(&program);
        cmd.arg0(argv0)
            .args(argv.iter().skip(1))
            .env_clear()
            .envs(plan.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        // SAFETY: the closure runs in the forked child before exec and only makes system calls
        // on data prepared above (no allocation, no locks).
        unsafe {
            cmd.pre_exec(move || {
                let errno = |e: nix::Error| std::io::Error::from_raw_os_error(e as i32);
                if let Some(ns) = &namespace {
                    nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNS)
                        .map_err(errno)?;
                }
                if let Some(c) = &creds {
                    nix::unistd::setgroups(&gids).map_err(errno)?;
                    nix::unistd::setgid(nix::unistd::Gid::from_raw(c.gid)).map_err(errno)?;
                    nix::unistd::setuid(nix::unistd::Uid::from_raw(c.uid)).map_err(errno)?;
                }
                nix::unistd::chdir(cwd.as_c_str()).map_err(errno)
            });
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                let (code, output) = match e.kind() {
                    std::io::ErrorKind::NotFound => (
                        crate::exec::EXIT_NOT_FOUND,
                        format!("exec: \"{argv0}\": no such file or directory"),
                    ),
                    _ => (
                        crate::exec::EXIT_NOT_EXECUTABLE,
                        format!("exec: \"{argv0}\": {e}"),
                    ),
                };
                return Ok(CheckResult::Exited { code, output });
            }
        };
        let group = GroupKill(child.id().map(|p| Pid::from_raw(p as i32)));
        let out = child.stdout.take().map(|o| tokio::spawn(read_limited(o)));
        let err = child.stderr.take().map(|e| tokio::spawn(read_limited(e)));
        let waited = tokio::time::timeout(timeout, child.wait()).await;
        // Like the task's own process group: nothing of the check survives it.
        drop(group);
        let status = match waited {
            Ok(Ok(status)) => status,
            Ok(Err(e)) => return Err(ExecError::io("waiting for a health check", e)),
            Err(_) => {
                let _ = child.wait().await;
                return Ok(CheckResult::TimedOut { timeout });
            }
        };
        let mut output = Vec::new();
        for reader in [out, err].into_iter().flatten() {
            if let Ok(Ok(bytes)) = tokio::time::timeout(DRAIN, reader).await {
                output.extend_from_slice(&bytes);
            }
        }
        output.truncate(CHECK_OUTPUT_LIMIT);
        use std::os::unix::process::ExitStatusExt;
        let code = status
            .code()
            .or(status.signal().map(|s| 128 + s))
            .unwrap_or(-1);
        Ok(CheckResult::Exited {
            code,
            output: String::from_utf8_lossy(&output).into_owned(),
        })
    }
}
