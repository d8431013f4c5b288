//! The process controller: one task's lifecycle on the host. `prepare` creates the task directory,
//! secrets and configs; `start` resolves user, working directory and program (Docker's errors),
//! writes `launch.json` and spawns the shim in a new session; `wait`, `shutdown` and `terminate`
//! work from the files the shim writes and signal the task's process group, so they work the same
//! for a task adopted after a daemon restart.
//!
//! Must not: be the parent of the task process, hold secret data longer than `prepare`, or
//! signal a pid without checking its recorded start time.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::FutureExt;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use crate::exec::{
    parse_signal, CheckResult, Controller, ExecError, ExitStatus, ProcessSpec, RuntimeState,
    EXIT_START_FAILED, LOST_MESSAGE,
};

use super::caps;
use super::cgroup;
use super::layout::{self, ProcRecord, TaskDir, RECORD_VERSION};
use super::lookup::{lookup_program, task_env, DEFAULT_PATH};
use super::mounts::{self, FileKind};
use super::shim::{LaunchPlan, ShimCommand, SHIM_ENV};
use super::user::resolve_host_user;

/// How often `wait` looks at the task directory.
const POLL: Duration = Duration::from_millis(100);
/// How long `start` waits for the shim to report the task's pid.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// What the task directory says about the task.
#[derive(Debug)]
pub(crate) enum Observed {
    New,
    Prepared,
    /// Shim or task alive; `task` is `None` while the shim is still starting it.
    Running {
        task: Option<ProcRecord>,
    },
    Exited(ExitStatus),
    Lost,
}

pub(crate) fn observe(dir: &TaskDir) -> Result<Observed, ExecError> {
    if let Some(status) = layout::read_exit(dir)? {
        return Ok(Observed::Exited(status));
    }
    let shim: Option<ProcRecord> = layout::read_json(&dir.shim())?;
    let task: Option<ProcRecord> = layout::read_json(&dir.pid())?;
    if shim.is_none() && task.is_none() {
        return Ok(if dir.prepared().exists() {
            Observed::Prepared
        } else {
            Observed::New
        });
    }
    if shim.is_some_and(|s| s.alive()) || task.is_some_and(|t| t.alive()) {
        return Ok(Observed::Running { task });
    }
    // Both gone: the shim may have written the status between our reads.
    Ok(match layout::read_exit(dir)? {
        Some(status) => Observed::Exited(status),
        None => Observed::Lost,
    })
}

impl Observed {
    pub(crate) fn runtime_state(self) -> RuntimeState {
        match self {
            Observed::New => RuntimeState::New,
            Observed::Prepared => RuntimeState::Prepared,
            Observed::Running { .. } => RuntimeState::Running,
            Observed::Exited(s) => RuntimeState::Exited(s),
            Observed::Lost => RuntimeState::Exited(ExitStatus::failed(None, LOST_MESSAGE)),
        }
    }
}

/// Controls one task run as a real process under a shim.
pub struct ProcessController {
    pub(crate) spec: ProcessSpec,
    pub(crate) dir: TaskDir,
    pub(crate) root: std::path::PathBuf,
    pub(crate) shim: ShimCommand,
    pub(crate) is_root: bool,
    /// Paths the task must not see.
    pub(crate) hidden: Vec<std::path::PathBuf>,
    pub(crate) stop_signal: Signal,
    /// Adopted controllers have no secret data and cannot prepare again.
    pub(crate) adopted: bool,
    /// The node's network layer.
    pub(crate) network: Option<crate::network::Plane>,
}

impl ProcessController {
    fn start_failed(&self, code: i32, message: String) -> ExecError {
        let status = ExitStatus::failed(Some(code), message.clone());
        if let Err(e) = layout::write_exit(&self.dir, &status) {
            return e;
        }
        ExecError::StartFailed {
            task: self.spec.task_name.clone(),
            message,
        }
    }

