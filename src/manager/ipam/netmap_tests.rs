//! The network map of a node, built from states made in memory.

use std::sync::Arc;

use super::*;
use crate::manager::testutil::{node, service, task, World};
use crate::model::{
    EndpointMode, HealthConfig, Meta, Network, NetworkAttachment, NetworkSpec, PortConfig,
    PortProtocol, PublishMode, ServiceMode, TaskHealth,
};
use crate::store::Op;
use crate::util::SeqIds;

fn network(id: &str, ingress: bool) -> Network {
    Network {
        id: id.into(),
        meta: Meta::default(),
        spec: NetworkSpec {
            name: id.into(),
            driver: "overlay".into(),
            ingress,
            ..NetworkSpec::default()
        },
        allocation: None,
    }
}

fn svc(id: &str, nets: &[&str], publish: bool) -> Service {
    let mut s = service(id, ServiceMode::Replicated { replicas: 1 });
    s.spec.name = format!("app_{id}");
    s.spec.labels = [(STACK_NAMESPACE_LABEL.to_string(), "app".to_string())].into();
    s.spec.task.networks = nets
        .iter()
        .map(|n| NetworkAttachment {
            target: n.to_string(),
            aliases: vec![id.to_string()],
        })
        .collect();
    if publish {
        s.spec.endpoint.ports = vec![PortConfig {
            protocol: PortProtocol::Tcp,
            target_port: 80,
            published_port: Some(8080),
            publish_mode: PublishMode::Ingress,
        }];
    }
    s
}

fn with_addr(id: &str, a: &str) -> crate::model::Node {
    let mut n = node(id);
    n.status.addr = a.into();
    n
}

/// Nodes n1..n3; `web` (front, publishing through the mesh) with t1 on n1 running, t2 on n2 running but
/// being shut down, t3 on n2 running with a health check still starting; `db` (back only) with t4 on n3; `t5`
/// of web still unassigned. Addresses from IPAM.
fn world() -> World {
    let web = svc("web", &["front"], true);
    let db = svc("db", &["back"], false);
    let mut w = World::with(vec![
        Op::CreateNode(with_addr("n1", "192.0.2.1:4242")),
        Op::CreateNode(with_addr("n2", "192.0.2.2:4242")),
        Op::CreateNode(with_addr("n3", "192.0.2.3")),
        Op::CreateNetwork(network("ingress", true)),
        Op::CreateNetwork(network("front", false)),
        Op::CreateNetwork(network("back", false)),
        Op::CreateService(web.clone()),
        Op::CreateService(db.clone()),
    ]);
    let mut tasks = Vec::new();
    for (id, s, slot) in [
        ("t1", &web, 1),
        ("t2", &web, 2),
        ("t3", &web, 3),
        ("t4", &db, 1),
        ("t5", &web, 4),
    ] {
        let mut t = task(id, &s.id, slot, None, TaskState::Running, TaskState::New);
        t.spec = s.spec.task.clone();
        tasks.push(Op::CreateTask(t));
    }
    w.apply_ops(tasks);
    loop {
        let plan = crate::manager::ipam::reconcile(&w.state, w.time, &mut SeqIds::default());
        if plan.ops.is_empty() {
            break;
        }
        w.apply_plan(&plan);
    }
    let mut ops = Vec::new();
    for (id, node, desired, health) in [
        ("t1", "n1", TaskState::Running, None),
        ("t2", "n2", TaskState::Shutdown, None),
        ("t3", "n2", TaskState::Running, Some(TaskHealth::Starting)),
        ("t4", "n3", TaskState::Running, None),
    ] {
        let mut t = w.state.task(id).unwrap().clone();
        let v = t.meta.version;
        t.node_id = Some(node.into());
        t.desired_state = desired;
        t.status.state = TaskState::Running;
        t.status.health = health;
        if health.is_some() {
            t.spec.container.healthcheck = Some(HealthConfig::default());
        }
        ops.push(Op::UpdateTask {
            task: t,
            expected_version: v,
        });
    }
    w.apply_ops(ops);
    w
}

