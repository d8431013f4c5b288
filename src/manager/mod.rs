//! The leader's side of the cluster: the control API (`controlapi`, planning deploys in `deploy`), the `dispatcher`
//! (agent sessions), the `driver` that runs the controllers and the `proposer` they all write through; and the pure
//! controllers (`orchestrator`, `scheduler`), each a
//! function `reconcile(&ClusterState, now, &mut dyn IdSource) -> Plan` and its scoped form
//! `reconcile_in(&ClusterState, &Scope, now, &mut dyn IdSource) -> Plan` (the driver runs that one on what
//! changed), and [`Plan`], what they return; [`Scope`] and [`dirty_scope`] (which services a change concerns).
//!
//! Owns: `Plan` and how plans of several controllers are merged into one batch. Must not (in the controllers):
//! do I/O, read a clock, use randomness or the network: time and ids come in as arguments, and the same state
//! always gives the same plan (DESIGN invariant 3).

use std::collections::BTreeSet;
use std::time::Duration;

use crate::model::{Service, ServiceMode};
use crate::store::{ClusterState, ObjectKind, Op, Touched};
use crate::util::{IdSource, Millis};

pub mod ca;
pub mod controlapi;
pub mod deploy;
pub mod dispatcher;
pub mod driver;
pub mod forward;
pub mod gc;
pub mod ipam;
pub mod orchestrator;
pub mod proposer;
pub mod raftpeer;
pub mod rotation;
pub mod rules;
pub mod scheduler;
pub mod specdiff;
pub mod usage;

#[cfg(test)]
mod scope_tests;
#[cfg(test)]
pub(crate) mod testutil;

/// What a controller wants: ops for one batch, and when to look again even if nothing changes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// Changes, each carrying the version it was computed from.
    pub ops: Vec<Op>,
    /// Reconcile again after this long (a restart delay that is not yet due), even without a change.
    pub requeue_after: Option<Duration>,
    /// Services of the scope this plan did not finish (the round's budget ran out): the driver looks at them
    /// again next round even if nothing changes.
    pub unfinished: BTreeSet<String>,
}

/// The signature every controller has.
pub type Controller = fn(&ClusterState, Millis, &mut dyn IdSource) -> Plan;

/// The scoped form: the same controller, looking only at the services of a [`Scope`].
pub type ScopedController = fn(&ClusterState, &Scope, Millis, &mut dyn IdSource) -> Plan;

/// Which services a controller run looks at: all of them, or a set of ids (which may name deleted services:
/// their tasks are still looked at).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every service (a full run).
    All,
    /// These services (by id).
    Services(BTreeSet<String>),
}

impl Default for Scope {
    fn default() -> Self {
        Scope::Services(BTreeSet::new())
    }
}

impl Scope {
    /// No service.
    pub fn none() -> Scope {
        Scope::default()
    }

    /// The services `ids`.
    pub fn of<I: IntoIterator<Item = S>, S: Into<String>>(ids: I) -> Scope {
        Scope::Services(ids.into_iter().map(Into::into).collect())
    }

    /// Whether the scope holds no service.
    pub fn is_empty(&self) -> bool {
        matches!(self, Scope::Services(s) if s.is_empty())
    }

    /// Whether service `id` is in the scope.
    pub fn contains(&self, id: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Services(s) => s.contains(id),
        }
    }

    /// Adds service `id`.
    pub fn add(&mut self, id: &str) {
        if let Scope::Services(s) = self {
            if !s.contains(id) {
                s.insert(id.to_owned());
            }
        }
    }

    /// Adds every service of `other`.
    pub fn extend(&mut self, other: &Scope) {
        match (&mut *self, other) {
            (Scope::All, _) => {}
            (_, Scope::All) => *self = Scope::All,
            (Scope::Services(a), Scope::Services(b)) => a.extend(b.iter().cloned()),
        }
    }

    /// The services of the scope that exist, by id.
    pub fn services<'a>(
        &'a self,
        state: &'a ClusterState,
    ) -> Box<dyn Iterator<Item = &'a Service> + 'a> {
        match self {
            Scope::All => Box::new(state.services()),
            Scope::Services(ids) => Box::new(ids.iter().filter_map(|id| state.service(id))),
        }
    }
}

