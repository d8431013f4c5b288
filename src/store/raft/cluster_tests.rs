//! Clusters of three or more nodes over an in-memory transport that can stop a node or cut links:
//! quorum loss refuses writes at once and heals, a partitioned leader refuses writes while the
//! majority elects a new one and the histories agree after healing, `force_new_cluster` recovers a
//! survivor with every write and a fresh node catches up from a chunked snapshot, and membership
//! changes (learners, removal, a leader removing itself).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tempfile::TempDir;

use super::tests::{command, eventually, fast_settings, Recorded, RecordingSm, WAIT};
use super::*;

/// The in-memory network: nodes by id, nodes that are down, links that are cut (both ways), and a
/// count (and optional delay) of snapshot chunks.
#[derive(Default)]
struct Net {
    nodes: Mutex<HashMap<NodeId, Arc<RaftNode>>>,
    down: Mutex<BTreeSet<NodeId>>,
    cut: Mutex<BTreeSet<(NodeId, NodeId)>>,
    chunks: AtomicUsize,
    chunk_delay: Mutex<Duration>,
    /// The largest AppendEntries payload sent.
    max_append: AtomicUsize,
}

impl Net {
    fn set_down(&self, id: NodeId, down: bool) {
        let mut d = self.down.lock().expect("net lock");
        if down {
            d.insert(id);
        } else {
            d.remove(&id);
        }
    }

    /// Cuts every link between `id` and the nodes in `others`.
    fn isolate(&self, id: NodeId, others: &[NodeId]) {
        let mut cut = self.cut.lock().expect("net lock");
        for &o in others {
            cut.insert((id, o));
            cut.insert((o, id));
        }
    }

    fn heal(&self) {
        self.cut.lock().expect("net lock").clear();
        self.down.lock().expect("net lock").clear();
    }

    fn blocked(&self, from: NodeId, to: NodeId) -> bool {
        let down = self.down.lock().expect("net lock");
        down.contains(&from)
            || down.contains(&to)
            || self.cut.lock().expect("net lock").contains(&(from, to))
    }
}

/// One node's view of the network: calls leave from `from`.
struct Endpoint {
    from: NodeId,
    net: Arc<Net>,
}

impl RaftTransport for Endpoint {
    fn call(
        &self,
        target: NodeId,
        addr: &str,
        rpc: RaftRpc,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Vec<u8>, TransportError>> {
        let net = self.net.clone();
        let from = self.from;
        let addr = addr.to_string();
        Box::pin(async move {
            let node = net.nodes.lock().expect("net lock").get(&target).cloned();
            let node = match node {
                Some(n) if !net.blocked(from, target) => n,
                _ => return Err(TransportError::Unreachable(addr)),
            };
            if rpc == RaftRpc::AppendEntries {
                net.max_append.fetch_max(payload.len(), Ordering::SeqCst);
            }
            if rpc == RaftRpc::InstallSnapshot {
                net.chunks.fetch_add(1, Ordering::SeqCst);
                let delay = *net.chunk_delay.lock().expect("net lock");
                tokio::time::sleep(delay).await;
            }
            let reply = tokio::time::timeout(timeout, node.handle_rpc(rpc, &payload))
                .await
                .map_err(|_| TransportError::Timeout)?
                .map_err(|e| TransportError::Failed(e.to_string()))?;
            // A link cut while the call was in flight loses the reply.
            if net.blocked(target, from) {
                return Err(TransportError::Unreachable(addr));
            }
            Ok(reply)
        })
    }
}

struct Cluster {
    net: Arc<Net>,
    settings: RaftSettings,
    dirs: BTreeMap<NodeId, TempDir>,
    nodes: BTreeMap<NodeId, (Arc<RaftNode>, RecordingSm)>,
}

fn addr(id: NodeId) -> String {
    format!("mem:{id}")
}

fn settings() -> RaftSettings {
    RaftSettings {
        write_timeout: WAIT,
        ..fast_settings()
    }
}

impl Cluster {
    fn new(settings: RaftSettings) -> Self {
        Cluster {
            net: Arc::new(Net::default()),
            settings,
            dirs: BTreeMap::new(),
            nodes: BTreeMap::new(),
        }
    }

