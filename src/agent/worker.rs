//! The worker: converges this node's runtime to its assignments, level-triggered (DESIGN
//! invariant 5). Every [`Worker::assign`] carries the complete set of the node's tasks; the
//! worker compares it with its runners and with what the executor still has (after a daemon
//! restart), adopts what still runs instead of restarting it, starts what is missing, stops and
//! removes what is no longer wanted, and reports every observed state through a channel.
//!
//! Must not: talk to the dispatcher (the session forwards [`StatusReport`]s and calls `assign`),
//! write desired state, or hold its runner map across an await.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use thiserror::Error;
use tokio::sync::mpsc::UnboundedSender;

use crate::exec::{ExecError, Executor, LogLines, LogOptions, ProcessSpec, TaskInfo, LOST_MESSAGE};
use crate::model::{PortConfig, Task, TaskState};
use crate::util::Clock;

use super::health::{health_check, HealthCheck};
use super::report::{Detail, Reporter, StatusReport};
use super::runner::{self, Start};
use super::shared::{Desired, Shared};
use super::spec::{process_spec, SpecError, TaskContext};

/// Everything assigned to this node: always the complete set (each call replaces the last).
/// `Debug` lists secret and config ids, never their data.
#[derive(Clone, Default)]
pub struct Assignments {
    /// The node's tasks, with their desired state and last status known to the manager.
    pub tasks: Vec<Task>,
    /// Secret data by secret id.
    pub secrets: HashMap<String, Vec<u8>>,
    /// Config data by config id.
    pub configs: HashMap<String, Vec<u8>>,
    /// Service names by service id.
    pub service_names: HashMap<String, String>,
    /// Published ports by service id (services without any are absent).
    pub service_ports: HashMap<String, Vec<PortConfig>>,
    /// This node's id.
    pub node_id: String,
    /// This node's hostname.
    pub node_hostname: String,
    /// The node's view of the cluster's networks (what the node's network layer plumbs).
    pub network_map: Arc<crate::model::netmap::NetworkMap>,
}

impl fmt::Debug for Assignments {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut secrets: Vec<&String> = self.secrets.keys().collect();
        secrets.sort();
        let mut configs: Vec<&String> = self.configs.keys().collect();
        configs.sort();
        f.debug_struct("Assignments")
            .field("tasks", &self.tasks)
            .field("secrets", &secrets)
            .field("configs", &configs)
            .field("service_names", &self.service_names)
            .field("service_ports", &self.service_ports)
            .field("node_id", &self.node_id)
            .field("node_hostname", &self.node_hostname)
            .field("network_map", &self.network_map)
            .finish()
    }
}

/// Errors of [`Worker::assign`].
#[derive(Debug, Error)]
pub enum WorkerError {
    /// The executor could not list its tasks; tasks already known were updated, nothing new
    /// was started or removed. Call `assign` again later.
    #[error("listing the runtime's tasks: {0}")]
    List(#[source] ExecError),
}

/// Converges the local runtime to the node's assignments. Dropping it abandons the runners but
/// leaves the tasks running (like a daemon crash); a new worker adopts them.
pub struct Worker {
    shared: Arc<Shared>,
    /// Serializes `assign` and holds the last assignments, for `resync`.
    assigning: tokio::sync::Mutex<Option<Arc<Assignments>>>,
    /// Where task runners run (`None`: the caller's runtime).
    runtime: Option<tokio::runtime::Handle>,
    /// The node is leaving the swarm: every later assignment set is taken as empty.
    leaving: std::sync::atomic::AtomicBool,
    /// The latest network map, for the node's network layer ([`Worker::network_maps`]).
    network_map: tokio::sync::watch::Sender<crate::model::netmap::NetworkMap>,
}

impl Worker {
    /// A worker driving `executor`, stamping reports with `clock` and sending them to `reports`.
    pub fn new(
        executor: Arc<dyn Executor>,
        clock: Arc<dyn Clock>,
        reports: UnboundedSender<StatusReport>,
    ) -> Self {
        Worker {
            shared: Arc::new(Shared::new(executor, Reporter::new(clock, reports))),
            assigning: tokio::sync::Mutex::new(None),
            runtime: None,
            leaving: std::sync::atomic::AtomicBool::new(false),
            network_map: tokio::sync::watch::Sender::new(Default::default()),
        }
    }

