//! The cluster's root certificate authority: an ECDSA P-256 self-signed certificate ("swarm-ca", O = cluster
//! id, 20 years), its PEM round trip, its SHA-256 digest (what join tokens pin) and the signing of node CSRs.
//!
//! Only the leader runs the signer (DESIGN invariant 2); this file does not decide who may be signed, it
//! signs what the caller's [`NodeCertSpec`] says, ignoring whatever subject the CSR asked for.

use std::fmt;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};
use rustls_pki_types::CertificateDer;
use sha2::{Digest, Sha256};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::node_cert::NodeCertSpec;
use super::{cert_der_from_pem, set_validity, PkiError, BACKDATE};

/// Subject common name of the root CA, as in Swarm.
pub const CA_COMMON_NAME: &str = "swarm-ca";

/// Root CA validity: 20 years, as in Swarm.
pub const CA_VALIDITY: Duration = Duration::from_secs(20 * 365 * 24 * 60 * 60);

/// SHA-256 of the DER-encoded CA certificate: what a joining node pins before trusting the CA.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CaDigest(pub [u8; 32]);

/// Digits used by the base-36 encoding of digests and token secrets.
pub(crate) const BASE36: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// Width of a base-36 encoded 256-bit digest (36^50 > 2^256), zero padded like Swarm.
pub const DIGEST_BASE36_LEN: usize = 50;

impl CaDigest {
    /// Digest of a DER certificate.
    pub fn of_der(der: &[u8]) -> CaDigest {
        CaDigest(Sha256::digest(der).into())
    }

    /// Lowercase hex, 64 characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Base 36, zero padded to [`DIGEST_BASE36_LEN`] characters (the token form).
    pub fn to_base36(&self) -> String {
        let mut num = self.0.to_vec();
        let mut digits = Vec::with_capacity(DIGEST_BASE36_LEN);
        while num.iter().any(|&b| b != 0) {
            let mut rem: u32 = 0;
            for byte in num.iter_mut() {
                let cur = (rem << 8) | u32::from(*byte);
                *byte = (cur / 36) as u8;
                rem = cur % 36;
            }
            digits.push(BASE36[rem as usize]);
        }
        while digits.len() < DIGEST_BASE36_LEN {
            digits.push(b'0');
        }
        digits.reverse();
        digits.into_iter().map(char::from).collect()
    }

    /// Parses the base-36 form; `None` if it has other characters or overflows 256 bits.
    pub fn from_base36(s: &str) -> Option<CaDigest> {
        if s.is_empty() {
            return None;
        }
        let mut num = [0u8; 32];
        for c in s.bytes() {
            let d = BASE36.iter().position(|&x| x == c.to_ascii_lowercase())? as u32;
            let mut carry = d;
            for byte in num.iter_mut().rev() {
                let cur = u32::from(*byte) * 36 + carry;
                *byte = (cur & 0xff) as u8;
                carry = cur >> 8;
            }
            if carry != 0 {
                return None;
            }
        }
        Some(CaDigest(num))
    }

    /// Parses 64 hex characters.
    pub fn from_hex(s: &str) -> Option<CaDigest> {
        let bytes = hex::decode(s).ok()?;
        Some(CaDigest(bytes.try_into().ok()?))
    }
}

impl fmt::Debug for CaDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CaDigest(sha256:{})", self.to_hex())
    }
}

impl fmt::Display for CaDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.to_hex())
    }
}

/// The root CA: certificate plus signing key. `Debug` never prints the key.
pub struct RootCa {
    cluster_id: String,
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    key: KeyPair,
}

impl fmt::Debug for RootCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RootCa")
            .field("cluster_id", &self.cluster_id)
            .field("digest", &self.digest())
            .field("key", &"<redacted>")
            .finish()
    }
}

