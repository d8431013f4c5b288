//! # Layout
//!
//! `swarm` is a declarative container orchestrator in the spirit of Docker Swarm mode. Modules, lowest first
//! (a module imports only modules above it in this list, and sibling files never import each other in a circle;
//! `tests/integration/layout.rs` checks both):
//!
//! - [`util`]: clocks (system, manual) and id sources (random, sequential); no other module of the crate.
//! - [`model`]: the vocabulary (services, tasks, nodes, secrets, networks, stacks, plans) as plain data; no I/O.
//! - [`secrets`]: the cluster data key (a 0600 file) and XChaCha20-Poly1305 sealing of secret data; the autolock
//!   unlock key and its wrapped-file format.
//! - [`pki`]: the cluster's own CA, `SWMTKN-1` join tokens, node certificates with the role in their OU,
//!   renewal timing, root CA rotation (cross-signing, the `Authority` a manager signs and trusts with), 0600
//!   atomic key files and the mutual-TLS rustls configurations.
//! - [`network`]: the node's data plane in the kernel (root): per network a bridge and, across nodes, a VXLAN
//!   device with its forwarding table kept from the managers' network map; outbound NAT (nftables); a task's
//!   veth pairs plumbed into its network namespace; a converge loop that removes what the map no longer has.
//! - [`exec`]: task runtimes behind `Executor`/`Controller`: the process executor (a supervising shim per task,
//!   logs in files, secrets on tmpfs, re-adoption after a daemon crash, tasks isolated like containers when
//!   root), the Docker executor (feature `docker`) and a scripted fake for simulations.
//! - [`netsvc`]: service networking on a node from the `model::netmap` it receives: the resolver (feature
//!   `dns`, hickory-server), VIP load balancing as nftables DNAT in each task's namespace, published ports by a
//!   userspace TCP/UDP proxy.
//! - [`api`]: the gRPC messages and services generated from `proto/` (control API, dispatcher).
//! - [`stack`]: Compose-format stack files: load (YAML, anchors, merge keys, several files), interpolate,
//!   validate (our JSON Schema plus semantic checks), normalize, convert to model specs.
//! - [`store`]: the replicated state: `ClusterState` tables and indexes, ops carrying the version they were
//!   computed from, deterministic all-or-nothing apply of one batch per Raft entry, a change feed; `store::raft`
//!   is the openraft glue (redb log, vote and snapshots, a byte-level state machine and transport) and keeps
//!   every openraft type inside it.
//! - [`transport`]: the mutual-TLS listener (the peer's node identity travels with each request), the mTLS
//!   client connector and the unix-socket listener.
//! - [`agent`]: the worker side: converges the local runtime to the node's assignment set, health checks,
//!   task templates, reports.
//! - [`manager`]: the leader side: pure controllers (orchestrators, scheduler, restart, reaper, updater, gc),
//!   the driver that runs them, the proposer, the deploy planner, the control API and the dispatcher.
//! - [`node`]: `swarmd`'s wiring: the state dir's identity and key files (autolock, CA rotation), the agent's
//!   session with the dispatcher, and the lifecycle that starts every part and shuts them all down.
//! - [`gitops`]: the GitOps watcher (`stack watch`): a directory or git repository of stack files kept applied
//!   through the control API, drift reverted, sync state recorded on the stacks; its decisions are pure.
//! - [`cli`]: `swarmctl`'s commands and their output.

pub mod agent;
pub mod api;
pub mod cli;
pub mod exec;
pub mod gitops;
pub mod manager;
pub mod model;
pub mod netsvc;
pub mod network;
pub mod node;
pub mod pki;
pub mod secrets;
pub mod stack;
pub mod store;
pub mod transport;
pub mod util;
