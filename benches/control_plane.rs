//! Control-plane benchmark: reconcile + schedule + commit. From a state with N Ready nodes and services
//! totalling T replicas (no tasks yet), run the manager's controllers in the driver's order, applying each
//! plan as one batch, until no controller has anything to do (every task created and assigned). Sizes: 1,000
//! tasks over 10 nodes (baseline) and 10,000 tasks over 100 nodes.
//!
//! - `reconcile_schedule_apply_batch`: the driver's own round (`driver::round`: controllers on what changed,
//!   from the store's touched keys), committing through `Store::apply` (apply, touched keys, broadcast);
//! - `reconcile_schedule_raft_apply`: the same round committing encoded entries through
//!   `StoreStateMachine::apply_entry` (what Raft applies on every manager: encode, decode, apply);
//! - `full_rounds_apply_batch`: the baseline in the same run, every controller over the whole state every round
//!   (what the driver did before it ran on what changed), committing through `ClusterState::apply_batch`.
//!
//! Run: `cargo bench --bench control_plane`. Before divan's table it prints, once per size and way, where one
//! convergence spends its time per controller.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use divan::counter::ItemsCount;
use divan::Bencher;
use swarm::manager::driver::{self, Propose, Rounds};
use swarm::manager::proposer::ProposeError;
use swarm::manager::{Plan, Scope, ScopedController, CONTROLLERS, SCOPED_CONTROLLERS};
use swarm::model::{
    Meta, Node, NodeDescription, NodeResources, NodeSpec, NodeState, NodeStatus, Platform, Service,
    ServiceMode, ServiceSpec, TaskSpec, TaskState,
};
use swarm::store::{Batch, ClusterState, Op, Store, StoreStateMachine};
use swarm::util::{Millis, SeqIds};

const T0: u64 = 1_700_000_000_000;

/// (label, nodes, services, replicas per service)
const SIZES: &[(&str, usize, usize, u64)] = &[
    ("1k_tasks_10_nodes", 10, 10, 100),
    ("10k_tasks_100_nodes", 100, 100, 100),
];

fn size(label: &str) -> (usize, usize, u64) {
    let (_, n, s, r) = SIZES
        .iter()
        .find(|(l, ..)| *l == label)
        .expect("known size");
    (*n, *s, *r)
}

