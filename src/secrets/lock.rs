//! Autolock: the unlock key (`SWMKEY-1-<64 hex digits>`, 32 random bytes) and the wrapping of a manager's key
//! files with it (XChaCha20-Poly1305, the key used as is: it is random, so no passphrase KDF is needed).
//!
//! A wrapped file is `swmlock` + format version 1 + a 24-byte nonce + the sealed contents; the file's name
//! (`data.key`, `ca.key`) is authenticated with it, so wrapped files cannot be swapped. Must not: print or log an
//! unlock key (`Debug` is redacted), or write anything (the node decides where and how).

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, RwLock};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

const MAGIC: &[u8] = b"swmlock";
const WRAPPED_V1: u8 = 1;
const NONCE_LEN: usize = 24;
const PREFIX: &str = "SWMKEY-1-";

/// Why an unlock key or a wrapped file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LockError {
    /// The text is not an unlock key.
    #[error("malformed unlock key: expected SWMKEY-1- followed by 64 hexadecimal digits")]
    Malformed,
    /// The file is wrapped and no key was given.
    #[error("{0} is locked: the swarm's unlock key is needed")]
    Locked(String),
    /// The key does not open the file.
    #[error("the unlock key does not open {0}: wrong key (after `swarm unlock-key --rotate` only the new key works)")]
    WrongKey(String),
    /// The file is wrapped in a format this build does not know.
    #[error("{0} is wrapped in an unknown format version {1}")]
    Version(String, u8),
}

/// The key that wraps a manager's key files while autolock is on.
#[derive(Clone, PartialEq, Eq)]
pub struct UnlockKey([u8; 32]);

impl fmt::Debug for UnlockKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("UnlockKey(<redacted>)")
    }
}

/// The unlock key the manager's files are wrapped with now (`None`: not wrapped), shared by the parts that
/// write them.
pub type SharedLock = Arc<RwLock<Option<UnlockKey>>>;

impl UnlockKey {
    /// A new random key.
    pub fn generate() -> UnlockKey {
        UnlockKey(rand::random())
    }

    /// The key as raw bytes (to seal it into the store).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A key from raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> UnlockKey {
        UnlockKey(bytes)
    }

    /// The `SWMKEY-1-…` text a user is shown once and types to unlock.
    pub fn to_text(&self) -> String {
        format!("{PREFIX}{}", hex::encode(self.0))
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&self.0.into())
    }

    /// `contents` wrapped for the file called `name`.
    pub fn wrap(&self, name: &str, contents: &[u8]) -> Vec<u8> {
        let nonce: [u8; NONCE_LEN] = rand::random();
        let mut out = Vec::with_capacity(MAGIC.len() + 1 + NONCE_LEN + contents.len() + 16);
        out.extend_from_slice(MAGIC);
        out.push(WRAPPED_V1);
        let aad = aad(name);
        // encryption fails only for payloads beyond ~256 GiB; key files are tiny
        let sealed = self
            .cipher()
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: contents,
                    aad: &aad,
                },
            )
            .unwrap_or_default();
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// The contents of the wrapped file `name`.
    pub fn unwrap(&self, name: &str, bytes: &[u8]) -> Result<Vec<u8>, LockError> {
        let rest = bytes
            .strip_prefix(MAGIC)
            .ok_or_else(|| LockError::WrongKey(name.to_string()))?;
        let (&version, rest) = rest
            .split_first()
            .ok_or_else(|| LockError::WrongKey(name.to_string()))?;
        if version != WRAPPED_V1 {
            return Err(LockError::Version(name.to_string(), version));
        }
        if rest.len() < NONCE_LEN {
            return Err(LockError::WrongKey(name.to_string()));
        }
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce
            .try_into()
            .map_err(|_| LockError::WrongKey(name.to_string()))?;
        self.cipher()
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: sealed,
                    aad: &aad(name),
                },
            )
            .map_err(|_| LockError::WrongKey(name.to_string()))
    }
}

fn aad(name: &str) -> Vec<u8> {
    let mut aad = MAGIC.to_vec();
    aad.push(WRAPPED_V1);
    aad.extend_from_slice(name.as_bytes());
    aad
}

/// Whether `bytes` are a wrapped file (of any version).
pub fn is_wrapped(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC)
}

impl FromStr for UnlockKey {
    type Err = LockError;

    fn from_str(s: &str) -> Result<UnlockKey, LockError> {
        let digits = s.trim().strip_prefix(PREFIX).ok_or(LockError::Malformed)?;
        let bytes = hex::decode(digits).map_err(|_| LockError::Malformed)?;
        Ok(UnlockKey(
            bytes.try_into().map_err(|_| LockError::Malformed)?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_as_text_and_wrap_only_for_their_file() {
        let key = UnlockKey::generate();
        let text = key.to_text();
        assert!(
            text.starts_with("SWMKEY-1-") && text.len() == 9 + 64,
            "{text}"
        );
        assert_eq!(text.parse::<UnlockKey>().unwrap(), key);
        assert_eq!(format!("{key:?}"), "UnlockKey(<redacted>)");
        for bad in ["", "SWMKEY-1-zz", "SWMKEY-2-00", &text[..text.len() - 2]] {
            assert_eq!(bad.parse::<UnlockKey>(), Err(LockError::Malformed), "{bad}");
        }
        let wrapped = key.wrap("data.key", b"secret bytes");
        assert!(is_wrapped(&wrapped));
        assert!(!wrapped.windows(6).any(|w| w == b"secret"));
        assert_eq!(key.unwrap("data.key", &wrapped).unwrap(), b"secret bytes");
        assert_eq!(
            key.unwrap("ca.key", &wrapped),
            Err(LockError::WrongKey("ca.key".into())),
            "bound to its file name"
        );
        let other = UnlockKey::generate();
        assert!(matches!(
            other.unwrap("data.key", &wrapped),
            Err(LockError::WrongKey(_))
        ));
        let mut v2 = wrapped.clone();
        v2[MAGIC.len()] = 2;
        assert_eq!(
            key.unwrap("data.key", &v2),
            Err(LockError::Version("data.key".into(), 2))
        );
        assert!(key.unwrap("data.key", b"plain").is_err());
    }
}
