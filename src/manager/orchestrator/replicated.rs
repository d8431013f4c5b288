//! The replicated orchestrator: a `Replicated { replicas }` service has one live task in each slot
//! 1..=replicas. Vacant slots get a new task (no node: the scheduler places it); slots above `replicas`
//! (a scale down) get desired Remove; tasks on Down or missing nodes are shut down and replaced; running tasks
//! on a drained node move start-first (the replacement first, the old task once it runs or no node can take
//! it; at most `update_config.parallelism` slots at a time);
//! tasks that ended on their own go through the restart supervisor. At most `MAX_TASK_OPS_PER_ROUND` tasks are
//! created per round (the lowest vacant slots first), so a large service fills up over several bounded rounds.
//!
//! Must not: replace outdated tasks (the rolling updater will), choose nodes, or write task status.

use std::collections::BTreeMap;

use super::{new_task, on_draining_node, reconcile_slot, set_desired, wanted, SlotCtx, SlotState};
use crate::manager::scheduler::filter::may_keep;
use crate::manager::{Plan, Scope};
use crate::model::limits::MAX_TASK_OPS_PER_ROUND;
use crate::model::{RestartKey, Service, ServiceMode, Task, TaskState};
use crate::store::{ClusterState, Op};
use crate::util::{IdSource, Millis};

/// The tasks of `service` grouped by slot.
pub fn tasks_by_slot<'a>(
    state: &'a ClusterState,
    service: &Service,
) -> BTreeMap<u64, Vec<&'a Task>> {
    let mut slots: BTreeMap<u64, Vec<&Task>> = BTreeMap::new();
    for t in state.tasks_of_service(&service.id) {
        slots.entry(t.slot).or_default().push(t);
    }
    slots
}

/// Whether a replicated task may stay where it is (unassigned, or on a node that is not Down or drained).
pub fn keep_replicated(state: &ClusterState, task: &Task) -> bool {
    match &task.node_id {
        None => true,
        Some(node) => may_keep(state.node(node)),
    }
}

/// Reconciles the slots of one service whose wanted slots are `1..=slots`; returns the states of the slots that
/// have tasks (a wanted slot missing from the map is vacant: see [`vacant_slots`]).
pub fn reconcile_slots(
    state: &ClusterState,
    service: &Service,
    slots: u64,
    now: Millis,
    ids: &mut dyn IdSource,
    plan: &mut Plan,
) -> BTreeMap<u64, SlotState> {
    let by_slot = tasks_by_slot(state, service);
    let moves = std::cell::Cell::new(drain_budget(state, service, &by_slot));
    let start_first = matches!(service.spec.mode, ServiceMode::Replicated { .. });
    let mut states = BTreeMap::new();
    for (&slot, tasks) in &by_slot {
        if slot == 0 || slot > slots {
            for t in tasks.iter().filter(|t| wanted(t)) {
                plan.ops.push(set_desired(t, TaskState::Remove));
            }
            continue;
        }
        let ctx = SlotCtx {
            state,
            service,
            slot,
            node: None,
            can_replace: true,
            key: RestartKey::Slot {
                service_id: service.id.clone(),
                slot,
            },
            now,
            moves: start_first.then_some(&moves),
        };
        let keep = |t: &Task| keep_replicated(state, t);
        states.insert(slot, reconcile_slot(&ctx, tasks, &keep, ids, plan));
    }
    states
}

/// How many more slots of `service` may start moving off draining nodes: its update parallelism (0: all)
/// minus the moves in flight (a task on a draining node whose slot has a replacement that does not run yet).
fn drain_budget(
    state: &ClusterState,
    service: &Service,
    by_slot: &BTreeMap<u64, Vec<&Task>>,
) -> u64 {
    let parallelism = service.spec.update.parallelism;
    if parallelism == 0 {
        return u64::MAX;
    }
    let in_flight = by_slot
        .values()
        .filter(|tasks| {
            let moving = tasks
                .iter()
                .any(|t| wanted(t) && on_draining_node(state, t));
            let starting = tasks.iter().any(|t| {
                wanted(t) && keep_replicated(state, t) && t.status.state < TaskState::Running
            });
            moving && starting
        })
        .count() as u64;
    parallelism.saturating_sub(in_flight)
}

/// The vacant slots among `1..=slots`, lowest first, lazily (a slot without tasks is vacant).
pub fn vacant_slots(
    states: &BTreeMap<u64, SlotState>,
    slots: u64,
) -> impl Iterator<Item = u64> + '_ {
    (1..=slots).filter(move |slot| states.get(slot).is_none_or(|s| *s == SlotState::Vacant))
}

/// Makes every replicated service have one live task per slot (see the module docs).
pub fn reconcile(state: &ClusterState, now: Millis, ids: &mut dyn IdSource) -> Plan {
    reconcile_in(state, &Scope::All, now, ids)
}

