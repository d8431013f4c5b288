//! Raft between managers over gRPC: the [`RaftTransport`] that carries store::raft's encoded RPCs to another
//! manager's `RaftPeer.Call` over mutual TLS (this node's certificate; the peer must hold a manager certificate
//! of this cluster). One lazily connected channel per peer address, rebuilt when this node's certificate is
//! renewed.
//!
//! Must not: interpret the bytes it carries (store::raft owns the encoding).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use tonic::transport::Channel;

use crate::api::raft::{raft_peer_client::RaftPeerClient, RaftMessage};
use crate::manager::raftpeer::rpc_code;
use crate::store::raft::{NodeId, RaftRpc, RaftTransport, TransportError};

/// Raft messages can carry a snapshot chunk: allow well above its size.
const MAX_RAFT_MESSAGE: usize = 64 << 20;

struct Peer {
    config: Arc<rustls::ClientConfig>,
    client: RaftPeerClient<Channel>,
}

/// gRPC transport of Raft RPCs to the other managers.
pub struct GrpcRaftTransport {
    tls: super::renew::ClientTls,
    cluster_id: String,
    peers: Mutex<HashMap<String, Peer>>,
}

impl GrpcRaftTransport {
    /// A transport dialing with `tls` (read at each new connection), to managers of `cluster_id`.
    pub fn new(tls: super::renew::ClientTls, cluster_id: String) -> Self {
        GrpcRaftTransport {
            tls,
            cluster_id,
            peers: Mutex::new(HashMap::new()),
        }
    }

    fn client(&self, addr: &str) -> Result<RaftPeerClient<Channel>, TransportError> {
        let config = super::renew::current(&self.tls);
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(peer) = peers.get(addr) {
            if Arc::ptr_eq(&peer.config, &config) {
                return Ok(peer.client.clone());
            }
        }
        let channel =
            crate::transport::tls_channel_to_manager_lazy(addr, config.clone(), &self.cluster_id)
                .map_err(TransportError::Unreachable)?;
        let client = RaftPeerClient::new(channel)
            .max_decoding_message_size(MAX_RAFT_MESSAGE)
            .max_encoding_message_size(MAX_RAFT_MESSAGE);
        peers.insert(
            addr.to_string(),
            Peer {
                config,
                client: client.clone(),
            },
        );
        Ok(client)
    }
}

impl RaftTransport for GrpcRaftTransport {
    fn call(
        &self,
        target: NodeId,
        addr: &str,
        rpc: RaftRpc,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Vec<u8>, TransportError>> {
        let client = self.client(addr);
        let addr = addr.to_string();
        Box::pin(async move {
            let mut client = client?;
            let request = RaftMessage {
                rpc: rpc_code(rpc),
                payload,
            };
            match tokio::time::timeout(timeout, client.call(request)).await {
                Err(_) => Err(TransportError::Timeout),
                Ok(Ok(reply)) => Ok(reply.into_inner().payload),
                Ok(Err(status)) => Err(match status.code() {
                    tonic::Code::Unavailable | tonic::Code::Unknown => TransportError::Unreachable(
                        format!("manager {target} at {addr}: {}", status.message()),
                    ),
                    _ => TransportError::Failed(format!(
                        "manager {target} at {addr}: {}",
                        status.message()
                    )),
                }),
            }
        })
    }
}

/// Where a follower's control API forwards calls: the leader's cluster port, over mutual TLS with this node's
/// manager certificate (one lazily connected channel, rebuilt when the leader or the certificate changes).
pub struct ToLeader {
    raft: Arc<crate::store::raft::RaftNode>,
    tls: super::renew::ClientTls,
    cluster_id: String,
    channel: Mutex<Option<(String, Arc<rustls::ClientConfig>, Channel)>>,
}

impl ToLeader {
    /// Routes through `raft`'s view of the leader.
    pub fn new(
        raft: Arc<crate::store::raft::RaftNode>,
        tls: super::renew::ClientTls,
        cluster_id: String,
    ) -> Self {
        ToLeader {
            raft,
            tls,
            cluster_id,
            channel: Mutex::new(None),
        }
    }
}

impl crate::manager::forward::LeaderRoute for ToLeader {
    fn leader(&self) -> Option<Channel> {
        if self.raft.is_leader() {
            return None;
        }
        let addr = self.raft.leader_addr()?;
        let config = super::renew::current(&self.tls);
        let mut cached = self.channel.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((a, c, channel)) = cached.as_ref() {
            if *a == addr && Arc::ptr_eq(c, &config) {
                return Some(channel.clone());
            }
        }
        let channel =
            crate::transport::tls_channel_to_manager_lazy(&addr, config.clone(), &self.cluster_id)
                .ok()?;
        *cached = Some((addr, config, channel.clone()));
        Some(channel)
    }

    fn has_leader(&self) -> bool {
        self.raft.current_leader().is_some()
    }
}
