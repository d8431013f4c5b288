//! Highly available managers, as separate `swarmd` processes on loopback: three managers and a worker; the
//! leader killed with SIGKILL again and again (each time restarted), during a stack deploy and during a
//! rolling update. The cluster stays writable through any manager's socket, commits nothing twice and loses
//! nothing, and the worker's tasks keep running throughout.

use std::time::{Duration, Instant};

use super::cluster::{wait_for, Swarmd};

/// Three managers (m1 founds, m2 and m3 join) and a worker.
fn cluster() -> (Vec<Swarmd>, Swarmd) {
    let m1 = Swarmd::start_founder();
    let m2 = Swarmd::start_manager(&m1, "m2");
    let m3 = Swarmd::start_manager(&m2, "m3");
    let w = Swarmd::start_worker(&m1, "w1");
    let managers = vec![m1, m2, m3];
    wait_for(60, "three managers, one leader", || {
        let ls = managers[2].ctl_ok(&["node", "ls"]);
        let leaders = ls.matches("Leader").count();
        let reachable = ls.matches("Reachable").count();
        (leaders == 1 && reachable == 2).then_some(())
    });
    (managers, w)
}

/// The index in `managers` of the one that leads now, as the running ones agree.
fn leader(managers: &mut [Swarmd]) -> usize {
    let ids: Vec<Option<String>> = managers
        .iter_mut()
        .map(|m| m.is_running().then(|| m.node_id()))
        .collect();
    wait_for(30, "a leader", || {
        let asker = managers.iter().position(|m| m.pid().is_some())?;
        let ls = String::from_utf8_lossy(&managers[asker].ctl(&["node", "ls"]).stdout).into_owned();
        let line = ls.lines().find(|l| l.contains("Leader"))?;
        let id = line.split_whitespace().next()?.to_string();
        ids.iter().position(|i| i.as_deref() == Some(id.as_str()))
    })
}

/// The `node ls` row of the node with `hostname` (matched as a column, not a substring of an id).
fn row<'a>(ls: &'a str, hostname: &str) -> Option<&'a str> {
    ls.lines()
        .find(|l| l.split_whitespace().any(|c| c == hostname))
}

fn deploy(m: &Swarmd, name: &str, yaml: &str) -> std::process::Output {
    let files = tempfile::tempdir().unwrap();
    let stack = files.path().join("stack.yml");
    std::fs::write(&stack, yaml).unwrap();
    m.ctl(&["stack", "deploy", "-c", stack.to_str().unwrap(), name])
}

/// A stack whose tasks run on the worker only (so a manager's death never moves them).
const ON_WORKER: &str = r#"
services:
  app:
    image: app
    command: [sleep, "600"]
    stop_grace_period: 1s
    deploy:
      replicas: 2
      placement:
        constraints: [node.role == worker]
"#;

/// Deploys [`ON_WORKER`] as stack `s` through `m`; returns the worker's task pids once both tasks run.
fn deploy_on_worker(m: &Swarmd, w: &Swarmd) -> Vec<u32> {
    let out = deploy(m, "s", ON_WORKER);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for(60, "2 tasks on the worker", || {
        (w.task_pids().len() == 2).then_some(())
    });
    w.task_pids()
}

