//! Raft consensus for the store, on openraft 0.9: a durable log and vote on redb, snapshots kept
//! with the last applied log id and membership, a state machine adapter over a user
//! [`StateMachine`], and a byte-level network edge ([`RaftTransport`]) for the gRPC transport to
//! implement. Commands and responses are opaque bytes: this module knows nothing of the model types.
//! No openraft type appears in this module's public API.
//!
//! Files: `types` (openraft type config), `db` (redb tables, format version and migration, the
//! `Disk` handle), `record` (the checksummed value format), `guard` (a storage panic caught),
//! `log_store` (log + vote storage), `state_machine` (apply, snapshots), `space` (the free-space
//! check before proposals), `network` (wire encoding, transport trait), `node` ([`RaftNode`],
//! [`RaftSettings`]), `error` ([`Error`]).
//!
//! Storage faults never pass silently: every stored value is verified on read, a mismatch or a
//! panic of redb stops Raft with an error naming the file and the entry (or snapshot), and
//! [`RaftNode::stopped`] reports it.

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

pub use error::{Error, Result};
pub use force::ForcedCluster;
pub use network::{NoPeers, RaftRpc, RaftTransport, TransportError};
pub use node::{database_file, RaftMetricsSummary, RaftNode, RaftRole, RaftSettings};
pub use quorum::{Member, QuorumStatus};
pub use state_machine::StateMachine;
pub use types::{NodeId, NodeInfo};
