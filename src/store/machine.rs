//! `StoreStateMachine`: the bridge from `raft::StateMachine` (opaque bytes at a log index) to the `Store`:
//! decodes each committed entry as a `Batch`, applies it, and answers with the encoded `ApplyResponse`;
//! snapshots and restores the whole `ClusterState`.
//!
//! Must not: panic on entry or snapshot bytes (they come from the log and from peers), or do anything but
//! decode, apply and encode.

use super::ops::{encode_response, ApplyResponse, Batch, BatchRejected, Rejection};
use super::raft::StateMachine;
use super::state::ClusterState;
use super::watch::Store;

/// The Raft state machine over a [`Store`]; hand it to `raft::RaftNode` and keep a clone of the store.
#[derive(Clone, Debug, Default)]
pub struct StoreStateMachine {
    store: Store,
}

impl StoreStateMachine {
    /// A state machine applying to `store`.
    pub fn new(store: Store) -> StoreStateMachine {
        StoreStateMachine { store }
    }

    /// The store it applies to.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Decodes and applies one entry (the typed form of [`StateMachine::apply`]).
    pub fn apply_entry(&self, index: u64, command: &[u8]) -> ApplyResponse {
        match Batch::decode(command) {
            Ok(batch) => self.store.apply(index, &batch),
            Err(e) => Err(BatchRejected {
                index,
                op: None,
                reason: Rejection::Malformed {
                    reason: e.to_string(),
                },
            }),
        }
    }
}

impl StateMachine for StoreStateMachine {
    fn apply(&mut self, index: u64, command: &[u8]) -> Vec<u8> {
        let response = self.apply_entry(index, command);
        encode_response(&response).unwrap_or_else(|e| {
            tracing::error!(index, error = %e, "cannot encode the apply response");
            Vec::new()
        })
    }

    fn snapshot(&self) -> Vec<u8> {
        self.store
            .view(ClusterState::to_snapshot)
            .unwrap_or_else(|e| {
                // An empty snapshot is refused on restore rather than silently restoring an empty state.
                tracing::error!(error = %e, "cannot encode the store snapshot");
                Vec::new()
            })
    }

    fn restore(&mut self, index: u64, snapshot: &[u8]) -> Result<(), String> {
        let state = ClusterState::from_snapshot(snapshot).map_err(|e| e.to_string())?;
        self.store.restore(index, state);
        Ok(())
    }
}
