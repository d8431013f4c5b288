//! The vocabulary of the cluster: services, tasks, nodes, secrets, configs, networks and stacks, as plain data.
//!
//! Owns: the desired-state specs the stack converter produces and the store keeps. Must not: do I/O, read a
//! clock or generate randomness (ids and times are passed in), or depend on any other module of the crate.

pub mod cidr;
pub mod cluster;
pub mod constraint;
pub mod gitops;
pub mod limits;
pub mod meta;
pub mod netmap;
pub mod node;
pub mod objects;
pub mod plan;
pub mod service;
pub mod task;

pub use cidr::Cidr;
pub use cluster::*;
pub use constraint::{Constraint, ConstraintOp};
pub use gitops::{StackSource, SyncState};
pub use limits::Limits;
pub use meta::Meta;
pub use node::*;
pub use objects::*;
pub use plan::*;
pub use service::*;
pub use task::*;
