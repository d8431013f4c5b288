//! A node's durable identity in its state directory: node id, cluster id, Raft id, the cluster CA (managers) and
//! the node's own certificate. An empty directory starts a new cluster; an existing one is resumed.
//!
//! Layout: `node.json`, `certs/ca.crt`, `certs/ca.key` (0600), `certs/node.crt`, `certs/node.key` (0600).
//! Must not: start any service.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::pki::{self, Authority, NodeCertSpec, NodeCredentials, NodeKey, NodeRole, RootCa};
use crate::util::{IdSource, RandomIds};

/// Format version of `node.json`.
const NODE_FILE_VERSION: u32 = 1;

/// Why the identity could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// `node.json` is not ours or is damaged.
    #[error("{path}: {message}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Certificates could not be made or loaded.
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
    /// The CA key could not be read (locked, wrong unlock key) or written.
    #[error(transparent)]
    Keys(#[from] super::keyfiles::KeyFileError),
    /// `node.json` is missing from a directory that holds Raft data: creating a new identity would start
    /// a new cluster over the old data and replace the cluster's CA key.
    #[error(
        "{} is missing, but {} holds this manager's Raft data: refusing to start a new cluster over it \
         (that would replace the node's identity and the cluster's CA key). Restore node.json and certs/ from \
         a backup of this state directory, or move the directory away to start a new cluster",
        path.display(), data.display()
    )]
    Missing {
        /// The missing `node.json`.
        path: PathBuf,
        /// The Raft database that proves the directory was in use.
        data: PathBuf,
    },
}

#[derive(Serialize, Deserialize)]
struct NodeFile {
    version: u32,
    node_id: String,
    cluster_id: String,
    raft_id: u64,
}

/// Who this node is.
pub struct Identity {
    /// Node id (also the certificate's CN).
    pub node_id: String,
    /// Cluster id (the certificates' O).
    pub cluster_id: String,
    /// This node's id in Raft.
    pub raft_id: u64,
    /// The cluster CA (this node is a manager).
    pub ca: std::sync::Arc<RootCa>,
    /// This node's certificate and key.
    pub creds: NodeCredentials,
    /// True when this start created a new cluster.
    pub new_cluster: bool,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> IdentityError + '_ {
    move |source| IdentityError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A manager certificate for `node_id` from the cluster's authority, naming `ips`, valid for `validity`.
pub fn issue(
    ca: &Authority,
    node_id: &str,
    ips: &[IpAddr],
    now: SystemTime,
    validity: std::time::Duration,
) -> Result<NodeCredentials, IdentityError> {
    let key = NodeKey::generate()?;
    let mut spec = NodeCertSpec::new(node_id, NodeRole::Manager)
        .with_dns("localhost")
        .with_validity(validity);
    for ip in ips {
        spec = spec.with_ip(*ip);
    }
    let cert = ca.sign_node_csr(&key.csr_pem(node_id)?, &spec, now)?;
    Ok(NodeCredentials::new(&cert, &key)?)
}

/// The Raft id of a manager that joined: see [`crate::model::raft_id_for`].
pub use crate::model::raft_id_for;

/// Writes the identity of a manager that joined an existing cluster: the cluster's CA (certificate and key,
/// received over mutual TLS), this node's certificate, and `node.json` last. Nothing is initialized in Raft: the
/// node receives the cluster's log from the leader.
pub fn write_joined(
    dir: &Path,
    node_id: &str,
    cluster_id: &str,
    ca: &RootCa,
    creds: &NodeCredentials,
) -> Result<(), IdentityError> {
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs).map_err(io(&certs))?;
    pki::write_public_file(&certs.join("ca.crt"), ca.cert_pem().as_bytes())?;
    pki::write_private_file(&certs.join("ca.key"), ca.key_pem().as_bytes())?;
    super::renew::CertFiles::in_dir(dir).store(creds)?;
    let file = NodeFile {
        version: NODE_FILE_VERSION,
        node_id: node_id.to_string(),
        cluster_id: cluster_id.to_string(),
        raft_id: raft_id_for(node_id),
    };
    let json = serde_json::to_vec_pretty(&file).unwrap_or_default();
    pki::write_public_file(&node_file(dir), &json)?;
    Ok(())
}

/// The identity file in the state directory `dir`.
pub fn node_file(dir: &Path) -> PathBuf {
    dir.join("node.json")
}

/// Whether `dir` holds an identity (this is not the node's first start).
pub fn exists(dir: &Path) -> bool {
    node_file(dir).exists()
}

