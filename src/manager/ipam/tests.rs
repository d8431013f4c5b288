//! IPAM as tables over states built in memory: networks get subnets and VNIs, services VIPs, tasks addresses
//! before the scheduler sees them; freed addresses come back, but not at once.

use super::*;
use crate::manager::testutil::{node, service, task, World};
use crate::model::{
    Meta, NetworkAttachment, NetworkSpec, PortConfig, PortProtocol, PublishMode, ServiceMode,
    TaskState,
};
use crate::util::SeqIds;

fn network(id: &str, name: &str, subnets: &[&str]) -> Network {
    Network {
        id: id.into(),
        meta: Meta::default(),
        spec: NetworkSpec {
            name: name.into(),
            driver: "overlay".into(),
            subnets: subnets.iter().map(|s| s.to_string()).collect(),
            ..NetworkSpec::default()
        },
        allocation: None,
    }
}

fn on_networks(id: &str, nets: &[&str]) -> Service {
    let mut s = service(id, ServiceMode::Replicated { replicas: 1 });
    s.spec.task.networks = nets
        .iter()
        .map(|n| NetworkAttachment {
            target: n.to_string(),
            aliases: vec![id.to_string()],
        })
        .collect();
    s
}

fn new_task(id: &str, svc: &Service, slot: u64) -> Task {
    let mut t = task(id, &svc.id, slot, None, TaskState::Running, TaskState::New);
    t.spec = svc.spec.task.clone();
    t
}

/// Runs IPAM until it has nothing left to do; returns the world.
fn settle(mut w: World) -> World {
    for _ in 0..10 {
        let plan = reconcile(&w.state, w.time, &mut SeqIds::default());
        if plan.ops.is_empty() {
            return w;
        }
        w.apply_plan(&plan);
    }
    panic!("IPAM does not settle");
}

fn subnet_of(w: &World, id: &str) -> String {
    w.state
        .network(id)
        .and_then(|n| n.allocation.clone())
        .map(|a| a.subnet)
        .unwrap_or_default()
}

fn addrs(w: &World, task: &str) -> Vec<String> {
    w.state
        .task(task)
        .map(|t| t.attachments.iter().map(|a| a.addr.clone()).collect())
        .unwrap_or_default()
}

#[test]
fn networks_get_subnets_from_the_pool_ingress_first_and_the_users_subnet_as_asked() {
    let mut ingress = network("ing", INGRESS_NAME, &[]);
    ingress.spec.ingress = true;
    let w = settle(World::with(vec![
        Op::CreateNetwork(network("b", "app_back", &[])),
        Op::CreateNetwork(network("u", "mine", &["10.0.0.0/24"])),
        Op::CreateNetwork(ingress),
        Op::CreateNetwork(network("f", "app_front", &[])),
    ]));
    // the user's 10.0.0.0/24 is taken first (it can be nothing else); ingress then gets the pool's first free one
    let cases = [
        ("ing", "10.0.1.0/24"),
        ("u", "10.0.0.0/24"),
        ("b", "10.0.2.0/24"),
        ("f", "10.0.3.0/24"),
    ];
    for (id, want) in cases {
        assert_eq!(subnet_of(&w, id), want, "network {id}");
    }
    let mut vnis: Vec<u32> = w
        .state
        .networks()
        .filter_map(|n| n.allocation.as_ref().map(|a| a.vni))
        .collect();
    vnis.sort();
    assert_eq!(vnis, vec![4096, 4097, 4098, 4099]);
    let a = w.state.network("b").unwrap().allocation.clone().unwrap();
    assert_eq!(
        (a.gateway.as_str(), a.scope.as_str()),
        ("10.0.2.1", "swarm")
    );
}

#[test]
fn a_users_subnet_that_overlaps_stays_unallocated_and_its_tasks_say_why() {
    let mut w = settle(World::with(vec![Op::CreateNetwork(network(
        "a",
        "a",
        &["10.9.0.0/16"],
    ))]));
    let svc = on_networks("web", &["b"]);
    w.apply_ops(vec![
        Op::CreateNetwork(network("b", "b", &["10.9.1.0/24"])),
        Op::CreateService(svc.clone()),
        Op::CreateTask(new_task("t1", &svc, 1)),
    ]);
    let w = settle(w);
    assert_eq!(subnet_of(&w, "b"), "");
    let t = w.state.task("t1").unwrap();
    assert_eq!(t.status.state, TaskState::Pending);
    assert_eq!(t.status.message, "network b has no subnet allocated yet");
    assert!(!allocated(&w.state, t));
}

