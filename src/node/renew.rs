//! A worker's certificate, kept fresh while it runs: at a random point in the second half of its life the node
//! asks its manager's CA for a new one (a new key, its current certificate as proof), replaces the pair on disk
//! so that a crash at any moment leaves a matching pair, and swaps the TLS configuration its session uses, so
//! new connections present the new certificate without a restart.
//!
//! A manager renews its own certificate the same way, from its own CA, swapping its listener's configuration too.
//!
//! During a root CA rotation a worker learns the new roots by asking its manager every few seconds (over its
//! own mutual TLS), writes them to `certs/ca.crt`, and renews at once from the new root; a manager follows its
//! [`pki::Authority`].
//!
//! Must not: log a key, or give up (a manager that cannot be reached is retried until the certificate expires;
//! then the node says how to rejoin).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls_pki_types::CertificateDer;

use crate::api::dispatcher::{self as pb, node_ca_client::NodeCaClient};
use crate::pki::{self, NodeCredentials, NodeKey, PkiError};

/// The TLS configuration a session dials with; replaced when the certificate is renewed.
pub type ClientTls = Arc<RwLock<Arc<rustls::ClientConfig>>>;

/// The configuration to dial with now.
pub fn current(tls: &ClientTls) -> Arc<rustls::ClientConfig> {
    tls.read().unwrap_or_else(|p| p.into_inner()).clone()
}

/// The node's certificate and key files.
pub struct CertFiles {
    crt: PathBuf,
    key: PathBuf,
    next_key: PathBuf,
}

impl CertFiles {
    /// `certs/node.crt` and `certs/node.key` under `dir`.
    pub fn in_dir(dir: &Path) -> CertFiles {
        let certs = dir.join("certs");
        CertFiles {
            crt: certs.join("node.crt"),
            key: certs.join("node.key"),
            next_key: certs.join("node.key.next"),
        }
    }

    /// Loads the pair, finishing a replacement a crash interrupted (the new certificate was written, its key
    /// not yet moved into place).
    pub fn load(&self) -> Result<NodeCredentials, String> {
        let read =
            |p: &Path| std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()));
        let crt = read(&self.crt)?;
        match NodeCredentials::from_pem(&crt, &read(&self.key)?) {
            Err(PkiError::KeyMismatch) if self.next_key.exists() => {
                let creds = NodeCredentials::from_pem(&crt, &read(&self.next_key)?)
                    .map_err(|e| format!("{}: {e}", self.crt.display()))?;
                std::fs::rename(&self.next_key, &self.key)
                    .map_err(|e| format!("{}: {e}", self.key.display()))?;
                Ok(creds)
            }
            other => other.map_err(|e| format!("{}: {e}", self.crt.display())),
        }
    }

    /// Replaces the pair: the new key beside the old one, then the certificate, then the key (each step an
    /// atomic rename; [`CertFiles::load`] completes an interrupted one).
    pub fn store(&self, creds: &NodeCredentials) -> Result<(), PkiError> {
        pki::write_private_file(&self.next_key, creds.key_pem().as_bytes())?;
        pki::write_public_file(&self.crt, creds.cert_pem().as_bytes())?;
        std::fs::rename(&self.next_key, &self.key).map_err(|source| PkiError::Io {
            op: "rename",
            path: self.key.clone(),
            source,
        })
    }
}

/// Whether `creds` has expired.
pub fn expired(creds: &NodeCredentials) -> bool {
    pki::expiry_time(creds.cert_der()).map_or(true, |t| t <= SystemTime::now())
}

/// How often a worker asks its manager for the cluster's root CAs (a rotation adds one, then drops the old).
const ROOTS_POLL: Duration = Duration::from_secs(3);

