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
use crate::pki::{Authority, NodeRole, SharedAuthority};
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
    ca: SharedAuthority,
    cluster_id: String,
}

impl RaftPeerService {
    /// The service of this manager's `raft`, handing `key` and `ca` to managers that join.
    pub fn new(
        raft: Arc<RaftNode>,
        store: Store,
        key: DataKey,
        ca: SharedAuthority,
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
        if self.raft.members().iter().any(|m| m.id == req.raft_id) {
            tracing::info!(%node, raft_id = req.raft_id, "manager rejoined the raft group");
        } else {
            // a learner now (the new manager starts its raft endpoint after this answer); the membership loop makes
            // it a voter once it has caught up
            tracing::info!(%node, raft_id = req.raft_id, addr = %req.addr, "adding a manager to the raft group");
            self.raft
                .add_learner_nowait(req.raft_id, req.addr.clone())
                .await
                .map_err(|e| Status::unavailable(format!("adding the manager to raft: {e}")))?;
        }
        // the signing root (the new one during a rotation: the rotation's state comes with the log)
        let (cert, key) = Authority::current(&self.ca).signer().to_pem();
        Ok(Response::new(JoinManagerResponse {
            cluster_id: self.cluster_id.clone(),
            data_key: self.key.expose_bytes().to_vec(),
            ca_cert_pem: cert,
            ca_key_pem: key,
        }))
    }
}

/// Adds `id` as a learner, waits (up to a minute) until it has caught up, then makes it a voter. Leader only;
/// an error is logged and retried by [`membership_loop`].
async fn promote(raft: &RaftNode, id: u64, addr: String) {
    if !raft.members().iter().any(|m| m.id == id) {
        if let Err(e) = raft.add_learner_nowait(id, addr).await {
            tracing::warn!(raft_id = id, "adding the manager as a learner: {e}");
            return;
        }
    }
    if let Err(e) = raft.wait_caught_up(id, Some(Duration::from_secs(60))).await {
        tracing::warn!(raft_id = id, "the new manager has not caught up yet: {e}");
        return;
    }
    match raft.promote(id).await {
        Ok(()) => tracing::info!(raft_id = id, "manager is now a raft voter"),
        Err(e) => tracing::warn!(raft_id = id, "making the manager a voter: {e}"),
    }
}

/// What the leader's membership loop does to one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipAction {
    /// A learner that is (or is becoming) a manager: make it a voter once caught up.
    Promote(u64, String),
    /// A voter whose node was demoted: make it a learner (the leader itself: it steps down once committed).
    Demote(u64),
    /// A learner whose node is a worker now: drop it from the group.
    Drop(u64),
}

/// The membership changes that make the Raft group match the nodes' roles: pure, over the store's nodes and the
/// members as this leader sees them. A demotion waits while the voters left would not form a quorum.
pub fn membership_actions(
    nodes: &[crate::model::Node],
    members: &[crate::store::raft::Member],
) -> Vec<MembershipAction> {
    use crate::model::NodeRole as Role;
    let role_of = |raft_id: u64| {
        nodes
            .iter()
            .find(|n| {
                n.manager_status
                    .as_ref()
                    .map(|m| m.raft_id)
                    .unwrap_or_else(|| crate::model::raft_id_for(&n.id))
                    == raft_id
            })
            .map(|n| n.spec.role)
    };
    let mut out = Vec::new();
    let voters: Vec<_> = members.iter().filter(|m| m.voter).collect();
    for m in members {
        match (m.voter, role_of(m.id)) {
            // a joining manager has no node yet
            (false, None | Some(Role::Manager)) => {
                out.push(MembershipAction::Promote(m.id, m.addr.clone()))
            }
            (false, Some(Role::Worker)) => out.push(MembershipAction::Drop(m.id)),
            (true, Some(Role::Worker)) => {
                let left: Vec<_> = voters.iter().filter(|v| v.id != m.id).collect();
                let reachable = left.iter().filter(|v| v.reachable).count();
                if !left.is_empty() && reachable > left.len() / 2 {
                    out.push(MembershipAction::Demote(m.id));
                }
            }
            (true, _) => {}
        }
    }
    out
}

