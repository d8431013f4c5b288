//! GitOps and CI with a real `swarmd`: `swarmctl stack watch` over a temp directory and over a local git
//! repository (`file://`, commits made here, a signed webhook), and `stack deploy`'s exit codes and JSON events.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::cluster::{bin, running, wait_for, Swarmd};

/// A `swarmctl stack watch` in the background, its output in a file; killed (by pid) on drop.
struct Watch {
    child: Child,
    out: PathBuf,
}

impl Watch {
    fn start(d: &Swarmd, args: &[&str], out_dir: &Path) -> Watch {
        let out = out_dir.join(format!("watch-{}.log", std::process::id()));
        let log = std::fs::File::create(&out).unwrap();
        let err = log.try_clone().unwrap();
        let child = Command::new(bin("swarmctl"))
            .env("SWARM_HOST", d.host())
            .args(["stack", "watch"])
            .args(args)
            .stdout(log)
            .stderr(err)
            .spawn()
            .expect("start swarmctl stack watch");
        Watch { child, out }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Waits until the watcher printed a line containing `what`.
    fn wait_line(&self, secs: u64, what: &str) -> String {
        wait_for(secs, &format!("watcher line {what:?}"), || {
            let out = self.output();
            out.lines().find(|l| l.contains(what)).map(str::to_string)
        })
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The stack's row of `stack ls --format json`.
fn stack_row(d: &Swarmd, name: &str) -> Option<Value> {
    let out = d.ctl_ok(&["stack", "ls", "--format", "json"]);
    out.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["Name"] == name)
}

/// The spec'd replicas of a service.
fn replicas(d: &Swarmd, service: &str) -> Option<u64> {
    let out = d.ctl(&["service", "inspect", service]);
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    v[0]["spec"]["mode"]["Replicated"]["replicas"].as_u64()
}

fn web(replicas: u32, command: &str) -> String {
    format!(
        r#"services:
  web:
    image: web:1
    command: ["sh", "-c", "{command}"]
    stop_grace_period: 1s
    deploy:
      replicas: {replicas}
      update_config:
        monitor: 2s
        failure_action: rollback
      restart_policy:
        delay: 200ms
"#
    )
}

#[test]
fn a_watched_directory_is_deployed_scaled_reported_healed_and_pruned() {
    let d = Swarmd::start();
    let dir = tempfile::tempdir().unwrap();
    let stacks = dir.path().join("stacks");
    std::fs::create_dir(&stacks).unwrap();
    // a stack deployed by hand: never pruned
    let manual = dir.path().join("manual.yml");
    std::fs::write(&manual, web(1, "exec sleep 300")).unwrap();
    d.ctl_ok(&[
        "stack",
        "deploy",
        "--detach",
        "-c",
        manual.to_str().unwrap(),
        "manual",
    ]);

    let w = Watch::start(
        &d,
        &["--prune", "--interval", "1s", stacks.to_str().unwrap()],
        dir.path(),
    );
    w.wait_line(20, "watching dir:");

    // add a file: deployed, Synced, its content hash as REVISION
    let file = stacks.join("shop.yml");
    std::fs::write(&file, web(1, "exec sleep 300")).unwrap();
    let row = wait_for(30, "shop deployed and Synced", || {
        stack_row(&d, "shop").filter(|r| r["Sync"] == "Synced" && r["Health"] == "Healthy")
    });
    assert!(
        row["SourceRevision"]
            .as_str()
            .unwrap()
            .starts_with("sha256:"),
        "{row}"
    );
    assert_eq!(
        row["Source"],
        file.canonicalize().unwrap().display().to_string()
    );
    assert_eq!(running(&d, "shop_web"), 1);

    // edit replicas: scaled
    std::fs::write(&file, web(2, "exec sleep 300")).unwrap();
    wait_for(30, "shop_web scaled to 2", || {
        (running(&d, "shop_web") == 2).then_some(())
    });

    // break the file: reported with file and line, the running stack untouched
    std::fs::write(
        &file,
        web(2, "exec sleep 300").replace("replicas: 2", "replicas: lots"),
    )
    .unwrap();
    let row = wait_for(30, "shop Failed", || {
        stack_row(&d, "shop").filter(|r| r["Sync"] == "Failed")
    });
    let err = row["Error"].as_str().unwrap();
    assert!(
        err.contains("shop.yml:7"),
        "the line of the bad value: {err}"
    );
    assert!(
        err.contains("services.web.deploy.replicas"),
        "the key path: {err}"
    );
    w.wait_line(10, "shop.yml:7");
    assert_eq!(replicas(&d, "shop_web"), Some(2));
    assert_eq!(running(&d, "shop_web"), 2);

    // fixed again: Synced; a manual scale is drift, reverted
    std::fs::write(&file, format!("# fixed\n{}", web(2, "exec sleep 300"))).unwrap();
    wait_for(30, "shop Synced again", || {
        stack_row(&d, "shop").filter(|r| r["Sync"] == "Synced")
    });
    d.ctl_ok(&["service", "scale", "shop_web=4"]);
    w.wait_line(30, "drift reverted");
    wait_for(30, "shop_web back to 2", || {
        (replicas(&d, "shop_web") == Some(2)).then_some(())
    });

    // stack status shows the details
    let status = d.ctl_ok(&["stack", "status", "shop", "--format", "json"]);
    let status: Value = serde_json::from_str(status.trim()).unwrap();
    assert_eq!(status["Sync"], "Synced");
    assert_eq!(status["Services"][0]["Name"], "shop_web");
    assert!(d.ctl_ok(&["stack", "ls"]).contains("Synced"));

    // delete the file with --prune: removed; the hand-deployed stack stays
    std::fs::remove_file(&file).unwrap();
    wait_for(30, "shop pruned", || {
        stack_row(&d, "shop").is_none().then_some(())
    });
    w.wait_line(10, "shop: removed");
    std::thread::sleep(Duration::from_secs(2));
    let manual = stack_row(&d, "manual").expect("a stack deployed by hand is never pruned");
    assert_eq!(manual["Sync"], "");
}

#[test]
fn without_self_heal_drift_is_reported_and_a_rolled_back_revision_is_not_retried() {
    let d = Swarmd::start();
    let dir = tempfile::tempdir().unwrap();
    let stacks = dir.path().join("stacks");
    std::fs::create_dir_all(stacks.join("api")).unwrap();
    // a folder stack: stack.yml + .env
    std::fs::write(stacks.join("api/.env"), "CMD=exec sleep 300\n").unwrap();
    let file = stacks.join("api/stack.yml");
    std::fs::write(&file, web(1, "$${CMD}").replace("$${CMD}", "${CMD}")).unwrap();
    let w = Watch::start(
        &d,
        &[
            "--no-self-heal",
            "--interval",
            "1s",
            stacks.to_str().unwrap(),
        ],
        dir.path(),
    );
    wait_for(30, "api Synced", || {
        stack_row(&d, "api").filter(|r| r["Sync"] == "Synced" && r["Health"] == "Healthy")
    });

    // scaled by hand: OutOfSync and left
    d.ctl_ok(&["service", "scale", "api_web=3"]);
    let row = wait_for(30, "api OutOfSync", || {
        stack_row(&d, "api").filter(|r| r["Sync"] == "OutOfSync")
    });
    assert!(row["Error"].as_str().unwrap().contains("replicas"), "{row}");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(replicas(&d, "api_web"), Some(3), "left as scaled");
    w.wait_line(10, "OutOfSync");

    // a crashing update: rolled back, marked Failed, not retried
    std::fs::write(&file, web(1, "exit 1")).unwrap();
    let row = wait_for(60, "api Failed after the rollback", || {
        stack_row(&d, "api").filter(|r| r["Sync"] == "Failed")
    });
    assert!(
        row["Error"].as_str().unwrap().contains("rolled back"),
        "{row}"
    );
    let deploys = row["Revision"].as_u64().unwrap();
    std::thread::sleep(Duration::from_secs(4));
    let row = stack_row(&d, "api").unwrap();
    assert_eq!(row["Sync"], "Failed");
    assert_eq!(
        row["Revision"].as_u64(),
        Some(deploys),
        "not retried while the file stays"
    );
    let out = d.ctl_ok(&["service", "ls", "--format", "json"]);
    assert!(
        !out.contains("rollback"),
        "REPLICAS carries no update state: {out}"
    );

    // the file changes: applied again
    std::fs::write(&file, web(1, "exec sleep 301")).unwrap();
    wait_for(60, "api Synced at the new revision", || {
        stack_row(&d, "api")
            .filter(|r| r["Sync"] == "Synced" && r["Revision"].as_u64() > Some(deploys))
    });
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@example.org"])
        .args(args)
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// POSTs `body` to the webhook with `signature`; the HTTP status code.
fn post(addr: &str, body: &str, signature: &str) -> u16 {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST /hook HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nX-GitHub-Event: push\r\n\
         X-Hub-Signature-256: {signature}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    reply
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_git_repository_is_applied_per_commit_and_a_signed_webhook_syncs_at_once() {
    let d = Swarmd::start();
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(repo.join("stacks")).unwrap();
    git(&repo, &["init", "--quiet", "-b", "main"]);
    std::fs::write(repo.join("stacks/shop.yml"), web(1, "exec sleep 300")).unwrap();
    std::fs::write(repo.join("stacks/blog.yml"), web(1, "exec sleep 300")).unwrap();
    std::fs::write(repo.join("README"), "stacks\n").unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "--quiet", "-m", "first"]);
    let first = git(&repo, &["rev-parse", "HEAD"]);
    let secret = dir.path().join("hook.secret");
    std::fs::write(&secret, "s3cret\n").unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let url = format!("file://{}", repo.display());
    let cache = dir.path().join("cache");
    let w = Watch::start(
        &d,
        &[
            "--git",
            &url,
            "--branch",
            "main",
            "--path",
            "stacks",
            "--interval",
            "10m",
            "--cache-dir",
            cache.to_str().unwrap(),
            "--webhook-listen",
            &addr,
            "--webhook-secret",
            secret.to_str().unwrap(),
        ],
        dir.path(),
    );
    w.wait_line(20, "webhook: listening");
    let row = wait_for(30, "shop at the first commit", || {
        stack_row(&d, "shop").filter(|r| r["Sync"] == "Synced")
    });
    assert_eq!(row["SourceRevision"], first.as_str());
    assert!(
        row["Source"].as_str().unwrap().starts_with("git:file://"),
        "{row}"
    );

    // a new commit touching shop only
    std::fs::write(repo.join("stacks/shop.yml"), web(2, "exec sleep 300")).unwrap();
    git(&repo, &["commit", "--quiet", "-am", "two shops"]);
    let second = git(&repo, &["rev-parse", "HEAD"]);
    let body = r#"{"ref":"refs/heads/main"}"#;

    // a bad signature is refused and logged; nothing syncs (the interval is 10 minutes)
    assert_eq!(post(&addr, body, "sha256=00"), 401);
    w.wait_line(10, "webhook: refused");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        stack_row(&d, "shop").unwrap()["SourceRevision"],
        first.as_str()
    );

    // a valid one syncs at once: the commit id is the REVISION; blog did not change and keeps its commit
    let good = swarm::gitops::webhook::sign(b"s3cret", body.as_bytes());
    assert_eq!(post(&addr, body, &good), 202);
    let row = wait_for(30, "shop at the second commit", || {
        stack_row(&d, "shop").filter(|r| r["SourceRevision"] == second.as_str())
    });
    assert_eq!(row["Sync"], "Synced");
    wait_for(30, "shop_web scaled to 2", || {
        (running(&d, "shop_web") == 2).then_some(())
    });
    assert_eq!(
        stack_row(&d, "blog").unwrap()["SourceRevision"],
        first.as_str()
    );
    let table = d.ctl_ok(&["stack", "ls"]);
    assert!(
        table.contains(&second[..12]),
        "REVISION shows the commit: {table}"
    );
}

fn deploy(host: &str, file: &Path, name: &str, extra: &[&str]) -> (i32, Vec<Value>, String) {
    let out = Command::new(bin("swarmctl"))
        .env("SWARM_HOST", host)
        .args(["stack", "deploy", "--format", "json"])
        .args(extra)
        .arg("-c")
        .arg(file)
        .arg(name)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let events: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON event: {l:?}: {e}")))
        .collect();
    (
        out.status.code().unwrap_or(-1),
        events,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn stack_deploy_exit_codes_and_json_events() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.yml");
    std::fs::write(&good, web(2, "exec sleep 300")).unwrap();
    let bad = dir.path().join("bad.yml");
    std::fs::write(
        &bad,
        "services:\n  web:\n    image: x\n    deploy:\n      replicas: lots\n",
    )
    .unwrap();

    // 3: cluster unreachable
    let nowhere = format!("unix://{}/none.sock", dir.path().display());
    let (code, events, _) = deploy(&nowhere, &good, "ci", &[]);
    assert_eq!(code, 3);
    assert_eq!(events.last().unwrap()["Result"], "unreachable");

    let d = Swarmd::start();
    let host = d.host();
    // 2: invalid input, with the file and line
    let (code, events, stderr) = deploy(&host, &bad, "ci", &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        events[0]["Message"].as_str().unwrap().contains("bad.yml:5"),
        "{events:?}"
    );

    // 0: converged, with progress events
    let (code, events, stderr) = deploy(&host, &good, "ci", &[]);
    assert_eq!(code, 0, "{stderr}");
    let progress: Vec<&Value> = events.iter().filter(|e| e["Type"] == "progress").collect();
    let last = progress.last().expect("progress events");
    assert_eq!(
        (
            last["Service"].as_str(),
            last["Running"].as_u64(),
            last["Desired"].as_u64()
        ),
        (Some("ci_web"), Some(2), Some(2))
    );
    assert_eq!(last["State"], "converged");
    assert!(events
        .iter()
        .any(|e| e["Type"] == "change" && e["Action"] == "create"));
    assert_eq!(events.last().unwrap()["Result"], "converged");

    // 1: an update that rolls back exits 1 with the reason
    let crash = dir.path().join("crash.yml");
    std::fs::write(&crash, web(2, "exit 1")).unwrap();
    let (code, events, _) = deploy(&host, &crash, "ci", &["--timeout", "90s"]);
    let result = events.last().unwrap();
    assert_eq!(
        (code, result["Result"].as_str()),
        (1, Some("failed")),
        "{events:?}"
    );
    assert!(
        result["Message"].as_str().unwrap().contains("rollback"),
        "{result}"
    );
    assert!(events.iter().any(|e| e["UpdateState"]
        .as_str()
        .is_some_and(|s| s.starts_with("rollback"))));

    // jobs: waited for until complete (0), a failing one fails (1)
    let jobs = dir.path().join("jobs.yml");
    std::fs::write(
        &jobs,
        "services:\n  once:\n    image: x\n    command: [\"sh\", \"-c\", \"sleep 1\"]\n    deploy:\n      mode: replicated-job\n      replicas: 2\n",
    )
    .unwrap();
    let (code, events, stderr) = deploy(&host, &jobs, "jobs", &["--timeout", "60s"]);
    assert_eq!(code, 0, "{stderr}");
    let done = events
        .iter()
        .rev()
        .find(|e| e["Type"] == "progress")
        .unwrap();
    assert_eq!(
        (done["Completed"].as_u64(), done["Desired"].as_u64()),
        (Some(2), Some(2))
    );
    let failing = dir.path().join("failing.yml");
    std::fs::write(
        &failing,
        "services:\n  once:\n    image: x\n    command: [\"sh\", \"-c\", \"exit 3\"]\n    deploy:\n      mode: replicated-job\n      restart_policy:\n        condition: none\n",
    )
    .unwrap();
    let (code, events, _) = deploy(&host, &failing, "failjob", &["--timeout", "60s"]);
    assert_eq!(
        (code, events.last().unwrap()["Result"].as_str()),
        (1, Some("failed")),
        "{events:?}"
    );

    // 1: timed out
    let stuck = dir.path().join("stuck.yml");
    std::fs::write(
        &stuck,
        "services:\n  web:\n    image: x\n    command: [\"sleep\", \"300\"]\n    deploy:\n      placement:\n        constraints: [node.labels.nowhere==true]\n",
    )
    .unwrap();
    let (code, events, _) = deploy(&host, &stuck, "stuck", &["--timeout", "2s"]);
    assert_eq!(
        (code, events.last().unwrap()["Result"].as_str()),
        (1, Some("timeout"))
    );
}

#[test]
fn the_watcher_reconnects_after_its_manager_restarts() {
    let mut d = Swarmd::start();
    let dir = tempfile::tempdir().unwrap();
    let stacks = dir.path().join("stacks");
    std::fs::create_dir(&stacks).unwrap();
    let file = stacks.join("shop.yml");
    std::fs::write(&file, web(1, "exec sleep 300")).unwrap();
    let w = Watch::start(
        &d,
        &["--interval", "1s", stacks.to_str().unwrap()],
        dir.path(),
    );
    wait_for(30, "shop Synced", || {
        stack_row(&d, "shop").filter(|r| r["Sync"] == "Synced")
    });

    d.stop();
    w.wait_line(20, "cannot reach the cluster");
    // changed while the cluster is away: applied once it is back
    std::fs::write(&file, web(2, "exec sleep 300")).unwrap();
    d.spawn();
    w.wait_line(30, "cluster reachable again");
    wait_for(30, "shop_web scaled to 2", || {
        (replicas(&d, "shop_web") == Some(2)).then_some(())
    });
}
