//! Health check commands of a running task, in the task's context: the environment, working
//! directory and credentials the shim used (read back from `launch.json`, so adopted tasks work
//! too) and, when the task is isolated (root), its namespaces, cgroup and capabilities like
//! `docker exec`: the PID namespace entered (`setns` on `/proc/<init>/ns/pid`) on a short-lived
//! thread that spawns the check, the mount namespace in the check's pre-exec hook, then the
//! task's cgroup, capability set and `no_new_privs`. When the namespaces cannot be opened the
//! check runs in the host's, with the same environment. The check runs in its own process group,
//! which is killed when the check ends or exceeds its timeout.
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

use super::caps;
use super::cgroup;
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

/// Spawns `cmd`, as a child in the PID namespace `pid_ns` when given: a thread of its own enters
/// it (only its children land there) and ends right after the spawn.
async fn spawn_in(
    mut cmd: tokio::process::Command,
    pid_ns: Option<File>,
) -> std::io::Result<tokio::process::Child> {
    let Some(ns) = pid_ns else {
        return cmd.spawn();
    };
    let handle = tokio::runtime::Handle::current();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _entered = handle.enter();
        let result = nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWPID)
            .map_err(std::io::Error::from)
            .and_then(|()| cmd.spawn());
        let _ = tx.send(result);
    });
    rx.await
        .unwrap_or_else(|_| Err(std::io::Error::other("the spawning thread died")))
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

    /// The task's `(mount, PID)` namespaces, when it has them and they can be opened.
    fn task_namespace(&self, plan: &LaunchPlan, task: &ProcRecord) -> Option<(File, File)> {
        if !(plan.namespace && self.is_root) {
            return None;
        }
        let open = |ns: &str| File::open(format!("/proc/{}/ns/{ns}", task.pid));
        match open("mnt").and_then(|m| open("pid").map(|p| (m, p))) {
            // The pid may have been reused between `observe` and `open`.
            Ok(f) if task.alive() => Some(f),
            Ok(_) => None,
            Err(e) => {
                tracing::debug!(task = %self.spec.task_name, error = %e,
                    "cannot enter the task's namespaces; checking in the host's");
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
        let (namespace, pid_ns) = self.task_namespace(&plan, &task).unzip();
        // a task with a network namespace of its own is checked in it (`curl localhost` means the task's)
        let net_ns = namespace
            .as_ref()
            .filter(|_| plan.network)
            .and_then(|_| File::open(format!("/proc/{}/ns/net", task.pid)).ok());
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
        let caps = plan
            .caps
            .filter(|_| namespace.is_some())
            .map(|set| (set, caps::last_cap()));
        let cgroup_procs = match &namespace {
            Some(_) => cgroup::procs_of(&self.spec.task_id),
            None => Vec::new(),
        };

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
                if let Some(ns) = &net_ns {
                    nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                        .map_err(errno)?;
                }
                if let Some(ns) = &namespace {
                    nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNS)
                        .map_err(errno)?;
                }
                for fd in &cgroup_procs {
                    nix::unistd::write(fd, b"0").map_err(errno)?;
                }
                if let Some((set, last)) = caps {
                    caps::drop_bounding(set, last)?;
                }
                if let Some(c) = &creds {
                    nix::unistd::setgroups(&gids).map_err(errno)?;
                    nix::unistd::setgid(nix::unistd::Gid::from_raw(c.gid)).map_err(errno)?;
                    nix::unistd::setuid(nix::unistd::Uid::from_raw(c.uid)).map_err(errno)?;
                }
                if let Some((set, _)) = caps {
                    caps::restrict(set, nix::unistd::geteuid().is_root())?;
                }
                nix::unistd::chdir(cwd.as_c_str()).map_err(errno)
            });
        }
        let mut child = match spawn_in(cmd, pid_ns).await {
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
