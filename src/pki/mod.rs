//! The cluster's own public-key infrastructure: a root CA, join tokens that pin it, node certificates
//! carrying the node's role in their OU, renewal timing, on-disk persistence and the rustls configurations
//! every cluster API uses for mutual TLS (DESIGN invariant 8).
//!
//! This module owns key material and certificate policy. It must not decide *who* may join (the manager's
//! CA service does that and calls [`RootCa::sign_node_csr`]), talk to the network beyond building TLS
//! configurations, or read the wall clock in its cores: `now` is always an argument.
//!
//! - [`ca`]: the root CA (generate, PEM round trip, digest, CSR signing).
//! - [`token`]: `SWMTKN-1-<CA digest>-<secret>` join tokens for workers and managers.
//! - [`node_cert`]: node keys and CSRs, [`NodeIdentity`] parsed from a peer certificate, renewal window.
//! - [`tls`]: rustls server/client configurations and peer identity extraction.
//! - [`persist`]: atomic, mode-0600 key files.
//! - [`rotate`]: root CA rotation (a new root cross-signed by the old one) and the [`Authority`] a manager
//!   signs and trusts with.

pub mod ca;
pub mod node_cert;
pub mod persist;
pub mod rotate;
pub mod tls;
pub mod token;

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use ca::{CaDigest, RootCa, CA_COMMON_NAME, CA_VALIDITY};
pub use node_cert::{
    expiry_time, needs_renewal, renewal_time, NodeCertSpec, NodeCredentials, NodeIdentity, NodeKey,
    NODE_CERT_VALIDITY,
};
pub use persist::{write_private_file, write_public_file};
pub use rotate::{Authority, SharedAuthority};
pub use tls::{
    bootstrap_client_config, client_config, install_crypto_provider, join_client_config,
    peer_identity, peer_identity_from_certs, server_config, server_config_allowing_joins,
    server_identity,
};
pub use token::{JoinToken, JoinTokens};

/// The role a node plays in the cluster, as written in its certificate's OU.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum NodeRole {
    /// Runs tasks only; may talk to the dispatcher.
    Worker,
    /// Holds the Raft log, runs the control API and (as leader) the CA signer.
    Manager,
    /// An administrator's `swarmctl` on another machine (`swarm ca --issue-client`): may call the control API
    /// over TCP, never open a node session.
    Client,
}

impl NodeRole {
    /// The OU string Swarm writes for this role.
    pub fn as_ou(self) -> &'static str {
        match self {
            NodeRole::Worker => "swarm-worker",
            NodeRole::Manager => "swarm-manager",
            NodeRole::Client => "swarm-client",
        }
    }

    /// Parses an OU string back into a role.
    pub fn from_ou(ou: &str) -> Option<NodeRole> {
        match ou {
            "swarm-worker" => Some(NodeRole::Worker),
            "swarm-manager" => Some(NodeRole::Manager),
            "swarm-client" => Some(NodeRole::Client),
            _ => None,
        }
    }
}

impl fmt::Display for NodeRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NodeRole::Worker => "worker",
            NodeRole::Manager => "manager",
            NodeRole::Client => "client",
        })
    }
}

