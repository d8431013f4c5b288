//! Normalized stack → the cluster's desired-state specs (`model::StackSpec`), the way `docker stack deploy`
//! converts: names scoped by the stack namespace, the namespace label everywhere, a `default` network, secret
//! and config data read from their files, Swarm's defaults filled in.
//!
//! Must not: talk to the cluster. Reads only the secret/config files the stack names.

use std::collections::BTreeMap;

use super::compose::{self, FileObject, StackFile};
use super::yaml::Pos;
use super::{Problem, StackError};
use crate::model::{self, FileObjectSpec, SecretData, StackSpec, STACK_NAMESPACE_LABEL};

/// Checks a stack name the way docker does (it becomes a prefix of every object name).
pub fn check_stack_name(name: &str) -> Result<(), String> {
    if crate::model::limits::valid_name(name, crate::model::limits::MAX_STACK_NAME) {
        Ok(())
    } else {
        Err(format!(
            "invalid stack name {name:?}: use letters, digits, '_', '-' and '.', starting with a letter or digit (at most 63)"
        ))
    }
}

fn scoped(stack: &str, name: &str) -> String {
    format!("{stack}_{name}")
}

/// The cluster name of a network, secret, config or volume declared under `key`.
fn object_name(stack: &str, key: &str, explicit: Option<&String>, external: bool) -> String {
    match explicit {
        Some(n) => n.clone(),
        None if external => key.to_string(),
        None => scoped(stack, key),
    }
}

fn duration(d: Option<super::units::GoDuration>) -> Option<std::time::Duration> {
    d.map(|g| g.0)
}

fn update_config(c: Option<&compose::UpdateConfig>) -> model::UpdateConfig {
    let mut out = model::UpdateConfig::default();
    let Some(c) = c else { return out };
    if let Some(p) = c.parallelism {
        out.parallelism = p;
    }
    if let Some(d) = c.delay {
        out.delay = d.0;
    }
    if let Some(a) = c.failure_action {
        out.failure_action = match a {
            compose::FailureAction::Pause => model::FailureAction::Pause,
            compose::FailureAction::Continue => model::FailureAction::Continue,
            compose::FailureAction::Rollback => model::FailureAction::Rollback,
        };
    }
    if let Some(m) = c.monitor {
        out.monitor = m.0;
    }
    if let Some(r) = c.max_failure_ratio {
        out.max_failure_ratio = r;
    }
    if let Some(o) = c.order {
        out.order = match o {
            compose::UpdateOrder::StopFirst => model::UpdateOrder::StopFirst,
            compose::UpdateOrder::StartFirst => model::UpdateOrder::StartFirst,
        };
    }
    out
}

fn resource_values(v: Option<&compose::ResourceValues>) -> model::ResourceValues {
    let Some(v) = v else {
        return model::ResourceValues::default();
    };
    model::ResourceValues {
        nano_cpus: v.nano_cpus.unwrap_or(0),
        memory_bytes: v.memory.unwrap_or(0),
        pids: v.pids.unwrap_or(0),
        generic: v
            .generic_resources
            .iter()
            .flat_map(|g| {
                let d = g
                    .discrete_resource_spec
                    .as_ref()
                    .map(|d| (d.kind.clone(), d.value.to_string()));
                let n = g
                    .named_resource_spec
                    .as_ref()
                    .map(|n| (n.kind.clone(), n.value.clone()));
                d.into_iter().chain(n)
            })
            .collect(),
    }
}

fn read_object(
    kind: &str,
    key: &str,
    obj: &FileObject,
    stack: &str,
    problems: &mut Vec<Problem>,
) -> Option<FileObjectSpec> {
    let file = obj.file.as_ref()?;
    let data = match std::fs::read(file) {
        Ok(d) => d,
        Err(e) => {
            problems.push(Problem::new(
                &obj.pos,
                &format!("{kind}s.{key}.file"),
                format!("cannot read {file}: {e}"),
            ));
            return None;
        }
    };
    let mut labels = obj.labels.clone();
    labels.insert(STACK_NAMESPACE_LABEL.into(), stack.into());
    Some(FileObjectSpec {
        name: object_name(stack, key, obj.name.as_ref(), false),
        labels,
        data: SecretData(data),
    })
}

