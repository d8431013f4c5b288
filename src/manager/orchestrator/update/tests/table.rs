//! One reconcile on a given state: the ops and requeue wanted, and no ops on its own output.

use super::*;

#[test]
fn table() {
    use TaskState::{New, Ready, Running as R, Shutdown};
    let stop = || cfg(1, UpdateOrder::StopFirst);
    let start = || cfg(1, UpdateOrder::StartFirst);
    let old = |id, slot| at(id, slot, 1, R, R, T0 - 10_000);
    // (name, service, tasks, now, want, requeue)
    type Case<'a> = (
        &'a str,
        Service,
        Vec<Task>,
        Millis,
        Vec<&'a str>,
        Option<u64>,
    );
    let cases: Vec<Case> = vec![
        (
            "stop-first: old shut down, placeholder created",
            updating(2, stop()),
            vec![old("a", 1), old("b", 2)],
            T0,
            vec!["update a v1 desired=Shutdown", "create s1/1 v2 desired=Ready"],
            None,
        ),
        (
            "start-first: new task first",
            updating(2, start()),
            vec![old("a", 1), old("b", 2)],
            T0,
            vec!["create s1/1 v2 desired=Running"],
            None,
        ),
        (
            "parallelism 0: all at once",
            updating(3, cfg(0, UpdateOrder::StartFirst)),
            vec![old("a", 1), old("b", 2), old("c", 3)],
            T0,
            vec![
                "create s1/1 v2 desired=Running",
                "create s1/2 v2 desired=Running",
                "create s1/3 v2 desired=Running",
            ],
            None,
        ),
        (
            "placeholder waits for the old task to stop",
            updating(2, stop()),
            vec![
                at("a", 1, 1, Shutdown, R, T0),
                at("p", 1, 2, Ready, New, T0),
                old("b", 2),
            ],
            T0 + 1000,
            vec![],
            None,
        ),
        (
            "placeholder raised once the old task stopped",
            updating(2, stop()),
            vec![
                at("a", 1, 1, Shutdown, Shutdown, T0),
                at("p", 1, 2, Ready, New, T0),
                old("b", 2),
            ],
            T0 + 1000,
            vec!["update p v2 desired=Running"],
            None,
        ),
        (
            "start-first: old shut down once the new one runs",
            updating(2, start()),
            vec![old("a", 1), at("n", 1, 2, R, R, T0 + 500), old("b", 2)],
            T0 + 1000,
            vec!["update a v1 desired=Shutdown"],
            None,
        ),
        (
            "next batch once the previous one runs",
            updating(2, start()),
            vec![
                at("a", 1, 1, Shutdown, Shutdown, T0),
                at("n", 1, 2, R, R, T0 + 500),
                old("b", 2),
            ],
            T0 + 1000,
            vec!["create s1/2 v2 desired=Running"],
            None,
        ),
        (
            "delay not over: requeue",
            updating(2, {
                let mut c = start();
                c.delay = Duration::from_secs(10);
                c
            }),
            vec![
                at("a", 1, 1, Shutdown, Shutdown, T0),
                at("n", 1, 2, R, R, T0 + 4000),
                old("b", 2),
            ],
            T0 + 8000,
            vec![],
            Some(6000),
        ),
        (
            "monitor window not over: requeue",
            updating(1, stop()),
            vec![at("n", 1, 2, R, R, T0 + 1000)],
            T0 + 3000,
            vec![],
            Some(3000),
        ),
        (
            "completed once the window passed",
            updating(1, stop()),
            vec![at("n", 1, 2, R, R, T0 + 1000)],
            T0 + 6000,
            vec!["service s1 v2 Completed: update completed"],
            None,
        ),
        (
            "early failure pauses",
            updating(2, stop()),
            vec![
                {
                    let mut t = at("n", 1, 2, R, TaskState::Failed, T0 - 8000);
                    t.status.exit_code = Some(1);
                    t
                },
                old("b", 2),
            ],
            T0 + 2000,
            vec!["service s1 v2 Paused: update paused due to failure or early termination of task n"],
            None,
        ),
        (
            "failure with rollback: swap, untouched slot relabelled",
            updating(2, {
                let mut c = stop();
                c.failure_action = FailureAction::Rollback;
                c
            }),
            vec![
                {
                    let mut t = at("n", 1, 2, R, TaskState::Failed, T0 - 8000);
                    t.status.exit_code = Some(1);
                    t
                },
                old("b", 2),
            ],
            T0 + 2000,
            vec![
                "service s1 v3 RollbackStarted: update rolled back due to failure or early termination of task n",
                "update b v3 desired=Running",
            ],
            None,
        ),
        (
            "paused: outdated tasks stay",
            {
                let mut s = updating(2, stop());
                s.update_status.as_mut().unwrap().state = UpdateState::Paused;
                s
            },
            vec![old("a", 1), old("b", 2)],
            T0,
            vec![],
            None,
        ),
        (
            "paused: an in-flight placeholder is still raised",
            {
                let mut s = updating(2, stop());
                s.update_status.as_mut().unwrap().state = UpdateState::Paused;
                s
            },
            vec![at("p", 1, 2, Ready, New, T0), old("b", 2)],
            T0,
            vec!["update p v2 desired=Running"],
            None,
        ),
        (
            "no update status: outdated tasks stay",
            {
                let mut s = updating(2, stop());
                s.update_status = None;
                s
            },
            vec![old("a", 1), old("b", 2)],
            T0,
            vec![],
            None,
        ),
        (
            "same spec, new version: relabelled, completed at once",
            {
                let mut s = updating(2, stop());
                s.spec.task = image("v1");
                s
            },
            vec![old("a", 1), old("b", 2)],
            T0,
            vec![
                "service s1 v2 Completed: update completed",
                "update a v2 desired=Running",
                "update b v2 desired=Running",
            ],
            None,
        ),
        (
            "slot above replicas is the orchestrator's",
            updating(1, stop()),
            vec![at("n", 1, 2, R, R, T0 - 10_000), old("b", 2)],
            T0,
            vec!["service s1 v2 Completed: update completed"],
            None,
        ),
    ];
    for (name, svc, tasks, now, want, requeue) in cases {
        let mut w = World::new();
        w.time = T0 - 20_000;
        w.create_ops(creates(vec![node("n1")], vec![svc], vec![]));
        w.time = T0 - 10_000;
        w.create_ops(tasks.into_iter().map(Op::CreateTask).collect());
        w.time = now;
        let plan = reconcile(&w.state, now, &mut SeqIds::new("x"));
        assert_eq!(words(&plan), want, "{name}");
        assert_eq!(
            plan.requeue_after,
            requeue.map(Duration::from_millis),
            "{name}"
        );
        check_idempotent(&mut w, reconcile);
    }
}

#[test]
fn rollback_op_swaps_specs() {
    let s = updating(2, UpdateConfig::default());
    let Some(Op::UpdateService {
        service: r,
        expected_version,
    }) = rollback_op(&s, T0 + 5, MANUAL_ROLLBACK)
    else {
        panic!("no op");
    };
    assert_eq!(expected_version, s.meta.version);
    assert_eq!(Some(r.spec.clone()), s.previous_spec);
    assert_eq!(r.previous_spec, Some(s.spec.clone()));
    assert_eq!(r.spec_version, 3);
    let status = r.update_status.unwrap();
    assert_eq!(status.state, UpdateState::RollbackStarted);
    assert_eq!((status.started_at, status.completed_at), (T0 + 5, None));
    assert_eq!(status.message, "manually requested rollback");
    let mut fresh = s;
    fresh.previous_spec = None;
    assert_eq!(rollback_op(&fresh, T0, MANUAL_ROLLBACK), None);
}