impl RootCa {
    /// A new self-signed root CA for `cluster_id`, valid from `now` (backdated an hour) for 20 years.
    pub fn generate(cluster_id: &str, now: SystemTime) -> Result<RootCa, PkiError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(PkiError::rcgen("generate CA key"))?;
        let cert = root_params(cluster_id, None, now)?
            .self_signed(&key)
            .map_err(PkiError::rcgen("self-sign CA certificate"))?;
        Ok(RootCa::from_parts(
            cluster_id,
            cert.pem(),
            cert.der().clone(),
            key,
        ))
    }

    pub(crate) fn from_parts(
        cluster_id: &str,
        cert_pem: String,
        cert_der: CertificateDer<'static>,
        key: KeyPair,
    ) -> RootCa {
        RootCa {
            cluster_id: cluster_id.to_string(),
            cert_pem,
            cert_der,
            key,
        }
    }

    /// Loads a CA from its certificate and key PEM, checking that they belong together and that the
    /// certificate is a CA.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<RootCa, PkiError> {
        let cert_der = cert_der_from_pem(cert_pem, "CA certificate PEM")?;
        let key = KeyPair::from_pem(key_pem).map_err(|e| PkiError::Parse {
            what: "CA key PEM",
            detail: e.to_string(),
        })?;
        let (_, x509) = X509Certificate::from_der(&cert_der)
            .map_err(|e| PkiError::parse("CA certificate")(e.to_string()))?;
        if !x509.is_ca() {
            return Err(PkiError::parse("CA certificate")(
                "basic constraints do not mark it as a CA".into(),
            ));
        }
        if x509.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(PkiError::KeyMismatch);
        }
        let cluster_id = x509
            .subject()
            .iter_organization()
            .next()
            .and_then(|o| o.as_str().ok())
            .unwrap_or_default()
            .to_string();
        Ok(RootCa {
            cluster_id,
            cert_pem: cert_pem.to_string(),
            cert_der,
            key,
        })
    }

    /// The CA certificate as PEM (safe to hand out).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate as DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The CA private key as PKCS#8 PEM: write it only with [`super::write_private_file`].
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// Certificate and key PEM, in that order.
    pub fn to_pem(&self) -> (String, String) {
        (self.cert_pem.clone(), self.key_pem())
    }

    /// The signing key, for cross-signing ([`super::rotate`]).
    pub(crate) fn key_pair(&self) -> &KeyPair {
        &self.key
    }

    /// The cluster this CA was created for (its subject O).
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// SHA-256 of the DER certificate.
    pub fn digest(&self) -> CaDigest {
        CaDigest::of_der(&self.cert_der)
    }

    /// Signs a node's CSR. The CSR's signature is checked and its public key kept; everything else (subject,
    /// SANs, validity, usages) comes from `spec`, never from the request. Returns the certificate PEM.
    pub fn sign_node_csr(
        &self,
        csr_pem: &str,
        spec: &NodeCertSpec,
        now: SystemTime,
    ) -> Result<String, PkiError> {
        let mut csr =
            CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| PkiError::Parse {
                what: "certificate signing request",
                detail: e.to_string(),
            })?;
        let mut params = spec.certificate_params(&self.cluster_id, now)?;
        params.serial_number = Some(random_serial());
        csr.params = params;
        let issuer = Issuer::from_ca_cert_der(&self.cert_der, &self.key)
            .map_err(PkiError::rcgen("load CA as issuer"))?;
        let cert = csr
            .signed_by(&issuer)
            .map_err(PkiError::rcgen("sign node certificate"))?;
        Ok(cert.pem())
    }
}

/// What a root CA certificate of `cluster_id` says (CN `swarm-ca`, O = cluster id, OU = `label` for a rotated
/// root), valid from `now` (backdated an hour) for 20 years, with a fresh serial.
pub(crate) fn root_params(
    cluster_id: &str,
    label: Option<&str>,
    now: SystemTime,
) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_COMMON_NAME);
    dn.push(DnType::OrganizationName, cluster_id);
    if let Some(label) = label {
        dn.push(DnType::OrganizationalUnitName, label);
    }
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(random_serial());
    set_validity(&mut params, now - BACKDATE, now + CA_VALIDITY)?;
    Ok(params)
}

/// A random positive 128-bit serial number.
pub(crate) fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    #[test]
    fn generate_and_pem_round_trip() {
        let ca = RootCa::generate("cluster-1", now()).expect("generate");
        assert_eq!(ca.cluster_id(), "cluster-1");
        let (cert, key) = ca.to_pem();
        assert!(cert.contains("BEGIN CERTIFICATE"));
        assert!(key.contains("PRIVATE KEY"));
        let back = RootCa::from_pem(&cert, &key).expect("from_pem");
        assert_eq!(back.digest(), ca.digest());
        assert_eq!(back.cluster_id(), "cluster-1");
        assert!(!format!("{back:?}").contains("PRIVATE"));

        let (_, x509) = X509Certificate::from_der(ca.cert_der()).expect("parse");
        assert!(x509.is_ca());
        let cn = x509.subject().iter_common_name().next().expect("cn");
        assert_eq!(cn.as_str().expect("utf8"), CA_COMMON_NAME);
        let validity = x509.validity();
        let span = validity.not_after.timestamp() - validity.not_before.timestamp();
        assert_eq!(span as u64, CA_VALIDITY.as_secs() + BACKDATE.as_secs());
    }

    #[test]
    fn from_pem_rejects_mismatched_key_and_garbage() {
        let a = RootCa::generate("c", now()).expect("a");
        let b = RootCa::generate("c", now()).expect("b");
        assert!(matches!(
            RootCa::from_pem(a.cert_pem(), &b.key_pem()),
            Err(PkiError::KeyMismatch)
        ));
        assert!(matches!(
            RootCa::from_pem("not pem", &a.key_pem()),
            Err(PkiError::Parse { .. })
        ));
        assert!(RootCa::from_pem(a.cert_pem(), "junk").is_err());
    }

    #[test]
    fn digest_encodings_round_trip() {
        let ca = RootCa::generate("c", now()).expect("ca");
        let d = ca.digest();
        let b36 = d.to_base36();
        assert_eq!(b36.len(), DIGEST_BASE36_LEN);
        assert_eq!(CaDigest::from_base36(&b36), Some(d));
        assert_eq!(CaDigest::from_hex(&d.to_hex()), Some(d));
        assert_eq!(CaDigest([0; 32]).to_base36(), "0".repeat(50));
        assert_eq!(
            CaDigest::from_base36(&"z".repeat(50)),
            None,
            "overflows 256 bits"
        );
        assert_eq!(CaDigest::from_base36("ab-c"), None);
        let mut one = [0u8; 32];
        one[31] = 35;
        assert!(CaDigest(one).to_base36().ends_with("0z"));
    }
}
