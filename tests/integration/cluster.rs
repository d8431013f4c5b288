//! Real `swarmd` processes on loopback, driven with `swarmctl` as a user would: deploy, scale, a task killed,
//! the daemon killed with SIGKILL and restarted, the stack removed — and no task process left behind.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A `swarmd` on a free loopback port with its own state directory; killed (with every task it started) on drop.
pub(crate) struct Swarmd {
    pub dir: tempfile::TempDir,
    pub port: u16,
    /// Extra `swarmd` arguments, passed on every start.
    pub args: Vec<String>,
    /// The network namespace it runs in and its address there (loopback when `None`).
    pub netns: Option<(String, String)>,
    child: Option<Child>,
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

pub(crate) fn bin(name: &str) -> PathBuf {
    assert_cmd::cargo::cargo_bin(name)
}

impl Swarmd {
    pub fn start() -> Swarmd {
        Self::start_in(tempfile::tempdir().expect("tempdir"), &[])
    }

    /// Starts in `dir` with extra arguments `args`.
    pub fn start_in(dir: tempfile::TempDir, args: &[&str]) -> Swarmd {
        let mut d = Swarmd {
            dir,
            port: free_port(),
            args: args.iter().map(|a| a.to_string()).collect(),
            netns: None,
            child: None,
        };
        d.spawn();
        d
    }

    /// The address of its cluster port.
    pub fn addr(&self) -> String {
        let ip = self
            .netns
            .as_ref()
            .map(|(_, ip)| ip.as_str())
            .unwrap_or("127.0.0.1");
        format!("{ip}:{}", self.port)
    }

    fn command(&self) -> Command {
        let mut cmd = match &self.netns {
            Some((ns, _)) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(bin("swarmd"));
                c
            }
            None => Command::new(bin("swarmd")),
        };
        cmd.arg("--state-dir")
            .arg(self.state())
            .arg("--listen-addr")
            .arg(self.addr())
            .arg("--heartbeat-period")
            .arg("1s")
            .args(&self.args);
        // Outside a namespace of its own a root swarmd would make bridges and NAT rules in the machine's
        // namespace, and several swarmd there would prune each other's: task networking only in a test's own
        // namespace (service_net, netplane).
        if self.netns.is_none() && !self.args.iter().any(|a| a == "--no-task-networks") {
            cmd.arg("--no-task-networks");
        }
        cmd.env("SWARMD_LOG", "info,openraft=warn")
            .stdout(Stdio::null());
        cmd
    }

