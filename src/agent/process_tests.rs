//! The worker on the real process executor: a task with a templated environment and a secret
//! runs, survives the loss of its worker (a daemon restart), is adopted by a new worker on a new
//! executor over the same directory without being restarted, then shuts down; a task with a
//! health check (reading its secret) is `Running` only once the check passes. The shim runs as
//! this test binary re-executed with a filter selecting only `shim_entry` (as in
//! `exec::process::tests`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use crate::exec::process::{shim_main, ProcessExecutor, ShimCommand, SHIM_ENV};
use crate::model::{
    FileReference, HealthConfig, Meta, Task, TaskHealth, TaskSpec, TaskState, TaskStatus,
};
use crate::util::ManualClock;

use super::{Assignments, StatusReport, Worker};

/// Becomes the shim when started by the executor under test; a no-op in a normal test run.
#[test]
fn shim_entry() {
    if let Some(dir) = std::env::var_os(SHIM_ENV) {
        shim_main(Path::new(&dir));
    }
}

fn test_shim() -> ShimCommand {
    ShimCommand {
        program: std::env::current_exe().expect("test binary path"),
        args: [
            "--exact",
            "agent::process_tests::shim_entry",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ]
        .iter()
        .map(Into::into)
        .collect(),
    }
}

fn greeter() -> Task {
    let mut spec = TaskSpec::default();
    let c = &mut spec.container;
    c.image = "busybox".into();
    c.command = vec!["sh".into(), "-c".into()];
    c.args = vec!["echo $GREETING; cat \"$SWARM_SECRETS_DIR/token\"; echo; sleep 30".into()];
    c.env =
        vec!["GREETING=hello from {{ .Service.Name }}.{{.Task.Slot}} on {{.Node.Hostname}}".into()];
    c.stop_grace_period = Some(Duration::from_secs(5));
    c.secrets = vec![FileReference {
        name: "token".into(),
        id: "sec1".into(),
        target: "token".into(),
        mode: 0o400,
        ..FileReference::default()
    }];
    Task {
        id: "greet1".into(),
        meta: Meta::default(),
        service_id: "svc1".into(),
        slot: 1,
        node_id: Some("n1".into()),
        spec,
        spec_version: 1,
        desired_state: TaskState::Running,
        status: TaskStatus::new(TaskState::Assigned, 0),
        attachments: Vec::new(),
    }
}

fn assignments(task: &Task) -> Assignments {
    Assignments {
        tasks: vec![task.clone()],
        secrets: HashMap::from([("sec1".to_string(), b"s3cret".to_vec())]),
        configs: HashMap::new(),
        service_names: HashMap::from([("svc1".to_string(), "web".to_string())]),
        node_id: "n1".into(),
        node_hostname: "box1".into(),
        service_ports: HashMap::new(),
        network_map: Default::default(),
    }
}

fn worker(root: &Path) -> (Worker, UnboundedReceiver<StatusReport>) {
    let exec = ProcessExecutor::new(root, test_shim());
    let (tx, rx) = unbounded_channel();
    let w = Worker::new(Arc::new(exec), Arc::new(ManualClock::new(1000)), tx);
    (w, rx)
}

/// Receives reports for the task until `state`; returns the states seen (20 s deadline).
async fn until(rx: &mut UnboundedReceiver<StatusReport>, state: TaskState) -> Vec<TaskStatus> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    while !seen.iter().any(|s: &TaskStatus| s.state == state) {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(r)) => seen.push(r.status),
            _ => panic!("never reached {state:?}; saw {seen:?}"),
        }
    }
    seen
}

