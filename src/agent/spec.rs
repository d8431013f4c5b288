//! Converts a task of the model into the runtime-agnostic [`ProcessSpec`] an executor runs:
//! argv from entrypoint + args, environment with templates expanded, hostname, user, stop
//! settings, and secret/config files with their data looked up by id.
//!
//! Must not: talk to an executor, read a clock, or put secret data anywhere but the returned
//! spec's `FileMount`s (errors name secrets, never print their content).

use std::time::Duration;

use thiserror::Error;

use crate::exec::{FileMount, Limits, PortProtocol, ProcessSpec, PublishedPort};
use crate::model::{self, FileReference, PortConfig, PublishMode, Task};

use super::templates::{expand, TemplateContext};

/// Default time between the stop signal and SIGKILL (docker's).
pub const DEFAULT_STOP_GRACE_PERIOD: Duration = Duration::from_secs(10);
/// Default permission bits of secret and config files (docker's).
pub const DEFAULT_FILE_MODE: u32 = 0o444;
/// Where secrets appear inside a task (relative targets are under it).
pub const SECRETS_DIR: &str = "/run/secrets";

/// What the agent knows about a task beyond the task itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskContext {
    /// The name of the task's service.
    pub service_name: String,
    /// This node's id.
    pub node_id: String,
    /// This node's hostname.
    pub node_hostname: String,
    /// The ports the task's service publishes.
    pub ports: Vec<PortConfig>,
}

/// Why a task cannot be turned into a [`ProcessSpec`]; the task is then rejected.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum SpecError {
    /// Neither an entrypoint nor arguments were given.
    #[error("task has no command: the process executor needs `command` or `entrypoint`")]
    NoCommand,
    /// A referenced secret or config has no data in the assignments.
    #[error("{kind} {name} ({id}) is not available on this node")]
    MissingData {
        /// `secret` or `config`.
        kind: &'static str,
        /// The object's name.
        name: String,
        /// The object's id.
        id: String,
    },
    /// A file's owner uid or gid is not a number.
    #[error("{kind} {name}: invalid {field} {value:?}")]
    InvalidOwner {
        /// `secret` or `config`.
        kind: &'static str,
        /// The object's name.
        name: String,
        /// `uid` or `gid`.
        field: &'static str,
        /// What was given.
        value: String,
    },
    /// The health check's test is not `CMD ...`, `CMD-SHELL ...`, `NONE` or empty.
    #[error("invalid healthcheck test {test:?}: it must start with CMD, CMD-SHELL or NONE and name a command")]
    InvalidHealthcheck {
        /// The test as given.
        test: Vec<String>,
    },
}

/// The template context of `task` on this node.
pub fn template_context(task: &Task, ctx: &TaskContext) -> TemplateContext {
    TemplateContext {
        service_id: task.service_id.clone(),
        service_name: ctx.service_name.clone(),
        task_id: task.id.clone(),
        task_name: task.name(&ctx.service_name),
        task_slot: if task.slot != 0 {
            task.slot.to_string()
        } else {
            task.node_id.clone().unwrap_or_else(|| ctx.node_id.clone())
        },
        node_id: ctx.node_id.clone(),
        node_hostname: ctx.node_hostname.clone(),
    }
}

