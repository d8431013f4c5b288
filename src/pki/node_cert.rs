//! Node certificates: the node's key and CSR, the CA-side certificate policy ([`NodeCertSpec`]: CN = node id,
//! OU = role, O = cluster id, SANs, 90 days, server + client auth), the [`NodeIdentity`] read back from a peer
//! certificate, and the renewal window.
//!
//! Must not sign anything (that is [`super::RootCa::sign_node_csr`]) nor read the clock: `now` comes in.

use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::x509::AttributeTypeAndValue;

use super::{
    cert_der_from_pem, from_unix_secs, set_validity, unix_secs, NodeRole, PkiError, BACKDATE,
};

/// Node certificate validity: 90 days, Swarm's default.
pub const NODE_CERT_VALIDITY: Duration = Duration::from_secs(90 * 24 * 60 * 60);

/// A node's private key (ECDSA P-256). `Debug` never prints it.
pub struct NodeKey {
    key: KeyPair,
}

impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NodeKey(<redacted>)")
    }
}

impl NodeKey {
    /// A fresh key.
    pub fn generate() -> Result<NodeKey, PkiError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(PkiError::rcgen("generate node key"))?;
        Ok(NodeKey { key })
    }

    /// Loads a key from PKCS#8 PEM.
    pub fn from_pem(pem: &str) -> Result<NodeKey, PkiError> {
        let key = KeyPair::from_pem(pem).map_err(|e| PkiError::Parse {
            what: "node key PEM",
            detail: e.to_string(),
        })?;
        Ok(NodeKey { key })
    }

    /// The key as PKCS#8 PEM: write it only with [`super::write_private_file`].
    pub fn to_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// A certificate signing request for `node_id`. The CA ignores the requested subject and decides it.
    pub fn csr_pem(&self, node_id: &str) -> Result<String, PkiError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, node_id);
        params.distinguished_name = dn;
        let csr = params
            .serialize_request(&self.key)
            .map_err(PkiError::rcgen("serialize CSR"))?;
        csr.pem().map_err(PkiError::rcgen("encode CSR PEM"))
    }
}

/// What the CA puts in a node certificate, decided by the manager, not by the requesting node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeCertSpec {
    /// The node id: the certificate's CN and a DNS SAN.
    pub node_id: String,
    /// The role: the certificate's OU and a DNS SAN.
    pub role: NodeRole,
    /// Extra DNS SANs (e.g. "localhost", the host name).
    pub dns_names: Vec<String>,
    /// IP SANs (e.g. 127.0.0.1 for loopback clusters).
    pub ip_addrs: Vec<IpAddr>,
    /// How long the certificate is valid (the cluster's `--cert-expiry`; 90 days by default).
    pub validity: Duration,
}

impl NodeCertSpec {
    /// A spec with only the node id and role SANs.
    pub fn new(node_id: impl Into<String>, role: NodeRole) -> NodeCertSpec {
        NodeCertSpec {
            node_id: node_id.into(),
            role,
            dns_names: Vec::new(),
            ip_addrs: Vec::new(),
            validity: NODE_CERT_VALIDITY,
        }
    }

    /// Sets the validity.
    pub fn with_validity(mut self, validity: Duration) -> NodeCertSpec {
        self.validity = validity;
        self
    }

    /// Adds a DNS SAN.
    pub fn with_dns(mut self, name: impl Into<String>) -> NodeCertSpec {
        self.dns_names.push(name.into());
        self
    }

    /// Adds an IP SAN.
    pub fn with_ip(mut self, ip: IpAddr) -> NodeCertSpec {
        self.ip_addrs.push(ip);
        self
    }

    /// The rcgen parameters for this node in `cluster_id`, valid from `now` (backdated for clock skew: an hour,
    /// or a quarter of a short validity) for `validity`.
    pub fn certificate_params(
        &self,
        cluster_id: &str,
        now: SystemTime,
    ) -> Result<CertificateParams, PkiError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, self.node_id.as_str());
        dn.push(DnType::OrganizationalUnitName, self.role.as_ou());
        dn.push(DnType::OrganizationName, cluster_id);
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let mut names: Vec<&str> = vec![self.node_id.as_str(), self.role.as_ou()];
        names.extend(self.dns_names.iter().map(String::as_str));
        let mut seen = std::collections::HashSet::new();
        names.retain(|n| seen.insert(*n));
        for name in names {
            let ia5 = name
                .try_into()
                .map_err(|e: rcgen::Error| PkiError::InvalidName {
                    name: name.to_string(),
                    detail: e.to_string(),
                })?;
            params.subject_alt_names.push(SanType::DnsName(ia5));
        }
        params
            .subject_alt_names
            .extend(self.ip_addrs.iter().map(|ip| SanType::IpAddress(*ip)));
        let backdate = BACKDATE.min(self.validity / 4);
        set_validity(&mut params, now - backdate, now + self.validity)?;
        Ok(params)
    }
}

