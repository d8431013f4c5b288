//! Simulation of rolling updates through the whole manager with real agents (the [`harness`] of `sim`):
//! deploys go through `deploy::update_service` as `stack deploy` does, the updater and the orchestrators run
//! in the driver's order, agents run tasks on fake executors. Bounds on running tasks are checked after every
//! applied batch (not only at step ends) with [`Sim::observe`]. Health checks run on paused tokio time,
//! advanced by each step.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::sim::harness::{service, Sim};
use swarm::exec::fake::{HealthScript, Match, Outcome};
use swarm::model::{
    FailureAction, FileReference, HealthConfig, Service, ServiceMode, Task, TaskState,
    UpdateConfig, UpdateOrder, UpdateState,
};
use swarm::store::ClusterState;

const SEC: Duration = Duration::from_secs(1);

fn replicated(n: u64) -> ServiceMode {
    ServiceMode::Replicated { replicas: n }
}

/// Service `name` with `replicas` and this update config (rollback config: the defaults).
fn svc(name: &str, replicas: u64, update: UpdateConfig) -> Service {
    let mut s = service(name, replicated(replicas));
    s.spec.update = update;
    s
}

fn update(order: UpdateOrder, parallelism: u64, failure_action: FailureAction) -> UpdateConfig {
    UpdateConfig {
        parallelism,
        order,
        failure_action,
        monitor: 5 * SEC,
        ..UpdateConfig::default()
    }
}

fn state_of(sim: &Sim, name: &str) -> Option<UpdateState> {
    sim.service(name).update_status.map(|u| u.state)
}

/// Tasks of `service_id` whose status is Running (whatever the manager wants of them), and those the
/// manager also wants running.
fn running_counts(s: &ClusterState, service_id: &str) -> (usize, usize) {
    let running: Vec<&Task> = s
        .tasks_of_service(service_id)
        .filter(|t| t.status.state == TaskState::Running)
        .collect();
    let wanted = running
        .iter()
        .filter(|t| t.desired_state == TaskState::Running)
        .count();
    (running.len(), wanted)
}

/// After every batch: at most `hi` tasks of the service report Running, at least `lo` report Running and
/// are wanted running.
fn bound_running(sim: &mut Sim, name: &str, lo: usize, hi: usize) {
    let id = sim.service(name).id;
    sim.observe(move |s| {
        let (running, wanted) = running_counts(s, &id);
        if running > hi || wanted < lo {
            return Err(format!(
                "{id}: {running} running ({wanted} wanted running), bounds [{lo}, {hi}]"
            ));
        }
        Ok(())
    });
}

/// The service's running tasks are `n`, all on its current spec.
fn assert_all_current(sim: &Sim, name: &str, n: usize) {
    let s = sim.service(name);
    let running = sim.running(name);
    assert_eq!(running.len(), n, "{}", sim.dump());
    for t in &running {
        assert_eq!(t.spec_version, s.spec_version, "{}", sim.dump());
        assert_eq!(t.spec, s.spec.task, "{}", sim.dump());
    }
    assert!(sim.runtime_matches_store(), "{}", sim.dump());
    assert!(sim.rejected.is_empty(), "{}", sim.dump());
}

async fn converge(sim: &mut Sim, name: &str, n: usize) {
    sim.run_until("initial rollout", SEC, 10, |s| s.running(name).len() == n)
        .await;
}

/// Steps until the update of `name` reaches `state`, checking `each` after every step.
async fn until_state(sim: &mut Sim, name: &str, state: UpdateState, max_steps: usize) {
    let what = format!("{name} reaches {state:?}");
    sim.run_until(&what, SEC, max_steps, |s| state_of(s, name) == Some(state))
        .await;
}

