//! Semantic checks of a merged stack that a schema cannot express: references to secrets, configs, networks and
//! volumes must be declared; a global service has no replicas; every service has an image; `cap_add` / `cap_drop`
//! name known capabilities; the cluster's limits (replicas, services per stack, environment and label sizes:
//! `model::limits`) hold.
//!
//! Must not: change the stack (it only reports).

use super::compose::{DeployMode, Service, StackFile, VolumeKind};
use super::Problem;
use crate::model::limits::{self, Limits};

/// Problems of the merged stack, in service order.
pub fn check(stack: &StackFile, limits: &Limits) -> Vec<Problem> {
    let mut out = Vec::new();
    if let Some((name, svc)) = stack
        .services
        .iter()
        .nth(limits.max_services_per_stack as usize)
    {
        if let Err(e) = limits.check_stack_services(stack.services.len() as u64, None) {
            out.push(Problem::new(
                &svc.pos,
                &format!("services.{name}"),
                e.to_string(),
            ));
        }
    }
    for (kind, objects) in [("secret", &stack.secrets), ("config", &stack.configs)] {
        for (name, o) in objects {
            if !o.external && o.file.is_none() {
                out.push(Problem::new(
                    &o.pos,
                    &format!("{kind}s.{name}"),
                    format!("a {kind} needs `file` (or `external: true`)"),
                ));
            }
        }
    }
    for (name, svc) in &stack.services {
        let path = format!("services.{name}");
        if svc.image.as_deref().is_none_or(str::is_empty) {
            out.push(Problem::new(
                &svc.pos,
                &path,
                "no image specified (every service needs `image`)".into(),
            ));
        }
        for (key, caps) in [("cap_add", &svc.cap_add), ("cap_drop", &svc.cap_drop)] {
            for (i, cap) in caps.iter().enumerate() {
                if let Err(e) = crate::exec::process::check_capability(cap) {
                    out.push(Problem::new(&svc.pos, &format!("{path}.{key}[{i}]"), e));
                }
            }
        }
        for (kind, refs, declared) in [
            ("secret", &svc.secrets, &stack.secrets),
            ("config", &svc.configs, &stack.configs),
        ] {
            for (i, r) in refs.iter().enumerate() {
                if !declared.contains_key(&r.source) {
                    out.push(Problem::new(
                        &r.pos,
                        &format!("{path}.{kind}s[{i}]"),
                        format!(
                            "{kind} {:?} is not declared in the top-level `{kind}s:` section",
                            r.source
                        ),
                    ));
                }
            }
        }
        for net in svc.networks.keys() {
            if net != "default" && !stack.networks.contains_key(net) {
                out.push(Problem::new(
                    &svc.pos,
                    &format!("{path}.networks"),
                    format!("network {net:?} is not declared in the top-level `networks:` section"),
                ));
            }
        }
        for (i, v) in svc.volumes.iter().enumerate() {
            if v.kind == VolumeKind::Volume {
                if let Some(src) = &v.source {
                    if !stack.volumes.contains_key(src) {
                        out.push(Problem::new(
                            &v.pos,
                            &format!("{path}.volumes[{i}]"),
                            format!("volume {src:?} is not declared in the top-level `volumes:` section"),
                        ));
                    }
                }
            }
            if v.kind == VolumeKind::Bind && v.source.is_none() {
                out.push(Problem::new(
                    &v.pos,
                    &format!("{path}.volumes[{i}]"),
                    "a bind mount needs a `source`".into(),
                ));
            }
        }
        check_limits(svc, &path, limits, &mut out);
        if let Some(deploy) = &svc.deploy {
            let mode = deploy.mode.unwrap_or(DeployMode::Replicated);
            if matches!(mode, DeployMode::Global | DeployMode::GlobalJob)
                && deploy.replicas.is_some()
            {
                out.push(Problem::new(
                    &deploy.replicas_pos,
                    &format!("{path}.deploy.replicas"),
                    format!(
                        "replicas cannot be set for a {} service",
                        if mode == DeployMode::Global {
                            "global"
                        } else {
                            "global-job"
                        }
                    ),
                ));
            }
            if mode == DeployMode::Global
                && deploy
                    .placement
                    .as_ref()
                    .and_then(|p| p.max_replicas_per_node)
                    .is_some()
            {
                out.push(Problem::new(
                    &svc.pos,
                    &format!("{path}.deploy.placement.max_replicas_per_node"),
                    "max_replicas_per_node cannot be used with mode global".into(),
                ));
            }
            if let Some(constraints) = deploy.placement.as_ref().map(|p| &p.constraints) {
                for (i, c) in constraints.iter().enumerate() {
                    if let Err(e) = crate::model::Constraint::parse(c) {
                        out.push(Problem::new(
                            &svc.pos,
                            &format!("{path}.deploy.placement.constraints[{i}]"),
                            e,
                        ));
                    }
                }
            }
        }
    }
    out.sort_by_key(|p| (p.pos.line, p.pos.col));
    out
}

/// The limits of one service: replicas, environment bytes, labels bytes.
fn check_limits(svc: &Service, path: &str, limits: &Limits, out: &mut Vec<Problem>) {
    let deploy = svc.deploy.as_ref();
    if let Some((n, deploy)) = deploy.and_then(|d| d.replicas.map(|n| (n, d))) {
        if let Err(e) = limits.check_replicas(n, None) {
            out.push(Problem::new(
                &deploy.replicas_pos,
                &format!("{path}.deploy.replicas"),
                e.to_string(),
            ));
        }
    }
    let env: Vec<String> = svc
        .environment
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_deref().unwrap_or_default()))
        .collect();
    if let Err(e) = limits::check_env(&env, None) {
        out.push(Problem::new(
            &svc.pos,
            &format!("{path}.environment"),
            e.to_string(),
        ));
    }
    if let Err(e) = limits::check_labels("labels", &svc.labels, None) {
        out.push(Problem::new(
            &svc.pos,
            &format!("{path}.labels"),
            e.to_string(),
        ));
    }
    if let Some(d) = deploy {
        if let Err(e) = limits::check_labels("labels", &d.labels, None) {
            out.push(Problem::new(
                &svc.pos,
                &format!("{path}.deploy.labels"),
                e.to_string(),
            ));
        }
    }
}