    /// Node 1 initializes, the others join as learners and become voters.
    async fn start(n: u64, settings: RaftSettings) -> Self {
        let mut c = Cluster::new(settings);
        for id in 1..=n {
            c.open(id).await;
        }
        let first = c.node(1);
        first.initialize_single().await.expect("initialize");
        eventually("node 1 leads", || first.is_leader()).await;
        for id in 2..=n {
            first.add_learner(id, addr(id)).await.expect("add learner");
        }
        first
            .change_membership((1..=n).collect())
            .await
            .expect("voters");
        c
    }

    /// Opens node `id` over its directory (a fresh one the first time).
    async fn open(&mut self, id: NodeId) -> Arc<RaftNode> {
        let dir = self
            .dirs
            .entry(id)
            .or_insert_with(|| tempfile::tempdir().expect("tempdir"));
        let sm = RecordingSm::default();
        let transport = Arc::new(Endpoint {
            from: id,
            net: self.net.clone(),
        });
        let path = dir.path().to_path_buf();
        let settings = self.settings.clone();
        let node = while_db_held(|| {
            RaftNode::open_with_transport(
                &path,
                id,
                addr(id),
                Box::new(sm.clone()),
                settings.clone(),
                transport.clone(),
            )
        })
        .await
        .expect("open");
        let node = Arc::new(node);
        self.net
            .nodes
            .lock()
            .expect("net lock")
            .insert(id, node.clone());
        self.nodes.insert(id, (node.clone(), sm));
        node
    }

    /// Shuts node `id` down and forgets it (its directory stays).
    async fn stop(&mut self, id: NodeId) {
        self.net.nodes.lock().expect("net lock").remove(&id);
        let (node, _) = self.nodes.remove(&id).expect("running node");
        node.shutdown().await.expect("shutdown");
        drop(node);
    }

    fn node(&self, id: NodeId) -> Arc<RaftNode> {
        self.nodes[&id].0.clone()
    }

    fn sm(&self, id: NodeId) -> Recorded {
        self.nodes[&id].1.get()
    }

    fn ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    /// Waits until one node of `among` leads (with quorum) and returns it.
    async fn leader(&self, among: &[NodeId]) -> NodeId {
        let mut found = None;
        eventually("a leader", || {
            found = among.iter().copied().find(|&id| self.node(id).is_leader());
            found.is_some()
        })
        .await;
        found.expect("leader")
    }

    /// Waits until one node of `among` leads and every node of `among` follows it.
    async fn stable_leader(&self, among: &[NodeId]) -> NodeId {
        let mut found = None;
        eventually("a leader every node follows", || {
            found = among.iter().copied().find(|&id| self.node(id).is_leader());
            found.is_some_and(|l| {
                among.iter().all(|&id| {
                    let m = self.node(id).metrics();
                    m.leader == Some(l) && (id == l || m.role == RaftRole::Follower)
                })
            })
        })
        .await;
        found.expect("leader")
    }

