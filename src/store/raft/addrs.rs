//! Where the members of the Raft group are: the addresses kept in the membership, for the node wiring (the
//! leader's address to forward to, a learner's to promote it).

use super::node::RaftNode;
use super::types::NodeId;

impl RaftNode {
    /// The address of member `id`, from the current membership.
    pub fn member_addr(&self, id: NodeId) -> Option<String> {
        let metrics = self.raft_metrics();
        let m = metrics.borrow();
        m.membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.addr.clone())
    }

    /// The address of the leader this node knows of.
    pub fn leader_addr(&self) -> Option<String> {
        self.current_leader().and_then(|id| self.member_addr(id))
    }

    /// Every member's address: voters first (in id order), then learners.
    pub fn member_addrs(&self) -> Vec<(NodeId, String)> {
        let metrics = self.raft_metrics();
        let m = metrics.borrow();
        let membership = m.membership_config.membership();
        membership
            .voter_ids()
            .chain(membership.learner_ids())
            .filter_map(|id| membership.get_node(&id).map(|n| (id, n.addr.clone())))
            .collect()
    }
}
