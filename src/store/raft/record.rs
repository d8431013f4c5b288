//! The checksummed record every value of the Raft database is stored as (database format 2): a
//! version byte, an 8-byte checksum, then the postcard-encoded value. The checksum is the first 8
//! bytes of SHA-256 over a domain tag, the table name, the key and the payload, so a flipped bit, a
//! torn value or a value that landed under another key all fail verification. Verified on every
//! read: a mismatch is [`RecordError`], never a silently wrong value.
//!
//! Format-1 databases stored bare postcard values with no checksum; [`decode_legacy`] reads them
//! once, for the migration in `db`. Must not: touch redb (callers read and write the bytes).

use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// The first byte of a format-2 record.
pub(crate) const RECORD_V2: u8 = 2;
const CHECKSUM_LEN: usize = 8;
const HEADER_LEN: usize = 1 + CHECKSUM_LEN;
const DOMAIN: &[u8] = b"swarm-raft-record\0";

/// Why a stored record could not be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RecordError {
    /// Shorter than the header.
    #[error("record is truncated ({len} bytes)")]
    Truncated { len: usize },
    /// The version byte is not one this build writes.
    #[error("record has unknown version byte {0}")]
    Version(u8),
    /// The bytes changed since they were written.
    #[error("checksum mismatch: stored {stored}, computed {computed}")]
    Checksum { stored: String, computed: String },
    /// The checksum matched but the payload does not decode (written by an incompatible build).
    #[error("payload does not decode: {0}")]
    Decode(String),
    /// The value could not be encoded (never for our types).
    #[error("cannot encode: {0}")]
    Encode(String),
}

fn checksum(table: &str, key: &[u8], payload: &[u8]) -> [u8; CHECKSUM_LEN] {
    let mut h = Sha256::new();
    h.update(DOMAIN);
    h.update((table.len() as u64).to_be_bytes());
    h.update(table.as_bytes());
    h.update((key.len() as u64).to_be_bytes());
    h.update(key);
    h.update(payload);
    let digest = h.finalize();
    let mut out = [0u8; CHECKSUM_LEN];
    out.copy_from_slice(&digest[..CHECKSUM_LEN]);
    out
}

/// Encodes `value` as the record stored under `key` of `table`.
pub(crate) fn encode<T: Serialize>(
    table: &str,
    key: &[u8],
    value: &T,
) -> Result<Vec<u8>, RecordError> {
    let mut out = vec![0u8; HEADER_LEN];
    out[0] = RECORD_V2;
    let mut out =
        postcard::to_extend(value, out).map_err(|e| RecordError::Encode(e.to_string()))?;
    let sum = checksum(table, key, &out[HEADER_LEN..]);
    out[1..HEADER_LEN].copy_from_slice(&sum);
    Ok(out)
}

/// Wraps an already encoded payload (a format-1 value being migrated) as a record.
pub(crate) fn wrap(table: &str, key: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.push(RECORD_V2);
    out.extend_from_slice(&checksum(table, key, payload));
    out.extend_from_slice(payload);
    out
}

/// Verifies the record stored under `key` of `table` and decodes its value.
pub(crate) fn decode<T: DeserializeOwned>(
    table: &str,
    key: &[u8],
    bytes: &[u8],
) -> Result<T, RecordError> {
    if bytes.len() < HEADER_LEN {
        return Err(RecordError::Truncated { len: bytes.len() });
    }
    if bytes[0] != RECORD_V2 {
        return Err(RecordError::Version(bytes[0]));
    }
    let (stored, payload) = (&bytes[1..HEADER_LEN], &bytes[HEADER_LEN..]);
    let computed = checksum(table, key, payload);
    if stored != computed {
        return Err(RecordError::Checksum {
            stored: hex::encode(stored),
            computed: hex::encode(computed),
        });
    }
    postcard::from_bytes(payload).map_err(|e| RecordError::Decode(e.to_string()))
}

/// Decodes a format-1 value (bare postcard, no checksum): only a value that does not decode can be
/// told apart from a good one.
pub(crate) fn decode_legacy<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, RecordError> {
    postcard::from_bytes(bytes).map_err(|e| RecordError::Decode(e.to_string()))
}

/// Best effort: the value of a record whose checksum failed, when it still decodes (to name what it was,
/// e.g. a snapshot's id, in the error). Never trusted for anything else.
pub(crate) fn decode_unverified<T: DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    bytes
        .get(HEADER_LEN..)
        .and_then(|p| postcard::from_bytes(p).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, serde::Deserialize)]
    struct Value {
        name: String,
        n: u64,
    }

    fn value() -> Value {
        Value {
            name: "corruptme".into(),
            n: 42,
        }
    }

    #[test]
    fn round_trips_and_starts_with_the_version() {
        let bytes = encode("log", &7u64.to_be_bytes(), &value()).unwrap();
        assert_eq!(bytes[0], RECORD_V2);
        let back: Value = decode("log", &7u64.to_be_bytes(), &bytes).unwrap();
        assert_eq!(back, value());
        let payload = postcard::to_allocvec(&value()).unwrap();
        assert_eq!(wrap("log", &7u64.to_be_bytes(), &payload), bytes);
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let key = 7u64.to_be_bytes();
        let bytes = encode("log", &key, &value()).unwrap();
        for i in 1..bytes.len() {
            for bit in 0..8 {
                let mut bad = bytes.clone();
                bad[i] ^= 1 << bit;
                let r = decode::<Value>("log", &key, &bad);
                assert!(
                    matches!(r, Err(RecordError::Checksum { .. })),
                    "byte {i} bit {bit}: {r:?}"
                );
            }
        }
        let mut bad = bytes.clone();
        bad[0] = 1;
        assert_eq!(
            decode::<Value>("log", &key, &bad),
            Err(RecordError::Version(1))
        );
    }

    #[test]
    fn a_record_under_another_key_or_table_fails() {
        let bytes = encode("log", &7u64.to_be_bytes(), &value()).unwrap();
        assert!(matches!(
            decode::<Value>("log", &8u64.to_be_bytes(), &bytes),
            Err(RecordError::Checksum { .. })
        ));
        assert!(matches!(
            decode::<Value>("meta", &7u64.to_be_bytes(), &bytes),
            Err(RecordError::Checksum { .. })
        ));
    }

    #[test]
    fn truncated_and_legacy_values() {
        let key = 1u64.to_be_bytes();
        assert_eq!(
            decode::<Value>("log", &key, &[2, 0, 0]),
            Err(RecordError::Truncated { len: 3 })
        );
        let bytes = encode("log", &key, &value()).unwrap();
        assert!(matches!(
            decode::<Value>("log", &key, &bytes[..bytes.len() - 1]),
            Err(RecordError::Checksum { .. })
        ));
        let legacy = postcard::to_allocvec(&value()).unwrap();
        assert_eq!(decode_legacy::<Value>(&legacy).unwrap(), value());
        assert!(decode_legacy::<Value>(&[0xff, 0xff]).is_err());
        let mut bad = bytes.clone();
        bad[HEADER_LEN + 1] ^= 0x20; // 'c' of the name becomes 'C'
        let seen: Option<Value> = decode_unverified(&bad);
        assert_eq!(seen.map(|v| v.n), Some(42));
    }
}
