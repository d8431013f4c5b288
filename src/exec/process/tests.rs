//! Tests of the process executor with real processes. The shim runs as this test binary
//! re-executed with a filter selecting only `shim_entry`, which becomes the shim when
//! `SWARM_SHIM_TASK_DIR` is set (the same entry point `swarmd __shim` uses).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;

use super::layout::{proc_start_time, ProcRecord, TaskDir};
use super::*;
use crate::exec::{CheckResult, ExitStatus, FileMount, LogStream, RuntimeState};

/// Becomes the shim when started by the executor under test; a no-op in a normal test run.
#[test]
fn shim_entry() {
    if let Some(dir) = std::env::var_os(SHIM_ENV) {
        shim_main(Path::new(&dir));
    }
}

pub(super) fn test_shim() -> ShimCommand {
    ShimCommand {
        program: std::env::current_exe().expect("test binary path"),
        args: [
            "--exact",
            "exec::process::tests::shim_entry",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ]
        .iter()
        .map(Into::into)
        .collect(),
    }
}

pub(super) fn executor() -> (tempfile::TempDir, ProcessExecutor) {
    let dir = tempfile::tempdir().expect("tempdir");
    let exec = ProcessExecutor::new(dir.path().join("tasks"), test_shim());
    (dir, exec)
}

pub(super) fn spec(id: &str, argv: &[&str]) -> ProcessSpec {
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
        image: "busybox".into(),
        read_only: false,
        init: false,
        limits: Default::default(),
        cap_add: Vec::new(),
        cap_drop: Vec::new(),
        ports: Vec::new(),
        labels: Default::default(),
    }
}

pub(super) async fn run(
    exec: &ProcessExecutor,
    spec: ProcessSpec,
) -> (Box<dyn Controller>, ExitStatus) {
    let ctl = exec.controller(spec).expect("controller");
    ctl.prepare().await.expect("prepare");
    ctl.start().await.expect("start");
    let status = ctl.wait().await.expect("wait");
    (ctl, status)
}

pub(super) fn task_dir(exec: &ProcessExecutor, id: &str) -> PathBuf {
    exec.root().join(id)
}

pub(super) fn stdout_of(exec: &ProcessExecutor, id: &str) -> String {
    std::fs::read_to_string(task_dir(exec, id).join("stdout.log")).expect("stdout.log")
}

pub(super) fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[tokio::test]
async fn exit_codes_are_reported() {
    let (_tmp, exec) = executor();
    let (_, ok) = run(&exec, spec("t0", &["true"])).await;
    assert_eq!(ok, ExitStatus::exited(0));
    let (ctl, three) = run(&exec, spec("t3", &["sh", "-c", "exit 3"])).await;
    assert_eq!(three, ExitStatus::exited(3));
    assert_eq!(
        ctl.inspect().await.expect("inspect"),
        RuntimeState::Exited(ExitStatus::exited(3))
    );
    ctl.remove().await.expect("remove");
    assert!(!task_dir(&exec, "t3").exists());
    ctl.remove().await.expect("remove is idempotent");
}

#[tokio::test]
async fn missing_command_fails_start_with_docker_wording() {
    let (_tmp, exec) = executor();
    let ctl = exec
        .controller(spec("nf", &["nosuchcmd", "x"]))
        .expect("controller");
    ctl.prepare().await.expect("prepare");
    let err = ctl.start().await.expect_err("start must fail");
    let want = "exec: \"nosuchcmd\": executable file not found in $PATH";
    assert!(
        matches!(&err, ExecError::StartFailed { message, .. } if message == want),
        "{err}"
    );
    assert!(!err.is_temporary());
    let status = ctl.wait().await.expect("wait");
    assert_eq!(status, ExitStatus::failed(Some(127), want));
    assert!(!status.success());
    assert!(ctl.start().await.is_err(), "a failed start stays failed");
}

#[tokio::test]
async fn env_and_working_dir_are_honored() {
    let (tmp, exec) = executor();
    let wd = tmp.path().join("work/dir");
    let mut s = spec("env", &["sh", "-c", "echo \"$FOO|$PATH|$HOME\"; pwd"]);
    s.env = vec![("FOO".into(), "bar".into())];
    s.working_dir = Some(wd.display().to_string());
    if !is_root() {
        std::fs::create_dir_all(&wd).expect("workdir");
    }
    let (_, status) = run(&exec, s).await;
    assert_eq!(status, ExitStatus::exited(0));
    let want = format!("bar|{}|\n{}\n", lookup::DEFAULT_PATH, wd.display());
    assert_eq!(stdout_of(&exec, "env"), want);
}

