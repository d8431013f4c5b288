//! Field-level differences between two service specs, worded for people: `image: web:1 → web:2`,
//! `replicas: 2 → 6`, `env: +FOO=1 -BAR`. Used by the deploy planner and `service update`.
//!
//! Must not: decide anything (whether a change rolls tasks is `ServiceSpec::task` equality, not this text).

use std::collections::BTreeMap;
use std::fmt::Debug;

use crate::model::{FileReference, ServiceMode, ServiceSpec};

fn list(v: &[String]) -> String {
    if v.is_empty() {
        "[]".into()
    } else {
        format!("[{}]", v.join(" "))
    }
}

fn short<T: Debug>(v: &T) -> String {
    let s = format!("{v:?}");
    if s.chars().count() > 60 {
        format!("{}…", s.chars().take(59).collect::<String>())
    } else {
        s
    }
}

fn replicas(mode: &ServiceMode) -> String {
    match mode {
        ServiceMode::Replicated { replicas } => replicas.to_string(),
        ServiceMode::ReplicatedJob {
            max_concurrent,
            total_completions,
        } => format!("{max_concurrent} at a time, {total_completions} completions"),
        other => other.name().to_string(),
    }
}

/// `+K=V` for added keys, `K=old → new` for changed ones, `-K` for removed ones.
fn env_diff(old: &[String], new: &[String]) -> String {
    let map = |v: &[String]| -> BTreeMap<String, String> {
        v.iter()
            .map(|e| match e.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (e.clone(), String::new()),
            })
            .collect()
    };
    let (old, new) = (map(old), map(new));
    let mut parts = Vec::new();
    for (k, v) in &new {
        match old.get(k) {
            Some(o) if o == v => {}
            Some(o) => parts.push(format!("{k}={o} → {v}")),
            None => parts.push(format!("+{k}={v}")),
        }
    }
    for k in old.keys() {
        if !new.contains_key(k) {
            parts.push(format!("-{k}"));
        }
    }
    parts.join(" ")
}

/// Secret/config references: added, removed, or moved to another object (a new version).
fn refs_diff(old: &[FileReference], new: &[FileReference]) -> String {
    let mut parts = Vec::new();
    for r in new {
        match old
            .iter()
            .find(|o| o.name == r.name && o.target == r.target)
        {
            None => parts.push(format!("+{}", r.name)),
            Some(o) if o.id != r.id => parts.push(format!("{} (new version)", r.name)),
            Some(o) if o != r => parts.push(format!("{} (uid/gid/mode)", r.name)),
            Some(_) => {}
        }
    }
    for o in old {
        if !new.iter().any(|r| r.name == o.name && r.target == o.target) {
            parts.push(format!("-{}", o.name));
        }
    }
    parts.join(" ")
}

/// The changed fields of a service, one entry each.
pub fn service_fields(old: &ServiceSpec, new: &ServiceSpec) -> Vec<String> {
    let mut out = Vec::new();
    let (oc, nc) = (&old.task.container, &new.task.container);
    if oc.image != nc.image {
        out.push(format!("image: {} → {}", oc.image, nc.image));
    }
    if oc.command != nc.command {
        out.push(format!(
            "entrypoint: {} → {}",
            list(&oc.command),
            list(&nc.command)
        ));
    }
    if oc.args != nc.args {
        out.push(format!("command: {} → {}", list(&oc.args), list(&nc.args)));
    }
    if oc.env != nc.env {
        out.push(format!("env: {}", env_diff(&oc.env, &nc.env)));
    }
    if oc.secrets != nc.secrets {
        out.push(format!("secrets: {}", refs_diff(&oc.secrets, &nc.secrets)));
    }
    if oc.configs != nc.configs {
        out.push(format!("configs: {}", refs_diff(&oc.configs, &nc.configs)));
    }
    macro_rules! generic {
        ($name:expr, $a:expr, $b:expr) => {
            if $a != $b {
                out.push(format!("{}: {} → {}", $name, short(&$a), short(&$b)));
            }
        };
    }
    generic!("hostname", oc.hostname, nc.hostname);
    generic!("workdir", oc.dir, nc.dir);
    generic!("user", oc.user, nc.user);
    generic!("container labels", oc.labels, nc.labels);
    generic!("healthcheck", oc.healthcheck, nc.healthcheck);
    generic!("stop_signal", oc.stop_signal, nc.stop_signal);
    generic!(
        "stop_grace_period",
        oc.stop_grace_period,
        nc.stop_grace_period
    );
    generic!("mounts", oc.mounts, nc.mounts);
    generic!("hosts", oc.hosts, nc.hosts);
    generic!("dns", oc.dns, nc.dns);
    generic!("sysctls", oc.sysctls, nc.sysctls);
    generic!("cap_add", oc.cap_add, nc.cap_add);
    generic!("cap_drop", oc.cap_drop, nc.cap_drop);
    generic!("ulimits", oc.ulimits, nc.ulimits);
    generic!(
        "tty/stdin/read_only/init",
        (oc.tty, oc.open_stdin, oc.read_only, oc.init),
        (nc.tty, nc.open_stdin, nc.read_only, nc.init)
    );
    let (ot, nt) = (&old.task, &new.task);
    generic!("resources", ot.resources, nt.resources);
    generic!("restart_policy", ot.restart, nt.restart);
    generic!("placement", ot.placement, nt.placement);
    generic!("networks", ot.networks, nt.networks);
    generic!("logging", ot.log_driver, nt.log_driver);
    if ot.force_update != nt.force_update {
        out.push("force update".into());
    }
    if old.mode != new.mode {
        if std::mem::discriminant(&old.mode) == std::mem::discriminant(&new.mode) {
            out.push(format!(
                "replicas: {} → {}",
                replicas(&old.mode),
                replicas(&new.mode)
            ));
        } else {
            out.push(format!("mode: {} → {}", old.mode.name(), new.mode.name()));
        }
    }
    generic!("labels", old.labels, new.labels);
    for (name, a, b) in [
        ("update_config", &old.update, &new.update),
        ("rollback_config", &old.rollback, &new.rollback),
    ] {
        generic!(format!("{name}.parallelism"), a.parallelism, b.parallelism);
        generic!(format!("{name}.delay"), a.delay, b.delay);
        generic!(
            format!("{name}.failure_action"),
            a.failure_action,
            b.failure_action
        );
        generic!(format!("{name}.monitor"), a.monitor, b.monitor);
        generic!(
            format!("{name}.max_failure_ratio"),
            a.max_failure_ratio,
            b.max_failure_ratio
        );
        generic!(format!("{name}.order"), a.order, b.order);
    }
    generic!("endpoint", old.endpoint, new.endpoint);
    if out.is_empty() && old != new {
        out.push("spec".into());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_replicas_and_env_are_worded_old_to_new() {
        let mut a = ServiceSpec::default();
        a.task.container.image = "web:1".into();
        a.task.container.env = vec!["BAR=1".into(), "KEEP=x".into()];
        a.mode = ServiceMode::Replicated { replicas: 2 };
        let mut b = a.clone();
        b.task.container.image = "web:2".into();
        b.task.container.env = vec!["FOO=1".into(), "KEEP=y".into()];
        b.mode = ServiceMode::Replicated { replicas: 6 };
        assert_eq!(
            service_fields(&a, &b),
            vec![
                "image: web:1 → web:2",
                "env: +FOO=1 KEEP=x → y -BAR",
                "replicas: 2 → 6"
            ]
        );
        assert!(service_fields(&a, &a).is_empty());
    }
}
