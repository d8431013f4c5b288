//! Join tokens in Swarm's format, `SWMTKN-1-<CA digest, base 36, 50 chars>-<secret, 25 base-36 chars>`: one
//! for workers, one for managers. The digest lets a joining node pin the CA before trusting anything it is
//! sent; the secret is what the manager checks before signing the node's first certificate.
//!
//! Randomness comes in as an `Rng` argument. Must not store tokens (they live in the cluster object) and must
//! never print a secret in `Debug`.

use std::fmt;
use std::str::FromStr;

use rand::Rng;

use super::ca::{CaDigest, BASE36, DIGEST_BASE36_LEN};
use super::{NodeRole, PkiError};

/// Prefix and format version of every token.
pub const TOKEN_PREFIX: &str = "SWMTKN-1";

/// Length of the secret part: 25 base-36 characters (about 129 bits).
pub const SECRET_LEN: usize = 25;

/// One join token. `Display` prints the full token (hand it only to whoever should join); `Debug` redacts
/// the secret.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct JoinToken {
    digest: CaDigest,
    secret: String,
}

impl JoinToken {
    /// A token for the CA with `digest` and a fresh random secret.
    pub fn generate(digest: CaDigest, rng: &mut impl Rng) -> JoinToken {
        let secret = (0..SECRET_LEN)
            .map(|_| char::from(BASE36[rng.random_range(0..BASE36.len())]))
            .collect();
        JoinToken { digest, secret }
    }

    /// The CA digest this token pins.
    pub fn ca_digest(&self) -> CaDigest {
        self.digest
    }

    /// Checks that the CA certificate a joining node was sent (DER) is the one this token pins.
    pub fn verify_ca(&self, ca_cert_der: &[u8]) -> Result<(), PkiError> {
        let actual = CaDigest::of_der(ca_cert_der);
        if actual == self.digest {
            Ok(())
        } else {
            Err(PkiError::CaDigestMismatch {
                expected: self.digest.to_string(),
                actual: actual.to_string(),
            })
        }
    }

    /// Whether two tokens have the same secret, compared in constant time.
    fn same_secret(&self, other: &JoinToken) -> bool {
        let (a, b) = (self.secret.as_bytes(), other.secret.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{TOKEN_PREFIX}-{}-{}",
            self.digest.to_base36(),
            self.secret
        )
    }
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "JoinToken({TOKEN_PREFIX}-{}-<redacted>)",
            self.digest.to_base36()
        )
    }
}

impl FromStr for JoinToken {
    type Err = PkiError;

    fn from_str(s: &str) -> Result<JoinToken, PkiError> {
        let s = s.trim();
        let rest = s
            .strip_prefix(TOKEN_PREFIX)
            .and_then(|r| r.strip_prefix('-'))
            .ok_or_else(|| {
                PkiError::MalformedToken(format!("does not start with {TOKEN_PREFIX}-"))
            })?;
        let (digest, secret) = rest
            .split_once('-')
            .ok_or_else(|| PkiError::MalformedToken("missing the secret part".into()))?;
        if digest.len() != DIGEST_BASE36_LEN {
            return Err(PkiError::MalformedToken(format!(
                "CA digest has {} characters, expected {DIGEST_BASE36_LEN}",
                digest.len()
            )));
        }
        let digest = CaDigest::from_base36(digest)
            .ok_or_else(|| PkiError::MalformedToken("CA digest is not base 36".into()))?;
        if secret.len() != SECRET_LEN || !secret.bytes().all(|c| BASE36.contains(&c)) {
            return Err(PkiError::MalformedToken(format!(
                "secret must be {SECRET_LEN} characters of [0-9a-z]"
            )));
        }
        Ok(JoinToken {
            digest,
            secret: secret.to_string(),
        })
    }
}

impl TryFrom<String> for JoinToken {
    type Error = PkiError;

    fn try_from(s: String) -> Result<JoinToken, PkiError> {
        s.parse()
    }
}

impl From<JoinToken> for String {
    fn from(t: JoinToken) -> String {
        t.to_string()
    }
}

/// The cluster's pair of join tokens.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JoinTokens {
    /// Lets a node join as a worker.
    pub worker: JoinToken,
    /// Lets a node join as a manager.
    pub manager: JoinToken,
}

impl JoinTokens {
    /// Fresh worker and manager tokens for the CA with `digest`.
    pub fn generate(digest: CaDigest, rng: &mut impl Rng) -> JoinTokens {
        JoinTokens {
            worker: JoinToken::generate(digest, rng),
            manager: JoinToken::generate(digest, rng),
        }
    }

    /// The token for `role` (clients join with no token: theirs is the worker token, which grants a worker).
    pub fn token(&self, role: NodeRole) -> &JoinToken {
        match role {
            NodeRole::Worker | NodeRole::Client => &self.worker,
            NodeRole::Manager => &self.manager,
        }
    }

