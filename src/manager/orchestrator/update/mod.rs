//! The rolling updater: replaces a service's outdated tasks (made from an older spec version) while its
//! `update_status` is `Updating` (with `spec.update`) or `RollbackStarted` (with `spec.rollback`), in
//! batches of `parallelism` units (slots of a replicated service or job, nodes of a global one; 0 = all at
//! once). A batch starts only once every unit of the previous one is settled (its new task running, or
//! ended on its own and left to the restart supervisor) and `delay` has passed since the last of them
//! settled. `stop-first` shuts the old task down and creates the replacement in the same slot with desired
//! state `Ready` (a placeholder: the slot stays live for the orchestrators, the scheduler leaves it alone,
//! no agent sees it), and raises it to `Running` once the old task stopped, so at most `replicas` tasks run.
//! `start-first` creates the replacement desired `Running` and shuts the old task down once the new one
//! runs, so never fewer than `replicas` run and at most `replicas + parallelism`. The [`monitor`] counts new
//! tasks that fail early; over `max_failure_ratio` the update pauses, rolls back ([`rollback_op`]'s swap,
//! in the same plan as the rollback's first batch) or continues; a failing rollback pauses unless its
//! config says continue. When no unit is left to update and the last new task has run for `monitor`, the
//! status becomes `Completed` / `RollbackCompleted`. An outdated task whose spec equals the current one (the
//! untouched slots of a rolled-back update) is relabelled to the current version instead of restarted.
//! Placeholders are raised whatever the update state (a paused update never leaves a slot empty), except
//! that an outdated one is replaced first while an update runs.
//!
//! Must not: replace tasks of a service that is not updating (outdated tasks are then left alone, as the
//! orchestrators do), touch tasks the orchestrators own (ended on their own, on drained or lost nodes,
//! slots above the replica count), write task status, read a clock or make up ids.

pub mod monitor;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::time::Duration;

use super::jobs::limits;
use super::replicated::keep_replicated;
use super::{new_task, wanted};
use crate::manager::scheduler::filter::{global_eligible, global_may_keep};
use crate::manager::{Plan, Scope};
use crate::model::{
    FailureAction, NodeState, Service, ServiceMode, Task, TaskState, UpdateConfig, UpdateOrder,
    UpdateState, UpdateStatus,
};
use crate::store::{ClusterState, Op};
use crate::util::{IdSource, Millis};

/// What an update is rolled out over: `(slot, "")` for replicated services and jobs, `(0, node)` for global
/// ones.
pub type UnitKey = (u64, String);

/// Message of a completed update.
pub const UPDATE_COMPLETED: &str = "update completed";
/// Message of a completed rollback.
pub const ROLLBACK_COMPLETED: &str = "rollback completed";
/// Message of a rollback asked for by hand (`service rollback`).
pub const MANUAL_ROLLBACK: &str = "manually requested rollback";

/// The unit `task` belongs to.
pub fn unit_key(task: &Task) -> UnitKey {
    if task.slot == 0 {
        (0, task.node_id.clone().unwrap_or_default())
    } else {
        (task.slot, String::new())
    }
}

/// `service` with its previous spec restored: `spec` and `previous_spec` swapped, the spec version bumped
/// and the status `RollbackStarted` at `now` with `message`. None when there is no previous spec.
pub fn rolled_back(service: &Service, now: Millis, message: &str) -> Option<Service> {
    let previous = service.previous_spec.clone()?;
    let mut s = service.clone();
    s.previous_spec = Some(std::mem::replace(&mut s.spec, previous));
    s.spec_version += 1;
    s.update_status = Some(UpdateStatus {
        state: UpdateState::RollbackStarted,
        started_at: now,
        completed_at: None,
        message: message.to_owned(),
    });
    Some(s)
}

/// The op that rolls `service` back to its previous spec (see [`rolled_back`]), computed from its current
/// version; for `service rollback` (with [`MANUAL_ROLLBACK`]). None when there is no previous spec.
pub fn rollback_op(service: &Service, now: Millis, message: &str) -> Option<Op> {
    rolled_back(service, now, message).map(|s| Op::UpdateService {
        service: s,
        expected_version: service.meta.version,
    })
}

/// Whether `task` is up: running, and healthy when it has a health check (an update waits for healthy tasks).
pub fn is_up(task: &Task) -> bool {
    task.status.state == TaskState::Running
        && task
            .status
            .health
            .is_none_or(|h| h == crate::model::TaskHealth::Healthy)
}

