//! The simulated cluster: one `Store` (batches applied directly at increasing log indexes, no Raft), the
//! manager's controllers run by the driver's own round (`driver::round`, over this store) on a `ManualClock`,
//! and N nodes each with a real `agent::Worker` over its own `FakeExecutor`. Assignments go to the workers
//! through the dispatcher's and the agent's own functions (`assignments_for`, `decode_assignments`), status
//! reports come back through the dispatcher's `status_ops` (only forward, only from the task's node, stale
//! ones ignored). The harness has no copy of production rules. Nothing sleeps on wall time: the workers' tokio
//! tasks progress by `yield_now` on the test's current-thread runtime.
//!
//! Every applied batch is checked against the invariants (see [`Sim::check_invariants`]).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use swarm::agent::{StatusReport, Worker};
use swarm::exec::fake::{FakeExecutor, HealthScript, Match, Outcome};
use swarm::exec::RuntimeState;
use swarm::manager::dispatcher::{assignments_for, decode_assignments, status_ops};
use swarm::manager::driver::{self, Propose, Rounds};
use swarm::manager::proposer::ProposeError;
use swarm::manager::{Plan, Scope, ScopedController};
use swarm::model::{
    FileObjectSpec, Meta, Node, NodeAvailability, NodeDescription, NodeResources, NodeSpec,
    NodeState, NodeStatus, Platform, Secret, SecretData, Service, ServiceMode, ServiceSpec, Task,
    TaskSpec, TaskState, UpdateOrder,
};
use swarm::secrets::DataKey;
use swarm::store::ClusterState;
use swarm::store::{Batch, BatchRejected, Op, Store};
use swarm::util::{Clock, IdSource, ManualClock, Millis, SeqIds};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

/// The manual clock's start (unix millis).
pub const T0: Millis = 1_700_000_000_000;

/// A check run on the state after every applied batch (see [`Sim::observe`]).
pub type Observer = Box<dyn Fn(&ClusterState) -> Result<(), String>>;

/// Rounds of controllers + agents within one step before the step is declared not to settle.
const MAX_ROUNDS: usize = 60;

/// One simulated node: a worker over a fake executor, and whether it can reach the manager.
pub struct SimNode {
    pub exec: FakeExecutor,
    worker: Worker,
    reports: UnboundedReceiver<StatusReport>,
    /// False while partitioned: no assignments in, no reports out (the worker keeps its tasks).
    pub connected: bool,
    /// Reports made while partitioned, latest per task, sent after reconnecting (as the session does).
    pending: BTreeMap<String, StatusReport>,
}

/// The whole simulated cluster.
pub struct Sim {
    pub name: String,
    pub store: Store,
    pub clock: ManualClock,
    ids: SeqIds,
    key: DataKey,
    pub nodes: BTreeMap<String, SimNode>,
    rules: Vec<(Match, Outcome)>,
    health_rules: Vec<(Match, HealthScript)>,
    observers: Vec<Observer>,
    /// Whether the test runs on paused tokio time (`start_paused`): each step then also advances it, which
    /// drives the agents' health checks.
    tokio_time: bool,
    index: u64,
    pub steps: u64,
    /// The highest (desired, status) seen per task id: neither may go backwards.
    seen: HashMap<String, (TaskState, TaskState)>,
    /// Plans the store refused (a controller computed them on the latest state: should not happen).
    pub rejected: Vec<String>,
    /// The driver's memory between rounds (backoff, what changed, pending scopes), kept as the driver keeps it.
    rounds: Rounds,
}

/// A Ready, Active worker node.
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

