//! Property tests of apply: random batches over a small universe of services and tasks (some ops fresh,
//! some stale or conflicting) must apply identically on two copies, leave the state untouched when
//! rejected, and keep the indexes equal to indexes rebuilt from the tables.

use proptest::prelude::*;

use super::tests::{batch, service, task};
use super::{ClusterState, Op};
use crate::model::TaskState;

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
        node: Option<u8>,
        fresh: bool,
    },
    DeleteTask {
        t: u8,
    },
}

fn abstract_op() -> impl Strategy<Value = Abstract> {
    prop_oneof![
        (0..3u8, 0..3u8).prop_map(|(s, name)| Abstract::CreateService { s, name }),
        (0..3u8, 0..3u8, proptest::bool::weighted(0.85))
            .prop_map(|(s, name, fresh)| Abstract::UpdateService { s, name, fresh }),
        (0..3u8, proptest::bool::weighted(0.85))
            .prop_map(|(s, fresh)| Abstract::DeleteService { s, fresh }),
        (0..5u8, 0..3u8, proptest::option::of(0..2u8))
            .prop_map(|(t, s, node)| Abstract::CreateTask { t, s, node }),
        (
            0..5u8,
            0..14u8,
            proptest::option::of(0..2u8),
            proptest::bool::weighted(0.85)
        )
            .prop_map(|(t, state, node, fresh)| Abstract::UpdateTask {
                t,
                state,
                node,
                fresh
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
        Abstract::UpdateService { s, name, fresh } => {
            let id = format!("s{s}");
            let current = state.service(&id).map(|x| x.meta.version);
            Op::UpdateService {
                service: service(&id, &format!("n{name}")),
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
            node,
            fresh,
        } => {
            let id = format!("t{t}");
            let mut new = state
                .task(&id)
                .cloned()
                .unwrap_or_else(|| task(&id, "s0", 1, None));
            new.status.state = STATES[usize::from(st) % STATES.len()];
            new.node_id = node.map(|n| format!("n{n}"));
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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

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
            let result = s.apply_batch(index, &b);
            prop_assert_eq!(&result, &twin.apply_batch(index, &b));
            prop_assert_eq!(&s, &twin);
            if result.is_err() {
                prop_assert_eq!(&s, &before);
            } else {
                prop_assert_eq!(s.applied_index(), index);
            }
            let snapshot = s.to_snapshot().map_err(|e| TestCaseError::fail(e.to_string()))?;
            let rebuilt = ClusterState::from_snapshot(&snapshot)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&rebuilt, &s, "indexes match indexes rebuilt from the tables");
        }
    }
}