/// Converts a loaded stack into the specs a deploy sends. `problems` of the load's `deploy_problems` kind are
/// checked here too, so a deploy refuses what docker's deploy refuses.
pub fn convert(stack_name: &str, file: &StackFile) -> Result<StackSpec, StackError> {
    convert_within(stack_name, file, &crate::model::Limits::default())
}

/// [`convert`], checking the stack against `limits` (a cluster's own) instead of the defaults.
pub fn convert_within(
    stack_name: &str,
    file: &StackFile,
    limits: &crate::model::Limits,
) -> Result<StackSpec, StackError> {
    let mut problems = super::validate::check(file, limits);
    if let Err(e) = check_stack_name(stack_name) {
        problems.insert(0, Problem::new(&Pos::default(), "", e));
    }
    let mut spec = StackSpec {
        name: stack_name.to_string(),
        ..Default::default()
    };

    for (key, net) in &file.networks {
        let name = object_name(stack_name, key, net.name.as_ref(), net.external);
        if net.external {
            spec.external_networks.push(name);
            continue;
        }
        let mut labels = net.labels.clone();
        labels.insert(STACK_NAMESPACE_LABEL.into(), stack_name.into());
        spec.networks.push(model::NetworkSpec {
            name,
            labels,
            driver: net.driver.clone().unwrap_or_else(|| "overlay".into()),
            driver_opts: net.driver_opts.clone(),
            attachable: net.attachable,
            internal: net.internal,
            subnets: net
                .ipam
                .iter()
                .flat_map(|i| i.config.iter().filter_map(|c| c.subnet.clone()))
                .collect(),
            ingress: false,
        });
    }
    let uses_default = file
        .services
        .values()
        .any(|s| s.networks.is_empty() || s.networks.contains_key("default"));
    if uses_default && !file.networks.contains_key("default") {
        spec.networks.push(model::NetworkSpec {
            name: scoped(stack_name, "default"),
            labels: BTreeMap::from([(STACK_NAMESPACE_LABEL.into(), stack_name.into())]),
            driver: "overlay".into(),
            ..Default::default()
        });
    }
    for (key, obj) in &file.secrets {
        if obj.external {
            spec.external_secrets
                .push(object_name(stack_name, key, obj.name.as_ref(), true));
        } else if let Some(s) = read_object("secret", key, obj, stack_name, &mut problems) {
            spec.secrets.push(s);
        }
    }
    for (key, obj) in &file.configs {
        if obj.external {
            spec.external_configs
                .push(object_name(stack_name, key, obj.name.as_ref(), true));
        } else if let Some(s) = read_object("config", key, obj, stack_name, &mut problems) {
            spec.configs.push(s);
        }
    }

    for (short, svc) in &file.services {
        spec.services.push(service(stack_name, short, svc, file));
    }
    if problems.is_empty() {
        Ok(spec)
    } else {
        Err(StackError { problems })
    }
}

fn file_refs(
    stack: &str,
    refs: &[compose::FileRef],
    declared: &BTreeMap<String, FileObject>,
    default_target: impl Fn(&str) -> String,
) -> Vec<model::FileReference> {
    refs.iter()
        .map(|r| {
            let obj = declared.get(&r.source);
            let name = match obj {
                Some(o) => object_name(stack, &r.source, o.name.as_ref(), o.external),
                None => scoped(stack, &r.source),
            };
            model::FileReference {
                name,
                id: String::new(),
                target: r
                    .target
                    .clone()
                    .unwrap_or_else(|| default_target(&r.source)),
                uid: r.uid.clone().unwrap_or_else(|| "0".into()),
                gid: r.gid.clone().unwrap_or_else(|| "0".into()),
                mode: r.mode.unwrap_or(0o444),
            }
        })
        .collect()
}

