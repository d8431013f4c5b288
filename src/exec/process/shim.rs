//! The shim: a small supervisor process per task, started by the daemon as
//! `<swarmd> __shim <task-dir>` in its own session. It is the real parent of the task process
//! (spawned in its own process group, with the task's environment, credentials and mount
//! namespace), records the task's pid and start time, waits for it, kills what is left of its
//! process group and writes `exit.json` atomically, so that a task outlives a crash of the daemon
//! and its exit code is never lost.
//!
//! Must not: talk to the daemon (everything goes through files in the task directory), read
//! secret data, or run any async runtime.

use std::ffi::OsString;
use std::fs;
use std::io::Write;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use crate::exec::{ExecError, ExitStatus, EXIT_NOT_EXECUTABLE, EXIT_NOT_FOUND};

use super::layout::{self, ProcRecord, TaskDir};
use super::mounts::{apply_namespace, plan_namespace, MountStep};
use super::user::Credentials;

/// The hidden first argument that makes `swarmd` run as a shim.
pub const SHIM_ARG: &str = "__shim";
/// Environment variable carrying the task directory to the shim (set next to the argument).
pub const SHIM_ENV: &str = "SWARM_SHIM_TASK_DIR";

/// Everything the shim needs to start the task, resolved by the daemon at `start`
/// (`launch.json`; holds no secret data).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct LaunchPlan {
    pub(crate) version: u32,
    pub(crate) task_name: String,
    /// Absolute path of the program.
    pub(crate) program: PathBuf,
    /// argv as given; `argv[0]` is passed as is.
    pub(crate) argv: Vec<String>,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) working_dir: PathBuf,
    /// Set only when the task must switch user (the daemon is root).
    pub(crate) credentials: Option<Credentials>,
    /// Run in a private mount namespace (root only).
    pub(crate) namespace: bool,
    pub(crate) has_secrets: bool,
    /// Configs with absolute targets (data is in `configs/`), for binding in the namespace.
    pub(crate) absolute_configs: Vec<String>,
}

/// The command the daemon runs to start a shim: `program args… <task-dir>`.
#[derive(Clone, Debug)]
pub struct ShimCommand {
    /// Executable (normally `swarmd` itself).
    pub program: PathBuf,
    /// Leading arguments (normally `["__shim"]`); the task directory is appended.
    pub args: Vec<OsString>,
}

impl ShimCommand {
    /// `<current executable> __shim`: what `swarmd` uses.
    pub fn current_exe() -> Result<Self, ExecError> {
        let program = std::env::current_exe()
            .map_err(|e| ExecError::io("locating the swarmd executable", e))?;
        Ok(ShimCommand {
            program,
            args: vec![SHIM_ARG.into()],
        })
    }
}

/// Call first thing in `main`: when the process was started as `<exe> __shim <task-dir>`, runs
/// the shim and never returns; otherwise returns at once.
pub fn maybe_run_shim() {
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() == Some(std::ffi::OsStr::new(SHIM_ARG)) {
        match args.next() {
            Some(dir) => shim_main(Path::new(&dir)),
            None => {
                eprintln!("usage: swarmd {SHIM_ARG} <task-dir>");
                std::process::exit(2)
            }
        }
    }
}

/// Runs the shim for the task in `task_dir` and exits the process.
pub fn shim_main(task_dir: &Path) -> ! {
    // Leave the daemon's session first thing: the daemon spawns us without a pre-exec hook (so the spawn is a
    // vfork-like posix_spawn, not a fork copying the daemon's page tables), and a shim must outlive the daemon
    // and its terminal.
    let _ = nix::unistd::setsid();
    let dir = TaskDir::at(task_dir.to_path_buf());
    let code = match run(&dir) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("swarm shim {}: {e}", task_dir.display());
            // Whatever went wrong, the daemon must learn that the task is not running.
            let status = ExitStatus::failed(Some(EXIT_NOT_EXECUTABLE), format!("shim: {e}"));
            let _ = layout::write_exit(&dir, &status);
            1
        }
    };
    let _ = std::io::stderr().flush();
    std::process::exit(code)
}

fn open_log(path: &Path) -> Result<fs::File, ExecError> {
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| ExecError::io(format!("opening {}", path.display()), e))
}

