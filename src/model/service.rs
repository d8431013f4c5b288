//! Service desired state: `ServiceSpec` and everything a task is made from (`TaskSpec`, `ContainerSpec`), in
//! Swarm's vocabulary. Plain data with serde, so it can travel in Raft entries and over the API.
//!
//! Must not: validate stack files (that is `stack`), or hold observed state.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What a service should be.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceSpec {
    /// Full service name (`STACK_web` for stack services).
    pub name: String,
    /// Service labels (`deploy.labels` plus the stack namespace label).
    pub labels: BTreeMap<String, String>,
    /// Template of every task.
    pub task: TaskSpec,
    /// Replicated, global or a job.
    pub mode: ServiceMode,
    /// How updates roll out.
    pub update: UpdateConfig,
    /// How rollbacks roll out.
    pub rollback: UpdateConfig,
    /// Published ports and endpoint mode.
    pub endpoint: EndpointSpec,
}

/// How many tasks a service runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServiceMode {
    /// A fixed number of long-running tasks.
    Replicated {
        /// Desired number of tasks.
        replicas: u64,
    },
    /// One long-running task on every eligible node.
    Global,
    /// Run-to-completion tasks until `total_completions` succeeded, `max_concurrent` at a time.
    ReplicatedJob {
        /// Tasks running at once.
        max_concurrent: u64,
        /// Successful completions wanted.
        total_completions: u64,
    },
    /// One run-to-completion task on every eligible node.
    GlobalJob,
}

impl Default for ServiceMode {
    fn default() -> Self {
        ServiceMode::Replicated { replicas: 1 }
    }
}

impl ServiceMode {
    /// Docker's name for the mode (`replicated`, `global`, `replicated job`, `global job`).
    pub fn name(&self) -> &'static str {
        match self {
            ServiceMode::Replicated { .. } => "replicated",
            ServiceMode::Global => "global",
            ServiceMode::ReplicatedJob { .. } => "replicated job",
            ServiceMode::GlobalJob => "global job",
        }
    }

    /// Whether tasks run to completion.
    pub fn is_job(&self) -> bool {
        matches!(
            self,
            ServiceMode::ReplicatedJob { .. } | ServiceMode::GlobalJob
        )
    }
}

/// The template each task of a service is created from.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// What runs.
    pub container: ContainerSpec,
    /// Limits and reservations.
    pub resources: Resources,
    /// When a finished task is replaced.
    pub restart: RestartPolicy,
    /// Where tasks may run.
    pub placement: Placement,
    /// Networks the tasks attach to.
    pub networks: Vec<NetworkAttachment>,
    /// Log driver and options (kept for the docker executor).
    pub log_driver: Option<LogDriver>,
    /// Bumped by `service update --force` to replace tasks without another change.
    pub force_update: u64,
}

/// The process or container of a task.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// Image reference (metadata for the process executor).
    pub image: String,
    /// Container labels.
    pub labels: BTreeMap<String, String>,
    /// The entrypoint (docker's `Command`); empty = the image's.
    pub command: Vec<String>,
    /// The arguments (docker's `Args`, the compose `command`).
    pub args: Vec<String>,
    /// Hostname, may hold templates like `{{.Task.Slot}}`.
    pub hostname: String,
    /// `KEY=VALUE` entries, sorted; values may hold templates.
    pub env: Vec<String>,
    /// Working directory.
    pub dir: String,
    /// User (`name`, `uid`, `uid:gid`).
    pub user: String,
    /// Allocate a terminal.
    pub tty: bool,
    /// Keep stdin open.
    pub open_stdin: bool,
    /// Root file system read-only.
    pub read_only: bool,
    /// Run an init process.
    pub init: Option<bool>,
    /// Signal that stops the task (default SIGTERM).
    pub stop_signal: String,
    /// Time between the stop signal and SIGKILL (default 10s).
    pub stop_grace_period: Option<Duration>,
    /// Health check.
    pub healthcheck: Option<HealthConfig>,
    /// `IP HOSTNAME` entries for /etc/hosts.
    pub hosts: Vec<String>,
    /// DNS settings.
    pub dns: DnsConfig,
    /// Secrets given to the task.
    pub secrets: Vec<FileReference>,
    /// Configs given to the task.
    pub configs: Vec<FileReference>,
    /// Mounts.
    pub mounts: Vec<Mount>,
    /// Namespaced kernel parameters.
    pub sysctls: BTreeMap<String, String>,
    /// Capabilities added.
    pub cap_add: Vec<String>,
    /// Capabilities dropped.
    pub cap_drop: Vec<String>,
    /// Resource limits (`nofile`, ...).
    pub ulimits: Vec<Ulimit>,
}

