//! # Layout
//!
//! `swarm` is a declarative container orchestrator in the spirit of Docker Swarm mode. Modules, lowest first
//! (imports only run down this list):
//!
//! - [`model`]: the vocabulary (services, tasks, secrets, networks, stacks) as plain data; no I/O.
//! - [`stack`]: Compose-format stack files: load (YAML, anchors, merge keys, several files), interpolate,
//!   validate (our JSON Schema plus semantic checks), normalize, convert to model specs.
//! - [`store`]: the replicated state: `ClusterState` tables and indexes, ops carrying the version they were
//!   computed from, deterministic all-or-nothing apply of one batch per Raft entry, events and a gap-free
//!   `watch`; `store::raft` is the openraft glue (redb log, vote and snapshots, a byte-level state machine
//!   and transport) and keeps every openraft type inside it.
//! - [`exec`]: task runtimes behind `Executor`/`Controller`: the process executor (a supervising shim per task,
//!   logs in files, secrets on tmpfs, re-adoption after a daemon crash) and a scripted fake for simulations.
//! - [`pki`]: the cluster's own CA, `SWMTKN-1` join tokens, node certificates with the role in their OU,
//!   renewal timing, 0600 atomic key files and the mutual-TLS rustls configurations.
//! - [`cli`]: `swarmctl`'s commands and their output.

pub mod agent;
pub mod api;
pub mod cli;
pub mod exec;
pub mod manager;
pub mod model;
pub mod node;
pub mod pki;
pub mod secrets;
pub mod stack;
pub mod store;
pub mod transport;
pub mod util;
