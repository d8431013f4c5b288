//! Raft's network edge, as opaque bytes. Owns the wire encoding of the three Raft RPCs (postcard of
//! openraft's request and reply types), the [`RaftTransport`] trait a real transport (the gRPC
//! service in `api`) implements to carry those bytes, the openraft `RaftNetworkFactory` built on
//! it, and the receiving side that decodes a request and hands it to the local Raft. Opens no
//! socket itself; [`NoPeers`] is the transport of a node that has no peers yet.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use openraft::error::{
    Infallible, InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError,
    RemoteError, Timeout, Unreachable,
};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{RPCTypes, RaftNetwork, RaftNetworkFactory};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::error::{Error, Result};
use super::quorum::Contacts;
use super::types::{NodeId, NodeInfo, Raft, TypeConfig};

/// Which Raft RPC a message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RaftRpc {
    /// Log replication and heartbeats, leader to follower.
    AppendEntries,
    /// Vote requests, candidate to voter.
    Vote,
    /// One chunk of a snapshot, leader to a follower that is too far behind.
    InstallSnapshot,
}

/// Why a transport call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// The peer cannot be reached now (no connection, refused, unknown address); Raft backs off.
    #[error("raft peer unreachable: {0}")]
    Unreachable(String),
    /// The call did not complete within the time Raft allowed.
    #[error("raft rpc timed out")]
    Timeout,
    /// The call failed in another way (broken stream, peer-side transport error).
    #[error("raft rpc failed: {0}")]
    Failed(String),
}

/// Carries encoded Raft RPCs to peers. The peer's transport hands the bytes to
/// [`RaftNode::handle_rpc`](super::RaftNode::handle_rpc) and sends its reply bytes back.
pub trait RaftTransport: Send + Sync + 'static {
    /// Sends `payload` (an encoded `rpc` request) to node `target` at `addr`, waiting at most
    /// `timeout`, and returns the encoded reply.
    fn call(
        &self,
        target: NodeId,
        addr: &str,
        rpc: RaftRpc,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Vec<u8>, TransportError>>;
}

/// The transport of a node without peers (a single-voter cluster): every call is unreachable.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoPeers;

impl RaftTransport for NoPeers {
    fn call(
        &self,
        target: NodeId,
        addr: &str,
        _rpc: RaftRpc,
        _payload: Vec<u8>,
        _timeout: Duration,
    ) -> BoxFuture<'static, Result<Vec<u8>, TransportError>> {
        let msg = format!("node {target} at {addr}: no raft transport configured");
        Box::pin(async move { Err(TransportError::Unreachable(msg)) })
    }
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    postcard::to_allocvec(value).map_err(|e| Error::Rpc(e.to_string()))
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|e| Error::Rpc(e.to_string()))
}

/// Decodes one request, runs it on the local Raft and encodes the reply: openraft's own
/// `Result<Response, RaftError>`, so the caller sees remote errors as they are. A request from a
/// leader (or candidate) whose term this node accepted is recorded in `contacts` as heard.
pub(crate) async fn serve(
    raft: &Raft,
    contacts: &Contacts,
    rpc: RaftRpc,
    payload: &[u8],
) -> Result<Vec<u8>> {
    match rpc {
        RaftRpc::AppendEntries => {
            let req: AppendEntriesRequest<TypeConfig> = decode(payload)?;
            let from = req.vote.leader_id().voted_for();
            let reply = raft.append_entries(req).await;
            if let (Some(from), Ok(r)) = (from, &reply) {
                if !matches!(r, AppendEntriesResponse::HigherVote(_)) {
                    contacts.heard(from);
                }
            }
            encode(&reply)
        }
        RaftRpc::Vote => {
            let req: VoteRequest<NodeId> = decode(payload)?;
            let from = req.vote.leader_id().voted_for();
            let reply = raft.vote(req).await;
            if let (Some(from), Ok(_)) = (from, &reply) {
                contacts.heard(from);
            }
            encode(&reply)
        }
        RaftRpc::InstallSnapshot => {
            let req: InstallSnapshotRequest<TypeConfig> = decode(payload)?;
            let from = req.vote.leader_id().voted_for();
            let reply = raft.install_snapshot(req).await;
            if let (Some(from), Ok(_)) = (from, &reply) {
                contacts.heard(from);
            }
            encode(&reply)
        }
    }
}

