//! One manager and two workers as separate `swarmd` processes on loopback: workers join with the token,
//! tasks spread over all three nodes, constraints and spread preferences place them, a secret goes only to the
//! node whose task uses it, a worker killed with SIGKILL is marked Down and its tasks run elsewhere, and when
//! it comes back its stale tasks are shut down, never duplicated.

use std::collections::BTreeMap;

use super::cluster::{wait_for, Swarmd};

const STACK: &str = r#"
services:
  web:
    image: web
    command: ["sh", "-c", "echo hello from web; exec sleep 300"]
    stop_grace_period: 1s
    deploy:
      replicas: 6
  agent:
    image: agent
    command: [sleep, "300"]
    stop_grace_period: 1s
    deploy:
      replicas: 2
      placement:
        constraints: [node.role == worker]
        preferences:
          - spread: node.labels.zone
  vault:
    image: vault
    command: ["sh", "-c", "f=/run/secrets/pw; test -r $$f || f=$$SWARM_SECRETS_DIR/pw; test $$(wc -c < $$f) -eq 20 && echo secret-ok; exec sleep 300"]
    stop_grace_period: 1s
    secrets: [pw]
    deploy:
      placement:
        constraints: [node.hostname == w1]
secrets:
  pw:
    file: ./pw.txt
"#;

/// Running tasks of `service` per node hostname.
pub(crate) fn placement(m: &Swarmd, service: &str) -> BTreeMap<String, usize> {
    let out = m.ctl_ok(&["service", "ps", service, "--format", "json"]);
    let mut by_node = BTreeMap::new();
    for v in out
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
    {
        let running = v["DesiredState"] == "Running"
            && v["CurrentState"]
                .as_str()
                .is_some_and(|s| s.starts_with("Running"));
        if running {
            *by_node
                .entry(v["Node"].as_str().unwrap_or_default().to_string())
                .or_default() += 1;
        }
    }
    by_node
}

/// Deploys `yaml` as stack `s` on `m`, waiting for it to converge.
fn deploy(m: &Swarmd, yaml: &str) {
    let files = tempfile::tempdir().unwrap();
    let stack = files.path().join("stack.yml");
    std::fs::write(&stack, yaml).unwrap();
    m.ctl_ok(&["stack", "deploy", "-c", stack.to_str().unwrap(), "s"]);
}

fn total(p: &BTreeMap<String, usize>) -> usize {
    p.values().sum()
}

/// The first file under `dir` in which `needle` occurs.
fn found_under(dir: &std::path::Path, needle: &[u8]) -> Option<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .find_map(|e| {
            let p = e.path();
            if p.is_dir() {
                found_under(&p, needle)
            } else {
                std::fs::read(&p)
                    .ok()
                    .filter(|b| b.windows(needle.len()).any(|w| w == needle))
                    .map(|_| p)
            }
        })
}

