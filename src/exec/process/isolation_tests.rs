//! Tests of task isolation with the real shim (the helpers of `tests`): what a task can see of
//! the state dir, other tasks and their processes; its capabilities and `no_new_privs`; its
//! cgroup, limits and an OOM kill; and a shim stopping its task on SIGTERM. The isolation tests
//! need root and say so when skipped.

use std::path::Path;
use std::time::{Duration, Instant};

use super::cgroup::{self, Layout};
use super::layout::{ProcRecord, TaskDir};
use super::tests::{all_gone, executor, is_root, run, running, spec, stdout_of, test_shim};
use super::*;
use crate::exec::{ExitStatus, FileMount, Limits, OOM_MESSAGE};

fn skip_unless_root(test: &str) -> bool {
    if !is_root() {
        eprintln!("{test}: skipped, task isolation needs root");
    }
    !is_root()
}

fn secret(target: &str, data: &str, uid: u32) -> FileMount {
    FileMount {
        target: target.into(),
        data: data.as_bytes().to_vec(),
        uid,
        gid: uid,
        mode: 0o400,
    }
}

const PROBE: &str = r#"state=$1; other_secret=$2; other_pid=$3; me=$4
leak() { echo "LEAK $*"; }
cat "$state/certs/ca.key" 2>/dev/null && leak ca.key
cat "$state/data.key" 2>/dev/null && leak data.key
cat "$other_secret" 2>/dev/null && leak other-secret
cat "/proc/$other_pid/root/run/secrets/a_secret" 2>/dev/null && leak proc-root
[ -e "$state/swarmd.sock" ] && leak socket
ls "$state/tasks" | grep -v "^$me\$" && leak other-task-dir
touch "$state/x" 2>/dev/null && leak writable-state
umount "$state" 2>/dev/null && leak umount
ls /dev | grep -q '^sd\|^vd\|^nvme\|^xvd' && leak block-device
touch /etc/swarm-probe 2>/dev/null && rm -f /etc/swarm-probe && leak host-writable
touch /tmp/swarm-probe-$$ && rm /tmp/swarm-probe-$$ || leak tmp-not-writable
[ -w /proc/sys/kernel/core_pattern ] && leak proc-sys-writable
[ -w /proc/sysrq-trigger ] && leak sysrq-writable
[ -s /proc/kcore ] && leak kcore
[ -w /sys/kernel ] && leak sys-writable
[ -S "$HOST_SOCKET" ] && leak host-socket
echo "pid $$"
echo "procs $(ls /proc | grep -c '^[0-9][0-9]*$')"
cat /run/secrets/mine; echo
cat "$SWARM_SECRETS_DIR/mine"; echo
grep -E '^(CapEff|NoNewPrivs)' /proc/self/status
"#;

#[tokio::test]
async fn a_task_sees_neither_keys_nor_socket_nor_other_tasks() {
    if skip_unless_root("a_task_sees_neither_keys_nor_socket_nor_other_tasks") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let state = tmp.path().join("state");
    std::fs::create_dir_all(state.join("certs")).expect("certs");
    std::fs::write(state.join("certs/ca.key"), "CA-KEY").expect("ca.key");
    std::fs::write(state.join("data.key"), "DATA-KEY").expect("data.key");
    let _socket =
        std::os::unix::net::UnixListener::bind(state.join("swarmd.sock")).expect("socket");
    // A host service's socket under /run (Docker's, D-Bus's…) is hidden too.
    let host_socket =
        std::path::PathBuf::from(format!("/run/swarm-test-{}.sock", std::process::id()));
    let _host = std::os::unix::net::UnixListener::bind(&host_socket).expect("host socket");
    let exec = ProcessExecutor::new(state.join("tasks"), test_shim()).hiding(&state);

    let mut other = spec("other", &["sleep", "30"]);
    other.secrets = vec![secret("a_secret", "OTHER-SECRET", 65534)];
    other.user = Some("65534".into());
    let other_ctl = running(&exec, other).await;
    let other_dir = TaskDir::new(exec.root(), "other").expect("dir");
    let other_pid = layout::read_json::<ProcRecord>(&other_dir.pid())
        .expect("read")
        .expect("pid.json")
        .pid;
    let other_secret = other_dir.secrets().join("a_secret");
    assert!(
        other_secret.is_file(),
        "the other task's secret exists on the host"
    );

    for (id, user, cap_eff) in [
        ("probe-root", None, "00000000a80425fb"),
        ("probe-user", Some("65534"), "0000000000000000"),
    ] {
        let mut s = spec(
            id,
            &[
                "sh",
                "-c",
                PROBE,
                "sh",
                &state.display().to_string(),
                &other_secret.display().to_string(),
                &other_pid.to_string(),
                id,
            ],
        );
        s.user = user.map(String::from);
        s.env = vec![("HOST_SOCKET".into(), host_socket.display().to_string())];
        s.secrets = vec![secret("mine", "MY-SECRET", 65534)];
        let (probe, status) = run(&exec, s).await;
        let out = stdout_of(&exec, id);
        assert_eq!(status, ExitStatus::exited(0), "{id}: {out}");
        assert!(!out.contains("LEAK"), "{id}: {out}");
        assert!(
            out.contains("pid 2\n"),
            "{id} is pid 2 under its init: {out}"
        );
        let procs: usize = out
            .lines()
            .find_map(|l| l.strip_prefix("procs "))
            .and_then(|n| n.parse().ok())
            .expect("procs line");
        assert!(procs < 10, "{id} sees only its own processes: {out}");
        assert!(out.contains("MY-SECRET\nMY-SECRET\n"), "{id}: {out}");
        assert!(out.contains(&format!("CapEff:\t{cap_eff}")), "{id}: {out}");
        assert!(out.contains("NoNewPrivs:\t1"), "{id}: {out}");
        probe.remove().await.expect("remove the probe");
    }
    assert_eq!(
        std::fs::read_to_string(state.join("certs/ca.key")).expect("host key"),
        "CA-KEY",
        "the host's files are untouched"
    );
    other_ctl.terminate().await.expect("terminate");
    assert_eq!(
        other_ctl.wait().await.expect("wait"),
        ExitStatus::signaled(9)
    );
    other_ctl.remove().await.expect("remove");
    let _ = std::fs::remove_file(&host_socket);
}

