//! Simulation of the whole manager with real agents: an in-process cluster (store without Raft, the driver's
//! controllers, `Worker`s over `FakeExecutor`s, a manual clock) stepped deterministically. The harness checks
//! its invariants after every applied batch; each test drives one behaviour, most as a chaos phase followed
//! by heal-and-converge.

pub(crate) mod harness;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use harness::{service, Sim};
use swarm::exec::fake::{Match, Outcome};
use swarm::exec::ExitStatus;
use swarm::model::{NodeAvailability, RestartCondition, ServiceMode, Task, TaskState};

const SEC: Duration = Duration::from_secs(1);

fn replicated(n: u64) -> ServiceMode {
    ServiceMode::Replicated { replicas: n }
}

/// Distinct slots of live tasks of the service.
fn slots(tasks: &[Task]) -> BTreeSet<u64> {
    tasks.iter().map(|t| t.slot).collect()
}

#[tokio::test]
async fn scale_up_spreads_and_scale_down_shuts_down_the_rest() {
    let mut sim = Sim::new("scale", 3);
    sim.create_service(service("web", replicated(0)));
    sim.step(SEC).await;
    assert!(sim.tasks_of("web").is_empty());

    sim.scale("web", 10);
    sim.run_until("10 running", SEC, 10, |s| s.running("web").len() == 10)
        .await;
    let per = sim.running_per_node("web");
    let mut counts: Vec<usize> = per.iter().map(|(_, c)| *c).collect();
    counts.sort();
    assert_eq!(counts, vec![3, 3, 4], "{per:?}\n{}", sim.dump());
    assert_eq!(slots(&sim.running("web")), (1..=10).collect());
    assert!(sim.runtime_matches_store(), "{}", sim.dump());

    sim.scale("web", 3);
    sim.run_until("3 running, runtime in step", SEC, 10, |s| {
        s.running("web").len() == 3 && s.runtime_matches_store()
    })
    .await;
    // A few more steps: nothing comes back.
    for _ in 0..5 {
        sim.step(SEC).await;
    }
    assert_eq!(slots(&sim.running("web")), (1..=3).collect());
    for t in sim.tasks_of("web") {
        if t.slot > 3 {
            assert!(
                t.desired_state >= TaskState::Shutdown && t.status.state.is_terminal(),
                "scaled-down task still live: {t:?}\n{}",
                sim.dump()
            );
        }
    }
    assert_eq!(sim.runtime_running().len(), 3, "{}", sim.dump());
    assert!(sim.rejected.is_empty(), "{}", sim.dump());
}

/// A service whose tasks exit with `code` after 1s, under `condition`.
fn exiting(sim: &mut Sim, name: &str, code: i32, condition: RestartCondition) {
    sim.script(
        Match::TaskNamePrefix(format!("{name}.")),
        Outcome::Exit { code, after: SEC },
    );
    let mut s = service(name, replicated(1));
    s.spec.task.restart.condition = condition;
    sim.create_service(s);
}

#[tokio::test]
async fn restart_conditions() {
    let mut sim = Sim::new("restart", 2);
    let cases = [
        ("any0", 0, RestartCondition::Any, true),
        ("any1", 1, RestartCondition::Any, true),
        ("onf0", 0, RestartCondition::OnFailure, false),
        ("onf1", 1, RestartCondition::OnFailure, true),
        ("none0", 0, RestartCondition::None, false),
        ("none1", 1, RestartCondition::None, false),
    ];
    for (name, code, cond, _) in cases {
        exiting(&mut sim, name, code, cond);
    }
    for _ in 0..12 {
        sim.step(SEC).await;
    }
    for (name, code, cond, restarts) in cases {
        let tasks = sim.tasks_of(name);
        let ended: Vec<&Task> = tasks
            .iter()
            .filter(|t| t.status.exit_code == Some(code) && t.status.state.is_terminal())
            .collect();
        assert!(!ended.is_empty(), "{name}: nothing exited\n{}", sim.dump());
        if restarts {
            // Reaped tasks aside, several generations must have run in slot 1.
            assert!(
                ended.len() >= 2,
                "{name} ({cond:?}, exit {code}) should restart: {} ended\n{}",
                ended.len(),
                sim.dump()
            );
        } else {
            assert_eq!(
                tasks.len(),
                1,
                "{name} ({cond:?}, exit {code}) must not restart\n{}",
                sim.dump()
            );
        }
    }
    assert!(sim.rejected.is_empty(), "{}", sim.dump());
}

