//! The one error type `store::raft` shows its callers, and the conversions from openraft's errors
//! into it. Openraft's error types stop here.

use std::path::PathBuf;

use openraft::error::{ClientWriteError, Fatal, InitializeError, RaftError};

use super::quorum::QuorumStatus;
use super::types::{NodeId, NodeInfo};

/// What can go wrong running the Raft node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The Raft state directory or database could not be opened or read (I/O error, corrupt data,
    /// unknown format version, database locked by another process).
    #[error("{}", storage_display(path, message))]
    Storage {
        /// The Raft database file, or the state directory when the file could not be opened.
        path: PathBuf,
        /// What went wrong (naming the file when it is known).
        message: String,
    },
    /// Too little free space is left on the Raft state directory's filesystem: the write was refused
    /// before the log could fail. Reads keep working; writes resume once space is freed.
    #[error(
        "no space left on {}: {} available, below the {} swarmd keeps free for the Raft log; \
         writes are refused until space is freed (reads keep working)",
        path.display(), human(*free), human(*reserve)
    )]
    NoSpace {
        /// The Raft state directory.
        path: PathBuf,
        /// Bytes available.
        free: u64,
        /// Bytes kept in reserve.
        reserve: u64,
    },
    /// The settings are inconsistent (for example an election timeout not above the heartbeat).
    #[error("invalid raft settings: {0}")]
    Settings(String),
    /// This node is not the leader; `leader` is the leader it knows of, if any.
    #[error("not the raft leader; leader is {}", leader_display(*.leader, .leader_addr.as_deref()))]
    NotLeader {
        /// The current leader's node id, if known.
        leader: Option<NodeId>,
        /// The current leader's advertise address, if known.
        leader_addr: Option<String>,
    },
    /// This node leads but cannot reach a majority of the voters: the write was refused before it
    /// was proposed (nothing was applied). Reads of the local store keep working.
    #[error("no quorum: {0}")]
    NoQuorum(QuorumStatus),
    /// The write was proposed but not confirmed: quorum was lost while it was in flight, or it did
    /// not commit within [`RaftSettings::write_timeout`](super::RaftSettings::write_timeout). It
    /// may or may not have been applied; the caller should check and retry.
    #[error("{0}; the write may or may not have been applied")]
    OutcomeUnknown(String),
    /// Raft has stopped (shut down, or a fatal storage error); the node must be restarted.
    #[error("raft stopped: {0}")]
    Stopped(String),
    /// A membership change was refused (for example another change is in progress).
    #[error("raft membership change refused: {0}")]
    Membership(String),
    /// The cluster could not be initialized.
    #[error("cannot initialize the raft cluster: {0}")]
    Initialize(String),
    /// A Raft RPC could not be decoded or its reply encoded.
    #[error("bad raft rpc payload: {0}")]
    Rpc(String),
    /// Waiting for a Raft condition timed out.
    #[error("timed out waiting for {0}")]
    Timeout(String),
}

/// Result with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A byte count for people: `12.5 MiB`.
fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn storage_display(path: &std::path::Path, message: &str) -> String {
    let shown = path.display().to_string();
    if message.contains(&shown) {
        message.to_string()
    } else {
        format!("raft storage in {shown}: {message}")
    }
}

fn leader_display(leader: Option<NodeId>, addr: Option<&str>) -> String {
    match (leader, addr) {
        (Some(id), Some(addr)) => format!("{id} at {addr}"),
        (Some(id), None) => id.to_string(),
        (None, _) => "unknown".to_string(),
    }
}

pub(crate) fn from_fatal(e: Fatal<NodeId>) -> Error {
    Error::Stopped(e.to_string())
}

pub(crate) fn from_client_write(e: RaftError<NodeId, ClientWriteError<NodeId, NodeInfo>>) -> Error {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => Error::NotLeader {
            leader: f.leader_id,
            leader_addr: f.leader_node.map(|n| n.addr),
        },
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            Error::Membership(e.to_string())
        }
        RaftError::Fatal(f) => from_fatal(f),
    }
}

pub(crate) fn from_initialize(e: RaftError<NodeId, InitializeError<NodeId, NodeInfo>>) -> Error {
    match e {
        RaftError::APIError(e) => Error::Initialize(e.to_string()),
        RaftError::Fatal(f) => from_fatal(f),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(64 << 20), "64.0 MiB");
        assert_eq!(human(3 << 29), "1.5 GiB");
    }

    #[test]
    fn quorum_errors_read_plainly() {
        let e = Error::NoQuorum(QuorumStatus {
            reachable: 1,
            voters: 3,
            leader: Some(1),
        });
        assert_eq!(
            e.to_string(),
            "no quorum: 1 of 3 managers reachable (need 2)"
        );
        let e = Error::OutcomeUnknown("not committed within 10s".into());
        assert_eq!(
            e.to_string(),
            "not committed within 10s; the write may or may not have been applied"
        );
    }

    #[test]
    fn not_leader_names_the_leader() {
        let e = Error::NotLeader {
            leader: Some(3),
            leader_addr: Some("10.0.0.3:4242".into()),
        };
        assert_eq!(
            e.to_string(),
            "not the raft leader; leader is 3 at 10.0.0.3:4242"
        );
        let e = Error::NotLeader {
            leader: None,
            leader_addr: None,
        };
        assert_eq!(e.to_string(), "not the raft leader; leader is unknown");
    }
}
