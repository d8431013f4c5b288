//! Root CA rotation (`swarm ca --rotate`) and the [`Authority`] a manager signs and trusts with.
//!
//! A rotation makes a new root (same CN and O, a new OU label, so a certificate's issuer names the root that
//! signed it) and a cross-signed intermediate: the new root's subject and key, certified by the old root. While
//! it lasts the manager signs with the new key and appends the intermediate, so a peer that still trusts only
//! the old root accepts the new certificates (leaf → intermediate → old root), and trusts both roots, so nodes
//! not renewed yet keep working. Once every node holds a certificate of the new root, the old one is dropped.
//!
//! Must not: decide when a rotation starts or ends (the manager's rotation loop does), or touch the disk.

use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use rcgen::{Issuer, KeyPair};
use rustls_pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::ca::{random_serial, root_params};
use super::node_cert::NodeCertSpec;
use super::{certs_from_pem, PkiError, RootCa};

/// A new root CA for `old`'s cluster and the cross-signed intermediate (PEM) that chains it to `old`.
pub fn rotated_root(old: &RootCa, now: SystemTime) -> Result<(RootCa, String), PkiError> {
    let label = format!("swarm-ca-{}", hex::encode(rand::random::<[u8; 4]>()));
    let cluster = old.cluster_id().to_string();
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|source| {
        PkiError::Rcgen {
            what: "generate the new CA key",
            source,
        }
    })?;
    let params = root_params(&cluster, Some(&label), now)?;
    let cert = params.self_signed(&key).map_err(|source| PkiError::Rcgen {
        what: "self-sign the new CA certificate",
        source,
    })?;
    let mut cross = params;
    cross.serial_number = Some(random_serial());
    cross.use_authority_key_identifier_extension = true;
    let issuer = Issuer::from_ca_cert_der(old.cert_der(), old.key_pair()).map_err(|source| {
        PkiError::Rcgen {
            what: "load the old CA as issuer",
            source,
        }
    })?;
    let cross = cross
        .signed_by(&key, &issuer)
        .map_err(|source| PkiError::Rcgen {
            what: "cross-sign the new CA certificate",
            source,
        })?;
    let new = RootCa::from_parts(&cluster, cert.pem(), cert.der().clone(), key);
    Ok((new, cross.pem()))
}

/// Whether `cert_der` names `ca_der`'s subject as its issuer (rotated roots have distinct subjects, and a
/// verified certificate's issuer is the root whose key signed it).
pub fn issued_by(cert_der: &[u8], ca_der: &[u8]) -> bool {
    let (Ok((_, cert)), Ok((_, ca))) = (
        X509Certificate::from_der(cert_der),
        X509Certificate::from_der(ca_der),
    ) else {
        return false;
    };
    cert.issuer().as_raw() == ca.subject().as_raw()
}

/// What a manager signs with and trusts: the root CA that signs (the new one during a rotation), the
/// intermediate appended to what it signs (during a rotation), and the roots it trusts, the signing one first.
pub struct Authority {
    signer: Arc<RootCa>,
    intermediate_pem: Option<String>,
    roots: Vec<CertificateDer<'static>>,
    bundle_pem: String,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("signer", &self.signer)
            .field("roots", &self.roots.len())
            .finish()
    }
}

/// The authority in use, swapped when a rotation starts or ends.
pub type SharedAuthority = Arc<RwLock<Arc<Authority>>>;

impl Authority {
    /// One root that signs and is the only one trusted.
    pub fn single(ca: Arc<RootCa>) -> Authority {
        Authority {
            roots: vec![ca.cert_der().clone()],
            bundle_pem: ca.cert_pem().to_string(),
            signer: ca,
            intermediate_pem: None,
        }
    }

    /// During a rotation: `new` signs (with `cross_pem` appended), `new` and `old_pem` are trusted.
    pub fn rotating(
        new: Arc<RootCa>,
        cross_pem: &str,
        old_pem: &str,
    ) -> Result<Authority, PkiError> {
        certs_from_pem(cross_pem, "cross-signed CA certificate")?;
        let old = certs_from_pem(old_pem, "old CA certificate")?;
        let mut roots = vec![new.cert_der().clone()];
        roots.extend(old);
        Ok(Authority {
            bundle_pem: format!("{}{}", pem_line_end(new.cert_pem()), pem_line_end(old_pem)),
            roots,
            signer: new,
            intermediate_pem: Some(cross_pem.to_string()),
        })
    }

    /// A shared handle on this authority.
    pub fn shared(self) -> SharedAuthority {
        Arc::new(RwLock::new(Arc::new(self)))
    }

