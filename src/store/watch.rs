//! `Store`: the shared, lockable `ClusterState` plus two feeds of its changes. Readers use [`Store::view`].
//! Components that only need to know *that* something changed (the driver, the dispatcher's assignment
//! streams) use [`Store::subscribe`]: a version counter bumped under the write lock, nothing copied, bursts
//! coalesced, no change missed. Consumers that need a snapshot and every later event use [`Store::watch`].
//!
//! Must not: change the state except through `apply` (committed Raft entries, via the state machine) and
//! `restore` (a Raft snapshot); must not block on subscribers (a lagging receiver is told it lagged).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use tokio::sync::{broadcast, watch};

use super::ops::{Applied, ApplyResponse, Batch, Commit};
use super::state::ClusterState;
use super::touched::Touched;

/// How many changes a subscriber may fall behind before it is told it lagged (and must `watch` again).
pub const WATCH_CAPACITY: usize = 1024;

/// How many touched keys [`Store::touched_since`] keeps, over the latest changes (older ones are dropped, and
/// a reader further behind is told to look at everything).
pub const TOUCHED_CAPACITY: usize = 200_000;

/// The touched keys of the latest changes, by store version (`None`: a restore, where everything changed).
#[derive(Debug, Default)]
struct Recent {
    entries: VecDeque<(u64, Option<Arc<Touched>>)>,
    keys: usize,
}

impl Recent {
    fn push(&mut self, version: u64, touched: Option<Arc<Touched>>) {
        self.keys += touched.as_ref().map_or(1, |t| t.len());
        self.entries.push_back((version, touched));
        while self.keys > TOUCHED_CAPACITY && self.entries.len() > 1 {
            if let Some((_, old)) = self.entries.pop_front() {
                self.keys -= old.as_ref().map_or(1, |t| t.len());
            }
        }
    }
}

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
    /// How many times the state changed (applied batches and restores); bumped under the write lock.
    version: Arc<watch::Sender<u64>>,
    /// What the latest changes touched, by version; written under the write lock.
    recent: Arc<Mutex<Recent>>,
}

/// A subscription to "the store changed" (see [`Store::subscribe`]): holds no state, only the last version
/// it saw. Gap-free: a change made after the subscription (or after the last [`Changes::changed`]
/// returned) always wakes the next `changed`; coalescing: any number of changes in between wake it once.
#[derive(Debug)]
pub struct Changes {
    version: watch::Receiver<u64>,
}

impl Changes {
    /// Waits until the store changed since this subscription was made or `changed` last returned, and
    /// returns the store's version then (or since [`Changes::mark_seen`]). Read what you need *after* it returns: every change up to that
    /// version is then visible. Waits forever once the store is gone (nothing can change any more).
    pub async fn changed(&mut self) -> u64 {
        if self.version.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
        *self.version.borrow_and_update()
    }

    /// Takes every change so far as seen: the next [`Changes::changed`] waits for a later one. Call it right
    /// before reading the state a round works on.
    pub fn mark_seen(&mut self) -> u64 {
        *self.version.borrow_and_update()
    }

    /// Whether the store changed since the last [`Changes::changed`] (or the subscription), without waiting.
    pub fn has_changed(&self) -> bool {
        self.version.has_changed().unwrap_or(false)
    }
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
        let (version, _) = watch::channel(0);
        Store {
            state: Arc::new(RwLock::new(state)),
            changes,
            version: Arc::new(version),
            recent: Arc::default(),
        }
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, Recent> {
        self.recent.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The store's version now, and what every change after `version` up to it touched: `None` when that is
    /// not known any more (too far behind, or a restore replaced the state: look at everything). Copies only
    /// the touched keys of those changes.
    pub fn touched_since(&self, version: u64) -> (u64, Option<Touched>) {
        let recent = self.recent();
        let now = self.version();
        if version >= now {
            return (now, Some(Touched::new()));
        }
        // every version in version+1..=now must still be held
        match recent.entries.front() {
            Some((oldest, _)) if *oldest <= version + 1 => {}
            _ => return (now, None),
        }
        let mut out = Touched::new();
        for (v, t) in recent
            .entries
            .iter()
            .filter(|(v, _)| *v > version && *v <= now)
        {
            match t {
                Some(t) => out.extend(t),
                None => {
                    tracing::trace!(version = v, "restore since: everything changed");
                    return (now, None);
                }
            }
        }
        (now, Some(out))
    }

    /// Whether any change after `version` touched something `concerns` says matters, without copying what
    /// they touched: `true` when that is not known any more (too far behind, or a restore).
    pub fn touched_any_since(&self, version: u64, concerns: impl Fn(&Touched) -> bool) -> bool {
        let recent = self.recent();
        let now = self.version();
        if version >= now {
            return false;
        }
        match recent.entries.front() {
            Some((oldest, _)) if *oldest <= version + 1 => {}
            _ => return true,
        }
        recent
            .entries
            .iter()
            .filter(|(v, _)| *v > version && *v <= now)
            .any(|(_, t)| t.as_ref().is_none_or(|t| concerns(t)))
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

    /// A subscription to changes from now on (nothing is copied; see [`Changes`]).
    pub fn subscribe(&self) -> Changes {
        let mut version = self.version.subscribe();
        version.mark_unchanged();
        Changes { version }
    }

    /// How many times the state changed so far (applied batches and restores).
    pub fn version(&self) -> u64 {
        *self.version.borrow()
    }

    /// A copy of the current state and a receiver of every change after it, with no gap and no overlap: the
    /// copy is taken and the subscription made under one read lock, and changes are sent under the write lock.
    /// This copies the whole state: use it only when the snapshot is needed ([`Store::subscribe`] otherwise).
    pub fn watch(&self) -> (ClusterState, broadcast::Receiver<Change>) {
        let state = self.read();
        let receiver = self.changes.subscribe();
        (state.clone(), receiver)
    }

    /// Applies the entry at log `index` and announces its events. Only the Raft state machine calls this.
    pub fn apply(&self, index: u64, batch: &Batch) -> ApplyResponse {
        let mut state = self.write();
        match state.apply_batch_touched(index, batch) {
            Ok((events, touched)) => {
                let changes = events.len();
                let touched = Arc::new(touched);
                let mut recent = self.recent();
                self.version.send_modify(|v| *v += 1);
                recent.push(self.version(), Some(touched.clone()));
                drop(recent);
                // No receivers is fine: nobody is watching.
                let _ = self.changes.send(Change::Commit(Commit {
                    index,
                    events,
                    touched,
                }));
                Ok(Applied { index, changes })
            }
            Err(rejected) => Err(rejected),
        }
    }

    /// Replaces the whole state (from a Raft snapshot) and tells subscribers to start over.
    pub fn restore(&self, index: u64, state: ClusterState) {
        let mut current = self.write();
        *current = state;
        let mut recent = self.recent();
        self.version.send_modify(|v| *v += 1);
        recent.push(self.version(), None);
        drop(recent);
        let _ = self.changes.send(Change::Reset { index });
    }
}
