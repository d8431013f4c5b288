//! Orchestrators: make each service have the tasks its mode asks for. `replicated` (slots 1..=replicas),
//! `global` (one task per eligible node), `jobs` (run-to-completion), all through the one slot routine
//! here, which applies `restart` to tasks that ended on their own and moves tasks off lost or drained
//! nodes; `update` rolls outdated tasks over to the current spec version (and back); `reaper` deletes what
//! is no longer needed. [`reconcile_orphans`] removes tasks whose service is
//! gone.
//!
//! Must not: choose nodes for replicated tasks (that is the scheduler), write observed state (a task's
//! status belongs to the agent; here only `desired_state` changes), read a clock or make up ids.

#[cfg(test)]
mod drain_tests;
pub mod global;
pub mod jobs;
pub mod reaper;
pub mod replicated;
pub mod restart;
pub mod update;

use self::restart::{ended_on_its_own, succeeded, supervise, would_restart, Supervised};
use super::{Plan, Scope};
use crate::model::{NodeAvailability, NodeState, RestartKey, Service, Task, TaskState, TaskStatus};
use crate::store::{ClusterState, Op};
use crate::util::{IdSource, Millis};

/// A new task of `service` in `slot` (0 for global) on `node_id` (global only), desired Running, New.
pub fn new_task(
    service: &Service,
    slot: u64,
    node_id: Option<&str>,
    now: Millis,
    ids: &mut dyn IdSource,
) -> Task {
    Task {
        id: ids.next_id(),
        meta: Default::default(),
        service_id: service.id.clone(),
        slot,
        node_id: node_id.map(str::to_owned),
        spec: service.spec.task.clone(),
        spec_version: service.spec_version,
        desired_state: TaskState::Running,
        status: TaskStatus::new(TaskState::New, now),
        attachments: Vec::new(),
    }
}

/// The op that moves `task`'s desired state to `desired`, computed from its current version.
pub fn set_desired(task: &Task, desired: TaskState) -> Op {
    let mut new = task.clone();
    new.desired_state = desired;
    Op::UpdateTask {
        task: new,
        expected_version: task.meta.version,
    }
}

/// Whether the manager still wants `task` to run (desired state at most Running).
pub fn wanted(task: &Task) -> bool {
    task.desired_state <= TaskState::Running
}

/// How a slot (or a global service's node) stands after one round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotState {
    /// A task runs or will run there (including a restart waiting for its delay).
    Live,
    /// A job slot whose task of the current spec version completed.
    Done,
    /// Its last task ended and the restart policy says not to replace it.
    Ended,
    /// Nothing there: the orchestrator may create a task.
    Vacant,
}

/// Everything the slot routine needs besides the slot's tasks.
pub struct SlotCtx<'a> {
    /// The state.
    pub state: &'a ClusterState,
    /// The service.
    pub service: &'a Service,
    /// The slot number (0 for global).
    pub slot: u64,
    /// The node a replacement would run on (global), or None (the scheduler picks).
    pub node: Option<&'a str>,
    /// Whether a replacement may be created at all.
    pub can_replace: bool,
    /// Restart history key of the slot.
    pub key: RestartKey,
    /// Now.
    pub now: Millis,
    /// Replicated services: how many more slots may start moving off a draining node this round (start-first:
    /// the replacement starts before the old task stops). `None`: tasks on a draining node just stop.
    pub moves: Option<&'a std::cell::Cell<u64>>,
}

/// Whether `task` runs on a node that is being drained but is still up: a replicated task there moves
/// start-first (Swarm stops it first and drops capacity).
pub fn on_draining_node(state: &ClusterState, task: &Task) -> bool {
    task.status.state == TaskState::Running
        && task
            .node_id
            .as_deref()
            .and_then(|n| state.node(n))
            .is_some_and(|n| {
                n.spec.availability == NodeAvailability::Drain && n.status.state == NodeState::Ready
            })
}

/// Whether the scheduler found no node for `task` (a replacement that cannot start anywhere).
fn unschedulable(task: &Task) -> bool {
    task.status.state == TaskState::Pending && task.status.message.starts_with("no suitable node")
}