async fn bounded_update(order: UpdateOrder, lo: usize, hi: usize) {
    let mut sim = Sim::new(&format!("upd-{order:?}"), 3);
    sim.create_service(svc("web", 6, update(order, 2, FailureAction::Pause)));
    converge(&mut sim, "web", 6).await;
    bound_running(&mut sim, "web", lo, hi);
    let old: BTreeSet<String> = sim.running("web").into_iter().map(|t| t.id).collect();
    sim.deploy("web", |s| s.task.container.image = "img/web:v2".into());
    let mut steps = 0;
    while state_of(&sim, "web") != Some(UpdateState::Completed) {
        assert!(steps < 40, "update did not complete\n{}", sim.dump());
        sim.step(SEC).await;
        steps += 1;
        let (running, wanted) = sim.store.view(|s| running_counts(s, "svc-web"));
        assert!(
            running <= hi && wanted >= lo,
            "{running}/{wanted}\n{}",
            sim.dump()
        );
    }
    assert_all_current(&sim, "web", 6);
    assert!(sim
        .running("web")
        .iter()
        .all(|t| t.spec.container.image == "img/web:v2" && !old.contains(&t.id)));
    // Nothing moves afterwards.
    let ids: BTreeSet<String> = sim.running("web").into_iter().map(|t| t.id).collect();
    for _ in 0..3 {
        sim.step(SEC).await;
    }
    let after: BTreeSet<String> = sim.running("web").into_iter().map(|t| t.id).collect();
    assert_eq!(ids, after, "{}", sim.dump());
    println!("{order:?}: completed in {steps} steps");
}

#[tokio::test]
async fn start_first_stays_within_replicas_and_replicas_plus_parallelism() {
    bounded_update(UpdateOrder::StartFirst, 6, 8).await;
}

#[tokio::test]
async fn stop_first_never_exceeds_replicas() {
    bounded_update(UpdateOrder::StopFirst, 4, 6).await;
}

/// Deploys v2 with an image whose tasks exit 1 after 1s.
fn deploy_bad(sim: &mut Sim) {
    sim.script(
        Match::Image("img/web:bad".into()),
        Outcome::Exit {
            code: 1,
            after: SEC,
        },
    );
    sim.deploy("web", |s| s.task.container.image = "img/web:bad".into());
}

#[tokio::test]
async fn failing_update_rolls_back() {
    let mut sim = Sim::new("upd-rollback", 3);
    sim.create_service(svc(
        "web",
        6,
        update(UpdateOrder::StopFirst, 2, FailureAction::Rollback),
    ));
    converge(&mut sim, "web", 6).await;
    let v1 = sim.service("web").spec;
    deploy_bad(&mut sim);
    until_state(&mut sim, "web", UpdateState::RollbackCompleted, 60).await;
    for _ in 0..3 {
        sim.step(SEC).await;
    }
    let s = sim.service("web");
    assert_eq!(
        s.update_status.as_ref().map(|u| u.state),
        Some(UpdateState::RollbackCompleted)
    );
    assert_eq!(s.spec, v1, "{}", sim.dump());
    assert_eq!(
        s.previous_spec
            .as_ref()
            .map(|p| p.task.container.image.as_str()),
        Some("img/web:bad")
    );
    assert_all_current(&sim, "web", 6);
    assert!(sim.running("web").iter().all(|t| t.spec == v1.task));
    // The failed v2 tasks exist (the rollback was caused by them).
    assert!(sim
        .tasks_of("web")
        .iter()
        .any(|t| t.spec.container.image == "img/web:bad" && t.status.exit_code == Some(1)));
}

#[tokio::test]
async fn paused_update_is_resumed_by_a_new_deploy() {
    let mut sim = Sim::new("upd-pause", 3);
    // With no delay, tasks that start at once settle their batch at once and the whole update is out
    // before the first one fails (as in Docker); a delay longer than their life lets the monitor see it.
    let mut up = update(UpdateOrder::StopFirst, 2, FailureAction::Pause);
    up.delay = 2 * SEC;
    sim.create_service(svc("web", 6, up));
    converge(&mut sim, "web", 6).await;
    deploy_bad(&mut sim);
    until_state(&mut sim, "web", UpdateState::Paused, 30).await;
    // Paused stays paused: the rest of the slots keep v1.
    for _ in 0..5 {
        sim.step(SEC).await;
    }
    assert_eq!(state_of(&sim, "web"), Some(UpdateState::Paused));
    let v1_running = sim
        .running("web")
        .iter()
        .filter(|t| t.spec_version == 1)
        .count();
    assert_eq!(v1_running, 4, "{}", sim.dump());

    sim.deploy("web", |s| s.task.container.image = "img/web:v3".into());
    assert_eq!(sim.service("web").spec_version, 3);
    until_state(&mut sim, "web", UpdateState::Completed, 40).await;
    assert_all_current(&sim, "web", 6);
    assert!(sim
        .running("web")
        .iter()
        .all(|t| t.spec.container.image == "img/web:v3"));
}

