//! What a node is told to run: every task the scheduler gave it (level-triggered: the complete set each time), the
//! names of their services, and the secrets and configs those tasks reference — decrypted here, for this node only.
//!
//! With them goes the node's network map (`manager::ipam::netmap`), so the message changes (and is sent) when
//! the map does.
//!
//! Both ends of the wire live here: [`assignments_for`] builds the message (dispatcher side) and
//! [`decode_assignments`] turns it into the worker's [`Assignments`] (agent side, `node::session`).
//!
//! Must not: include a secret that no task of the node uses.

use std::collections::BTreeSet;

use crate::agent::Assignments;
use crate::api::dispatcher as pb;
use crate::api::{from_json, to_json};
use crate::model::netmap::NetworkMap;
use crate::model::{PortConfig, Task, TaskState};
use crate::secrets::DataKey;
use crate::store::ClusterState;

/// The assignments message for `node_id`.
pub fn assignments_for(
    state: &ClusterState,
    node_id: &str,
    key: &DataKey,
) -> pb::AssignmentsMessage {
    let mut tasks: Vec<&crate::model::Task> = state
        .tasks_on_node(node_id)
        .filter(|t| t.status.state >= TaskState::Assigned)
        .collect();
    tasks.sort_by(|a, b| a.id.cmp(&b.id));
    let mut secret_ids = BTreeSet::new();
    let mut config_ids = BTreeSet::new();
    let mut service_names = std::collections::HashMap::new();
    let mut service_ports_json = std::collections::HashMap::new();
    for t in &tasks {
        if let Some(svc) = state.service(&t.service_id) {
            service_names.insert(t.service_id.clone(), svc.spec.name.clone());
            if !svc.spec.endpoint.ports.is_empty() {
                service_ports_json.insert(t.service_id.clone(), to_json(&svc.spec.endpoint.ports));
            }
        }
        // only tasks that may still run get their secrets
        if !t.status.state.is_terminal() && t.desired_state <= TaskState::Running {
            secret_ids.extend(t.spec.container.secrets.iter().map(|r| r.id.clone()));
            config_ids.extend(t.spec.container.configs.iter().map(|r| r.id.clone()));
        }
    }
    let secrets = secret_ids
        .iter()
        .filter_map(|id| {
            let s = state.secret(id)?;
            match key.open(&s.spec.data.0) {
                Ok(data) => Some(pb::SecretPayload {
                    id: s.id.clone(),
                    name: s.spec.name.clone(),
                    data,
                }),
                Err(e) => {
                    tracing::error!(secret = %s.spec.name, "cannot decrypt secret: {e}");
                    None
                }
            }
        })
        .collect();
    let configs = config_ids
        .iter()
        .filter_map(|id| {
            let c = state.config(id)?;
            Some(pb::SecretPayload {
                id: c.id.clone(),
                name: c.spec.name.clone(),
                data: c.spec.data.0.clone(),
            })
        })
        .collect();
    let node_hostname = state
        .node(node_id)
        .map(|n| n.description.hostname.clone())
        .unwrap_or_default();
    pb::AssignmentsMessage {
        tasks_json: tasks.iter().map(|t| to_json(*t)).collect(),
        secrets,
        configs,
        service_names,
        node_hostname,
        service_ports_json,
        network_map_json: to_json(&crate::manager::ipam::netmap::network_map(state, node_id)),
    }
}