fn node(id: String) -> Node {
    Node {
        id: id.clone(),
        meta: Meta::default(),
        description: NodeDescription {
            hostname: id,
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

fn service(i: usize, replicas: u64) -> Service {
    let mut task = TaskSpec::default();
    task.container.image = format!("img/s{i}");
    task.container.args = vec![format!("s{i}")];
    Service {
        id: format!("svc{i:04}"),
        meta: Meta::default(),
        spec: ServiceSpec {
            name: format!("s{i:04}"),
            task,
            mode: ServiceMode::Replicated { replicas },
            ..ServiceSpec::default()
        },
        spec_version: 1,
        previous_spec: None,
        update_status: None,
        virtual_ips: Vec::new(),
    }
}

/// The ops that set the cluster up: nodes, then services.
fn setup_ops(nodes: usize, services: usize, replicas: u64) -> Vec<Op> {
    let mut ops: Vec<Op> = (0..nodes)
        .map(|i| Op::CreateNode(node(format!("node{i:04}"))))
        .collect();
    ops.extend((0..services).map(|i| Op::CreateService(service(i, replicas))));
    ops
}

fn initial_state(label: &str) -> ClusterState {
    let (n, s, r) = size(label);
    let mut state = ClusterState::new();
    state
        .apply_batch(
            1,
            &Batch {
                ops: setup_ops(n, s, r),
                time: T0,
            },
        )
        .expect("setup applies");
    state
}

/// Runs the controllers until none has ops, committing each plan with `commit`. Returns per-controller
/// (plan time, commit time, ops).
fn converge(
    mut view: impl FnMut(&mut dyn FnMut(&ClusterState)),
    mut commit: impl FnMut(u64, &Batch),
    mut index: u64,
) -> BTreeMap<&'static str, (Duration, Duration, usize)> {
    let mut ids = SeqIds::new("t");
    let mut stats: BTreeMap<&'static str, (Duration, Duration, usize)> = BTreeMap::new();
    let now = T0 + 1000;
    for _round in 0..100 {
        let mut changed = false;
        for (name, controller) in CONTROLLERS {
            let started = Instant::now();
            let mut plan = None;
            view(&mut |s| plan = Some(controller(s, now, &mut ids)));
            let plan = plan.expect("view ran");
            let planned = started.elapsed();
            let entry = stats.entry(name).or_default();
            entry.0 += planned;
            if plan.ops.is_empty() {
                continue;
            }
            changed = true;
            index += 1;
            entry.2 += plan.ops.len();
            let started = Instant::now();
            commit(
                index,
                &Batch {
                    ops: plan.ops,
                    time: now,
                },
            );
            entry.1 += started.elapsed();
        }
        if !changed {
            return stats;
        }
    }
    panic!("did not converge in 100 rounds");
}

fn converge_state(state: &mut ClusterState) {
    let cell = std::cell::RefCell::new(state);
    converge(
        |f| f(&cell.borrow()),
        |index, batch| {
            cell.borrow_mut()
                .apply_batch(index, batch)
                .expect("plan applies");
        },
        1,
    );
}

type Stats = BTreeMap<&'static str, (Duration, Duration, usize)>;

/// The driver's round over a store, committing with `commit`; records per-controller times.
struct Bench<'a> {
    store: &'a Store,
    commit: &'a dyn Fn(u64, &Batch),
    index: u64,
    ids: SeqIds,
    stats: Stats,
}

impl Propose for Bench<'_> {
    fn now(&self) -> Millis {
        T0 + 1000
    }

    fn store(&self) -> &Store {
        self.store
    }

    fn plan(&mut self, controller: ScopedController, scope: &Scope, now: Millis) -> Plan {
        let name = SCOPED_CONTROLLERS
            .iter()
            .find(|(_, c)| *c as usize == controller as usize)
            .map_or("?", |(n, _)| *n);
        let started = Instant::now();
        let ids = &mut self.ids;
        let plan = self.store.view(|s| controller(s, scope, now, ids));
        self.stats.entry(name).or_default().0 += started.elapsed();
        plan
    }

    fn propose(
        &mut self,
        name: &'static str,
        ops: Vec<Op>,
    ) -> impl std::future::Future<Output = Result<(), ProposeError>> + Send {
        self.index += 1;
        let started = Instant::now();
        let entry = self.stats.entry(name).or_default();
        entry.2 += ops.len();
        (self.commit)(
            self.index,
            &Batch {
                ops,
                time: T0 + 1000,
            },
        );
        entry.1 += started.elapsed();
        std::future::ready(Ok(()))
    }
}

/// Runs the driver's rounds until one applies nothing.
fn converge_dirty(store: &Store, commit: &dyn Fn(u64, &Batch)) -> Stats {
    let mut b = Bench {
        store,
        commit,
        index: store.view(|s| s.applied_index()),
        ids: SeqIds::new("t"),
        stats: Stats::new(),
    };
    let mut rounds = Rounds::without_periodic_resync();
    for _ in 0..200 {
        let r = futures::executor::block_on(driver::round(&mut b, &mut rounds));
        if r.applied == 0 {
            return b.stats;
        }
    }
    panic!("did not converge in 200 rounds");
}

fn converge_store(store: &Store) -> Stats {
    converge_dirty(store, &|index, batch| {
        store.apply(index, batch).expect("plan applies");
    })
}

fn converge_raft(machine: &StoreStateMachine) -> Stats {
    converge_dirty(machine.store(), &|index, batch| {
        let bytes = batch.encode().expect("batch encodes");
        machine.apply_entry(index, &bytes).expect("entry applies");
    })
}