/// Builds the executor's description of `task`. `secrets` and `configs` return an object's data
/// by id.
pub fn process_spec(
    task: &Task,
    ctx: &TaskContext,
    secrets: &dyn Fn(&str) -> Option<Vec<u8>>,
    configs: &dyn Fn(&str) -> Option<Vec<u8>>,
) -> Result<ProcessSpec, SpecError> {
    let c = &task.spec.container;
    let argv: Vec<String> = c.command.iter().chain(&c.args).cloned().collect();
    if argv.is_empty() {
        return Err(SpecError::NoCommand);
    }
    let tctx = template_context(task, ctx);
    let mut env: Vec<(String, String)> = c
        .env
        .iter()
        .filter_map(|entry| entry.split_once('='))
        .map(|(k, v)| (k.to_string(), expand(v, &tctx)))
        .collect();
    let hostname = expand(&c.hostname, &tctx);
    if !hostname.is_empty() {
        env.retain(|(k, _)| k != "HOSTNAME");
        env.push(("HOSTNAME".into(), hostname));
    }
    let secrets = c
        .secrets
        .iter()
        .map(|r| file_mount(r, "secret", secrets))
        .collect::<Result<Vec<_>, _>>()?;
    let configs = c
        .configs
        .iter()
        .map(|r| file_mount(r, "config", configs))
        .collect::<Result<Vec<_>, _>>()?;
    let non_empty = |s: &str| Some(s.to_string()).filter(|s| !s.trim().is_empty());
    Ok(ProcessSpec {
        task_id: task.id.clone(),
        task_name: tctx.task_name.clone(),
        argv,
        env,
        working_dir: non_empty(&c.dir),
        user: non_empty(&c.user),
        stop_signal: non_empty(&c.stop_signal),
        stop_grace_period: c.stop_grace_period.unwrap_or(DEFAULT_STOP_GRACE_PERIOD),
        secrets,
        configs,
        image: c.image.clone(),
        read_only: c.read_only,
        init: c.init.unwrap_or(false),
        limits: limits(&task.spec.resources.limits),
        cap_add: c.cap_add.clone(),
        cap_drop: c.cap_drop.clone(),
        ports: ctx.ports.iter().map(published_port).collect(),
        labels: runtime_labels(task, ctx),
    })
}

/// The labels a runtime object of `task` carries, Swarm's names: the container labels of the spec, the
/// stack namespace, and the task, service and node it belongs to.
fn runtime_labels(task: &Task, ctx: &TaskContext) -> std::collections::BTreeMap<String, String> {
    let mut labels: std::collections::BTreeMap<String, String> = task
        .spec
        .container
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let name = task.name(&ctx.service_name);
    for (k, v) in [
        ("com.docker.swarm.task.id", task.id.as_str()),
        ("com.docker.swarm.task.name", name.as_str()),
        ("com.docker.swarm.service.id", task.service_id.as_str()),
        ("com.docker.swarm.service.name", ctx.service_name.as_str()),
        ("com.docker.swarm.node.id", ctx.node_id.as_str()),
    ] {
        labels.insert(k.to_string(), v.to_string());
    }
    labels
}

fn limits(l: &model::ResourceValues) -> Limits {
    Limits {
        nano_cpus: l.nano_cpus.max(0),
        memory_bytes: l.memory_bytes,
        pids: l.pids.max(0),
    }
}

fn published_port(p: &PortConfig) -> PublishedPort {
    PublishedPort {
        target: p.target_port,
        published: p.published_port.filter(|n| *n != 0),
        protocol: match p.protocol {
            model::PortProtocol::Tcp => PortProtocol::Tcp,
            model::PortProtocol::Udp => PortProtocol::Udp,
            model::PortProtocol::Sctp => PortProtocol::Sctp,
        },
        ingress: p.publish_mode == PublishMode::Ingress,
    }
}

