//! Rolling updates with a real `swarmd`: a start-first update never leaves [replicas, replicas + parallelism]
//! running tasks, and an update whose tasks fail rolls itself back while `stack deploy` exits 1.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::cluster::Swarmd;

const STACK: &str = r#"
services:
  app:
    image: app:${V:-1}
    command: ["sh", "-c", "echo version $$V; test \"$$V\" != bad || exit 1; exec sleep 300"]
    environment:
      V: "${V:-1}"
    stop_grace_period: 1s
    deploy:
      replicas: 6
      update_config:
        parallelism: 2
        order: start-first
        delay: 300ms
        monitor: 3s
        failure_action: rollback
      rollback_config:
        parallelism: 0
      restart_policy:
        delay: 500ms
"#;

/// (tasks observed Running, images of the tasks that should run)
fn observe(d: &Swarmd) -> (usize, Vec<String>) {
    let out = d.ctl(&["service", "ps", "roll_app", "--format", "json"]);
    let mut running = 0;
    let mut images = Vec::new();
    for v in String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
    {
        if v["CurrentState"]
            .as_str()
            .is_some_and(|s| s.starts_with("Running"))
        {
            running += 1;
        }
        if v["DesiredState"] == "Running" {
            images.push(v["Image"].as_str().unwrap_or_default().to_string());
        }
    }
    images.sort();
    (running, images)
}

fn deploy(d: &Swarmd, file: &std::path::Path, version: &str) -> Command {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("swarmctl"));
    cmd.env("SWARM_HOST", d.host())
        .env("V", version)
        .args(["stack", "deploy", "--timeout", "90s", "-c"])
        .arg(file)
        .arg("roll")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

#[test]
fn start_first_update_stays_in_bounds_and_a_failing_update_rolls_back() {
    let d = Swarmd::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("stack.yml");
    std::fs::write(&file, STACK).unwrap();

    let out = deploy(&d, &file, "1").output().unwrap();
    assert!(
        out.status.success(),
        "v1: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(observe(&d), (6, vec!["app:1".to_string(); 6]));

    // v2: start-first, 2 at a time; every observation has 6..=8 running tasks
    let mut child = deploy(&d, &file, "2").spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut observations = 0;
    let status = loop {
        let (running, _) = observe(&d);
        assert!(
            (6..=8).contains(&running),
            "running tasks out of [6, 8]: {running}\n{}",
            d.ctl_ok(&["service", "ps", "roll_app"])
        );
        observations += 1;
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "v2 deploy did not finish");
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    assert!(
        status.success(),
        "v2: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(observations > 3, "the update was observed while it ran");
    assert_eq!(observe(&d), (6, vec!["app:2".to_string(); 6]));
    let v2_spec = d.ctl_ok(&["service", "inspect", "roll_app"]);
    let v2: serde_json::Value = serde_json::from_str(&v2_spec).unwrap();

    // v3 exits 1: the update rolls back to v2's spec and the deploy exits 1, saying why
    let out = deploy(&d, &file, "bad").output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("roll_app") && err.contains("rolled back"),
        "{err}"
    );
    super::cluster::wait_for(60, "6 tasks back on v2", || {
        (observe(&d) == (6, vec!["app:2".to_string(); 6])).then_some(())
    });
    let after: serde_json::Value =
        serde_json::from_str(&d.ctl_ok(&["service", "inspect", "roll_app"])).unwrap();
    assert_eq!(
        after[0]["spec"], v2[0]["spec"],
        "the service holds v2's spec again"
    );
    assert_eq!(after[0]["update_status"]["state"], "rollback_completed");
    // and the v2 files are what the cluster runs: nothing to do
    let diff = Command::new(assert_cmd::cargo::cargo_bin("swarmctl"))
        .env("SWARM_HOST", d.host())
        .env("V", "2")
        .args(["stack", "diff", "-c"])
        .arg(&file)
        .arg("roll")
        .output()
        .unwrap();
    assert_eq!(
        diff.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&diff.stdout)
    );

    d.ctl_ok(&["stack", "rm", "roll"]);
    super::cluster::wait_for(60, "no task process left", || {
        d.task_pids().is_empty().then_some(())
    });
}
