//! Connecting `swarmctl` to a node's control API: `--host unix:///path/swarmd.sock` (or `SWARM_HOST`), defaulting to
//! the local node's socket; clear errors when the daemon is not there.
//!
//! Must not: retry silently or hide which address failed.

use std::path::PathBuf;

use tonic::transport::Channel;

use crate::api::control::control_client::ControlClient;

/// Where `swarmd` puts its state (and socket) by default.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/swarm";

/// The control socket file inside a state dir.
pub const SOCKET_NAME: &str = "swarmd.sock";

/// The endpoint to use: the flag, else `unix://` + the default socket.
pub fn resolve_host(host: Option<&str>) -> String {
    match host {
        Some(h) if !h.is_empty() => h.to_string(),
        _ => format!("unix://{}/{SOCKET_NAME}", DEFAULT_STATE_DIR),
    }
}

/// Connects to the control API at `host` (`unix:///path`).
pub async fn connect(host: &str) -> Result<ControlClient<Channel>, String> {
    let path = match host.strip_prefix("unix://") {
        Some(p) => PathBuf::from(p),
        None => {
            return Err(format!(
                "unsupported host {host:?}: use unix:///path/to/swarmd.sock (remote TCP endpoints need mutual TLS)"
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
    Ok(ControlClient::new(channel)
        .max_decoding_message_size(crate::model::limits::MAX_MESSAGE_BYTES))
}

/// Turns a gRPC error into the line a user reads.
pub fn status_message(status: &tonic::Status) -> String {
    match status.code() {
        tonic::Code::Unavailable => format!("swarmd is unavailable: {}", status.message()),
        _ => status.message().to_string(),
    }
}
