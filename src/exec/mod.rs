//! # exec — the task runtime edge
//!
//! Owns the runtime-agnostic description of one task ([`ProcessSpec`]), the [`Executor`] and
//! [`Controller`] traits the agent drives (prepare, start, wait, shutdown, terminate, remove, plus
//! re-adoption after a daemon restart, and health check commands run in the task's context),
//! exit statuses, check results, log lines and the [`ExecError`] enum.
//! Implementations: [`process`] (embedded default, real Linux processes under a shim), `docker`
//! (containers through the Docker Engine API; cargo feature `docker`, on by default) and [`fake`]
//! (scripted outcomes for simulation tests); [`select`] runs several on one node, each task on the one its
//! spec's `com.swarm.executor` label names.
//!
//! Must not: know the model, store or Raft types (the agent converts its task model into a
//! [`ProcessSpec`]), decide desired state, or log secret data.

#[cfg(feature = "docker")]
pub mod docker;
pub mod fake;
pub(crate) mod files;
pub mod process;
pub mod select;

use std::fmt;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

/// What a runtime needs to run one task, converted by the agent from its task model.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct ProcessSpec {
    /// Unique task id; names the task's directory or container.
    pub task_id: String,
    /// Human name for logs, e.g. `web.1.abc`.
    pub task_name: String,
    /// Entrypoint and command already joined; `argv[0]` is looked up in `PATH`.
    pub argv: Vec<String>,
    /// The task's environment, exactly as given (no inheritance from the daemon).
    pub env: Vec<(String, String)>,
    /// Working directory; created when absent and the runtime may.
    pub working_dir: Option<String>,
    /// `name`, `uid`, `uid:gid`, `name:group`.
    pub user: Option<String>,
    /// `SIGTERM`, `TERM`, `15`, `SIGUSR1`…; `None` means SIGTERM.
    pub stop_signal: Option<String>,
    /// How long shutdown waits after the stop signal before SIGKILL.
    pub stop_grace_period: Duration,
    /// Secret files; their data lives in memory and on tmpfs only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<FileMount>,
    /// Config files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub configs: Vec<FileMount>,
    /// Image reference; metadata only for the process executor.
    pub image: String,
    /// Read-only root filesystem (ignored by the process executor).
    pub read_only: bool,
    /// Run an init process (the process executor always runs one as root, and none otherwise).
    pub init: bool,
    /// Resource limits (enforced by both executors; by the process executor only as root,
    /// through a cgroup per task).
    #[serde(default)]
    pub limits: Limits,
    /// Capabilities added to Docker's default set (`ALL` for every one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_add: Vec<String>,
    /// Capabilities removed from it (`ALL` for every one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_drop: Vec<String>,
    /// Ports published on this node (docker executor only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PublishedPort>,
    /// Labels for the runtime's object (the docker executor labels the container with them, like Swarm's
    /// `com.docker.swarm.*` and `com.docker.stack.namespace`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
}

/// Upper bounds of a task's resources; 0 means no limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Billionths of a CPU.
    pub nano_cpus: i64,
    /// Memory in bytes.
    pub memory_bytes: u64,
    /// Number of processes.
    pub pids: i64,
}

impl Limits {
    /// Whether no limit is set.
    pub fn is_none(&self) -> bool {
        *self == Limits::default()
    }
}

/// A task port published on the node running it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedPort {
    /// Port inside the task.
    pub target: u16,
    /// Port on the node; `None` lets the runtime pick a free one.
    pub published: Option<u16>,
    /// Transport protocol.
    pub protocol: PortProtocol,
    /// Asked for on the routing mesh (every node), which runtimes here cannot provide: it is
    /// published on the task's node only, like a host-mode port.
    #[serde(default)]
    pub ingress: bool,
}

/// The transport protocol of a [`PublishedPort`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortProtocol {
    /// TCP.
    #[default]
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl PortProtocol {
    /// `tcp`, `udp` or `sctp`.
    pub fn as_str(self) -> &'static str {
        match self {
            PortProtocol::Tcp => "tcp",
            PortProtocol::Udp => "udp",
            PortProtocol::Sctp => "sctp",
        }
    }

    /// Parses `tcp`, `udp` or `sctp`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "tcp" => Some(PortProtocol::Tcp),
            "udp" => Some(PortProtocol::Udp),
            "sctp" => Some(PortProtocol::Sctp),
            _ => None,
        }
    }
}

