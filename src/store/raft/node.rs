//! [`RaftNode`], the handle the rest of swarm holds: open a Raft state directory, initialize or
//! resume a cluster, propose commands, follow leadership, read a metrics summary, serve peer RPCs,
//! change membership and shut down. Also [`RaftSettings`]. Only plain types cross this API.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, InitializeError};
use openraft::metrics::WaitError;
use openraft::{Config, RaftMetrics, ServerState, SnapshotPolicy};
use tokio::sync::watch;

use super::db::{self, Disk, DiskError};
use super::error::{self, Error, Result};
use super::log_store::LogStore;
use super::network::{self, NetworkFactory, NoPeers, RaftRpc, RaftTransport};
use super::quorum::{self, Contacts, QuorumStatus, View};
use super::space;
use super::state_machine::{StateMachine, StateMachineStore};
use super::types::{NodeId, NodeInfo, Raft, RaftRequest};

/// Tuning of the Raft node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftSettings {
    /// Take a snapshot after this many entries since the last one (swarm's `SnapshotInterval`).
    pub snapshot_interval_entries: u64,
    /// Log entries kept behind a snapshot, so slightly lagging followers catch up from the log.
    pub logs_kept_after_snapshot: u64,
    /// How often the leader sends heartbeats. Openraft 0.9 also uses it as the time limit of every
    /// AppendEntries call (the follower's fsync included), and ticks every 1.5 of it.
    pub heartbeat_interval: Duration,
    /// Lower bound of the randomized election timeout; must exceed the heartbeat interval.
    pub election_timeout_min: Duration,
    /// Upper bound of the randomized election timeout. Openraft 0.9 adds it as a leader lease: a
    /// follower campaigns after `election_timeout_max` + its own timeout without a leader message.
    pub election_timeout_max: Duration,
    /// Proposals are refused ([`Error::NoSpace`]) while less than this many bytes are free on the
    /// state directory's filesystem; 0 turns the check off.
    pub min_free_bytes: u64,
    /// How long a proposal (or membership change) may wait to commit before it fails with
    /// [`Error::OutcomeUnknown`]; a write whose leader loses quorum fails sooner.
    pub write_timeout: Duration,
    /// Snapshots travel in chunks of at most this many bytes (one InstallSnapshot call each), so
    /// a snapshot of any size fits a transport's message limit.
    pub snapshot_chunk_bytes: u64,
    /// Time limit of one snapshot chunk (the last one includes installing the whole snapshot on
    /// the receiver). Per chunk, never for the whole transfer.
    pub snapshot_chunk_timeout: Duration,
    /// An AppendEntries call carries several entries only while they encode to at most this
    /// many bytes (one larger entry still goes alone), so replication stays within a transport's
    /// message limit and the heartbeat-long time limit of a call.
    pub max_append_bytes: u64,
}

/// The default of [`RaftSettings::min_free_bytes`]: 64 MiB, room for a snapshot and the entries in flight.
pub const DEFAULT_MIN_FREE_BYTES: u64 = 64 << 20;

