//! The redb file that holds everything Raft must keep across restarts: the log, the vote, the
//! committed and last-purged log ids, and the latest snapshot. Owns the table layout, the on-disk
//! format version, value encoding (postcard) and the helper that runs blocking redb calls off the
//! async runtime. Knows nothing of openraft's traits; `log_store` and `state_machine` build on it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::types::StorageError;

/// Log entries by index; values are postcard-encoded `Entry`.
pub(crate) const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
/// Small named values (vote, committed, last purged, format version); postcard-encoded.
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");
/// The latest snapshot under [`SNAPSHOT_KEY`]; postcard-encoded `StoredSnapshot`.
pub(crate) const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_snapshot");

pub(crate) const KEY_FORMAT: &str = "format_version";
pub(crate) const KEY_VOTE: &str = "vote";
pub(crate) const KEY_COMMITTED: &str = "committed";
pub(crate) const KEY_LAST_PURGED: &str = "last_purged";
pub(crate) const SNAPSHOT_KEY: &str = "current";

/// Version of the layout above; bump it (and migrate) when a table or value encoding changes.
pub(crate) const FORMAT_VERSION: u32 = 1;

/// The file name of the database inside the Raft state directory.
pub(crate) const DB_FILE: &str = "raft.redb";

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
    #[error("raft database: {0}")]
    Db(#[from] redb::Error),
    /// A stored value did not decode: the file is corrupt or from an unknown version.
    #[error("corrupt {what} in raft database: {source}")]
    Decode {
        what: &'static str,
        source: postcard::Error,
    },
    /// A value could not be encoded.
    #[error("cannot encode {what}: {source}")]
    Encode {
        what: &'static str,
        source: postcard::Error,
    },
    /// The file was written by a layout this build does not understand.
    #[error(
        "raft database format version {found} is not supported (this build reads {FORMAT_VERSION})"
    )]
    Version { found: u32 },
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

macro_rules! redb_error_from {
    ($($t:ty),*) => {$(
        impl From<$t> for DiskError {
            fn from(e: $t) -> Self {
                DiskError::Db(redb::Error::from(e))
            }
        }
    )*};
}
redb_error_from!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

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

/// Encodes a stored value.
pub(crate) fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, DiskError> {
    postcard::to_allocvec(value).map_err(|source| DiskError::Encode { what, source })
}

/// Decodes a stored value; a failure means corrupt data, never a panic.
pub(crate) fn decode<T: DeserializeOwned>(
    what: &'static str,
    bytes: &[u8],
) -> Result<T, DiskError> {
    postcard::from_bytes(bytes).map_err(|source| DiskError::Decode { what, source })
}

/// Runs a blocking storage call on tokio's blocking pool so the async runtime never waits on disk.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T, DiskError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, DiskError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| DiskError::Join(e.to_string()))?
}

/// Opens (creating if needed) the Raft database in `dir`, creates the tables and checks the format.
/// Blocking: call it through [`blocking`].
pub(crate) fn open(dir: &Path) -> Result<Arc<Database>, DiskError> {
    std::fs::create_dir_all(dir).map_err(|source| DiskError::CreateDir {
        path: dir.to_path_buf(),
        source,
    })?;
    let db = Database::create(dir.join(DB_FILE))?;
    let tx = db.begin_write()?;
    {
        tx.open_table(LOG)?;
        tx.open_table(SNAPSHOT)?;
        let mut meta = tx.open_table(META)?;
        let found = match meta.get(KEY_FORMAT)? {
            Some(v) => Some(decode::<u32>("format version", v.value())?),
            None => None,
        };
        match found {
            Some(FORMAT_VERSION) => {}
            Some(found) => return Err(DiskError::Version { found }),
            None => {
                meta.insert(
                    KEY_FORMAT,
                    encode("format version", &FORMAT_VERSION)?.as_slice(),
                )?;
            }
        }
    }
    tx.commit()?;
    Ok(Arc::new(db))
}

/// Reads and decodes one META value.
pub(crate) fn read_meta<T: DeserializeOwned>(
    db: &Database,
    key: &'static str,
) -> Result<Option<T>, DiskError> {
    let tx = db.begin_read()?;
    let table = tx.open_table(META)?;
    match table.get(key)? {
        Some(v) => Ok(Some(decode(key, v.value())?)),
        None => Ok(None),
    }
}

/// Writes (or with `None`, removes) one META value in its own transaction. With `durable` false
/// the commit is not fsync'd: it becomes durable with the next durable commit, or is lost on a crash.
pub(crate) fn write_meta<T: Serialize>(
    db: &Database,
    key: &'static str,
    value: Option<&T>,
    durable: bool,
) -> Result<(), DiskError> {
    let mut tx = db.begin_write()?;
    if !durable {
        tx.set_durability(redb::Durability::None)?;
    }
    {
        let mut table = tx.open_table(META)?;
        match value {
            Some(v) => {
                table.insert(key, encode(key, v)?.as_slice())?;
            }
            None => {
                table.remove(key)?;
            }
        }
    }
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reopen_keeps_meta_and_rejects_unknown_format() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let db = open(dir.path()).expect("open");
            write_meta(&db, KEY_COMMITTED, Some(&7u64), true).expect("write");
        }
        {
            let db = open(dir.path()).expect("reopen");
            assert_eq!(read_meta::<u64>(&db, KEY_COMMITTED).expect("read"), Some(7));
            write_meta(&db, KEY_FORMAT, Some(&99u32), true).expect("write");
        }
        match open(dir.path()) {
            Err(DiskError::Version { found: 99 }) => {}
            other => panic!("expected a version error, got {:?}", other.map(|_| ())),
        }
    }

    #[test]
    fn corrupt_value_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = open(dir.path()).expect("open");
        let tx = db.begin_write().expect("tx");
        {
            let mut t = tx.open_table(META).expect("table");
            t.insert(KEY_VOTE, [0xffu8, 0xff, 0xff].as_slice())
                .expect("insert");
        }
        tx.commit().expect("commit");
        let r = read_meta::<openraft::Vote<u64>>(&db, KEY_VOTE);
        assert!(matches!(r, Err(DiskError::Decode { .. })), "{r:?}");
    }
}
