//! The shim: a small supervisor process per task, started by the daemon as
//! `<swarmd> __shim <task-dir>` in its own session. It is the real parent of the task (when root:
//! of the task's init, in the task's own PID and mount namespaces, see [`super::spawn`]), creates
//! the task's cgroup with its limits (root), records the pid it waits for and its start time,
//! waits, kills what is left of the task's process group (and namespace, and cgroup), reports an
//! OOM kill like Docker, and writes `exit.json` atomically, so that a task outlives a crash of the
//! daemon and its exit code is never lost. A SIGTERM (or SIGINT, SIGHUP) of the shim stops the
//! task as `shutdown` does (its stop signal, the grace period, SIGKILL) before the shim exits.
//!
//! Must not: talk to the daemon (everything goes through files in the task directory), read
//! secret data, or run any async runtime.

use std::ffi::OsString;
use std::fs;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::{Duration, Instant};

use nix::libc;
use serde::{Deserialize, Serialize};

use crate::exec::{
    ExecError, ExitStatus, Limits, EXIT_NOT_EXECUTABLE, EXIT_NOT_FOUND, EXIT_START_FAILED,
};

use super::cgroup::TaskCgroup;
use super::layout::{self, ProcRecord, TaskDir};
use super::mounts::plan_namespace;
use super::sandbox::plan_isolation;
use super::spawn::{self, Exec, Sandbox, Stage, StartError, Started, SHIM_SIGNALS};
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
    /// Isolated (root only): own PID, mount (and UTS) namespaces, capabilities, cgroup.
    pub(crate) namespace: bool,
    pub(crate) has_secrets: bool,
    /// Configs with absolute targets (data is in `configs/`), for binding in the namespace.
    pub(crate) absolute_configs: Vec<String>,
    /// Paths the task must not see (swarmd's state dir, the executor's root).
    #[serde(default)]
    pub(crate) hidden: Vec<PathBuf>,
    /// The capabilities the task keeps (root only).
    #[serde(default)]
    pub(crate) caps: Option<u64>,
    /// Enforced through the task's cgroup (root only).
    #[serde(default)]
    pub(crate) limits: Limits,
    /// Signal number sent first when the shim is told to stop (0: SIGTERM).
    #[serde(default)]
    pub(crate) stop_signal: i32,
    /// Time between the stop signal and SIGKILL when the shim is told to stop.
    #[serde(default)]
    pub(crate) stop_grace_ms: u64,
    /// A network namespace of its own (root, a task with network attachments): the task starts once the
    /// daemon has plumbed it (see [`wait_for_plumbing`]).
    #[serde(default)]
    pub(crate) network: bool,
    /// `resolv.conf` of the task directory bound onto `/etc/resolv.conf`.
    #[serde(default)]
    pub(crate) resolv_conf: bool,
}

/// How long the shim waits for the daemon to plumb the task's network namespace.
const PLUMB_TIMEOUT: Duration = Duration::from_secs(60);

