//! A node that joined with a manager token becomes a manager: with its new manager certificate it asks the
//! leader (`RaftPeer.JoinManager`, over mutual TLS) for the cluster's keys, re-issues its own certificate from
//! the cluster CA for its addresses, and writes its state directory — the data key, `certs/`, an empty Raft
//! database, `node.json` last — so it then starts as any manager does, receiving the log from the leader, which
//! adds it as a learner and makes it a voter once it has caught up.
//!
//! Must not: initialize Raft (the node would found a cluster of its own), or write a key anywhere but its
//! 0600 files.

use std::net::IpAddr;
use std::time::Duration;

use super::join::Joined;
use super::{identity, raft_dir, NodeConfig, NodeError};
use crate::api::raft::{raft_peer_client::RaftPeerClient, JoinManagerRequest};
use crate::manager::raftpeer::LEADER_HEADER;
use crate::pki::{self, RootCa};
use crate::secrets::DataKey;
use crate::store::raft::RaftNode;
use crate::store::{Store, StoreStateMachine};

fn failed(message: String) -> NodeError {
    NodeError::Join(format!("as a manager: {message}"))
}

/// Completes a manager's join (see the module doc); the caller then runs the node as a manager.
pub(crate) async fn join_as_manager(
    config: &NodeConfig,
    joined: Joined,
    join_addr: &str,
    ips: &[IpAddr],
) -> Result<(), NodeError> {
    let dir = &config.state_dir;
    let me = joined.creds.identity().clone();
    let roots = pki::certs_from_pem(&joined.ca_pem, "the cluster's root CA certificates")?;
    let tls = pki::client_config(&roots, &joined.creds)?;
    let raft_id = identity::raft_id_for(&me.node_id);
    let request = JoinManagerRequest {
        raft_id,
        addr: config.listen_addr.to_string(),
    };
    // the join address may be a follower: it names the leader
    let mut target = join_addr.to_string();
    let mut reply = None;
    for attempt in 0..20 {
        let channel =
            crate::transport::tls_channel_to_manager(&target, tls.clone(), &me.cluster_id).await;
        let result = match channel {
            Ok(channel) => RaftPeerClient::new(channel)
                .join_manager(request.clone())
                .await
                .map_err(|status| {
                    let leader = status
                        .metadata()
                        .get(LEADER_HEADER)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    (status.message().to_string(), leader)
                }),
            Err(e) => Err((e, None)),
        };
        match result {
            Ok(r) => {
                reply = Some(r.into_inner());
                break;
            }
            Err((message, Some(leader))) if leader != target => {
                tracing::info!("{message}: asking the leader at {leader}");
                target = leader;
            }
            Err((message, _)) if attempt < 19 => {
                tracing::warn!("joining as a manager: {message}; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                target = join_addr.to_string();
            }
            Err((message, _)) => return Err(failed(message)),
        }
    }
    let reply = reply.ok_or_else(|| failed("no leader answered".into()))?;
    let ca = std::sync::Arc::new(RootCa::from_pem(&reply.ca_cert_pem, &reply.ca_key_pem)?);
    // the signing root the leader sent must be one the join checked (the token's, or one it vouched for)
    if !roots
        .iter()
        .any(|r| ca.digest() == pki::CaDigest::of_der(r))
    {
        return Err(failed(
            "the leader sent a CA that is not among the roots the join token led to".into(),
        ));
    }
    let key: [u8; 32] = reply
        .data_key
        .as_slice()
        .try_into()
        .map_err(|_| failed("the leader sent a malformed data key".into()))?;
    // the certificate the CA service issued names no address: re-issue it for this node's addresses
    let creds = identity::issue(
        &pki::Authority::single(ca.clone()),
        &me.node_id,
        ips,
        std::time::SystemTime::now(),
        pki::NODE_CERT_VALIDITY,
    )?;
    DataKey::install(dir, key)?;
    // an empty Raft database, before node.json (a state directory with an identity always has one)
    let raft = RaftNode::open(
        &raft_dir(config),
        raft_id,
        config.listen_addr.to_string(),
        Box::new(StoreStateMachine::new(Store::default())),
        config.raft.clone(),
    )
    .await?;
    let _ = raft.shutdown().await;
    drop(raft);
    identity::write_joined(dir, &me.node_id, &reply.cluster_id, &ca, &creds)?;
    println!(
        "This node joined a swarm as a manager (node {}, cluster {}).",
        me.node_id, reply.cluster_id
    );
    Ok(())
}
