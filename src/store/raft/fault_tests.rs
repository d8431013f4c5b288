//! Storage faults at the level of the Raft node: a flipped log entry or snapshot stops it with an error naming
//! the file and the entry, damaged pages anywhere in a real database are errors (a redb panic caught), never
//! panics, and proposals are refused below the free-space reserve.

use std::path::Path;

use redb::ReadableTable;

use super::db;
use super::log_store::LogStore;
use super::state_machine::StateMachineStore;
use super::tests::{command, eventually, fast_settings, open_single, RecordingSm, WAIT};
use super::*;

/// Flips one bit inside `marker` in the stored bytes `bytes`; false when the marker is not there.
fn flip_in(bytes: &mut [u8], marker: &[u8]) -> bool {
    match bytes.windows(marker.len()).position(|w| w == marker) {
        Some(at) => {
            bytes[at + 1] ^= 0x01;
            true
        }
        None => false,
    }
}

/// Opens the database of a node that was just shut down: its background tasks drop their handles to the
/// file a moment after `shutdown()` returns, and redb refuses a second open in the same process until then.
fn open_when_released(dir: &Path) -> db::Disk {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        match db::open(dir) {
            Err(e)
                if e.to_string().to_lowercase().contains("already open")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other.expect("open"),
        }
    }
}

/// Flips a bit of the first log entry holding `marker`; returns its index.
fn flip_log_entry(dir: &Path, marker: &[u8]) -> u64 {
    let disk = open_when_released(dir);
    let tx = disk.db().begin_write().expect("tx");
    let index = {
        let mut t = tx.open_table(db::LOG).expect("table");
        let mut hit = None;
        for item in t.iter().expect("iter") {
            let (k, v) = item.expect("item");
            let mut bytes = v.value().to_vec();
            if flip_in(&mut bytes, marker) {
                hit = Some((k.value(), bytes));
                break;
            }
        }
        let (index, bad) = hit.expect("marker in the log");
        t.insert(index, bad.as_slice()).expect("insert");
        index
    };
    tx.commit().expect("commit");
    index
}

/// Flips a bit of the stored snapshot inside `marker`.
fn flip_snapshot(dir: &Path, marker: &[u8]) {
    let disk = open_when_released(dir);
    let tx = disk.db().begin_write().expect("tx");
    {
        let mut t = tx.open_table(db::SNAPSHOT).expect("table");
        let mut bytes = t
            .get(db::SNAPSHOT_KEY)
            .expect("get")
            .expect("a snapshot")
            .value()
            .to_vec();
        assert!(flip_in(&mut bytes, marker), "marker in the snapshot");
        t.insert(db::SNAPSHOT_KEY, bytes.as_slice())
            .expect("insert");
    }
    tx.commit().expect("commit");
}

/// Opens the node over a damaged directory: the open itself fails, or Raft stops once it reads the damage.
async fn open_damaged(dir: &Path) -> Error {
    let sm = Box::new(RecordingSm::default());
    match RaftNode::open(dir, 1, "a".into(), sm, fast_settings()).await {
        Err(e) => e,
        Ok(node) => {
            let _ = node.initialize_single().await;
            let e = tokio::time::timeout(WAIT, node.stopped())
                .await
                .expect("raft stops on the damaged entry");
            let _ = node.shutdown().await;
            e
        }
    }
}

#[tokio::test]
async fn a_flipped_log_entry_stops_raft_naming_file_and_index() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let sm = RecordingSm::default();
        let node = open_single(dir.path(), &sm, fast_settings()).await;
        for c in [
            b"first".to_vec(),
            b"corruptme-0123".to_vec(),
            b"last".to_vec(),
        ] {
            node.propose(c).await.expect("propose");
        }
        node.shutdown().await.expect("shutdown");
    }
    let index = flip_log_entry(dir.path(), b"corruptme-0123");
    let e = open_damaged(dir.path()).await;
    let text = e.to_string();
    let file = dir.path().join("raft.redb").display().to_string();
    assert!(matches!(e, Error::Storage { .. }), "{e:?}");
    assert!(
        text.contains(&format!(
            "{file}: Raft log entry {index} is corrupt (checksum mismatch"
        )),
        "{text}"
    );
    assert!(
        text.contains("restore this manager's state directory"),
        "{text}"
    );
}

