//! Storage faults against a real `swarmd` (issue 8): flipped bytes in a Raft log entry and in a snapshot stop
//! swarmd naming the file and the entry, with its tasks left running; a state dir that lost `node.json` or
//! `data.key` is refused and left as it was; a full disk (a small tmpfs as the state dir, root only) refuses
//! writes with "no space left on", keeps answering reads, and takes writes again once space is freed, without
//! a restart.

use std::path::{Path, PathBuf};

use crate::cluster::{wait_for, Swarmd};

const MARKER: &str = "corruptme0123456789";

fn stack_file(dir: &Path, replicas: u32) -> PathBuf {
    let path = dir.join("stack.yml");
    std::fs::write(
        &path,
        format!(
            "services:\n  {MARKER}:\n    image: x\n    command: [sleep, '300']\n    stop_grace_period: 1s\n    \
             deploy: {{replicas: {replicas}}}\n"
        ),
    )
    .expect("write stack");
    path
}

/// The number of running tasks of the marker service.
fn running(d: &Swarmd) -> usize {
    let out = d.ctl(&["service", "ps", &format!("c_{MARKER}"), "--format", "json"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| {
            v["DesiredState"] == "Running"
                && v["CurrentState"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("Running"))
        })
        .count()
}

/// Deploys the marker service with one replica and waits for its task to run.
fn deploy_marker(d: &Swarmd, files: &Path) {
    let stack = stack_file(files, 1);
    d.ctl_ok(&[
        "stack",
        "deploy",
        "-c",
        stack.to_str().unwrap(),
        "--detach",
        "c",
    ]);
    wait_for(60, "the marker task running", || {
        (running(d) == 1).then_some(())
    });
}

fn raft_db(d: &Swarmd) -> PathBuf {
    d.state().join("raft").join("raft.redb")
}

/// Flips one bit inside every occurrence of the marker in the Raft database; returns how many it changed.
fn flip_marker(file: &Path) -> usize {
    let mut bytes = std::fs::read(file).expect("read raft.redb");
    let marker = MARKER.as_bytes();
    let mut hits = 0;
    let mut i = 0;
    while i + marker.len() <= bytes.len() {
        if &bytes[i..i + marker.len()] == marker {
            bytes[i + 4] ^= 0x01;
            hits += 1;
            i += marker.len();
        } else {
            i += 1;
        }
    }
    std::fs::write(file, bytes).expect("write raft.redb");
    hits
}

fn info(d: &Swarmd) -> serde_json::Value {
    serde_json::from_str(&d.ctl_ok(&["swarm", "info", "--format", "json"])).expect("info json")
}

fn assert_refused_naming(d: &Swarmd, what: &str) -> String {
    let (code, err) = d.run_to_exit(60);
    eprintln!("swarmd refused: {err}");
    assert_eq!(code, Some(1), "swarmd exits non-zero: {err}");
    let file = raft_db(d).display().to_string();
    assert!(err.contains(&format!("{file}: {what}")), "{err}");
    assert!(
        err.contains(
            "restore this manager's state directory from a backup, or from another manager"
        ),
        "{err}"
    );
    assert!(!err.contains("panicked"), "no panic: {err}");
    err
}

#[test]
fn a_flipped_log_entry_stops_swarmd_naming_file_and_index_and_tasks_keep_running() {
    let mut d = Swarmd::start();
    let files = tempfile::tempdir().unwrap();
    deploy_marker(&d, files.path());
    let tasks = d.task_pids();
    assert_eq!(tasks.len(), 1);
    d.stop();
    assert!(flip_marker(&raft_db(&d)) > 0, "the marker is in the log");
    let err = assert_refused_naming(&d, "Raft log entry ");
    assert!(err.contains(" is corrupt (checksum mismatch:"), "{err}");
    // the damaged file is left for the operator, the tasks run on
    assert!(raft_db(&d).exists());
    assert_eq!(d.task_pids(), tasks, "tasks outlive the refused start");
    // a second attempt refuses the same way: nothing was re-initialized over the damage
    assert_refused_naming(&d, "Raft log entry ");
    assert_eq!(d.task_pids(), tasks);
}

/// The same after a crash (SIGKILL): redb's recovery on the next open reads the damaged pages first.
#[test]
fn a_flipped_log_entry_after_a_crash_is_refused_naming_the_file() {
    let mut d = Swarmd::start();
    let files = tempfile::tempdir().unwrap();
    deploy_marker(&d, files.path());
    let tasks = d.task_pids();
    d.kill9();
    assert!(flip_marker(&raft_db(&d)) > 0, "the marker is in the log");
    let (code, err) = d.run_to_exit(60);
    eprintln!("swarmd refused: {err}");
    assert_eq!(code, Some(1), "swarmd exits non-zero: {err}");
    assert!(
        err.contains(&format!("{}: ", raft_db(&d).display())),
        "{err}"
    );
    assert!(
        err.contains("restore this manager's state directory"),
        "{err}"
    );
    assert!(!err.contains("panicked at"), "no panic message: {err}");
    assert_eq!(d.task_pids(), tasks, "tasks outlive the refused start");
}

#[test]
fn a_flipped_snapshot_stops_swarmd_naming_the_snapshot_and_tasks_keep_running() {
    let mut d = Swarmd::start_in(tempfile::tempdir().unwrap(), &["--snapshot-interval", "5"]);
    let files = tempfile::tempdir().unwrap();
    deploy_marker(&d, files.path());
    let tasks = d.task_pids();
    // more writes until a snapshot covers the running marker service
    let target = info(&d)["RaftLastApplied"].as_u64().expect("applied");
    let secret = files.path().join("s.txt");
    std::fs::write(&secret, "x").unwrap();
    let mut n = 0;
    wait_for(60, "a snapshot taken after the deploy", || {
        let snap = info(&d)["RaftSnapshotIndex"].as_u64().unwrap_or(0);
        if snap >= target {
            return Some(());
        }
        n += 1;
        d.ctl_ok(&[
            "secret",
            "create",
            &format!("s{n}"),
            secret.to_str().unwrap(),
        ]);
        None
    });
    d.stop();
    assert!(flip_marker(&raft_db(&d)) > 0);
    let err = assert_refused_naming(&d, "the snapshot ");
    assert!(err.contains(") is corrupt (checksum mismatch:"), "{err}");
    assert!(err.contains("(up to log index "), "{err}");
    assert_eq!(d.task_pids(), tasks, "tasks outlive the refused start");
}

/// 64 bytes flipped at the start of every page holding the marker (so the B-tree leaf of the live log entry,
/// whose header redb asserts on in debug builds): swarmd reports the file and what to do, not a panic.
#[test]
fn a_damaged_page_is_reported_naming_the_file_not_as_a_panic() {
    let mut d = Swarmd::start();
    let files = tempfile::tempdir().unwrap();
    deploy_marker(&d, files.path());
    let tasks = d.task_pids();
    d.stop();
    let file = raft_db(&d);
    let mut bytes = std::fs::read(&file).unwrap();
    let pages: std::collections::BTreeSet<usize> = bytes
        .windows(MARKER.len())
        .enumerate()
        .filter(|(_, w)| *w == MARKER.as_bytes())
        .map(|(at, _)| at & !4095)
        .collect();
    assert!(!pages.is_empty());
    for page in pages {
        for b in &mut bytes[page..page + 64] {
            *b ^= 0xa5;
        }
    }
    std::fs::write(&file, bytes).unwrap();
    let (code, err) = d.run_to_exit(20);
    eprintln!("swarmd refused: {err}");
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&format!("{}: ", file.display())), "{err}");
    assert!(
        err.contains("restore this manager's state directory"),
        "{err}"
    );
    assert!(!err.contains("panicked at"), "no panic message: {err}");
    assert_eq!(d.task_pids(), tasks, "tasks outlive the refused start");
}

