//! # Layout
//!
//! `swarm` is a declarative container orchestrator in the spirit of Docker Swarm mode. Modules, lowest first
//! (imports only run down this list):
//!
//! - [`model`]: the vocabulary (services, tasks, secrets, networks, stacks) as plain data; no I/O.
//! - [`stack`]: Compose-format stack files: load (YAML, anchors, merge keys, several files), interpolate,
//!   validate (our JSON Schema plus semantic checks), normalize, convert to model specs.
//! - [`cli`]: `swarmctl`'s commands and their output.

pub mod cli;
pub mod model;
pub mod stack;
