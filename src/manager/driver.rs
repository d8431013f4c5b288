//! The driver: on the leader, runs every controller (`CONTROLLERS`) over the current state whenever the store
//! changes, a controller asked to be requeued, or the periodic resync comes (so a missed event is harmless), and
//! proposes each controller's plan as one batch. A rejected (stale) batch is simply recomputed next round.
//!
//! Must not: decide anything itself; followers run nothing (invariant 2).

use std::time::Duration;

use super::proposer::{ProposeError, Proposer};
use super::{Plan, CONTROLLERS};
use crate::store::{ClusterState, Store};
use crate::util::{IdSource, Millis};

/// Longest time between two rounds, even when nothing happens.
pub const RESYNC: Duration = Duration::from_secs(2);

/// Runs controllers on the leader.
pub struct Driver {
    store: Store,
    proposer: Proposer,
    ids: Box<dyn IdSource + Send>,
}

/// One round over `state`: every controller's plan, in order (each computed on the same state).
pub fn plans(
    state: &ClusterState,
    now: Millis,
    ids: &mut dyn IdSource,
) -> Vec<(&'static str, Plan)> {
    CONTROLLERS
        .iter()
        .map(|(name, controller)| (*name, controller(state, now, ids)))
        .collect()
}

impl Driver {
    /// A driver over this node's store and proposer.
    pub fn new(store: Store, proposer: Proposer, ids: Box<dyn IdSource + Send>) -> Self {
        Driver {
            store,
            proposer,
            ids,
        }
    }

    /// Runs until the process ends.
    pub async fn run(mut self) {
        loop {
            if !self.proposer.is_leader() {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            let (_, mut changes) = self.store.watch();
            let wake = self.round().await;
            tokio::select! {
                _ = changes.recv() => {
                    // let a burst of changes (a deploy, a batch of status reports) settle into one round
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                _ = tokio::time::sleep(wake) => {}
            }
        }
    }

    /// Runs each controller on the latest state and proposes its plan; returns when to run again at the latest.
    async fn round(&mut self) -> Duration {
        let mut wake = RESYNC;
        for (name, controller) in CONTROLLERS {
            let now = self.proposer.clock().now();
            let plan = self.store.view(|s| controller(s, now, self.ids.as_mut()));
            if let Some(after) = plan.requeue_after {
                wake = wake.min(after.max(Duration::from_millis(10)));
            }
            if plan.ops.is_empty() {
                continue;
            }
            let n = plan.ops.len();
            match self.proposer.propose(plan.ops).await {
                Ok(_) => tracing::debug!(controller = name, ops = n, "applied"),
                Err(ProposeError::Rejected(r)) => {
                    tracing::debug!(controller = name, "stale plan, recomputing: {r}");
                    wake = Duration::from_millis(10);
                }
                Err(e) => {
                    tracing::warn!(controller = name, "cannot propose: {e}");
                    wake = wake.min(Duration::from_millis(500));
                }
            }
        }
        wake
    }
}
