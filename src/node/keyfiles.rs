//! A manager's key files — `data.key` and `certs/ca.key` (beside `certs/ca.crt`) — in plaintext or, while
//! autolock is on, wrapped with the unlock key ([`crate::secrets::lock`]); always mode 0600, always replaced so
//! that a crash at any moment leaves a set that loads:
//!
//! - wrapping or re-wrapping ([`write_keys`]): every old file copied to `NAME.prev`, every new one written to
//!   `NAME.next`, then each renamed into place, then the `.prev` copies removed;
//! - a new root CA ([`RootFiles::store`]): the new key to `ca.key.next`, then `ca.crt`, then the rename.
//!
//! A reader tries `NAME`, `NAME.next`, `NAME.prev` and takes the first that opens (plaintext, or with the key
//! given) and fits (a 32-byte data key; the CA key of `ca.crt`). So after a crash mid-wrap the old key and the
//! new one both unlock. Must not: log a key or write one in plaintext while autolock is on.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::pki::{self, PkiError, RootCa};
use crate::secrets::lock::{is_wrapped, LockError, UnlockKey};

/// Held while key files are written: the autolock loop and the CA rotation both replace `ca.key`.
pub static WRITING: Mutex<()> = Mutex::new(());

/// Why a key file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// Locked, or the wrong unlock key.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// Reading or writing failed.
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// No candidate holds what was expected.
    #[error("{}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Whether any candidate of `path` exists.
pub fn exists(path: &Path) -> bool {
    [
        path.to_path_buf(),
        with_suffix(path, ".next"),
        with_suffix(path, ".prev"),
    ]
    .iter()
    .any(|p| p.exists())
}

/// The contents of key file `path` (plaintext or opened with `unlock`) that `fits`, trying `NAME`, `NAME.next`
/// and `NAME.prev` in that order.
pub fn read_key(
    path: &Path,
    unlock: Option<&UnlockKey>,
    fits: impl Fn(&[u8]) -> bool,
) -> Result<Vec<u8>, KeyFileError> {
    let name = file_name(path);
    let mut wrapped = false;
    let mut found = false;
    for candidate in [
        path.to_path_buf(),
        with_suffix(path, ".next"),
        with_suffix(path, ".prev"),
    ] {
        let Ok(bytes) = std::fs::read(&candidate) else {
            continue;
        };
        found = true;
        let opened = if is_wrapped(&bytes) {
            wrapped = true;
            match unlock {
                Some(key) => key.unwrap(&name, &bytes).ok(),
                None => None,
            }
        } else {
            Some(bytes)
        };
        if let Some(contents) = opened.filter(|c| fits(c)) {
            return Ok(contents);
        }
    }
    Err(match (found, wrapped, unlock) {
        (false, _, _) => KeyFileError::Invalid {
            path: path.to_path_buf(),
            message: "missing".into(),
        },
        (true, true, None) => LockError::Locked(path.display().to_string()).into(),
        (true, true, Some(_)) => LockError::WrongKey(path.display().to_string()).into(),
        (true, false, _) => KeyFileError::Invalid {
            path: path.to_path_buf(),
            message: "does not hold the expected key".into(),
        },
    })
}

/// `contents` as written for `path`: wrapped with `lock`, or plaintext.
fn sealed(path: &Path, contents: &[u8], lock: Option<&UnlockKey>) -> Vec<u8> {
    match lock {
        Some(key) => key.wrap(&file_name(path), contents),
        None => contents.to_vec(),
    }
}

/// Replaces the key files `(path, plaintext)`, each wrapped with `lock` (plaintext without), so that a crash at
/// any point leaves, for every file, the old or the new contents under one of its candidate names.
pub fn write_keys(files: &[(&Path, &[u8])], lock: Option<&UnlockKey>) -> Result<(), KeyFileError> {
    let io = |op: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| PkiError::Io { op, path, source }
    };
    for (path, _) in files {
        if let Ok(old) = std::fs::read(path) {
            pki::write_private_file(&with_suffix(path, ".prev"), &old)?;
        }
    }
    for (path, contents) in files {
        pki::write_private_file(&with_suffix(path, ".next"), &sealed(path, contents, lock))?;
    }
    for (path, _) in files {
        std::fs::rename(with_suffix(path, ".next"), path).map_err(io("rename into", path))?;
    }
    for (path, _) in files {
        let _ = std::fs::remove_file(with_suffix(path, ".prev"));
    }
    Ok(())
}

/// The data key file of the state directory `dir`.
pub fn data_key_file(dir: &Path) -> PathBuf {
    dir.join("data.key")
}

/// The data key in `dir`, `None` when there is none yet (a first start).
pub fn load_data_key(
    dir: &Path,
    unlock: Option<&UnlockKey>,
) -> Result<Option<[u8; 32]>, KeyFileError> {
    let path = data_key_file(dir);
    if !exists(&path) {
        return Ok(None);
    }
    let bytes = read_key(&path, unlock, |b| b.len() == 32)?;
    Ok(bytes.try_into().ok())
}

/// Whether the key files in `dir` are wrapped: the manager needs its unlock key to start.
pub fn is_locked(dir: &Path) -> bool {
    let locked =
        |r: Result<(), KeyFileError>| matches!(r, Err(KeyFileError::Lock(LockError::Locked(_))));
    locked(load_data_key(dir, None).map(|_| ()))
        || (RootFiles::in_dir(dir).crt.exists()
            && locked(RootFiles::in_dir(dir).load(None).map(|_| ())))
}