    /// Proposes `cmd` on whichever node of `among` leads, retrying while leadership settles.
    async fn propose(&self, among: &[NodeId], cmd: Vec<u8>) -> NodeId {
        let deadline = Instant::now() + WAIT;
        loop {
            let leader = self.stable_leader(among).await;
            match self.node(leader).propose(cmd.clone()).await {
                Ok(_) => return leader,
                Err(Error::NotLeader { .. } | Error::NoQuorum(_)) => {}
                Err(e) => panic!("propose on {leader}: {e}"),
            }
            assert!(Instant::now() < deadline, "no leader accepted the write");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until every running node applied the leader's last entry, and returns their commands.
    async fn agreed(&self, leader: NodeId) -> Vec<Vec<u8>> {
        let last = self.node(leader).metrics().last_log_index.expect("log");
        for id in self.ids() {
            self.node(id)
                .wait_applied(last, WAIT)
                .await
                .expect("applied");
        }
        let commands =
            |id| -> Vec<Vec<u8>> { self.sm(id).applied.iter().map(|(_, c)| c.clone()).collect() };
        let first = commands(leader);
        for id in self.ids() {
            assert_eq!(commands(id), first, "node {id} has another history");
        }
        first
    }

    async fn shutdown(mut self) {
        for id in self.ids() {
            self.stop(id).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_quorum_refuses_writes_at_once_and_healing_restores_them() {
    let c = Cluster::start(3, settings()).await;
    let all = c.ids();
    let leader = c.leader(&all).await;
    for i in 0..5 {
        c.node(leader).propose(command(i)).await.expect("propose");
    }
    eventually("every voter reachable", || {
        c.node(leader).quorum().reachable == 3
    })
    .await;
    assert_eq!(
        c.node(leader).quorum(),
        QuorumStatus {
            reachable: 3,
            voters: 3,
            leader: Some(leader),
        }
    );

    let others: Vec<NodeId> = all.iter().copied().filter(|&i| i != leader).collect();
    for &o in &others {
        c.net.set_down(o, true);
    }
    eventually("the survivor sees only itself", || {
        c.node(leader).quorum().reachable == 1
    })
    .await;
    // Refused before it is proposed (a hung write would end as OutcomeUnknown after WAIT).
    let e = c
        .node(leader)
        .propose(b"refused".to_vec())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NoQuorum(_)), "{e:?}");
    assert_eq!(
        e.to_string(),
        "no quorum: 1 of 3 managers reachable (need 2)"
    );
    assert!(
        !c.node(leader).is_leader(),
        "a leader without quorum does not lead"
    );
    eventually("the leader watch shows no leader", || {
        c.node(leader).current_leader().is_none()
    })
    .await;
    // A cut-off follower refuses too, and never claims quorum.
    let e = c
        .node(others[0])
        .propose(b"refused".to_vec())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NotLeader { .. }), "{e:?}");
    assert!(!c.node(others[0]).quorum().has_quorum());

    for &o in &others {
        c.net.set_down(o, false);
    }
    let leader = c.propose(&all, command(5)).await;
    for i in 6..8 {
        c.propose(&all, command(i)).await;
    }
    let history = c.agreed(leader).await;
    assert_eq!(history, (0..8).map(command).collect::<Vec<_>>());
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_leader_refuses_writes_and_the_majority_moves_on() {
    let c = Cluster::start(3, settings()).await;
    let all = c.ids();
    let old = c.leader(&all).await;
    for i in 0..5 {
        c.node(old).propose(command(i)).await.expect("propose");
    }
    let majority: Vec<NodeId> = all.iter().copied().filter(|&i| i != old).collect();
    c.net.isolate(old, &majority);

    // Proposed on the old leader right after the cut: never a success.
    let lost = c.node(old).propose(b"lost".to_vec()).await.unwrap_err();
    assert!(
        matches!(lost, Error::NoQuorum(_) | Error::OutcomeUnknown(_)),
        "{lost:?}"
    );
    eventually("the old leader stops leading", || !c.node(old).is_leader()).await;
    let e = c.node(old).propose(b"lost".to_vec()).await.unwrap_err();
    assert!(matches!(e, Error::NoQuorum(_)), "{e:?}");

    let new = c.propose(&majority, command(5)).await;
    assert_ne!(new, old);
    c.propose(&majority, command(6)).await;
    assert!(!c.node(old).is_leader());

    c.net.heal();
    let leader = c.propose(&all, command(7)).await;
    eventually("one leader after healing", || {
        all.iter().filter(|&&i| c.node(i).is_leader()).count() == 1
            && c.node(old).metrics().role == RaftRole::Follower
    })
    .await;
    let history = c.agreed(leader).await;
    assert_eq!(
        history,
        (0..8).map(command).collect::<Vec<_>>(),
        "one history, without the write the old leader could not commit"
    );
    c.shutdown().await;
}

/// A command big enough that a snapshot of a few dozen spans many small chunks.
fn padded(i: usize) -> Vec<u8> {
    let mut c = command(i);
    c.resize(128, b'.');
    c
}

/// Retries `f` while the database file is still held by a node that was just shut down: openraft's
/// background tasks (log flush, snapshot build) drop their handles to the file a moment after
/// `shutdown()` returns, and redb refuses a second open in the same process until they have.
async fn while_db_held<T, F, Fut>(mut f: F) -> std::result::Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, Error>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match f().await {
            Err(e)
                if e.to_string().to_lowercase().contains("already open")
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => return other,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_new_cluster_keeps_every_write_and_a_new_member_catches_up_by_snapshot() {
    let chunk_timeout = Duration::from_millis(500);
    let delay = Duration::from_millis(20);
    let mut c = Cluster::start(
        3,
        RaftSettings {
            snapshot_interval_entries: 5,
            logs_kept_after_snapshot: 0,
            snapshot_chunk_bytes: 64,
            snapshot_chunk_timeout: chunk_timeout,
            ..settings()
        },
    )
    .await;
    let all = c.ids();
    let survivor = c.leader(&all).await;
    for i in 0..20 {
        c.node(survivor).propose(padded(i)).await.expect("propose");
    }
    for id in all {
        c.stop(id).await;
    }

    let dir = c.dirs[&survivor].path().to_path_buf();
    let survivor_addr = addr(survivor);
    let forced = while_db_held(|| RaftNode::force_new_cluster(&dir, survivor, &survivor_addr))
        .await
        .expect("force");
    assert!(forced.changed);
    assert_eq!(forced.previous_voters, vec![1, 2, 3]);
    let again = RaftNode::force_new_cluster(&dir, survivor, &addr(survivor))
        .await
        .expect("force again");
    assert!(!again.changed, "nothing to do the second time");
    assert_eq!(again.index, forced.index);

    let node = c.open(survivor).await;
    eventually("the survivor leads alone", || node.is_leader()).await;
    node.wait_applied(forced.index, WAIT)
        .await
        .expect("applied");
    let expect: Vec<Vec<u8>> = (0..20).map(padded).collect();
    let applied: Vec<Vec<u8>> = c.sm(survivor).applied.into_iter().map(|(_, x)| x).collect();
    assert_eq!(applied, expect, "every write is still there");
    assert_eq!(node.metrics().voters, vec![survivor]);
    assert_eq!(node.members().len(), 1, "the old members are gone");
    assert_eq!(
        node.quorum().to_string(),
        "1 of 1 manager reachable (need 1)"
    );
    for i in 20..30 {
        node.propose(padded(i)).await.expect("new writes");
    }
    node.trigger_snapshot().await.expect("snapshot");
    eventually("the log purged behind a snapshot", || {
        let m = node.metrics();
        m.purged_index.is_some() && m.snapshot_index == m.last_log_index
    })
    .await;

    // A fresh node joins: it can only catch up from the snapshot, sent in many slow chunks whose
    // total time is far above the per-chunk limit.
    c.net.chunks.store(0, Ordering::SeqCst);
    *c.net.chunk_delay.lock().expect("net lock") = delay;
    let fresh = c.open(9).await;
    node.add_learner_nowait(9, addr(9)).await.expect("learner");
    node.wait_caught_up(9, Some(WAIT))
        .await
        .expect("the snapshot installed");
    node.promote(9).await.expect("promote");
    for i in 30..32 {
        node.propose(padded(i)).await.expect("propose");
    }
    let last = node.metrics().last_log_index.expect("log");
    fresh.wait_applied(last, WAIT).await.expect("caught up");
    let rec = c.sm(9);
    assert!(rec.restored_from.is_some(), "installed the snapshot");
    let applied: Vec<Vec<u8>> = rec.applied.into_iter().map(|(_, x)| x).collect();
    assert_eq!(applied, (0..32).map(padded).collect::<Vec<_>>());
    let chunks = c.net.chunks.load(Ordering::SeqCst);
    assert!(
        chunks as u32 > chunk_timeout.as_millis() as u32 / delay.as_millis() as u32,
        "{chunks} chunks"
    );
    assert_eq!(node.metrics().voters, vec![survivor, 9]);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_follower_catches_up_in_batches_within_the_byte_limit() {
    let limit = 1_000;
    let c = Cluster::start(
        3,
        RaftSettings {
            max_append_bytes: limit,
            ..settings()
        },
    )
    .await;
    let all = c.ids();
    let leader = c.leader(&all).await;
    let lagging = all
        .iter()
        .copied()
        .find(|&i| i != leader)
        .expect("follower");
    c.net.set_down(lagging, true);
    for i in 0..20 {
        c.node(leader).propose(padded(i)).await.expect("propose");
    }
    c.net.max_append.store(0, Ordering::SeqCst);
    c.net.set_down(lagging, false);
    // 20 entries of 128 bytes do not fit one call: they go in several.
    let leader = c.propose(&all, padded(20)).await;
    let history = c.agreed(leader).await;
    assert_eq!(history, (0..21).map(padded).collect::<Vec<_>>());
    let max = c.net.max_append.load(Ordering::SeqCst);
    assert!(max as u64 <= limit, "an AppendEntries of {max} bytes");
    c.shutdown().await;
}

/// The futures the manager awaits in spawned tasks must be `Send`.
fn _futures_are_send(node: &'static RaftNode) {
    fn send<T: Send>(_: T) {}
    send(node.propose(Vec::new()));
    send(node.add_learner(2, String::new()));
    send(node.add_learner_nowait(2, String::new()));
    send(node.wait_caught_up(2, None));
    send(node.change_membership(BTreeSet::new()));
    send(node.promote(2));
    send(node.demote(2));
    send(node.remove_member(2));
    send(node.set_peer_addr(2, String::new()));
    send(RaftNode::force_new_cluster(
        std::path::Path::new("/"),
        1,
        "",
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_changes_are_guarded_and_a_removed_leader_hands_over() {
    let mut c = Cluster::start(3, settings()).await;
    let all = c.ids();
    let leader = c.leader(&all).await;
    let node = c.node(leader);
    eventually("every member reachable", || {
        node.members().iter().all(|m| m.reachable)
    })
    .await;
    let members = node.members();
    assert_eq!(members.iter().map(|m| m.id).collect::<Vec<_>>(), all);
    assert!(members.iter().all(|m| m.voter));
    assert_eq!(
        members
            .iter()
            .filter(|m| m.leader)
            .map(|m| m.id)
            .collect::<Vec<_>>(),
        vec![leader]
    );

    // With one follower down, removing the other would leave 1 of 2 reachable.
    let followers: Vec<NodeId> = all.iter().copied().filter(|&i| i != leader).collect();
    c.net.set_down(followers[0], true);
    eventually("the follower is unreachable", || {
        node.quorum().reachable == 2
    })
    .await;
    let e = node.remove_member(followers[1]).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "raft membership change refused: removing node {} would leave 1 of 2 managers \
             reachable (need 2)",
            followers[1]
        )
    );
    c.net.set_down(followers[0], false);

    // A learner added without waiting, then removed.
    // (the follower that was cut off may come back with a higher term and call an election: the learner is
    // added on whoever leads once that settled)
    c.open(4).await;
    let deadline = Instant::now() + WAIT;
    let leader = loop {
        let l = c.stable_leader(&all).await;
        match c.node(l).add_learner_nowait(4, addr(4)).await {
            Ok(_) => break l,
            Err(Error::NotLeader { .. } | Error::NoQuorum(_)) if Instant::now() < deadline => {}
            Err(e) => panic!("learner: {e} ({})", c.node(l).quorum()),
        }
    };
    let node = c.node(leader);
    let followers: Vec<NodeId> = all.iter().copied().filter(|&i| i != leader).collect();
    eventually("the learner is reachable", || {
        node.members()
            .iter()
            .any(|m| m.id == 4 && !m.voter && m.reachable)
    })
    .await;
    node.wait_caught_up(4, Some(WAIT)).await.expect("caught up");
    node.remove_member(4).await.expect("remove learner");
    assert!(node.members().iter().all(|m| m.id != 4));
    c.stop(4).await;

    // The leader removes itself: it steps down and the other two elect a leader.
    node.propose(command(0)).await.expect("propose");
    node.remove_member(leader).await.expect("remove the leader");
    let new = c.propose(&followers, command(1)).await;
    assert_ne!(new, leader);
    let m = c.node(new).metrics();
    assert_eq!(m.voters, followers);
    assert!(c.node(new).members().iter().all(|m| m.id != leader));
    eventually("the removed leader steps down", || !node.is_leader()).await;
    c.shutdown().await;

    // The only voter cannot remove itself.
    let mut single = Cluster::new(settings());
    let one = single.open(1).await;
    one.initialize_single().await.expect("initialize");
    eventually("leads", || one.is_leader()).await;
    let e = one.remove_member(1).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "raft membership change refused: node 1 is the only voting manager; add another \
         manager before removing it"
    );
    single.shutdown().await;
}
