//! The redb file that holds everything Raft must keep across restarts: the log, the vote, the
//! committed and last-purged log ids, and the latest snapshot. Owns the table layout, the on-disk
//! format version and its migration, the [`Disk`] handle (the database and its file name) whose
//! calls run off the async runtime with a storage panic caught, and the errors naming the file.
//! Every value is a checksummed `record`, verified on every read. Knows nothing of openraft's
//! traits; `log_store` and `state_machine` build on it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::guard;
use super::record::{self, RecordError};
use super::types::{Entry, StorageError};

/// Log entries by index; values are records of `Entry`.
pub(crate) const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
/// Small named values (vote, committed, last purged) as records; the format version as bare postcard.
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");
/// The latest snapshot under [`SNAPSHOT_KEY`]; a record of `StoredSnapshot`.
pub(crate) const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_snapshot");

/// Table names as the checksums cover them.
pub(crate) const LOG_NAME: &str = "raft_log";
pub(crate) const META_NAME: &str = "raft_meta";
pub(crate) const SNAPSHOT_NAME: &str = "raft_snapshot";

pub(crate) const KEY_FORMAT: &str = "format_version";
pub(crate) const KEY_VOTE: &str = "vote";
pub(crate) const KEY_COMMITTED: &str = "committed";
pub(crate) const KEY_LAST_PURGED: &str = "last_purged";
pub(crate) const SNAPSHOT_KEY: &str = "current";

/// Version of the layout above; bump it (and migrate) when a table or value encoding changes.
/// 1: bare postcard values. 2: every value a checksummed record (format 1 is migrated at open).
pub(crate) const FORMAT_VERSION: u32 = 2;

/// The file name of the database inside the Raft state directory.
pub(crate) const DB_FILE: &str = "raft.redb";

/// What the operator should do about a damaged database.
pub(crate) const ADVICE: &str = "swarmd will not start over damaged Raft state: restore this manager's \
     state directory from a backup, or from another manager of the cluster (swarmd does not start an empty \
     cluster in its place)";

/// Anything that can go wrong reading or writing the Raft database.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DiskError {
    /// The state directory could not be created.
    #[error("cannot create raft state directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    /// redb refused an operation (I/O error, corruption it detected, lock held).
    #[error("{}: {source}{}", file.display(), advice_for(source))]
    Db { file: PathBuf, source: redb::Error },
    /// A stored value failed its checksum or did not decode.
    #[error("{}: {what} is corrupt ({error}). {ADVICE}", file.display())]
    Corrupt {
        file: PathBuf,
        what: String,
        error: RecordError,
    },
    /// The storage library panicked on the file (a corrupt page).
    #[error("{}: the storage library failed reading the file, which is probably corrupt ({message}). {ADVICE}", file.display())]
    Panic { file: PathBuf, message: String },
    /// A value could not be encoded.
    #[error("cannot encode {what}: {error}")]
    Encode { what: String, error: RecordError },
    /// The file was written by a layout this build does not understand.
    #[error(
        "{}: raft database format version {found} is not supported (this build reads {FORMAT_VERSION} and migrates 1)", file.display()
    )]
    Version { file: PathBuf, found: u32 },
    /// The blocking task running a storage call panicked or was cancelled.
    #[error("raft storage task failed: {0}")]
    Join(String),
    /// A previous state machine call panicked while holding the state machine.
    #[error("state machine is poisoned by an earlier panic")]
    Poisoned,
    /// The user state machine rejected a snapshot.
    #[error("state machine cannot restore the snapshot at index {index}: {message}")]
    Restore { index: u64, message: String },
}

/// What to do about a redb error: corruption needs a restore, a full disk needs space.
fn advice_for(e: &redb::Error) -> String {
    match e {
        redb::Error::Corrupted(_) => format!(". {ADVICE}"),
        redb::Error::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => {
            format!(". {ADVICE}")
        }
        redb::Error::Io(io) if io.kind() == std::io::ErrorKind::StorageFull => {
            "; free space on that filesystem and start swarmd again (nothing committed is lost)"
                .to_string()
        }
        _ => String::new(),
    }
}