/// On the leader, keeps the Raft group equal to the managers: learners that are managers become voters once
/// caught up (a promotion cut short by a leader change is finished by the next leader), demoted managers leave.
/// Runs until the process ends.
pub async fn membership_loop(raft: Arc<RaftNode>, store: Store) {
    let busy: Arc<Mutex<HashSet<u64>>> = Arc::default();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        if !raft.is_leader() {
            continue;
        }
        let nodes: Vec<crate::model::Node> = store.view(|s| s.nodes().cloned().collect());
        for action in membership_actions(&nodes, &raft.members()) {
            let id = match &action {
                MembershipAction::Promote(id, _)
                | MembershipAction::Demote(id)
                | MembershipAction::Drop(id) => *id,
            };
            if !busy.lock().unwrap_or_else(|p| p.into_inner()).insert(id) {
                continue;
            }
            let (raft, busy) = (raft.clone(), busy.clone());
            tokio::spawn(async move {
                match action {
                    MembershipAction::Promote(id, addr) => promote(&raft, id, addr).await,
                    MembershipAction::Demote(id) => {
                        let voters = raft
                            .metrics()
                            .voters
                            .into_iter()
                            .filter(|v| *v != id)
                            .collect();
                        match raft.change_membership(voters).await {
                            Ok(()) => tracing::info!(
                                raft_id = id,
                                "demoted manager is no longer a raft voter"
                            ),
                            Err(e) => tracing::warn!(raft_id = id, "demoting the manager: {e}"),
                        }
                    }
                    MembershipAction::Drop(id) => match raft.remove_member(id).await {
                        Ok(()) => {
                            tracing::info!(raft_id = id, "demoted manager left the raft group")
                        }
                        Err(e) => tracing::warn!(raft_id = id, "removing the demoted manager: {e}"),
                    },
                }
                busy.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ManagerStatus, Node, NodeRole};

    use crate::store::raft::Member;

    fn node(id: &str, raft_id: u64, role: NodeRole) -> Node {
        let mut n = crate::manager::testutil::node(id);
        n.spec.role = role;
        n.manager_status = Some(ManagerStatus {
            raft_id,
            ..Default::default()
        });
        n
    }

    fn member(id: u64, voter: bool, reachable: bool) -> Member {
        Member {
            id,
            addr: format!("127.0.0.1:{id}"),
            voter,
            leader: false,
            reachable,
            matched_index: None,
        }
    }

    #[test]
    fn rpc_codes_round_trip() {
        for rpc in [
            RaftRpc::AppendEntries,
            RaftRpc::Vote,
            RaftRpc::InstallSnapshot,
        ] {
            assert_eq!(rpc_of(rpc_code(rpc)), Some(rpc));
        }
        assert_eq!(rpc_of(9), None);
    }

    #[test]
    fn learners_that_are_managers_or_still_joining_are_promoted_demoted_ones_leave() {
        let nodes = [
            node("a", 1, NodeRole::Manager),
            node("b", 2, NodeRole::Manager),
            node("c", 3, NodeRole::Worker),
            node("d", 4, NodeRole::Worker),
        ];
        let members = [
            member(1, true, true),
            member(2, false, true),
            member(3, true, true),
            member(4, false, true),
            member(5, false, true), // joining: no node yet
        ];
        assert_eq!(
            membership_actions(&nodes, &members),
            vec![
                MembershipAction::Promote(2, "127.0.0.1:2".into()),
                MembershipAction::Demote(3),
                MembershipAction::Drop(4),
                MembershipAction::Promote(5, "127.0.0.1:5".into()),
            ]
        );
    }

    #[test]
    fn a_demotion_waits_while_the_voters_left_could_not_form_a_quorum() {
        let nodes = [
            node("a", 1, NodeRole::Manager),
            node("b", 2, NodeRole::Manager),
            node("c", 3, NodeRole::Worker),
        ];
        // of the two voters left, one is unreachable: 1 of 2 is no quorum
        let members = [
            member(1, true, true),
            member(2, true, false),
            member(3, true, true),
        ];
        assert_eq!(membership_actions(&nodes, &members), vec![]);
        let all = [
            member(1, true, true),
            member(2, true, true),
            member(3, true, true),
        ];
        assert_eq!(
            membership_actions(&nodes, &all),
            vec![MembershipAction::Demote(3)]
        );
    }
}