impl Default for RaftSettings {
    /// For a LAN: heartbeats every 100 ms (at most 100 ms for an AppendEntries round trip with the
    /// follower's fsync), elections after 150-300 ms, so a follower campaigns 450-600 ms after the
    /// last message of a dead leader (lease + timeout) and a new leader commits well under a second.
    fn default() -> Self {
        Self {
            snapshot_interval_entries: 10_000,
            logs_kept_after_snapshot: 500,
            heartbeat_interval: Duration::from_millis(100),
            election_timeout_min: Duration::from_millis(150),
            election_timeout_max: Duration::from_millis(300),
            min_free_bytes: DEFAULT_MIN_FREE_BYTES,
            write_timeout: Duration::from_secs(10),
            snapshot_chunk_bytes: 1 << 20,
            snapshot_chunk_timeout: Duration::from_secs(60),
            max_append_bytes: 2 << 20,
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl RaftSettings {
    fn to_config(&self) -> Result<Config> {
        if self.snapshot_interval_entries == 0 {
            return Err(Error::Settings(
                "snapshot_interval_entries must be at least 1".into(),
            ));
        }
        if self.snapshot_chunk_bytes == 0 {
            return Err(Error::Settings(
                "snapshot_chunk_bytes must be at least 1".into(),
            ));
        }
        if self.write_timeout.is_zero() || self.snapshot_chunk_timeout.is_zero() {
            return Err(Error::Settings(
                "write_timeout and snapshot_chunk_timeout must be above zero".into(),
            ));
        }
        let config = Config {
            cluster_name: "swarm".into(),
            heartbeat_interval: millis(self.heartbeat_interval),
            election_timeout_min: millis(self.election_timeout_min),
            election_timeout_max: millis(self.election_timeout_max),
            install_snapshot_timeout: millis(self.snapshot_chunk_timeout),
            snapshot_max_chunk_size: self.snapshot_chunk_bytes,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_interval_entries),
            max_in_snapshot_log_to_keep: self.logs_kept_after_snapshot,
            ..Config::default()
        };
        config
            .validate()
            .map_err(|e| Error::Settings(e.to_string()))
    }

    /// A voter counts as reachable while it answered within this time: two election timeouts.
    fn contact_window(&self) -> Duration {
        self.election_timeout_max.saturating_mul(2)
    }
}

/// The Raft role of this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RaftRole {
    /// Receives the log but does not vote.
    Learner,
    /// A voter following a leader.
    Follower,
    /// A voter campaigning to become leader.
    Candidate,
    /// The leader: the only node that accepts proposals.
    Leader,
    /// Raft is shutting down.
    Shutdown,
}

impl From<ServerState> for RaftRole {
    fn from(s: ServerState) -> Self {
        match s {
            ServerState::Learner => RaftRole::Learner,
            ServerState::Follower => RaftRole::Follower,
            ServerState::Candidate => RaftRole::Candidate,
            ServerState::Leader => RaftRole::Leader,
            ServerState::Shutdown => RaftRole::Shutdown,
        }
    }
}

/// A point-in-time summary of the node's Raft state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftMetricsSummary {
    /// This node's id.
    pub node_id: NodeId,
    /// This node's role.
    pub role: RaftRole,
    /// The current term.
    pub term: u64,
    /// The leader this node knows of.
    pub leader: Option<NodeId>,
    /// Index of the last entry in the local log.
    pub last_log_index: Option<u64>,
    /// Index of the last entry applied to the state machine.
    pub last_applied_index: Option<u64>,
    /// Index covered by the latest snapshot.
    pub snapshot_index: Option<u64>,
    /// Index up to which the log has been purged.
    pub purged_index: Option<u64>,
    /// Voting members (of the current config; joint configs are flattened).
    pub voters: Vec<NodeId>,
    /// Non-voting members.
    pub learners: Vec<NodeId>,
}

fn summarize(m: &RaftMetrics<NodeId, NodeInfo>) -> RaftMetricsSummary {
    let membership = m.membership_config.membership();
    RaftMetricsSummary {
        node_id: m.id,
        role: m.state.into(),
        term: m.current_term,
        leader: m.current_leader,
        last_log_index: m.last_log_index,
        last_applied_index: m.last_applied.map(|l| l.index),
        snapshot_index: m.snapshot.map(|l| l.index),
        purged_index: m.purged.map(|l| l.index),
        voters: membership.voter_ids().collect(),
        learners: membership.learner_ids().collect(),
    }
}

/// A running Raft node over a state directory.
pub struct RaftNode {
    pub(super) id: NodeId,
    dir: PathBuf,
    disk: Disk,
    min_free_bytes: u64,
    addr: String,
    pub(super) raft: Raft,
    pub(super) metrics: watch::Receiver<RaftMetrics<NodeId, NodeInfo>>,
    leader: watch::Receiver<Option<NodeId>>,
    leader_task: tokio::task::JoinHandle<()>,
    pub(super) contacts: Contacts,
    /// See [`RaftSettings::contact_window`].
    window: Duration,
    heartbeat: Duration,
    write_timeout: Duration,
}

/// The voters of the membership `m` holds (joint configs flattened).
pub(super) fn voters_of(m: &RaftMetrics<NodeId, NodeInfo>) -> BTreeSet<NodeId> {
    m.membership_config.membership().voter_ids().collect()
}