/// A service `name` (its id is `svc-{name}`) in `mode`, runnable by the agent, restart delay 0.
pub fn service(name: &str, mode: ServiceMode) -> Service {
    let mut task = TaskSpec::default();
    task.container.image = format!("img/{name}");
    task.container.args = vec![name.into(), "--serve".into()];
    task.restart.delay = Duration::ZERO;
    Service {
        id: format!("svc-{name}"),
        meta: Meta::default(),
        spec: ServiceSpec {
            name: name.into(),
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

impl Sim {
    /// A cluster with `n` Ready, Active worker nodes `n1..=n{n}`. `name` prefixes the ids (the "seed").
    pub fn new(name: &str, n: usize) -> Sim {
        let prefix = format!("{name}-");
        println!("sim {name}: ids {prefix}NNNNNN, clock starts at {T0}, {n} nodes");
        let mut sim = Sim {
            name: name.into(),
            store: Store::default(),
            clock: ManualClock::new(T0),
            ids: SeqIds::new(&prefix),
            key: DataKey::from_bytes([7; 32]),
            nodes: BTreeMap::new(),
            rules: Vec::new(),
            health_rules: Vec::new(),
            observers: Vec::new(),
            tokio_time: false,
            index: 0,
            steps: 0,
            seen: HashMap::new(),
            rejected: Vec::new(),
            // only what changed, after the first round: a change the driver misses shows as a test failure
            // (`check_nothing_missed`), not hidden by the periodic full resync
            rounds: Rounds::without_periodic_resync(),
        };
        for i in 1..=n {
            sim.add_node(&format!("n{i}"));
        }
        sim
    }

    pub fn now(&self) -> Millis {
        self.clock.now()
    }

    /// Registers a node and starts its agent.
    pub fn add_node(&mut self, id: &str) {
        let exec = FakeExecutor::new();
        for (m, o) in &self.rules {
            exec.script(m.clone(), o.clone());
        }
        for (m, h) in &self.health_rules {
            exec.script_health(m.clone(), h.clone());
        }
        let (tx, reports) = unbounded_channel();
        let worker = Worker::new(Arc::new(exec.clone()), Arc::new(self.clock.clone()), tx);
        self.nodes.insert(
            id.into(),
            SimNode {
                exec,
                worker,
                reports,
                connected: true,
                pending: BTreeMap::new(),
            },
        );
        self.apply(vec![Op::CreateNode(node(id))]);
    }

    /// Scripts an outcome on every node (present and future) for tasks created afterwards.
    pub fn script(&mut self, when: Match, outcome: Outcome) {
        for n in self.nodes.values() {
            n.exec.script(when.clone(), outcome.clone());
        }
        self.rules.push((when, outcome));
    }

    /// Scripts health-check answers on every node (present and future) for tasks created afterwards.
    pub fn script_health(&mut self, when: Match, script: HealthScript) {
        for n in self.nodes.values() {
            n.exec.script_health(when.clone(), script.clone());
        }
        self.health_rules.push((when, script));
    }

    /// Declares that the test runs on paused tokio time (`#[tokio::test(start_paused = true)]`): every step
    /// then advances it by its `dt` too, so the agents' health checks run on simulated time.
    pub fn use_tokio_time(&mut self) {
        self.tokio_time = true;
    }

    /// Adds a check run on the state after every applied batch from now on; an `Err` fails the test.
    pub fn observe(&mut self, check: impl Fn(&ClusterState) -> Result<(), String> + 'static) {
        self.observers.push(Box::new(check));
    }

    /// Applies `ops` as the next log entry; returns whether the store took it.
    pub fn try_apply(&mut self, ops: Vec<Op>) -> Result<(), String> {
        self.try_apply_batch(ops).map_err(|e| e.to_string())
    }

    fn try_apply_batch(&mut self, ops: Vec<Op>) -> Result<(), BatchRejected> {
        let batch = Batch {
            ops,
            time: self.now(),
        };
        let index = self.index + 1;
        match self.store.apply(index, &batch) {
            Ok(_) => {
                self.index = index;
                self.check_monotonic();
                for o in &self.observers {
                    if let Err(e) = self.store.view(|s| o(s)) {
                        self.fail(&format!("observer: {e}"));
                    }
                }
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Applies `ops` as the next log entry; fails the test (with a dump) if the store refuses it.
    pub fn apply(&mut self, ops: Vec<Op>) {
        if let Err(e) = self.try_apply(ops) {
            self.fail(&format!("batch refused: {e}"));
        }
    }

    pub fn create_service(&mut self, s: Service) {
        self.apply(vec![Op::CreateService(s)]);
    }

    /// Changes a service (bumping its spec version) through `f`.
    pub fn update_service(&mut self, name: &str, f: impl FnOnce(&mut Service)) {
        let mut s = self
            .store
            .view(|st| st.service_by_name(name).cloned())
            .expect("service exists");
        let v = s.meta.version;
        f(&mut s);
        s.spec_version += 1;
        self.apply(vec![Op::UpdateService {
            service: s,
            expected_version: v,
        }]);
    }

    /// Deploys a changed spec of service `name` the way `stack deploy` does ([`swarm::manager::deploy::update_service`]):
    /// a changed task template bumps `spec_version`, keeps the old spec as `previous_spec` and starts a
    /// rolling update (`Updating` at now). Fails the test when `f` changes nothing.
    pub fn deploy(&mut self, name: &str, f: impl FnOnce(&mut ServiceSpec)) {
        let existing = self
            .store
            .view(|st| st.service_by_name(name).cloned())
            .expect("service exists");
        let mut spec = existing.spec.clone();
        f(&mut spec);
        let (op, _) = swarm::manager::deploy::update_service(&existing, spec, self.now())
            .unwrap_or_else(|| self.fail(&format!("deploy of {name} changes nothing")));
        self.apply(vec![op]);
    }

    /// Stores version `version` of secret `name` with `data` (sealed with the cluster key) under id `id`,
    /// labelled as `deploy.rs` labels a changed secret's new version.
    pub fn create_secret(&mut self, id: &str, name: &str, version: u64, data: &[u8]) {
        let secret = Secret {
            id: id.into(),
            meta: Meta::default(),
            spec: FileObjectSpec {
                name: name.into(),
                labels: BTreeMap::from([(
                    swarm::model::OBJECT_VERSION_LABEL.to_string(),
                    version.to_string(),
                )]),
                data: SecretData(self.key.seal(data)),
            },
        };
        self.apply(vec![Op::CreateSecret(secret)]);
    }

    /// The service called `name`.
    pub fn service(&self, name: &str) -> Service {
        self.store
            .view(|st| st.service_by_name(name).cloned())
            .unwrap_or_else(|| self.fail(&format!("no service {name}")))
    }

    pub fn scale(&mut self, name: &str, replicas: u64) {
        self.update_service(name, |s| s.spec.mode = ServiceMode::Replicated { replicas });
    }

    /// Changes a node object through `f` (availability, status).
    pub fn update_node(&mut self, id: &str, f: impl FnOnce(&mut Node)) {
        let mut n = self
            .store
            .view(|st| st.node(id).cloned())
            .expect("node exists");
        let v = n.meta.version;
        f(&mut n);
        self.apply(vec![Op::UpdateNode {
            node: n,
            expected_version: v,
        }]);
    }

    pub fn set_availability(&mut self, id: &str, a: NodeAvailability) {
        self.update_node(id, |n| n.spec.availability = a);
    }

    /// The node is lost (what `nodes.rs` does when heartbeats stop): status Down, and the sim stops talking to
    /// its agent, which keeps running its tasks.
    pub fn node_down(&mut self, id: &str) {
        self.nodes.get_mut(id).expect("node").connected = false;
        self.update_node(id, |n| n.status.state = NodeState::Down);
    }

    /// The node comes back: Ready, connected again (it gets its full assignments at once).
    pub fn node_up(&mut self, id: &str) {
        self.nodes.get_mut(id).expect("node").connected = true;
        self.update_node(id, |n| n.status.state = NodeState::Ready);
    }

    /// Lets the workers' tokio tasks run until nothing more happens; returns the reports they produced.
    async fn settle_agents(&mut self) -> Vec<(String, StatusReport)> {
        let mut out = Vec::new();
        let mut quiet = 0;
        while quiet < 3 {
            for _ in 0..16 {
                tokio::task::yield_now().await;
            }
            let before = out.len();
            for (id, n) in self.nodes.iter_mut() {
                while let Ok(r) = n.reports.try_recv() {
                    n.pending.insert(r.task_id.clone(), r);
                }
                if n.connected {
                    out.extend(
                        std::mem::take(&mut n.pending)
                            .into_values()
                            .map(|r| (id.clone(), r)),
                    );
                }
            }
            quiet = if out.len() == before { quiet + 1 } else { 0 };
        }
        out
    }

    /// Applies reports as the dispatcher does: only from the task's node, only forward, stale ones ignored.
    fn apply_reports(&mut self, reports: Vec<(String, StatusReport)>) -> bool {
        // latest per task, like the session's pending map
        let mut latest: BTreeMap<String, (String, StatusReport)> = BTreeMap::new();
        for (node, r) in reports {
            latest.insert(r.task_id.clone(), (node, r));
        }
        let ops: Vec<Op> = self.store.view(|s| {
            latest
                .values()
                .flat_map(|(node, r)| status_ops(s, node, &[(r.task_id.clone(), r.status.clone())]))
                .collect()
        });
        if ops.is_empty() {
            return false;
        }
        self.apply(ops);
        true
    }

    /// One driver round: every controller on the latest state, its plan applied at once. Returns whether
    /// anything changed.
    async fn run_controllers(&mut self) -> bool {
        let mut rounds = std::mem::take(&mut self.rounds);
        let round = driver::round(self, &mut rounds).await;
        self.rounds = rounds;
        round.applied > 0
    }

    /// Sends every connected node its complete assignments.
    async fn deliver(&mut self) {
        for (id, n) in &self.nodes {
            if !n.connected {
                continue;
            }
            let msg = self.store.view(|s| assignments_for(s, id, &self.key));
            let a = decode_assignments(id, msg).expect("assignments decode");
            if let Err(e) = n.worker.assign(a).await {
                panic!("assign on {id}: {e}");
            }
        }
    }

    /// Advances time by `dt` (manager clock and every executor), then runs controllers, assignments and
    /// reports until nothing changes.
    pub async fn step(&mut self, dt: Duration) {
        self.steps += 1;
        self.clock.advance(dt);
        for n in self.nodes.values() {
            n.exec.advance(dt);
        }
        if self.tokio_time {
            tokio::time::advance(dt).await;
        }
        for _ in 0..MAX_ROUNDS {
            let reports = self.settle_agents().await;
            let mut changed = self.apply_reports(reports);
            changed |= self.run_controllers().await;
            self.deliver().await;
            let reports = self.settle_agents().await;
            changed |= self.apply_reports(reports);
            if !changed {
                self.check_replicas();
                self.check_nothing_missed();
                return;
            }
        }
        self.fail(&format!("step did not settle in {MAX_ROUNDS} rounds"));
    }

    /// Steps by `dt` until `pred` holds; fails with a dump after `max_steps`.
    pub async fn run_until(
        &mut self,
        what: &str,
        dt: Duration,
        max_steps: usize,
        pred: impl Fn(&Sim) -> bool,
    ) {
        for _ in 0..max_steps {
            if pred(self) {
                return;
            }
            self.step(dt).await;
        }
        if !pred(self) {
            self.fail(&format!("not reached after {max_steps} steps: {what}"));
        }
    }

    // ---- queries ----

    pub fn tasks(&self) -> Vec<Task> {
        self.store.view(|s| s.tasks().cloned().collect())
    }

    pub fn tasks_of(&self, name: &str) -> Vec<Task> {
        self.store.view(|s| {
            let Some(svc) = s.service_by_name(name) else {
                return Vec::new();
            };
            s.tasks_of_service(&svc.id).cloned().collect()
        })
    }

    /// Tasks of the service the manager sees running and wants running.
    pub fn running(&self, name: &str) -> Vec<Task> {
        self.tasks_of(name)
            .into_iter()
            .filter(|t| {
                t.status.state == TaskState::Running && t.desired_state == TaskState::Running
            })
            .collect()
    }

    /// Running tasks of the service per node (every node listed).
    pub fn running_per_node(&self, name: &str) -> Vec<(String, usize)> {
        let running = self.running(name);
        self.nodes
            .keys()
            .map(|n| {
                let c = running
                    .iter()
                    .filter(|t| t.node_id.as_deref() == Some(n))
                    .count();
                (n.clone(), c)
            })
            .collect()
    }

    /// Runtime tasks that are running on node executors.
    pub fn runtime_running(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (id, n) in &self.nodes {
            for (task, st) in n.exec.states() {
                if st == RuntimeState::Running {
                    out.push((id.clone(), task));
                }
            }
        }
        out
    }

    /// The runtime matches the store: every task running on an executor is one the manager wants running on
    /// that node and sees running, and vice versa.
    pub fn runtime_matches_store(&self) -> bool {
        let mut runtime = self.runtime_running();
        runtime.sort();
        let mut store: Vec<(String, String)> = self
            .tasks()
            .into_iter()
            .filter(|t| {
                t.status.state == TaskState::Running && t.desired_state == TaskState::Running
            })
            .filter_map(|t| Some((t.node_id.clone()?, t.id)))
            .collect();
        store.sort();
        runtime == store
    }

    // ---- invariants and failure ----

    /// Per replicated service, at most `replicas` non-terminal tasks with desired Running (plus the
    /// parallelism of a start-first update or rollback, whose new tasks start before the old ones stop).
    /// Checked after every controller batch and at the end of every step (not right after a user's
    /// scale-down: that write itself makes the count exceed the new `replicas` until the orchestrator's next
    /// plan).
    /// Once a step settled on what changed, every controller run on everything has nothing to do either
    /// (controllers backing off after a refused plan aside): the driver's dirty scopes missed nothing.
    fn check_nothing_missed(&self) {
        let now = self.clock.now();
        let mut ids = SeqIds::new("check-");
        let missed: Vec<String> = self.store.view(|s| {
            swarm::manager::CONTROLLERS
                .iter()
                .filter(|(name, _)| self.rounds.backoff.waiting(name, now).is_none())
                .filter_map(|(name, controller)| {
                    let plan = controller(s, now, &mut ids);
                    (!plan.ops.is_empty()).then(|| format!("{name}: {:?}", plan.ops))
                })
                .collect()
        });
        if !missed.is_empty() {
            self.fail(&format!(
                "settled on the dirty scopes, but a full run still has work: {missed:#?}"
            ));
        }
    }

    fn check_replicas(&self) {
        let (services, tasks, draining) = self.store.view(|s| {
            (
                s.services().cloned().collect::<Vec<_>>(),
                s.tasks().cloned().collect::<Vec<_>>(),
                s.nodes()
                    .filter(|n| {
                        n.spec.availability == swarm::model::NodeAvailability::Drain
                            && n.status.state == swarm::model::NodeState::Ready
                    })
                    .map(|n| n.id.clone())
                    .collect::<Vec<_>>(),
            )
        });
        for svc in &services {
            if let ServiceMode::Replicated { replicas } = svc.spec.mode {
                let live = tasks
                    .iter()
                    .filter(|t| {
                        t.service_id == svc.id
                            && t.desired_state == TaskState::Running
                            && !t.status.state.is_terminal()
                    })
                    .count() as u64;
                let surge = |c: &swarm::model::UpdateConfig| match (c.order, c.parallelism) {
                    (UpdateOrder::StartFirst, 0) => replicas,
                    (UpdateOrder::StartFirst, p) => p.min(replicas),
                    (UpdateOrder::StopFirst, _) => 0,
                };
                let slack = if svc.update_status.is_some() {
                    surge(&svc.spec.update).max(surge(&svc.spec.rollback))
                } else {
                    0
                };
                // a drain moves start-first: tasks still running on a draining node, at most parallelism of them
                let on_draining = tasks
                    .iter()
                    .filter(|t| {
                        t.service_id == svc.id
                            && t.desired_state == TaskState::Running
                            && t.node_id.as_ref().is_some_and(|n| draining.contains(n))
                    })
                    .count() as u64;
                let drain = match svc.spec.update.parallelism {
                    0 => on_draining,
                    p => on_draining.min(p),
                };
                if live > replicas + slack + drain {
                    self.fail(&format!(
                        "invariant: service {} has {live} live tasks with desired Running, replicas {replicas} (+{slack} update surge, +{drain} moving off draining nodes)",
                        svc.spec.name
                    ));
                }
            }
        }
    }

    /// No task's desired state or observed state moves backwards (also across deletes: ids are not reused).
    /// Checked after every applied batch.
    fn check_monotonic(&mut self) {
        let tasks: Vec<Task> = self.store.view(|s| s.tasks().cloned().collect());
        for t in &tasks {
            let now = (t.desired_state, t.status.state);
            if let Some(&(d, s)) = self.seen.get(&t.id) {
                if now.0 < d || now.1 < s {
                    self.fail(&format!(
                        "invariant: task {} went backwards: desired {d:?}->{:?}, status {s:?}->{:?}",
                        t.id, now.0, now.1
                    ));
                }
            }
            self.seen.insert(t.id.clone(), now);
        }
    }

    /// A readable dump of the cluster.
    pub fn dump(&self) -> String {
        let mut out = String::new();
        let now = self.now();
        let _ = writeln!(
            out,
            "=== sim {} at t0+{}ms, step {}, log index {} ===",
            self.name,
            now - T0,
            self.steps,
            self.index
        );
        self.store.view(|s| {
            for n in s.nodes() {
                let _ = writeln!(
                    out,
                    "node {} {:?} {:?} connected={}",
                    n.id,
                    n.status.state,
                    n.spec.availability,
                    self.nodes.get(&n.id).is_some_and(|x| x.connected)
                );
            }
            for svc in s.services() {
                let _ = writeln!(
                    out,
                    "service {} ({}) {:?} v{}",
                    svc.spec.name, svc.id, svc.spec.mode, svc.spec_version
                );
                let mut tasks: Vec<&Task> = s.tasks_of_service(&svc.id).collect();
                tasks.sort_by_key(|t| (t.slot, t.meta.created_at, t.id.clone()));
                for t in tasks {
                    let _ = writeln!(
                        out,
                        "  task {} slot {} node {} desired {:?} status {:?} exit {:?} at t0+{}ms created t0+{}ms",
                        t.id,
                        t.slot,
                        t.node_id.as_deref().unwrap_or("-"),
                        t.desired_state,
                        t.status.state,
                        t.status.exit_code,
                        t.status.timestamp.saturating_sub(T0),
                        t.meta.created_at.saturating_sub(T0),
                    );
                }
            }
        });
        for (id, n) in &self.nodes {
            let _ = writeln!(out, "runtime {id}: {:?}", n.exec.states());
        }
        if !self.rejected.is_empty() {
            let _ = writeln!(out, "rejected plans: {:#?}", self.rejected);
        }
        out
    }

    pub fn fail(&self, why: &str) -> ! {
        panic!("{why}\n{}", self.dump());
    }
}

/// The driver's round over the simulated store: plans on the latest state, batches applied at the next
/// index, a refused one recorded in [`Sim::rejected`].
impl Propose for Sim {
    fn now(&self) -> Millis {
        self.clock.now()
    }

    fn store(&self) -> &Store {
        &self.store
    }

    fn plan(&mut self, controller: ScopedController, scope: &Scope, now: Millis) -> Plan {
        let ids: &mut dyn IdSource = &mut self.ids;
        self.store.view(|s| controller(s, scope, now, ids))
    }

    fn propose(
        &mut self,
        name: &'static str,
        ops: Vec<Op>,
    ) -> impl std::future::Future<Output = Result<(), ProposeError>> + Send {
        let summary = format!("{name}: {ops:?}");
        let result = match self.try_apply_batch(ops) {
            Ok(()) => {
                self.check_replicas();
                Ok(())
            }
            Err(e) => {
                self.rejected.push(format!("{e} <- {summary}"));
                Err(ProposeError::Rejected(e))
            }
        };
        std::future::ready(result)
    }
}