#[tokio::test]
async fn hostname_is_the_tasks_own_when_root() {
    let (_tmp, exec) = executor();
    let mut s = spec("host", &["sh", "-c", "hostname; echo \"$HOSTNAME\""]);
    s.env = vec![("HOSTNAME".into(), "web-7".into())];
    let (_, status) = run(&exec, s).await;
    assert_eq!(status, ExitStatus::exited(0));
    let out = stdout_of(&exec, "host");
    if is_root() {
        assert_eq!(out, "web-7\nweb-7\n", "own UTS namespace");
        let host = nix::unistd::gethostname().unwrap();
        assert_ne!(
            host.to_string_lossy(),
            "web-7",
            "the host's name is untouched"
        );
    } else {
        assert!(out.ends_with("web-7\n"), "{out}");
    }
}

#[tokio::test]
async fn output_lands_in_log_files_and_logs_reads_them() {
    let (_tmp, exec) = executor();
    let (_, status) = run(
        &exec,
        spec("log", &["sh", "-c", "echo one; echo two; echo err >&2"]),
    )
    .await;
    assert!(status.success());
    assert_eq!(stdout_of(&exec, "log"), "one\ntwo\n");
    let opts = LogOptions {
        tail: Some(1),
        follow: false,
    };
    let lines: Vec<_> = exec.logs("log", opts).await.expect("logs").collect().await;
    let lines: Vec<_> = lines
        .into_iter()
        .map(|l| l.expect("line"))
        .map(|l| (l.stream, l.line))
        .collect();
    assert_eq!(
        lines,
        [
            (LogStream::Stdout, "two".to_string()),
            (LogStream::Stderr, "err".to_string())
        ]
    );
    assert!(exec.logs("nope", opts).await.is_err());
}

#[tokio::test]
async fn follow_streams_until_exit() {
    let (_tmp, exec) = executor();
    let ctl = exec
        .controller(spec("fol", &["sh", "-c", "echo a; sleep 0.3; printf b"]))
        .expect("controller");
    ctl.prepare().await.expect("prepare");
    ctl.start().await.expect("start");
    let stream = exec
        .logs(
            "fol",
            LogOptions {
                tail: None,
                follow: true,
            },
        )
        .await
        .expect("logs");
    let lines: Vec<String> = tokio::time::timeout(
        Duration::from_secs(10),
        stream.map(|l| l.expect("line").line).collect(),
    )
    .await
    .expect("follow ends after exit");
    assert_eq!(lines, ["a", "b"]);
}

#[tokio::test]
async fn shutdown_escalates_to_sigkill_after_grace() {
    let (_tmp, exec) = executor();
    let mut s = spec("stop", &["sh", "-c", "trap '' TERM; echo ready; sleep 30"]);
    s.stop_grace_period = Duration::from_millis(300);
    let ctl = exec.controller(s).expect("controller");
    ctl.prepare().await.expect("prepare");
    ctl.start().await.expect("start");
    // The signal must not arrive before the trap is set.
    let deadline = Instant::now() + Duration::from_secs(10);
    while stdout_of(&exec, "stop").is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let t0 = Instant::now();
    ctl.shutdown().await.expect("shutdown");
    assert!(t0.elapsed() >= Duration::from_millis(300));
    assert!(t0.elapsed() < Duration::from_secs(10));
    assert_eq!(ctl.wait().await.expect("wait"), ExitStatus::signaled(9));
    ctl.shutdown()
        .await
        .expect("shutdown of an exited task is a no-op");
}