/// The quorum as `m` and `contacts` show it.
fn quorum_of(
    m: &RaftMetrics<NodeId, NodeInfo>,
    contacts: &Contacts,
    window: Duration,
) -> QuorumStatus {
    let voters = voters_of(m);
    quorum::status(&View {
        me: m.id,
        is_leader: m.state == ServerState::Leader,
        leader: m.current_leader,
        voters: &voters,
        contacts,
        window,
    })
}

/// The leader as the rest of swarm should see it: a leader that cannot reach a majority reports
/// none (openraft 0.9 keeps it in the leader state until it hears a higher term).
fn effective_leader(
    m: &RaftMetrics<NodeId, NodeInfo>,
    contacts: &Contacts,
    window: Duration,
) -> Option<NodeId> {
    if m.state == ServerState::Leader {
        quorum_of(m, contacts, window).has_quorum().then_some(m.id)
    } else {
        // A leader that stepped down may still name itself until it hears of another.
        m.current_leader.filter(|&l| l != m.id)
    }
}

/// Publishes [`effective_leader`] on every metrics change and every `tick` (quorum changes with time).
async fn follow_leader(
    mut rx: watch::Receiver<RaftMetrics<NodeId, NodeInfo>>,
    tx: watch::Sender<Option<NodeId>>,
    contacts: Contacts,
    window: Duration,
    tick: Duration,
) {
    loop {
        let now = effective_leader(&rx.borrow_and_update(), &contacts, window);
        tx.send_if_modified(|l| std::mem::replace(l, now) != now);
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { break },
            _ = tokio::time::sleep(tick) => {}
        }
    }
    tx.send_replace(None);
}

/// The Raft database file in the Raft state directory `dir`: its presence means `dir` holds Raft data.
pub fn database_file(dir: &Path) -> PathBuf {
    dir.join(db::DB_FILE)
}

pub(super) fn storage_error(dir: &Path, e: DiskError) -> Error {
    Error::Storage {
        path: database_file(dir),
        message: e.to_string(),
    }
}

/// Openraft's fatal error, or the storage fault behind it (which names the file and the entry).
fn fatal_error(disk: &Disk, e: openraft::error::Fatal<NodeId>) -> Error {
    match disk.fault() {
        Some(message) if !matches!(e, openraft::error::Fatal::Stopped) => Error::Storage {
            path: disk.file().to_path_buf(),
            message,
        },
        _ => error::from_fatal(e),
    }
}

fn wait_error(what: &str, e: WaitError) -> Error {
    match e {
        WaitError::Timeout(..) => Error::Timeout(what.to_string()),
        other => Error::Stopped(other.to_string()),
    }
}

impl RaftNode {
    /// Opens the Raft state in `dir` (creating it if fresh), restores `sm` from the latest snapshot
    /// and starts Raft with no peer transport (enough for a single-voter cluster).
    pub async fn open(
        dir: &Path,
        node_id: NodeId,
        advertise_addr: String,
        sm: Box<dyn StateMachine>,
        settings: RaftSettings,
    ) -> Result<RaftNode> {
        Self::open_with_transport(
            dir,
            node_id,
            advertise_addr,
            sm,
            settings,
            Arc::new(NoPeers),
        )
        .await
    }

