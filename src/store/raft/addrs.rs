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

/// One member of the Raft group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its Raft id.
    pub id: NodeId,
    /// Its address.
    pub addr: String,
    /// Whether it votes.
    pub voter: bool,
    /// Whether this node reaches it (the leader, for every member; a follower knows only itself and the leader).
    pub reachable: bool,
}

impl RaftNode {
    /// The members of the Raft group as this node sees them.
    pub fn members(&self) -> Vec<Member> {
        let metrics = self.raft_metrics();
        let m = metrics.borrow();
        let membership = m.membership_config.membership();
        let voters: std::collections::BTreeSet<NodeId> = membership.voter_ids().collect();
        let leader = m.current_leader;
        let replication = m.replication.clone();
        membership
            .nodes()
            .map(|(id, node)| {
                let reachable = *id == m.id
                    || Some(*id) == leader
                    || replication
                        .as_ref()
                        .is_some_and(|r| r.get(id).is_some_and(|l| l.is_some()));
                Member {
                    id: *id,
                    addr: node.addr.clone(),
                    voter: voters.contains(id),
                    reachable,
                }
            })
            .collect()
    }
}

impl RaftNode {
    /// Removes member `id` from the group (voter or learner) in one membership change (leader only).
    pub async fn remove_member(&self, id: NodeId) -> super::Result<()> {
        let voters: std::collections::BTreeSet<NodeId> = self
            .metrics()
            .voters
            .into_iter()
            .filter(|v| *v != id)
            .collect();
        self.change_membership_removing(voters, id).await
    }
}
