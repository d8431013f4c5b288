//! Whole clusters converging through every controller and a simulated agent, with invariants checked at
//! every step and the updater's own output giving no ops.

use super::*;

/// Images starting with `crash` fail as they start, `bad` exit 1 after a second of running, `exit0` exit 0
/// after a second; others run.
pub(super) fn behave(t: &Task) -> Option<(TaskState, i32)> {
    let img = t.spec.container.image.as_str();
    if img.starts_with("crash") {
        Some((TaskState::Failed, 1))
    } else if t.status.state < TaskState::Running {
        None
    } else if img.starts_with("bad") {
        Some((TaskState::Failed, 1))
    } else if img.starts_with("exit0") {
        Some((TaskState::Complete, 0))
    } else {
        None
    }
}

pub(super) struct Sim {
    pub(super) w: World,
    ids: SeqIds,
    /// (time, tasks created) of every updater plan that started a batch.
    batches: Vec<(Millis, usize)>,
    /// Whether the updater asked for a requeue at least once.
    requeued: bool,
}

impl Sim {
    pub(super) fn new(nodes: Vec<Node>, services: Vec<Service>) -> Sim {
        let mut s = Sim {
            w: World::with(creates(nodes, services, vec![])),
            ids: SeqIds::new("t"),
            batches: Vec::new(),
            requeued: false,
        };
        s.converge(&mut |_| {});
        s
    }

    /// One round: each controller's plan as its own batch, then the agent; `check` sees every state.
    /// Returns whether anything changed or a controller wants to look again.
    pub(super) fn round(&mut self, check: &mut dyn FnMut(&World)) -> bool {
        let mut busy = false;
        for (name, controller) in CONTROLLERS {
            let plan = controller(&self.w.state, self.w.time, &mut self.ids);
            busy |= plan.requeue_after.is_some();
            if *name == "update" {
                self.check_update(&plan);
            }
            if plan.is_empty() {
                continue;
            }
            busy = true;
            self.w.apply_plan(&plan);
            check(&self.w);
            if *name == "update" {
                let again = reconcile(&self.w.state, self.w.time, &mut SeqIds::new("y"));
                assert!(again.is_empty(), "own output gave ops: {:?}", words(&again));
            }
        }
        if agent_step(&mut self.w, &behave) {
            busy = true;
            check(&self.w);
        }
        self.w.time += 1000;
        busy
    }

    /// Same state, same plan; records batches and requeues.
    fn check_update(&mut self, plan: &Plan) {
        let again = reconcile(&self.w.state, self.w.time, &mut SeqIds::new("z"));
        assert_eq!(words(plan), words(&again), "same state, same ops");
        assert_eq!(plan.requeue_after, again.requeue_after);
        let created = plan
            .ops
            .iter()
            .filter(|o| matches!(o, Op::CreateTask(_)))
            .count();
        if created > 0 {
            self.batches.push((self.w.time, created));
        }
        self.requeued |= plan.requeue_after.is_some();
    }

    pub(super) fn converge(&mut self, check: &mut dyn FnMut(&World)) {
        for _ in 0..500 {
            if !self.round(check) {
                return;
            }
        }
        panic!("did not converge");
    }

    pub(super) fn run_until(&mut self, what: &str, done: &dyn Fn(&World) -> bool) {
        for _ in 0..500 {
            if done(&self.w) {
                return;
            }
            self.round(&mut |_| {});
        }
        panic!("never reached: {what}");
    }

    pub(super) fn service(&self, id: &str) -> &Service {
        self.w.state.service(id).expect("service")
    }

    pub(super) fn write(&mut self, s: Service) {
        let v = self.service(&s.id).meta.version;
        self.w.apply_ops(vec![Op::UpdateService {
            service: s,
            expected_version: v,
        }]);
    }

    /// What a deploy that changes the task template does (the contract with the control API).
    pub(super) fn deploy(&mut self, id: &str, change: impl FnOnce(&mut ServiceSpec)) {
        let mut s = self.service(id).clone();
        let old = s.spec.clone();
        change(&mut s.spec);
        s.spec_version += 1;
        s.previous_spec = Some(old);
        s.update_status = Some(UpdateStatus {
            state: UpdateState::Updating,
            started_at: self.w.time,
            completed_at: None,
            message: "update in progress".into(),
        });
        self.write(s);
    }

    pub(super) fn status(&self, id: &str) -> UpdateStatus {
        self.service(id).update_status.clone().expect("a status")
    }

