//! `--force-new-cluster`: rewrites the stored Raft state of a surviving manager, before Raft is
//! opened, so it restarts as the only voter of a one-member cluster with everything it holds kept
//! (every log entry, the snapshot, the state machine). It appends, after the last entry, a
//! membership entry of this node alone, in a term above every term it has seen, and stores an
//! uncommitted vote for that term: openraft then finds itself the only voter, elects itself at once
//! and commits that entry and every entry before it. The other members' node records are not in the
//! new membership, so this node never contacts them; they rejoin as new members.
//!
//! One redb write transaction: a crash leaves the old state or the new one. Running it again over
//! a state that already is this one-member cluster writes nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use openraft::{CommittedLeaderId, EntryPayload, Membership, Vote};
use redb::{ReadableDatabase, ReadableTable};

use super::db::{
    self, Disk, DiskError, InFile, KEY_LAST_PURGED, KEY_VOTE, LOG, LOG_NAME, META, META_NAME,
};
use super::error::{Error, Result};
use super::log_store::decode_entry;
use super::node::{storage_error, RaftNode};
use super::state_machine::stored_snapshot_meta;
use super::types::{Entry, LogId, NodeId, NodeInfo};

/// What [`RaftNode::force_new_cluster`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForcedCluster {
    /// The voters of the membership stored before.
    pub previous_voters: Vec<NodeId>,
    /// The index of the membership entry that makes this node the only voter; every entry up to
    /// it is kept and commits when the node starts.
    pub index: u64,
    /// The term of that entry.
    pub term: u64,
    /// False when the state already was a one-member cluster of this node at this address:
    /// nothing was written.
    pub changed: bool,
}

type StoredMembership = Membership<NodeId, NodeInfo>;

/// The last log entry's id and the newest membership entry of the log.
fn scan_log(disk: &Disk) -> Result<(Option<LogId>, Option<StoredMembership>), DiskError> {
    let tx = disk.db().begin_read().in_file(disk)?;
    let table = tx.open_table(LOG).in_file(disk)?;
    let mut last = None;
    for item in table.iter().in_file(disk)?.rev() {
        let (k, v) = item.in_file(disk)?;
        let entry = decode_entry(disk, k.value(), v.value())?;
        last.get_or_insert(entry.log_id);
        if let EntryPayload::Membership(m) = entry.payload {
            return Ok((last, Some(m)));
        }
    }
    Ok((last, None))
}

fn is_single(m: &StoredMembership, node_id: NodeId, addr: &str) -> bool {
    m.get_joint_config() == &vec![BTreeSet::from([node_id])]
        && m.nodes().count() == 1
        && m.get_node(&node_id).is_some_and(|n| n.addr == addr)
}

/// The rewrite; `None` when the database holds no Raft state at all.
fn rewrite(disk: &Disk, node_id: NodeId, addr: &str) -> Result<Option<ForcedCluster>, DiskError> {
    let vote: Option<Vote<NodeId>> = disk.read_meta(KEY_VOTE)?;
    let purged: Option<LogId> = disk.read_meta(KEY_LAST_PURGED)?;
    let snapshot = stored_snapshot_meta(disk)?;
    let (last_entry, log_membership) = scan_log(disk)?;
    let snap_last = snapshot.as_ref().and_then(|s| s.last_log_id);
    let Some(last) = [last_entry, purged, snap_last].into_iter().flatten().max() else {
        return Ok(None);
    };
    let membership = log_membership
        .or_else(|| snapshot.map(|s| s.last_membership.membership().clone()))
        .unwrap_or_default();
    let previous_voters: Vec<NodeId> = membership.voter_ids().collect();
    if is_single(&membership, node_id, addr) {
        return Ok(Some(ForcedCluster {
            previous_voters,
            index: last.index,
            term: last.leader_id.term,
            changed: false,
        }));
    }

    let term = vote
        .map(|v| v.leader_id().get_term())
        .unwrap_or(0)
        .max(last.leader_id.term)
        + 1;
    let index = last.index + 1;
    let entry = Entry {
        log_id: LogId::new(CommittedLeaderId::new(term, node_id), index),
        payload: EntryPayload::Membership(Membership::new(
            vec![BTreeSet::from([node_id])],
            BTreeMap::from([(
                node_id,
                NodeInfo {
                    addr: addr.to_string(),
                },
            )]),
        )),
    };
    let entry_bytes = db::encode(LOG_NAME, &index.to_be_bytes(), "a log entry", &entry)?;
    let vote = Vote::new(term, node_id);
    let vote_bytes = db::encode(META_NAME, KEY_VOTE.as_bytes(), KEY_VOTE, &vote)?;
    let tx = disk.db().begin_write().in_file(disk)?;
    {
        let mut log = tx.open_table(LOG).in_file(disk)?;
        log.insert(index, entry_bytes.as_slice()).in_file(disk)?;
        let mut meta = tx.open_table(META).in_file(disk)?;
        meta.insert(KEY_VOTE, vote_bytes.as_slice()).in_file(disk)?;
    }
    tx.commit().in_file(disk)?;
    tracing::warn!(
        file = %disk.file().display(),
        node = node_id,
        index,
        term,
        previous_voters = ?previous_voters,
        "forced a new one-member raft cluster; every other manager must rejoin"
    );
    Ok(Some(ForcedCluster {
        previous_voters,
        index,
        term,
        changed: true,
    }))
}

impl RaftNode {
    /// Rewrites the closed Raft state in `dir` so that [`RaftNode::open`] starts node `node_id`
    /// (at `advertise_addr`) as the only voter of a one-member cluster holding all its state (the
    /// `--force-new-cluster` recovery after quorum loss). Run it before opening; a directory
    /// without Raft state is refused. Safe to repeat.
    pub async fn force_new_cluster(
        dir: &Path,
        node_id: NodeId,
        advertise_addr: &str,
    ) -> Result<ForcedCluster> {
        let file = super::database_file(dir);
        if !file.exists() {
            return Err(Error::Storage {
                path: file,
                message:
                    "no Raft state to recover: --force-new-cluster needs the state directory of \
                          a manager of the cluster"
                        .into(),
            });
        }
        let dir_buf = dir.to_path_buf();
        let addr = advertise_addr.to_string();
        let result = db::blocking(move || {
            let disk = db::open(&dir_buf)?;
            disk.guarded(|d| rewrite(d, node_id, &addr))
        })
        .await
        .map_err(|e| storage_error(dir, e))?;
        result.ok_or_else(|| Error::Storage {
            path: super::database_file(dir),
            message: "holds no Raft log, vote or snapshot: nothing to recover with \
                      --force-new-cluster"
                .into(),
        })
    }
}
