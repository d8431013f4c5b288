//! Joining a cluster with a token, as a node with no certificate yet: fetch the root CA over TLS without
//! trusting it, check it against the CA digest in the token (no trust on first use), then send a CSR with the
//! token to the manager's CA service over TLS that trusts only that CA, and get this node's certificate (id
//! and role chosen by the manager). During a CA rotation the manager offers two roots: only the one the token
//! pins is trusted, and the full set is asked again over that authenticated connection.
//!
//! Must not: write anything (the caller stores the result), log the token, or trust any CA the token does not
//! pin.

use std::str::FromStr;

use crate::api::dispatcher::{self as pb, node_ca_client::NodeCaClient};
use crate::pki::{self, JoinToken, NodeCredentials, NodeKey};
use crate::transport::tls_channel;

/// What a join gives: the cluster's CA and this node's credentials.
pub struct Joined {
    /// The root CA certificate (PEM), checked against the token.
    pub ca_pem: String,
    /// This node's certificate and key.
    pub creds: NodeCredentials,
}

/// Why a join failed; the text is what the user sees.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The token is not a swarm join token.
    #[error("{0}")]
    Token(pki::PkiError),
    /// The manager could not be reached.
    #[error("cannot reach the manager at {addr}: {detail}")]
    Unreachable {
        /// The join address.
        addr: String,
        /// Why.
        detail: String,
    },
    /// The manager presented a CA that is not the one the token pins.
    #[error(
        "the manager at {addr} presented a root CA that does not match the join token ({detail}): wrong \
         address, a token of another cluster, or someone in between"
    )]
    WrongCa {
        /// The join address.
        addr: String,
        /// The digests.
        detail: String,
    },
    /// The manager refused the token or the request.
    #[error("the manager at {addr} refused to join this node: {message}")]
    Refused {
        /// The join address.
        addr: String,
        /// The manager's reason.
        message: String,
    },
    /// Key or certificate handling failed.
    #[error("{0}")]
    Pki(#[from] pki::PkiError),
}

/// Joins the cluster whose manager listens at `addr` (`host:port`) with `token`.
pub async fn join(addr: &str, token: &str) -> Result<Joined, JoinError> {
    let token = JoinToken::from_str(token).map_err(JoinError::Token)?;
    let unreachable = |detail: String| JoinError::Unreachable {
        addr: addr.to_string(),
        detail,
    };
    let refused = |s: tonic::Status| match s.code() {
        tonic::Code::Unavailable | tonic::Code::Unknown => JoinError::Unreachable {
            addr: addr.to_string(),
            detail: s.message().to_string(),
        },
        _ => JoinError::Refused {
            addr: addr.to_string(),
            message: s.message().to_string(),
        },
    };

    // 1. the root CA, over TLS that trusts nothing yet
    let channel = tls_channel(addr, pki::bootstrap_client_config()?)
        .await
        .map_err(unreachable)?;
    let ca_pem = NodeCaClient::new(channel)
        .get_root_ca_certificate(pb::RootCaRequest {})
        .await
        .map_err(refused)?
        .into_inner()
        .cert_pem;
    // during a CA rotation the answer holds two roots: trust only the one the token pins
    let offered = pki::certs_from_pem(&ca_pem, "the manager's root CA certificate")?;
    let mismatch = token.verify_ca(&offered[0]).err();
    let ca_der = offered
        .iter()
        .find(|c| token.verify_ca(c).is_ok())
        .cloned()
        .ok_or_else(|| JoinError::WrongCa {
            addr: addr.to_string(),
            detail: mismatch.map(|e| e.to_string()).unwrap_or_default(),
        })?;

    // 2. this node's certificate, over TLS that trusts only that CA
    let key = NodeKey::generate()?;
    let csr = key.csr_pem("joining-node")?;
    let channel = tls_channel(
        addr,
        pki::join_client_config(std::slice::from_ref(&ca_der))?,
    )
    .await
    .map_err(unreachable)?;
    let mut ca_client = NodeCaClient::new(channel);
    let reply = ca_client
        .issue_node_certificate(pb::IssueCertificateRequest {
            csr_pem: csr,
            token: token.to_string(),
        })
        .await
        .map_err(refused)?
        .into_inner();
    let creds = NodeCredentials::new(&reply.cert_pem, &key)?;
    // 3. every root the cluster trusts, asked again now that the server is authenticated
    let ca_pem = if offered.len() > 1 {
        let pem = ca_client
            .get_root_ca_certificate(pb::RootCaRequest {})
            .await
            .map_err(refused)?
            .into_inner()
            .cert_pem;
        pki::certs_from_pem(&pem, "the manager's root CA certificates")?;
        pem
    } else {
        ca_pem
    };
    Ok(Joined { ca_pem, creds })
}