    pub(super) fn batch_sizes(&self) -> Vec<usize> {
        self.batches.iter().map(|b| b.1).collect()
    }
}

pub(super) fn running_count(w: &World, id: &str) -> usize {
    w.state
        .tasks_of_service(id)
        .filter(|t| t.status.state == TaskState::Running)
        .count()
}

/// The images of the running tasks of `id`, sorted.
pub(super) fn running_images(w: &World, id: &str) -> Vec<String> {
    let mut v: Vec<String> = w
        .state
        .tasks_of_service(id)
        .filter(|t| t.status.state == TaskState::Running)
        .map(|t| t.spec.container.image.clone())
        .collect();
    v.sort();
    v
}

pub(super) fn replicated(id: &str, replicas: u64, img: &str, update: UpdateConfig) -> Service {
    let mut s = service(id, ServiceMode::Replicated { replicas });
    s.spec.task.container.image = img.into();
    s.spec.update = update;
    s
}

pub(super) fn two_nodes() -> Vec<Node> {
    vec![node("n1"), node("n2")]
}

pub(super) fn imgs(img: &str, n: usize) -> Vec<String> {
    vec![img.to_owned(); n]
}

#[test]
fn parallelism_1_2_0_and_completed_status() {
    for (p, want) in [(1, vec![1, 1, 1, 1]), (2, vec![2, 2]), (0, vec![4])] {
        let mut sim = Sim::new(
            two_nodes(),
            vec![replicated("s1", 4, "v1", cfg(p, UpdateOrder::StopFirst))],
        );
        let started = sim.w.time;
        sim.deploy("s1", |s| s.task.container.image = "v2".into());
        sim.converge(&mut |_| {});
        assert_eq!(sim.batch_sizes(), want, "parallelism {p}");
        assert_eq!(running_images(&sim.w, "s1"), imgs("v2", 4));
        let status = sim.status("s1");
        assert_eq!(status.state, UpdateState::Completed);
        assert_eq!(status.message, "update completed");
        assert_eq!(status.started_at, started);
        let last_running = sim
            .w
            .state
            .tasks_of_service("s1")
            .filter(|t| t.status.state == TaskState::Running)
            .map(|t| t.status.timestamp)
            .max()
            .unwrap();
        let done = status.completed_at.expect("completed_at");
        assert!(done >= last_running + 5000, "monitor window waited for");
        assert!(done < last_running + 7000, "and not much longer");
        assert!(sim.requeued, "the monitor window is timed by requeue_after");
    }
}

#[test]
fn delay_between_batches() {
    let mut c = cfg(1, UpdateOrder::StopFirst);
    c.delay = Duration::from_secs(10);
    let mut sim = Sim::new(two_nodes(), vec![replicated("s1", 3, "v1", c)]);
    sim.deploy("s1", |s| s.task.container.image = "v2".into());
    sim.converge(&mut |_| {});
    assert_eq!(sim.batch_sizes(), vec![1, 1, 1]);
    for pair in sim.batches.windows(2) {
        let gap = pair[1].0 - pair[0].0;
        assert!((10_000..14_000).contains(&gap), "gap {gap}");
    }
    assert!(sim.requeued);
    assert_eq!(running_images(&sim.w, "s1"), imgs("v2", 3));
}

#[test]
fn stop_first_never_exceeds_replicas() {
    let mut sim = Sim::new(
        two_nodes(),
        vec![replicated("s1", 4, "v1", cfg(2, UpdateOrder::StopFirst))],
    );
    sim.deploy("s1", |s| s.task.container.image = "v2".into());
    let mut max = 0;
    sim.converge(&mut |w| {
        let n = running_count(w, "s1");
        max = max.max(n);
        assert!(n <= 4, "{n} running");
    });
    assert_eq!(max, 4);
    assert_eq!(running_images(&sim.w, "s1"), imgs("v2", 4));
    assert_eq!(sim.status("s1").state, UpdateState::Completed);
}

#[test]
fn start_first_stays_within_replicas_and_replicas_plus_parallelism() {
    let mut sim = Sim::new(
        two_nodes(),
        vec![replicated("s1", 4, "v1", cfg(2, UpdateOrder::StartFirst))],
    );
    sim.deploy("s1", |s| s.task.container.image = "v2".into());
    let mut max = 0;
    sim.converge(&mut |w| {
        let n = running_count(w, "s1");
        max = max.max(n);
        assert!((4..=6).contains(&n), "{n} running");
    });
    assert_eq!(max, 6, "batches of two ran beside the old tasks");
    assert_eq!(sim.batch_sizes(), vec![2, 2]);
    assert_eq!(running_images(&sim.w, "s1"), imgs("v2", 4));
    assert_eq!(sim.status("s1").state, UpdateState::Completed);
}

