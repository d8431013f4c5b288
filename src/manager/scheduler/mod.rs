//! The scheduler: gives every task that should run (desired Running, status New or Pending) a node. All
//! unassigned tasks of one round are placed together, each placement counted before the next, so a round
//! spreads as evenly as one at a time would. Replicated tasks get the eligible node with the fewest tasks by
//! placement preference (`spread=node.labels.X`), then the fewest tasks of their service, then the fewest
//! tasks overall, then the lowest node id. Global tasks carry their node: they are assigned if it still
//! fits. A task no node fits goes to Pending with docker's `no suitable node (...)` message. A round changes at
//! most `MAX_TASK_OPS_PER_ROUND` tasks; the driver runs the next round once its batch is applied.
//!
//! Must not: create, stop or delete tasks (that is the orchestrators'), read a clock or use randomness:
//! equal states give equal placements.

pub mod filter;

#[cfg(test)]
mod equiv_tests;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};

use self::filter::{check, explain, Load, NodeLoad, Unfit};
use super::{Plan, Scope};
use crate::model::limits::MAX_TASK_OPS_PER_ROUND;
use crate::model::{Node, Task, TaskSpec, TaskState, TaskStatus};
use crate::store::{ClusterState, Op};
use crate::util::{IdSource, Millis};

/// The message of an assigned task's status.
pub const ASSIGNED_MESSAGE: &str = "scheduler assigned task to node";

/// What each node carries now: its non-terminal tasks (every node, and any node a live task names).
pub fn loads(state: &ClusterState) -> BTreeMap<String, NodeLoad> {
    let mut loads: BTreeMap<String, NodeLoad> = state
        .nodes()
        .map(|n| (n.id.clone(), NodeLoad::default()))
        .collect();
    for (id, load) in state.node_loads() {
        loads.insert(id.to_owned(), load.clone());
    }
    loads
}

/// The loads a round works with: the store's index, plus what this round placed on each node (a small delta),
/// so a round costs nothing per node or service it does not touch.
struct Loads<'a> {
    state: &'a ClusterState,
    placed: HashMap<&'a str, Delta>,
}

/// What a round added to a node.
#[derive(Debug, Default)]
struct Delta {
    tasks: u64,
    by_service: HashMap<String, u64>,
    nano_cpus: u64,
    memory_bytes: u64,
}

/// A node's load as the round sees it: the store's, plus the round's placements.
#[derive(Clone, Copy)]
struct LoadView<'l> {
    base: Option<&'l NodeLoad>,
    delta: Option<&'l Delta>,
}

impl Load for LoadView<'_> {
    fn tasks(&self) -> u64 {
        self.base.map_or(0, |b| b.tasks) + self.delta.map_or(0, |d| d.tasks)
    }
    fn of_service(&self, service_id: &str) -> u64 {
        self.base.map_or(0, |b| b.of_service(service_id))
            + self
                .delta
                .and_then(|d| d.by_service.get(service_id))
                .copied()
                .unwrap_or(0)
    }
    fn nano_cpus(&self) -> u64 {
        let base = self.base.map_or(0, |b| b.nano_cpus);
        base.saturating_add(self.delta.map_or(0, |d| d.nano_cpus))
    }
    fn memory_bytes(&self) -> u64 {
        let base = self.base.map_or(0, |b| b.memory_bytes);
        base.saturating_add(self.delta.map_or(0, |d| d.memory_bytes))
    }
}

impl<'a> Loads<'a> {
    fn new(state: &'a ClusterState) -> Self {
        Loads {
            state,
            placed: HashMap::new(),
        }
    }

    fn get(&self, node_id: &str) -> LoadView<'_> {
        LoadView {
            base: self.state.node_load(node_id),
            delta: self.placed.get(node_id),
        }
    }

    /// Counts one more task of `service_id` with `spec` on `node_id` (a node of the state).
    fn add(&mut self, node_id: &'a str, service_id: &str, spec: &TaskSpec) {
        let d = self.placed.entry(node_id).or_default();
        d.tasks += 1;
        match d.by_service.get_mut(service_id) {
            Some(n) => *n += 1,
            None => {
                d.by_service.insert(service_id.to_owned(), 1);
            }
        }
        let r = &spec.resources.reservations;
        d.nano_cpus = d.nano_cpus.saturating_add(r.nano_cpus.max(0) as u64);
        d.memory_bytes = d.memory_bytes.saturating_add(r.memory_bytes);
    }
}

