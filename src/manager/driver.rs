//! The driver: on the leader, runs every controller (`CONTROLLERS`) over the current state whenever the store
//! changes, a controller asked to be requeued, or the periodic resync comes (so a missed event is harmless), and
//! proposes each controller's plan as one batch. A rejected (stale) batch is recomputed next round; a controller
//! whose proposals keep failing backs off (exponentially, capped, reset once it succeeds).
//!
//! The round itself ([`round`]) runs over a small [`Propose`] trait, so the simulation harness runs the very
//! same round over its own store. Must not: decide anything itself; followers run nothing (invariant 2).

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use super::proposer::{ProposeError, Proposer};
use super::{Controller, Plan, CONTROLLERS};
use crate::store::{Op, Store};
use crate::util::{IdSource, Millis};

/// Longest time between two rounds, even when nothing happens.
pub const RESYNC: Duration = Duration::from_secs(2);

/// Soonest a requeued controller runs again.
const MIN_REQUEUE: Duration = Duration::from_millis(10);

/// First retry delay after a rejected (stale) plan.
pub const RETRY_REJECTED: Duration = Duration::from_millis(10);

/// First retry delay after any other propose error (no leader, no quorum).
pub const RETRY_ERROR: Duration = Duration::from_millis(500);

/// Longest a failing controller waits between two attempts.
pub const BACKOFF_CAP: Duration = Duration::from_secs(5);

/// What a round needs from its surroundings: a clock, the latest state, and a way to commit a batch.
pub trait Propose {
    /// Now, on the clock batches are stamped with.
    fn now(&self) -> Millis;
    /// Runs `controller` on the latest state at `now`.
    fn plan(&mut self, controller: Controller, now: Millis) -> Plan;
    /// Proposes `ops` (the plan of controller `name`) as one batch; resolves once applied or refused.
    fn propose(
        &mut self,
        name: &'static str,
        ops: Vec<Op>,
    ) -> impl Future<Output = Result<(), ProposeError>> + Send;
}

/// Per-controller backoff after failed proposals: the n-th failure in a row waits `base * 2^(n-1)`, at most
/// [`BACKOFF_CAP`]; a success (or a plan with nothing to propose) clears it.
#[derive(Debug, Default)]
pub struct Backoff {
    failing: HashMap<&'static str, Failing>,
}

#[derive(Debug)]
struct Failing {
    failures: u32,
    retry_at: Millis,
}

impl Backoff {
    /// How long `name` must still wait at `now` before it may propose again (None: it may go).
    pub fn waiting(&self, name: &str, now: Millis) -> Option<Duration> {
        let f = self.failing.get(name)?;
        (now < f.retry_at).then(|| Duration::from_millis(f.retry_at - now))
    }

    /// Records a failed proposal of `name` at `now`; returns the delay before its next attempt.
    pub fn failed(&mut self, name: &'static str, now: Millis, base: Duration) -> Duration {
        let f = self.failing.entry(name).or_insert(Failing {
            failures: 0,
            retry_at: now,
        });
        f.failures = f.failures.saturating_add(1);
        let factor = 1u32 << (f.failures - 1).min(16);
        let delay = base.saturating_mul(factor).min(BACKOFF_CAP);
        f.retry_at = now.saturating_add(delay.as_millis() as Millis);
        delay
    }

    /// Clears the backoff of `name`.
    pub fn succeeded(&mut self, name: &str) {
        self.failing.remove(name);
    }

    /// How many proposals of `name` failed in a row.
    pub fn failures(&self, name: &str) -> u32 {
        self.failing.get(name).map_or(0, |f| f.failures)
    }
}

/// What a round did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    /// Run again after this long at the latest.
    pub wake: Duration,
    /// How many plans were applied.
    pub applied: usize,
}

/// One round: each controller, in order, on the latest state (after the previous controller's batch), its
/// plan proposed as one batch, skipping controllers that are backing off.
pub async fn round(p: &mut impl Propose, backoff: &mut Backoff) -> Round {
    let mut wake = RESYNC;
    let mut applied = 0;
    for (name, controller) in CONTROLLERS {
        let now = p.now();
        if let Some(left) = backoff.waiting(name, now) {
            wake = wake.min(left);
            continue;
        }
        let plan = p.plan(*controller, now);
        if let Some(after) = plan.requeue_after {
            wake = wake.min(after.max(MIN_REQUEUE));
        }
        if plan.ops.is_empty() {
            backoff.succeeded(name);
            continue;
        }
        let n = plan.ops.len();
        match p.propose(name, plan.ops).await {
            Ok(()) => {
                backoff.succeeded(name);
                applied += 1;
                tracing::debug!(controller = name, ops = n, "applied");
            }
            Err(ProposeError::Rejected(r)) => {
                let delay = backoff.failed(name, now, RETRY_REJECTED);
                tracing::debug!(
                    controller = name,
                    "stale plan, recomputing in {delay:?}: {r}"
                );
                wake = wake.min(delay);
            }
            Err(e) => {
                let delay = backoff.failed(name, now, RETRY_ERROR);
                tracing::warn!(
                    controller = name,
                    "cannot propose (retrying in {delay:?}): {e}"
                );
                wake = wake.min(delay);
            }
        }
    }
    Round { wake, applied }
}

/// Runs controllers on the leader.
pub struct Driver {
    store: Store,
    proposer: Proposer,
    ids: Box<dyn IdSource + Send>,
}

/// The production [`Propose`]: the store this node applies to, and the Raft proposer.
struct Leader<'a> {
    store: &'a Store,
    proposer: &'a Proposer,
    ids: &'a mut (dyn IdSource + Send),
}

impl Propose for Leader<'_> {
    fn now(&self) -> Millis {
        self.proposer.clock().now()
    }

    fn plan(&mut self, controller: Controller, now: Millis) -> Plan {
        let ids: &mut dyn IdSource = self.ids;
        crate::util::cpu_bound(|| self.store.view(|s| controller(s, now, ids)))
    }

    fn propose(
        &mut self,
        _name: &'static str,
        ops: Vec<Op>,
    ) -> impl Future<Output = Result<(), ProposeError>> + Send {
        let proposer = self.proposer;
        async move { proposer.propose(ops).await.map(|_| ()) }
    }
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
        let mut changes = self.store.subscribe();
        let mut backoff = Backoff::default();
        loop {
            if !self.proposer.is_leader() {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            // a change from here on (this round's own batches included) wakes the next wait
            changes.mark_seen();
            let mut leader = Leader {
                store: &self.store,
                proposer: &self.proposer,
                ids: self.ids.as_mut(),
            };
            let wake = round(&mut leader, &mut backoff).await.wake;
            tokio::select! {
                _ = changes.changed() => {
                    // let a burst of changes (a deploy, a batch of status reports) settle into one round
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                _ = tokio::time::sleep(wake) => {}
            }
        }
    }
}

#[cfg(test)]
#[path = "driver_tests.rs"]
mod tests;
