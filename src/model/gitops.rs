//! What a GitOps watcher records on the stacks it keeps (`Stack.source`): where the files come from, the
//! revision it last saw, whether the cluster matches it (sync) and the last error. Any client of any manager
//! reads it with `stack ls` / `stack status`; only the watcher (through the control API) writes it.
//!
//! Must not: do I/O, read a clock or decide anything (the watcher's logic is `gitops`).

use serde::{Deserialize, Serialize};

/// Whether the cluster holds what the source says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncState {
    /// The stack's services are what the source revision asks for.
    #[default]
    Synced,
    /// They differ: the source changed and is not applied yet, or someone changed the stack by hand (drift).
    OutOfSync,
    /// The source revision could not be applied: its files do not load, the deploy was refused, or its update
    /// rolled back. Not retried until the source changes.
    Failed,
}

impl SyncState {
    /// The name shown in SYNC (`Synced`, `OutOfSync`, `Failed`).
    pub fn name(self) -> &'static str {
        match self {
            SyncState::Synced => "Synced",
            SyncState::OutOfSync => "OutOfSync",
            SyncState::Failed => "Failed",
        }
    }
}

/// A stack's source as a watcher recorded it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackSource {
    /// The watcher's source: `dir:/abs/path` or `git:URL#branch:path`. A watcher prunes only stacks carrying
    /// its own source, never one deployed by hand.
    pub source: String,
    /// The stack's file or folder inside the source (`web.yml`, `api/`).
    pub path: String,
    /// The source revision last seen: a commit id, or `sha256:` + the hash of the stack's files.
    pub revision: String,
    /// Whether the cluster matches `revision`.
    pub sync: SyncState,
    /// The last error (a file that does not load, a refused deploy, a rolled-back update); empty when none.
    pub error: String,
    /// The revision the stack was last deployed from by the watcher.
    pub applied_revision: String,
    /// When the watcher last deployed it (unix millis, the manager's clock).
    pub applied_at: u64,
    /// When this record was written (unix millis, the manager's clock).
    pub updated_at: u64,
}