#[test]
fn a_manager_and_two_workers_place_heal_and_never_duplicate() {
    let m = Swarmd::start_in(tempfile::tempdir().unwrap(), &["--hostname", "m"]);
    let w1 = Swarmd::start_worker(&m, "w1");
    let mut w2 = Swarmd::start_worker(&m, "w2");
    let ls = m.ctl_ok(&["node", "ls"]);
    assert_eq!(
        ls.lines().filter(|l| l.contains("Ready")).count(),
        3,
        "{ls}"
    );
    m.ctl_ok(&["node", "update", "--label-add", "zone=a", "w1"]);
    m.ctl_ok(&["node", "update", "--label-add", "zone=b", "w2"]);

    let files = tempfile::tempdir().unwrap();
    std::fs::write(files.path().join("pw.txt"), "s3cret-plaintext-7f2").unwrap();
    let stack = files.path().join("stack.yml");
    std::fs::write(&stack, STACK).unwrap();
    let out = m.ctl_ok(&["stack", "deploy", "-c", stack.to_str().unwrap(), "s"]);
    assert!(out.contains("converged"), "{out}");

    let web = placement(&m, "s_web");
    assert_eq!(
        web,
        BTreeMap::from([("m".into(), 2), ("w1".into(), 2), ("w2".into(), 2)]),
        "web spreads over the three nodes"
    );
    let agent = placement(&m, "s_agent");
    assert_eq!(
        agent,
        BTreeMap::from([("w1".into(), 1), ("w2".into(), 1)]),
        "agent only on workers, one per zone"
    );
    assert_eq!(placement(&m, "s_vault"), BTreeMap::from([("w1".into(), 1)]));
    let ps = m.ctl_ok(&["node", "ps", "w1"]);
    assert_eq!(
        ps.lines()
            .filter(|l| l.contains(" w1 ") && l.contains("Running"))
            .count(),
        4,
        "node ps w1: 2 web, 1 agent, 1 vault\n{ps}"
    );
    assert!(
        !m.ctl_ok(&["node", "ps"]).contains(" w1 "),
        "node ps: this node's tasks only"
    );

    // service logs gathers the lines of the tasks on every node
    wait_for(30, "a log line from each of the 6 web tasks", || {
        let logs = m.ctl_ok(&["service", "logs", "s_web"]);
        let names: std::collections::BTreeSet<&str> = logs
            .lines()
            .filter(|l| l.ends_with("| hello from web"))
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        (names.len() == 6).then_some(())
    });

    // the secret reached the task on w1, and its plaintext is nowhere on the other nodes
    wait_for(30, "the vault task read its secret", || {
        found_under(w1.state(), b"secret-ok")
    });
    for (name, node) in [("m", &m), ("w2", &w2)] {
        let found = found_under(node.state(), b"s3cret-plaintext-7f2");
        assert!(
            found.is_none(),
            "the secret's plaintext is on {name}: {found:?}"
        );
    }
    assert!(!w2.log().contains("s3cret"), "w2's log");

    // a worker dies: Down within its heartbeat budget, its tasks run elsewhere
    w2.kill9();
    wait_for(60, "w2 marked Down", || {
        let ls = m.ctl_ok(&["node", "ls"]);
        ls.lines()
            .any(|l| l.contains("w2") && l.contains("Down"))
            .then_some(())
    });
    wait_for(60, "w2's tasks replaced", || {
        let web = placement(&m, "s_web");
        let agent = placement(&m, "s_agent");
        (total(&web) == 6 && !web.contains_key("w2") && agent.get("w1") == Some(&2)).then_some(())
    });
    // an unreachable node: a warning for its tasks, the others' lines still come, no failure
    let out = m.ctl(&["service", "logs", "s_web"]);
    assert_eq!(out.status.code(), Some(0));
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        stderr.contains("warning:") && stderr.contains("is not connected"),
        "{stderr}"
    );
    assert!(
        stdout
            .lines()
            .filter(|l| l.ends_with("| hello from web"))
            .count()
            >= 4,
        "{stdout}"
    );

    // it comes back: its stale tasks are shut down, never duplicated
    let stale = w2.task_pids();
    assert!(!stale.is_empty(), "w2's tasks outlived its daemon");
    w2.spawn_unchecked();
    m.wait_node_ready("w2");
    wait_for(60, "w2's stale tasks stopped", || {
        w2.task_pids().is_empty().then_some(())
    });
    let web = placement(&m, "s_web");
    assert_eq!(total(&web), 6, "{web:?}");
    assert_eq!(total(&placement(&m, "s_agent")), 2);
    let processes = m.task_pids().len() + w1.task_pids().len() + w2.task_pids().len();
    assert_eq!(
        processes,
        6 + 2 + 1,
        "one process per task across the nodes"
    );

    m.ctl_ok(&["stack", "rm", "s"]);
    wait_for(60, "every task gone on every node", || {
        (m.task_pids().is_empty() && w1.task_pids().is_empty() && w2.task_pids().is_empty())
            .then_some(())
    });
}

