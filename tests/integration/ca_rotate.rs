//! `swarm ca --rotate` with one manager and two workers as real `swarmd` processes: the progress reaches every
//! node, tasks keep running (never restarted), the workers' certificates name the new root as issuer, a worker
//! restarted afterwards still connects, the old join token is refused with a clear error and the new one
//! works; a node that is down holds a rotation until it is removed.

use std::process::Command;

use super::cluster::{wait_for, Swarmd};

const STACK: &str = r#"
services:
  web:
    image: web
    command: [sleep, "300"]
    stop_grace_period: 1s
    deploy:
      replicas: 3
"#;

/// `openssl x509 -noout FLAG` of the first certificate in `path` (e.g. `-issuer`), without its `issuer=`.
fn openssl(path: &std::path::Path, flag: &str) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", flag, "-in"])
        .arg(path)
        .output()
        .expect("openssl");
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    text.split_once('=')
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or(text)
}

/// Task ids of `s_web` with their node, sorted.
fn tasks(m: &Swarmd) -> Vec<(String, String)> {
    let out = m.ctl_ok(&["service", "ps", "s_web", "--format", "json"]);
    let mut t: Vec<(String, String)> = out
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["DesiredState"] == "Running")
        .map(|v| {
            (
                v["ID"].as_str().unwrap_or_default().to_string(),
                v["Node"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    t.sort();
    t
}

fn token(m: &Swarmd) -> String {
    m.ctl_ok(&["swarm", "join-token", "-q", "worker"])
        .trim()
        .to_string()
}

#[test]
fn rotating_the_root_ca_keeps_every_node_and_task_and_retires_the_old_token() {
    let mut m = Swarmd::start_in(tempfile::tempdir().unwrap(), &["--hostname", "m"]);
    let mut w1 = Swarmd::start_worker(&m, "w1");
    let mut w2 = Swarmd::start_worker(&m, "w2");
    let files = tempfile::tempdir().unwrap();
    let stack = files.path().join("stack.yml");
    std::fs::write(&stack, STACK).unwrap();
    m.ctl_ok(&["stack", "deploy", "-c", stack.to_str().unwrap(), "s"]);
    let before = wait_for(60, "3 web tasks on 3 nodes", || {
        let t = tasks(&m);
        let nodes: std::collections::BTreeSet<&String> = t.iter().map(|(_, n)| n).collect();
        (t.len() == 3 && nodes.len() == 3).then_some(t)
    });
    let pids = (m.task_pids(), w1.task_pids(), w2.task_pids());
    let old_token = token(&m);
    let old_ca = m.ctl_ok(&["swarm", "ca"]);
    assert!(
        old_ca.starts_with("-----BEGIN CERTIFICATE-----"),
        "{old_ca}"
    );

    // rotate: progress until every node holds a certificate of the new root
    let out = m.ctl(&["swarm", "ca", "--rotate"]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    );
    assert!(out.status.success(), "{stderr}\n{}", m.log());
    assert!(
        stderr.contains("rotated TLS certificates: 3/3 nodes"),
        "{stderr}"
    );
    assert!(stderr.contains("rotated CA certificates"), "{stderr}");
    assert!(
        stdout.starts_with("-----BEGIN CERTIFICATE-----"),
        "{stdout}"
    );
    assert_ne!(stdout, old_ca);
    assert_eq!(
        m.ctl_ok(&["swarm", "ca"]),
        stdout,
        "swarm ca shows the new root"
    );
    let new_ca = files.path().join("new-ca.crt");
    std::fs::write(&new_ca, &stdout).unwrap();
    let old_ca_file = files.path().join("old-ca.crt");
    std::fs::write(&old_ca_file, &old_ca).unwrap();
    assert_ne!(
        openssl(&new_ca, "-subject"),
        openssl(&old_ca_file, "-subject")
    );

    // the workers hold certificates of the new root, trust only it, and the manager's disk holds it
    for w in [&w1, &w2] {
        let cert = w.state().join("certs/node.crt");
        assert_eq!(openssl(&cert, "-issuer"), openssl(&new_ca, "-subject"));
        wait_for(30, "the worker trusts only the new root", || {
            (std::fs::read_to_string(w.state().join("certs/ca.crt")).ok()? == stdout).then_some(())
        });
    }
    wait_for(30, "the manager's certs/ca.crt holds the new root", || {
        (std::fs::read_to_string(m.state().join("certs/ca.crt")).ok()? == stdout).then_some(())
    });
    assert_eq!(
        openssl(&m.state().join("certs/node.crt"), "-issuer"),
        openssl(&new_ca, "-subject")
    );

    // nothing was restarted or moved
    assert_eq!(tasks(&m), before);
    assert_eq!((m.task_pids(), w1.task_pids(), w2.task_pids()), pids);

    // a worker restarted after the rotation still connects
    w1.kill9();
    wait_for(60, "w1 Down", || {
        m.ctl_ok(&["node", "ls"])
            .lines()
            .any(|l| l.contains("w1") && l.contains("Down"))
            .then_some(())
    });
    w1.spawn_unchecked();
    m.wait_node_ready("w1");

    // the old join token is refused, the new one works
    let new_token = token(&m);
    assert_ne!(new_token, old_token);
    let stale = Swarmd::worker(&m, "w3", &old_token);
    let (code, err) = stale.run_to_exit(60);
    assert_ne!(code, Some(0));
    assert!(err.contains("does not match the join token"), "{err}");
    let w3 = Swarmd::start_worker(&m, "w3");

    // a node that is down holds a rotation; removing it lets the rotation finish
    w2.kill9();
    wait_for(60, "w2 Down", || {
        m.ctl_ok(&["node", "ls"])
            .lines()
            .any(|l| l.contains("w2") && l.contains("Down"))
            .then_some(())
    });
    let out = m.ctl_ok(&["swarm", "ca", "--rotate", "--detach"]);
    assert!(
        out.starts_with("-----BEGIN CERTIFICATE-----") || out.is_empty(),
        "{out}"
    );
    let status = wait_for(60, "every node but w2 rotated", || {
        let out = m.ctl(&["swarm", "ca"]);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        err.contains("3/4 nodes rotated").then_some(err)
    });
    assert!(
        status.contains("waiting for w2") && status.contains("down") && status.contains("node rm"),
        "{status}"
    );
    assert!(m
        .ctl_ok(&["swarm", "info"])
        .contains("Root Rotation In Progress: true"));
    let refused = m.ctl(&["swarm", "ca", "--rotate"]);
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("already under way"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    // a manager restarted mid-rotation picks it up from the store
    m.kill9();
    m.spawn();
    let status = wait_for(60, "the rotation still under way after a restart", || {
        let out = m.ctl(&["swarm", "ca"]);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        err.contains("3/4 nodes rotated").then_some(err)
    });
    assert!(status.contains("waiting for w2"), "{status}");
    m.ctl_ok(&["node", "rm", "--force", "w2"]);
    wait_for(60, "the second rotation done", || {
        let out = m.ctl(&["swarm", "ca"]);
        (out.status.success() && !String::from_utf8_lossy(&out.stderr).contains("under way"))
            .then_some(())
    });
    let newest = m.ctl_ok(&["swarm", "ca"]);
    assert_ne!(newest, stdout);
    wait_for(30, "the manager's disk holds the newest root", || {
        (std::fs::read_to_string(m.state().join("certs/ca.crt")).ok()? == newest).then_some(())
    });
    // and after a restart the manager runs on it; its workers connect to it again
    let sessions = |w: &Swarmd| w.log().matches("agent session established").count();
    let before = (sessions(&w1), sessions(&w3));
    m.kill9();
    m.spawn();
    assert_eq!(m.ctl_ok(&["swarm", "ca"]), newest);
    wait_for(
        60,
        "w1 and w3 open new sessions with the restarted manager",
        || (sessions(&w1) > before.0 && sessions(&w3) > before.1).then_some(()),
    );
}