/// Whether `task` is a stop-first placeholder: created desired Ready, waiting for the old task to stop.
fn is_placeholder(task: &Task) -> bool {
    task.desired_state < TaskState::Running
}

/// Whether `task`, which the manager no longer wants, may still be running on a node that will report
/// its end (a node that is not Down and exists, and the task reached it).
fn still_stopping(state: &ClusterState, task: &Task) -> bool {
    !wanted(task)
        && !task.status.state.is_terminal()
        && task.status.state >= TaskState::Assigned
        && task
            .node_id
            .as_deref()
            .and_then(|n| state.node(n))
            .is_some_and(|n| n.status.state != NodeState::Down)
}

/// How a unit stands in the update in progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Progress {
    /// Still on an outdated task that may be replaced now.
    Outdated,
    /// Being replaced: the new task is not up yet, or the old one has not stopped.
    InFlight,
    /// The new task is up and the old ones are gone, or the new task ended on its own (the restart
    /// supervisor owns it now; the monitor has counted it).
    Settled,
    /// Not the updater's to touch now (the orchestrators are moving it, or there is nothing there).
    Skip,
}

/// The ops of one service being gathered: task edits (one per task, by id), creates, the service.
struct Round<'a> {
    state: &'a ClusterState,
    now: Millis,
    edits: BTreeMap<String, (u64, Task)>,
    creates: Vec<Task>,
    requeue: Option<Duration>,
}

impl Round<'_> {
    fn edit(&mut self, task: &Task) -> &mut Task {
        &mut self
            .edits
            .entry(task.id.clone())
            .or_insert_with(|| (task.meta.version, task.clone()))
            .1
    }

    /// Moves `task`'s desired state forward to `desired` (never back).
    fn raise(&mut self, task: &Task, desired: TaskState) {
        let t = self.edit(task);
        t.desired_state = t.desired_state.max(desired);
    }

    fn requeue_at(&mut self, due: Millis) {
        let after = Duration::from_millis(due.saturating_sub(self.now));
        self.requeue = Some(self.requeue.map_or(after, |d| d.min(after)));
    }
}

fn millis(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

/// The config the update in progress follows.
fn config(service: &Service) -> &UpdateConfig {
    match service.update_status.as_ref().map(|s| s.state) {
        Some(s) if s.is_rollback() => &service.spec.rollback,
        _ => &service.spec.update,
    }
}

/// The tasks of `service` by unit, for the units the service still wants (slots up to the replica count
/// or job completions; any node for global services).
fn units<'a>(state: &'a ClusterState, service: &Service) -> BTreeMap<UnitKey, Vec<&'a Task>> {
    let slots = match service.spec.mode {
        ServiceMode::Replicated { replicas } => Some(replicas),
        ServiceMode::ReplicatedJob {
            max_concurrent,
            total_completions,
        } => Some(limits(max_concurrent, total_completions).1),
        ServiceMode::Global | ServiceMode::GlobalJob => None,
    };
    let mut units: BTreeMap<UnitKey, Vec<&Task>> = BTreeMap::new();
    for t in state.tasks_of_service(&service.id) {
        let belongs = match slots {
            Some(n) => (1..=n).contains(&t.slot),
            None => t.slot == 0 && t.node_id.is_some(),
        };
        if belongs {
            units.entry(unit_key(t)).or_default().push(t);
        }
    }
    units
}

/// Whether the unit's outdated tasks may be replaced where they are (else an orchestrator moves them).
fn replaceable(state: &ClusterState, service: &Service, key: &UnitKey, old: &[&Task]) -> bool {
    if key.0 == 0 {
        let placement = &service.spec.task.placement;
        let node = state.node(&key.1);
        node.is_some_and(|n| global_eligible(n, placement)) && global_may_keep(node, placement)
    } else {
        old.iter().all(|t| keep_replicated(state, t))
    }
}