    /// Like [`RaftNode::open`], sending peer RPCs through `transport`.
    pub async fn open_with_transport(
        dir: &Path,
        node_id: NodeId,
        advertise_addr: String,
        sm: Box<dyn StateMachine>,
        settings: RaftSettings,
        transport: Arc<dyn RaftTransport>,
    ) -> Result<RaftNode> {
        let config = Arc::new(settings.to_config()?);
        let dir_buf: PathBuf = dir.to_path_buf();
        let disk = db::blocking(move || db::open(&dir_buf))
            .await
            .map_err(|e| storage_error(dir, e))?;
        let log_store = LogStore::new(disk.clone());
        let sm = StateMachineStore::open(disk.clone(), sm)
            .await
            .map_err(|e| storage_error(dir, e))?;
        let contacts = Contacts::default();
        let network = NetworkFactory::new(
            node_id,
            transport,
            contacts.clone(),
            settings.max_append_bytes,
        );
        let raft = Raft::new(node_id, config, network, log_store, sm)
            .await
            .map_err(|e| fatal_error(&disk, e))?;

        let metrics = raft.metrics();
        let window = settings.contact_window();
        let first = effective_leader(&metrics.borrow(), &contacts, window);
        let (leader_tx, leader) = watch::channel(first);
        let leader_task = tokio::spawn(follow_leader(
            metrics.clone(),
            leader_tx,
            contacts.clone(),
            window,
            settings.heartbeat_interval,
        ));
        Ok(RaftNode {
            id: node_id,
            dir: dir.to_path_buf(),
            disk,
            min_free_bytes: settings.min_free_bytes,
            addr: advertise_addr,
            raft,
            metrics,
            leader,
            leader_task,
            contacts,
            window,
            heartbeat: settings.heartbeat_interval,
            write_timeout: settings.write_timeout,
        })
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Makes this node the single voter of a new cluster. Does nothing when the directory already
    /// holds a cluster (a restart resumes it).
    pub async fn initialize_single(&self) -> Result<()> {
        if self
            .raft
            .is_initialized()
            .await
            .map_err(error::from_fatal)?
        {
            return Ok(());
        }
        let members = BTreeMap::from([(
            self.id,
            NodeInfo {
                addr: self.addr.clone(),
            },
        )]);
        match self.raft.initialize(members).await {
            Ok(()) => Ok(()),
            Err(openraft::error::RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(error::from_initialize(e)),
        }
    }

    /// Proposes `command`; returns the state machine's response once it is committed and applied
    /// here. Fails at once with [`Error::NotLeader`] on a follower, with [`Error::NoQuorum`] on a
    /// leader that cannot reach a majority, and with [`Error::NoSpace`] while the state
    /// directory's filesystem is below [`RaftSettings::min_free_bytes`]. A proposal that was sent
    /// but not confirmed (quorum lost meanwhile, or [`RaftSettings::write_timeout`] passed) fails
    /// with [`Error::OutcomeUnknown`]: it may or may not have been applied.
    pub async fn propose(&self, command: Vec<u8>) -> Result<Vec<u8>> {
        space::check(&self.dir, self.min_free_bytes)?;
        let resp = self
            .commit(self.raft.client_write(RaftRequest(command)))
            .await?;
        Ok(resp.data.0)
    }

    /// How many voters this node can reach now (see [`QuorumStatus`]).
    pub fn quorum(&self) -> QuorumStatus {
        quorum_of(&self.metrics.borrow(), &self.contacts, self.window)
    }

    /// Whether `id` counts as reachable from this node now (see [`QuorumStatus::reachable`]).
    pub(super) fn reachable(&self, m: &RaftMetrics<NodeId, NodeInfo>, id: NodeId) -> bool {
        let voters = BTreeSet::new();
        View {
            me: m.id,
            is_leader: m.state == ServerState::Leader,
            leader: m.current_leader,
            voters: &voters,
            contacts: &self.contacts,
            window: self.window,
        }
        .reachable(id)
    }

    /// [`Error::NotLeader`] naming the leader `m` knows of.
    pub(super) fn not_leader(m: &RaftMetrics<NodeId, NodeInfo>) -> Error {
        let leader = m.current_leader.filter(|&l| l != m.id);
        Error::NotLeader {
            leader,
            leader_addr: leader.and_then(|l| {
                m.membership_config
                    .membership()
                    .get_node(&l)
                    .map(|n| n.addr.clone())
            }),
        }
    }

    /// Refuses at once what cannot commit from here: not the leader, or no quorum.
    pub(super) fn check_writable(&self) -> Result<()> {
        let m = self.metrics.borrow();
        if m.state != ServerState::Leader {
            return Err(Self::not_leader(&m));
        }
        let q = quorum_of(&m, &self.contacts, self.window);
        if !q.has_quorum() {
            return Err(Error::NoQuorum(q));
        }
        Ok(())
    }

    /// Completes when this node leads but has lost quorum, with what it sees then.
    async fn quorum_lost(&self) -> QuorumStatus {
        loop {
            tokio::time::sleep(self.heartbeat).await;
            let m = self.metrics.borrow();
            let q = quorum_of(&m, &self.contacts, self.window);
            if m.state == ServerState::Leader && !q.has_quorum() {
                return q;
            }
        }
    }

    /// Runs the write `write` (a client write or membership change) if this node can commit: never
    /// longer than [`RaftSettings::write_timeout`], and no longer than this node keeps quorum.
    pub(super) async fn commit<T, F>(&self, write: F) -> Result<T>
    where
        F: std::future::Future<
            Output = std::result::Result<
                T,
                openraft::error::RaftError<NodeId, ClientWriteError<NodeId, NodeInfo>>,
            >,
        >,
    {
        self.check_writable()?;
        tokio::select! {
            r = write => r.map_err(error::from_client_write),
            q = self.quorum_lost() => Err(Error::OutcomeUnknown(format!(
                "no quorum while the write was in flight: {q}"
            ))),
            _ = tokio::time::sleep(self.write_timeout) => Err(Error::OutcomeUnknown(format!(
                "the write was not committed within {:?}", self.write_timeout
            ))),
        }
    }

    /// Whether this node leads and can commit: the raft leader, with a majority reachable.
    pub fn is_leader(&self) -> bool {
        effective_leader(&self.metrics.borrow(), &self.contacts, self.window) == Some(self.id)
    }

    /// The leader this node currently knows of (`None` on a leader without quorum).
    pub fn current_leader(&self) -> Option<NodeId> {
        *self.leader.borrow()
    }

    /// A receiver of leadership changes: the current leader's id, `None` while there is none (or
    /// while this node leads without a reachable majority).
    pub fn leader_watch(&self) -> watch::Receiver<Option<NodeId>> {
        self.leader.clone()
    }

    /// Waits until some node is leader (as this node sees it) and returns its id.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<NodeId> {
        let m = self
            .raft
            .wait(Some(timeout))
            .metrics(|m| m.current_leader.is_some(), "a leader")
            .await
            .map_err(|e| wait_error("a raft leader", e))?;
        m.current_leader
            .ok_or_else(|| Error::Timeout("a raft leader".into()))
    }

    /// Waits until the entry at `index` has been applied here.
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> Result<()> {
        self.raft
            .wait(Some(timeout))
            .applied_index_at_least(Some(index), "applied")
            .await
            .map_err(|e| wait_error(&format!("raft entry {index} to apply"), e))?;
        Ok(())
    }

    /// openraft's metrics channel (for sibling files of this module).
    pub(super) fn raft_metrics(&self) -> &watch::Receiver<RaftMetrics<NodeId, NodeInfo>> {
        &self.metrics
    }

    /// A summary of this node's Raft state now.
    pub fn metrics(&self) -> RaftMetricsSummary {
        summarize(&self.metrics.borrow())
    }

    /// Serves one peer RPC received by the transport: `payload` is what the peer's
    /// [`RaftTransport::call`] sent; the returned bytes are its reply.
    pub async fn handle_rpc(&self, rpc: RaftRpc, payload: &[u8]) -> Result<Vec<u8>> {
        network::serve(&self.raft, &self.contacts, rpc, payload).await
    }

    /// Asks Raft to take a snapshot now (it runs in the background).
    pub async fn trigger_snapshot(&self) -> Result<()> {
        self.raft
            .trigger()
            .snapshot()
            .await
            .map_err(error::from_fatal)
    }

    /// Completes when Raft has stopped: with the storage fault that stopped it (naming the file and the entry),
    /// openraft's fatal error (a panic of its core) or,
    /// after [`RaftNode::shutdown`], with "raft stopped". Pending while Raft runs; the node cannot recover once
    /// it completes, so the caller treats it as a dying part.
    pub fn stopped(&self) -> impl std::future::Future<Output = Error> + Send + 'static {
        let mut rx = self.metrics.clone();
        let disk = self.disk.clone();
        async move {
            loop {
                let fatal = rx.borrow_and_update().running_state.clone();
                if let Err(fatal) = fatal {
                    return fatal_error(&disk, fatal);
                }
                if rx.changed().await.is_err() {
                    return Error::Stopped("the raft core task ended".into());
                }
            }
        }
    }

    /// Stops Raft gracefully. The handle answers nothing useful afterwards.
    pub async fn shutdown(&self) -> Result<()> {
        let result = self
            .raft
            .shutdown()
            .await
            .map_err(|e| Error::Stopped(format!("raft task failed: {e}")));
        self.leader_task.abort();
        result
    }
}

impl Drop for RaftNode {
    fn drop(&mut self) {
        self.leader_task.abort();
    }
}