#[test]
fn tasks_and_vips_get_distinct_addresses_before_the_scheduler_places_them() {
    let web = on_networks("web", &["front", "back"]);
    let mut dns = on_networks("dns", &["back"]);
    dns.spec.endpoint.mode = EndpointMode::Dnsrr;
    let w = settle(World::with(vec![
        Op::CreateNode(node("n1")),
        Op::CreateNetwork(network("front", "front", &[])),
        Op::CreateNetwork(network("back", "back", &[])),
        Op::CreateService(web.clone()),
        Op::CreateService(dns.clone()),
        Op::CreateTask(new_task("t1", &web, 1)),
        Op::CreateTask(new_task("t2", &web, 2)),
        Op::CreateTask(new_task("t3", &dns, 1)),
    ]));
    let vips: Vec<(String, String)> = w
        .state
        .service("web")
        .unwrap()
        .virtual_ips
        .iter()
        .map(|v| (v.network_id.clone(), v.addr.clone()))
        .collect();
    // networks are allocated oldest first, then by id: back 10.0.0.0/24, front 10.0.1.0/24
    assert_eq!(
        vips,
        vec![
            ("front".into(), "10.0.1.2/24".into()),
            ("back".into(), "10.0.0.2/24".into())
        ]
    );
    assert!(
        w.state.service("dns").unwrap().virtual_ips.is_empty(),
        "dnsrr has no VIP"
    );
    assert_eq!(addrs(&w, "t1"), vec!["10.0.1.3/24", "10.0.0.3/24"]);
    assert_eq!(addrs(&w, "t2"), vec!["10.0.1.4/24", "10.0.0.4/24"]);
    assert_eq!(addrs(&w, "t3"), vec!["10.0.0.5/24"]);
    for t in ["t1", "t2", "t3"] {
        assert!(allocated(&w.state, w.state.task(t).unwrap()), "{t}");
    }
}

#[test]
fn a_service_publishing_through_the_mesh_attaches_to_ingress() {
    let mut ingress = network("ing", INGRESS_NAME, &[]);
    ingress.spec.ingress = true;
    let mut web = on_networks("web", &["front"]);
    web.spec.endpoint.ports = vec![PortConfig {
        protocol: PortProtocol::Tcp,
        target_port: 80,
        published_port: Some(8080),
        publish_mode: PublishMode::Ingress,
    }];
    let w = settle(World::with(vec![
        Op::CreateNetwork(ingress),
        Op::CreateNetwork(network("front", "front", &[])),
        Op::CreateService(web.clone()),
        Op::CreateTask(new_task("t1", &web, 1)),
    ]));
    let nets: Vec<String> = w
        .state
        .task("t1")
        .unwrap()
        .attachments
        .iter()
        .map(|a| a.network_id.clone())
        .collect();
    assert_eq!(nets, vec!["front", "ing"]);
    assert_eq!(w.state.service("web").unwrap().virtual_ips.len(), 2);
}

#[test]
fn a_missing_network_pends_the_task_with_the_reason() {
    let web = on_networks("web", &["gone"]);
    let w = settle(World::with(vec![
        Op::CreateService(web.clone()),
        Op::CreateTask(new_task("t1", &web, 1)),
    ]));
    let t = w.state.task("t1").unwrap();
    assert_eq!(
        (t.status.state, t.status.message.as_str()),
        (TaskState::Pending, "network gone not found")
    );
}