#[test]
fn a_missing_node_json_or_data_key_is_refused_and_the_files_left_intact() {
    let mut d = Swarmd::start();
    let files = tempfile::tempdir().unwrap();
    deploy_marker(&d, files.path());
    let tasks = d.task_pids();
    d.stop();
    let state = d.state().to_path_buf();
    let db_before = std::fs::read(raft_db(&d)).unwrap();
    let ca_key = std::fs::read(state.join("certs/ca.key")).unwrap();

    // node.json
    let node = state.join("node.json");
    let saved = files.path().join("node.json");
    std::fs::rename(&node, &saved).unwrap();
    let (code, err) = d.run_to_exit(60);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "{} is missing, but {} holds this manager's Raft data: refusing to start a new cluster over it",
            node.display(),
            raft_db(&d).display()
        )),
        "{err}"
    );
    assert!(
        err.contains("Restore node.json and certs/ from a backup"),
        "{err}"
    );
    assert!(!node.exists(), "no new identity written");
    assert_eq!(std::fs::read(state.join("certs/ca.key")).unwrap(), ca_key);
    assert_eq!(std::fs::read(raft_db(&d)).unwrap(), db_before);
    std::fs::rename(&saved, &node).unwrap();

    // data.key
    let key = state.join("data.key");
    let saved = files.path().join("data.key");
    std::fs::rename(&key, &saved).unwrap();
    let (code, err) = d.run_to_exit(60);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "data key {} is missing, but {} holds this cluster's data",
            key.display(),
            raft_db(&d).display()
        )),
        "{err}"
    );
    assert!(!key.exists(), "no new key written");
    assert_eq!(std::fs::read(raft_db(&d)).unwrap(), db_before);
    std::fs::rename(&saved, &key).unwrap();

    // raft data gone under an existing identity
    let raft = state.join("raft");
    let saved = files.path().join("raft");
    std::fs::rename(&raft, &saved).unwrap();
    let (code, err) = d.run_to_exit(60);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "{} is missing, but {} says this node already belongs to a cluster: refusing to start an empty cluster",
            raft_db(&d).display(),
            node.display()
        )),
        "{err}"
    );
    assert!(!raft.exists(), "no empty cluster created");
    std::fs::rename(&saved, &raft).unwrap();

    assert_eq!(d.task_pids(), tasks, "tasks run on through the refusals");
    // everything restored: the node resumes its cluster and re-adopts the task
    d.spawn();
    wait_for(60, "the marker task running again", || {
        (running(&d) == 1).then_some(())
    });
    assert_eq!(d.task_pids(), tasks, "re-adopted, not restarted");
}