#[test]
fn a_node_sees_its_networks_peers_endpoints_and_services() {
    let w = world();
    let map = network_map(&w.state, "n1");
    let nets: Vec<(&str, &str, u32, bool)> = map
        .networks
        .iter()
        .map(|n| (n.name.as_str(), n.subnet.as_str(), n.vni, n.ingress))
        .collect();
    assert_eq!(
        nets,
        vec![
            ("front", "10.0.2.0/24", 4098, false),
            ("ingress", "10.0.0.0/24", 4096, true)
        ]
    );
    assert_eq!(map.networks[0].gateway, "10.0.2.1");
    // n2 runs web tasks on front and ingress; n3 only runs db on back, which n1 is not on, but every node
    // takes part in ingress
    assert_eq!(
        map.peers,
        vec![
            PeerNode {
                node_id: "n2".into(),
                addr: "192.0.2.2".into(),
                networks: vec!["front".into(), "ingress".into()]
            },
            PeerNode {
                node_id: "n3".into(),
                addr: "192.0.2.3".into(),
                networks: vec!["ingress".into()]
            }
        ]
    );
    let eps: Vec<(&str, &str, bool)> = map
        .endpoints
        .iter()
        .filter(|e| e.network_id == "front")
        .map(|e| (e.task_id.as_str(), e.node_id.as_str(), e.ready))
        .collect();
    // t2 is being shut down and t3 is not healthy yet: neither receives traffic; t5 has no node yet
    assert_eq!(
        eps,
        vec![("t1", "n1", true), ("t2", "n2", false), ("t3", "n2", false)]
    );
    let t1 = map
        .endpoints
        .iter()
        .find(|e| e.task_id == "t1" && e.network_id == "front")
        .unwrap();
    assert_eq!(
        (t1.task_name.as_str(), t1.address.as_str()),
        (
            "app_web.1.t1",
            w.state.task("t1").unwrap().attachments[0]
                .addr
                .trim_end_matches("/24")
        )
    );
    assert_eq!(map.services.len(), 1, "db is not on n1's networks");
    let web = &map.services[0];
    assert_eq!(
        (web.name.as_str(), web.short_name.as_deref(), web.mode),
        ("app_web", Some("web"), EndpointMode::Vip)
    );
    let vip_nets: Vec<&str> = web.vips.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(vip_nets, vec!["front", "ingress"]);
    assert!(
        web.vips.iter().all(|(_, a)| !a.contains('/')),
        "no prefix: {:?}",
        web.vips
    );
    assert_eq!(web.aliases, vec![("front".to_string(), "web".to_string())]);
    assert_eq!(web.ports.len(), 1);
}

#[test]
fn every_node_has_ingress_while_a_service_publishes_through_the_mesh() {
    let w = world();
    let map = network_map(&w.state, "n3");
    let nets: Vec<&str> = map.networks.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(nets, vec!["back", "ingress"]);
    let peers: Vec<&str> = map.peers.iter().map(|p| p.node_id.as_str()).collect();
    assert_eq!(peers, vec!["n1", "n2"]);
    assert_eq!(map.peers[1].addr, "192.0.2.2");
    // a node with no task at all still gets ingress, with every web task behind it
    let mut w = w;
    w.apply_ops(vec![Op::CreateNode(with_addr("n4", "192.0.2.4"))]);
    let map = network_map(&w.state, "n4");
    assert_eq!(
        map.networks
            .iter()
            .map(|n| n.name.as_str())
            .collect::<Vec<_>>(),
        vec!["ingress"]
    );
    assert_eq!(map.endpoints.iter().filter(|e| e.ready).count(), 1);
    // and every other node is its peer on ingress, with or without tasks
    let peers: Vec<(&str, &[String])> = map
        .peers
        .iter()
        .map(|p| (p.node_id.as_str(), p.networks.as_slice()))
        .collect();
    let ing = ["ingress".to_string()];
    assert_eq!(
        peers,
        vec![("n1", &ing[..]), ("n2", &ing[..]), ("n3", &ing[..])]
    );
    assert_eq!(map, network_map(&w.state, "n4"), "deterministic");
}

