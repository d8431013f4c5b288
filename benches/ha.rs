//! HA benchmark with real `swarmd` processes on loopback (the binaries cargo builds for this bench), Raft at
//! swarmd's default timing unless `HA_BENCH_ARGS` adds flags:
//!
//! - **failover**: three managers; the leader is killed with SIGKILL, and the time until the first write
//!   (`CreateSecret`) through a follower's unix socket succeeds is measured; the killed manager is restarted and
//!   rejoins before the next run. 20 runs (`HA_BENCH_RUNS`), median and p90.
//! - **write throughput**: `CreateSecret` calls from 1, 16 and 256 concurrent clients on the leader's socket for
//!   3 s each: committed writes/s and p99 latency, on 3 managers and on 1 manager (the baseline) in the same run.
//!
//! Run: `cargo bench --bench ha`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use swarm::api::control::{self, control_client::ControlClient};

struct Manager {
    dir: PathBuf,
    port: u16,
    args: Vec<String>,
    child: Option<Child>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn extra_args() -> Vec<String> {
    std::env::var("HA_BENCH_ARGS")
        .map(|a| a.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

impl Manager {
    fn new(root: &Path, name: &str, join: Option<(&Manager, String)>) -> Manager {
        std::fs::create_dir_all(root).expect("bench dir");
        let mut args = extra_args();
        if let Some((via, token)) = join {
            args.extend([
                "--join-addr".into(),
                format!("127.0.0.1:{}", via.port),
                "--join-token".into(),
                token,
            ]);
        }
        let mut m = Manager {
            dir: root.join(name),
            port: free_port(),
            args,
            child: None,
        };
        m.spawn();
        m
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.with_extension("log"))
            .expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_swarmd"))
            .arg("--state-dir")
            .arg(&self.dir)
            .arg("--listen-addr")
            .arg(format!("127.0.0.1:{}", self.port))
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start swarmd");
        self.child = Some(child);
        self.wait_answering();
    }

    fn host(&self) -> String {
        format!("unix://{}/swarmd.sock", self.dir.display())
    }

    fn ctl(&self, args: &[&str]) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_swarmctl"))
            .env("SWARM_HOST", self.host())
            .args(args)
            .output()
            .expect("swarmctl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn wait_answering(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.ctl(&["node", "ls"]).contains("Ready") {
            assert!(
                Instant::now() < deadline,
                "swarmd at {} did not start",
                self.host()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn node_id(&self) -> String {
        self.ctl(&["swarm", "info"])
            .lines()
            .find_map(|l| l.trim().strip_prefix("NodeID: ").map(str::to_string))
            .unwrap_or_default()
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        self.kill9();
    }
}

async fn client(m: &Manager) -> ControlClient<swarm::cli::client::Conn> {
    swarm::cli::client::connect(&m.host())
        .await
        .expect("connect")
}

static NAMES: AtomicU64 = AtomicU64::new(0);

async fn write(c: &mut ControlClient<swarm::cli::client::Conn>) -> bool {
    let n = NAMES.fetch_add(1, Ordering::Relaxed);
    c.create_secret(control::CreateSecretRequest {
        name: format!("bench{n}"),
        data: b"x".to_vec(),
        labels: Default::default(),
    })
    .await
    .is_ok()
}

fn cluster(root: &Path, size: usize) -> Vec<Manager> {
    let first = Manager::new(root, "m0", None);
    let token = first
        .ctl(&["swarm", "join-token", "-q", "manager"])
        .trim()
        .to_string();
    let mut managers = vec![first];
    for i in 1..size {
        let m = Manager::new(root, &format!("m{i}"), Some((&managers[0], token.clone())));
        managers.push(m);
    }
    wait_members(&managers, size);
    managers
}

/// Waits until `node ls` shows `size` managers, all reachable, one leader.
fn wait_members(managers: &[Manager], size: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let asker = managers
            .iter()
            .find(|m| m.child.is_some())
            .expect("a manager");
        let ls = asker.ctl(&["node", "ls"]);
        if ls.matches("Leader").count() == 1 && ls.matches("Reachable").count() == size - 1 {
            return;
        }
        assert!(Instant::now() < deadline, "managers did not settle: {ls}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn leader(managers: &[Manager]) -> usize {
    let ids: Vec<String> = managers.iter().map(Manager::node_id).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ls = managers[0].ctl(&["node", "ls"]);
        if let Some(id) = ls
            .lines()
            .find(|l| l.contains("Leader"))
            .and_then(|l| l.split_whitespace().next())
        {
            if let Some(i) = ids.iter().position(|x| x == id) {
                return i;
            }
        }
        assert!(Instant::now() < deadline, "no leader");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn failover(rt: &tokio::runtime::Runtime, root: &Path, runs: usize) {
    let mut managers = cluster(root, 3);
    let mut times = Vec::new();
    for run in 0..runs {
        let l = leader(&managers);
        let via = (l + 1) % 3;
        let mut c = rt.block_on(client(&managers[via]));
        assert!(rt.block_on(write(&mut c)), "a write before the kill");
        managers[l].kill9();
        let start = Instant::now();
        while !rt.block_on(write(&mut c)) {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "no failover in 60 s"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let t = start.elapsed();
        println!("failover run {run}: {t:?}");
        times.push(t);
        managers[l].spawn();
        wait_members(&managers, 3);
    }
    times.sort();
    println!(
        "failover over {runs} runs: median {:?}, p90 {:?}, min {:?}, max {:?}",
        percentile(&times, 0.5),
        percentile(&times, 0.9),
        times[0],
        times[times.len() - 1]
    );
}

fn throughput(rt: &tokio::runtime::Runtime, managers: &[Manager], label: &str) {
    let l = if managers.len() == 1 {
        0
    } else {
        leader(managers)
    };
    for clients in [1usize, 16, 256] {
        let latencies = rt.block_on(async {
            let deadline = Instant::now() + Duration::from_secs(3);
            let mut tasks = Vec::new();
            let host = managers[l].host();
            for _ in 0..clients {
                let host = host.clone();
                tasks.push(tokio::spawn(async move {
                    let mut c = swarm::cli::client::connect(&host).await.expect("connect");
                    let mut lat = Vec::new();
                    while Instant::now() < deadline {
                        let t = Instant::now();
                        if write(&mut c).await {
                            lat.push(t.elapsed());
                        }
                    }
                    lat
                }));
            }
            let mut all = Vec::new();
            for t in tasks {
                all.extend(t.await.unwrap_or_default());
            }
            all
        });
        let mut lat = latencies;
        lat.sort();
        let n = lat.len();
        println!(
            "{label}: {clients:>3} clients: {:>7.0} writes/s, p50 {:?}, p99 {:?}",
            n as f64 / 3.0,
            percentile(&lat, 0.5),
            percentile(&lat, 0.99)
        );
    }
}

fn main() {
    let runs: usize = std::env::var("HA_BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(20);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let root = tempfile::tempdir().expect("tempdir");
    println!("swarmd args: {:?} (empty = defaults)", extra_args());
    failover(&rt, &root.path().join("failover"), runs);
    {
        let single = cluster(&root.path().join("one"), 1);
        throughput(&rt, &single, "1 manager (baseline)");
    }
    {
        let three = cluster(&root.path().join("three"), 3);
        throughput(&rt, &three, "3 managers");
    }
}