#[tokio::test]
async fn cap_add_and_cap_drop_are_honoured() {
    if skip_unless_root("cap_add_and_cap_drop_are_honoured") {
        return;
    }
    let (_tmp, exec) = executor();
    let script = "grep -E '^Cap(Eff|Bnd)' /proc/self/status";
    for (id, add, drop, want) in [
        (
            "drop-all",
            vec!["NET_BIND_SERVICE"],
            vec!["ALL"],
            "0000000000000400",
        ),
        (
            "add-admin",
            vec!["cap_sys_admin"],
            vec!["NET_RAW"],
            "00000000a82405fb",
        ),
    ] {
        let mut s = spec(id, &["sh", "-c", script]);
        s.cap_add = add.into_iter().map(String::from).collect();
        s.cap_drop = drop.into_iter().map(String::from).collect();
        let (_, status) = run(&exec, s).await;
        assert!(status.success(), "{id}: {status}");
        let out = stdout_of(&exec, id);
        assert_eq!(out, format!("CapEff:\t{want}\nCapBnd:\t{want}\n"), "{id}");
    }
    let mut bad = spec("bad-cap", &["true"]);
    bad.cap_add = vec!["CAP_NOPE".into()];
    let ctl = exec.controller(bad).expect("controller");
    ctl.prepare().await.expect("prepare");
    let err = ctl.start().await.expect_err("unknown capability");
    assert!(
        err.to_string().contains("unknown capability: \"CAP_NOPE\""),
        "{err}"
    );
}

/// A task id no other test binary running at the same time uses (cgroups are host-wide).
fn unique(name: &str) -> String {
    format!("{name}-{}", std::process::id())
}

/// The task's cgroup directories while it runs.
fn cgroup_dirs(task_id: &str) -> Vec<(String, std::path::PathBuf)> {
    match cgroup::layout() {
        Some(Layout::V2) => vec![(
            String::new(),
            Path::new("/sys/fs/cgroup/swarm").join(task_id),
        )],
        Some(Layout::V1(found)) => found
            .into_iter()
            .map(|(c, base)| (c.to_string(), base.join("swarm").join(task_id)))
            .collect(),
        None => Vec::new(),
    }
}