/// Retries `args` through `m` until it succeeds (a write right after a failover); returns how long it took.
fn write_until_ok(m: &Swarmd, args: &[&str], secs: u64) -> Duration {
    let start = Instant::now();
    loop {
        let out = m.ctl(args);
        if out.status.success() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "swarmctl {args:?} kept failing: {}\n--- log ---\n{}",
            String::from_utf8_lossy(&out.stderr),
            m.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_leader_killed_five_times_in_a_row_leaves_a_writable_cluster_with_one_history() {
    let (mut managers, w) = cluster();
    let pids = deploy_on_worker(&managers[1], &w);
    let files = tempfile::tempdir().unwrap();
    for round in 0..5 {
        let l = leader(&mut managers);
        managers[l].kill9();
        // a write through a surviving manager's socket goes to the new leader
        let via = &managers[(l + 1) % 3];
        let data = files.path().join(format!("s{round}"));
        std::fs::write(&data, format!("secret {round}")).unwrap();
        let name = format!("round{round}");
        write_until_ok(
            via,
            &["secret", "create", &name, data.to_str().unwrap()],
            30,
        );
        managers[l].spawn();
    }
    // every write is there once, on every manager's view; the worker's tasks never restarted
    // (a manager restarted last may answer from its own store, marked stale, until it knows the leader: wait
    // for every write, but a write seen twice fails at once)
    for m in &managers {
        wait_for(30, "every write on this manager's view", || {
            let ls = m.ctl_ok(&["secret", "ls"]);
            let counts: Vec<usize> = (0..5)
                .map(|round| ls.matches(&format!("round{round} ")).count())
                .collect();
            assert!(
                counts.iter().all(|&c| c <= 1),
                "a write applied twice: {ls}"
            );
            counts.iter().all(|&c| c == 1).then_some(())
        });
    }
    assert_eq!(w.task_pids(), pids, "the worker's tasks were restarted");
    // one leader, and the others follow it: their local logs reach the same applied index
    leader(&mut managers);
    wait_for(30, "every manager applied the same log", || {
        let applied: Vec<String> = managers
            .iter()
            .map(|m| {
                let info = m.ctl_ok(&["swarm", "info", "--format", "json"]);
                let v: serde_json::Value = serde_json::from_str(&info).unwrap_or_default();
                v["RaftLastApplied"].to_string()
            })
            .collect();
        applied.windows(2).all(|p| p[0] == p[1]).then_some(())
    });
}

#[test]
fn a_rolling_update_started_before_the_leader_dies_completes_on_the_new_leader() {
    let (mut managers, w) = cluster();
    let v1 = ON_WORKER.replace(
        "replicas: 2",
        "replicas: 3\n      update_config: {parallelism: 1, delay: 2s}",
    );
    let out = deploy(&managers[0], "s", &v1);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for(60, "3 tasks on the worker", || {
        (w.task_pids().len() == 3).then_some(())
    });
    let v2 = v1.replace("command: [sleep, \"600\"]", "command: [sleep, \"601\"]");
    let files = tempfile::tempdir().unwrap();
    let stack = files.path().join("v2.yml");
    std::fs::write(&stack, &v2).unwrap();
    managers[0].ctl_ok(&[
        "stack",
        "deploy",
        "--detach",
        "-c",
        stack.to_str().unwrap(),
        "s",
    ]);
    // kill the leader while the update is under way: one task replaced, two to go
    wait_for(60, "the update to start", || {
        let ps = managers[0].ctl_ok(&["service", "ps", "s_app", "--format", "json"]);
        (ps.matches("\"Shutdown\"").count() >= 1).then_some(())
    });
    let l = leader(&mut managers);
    managers[l].kill9();
    let via = (l + 1) % 3;
    wait_for(90, "the update to complete on the new leader", || {
        let out = managers[via].ctl(&["service", "inspect", "s_app"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let v = if v.is_array() { v[0].clone() } else { v };
        let state = v["update_status"]["state"]
            .as_str()
            .or_else(|| v["UpdateStatus"]["State"].as_str())
            .unwrap_or_default()
            .to_lowercase();
        (state == "completed").then_some(())
    });
    let ps = managers[via].ctl_ok(&["service", "ps", "s_app", "--format", "json"]);
    let running_new = ps
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["DesiredState"] == "Running")
        .count();
    assert_eq!(running_new, 3, "{ps}");
    managers[l].spawn();
}

#[test]
fn a_deploy_cut_by_the_leaders_death_either_applied_or_says_so_and_a_retry_applies_it() {
    let (mut managers, w) = cluster();
    let l = leader(&mut managers);
    let via = (l + 1) % 3;
    let files = tempfile::tempdir().unwrap();
    let stack = files.path().join("stack.yml");
    std::fs::write(&stack, ON_WORKER).unwrap();
    let child = std::process::Command::new(super::cluster::bin("swarmctl"))
        .env("SWARM_HOST", managers[via].host())
        .args([
            "stack",
            "deploy",
            "--detach",
            "-c",
            stack.to_str().unwrap(),
            "s",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    managers[l].kill9();
    let out = child.wait_with_output().unwrap();
    if !out.status.success() {
        // the CLI said it did not apply: the retry does
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.is_empty(), "a failed deploy must say why");
        write_until_ok(
            &managers[via],
            &[
                "stack",
                "deploy",
                "--detach",
                "-c",
                stack.to_str().unwrap(),
                "s",
            ],
            30,
        );
    }
    wait_for(60, "2 tasks on the worker", || {
        (w.task_pids().len() == 2).then_some(())
    });
    // applied once: one service, revision history without duplicates
    let ls = managers[via].ctl_ok(&["service", "ls"]);
    assert_eq!(ls.matches("s_app").count(), 1, "{ls}");
    managers[l].spawn();
}

#[test]
fn promote_and_demote_change_roles_in_place_and_keep_the_tasks_running() {
    let (mut managers, w) = cluster();
    let pids = deploy_on_worker(&managers[0], &w);
    // the worker becomes a manager: a fourth Raft member, its tasks untouched
    managers[0].ctl_ok(&["node", "promote", "w1"]);
    wait_for(60, "w1 a reachable manager", || {
        let ls = managers[0].ctl_ok(&["node", "ls"]);
        row(&ls, "w1")
            .is_some_and(|l| l.contains("Reachable") || l.contains("Leader"))
            .then_some(())
    });
    assert!(w.state().join("node.json").exists());
    assert!(!w.state().join("worker.json").exists());
    w.ctl_ok(&["service", "ls"]);
    assert_eq!(w.task_pids(), pids, "promotion restarted the tasks");
    // demoting the leader hands the lead to another manager; the demoted node goes on as a worker
    let l = leader(&mut managers);
    let demoted = managers[l].node_id();
    let via = (l + 1) % 3;
    managers[via].ctl_ok(&["node", "demote", &demoted]);
    wait_for(60, "the demoted manager to be a worker", || {
        let ls = managers[via].ctl_ok(&["node", "ls"]);
        let line = ls.lines().find(|l| l.contains(&demoted))?.to_string();
        (!line.contains("Leader") && !line.contains("Reachable") && line.contains("Ready"))
            .then_some(())
    });
    wait_for(30, "the demoted node's worker.json", || {
        managers[l]
            .state()
            .join("worker.json")
            .exists()
            .then_some(())
    });
    assert!(!managers[l].state().join("raft").exists());
    assert!(!managers[l].state().join("certs/ca.key").exists());
    // still writable, one leader among the three managers (m's that stayed and w1)
    let files = tempfile::tempdir().unwrap();
    let data = files.path().join("x");
    std::fs::write(&data, "x").unwrap();
    write_until_ok(
        &managers[via],
        &["secret", "create", "after", data.to_str().unwrap()],
        30,
    );
    let ls = managers[via].ctl_ok(&["node", "ls"]);
    assert_eq!(ls.matches("Leader").count(), 1, "{ls}");
    assert_eq!(ls.matches("Reachable").count(), 2, "{ls}");
    // demoting below one manager is refused with the reason
    assert_eq!(w.task_pids(), pids, "the tasks were restarted");
}

#[test]
fn after_losing_two_of_three_managers_writes_are_refused_and_force_new_cluster_restores_them() {
    let (mut managers, w) = cluster();
    let pids = deploy_on_worker(&managers[0], &w);
    let l = leader(&mut managers);
    let survivor = (l + 1) % 3;
    for (i, m) in managers.iter_mut().enumerate() {
        if i != survivor {
            m.kill9();
        }
    }
    let files = tempfile::tempdir().unwrap();
    let data = files.path().join("x");
    std::fs::write(&data, "x").unwrap();
    let s = &managers[survivor];
    // writes: refused with the quorum in words, fast
    let err = wait_for(30, "the quorum error", || {
        let out = s.ctl(&["secret", "create", "lost", data.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        (!out.status.success() && err.contains("no quorum")).then_some(err)
    });
    assert!(err.contains("1 of 3 managers reachable (need 2)"), "{err}");
    // reads: answered from the survivor's own state, marked as possibly stale
    let out = s.ctl(&["service", "ls"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("s_app"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("may be stale"));
    let info = s.ctl_ok(&["swarm", "info"]);
    assert!(info.contains("writes are refused"), "{info}");

    // the survivor restarts as a cluster of one, with everything it had
    let mut survivor_m = managers.remove(survivor);
    survivor_m.stop();
    survivor_m.args.push("--force-new-cluster".into());
    survivor_m
        .args
        .extend(["--snapshot-interval".into(), "5".into()]);
    survivor_m.spawn();
    survivor_m.args.retain(|a| a != "--force-new-cluster");
    write_until_ok(
        &survivor_m,
        &["secret", "create", "after", data.to_str().unwrap()],
        30,
    );
    assert!(survivor_m.ctl_ok(&["service", "ls"]).contains("s_app"));
    for i in 0..6 {
        survivor_m.ctl_ok(&[
            "secret",
            "create",
            &format!("more{i}"),
            data.to_str().unwrap(),
        ]);
    }
    // the other two join again with empty state directories and catch up from a snapshot
    let m2 = Swarmd::start_manager(&survivor_m, "r2");
    let m3 = Swarmd::start_manager(&survivor_m, "r3");
    wait_for(60, "three managers again", || {
        let ls = survivor_m.ctl_ok(&["node", "ls"]);
        ["r2", "r3"]
            .iter()
            .all(|h| row(&ls, h).is_some_and(|l| l.contains("Reachable")))
            .then_some(())
    });
    for m in [&m2, &m3] {
        let info = m.ctl_ok(&["swarm", "info", "--format", "json"]);
        let v: serde_json::Value = serde_json::from_str(&info).unwrap();
        assert!(
            v["RaftSnapshotIndex"].is_number(),
            "no snapshot installed: {info}"
        );
        assert!(m.ctl_ok(&["secret", "ls"]).contains("more5"));
    }
    assert_eq!(w.task_pids(), pids, "the worker's tasks were restarted");
}
