//! The limits a cluster puts on what it stores, so that no request — from `swarmctl`, a GitOps watcher or a
//! forged client — can make a manager allocate without bound. The configurable ones live in the cluster object
//! (`ClusterSettings::limits`, changed with `swarmctl swarm update`), so every manager's apply checks the same
//! numbers; the fixed ones are constants. `stack validate`, the control API and the store's apply all call the
//! checks below.
//!
//! A check refuses a value over its limit only when it grows: an object stored before an operator lowered a
//! limit can still be updated as long as it does not get bigger.
//!
//! Pure: no I/O. Must not: know who calls it (the callers add file positions, key paths or gRPC codes).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::service::{ServiceMode, ServiceSpec};

/// The largest secret or config data docker accepts (500 KiB).
pub const MAX_SECRET_SIZE: usize = 500 * 1024;
/// Bytes of a service's environment (`KEY=value` entries, each counted with its terminating NUL), like the
/// kernel's own 128 KiB cap on one string, doubled for the whole set.
pub const MAX_ENV_BYTES: u64 = 256 * 1024;
/// Bytes of one set of labels (keys and values).
pub const MAX_LABELS_BYTES: u64 = 64 * 1024;
/// Bytes of a stack's files, as recorded in the stack object (and in each kept revision).
pub const MAX_STACK_FILES_BYTES: u64 = 4 * 1024 * 1024;
/// The largest gRPC message a server or client accepts (a node's whole assignment set travels in one).
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;
/// Tasks one controller round creates or places at most: a large service converges in several rounds, each a
/// Raft entry of bounded size, so heartbeats and status reports are applied between them.
pub const MAX_TASK_OPS_PER_ROUND: usize = 512;

/// Longest stack name (docker's: a stack name prefixes DNS-visible service names).
pub const MAX_STACK_NAME: usize = 63;
/// Longest secret or config name (docker's).
pub const MAX_OBJECT_NAME: usize = 64;

/// Docker's name rule for stacks, secrets and configs: 1 to `max` letters, digits, `-`, `_` and `.`, starting
/// with a letter or digit.
pub fn valid_name(name: &str, max: usize) -> bool {
    name.len() <= max
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
}

/// Highest `max_replicas` a cluster may set.
pub const CEILING_REPLICAS: u64 = 1_000_000;
/// Highest `max_services_per_stack` a cluster may set.
pub const CEILING_SERVICES_PER_STACK: u64 = 100_000;
/// Highest `stack_history` a cluster may set.
pub const CEILING_STACK_HISTORY: u64 = 100;
/// Highest task history retention a cluster may set.
pub const CEILING_TASK_HISTORY: u64 = 100;

/// The configurable limits of a cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Tasks one service may ask for: its replicas, or a job's `max_concurrent` and `total_completions`
    /// (default 10 000, at most [`CEILING_REPLICAS`]).
    pub max_replicas: u64,
    /// Services one stack may own (default 5 000, at most [`CEILING_SERVICES_PER_STACK`]).
    pub max_services_per_stack: u64,
    /// Revisions a stack keeps for `stack history` / `rollback` (default 10, 1 to [`CEILING_STACK_HISTORY`]).
    pub stack_history: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_replicas: 10_000,
            max_services_per_stack: 5_000,
            stack_history: 10,
        }
    }
}

/// A value over its limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OverLimit {
    /// What was measured ("replicas", "environment bytes", …).
    pub what: String,
    /// Its value.
    pub value: u64,
    /// The limit.
    pub max: u64,
    /// The `swarmctl swarm update` flag that raises the limit, and how far; `None` for a fixed limit.
    pub raise: Option<(&'static str, u64)>,
}

impl std::fmt::Display for OverLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} is over the limit of {}",
            self.what, self.value, self.max
        )?;
        if let Some((flag, ceiling)) = self.raise {
            write!(
                f,
                " (the cluster's limit: raise it with `swarmctl swarm update {flag} N`, up to {ceiling})"
            )?;
        }
        Ok(())
    }
}

