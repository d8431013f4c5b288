//! The metadata every stored object carries (`Meta`). The lowest file of the model: the other object files use
//! it, it uses none of them.

use serde::{Deserialize, Serialize};

/// Metadata every stored object carries; set by the store when it applies an entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// The Raft log index of the entry that last changed the object (increases monotonically).
    pub version: u64,
    /// When the object was created (unix millis, the proposer's time).
    pub created_at: u64,
    /// When the object was last changed (unix millis, the proposer's time).
    pub updated_at: u64,
}
