//! Proposing store operations through Raft: encode a `Batch`, replicate it, wait until it is applied on this node,
//! and decode whether the store applied or rejected it.
//!
//! Must not: decide what to propose (controllers and the control API do), or retry on its own.

use std::sync::Arc;

use crate::store::raft::{self, RaftNode};
use crate::store::{decode_response, Applied, Batch, BatchRejected, Op};
use crate::util::Clock;

/// Why a proposal did not apply.
#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    /// The store refused the batch (a stale version, a name conflict, ...): nothing changed.
    #[error("{0}")]
    Rejected(BatchRejected),
    /// This node is not the leader.
    #[error("this node is not the leader{}", .leader.as_ref().map(|l| format!(" (the leader is {l})")).unwrap_or_default())]
    NotLeader {
        /// The leader's address, when known.
        leader: Option<String>,
    },
    /// The leader cannot reach a majority of the managers: nothing was proposed.
    #[error("{0}")]
    NoQuorum(String),
    /// The entry was sent but its fate is unknown (quorum lost, a leader change, a timeout): it may or may not
    /// have been applied.
    #[error("{0}: check whether it applied, then retry")]
    OutcomeUnknown(String),
    /// Raft could not commit the entry.
    #[error("the cluster could not commit the change: {0}")]
    Raft(String),
    /// The state directory's disk is below its free-space reserve: refused before Raft, nothing changed.
    /// Writes resume once space is freed.
    #[error("{0}")]
    NoSpace(String),
}

/// Proposes batches on behalf of the leader's components.
#[derive(Clone)]
pub struct Proposer {
    raft: Arc<RaftNode>,
    clock: Arc<dyn Clock>,
}

impl Proposer {
    /// A proposer over `raft`, stamping batches with `clock`.
    pub fn new(raft: Arc<RaftNode>, clock: Arc<dyn Clock>) -> Self {
        Proposer { raft, clock }
    }

    /// The clock batches are stamped with.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The Raft node proposals go to.
    pub fn raft(&self) -> &Arc<RaftNode> {
        &self.raft
    }

    /// Whether this node leads the cluster now.
    pub fn is_leader(&self) -> bool {
        self.raft.is_leader()
    }

    /// Proposes `ops` as one entry; returns once it is applied here (all of it) or rejected (none of it).
    pub async fn propose(&self, ops: Vec<Op>) -> Result<Applied, ProposeError> {
        let batch = Batch {
            ops,
            time: self.clock.now(),
        };
        let bytes = batch
            .encode()
            .map_err(|e| ProposeError::Raft(e.to_string()))?;
        let response = match self.raft.propose(bytes).await {
            Ok(r) => r,
            // no leader at all: say why, in the quorum's words
            Err(raft::Error::NotLeader { leader: None, .. }) => {
                let quorum = self.raft.quorum();
                return Err(if quorum.has_quorum() {
                    ProposeError::NotLeader { leader: None }
                } else {
                    ProposeError::NoQuorum(format!("no quorum: {quorum}"))
                });
            }
            Err(raft::Error::NotLeader { leader_addr, .. }) => {
                return Err(ProposeError::NotLeader {
                    leader: leader_addr,
                })
            }
            Err(e @ raft::Error::NoSpace { .. }) => {
                return Err(ProposeError::NoSpace(e.to_string()))
            }
            Err(e @ raft::Error::NoQuorum(_)) => return Err(ProposeError::NoQuorum(e.to_string())),
            Err(e @ raft::Error::OutcomeUnknown(_)) => {
                return Err(ProposeError::OutcomeUnknown(e.to_string()))
            }
            Err(e) => return Err(ProposeError::Raft(e.to_string())),
        };
        match decode_response(&response) {
            Ok(Ok(applied)) => Ok(applied),
            Ok(Err(rejected)) => Err(ProposeError::Rejected(rejected)),
            Err(e) => Err(ProposeError::Raft(format!(
                "undecodable apply response: {e}"
            ))),
        }
    }
}
