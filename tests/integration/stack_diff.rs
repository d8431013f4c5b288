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

const WITH_SECRET: &str = r#"
services:
  app:
    image: app:1
    command: ["sleep", "300"]
    secrets: [pw]
    stop_grace_period: 1s
  other:
    image: other:1
    command: ["sleep", "300"]
    stop_grace_period: 1s
secrets:
  pw:
    file: ./pw.txt
"#;

#[test]
fn secret_rotation_service_update_rollback_and_stack_rollback() {
    let d = Swarmd::start();
    let files = tempfile::tempdir().unwrap();
    let stack = files.path().join("stack.yml");
    std::fs::write(&stack, WITH_SECRET).unwrap();
    std::fs::write(files.path().join("pw.txt"), "one").unwrap();
    let stack = stack.to_str().unwrap();
    d.ctl_ok(&["stack", "deploy", "--detach", "-c", stack, "r"]);

    // a changed secret file: a new version under the same name, only the service using it changes
    std::fs::write(files.path().join("pw.txt"), "two").unwrap();
    let out = d.ctl(&["stack", "diff", "-c", stack, "r"]);
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("content changed: version 1 → 2"), "{text}");
    assert!(text.contains("unchanged service r_other"), "{text}");
    d.ctl_ok(&["stack", "deploy", "--detach", "-c", stack, "r"]);
    let ls = d.ctl_ok(&["secret", "ls", "--format", "json"]);
    let versions: Vec<u64> = ls
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["Version"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(versions, vec![1, 2], "{ls}");
    assert_eq!(service_json(&d, "r_app")["spec_version"], 2);
    assert_eq!(service_json(&d, "r_other")["spec_version"], 1);

    // service update: a template change starts an update; replicas alone keep the spec version
    let out = d.ctl_ok(&[
        "service",
        "update",
        "--image",
        "app:2",
        "--env-add",
        "K=V",
        "r_app",
    ]);
    assert!(
        out.contains("image: app:1 → app:2") && out.contains("env: +K=V"),
        "{out}"
    );
    let svc = service_json(&d, "r_app");
    assert_eq!(svc["spec_version"], 3);
    assert_eq!(svc["update_status"]["state"], "updating");
    d.ctl_ok(&["service", "update", "--replicas", "2", "r_app"]);
    assert_eq!(service_json(&d, "r_app")["spec_version"], 3);
    let out = d.ctl(&["service", "update", "--update-order", "sideways", "r_app"]);
    assert_eq!(out.status.code(), Some(1));

    // service rollback: back to the previous template
    d.ctl_ok(&["service", "rollback", "r_app"]);
    let svc = service_json(&d, "r_app");
    assert_eq!(svc["spec"]["task"]["container"]["image"], "app:1");
    assert_eq!(svc["update_status"]["state"], "rollback_started");
    assert_eq!(
        svc["update_status"]["message"],
        "manually requested rollback"
    );
    // the update state is in `service inspect`, not in REPLICAS (docker's format, which scripts parse)
    let ls = d.ctl_ok(&["service", "ls"]);
    assert!(!ls.contains("rollback_started"), "{ls}");
    let out = d.ctl(&["service", "rollback", "r_other"]);
    assert_eq!(out.status.code(), Some(1), "no previous spec");

    // stack rollback re-applies revision 1 as revision 3 (the secret's content of revision 1)
    let history = d.ctl_ok(&["stack", "history", "r", "-q"]);
    assert_eq!(
        history.split_whitespace().collect::<Vec<_>>(),
        vec!["1", "2"]
    );
    let out = d.ctl_ok(&["stack", "rollback", "--revision", "1", "--detach", "r"]);
    assert!(out.contains("revision 3"), "{out}");
    let out = d.ctl(&["stack", "rollback", "--revision", "7", "r"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no revision 7"));

    d.ctl_ok(&["stack", "rm", "r"]);
    wait_for(60, "no task process left", || {
        d.task_pids().is_empty().then_some(())
    });
}