#[tokio::test]
async fn restart_delay_is_honoured() {
    let mut sim = Sim::new("delay", 2);
    sim.script(
        Match::TaskNamePrefix("slow.".into()),
        Outcome::Exit {
            code: 1,
            after: 2 * SEC,
        },
    );
    let mut s = service("slow", replicated(1));
    s.spec.task.restart.delay = 10 * SEC;
    sim.create_service(s);
    sim.run_until("first task failed", SEC, 10, |s| {
        s.tasks_of("slow")
            .iter()
            .any(|t| t.status.state == TaskState::Failed)
    })
    .await;
    let failed_at = sim
        .tasks_of("slow")
        .iter()
        .find(|t| t.status.state == TaskState::Failed)
        .map(|t| t.status.timestamp)
        .expect("failed task");
    // Until the delay is over there is exactly the one (failed) task.
    while sim.now() + 1000 < failed_at + 10_000 {
        sim.step(SEC).await;
        assert_eq!(
            sim.tasks_of("slow").len(),
            1,
            "replacement before the delay ({}ms after the failure)\n{}",
            sim.now() - failed_at,
            sim.dump()
        );
    }
    sim.run_until("replacement running", SEC, 4, |s| {
        s.running("slow").len() == 1
    })
    .await;
    let replacement = sim.running("slow").remove(0);
    assert!(
        replacement.meta.created_at >= failed_at + 10_000,
        "replacement created {}ms after the failure\n{}",
        replacement.meta.created_at - failed_at,
        sim.dump()
    );
}

#[tokio::test]
async fn restart_max_attempts_within_window() {
    let mut sim = Sim::new("attempts", 2);
    sim.script(
        Match::TaskNamePrefix("flaky.".into()),
        Outcome::Exit {
            code: 1,
            after: SEC,
        },
    );
    let mut s = service("flaky", replicated(1));
    s.spec.task.restart.max_attempts = 2;
    s.spec.task.restart.window = Duration::from_secs(60);
    sim.create_service(s);
    for _ in 0..20 {
        sim.step(SEC).await;
    }
    let created: BTreeSet<String> = sim.tasks_of("flaky").into_iter().map(|t| t.id).collect();
    // the first run plus two restarts, all failed, none running
    assert_eq!(created.len(), 3, "{}", sim.dump());
    assert!(sim.running("flaky").is_empty(), "{}", sim.dump());
    assert!(sim.runtime_running().is_empty(), "{}", sim.dump());
}

#[tokio::test]
async fn drain_pause_and_node_down() {
    let mut sim = Sim::new("nodes", 3);
    sim.create_service(service("web", replicated(6)));
    sim.run_until("6 running", SEC, 10, |s| s.running("web").len() == 6)
        .await;
    assert_eq!(
        sim.running_per_node("web"),
        vec![("n1".into(), 2), ("n2".into(), 2), ("n3".into(), 2)]
    );

    // Drain n1: its tasks move to n2 and n3, and stop in n1's runtime.
    sim.set_availability("n1", NodeAvailability::Drain);
    sim.run_until("n1 drained", SEC, 10, |s| {
        s.running("web").len() == 6
            && s.running_per_node("web")[0].1 == 0
            && s.runtime_matches_store()
    })
    .await;

    // Pause n2 and scale up: the new tasks all go to n3.
    sim.set_availability("n2", NodeAvailability::Pause);
    let n2_before = sim.running_per_node("web")[1].1;
    sim.scale("web", 9);
    sim.run_until("9 running", SEC, 10, |s| s.running("web").len() == 9)
        .await;
    let per = sim.running_per_node("web");
    assert_eq!(per[0].1, 0, "{per:?}");
    assert_eq!(per[1].1, n2_before, "paused node got new tasks: {per:?}");
    assert_eq!(per[2].1, 9 - n2_before, "{per:?}");

    // Heal n1 and n2; then n3 goes down: its tasks are replaced on n1/n2.
    sim.set_availability("n1", NodeAvailability::Active);
    sim.set_availability("n2", NodeAvailability::Active);
    sim.node_down("n3");
    sim.run_until("9 running without n3", SEC, 10, |s| {
        let per = s.running_per_node("web");
        per[0].1 + per[1].1 == 9
    })
    .await;
    // n3's runtime still runs its old tasks (it is partitioned, not dead); the manager no longer counts them.
    assert!(!sim.nodes["n3"].exec.states().is_empty());

    // n3 comes back: it is told to stop what it ran, and everything matches.
    sim.node_up("n3");
    sim.run_until("runtime matches after n3 returns", SEC, 10, |s| {
        s.running("web").len() == 9 && s.runtime_matches_store()
    })
    .await;
    assert!(sim.rejected.is_empty(), "{}", sim.dump());
}

