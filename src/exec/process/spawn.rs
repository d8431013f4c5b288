//! How the shim starts a task: everything prepared before `fork` (C strings, pointer arrays, open
//! files), then only system calls in the children. Two shapes:
//!
//! - isolated (root): the shim unshares a PID namespace and forks the task's **init** (pid 1 of
//!   it): a process group leader that enters a new mount namespace and applies the mount plan,
//!   takes the task's UTS name, joins the task's cgroup, forks the task (pid 2, in the same
//!   process group, so a signal to the group reaches the task while init, as a namespace init
//!   with default dispositions, ignores it), reaps every orphan of the namespace and, when the
//!   task ends, hands its wait status to the shim over a pipe and exits, which kills whatever is
//!   left in the namespace. SIGKILL of init (a `terminate`) kills the namespace at once.
//! - plain (not root): the task itself is forked as its own process group leader.
//!
//! Either way the task drops capabilities and sets `no_new_privs` when asked, switches user,
//! changes directory and execs; a failure before exec travels to the shim over a close-on-exec
//! pipe as `(stage, errno, mount step)`. Both children die with the shim (`PR_SET_PDEATHSIG`).
//!
//! Must not: allocate, lock or log between `fork` and `exec` (the shim may be multi-threaded),
//! or leave a pipe end open in a process that must not hold it.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use nix::libc;

use super::caps;
use super::mounts::{apply_namespace, MountStep};
use super::user::Credentials;

/// Where a start failed (the first word of the error pipe's message).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stage {
    /// Namespaces, mounts, hostname, cgroup.
    Isolation = 1,
    /// Groups, user, capabilities, `no_new_privs`.
    Credentials = 2,
    /// The working directory.
    Chdir = 3,
    /// `execve` itself.
    Exec = 4,
    /// Plumbing the task's network namespace (done by the daemon while init waits).
    Network = 5,
}

impl Stage {
    fn from_i32(n: i32) -> Stage {
        match n {
            1 => Stage::Isolation,
            2 => Stage::Credentials,
            3 => Stage::Chdir,
            5 => Stage::Network,
            _ => Stage::Exec,
        }
    }
}

/// The program, its environment and credentials, ready for `execve`.
pub(crate) struct Exec {
    program: CString,
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    _envp: Vec<CString>,
    envp_ptrs: Vec<*const libc::c_char>,
    cwd: CString,
    creds: Option<(libc::uid_t, libc::gid_t, Vec<libc::gid_t>)>,
    /// `(capability set, last capability of the kernel)`.
    caps: Option<(u64, u32)>,
    stdin: OwnedFd,
    stdout: OwnedFd,
    stderr: OwnedFd,
}

fn cstring(what: &str, s: &[u8]) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::other(format!("{what} contains a NUL byte")))
}