/// A tmpfs mounted over a directory; unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        nix::mount::mount(
            Some("tmpfs"),
            dir,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some(format!("size={size},mode=0700").as_str()),
        )
        .expect("mount tmpfs");
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

fn available(dir: &Path) -> u64 {
    let s = nix::sys::statvfs::statvfs(dir).expect("statvfs");
    s.blocks_available() as u64 * s.fragment_size() as u64
}

#[test]
fn a_full_disk_refuses_writes_keeps_reads_and_recovers_without_a_restart() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("not root: cannot mount a tmpfs, skipping the disk-full test");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let _tmpfs = Tmpfs::mount(dir.path(), "32m");
    let mut d = Swarmd::start_in(dir, &["--min-free-space", "8MiB"]);
    let files = tempfile::tempdir().unwrap();
    deploy_marker(&d, files.path());
    let pid = d.pid();

    // fill the disk to 4 MiB free: below the 8 MiB reserve, with room left for what Raft itself writes
    let filler = d.state().join("filler");
    let fill = available(d.state()).saturating_sub(4 << 20);
    std::fs::write(&filler, vec![0u8; fill as usize]).expect("write filler");
    assert!(available(d.state()) < 8 << 20);

    let service = format!("c_{MARKER}");
    let out = d.ctl(&["service", "scale", &format!("{service}=2")]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!("swarmctl refused: {err}");
    assert!(
        err.contains(&format!("no space left on {}", d.state().display())),
        "{err}"
    );
    assert!(
        err.contains("writes are refused until space is freed"),
        "{err}"
    );
    // reads still answer
    let ls = d.ctl_ok(&["service", "ls"]);
    assert!(ls.contains(&service) && ls.contains("1/1"), "{ls}");
    assert!(d.ctl_ok(&["node", "ls"]).contains("Ready"));
    assert_eq!(running(&d), 1);

    // space freed: writes work again, same process
    std::fs::remove_file(&filler).unwrap();
    d.ctl_ok(&["service", "scale", &format!("{service}=2")]);
    wait_for(60, "2 marker tasks running", || {
        (running(&d) == 2).then_some(())
    });
    assert!(d.is_running(), "swarmd kept running");
    assert_eq!(d.pid(), pid, "no restart");
}

/// Without the reserve (`--min-free-space 0`) a full disk makes the log store fail: swarmd then exits non-zero
/// with the reason instead of staying half alive, and its tasks keep running.
#[test]
fn a_full_disk_without_reserve_stops_swarmd_with_the_reason() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("not root: cannot mount a tmpfs, skipping the disk-full test");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let _tmpfs = Tmpfs::mount(dir.path(), "32m");
    let mut d = Swarmd::start_in(dir, &["--min-free-space", "0"]);
    let files = tempfile::tempdir().unwrap();
    deploy_marker(&d, files.path());
    let tasks = d.task_pids();
    // fill the disk completely
    let filler = d.state().join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 64 << 10];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }
    let secret = files.path().join("s.txt");
    std::fs::write(&secret, vec![b'x'; 4096]).unwrap();
    // writes until one fails; then swarmd stops on its own
    let mut n = 0;
    wait_for(120, "swarmd to stop on the failed write", || {
        if !d.is_running() {
            return Some(());
        }
        n += 1;
        let _ = d.ctl(&[
            "secret",
            "create",
            &format!("s{n}"),
            secret.to_str().unwrap(),
        ]);
        None
    });
    let log = d.log();
    eprintln!(
        "{}",
        log.lines().rev().take(5).collect::<Vec<_>>().join("\n")
    );
    assert!(log.contains("swarmd: the raft node stopped"), "{log}");
    assert!(log.contains("No space left on device"), "{log}");
    assert!(
        log.contains("free space on that filesystem and start swarmd again"),
        "{log}"
    );
    assert_eq!(d.task_pids(), tasks, "tasks outlive swarmd");
    // space freed, started again: the state is all there and the task re-adopted
    std::fs::remove_file(&filler).unwrap();
    d.spawn();
    wait_for(60, "the marker task running again", || {
        (running(&d) == 1).then_some(())
    });
    assert_eq!(d.task_pids(), tasks, "re-adopted, not restarted");
    d.ctl_ok(&["secret", "create", "after", secret.to_str().unwrap()]);
}