#[tokio::test]
async fn global_service_follows_nodes() {
    let mut sim = Sim::new("global", 3);
    sim.create_service(service("agent", ServiceMode::Global));
    sim.run_until("one per node", SEC, 10, |s| {
        s.running_per_node("agent").iter().all(|(_, c)| *c == 1)
    })
    .await;
    sim.add_node("n4");
    sim.run_until("n4 gets one", SEC, 10, |s| {
        s.running_per_node("agent").iter().all(|(_, c)| *c == 1)
    })
    .await;
    assert_eq!(sim.running("agent").len(), 4);
    sim.set_availability("n2", NodeAvailability::Drain);
    sim.run_until("n2 has none", SEC, 10, |s| {
        s.running_per_node("agent")
            .iter()
            .all(|(n, c)| *c == usize::from(n != "n2"))
            && s.runtime_matches_store()
    })
    .await;
    sim.set_availability("n2", NodeAvailability::Active);
    sim.run_until("n2 back", SEC, 10, |s| {
        s.running_per_node("agent").iter().all(|(_, c)| *c == 1) && s.runtime_matches_store()
    })
    .await;
    assert!(sim.rejected.is_empty(), "{}", sim.dump());
}

#[tokio::test]
async fn replicated_job_completes() {
    let mut sim = Sim::new("job", 3);
    sim.script(
        Match::TaskNamePrefix("batch.".into()),
        Outcome::Exit {
            code: 0,
            after: 2 * SEC,
        },
    );
    sim.create_service(service(
        "batch",
        ServiceMode::ReplicatedJob {
            max_concurrent: 2,
            total_completions: 5,
        },
    ));
    let mut max_active = 0;
    for _ in 0..30 {
        sim.step(SEC).await;
        let active = sim
            .tasks_of("batch")
            .iter()
            .filter(|t| !t.status.state.is_terminal() && t.desired_state <= TaskState::Complete)
            .count();
        max_active = max_active.max(active);
        assert!(active <= 2, "{active} job tasks at once\n{}", sim.dump());
    }
    let tasks = sim.tasks_of("batch");
    let done: Vec<&Task> = tasks
        .iter()
        .filter(|t| t.status.state == TaskState::Complete && t.status.exit_code == Some(0))
        .collect();
    assert_eq!(done.len(), 5, "{}", sim.dump());
    assert_eq!(slots(&tasks), (1..=5).collect(), "{}", sim.dump());
    assert_eq!(
        tasks.len(),
        5,
        "a successful job task was restarted\n{}",
        sim.dump()
    );
    assert_eq!(max_active, 2);
    assert!(sim.runtime_running().is_empty());
}

/// A tiny deterministic generator (xorshift), so the chaos phase is reproducible from its printed seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Runs the chaos seeds; `SIM_SEED=N` (decimal or 0x-hex, as printed) replays only that one. A failing seed
/// is printed with the command that replays it.
#[tokio::test]
async fn chaos_then_heal_and_converge() {
    let seeds: Vec<u64> = match std::env::var("SIM_SEED") {
        Ok(v) => vec![parse_seed(&v).unwrap_or_else(|| panic!("SIM_SEED={v}: not a number"))],
        Err(_) => (1..=CHAOS_SEEDS)
            .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
            .collect(),
    };
    for seed in seeds {
        let run = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(chaos(seed)));
        if let Err(panic) = run.await {
            eprintln!(
                "chaos seed {seed:#x} failed; replay it with: SIM_SEED={seed:#x} cargo test --test integration chaos_then_heal_and_converge"
            );
            std::panic::resume_unwind(panic);
        }
    }
}