fn null_terminated(v: &[CString]) -> Vec<*const libc::c_char> {
    v.iter()
        .map(|c| c.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

impl Exec {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        program: &std::path::Path,
        argv: &[String],
        env: &[(String, String)],
        cwd: &std::path::Path,
        creds: Option<&Credentials>,
        caps: Option<u64>,
        stdout: OwnedFd,
        stderr: OwnedFd,
    ) -> io::Result<Exec> {
        use std::os::unix::ffi::OsStrExt;
        let argv: Vec<CString> = argv
            .iter()
            .map(|a| cstring("an argument", a.as_bytes()))
            .collect::<io::Result<_>>()?;
        let envp: Vec<CString> = env
            .iter()
            .map(|(k, v)| cstring("the environment", format!("{k}={v}").as_bytes()))
            .collect::<io::Result<_>>()?;
        let stdin = std::fs::File::open("/dev/null")?.into();
        Ok(Exec {
            program: cstring("the program path", program.as_os_str().as_bytes())?,
            argv_ptrs: null_terminated(&argv),
            _argv: argv,
            envp_ptrs: null_terminated(&envp),
            _envp: envp,
            cwd: cstring("the working directory", cwd.as_os_str().as_bytes())?,
            creds: creds.map(|c| (c.uid, c.gid, c.groups.clone())),
            caps: caps.map(|set| (set, caps::last_cap())),
            stdin,
            stdout,
            stderr,
        })
    }
}

/// What the task's init sets up before forking the task.
pub(crate) struct Sandbox {
    pub(crate) steps: Vec<MountStep>,
    pub(crate) hostname: Option<CString>,
    /// `cgroup.procs` files of the task's cgroup.
    pub(crate) cgroup_procs: Vec<OwnedFd>,
    /// A network namespace of its own, plumbed from outside before the task is forked.
    pub(crate) new_net: bool,
}

/// The two pipes of a network namespace handshake: init says its namespace exists, then waits for the word
/// that it is plumbed.
struct NetHandshake {
    ready: (OwnedFd, OwnedFd),
    go: (OwnedFd, OwnedFd),
}

/// A started task (or its init).
pub(crate) struct Started {
    /// The process to wait for and whose group to signal: the init when isolated, else the task.
    pub(crate) pid: i32,
    /// The task's wait status, written by the init (isolated only).
    status: Option<OwnedFd>,
}

/// How a start ended before the task ran.
#[derive(Debug)]
pub(crate) struct StartError {
    pub(crate) stage: Stage,
    pub(crate) error: io::Error,
    /// The mount step that failed, when one did.
    pub(crate) step: Option<usize>,
}

fn report(fd: RawFd, stage: Stage, errno: i32, step: i32) {
    let msg: [i32; 3] = [stage as i32, errno, step];
    // SAFETY: writes 8 bytes from a local array.
    unsafe { libc::write(fd, msg.as_ptr().cast(), std::mem::size_of_val(&msg)) };
}

fn errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn fail(fd: RawFd, stage: Stage, e: i32) -> ! {
    fail_step(fd, stage, e, -1)
}

fn fail_step(fd: RawFd, stage: Stage, e: i32, step: i32) -> ! {
    report(fd, stage, e, step);
    // SAFETY: ends the forked child without running the parent's atexit handlers.
    unsafe { libc::_exit(127) }
}

/// Signals the shim handles itself; its children start with the default disposition.
pub(crate) const SHIM_SIGNALS: [libc::c_int; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];

fn child_common() {
    // SAFETY: async-signal-safe calls on constants.
    unsafe {
        for s in SHIM_SIGNALS {
            libc::signal(s, libc::SIG_DFL);
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        );
    }
}

/// In the forked task: credentials, capabilities, directory, exec. Never returns.
fn exec_task(x: &Exec, err: RawFd) -> ! {
    // SAFETY: only system calls on data prepared before fork.
    unsafe {
        for (fd, target) in [(&x.stdin, 0), (&x.stdout, 1), (&x.stderr, 2)] {
            if libc::dup2(fd.as_raw_fd(), target) < 0 {
                fail(err, Stage::Isolation, errno());
            }
        }
        if let Some((set, last)) = x.caps {
            if let Err(e) = caps::drop_bounding(set, last) {
                fail(
                    err,
                    Stage::Credentials,
                    e.raw_os_error().unwrap_or(libc::EIO),
                );
            }
        }
        if let Some((uid, gid, groups)) = &x.creds {
            if libc::setgroups(groups.len(), groups.as_ptr()) < 0
                || libc::setgid(*gid) < 0
                || libc::setuid(*uid) < 0
            {
                fail(err, Stage::Credentials, errno());
            }
        }
        if let Some((set, _)) = x.caps {
            let root = libc::geteuid() == 0;
            if let Err(e) = caps::restrict(set, root) {
                fail(
                    err,
                    Stage::Credentials,
                    e.raw_os_error().unwrap_or(libc::EIO),
                );
            }
        }
        if libc::chdir(x.cwd.as_ptr()) < 0 {
            fail(err, Stage::Chdir, errno());
        }
        libc::execve(
            x.program.as_ptr(),
            x.argv_ptrs.as_ptr(),
            x.envp_ptrs.as_ptr(),
        );
        fail(err, Stage::Exec, errno())
    }
}

/// In the forked init (pid 1 of the task's namespace). Never returns.
fn run_init(x: &Exec, sb: &Sandbox, err: RawFd, status: RawFd, net: Option<(RawFd, RawFd)>) -> ! {
    // SAFETY: only system calls on data prepared before fork.
    unsafe {
        // What `ps` shows for it (its command line stays the shim's).
        libc::prctl(
            libc::PR_SET_NAME,
            c"swarm-init".as_ptr() as libc::c_ulong,
            0,
            0,
            0,
        );
        // `(ready write end, go read end)`: a network namespace of its own, plumbed by the daemon (which
        // finds it as /proc/<init>/ns/net) before anything of the task runs
        if let Some((ready, go)) = net {
            if libc::unshare(libc::CLONE_NEWNET) < 0 {
                fail(err, Stage::Isolation, errno());
            }
            libc::write(ready, c"1".as_ptr().cast(), 1);
            libc::close(ready);
            let mut word = [0u8; 1];
            let n = loop {
                let n = libc::read(go, word.as_mut_ptr().cast(), 1);
                if !(n < 0 && errno() == libc::EINTR) {
                    break n;
                }
            };
            if n != 1 {
                fail(err, Stage::Network, libc::ECANCELED);
            }
            libc::close(go);
        }
        if let Err((step, e)) = apply_namespace(&sb.steps) {
            let e = e.raw_os_error().unwrap_or(libc::EIO);
            fail_step(err, Stage::Isolation, e, step as i32);
        }
        if let Some(h) = &sb.hostname {
            if libc::unshare(libc::CLONE_NEWUTS) < 0
                || libc::sethostname(h.as_ptr(), h.as_bytes().len()) < 0
            {
                fail(err, Stage::Isolation, errno());
            }
        }
        for fd in &sb.cgroup_procs {
            if libc::write(fd.as_raw_fd(), c"0".as_ptr().cast(), 1) < 0 {
                fail(err, Stage::Isolation, errno());
            }
            libc::close(fd.as_raw_fd());
        }
        let task = libc::fork();
        if task < 0 {
            fail(err, Stage::Isolation, errno());
        }
        if task == 0 {
            libc::close(status);
            exec_task(x, err);
        }
        libc::close(err);
        let mut task_status: libc::c_int = 0;
        loop {
            let mut st: libc::c_int = 0;
            let pid = libc::waitpid(-1, &mut st, 0);
            if pid == task {
                task_status = st;
                break;
            }
            if pid < 0 && errno() != libc::EINTR {
                break;
            }
        }
        libc::write(
            status,
            (&task_status as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>(),
        );
        libc::_exit(0)
    }
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)
}

fn read_full(fd: &OwnedFd, buf: &mut [u8]) -> usize {
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: reads into the unfilled part of `buf`.
        let n = unsafe {
            libc::read(
                fd.as_raw_fd(),
                buf[got..].as_mut_ptr().cast(),
                buf.len() - got,
            )
        };
        if n < 0 && errno() == libc::EINTR {
            continue;
        }
        if n <= 0 {
            break;
        }
        got += n as usize;
    }
    got
}