/// Refuses `value` over `max` unless it did not grow from `old` (the rule every check here follows).
pub fn bounded(
    what: &str,
    value: u64,
    old: Option<u64>,
    max: u64,
    raise: Option<(&'static str, u64)>,
) -> Result<(), OverLimit> {
    if value <= max || old.is_some_and(|o| value <= o) {
        return Ok(());
    }
    Err(OverLimit {
        what: what.to_owned(),
        value,
        max,
        raise,
    })
}

/// The task count a mode asks for (the larger of a job's two numbers; 0 for global modes).
pub fn mode_tasks(mode: &ServiceMode) -> u64 {
    match mode {
        ServiceMode::Replicated { replicas } => *replicas,
        ServiceMode::ReplicatedJob {
            max_concurrent,
            total_completions,
        } => (*max_concurrent).max(*total_completions),
        ServiceMode::Global | ServiceMode::GlobalJob => 0,
    }
}

/// Bytes of an environment as the kernel counts them.
pub fn env_bytes(env: &[String]) -> u64 {
    env.iter().map(|e| e.len() as u64 + 1).sum()
}

/// Bytes of a set of labels.
pub fn labels_bytes(labels: &BTreeMap<String, String>) -> u64 {
    labels.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum()
}

impl Limits {
    /// Checks a replica (or job task) count.
    pub fn check_replicas(&self, n: u64, old: Option<u64>) -> Result<(), OverLimit> {
        bounded(
            "replicas",
            n,
            old,
            self.max_replicas,
            Some(("--max-replicas", CEILING_REPLICAS)),
        )
    }

    /// Checks the number of services of one stack.
    pub fn check_stack_services(&self, n: u64, old: Option<u64>) -> Result<(), OverLimit> {
        bounded(
            "services in one stack",
            n,
            old,
            self.max_services_per_stack,
            Some(("--max-services-per-stack", CEILING_SERVICES_PER_STACK)),
        )
    }

    /// Checks everything of a service spec that has a limit; `old` is the stored spec on an update.
    pub fn check_service(
        &self,
        spec: &ServiceSpec,
        old: Option<&ServiceSpec>,
    ) -> Result<(), OverLimit> {
        self.check_replicas(mode_tasks(&spec.mode), old.map(|o| mode_tasks(&o.mode)))?;
        let c = &spec.task.container;
        let old_c = old.map(|o| &o.task.container);
        check_env(&c.env, old_c.map(|o| o.env.as_slice()))?;
        check_labels("service labels", &spec.labels, old.map(|o| &o.labels))?;
        check_labels("container labels", &c.labels, old_c.map(|o| &o.labels))
    }

    /// Checks that these limits are themselves within their ceilings.
    pub fn check_ceilings(&self) -> Result<(), OverLimit> {
        let fixed = |what: &str, value, max| bounded(what, value, None, max, None);
        fixed("--max-replicas", self.max_replicas, CEILING_REPLICAS)?;
        fixed(
            "--max-services-per-stack",
            self.max_services_per_stack,
            CEILING_SERVICES_PER_STACK,
        )?;
        fixed("--stack-history", self.stack_history, CEILING_STACK_HISTORY)?;
        if self.stack_history == 0 {
            return Err(OverLimit {
                what: "--stack-history (at least 1)".into(),
                value: 0,
                max: CEILING_STACK_HISTORY,
                raise: None,
            });
        }
        Ok(())
    }
}

/// Checks a service's environment against [`MAX_ENV_BYTES`].
pub fn check_env(env: &[String], old: Option<&[String]>) -> Result<(), OverLimit> {
    bounded(
        "environment bytes",
        env_bytes(env),
        old.map(env_bytes),
        MAX_ENV_BYTES,
        None,
    )
}

/// Checks one set of labels against [`MAX_LABELS_BYTES`].
pub fn check_labels(
    what: &str,
    labels: &BTreeMap<String, String>,
    old: Option<&BTreeMap<String, String>>,
) -> Result<(), OverLimit> {
    bounded(
        &format!("{what} bytes"),
        labels_bytes(labels),
        old.map(labels_bytes),
        MAX_LABELS_BYTES,
        None,
    )
}

/// Checks a stack's recorded files against [`MAX_STACK_FILES_BYTES`].
pub fn check_stack_files(files: &[(String, String)], old: Option<u64>) -> Result<(), OverLimit> {
    bounded(
        "stack file bytes",
        stack_files_bytes(files),
        old,
        MAX_STACK_FILES_BYTES,
        None,
    )
}

/// Bytes of a stack's files (names and contents).
pub fn stack_files_bytes(files: &[(String, String)]) -> u64 {
    files.iter().map(|(n, t)| (n.len() + t.len()) as u64).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(mode: ServiceMode) -> ServiceSpec {
        ServiceSpec {
            name: "web".into(),
            mode,
            ..ServiceSpec::default()
        }
    }

    #[test]
    fn a_huge_replica_count_is_refused_with_the_limit_and_how_to_raise_it() {
        let l = Limits::default();
        let err = l
            .check_service(
                &spec(ServiceMode::Replicated {
                    replicas: 4_000_000_000,
                }),
                None,
            )
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "replicas 4000000000 is over the limit of 10000 (the cluster's limit: raise it with \
             `swarmctl swarm update --max-replicas N`, up to 1000000)"
        );
        let job = ServiceMode::ReplicatedJob {
            max_concurrent: 1,
            total_completions: 20_000,
        };
        assert!(l.check_service(&spec(job), None).is_err());
        assert!(l
            .check_service(&spec(ServiceMode::Replicated { replicas: 10_000 }), None)
            .is_ok());
        assert!(l.check_service(&spec(ServiceMode::Global), None).is_ok());
    }

    #[test]
    fn an_object_over_a_lowered_limit_may_stay_but_not_grow() {
        let l = Limits {
            max_replicas: 5,
            ..Limits::default()
        };
        let old = spec(ServiceMode::Replicated { replicas: 8 });
        assert!(l.check_service(&old, Some(&old)).is_ok());
        let smaller = spec(ServiceMode::Replicated { replicas: 7 });
        assert!(l.check_service(&smaller, Some(&old)).is_ok());
        let bigger = spec(ServiceMode::Replicated { replicas: 9 });
        assert!(l.check_service(&bigger, Some(&old)).is_err());
    }

    #[test]
    fn environment_and_labels_have_fixed_byte_limits() {
        let mut s = spec(ServiceMode::Replicated { replicas: 1 });
        s.task.container.env = vec![format!("BIG={}", "x".repeat(MAX_ENV_BYTES as usize))];
        let err = Limits::default().check_service(&s, None).unwrap_err();
        assert!(err
            .to_string()
            .starts_with("environment bytes 262149 is over the limit of 262144"));
        assert!(!err.to_string().contains("swarm update"), "{err}");
        let mut s = spec(ServiceMode::Replicated { replicas: 1 });
        s.labels
            .insert("k".into(), "v".repeat(MAX_LABELS_BYTES as usize));
        let err = Limits::default().check_service(&s, None).unwrap_err();
        assert_eq!(err.what, "service labels bytes");
    }

    #[test]
    fn limits_cannot_pass_their_ceilings() {
        assert!(Limits::default().check_ceilings().is_ok());
        let l = Limits {
            max_replicas: CEILING_REPLICAS + 1,
            ..Limits::default()
        };
        assert!(l.check_ceilings().is_err());
        let l = Limits {
            stack_history: 0,
            ..Limits::default()
        };
        assert!(l.check_ceilings().is_err());
    }

    #[test]
    fn settings_stored_before_limits_existed_read_as_the_defaults() {
        let l: Limits = serde_json::from_str("{}").unwrap();
        assert_eq!(l, Limits::default());
    }
}
