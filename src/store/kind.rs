//! The kinds of stored objects: the one definition `state`, `ops` and `touched` share (in its own file so that
//! none of them imports another for it).

use std::fmt;

use serde::{Deserialize, Serialize};

/// The kinds of stored objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ObjectKind {
    /// A service.
    Service,
    /// A task.
    Task,
    /// A node.
    Node,
    /// A secret.
    Secret,
    /// A config.
    Config,
    /// A network.
    Network,
    /// A stack (keyed by name).
    Stack,
    /// A restart history (keyed by `RestartKey::id`).
    RestartHistory,
    /// The cluster object.
    Cluster,
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            ObjectKind::Service => "service",
            ObjectKind::Task => "task",
            ObjectKind::Node => "node",
            ObjectKind::Secret => "secret",
            ObjectKind::Config => "config",
            ObjectKind::Network => "network",
            ObjectKind::Stack => "stack",
            ObjectKind::RestartHistory => "restart history",
            ObjectKind::Cluster => "cluster",
        };
        f.write_str(name)
    }
}
