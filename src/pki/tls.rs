//! rustls configurations for the cluster's mutual TLS (DESIGN invariant 8): servers require a client
//! certificate signed by the root CA, clients trust only the root CA and present their node certificate, and
//! the peer's [`NodeIdentity`] is read back from the connection to authorize calls by role.
//!
//! Only the ring provider is used (no aws-lc). Must not open sockets or accept connections: the gRPC edge
//! owns the acceptor (certificate rotation swaps the `Arc<ServerConfig>` it hands to `TlsAcceptor`).

use std::sync::Arc;

use rustls::client::ClientConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;

use super::node_cert::{NodeCredentials, NodeIdentity};
use super::PkiError;

/// ALPN protocol both sides offer: gRPC runs over HTTP/2.
pub const ALPN_H2: &[u8] = b"h2";

/// Installs ring as the process-wide rustls provider. Call first thing in `main`; calling it again (or after
/// someone else installed one) is harmless.
pub fn install_crypto_provider() {
    if CryptoProvider::get_default().is_none() {
        // A concurrent install may win the race; either way a provider is installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// The ring provider, passed explicitly so configurations never depend on the process default.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A root store holding only the cluster's root CAs (one, or during a CA rotation the new and the old).
fn roots(ca_certs: &[CertificateDer<'static>]) -> Result<Arc<RootCertStore>, PkiError> {
    let mut store = RootCertStore::empty();
    for ca in ca_certs {
        store.add(ca.clone())?;
    }
    Ok(Arc::new(store))
}

/// Server side: present `creds`, require a client certificate signed by one of `ca_certs`.
pub fn server_config(
    ca_certs: &[CertificateDer<'static>],
    creds: &NodeCredentials,
) -> Result<Arc<ServerConfig>, PkiError> {
    server_config_with(ca_certs, creds, false)
}

/// Server side for the cluster port: like [`server_config`], but a client without a certificate may connect
/// too (a node that is joining talks to the CA service only; every other service refuses it). A client that
/// presents a certificate must present one signed by one of `ca_certs`.
pub fn server_config_allowing_joins(
    ca_certs: &[CertificateDer<'static>],
    creds: &NodeCredentials,
) -> Result<Arc<ServerConfig>, PkiError> {
    server_config_with(ca_certs, creds, true)
}

/// A server presenting `creds` that verifies client certificates against `ca_certs`, and lets clients without
/// one connect when `anonymous`.
fn server_config_with(
    ca_certs: &[CertificateDer<'static>],
    creds: &NodeCredentials,
    anonymous: bool,
) -> Result<Arc<ServerConfig>, PkiError> {
    let provider = provider();
    let mut verifier =
        WebPkiClientVerifier::builder_with_provider(roots(ca_certs)?, provider.clone());
    if anonymous {
        verifier = verifier.allow_unauthenticated();
    }
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier.build()?)
        .with_single_cert(creds.chain_der(), creds.private_key_der())?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// Client side: trust only `ca_certs`, present `creds`.
pub fn client_config(
    ca_certs: &[CertificateDer<'static>],
    creds: &NodeCredentials,
) -> Result<Arc<ClientConfig>, PkiError> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(ca_certs)?)
        .with_client_auth_cert(creds.chain_der(), creds.private_key_der())?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// Client side for a node that is joining, step 1: no client certificate, and ANY server certificate accepted
/// (handshake signatures still verified). Use it only to fetch the root CA certificate, which the caller must
/// then check against the digest in its join token (`JoinToken::verify_ca`) before trusting anything else.
pub fn bootstrap_client_config() -> Result<Arc<ClientConfig>, PkiError> {
    let provider = provider();
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServerCert(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// Client side for a node that is joining, step 2: trust only `ca_certs` (already checked against the token),
/// no client certificate yet.
pub fn join_client_config(
    ca_certs: &[CertificateDer<'static>],
) -> Result<Arc<ClientConfig>, PkiError> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(ca_certs)?)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// Accepts any server certificate but checks the handshake's signatures (see [`bootstrap_client_config`]).
#[derive(Debug)]
struct AnyServerCert(Arc<CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The identity in a verified peer chain (leaf first), as rustls reports it.
pub fn peer_identity_from_certs(
    certs: Option<&[CertificateDer<'static>]>,
) -> Result<NodeIdentity, PkiError> {
    let leaf = certs
        .and_then(|c| c.first())
        .ok_or(PkiError::NoPeerCertificate)?;
    NodeIdentity::from_der(leaf)
}

/// The calling node's identity on a server-side connection; authorize with
/// [`NodeIdentity::require_role`].
pub fn peer_identity<IO>(
    conn: &tokio_rustls::server::TlsStream<IO>,
) -> Result<NodeIdentity, PkiError> {
    peer_identity_from_certs(conn.get_ref().1.peer_certificates())
}

/// The server's identity on a client-side connection (e.g. to check we reached a manager).
pub fn server_identity<IO>(
    conn: &tokio_rustls::client::TlsStream<IO>,
) -> Result<NodeIdentity, PkiError> {
    peer_identity_from_certs(conn.get_ref().1.peer_certificates())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{NodeCertSpec, NodeKey, NodeRole, RootCa};
    use rustls_pki_types::ServerName;
    use std::time::SystemTime;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    fn issue(ca: &RootCa, node_id: &str, role: NodeRole) -> NodeCredentials {
        let key = NodeKey::generate().expect("key");
        let csr = key.csr_pem(node_id).expect("csr");
        let spec = NodeCertSpec::new(node_id, role)
            .with_dns("localhost")
            .with_ip([127, 0, 0, 1].into());
        let cert = ca
            .sign_node_csr(&csr, &spec, SystemTime::now())
            .expect("sign");
        NodeCredentials::new(&cert, &key).expect("creds")
    }

    #[test]
    fn provider_install_is_idempotent() {
        install_crypto_provider();
        install_crypto_provider();
        assert!(CryptoProvider::get_default().is_some());
    }

    #[tokio::test]
    async fn mutual_tls_over_duplex_reads_the_client_identity() {
        let ca = RootCa::generate("cluster-t", SystemTime::now()).expect("ca");
        let manager = issue(&ca, "mgr1", NodeRole::Manager);
        let worker = issue(&ca, "wrk1", NodeRole::Worker);
        let server = TlsAcceptor::from(
            server_config(std::slice::from_ref(ca.cert_der()), &manager).expect("server"),
        );
        let client = TlsConnector::from(
            client_config(std::slice::from_ref(ca.cert_der()), &worker).expect("client"),
        );
        let (c_io, s_io) = tokio::io::duplex(64 * 1024);
        let name = ServerName::try_from("mgr1").expect("name");
        let (s, c) = tokio::join!(server.accept(s_io), client.connect(name, c_io));
        let mut s = s.expect("server handshake");
        let mut c = c.expect("client handshake");

        let id = peer_identity(&s).expect("client identity");
        assert_eq!(id.node_id, "wrk1");
        assert_eq!(id.role, NodeRole::Worker);
        assert_eq!(id.cluster_id, "cluster-t");
        assert!(id.require_role(NodeRole::Manager).is_err());
        let sid = server_identity(&c).expect("server identity");
        assert_eq!(sid.role, NodeRole::Manager);
        assert_eq!(s.get_ref().1.alpn_protocol(), Some(ALPN_H2));

        c.write_all(b"ping").await.expect("write");
        c.flush().await.expect("flush");
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await.expect("read");
        assert_eq!(&buf, b"ping");
    }

    #[tokio::test]
    async fn loopback_tcp_handshake_by_ip() {
        let ca = RootCa::generate("cluster-t", SystemTime::now()).expect("ca");
        let manager = issue(&ca, "mgr1", NodeRole::Manager);
        let other = issue(&ca, "mgr2", NodeRole::Manager);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let acceptor = TlsAcceptor::from(
            server_config(std::slice::from_ref(ca.cert_der()), &manager).expect("server"),
        );
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.expect("accept");
            let tls = acceptor.accept(tcp).await.expect("server handshake");
            peer_identity(&tls).expect("identity")
        });
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let connector = TlsConnector::from(
            client_config(std::slice::from_ref(ca.cert_der()), &other).expect("client"),
        );
        let name = ServerName::try_from("127.0.0.1").expect("ip name");
        let _tls = connector
            .connect(name, tcp)
            .await
            .expect("client handshake");
        let id = server.await.expect("join");
        assert_eq!(id.node_id, "mgr2");
        assert_eq!(id.role, NodeRole::Manager);
    }

    #[tokio::test]
    async fn client_signed_by_another_ca_is_refused() {
        let ca = RootCa::generate("cluster-t", SystemTime::now()).expect("ca");
        let rogue = RootCa::generate("cluster-t", SystemTime::now()).expect("rogue");
        let manager = issue(&ca, "mgr1", NodeRole::Manager);
        let intruder = issue(&rogue, "evil", NodeRole::Manager);
        let server = TlsAcceptor::from(
            server_config(std::slice::from_ref(ca.cert_der()), &manager).expect("server"),
        );
        // The intruder trusts our CA (it was given the cert), but its own cert is from another CA.
        let client = TlsConnector::from(
            client_config(std::slice::from_ref(ca.cert_der()), &intruder).expect("client"),
        );
        let (c_io, s_io) = tokio::io::duplex(64 * 1024);
        let name = ServerName::try_from("mgr1").expect("name");
        let (s, c) = tokio::join!(server.accept(s_io), async move {
            // In TLS 1.3 the client may finish before the server's alert; drive a read to surface it.
            let mut c = client.connect(name, c_io).await?;
            let mut buf = [0u8; 1];
            c.read(&mut buf).await
        });
        assert!(
            s.is_err(),
            "server must refuse a client cert from another CA"
        );
        assert!(c.is_err() || c.is_ok_and(|n| n == 0));
    }

    #[tokio::test]
    async fn server_signed_by_another_ca_is_refused() {
        let ca = RootCa::generate("cluster-t", SystemTime::now()).expect("ca");
        let rogue = RootCa::generate("cluster-t", SystemTime::now()).expect("rogue");
        let impostor = issue(&rogue, "mgr1", NodeRole::Manager);
        let worker = issue(&ca, "wrk1", NodeRole::Worker);
        let server = TlsAcceptor::from(
            server_config(std::slice::from_ref(rogue.cert_der()), &impostor).expect("server"),
        );
        let client = TlsConnector::from(
            client_config(std::slice::from_ref(ca.cert_der()), &worker).expect("client"),
        );
        let (c_io, s_io) = tokio::io::duplex(64 * 1024);
        let name = ServerName::try_from("mgr1").expect("name");
        let (_s, c) = tokio::join!(server.accept(s_io), client.connect(name, c_io));
        assert!(
            c.is_err(),
            "client must refuse a server cert from another CA"
        );
    }

    #[test]
    fn missing_peer_certificate_is_an_error() {
        assert!(matches!(
            peer_identity_from_certs(None),
            Err(PkiError::NoPeerCertificate)
        ));
        assert!(matches!(
            peer_identity_from_certs(Some(&[])),
            Err(PkiError::NoPeerCertificate)
        ));
    }
}
