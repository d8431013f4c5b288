//! The store's IPAM invariants, as tables: no two live tasks (or a task and a VIP) share an address on a network,
//! a terminal task's address is free again, no two networks overlap or share a VNI, the pool parses.

use super::tests::{batch, service, task};
use super::*;
use crate::model::{
    Cluster, ClusterSettings, Meta, Network, NetworkAddress, NetworkAllocation, NetworkSpec, Task,
    TaskState,
};

fn net(id: &str, subnet: &str, vni: u32) -> Network {
    Network {
        id: id.into(),
        meta: Meta::default(),
        spec: NetworkSpec {
            name: format!("{id}_name"),
            ..NetworkSpec::default()
        },
        allocation: Some(NetworkAllocation {
            subnet: subnet.into(),
            gateway: String::new(),
            vni,
            scope: "swarm".into(),
            next_host: 0,
        }),
    }
}

fn addr(network: &str, a: &str) -> NetworkAddress {
    NetworkAddress {
        network_id: network.into(),
        addr: a.into(),
    }
}

fn on(id: &str, a: &str, status: TaskState) -> Task {
    let mut t = task(id, "s1", 1, None);
    t.status.state = status;
    t.attachments = vec![addr("n1", a)];
    t
}

/// A state with network n1 (10.0.1.0/24, VNI 4097), service s1 and task t1 at 10.0.1.2.
fn base() -> ClusterState {
    let mut s = ClusterState::new();
    let ops = vec![
        Op::CreateNetwork(net("n1", "10.0.1.0/24", 4097)),
        Op::CreateService(service("s1", "web")),
        Op::CreateTask(on("t1", "10.0.1.2/24", TaskState::Running)),
    ];
    s.apply_batch(1, &batch(1, ops)).expect("base applies");
    s
}

fn reason(state: &mut ClusterState, ops: Vec<Op>) -> Option<String> {
    state
        .apply_batch(state.applied_index() + 1, &batch(2, ops))
        .err()
        .map(|e| e.reason.to_string())
}

#[test]
fn addresses_are_unique_per_network_among_live_tasks_and_vips() {
    let mut vip = service("s2", "api");
    vip.virtual_ips = vec![addr("n1", "10.0.1.2/24")];
    let mut vip_ok = service("s3", "db");
    vip_ok.virtual_ips = vec![addr("n1", "10.0.1.9/24")];
    let mut two_in_batch = vec![
        Op::CreateTask(on("t2", "10.0.1.3/24", TaskState::New)),
        Op::CreateTask(on("t3", "10.0.1.3/24", TaskState::New)),
    ];
    let cases: Vec<(&str, Vec<Op>, Option<&str>)> = vec![
        (
            "a second live task on the same address",
            vec![Op::CreateTask(on("t2", "10.0.1.2/24", TaskState::New))],
            Some("address 10.0.1.2 on network n1 is already held by task t1"),
        ),
        (
            "a VIP on a task's address",
            vec![Op::CreateService(vip)],
            Some("address 10.0.1.2 on network n1 is already held by task t1"),
        ),
        (
            "two tasks of one batch on one address",
            std::mem::take(&mut two_in_batch),
            Some("address 10.0.1.3 on network n1 is already held by task t2"),
        ),
        (
            "the same address on another network",
            vec![Op::CreateNetwork(net("n2", "10.0.2.0/24", 4098)), {
                let mut t = task("t2", "s1", 2, None);
                t.attachments = vec![addr("n2", "10.0.1.2/24")];
                Op::CreateTask(t)
            }],
            None,
        ),
        (
            "a terminal task keeps a taken address in its history",
            vec![Op::CreateTask(on("t2", "10.0.1.2/24", TaskState::Failed))],
            None,
        ),
        ("a free VIP", vec![Op::CreateService(vip_ok)], None),
        (
            "an address that does not parse",
            vec![Op::CreateTask(on("t2", "10.0.1.x/24", TaskState::New))],
            Some("network n1: task t2: \"10.0.1.x/24\": \"10.0.1.x\" is not an IPv4 address"),
        ),
    ];
    for (what, ops, want) in cases {
        let mut state = base();
        let before = state.clone();
        let got = reason(&mut state, ops);
        assert_eq!(got.as_deref(), want, "{what}");
        if want.is_some() {
            assert_eq!(state, before, "{what}: nothing applied");
        }
    }
}