/// In the shim, once init's network namespace exists: records init in `netns.json` for the daemon, which
/// plumbs `/proc/<init>/ns/net` and answers in `network.done` (`ok` or the error); a stop of the shim or no
/// answer within [`PLUMB_TIMEOUT`] fails the start.
fn wait_for_plumbing(dir: &TaskDir, init: i32) -> Result<(), String> {
    let rec = ProcRecord::of(init).ok_or("the task's init ended before its network was plumbed")?;
    layout::write_json_atomic(&dir.netns(), &rec)
        .map_err(|e| format!("writing {}: {e}", dir.netns().display()))?;
    let deadline = Instant::now() + PLUMB_TIMEOUT;
    loop {
        match fs::read_to_string(dir.network_done()) {
            Ok(answer) if answer.trim() == "ok" => return Ok(()),
            Ok(answer) if !answer.is_empty() => return Err(answer.trim().to_string()),
            _ => {}
        }
        if STOP.load(Ordering::SeqCst) {
            return Err("stopped before the network was plumbed".into());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "swarmd did not plumb the task's network within {}s",
                PLUMB_TIMEOUT.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
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

/// Set by the shim's signal handler.
static STOP: AtomicBool = AtomicBool::new(false);
/// The write end of the shim's self-pipe, woken by the signal handler.
static WAKE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_stop(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
    let fd = WAKE.load(Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: write(2) is async-signal-safe; one byte from a static.
        unsafe { libc::write(fd, c"x".as_ptr().cast(), 1) };
    }
}

/// Installs the stop handler (without SA_RESTART, so a blocking call returns EINTR) and returns
/// the read end of the self-pipe it writes to.
fn install_stop_handler() -> Result<OwnedFd, ExecError> {
    use nix::fcntl::OFlag;
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
        .map_err(|e| ExecError::sys("creating the shim's signal pipe", e))?;
    WAKE.store(w.as_raw_fd(), Ordering::SeqCst);
    std::mem::forget(w); // lives as long as the process
    let action = SigAction::new(
        SigHandler::Handler(on_stop),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for s in SHIM_SIGNALS {
        let sig = Signal::try_from(s).map_err(|e| ExecError::sys("stop signal", e))?;
        // SAFETY: the handler only touches atomics and calls write(2).
        unsafe { sigaction(sig, &action) }
            .map_err(|e| ExecError::sys("installing the stop handler", e))?;
    }
    Ok(r)
}

fn run(dir: &TaskDir) -> Result<(), ExecError> {
    let wake = install_stop_handler()?;
    // The daemon records us too, but it may crash before it does.
    if let Some(me) = ProcRecord::of(std::process::id() as i32) {
        layout::write_json_atomic(&dir.shim(), &me)
            .map_err(|e| ExecError::io(format!("writing {}", dir.shim().display()), e))?;
    }
    let plan: LaunchPlan = layout::read_json(&dir.launch())?
        .ok_or_else(|| ExecError::NotFound(dir.launch().display().to_string()))?;
    let task_id = dir
        .path()
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("task")
        .to_string();
    let cgroup = if plan.namespace {
        match TaskCgroup::create(&task_id, &plan.limits) {
            Ok(cg) => Some(cg),
            Err(e) if plan.limits.is_none() => {
                eprintln!("the task runs without a cgroup of its own: {e}");
                None
            }
            Err(e) => {
                let m = format!("enforcing the task's resource limits: {e}");
                return layout::write_exit(dir, &ExitStatus::failed(Some(EXIT_START_FAILED), m));
            }
        }
    } else {
        None
    };
    let result = supervise(dir, &plan, cgroup.as_ref(), &wake);
    let oom = cgroup.as_ref().is_some_and(TaskCgroup::oom_killed);
    if let Some(cg) = &cgroup {
        cg.remove();
    }
    match result? {
        Some(mut exit) => {
            if oom {
                let code = exit.code.or(exit.signal.map(|s| 128 + s)).unwrap_or(137);
                exit = ExitStatus::oom_killed(code);
            }
            layout::write_exit(dir, &exit)
        }
        None => Ok(()),
    }
}

fn start_message(plan: &LaunchPlan, e: &StartError, sandbox: Option<&Sandbox>) -> (i32, String) {
    let argv0 = plan.argv.first().cloned().unwrap_or_default();
    match (e.stage, e.error.kind()) {
        (Stage::Exec, std::io::ErrorKind::NotFound) => (
            EXIT_NOT_FOUND,
            format!(
                "exec: \"{argv0}\": stat {}: no such file or directory",
                plan.program.display()
            ),
        ),
        (Stage::Exec, std::io::ErrorKind::PermissionDenied) => (
            EXIT_NOT_EXECUTABLE,
            format!("exec: \"{argv0}\": permission denied"),
        ),
        (Stage::Exec, _) => (
            EXIT_NOT_EXECUTABLE,
            format!("exec: \"{argv0}\": {}", e.error),
        ),
        (Stage::Chdir, _) => (
            EXIT_START_FAILED,
            format!(
                "chdir to cwd (\"{}\") set in config.json failed: {}",
                plan.working_dir.display(),
                e.error
            ),
        ),
        (Stage::Network, _) => (
            EXIT_START_FAILED,
            format!("setting up the task's network: {}", e.error),
        ),
        (Stage::Credentials, _) => (
            EXIT_START_FAILED,
            format!("setting the task's user and capabilities: {}", e.error),
        ),
        (Stage::Isolation, _) => {
            let step = e
                .step
                .and_then(|i| sandbox.and_then(|sb| sb.steps.get(i)))
                .map(|s| format!(" ({s:?})"))
                .unwrap_or_default();
            (
                EXIT_START_FAILED,
                format!(
                    "setting up the task's namespaces and mounts{step}: {}",
                    e.error
                ),
            )
        }
    }
}

/// Starts the task and waits for it; `Some(status)` to record, `None` when `exit.json` was
/// written already.
fn supervise(
    dir: &TaskDir,
    plan: &LaunchPlan,
    cgroup: Option<&TaskCgroup>,
    wake: &OwnedFd,
) -> Result<Option<ExitStatus>, ExecError> {
    let sandbox = if plan.namespace {
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
        let mut steps = plan_namespace(dir, plan.has_secrets, &configs, plan.resolv_conf)?;
        steps.extend(plan_isolation(
            dir,
            &plan.hidden,
            plan.has_secrets,
            dir.configs().is_dir(),
            &plan.working_dir,
        )?);
        // A task whose service sets `hostname` (the agent passes it as HOSTNAME) gets that name
        // in its own UTS namespace, so `hostname` in the task answers like in a container.
        let hostname = plan
            .env
            .iter()
            .find(|(k, _)| k == "HOSTNAME")
            .and_then(|(_, v)| std::ffi::CString::new(v.as_str()).ok());
        let cgroup_procs = match cgroup.map(TaskCgroup::procs_files).transpose() {
            Ok(fds) => fds.unwrap_or_default(),
            Err(m) => return Ok(Some(ExitStatus::failed(Some(EXIT_START_FAILED), m))),
        };
        Some(Sandbox {
            steps,
            hostname,
            cgroup_procs,
            new_net: plan.network,
        })
    } else {
        None
    };
    let exec = Exec::new(
        &plan.program,
        &plan.argv,
        &plan.env,
        &plan.working_dir,
        plan.credentials.as_ref(),
        plan.caps,
        open_log(&dir.stdout())?.into(),
        open_log(&dir.stderr())?.into(),
    )
    .map_err(|e| ExecError::io("preparing the task's command", e))?;
    let mut plumb = |init: i32| wait_for_plumbing(dir, init);
    let started = match spawn::spawn(&exec, sandbox.as_ref(), &mut plumb)
        .map_err(|e| ExecError::io("starting the task", e))?
    {
        Ok(s) => s,
        Err(e) => {
            let (code, message) = start_message(plan, &e, sandbox.as_ref());
            return Ok(Some(ExitStatus::failed(Some(code), message)));
        }
    };
    drop(sandbox); // the shim keeps no cgroup.procs file open
    if let Some(rec) = ProcRecord::of(started.pid) {
        layout::write_json_atomic(&dir.pid(), &rec)
            .map_err(|e| ExecError::io(format!("writing {}", dir.pid().display()), e))?;
    }
    let waited = wait_or_stop(&started, plan, wake)?;
    // Like a container whose init exits: nothing of the task's process group survives it.
    let _ = killpg(started.pid, libc::SIGKILL);
    Ok(Some(match spawn::task_status(&started, waited) {
        (Some(code), _) => ExitStatus::exited(code),
        (None, Some(sig)) => ExitStatus::signaled(sig),
        (None, None) => ExitStatus::failed(None, "unknown exit status"),
    }))
}

fn killpg(pid: i32, sig: libc::c_int) -> nix::Result<()> {
    // SAFETY: plain kill(2) of a process group.
    nix::errno::Errno::result(unsafe { libc::killpg(pid, sig) }).map(drop)
}

/// A pollable handle on the child's exit (Linux 5.3+); `None` falls back to polling.
fn pidfd(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    (fd >= 0).then(|| {
        // SAFETY: the fd was just returned to us and is owned by nobody else.
        unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) }
    })
}

/// Waits for the started process; once the shim is told to stop, sends the stop signal to the
/// task's process group, and SIGKILL after the grace period.
fn wait_or_stop(started: &Started, plan: &LaunchPlan, wake: &OwnedFd) -> Result<i32, ExecError> {
    let pid = started.pid;
    let handle = pidfd(pid);
    let mut kill_at: Option<Instant> = None;
    let mut killed = false;
    loop {
        if let Some(st) =
            spawn::try_wait(pid, true).map_err(|e| ExecError::io("waiting for the task", e))?
        {
            return Ok(st);
        }
        if STOP.load(Ordering::SeqCst) && kill_at.is_none() {
            let sig = if plan.stop_signal > 0 {
                plan.stop_signal
            } else {
                libc::SIGTERM
            };
            eprintln!("shim told to stop: sending signal {sig} to the task");
            let _ = killpg(pid, sig);
            kill_at = Some(Instant::now() + Duration::from_millis(plan.stop_grace_ms));
        }
        if let Some(at) = kill_at.filter(|at| !killed && Instant::now() >= *at) {
            let _ = at;
            let _ = killpg(pid, libc::SIGKILL);
            killed = true;
        }
        let timeout_ms: i32 = match kill_at {
            Some(at) if !killed => at
                .saturating_duration_since(Instant::now())
                .as_millis()
                .clamp(1, 1000) as i32,
            _ if killed || handle.is_none() => 100,
            _ => -1,
        };
        let mut fds = [
            wake.as_raw_fd(),
            handle.as_ref().map_or(-1, |h| h.as_raw_fd()),
        ]
        .map(|fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        });
        let mut buf = [0u8; 16];
        // SAFETY: poll over a local array (a negative fd is ignored), then a non-blocking read
        // of the self-pipe into a local buffer.
        unsafe {
            libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms);
            libc::read(wake.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len());
        }
    }
}
