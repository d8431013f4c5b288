//! Who this node can reach, and whether that is a quorum. Openraft 0.9 keeps a leader that lost its
//! followers in the leader state (it has no check-quorum, and its `millis_since_quorum_ack` metric
//! only changes when other metrics do), so we track contact ourselves: [`Contacts`] remembers when
//! each peer last answered one of our RPCs (`acked`, recorded by `network` on the sending side) and
//! when each peer last sent us one (`heard`, recorded when serving). [`QuorumStatus`] and
//! [`Member`] are the plain answers built from it.
//!
//! Must not: decide anything about safety. Raft alone decides what commits; this only lets a write
//! that cannot commit fail at once with a clear reason instead of hanging.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::types::NodeId;

/// When each peer was last in contact; cheap to clone (clones share the times).
#[derive(Clone, Default)]
pub(crate) struct Contacts {
    inner: Arc<Mutex<Times>>,
}

#[derive(Default)]
struct Times {
    /// A reply to an RPC we sent arrived from this node.
    acked: HashMap<NodeId, Instant>,
    /// This node sent us an RPC (as leader or candidate).
    heard: HashMap<NodeId, Instant>,
}

impl Contacts {
    fn times(&self) -> MutexGuard<'_, Times> {
        // The map holds no invariant a panic could break half-way.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `target` answered an RPC just now.
    pub(crate) fn acked(&self, target: NodeId) {
        self.times().acked.insert(target, Instant::now());
    }

    /// `from` sent us an RPC just now.
    pub(crate) fn heard(&self, from: NodeId) {
        self.times().heard.insert(from, Instant::now());
    }

    /// Whether `target` answered one of our RPCs within `window`.
    pub(crate) fn acked_within(&self, target: NodeId, window: Duration) -> bool {
        self.times()
            .acked
            .get(&target)
            .is_some_and(|t| t.elapsed() <= window)
    }

    /// Whether `from` sent us an RPC within `window`.
    pub(crate) fn heard_within(&self, from: NodeId, window: Duration) -> bool {
        self.times()
            .heard
            .get(&from)
            .is_some_and(|t| t.elapsed() <= window)
    }
}

/// How many voting managers this node can reach, as far as it can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuorumStatus {
    /// Voters reachable, this node included when it votes. On the leader: itself plus every voter
    /// that answered within about two election timeouts. On a follower: itself plus the leader if
    /// it heard from it in that time (it cannot see the other followers).
    pub reachable: usize,
    /// Voters in the membership.
    pub voters: usize,
    /// The leader this node knows of (itself on the leader), if any.
    pub leader: Option<NodeId>,
}

impl QuorumStatus {
    /// How many voters make a majority: `voters / 2 + 1`.
    pub fn need(&self) -> usize {
        self.voters / 2 + 1
    }

    /// Whether the reachable voters are a majority.
    pub fn has_quorum(&self) -> bool {
        self.voters > 0 && self.reachable >= self.need()
    }
}

impl fmt::Display for QuorumStatus {
    /// `1 of 3 managers reachable (need 2)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of {} manager{} reachable (need {})",
            self.reachable,
            self.voters,
            if self.voters == 1 { "" } else { "s" },
            self.need()
        )
    }
}

/// One member of the Raft membership, for `node ls` and `swarm info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The Raft node id.
    pub id: NodeId,
    /// Its Raft address.
    pub addr: String,
    /// A voter (a manager counting towards quorum), not a learner catching up.
    pub voter: bool,
    /// The leader this node knows of.
    pub leader: bool,
    /// Seen recently: always for this node; on the leader, answered within about two election
    /// timeouts; on a follower only the leader can be seen (other followers show false: ask the
    /// leader for their state).
    pub reachable: bool,
    /// On the leader: the last log index known to be replicated to it (`None` elsewhere, or
    /// before anything was replicated).
    pub matched_index: Option<u64>,
}

/// What [`status`] needs to know about this node.
pub(crate) struct View<'a> {
    pub(crate) me: NodeId,
    pub(crate) is_leader: bool,
    pub(crate) leader: Option<NodeId>,
    pub(crate) voters: &'a BTreeSet<NodeId>,
    pub(crate) contacts: &'a Contacts,
    pub(crate) window: Duration,
}

impl View<'_> {
    /// Whether `id` counts as reachable from here.
    pub(crate) fn reachable(&self, id: NodeId) -> bool {
        if id == self.me {
            true
        } else if self.is_leader {
            self.contacts.acked_within(id, self.window)
        } else {
            Some(id) == self.leader && self.contacts.heard_within(id, self.window)
        }
    }
}

/// The quorum as this node sees it.
pub(crate) fn status(view: &View<'_>) -> QuorumStatus {
    QuorumStatus {
        reachable: view.voters.iter().filter(|&&v| view.reachable(v)).count(),
        voters: view.voters.len(),
        leader: if view.is_leader {
            Some(view.me)
        } else {
            view.leader.filter(|&l| l != view.me)
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_reads_as_the_error_says_it() {
        let s = QuorumStatus {
            reachable: 1,
            voters: 3,
            leader: Some(1),
        };
        assert_eq!(s.to_string(), "1 of 3 managers reachable (need 2)");
        assert!(!s.has_quorum());
        let one = QuorumStatus {
            reachable: 1,
            voters: 1,
            leader: Some(1),
        };
        assert_eq!(one.to_string(), "1 of 1 manager reachable (need 1)");
        assert!(one.has_quorum());
        assert_eq!(QuorumStatus { voters: 4, ..one }.need(), 3);
        assert_eq!(QuorumStatus { voters: 5, ..one }.need(), 3);
    }

    #[test]
    fn leader_counts_acks_follower_counts_the_leader() {
        let contacts = Contacts::default();
        let voters = BTreeSet::from([1, 2, 3]);
        let window = Duration::from_secs(60);
        contacts.acked(2);
        contacts.heard(3);
        let leader = View {
            me: 1,
            is_leader: true,
            leader: Some(1),
            voters: &voters,
            contacts: &contacts,
            window,
        };
        assert_eq!(
            status(&leader).reachable,
            2,
            "self and 2 (3 only called us)"
        );
        let follower = View {
            me: 2,
            is_leader: false,
            leader: Some(3),
            ..leader
        };
        assert_eq!(status(&follower).reachable, 2, "self and the leader 3");
        assert_eq!(status(&follower).leader, Some(3));
        let expired = View {
            window: Duration::ZERO,
            ..follower
        };
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(status(&expired).reachable, 1);
    }
}