/// Who a peer is, read from its certificate: CN = node id, OU = role, O = cluster id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeIdentity {
    /// The node's id (CN).
    pub node_id: String,
    /// The node's role (OU).
    pub role: NodeRole,
    /// The cluster that issued the certificate (O).
    pub cluster_id: String,
}

impl NodeIdentity {
    /// Reads the identity from a DER certificate; errors if CN, OU or O is missing, repeated or unknown.
    pub fn from_der(der: &[u8]) -> Result<NodeIdentity, PkiError> {
        let (_, x509) = X509Certificate::from_der(der)
            .map_err(|e| PkiError::BadNodeCertificate(format!("not X.509: {e}")))?;
        let subject = x509.subject();
        let node_id = single("CN (node id)", subject.iter_common_name())?;
        let ou = single("OU (role)", subject.iter_organizational_unit())?;
        let cluster_id = single("O (cluster id)", subject.iter_organization())?;
        let role = NodeRole::from_ou(&ou).ok_or_else(|| {
            PkiError::BadNodeCertificate(format!(
                "OU {ou:?} is neither \"swarm-manager\" nor \"swarm-worker\""
            ))
        })?;
        if node_id.is_empty() || cluster_id.is_empty() {
            return Err(PkiError::BadNodeCertificate("empty CN or O".into()));
        }
        Ok(NodeIdentity {
            node_id,
            role,
            cluster_id,
        })
    }

    /// Reads the identity from a PEM certificate.
    pub fn from_pem(pem: &str) -> Result<NodeIdentity, PkiError> {
        NodeIdentity::from_der(&cert_der_from_pem(pem, "node certificate PEM")?)
    }

    /// Authorizes a call that needs `required`: a manager may do what a worker may, not the reverse.
    pub fn require_role(&self, required: NodeRole) -> Result<(), PkiError> {
        if self.role >= required {
            Ok(())
        } else {
            Err(PkiError::Unauthorized {
                node_id: self.node_id.clone(),
                role: self.role,
                required,
            })
        }
    }

    /// Checks the certificate was issued for `cluster_id`.
    pub fn require_cluster(&self, cluster_id: &str) -> Result<(), PkiError> {
        if self.cluster_id == cluster_id {
            Ok(())
        } else {
            Err(PkiError::WrongCluster {
                expected: cluster_id.to_string(),
                actual: self.cluster_id.clone(),
            })
        }
    }
}

/// The one value of a subject attribute; an error if it is missing, repeated or not a string.
fn single<'a: 'b, 'b>(
    what: &str,
    mut it: impl Iterator<Item = &'b AttributeTypeAndValue<'a>>,
) -> Result<String, PkiError> {
    let Some(first) = it.next() else {
        return Err(PkiError::BadNodeCertificate(format!(
            "no {what} in subject"
        )));
    };
    if it.next().is_some() {
        return Err(PkiError::BadNodeCertificate(format!(
            "several {what} in subject"
        )));
    }
    first
        .as_str()
        .map(str::to_string)
        .map_err(|e| PkiError::BadNodeCertificate(format!("{what} is not a string: {e}")))
}

/// A node's certificate and matching key, checked to belong together, with the identity they carry.
#[derive(Clone)]
pub struct NodeCredentials {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    /// The certificate and the intermediates after it in `cert_pem` (during a CA rotation: the new root
    /// cross-signed by the old one), leaf first: what TLS presents.
    chain: Vec<CertificateDer<'static>>,
    key_pem: String,
    key_der: Vec<u8>,
    identity: NodeIdentity,
}