/// Finishes what earlier rounds started in one unit (whatever the update state, so a paused update never
/// leaves a slot empty): a placeholder is raised to Running once no other task of the unit may still run;
/// once a current task is up, the outdated ones are shut down. Relabels outdated tasks whose spec is the
/// current one while an update is in progress. Returns how the unit stands.
fn reconcile_unit(
    r: &mut Round<'_>,
    service: &Service,
    key: &UnitKey,
    tasks: &[&Task],
    in_progress: bool,
) -> Progress {
    let v = service.spec_version;
    let stopping = tasks.iter().any(|t| still_stopping(r.state, t));
    let mut current: Vec<&Task> = Vec::new();
    let mut old: Vec<&Task> = Vec::new();
    for t in tasks.iter().copied().filter(|t| wanted(t)) {
        if t.spec_version >= v {
            current.push(t);
        } else if in_progress && t.spec == service.spec.task {
            r.edit(t).spec_version = v;
            current.push(t);
        } else {
            old.push(t);
        }
    }
    // While the update runs, an outdated placeholder is replaced rather than started.
    let promotable = |t: &Task| !in_progress || current.iter().any(|c| c.id == t.id);
    for p in tasks
        .iter()
        .copied()
        .filter(|t| wanted(t) && is_placeholder(t) && promotable(t))
    {
        let alone = tasks
            .iter()
            .all(|t| t.id == p.id || !(wanted(t) || still_stopping(r.state, t)));
        if alone {
            r.raise(p, TaskState::Running);
        }
    }
    let up = current.iter().any(|t| is_up(t));
    if up {
        for t in &old {
            r.raise(t, TaskState::Shutdown);
        }
    }
    if !in_progress {
        return Progress::Skip;
    }
    let newest = current
        .iter()
        .max_by(|a, b| (a.meta.created_at, &a.id).cmp(&(b.meta.created_at, &b.id)));
    match newest {
        Some(n) if n.status.state.is_terminal() => Progress::Settled,
        Some(_) if up && old.is_empty() && !stopping => Progress::Settled,
        Some(_) => Progress::InFlight,
        None if old.is_empty() => Progress::Skip,
        None if old.iter().any(|t| t.status.state.is_terminal()) => Progress::InFlight,
        None if !replaceable(r.state, service, key, &old) => Progress::Skip,
        None => Progress::Outdated,
    }
}

/// Starts replacing the unit's outdated tasks `old` (`tasks` are all the unit's tasks). Stop-first makes the
/// new task a placeholder only when an old task may still be running; otherwise it may start at once.
fn start_unit(
    r: &mut Round<'_>,
    service: &Service,
    (key, tasks, old): (&UnitKey, &[&Task], &[&Task]),
    order: UpdateOrder,
    ids: &mut dyn IdSource,
) {
    let node = (key.0 == 0).then_some(key.1.as_str());
    let mut task = new_task(service, key.0, node, r.now, ids);
    if order == UpdateOrder::StopFirst {
        let may_run = old.iter().any(|t| t.status.state >= TaskState::Assigned)
            || tasks.iter().any(|t| still_stopping(r.state, t));
        if may_run {
            task.desired_state = TaskState::Ready;
        }
        for t in old {
            r.raise(t, TaskState::Shutdown);
        }
    }
    r.creates.push(task);
}

/// The status after a failure of task `failed` in the update in progress of `service`, or the rolled-back
/// service; None to continue.
fn on_failure(service: &Service, failed: &str, now: Millis) -> Option<Service> {
    let status = service.update_status.as_ref()?;
    let action = config(service).failure_action;
    if action == FailureAction::Continue {
        return None;
    }
    let why = format!("due to failure or early termination of task {failed}");
    let paused = |state: UpdateState, what: &str| {
        let mut s = service.clone();
        s.update_status = Some(UpdateStatus {
            state,
            started_at: status.started_at,
            completed_at: None,
            message: format!("{what} paused {why}"),
        });
        s
    };
    if status.state.is_rollback() {
        return Some(paused(UpdateState::RollbackPaused, "rollback"));
    }
    if action == FailureAction::Rollback {
        if let Some(s) = rolled_back(service, now, &format!("update rolled back {why}")) {
            return Some(s);
        }
    }
    Some(paused(UpdateState::Paused, "update"))
}

