//! Tests of the driver's round and its per-controller backoff, on a manual clock.

use std::time::Duration;

use super::*;
use crate::manager::testutil::{creates, node, service, World};
use crate::model::ServiceMode;
use crate::store::Batch;
use crate::util::{Clock, ManualClock, SeqIds};

const MS: Duration = Duration::from_millis(1);

#[test]
fn backoff_doubles_up_to_the_cap_and_resets_on_success() {
    let mut b = Backoff::default();
    assert_eq!(b.waiting("x", 0), None);
    let delays: Vec<Duration> = (0..12).map(|_| b.failed("x", 1000, 10 * MS)).collect();
    assert_eq!(&delays[..4], &[10 * MS, 20 * MS, 40 * MS, 80 * MS]);
    assert_eq!(*delays.last().unwrap(), BACKOFF_CAP);
    assert!(delays.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(b.failures("x"), 12);
    assert_eq!(b.waiting("x", 1000), Some(BACKOFF_CAP));
    assert_eq!(b.waiting("x", 1000 + 4000), Some(1000 * MS));
    assert_eq!(b.waiting("x", 1000 + 5000), None);
    assert_eq!(b.waiting("y", 1000), None, "per controller");
    b.succeeded("x");
    assert_eq!(b.failures("x"), 0);
    assert_eq!(b.failed("x", 2000, 10 * MS), 10 * MS, "starts over");
}

/// A proposer over a store on a manual clock whose proposals fail while `failing` is set.
struct Fake {
    store: Store,
    clock: ManualClock,
    ids: SeqIds,
    failing: bool,
    attempts: Vec<&'static str>,
    index: u64,
}

impl Propose for Fake {
    fn now(&self) -> Millis {
        self.clock.now()
    }

    fn plan(&mut self, controller: Controller, now: Millis) -> Plan {
        let ids = &mut self.ids;
        self.store.view(|s| controller(s, now, ids))
    }

    fn propose(
        &mut self,
        name: &'static str,
        ops: Vec<Op>,
    ) -> impl Future<Output = Result<(), ProposeError>> + Send {
        self.attempts.push(name);
        let result = if self.failing {
            Err(ProposeError::Raft("no quorum".into()))
        } else {
            self.index += 1;
            let batch = Batch {
                ops,
                time: self.clock.now(),
            };
            self.store
                .apply(self.index, &batch)
                .map(|_| ())
                .map_err(ProposeError::Rejected)
        };
        std::future::ready(result)
    }
}

fn fake() -> Fake {
    let world = World::with(creates(
        vec![node("n1")],
        vec![service("web", ServiceMode::Replicated { replicas: 2 })],
        vec![],
    ));
    let index = world.state.applied_index();
    Fake {
        store: Store::new(world.state),
        clock: ManualClock::new(1_000_000),
        ids: SeqIds::new("t-"),
        failing: true,
        attempts: Vec::new(),
        index,
    }
}

#[tokio::test]
async fn a_failing_controller_backs_off_exponentially_and_recovers() {
    let mut p = fake();
    let mut backoff = Backoff::default();

    let r = round(&mut p, &mut backoff).await;
    assert_eq!(
        p.attempts,
        vec!["replicated"],
        "only the orchestrator has work"
    );
    assert_eq!(
        r,
        Round {
            wake: RETRY_ERROR,
            applied: 0
        }
    );

    // rounds before the delay is over (other changes woke the driver) do not propose again
    p.clock.advance(RETRY_ERROR - MS);
    let r = round(&mut p, &mut backoff).await;
    assert_eq!(p.attempts.len(), 1);
    assert_eq!(r.wake, MS);

    // each failure doubles the wait, up to the cap: run the driver's loop on manual time (every wake-up a
    // round, at most RESYNC apart) and note when it proposes
    let start = p.clock.now() - 499;
    p.clock.advance(MS);
    let mut at = Vec::new();
    while p.clock.now() < start + 30_000 {
        let before = p.attempts.len();
        let r = round(&mut p, &mut backoff).await;
        assert!(r.wake <= RESYNC);
        if p.attempts.len() > before {
            at.push(p.clock.now() - start);
        }
        p.clock.advance(r.wake);
    }
    let gaps: Vec<u64> = std::iter::once(0)
        .chain(at.iter().copied())
        .collect::<Vec<_>>()
        .windows(2)
        .map(|w| w[1] - w[0])
        .collect();
    assert_eq!(&gaps[..6], &[500, 1000, 2000, 4000, 5000, 5000], "{at:?}");
    assert!(gaps.iter().all(|g| *g <= 5000));

    // the cluster recovers: the next attempt applies and the backoff is gone
    p.failing = false;
    let left = backoff
        .waiting("replicated", p.clock.now())
        .unwrap_or_default();
    p.clock.advance(left);
    let r = round(&mut p, &mut backoff).await;
    assert!(r.applied >= 1);
    assert_eq!(backoff.failures("replicated"), 0);
    assert_eq!(p.store.view(|s| s.tasks().count()), 2);
    let r = round(&mut p, &mut backoff).await;
    assert_eq!(r.wake, RESYNC, "nothing left to do, nobody backing off");
}

#[tokio::test]
async fn a_stale_plan_is_retried_after_a_short_delay() {
    let mut p = fake();
    p.failing = false;
    // the orchestrator's plan is refused once (the index it is applied at was already used)
    p.index = 0;
    let mut backoff = Backoff::default();
    let r = round(&mut p, &mut backoff).await;
    assert_eq!(r.wake, RETRY_REJECTED);
    assert_eq!(backoff.failures("replicated"), 1);
    p.index = p.store.view(|s| s.applied_index());
    p.clock.advance(RETRY_REJECTED);
    let r = round(&mut p, &mut backoff).await;
    assert!(r.applied >= 1);
    assert_eq!(backoff.failures("replicated"), 0);
}
