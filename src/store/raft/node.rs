//! [`RaftNode`], the handle the rest of swarm holds: open a Raft state directory, initialize or
//! resume a cluster, propose commands, follow leadership, read a metrics summary, serve peer RPCs,
//! change membership and shut down. Also [`RaftSettings`]. Only plain types cross this API.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::InitializeError;
use openraft::metrics::WaitError;
use openraft::{Config, RaftMetrics, ServerState, SnapshotPolicy};
use tokio::sync::watch;

use super::db::{self, Disk, DiskError};
use super::error::{self, Error, Result};
use super::log_store::LogStore;
use super::network::{self, NetworkFactory, NoPeers, RaftRpc, RaftTransport};
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
    /// How often the leader sends heartbeats.
    pub heartbeat_interval: Duration,
    /// Lower bound of the randomized election timeout; must exceed the heartbeat interval.
    pub election_timeout_min: Duration,
    /// Upper bound of the randomized election timeout.
    pub election_timeout_max: Duration,
    /// Proposals are refused ([`Error::NoSpace`]) while less than this many bytes are free on the
    /// state directory's filesystem; 0 turns the check off.
    pub min_free_bytes: u64,
}

/// The default of [`RaftSettings::min_free_bytes`]: 64 MiB, room for a snapshot and the entries in flight.
pub const DEFAULT_MIN_FREE_BYTES: u64 = 64 << 20;

impl Default for RaftSettings {
    fn default() -> Self {
        Self {
            snapshot_interval_entries: 10_000,
            logs_kept_after_snapshot: 500,
            heartbeat_interval: Duration::from_millis(250),
            election_timeout_min: Duration::from_millis(1_000),
            election_timeout_max: Duration::from_millis(2_000),
            min_free_bytes: DEFAULT_MIN_FREE_BYTES,
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
        let config = Config {
            cluster_name: "swarm".into(),
            heartbeat_interval: millis(self.heartbeat_interval),
            election_timeout_min: millis(self.election_timeout_min),
            election_timeout_max: millis(self.election_timeout_max),
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_interval_entries),
            max_in_snapshot_log_to_keep: self.logs_kept_after_snapshot,
            ..Config::default()
        };
        config
            .validate()
            .map_err(|e| Error::Settings(e.to_string()))
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
    id: NodeId,
    dir: PathBuf,
    disk: Disk,
    min_free_bytes: u64,
    addr: String,
    raft: Raft,
    metrics: watch::Receiver<RaftMetrics<NodeId, NodeInfo>>,
    leader: watch::Receiver<Option<NodeId>>,
    leader_task: tokio::task::JoinHandle<()>,
}

/// The Raft database file in the Raft state directory `dir`: its presence means `dir` holds Raft data.
pub fn database_file(dir: &Path) -> PathBuf {
    dir.join(db::DB_FILE)
}

fn storage_error(dir: &Path, e: DiskError) -> Error {
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
        let network = NetworkFactory::new(node_id, transport);
        let raft = Raft::new(node_id, config, network, log_store, sm)
            .await
            .map_err(|e| fatal_error(&disk, e))?;

        let metrics = raft.metrics();
        let (leader_tx, leader) = watch::channel(metrics.borrow().current_leader);
        let mut rx = metrics.clone();
        let leader_task = tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let now = rx.borrow_and_update().current_leader;
                leader_tx.send_if_modified(|l| std::mem::replace(l, now) != now);
            }
            leader_tx.send_replace(None);
        });
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
    /// here. Fails with [`Error::NotLeader`] on a follower, and with [`Error::NoSpace`] while the
    /// state directory's filesystem is below [`RaftSettings::min_free_bytes`].
    pub async fn propose(&self, command: Vec<u8>) -> Result<Vec<u8>> {
        space::check(&self.dir, self.min_free_bytes)?;
        let resp = self
            .raft
            .client_write(RaftRequest(command))
            .await
            .map_err(error::from_client_write)?;
        Ok(resp.data.0)
    }

    /// Whether this node currently believes it is the leader.
    pub fn is_leader(&self) -> bool {
        let m = self.metrics.borrow();
        m.state == ServerState::Leader && m.current_leader == Some(self.id)
    }

    /// The leader this node currently knows of.
    pub fn current_leader(&self) -> Option<NodeId> {
        *self.leader.borrow()
    }

    /// A receiver of leadership changes: the current leader's id, `None` while there is none.
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
        network::serve(&self.raft, rpc, payload).await
    }

    /// Adds `id` at `addr` as a learner and waits until it has caught up (leader only).
    pub async fn add_learner(&self, id: NodeId, addr: String) -> Result<()> {
        self.raft
            .add_learner(id, NodeInfo { addr }, true)
            .await
            .map_err(error::from_client_write)?;
        Ok(())
    }

    /// Makes `voters` the voting members; nodes dropped from it stay as learners (leader only).
    pub async fn change_membership(&self, voters: BTreeSet<NodeId>) -> Result<()> {
        self.raft
            .change_membership(voters, true)
            .await
            .map_err(error::from_client_write)?;
        Ok(())
    }

    /// Makes `voters` the voting members and drops `removed` from the group altogether (leader only).
    pub(super) async fn change_membership_removing(
        &self,
        voters: BTreeSet<NodeId>,
        removed: NodeId,
    ) -> Result<()> {
        self.raft
            .change_membership(voters, true)
            .await
            .map_err(error::from_client_write)?;
        self.raft
            .change_membership(
                openraft::ChangeMembers::RemoveNodes(BTreeSet::from([removed])),
                true,
            )
            .await
            .map_err(error::from_client_write)?;
        Ok(())
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