/// The services a change (`touched`, from the store's feed; `None`: unknown, everything) concerns, widened
/// whenever in doubt: a changed service or one whose tasks or restart histories changed; for a changed node,
/// the services with tasks on it, every global service and the services of every task waiting for a node
/// (it may fit there now); for addresses changed on a network, the services of the tasks waiting for a
/// node (an address may be free now); a changed network, secret, config, stack or the cluster object:
/// everything.
pub fn dirty_scope(state: &ClusterState, touched: Option<&Touched>) -> Scope {
    let Some(t) = touched else {
        return Scope::All;
    };
    let wide = [
        ObjectKind::Network,
        ObjectKind::Secret,
        ObjectKind::Config,
        ObjectKind::Stack,
        ObjectKind::Cluster,
    ];
    if wide.iter().any(|k| t.any(*k)) {
        return Scope::All;
    }
    let mut scope = Scope::none();
    for id in t
        .of(ObjectKind::Service)
        .chain(t.task_services.iter().map(String::as_str))
    {
        scope.add(id);
    }
    let nodes_changed = t.any(ObjectKind::Node);
    for node in t.of(ObjectKind::Node) {
        for task in state.tasks_on_node(node) {
            scope.add(&task.service_id);
        }
    }
    if nodes_changed {
        for s in state.services() {
            if matches!(s.spec.mode, ServiceMode::Global | ServiceMode::GlobalJob) {
                scope.add(&s.id);
            }
        }
    }
    if nodes_changed || !t.address_networks.is_empty() {
        for task in state.unplaced_tasks() {
            scope.add(&task.service_id);
        }
    }
    scope
}

/// Every controller in its scoped form, by name, in the same order as [`CONTROLLERS`]: what the driver runs.
/// The orchestrators, the updater and the reaper look only at the scope's services; IPAM gives VIPs to the
/// scope's services and addresses to every task waiting for a node; the scheduler places every task waiting
/// for a node (the store's index, whatever the scope); `gc` and `networks` look at their few objects.
pub const SCOPED_CONTROLLERS: &[(&str, ScopedController)] = &[
    ("replicated", orchestrator::replicated::reconcile_in),
    ("global", orchestrator::global::reconcile_in),
    ("jobs", orchestrator::jobs::reconcile_in),
    ("orphans", orchestrator::reconcile_orphans_in),
    ("update", orchestrator::update::reconcile_in),
    ("ipam", ipam::reconcile_in),
    ("scheduler", scheduler::reconcile_in),
    ("reaper", orchestrator::reaper::reconcile_in),
    ("gc", gc::reconcile_in),
    ("networks", ipam::usage::reconcile_in),
];

/// Every controller, by name, in the order the driver should run them (orchestrators, then the rolling
/// updater, then IPAM (addresses before a node), then the scheduler, then the reaper).
pub const CONTROLLERS: &[(&str, Controller)] = &[
    ("replicated", orchestrator::replicated::reconcile),
    ("global", orchestrator::global::reconcile),
    ("jobs", orchestrator::jobs::reconcile),
    ("orphans", orchestrator::reconcile_orphans),
    ("update", orchestrator::update::reconcile),
    ("ipam", ipam::reconcile),
    ("scheduler", scheduler::reconcile),
    ("reaper", orchestrator::reaper::reconcile),
    ("gc", gc::reconcile),
    ("networks", ipam::usage::reconcile),
];