/// Renews the certificate whenever it is due, for as long as the node runs; keeps `ca_file` (the trusted roots,
/// `roots_pem` now) and the TLS configuration in step with the roots the manager trusts, and renews at once
/// when the manager signs with a root that did not sign this node's certificate (a CA rotation).
pub async fn renew_forever(
    managers: super::managers::ManagerList,
    cluster_id: String,
    ca_file: PathBuf,
    mut roots_pem: String,
    files: CertFiles,
    tls: ClientTls,
    mut creds: NodeCredentials,
) {
    let mut warned_expired = false;
    let mut due = due_time(&creds);
    let mut backoff = Duration::from_secs(1);
    let mut next_try = SystemTime::now();
    let mut channel: Option<(Arc<rustls::ClientConfig>, tonic::transport::Channel)> = None;
    // the leader first (the agent session keeps the list leader-first); the next one after a failure
    let mut attempt = 0usize;
    let mut asked = String::new();
    loop {
        let addrs = managers.addrs();
        let manager = addrs
            .get(attempt % addrs.len().max(1))
            .cloned()
            .unwrap_or_default();
        if manager != asked {
            channel = None;
            asked = manager.clone();
        }
        match fetch_roots(&manager, &cluster_id, &tls, &mut channel).await {
            Ok(bundle) if bundle != roots_pem => match trust(&ca_file, &bundle, &creds, &tls) {
                Ok(n) => {
                    tracing::info!("the cluster's root CAs changed: this node now trusts {n}");
                    roots_pem = bundle;
                    channel = None;
                }
                Err(e) => tracing::warn!("cannot take the cluster's new root CAs: {e}"),
            },
            Ok(_) => attempt = 0,
            Err(e) => {
                tracing::debug!("cannot ask the manager at {manager} for its root CAs: {e}");
                attempt += 1;
            }
        }
        let roots = pki::certs_from_pem(&roots_pem, "the trusted root CAs").unwrap_or_default();
        let other_root = roots
            .first()
            .is_some_and(|signer| !pki::rotate::issued_by(creds.cert_der(), signer));
        let now = SystemTime::now();
        if (now >= due || other_root) && now >= next_try {
            let renewed = renew_once(&manager, &cluster_id, &tls)
                .await
                .and_then(|new| install(&files, &roots, &new, &tls, None).map(|()| new));
            match renewed {
                Ok(new) => {
                    tracing::info!("renewed this node's certificate");
                    creds = new;
                    due = due_time(&creds);
                    backoff = Duration::from_secs(1);
                    channel = None;
                    continue;
                }
                Err(e) if expired(&creds) => {
                    if !warned_expired {
                        tracing::error!(
                            "this node's certificate expired and could not be renewed ({e}): start swarmd \
                             with --join-addr and --join-token to rejoin the cluster"
                        );
                        warned_expired = true;
                    }
                }
                Err(e) => tracing::warn!("cannot renew this node's certificate yet: {e}"),
            }
            attempt += 1;
            next_try = SystemTime::now() + backoff;
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
        let wait = due
            .duration_since(SystemTime::now())
            .unwrap_or_default()
            .min(ROOTS_POLL);
        tokio::time::sleep(wait.max(Duration::from_millis(100))).await;
    }
}

/// The root CAs the manager trusts (PEM, the signing one first), asked over this node's mutual TLS (a
/// connection kept while the configuration stays the same).
async fn fetch_roots(
    manager: &str,
    cluster_id: &str,
    tls: &ClientTls,
    channel: &mut Option<(Arc<rustls::ClientConfig>, tonic::transport::Channel)>,
) -> Result<String, String> {
    let config = current(tls);
    let reuse = channel
        .as_ref()
        .filter(|(c, _)| Arc::ptr_eq(c, &config))
        .map(|(_, ch)| ch.clone());
    let ch = match reuse {
        Some(ch) => ch,
        None => {
            let ch = crate::transport::tls_channel_to_manager(manager, config.clone(), cluster_id)
                .await?;
            *channel = Some((config, ch.clone()));
            ch
        }
    };
    match NodeCaClient::new(ch)
        .get_root_ca_certificate(pb::RootCaRequest {})
        .await
    {
        Ok(reply) => Ok(reply.into_inner().cert_pem),
        Err(e) => {
            *channel = None;
            Err(e.message().to_string())
        }
    }
}

/// Trusts the roots of `bundle` from now on: `ca_file` replaced (atomically), then the TLS configuration.
/// Returns how many roots.
fn trust(
    ca_file: &Path,
    bundle: &str,
    creds: &NodeCredentials,
    tls: &ClientTls,
) -> Result<usize, String> {
    let roots = pki::certs_from_pem(bundle, "the manager's root CAs").map_err(|e| e.to_string())?;
    let config = pki::client_config(&roots, creds).map_err(|e| e.to_string())?;
    pki::write_public_file(ca_file, bundle.as_bytes()).map_err(|e| e.to_string())?;
    *tls.write().unwrap_or_else(|p| p.into_inner()) = config;
    Ok(roots.len())
}

/// A manager's own certificate, re-issued by the cluster's authority (`reissue`, given the lifetime) whenever
/// it is due — or at once when the authority signs with another root (a CA rotation): the pair replaced on disk,
/// then the listener's server configuration and the local session's client one swapped. When only the trusted
/// roots change (a rotation ends), the configurations are rebuilt around the same certificate.
pub async fn renew_own_forever(
    files: CertFiles,
    authority: pki::SharedAuthority,
    server: crate::transport::ServerTls,
    client: ClientTls,
    mut creds: NodeCredentials,
    lifetime: impl Fn() -> Duration,
    reissue: impl Fn(&pki::Authority, Duration) -> Result<NodeCredentials, String>,
) {
    let mut due = due_time(&creds);
    let mut configured = pki::Authority::current(&authority);
    loop {
        let auth = pki::Authority::current(&authority);
        let now = SystemTime::now();
        // a shorter lifetime set since (`swarm update --cert-expiry`) makes a certificate that outlives it due
        let outlives = pki::expiry_time(creds.cert_der())
            .ok()
            .and_then(|t| t.duration_since(now).ok())
            .is_some_and(|left| left > lifetime() + Duration::from_secs(1));
        if now >= due || outlives || !auth.signed_it(creds.cert_der()) {
            let renewed = reissue(&auth, lifetime()).and_then(|new| {
                install(&files, auth.roots(), &new, &client, Some(&server)).map(|()| new)
            });
            match renewed {
                Ok(new) => {
                    tracing::info!("renewed this manager's certificate");
                    creds = new;
                    due = due_time(&creds);
                    configured = auth;
                }
                Err(e) => {
                    tracing::warn!("cannot renew this manager's certificate yet: {e}");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            }
            continue;
        }
        if !Arc::ptr_eq(&configured, &auth) {
            match configure(auth.roots(), &creds, &client, Some(&server)) {
                Ok(()) => configured = auth,
                Err(e) => tracing::warn!("cannot trust the cluster's new root CAs yet: {e}"),
            }
        }
        let wait = due.duration_since(now).unwrap_or_default();
        tokio::time::sleep(wait.min(Duration::from_secs(1))).await;
    }
}

/// When `creds` is due for renewal: a random point in the second half of its life.
fn due_time(creds: &NodeCredentials) -> SystemTime {
    pki::renewal_time(creds.cert_der(), rand::random::<f64>()).unwrap_or_else(|_| SystemTime::now())
}

/// Puts renewed credentials in use: the pair on disk first, then the TLS configurations new connections get.
fn install(
    files: &CertFiles,
    roots: &[CertificateDer<'static>],
    new: &NodeCredentials,
    client: &ClientTls,
    server: Option<&crate::transport::ServerTls>,
) -> Result<(), String> {
    files.store(new).map_err(|e| e.to_string())?;
    configure(roots, new, client, server)
}

/// The TLS configurations new connections get: `creds`, trusting `roots`.
fn configure(
    roots: &[CertificateDer<'static>],
    creds: &NodeCredentials,
    client: &ClientTls,
    server: Option<&crate::transport::ServerTls>,
) -> Result<(), String> {
    let c = pki::client_config(roots, creds).map_err(|e| e.to_string())?;
    if let Some(server) = server {
        let s = pki::server_config_allowing_joins(roots, creds).map_err(|e| e.to_string())?;
        *server.write().unwrap_or_else(|p| p.into_inner()) = s;
    }
    *client.write().unwrap_or_else(|p| p.into_inner()) = c;
    Ok(())
}

/// One renewal through `manager`'s CA service: a new key, a certificate for it with the role the managers give.
pub(crate) async fn renew_once(
    manager: &str,
    cluster_id: &str,
    tls: &ClientTls,
) -> Result<NodeCredentials, String> {
    let key = NodeKey::generate().map_err(|e| e.to_string())?;
    let csr = key.csr_pem("renewal").map_err(|e| e.to_string())?;
    let channel =
        crate::transport::tls_channel_to_manager(manager, current(tls), cluster_id).await?;
    let reply = NodeCaClient::new(channel)
        .renew_node_certificate(pb::RenewCertificateRequest { csr_pem: csr })
        .await
        .map_err(|e| e.message().to_string())?
        .into_inner();
    NodeCredentials::new(&reply.cert_pem, &key).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{NodeCertSpec, NodeRole, RootCa};

    fn creds(ca: &RootCa, id: &str) -> NodeCredentials {
        let key = NodeKey::generate().unwrap();
        let spec = NodeCertSpec::new(id, NodeRole::Worker);
        let cert = ca
            .sign_node_csr(&key.csr_pem(id).unwrap(), &spec, SystemTime::now())
            .unwrap();
        NodeCredentials::new(&cert, &key).unwrap()
    }

    #[test]
    fn a_replacement_interrupted_by_a_crash_still_loads_a_matching_pair() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("certs")).unwrap();
        let ca = RootCa::generate("c", SystemTime::now()).unwrap();
        let files = CertFiles::in_dir(dir.path());
        let old = creds(&ca, "n1");
        files.store(&old).unwrap();
        assert_eq!(files.load().unwrap().cert_pem(), old.cert_pem());
        // crash after the new certificate was written, before its key moved into place
        let new = creds(&ca, "n1");
        pki::write_private_file(&files.next_key, new.key_pem().as_bytes()).unwrap();
        pki::write_public_file(&files.crt, new.cert_pem().as_bytes()).unwrap();
        let loaded = files.load().unwrap();
        assert_eq!(loaded.cert_pem(), new.cert_pem());
        assert!(!files.next_key.exists());
        assert_eq!(files.load().unwrap().key_pem(), new.key_pem());
        // crash after only the new key was written: the old pair still matches
        let newer = creds(&ca, "n1");
        pki::write_private_file(&files.next_key, newer.key_pem().as_bytes()).unwrap();
        assert_eq!(files.load().unwrap().cert_pem(), new.cert_pem());
        assert!(!expired(&new));
    }
}