impl DiskError {
    /// Wraps this error as openraft's storage error about `subject`.
    pub(crate) fn into_storage(
        self,
        subject: openraft::ErrorSubject<u64>,
        verb: openraft::ErrorVerb,
    ) -> StorageError {
        openraft::StorageIOError::new(subject, verb, &self).into()
    }
}

/// Runs a blocking call on tokio's blocking pool so the async runtime never waits on disk.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T, DiskError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, DiskError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| DiskError::Join(e.to_string()))?
}

/// The open database and its file; cheap to clone (clones share both). Remembers the first storage
/// error, the reason Raft stops.
#[derive(Clone)]
pub(crate) struct Disk {
    db: Arc<Database>,
    file: Arc<PathBuf>,
    fault: Arc<OnceLock<String>>,
}

/// Converts redb's error types into [`DiskError`] naming `file`.
pub(crate) trait InFile<T> {
    fn in_file(self, disk: &Disk) -> Result<T, DiskError>;
}

impl<T, E: Into<redb::Error>> InFile<T> for Result<T, E> {
    fn in_file(self, disk: &Disk) -> Result<T, DiskError> {
        self.map_err(|e| DiskError::Db {
            file: disk.file().to_path_buf(),
            source: e.into(),
        })
    }
}

impl Disk {
    /// The database.
    pub(crate) fn db(&self) -> &Database {
        &self.db
    }

    /// The database file.
    pub(crate) fn file(&self) -> &Path {
        &self.file
    }

    /// The first storage error seen, if any.
    pub(crate) fn fault(&self) -> Option<String> {
        self.fault.get().cloned()
    }

    /// A corrupt stored value, named `what`.
    pub(crate) fn corrupt(&self, what: String, error: RecordError) -> DiskError {
        DiskError::Corrupt {
            file: self.file().to_path_buf(),
            what,
            error,
        }
    }

    /// Runs the storage call `f` here (on a blocking thread already), a panic inside it becoming
    /// [`DiskError::Panic`]; an error is remembered as the fault.
    pub(crate) fn guarded<T>(
        &self,
        f: impl FnOnce(&Disk) -> Result<T, DiskError>,
    ) -> Result<T, DiskError> {
        let result = guard::catch(|| f(self)).unwrap_or_else(|message| {
            Err(DiskError::Panic {
                file: self.file().to_path_buf(),
                message,
            })
        });
        if let Err(e) = &result {
            let _ = self.fault.set(e.to_string());
        }
        result
    }

    /// Runs the storage call `f` on the blocking pool, guarded.
    pub(crate) async fn run<T, F>(&self, f: F) -> Result<T, DiskError>
    where
        T: Send + 'static,
        F: FnOnce(&Disk) -> Result<T, DiskError> + Send + 'static,
    {
        let disk = self.clone();
        blocking(move || disk.guarded(f)).await
    }

    /// Reads and verifies one META value.
    pub(crate) fn read_meta<T: DeserializeOwned>(
        &self,
        key: &'static str,
    ) -> Result<Option<T>, DiskError> {
        let tx = self.db.begin_read().in_file(self)?;
        let table = tx.open_table(META).in_file(self)?;
        match table.get(key).in_file(self)? {
            Some(v) => record::decode(META_NAME, key.as_bytes(), v.value())
                .map(Some)
                .map_err(|e| self.corrupt(format!("the Raft {key}"), e)),
            None => Ok(None),
        }
    }

    /// Writes (or with `None`, removes) one META value in its own transaction. With `durable` false
    /// the commit is not fsync'd: it becomes durable with the next durable commit, or is lost on a crash.
    pub(crate) fn write_meta<T: Serialize>(
        &self,
        key: &'static str,
        value: Option<&T>,
        durable: bool,
    ) -> Result<(), DiskError> {
        let mut tx = self.db.begin_write().in_file(self)?;
        if !durable {
            tx.set_durability(redb::Durability::None).in_file(self)?;
        }
        {
            let mut table = tx.open_table(META).in_file(self)?;
            match value {
                Some(v) => {
                    let bytes = encode(META_NAME, key.as_bytes(), key, v)?;
                    table.insert(key, bytes.as_slice()).in_file(self)?;
                }
                None => {
                    table.remove(key).in_file(self)?;
                }
            }
        }
        tx.commit().in_file(self)?;
        Ok(())
    }
}