#[tokio::test]
async fn shutdown_uses_the_stop_signal() {
    let (_tmp, exec) = executor();
    let mut s = spec("usr1", &["sleep", "30"]);
    s.stop_signal = Some("USR1".into());
    let ctl = exec.controller(s).expect("controller");
    ctl.prepare().await.expect("prepare");
    ctl.start().await.expect("start");
    let t0 = Instant::now();
    ctl.shutdown().await.expect("shutdown");
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "no need to wait the grace period"
    );
    assert_eq!(
        ctl.wait().await.expect("wait"),
        ExitStatus::signaled(nix::sys::signal::Signal::SIGUSR1 as i32)
    );
    let mut bad = spec("bad", &["true"]);
    bad.stop_signal = Some("SIGNOPE".into());
    assert!(matches!(
        exec.controller(bad),
        Err(ExecError::InvalidSpec { .. })
    ));
}

fn wait_dead(pid: i32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if proc_start_time(pid).is_none() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Host pids of live processes whose command line contains `marker` (pids printed inside a
/// task's PID namespace mean nothing on the host).
pub(super) fn pids_with(marker: &str) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker))
                && proc_start_time(*pid).is_some()
        })
        .collect()
}

/// Waits until no process carries `marker`.
pub(super) fn all_gone(marker: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if pids_with(marker).is_empty() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[tokio::test]
async fn children_of_the_task_die_with_it() {
    let (_tmp, exec) = executor();
    let (_, status) = run(
        &exec,
        spec("grp", &["sh", "-c", "sleep 30.0101 & echo started; exit 0"]),
    )
    .await;
    assert_eq!(status, ExitStatus::exited(0));
    assert_eq!(stdout_of(&exec, "grp"), "started\n");
    assert!(all_gone("30.0101"), "a background child survived its task");

    let ctl = exec
        .controller(spec(
            "grp2",
            &["sh", "-c", "sleep 30.0102 & echo started; wait"],
        ))
        .expect("controller");
    ctl.prepare().await.expect("prepare");
    ctl.start().await.expect("start");
    let deadline = Instant::now() + Duration::from_secs(5);
    while stdout_of(&exec, "grp2").is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!pids_with("30.0102").is_empty(), "the child runs");
    ctl.terminate().await.expect("terminate");
    assert!(all_gone("30.0102"), "a background child survived terminate");
}

#[tokio::test]
async fn secrets_and_configs_are_visible_and_removed() {
    let (tmp, exec) = executor();
    let host_conf = tmp.path().join("app.conf");
    std::fs::write(&host_conf, "host version").expect("host file");
    let run_secrets_existed = Path::new("/run/secrets").exists();
    let script = "cat \"$SWARM_SECRETS_DIR/db_pass\"; echo; stat -c %a \"$SWARM_SECRETS_DIR/db_pass\"; \
                  cat \"$SWARM_CONFIGS_DIR/app.conf\"; echo; \
                  if [ \"$(id -u)\" = 0 ]; then cat /run/secrets/db_pass; echo; cat \"$1\"; echo; fi";
    let mut s = spec(
        "sec",
        &["sh", "-c", script, "sh", &host_conf.display().to_string()],
    );
    s.secrets = vec![FileMount {
        target: "db_pass".into(),
        data: b"hunter2".to_vec(),
        uid: 0,
        gid: 0,
        mode: 0o440,
    }];
    s.configs = vec![
        FileMount {
            target: "app.conf".into(),
            data: b"k=v".to_vec(),
            uid: 0,
            gid: 0,
            mode: 0o444,
        },
        FileMount {
            target: host_conf.display().to_string(),
            data: b"task version".to_vec(),
            uid: 0,
            gid: 0,
            mode: 0o444,
        },
    ];
    let (ctl, status) = run(&exec, s).await;
    assert_eq!(
        status,
        ExitStatus::exited(0),
        "{}",
        std::fs::read_to_string(task_dir(&exec, "sec").join("stderr.log")).unwrap_or_default()
    );
    let mut want = "hunter2\n440\nk=v\n".to_string();
    if is_root() {
        want.push_str("hunter2\ntask version\n");
    }
    assert_eq!(stdout_of(&exec, "sec"), want);
    assert_eq!(
        std::fs::read_to_string(&host_conf).expect("host file"),
        "host version",
        "host untouched"
    );
    assert_eq!(
        Path::new("/run/secrets").exists(),
        run_secrets_existed,
        "host /run untouched"
    );
    let secrets_dir = task_dir(&exec, "sec").join("secrets");
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let on_tmpfs = if is_root() {
        mountinfo.contains(&format!(" {} ", secrets_dir.display()))
    } else {
        std::fs::read_link(&secrets_dir).is_ok_and(|t| t.starts_with("/dev/shm"))
    };
    assert!(on_tmpfs, "secrets must live on tmpfs");
    let shm_target = std::fs::read_link(&secrets_dir).ok();
    ctl.remove().await.expect("remove");
    assert!(!task_dir(&exec, "sec").exists());
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    assert!(
        !mountinfo.contains(&secrets_dir.display().to_string()),
        "tmpfs unmounted"
    );
    if let Some(t) = shm_target {
        assert!(!t.exists());
    }
}

