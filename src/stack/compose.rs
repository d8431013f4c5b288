//! The normalized stack file: every short syntax expanded to its long form, typed values, one struct per
//! Compose section, serialized with docker's keys and key order so `stack config` matches `docker stack config`.
//!
//! Owns: the types and how several files merge (`Merge`). Must not: read files or know about the cluster model
//! (that is `convert`).

use std::collections::BTreeMap;

use serde::Serialize;

use super::units::GoDuration;
use super::yaml::Pos;

/// A whole stack: the result of loading and merging one or more files.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct StackFile {
    /// The `version:` of the last file that gave one (informational only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Services by name.
    pub services: BTreeMap<String, Service>,
    /// Networks by the name the file uses.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub networks: BTreeMap<String, Network>,
    /// Volumes by the name the file uses.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub volumes: BTreeMap<String, Volume>,
    /// Secrets by the name the file uses.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, FileObject>,
    /// Configs by the name the file uses.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub configs: BTreeMap<String, FileObject>,
}

/// One service.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Service {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cap_add: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cap_drop: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub configs: Vec<FileRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deploy: Option<Deploy>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dns_search: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// Environment after env_file and `environment` are combined; `None` = pass-through without value.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub environment: BTreeMap<String, Option<String>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub env_file: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub extra_hosts: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<Healthcheck>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init: Option<bool>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logging: Option<Logging>,
    /// Networks the service attaches to; `None` = attached without options.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub networks: BTreeMap<String, Option<ServiceNetwork>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<Port>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<FileRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stdin_open: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_grace_period: Option<GoDuration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub sysctls: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tmpfs: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tty: Option<bool>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub ulimits: BTreeMap<String, Ulimit>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<ServiceVolume>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// Where the service is defined (first file that names it), for later errors.
    #[serde(skip)]
    pub pos: Pos,
}

/// `deploy:`
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Deploy {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<DeployMode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u64>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub update_config: Option<UpdateConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollback_config: Option<UpdateConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<RestartPolicy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub placement: Option<Placement>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint_mode: Option<EndpointMode>,
    /// Where `replicas` was written, for the global-with-replicas check.
    #[serde(skip)]
    pub replicas_pos: Pos,
}

/// `deploy.mode`
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeployMode {
    /// A fixed number of tasks (the default).
    Replicated,
    /// One task on every eligible node.
    Global,
    /// Run-to-completion tasks, `replicas` at a time.
    ReplicatedJob,
    /// One run-to-completion task on every eligible node.
    GlobalJob,
}

/// `deploy.endpoint_mode`
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointMode {
    /// A virtual IP in front of the tasks (the default).
    Vip,
    /// DNS round robin over the tasks' addresses.
    Dnsrr,
}

/// `update_config` / `rollback_config`
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct UpdateConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parallelism: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay: Option<GoDuration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_action: Option<FailureAction>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monitor: Option<GoDuration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_failure_ratio: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order: Option<UpdateOrder>,
}

/// `failure_action`
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureAction {
    /// Stop updating and wait for an operator (the default).
    Pause,
    /// Keep going.
    Continue,
    /// Roll the service back to its previous spec.
    Rollback,
}

/// `order`
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateOrder {
    /// Stop the old task before starting its replacement (the default).
    StopFirst,
    /// Start the replacement first, then stop the old task.
    StartFirst,
}

/// `resources`
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Resources {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limits: Option<ResourceValues>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reservations: Option<ResourceValues>,
}

/// `limits` / `reservations`
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct ResourceValues {
    /// The cpus text as written (`"0.5"`); `nano_cpus` is its value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpus: Option<String>,
    /// Bytes, printed as docker does (a string of digits).
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_opt_bytes"
    )]
    pub memory: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pids: Option<i64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub generic_resources: Vec<GenericResource>,
    /// The value of `cpus` in billionths of a CPU.
    #[serde(skip)]
    pub nano_cpus: Option<i64>,
}

fn ser_opt_bytes<S: serde::Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(b) => s.serialize_str(&b.to_string()),
        None => s.serialize_none(),
    }
}