    /// The authority in use now.
    pub fn current(shared: &SharedAuthority) -> Arc<Authority> {
        shared.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Puts `new` in use.
    pub fn replace(shared: &SharedAuthority, new: Authority) {
        *shared.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(new);
    }

    /// The root CA that signs.
    pub fn signer(&self) -> &Arc<RootCa> {
        &self.signer
    }

    /// Whether a rotation is under way (two roots trusted).
    pub fn is_rotating(&self) -> bool {
        self.intermediate_pem.is_some()
    }

    /// The trusted roots, the signing one first.
    pub fn roots(&self) -> &[CertificateDer<'static>] {
        &self.roots
    }

    /// The trusted roots as PEM, the signing one first (what `GetRootCACertificate` returns).
    pub fn bundle_pem(&self) -> &str {
        &self.bundle_pem
    }

    /// Signs a node CSR with the signing root; the PEM returned carries the intermediate during a rotation.
    pub fn sign_node_csr(
        &self,
        csr_pem: &str,
        spec: &NodeCertSpec,
        now: SystemTime,
    ) -> Result<String, PkiError> {
        let leaf = self.signer.sign_node_csr(csr_pem, spec, now)?;
        Ok(match &self.intermediate_pem {
            Some(cross) => format!("{}{}", pem_line_end(&leaf), pem_line_end(cross)),
            None => leaf,
        })
    }

    /// Whether `cert_der` was issued by the signing root.
    pub fn signed_it(&self, cert_der: &[u8]) -> bool {
        issued_by(cert_der, self.signer.cert_der())
    }
}

/// `pem` ending with a line break, so PEM blocks can be concatenated.
fn pem_line_end(pem: &str) -> String {
    if pem.ends_with('\n') {
        pem.to_string()
    } else {
        format!("{pem}\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{client_config, server_config, NodeCredentials, NodeKey, NodeRole};
    use rustls_pki_types::ServerName;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn creds(auth: &Authority, id: &str, role: NodeRole) -> NodeCredentials {
        let key = NodeKey::generate().unwrap();
        let spec = NodeCertSpec::new(id, role).with_dns("localhost");
        let pem = auth
            .sign_node_csr(&key.csr_pem(id).unwrap(), &spec, SystemTime::now())
            .unwrap();
        NodeCredentials::new(&pem, &key).unwrap()
    }

    /// A handshake between a server and a client, each trusting `roots`.
    async fn handshake(
        server: &NodeCredentials,
        server_roots: &[CertificateDer<'static>],
        client: &NodeCredentials,
        client_roots: &[CertificateDer<'static>],
    ) -> Result<(), String> {
        let (a, b) = tokio::io::duplex(1 << 16);
        let acceptor =
            tokio_rustls::TlsAcceptor::from(server_config(server_roots, server).unwrap());
        let connector =
            tokio_rustls::TlsConnector::from(client_config(client_roots, client).unwrap());
        let srv = tokio::spawn(async move {
            let mut tls = acceptor.accept(a).await.map_err(|e| e.to_string())?;
            let mut buf = [0u8; 1];
            tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
            tls.write_all(b"y").await.map_err(|e| e.to_string())?;
            tls.flush().await.map_err(|e| e.to_string())?;
            Ok::<_, String>(())
        });
        let name = ServerName::try_from("localhost").unwrap();
        let cli = async {
            let mut tls = connector
                .connect(name, b)
                .await
                .map_err(|e| e.to_string())?;
            tls.write_all(b"x").await.map_err(|e| e.to_string())?;
            tls.flush().await.map_err(|e| e.to_string())?;
            let mut buf = [0u8; 1];
            tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
            Ok::<_, String>(())
        };
        let c = cli.await;
        let s = srv.await.map_err(|e| e.to_string())?;
        s.and(c)
    }

    #[tokio::test]
    async fn during_a_rotation_old_and_new_certificates_accept_each_other() {
        crate::pki::install_crypto_provider();
        let now = SystemTime::now();
        let old = Arc::new(RootCa::generate("c1", now).unwrap());
        let before = Authority::single(old.clone());
        let old_node = creds(&before, "n-old", NodeRole::Worker);
        let (new, cross) = rotated_root(&old, now).unwrap();
        assert_ne!(new.digest(), old.digest());
        assert_eq!(new.cluster_id(), "c1");
        let new = Arc::new(new);
        let during = Authority::rotating(new.clone(), &cross, old.cert_pem()).unwrap();
        assert!(during.is_rotating());
        assert_eq!(certs_from_pem(during.bundle_pem(), "b").unwrap().len(), 2);
        let new_node = creds(&during, "n-new", NodeRole::Manager);
        assert!(during.signed_it(new_node.cert_der()));
        assert!(!during.signed_it(old_node.cert_der()));
        assert_eq!(
            new_node.chain_der().len(),
            2,
            "leaf and cross-signed intermediate"
        );

        // a node trusting only the old root accepts the new certificate (through the intermediate)
        let only_old = std::slice::from_ref(old.cert_der());
        handshake(&new_node, during.roots(), &old_node, only_old)
            .await
            .expect("old-only client accepts a new server certificate");
        handshake(&old_node, only_old, &new_node, during.roots())
            .await
            .expect("old-only server accepts a new client certificate");
        // after the rotation: only the new root; an old certificate is refused
        let after = Authority::single(new.clone());
        handshake(&new_node, after.roots(), &new_node, after.roots())
            .await
            .expect("new with new");
        assert!(
            handshake(&new_node, after.roots(), &old_node, after.roots())
                .await
                .is_err()
        );
    }

    #[test]
    fn a_bad_intermediate_is_refused() {
        let old = RootCa::generate("c", SystemTime::now()).unwrap();
        let (new, _) = rotated_root(&old, SystemTime::now()).unwrap();
        assert!(Authority::rotating(Arc::new(new), "junk", old.cert_pem()).is_err());
    }
}