    /// Publishes the network maps of the assignments on `tx` (the node's network layer's channel) instead of a
    /// channel of its own: a map is on `tx` before the tasks of the same assignments start or stop.
    pub fn with_network_maps(
        mut self,
        tx: tokio::sync::watch::Sender<crate::model::netmap::NetworkMap>,
    ) -> Self {
        self.network_map = tx;
        self
    }

    /// The node's network map as the managers send it, newest first: what the node's network layer subscribes
    /// to (it sees a new value before the tasks of the same assignments are started or stopped).
    pub fn network_maps(&self) -> tokio::sync::watch::Receiver<crate::model::netmap::NetworkMap> {
        self.network_map.subscribe()
    }

    /// Stops every task for good (the node leaves the swarm: later assignment sets are taken as empty) and
    /// waits, up to `timeout`, until the runtime holds none; false when some were still there.
    pub async fn stop_all(&self, timeout: std::time::Duration) -> bool {
        self.leaving
            .store(true, std::sync::atomic::Ordering::SeqCst);
        if let Err(e) = self.assign(Assignments::default()).await {
            tracing::warn!("stopping every task: {e}");
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let idle = self
                .shared
                .executor
                .list()
                .await
                .is_ok_and(|l| l.is_empty());
            if idle {
                return true;
            }
            if tokio::time::Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            let _ = self.resync().await;
        }
    }

    /// Runs the task runners (and so every executor call they make: file writes, process spawns, health
    /// checks) on `runtime`, so slow disks or a burst of starts never delay what runs on the caller's runtime
    /// (heartbeats, Raft, the control API).
    pub fn on_runtime(mut self, runtime: tokio::runtime::Handle) -> Self {
        self.runtime = Some(runtime);
        self
    }

    /// Starts at most `n` tasks at once (at least 1; the default is
    /// [`super::shared::DEFAULT_START_PARALLELISM`]). Call before the first assignment.
    pub fn with_start_parallelism(self, n: usize) -> Self {
        use super::shared::DEFAULT_START_PARALLELISM as DEFAULT;
        let n = n.max(1);
        if n > DEFAULT {
            self.shared.starts.add_permits(n - DEFAULT);
        } else {
            self.shared.starts.forget_permits(DEFAULT - n);
        }
        self
    }

    /// Leaves a task that can receive connections (an endpoint in the node's network map: DNS, a VIP or the
    /// routing mesh may send it clients; or published ports) running for `d` after its stop was asked, before
    /// its stop signal: the managers' map already made it not ready, and this is the time for every node to
    /// apply that map. Zero (the default) sends the stop at once; `swarmd` uses
    /// [`super::shared::DEFAULT_DRAIN_DELAY`].
    pub fn with_drain_delay(self, d: std::time::Duration) -> Self {
        self.shared.set_drain_delay(d);
        self
    }

    /// Converges to `a`, the complete set of this node's tasks. Returns once every change is
    /// under way (tasks start and stop in the background). Safe to call repeatedly and
    /// concurrently (calls are serialized).
    pub async fn assign(&self, a: Assignments) -> Result<(), WorkerError> {
        let mut last = self.assigning.lock().await;
        let a = if self.leaving.load(std::sync::atomic::Ordering::SeqCst) {
            Assignments::default()
        } else {
            a
        };
        // the same map as last time is not looked at again (a map can hold every endpoint of the cluster)
        if last
            .as_ref()
            .is_none_or(|l| !Arc::ptr_eq(&l.network_map, &a.network_map))
        {
            let map = &a.network_map;
            self.network_map.send_if_modified(|m| {
                if *m == **map {
                    return false;
                }
                *m = (**map).clone();
                true
            });
        }
        let a = Arc::new(a);
        *last = Some(a.clone());
        self.converge(&a).await
    }

    /// Converges again to the last assignments: retries what failed temporarily (a runtime that
    /// was unavailable, a failed `list`). Call it periodically; a no-op before the first
    /// `assign`.
    pub async fn resync(&self) -> Result<(), WorkerError> {
        let last = self.assigning.lock().await;
        match last.as_ref() {
            Some(a) => self.converge(a).await,
            None => Ok(()),
        }
    }