/// One generic resource (`discrete_resource_spec` / `named_resource_spec`).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct GenericResource {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discrete_resource_spec: Option<GenericResourceSpec<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub named_resource_spec: Option<GenericResourceSpec<String>>,
}

/// `kind` + `value` of a generic resource.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct GenericResourceSpec<T> {
    pub kind: String,
    pub value: T,
}

/// `restart_policy`
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct RestartPolicy {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub condition: Option<RestartCondition>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay: Option<GoDuration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<GoDuration>,
}

/// `restart_policy.condition`
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartCondition {
    /// Never restart.
    None,
    /// Restart when the task exits non-zero or fails.
    OnFailure,
    /// Always restart (the default).
    Any,
}

/// `placement`
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Placement {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub preferences: Vec<PlacementPreference>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_replicas_per_node: Option<u64>,
}

/// One `placement.preferences` entry.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct PlacementPreference {
    pub spread: String,
}

/// `healthcheck`
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Healthcheck {
    /// `["CMD", ...]`, `["CMD-SHELL", "..."]` or `["NONE"]` (disabled).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<GoDuration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<GoDuration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retries: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_period: Option<GoDuration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_interval: Option<GoDuration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disable: Option<bool>,
}

/// `logging`
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Logging {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
}

/// A service's attachment options for one network.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct ServiceNetwork {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv4_address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv6_address: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub driver_opts: BTreeMap<String, String>,
}

/// A published port (long form).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Port {
    pub mode: PortMode,
    pub target: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub published: Option<u16>,
    pub protocol: Protocol,
}

/// `ports[].mode`
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PortMode {
    /// Published on every node through the routing mesh.
    Ingress,
    /// Published on the node that runs the task.
    Host,
}

/// `ports[].protocol`
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

/// A reference from a service to a secret or config (long form).
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct FileRef {
    pub source: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    /// Where the reference is written.
    #[serde(skip)]
    pub pos: Pos,
}

/// A mount of a service (long form).
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct ServiceVolume {
    #[serde(rename = "type")]
    pub kind: VolumeKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub target: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consistency: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind: Option<BindOptions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume: Option<VolumeOptions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tmpfs: Option<TmpfsOptions>,
    /// Where the mount is written.
    #[serde(skip)]
    pub pos: Pos,
}

/// `volumes[].type`
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VolumeKind {
    /// A named (or anonymous) volume.
    #[default]
    Volume,
    /// A host path.
    Bind,
    /// A memory file system.
    Tmpfs,
    /// A named pipe (Windows).
    Npipe,
    /// A cluster (CSI) volume.
    Cluster,
}

/// `volumes[].bind`
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct BindOptions {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub propagation: Option<String>,
}

/// `volumes[].volume`
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct VolumeOptions {
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub nocopy: bool,
}

/// `volumes[].tmpfs`
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct TmpfsOptions {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
}

/// `ulimits.NAME`: one number for both, or soft/hard.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Ulimit {
    /// The same soft and hard limit.
    Single(i64),
    /// Separate limits.
    Pair {
        /// Soft limit.
        soft: i64,
        /// Hard limit.
        hard: i64,
    },
}

/// A top-level network.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Network {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub driver_opts: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipam: Option<Ipam>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub external: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub internal: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub attachable: bool,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// `ipam`
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Ipam {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub config: Vec<IpamPool>,
}

/// One `ipam.config` entry.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct IpamPool {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
}

/// A top-level volume.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Volume {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub driver_opts: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub external: bool,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// A top-level secret or config.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct FileObject {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Absolute path of the file holding the data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub external: bool,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template_driver: Option<String>,
    /// Where the object is declared.
    #[serde(skip)]
    pub pos: Pos,
}

/// Combining a later file's value into an earlier one, the way `docker stack deploy -c a -c b` does:
/// mappings merge key by key, a later scalar wins, lists of keyed items (ports, mounts, secrets, configs) merge by
/// key, other lists are joined without duplicates, and `command`/`entrypoint`/`healthcheck.test` are replaced.
pub trait Merge {
    /// Merges `later` into `self`.
    fn merge_from(&mut self, later: Self);
}

