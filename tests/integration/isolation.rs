//! Task isolation against a real `swarmd` (root only; skipped with a note otherwise): a task's probe, as root
//! and as `user: 65534`, cannot read the CA key, the data key, another task's secret (by its path under the
//! state dir or through `/proc/PID/root`), nor reach the control socket; a task past its memory limit ends
//! OOMKilled with exit 137; a SIGTERM to a task's shim ends the task's processes; started as a user, swarmd
//! warns once at start what is not isolated.

use std::os::unix::fs::PermissionsExt;

use super::cluster::{bin, running, wait_for, Swarmd};

const KEEPER: &str = r#"
services:
  keeper:
    image: debian:bookworm-slim
    command: ["sleep", "300"]
    secrets: [keeper_secret]
    stop_grace_period: 1s
secrets:
  keeper_secret:
    file: ./keeper.txt
"#;

const PROBE: &str = r#"leak() { echo "LEAK $*"; }
cat "$STATE/certs/ca.key" 2>/dev/null && leak ca.key
cat "$STATE/data.key" 2>/dev/null && leak data.key
ls -A "$STATE" | grep -v '^tasks$' && leak state-listing
for f in "$STATE"/tasks/*/secrets/keeper_secret; do cat "$f" 2>/dev/null && leak other-secret; done
cat "/proc/$OTHER_PID/root/run/secrets/keeper_secret" 2>/dev/null && leak proc-root
for p in /proc/[0-9]*; do cat "$p/root/run/secrets/keeper_secret" 2>/dev/null && leak proc-scan; done
[ -e "$STATE/swarmd.sock" ] && leak socket-visible
"$SWARMCTL" --host "unix://$STATE/swarmd.sock" node ls 2>/dev/null && leak control-api
echo "secret $(cat /run/secrets/probe_secret)"
echo "pid $$"
echo probe-done
"#;

fn probe_stack(state: &str, other_pid: u32, script: &str) -> String {
    let swarmctl = bin("swarmctl");
    let service = |user: &str| {
        format!(
            r#"
    image: debian:bookworm-slim
    command: ["sh", "{script}"]
    user: "{user}"
    environment:
      STATE: "{state}"
      OTHER_PID: "{other_pid}"
      SWARMCTL: "{swarmctl}"
    secrets:
      - source: probe_secret
        uid: "65534"
        mode: 0400
    deploy:
      restart_policy: {{condition: none}}
"#,
            swarmctl = swarmctl.display()
        )
    };
    format!(
        "services:\n  root:{}\n  user:{}\n  hog:\n    image: debian:bookworm-slim\n    command: [\"tail\", \"/dev/zero\"]\n    \
         deploy:\n      resources: {{limits: {{memory: 32M}}}}\n      restart_policy: {{condition: none}}\n\
         secrets:\n  probe_secret:\n    file: ./probe.txt\n",
        service("0"),
        service("65534")
    )
}

fn ps_json(d: &Swarmd, service: &str) -> Vec<serde_json::Value> {
    d.ctl_ok(&["service", "ps", service, "--format", "json"])
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn tasks_cannot_reach_keys_socket_or_other_tasks_and_oom_is_reported() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("task isolation needs root: skipped");
        return;
    }
    let d = Swarmd::start();
    let state = d.state().to_str().expect("utf-8 state dir").to_string();
    for f in ["certs/ca.key", "data.key", "swarmd.sock"] {
        assert!(d.state().join(f).exists(), "{f} is where the probe looks");
    }
    let files = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(files.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::write(files.path().join("keeper.txt"), "KEEPER-SECRET").expect("secret");
    std::fs::write(files.path().join("probe.txt"), "PROBE-SECRET").expect("secret");
    let script = files.path().join("probe.sh");
    std::fs::write(&script, PROBE).expect("probe");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).expect("chmod");

    let keeper = files.path().join("keeper.yml");
    std::fs::write(&keeper, KEEPER).expect("stack");
    d.ctl_ok(&[
        "stack",
        "deploy",
        "-c",
        keeper.to_str().expect("path"),
        "--detach",
        "keep",
    ]);
    wait_for(60, "the keeper running", || {
        (running(&d, "keep_keeper") == 1).then_some(())
    });
    let other_pid = wait_for(30, "the keeper's process", || {
        d.task_pids().first().copied()
    });

    let probe = files.path().join("probe.yml");
    let yaml = probe_stack(&state, other_pid, &script.display().to_string());
    std::fs::write(&probe, yaml).expect("stack");
    d.ctl_ok(&[
        "stack",
        "deploy",
        "-c",
        probe.to_str().expect("path"),
        "--detach",
        "probe",
    ]);
    for service in ["probe_root", "probe_user"] {
        let logs = wait_for(60, "the probe's report", || {
            let logs = d.ctl_ok(&["service", "logs", service]);
            logs.contains("probe-done").then_some(logs)
        });
        assert!(!logs.contains("LEAK"), "{service}: {logs}");
        assert!(!logs.contains("KEEPER-SECRET"), "{service}: {logs}");
        assert!(logs.contains("secret PROBE-SECRET"), "{service}: {logs}");
        assert!(
            logs.contains("pid 2"),
            "{service} is pid 2 of its namespace: {logs}"
        );
    }

    let oom = wait_for(60, "the hog OOM killed", || {
        ps_json(&d, "probe_hog")
            .into_iter()
            .find(|t| t["Error"].as_str().is_some_and(|e| e.contains("OOMKilled")))
    });
    assert_eq!(
        oom["Error"], "task: non-zero exit (137): OOMKilled (out of memory)",
        "{oom}"
    );
    assert!(
        oom["CurrentState"]
            .as_str()
            .is_some_and(|s| s.starts_with("Failed")),
        "{oom}"
    );

    // A SIGTERM to the keeper's shim stops its task: its process goes, and the service replaces it.
    let shim = std::fs::read_dir(d.state().join("tasks"))
        .expect("tasks")
        .flatten()
        .find_map(|e| {
            let json = std::fs::read_to_string(e.path().join("shim.json")).ok()?;
            let spec = std::fs::read_to_string(e.path().join("spec.json")).ok()?;
            let exited = e.path().join("exit.json").exists();
            (spec.contains("keeper") && !exited)
                .then(|| serde_json::from_str::<serde_json::Value>(&json).ok())
                .flatten()
                .and_then(|v| v["pid"].as_i64())
        })
        .expect("the keeper's shim");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shim as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM to the shim");
    wait_for(60, "the keeper's process gone", || {
        (!d.task_pids().contains(&other_pid)).then_some(())
    });
    wait_for(60, "a new keeper running", || {
        (running(&d, "keep_keeper") == 1).then_some(())
    });

    d.ctl_ok(&["stack", "rm", "probe"]);
    d.ctl_ok(&["stack", "rm", "keep"]);
    wait_for(60, "no task process left", || {
        d.task_pids().is_empty().then_some(())
    });
}

/// Not root (started here as uid 65534), swarmd says once, at start, what tasks are not isolated from.
#[test]
fn without_root_swarmd_says_once_what_is_not_isolated() {
    use std::os::unix::process::CommandExt;
    if !nix::unistd::geteuid().is_root() {
        eprintln!("needs root to start swarmd as another user: skipped");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let state = dir.path().join("state");
    std::fs::create_dir(&state).expect("state dir");
    let nobody = nix::unistd::Uid::from_raw(65534);
    let nogroup = nix::unistd::Gid::from_raw(65534);
    nix::unistd::chown(&state, Some(nobody), Some(nogroup)).expect("chown");
    let log = dir.path().join("swarmd.log");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    // the build's own directory may not be reachable by that user (a clone under a 0700 directory): run a copy
    let exe = dir.path().join("swarmd");
    std::fs::copy(bin("swarmd"), &exe).expect("copy swarmd");
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).expect("chmod swarmd");
    let mut cmd = std::process::Command::new(&exe);
    cmd.arg("--state-dir")
        .arg(&state)
        .arg("--listen-addr")
        .arg(format!("127.0.0.1:{port}"))
        .env("SWARMD_LOG", "info,openraft=warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"));
    // SAFETY: setgroups/setgid/setuid are async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::setgroups(&[nogroup]).map_err(std::io::Error::from)?;
            nix::unistd::setgid(nogroup).map_err(std::io::Error::from)?;
            nix::unistd::setuid(nobody).map_err(std::io::Error::from)
        });
    }
    let mut child = cmd.spawn().expect("start swarmd");
    let text = wait_for(60, "swarmd ready", || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        (text.contains("node identity ready") || text.contains("Error")).then_some(text)
    });
    let _ = child.kill();
    let _ = child.wait();
    let warnings: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("task isolation:"))
        .collect();
    assert_eq!(warnings.len(), 1, "{text}");
    for word in [
        "WARN",
        "not running as root",
        "control socket",
        "not enforced",
    ] {
        assert!(warnings[0].contains(word), "{word}: {}", warnings[0]);
    }
}
