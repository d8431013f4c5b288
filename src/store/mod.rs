//! The cluster store: desired and observed state, changed only by applying committed Raft entries.
//!
//! Files: `state` ([`ClusterState`]: tables and indexes, read accessors), `ops` ([`Op`], [`Batch`],
//! [`Event`], [`Rejection`] and their versioned encodings), `apply` (deterministic, all-or-nothing apply of a
//! batch), `snapshot` (whole-state snapshots), `watch` ([`Store`]: shared state, `view`, the copy-free `subscribe`
//! and the gap-free `watch`),
//! `machine` ([`StoreStateMachine`], the `raft::StateMachine` over the store), `touched` ([`Touched`]: the keys an
//! entry touched, on the change feed).
//!
//! `raft` owns the consensus glue (log, snapshots, leadership); it knows nothing of the model types and
//! must not: the store hands it opaque command bytes and a `raft::StateMachine` to apply them to.
//! Nothing here generates ids, reads a clock or does I/O: proposers put ids and times in the ops.

mod apply;
mod kind;
mod machine;
mod ops;
pub mod raft;
mod snapshot;
mod state;
mod touched;
mod watch;

#[cfg(test)]
mod limit_tests;
#[cfg(test)]
mod network_tests;
#[cfg(test)]
mod prop_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod watch_tests;

pub use machine::StoreStateMachine;
pub use ops::{
    decode_response, encode_response, Applied, ApplyResponse, Batch, BatchRejected, CodecError,
    Commit, Event, Op, Rejection, FORMAT_VERSION,
};
pub use state::{publishes_ingress, unplaced, AddressHolder, ClusterState, NodeLoad, ObjectKind};
pub use touched::Touched;
pub use watch::{Change, Changes, Store, WATCH_CAPACITY};
