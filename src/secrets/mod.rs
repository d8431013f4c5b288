//! Secret data at rest: the cluster data key and XChaCha20-Poly1305 encryption of secret payloads.
//!
//! Owns: creating/loading the data key (32 random bytes, a 0600 file in the state dir, written atomically),
//! sealing and opening payloads. The store, the Raft log and snapshots only ever hold sealed bytes; plaintext
//! exists only in memory on the leader while being sent to a node over mTLS, and in the task's tmpfs.
//! Must not: log or print plaintext (`model::SecretData`'s Debug is redacted). Autolock (wrapping the data key
//! and the CA key with a random unlock key) is in [`lock`].

pub mod lock;

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

/// Format byte of sealed payloads (bump on any change of layout).
const SEALED_V1: u8 = 1;
const NONCE_LEN: usize = 24;
const KEY_FILE: &str = "data.key";

/// Why sealing or opening failed.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// The key file could not be read or written.
    #[error("data key {path}: {source}")]
    KeyFile {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The key file does not hold a key.
    #[error("data key {path} is corrupt (expected 32 bytes, found {len})")]
    BadKey {
        /// The file.
        path: String,
        /// Its length.
        len: usize,
    },
    /// The sealed bytes are not ours, were tampered with, or were sealed with another key.
    #[error("cannot decrypt secret data: {0}")]
    Open(&'static str),
    /// The key file is missing from a state directory whose data was sealed with it.
    #[error(
        "data key {path} is missing, but {data} holds this cluster's data, whose secrets are sealed with that \
         key: refusing to create a new one (every stored secret would become undecryptable). Restore {path} \
         from a backup of this state directory or from another manager's"
    )]
    Missing {
        /// The missing key file.
        path: String,
        /// The data that needs it.
        data: String,
    },
}

/// The cluster data key.
#[derive(Clone)]
pub struct DataKey {
    cipher: XChaCha20Poly1305,
    raw: [u8; 32],
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(<redacted>)")
    }
}

impl DataKey {
    /// A key from raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        DataKey {
            cipher: XChaCha20Poly1305::new(&bytes.into()),
            raw: bytes,
        }
    }

    /// The key's bytes, to write them (wrapped while autolock is on) or hand them to a new manager joining over
    /// mutual TLS (never logged).
    pub fn expose_bytes(&self) -> [u8; 32] {
        self.raw
    }

    /// Writes `bytes` (the cluster's key, received when joining as a manager) as `dir/data.key` (0600, atomic)
    /// and returns the key.
    pub fn install(dir: &Path, bytes: [u8; 32]) -> Result<Self, SecretsError> {
        let path = dir.join(KEY_FILE);
        write_key_file(dir, &path, &bytes).map_err(|source| SecretsError::KeyFile {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Self::from_bytes(bytes))
    }

    /// Loads `dir/data.key`, creating it (mode 0600) with a random key when absent.
    pub fn load_or_create(dir: &Path) -> Result<Self, SecretsError> {
        Self::load_or_create_unless(dir, None)
    }

    /// Like [`DataKey::load_or_create`], but a missing key is refused ([`SecretsError::Missing`]) when
    /// `existing_data` (data that may hold secrets sealed with the key) exists: a key is only ever created
    /// for a brand-new state directory.
    pub fn load_or_create_unless(
        dir: &Path,
        existing_data: Option<&Path>,
    ) -> Result<Self, SecretsError> {
        let path = dir.join(KEY_FILE);
        let shown = path.display().to_string();
        match std::fs::read(&path) {
            Ok(bytes) => {
                let key: [u8; 32] =
                    bytes
                        .as_slice()
                        .try_into()
                        .map_err(|_| SecretsError::BadKey {
                            path: shown,
                            len: bytes.len(),
                        })?;
                Ok(Self::from_bytes(key))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(data) = existing_data.filter(|d| d.exists()) {
                    return Err(SecretsError::Missing {
                        path: shown,
                        data: data.display().to_string(),
                    });
                }
                let key: [u8; 32] = rand::random();
                write_key_file(dir, &path, &key).map_err(|source| SecretsError::KeyFile {
                    path: shown,
                    source,
                })?;
                Ok(Self::from_bytes(key))
            }
            Err(source) => Err(SecretsError::KeyFile {
                path: shown,
                source,
            }),
        }
    }

    /// Encrypts `plaintext` with a fresh random nonce: `[version][nonce][ciphertext+tag]`.
    pub fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        let nonce_bytes: [u8; NONCE_LEN] = rand::random();
        let nonce = XNonce::from(nonce_bytes);
        // Encryption only fails for payloads beyond ~256 GiB, which never reach here (gRPC limits are far lower).
        let sealed = self.cipher.encrypt(&nonce, plaintext).unwrap_or_default();
        let mut out = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
        out.push(SEALED_V1);
        out.extend_from_slice(&nonce_bytes);
        out.extend_from_slice(&sealed);
        out
    }

    /// Decrypts what `seal` produced.
    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, SecretsError> {
        let (&version, rest) = sealed
            .split_first()
            .ok_or(SecretsError::Open("empty payload"))?;
        if version != SEALED_V1 {
            return Err(SecretsError::Open("unknown format version"));
        }
        if rest.len() < NONCE_LEN {
            return Err(SecretsError::Open("truncated payload"));
        }
        let (nonce_bytes, ciphertext) = rest.split_at(NONCE_LEN);
        let nonce_arr: [u8; NONCE_LEN] = nonce_bytes
            .try_into()
            .map_err(|_| SecretsError::Open("bad nonce"))?;
        self.cipher
            .decrypt(&XNonce::from(nonce_arr), ciphertext)
            .map_err(|_| SecretsError::Open("authentication failed (wrong key or tampered data)"))
    }
}

