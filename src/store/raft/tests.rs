//! Tests of the Raft glue as a whole: openraft's storage conformance suite against our log store
//! and state machine adapter, crash-and-reopen of a single-voter node (with and without snapshots
//! and log purging), and a two-node cluster over an in-memory transport (replication, snapshot
//! transfer, not-leader errors).

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageIOError;
use redb::{ReadableDatabase, ReadableTable};
use serde::{Deserialize, Serialize};
use tempfile::TempDir;

use super::db;
use super::log_store::LogStore;
use super::state_machine::StateMachineStore;
use super::types::{StorageError, TypeConfig};
use super::*;

/// What the recording state machine holds: every command applied, in order, and the index of the
/// snapshot it was last restored from.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub(super) struct Recorded {
    pub(super) applied: Vec<(u64, Vec<u8>)>,
    pub(super) restored_from: Option<u64>,
}

/// A state machine that records what it applies; the test keeps a clone to look inside.
#[derive(Clone, Default)]
pub(super) struct RecordingSm(Arc<Mutex<Recorded>>);

impl RecordingSm {
    pub(super) fn get(&self) -> Recorded {
        self.0.lock().expect("recording lock").clone()
    }
}

impl StateMachine for RecordingSm {
    fn apply(&mut self, index: u64, command: &[u8]) -> Vec<u8> {
        let mut r = self.0.lock().expect("recording lock");
        r.applied.push((index, command.to_vec()));
        [b"ok:".as_slice(), command].concat()
    }

    fn snapshot(&self) -> Vec<u8> {
        let r = self.0.lock().expect("recording lock");
        postcard::to_allocvec(&r.applied).expect("encode")
    }

    fn restore(&mut self, index: u64, snapshot: &[u8]) -> Result<(), String> {
        let applied = postcard::from_bytes(snapshot).map_err(|e| e.to_string())?;
        let mut r = self.0.lock().expect("recording lock");
        r.applied = applied;
        r.restored_from = Some(index);
        Ok(())
    }
}

struct SuiteBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for SuiteBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError> {
        let dir = tempfile::tempdir().map_err(|e| StorageIOError::write(&e))?;
        let db = db::open(dir.path()).map_err(|e| StorageIOError::write(&e))?;
        let sm = StateMachineStore::open(db.clone(), Box::new(RecordingSm::default()))
            .await
            .map_err(|e| StorageIOError::write(&e))?;
        Ok((dir, LogStore::new(db), sm))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(SuiteBuilder).expect("openraft storage suite");
}

pub(super) fn fast_settings() -> RaftSettings {
    RaftSettings {
        heartbeat_interval: Duration::from_millis(50),
        election_timeout_min: Duration::from_millis(150),
        election_timeout_max: Duration::from_millis(300),
        ..RaftSettings::default()
    }
}

pub(super) const WAIT: Duration = Duration::from_secs(10);

pub(super) fn command(i: usize) -> Vec<u8> {
    format!("cmd-{i}").into_bytes()
}

/// Polls `cond` until it holds or the deadline passes.
pub(super) async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub(super) async fn open_single(dir: &Path, sm: &RecordingSm, settings: RaftSettings) -> RaftNode {
    let node = RaftNode::open(
        dir,
        1,
        "127.0.0.1:4242".into(),
        Box::new(sm.clone()),
        settings,
    )
    .await
    .expect("open");
    node.initialize_single().await.expect("initialize");
    assert_eq!(node.wait_for_leader(WAIT).await.expect("leader"), 1);
    eventually("leadership", || node.is_leader()).await;
    node
}

pub(super) fn assert_applied_once(rec: &Recorded, n: usize) {
    let commands: Vec<Vec<u8>> = rec.applied.iter().map(|(_, c)| c.clone()).collect();
    let expected: Vec<Vec<u8>> = (0..n).map(command).collect();
    assert_eq!(
        commands, expected,
        "each command applied exactly once, in order"
    );
    assert!(
        rec.applied.windows(2).all(|w| w[0].0 < w[1].0),
        "indexes strictly increase"
    );
}

/// Runs phase one in its own runtime and drops that runtime without shutting Raft down: every
/// Raft task dies mid-flight, as in a crash. With `wait_snapshot`, waits for the snapshot policy to
/// have taken a snapshot and purged the log, and leaves at least one entry after the snapshot.
/// Returns the number of commands proposed and the last log index it saw.
fn run_then_crash(
    dir: &Path,
    settings: RaftSettings,
    n: usize,
    wait_snapshot: bool,
) -> (usize, u64) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let sm = RecordingSm::default();
    let interval = settings.snapshot_interval_entries;
    let (node, n, last) = rt.block_on(async {
        let node = open_single(dir, &sm, settings).await;
        let mut leaders = node.leader_watch();
        let leader = *leaders.wait_for(|l| l.is_some()).await.expect("watch");
        assert_eq!(leader, Some(1));
        assert_eq!(node.current_leader(), Some(1));
        for i in 0..n {
            let resp = node.propose(command(i)).await.expect("propose");
            assert_eq!(resp, [b"ok:".as_slice(), &command(i)].concat());
        }
        let mut n = n;
        if wait_snapshot {
            eventually("a snapshot, a purge, and no snapshot due", || {
                let m = node.metrics();
                match (m.snapshot_index, m.purged_index, m.last_log_index) {
                    (Some(s), Some(_), Some(l)) => l - s < interval,
                    _ => false,
                }
            })
            .await;
            let m = node.metrics();
            if m.snapshot_index == m.last_log_index {
                node.propose(command(n)).await.expect("propose tail");
                n += 1;
            }
        }
        let last = node.metrics().last_log_index.expect("log not empty");
        (node, n, last)
    });
    assert_applied_once(&sm.get(), n);
    drop(rt);
    drop(node);
    (n, last)
}

