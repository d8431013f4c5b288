//! Rolling-update benchmark: the wall time of a whole rolling update through the in-process cluster of the
//! simulation tests (`tests/integration/sim/harness.rs`: store without Raft, the manager's controllers in the
//! driver's order, a real `agent::Worker` over a `FakeExecutor` per node, a manual clock). A service of N
//! replicas over 10 nodes runs v1; a deploy of v2 (new image, as `stack deploy` does it) starts the update
//! (parallelism 10, delay 1s, stop-first, monitor 5s) and the cluster is stepped by 1s of manual time until
//! the update is `Completed` with every replica running v2. The clock is manual, so the configured delays
//! and the monitor period cost no wall time: the measured wall time *is* "wall time minus configured
//! delays". The simulated time the update took is printed too. The harness's invariant checks (after every
//! applied batch) are part of the measured path. Sizes: 10 replicas (baseline) and 100.
//!
//! Run: `cargo bench --bench rolling_update`.

#[path = "../tests/integration/sim/harness.rs"]
#[allow(dead_code)]
mod harness;

use std::time::{Duration, Instant};

use harness::{service, Sim};
use swarm::model::{ServiceMode, TaskState, UpdateConfig, UpdateOrder, UpdateState};

const SEC: Duration = Duration::from_secs(1);
const NODES: usize = 10;
const PARALLELISM: u64 = 10;
const DELAY: Duration = SEC;
const MONITOR: Duration = Duration::from_secs(5);
const SAMPLES: usize = 5;

struct Run {
    wall: Duration,
    simulated: Duration,
    steps: u64,
}

async fn one(replicas: u64, sample: usize) -> Run {
    let mut sim = Sim::new(&format!("bench{replicas}-{sample}"), NODES);
    let mut s = service("web", ServiceMode::Replicated { replicas });
    s.spec.update = UpdateConfig {
        parallelism: PARALLELISM,
        delay: DELAY,
        monitor: MONITOR,
        order: UpdateOrder::StopFirst,
        ..UpdateConfig::default()
    };
    sim.create_service(s);
    sim.run_until("v1 running", SEC, 10, |s| {
        s.running("web").len() == replicas as usize
    })
    .await;

    let started = Instant::now();
    let (t0, steps0) = (sim.now(), sim.steps);
    sim.deploy("web", |s| s.task.container.image = "img/web:v2".into());
    sim.run_until("update completed", SEC, 1000, |s| {
        s.service("web").update_status.map(|u| u.state) == Some(UpdateState::Completed)
    })
    .await;
    let wall = started.elapsed();

    let running = sim.running("web");
    assert_eq!(running.len(), replicas as usize, "{}", sim.dump());
    assert!(running
        .iter()
        .all(|t| t.spec_version == 2 && t.status.state == TaskState::Running));
    Run {
        wall,
        simulated: Duration::from_millis(sim.now() - t0),
        steps: sim.steps - steps0,
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let mut results = Vec::new();
    for replicas in [10u64, 100] {
        let runs: Vec<Run> = (0..SAMPLES)
            .map(|i| rt.block_on(one(replicas, i)))
            .collect();
        let walls: Vec<Duration> = runs.iter().map(|r| r.wall).collect();
        let min = *walls.iter().min().expect("samples");
        let med = median(walls.clone());
        let batches = replicas.div_ceil(PARALLELISM);
        let configured = DELAY * (batches as u32 - 1) + MONITOR;
        println!(
            "rolling_update replicas={replicas} nodes={NODES} parallelism={PARALLELISM} delay={DELAY:?} \
             monitor={MONITOR:?}: wall median {med:?} min {min:?} (samples {walls:?}); simulated {:?} in {} \
             steps of 1s (configured delays + monitor: {configured:?})",
            runs[0].simulated, runs[0].steps
        );
        results.push((replicas, med));
    }
    let (base_n, base) = results[0];
    for (n, med) in &results[1..] {
        println!(
            "ratio {n} / {base_n} replicas: {:.1}x the wall time for {}x the replicas",
            med.as_secs_f64() / base.as_secs_f64(),
            n / base_n
        );
    }
}