impl fmt::Debug for NodeCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeCredentials")
            .field("identity", &self.identity)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl NodeCredentials {
    /// Pairs a signed certificate with the node's key; errors if the certificate is not for this key or is
    /// not a node certificate. `cert_pem` may go on with intermediate certificates (the chain TLS presents).
    pub fn new(cert_pem: &str, key: &NodeKey) -> Result<NodeCredentials, PkiError> {
        let cert_der = cert_der_from_pem(cert_pem, "node certificate PEM")?;
        let chain = super::certs_from_pem(cert_pem, "node certificate chain PEM")?;
        let (_, x509) = X509Certificate::from_der(&cert_der)
            .map_err(|e| PkiError::BadNodeCertificate(format!("not X.509: {e}")))?;
        if x509.public_key().subject_public_key.data.as_ref() != key.key.public_key_raw() {
            return Err(PkiError::KeyMismatch);
        }
        let identity = NodeIdentity::from_der(&cert_der)?;
        Ok(NodeCredentials {
            cert_pem: cert_pem.to_string(),
            cert_der,
            chain,
            key_pem: key.to_pem(),
            key_der: key.key.serialize_der(),
            identity,
        })
    }

    /// Loads credentials from certificate and key PEM.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<NodeCredentials, PkiError> {
        NodeCredentials::new(cert_pem, &NodeKey::from_pem(key_pem)?)
    }

    /// Who these credentials say we are.
    pub fn identity(&self) -> &NodeIdentity {
        &self.identity
    }

    /// The certificate PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The key PEM: write it only with [`super::write_private_file`].
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// The certificate DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The certificate followed by its intermediates, as TLS presents them.
    pub fn chain_der(&self) -> Vec<CertificateDer<'static>> {
        self.chain.clone()
    }

    /// The key in the form rustls wants.
    pub fn private_key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }
}

/// When a certificate should be renewed: at `0.5 + 0.3 * jitter` of its validity (jitter clamped to 0..=1),
/// so nodes renew at a spread-out point in the second half of the lifetime, as Swarm does.
pub fn renewal_time(cert_der: &[u8], jitter: f64) -> Result<SystemTime, PkiError> {
    let (_, x509) = X509Certificate::from_der(cert_der)
        .map_err(|e| PkiError::parse("certificate")(e.to_string()))?;
    let from = x509.validity().not_before.timestamp();
    let until = x509.validity().not_after.timestamp();
    let span = (until - from).max(0) as f64;
    let jitter = if jitter.is_nan() {
        0.0
    } else {
        jitter.clamp(0.0, 1.0)
    };
    let offset = (span * (0.5 + 0.3 * jitter)) as i64;
    Ok(from_unix_secs(from + offset))
}

/// When a certificate stops being valid.
pub fn expiry_time(cert_der: &[u8]) -> Result<SystemTime, PkiError> {
    let (_, x509) = X509Certificate::from_der(cert_der)
        .map_err(|e| PkiError::parse("certificate")(e.to_string()))?;
    Ok(from_unix_secs(x509.validity().not_after.timestamp()))
}

/// Whether a certificate is due for renewal at `now` (see [`renewal_time`]); an expired one always is.
pub fn needs_renewal(cert_der: &[u8], now: SystemTime, jitter: f64) -> Result<bool, PkiError> {
    Ok(unix_secs(now)? >= unix_secs(renewal_time(cert_der, jitter)?)?)
}

#[cfg(test)]
mod tests {
    use super::super::RootCa;
    use super::*;

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    fn issue(ca: &RootCa, spec: &NodeCertSpec) -> NodeCredentials {
        let key = NodeKey::generate().expect("key");
        let csr = key.csr_pem("whatever-the-node-asks").expect("csr");
        let cert = ca.sign_node_csr(&csr, spec, now()).expect("sign");
        NodeCredentials::new(&cert, &key).expect("credentials")
    }

    #[test]
    fn csr_signed_and_identity_parsed_back() {
        let ca = RootCa::generate("cluster-x", now()).expect("ca");
        for role in [NodeRole::Manager, NodeRole::Worker] {
            let spec = NodeCertSpec::new("node1abc", role)
                .with_dns("localhost")
                .with_ip("127.0.0.1".parse().expect("ip"));
            let creds = issue(&ca, &spec);
            let id = creds.identity();
            assert_eq!(
                id.node_id, "node1abc",
                "CN comes from the spec, not the CSR"
            );
            assert_eq!(id.role, role);
            assert_eq!(id.cluster_id, "cluster-x");
            assert_eq!(NodeIdentity::from_pem(creds.cert_pem()).expect("pem"), *id);

            let (_, x509) = X509Certificate::from_der(creds.cert_der()).expect("x509");
            let ou = x509
                .subject()
                .iter_organizational_unit()
                .next()
                .expect("ou");
            assert_eq!(ou.as_str().expect("str"), role.as_ou());
            let san = x509.subject_alternative_name().expect("ext").expect("san");
            let text = format!("{:?}", san.value.general_names);
            assert!(
                text.contains("node1abc") && text.contains("localhost"),
                "{text}"
            );
            assert!(!x509.is_ca());
            let span =
                x509.validity().not_after.timestamp() - x509.validity().not_before.timestamp();
            assert_eq!(
                span as u64,
                NODE_CERT_VALIDITY.as_secs() + BACKDATE.as_secs()
            );
        }
    }