impl fmt::Debug for ProcessSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessSpec")
            .field("task_id", &self.task_id)
            .field("task_name", &self.task_name)
            .field("argv", &self.argv)
            .field("env", &self.env)
            .field("working_dir", &self.working_dir)
            .field("user", &self.user)
            .field("stop_signal", &self.stop_signal)
            .field("stop_grace_period", &self.stop_grace_period)
            .field("secrets", &self.secrets)
            .field("configs", &self.configs)
            .field("image", &self.image)
            .field("read_only", &self.read_only)
            .field("init", &self.init)
            .field("limits", &self.limits)
            .field("cap_add", &self.cap_add)
            .field("cap_drop", &self.cap_drop)
            .field("ports", &self.ports)
            .finish()
    }
}

/// One file (secret or config) made visible to a task. `Debug` never prints `data`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMount {
    /// Target path: relative (to the secrets/configs directory) or absolute.
    pub target: String,
    /// File content. Never serialized to disk except into the task's tmpfs/config file.
    #[serde(skip)]
    pub data: Vec<u8>,
    /// Owner uid (applied only when the daemon runs as root).
    pub uid: u32,
    /// Owner gid (applied only when the daemon runs as root).
    pub gid: u32,
    /// Permission bits, e.g. `0o444`.
    pub mode: u32,
}

impl fmt::Debug for FileMount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileMount")
            .field("target", &self.target)
            .field("data", &"<redacted>")
            .field("uid", &self.uid)
            .field("gid", &self.gid)
            .field("mode", &format_args!("{:#o}", self.mode))
            .finish()
    }
}

/// How a task ended.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// Exit code when the process exited (or 126/127 when it could not be started).
    pub code: Option<i32>,
    /// Signal number when the process was killed by a signal.
    pub signal: Option<i32>,
    /// Why the task could not start or was lost, in Docker's wording, e.g.
    /// `exec: "nosuchcmd": executable file not found in $PATH`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The error of a task that is gone without a trace: neither it nor an exit status can be found (the process
/// executor's wording). The agent reports it too, for a task it started that the runtime no longer lists.
pub const LOST_MESSAGE: &str = "task process disappeared";

/// The cause named for a task the kernel's OOM killer ended (Docker's `OOMKilled`), by both
/// runtimes; see [`ExitStatus::oom_killed`].
pub const OOM_MESSAGE: &str = "OOMKilled (out of memory)";

/// Exit code Docker reports when the command cannot be found.
pub const EXIT_NOT_FOUND: i32 = 127;
/// Exit code Docker reports when the command cannot be executed.
pub const EXIT_NOT_EXECUTABLE: i32 = 126;
/// Exit code Docker reports when the runtime could not create the task (bad user, bad cwd…).
pub const EXIT_START_FAILED: i32 = 128;

impl ExitStatus {
    /// A normal exit with `code`.
    pub fn exited(code: i32) -> Self {
        ExitStatus {
            code: Some(code),
            signal: None,
            error: None,
        }
    }
    /// Killed by signal number `signal`.
    pub fn signaled(signal: i32) -> Self {
        ExitStatus {
            code: None,
            signal: Some(signal),
            error: None,
        }
    }
    /// The task never ran or vanished: `error` says why.
    pub fn failed(code: Option<i32>, error: impl Into<String>) -> Self {
        ExitStatus {
            code,
            signal: None,
            error: Some(error.into()),
        }
    }
    /// Ended by the kernel's OOM killer with `code` (137 when the killed process is the task's):
    /// the error reads like swarmkit's `task: non-zero exit (137): OOMKilled (out of memory)`.
    pub fn oom_killed(code: i32) -> Self {
        ExitStatus::failed(
            Some(code),
            format!("task: non-zero exit ({code}): {OOM_MESSAGE}"),
        )
    }
    /// True only for exit code 0 without error.
    pub fn success(&self) -> bool {
        self.code == Some(0) && self.signal.is_none() && self.error.is_none()
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(err) = &self.error {
            return f.write_str(err);
        }
        match (self.code, self.signal) {
            (_, Some(sig)) => match Signal::try_from(sig) {
                Ok(s) => write!(f, "killed by signal {sig} ({})", s.as_str()),
                Err(_) => write!(f, "killed by signal {sig}"),
            },
            (Some(code), None) => write!(f, "exit code {code}"),
            (None, None) => f.write_str("unknown exit status"),
        }
    }
}

/// At most this many bytes of a health check's output are kept (Docker's limit).
pub const CHECK_OUTPUT_LIMIT: usize = 4096;