#[test]
fn a_terminal_task_frees_its_address_and_it_can_be_taken_again() {
    let mut state = base();
    let mut ended = state.task("t1").unwrap().clone();
    ended.status.state = TaskState::Complete;
    let v = ended.meta.version;
    assert_eq!(
        reason(
            &mut state,
            vec![
                Op::UpdateTask {
                    task: ended,
                    expected_version: v
                },
                Op::CreateTask(on("t2", "10.0.1.2/24", TaskState::New)),
            ]
        ),
        None
    );
    assert_eq!(
        state.address_holder("n1", "10.0.1.2".parse().unwrap()),
        Some(&AddressHolder::Task("t2".into()))
    );
    // the old task's later updates never take the entry away from the new holder
    let mut old = state.task("t1").unwrap().clone();
    old.desired_state = TaskState::Remove;
    let v = old.meta.version;
    assert_eq!(
        reason(
            &mut state,
            vec![Op::UpdateTask {
                task: old,
                expected_version: v
            }]
        ),
        None
    );
    assert_eq!(
        reason(&mut state, vec![Op::DeleteTask { id: "t1".into() }]),
        None
    );
    assert_eq!(
        state.addresses_on("n1").collect::<Vec<_>>(),
        vec![(
            "10.0.1.2".parse().unwrap(),
            &AddressHolder::Task("t2".into())
        )]
    );
    // the index survives a snapshot round trip
    let mut copy = state.clone();
    copy.rebuild_indexes();
    assert_eq!(copy, state);
}

#[test]
fn networks_never_overlap_or_share_a_vni() {
    let cases: Vec<(&str, Network, Option<&str>)> = vec![
        (
            "a subnet inside another",
            net("n2", "10.0.1.128/25", 4098),
            Some("network n2_name: subnet 10.0.1.128/25 overlaps 10.0.1.0/24 of network n1_name"),
        ),
        (
            "a subnet around another",
            net("n2", "10.0.0.0/16", 4098),
            Some("network n2_name: subnet 10.0.0.0/16 overlaps 10.0.1.0/24 of network n1_name"),
        ),
        (
            "the same VNI",
            net("n2", "10.0.2.0/24", 4097),
            Some("network n2_name: VNI 4097 is already used by network n1_name"),
        ),
        (
            "a subnet that does not parse",
            net("n2", "10.0.2.1/24", 4098),
            Some("has host bits set"),
        ),
        ("a disjoint subnet", net("n2", "10.0.2.0/24", 4098), None),
    ];
    for (what, n, want) in cases {
        let mut state = base();
        let got = reason(&mut state, vec![Op::CreateNetwork(n)]);
        match want {
            None => assert_eq!(got, None, "{what}"),
            Some(w) => assert!(
                got.as_deref().is_some_and(|g| g.contains(w)),
                "{what}: {got:?}"
            ),
        }
    }
}

#[test]
fn the_default_address_pool_is_checked() {
    let cluster = |pool: &[&str], mask: u8| {
        Op::CreateCluster(Cluster {
            id: "c1".into(),
            meta: Meta::default(),
            settings: ClusterSettings {
                default_addr_pool: pool.iter().map(|p| p.to_string()).collect(),
                default_addr_pool_mask_len: mask,
                ..ClusterSettings::default()
            },
            join_tokens: Default::default(),
            removed_nodes: Vec::new(),
            ca_rotation: None,
            unlock_key: Default::default(),
        })
    };
    let cases: Vec<(Op, Option<&str>)> = vec![
        (cluster(&["10.0.0.0/8"], 24), None),
        (cluster(&["10.10.0.0/16", "192.168.0.0/16"], 26), None),
        (
            cluster(&["10.10.0.0/16"], 8),
            Some("smaller than the subnets"),
        ),
        (cluster(&["10.10.0.0/16"], 30), Some("too few addresses")),
        (cluster(&["10.10.0.0"], 24), Some("CIDR form")),
        (cluster(&[], 24), Some("no subnet given")),
    ];
    for (op, want) in cases {
        let got = reason(&mut ClusterState::new(), vec![op]);
        match want {
            None => assert_eq!(got, None),
            Some(w) => assert!(got.as_deref().is_some_and(|g| g.contains(w)), "{got:?}"),
        }
    }
}
