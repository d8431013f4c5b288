//! Test helpers for the controllers: builders for nodes, services and tasks, and a `World` that applies
//! plans as batches at increasing log indexes.
//!
//! Must not: be compiled outside tests.

use std::collections::BTreeMap;

use super::Plan;
use crate::model::{
    Meta, Node, NodeAvailability, NodeDescription, NodeResources, NodeSpec, NodeState, NodeStatus,
    Platform, Service, ServiceMode, ServiceSpec, Task, TaskSpec, TaskState, TaskStatus,
};
use crate::store::{Batch, ClusterState, Op};
use crate::util::Millis;

/// A Ready, Active worker named `id` on linux/x86_64 with unknown (unlimited) resources.
pub fn node(id: &str) -> Node {
    Node {
        id: id.into(),
        meta: Meta::default(),
        description: NodeDescription {
            hostname: id.into(),
            platform: Platform {
                os: "linux".into(),
                arch: "x86_64".into(),
            },
            resources: NodeResources::default(),
            engine_labels: BTreeMap::new(),
        },
        spec: NodeSpec::default(),
        status: NodeStatus {
            state: NodeState::Ready,
            ..NodeStatus::default()
        },
        manager_status: None,
    }
}

/// `node(id)` with an availability.
pub fn node_with(id: &str, availability: NodeAvailability, state: NodeState) -> Node {
    let mut n = node(id);
    n.spec.availability = availability;
    n.status.state = state;
    n
}

/// `node(id)` with labels.
pub fn labelled(id: &str, labels: &[(&str, &str)]) -> Node {
    let mut n = node(id);
    n.spec.labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    n
}

/// A service `id` (also its name) in `mode`, spec version 1, restart delay 0.
pub fn service(id: &str, mode: ServiceMode) -> Service {
    let mut task = TaskSpec::default();
    task.restart.delay = std::time::Duration::ZERO;
    Service {
        id: id.into(),
        meta: Meta::default(),
        spec: ServiceSpec {
            name: id.into(),
            task,
            mode,
            ..ServiceSpec::default()
        },
        spec_version: 1,
        previous_spec: None,
        update_status: None,
        virtual_ips: Vec::new(),
    }
}

/// A network `id` (also its name) with the default driver, not allocated yet.
pub fn network(id: &str) -> crate::model::Network {
    crate::model::Network {
        id: id.into(),
        meta: Meta::default(),
        spec: crate::model::NetworkSpec {
            name: id.into(),
            ..Default::default()
        },
        allocation: None,
    }
}

/// A task of `service` in `slot` on `node`, spec version 1.
pub fn task(
    id: &str,
    service: &str,
    slot: u64,
    node: Option<&str>,
    desired: TaskState,
    status: TaskState,
) -> Task {
    Task {
        id: id.into(),
        meta: Meta::default(),
        service_id: service.into(),
        slot,
        node_id: node.map(str::to_owned),
        spec: TaskSpec::default(),
        spec_version: 1,
        desired_state: desired,
        status: TaskStatus::new(status, 0),
        attachments: Vec::new(),
    }
}

/// A running task of service `s1` in `slot` on `node`.
pub fn running(id: &str, slot: u64, node: &str) -> Task {
    task(
        id,
        "s1",
        slot,
        Some(node),
        TaskState::Running,
        TaskState::Running,
    )
}

/// `task(..)` that exited with `code` at `at`: Complete for 0, Failed otherwise.
pub fn exited(id: &str, service: &str, slot: u64, node: Option<&str>, code: i32, at: u64) -> Task {
    let state = if code == 0 {
        TaskState::Complete
    } else {
        TaskState::Failed
    };
    let mut t = task(id, service, slot, node, TaskState::Running, state);
    t.status.exit_code = Some(code);
    t.status.timestamp = at;
    t
}

/// Applies `plan` as one batch at `index` and `time`; panics if the store refuses it.
pub fn apply(state: &mut ClusterState, plan: &Plan, index: u64, time: Millis) {
    let batch = Batch {
        ops: plan.ops.clone(),
        time,
    };
    if let Err(e) = state.apply_batch(index, &batch) {
        panic!("plan refused: {e}\n{plan:#?}");
    }
}

/// A state with its next log index and the current time.
pub struct World {
    /// The state.
    pub state: ClusterState,
    /// The time controllers are given.
    pub time: Millis,
}

impl World {
    /// An empty world at time 1_000_000.
    pub fn new() -> World {
        World {
            state: ClusterState::new(),
            time: 1_000_000,
        }
    }