/// [`reconcile`] on the replicated services of `scope` only. A service the round's budget left vacant slots
/// in is `unfinished`.
pub fn reconcile_in(
    state: &ClusterState,
    scope: &Scope,
    now: Millis,
    ids: &mut dyn IdSource,
) -> Plan {
    let mut plan = Plan::new();
    let mut budget = MAX_TASK_OPS_PER_ROUND;
    for service in scope.services(state) {
        let ServiceMode::Replicated { replicas } = service.spec.mode else {
            continue;
        };
        let states = reconcile_slots(state, service, replicas, now, ids, &mut plan);
        let mut vacant = vacant_slots(&states, replicas);
        for slot in vacant.by_ref().take(budget) {
            let task = new_task(service, slot, None, now, ids);
            plan.ops.push(Op::CreateTask(task));
            budget -= 1;
        }
        if budget == 0 && vacant.next().is_some() {
            plan.unfinished.insert(service.id.clone());
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::manager::testutil::*;
    use crate::model::{NodeAvailability, NodeState, RestartCondition, RestartPolicy};
    use crate::util::SeqIds;

    fn with_policy(replicas: u64, condition: RestartCondition, delay_s: u64, max: u64) -> Service {
        let mut s = service("s1", ServiceMode::Replicated { replicas });
        s.spec.task.restart = RestartPolicy {
            condition,
            delay: Duration::from_secs(delay_s),
            max_attempts: max,
            window: Duration::ZERO,
        };
        s
    }

    #[test]
    fn table() {
        use RestartCondition::*;
        let now = 1_000_000;
        let any = |r| with_policy(r, Any, 0, 0);
        type Case<'a> = (
            &'a str,
            Vec<crate::model::Node>,
            Service,
            Vec<Task>,
            Vec<&'a str>,
        );
        let cases: Vec<Case> = vec![
            (
                "scale up from nothing",
                vec![node("n1")],
                any(2),
                vec![],
                vec!["create s1/1@- New", "create s1/2@- New"],
            ),
            (
                "fill the missing slot",
                vec![node("n1")],
                any(2),
                vec![running("a", 1, "n1")],
                vec!["create s1/2@- New"],
            ),
            (
                "scale down removes high slots",
                vec![node("n1")],
                any(1),
                vec![
                    running("a", 1, "n1"),
                    running("b", 2, "n1"),
                    running("c", 3, "n1"),
                ],
                vec![
                    "update b desired=Remove status=Running@n1",
                    "update c desired=Remove status=Running@n1",
                ],
            ),
            (
                "outdated task still counts",
                vec![node("n1")],
                {
                    let mut s = any(1);
                    s.spec_version = 2;
                    s
                },
                vec![running("a", 1, "n1")],
                vec![],
            ),
            (
                "any, exit 0: replaced",
                vec![node("n1")],
                any(1),
                vec![exited("a", "s1", 1, Some("n1"), 0, now)],
                vec![
                    "update a desired=Shutdown status=Complete@n1",
                    "create s1/1@- New",
                ],
            ),
            (
                "on-failure, exit 0: ended",
                vec![node("n1")],
                with_policy(1, OnFailure, 0, 0),
                vec![exited("a", "s1", 1, Some("n1"), 0, now)],
                vec!["update a desired=Shutdown status=Complete@n1"],
            ),
            (
                "on-failure, exit 1: replaced",
                vec![node("n1")],
                with_policy(1, OnFailure, 0, 0),
                vec![exited("a", "s1", 1, Some("n1"), 1, now)],
                vec![
                    "update a desired=Shutdown status=Failed@n1",
                    "create s1/1@- New",
                ],
            ),
            (
                "none, exit 1: ended",
                vec![node("n1")],
                with_policy(1, None, 0, 0),
                vec![exited("a", "s1", 1, Some("n1"), 1, now)],
                vec!["update a desired=Shutdown status=Failed@n1"],
            ),
            (
                "delay not due: nothing yet",
                vec![node("n1")],
                with_policy(1, Any, 5, 0),
                vec![exited("a", "s1", 1, Some("n1"), 1, now - 2000)],
                vec![],
            ),
            (
                "delay due",
                vec![node("n1")],
                with_policy(1, Any, 5, 0),
                vec![exited("a", "s1", 1, Some("n1"), 1, now - 5000)],
                vec![
                    "update a desired=Shutdown status=Failed@n1",
                    "create s1/1@- New",
                ],
            ),
            (
                "max attempts recorded",
                vec![node("n1")],
                with_policy(1, Any, 0, 2),
                vec![exited("a", "s1", 1, Some("n1"), 1, now)],
                vec![
                    "update a desired=Shutdown status=Failed@n1",
                    "history+ s1/1 [1000000]",
                    "create s1/1@- New",
                ],
            ),
            (
                "drained node: the replacement starts first (drain_tests has the rest)",
                vec![
                    node_with("n1", NodeAvailability::Drain, NodeState::Ready),
                    node("n2"),
                ],
                any(2),
                vec![running("a", 1, "n1"), running("b", 2, "n2")],
                vec!["create s1/1@- New"],
            ),
            (
                "down node: shut down and replaced",
                vec![node_with("n1", NodeAvailability::Active, NodeState::Down)],
                any(1),
                vec![running("a", 1, "n1")],
                vec![
                    "update a desired=Shutdown status=Running@n1",
                    "create s1/1@- New",
                ],
            ),
            (
                "paused node keeps its task",
                vec![node_with("n1", NodeAvailability::Pause, NodeState::Ready)],
                any(1),
                vec![running("a", 1, "n1")],
                vec![],
            ),
            (
                "missing node: replaced",
                vec![],
                any(1),
                vec![running("a", 1, "gone")],
                vec![
                    "update a desired=Shutdown status=Running@gone",
                    "create s1/1@- New",
                ],
            ),
            (
                "ended slot stays ended",
                vec![node("n1")],
                with_policy(1, None, 0, 0),
                vec![{
                    let mut t = exited("a", "s1", 1, Some("n1"), 1, now);
                    t.desired_state = TaskState::Shutdown;
                    t
                }],
                vec![],
            ),
            (
                "stopped slot is refilled",
                vec![node("n1")],
                with_policy(1, None, 0, 0),
                vec![task(
                    "a",
                    "s1",
                    1,
                    Some("n1"),
                    TaskState::Shutdown,
                    TaskState::Shutdown,
                )],
                vec!["create s1/1@- New"],
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

    #[test]
    fn a_large_service_is_created_and_placed_in_bounded_rounds() {
        let mut w = World::with(creates(
            vec![node("n1"), node("n2")],
            vec![service("s1", ServiceMode::Replicated { replicas: 1200 })],
            vec![],
        ));
        let mut created = Vec::new();
        let mut ids = SeqIds::new("t");
        loop {
            let plan = reconcile(&w.state, w.time, &mut ids);
            if plan.is_empty() {
                break;
            }
            assert!(plan.ops.len() <= MAX_TASK_OPS_PER_ROUND);
            created.push(plan.ops.len());
            w.apply_plan(&plan);
        }
        assert_eq!(created, vec![512, 512, 176]);
        let slots: std::collections::BTreeSet<u64> = w.state.tasks().map(|t| t.slot).collect();
        assert_eq!(slots, (1..=1200).collect());
        let mut placed = Vec::new();
        loop {
            let plan =
                crate::manager::scheduler::reconcile(&w.state, w.time, &mut SeqIds::new("x"));
            if plan.is_empty() {
                break;
            }
            placed.push(plan.ops.len());
            w.apply_plan(&plan);
        }
        assert_eq!(placed, vec![512, 512, 176]);
    }

    #[test]
    fn delay_requeues_then_restarts() {
        let now = 1_000_000;
        let mut w = World::with(creates(
            vec![node("n1")],
            vec![with_policy(1, RestartCondition::Any, 5, 0)],
            vec![exited("a", "s1", 1, Some("n1"), 1, now - 2000)],
        ));
        w.time = now;
        let plan = reconcile(&w.state, now, &mut SeqIds::new("x"));
        assert!(plan.is_empty());
        assert_eq!(plan.requeue_after, Some(Duration::from_secs(3)));
        w.time = now + 3000;
        let plan = reconcile(&w.state, w.time, &mut SeqIds::new("x"));
        assert_eq!(plan.ops.len(), 2, "{:?}", summary(&plan));
        assert_eq!(plan.requeue_after, None);
    }

    #[test]
    fn max_attempts_within_window() {
        let mut w = World::with(creates(
            vec![node("n1")],
            vec![{
                let mut s = with_policy(1, RestartCondition::Any, 0, 2);
                s.spec.task.restart.window = Duration::from_secs(60);
                s
            }],
            vec![],
        ));
        let mut ids = SeqIds::new("t");
        let mut restarts = 0;
        for round in 0..6 {
            w.time += 1000;
            // The slot's live task fails.
            let live: Vec<Task> = w
                .state
                .tasks()
                .filter(|t| wanted(t) && !t.status.state.is_terminal())
                .cloned()
                .collect();
            let fails: Vec<Op> = live
                .into_iter()
                .map(|t| {
                    let v = t.meta.version;
                    let mut f = t;
                    f.status = crate::model::TaskStatus::new(TaskState::Failed, w.time);
                    f.status.exit_code = Some(1);
                    Op::UpdateTask {
                        task: f,
                        expected_version: v,
                    }
                })
                .collect();
            if !fails.is_empty() {
                w.apply_ops(fails);
            }
            let plan = reconcile(&w.state, w.time, &mut ids);
            let created = plan
                .ops
                .iter()
                .filter(|o| matches!(o, Op::CreateTask(_)))
                .count();
            if round > 0 {
                restarts += created;
            }
            w.apply_plan(&plan);
        }
        assert_eq!(restarts, 2, "two restarts, then the slot ends");
        assert!(reconcile(&w.state, w.time, &mut ids).is_empty());
        // After the window the slot is refilled.
        w.time += 61_000;
        let plan = reconcile(&w.state, w.time, &mut ids);
        assert_eq!(summary(&plan), vec!["create s1/1@- New"]);
    }
}