    /// Starts swarmd expecting it to refuse to run: waits (up to `secs`) for it to exit and returns its exit
    /// code and what it printed on stderr.
    pub fn run_to_exit(&self, secs: u64) -> (Option<i32>, String) {
        let mut child = self
            .command()
            .stderr(Stdio::piped())
            .spawn()
            .expect("start swarmd");
        let deadline = Instant::now() + Duration::from_secs(secs);
        let stderr = |child: &mut Child| {
            let mut err = String::new();
            use std::io::Read;
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            err
        };
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return (status.code(), stderr(&mut child));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "swarmd kept running over a state dir it should refuse: {}",
                    stderr(&mut child)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The running daemon's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the daemon started last is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Stops the daemon with SIGTERM, as a service manager would, and waits for it (tasks keep running).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(30);
            while matches!(c.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn state(&self) -> &Path {
        self.dir.path()
    }

    pub fn spawn(&mut self) {
        self.spawn_unchecked();
        self.wait_ready();
    }

    /// Starts the daemon without waiting for its control socket (a worker has none).
    pub fn spawn_unchecked(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.state().with_extension("log"))
            .expect("log file");
        let child = self.command().stderr(log).spawn().expect("start swarmd");
        self.child = Some(child);
    }

    /// A worker joined to `manager` with its worker token, reporting `hostname`; returns once the manager lists
    /// it Ready.
    pub fn start_worker(manager: &Swarmd, hostname: &str) -> Swarmd {
        let token = manager.ctl_ok(&["swarm", "join-token", "-q", "worker"]);
        let mut w = Swarmd::worker(manager, hostname, token.trim());
        w.spawn_unchecked();
        manager.wait_node_ready(hostname);
        w
    }

    /// [`Swarmd::start_worker`] in network namespace `netns` at `addr` (cluster port 4242 there).
    pub fn start_worker_in(
        manager: &Swarmd,
        hostname: &str,
        netns: String,
        addr: String,
    ) -> Swarmd {
        let token = manager.ctl_ok(&["swarm", "join-token", "-q", "worker"]);
        let mut w = Swarmd::worker(manager, hostname, token.trim());
        w.netns = Some((netns, addr));
        w.port = 4242;
        w.spawn_unchecked();
        manager.wait_node_ready(hostname);
        w
    }

    /// A worker of `manager` that joins with `token` when started, reporting `hostname` (not started).
    pub fn worker(manager: &Swarmd, hostname: &str, token: &str) -> Swarmd {
        Swarmd {
            dir: tempfile::tempdir().expect("tempdir"),
            port: free_port(),
            args: vec![
                "--hostname".into(),
                hostname.into(),
                "--join-addr".into(),
                manager.addr(),
                "--join-token".into(),
                token.into(),
            ],
            netns: None,
            child: None,
        }
    }

    /// Raft timing for the HA tests: a LAN's, so failovers take about a second.
    pub const FAST_RAFT: [&'static str; 4] = [
        "--raft-heartbeat",
        "100ms",
        "--raft-election-timeout",
        "500ms",
    ];

    /// A founding manager with [`Swarmd::FAST_RAFT`] timing in network namespace `netns` at `addr:port`.
    pub fn start_founder_in(netns: String, addr: String, port: u16) -> Swarmd {
        Self::start_founder_in_with(netns, addr, port, &[])
    }

    /// [`Swarmd::start_founder_in`] with extra arguments `args`.
    pub fn start_founder_in_with(netns: String, addr: String, port: u16, args: &[&str]) -> Swarmd {
        let mut d = Swarmd {
            dir: tempfile::tempdir().expect("tempdir"),
            port,
            args: Self::FAST_RAFT
                .iter()
                .chain(args)
                .map(|a| a.to_string())
                .collect(),
            netns: Some((netns, addr)),
            child: None,
        };
        d.spawn();
        d
    }

    /// A founding manager with [`Swarmd::FAST_RAFT`] timing.
    pub fn start_founder() -> Swarmd {
        Self::start_in(tempfile::tempdir().expect("tempdir"), &Self::FAST_RAFT)
    }

    /// A manager joined through `via` (any manager) with the manager token, reporting `hostname`; returns once
    /// it answers on its own socket.
    pub fn start_manager(via: &Swarmd, hostname: &str) -> Swarmd {
        Self::start_manager_in(via, hostname, None)
    }

    /// [`Swarmd::start_manager`] in a network namespace `(name, address)`.
    pub fn start_manager_in(
        via: &Swarmd,
        hostname: &str,
        netns: Option<(String, String)>,
    ) -> Swarmd {
        let token = via.ctl_ok(&["swarm", "join-token", "-q", "manager"]);
        let mut args: Vec<String> = Self::FAST_RAFT.iter().map(|a| a.to_string()).collect();
        args.extend([
            "--hostname".into(),
            hostname.into(),
            "--join-addr".into(),
            via.addr(),
            "--join-token".into(),
            token.trim().into(),
        ]);
        let mut m = Swarmd {
            dir: tempfile::tempdir().expect("tempdir"),
            port: free_port(),
            args,
            netns,
            child: None,
        };
        m.spawn();
        via.wait_node_ready(hostname);
        m
    }

    /// This node's id (`swarm info`, answered locally).
    pub fn node_id(&self) -> String {
        let info = self.ctl_ok(&["swarm", "info"]);
        info.lines()
            .find_map(|l| l.trim().strip_prefix("NodeID: "))
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    /// Waits until the node reporting `hostname` is Ready in this manager's `node ls`.
    pub fn wait_node_ready(&self, hostname: &str) {
        wait_for(60, &format!("node {hostname} Ready"), || {
            let ls = self.ctl_ok(&["node", "ls"]);
            ls.lines()
                .any(|l| {
                    let cols: Vec<&str> = l.split_whitespace().collect();
                    cols.contains(&hostname) && cols.contains(&"Ready")
                })
                .then_some(())
        });
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = self.ctl(&["node", "ls"]);
            if out.status.success() && String::from_utf8_lossy(&out.stdout).contains("Ready") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "swarmd did not become ready: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.state().with_extension("log")).unwrap_or_default()
    }

    /// SIGKILL the daemon (tasks keep running).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn host(&self) -> String {
        format!("unix://{}/swarmd.sock", self.state().display())
    }

    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(bin("swarmctl"))
            .env("SWARM_HOST", self.host())
            .args(args)
            .output()
            .expect("run swarmctl")
    }