#[test]
fn the_indexed_map_equals_a_scan_of_every_task_and_service() {
    let mut w = world();
    let nodes = ["n1", "n2", "n3", "n4"];
    let check = |w: &World, step: &str| {
        for n in nodes {
            assert_eq!(
                network_map(&w.state, n),
                network_map_by_scan(&w.state, n),
                "{n} after {step}"
            );
        }
    };
    check(&w, "setup");
    // a task ends (its address is free again), another is removed, a service loses its ports, one goes away
    let mut t1 = w.state.task("t1").unwrap().clone();
    let v = t1.meta.version;
    t1.status.state = TaskState::Failed;
    w.apply_ops(vec![Op::UpdateTask {
        task: t1,
        expected_version: v,
    }]);
    check(&w, "t1 failed");
    w.apply_ops(vec![Op::DeleteTask { id: "t4".into() }]);
    check(&w, "t4 deleted");
    let mut web = w.state.service("web").unwrap().clone();
    let v = web.meta.version;
    web.spec.endpoint.ports.clear();
    w.apply_ops(vec![Op::UpdateService {
        service: web,
        expected_version: v,
    }]);
    check(&w, "web publishes nothing");
    let v = w.state.service("db").unwrap().meta.version;
    w.apply_ops(vec![Op::DeleteService {
        id: "db".into(),
        expected_version: v,
    }]);
    check(&w, "db deleted");
}

#[test]
fn the_cached_map_equals_the_built_one_and_rebuilds_only_changed_networks() {
    let w = world();
    let store = crate::store::Store::new(w.state.clone());
    let mut index = w.state.applied_index();
    let mut cache = NetmapCache::default();
    let nodes = ["n1", "n2", "n3", "n4"];
    // per node: the parts a stream sent last and the map its agent rebuilt from the complete map and the deltas
    let mut streams: std::collections::HashMap<&str, (MapParts, NetworkMap)> = Default::default();
    let mut check = |cache: &mut NetmapCache, step: &str| {
        store.view(|s| {
            let (v, t) = store.touched_since(cache.seen().unwrap_or(0));
            cache.sync(s, v, t.as_ref());
            for n in nodes {
                let want = network_map(s, n);
                assert_eq!(cache.network_map(s, n), want, "{n} after {step}");
                let parts = cache.parts(s, n);
                let complete: NetworkMap =
                    serde_json::from_str(&parts.to_json()).expect("the complete map parses");
                assert_eq!(complete, want, "{n}'s complete map after {step}");
                match streams.get_mut(n) {
                    None => {
                        streams.insert(n, (parts, complete));
                    }
                    Some((sent, agent)) => {
                        match cache.delta_json(sent, &parts) {
                            Some(json) => {
                                let delta: crate::model::netmap::NetworkMapDelta =
                                    serde_json::from_str(&json).expect("the delta parses");
                                assert!(!delta.is_empty(), "{json}");
                                // only what changed is on the wire
                                assert_eq!(
                                    delta,
                                    crate::model::netmap::NetworkMapDelta::between(agent, &want),
                                    "{n}'s delta after {step}"
                                );
                                agent.apply(delta);
                            }
                            None => assert_eq!(*agent, want, "{n}: no delta after {step}"),
                        }
                        assert_eq!(*agent, want, "{n}'s rebuilt map after {step}");
                        *sent = parts;
                    }
                }
            }
        })
    };
    let mut apply = |op: Op| {
        index += 1;
        store
            .apply(
                index,
                &crate::store::Batch {
                    ops: vec![op],
                    time: 5,
                },
            )
            .expect("applies");
    };
    check(&mut cache, "setup");
    // a stream that sends nothing until the end: it gets the sum of every change at once
    let lagging = store.view(|s| cache.parts(s, "n2"));
    let built = cache.pieces.len();
    assert!(built >= 2, "{built}");
    let generations = |cache: &NetmapCache| -> BTreeMap<String, u64> {
        cache
            .pieces
            .iter()
            .map(|(n, p)| (n.clone(), p.generation))
            .collect()
    };
    let before = generations(&cache);
    // a change to a task of db (network back): only back's part is patched, with that task's endpoint
    let mut t4 = store.view(|s| s.task("t4").cloned()).unwrap();
    let v = t4.meta.version;
    t4.status.health = Some(TaskHealth::Unhealthy);
    apply(Op::UpdateTask {
        task: t4,
        expected_version: v,
    });
    let (v, t) = store.touched_since(cache.seen().unwrap());
    store.view(|s| cache.sync(s, v, t.as_ref()));
    let after = generations(&cache);
    assert_eq!(after.len(), built);
    for (net, g) in &after {
        assert_eq!(*g != before[net], net == "back", "{net}");
    }
    let patches = &cache.patches["back"];
    assert_eq!(patches.len(), 1);
    assert_eq!(
        patches[0].2.keys().collect::<Vec<_>>(),
        vec!["t4"],
        "one task's endpoint"
    );
    check(&mut cache, "t4 unhealthy");
    // a service renamed: its tasks' endpoints carry its name
    let mut web = store.view(|s| s.service("web").cloned()).unwrap();
    let v = web.meta.version;
    web.spec.name = "app_www".into();
    apply(Op::UpdateService {
        service: web,
        expected_version: v,
    });
    check(&mut cache, "web renamed");
    // a node's address, a task ending, a node added, a service deleted
    let mut n2 = store.view(|s| s.node("n2").cloned()).unwrap();
    let v = n2.meta.version;
    n2.status.addr = "192.0.2.22:4242".into();
    apply(Op::UpdateNode {
        node: n2,
        expected_version: v,
    });
    check(&mut cache, "n2 moved");
    let mut t3 = store.view(|s| s.task("t3").cloned()).unwrap();
    let v = t3.meta.version;
    t3.status.state = TaskState::Failed;
    apply(Op::UpdateTask {
        task: t3,
        expected_version: v,
    });
    check(&mut cache, "t3 failed");
    apply(Op::CreateNode(with_addr("n4", "192.0.2.4")));
    check(&mut cache, "n4 joined");
    let v = store.view(|s| s.service("db").unwrap().meta.version);
    apply(Op::DeleteService {
        id: "db".into(),
        expected_version: v,
    });
    check(&mut cache, "db deleted");
    store.view(|s| {
        let now = cache.parts(s, "n2");
        let json = cache.delta_json(&lagging, &now).expect("n2's map changed");
        let delta: crate::model::netmap::NetworkMapDelta = serde_json::from_str(&json).unwrap();
        let mut agent = lagging.to_map();
        assert_eq!(
            delta,
            crate::model::netmap::NetworkMapDelta::between(&agent, &now.to_map())
        );
        agent.apply(delta);
        assert_eq!(agent, network_map(s, "n2"));
    });
    // a restore: everything rebuilt
    store.restore(index + 10, store.view(Clone::clone));
    check(&mut cache, "restore");
}