fn read_trim(p: &Path) -> String {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[tokio::test]
async fn limits_are_enforced_by_a_cgroup_removed_with_the_task() {
    if skip_unless_root("limits_are_enforced_by_a_cgroup_removed_with_the_task") {
        return;
    }
    let (_tmp, exec) = executor();
    let id = unique("limited");
    let mut s = spec(&id, &["sleep", "30"]);
    s.limits = Limits {
        nano_cpus: 500_000_000,
        memory_bytes: 64 << 20,
        pids: 50,
    };
    let ctl = running(&exec, s).await;
    let dirs = cgroup_dirs(&id);
    assert!(!dirs.is_empty(), "a cgroup file system is mounted");
    let pid = layout::read_json::<ProcRecord>(&TaskDir::new(exec.root(), &id).expect("d").pid())
        .expect("read")
        .expect("pid.json")
        .pid;
    for (c, d) in &dirs {
        let procs = read_trim(&d.join("cgroup.procs"));
        assert!(procs.lines().any(|l| l == pid.to_string()), "{c}: {procs}");
        let (file, want) = match c.as_str() {
            "memory" => ("memory.limit_in_bytes", (64u64 << 20).to_string()),
            "cpu" => ("cpu.cfs_quota_us", "50000".to_string()),
            "pids" => ("pids.max", "50".to_string()),
            _ => ("memory.max", (64u64 << 20).to_string()),
        };
        assert_eq!(read_trim(&d.join(file)), want, "{}", d.display());
    }
    ctl.terminate().await.expect("terminate");
    assert_eq!(ctl.wait().await.expect("wait"), ExitStatus::signaled(9));
    for (_, d) in &dirs {
        assert!(!d.exists(), "{} removed with the task", d.display());
    }
}

#[tokio::test]
async fn a_task_past_its_memory_limit_is_oom_killed_with_137() {
    if skip_unless_root("a_task_past_its_memory_limit_is_oom_killed_with_137") {
        return;
    }
    let (_tmp, exec) = executor();
    let id = unique("oom");
    let mut s = spec(&id, &["tail", "/dev/zero"]);
    s.limits.memory_bytes = 32 << 20;
    let (_, status) = tokio::time::timeout(Duration::from_secs(60), run(&exec, s))
        .await
        .expect("the task ends");
    assert_eq!(status, ExitStatus::oom_killed(137));
    assert_eq!(
        status.error.as_deref(),
        Some(format!("task: non-zero exit (137): {OOM_MESSAGE}").as_str())
    );
    assert!(cgroup_dirs(&id).iter().all(|(_, d)| !d.exists()));
    // Under the limit, the same cgroup accounting reports nothing.
    let mut fine = spec(
        &unique("no-oom"),
        &["sh", "-c", "head -c 1000000 /dev/zero | wc -c"],
    );
    fine.limits.memory_bytes = 32 << 20;
    let (_, status) = run(&exec, fine).await;
    assert_eq!(status, ExitStatus::exited(0));
}

fn shim_pid(exec: &ProcessExecutor, id: &str) -> i32 {
    let dir = TaskDir::new(exec.root(), id).expect("dir");
    layout::read_json::<ProcRecord>(&dir.shim())
        .expect("read")
        .expect("shim.json")
        .pid
}

async fn wait_for_output(exec: &ProcessExecutor, id: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !stdout_of(exec, id).contains(want) {
        assert!(Instant::now() < deadline, "{id} never printed {want:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_shim_told_to_stop_stops_its_task_first() {
    let (_tmp, exec) = executor();
    let script = "trap 'echo got-term; exit 7' TERM; sleep 30.0301 & echo ready; wait";
    let ctl = running(&exec, spec("term", &["sh", "-c", script])).await;
    wait_for_output(&exec, "term", "ready").await;
    let shim = shim_pid(&exec, "term");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shim),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM to the shim");
    let status = tokio::time::timeout(Duration::from_secs(20), ctl.wait())
        .await
        .expect("the task ends")
        .expect("wait");
    assert_eq!(status, ExitStatus::exited(7), "the task's trap ran");
    assert!(stdout_of(&exec, "term").contains("got-term"));
    assert!(all_gone("30.0301"), "the task's child is gone too");

    // A task ignoring its stop signal is killed after its grace period.
    let mut s = spec(
        "stubborn",
        &["sh", "-c", "trap '' TERM; echo ready; sleep 30.0302"],
    );
    s.stop_grace_period = Duration::from_millis(300);
    let ctl = running(&exec, s).await;
    wait_for_output(&exec, "stubborn", "ready").await;
    let shim = shim_pid(&exec, "stubborn");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shim),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM to the shim");
    let status = tokio::time::timeout(Duration::from_secs(20), ctl.wait())
        .await
        .expect("the task ends")
        .expect("wait");
    assert_eq!(status, ExitStatus::signaled(9));
    assert!(all_gone("30.0302"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while layout::proc_start_time(shim).is_some() {
        assert!(Instant::now() < deadline, "the shim exited");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn health_checks_run_isolated_like_the_task() {
    if skip_unless_root("health_checks_run_isolated_like_the_task") {
        return;
    }
    let (_tmp, exec) = executor();
    let id = unique("hc-iso");
    let mut s = spec(&id, &["sleep", "30"]);
    s.cap_drop = vec!["ALL".into()];
    let ctl = running(&exec, s).await;
    let script = format!(
        "echo \"pid $$\"; grep -E '^(CapEff|NoNewPrivs)' /proc/self/status; \
         grep -c swarm/{id} /proc/self/cgroup"
    );
    let argv: Vec<String> = ["sh", "-c", script.as_str()]
        .iter()
        .map(|a| a.to_string())
        .collect();
    let r = ctl
        .exec_check(&argv, Duration::from_secs(5))
        .await
        .expect("check");
    let out = r.output();
    assert!(r.passed(), "{out}");
    let pid: i32 = out
        .lines()
        .find_map(|l| l.strip_prefix("pid "))
        .and_then(|p| p.parse().ok())
        .expect("pid line");
    assert!(
        pid < 10,
        "the check runs in the task's PID namespace: {out}"
    );
    assert!(
        out.contains("CapEff:\t0000000000000000\nNoNewPrivs:\t1\n"),
        "{out}"
    );
    assert!(
        !out.ends_with("\n0\n"),
        "the check joined the task's cgroup: {out}"
    );
    ctl.terminate().await.expect("terminate");
}

#[test]
fn without_root_the_gaps_are_named() {
    let (_tmp, exec) = executor();
    let gaps = exec.unprivileged().isolation_gaps();
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    for word in [
        "not running as root",
        "mount and PID",
        "capabilities",
        "not enforced",
    ] {
        assert!(gaps[0].contains(word), "{word}: {}", gaps[0]);
    }
}