pub(super) fn v2_slots(w: &World) -> Vec<u64> {
    let mut slots: Vec<u64> = w
        .state
        .tasks_of_service("s1")
        .filter(|t| t.spec_version == 2)
        .map(|t| t.slot)
        .collect();
    slots.sort();
    slots.dedup();
    slots
}

fn scale(sim: &mut Sim, replicas: u64) {
    let mut s = sim.service("s1").clone();
    s.spec.mode = ServiceMode::Replicated { replicas };
    sim.write(s);
}

#[test]
fn scaling_during_an_update() {
    for (to, want) in [(6u64, 6usize), (2, 2)] {
        let mut c = cfg(1, UpdateOrder::StopFirst);
        c.delay = Duration::from_secs(5);
        let mut sim = Sim::new(two_nodes(), vec![replicated("s1", 4, "v1", c)]);
        sim.deploy("s1", |s| s.task.container.image = "v2".into());
        sim.run_until("second batch", &|w| v2_slots(w).len() == 2);
        scale(&mut sim, to);
        sim.converge(&mut |_| {});
        assert_eq!(running_images(&sim.w, "s1"), imgs("v2", want), "to {to}");
        assert_eq!(sim.status("s1").state, UpdateState::Completed);
    }
}

#[test]
fn a_new_deploy_during_an_update_wins() {
    for order in [UpdateOrder::StopFirst, UpdateOrder::StartFirst] {
        let mut c = cfg(1, order);
        c.delay = Duration::from_secs(3);
        let mut sim = Sim::new(two_nodes(), vec![replicated("s1", 4, "v1", c)]);
        sim.deploy("s1", |s| s.task.container.image = "v2".into());
        sim.run_until("second batch", &|w| v2_slots(w).len() == 2);
        sim.deploy("s1", |s| s.task.container.image = "v3".into());
        sim.converge(&mut |w| {
            let n = running_count(w, "s1");
            match order {
                UpdateOrder::StopFirst => assert!(n <= 4, "{n} running"),
                UpdateOrder::StartFirst => assert!(n >= 4, "{n} running"),
            }
        });
        assert_eq!(running_images(&sim.w, "s1"), imgs("v3", 4), "{order:?}");
        assert_eq!(sim.status("s1").state, UpdateState::Completed);
        assert_eq!(sim.service("s1").spec_version, 3);
    }
}

#[test]
fn global_service_updated_node_by_node() {
    let mut g = service("g", ServiceMode::Global);
    g.spec.task.container.image = "v1".into();
    let mut sim = Sim::new(vec![node("n1"), node("n2"), node("n3")], vec![g]);
    assert_eq!(running_count(&sim.w, "g"), 3);
    sim.deploy("g", |s| s.task.container.image = "v2".into());
    sim.converge(&mut |w| assert!(running_count(w, "g") <= 3));
    assert_eq!(sim.batch_sizes(), vec![1, 1, 1]);
    assert_eq!(running_images(&sim.w, "g"), imgs("v2", 3));
    assert_eq!(sim.status("g").state, UpdateState::Completed);

    // Start-first, two nodes at a time: never fewer than one task per node running.
    let mut s = sim.service("g").clone();
    s.spec.update = cfg(2, UpdateOrder::StartFirst);
    sim.write(s);
    sim.batches.clear();
    sim.deploy("g", |s| s.task.container.image = "v3".into());
    sim.converge(&mut |w| assert!((3..=5).contains(&running_count(w, "g"))));
    assert_eq!(sim.batch_sizes(), vec![2, 1]);
    assert_eq!(running_images(&sim.w, "g"), imgs("v3", 3));
    assert_eq!(sim.status("g").state, UpdateState::Completed);
}