/// The object an op touches, so merged plans never change one object twice in a batch.
fn target(op: &Op) -> Option<(ObjectKind, String)> {
    use ObjectKind as K;
    Some(match op {
        Op::CreateService(s) => (K::Service, s.id.clone()),
        Op::UpdateService { service, .. } => (K::Service, service.id.clone()),
        Op::DeleteService { id, .. } => (K::Service, id.clone()),
        Op::CreateTask(t) => (K::Task, t.id.clone()),
        Op::UpdateTask { task, .. } => (K::Task, task.id.clone()),
        Op::DeleteTask { id } => (K::Task, id.clone()),
        Op::CreateNode(n) => (K::Node, n.id.clone()),
        Op::UpdateNode { node, .. } => (K::Node, node.id.clone()),
        Op::DeleteNode { id, .. } => (K::Node, id.clone()),
        Op::CreateRestartHistory(h) => (K::RestartHistory, h.key.id()),
        Op::UpdateRestartHistory { history, .. } => (K::RestartHistory, history.key.id()),
        Op::DeleteRestartHistory { key, .. } => (K::RestartHistory, key.id()),
        Op::CreateNetwork(n) => (K::Network, n.id.clone()),
        Op::UpdateNetwork { network, .. } => (K::Network, network.id.clone()),
        Op::DeleteNetwork { id, .. } => (K::Network, id.clone()),
        _ => return None,
    })
}

impl Plan {
    /// A plan with no ops and no requeue.
    pub fn new() -> Plan {
        Plan::default()
    }

    /// Whether the plan changes nothing.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Asks to be reconciled again after `after` at the latest (the earliest request wins).
    pub fn requeue(&mut self, after: Duration) {
        self.requeue_after = Some(self.requeue_after.map_or(after, |d| d.min(after)));
    }

    /// Appends `other` so both can go in one batch. A plan is all or nothing: if `other` touches an object
    /// this plan already touches (its ops were computed from a version this batch is about to change), all
    /// of `other`'s ops are left out and the merged plan requeues at once so they are recomputed next round.
    pub fn merge(&mut self, other: Plan) {
        if let Some(after) = other.requeue_after {
            self.requeue(after);
        }
        self.unfinished.extend(other.unfinished.iter().cloned());
        let touched: BTreeSet<_> = self.ops.iter().filter_map(target).collect();
        if other
            .ops
            .iter()
            .filter_map(target)
            .any(|t| touched.contains(&t))
        {
            self.requeue(Duration::ZERO);
            return;
        }
        self.ops.extend(other.ops);
    }
}