fn check_converged(state: &ClusterState, label: &str) {
    let (n, s, r) = size(label);
    let tasks: Vec<_> = state.tasks().collect();
    assert_eq!(tasks.len() as u64, s as u64 * r, "{label}: tasks created");
    assert!(
        tasks
            .iter()
            .all(|t| t.status.state == TaskState::Assigned && t.node_id.is_some()),
        "{label}: every task assigned"
    );
    let per_node = (s as u64 * r) as usize / n;
    for i in 0..n {
        let c = state.tasks_on_node(&format!("node{i:04}")).count();
        assert!(
            c.abs_diff(per_node) <= 1,
            "{label}: spread {c} vs {per_node}"
        );
    }
}

/// Manager-side convergence by the driver's rounds (on what changed), committing through `Store::apply`.
#[divan::bench(args = ["1k_tasks_10_nodes", "10k_tasks_100_nodes"], sample_count = 3, sample_size = 1)]
fn reconcile_schedule_apply_batch(bencher: Bencher, label: &str) {
    let (_, s, r) = size(label);
    let initial = initial_state(label);
    bencher
        .counter(ItemsCount::new(s as u64 * r))
        .with_inputs(|| Store::new(initial.clone()))
        .bench_local_values(|store| {
            converge_store(&store);
            store
        });
}

/// Manager-side convergence by the driver's rounds, committing encoded entries through
/// `StoreStateMachine::apply_entry` (the Raft apply path: encode, decode, apply under the store's lock,
/// touched keys, broadcast events).
#[divan::bench(args = ["1k_tasks_10_nodes", "10k_tasks_100_nodes"], sample_count = 3, sample_size = 1)]
fn reconcile_schedule_raft_apply(bencher: Bencher, label: &str) {
    let (_, s, r) = size(label);
    let initial = initial_state(label);
    bencher
        .counter(ItemsCount::new(s as u64 * r))
        .with_inputs(|| StoreStateMachine::new(Store::new(initial.clone())))
        .bench_local_values(|machine| {
            converge_raft(&machine);
            machine
        });
}

/// The baseline: every controller over the whole state every round, committing through
/// `ClusterState::apply_batch`.
#[divan::bench(args = ["1k_tasks_10_nodes", "10k_tasks_100_nodes"], sample_count = 3, sample_size = 1)]
fn full_rounds_apply_batch(bencher: Bencher, label: &str) {
    let (_, s, r) = size(label);
    let initial = initial_state(label);
    bencher
        .counter(ItemsCount::new(s as u64 * r))
        .with_inputs(|| initial.clone())
        .bench_local_values(|mut state| {
            converge_state(&mut state);
            state
        });
}

fn print_stats(what: &str, label: &str, state: &ClusterState, total: Duration, stats: &Stats) {
    check_converged(state, label);
    let tasks = state.tasks().count();
    println!(
        "{label} ({what}): {tasks} tasks converged in {total:.2?} ({:.0} tasks/s)",
        tasks as f64 / total.as_secs_f64()
    );
    for (name, (plan, commit, ops)) in stats {
        println!("  {name:<10} plan {plan:>10.2?}  commit {commit:>10.2?}  ops {ops}");
    }
}

fn main() {
    // One instrumented convergence per size and way: checks the result and shows where the time goes.
    for (label, ..) in SIZES {
        let store = Store::new(initial_state(label));
        let started = Instant::now();
        let stats = converge_store(&store);
        let total = started.elapsed();
        store.view(|s| print_stats("driver rounds", label, s, total, &stats));

        let mut state = initial_state(label);
        let started = Instant::now();
        let cell = std::cell::RefCell::new(&mut state);
        let stats = converge(
            |f| f(&cell.borrow()),
            |index, batch| {
                cell.borrow_mut()
                    .apply_batch(index, batch)
                    .expect("plan applies");
            },
            1,
        );
        let total = started.elapsed();
        print_stats("full rounds", label, &state, total, &stats);
    }
    divan::main();
}
