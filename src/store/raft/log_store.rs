//! Durable Raft log and vote storage on redb (openraft `RaftLogStorage` + `RaftLogReader`,
//! storage-v2). One write transaction per append batch; the flush callback fires only after that
//! transaction committed (fsync'd). Also persists the vote, the committed log id (lazily, not
//! fsync'd: losing it only means replaying more) and the last purged log id. Every redb call runs on
//! the blocking pool, guarded; every entry read is verified (its record checksum, and that it is the
//! entry of its index): a damaged one is an error naming the file and the index, which stops Raft.
//! Does not apply anything: that is `state_machine`'s job.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader, Vote};
use redb::{ReadableDatabase, ReadableTable};

use super::db::{
    self, Disk, DiskError, InFile, KEY_COMMITTED, KEY_LAST_PURGED, KEY_VOTE, LOG, LOG_NAME, META,
    META_NAME,
};
use super::record::{self, RecordError};
use super::types::{Entry, LogId, NodeId, StorageError, TypeConfig};

/// The log store; cheap to clone (clones share the database).
#[derive(Clone)]
pub(crate) struct LogStore {
    disk: Disk,
}

impl LogStore {
    pub(crate) fn new(disk: Disk) -> Self {
        Self { disk }
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

/// Verifies and decodes the entry stored under `index`: its checksum, and that it is the entry of that index.
pub(crate) fn decode_entry(disk: &Disk, index: u64, bytes: &[u8]) -> Result<Entry, DiskError> {
    let what = || format!("Raft log entry {index}");
    let entry: Entry = record::decode(LOG_NAME, &index.to_be_bytes(), bytes)
        .map_err(|e| disk.corrupt(what(), e))?;
    if entry.log_id.index != index {
        return Err(disk.corrupt(
            what(),
            RecordError::Decode(format!("holds the entry of index {}", entry.log_id.index)),
        ));
    }
    Ok(entry)
}

fn read_entries(disk: &Disk, lo: u64, hi: Option<u64>) -> Result<Vec<Entry>, DiskError> {
    let tx = disk.db().begin_read().in_file(disk)?;
    let table = tx.open_table(LOG).in_file(disk)?;
    let iter = match hi {
        Some(hi) if hi <= lo => return Ok(Vec::new()),
        Some(hi) => table.range(lo..hi).in_file(disk)?,
        None => table.range(lo..).in_file(disk)?,
    };
    let mut out = Vec::new();
    for item in iter {
        let (k, v) = item.in_file(disk)?;
        out.push(decode_entry(disk, k.value(), v.value())?);
    }
    Ok(out)
}

fn read_log_state(disk: &Disk) -> Result<LogState<TypeConfig>, DiskError> {
    let last_purged: Option<LogId> = disk.read_meta(KEY_LAST_PURGED)?;
    let tx = disk.db().begin_read().in_file(disk)?;
    let table = tx.open_table(LOG).in_file(disk)?;
    let last = match table.last().in_file(disk)? {
        Some((k, v)) => Some(decode_entry(disk, k.value(), v.value())?.log_id),
        None => None,
    };
    Ok(LogState {
        last_log_id: last.or(last_purged),
        last_purged_log_id: last_purged,
    })
}

fn append_entries(disk: &Disk, entries: Vec<Entry>) -> Result<(), DiskError> {
    let tx = disk.db().begin_write().in_file(disk)?;
    {
        let mut table = tx.open_table(LOG).in_file(disk)?;
        for entry in &entries {
            let index = entry.log_id.index;
            let bytes = db::encode(LOG_NAME, &index.to_be_bytes(), "a log entry", entry)?;
            table.insert(index, bytes.as_slice()).in_file(disk)?;
        }
    }
    tx.commit().in_file(disk)?;
    Ok(())
}

/// Removes entries with index `>= from`.
fn truncate_from(disk: &Disk, from: u64) -> Result<(), DiskError> {
    let tx = disk.db().begin_write().in_file(disk)?;
    {
        let mut table = tx.open_table(LOG).in_file(disk)?;
        table.retain_in(from.., |_, _| false).in_file(disk)?;
    }
    tx.commit().in_file(disk)?;
    Ok(())
}

/// Records `upto` as purged and removes entries with index `<= upto.index`, atomically.
fn purge_upto(disk: &Disk, upto: LogId) -> Result<(), DiskError> {
    let tx = disk.db().begin_write().in_file(disk)?;
    {
        let mut meta = tx.open_table(META).in_file(disk)?;
        let bytes = db::encode(
            META_NAME,
            KEY_LAST_PURGED.as_bytes(),
            KEY_LAST_PURGED,
            &upto,
        )?;
        meta.insert(KEY_LAST_PURGED, bytes.as_slice())
            .in_file(disk)?;
        let mut table = tx.open_table(LOG).in_file(disk)?;
        table.retain_in(..=upto.index, |_, _| false).in_file(disk)?;
    }
    tx.commit().in_file(disk)?;
    Ok(())
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let (lo, hi) = index_bounds(&range);
        self.disk
            .run(move |d| read_entries(d, lo, hi))
            .await
            .map_err(|e| e.into_storage(ErrorSubject::Logs, ErrorVerb::Read))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        self.disk
            .run(read_log_state)
            .await
            .map_err(|e| e.into_storage(ErrorSubject::Logs, ErrorVerb::Read))
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        let vote = *vote;
        self.disk
            .run(move |d| d.write_meta(KEY_VOTE, Some(&vote), true))
            .await
            .map_err(|e| e.into_storage(ErrorSubject::Vote, ErrorVerb::Write))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        self.disk
            .run(|d| d.read_meta(KEY_VOTE))
            .await
            .map_err(|e| e.into_storage(ErrorSubject::Vote, ErrorVerb::Read))
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.disk
            .run(move |d| d.write_meta(KEY_COMMITTED, committed.as_ref(), false))
            .await
            .map_err(|e| e.into_storage(ErrorSubject::Store, ErrorVerb::Write))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        self.disk
            .run(|d| d.read_meta(KEY_COMMITTED))
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
        match self.disk.run(move |d| append_entries(d, entries)).await {
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
        self.disk
            .run(move |d| truncate_from(d, log_id.index))
            .await
            .map_err(|e| e.into_storage(ErrorSubject::Logs, ErrorVerb::Delete))
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.disk
            .run(move |d| purge_upto(d, log_id))
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

    fn entry(index: u64) -> Entry {
        Entry {
            log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), index),
            payload: openraft::EntryPayload::Normal(super::super::types::RaftRequest(
                b"corruptme".to_vec(),
            )),
        }
    }

    fn raw(disk: &Disk, index: u64) -> Vec<u8> {
        let tx = disk.db().begin_read().expect("tx");
        let t = tx.open_table(LOG).expect("table");
        let v = t.get(index).expect("get").expect("entry");
        v.value().to_vec()
    }

    fn put_raw(disk: &Disk, index: u64, bytes: &[u8]) {
        let tx = disk.db().begin_write().expect("tx");
        {
            let mut t = tx.open_table(LOG).expect("table");
            t.insert(index, bytes).expect("insert");
        }
        tx.commit().expect("commit");
    }

    #[tokio::test]
    async fn a_flipped_byte_in_an_entry_is_an_error_naming_file_and_index() {
        let dir = tempfile::tempdir().expect("tempdir");
        let disk = db::open(dir.path()).expect("open");
        append_entries(&disk, (1..=3).map(entry).collect()).expect("append");
        let mut store = LogStore::new(disk.clone());
        assert_eq!(
            store.try_get_log_entries(1..=3).await.expect("read").len(),
            3
        );

        let mut bytes = raw(&disk, 2);
        let at = bytes.len() - 3;
        bytes[at] ^= 0x40;
        put_raw(&disk, 2, &bytes);
        let e = store.try_get_log_entries(0..10).await.unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("Raft log entry 2 is corrupt (checksum mismatch"),
            "{text}"
        );
        assert!(text.contains(&disk.file().display().to_string()), "{text}");
        assert!(disk.fault().is_some_and(|f| f.contains("Raft log entry 2")));
        // the entries around it still read; the last one is what the log state needs
        assert_eq!(
            store.try_get_log_entries(3..4).await.expect("read").len(),
            1
        );
        assert!(store.get_log_state().await.is_ok());
    }

    #[tokio::test]
    async fn an_entry_under_the_wrong_index_or_garbage_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let disk = db::open(dir.path()).expect("open");
        append_entries(&disk, vec![entry(1)]).expect("append");
        let moved = raw(&disk, 1);
        put_raw(&disk, 5, &moved);
        let mut store = LogStore::new(disk.clone());
        let e = store.get_log_state().await.unwrap_err().to_string();
        assert!(
            e.contains("Raft log entry 5 is corrupt (checksum mismatch"),
            "{e}"
        );
        put_raw(&disk, 5, &[0xff, 0xff]);
        let e = store
            .try_get_log_entries(5..6)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("Raft log entry 5 is corrupt (record is truncated"),
            "{e}"
        );
    }
}