macro_rules! replace_merge {
    ($($t:ty),*) => {$(
        impl Merge for $t {
            fn merge_from(&mut self, later: Self) {
                *self = later;
            }
        }
    )*};
}
replace_merge!(
    String,
    u64,
    i64,
    u32,
    u16,
    f64,
    bool,
    GoDuration,
    DeployMode,
    EndpointMode,
    FailureAction,
    UpdateOrder,
    RestartCondition,
    Ulimit,
    Vec<String>,
    Pos,
    ResourceValues,
    Ipam,
    Healthcheck
);

impl<T: Merge> Merge for Option<T> {
    fn merge_from(&mut self, later: Self) {
        match (self.as_mut(), later) {
            (Some(a), Some(b)) => a.merge_from(b),
            (None, Some(b)) => *self = Some(b),
            (_, None) => {}
        }
    }
}

impl<T: Merge> Merge for BTreeMap<String, T> {
    fn merge_from(&mut self, later: Self) {
        for (k, v) in later {
            match self.get_mut(&k) {
                Some(existing) => existing.merge_from(v),
                None => {
                    self.insert(k, v);
                }
            }
        }
    }
}

/// Joins lists, dropping items already present.
fn union<T: PartialEq>(base: &mut Vec<T>, later: Vec<T>) {
    for item in later {
        if !base.contains(&item) {
            base.push(item);
        }
    }
}

/// Merges lists of keyed items: a later item replaces the earlier one with the same key.
fn keyed<T, K: PartialEq>(base: &mut Vec<T>, later: Vec<T>, key: impl Fn(&T) -> K) {
    for item in later {
        match base.iter().position(|b| key(b) == key(&item)) {
            Some(i) => base[i] = item,
            None => base.push(item),
        }
    }
}

macro_rules! field_merge {
    ($t:ty { $($f:ident),* $(,)? }) => {
        impl Merge for $t {
            fn merge_from(&mut self, later: Self) {
                $( self.$f.merge_from(later.$f); )*
            }
        }
    };
}

impl Merge for Service {
    fn merge_from(&mut self, later: Self) {
        union(&mut self.cap_add, later.cap_add);
        union(&mut self.cap_drop, later.cap_drop);
        self.command.merge_from(later.command);
        keyed(&mut self.configs, later.configs, |r| r.source.clone());
        self.deploy.merge_from(later.deploy);
        union(&mut self.dns, later.dns);
        union(&mut self.dns_search, later.dns_search);
        self.entrypoint.merge_from(later.entrypoint);
        self.environment.extend(later.environment);
        union(&mut self.env_file, later.env_file);
        union(&mut self.extra_hosts, later.extra_hosts);
        self.hostname.merge_from(later.hostname);
        self.healthcheck.merge_from(later.healthcheck);
        self.image.merge_from(later.image);
        self.init.merge_from(later.init);
        self.labels.extend(later.labels);
        self.logging.merge_from(later.logging);
        for (name, net) in later.networks {
            match self.networks.get_mut(&name) {
                Some(existing) => existing.merge_from(net),
                None => {
                    self.networks.insert(name, net);
                }
            }
        }
        keyed(&mut self.ports, later.ports, |p| {
            (p.published, p.target, p.protocol, p.mode)
        });
        self.read_only.merge_from(later.read_only);
        keyed(&mut self.secrets, later.secrets, |r| r.source.clone());
        self.stdin_open.merge_from(later.stdin_open);
        self.stop_grace_period.merge_from(later.stop_grace_period);
        self.stop_signal.merge_from(later.stop_signal);
        self.sysctls.extend(later.sysctls);
        union(&mut self.tmpfs, later.tmpfs);
        self.tty.merge_from(later.tty);
        self.ulimits.merge_from(later.ulimits);
        self.user.merge_from(later.user);
        keyed(&mut self.volumes, later.volumes, |v| v.target.clone());
        self.working_dir.merge_from(later.working_dir);
    }
}

impl Merge for Deploy {
    fn merge_from(&mut self, later: Self) {
        self.mode.merge_from(later.mode);
        if later.replicas.is_some() {
            self.replicas_pos = later.replicas_pos;
        }
        self.replicas.merge_from(later.replicas);
        self.labels.extend(later.labels);
        self.update_config.merge_from(later.update_config);
        self.rollback_config.merge_from(later.rollback_config);
        self.resources.merge_from(later.resources);
        self.restart_policy.merge_from(later.restart_policy);
        self.placement.merge_from(later.placement);
        self.endpoint_mode.merge_from(later.endpoint_mode);
    }
}

