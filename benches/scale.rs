//! Control plane at scale (issue 13): real `swarmd` managers (the release binaries cargo builds for this bench; a
//! 3-manager Raft group by default) and N simulated nodes in this process — each a real `agent::Worker` over a
//! `FakeExecutor`, joined with a worker token and connected to the managers' dispatcher gRPC service through
//! `node::session` (mutual TLS), exactly as a worker `swarmd` is, minus processes. The managers are drained,
//! so every task lands on a simulated node.
//!
//! For each row `NODESxTASKS`, on a fresh cluster: a stack of `TASKS / 1000` services (1,000 replicas each; one
//! service of `TASKS` below 1,000) is deployed with `swarmctl stack deploy --detach`, and from that call on it
//! measures the time until every task is scheduled and committed (`ListTasks`: a node on every task), until
//! every task is on its agent (running in its node's fake executor), until the managers report every task
//! Running; then the managers' RSS, the heartbeat misses in their logs, and the cost of one `service scale` (+1
//! replica of one service) at steady state: the managers' CPU time (utime + stime, all three) over a window
//! that starts with the scale call, minus their CPU time over an idle window of the same length just before.
//! Every wait gives up after `--timeout` (every RPC after 30 s), or when a manager's RSS passes `--max-rss-mib`
//! (default 6144: the machine is shared), and the row reports how far it got.
//!
//! Run: `cargo bench --bench scale -- [NODESxTASKS ...] [--big] [--timeout SECS] [--managers 1|3] [--max-rss-mib MIB]`; default rows
//! 100x1000 100x10000 1000x10000, `--big` adds 1000x100000. `SCALE_BENCH_ARGS` replaces the managers' extra
//! flags (default `--raft-heartbeat 500ms --raft-election-timeout 3s`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use swarm::agent::Worker;
use swarm::api::control::{self, control_client::ControlClient};
use swarm::api::dispatcher::NodeDescription;
use swarm::exec::fake::FakeExecutor;
use swarm::exec::RuntimeState;
use swarm::model::{Task, TaskState};
use swarm::node::session::{ManagerList, SessionConfig};

type Client = ControlClient<swarm::cli::client::Conn>;

const DEFAULT_MANAGER_ARGS: &str = "--raft-heartbeat 500ms --raft-election-timeout 3s";

