//! # agent — the worker side of a node
//!
//! Owns: converting assigned tasks into executor specs ([`spec`], with docker's service
//! [`templates`]), the [`Worker`] that converges the local runtime to the node's complete set of
//! assignments (adopting tasks that survived a daemon restart, DESIGN invariant 5), the per-task
//! runners with their [`health`] checks, and the monotonic [`StatusReport`]s it emits.
//!
//! Must not: depend on the transport (the dispatcher session feeds [`Assignments`] in and
//! forwards reports out), write desired state, or log secret data.

pub mod health;
pub mod report;
mod runner;
mod shared;
pub mod spec;
pub mod templates;
pub mod worker;

#[cfg(test)]
mod health_tests;
#[cfg(test)]
mod process_tests;

pub use health::{health_check, HealthCheck};
pub use report::StatusReport;
pub use shared::{DEFAULT_DRAIN_DELAY, DEFAULT_START_PARALLELISM};
pub use spec::{process_spec, SpecError, TaskContext};
pub use worker::{Assignments, Worker, WorkerError};