/// Reconciles the tasks of one slot: tasks on nodes `keep` refuses are shut down, tasks that ended on their
/// own go to the restart supervisor (one restart per slot; extra ended tasks are just shut down), job
/// successes become desired Complete. Creates the replacement when the supervisor says so. Never creates a
/// task in a vacant slot: the caller decides that.
pub fn reconcile_slot(
    ctx: &SlotCtx<'_>,
    tasks: &[&Task],
    keep: &dyn Fn(&Task) -> bool,
    ids: &mut dyn IdSource,
    plan: &mut Plan,
) -> SlotState {
    let job = ctx.service.spec.mode.is_job();
    let done = job
        && tasks.iter().any(|t| {
            succeeded(t)
                && t.spec_version >= ctx.service.spec_version
                && t.desired_state <= TaskState::Complete
        });
    let mut live = false;
    // a kept task that runs, or that no node can take: either way a moving task may stop now
    let mut replaced = false;
    let mut moving: Vec<&Task> = Vec::new();
    let mut ended: Vec<&Task> = Vec::new();
    for t in tasks.iter().copied().filter(|t| wanted(t)) {
        if ended_on_its_own(t) {
            ended.push(t);
        } else if keep(t) {
            live = true;
            replaced |= t.status.state == TaskState::Running || unschedulable(t);
        } else if ctx.moves.is_some() && on_draining_node(ctx.state, t) {
            moving.push(t);
        } else {
            plan.ops.push(set_desired(t, TaskState::Shutdown));
        }
    }
    // Newest first: the most recent end decides the slot.
    ended.sort_by(|a, b| {
        (b.status.timestamp, b.meta.created_at, &b.id).cmp(&(
            a.status.timestamp,
            a.meta.created_at,
            &a.id,
        ))
    });
    let mut decided = false;
    let mut ended_now = false;
    for t in ended {
        if job && succeeded(t) {
            plan.ops.push(set_desired(t, TaskState::Complete));
            continue;
        }
        if live || done || decided {
            plan.ops.push(set_desired(t, TaskState::Shutdown));
            continue;
        }
        decided = true;
        let key = ctx.key.clone();
        match supervise(
            ctx.state,
            ctx.service,
            t,
            key,
            ctx.now,
            ctx.can_replace,
            plan,
        ) {
            Supervised::Replace => {
                let new = new_task(ctx.service, ctx.slot, ctx.node, ctx.now, ids);
                plan.ops.push(Op::CreateTask(new));
                live = true;
            }
            Supervised::Wait => live = true,
            Supervised::Ended => ended_now = true,
            Supervised::Succeeded => {}
        }
    }
    // start-first moves off a draining node: the replacement first, the old task once it runs
    for t in moving {
        if replaced {
            plan.ops.push(set_desired(t, TaskState::Shutdown));
            continue;
        }
        if !live {
            let budget = ctx.moves.map_or(0, |m| m.get());
            if budget > 0 {
                if let Some(m) = ctx.moves {
                    m.set(budget - 1);
                }
                let new = new_task(ctx.service, ctx.slot, ctx.node, ctx.now, ids);
                plan.ops.push(Op::CreateTask(new));
            }
        }
        // the old task keeps the slot live until its replacement runs (or waits for the budget)
        live = true;
    }
    if live {
        SlotState::Live
    } else if done {
        SlotState::Done
    } else if ended_now || ended_for_good(ctx, tasks) {
        SlotState::Ended
    } else {
        SlotState::Vacant
    }
}

/// Whether the slot's newest task ended on its own, was shut down since, and the policy would still not
/// restart it (so the slot is not refilled). A task stopped by the manager (drain, lost node) ends as
/// Shutdown, and an exhausted window opens again, so those slots are refilled.
fn ended_for_good(ctx: &SlotCtx<'_>, tasks: &[&Task]) -> bool {
    if tasks.iter().any(|t| wanted(t)) {
        return false;
    }
    let Some(newest) = tasks
        .iter()
        .max_by(|a, b| (a.meta.created_at, &a.id).cmp(&(b.meta.created_at, &b.id)))
    else {
        return false;
    };
    let on_its_own = matches!(
        newest.status.state,
        TaskState::Complete | TaskState::Failed | TaskState::Rejected | TaskState::Orphaned
    );
    if newest.desired_state != TaskState::Shutdown || !on_its_own {
        return false;
    }
    if ctx.service.spec.mode.is_job() && succeeded(newest) {
        return false;
    }
    !would_restart(ctx.state, ctx.service, newest, &ctx.key, ctx.now)
}

/// Tasks whose service no longer exists get desired Remove (the agent stops them, the reaper deletes them).
pub fn reconcile_orphans(state: &ClusterState, now: Millis, ids: &mut dyn IdSource) -> Plan {
    reconcile_orphans_in(state, &Scope::All, now, ids)
}

/// [`reconcile_orphans`] for the tasks of the scope's (deleted) services only.
pub fn reconcile_orphans_in(
    state: &ClusterState,
    scope: &Scope,
    _now: Millis,
    _ids: &mut dyn IdSource,
) -> Plan {
    let mut plan = Plan::new();
    let orphan = |t: &&Task| {
        state.service(&t.service_id).is_none()
            && t.desired_state < TaskState::Remove
            && !t.status.state.is_terminal()
    };
    let tasks: Box<dyn Iterator<Item = &Task>> = match scope {
        Scope::All => Box::new(state.tasks()),
        Scope::Services(ids) => Box::new(
            ids.iter()
                .filter(|id| state.service(id).is_none())
                .flat_map(|id| state.tasks_of_service(id)),
        ),
    };
    for t in tasks.filter(orphan) {
        plan.ops.push(set_desired(t, TaskState::Remove));
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manager::testutil::*;

    #[test]
    fn orphans_are_removed() {
        let mut w = World::with(creates(
            vec![node("n1")],
            vec![],
            vec![
                task(
                    "a",
                    "gone",
                    1,
                    Some("n1"),
                    TaskState::Running,
                    TaskState::Running,
                ),
                task(
                    "b",
                    "gone",
                    2,
                    Some("n1"),
                    TaskState::Running,
                    TaskState::Failed,
                ),
                task("c", "gone", 3, None, TaskState::Remove, TaskState::New),
            ],
        ));
        let plan = reconcile_orphans(&w.state, w.time, &mut crate::util::SeqIds::new("x"));
        assert_eq!(
            summary(&plan),
            vec!["update a desired=Remove status=Running@n1"]
        );
        check_idempotent(&mut w, reconcile_orphans);
    }
}