#[test]
fn job_tasks_exiting_0_are_not_failures_but_service_tasks_are() {
    let mut j = service(
        "j",
        ServiceMode::ReplicatedJob {
            max_concurrent: 2,
            total_completions: 2,
        },
    );
    j.spec.task.container.image = "v1".into();
    let mut sim = Sim::new(two_nodes(), vec![j]);
    assert_eq!(running_count(&sim.w, "j"), 2);
    sim.deploy("j", |s| s.task.container.image = "exit0".into());
    sim.converge(&mut |_| {});
    assert_eq!(sim.status("j").state, UpdateState::Completed);
    let done = sim
        .w
        .state
        .tasks_of_service("j")
        .filter(|t| t.spec_version == 2 && t.desired_state == TaskState::Complete)
        .count();
    assert_eq!(done, 2);

    // A long-running service whose new tasks exit 0 at once: Docker counts that as a failure.
    let mut sim = Sim::new(
        two_nodes(),
        vec![replicated("s1", 2, "v1", cfg(1, UpdateOrder::StopFirst))],
    );
    sim.deploy("s1", |s| s.task.container.image = "exit0".into());
    sim.run_until("paused", &|w| {
        w.state
            .service("s1")
            .unwrap()
            .update_status
            .as_ref()
            .unwrap()
            .state
            == UpdateState::Paused
    });
}

#[test]
fn secret_rotation_replaces_only_services_whose_spec_changed() {
    let with_secret = |id: &str| {
        let mut s = replicated(id, 2, "v1", cfg(1, UpdateOrder::StopFirst));
        s.spec.task.container.secrets = vec![FileReference {
            name: "db_password".into(),
            id: "sec1".into(),
            target: "db_password".into(),
            ..FileReference::default()
        }];
        s
    };
    let mut sim = Sim::new(two_nodes(), vec![with_secret("s1"), with_secret("s2")]);
    let ids_of = |w: &World, id: &str| {
        let mut v: Vec<String> = w
            .state
            .tasks_of_service(id)
            .filter(|t| t.status.state == TaskState::Running)
            .map(|t| t.id.clone())
            .collect();
        v.sort();
        v
    };
    let (s1_before, s2_before) = (ids_of(&sim.w, "s1"), ids_of(&sim.w, "s2"));
    sim.deploy("s1", |s| s.task.container.secrets[0].id = "sec2".into());
    sim.converge(&mut |_| {});
    let s1_after = ids_of(&sim.w, "s1");
    assert_eq!(s1_after.len(), 2);
    assert!(
        s1_after.iter().all(|id| !s1_before.contains(id)),
        "s1 restarted"
    );
    assert_eq!(ids_of(&sim.w, "s2"), s2_before, "s2 untouched");
    let on_new_secret = sim
        .w
        .state
        .tasks_of_service("s1")
        .filter(|t| t.status.state == TaskState::Running)
        .all(|t| t.spec.container.secrets[0].id == "sec2");
    assert!(on_new_secret);
    assert_eq!(sim.status("s1").state, UpdateState::Completed);
    assert_eq!(sim.service("s2").update_status, None);
}

#[test]
fn merged_plans_converge_too() {
    let mut w = World::with(creates(
        two_nodes(),
        vec![replicated("s1", 3, "v1", cfg(2, UpdateOrder::StartFirst))],
        vec![],
    ));
    let mut ids = SeqIds::new("t");
    let step = |w: &mut World, ids: &mut SeqIds| {
        let plan = crate::manager::reconcile_all(&w.state, w.time, ids);
        let busy = !plan.is_empty() || plan.requeue_after.is_some();
        if !plan.is_empty() {
            w.apply_plan(&plan);
        }
        let agent = agent_step(w, &behave);
        w.time += 1000;
        busy || agent
    };
    for _ in 0..100 {
        if !step(&mut w, &mut ids) {
            break;
        }
    }
    let mut s = w.state.service("s1").unwrap().clone();
    let v = s.meta.version;
    s.previous_spec = Some(s.spec.clone());
    s.spec.task.container.image = "v2".into();
    s.spec_version += 1;
    s.update_status = Some(UpdateStatus {
        state: UpdateState::Updating,
        started_at: w.time,
        completed_at: None,
        message: "update in progress".into(),
    });
    w.apply_ops(vec![Op::UpdateService {
        service: s,
        expected_version: v,
    }]);
    for _ in 0..200 {
        if !step(&mut w, &mut ids) {
            break;
        }
        let n = running_count(&w, "s1");
        assert!((3..=5).contains(&n), "{n}");
    }
    assert_eq!(running_images(&w, "s1"), imgs("v2", 3));
    let state = w
        .state
        .service("s1")
        .unwrap()
        .update_status
        .as_ref()
        .unwrap()
        .state;
    assert_eq!(state, UpdateState::Completed);
}

/// The controller type is the shared one.
#[test]
fn is_a_controller() {
    let c: Controller = reconcile;
    let w = World::new();
    assert!(c(&w.state, w.time, &mut SeqIds::new("x")).is_empty());
    let _ = TaskStatus::new(TaskState::New, 0);
}
