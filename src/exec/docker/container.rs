//! A task's container as the daemon holds it: the create body built from a [`ProcessSpec`] (limits, published
//! ports, labels), and what an inspected container says: its runtime state and the spec it was created from
//! (for adoption).
//!
//! Must not: talk to the daemon (the controller does).

use std::collections::HashMap;
use std::time::Duration;

use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, HostConfig, PortBinding, PortMap,
};
use nix::sys::signal::Signal;

use crate::exec::{
    ExecError, ExitStatus, Limits, PortProtocol, ProcessSpec, PublishedPort, RuntimeState,
};

use super::{LABEL_ROOT, LABEL_TASK_ID, LABEL_TASK_NAME};

/// Reported when the task's container vanished (removed behind our back).
pub const GONE_MESSAGE: &str = "task container disappeared";
pub use crate::exec::OOM_MESSAGE;

/// A start failure as the task reports it: Docker's `exec: "x": executable file not found
/// in $PATH` rather than the whole OCI runtime chain when that is what happened.
pub(crate) fn start_message(raw: &str) -> String {
    if let Some(i) = raw.find("exec: \"") {
        let tail = &raw[i..];
        let end = tail.find(": unknown").unwrap_or(tail.len());
        return tail[..end].to_string();
    }
    raw.to_string()
}

