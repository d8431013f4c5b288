//! Raft consensus for the store, on openraft 0.9: a durable log and vote on redb, snapshots kept
//! with the last applied log id and membership, and a state machine adapter over a user
//! [`StateMachine`]. Commands and responses are opaque bytes: this module knows nothing of the
//! model types. No openraft type appears in this module's public API.

#![allow(dead_code)]

mod db;
mod error;
mod log_store;
mod state_machine;
mod types;

pub use error::{Error, Result};
pub use state_machine::StateMachine;
pub use types::{NodeId, NodeInfo};
