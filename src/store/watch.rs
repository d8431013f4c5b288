//! `Store`: the shared, lockable `ClusterState` plus a broadcast of what each applied batch changed. Readers
//! use [`Store::view`]; controllers use [`Store::watch`] to get a snapshot and every later change, gap-free.
//!
//! Must not: change the state except through `apply` (committed Raft entries, via the state machine) and
//! `restore` (a Raft snapshot); must not block on subscribers (a lagging receiver is told it lagged).

use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use tokio::sync::broadcast;

use super::ops::{Applied, ApplyResponse, Batch, Commit};
use super::state::ClusterState;

/// How many changes a subscriber may fall behind before it is told it lagged (and must `watch` again).
pub const WATCH_CAPACITY: usize = 1024;

/// What subscribers receive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A batch was applied.
    Commit(Commit),
    /// The state was replaced by a Raft snapshot taken at `index`: discard what you hold and `watch` again.
    Reset {
        /// The snapshot's log index.
        index: u64,
    },
}

/// The shared store. Clones share the same state and subscribers.
#[derive(Clone, Debug)]
pub struct Store {
    state: Arc<RwLock<ClusterState>>,
    changes: broadcast::Sender<Change>,
}

impl Default for Store {
    fn default() -> Self {
        Store::new(ClusterState::new())
    }
}

impl Store {
    /// A store holding `state`.
    pub fn new(state: ClusterState) -> Store {
        let (changes, _) = broadcast::channel(WATCH_CAPACITY);
        Store {
            state: Arc::new(RwLock::new(state)),
            changes,
        }
    }

    // Apply is all-or-nothing and never panics midway on valid input, so a poisoned lock still guards a
    // consistent state: recover it instead of propagating the panic.
    fn read(&self) -> RwLockReadGuard<'_, ClusterState> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, ClusterState> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on a consistent view of the state (under the read lock: keep it short).
    pub fn view<R>(&self, f: impl FnOnce(&ClusterState) -> R) -> R {
        f(&self.read())
    }

    /// A copy of the current state and a receiver of every change after it, with no gap and no overlap: the
    /// copy is taken and the subscription made under one read lock, and changes are sent under the write lock.
    pub fn watch(&self) -> (ClusterState, broadcast::Receiver<Change>) {
        let state = self.read();
        let receiver = self.changes.subscribe();
        (state.clone(), receiver)
    }

    /// Applies the entry at log `index` and announces its events. Only the Raft state machine calls this.
    pub fn apply(&self, index: u64, batch: &Batch) -> ApplyResponse {
        let mut state = self.write();
        match state.apply_batch(index, batch) {
            Ok(events) => {
                let changes = events.len();
                // No receivers is fine: nobody is watching.
                let _ = self.changes.send(Change::Commit(Commit { index, events }));
                Ok(Applied { index, changes })
            }
            Err(rejected) => Err(rejected),
        }
    }

    /// Replaces the whole state (from a Raft snapshot) and tells subscribers to start over.
    pub fn restore(&self, index: u64, state: ClusterState) {
        let mut current = self.write();
        *current = state;
        let _ = self.changes.send(Change::Reset { index });
    }
}
