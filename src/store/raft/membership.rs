//! Membership changes on [`RaftNode`], for joining, promoting, demoting and removing managers:
//! learners added (waiting for them to catch up or not), voters promoted and demoted, members
//! removed, addresses updated, and the membership listed with who is reachable. Every change runs
//! on the leader only, is refused at once without quorum, and is bounded like a proposal.
//!
//! Openraft 0.9 has no leadership transfer: a leader removed from the voters keeps leading until
//! that membership commits, then steps down, and the remaining voters elect a leader after their
//! election timeout. A removal or demotion that would leave the remaining voters without a
//! reachable majority is refused with the counts.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use openraft::ChangeMembers;

use super::error::{Error, Result};
use super::node::{voters_of, RaftNode};
use super::quorum::{Member, QuorumStatus};
use super::types::{NodeId, NodeInfo};

impl RaftNode {
    /// Adds `id` at `addr` as a learner and waits until it has caught up with this leader's log
    /// (no time limit: wrap it in a timeout, or use [`RaftNode::add_learner_nowait`] and
    /// [`RaftNode::wait_caught_up`]).
    pub async fn add_learner(&self, id: NodeId, addr: String) -> Result<()> {
        self.add_learner_nowait(id, addr).await?;
        self.wait_caught_up(id, None).await
    }

    /// Adds `id` at `addr` as a learner; returns once that membership is committed, without
    /// waiting for the learner to catch up. Adding a member again changes nothing.
    pub async fn add_learner_nowait(&self, id: NodeId, addr: String) -> Result<()> {
        self.commit(self.raft.add_learner(id, NodeInfo { addr }, false))
            .await?;
        Ok(())
    }

    /// Waits until `id` has received this leader's log up to the index it had when called (at
    /// most `timeout`, or without a limit for `None`). Fails with [`Error::NotLeader`] if this
    /// node stops leading meanwhile.
    pub async fn wait_caught_up(&self, id: NodeId, timeout: Option<Duration>) -> Result<()> {
        let target = self.metrics.borrow().last_log_index;
        let mut rx = self.metrics.clone();
        let wait = rx.wait_for(|m| {
            let matched = m
                .replication
                .as_ref()
                .and_then(|r| r.get(&id).copied().flatten())
                .map(|l| l.index);
            m.state != openraft::ServerState::Leader || matched >= target
        });
        let m = match timeout {
            Some(t) => tokio::time::timeout(t, wait)
                .await
                .map_err(|_| Error::Timeout(format!("raft node {id} to catch up")))?,
            None => wait.await,
        }
        .map_err(|_| Error::Stopped("the raft core task ended".into()))?;
        if m.state != openraft::ServerState::Leader {
            return Err(Self::not_leader(&m));
        }
        Ok(())
    }

    /// Makes `voters` the voting members; nodes dropped from it stay as learners (leader only).
    pub async fn change_membership(&self, voters: BTreeSet<NodeId>) -> Result<()> {
        let m = self.metrics.borrow().clone();
        let dropped: Vec<NodeId> = voters_of(&m).difference(&voters).copied().collect();
        if !dropped.is_empty() {
            self.check_voters_left(&m, &voters, &dropped)?;
        }
        self.commit(self.raft.change_membership(voters, true))
            .await?;
        Ok(())
    }

    /// Makes the learner `id` a voter (it should have caught up first).
    pub async fn promote(&self, id: NodeId) -> Result<()> {
        self.commit(
            self.raft
                .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), true),
        )
        .await?;
        Ok(())
    }

    /// Makes the voter `id` a learner. Refused when it is the only voter, or when the voters left
    /// would not have a reachable majority. This leader demoting itself steps down once the change
    /// commits.
    pub async fn demote(&self, id: NodeId) -> Result<()> {
        self.drop_voter(id, true).await
    }

    /// Removes `id` from the cluster: a voter leaves the voters and the members in one change
    /// (refused like [`RaftNode::demote`]), a learner leaves the members. Removing a node that is
    /// not a member does nothing.
    pub async fn remove_member(&self, id: NodeId) -> Result<()> {
        let m = self.metrics.borrow().clone();
        let membership = m.membership_config.membership();
        if membership.get_node(&id).is_none() {
            return Ok(());
        }
        if voters_of(&m).contains(&id) {
            return self.drop_voter(id, false).await;
        }
        self.commit(
            self.raft
                .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false),
        )
        .await?;
        Ok(())
    }

    /// Removes the voter `id` from the voters, keeping it as a learner with `retain`.
    async fn drop_voter(&self, id: NodeId, retain: bool) -> Result<()> {
        let m = self.metrics.borrow().clone();
        let mut left = voters_of(&m);
        if !left.remove(&id) {
            return if retain {
                Ok(())
            } else {
                Err(Error::Membership(format!("node {id} is not a voter")))
            };
        }
        self.check_voters_left(&m, &left, &[id])?;
        self.commit(
            self.raft
                .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), retain),
        )
        .await?;
        Ok(())
    }

    /// Refuses to drop `dropped` when `left` would hold no voter, or no reachable majority.
    fn check_voters_left(
        &self,
        m: &openraft::RaftMetrics<NodeId, NodeInfo>,
        left: &BTreeSet<NodeId>,
        dropped: &[NodeId],
    ) -> Result<()> {
        let names = dropped
            .iter()
            .map(|d| format!("node {d}"))
            .collect::<Vec<_>>()
            .join(", ");
        if left.is_empty() {
            return Err(Error::Membership(format!(
                "{names} is the only voting manager; add another manager before removing it"
            )));
        }
        let q = QuorumStatus {
            reachable: left.iter().filter(|&&v| self.reachable(m, v)).count(),
            voters: left.len(),
            leader: m.current_leader,
        };
        if !q.has_quorum() {
            return Err(Error::Membership(format!(
                "removing {names} would leave {q}"
            )));
        }
        Ok(())
    }

    /// Changes the Raft address of member `id` (a manager that moved; it must be the same node).
    pub async fn set_peer_addr(&self, id: NodeId, addr: String) -> Result<()> {
        if self
            .metrics
            .borrow()
            .membership_config
            .membership()
            .get_node(&id)
            .is_none()
        {
            return Err(Error::Membership(format!("node {id} is not a member")));
        }
        let nodes = BTreeMap::from([(id, NodeInfo { addr })]);
        self.commit(
            self.raft
                .change_membership(ChangeMembers::SetNodes(nodes), true),
        )
        .await?;
        Ok(())
    }

    /// The members as this node sees them, by id: address, voter or learner, leader, reachable.
    pub fn members(&self) -> Vec<Member> {
        let m = self.metrics.borrow().clone();
        let leader = self.current_leader();
        let membership = m.membership_config.membership();
        let voters = voters_of(&m);
        membership
            .nodes()
            .map(|(&id, node)| Member {
                id,
                addr: node.addr.clone(),
                voter: voters.contains(&id),
                leader: leader == Some(id),
                reachable: self.reachable(&m, id),
                matched_index: m
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(&id).copied().flatten())
                    .map(|l| l.index),
            })
            .collect()
    }
}