/// Encodes a value as the record of `table` under `key`; `what` names it in an error.
pub(crate) fn encode<T: Serialize>(
    table: &str,
    key: &[u8],
    what: &str,
    value: &T,
) -> Result<Vec<u8>, DiskError> {
    record::encode(table, key, value).map_err(|error| DiskError::Encode {
        what: what.to_string(),
        error,
    })
}

/// Opens (creating if needed) the Raft database in `dir`, creates the tables, checks the format
/// and migrates a format-1 file. Blocking: call it through [`blocking`]. A panic of the storage
/// library on a corrupt file is an error naming the file.
pub(crate) fn open(dir: &Path) -> Result<Disk, DiskError> {
    std::fs::create_dir_all(dir).map_err(|source| DiskError::CreateDir {
        path: dir.to_path_buf(),
        source,
    })?;
    let file = dir.join(DB_FILE);
    let opened = guard::catch(|| Database::create(&file)).map_err(|message| DiskError::Panic {
        file: file.clone(),
        message,
    })?;
    let db = opened.map_err(|e| DiskError::Db {
        file: file.clone(),
        source: e.into(),
    })?;
    let disk = Disk {
        db: Arc::new(db),
        file: Arc::new(file),
        fault: Arc::new(OnceLock::new()),
    };
    disk.guarded(prepare)?;
    Ok(disk)
}

/// Creates the tables, writes the format version of a new file, migrates a format-1 file.
fn prepare(disk: &Disk) -> Result<(), DiskError> {
    let tx = disk.db.begin_write().in_file(disk)?;
    {
        tx.open_table(LOG).in_file(disk)?;
        tx.open_table(SNAPSHOT).in_file(disk)?;
        let mut meta = tx.open_table(META).in_file(disk)?;
        let found = match meta.get(KEY_FORMAT).in_file(disk)? {
            Some(v) => Some(
                record::decode_legacy::<u32>(v.value())
                    .map_err(|e| disk.corrupt("the format version".into(), e))?,
            ),
            None => None,
        };
        let empty = tx.open_table(LOG).in_file(disk)?.is_empty().in_file(disk)?
            && tx
                .open_table(SNAPSHOT)
                .in_file(disk)?
                .is_empty()
                .in_file(disk)?;
        match found {
            Some(FORMAT_VERSION) => {}
            // A format-1 file, or one that lost its version but holds data: refuse the latter.
            Some(1) => {
                drop(meta);
                migrate_from_1(disk, &tx)?;
                meta = tx.open_table(META).in_file(disk)?;
            }
            None if empty => {}
            None => {
                return Err(disk.corrupt(
                    "the format version".into(),
                    RecordError::Decode("missing, though the file holds Raft data".into()),
                ))
            }
            Some(found) => {
                return Err(DiskError::Version {
                    file: disk.file().to_path_buf(),
                    found,
                })
            }
        }
        if found != Some(FORMAT_VERSION) {
            let bytes = postcard::to_allocvec(&FORMAT_VERSION).map_err(|e| DiskError::Encode {
                what: "the format version".into(),
                error: RecordError::Encode(e.to_string()),
            })?;
            meta.insert(KEY_FORMAT, bytes.as_slice()).in_file(disk)?;
        }
    }
    tx.commit().in_file(disk)?;
    Ok(())
}

