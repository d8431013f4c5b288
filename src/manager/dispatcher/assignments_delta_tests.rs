//! The network map on the assignments stream: deltas after the complete map.

use super::*;
use crate::manager::testutil::{node, service, World};
use crate::model::{NetworkAttachment, ServiceMode};
use crate::store::Op;

/// Two nodes, a 4-replica service on network `front`, addressed and scheduled.
fn world() -> World {
    let mut web = service("web", ServiceMode::Replicated { replicas: 4 });
    web.spec.task.networks = vec![NetworkAttachment {
        target: "front".into(),
        aliases: vec![],
    }];
    let mut w = World::with(vec![
        Op::CreateNode(node("n1")),
        Op::CreateNode(node("n2")),
        Op::CreateNetwork(crate::manager::testutil::network("front")),
        Op::CreateService(web),
    ]);
    let mut ids = crate::util::SeqIds::default();
    for _ in 0..6 {
        for controller in [
            crate::manager::orchestrator::replicated::reconcile,
            crate::manager::ipam::reconcile,
            crate::manager::scheduler::reconcile,
        ] {
            let plan = controller(&w.state, w.time, &mut ids);
            w.apply_plan(&plan);
        }
    }
    w
}

/// A change of one task on another node costs that task's endpoint on the wire, and the agent's map, rebuilt
/// from the complete map and the deltas, equals the map built from the store.
#[test]
fn another_nodes_task_change_sends_one_endpoint_and_the_agent_map_follows() {
    let mut w = world();
    let key = DataKey::from_bytes([7; 32]);
    let mut diff = AssignmentDiff::default();
    let mut set = AssignmentSet::default();
    let on_n2: Vec<String> = w.state.tasks_on_node("n2").map(|t| t.id.clone()).collect();
    assert!(!on_n2.is_empty(), "the scheduler spread the replicas");
    // without a shared cache: each look builds the parts afresh and compares them by content
    let next = |w: &World, diff: &mut AssignmentDiff| diff.next(&w.state, "n1", &key);
    let first = next(&w, &mut diff).expect("the complete set");
    assert!(!first.network_map_json.is_empty());
    let a = set.apply("n1", first).expect("applies");
    assert_eq!(
        *a.network_map,
        crate::manager::ipam::netmap::network_map(&w.state, "n1")
    );
    assert_eq!(a.network_map.endpoints.len(), 4);

    // n2's task starts running: n1 is sent that endpoint (now ready) and nothing else
    let mut t = w.state.task(&on_n2[0]).unwrap().clone();
    let v = t.meta.version;
    t.status.state = crate::model::TaskState::Running;
    w.apply_ops(vec![Op::UpdateTask {
        task: t,
        expected_version: v,
    }]);
    let msg = next(&w, &mut diff).expect("the map changed");
    assert!(msg.tasks_json.is_empty(), "none of n1's tasks changed");
    assert!(msg.network_map_json.is_empty(), "not the whole map");
    let delta: NetworkMapDelta = from_json("delta", &msg.network_map_delta_json).expect("a delta");
    assert_eq!(delta.endpoints.len(), 1);
    assert_eq!(delta.endpoints[0].task_id, on_n2[0]);
    assert!(delta.endpoints[0].ready);
    assert!(delta.networks.is_none() && delta.peers.is_none());
    let a = set.apply("n1", msg).expect("applies");
    assert_eq!(
        *a.network_map,
        crate::manager::ipam::netmap::network_map(&w.state, "n1")
    );
    // nothing changed: nothing sent
    assert!(next(&w, &mut diff).is_none());
}