/// A manager's root CA files, `certs/ca.crt` and `certs/ca.key` (0600, wrapped while autolock is on).
pub struct RootFiles {
    crt: PathBuf,
    key: PathBuf,
}

impl RootFiles {
    /// The root CA files under `dir`.
    pub fn in_dir(dir: &Path) -> RootFiles {
        let certs = dir.join("certs");
        RootFiles {
            crt: certs.join("ca.crt"),
            key: certs.join("ca.key"),
        }
    }

    /// The CA key file.
    pub fn key_file(&self) -> &Path {
        &self.key
    }

    /// Loads the root CA: the key candidate that belongs to `ca.crt` (finishing a replacement a crash
    /// interrupted), opened with `unlock` when it is wrapped.
    pub fn load(&self, unlock: Option<&UnlockKey>) -> Result<RootCa, KeyFileError> {
        let crt = std::fs::read_to_string(&self.crt).map_err(|source| PkiError::Io {
            op: "read",
            path: self.crt.clone(),
            source,
        })?;
        let fits = |key: &[u8]| {
            std::str::from_utf8(key).is_ok_and(|pem| RootCa::from_pem(&crt, pem).is_ok())
        };
        let key = read_key(&self.key, unlock, fits)?;
        let pem = String::from_utf8(key).map_err(|_| KeyFileError::Invalid {
            path: self.key.clone(),
            message: "not PEM".into(),
        })?;
        Ok(RootCa::from_pem(&crt, &pem)?)
    }

    /// Replaces the root CA on disk: its key (wrapped with `lock`) beside the old one, then the certificate,
    /// then the key moved into place.
    pub fn store(&self, ca: &RootCa, lock: Option<&UnlockKey>) -> Result<(), KeyFileError> {
        let next = with_suffix(&self.key, ".next");
        pki::write_private_file(&next, &sealed(&self.key, ca.key_pem().as_bytes(), lock))?;
        pki::write_public_file(&self.crt, ca.cert_pem().as_bytes())?;
        std::fs::rename(&next, &self.key).map_err(|source| PkiError::Io {
            op: "rename into",
            path: self.key.clone(),
            source,
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    #[test]
    fn wrapping_survives_a_crash_at_every_step_with_either_key() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("certs")).unwrap();
        let ca = RootCa::generate("c", SystemTime::now()).unwrap();
        let files = RootFiles::in_dir(dir.path());
        files.store(&ca, None).unwrap();
        let data = data_key_file(dir.path());
        pki::write_private_file(&data, &[9u8; 32]).unwrap();
        assert!(!is_locked(dir.path()));

        let k1 = UnlockKey::generate();
        let pem = ca.key_pem();
        let set: [(&Path, &[u8]); 2] = [(&data, &[9u8; 32]), (files.key_file(), pem.as_bytes())];
        write_keys(&set, Some(&k1)).unwrap();
        assert!(is_locked(dir.path()));
        assert!(!std::fs::read(&data).unwrap().starts_with(&[9u8; 4]));
        assert!(matches!(
            load_data_key(dir.path(), None),
            Err(KeyFileError::Lock(LockError::Locked(_)))
        ));
        assert_eq!(
            load_data_key(dir.path(), Some(&k1)).unwrap(),
            Some([9u8; 32])
        );
        assert_eq!(files.load(Some(&k1)).unwrap().digest(), ca.digest());
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&data).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);

        // a crash while re-wrapping with k2, after data.key moved into place but before ca.key did
        let k2 = UnlockKey::generate();
        for (path, _) in &set {
            pki::write_private_file(&with_suffix(path, ".prev"), &std::fs::read(path).unwrap())
                .unwrap();
        }
        for (path, contents) in &set {
            pki::write_private_file(
                &with_suffix(path, ".next"),
                &sealed(path, contents, Some(&k2)),
            )
            .unwrap();
        }
        std::fs::rename(with_suffix(&data, ".next"), &data).unwrap();
        for key in [&k1, &k2] {
            assert_eq!(
                load_data_key(dir.path(), Some(key)).unwrap(),
                Some([9u8; 32])
            );
            assert_eq!(files.load(Some(key)).unwrap().digest(), ca.digest());
        }
        let wrong = UnlockKey::generate();
        assert!(matches!(
            load_data_key(dir.path(), Some(&wrong)),
            Err(KeyFileError::Lock(LockError::WrongKey(_)))
        ));
        // finishing (any later write) leaves only the new key working
        write_keys(&set, Some(&k2)).unwrap();
        assert!(load_data_key(dir.path(), Some(&k1)).is_err());
        assert!(!with_suffix(&data, ".prev").exists() && !with_suffix(&data, ".next").exists());
        // unwrapped again
        write_keys(&set, None).unwrap();
        assert!(!is_locked(dir.path()));
        assert_eq!(std::fs::read(&data).unwrap(), [9u8; 32]);
    }

    #[test]
    fn a_new_root_interrupted_by_a_crash_still_loads_a_matching_pair() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("certs")).unwrap();
        let files = RootFiles::in_dir(dir.path());
        let old = RootCa::generate("c", SystemTime::now()).unwrap();
        let key = UnlockKey::generate();
        files.store(&old, Some(&key)).unwrap();
        // crash after the new certificate was written, before its key moved into place
        let new = RootCa::generate("c", SystemTime::now()).unwrap();
        let next = with_suffix(files.key_file(), ".next");
        pki::write_private_file(&next, &key.wrap("ca.key", new.key_pem().as_bytes())).unwrap();
        pki::write_public_file(&files.crt, new.cert_pem().as_bytes()).unwrap();
        assert_eq!(files.load(Some(&key)).unwrap().digest(), new.digest());
    }
}
