//! Durable Raft log and vote storage on redb (openraft `RaftLogStorage` + `RaftLogReader`,
//! storage-v2). One write transaction per append batch; the flush callback fires only after that
//! transaction committed (fsync'd). Also persists the vote, the committed log id (lazily, not
//! fsync'd: losing it only means replaying more) and the last purged log id. Every redb call runs on
//! the blocking pool. Does not apply anything: that is `state_machine`'s job.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader, Vote};
use redb::{Database, ReadableDatabase, ReadableTable};

use super::db::{self, blocking, DiskError, KEY_COMMITTED, KEY_LAST_PURGED, KEY_VOTE, LOG, META};
use super::types::{Entry, LogId, NodeId, StorageError, TypeConfig};

/// The log store; cheap to clone (clones share the database).
#[derive(Clone)]
pub(crate) struct LogStore {
    db: Arc<Database>,
}

impl LogStore {
    pub(crate) fn new(db: Arc<Database>) -> Self {
        Self { db }
    }
}

/// Turns any range of indexes into `[lo, hi)`, `hi = None` meaning unbounded.
fn index_bounds(range: &impl RangeBounds<u64>) -> (u64, Option<u64>) {
    let lo = match range.start_bound() {
        Bound::Included(&i) => i,
        Bound::Excluded(&i) => i.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let hi = match range.end_bound() {
        Bound::Included(&i) => i.checked_add(1),
        Bound::Excluded(&i) => Some(i),
        Bound::Unbounded => None,
    };
    (lo, hi)
}

fn read_entries(db: &Database, lo: u64, hi: Option<u64>) -> Result<Vec<Entry>, DiskError> {
    let tx = db.begin_read()?;
    let table = tx.open_table(LOG)?;
    let iter = match hi {
        Some(hi) if hi <= lo => return Ok(Vec::new()),
        Some(hi) => table.range(lo..hi)?,
        None => table.range(lo..)?,
    };
    let mut out = Vec::new();
    for item in iter {
        let (_, v) = item?;
        out.push(db::decode::<Entry>("log entry", v.value())?);
    }
    Ok(out)
}

fn read_log_state(db: &Database) -> Result<LogState<TypeConfig>, DiskError> {
    let last_purged: Option<LogId> = db::read_meta(db, KEY_LAST_PURGED)?;
    let tx = db.begin_read()?;
    let table = tx.open_table(LOG)?;
    let last = match table.last()? {
        Some((_, v)) => Some(db::decode::<Entry>("log entry", v.value())?.log_id),
        None => None,
    };
    Ok(LogState {
        last_log_id: last.or(last_purged),
        last_purged_log_id: last_purged,
    })
}

fn append_entries(db: &Database, entries: Vec<Entry>) -> Result<(), DiskError> {
    let tx = db.begin_write()?;
    {
        let mut table = tx.open_table(LOG)?;
        for entry in &entries {
            let bytes = db::encode("log entry", entry)?;
            table.insert(entry.log_id.index, bytes.as_slice())?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// Removes entries with index `>= from`.
fn truncate_from(db: &Database, from: u64) -> Result<(), DiskError> {
    let tx = db.begin_write()?;
    {
        let mut table = tx.open_table(LOG)?;
        table.retain_in(from.., |_, _| false)?;
    }
    tx.commit()?;
    Ok(())
}

/// Records `upto` as purged and removes entries with index `<= upto.index`, atomically.
fn purge_upto(db: &Database, upto: LogId) -> Result<(), DiskError> {
    let tx = db.begin_write()?;
    {
        let mut meta = tx.open_table(META)?;
        meta.insert(
            KEY_LAST_PURGED,
            db::encode(KEY_LAST_PURGED, &upto)?.as_slice(),
        )?;
        let mut table = tx.open_table(LOG)?;
        table.retain_in(..=upto.index, |_, _| false)?;
    }
    tx.commit()?;
    Ok(())
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let (lo, hi) = index_bounds(&range);
        let db = self.db.clone();
        blocking(move || read_entries(&db, lo, hi))
            .await
            .map_err(|e| e.into_storage(ErrorSubject::Logs, ErrorVerb::Read))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let db = self.db.clone();
        blocking(move || read_log_state(&db))
            .await
            .map_err(|e| e.into_storage(ErrorSubject::Logs, ErrorVerb::Read))
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        let db = self.db.clone();
        let vote = *vote;
        blocking(move || db::write_meta(&db, KEY_VOTE, Some(&vote), true))
            .await
            .map_err(|e| e.into_storage(ErrorSubject::Vote, ErrorVerb::Write))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        let db = self.db.clone();
        blocking(move || db::read_meta(&db, KEY_VOTE))
            .await
            .map_err(|e| e.into_storage(ErrorSubject::Vote, ErrorVerb::Read))
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let db = self.db.clone();
        blocking(move || db::write_meta(&db, KEY_COMMITTED, committed.as_ref(), false))
            .await
            .map_err(|e| e.into_storage(ErrorSubject::Store, ErrorVerb::Write))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        let db = self.db.clone();
        blocking(move || db::read_meta(&db, KEY_COMMITTED))
            .await
            .map_err(|e| e.into_storage(ErrorSubject::Store, ErrorVerb::Read))
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let db = self.db.clone();
        match blocking(move || append_entries(&db, entries)).await {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(e.into_storage(ErrorSubject::Logs, ErrorVerb::Write))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let db = self.db.clone();
        blocking(move || truncate_from(&db, log_id.index))
            .await
            .map_err(|e| e.into_storage(ErrorSubject::Logs, ErrorVerb::Delete))
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let db = self.db.clone();
        blocking(move || purge_upto(&db, log_id))
            .await
            .map_err(|e| e.into_storage(ErrorSubject::Logs, ErrorVerb::Delete))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_bounds_cover_every_range_shape() {
        assert_eq!(index_bounds(&(3..7)), (3, Some(7)));
        assert_eq!(index_bounds(&(3..=7)), (3, Some(8)));
        assert_eq!(index_bounds(&(3..)), (3, None));
        assert_eq!(index_bounds(&(..)), (0, None));
        assert_eq!(index_bounds(&(..=u64::MAX)), (0, None));
        assert_eq!(
            index_bounds(&(Bound::Excluded(2u64), Bound::Excluded(4u64))),
            (3, Some(4))
        );
    }

    #[tokio::test]
    async fn corrupt_entry_is_a_storage_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = db::open(dir.path()).expect("open");
        let tx = db.begin_write().expect("tx");
        {
            let mut t = tx.open_table(LOG).expect("table");
            t.insert(1u64, [0xffu8, 0xff].as_slice()).expect("insert");
        }
        tx.commit().expect("commit");
        let mut store = LogStore::new(db);
        assert!(store.try_get_log_entries(0..10).await.is_err());
        assert!(store.get_log_state().await.is_err());
    }
}
