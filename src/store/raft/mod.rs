//! Raft consensus for the store, on openraft 0.9: a durable log and vote on redb, snapshots kept
//! with the last applied log id and membership, a state machine adapter over a user
//! [`StateMachine`], and a byte-level network edge ([`RaftTransport`]) for the gRPC transport to
//! implement. Commands and responses are opaque bytes: this module knows nothing of the model types.
//! No openraft type appears in this module's public API.
//!
//! Files: `types` (openraft type config), `db` (redb tables, format version and migration, the
//! `Disk` handle), `record` (the checksummed value format), `guard` (a storage panic caught),
//! `log_store` (log + vote storage), `state_machine` (apply, snapshots), `space` (the free-space
//! check before proposals), `network` (wire encoding, transport trait, reachability recorded per
//! call, oversized AppendEntries batches cut), `quorum` (who answered lately: [`QuorumStatus`],
//! [`Member`]), `node` ([`RaftNode`], [`RaftSettings`]; proposals refused at once without quorum
//! and bounded in time), `membership` (learners, promote/demote/remove guarded by quorum,
//! [`RaftNode::members`]), `force` ([`RaftNode::force_new_cluster`]), `error` ([`Error`]).
//!
//! Storage faults never pass silently: every stored value is verified on read, a mismatch or a
//! panic of redb stops Raft with an error naming the file and the entry (or snapshot), and
//! [`RaftNode::stopped`] reports it.
//!
//! Writes never hang: a leader that cannot reach a majority refuses them ([`Error::NoQuorum`]), a
//! follower names the leader ([`Error::NotLeader`]), and a proposal in flight when quorum goes, or
//! past [`RaftSettings::write_timeout`], ends as [`Error::OutcomeUnknown`]. Openraft 0.9 keeps a
//! cut-off leader in its leader state (no check-quorum), so [`RaftNode::is_leader`] and the leader
//! watch report such a node as not leading.

mod db;
mod error;
mod force;
mod guard;
mod log_store;
mod membership;
mod network;
mod node;
mod quorum;
mod record;
mod space;
mod state_machine;
mod types;

#[cfg(test)]
mod cluster_tests;
#[cfg(test)]
mod fault_tests;
#[cfg(test)]
mod tests;

mod addrs;
pub use error::{Error, Result};
pub use force::ForcedCluster;
pub use network::{NoPeers, RaftRpc, RaftTransport, TransportError};
pub use node::{database_file, RaftMetricsSummary, RaftNode, RaftRole, RaftSettings};
pub use quorum::{Member, QuorumStatus};
pub use state_machine::StateMachine;
pub use types::{NodeId, NodeInfo};