/// Whether the scheduler should place `task` (one of the store's unplaced tasks): it should run and IPAM gave
/// it an address on every network it attaches to (Swarm's allocator before its scheduler).
fn unscheduled(state: &ClusterState, task: &Task) -> bool {
    task.desired_state == TaskState::Running
        && matches!(task.status.state, TaskState::New | TaskState::Pending)
        && crate::manager::ipam::allocated(state, task)
}

/// The value a placement preference reads on `node` (`""` when the node lacks the label).
fn preference_value<'a>(node: &'a Node, preference: &str) -> &'a str {
    let key = preference.trim();
    let key = key.strip_prefix("spread=").unwrap_or(key).trim();
    let value = if let Some(label) = key.strip_prefix("node.labels.") {
        node.spec.labels.get(label)
    } else if let Some(label) = key.strip_prefix("engine.labels.") {
        node.description.engine_labels.get(label)
    } else {
        None
    };
    value.map_or("", String::as_str)
}

/// Preference group counts, service tasks, all tasks, node id: lowest wins.
type SpreadKey = (Vec<u64>, u64, u64, String);

/// For each placement preference of `spec`, the tasks of `service_id` per value of the preference over
/// `nodes` (computed once per task, so ordering the candidates is linear in the nodes).
fn group_sums<'a>(
    nodes: &[&'a Node],
    loads: &Loads<'_>,
    service_id: &str,
    spec: &TaskSpec,
) -> Vec<HashMap<&'a str, u64>> {
    spec.placement
        .preferences
        .iter()
        .map(|pref| {
            let mut sums: HashMap<&str, u64> = HashMap::new();
            for n in nodes {
                let here = loads.get(&n.id).of_service(service_id);
                *sums.entry(preference_value(n, pref)).or_default() += here;
            }
            sums
        })
        .collect()
}

/// Orders candidate nodes: fewest tasks of the service per preference group (`groups` from
/// [`group_sums`]), then on the node, then fewest tasks overall, then node id.
fn spread_key(
    groups: &[HashMap<&str, u64>],
    loads: &Loads<'_>,
    node: &Node,
    service_id: &str,
    spec: &TaskSpec,
) -> SpreadKey {
    let groups = spec
        .placement
        .preferences
        .iter()
        .zip(groups)
        .map(|(pref, sums)| sums.get(preference_value(node, pref)).copied().unwrap_or(0))
        .collect();
    let load = loads.get(&node.id);
    (
        groups,
        load.of_service(service_id),
        load.tasks(),
        node.id.clone(),
    )
}

/// The candidate nodes for a run of identical tasks of one service without placement preferences, best
/// first: the key of a node (tasks of the service, all tasks, id) changes only when it is given a task, so
/// each placement is a pop and a push (O(log nodes)) instead of a pass over every node.
struct Candidates<'a> {
    service_id: &'a str,
    spec: &'a TaskSpec,
    heap: BinaryHeap<Reverse<(u64, u64, &'a str)>>,
    /// Nodes that cannot take a task of the run, by reason (loads only grow within a run: they never can).
    refused: BTreeMap<Unfit, usize>,
}