    fn prepare_now(&self) -> Result<(), ExecError> {
        if self.dir.prepared().exists() {
            return Ok(());
        }
        if self.adopted {
            return Err(ExecError::InvalidState {
                task: self.spec.task_id.clone(),
                op: "prepare",
                state: "adopted".into(),
            });
        }
        let io = |what: &str, p: &Path| format!("{what} {}", p.display());
        for d in [&self.root, &self.dir.path().to_path_buf()] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o711)
                .create(d)
                .map_err(|e| ExecError::io(io("creating", d), e))?;
        }
        layout::write_json_atomic(&self.dir.spec(), &self.spec)
            .map_err(|e| ExecError::io(io("writing", &self.dir.spec()), e))?;
        for log in [self.dir.stdout(), self.dir.stderr()] {
            fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .map_err(|e| ExecError::io(io("creating", &log), e))?;
        }
        if !self.spec.secrets.is_empty() {
            mounts::setup_secrets_dir(&self.dir, &self.spec.task_id, self.is_root)?;
            mounts::write_files(
                &self.dir.secrets(),
                &self.spec.secrets,
                FileKind::Secret,
                self.is_root,
            )?;
        }
        if !self.spec.configs.is_empty() {
            mounts::write_files(
                &self.dir.configs(),
                &self.spec.configs,
                FileKind::Config,
                self.is_root,
            )?;
        }
        layout::write_atomic(&self.dir.prepared(), b"1\n")
            .map_err(|e| ExecError::io(io("writing", &self.dir.prepared()), e))
    }

    /// Resolves everything the shim needs; start failures are recorded in `exit.json`.
    fn launch_plan(&self) -> Result<LaunchPlan, ExecError> {
        let spec = &self.spec;
        let mut extra = Vec::new();
        if !spec.secrets.is_empty() {
            extra.push((
                "SWARM_SECRETS_DIR".to_string(),
                self.dir.secrets().display().to_string(),
            ));
        }
        if !spec.configs.is_empty() {
            extra.push((
                "SWARM_CONFIGS_DIR".to_string(),
                self.dir.configs().display().to_string(),
            ));
        }
        let env = task_env(&spec.env, &extra);
        let credentials = match spec.user.as_deref().filter(|u| !u.is_empty()) {
            None => None,
            Some(user) => {
                let c =
                    resolve_host_user(user).map_err(|m| self.start_failed(EXIT_START_FAILED, m))?;
                let (euid, egid) = (
                    nix::unistd::geteuid().as_raw(),
                    nix::unistd::getegid().as_raw(),
                );
                if self.is_root {
                    Some(c)
                } else if c.uid == euid && c.gid == egid {
                    None
                } else {
                    let m = format!(
                        "cannot run as user {user:?} (uid {}): swarmd is not running as root",
                        c.uid
                    );
                    return Err(self.start_failed(EXIT_START_FAILED, m));
                }
            }
        };
        let cwd = std::path::PathBuf::from(
            spec.working_dir
                .as_deref()
                .filter(|w| !w.is_empty())
                .unwrap_or("/"),
        );
        if !cwd.is_absolute() {
            let m = format!(
                "the working directory '{}' is invalid, it needs to be an absolute path",
                cwd.display()
            );
            return Err(self.start_failed(EXIT_START_FAILED, m));
        }
        if !cwd.is_dir() {
            let created = self.is_root && fs::create_dir_all(&cwd).is_ok();
            if !created {
                let m = format!(
                    "chdir to cwd (\"{}\") set in config.json failed: no such file or directory",
                    cwd.display()
                );
                return Err(self.start_failed(EXIT_START_FAILED, m));
            }
        }
        let path_var = env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map_or(DEFAULT_PATH, |(_, v)| v.as_str());
        let argv0 = spec.argv.first().map(String::as_str).unwrap_or("");
        let program = lookup_program(argv0, path_var, &cwd)
            .map_err(|e| self.start_failed(e.code, e.message))?;
        let absolute_configs: Vec<String> = spec
            .configs
            .iter()
            .filter(|c| c.target.starts_with('/'))
            .map(|c| c.target.clone())
            .collect();
        let caps = if self.is_root {
            let set = caps::resolve(&spec.cap_add, &spec.cap_drop)
                .map_err(|m| self.start_failed(EXIT_START_FAILED, m))?;
            Some(set)
        } else {
            None
        };
        Ok(LaunchPlan {
            version: RECORD_VERSION,
            task_name: spec.task_name.clone(),
            program,
            argv: spec.argv.clone(),
            env,
            working_dir: cwd,
            credentials,
            namespace: self.is_root,
            has_secrets: !spec.secrets.is_empty(),
            absolute_configs,
            hidden: self.hidden.clone(),
            caps,
            limits: spec.limits,
            stop_signal: self.stop_signal as i32,
            stop_grace_ms: spec.stop_grace_period.as_millis().min(u64::MAX as u128) as u64,
            network: false,
            resolv_conf: false,
        })
    }

    async fn start_now(&self) -> Result<(), ExecError> {
        match observe(&self.dir)? {
            Observed::New => {
                return Err(ExecError::InvalidState {
                    task: self.spec.task_id.clone(),
                    op: "start",
                    state: "not prepared".into(),
                })
            }
            Observed::Exited(ExitStatus {
                error: Some(message),
                ..
            }) => {
                return Err(ExecError::StartFailed {
                    task: self.spec.task_name.clone(),
                    message,
                })
            }
            Observed::Running { .. } | Observed::Exited(_) | Observed::Lost => return Ok(()),
            Observed::Prepared => {}
        }
        let mut plan = self.launch_plan()?;
        let attachments = self.network_attachments(&mut plan)?;
        layout::write_json_atomic(&self.dir.launch(), &plan)
            .map_err(|e| ExecError::io(format!("writing {}", self.dir.launch().display()), e))?;
        let shim_log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.shim_log())
            .map_err(|e| ExecError::io(format!("opening {}", self.dir.shim_log().display()), e))?;
        let shim_err = shim_log
            .try_clone()
            .map_err(|e| ExecError::io("duplicating shim log", e))?;
        let mut cmd = tokio::process::Command::new(&self.shim.program);
        cmd.args(&self.shim.args)
            .arg(self.dir.path())
            .env(SHIM_ENV, self.dir.path())
            .stdin(Stdio::null())
            .stdout(shim_log)
            .stderr(shim_err)
            .kill_on_drop(false);
        // No pre-exec hook: std then spawns with posix_spawn (vfork-like), where a fork would copy this
        // daemon's page tables and stall all its threads once per task. The shim calls setsid() itself.
        let mut child = cmd.spawn().map_err(|e| {
            ExecError::io(format!("spawning shim {}", self.shim.program.display()), e)
        })?;
        if let Some(rec) = child.id().and_then(|pid| ProcRecord::of(pid as i32)) {
            layout::write_json_atomic(&self.dir.shim(), &rec)
                .map_err(|e| ExecError::io(format!("writing {}", self.dir.shim().display()), e))?;
        }
        // Reap the shim when it exits while we run; after a daemon crash init reaps it.
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
        if plan.network {
            self.plumb_when_ready(&attachments).await?;
        }
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match observe(&self.dir)? {
                Observed::Running { task: Some(_) } => return Ok(()),
                Observed::Exited(ExitStatus {
                    error: Some(message),
                    ..
                }) => {
                    return Err(ExecError::StartFailed {
                        task: self.spec.task_name.clone(),
                        message,
                    })
                }
                Observed::Exited(_) | Observed::Lost => return Ok(()),
                Observed::Running { task: None } | Observed::New | Observed::Prepared => {}
            }
            if Instant::now() >= deadline {
                return Err(ExecError::Unavailable(format!(
                    "shim for task {} did not start it in time",
                    self.spec.task_name
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn wait_now(&self) -> Result<ExitStatus, ExecError> {
        loop {
            match observe(&self.dir)? {
                Observed::Exited(status) => return Ok(status),
                Observed::Lost => {
                    let status = ExitStatus::failed(None, LOST_MESSAGE);
                    layout::write_exit(&self.dir, &status)?;
                    return Ok(layout::read_exit(&self.dir)?.unwrap_or(status));
                }
                Observed::New | Observed::Prepared => {
                    return Err(ExecError::InvalidState {
                        task: self.spec.task_id.clone(),
                        op: "wait",
                        state: "not started".into(),
                    })
                }
                Observed::Running { .. } => tokio::time::sleep(POLL).await,
            }
        }
    }

    /// The task process once the shim has recorded it; `None` when nothing runs any more.
    async fn running_task(&self) -> Result<Option<ProcRecord>, ExecError> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match observe(&self.dir)? {
                Observed::Running { task: Some(t) } => return Ok(Some(t)),
                Observed::Running { task: None } if Instant::now() < deadline => {
                    tokio::time::sleep(POLL).await
                }
                _ => return Ok(None),
            }
        }
    }

    fn signal(&self, task: &ProcRecord, sig: Signal) -> Result<(), ExecError> {
        if !task.alive() {
            return Ok(());
        }
        match killpg(Pid::from_raw(task.pid), sig) {
            Ok(()) | Err(nix::Error::ESRCH) => Ok(()),
            Err(e) => Err(ExecError::sys(
                format!("sending {} to task {}", sig.as_str(), self.spec.task_name),
                e,
            )),
        }
    }

    async fn stop(&self, sig: Signal, grace: Duration) -> Result<(), ExecError> {
        let Some(task) = self.running_task().await? else {
            // Never started, already exited, or lost: record the loss if that is what it is.
            if matches!(observe(&self.dir)?, Observed::Lost) {
                self.wait_now().await?;
            }
            return Ok(());
        };
        if sig != Signal::SIGKILL {
            self.signal(&task, sig)?;
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline {
                if !matches!(observe(&self.dir)?, Observed::Running { .. }) {
                    return self.wait_now().await.map(drop);
                }
                tokio::time::sleep(POLL.min(deadline.saturating_duration_since(Instant::now())))
                    .await;
            }
        }
        self.signal(&task, Signal::SIGKILL)?;
        self.wait_now().await.map(drop)
    }

    async fn remove_now(&self) -> Result<(), ExecError> {
        if let Observed::Running { .. } = observe(&self.dir)? {
            return Err(ExecError::InvalidState {
                task: self.spec.task_id.clone(),
                op: "remove",
                state: "running".into(),
            });
        }
        // the pairs ended with the task's namespace; a start that failed half way may have left one
        let veths: Vec<String> = layout::read_json(&self.dir.network())?.unwrap_or_default();
        if let Err(e) = crate::network::unplumb(&veths).await {
            tracing::warn!(task = %self.spec.task_name, "removing the task's veths: {e}");
        }
        mounts::teardown_secrets(&self.dir)?;
        if self.is_root {
            cgroup::remove_leftover(&self.spec.task_id);
        }
        match fs::remove_dir_all(self.dir.path()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ExecError::io(
                format!("removing {}", self.dir.path().display()),
                e,
            )),
        }
    }
}