struct Manager {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn manager_args() -> Vec<String> {
    std::env::var("SCALE_BENCH_ARGS")
        .unwrap_or_else(|_| DEFAULT_MANAGER_ARGS.into())
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

impl Manager {
    fn start(root: &Path, name: &str, join: Option<(u16, &str)>) -> Result<Manager, String> {
        let dir = root.join(name);
        let log = std::fs::File::create(dir.with_extension("log")).map_err(|e| e.to_string())?;
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_swarmd"));
        cmd.arg("--state-dir")
            .arg(&dir)
            .args(["--executor", "process", "--no-task-networks"])
            .args(manager_args());
        let port = free_port();
        cmd.args(["--listen-addr", &format!("127.0.0.1:{port}")]);
        if let Some((via, token)) = join {
            cmd.args([
                "--join-addr",
                &format!("127.0.0.1:{via}"),
                "--join-token",
                token,
            ]);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("start swarmd: {e}"))?;
        let m = Manager {
            dir,
            port,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !m.ctl(&["node", "ls"]).contains("Ready") {
            if Instant::now() > deadline {
                return Err(format!("swarmd {name} did not start"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(m)
    }

    fn host(&self) -> String {
        format!("unix://{}/swarmd.sock", self.dir.display())
    }

    fn ctl(&self, args: &[&str]) -> String {
        Command::new(env!("CARGO_BIN_EXE_swarmctl"))
            .env("SWARM_HOST", self.host())
            .args(args)
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout).into_owned()
                    + &String::from_utf8_lossy(&o.stderr)
            })
            .unwrap_or_default()
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.with_extension("log")).unwrap_or_default()
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `VmRSS` of `pid` in MiB.
fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// utime + stime of `pid`, in clock ticks (1/100 s on Linux).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // the fields after the command name, which is in parentheses and may hold spaces
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is the state (field 3); utime is field 14, stime 15
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    get(11) + get(12)
}

fn managers_cpu(managers: &[Manager]) -> u64 {
    managers
        .iter()
        .filter_map(Manager::pid)
        .map(cpu_ticks)
        .sum()
}

/// The id of the node `node ls` (asked of `m`) shows as the Raft leader.
fn leader(m: &Manager) -> String {
    m.ctl(&["node", "ls"])
        .lines()
        .find(|l| l.contains("Leader"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or("none")
        .to_string()
}

/// A cluster of `size` managers, all drained; the worker token.
fn cluster(root: &Path, size: usize) -> Result<(Vec<Manager>, String), String> {
    std::fs::create_dir_all(root).map_err(|e| e.to_string())?;
    let first = Manager::start(root, "m0", None)?;
    let mtoken = first
        .ctl(&["swarm", "join-token", "-q", "manager"])
        .trim()
        .to_string();
    let wtoken = first
        .ctl(&["swarm", "join-token", "-q", "worker"])
        .trim()
        .to_string();
    let port = first.port;
    let mut managers = vec![first];
    for i in 1..size {
        managers.push(Manager::start(
            root,
            &format!("m{i}"),
            Some((port, &mtoken)),
        )?);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ls = managers[0].ctl(&["node", "ls"]);
        if ls.matches("Leader").count() == 1 && ls.matches("Reachable").count() == size - 1 {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("managers did not settle: {ls}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for line in managers[0].ctl(&["node", "ls", "-q"]).lines() {
        let id = line.trim();
        if !id.is_empty() {
            managers[0].ctl(&["node", "update", "--availability", "drain", id]);
        }
    }
    Ok((managers, wtoken))
}

/// One simulated node: joins with `token`, runs a worker over a fake executor and its dispatcher session.
async fn sim_node(
    i: usize,
    addrs: Vec<String>,
    token: String,
) -> Result<Arc<FakeExecutor>, String> {
    let joined = swarm::node::join::join(&addrs[0], &token)
        .await
        .map_err(|e| e.to_string())?;
    let ca = swarm::pki::certs_from_pem(&joined.ca_pem, "ca").map_err(|e| e.to_string())?;
    let tls = Arc::new(std::sync::RwLock::new(
        swarm::pki::client_config(&ca, &joined.creds).map_err(|e| e.to_string())?,
    ));
    let cluster_id = joined.creds.identity().cluster_id.clone();
    let exec = Arc::new(FakeExecutor::new());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let worker = Arc::new(Worker::new(
        exec.clone(),
        Arc::new(swarm::util::SystemClock),
        tx,
    ));
    let config = SessionConfig {
        managers: ManagerList::new(addrs),
        tls,
        description: NodeDescription {
            hostname: format!("sim{i:04}"),
            os: std::env::consts::OS.into(),
            arch: std::env::consts::ARCH.into(),
            nano_cpus: 4_000_000_000,
            memory_bytes: 16 << 30,
            engine_labels: Default::default(),
            addr: "127.0.0.1".into(),
            raft_id: 0,
        },
        cluster_id,
        role: None,
    };
    tokio::spawn(swarm::node::session::run(config, worker, rx));
    Ok(exec)
}

fn on_agents(execs: &[Arc<FakeExecutor>]) -> usize {
    execs
        .iter()
        .map(|e| {
            e.states()
                .values()
                .filter(|s| **s == RuntimeState::Running)
                .count()
        })
        .sum()
}

/// (tasks with a node, tasks reported Running) of the services, desired Running only.
async fn manager_counts(c: &mut Client, services: &[String]) -> Option<(usize, usize)> {
    let (mut placed, mut running) = (0, 0);
    for s in services {
        let json = c
            .list_tasks(control::TaskFilter {
                service: s.clone(),
                ..Default::default()
            })
            .await
            .ok()?
            .into_inner()
            .json;
        for j in json {
            let t: Task = serde_json::from_str(&j).ok()?;
            if t.desired_state != TaskState::Running {
                continue;
            }
            if t.node_id.is_some() && t.status.state >= TaskState::Assigned {
                placed += 1;
            }
            if t.status.state == TaskState::Running {
                running += 1;
            }
        }
    }
    Some((placed, running))
}

async fn ready_nodes(c: &mut Client) -> usize {
    c.list_nodes(control::Empty {})
        .await
        .map(|r| {
            r.into_inner()
                .json
                .iter()
                .filter_map(|j| serde_json::from_str::<swarm::model::Node>(j).ok())
                .filter(|n| n.status.state == swarm::model::NodeState::Ready)
                .count()
        })
        .unwrap_or(0)
}

fn secs(d: Option<Duration>) -> String {
    d.map_or("not reached".into(), |d| {
        format!("{:.2} s", d.as_secs_f64())
    })
}

struct Opts {
    timeout: Duration,
    max_rss_mib: f64,
    managers: usize,
}

fn row(root: &Path, nodes: usize, tasks: usize, opts: &Opts) -> Result<(), String> {
    let (managers, token) = cluster(root, opts.managers)?;
    let addrs: Vec<String> = managers
        .iter()
        .map(|m| format!("127.0.0.1:{}", m.port))
        .collect();
    let leader_start = leader(&managers[0]);
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    // for the timers of `tokio::time::timeout` made outside `block_on`
    let guard = rt.enter();
    let host = managers[0].host();
    let deadline_for = |start: Instant| start + opts.timeout;

    // the simulated nodes, 16 joins at a time
    let t = Instant::now();
    let execs: Vec<Arc<FakeExecutor>> = rt.block_on(async {
        futures::stream::iter(0..nodes)
            .map(|i| sim_node(i, addrs.clone(), token.clone()))
            .buffer_unordered(16)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()
    })?;
    let mut c = rt.block_on(swarm::cli::client::connect(&host))?;
    let deadline = deadline_for(t);
    loop {
        let ready = rt
            .block_on(tokio::time::timeout(
                Duration::from_secs(30),
                ready_nodes(&mut c),
            ))
            .unwrap_or(0);
        if ready >= nodes + opts.managers {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "only {ready} of {} nodes Ready",
                nodes + opts.managers
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "[{nodes}x{tasks}] {nodes} simulated nodes joined and Ready in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    // the stack
    let per = tasks.min(1000);
    let count = tasks.div_ceil(per);
    // the stack's default network gets room for every task's address (a /24 would hold 252)
    let mut yml = String::from(
        "networks:\n  default:\n    ipam:\n      config:\n        - subnet: 10.128.0.0/12\nservices:\n",
    );
    for i in 0..count {
        let n = per.min(tasks - i * per);
        yml += &format!(
            "  s{i}:\n    image: x\n    command: [sleep, \"3600\"]\n    deploy:\n      replicas: {n}\n"
        );
    }
    let file = root.join("stack.yml");
    std::fs::write(&file, yml).map_err(|e| e.to_string())?;
    let services: Vec<String> = (0..count).map(|i| format!("bench_s{i}")).collect();
    let poll = Duration::from_millis((tasks as u64 / 20).clamp(250, 5000));
    let cpu0 = managers_cpu(&managers);
    let start = Instant::now();
    let out = managers[0].ctl(&[
        "stack",
        "deploy",
        "-c",
        &file.display().to_string(),
        "bench",
        "--detach",
    ]);
    let deploy_call = start.elapsed();
    let (mut placed_at, mut agents_at, mut running_at) = (None, None, None);
    let (mut last_placed, mut last_agents, mut last_running) = (0, 0, 0);
    let deadline = deadline_for(start);
    let mut polled: Option<Instant> = None;
    let mut peak_rss = 0.0f64;
    let (mut polls, mut unanswered) = (0usize, 0usize);
    let mut progress = Instant::now();
    let mut gave_up = String::new();
    while running_at.is_none() {
        if Instant::now() >= deadline {
            gave_up = format!("timeout {:?}", opts.timeout);
            break;
        }
        let rss_now = managers
            .iter()
            .filter_map(Manager::pid)
            .map(rss_mib)
            .fold(0.0, f64::max);
        peak_rss = peak_rss.max(rss_now);
        if rss_now > opts.max_rss_mib {
            gave_up = format!(
                "a manager's RSS reached {rss_now:.0} MiB (limit --max-rss-mib {:.0})",
                opts.max_rss_mib
            );
            break;
        }
        if progress.elapsed() >= Duration::from_secs(10) {
            progress = Instant::now();
            println!(
                "[{nodes}x{tasks}]   at {:.0} s: {last_placed} placed, {last_agents} on agents, {last_running} Running; \
                 largest manager RSS {rss_now:.0} MiB, this process {:.0} MiB",
                start.elapsed().as_secs_f64(),
                rss_mib(std::process::id())
            );
        }
        if agents_at.is_none() {
            last_agents = on_agents(&execs);
            if last_agents >= tasks {
                agents_at = Some(start.elapsed());
            }
        }
        if polled.is_none_or(|p| p.elapsed() >= poll) {
            polled = Some(Instant::now());
            let left = deadline.saturating_duration_since(Instant::now());
            let answer = rt.block_on(tokio::time::timeout(
                left.min(Duration::from_secs(30)),
                manager_counts(&mut c, &services),
            ));
            polls += 1;
            if answer.is_err() {
                unanswered += 1;
            }
            if let Ok(Some((p, r))) = answer {
                (last_placed, last_running) = (p, r);
                let now = start.elapsed();
                if placed_at.is_none() && p >= tasks {
                    placed_at = Some(now);
                }
                if r >= tasks {
                    running_at = Some(now);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let cpu_deploy = managers_cpu(&managers) - cpu0;
    let rss: Vec<String> = managers
        .iter()
        .filter_map(Manager::pid)
        .map(|p| format!("{:.0}", rss_mib(p)))
        .collect();
    println!(
        "[{nodes}x{tasks}] deploy call {:.2} s ({}); scheduled+committed {} ({last_placed}/{tasks}); on agents {} \
         ({last_agents}/{tasks}); Running {} ({last_running}/{tasks}){}; poll {poll:?} ({unanswered} of {polls} ListTasks polls unanswered in 30 s); managers' CPU during it \
         {:.1} s; managers' RSS {} MiB (peak of the largest {peak_rss:.0} MiB); this process {:.0} MiB",
        deploy_call.as_secs_f64(),
        out.trim().lines().last().unwrap_or(""),
        secs(placed_at),
        secs(agents_at),
        secs(running_at),
        if gave_up.is_empty() {
            String::new()
        } else {
            format!(" — gave up: {gave_up}")
        },
        cpu_deploy as f64 / 100.0,
        rss.join(" / "),
        rss_mib(std::process::id())
    );

    if running_at.is_none() {
        // how far it got, by task state, and the end of the first manager's log
        let mut states = std::collections::BTreeMap::<String, usize>::new();
        let listed = rt.block_on(tokio::time::timeout(Duration::from_secs(30), async {
            let mut all = Vec::new();
            for sv in &services {
                let r = c
                    .list_tasks(control::TaskFilter {
                        service: sv.clone(),
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| e.to_string())?;
                all.extend(r.into_inner().json);
            }
            Ok::<_, String>(all)
        }));
        match listed {
            Ok(Ok(all)) => {
                for j in all {
                    if let Ok(t) = serde_json::from_str::<Task>(&j) {
                        let key = format!(
                            "{:?}/{:?} {}",
                            t.desired_state, t.status.state, t.status.message
                        );
                        *states.entry(key).or_default() += 1;
                    }
                }
            }
            Ok(Err(e)) => println!("[{nodes}x{tasks}] ListTasks failed: {e}"),
            Err(_) => println!("[{nodes}x{tasks}] ListTasks did not answer within 30 s"),
        }
        println!("[{nodes}x{tasks}] tasks by desired/observed state: {states:?}");
        let log = managers[0].log();
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        for l in tail.into_iter().rev() {
            println!("[{nodes}x{tasks}]   m0: {l}");
        }
    }
    if running_at.is_some() {
        // one `service scale` at steady state: CPU over a window with it, minus an idle window
        let window = Duration::from_secs(4);
        std::thread::sleep(Duration::from_secs(2));
        let idle0 = managers_cpu(&managers);
        std::thread::sleep(window);
        let idle = managers_cpu(&managers) - idle0;
        let before = on_agents(&execs);
        let cpu0 = managers_cpu(&managers);
        let t = Instant::now();
        let scaled = rt.block_on(tokio::time::timeout(
            window,
            c.scale_service(control::ScaleRequest {
                service: services[0].clone(),
                replicas: per as u64 + 1,
            }),
        ));
        let mut on_agent = None;
        while t.elapsed() < window {
            if on_agent.is_none() && on_agents(&execs) > before {
                on_agent = Some(t.elapsed());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let busy = managers_cpu(&managers) - cpu0;
        println!(
            "[{nodes}x{tasks}] service scale +1: {}; new task on its agent after {}; managers' CPU over {window:?}: \
             {:.2} s with the scale, {:.2} s idle, difference {:.2} s",
            if matches!(scaled, Ok(Ok(_))) { "ok" } else { "FAILED" },
            on_agent.map_or("not within the window".into(), |d| format!("{:.0} ms", d.as_secs_f64() * 1000.0)),
            busy as f64 / 100.0,
            idle as f64 / 100.0,
            (busy as f64 - idle as f64) / 100.0
        );
    }
    let misses: usize = managers
        .iter()
        .map(|m| m.log().matches("missed its heartbeats").count())
        .sum();
    let leader_now = leader(&managers[0]);
    println!(
        "[{nodes}x{tasks}] heartbeat misses: {misses}; leader at the start {leader_start}, at the end {leader_now}{}",
        if leader_start == leader_now { "" } else { " (leadership changed)" }
    );
    drop(c);
    drop(guard);
    rt.shutdown_timeout(Duration::from_secs(5));
    drop(managers);
    Ok(())
}

fn main() {
    let mut rows = Vec::new();
    let mut opts = Opts {
        timeout: Duration::from_secs(300),
        max_rss_mib: 6144.0,
        managers: 3,
    };
    let mut big = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--big" => big = true,
            "--timeout" => {
                opts.timeout = Duration::from_secs(
                    args.next()
                        .and_then(|v| v.parse().ok())
                        .expect("--timeout SECS"),
                )
            }
            "--managers" => {
                opts.managers = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--managers N")
            }
            "--max-rss-mib" => {
                opts.max_rss_mib = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--max-rss-mib MIB")
            }
            "--bench" => {}
            r => {
                let (n, t) = r
                    .split_once('x')
                    .and_then(|(n, t)| Some((n.parse().ok()?, t.parse().ok()?)))
                    .unwrap_or_else(|| panic!("a row is NODESxTASKS, not {r:?}"));
                rows.push((n, t));
            }
        }
    }
    if rows.is_empty() {
        rows = vec![(100, 1000), (100, 10_000), (1000, 10_000)];
    }
    if big {
        rows.push((1000, 100_000));
    }
    swarm::pki::install_crypto_provider();
    let root = tempfile::tempdir().expect("tempdir");
    println!(
        "managers: {} (flags {:?}), timeout {:?} per wait",
        opts.managers,
        manager_args(),
        opts.timeout
    );
    for (i, (nodes, tasks)) in rows.into_iter().enumerate() {
        if let Err(e) = row(&root.path().join(format!("row{i}")), nodes, tasks, &opts) {
            println!("[{nodes}x{tasks}] gave up: {e}");
        }
    }
}
