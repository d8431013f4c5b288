//! `stack diff` exit codes (0 nothing to do, 2 changes), `stack deploy --dry-run` changing nothing, a redeploy of
//! the same files restarting nothing, and `stack history`, against a real `swarmd`.

use super::cluster::{wait_for, Swarmd};

const V1: &str = r#"
services:
  web:
    image: web:1
    command: ["sleep", "300"]
    stop_grace_period: 1s
    deploy: {replicas: 1}
"#;

fn service_json(d: &Swarmd, name: &str) -> serde_json::Value {
    let out = d.ctl_ok(&["service", "inspect", name]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("inspect prints JSON");
    v[0].clone()
}

#[test]
fn diff_exit_codes_and_dry_run_change_nothing() {
    let d = Swarmd::start();
    let files = tempfile::tempdir().unwrap();
    let stack = files.path().join("stack.yml");
    std::fs::write(&stack, V1).unwrap();
    let stack = stack.to_str().unwrap();

    // nothing deployed yet: everything is to create, exit 2, and nothing is created
    let out = d.ctl(&["stack", "diff", "-c", stack, "d"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("create    service d_web"), "{text}");
    let out = d.ctl_ok(&["stack", "deploy", "--dry-run", "-c", stack, "d"]);
    assert!(out.contains("dry run"), "{out}");
    assert!(d.ctl_ok(&["stack", "ls", "-q"]).trim().is_empty());
    assert!(d.ctl_ok(&["service", "ls", "-q"]).trim().is_empty());

    d.ctl_ok(&["stack", "deploy", "-c", stack, "d"]);
    let out = d.ctl(&["stack", "diff", "-c", stack, "d"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("unchanged service d_web"));

    // the same files again: no new spec version, no task restarted, no new revision
    let tasks = d.ctl_ok(&["service", "ps", "d_web", "-q"]);
    let out = d.ctl_ok(&["stack", "deploy", "-c", stack, "d"]);
    assert!(out.contains("up to date"), "{out}");
    assert_eq!(service_json(&d, "d_web")["spec_version"], 1);
    assert_eq!(d.ctl_ok(&["service", "ps", "d_web", "-q"]), tasks);

    // a change: diff says so (exit 2) with old → new, a dry run changes nothing
    std::fs::write(
        files.path().join("stack.yml"),
        V1.replace("web:1", "web:2")
            .replace("replicas: 1", "replicas: 2"),
    )
    .unwrap();
    let out = d.ctl(&["stack", "diff", "-c", stack, "d"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("image: web:1 → web:2") && text.contains("replicas: 1 → 2"),
        "{text}"
    );
    d.ctl_ok(&["stack", "deploy", "--dry-run", "-c", stack, "d"]);
    let svc = service_json(&d, "d_web");
    assert_eq!(svc["spec_version"], 1);
    assert_eq!(svc["spec"]["task"]["container"]["image"], "web:1");
    assert_eq!(d.ctl_ok(&["service", "ps", "d_web", "-q"]), tasks);
    let history = d.ctl_ok(&["stack", "history", "d", "-q"]);
    assert_eq!(history.trim(), "1", "dry runs are no revisions");

    // applied: a new revision, listed with what changed
    d.ctl_ok(&["stack", "deploy", "--detach", "-c", stack, "d"]);
    let history = d.ctl_ok(&["stack", "history", "d"]);
    assert!(history.contains("image: web:1 → web:2"), "{history}");
    assert_eq!(service_json(&d, "d_web")["spec_version"], 2);

    // an unknown stack is an error (exit 1), not "changes"
    let out = d.ctl(&["stack", "history", "nope"]);
    assert_eq!(out.status.code(), Some(1));

    d.ctl_ok(&["stack", "rm", "d"]);
    wait_for(60, "no task process left", || {
        d.task_pids().is_empty().then_some(())
    });
}