impl ProcessController {
    /// The task's interfaces (none: it shares the host's network). With some, `plan` asks for a network
    /// namespace and the task's `resolv.conf`, written here with the veth names `remove` deletes.
    fn network_attachments(
        &self,
        plan: &mut LaunchPlan,
    ) -> Result<Vec<crate::network::Attachment>, ExecError> {
        let Some(net) = self
            .network
            .as_ref()
            .filter(|n| self.is_root && n.enabled())
        else {
            return Ok(Vec::new());
        };
        let attachments = net
            .attachments(&self.spec.task_id)
            .map_err(|e| self.start_failed(EXIT_START_FAILED, e.to_string()))?;
        if attachments.is_empty() {
            return Ok(attachments);
        }
        let io = |p: &Path| format!("writing {}", p.display());
        let veths: Vec<&str> = attachments.iter().map(|a| a.host_veth.as_str()).collect();
        layout::write_json_atomic(&self.dir.network(), &veths)
            .map_err(|e| ExecError::io(io(&self.dir.network()), e))?;
        let host = fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        if let Some(text) = crate::network::resolv_conf(&attachments, &host) {
            layout::write_atomic(&self.dir.resolv_conf(), text.as_bytes())
                .map_err(|e| ExecError::io(io(&self.dir.resolv_conf()), e))?;
            plan.resolv_conf = true;
        }
        plan.network = true;
        Ok(attachments)
    }