/// Rewrites every value of a format-1 file (bare postcard) as a checksummed record, in the caller's
/// transaction: all of it or nothing. Log entries are decoded first, so a value that is already
/// damaged stops the migration with an error naming it.
fn migrate_from_1(disk: &Disk, tx: &redb::WriteTransaction) -> Result<(), DiskError> {
    let mut log = tx.open_table(LOG).in_file(disk)?;
    let mut entries = Vec::new();
    for item in log.iter().in_file(disk)? {
        let (k, v) = item.in_file(disk)?;
        let index = k.value();
        let what = || format!("Raft log entry {index} (format 1, unchecksummed)");
        let entry: Entry = record::decode_legacy(v.value()).map_err(|e| disk.corrupt(what(), e))?;
        if entry.log_id.index != index {
            return Err(disk.corrupt(
                what(),
                RecordError::Decode(format!("holds the entry of index {}", entry.log_id.index)),
            ));
        }
        entries.push((
            index,
            record::wrap(LOG_NAME, &index.to_be_bytes(), v.value()),
        ));
    }
    for (index, bytes) in &entries {
        log.insert(*index, bytes.as_slice()).in_file(disk)?;
    }
    let mut meta = tx.open_table(META).in_file(disk)?;
    for key in [KEY_VOTE, KEY_COMMITTED, KEY_LAST_PURGED] {
        let old = meta.get(key).in_file(disk)?.map(|v| v.value().to_vec());
        if let Some(old) = old {
            let bytes = record::wrap(META_NAME, key.as_bytes(), &old);
            meta.insert(key, bytes.as_slice()).in_file(disk)?;
        }
    }
    let mut snap = tx.open_table(SNAPSHOT).in_file(disk)?;
    let old = snap
        .get(SNAPSHOT_KEY)
        .in_file(disk)?
        .map(|v| v.value().to_vec());
    if let Some(old) = old {
        let bytes = record::wrap(SNAPSHOT_NAME, SNAPSHOT_KEY.as_bytes(), &old);
        snap.insert(SNAPSHOT_KEY, bytes.as_slice()).in_file(disk)?;
    }
    tracing::info!(
        file = %disk.file().display(),
        entries = entries.len(),
        "migrated the raft database from format 1 to 2 (checksummed records)"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw_insert<K: redb::Key + 'static>(
        disk: &Disk,
        table: TableDefinition<K, &[u8]>,
        key: K::SelfType<'_>,
        bytes: &[u8],
    ) {
        let tx = disk.db().begin_write().expect("tx");
        {
            let mut t = tx.open_table(table).expect("table");
            t.insert(key, bytes).expect("insert");
        }
        tx.commit().expect("commit");
    }

    fn format_of(disk: &Disk) -> u32 {
        let tx = disk.db().begin_read().expect("tx");
        let t = tx.open_table(META).expect("table");
        let v = t.get(KEY_FORMAT).expect("get").expect("format");
        record::decode_legacy(v.value()).expect("u32")
    }

    #[test]
    fn reopen_keeps_meta_and_rejects_unknown_format() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let disk = open(dir.path()).expect("open");
            assert_eq!(format_of(&disk), FORMAT_VERSION);
            disk.write_meta(KEY_COMMITTED, Some(&7u64), true)
                .expect("write");
        }
        {
            let disk = open(dir.path()).expect("reopen");
            assert_eq!(disk.read_meta::<u64>(KEY_COMMITTED).expect("read"), Some(7));
            let v99 = postcard::to_allocvec(&99u32).unwrap();
            raw_insert(&disk, META, KEY_FORMAT, &v99);
        }
        match open(dir.path()) {
            Err(e @ DiskError::Version { found: 99, .. }) => {
                assert!(e.to_string().contains("raft.redb"), "{e}")
            }
            other => panic!("expected a version error, got {:?}", other.map(|_| ())),
        }
    }

    #[test]
    fn a_corrupt_value_is_an_error_naming_file_and_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let disk = open(dir.path()).expect("open");
        disk.write_meta(KEY_VOTE, Some(&5u64), true).expect("write");
        let tx = disk.db().begin_read().expect("tx");
        let mut bytes = tx
            .open_table(META)
            .expect("table")
            .get(KEY_VOTE)
            .expect("get")
            .expect("vote")
            .value()
            .to_vec();
        drop(tx);
        *bytes.last_mut().expect("byte") ^= 1;
        raw_insert(&disk, META, KEY_VOTE, &bytes);
        let e = disk.read_meta::<u64>(KEY_VOTE).unwrap_err();
        assert!(
            matches!(
                e,
                DiskError::Corrupt {
                    error: RecordError::Checksum { .. },
                    ..
                }
            ),
            "{e:?}"
        );
        let text = e.to_string();
        let file = dir.path().join(DB_FILE).display().to_string();
        assert!(
            text.starts_with(&format!(
                "{file}: the Raft vote is corrupt (checksum mismatch"
            )),
            "{text}"
        );
        assert!(
            text.contains("restore this manager's state directory"),
            "{text}"
        );
    }

    /// Writes a database the way format 1 did: bare postcard values.
    fn write_format_1(dir: &Path, entries: &[Entry], last_byte_of_2: Option<u8>) {
        let disk = open(dir).expect("open");
        let v1 = postcard::to_allocvec(&1u32).unwrap();
        raw_insert(&disk, META, KEY_FORMAT, &v1);
        for e in entries {
            let mut bytes = postcard::to_allocvec(e).unwrap();
            if let (2, Some(b)) = (e.log_id.index, last_byte_of_2) {
                bytes = vec![b; 3];
            }
            raw_insert(&disk, LOG, e.log_id.index, &bytes);
        }
        let committed = entries.last().map(|e| e.log_id);
        raw_insert(
            &disk,
            META,
            KEY_COMMITTED,
            &postcard::to_allocvec(&committed.expect("one")).unwrap(),
        );
        raw_insert(
            &disk,
            SNAPSHOT,
            SNAPSHOT_KEY,
            &postcard::to_allocvec(&(1u8, 2u8)).unwrap(),
        );
    }

    fn entries(n: u64) -> Vec<Entry> {
        (1..=n)
            .map(|i| Entry {
                log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), i),
                payload: openraft::EntryPayload::Normal(super::super::types::RaftRequest(
                    vec![i as u8; 4],
                )),
            })
            .collect()
    }

    #[test]
    fn a_format_1_file_is_migrated_to_checksummed_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_format_1(dir.path(), &entries(3), None);
        let disk = open(dir.path()).expect("migrating open");
        assert_eq!(format_of(&disk), 2);
        let committed: Option<crate::store::raft::types::LogId> =
            disk.read_meta(KEY_COMMITTED).expect("read");
        assert_eq!(committed.map(|l| l.index), Some(3));
        let tx = disk.db().begin_read().expect("tx");
        let log = tx.open_table(LOG).expect("table");
        for i in 1..=3u64 {
            let v = log.get(i).expect("get").expect("entry");
            let e: Entry = record::decode(LOG_NAME, &i.to_be_bytes(), v.value()).expect("record");
            assert_eq!(e, entries(3)[i as usize - 1]);
        }
        let snap = tx.open_table(SNAPSHOT).expect("table");
        let v = snap.get(SNAPSHOT_KEY).expect("get").expect("snapshot");
        let pair: (u8, u8) =
            record::decode(SNAPSHOT_NAME, SNAPSHOT_KEY.as_bytes(), v.value()).expect("record");
        assert_eq!(pair, (1, 2));
    }

    #[test]
    fn a_damaged_format_1_entry_stops_the_migration_and_changes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_format_1(dir.path(), &entries(3), Some(0xff));
        let e = open(dir.path()).map(|_| ()).unwrap_err();
        assert!(
            e.to_string()
                .contains("Raft log entry 2 (format 1, unchecksummed) is corrupt"),
            "{e}"
        );
        // still format 1: nothing was rewritten
        let db = Database::create(dir.path().join(DB_FILE)).expect("redb");
        let tx = db.begin_read().expect("tx");
        let v = tx
            .open_table(META)
            .expect("t")
            .get(KEY_FORMAT)
            .expect("g")
            .expect("f")
            .value()
            .to_vec();
        assert_eq!(record::decode_legacy::<u32>(&v).unwrap(), 1);
    }

    #[test]
    fn data_without_a_format_version_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let disk = open(dir.path()).expect("open");
        raw_insert(&disk, LOG, 1u64, b"x");
        let tx = disk.db().begin_write().expect("tx");
        tx.open_table(META)
            .expect("t")
            .remove(KEY_FORMAT)
            .expect("rm");
        tx.commit().expect("commit");
        drop(disk);
        let e = open(dir.path()).map(|_| ()).unwrap_err();
        assert!(
            e.to_string().contains("the format version is corrupt"),
            "{e}"
        );
    }
}
