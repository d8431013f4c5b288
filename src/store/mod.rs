//! The cluster store: desired and observed state, changed only by applying committed Raft entries.
//!
//! `raft` owns the consensus glue (log, snapshots, leadership); it knows nothing of the model types and
//! must not: the store hands it opaque command bytes and a `raft::StateMachine` to apply them to.

pub mod raft;