fn service(
    stack: &str,
    short: &str,
    svc: &compose::Service,
    file: &StackFile,
) -> model::ServiceSpec {
    let deploy = svc.deploy.clone().unwrap_or_default();
    let mut labels = deploy.labels.clone();
    labels.insert(STACK_NAMESPACE_LABEL.into(), stack.into());
    let mut container_labels = svc.labels.clone();
    container_labels.insert(STACK_NAMESPACE_LABEL.into(), stack.into());
    // the runtime a service's tasks run on is part of the task template (a change replaces the tasks), where
    // the agent reads it: a deploy label is copied there (the service's own `labels` win)
    use crate::exec::select::EXECUTOR_LABEL;
    if let Some(runtime) = labels.get(EXECUTOR_LABEL) {
        container_labels
            .entry(EXECUTOR_LABEL.into())
            .or_insert_with(|| runtime.clone());
    }

    let env = svc
        .environment
        .iter()
        .map(|(k, v)| match v {
            Some(v) => format!("{k}={v}"),
            None => k.clone(),
        })
        .collect();

    let healthcheck = svc.healthcheck.as_ref().map(|h| model::HealthConfig {
        test: h.test.clone().unwrap_or_default(),
        interval: duration(h.interval),
        timeout: duration(h.timeout),
        retries: h.retries,
        start_period: duration(h.start_period),
        start_interval: duration(h.start_interval),
    });

    let mounts = svc
        .volumes
        .iter()
        .map(|v| model::Mount {
            kind: match v.kind {
                compose::VolumeKind::Volume => model::MountKind::Volume,
                compose::VolumeKind::Bind => model::MountKind::Bind,
                compose::VolumeKind::Tmpfs => model::MountKind::Tmpfs,
                compose::VolumeKind::Npipe => model::MountKind::Npipe,
                compose::VolumeKind::Cluster => model::MountKind::Cluster,
            },
            source: match (v.kind, &v.source) {
                (compose::VolumeKind::Volume, Some(src)) => match file.volumes.get(src) {
                    Some(decl) => object_name(stack, src, decl.name.as_ref(), decl.external),
                    None => scoped(stack, src),
                },
                (_, src) => src.clone().unwrap_or_default(),
            },
            target: v.target.clone(),
            read_only: v.read_only,
            tmpfs_size: v.tmpfs.as_ref().and_then(|t| t.size),
        })
        .collect();

    let networks = if svc.networks.is_empty() {
        vec![model::NetworkAttachment {
            target: scoped(stack, "default"),
            aliases: vec![short.to_string()],
        }]
    } else {
        svc.networks
            .iter()
            .map(|(key, opts)| {
                let target = match file.networks.get(key) {
                    Some(n) => object_name(stack, key, n.name.as_ref(), n.external),
                    None => scoped(stack, key),
                };
                let mut aliases = vec![short.to_string()];
                if let Some(o) = opts {
                    aliases.extend(o.aliases.iter().filter(|a| a.as_str() != short).cloned());
                }
                model::NetworkAttachment { target, aliases }
            })
            .collect()
    };

    let restart = match &deploy.restart_policy {
        Some(r) => model::RestartPolicy {
            condition: match r.condition {
                Some(compose::RestartCondition::None) => model::RestartCondition::None,
                Some(compose::RestartCondition::OnFailure) => model::RestartCondition::OnFailure,
                Some(compose::RestartCondition::Any) | None => model::RestartCondition::Any,
            },
            delay: r
                .delay
                .map(|d| d.0)
                .unwrap_or(std::time::Duration::from_secs(5)),
            max_attempts: r.max_attempts.unwrap_or(0),
            window: r.window.map(|d| d.0).unwrap_or_default(),
        },
        None => model::RestartPolicy::default(),
    };

    let placement = deploy
        .placement
        .as_ref()
        .map_or_else(model::Placement::default, |p| model::Placement {
            constraints: p.constraints.clone(),
            preferences: p.preferences.iter().map(|s| s.spread.clone()).collect(),
            max_replicas_per_node: p.max_replicas_per_node.unwrap_or(0),
        });

    let replicas = deploy.replicas.unwrap_or(1);
    let mode = match deploy.mode.unwrap_or(compose::DeployMode::Replicated) {
        compose::DeployMode::Replicated => model::ServiceMode::Replicated { replicas },
        compose::DeployMode::Global => model::ServiceMode::Global,
        compose::DeployMode::ReplicatedJob => model::ServiceMode::ReplicatedJob {
            max_concurrent: replicas,
            total_completions: replicas,
        },
        compose::DeployMode::GlobalJob => model::ServiceMode::GlobalJob,
    };

    let ports = svc
        .ports
        .iter()
        .map(|p| model::PortConfig {
            protocol: match p.protocol {
                compose::Protocol::Tcp => model::PortProtocol::Tcp,
                compose::Protocol::Udp => model::PortProtocol::Udp,
                compose::Protocol::Sctp => model::PortProtocol::Sctp,
            },
            target_port: p.target,
            published_port: p.published,
            publish_mode: match p.mode {
                compose::PortMode::Ingress => model::PublishMode::Ingress,
                compose::PortMode::Host => model::PublishMode::Host,
            },
        })
        .collect();

    let hosts = svc
        .extra_hosts
        .iter()
        .map(|h| match h.split_once(['=', ':']) {
            Some((host, ip)) => format!("{ip} {host}"),
            None => h.clone(),
        })
        .collect();

    model::ServiceSpec {
        name: scoped(stack, short),
        labels,
        task: model::TaskSpec {
            container: model::ContainerSpec {
                image: svc.image.clone().unwrap_or_default(),
                labels: container_labels,
                command: svc.entrypoint.clone().unwrap_or_default(),
                args: svc.command.clone().unwrap_or_default(),
                hostname: svc.hostname.clone().unwrap_or_default(),
                env,
                dir: svc.working_dir.clone().unwrap_or_default(),
                user: svc.user.clone().unwrap_or_default(),
                tty: svc.tty.unwrap_or(false),
                open_stdin: svc.stdin_open.unwrap_or(false),
                read_only: svc.read_only.unwrap_or(false),
                init: svc.init,
                stop_signal: svc.stop_signal.clone().unwrap_or_default(),
                stop_grace_period: duration(svc.stop_grace_period),
                healthcheck,
                hosts,
                dns: model::DnsConfig {
                    nameservers: svc.dns.clone(),
                    search: svc.dns_search.clone(),
                },
                secrets: file_refs(stack, &svc.secrets, &file.secrets, |s| s.to_string()),
                configs: file_refs(stack, &svc.configs, &file.configs, |s| format!("/{s}")),
                mounts,
                sysctls: svc.sysctls.clone(),
                cap_add: svc.cap_add.clone(),
                cap_drop: svc.cap_drop.clone(),
                ulimits: svc
                    .ulimits
                    .iter()
                    .map(|(name, u)| match u {
                        compose::Ulimit::Single(v) => model::Ulimit {
                            name: name.clone(),
                            soft: *v,
                            hard: *v,
                        },
                        compose::Ulimit::Pair { soft, hard } => model::Ulimit {
                            name: name.clone(),
                            soft: *soft,
                            hard: *hard,
                        },
                    })
                    .collect(),
            },
            resources: model::Resources {
                limits: resource_values(deploy.resources.as_ref().and_then(|r| r.limits.as_ref())),
                reservations: resource_values(
                    deploy
                        .resources
                        .as_ref()
                        .and_then(|r| r.reservations.as_ref()),
                ),
            },
            restart,
            placement,
            networks,
            log_driver: svc.logging.as_ref().map(|l| model::LogDriver {
                name: l.driver.clone().unwrap_or_default(),
                options: l.options.clone(),
            }),
            force_update: 0,
        },
        mode,
        update: update_config(deploy.update_config.as_ref()),
        rollback: update_config(deploy.rollback_config.as_ref()),
        endpoint: model::EndpointSpec {
            mode: match deploy.endpoint_mode {
                Some(compose::EndpointMode::Dnsrr) => model::EndpointMode::Dnsrr,
                _ => model::EndpointMode::Vip,
            },
            ports,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stack::{load, LoadOptions};
    use std::time::Duration;

    #[test]
    fn converts_like_docker() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw.txt"), "hunter2").unwrap();
        let file = dir.path().join("s.yml");
        std::fs::write(
            &file,
            r#"
services:
  web:
    image: nginx:1
    entrypoint: ["/docker-entrypoint.sh"]
    command: nginx -g "daemon off;"
    environment: [B=2, A=1]
    extra_hosts: ["db.local:10.0.0.5"]
    secrets:
      - pw
      - source: pw
        target: other
        mode: 0400
    networks: [front]
    deploy:
      replicas: 3
      labels: {com.swarm.executor: docker}
      resources:
        limits: {cpus: '0.5', memory: 512M}
      restart_policy: {condition: on-failure, max_attempts: 3}
      update_config: {parallelism: 2, order: start-first}
  job:
    image: busybox
    deploy: {mode: replicated-job, replicas: 4}
networks:
  front: {}
secrets:
  pw:
    file: ./pw.txt
"#,
        )
        .unwrap();
        let loaded = load(
            &[file],
            &LoadOptions {
                env: Some(Default::default()),
                no_dotenv: true,
                ..Default::default()
            },
        )
        .unwrap();
        let spec = convert("app", &loaded.stack).unwrap();
        let web = spec.services.iter().find(|s| s.name == "app_web").unwrap();
        assert_eq!(web.labels[STACK_NAMESPACE_LABEL], "app");
        assert_eq!(web.mode, model::ServiceMode::Replicated { replicas: 3 });
        let c = &web.task.container;
        assert_eq!(c.command, vec!["/docker-entrypoint.sh"]);
        assert_eq!(c.args, vec!["nginx", "-g", "daemon off;"]);
        assert_eq!(c.env, vec!["A=1", "B=2"]);
        assert_eq!(c.hosts, vec!["10.0.0.5 db.local"]);
        // the runtime chosen with a deploy label goes to the task template, where the agent reads it
        assert_eq!(c.labels[crate::exec::select::EXECUTOR_LABEL], "docker");
        assert_eq!(c.secrets[0].name, "app_pw");
        assert_eq!(c.secrets[0].target, "pw");
        assert_eq!(c.secrets[0].mode, 0o444);
        assert_eq!(c.secrets[1].target, "other");
        assert_eq!(c.secrets[1].mode, 0o400);
        assert_eq!(web.task.resources.limits.nano_cpus, 500_000_000);
        assert_eq!(web.task.resources.limits.memory_bytes, 512 << 20);
        assert_eq!(
            web.task.restart.condition,
            model::RestartCondition::OnFailure
        );
        assert_eq!(web.task.restart.max_attempts, 3);
        assert_eq!(web.task.restart.delay, Duration::from_secs(5));
        assert_eq!(web.update.parallelism, 2);
        assert_eq!(web.update.order, model::UpdateOrder::StartFirst);
        assert_eq!(web.task.networks[0].target, "app_front");
        let job = spec.services.iter().find(|s| s.name == "app_job").unwrap();
        assert_eq!(
            job.mode,
            model::ServiceMode::ReplicatedJob {
                max_concurrent: 4,
                total_completions: 4
            }
        );
        assert_eq!(job.task.networks[0].target, "app_default");
        assert_eq!(spec.secrets[0].data.0, b"hunter2");
        assert!(!format!("{:?}", spec.secrets[0]).contains("hunter2"));
        let names: Vec<_> = spec.networks.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, vec!["app_front", "app_default"]);
    }

    #[test]
    fn deploy_time_problems_refuse_the_stack() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s.yml");
        std::fs::write(
            &file,
            "services:\n  a:\n    image: x\n    secrets: [nope]\n    deploy:\n      mode: global\n      replicas: 2\n      placement: {constraints: ['node=foo']}\n",
        )
        .unwrap();
        let loaded = load(
            &[file],
            &LoadOptions {
                env: Some(Default::default()),
                no_dotenv: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(
            loaded.deploy_problems.len(),
            3,
            "{:?}",
            loaded.deploy_problems
        );
        let err = convert("app", &loaded.stack).unwrap_err().to_string();
        assert!(
            err.contains("services.a.secrets[0]: secret \"nope\" is not declared"),
            "{err}"
        );
        assert!(err.contains("s.yml:7:17: services.a.deploy.replicas: replicas cannot be set for a global service"), "{err}");
        assert!(err.contains("invalid constraint \"node=foo\""), "{err}");
        assert!(convert("bad name!", &loaded.stack).is_err());
    }
}
