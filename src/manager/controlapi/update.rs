//! `service update` flags applied to a spec: image, env add/remove, replicas, force, update config.
//!
//! Must not: decide about spec versions or update status (that is `deploy::update_service`).

use crate::api::control::ServiceUpdateRequest;
use crate::model::{FailureAction, ServiceSpec, UpdateOrder};

/// The spec `spec` becomes with the request's flags; an error names the bad flag.
pub fn apply_flags(spec: &ServiceSpec, req: &ServiceUpdateRequest) -> Result<ServiceSpec, String> {
    let mut new = spec.clone();
    let c = &mut new.task.container;
    if !req.image.is_empty() {
        c.image = req.image.clone();
    }
    for k in &req.env_rm {
        let key = k.split_once('=').map_or(k.as_str(), |(k, _)| k);
        c.env
            .retain(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) != key);
    }
    for kv in &req.env_add {
        let Some((key, _)) = kv.split_once('=') else {
            return Err(format!("--env-add {kv:?}: expected KEY=VALUE"));
        };
        c.env
            .retain(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) != key);
        c.env.push(kv.clone());
    }
    c.env.sort();
    if let Some(n) = req.replicas {
        new.mode = crate::manager::rules::replicas_flag(&new.mode, n)?;
    }
    if req.force {
        new.task.force_update += 1;
    }
    if let Some(p) = req.update_parallelism {
        new.update.parallelism = p;
    }
    if !req.update_delay.is_empty() {
        new.update.delay = crate::stack::units::parse_duration(&req.update_delay)
            .map_err(|e| format!("--update-delay: {e}"))?;
    }
    match req.update_order.as_str() {
        "" => {}
        "start-first" => new.update.order = UpdateOrder::StartFirst,
        "stop-first" => new.update.order = UpdateOrder::StopFirst,
        other => {
            return Err(format!(
                "--update-order {other:?}: use start-first or stop-first"
            ))
        }
    }
    match req.update_failure_action.as_str() {
        "" => {}
        "pause" => new.update.failure_action = FailureAction::Pause,
        "continue" => new.update.failure_action = FailureAction::Continue,
        "rollback" => new.update.failure_action = FailureAction::Rollback,
        other => {
            return Err(format!(
                "--update-failure-action {other:?}: use pause, continue or rollback"
            ))
        }
    }
    Ok(new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ServiceMode;

    #[test]
    fn flags_change_only_what_they_name() {
        let mut spec = ServiceSpec::default();
        spec.task.container.env = vec!["A=1".into(), "B=2".into()];
        let req = ServiceUpdateRequest {
            image: "web:2".into(),
            env_add: vec!["C=3".into(), "A=9".into()],
            env_rm: vec!["B".into()],
            replicas: Some(4),
            force: true,
            update_order: "start-first".into(),
            ..Default::default()
        };
        let new = apply_flags(&spec, &req).unwrap();
        assert_eq!(new.task.container.image, "web:2");
        assert_eq!(new.task.container.env, vec!["A=9", "C=3"]);
        assert_eq!(new.mode, ServiceMode::Replicated { replicas: 4 });
        assert_eq!(new.task.force_update, 1);
        assert_eq!(new.update.order, UpdateOrder::StartFirst);
        assert_eq!(
            apply_flags(&spec, &ServiceUpdateRequest::default()).unwrap(),
            spec
        );
        let bad = ServiceUpdateRequest {
            update_order: "sideways".into(),
            ..Default::default()
        };
        assert!(apply_flags(&spec, &bad).is_err());
    }
}