    /// Waits for the shim's init to create its network namespace (`netns.json`), plumbs it and answers in
    /// `network.done`. Returns early when the shim ended the start (`exit.json`).
    async fn plumb_when_ready(
        &self,
        attachments: &[crate::network::Attachment],
    ) -> Result<(), ExecError> {
        let Some(net) = &self.network else {
            return Ok(());
        };
        let deadline = Instant::now() + START_TIMEOUT;
        let init = loop {
            if let Some(rec) = layout::read_json::<ProcRecord>(&self.dir.netns())? {
                break rec;
            }
            if layout::read_exit(&self.dir)?.is_some() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(ExecError::Unavailable(format!(
                    "shim for task {} did not create its network namespace in time",
                    self.spec.task_name
                )));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let answer = match fs::File::open(format!("/proc/{}/ns/net", init.pid)) {
            // the pid may have been reused between the record and the open
            Ok(_) if !init.alive() => {
                "the task's init ended before its network was plumbed".to_string()
            }
            Ok(ns) => {
                use std::os::fd::AsFd;
                match net.plumb(ns.as_fd(), attachments).await {
                    Ok(()) => "ok".to_string(),
                    Err(e) => e.to_string(),
                }
            }
            Err(e) => format!("opening the task's network namespace: {e}"),
        };
        layout::write_atomic(&self.dir.network_done(), answer.as_bytes())
            .map_err(|e| ExecError::io(format!("writing {}", self.dir.network_done().display()), e))
    }
}

/// Validates what can be checked before anything touches the host.
pub(crate) fn stop_signal_of(spec: &ProcessSpec) -> Result<Signal, ExecError> {
    parse_signal(spec.stop_signal.as_deref()).map_err(|message| ExecError::InvalidSpec {
        task: spec.task_name.clone(),
        message,
    })
}

impl Controller for ProcessController {
    fn task_id(&self) -> &str {
        &self.spec.task_id
    }

