//! The state machine adapter (openraft `RaftStateMachine` + `RaftSnapshotBuilder`): hands committed
//! entries to the user's [`StateMachine`], tracks the last applied log id and membership, and keeps
//! the latest snapshot durably in the Raft database together with that log id and membership. On
//! open it restores the user state machine from that snapshot (its checksum verified first: a damaged
//! snapshot is an error naming its id, never an empty state); openraft then replays the log tail.
//! Openraft only ever calls `apply` with committed entries, so the user's state changes only by
//! committed Raft entries. User calls run on the blocking pool, never on the async runtime.

use std::io::Cursor;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use openraft::storage::RaftStateMachine;
use openraft::{
    EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftSnapshotBuilder, Snapshot,
};
use redb::ReadableDatabase;
use serde::{Deserialize, Serialize};

use super::db::{self, blocking, Disk, DiskError, InFile, SNAPSHOT, SNAPSHOT_KEY, SNAPSHOT_NAME};
use super::record;
use super::types::{
    Entry, LogId, RaftResponse, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};

/// The application state Raft replicates. Implemented by the cluster store; must be deterministic.
pub trait StateMachine: Send + Sync + 'static {
    /// Applies one committed command at log `index`; deterministic. Returns the response bytes
    /// handed back to the proposer. Indexes increase but are not contiguous (Raft's own blank and
    /// membership entries are not passed on).
    fn apply(&mut self, index: u64, command: &[u8]) -> Vec<u8>;
    /// Serializes the whole state (called for snapshots).
    fn snapshot(&self) -> Vec<u8>;
    /// Replaces the whole state from a snapshot taken at log `index`.
    fn restore(&mut self, index: u64, snapshot: &[u8]) -> Result<(), String>;
}

/// The snapshot as stored on disk: metadata (last applied log id, membership) plus the user bytes.
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

/// The user state machine plus what Raft needs to know about it, guarded together so a snapshot
/// always pairs the state with the log id it reflects.
struct Applied {
    sm: Box<dyn StateMachine>,
    last_applied: Option<LogId>,
    membership: StoredMembership,
}

/// The adapter; clones share the same state machine and database.
#[derive(Clone)]
pub(crate) struct StateMachineStore {
    disk: Disk,
    applied: Arc<Mutex<Applied>>,
}

fn lock(applied: &Mutex<Applied>) -> Result<MutexGuard<'_, Applied>, DiskError> {
    applied.lock().map_err(|_| DiskError::Poisoned)
}

/// Names a snapshot whose record failed verification: by its id and index when the damaged bytes still
/// decode that far.
fn describe_damaged(bytes: &[u8]) -> String {
    match record::decode_unverified::<StoredSnapshot>(bytes) {
        Some(s) => format!(
            "the snapshot {} (up to log index {})",
            s.meta.snapshot_id,
            s.meta.last_log_id.map(|l| l.index).unwrap_or(0)
        ),
        None => "the latest snapshot (its id is unreadable)".to_string(),
    }
}

fn read_snapshot(disk: &Disk) -> Result<Option<StoredSnapshot>, DiskError> {
    let tx = disk.db().begin_read().in_file(disk)?;
    let table = tx.open_table(SNAPSHOT).in_file(disk)?;
    let Some(v) = table.get(SNAPSHOT_KEY).in_file(disk)? else {
        return Ok(None);
    };
    let bytes = v.value();
    match record::decode::<StoredSnapshot>(SNAPSHOT_NAME, SNAPSHOT_KEY.as_bytes(), bytes) {
        Ok(s) => Ok(Some(s)),
        Err(e) => Err(disk.corrupt(describe_damaged(bytes), e)),
    }
}

/// The metadata (last log id, membership) of the stored snapshot, if there is one; verified.
pub(crate) fn stored_snapshot_meta(disk: &Disk) -> Result<Option<SnapshotMeta>, DiskError> {
    Ok(read_snapshot(disk)?.map(|s| s.meta))
}

fn write_snapshot(disk: &Disk, snap: &StoredSnapshot) -> Result<(), DiskError> {
    let bytes = db::encode(SNAPSHOT_NAME, SNAPSHOT_KEY.as_bytes(), "the snapshot", snap)?;
    let tx = disk.db().begin_write().in_file(disk)?;
    {
        let mut table = tx.open_table(SNAPSHOT).in_file(disk)?;
        table.insert(SNAPSHOT_KEY, bytes.as_slice()).in_file(disk)?;
    }
    tx.commit().in_file(disk)?;
    Ok(())
}