    /// One round of convergence; the caller holds `assigning`.
    async fn converge(&self, a: &Assignments) -> Result<(), WorkerError> {
        let listed = self.shared.executor.list().await;
        let known: Option<HashMap<&str, &TaskInfo>> = listed
            .as_ref()
            .ok()
            .map(|l| l.iter().map(|t| (t.task_id.as_str(), t)).collect());
        let reporter = &self.shared.reporter;
        let endpoints: HashSet<&str> = a
            .network_map
            .endpoints
            .iter()
            .filter(|e| e.node_id == a.node_id)
            .map(|e| e.task_id.as_str())
            .collect();
        let mut assigned: HashSet<&str> = HashSet::new();
        for task in &a.tasks {
            if !assigned.insert(task.id.as_str()) {
                continue;
            }
            reporter.assigned(&task.id, task.status.state);
            let publishes = a
                .service_ports
                .get(&task.service_id)
                .is_some_and(|p| !p.is_empty());
            self.shared
                .mark_backend(&task.id, publishes || endpoints.contains(task.id.as_str()));
            let mut want = Desired::of(task.desired_state);
            if task.status.state.is_terminal() {
                // Finished as far as the manager knows: never run it again.
                want = want.max(Desired::Shutdown);
            }
            if self.shared.steer(&task.id, want) {
                continue;
            }
            let Some(known) = &known else { continue };
            if known.contains_key(task.id.as_str()) {
                let (respec, health) = if want == Desired::Run {
                    let health = health_check(task.spec.container.healthcheck.as_ref());
                    (self.spec_of(task, a).ok(), health.ok().flatten())
                } else {
                    (None, None)
                };
                self.spawn(&task.id, want, Start::Adopt { respec }, health);
            } else if want == Desired::Run {
                if task.status.state >= TaskState::Starting {
                    // It was started on this node, but the runtime has no trace of it.
                    reporter.report(
                        &task.id,
                        TaskState::Failed,
                        Detail::error("failed", LOST_MESSAGE),
                    );
                    continue;
                }
                let spec = self.spec_of(task, a).and_then(|spec| {
                    let health = health_check(task.spec.container.healthcheck.as_ref())?;
                    Ok((spec, health))
                });
                match spec {
                    Ok((spec, health)) => self.spawn(&task.id, want, Start::Create(spec), health),
                    Err(e) => {
                        reporter.report(
                            &task.id,
                            TaskState::Rejected,
                            Detail::error("rejected", e.to_string()),
                        );
                    }
                }
            } else {
                reporter.report(&task.id, TaskState::Shutdown, Detail::message("shutdown"));
            }
        }
        for id in self.shared.runner_ids() {
            if !assigned.contains(id.as_str()) {
                self.shared.steer(&id, Desired::Remove);
            }
        }
        if let Some(known) = &known {
            for id in known.keys() {
                if !assigned.contains(id) && !self.shared.has_runner(id) {
                    tracing::info!(task_id = id, "removing a task that is no longer assigned");
                    self.spawn(id, Desired::Remove, Start::Adopt { respec: None }, None);
                }
            }
        }
        reporter.retain(|id| assigned.contains(id));
        self.shared.retain_backends(|id| assigned.contains(id));
        listed.map(drop).map_err(WorkerError::List)
    }

    /// The task's output, for `service logs`.
    pub async fn logs(&self, task_id: &str, opts: LogOptions) -> Result<LogLines, ExecError> {
        self.shared.executor.logs(task_id, opts).await
    }

    fn spec_of(&self, task: &Task, a: &Assignments) -> Result<ProcessSpec, SpecError> {
        let ctx = TaskContext {
            service_name: a
                .service_names
                .get(&task.service_id)
                .cloned()
                .unwrap_or_else(|| task.service_id.clone()),
            node_id: a.node_id.clone(),
            node_hostname: a.node_hostname.clone(),
            ports: a
                .service_ports
                .get(&task.service_id)
                .cloned()
                .unwrap_or_default(),
        };
        let secrets = |id: &str| a.secrets.get(id).cloned();
        let configs = |id: &str| a.configs.get(id).cloned();
        process_spec(task, &ctx, &secrets, &configs)
    }

    fn spawn(&self, task_id: &str, want: Desired, start: Start, health: Option<HealthCheck>) {
        let (gen, rx) = self.shared.register(task_id, want);
        let run = runner::run(
            self.shared.clone(),
            task_id.to_string(),
            gen,
            start,
            health,
            rx,
        );
        let handle = match &self.runtime {
            Some(rt) => rt.spawn(run),
            None => tokio::spawn(run),
        };
        self.shared.set_abort(task_id, gen, handle.abort_handle());
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.shared.abort_all();
    }
}

#[cfg(test)]
#[path = "worker_tests.rs"]
mod tests;
