//! The heap of candidates places exactly as a pass over every node would: the reference below is the plain
//! rule (fewest tasks of the service, then fewest tasks, then lowest id, among the nodes that fit).

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::filter::{check, NodeLoad};
use super::{loads, reconcile};
use crate::manager::testutil::*;
use crate::model::{NodeAvailability, NodeState, ServiceMode, Task, TaskState};
use crate::store::{ClusterState, Op};
use crate::util::SeqIds;

/// Node of each new task, in task order, by the plain rule (`None`: pending).
fn reference(state: &ClusterState, tasks: &[Task]) -> Vec<Option<String>> {
    let mut loads: BTreeMap<String, NodeLoad> = loads(state);
    let empty = NodeLoad::default();
    tasks
        .iter()
        .map(|t| {
            let best = state
                .nodes()
                .filter(|n| {
                    check(
                        n,
                        loads.get(&n.id).unwrap_or(&empty),
                        &t.service_id,
                        &t.spec,
                        true,
                    )
                    .is_ok()
                })
                .min_by_key(|n| {
                    let l = loads.get(&n.id).unwrap_or(&empty);
                    (l.of_service(&t.service_id), l.tasks, n.id.clone())
                })
                .map(|n| n.id.clone());
            if let Some(id) = &best {
                loads
                    .entry(id.clone())
                    .or_default()
                    .add(&t.service_id, &t.spec);
            }
            best
        })
        .collect()
}

proptest! {
    #[test]
    fn heap_placement_equals_the_plain_rule(
        caps in proptest::collection::vec((0u64..4, 0u8..4), 1..12),
        existing in proptest::collection::vec((0usize..12, 0u8..2), 0..20),
        new in 1u64..40,
        reserve in 0u64..3,
        max_per_node in 0u64..4,
    ) {
        let nodes: Vec<_> = caps
            .iter()
            .enumerate()
            .map(|(i, (mem, avail))| {
                let mut n = match avail {
                    0 => node_with(&format!("n{i:02}"), NodeAvailability::Drain, NodeState::Ready),
                    1 => node_with(&format!("n{i:02}"), NodeAvailability::Active, NodeState::Down),
                    _ => node(&format!("n{i:02}")),
                };
                n.description.resources.memory_bytes = mem * 2;
                n
            })
            .collect();
        let services = vec![
            service("a", ServiceMode::Replicated { replicas: new }),
            service("b", ServiceMode::Replicated { replicas: 20 }),
        ];
        let mut tasks: Vec<Task> = existing
            .iter()
            .enumerate()
            .map(|(i, (n, svc))| {
                let svc = if *svc == 0 { "a" } else { "b" };
                let node = format!("n{:02}", n % caps.len());
                task(&format!("old{i:02}"), svc, 100 + i as u64, Some(&node), TaskState::Running, TaskState::Running)
            })
            .collect();
        let fresh: Vec<Task> = (1..=new)
            .map(|slot| {
                let mut t = task(&format!("a-{slot:03}"), "a", slot, None, TaskState::Running, TaskState::New);
                t.spec.resources.reservations.memory_bytes = reserve;
                t.spec.placement.max_replicas_per_node = max_per_node;
                t
            })
            .collect();
        tasks.extend(fresh.iter().cloned());
        let w = World::with(creates(nodes, services, tasks));
        let mut sorted = fresh.clone();
        sorted.sort_by(|a, b| (a.slot, &a.id).cmp(&(b.slot, &b.id)));
        let want = reference(&w.state, &sorted);
        let plan = reconcile(&w.state, w.time, &mut SeqIds::new("x"));
        let got: BTreeMap<String, Option<String>> = plan
            .ops
            .iter()
            .map(|op| match op {
                Op::UpdateTask { task, .. } => (
                    task.id.clone(),
                    (task.status.state == TaskState::Assigned).then(|| task.node_id.clone().unwrap()),
                ),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        for (t, want) in sorted.iter().zip(want) {
            let got = got.get(&t.id).cloned().flatten();
            prop_assert_eq!(got, want, "task {}", t.id);
        }
    }
}