    pub fn ctl_ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "swarmctl {args:?} failed: {}\n{}\n--- swarmd log ---\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Ids of this daemon's task processes: processes whose session leader is one of its shims (the shim's
    /// command line names the task directory under the state dir), or whose environment points there; not
    /// a task's init (a fork of its shim, with the shim's command line).
    pub fn task_pids(&self) -> Vec<u32> {
        let marker = self.state().to_string_lossy().into_owned();
        let mut out: Vec<u32> = processes()
            .into_iter()
            .filter(|p| {
                !p.zombie && p.pid != p.sid && p.is_ours(&marker) && !p.cmdline.contains(&marker)
            })
            .map(|p| p.pid)
            .collect();
        out.sort();
        out
    }
}

struct Proc {
    pid: u32,
    sid: u32,
    zombie: bool,
    cmdline: String,
    environ: String,
    leader_cmdline: String,
}

impl Proc {
    fn is_ours(&self, marker: &str) -> bool {
        self.leader_cmdline.contains(marker) || self.environ.contains(marker)
    }
}

fn processes() -> Vec<Proc> {
    let read = |pid: u32, what: &str| {
        let bytes = std::fs::read(format!("/proc/{pid}/{what}")).unwrap_or_default();
        String::from_utf8_lossy(&bytes).replace('\0', " ")
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = read(pid, "stat");
        // fields after the command name (which is in parentheses and may contain spaces)
        let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r.to_string()) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let zombie = fields.first() == Some(&"Z");
        let sid = fields.get(3).and_then(|s| s.parse().ok()).unwrap_or(0);
        out.push(Proc {
            pid,
            sid,
            zombie,
            cmdline: read(pid, "cmdline"),
            environ: read(pid, "environ"),
            leader_cmdline: if sid > 0 {
                read(sid, "cmdline")
            } else {
                String::new()
            },
        });
    }
    out
}

/// The `swarm` directories (parents of the tasks' cgroups) under `dir`, at most `depth` levels down.
fn swarm_cgroups(dir: &Path, depth: usize) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if depth == 0 {
        return out;
    }
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        if e.file_name() == "swarm" {
            out.push(e.path());
        } else {
            out.extend(swarm_cgroups(&e.path(), depth - 1));
        }
    }
    out
}