    /// Replaces the secret of `role`'s token; the old token stops working, the other one is untouched.
    pub fn rotate(&mut self, role: NodeRole, rng: &mut impl Rng) {
        let digest = self.token(role).digest;
        let fresh = JoinToken::generate(digest, rng);
        match role {
            NodeRole::Worker | NodeRole::Client => self.worker = fresh,
            NodeRole::Manager => self.manager = fresh,
        }
    }

    /// After a CA rotation: both tokens pin the new CA digest and get new secrets.
    pub fn rotate_ca(&mut self, digest: CaDigest, rng: &mut impl Rng) {
        *self = JoinTokens::generate(digest, rng);
    }

    /// The role a presented token grants, or why it grants nothing.
    pub fn role_for(&self, presented: &JoinToken) -> Result<NodeRole, PkiError> {
        let current = self.worker.digest;
        if presented.digest != current {
            return Err(PkiError::TokenForOtherCa {
                token: presented.digest.to_string(),
                current: current.to_string(),
            });
        }
        // Compare against both, so timing does not reveal which one nearly matched.
        let is_worker = self.worker.same_secret(presented);
        let is_manager = self.manager.same_secret(presented);
        match (is_manager, is_worker) {
            (true, _) => Ok(NodeRole::Manager),
            (false, true) => Ok(NodeRole::Worker),
            (false, false) => Err(PkiError::InvalidTokenSecret),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn digest(b: u8) -> CaDigest {
        CaDigest([b; 32])
    }

    #[test]
    fn format_and_parse_round_trip() {
        let mut rng = StdRng::seed_from_u64(7);
        let t = JoinToken::generate(digest(0xab), &mut rng);
        let s = t.to_string();
        let parts: Vec<&str> = s.split('-').collect();
        assert_eq!(parts.len(), 4, "{s}");
        assert_eq!(parts[0], "SWMTKN");
        assert_eq!(parts[1], "1");
        assert_eq!(parts[2].len(), 50);
        assert_eq!(parts[3].len(), 25);
        assert!(parts[3]
            .bytes()
            .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase()));
        let back: JoinToken = s.parse().expect("parse");
        assert_eq!(back, t);
        assert_eq!(back.ca_digest(), digest(0xab));
        assert!(
            !format!("{t:?}").contains(parts[3]),
            "Debug redacts the secret"
        );
        let json = serde_json::to_string(&t).expect("json");
        assert_eq!(
            serde_json::from_str::<JoinToken>(&json).expect("json back"),
            t
        );
    }

    #[test]
    fn malformed_tokens_are_rejected() {
        let good = JoinToken::generate(digest(1), &mut StdRng::seed_from_u64(1)).to_string();
        let (head, secret) = good.rsplit_once('-').expect("dash");
        for bad in [
            String::new(),
            "SWMTKN-2-abc-def".to_string(),
            head.to_string(),
            format!("{head}-{}", &secret[..10]),
            format!("{head}-{}!", &secret[..24]),
            format!("SWMTKN-1-{}-{secret}", "z".repeat(50)),
            format!("SWMTKN-1-{}-{secret}", "0".repeat(49)),
            format!("{good}-extra"),
        ] {
            assert!(
                matches!(bad.parse::<JoinToken>(), Err(PkiError::MalformedToken(_))),
                "{bad:?} should be malformed"
            );
        }
    }

    #[test]
    fn ca_pinning_rejects_a_different_ca() {
        let now = std::time::SystemTime::now();
        let ca = super::super::RootCa::generate("c", now).expect("ca");
        let other = super::super::RootCa::generate("c", now).expect("other");
        let mut rng = StdRng::seed_from_u64(3);
        let t = JoinToken::generate(ca.digest(), &mut rng);
        assert!(t.verify_ca(ca.cert_der()).is_ok());
        assert!(matches!(
            t.verify_ca(other.cert_der()),
            Err(PkiError::CaDigestMismatch { .. })
        ));
    }

    #[test]
    fn roles_rotation_and_mismatches() {
        let mut rng = StdRng::seed_from_u64(42);
        let mut tokens = JoinTokens::generate(digest(9), &mut rng);
        assert_ne!(tokens.worker, tokens.manager);
        let worker = tokens.worker.clone();
        let manager = tokens.manager.clone();
        assert_eq!(tokens.role_for(&worker).expect("w"), NodeRole::Worker);
        assert_eq!(tokens.role_for(&manager).expect("m"), NodeRole::Manager);

        tokens.rotate(NodeRole::Worker, &mut rng);
        assert!(matches!(
            tokens.role_for(&worker),
            Err(PkiError::InvalidTokenSecret)
        ));
        assert_eq!(
            tokens.role_for(&manager).expect("m kept"),
            NodeRole::Manager
        );
        assert_eq!(tokens.token(NodeRole::Worker).ca_digest(), digest(9));

        let foreign = JoinToken::generate(digest(8), &mut rng);
        assert!(matches!(
            tokens.role_for(&foreign),
            Err(PkiError::TokenForOtherCa { .. })
        ));

        tokens.rotate_ca(digest(8), &mut rng);
        assert!(tokens.role_for(&manager).is_err());
        assert_eq!(tokens.manager.ca_digest(), digest(8));
    }
}
