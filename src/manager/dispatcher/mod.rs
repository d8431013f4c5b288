//! The dispatcher: agent sessions (the node's identity comes from its mTLS certificate), heartbeats, the
//! level-triggered assignments stream (the complete task set of the node with the secrets those tasks use,
//! decrypted only for that node), and task status reports written back through Raft.
//!
//! Runs on the leader only (invariant 2). Heartbeats live in memory; a node that misses them is marked down in the
//! store. Must not: change a task's desired state (the orchestrators own it) or send a secret to a node that runs
//! no task using it.

mod assignments;
mod batch;
mod logs;
mod status;
mod stream;

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use crate::api::dispatcher::{self as pb, dispatcher_server::Dispatcher as DispatcherApi};
use crate::api::from_json;
use crate::manager::proposer::{ProposeError, Proposer};
use crate::model::{self, Meta, NodeState, TaskStatus};
use crate::secrets::DataKey;
use crate::store::{Op, Store};
use crate::transport::PeerInfo;
use crate::util::{IdSource, RandomIds};

pub use assignments::{assignments_for, decode_assignments, AssignmentDiff, AssignmentSet};
pub use logs::LogBroker;
pub use status::status_ops;

/// How many heartbeat periods without a heartbeat make a node down.
const MISSED_HEARTBEATS: u32 = 3;

struct Session {
    node_id: String,
    last_heartbeat: tokio::time::Instant,
}

/// The dispatcher service.
#[derive(Clone)]
pub struct Dispatcher {
    store: Store,
    proposer: Proposer,
    key: DataKey,
    period: Duration,
    sessions: Arc<Mutex<HashMap<String, Session>>>,
    logs: LogBroker,
    /// Started with the first report (the dispatcher may be built outside a runtime).
    batcher: Arc<std::sync::OnceLock<batch::StatusBatcher>>,
    /// Each network's part of the nodes' maps, shared by every assignments stream.
    netmaps: Arc<Mutex<crate::manager::ipam::netmap::NetmapCache>>,
}

impl Dispatcher {
    /// A dispatcher expecting heartbeats every `period`.
    pub fn new(store: Store, proposer: Proposer, key: DataKey, period: Duration) -> Self {
        Dispatcher {
            store,
            proposer,
            key,
            period,
            sessions: Arc::new(Mutex::new(HashMap::new())),
            logs: LogBroker::default(),
            batcher: Arc::default(),
            netmaps: Arc::default(),
        }
    }

