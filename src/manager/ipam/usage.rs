//! Who uses a network — the one rule `network rm`, `stack rm` and the network collector share: a service
//! whose spec (or previous spec, which a rollback would restore) attaches to it, or a task that is not
//! terminal and holds an address on it. And the collector itself: a stack's network is removed once its stack
//! is gone and nothing uses it (a `stack rm` while tasks still stop leaves it until they have).
//!
//! Pure controller (`reconcile(&ClusterState, now, ids) -> Plan`). Must not: remove a network of no stack or
//! of a stack that exists, or the ingress network.

use super::{Plan, Scope};
use crate::model::{Network, Service, ServiceSpec, STACK_NAMESPACE_LABEL};
use crate::store::{ClusterState, Op};
use crate::util::{IdSource, Millis};

/// Whether a service made from `spec` attaches to `network` (by name, or as ingress when it publishes
/// through the mesh).
fn spec_uses(spec: &ServiceSpec, network: &Network) -> bool {
    spec.task
        .networks
        .iter()
        .any(|a| a.target == network.spec.name)
        || (network.spec.ingress
            && spec
                .endpoint
                .ports
                .iter()
                .any(|p| p.publish_mode == crate::model::PublishMode::Ingress))
}

/// Whether `service` (its spec, or the previous one a rollback would restore) attaches to `network`.
pub fn service_uses(service: &Service, network: &Network) -> bool {
    spec_uses(&service.spec, network)
        || service
            .previous_spec
            .as_ref()
            .is_some_and(|p| spec_uses(p, network))
}

/// Why `network` cannot be removed now: the services and live tasks using it ("service app_web", "task
/// app_web.1.x"), empty when nothing does.
pub fn users(state: &ClusterState, network: &Network) -> Vec<String> {
    let mut out: Vec<String> = state
        .services()
        .filter(|s| service_uses(s, network))
        .map(|s| format!("service {}", s.spec.name))
        .collect();
    out.sort();
    out.extend(
        state
            .tasks()
            .filter(|t| !t.status.state.is_terminal())
            .filter(|t| t.attachments.iter().any(|a| a.network_id == network.id))
            .map(|t| {
                let name = state
                    .service(&t.service_id)
                    .map_or(t.service_id.as_str(), |s| s.spec.name.as_str());
                format!("task {}", t.name(name))
            }),
    );
    out
}

/// The refusal of `network rm` for a network in use, naming up to 3 users.
pub fn check_unused(state: &ClusterState, network: &Network) -> Result<(), String> {
    let users = users(state, network);
    if users.is_empty() {
        return Ok(());
    }
    let shown: Vec<&str> = users.iter().take(3).map(String::as_str).collect();
    let more = users.len().saturating_sub(3);
    let tail = if more > 0 {
        format!(" and {more} more")
    } else {
        String::new()
    };
    Err(format!(
        "network {} is in use by {}{tail}",
        network.spec.name,
        shown.join(", ")
    ))
}

/// [`reconcile`], run by the driver whenever anything changed: it looks at every network of a stack (few),
/// whatever the scope.
pub fn reconcile_in(
    state: &ClusterState,
    _scope: &Scope,
    now: Millis,
    ids: &mut dyn IdSource,
) -> Plan {
    reconcile(state, now, ids)
}

/// Removes the networks of removed stacks once nothing uses them.
pub fn reconcile(state: &ClusterState, _now: Millis, _ids: &mut dyn IdSource) -> Plan {
    let mut plan = Plan::new();
    for n in state.networks() {
        let Some(stack) = n.spec.labels.get(STACK_NAMESPACE_LABEL) else {
            continue;
        };
        if n.spec.ingress || state.stack(stack).is_some() || !users(state, n).is_empty() {
            continue;
        }
        plan.ops.push(Op::DeleteNetwork {
            id: n.id.clone(),
            expected_version: n.meta.version,
        });
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manager::testutil::{service, task, World};
    use crate::model::{
        Meta, NetworkAddress, NetworkAttachment, NetworkSpec, ServiceMode, TaskState,
    };
    use crate::util::SeqIds;

    fn net(id: &str, stack: Option<&str>) -> Network {
        Network {
            id: id.into(),
            meta: Meta::default(),
            spec: NetworkSpec {
                name: id.into(),
                labels: stack
                    .map(|s| [(STACK_NAMESPACE_LABEL.to_string(), s.to_string())].into())
                    .unwrap_or_default(),
                ..NetworkSpec::default()
            },
            allocation: None,
        }
    }

    #[test]
    fn a_removed_stacks_network_goes_once_its_last_task_ended() {
        let mut t = task(
            "t1",
            "gone",
            1,
            Some("n1"),
            TaskState::Shutdown,
            TaskState::Running,
        );
        t.attachments = vec![NetworkAddress {
            network_id: "app_default".into(),
            addr: "10.0.0.3/24".into(),
        }];
        let mut w = World::with(vec![
            Op::CreateNetwork(net("app_default", Some("app"))),
            Op::CreateNetwork(net("mine", None)),
            Op::CreateTask(t),
        ]);
        let mut ids = SeqIds::default();
        assert!(
            reconcile(&w.state, 0, &mut ids).ops.is_empty(),
            "a task still runs"
        );
        assert_eq!(
            check_unused(&w.state, w.state.network("app_default").unwrap()),
            Err("network app_default is in use by task gone.1.t1".into())
        );
        let mut ended = w.state.task("t1").unwrap().clone();
        ended.status.state = TaskState::Shutdown;
        let v = ended.meta.version;
        w.apply_ops(vec![Op::UpdateTask {
            task: ended,
            expected_version: v,
        }]);
        let plan = reconcile(&w.state, 0, &mut ids);
        assert_eq!(
            plan.ops,
            vec![Op::DeleteNetwork {
                id: "app_default".into(),
                expected_version: 1
            }],
            "only the stack's network, never one of no stack"
        );
    }

    #[test]
    fn services_using_a_network_are_named() {
        let mut web = service("web", ServiceMode::Replicated { replicas: 1 });
        web.spec.task.networks = vec![NetworkAttachment {
            target: "front".into(),
            aliases: vec![],
        }];
        let w = World::with(vec![
            Op::CreateNetwork(net("front", None)),
            Op::CreateService(web),
        ]);
        assert_eq!(
            check_unused(&w.state, w.state.network("front").unwrap()),
            Err("network front is in use by service web".into())
        );
    }
}