fn task_pid(dir: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(dir.join("pid.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v.get("pid")?.as_i64().and_then(|p| i32::try_from(p).ok())
}

fn alive(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
        && std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

async fn eventually(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn real_task_survives_a_worker_restart_and_shuts_down() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("tasks");
    let dir: PathBuf = root.join("greet1");
    let stdout = || std::fs::read_to_string(dir.join("stdout.log")).unwrap_or_default();
    let want = "hello from web.1 on box1\ns3cret\n";

    let (w1, mut rx1) = worker(&root);
    let mut t = greeter();
    w1.assign(assignments(&t)).await.expect("assign");
    let seen = until(&mut rx1, TaskState::Running).await;
    let states: Vec<_> = seen.iter().map(|s| s.state).collect();
    assert_eq!(
        states,
        [
            TaskState::Accepted,
            TaskState::Preparing,
            TaskState::Ready,
            TaskState::Starting,
            TaskState::Running
        ]
    );
    eventually("the greeting", || stdout() == want).await;
    let pid = task_pid(&dir).expect("pid recorded");
    assert!(alive(pid));

    drop(w1); // the daemon "crashes"; the shim keeps the task running
    drop(rx1);
    let (w2, mut rx2) = worker(&root);
    t.status = TaskStatus::new(TaskState::Running, 1000);
    w2.assign(assignments(&t)).await.expect("assign");
    let seen = until(&mut rx2, TaskState::Running).await;
    assert_eq!(seen.len(), 1, "adopted, reported running once: {seen:?}");
    assert_eq!(task_pid(&dir), Some(pid), "same process");
    assert!(alive(pid));
    assert_eq!(stdout(), want, "not restarted");

    t.desired_state = TaskState::Shutdown;
    w2.assign(assignments(&t)).await.expect("assign");
    let seen = until(&mut rx2, TaskState::Shutdown).await;
    assert_eq!(seen.last().map(|s| s.exit_code), Some(Some(128 + 15)));
    eventually("the task process to die", || !alive(pid)).await;
    assert!(dir.join("stdout.log").exists(), "kept for its logs");

    t.desired_state = TaskState::Remove;
    w2.assign(assignments(&t)).await.expect("assign");
    eventually("the task directory to go", || !dir.exists()).await;
}

#[tokio::test]
async fn real_task_is_running_only_once_its_health_check_passes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("tasks");
    let flag = tmp.path().join(format!("ready-{}", std::process::id()));
    let mut t = greeter();
    t.id = "health1".into();
    // As root the check reads the secret where the task sees it, inside its mount namespace.
    let secret = if nix::unistd::geteuid().is_root() {
        "/run/secrets/token".to_string()
    } else {
        "\"$SWARM_SECRETS_DIR/token\"".to_string()
    };
    t.spec.container.healthcheck = Some(HealthConfig {
        test: vec![
            "CMD-SHELL".into(),
            format!("test -f {} && grep -q s3cret {secret}", flag.display()),
        ],
        interval: Some(Duration::from_millis(100)),
        timeout: Some(Duration::from_secs(5)),
        retries: Some(1000),
        start_period: None,
        start_interval: None,
    });
    let (w, mut rx) = worker(&root);
    w.assign(assignments(&t)).await.expect("assign");
    let seen = until(&mut rx, TaskState::Starting).await;
    assert_eq!(seen.last().map(|s| s.health), Some(None));
    let seen = until_health(&mut rx, TaskHealth::Starting).await;
    assert_eq!(seen.last().map(|s| s.state), Some(TaskState::Starting));
    // Checks fail while the file is missing: no Running yet.
    let quiet = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await;
    assert!(quiet.is_err(), "nothing before the check passes: {quiet:?}");
    std::fs::write(&flag, "").expect("flag");
    let seen = until(&mut rx, TaskState::Running).await;
    assert_eq!(
        seen.last().map(|s| s.health),
        Some(Some(TaskHealth::Healthy))
    );

    t.desired_state = TaskState::Remove;
    w.assign(assignments(&t)).await.expect("assign");
    let dir = root.join("health1");
    eventually("the task directory to go", || !dir.exists()).await;
}

/// Receives reports until one with `health` (20 s deadline).
async fn until_health(
    rx: &mut UnboundedReceiver<StatusReport>,
    health: TaskHealth,
) -> Vec<TaskStatus> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    while !seen.iter().any(|s: &TaskStatus| s.health == Some(health)) {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(r)) => seen.push(r.status),
            _ => panic!("never reached {health:?}; saw {seen:?}"),
        }
    }
    seen
}