#[tokio::test]
async fn a_flipped_snapshot_fails_open_naming_the_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = RaftSettings {
        snapshot_interval_entries: 2,
        ..fast_settings()
    };
    let snapshot = {
        let sm = RecordingSm::default();
        let node = open_single(dir.path(), &sm, settings).await;
        for c in [b"corruptme-0123".to_vec(), b"b".to_vec(), b"c".to_vec()] {
            node.propose(c).await.expect("propose");
        }
        eventually("a snapshot", || node.metrics().snapshot_index.is_some()).await;
        let index = node.metrics().snapshot_index.expect("snapshot");
        node.shutdown().await.expect("shutdown");
        index
    };
    flip_snapshot(dir.path(), b"corruptme-0123");
    let e = open_damaged(dir.path()).await;
    let text = e.to_string();
    assert!(matches!(e, Error::Storage { .. }), "{e:?}");
    assert!(text.contains("raft.redb: the snapshot 1-"), "{text}");
    assert!(
        text.contains(&format!(
            "(up to log index {snapshot}) is corrupt (checksum mismatch"
        )),
        "{text}"
    );
}

#[tokio::test]
async fn proposals_are_refused_below_the_free_space_reserve() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = RaftSettings {
        min_free_bytes: u64::MAX,
        ..fast_settings()
    };
    let sm = RecordingSm::default();
    let node = open_single(dir.path(), &sm, settings).await;
    let e = node.propose(command(1)).await.unwrap_err();
    assert!(matches!(e, Error::NoSpace { .. }), "{e:?}");
    assert!(e
        .to_string()
        .starts_with(&format!("no space left on {}", dir.path().display())));
    // refused before Raft: nothing applied, and Raft still runs
    assert!(sm.get().applied.is_empty());
    assert_eq!(node.metrics().role, RaftRole::Leader);
    node.shutdown().await.expect("shutdown");
}

/// 64 bytes flipped at page offsets all over a real database: every open and read either works (the bytes were
/// in unused space) or fails with an error naming the file; none panics out of the storage layer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_pages_anywhere_are_errors_never_panics() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let settings = RaftSettings {
            snapshot_interval_entries: 20,
            ..fast_settings()
        };
        let node = open_single(dir.path(), &RecordingSm::default(), settings).await;
        for i in 0..50 {
            node.propose(command(i)).await.expect("propose");
        }
        node.shutdown().await.expect("shutdown");
    }
    let file = dir.path().join("raft.redb");
    let pristine = std::fs::read(&file).expect("read");
    let mut outcomes = std::collections::BTreeMap::<&str, usize>::new();
    let shown = file.display().to_string();
    for offset in (0..pristine.len().saturating_sub(64)).step_by(1024) {
        let mut bad = pristine.clone();
        for b in &mut bad[offset..offset + 64] {
            *b ^= 0xa5;
        }
        std::fs::write(&file, &bad).expect("write");
        let r = db::blocking({
            let dir = dir.path().to_path_buf();
            move || db::open(&dir)
        })
        .await;
        let outcome: Result<(), String> = match r {
            Err(e) => Err(e.to_string()),
            Ok(disk) => {
                let mut log = LogStore::new(disk.clone());
                let read = async {
                    use openraft::storage::RaftLogStorage;
                    use openraft::RaftLogReader;
                    log.get_log_state().await.map_err(|e| e.to_string())?;
                    log.try_get_log_entries(0..)
                        .await
                        .map_err(|e| e.to_string())?;
                    StateMachineStore::open(disk.clone(), Box::new(RecordingSm::default()))
                        .await
                        .map_err(|e| e.to_string())?;
                    Ok::<(), String>(())
                };
                // the recorded fault is the error as the node reports it
                read.await.map_err(|e| {
                    disk.fault()
                        .unwrap_or_else(|| panic!("no fault recorded: {e}"))
                })
            }
        };
        match outcome {
            Ok(()) => *outcomes.entry("fine").or_default() += 1,
            Err(text) => {
                assert!(text.contains(&shown), "offset {offset}: {text}");
                let kind = if text.contains("storage library failed") {
                    "redb panicked, caught"
                } else if text.contains("is corrupt") {
                    "checksum or corrupt"
                } else {
                    "other error"
                };
                *outcomes.entry(kind).or_default() += 1;
            }
        }
    }
    eprintln!(
        "damaged-page outcomes over {} offsets: {outcomes:?}",
        pristine.len() / 1024
    );
}