/// Everything that can go wrong in the PKI, with what a user needs to act on it.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Key generation, CSR serialization or signing failed inside rcgen.
    #[error("{what}: {source}")]
    Rcgen {
        /// What we were doing.
        what: &'static str,
        /// The underlying error.
        #[source]
        source: rcgen::Error,
    },
    /// A PEM or DER blob could not be read as the expected object.
    #[error("cannot parse {what}: {detail}")]
    Parse {
        /// What we tried to parse (e.g. "CA certificate PEM").
        what: &'static str,
        /// Why it failed.
        detail: String,
    },
    /// A join token does not have the `SWMTKN-1-<digest>-<secret>` shape.
    #[error("malformed join token: {0}")]
    MalformedToken(String),
    /// A join token names a different CA than the one presented: do not trust that CA.
    #[error("join token pins CA digest {expected}, but the presented CA has digest {actual}")]
    CaDigestMismatch {
        /// Digest carried in the token.
        expected: String,
        /// Digest of the CA certificate we were given.
        actual: String,
    },
    /// A node presented a join token made for another (e.g. rotated-out) CA.
    #[error("join token was made for CA {token}, but this cluster's CA is {current}")]
    TokenForOtherCa {
        /// Digest carried in the token.
        token: String,
        /// Digest of the cluster's current CA.
        current: String,
    },
    /// A join token's secret matches neither the worker nor the manager token.
    #[error("join token is not valid for this cluster (wrong or rotated secret)")]
    InvalidTokenSecret,
    /// A certificate lacks a field the cluster needs (CN, OU, O) or carries an unknown role.
    #[error("certificate is not a swarm node certificate: {0}")]
    BadNodeCertificate(String),
    /// A peer presented no certificate over a connection that should be mutual TLS.
    #[error("peer presented no client certificate")]
    NoPeerCertificate,
    /// A node's role does not allow the requested call.
    #[error("node {node_id} has role {role}, but this call requires {required}")]
    Unauthorized {
        /// The calling node.
        node_id: String,
        /// Its role from the certificate.
        role: NodeRole,
        /// The role required.
        required: NodeRole,
    },
    /// A node certificate belongs to a different cluster.
    #[error("certificate belongs to cluster {actual}, expected {expected}")]
    WrongCluster {
        /// This cluster's id.
        expected: String,
        /// The cluster id in the certificate.
        actual: String,
    },
    /// A certificate and key do not belong together.
    #[error("certificate public key does not match the private key")]
    KeyMismatch,
    /// A name given for a certificate SAN is not a valid DNS name.
    #[error("invalid DNS name {name:?} for a certificate: {detail}")]
    InvalidName {
        /// The rejected name.
        name: String,
        /// Why.
        detail: String,
    },
    /// A time could not be represented in a certificate.
    #[error("time out of range for a certificate: {0:?}")]
    TimeOutOfRange(SystemTime),
    /// rustls rejected a configuration (bad key, bad certificate).
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// The client certificate verifier could not be built (e.g. empty root store).
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// Reading or writing a file failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What we were doing ("write", "rename", "read").
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl PkiError {
    fn rcgen(what: &'static str) -> impl FnOnce(rcgen::Error) -> PkiError {
        move |source| PkiError::Rcgen { what, source }
    }

    fn parse(what: &'static str) -> impl FnOnce(String) -> PkiError {
        move |detail| PkiError::Parse { what, detail }
    }
}

/// How far certificates are backdated to tolerate clock skew between nodes.
pub(crate) const BACKDATE: Duration = Duration::from_secs(60 * 60);

/// Parses the first certificate in a PEM string (e.g. the CA certificate a node was given).
pub fn cert_der_from_pem(
    pem: &str,
    what: &'static str,
) -> Result<rustls_pki_types::CertificateDer<'static>, PkiError> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| PkiError::Parse {
        what,
        detail: e.to_string(),
    })
}

/// Every certificate in a PEM string, in order (a trust bundle, or a certificate and its chain); an error if
/// there is none.
pub fn certs_from_pem(
    pem: &str,
    what: &'static str,
) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>, PkiError> {
    use rustls_pki_types::pem::PemObject;
    let certs = rustls_pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PkiError::Parse {
            what,
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(PkiError::Parse {
            what,
            detail: "no certificate in it".into(),
        });
    }
    Ok(certs)
}

/// Seconds since the Unix epoch (negative before it), for certificate arithmetic.
fn unix_secs(t: SystemTime) -> Result<i64, PkiError> {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).map_err(|_| PkiError::TimeOutOfRange(t)),
        Err(e) => i64::try_from(e.duration().as_secs())
            .map(|s| -s)
            .map_err(|_| PkiError::TimeOutOfRange(t)),
    }
}

/// The inverse of [`unix_secs`].
fn from_unix_secs(secs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

/// Sets a certificate's validity window. Done through x509-parser's `ASN1Time` so this crate need not name
/// the `time` crate that rcgen's fields use.
fn set_validity(
    params: &mut rcgen::CertificateParams,
    not_before: SystemTime,
    not_after: SystemTime,
) -> Result<(), PkiError> {
    let conv = |t: SystemTime| {
        x509_parser::time::ASN1Time::from_timestamp(unix_secs(t)?)
            .map(|a| a.to_datetime())
            .map_err(|_| PkiError::TimeOutOfRange(t))
    };
    params.not_before = conv(not_before)?;
    params.not_after = conv(not_after)?;
    Ok(())
}
