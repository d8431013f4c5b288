//! The jobs orchestrator: run-to-completion services. A task that exits 0 is a success (its desired state
//! becomes Complete, it is never restarted). `ReplicatedJob { max_concurrent, total_completions }`: slots
//! 1..=total_completions; a slot is done once it holds a successful task of the current spec version; at
//! most `max_concurrent` slots run at once, the lowest undone ones first. `GlobalJob`: one task per
//! eligible node until it succeeded there. Failures follow the restart policy like other tasks. At most
//! `MAX_TASK_OPS_PER_ROUND` tasks are created per round.
//!
//! Must not: restart successes, count outdated successes as done, or write task status.

use super::{global, new_task, replicated, SlotState};
use crate::manager::{Plan, Scope};
use crate::model::limits::MAX_TASK_OPS_PER_ROUND;
use crate::model::{Service, ServiceMode};
use crate::store::{ClusterState, Op};
use crate::util::{IdSource, Millis};

/// `max_concurrent` (0 = 1, docker's default) and `total_completions` (0 = `max_concurrent`).
pub fn limits(max_concurrent: u64, total_completions: u64) -> (u64, u64) {
    let max = max_concurrent.max(1);
    let total = if total_completions == 0 {
        max
    } else {
        total_completions
    };
    (max, total)
}

#[allow(clippy::too_many_arguments)]
fn reconcile_replicated_job(
    state: &ClusterState,
    service: &Service,
    max_concurrent: u64,
    total_completions: u64,
    now: Millis,
    ids: &mut dyn IdSource,
    plan: &mut Plan,
    budget: &mut usize,
) {
    let (max, total) = limits(max_concurrent, total_completions);
    let states = replicated::reconcile_slots(state, service, total, now, ids, plan);
    let live = states.values().filter(|s| **s == SlotState::Live).count() as u64;
    let wanted = max.saturating_sub(live) as usize;
    let room = wanted.min(*budget);
    let mut vacant = replicated::vacant_slots(&states, total);
    for slot in vacant.by_ref().take(room) {
        plan.ops
            .push(Op::CreateTask(new_task(service, slot, None, now, ids)));
        *budget -= 1;
    }
    if room < wanted && vacant.next().is_some() {
        plan.unfinished.insert(service.id.clone());
    }
}

/// Runs every job service towards its completions (see the module docs).
pub fn reconcile(state: &ClusterState, now: Millis, ids: &mut dyn IdSource) -> Plan {
    reconcile_in(state, &Scope::All, now, ids)
}

/// [`reconcile`] on the job services of `scope` only.
pub fn reconcile_in(
    state: &ClusterState,
    scope: &Scope,
    now: Millis,
    ids: &mut dyn IdSource,
) -> Plan {
    let mut plan = Plan::new();
    let mut budget = MAX_TASK_OPS_PER_ROUND;
    for service in scope.services(state) {
        match service.spec.mode {
            ServiceMode::ReplicatedJob {
                max_concurrent,
                total_completions,
            } => reconcile_replicated_job(
                state,
                service,
                max_concurrent,
                total_completions,
                now,
                ids,
                &mut plan,
                &mut budget,
            ),
            ServiceMode::GlobalJob => {
                global::reconcile_service(state, service, now, ids, &mut plan, &mut budget)
            }
            _ => {}
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manager::testutil::*;
    use crate::model::{Node, NodeAvailability, NodeState, RestartCondition, Task, TaskState};
    use crate::util::SeqIds;

    fn job(max: u64, total: u64) -> Service {
        service(
            "j",
            ServiceMode::ReplicatedJob {
                max_concurrent: max,
                total_completions: total,
            },
        )
    }

    fn running(id: &str, slot: u64) -> Task {
        task(
            id,
            "j",
            slot,
            Some("n1"),
            TaskState::Running,
            TaskState::Running,
        )
    }

    fn complete(id: &str, slot: u64) -> Task {
        let mut t = exited(id, "j", slot, Some("n1"), 0, 0);
        t.desired_state = TaskState::Complete;
        t
    }

    #[test]
    fn table() {
        let now = 1_000_000;
        type Case<'a> = (&'a str, Vec<Node>, Service, Vec<Task>, Vec<&'a str>);
        let cases: Vec<Case> = vec![
            (
                "start max_concurrent lowest slots",
                vec![node("n1")],
                job(2, 5),
                vec![],
                vec!["create j/1@- New", "create j/2@- New"],
            ),
            (
                "success becomes Complete, next slot starts",
                vec![node("n1")],
                job(2, 5),
                vec![exited("a", "j", 1, Some("n1"), 0, now), running("b", 2)],
                vec![
                    "update a desired=Complete status=Complete@n1",
                    "create j/3@- New",
                ],
            ),
            (
                "done slots are not rerun",
                vec![node("n1")],
                job(2, 3),
                vec![complete("a", 1), complete("b", 2), running("c", 3)],
                vec![],
            ),
            (
                "all done",
                vec![node("n1")],
                job(2, 2),
                vec![complete("a", 1), complete("b", 2)],
                vec![],
            ),
            (
                "outdated success reruns",
                vec![node("n1")],
                {
                    let mut s = job(1, 1);
                    s.spec_version = 2;
                    s
                },
                vec![complete("a", 1)],
                vec!["create j/1@- New"],
            ),
            (
                "failure restarts per policy",
                vec![node("n1")],
                job(1, 2),
                vec![exited("a", "j", 1, Some("n1"), 1, now)],
                vec![
                    "update a desired=Shutdown status=Failed@n1",
                    "create j/1@- New",
                ],
            ),
            (
                "failure with condition none ends the slot, next one runs",
                vec![node("n1")],
                {
                    let mut s = job(1, 2);
                    s.spec.task.restart.condition = RestartCondition::None;
                    s
                },
                vec![exited("a", "j", 1, Some("n1"), 1, now)],
                vec![
                    "update a desired=Shutdown status=Failed@n1",
                    "create j/2@- New",
                ],
            ),
            (
                "defaults: max 1, total = max",
                vec![node("n1")],
                job(0, 0),
                vec![],
                vec!["create j/1@- New"],
            ),
            (
                "global job: one per node until done",
                vec![
                    node("n1"),
                    node("n2"),
                    node_with("n3", NodeAvailability::Drain, NodeState::Ready),
                ],
                service("j", ServiceMode::GlobalJob),
                vec![{
                    let mut t = complete("a", 0);
                    t.desired_state = TaskState::Running;
                    t
                }],
                vec![
                    "update a desired=Complete status=Complete@n1",
                    "create j/0@n2 New",
                ],
            ),
        ];
        for (name, nodes, svc, tasks, want) in cases {
            let mut w = World::with(creates(nodes, vec![svc], tasks));
            w.time = now;
            let plan = reconcile(&w.state, now, &mut SeqIds::new("x"));
            assert_eq!(summary(&plan), want, "{name}");
            check_idempotent(&mut w, reconcile);
        }
    }
}