/// The assignments message received by node `node_id` → what its worker runs.
pub fn decode_assignments(
    node_id: &str,
    msg: pb::AssignmentsMessage,
) -> Result<Assignments, String> {
    let tasks = msg
        .tasks_json
        .iter()
        .map(|j| from_json::<Task>("task", j).map_err(|e| e.message().to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    let service_ports = msg
        .service_ports_json
        .iter()
        .map(|(id, j)| {
            from_json::<Vec<PortConfig>>("ports", j)
                .map(|ports| (id.clone(), ports))
                .map_err(|e| e.message().to_string())
        })
        .collect::<Result<_, _>>()?;
    let network_map = if msg.network_map_json.is_empty() {
        Default::default()
    } else {
        from_json::<NetworkMap>("network map", &msg.network_map_json)
            .map_err(|e| e.message().to_string())?
    };
    Ok(Assignments {
        tasks,
        secrets: msg.secrets.into_iter().map(|s| (s.id, s.data)).collect(),
        configs: msg.configs.into_iter().map(|c| (c.id, c.data)).collect(),
        service_names: msg.service_names.into_iter().collect(),
        service_ports,
        node_id: node_id.to_string(),
        node_hostname: msg.node_hostname,
        network_map,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manager::testutil::{creates, node, service, task, World};
    use crate::model::{PortProtocol, PublishMode, ServiceMode};

    #[test]
    fn carries_the_published_ports_of_the_node_services() {
        let mut web = service("web", ServiceMode::Replicated { replicas: 1 });
        let ports = vec![PortConfig {
            protocol: PortProtocol::Udp,
            target_port: 53,
            published_port: Some(5353),
            publish_mode: PublishMode::Host,
        }];
        web.spec.endpoint.ports = ports.clone();
        let db = service("db", ServiceMode::Replicated { replicas: 1 });
        let world = World::with(creates(
            vec![node("n1")],
            vec![web, db],
            vec![
                task(
                    "t1",
                    "web",
                    1,
                    Some("n1"),
                    TaskState::Running,
                    TaskState::Assigned,
                ),
                task(
                    "t2",
                    "db",
                    1,
                    Some("n1"),
                    TaskState::Running,
                    TaskState::Assigned,
                ),
            ],
        ));
        let key = DataKey::from_bytes([7; 32]);
        let msg = assignments_for(&world.state, "n1", &key);
        assert_eq!(msg.service_names.len(), 2);
        assert_eq!(msg.service_ports_json.len(), 1, "db publishes nothing");
        let got: Vec<PortConfig> =
            from_json("ports", &msg.service_ports_json["web"]).expect("decodes");
        assert_eq!(got, ports);
        let a = decode_assignments("n1", msg).expect("decodes");
        assert_eq!(a.tasks.len(), 2);
        assert_eq!(a.service_ports["web"], ports);
        assert_eq!(a.service_names["db"], "db");
        assert_eq!(a.node_id, "n1");
    }

    #[test]
    fn carries_the_nodes_network_map() {
        let mut web = service("web", ServiceMode::Replicated { replicas: 1 });
        web.spec.task.networks = vec![crate::model::NetworkAttachment {
            target: "front".into(),
            aliases: vec![],
        }];
        let mut t = task("t1", "web", 1, None, TaskState::Running, TaskState::New);
        t.spec = web.spec.task.clone();
        let mut world = World::with(vec![
            crate::store::Op::CreateNode(node("n1")),
            crate::store::Op::CreateNetwork(crate::model::Network {
                id: "front".into(),
                meta: Default::default(),
                spec: crate::model::NetworkSpec {
                    name: "front".into(),
                    ..Default::default()
                },
                allocation: None,
            }),
            crate::store::Op::CreateService(web),
            crate::store::Op::CreateTask(t),
        ]);
        let mut ids = crate::util::SeqIds::default();
        for _ in 0..2 {
            let plan = crate::manager::ipam::reconcile(&world.state, world.time, &mut ids);
            world.apply_plan(&plan);
        }
        let plan = crate::manager::scheduler::reconcile(&world.state, world.time, &mut ids);
        world.apply_plan(&plan);
        let key = DataKey::from_bytes([7; 32]);
        let a =
            decode_assignments("n1", assignments_for(&world.state, "n1", &key)).expect("decodes");
        assert_eq!(a.tasks.len(), 1, "scheduled once it had its address");
        assert_eq!(a.network_map.networks.len(), 1);
        assert_eq!(a.network_map.networks[0].subnet, "10.0.0.0/24");
        assert_eq!(a.network_map.endpoints[0].address, "10.0.0.3");
        assert_eq!(
            a.network_map,
            crate::manager::ipam::netmap::network_map(&world.state, "n1")
        );
        // a message of a manager without networking decodes as an empty map
        let mut old = assignments_for(&world.state, "n1", &key);
        old.network_map_json.clear();
        assert!(decode_assignments("n1", old)
            .expect("decodes")
            .network_map
            .networks
            .is_empty());
        let mut bad = assignments_for(&world.state, "n1", &key);
        bad.network_map_json = "{".into();
        assert!(decode_assignments("n1", bad)
            .unwrap_err()
            .contains("network map"));
    }
}