    #[test]
    fn identity_rejects_certificates_without_the_fields() {
        let key = KeyPair::generate().expect("key");
        let plain = CertificateParams::new(vec!["x".to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let err = NodeIdentity::from_der(plain.der()).expect_err("no OU");
        assert!(err.to_string().contains("OU"), "{err}");
        let ca = RootCa::generate("c", now()).expect("ca");
        let err = NodeIdentity::from_der(ca.cert_der()).expect_err("CA has no OU");
        assert!(matches!(err, PkiError::BadNodeCertificate(_)));
        assert!(NodeIdentity::from_der(b"garbage").is_err());
        assert!(NodeIdentity::from_pem("garbage").is_err());
    }

    #[test]
    fn credentials_reject_a_foreign_key() {
        let ca = RootCa::generate("c", now()).expect("ca");
        let creds = issue(&ca, &NodeCertSpec::new("n1", NodeRole::Worker));
        let other = NodeKey::generate().expect("key");
        assert!(matches!(
            NodeCredentials::new(creds.cert_pem(), &other),
            Err(PkiError::KeyMismatch)
        ));
        let back = NodeCredentials::from_pem(creds.cert_pem(), creds.key_pem()).expect("reload");
        assert_eq!(back.identity(), creds.identity());
    }

    #[test]
    fn invalid_names_and_csrs_are_errors() {
        let ca = RootCa::generate("c", now()).expect("ca");
        let key = NodeKey::generate().expect("key");
        let csr = key.csr_pem("n").expect("csr");
        let bad = NodeCertSpec::new("n", NodeRole::Worker).with_dns("bad name é");
        assert!(ca.sign_node_csr(&csr, &bad, now()).is_err());
        let spec = NodeCertSpec::new("n", NodeRole::Worker);
        assert!(matches!(
            ca.sign_node_csr("not a csr", &spec, now()),
            Err(PkiError::Parse { .. })
        ));
    }

    #[test]
    fn roles_authorize_calls() {
        let worker = NodeIdentity {
            node_id: "w".into(),
            role: NodeRole::Worker,
            cluster_id: "c".into(),
        };
        let manager = NodeIdentity {
            role: NodeRole::Manager,
            ..worker.clone()
        };
        assert!(worker.require_role(NodeRole::Worker).is_ok());
        assert!(matches!(
            worker.require_role(NodeRole::Manager),
            Err(PkiError::Unauthorized { .. })
        ));
        assert!(manager.require_role(NodeRole::Worker).is_ok());
        assert!(manager.require_cluster("c").is_ok());
        assert!(manager.require_cluster("d").is_err());
    }

    #[test]
    fn renewal_window() {
        let ca = RootCa::generate("c", now()).expect("ca");
        let creds = issue(&ca, &NodeCertSpec::new("n1", NodeRole::Worker));
        let der = creds.cert_der().as_ref();
        let start = now() - BACKDATE;
        let life = NODE_CERT_VALIDITY + BACKDATE;
        let day = Duration::from_secs(86_400);
        assert!(!needs_renewal(der, now(), 0.0).expect("fresh"));
        assert!(!needs_renewal(der, start + life / 2 - day, 0.0).expect("before half"));
        assert!(needs_renewal(der, start + life / 2 + day, 0.0).expect("after half"));
        // With full jitter the renewal moves to 80% of the lifetime.
        assert!(!needs_renewal(der, start + life / 2 + day, 1.0).expect("jittered"));
        assert!(needs_renewal(der, start + life * 4 / 5 + day, 1.0).expect("after 80%"));
        assert!(needs_renewal(der, start + life * 2, 0.3).expect("expired"));
        assert!(needs_renewal(der, start + life * 2, f64::NAN).expect("nan jitter"));
        let t = renewal_time(der, 5.0).expect("clamped");
        assert_eq!(t, renewal_time(der, 1.0).expect("one"));
        assert!(renewal_time(b"junk", 0.0).is_err());
    }
}