fn parse_seed(v: &str) -> Option<u64> {
    let v = v.trim();
    match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

/// How many seeds the chaos test runs.
const CHAOS_SEEDS: u64 = 12;

/// 40 rounds of chaos (task crashes, availability changes, nodes lost and back, scaling), then every node
/// healed: the cluster must converge to the wanted replicas, one global task per node, and runtimes in step.
async fn chaos(seed: u64) {
    println!("chaos seed {seed:#x}");
    let mut rng = Rng(seed);
    let mut sim = Sim::new(&format!("chaos{seed:x}"), 4);
    sim.create_service(service("web", replicated(8)));
    sim.create_service(service("agent", ServiceMode::Global));
    // background churn: tasks that keep failing and restarting after a delay, and a job
    sim.script(
        Match::TaskNamePrefix("flaky.".into()),
        Outcome::Exit {
            code: 1,
            after: 3 * SEC,
        },
    );
    let mut flaky = service("flaky", replicated(3));
    flaky.spec.task.restart.delay = 2 * SEC;
    sim.create_service(flaky);
    sim.script(
        Match::TaskNamePrefix("batch.".into()),
        Outcome::Exit {
            code: 0,
            after: 2 * SEC,
        },
    );
    sim.create_service(service(
        "batch",
        ServiceMode::ReplicatedJob {
            max_concurrent: 3,
            total_completions: 12,
        },
    ));
    let mut replicas = 8;
    for round in 0..40 {
        let node = format!("n{}", 1 + rng.below(4));
        let action = rng.below(6);
        match action {
            0 => {
                // crash a running task
                let running = sim.runtime_running();
                if !running.is_empty() {
                    let (n, t) = &running[rng.below(running.len() as u64) as usize];
                    let _ = sim.nodes[n].exec.exit_task(t, ExitStatus::exited(137));
                }
            }
            1 => {
                let a = [
                    NodeAvailability::Active,
                    NodeAvailability::Pause,
                    NodeAvailability::Drain,
                ][rng.below(3) as usize];
                sim.set_availability(&node, a);
            }
            2 if sim.nodes[&node].connected => sim.node_down(&node),
            2 => sim.node_up(&node),
            3 => {
                replicas = 2 + rng.below(10);
                sim.scale("web", replicas);
            }
            _ => {}
        }
        if std::env::var_os("SIM_VERBOSE").is_some() {
            println!("chaos round {round}: action {action} on {node}");
        }
        sim.step(SEC).await;
    }

    // Heal: every node Ready and Active.
    let ids: Vec<String> = sim.nodes.keys().cloned().collect();
    for id in &ids {
        if !sim.nodes[id].connected {
            sim.node_up(id);
        }
        sim.set_availability(id, NodeAvailability::Active);
    }
    sim.run_until("converged after healing", SEC, 30, |s| {
        s.running("web").len() as u64 == replicas
            && s.running_per_node("agent").iter().all(|(_, c)| *c == 1)
            && s.tasks_of("batch")
                .iter()
                .filter(|t| t.desired_state == TaskState::Complete)
                .count()
                == 12
    })
    .await;
    // flaky keeps cycling; the runtime must agree with the store on everything else
    sim.update_service("flaky", |s| s.spec.mode = replicated(0));
    sim.run_until("runtime matches the store", SEC, 10, |s| {
        s.runtime_matches_store()
    })
    .await;
    // A slot is done once: one task with desired Complete per slot. (A job task that finishes on a
    // partitioned node may run again elsewhere — at least once, as in swarm — and its late Complete report
    // lands on a task already shut down, so count the slot markers, not Complete statuses.)
    let batch_slots: Vec<u64> = sim
        .tasks_of("batch")
        .iter()
        .filter(|t| t.desired_state == TaskState::Complete)
        .map(|t| t.slot)
        .collect();
    assert_eq!(
        batch_slots.iter().copied().collect::<BTreeSet<u64>>().len(),
        12,
        "a job slot completed twice or one is missing: {batch_slots:?}\n{}",
        sim.dump()
    );
    let by_slot: BTreeMap<u64, usize> =
        sim.running("web").iter().fold(BTreeMap::new(), |mut m, t| {
            *m.entry(t.slot).or_default() += 1;
            m
        });
    assert_eq!(
        by_slot.keys().copied().collect::<BTreeSet<u64>>(),
        (1..=replicas).collect(),
        "{}",
        sim.dump()
    );
    assert!(sim.rejected.is_empty(), "{}", sim.dump());
}