fn healthcheck() -> HealthConfig {
    HealthConfig {
        test: vec!["CMD".into(), "check".into()],
        interval: Some(SEC),
        timeout: Some(SEC),
        retries: Some(3),
        start_period: None,
        start_interval: None,
    }
}

#[tokio::test(start_paused = true)]
async fn unhealthy_new_tasks_are_failures() {
    let mut sim = Sim::new("upd-unhealthy", 3);
    sim.use_tokio_time();
    let mut up = update(UpdateOrder::StartFirst, 1, FailureAction::Pause);
    up.monitor = 30 * SEC;
    sim.create_service(svc("web", 3, up));
    converge(&mut sim, "web", 3).await;
    bound_running(&mut sim, "web", 3, 4);
    sim.script_health(Match::Image("img/web:sick".into()), HealthScript::Fail);
    sim.deploy("web", |s| {
        s.task.container.image = "img/web:sick".into();
        s.task.container.healthcheck = Some(healthcheck());
    });
    until_state(&mut sim, "web", UpdateState::Paused, 30).await;
    let tasks = sim.tasks_of("web");
    let sick: Vec<&Task> = tasks.iter().filter(|t| t.spec_version == 2).collect();
    assert!(
        sick.iter().any(|t| t.status.state == TaskState::Failed
            && t.status.err.as_deref() == Some("task: unhealthy container")),
        "{}",
        sim.dump()
    );
    // start-first: the old tasks still serve.
    assert_eq!(
        sim.running("web")
            .iter()
            .filter(|t| t.spec_version == 1)
            .count(),
        3,
        "{}",
        sim.dump()
    );
}

#[tokio::test(start_paused = true)]
async fn update_waits_for_tasks_to_become_healthy() {
    let mut sim = Sim::new("upd-healthy", 3);
    sim.use_tokio_time();
    sim.create_service(svc(
        "web",
        3,
        update(UpdateOrder::StopFirst, 1, FailureAction::Pause),
    ));
    converge(&mut sim, "web", 3).await;
    // At most one new task (the batch) is not yet healthy at any time.
    sim.observe(|s| {
        let pending = s
            .tasks_of_service("svc-web")
            .filter(|t| {
                t.spec_version == 2
                    && t.desired_state == TaskState::Running
                    && !t.status.state.is_terminal()
                    && !swarm::manager::orchestrator::update::is_up(t)
            })
            .count();
        if pending > 1 {
            return Err(format!("{pending} new tasks not healthy at once"));
        }
        Ok(())
    });
    // Two failed checks, then passing: healthy at the third check (retries 3: never unhealthy).
    sim.script_health(
        Match::Image("img/web:v2".into()),
        HealthScript::FailFirst(2),
    );
    sim.deploy("web", |s| {
        s.task.container.image = "img/web:v2".into();
        s.task.container.healthcheck = Some(healthcheck());
    });
    let started = sim.now();
    until_state(&mut sim, "web", UpdateState::Completed, 60).await;
    let took = Duration::from_millis(sim.now() - started);
    assert_all_current(&sim, "web", 3);
    for t in sim.running("web") {
        assert_eq!(
            t.status.health,
            Some(swarm::model::TaskHealth::Healthy),
            "{}",
            sim.dump()
        );
    }
    // No failures: exactly one v2 task per slot.
    assert_eq!(
        sim.tasks_of("web")
            .iter()
            .filter(|t| t.spec_version == 2)
            .count(),
        3,
        "{}",
        sim.dump()
    );
    // Three batches, each waiting for three checks 1s apart (plus the 5s monitor at the end).
    assert!(took >= 9 * SEC, "update took only {took:?}\n{}", sim.dump());
    println!("healthy-after-3-checks update of 3 replicas took {took:?} simulated");
}

