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
    /// The scope of every plan made.
    scopes: Vec<Scope>,
}

impl Propose for Fake {
    fn now(&self) -> Millis {
        self.clock.now()
    }

    fn store(&self) -> &Store {
        &self.store
    }

    fn plan(&mut self, controller: ScopedController, scope: &Scope, now: Millis) -> Plan {
        self.scopes.push(scope.clone());
        let ids = &mut self.ids;
        self.store.view(|s| controller(s, scope, now, ids))
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
        scopes: Vec::new(),
    }
}

/// Rounds (without the periodic resync) and the simulated agent until nothing changes.
async fn settle(p: &mut Fake, rounds: &mut Rounds) {
    for _ in 0..50 {
        let r = round(p, rounds).await;
        // the agents: on Ready nodes, assigned tasks run and tasks asked to stop stop
        use crate::model::{NodeState, TaskState, TaskStatus};
        let ops: Vec<Op> = p.store.view(|s| {
            s.tasks()
                .filter(|t| {
                    t.node_id
                        .as_deref()
                        .and_then(|n| s.node(n))
                        .is_some_and(|n| n.status.state == NodeState::Ready)
                        && t.status.state >= TaskState::Assigned
                        && !t.status.state.is_terminal()
                })
                .filter_map(|t| {
                    let next = if t.desired_state >= TaskState::Shutdown {
                        TaskState::Shutdown
                    } else if t.status.state < TaskState::Running {
                        TaskState::Running
                    } else {
                        return None;
                    };
                    let mut new = t.clone();
                    new.status = TaskStatus::new(next, p.clock.now());
                    Some(Op::UpdateTask {
                        task: new,
                        expected_version: t.meta.version,
                    })
                })
                .collect()
        });
        let agent = (!ops.is_empty(),);
        if agent.0 {
            p.index += 1;
            let batch = Batch {
                ops,
                time: p.clock.now(),
            };
            p.store.apply(p.index, &batch).expect("agent ops apply");
        }
        p.clock.advance(MS);
        if r.applied == 0 && !agent.0 {
            return;
        }
    }
    panic!("did not settle");
}

fn update_store(p: &mut Fake, op: Op) {
    p.index += 1;
    let batch = Batch {
        ops: vec![op],
        time: p.clock.now(),
    };
    p.store.apply(p.index, &batch).expect("applies");
}

#[tokio::test]
async fn a_failing_controller_backs_off_exponentially_and_recovers() {
    let mut p = fake();
    let mut backoff = Rounds::default();

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
        .backoff
        .waiting("replicated", p.clock.now())
        .unwrap_or_default();
    p.clock.advance(left);
    let r = round(&mut p, &mut backoff).await;
    assert!(r.applied >= 1);
    assert_eq!(backoff.backoff.failures("replicated"), 0);
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
    let mut backoff = Rounds::default();
    let r = round(&mut p, &mut backoff).await;
    assert_eq!(r.wake, RETRY_REJECTED);
    assert_eq!(backoff.backoff.failures("replicated"), 1);
    p.index = p.store.view(|s| s.applied_index());
    p.clock.advance(RETRY_REJECTED);
    let r = round(&mut p, &mut backoff).await;
    assert!(r.applied >= 1);
    assert_eq!(backoff.backoff.failures("replicated"), 0);
}

#[tokio::test]
async fn rounds_look_only_at_what_changed_and_miss_nothing() {
    let mut p = fake();
    p.failing = false;
    p.store
        .apply(
            p.index + 1,
            &Batch {
                ops: vec![
                    Op::CreateNode(node("n2")),
                    Op::CreateService(service("other", ServiceMode::Replicated { replicas: 3 })),
                ],
                time: p.clock.now(),
            },
        )
        .expect("applies");
    p.index += 1;
    let mut rounds = Rounds::without_periodic_resync();
    settle(&mut p, &mut rounds).await;
    assert!(
        p.scopes.first() == Some(&Scope::All),
        "the first round looks at everything"
    );
    let running = |p: &Fake, svc: &str| {
        p.store.view(|s| {
            s.tasks_of_service(svc)
                .filter(|t| {
                    t.status.state == crate::model::TaskState::Running
                        && t.desired_state == crate::model::TaskState::Running
                })
                .count()
        })
    };
    assert_eq!((running(&p, "web"), running(&p, "other")), (2, 3));

    // scaling one service: every plan of the next rounds is about that service only
    p.scopes.clear();
    let mut web = p.store.view(|s| s.service("web").cloned()).expect("web");
    let v = web.meta.version;
    web.spec.mode = ServiceMode::Replicated { replicas: 4 };
    update_store(
        &mut p,
        Op::UpdateService {
            service: web,
            expected_version: v,
        },
    );
    settle(&mut p, &mut rounds).await;
    assert_eq!(running(&p, "web"), 4);
    assert!(!p.scopes.is_empty());
    assert!(
        p.scopes.iter().all(|s| *s == Scope::of(["web"])),
        "{:?}",
        p.scopes
    );

    // a node going down, only the node touched: its tasks are replaced on the other node
    let on_n1 = p.store.view(|s| s.tasks_on_node("n1").count());
    assert!(on_n1 > 0);
    let mut n1 = p.store.view(|s| s.node("n1").cloned()).expect("n1");
    let v = n1.meta.version;
    n1.status.state = crate::model::NodeState::Down;
    update_store(
        &mut p,
        Op::UpdateNode {
            node: n1,
            expected_version: v,
        },
    );
    settle(&mut p, &mut rounds).await;
    let live_on = |p: &Fake, node: &str| {
        p.store.view(|s| {
            s.tasks_on_node(node)
                .filter(|t| t.desired_state == crate::model::TaskState::Running)
                .count()
        })
    };
    assert_eq!(live_on(&p, "n1"), 0);
    assert_eq!((running(&p, "web"), running(&p, "other")), (4, 3));
    assert_eq!(live_on(&p, "n2"), 7);
    // and a full run finds nothing left to do
    p.store.view(|s| {
        for (name, c) in crate::manager::CONTROLLERS {
            let plan = c(s, p.clock.now(), &mut SeqIds::new("check"));
            assert!(plan.ops.is_empty(), "{name}: {:?}", plan.ops);
        }
    });
}

#[tokio::test]
async fn every_controller_looks_at_everything_every_full_resync() {
    let mut p = fake();
    p.failing = false;
    let mut rounds = Rounds::default();
    round(&mut p, &mut rounds).await;
    p.clock.advance(MS);
    p.scopes.clear();
    round(&mut p, &mut rounds).await;
    assert!(p.scopes.iter().all(|s| *s != Scope::All), "{:?}", p.scopes);
    p.clock.advance(FULL_RESYNC);
    p.scopes.clear();
    round(&mut p, &mut rounds).await;
    assert_eq!(p.scopes.len(), SCOPED_CONTROLLERS.len());
    assert!(p.scopes.iter().all(|s| *s == Scope::All));
    // after a resync (a new leader), too
    p.clock.advance(MS);
    rounds.resync();
    p.scopes.clear();
    round(&mut p, &mut rounds).await;
    assert_eq!(p.scopes.len(), SCOPED_CONTROLLERS.len());
}
