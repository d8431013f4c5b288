//! # agent — the worker side of a node
//!
//! Owns: converting assigned tasks into executor specs ([`spec`], with docker's service
//! [`templates`]).
//!
//! Must not: depend on the transport, write desired state, or log secret data.

pub mod spec;
pub mod templates;

pub use spec::{process_spec, SpecError, TaskContext};