    fn prepare(&self) -> BoxFuture<'_, Result<(), ExecError>> {
        async move { self.prepare_now() }.boxed()
    }

    fn start(&self) -> BoxFuture<'_, Result<(), ExecError>> {
        self.start_now().boxed()
    }

    fn wait(&self) -> BoxFuture<'_, Result<ExitStatus, ExecError>> {
        self.wait_now().boxed()
    }

    fn shutdown(&self) -> BoxFuture<'_, Result<(), ExecError>> {
        self.stop(self.stop_signal, self.spec.stop_grace_period)
            .boxed()
    }

    fn terminate(&self) -> BoxFuture<'_, Result<(), ExecError>> {
        self.stop(Signal::SIGKILL, Duration::ZERO).boxed()
    }

    fn remove(&self) -> BoxFuture<'_, Result<(), ExecError>> {
        self.remove_now().boxed()
    }

    fn inspect(&self) -> BoxFuture<'_, Result<RuntimeState, ExecError>> {
        async move { observe(&self.dir).map(Observed::runtime_state) }.boxed()
    }

    fn exec_check<'a>(
        &'a self,
        argv: &'a [String],
        timeout: Duration,
    ) -> BoxFuture<'a, Result<CheckResult, ExecError>> {
        self.exec_check_now(argv, timeout).boxed()
    }
}
