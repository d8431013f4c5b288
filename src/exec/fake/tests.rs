//! Tests of the fake executor.

use super::*;

fn spec(id: &str, image: &str) -> ProcessSpec {
    ProcessSpec {
        task_id: id.into(),
        task_name: format!("{image}.1.{id}"),
        argv: vec!["run".into()],
        env: Vec::new(),
        working_dir: None,
        user: None,
        stop_signal: None,
        stop_grace_period: Duration::from_secs(10),
        secrets: Vec::new(),
        configs: Vec::new(),
        image: image.into(),
        read_only: false,
        init: false,
        limits: Default::default(),
        cap_add: Vec::new(),
        cap_drop: Vec::new(),
        ports: Vec::new(),
        labels: Default::default(),
    }
}

async fn started(exec: &FakeExecutor, id: &str, image: &str) -> Box<dyn Controller> {
    let c = exec.controller(spec(id, image)).expect("controller");
    c.prepare().await.expect("prepare");
    c.start().await.expect("start");
    c
}

#[tokio::test]
async fn scripted_exit_happens_when_time_is_advanced() {
    let exec = FakeExecutor::new();
    exec.script(
        Match::Image("job".into()),
        Outcome::Exit {
            code: 3,
            after: Duration::from_secs(5),
        },
    );
    let job = started(&exec, "a", "job").await;
    let web = started(&exec, "b", "web").await;
    exec.advance(Duration::from_secs(4));
    assert_eq!(job.inspect().await.expect("inspect"), RuntimeState::Running);
    let waiter = tokio::spawn(async move { job.wait().await });
    tokio::task::yield_now().await;
    exec.advance(Duration::from_secs(1));
    assert_eq!(
        waiter.await.expect("join").expect("wait"),
        ExitStatus::exited(3)
    );
    assert_eq!(
        web.inspect().await.expect("inspect"),
        RuntimeState::Running,
        "default runs forever"
    );
    web.shutdown().await.expect("shutdown");
    assert_eq!(web.wait().await.expect("wait"), ExitStatus::signaled(15));
}

#[tokio::test]
async fn start_and_prepare_failures() {
    let exec = FakeExecutor::new();
    exec.script(
        Match::TaskNamePrefix("bad.".into()),
        Outcome::FailStart("exec: \"x\": executable file not found in $PATH".into()),
    );
    exec.script(
        Match::Image("flaky".into()),
        Outcome::FailPrepare {
            message: "pull failed".into(),
            temporary: true,
        },
    );
    let c = exec.controller(spec("a", "bad")).expect("controller");
    c.prepare().await.expect("prepare");
    assert!(matches!(
        c.start().await,
        Err(ExecError::StartFailed { .. })
    ));
    let st = c.wait().await.expect("wait");
    assert_eq!(st.code, Some(127));
    let f = exec.controller(spec("b", "flaky")).expect("controller");
    assert!(f.prepare().await.expect_err("prepare fails").is_temporary());
    assert!(matches!(
        f.start().await,
        Err(ExecError::InvalidState { .. })
    ));
}

#[tokio::test]
async fn ignored_stop_takes_the_grace_period_in_fake_time() {
    let exec = FakeExecutor::new();
    exec.script(Match::Any, Outcome::IgnoreStop);
    let c: Arc<dyn Controller> = Arc::from(started(&exec, "a", "web").await);
    let c2 = c.clone();
    let stopping = tokio::spawn(async move { c2.shutdown().await });
    tokio::task::yield_now().await;
    exec.advance(Duration::from_secs(9));
    assert_eq!(c.inspect().await.expect("inspect"), RuntimeState::Running);
    exec.advance(Duration::from_secs(1));
    stopping.await.expect("join").expect("shutdown");
    assert_eq!(c.wait().await.expect("wait"), ExitStatus::signaled(9));
}

#[tokio::test]
async fn health_checks_follow_their_script() {
    let exec = FakeExecutor::new();
    exec.script_health(Match::Image("slow".into()), HealthScript::FailFirst(1));
    exec.script_health(Match::Image("hung".into()), HealthScript::Hang);
    let argv = vec!["CMD".to_string()];
    let t = Duration::from_secs(2);
    let slow = started(&exec, "a", "slow").await;
    assert!(!slow.exec_check(&argv, t).await.expect("check").passed());
    assert!(slow.exec_check(&argv, t).await.expect("check").passed());
    exec.set_health("a", HealthScript::Fail).expect("set");
    assert!(!slow.exec_check(&argv, t).await.expect("check").passed());
    assert_eq!(exec.checks("a").len(), 3);
    let hung = started(&exec, "b", "hung").await;
    let r = hung.exec_check(&argv, t).await.expect("check");
    assert_eq!(r, CheckResult::TimedOut { timeout: t });
    assert!(r.output().contains("exceeded timeout"));
    let web = started(&exec, "c", "web").await;
    assert!(web.exec_check(&argv, t).await.expect("check").passed());
    web.terminate().await.expect("kill");
    assert!(matches!(
        web.exec_check(&argv, t).await,
        Err(ExecError::InvalidState { .. })
    ));
}

#[tokio::test]
async fn adopt_list_remove_and_unavailable() {
    let exec = FakeExecutor::new();
    let c = started(&exec, "a", "web").await;
    exec.write_log("a", LogStream::Stdout, "hello")
        .expect("log");
    drop(c);
    let listed = exec.list().await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].state, RuntimeState::Running);
    let c = exec.adopt("a").await.expect("adopt");
    assert!(matches!(
        c.remove().await,
        Err(ExecError::InvalidState { .. })
    ));
    exec.set_unavailable(true);
    assert!(c.terminate().await.expect_err("unavailable").is_temporary());
    exec.set_unavailable(false);
    use futures::StreamExt;
    let logs: Vec<_> = exec
        .logs("a", LogOptions::default())
        .await
        .expect("logs")
        .collect()
        .await;
    assert_eq!(logs.len(), 1);
    exec.exit_task("a", ExitStatus::exited(137)).expect("crash");
    assert_eq!(c.wait().await.expect("wait"), ExitStatus::exited(137));
    c.remove().await.expect("remove");
    assert!(exec.list().await.expect("list").is_empty());
    assert!(exec.adopt("a").await.is_err());
}