/// Starts the task (through an init in new namespaces when `sandbox` is given). Returns once it
/// has exec'd, or with where and why it could not. With a sandbox asking for a network namespace,
/// `plumb` is called with init's pid once the namespace exists, and the task starts only after it
/// returns `Ok`; an `Err` kills init and is the start's error.
pub(crate) fn spawn(
    x: &Exec,
    sandbox: Option<&Sandbox>,
    plumb: &mut dyn FnMut(i32) -> Result<(), String>,
) -> io::Result<Result<Started, StartError>> {
    let (err_r, err_w) = pipe()?;
    let (status_r, status_w) = pipe()?;
    let handshake = match sandbox {
        Some(sb) if sb.new_net => Some(NetHandshake {
            ready: pipe()?,
            go: pipe()?,
        }),
        _ => None,
    };
    let net_fds = handshake
        .as_ref()
        .map(|h| (h.ready.1.as_raw_fd(), h.go.0.as_raw_fd()));
    if sandbox.is_some() {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWPID).map_err(io::Error::from)?;
    }
    // SAFETY: the child only runs `run_init` / `exec_task`, which make system calls on data
    // prepared above.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        child_common();
        // SAFETY: setpgid on ourselves.
        unsafe { libc::setpgid(0, 0) };
        match sandbox {
            Some(sb) => run_init(x, sb, err_w.as_raw_fd(), status_w.as_raw_fd(), net_fds),
            None => exec_task(x, err_w.as_raw_fd()),
        }
    }
    drop(err_w);
    drop(status_w);
    if let Some(NetHandshake {
        ready: (ready_r, ready_w),
        go: (go_r, go_w),
    }) = handshake
    {
        drop(ready_w);
        drop(go_r);
        let mut word = [0u8; 1];
        // nothing read: init failed before (its error is on the error pipe)
        if read_full(&ready_r, &mut word) == 1 {
            if let Err(message) = plumb(pid) {
                // SAFETY: kill(2) of our own child.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                let _ = wait_raw(pid);
                return Ok(Err(StartError {
                    stage: Stage::Network,
                    error: io::Error::other(message),
                    step: None,
                }));
            }
            // SAFETY: writes one byte from a constant; init may be gone (EPIPE, SIGPIPE is ignored).
            unsafe { libc::write(go_w.as_raw_fd(), c"1".as_ptr().cast(), 1) };
        }
        drop(go_w);
    }
    let mut buf = [0u8; 12];
    let n = read_full(&err_r, &mut buf);
    if n == buf.len() {
        let word = |i: usize| i32::from_ne_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
        let _ = wait_raw(pid);
        return Ok(Err(StartError {
            stage: Stage::from_i32(word(0)),
            error: io::Error::from_raw_os_error(word(4)),
            step: usize::try_from(word(8)).ok(),
        }));
    }
    Ok(Ok(Started {
        pid,
        status: sandbox.is_some().then_some(status_r),
    }))
}