#[test]
fn an_empty_cluster_gives_an_empty_map() {
    let w = World::new();
    assert_eq!(network_map(&w.state, "n1"), NetworkMap::default());
}

/// The map as it was first built: a scan of every task and service (the reference the indexed build must equal).
pub(super) fn network_map_by_scan(state: &ClusterState, node_id: &str) -> NetworkMap {
    // the networks: those of this node's tasks, and ingress when the mesh is in use
    let mut nets: BTreeSet<String> = state
        .tasks_on_node(node_id)
        .filter(|t| placed(t).is_some())
        .flat_map(|t| t.attachments.iter().map(|a| a.network_id.clone()))
        .collect();
    if let Some(ingress) = ingress(state) {
        if state
            .services()
            .any(crate::manager::ipam::publishes_ingress)
        {
            nets.insert(ingress.id.clone());
        }
    }
    let networks: Vec<NetworkInfo> = nets
        .iter()
        .filter_map(|id| {
            let n = state.network(id)?;
            let a = n.allocation.as_ref()?;
            Some(NetworkInfo {
                id: n.id.clone(),
                name: n.spec.name.clone(),
                driver: n.spec.driver.clone(),
                subnet: a.subnet.clone(),
                gateway: a.gateway.clone(),
                vni: a.vni,
                internal: n.spec.internal,
                ingress: n.spec.ingress,
            })
        })
        .collect();
    let nets: BTreeSet<&str> = networks.iter().map(|n| n.id.as_str()).collect();

    // every placed task on those networks, and the nodes they run on
    let mut endpoints = Vec::new();
    let mut peers: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut services: BTreeSet<&str> = BTreeSet::new();
    for t in state.tasks() {
        let Some(node) = placed(t) else { continue };
        let Some(service) = state.service(&t.service_id) else {
            continue;
        };
        for a in t
            .attachments
            .iter()
            .filter(|a| nets.contains(a.network_id.as_str()))
        {
            let Some(address) = cidr::host_of(&a.addr) else {
                continue;
            };
            if node != node_id {
                peers.entry(node).or_default().insert(&a.network_id);
            }
            services.insert(&service.id);
            endpoints.push(Arc::new(Endpoint {
                task_id: t.id.clone(),
                task_name: t.name(&service.spec.name),
                service_id: t.service_id.clone(),
                node_id: node.to_owned(),
                network_id: a.network_id.clone(),
                address: address.to_string(),
                ready: ready(t),
            }));
        }
    }
    // every other node with an address is a peer on ingress
    if let Some(ingress) = networks.iter().find(|n| n.ingress) {
        for n in state.nodes() {
            if n.id != node_id && !n.status.addr.is_empty() {
                peers.entry(&n.id).or_default().insert(&ingress.id);
            }
        }
    }
    let peers = peers
        .into_iter()
        .filter_map(|(id, networks)| {
            let n = state.node(id)?;
            Some(PeerNode {
                node_id: id.to_owned(),
                addr: host_of(&n.status.addr),
                networks: networks.into_iter().map(str::to_owned).collect(),
            })
        })
        .collect();

    // services with a VIP on those networks too (no task yet, or none placed)
    for s in state.services() {
        if s.virtual_ips
            .iter()
            .any(|v| nets.contains(v.network_id.as_str()))
        {
            services.insert(&s.id);
        }
    }
    let services = services
        .into_iter()
        .filter_map(|id| state.service(id))
        .map(|s| ServiceEndpoint {
            service_id: s.id.clone(),
            name: s.spec.name.clone(),
            short_name: short_name(s),
            mode: s.spec.endpoint.mode,
            vips: s
                .virtual_ips
                .iter()
                .filter(|v| nets.contains(v.network_id.as_str()))
                .filter_map(|v| {
                    cidr::host_of(&v.addr).map(|a| (v.network_id.clone(), a.to_string()))
                })
                .collect(),
            aliases: s
                .spec
                .task
                .networks
                .iter()
                .filter_map(|att| {
                    let n = state.network_by_name(&att.target)?;
                    nets.contains(n.id.as_str())
                        .then_some((n.id.clone(), &att.aliases))
                })
                .flat_map(|(id, aliases)| aliases.iter().map(move |al| (id.clone(), al.clone())))
                .collect(),
            ports: s.spec.endpoint.ports.clone(),
        })
        .collect();
    endpoints.sort_by(|a, b| a.key().cmp(&b.key()));
    NetworkMap {
        networks,
        peers,
        endpoints,
        services,
    }
}

