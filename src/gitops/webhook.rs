//! The push webhook of a git source (`--webhook-listen ADDR --webhook-secret FILE`): a POST whose
//! `X-Hub-Signature-256: sha256=<hex>` is the HMAC-SHA256 of the body under the secret (GitHub's scheme, checked
//! in constant time) triggers a sync at once (202); a missing or bad signature is refused (401) and logged.
//!
//! Must not: log or echo the secret, or act on a request whose signature does not check.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::mpsc;

/// The header GitHub (and Gitea, Forgejo) put the signature in.
pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";

/// Whether `header` (`sha256=<hex>`) is the HMAC-SHA256 of `body` under `secret` (compared in constant time).
pub fn signature_ok(secret: &[u8], body: &[u8], header: Option<&str>) -> bool {
    let Some(hex_sig) = header.and_then(|h| h.trim().strip_prefix("sha256=")) else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

/// The signature header value for `body` (what a sender computes).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// What the webhook tells the watcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hook {
    /// A valid push: sync now.
    Sync,
    /// A refused request, for the log: who sent it and why.
    Refused(String),
}

struct Shared {
    secret: Vec<u8>,
    tx: mpsc::UnboundedSender<Hook>,
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    let header = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
    if !signature_ok(&shared.secret, &body, header) {
        let why = if header.is_none() {
            "no X-Hub-Signature-256 header"
        } else {
            "bad signature"
        };
        let _ = shared.tx.send(Hook::Refused(format!(
            "webhook: refused a request from {peer}: {why}"
        )));
        return (StatusCode::UNAUTHORIZED, "bad signature\n");
    }
    let _ = shared.tx.send(Hook::Sync);
    (StatusCode::ACCEPTED, "sync started\n")
}

/// Reads the secret file (one line; surrounding whitespace dropped); an empty secret is refused.
pub fn read_secret(path: &std::path::Path) -> Result<Vec<u8>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("--webhook-secret {}: {e}", path.display()))?;
    let secret = text.trim().as_bytes().to_vec();
    if secret.is_empty() {
        return Err(format!(
            "--webhook-secret {}: the file is empty",
            path.display()
        ));
    }
    Ok(secret)
}

/// Listens on `addr` (any path, POST) and sends each request's verdict to `tx`; returns the bound address and
/// the server's future.
pub async fn serve(
    addr: &str,
    secret: Vec<u8>,
    tx: mpsc::UnboundedSender<Hook>,
) -> Result<(SocketAddr, impl std::future::Future<Output = ()>), String> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("--webhook-listen {addr}: {e}"))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("--webhook-listen {addr}: {e}"))?;
    let app = axum::Router::new()
        .fallback(axum::routing::post(handle))
        .with_state(Arc::new(Shared { secret, tx }));
    let server = async move {
        let _ = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await;
    };
    Ok((local, server))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_checked_like_githubs() {
        // GitHub's documented example: secret "It's a Secret to Everybody", body "Hello, World!"
        let secret = b"It's a Secret to Everybody";
        let good = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(sign(secret, b"Hello, World!"), good);
        assert!(signature_ok(secret, b"Hello, World!", Some(good)));
        assert!(!signature_ok(secret, b"Hello, World?", Some(good)));
        assert!(!signature_ok(b"other", b"Hello, World!", Some(good)));
        assert!(!signature_ok(secret, b"Hello, World!", None));
        assert!(!signature_ok(secret, b"Hello, World!", Some("sha256=zz")));
        assert!(!signature_ok(secret, b"Hello, World!", Some(&good[7..])));
    }
}
