//! Property tests of apply: random batches over a small universe of services and tasks (some ops fresh,
//! some stale or conflicting) must apply identically on two copies, leave the state untouched when
//! rejected, keep the indexes equal to indexes rebuilt from the tables and to a full scan of the tables, and
//! name in their touched keys every object they changed (and the services, nodes and networks those hang off).

use proptest::prelude::*;

use std::collections::{BTreeMap, BTreeSet};

use super::tests::{batch, service, task};
use super::{ClusterState, NodeLoad, ObjectKind, Op, Touched};
use crate::model::{NetworkAddress, PortConfig, PublishMode, TaskState};

/// An op before it is bound to the current state (which supplies expected versions).
#[derive(Clone, Debug)]
enum Abstract {
    CreateService {
        s: u8,
        name: u8,
    },
    UpdateService {
        s: u8,
        name: u8,
        /// publishes an ingress port, and its VIP on network 0 (host .200+s)
        ingress: bool,
        fresh: bool,
    },
    DeleteService {
        s: u8,
        fresh: bool,
    },
    CreateTask {
        t: u8,
        s: u8,
        node: Option<u8>,
    },
    UpdateTask {
        t: u8,
        state: u8,
        desired: u8,
        node: Option<u8>,
        /// an address on network `n % 2` (host 10 + n / 2), reserved CPUs
        attach: Option<u8>,
        cpus: u8,
        fresh: bool,
    },
    DeleteTask {
        t: u8,
    },
}

fn abstract_op() -> impl Strategy<Value = Abstract> {
    prop_oneof![
        (0..3u8, 0..3u8).prop_map(|(s, name)| Abstract::CreateService { s, name }),
        (
            0..3u8,
            0..3u8,
            any::<bool>(),
            proptest::bool::weighted(0.85)
        )
            .prop_map(|(s, name, ingress, fresh)| Abstract::UpdateService {
                s,
                name,
                ingress,
                fresh
            }),
        (0..3u8, proptest::bool::weighted(0.85))
            .prop_map(|(s, fresh)| Abstract::DeleteService { s, fresh }),
        (0..5u8, 0..3u8, proptest::option::of(0..2u8))
            .prop_map(|(t, s, node)| Abstract::CreateTask { t, s, node }),
        (
            (0..5u8, 0..14u8, 0..14u8),
            proptest::option::of(0..2u8),
            proptest::option::of(0..6u8),
            0..3u8,
            proptest::bool::weighted(0.85)
        )
            .prop_map(|((t, state, desired), node, attach, cpus, fresh)| {
                Abstract::UpdateTask {
                    t,
                    state,
                    desired,
                    node,
                    attach,
                    cpus,
                    fresh,
                }
            }),
        (0..5u8).prop_map(|t| Abstract::DeleteTask { t }),
    ]
}

const STATES: [TaskState; 14] = [
    TaskState::New,
    TaskState::Pending,
    TaskState::Assigned,
    TaskState::Accepted,
    TaskState::Preparing,
    TaskState::Ready,
    TaskState::Starting,
    TaskState::Running,
    TaskState::Complete,
    TaskState::Shutdown,
    TaskState::Failed,
    TaskState::Rejected,
    TaskState::Remove,
    TaskState::Orphaned,
];

fn bind(state: &ClusterState, op: &Abstract) -> Op {
    let version = |v: Option<u64>, fresh: bool| {
        let v = v.unwrap_or(0);
        if fresh {
            v
        } else {
            v + 1000
        }
    };
    match *op {
        Abstract::CreateService { s, name } => {
            Op::CreateService(service(&format!("s{s}"), &format!("n{name}")))
        }
        Abstract::UpdateService {
            s,
            name,
            ingress,
            fresh,
        } => {
            let id = format!("s{s}");
            let current = state.service(&id).map(|x| x.meta.version);
            let mut new = service(&id, &format!("n{name}"));
            if ingress {
                new.spec.endpoint.ports.push(PortConfig {
                    protocol: Default::default(),
                    target_port: 80,
                    published_port: Some(8080),
                    publish_mode: PublishMode::Ingress,
                });
                new.virtual_ips.push(NetworkAddress {
                    network_id: "net0".into(),
                    addr: format!("10.0.0.{}/24", 200 + s),
                });
            }
            Op::UpdateService {
                service: new,
                expected_version: version(current, fresh),
            }
        }
        Abstract::DeleteService { s, fresh } => {
            let id = format!("s{s}");
            let current = state.service(&id).map(|x| x.meta.version);
            Op::DeleteService {
                id,
                expected_version: version(current, fresh),
            }
        }
        Abstract::CreateTask { t, s, node } => {
            let node = node.map(|n| format!("n{n}"));
            Op::CreateTask(task(&format!("t{t}"), &format!("s{s}"), 1, node.as_deref()))
        }
        Abstract::UpdateTask {
            t,
            state: st,
            desired,
            node,
            attach,
            cpus,
            fresh,
        } => {
            let id = format!("t{t}");
            let mut new = state
                .task(&id)
                .cloned()
                .unwrap_or_else(|| task(&id, "s0", 1, None));
            new.status.state = STATES[usize::from(st) % STATES.len()];
            new.desired_state = STATES[usize::from(desired) % STATES.len()];
            new.node_id = node.map(|n| format!("n{n}"));
            new.attachments = attach
                .map(|a| NetworkAddress {
                    network_id: format!("net{}", a % 2),
                    addr: format!("10.0.{}.{}/24", a % 2, 10 + a / 2),
                })
                .into_iter()
                .collect();
            new.spec.resources.reservations.nano_cpus = i64::from(cpus) * 500_000_000;
            Op::UpdateTask {
                expected_version: version(state.task(&id).map(|x| x.meta.version), fresh),
                task: new,
            }
        }
        Abstract::DeleteTask { t } => Op::DeleteTask {
            id: format!("t{t}"),
        },
    }
}