#[tokio::test]
async fn user_is_switched_when_root() {
    let (_tmp, exec) = executor();
    let mut s = spec("usr", &["id", "-u"]);
    s.user = Some("nobody".into());
    let ctl = exec.controller(s).expect("controller");
    ctl.prepare().await.expect("prepare");
    if is_root() {
        ctl.start().await.expect("start");
        assert!(ctl.wait().await.expect("wait").success());
        assert_eq!(stdout_of(&exec, "usr"), "65534\n");
    } else {
        assert!(matches!(
            ctl.start().await,
            Err(ExecError::StartFailed { .. })
        ));
    }
    let mut s = spec("nouser", &["true"]);
    s.user = Some("no-such-user".into());
    let ctl = exec.controller(s).expect("controller");
    ctl.prepare().await.expect("prepare");
    let err = ctl.start().await.expect_err("unknown user");
    assert!(
        err.to_string().contains("unable to find user no-such-user"),
        "{err}"
    );
}

#[tokio::test]
async fn running_task_is_readopted_after_daemon_restart() {
    let (tmp, exec) = executor();
    let ctl = exec
        .controller(spec("adopt", &["sleep", "30"]))
        .expect("controller");
    ctl.prepare().await.expect("prepare");
    ctl.start().await.expect("start");
    drop(ctl);
    drop(exec); // the daemon "crashes": nothing of the task lives in memory

    let exec = ProcessExecutor::new(tmp.path().join("tasks"), test_shim());
    let listed = exec.list().await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].task_id.as_str(), &listed[0].state),
        ("adopt", &RuntimeState::Running)
    );
    assert_eq!(listed[0].task_name, "svc.1.adopt");
    let ctl = exec.adopt("adopt").await.expect("adopt");
    assert_eq!(ctl.inspect().await.expect("inspect"), RuntimeState::Running);
    assert!(ctl.prepare().await.is_ok(), "already prepared");
    assert!(
        matches!(ctl.remove().await, Err(ExecError::InvalidState { .. })),
        "cannot remove a running task"
    );
    ctl.terminate().await.expect("terminate");
    assert_eq!(ctl.wait().await.expect("wait"), ExitStatus::signaled(9));
    ctl.remove().await.expect("remove");
    assert!(!task_dir(&exec, "adopt").exists());
    assert!(exec.list().await.expect("list").is_empty());
    assert!(matches!(
        exec.adopt("adopt").await,
        Err(ExecError::NotFound(_))
    ));
}