/// One service: monitor, finish in-flight units, start the next batch or complete.
fn reconcile_service(r: &mut Round<'_>, original: &Service, ids: &mut dyn IdSource) -> Service {
    let mut service = original.clone();
    let in_progress = |s: &Service| {
        s.update_status
            .as_ref()
            .is_some_and(|u| u.state.in_progress())
    };
    if in_progress(&service) {
        let verdict = monitor::verdict(r.state, &service, config(&service).monitor);
        if verdict.exceeds(config(&service).max_failure_ratio) {
            let failed = verdict.first_failed.unwrap_or_default();
            if let Some(s) = on_failure(&service, &failed, r.now) {
                service = s;
            }
        }
    }
    let active = in_progress(&service);
    // no update running and nothing to raise or replace: every wanted task is of the current spec version and
    // none a placeholder (one pass over the service's tasks, nothing built)
    if !active
        && r.state
            .tasks_of_service(&service.id)
            .filter(|t| wanted(t))
            .all(|t| t.spec_version >= service.spec_version && !is_placeholder(t))
    {
        return service;
    }
    let cfg = config(&service).clone();
    let units = units(r.state, &service);
    let mut outdated: Vec<(&UnitKey, &[&Task], Vec<&Task>)> = Vec::new();
    let mut in_flight = 0usize;
    for (key, tasks) in &units {
        match reconcile_unit(r, &service, key, tasks, active) {
            Progress::Outdated => {
                let old = tasks
                    .iter()
                    .copied()
                    .filter(|t| wanted(t) && t.spec_version < service.spec_version)
                    .collect();
                outdated.push((key, tasks, old));
            }
            Progress::InFlight => in_flight += 1,
            Progress::Settled | Progress::Skip => {}
        }
    }
    if !active || in_flight > 0 {
        return service;
    }
    let ours: Vec<&Task> = r
        .state
        .tasks_of_service(&service.id)
        .filter(|t| monitor::of_this_update(&service, t))
        .collect();
    if outdated.is_empty() {
        // Done once the last new task has run for `monitor`.
        let last_up = ours
            .iter()
            .filter(|t| is_up(t))
            .map(|t| t.status.timestamp)
            .max();
        if let Some(due) = last_up.map(|t| t.saturating_add(millis(cfg.monitor))) {
            if r.now < due {
                r.requeue_at(due);
                return service;
            }
        }
        if let Some(status) = service.update_status.as_mut() {
            let rollback = status.state.is_rollback();
            status.state = if rollback {
                UpdateState::RollbackCompleted
            } else {
                UpdateState::Completed
            };
            status.completed_at = Some(r.now);
            status.message = if rollback {
                // keep why an automatic rollback happened: it is what a CI log needs to show
                if status.message.starts_with("update rolled back") {
                    format!("{ROLLBACK_COMPLETED} ({})", status.message)
                } else {
                    ROLLBACK_COMPLETED.to_owned()
                }
            } else {
                UPDATE_COMPLETED.to_owned()
            };
        }
        return service;
    }
    // The delay runs from when the previous batch settled.
    let last_settled = ours
        .iter()
        .filter(|t| is_up(t) || t.status.state.is_terminal())
        .map(|t| t.status.timestamp)
        .max();
    if let Some(due) = last_settled.map(|t| t.saturating_add(millis(cfg.delay))) {
        if !cfg.delay.is_zero() && r.now < due {
            r.requeue_at(due);
            return service;
        }
    }
    // Units with nothing running (an outdated placeholder) first: replacing them loses no capacity.
    outdated.sort_by_key(|(key, _, old)| {
        let running = old.iter().any(|t| t.status.state >= TaskState::Assigned);
        (running, *key)
    });
    let batch = if cfg.parallelism == 0 {
        outdated.len()
    } else {
        outdated
            .len()
            .min(cfg.parallelism.min(usize::MAX as u64) as usize)
    };
    for (key, tasks, old) in outdated.into_iter().take(batch) {
        start_unit(r, &service, (key, tasks, &old), cfg.order, ids);
    }
    service
}

/// Rolls every updating service forward (see the module docs).
pub fn reconcile(state: &ClusterState, now: Millis, ids: &mut dyn IdSource) -> Plan {
    reconcile_in(state, &Scope::All, now, ids)
}

/// [`reconcile`] on the services of `scope` only.
pub fn reconcile_in(
    state: &ClusterState,
    scope: &Scope,
    now: Millis,
    ids: &mut dyn IdSource,
) -> Plan {
    let mut plan = Plan::new();
    for original in scope.services(state) {
        let mut r = Round {
            state,
            now,
            edits: BTreeMap::new(),
            creates: Vec::new(),
            requeue: None,
        };
        let service = reconcile_service(&mut r, original, ids);
        if service != *original {
            plan.ops.push(Op::UpdateService {
                service,
                expected_version: original.meta.version,
            });
        }
        for (_, (expected_version, task)) in r.edits {
            if state.task(&task.id) != Some(&task) {
                plan.ops.push(Op::UpdateTask {
                    task,
                    expected_version,
                });
            }
        }
        plan.ops.extend(r.creates.into_iter().map(Op::CreateTask));
        if let Some(after) = r.requeue {
            plan.requeue(after);
        }
    }
    plan
}
