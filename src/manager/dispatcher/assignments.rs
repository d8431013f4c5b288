//! What a node is told to run: every task the scheduler gave it, the names of their services, and the secrets
//! and configs those tasks reference — decrypted here, for this node only. A stream starts with the complete
//! set and then carries only what changed ([`AssignmentDiff`]): a change of one task costs one task's encoding,
//! and a node none of whose tasks changed is sent nothing.
//!
//! Both ends of the wire live here: [`assignments_for`] and [`AssignmentDiff::next`] build the messages
//! (dispatcher side), [`AssignmentSet`] and [`decode_assignments`] turn them back into the worker's complete
//! [`Assignments`] (agent side, `node::session`).
//!
//! With them goes the node's network map (`manager::ipam::netmap`, through the dispatcher's shared
//! `NetmapCache`): in the complete set, and in a change message only when the map changed.
//!
//! Must not: include a secret that no task of the node uses.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::agent::Assignments;
use crate::api::dispatcher as pb;
use crate::api::{from_json, to_json};
use crate::manager::ipam::netmap::{MapParts, NetmapCache};
use crate::model::netmap::{NetworkMap, NetworkMapDelta};
use crate::model::{PortConfig, Task, TaskState};
use crate::secrets::DataKey;
use crate::store::ClusterState;

/// What a node's assignments consist of, by id, without any encoding: cheap to compute on every change.
#[derive(Debug, Default, PartialEq)]
struct Wanted {
    /// Task id → the task's version.
    tasks: BTreeMap<String, u64>,
    secrets: BTreeSet<String>,
    configs: BTreeSet<String>,
    /// Service id → name.
    names: HashMap<String, String>,
    /// Service id → published ports as JSON (services that publish any).
    ports: HashMap<String, String>,
    hostname: String,
}

fn wanted(state: &ClusterState, node_id: &str) -> Wanted {
    let mut w = Wanted::default();
    for t in state
        .tasks_on_node(node_id)
        .filter(|t| t.status.state >= TaskState::Assigned)
    {
        w.tasks.insert(t.id.clone(), t.meta.version);
        if !w.names.contains_key(&t.service_id) {
            if let Some(svc) = state.service(&t.service_id) {
                w.names.insert(t.service_id.clone(), svc.spec.name.clone());
                if !svc.spec.endpoint.ports.is_empty() {
                    w.ports
                        .insert(t.service_id.clone(), to_json(&svc.spec.endpoint.ports));
                }
            }
        }
        // only tasks that may still run get their secrets
        if !t.status.state.is_terminal() && t.desired_state <= TaskState::Running {
            w.secrets
                .extend(t.spec.container.secrets.iter().map(|r| r.id.clone()));
            w.configs
                .extend(t.spec.container.configs.iter().map(|r| r.id.clone()));
        }
    }
    w.hostname = state
        .node(node_id)
        .map(|n| n.description.hostname.clone())
        .unwrap_or_default();
    w
}