impl Merge for Placement {
    fn merge_from(&mut self, later: Self) {
        union(&mut self.constraints, later.constraints);
        union(&mut self.preferences, later.preferences);
        self.max_replicas_per_node
            .merge_from(later.max_replicas_per_node);
    }
}

impl Merge for Logging {
    fn merge_from(&mut self, later: Self) {
        // a different driver means the earlier options no longer apply
        if later.driver.is_some() && later.driver != self.driver {
            self.options.clear();
        }
        self.driver.merge_from(later.driver);
        self.options.extend(later.options);
    }
}

impl Merge for ServiceNetwork {
    fn merge_from(&mut self, later: Self) {
        union(&mut self.aliases, later.aliases);
        self.ipv4_address.merge_from(later.ipv4_address);
        self.ipv6_address.merge_from(later.ipv6_address);
        self.driver_opts.extend(later.driver_opts);
    }
}

field_merge!(UpdateConfig {
    parallelism,
    delay,
    failure_action,
    monitor,
    max_failure_ratio,
    order
});
field_merge!(Resources {
    limits,
    reservations
});
field_merge!(RestartPolicy {
    condition,
    delay,
    max_attempts,
    window
});

impl Merge for Network {
    fn merge_from(&mut self, later: Self) {
        *self = later;
    }
}

impl Merge for Volume {
    fn merge_from(&mut self, later: Self) {
        *self = later;
    }
}

impl Merge for FileObject {
    fn merge_from(&mut self, later: Self) {
        *self = later;
    }
}

impl Merge for StackFile {
    fn merge_from(&mut self, later: Self) {
        self.version.merge_from(later.version);
        self.services.merge_from(later.services);
        self.networks.merge_from(later.networks);
        self.volumes.merge_from(later.volumes);
        self.secrets.merge_from(later.secrets);
        self.configs.merge_from(later.configs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(target: u16, published: Option<u16>) -> Port {
        Port {
            mode: PortMode::Ingress,
            target,
            published,
            protocol: Protocol::Tcp,
        }
    }

    #[test]
    fn later_file_overrides_and_maps_merge() {
        let mut a = Service {
            image: Some("web:1".into()),
            command: Some(vec!["a".into(), "b".into()]),
            environment: BTreeMap::from([
                ("A".into(), Some("1".into())),
                ("B".into(), Some("2".into())),
            ]),
            ports: vec![port(80, Some(8080))],
            dns: vec!["1.1.1.1".into()],
            deploy: Some(Deploy {
                replicas: Some(2),
                update_config: Some(UpdateConfig {
                    parallelism: Some(1),
                    delay: None,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let b = Service {
            image: Some("web:2".into()),
            command: Some(vec!["c".into()]),
            environment: BTreeMap::from([("B".into(), Some("3".into())), ("C".into(), None)]),
            ports: vec![port(80, Some(8080)), port(443, Some(8443))],
            dns: vec!["1.1.1.1".into(), "8.8.8.8".into()],
            deploy: Some(Deploy {
                update_config: Some(UpdateConfig {
                    delay: Some(GoDuration(std::time::Duration::from_secs(5))),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        a.merge_from(b);
        assert_eq!(a.image.as_deref(), Some("web:2"));
        assert_eq!(a.command, Some(vec!["c".to_string()]));
        assert_eq!(a.environment.len(), 3);
        assert_eq!(a.environment["B"], Some("3".into()));
        assert_eq!(a.ports.len(), 2);
        assert_eq!(a.dns, vec!["1.1.1.1".to_string(), "8.8.8.8".to_string()]);
        let deploy = a.deploy.unwrap();
        assert_eq!(deploy.replicas, Some(2));
        let uc = deploy.update_config.unwrap();
        assert_eq!(uc.parallelism, Some(1));
        assert_eq!(
            uc.delay,
            Some(GoDuration(std::time::Duration::from_secs(5)))
        );
    }
}
