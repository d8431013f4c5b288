//! Network plumbing for gRPC: a mutual-TLS listener whose connections carry the peer's `NodeIdentity` into every
//! request (tonic `Connected`), a mutual-TLS client connector, and the unix-socket listener of the control API.
//!
//! Must not: decide authorization (handlers read the identity and decide), or know any service.

use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tonic::transport::server::Connected;
use tonic::transport::{Channel, Endpoint};

use crate::pki::{self, NodeIdentity};

/// The peer of a TLS connection, available as a request extension.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    /// Who the client certificate says the peer is; `None` when it presented none (a node that is joining:
    /// only the CA service answers such a peer, with a join token).
    pub identity: Option<NodeIdentity>,
    /// The peer's certificate (`None` with `identity`): its issuer tells which root CA signed it.
    pub cert: Option<rustls_pki_types::CertificateDer<'static>>,
    /// The peer's socket address.
    pub addr: SocketAddr,
}

/// A server-side TLS connection.
pub struct TlsConn {
    inner: tokio_rustls::server::TlsStream<TcpStream>,
    peer: PeerInfo,
}

impl Connected for TlsConn {
    type ConnectInfo = PeerInfo;
    fn connect_info(&self) -> PeerInfo {
        self.peer.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The server configuration the listener hands to each new connection; replaced when the node's certificate is
/// renewed (connections already open keep theirs).
pub type ServerTls = Arc<std::sync::RwLock<Arc<rustls::ServerConfig>>>;

/// At most this many TLS handshakes run at once; further connections wait in the kernel's backlog (holding no
/// file descriptor of ours) until one finishes, so a connection flood cannot exhaust swarmd's files or CPU.
pub const MAX_CONCURRENT_HANDSHAKES: usize = 128;
/// A peer that has not finished its handshake by then is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts TCP connections on `listener`, completes the mutual-TLS handshake (refusing peers without a valid
/// certificate of this cluster) and yields the connections for `Server::serve_with_incoming`. At most
/// [`MAX_CONCURRENT_HANDSHAKES`] handshakes run at once, each for at most [`HANDSHAKE_TIMEOUT`].
pub fn tls_incoming(
    listener: TcpListener,
    config: ServerTls,
) -> impl Stream<Item = Result<TlsConn, std::io::Error>> {
    tls_incoming_capped(
        listener,
        config,
        MAX_CONCURRENT_HANDSHAKES,
        HANDSHAKE_TIMEOUT,
    )
}

/// [`tls_incoming`] with its own cap and timeout.
pub fn tls_incoming_capped(
    listener: TcpListener,
    config: ServerTls,
    max_handshakes: usize,
    timeout: Duration,
) -> impl Stream<Item = Result<TlsConn, std::io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<TlsConn, std::io::Error>>(16);
    let slots = Arc::new(tokio::sync::Semaphore::new(max_handshakes.max(1)));
    tokio::spawn(async move {
        loop {
            // take a handshake slot before accepting: a flood waits in the backlog, not in our fd table
            let Ok(slot) = slots.clone().acquire_owned().await else {
                break;
            };
            let (tcp, addr) = match listener.accept().await {
                Ok(x) => {
                    // small gRPC frames (Raft heartbeats and appends) must not wait for Nagle
                    let _ = x.0.set_nodelay(true);
                    x
                }
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if tx.is_closed() {
                break;
            }
            let current = config.read().unwrap_or_else(|p| p.into_inner()).clone();
            let acceptor = tokio_rustls::TlsAcceptor::from(current);
            let tx = tx.clone();
            tokio::spawn(async move {
                let handshake = tokio::time::timeout(timeout, acceptor.accept(tcp)).await;
                drop(slot);
                let tls = match handshake {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::info!(%addr, "TLS handshake refused: {e}");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%addr, "TLS handshake timed out");
                        return;
                    }
                };
                let identity = match pki::peer_identity(&tls) {
                    Ok(identity) => Ok(Some(identity)),
                    Err(pki::PkiError::NoPeerCertificate) => Ok(None),
                    Err(e) => Err(e),
                };
                let cert = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .cloned();
                match identity {
                    Ok(identity) => {
                        let _ = tx
                            .send(Ok(TlsConn {
                                inner: tls,
                                peer: PeerInfo {
                                    identity,
                                    cert,
                                    addr,
                                },
                            }))
                            .await;
                    }
                    Err(e) => tracing::info!(%addr, "peer certificate refused: {e}"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// A gRPC channel over the unix socket at `path` (the local control API); the error is tonic's, for the caller
/// to word.
pub async fn unix_channel(path: std::path::PathBuf) -> Result<Channel, tonic::transport::Error> {
    Endpoint::from_static("http://swarmd.local")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move { UnixStream::connect(path).await.map(TokioIo::new) }
        }))
        .await
}

/// A gRPC channel to `addr` (`host:port`) over mutual TLS with `config`; the server certificate must name `host`.
pub async fn tls_channel(addr: &str, config: Arc<rustls::ClientConfig>) -> Result<Channel, String> {
    tls_channel_checked(addr, config, None).await
}

/// [`tls_channel`] to a manager: the server's certificate must also be a manager certificate of `cluster_id`
/// (a worker or another cluster's node answering at that address is refused).
pub async fn tls_channel_to_manager(
    addr: &str,
    config: Arc<rustls::ClientConfig>,
    cluster_id: &str,
) -> Result<Channel, String> {
    tls_channel_checked(addr, config, Some(cluster_id.to_string())).await
}

async fn tls_channel_checked(
    addr: &str,
    config: Arc<rustls::ClientConfig>,
    manager_of: Option<String>,
) -> Result<Channel, String> {
    let (endpoint, connector) = tls_endpoint(addr, config, manager_of)?;
    endpoint
        .connect_with_connector(connector)
        .await
        .map_err(|e| format!("cannot connect to {addr}: {e}"))
}

/// [`tls_channel_to_manager`] that connects on first use and reconnects by itself after a failure (for a
/// long-lived peer such as another manager's Raft endpoint).
pub fn tls_channel_to_manager_lazy(
    addr: &str,
    config: Arc<rustls::ClientConfig>,
    cluster_id: &str,
) -> Result<Channel, String> {
    let (endpoint, connector) = tls_endpoint(addr, config, Some(cluster_id.to_string()))?;
    Ok(endpoint.connect_with_connector_lazy(connector))
}

type Connector = tower::util::ServiceFn<
    Box<
        dyn Fn(
                tonic::codegen::http::Uri,
            ) -> std::pin::Pin<
                Box<
                    dyn std::future::Future<
                            Output = std::io::Result<
                                TokioIo<tokio_rustls::client::TlsStream<TcpStream>>,
                            >,
                        > + Send,
                >,
            > + Send
            + Sync,
    >,
>;

fn tls_endpoint(
    addr: &str,
    config: Arc<rustls::ClientConfig>,
    manager_of: Option<String>,
) -> Result<(Endpoint, Connector), String> {
    let host = addr
        .rsplit_once(':')
        .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']'))
        .unwrap_or(addr);
    let server_name = ServerName::try_from(host.to_string())
        .map_err(|e| format!("invalid server name {host}: {e}"))?;
    let connector = tokio_rustls::TlsConnector::from(config);
    let target = addr.to_string();
    let endpoint = Endpoint::try_from(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(std::time::Duration::from_secs(5))
        .http2_keep_alive_interval(std::time::Duration::from_secs(10))
        .keep_alive_timeout(std::time::Duration::from_secs(20));
    let connect: Connector = tower::service_fn(Box::new(move |_: tonic::codegen::http::Uri| {
        let connector = connector.clone();
        let server_name = server_name.clone();
        let target = target.clone();
        let manager_of = manager_of.clone();
        Box::pin(async move {
            let tcp = TcpStream::connect(&target).await?;
            let _ = tcp.set_nodelay(true);
            let tls = connector.connect(server_name, tcp).await?;
            if let Some(cluster) = manager_of {
                let refuse =
                    |m: String| std::io::Error::new(std::io::ErrorKind::PermissionDenied, m);
                let id = pki::server_identity(&tls).map_err(|e| refuse(e.to_string()))?;
                if id.role != pki::NodeRole::Manager || id.cluster_id != cluster {
                    return Err(refuse(format!(
                            "{target} is not a manager of cluster {cluster} (its certificate: {} of cluster {})",
                            id.role, id.cluster_id
                        )));
                }
            }
            Ok::<_, std::io::Error>(TokioIo::new(tls))
        })
    }));
    Ok((endpoint, connect))
}

/// A unix-socket connection of the control API.
pub struct UnixConn(UnixStream);

/// The local client of a unix-socket connection (authorized by the socket's file mode).
#[derive(Clone, Debug)]
pub struct LocalPeer;

impl Connected for UnixConn {
    type ConnectInfo = LocalPeer;
    fn connect_info(&self) -> LocalPeer {
        LocalPeer
    }
}

impl AsyncRead for UnixConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for UnixConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Binds the control socket at `path` with mode 0600 (removing a stale socket file first).
pub fn unix_incoming(
    path: &Path,
) -> std::io::Result<impl Stream<Item = Result<UnixConn, std::io::Error>>> {
    use std::os::unix::fs::PermissionsExt;
    if path.exists() {
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(futures::stream::unfold(listener, |listener| async move {
        let conn = listener.accept().await.map(|(s, _)| UnixConn(s));
        Some((conn, listener))
    }))
}

#[cfg(test)]
mod tests;