#[test]
fn crash_and_reopen_replays_the_log_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (n, last) = run_then_crash(dir.path(), fast_settings(), 40, false);

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let sm = RecordingSm::default();
        let node = open_single(dir.path(), &sm, fast_settings()).await;
        node.wait_applied(last, WAIT).await.expect("replay");
        let rec = sm.get();
        assert_eq!(rec.restored_from, None, "no snapshot was taken");
        assert_applied_once(&rec, n);
        let m = node.metrics();
        assert_eq!(m.role, RaftRole::Leader);
        assert_eq!(m.voters, vec![1]);
        // Still writable after the restart, and nothing is applied twice.
        node.propose(command(n))
            .await
            .expect("propose after restart");
        assert_applied_once(&sm.get(), n + 1);
        node.shutdown().await.expect("shutdown");
    });
}

#[test]
fn snapshot_purge_and_recovery_from_snapshot_plus_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = RaftSettings {
        snapshot_interval_entries: 10,
        logs_kept_after_snapshot: 2,
        ..fast_settings()
    };
    let (n, last) = run_then_crash(dir.path(), settings.clone(), 35, true);

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let sm = RecordingSm::default();
        let node = open_single(dir.path(), &sm, settings).await;
        node.wait_applied(last, WAIT).await.expect("replay");
        let rec = sm.get();
        let restored = rec.restored_from.expect("restored from the snapshot");
        assert!(
            restored > 0 && restored < last,
            "snapshot at {restored}, log at {last}"
        );
        assert_applied_once(&rec, n);
        let m = node.metrics();
        assert!(m.snapshot_index.is_some());
        assert!(m.purged_index.is_some());
        node.shutdown().await.expect("shutdown");
    });
    drop(rt);

    // The log really lost its head: the first stored entry comes after the purge point.
    let db = db::open(dir.path()).expect("reopen db");
    let tx = db.db().begin_read().expect("read tx");
    let log = tx.open_table(db::LOG).expect("log table");
    let (first, _) = log.first().expect("read").expect("log not empty");
    assert!(first.value() > 1, "log purged up to {}", first.value());
}

#[test]
fn settings_are_validated() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = RaftSettings {
        heartbeat_interval: Duration::from_millis(500),
        election_timeout_min: Duration::from_millis(100),
        ..RaftSettings::default()
    };
    let sm = Box::new(RecordingSm::default());
    let r = rt.block_on(RaftNode::open(dir.path(), 1, "a".into(), sm, bad));
    assert!(matches!(r, Err(Error::Settings(_))), "{:?}", r.err());
    let zero = RaftSettings {
        snapshot_interval_entries: 0,
        ..RaftSettings::default()
    };
    let sm = Box::new(RecordingSm::default());
    let r = rt.block_on(RaftNode::open(dir.path(), 1, "a".into(), sm, zero));
    assert!(matches!(r, Err(Error::Settings(_))), "{:?}", r.err());
}

/// An in-process transport: looks the target up and calls its `handle_rpc` directly.
#[derive(Default)]
struct MemNet {
    nodes: Mutex<HashMap<NodeId, Arc<RaftNode>>>,
}