    /// A world holding `ops` (applied as one batch).
    pub fn with(ops: Vec<Op>) -> World {
        let mut w = World::new();
        w.create_ops(ops);
        w
    }

    /// Applies `ops` as the next batch.
    pub fn apply_ops(&mut self, ops: Vec<Op>) {
        self.apply_plan(&Plan {
            ops,
            ..Plan::default()
        });
    }

    /// Same as [`World::apply_ops`] (reads better for set-up).
    pub fn create_ops(&mut self, ops: Vec<Op>) {
        self.apply_ops(ops);
    }

    /// Applies `plan` as the next batch.
    pub fn apply_plan(&mut self, plan: &Plan) {
        let index = self.state.applied_index() + 1;
        apply(&mut self.state, plan, index, self.time);
    }
}

/// Creates for a list of objects.
pub fn creates(nodes: Vec<Node>, services: Vec<Service>, tasks: Vec<Task>) -> Vec<Op> {
    let mut ops: Vec<Op> = nodes.into_iter().map(Op::CreateNode).collect();
    ops.extend(services.into_iter().map(Op::CreateService));
    ops.extend(tasks.into_iter().map(Op::CreateTask));
    ops
}

/// The task ops of a plan, summarized as `(task id or "new:slot@node", desired, status)`.
pub fn summary(plan: &Plan) -> Vec<String> {
    plan.ops
        .iter()
        .map(|op| match op {
            Op::CreateTask(t) => format!(
                "create {}/{}@{} {:?}",
                t.service_id,
                t.slot,
                t.node_id.as_deref().unwrap_or("-"),
                t.status.state
            ),
            Op::UpdateTask { task, .. } => format!(
                "update {} desired={:?} status={:?}@{}",
                task.id,
                task.desired_state,
                task.status.state,
                task.node_id.as_deref().unwrap_or("-")
            ),
            Op::DeleteTask { id } => format!("delete {id}"),
            Op::CreateRestartHistory(h) => format!("history+ {} {:?}", h.key.id(), h.restarts),
            Op::UpdateRestartHistory { history, .. } => {
                format!("history {} {:?}", history.key.id(), history.restarts)
            }
            Op::DeleteRestartHistory { key, .. } => format!("history- {}", key.id()),
            other => format!("{other:?}"),
        })
        .collect()
}

/// Runs `controller` on `world`, applies its plan, and checks that running it again gives no ops.
pub fn check_idempotent(world: &mut World, controller: super::Controller) {
    let mut ids = crate::util::SeqIds::new("x");
    let plan = controller(&world.state, world.time, &mut ids);
    let again = controller(&world.state, world.time, &mut crate::util::SeqIds::new("x"));
    assert_eq!(plan, again, "same state, same plan");
    world.apply_plan(&plan);
    let next = controller(&world.state, world.time, &mut ids);
    assert!(
        next.is_empty(),
        "running on its own output gave ops: {:?}",
        summary(&next)
    );
}

/// What the simulated agent does with a task it is about to start (status before Running) or that runs:
/// None starts it / keeps it running, `Some((state, code))` ends it (Complete or Failed) with that exit code.
pub type Behaviour = dyn Fn(&Task) -> Option<(TaskState, i32)>;

/// The agent, simulated, for one step at `world.time`: on Ready nodes, tasks asked to stop stop, assigned
/// tasks start, and running tasks end when `behave` says so. Returns whether anything changed.
pub fn agent_step(w: &mut World, behave: &Behaviour) -> bool {
    let mut ops = Vec::new();
    for t in w.state.tasks() {
        let node_up = t
            .node_id
            .as_deref()
            .and_then(|n| w.state.node(n))
            .is_some_and(|n| n.status.state == NodeState::Ready);
        if !node_up || t.status.state < TaskState::Assigned || t.status.state.is_terminal() {
            continue;
        }
        let mut status = if t.desired_state >= TaskState::Shutdown {
            TaskStatus::new(TaskState::Shutdown, w.time)
        } else if let Some((state, code)) = behave(t) {
            let mut s = TaskStatus::new(state, w.time);
            s.exit_code = Some(code);
            s
        } else if t.status.state < TaskState::Running {
            TaskStatus::new(TaskState::Running, w.time)
        } else {
            continue;
        };
        if status.state == TaskState::Shutdown {
            status.message = "shutdown".into();
        }
        let mut new = t.clone();
        new.status = status;
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