/// The indexes' answers computed by a scan of the tables.
fn check_indexes_by_scan(s: &ClusterState) -> Result<(), TestCaseError> {
    let ids = |it: &mut dyn Iterator<Item = &crate::model::Task>| -> Vec<String> {
        it.map(|t| t.id.clone()).collect()
    };
    let unplaced: Vec<String> = s
        .tasks()
        .filter(|t| super::unplaced(t))
        .map(|t| t.id.clone())
        .collect();
    prop_assert_eq!(ids(&mut s.unplaced_tasks()), unplaced, "unplaced tasks");
    let mut loads: BTreeMap<String, NodeLoad> = BTreeMap::new();
    for t in s.tasks().filter(|t| !t.status.state.is_terminal()) {
        if let Some(n) = &t.node_id {
            loads
                .entry(n.clone())
                .or_default()
                .add(&t.service_id, &t.spec);
        }
    }
    let indexed: BTreeMap<String, NodeLoad> = s
        .node_loads()
        .map(|(n, l)| (n.to_owned(), l.clone()))
        .collect();
    prop_assert_eq!(indexed, loads, "node loads");
    let ingress: Vec<&str> = s
        .services()
        .filter(|x| super::publishes_ingress(x))
        .map(|x| x.id.as_str())
        .collect();
    let indexed: Vec<&str> = s.ingress_services().map(|x| x.id.as_str()).collect();
    prop_assert_eq!(indexed, ingress, "ingress services");
    for sid in ["s0", "s1", "s2"] {
        let scan: Vec<String> = s
            .tasks()
            .filter(|t| t.service_id == sid)
            .map(|t| t.id.clone())
            .collect();
        prop_assert_eq!(ids(&mut s.tasks_of_service(sid)), scan, "tasks of {}", sid);
    }
    for nid in ["n0", "n1"] {
        let scan: Vec<String> = s
            .tasks()
            .filter(|t| t.node_id.as_deref() == Some(nid))
            .map(|t| t.id.clone())
            .collect();
        prop_assert_eq!(ids(&mut s.tasks_on_node(nid)), scan, "tasks on {}", nid);
    }
    Ok(())
}

/// Every object that differs between `before` and `after` is in `touched`, with the keys it hangs off.
fn check_touched(
    before: &ClusterState,
    after: &ClusterState,
    touched: &Touched,
) -> Result<(), TestCaseError> {
    let keys = |k: ObjectKind| touched.of(k).map(str::to_owned).collect::<BTreeSet<_>>();
    let (services, tasks) = (keys(ObjectKind::Service), keys(ObjectKind::Task));
    let all: BTreeSet<String> = before
        .tasks()
        .chain(after.tasks())
        .map(|t| t.id.clone())
        .collect();
    for id in all {
        let (old, new) = (before.task(&id), after.task(&id));
        if old == new {
            continue;
        }
        prop_assert!(tasks.contains(&id), "task {} changed, not touched", id);
        for t in old.into_iter().chain(new) {
            prop_assert!(touched.task_services.contains(&t.service_id));
            if let Some(n) = &t.node_id {
                prop_assert!(touched.task_nodes.contains(n));
            }
            for a in &t.attachments {
                prop_assert!(touched.address_networks.contains(&a.network_id));
            }
        }
    }
    let all: BTreeSet<String> = before
        .services()
        .chain(after.services())
        .map(|x| x.id.clone())
        .collect();
    for id in all {
        let (old, new) = (before.service(&id), after.service(&id));
        if old != new {
            prop_assert!(
                services.contains(&id),
                "service {} changed, not touched",
                id
            );
            for v in old.into_iter().chain(new).flat_map(|x| &x.virtual_ips) {
                prop_assert!(touched.address_networks.contains(&v.network_id));
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn apply_is_atomic_deterministic_and_keeps_indexes(
        batches in proptest::collection::vec(proptest::collection::vec(abstract_op(), 1..4), 1..30)
    ) {
        let mut s = ClusterState::new();
        for (i, ops) in batches.iter().enumerate() {
            let index = 2 * i as u64 + 1;
            let b = batch(index * 10, ops.iter().map(|op| bind(&s, op)).collect());
            let before = s.clone();
            let mut twin = s.clone();
            let result = s.apply_batch_touched(index, &b);
            let twin_result = twin.apply_batch(index, &b);
            prop_assert_eq!(result.as_ref().map(|(events, _)| events), twin_result.as_ref());
            prop_assert_eq!(&s, &twin);
            match &result {
                Err(_) => prop_assert_eq!(&s, &before),
                Ok((_, touched)) => {
                    prop_assert_eq!(s.applied_index(), index);
                    check_touched(&before, &s, touched)?;
                }
            }
            check_indexes_by_scan(&s)?;
            let snapshot = s.to_snapshot().map_err(|e| TestCaseError::fail(e.to_string()))?;
            let rebuilt = ClusterState::from_snapshot(&snapshot)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&rebuilt, &s, "indexes match indexes rebuilt from the tables");
        }
    }
}