#[tokio::test]
async fn vanished_task_is_reported_lost() {
    let (_tmp, exec) = executor();
    let ctl = exec
        .controller(spec("lost", &["sleep", "30"]))
        .expect("controller");
    ctl.prepare().await.expect("prepare");
    ctl.start().await.expect("start");
    let dir = TaskDir::new(exec.root(), "lost").expect("dir");
    for file in [dir.shim(), dir.pid()] {
        let rec: ProcRecord = layout::read_json(&file).expect("read").expect("record");
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(rec.pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        assert!(wait_dead(rec.pid));
    }
    let status = tokio::time::timeout(Duration::from_secs(10), ctl.wait())
        .await
        .expect("wait ends")
        .expect("wait");
    assert_eq!(status, ExitStatus::failed(None, LOST_MESSAGE));
    ctl.remove().await.expect("remove");
}

#[tokio::test]
async fn unprivileged_secrets_live_in_dev_shm() {
    if !Path::new("/dev/shm").is_dir() {
        return;
    }
    let (_tmp, exec) = executor();
    let exec = exec.unprivileged();
    let mut s = spec("shm", &["sh", "-c", "cat \"$SWARM_SECRETS_DIR/a/b\""]);
    s.secrets = vec![FileMount {
        target: "/run/secrets/a/b".into(),
        data: b"s3cret".to_vec(),
        uid: 0,
        gid: 0,
        mode: 0o400,
    }];
    let (ctl, status) = run(&exec, s).await;
    assert!(status.success());
    assert_eq!(stdout_of(&exec, "shm"), "s3cret");
    let target =
        std::fs::read_link(task_dir(&exec, "shm").join("secrets")).expect("secrets is a link");
    assert!(target.starts_with("/dev/shm"));
    assert!(target.join("a/b").is_file());
    ctl.remove().await.expect("remove");
    assert!(!target.exists(), "plaintext removed from /dev/shm");
    assert!(!task_dir(&exec, "shm").exists());
}

/// Starts a long-running task and waits until its process is recorded.
pub(super) async fn running(exec: &ProcessExecutor, spec: ProcessSpec) -> Box<dyn Controller> {
    let ctl = exec.controller(spec).expect("controller");
    ctl.prepare().await.expect("prepare");
    ctl.start().await.expect("start");
    ctl
}

fn argv(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn health_checks_run_in_the_task_context() {
    let (tmp, exec) = executor();
    let flag = tmp.path().join(format!("healthy-{}", std::process::id()));
    let work = tmp.path().join("work");
    std::fs::create_dir(&work).expect("work dir");
    let mut s = spec("hc", &["sleep", "30"]);
    s.env = vec![("FOO".into(), "bar".into())];
    s.working_dir = Some(work.display().to_string());
    let ctl = running(&exec, s).await;
    let t = Duration::from_secs(5);
    let probe = format!("test -f {}", flag.display());
    let check = argv(&["/bin/sh", "-c", &probe]);
    let r = ctl.exec_check(&check, t).await.expect("check");
    assert!(matches!(r, CheckResult::Exited { code: 1, .. }), "{r:?}");
    std::fs::write(&flag, "").expect("flag");
    assert!(ctl.exec_check(&check, t).await.expect("check").passed());
    let env = argv(&["sh", "-c", "echo \"$FOO $(pwd)\"; echo oops >&2; exit 3"]);
    let r = ctl.exec_check(&env, t).await.expect("check");
    let want = format!("bar {}\noops\n", work.display());
    assert_eq!(
        r,
        CheckResult::Exited {
            code: 3,
            output: want
        }
    );
    let r = ctl
        .exec_check(&argv(&["nosuchcmd"]), t)
        .await
        .expect("check");
    assert!(
        matches!(&r, CheckResult::Exited { code: 127, output } if output.contains("executable file not found")),
        "{r:?}"
    );
    let started = Instant::now();
    let r = ctl
        .exec_check(&argv(&["sleep", "10"]), Duration::from_millis(300))
        .await
        .expect("check");
    assert_eq!(
        r,
        CheckResult::TimedOut {
            timeout: Duration::from_millis(300)
        }
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "killed at its timeout"
    );
    ctl.terminate().await.expect("terminate");
    assert!(matches!(
        ctl.exec_check(&check, t).await,
        Err(ExecError::InvalidState { .. })
    ));
}

#[tokio::test]
async fn health_checks_see_the_tasks_secrets_and_user() {
    let (_tmp, exec) = executor();
    let mut s = spec("hcs", &["sleep", "30"]);
    s.secrets = vec![FileMount {
        target: "x".into(),
        data: b"hunter2".to_vec(),
        uid: 65534,
        gid: 65534,
        mode: 0o400,
    }];
    if is_root() {
        s.user = Some("nobody".into());
    }
    let ctl = running(&exec, s).await;
    let t = Duration::from_secs(5);
    let script = if is_root() {
        "cat /run/secrets/x; echo; id -u"
    } else {
        "cat \"$SWARM_SECRETS_DIR/x\"; echo"
    };
    let r = ctl
        .exec_check(&argv(&["sh", "-c", script]), t)
        .await
        .expect("check");
    let want = if is_root() {
        "hunter2\n65534\n"
    } else {
        "hunter2\n"
    };
    assert_eq!(
        r,
        CheckResult::Exited {
            code: 0,
            output: want.into()
        }
    );
    ctl.terminate().await.expect("terminate");
    ctl.remove().await.expect("remove");
}