fn secret_payloads<'a>(
    state: &ClusterState,
    key: &DataKey,
    ids: impl Iterator<Item = &'a String>,
) -> Vec<pb::SecretPayload> {
    ids.filter_map(|id| {
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
    .collect()
}

fn config_payloads<'a>(
    state: &ClusterState,
    ids: impl Iterator<Item = &'a String>,
) -> Vec<pb::SecretPayload> {
    ids.filter_map(|id| {
        let c = state.config(id)?;
        Some(pb::SecretPayload {
            id: c.id.clone(),
            name: c.spec.name.clone(),
            data: c.spec.data.0.clone(),
        })
    })
    .collect()
}

/// The dispatcher's memory of what one stream has sent, so the next message carries only the difference.
#[derive(Debug, Default)]
pub struct AssignmentDiff {
    sent: Option<(Wanted, MapParts)>,
}

impl AssignmentDiff {
    /// Whether the stream may skip a change that `concerns_node` says is none of this node's: it sent a
    /// complete set already and the endpoints of its map are still current in `netmaps`.
    pub fn may_skip(&self, netmaps: &NetmapCache) -> bool {
        self.sent
            .as_ref()
            .is_some_and(|(_, map)| netmaps.is_current(map))
    }

    /// The message that brings the node from what this stream sent last to the current state: the complete
    /// set the first time, then only the changes; `None` when nothing changed for this node.
    pub fn next(
        &mut self,
        state: &ClusterState,
        node_id: &str,
        key: &DataKey,
    ) -> Option<pb::AssignmentsMessage> {
        self.next_with(state, node_id, key, None)
    }

    /// [`AssignmentDiff::next`], the network map made through `netmaps` (shared by every stream, synced with
    /// the store by the caller), so a network's part is built once for every node that has it.
    pub fn next_with(
        &mut self,
        state: &ClusterState,
        node_id: &str,
        key: &DataKey,
        netmaps: Option<&mut NetmapCache>,
    ) -> Option<pb::AssignmentsMessage> {
        let now = wanted(state, node_id);
        let mut cache = NetmapCache::default();
        let netmaps = netmaps.unwrap_or(&mut cache);
        let map = netmaps.parts(state, node_id);
        let Some((sent, sent_map)) = &self.sent else {
            let msg = complete(state, key, &now, &map);
            self.sent = Some((now, map));
            return Some(msg);
        };
        // the map's change, worked out once per network for every stream (`NetmapCache::delta_json`)
        let map_delta = if sent_map.same_as(&map) {
            None
        } else {
            netmaps.delta_json(sent_map, &map)
        };
        if *sent == now && map_delta.is_none() {
            self.sent = Some((now, map));
            return None;
        }
        let tasks_json = now
            .tasks
            .iter()
            .filter(|(id, v)| sent.tasks.get(*id) != Some(v))
            .filter_map(|(id, _)| state.task(id).map(to_json))
            .collect();
        let gone = |old: &BTreeSet<String>, new: &BTreeSet<String>| -> Vec<String> {
            old.difference(new).cloned().collect()
        };
        let mut service_ports_json: HashMap<String, String> = now
            .ports
            .iter()
            .filter(|(id, p)| sent.ports.get(*id) != Some(p))
            .map(|(id, p)| (id.clone(), p.clone()))
            .collect();
        for id in sent.ports.keys().filter(|id| !now.ports.contains_key(*id)) {
            service_ports_json.insert(id.clone(), "[]".into());
        }
        let msg = pb::AssignmentsMessage {
            tasks_json,
            secrets: secret_payloads(state, key, now.secrets.difference(&sent.secrets)),
            configs: config_payloads(state, now.configs.difference(&sent.configs)),
            service_names: now
                .names
                .iter()
                .filter(|(id, n)| sent.names.get(*id) != Some(n))
                .map(|(id, n)| (id.clone(), n.clone()))
                .collect(),
            node_hostname: now.hostname.clone(),
            service_ports_json,
            incremental: true,
            removed_task_ids: sent
                .tasks
                .keys()
                .filter(|id| !now.tasks.contains_key(*id))
                .cloned()
                .collect(),
            removed_secret_ids: gone(&sent.secrets, &now.secrets),
            removed_config_ids: gone(&sent.configs, &now.configs),
            // in a change message, only how the map changed ("": it did not)
            network_map_json: String::new(),
            network_map_delta_json: map_delta.unwrap_or_default(),
        };
        self.sent = Some((now, map));
        Some(msg)
    }
}

/// The complete assignments message for `node_id`.
pub fn assignments_for(
    state: &ClusterState,
    node_id: &str,
    key: &DataKey,
) -> pb::AssignmentsMessage {
    complete(
        state,
        key,
        &wanted(state, node_id),
        &NetmapCache::default().parts(state, node_id),
    )
}

/// The complete message for what `w` and `map` say the node has.
fn complete(
    state: &ClusterState,
    key: &DataKey,
    w: &Wanted,
    map: &MapParts,
) -> pb::AssignmentsMessage {
    pb::AssignmentsMessage {
        tasks_json: w
            .tasks
            .keys()
            .filter_map(|id| state.task(id).map(to_json))
            .collect(),
        secrets: secret_payloads(state, key, w.secrets.iter()),
        configs: config_payloads(state, w.configs.iter()),
        service_names: w.names.clone(),
        node_hostname: w.hostname.clone(),
        service_ports_json: w.ports.clone(),
        incremental: false,
        removed_task_ids: Vec::new(),
        removed_secret_ids: Vec::new(),
        removed_config_ids: Vec::new(),
        network_map_json: map.to_json(),
        network_map_delta_json: String::new(),
    }
}

/// A complete assignments message received by node `node_id` → what its worker runs.
pub fn decode_assignments(
    node_id: &str,
    msg: pb::AssignmentsMessage,
) -> Result<Assignments, String> {
    AssignmentSet::default().apply(node_id, msg)
}

/// The agent's side of a stream: the complete set rebuilt from the first message and the changes after it.
#[derive(Debug, Default)]
pub struct AssignmentSet {
    /// Whether a complete set has arrived on this stream.
    based: bool,
    tasks: BTreeMap<String, Task>,
    secrets: HashMap<String, Vec<u8>>,
    configs: HashMap<String, Vec<u8>>,
    names: HashMap<String, String>,
    ports: HashMap<String, Vec<PortConfig>>,
    hostname: String,
    /// Shared with the assignments handed out, copied only when a change arrives.
    network_map: std::sync::Arc<NetworkMap>,
}

impl AssignmentSet {
    /// Applies the next message of the stream and returns the node's complete assignments. A change message
    /// before any complete set is refused (the stream must start over).
    pub fn apply(
        &mut self,
        node_id: &str,
        msg: pb::AssignmentsMessage,
    ) -> Result<Assignments, String> {
        if msg.incremental && !self.based {
            return Err("assignment changes arrived before the complete set".into());
        }
        let tasks = msg
            .tasks_json
            .iter()
            .map(|j| from_json::<Task>("task", j).map_err(|e| e.message().to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        let mut ports = Vec::new();
        for (id, j) in &msg.service_ports_json {
            let p =
                from_json::<Vec<PortConfig>>("ports", j).map_err(|e| e.message().to_string())?;
            ports.push((id.clone(), p));
        }
        // a complete set without a map is from a manager without networking: an empty map
        let network_map = if msg.network_map_json.is_empty() {
            (!msg.incremental).then(NetworkMap::default)
        } else {
            Some(
                from_json::<NetworkMap>("network map", &msg.network_map_json)
                    .map_err(|e| e.message().to_string())?,
            )
        };
        let map_delta = if msg.network_map_delta_json.is_empty() {
            None
        } else {
            Some(
                from_json::<NetworkMapDelta>("network map change", &msg.network_map_delta_json)
                    .map_err(|e| e.message().to_string())?,
            )
        };
        if !msg.incremental {
            *self = AssignmentSet {
                based: true,
                ..AssignmentSet::default()
            };
        }
        for id in &msg.removed_task_ids {
            self.tasks.remove(id);
        }
        for id in &msg.removed_secret_ids {
            self.secrets.remove(id);
        }
        for id in &msg.removed_config_ids {
            self.configs.remove(id);
        }
        for t in tasks {
            self.tasks.insert(t.id.clone(), t);
        }
        self.secrets
            .extend(msg.secrets.into_iter().map(|s| (s.id, s.data)));
        self.configs
            .extend(msg.configs.into_iter().map(|c| (c.id, c.data)));
        self.names.extend(msg.service_names);
        for (id, p) in ports {
            if p.is_empty() {
                self.ports.remove(&id);
            } else {
                self.ports.insert(id, p);
            }
        }
        self.hostname = msg.node_hostname;
        if let Some(map) = network_map {
            self.network_map = std::sync::Arc::new(map);
        }
        if let Some(delta) = map_delta {
            std::sync::Arc::make_mut(&mut self.network_map).apply(delta);
        }
        // names and ports only of services this node still has tasks of
        let services: BTreeSet<&String> = self.tasks.values().map(|t| &t.service_id).collect();
        self.names.retain(|id, _| services.contains(id));
        self.ports.retain(|id, _| services.contains(id));
        Ok(Assignments {
            tasks: self.tasks.values().cloned().collect(),
            secrets: self.secrets.clone(),
            configs: self.configs.clone(),
            service_names: self.names.clone(),
            service_ports: self.ports.clone(),
            node_id: node_id.to_string(),
            node_hostname: self.hostname.clone(),
            network_map: self.network_map.clone(),
        })
    }
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
            crate::store::Op::CreateNetwork(crate::manager::testutil::network("front")),
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
            std::sync::Arc::new(crate::manager::ipam::netmap::network_map(
                &world.state,
                "n1"
            ))
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

#[cfg(test)]
mod diff_tests {
    use super::*;
    use crate::manager::testutil::{creates, node, service, task, World};
    use crate::model::{PortProtocol, PublishMode, ServiceMode};
    use crate::store::Op;

    fn normalized(mut a: Assignments) -> String {
        a.tasks.sort_by(|x, y| x.id.cmp(&y.id));
        let sorted =
            |m: &HashMap<String, Vec<u8>>| m.clone().into_iter().collect::<BTreeMap<_, _>>();
        format!(
            "{:?} {:?} {:?} {:?} {:?} {}",
            a.tasks,
            sorted(&a.secrets),
            sorted(&a.configs),
            a.service_names
                .clone()
                .into_iter()
                .collect::<BTreeMap<_, _>>(),
            a.service_ports
                .clone()
                .into_iter()
                .collect::<BTreeMap<_, _>>(),
            a.node_hostname
        )
    }

    /// After every change, the complete set rebuilt from the diff stream equals the complete message; a node
    /// whose tasks did not change is sent nothing, and a changed task is the only one encoded.
    #[test]
    fn the_diff_stream_rebuilds_the_complete_set_and_sends_only_changes() {
        let mut web = service("web", ServiceMode::Replicated { replicas: 2 });
        web.spec.endpoint.ports = vec![PortConfig {
            protocol: PortProtocol::Tcp,
            target_port: 80,
            published_port: Some(8080),
            publish_mode: PublishMode::Host,
        }];
        let db = service("db", ServiceMode::Replicated { replicas: 1 });
        let mut w = World::with(creates(
            vec![node("n1"), node("n2")],
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
                    "web",
                    2,
                    Some("n2"),
                    TaskState::Running,
                    TaskState::Assigned,
                ),
            ],
        ));
        let key = DataKey::from_bytes([7; 32]);
        let mut diff = AssignmentDiff::default();
        let mut set = AssignmentSet::default();
        let mut check = |w: &World, diff: &mut AssignmentDiff| -> Option<pb::AssignmentsMessage> {
            let msg = diff.next(&w.state, "n1", &key)?;
            let got = set.apply("n1", msg.clone()).expect("applies");
            let full =
                decode_assignments("n1", assignments_for(&w.state, "n1", &key)).expect("full");
            assert_eq!(normalized(got), normalized(full));
            Some(msg)
        };
        let first = check(&w, &mut diff).expect("the complete set first");
        assert!(!first.incremental);
        assert_eq!(first.tasks_json.len(), 1);
        assert!(check(&w, &mut diff).is_none(), "nothing changed");

        // a change on another node sends n1 nothing
        let t2 = w.state.task("t2").unwrap().clone();
        let mut t2b = t2.clone();
        t2b.status.state = TaskState::Running;
        w.apply_ops(vec![Op::UpdateTask {
            task: t2b,
            expected_version: t2.meta.version,
        }]);
        assert!(check(&w, &mut diff).is_none(), "n2's change is not n1's");

        // a new task on n1: only it is encoded
        w.apply_ops(vec![Op::CreateTask(task(
            "t3",
            "db",
            1,
            Some("n1"),
            TaskState::Running,
            TaskState::Assigned,
        ))]);
        let m = check(&w, &mut diff).expect("a change");
        assert!(m.incremental);
        assert_eq!(m.tasks_json.len(), 1);
        assert!(m.tasks_json[0].contains("\"t3\""));
        assert_eq!(m.service_names.len(), 1, "only the new service's name");

        // a status change of t1, then its removal: ports of web are withdrawn with it
        let t1 = w.state.task("t1").unwrap().clone();
        let mut t1b = t1.clone();
        t1b.status.state = TaskState::Running;
        w.apply_ops(vec![Op::UpdateTask {
            task: t1b,
            expected_version: t1.meta.version,
        }]);
        let m = check(&w, &mut diff).expect("a change");
        assert_eq!(m.tasks_json.len(), 1);
        w.apply_ops(vec![Op::DeleteTask { id: "t1".into() }]);
        let m = check(&w, &mut diff).expect("a change");
        assert_eq!(m.removed_task_ids, vec!["t1".to_string()]);
        assert_eq!(
            m.service_ports_json.get("web").map(String::as_str),
            Some("[]")
        );

        // a change before a complete set is refused
        let mut fresh = AssignmentSet::default();
        assert!(fresh.apply("n1", m).is_err());
    }
}

#[cfg(test)]
#[path = "assignments_delta_tests.rs"]
mod map_delta_tests;
