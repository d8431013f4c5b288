//! Autolock with a real `swarmd`: `swarm update --autolock=true` prints the unlock key once and wraps
//! data.key and certs/ca.key; a restarted manager stays locked (every command refused with the locked message,
//! its running tasks untouched) until `swarm unlock` gets the right key; `unlock-key --rotate` retires the old
//! key; `--autolock=false` unwraps, so a restart needs no key. The key is never on disk or in the log in
//! plaintext.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use super::cluster::{bin, wait_for, Swarmd};

const STACK: &str = r#"
services:
  vault:
    image: vault
    command: ["sh", "-c", "f=/run/secrets/pw; test -r $$f || f=$$SWARM_SECRETS_DIR/pw; test $$(cat $$f) = hunter2-autolock && echo secret-ok; exec sleep 300"]
    stop_grace_period: 1s
    secrets: [pw]
secrets:
  pw:
    file: ./pw.txt
"#;

/// `swarmctl swarm unlock` with `key` on its standard input.
fn unlock(m: &Swarmd, key: &str) -> Output {
    let mut child = Command::new(bin("swarmctl"))
        .env("SWARM_HOST", m.host())
        .args(["swarm", "unlock"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("swarmctl");
    let mut stdin = child.stdin.take().expect("stdin");
    writeln!(stdin, "{key}").expect("write key");
    drop(stdin);
    child.wait_with_output().expect("swarmctl")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// The `SWMKEY-1-…` in `text`.
fn key_in(text: &str) -> String {
    text.split_whitespace()
        .find(|w| w.starts_with("SWMKEY-1-"))
        .unwrap_or_else(|| panic!("no key in {text}"))
        .to_string()
}

/// Restarts `m` (SIGKILL) and waits until its socket answers with the locked message.
fn restart_locked(m: &mut Swarmd) {
    m.kill9();
    m.spawn_unchecked();
    wait_for(60, "the restarted manager answers locked", || {
        let out = m.ctl(&["service", "ls"]);
        (!out.status.success() && stderr(&out).contains("swarm is locked")).then_some(())
    });
}

fn wait_unlocked(m: &Swarmd) {
    wait_for(60, "the manager serves again", || {
        m.ctl(&["service", "ls"]).status.success().then_some(())
    });
}

/// Every file under `dir` holding `needle`.
fn files_with(dir: &std::path::Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_with(&p, needle));
        } else if std::fs::read(&p).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle)) {
            out.push(p);
        }
    }
    out
}

#[test]
fn an_autolocked_manager_restarts_locked_until_unlocked_with_the_current_key() {
    let mut m = Swarmd::start();
    let files = tempfile::tempdir().unwrap();
    std::fs::write(files.path().join("pw.txt"), "hunter2-autolock").unwrap();
    let stack = files.path().join("stack.yml");
    std::fs::write(&stack, STACK).unwrap();
    m.ctl_ok(&["stack", "deploy", "-c", stack.to_str().unwrap(), "s"]);
    let logs_ok = |m: &Swarmd, n: usize| {
        wait_for(60, &format!("{n} vault task(s) read the secret"), || {
            let logs = m.ctl_ok(&["service", "logs", "s_vault"]);
            (logs.matches("secret-ok").count() >= n).then_some(())
        })
    };
    logs_ok(&m, 1);

    // on: the key printed once, the key files wrapped
    let out = m.ctl_ok(&["swarm", "update", "--autolock=true"]);
    assert!(
        out.contains(
            "To unlock a swarm manager after it restarts, run the `swarmctl swarm unlock`"
        ),
        "{out}"
    );
    let key = key_in(&out);
    assert!(m
        .ctl_ok(&["swarm", "info"])
        .contains(" Autolock Managers: true"));
    assert_eq!(key_in(&m.ctl_ok(&["swarm", "unlock-key"])), key);
    assert_eq!(m.ctl_ok(&["swarm", "unlock-key", "-q"]).trim(), key);
    let data = std::fs::read(m.state().join("data.key")).unwrap();
    assert!(data.starts_with(b"swmlock"), "data.key is wrapped");
    let ca_key = std::fs::read_to_string(m.state().join("certs/ca.key")).unwrap_or_default();
    assert!(!ca_key.contains("PRIVATE KEY"), "ca.key is wrapped");
    let secret_hex = key.trim_start_matches("SWMKEY-1-");
    assert!(files_with(m.state(), secret_hex.as_bytes()).is_empty());
    assert!(files_with(m.state(), &hex::decode(secret_hex).unwrap()).is_empty());
    assert!(!m.log().contains(secret_hex), "the key is in the log");
    let again = unlock(&m, &key);
    assert!(stderr(&again).contains("not locked"), "{}", stderr(&again));

    // restarted: locked, the task keeps running
    let pids = m.task_pids();
    assert!(!pids.is_empty());
    restart_locked(&mut m);
    for args in [&["node", "ls"][..], &["stack", "ls"], &["swarm", "info"]] {
        let out = m.ctl(args);
        assert!(
            stderr(&out).contains("swarm is locked: run `swarmctl swarm unlock`"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    assert_eq!(m.task_pids(), pids, "tasks untouched while locked");
    let wrong = unlock(&m, &format!("SWMKEY-1-{}", "0".repeat(64)));
    assert!(!wrong.status.success());
    assert!(
        stderr(&wrong).contains("invalid unlock key"),
        "{}",
        stderr(&wrong)
    );
    let malformed = unlock(&m, "SWMKEY-1-nope");
    assert!(
        stderr(&malformed).contains("malformed unlock key"),
        "{}",
        stderr(&malformed)
    );
    assert!(stderr(&m.ctl(&["service", "ls"])).contains("swarm is locked"));

    // the right key: everything back, the task adopted, secrets readable by new tasks
    let ok = unlock(&m, &key);
    assert!(ok.status.success(), "{:?}: {}", ok.status, stderr(&ok));
    wait_unlocked(&m);
    assert!(m.ctl_ok(&["service", "ls"]).contains("s_vault"));
    wait_for(30, "the task adopted", || {
        (m.task_pids() == pids).then_some(())
    });
    m.ctl_ok(&["service", "scale", "s_vault=2"]);
    logs_ok(&m, 2);

    // rotated: the old key no longer unlocks, the new one does
    let rotated = m.ctl_ok(&["swarm", "unlock-key", "--rotate"]);
    assert!(
        rotated.contains("Successfully rotated manager unlock key"),
        "{rotated}"
    );
    let new_key = key_in(&rotated);
    assert_ne!(new_key, key);
    restart_locked(&mut m);
    let old = unlock(&m, &key);
    assert!(
        stderr(&old).contains("invalid unlock key"),
        "{}",
        stderr(&old)
    );
    let ok = unlock(&m, &new_key);
    assert!(ok.status.success(), "{:?}: {}", ok.status, stderr(&ok));
    wait_unlocked(&m);

    // off: a restart needs no key
    m.ctl_ok(&["swarm", "update", "--autolock=false"]);
    let none = m.ctl(&["swarm", "unlock-key"]);
    assert!(
        stderr(&none).contains("autolock is not enabled"),
        "{}",
        stderr(&none)
    );
    assert_eq!(std::fs::read(m.state().join("data.key")).unwrap().len(), 32);
    m.kill9();
    m.spawn();
    assert!(m.ctl_ok(&["service", "ls"]).contains("s_vault"));
}