/// What one health check command did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckResult {
    /// The command ended: exit code 0 passes, anything else fails. A command that could not be
    /// started ends with 126 or 127 and the reason as output, like a task's start failure.
    Exited {
        /// The exit code (128 + signal when killed by a signal).
        code: i32,
        /// The start of its stdout then stderr, at most [`CHECK_OUTPUT_LIMIT`] bytes.
        output: String,
    },
    /// It was still running when its timeout expired and was killed: a failure.
    TimedOut {
        /// The timeout it exceeded.
        timeout: Duration,
    },
}

impl CheckResult {
    /// Whether the check passed (exited 0).
    pub fn passed(&self) -> bool {
        matches!(self, CheckResult::Exited { code: 0, .. })
    }

    /// What to show for it: the command's output, or Docker's timeout message.
    pub fn output(&self) -> String {
        match self {
            CheckResult::Exited { output, .. } => output.clone(),
            CheckResult::TimedOut { timeout } => {
                format!("Health check exceeded timeout ({timeout:?})")
            }
        }
    }
}

/// What a runtime observes of one task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RuntimeState {
    /// Known to the controller, nothing created on the host yet.
    New,
    /// Prepared (directory, secrets) but never started.
    Prepared,
    /// Started and still running (or its supervisor is still alive).
    Running,
    /// Ended; the status says how.
    Exited(ExitStatus),
}

/// One task a runtime found (on disk or in memory), for re-adoption after a restart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskInfo {
    /// The task id the task was created with.
    pub task_id: String,
    /// The task's human name.
    pub task_name: String,
    /// What the runtime sees now.
    pub state: RuntimeState,
}

/// Which output stream a log line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LogStream {
    /// The task's standard output.
    Stdout,
    /// The task's standard error.
    Stderr,
}

/// One line of task output, without its trailing newline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    /// Where the line was written.
    pub stream: LogStream,
    /// The text (invalid UTF-8 replaced).
    pub line: String,
}

/// What `logs` returns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Only the last N lines of each stream; `None` means all.
    pub tail: Option<usize>,
    /// Keep streaming new lines until the task has exited and its output is drained.
    pub follow: bool,
}

/// A stream of log lines.
pub type LogLines = BoxStream<'static, Result<LogLine, ExecError>>;

/// Errors of the exec layer.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The task's process could not be started (command not found, bad user…); permanent.
    #[error("task {task}: {message}")]
    StartFailed {
        /// Task name.
        task: String,
        /// Docker-worded reason.
        message: String,
    },
    /// The spec cannot be run by this runtime (bad signal, bad target path…); permanent.
    #[error("task {task}: invalid spec: {message}")]
    InvalidSpec {
        /// Task name.
        task: String,
        /// What is wrong.
        message: String,
    },
    /// The runtime knows no task with this id.
    #[error("task {0}: not found")]
    NotFound(String),
    /// The operation does not fit the task's current state (start before prepare…).
    #[error("task {task}: cannot {op} while {state}")]
    InvalidState {
        /// Task id.
        task: String,
        /// The refused operation.
        op: &'static str,
        /// The state it is in.
        state: String,
    },
    /// A file-system operation failed; usually worth a retry.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, with the path.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A system call failed; usually worth a retry.
    #[error("{context}: {source}")]
    Sys {
        /// What was being done.
        context: String,
        /// The errno.
        #[source]
        source: nix::Error,
    },
    /// The runtime itself is unavailable (e.g. the Docker daemon is down); temporary.
    #[error("runtime unavailable: {0}")]
    Unavailable(String),
}

impl ExecError {
    /// Whether retrying the same operation later may succeed.
    pub fn is_temporary(&self) -> bool {
        match self {
            ExecError::StartFailed { .. }
            | ExecError::InvalidSpec { .. }
            | ExecError::NotFound(_)
            | ExecError::InvalidState { .. } => false,
            ExecError::Io { .. } | ExecError::Sys { .. } | ExecError::Unavailable(_) => true,
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        ExecError::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn sys(context: impl Into<String>, source: nix::Error) -> Self {
        ExecError::Sys {
            context: context.into(),
            source,
        }
    }
}

/// A task runtime: creates one [`Controller`] per task and finds tasks again after a restart.
pub trait Executor: Send + Sync {
    /// A controller for a new task; nothing happens on the host until `prepare`.
    fn controller(&self, spec: ProcessSpec) -> Result<Box<dyn Controller>, ExecError>;

    /// Every task this runtime still has (running, exited or lost), e.g. after a daemon restart.
    fn list(&self) -> BoxFuture<'_, Result<Vec<TaskInfo>, ExecError>>;

    /// Takes a task found by `list` back under control.
    fn adopt<'a>(
        &'a self,
        task_id: &'a str,
    ) -> BoxFuture<'a, Result<Box<dyn Controller>, ExecError>>;

    /// The task's output: the last lines, then (with `follow`) new lines as they come.
    fn logs<'a>(
        &'a self,
        task_id: &'a str,
        opts: LogOptions,
    ) -> BoxFuture<'a, Result<LogLines, ExecError>>;
}

