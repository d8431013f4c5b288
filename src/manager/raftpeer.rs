//! The `RaftPeer` service on the cluster port: Raft RPCs between managers, and the door a node holding a new
//! manager certificate uses to join the Raft group. Every call must come from a manager certificate of this
//! cluster (a worker or client certificate is refused, and logged). Also the membership loop that turns
//! caught-up learners into voters on the leader.
//!
//! Must not: interpret Raft's bytes (store::raft does), or hand the cluster's keys to anything but a manager
//! certificate over mutual TLS.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::{Request, Response, Status};

use crate::api::raft::{
    raft_peer_server::RaftPeer, JoinManagerRequest, JoinManagerResponse, RaftMessage, RaftReply,
};
use crate::pki::{NodeRole, RootCa};
use crate::secrets::DataKey;
use crate::store::raft::{RaftNode, RaftRpc};
use crate::store::Store;
use crate::transport::PeerInfo;

/// The wire number of each Raft RPC.
pub fn rpc_code(rpc: RaftRpc) -> u32 {
    match rpc {
        RaftRpc::AppendEntries => 0,
        RaftRpc::Vote => 1,
        RaftRpc::InstallSnapshot => 2,
    }
}

/// The Raft RPC of a wire number.
pub fn rpc_of(code: u32) -> Option<RaftRpc> {
    match code {
        0 => Some(RaftRpc::AppendEntries),
        1 => Some(RaftRpc::Vote),
        2 => Some(RaftRpc::InstallSnapshot),
        _ => None,
    }
}

/// The gRPC metadata key naming the leader's address in a "not the leader" refusal.
pub const LEADER_HEADER: &str = "x-swarm-leader";

/// A FAILED_PRECONDITION refusal of a call that only the leader answers, naming the leader for the caller
/// to go to.
pub fn not_leader(raft: &RaftNode, what: &str) -> Status {
    let leader = raft.leader_addr();
    let mut status = Status::failed_precondition(format!(
        "this manager is not the leader, {what} goes to the leader{}",
        leader
            .as_ref()
            .map(|a| format!(" (at {a})"))
            .unwrap_or_else(|| " (none is elected now)".into())
    ));
    if let Some(addr) = leader.and_then(|a| a.parse().ok()) {
        status.metadata_mut().insert(LEADER_HEADER, addr);
    }
    status
}

/// The manager's Raft peer service.
pub struct RaftPeerService {
    raft: Arc<RaftNode>,
    store: Store,
    key: DataKey,
    ca: Arc<RootCa>,
    cluster_id: String,
}

impl RaftPeerService {
    /// The service of this manager's `raft`, handing `key` and `ca` to managers that join.
    pub fn new(
        raft: Arc<RaftNode>,
        store: Store,
        key: DataKey,
        ca: Arc<RootCa>,
        cluster_id: String,
    ) -> Self {
        RaftPeerService {
            raft,
            store,
            key,
            ca,
            cluster_id,
        }
    }

    /// The calling manager's node id, or the refusal (logged: a node probing the Raft port is worth a line).
    fn manager<T>(&self, request: &Request<T>) -> Result<String, Status> {
        let info = request.extensions().get::<PeerInfo>();
        let identity = info.and_then(|i| i.identity.as_ref());
        let refuse = |status: Status| {
            let addr = info.map(|i| i.addr.to_string()).unwrap_or_default();
            tracing::warn!(%addr, "raft call refused: {}", status.message());
            status
        };
        match identity {
            None => Err(refuse(Status::unauthenticated(
                "raft between managers needs a manager certificate",
            ))),
            Some(id) if id.role != NodeRole::Manager => Err(refuse(Status::permission_denied(
                format!("a {} certificate cannot take part in raft", id.role),
            ))),
            Some(id) if id.cluster_id != self.cluster_id => {
                Err(refuse(Status::permission_denied(format!(
                    "certificate of cluster {}, not {}",
                    id.cluster_id, self.cluster_id
                ))))
            }
            Some(id) if self.store.view(|s| s.is_removed(&id.node_id)) => {
                Err(refuse(Status::permission_denied(format!(
                    "node {} was removed from the cluster",
                    id.node_id
                ))))
            }
            Some(id) => Ok(id.node_id.clone()),
        }
    }
}