fn run(dir: &TaskDir) -> Result<(), ExecError> {
    // The daemon records us too, but it may crash before it does.
    if let Some(me) = ProcRecord::of(std::process::id() as i32) {
        layout::write_json_atomic(&dir.shim(), &me)
            .map_err(|e| ExecError::io(format!("writing {}", dir.shim().display()), e))?;
    }
    let plan: LaunchPlan = layout::read_json(&dir.launch())?
        .ok_or_else(|| ExecError::NotFound(dir.launch().display().to_string()))?;
    let steps: Vec<MountStep> = if plan.namespace {
        let configs: Vec<crate::exec::FileMount> = plan
            .absolute_configs
            .iter()
            .map(|t| crate::exec::FileMount {
                target: t.clone(),
                data: Vec::new(),
                uid: 0,
                gid: 0,
                mode: 0,
            })
            .collect();
        plan_namespace(dir, plan.has_secrets, &configs)?
    } else {
        Vec::new()
    };
    let creds = plan.credentials.clone();
    let gids: Vec<nix::unistd::Gid> = creds
        .iter()
        .flat_map(|c| c.groups.iter().map(|g| nix::unistd::Gid::from_raw(*g)))
        .collect();
    let cwd = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(
        plan.working_dir.as_os_str(),
    ))
    .map_err(|_| ExecError::InvalidSpec {
        task: plan.task_name.clone(),
        message: "working dir contains NUL".into(),
    })?;

    let mut cmd = Command::new(&plan.program);
    let argv0 = plan.argv.first().cloned().unwrap_or_default();
    cmd.arg0(&argv0)
        .args(plan.argv.iter().skip(1))
        .env_clear()
        .envs(plan.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(open_log(&dir.stdout())?)
        .stderr(open_log(&dir.stderr())?)
        .process_group(0);
    let namespace = plan.namespace;
    // As root, a task whose service sets `hostname` (the agent passes it as HOSTNAME) gets its own UTS
    // namespace with that name, so `hostname` in the task answers like in a container.
    let hostname: Option<std::ffi::OsString> = if nix::unistd::geteuid().is_root() {
        plan.env
            .iter()
            .find(|(k, _)| k == "HOSTNAME")
            .map(|(_, v)| v.into())
    } else {
        None
    };
    // SAFETY: the closure runs in the forked child before exec and only makes system calls on
    // data prepared above (no allocation, no locks).
    unsafe {
        cmd.pre_exec(move || {
            if namespace {
                apply_namespace(&steps)?;
            }
            if let Some(h) = &hostname {
                let errno = |e: nix::Error| std::io::Error::from_raw_os_error(e as i32);
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUTS).map_err(errno)?;
                nix::unistd::sethostname(h).map_err(errno)?;
            }
            if let Some(c) = &creds {
                let errno = |e: nix::Error| std::io::Error::from_raw_os_error(e as i32);
                nix::unistd::setgroups(&gids).map_err(errno)?;
                nix::unistd::setgid(nix::unistd::Gid::from_raw(c.gid)).map_err(errno)?;
                nix::unistd::setuid(nix::unistd::Uid::from_raw(c.uid)).map_err(errno)?;
            }
            nix::unistd::chdir(cwd.as_c_str())
                .map_err(|e| std::io::Error::from_raw_os_error(e as i32))
        });
    }
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            let (code, message) = match e.kind() {
                std::io::ErrorKind::NotFound => (
                    EXIT_NOT_FOUND,
                    format!(
                        "exec: \"{argv0}\": stat {}: no such file or directory",
                        plan.program.display()
                    ),
                ),
                std::io::ErrorKind::PermissionDenied => (
                    EXIT_NOT_EXECUTABLE,
                    format!("exec: \"{argv0}\": permission denied"),
                ),
                _ => (EXIT_NOT_EXECUTABLE, format!("exec: \"{argv0}\": {e}")),
            };
            return layout::write_exit(dir, &ExitStatus::failed(Some(code), message));
        }
    };
    let pid = child.id() as i32;
    if let Some(rec) = ProcRecord::of(pid) {
        layout::write_json_atomic(&dir.pid(), &rec)
            .map_err(|e| ExecError::io(format!("writing {}", dir.pid().display()), e))?;
    }
    let status = loop {
        match child.wait() {
            Ok(s) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ExecError::io("waiting for the task", e)),
        }
    };
    // Like a container whose init exits: nothing of the task's process group survives it.
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
    let exit = match (status.code(), status.signal()) {
        (Some(code), _) => ExitStatus::exited(code),
        (None, Some(sig)) => ExitStatus::signaled(sig),
        (None, None) => ExitStatus::failed(None, "unknown exit status"),
    };
    layout::write_exit(dir, &exit)
}