/// `node rm`: refused for a live node without `--force`; with it, the node is gone from `node ls`, its
/// certificate is refused from then on, it stops its tasks, and its work runs on the remaining nodes.
#[test]
fn a_removed_worker_is_refused_and_its_work_moves() {
    let m = Swarmd::start_in(tempfile::tempdir().unwrap(), &["--hostname", "m"]);
    let w1 = Swarmd::start_worker(&m, "w1");
    deploy(&m, "services:\n  web:\n    image: web\n    command: [sleep, '300']\n    stop_grace_period: 1s\n    deploy: {replicas: 2}\n");
    assert_eq!(
        placement(&m, "s_web"),
        BTreeMap::from([("m".into(), 1), ("w1".into(), 1)])
    );

    let out = m.ctl(&["node", "rm", "w1"]);
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not down and can't be removed"), "{err}");
    let out = m.ctl(&["node", "rm", "--force", "m"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is a manager") && err.contains("only voting manager"),
        "{err}"
    );

    m.ctl_ok(&["node", "rm", "--force", "w1"]);
    wait_for(
        60,
        "the removed worker refused and its task stopped",
        || {
            (w1.log().contains("was removed from the cluster") && w1.task_pids().is_empty())
                .then_some(())
        },
    );
    wait_for(60, "both replicas on the manager", || {
        (placement(&m, "s_web") == BTreeMap::from([("m".into(), 2)])).then_some(())
    });
    let ls = m.ctl_ok(&["node", "ls"]);
    assert!(
        !ls.contains("w1"),
        "a removed node is not listed again: {ls}"
    );
    let out = m.ctl(&["node", "demote", "m"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is the last manager"), "{err}");
    m.ctl_ok(&["stack", "rm", "s"]);
}

/// Draining a worker moves its tasks start-first: the running count never drops below the desired count.
#[test]
fn draining_a_worker_never_drops_below_the_desired_count() {
    let m = Swarmd::start_in(tempfile::tempdir().unwrap(), &["--hostname", "m"]);
    let _w1 = Swarmd::start_worker(&m, "w1");
    deploy(&m, "services:\n  web:\n    image: web\n    command: [sleep, '300']\n    stop_grace_period: 1s\n    deploy:\n      replicas: 4\n      update_config: {parallelism: 1}\n");
    assert_eq!(
        placement(&m, "s_web"),
        BTreeMap::from([("m".into(), 2), ("w1".into(), 2)])
    );
    m.ctl_ok(&["node", "update", "--availability", "drain", "w1"]);
    let mut lowest = usize::MAX;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let p = placement(&m, "s_web");
        lowest = lowest.min(total(&p));
        if p == BTreeMap::from([("m".into(), 4)]) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "drain did not finish: {p:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        lowest >= 4,
        "running tasks dropped to {lowest} during the drain"
    );
    m.ctl_ok(&["stack", "rm", "s"]);
}

/// With a certificate lifetime of a few seconds a worker renews several times while it runs (the pair on disk
/// replaced, new connections using the new one), keeps working, and resumes after a restart with the renewed
/// certificate.
#[test]
fn short_lived_certificates_renew_while_the_worker_keeps_working() {
    let m = Swarmd::start_in(tempfile::tempdir().unwrap(), &["--hostname", "m"]);
    m.ctl_ok(&["swarm", "update", "--cert-expiry", "6s"]);
    assert!(m.ctl_ok(&["swarm", "info"]).contains("Expiry Duration: 6s"));
    let mut w1 = Swarmd::start_worker(&m, "w1");
    let crt = w1.state().join("certs/node.crt");
    let mut seen = std::collections::BTreeSet::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        if let Ok(pem) = std::fs::read_to_string(&crt) {
            seen.insert(pem);
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(
        seen.len() >= 3,
        "only {} certificates in 20 s: {}",
        seen.len(),
        w1.log()
    );
    assert!(
        w1.log().contains("renewed this node's certificate"),
        "{}",
        w1.log()
    );
    // the pair on disk matches (the node restarts with it), and the worker still takes work
    w1.kill9();
    w1.spawn_unchecked();
    m.wait_node_ready("w1");
    deploy(&m, "services:\n  web:\n    image: web\n    command: [sleep, '300']\n    stop_grace_period: 1s\n    deploy:\n      replicas: 2\n      placement: {constraints: [node.role == worker]}\n");
    assert_eq!(placement(&m, "s_web"), BTreeMap::from([("w1".into(), 2)]));
    m.ctl_ok(&["stack", "rm", "s"]);
}

/// A worker that was down past its certificate's life does not get stuck: without a token it refuses to start
/// and says how to rejoin; with one it rejoins.
#[test]
fn a_worker_offline_past_its_certificate_rejoins_with_a_token() {
    let m = Swarmd::start_in(tempfile::tempdir().unwrap(), &["--hostname", "m"]);
    m.ctl_ok(&["swarm", "update", "--cert-expiry", "3s"]);
    let mut w1 = Swarmd::start_worker(&m, "w1");
    w1.stop();
    std::thread::sleep(std::time::Duration::from_secs(4));
    let join_args = w1.args.clone();
    w1.args.retain(|a| a == "--hostname" || a == "w1");
    let (code, stderr) = w1.run_to_exit(30);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("certificate expired") && stderr.contains("--join-token"),
        "{stderr}"
    );
    w1.args = join_args;
    w1.spawn_unchecked();
    m.wait_node_ready("w1");
    assert!(
        w1.log().contains("rejoining with the token"),
        "{}",
        w1.log()
    );
}

/// `swarm leave` on a worker's own socket stops its tasks, forgets its identity and stops swarmd; other commands
/// on that socket say it is a worker; on a manager, leave is refused.
#[test]
fn a_worker_leaves_the_swarm() {
    let m = Swarmd::start_in(tempfile::tempdir().unwrap(), &["--hostname", "m"]);
    let mut w1 = Swarmd::start_worker(&m, "w1");
    deploy(&m, "services:\n  web:\n    image: web\n    command: [sleep, '300']\n    stop_grace_period: 1s\n    deploy:\n      replicas: 1\n      placement: {constraints: [node.role == worker]}\n");
    assert_eq!(w1.task_pids().len(), 1);
    let on_worker = w1.ctl(&["service", "ls"]);
    assert!(
        String::from_utf8_lossy(&on_worker.stderr).contains("this node is a worker"),
        "{}",
        String::from_utf8_lossy(&on_worker.stderr)
    );
    let refused = m.ctl(&["swarm", "leave"]);
    assert!(String::from_utf8_lossy(&refused.stderr)
        .contains("this node is a manager: demote it first"));

    let out = w1.ctl_ok(&["swarm", "leave"]);
    assert!(out.contains("Node left the swarm."), "{out}");
    assert!(w1.task_pids().is_empty(), "its tasks stopped");
    wait_for(30, "the worker's swarmd exits", || {
        (!w1.is_running()).then_some(())
    });
    assert!(!w1.state().join("worker.json").exists());
    assert!(!w1.state().join("certs/node.key").exists());
    wait_for(60, "the manager sees it Down", || {
        let ls = m.ctl_ok(&["node", "ls"]);
        ls.lines()
            .any(|l| l.contains("w1") && l.contains("Down"))
            .then_some(())
    });
    m.ctl_ok(&["node", "rm", "w1"]);
    m.ctl_ok(&["stack", "rm", "s"]);
}

/// `service logs -f` follows the tasks of every node: new lines from the worker's task keep arriving.
#[test]
fn following_logs_streams_new_lines_from_every_node() {
    use std::io::BufRead;
    let m = Swarmd::start_in(tempfile::tempdir().unwrap(), &["--hostname", "m"]);
    let _w1 = Swarmd::start_worker(&m, "w1");
    deploy(&m, "services:\n  tick:\n    image: tick\n    command: [sh, -c, 'i=0; while true; do i=$$((i+1)); echo tick $$i; sleep 0.3; done']\n    stop_grace_period: 1s\n    deploy: {replicas: 2}\n");
    assert_eq!(
        placement(&m, "s_tick"),
        BTreeMap::from([("m".into(), 1), ("w1".into(), 1)])
    );
    let mut child = std::process::Command::new(super::cluster::bin("swarmctl"))
        .env("SWARM_HOST", m.host())
        .args(["service", "logs", "-f", "--tail", "1", "s_tick"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    // per task: how many lines arrived; following means each keeps growing well past the tail of 1
    let mut per_task: BTreeMap<String, usize> = BTreeMap::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(std::time::Duration::from_millis(200)) {
            if let Some(task) = line.split_whitespace().next() {
                *per_task.entry(task.to_string()).or_default() += 1;
            }
        }
        if per_task.len() == 2 && per_task.values().all(|n| *n >= 5) {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(per_task.len(), 2, "lines from both tasks: {per_task:?}");
    assert!(per_task.values().all(|n| *n >= 5), "followed: {per_task:?}");
    m.ctl_ok(&["stack", "rm", "s"]);
}