/// Runs every controller in [`CONTROLLERS`] on the same state and merges their plans into one.
pub fn reconcile_all(state: &ClusterState, now: Millis, ids: &mut dyn IdSource) -> Plan {
    let mut plan = Plan::new();
    for (_, controller) in CONTROLLERS {
        plan.merge(controller(state, now, ids));
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;
    use crate::model::{NodeAvailability, ServiceMode, TaskState};
    use crate::util::SeqIds;

    #[test]
    fn merge_keeps_earliest_requeue_and_drops_conflicting_plans() {
        let t = task("t1", "s1", 1, None, TaskState::Running, TaskState::New);
        let a = Plan {
            ops: vec![Op::DeleteTask { id: "t1".into() }],
            requeue_after: Some(Duration::from_secs(5)),
            ..Plan::default()
        };
        let b = Plan {
            ops: vec![Op::UpdateTask {
                task: t.clone(),
                expected_version: 0,
            }],
            requeue_after: Some(Duration::from_secs(2)),
            ..Plan::default()
        };
        let c = Plan {
            ops: vec![Op::DeleteTask { id: "t2".into() }],
            ..Plan::default()
        };
        let mut m = a.clone();
        m.merge(c);
        assert_eq!(m.ops.len(), 2);
        assert_eq!(m.requeue_after, Some(Duration::from_secs(5)));
        m.merge(b);
        assert_eq!(m.ops.len(), 2, "conflicting plan left out");
        assert_eq!(m.requeue_after, Some(Duration::ZERO));
    }

    /// The agent, simulated: assigned tasks start, tasks asked to stop stop.
    fn agent_step(w: &mut World) -> bool {
        let mut ops = Vec::new();
        for t in w.state.tasks() {
            let node_up = t
                .node_id
                .as_deref()
                .and_then(|n| w.state.node(n))
                .is_some_and(|n| n.status.state == crate::model::NodeState::Ready);
            if !node_up {
                continue;
            }
            let next = if t.desired_state >= TaskState::Shutdown && !t.status.state.is_terminal() {
                TaskState::Shutdown
            } else if t.desired_state == TaskState::Running
                && (TaskState::Assigned..TaskState::Running).contains(&t.status.state)
            {
                TaskState::Running
            } else {
                continue;
            };
            let mut new = t.clone();
            new.status = crate::model::TaskStatus::new(next, w.time);
            ops.push(Op::UpdateTask {
                task: new,
                expected_version: t.meta.version,
            });
        }
        let changed = !ops.is_empty();
        if changed {
            w.apply_ops(ops);
        }
        changed
    }

    /// Runs the controllers (each plan its own batch, or all merged into one when `merged`) and the agent
    /// until nothing changes.
    fn converge_with(w: &mut World, ids: &mut SeqIds, merged: bool) {
        for _ in 0..50 {
            let mut changed = false;
            if merged {
                let plan = reconcile_all(&w.state, w.time, ids);
                if !plan.is_empty() || plan.requeue_after == Some(Duration::ZERO) {
                    w.apply_plan(&plan);
                    changed = true;
                }
            } else {
                for (_, controller) in CONTROLLERS {
                    let plan = controller(&w.state, w.time, ids);
                    if !plan.is_empty() {
                        w.apply_plan(&plan);
                        changed = true;
                    }
                }
            }
            changed |= agent_step(w);
            w.time += 1000;
            if !changed {
                return;
            }
        }
        panic!("did not converge");
    }

    fn converge(w: &mut World, ids: &mut SeqIds) {
        converge_with(w, ids, false)
    }

    fn set_availability(w: &mut World, id: &str, availability: NodeAvailability) {
        let mut n = w.state.node(id).unwrap().clone();
        n.spec.availability = availability;
        let v = n.meta.version;
        w.apply_ops(vec![Op::UpdateNode {
            node: n,
            expected_version: v,
        }]);
    }

    fn running_per_node(w: &World, service: &str) -> Vec<(String, usize)> {
        w.state
            .nodes()
            .map(|n| {
                let count = w
                    .state
                    .tasks_on_node(&n.id)
                    .filter(|t| {
                        t.service_id == service
                            && t.status.state == TaskState::Running
                            && t.desired_state == TaskState::Running
                    })
                    .count();
                (n.id.clone(), count)
            })
            .collect()
    }

    #[test]
    fn all_controllers_converge_scale_and_drain() {
        let mut w = World::new();
        let mut ids = SeqIds::new("t");
        w.create_ops(vec![
            Op::CreateNode(node("n1")),
            Op::CreateNode(node("n2")),
            Op::CreateNode(node("n3")),
            Op::CreateService(service("s1", ServiceMode::Replicated { replicas: 10 })),
        ]);
        converge(&mut w, &mut ids);
        let per = running_per_node(&w, "s1");
        assert_eq!(
            per,
            vec![("n1".into(), 4), ("n2".into(), 3), ("n3".into(), 3)]
        );

        let mut s = w.state.service("s1").unwrap().clone();
        s.spec.mode = ServiceMode::Replicated { replicas: 2 };
        s.spec_version += 1;
        let v = s.meta.version;
        w.apply_ops(vec![Op::UpdateService {
            service: s,
            expected_version: v,
        }]);
        converge(&mut w, &mut ids);
        let total: usize = running_per_node(&w, "s1").iter().map(|(_, c)| c).sum();
        assert_eq!(total, 2);
        // Scaled-down tasks were removed, then reaped.
        assert!(w
            .state
            .tasks()
            .all(|t| t.desired_state != TaskState::Remove));

        let on_n1 = running_per_node(&w, "s1")[0].1;
        assert_eq!(on_n1, 1);
        set_availability(&mut w, "n1", NodeAvailability::Drain);
        converge(&mut w, &mut ids);
        let per = running_per_node(&w, "s1");
        assert_eq!(per[0].1, 0, "{per:?}");
        assert_eq!(per.iter().map(|(_, c)| c).sum::<usize>(), 2, "{per:?}");
        // Nothing left to do.
        assert!(reconcile_all(&w.state, w.time, &mut ids).is_empty());
    }

    #[test]
    fn merged_plans_converge_too() {
        let mut w = World::with(vec![
            Op::CreateNode(node("n1")),
            Op::CreateNode(node("n2")),
            Op::CreateNode(node("n3")),
            Op::CreateService(service("s1", ServiceMode::Replicated { replicas: 10 })),
            Op::CreateService(service("g", ServiceMode::Global)),
        ]);
        let mut ids = SeqIds::new("t");
        converge_with(&mut w, &mut ids, true);
        assert_eq!(
            running_per_node(&w, "s1"),
            vec![("n1".into(), 4), ("n2".into(), 3), ("n3".into(), 3)]
        );
        assert_eq!(
            running_per_node(&w, "g"),
            vec![("n1".into(), 1), ("n2".into(), 1), ("n3".into(), 1)]
        );
    }

    #[test]
    fn global_follows_nodes() {
        let mut w = World::with(vec![
            Op::CreateNode(node("n1")),
            Op::CreateService(service("g", ServiceMode::Global)),
        ]);
        let mut ids = SeqIds::new("t");
        converge(&mut w, &mut ids);
        assert_eq!(running_per_node(&w, "g"), vec![("n1".into(), 1)]);
        w.apply_ops(vec![Op::CreateNode(node("n2"))]);
        converge(&mut w, &mut ids);
        assert_eq!(
            running_per_node(&w, "g"),
            vec![("n1".into(), 1), ("n2".into(), 1)]
        );
        set_availability(&mut w, "n1", NodeAvailability::Drain);
        converge(&mut w, &mut ids);
        assert_eq!(
            running_per_node(&w, "g"),
            vec![("n1".into(), 0), ("n2".into(), 1)]
        );
        set_availability(&mut w, "n1", NodeAvailability::Active);
        converge(&mut w, &mut ids);
        assert_eq!(
            running_per_node(&w, "g"),
            vec![("n1".into(), 1), ("n2".into(), 1)]
        );
    }

    #[test]
    fn replicated_job_runs_to_completion() {
        let mut w = World::with(vec![
            Op::CreateNode(node("n1")),
            Op::CreateNode(node("n2")),
            Op::CreateService(service(
                "j",
                ServiceMode::ReplicatedJob {
                    max_concurrent: 2,
                    total_completions: 5,
                },
            )),
        ]);
        let mut ids = SeqIds::new("t");
        let mut max_seen = 0;
        for _ in 0..30 {
            converge(&mut w, &mut ids);
            let running: Vec<crate::model::Task> = w
                .state
                .tasks()
                .filter(|t| t.status.state == TaskState::Running)
                .cloned()
                .collect();
            max_seen = max_seen.max(running.len());
            if running.is_empty() {
                break;
            }
            // Every running job task exits 0.
            let ops = running
                .into_iter()
                .map(|t| {
                    let v = t.meta.version;
                    let mut done = t;
                    done.status = crate::model::TaskStatus::new(TaskState::Complete, w.time);
                    done.status.exit_code = Some(0);
                    Op::UpdateTask {
                        task: done,
                        expected_version: v,
                    }
                })
                .collect();
            w.apply_ops(ops);
        }
        assert_eq!(max_seen, 2);
        let complete: std::collections::BTreeSet<u64> = w
            .state
            .tasks()
            .filter(|t| t.desired_state == TaskState::Complete)
            .map(|t| t.slot)
            .collect();
        assert_eq!(complete, (1..=5).collect());
        assert!(reconcile_all(&w.state, w.time, &mut ids).is_empty());
    }
}