/// Openraft's network factory over a [`RaftTransport`]; every answered call is recorded in
/// `contacts` (the leader's view of who is reachable). An AppendEntries of several entries whose
/// encoding passes `max_append_bytes` is not sent: openraft is told to send fewer entries.
pub(crate) struct NetworkFactory {
    local: NodeId,
    transport: Arc<dyn RaftTransport>,
    contacts: Contacts,
    max_append_bytes: u64,
}

impl NetworkFactory {
    pub(crate) fn new(
        local: NodeId,
        transport: Arc<dyn RaftTransport>,
        contacts: Contacts,
        max_append_bytes: u64,
    ) -> Self {
        Self {
            local,
            transport,
            contacts,
            max_append_bytes,
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> PeerClient {
        PeerClient {
            local: self.local,
            target,
            addr: node.addr.clone(),
            transport: self.transport.clone(),
            contacts: self.contacts.clone(),
            max_append_bytes: self.max_append_bytes,
        }
    }
}

/// Openraft's connection to one peer.
pub(crate) struct PeerClient {
    local: NodeId,
    target: NodeId,
    addr: String,
    transport: Arc<dyn RaftTransport>,
    contacts: Contacts,
    max_append_bytes: u64,
}

/// How many of `entries` entries, `bytes` long encoded together, fit in `max` bytes (at least 1).
fn entries_that_fit(entries: usize, bytes: usize, max: u64) -> u64 {
    let entries = entries as u128;
    let fit = entries * u128::from(max) / (bytes as u128).max(1);
    u64::try_from(fit.clamp(1, entries.max(1))).unwrap_or(1)
}

type RpcResult<T, E> = std::result::Result<T, RPCError<NodeId, NodeInfo, RaftError<NodeId, E>>>;

impl PeerClient {
    async fn call<Req, Resp, E>(
        &self,
        rpc: RaftRpc,
        action: RPCTypes,
        req: &Req,
        option: &RPCOption,
    ) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let payload =
            postcard::to_allocvec(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        self.send(rpc, action, payload, option).await
    }

    async fn send<Resp, E>(
        &self,
        rpc: RaftRpc,
        action: RPCTypes,
        payload: Vec<u8>,
        option: &RPCOption,
    ) -> RpcResult<Resp, E>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let ttl = option.hard_ttl();
        let bytes = self
            .transport
            .call(self.target, &self.addr, rpc, payload, ttl)
            .await
            .map_err(|e| match e {
                TransportError::Unreachable(_) => RPCError::Unreachable(Unreachable::new(&e)),
                TransportError::Timeout => RPCError::Timeout(Timeout {
                    action,
                    id: self.local,
                    target: self.target,
                    timeout: ttl,
                }),
                TransportError::Failed(_) => RPCError::Network(NetworkError::new(&e)),
            })?;
        // The peer answered: it is reachable, whatever the answer says.
        self.contacts.acked(self.target);
        let reply: std::result::Result<Resp, RaftError<NodeId, E>> =
            postcard::from_bytes(&bytes).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        reply.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, Infallible> {
        let payload =
            postcard::to_allocvec(&rpc).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let entries = rpc.entries.len();
        if entries > 1 && payload.len() as u64 > self.max_append_bytes {
            let fit = entries_that_fit(entries, payload.len(), self.max_append_bytes);
            return Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(fit),
            ));
        }
        self.send(
            RaftRpc::AppendEntries,
            RPCTypes::AppendEntries,
            payload,
            &option,
        )
        .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        self.call(
            RaftRpc::InstallSnapshot,
            RPCTypes::InstallSnapshot,
            &rpc,
            &option,
        )
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>, Infallible> {
        self.call(RaftRpc::Vote, RPCTypes::Vote, &rpc, &option)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::entries_that_fit;

    #[test]
    fn an_oversized_batch_is_cut_to_what_fits() {
        assert_eq!(entries_that_fit(300, 3_000_000, 1_000_000), 100);
        assert_eq!(entries_that_fit(2, 10_000, 10), 1, "never fewer than one");
        assert_eq!(entries_that_fit(4, 100, 1_000), 4, "never more than sent");
    }
}