/// Loads the identity in `dir`, or creates a new cluster there. `ips` go into the node certificate.
/// `raft_data` is the Raft database file: while it exists, a missing `node.json` is refused
/// ([`IdentityError::Missing`]) and nothing is written (Raft data is only ever created after `node.json`).
/// `unlock` opens a CA key wrapped by autolock (call through [`super::lock::open_keys`]).
pub fn init_or_load(
    dir: &Path,
    ips: &[IpAddr],
    raft_data: &Path,
    unlock: Option<&crate::secrets::lock::UnlockKey>,
) -> Result<Identity, IdentityError> {
    let now = SystemTime::now();
    let certs = dir.join("certs");
    let node_file = node_file(dir);
    if !node_file.exists() && raft_data.exists() {
        return Err(IdentityError::Missing {
            path: node_file,
            data: raft_data.to_path_buf(),
        });
    }
    std::fs::create_dir_all(&certs).map_err(io(&certs))?;
    let node_crt = certs.join("node.crt");
    if !node_file.exists() {
        let mut ids = RandomIds;
        let node_id = ids.next_id();
        let cluster_id = ids.next_id();
        let ca = std::sync::Arc::new(RootCa::generate(&cluster_id, now)?);
        let creds = issue(
            &Authority::single(ca.clone()),
            &node_id,
            ips,
            now,
            pki::NODE_CERT_VALIDITY,
        )?;
        super::keyfiles::RootFiles::in_dir(dir).store(&ca, None)?;
        super::renew::CertFiles::in_dir(dir).store(&creds)?;
        let file = NodeFile {
            version: NODE_FILE_VERSION,
            node_id: node_id.clone(),
            cluster_id: cluster_id.clone(),
            raft_id: 1,
        };
        let json = serde_json::to_vec_pretty(&file).unwrap_or_default();
        // written last: its presence means the directory holds a complete identity
        pki::write_public_file(&node_file, &json)?;
        return Ok(Identity {
            node_id,
            cluster_id,
            raft_id: 1,
            ca,
            creds,
            new_cluster: true,
        });
    }
    let text = std::fs::read(&node_file).map_err(io(&node_file))?;
    let file: NodeFile = serde_json::from_slice(&text).map_err(|e| IdentityError::Corrupt {
        path: node_file.clone(),
        message: e.to_string(),
    })?;
    if file.version != NODE_FILE_VERSION {
        return Err(IdentityError::Corrupt {
            path: node_file,
            message: format!(
                "unsupported format version {} (this swarmd reads {NODE_FILE_VERSION})",
                file.version
            ),
        });
    }
    let ca = std::sync::Arc::new(super::keyfiles::RootFiles::in_dir(dir).load(unlock)?);
    let cert_files = super::renew::CertFiles::in_dir(dir);
    let mut creds = cert_files
        .load()
        .map_err(|message| IdentityError::Corrupt {
            path: node_crt.clone(),
            message,
        })?;
    // renew (or re-issue for new addresses) at start-up when the certificate is in the second half of its life
    let renew = pki::needs_renewal(creds.cert_der(), now, 0.0).unwrap_or(true);
    if renew {
        let single = Authority::single(ca.clone());
        creds = issue(&single, &file.node_id, ips, now, pki::NODE_CERT_VALIDITY)?;
        cert_files.store(&creds)?;
    }
    Ok(Identity {
        node_id: file.node_id,
        cluster_id: file.cluster_id,
        raft_id: file.raft_id,
        ca,
        creds,
        new_cluster: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_then_resumes_the_same_identity() {
        pki::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let ips = ["127.0.0.1".parse().unwrap()];
        let raft = dir.path().join("raft/raft.redb");
        let a = init_or_load(dir.path(), &ips, &raft, None).unwrap();
        assert!(a.new_cluster);
        assert_eq!(a.creds.identity().node_id, a.node_id);
        let b = init_or_load(dir.path(), &ips, &raft, None).unwrap();
        assert!(!b.new_cluster);
        assert_eq!((a.node_id, a.cluster_id), (b.node_id, b.cluster_id));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("certs/node.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_missing_node_file_over_raft_data_is_refused_and_nothing_is_written() {
        pki::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let ips = ["127.0.0.1".parse().unwrap()];
        let raft = dir.path().join("raft/raft.redb");
        init_or_load(dir.path(), &ips, &raft, None).unwrap();
        std::fs::create_dir_all(raft.parent().unwrap()).unwrap();
        std::fs::write(&raft, b"data").unwrap();
        let ca_key = std::fs::read(dir.path().join("certs/ca.key")).unwrap();
        std::fs::remove_file(dir.path().join("node.json")).unwrap();
        let e = init_or_load(dir.path(), &ips, &raft, None)
            .err()
            .expect("refused");
        let text = e.to_string();
        assert!(
            text.starts_with(&format!(
                "{} is missing, but {} holds this manager's Raft data",
                dir.path().join("node.json").display(),
                raft.display()
            )),
            "{text}"
        );
        assert!(!dir.path().join("node.json").exists());
        assert_eq!(
            std::fs::read(dir.path().join("certs/ca.key")).unwrap(),
            ca_key
        );
    }
}