/// A health check.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HealthConfig {
    /// `["CMD", ...]`, `["CMD-SHELL", "..."]`, `["NONE"]` (disabled) or empty (inherit).
    pub test: Vec<String>,
    /// Time between checks (default 30s).
    pub interval: Option<Duration>,
    /// Time one check may take (default 30s).
    pub timeout: Option<Duration>,
    /// Consecutive failures that make the task unhealthy (default 3).
    pub retries: Option<u64>,
    /// Grace period after start during which failures do not count.
    pub start_period: Option<Duration>,
    /// Interval during the start period.
    pub start_interval: Option<Duration>,
}

/// DNS settings of a task.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsConfig {
    /// Name servers.
    pub nameservers: Vec<String>,
    /// Search domains.
    pub search: Vec<String>,
}

/// A secret or config given to a task as a file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileReference {
    /// Cluster name of the secret/config (`STACK_db_password`).
    pub name: String,
    /// Id of the object; filled in by the manager when the service is created.
    pub id: String,
    /// File name (secrets: under /run/secrets) or absolute path (configs).
    pub target: String,
    /// Owner uid.
    pub uid: String,
    /// Owner gid.
    pub gid: String,
    /// File mode.
    pub mode: u32,
}

/// A mount of a task.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// Bind, volume or tmpfs.
    pub kind: MountKind,
    /// Host path or volume name.
    pub source: String,
    /// Path inside the task.
    pub target: String,
    /// Read-only.
    pub read_only: bool,
    /// tmpfs size in bytes.
    pub tmpfs_size: Option<u64>,
}

/// The kind of a mount.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum MountKind {
    /// A named volume.
    #[default]
    Volume,
    /// A host path.
    Bind,
    /// A memory file system.
    Tmpfs,
    /// A named pipe.
    Npipe,
    /// A cluster volume.
    Cluster,
}

/// A resource limit (`ulimit`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ulimit {
    /// Name, e.g. `nofile`.
    pub name: String,
    /// Soft limit.
    pub soft: i64,
    /// Hard limit.
    pub hard: i64,
}

/// Limits and reservations.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    /// Upper bounds.
    pub limits: ResourceValues,
    /// What the scheduler sets aside on a node.
    pub reservations: ResourceValues,
}

/// CPU, memory and pids amounts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourceValues {
    /// Billionths of a CPU (0 = none).
    pub nano_cpus: i64,
    /// Bytes (0 = none).
    pub memory_bytes: u64,
    /// Process count (0 = none).
    pub pids: i64,
    /// Generic resources (`gpu=2`).
    pub generic: Vec<(String, String)>,
}

/// When a finished task is replaced by a new one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartPolicy {
    /// On which exits.
    pub condition: RestartCondition,
    /// Wait between a task ending and its replacement starting (default 5s).
    pub delay: Duration,
    /// Restarts allowed within `window` (0 = unlimited).
    pub max_attempts: u64,
    /// The window over which attempts are counted (0 = forever).
    pub window: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            condition: RestartCondition::Any,
            delay: Duration::from_secs(5),
            max_attempts: 0,
            window: Duration::ZERO,
        }
    }
}

/// Which exits lead to a restart.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestartCondition {
    /// Never.
    None,
    /// Non-zero exit or failure.
    OnFailure,
    /// Always (the default).
    #[default]
    Any,
}

/// Where tasks may run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// Constraints as written (`node.role==manager`).
    pub constraints: Vec<String>,
    /// Spread preferences (`node.labels.zone`).
    pub preferences: Vec<String>,
    /// At most this many tasks of the service per node (0 = no limit).
    pub max_replicas_per_node: u64,
}

/// A task's attachment to a network.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkAttachment {
    /// Network name (`STACK_default`).
    pub target: String,
    /// DNS aliases on that network.
    pub aliases: Vec<String>,
}

/// Log driver settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogDriver {
    /// Driver name (empty = the node's default).
    pub name: String,
    /// Driver options.
    pub options: BTreeMap<String, String>,
}

/// How updates or rollbacks proceed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UpdateConfig {
    /// Tasks replaced at once (0 = all).
    pub parallelism: u64,
    /// Wait between batches.
    pub delay: Duration,
    /// What to do when too many new tasks fail.
    pub failure_action: FailureAction,
    /// How long a new task is watched for failure.
    pub monitor: Duration,
    /// Fraction of failed tasks tolerated.
    pub max_failure_ratio: f64,
    /// Stop the old task first, or start the new one first.
    pub order: UpdateOrder,
}