impl RaftPeerService {
    /// Refuses Raft messages from a manager that is not in this node's membership (removed, demoted, or left
    /// behind by a `--force-new-cluster`): its votes must not disturb the group. A node with no membership yet (a
    /// manager that just joined) takes the leader's first messages.
    fn member(&self, node_id: &str) -> Result<(), Status> {
        let members = self.raft.member_addrs();
        if members.is_empty() {
            return Ok(());
        }
        let raft_id = self
            .store
            .view(|s| {
                s.node(node_id)
                    .and_then(|n| n.manager_status.as_ref().map(|m| m.raft_id))
            })
            .unwrap_or_else(|| crate::model::raft_id_for(node_id));
        if members.iter().any(|(id, _)| *id == raft_id) {
            return Ok(());
        }
        tracing::warn!(node = %node_id, "raft message from a manager outside the raft group refused");
        Err(Status::permission_denied(format!(
            "manager {node_id} is not a member of this cluster's raft group (removed, demoted, or from before a              --force-new-cluster): move its state directory away and join again with a manager token"
        )))
    }
}

#[tonic::async_trait]
impl RaftPeer for RaftPeerService {
    async fn call(&self, request: Request<RaftMessage>) -> Result<Response<RaftReply>, Status> {
        let node = self.manager(&request)?;
        self.member(&node)?;
        let message = request.into_inner();
        let rpc = rpc_of(message.rpc)
            .ok_or_else(|| Status::invalid_argument(format!("unknown raft rpc {}", message.rpc)))?;
        let payload = self
            .raft
            .handle_rpc(rpc, &message.payload)
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(RaftReply { payload }))
    }

    async fn join_manager(
        &self,
        request: Request<JoinManagerRequest>,
    ) -> Result<Response<JoinManagerResponse>, Status> {
        let node = self.manager(&request)?;
        let req = request.into_inner();
        if req.raft_id == 0 || req.addr.parse::<std::net::SocketAddr>().is_err() {
            return Err(Status::invalid_argument(format!(
                "a joining manager needs a raft id and an address host:port (got {} at {:?})",
                req.raft_id, req.addr
            )));
        }
        if !self.raft.is_leader() {
            return Err(not_leader(&self.raft, "joining"));
        }
        if self.raft.metrics().voters.contains(&req.raft_id) {
            tracing::info!(%node, raft_id = req.raft_id, "manager rejoined the raft group");
        } else {
            tracing::info!(%node, raft_id = req.raft_id, addr = %req.addr, "adding a manager to the raft group");
            let raft = self.raft.clone();
            let (id, addr) = (req.raft_id, req.addr.clone());
            // the new manager starts its raft endpoint after this answer; it becomes a voter once caught up
            tokio::spawn(async move { promote(&raft, id, addr).await });
        }
        let (cert, key) = self.ca.to_pem();
        Ok(Response::new(JoinManagerResponse {
            cluster_id: self.cluster_id.clone(),
            data_key: self.key.expose_bytes().to_vec(),
            ca_cert_pem: cert,
            ca_key_pem: key,
        }))
    }
}

/// Adds `id` as a learner (waiting until it has caught up), then makes it a voter. Leader only; an error is
/// logged and retried by [`membership_loop`].
async fn promote(raft: &RaftNode, id: u64, addr: String) {
    if let Err(e) = raft.add_learner(id, addr).await {
        tracing::warn!(raft_id = id, "adding the manager as a learner: {e}");
        return;
    }
    let mut voters: std::collections::BTreeSet<u64> = raft.metrics().voters.into_iter().collect();
    if !voters.insert(id) {
        return;
    }
    match raft.change_membership(voters).await {
        Ok(()) => tracing::info!(raft_id = id, "manager is now a raft voter"),
        Err(e) => tracing::warn!(raft_id = id, "making the manager a voter: {e}"),
    }
}

/// On the leader, makes every learner a voter once it has caught up (a manager whose promotion was cut short by
/// a leader change is finished by the next leader). Runs until the process ends.
pub async fn membership_loop(raft: Arc<RaftNode>) {
    let busy: Arc<Mutex<HashSet<u64>>> = Arc::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        if !raft.is_leader() {
            continue;
        }
        for id in raft.metrics().learners {
            let Some(addr) = raft.member_addr(id) else {
                continue;
            };
            if !busy.lock().unwrap_or_else(|p| p.into_inner()).insert(id) {
                continue;
            }
            let (raft, busy) = (raft.clone(), busy.clone());
            tokio::spawn(async move {
                promote(&raft, id, addr).await;
                busy.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
            });
        }
    }
}