#[test]
fn a_stream_several_changes_behind_gets_their_sum() {
    let w = world();
    let store = crate::store::Store::new(w.state.clone());
    let mut index = w.state.applied_index();
    let mut cache = NetmapCache::default();
    let sync = |cache: &mut NetmapCache| {
        store.view(|s| {
            let (v, t) = store.touched_since(cache.seen().unwrap_or(0));
            cache.sync(s, v, t.as_ref());
        })
    };
    sync(&mut cache);
    let sent = store.view(|s| cache.parts(s, "n3"));
    // three task changes of web (on `front` and ingress), each its own patch
    let sent_n1 = store.view(|s| cache.parts(s, "n1"));
    for (id, state) in [
        ("t3", TaskState::Failed),
        ("t1", TaskState::Failed),
        ("t2", TaskState::Shutdown),
    ] {
        let mut t = store.view(|s| s.task(id).cloned()).unwrap();
        let v = t.meta.version;
        t.status.state = state;
        index += 1;
        store
            .apply(
                index,
                &crate::store::Batch {
                    ops: vec![Op::UpdateTask {
                        task: t,
                        expected_version: v,
                    }],
                    time: 5,
                },
            )
            .unwrap();
        sync(&mut cache);
    }
    assert!(cache.patches["front"].len() >= 3, "patched, not rebuilt");
    store.view(|s| {
        let now = cache.parts(s, "n1");
        let json = cache.delta_json(&sent_n1, &now).expect("front changed");
        let delta: crate::model::netmap::NetworkMapDelta = serde_json::from_str(&json).unwrap();
        let mut agent = sent_n1.to_map();
        assert_eq!(
            delta,
            crate::model::netmap::NetworkMapDelta::between(&agent, &now.to_map())
        );
        agent.apply(delta);
        assert_eq!(agent, network_map(s, "n1"));
        // n3 is not on front but on ingress, where web's tasks ended too: only those
        let n3 = cache.parts(s, "n3");
        let json = cache.delta_json(&sent, &n3).expect("ingress changed");
        let delta: crate::model::netmap::NetworkMapDelta = serde_json::from_str(&json).unwrap();
        assert!(delta
            .removed_endpoints
            .iter()
            .all(|(net, _)| net == "ingress"));
        assert_eq!(
            delta,
            crate::model::netmap::NetworkMapDelta::between(&sent.to_map(), &n3.to_map())
        );
    });
}