impl<'a> Candidates<'a> {
    fn new(nodes: &[&'a Node], loads: &Loads<'_>, service_id: &'a str, spec: &'a TaskSpec) -> Self {
        let mut c = Candidates {
            service_id,
            spec,
            heap: BinaryHeap::with_capacity(nodes.len()),
            refused: BTreeMap::new(),
        };
        for node in nodes {
            let load = loads.get(&node.id);
            match check(node, &load, service_id, spec, true) {
                Err(unfit) => *c.refused.entry(unfit).or_default() += 1,
                Ok(()) => c.heap.push(Reverse((
                    load.of_service(service_id),
                    load.tasks(),
                    &node.id,
                ))),
            }
        }
        c
    }

    /// The best node that still fits, counted as carrying one more task; or why none does.
    fn place(&mut self, state: &'a ClusterState, loads: &mut Loads<'a>) -> Result<String, String> {
        while let Some(Reverse((_, _, id))) = self.heap.pop() {
            let Some(node) = state.node(id) else { continue };
            if let Err(unfit) = check(node, &loads.get(id), self.service_id, self.spec, true) {
                *self.refused.entry(unfit).or_default() += 1;
                continue;
            }
            loads.add(&node.id, self.service_id, self.spec);
            let load = loads.get(id);
            self.heap.push(Reverse((
                load.of_service(self.service_id),
                load.tasks(),
                id,
            )));
            return Ok(id.to_owned());
        }
        Err(explain(&self.refused))
    }
}

fn assign(task: &Task, node_id: &str, now: Millis) -> Op {
    let mut new = task.clone();
    new.node_id = Some(node_id.to_owned());
    new.status = TaskStatus::new(TaskState::Assigned, now);
    new.status.message = ASSIGNED_MESSAGE.into();
    Op::UpdateTask {
        task: new,
        expected_version: task.meta.version,
    }
}

/// The op that leaves `task` Pending with `message`, unless it already is.
fn pend(task: &Task, message: String, now: Millis) -> Option<Op> {
    if task.status.state == TaskState::Pending && task.status.message == message {
        return None;
    }
    let mut new = task.clone();
    new.status = TaskStatus::new(TaskState::Pending, now);
    new.status.message = message;
    Some(Op::UpdateTask {
        task: new,
        expected_version: task.meta.version,
    })
}

/// [`reconcile`], run by the driver whenever anything changed: every task waiting for a node is placed from the
/// store's index of them, whatever the scope (a change anywhere may make room for any of them).
pub fn reconcile_in(
    state: &ClusterState,
    _scope: &Scope,
    now: Millis,
    ids: &mut dyn IdSource,
) -> Plan {
    reconcile(state, now, ids)
}

/// Places every unscheduled task (see the module docs).
pub fn reconcile(state: &ClusterState, now: Millis, _ids: &mut dyn IdSource) -> Plan {
    let mut plan = Plan::new();
    let mut loads = Loads::new(state);
    let nodes: Vec<&Node> = state.nodes().collect();
    // the store's index of tasks waiting for a node: a round costs nothing per placed task
    let mut tasks: Vec<&Task> = state
        .unplaced_tasks()
        .filter(|t| unscheduled(state, t) && state.service(&t.service_id).is_some())
        .collect();
    let order = |a: &&Task, b: &&Task| {
        (&a.service_id, a.slot, &a.node_id, &a.id).cmp(&(&b.service_id, b.slot, &b.node_id, &b.id))
    };
    // a round handles at most MAX_TASK_OPS_PER_ROUND tasks: pick the first ones in linear time, sort only those
    if tasks.len() > MAX_TASK_OPS_PER_ROUND {
        tasks.select_nth_unstable_by(MAX_TASK_OPS_PER_ROUND, order);
        tasks.truncate(MAX_TASK_OPS_PER_ROUND);
    }
    tasks.sort_by(order);
    // the candidates of the current run of identical tasks (one service, one spec, no preferences)
    let mut run: Option<Candidates> = None;
    for task in tasks {
        // bounded rounds: the rest is placed in the next round, after this batch has been applied
        if plan.ops.len() >= MAX_TASK_OPS_PER_ROUND {
            break;
        }
        let chosen = match &task.node_id {
            Some(node_id) => match state.node(node_id) {
                Some(node) => {
                    let load = loads.get(node_id);
                    check(node, &load, &task.service_id, &task.spec, false)
                        .map(|()| node_id.clone())
                        .map_err(|unfit| explain(&BTreeMap::from([(unfit, 1)])))
                }
                None => Err(explain(&BTreeMap::from([(Unfit::NotAvailable, 1)]))),
            },
            None if task.spec.placement.preferences.is_empty() => {
                let same_run = run
                    .as_ref()
                    .is_some_and(|r| r.service_id == task.service_id && *r.spec == task.spec);
                if !same_run {
                    run = Some(Candidates::new(
                        &nodes,
                        &loads,
                        &task.service_id,
                        &task.spec,
                    ));
                }
                let placed = run
                    .as_mut()
                    .map(|r| r.place(state, &mut loads))
                    .unwrap_or_else(|| Err(explain(&BTreeMap::new())));
                match placed {
                    Ok(node_id) => plan.ops.push(assign(task, &node_id, now)),
                    Err(message) => plan.ops.extend(pend(task, message, now)),
                }
                continue;
            }
            None => {
                let mut refused: BTreeMap<Unfit, usize> = BTreeMap::new();
                let mut best: Option<(SpreadKey, &Node)> = None;
                let groups = group_sums(&nodes, &loads, &task.service_id, &task.spec);
                for node in &nodes {
                    let load = loads.get(&node.id);
                    match check(node, &load, &task.service_id, &task.spec, true) {
                        Err(unfit) => *refused.entry(unfit).or_default() += 1,
                        Ok(()) => {
                            let key =
                                spread_key(&groups, &loads, node, &task.service_id, &task.spec);
                            if best.as_ref().is_none_or(|(k, _)| key < *k) {
                                best = Some((key, node));
                            }
                        }
                    }
                }
                best.map(|(_, n)| n.id.clone())
                    .ok_or_else(|| explain(&refused))
            }
        };
        // a placement outside the run changes loads the run's keys were made from
        run = None;
        match chosen {
            Ok(node_id) => {
                if let Some(node) = state.node(&node_id) {
                    loads.add(&node.id, &task.service_id, &task.spec);
                }
                plan.ops.push(assign(task, &node_id, now));
            }
            Err(message) => plan.ops.extend(pend(task, message, now)),
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manager::testutil::*;
    use crate::model::{NodeAvailability, NodeState, ServiceMode};
    use crate::util::SeqIds;

    fn placements(w: &World) -> Vec<String> {
        let plan = reconcile(&w.state, w.time, &mut SeqIds::new("x"));
        summary(&plan)
    }

    fn new_tasks(service: &str, n: u64) -> Vec<Task> {
        (1..=n)
            .map(|slot| {
                task(
                    &format!("{service}-{slot}"),
                    service,
                    slot,
                    None,
                    TaskState::Running,
                    TaskState::New,
                )
            })
            .collect()
    }

    #[test]
    fn table() {
        let repl = |id: &str| service(id, ServiceMode::Replicated { replicas: 1 });
        let with_spec = |mut tasks: Vec<Task>, f: &dyn Fn(&mut TaskSpec)| {
            for t in &mut tasks {
                f(&mut t.spec);
            }
            tasks
        };
        let big = |id: &str, mem: u64| {
            let mut n = node(id);
            n.description.resources.memory_bytes = mem;
            n
        };
        type Case<'a> = (&'a str, Vec<Node>, Vec<Task>, Vec<&'a str>);
        let cases: Vec<Case> = vec![
            (
                "spread over three nodes",
                vec![node("n1"), node("n2"), node("n3")],
                new_tasks("s1", 4),
                vec![
                    "update s1-1 desired=Running status=Assigned@n1",
                    "update s1-2 desired=Running status=Assigned@n2",
                    "update s1-3 desired=Running status=Assigned@n3",
                    "update s1-4 desired=Running status=Assigned@n1",
                ],
            ),
            (
                "existing tasks count",
                vec![node("n1"), node("n2")],
                {
                    let mut t = new_tasks("s1", 2);
                    t[0].node_id = Some("n1".into());
                    t[0].status.state = TaskState::Running;
                    t
                },
                vec!["update s1-2 desired=Running status=Assigned@n2"],
            ),
            (
                "pause, drain and down take nothing",
                vec![
                    node_with("n1", NodeAvailability::Pause, NodeState::Ready),
                    node_with("n2", NodeAvailability::Drain, NodeState::Ready),
                    node_with("n3", NodeAvailability::Active, NodeState::Down),
                    node("n4"),
                ],
                new_tasks("s1", 2),
                vec![
                    "update s1-1 desired=Running status=Assigned@n4",
                    "update s1-2 desired=Running status=Assigned@n4",
                ],
            ),
            (
                "no suitable node",
                vec![
                    node_with("n1", NodeAvailability::Pause, NodeState::Ready),
                    labelled("n2", &[("zone", "b")]),
                ],
                with_spec(new_tasks("s1", 1), &|s| {
                    s.placement.constraints = vec!["node.labels.zone==a".into()]
                }),
                vec!["update s1-1 desired=Running status=Pending@-"],
            ),
            (
                "constraints",
                vec![
                    labelled("n1", &[("zone", "b")]),
                    labelled("n2", &[("zone", "a")]),
                ],
                with_spec(new_tasks("s1", 2), &|s| {
                    s.placement.constraints = vec!["node.labels.zone==a".into()]
                }),
                vec![
                    "update s1-1 desired=Running status=Assigned@n2",
                    "update s1-2 desired=Running status=Assigned@n2",
                ],
            ),
            (
                "max replicas per node",
                vec![node("n1"), node("n2")],
                with_spec(new_tasks("s1", 3), &|s| {
                    s.placement.max_replicas_per_node = 1
                }),
                vec![
                    "update s1-1 desired=Running status=Assigned@n1",
                    "update s1-2 desired=Running status=Assigned@n2",
                    "update s1-3 desired=Running status=Pending@-",
                ],
            ),
            (
                "resources",
                vec![big("n1", 100), big("n2", 250)],
                with_spec(new_tasks("s1", 4), &|s| {
                    s.resources.reservations.memory_bytes = 100
                }),
                vec![
                    "update s1-1 desired=Running status=Assigned@n1",
                    "update s1-2 desired=Running status=Assigned@n2",
                    "update s1-3 desired=Running status=Assigned@n2",
                    "update s1-4 desired=Running status=Pending@-",
                ],
            ),
            (
                "spread by label first",
                vec![
                    labelled("n1", &[("zone", "a")]),
                    labelled("n2", &[("zone", "a")]),
                    labelled("n3", &[("zone", "b")]),
                ],
                with_spec(new_tasks("s1", 4), &|s| {
                    s.placement.preferences = vec!["spread=node.labels.zone".into()]
                }),
                vec![
                    "update s1-1 desired=Running status=Assigned@n1",
                    "update s1-2 desired=Running status=Assigned@n3",
                    "update s1-3 desired=Running status=Assigned@n2",
                    "update s1-4 desired=Running status=Assigned@n3",
                ],
            ),
            (
                "global task keeps its node if it fits",
                vec![
                    node("n1"),
                    node_with("n2", NodeAvailability::Pause, NodeState::Ready),
                ],
                vec![
                    task(
                        "g1",
                        "s1",
                        0,
                        Some("n1"),
                        TaskState::Running,
                        TaskState::New,
                    ),
                    task(
                        "g2",
                        "s1",
                        0,
                        Some("n2"),
                        TaskState::Running,
                        TaskState::New,
                    ),
                ],
                vec![
                    "update g1 desired=Running status=Assigned@n1",
                    "update g2 desired=Running status=Pending@n2",
                ],
            ),
        ];
        for (name, nodes, tasks, want) in cases {
            let mut w = World::with(creates(nodes, vec![repl("s1")], tasks));
            assert_eq!(placements(&w), want, "{name}");
            check_idempotent(&mut w, reconcile);
        }
    }

    #[test]
    fn pending_message_like_docker() {
        let mut t = new_tasks("s1", 1);
        t[0].spec.placement.constraints = vec!["node.labels.zone==a".into()];
        let w = World::with(creates(
            vec![
                node_with("n1", NodeAvailability::Pause, NodeState::Ready),
                labelled("n2", &[("zone", "b")]),
            ],
            vec![service("s1", ServiceMode::Replicated { replicas: 1 })],
            t,
        ));
        let plan = reconcile(&w.state, w.time, &mut SeqIds::new("x"));
        let Op::UpdateTask { task, .. } = &plan.ops[0] else {
            panic!("{plan:?}")
        };
        assert_eq!(
            task.status.message,
            "no suitable node (1 node not available for new tasks; 1 node has unmatched placement constraints)"
        );
    }

    #[test]
    fn tasks_wait_for_their_addresses() {
        let mut web = service("web", ServiceMode::Replicated { replicas: 1 });
        web.spec.task.networks = vec![crate::model::NetworkAttachment {
            target: "front".into(),
            aliases: vec![],
        }];
        let mut t = task("t1", "web", 1, None, TaskState::Running, TaskState::New);
        t.spec = web.spec.task.clone();
        let mut w = World::with(vec![
            Op::CreateNode(node("n1")),
            Op::CreateNetwork(crate::manager::testutil::network("front")),
            Op::CreateService(web),
            Op::CreateTask(t),
        ]);
        let mut ids = SeqIds::default();
        assert!(
            reconcile(&w.state, w.time, &mut ids).ops.is_empty(),
            "no address yet"
        );
        for _ in 0..2 {
            let plan = crate::manager::ipam::reconcile(&w.state, w.time, &mut ids);
            w.apply_plan(&plan);
        }
        let plan = reconcile(&w.state, w.time, &mut ids);
        assert_eq!(
            summary(&plan),
            vec!["update t1 desired=Running status=Assigned@n1"]
        );
    }
}