/// Writes `key` to `path` (in `dir`) atomically, mode 0600.
fn write_key_file(dir: &Path, path: &Path, key: &[u8; 32]) -> std::io::Result<()> {
    let tmp = dir.join(format!("{KEY_FILE}.tmp"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(key)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn seal_open_round_trip_and_tamper_detection() {
        let key = DataKey::from_bytes([7; 32]);
        let sealed = key.seal(b"hunter2");
        assert!(
            !sealed.windows(7).any(|w| w == b"hunter2"),
            "ciphertext must not contain the plaintext"
        );
        assert_eq!(key.open(&sealed).unwrap(), b"hunter2");
        assert_ne!(key.seal(b"hunter2"), sealed, "fresh nonce each time");
        let mut bad = sealed.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(key.open(&bad).is_err());
        assert!(DataKey::from_bytes([8; 32]).open(&sealed).is_err());
        assert!(key.open(&[]).is_err());
        assert!(key.open(&[9, 1, 2]).is_err());
    }

    #[test]
    fn key_file_is_created_private_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let k1 = DataKey::load_or_create(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let k2 = DataKey::load_or_create(dir.path()).unwrap();
        assert_eq!(k2.open(&k1.seal(b"x")).unwrap(), b"x");
        assert_eq!(format!("{k1:?}"), "DataKey(<redacted>)");
        std::fs::write(dir.path().join(KEY_FILE), b"short").unwrap();
        assert!(matches!(
            DataKey::load_or_create(dir.path()),
            Err(SecretsError::BadKey { .. })
        ));
    }

    #[test]
    fn a_missing_key_is_created_only_for_a_new_directory() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("raft.redb");
        // no data yet: created
        DataKey::load_or_create_unless(dir.path(), Some(&data)).unwrap();
        std::fs::write(&data, b"sealed secrets").unwrap();
        // an existing key loads whatever the data
        DataKey::load_or_create_unless(dir.path(), Some(&data)).unwrap();
        std::fs::remove_file(dir.path().join(KEY_FILE)).unwrap();
        let e = DataKey::load_or_create_unless(dir.path(), Some(&data)).unwrap_err();
        assert!(
            e.to_string().starts_with(&format!(
                "data key {} is missing, but {} holds this cluster's data",
                dir.path().join(KEY_FILE).display(),
                data.display()
            )),
            "{e}"
        );
        assert!(!dir.path().join(KEY_FILE).exists(), "no new key written");
    }
}