    /// The broker through which `service logs` reaches the nodes' tasks.
    pub fn log_broker(&self) -> LogBroker {
        self.logs.clone()
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `node_id` was removed with `node rm`.
    fn is_removed(&self, node_id: &str) -> bool {
        self.store.view(|s| s.is_removed(node_id))
    }

    /// The node of `session_id`, which must be the calling certificate's node: a session id alone is not a
    /// bearer token (whoever learned it would get that node's assignments and secrets).
    fn node_of(&self, session_id: &str, caller: &Caller) -> Result<String, Status> {
        let node = session_owner(&self.sessions(), session_id, &caller.identity.node_id);
        if let Err(e) = &node {
            if e.code() == tonic::Code::PermissionDenied {
                tracing::warn!(caller = %caller.identity.node_id, addr = %caller.addr, "refused: {}", e.message());
            }
        }
        node
    }

    /// Every manager's cluster address, this one (the leader) first: what an agent tries when its session breaks.
    fn manager_addrs(&self) -> Vec<String> {
        let raft = self.proposer.raft();
        let leader = raft.leader_addr();
        let mut addrs: Vec<String> = leader.iter().cloned().collect();
        for (_, addr) in raft.member_addrs() {
            if !addrs.contains(&addr) {
                addrs.push(addr);
            }
        }
        addrs
    }

    /// Marks nodes whose sessions stopped heartbeating as down; runs until the process ends, acting only while
    /// this manager leads. A node that is ready in the store but has had no session with this leader for the
    /// heartbeat budget since it took the lead (its agent died while another manager led, or never came back
    /// after a failover) is marked down too.
    pub async fn watch_heartbeats(self) {
        let mut tick = tokio::time::interval(self.period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut leading_since: Option<tokio::time::Instant> = None;
        let mut last_tick = tokio::time::Instant::now();
        loop {
            tick.tick().await;
            // A monitor that itself ran late (the manager's process was stalled: swapped out, a stopped VM, a
            // starved runtime) could not take heartbeats either: the time it lost is not the nodes' fault.
            let woke = tokio::time::Instant::now();
            let late = woke.duration_since(last_tick).saturating_sub(self.period);
            last_tick = woke;
            if late > self.period / 2 {
                tracing::debug!(
                    "heartbeat monitor ran {late:?} late: extending every deadline by that"
                );
                for s in self.sessions().values_mut() {
                    s.last_heartbeat = (s.last_heartbeat + late).min(woke);
                }
                if let Some(since) = leading_since.as_mut() {
                    *since = (*since + late).min(woke);
                }
            }
            if !self.proposer.is_leader() {
                leading_since = None;
                self.sessions().clear();
                continue;
            }
            let now = tokio::time::Instant::now();
            let since = *leading_since.get_or_insert(now);
            let deadline = self.period * MISSED_HEARTBEATS;
            let expired: Vec<(String, String)> = {
                let mut sessions = self.sessions();
                let gone: Vec<(String, String)> = sessions
                    .iter()
                    .filter(|(_, s)| now.duration_since(s.last_heartbeat) > deadline)
                    .map(|(id, s)| (id.clone(), s.node_id.clone()))
                    .collect();
                for (id, _) in &gone {
                    sessions.remove(id);
                }
                gone
            };
            let mut down: Vec<String> = expired.into_iter().map(|(_, node)| node).collect();
            if now.duration_since(since) > deadline {
                let ready: Vec<String> = self.store.view(|s| {
                    s.nodes()
                        .filter(|n| n.status.state == NodeState::Ready)
                        .map(|n| n.id.clone())
                        .collect()
                });
                down.extend(ready);
            }
            down.sort();
            down.dedup();
            for node_id in down {
                let still_connected = self.sessions().values().any(|s| s.node_id == node_id);
                if !still_connected {
                    tracing::warn!(node = %node_id, "node missed its heartbeats: marking it down");
                    self.set_node_state(&node_id, NodeState::Down, "heartbeat failure")
                        .await;
                }
            }
        }
    }

    async fn set_node_state(&self, node_id: &str, state: NodeState, message: &str) {
        for _ in 0..3 {
            let Some(node) = self.store.view(|s| s.node(node_id).cloned()) else {
                return;
            };
            if node.status.state == state {
                return;
            }
            let mut updated = node.clone();
            updated.status.state = state;
            updated.status.message = message.to_string();
            match self
                .proposer
                .propose(vec![Op::UpdateNode {
                    node: updated,
                    expected_version: node.meta.version,
                }])
                .await
            {
                Ok(_) => return,
                Err(ProposeError::Rejected(_)) => continue,
                Err(e) => {
                    tracing::warn!("cannot update node {node_id}: {e}");
                    return;
                }
            }
        }
    }

    async fn register(
        &self,
        identity: &crate::pki::NodeIdentity,
        desc: pb::NodeDescription,
    ) -> Result<(), Status> {
        if identity.role == crate::pki::NodeRole::Client {
            return Err(Status::permission_denied(
                "a client certificate cannot open a node session",
            ));
        }
        if self.is_removed(&identity.node_id) {
            return Err(removed(&identity.node_id));
        }
        let now = self.proposer.clock().now();
        let description = model::NodeDescription {
            hostname: desc.hostname.clone(),
            platform: model::Platform {
                os: desc.os.clone(),
                arch: desc.arch.clone(),
            },
            resources: model::NodeResources {
                nano_cpus: desc.nano_cpus.max(0) as u64,
                memory_bytes: desc.memory_bytes,
            },
            engine_labels: desc.engine_labels.clone().into_iter().collect(),
        };
        // a manager's Raft id: trusted from a manager certificate only, its address from the Raft membership
        let manager_status = (identity.role == crate::pki::NodeRole::Manager && desc.raft_id != 0)
            .then(|| model::ManagerStatus {
                raft_id: desc.raft_id,
                addr: self
                    .proposer
                    .raft()
                    .member_addr(desc.raft_id)
                    .unwrap_or_default(),
                ..Default::default()
            });
        for _ in 0..5 {
            let existing = self.store.view(|s| s.node(&identity.node_id).cloned());
            let op = match existing {
                Some(node) => {
                    let mut updated = node.clone();
                    updated.description = description.clone();
                    updated.status.state = NodeState::Ready;
                    updated.status.addr = desc.addr.clone();
                    updated.status.message = String::new();
                    updated.status.last_heartbeat = now;
                    if manager_status.is_some() {
                        updated.manager_status = manager_status.clone();
                    }
                    if updated == node {
                        return Ok(());
                    }
                    Op::UpdateNode {
                        node: updated,
                        expected_version: node.meta.version,
                    }
                }
                None => {
                    let role = match identity.role {
                        crate::pki::NodeRole::Manager => model::NodeRole::Manager,
                        crate::pki::NodeRole::Worker => model::NodeRole::Worker,
                        crate::pki::NodeRole::Client => {
                            return Err(Status::permission_denied(
                                "a client certificate cannot open a node session",
                            ))
                        }
                    };
                    Op::CreateNode(model::Node {
                        id: identity.node_id.clone(),
                        meta: Meta::default(),
                        description: description.clone(),
                        spec: model::NodeSpec {
                            role,
                            availability: model::NodeAvailability::Active,
                            labels: Default::default(),
                        },
                        status: model::NodeStatus {
                            state: NodeState::Ready,
                            addr: desc.addr.clone(),
                            message: String::new(),
                            last_heartbeat: now,
                        },
                        manager_status: manager_status.clone(),
                    })
                }
            };
            match self.proposer.propose(vec![op]).await {
                Ok(_) => return Ok(()),
                Err(ProposeError::Rejected(_)) => continue,
                Err(e) => return Err(Status::unavailable(e.to_string())),
            }
        }
        Err(Status::aborted(
            "could not register the node: too many concurrent changes",
        ))
    }
}

/// The refusal a removed node gets.
fn removed(node_id: &str) -> Status {
    Status::permission_denied(format!(
        "node {node_id} was removed from the cluster: its certificate is no longer accepted (join again with a \
         token on a new state directory)"
    ))
}

/// The node owning `session_id` when that is `caller`; NOT_FOUND for an unknown (expired) session,
/// PERMISSION_DENIED for another node's.
fn session_owner(
    sessions: &HashMap<String, Session>,
    session_id: &str,
    caller: &str,
) -> Result<String, Status> {
    match sessions.get(session_id) {
        None => Err(Status::not_found("session not found: open a new session")),
        Some(s) if s.node_id != caller => Err(Status::permission_denied(format!(
            "session {session_id} belongs to another node, not to {caller}"
        ))),
        Some(s) => Ok(s.node_id.clone()),
    }
}

/// The calling node, which must present a certificate of this cluster.
fn peer(request_ext: &tonic::Extensions) -> Result<Caller, Status> {
    let info = request_ext
        .get::<PeerInfo>()
        .ok_or_else(|| Status::unauthenticated("a node certificate is required"))?;
    match &info.identity {
        Some(identity) => Ok(Caller {
            identity: identity.clone(),
            addr: info.addr,
        }),
        None => Err(Status::unauthenticated(
            "a node certificate is required (join the cluster first)",
        )),
    }
}

/// An authenticated caller.
struct Caller {
    identity: crate::pki::NodeIdentity,
    addr: std::net::SocketAddr,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl DispatcherApi for Dispatcher {
    type SessionStream = BoxStream<pb::SessionMessage>;

    async fn session(
        &self,
        request: Request<pb::SessionRequest>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let peer = peer(request.extensions())?;
        let desc = request.into_inner().description.unwrap_or_default();
        if !self.proposer.is_leader() {
            return Err(crate::manager::raftpeer::not_leader(
                self.proposer.raft(),
                "an agent session",
            ));
        }
        self.register(&peer.identity, desc).await?;
        let session_id = RandomIds.next_id();
        self.sessions().insert(
            session_id.clone(),
            Session {
                node_id: peer.identity.node_id.clone(),
                last_heartbeat: tokio::time::Instant::now(),
            },
        );
        tracing::info!(node = %peer.identity.node_id, %session_id, "agent session opened");
        let first = pb::SessionMessage {
            session_id: session_id.clone(),
            node_id: peer.identity.node_id.clone(),
            heartbeat_period_ms: self.period.as_millis() as u64,
            managers: self.manager_addrs(),
        };
        // The stream stays open while the session lives; it ends when the session expires.
        let sessions = self.sessions.clone();
        let period = self.period;
        let proposer = self.proposer.clone();
        let stream = futures::stream::once(async move { Ok(first) }).chain_wait(move || {
            let sessions = sessions.clone();
            let session_id = session_id.clone();
            let proposer = proposer.clone();
            async move {
                let mut leader = proposer.raft().leader_watch();
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(period) => {}
                        _ = leader.changed() => {}
                    }
                    let alive = sessions
                        .lock()
                        .map(|s| s.contains_key(&session_id))
                        .unwrap_or(false);
                    // a manager that lost the lead ends its sessions: the agents go to the new leader
                    if !alive || !proposer.is_leader() {
                        sessions.lock().map(|mut s| s.remove(&session_id)).ok();
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let caller = peer(request.extensions())?;
        let session_id = request.into_inner().session_id;
        if !self.proposer.is_leader() {
            return Err(crate::manager::raftpeer::not_leader(
                self.proposer.raft(),
                "a heartbeat",
            ));
        }
        let node_id = self.node_of(&session_id, &caller)?;
        if self.is_removed(&node_id) {
            self.sessions().remove(&session_id);
            return Err(removed(&node_id));
        }
        if let Some(s) = self.sessions().get_mut(&session_id) {
            s.last_heartbeat = tokio::time::Instant::now();
        }
        // A node that was marked down and heartbeats again is ready again.
        if self
            .store
            .view(|s| s.node(&node_id).map(|n| n.status.state != NodeState::Ready))
            .unwrap_or(false)
        {
            self.set_node_state(&node_id, NodeState::Ready, "").await;
        }
        let role = self
            .store
            .view(|s| s.node(&node_id).map(|n| n.spec.role))
            .map(|r| match r {
                model::NodeRole::Manager => "manager",
                model::NodeRole::Worker => "worker",
            })
            .unwrap_or_default();
        Ok(Response::new(pb::HeartbeatResponse {
            period_ms: self.period.as_millis() as u64,
            role: role.into(),
        }))
    }

    type AssignmentsStream = BoxStream<pb::AssignmentsMessage>;

    async fn assignments(
        &self,
        request: Request<pb::AssignmentsRequest>,
    ) -> Result<Response<Self::AssignmentsStream>, Status> {
        let caller = peer(request.extensions())?;
        let session_id = request.into_inner().session_id;
        let node_id = self.node_of(&session_id, &caller)?;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let s = stream::Stream {
            store: self.store.clone(),
            key: self.key.clone(),
            sessions: self.sessions.clone(),
            netmaps: self.netmaps.clone(),
            session_id,
            node_id,
        };
        tokio::spawn(stream::run(s, tx));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    type LogSubscriptionsStream = BoxStream<pb::LogSubscription>;

    async fn log_subscriptions(
        &self,
        request: Request<pb::LogSubscriptionsRequest>,
    ) -> Result<Response<Self::LogSubscriptionsStream>, Status> {
        Ok(Response::new(self.log_subscriptions_impl(request).await?))
    }

    async fn publish_logs(
        &self,
        request: Request<tonic::Streaming<pb::LogChunk>>,
    ) -> Result<Response<pb::PublishLogsResponse>, Status> {
        Ok(Response::new(self.publish_logs_impl(request).await?))
    }

    async fn update_task_status(
        &self,
        request: Request<pb::UpdateTaskStatusRequest>,
    ) -> Result<Response<pb::UpdateTaskStatusResponse>, Status> {
        let caller = peer(request.extensions())?;
        let req = request.into_inner();
        let node_id = self.node_of(&req.session_id, &caller)?;
        let mut updates = Vec::new();
        for u in &req.updates {
            let status: TaskStatus = from_json("task status", &u.status_json)?;
            updates.push((u.task_id.clone(), status));
        }
        let batcher = self
            .batcher
            .get_or_init(|| batch::StatusBatcher::start(self.store.clone(), self.proposer.clone()))
            .clone();
        batcher
            .report(node_id, updates)
            .await
            .map_err(Status::unavailable)?;
        Ok(Response::new(pb::UpdateTaskStatusResponse {}))
    }
}

/// The log half of the dispatcher (see [`logs`]).
impl Dispatcher {
    async fn log_subscriptions_impl(
        &self,
        request: Request<pb::LogSubscriptionsRequest>,
    ) -> Result<BoxStream<pb::LogSubscription>, Status> {
        let caller = peer(request.extensions())?;
        let session_id = request.into_inner().session_id;
        let node_id = self.node_of(&session_id, &caller)?;
        let rx = self.logs.subscribe(&node_id);
        Ok(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok),
        ))
    }

    async fn publish_logs_impl(
        &self,
        request: Request<tonic::Streaming<pb::LogChunk>>,
    ) -> Result<pb::PublishLogsResponse, Status> {
        let caller = peer(request.extensions())?;
        let mut chunks = request.into_inner();
        let mut last: Option<String> = None;
        while let Some(chunk) = chunks.message().await? {
            let node_id = self.node_of(&chunk.session_id, &caller)?;
            let request_id = chunk.request_id.clone();
            let more = self.logs.publish(&node_id, chunk).await;
            last = Some(request_id);
            if !more {
                last = None;
                break;
            }
        }
        if let Some(request_id) = last {
            self.logs.forget(&request_id);
        }
        Ok(pb::PublishLogsResponse {})
    }
}

/// `stream.chain_wait(f)`: after the stream ends, wait for the future `f()` before ending (keeps a server stream
/// open for as long as a session lives).
trait ChainWait: Stream + Sized {
    fn chain_wait<F, Fut>(self, f: F) -> Pin<Box<dyn Stream<Item = Self::Item> + Send>>
    where
        Self: Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        use futures::StreamExt;
        let tail = futures::stream::once(f()).filter_map(|_| async { None });
        Box::pin(self.chain(tail))
    }
}

impl<S: Stream + Sized> ChainWait for S {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_answers_only_the_node_that_opened_it() {
        let mut sessions = HashMap::new();
        sessions.insert(
            "sess1".to_string(),
            Session {
                node_id: "node-a".into(),
                last_heartbeat: tokio::time::Instant::now(),
            },
        );
        assert_eq!(
            session_owner(&sessions, "sess1", "node-a").unwrap(),
            "node-a"
        );
        let stolen = session_owner(&sessions, "sess1", "node-b").unwrap_err();
        assert_eq!(stolen.code(), tonic::Code::PermissionDenied);
        assert_eq!(
            stolen.message(),
            "session sess1 belongs to another node, not to node-b"
        );
        let gone = session_owner(&sessions, "nope", "node-a").unwrap_err();
        assert_eq!(gone.code(), tonic::Code::NotFound);
    }
}