impl Drop for Swarmd {
    fn drop(&mut self) {
        self.kill9();
        // kill whatever the daemon left running: shims (their command line names the state dir) and tasks
        let marker = self.state().to_string_lossy().into_owned();
        for p in processes() {
            if p.cmdline.contains(&marker) || p.is_ours(&marker) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p.pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        // remove the cgroups of tasks whose shim was killed with the daemon above
        let tasks: Vec<String> = std::fs::read_dir(self.state().join("tasks"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        if !tasks.is_empty() {
            for parent in swarm_cgroups(Path::new("/sys/fs/cgroup"), 6) {
                for t in &tasks {
                    let dir = parent.join(t);
                    let deadline = Instant::now() + Duration::from_secs(2);
                    while dir.exists()
                        && std::fs::remove_dir(&dir).is_err()
                        && Instant::now() < deadline
                    {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            }
        }
        // unmount the secrets tmpfs of tasks that never got removed
        if let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") {
            for line in mounts.lines() {
                if let Some(mp) = line.split_whitespace().nth(1) {
                    if mp.starts_with(&marker) {
                        let _ = nix::mount::umount2(mp, nix::mount::MntFlags::MNT_DETACH);
                    }
                }
            }
        }
    }
}

/// Polls `f` until it returns Some, or panics with `what` after `secs`.
pub(crate) fn wait_for<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub(crate) fn running(d: &Swarmd, service: &str) -> usize {
    let out = d.ctl(&["service", "ps", service, "--format", "json"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| {
            v["DesiredState"] == "Running"
                && v["CurrentState"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("Running"))
        })
        .count()
}

const STACK: &str = r#"
services:
  app:
    image: debian:bookworm-slim
    command: ["sh", "-c", "echo started $$SLOT; cat $$SWARM_SECRETS_DIR/token; exec sleep 300"]
    environment:
      SLOT: "{{.Task.Slot}}"
    secrets: [token]
    stop_grace_period: 1s
    deploy:
      replicas: 2
      restart_policy:
        condition: any
        delay: 500ms
  broken:
    image: debian:bookworm-slim
    command: ["/definitely/not/a/command"]
    deploy:
      replicas: 1
      restart_policy:
        condition: on-failure
        delay: 1s
        max_attempts: 2
secrets:
  token:
    file: ./token.txt
"#;

#[test]
fn deploy_scale_heal_survive_kill9_and_remove() {
    let mut d = Swarmd::start();
    let files = tempfile::tempdir().unwrap();
    std::fs::write(files.path().join("stack.yml"), STACK).unwrap();
    std::fs::write(files.path().join("token.txt"), "s3cr3t-value").unwrap();
    let stack = files.path().join("stack.yml");
    let stack = stack.to_str().unwrap();

    // a detached deploy returns at once; the service converges on its own
    d.ctl_ok(&["stack", "deploy", "-c", stack, "--detach", "demo"]);
    wait_for(60, "2 app tasks running", || {
        (running(&d, "demo_app") == 2).then_some(())
    });
    assert_eq!(d.task_pids().len(), 2, "one process per running task");

    // the broken service fails with docker's message, retried per restart policy (not in a hot loop)
    let ps = wait_for(60, "broken task failed twice", || {
        let ps = d.ctl_ok(&["service", "ps", "demo_broken"]);
        (ps.matches("Failed").count() >= 2).then_some(ps)
    });
    assert!(ps.contains("exec: \"/definitely/not/a/command\""), "{ps}");
    // max_attempts 2: the first task and two restarts, all failed, then nothing more. Record that history
    // once it is complete; the end of the test (many seconds and manager rounds later, across a daemon
    // restart) checks that it did not change.
    let broken_history = wait_for(60, "broken: 3 tasks, all failed", || {
        let ps = d.ctl_ok(&["service", "ps", "demo_broken"]);
        let ids = d.ctl_ok(&["service", "ps", "demo_broken", "-q"]);
        assert!(
            ids.lines().count() <= 3,
            "max_attempts bounds the retries: {ps}"
        );
        (ids.lines().count() == 3 && ps.matches("Failed").count() >= 3).then_some(ids)
    });

    // logs show the secret was readable and the slot template expanded
    let logs = d.ctl_ok(&["service", "logs", "demo_app"]);
    assert!(
        logs.contains("started 1") && logs.contains("started 2"),
        "{logs}"
    );
    assert!(logs.contains("s3cr3t-value"), "{logs}");

    // scale
    let out = d.ctl_ok(&["service", "scale", "demo_app=4"]);
    assert!(out.contains("demo_app scaled to 4"));
    wait_for(60, "4 app tasks running", || {
        (running(&d, "demo_app") == 4).then_some(())
    });

    // a task process killed by hand is replaced
    let victim = d.task_pids()[0];
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(victim as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    wait_for(60, "a failed task and 4 running again", || {
        let ps = d.ctl_ok(&["service", "ps", "demo_app"]);
        (ps.contains("Failed") && running(&d, "demo_app") == 4).then_some(())
    });
    assert!(!d.task_pids().contains(&victim));

    // kill -9 the daemon: tasks keep running; after a restart they are re-adopted, not restarted
    let before = d.task_pids();
    let ids_before = d.ctl_ok(&["service", "ps", "demo_app", "-q"]);
    d.kill9();
    let out = d.ctl(&["service", "ls"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot reach swarmd at {}", d.host()))
            && err.contains("connection refused"),
        "{err}"
    );
    assert_eq!(d.task_pids(), before, "tasks outlive the daemon");
    d.spawn();
    wait_for(60, "4 app tasks running after restart", || {
        (running(&d, "demo_app") == 4).then_some(())
    });
    assert_eq!(d.task_pids(), before, "re-adopted, not restarted");
    assert_eq!(d.ctl_ok(&["service", "ps", "demo_app", "-q"]), ids_before);

    // unknown objects
    let out = d.ctl(&["service", "inspect", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such service: nope"));
    let out = d.ctl(&["secret", "rm", "demo_token"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("in use by the following service: demo_app")
    );

    // the broken service's history is as it was: no restart beyond max_attempts, however long we waited
    assert_eq!(
        d.ctl_ok(&["service", "ps", "demo_broken", "-q"]),
        broken_history,
        "max_attempts bounds the retries"
    );

    // remove the stack: every task process goes away and nothing is left on disk
    d.ctl_ok(&["stack", "rm", "demo"]);
    wait_for(60, "no task process left", || {
        d.task_pids().is_empty().then_some(())
    });
    wait_for(30, "task directories removed", || {
        let left = std::fs::read_dir(d.state().join("tasks"))
            .map(|r| r.count())
            .unwrap_or(0);
        (left == 0).then_some(())
    });
    assert!(d.ctl_ok(&["service", "ls", "-q"]).trim().is_empty());
}

#[test]
fn invalid_stack_changes_nothing_and_blocking_deploy_reports_convergence() {
    let d = Swarmd::start();
    let files = tempfile::tempdir().unwrap();
    let bad = files.path().join("bad.yml");
    std::fs::write(
        &bad,
        "services:\n  a:\n    image: x\n    command: [sleep, '60']\n    deploy: {replicas: lots}\n",
    )
    .unwrap();
    let out = d.ctl(&["stack", "deploy", "-c", bad.to_str().unwrap(), "s"]);
    assert_eq!(out.status.code(), Some(2), "invalid input");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.yml:5:24: services.a.deploy.replicas: expected an integer, got \"lots\""),
        "{err}"
    );
    assert!(
        d.ctl_ok(&["stack", "ls", "-q"]).trim().is_empty(),
        "nothing was created"
    );

    let good = files.path().join("good.yml");
    std::fs::write(
        &good,
        "services:\n  a:\n    image: x\n    command: [sleep, '60']\n    stop_grace_period: 1s\n    deploy: {replicas: 2}\n",
    )
    .unwrap();
    let out = d.ctl_ok(&["stack", "deploy", "-c", good.to_str().unwrap(), "s"]);
    assert!(out.contains("Creating service s_a"), "{out}");
    assert!(out.contains("converged"), "{out}");
    // the same files again: nothing to change
    let out = d.ctl_ok(&["stack", "deploy", "-c", good.to_str().unwrap(), "s"]);
    assert!(out.contains("up to date"), "{out}");
    let ls = d.ctl_ok(&["service", "ls", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(ls.lines().next().unwrap()).unwrap();
    assert_eq!(v["Replicas"], "2/2");
    assert_eq!(v["Name"], "s_a");
    d.ctl_ok(&["stack", "rm", "s"]);
    wait_for(60, "no task process left", || {
        d.task_pids().is_empty().then_some(())
    });
}

/// Started with the common soft limit of 256 open files under a higher hard limit, swarmd raises its soft limit
/// to the hard one, so a connection burst cannot starve it.
#[test]
fn swarmd_raises_its_open_files_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    use std::os::unix::process::CommandExt;
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    if hard <= 256 {
        eprintln!("hard open-files limit {hard}: nothing to raise, skipping");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new(bin("swarmd"));
    cmd.arg("--state-dir")
        .arg(dir.path())
        .arg("--listen-addr")
        .arg(format!("127.0.0.1:{}", free_port()))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            setrlimit(Resource::RLIMIT_NOFILE, 256, hard).map_err(std::io::Error::from)
        });
    }
    let mut child = cmd.spawn().expect("start swarmd");
    let limits = format!("/proc/{}/limits", child.id());
    let deadline = Instant::now() + Duration::from_secs(30);
    let soft = loop {
        let soft = std::fs::read_to_string(&limits).ok().and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3).map(str::to_string))
        });
        if soft.as_deref() == Some(hard.to_string().as_str()) || Instant::now() > deadline {
            break soft;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        soft,
        Some(hard.to_string()),
        "swarmd's soft open-files limit"
    );
}