impl Default for UpdateConfig {
    fn default() -> Self {
        UpdateConfig {
            parallelism: 1,
            delay: Duration::ZERO,
            failure_action: FailureAction::Pause,
            monitor: Duration::from_secs(5),
            max_failure_ratio: 0.0,
            order: UpdateOrder::StopFirst,
        }
    }
}

/// What an update does when it fails.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailureAction {
    /// Stop and wait (the default).
    #[default]
    Pause,
    /// Keep going.
    Continue,
    /// Go back to the previous spec.
    Rollback,
}

/// Order of stop and start during an update.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum UpdateOrder {
    /// Stop the old task, then start the new one (the default).
    #[default]
    StopFirst,
    /// Start the new task, then stop the old one.
    StartFirst,
}

/// Published ports and how the service is reached.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointSpec {
    /// VIP or DNS round robin.
    pub mode: EndpointMode,
    /// Published ports.
    pub ports: Vec<PortConfig>,
}

/// How a service is reached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum EndpointMode {
    /// A virtual IP (the default).
    #[default]
    Vip,
    /// DNS round robin.
    Dnsrr,
}

/// One published port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortConfig {
    /// Protocol.
    pub protocol: PortProtocol,
    /// Port inside the task.
    pub target_port: u16,
    /// Port published on the node(s) (None = assigned).
    pub published_port: Option<u16>,
    /// Ingress (routing mesh) or host.
    pub publish_mode: PublishMode,
}

/// A port's protocol.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum PortProtocol {
    /// TCP.
    #[default]
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

/// Where a port is published.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum PublishMode {
    /// On every node, through the routing mesh.
    #[default]
    Ingress,
    /// On the node running the task.
    Host,
}

/// A service as stored: its spec, the spec version tasks are compared with, and rollout progress.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Service {
    /// Service id.
    pub id: String,
    /// Version and timestamps, set by the store on apply.
    pub meta: super::meta::Meta,
    /// What the service should be.
    pub spec: ServiceSpec,
    /// Bumped by the proposer each time `spec` changes; tasks with a lower `spec_version` are outdated.
    pub spec_version: u64,
    /// The spec before the last update (for rollback).
    pub previous_spec: Option<ServiceSpec>,
    /// Progress of the current or last rolling update.
    pub update_status: Option<UpdateStatus>,
    /// The service's virtual IP on each network it attaches to (`endpoint_mode: vip`; none for dnsrr),
    /// allocated by the managers' IPAM: docker's `Endpoint.VirtualIPs`.
    #[serde(default)]
    pub virtual_ips: Vec<NetworkAddress>,
}

/// An address on a network, as IPAM allocated it: a service's VIP or a task's address.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NetworkAddress {
    /// Network id.
    pub network_id: String,
    /// The address with the subnet's prefix length (`10.0.1.5/24`).
    pub addr: String,
}

/// Progress of a rolling update or rollback.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateStatus {
    /// Where the update is.
    pub state: UpdateState,
    /// When it started (unix millis).
    pub started_at: u64,
    /// When it completed (unix millis), if it did.
    pub completed_at: Option<u64>,
    /// Why it is in this state.
    pub message: String,
}

/// Where a rolling update is. Serialized with Docker's names (`rollback_completed`); the Raft encoding (postcard)
/// uses the variant index, so the names do not affect stored data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateState {
    /// Replacing outdated tasks.
    Updating,
    /// Stopped after a failure (`failure_action: pause`).
    Paused,
    /// Every task is up to date.
    Completed,
    /// Rolling back to the previous spec.
    RollbackStarted,
    /// The rollback stopped after a failure.
    RollbackPaused,
    /// The rollback finished.
    RollbackCompleted,
}

impl UpdateState {
    /// Whether tasks are being replaced (`Updating` or `RollbackStarted`).
    pub fn in_progress(self) -> bool {
        matches!(self, UpdateState::Updating | UpdateState::RollbackStarted)
    }

    /// Whether this is a state of a rollback.
    pub fn is_rollback(self) -> bool {
        matches!(
            self,
            UpdateState::RollbackStarted
                | UpdateState::RollbackPaused
                | UpdateState::RollbackCompleted
        )
    }

    /// Docker's lower-case name (`updating`, `paused`, `completed`, `rollback_started`, ...).
    pub fn name(self) -> &'static str {
        match self {
            UpdateState::Updating => "updating",
            UpdateState::Paused => "paused",
            UpdateState::Completed => "completed",
            UpdateState::RollbackStarted => "rollback_started",
            UpdateState::RollbackPaused => "rollback_paused",
            UpdateState::RollbackCompleted => "rollback_completed",
        }
    }
}