impl RaftTransport for MemNet {
    fn call(
        &self,
        target: NodeId,
        addr: &str,
        rpc: RaftRpc,
        payload: Vec<u8>,
        _timeout: Duration,
    ) -> BoxFuture<'static, Result<Vec<u8>, TransportError>> {
        let node = self.nodes.lock().expect("net lock").get(&target).cloned();
        let addr = addr.to_string();
        Box::pin(async move {
            let node = node.ok_or(TransportError::Unreachable(addr))?;
            node.handle_rpc(rpc, &payload)
                .await
                .map_err(|e| TransportError::Failed(e.to_string()))
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_replicate_through_the_transport() {
    let net = Arc::new(MemNet::default());
    let settings = RaftSettings {
        snapshot_interval_entries: 5,
        logs_kept_after_snapshot: 0,
        ..fast_settings()
    };
    let (dir1, dir2) = (
        tempfile::tempdir().expect("tmp"),
        tempfile::tempdir().expect("tmp"),
    );
    let (sm1, sm2) = (RecordingSm::default(), RecordingSm::default());
    let mut nodes = Vec::new();
    for (id, dir, sm) in [(1, &dir1, &sm1), (2, &dir2, &sm2)] {
        let node = RaftNode::open_with_transport(
            dir.path(),
            id,
            format!("mem:{id}"),
            Box::new(sm.clone()),
            settings.clone(),
            net.clone(),
        )
        .await
        .expect("open");
        let node = Arc::new(node);
        net.nodes.lock().expect("net lock").insert(id, node.clone());
        nodes.push(node);
    }
    let (n1, n2) = (nodes[0].clone(), nodes[1].clone());

    n1.initialize_single().await.expect("initialize");
    n1.wait_for_leader(WAIT).await.expect("leader");
    eventually("leadership", || n1.is_leader()).await;
    // Enough entries for a snapshot and a purge, so the learner must receive the snapshot.
    for i in 0..12 {
        n1.propose(command(i)).await.expect("propose");
    }
    eventually("a purge on the leader", || {
        n1.metrics().purged_index.is_some()
    })
    .await;

    n1.add_learner(2, "mem:2".into())
        .await
        .expect("add learner");
    n1.change_membership(BTreeSet::from([1, 2]))
        .await
        .expect("change membership");
    for i in 12..20 {
        n1.propose(command(i)).await.expect("propose");
    }
    let last = n1.metrics().last_log_index.expect("log");
    n2.wait_applied(last, WAIT).await.expect("follower applied");

    let rec2 = sm2.get();
    assert!(rec2.restored_from.is_some(), "learner was sent a snapshot");
    assert_applied_once(&rec2, 20);
    assert_applied_once(&sm1.get(), 20);
    assert_eq!(n1.metrics().voters, vec![1, 2]);
    assert_eq!(n2.metrics().role, RaftRole::Follower);
    eventually("follower knows the leader", || {
        n2.current_leader() == Some(1)
    })
    .await;

    match n2.propose(b"x".to_vec()).await {
        Err(Error::NotLeader {
            leader: Some(1),
            leader_addr: Some(addr),
        }) => assert_eq!(addr, "mem:1"),
        other => panic!("expected NotLeader, got {other:?}"),
    }

    for n in &nodes {
        n.shutdown().await.expect("shutdown");
    }
    net.nodes.lock().expect("net lock").clear();
}

#[test]
fn corrupt_snapshot_fails_open_with_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let db = db::open(dir.path()).expect("open");
        let tx = db.db().begin_write().expect("tx");
        {
            let mut t = tx.open_table(db::SNAPSHOT).expect("table");
            t.insert(db::SNAPSHOT_KEY, [1u8, 2, 3].as_slice())
                .expect("insert");
        }
        tx.commit().expect("commit");
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let sm = Box::new(RecordingSm::default());
    let r = rt.block_on(RaftNode::open(
        dir.path(),
        1,
        "a".into(),
        sm,
        fast_settings(),
    ));
    assert!(matches!(r, Err(Error::Storage { .. })), "{:?}", r.err());
}

/// A state machine that panics on the command `b"boom"`, as a broken apply would.
#[derive(Clone, Default)]
struct PanickingSm(RecordingSm);

impl StateMachine for PanickingSm {
    fn apply(&mut self, index: u64, command: &[u8]) -> Vec<u8> {
        assert_ne!(command, b"boom", "the state machine failed");
        self.0.apply(index, command)
    }
    fn snapshot(&self) -> Vec<u8> {
        self.0.snapshot()
    }
    fn restore(&mut self, index: u64, snapshot: &[u8]) -> Result<(), String> {
        self.0.restore(index, snapshot)
    }
}

#[tokio::test]
async fn stopped_completes_on_a_fatal_error_and_after_shutdown() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = RaftNode::open(
        dir.path(),
        1,
        "127.0.0.1:4242".into(),
        Box::new(PanickingSm::default()),
        fast_settings(),
    )
    .await
    .expect("open");
    node.initialize_single().await.expect("initialize");
    node.wait_for_leader(WAIT).await.expect("leader");
    let stopped = node.stopped();
    tokio::pin!(stopped);
    node.propose(command(1)).await.expect("propose");
    assert!(
        tokio::time::timeout(Duration::from_millis(200), &mut stopped)
            .await
            .is_err(),
        "pending while raft runs"
    );
    let _ = tokio::time::timeout(WAIT, node.propose(b"boom".to_vec())).await;
    let e = tokio::time::timeout(WAIT, &mut stopped)
        .await
        .expect("raft reports its fatal state");
    assert!(matches!(e, Error::Stopped(_)), "{e:?}");
    let _ = node.shutdown().await;

    let dir = tempfile::tempdir().expect("tempdir");
    let node = open_single(dir.path(), &RecordingSm::default(), fast_settings()).await;
    let stopped = node.stopped();
    node.shutdown().await.expect("shutdown");
    let e = tokio::time::timeout(WAIT, stopped).await.expect("stopped");
    assert!(matches!(e, Error::Stopped(_)), "{e:?}");
}
