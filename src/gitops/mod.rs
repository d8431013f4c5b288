//! The GitOps watcher (`swarmctl stack watch`): keeps the cluster equal to a directory or a git repository of
//! stack files. `scan` (what the source holds: one stack per file or folder, its revision), `decide` (pure: plan,
//! deploy, record or leave one stack), `health` (pure: a stack's HEALTH from its services and tasks), `watcher`
//! (the rounds, through a `Cluster` the caller provides), `events` (file-system events, debounced), `git` (a
//! clone through the `git` binary), `webhook` (a signed push triggers a sync).
//!
//! Must not: reach the store or the manager but through the control API (the `Cluster` trait); the sync state
//! it keeps is written on the stack objects, so every client of every manager sees it.

pub mod decide;
pub mod events;
pub mod git;
pub mod health;
pub mod scan;
pub mod watcher;
pub mod webhook;

pub use watcher::{Cluster, ClusterError, Options, Source, Watcher};
