//! The driver: on the leader, runs the controllers (`SCOPED_CONTROLLERS`) on what changed whenever the store
//! changes, a controller asked to be requeued, or the periodic resync comes, and proposes each controller's
//! plan as one batch. A rejected (stale) batch is recomputed next round; a controller whose proposals keep
//! failing backs off (exponentially, capped, reset once it succeeds).
//!
//! What changed: before each controller the round takes the keys the store's entries touched since it last
//! looked (`Store::touched_since`) and turns them into the services they concern (`manager::dirty_scope`),
//! added to every controller's pending scope. A controller runs only on a non-empty scope, and keeps the part
//! it did not settle: all of it when its proposal failed or its plan asked to be requeued (a restart delay),
//! else the services its plan left `unfinished` (the round's budget ran out). Every [`FULL_RESYNC`], and on
//! the first round (after a leader election, or when the touched keys are no longer known), every controller
//! runs on everything, so a change the feed does not describe is picked up within that time.
//!
//! The round itself ([`round`]) runs over a small [`Propose`] trait, so the simulation harness runs the very
//! same round over its own store. Must not: decide anything itself; followers run nothing (invariant 2).

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use super::proposer::{ProposeError, Proposer};
use super::{dirty_scope, Plan, Scope, ScopedController, SCOPED_CONTROLLERS};
use crate::store::{Op, Store};
use crate::util::{IdSource, Millis};

/// Longest time between two rounds, even when nothing happens.
pub const RESYNC: Duration = Duration::from_secs(2);

/// Longest time between two rounds of every controller on everything.
pub const FULL_RESYNC: Duration = Duration::from_secs(10);

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
    /// The store plans are made on (what changed is read from it).
    fn store(&self) -> &Store;
    /// Runs `controller` on `scope` of the latest state at `now`.
    fn plan(&mut self, controller: ScopedController, scope: &Scope, now: Millis) -> Plan;
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

/// What the driver keeps between rounds: the backoff, how far it read the store's touched keys, each
/// controller's pending scope, and when everything was last looked at.
#[derive(Debug, Default)]
pub struct Rounds {
    /// Per-controller backoff.
    pub backoff: Backoff,
    /// The store version up to which touched keys were taken (None: never, the next round is a full one).
    seen: Option<u64>,
    pending: HashMap<&'static str, Scope>,
    last_full: Option<Millis>,
    /// Whether the periodic full resync is off (tests: only what changed is looked at after the first round).
    no_periodic_full: bool,
}

impl Rounds {
    /// Rounds that look at everything only on the first round (and after [`Rounds::resync`]), never
    /// periodically: what tests use to show the touched keys alone keep the cluster converged.
    pub fn without_periodic_resync() -> Rounds {
        Rounds {
            no_periodic_full: true,
            ..Rounds::default()
        }
    }

    /// Makes the next round run every controller on everything (a new leader, a reset).
    pub fn resync(&mut self) {
        self.seen = None;
    }

    /// The scope `name` would run on now (tests and diagnostics).
    pub fn pending(&self, name: &str) -> Scope {
        self.pending.get(name).cloned().unwrap_or_default()
    }

    fn widen_all(&mut self, scope: &Scope) {
        for (name, _) in SCOPED_CONTROLLERS {
            self.pending.entry(name).or_default().extend(scope);
        }
    }

    /// Takes what the store's entries touched since the last look into every controller's pending scope.
    fn take_changes(&mut self, store: &Store) {
        let (version, touched) = match self.seen {
            Some(seen) => store.touched_since(seen),
            None => (store.version(), None),
        };
        if self.seen == Some(version) {
            return;
        }
        self.seen = Some(version);
        let scope = match &touched {
            Some(t) if t.is_empty() => return,
            Some(t) => crate::util::cpu_bound(|| store.view(|s| dirty_scope(s, Some(t)))),
            None => Scope::All,
        };
        self.widen_all(&scope);
    }
}