fn file_mount(
    r: &FileReference,
    kind: &'static str,
    data_of: &dyn Fn(&str) -> Option<Vec<u8>>,
) -> Result<FileMount, SpecError> {
    let key = if r.id.is_empty() { &r.name } else { &r.id };
    let data = data_of(key).ok_or_else(|| SpecError::MissingData {
        kind,
        name: r.name.clone(),
        id: r.id.clone(),
    })?;
    let owner = |field: &'static str, value: &str| -> Result<u32, SpecError> {
        let value = value.trim();
        if value.is_empty() {
            return Ok(0);
        }
        value.parse().map_err(|_| SpecError::InvalidOwner {
            kind,
            name: r.name.clone(),
            field,
            value: value.to_string(),
        })
    };
    let target = match (kind, r.target.as_str()) {
        (_, t) if !t.is_empty() => t.to_string(),
        ("secret", _) => r.name.clone(),
        _ => format!("/{}", r.name),
    };
    Ok(FileMount {
        target,
        data,
        uid: owner("uid", &r.uid)?,
        gid: owner("gid", &r.gid)?,
        mode: if r.mode == 0 {
            DEFAULT_FILE_MODE
        } else {
            r.mode
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Meta, TaskSpec, TaskState, TaskStatus};

    fn task() -> Task {
        let mut spec = TaskSpec::default();
        let c = &mut spec.container;
        c.image = "alpine".into();
        c.command = vec!["sh".into(), "-c".into()];
        c.args = vec!["echo $GREETING".into()];
        c.env = vec![
            "GREETING=hello from {{ .Task.Slot }} on {{.Node.Hostname}}".into(),
            "NOVALUE".into(),
            "EMPTY=".into(),
            "HOSTNAME=overridden".into(),
        ];
        c.hostname = "{{.Service.Name}}-{{.Task.Slot}}".into();
        c.stop_signal = "".into();
        c.user = "1000:1000".into();
        c.dir = "/srv".into();
        c.secrets = vec![FileReference {
            name: "db_pass".into(),
            id: "sec1".into(),
            target: String::new(),
            uid: "1000".into(),
            gid: String::new(),
            mode: 0o400,
        }];
        c.configs = vec![FileReference {
            name: "app_conf".into(),
            id: "cfg1".into(),
            target: "/etc/app.conf".into(),
            uid: String::new(),
            gid: String::new(),
            mode: 0,
        }];
        Task {
            id: "t1".into(),
            meta: Meta::default(),
            service_id: "s1".into(),
            slot: 3,
            node_id: Some("n1".into()),
            spec,
            spec_version: 1,
            desired_state: TaskState::Running,
            status: TaskStatus::new(TaskState::Assigned, 0),
            attachments: Vec::new(),
        }
    }

    fn ctx() -> TaskContext {
        TaskContext {
            service_name: "web".into(),
            node_id: "n1".into(),
            node_hostname: "box1".into(),
            ports: Vec::new(),
        }
    }

    fn data(id: &str) -> Option<Vec<u8>> {
        match id {
            "sec1" => Some(b"hunter2".to_vec()),
            "cfg1" => Some(b"k=v".to_vec()),
            _ => None,
        }
    }

    #[test]
    fn runtime_objects_carry_swarms_labels() {
        let mut t = task();
        t.spec
            .container
            .labels
            .insert("com.docker.stack.namespace".into(), "demo".into());
        let s = process_spec(&t, &ctx(), &data, &data).expect("spec");
        assert_eq!(s.labels["com.docker.stack.namespace"], "demo");
        assert_eq!(s.labels["com.docker.swarm.service.name"], "web");
        assert_eq!(s.labels["com.docker.swarm.node.id"], "n1");
        assert_eq!(s.labels["com.docker.swarm.task.id"], t.id);
        assert_eq!(s.labels["com.docker.swarm.task.name"], t.name("web"));
        assert_eq!(s.labels["com.docker.swarm.service.id"], t.service_id);
    }

    #[test]
    fn builds_a_process_spec() {
        let s = process_spec(&task(), &ctx(), &data, &data).expect("spec");
        assert_eq!(s.task_id, "t1");
        assert_eq!(s.task_name, "web.3.t1");
        assert_eq!(s.argv, ["sh", "-c", "echo $GREETING"]);
        assert_eq!(
            s.env,
            [
                ("GREETING".into(), "hello from 3 on box1".into()),
                ("EMPTY".into(), String::new()),
                ("HOSTNAME".into(), "web-3".into()),
            ]
        );
        assert_eq!(s.working_dir.as_deref(), Some("/srv"));
        assert_eq!(s.user.as_deref(), Some("1000:1000"));
        assert_eq!(s.stop_signal, None);
        assert_eq!(s.stop_grace_period, DEFAULT_STOP_GRACE_PERIOD);
        assert_eq!(s.image, "alpine");
        assert_eq!(s.secrets.len(), 1);
        let sec = &s.secrets[0];
        assert_eq!(
            (sec.target.as_str(), sec.uid, sec.gid, sec.mode),
            ("db_pass", 1000, 0, 0o400)
        );
        assert_eq!(sec.data, b"hunter2");
        let cfg = &s.configs[0];
        assert_eq!(
            (cfg.target.as_str(), cfg.mode),
            ("/etc/app.conf", DEFAULT_FILE_MODE)
        );
    }

    #[test]
    fn global_slot_is_the_node_and_settings_pass_through() {
        let mut t = task();
        t.slot = 0;
        let c = &mut t.spec.container;
        c.command.clear();
        c.args = vec!["sleep".into(), "1".into()];
        c.stop_signal = "SIGUSR1".into();
        c.stop_grace_period = Some(Duration::from_secs(3));
        c.hostname.clear();
        c.env = vec!["SLOT={{.Task.Slot}} {{.Task.Name}} {{.Service.ID}}".into()];
        let s = process_spec(&t, &ctx(), &data, &data).expect("spec");
        assert_eq!(s.argv, ["sleep", "1"]);
        assert_eq!(s.env, [("SLOT".into(), "n1 web.n1.t1 s1".into())]);
        assert_eq!(s.stop_signal.as_deref(), Some("SIGUSR1"));
        assert_eq!(s.stop_grace_period, Duration::from_secs(3));
    }

    #[test]
    fn limits_capabilities_and_published_ports_pass_through() {
        use crate::exec::{Limits, PortProtocol, PublishedPort};
        let mut t = task();
        t.spec.resources.limits.nano_cpus = 1_500_000_000;
        t.spec.resources.limits.memory_bytes = 256 << 20;
        t.spec.resources.limits.pids = 100;
        t.spec.resources.reservations.memory_bytes = 1 << 20;
        t.spec.container.cap_add = vec!["NET_ADMIN".into()];
        t.spec.container.cap_drop = vec!["ALL".into()];
        let mut c = ctx();
        c.ports = vec![
            PortConfig {
                protocol: model::PortProtocol::Tcp,
                target_port: 80,
                published_port: Some(8080),
                publish_mode: PublishMode::Host,
            },
            PortConfig {
                protocol: model::PortProtocol::Udp,
                target_port: 53,
                published_port: None,
                publish_mode: PublishMode::Ingress,
            },
        ];
        let s = process_spec(&t, &c, &data, &data).expect("spec");
        assert_eq!(
            s.limits,
            Limits {
                nano_cpus: 1_500_000_000,
                memory_bytes: 256 << 20,
                pids: 100
            }
        );
        assert_eq!(
            (s.cap_add, s.cap_drop),
            (vec!["NET_ADMIN".to_string()], vec!["ALL".to_string()])
        );
        assert_eq!(
            s.ports,
            [
                PublishedPort {
                    target: 80,
                    published: Some(8080),
                    protocol: PortProtocol::Tcp,
                    ingress: false
                },
                PublishedPort {
                    target: 53,
                    published: None,
                    protocol: PortProtocol::Udp,
                    ingress: true
                },
            ]
        );
        let s = process_spec(&task(), &ctx(), &data, &data).expect("spec");
        assert!(s.limits.is_none());
        assert!(s.ports.is_empty());
    }

    #[test]
    fn errors() {
        let mut t = task();
        t.spec.container.command.clear();
        t.spec.container.args.clear();
        let err = process_spec(&t, &ctx(), &data, &data).expect_err("no command");
        assert_eq!(
            err.to_string(),
            "task has no command: the process executor needs `command` or `entrypoint`"
        );
        let none = |_: &str| None;
        let err = process_spec(&task(), &ctx(), &none, &data).expect_err("missing secret");
        assert_eq!(
            err.to_string(),
            "secret db_pass (sec1) is not available on this node"
        );
        let mut t = task();
        t.spec.container.secrets[0].gid = "wheel".into();
        let err = process_spec(&t, &ctx(), &data, &data).expect_err("bad gid");
        assert!(err.to_string().contains("invalid gid \"wheel\""), "{err}");
    }

    #[test]
    fn errors_never_show_secret_data() {
        let mut t = task();
        t.spec.container.configs[0].id = "nope".into();
        let err = process_spec(&t, &ctx(), &data, &data).expect_err("missing config");
        assert!(!format!("{err:?} {err}").contains("hunter2"));
    }
}