/// The container to create for `spec`, with `binds` for its secret and config files.
pub(crate) fn create_body(
    spec: &ProcessSpec,
    stop_signal: Signal,
    binds: Vec<String>,
) -> ContainerCreateBody {
    let (entrypoint, cmd) = match spec.argv.split_first() {
        Some((first, rest)) => (Some(vec![first.clone()]), Some(rest.to_vec())),
        None => (None, None),
    };
    let hostname = spec
        .env
        .iter()
        .find(|(k, _)| k == "HOSTNAME")
        .map(|(_, v)| v.clone())
        .filter(|h| !h.is_empty());
    let (exposed_ports, port_bindings) = port_config(&spec.ports);
    if spec.ports.iter().any(|p| p.ingress) {
        warn_ingress_once(&spec.task_name);
    }
    let limits = spec.limits;
    let grace = spec.stop_grace_period;
    let stop_timeout = grace.as_secs() as i64 + i64::from(grace.subsec_nanos() > 0);
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        entrypoint,
        cmd,
        env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        working_dir: spec.working_dir.clone().filter(|w| !w.is_empty()),
        user: spec.user.clone().filter(|u| !u.is_empty()),
        hostname,
        stop_signal: Some(stop_signal.as_str().to_string()),
        stop_timeout: Some(stop_timeout),
        exposed_ports,
        labels: Some(
            spec.labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .chain([
                    (LABEL_TASK_ID.to_string(), spec.task_id.clone()),
                    (LABEL_TASK_NAME.to_string(), spec.task_name.clone()),
                ])
                .collect::<HashMap<_, _>>(),
        ),
        host_config: Some(HostConfig {
            binds: (!binds.is_empty()).then_some(binds),
            readonly_rootfs: Some(spec.read_only),
            init: spec.init.then_some(true),
            nano_cpus: (limits.nano_cpus > 0).then_some(limits.nano_cpus),
            memory: (limits.memory_bytes > 0)
                .then(|| i64::try_from(limits.memory_bytes).unwrap_or(i64::MAX)),
            pids_limit: (limits.pids > 0).then_some(limits.pids),
            cap_add: (!spec.cap_add.is_empty()).then(|| spec.cap_add.clone()),
            cap_drop: (!spec.cap_drop.is_empty()).then(|| spec.cap_drop.clone()),
            port_bindings,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Docker's `ExposedPorts` and `PortBindings` for the published ports (`None` when there are
/// none). A port without a published number gets an empty host port: the daemon picks one.
fn port_config(ports: &[PublishedPort]) -> (Option<Vec<String>>, Option<PortMap>) {
    if ports.is_empty() {
        return (None, None);
    }
    let mut exposed = Vec::new();
    let mut bindings = PortMap::new();
    for p in ports {
        let key = format!("{}/{}", p.target, p.protocol.as_str());
        if !exposed.contains(&key) {
            exposed.push(key.clone());
        }
        let binding = PortBinding {
            host_ip: None,
            host_port: Some(p.published.map(|n| n.to_string()).unwrap_or_default()),
        };
        bindings
            .entry(key)
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(binding);
    }
    (Some(exposed), Some(bindings))
}

/// Logs, once per process, that routing-mesh ports are published on the task's node only.
fn warn_ingress_once(task_name: &str) {
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        tracing::warn!(
            task = task_name,
            "ingress (routing mesh) ports are not supported by the docker executor: they are \
             published on the node running the task only, like host-mode ports"
        );
    });
}

/// The published ports of a container, read back from its `PortBindings`.
fn ports_of(info: &ContainerInspectResponse) -> Vec<PublishedPort> {
    let Some(map) = info
        .host_config
        .as_ref()
        .and_then(|h| h.port_bindings.as_ref())
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (key, bindings) in map {
        let (target, proto) = key.split_once('/').unwrap_or((key.as_str(), "tcp"));
        let (Ok(target), Some(protocol)) = (target.parse::<u16>(), PortProtocol::parse(proto))
        else {
            continue;
        };
        for b in bindings.iter().flatten() {
            out.push(PublishedPort {
                target,
                published: b.host_port.as_deref().and_then(|p| p.parse().ok()),
                protocol,
                ingress: false,
            });
        }
    }
    out.sort_by_key(|p| (p.target, p.protocol.as_str(), p.published));
    out
}

/// Whether the container ever started (its start time is set).
pub(crate) fn started(info: &ContainerInspectResponse) -> bool {
    info.state
        .as_ref()
        .and_then(|s| s.started_at.as_deref())
        .is_some_and(|t| !t.is_empty() && !t.starts_with("0001-01-01"))
}

/// What the daemon says about the task's container.
pub(crate) fn observed(info: &ContainerInspectResponse) -> RuntimeState {
    use bollard::models::ContainerStateStatusEnum as S;
    let Some(state) = info.state.as_ref() else {
        return RuntimeState::New;
    };
    let code = state.exit_code.map(|c| c as i32);
    let error = state.error.clone().filter(|e| !e.is_empty());
    match state.status {
        Some(S::RUNNING | S::PAUSED | S::RESTARTING) => RuntimeState::Running,
        Some(S::CREATED) if !started(info) => match error {
            // A start that failed leaves the container "created" with the reason.
            Some(e) => RuntimeState::Exited(ExitStatus::failed(
                code.filter(|c| *c != 0),
                start_message(&e),
            )),
            None => RuntimeState::Prepared,
        },
        _ if state.oom_killed == Some(true) => RuntimeState::Exited(code.map_or_else(
            || ExitStatus::failed(None, OOM_MESSAGE),
            ExitStatus::oom_killed,
        )),
        _ => match error {
            Some(e) => RuntimeState::Exited(ExitStatus::failed(code, e)),
            None => RuntimeState::Exited(ExitStatus::exited(code.unwrap_or(0))),
        },
    }
}

/// The runtime state of a task container (for `list`).
pub(crate) fn runtime_state(info: &ContainerInspectResponse) -> RuntimeState {
    observed(info)
}

/// Rebuilds what an adopted controller needs from the container itself: name, stop signal and
/// grace period (secret data is not needed any more and is not recoverable).
pub(crate) fn spec_of(
    task_id: &str,
    info: &ContainerInspectResponse,
) -> Result<ProcessSpec, ExecError> {
    let config = info.config.clone().unwrap_or_default();
    let labels = config.labels.clone().unwrap_or_default();
    if labels.get(LABEL_TASK_ID).map(String::as_str) != Some(task_id) {
        return Err(ExecError::NotFound(task_id.to_string()));
    }
    let mut argv = config.entrypoint.clone().unwrap_or_default();
    argv.extend(config.cmd.clone().unwrap_or_default());
    Ok(ProcessSpec {
        task_id: task_id.to_string(),
        task_name: labels.get(LABEL_TASK_NAME).cloned().unwrap_or_default(),
        argv,
        env: Vec::new(),
        working_dir: config.working_dir.clone().filter(|w| !w.is_empty()),
        user: config.user.clone().filter(|u| !u.is_empty()),
        stop_signal: config.stop_signal.clone(),
        stop_grace_period: Duration::from_secs(config.stop_timeout.unwrap_or(10).max(0) as u64),
        secrets: Vec::new(),
        configs: Vec::new(),
        image: config.image.clone().unwrap_or_default(),
        read_only: false,
        init: false,
        limits: info
            .host_config
            .as_ref()
            .map_or_else(Limits::default, |h| Limits {
                nano_cpus: h.nano_cpus.unwrap_or(0).max(0),
                memory_bytes: h.memory.unwrap_or(0).max(0) as u64,
                pids: h.pids_limit.unwrap_or(0).max(0),
            }),
        cap_add: Vec::new(),
        cap_drop: Vec::new(),
        ports: ports_of(info),
        labels: labels
            .iter()
            .filter(|(k, _)| {
                k.as_str() != LABEL_TASK_ID
                    && k.as_str() != LABEL_TASK_NAME
                    && k.as_str() != LABEL_ROOT
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    })
}