/// `waitpid` for one child, retrying on EINTR unless `interrupted` says to stop; `None` when
/// interrupted.
pub(crate) fn wait_raw(pid: i32) -> io::Result<libc::c_int> {
    loop {
        let mut st: libc::c_int = 0;
        // SAFETY: waitpid with a valid out pointer.
        let r = unsafe { libc::waitpid(pid, &mut st, 0) };
        if r == pid {
            return Ok(st);
        }
        if r < 0 && errno() != libc::EINTR {
            return Err(io::Error::last_os_error());
        }
    }
}

/// `waitpid` that returns `Ok(None)` when a signal interrupted it or (with `nohang`) the child
/// still runs.
pub(crate) fn try_wait(pid: i32, nohang: bool) -> io::Result<Option<libc::c_int>> {
    let mut st: libc::c_int = 0;
    let flags = if nohang { libc::WNOHANG } else { 0 };
    // SAFETY: waitpid with a valid out pointer.
    let r = unsafe { libc::waitpid(pid, &mut st, flags) };
    if r == pid {
        return Ok(Some(st));
    }
    if r == 0 || (r < 0 && errno() == libc::EINTR) {
        return Ok(None);
    }
    Err(io::Error::last_os_error())
}

/// How the task ended: `(exit code, signal)`. For an isolated task, the status its init handed
/// over; when the init was killed before (a SIGKILL of the group), the init's own.
pub(crate) fn task_status(started: &Started, waited: libc::c_int) -> (Option<i32>, Option<i32>) {
    let raw = match &started.status {
        Some(fd) => {
            let mut buf = [0u8; 4];
            if read_full(fd, &mut buf) == 4 {
                i32::from_ne_bytes(buf)
            } else {
                waited
            }
        }
        None => waited,
    };
    if libc::WIFEXITED(raw) {
        (Some(libc::WEXITSTATUS(raw)), None)
    } else if libc::WIFSIGNALED(raw) {
        (None, Some(libc::WTERMSIG(raw)))
    } else {
        (None, None)
    }
}