/// One round: each controller, in order, on its pending scope of the latest state (after the previous
/// controller's batch), its plan proposed as one batch, skipping controllers that are backing off or have
/// nothing in scope.
pub async fn round(p: &mut impl Propose, rounds: &mut Rounds) -> Round {
    let mut wake = RESYNC;
    let mut applied = 0;
    let started = p.now();
    let full_due = rounds.seen.is_none()
        || (!rounds.no_periodic_full
            && rounds
                .last_full
                .is_none_or(|t| started >= t.saturating_add(FULL_RESYNC.as_millis() as Millis)));
    if full_due {
        rounds.last_full = Some(started);
        rounds.widen_all(&Scope::All);
    }
    for (name, controller) in SCOPED_CONTROLLERS {
        rounds.take_changes(p.store());
        let now = p.now();
        let scope = rounds.pending.remove(name).unwrap_or_default();
        if let Some(left) = rounds.backoff.waiting(name, now) {
            wake = wake.min(left);
            rounds.pending.insert(name, scope);
            continue;
        }
        if scope.is_empty() {
            continue;
        }
        let plan = p.plan(*controller, &scope, now);
        if let Some(after) = plan.requeue_after {
            wake = wake.min(after.max(MIN_REQUEUE));
        }
        // what stays in scope even if nothing changes: the plan's unfinished services, all of the scope when
        // the plan waits for time to pass (or its proposal fails, below)
        let mut keep = if plan.requeue_after.is_some() {
            scope.clone()
        } else {
            Scope::Services(plan.unfinished.clone())
        };
        if plan.ops.is_empty() {
            rounds.backoff.succeeded(name);
            rounds.pending.entry(name).or_default().extend(&keep);
            continue;
        }
        let n = plan.ops.len();
        match p.propose(name, plan.ops).await {
            Ok(()) => {
                rounds.backoff.succeeded(name);
                applied += 1;
                tracing::debug!(controller = name, ops = n, "applied");
            }
            Err(ProposeError::Rejected(r)) => {
                let delay = rounds.backoff.failed(name, now, RETRY_REJECTED);
                tracing::debug!(
                    controller = name,
                    "stale plan, recomputing in {delay:?}: {r}"
                );
                wake = wake.min(delay);
                keep = scope;
            }
            Err(e) => {
                let delay = rounds.backoff.failed(name, now, RETRY_ERROR);
                tracing::warn!(
                    controller = name,
                    "cannot propose (retrying in {delay:?}): {e}"
                );
                wake = wake.min(delay);
                keep = scope;
            }
        }
        rounds.pending.entry(name).or_default().extend(&keep);
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

    fn store(&self) -> &Store {
        self.store
    }

    fn plan(&mut self, controller: ScopedController, scope: &Scope, now: Millis) -> Plan {
        let ids: &mut dyn IdSource = self.ids;
        crate::util::cpu_bound(|| self.store.view(|s| controller(s, scope, now, ids)))
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

/// How long the driver lets changes gather after one woke it, given how long its last round took: at least
/// [`SETTLE_MIN`], as long as the round at most [`SETTLE_MAX`].
pub fn settle(last_round: Duration) -> Duration {
    last_round.clamp(SETTLE_MIN, SETTLE_MAX)
}

/// The shortest wait for a burst of changes to settle into one round.
pub const SETTLE_MIN: Duration = Duration::from_millis(5);
/// The longest: a slow round never delays the next one by more.
pub const SETTLE_MAX: Duration = Duration::from_millis(250);

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
        let mut rounds = Rounds::default();
        loop {
            if !self.proposer.is_leader() {
                // whoever leads next starts with a round on everything
                rounds.resync();
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
            let started = std::time::Instant::now();
            let wake = round(&mut leader, &mut rounds).await.wake;
            let took = started.elapsed();
            tokio::select! {
                _ = changes.changed() => {
                    // let a burst of changes (a deploy, a batch of status reports) settle into one round; a
                    // round that took long waits as long again, so the loops never take more than about half
                    // the manager's time from the dispatcher and the API in a storm of changes
                    tokio::time::sleep(settle(took)).await;
                }
                _ = tokio::time::sleep(wake) => {}
            }
        }
    }
}

#[cfg(test)]
#[path = "driver_tests.rs"]
mod tests;