/// Drives one task. Operations are idempotent where that makes sense (shutdown of an exited task
/// returns at once, remove of a removed task succeeds). `&self` everywhere: `wait` may run while
/// another caller shuts the task down.
pub trait Controller: Send + Sync {
    /// The task id.
    fn task_id(&self) -> &str;

    /// Creates the task's resources (directory, secrets, configs). Idempotent.
    fn prepare(&self) -> BoxFuture<'_, Result<(), ExecError>>;

    /// Starts the task's process. A start failure returns `StartFailed` and `wait` then reports
    /// the same message.
    fn start(&self) -> BoxFuture<'_, Result<(), ExecError>>;

    /// Resolves when the task has exited.
    fn wait(&self) -> BoxFuture<'_, Result<ExitStatus, ExecError>>;

    /// Sends the stop signal, waits the grace period, then SIGKILLs; resolves once exited.
    fn shutdown(&self) -> BoxFuture<'_, Result<(), ExecError>>;

    /// SIGKILLs the task now; resolves once exited.
    fn terminate(&self) -> BoxFuture<'_, Result<(), ExecError>>;

    /// Deletes everything the task left (directory, logs, secrets). The task must have exited.
    fn remove(&self) -> BoxFuture<'_, Result<(), ExecError>>;

    /// What the runtime sees of the task now.
    fn inspect(&self) -> BoxFuture<'_, Result<RuntimeState, ExecError>>;

    /// Runs one health check command of the running task: `argv[0]` is looked up in the task's
    /// `PATH` and runs with the task's environment, working directory and user, inside the
    /// task's mount namespace where the runtime has one (so `/run/secrets` resolves as it does
    /// for the task). A check still running after `timeout` is killed: `TimedOut`. Errors mean
    /// no check ran (the task is not running, the runtime failed).
    fn exec_check<'a>(
        &'a self,
        argv: &'a [String],
        timeout: Duration,
    ) -> BoxFuture<'a, Result<CheckResult, ExecError>>;
}

/// Parses a stop signal as Docker does: `SIGTERM`, `TERM`, `term`, `15`. `None` → SIGTERM.
pub fn parse_signal(s: Option<&str>) -> Result<Signal, String> {
    let Some(raw) = s.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(Signal::SIGTERM);
    };
    if let Ok(n) = raw.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| format!("invalid signal: {raw}"));
    }
    let upper = raw.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<Signal>()
        .map_err(|_| format!("invalid signal: {raw}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_like_docker() {
        for (input, want) in [
            (None, Signal::SIGTERM),
            (Some("SIGTERM"), Signal::SIGTERM),
            (Some("TERM"), Signal::SIGTERM),
            (Some("usr1"), Signal::SIGUSR1),
            (Some("9"), Signal::SIGKILL),
            (Some(" SIGINT "), Signal::SIGINT),
        ] {
            assert_eq!(parse_signal(input), Ok(want), "{input:?}");
        }
        assert!(parse_signal(Some("NOPE")).is_err());
        assert!(parse_signal(Some("999")).is_err());
    }

    #[test]
    fn secret_data_is_redacted() {
        let m = FileMount {
            target: "db".into(),
            data: b"hunter2".to_vec(),
            uid: 0,
            gid: 0,
            mode: 0o400,
        };
        let shown = format!("{m:?}");
        assert!(shown.contains("<redacted>"));
        assert!(!shown.contains("hunter2"));
        assert!(!serde_json::to_string(&m)
            .unwrap_or_default()
            .contains("hunter2"));
    }

    #[test]
    fn exit_status_display() {
        assert_eq!(ExitStatus::exited(3).to_string(), "exit code 3");
        assert_eq!(
            ExitStatus::signaled(9).to_string(),
            "killed by signal 9 (SIGKILL)"
        );
        assert!(ExitStatus::exited(0).success());
        assert!(!ExitStatus::failed(Some(127), "x").success());
    }
}