#[tokio::test]
async fn secret_rotation_restarts_only_the_services_using_it() {
    let mut sim = Sim::new("upd-secret", 3);
    sim.create_secret("sec-1", "s", 1, b"one");
    let mut a = svc(
        "a",
        3,
        update(UpdateOrder::StopFirst, 1, FailureAction::Pause),
    );
    a.spec.task.container.secrets = vec![FileReference {
        name: "s".into(),
        id: "sec-1".into(),
        target: "s".into(),
        uid: "0".into(),
        gid: "0".into(),
        mode: 0o444,
    }];
    sim.create_service(a);
    sim.create_service(svc("b", 3, UpdateConfig::default()));
    sim.run_until("both running", SEC, 10, |s| {
        s.running("a").len() == 3 && s.running("b").len() == 3
    })
    .await;
    let ids = |sim: &Sim, n: &str| -> BTreeSet<String> {
        sim.running(n).into_iter().map(|t| t.id).collect()
    };
    let (a_before, b_before) = (ids(&sim, "a"), ids(&sim, "b"));

    // A new version of `s`: a new secret object, and a's spec refers to it (what deploy.rs plans).
    sim.create_secret("sec-2", "s", 2, b"two");
    sim.deploy("a", |s| s.task.container.secrets[0].id = "sec-2".into());
    until_state(&mut sim, "a", UpdateState::Completed, 30).await;
    for _ in 0..2 {
        sim.step(SEC).await;
    }
    assert_all_current(&sim, "a", 3);
    let a_after = ids(&sim, "a");
    assert!(a_after.is_disjoint(&a_before), "{}", sim.dump());
    assert!(sim
        .running("a")
        .iter()
        .all(|t| t.spec.container.secrets[0].id == "sec-2"));
    assert_eq!(ids(&sim, "b"), b_before, "{}", sim.dump());
    let b = sim.service("b");
    assert_eq!((b.spec_version, b.update_status), (1, None));
}

/// A job task of the new spec that exits 0 within the monitor period is a success, while the same exit
/// of a replicated service's task counts as a failure.
#[tokio::test]
async fn completed_job_task_is_not_an_update_failure() {
    let mut sim = Sim::new("upd-job", 3);
    sim.script(
        Match::Image("img/batch".into()),
        Outcome::Exit {
            code: 0,
            after: 3 * SEC,
        },
    );
    sim.script(
        Match::Image("img/batch:v2".into()),
        Outcome::Exit {
            code: 0,
            after: SEC,
        },
    );
    let mut job = service(
        "batch",
        ServiceMode::ReplicatedJob {
            max_concurrent: 2,
            total_completions: 6,
        },
    );
    job.spec.update = update(UpdateOrder::StopFirst, 1, FailureAction::Pause);
    job.spec.update.monitor = 10 * SEC;
    sim.create_service(job);
    // The same image change on a replicated service: its tasks exiting 0 early are failures.
    let mut web = svc(
        "web",
        2,
        update(UpdateOrder::StopFirst, 1, FailureAction::Pause),
    );
    web.spec.task.container.image = "img/batch".into();
    web.spec.update.monitor = 10 * SEC;
    sim.create_service(web);
    sim.step(SEC).await;
    sim.observe(|s| {
        match s
            .service_by_name("batch")
            .and_then(|b| b.update_status.as_ref())
            .map(|u| u.state)
        {
            Some(UpdateState::Paused | UpdateState::RollbackStarted) => {
                Err("job update treated a completed task as a failure".into())
            }
            _ => Ok(()),
        }
    });
    for name in ["batch", "web"] {
        sim.deploy(name, |s| s.task.container.image = "img/batch:v2".into());
    }
    sim.run_until("job done and update completed", SEC, 30, |s| {
        state_of(s, "batch") == Some(UpdateState::Completed)
            && s.tasks_of("batch")
                .iter()
                .filter(|t| t.status.state == TaskState::Complete)
                .count()
                >= 6
    })
    .await;
    let tasks = sim.tasks_of("batch");
    assert!(
        tasks.iter().any(|t| t.spec_version == 2
            && t.status.state == TaskState::Complete
            && t.status.exit_code == Some(0)),
        "no v2 job task completed during the update\n{}",
        sim.dump()
    );
    assert_eq!(
        state_of(&sim, "web"),
        Some(UpdateState::Paused),
        "control: a replicated task exiting 0 early is a failure\n{}",
        sim.dump()
    );
}