fn restore_into(
    sm: &mut dyn StateMachine,
    meta: &SnapshotMeta,
    data: &[u8],
) -> Result<(), DiskError> {
    let index = meta.last_log_id.map(|l| l.index).unwrap_or(0);
    sm.restore(index, data)
        .map_err(|message| DiskError::Restore { index, message })
}

fn into_snapshot(stored: StoredSnapshot) -> Snapshot<TypeConfig> {
    Snapshot {
        meta: stored.meta,
        snapshot: Box::new(Cursor::new(stored.data)),
    }
}

fn snapshot_id(last: Option<LogId>) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    match last {
        Some(l) => format!("{}-{}-{nanos}", l.leader_id.term, l.index),
        None => format!("0-0-{nanos}"),
    }
}

impl StateMachineStore {
    /// Wraps `sm`, first restoring it from the latest durable snapshot if there is one.
    pub(crate) async fn open(disk: Disk, sm: Box<dyn StateMachine>) -> Result<Self, DiskError> {
        let disk2 = disk.clone();
        let applied = blocking(move || {
            let mut applied = Applied {
                sm,
                last_applied: None,
                membership: StoredMembership::default(),
            };
            if let Some(snap) = disk2.guarded(read_snapshot)? {
                restore_into(applied.sm.as_mut(), &snap.meta, &snap.data)?;
                applied.last_applied = snap.meta.last_log_id;
                applied.membership = snap.meta.last_membership;
            }
            Ok(applied)
        })
        .await?;
        Ok(Self {
            disk,
            applied: Arc::new(Mutex::new(applied)),
        })
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let disk = self.disk.clone();
        let applied = self.applied.clone();
        blocking(move || {
            let stored = {
                let a = lock(&applied)?;
                StoredSnapshot {
                    data: a.sm.snapshot(),
                    meta: SnapshotMeta {
                        last_log_id: a.last_applied,
                        last_membership: a.membership.clone(),
                        snapshot_id: snapshot_id(a.last_applied),
                    },
                }
            };
            disk.guarded(|d| write_snapshot(d, &stored))?;
            Ok(into_snapshot(stored))
        })
        .await
        .map_err(|e| e.into_storage(ErrorSubject::Snapshot(None), ErrorVerb::Write))
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let a = lock(&self.applied)
            .map_err(|e| e.into_storage(ErrorSubject::StateMachine, ErrorVerb::Read))?;
        Ok((a.last_applied, a.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<RaftResponse>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let applied = self.applied.clone();
        blocking(move || {
            let mut a = lock(&applied)?;
            let mut out = Vec::with_capacity(entries.len());
            for entry in entries {
                let log_id = entry.log_id;
                let response = match entry.payload {
                    EntryPayload::Blank => RaftResponse::default(),
                    EntryPayload::Normal(req) => RaftResponse(a.sm.apply(log_id.index, &req.0)),
                    EntryPayload::Membership(m) => {
                        a.membership = StoredMembership::new(Some(log_id), m);
                        RaftResponse::default()
                    }
                };
                a.last_applied = Some(log_id);
                out.push(response);
            }
            Ok(out)
        })
        .await
        .map_err(|e| e.into_storage(ErrorSubject::StateMachine, ErrorVerb::Write))
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: snapshot.into_inner(),
        };
        let disk = self.disk.clone();
        let applied = self.applied.clone();
        let signature = meta.signature();
        blocking(move || {
            let mut a = lock(&applied)?;
            restore_into(a.sm.as_mut(), &stored.meta, &stored.data)?;
            a.last_applied = stored.meta.last_log_id;
            a.membership = stored.meta.last_membership.clone();
            disk.guarded(|d| write_snapshot(d, &stored))
        })
        .await
        .map_err(|e| e.into_storage(ErrorSubject::Snapshot(Some(signature)), ErrorVerb::Write))
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        self.disk
            .run(|d| Ok(read_snapshot(d)?.map(into_snapshot)))
            .await
            .map_err(|e| e.into_storage(ErrorSubject::Snapshot(None), ErrorVerb::Read))
    }
}
