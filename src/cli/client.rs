//! Connecting `swarmctl` to a node's control API: `--host unix:///path/swarmd.sock` (or `SWARM_HOST`), defaulting to
//! the local node's socket, or `tcp://HOST:PORT` (a manager's cluster port) with a client certificate
//! (`--tls-cert/--tls-key/--tls-ca`); clear errors when the daemon is not there.
//!
//! Must not: retry silently or hide which address failed.

use std::path::PathBuf;

use tonic::transport::Channel;

use crate::api::control::control_client::ControlClient;

/// Where `swarmd` puts its state (and socket) by default.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/swarm";

/// The control socket file inside a state dir.
pub const SOCKET_NAME: &str = crate::node::SOCKET_FILE;

/// The endpoint to use: the flag, else `unix://` + the default socket.
pub fn resolve_host(host: Option<&str>) -> String {
    match host {
        Some(h) if !h.is_empty() => h.to_string(),
        _ => format!("unix://{}/{SOCKET_NAME}", DEFAULT_STATE_DIR),
    }
}

/// The client certificate files given on the command line (for `tcp://` hosts).
#[derive(Clone, Debug, Default)]
pub struct TlsFiles {
    /// Client certificate (PEM).
    pub cert: Option<PathBuf>,
    /// Its key (PEM).
    pub key: Option<PathBuf>,
    /// The cluster's CA certificate (PEM).
    pub ca: Option<PathBuf>,
}

static TLS_FILES: std::sync::OnceLock<TlsFiles> = std::sync::OnceLock::new();

/// Records the TLS files of this invocation (once, at start).
pub fn set_tls_files(files: TlsFiles) {
    let _ = TLS_FILES.set(files);
}

/// A channel to a manager's cluster port over mutual TLS with the client certificate files.
async fn tcp_channel(host: &str, addr: &str) -> Result<Channel, String> {
    let files = TLS_FILES.get().cloned().unwrap_or_default();
    let (Some(cert), Some(key), Some(ca)) = (files.cert, files.key, files.ca) else {
        return Err(format!(
            "{host} needs --tls-cert, --tls-key and --tls-ca (or SWARM_TLS_CERT, SWARM_TLS_KEY, SWARM_TLS_CA): \
             get them with `swarmctl swarm ca --issue-client NAME` on a manager"
        ));
    };
    let read =
        |p: &PathBuf| std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()));
    let creds = crate::pki::NodeCredentials::from_pem(&read(&cert)?, &read(&key)?)
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    let ca_der = crate::pki::certs_from_pem(&read(&ca)?, "CA certificates")
        .map_err(|e| format!("{}: {e}", ca.display()))?;
    let config = crate::pki::client_config(&ca_der, &creds).map_err(|e| e.to_string())?;
    let cluster = creds.identity().cluster_id.clone();
    crate::transport::tls_channel_to_manager(addr, config, &cluster)
        .await
        .map_err(|e| format!("cannot reach swarmd at {host}: {e}"))
}

/// A connection to the control API that warns (once, on stderr) when a manager answered from its own copy of
/// the state because no leader was known: the answer may be stale.
#[derive(Clone)]
pub struct Conn(Channel);

static WARNED_STALE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

impl tower::Service<tonic::codegen::http::Request<tonic::body::Body>> for Conn {
    type Response = tonic::codegen::http::Response<tonic::body::Body>;
    type Error = tonic::transport::Error;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        tower::Service::poll_ready(&mut self.0, cx)
    }

    fn call(&mut self, request: tonic::codegen::http::Request<tonic::body::Body>) -> Self::Future {
        let call = tower::Service::call(&mut self.0, request);
        Box::pin(async move {
            let response = call.await?;
            if response
                .headers()
                .contains_key(crate::manager::forward::STALE_HEADER)
                && !WARNED_STALE.swap(true, std::sync::atomic::Ordering::SeqCst)
            {
                eprintln!(
                    "warning: no manager leads now (no quorum?): this answer comes from this manager's own copy \
                     of the state and may be stale"
                );
            }
            Ok(response)
        })
    }
}

/// Connects to the control API at `host` (`unix:///path` or `tcp://HOST:PORT`).
pub async fn connect(host: &str) -> Result<ControlClient<Conn>, String> {
    Ok(ControlClient::new(Conn(connect_channel(host).await?))
        .max_decoding_message_size(crate::model::limits::MAX_MESSAGE_BYTES))
}

/// A channel to the node at `host`, for the other services of its socket (`Lock`).
pub async fn connect_channel(host: &str) -> Result<Channel, String> {
    if let Some(addr) = host.strip_prefix("tcp://") {
        return tcp_channel(host, addr).await;
    }
    let path = match host.strip_prefix("unix://") {
        Some(p) => PathBuf::from(p),
        None => {
            return Err(format!(
                "unsupported host {host:?}: use unix:///path/to/swarmd.sock or tcp://HOST:PORT (with a client certificate)"
            ))
        }
    };
    let shown = host.to_string();
    let channel = crate::transport::unix_channel(path).await.map_err(|e| {
        let detail = std::error::Error::source(&e)
            .map(|s| s.to_string())
            .unwrap_or_else(|| e.to_string())
            .to_lowercase();
        let detail = if detail.contains("no such file") {
            "no such file or directory (is swarmd running?)".to_string()
        } else if detail.contains("refused") {
            "connection refused".to_string()
        } else {
            detail
        };
        format!("cannot reach swarmd at {shown}: {detail}")
    })?;
    Ok(channel)
}

/// Turns a gRPC error into the line a user reads.
pub fn status_message(status: &tonic::Status) -> String {
    match status.code() {
        tonic::Code::Unavailable => format!("swarmd is unavailable: {}", status.message()),
        tonic::Code::Unimplemented => {
            "this node is a worker: run swarmctl against a manager (--host)".to_string()
        }
        _ => status.message().to_string(),
    }
}