#[test]
fn freed_addresses_are_reused_only_after_the_rest_of_the_subnet() {
    let mut small = network("n", "small", &["10.5.0.0/29"]); // hosts .2 ..= .6
    small.spec.driver = "overlay".into();
    let mut svc = on_networks("web", &["small"]);
    svc.spec.endpoint.mode = EndpointMode::Dnsrr;
    let mut w = settle(World::with(vec![
        Op::CreateNetwork(small),
        Op::CreateService(svc.clone()),
        Op::CreateTask(new_task("t1", &svc, 1)),
        Op::CreateTask(new_task("t2", &svc, 2)),
    ]));
    assert_eq!(
        (addrs(&w, "t1"), addrs(&w, "t2")),
        (
            vec!["10.5.0.2/29".to_string()],
            vec!["10.5.0.3/29".to_string()]
        )
    );
    // t1 ends: its .2 is free, but the next task gets .4
    let mut ended = w.state.task("t1").unwrap().clone();
    ended.status.state = TaskState::Failed;
    let v = ended.meta.version;
    w.apply_ops(vec![
        Op::UpdateTask {
            task: ended,
            expected_version: v,
        },
        Op::CreateTask(new_task("t3", &svc, 1)),
    ]);
    let mut w = settle(w);
    assert_eq!(addrs(&w, "t3"), vec!["10.5.0.4/29"]);
    // fill the subnet: .5, .6, then the freed .2; then nothing is left
    w.apply_ops(vec![
        Op::CreateTask(new_task("t4", &svc, 4)),
        Op::CreateTask(new_task("t5", &svc, 5)),
        Op::CreateTask(new_task("t6", &svc, 6)),
        Op::CreateTask(new_task("t7", &svc, 7)),
    ]);
    let w = settle(w);
    let got: Vec<Vec<String>> = ["t4", "t5", "t6", "t7"]
        .iter()
        .map(|t| addrs(&w, t))
        .collect();
    assert_eq!(
        got,
        vec![
            vec!["10.5.0.5/29".to_string()],
            vec!["10.5.0.6/29".to_string()],
            vec!["10.5.0.2/29".to_string()],
            vec![]
        ]
    );
    let t7 = w.state.task("t7").unwrap();
    assert_eq!(t7.status.message, "no free address left on network small");
    // no two live tasks share one
    let mut live: Vec<String> = w
        .state
        .tasks()
        .filter(|t| !t.status.state.is_terminal())
        .flat_map(|t| t.attachments.iter().map(|a| a.addr.clone()))
        .collect();
    let n = live.len();
    live.sort();
    live.dedup();
    assert_eq!(live.len(), n);
}

#[test]
fn vips_follow_the_services_networks_and_endpoint_mode() {
    let web = on_networks("web", &["a"]);
    let mut w = settle(World::with(vec![
        Op::CreateNetwork(network("a", "a", &[])),
        Op::CreateNetwork(network("b", "b", &[])),
        Op::CreateService(web),
    ]));
    let vips = |w: &World| -> Vec<String> {
        w.state
            .service("web")
            .unwrap()
            .virtual_ips
            .iter()
            .map(|v| v.network_id.clone())
            .collect()
    };
    assert_eq!(vips(&w), vec!["a"]);
    let cases: Vec<(&[&str], EndpointMode, Vec<&str>)> = vec![
        (&["a", "b"], EndpointMode::Vip, vec!["a", "b"]),
        (&["b"], EndpointMode::Vip, vec!["b"]),
        (&["b"], EndpointMode::Dnsrr, vec![]),
    ];
    for (nets, mode, want) in cases {
        let mut s = w.state.service("web").unwrap().clone();
        s.spec.task.networks = on_networks("web", nets).spec.task.networks;
        s.spec.endpoint.mode = mode;
        let v = s.meta.version;
        w.apply_ops(vec![Op::UpdateService {
            service: s,
            expected_version: v,
        }]);
        w = settle(w);
        assert_eq!(vips(&w), want, "{nets:?} {mode:?}");
    }
}

#[test]
fn a_round_is_idempotent() {
    let web = on_networks("web", &["a"]);
    let mut w = settle(World::with(vec![
        Op::CreateNetwork(network("a", "a", &[])),
        Op::CreateService(web.clone()),
        Op::CreateTask(new_task("t1", &web, 1)),
    ]));
    crate::manager::testutil::check_idempotent(&mut w, reconcile);
}
