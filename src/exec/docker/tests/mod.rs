//! Tests against the real Docker daemon with the local image `swarm-test/busybox:latest`
//! (`FROM scratch` + a static busybox; built here when missing and busybox is installed).
//! Without a reachable daemon they are skipped with a notice, unless `SWARM_REQUIRE_DOCKER=1`
//! (CI) makes that a failure.

use std::time::{Duration, Instant};

use futures::StreamExt;

mod exec_limits_ports;
mod network;

use super::*;
use crate::exec::{
    CheckResult, ExitStatus, FileMount, Limits, LogStream, PortProtocol, PublishedPort,
    RuntimeState,
};

const IMAGE: &str = "swarm-test/busybox:latest";

fn required() -> bool {
    std::env::var("SWARM_REQUIRE_DOCKER").is_ok_and(|v| v == "1")
}

/// Builds the test image with the docker CLI from the host's static busybox.
fn build_test_image() -> Result<(), String> {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .ok_or("busybox is not installed (apt-get install busybox-static)")?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).map_err(|e| e.to_string())?;
    std::fs::copy(busybox, bin.join("busybox")).map_err(|e| e.to_string())?;
    for a in [
        "sh", "sleep", "echo", "cat", "test", "true", "false", "pwd", "id",
    ] {
        std::os::unix::fs::symlink("busybox", bin.join(a)).map_err(|e| e.to_string())?;
    }
    std::fs::write(
        dir.path().join("Dockerfile"),
        "FROM scratch\nCOPY bin/ /bin/\nENV PATH=/bin\n",
    )
    .map_err(|e| e.to_string())?;
    let out = std::process::Command::new("docker")
        .args(["build", "-q", "-t", IMAGE])
        .arg(dir.path())
        .output()
        .map_err(|e| format!("docker build: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(())
}

/// The executor, or `None` (test skipped) when there is no Docker daemon.
async fn executor() -> Option<(tempfile::TempDir, DockerExecutor)> {
    let dir = tempfile::tempdir().expect("tempdir");
    let exec = match DockerExecutor::connect(dir.path().join("docker")).await {
        Ok(e) => e,
        Err(e) if required() => panic!("SWARM_REQUIRE_DOCKER=1 but {e}"),
        Err(e) => {
            eprintln!("NOTICE: skipping docker executor test: {e}");
            return None;
        }
    };
    if exec.client().inspect_image(IMAGE).await.is_err() {
        if let Err(e) = build_test_image() {
            let msg = format!("test image {IMAGE} is missing and could not be built: {e}");
            if required() {
                panic!("{msg}");
            }
            eprintln!("NOTICE: skipping docker executor test: {msg}");
            return None;
        }
    }
    Some((dir, exec))
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{:016x}", rand::random::<u64>())
}

fn spec(id: &str, argv: &[&str]) -> ProcessSpec {
    ProcessSpec {
        task_id: id.into(),
        task_name: format!("svc.1.{id}"),
        argv: argv.iter().map(|s| s.to_string()).collect(),
        env: Vec::new(),
        working_dir: None,
        user: None,
        stop_signal: None,
        stop_grace_period: Duration::from_secs(10),
        secrets: Vec::new(),
        configs: Vec::new(),
        image: IMAGE.into(),
        read_only: false,
        init: false,
        limits: Default::default(),
        cap_add: Vec::new(),
        cap_drop: Vec::new(),
        ports: Vec::new(),
        labels: Default::default(),
    }
}

fn sh(id: &str, script: &str) -> ProcessSpec {
    spec(id, &["sh", "-c", script])
}

async fn run(exec: &DockerExecutor, spec: ProcessSpec) -> (Box<dyn Controller>, ExitStatus) {
    let ctl = exec.controller(spec).expect("controller");
    ctl.prepare().await.expect("prepare");
    ctl.start().await.expect("start");
    let status = ctl.wait().await.expect("wait");
    (ctl, status)
}

async fn lines(exec: &DockerExecutor, id: &str, opts: LogOptions) -> Vec<(LogStream, String)> {
    let stream = exec.logs(id, opts).await.expect("logs");
    stream
        .map(|l| l.expect("log line"))
        .map(|l| (l.stream, l.line))
        .collect()
        .await
}

async fn stdout_of(exec: &DockerExecutor, id: &str) -> String {
    lines(exec, id, LogOptions::default())
        .await
        .into_iter()
        .filter(|(s, _)| *s == LogStream::Stdout)
        .map(|(_, l)| l + "\n")
        .collect()
}

/// Removes the task and checks that no container is left.
async fn remove(exec: &DockerExecutor, ctl: &dyn Controller) {
    ctl.remove().await.expect("remove");
    ctl.remove().await.expect("remove is idempotent");
    let gone = exec
        .client()
        .inspect_container(
            &container_name(ctl.task_id()),
            None::<InspectContainerOptions>,
        )
        .await;
    assert!(matches!(gone, Err(ref e) if is_not_found(e)), "{gone:?}");
    assert!(!exec.root().join(ctl.task_id()).exists());
}

#[tokio::test]
async fn exit_codes_are_reported() {
    let Some((_d, exec)) = executor().await else {
        return;
    };
    for code in [0, 3] {
        let id = unique("exit");
        let (ctl, status) = run(&exec, sh(&id, &format!("exit {code}"))).await;
        assert_eq!(status, ExitStatus::exited(code));
        assert_eq!(ctl.inspect().await.unwrap(), RuntimeState::Exited(status));
        remove(&exec, ctl.as_ref()).await;
    }
}

#[tokio::test]
async fn env_and_working_dir_are_honored() {
    let Some((_d, exec)) = executor().await else {
        return;
    };
    let id = unique("env");
    let mut s = sh(
        &id,
        "echo \"$GREETING from $(pwd) on $(cat /etc/hostname)\"",
    );
    s.env = vec![
        ("GREETING".into(), "hello".into()),
        ("HOSTNAME".into(), "box1".into()),
    ];
    s.working_dir = Some("/srv/app".into());
    let (ctl, status) = run(&exec, s).await;
    assert!(status.success(), "{status}");
    assert_eq!(stdout_of(&exec, &id).await, "hello from /srv/app on box1\n");
    remove(&exec, ctl.as_ref()).await;
}

#[tokio::test]
async fn missing_command_fails_start_with_docker_wording() {
    let Some((_d, exec)) = executor().await else {
        return;
    };
    let id = unique("nocmd");
    let ctl = exec.controller(spec(&id, &["nosuchcmd", "x"])).unwrap();
    ctl.prepare().await.expect("prepare");
    let err = ctl.start().await.expect_err("start must fail");
    let ExecError::StartFailed { message, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(
        message.contains("\"nosuchcmd\": executable file not found in $PATH"),
        "{message}"
    );
    let status = ctl.wait().await.expect("wait");
    assert_eq!(status.code, Some(127), "{status:?}");
    assert!(!status.success());
    assert!(status
        .error
        .is_some_and(|e| e.contains("executable file not found")));
    remove(&exec, ctl.as_ref()).await;
}

#[tokio::test]
async fn missing_image_is_a_clear_permanent_error() {
    let Some((_d, exec)) = executor().await else {
        return;
    };
    let id = unique("noimage");
    let mut s = spec(&id, &["true"]);
    s.image = "swarm-test/does-not-exist:never".into();
    let ctl = exec.controller(s).unwrap();
    let err = ctl.prepare().await.expect_err("prepare must fail");
    assert!(!err.is_temporary(), "{err:?}");
    assert!(
        err.to_string().contains(
            "image swarm-test/does-not-exist:never not found locally and could not be pulled"
        ),
        "{err}"
    );
    remove(&exec, ctl.as_ref()).await;
}

#[tokio::test]
async fn logs_split_streams_tail_and_follow() {
    let Some((_d, exec)) = executor().await else {
        return;
    };
    let id = unique("logs");
    let (ctl, status) = run(
        &exec,
        sh(&id, "echo one; echo two; echo err >&2; printf 'no newline'"),
    )
    .await;
    assert!(status.success());
    let all = lines(&exec, &id, LogOptions::default()).await;
    let out: Vec<_> = all
        .iter()
        .filter(|(s, _)| *s == LogStream::Stdout)
        .map(|(_, l)| l.as_str())
        .collect();
    assert_eq!(out, ["one", "two", "no newline"]);
    assert!(all.contains(&(LogStream::Stderr, "err".into())));
    let tail = lines(
        &exec,
        &id,
        LogOptions {
            tail: Some(1),
            follow: false,
        },
    )
    .await;
    assert_eq!(tail.len(), 1, "{tail:?}");
    remove(&exec, ctl.as_ref()).await;

    // follow: lines arrive while the task runs, the stream ends when it exits
    let id = unique("follow");
    let ctl = exec
        .controller(sh(&id, "for i in 1 2 3; do echo line$i; sleep 0.2; done"))
        .unwrap();
    ctl.prepare().await.unwrap();
    ctl.start().await.unwrap();
    let followed = lines(
        &exec,
        &id,
        LogOptions {
            tail: None,
            follow: true,
        },
    )
    .await;
    let texts: Vec<_> = followed.iter().map(|(_, l)| l.as_str()).collect();
    assert_eq!(texts, ["line1", "line2", "line3"]);
    assert!(ctl.wait().await.unwrap().success());
    remove(&exec, ctl.as_ref()).await;
    assert!(matches!(
        exec.logs(&id, LogOptions::default()).await,
        Err(ExecError::NotFound(_))
    ));
}

#[tokio::test]
async fn shutdown_sends_the_stop_signal_then_kills_after_grace() {
    let Some((_d, exec)) = executor().await else {
        return;
    };
    // The stop signal reaches the task, which handles it.
    let id = unique("stopsig");
    let mut s = sh(
        &id,
        "trap 'echo got USR1; exit 7' USR1; echo ready; while true; do sleep 0.1; done",
    );
    s.stop_signal = Some("USR1".into());
    let ctl = exec.controller(s).unwrap();
    ctl.prepare().await.unwrap();
    ctl.start().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !stdout_of(&exec, &id).await.contains("ready") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ctl.shutdown().await.expect("shutdown");
    assert_eq!(ctl.wait().await.unwrap(), ExitStatus::exited(7));
    assert!(stdout_of(&exec, &id).await.contains("got USR1"));
    remove(&exec, ctl.as_ref()).await;

    // A task ignoring it (pid 1 without a handler) is killed once the grace period is over.
    let id = unique("grace");
    let mut s = spec(&id, &["sleep", "300"]);
    s.stop_grace_period = Duration::from_secs(1);
    let ctl = exec.controller(s).unwrap();
    ctl.prepare().await.unwrap();
    ctl.start().await.unwrap();
    assert_eq!(ctl.inspect().await.unwrap(), RuntimeState::Running);
    let t0 = Instant::now();
    ctl.shutdown().await.expect("shutdown");
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(900), "{took:?}");
    assert!(took < Duration::from_secs(15), "{took:?}");
    assert_eq!(ctl.wait().await.unwrap(), ExitStatus::exited(137));
    ctl.shutdown().await.expect("shutdown of an exited task");
    remove(&exec, ctl.as_ref()).await;
}

#[tokio::test]
async fn secrets_and_configs_are_mounted_read_only_and_removed() {
    let Some((_d, exec)) = executor().await else {
        return;
    };
    let id = unique("secrets");
    let mut s = sh(
        &id,
        "cat /run/secrets/db_pass; echo; cat /etc/app.conf; echo; \
         echo x > /run/secrets/db_pass 2>/dev/null && echo WRITABLE; true",
    );
    s.secrets = vec![FileMount {
        target: "db_pass".into(),
        data: b"hunter2".to_vec(),
        uid: 0,
        gid: 0,
        mode: 0o400,
    }];
    s.configs = vec![FileMount {
        target: "/etc/app.conf".into(),
        data: b"port=80".to_vec(),
        uid: 0,
        gid: 0,
        mode: 0o444,
    }];
    let ctl = exec.controller(s).unwrap();
    ctl.prepare().await.unwrap();
    let secrets_dir = if nix::unistd::geteuid().is_root() {
        exec.root().join(&id).join("secrets")
    } else {
        std::path::PathBuf::from(format!(
            "/dev/shm/swarm-docker-{}/{id}",
            nix::unistd::geteuid()
        ))
    };
    let fs = nix::sys::statfs::statfs(&secrets_dir).expect("statfs");
    assert_eq!(fs.filesystem_type(), nix::sys::statfs::TMPFS_MAGIC);
    ctl.start().await.unwrap();
    assert!(ctl.wait().await.unwrap().success());
    assert_eq!(stdout_of(&exec, &id).await, "hunter2\nport=80\n");
    remove(&exec, ctl.as_ref()).await;
    assert!(!secrets_dir.exists());
}

#[tokio::test]
async fn running_task_is_readopted_by_a_new_executor() {
    let Some((dir, exec)) = executor().await else {
        return;
    };
    let id = unique("adopt");
    let mut s = spec(&id, &["sleep", "300"]);
    s.stop_grace_period = Duration::from_secs(1);
    let ctl = exec.controller(s).unwrap();
    ctl.prepare().await.unwrap();
    ctl.start().await.unwrap();
    drop(ctl);
    drop(exec);

    let again = DockerExecutor::connect(dir.path().join("docker"))
        .await
        .expect("reconnect");
    let found = again.list().await.expect("list");
    let info = found.iter().find(|t| t.task_id == id).expect("task listed");
    assert_eq!(info.task_name, format!("svc.1.{id}"));
    assert_eq!(info.state, RuntimeState::Running);
    let ctl = again.adopt(&id).await.expect("adopt");
    assert_eq!(ctl.inspect().await.unwrap(), RuntimeState::Running);
    ctl.terminate().await.expect("terminate");
    assert_eq!(ctl.wait().await.unwrap(), ExitStatus::exited(137));
    let listed = again.list().await.unwrap();
    let info = listed.iter().find(|t| t.task_id == id).unwrap();
    assert_eq!(info.state, RuntimeState::Exited(ExitStatus::exited(137)));
    remove(&again, ctl.as_ref()).await;
    assert!(!again.list().await.unwrap().iter().any(|t| t.task_id == id));
    assert!(matches!(
        again.adopt(&id).await.err(),
        Some(ExecError::NotFound(_))
    ));
}

/// Two nodes sharing one daemon each list only their own containers, an exited one with its exit status, and
/// the container carries the labels of its spec.
#[tokio::test]
async fn list_sees_only_this_nodes_containers_with_their_state() {
    let Some((_d, exec)) = executor().await else {
        return;
    };
    let Some((_d2, other)) = executor().await else {
        return;
    };
    let id = unique("mine");
    let mut s = sh(&id, "exit 4");
    s.labels
        .insert("com.docker.stack.namespace".into(), "demo".into());
    let (ctl, status) = run(&exec, s).await;
    assert_eq!(status, ExitStatus::exited(4));
    for _ in 0..2 {
        // the second list answers from what the first learned
        let mine = exec.list().await.expect("list");
        let found: Vec<_> = mine.iter().filter(|t| t.task_id == id).collect();
        assert_eq!(found.len(), 1, "{mine:?}");
        assert_eq!(found[0].state, RuntimeState::Exited(ExitStatus::exited(4)));
    }
    let theirs = other.list().await.expect("list");
    assert!(theirs.iter().all(|t| t.task_id != id), "{theirs:?}");
    let info = exec
        .client()
        .inspect_container(&container_name(&id), None::<InspectContainerOptions>)
        .await
        .expect("inspect");
    let labels = info.config.and_then(|c| c.labels).unwrap_or_default();
    assert_eq!(
        labels.get("com.docker.stack.namespace").map(String::as_str),
        Some("demo")
    );
    remove(&exec, ctl.as_ref()).await;
}
